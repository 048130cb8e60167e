//! The report: what the committee signs. A header (version, config digest,
//! round, timestamp, Merkle root) over per-feed leaves.
//!
//! Shared vocabulary of the crate. The canonical encoding, the Merkle tree and
//! the signed digest live in `encoding`, `merkle` and `digest`.

#![warn(missing_docs)]

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Version byte carried in every header and message.
pub const PROTOCOL_VERSION: u8 = 1;

/// Maximum length of a feed id in bytes; it is encoded as a right-padded `bytes32`.
pub const FEED_ID_MAX_LEN: usize = 32;

/// A feed's canonical id, e.g. `BTC-USD`: 1..=32 bytes of `[A-Z0-9-_.]`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct FeedId(String);

/// Hash of the committee file; binds every message and report to one committee
/// configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ConfigDigest(#[serde(with = "hex::serde")] pub [u8; 32]);

/// Round number. Round `r` has leader `members[(r + seed) mod n]`.
pub type Round = u64;

/// Milliseconds since the Unix epoch. Time always comes in as an argument.
pub type TimestampMs = u64;

/// A price as a fixed-point integer: `value / 10^decimals`. The decimals are a
/// property of the feed, fixed in the committee file.
pub type Price = i128;

/// One feed's entry in a report: a Merkle leaf.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReportLeaf {
    /// The feed this leaf reports; hashed as its right-zero-padded `bytes32`.
    pub feed_id: FeedId,
    /// Aggregate (median of attributed observations), fixed point with the feed's decimals.
    pub price: Price,
    /// Confidence half-width in the same fixed point as `price`: max(MAD of
    /// the members' prices, median member spread); docs/PROTOCOL.md, "Spread
    /// and confidence".
    pub confidence: u128,
    /// Number of attributed observations the aggregate was computed from.
    pub num_observations: u16,
    /// Median of the attributed observations' own timestamps, ms since the Unix epoch.
    pub observed_at_ms: TimestampMs,
}

/// The signed part of a report. Its digest is what FROST signs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReportHeader {
    /// Protocol version, [`PROTOCOL_VERSION`]; a consumer rejects any other
    /// ([`VerifyError::WrongVersion`](crate::verify::VerifyError::WrongVersion)).
    pub version: u8,
    /// The committee configuration that produced the report; a consumer accepts
    /// only its own ([`VerifyError::WrongConfigDigest`](crate::verify::VerifyError::WrongConfigDigest)).
    pub config_digest: ConfigDigest,
    /// The round that produced the report.
    pub round: Round,
    /// The leader's clock when it proposed the report, ms since the Unix epoch;
    /// members refuse a proposal further than the allowed clock skew from theirs.
    pub timestamp_ms: TimestampMs,
    /// Root of the Merkle tree over the leaves, in feed-id order.
    #[serde(with = "hex::serde")]
    pub merkle_root: [u8; 32],
}

/// The FROST ciphersuites a committee can sign with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Suite {
    /// FROST(Ed25519, SHA-512): the default.
    Ed25519,
    /// FROST(secp256k1, Keccak-256): verifies on EVM chains with one `ecrecover`.
    Secp256k1Evm,
}

/// A report with its leaves and the committee's threshold signature(s).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedReport {
    /// The header; the signatures cover its [`crate::digest::header_digest`].
    pub header: ReportHeader,
    /// Leaves in ascending feed-id order (the Merkle tree's leaf order).
    pub leaves: Vec<ReportLeaf>,
    /// One FROST signature over the header digest per suite the committee signs with,
    /// in the suite's own serialization.
    pub signatures: BTreeMap<Suite, SignatureBytes>,
}

/// A serialized FROST signature.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignatureBytes(#[serde(with = "hex::serde")] pub Vec<u8>);

/// Why a string or `bytes32` is not a valid [`FeedId`].
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FeedIdError {
    /// The id has no bytes (or the `bytes32` is all zero).
    #[error("feed id is empty")]
    Empty,
    /// The id is longer than [`FEED_ID_MAX_LEN`] bytes; carries the id.
    #[error("feed id {0:?} is longer than {FEED_ID_MAX_LEN} bytes")]
    TooLong(String),
    /// The id has a byte outside `[A-Z0-9-_.]`, or a `bytes32` is not a right-zero-padded
    /// ASCII id (a non-zero byte after the padding); carries the id, lossily decoded.
    #[error("feed id {0:?} has a character outside [A-Z0-9-_.]; write it like `BTC-USD`")]
    BadChar(String),
}

impl FeedId {
    /// Checks and wraps an id: 1..=32 bytes of `[A-Z0-9-_.]`, else a [`FeedIdError`].
    ///
    /// ```
    /// use sibyl_aggregator::{FeedId, FeedIdError};
    ///
    /// let id = FeedId::new("BTC-USD")?;
    /// assert_eq!(id.to_bytes32()[..7], *b"BTC-USD");
    /// assert_eq!(FeedId::new(""), Err(FeedIdError::Empty));
    /// assert!(matches!(FeedId::new("btc-usd"), Err(FeedIdError::BadChar(_))));
    /// # Ok::<(), FeedIdError>(())
    /// ```
    pub fn new(id: impl Into<String>) -> Result<Self, FeedIdError> {
        let id = id.into();
        if id.is_empty() {
            return Err(FeedIdError::Empty);
        }
        if id.len() > FEED_ID_MAX_LEN {
            return Err(FeedIdError::TooLong(id));
        }
        if !id
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b"-_.".contains(&b))
        {
            return Err(FeedIdError::BadChar(id));
        }
        Ok(Self(id))
    }

    /// The id as text, e.g. `"BTC-USD"`.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The id as a right-zero-padded `bytes32`.
    pub fn to_bytes32(&self) -> [u8; 32] {
        let mut out = [0u8; 32];
        out[..self.0.len()].copy_from_slice(self.0.as_bytes());
        out
    }

    /// Inverse of [`FeedId::to_bytes32`]; rejects anything `to_bytes32` could not produce.
    pub fn from_bytes32(bytes: &[u8; 32]) -> Result<Self, FeedIdError> {
        let len = bytes.iter().position(|&b| b == 0).unwrap_or(32);
        if bytes[len..].iter().any(|&b| b != 0) {
            return Err(FeedIdError::BadChar(
                String::from_utf8_lossy(bytes).into_owned(),
            ));
        }
        let s = std::str::from_utf8(&bytes[..len])
            .map_err(|_| FeedIdError::BadChar(String::from_utf8_lossy(bytes).into_owned()))?;
        Self::new(s)
    }
}

impl std::fmt::Display for FeedId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::str::FromStr for FeedId {
    type Err = FeedIdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

impl TryFrom<String> for FeedId {
    type Error = FeedIdError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::new(s)
    }
}

impl From<FeedId> for String {
    fn from(id: FeedId) -> String {
        id.0
    }
}
