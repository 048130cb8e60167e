//! The engine's inputs (price updates, commands), outputs (events), and the
//! configuration and state records they refer to. Every type here is part of
//! the stored, versioned shape: serde names are snake_case, enums are
//! externally tagged (`{"deposit": {...}}`), integers are JSON numbers.

use crate::options::{OptionKind, PricingModel};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Version of the command/event/snapshot shape. Bump on any change that an
/// old reader could not parse; the store keeps it beside every row.
pub const SCHEMA_VERSION: u32 = 1;

/// Account ids are chosen by the caller (the API), so replays reproduce them.
pub type AccountId = u64;

/// One feed's value from a verified signed report: the leaf's price,
/// confidence, status, flags, EMA and realized volatility
/// (docs/PROTOCOL.md). Inputs stored before the leaf carried status, EMA
/// and volatility read as status ok, no flags, no EMA, no volatility.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PriceInput {
    /// Feed id, e.g. "BTC-USD".
    pub feed: String,
    /// Fixed-point price with `decimals`.
    pub price: i128,
    /// Decimals of `price` and `confidence`.
    pub decimals: u8,
    /// Confidence half-width, same scale as `price`.
    pub confidence: u128,
    /// The leaf's status (`status::OK` .. `status::MARKET_CLOSED`).
    #[serde(default, skip_serializing_if = "is_zero_u8")]
    pub status: u8,
    /// The leaf's flags (`status::UNCONFIRMED_JUMP` is the one the engine
    /// reads beyond the status).
    #[serde(default, skip_serializing_if = "is_zero_u16")]
    pub flags: u16,
    /// The leaf's EMA, same scale as `price` (0: none).
    #[serde(default, skip_serializing_if = "is_zero_i128")]
    pub ema: i128,
    /// The EMA's confidence, same scale as `price`.
    #[serde(default, skip_serializing_if = "is_zero_u128")]
    pub ema_confidence: u128,
    /// The leaf's realized volatility (1e9 = 100 % a year; 0: none).
    #[serde(default, skip_serializing_if = "is_zero_u64")]
    pub volatility: u64,
}

fn is_zero_u8(v: &u8) -> bool {
    *v == 0
}
fn is_zero_u16(v: &u16) -> bool {
    *v == 0
}
fn is_zero_i128(v: &i128) -> bool {
    *v == 0
}
fn is_zero_u128(v: &u128) -> bool {
    *v == 0
}
fn is_zero_u64(v: &u64) -> bool {
    *v == 0
}

/// The signed leaf's status byte and the flag the engine reads
/// (docs/PROTOCOL.md, "Status and flags").
pub mod status {
    /// Usable.
    pub const OK: u8 = 0;
    /// Usable with care (few venues, wide confidence, peg, band, jump).
    pub const DEGRADED: u8 = 1;
    /// The observations behind the price are old.
    pub const STALE: u8 = 2;
    /// A majority sees trading halted.
    pub const HALTED: u8 = 3;
    /// A majority sees the market closed.
    pub const MARKET_CLOSED: u8 = 4;
    /// Flag bit 4: a jump beyond the feed's bound, not yet confirmed by the
    /// next leaf.
    pub const UNCONFIRMED_JUMP: u16 = 1 << 4;
}

/// The feeds of one verified signed report.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PriceReport {
    /// Report round.
    pub round: u64,
    /// Report timestamp (ms since the Unix epoch).
    pub timestamp_ms: u64,
    /// Its feeds.
    pub prices: Vec<PriceInput>,
}

/// What the engine consumes, in the order the daemon stores it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Input {
    /// A verified signed report.
    Prices(PriceReport),
    /// An admin command stamped by the daemon with its arrival time.
    Command {
        /// Arrival time (ms); the engine's clock never goes backwards.
        at_ms: u64,
        /// The command.
        command: Command,
    },
    /// A command signed by its account's owner, stamped the same way.
    Signed {
        /// Arrival time (ms).
        at_ms: u64,
        /// The envelope, as signed.
        signed: crate::signed::SignedCommand,
    },
}

impl Command {
    /// The account the command acts on (None: configuration, insurance).
    pub fn account(&self) -> Option<AccountId> {
        match self {
            Command::CreateAccount { account, .. }
            | Command::Deposit { account, .. }
            | Command::Withdraw { account, .. }
            | Command::Open { account, .. }
            | Command::Close { account, .. }
            | Command::AdjustIsolatedMargin { account, .. } => Some(*account),
            Command::ConfigureRisk(_)
            | Command::ConfigureFeed(_)
            | Command::ConfigureAsset(_)
            | Command::ConfigureMarket(_)
            | Command::FundInsurance { .. } => None,
        }
    }

    /// The command's serde name (`withdraw`, `open`, ...).
    pub fn kind(&self) -> &'static str {
        match self {
            Command::ConfigureRisk(_) => "configure_risk",
            Command::ConfigureFeed(_) => "configure_feed",
            Command::ConfigureAsset(_) => "configure_asset",
            Command::ConfigureMarket(_) => "configure_market",
            Command::CreateAccount { .. } => "create_account",
            Command::Deposit { .. } => "deposit",
            Command::Withdraw { .. } => "withdraw",
            Command::Open { .. } => "open",
            Command::Close { .. } => "close",
            Command::AdjustIsolatedMargin { .. } => "adjust_isolated_margin",
            Command::FundInsurance { .. } => "fund_insurance",
        }
    }

    /// Whether it moves an account's funds or positions: on an account with
    /// an owner, only the owner's signature authorizes it.
    pub fn moves_funds(&self) -> bool {
        matches!(
            self,
            Command::Withdraw { .. }
                | Command::Open { .. }
                | Command::Close { .. }
                | Command::AdjustIsolatedMargin { .. }
        )
    }

    /// Whether an account owner may sign it: what moves its funds or
    /// positions, and opening an account under one's own key. Deposits,
    /// insurance funding and configuration bring money or rules from
    /// outside and stay operator commands.
    pub fn signable(&self) -> bool {
        self.moves_funds() || matches!(self, Command::CreateAccount { owner: Some(_), .. })
    }
}

/// Long or short.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Side {
    /// Buy.
    Long,
    /// Sell.
    Short,
}

/// How a new position is margined.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MarginMode {
    /// Shares the account's cross pool (cash, collateral, other cross positions).
    Cross,
    /// Own pool, funded from cash; losses stop at the pool.
    Isolated {
        /// Money moved from cash into the position's pool (may be 0 when adding).
        collateral: i128,
    },
}

/// Admin commands.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Command {
    /// Engine-wide risk parameters.
    ConfigureRisk(RiskParams),
    /// Add or replace a feed's guard rails, scenario grid and vol surface.
    ConfigureFeed(FeedConfig),
    /// Add or replace a collateral asset.
    ConfigureAsset(AssetConfig),
    /// Add or replace a market (the kind of an existing market cannot change).
    ConfigureMarket(MarketConfig),
    /// Open an account.
    CreateAccount {
        /// New id.
        account: AccountId,
        /// The account owner's Ed25519 public key (hex in JSON): the
        /// commands that move the account's funds or positions must then
        /// be signed by it (`SignedCommand`). None: an operator-managed
        /// account (demo and admin books).
        #[serde(
            default,
            skip_serializing_if = "Option::is_none",
            with = "crate::signed::hex_bytes::option"
        )]
        owner: Option<crate::signed::OwnerKey>,
    },
    /// Credit collateral (money for `USD`, base units otherwise).
    Deposit {
        /// Account.
        account: AccountId,
        /// Asset id; `USD` is cash.
        asset: String,
        /// Amount (> 0).
        amount: i128,
    },
    /// Debit collateral; refused below initial margin.
    Withdraw {
        /// Account.
        account: AccountId,
        /// Asset id.
        asset: String,
        /// Amount (> 0).
        amount: i128,
    },
    /// Buy or sell `size` at the mark against the venue (reduces, closes or
    /// flips an existing position in the opposite direction).
    Open {
        /// Account.
        account: AccountId,
        /// Market.
        market: String,
        /// Direction.
        side: Side,
        /// Quantity (> 0), 8 decimals.
        size: i128,
        /// Margin mode (must match an existing position's).
        margin: MarginMode,
        /// Fill price (8 decimals); the mark when None. It must lie within
        /// the mark ± the market's (initial - maintenance) rate, else the
        /// command is refused (`PriceOutsideBand`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        price: Option<i128>,
    },
    /// Reduce a position by `size`, or close it entirely when `size` is None.
    Close {
        /// Account.
        account: AccountId,
        /// Market.
        market: String,
        /// Quantity to close (> 0), or all.
        size: Option<i128>,
        /// Fill price (8 decimals), within the same band as `Open`'s; the
        /// mark when None.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        price: Option<i128>,
    },
    /// Move money between cash and an isolated position's pool
    /// (positive adds to the pool).
    AdjustIsolatedMargin {
        /// Account.
        account: AccountId,
        /// Market.
        market: String,
        /// Signed amount.
        delta: i128,
    },
    /// Money paid into the insurance fund from outside (treasury).
    FundInsurance {
        /// Amount (> 0).
        amount: i128,
    },
}

/// Engine-wide risk parameters.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RiskParams {
    /// After a partial liquidation equity must exceed maintenance by this
    /// fraction of maintenance (ppm), else the unit is fully liquidated.
    pub liquidation_buffer_ppm: u32,
    /// Fractions tried, in order, for a partial liquidation (ppm, < 1e6).
    pub partial_steps_ppm: Vec<u32>,
    /// Portfolio-margin initial requirement = maintenance × this (ppm, >= 1e6).
    pub portfolio_initial_ratio_ppm: u32,
    /// Units holding options are re-examined at least this often (ms), since
    /// time decay moves their value between price ticks.
    pub option_recheck_ms: u64,
    /// Cap on a liquidation's penalty (ppm of the closed notional), whatever
    /// the market's `liquidation_penalty_ppm`. The penalty also never
    /// exceeds what the unit has left (full liquidation).
    #[serde(default = "default_penalty_cap_ppm")]
    pub max_liquidation_penalty_ppm: u32,
    /// A margin call (equity below initial) clears once equity is back at
    /// initial plus this fraction (ppm) of (initial - maintenance): a unit
    /// hovering at initial does not call and clear on every tick.
    #[serde(default = "default_clear_buffer_ppm")]
    pub margin_call_clear_buffer_ppm: u32,
    /// Trigger bands also hold the margin-call levels, so a margin call
    /// comes the report that crosses them (true), or they hold maintenance
    /// only and margin calls come when a unit is examined for another
    /// reason (false: far fewer units examined per report; see
    /// docs/MARGIN.md, Benchmark).
    #[serde(default = "default_true")]
    pub prompt_margin_calls: bool,
}

fn default_true() -> bool {
    true
}

fn default_clear_buffer_ppm() -> u32 {
    250_000
}

fn default_penalty_cap_ppm() -> u32 {
    50_000
}

impl Default for RiskParams {
    fn default() -> Self {
        Self {
            liquidation_buffer_ppm: 250_000,
            partial_steps_ppm: vec![100_000, 250_000, 500_000, 750_000],
            portfolio_initial_ratio_ppm: 1_250_000,
            option_recheck_ms: 60_000,
            max_liquidation_penalty_ppm: default_penalty_cap_ppm(),
            margin_call_clear_buffer_ppm: default_clear_buffer_ppm(),
            prompt_margin_calls: true,
        }
    }
}

/// Portfolio-margin scenarios of one underlying: each price move combined
/// with each vol shock at full weight, plus extreme moves counted at
/// `extreme_weight_ppm` (SPAN's "extreme move covered at a fraction").
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScenarioGrid {
    /// Relative price moves (ppm), e.g. -150000..=150000.
    pub price_moves_ppm: Vec<i32>,
    /// Relative vol shocks (ppm of vol), e.g. [-250000, 0, 250000].
    pub vol_shocks_ppm: Vec<i32>,
    /// Extreme relative moves (ppm), at unshocked vol.
    pub extreme_moves_ppm: Vec<i32>,
    /// Weight of extreme-move losses (ppm).
    pub extreme_weight_ppm: u32,
}

/// The default grid is at least as wide as Deribit's portfolio margin:
/// price moves of ±16 % in 9 steps of 4 %, each with vol down 25 %,
/// unchanged and up 25 %, plus an extended table from −66 % to +500 %
/// (−66, −50, −33, +33, +100, +200, +500 %) whose losses count at 35 %
/// (Deribit's extended dampener plays this part).
impl Default for ScenarioGrid {
    fn default() -> Self {
        Self {
            price_moves_ppm: (-4..=4).map(|i| i * 40_000).collect(),
            vol_shocks_ppm: vec![-250_000, 0, 250_000],
            extreme_moves_ppm: vec![
                -660_000, -500_000, -330_000, 330_000, 1_000_000, 2_000_000, 5_000_000,
            ],
            extreme_weight_ppm: 350_000,
        }
    }
}

/// One scenario of a grid, in evaluation order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Scenario {
    /// Relative price move.
    pub move_ppm: i32,
    /// Relative vol shock.
    pub vol_shock_ppm: i32,
    /// Weight of the loss.
    pub weight_ppm: u32,
}

impl ScenarioGrid {
    /// Scenarios in a fixed order: moves × shocks, then extremes.
    pub fn scenarios(&self) -> Vec<Scenario> {
        let mut v = Vec::new();
        for &m in &self.price_moves_ppm {
            for &s in &self.vol_shocks_ppm {
                v.push(Scenario {
                    move_ppm: m,
                    vol_shock_ppm: s,
                    weight_ppm: 1_000_000,
                });
            }
        }
        for &m in &self.extreme_moves_ppm {
            v.push(Scenario {
                move_ppm: m,
                vol_shock_ppm: 0,
                weight_ppm: self.extreme_weight_ppm,
            });
        }
        v
    }

    /// Largest absolute move (ppm).
    pub fn max_move_ppm(&self) -> i128 {
        self.price_moves_ppm
            .iter()
            .chain(&self.extreme_moves_ppm)
            .map(|m| i128::from(*m).abs())
            .max()
            .unwrap_or(0)
    }
}

/// A point on a vol smile.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolPoint {
    /// Strike (8 decimals).
    pub strike: i128,
    /// Implied vol (ppm: 500000 = 50%).
    pub vol_ppm: u32,
}

/// The smile of one expiry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolSlice {
    /// Expiry (ms).
    pub expiry_ms: u64,
    /// Points sorted by strike.
    pub points: Vec<VolPoint>,
}

/// Implied-vol surface: linear in strike within a slice (flat outside),
/// linear in total variance between expiries (flat outside).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolSurface {
    /// Slices sorted by expiry.
    pub slices: Vec<VolSlice>,
}

/// Guard rails and risk inputs of one feed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FeedConfig {
    /// Feed id, e.g. "BTC-USD".
    pub feed: String,
    /// A price older than this (vs the engine clock) is stale.
    pub max_staleness_ms: u64,
    /// Confidence wider than this fraction of the price raises the guard (ppm).
    pub max_confidence_ppm: u32,
    /// A price further than this from the recent average raises the guard (ppm).
    pub max_jump_ppm: u32,
    /// Number of recent prices in the average.
    pub average_window: u16,
    /// Risk-free rate for options on this feed (ppm per year).
    pub rate_ppm: i64,
    /// Portfolio-margin scenarios.
    pub grid: ScenarioGrid,
    /// Vol surface for option markets that use `VolSource::Surface`.
    pub vol_surface: Option<VolSurface>,
    /// Requirements that scale with the signed leaf's realized volatility
    /// (none: requirements as configured).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vol_scaling: Option<VolScaling>,
}

/// How a feed's requirements follow its signed realized volatility `v`
/// (the leaf's `volatility`, 1e9 = 100 % a year):
///
/// ```text
/// raw        = v × 1e6 / reference_volatility                       (ppm)
/// target(x)  = min(max_multiplier_ppm, 1e6 + step × ceil((x − 1e6) / step))   for x > 1e6, else 1e6
/// multiplier = target(raw)            when that is higher than the current one
///            = target(raw + step / 2) when that is lower (half a step of hysteresis)
/// ```
///
/// Linear markets on the feed use `base_rate × multiplier` for their initial
/// and maintenance base rates (growth and the cap as configured);
/// portfolio margin scales the grid's `price_moves_ppm` by it (the extreme
/// moves stay as configured). So the multiplier is bounded by
/// `[1, max_multiplier_ppm / 1e6]` and moves in whole steps; a step
/// re-examines the feed's holders (`VolatilityScaled` event).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolScaling {
    /// Volatility at and below which requirements are as configured
    /// (1e9 = 100 % a year; > 0).
    pub reference_volatility: u64,
    /// Largest multiplier (ppm, 1e6..=10e6).
    pub max_multiplier_ppm: u32,
    /// Step of the multiplier (ppm, > 0).
    pub step_ppm: u32,
}

impl VolScaling {
    /// `target(raw)` above.
    pub fn target_ppm(&self, raw_ppm: i128) -> u32 {
        let step = i128::from(self.step_ppm.max(1));
        let max = i128::from(self.max_multiplier_ppm.max(1_000_000));
        if raw_ppm <= 1_000_000 {
            return 1_000_000;
        }
        let steps = (raw_ppm - 1_000_000 + step - 1) / step;
        let m = 1_000_000i128
            .saturating_add(steps.saturating_mul(step))
            .min(max);
        u32::try_from(m).unwrap_or(u32::MAX)
    }

    /// The next multiplier from the current one and the leaf's volatility.
    pub fn next_ppm(&self, current_ppm: u32, volatility: u64) -> u32 {
        let reference = i128::from(self.reference_volatility.max(1));
        let raw = i128::from(volatility).saturating_mul(1_000_000) / reference;
        let up = self.target_ppm(raw);
        if up >= current_ppm {
            return up;
        }
        let down = self.target_ppm(raw.saturating_add(i128::from(self.step_ppm / 2)));
        down.min(current_ppm)
    }
}

/// A non-quote collateral asset.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AssetConfig {
    /// Asset id, e.g. "BTC".
    pub asset: String,
    /// Feed pricing it in the quote currency.
    pub feed: String,
    /// Haircut (ppm): collateral counts at price × (1 - haircut).
    pub haircut_ppm: u32,
}

/// Where an option market's vol comes from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VolSource {
    /// One vol for this instrument (ppm).
    Fixed {
        /// Vol (ppm).
        vol_ppm: u32,
    },
    /// The feed's surface at this strike and expiry.
    Surface,
}

/// What a market trades.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MarketKind {
    /// Linear perpetual, marked at the feed price.
    Perpetual,
    /// Linear future, marked at the feed price, cash-settled at expiry.
    Future {
        /// Expiry (ms).
        expiry_ms: u64,
    },
    /// European option, cash-settled at intrinsic value at expiry.
    Option {
        /// Call or put.
        kind: OptionKind,
        /// Strike (8 decimals).
        strike: i128,
        /// Expiry (ms).
        expiry_ms: u64,
        /// Black-76 or Black-Scholes.
        model: PricingModel,
        /// Vol.
        vol: VolSource,
    },
}

impl MarketKind {
    /// Expiry, if any.
    pub fn expiry_ms(&self) -> Option<u64> {
        match self {
            MarketKind::Perpetual => None,
            MarketKind::Future { expiry_ms } | MarketKind::Option { expiry_ms, .. } => {
                Some(*expiry_ms)
            }
        }
    }
}

/// A market and its requirements. Linear requirements grow with size:
/// rate(notional) = min(max_rate, base + growth × notional / 1,000,000 USD).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MarketConfig {
    /// Market id, e.g. "BTC-PERP".
    pub market: String,
    /// Underlying feed.
    pub feed: String,
    /// Instrument.
    pub kind: MarketKind,
    /// Initial margin base rate (ppm).
    pub initial_ppm: u32,
    /// Maintenance margin base rate (ppm).
    pub maintenance_ppm: u32,
    /// Rate added per 1,000,000 USD of notional (ppm).
    pub growth_ppm_per_million: u32,
    /// Cap on either rate (ppm).
    pub max_rate_ppm: u32,
    /// Fee on every trade's notional (ppm), to the fee pool.
    pub taker_fee_ppm: u32,
    /// Liquidation penalty on closed notional (ppm).
    pub liquidation_penalty_ppm: u32,
    /// Share of the penalty paid to the liquidator side (ppm); the rest goes
    /// to the insurance fund.
    pub liquidator_share_ppm: u32,
    /// Concentration add-on for positions large against the market's
    /// liquidity (linear requirements; none: no add-on).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concentration: Option<Concentration>,
}

/// A concentration add-on: a position whose notional `n` exceeds the
/// liquidity the market can absorb `L` adds `add_on_ppm × (n − L) / L` to
/// both its initial and maintenance rates (before `max_rate_ppm`): twice
/// the liquidity costs `add_on_ppm` more.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Concentration {
    /// Notional the market absorbs without moving much (money, > 0).
    pub liquidity_notional: i128,
    /// Rate added per multiple of the liquidity beyond it (ppm).
    pub add_on_ppm: u32,
}

/// A position: `size` base units bought for `quote` money (negative when paid).
/// Value at mark = quote + size × mark; transfers move exact integers.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Position {
    /// Signed size (8 decimals): > 0 long, < 0 short.
    pub size: i128,
    /// Signed money paid/received for the open size (cost basis).
    pub quote: i128,
    /// Isolated pool, or None when cross.
    pub isolated: Option<i128>,
}

/// An account.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Account {
    /// Cash in the quote currency (money scale); can be negative only when
    /// covered by collateral.
    pub cash: i128,
    /// Non-quote collateral by asset (qty scale).
    pub collateral: BTreeMap<String, i128>,
    /// Positions by market.
    pub positions: BTreeMap<String, Position>,
    /// The owner's Ed25519 public key: commands that move this account's
    /// funds or positions must carry its signature. None: operator-managed.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "crate::signed::hex_bytes::option"
    )]
    pub owner: Option<crate::signed::OwnerKey>,
    /// The highest signed-command nonce taken (0 without an owner).
    #[serde(default, skip_serializing_if = "is_zero_u64")]
    pub nonce: u64,
}

/// The counterparty of every fill and the liquidator of last resort: it
/// holds the net open interest, is not margined, and absorbs bad debt only
/// after the insurance fund and auto-deleveraging.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Venue {
    /// Cash.
    pub cash: i128,
    /// Collateral taken over from bankrupt accounts.
    pub collateral: BTreeMap<String, i128>,
    /// Positions by market.
    pub positions: BTreeMap<String, Position>,
}

/// A margin unit: the account's cross pool or one isolated position.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Unit {
    /// Cash, collateral and every cross position.
    Cross,
    /// One isolated position.
    Isolated {
        /// Its market.
        market: String,
    },
}

impl std::fmt::Display for Unit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Unit::Cross => write!(f, "cross"),
            Unit::Isolated { market } => write!(f, "isolated {market}"),
        }
    }
}

/// Why a feed's guard is up.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GuardReason {
    /// No price seen yet.
    NoPrice,
    /// The last price is too old.
    Stale {
        /// Its timestamp.
        last_ms: u64,
        /// Engine clock.
        now_ms: u64,
        /// Allowed age.
        max_ms: u64,
    },
    /// The confidence interval is too wide.
    ConfidenceTooWide {
        /// Confidence / price (ppm).
        ratio_ppm: i128,
        /// Allowed.
        max_ppm: u32,
    },
    /// The signed leaf says the price is not fit to act on: its status
    /// is degraded, stale, halted or market closed, or its jump is not
    /// confirmed yet. Liquidation waits; the feed's markets are
    /// reduce-only (closing is allowed, new risk is refused).
    Status {
        /// The leaf's status byte.
        status: u8,
        /// The leaf's flags.
        flags: u16,
    },
    /// The price jumped implausibly against its recent average.
    Jump {
        /// Price (8 decimals).
        price: i128,
        /// Recent average (8 decimals).
        average: i128,
        /// |price - average| / average (ppm).
        deviation_ppm: i128,
        /// Allowed.
        max_ppm: u32,
    },
}

impl std::fmt::Display for GuardReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            GuardReason::NoPrice => write!(f, "no price yet"),
            GuardReason::Stale {
                last_ms,
                now_ms,
                max_ms,
            } => {
                write!(
                    f,
                    "stale: last price at {last_ms}, now {now_ms}, max age {max_ms} ms"
                )
            }
            GuardReason::ConfidenceTooWide { ratio_ppm, max_ppm } => {
                write!(
                    f,
                    "confidence {ratio_ppm} ppm of price exceeds {max_ppm} ppm"
                )
            }
            GuardReason::Status { status, flags } => {
                let what = match *status {
                    status::OK => "ok",
                    status::DEGRADED => "degraded",
                    status::STALE => "stale",
                    status::HALTED => "halted",
                    status::MARKET_CLOSED => "market closed",
                    _ => "unknown",
                };
                write!(
                    f,
                    "the signed leaf's status is {what} (flags {flags:#06x}{}): reduce-only until a leaf is ok",
                    if flags & status::UNCONFIRMED_JUMP != 0 {
                        ", jump unconfirmed"
                    } else {
                        ""
                    }
                )
            }
            GuardReason::Jump {
                price,
                average,
                deviation_ppm,
                max_ppm,
            } => write!(
                f,
                "price {price} deviates {deviation_ppm} ppm from recent average {average} (max {max_ppm})"
            ),
        }
    }
}

/// Why a fill happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FillReason {
    /// An admin Open/Close command.
    Trade,
    /// Liquidation: the position went to the liquidator side (the venue).
    Liquidation,
    /// Auto-deleveraging of a profitable opposing position.
    AutoDeleverage,
    /// Expiry settlement.
    Settlement,
}

/// A unit's equity and requirements at the current marks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Health {
    /// Cash + haircut collateral + positions at mark.
    pub equity: i128,
    /// Initial requirement.
    pub initial: i128,
    /// Maintenance requirement.
    pub maintenance: i128,
    /// Σ |position value| at mark.
    pub notional: i128,
    /// True when the requirement came from the portfolio-margin grid.
    pub portfolio: bool,
}

/// Liquidation kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LiquidationKind {
    /// Each position reduced by `fraction_ppm`.
    Partial {
        /// Fraction closed.
        fraction_ppm: u32,
    },
    /// Everything closed.
    Full,
}

/// One closed slice in a liquidation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClosedSlice {
    /// Market.
    pub market: String,
    /// Signed size removed from the account (positive = a long was sold).
    pub size: i128,
    /// Price.
    pub price: i128,
}

/// What happened, with why. Stored in order; replay must reproduce them
/// byte for byte.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Event {
    /// Risk parameters replaced.
    RiskConfigured(RiskParams),
    /// Feed configured.
    FeedConfigured(FeedConfig),
    /// Asset configured.
    AssetConfigured(AssetConfig),
    /// Market configured.
    MarketConfigured(MarketConfig),
    /// Account opened.
    AccountCreated {
        /// Account.
        account: AccountId,
        /// Its owner's public key, if it has one.
        #[serde(
            default,
            skip_serializing_if = "Option::is_none",
            with = "crate::signed::hex_bytes::option"
        )]
        owner: Option<crate::signed::OwnerKey>,
    },
    /// Collateral credited.
    Deposited {
        /// Account.
        account: AccountId,
        /// Asset.
        asset: String,
        /// Amount.
        amount: i128,
    },
    /// Collateral debited; shows the margin check that allowed it.
    Withdrawn {
        /// Account.
        account: AccountId,
        /// Asset.
        asset: String,
        /// Amount.
        amount: i128,
        /// Cross health after.
        health_after: Health,
    },
    /// A fill against the venue.
    Filled {
        /// Account.
        account: AccountId,
        /// Market.
        market: String,
        /// Signed size bought (negative = sold).
        size: i128,
        /// Price.
        price: i128,
        /// Fee to the fee pool.
        fee: i128,
        /// PnL moved from the position into cash (or the isolated pool).
        realized: i128,
        /// Why.
        reason: FillReason,
    },
    /// Money moved between cash and an isolated pool.
    IsolatedMarginAdjusted {
        /// Account.
        account: AccountId,
        /// Market.
        market: String,
        /// Signed amount into the pool.
        delta: i128,
        /// Pool after.
        pool_after: i128,
    },
    /// Equity fell below initial margin (margin call); emitted on the transition.
    MarginCall {
        /// Account.
        account: AccountId,
        /// Unit.
        unit: Unit,
        /// Health at the call.
        health: Health,
    },
    /// Equity is back at or above initial margin.
    MarginCallCleared {
        /// Account.
        account: AccountId,
        /// Unit.
        unit: Unit,
        /// Health now.
        health: Health,
    },
    /// Below maintenance, but a guard on one of the unit's feeds forbids
    /// liquidating now; retried when the guard clears.
    LiquidationDeferred {
        /// Account.
        account: AccountId,
        /// Unit.
        unit: Unit,
        /// Feed whose guard is up.
        feed: String,
        /// Why.
        reason: GuardReason,
        /// Health at the decision.
        health: Health,
    },
    /// A liquidation: why (health before), what was closed, and the result.
    Liquidated {
        /// Account.
        account: AccountId,
        /// Unit.
        unit: Unit,
        /// Partial or full.
        kind: LiquidationKind,
        /// Health that triggered it (equity < maintenance).
        before: Health,
        /// Health after (includes the penalty).
        after: Health,
        /// Slices closed against the liquidator side.
        closed: Vec<ClosedSlice>,
        /// Penalty charged.
        penalty: i128,
        /// Part of it to the liquidator side.
        to_liquidator: i128,
        /// Part of it to the insurance fund.
        to_insurance: i128,
        /// Why partial was not enough, when full.
        note: String,
    },
    /// Collateral of a bankrupt account sold to the venue at the oracle price.
    CollateralSeized {
        /// Account.
        account: AccountId,
        /// Asset.
        asset: String,
        /// Quantity.
        qty: i128,
        /// Price.
        price: i128,
        /// Money credited.
        value: i128,
    },
    /// A bankrupt unit's deficit and how it was covered.
    BadDebt {
        /// Account.
        account: AccountId,
        /// Unit.
        unit: Unit,
        /// Deficit after closing everything.
        deficit: i128,
        /// Covered by the insurance fund.
        from_insurance: i128,
        /// Covered by auto-deleveraging.
        from_deleveraging: i128,
        /// Covered by the venue after both ran out.
        from_venue: i128,
    },
    /// Insurance fund movement.
    InsuranceFund {
        /// Signed change.
        delta: i128,
        /// Balance after.
        balance: i128,
        /// Why.
        reason: InsuranceReason,
    },
    /// An opposing position reduced to cover bad debt.
    AutoDeleveraged {
        /// Account deleveraged.
        account: AccountId,
        /// Its unit.
        unit: Unit,
        /// Market.
        market: String,
        /// Signed size removed from it.
        size: i128,
        /// Mark price.
        price: i128,
        /// Money taken from its profit for the bankrupt account.
        charge: i128,
        /// Its rank (1 = first).
        rank: u32,
        /// Ranking score: profit ratio × leverage (ppm).
        score: i128,
        /// The bankrupt account.
        bankrupt: AccountId,
    },
    /// A feed's guard went up.
    GuardRaised {
        /// Feed.
        feed: String,
        /// Why.
        reason: GuardReason,
    },
    /// A feed's guard came down.
    GuardCleared {
        /// Feed.
        feed: String,
    },
    /// An expired market settled.
    Settled {
        /// Market.
        market: String,
        /// Underlying price used.
        underlying_price: i128,
        /// Settlement price per unit (intrinsic value for options).
        price: i128,
        /// Positions settled.
        positions: u64,
    },
    /// A feed's requirement multiplier moved with its signed volatility
    /// (`VolScaling`).
    VolatilityScaled {
        /// Feed.
        feed: String,
        /// The leaf's realized volatility (1e9 = 100 % a year).
        volatility: u64,
        /// Multiplier before (ppm).
        from_ppm: u32,
        /// Multiplier now (ppm).
        to_ppm: u32,
    },
    /// Settlement is due but waits for the guard to clear.
    SettlementDeferred {
        /// Market.
        market: String,
        /// Why.
        reason: GuardReason,
    },
    /// A unit could not be evaluated (arithmetic out of range): left as is.
    EvaluationFailed {
        /// Account.
        account: AccountId,
        /// Unit.
        unit: Unit,
        /// Error text.
        error: String,
    },
}

/// Why the insurance fund moved.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InsuranceReason {
    /// External funding.
    Funded,
    /// Share of a liquidation penalty.
    Penalty {
        /// Liquidated account.
        account: AccountId,
    },
    /// Covered bad debt.
    BadDebt {
        /// Bankrupt account.
        account: AccountId,
    },
}

/// An event with its sequence number and the engine time it happened at.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventRecord {
    /// Gapless sequence, starting at 0.
    pub seq: u64,
    /// Engine clock when emitted.
    pub at_ms: u64,
    /// The event.
    pub event: Event,
}

/// Greeks are stored as fixed-point integers with 18 decimals
/// (`GREEK_DECIMALS`): 8 decimals lost a BTC-like gamma (2.3e-5 at
/// S = 100,000) to a 1.2e-4 relative error and rounded gamma at S = 1e9 to 0.
/// With 18 decimals the rounding error is at most 5e-19 absolute, i.e.
/// ≤ 1e-9 relative for any Greek of magnitude ≥ 5e-10 (gamma at S = 1e9,
/// σ = 0.6, 30 days is ~2.3e-9), and i128 still holds ±1.7e20 per contract.
pub const GREEK_DECIMALS: u32 = 18;
/// `10^GREEK_DECIMALS`.
pub const GREEK_SCALE: i128 = 1_000_000_000_000_000_000;
const _: () = assert!(10i128.pow(GREEK_DECIMALS) == GREEK_SCALE);

/// Greeks (Hull's units, `GREEK_DECIMALS` = 18 decimals): per contract in a
/// market, or summed over an account's positions on one underlying.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Greeks {
    /// Underlying units.
    pub delta: i128,
    /// Delta per 1.0 of underlying price.
    pub gamma: i128,
    /// Value per 1.00 (100 points) of vol.
    pub vega: i128,
    /// Value per year of time passing.
    pub theta: i128,
    /// Value per 1.00 of rate.
    pub rho: i128,
}
