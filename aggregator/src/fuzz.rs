//! Fuzz entry points, one per decoder of the crate (report formats, the
//! round protocol's signed messages, evidence and FROST commitments).
//!
//! Each takes arbitrary bytes and must never panic on its own account: a
//! decoder either rejects the input with a typed error or accepts it, and
//! then re-encoding must give back exactly the input (one encoding per
//! value). The `assert!`s here are the fuzz oracle. They are called by the
//! cargo-fuzz targets in `aggregator/fuzz/` (and the daemon's in
//! `daemon/fuzz/`) and by the property tests below; [`seeds`] gives each
//! target a few valid inputs to start from.

use crate::codec::{Decode, Encode};
use crate::encoding;
use crate::evidence::Evidence;
use crate::merkle::{self, MerkleProof};
use crate::report::{ConfigDigest, FeedId, ReportHeader, ReportLeaf, SignedReport, Suite};
use crate::round::SibylSuite;
use crate::round::committee::{Committee, FeedConfig, Member, Timeouts};
use crate::round::message::{
    ObservationEntry, ObservationMsg, Payload, ProposalMsg, ShareMsg, SignedMessage,
    SuiteCommitments, SuitePackage, SuiteShare,
};
use crate::testkit;
use crate::verify::{SignedLeaf, verify_report};
use ed25519_dalek::SigningKey;
use frost_core::round1::SigningCommitments;
use frost_ed25519::Ed25519Sha512;
use frost_secp256k1_evm::Secp256K1Keccak256;
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use std::collections::BTreeSet;
use std::sync::OnceLock;

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

/// The repair and signing-session envelopes (`dkg::repair`, `dkg::sign`):
/// whatever decodes re-encodes to the same bytes.
pub fn fuzz_ceremony_message(data: &[u8]) {
    if let Ok(env) = crate::dkg::repair::RepairEnvelope::decode(data) {
        let again = env.encode();
        assert_eq!(
            crate::dkg::repair::RepairEnvelope::decode(&again)
                .ok()
                .as_ref(),
            Some(&env),
            "a decoded repair message re-encodes to itself"
        );
    }
    if let Ok(env) = crate::dkg::sign::SignEnvelope::decode(data) {
        assert_eq!(env.encode(), data, "a decoded signing message is its bytes");
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

/// The message the fast signature check is compared with frost's on.
const FUZZ_SIGNED_MESSAGE: &[u8] = b"sibyl fuzz";

/// What the evidence, commitment and report targets check against: a 3-of-4
/// committee (identity keys and both suites' FROST keys), the report it
/// signed, every round message it signed and valid evidence of each kind.
/// Deterministic; built once per process.
pub struct FuzzFixture {
    pub committee: Committee,
    /// The signed report and the FROST keys (`testkit::fixture`).
    pub report: testkit::Fixture,
    /// Signed round messages of each kind (seeds for `round_message`).
    pub messages: Vec<Vec<u8>>,
    /// Evidence of each kind; `verify` names member 2 or the leader of round 5,
    /// except the last (a valid share, so no misbehaviour).
    pub evidence: Vec<Evidence>,
    /// Every message the fixture signed: the fuzzer cannot sign, so only
    /// these can ever prove misbehaviour.
    signed: BTreeSet<Vec<u8>>,
}

fn keccak(bytes: &[u8]) -> [u8; 32] {
    use sha3::{Digest, Keccak256};
    Keccak256::digest(bytes).into()
}

/// The fixture shared by the entry points.
pub fn fixture() -> &'static FuzzFixture {
    static F: OnceLock<FuzzFixture> = OnceLock::new();
    F.get_or_init(build_fixture)
}

fn build_fixture() -> FuzzFixture {
    let mut rng = ChaCha20Rng::seed_from_u64(0x5eed);
    let report = testkit::fixture(9, &mut rng);
    let identities: Vec<SigningKey> = (1..=4u8)
        .map(|i| SigningKey::from_bytes(&[i; 32]))
        .collect();
    let members = identities
        .iter()
        .zip(1u16..)
        .map(|(k, index)| Member {
            index,
            identity: k.verifying_key().to_bytes(),
        })
        .collect();
    let feed = FeedId::new("BTC-USD").expect("valid feed id");
    let committee = Committee::new(
        members,
        3,
        1,
        0,
        // The report's feeds and the observations' one: messages carry at
        // most the committee's feed count.
        report
            .report
            .leaves
            .iter()
            .map(|l| l.feed_id.clone())
            .chain([feed.clone()])
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .map(|id| FeedConfig {
                id,
                decimals: 8,
                deviation_bps: 50,
                heartbeat_ms: 60_000,
                policy: Default::default(),
            })
            .collect(),
        FUZZ_DIGEST,
        Timeouts::default(),
    )
    .expect("valid 3-of-4 committee");
    let sign = |sender: u16, round: u64, payload: Payload| {
        SignedMessage::sign(
            &identities[usize::from(sender) - 1],
            &FUZZ_DIGEST,
            round,
            sender,
            payload,
        )
        .bytes
    };

    // A signing run of members 1..=3 over the report's digest (ed25519).
    let keys = &report.ed25519;
    let digest = crate::digest::header_digest(&report.report.header);
    let signers = testkit::first_signers(keys, 3);
    let run = testkit::signing_run(keys, &signers, &digest, &mut rng).expect("honest signing run");
    let package = run.package.serialize().expect("package serializes");
    let ids: Vec<_> = signers.iter().copied().collect();
    let commitment = run
        .package
        .signing_commitment(&ids[1])
        .and_then(|c| c.serialize().ok())
        .expect("member 2 committed");
    let share_bytes = |i: usize| run.shares[&ids[i]].serialize();

    let observation = |price: i128| {
        Payload::Observation(ObservationMsg {
            entries: vec![ObservationEntry::from(
                &crate::round::LocalObservation::basic(feed.clone(), price, 10, 1_760_000_000_000),
            )],
            commitments: vec![SuiteCommitments {
                suite: Suite::Ed25519,
                commitments: vec![commitment.clone()],
            }],
            commands: Vec::new(),
            margin_roots: Vec::new(),
            relayed: Vec::new(),
        })
    };
    let obs_a = sign(2, 5, observation(100));
    let obs_b = sign(2, 5, observation(101));
    let leader = committee.leader(5);
    let proposal = |root: u8| {
        Payload::Proposal(ProposalMsg {
            attempt: 0,
            timestamp_ms: 1_760_000_005_000,
            merkle_root: [root; 32],
            leaves: report.report.leaves[..2].to_vec(),
            observations: vec![obs_a.clone()],
            signing_packages: vec![SuitePackage {
                suite: Suite::Ed25519,
                package: package.clone(),
            }],
            signer_observations: Vec::new(),
            key_set: 7,
            commands: Vec::new(),
            margin_state: None,
        })
    };
    let prop_a = sign(leader, 5, proposal(1));
    let prop_b = sign(leader, 5, proposal(2));
    let share = |from: usize| {
        Payload::Share(ShareMsg {
            attempt: 0,
            report_digest: digest,
            shares: vec![SuiteShare {
                suite: Suite::Ed25519,
                package_hash: keccak(&package),
                share: share_bytes(from),
            }],
        })
    };
    // Member 2 sending member 1's share: invalid for member 2.
    let bad_share = sign(2, 5, share(0));
    let good_share = sign(2, 5, share(1));
    let report_msg = sign(
        committee.leader(report.report.header.round),
        report.report.header.round,
        Payload::Report(report.report.clone()),
    );
    let public_key_package = keys
        .public_key_package
        .serialize()
        .expect("public key package serializes");
    let invalid_share = |share: &[u8]| Evidence::InvalidShare {
        suite: Suite::Ed25519,
        share: share.to_vec(),
        signing_package: package.clone(),
        public_key_package: public_key_package.clone(),
    };
    let evidence = vec![
        Evidence::ConflictingObservations {
            first: obs_a.clone(),
            second: obs_b.clone(),
        },
        Evidence::EquivocatingProposals {
            first: prop_a.clone(),
            second: prop_b.clone(),
        },
        invalid_share(&bad_share),
        invalid_share(&good_share),
    ];
    let messages = vec![
        obs_a, obs_b, prop_a, prop_b, bad_share, good_share, report_msg,
    ];
    FuzzFixture {
        committee,
        report,
        signed: messages.iter().cloned().collect(),
        messages,
        evidence,
    }
}

/// Evidence in the `evidence` target's binary form: a mode byte (kind in
/// `mode % 3`; for an invalid share, bit 7 picks secp256k1) and up to three
/// parts, each a big-endian u16 length and its bytes.
pub fn evidence_to_parts(evidence: &Evidence) -> Vec<u8> {
    let (mode, parts): (u8, Vec<&[u8]>) = match evidence {
        Evidence::ConflictingObservations { first, second } => (0, vec![first, second]),
        Evidence::EquivocatingProposals { first, second } => (1, vec![first, second]),
        Evidence::InvalidShare {
            suite,
            share,
            signing_package,
            public_key_package,
        } => (
            if *suite == Suite::Ed25519 { 2 } else { 0x82 },
            vec![share, signing_package, public_key_package],
        ),
    };
    let mut out = vec![mode];
    for p in parts {
        let len = u16::try_from(p.len()).unwrap_or(u16::MAX);
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(&p[..usize::from(len)]);
    }
    out
}

fn evidence_from_parts(mode: u8, mut rest: &[u8]) -> Evidence {
    let mut part = || {
        let len = rest
            .get(..2)
            .map_or(0, |l| usize::from(u16::from_be_bytes([l[0], l[1]])));
        let body = rest.get(2..).unwrap_or_default();
        let (p, tail) = body.split_at(len.min(body.len()));
        rest = tail;
        p.to_vec()
    };
    match mode % 3 {
        0 => Evidence::ConflictingObservations {
            first: part(),
            second: part(),
        },
        1 => Evidence::EquivocatingProposals {
            first: part(),
            second: part(),
        },
        _ => Evidence::InvalidShare {
            suite: if mode & 0x80 == 0 {
                Suite::Ed25519
            } else {
                Suite::Secp256k1Evm
            },
            share: part(),
            signing_package: part(),
            public_key_package: part(),
        },
    }
}

/// [`Evidence`] as a third party checks it: from JSON (input starting with
/// `{`) or from the binary form of [`evidence_to_parts`], then
/// `Evidence::verify` under both suites. JSON must round-trip; evidence
/// that verifies must name a member and consist of messages the committee
/// really signed.
pub fn fuzz_evidence(data: &[u8]) {
    let fx = fixture();
    let evidence = match data.split_first() {
        None => return,
        Some((b'{', _)) => match serde_json::from_slice::<Evidence>(data) {
            Ok(e) => e,
            Err(_) => return,
        },
        Some((&mode, rest)) => evidence_from_parts(mode, rest),
    };
    let json = serde_json::to_vec(&evidence).expect("evidence serializes");
    assert_eq!(
        serde_json::from_slice::<Evidence>(&json).ok().as_ref(),
        Some(&evidence),
        "evidence JSON does not round-trip"
    );
    let results = [
        evidence.verify::<Ed25519Sha512>(&fx.committee, &fx.report.ed25519.public_key_package),
        evidence.verify::<Secp256K1Keccak256>(
            &fx.committee,
            &fx.report.secp256k1_evm.public_key_package,
        ),
    ];
    for culprit in results.into_iter().flatten() {
        assert!(
            fx.committee.is_member(culprit),
            "culprit {culprit} is no member"
        );
        let proof: Vec<&Vec<u8>> = match &evidence {
            Evidence::ConflictingObservations { first, second }
            | Evidence::EquivocatingProposals { first, second } => vec![first, second],
            Evidence::InvalidShare { share, .. } => vec![share],
        };
        assert!(
            proof.iter().all(|m| fx.signed.contains(*m)),
            "evidence verified with a message the committee never signed"
        );
    }
}

/// FROST commitments as a commitments hint carries them: the fast Ed25519
/// parse must answer exactly as frost's `SigningCommitments::deserialize`
/// (except that it refuses trailing bytes) and accept only the canonical
/// encoding; the secp256k1 parse must not panic. A 64-byte input is also
/// checked as a signature: the fast verification must agree with frost's.
pub fn fuzz_commitments(data: &[u8]) {
    let fast = <Ed25519Sha512 as SibylSuite>::parse_commitments(data);
    let frost = SigningCommitments::<Ed25519Sha512>::deserialize(data).ok();
    match (&fast, &frost) {
        (Some(a), Some(b)) => assert_eq!(a, b, "the fast parse disagrees with frost"),
        (Some(_), None) => panic!("the fast parse accepted commitments frost refuses"),
        (None, Some(b)) => assert_ne!(
            b.serialize().ok().as_deref(),
            Some(data),
            "the fast parse refused canonical commitments frost accepts"
        ),
        (None, None) => {}
    }
    if let Some(c) = fast {
        assert_eq!(
            c.serialize().ok().as_deref(),
            Some(data),
            "non-canonical commitments accepted"
        );
    }
    let _ = <Secp256K1Keccak256 as SibylSuite>::parse_commitments(data);
    if data.len() == 64 {
        let key = fixture().report.ed25519.public_key_package.verifying_key();
        let fast =
            <Ed25519Sha512 as SibylSuite>::verify_signature_bytes(key, FUZZ_SIGNED_MESSAGE, data);
        let frost = frost_core::Signature::<Ed25519Sha512>::deserialize(data)
            .is_ok_and(|s| key.verify(FUZZ_SIGNED_MESSAGE, &s).is_ok());
        assert_eq!(fast, frost, "the fast signature check disagrees with frost");
    }
}

/// A signed report as a member takes it from gossip or a catch-up reply:
/// decoded for the committee's config digest, then verified against the
/// fixture's group keys. Whatever verifies is the report the committee signed.
pub fn fuzz_verified_report(data: &[u8]) {
    let Ok(report) = SignedReport::decode_expecting(data, &FUZZ_DIGEST) else {
        return;
    };
    let fx = &fixture().report;
    if let Ok(v) = verify_report(&report, &fx.keys) {
        assert_eq!(
            v.report.header, fx.report.header,
            "a forged header verified"
        );
        assert_eq!(v.report.leaves, fx.report.leaves, "forged leaves verified");
    }
}

/// A few valid inputs per target of `aggregator/fuzz` (target name, input).
pub fn seeds() -> Vec<(&'static str, Vec<u8>)> {
    let fx = fixture();
    let r = &fx.report.report;
    let mut out = vec![
        ("signed_report", r.to_bytes()),
        (
            "signed_leaf",
            SignedLeaf::from_report(r, 2)
                .expect("leaf 2 exists")
                .to_bytes(),
        ),
        (
            "merkle_proof",
            merkle::proof(&r.leaves, 3)
                .expect("leaf 3 exists")
                .to_bytes(),
        ),
        ("header_and_leaf", r.header.to_bytes()),
        ("header_and_leaf", r.leaves[0].to_bytes()),
        ("abi", encoding::encode_header(&r.header).to_vec()),
        ("abi", encoding::encode_leaf(&r.leaves[0]).to_vec()),
    ];
    out.extend(fx.messages.iter().map(|m| ("round_message", m.clone())));
    for e in &fx.evidence {
        out.push(("evidence", evidence_to_parts(e)));
        out.push((
            "evidence",
            serde_json::to_vec(e).expect("evidence serializes"),
        ));
    }
    out
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
                bid: price.saturating_sub(1),
                ask: price.saturating_add(1),
                venues: n % 17,
                status: crate::report::LeafStatus::from_u8((n % 5) as u8).unwrap_or_default(),
                flags: n & crate::report::flags::ALL,
                volatility: t / 3,
                ..ReportLeaf::basic(
                    FeedId::new(id).expect("strategy yields valid ids"),
                    price,
                    confidence,
                    n,
                    t,
                )
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
                        margin_root: [0; 32],
                    },
                    leaves,
                    signatures,
                    commands: Vec::new(),
                    margin_state: None,
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
        v[0] = 3;
        assert_eq!(
            SignedReport::from_bytes(&v).unwrap_err(),
            DecodeError::WrongVersion {
                got: 3,
                expected: 2
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
        big[113..117].copy_from_slice(&(merkle::MAX_LEAVES as u32 + 1).to_be_bytes());
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
        let tag_at = 113 + 4 + f.report.leaves.len() * crate::codec::LEAF_WIRE_LEN + 4;
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
            fuzz_evidence(&data);
            fuzz_commitments(&data);
            fuzz_verified_report(&data);
            fuzz_ceremony_message(&data);
            let mut repair = b"SRPR\x01".to_vec();
            repair.extend_from_slice(&data);
            fuzz_ceremony_message(&repair);
            let mut sign = b"SSIG\x01".to_vec();
            sign.extend_from_slice(&data);
            fuzz_ceremony_message(&sign);
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

    /// Every seed is accepted by its decoder and passes its target's oracle,
    /// and the fixture's evidence names the right culprits. With
    /// `SIBYL_FUZZ_SEEDS=DIR` set, the seeds are also written to
    /// `DIR/<target>/` (how `aggregator/fuzz/seeds` was made).
    #[test]
    fn seeds_pass_their_targets() {
        use crate::evidence::EvidenceError;
        let fx = fixture();
        let culprits: Vec<_> = fx
            .evidence
            .iter()
            .map(|e| {
                e.verify::<Ed25519Sha512>(&fx.committee, &fx.report.ed25519.public_key_package)
            })
            .collect();
        assert_eq!(
            culprits,
            vec![
                Ok(2),
                Ok(fx.committee.leader(5)),
                Ok(2),
                Err(EvidenceError::ShareValid)
            ]
        );
        let seeds = seeds();
        for (target, input) in &seeds {
            let input = input.as_slice();
            match *target {
                "signed_report" => {
                    assert!(SignedReport::from_bytes(input).is_ok());
                    fuzz_signed_report(input);
                    fuzz_verified_report(input);
                }
                "signed_leaf" => {
                    assert!(SignedLeaf::from_bytes(input).is_ok());
                    fuzz_signed_leaf(input);
                }
                "merkle_proof" => {
                    assert!(MerkleProof::from_bytes(input).is_ok());
                    fuzz_merkle_proof(input);
                }
                "header_and_leaf" => {
                    assert!(
                        ReportHeader::from_bytes(input).is_ok()
                            || ReportLeaf::from_bytes(input).is_ok()
                    );
                    fuzz_header_and_leaf(input);
                }
                "abi" => {
                    assert!(
                        encoding::decode_header(input).is_ok()
                            || encoding::decode_leaf(input).is_ok()
                    );
                    fuzz_abi(input);
                }
                "round_message" => {
                    assert!(SignedMessage::decode(input, &fx.committee).is_ok());
                    fuzz_round_message(input);
                }
                "evidence" => fuzz_evidence(input),
                other => panic!("seed for unknown target {other}"),
            }
        }
        assert_eq!(
            seeds.iter().filter(|(t, _)| *t == "evidence").count(),
            2 * fx.evidence.len()
        );
        if let Ok(dir) = std::env::var("SIBYL_FUZZ_SEEDS") {
            for (i, (target, input)) in seeds.iter().enumerate() {
                let dir = std::path::Path::new(&dir).join(target);
                std::fs::create_dir_all(&dir).unwrap();
                std::fs::write(dir.join(format!("seed-{i:02}")), input).unwrap();
            }
        }
    }

    /// Real commitments parse alike in the fast path and in frost; cut,
    /// extended or tampered ones are refused by both, or by the fast path
    /// only where frost ignores trailing bytes.
    #[test]
    fn commitments_oracle_on_real_and_tampered_commitments() {
        let fx = fixture();
        let (msg, _) =
            crate::round::message::decode_unverified(&fx.messages[0], &FUZZ_DIGEST).unwrap();
        let Payload::Observation(o) = msg.payload else {
            panic!("the first fixture message is an observation");
        };
        let c = &o.commitments[0].commitments[0];
        assert!(<Ed25519Sha512 as SibylSuite>::parse_commitments(c).is_some());
        fuzz_commitments(c);
        let mut long = c.clone();
        long.push(0);
        assert!(<Ed25519Sha512 as SibylSuite>::parse_commitments(&long).is_none());
        fuzz_commitments(&long);
        fuzz_commitments(&c[..c.len() - 1]);
        for i in 0..c.len() {
            let mut t = c.clone();
            t[i] ^= 0x40;
            fuzz_commitments(&t);
        }
        // A real signature (the report's) as 64 bytes: the fast check and
        // frost's agree, whichever way.
        let sig = &fx.report.report.signatures[&Suite::Ed25519].0;
        fuzz_commitments(sig);
    }
}
