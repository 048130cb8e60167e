//! `sibyl verify`: check a signed report against a committee's group key and
//! say exactly what was checked.
//!
//! The report comes from a file or an API URL, as JSON (a signed report, or
//! an object with a `report` field like the API's responses), as the wire
//! encoding in hex, or as raw wire bytes. The group key comes from
//! `--group-key` or a public key file written by `sibyl keygen`/`sibyl dkg`.
//! The config digest comes from `--committee` (recomputed from the file),
//! `--config-digest`, the public key file, or, failing those, from the report
//! itself, which the output then says was not checked.

use anyhow::{Context, Result, bail};
use sibyl_aggregator::verify::{GroupKeys, VerifiedReport, verify_report};
use sibyl_aggregator::{ConfigDigest, Decode, SignedReport, Suite};
use std::path::PathBuf;

/// Arguments of `sibyl verify`.
#[derive(Debug, clap::Args)]
pub struct VerifyArgs {
    /// A file with the report, or an `http(s)://` URL (e.g. `http://127.0.0.1:8080/v1/reports/42`).
    pub report: String,
    /// The group public key in hex (the suite's serialization, as `sibyl keygen` prints it).
    #[arg(long, conflicts_with = "keys")]
    pub group_key: Option<String>,
    /// Suite of `--group-key`.
    #[arg(long, default_value = "ed25519", value_parser = parse_suite)]
    pub suite: Suite,
    /// A public key file (`frost.<suite>.pub.json`, written by `sibyl dkg` or `sibyl keygen`) instead of `--group-key`.
    #[arg(long)]
    pub keys: Option<PathBuf>,
    /// The committee file; its digest must match the report's.
    #[arg(long, conflicts_with = "config_digest")]
    pub committee: Option<PathBuf>,
    /// The committee's config digest (64 hex characters).
    #[arg(long)]
    pub config_digest: Option<String>,
}

fn parse_suite(s: &str) -> Result<Suite, String> {
    match s {
        "ed25519" => Ok(Suite::Ed25519),
        "secp256k1-evm" => Ok(Suite::Secp256k1Evm),
        other => Err(format!(
            "unknown suite {other:?}; use ed25519 or secp256k1-evm"
        )),
    }
}

fn suite_name(s: Suite) -> &'static str {
    match s {
        Suite::Ed25519 => "ed25519",
        Suite::Secp256k1Evm => "secp256k1-evm",
    }
}

fn parse_digest(s: &str) -> Result<ConfigDigest> {
    let bytes = hex::decode(s.trim().trim_start_matches("0x"))
        .with_context(|| format!("config digest {s:?} is not hex"))?;
    let arr: [u8; 32] = bytes
        .try_into()
        .map_err(|_| anyhow::anyhow!("a config digest is 32 bytes (64 hex characters)"))?;
    Ok(ConfigDigest(arr))
}

/// Reads the report's bytes from a file or URL.
pub async fn fetch(source: &str) -> Result<Vec<u8>> {
    if source.starts_with("http://") || source.starts_with("https://") {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(10))
            .build()
            .context("cannot build an HTTP client")?;
        let resp = client
            .get(source)
            .send()
            .await
            .with_context(|| format!("cannot fetch {source}; is the node's API running?"))?;
        let status = resp.status();
        let body = resp
            .bytes()
            .await
            .with_context(|| format!("cannot read the body of {source}"))?;
        if !status.is_success() {
            bail!(
                "{source} answered {status}: {}",
                String::from_utf8_lossy(&body[..body.len().min(300)])
            );
        }
        Ok(body.to_vec())
    } else {
        std::fs::read(source).with_context(|| format!("cannot read {source}"))
    }
}

/// Parses a report in any of the accepted forms.
pub fn parse_report(bytes: &[u8]) -> Result<SignedReport> {
    if let Ok(text) = std::str::from_utf8(bytes) {
        let text = text.trim();
        if text.starts_with('{') {
            let value: serde_json::Value =
                serde_json::from_str(text).context("the report is not valid JSON")?;
            let inner = value.get("report").cloned().unwrap_or(value);
            return serde_json::from_value(inner).context(
                "the JSON is not a signed report (nor an object with a `report` field holding one)",
            );
        }
        let hexed = text.trim_start_matches("0x");
        if !hexed.is_empty() && hexed.bytes().all(|b| b.is_ascii_hexdigit()) {
            let raw = hex::decode(hexed).context("odd-length hex")?;
            return SignedReport::from_bytes(&raw)
                .context("the hex is not a wire-encoded signed report");
        }
    }
    SignedReport::from_bytes(bytes)
        .context("the input is neither JSON, hex nor a wire-encoded signed report")
}

/// The public key file written by the key store (only the fields needed here).
#[derive(serde::Deserialize)]
struct PublicKeyFile {
    suite: String,
    config_digest: String,
    group_key: String,
}

/// Everything `sibyl verify` decided, for printing and tests.
pub struct Outcome {
    pub verified: VerifiedReport,
    pub digest_checked: bool,
}

pub async fn verify(args: &VerifyArgs) -> Result<Outcome> {
    let report = parse_report(&fetch(&args.report).await?)?;
    let mut digest: Option<ConfigDigest> = None;
    let (suite, key_hex) = if let Some(path) = &args.keys {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let f: PublicKeyFile = serde_json::from_str(&text).with_context(|| {
            format!(
                "{} is not a public key file of `sibyl keygen`/`sibyl dkg`",
                path.display()
            )
        })?;
        let suite = if f.suite.to_ascii_lowercase().contains("secp256k1") {
            Suite::Secp256k1Evm
        } else {
            Suite::Ed25519
        };
        let d = parse_digest(&f.config_digest)?;
        if d.0 != [0; 32] {
            digest = Some(d);
        }
        (suite, f.group_key)
    } else if let Some(k) = &args.group_key {
        (args.suite, k.clone())
    } else {
        bail!("say which key to verify against: --group-key HEX or --keys FILE");
    };
    if let Some(c) = &args.committee {
        let committee = sibyl_node::config::Committee::load(c)?;
        digest = Some(committee.digest);
    } else if let Some(d) = &args.config_digest {
        digest = Some(parse_digest(d)?);
    }
    let digest_checked = digest.is_some();
    let digest = digest.unwrap_or(report.header.config_digest);
    let key =
        hex::decode(key_hex.trim().trim_start_matches("0x")).context("the group key is not hex")?;
    let keys = GroupKeys::new(digest)
        .with_key_bytes(suite, &key)
        .map_err(|e| {
            anyhow::anyhow!(
                "the group key is not a valid {} key: {e}",
                suite_name(suite)
            )
        })?;
    let verified =
        verify_report(&report, &keys).map_err(|e| anyhow::anyhow!("NOT VERIFIED: {e}"))?;
    Ok(Outcome {
        verified,
        digest_checked,
    })
}

/// `sibyl verify` entry point.
pub fn run(args: VerifyArgs) -> Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let outcome = rt.block_on(verify(&args))?;
    let v = &outcome.verified;
    let h = &v.report.header;
    println!("VERIFIED report of round {}", h.round);
    println!("  timestamp      {} ms since the epoch", h.timestamp_ms);
    println!(
        "  config digest  0x{}{}",
        hex::encode(h.config_digest.0),
        if outcome.digest_checked {
            " (matches the committee)"
        } else {
            " (NOT checked against a committee: pass --committee or --config-digest)"
        }
    );
    println!(
        "  merkle root    0x{} (recomputed from the leaves)",
        hex::encode(h.merkle_root)
    );
    println!("  signed digest  0x{}", hex::encode(v.digest));
    let suites: Vec<&str> = v.suites.iter().map(|s| suite_name(*s)).collect();
    println!(
        "  signatures     {} valid against the group key",
        suites.join(", ")
    );
    println!("  feeds ({}):", v.report.leaves.len());
    for l in &v.report.leaves {
        println!("{}", leaf_lines(l));
    }
    Ok(())
}

/// Two lines per verified leaf: the price, then what the leaf says about it
/// (docs/PROTOCOL.md, "Leaf").
fn leaf_lines(l: &sibyl_aggregator::ReportLeaf) -> String {
    let flags = sibyl_aggregator::report::flags::names(l.flags);
    let book = if l.bid == 0 && l.ask == 0 {
        "bid/ask unknown".to_string()
    } else {
        format!("bid {} ask {}", l.bid, l.ask)
    };
    let vol = sibyl_aggregator::ema::VOLATILITY_ONE;
    format!(
        "    {:<12} price {} (fixed point)  confidence {}  observations {}  observed at {} ms\n\
         {:<17}status {}{}  {book}  venues {}  ema {} ± {}  volatility {}.{:02} %/yr",
        l.feed_id.as_str(),
        l.price,
        l.confidence,
        l.num_observations,
        l.observed_at_ms,
        "",
        l.status.as_str(),
        if flags.is_empty() {
            String::new()
        } else {
            format!(" ({})", flags.join(", "))
        },
        l.venues,
        l.ema,
        l.ema_confidence,
        l.volatility / (vol / 100),
        l.volatility % (vol / 100) / (vol / 10_000),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use sibyl_aggregator::Encode;
    use sibyl_aggregator::testkit;

    #[test]
    fn a_verified_leaf_shows_its_status_flags_and_ema() {
        let mut l = sibyl_aggregator::ReportLeaf::basic(
            sibyl_aggregator::FeedId::new("SOL-USD").unwrap(),
            15_000,
            3,
            4,
            9,
        );
        l.status = sibyl_aggregator::LeafStatus::Degraded;
        l.flags = sibyl_aggregator::report::flags::FEW_VENUES
            | sibyl_aggregator::report::flags::UNCONFIRMED_JUMP;
        l.ema = 14_990;
        l.volatility = 456_700_000; // 45.67 %
        let text = leaf_lines(&l);
        assert!(
            text.contains("status degraded (few_venues, unconfirmed_jump)"),
            "{text}"
        );
        assert!(text.contains("bid/ask unknown"), "{text}");
        assert!(text.contains("ema 14990 ± 3"), "{text}");
        assert!(text.contains("volatility 45.67 %/yr"), "{text}");
    }

    #[test]
    fn every_input_form_parses_to_the_same_report() {
        let mut rng = <rand_chacha::ChaCha20Rng as rand_core::SeedableRng>::seed_from_u64(1);
        let f = testkit::fixture(3, &mut rng);
        let r = f.report.clone();
        let json = serde_json::to_vec(&r).unwrap();
        assert_eq!(parse_report(&json).unwrap(), r);
        let wrapped =
            serde_json::to_vec(&serde_json::json!({"feed": "BTC-USD", "report": r})).unwrap();
        assert_eq!(parse_report(&wrapped).unwrap(), r);
        assert_eq!(
            parse_report(hex::encode(r.to_bytes()).as_bytes()).unwrap(),
            r
        );
        assert_eq!(parse_report(&r.to_bytes()).unwrap(), r);
        assert!(parse_report(b"{\"nope\": 1}").is_err());
        assert!(parse_report(b"garbage").is_err());
    }
}

#[cfg(test)]
mod verify_tests {
    use super::*;
    use sibyl_aggregator::testkit;

    fn args(path: &std::path::Path, key: String) -> VerifyArgs {
        VerifyArgs {
            report: path.display().to_string(),
            group_key: Some(key),
            suite: Suite::Ed25519,
            keys: None,
            committee: None,
            config_digest: Some(hex::encode(testkit::FIXTURE_CONFIG_DIGEST.0)),
        }
    }

    #[tokio::test]
    async fn verifies_a_good_report_and_refuses_a_tampered_one() {
        let mut rng = <rand_chacha::ChaCha20Rng as rand_core::SeedableRng>::seed_from_u64(2);
        let f = testkit::fixture(2, &mut rng);
        let key = hex::encode(
            f.ed25519
                .public_key_package
                .verifying_key()
                .serialize()
                .unwrap(),
        );
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("report.json");
        std::fs::write(&path, serde_json::to_vec(&f.report).unwrap()).unwrap();
        let out = verify(&args(&path, key.clone())).await.expect("verifies");
        assert!(out.digest_checked);
        assert_eq!(out.verified.report, f.report);

        let mut bad = f.report.clone();
        bad.leaves[0].price += 1;
        std::fs::write(&path, serde_json::to_vec(&bad).unwrap()).unwrap();
        let err = verify(&args(&path, key.clone()))
            .await
            .err()
            .expect("tampered");
        assert!(err.to_string().contains("NOT VERIFIED"), "{err}");

        // Right report, wrong committee.
        std::fs::write(&path, serde_json::to_vec(&f.report).unwrap()).unwrap();
        let mut a = args(&path, key);
        a.config_digest = Some(hex::encode([1u8; 32]));
        assert!(verify(&a).await.is_err());
    }
}
