//! `sibyl margin keygen` / `sibyl margin sign`: an account owner's key and
//! the envelopes it signs for `POST /v1/margin/signed` (docs/MARGIN.md,
//! "Account keys"). The envelope is printed for the caller to send; the
//! only request made is `--node`'s, which reads the committee key that the
//! signature names from `GET /v1/margin/signing`.

use anyhow::{Context, bail};
use rand::RngCore;
use sibyl_margin::signed::{hex_bytes, public_key};
use sibyl_margin::{Command, CommitteeKey, SignedCommand};
use std::io::Write;
use std::path::{Path, PathBuf};

/// Arguments of `sibyl margin`.
#[derive(Debug, clap::Args)]
pub struct MarginArgs {
    #[command(subcommand)]
    pub command: MarginCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum MarginCommand {
    /// Make an account owner's Ed25519 key: the secret goes to FILE (hex,
    /// mode 0600, never overwritten), the public key is printed.
    #[command(
        after_help = "Example:\n  sibyl margin keygen --out owner.key\n\nGive the printed public key as `owner` when the account is created (POST /v1/margin/accounts), or self-register with a signed create_account."
    )]
    Keygen {
        /// Where to write the secret key (refused if it exists).
        #[arg(long)]
        out: PathBuf,
    },
    /// Sign a margin command with an owner's key; prints the envelope JSON
    /// for `POST /v1/margin/signed`.
    #[command(
        after_help = "Example:\n  sibyl margin sign --key owner.key --node http://127.0.0.1:8080 --account 40 --nonce 1 \\\n      '{\"withdraw\":{\"account\":40,\"asset\":\"USD\",\"amount\":250000000}}' \\\n    | curl -s -d @- http://127.0.0.1:8080/v1/margin/signed\n\nThe command is the engine's JSON (integer amounts: USD with 6 decimals, sizes and prices with 8), signed exactly as given. The nonce must be above the account's (GET /v1/margin/accounts/{id} shows it). The signature names the committee (its group public key: --group-key HEX, or --node URL to read it from GET /v1/margin/signing), so it is refused on any other committee's book."
    )]
    #[command(group(clap::ArgGroup::new("committee_source").required(true).args(["group_key", "node"])))]
    Sign {
        /// The secret key file `sibyl margin keygen` wrote.
        #[arg(long)]
        key: PathBuf,
        /// The account the command acts on.
        #[arg(long)]
        account: u64,
        /// Above the account's current nonce.
        #[arg(long)]
        nonce: u64,
        /// The committee's group public key (hex: 32 bytes for Ed25519, 33
        /// for secp256k1-evm), as `GET /v1/margin/signing` shows it
        /// (`committee_key`) and `sibyl verify --group-key` takes it.
        #[arg(long)]
        group_key: Option<String>,
        /// A member's API to read the committee key from
        /// (`GET /v1/margin/signing`) instead of `--group-key`.
        #[arg(long)]
        node: Option<String>,
        /// The command's JSON text.
        command: String,
    },
}

pub fn run(args: MarginArgs) -> anyhow::Result<()> {
    match args.command {
        MarginCommand::Keygen { out } => {
            let public = keygen(&out)?;
            println!(
                "wrote the secret key to {} (keep it private)",
                out.display()
            );
            println!("owner = \"{}\"", hex_bytes::encode(&public));
            Ok(())
        }
        MarginCommand::Sign {
            key,
            account,
            nonce,
            group_key,
            node,
            command,
        } => {
            let committee = match (group_key, node) {
                (Some(hex), _) => parse_committee(&hex)?,
                (None, Some(url)) => fetch_committee(&url)?,
                (None, None) => bail!("say which committee signs: --group-key HEX or --node URL"),
            };
            let env = sign(&read_secret(&key)?, &committee, account, nonce, command)?;
            println!("{}", serde_json::to_string(&env)?);
            Ok(())
        }
    }
}

/// Writes a fresh secret to `out` (refusing an existing file) and returns
/// its public key.
pub fn keygen(out: &Path) -> anyhow::Result<[u8; 32]> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut secret = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut secret);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(out)
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::AlreadyExists => anyhow::anyhow!(
                "{} already exists: it may hold an owner's key, so it is never overwritten; choose another --out",
                out.display()
            ),
            _ => anyhow::Error::new(e).context(format!("cannot create {}", out.display())),
        })?;
    writeln!(f, "{}", hex_bytes::encode(&secret))
        .and_then(|()| f.sync_all())
        .with_context(|| format!("cannot write {}", out.display()))?;
    Ok(public_key(&secret))
}

/// The secret in a key file (64 hex digits; surrounding whitespace ignored).
pub fn read_secret(path: &Path) -> anyhow::Result<[u8; 32]> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the key file {}", path.display()))?;
    // The error names the file, never its content.
    hex_bytes::decode::<32>(text.trim()).map_err(|_| {
        anyhow::anyhow!(
            "{} is not a key `sibyl margin keygen` wrote (64 hex digits)",
            path.display()
        )
    })
}

/// A committee's group public key from hex: 32 bytes that are an Ed25519
/// point or 33 that are a compressed secp256k1 point.
pub fn parse_committee(hex: &str) -> anyhow::Result<CommitteeKey> {
    committee_from(&format!("--group-key {hex:?}"), hex)
}

/// [`parse_committee`], its errors naming the key `what`.
fn committee_from(what: &str, hex: &str) -> anyhow::Result<CommitteeKey> {
    use sibyl_aggregator::{ConfigDigest, Suite, verify::GroupKeys};
    let explain = "a committee's group public key is 32 bytes (Ed25519) or 33 (secp256k1-evm, compressed) as hex; GET /v1/margin/signing on a member's API shows it as `committee_key`";
    let key = CommitteeKey::from_hex(hex).map_err(|e| anyhow::anyhow!("{what}: {e}; {explain}"))?;
    let suite = match key.as_bytes().len() {
        32 => Suite::Ed25519,
        33 => Suite::Secp256k1Evm,
        n => bail!("{what} is {n} bytes; {explain}"),
    };
    let keys = GroupKeys::new(ConfigDigest([0; 32]))
        .with_key_bytes(suite, key.as_bytes())
        .map_err(|e| anyhow::anyhow!("{what}: {e}; {explain}"))?;
    // The engine signs over the key as its committee serializes it: another
    // encoding of the same point would sign other bytes.
    if sibyl_node::margin_svc::committee_key(&keys).as_ref() != Some(&key) {
        bail!("{what} is not in its suite's canonical (compressed) encoding; {explain}");
    }
    Ok(key)
}

/// What `GET /v1/margin/signing` answers (the part read here).
#[derive(serde::Deserialize)]
struct Signing {
    committee_key: String,
}

/// The committee key a node's API serves at `GET /v1/margin/signing`.
fn fetch_committee(node: &str) -> anyhow::Result<CommitteeKey> {
    let url = format!("{}/v1/margin/signing", node.trim_end_matches('/'));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let body = rt.block_on(crate::cmd::verify::fetch(&url))?;
    let signing: Signing = serde_json::from_slice(&body)
        .with_context(|| format!("{url} did not answer with a committee key"))?;
    committee_from(
        &format!("the committee key {url} served"),
        &signing.committee_key,
    )
}

/// Signs `command` for `committee` after checking what the engine would
/// refuse without looking at its state: it parses, it is a command an
/// owner signs, and it names `account`.
pub fn sign(
    secret: &[u8; 32],
    committee: &CommitteeKey,
    account: u64,
    nonce: u64,
    command: String,
) -> anyhow::Result<SignedCommand> {
    let cmd: Command = serde_json::from_str(&command)
        .context("the command is not a margin command's JSON, e.g. {\"withdraw\":{\"account\":40,\"asset\":\"USD\",\"amount\":250000000}}")?;
    if !cmd.signable() {
        bail!(
            "a `{}` command is not one an account owner signs: owners sign withdraw, open, close, adjust_isolated_margin and create_account with their own owner key",
            cmd.kind()
        );
    }
    if cmd.account() != Some(account) {
        bail!(
            "the command acts on account {:?}, not --account {account}",
            cmd.account()
        );
    }
    if let Command::CreateAccount { owner: Some(k), .. } = &cmd
        && *k != public_key(secret)
    {
        bail!(
            "the create_account names another owner key than this key's: a new account is signed by its own owner"
        );
    }
    if nonce == 0 {
        bail!("--nonce must be above the account's current nonce, so at least 1");
    }
    Ok(SignedCommand::sign(
        secret, committee, account, nonce, command,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use sibyl_margin::Engine;

    /// keygen writes a 0600 key and never overwrites; sign's envelope is
    /// one the engine takes, and the mistakes the engine would refuse are
    /// caught here first.
    #[test]
    fn keygen_then_sign_makes_an_envelope_the_engine_takes() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("owner.key");
        let public = keygen(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let before = std::fs::read(&path).unwrap();
        let err = keygen(&path).unwrap_err().to_string();
        assert!(err.contains("never overwritten"), "{err}");
        assert_eq!(std::fs::read(&path).unwrap(), before);
        let secret = read_secret(&path).unwrap();
        assert_eq!(public_key(&secret), public);

        let create = format!(
            r#"{{"create_account":{{"account":40,"owner":"{}"}}}}"#,
            hex_bytes::encode(&public)
        );
        let withdraw = r#"{"withdraw":{"account":40,"asset":"USD","amount":1}}"#;
        // The committee: an Ed25519 group key (any Ed25519 point will do).
        let committee = parse_committee(&hex_bytes::encode(&public_key(&[3; 32]))).unwrap();
        let mut e = Engine::default();
        e.set_committee(committee.clone());
        let env = sign(&secret, &committee, 40, 1, create).unwrap();
        // What is printed is what the API reads.
        let json = serde_json::to_string(&env).unwrap();
        let env: SignedCommand = serde_json::from_str(&json).unwrap();
        e.apply_signed(1, &env).unwrap();
        e.apply_command(
            1,
            &Command::Deposit {
                account: 40,
                asset: "USD".into(),
                amount: 10,
            },
        )
        .unwrap();
        e.apply_signed(
            1,
            &sign(&secret, &committee, 40, 2, withdraw.into()).unwrap(),
        )
        .unwrap();
        assert_eq!(e.state().accounts[&40].cash, 9);

        for (account, nonce, cmd, says) in [
            (40, 3, "{\"withdraw\":1}", "not a margin command"),
            (
                40,
                3,
                r#"{"deposit":{"account":40,"asset":"USD","amount":1}}"#,
                "not one an account owner signs",
            ),
            (41, 3, withdraw, "not --account 41"),
            (40, 0, withdraw, "at least 1"),
        ] {
            let err = sign(&secret, &committee, account, nonce, cmd.into())
                .unwrap_err()
                .to_string();
            assert!(err.contains(says), "{err}");
        }
        std::fs::write(dir.path().join("bad.key"), "not hex").unwrap();
        let err = read_secret(&dir.path().join("bad.key"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("64 hex digits") && !err.contains("not hex"),
            "{err}"
        );
    }

    /// `--group-key` takes an Ed25519 or a compressed secp256k1 group key
    /// and says what is wrong with anything else; an envelope signed for one
    /// committee is refused by an engine of another.
    #[test]
    fn the_committee_key_is_checked_and_binds_the_envelope() {
        let ed = hex_bytes::encode(&public_key(&[3; 32]));
        let secp = "0279be667ef9dcbbac55a06295ce870b07029bfcdb2dce28d959f2815b16f81798";
        assert_eq!(parse_committee(&ed).unwrap().as_bytes().len(), 32);
        assert_eq!(
            parse_committee(&format!("0x{secp}"))
                .unwrap()
                .as_bytes()
                .len(),
            33
        );
        for (bad, says) in [
            ("", "0 bytes"),
            ("abc", "even number"),
            ("zz", "not hex"),
            (&ed[..62], "31 bytes"),
            // 33 bytes, but 0x09 is no point encoding's tag.
            (
                &format!("09{}", &secp[2..]),
                "invalid Secp256k1Evm group key",
            ),
            // A point, but in the compact encoding, not the committee's.
            (&format!("05{}", &secp[2..]), "canonical"),
        ] {
            let err = parse_committee(bad).unwrap_err().to_string();
            assert!(
                err.contains(says) && err.contains("GET /v1/margin/signing"),
                "{bad:?}: {err}"
            );
        }
        let secret = [4u8; 32];
        let create = format!(
            r#"{{"create_account":{{"account":41,"owner":"{}"}}}}"#,
            hex_bytes::encode(&public_key(&secret))
        );
        let a = parse_committee(&ed).unwrap();
        let b = parse_committee(secp).unwrap();
        let env = sign(&secret, &a, 41, 1, create).unwrap();
        let mut on_b = Engine::default();
        on_b.set_committee(b);
        assert!(matches!(
            on_b.apply_signed(1, &env),
            Err(sibyl_margin::EngineError::BadSignature { account: 41 })
        ));
        let mut on_a = Engine::default();
        on_a.set_committee(a);
        on_a.apply_signed(1, &env).unwrap();
    }

    /// `sign` needs the committee: exactly one of `--group-key` and `--node`.
    #[test]
    fn sign_requires_one_source_of_the_committee_key() {
        use clap::Parser;
        let base = [
            "sibyl",
            "margin",
            "sign",
            "--key",
            "k",
            "--account",
            "1",
            "--nonce",
            "1",
            "{}",
        ];
        let with = |extra: &[&str]| {
            let mut args: Vec<&str> = base.to_vec();
            args.splice(3..3, extra.iter().copied());
            crate::cli::Cli::try_parse_from(args)
        };
        let err = with(&[]).unwrap_err().to_string();
        assert!(
            err.contains("--group-key") && err.contains("--node"),
            "{err}"
        );
        assert!(with(&["--group-key", "00"]).is_ok());
        assert!(with(&["--node", "http://127.0.0.1:1"]).is_ok());
        assert!(with(&["--group-key", "00", "--node", "http://x"]).is_err());
    }

    /// `--node` reads `committee_key` from `GET /v1/margin/signing` and
    /// checks it like `--group-key`.
    #[test]
    fn node_reads_the_committee_key_from_the_signing_route() {
        use std::io::{BufRead, BufReader};
        let ed = hex_bytes::encode(&public_key(&[3; 32]));
        let serve = |body: String| {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = listener.local_addr().unwrap();
            let server = std::thread::spawn(move || {
                let (mut conn, _) = listener.accept().unwrap();
                let mut line = String::new();
                BufReader::new(&conn).read_line(&mut line).unwrap();
                write!(
                    conn,
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                )
                .unwrap();
                line
            });
            (format!("http://{addr}/"), server)
        };
        let (url, server) = serve(format!(
            r#"{{"domain":"Sibyl margin command v2","committee_key":"{ed}","signed_bytes":""}}"#
        ));
        let key = fetch_committee(&url).unwrap();
        assert!(
            server
                .join()
                .unwrap()
                .starts_with("GET /v1/margin/signing ")
        );
        assert_eq!(key.to_hex(), ed);
        let (url, _server) = serve(r#"{"committee_key":"abcd"}"#.into());
        let err = format!("{:#}", fetch_committee(&url).unwrap_err());
        assert!(err.contains("served is 2 bytes"), "{err}");
    }
}
