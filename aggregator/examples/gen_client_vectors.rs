//! Writes `aggregator/vectors/client_vectors.json`, the verification vectors
//! shared by the Rust `verify` module (the reference), the TypeScript SDK
//! (`clients/ts`) and the Python SDK (`clients/python`).
//!
//! `cargo run -p sibyl-aggregator --example gen_client_vectors`
//!
//! The reports are those of `report_vectors.json` (same keys, signatures and
//! seeds), rendered the way the HTTP API serves them: `report` is the
//! `SignedReport`'s serde form of `GET /v1/reports/{round}` (leaf prices as
//! JSON numbers, up to i128/u128, so a client must parse numbers losslessly),
//! and a leaf case is what `GET /v1/feeds/{id}/latest` gives a pull consumer
//! (header, leaf, Merkle proof, signatures). Each case names the key set to
//! verify with and the outcome: `valid` with the suites checked, or `invalid`
//! with the Rust `VerifyError` variant. `aggregator/tests/client_vectors.rs`
//! checks that the committed file is what this writes and that `verify`
//! agrees with every case. Field names are documented in docs/PROTOCOL.md.

#[allow(dead_code)]
#[path = "gen_vectors.rs"]
mod gen_vectors;

use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sibyl_aggregator::codec::{Decode, Encode};
use sibyl_aggregator::digest::{header_digest, margin_root};
use sibyl_aggregator::encoding::{encode_header, encode_leaf};
use sibyl_aggregator::merkle::{self, MerkleProof};
use sibyl_aggregator::testkit::dealer_keys;
use sibyl_aggregator::{
    PROTOCOL_VERSION, ReportHeader, ReportLeaf, SignatureBytes, SignedReport, Suite,
};
use std::collections::BTreeMap;

/// Where the file lives, relative to the aggregator crate.
pub const CLIENT_VECTORS_PATH: &str = "vectors/client_vectors.json";

/// Seed of the unrelated committee whose keys the `wrong-key` cases verify with.
const OTHER_KEY_SEED: u64 = 0x5179_6c00_0000_0009;

#[derive(Serialize, Deserialize, Debug, PartialEq)]
pub struct ClientVectors {
    pub description: String,
    pub generator: String,
    pub version: u8,
    /// Named key sets a case verifies with: `config_digest` plus the group key
    /// of each suite the consumer requires (hex, no `0x`).
    pub keys: BTreeMap<String, KeySet>,
    pub reports: Vec<ReportCase>,
    pub leaves: Vec<LeafCase>,
}

#[derive(Serialize, Deserialize, Debug, PartialEq, Clone)]
pub struct KeySet {
    pub config_digest: String,
    /// 32-byte Ed25519 group key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ed25519: Option<String>,
    /// 33-byte compressed secp256k1 group key.
    #[serde(
        rename = "secp256k1-evm",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub secp256k1_evm: Option<String>,
}

/// A whole report, as `GET /v1/reports/{round}` serves it.
#[derive(Serialize, Deserialize, Debug, PartialEq)]
pub struct ReportCase {
    pub name: String,
    pub reason: String,
    /// Key set (in `keys`) to verify with.
    pub keys: String,
    /// The `SignedReport` in its serde form (as the API's `report` field).
    pub report: SignedReport,
    /// Canonical wire encoding of the same report (docs/PROTOCOL.md).
    pub report_wire: String,
    /// `header_digest(report.header)`: what the signatures cover.
    pub digest: String,
    pub header_abi: String,
    /// `valid` or `invalid`.
    pub expected: String,
    /// The `VerifyError` variant `verify_report` returns; `null` when valid.
    pub error: Option<String>,
    /// Suites checked when valid (`ed25519`, `secp256k1-evm`).
    pub suites: Vec<String>,
}

/// One feed, as a pull consumer holds it (`GET /v1/feeds/{id}/latest`).
#[derive(Serialize, Deserialize, Debug, PartialEq)]
pub struct LeafCase {
    pub name: String,
    pub reason: String,
    pub keys: String,
    /// `ReportHeader` serde form.
    pub header: ReportHeader,
    /// `ReportLeaf` serde form.
    pub leaf: ReportLeaf,
    /// `abi.encode(leaf)` and `keccak256(0x00 ‖ leaf_abi)`.
    pub leaf_abi: String,
    pub leaf_hash: String,
    /// `MerkleProof` serde form (`leaf_index`, `leaf_count`, `siblings`).
    pub proof: MerkleProof,
    /// Canonical wire encoding of `proof`.
    pub proof_hex: String,
    /// Suite → signature hex, as in a report's `signatures`.
    pub signatures: BTreeMap<Suite, SignatureBytes>,
    pub digest: String,
    pub expected: String,
    /// The `VerifyError` variant `verify_leaf` returns; `null` when valid.
    pub error: Option<String>,
}

fn hx(bytes: impl AsRef<[u8]>) -> String {
    hex::encode(bytes)
}

fn unhex(s: &str) -> Vec<u8> {
    hex::decode(s.trim_start_matches("0x")).expect("generator hex")
}

fn suite_name(s: Suite) -> String {
    match serde_json::to_value(s).expect("serializable") {
        Value::String(n) => n,
        other => panic!("suite serializes as a string, got {other}"),
    }
}

fn report_case(
    name: &str,
    reason: &str,
    keys: &str,
    r: &SignedReport,
    outcome: Result<&[Suite], &str>,
) -> ReportCase {
    ReportCase {
        name: name.into(),
        reason: reason.into(),
        keys: keys.into(),
        report: r.clone(),
        report_wire: hx(r.to_bytes()),
        digest: hx(header_digest(&r.header)),
        header_abi: hx(encode_header(&r.header)),
        expected: if outcome.is_ok() { "valid" } else { "invalid" }.into(),
        error: outcome.err().map(str::to_owned),
        suites: outcome
            .map(|s| s.iter().copied().map(suite_name).collect())
            .unwrap_or_default(),
    }
}

#[allow(clippy::too_many_arguments)]
fn leaf_case(
    name: &str,
    reason: &str,
    keys: &str,
    header: &ReportHeader,
    leaf: &ReportLeaf,
    proof: &MerkleProof,
    signatures: &BTreeMap<Suite, SignatureBytes>,
    error: Option<&str>,
) -> LeafCase {
    LeafCase {
        name: name.into(),
        reason: reason.into(),
        keys: keys.into(),
        header: header.clone(),
        leaf: leaf.clone(),
        leaf_abi: hx(encode_leaf(leaf)),
        leaf_hash: hx(merkle::leaf_hash(leaf)),
        proof: proof.clone(),
        proof_hex: hx(proof.to_bytes()),
        signatures: signatures.clone(),
        digest: hx(header_digest(header)),
        expected: if error.is_none() { "valid" } else { "invalid" }.into(),
        error: error.map(str::to_owned),
    }
}

fn header_of(h: &gen_vectors::Header) -> ReportHeader {
    let b32 = |s: &str| -> [u8; 32] { unhex(s).try_into().expect("32 bytes") };
    ReportHeader {
        version: h.version,
        config_digest: sibyl_aggregator::ConfigDigest(b32(&h.config_digest)),
        round: h.round.parse().expect("u64"),
        timestamp_ms: h.timestamp_ms.parse().expect("u64"),
        merkle_root: b32(&h.merkle_root),
        margin_root: b32(&h.margin_root),
    }
}

fn signatures_of(s: &gen_vectors::Signatures) -> BTreeMap<Suite, SignatureBytes> {
    [
        (Suite::Ed25519, SignatureBytes(unhex(&s.ed25519.signature))),
        (
            Suite::Secp256k1Evm,
            SignatureBytes(unhex(&s.secp256k1_evm.signature)),
        ),
    ]
    .into_iter()
    .collect()
}

/// The group keys of an unrelated 3-of-4 committee.
fn other_keys(config_digest: &str) -> KeySet {
    let mut rng = ChaCha20Rng::seed_from_u64(OTHER_KEY_SEED);
    let ed = dealer_keys::<frost_ed25519::Ed25519Sha512, _>(4, 3, &mut rng).expect("keygen");
    let evm =
        dealer_keys::<frost_secp256k1_evm::Secp256K1Keccak256, _>(4, 3, &mut rng).expect("keygen");
    KeySet {
        config_digest: config_digest.into(),
        ed25519: Some(hx(ed
            .public_key_package
            .verifying_key()
            .serialize()
            .expect("key"))),
        secp256k1_evm: Some(hx(evm
            .public_key_package
            .verifying_key()
            .serialize()
            .expect("key"))),
    }
}

/// Builds the whole file in memory from `report_vectors.json`'s generator.
pub fn build() -> ClientVectors {
    let base = gen_vectors::build();
    let reports: Vec<(String, SignedReport)> = base
        .cases
        .iter()
        .map(|c| {
            let r = SignedReport::from_bytes(&unhex(&c.report_wire)).expect("generated wire");
            (c.name.clone(), r)
        })
        .collect();
    let digest = hx(reports[0].1.header.config_digest.0);
    let ed = base
        .committee
        .ed25519
        .group_public_key
        .trim_start_matches("0x");
    let evm = base
        .committee
        .secp256k1_evm
        .group_public_key
        .trim_start_matches("0x");
    let set = |e: Option<&str>, v: Option<&str>| KeySet {
        config_digest: digest.clone(),
        ed25519: e.map(str::to_owned),
        secp256k1_evm: v.map(str::to_owned),
    };
    let keys: BTreeMap<String, KeySet> = [
        ("committee", set(Some(ed), Some(evm))),
        ("ed25519-only", set(Some(ed), None)),
        ("secp256k1-evm-only", set(None, Some(evm))),
        ("no-keys", set(None, None)),
        ("other-committee", other_keys(&digest)),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();

    let both = [Suite::Ed25519, Suite::Secp256k1Evm];
    let mut out = Vec::new();
    for (name, r) in &reports {
        out.push(report_case(
            name,
            "a report signed by the committee with both suites",
            "committee",
            r,
            Ok(&both),
        ));
    }
    let twelve = &reports[3].1;
    out.push(report_case(
        "twelve-feeds-ed25519-only",
        "a consumer that requires only Ed25519 checks only that signature",
        "ed25519-only",
        twelve,
        Ok(&[Suite::Ed25519]),
    ));
    out.push(report_case(
        "twelve-feeds-secp256k1-evm-only",
        "a consumer that requires only secp256k1-evm checks only that signature",
        "secp256k1-evm-only",
        twelve,
        Ok(&[Suite::Secp256k1Evm]),
    ));
    let three = &reports[1].1;
    let mut r = three.clone();
    r.signatures
        .insert(Suite::Secp256k1Evm, SignatureBytes(vec![0; 65]));
    out.push(report_case(
        "garbage-signature-of-unrequired-suite",
        "a malformed secp256k1-evm signature does not matter to an Ed25519-only consumer",
        "ed25519-only",
        &r,
        Ok(&[Suite::Ed25519]),
    ));

    let mut invalid = |name: &str, reason: &str, keys: &str, r: &SignedReport, err: &str| {
        out.push(report_case(name, reason, keys, r, Err(err)));
    };
    let mut r = three.clone();
    r.leaves[0].price += 1;
    invalid(
        "tampered-leaf",
        "leaf 0's price changed by one unit; header and signatures are the originals",
        "committee",
        &r,
        "RootMismatch",
    );
    r.header.merkle_root = merkle::root(&r.leaves);
    invalid(
        "tampered-leaf-root-recomputed",
        "leaf 0's price changed and the header's root recomputed: only the signatures catch it",
        "committee",
        &r,
        "BadSignature",
    );
    invalid(
        "wrong-key",
        "a valid report verified with another committee's group keys",
        "other-committee",
        three,
        "BadSignature",
    );
    let mut r = three.clone();
    r.header.config_digest.0[0] ^= 0xff;
    invalid(
        "wrong-config-digest",
        "the header names another committee configuration",
        "committee",
        &r,
        "WrongConfigDigest",
    );
    let mut r = three.clone();
    r.header.version = PROTOCOL_VERSION + 1;
    invalid(
        "wrong-version",
        "an unsupported header version",
        "committee",
        &r,
        "WrongVersion",
    );
    let mut r = three.clone();
    r.header.round += 1;
    invalid(
        "tampered-round",
        "header round changed; signatures are over the original header",
        "committee",
        &r,
        "BadSignature",
    );
    let mut r = three.clone();
    let mut z = r.signatures[&Suite::Secp256k1Evm].0.clone();
    z[64] ^= 1;
    r.signatures.insert(Suite::Secp256k1Evm, SignatureBytes(z));
    invalid(
        "tampered-secp256k1-evm-z",
        "lowest bit of the secp256k1-evm signature's z flipped; the Ed25519 one is intact",
        "committee",
        &r,
        "BadSignature",
    );
    let mut r = three.clone();
    r.signatures.remove(&Suite::Secp256k1Evm);
    invalid(
        "missing-signature",
        "no secp256k1-evm signature, which the consumer requires",
        "committee",
        &r,
        "MissingSignature",
    );
    let mut r = three.clone();
    r.signatures
        .insert(Suite::Ed25519, SignatureBytes(vec![1, 2, 3]));
    invalid(
        "malformed-signature",
        "a 3-byte Ed25519 signature",
        "committee",
        &r,
        "MalformedSignature",
    );
    let mut r = three.clone();
    let mut sig = r.signatures[&Suite::Ed25519].0.clone();
    // A point of order 8: a valid encoding, refused as not of prime order.
    sig[..32].copy_from_slice(&unhex(
        "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a",
    ));
    r.signatures.insert(Suite::Ed25519, SignatureBytes(sig));
    invalid(
        "ed25519-r-of-small-order",
        "the Ed25519 signature's R replaced by a point of order 8",
        "committee",
        &r,
        "MalformedSignature",
    );
    let mut r = three.clone();
    r.leaves.swap(0, 1);
    invalid(
        "leaves-not-sorted",
        "leaves 0 and 1 swapped; the header and its signatures are intact",
        "committee",
        &r,
        "LeavesNotSorted",
    );
    let margin = &reports
        .iter()
        .find(|(name, _)| name == "margin-commands")
        .expect("the margin-commands report")
        .1;
    let mut r = margin.clone();
    r.commands[1].body = r.commands[1].body.replace("250000000000", "250000000001");
    invalid(
        "tampered-command",
        "a margin command's body changed; header and signatures are the originals",
        "committee",
        &r,
        "CommandsMismatch",
    );
    let mut r = margin.clone();
    r.commands.swap(0, 1);
    invalid(
        "reordered-commands",
        "the two margin commands swapped: the margin root commits to their order",
        "committee",
        &r,
        "CommandsMismatch",
    );
    let mut r = margin.clone();
    r.commands.clear();
    invalid(
        "dropped-commands",
        "the margin commands left out; the header still commits to them",
        "committee",
        &r,
        "CommandsMismatch",
    );
    let mut r = margin.clone();
    r.commands.pop();
    r.header.margin_root = margin_root(&r.commands, r.margin_state.as_ref());
    invalid(
        "dropped-command-root-recomputed",
        "a margin command dropped and the header's margin root recomputed: only the signatures catch it",
        "committee",
        &r,
        "BadSignature",
    );
    let with_state = &reports
        .iter()
        .find(|(name, _)| name == "margin-commands-and-state")
        .expect("the margin-commands-and-state report")
        .1;
    let mut r = with_state.clone();
    if let Some(s) = r.margin_state.as_mut() {
        s.root[31] ^= 0x01;
    }
    invalid(
        "tampered-margin-state-root",
        "the margin state's root changed; header and signatures are the originals",
        "committee",
        &r,
        "CommandsMismatch",
    );
    let mut r = with_state.clone();
    if let Some(s) = r.margin_state.as_mut() {
        s.round -= 1;
    }
    invalid(
        "tampered-margin-state-round",
        "the margin state's round changed: the margin root commits to it too",
        "committee",
        &r,
        "CommandsMismatch",
    );
    let mut r = with_state.clone();
    r.margin_state = None;
    invalid(
        "dropped-margin-state",
        "the margin state left out; the header still commits to it",
        "committee",
        &r,
        "CommandsMismatch",
    );
    invalid(
        "no-keys",
        "a consumer with no group key verifies nothing",
        "no-keys",
        three,
        "NoGroupKeys",
    );

    let mut leaves = Vec::new();
    for (name, r) in &reports {
        for (i, l) in r.leaves.iter().enumerate() {
            let p = merkle::proof(&r.leaves, i).expect("index in range");
            leaves.push(leaf_case(
                &format!("{name}/{}", l.feed_id),
                "a signed report's leaf with its proof",
                "committee",
                &r.header,
                l,
                &p,
                &r.signatures,
                None,
            ));
        }
    }
    let p = merkle::proof(&three.leaves, 2).expect("index in range");
    leaves.push(leaf_case(
        "wrong-key",
        "a valid leaf verified with another committee's group keys",
        "other-committee",
        &three.header,
        &three.leaves[2],
        &p,
        &three.signatures,
        Some("BadSignature"),
    ));
    for c in &base.invalid {
        let leaf = c.leaf.to_leaf();
        let proof = MerkleProof::from_bytes(&unhex(&c.proof.wire)).expect("generated proof");
        leaves.push(leaf_case(
            &c.name,
            &c.reason,
            "committee",
            &header_of(&c.header),
            &leaf,
            &proof,
            &signatures_of(&c.signatures),
            Some(&c.error),
        ));
    }

    ClientVectors {
        description: "Sibyl client verification vectors: reports and leaves as the HTTP API serves them, with the key set to verify with and the expected outcome (docs/PROTOCOL.md, \"Client vectors\")".into(),
        generator: "cargo run -p sibyl-aggregator --example gen_client_vectors".into(),
        version: PROTOCOL_VERSION,
        keys,
        reports: out,
        leaves,
    }
}

/// The file's exact text: pretty JSON with a trailing newline.
pub fn render(v: &ClientVectors) -> String {
    let mut s = serde_json::to_string_pretty(v).expect("serializable");
    s.push('\n');
    s
}

#[allow(dead_code)]
fn main() -> std::io::Result<()> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(CLIENT_VECTORS_PATH);
    std::fs::write(&path, render(&build()))?;
    println!("wrote {}", path.display());
    Ok(())
}
