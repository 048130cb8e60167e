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
//!
//! An account proof (the answer of `GET /v1/margin/accounts/{id}/proof`,
//! which holds the signed report that carries the proved state) is checked
//! too: the report as above, then that the report's margin state is the
//! proof's round and root, then the account's state (decoded from the leaf
//! preimage) under that root by its Merkle proof.

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
    /// The account an account proof proved, if the input was one.
    pub account: Option<ProvenAccount>,
}

/// An account proven against a signed margin state root.
#[derive(Debug)]
pub struct ProvenAccount {
    pub state: sibyl_margin::state_root::AccountState,
    pub state_round: sibyl_aggregator::Round,
    pub state_root: [u8; 32],
    pub proof_bytes: usize,
}

fn hex32(v: &serde_json::Value, what: &str) -> Result<[u8; 32]> {
    let s = v
        .as_str()
        .with_context(|| format!("the account proof's {what} is not a hex string"))?;
    hex::decode(s.trim_start_matches("0x"))
        .ok()
        .and_then(|b| b.try_into().ok())
        .with_context(|| format!("the account proof's {what} is not 32 bytes of hex"))
}

/// Checks an account proof (the proof route's JSON) against `report`, whose
/// signature is already verified.
pub fn check_account_proof(
    value: &serde_json::Value,
    report: &SignedReport,
) -> Result<ProvenAccount> {
    use sibyl_margin::state_root::{AccountProof, AccountState, verify_account_proof};
    let state_root = hex32(&value["state_root"], "state_root")?;
    let state_round = value["state_round"]
        .as_u64()
        .context("the account proof has no `state_round`")?;
    match &report.margin_state {
        Some(m) if m.round == state_round && m.root == state_root => {}
        Some(m) => bail!(
            "NOT VERIFIED: the report of round {} carries the margin state of round {} (root 0x{}), not the proof's round {state_round} (root 0x{})",
            report.header.round,
            m.round,
            hex::encode(m.root),
            hex::encode(state_root)
        ),
        None => bail!(
            "NOT VERIFIED: the report of round {} carries no margin state; the proof's root is not signed",
            report.header.round
        ),
    }
    let preimage = value["leaf_preimage"]
        .as_str()
        .and_then(|s| hex::decode(s.trim_start_matches("0x")).ok())
        .context("the account proof's `leaf_preimage` is not hex")?;
    let state = AccountState::decode(&preimage).map_err(|e| {
        anyhow::anyhow!("NOT VERIFIED: the leaf preimage is not an account state: {e}")
    })?;
    if let Some(id) = value["account"].as_u64()
        && id != state.account
    {
        bail!(
            "NOT VERIFIED: the proof says account {id}, its leaf is account {}",
            state.account
        );
    }
    let p = &value["proof"];
    let siblings = p["siblings"]
        .as_array()
        .context("the account proof has no `proof.siblings` list")?
        .iter()
        .enumerate()
        .map(|(i, v)| hex32(v, &format!("sibling {i}")))
        .collect::<Result<Vec<_>>>()?;
    let proof = AccountProof {
        slot: p["slot"]
            .as_u64()
            .context("the account proof has no `proof.slot`")?,
        count: p["count"]
            .as_u64()
            .context("the account proof has no `proof.count`")?,
        siblings,
        globals_hash: hex32(&p["globals_hash"], "globals_hash")?,
    };
    verify_account_proof(&state_root, &state, &proof)
        .map_err(|e| anyhow::anyhow!("NOT VERIFIED: {e}"))?;
    Ok(ProvenAccount {
        state,
        state_round,
        state_root,
        proof_bytes: proof.size_bytes(),
    })
}

pub async fn verify(args: &VerifyArgs) -> Result<Outcome> {
    let bytes = fetch(&args.report).await?;
    let report = parse_report(&bytes)?;
    // An account proof: the proof route's JSON, with its report.
    let proof_json = std::str::from_utf8(&bytes)
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(t.trim()).ok())
        .filter(|v| v.get("leaf_preimage").is_some());
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
    let account = proof_json
        .map(|v| check_account_proof(&v, &verified.report))
        .transpose()?;
    Ok(Outcome {
        verified,
        digest_checked,
        account,
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
    println!(
        "  margin root    0x{} ({} margin commands{})",
        hex::encode(h.margin_root),
        v.report.commands.len(),
        match &v.report.margin_state {
            Some(m) => format!(
                ", margin state root 0x{} after round {}",
                hex::encode(m.root),
                m.round
            ),
            None => ", no margin state".into(),
        }
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
    if let Some(a) = &outcome.account {
        let s = &a.state;
        let usd = |v: i128| sibyl_api::margin::decimal(v, 6);
        let qty = |v: i128| sibyl_api::margin::decimal(v, 8);
        println!(
            "VERIFIED account {} in the margin state after round {} (root 0x{}, carried by this report; proof {} bytes)",
            s.account,
            a.state_round,
            hex::encode(a.state_root),
            a.proof_bytes
        );
        match &s.state.owner {
            Some(owner) => println!(
                "  owner          {} (signed-command nonce {})",
                hex::encode(owner),
                s.state.nonce
            ),
            None => println!("  owner          none (operator-managed)"),
        }
        println!("  cash           {} USD", usd(s.state.cash));
        for (asset, q) in &s.state.collateral {
            println!("  collateral     {} {asset}", qty(*q));
        }
        for (market, p) in &s.state.positions {
            println!(
                "  position       {market}: size {}, cost basis {} USD{}",
                qty(p.size),
                usd(p.quote),
                p.isolated
                    .map(|m| format!(", isolated margin {} USD", usd(m)))
                    .unwrap_or_default()
            );
        }
        if !s.margin_calls.is_empty() {
            println!("  margin call    {:?}", s.margin_calls);
        }
        if !s.deferred.is_empty() {
            println!("  liquidation deferred {:?}", s.deferred);
        }
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

    /// The fixture's ed25519 group key in hex.
    fn ed25519_key(f: &testkit::Fixture) -> String {
        hex::encode(
            f.ed25519
                .public_key_package
                .verifying_key()
                .serialize()
                .unwrap(),
        )
    }

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
        let key = ed25519_key(&f);
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

    /// An account proof as the proof route serves it: verified with the
    /// report that carries its root; refused when the report carries another
    /// state, when the account's state or proof is changed.
    #[tokio::test]
    async fn verifies_an_account_proof_against_the_signed_margin_state() {
        use sibyl_margin::{Command, Engine, Input, SignedCommand, signed::public_key};
        let owner = [5u8; 32];
        let committee = sibyl_margin::CommitteeKey::new(vec![0xC0; 32]).unwrap();
        let mut engine = Engine::default();
        engine.set_committee(committee.clone());
        for command in [
            Command::CreateAccount {
                account: 5,
                owner: Some(public_key(&owner)),
            },
            Command::CreateAccount {
                account: 6,
                owner: None,
            },
            Command::Deposit {
                account: 5,
                asset: "USD".into(),
                amount: 1_234_000_000,
            },
        ] {
            engine.apply(&Input::Command { at_ms: 1, command }).unwrap();
        }
        // The owner's signed withdrawal moves the account's nonce to 9.
        let withdraw = r#"{"withdraw":{"account":5,"asset":"USD","amount":1000000}}"#;
        let signed = SignedCommand::sign(&owner, &committee, 5, 9, withdraw.into());
        engine.apply(&Input::Signed { at_ms: 1, signed }).unwrap();
        let (state, proof, root) = engine.account_proof(5).unwrap();
        let at = sibyl_aggregator::MarginCheckpoint { round: 41, root };
        let mut rng = <rand_chacha::ChaCha20Rng as rand_core::SeedableRng>::seed_from_u64(3);
        let f = testkit::fixture_with_margin(2, Vec::new(), Some(at), &mut rng);
        let key = ed25519_key(&f);
        let hex0x = |b: &[u8]| format!("0x{}", hex::encode(b));
        let answer = |state_bytes: Vec<u8>, round: u64, siblings: Vec<[u8; 32]>| {
            serde_json::json!({
                "account": 5,
                "leaf_preimage": hex0x(&state_bytes),
                "proof": {
                    "slot": proof.slot,
                    "count": proof.count,
                    "siblings": siblings.iter().map(|s| hex0x(s)).collect::<Vec<_>>(),
                    "globals_hash": hex0x(&proof.globals_hash),
                },
                "state_root": hex0x(&root),
                "state_round": round,
                "signed": true,
                "report": f.report,
            })
        };
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("proof.json");
        let write = |v: serde_json::Value| std::fs::write(&path, v.to_string()).unwrap();
        write(answer(state.encode(), 41, proof.siblings.clone()));
        let out = verify(&args(&path, key.clone())).await.expect("verifies");
        let a = out.account.expect("an account proven");
        assert_eq!((a.state.account, a.state.state.cash), (5, 1_233_000_000));
        assert_eq!(
            (a.state.state.owner, a.state.state.nonce),
            (Some(public_key(&owner)), 9)
        );
        assert_eq!((a.state_round, a.state_root), (41, root));

        // The report carries round 41, not 40.
        write(answer(state.encode(), 40, proof.siblings.clone()));
        let e = verify(&args(&path, key.clone())).await.err().unwrap();
        assert!(e.to_string().contains("not the proof's round 40"), "{e}");
        // A changed balance.
        let mut richer = state.clone();
        richer.state.cash += 1;
        write(answer(richer.encode(), 41, proof.siblings.clone()));
        let e = verify(&args(&path, key.clone())).await.err().unwrap();
        assert!(e.to_string().contains("NOT VERIFIED"), "{e}");
        // Another owner, or a lower nonce (as if a signed command were undone).
        for change in [
            |s: &mut sibyl_margin::state_root::AccountState| s.state.owner = Some([9; 32]),
            |s: &mut sibyl_margin::state_root::AccountState| s.state.nonce = 8,
        ] {
            let mut other = state.clone();
            change(&mut other);
            write(answer(other.encode(), 41, proof.siblings.clone()));
            let e = verify(&args(&path, key.clone())).await.err().unwrap();
            assert!(e.to_string().contains("NOT VERIFIED"), "{e}");
        }
        // A changed sibling.
        let mut sib = proof.siblings.clone();
        sib[0][0] ^= 1;
        write(answer(state.encode(), 41, sib));
        let e = verify(&args(&path, key.clone())).await.err().unwrap();
        assert!(e.to_string().contains("NOT VERIFIED"), "{e}");
        // Garbage preimage.
        write(answer(vec![1, 2, 3], 41, proof.siblings.clone()));
        let e = verify(&args(&path, key)).await.err().unwrap();
        assert!(e.to_string().contains("not an account state"), "{e}");
    }
}
