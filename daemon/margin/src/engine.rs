//! The engine: state, price handling, commands, margin, liquidation.

use crate::error::EngineError;
use crate::fixed::{
    PPM, PRICE_SCALE, QTY_SCALE, QUOTE_ASSET, add, mul_div_ceil, mul_div_floor, ppm_ceil,
    ppm_floor, rescale, round_to_scale, sub, value,
};
use crate::index::{Band, Index, Key};
use crate::options::{OptionInputs, OptionKind, PricingModel};
use crate::types::*;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

mod bands;

/// Milliseconds per year (365 days, Hull's convention) for option time.
pub const YEAR_MS: f64 = 31_536_000_000.0;
/// Longest time a unit holding options goes without a recheck (ms).
pub const MAX_RECHECK_MS: u64 = 3_600_000;
/// Greeks are stored per unit of underlying with 8 decimals.
pub const GREEK_SCALE: i128 = 100_000_000;

/// Last accepted price of a feed (8 decimals).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FeedPrice {
    /// Price.
    pub price: i128,
    /// Confidence half-width.
    pub confidence: i128,
    /// Observation time.
    pub timestamp_ms: u64,
    /// Report round.
    pub round: u64,
}

/// A feed: config, last price, recent prices, guard.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FeedState {
    /// Configuration.
    pub config: FeedConfig,
    /// Last accepted price.
    pub last: Option<FeedPrice>,
    /// Recent prices, oldest first (at most `average_window`).
    pub recent: Vec<i128>,
    /// Jump detected on the last update, if any.
    pub jump: Option<GuardReason>,
    /// Current guard (None = prices are usable).
    pub guard: Option<GuardReason>,
}

/// Greeks (Hull's units, 8 decimals): per contract in a market, or summed
/// over an account's positions on one underlying.
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

/// A market's mark and scenario marks.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mark {
    /// Mark price (option premium for options).
    pub price: i128,
    /// Underlying feed price used.
    pub underlying: i128,
    /// Mark under each portfolio-margin scenario of the feed's grid.
    pub scenarios: Vec<i128>,
    /// Greeks per contract.
    pub greeks: Greeks,
    /// Engine time of the marking.
    pub at_ms: u64,
}

/// A market: config, mark, settlement.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MarketState {
    /// Configuration.
    pub config: MarketConfig,
    /// Stable slot number (order of first configuration).
    pub slot: u32,
    /// Current mark.
    pub mark: Option<Mark>,
    /// Settlement price once settled.
    pub settled: Option<i128>,
    /// A settlement deferral was reported (no repeats).
    pub settlement_deferred: bool,
}

/// The engine's complete state: serialize it to snapshot, compare two with
/// `==`. Indexes are derived from it on load.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    /// Schema version (`SCHEMA_VERSION`).
    pub version: u32,
    /// Engine clock: the latest timestamp seen.
    pub now_ms: u64,
    /// Next event sequence number.
    pub next_seq: u64,
    /// Risk parameters.
    pub risk: RiskParams,
    /// Feeds.
    pub feeds: BTreeMap<String, FeedState>,
    /// Collateral assets.
    pub assets: BTreeMap<String, AssetConfig>,
    /// Markets.
    pub markets: BTreeMap<String, MarketState>,
    /// Accounts.
    pub accounts: BTreeMap<AccountId, Account>,
    /// The venue (counterparty and liquidator side).
    pub venue: Venue,
    /// Insurance fund (money).
    pub insurance_fund: i128,
    /// Trading fees collected (money).
    pub fees: i128,
    /// Units currently in margin call.
    pub margin_calls: BTreeSet<(AccountId, Unit)>,
    /// Units whose liquidation a guard deferred.
    pub deferred: BTreeSet<(AccountId, Unit)>,
}

/// Result of revaluing every unit.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Revaluation {
    /// Units evaluated.
    pub units: u64,
    /// Positions evaluated.
    pub positions: u64,
    /// Σ equity.
    pub equity: i128,
    /// Σ maintenance.
    pub maintenance: i128,
    /// Units with equity below initial.
    pub below_initial: u64,
    /// Units with equity below maintenance (should be only deferred ones).
    pub below_maintenance: u64,
}

/// One unit's view for the API: health, positions, Greeks.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnitView {
    /// Unit.
    pub unit: Unit,
    /// Health.
    pub health: Health,
    /// Greeks per underlying feed.
    pub greeks: BTreeMap<String, Greeks>,
}

/// The margin and liquidation engine.
#[derive(Clone, Debug)]
pub struct Engine {
    s: Snapshot,
    idx: Index,
    out: Vec<EventRecord>,
    pending: BTreeSet<Key>,
    market_by_slot: Vec<String>,
    /// Units examined since creation (a metric; not part of the state).
    examined: u64,
    /// Reference mode for tests: every price report examines every unit.
    exhaustive: bool,
    /// Option values on the band price grid (a cache; not part of the state).
    grid: bands::GridCache,
    /// Bands that fell back to the whole-band bound (a metric).
    fallback_bands: u64,
}

impl Default for Engine {
    fn default() -> Self {
        Self::new(RiskParams::default())
    }
}

fn max_rate_ppm(m: &MarketConfig) -> i128 {
    i128::from(m.max_rate_ppm)
}

/// Bound on one option contract's |delta| in ppm, `D = e^(max(0, -r, -q) T)`
/// with `T` from `from_ms` to expiry, rounded up; `None` when not finite or
/// beyond 1e15 ppm.
fn delta_bound_ppm(
    rate_ppm: i64,
    model: &PricingModel,
    expiry_ms: u64,
    from_ms: u64,
) -> Option<i128> {
    let carry = match model {
        PricingModel::BlackScholes { carry_yield_ppm } => *carry_yield_ppm,
        PricingModel::Black76 => 0,
    };
    let neg = (-rate_ppm).max(-carry).max(0) as f64 / 1e6;
    let years = expiry_ms.saturating_sub(from_ms) as f64 / YEAR_MS;
    let d = crate::detmath::exp(neg * years) * 1e6;
    (d.is_finite() && d < 1e15).then(|| d.ceil() as i128 + 1)
}

/// Bound on `|d(equity - maintenance)/d price|` per unit of size (ppm) of a
/// linear position of `size` at `price`: `d(rate(n) n)/dn = base + 2 growth
/// n / 1M <= 2 cap`, for every notional inside the band (at most 1.5 n).
fn linear_sensitivity_ppm(c: &MarketConfig, size: i128, price: i128) -> Result<i128, EngineError> {
    let n = value(size, price)?.abs();
    let grow = mul_div_ceil(
        n,
        3 * i128::from(c.growth_ppm_per_million),
        1_000_000 * crate::fixed::MONEY_SCALE,
        "sensitivity",
    )?;
    Ok(PPM + (2 * max_rate_ppm(c)).min(i128::from(c.maintenance_ppm) + grow))
}

impl Engine {
    /// An empty engine.
    pub fn new(risk: RiskParams) -> Self {
        let s = Snapshot {
            version: SCHEMA_VERSION,
            now_ms: 0,
            next_seq: 0,
            risk,
            feeds: BTreeMap::new(),
            assets: BTreeMap::new(),
            markets: BTreeMap::new(),
            accounts: BTreeMap::new(),
            venue: Venue::default(),
            insurance_fund: 0,
            fees: 0,
            margin_calls: BTreeSet::new(),
            deferred: BTreeSet::new(),
        };
        Self {
            s,
            idx: Index::default(),
            out: Vec::new(),
            pending: BTreeSet::new(),
            market_by_slot: Vec::new(),
            examined: 0,
            exhaustive: false,
            grid: bands::GridCache::default(),
            fallback_bands: 0,
        }
    }

    /// Restores an engine from a snapshot and rebuilds its indexes.
    pub fn from_snapshot(s: Snapshot) -> Result<Self, EngineError> {
        if s.version != SCHEMA_VERSION {
            return Err(EngineError::SnapshotVersion {
                found: s.version,
                expected: SCHEMA_VERSION,
            });
        }
        let mut e = Engine::new(s.risk.clone());
        e.s = s;
        e.rebuild_index();
        Ok(e)
    }

    /// A copy of the full state.
    pub fn snapshot(&self) -> Snapshot {
        self.s.clone()
    }

    /// Read access to the state.
    pub fn state(&self) -> &Snapshot {
        &self.s
    }

    /// Applies one stored input. On error nothing changed and no event was emitted.
    pub fn apply(&mut self, input: &Input) -> Result<Vec<EventRecord>, EngineError> {
        match input {
            Input::Prices(r) => {
                let prices: Vec<(&str, i128, u8, u128)> = r
                    .prices
                    .iter()
                    .map(|p| (p.feed.as_str(), p.price, p.decimals, p.confidence))
                    .collect();
                self.apply_prices(r.round, r.timestamp_ms, &prices)
            }
            Input::Command { at_ms, command } => self.apply_command(*at_ms, command),
        }
    }

    // ------------------------------------------------------------------
    // Prices
    // ------------------------------------------------------------------

    /// Applies the feeds of one verified signed report: `(feed, price,
    /// decimals, confidence)`. Feeds the engine does not know are ignored (a
    /// report covers many feeds). The whole report is refused, with nothing
    /// changed, if a known feed's price is not positive, out of range, or not
    /// newer than the last one applied.
    pub fn apply_prices<S: AsRef<str>>(
        &mut self,
        round: u64,
        timestamp_ms: u64,
        prices: &[(S, i128, u8, u128)],
    ) -> Result<Vec<EventRecord>, EngineError> {
        // Validate everything first.
        let mut accepted: BTreeMap<String, (FeedPrice, Option<GuardReason>)> = BTreeMap::new();
        for (feed, raw, decimals, conf) in prices {
            let feed = feed.as_ref();
            let Some(fs) = self.s.feeds.get(feed) else {
                continue;
            };
            if accepted.contains_key(feed) {
                return Err(EngineError::DuplicateFeed {
                    feed: feed.to_string(),
                    round,
                });
            }
            if *raw <= 0 {
                return Err(EngineError::NonPositivePrice {
                    feed: feed.to_string(),
                    price: *raw,
                });
            }
            if let Some(last) = &fs.last
                && (round <= last.round || timestamp_ms < last.timestamp_ms)
            {
                return Err(EngineError::OutOfOrderPrice {
                    feed: feed.to_string(),
                    round,
                    last_round: last.round,
                    timestamp_ms,
                    last_timestamp_ms: last.timestamp_ms,
                });
            }
            let price = rescale(*raw, *decimals)?;
            let confidence = rescale(
                i128::try_from(*conf).map_err(|_| crate::fixed::overflow("confidence"))?,
                *decimals,
            )?;
            if price <= 0 {
                return Err(EngineError::NonPositivePrice {
                    feed: feed.to_string(),
                    price: *raw,
                });
            }
            // Jump check against the recent average (before this price joins it).
            let max_jump = fs.config.max_jump_ppm;
            let jump = if fs.recent.is_empty() {
                None
            } else {
                let sum = fs
                    .recent
                    .iter()
                    .try_fold(0i128, |a, p| a.checked_add(*p))
                    .ok_or_else(|| crate::fixed::overflow("average"))?;
                let avg = sum / fs.recent.len() as i128;
                let dev = mul_div_floor((price - avg).abs(), PPM, avg.max(1), "jump deviation")?;
                (dev > i128::from(max_jump)).then_some(GuardReason::Jump {
                    price,
                    average: avg,
                    deviation_ppm: dev,
                    max_ppm: max_jump,
                })
            };
            accepted.insert(
                feed.to_string(),
                (
                    FeedPrice {
                        price,
                        confidence,
                        timestamp_ms,
                        round,
                    },
                    jump,
                ),
            );
        }
        // Validation done: mutate.
        self.out.clear();
        self.s.now_ms = self.s.now_ms.max(timestamp_ms);
        for (feed, (fp, jump)) in &accepted {
            let Some(fs) = self.s.feeds.get_mut(feed) else {
                continue;
            };
            fs.recent.push(fp.price);
            let window = usize::from(fs.config.average_window.max(1));
            if fs.recent.len() > window {
                let drop = fs.recent.len() - window;
                fs.recent.drain(..drop);
            }
            fs.last = Some(fp.clone());
            fs.jump = jump.clone();
        }
        self.refresh_guards();
        for feed in accepted.keys() {
            self.remark_feed(feed);
        }
        self.settle_expired()?;
        for (feed, (fp, _)) in &accepted {
            self.idx.crossed(feed, fp.price, &mut self.pending);
        }
        self.idx.due(self.s.now_ms, &mut self.pending);
        if self.exhaustive {
            self.queue_every_unit();
        }
        self.drain_pending();
        self.prefill_grid(2);
        Ok(std::mem::take(&mut self.out))
    }

    /// Reference mode for tests and audits: when on, every price report
    /// re-examines every unit instead of only those the trigger index lets
    /// through. The index must never make a difference to liquidations,
    /// deferrals, bad debt or deleveraging (a property test compares both
    /// modes event by event); only when informational margin calls are
    /// noticed can differ. Slow: O(units) per report.
    pub fn set_exhaustive_checks(&mut self, on: bool) {
        self.exhaustive = on;
    }

    fn queue_every_unit(&mut self) {
        let ids: Vec<AccountId> = self.s.accounts.keys().copied().collect();
        for id in ids {
            self.queue_account(id);
        }
    }

    fn guard_of(fs: &FeedState, now: u64) -> Option<GuardReason> {
        let Some(last) = &fs.last else {
            return Some(GuardReason::NoPrice);
        };
        let c = &fs.config;
        if now.saturating_sub(last.timestamp_ms) > c.max_staleness_ms {
            return Some(GuardReason::Stale {
                last_ms: last.timestamp_ms,
                now_ms: now,
                max_ms: c.max_staleness_ms,
            });
        }
        let ratio = last.confidence.saturating_mul(PPM) / last.price.max(1);
        if ratio > i128::from(c.max_confidence_ppm) {
            return Some(GuardReason::ConfidenceTooWide {
                ratio_ppm: ratio,
                max_ppm: c.max_confidence_ppm,
            });
        }
        fs.jump.clone()
    }

    /// Re-evaluates every feed's guard at the current clock; emits transitions.
    fn refresh_guards(&mut self) {
        let now = self.s.now_ms;
        let mut cleared = false;
        let mut events = Vec::new();
        for (feed, fs) in self.s.feeds.iter_mut() {
            let g = Self::guard_of(fs, now);
            match (&fs.guard, &g) {
                (None, Some(r)) => events.push(Event::GuardRaised {
                    feed: feed.clone(),
                    reason: r.clone(),
                }),
                (Some(_), None) => {
                    cleared = true;
                    events.push(Event::GuardCleared { feed: feed.clone() });
                }
                _ => {}
            }
            fs.guard = g;
        }
        for e in events {
            self.emit(e);
        }
        if cleared {
            let keys: Vec<(AccountId, Unit)> = self.s.deferred.iter().cloned().collect();
            for (a, u) in keys {
                if let Some(k) = self.key_of(a, &u) {
                    self.pending.insert(k);
                }
            }
            for m in self.s.markets.values_mut() {
                m.settlement_deferred = false;
            }
        }
    }

    fn emit(&mut self, event: Event) {
        let seq = self.s.next_seq;
        self.s.next_seq += 1;
        self.out.push(EventRecord {
            seq,
            at_ms: self.s.now_ms,
            event,
        });
    }

    // ------------------------------------------------------------------
    // Marks
    // ------------------------------------------------------------------

    fn remark_feed(&mut self, feed: &str) {
        let names: Vec<String> = self
            .s
            .markets
            .iter()
            .filter(|(_, m)| m.config.feed == feed && m.settled.is_none())
            .map(|(k, _)| k.clone())
            .collect();
        for name in names {
            let r = self.compute_mark(&name);
            match r {
                Ok(mark) => {
                    if let Some(m) = self.s.markets.get_mut(&name) {
                        m.mark = mark;
                    }
                }
                Err(e) => self.emit(Event::EvaluationFailed {
                    account: 0,
                    unit: Unit::Isolated { market: name },
                    error: e.to_string(),
                }),
            }
        }
    }

    fn compute_mark(&self, market: &str) -> Result<Option<Mark>, EngineError> {
        let ms = self
            .s
            .markets
            .get(market)
            .ok_or_else(|| EngineError::UnknownMarket {
                market: market.to_string(),
            })?;
        let fs = self
            .s
            .feeds
            .get(&ms.config.feed)
            .ok_or_else(|| EngineError::UnknownFeed {
                feed: ms.config.feed.clone(),
            })?;
        let Some(last) = &fs.last else {
            return Ok(None);
        };
        Self::mark_at(market, ms, fs, last.price, self.s.now_ms).map(Some)
    }

    /// A market's mark and scenario marks at underlying price `p` and time
    /// `now`: a pure function, also used to tabulate option values for the
    /// trigger bands.
    fn mark_at(
        market: &str,
        ms: &MarketState,
        fs: &FeedState,
        p: i128,
        now: u64,
    ) -> Result<Mark, EngineError> {
        let scen = fs.config.grid.scenarios();
        let shifted = |m: i32| -> Result<i128, EngineError> {
            mul_div_floor(p, PPM + i128::from(m), PPM, "scenario price")
        };
        match &ms.config.kind {
            MarketKind::Perpetual | MarketKind::Future { .. } => {
                let mut scenarios = Vec::with_capacity(scen.len());
                for s in &scen {
                    scenarios.push(shifted(s.move_ppm)?);
                }
                Ok(Mark {
                    price: p,
                    underlying: p,
                    scenarios,
                    greeks: Greeks {
                        delta: GREEK_SCALE,
                        ..Greeks::default()
                    },
                    at_ms: now,
                })
            }
            MarketKind::Option {
                kind,
                strike,
                expiry_ms,
                model,
                vol,
            } => {
                let years = (*expiry_ms as f64 - now as f64) / YEAR_MS;
                let sigma = match vol {
                    VolSource::Fixed { vol_ppm } => f64::from(*vol_ppm) / 1e6,
                    VolSource::Surface => {
                        let surf = fs.config.vol_surface.as_ref().ok_or_else(|| {
                            EngineError::InvalidConfig {
                                detail: format!(
                                    "market `{market}` uses the vol surface but feed `{}` has none",
                                    fs.config.feed
                                ),
                            }
                        })?;
                        surface_vol(surf, *strike, *expiry_ms, now)
                    }
                };
                let carry = match model {
                    PricingModel::BlackScholes { carry_yield_ppm } => *carry_yield_ppm as f64 / 1e6,
                    PricingModel::Black76 => 0.0,
                };
                let base = OptionInputs {
                    kind: *kind,
                    underlying: p as f64 / PRICE_SCALE as f64,
                    strike: *strike as f64 / PRICE_SCALE as f64,
                    years,
                    vol: sigma,
                    rate: fs.config.rate_ppm as f64 / 1e6,
                    carry,
                };
                let priced = crate::options::price(*model, &base);
                let g = |x: f64, what| round_to_scale(x, GREEK_SCALE, what);
                let greeks = Greeks {
                    delta: g(priced.delta, "delta")?,
                    gamma: g(priced.gamma, "gamma")?,
                    vega: g(priced.vega, "vega")?,
                    theta: g(priced.theta, "theta")?,
                    rho: g(priced.rho, "rho")?,
                };
                let price = round_to_scale(priced.price, PRICE_SCALE, "option premium")?.max(0);
                let mut scenarios = Vec::with_capacity(scen.len());
                for s in &scen {
                    let up = shifted(s.move_ppm)?;
                    let i = OptionInputs {
                        underlying: up as f64 / PRICE_SCALE as f64,
                        vol: sigma * (1.0 + f64::from(s.vol_shock_ppm) / 1e6),
                        ..base
                    };
                    let v = crate::options::price(*model, &i).price;
                    scenarios.push(round_to_scale(v, PRICE_SCALE, "scenario premium")?.max(0));
                }
                Ok(Mark {
                    price,
                    underlying: p,
                    scenarios,
                    greeks,
                    at_ms: now,
                })
            }
        }
    }

    // ------------------------------------------------------------------
    // Health
    // ------------------------------------------------------------------

    fn mark_of(&self, market: &str) -> Result<(&MarketState, &Mark), EngineError> {
        let ms = self
            .s
            .markets
            .get(market)
            .ok_or_else(|| EngineError::UnknownMarket {
                market: market.to_string(),
            })?;
        let mark = ms.mark.as_ref().ok_or_else(|| EngineError::NoPrice {
            market: market.to_string(),
            feed: ms.config.feed.clone(),
        })?;
        Ok((ms, mark))
    }

    fn collateral_value(&self, collateral: &BTreeMap<String, i128>) -> Result<i128, EngineError> {
        let mut total = 0i128;
        for (asset, qty) in collateral {
            let Some(cfg) = self.s.assets.get(asset) else {
                continue;
            };
            let Some(last) = self.s.feeds.get(&cfg.feed).and_then(|f| f.last.as_ref()) else {
                continue;
            };
            let v = value(*qty, last.price)?;
            let v = if v > 0 {
                ppm_floor(v, PPM - i128::from(cfg.haircut_ppm))?
            } else {
                v
            };
            total = add(total, v, "collateral value")?;
        }
        Ok(total)
    }

    /// Positions of a unit.
    fn unit_positions<'a>(acct: &'a Account, unit: &Unit) -> Vec<(&'a String, &'a Position)> {
        match unit {
            Unit::Cross => acct
                .positions
                .iter()
                .filter(|(_, p)| p.isolated.is_none())
                .collect(),
            Unit::Isolated { market } => acct
                .positions
                .get_key_value(market)
                .filter(|(_, p)| p.isolated.is_some())
                .into_iter()
                .collect(),
        }
    }

    /// Equity and requirements of one unit of `acct` at the current marks.
    pub fn health_of(&self, acct: &Account, unit: &Unit) -> Result<Health, EngineError> {
        let positions = Self::unit_positions(acct, unit);
        let mut equity = match unit {
            Unit::Cross => add(
                acct.cash,
                self.collateral_value(&acct.collateral)?,
                "equity",
            )?,
            Unit::Isolated { .. } => positions.first().and_then(|(_, p)| p.isolated).unwrap_or(0),
        };
        let mut notional = 0i128;
        let mut has_option = false;
        for (m, p) in &positions {
            let (ms, mark) = self.mark_of(m)?;
            let v = value(p.size, mark.price)?;
            equity = add(equity, add(p.quote, v, "position value")?, "equity")?;
            notional = add(notional, v.abs(), "notional")?;
            has_option |= matches!(ms.config.kind, MarketKind::Option { .. });
        }
        if !has_option {
            let (mut initial, mut maintenance) = (0i128, 0i128);
            for (m, p) in &positions {
                let (ms, mark) = self.mark_of(m)?;
                let n = value(p.size, mark.price)?.abs();
                let c = &ms.config;
                let growth = mul_div_floor(
                    n,
                    i128::from(c.growth_ppm_per_million),
                    1_000_000 * crate::fixed::MONEY_SCALE,
                    "requirement growth",
                )?;
                let im_rate = (i128::from(c.initial_ppm) + growth).min(max_rate_ppm(c));
                let mm_rate = (i128::from(c.maintenance_ppm) + growth).min(max_rate_ppm(c));
                initial = add(initial, ppm_ceil(n, im_rate)?, "initial")?;
                maintenance = add(maintenance, ppm_ceil(n, mm_rate)?, "maintenance")?;
            }
            return Ok(Health {
                equity,
                initial,
                maintenance,
                notional,
                portfolio: false,
            });
        }
        // Portfolio margin: worst weighted scenario loss per underlying.
        let mut losses: BTreeMap<&str, Vec<i128>> = BTreeMap::new();
        for (m, p) in &positions {
            let (ms, mark) = self.mark_of(m)?;
            let v0 = value(p.size, mark.price)?;
            let l = losses
                .entry(ms.config.feed.as_str())
                .or_insert_with(|| vec![0; mark.scenarios.len()]);
            if l.len() != mark.scenarios.len() {
                return Err(EngineError::InvalidConfig {
                    detail: format!("scenario count mismatch in `{m}`"),
                });
            }
            for (i, sp) in mark.scenarios.iter().enumerate() {
                l[i] = add(
                    l[i],
                    sub(v0, value(p.size, *sp)?, "scenario loss")?,
                    "scenario loss",
                )?;
            }
        }
        let mut maintenance = 0i128;
        for (feed, l) in losses {
            let fs = self
                .s
                .feeds
                .get(feed)
                .ok_or_else(|| EngineError::UnknownFeed {
                    feed: feed.to_string(),
                })?;
            let scen = fs.config.grid.scenarios();
            let mut worst = 0i128;
            for (i, loss) in l.iter().enumerate() {
                let w = scen.get(i).map(|s| i128::from(s.weight_ppm)).unwrap_or(PPM);
                worst = worst.max(ppm_ceil(*loss, w)?);
            }
            maintenance = add(maintenance, worst, "maintenance")?;
        }
        let initial = ppm_ceil(
            maintenance,
            i128::from(self.s.risk.portfolio_initial_ratio_ppm),
        )?;
        Ok(Health {
            equity,
            initial,
            maintenance,
            notional,
            portfolio: true,
        })
    }

    /// Feeds a unit depends on (position underlyings, and collateral for cross).
    fn unit_feeds(&self, acct: &Account, unit: &Unit) -> BTreeSet<String> {
        let mut f = BTreeSet::new();
        for (m, _) in Self::unit_positions(acct, unit) {
            if let Some(ms) = self.s.markets.get(m) {
                f.insert(ms.config.feed.clone());
            }
        }
        if *unit == Unit::Cross {
            for (a, q) in &acct.collateral {
                if *q != 0
                    && let Some(c) = self.s.assets.get(a)
                {
                    f.insert(c.feed.clone());
                }
            }
        }
        f
    }

    fn first_guard(&self, feeds: &BTreeSet<String>) -> Option<(String, GuardReason)> {
        for f in feeds {
            if let Some(g) = self.s.feeds.get(f).and_then(|fs| fs.guard.clone()) {
                return Some((f.clone(), g));
            }
        }
        None
    }

    // ------------------------------------------------------------------
    // Index
    // ------------------------------------------------------------------

    fn key_of(&self, account: AccountId, unit: &Unit) -> Option<Key> {
        match unit {
            Unit::Cross => Some(Key { account, slot: 0 }),
            Unit::Isolated { market } => self.s.markets.get(market).map(|m| Key {
                account,
                slot: m.slot + 1,
            }),
        }
    }

    fn unit_of(&self, key: Key) -> Option<Unit> {
        if key.slot == 0 {
            Some(Unit::Cross)
        } else {
            self.market_by_slot
                .get(key.slot as usize - 1)
                .map(|m| Unit::Isolated { market: m.clone() })
        }
    }

    fn rebuild_index(&mut self) {
        self.idx = Index::default();
        let mut slots: Vec<(u32, String)> = self
            .s
            .markets
            .iter()
            .map(|(k, m)| (m.slot, k.clone()))
            .collect();
        slots.sort();
        self.market_by_slot = slots.into_iter().map(|(_, k)| k).collect();
        let feeds: Vec<String> = self.s.feeds.keys().cloned().collect();
        for f in feeds {
            self.idx.feed_slot(&f);
        }
        let ids: Vec<AccountId> = self.s.accounts.keys().copied().collect();
        for id in ids {
            self.reindex_account(id);
        }
    }

    fn reindex_account(&mut self, id: AccountId) {
        let Some(acct) = self.s.accounts.get(&id) else {
            return;
        };
        let mut units = vec![Unit::Cross];
        for (m, p) in &acct.positions {
            self.idx.add_holder(m, id);
            if p.isolated.is_some() {
                units.push(Unit::Isolated { market: m.clone() });
            }
        }
        for u in units {
            if let Some(k) = self.key_of(id, &u) {
                let acct = &self.s.accounts[&id];
                match self.health_of(acct, &u) {
                    Ok(h) => self.reindex(k, &u, h),
                    Err(_) => self.idx.remove(k),
                }
            }
        }
    }

    /// Recomputes a unit's trigger bands from its health.
    fn reindex(&mut self, key: Key, unit: &Unit, h: Health) {
        let mut grid = std::mem::take(&mut self.grid);
        let exact = self.exact_bands(&mut grid, key, unit, &h);
        self.grid = grid;
        let bands = match exact {
            Ok(Some(b)) => Ok(b),
            _ => {
                self.fallback_bands += 1;
                self.bands_for(key.account, unit, h)
            }
        };
        match bands {
            Ok((bands, recheck)) => {
                let bands = bands
                    .into_iter()
                    .map(|(f, lo, hi)| Band {
                        feed: self.idx.feed_slot(&f),
                        lo,
                        hi,
                    })
                    .collect();
                self.idx.insert(key, bands, recheck);
            }
            Err(_) => {
                // Cannot bound it: examine it on every tick of its feeds.
                self.idx.remove(key);
                let feeds = self
                    .s
                    .accounts
                    .get(&key.account)
                    .map(|a| self.unit_feeds(a, unit))
                    .unwrap_or_default();
                let bands: Vec<Band> = feeds
                    .iter()
                    .filter_map(|f| {
                        let p = self.s.feeds.get(f)?.last.as_ref()?.price;
                        Some((f.clone(), p))
                    })
                    .collect::<Vec<_>>()
                    .into_iter()
                    .map(|(f, p)| Band {
                        feed: self.idx.feed_slot(&f),
                        lo: p,
                        hi: p,
                    })
                    .collect();
                self.idx.insert(key, bands, None);
            }
        }
    }

    #[allow(clippy::type_complexity)]
    fn bands_for(
        &self,
        account: AccountId,
        unit: &Unit,
        h: Health,
    ) -> Result<(Vec<(String, i128, i128)>, Option<u64>), EngineError> {
        let Some(acct) = self.s.accounts.get(&account) else {
            return Ok((vec![], None));
        };
        let positions = Self::unit_positions(acct, unit);
        // Nothing to liquidate and nothing owed: no price can matter.
        if positions.is_empty() && (acct.cash >= 0 || *unit != Unit::Cross) {
            return Ok((vec![], None));
        }
        // Sensitivity per feed: qty-weighted bound on |dHealth/dPrice|.
        let mut sens: BTreeMap<String, i128> = BTreeMap::new();
        let mut theta_money = 0i128;
        let mut count = 0i128;
        for (m, p) in &positions {
            let (ms, mark) = self.mark_of(m)?;
            // k bounds |d(equity - maintenance)/d price| per unit of size (ppm).
            let k = if h.portfolio {
                let fc = self.s.feeds.get(&ms.config.feed).map(|f| &f.config);
                let grid_move = fc.map_or(PPM, |c| c.grid.max_move_ppm());
                match &ms.config.kind {
                    MarketKind::Option {
                        expiry_ms, model, ..
                    } => {
                        // |delta| <= D = e^(max(0, -r, -q) T). Deltas of one
                        // option have one sign, so a scenario loss moves by
                        // |delta(p) - (1+m) delta((1+m)p)| <= D (1 + m).
                        let rate = fc.map_or(0, |c| c.rate_ppm);
                        let d_ppm = delta_bound_ppm(rate, model, *expiry_ms, self.s.now_ms)
                            .unwrap_or(i128::MAX / 4);
                        mul_div_ceil(d_ppm, 2 * PPM + grid_move, PPM, "sensitivity")?
                    }
                    // Equity moves by 1, each scenario loss by |m|.
                    _ => PPM + grid_move,
                }
            } else {
                linear_sensitivity_ppm(&ms.config, p.size, mark.price)?
            };
            let s = mul_div_ceil(p.size.abs(), k, PPM, "sensitivity")?;
            let e = sens.entry(ms.config.feed.clone()).or_insert(0);
            *e = add(*e, s, "sensitivity")?;
            if matches!(ms.config.kind, MarketKind::Option { .. }) {
                theta_money = add(
                    theta_money,
                    value(p.size, mark.greeks.theta)?.abs(),
                    "theta",
                )?;
            }
            count += 1;
        }
        if *unit == Unit::Cross {
            for (a, q) in &acct.collateral {
                if let Some(c) = self.s.assets.get(a) {
                    let s = ppm_ceil(q.abs(), PPM - i128::from(c.haircut_ppm))?;
                    let e = sens.entry(c.feed.clone()).or_insert(0);
                    *e = add(*e, s, "sensitivity")?;
                    count += 1;
                }
            }
        }
        if count == 0 {
            return Ok((vec![], None));
        }
        // Distance to maintenance in either direction: crossing it down
        // liquidates, crossing it up ends a deferral. Initial margin is not
        // tracked by the bands (it would re-examine every unit near its
        // initial requirement on every tick, 4x the work in the benchmark):
        // margin calls are flagged whenever a unit is examined.
        let dist = h.equity.saturating_sub(h.maintenance).abs();
        // Options decay between price ticks. Reserve twice the current theta
        // over a horizon in which it eats at most half the distance (between
        // one recheck period and MAX_RECHECK_MS), and recheck at its end.
        let period = self.s.risk.option_recheck_ms.max(1);
        let (recheck, reserve) = if theta_money > 0 {
            let horizon = mul_div_floor(
                dist / 2,
                YEAR_MS as i128,
                2 * theta_money,
                "recheck horizon",
            )?
            .clamp(i128::from(period), i128::from(MAX_RECHECK_MS.max(period)));
            let horizon = u64::try_from(horizon).unwrap_or(period);
            // Not aligned to a grid: units that were examined together
            // spread their rechecks instead of all coming due on one tick.
            // (Snapshots carry the index, so a restore keeps these times.)
            let at = self.s.now_ms.saturating_add(horizon);
            let span = i128::from(at.saturating_sub(self.s.now_ms));
            (
                Some(at),
                mul_div_ceil(2 * theta_money, span, YEAR_MS as i128, "theta reserve")?,
            )
        } else {
            (None, 0)
        };
        let headroom = dist.saturating_sub(4 * count + 8).saturating_sub(reserve);
        let mut exposure = 0i128;
        let mut prices = Vec::new();
        for (f, s) in &sens {
            let Some(last) = self.s.feeds.get(f).and_then(|x| x.last.as_ref()) else {
                continue;
            };
            exposure = add(exposure, value(*s, last.price)?, "exposure")?;
            prices.push((f.clone(), last.price));
        }
        let x_ppm = if headroom <= 0 {
            0
        } else if exposure == 0 {
            PPM / 2
        } else {
            mul_div_floor(headroom, PPM, exposure, "band")?.min(PPM / 2)
        };
        let bands = prices
            .into_iter()
            .map(|(f, p)| {
                let d = p.saturating_mul(x_ppm) / PPM;
                (f, p - d, p + d)
            })
            .collect();
        Ok((bands, recheck))
    }

    fn drain_pending(&mut self) {
        // Each examination may liquidate and queue deleveraged units; every
        // step closes size or removes a unit, so the loop ends.
        while let Some(k) = self.pending.pop_first() {
            self.examine(k);
        }
    }

    /// Re-evaluates one unit: liquidate, defer, or flag a margin call; reindex.
    fn examine(&mut self, key: Key) {
        self.examined += 1;
        let Some(unit) = self.unit_of(key) else {
            return;
        };
        let Some(acct) = self.s.accounts.get(&key.account) else {
            self.idx.remove(key);
            return;
        };
        if let Unit::Isolated { market } = &unit
            && acct
                .positions
                .get(market)
                .is_none_or(|p| p.isolated.is_none())
        {
            self.idx.remove(key);
            return;
        }
        let h = match self.health_of(acct, &unit) {
            Ok(h) => h,
            Err(e) => {
                self.emit(Event::EvaluationFailed {
                    account: key.account,
                    unit,
                    error: e.to_string(),
                });
                self.idx.remove(key);
                return;
            }
        };
        let has_positions = !Self::unit_positions(acct, &unit).is_empty();
        let id = (key.account, unit.clone());
        if h.equity < h.maintenance || h.equity < 0 {
            let feeds = self.unit_feeds(acct, &unit);
            if let Some((feed, reason)) = self.first_guard(&feeds) {
                if self.s.deferred.insert(id.clone()) {
                    self.emit(Event::LiquidationDeferred {
                        account: key.account,
                        unit: unit.clone(),
                        feed,
                        reason,
                        health: h,
                    });
                }
                self.reindex(key, &unit, h);
                return;
            }
            self.s.deferred.remove(&id);
            if let Err(e) = self.liquidate(key.account, &unit, h) {
                self.emit(Event::EvaluationFailed {
                    account: key.account,
                    unit: unit.clone(),
                    error: e.to_string(),
                });
                return;
            }
            self.s.margin_calls.remove(&id);
            // Every unit of the account may have moved (an isolated pool
            // returns to cash): examine them all again.
            self.queue_account(key.account);
            return;
        }
        self.s.deferred.remove(&id);
        if has_positions && h.equity < h.initial {
            if self.s.margin_calls.insert(id.clone()) {
                self.emit(Event::MarginCall {
                    account: key.account,
                    unit: unit.clone(),
                    health: h,
                });
            }
        } else if self.s.margin_calls.remove(&id) {
            self.emit(Event::MarginCallCleared {
                account: key.account,
                unit: unit.clone(),
                health: h,
            });
        }
        self.reindex(key, &unit, h);
    }

    // ------------------------------------------------------------------
    // Fills
    // ------------------------------------------------------------------

    /// Buys `d` (signed) at `price` into `pos`; returns (money paid v, realized PnL).
    /// The counterparty gets exactly `-d` and `+v`.
    fn fill(pos: &mut Position, d: i128, price: i128) -> Result<(i128, i128), EngineError> {
        let (s0, q0) = (pos.size, pos.quote);
        let v = value(d, price)?;
        let s1 = add(s0, d, "position size")?;
        let q1 = sub(q0, v, "position quote")?;
        let (quote, realized) = if s1 == 0 {
            (0, q1)
        } else if s0 != 0 && s1.signum() == s0.signum() && s1.abs() < s0.abs() {
            let basis = crate::fixed::mul(q0, s1, "cost basis")? / s0;
            (basis, sub(q1, basis, "realized")?)
        } else if s0 != 0 && s1.signum() != s0.signum() {
            let basis = -value(s1, price)?;
            (basis, sub(q1, basis, "realized")?)
        } else {
            (q1, 0)
        };
        pos.size = s1;
        pos.quote = quote;
        Ok((v, realized))
    }

    fn venue_fill(&mut self, market: &str, d: i128, v: i128) -> Result<(), EngineError> {
        let vp = self
            .s
            .venue
            .positions
            .entry(market.to_string())
            .or_default();
        vp.size = sub(vp.size, d, "venue size")?;
        vp.quote = add(vp.quote, v, "venue quote")?;
        if vp.size == 0 {
            let q = vp.quote;
            self.s.venue.positions.remove(market);
            self.s.venue.cash = add(self.s.venue.cash, q, "venue cash")?;
        }
        Ok(())
    }

    /// Credits `amount` to the unit's base (cash or isolated pool).
    fn credit(acct: &mut Account, unit: &Unit, amount: i128) -> Result<(), EngineError> {
        match unit {
            Unit::Cross => acct.cash = add(acct.cash, amount, "cash")?,
            Unit::Isolated { market } => {
                let p =
                    acct.positions
                        .get_mut(market)
                        .ok_or_else(|| EngineError::InvalidConfig {
                            detail: format!("isolated `{market}` missing"),
                        })?;
                p.isolated = Some(add(p.isolated.unwrap_or(0), amount, "isolated pool")?);
            }
        }
        Ok(())
    }

    /// The unit's base balance (cash, or the isolated pool).
    fn base_of(acct: &Account, unit: &Unit) -> i128 {
        match unit {
            Unit::Cross => acct.cash,
            Unit::Isolated { market } => acct
                .positions
                .get(market)
                .and_then(|p| p.isolated)
                .unwrap_or(0),
        }
    }

    /// Drops empty positions, returning an isolated pool (and any leftover
    /// quote) to cash; keeps the holder index in step.
    fn tidy(&mut self, account: AccountId, acct: &mut Account) -> Result<(), EngineError> {
        let empty: Vec<String> = acct
            .positions
            .iter()
            .filter(|(_, p)| p.size == 0)
            .map(|(m, _)| m.clone())
            .collect();
        for m in empty {
            if let Some(p) = acct.positions.remove(&m) {
                acct.cash = add(
                    acct.cash,
                    add(p.isolated.unwrap_or(0), p.quote, "pool")?,
                    "cash",
                )?;
            }
            self.idx.remove_holder(&m, account);
            if let Some(k) = self.key_of(account, &Unit::Isolated { market: m.clone() }) {
                self.idx.remove(k);
            }
        }
        for m in acct.positions.keys() {
            self.idx.add_holder(m, account);
        }
        Ok(())
    }

    // ------------------------------------------------------------------
    // Liquidation
    // ------------------------------------------------------------------

    fn liquidate(
        &mut self,
        account: AccountId,
        unit: &Unit,
        before: Health,
    ) -> Result<(), EngineError> {
        let acct0 = self
            .s
            .accounts
            .get(&account)
            .cloned()
            .ok_or(EngineError::UnknownAccount { account })?;
        let positions: Vec<(String, i128)> = Self::unit_positions(&acct0, unit)
            .into_iter()
            .map(|(m, p)| (m.clone(), p.size))
            .collect();
        let buffer = i128::from(self.s.risk.liquidation_buffer_ppm);
        // Partial: the smallest configured fraction that restores health with a buffer.
        if before.equity > 0 && !positions.is_empty() {
            let steps = self.s.risk.partial_steps_ppm.clone();
            for step in steps {
                let mut a = acct0.clone();
                let mut slices = Vec::new();
                let mut penalty = 0i128;
                let mut to_liq = 0i128;
                for (m, size) in &positions {
                    let c = crate::fixed::mul(*size, i128::from(step), "partial size")? / PPM;
                    if c == 0 {
                        continue;
                    }
                    let (ms, mark) = self.mark_of(m)?;
                    let price = mark.price;
                    let pen = ppm_ceil(
                        value(c, price)?.abs(),
                        i128::from(ms.config.liquidation_penalty_ppm),
                    )?;
                    to_liq = add(
                        to_liq,
                        ppm_floor(pen, i128::from(ms.config.liquidator_share_ppm))?,
                        "penalty",
                    )?;
                    penalty = add(penalty, pen, "penalty")?;
                    let pos = a
                        .positions
                        .get_mut(m)
                        .ok_or_else(|| EngineError::NoPosition {
                            account,
                            market: m.clone(),
                        })?;
                    let (v, realized) = Self::fill(pos, -c, price)?;
                    Self::credit(&mut a, unit, realized)?;
                    slices.push(Slice {
                        market: m.clone(),
                        size: -c,
                        paid: v,
                        price,
                        realized,
                    });
                }
                if slices.is_empty() {
                    continue;
                }
                Self::credit(&mut a, unit, -penalty)?;
                let after = self.health_of(&a, unit)?;
                let need = add(
                    after.maintenance,
                    ppm_ceil(after.maintenance, buffer)?,
                    "buffer",
                )?;
                if after.equity >= need && after.equity > 0 && after.equity >= after.maintenance {
                    let closed = self.commit_fills(account, a, &slices, FillReason::Liquidation)?;
                    self.pay_penalty(account, penalty, to_liq)?;
                    self.emit(Event::Liquidated {
                        account,
                        unit: unit.clone(),
                        kind: LiquidationKind::Partial { fraction_ppm: step },
                        before,
                        after,
                        closed,
                        penalty,
                        to_liquidator: to_liq,
                        to_insurance: penalty - to_liq,
                        note: format!(
                            "closing {step} ppm restores equity {} >= maintenance {} plus {buffer} ppm buffer",
                            after.equity, after.maintenance
                        ),
                    });
                    return Ok(());
                }
            }
        }
        // Full: close everything at mark.
        let mut a = acct0.clone();
        let mut slices = Vec::new();
        let mut raw_pen = 0i128;
        let mut raw_liq = 0i128;
        for (m, size) in &positions {
            let (ms, mark) = self.mark_of(m)?;
            let price = mark.price;
            let pen = ppm_ceil(
                value(*size, price)?.abs(),
                i128::from(ms.config.liquidation_penalty_ppm),
            )?;
            raw_liq = add(
                raw_liq,
                ppm_floor(pen, i128::from(ms.config.liquidator_share_ppm))?,
                "penalty",
            )?;
            raw_pen = add(raw_pen, pen, "penalty")?;
            let pos = a
                .positions
                .get_mut(m)
                .ok_or_else(|| EngineError::NoPosition {
                    account,
                    market: m.clone(),
                })?;
            let (v, realized) = Self::fill(pos, -*size, price)?;
            Self::credit(&mut a, unit, realized)?;
            slices.push(Slice {
                market: m.clone(),
                size: -*size,
                paid: v,
                price,
                realized,
            });
        }
        // The penalty never creates debt: it takes at most what is left.
        let equity_closed = self.health_of(&a, unit)?.equity;
        let penalty = raw_pen.min(equity_closed.max(0));
        let to_liq = if raw_pen > 0 {
            mul_div_floor(penalty, raw_liq, raw_pen, "penalty split")?
        } else {
            0
        };
        Self::credit(&mut a, unit, -penalty)?;
        let note = if before.equity <= 0 {
            "equity not positive: nothing to keep, closed in full".to_string()
        } else if positions.is_empty() {
            "negative balance without positions: collateral seized".to_string()
        } else {
            format!(
                "no partial step of {:?} ppm restores maintenance plus {buffer} ppm buffer: closed in full",
                self.s.risk.partial_steps_ppm
            )
        };
        // Commit the fills but keep emptied positions until the deficit is
        // covered: an isolated pool must not leak its debt into cash.
        let closed = self.commit_fills_keep(account, &slices, FillReason::Liquidation)?;
        self.pay_penalty(account, penalty, to_liq)?;
        // Bankruptcy of the cross pool: seize collateral at the oracle price.
        let mut seized = Vec::new();
        if *unit == Unit::Cross && Self::base_of(&a, unit) < 0 {
            for (asset, qty) in std::mem::take(&mut a.collateral) {
                if qty == 0 {
                    continue;
                }
                let price = self
                    .s
                    .assets
                    .get(&asset)
                    .and_then(|c| self.s.feeds.get(&c.feed))
                    .and_then(|f| f.last.as_ref())
                    .map(|l| l.price)
                    .unwrap_or(0);
                let v = value(qty, price)?;
                a.cash = add(a.cash, v, "cash")?;
                seized.push((asset, qty, price, v));
            }
        }
        for (asset, qty, _, v) in &seized {
            let e = self.s.venue.collateral.entry(asset.clone()).or_insert(0);
            *e = add(*e, *qty, "venue collateral")?;
            self.s.venue.cash = sub(self.s.venue.cash, *v, "venue cash")?;
        }
        let deficit = (-Self::base_of(&a, unit)).max(0);
        self.s.accounts.insert(account, a);
        for (asset, qty, price, v) in seized {
            self.emit(Event::CollateralSeized {
                account,
                asset,
                qty,
                price,
                value: v,
            });
        }
        let after_close = self
            .s
            .accounts
            .get(&account)
            .map(|a| self.health_of(a, unit))
            .transpose()?
            .unwrap_or_default();
        self.emit(Event::Liquidated {
            account,
            unit: unit.clone(),
            kind: LiquidationKind::Full,
            before,
            after: after_close,
            closed,
            penalty,
            to_liquidator: to_liq,
            to_insurance: penalty - to_liq,
            note,
        });
        if deficit > 0 {
            let bankrupt_sides: Vec<(String, i128)> = positions.clone();
            self.cover_deficit(account, unit, deficit, &bankrupt_sides)?;
        }
        let mut a = self
            .s
            .accounts
            .remove(&account)
            .ok_or(EngineError::UnknownAccount { account })?;
        self.tidy(account, &mut a)?;
        self.s.accounts.insert(account, a);
        Ok(())
    }

    /// Applies slices to the venue, installs the account, emits fills.
    fn commit_fills(
        &mut self,
        account: AccountId,
        mut a: Account,
        slices: &[Slice],
        reason: FillReason,
    ) -> Result<Vec<ClosedSlice>, EngineError> {
        let closed = self.commit_fills_keep(account, slices, reason)?;
        self.tidy(account, &mut a)?;
        self.s.accounts.insert(account, a);
        Ok(closed)
    }

    fn commit_fills_keep(
        &mut self,
        account: AccountId,
        slices: &[Slice],
        reason: FillReason,
    ) -> Result<Vec<ClosedSlice>, EngineError> {
        let mut closed = Vec::with_capacity(slices.len());
        for sl in slices {
            self.venue_fill(&sl.market, sl.size, sl.paid)?;
            self.emit(Event::Filled {
                account,
                market: sl.market.clone(),
                size: sl.size,
                price: sl.price,
                fee: 0,
                realized: sl.realized,
                reason,
            });
            closed.push(ClosedSlice {
                market: sl.market.clone(),
                size: -sl.size,
                price: sl.price,
            });
        }
        Ok(closed)
    }

    /// Pays an already-debited penalty out to the liquidator side and the fund.
    fn pay_penalty(
        &mut self,
        account: AccountId,
        penalty: i128,
        to_liq: i128,
    ) -> Result<(), EngineError> {
        self.s.venue.cash = add(self.s.venue.cash, to_liq, "venue cash")?;
        let to_fund = sub(penalty, to_liq, "penalty")?;
        if to_fund != 0 {
            self.s.insurance_fund = add(self.s.insurance_fund, to_fund, "insurance fund")?;
            self.emit(Event::InsuranceFund {
                delta: to_fund,
                balance: self.s.insurance_fund,
                reason: InsuranceReason::Penalty { account },
            });
        }
        Ok(())
    }

    /// Covers a bankrupt unit's deficit: insurance fund, then auto-deleveraging
    /// of opposing profitable positions, then the venue.
    fn cover_deficit(
        &mut self,
        account: AccountId,
        unit: &Unit,
        deficit: i128,
        bankrupt: &[(String, i128)],
    ) -> Result<(), EngineError> {
        let mut left = deficit;
        let from_insurance = left.min(self.s.insurance_fund.max(0));
        if from_insurance > 0 {
            self.s.insurance_fund -= from_insurance;
            left -= from_insurance;
            self.credit_unit(account, unit, from_insurance)?;
            self.emit(Event::InsuranceFund {
                delta: -from_insurance,
                balance: self.s.insurance_fund,
                reason: InsuranceReason::BadDebt { account },
            });
        }
        let mut from_deleveraging = 0i128;
        if left > 0 {
            // Candidates: positions opposite to what the bankrupt held, in
            // profit at mark, ranked by profit ratio × leverage.
            let mut cands: Vec<(i128, AccountId, String, Unit, i128)> = Vec::new();
            for (m, size) in bankrupt {
                let Some(holders) = self.idx.holders.get(m) else {
                    continue;
                };
                let Ok((_, mark)) = self.mark_of(m) else {
                    continue;
                };
                for &h in holders {
                    if h == account {
                        continue;
                    }
                    let Some(acct) = self.s.accounts.get(&h) else {
                        continue;
                    };
                    let Some(p) = acct.positions.get(m) else {
                        continue;
                    };
                    if p.size == 0 || p.size.signum() == size.signum() {
                        continue;
                    }
                    let pnl = add(p.quote, value(p.size, mark.price)?, "pnl")?;
                    if pnl <= 0 {
                        continue;
                    }
                    let u = if p.isolated.is_some() {
                        Unit::Isolated { market: m.clone() }
                    } else {
                        Unit::Cross
                    };
                    let hh = self.health_of(acct, &u)?;
                    let cost = p.quote.abs().max(1);
                    let ratio = mul_div_floor(pnl, PPM, cost, "adl ratio")?;
                    let lev = mul_div_floor(hh.notional, PPM, hh.equity.max(1), "adl leverage")?;
                    let score = mul_div_floor(ratio, lev, PPM, "adl score")?;
                    cands.push((score, h, m.clone(), u, pnl));
                }
            }
            // Highest score first; ties by account then market (deterministic).
            cands.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2)));
            let mut rank = 0u32;
            for (score, h, m, u, pnl) in cands {
                if left == 0 {
                    break;
                }
                let (_, mark) = self.mark_of(&m)?;
                let price = mark.price;
                let mut acct = self
                    .s
                    .accounts
                    .get(&h)
                    .cloned()
                    .ok_or(EngineError::UnknownAccount { account: h })?;
                let Some(pos) = acct.positions.get_mut(&m) else {
                    continue;
                };
                let held = pos.size;
                // Close just enough of the position for its profit to cover what is left.
                let want = left.min(pnl);
                let c_abs = mul_div_ceil(held.abs(), want, pnl, "adl size")?.min(held.abs());
                let c = c_abs * held.signum();
                let charge = want
                    .min(mul_div_floor(pnl, c_abs, held.abs(), "adl charge")?)
                    .max(0);
                let (paid, realized) = Self::fill(pos, -c, price)?;
                Self::credit(&mut acct, &u, realized)?;
                Self::credit(&mut acct, &u, -charge)?;
                self.venue_fill(&m, -c, paid)?;
                rank += 1;
                self.emit(Event::Filled {
                    account: h,
                    market: m.clone(),
                    size: -c,
                    price,
                    fee: 0,
                    realized,
                    reason: FillReason::AutoDeleverage,
                });
                self.emit(Event::AutoDeleveraged {
                    account: h,
                    unit: u.clone(),
                    market: m.clone(),
                    size: -c,
                    price,
                    charge,
                    rank,
                    score,
                    bankrupt: account,
                });
                self.tidy(h, &mut acct)?;
                self.s.accounts.insert(h, acct);
                self.credit_unit(account, unit, charge)?;
                left -= charge;
                from_deleveraging += charge;
                // Its equity fell: look at it again.
                for k in [self.key_of(h, &Unit::Cross), self.key_of(h, &u)]
                    .into_iter()
                    .flatten()
                {
                    self.pending.insert(k);
                }
            }
        }
        let from_venue = left;
        if from_venue > 0 {
            self.s.venue.cash = sub(self.s.venue.cash, from_venue, "venue cash")?;
            self.credit_unit(account, unit, from_venue)?;
        }
        self.emit(Event::BadDebt {
            account,
            unit: unit.clone(),
            deficit,
            from_insurance,
            from_deleveraging,
            from_venue,
        });
        Ok(())
    }

    fn credit_unit(
        &mut self,
        account: AccountId,
        unit: &Unit,
        amount: i128,
    ) -> Result<(), EngineError> {
        let a = self
            .s
            .accounts
            .get_mut(&account)
            .ok_or(EngineError::UnknownAccount { account })?;
        Self::credit(a, unit, amount)
    }
}

/// One fill of a liquidation or deleveraging, before it is committed.
struct Slice {
    market: String,
    size: i128,
    paid: i128,
    price: i128,
    realized: i128,
}

/// Implied vol from a surface: linear in strike within a slice (flat
/// outside its strikes), linear in total variance between expiries (flat
/// vol outside them).
pub fn surface_vol(surf: &VolSurface, strike: i128, expiry_ms: u64, now_ms: u64) -> f64 {
    fn smile(s: &VolSlice, strike: i128) -> f64 {
        let pts = &s.points;
        let Some(first) = pts.first() else { return 0.0 };
        if strike <= first.strike {
            return f64::from(first.vol_ppm) / 1e6;
        }
        for w in pts.windows(2) {
            let (a, b) = (&w[0], &w[1]);
            if strike <= b.strike {
                let span = (b.strike - a.strike) as f64;
                let t = if span > 0.0 {
                    (strike - a.strike) as f64 / span
                } else {
                    1.0
                };
                return (f64::from(a.vol_ppm) + t * (f64::from(b.vol_ppm) - f64::from(a.vol_ppm)))
                    / 1e6;
            }
        }
        pts.last()
            .map(|p| f64::from(p.vol_ppm) / 1e6)
            .unwrap_or(0.0)
    }
    let slices = &surf.slices;
    let Some(first) = slices.first() else {
        return 0.0;
    };
    if expiry_ms <= first.expiry_ms {
        return smile(first, strike);
    }
    for w in slices.windows(2) {
        let (a, b) = (&w[0], &w[1]);
        if expiry_ms <= b.expiry_ms {
            let ta = (a.expiry_ms.saturating_sub(now_ms)) as f64;
            let tb = (b.expiry_ms.saturating_sub(now_ms)) as f64;
            let t = (expiry_ms.saturating_sub(now_ms)) as f64;
            let (va, vb) = (smile(a, strike), smile(b, strike));
            if tb <= ta || t <= 0.0 {
                return vb;
            }
            let wa = va * va * ta;
            let wb = vb * vb * tb;
            let w = wa + (wb - wa) * (t - ta) / (tb - ta);
            return (w.max(0.0) / t).sqrt();
        }
    }
    slices.last().map(|s| smile(s, strike)).unwrap_or(0.0)
}

/// One unit's row in `closest_to_liquidation`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AtRisk {
    /// Account.
    pub account: AccountId,
    /// Unit.
    pub unit: Unit,
    /// Health.
    pub health: Health,
    /// Equity / maintenance (ppm); lower is closer to liquidation.
    pub margin_ratio_ppm: i128,
}

/// One indexed unit, as stored in a snapshot.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexedUnit {
    /// Account.
    pub account: AccountId,
    /// Unit.
    pub unit: Unit,
    /// Trigger bands `(feed, lo, hi)`.
    pub bands: Vec<(String, i128, i128)>,
    /// Time-based recheck.
    pub recheck_at_ms: Option<u64>,
}

impl Engine {
    // ------------------------------------------------------------------
    // Commands
    // ------------------------------------------------------------------

    /// Applies an admin command stamped with its arrival time. On error
    /// nothing changed and no event was emitted.
    pub fn apply_command(
        &mut self,
        at_ms: u64,
        cmd: &Command,
    ) -> Result<Vec<EventRecord>, EngineError> {
        let now = self.s.now_ms.max(at_ms);
        // Validate and compute on copies; commit below.
        let plan = self.plan(now, cmd)?;
        self.out.clear();
        self.s.now_ms = now;
        self.refresh_guards();
        self.commit(plan)?;
        self.idx.due(self.s.now_ms, &mut self.pending);
        self.drain_pending();
        Ok(std::mem::take(&mut self.out))
    }

    fn account(&self, account: AccountId) -> Result<&Account, EngineError> {
        self.s
            .accounts
            .get(&account)
            .ok_or(EngineError::UnknownAccount { account })
    }

    fn guard_at(&self, feed: &str, now: u64) -> Option<GuardReason> {
        self.s
            .feeds
            .get(feed)
            .map_or(Some(GuardReason::NoPrice), |fs| Self::guard_of(fs, now))
    }

    fn check_ppm(what: &str, v: u32, max: u32) -> Result<(), EngineError> {
        if v > max {
            return Err(EngineError::InvalidConfig {
                detail: format!("{what} = {v} ppm, must be at most {max}"),
            });
        }
        Ok(())
    }

    fn plan(&self, now: u64, cmd: &Command) -> Result<Plan, EngineError> {
        match cmd {
            Command::ConfigureRisk(r) => {
                Self::check_ppm(
                    "liquidation_buffer_ppm",
                    r.liquidation_buffer_ppm,
                    10_000_000,
                )?;
                if r.partial_steps_ppm
                    .iter()
                    .any(|s| *s == 0 || *s >= 1_000_000)
                {
                    return Err(EngineError::InvalidConfig {
                        detail: format!(
                            "partial_steps_ppm {:?}: each step must be in 1..1000000",
                            r.partial_steps_ppm
                        ),
                    });
                }
                if r.portfolio_initial_ratio_ppm < 1_000_000 {
                    return Err(EngineError::InvalidConfig {
                        detail: format!(
                            "portfolio_initial_ratio_ppm = {}, must be >= 1000000",
                            r.portfolio_initial_ratio_ppm
                        ),
                    });
                }
                if r.option_recheck_ms == 0 {
                    return Err(EngineError::InvalidConfig {
                        detail: "option_recheck_ms must be > 0".into(),
                    });
                }
                Ok(Plan::Config(cmd.clone()))
            }
            Command::ConfigureFeed(f) => {
                if f.feed.is_empty() {
                    return Err(EngineError::InvalidConfig {
                        detail: "feed id is empty".into(),
                    });
                }
                Self::check_ppm("max_jump_ppm", f.max_jump_ppm, 100_000_000)?;
                let g = &f.grid;
                if g.price_moves_ppm.is_empty() || g.vol_shocks_ppm.is_empty() {
                    return Err(EngineError::InvalidConfig {
                        detail: format!(
                            "feed `{}`: the scenario grid needs at least one price move and one vol shock",
                            f.feed
                        ),
                    });
                }
                if g.price_moves_ppm
                    .iter()
                    .chain(&g.extreme_moves_ppm)
                    .chain(&g.vol_shocks_ppm)
                    .any(|m| *m <= -1_000_000 || *m > 10_000_000)
                {
                    return Err(EngineError::InvalidConfig {
                        detail: format!(
                            "feed `{}`: scenario moves and shocks must be in (-1000000, 10000000] ppm",
                            f.feed
                        ),
                    });
                }
                Self::check_ppm("extreme_weight_ppm", g.extreme_weight_ppm, 1_000_000)?;
                if let Some(s) = &f.vol_surface {
                    let sorted = s.slices.windows(2).all(|w| w[0].expiry_ms < w[1].expiry_ms)
                        && s.slices.iter().all(|sl| {
                            !sl.points.is_empty()
                                && sl.points.windows(2).all(|w| w[0].strike < w[1].strike)
                                && sl.points.iter().all(|p| p.vol_ppm > 0)
                        });
                    if s.slices.is_empty() || !sorted {
                        return Err(EngineError::InvalidConfig {
                            detail: format!(
                                "feed `{}`: vol surface slices must be sorted by expiry, points by strike, vols > 0",
                                f.feed
                            ),
                        });
                    }
                }
                Ok(Plan::Config(cmd.clone()))
            }
            Command::ConfigureAsset(a) => {
                if a.asset == QUOTE_ASSET {
                    return Err(EngineError::InvalidConfig {
                        detail: format!(
                            "`{QUOTE_ASSET}` is the quote asset, not a collateral asset"
                        ),
                    });
                }
                if !self.s.feeds.contains_key(&a.feed) {
                    return Err(EngineError::UnknownFeed {
                        feed: a.feed.clone(),
                    });
                }
                Self::check_ppm("haircut_ppm", a.haircut_ppm, 1_000_000)?;
                Ok(Plan::Config(cmd.clone()))
            }
            Command::ConfigureMarket(m) => {
                if !self.s.feeds.contains_key(&m.feed) {
                    return Err(EngineError::UnknownFeed {
                        feed: m.feed.clone(),
                    });
                }
                Self::check_ppm("max_rate_ppm", m.max_rate_ppm, 1_000_000)?;
                Self::check_ppm("initial_ppm", m.initial_ppm, m.max_rate_ppm)?;
                Self::check_ppm("maintenance_ppm", m.maintenance_ppm, m.initial_ppm)?;
                Self::check_ppm("taker_fee_ppm", m.taker_fee_ppm, 100_000)?;
                Self::check_ppm(
                    "liquidation_penalty_ppm",
                    m.liquidation_penalty_ppm,
                    500_000,
                )?;
                Self::check_ppm("liquidator_share_ppm", m.liquidator_share_ppm, 1_000_000)?;
                if let Some(old) = self.s.markets.get(&m.market)
                    && (old.config.kind != m.kind || old.config.feed != m.feed)
                {
                    return Err(EngineError::InvalidConfig {
                        detail: format!(
                            "market `{}`: its feed and instrument cannot change; configure a new market",
                            m.market
                        ),
                    });
                }
                if let MarketKind::Option { strike, vol, .. } = &m.kind {
                    if *strike <= 0 {
                        return Err(EngineError::NonPositive {
                            what: "option strike",
                            value: *strike,
                        });
                    }
                    match vol {
                        VolSource::Fixed { vol_ppm } if *vol_ppm == 0 => {
                            return Err(EngineError::InvalidConfig {
                                detail: format!("market `{}`: vol must be > 0", m.market),
                            });
                        }
                        VolSource::Surface
                            if self
                                .s
                                .feeds
                                .get(&m.feed)
                                .is_none_or(|f| f.config.vol_surface.is_none()) =>
                        {
                            return Err(EngineError::InvalidConfig {
                                detail: format!(
                                    "market `{}` uses the vol surface but feed `{}` has none",
                                    m.market, m.feed
                                ),
                            });
                        }
                        _ => {}
                    }
                }
                Ok(Plan::Config(cmd.clone()))
            }
            Command::CreateAccount { account } => {
                if self.s.accounts.contains_key(account) {
                    return Err(EngineError::AccountExists { account: *account });
                }
                Ok(Plan::Account {
                    id: *account,
                    acct: Account::default(),
                    extra: vec![Event::AccountCreated { account: *account }],
                    fee: 0,
                    fills: vec![],
                })
            }
            Command::Deposit {
                account,
                asset,
                amount,
            } => {
                if *amount <= 0 {
                    return Err(EngineError::NonPositive {
                        what: "deposit amount",
                        value: *amount,
                    });
                }
                let mut a = self.account(*account)?.clone();
                if asset == QUOTE_ASSET {
                    a.cash = add(a.cash, *amount, "cash")?;
                } else {
                    if !self.s.assets.contains_key(asset) {
                        return Err(EngineError::UnknownAsset {
                            asset: asset.clone(),
                        });
                    }
                    let e = a.collateral.entry(asset.clone()).or_insert(0);
                    *e = add(*e, *amount, "collateral")?;
                }
                let ev = Event::Deposited {
                    account: *account,
                    asset: asset.clone(),
                    amount: *amount,
                };
                Ok(Plan::Account {
                    id: *account,
                    acct: a,
                    extra: vec![ev],
                    fee: 0,
                    fills: vec![],
                })
            }
            Command::Withdraw {
                account,
                asset,
                amount,
            } => {
                if *amount <= 0 {
                    return Err(EngineError::NonPositive {
                        what: "withdrawal amount",
                        value: *amount,
                    });
                }
                let mut a = self.account(*account)?.clone();
                let available = if asset == QUOTE_ASSET {
                    a.cash
                } else {
                    if !self.s.assets.contains_key(asset) {
                        return Err(EngineError::UnknownAsset {
                            asset: asset.clone(),
                        });
                    }
                    a.collateral.get(asset).copied().unwrap_or(0)
                };
                if available < *amount {
                    return Err(EngineError::InsufficientBalance {
                        account: *account,
                        asset: asset.clone(),
                        available,
                        requested: *amount,
                    });
                }
                if asset == QUOTE_ASSET {
                    a.cash -= amount;
                } else if let Some(q) = a.collateral.get_mut(asset) {
                    *q -= amount;
                    if *q == 0 {
                        a.collateral.remove(asset);
                    }
                }
                let has_positions = !Self::unit_positions(&a, &Unit::Cross).is_empty();
                if has_positions {
                    // Money leaving while the account has risk needs reliable prices.
                    let feeds = self.unit_feeds(&a, &Unit::Cross);
                    for f in &feeds {
                        if let Some(reason) = self.guard_at(f, now) {
                            return Err(EngineError::GuardUp {
                                market: format!("feed {f}"),
                                reason,
                            });
                        }
                    }
                }
                let h = self.health_of(&a, &Unit::Cross)?;
                if h.equity < h.initial || h.equity < 0 {
                    return Err(EngineError::InsufficientMargin {
                        account: *account,
                        unit: "cross".into(),
                        equity: h.equity,
                        initial: h.initial,
                    });
                }
                let ev = Event::Withdrawn {
                    account: *account,
                    asset: asset.clone(),
                    amount: *amount,
                    health_after: h,
                };
                Ok(Plan::Account {
                    id: *account,
                    acct: a,
                    extra: vec![ev],
                    fee: 0,
                    fills: vec![],
                })
            }
            Command::Open {
                account,
                market,
                side,
                size,
                margin,
            } => {
                if *size <= 0 {
                    return Err(EngineError::NonPositive {
                        what: "position size",
                        value: *size,
                    });
                }
                let d = match side {
                    Side::Long => *size,
                    Side::Short => size
                        .checked_neg()
                        .ok_or_else(|| crate::fixed::overflow("size"))?,
                };
                self.plan_trade(now, *account, market, d, Some(*margin))
            }
            Command::Close {
                account,
                market,
                size,
            } => {
                let a = self.account(*account)?;
                let held = a.positions.get(market).map(|p| p.size).ok_or_else(|| {
                    EngineError::NoPosition {
                        account: *account,
                        market: market.clone(),
                    }
                })?;
                let c = match size {
                    None => held.abs(),
                    Some(s) if *s <= 0 => {
                        return Err(EngineError::NonPositive {
                            what: "close size",
                            value: *s,
                        });
                    }
                    Some(s) if *s > held.abs() => {
                        return Err(EngineError::ExceedsPosition {
                            account: *account,
                            market: market.clone(),
                            size: *s,
                            held: held.abs(),
                        });
                    }
                    Some(s) => *s,
                };
                self.plan_trade(now, *account, market, -held.signum() * c, None)
            }
            Command::AdjustIsolatedMargin {
                account,
                market,
                delta,
            } => {
                if *delta == 0 {
                    return Err(EngineError::NonPositive {
                        what: "margin adjustment",
                        value: 0,
                    });
                }
                let mut a = self.account(*account)?.clone();
                let pool = a
                    .positions
                    .get(market)
                    .and_then(|p| p.isolated)
                    .ok_or_else(|| EngineError::NoPosition {
                        account: *account,
                        market: format!("{market} (isolated)"),
                    })?;
                if *delta > 0 && a.cash < *delta {
                    return Err(EngineError::InsufficientBalance {
                        account: *account,
                        asset: QUOTE_ASSET.into(),
                        available: a.cash,
                        requested: *delta,
                    });
                }
                if *delta < 0 && pool < -*delta {
                    return Err(EngineError::InsufficientBalance {
                        account: *account,
                        asset: format!("{market} pool"),
                        available: pool,
                        requested: -*delta,
                    });
                }
                a.cash = sub(a.cash, *delta, "cash")?;
                let unit = Unit::Isolated {
                    market: market.clone(),
                };
                Self::credit(&mut a, &unit, *delta)?;
                if *delta < 0 {
                    if let Some(reason) = self
                        .s
                        .markets
                        .get(market)
                        .and_then(|m| self.guard_at(&m.config.feed, now))
                    {
                        return Err(EngineError::GuardUp {
                            market: market.clone(),
                            reason,
                        });
                    }
                    let h = self.health_of(&a, &unit)?;
                    if h.equity < h.initial {
                        return Err(EngineError::InsufficientMargin {
                            account: *account,
                            unit: unit.to_string(),
                            equity: h.equity,
                            initial: h.initial,
                        });
                    }
                }
                let ev = Event::IsolatedMarginAdjusted {
                    account: *account,
                    market: market.clone(),
                    delta: *delta,
                    pool_after: add(pool, *delta, "pool")?,
                };
                Ok(Plan::Account {
                    id: *account,
                    acct: a,
                    extra: vec![ev],
                    fee: 0,
                    fills: vec![],
                })
            }
            Command::FundInsurance { amount } => {
                if *amount <= 0 {
                    return Err(EngineError::NonPositive {
                        what: "insurance funding",
                        value: *amount,
                    });
                }
                add(self.s.insurance_fund, *amount, "insurance fund")?;
                Ok(Plan::Fund(*amount))
            }
        }
    }

    /// A trade of signed size `d` at the mark against the venue.
    /// `margin` is Some for Open (new risk allowed), None for Close.
    fn plan_trade(
        &self,
        now: u64,
        account: AccountId,
        market: &str,
        d: i128,
        margin: Option<MarginMode>,
    ) -> Result<Plan, EngineError> {
        let ms = self
            .s
            .markets
            .get(market)
            .ok_or_else(|| EngineError::UnknownMarket {
                market: market.to_string(),
            })?;
        if ms.settled.is_some() {
            return Err(EngineError::Settled {
                market: market.to_string(),
            });
        }
        let mut a = self.account(account)?.clone();
        let existing = a.positions.get(market).cloned();
        let s0 = existing.as_ref().map_or(0, |p| p.size);
        let s1 = add(s0, d, "position size")?;
        let adds_risk = s1.abs() > s0.abs() || (s0 != 0 && s1.signum() != s0.signum());
        if adds_risk {
            if let Some(exp) = ms.config.kind.expiry_ms()
                && now >= exp
            {
                return Err(EngineError::Expired {
                    market: market.to_string(),
                    expiry_ms: exp,
                });
            }
            if let Some(reason) = self.guard_at(&ms.config.feed, now) {
                return Err(EngineError::GuardUp {
                    market: market.to_string(),
                    reason,
                });
            }
        }
        let mark = ms.mark.as_ref().ok_or_else(|| EngineError::NoPrice {
            market: market.to_string(),
            feed: ms.config.feed.clone(),
        })?;
        let price = mark.price;
        let isolated_now = existing.as_ref().map(|p| p.isolated.is_some());
        let unit = match (margin, isolated_now) {
            (Some(MarginMode::Cross), Some(true)) => {
                return Err(EngineError::MarginModeConflict {
                    account,
                    market: market.to_string(),
                    held: "isolated",
                });
            }
            (Some(MarginMode::Isolated { .. }), Some(false)) => {
                return Err(EngineError::MarginModeConflict {
                    account,
                    market: market.to_string(),
                    held: "cross",
                });
            }
            (Some(MarginMode::Isolated { collateral }), _) => {
                if collateral < 0 {
                    return Err(EngineError::NonPositive {
                        what: "isolated collateral",
                        value: collateral,
                    });
                }
                if a.cash < collateral {
                    return Err(EngineError::InsufficientBalance {
                        account,
                        asset: QUOTE_ASSET.into(),
                        available: a.cash,
                        requested: collateral,
                    });
                }
                a.cash -= collateral;
                let p = a.positions.entry(market.to_string()).or_default();
                p.isolated = Some(add(p.isolated.unwrap_or(0), collateral, "isolated pool")?);
                Unit::Isolated {
                    market: market.to_string(),
                }
            }
            (_, Some(true)) => Unit::Isolated {
                market: market.to_string(),
            },
            _ => Unit::Cross,
        };
        let pos = a.positions.entry(market.to_string()).or_default();
        let (paid, realized) = Self::fill(pos, d, price)?;
        let fee = ppm_ceil(paid.abs(), i128::from(ms.config.taker_fee_ppm))?;
        Self::credit(&mut a, &unit, realized)?;
        Self::credit(&mut a, &unit, -fee)?;
        if adds_risk {
            let h = self.health_of(&a, &unit)?;
            if h.equity < h.initial || h.equity < 0 {
                return Err(EngineError::InsufficientMargin {
                    account,
                    unit: unit.to_string(),
                    equity: h.equity,
                    initial: h.initial,
                });
            }
            if unit != Unit::Cross {
                // Funding the pool took cash from the cross pool.
                let hc = self.health_of(&a, &Unit::Cross)?;
                if hc.equity < hc.initial || hc.equity < 0 {
                    return Err(EngineError::InsufficientMargin {
                        account,
                        unit: "cross".into(),
                        equity: hc.equity,
                        initial: hc.initial,
                    });
                }
            }
        }
        let reason = FillReason::Trade;
        let ev = Event::Filled {
            account,
            market: market.to_string(),
            size: d,
            price,
            fee,
            realized,
            reason,
        };
        Ok(Plan::Account {
            id: account,
            acct: a,
            extra: vec![],
            fee,
            fills: vec![(market.to_string(), d, paid, ev)],
        })
    }

    fn commit(&mut self, plan: Plan) -> Result<(), EngineError> {
        match plan {
            Plan::Config(cmd) => self.commit_config(cmd),
            Plan::Fund(amount) => {
                self.s.insurance_fund = add(self.s.insurance_fund, amount, "insurance fund")?;
                self.emit(Event::InsuranceFund {
                    delta: amount,
                    balance: self.s.insurance_fund,
                    reason: InsuranceReason::Funded,
                });
                Ok(())
            }
            Plan::Account {
                id,
                mut acct,
                extra,
                fee,
                fills,
            } => {
                for (m, d, paid, _) in &fills {
                    self.venue_fill(m, *d, *paid)?;
                }
                self.s.fees = add(self.s.fees, fee, "fees")?;
                self.tidy(id, &mut acct)?;
                self.s.accounts.insert(id, acct);
                for e in extra {
                    self.emit(e);
                }
                for (_, _, _, e) in fills {
                    self.emit(e);
                }
                // Examine the account's units now: a close below maintenance
                // still liquidates, and the index learns the new bands.
                self.queue_account(id);
                self.drain_pending();
                Ok(())
            }
        }
    }

    fn queue_account(&mut self, id: AccountId) {
        let Some(acct) = self.s.accounts.get(&id) else {
            return;
        };
        let mut units = vec![Unit::Cross];
        units.extend(
            acct.positions
                .iter()
                .filter(|(_, p)| p.isolated.is_some())
                .map(|(m, _)| Unit::Isolated { market: m.clone() }),
        );
        for u in units {
            if let Some(k) = self.key_of(id, &u) {
                self.pending.insert(k);
            }
        }
    }

    fn commit_config(&mut self, cmd: Command) -> Result<(), EngineError> {
        self.grid.clear();
        match cmd {
            Command::ConfigureRisk(r) => {
                self.s.risk = r.clone();
                self.emit(Event::RiskConfigured(r));
            }
            Command::ConfigureFeed(f) => {
                let name = f.feed.clone();
                match self.s.feeds.get_mut(&name) {
                    Some(fs) => fs.config = f.clone(),
                    None => {
                        self.s.feeds.insert(
                            name.clone(),
                            FeedState {
                                config: f.clone(),
                                last: None,
                                recent: Vec::new(),
                                jump: None,
                                guard: Some(GuardReason::NoPrice),
                            },
                        );
                    }
                }
                self.idx.feed_slot(&name);
                self.emit(Event::FeedConfigured(f));
                self.refresh_guards();
                self.remark_feed(&name);
            }
            Command::ConfigureAsset(a) => {
                self.s.assets.insert(a.asset.clone(), a.clone());
                self.emit(Event::AssetConfigured(a));
            }
            Command::ConfigureMarket(m) => {
                let name = m.market.clone();
                let feed = m.feed.clone();
                match self.s.markets.get_mut(&name) {
                    Some(ms) => ms.config = m.clone(),
                    None => {
                        let slot = self.market_by_slot.len() as u32;
                        self.market_by_slot.push(name.clone());
                        self.s.markets.insert(
                            name.clone(),
                            MarketState {
                                config: m.clone(),
                                slot,
                                mark: None,
                                settled: None,
                                settlement_deferred: false,
                            },
                        );
                    }
                }
                self.emit(Event::MarketConfigured(m));
                self.remark_feed(&feed);
            }
            _ => {}
        }
        // Requirements may have changed: look at every unit again. Config
        // changes are rare; this is the simple, obviously correct choice.
        let ids: Vec<AccountId> = self.s.accounts.keys().copied().collect();
        for id in ids {
            self.queue_account(id);
        }
        self.drain_pending();
        Ok(())
    }

    // ------------------------------------------------------------------
    // Settlement
    // ------------------------------------------------------------------

    /// Settles markets whose expiry passed, at the feed price (futures) or
    /// intrinsic value (options), unless the feed's guard is up.
    fn settle_expired(&mut self) -> Result<(), EngineError> {
        let now = self.s.now_ms;
        let due: Vec<String> = self
            .s
            .markets
            .iter()
            .filter(|(_, m)| {
                m.settled.is_none() && m.config.kind.expiry_ms().is_some_and(|e| now >= e)
            })
            .map(|(k, _)| k.clone())
            .collect();
        for name in due {
            let ms = &self.s.markets[&name];
            let feed = ms.config.feed.clone();
            if let Some(reason) = self.s.feeds.get(&feed).and_then(|f| f.guard.clone()) {
                if !ms.settlement_deferred {
                    if let Some(m) = self.s.markets.get_mut(&name) {
                        m.settlement_deferred = true;
                    }
                    self.emit(Event::SettlementDeferred {
                        market: name.clone(),
                        reason,
                    });
                }
                continue;
            }
            let Some(underlying) = self
                .s
                .feeds
                .get(&feed)
                .and_then(|f| f.last.as_ref())
                .map(|l| l.price)
            else {
                continue;
            };
            let price = match &ms.config.kind {
                MarketKind::Option {
                    kind: OptionKind::Call,
                    strike,
                    ..
                } => (underlying - strike).max(0),
                MarketKind::Option {
                    kind: OptionKind::Put,
                    strike,
                    ..
                } => (strike - underlying).max(0),
                _ => underlying,
            };
            let holders: Vec<AccountId> = self
                .idx
                .holders
                .get(&name)
                .map(|h| h.iter().copied().collect())
                .unwrap_or_default();
            let mut count = 0u64;
            for id in holders {
                let Some(mut acct) = self.s.accounts.get(&id).cloned() else {
                    continue;
                };
                let Some(pos) = acct.positions.get_mut(&name) else {
                    continue;
                };
                let unit = if pos.isolated.is_some() {
                    Unit::Isolated {
                        market: name.clone(),
                    }
                } else {
                    Unit::Cross
                };
                let d = -pos.size;
                let (paid, realized) = Self::fill(pos, d, price)?;
                Self::credit(&mut acct, &unit, realized)?;
                self.venue_fill(&name, d, paid)?;
                self.emit(Event::Filled {
                    account: id,
                    market: name.clone(),
                    size: d,
                    price,
                    fee: 0,
                    realized,
                    reason: FillReason::Settlement,
                });
                self.tidy(id, &mut acct)?;
                self.s.accounts.insert(id, acct);
                self.queue_account(id);
                count += 1;
            }
            if let Some(m) = self.s.markets.get_mut(&name) {
                m.settled = Some(price);
                m.mark = Some(Mark {
                    price,
                    underlying,
                    scenarios: Vec::new(),
                    greeks: Greeks::default(),
                    at_ms: now,
                });
            }
            self.emit(Event::Settled {
                market: name,
                underlying_price: underlying,
                price,
                positions: count,
            });
        }
        Ok(())
    }

    // ------------------------------------------------------------------
    // Reads
    // ------------------------------------------------------------------

    /// The engine clock.
    pub fn now_ms(&self) -> u64 {
        self.s.now_ms
    }

    /// Insurance fund balance.
    pub fn insurance_fund(&self) -> i128 {
        self.s.insurance_fund
    }

    /// Sum of every money balance the engine holds: account cash, isolated
    /// pools and position cost bases, the venue's, the insurance fund and
    /// fees. Constant except for deposits, withdrawals and external funding.
    pub fn total_money(&self) -> Result<i128, EngineError> {
        let mut t = add(self.s.insurance_fund, self.s.fees, "total")?;
        let holders = self
            .s
            .accounts
            .values()
            .map(|a| (a.cash, &a.positions))
            .chain(std::iter::once((
                self.s.venue.cash,
                &self.s.venue.positions,
            )));
        for (cash, positions) in holders {
            t = add(t, cash, "total")?;
            for p in positions.values() {
                t = add(t, add(p.quote, p.isolated.unwrap_or(0), "total")?, "total")?;
            }
        }
        Ok(t)
    }

    /// Health of every unit of an account, with Greeks per underlying feed.
    pub fn account_view(&self, account: AccountId) -> Result<Vec<UnitView>, EngineError> {
        let acct = self.account(account)?;
        let mut units = vec![Unit::Cross];
        units.extend(
            acct.positions
                .iter()
                .filter(|(_, p)| p.isolated.is_some())
                .map(|(m, _)| Unit::Isolated { market: m.clone() }),
        );
        let mut out = Vec::new();
        for unit in units {
            let health = self.health_of(acct, &unit)?;
            let mut greeks: BTreeMap<String, Greeks> = BTreeMap::new();
            for (m, p) in Self::unit_positions(acct, &unit) {
                let (ms, mark) = self.mark_of(m)?;
                let g = greeks.entry(ms.config.feed.clone()).or_default();
                let scale = |x: i128| mul_div_floor(p.size, x, QTY_SCALE, "greeks");
                g.delta = add(g.delta, scale(mark.greeks.delta)?, "greeks")?;
                g.gamma = add(g.gamma, scale(mark.greeks.gamma)?, "greeks")?;
                g.vega = add(g.vega, scale(mark.greeks.vega)?, "greeks")?;
                g.theta = add(g.theta, scale(mark.greeks.theta)?, "greeks")?;
                g.rho = add(g.rho, scale(mark.greeks.rho)?, "greeks")?;
            }
            out.push(UnitView {
                unit,
                health,
                greeks,
            });
        }
        Ok(out)
    }

    /// Units with positions ordered by equity / maintenance, lowest first.
    /// A full scan: meant for the API, not the tick path.
    pub fn closest_to_liquidation(&self, n: usize) -> Vec<AtRisk> {
        let mut v = Vec::new();
        for (id, acct) in &self.s.accounts {
            let mut units = vec![Unit::Cross];
            units.extend(
                acct.positions
                    .iter()
                    .filter(|(_, p)| p.isolated.is_some())
                    .map(|(m, _)| Unit::Isolated { market: m.clone() }),
            );
            for unit in units {
                if Self::unit_positions(acct, &unit).is_empty() {
                    continue;
                }
                let Ok(health) = self.health_of(acct, &unit) else {
                    continue;
                };
                let ratio = if health.maintenance > 0 {
                    health.equity.saturating_mul(PPM) / health.maintenance
                } else {
                    i128::MAX
                };
                v.push(AtRisk {
                    account: *id,
                    unit,
                    health,
                    margin_ratio_ppm: ratio,
                });
            }
        }
        v.sort_by(|a, b| {
            a.margin_ratio_ppm
                .cmp(&b.margin_ratio_ppm)
                .then(a.account.cmp(&b.account))
                .then(a.unit.cmp(&b.unit))
        });
        v.truncate(n);
        v
    }

    /// Revalues every unit at the current marks (no events, no changes).
    pub fn revalue_all(&self) -> Revaluation {
        let mut r = Revaluation::default();
        for acct in self.s.accounts.values() {
            let mut units = vec![Unit::Cross];
            units.extend(
                acct.positions
                    .iter()
                    .filter(|(_, p)| p.isolated.is_some())
                    .map(|(m, _)| Unit::Isolated { market: m.clone() }),
            );
            for unit in units {
                let Ok(h) = self.health_of(acct, &unit) else {
                    continue;
                };
                r.units += 1;
                r.positions += Self::unit_positions(acct, &unit).len() as u64;
                r.equity = r.equity.saturating_add(h.equity);
                r.maintenance = r.maintenance.saturating_add(h.maintenance);
                r.below_initial += u64::from(h.equity < h.initial);
                r.below_maintenance += u64::from(h.equity < h.maintenance);
            }
        }
        r
    }

    /// Units examined since this engine was created or restored (a metric
    /// for the daemon: how much work the trigger index lets through).
    pub fn examined_units(&self) -> u64 {
        self.examined
    }

    /// Bands computed with the whole-band Lipschitz bound instead of the
    /// unit's health curve (options near expiry, units that cannot be
    /// evaluated) since creation: a metric.
    pub fn fallback_bands(&self) -> u64 {
        self.fallback_bands
    }

    /// Number of units in the trigger index.
    pub fn indexed_units(&self) -> usize {
        self.idx.indexed_units()
    }

    /// A snapshot with the trigger index, so a restored engine examines
    /// exactly the units the live one would.
    pub fn snapshot_with_index(&self) -> (Snapshot, Vec<IndexedUnit>) {
        let mut units = Vec::new();
        for (key, bands, recheck) in self.idx.entries() {
            let Some(unit) = self.unit_of(key) else {
                continue;
            };
            let bands = bands
                .iter()
                .filter_map(|b| Some((self.idx.feed_name(b.feed)?.to_string(), b.lo, b.hi)))
                .collect();
            units.push(IndexedUnit {
                account: key.account,
                unit,
                bands,
                recheck_at_ms: recheck,
            });
        }
        units.sort_by(|a, b| a.account.cmp(&b.account).then(a.unit.cmp(&b.unit)));
        (self.s.clone(), units)
    }

    /// Restores a snapshot together with its trigger index.
    pub fn restore(s: Snapshot, index: &[IndexedUnit]) -> Result<Self, EngineError> {
        let mut e = Self::from_snapshot(s)?;
        e.idx.clear_bands();
        for u in index {
            let Some(key) = e.key_of(u.account, &u.unit) else {
                continue;
            };
            let bands = u
                .bands
                .iter()
                .map(|(f, lo, hi)| Band {
                    feed: e.idx.feed_slot(f),
                    lo: *lo,
                    hi: *hi,
                })
                .collect();
            e.idx.insert(key, bands, u.recheck_at_ms);
        }
        Ok(e)
    }
}

/// A validated command, ready to commit.
enum Plan {
    Config(Command),
    Fund(i128),
    Account {
        id: AccountId,
        acct: Account,
        extra: Vec<Event>,
        fee: i128,
        fills: Vec<(String, i128, i128, Event)>,
    },
}
