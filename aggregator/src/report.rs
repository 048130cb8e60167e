//! The report: what the committee signs. A header (version, config digest,
//! round, timestamp, Merkle root, margin root) over per-feed leaves and the
//! round's ordered margin commands.
//!
//! Shared vocabulary of the crate. The canonical encoding, the Merkle tree and
//! the signed digest live in `encoding`, `merkle` and `digest`.

#![warn(missing_docs)]

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Version byte carried in every header and message.
pub const PROTOCOL_VERSION: u8 = 2;

/// Maximum length of a feed id in bytes; it is encoded as a right-padded `bytes32`.
pub const FEED_ID_MAX_LEN: usize = 32;

/// Most leaves (feeds) a report may carry.
pub const MAX_LEAVES: usize = 65_536;

/// Most margin commands one member offers in one observation.
pub const MAX_COMMANDS_PER_MEMBER: usize = 64;
/// Longest margin command body in bytes (the command's JSON text).
pub const MAX_COMMAND_BYTES: usize = 4096;
/// Most margin commands a report may carry (every member's offer).
pub const MAX_REPORT_COMMANDS: usize = MAX_COMMANDS_PER_MEMBER * 64;

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
    /// Best bid: lower median of the members' best bids, taken over the
    /// members that reported both a bid and an ask (so `bid <= ask`); `0`
    /// when fewer than `2f + 1` did. Same fixed point as `price`.
    #[serde(default)]
    pub bid: Price,
    /// Best ask, the same way as `bid`; `0` when unknown.
    #[serde(default)]
    pub ask: Price,
    /// Lower median of the members' venue counts (venues behind each price).
    #[serde(default)]
    pub venues: u16,
    /// The leaf's headline status; `flags` say why (docs/PROTOCOL.md, "Status and flags").
    #[serde(default)]
    pub status: LeafStatus,
    /// Reasons, [`flags`] bits; unknown bits are refused by every decoder.
    #[serde(default)]
    pub flags: u16,
    /// Confidence-weighted EMA of `price` (time constant one hour), same fixed point.
    #[serde(default)]
    pub ema: Price,
    /// The EMA's confidence (a weighted harmonic mean of the confidences).
    #[serde(default)]
    pub ema_confidence: u128,
    /// Realised volatility: EWMA of squared log returns, annualised, as a
    /// fraction with 9 decimals (`1_000_000_000` = 100 % a year).
    #[serde(default)]
    pub volatility: u64,
}

/// A leaf's headline status (ABI `uint8`, wire `u8`). The most severe
/// condition wins, in this order: `Halted`, `MarketClosed`, `Stale`,
/// `Degraded`, `Ok`.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(rename_all = "snake_case")]
#[repr(u8)]
pub enum LeafStatus {
    /// Enough venues, members agree, within the band, no unconfirmed jump.
    #[default]
    Ok = 0,
    /// Usable with care: one or more of [`flags::FEW_VENUES`],
    /// [`flags::WIDE_CONFIDENCE`], [`flags::PEG_DEPARTED`],
    /// [`flags::OUT_OF_BAND`], [`flags::UNCONFIRMED_JUMP`].
    Degraded = 1,
    /// The observations behind the price are old ([`flags::STALE`]).
    Stale = 2,
    /// A majority of the members see the market halted.
    Halted = 3,
    /// A majority of the members see the market closed.
    MarketClosed = 4,
}

impl LeafStatus {
    /// The status's byte in both encodings.
    pub fn as_u8(self) -> u8 {
        self as u8
    }

    /// Inverse of [`LeafStatus::as_u8`]; `None` for an unknown value.
    pub fn from_u8(v: u8) -> Option<Self> {
        Some(match v {
            0 => Self::Ok,
            1 => Self::Degraded,
            2 => Self::Stale,
            3 => Self::Halted,
            4 => Self::MarketClosed,
            _ => return None,
        })
    }

    /// The status as the API and docs write it (`ok`, `degraded`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Degraded => "degraded",
            Self::Stale => "stale",
            Self::Halted => "halted",
            Self::MarketClosed => "market_closed",
        }
    }
}

/// Bits of [`ReportLeaf::flags`] (docs/PROTOCOL.md, "Status and flags").
pub mod flags {
    /// Fewer venues behind the price than the feed's minimum.
    pub const FEW_VENUES: u16 = 1 << 0;
    /// Confidence wider than the feed's `max_confidence_bps` of the price
    /// (members or venues disagree).
    pub const WIDE_CONFIDENCE: u16 = 1 << 1;
    /// A majority of the members see a stablecoin leg off its peg.
    pub const PEG_DEPARTED: u16 = 1 << 2;
    /// The price is outside the feed's configured band.
    pub const OUT_OF_BAND: u16 = 1 << 3;
    /// The price moved more than the feed's `max_jump_bps` from the previous
    /// signed leaf; the next leaf within the bound of this one confirms it.
    pub const UNCONFIRMED_JUMP: u16 = 1 << 4;
    /// The median observation is older than half the observation age limit.
    pub const STALE: u16 = 1 << 5;
    /// A majority of the members see the market halted.
    pub const HALTED: u16 = 1 << 6;
    /// A majority of the members see the market closed.
    pub const MARKET_CLOSED: u16 = 1 << 7;
    /// Every defined bit; a decoder refuses any other.
    pub const ALL: u16 = (1 << 8) - 1;
    /// Names in bit order, as the API lists them.
    pub const NAMES: [(u16, &str); 8] = [
        (FEW_VENUES, "few_venues"),
        (WIDE_CONFIDENCE, "wide_confidence"),
        (PEG_DEPARTED, "peg_departed"),
        (OUT_OF_BAND, "out_of_band"),
        (UNCONFIRMED_JUMP, "unconfirmed_jump"),
        (STALE, "stale"),
        (HALTED, "halted"),
        (MARKET_CLOSED, "market_closed"),
    ];

    /// The names of the bits set in `flags`, in bit order.
    pub fn names(flags: u16) -> Vec<&'static str> {
        NAMES
            .iter()
            .filter(|(bit, _)| flags & bit != 0)
            .map(|(_, n)| *n)
            .collect()
    }
}

impl ReportLeaf {
    /// A leaf with only the base fields set (no bid/ask, status `ok`, no
    /// flags, EMA equal to the price, zero volatility): tests and tools.
    pub fn basic(
        feed_id: FeedId,
        price: Price,
        confidence: u128,
        num_observations: u16,
        observed_at_ms: TimestampMs,
    ) -> Self {
        Self {
            feed_id,
            price,
            confidence,
            num_observations,
            observed_at_ms,
            bid: 0,
            ask: 0,
            venues: 0,
            status: LeafStatus::Ok,
            flags: 0,
            ema: price,
            ema_confidence: confidence,
            volatility: 0,
        }
    }
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
    /// Commitment to the round's margin data: [`crate::digest::margin_root`]
    /// of [`SignedReport::commands`] and [`SignedReport::margin_state`], all
    /// zero when the round carries neither.
    #[serde(with = "hex::serde", default)]
    pub margin_root: [u8; 32],
}

/// The margin engine's state root after a round: every member that signs
/// a report carrying it computed this root itself (it attested it in its
/// signed observation), so an account proof against `root` is proven
/// against the committee's threshold signature.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct MarginCheckpoint {
    /// The engine state is the one after this round's report (its prices,
    /// then its commands) and every report before it.
    pub round: Round,
    /// `Engine::state_root()` of that state (docs/MARGIN.md, "State root").
    #[serde(with = "hex::serde")]
    pub root: [u8; 32],
}

/// Most state roots a member attests in one observation (its latest rounds).
pub const MAX_ATTESTED_ROOTS: usize = 8;

/// A margin command the committee ordered into a report: offered by member
/// `origin` in its signed observation (so it is the origin's word that an
/// API caller asked for it), numbered by the origin, opaque to the protocol.
/// Every member applies a report's commands after its prices, in report
/// order (docs/MARGIN.md, "Committee-ordered commands").
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct MarginCommand {
    /// The member index that offered it.
    pub origin: u16,
    /// The origin's number for it, strictly increasing per origin.
    pub nonce: u64,
    /// The command, as JSON text (the margin engine's `Command`), at most
    /// [`MAX_COMMAND_BYTES`].
    pub body: String,
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
    /// The round's margin commands in the order every member applies them,
    /// ascending by (origin, nonce); committed by `header.margin_root`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub commands: Vec<MarginCommand>,
    /// The margin state root of an earlier round that every signer computed
    /// and attested; committed by `header.margin_root`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub margin_state: Option<MarginCheckpoint>,
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
