//! The committed test vectors are exactly what the generator produces, and
//! everything in them checks out when recomputed from first principles
//! (Keccak over the ABI bytes, the secp256k1 equation `z·G − c·PK = R`).

#[allow(dead_code)]
#[path = "../examples/gen_vectors.rs"]
mod gen_vectors;

use gen_vectors::{Vectors, build, render};
use k256::elliptic_curve::PrimeField;
use k256::elliptic_curve::sec1::FromEncodedPoint;
use sha3::{Digest, Keccak256};
use sibyl_aggregator::codec::Decode;
use sibyl_aggregator::digest::{commands_root, margin_root};
use sibyl_aggregator::merkle::{self, MerkleProof};
use sibyl_aggregator::verify::{GroupKeys, verify_leaf, verify_report};
use sibyl_aggregator::{
    ConfigDigest, ReportHeader, ReportLeaf, SignatureBytes, SignedReport, Suite, encoding,
};
use std::collections::BTreeMap;

fn committed() -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(gen_vectors::VECTORS_PATH);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

fn unhex(s: &str) -> Vec<u8> {
    hex::decode(s.strip_prefix("0x").expect("0x prefix")).expect("hex")
}

fn b32(s: &str) -> [u8; 32] {
    unhex(s).try_into().expect("32 bytes")
}

fn keccak(parts: &[&[u8]]) -> [u8; 32] {
    let mut k = Keccak256::new();
    for p in parts {
        k.update(p);
    }
    k.finalize().into()
}

fn header(h: &gen_vectors::Header) -> ReportHeader {
    ReportHeader {
        version: h.version,
        config_digest: ConfigDigest(b32(&h.config_digest)),
        round: h.round.parse().expect("u64"),
        timestamp_ms: h.timestamp_ms.parse().expect("u64"),
        merkle_root: b32(&h.merkle_root),
        margin_root: b32(&h.margin_root),
    }
}

fn leaf(l: &gen_vectors::Leaf) -> ReportLeaf {
    let leaf = l.to_leaf();
    assert_eq!(leaf.feed_id.to_bytes32(), b32(&l.feed_id_bytes32));
    leaf
}

fn proof(p: &gen_vectors::Proof) -> MerkleProof {
    let proof = MerkleProof {
        leaf_index: p.leaf_index,
        leaf_count: p.leaf_count,
        siblings: p.siblings.iter().map(|s| b32(s)).collect(),
    };
    assert_eq!(MerkleProof::from_bytes(&unhex(&p.wire)).unwrap(), proof);
    proof
}

fn signatures(s: &gen_vectors::Signatures) -> BTreeMap<Suite, SignatureBytes> {
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

fn keys(v: &Vectors, config_digest: ConfigDigest) -> GroupKeys {
    GroupKeys::new(config_digest)
        .with_key_bytes(
            Suite::Ed25519,
            &unhex(&v.committee.ed25519.group_public_key),
        )
        .unwrap()
        .with_key_bytes(
            Suite::Secp256k1Evm,
            &unhex(&v.committee.secp256k1_evm.group_public_key),
        )
        .unwrap()
}

fn point(x: &str, y: &str) -> k256::ProjectivePoint {
    let mut unc = vec![4u8];
    unc.extend(unhex(x));
    unc.extend(unhex(y));
    let ep = k256::EncodedPoint::from_bytes(&unc).unwrap();
    Option::<k256::AffinePoint>::from(k256::AffinePoint::from_encoded_point(&ep))
        .expect("on curve")
        .into()
}

fn scalar(s: &str) -> k256::Scalar {
    Option::from(k256::Scalar::from_repr(b32(s).into())).expect("canonical scalar")
}

/// What a Solidity verifier checks for a secp256k1-evm signature, done with
/// plain curve arithmetic: `z·G − c·PK == R`.
fn evm_equation_holds(v: &Vectors, s: &gen_vectors::EvmSig) -> bool {
    let pk = point(
        &v.committee.secp256k1_evm.public_key_x,
        &v.committee.secp256k1_evm.public_key_y,
    );
    let r = point(&s.r_x, &s.r_y);
    k256::ProjectivePoint::GENERATOR * scalar(&s.z) - pk * scalar(&s.challenge) == r
}

#[test]
fn committed_vectors_match_the_generator() {
    let fresh = render(&build());
    let file = committed();
    assert!(
        fresh == file,
        "aggregator/vectors/report_vectors.json is stale: run `cargo run -p sibyl-aggregator --example gen_vectors`"
    );
}

#[test]
fn valid_cases_check_out_from_first_principles() {
    let v: Vectors = serde_json::from_str(&committed()).expect("vector JSON parses");
    assert_eq!(
        b32(&v.domain.report_domain_hash),
        keccak(&[b"Sibyl report v1"])
    );
    let evm = &v.committee.secp256k1_evm;
    let pky = unhex(&evm.public_key_y);
    assert_eq!(evm.public_key_parity, pky[31] & 1);
    assert_eq!(unhex(&evm.group_public_key)[0], 2 + evm.public_key_parity);
    assert!(v.cases.len() >= 4);
    assert!(
        v.cases.iter().any(|c| c.commands.len() >= 2),
        "a case with margin commands"
    );
    assert!(
        v.cases
            .iter()
            .any(|c| !c.commands.is_empty() && c.margin_state.is_some()),
        "a case with margin commands and a margin state"
    );

    for case in &v.cases {
        let name = &case.name;
        let hd = header(&case.header);
        let leaves: Vec<ReportLeaf> = case.leaves.iter().map(leaf).collect();

        // ABI bytes and leaf hashes.
        let mut level = Vec::new();
        for (i, l) in leaves.iter().enumerate() {
            let abi = unhex(&case.leaf_abi[i]);
            assert_eq!(abi, encoding::encode_leaf(l), "{name} leaf {i} abi");
            assert_eq!(encoding::decode_leaf(&abi).unwrap(), *l);
            let lh = keccak(&[&[0u8], &abi]);
            assert_eq!(lh, b32(&case.leaf_hashes[i]), "{name} leaf {i} hash");
            level.push(lh);
        }
        // Root by the written rule: sorted pairs with 0x01, odd node promoted.
        while level.len() > 1 {
            level = level
                .chunks(2)
                .map(|c| match c {
                    [a, b] => keccak(&[&[1u8], a.min(b), a.max(b)]),
                    [a] => *a,
                    _ => unreachable!(),
                })
                .collect();
        }
        assert_eq!(level[0], b32(&case.merkle_root), "{name} root");
        assert_eq!(hd.merkle_root, level[0], "{name} header root");

        // Proofs fold to the root, in Rust and by hand.
        for (i, p) in case.proofs.iter().enumerate() {
            let p = proof(p);
            assert_eq!(p.leaf_index as usize, i);
            let lh = b32(&case.leaf_hashes[i]);
            assert!(
                merkle::verify_proof(&lh, &p, &hd.merkle_root),
                "{name} proof {i}"
            );
            let folded = p.siblings.iter().fold(lh, |acc, s| {
                keccak(&[&[1u8], acc.min(*s).as_slice(), acc.max(*s).as_slice()])
            });
            assert_eq!(folded, hd.merkle_root);
        }

        // Commands root: zero without commands, else Keccak-256 of the
        // preimage, which is written out by hand here.
        let commands_root_by_hand = match &case.commands_preimage {
            None => {
                assert!(case.commands.is_empty(), "{name}");
                [0; 32]
            }
            Some(pre) => {
                let mut by_hand = b"Sibyl margin commands v1".to_vec();
                for c in &case.commands {
                    by_hand.extend_from_slice(&c.origin.to_be_bytes());
                    by_hand.extend_from_slice(&c.nonce.to_be_bytes());
                    by_hand.extend_from_slice(&(c.body.len() as u32).to_be_bytes());
                    by_hand.extend_from_slice(c.body.as_bytes());
                }
                assert_eq!(unhex(pre), by_hand, "{name} commands preimage");
                keccak(&[&by_hand])
            }
        };
        assert_eq!(commands_root(&case.commands), commands_root_by_hand);
        // Margin root: the commands root without a margin state, else the
        // Keccak-256 of the state preimage, also written out by hand.
        match (&case.margin_state, &case.margin_state_preimage) {
            (None, None) => {
                assert_eq!(hd.margin_root, commands_root_by_hand, "{name} margin root")
            }
            (Some(state), Some(pre)) => {
                let mut by_hand = b"Sibyl margin state v1".to_vec();
                by_hand.extend_from_slice(&commands_root_by_hand);
                by_hand.extend_from_slice(&state.round.to_be_bytes());
                by_hand.extend_from_slice(&state.root);
                assert_eq!(unhex(pre), by_hand, "{name} margin state preimage");
                assert_eq!(keccak(&[&by_hand]), hd.margin_root, "{name} margin root");
            }
            _ => panic!("{name}: margin_state and margin_state_preimage go together"),
        }
        assert_eq!(
            margin_root(&case.commands, case.margin_state.as_ref()),
            hd.margin_root,
            "{name}"
        );

        // Header ABI and digest.
        let habi = unhex(&case.header_abi);
        assert_eq!(habi, encoding::encode_header(&hd));
        assert_eq!(encoding::decode_header(&habi).unwrap(), hd);
        let pre = unhex(&case.digest_preimage);
        assert_eq!(&pre[..32], &keccak(&[b"Sibyl report v1"]));
        assert_eq!(&pre[32..], &habi[..]);
        assert_eq!(keccak(&[&pre]), b32(&case.digest), "{name} digest");

        // Signatures: FROST verification and the EVM equation.
        let report = SignedReport {
            header: hd.clone(),
            leaves: leaves.clone(),
            signatures: signatures(&case.signatures),
            commands: case.commands.clone(),
            margin_state: case.margin_state,
        };
        let keys = keys(&v, hd.config_digest);
        let verified = verify_report(&report, &keys).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(verified.digest, b32(&case.digest));
        let es = &case.signatures.secp256k1_evm;
        assert_eq!(unhex(&es.r)[1..], unhex(&es.r_x)[..]);
        assert!(evm_equation_holds(&v, es), "{name}: z·G − c·PK ≠ R");

        // The whole report on the wire.
        let wire = unhex(&case.report_wire);
        assert_eq!(
            SignedReport::decode_expecting(&wire, &hd.config_digest).unwrap(),
            report
        );
    }
}

#[test]
fn invalid_cases_are_rejected_for_the_stated_reason() {
    let v: Vectors = serde_json::from_str(&committed()).expect("vector JSON parses");
    let trusted = header(&v.cases[1].header).config_digest;
    let keys = keys(&v, trusted);
    assert!(v.invalid.len() >= 6);
    for case in &v.invalid {
        assert_eq!(case.expected, "invalid");
        let hd = header(&case.header);
        let l = leaf(&case.leaf);
        assert_eq!(unhex(&case.leaf_abi), encoding::encode_leaf(&l));
        assert_eq!(unhex(&case.header_abi), encoding::encode_header(&hd));
        let p = proof(&case.proof);
        let err =
            verify_leaf(&hd, &l, &p, &signatures(&case.signatures), &keys).expect_err(&case.name);
        let got = format!("{err:?}");
        assert!(
            got.starts_with(&case.error),
            "{}: expected {}, got {got}",
            case.name,
            case.error
        );
        // A tampered signature also fails the EVM equation a contract checks.
        if case.name == "tampered-signature-z" || case.name.starts_with("tampered-round") {
            assert!(!evm_equation_holds(&v, &case.signatures.secp256k1_evm));
        }
        // Cases that are validly signed but for the wrong committee/version
        // do satisfy the equation: only the header checks reject them.
        if case.error == "WrongConfigDigest" || case.error == "WrongVersion" {
            assert!(evm_equation_holds(&v, &case.signatures.secp256k1_evm));
        }
    }
}
