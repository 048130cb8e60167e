//! Fuzz entry points, one per decoder of the crate (report formats and the
//! round protocol's signed messages).
//!
//! Each takes arbitrary bytes and must never panic on its own account: a
//! decoder either rejects the input with a typed error or accepts it, and
//! then re-encoding must give back exactly the input (one encoding per
//! value). The `assert!`s here are the fuzz oracle. They are called by the
//! cargo-fuzz targets in `aggregator/fuzz/` and by the property tests below.

use crate::codec::{Decode, Encode};
use crate::encoding;
use crate::merkle::{self, MerkleProof};
use crate::report::{ConfigDigest, ReportHeader, ReportLeaf, SignedReport};
use crate::verify::SignedLeaf;

/// The config digest `decode_expecting` is fuzzed against.
const FUZZ_DIGEST: ConfigDigest = ConfigDigest([0x5b; 32]);

fn canonical<T: Encode + Decode>(data: &[u8]) -> Option<T> {
    let v = T::from_bytes(data).ok()?;
    assert_eq!(
        v.to_bytes(),
        data,
        "{} accepted a non-canonical encoding",
        T::WHAT
    );
    Some(v)
}

/// [`SignedReport`] decoding, plain and with an expected config digest.
pub fn fuzz_signed_report(data: &[u8]) {
    let plain = canonical::<SignedReport>(data);
    let expecting = SignedReport::decode_expecting(data, &FUZZ_DIGEST).ok();
    match (&plain, &expecting) {
        (Some(p), Some(e)) => assert_eq!(p, e),
        (Some(p), None) => assert_ne!(p.header.config_digest, FUZZ_DIGEST),
        (None, Some(_)) => panic!("decode_expecting accepted what from_bytes rejected"),
        (None, None) => {}
    }
    if let Some(r) = plain {
        // Recomputing the root of whatever decoded must not panic either.
        let _ = merkle::root(&r.leaves);
    }
}

/// [`SignedLeaf`] decoding (the pull-consumer message); a decoded leaf's
/// proof is also run through `verify_proof`.
pub fn fuzz_signed_leaf(data: &[u8]) {
    if let Some(sl) = canonical::<SignedLeaf>(data) {
        let _ = merkle::verify_proof(
            &merkle::leaf_hash(&sl.leaf),
            &sl.proof,
            &sl.header.merkle_root,
        );
    }
    let _ = SignedLeaf::decode_expecting(data, &FUZZ_DIGEST);
}

/// [`MerkleProof`] decoding.
pub fn fuzz_merkle_proof(data: &[u8]) {
    if let Some(p) = canonical::<MerkleProof>(data) {
        assert!(p.leaf_index < p.leaf_count);
        assert_eq!(
            p.siblings.len(),
            merkle::proof_len(p.leaf_index, p.leaf_count)
        );
    }
}

/// Binary header and leaf decoding.
pub fn fuzz_header_and_leaf(data: &[u8]) {
    let _ = canonical::<ReportHeader>(data);
    let _ = canonical::<ReportLeaf>(data);
}

/// Round-protocol messages (observation, proposal, share, report body):
/// `round::message::decode_unverified`. The expected config digest is taken
/// from the input itself (bytes 1..33) so the fuzzer is not stopped at the
/// digest check, and the fixed one is tried too.
pub fn fuzz_round_message(data: &[u8]) {
    let _ = crate::round::message::decode_unverified(data, &FUZZ_DIGEST);
    if let Some(d) = data.get(1..33) {
        let mut digest = [0u8; 32];
        digest.copy_from_slice(d);
        let _ = crate::round::message::decode_unverified(data, &ConfigDigest(digest));
    }
}

/// ABI (`abi.encode`) leaf and header decoding.
pub fn fuzz_abi(data: &[u8]) {
    if let Ok(l) = encoding::decode_leaf(data) {
        assert_eq!(&encoding::encode_leaf(&l)[..], data);
    }
    if let Ok(h) = encoding::decode_header(data) {
        assert_eq!(&encoding::encode_header(&h)[..], data);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::DecodeError;
    use crate::report::{FeedId, SignatureBytes, Suite};
    use crate::testkit;
    use proptest::prelude::*;
    use rand_chacha::ChaCha20Rng;
    use rand_core::SeedableRng;
    use std::collections::BTreeMap;
    use std::sync::OnceLock;

    /// One really signed report, built once (FROST signing is the slow part).
    fn signed() -> &'static testkit::Fixture {
        static F: OnceLock<testkit::Fixture> = OnceLock::new();
        F.get_or_init(|| testkit::fixture(9, &mut ChaCha20Rng::seed_from_u64(99)))
    }

    fn leaf() -> impl Strategy<Value = ReportLeaf> {
        (
            "[A-Z0-9][A-Z0-9._-]{0,31}",
            any::<i128>(),
            any::<u128>(),
            any::<u16>(),
            any::<u64>(),
        )
            .prop_map(|(id, price, confidence, n, t)| ReportLeaf {
                feed_id: FeedId::new(id).expect("strategy yields valid ids"),
                price,
                confidence,
                num_observations: n,
                observed_at_ms: t,
            })
    }

    fn report() -> impl Strategy<Value = SignedReport> {
        (
            any::<([u8; 32], u64, u64, [u8; 32])>(),
            proptest::collection::btree_map("[A-Z0-9][A-Z0-9._-]{0,31}", leaf(), 0..12),
            proptest::option::of(proptest::collection::vec(any::<u8>(), 64)),
            proptest::option::of(proptest::collection::vec(any::<u8>(), 65)),
        )
            .prop_map(|((cd, round, ts, root), by_id, ed, evm)| {
                let leaves = by_id
                    .into_iter()
                    .map(|(id, mut l)| {
                        l.feed_id = FeedId::new(id).expect("valid id");
                        l
                    })
                    .collect();
                let mut signatures = BTreeMap::new();
                if let Some(s) = ed {
                    signatures.insert(Suite::Ed25519, SignatureBytes(s));
                }
                if let Some(s) = evm {
                    signatures.insert(Suite::Secp256k1Evm, SignatureBytes(s));
                }
                SignedReport {
                    header: ReportHeader {
                        version: crate::PROTOCOL_VERSION,
                        config_digest: ConfigDigest(cd),
                        round,
                        timestamp_ms: ts,
                        merkle_root: root,
                    },
                    leaves,
                    signatures,
                }
            })
    }

    #[test]
    fn signed_report_rejects_each_kind_of_bad_input() {
        let f = signed();
        let bytes = f.report.to_bytes();
        assert_eq!(
            SignedReport::decode_expecting(&bytes, &f.keys.config_digest).unwrap(),
            f.report
        );
        // Every truncation.
        for cut in 0..bytes.len() {
            let err = SignedReport::from_bytes(&bytes[..cut]).unwrap_err();
            assert!(matches!(err, DecodeError::Truncated { .. }), "{cut}: {err}");
        }
        // Trailing bytes.
        let mut long = bytes.clone();
        long.push(0);
        assert_eq!(
            SignedReport::from_bytes(&long).unwrap_err(),
            DecodeError::TrailingBytes {
                what: "signed report",
                at: bytes.len(),
                count: 1
            }
        );
        // Wrong version.
        let mut v = bytes.clone();
        v[0] = 2;
        assert_eq!(
            SignedReport::from_bytes(&v).unwrap_err(),
            DecodeError::WrongVersion {
                got: 2,
                expected: 1
            }
        );
        // Wrong config digest.
        let other = ConfigDigest([1; 32]);
        assert_eq!(
            SignedReport::decode_expecting(&bytes, &other).unwrap_err(),
            DecodeError::WrongConfigDigest {
                got: f.keys.config_digest,
                expected: other
            }
        );
        // Oversized leaf count: rejected before any allocation.
        let mut big = bytes.clone();
        big[81..85].copy_from_slice(&(merkle::MAX_LEAVES as u32 + 1).to_be_bytes());
        assert!(matches!(
            SignedReport::from_bytes(&big),
            Err(DecodeError::TooLong { what: "leaves", .. })
        ));
        // Leaves out of order.
        let mut swapped = f.report.clone();
        swapped.leaves.swap(3, 4);
        assert!(matches!(
            SignedReport::from_bytes(&swapped.to_bytes()),
            Err(DecodeError::NonCanonical { .. })
        ));
        // Signature of the wrong length for its suite.
        let mut short_sig = f.report.clone();
        short_sig
            .signatures
            .insert(Suite::Secp256k1Evm, SignatureBytes(vec![0; 64]));
        assert!(matches!(
            SignedReport::from_bytes(&short_sig.to_bytes()),
            Err(DecodeError::Invalid {
                what: "signature",
                ..
            })
        ));
        // Unknown suite tag.
        let tag_at = 81 + 4 + f.report.leaves.len() * crate::codec::LEAF_WIRE_LEN + 4;
        let mut tag = bytes.clone();
        tag[tag_at] = 9;
        assert!(matches!(
            SignedReport::from_bytes(&tag),
            Err(DecodeError::InvalidTag { what: "suite", .. })
        ));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn random_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..600)) {
            fuzz_signed_report(&data);
            fuzz_signed_leaf(&data);
            fuzz_merkle_proof(&data);
            fuzz_header_and_leaf(&data);
            fuzz_abi(&data);
            fuzz_round_message(&data);
        }

        /// Random bodies behind a well-formed message prefix (version, config
        /// digest, round, sender, each message kind) reach every payload decoder.
        #[test]
        fn round_messages_with_valid_prefix_never_panic(
            kind in 0u8..6,
            round: u64,
            sender: u16,
            body in proptest::collection::vec(any::<u8>(), 0..400),
        ) {
            let mut data = vec![crate::PROTOCOL_VERSION];
            data.extend_from_slice(&FUZZ_DIGEST.0);
            data.extend_from_slice(&round.to_be_bytes());
            data.extend_from_slice(&sender.to_be_bytes());
            data.push(kind);
            data.extend_from_slice(&body);
            fuzz_round_message(&data);
            prop_assert!(crate::round::message::decode_unverified(&data, &FUZZ_DIGEST).is_err()
                || data.len() >= 1 + 32 + 8 + 2 + 1 + 64);
        }

        #[test]
        fn mutated_valid_encodings_never_panic(
            which in 0usize..3,
            edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
            cut in any::<prop::sample::Index>(),
        ) {
            let f = signed();
            let mut data = match which {
                0 => f.report.to_bytes(),
                1 => SignedLeaf::from_report(&f.report, 4).unwrap().to_bytes(),
                _ => merkle::proof(&f.report.leaves, 8).unwrap().to_bytes(),
            };
            for (i, b) in edits {
                let i = i.index(data.len());
                data[i] = b;
            }
            let data = &data[..cut.index(data.len() + 1)];
            fuzz_signed_report(data);
            fuzz_signed_leaf(data);
            fuzz_merkle_proof(data);
        }

        #[test]
        fn signed_report_roundtrips(r in report()) {
            let bytes = r.to_bytes();
            prop_assert_eq!(SignedReport::from_bytes(&bytes).unwrap(), r.clone());
            prop_assert_eq!(
                SignedReport::decode_expecting(&bytes, &r.header.config_digest).unwrap(),
                r
            );
            fuzz_signed_report(&bytes);
        }

        #[test]
        fn leaf_and_header_roundtrip(l in leaf(), r in report()) {
            prop_assert_eq!(ReportLeaf::from_bytes(&l.to_bytes()).unwrap(), l.clone());
            prop_assert_eq!(ReportHeader::from_bytes(&r.header.to_bytes()).unwrap(), r.header);
            fuzz_abi(&encoding::encode_leaf(&l));
        }

        #[test]
        fn signed_leaf_roundtrips(i in any::<prop::sample::Index>()) {
            let f = signed();
            let sl = SignedLeaf::from_report(&f.report, i.index(f.report.leaves.len())).unwrap();
            let bytes = sl.to_bytes();
            prop_assert_eq!(SignedLeaf::from_bytes(&bytes).unwrap(), sl.clone());
            prop_assert!(sl.verify(&f.keys).is_ok());
            fuzz_signed_leaf(&bytes);
        }
    }
}
