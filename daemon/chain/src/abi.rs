//! SibylFeed's ABI (contracts/src/SibylFeed.sol) and the conversion of a
//! signed report into its calls.
//!
//! The bindings are generated from the contract's committed JSON ABI; the
//! anvil tests (scripts/test.d/21-contracts-anvil, 22-chain) submit calldata
//! built here to the real contract.

use alloy_primitives::{B256, I256, U256};
use alloy_sol_types::{SolCall, sol};
use k256::elliptic_curve::sec1::ToEncodedPoint;
use sibyl_aggregator::merkle::{self, MerkleError};
use sibyl_aggregator::{FeedId, ReportHeader, ReportLeaf, SignatureBytes, SignedReport, Suite};

sol!(
    /// SibylFeed's external interface, generated from the ABI that forge
    /// writes (contracts/abi/SibylFeed.json; scripts/test.d/20-contracts
    /// checks it against the sources).
    #[derive(Debug, PartialEq, Eq)]
    ISibylFeed,
    "../../contracts/abi/SibylFeed.json"
);

// The JSON ABI names the structs `SibylFeed.*`, so they land in a `SibylFeed` module.
pub use ISibylFeed::{submitFeedsCall, submitReportCall};
pub use SibylFeed::{Leaf, ReportHeader as AbiHeader, ReportMeta, Signature};

/// The Solidity signature of the pull function, as a protocol calls it.
pub const SUBMIT_FEEDS_SIGNATURE: &str = "submitFeeds((uint8,bytes32,uint64,uint64,bytes32,bytes32),(uint256,uint256,uint256,uint256),(bytes32,int256,uint256,uint16,uint64,int256,int256,uint16,uint8,uint16,int256,uint256,uint64)[],bytes32[][])";
/// The Solidity signature of the push function.
pub const SUBMIT_REPORT_SIGNATURE: &str = "submitReport((uint8,bytes32,uint64,uint64,bytes32),(uint256,uint256,uint256,uint256),(bytes32,int256,uint256,uint16,uint64,int256,int256,uint16,uint8,uint16,int256,uint256,uint64)[])";

/// Why a report cannot be turned into a contract call.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AbiError {
    #[error(
        "report of round {round} carries no secp256k1-evm signature; the committee must sign with suites including \"secp256k1-evm\""
    )]
    NoEvmSignature { round: u64 },
    #[error(
        "the secp256k1-evm signature of round {round} is {len} bytes, expected 65 (compressed R and z)"
    )]
    SignatureLength { round: u64, len: usize },
    #[error("the secp256k1-evm signature of round {round} has an R that is not a curve point")]
    BadCommitment { round: u64 },
    #[error("the secp256k1-evm group key is not a compressed curve point")]
    BadGroupKey,
    #[error("feed {feed} is not in the report of round {round}")]
    FeedNotInReport { feed: FeedId, round: u64 },
    #[error("Merkle proof for the report of round {round}: {source}")]
    Merkle { round: u64, source: MerkleError },
}

/// Affine (x, y) of a SEC1 compressed (or uncompressed) secp256k1 point.
pub fn affine(sec1: &[u8]) -> Option<([u8; 32], [u8; 32])> {
    use k256::elliptic_curve::sec1::FromEncodedPoint;
    let ep = k256::EncodedPoint::from_bytes(sec1).ok()?;
    let point: Option<k256::AffinePoint> = k256::AffinePoint::from_encoded_point(&ep).into();
    let u = point?.to_encoded_point(false);
    let mut x = [0u8; 32];
    let mut y = [0u8; 32];
    x.copy_from_slice(u.x()?);
    y.copy_from_slice(u.y()?);
    Some((x, y))
}

/// The committee's FROST(secp256k1, Keccak-256) group key as the contract
/// knows it: x and y of the point.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EvmGroupKey {
    pub x: [u8; 32],
    pub y: [u8; 32],
}

impl EvmGroupKey {
    /// From the 33-byte compressed key (`VerifyingKey::serialize`).
    pub fn from_compressed(bytes: &[u8]) -> Result<Self, AbiError> {
        let (x, y) = affine(bytes).ok_or(AbiError::BadGroupKey)?;
        Ok(Self { x, y })
    }
}

/// The contract's `Signature` for a report's secp256k1-evm FROST signature
/// (33-byte compressed R followed by the 32-byte scalar z).
pub fn signature(
    report: &SignedReport,
    key: &EvmGroupKey,
) -> Result<(Signature, SignatureBytes), AbiError> {
    let round = report.header.round;
    let sig = report
        .signatures
        .get(&Suite::Secp256k1Evm)
        .ok_or(AbiError::NoEvmSignature { round })?;
    let bytes = &sig.0;
    if bytes.len() != 65 {
        return Err(AbiError::SignatureLength {
            round,
            len: bytes.len(),
        });
    }
    let (rx, ry) = affine(&bytes[..33]).ok_or(AbiError::BadCommitment { round })?;
    let z = B256::from_slice(&bytes[33..]);
    Ok((
        Signature {
            groupKeyX: U256::from_be_bytes(key.x),
            rx: U256::from_be_bytes(rx),
            ry: U256::from_be_bytes(ry),
            z: z.into(),
        },
        sig.clone(),
    ))
}

pub fn leaf(l: &ReportLeaf) -> Leaf {
    Leaf {
        feedId: B256::from(l.feed_id.to_bytes32()),
        // i128 and u128 always fit int256 / uint256
        price: int256(l.price),
        confidence: U256::from(l.confidence),
        numObservations: l.num_observations,
        observedAtMs: l.observed_at_ms,
        bid: int256(l.bid),
        ask: int256(l.ask),
        venues: l.venues,
        status: l.status.as_u8(),
        flags: l.flags,
        ema: int256(l.ema),
        emaConfidence: U256::from(l.ema_confidence),
        volatility: l.volatility,
    }
}

/// An i128 as the contract's int256 (always fits).
fn int256(v: i128) -> I256 {
    I256::from_raw(U256::from_be_bytes(sibyl_aggregator::encoding::word_i128(
        v,
    )))
}

pub fn header(h: &ReportHeader) -> AbiHeader {
    AbiHeader {
        version: h.version,
        configDigest: B256::from(h.config_digest.0),
        round: h.round,
        timestampMs: h.timestamp_ms,
        merkleRoot: B256::from(h.merkle_root),
        marginRoot: B256::from(h.margin_root),
    }
}

pub fn meta(h: &ReportHeader) -> ReportMeta {
    ReportMeta {
        version: h.version,
        configDigest: B256::from(h.config_digest.0),
        round: h.round,
        timestampMs: h.timestamp_ms,
        marginRoot: B256::from(h.margin_root),
    }
}

/// One feed of a report with its Merkle proof, as the pull function takes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProvenLeaf {
    pub index: usize,
    pub leaf: ReportLeaf,
    pub proof: Vec<[u8; 32]>,
}

/// `submitFeeds` for `feeds` of `report` (in the order given), with proofs.
pub fn submit_feeds(
    report: &SignedReport,
    key: &EvmGroupKey,
    feeds: &[FeedId],
) -> Result<(submitFeedsCall, Vec<ProvenLeaf>), AbiError> {
    let round = report.header.round;
    let (sig, _) = signature(report, key)?;
    let tree = merkle::MerkleTree::new(&report.leaves);
    let mut proven = Vec::with_capacity(feeds.len());
    for feed in feeds {
        let index = report
            .leaves
            .iter()
            .position(|l| &l.feed_id == feed)
            .ok_or_else(|| AbiError::FeedNotInReport {
                feed: feed.clone(),
                round,
            })?;
        let proof = tree
            .proof(index)
            .map_err(|source| AbiError::Merkle { round, source })?;
        proven.push(ProvenLeaf {
            index,
            leaf: report.leaves[index].clone(),
            proof: proof.siblings,
        });
    }
    let call = submitFeedsCall {
        header: header(&report.header),
        signature: sig,
        leaves: proven.iter().map(|p| leaf(&p.leaf)).collect(),
        proofs: proven
            .iter()
            .map(|p| p.proof.iter().map(|s| B256::from(*s)).collect())
            .collect(),
    };
    Ok((call, proven))
}

/// `submitReport` for every leaf of `report` (the push path: no proofs).
pub fn submit_report(
    report: &SignedReport,
    key: &EvmGroupKey,
) -> Result<submitReportCall, AbiError> {
    let (sig, _) = signature(report, key)?;
    Ok(submitReportCall {
        meta: meta(&report.header),
        signature: sig,
        leaves: report.leaves.iter().map(leaf).collect(),
    })
}

/// Where the leaves of a pull payload start: version, config digest, round,
/// timestamp, margin root (81 bytes) and the signature's four words (128).
pub const PULL_LEAVES_AT: usize = 209;
/// A packed leaf's bytes after its feed id: price to volatility.
const PULL_LEAF_NUMBERS: usize = 119;

/// The packed pull payload of `SibylFeed.updateFeeds` and the `SibylPull`
/// library for `feeds` of `report` (docs/CONTRACTS.md, "Pull payloads"):
///
/// ```text
///   version u8 | configDigest [32] | round u64 | timestampMs u64
///   | marginRoot [32]
///   | groupKeyX | rx | ry | z                       (32 bytes each)
///   | per feed: idLength u8 | id | price i128 | confidence u128
///               | numObservations u16 | observedAtMs u64 | bid i128 | ask i128
///               | venues u16 | status u8 | flags u16 | ema i128
///               | emaConfidence u128 | volatility u64
///               | depth u8 | depth x sibling [32]
/// ```
///
/// Big-endian, no padding, no Merkle root (the contract derives it from the
/// proofs; the margin root, which it cannot derive, is sent): about half of
/// `submitFeeds`' calldata for one feed.
pub fn pull_payload(
    report: &SignedReport,
    key: &EvmGroupKey,
    proven: &[ProvenLeaf],
) -> Result<Vec<u8>, AbiError> {
    let (sig, _) = signature(report, key)?;
    let h = &report.header;
    Ok(PullPayload {
        version: h.version,
        config_digest: h.config_digest.0,
        round: h.round,
        timestamp_ms: h.timestamp_ms,
        margin_root: h.margin_root,
        signature: sig,
        leaves: proven
            .iter()
            .map(|p| (p.leaf.clone(), p.proof.clone()))
            .collect(),
    }
    .encode())
}

/// A pull payload taken apart (what the contract reads from it): the header
/// fields but the Merkle root, the signature and each leaf with its siblings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PullPayload {
    pub version: u8,
    pub config_digest: [u8; 32],
    pub round: u64,
    pub timestamp_ms: u64,
    pub margin_root: [u8; 32],
    pub signature: Signature,
    pub leaves: Vec<(ReportLeaf, Vec<[u8; 32]>)>,
}

impl PullPayload {
    /// The packed bytes (the layout at [`pull_payload`]).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(PULL_LEAVES_AT + self.leaves.len() * 300);
        out.push(self.version);
        out.extend_from_slice(&self.config_digest);
        out.extend_from_slice(&self.round.to_be_bytes());
        out.extend_from_slice(&self.timestamp_ms.to_be_bytes());
        out.extend_from_slice(&self.margin_root);
        let s = &self.signature;
        for word in [s.groupKeyX, s.rx, s.ry, s.z] {
            out.extend_from_slice(&word.to_be_bytes::<32>());
        }
        for (leaf, proof) in &self.leaves {
            let id = leaf.feed_id.as_str().as_bytes();
            // FeedId holds at most FEED_ID_MAX_LEN (32) bytes and a proof at
            // most 16 siblings (MAX_LEAVES = 2^16): both fit a byte.
            out.push(id.len() as u8);
            out.extend_from_slice(id);
            out.extend_from_slice(&leaf.price.to_be_bytes());
            out.extend_from_slice(&leaf.confidence.to_be_bytes());
            out.extend_from_slice(&leaf.num_observations.to_be_bytes());
            out.extend_from_slice(&leaf.observed_at_ms.to_be_bytes());
            out.extend_from_slice(&leaf.bid.to_be_bytes());
            out.extend_from_slice(&leaf.ask.to_be_bytes());
            out.extend_from_slice(&leaf.venues.to_be_bytes());
            out.push(leaf.status.as_u8());
            out.extend_from_slice(&leaf.flags.to_be_bytes());
            out.extend_from_slice(&leaf.ema.to_be_bytes());
            out.extend_from_slice(&leaf.ema_confidence.to_be_bytes());
            out.extend_from_slice(&leaf.volatility.to_be_bytes());
            out.push(proof.len() as u8);
            for sibling in proof {
                out.extend_from_slice(sibling);
            }
        }
        out
    }
}

/// Fuzz entry point (daemon/fuzz target `pull_payload`): any bytes either
/// fail to decode with a typed error or decode to a payload that encodes back
/// to exactly those bytes (one encoding per payload).
pub fn fuzz_pull_payload(data: &[u8]) {
    if let Ok(p) = decode_pull_payload(data) {
        assert_eq!(p.encode(), data, "a pull payload with two encodings");
    }
}

/// Why bytes are not a pull payload.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PullPayloadError {
    #[error("pull payload: {0} bytes is shorter than its 209-byte header and signature")]
    Short(usize),
    #[error("pull payload: no leaves after the header")]
    NoLeaves,
    #[error("pull payload: the leaf at byte {at} runs past the end ({len} bytes)")]
    Truncated { at: usize, len: usize },
    #[error("pull payload: the leaf at byte {at} has an invalid feed id: {why}")]
    FeedId { at: usize, why: String },
    #[error("pull payload: the leaf at byte {at} has status {status}, which is not defined")]
    Status { at: usize, status: u8 },
}

/// Decodes a pull payload, refusing what the contract refuses (and a feed
/// id or status the protocol does not define).
pub fn decode_pull_payload(bytes: &[u8]) -> Result<PullPayload, PullPayloadError> {
    fn take<const N: usize>(b: &[u8], at: usize) -> [u8; N] {
        b[at..at + N].try_into().expect("length checked")
    }
    let len = bytes.len();
    if len < PULL_LEAVES_AT {
        return Err(PullPayloadError::Short(len));
    }
    if len == PULL_LEAVES_AT {
        return Err(PullPayloadError::NoLeaves);
    }
    let word = |at: usize| U256::from_be_bytes::<32>(take(bytes, at));
    let mut out = PullPayload {
        version: bytes[0],
        config_digest: take(bytes, 1),
        round: u64::from_be_bytes(take(bytes, 33)),
        timestamp_ms: u64::from_be_bytes(take(bytes, 41)),
        margin_root: take(bytes, 49),
        signature: Signature {
            groupKeyX: word(81),
            rx: word(113),
            ry: word(145),
            z: word(177),
        },
        leaves: Vec::new(),
    };
    let mut at = PULL_LEAVES_AT;
    while at < len {
        let id_len = bytes[at] as usize;
        let q = at + 1 + id_len;
        if q + PULL_LEAF_NUMBERS + 1 > len {
            return Err(PullPayloadError::Truncated { at, len });
        }
        let depth = bytes[q + PULL_LEAF_NUMBERS] as usize;
        let next = q + PULL_LEAF_NUMBERS + 1 + 32 * depth;
        if next > len {
            return Err(PullPayloadError::Truncated { at, len });
        }
        let id = std::str::from_utf8(&bytes[at + 1..q])
            .map_err(|e| e.to_string())
            .and_then(|s| FeedId::new(s).map_err(|e| e.to_string()))
            .map_err(|why| PullPayloadError::FeedId { at, why })?;
        let status = bytes[q + 76];
        let leaf = ReportLeaf {
            feed_id: id,
            price: i128::from_be_bytes(take(bytes, q)),
            confidence: u128::from_be_bytes(take(bytes, q + 16)),
            num_observations: u16::from_be_bytes(take(bytes, q + 32)),
            observed_at_ms: u64::from_be_bytes(take(bytes, q + 34)),
            bid: i128::from_be_bytes(take(bytes, q + 42)),
            ask: i128::from_be_bytes(take(bytes, q + 58)),
            venues: u16::from_be_bytes(take(bytes, q + 74)),
            status: sibyl_aggregator::LeafStatus::from_u8(status)
                .ok_or(PullPayloadError::Status { at, status })?,
            flags: u16::from_be_bytes(take(bytes, q + 77)),
            ema: i128::from_be_bytes(take(bytes, q + 79)),
            ema_confidence: u128::from_be_bytes(take(bytes, q + 95)),
            volatility: u64::from_be_bytes(take(bytes, q + 111)),
        };
        let siblings = (0..depth)
            .map(|i| take(bytes, q + PULL_LEAF_NUMBERS + 1 + 32 * i))
            .collect();
        out.leaves.push((leaf, siblings));
        at = next;
    }
    Ok(out)
}

/// ABI-encoded calldata (selector and arguments) of a call.
pub fn calldata<C: SolCall>(call: &C) -> Vec<u8> {
    call.abi_encode()
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloy_sol_types::SolCall;

    #[test]
    fn selectors_match_the_solidity_signatures() {
        assert_eq!(submitFeedsCall::SIGNATURE, SUBMIT_FEEDS_SIGNATURE);
        assert_eq!(submitReportCall::SIGNATURE, SUBMIT_REPORT_SIGNATURE);
    }

    #[test]
    fn leaf_encoding_matches_the_protocol_encoding() {
        use alloy_sol_types::SolValue;
        let l = ReportLeaf {
            bid: -9_712_345_679_000,
            ask: -9_712_345_678_000,
            venues: 6,
            status: sibyl_aggregator::LeafStatus::Stale,
            flags: sibyl_aggregator::report::flags::STALE | 1,
            ema: -9_700_000_000_000,
            ema_confidence: u128::MAX,
            volatility: 612_000_000,
            ..ReportLeaf::basic(
                FeedId::new("BTC-USD").expect("id"),
                -9_712_345_678_901,
                12_345,
                7,
                1_700_000_000_123,
            )
        };
        assert_eq!(
            leaf(&l).abi_encode(),
            sibyl_aggregator::encoding::encode_leaf(&l).to_vec()
        );
    }

    #[test]
    fn header_encoding_matches_the_protocol_encoding() {
        use alloy_sol_types::SolValue;
        let h = ReportHeader {
            version: sibyl_aggregator::PROTOCOL_VERSION,
            config_digest: sibyl_aggregator::ConfigDigest([0x11; 32]),
            round: 42,
            timestamp_ms: 1_700_000_000_123,
            merkle_root: [0x22; 32],
            margin_root: [0x33; 32],
        };
        assert_eq!(
            header(&h).abi_encode(),
            sibyl_aggregator::encoding::encode_header(&h).to_vec()
        );
        // The push path's meta is the header without its Merkle root.
        let m = meta(&h);
        assert_eq!(m.marginRoot.0, h.margin_root);
        let mut words = sibyl_aggregator::encoding::encode_header(&h).to_vec();
        words.drain(128..160);
        assert_eq!(m.abi_encode(), words);
    }

    #[test]
    fn pull_payload_round_trips_and_refuses_what_the_contract_refuses() {
        use rand_chacha::rand_core::SeedableRng;
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(16);
        let fx = sibyl_aggregator::testkit::fixture(7, &mut rng);
        let key = EvmGroupKey::from_compressed(
            &fx.keys
                .secp256k1_evm
                .expect("evm key")
                .serialize()
                .expect("serialize"),
        )
        .expect("key");
        // A round that ordered margin commands (the payload carries the root, signed or not).
        let mut report = fx.report.clone();
        report.header.margin_root = [0x5a; 32];
        let ids: Vec<FeedId> = [0, 3, 6]
            .iter()
            .map(|&i| report.leaves[i].feed_id.clone())
            .collect();
        let (call, proven) = submit_feeds(&report, &key, &ids).expect("proofs");
        let bytes = pull_payload(&report, &key, &proven).expect("payload");
        assert_eq!(
            &bytes[49..81],
            &[0x5a; 32],
            "margin root after the timestamp"
        );
        // Layout: header and signature, then per leaf 1 + id + 119 + 1 + 32 x depth.
        let expected_len: usize = PULL_LEAVES_AT
            + proven
                .iter()
                .map(|p| 1 + p.leaf.feed_id.as_str().len() + 120 + 32 * p.proof.len())
                .sum::<usize>();
        assert_eq!(bytes.len(), expected_len);
        // the 7-leaf tree promotes its last leaf: proofs of unequal depth
        assert_ne!(proven[0].proof.len(), proven[2].proof.len());
        let back = decode_pull_payload(&bytes).expect("decodes");
        let h = &report.header;
        assert_eq!(
            (
                back.version,
                back.config_digest,
                back.round,
                back.timestamp_ms,
                back.margin_root
            ),
            (
                h.version,
                h.config_digest.0,
                h.round,
                h.timestamp_ms,
                h.margin_root
            )
        );
        assert_eq!(back.signature, call.signature);
        for ((leaf, siblings), p) in back.leaves.iter().zip(&proven) {
            assert_eq!(leaf, &p.leaf);
            assert_eq!(siblings, &p.proof);
            let proof = merkle::MerkleProof {
                leaf_index: u32::try_from(p.index).expect("small"),
                leaf_count: 7,
                siblings: siblings.clone(),
            };
            assert!(merkle::verify_proof(
                &merkle::leaf_hash(leaf),
                &proof,
                &h.merkle_root
            ));
        }
        assert_eq!(back.leaves.len(), 3);
        // Every cut is refused except between leaves (a valid payload of the leaves before).
        let mut boundaries = vec![PULL_LEAVES_AT];
        for p in &proven {
            let last = *boundaries.last().expect("one");
            boundaries.push(last + 1 + p.leaf.feed_id.as_str().len() + 120 + 32 * p.proof.len());
        }
        for cut in 0..bytes.len() {
            let got = decode_pull_payload(&bytes[..cut]);
            match boundaries.iter().position(|&b| b == cut) {
                Some(0) => assert_eq!(got, Err(PullPayloadError::NoLeaves)),
                Some(k) => assert_eq!(got.expect("a cut between leaves").leaves.len(), k),
                None => assert!(got.is_err(), "a cut at byte {cut} decoded"),
            }
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(matches!(
            decode_pull_payload(&longer),
            Err(PullPayloadError::Truncated { .. })
        ));
        let mut long_id = bytes.clone();
        long_id[PULL_LEAVES_AT] = 33;
        assert!(decode_pull_payload(&long_id).is_err());
        // The fuzz oracle (one encoding per payload) holds on the payload, its
        // cuts and every single-bit flip; the seed of daemon/fuzz's
        // `pull_payload` target is this payload (SIBYL_FUZZ_SEEDS=DIR writes it).
        fuzz_pull_payload(&bytes);
        for cut in 0..bytes.len() {
            fuzz_pull_payload(&bytes[..cut]);
        }
        for i in 0..bytes.len() * 8 {
            let mut flipped = bytes.clone();
            flipped[i / 8] ^= 1 << (i % 8);
            fuzz_pull_payload(&flipped);
        }
        if let Ok(dir) = std::env::var("SIBYL_FUZZ_SEEDS") {
            let dir = std::path::Path::new(&dir).join("pull_payload");
            std::fs::create_dir_all(&dir).expect("seed dir");
            std::fs::write(dir.join("seed-00"), &bytes).expect("seed");
        }
    }
}
