//! What the API serves, as JSON. Integers that may exceed 2^53 (prices,
//! confidences) are strings so JavaScript clients do not round them.

use serde::{Deserialize, Serialize};
use sibyl_aggregator::{ReportLeaf, Round, TimestampMs};

/// Static facts about a feed, from the committee file.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FeedInfo {
    /// Prices are `value / 10^decimals`.
    pub decimals: u8,
    /// Publish threshold: a move of at least this many basis points.
    #[serde(default)]
    pub deviation_bps: Option<u32>,
    /// Publish at least this often, in milliseconds.
    #[serde(default)]
    pub heartbeat_ms: Option<u64>,
}

impl FeedInfo {
    /// A feed's facts from its committee-file parameters.
    pub fn of(f: &sibyl_node::config::FeedParams) -> Self {
        Self {
            decimals: f.decimals,
            deviation_bps: Some(f.deviation_bps),
            heartbeat_ms: Some(f.heartbeat_ms),
        }
    }
}

/// Committee health as the node sees it; published by the node on a
/// `tokio::sync::watch` channel and served at `/v1/committee`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommitteeStatus {
    /// Signatures needed for a report (`t`).
    pub threshold: u16,
    /// Index (FROST identifier) of this node.
    pub self_index: u16,
    /// The round the node is in now.
    pub current_round: Round,
    /// The newest round with a signed report.
    pub last_signed_round: Option<Round>,
    /// Observation-to-signed-report latency of recent rounds, oldest first.
    pub recent_round_latency_ms: Vec<u64>,
    pub members: Vec<MemberStatus>,
    /// When the node last updated this status.
    pub updated_at_ms: TimestampMs,
}

/// One committee member, as seen by this node.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberStatus {
    /// FROST identifier, 1..=n.
    pub index: u16,
    pub peer_id: String,
    /// Whether this node has a live connection to the member (always true
    /// for the node itself). A member silent for a few seconds (no message
    /// and no ping reply) is disconnected.
    pub connected: bool,
    /// When this node last heard from the member: any authenticated
    /// message, gossiped report or ping reply (null for the node itself and
    /// for members not heard from since it started).
    pub last_seen_ms: Option<TimestampMs>,
    /// Signed reports this node accepted whose round the member led.
    pub rounds_led: u64,
    /// The member's signature shares this node received as leader.
    pub shares_received: u64,
    /// The member's signature shares that did not verify here.
    pub share_failures: u64,
    /// The member's refusals to sign this node's proposals.
    pub refusals: u64,
    /// The member's clock offset as estimated here; for the node itself,
    /// its own estimated offset from the committee.
    pub clock_offset_ms: Option<i64>,
}

/// One feed's value in one signed report.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FeedValue {
    pub feed_id: String,
    pub decimals: Option<u8>,
    pub round: Round,
    /// The report's timestamp.
    pub timestamp_ms: TimestampMs,
    /// Fixed point: `price / 10^decimals`.
    pub price: String,
    pub confidence: String,
    pub num_observations: u16,
    pub observed_at_ms: TimestampMs,
    #[serde(flatten)]
    pub quality: LeafQuality,
}

/// What a leaf says about its price besides the price (docs/PROTOCOL.md,
/// "Leaf"): served with every value, in the same fixed point.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct LeafQuality {
    /// Best bid; `null` when unknown (0 in the leaf).
    pub bid: Option<String>,
    /// Best ask; `null` when unknown.
    pub ask: Option<String>,
    pub venues: u16,
    /// `ok`, `degraded`, `stale`, `halted` or `market_closed`.
    pub status: &'static str,
    /// Names of the flags set (`few_venues`, `unconfirmed_jump`, ...).
    pub flags: Vec<&'static str>,
    pub ema: String,
    pub ema_confidence: String,
    /// Annualised realised volatility, 9 decimals (`"1000000000"` = 100 %).
    pub volatility: String,
}

impl From<&ReportLeaf> for LeafQuality {
    fn from(l: &ReportLeaf) -> Self {
        let known = |v: i128| (l.bid != 0 || l.ask != 0).then(|| v.to_string());
        Self {
            bid: known(l.bid),
            ask: known(l.ask),
            venues: l.venues,
            status: l.status.as_str(),
            flags: sibyl_aggregator::report::flags::names(l.flags),
            ema: l.ema.to_string(),
            ema_confidence: l.ema_confidence.to_string(),
            volatility: l.volatility.to_string(),
        }
    }
}

/// A report leaf as served in the SSE stream.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct LeafValue {
    pub feed_id: String,
    pub price: String,
    pub confidence: String,
    pub num_observations: u16,
    pub observed_at_ms: TimestampMs,
    #[serde(flatten)]
    pub quality: LeafQuality,
}

impl From<&ReportLeaf> for LeafValue {
    fn from(l: &ReportLeaf) -> Self {
        Self {
            feed_id: l.feed_id.to_string(),
            price: l.price.to_string(),
            confidence: l.confidence.to_string(),
            num_observations: l.num_observations,
            observed_at_ms: l.observed_at_ms,
            quality: LeafQuality::from(l),
        }
    }
}
