//! The committed client vectors (`vectors/client_vectors.json`) are exactly
//! what the generator produces, and the reference verifier agrees with every
//! case in them: the TypeScript and Python SDKs' tests read the same file.

#[allow(dead_code)]
#[path = "../examples/gen_client_vectors.rs"]
mod gen_client_vectors;

use gen_client_vectors::{ClientVectors, KeySet, build, render};
use sibyl_aggregator::codec::Decode;
use sibyl_aggregator::digest::header_digest;
use sibyl_aggregator::merkle::{self, MerkleProof};
use sibyl_aggregator::verify::{GroupKeys, VerifyError, verify_leaf, verify_report};
use sibyl_aggregator::{ConfigDigest, SignedReport, Suite, encoding};

fn committed() -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(gen_client_vectors::CLIENT_VECTORS_PATH);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

fn vectors() -> ClientVectors {
    serde_json::from_str(&committed()).expect("client vectors parse")
}

fn unhex(s: &str) -> Vec<u8> {
    hex::decode(s.trim_start_matches("0x")).expect("hex")
}

fn keys(v: &ClientVectors, name: &str) -> GroupKeys {
    let set: &KeySet = v.keys.get(name).unwrap_or_else(|| panic!("key set {name}"));
    let digest: [u8; 32] = unhex(&set.config_digest).try_into().expect("32 bytes");
    let mut k = GroupKeys::new(ConfigDigest(digest));
    if let Some(ed) = &set.ed25519 {
        k = k
            .with_key_bytes(Suite::Ed25519, &unhex(ed))
            .expect("ed25519 key");
    }
    if let Some(evm) = &set.secp256k1_evm {
        k = k
            .with_key_bytes(Suite::Secp256k1Evm, &unhex(evm))
            .expect("secp256k1-evm key");
    }
    k
}

/// The variant name of a `VerifyError` (`BadSignature`, ...).
fn variant(e: &VerifyError) -> String {
    let dbg = format!("{e:?}");
    dbg.split(|c: char| !c.is_alphanumeric())
        .next()
        .unwrap_or_default()
        .to_owned()
}

#[test]
fn committed_client_vectors_match_the_generator() {
    let fresh = render(&build());
    assert!(
        committed() == fresh,
        "aggregator/vectors/client_vectors.json is stale; regenerate with \
         `cargo run -p sibyl-aggregator --example gen_client_vectors`"
    );
}

#[test]
fn reference_verifier_agrees_with_every_report_case() {
    let v = vectors();
    assert!(v.reports.len() >= 15, "{} report cases", v.reports.len());
    assert!(
        v.reports
            .iter()
            .any(|c| c.expected == "valid" && c.report.margin_state.is_some()),
        "a valid report that carries a margin state"
    );
    let mut errors = std::collections::BTreeSet::new();
    for c in &v.reports {
        // The serde form and the wire encoding are the same report.
        let wire = SignedReport::from_bytes(&unhex(&c.report_wire));
        match &wire {
            Ok(w) => assert_eq!(w, &c.report, "{}: wire and JSON differ", c.name),
            // The codec refuses some broken reports the JSON can carry.
            Err(_) => assert_eq!(c.expected, "invalid", "{}: valid case must decode", c.name),
        }
        assert_eq!(
            unhex(&c.digest),
            header_digest(&c.report.header),
            "{}",
            c.name
        );
        assert_eq!(
            unhex(&c.header_abi),
            encoding::encode_header(&c.report.header),
            "{}",
            c.name
        );
        let got = verify_report(&c.report, &keys(&v, &c.keys));
        match (&got, c.expected.as_str()) {
            (Ok(ok), "valid") => {
                let suites: Vec<String> = ok
                    .suites
                    .iter()
                    .map(|s| match serde_json::to_value(s) {
                        Ok(serde_json::Value::String(n)) => n,
                        other => panic!("suite name: {other:?}"),
                    })
                    .collect();
                assert_eq!(suites, c.suites, "{}", c.name);
                assert!(c.error.is_none(), "{}", c.name);
            }
            (Err(e), "invalid") => {
                errors.insert(variant(e));
                assert_eq!(Some(variant(e)), c.error, "{}: {e}", c.name);
            }
            _ => panic!("{}: expected {}, got {got:?}", c.name, c.expected),
        }
    }
    for needed in [
        "RootMismatch",
        "BadSignature",
        "WrongConfigDigest",
        "WrongVersion",
        "MissingSignature",
        "MalformedSignature",
        "LeavesNotSorted",
        "CommandsMismatch",
        "NoGroupKeys",
    ] {
        assert!(
            errors.contains(needed),
            "no report case fails with {needed}"
        );
    }
}

#[test]
fn reference_verifier_agrees_with_every_leaf_case() {
    let v = vectors();
    let mut valid = 0;
    for c in &v.leaves {
        assert_eq!(
            unhex(&c.leaf_abi),
            encoding::encode_leaf(&c.leaf),
            "{}",
            c.name
        );
        assert_eq!(
            unhex(&c.leaf_hash),
            merkle::leaf_hash(&c.leaf),
            "{}",
            c.name
        );
        assert_eq!(
            MerkleProof::from_bytes(&unhex(&c.proof_hex)).expect("proof wire"),
            c.proof,
            "{}",
            c.name
        );
        assert_eq!(unhex(&c.digest), header_digest(&c.header), "{}", c.name);
        let got = verify_leaf(
            &c.header,
            &c.leaf,
            &c.proof,
            &c.signatures,
            &keys(&v, &c.keys),
        );
        match (&got, c.expected.as_str()) {
            (Ok(d), "valid") => {
                valid += 1;
                assert_eq!(d.to_vec(), unhex(&c.digest), "{}", c.name);
            }
            (Err(e), "invalid") => {
                assert_eq!(Some(variant(e)), c.error, "{}: {e}", c.name)
            }
            _ => panic!("{}: expected {}, got {got:?}", c.name, c.expected),
        }
    }
    // Every leaf of every valid report (1 + 3 + 5 + 12 + 2 + 2), then the invalid ones.
    assert_eq!(valid, 25);
    assert!(v.leaves.len() > valid + 10);
}
