//! Typed errors. A command or price update that fails changes nothing.

use thiserror::Error;

/// Why a price update or command was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum EngineError {
    /// The feed is not configured: send `Command::ConfigureFeed` first.
    #[error("unknown feed `{feed}`: configure it with ConfigureFeed first")]
    UnknownFeed {
        /// Feed id.
        feed: String,
    },
    /// The market is not configured.
    #[error("unknown market `{market}`: configure it with ConfigureMarket first")]
    UnknownMarket {
        /// Market id.
        market: String,
    },
    /// The collateral asset is not configured.
    #[error(
        "unknown collateral asset `{asset}`: configure it with ConfigureAsset first (or deposit `USD`)"
    )]
    UnknownAsset {
        /// Asset id.
        asset: String,
    },
    /// No such account.
    #[error("unknown account {account}")]
    UnknownAccount {
        /// Account id.
        account: u64,
    },
    /// The account id is taken.
    #[error("account {account} already exists")]
    AccountExists {
        /// Account id.
        account: u64,
    },
    /// A price update is not newer than the last accepted one.
    #[error(
        "price for `{feed}` round {round} is not newer than round {last_round} (timestamp {timestamp_ms} vs {last_timestamp_ms})"
    )]
    OutOfOrderPrice {
        /// Feed id.
        feed: String,
        /// Round of the refused update.
        round: u64,
        /// Last accepted round.
        last_round: u64,
        /// Timestamp of the refused update.
        timestamp_ms: u64,
        /// Last accepted timestamp.
        last_timestamp_ms: u64,
    },
    /// A price must be strictly positive.
    #[error("price for `{feed}` must be positive, got {price}")]
    NonPositivePrice {
        /// Feed id.
        feed: String,
        /// The price as received.
        price: i128,
    },
    /// An amount or size must be strictly positive.
    #[error("{what} must be positive, got {value}")]
    NonPositive {
        /// What was wrong.
        what: &'static str,
        /// The offending value.
        value: i128,
    },
    /// A configuration value is out of range.
    #[error("invalid configuration: {detail}")]
    InvalidConfig {
        /// What is wrong and what would be valid.
        detail: String,
    },
    /// Checked arithmetic overflowed: the amounts are absurdly large.
    #[error("arithmetic overflow computing {what}: amounts out of range")]
    Overflow {
        /// The quantity being computed.
        what: &'static str,
    },
    /// Option pricing produced a non-finite value.
    #[error("option pricing failed for {what}: {detail}")]
    Pricing {
        /// The quantity being computed.
        what: &'static str,
        /// Detail.
        detail: String,
    },
    /// The market has no price yet.
    #[error("market `{market}` has no mark price yet: wait for a price on feed `{feed}`")]
    NoPrice {
        /// Market id.
        market: String,
        /// Its feed.
        feed: String,
    },
    /// The market's feed has a guard up: new risk is refused.
    #[error("market `{market}`: new risk refused while the price guard is up ({reason})")]
    GuardUp {
        /// Market id.
        market: String,
        /// Why the guard is up.
        reason: crate::types::GuardReason,
    },
    /// The market expired.
    #[error("market `{market}` expired at {expiry_ms}: trading is closed")]
    Expired {
        /// Market id.
        market: String,
        /// Expiry.
        expiry_ms: u64,
    },
    /// A new market's expiry is not after the engine clock.
    #[error(
        "market `{market}`: expiry {expiry_ms} ms is not after the engine's time {now_ms} ms; configure a later expiry_ms (milliseconds since the Unix epoch)"
    )]
    ExpiryInPast {
        /// Market id.
        market: String,
        /// The configured expiry.
        expiry_ms: u64,
        /// The engine clock when it was refused.
        now_ms: u64,
    },
    /// Not enough free balance.
    #[error("account {account}: insufficient {asset}: has {available}, needs {requested}")]
    InsufficientBalance {
        /// Account id.
        account: u64,
        /// Asset.
        asset: String,
        /// Available amount.
        available: i128,
        /// Requested amount.
        requested: i128,
    },
    /// The command would leave the unit below initial margin.
    #[error(
        "account {account} ({unit}): would leave equity {equity} below initial margin {initial}"
    )]
    InsufficientMargin {
        /// Account id.
        account: u64,
        /// Cross pool or isolated market.
        unit: String,
        /// Equity after the command.
        equity: i128,
        /// Initial requirement after the command.
        initial: i128,
    },
    /// A fill price outside the band around the oracle mark.
    #[error(
        "`{market}`: fill price {price} is outside the band {mark} ± {band} (the oracle mark ± the market's initial - maintenance rate); send a price inside it or none to fill at the mark"
    )]
    PriceOutsideBand {
        /// Market.
        market: String,
        /// Requested fill price.
        price: i128,
        /// Oracle mark.
        mark: i128,
        /// Allowed distance from the mark.
        band: i128,
    },
    /// No position to close or adjust.
    #[error("account {account} has no position in `{market}`")]
    NoPosition {
        /// Account id.
        account: u64,
        /// Market id.
        market: String,
    },
    /// Cross and isolated margin cannot be mixed for one market.
    #[error(
        "account {account}: market `{market}` is held in {held} margin; close it before switching"
    )]
    MarginModeConflict {
        /// Account id.
        account: u64,
        /// Market id.
        market: String,
        /// The mode the position already uses.
        held: &'static str,
    },
    /// Stored snapshot bytes do not decode.
    #[error(
        "stored margin snapshot is corrupt ({detail}); delete it and restart to replay the stored inputs"
    )]
    SnapshotCorrupt {
        /// What is wrong.
        detail: String,
    },
    /// The snapshot's schema version is not supported.
    #[error("snapshot schema version {found} is not supported (expected {expected})")]
    SnapshotVersion {
        /// Found version.
        found: u32,
        /// Supported version.
        expected: u32,
    },
    /// A report names the same feed twice.
    #[error("report round {round} names feed `{feed}` twice")]
    DuplicateFeed {
        /// Feed id.
        feed: String,
        /// Round.
        round: u64,
    },
    /// A close asks for more than the position holds.
    #[error("account {account}: cannot close {size} of `{market}`, the position holds {held}")]
    ExceedsPosition {
        /// Account id.
        account: u64,
        /// Market id.
        market: String,
        /// Requested size.
        size: i128,
        /// Held size (absolute).
        held: i128,
    },
    /// The market settled: no more trading.
    #[error("market `{market}` has settled: trading is closed")]
    Settled {
        /// Market id.
        market: String,
    },
}
