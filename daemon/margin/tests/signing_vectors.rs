//! The owner-signed command vectors the client SDKs sign against
//! (`tests/vectors/signed_commands.json`; clients/ts and clients/python read
//! it): for a fixed owner secret, committee key, account, nonce and command
//! text, the exact signed bytes, the Ed25519 signature (deterministic) and
//! the envelope's JSON text, all as `SignedCommand` makes them. The test
//! checks that the committed file is what the reference writes and that each
//! envelope verifies (strictly) and parses.
//!
//! Regenerate after a deliberate change of the format:
//! `SIBYL_WRITE_VECTORS=1 cargo test -p sibyl-margin --test signing_vectors`

use serde::{Deserialize, Serialize};
use sibyl_margin::signed::{SIGNED_COMMAND_DOMAIN, hex_bytes, public_key};
use sibyl_margin::{Command, CommitteeKey, SignedCommand};

const PATH: &str = "tests/vectors/signed_commands.json";

#[derive(Serialize, Deserialize, Debug, PartialEq)]
struct Vectors {
    description: String,
    generator: String,
    /// `SIGNED_COMMAND_DOMAIN` as text.
    domain: String,
    cases: Vec<Case>,
}

#[derive(Serialize, Deserialize, Debug, PartialEq)]
struct Case {
    name: String,
    /// The owner's 32-byte Ed25519 secret (seed), hex.
    secret_key: String,
    /// Its public key: the account's `owner`, hex.
    owner: String,
    /// The committee's group key the bytes name, hex (32 bytes for an
    /// Ed25519 committee, 33 for secp256k1-evm).
    committee_key: String,
    account: u64,
    nonce: u64,
    /// The command's JSON text, exactly as signed and sent.
    command: String,
    /// `SignedCommand::signed_bytes`, hex.
    signed_bytes: String,
    /// The Ed25519 signature of `signed_bytes`, hex.
    signature: String,
    /// `serde_json::to_string(&SignedCommand)`: the body of
    /// `POST /v1/margin/signed`.
    envelope: String,
}

fn case(
    name: &str,
    secret: [u8; 32],
    committee: &str,
    account: u64,
    nonce: u64,
    command: String,
) -> Case {
    let key = CommitteeKey::from_hex(committee).expect("committee key");
    let signed = SignedCommand::sign(&secret, &key, account, nonce, command.clone());
    Case {
        name: name.into(),
        secret_key: hex_bytes::encode(&secret),
        owner: hex_bytes::encode(&public_key(&secret)),
        committee_key: key.to_hex(),
        account,
        nonce,
        signed_bytes: hex_bytes::encode(&SignedCommand::signed_bytes(
            &key, account, nonce, &command,
        )),
        signature: hex_bytes::encode(&signed.signature),
        envelope: serde_json::to_string(&signed).expect("serializable"),
        command,
    }
}

fn build() -> Vectors {
    // RFC 8032's first test secret; the Ed25519 group key of
    // aggregator/vectors/client_vectors.json.
    let rfc8032: [u8; 32] =
        hex_bytes::decode("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
            .expect("hex");
    let ed_committee = "5c7168f599b47c1f773b81c618fee2f7d14e094682676ee0d421f452da80154e";
    let evm_committee = "0295641d6bae8492745c86399d78026c2498f96959fa618c5feb859e6438981d19";
    let self_reg = [7u8; 32];
    let cases = vec![
        case(
            "withdraw-ed25519-committee",
            rfc8032,
            ed_committee,
            40,
            3,
            r#"{"withdraw":{"account":40,"asset":"USD","amount":250000000}}"#.into(),
        ),
        case(
            "self-registration-secp256k1-committee",
            self_reg,
            evm_committee,
            9003,
            1,
            format!(
                r#"{{"create_account":{{"account":9003,"owner":"{}"}}}}"#,
                hex_bytes::encode(&public_key(&self_reg))
            ),
        ),
        // Ids beyond 2^53 (no JSON double holds them), a nonce of 2^53 + 1,
        // and command text that is not compact: a newline, spaces, a quote
        // escape and a non-ASCII character, signed as the UTF-8 bytes sent.
        case(
            "close-large-ids-text-as-sent",
            rfc8032,
            ed_committee,
            u64::MAX,
            (1 << 53) + 1,
            "{\n  \"close\": {\"account\": 18446744073709551615, \"market\": \"ETH-\u{20ac} \\\"x\\\"\", \"size\": null}\n}"
                .into(),
        ),
    ];
    Vectors {
        description: "Sibyl owner-signed margin commands (docs/MARGIN.md, \"Account keys\"): signed bytes = domain || committee key length (u8) || committee key || account (u64 BE) || nonce (u64 BE) || command (UTF-8 as sent); Ed25519 over them; the envelope is the body of POST /v1/margin/signed".into(),
        generator: "SIBYL_WRITE_VECTORS=1 cargo test -p sibyl-margin --test signing_vectors".into(),
        domain: String::from_utf8(SIGNED_COMMAND_DOMAIN.to_vec()).expect("ASCII"),
        cases,
    }
}

fn render(v: &Vectors) -> String {
    let mut s = serde_json::to_string_pretty(v).expect("serializable");
    s.push('\n');
    s
}

#[test]
fn committed_signing_vectors_match_the_reference() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(PATH);
    let fresh = render(&build());
    if std::env::var_os("SIBYL_WRITE_VECTORS").is_some() {
        std::fs::write(&path, &fresh).expect("write vectors");
    }
    let committed =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    assert!(
        committed == fresh,
        "{PATH} is stale; regenerate with \
         `SIBYL_WRITE_VECTORS=1 cargo test -p sibyl-margin --test signing_vectors`"
    );
}

#[test]
fn every_envelope_verifies_strictly_and_parses() {
    let v = build();
    assert_eq!(v.domain, "Sibyl margin command v2");
    for c in &v.cases {
        let env: SignedCommand = serde_json::from_str(&c.envelope).expect("envelope parses");
        assert_eq!((env.account, env.nonce), (c.account, c.nonce), "{}", c.name);
        assert_eq!(env.command, c.command, "{}", c.name);
        let owner: [u8; 32] = hex_bytes::decode(&c.owner).expect("owner");
        let key = CommitteeKey::from_hex(&c.committee_key).expect("committee");
        assert!(env.verifies(&owner, &key), "{}", c.name);
        // Not for another committee, nor with a byte of the command changed.
        let other = CommitteeKey::new(vec![0x5B; 32]).expect("key");
        assert!(!env.verifies(&owner, &other), "{}", c.name);
        let mut edited = env.clone();
        edited.command.push(' ');
        assert!(!edited.verifies(&owner, &key), "{}", c.name);
        // The layout, spelled out once more.
        let mut m = SIGNED_COMMAND_DOMAIN.to_vec();
        m.push(u8::try_from(key.as_bytes().len()).expect("short key"));
        m.extend_from_slice(key.as_bytes());
        m.extend_from_slice(&c.account.to_be_bytes());
        m.extend_from_slice(&c.nonce.to_be_bytes());
        m.extend_from_slice(c.command.as_bytes());
        assert_eq!(hex_bytes::encode(&m), c.signed_bytes, "{}", c.name);
        let cmd: Command = env.parse().unwrap_or_else(|e| panic!("{}: {e}", c.name));
        let named = match cmd {
            Command::Withdraw { account, .. }
            | Command::CreateAccount { account, .. }
            | Command::Close { account, .. } => account,
            other => panic!("{}: unexpected command {other:?}", c.name),
        };
        assert_eq!(named, c.account, "{}", c.name);
    }
}
