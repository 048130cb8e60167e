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
pub const SUBMIT_FEEDS_SIGNATURE: &str = "submitFeeds((uint8,bytes32,uint64,uint64,bytes32),(uint256,uint256,uint256,uint256),(bytes32,int256,uint256,uint16,uint64,int256,int256,uint16,uint8,uint16,int256,uint256,uint64)[],bytes32[][])";
/// The Solidity signature of the push function.
pub const SUBMIT_REPORT_SIGNATURE: &str = "submitReport((uint8,bytes32,uint64,uint64),(uint256,uint256,uint256,uint256),(bytes32,int256,uint256,uint16,uint64,int256,int256,uint16,uint8,uint16,int256,uint256,uint64)[])";

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
    }
}

pub fn meta(h: &ReportHeader) -> ReportMeta {
    ReportMeta {
        version: h.version,
        configDigest: B256::from(h.config_digest.0),
        round: h.round,
        timestampMs: h.timestamp_ms,
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
}
