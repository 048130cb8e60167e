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
    /// A signed command's text is not a command.
    #[error("the signed command is not a margin command: {detail}")]
    BadSignedCommand {
        /// The JSON parser's explanation.
        detail: String,
    },
    /// The envelope's account differs from the one the command names.
    #[error(
        "the envelope is for account {envelope} but its command acts on {}: sign the command for the account it names",
        command.map_or("no account".to_string(), |c| format!("account {c}"))
    )]
    AccountMismatch {
        /// The envelope's account.
        envelope: u64,
        /// The command's account (None: a command on no account).
        command: Option<u64>,
    },
    /// This kind of command is not one an account owner signs.
    #[error(
        "a `{kind}` command cannot be signed by an account owner: owners sign withdraw, open, close, adjust_isolated_margin and create_account with their own owner key; deposits, insurance funding and configuration are operator commands"
    )]
    NotSignable {
        /// The command's kind.
        kind: &'static str,
    },
    /// The account has no owner key, so no signature can authorize anything on it.
    #[error(
        "account {account} has no owner key: it is operator-managed and takes no signed commands"
    )]
    NoOwner {
        /// Account id.
        account: u64,
    },
    /// The nonce is not above the account's last one (a replay, or envelopes reordered).
    #[error(
        "account {account}: nonce {nonce} is not above the account's current nonce {current}; sign again with a nonce above {current}"
    )]
    StaleNonce {
        /// Account id.
        account: u64,
        /// The envelope's nonce.
        nonce: u64,
        /// The account's current nonce.
        current: u64,
    },
    /// The signature does not verify under the account's owner key.
    #[error(
        "account {account}: the signature does not verify under the account's owner key (wrong key, or the account, nonce or command text differ from what was signed)"
    )]
    BadSignature {
        /// Account id.
        account: u64,
    },
    /// An unsigned command that moves an owned account's funds or positions.
    #[error(
        "account {account} has an owner key: a `{kind}` command on it must be signed by the owner (POST /v1/margin/signed)"
    )]
    Unauthorized {
        /// Account id.
        account: u64,
        /// The command's kind.
        kind: &'static str,
    },
    /// An owner key that is not a usable Ed25519 public key.
    #[error(
        "owner key {key} is not a usable Ed25519 public key (not a curve point, or of small order)"
    )]
    InvalidOwnerKey {
        /// The key (hex).
        key: String,
    },
    /// The engine was given no committee key, so an owner's signature (which
    /// names the committee) cannot be checked.
    #[error(
        "this margin engine has no committee key, so it cannot check an owner's signature (the signed bytes name the committee's group key): a node sets it from its keystore at start; give `sibyl replay` the node's --config or --group-key"
    )]
    NoCommitteeKey,
    /// Bytes that cannot be a committee's group key.
    #[error("invalid committee key: {detail}")]
    InvalidCommitteeKey {
        /// What is wrong with it.
        detail: String,
    },
}
