//! The engine: state, price handling, commands, margin, liquidation.

use crate::error::EngineError;
use crate::fixed::{
    PPM, PRICE_SCALE, QTY_SCALE, QUOTE_ASSET, add, mul_div_ceil, mul_div_floor, ppm_ceil, ppm_floor, rescale,
    round_to_scale, sub, value,
};
use crate::index::{Band, Index, Key};
use crate::options::{OptionInputs, OptionKind, PricingModel};
use crate::types::*;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// Milliseconds per year (365 days, Hull's convention) for option time.
pub const YEAR_MS: f64 = 31_536_000_000.0;
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
}

impl Default for Engine {
    fn default() -> Self {
        Self::new(RiskParams::default())
    }
}

fn max_rate_ppm(m: &MarketConfig) -> i128 {
    i128::from(m.max_rate_ppm)
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
        Self { s, idx: Index::default(), out: Vec::new(), pending: BTreeSet::new(), market_by_slot: Vec::new() }
    }

    /// Restores an engine from a snapshot and rebuilds its indexes.
    pub fn from_snapshot(s: Snapshot) -> Result<Self, EngineError> {
        if s.version != SCHEMA_VERSION {
            return Err(EngineError::SnapshotVersion { found: s.version, expected: SCHEMA_VERSION });
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

    /// Applies one input. On error nothing changed and no event was emitted.
    pub fn apply(&mut self, input: &Input) -> Result<Vec<EventRecord>, EngineError> {
        match input {
            Input::Price(u) => self.on_price(u),
            Input::Command { at_ms, command } => self.on_command(*at_ms, command),
        }
    }

    // ------------------------------------------------------------------
    // Prices
    // ------------------------------------------------------------------

    /// Applies a verified price.
    pub fn on_price(&mut self, u: &PriceUpdate) -> Result<Vec<EventRecord>, EngineError> {
        let fs = self.s.feeds.get(&u.feed).ok_or_else(|| EngineError::UnknownFeed { feed: u.feed.clone() })?;
        if u.price <= 0 {
            return Err(EngineError::NonPositivePrice { feed: u.feed.clone(), price: u.price });
        }
        if let Some(last) = &fs.last
            && (u.round <= last.round || u.timestamp_ms < last.timestamp_ms)
        {
            return Err(EngineError::OutOfOrderPrice {
                feed: u.feed.clone(),
                round: u.round,
                last_round: last.round,
                timestamp_ms: u.timestamp_ms,
                last_timestamp_ms: last.timestamp_ms,
            });
        }
        let price = rescale(u.price, u.decimals)?;
        let confidence = rescale(i128::try_from(u.confidence).map_err(|_| crate::fixed::overflow("confidence"))?, u.decimals)?;
        if price <= 0 {
            return Err(EngineError::NonPositivePrice { feed: u.feed.clone(), price: u.price });
        }
        let cfg = fs.config.clone();
        // Jump check against the recent average (before this price joins it).
        let jump = if fs.recent.is_empty() {
            None
        } else {
            let sum = fs.recent.iter().try_fold(0i128, |a, p| a.checked_add(*p)).ok_or_else(|| crate::fixed::overflow("average"))?;
            let avg = sum / fs.recent.len() as i128;
            let dev = mul_div_floor((price - avg).abs(), PPM, avg.max(1), "jump deviation")?;
            (dev > i128::from(cfg.max_jump_ppm)).then_some(GuardReason::Jump {
                price,
                average: avg,
                deviation_ppm: dev,
                max_ppm: cfg.max_jump_ppm,
            })
        };
        // Validation done: mutate.
        self.out.clear();
        self.s.now_ms = self.s.now_ms.max(u.timestamp_ms);
        let fs = self.s.feeds.get_mut(&u.feed).ok_or_else(|| EngineError::UnknownFeed { feed: u.feed.clone() })?;
        fs.last = Some(FeedPrice { price, confidence, timestamp_ms: u.timestamp_ms, round: u.round });
        fs.recent.push(price);
        let window = usize::from(cfg.average_window.max(1));
        if fs.recent.len() > window {
            let drop = fs.recent.len() - window;
            fs.recent.drain(..drop);
        }
        fs.jump = jump;
        self.refresh_guards();
        self.remark_feed(&u.feed);
        self.settle_expired();
        self.idx.crossed(&u.feed, price, &mut self.pending);
        self.idx.due(self.s.now_ms, &mut self.pending);
        self.drain_pending();
        Ok(std::mem::take(&mut self.out))
    }

    fn guard_of(fs: &FeedState, now: u64) -> Option<GuardReason> {
        let Some(last) = &fs.last else { return Some(GuardReason::NoPrice) };
        let c = &fs.config;
        if now.saturating_sub(last.timestamp_ms) > c.max_staleness_ms {
            return Some(GuardReason::Stale { last_ms: last.timestamp_ms, now_ms: now, max_ms: c.max_staleness_ms });
        }
        let ratio = last.confidence.saturating_mul(PPM) / last.price.max(1);
        if ratio > i128::from(c.max_confidence_ppm) {
            return Some(GuardReason::ConfidenceTooWide { ratio_ppm: ratio, max_ppm: c.max_confidence_ppm });
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
                (None, Some(r)) => events.push(Event::GuardRaised { feed: feed.clone(), reason: r.clone() }),
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
        self.out.push(EventRecord { seq, at_ms: self.s.now_ms, event });
    }

    // ------------------------------------------------------------------
    // Marks
    // ------------------------------------------------------------------

    fn remark_feed(&mut self, feed: &str) {
        let names: Vec<String> =
            self.s.markets.iter().filter(|(_, m)| m.config.feed == feed && m.settled.is_none()).map(|(k, _)| k.clone()).collect();
        for name in names {
            let r = self.compute_mark(&name);
            match r {
                Ok(mark) => {
                    if let Some(m) = self.s.markets.get_mut(&name) {
                        m.mark = mark;
                    }
                }
                Err(e) => self.emit(Event::EvaluationFailed { account: 0, unit: Unit::Isolated { market: name }, error: e.to_string() }),
            }
        }
    }

    fn compute_mark(&self, market: &str) -> Result<Option<Mark>, EngineError> {
        let ms = self.s.markets.get(market).ok_or_else(|| EngineError::UnknownMarket { market: market.to_string() })?;
        let fs = self.s.feeds.get(&ms.config.feed).ok_or_else(|| EngineError::UnknownFeed { feed: ms.config.feed.clone() })?;
        let Some(last) = &fs.last else { return Ok(None) };
        let p = last.price;
        let now = self.s.now_ms;
        let scen = fs.config.grid.scenarios();
        let shifted = |m: i32| -> Result<i128, EngineError> { mul_div_floor(p, PPM + i128::from(m), PPM, "scenario price") };
        match &ms.config.kind {
            MarketKind::Perpetual | MarketKind::Future { .. } => {
                let mut scenarios = Vec::with_capacity(scen.len());
                for s in &scen {
                    scenarios.push(shifted(s.move_ppm)?);
                }
                Ok(Some(Mark {
                    price: p,
                    underlying: p,
                    scenarios,
                    greeks: Greeks { delta: GREEK_SCALE, ..Greeks::default() },
                    at_ms: now,
                }))
            }
            MarketKind::Option { kind, strike, expiry_ms, model, vol } => {
                let years = (*expiry_ms as f64 - now as f64) / YEAR_MS;
                let sigma = match vol {
                    VolSource::Fixed { vol_ppm } => f64::from(*vol_ppm) / 1e6,
                    VolSource::Surface => {
                        let surf = fs.config.vol_surface.as_ref().ok_or_else(|| EngineError::InvalidConfig {
                            detail: format!("market `{market}` uses the vol surface but feed `{}` has none", fs.config.feed),
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
                Ok(Some(Mark { price, underlying: p, scenarios, greeks, at_ms: now }))
            }
        }
    }

    // ------------------------------------------------------------------
    // Health
    // ------------------------------------------------------------------

    fn mark_of(&self, market: &str) -> Result<(&MarketState, &Mark), EngineError> {
        let ms = self.s.markets.get(market).ok_or_else(|| EngineError::UnknownMarket { market: market.to_string() })?;
        let mark = ms.mark.as_ref().ok_or_else(|| EngineError::NoPrice { market: market.to_string(), feed: ms.config.feed.clone() })?;
        Ok((ms, mark))
    }

    fn collateral_value(&self, collateral: &BTreeMap<String, i128>) -> Result<i128, EngineError> {
        let mut total = 0i128;
        for (asset, qty) in collateral {
            let Some(cfg) = self.s.assets.get(asset) else { continue };
            let Some(last) = self.s.feeds.get(&cfg.feed).and_then(|f| f.last.as_ref()) else { continue };
            let v = value(*qty, last.price)?;
            let v = if v > 0 { ppm_floor(v, PPM - i128::from(cfg.haircut_ppm))? } else { v };
            total = add(total, v, "collateral value")?;
        }
        Ok(total)
    }

    /// Positions of a unit.
    fn unit_positions<'a>(acct: &'a Account, unit: &Unit) -> Vec<(&'a String, &'a Position)> {
        match unit {
            Unit::Cross => acct.positions.iter().filter(|(_, p)| p.isolated.is_none()).collect(),
            Unit::Isolated { market } => acct.positions.get_key_value(market).filter(|(_, p)| p.isolated.is_some()).into_iter().collect(),
        }
    }

    /// Equity and requirements of one unit of `acct` at the current marks.
    pub fn health_of(&self, acct: &Account, unit: &Unit) -> Result<Health, EngineError> {
        let positions = Self::unit_positions(acct, unit);
        let mut equity = match unit {
            Unit::Cross => add(acct.cash, self.collateral_value(&acct.collateral)?, "equity")?,
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
                let growth = mul_div_floor(n, i128::from(c.growth_ppm_per_million), 1_000_000 * crate::fixed::MONEY_SCALE, "requirement growth")?;
                let im_rate = (i128::from(c.initial_ppm) + growth).min(max_rate_ppm(c));
                let mm_rate = (i128::from(c.maintenance_ppm) + growth).min(max_rate_ppm(c));
                initial = add(initial, ppm_ceil(n, im_rate)?, "initial")?;
                maintenance = add(maintenance, ppm_ceil(n, mm_rate)?, "maintenance")?;
            }
            return Ok(Health { equity, initial, maintenance, notional, portfolio: false });
        }
        // Portfolio margin: worst weighted scenario loss per underlying.
        let mut losses: BTreeMap<&str, Vec<i128>> = BTreeMap::new();
        for (m, p) in &positions {
            let (ms, mark) = self.mark_of(m)?;
            let v0 = value(p.size, mark.price)?;
            let l = losses.entry(ms.config.feed.as_str()).or_insert_with(|| vec![0; mark.scenarios.len()]);
            if l.len() != mark.scenarios.len() {
                return Err(EngineError::InvalidConfig { detail: format!("scenario count mismatch in `{m}`") });
            }
            for (i, sp) in mark.scenarios.iter().enumerate() {
                l[i] = add(l[i], sub(v0, value(p.size, *sp)?, "scenario loss")?, "scenario loss")?;
            }
        }
        let mut maintenance = 0i128;
        for (feed, l) in losses {
            let fs = self.s.feeds.get(feed).ok_or_else(|| EngineError::UnknownFeed { feed: feed.to_string() })?;
            let scen = fs.config.grid.scenarios();
            let mut worst = 0i128;
            for (i, loss) in l.iter().enumerate() {
                let w = scen.get(i).map(|s| i128::from(s.weight_ppm)).unwrap_or(PPM);
                worst = worst.max(ppm_ceil(*loss, w)?);
            }
            maintenance = add(maintenance, worst, "maintenance")?;
        }
        let initial = ppm_ceil(maintenance, i128::from(self.s.risk.portfolio_initial_ratio_ppm))?;
        Ok(Health { equity, initial, maintenance, notional, portfolio: true })
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
            Unit::Isolated { market } => self.s.markets.get(market).map(|m| Key { account, slot: m.slot + 1 }),
        }
    }

    fn unit_of(&self, key: Key) -> Option<Unit> {
        if key.slot == 0 {
            Some(Unit::Cross)
        } else {
            self.market_by_slot.get(key.slot as usize - 1).map(|m| Unit::Isolated { market: m.clone() })
        }
    }

    fn rebuild_index(&mut self) {
        self.idx = Index::default();
        let mut slots: Vec<(u32, String)> = self.s.markets.iter().map(|(k, m)| (m.slot, k.clone())).collect();
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
        let Some(acct) = self.s.accounts.get(&id) else { return };
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
        match self.bands_for(key.account, unit, h) {
            Ok((bands, recheck)) => {
                let bands = bands.into_iter().map(|(f, lo, hi)| Band { feed: self.idx.feed_slot(&f), lo, hi }).collect();
                self.idx.insert(key, bands, recheck);
            }
            Err(_) => {
                // Cannot bound it: examine it on every tick of its feeds.
                self.idx.remove(key);
                let feeds = self.s.accounts.get(&key.account).map(|a| self.unit_feeds(a, unit)).unwrap_or_default();
                let bands: Vec<Band> = feeds
                    .iter()
                    .filter_map(|f| {
                        let p = self.s.feeds.get(f)?.last.as_ref()?.price;
                        Some((f.clone(), p))
                    })
                    .collect::<Vec<_>>()
                    .into_iter()
                    .map(|(f, p)| Band { feed: self.idx.feed_slot(&f), lo: p, hi: p })
                    .collect();
                self.idx.insert(key, bands, None);
            }
        }
    }

    #[allow(clippy::type_complexity)]
    fn bands_for(&self, account: AccountId, unit: &Unit, h: Health) -> Result<(Vec<(String, i128, i128)>, Option<u64>), EngineError> {
        let Some(acct) = self.s.accounts.get(&account) else { return Ok((vec![], None)) };
        let positions = Self::unit_positions(acct, unit);
        // Sensitivity per feed: qty-weighted bound on |dHealth/dPrice|.
        let mut sens: BTreeMap<String, i128> = BTreeMap::new();
        let mut theta_money = 0i128;
        let mut count = 0i128;
        for (m, p) in &positions {
            let (ms, mark) = self.mark_of(m)?;
            let k = if h.portfolio {
                let grid_move = self.s.feeds.get(&ms.config.feed).map(|f| f.config.grid.max_move_ppm()).unwrap_or(PPM);
                PPM + mul_div_ceil(i128::from(self.s.risk.portfolio_initial_ratio_ppm), 2 * PPM + grid_move, PPM, "sensitivity")?
            } else {
                PPM + 2 * max_rate_ppm(&ms.config)
            };
            let s = mul_div_ceil(p.size.abs(), k, PPM, "sensitivity")?;
            let e = sens.entry(ms.config.feed.clone()).or_insert(0);
            *e = add(*e, s, "sensitivity")?;
            if matches!(ms.config.kind, MarketKind::Option { .. }) {
                theta_money = add(theta_money, value(p.size, mark.greeks.theta)?.abs(), "theta")?;
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
        let threshold = if h.equity >= h.initial { h.initial } else { h.maintenance };
        let recheck = (theta_money > 0).then(|| self.s.now_ms.saturating_add(self.s.risk.option_recheck_ms));
        let reserve = mul_div_ceil(theta_money, 3 * i128::from(self.s.risk.option_recheck_ms as u32), YEAR_MS as i128, "theta reserve")?;
        let headroom = h.equity - threshold - 4 * count - 8 - reserve;
        let mut exposure = 0i128;
        let mut prices = Vec::new();
        for (f, s) in &sens {
            let Some(last) = self.s.feeds.get(f).and_then(|x| x.last.as_ref()) else { continue };
            exposure = add(exposure, value(*s, last.price)?, "exposure")?;
            prices.push((f.clone(), last.price));
        }
        if exposure == 0 && headroom >= 0 {
            return Ok((vec![], recheck));
        }
        let x_ppm = if headroom <= 0 || exposure == 0 { 0 } else { mul_div_floor(headroom, PPM, exposure, "band")?.min(PPM / 2) };
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
        // step closes size, so the loop ends.
        while let Some(k) = self.pending.pop_first() {
            self.examine(k);
        }
    }

    /// Re-evaluates one unit: liquidate, defer, or flag a margin call; reindex.
    fn examine(&mut self, key: Key) {
        let Some(unit) = self.unit_of(key) else { return };
        let Some(acct) = self.s.accounts.get(&key.account) else {
            self.idx.remove(key);
            return;
        };
        if let Unit::Isolated { market } = &unit
            && !acct.positions.get(market).is_some_and(|p| p.isolated.is_some())
        {
            self.idx.remove(key);
            return;
        }
        let h = match self.health_of(acct, &unit) {
            Ok(h) => h,
            Err(e) => {
                self.emit(Event::EvaluationFailed { account: key.account, unit, error: e.to_string() });
                return;
            }
        };
        let has_positions = !Self::unit_positions(acct, &unit).is_empty();
        let id = (key.account, unit.clone());
        if h.equity < h.maintenance || h.equity < 0 {
            let feeds = self.unit_feeds(acct, &unit);
            if let Some((feed, reason)) = self.first_guard(&feeds) {
                if self.s.deferred.insert(id.clone()) {
                    self.emit(Event::LiquidationDeferred { account: key.account, unit: unit.clone(), feed, reason, health: h });
                }
                self.reindex(key, &unit, h);
                return;
            }
            self.s.deferred.remove(&id);
            if let Err(e) = self.liquidate(key.account, &unit, h) {
                self.emit(Event::EvaluationFailed { account: key.account, unit: unit.clone(), error: e.to_string() });
                return;
            }
            self.s.margin_calls.remove(&id);
            // Health after the liquidation (partial) or nothing left (full).
            let Some(acct) = self.s.accounts.get(&key.account) else { return };
            match self.health_of(acct, &unit) {
                Ok(h2) if !Self::unit_positions(acct, &unit).is_empty() || unit == Unit::Cross => self.reindex(key, &unit, h2),
                _ => self.idx.remove(key),
            }
            return;
        }
        self.s.deferred.remove(&id);
        if has_positions && h.equity < h.initial {
            if self.s.margin_calls.insert(id.clone()) {
                self.emit(Event::MarginCall { account: key.account, unit: unit.clone(), health: h });
            }
        } else if self.s.margin_calls.remove(&id) {
            self.emit(Event::MarginCallCleared { account: key.account, unit: unit.clone(), health: h });
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
        let vp = self.s.venue.positions.entry(market.to_string()).or_default();
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
                let p = acct.positions.get_mut(market).ok_or_else(|| EngineError::InvalidConfig { detail: format!("isolated `{market}` missing") })?;
                p.isolated = Some(add(p.isolated.unwrap_or(0), amount, "isolated pool")?);
            }
        }
        Ok(())
    }

    /// After a fill: drop empty positions (returning an isolated pool to cash).
    fn tidy(acct: &mut Account, market: &str) -> Result<bool, EngineError> {
        if let Some(p) = acct.positions.get(market)
            && p.size == 0
        {
            let pool = p.isolated.unwrap_or(0);
            let quote = p.quote;
            acct.positions.remove(market);
            acct.cash = add(acct.cash, add(pool, quote, "pool")?, "cash")?;
            return Ok(true);
        }
        Ok(false)
    }

    // ------------------------------------------------------------------
    // Liquidation
    // ------------------------------------------------------------------

    fn liquidate(&mut self, account: AccountId, unit: &Unit, before: Health) -> Result<(), EngineError> {
        let acct0 = self.s.accounts.get(&account).cloned().ok_or(EngineError::UnknownAccount { account })?;
        let positions: Vec<(String, i128)> = Self::unit_positions(&acct0, unit).into_iter().map(|(m, p)| (m.clone(), p.size)).collect();
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
                    let pen = ppm_ceil(value(c, price)?.abs(), i128::from(ms.config.liquidation_penalty_ppm))?;
                    to_liq = add(to_liq, ppm_floor(pen, i128::from(ms.config.liquidator_share_ppm))?, "penalty")?;
                    penalty = add(penalty, pen, "penalty")?;
                    let pos = a.positions.get_mut(m).ok_or_else(|| EngineError::NoPosition { account, market: m.clone() })?;
                    let (v, realized) = Self::fill(pos, -c, price)?;
                    Self::credit(&mut a, unit, realized)?;
                    slices.push((m.clone(), -c, v, price, realized));
                }
                if slices.is_empty() {
                    continue;
                }
                Self::credit(&mut a, unit, -penalty)?;
                let after = self.health_of(&a, unit)?;
                let need = add(after.maintenance, ppm_ceil(after.maintenance, buffer)?, "buffer")?;
                if after.equity >= need && after.equity >= 0 {
                    self.commit_liquidation(account, unit, a, slices, penalty, to_liq)?;
                    let after = self.health_of(&self.s.accounts[&account], unit)?;
                    self.emit_liquidated(account, unit, LiquidationKind::Partial { fraction_ppm: step }, before, after, penalty, to_liq, String::new());
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
            let pen = ppm_ceil(value(*size, price)?.abs(), i128::from(ms.config.liquidation_penalty_ppm))?;
            raw_liq = add(raw_liq, ppm_floor(pen, i128::from(ms.config.liquidator_share_ppm))?, "penalty")?;
            raw_pen = add(raw_pen, pen, "penalty")?;
            let pos = a.positions.get_mut(m).ok_or_else(|| EngineError::NoPosition { account, market: m.clone() })?;
            let (v, realized) = Self::fill(pos, -*size, price)?;
            Self::credit(&mut a, unit, realized)?;
            slices.push((m.clone(), -*size, v, price, realized));
        }
        let equity_closed = self.health_of(&a, unit)?.equity;
        let penalty = raw_pen.min(equity_closed.max(0));
        let to_liq = if raw_pen > 0 { mul_div_floor(penalty, raw_liq, raw_pen, "penalty split")? } else { 0 };
        Self::credit(&mut a, unit, -penalty)?;
        let note = if before.equity <= 0 {
            "equity not positive: nothing to keep".to_string()
        } else {
            format!("no partial step ({:?} ppm) restores maintenance plus {} ppm buffer", self.s.risk.partial_steps_ppm, buffer)
        };
        let closed: Vec<(String, i128)> = slices.iter().map(|(m, d, ..)| (m.clone(), *d)).collect();
        self.commit_liquidation(account, unit, a, slices, penalty, to_liq)?;
        // Bankruptcy: seize collateral (cross), then cover the deficit.
        let mut acct = self.s.accounts.get(&account).cloned().ok_or(EngineError::UnknownAccount { account })?;
        let equity_now = self.health_of(&acct, unit)?.equity;
        let mut seized = Vec::new();
        if *unit == Unit::Cross && equity_now < 0 {
            for (asset, qty) in std::mem::take(&mut acct.collateral) {
                if qty == 0 {
                    continue;
                }
                let price = self.s.assets.get(&asset).and_then(|c| self.s.feeds.get(&c.feed)).and_then(|f| f.last.as_ref()).map(|l| l.price).unwrap_or(0);
                let v = value(qty, price)?;
                acct.cash = add(acct.cash, v, "cash")?;
                seized.push((asset, qty, price, v));
            }
        }
        let base = match unit {
            Unit::Cross => acct.cash,
            Unit::Isolated { market } => acct.positions.get(market).and_then(|p| p.isolated).unwrap_or(acct.cash),
        };
        let isolated_gone = matches!(unit, Unit::Isolated { market } if !acct.positions.contains_key(market));
        // An isolated position that closed has already returned its pool to
        // cash: its deficit is then measured on the pool that went to cash.
        let deficit = if isolated_gone { 0 } else { (-base).max(0) };
        let _ = isolated_gone;
        for (asset, qty, price, v) in &seized {
            let e = self.s.venue.collateral.entry(asset.clone()).or_insert(0);
            *e = add(*e, *qty, "venue collateral")?;
            self.s.venue.cash = sub(self.s.venue.cash, *v, "venue cash")?;
            self.emit(Event::CollateralSeized { account, asset: asset.clone(), qty: *qty, price: *price, value: *v });
        }
        self.s.accounts.insert(account, acct);
        self.emit_liquidated(account, unit, LiquidationKind::Full, before, Health::default(), penalty, to_liq, note);
        if deficit > 0 {
            self.cover_deficit(account, unit, deficit, &closed)?;
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn emit_liquidated(&mut self, account: AccountId, unit: &Unit, kind: LiquidationKind, before: Health, after: Health, penalty: i128, to_liq: i128, note: String) {
        let after = if matches!(kind, LiquidationKind::Full) {
            self.s.accounts.get(&account).and_then(|a| self.health_of(a, unit).ok()).unwrap_or(after)
        } else {
            after
        };
        let closed = std::mem::take(&mut self.last_closed());
        self.emit(Event::Liquidated {
            account,
            unit: unit.clone(),
            kind,
            before,
            after,
            closed,
            penalty,
            to_liquidator: to_liq,
            to_insurance: penalty - to_liq,
            note,
        });
    }

    fn last_closed(&mut self) -> Vec<ClosedSlice> {
        std::mem::take(&mut self.closed_buf)
    }
}
