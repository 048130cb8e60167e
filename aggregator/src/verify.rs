//! Consumer-side verification: is this report (or this one feed) really
//! signed by the committee?
//!
//! ```text
//!  SignedReport ──▶ version / config digest ──▶ leaves sorted, ≤ MAX_LEAVES
//!        │                                              │
//!        └─ header.merkle_root == merkle::root(leaves) ◀┘
//!                      │
//!        digest::header_digest(header) ──▶ FROST verify, once per configured suite
//! ```
//!
//! A consumer needs only the committee's [`GroupKeys`]: the group verifying
//! key of each ciphersuite it signs with, and the config digest it expects.
//!
//! ```
//! use sibyl_aggregator::verify::{GroupKeys, verify_report};
//! use sibyl_aggregator::{ConfigDigest, SignedReport, Suite};
//!
//! # let json = std::fs::read_to_string(concat!(
//! #     env!("CARGO_MANIFEST_DIR"),
//! #     "/vectors/report_vectors.json"
//! # ))?;
//! # let v: serde_json::Value = serde_json::from_str(&json)?;
//! # let unhex = |v: &serde_json::Value| {
//! #     hex::decode(v.as_str().unwrap_or_default().trim_start_matches("0x"))
//! # };
//! # let config_digest: [u8; 32] =
//! #     unhex(&v["cases"][0]["header"]["config_digest"])?.as_slice().try_into()?;
//! # let ed25519_key = unhex(&v["committee"]["ed25519"]["group_public_key"])?;
//! # let secp256k1_evm_key = unhex(&v["committee"]["secp256k1_evm"]["group_public_key"])?;
//! # let wire = unhex(&v["cases"][0]["report_wire"])?;
//! // What the consumer trusts: the committee's config digest and group keys
//! // (32-byte Ed25519 point, 33-byte compressed secp256k1 point). `wire` is a
//! // report's canonical encoding; here, the test vectors' `single-feed` case.
//! let keys = GroupKeys::new(ConfigDigest(config_digest))
//!     .with_key_bytes(Suite::Ed25519, &ed25519_key)?
//!     .with_key_bytes(Suite::Secp256k1Evm, &secp256k1_evm_key)?;
//!
//! // Decoding checks the encoding and the committee; verifying checks the rest.
//! let report = SignedReport::decode_expecting(&wire, &keys.config_digest)?;
//! let verified = verify_report(&report, &keys)?;
//! for leaf in &verified.report.leaves {
//!     // Fixed point with the feed's decimals, which the committee file gives.
//!     println!("{}: {} ± {}", leaf.feed_id, leaf.price, leaf.confidence);
//! }
//! # assert_eq!(verified.suites.len(), 2);
//! # assert_eq!(verified.report.leaves.len(), 1);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#![warn(missing_docs)]

use crate::codec::{
    Decode, DecodeError, Encode, Reader, Writer, decode_header, decode_signatures,
    encode_signatures,
};
use crate::digest::{header_digest, margin_root};
use crate::merkle::{self, MAX_LEAVES, MerkleProof};
use crate::report::{
    ConfigDigest, PROTOCOL_VERSION, ReportHeader, ReportLeaf, SignatureBytes, SignedReport, Suite,
};
use frost_core::{Ciphersuite, Signature, VerifyingKey};
use std::collections::{BTreeMap, BTreeSet};

/// What a consumer trusts: the committee configuration and its group keys.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupKeys {
    /// Reports must carry this config digest.
    pub config_digest: ConfigDigest,
    /// FROST(Ed25519, SHA-512) group key, if the committee signs with it.
    pub ed25519: Option<frost_ed25519::VerifyingKey>,
    /// FROST(secp256k1, Keccak-256) group key, if the committee signs with it.
    pub secp256k1_evm: Option<frost_secp256k1_evm::VerifyingKey>,
}

impl GroupKeys {
    /// Trust in the committee with `config_digest`, with no group key yet: add at
    /// least one, or every check fails with [`VerifyError::NoGroupKeys`].
    pub fn new(config_digest: ConfigDigest) -> Self {
        Self {
            config_digest,
            ed25519: None,
            secp256k1_evm: None,
        }
    }

    /// Requires a valid FROST(Ed25519, SHA-512) signature under `key`.
    pub fn with_ed25519(mut self, key: frost_ed25519::VerifyingKey) -> Self {
        self.ed25519 = Some(key);
        self
    }

    /// Requires a valid FROST(secp256k1, Keccak-256) signature under `key`.
    pub fn with_secp256k1_evm(mut self, key: frost_secp256k1_evm::VerifyingKey) -> Self {
        self.secp256k1_evm = Some(key);
        self
    }

    /// Sets a suite's key from its serialized form (32-byte Ed25519 point or
    /// 33-byte compressed secp256k1 point); [`VerifyError::BadGroupKey`] if the
    /// bytes are not a valid point.
    pub fn with_key_bytes(mut self, suite: Suite, bytes: &[u8]) -> Result<Self, VerifyError> {
        let bad = |e: String| VerifyError::BadGroupKey { suite, reason: e };
        match suite {
            Suite::Ed25519 => {
                self.ed25519 = Some(
                    frost_ed25519::VerifyingKey::deserialize(bytes)
                        .map_err(|e| bad(e.to_string()))?,
                )
            }
            Suite::Secp256k1Evm => {
                self.secp256k1_evm = Some(
                    frost_secp256k1_evm::VerifyingKey::deserialize(bytes)
                        .map_err(|e| bad(e.to_string()))?,
                )
            }
        }
        Ok(self)
    }

    /// The suites a report must be signed with.
    pub fn suites(&self) -> BTreeSet<Suite> {
        let mut s = BTreeSet::new();
        if self.ed25519.is_some() {
            s.insert(Suite::Ed25519);
        }
        if self.secp256k1_evm.is_some() {
            s.insert(Suite::Secp256k1Evm);
        }
        s
    }
}

/// Why a report or leaf did not verify.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// The header's version is not [`PROTOCOL_VERSION`] (checked first).
    #[error(
        "report version {got} is not supported (expected {expected}); upgrade the consumer or the committee"
    )]
    WrongVersion {
        /// The header's version.
        got: u8,
        /// The version this consumer verifies.
        expected: u8,
    },
    /// The header's config digest is not [`GroupKeys::config_digest`]: a report of
    /// another committee configuration (checked second).
    #[error(
        "report config digest 0x{} is not the expected 0x{}; the report belongs to a different committee configuration",
        hex::encode(got.0),
        hex::encode(expected.0)
    )]
    WrongConfigDigest {
        /// The header's config digest.
        got: ConfigDigest,
        /// The consumer's [`GroupKeys::config_digest`].
        expected: ConfigDigest,
    },
    /// The [`GroupKeys`] hold no key at all, so nothing could be verified.
    #[error("no group key is configured; give at least one ciphersuite's group verifying key")]
    NoGroupKeys,
    /// [`GroupKeys::with_key_bytes`] was given bytes that are not a group key.
    #[error("invalid {suite:?} group key: {reason}")]
    BadGroupKey {
        /// The suite the key was for.
        suite: Suite,
        /// Why the bytes were refused.
        reason: String,
    },
    /// The report has more than [`MAX_LEAVES`] leaves (checked before any signature).
    #[error("report has {count} leaves, more than the maximum {MAX_LEAVES}")]
    TooManyLeaves {
        /// Number of leaves in the report.
        count: usize,
    },
    /// Two neighbouring leaves are not in strictly ascending feed-id order (a
    /// duplicate or misplaced feed); checked after the signatures.
    #[error(
        "leaf {index} ({feed}) is not in strictly ascending feed-id order; leaves must be sorted and unique"
    )]
    LeavesNotSorted {
        /// Index of the first leaf not above its predecessor.
        index: usize,
        /// That leaf's feed id.
        feed: String,
    },
    /// The leaves' Merkle root is not the header's: a leaf was changed, added or dropped.
    #[error(
        "Merkle root mismatch: header says 0x{}, the leaves give 0x{}",
        hex::encode(header),
        hex::encode(computed)
    )]
    RootMismatch {
        /// The root the header (and so the signatures) commits to.
        header: [u8; 32],
        /// The root of the report's leaves.
        computed: [u8; 32],
    },
    /// The report's margin commands and state do not give the header's
    /// margin root: a command was changed, added, dropped or reordered, or
    /// the state root changed.
    #[error(
        "margin root mismatch: header says 0x{}, the report's {count} margin commands and margin state give 0x{}",
        hex::encode(header),
        hex::encode(computed)
    )]
    CommandsMismatch {
        /// The margin root the header (and so the signatures) commits to.
        header: [u8; 32],
        /// [`margin_root`] of the report's commands and margin state.
        computed: [u8; 32],
        /// How many commands the report carries.
        count: usize,
    },
    /// [`verify_leaf`]: the proof does not place the leaf's hash under the header's
    /// root (a changed leaf, a proof of another leaf, or a malformed proof).
    #[error("Merkle proof does not place feed {feed} under the header's root")]
    BadProof {
        /// The leaf's feed id.
        feed: String,
    },
    /// No signature for a suite the consumer has a key for.
    #[error("report carries no {suite:?} signature, which the committee's keys require")]
    MissingSignature {
        /// The suite whose signature is missing.
        suite: Suite,
    },
    /// A signature's bytes do not parse for its suite (wrong length, `R` not a curve
    /// point, `z` not a scalar).
    #[error("{suite:?} signature is malformed: {reason}")]
    MalformedSignature {
        /// The suite of the signature.
        suite: Suite,
        /// Why it does not parse.
        reason: String,
    },
    /// A signature parses but is not the committee's over this header's digest: the
    /// header (round, timestamp, root, ...) or the signature was changed.
    #[error("{suite:?} signature does not verify against the group key for this report's digest")]
    BadSignature {
        /// The suite of the signature that failed.
        suite: Suite,
    },
}

/// A report that passed [`verify_report`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifiedReport {
    /// The report, unchanged.
    pub report: SignedReport,
    /// The digest the signatures cover.
    pub digest: [u8; 32],
    /// The suites whose signatures were checked (all configured ones).
    pub suites: BTreeSet<Suite>,
}

/// Verifies a whole report: version, config digest, leaf order and count,
/// Merkle root, and a valid signature for every suite in `keys`. Signatures
/// for suites `keys` does not configure are ignored.
///
/// Returns the first failure in this order: [`VerifyError::WrongVersion`],
/// [`WrongConfigDigest`](VerifyError::WrongConfigDigest), [`TooManyLeaves`](VerifyError::TooManyLeaves),
/// the signature errors (Ed25519 before secp256k1-evm), then
/// [`LeavesNotSorted`](VerifyError::LeavesNotSorted) and [`RootMismatch`](VerifyError::RootMismatch):
/// a forgery costs one signature check per suite, not a Merkle tree.
pub fn verify_report(
    report: &SignedReport,
    keys: &GroupKeys,
) -> Result<VerifiedReport, VerifyError> {
    check_header(&report.header, keys)?;
    let leaves = &report.leaves;
    if leaves.len() > MAX_LEAVES {
        return Err(VerifyError::TooManyLeaves {
            count: leaves.len(),
        });
    }
    // The header's signatures first: a forged report costs one signature
    // check per suite, not a Merkle tree over its leaves.
    let digest = header_digest(&report.header);
    let suites = check_signatures(&digest, &report.signatures, keys)?;
    if let Some(i) = leaves.windows(2).position(|w| w[0].feed_id >= w[1].feed_id) {
        return Err(VerifyError::LeavesNotSorted {
            index: i + 1,
            feed: leaves[i + 1].feed_id.to_string(),
        });
    }
    let computed = merkle::root(leaves);
    if computed != report.header.merkle_root {
        return Err(VerifyError::RootMismatch {
            header: report.header.merkle_root,
            computed,
        });
    }
    let computed = margin_root(&report.commands, report.margin_state.as_ref());
    if computed != report.header.margin_root {
        return Err(VerifyError::CommandsMismatch {
            header: report.header.margin_root,
            computed,
            count: report.commands.len(),
        });
    }
    Ok(VerifiedReport {
        report: report.clone(),
        digest,
        suites,
    })
}

/// Verifies one feed: its leaf is under the header's root (by `proof`) and
/// the header is signed for every suite in `keys`. Checks the version and
/// config digest, then the proof ([`VerifyError::BadProof`]), then the
/// signatures; returns the signed digest.
pub fn verify_leaf(
    header: &ReportHeader,
    leaf: &ReportLeaf,
    proof: &MerkleProof,
    signatures: &BTreeMap<Suite, SignatureBytes>,
    keys: &GroupKeys,
) -> Result<[u8; 32], VerifyError> {
    check_header(header, keys)?;
    if !merkle::verify_proof(&merkle::leaf_hash(leaf), proof, &header.merkle_root) {
        return Err(VerifyError::BadProof {
            feed: leaf.feed_id.to_string(),
        });
    }
    let digest = header_digest(header);
    check_signatures(&digest, signatures, keys)?;
    Ok(digest)
}

/// One feed of a signed report, as a pull consumer fetches it: the header,
/// the feed's leaf, its Merkle proof and the committee's signatures.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignedLeaf {
    /// The report's header; the signatures cover its digest.
    pub header: ReportHeader,
    /// The feed's leaf.
    pub leaf: ReportLeaf,
    /// Places [`merkle::leaf_hash`] of `leaf` under `header.merkle_root`.
    pub proof: MerkleProof,
    /// The report's signatures, one per suite.
    pub signatures: BTreeMap<Suite, SignatureBytes>,
}

impl SignedLeaf {
    /// Cuts leaf `index` out of `report` with its proof.
    pub fn from_report(report: &SignedReport, index: usize) -> Result<Self, merkle::MerkleError> {
        let proof = merkle::proof(&report.leaves, index)?;
        Ok(Self {
            header: report.header.clone(),
            leaf: report.leaves[index].clone(),
            proof,
            signatures: report.signatures.clone(),
        })
    }

    /// [`verify_leaf`] on this leaf; returns the signed digest.
    pub fn verify(&self, keys: &GroupKeys) -> Result<[u8; 32], VerifyError> {
        verify_leaf(
            &self.header,
            &self.leaf,
            &self.proof,
            &self.signatures,
            keys,
        )
    }

    /// Decodes a whole buffer, checking the config digest.
    pub fn decode_expecting(bytes: &[u8], expected: &ConfigDigest) -> Result<Self, DecodeError> {
        let mut r = Reader::new(bytes);
        let v = decode_signed_leaf(&mut r, Some(expected))?;
        r.finish(Self::WHAT)?;
        Ok(v)
    }
}

/// `header ‖ leaf ‖ proof ‖ signatures`, each in its canonical wire form.
impl Encode for SignedLeaf {
    fn encode(&self, w: &mut Writer) {
        w.put(&self.header).put(&self.leaf).put(&self.proof);
        encode_signatures(w, &self.signatures);
    }
}

impl Decode for SignedLeaf {
    const WHAT: &'static str = "signed leaf";
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        decode_signed_leaf(r, None)
    }
}

fn decode_signed_leaf(
    r: &mut Reader<'_>,
    expected: Option<&ConfigDigest>,
) -> Result<SignedLeaf, DecodeError> {
    Ok(SignedLeaf {
        header: decode_header(r, expected)?,
        leaf: r.get()?,
        proof: r.get()?,
        signatures: decode_signatures(r)?,
    })
}

fn check_header(header: &ReportHeader, keys: &GroupKeys) -> Result<(), VerifyError> {
    if header.version != PROTOCOL_VERSION {
        return Err(VerifyError::WrongVersion {
            got: header.version,
            expected: PROTOCOL_VERSION,
        });
    }
    if header.config_digest != keys.config_digest {
        return Err(VerifyError::WrongConfigDigest {
            got: header.config_digest,
            expected: keys.config_digest,
        });
    }
    Ok(())
}

fn check_signatures(
    digest: &[u8; 32],
    signatures: &BTreeMap<Suite, SignatureBytes>,
    keys: &GroupKeys,
) -> Result<BTreeSet<Suite>, VerifyError> {
    let suites = keys.suites();
    if suites.is_empty() {
        return Err(VerifyError::NoGroupKeys);
    }
    if let Some(key) = &keys.ed25519 {
        check_one(Suite::Ed25519, key, digest, signatures)?;
    }
    if let Some(key) = &keys.secp256k1_evm {
        check_one(Suite::Secp256k1Evm, key, digest, signatures)?;
    }
    Ok(suites)
}

fn check_one<C: Ciphersuite>(
    suite: Suite,
    key: &VerifyingKey<C>,
    digest: &[u8; 32],
    signatures: &BTreeMap<Suite, SignatureBytes>,
) -> Result<(), VerifyError> {
    let bytes = signatures
        .get(&suite)
        .ok_or(VerifyError::MissingSignature { suite })?;
    let sig =
        Signature::<C>::deserialize(&bytes.0).map_err(|e| VerifyError::MalformedSignature {
            suite,
            reason: e.to_string(),
        })?;
    key.verify(digest, &sig)
        .map_err(|_| VerifyError::BadSignature { suite })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit;
    use rand_chacha::ChaCha20Rng;
    use rand_core::SeedableRng;

    fn fixture(n: usize) -> testkit::Fixture {
        testkit::fixture(n, &mut ChaCha20Rng::seed_from_u64(n as u64))
    }

    #[test]
    fn valid_report_verifies_with_each_and_both_suites() {
        let f = fixture(5);
        let v = verify_report(&f.report, &f.keys).unwrap();
        assert_eq!(
            v.suites,
            [Suite::Ed25519, Suite::Secp256k1Evm].into_iter().collect()
        );
        assert_eq!(v.digest, header_digest(&f.report.header));
        let only_ed = GroupKeys {
            secp256k1_evm: None,
            ..f.keys.clone()
        };
        assert!(verify_report(&f.report, &only_ed).is_ok());
        let only_evm = GroupKeys {
            ed25519: None,
            ..f.keys.clone()
        };
        assert!(verify_report(&f.report, &only_evm).is_ok());
        assert_eq!(
            verify_report(&f.report, &GroupKeys::new(f.keys.config_digest)),
            Err(VerifyError::NoGroupKeys)
        );
    }

    #[test]
    fn a_reports_margin_commands_are_bound_by_its_signature() {
        let f = testkit::fixture_with_commands(
            5,
            testkit::sample_commands(),
            &mut ChaCha20Rng::seed_from_u64(9),
        );
        assert_ne!(f.report.header.margin_root, [0; 32]);
        verify_report(&f.report, &f.keys).unwrap();
        // The wire and JSON forms keep them.
        let back = SignedReport::from_bytes(&f.report.to_bytes()).unwrap();
        assert_eq!(back, f.report);
        let json: SignedReport =
            serde_json::from_str(&serde_json::to_string(&f.report).unwrap()).unwrap();
        assert_eq!(json, f.report);
        let tampered: [fn(&mut SignedReport); 4] = [
            |r| r.commands[0].body.push(' '),
            |r| r.commands[1].nonce += 1,
            |r| {
                r.commands.pop();
            },
            |r| r.commands.swap(0, 1),
        ];
        for tamper in tampered {
            let mut r = f.report.clone();
            tamper(&mut r);
            assert!(
                matches!(
                    verify_report(&r, &f.keys),
                    Err(VerifyError::CommandsMismatch { .. })
                ),
                "{:?}",
                r.commands
            );
        }
        // A margin root set to match tampered commands breaks the signature.
        let mut r = f.report.clone();
        r.commands[0].body.push(' ');
        r.header.margin_root = crate::digest::commands_root(&r.commands);
        assert!(matches!(
            verify_report(&r, &f.keys),
            Err(VerifyError::BadSignature { .. })
        ));
        // Commands out of order do not decode.
        let mut r = f.report.clone();
        r.commands.swap(0, 1);
        assert!(matches!(
            SignedReport::from_bytes(&r.to_bytes()),
            Err(DecodeError::NonCanonical { .. })
        ));
    }

    #[test]
    fn tampering_is_caught_with_the_right_error() {
        let f = fixture(5);

        let mut r = f.report.clone();
        r.leaves[2].price += 1;
        assert!(matches!(
            verify_report(&r, &f.keys),
            Err(VerifyError::RootMismatch { .. })
        ));

        // Root recomputed, so only the signature can catch it.
        r.header.merkle_root = merkle::root(&r.leaves);
        assert_eq!(
            verify_report(&r, &f.keys),
            Err(VerifyError::BadSignature {
                suite: Suite::Ed25519
            })
        );

        let mut r = f.report.clone();
        r.header.round += 1;
        assert!(matches!(
            verify_report(&r, &f.keys),
            Err(VerifyError::BadSignature { .. })
        ));

        let mut r = f.report.clone();
        r.header.version = 3;
        assert_eq!(
            verify_report(&r, &f.keys),
            Err(VerifyError::WrongVersion {
                got: 3,
                expected: 2
            })
        );

        let mut r = f.report.clone();
        r.header.config_digest.0[0] ^= 1;
        assert!(matches!(
            verify_report(&r, &f.keys),
            Err(VerifyError::WrongConfigDigest { .. })
        ));

        let mut r = f.report.clone();
        r.signatures.remove(&Suite::Secp256k1Evm);
        assert_eq!(
            verify_report(&r, &f.keys),
            Err(VerifyError::MissingSignature {
                suite: Suite::Secp256k1Evm
            })
        );

        let mut r = f.report.clone();
        r.signatures
            .insert(Suite::Ed25519, SignatureBytes(vec![1, 2, 3]));
        assert!(matches!(
            verify_report(&r, &f.keys),
            Err(VerifyError::MalformedSignature {
                suite: Suite::Ed25519,
                ..
            })
        ));

        // Swapping suites' signatures: each is malformed or invalid for the other.
        let mut r = f.report.clone();
        let ed = r.signatures[&Suite::Ed25519].clone();
        r.signatures.insert(Suite::Secp256k1Evm, ed);
        assert!(verify_report(&r, &f.keys).is_err());

        let mut r = f.report.clone();
        r.leaves.swap(0, 1);
        assert!(matches!(
            verify_report(&r, &f.keys),
            Err(VerifyError::LeavesNotSorted { index: 1, .. })
        ));
    }

    #[test]
    fn oversized_report_is_refused_before_hashing() {
        let f = fixture(1);
        let mut r = f.report.clone();
        let leaf = r.leaves[0].clone();
        r.leaves = vec![leaf; MAX_LEAVES + 1];
        assert_eq!(
            verify_report(&r, &f.keys),
            Err(VerifyError::TooManyLeaves {
                count: MAX_LEAVES + 1
            })
        );
    }

    #[test]
    fn signatures_of_unconfigured_suites_are_not_needed() {
        let f = fixture(3);
        let only_ed = GroupKeys {
            secp256k1_evm: None,
            ..f.keys.clone()
        };
        let mut r = f.report.clone();
        // Garbage under a suite the consumer does not use does not matter...
        r.signatures
            .insert(Suite::Secp256k1Evm, SignatureBytes(vec![0; 65]));
        let v = verify_report(&r, &only_ed).unwrap();
        assert_eq!(v.suites, [Suite::Ed25519].into_iter().collect());
        // ...but it does for a consumer that uses it.
        assert!(matches!(
            verify_report(&r, &f.keys),
            Err(VerifyError::MalformedSignature {
                suite: Suite::Secp256k1Evm,
                ..
            })
        ));
    }

    #[test]
    fn one_feed_verifies_with_its_proof() {
        let f = fixture(7);
        let r = &f.report;
        for (i, leaf) in r.leaves.iter().enumerate() {
            let p = merkle::proof(&r.leaves, i).unwrap();
            verify_leaf(&r.header, leaf, &p, &r.signatures, &f.keys).unwrap();
            let mut bad = leaf.clone();
            bad.confidence += 1;
            assert!(matches!(
                verify_leaf(&r.header, &bad, &p, &r.signatures, &f.keys),
                Err(VerifyError::BadProof { .. })
            ));
        }
        // A valid proof under a header whose signature is not the committee's.
        let mut h = r.header.clone();
        h.timestamp_ms += 1;
        let p = merkle::proof(&r.leaves, 0).unwrap();
        assert!(matches!(
            verify_leaf(&h, &r.leaves[0], &p, &r.signatures, &f.keys),
            Err(VerifyError::BadSignature { .. })
        ));
    }

    #[test]
    fn signed_leaf_roundtrips_and_verifies() {
        let f = fixture(6);
        for i in 0..6 {
            let sl = SignedLeaf::from_report(&f.report, i).unwrap();
            let bytes = sl.to_bytes();
            let back = SignedLeaf::decode_expecting(&bytes, &f.keys.config_digest).unwrap();
            assert_eq!(back, sl);
            assert_eq!(
                back.verify(&f.keys).unwrap(),
                header_digest(&f.report.header)
            );
        }
        let sl = SignedLeaf::from_report(&f.report, 0).unwrap();
        assert!(matches!(
            SignedLeaf::decode_expecting(&sl.to_bytes(), &ConfigDigest([0; 32])),
            Err(DecodeError::WrongConfigDigest { .. })
        ));
        assert!(SignedLeaf::from_report(&f.report, 6).is_err());
    }

    #[test]
    fn group_keys_from_bytes() {
        let f = fixture(1);
        let ed = f.keys.ed25519.unwrap().serialize().unwrap();
        let evm = f.keys.secp256k1_evm.unwrap().serialize().unwrap();
        let keys = GroupKeys::new(f.keys.config_digest)
            .with_key_bytes(Suite::Ed25519, &ed)
            .unwrap()
            .with_key_bytes(Suite::Secp256k1Evm, &evm)
            .unwrap();
        assert_eq!(keys, f.keys);
        assert!(matches!(
            GroupKeys::new(f.keys.config_digest).with_key_bytes(Suite::Secp256k1Evm, &ed),
            Err(VerifyError::BadGroupKey { .. })
        ));
    }
}
