//! The trigger index: which units a price move or the clock must bring
//! back for examination (`bands` holds the exact band search).

use super::health::max_rate_ppm;
use super::{Engine, FeedState, MAX_RECHECK_MS, YEAR_MS, YEAR_MS_INT};
use crate::error::EngineError;
use crate::fixed::{PPM, add, mul_div_ceil, mul_div_floor, ppm_ceil, value};
use crate::index::{Band, Index, Key, Rank};
use crate::options::PricingModel;
use crate::types::*;
use std::collections::BTreeMap;

/// Bound on one option contract's |delta| in ppm, `D = e^(max(0, -r, -q) T)`
/// with `T` from `from_ms` to expiry, rounded up; `None` when not finite or
/// beyond 1e15 ppm.
pub(super) fn delta_bound_ppm(
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
    #[allow(
        clippy::cast_possible_truncation,
        reason = "d is finite and in 0..1e15, far inside i128"
    )]
    (d.is_finite() && d < 1e15).then(|| d.ceil() as i128 + 1)
}

/// Which requirement a band keeps a unit on one side of.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Req {
    /// Maintenance: crossing it liquidates (down) or ends a deferral (up).
    Maintenance,
    /// Initial: crossing it down starts a margin call.
    Initial,
    /// Initial plus `b` ppm of (initial - maintenance): crossing it up
    /// clears a margin call (hysteresis, `RiskParams::margin_call_clear_buffer_ppm`).
    ClearCall(u32),
}

impl Req {
    /// The requirement of `h` this names.
    pub(super) fn of(self, h: &Health) -> i128 {
        match self {
            Req::Maintenance => h.maintenance,
            Req::Initial => h.initial,
            Req::ClearCall(b) => clear_level(h.initial, h.maintenance, b),
        }
    }

    /// A bound on a linear market's rate for this requirement (ppm),
    /// scaled by its feed's volatility multiplier.
    pub(super) fn base_ppm(self, c: &MarketConfig, fs: &FeedState) -> i128 {
        match self {
            Req::Maintenance => fs.scaled_rate_ppm(c.maintenance_ppm),
            Req::Initial => fs.scaled_rate_ppm(c.initial_ppm),
            Req::ClearCall(b) => {
                fs.scaled_rate_ppm(c.initial_ppm) * (PPM + i128::from(b)) / PPM + 1
            }
        }
    }

    /// A portfolio unit's requirement per unit of maintenance (ppm).
    pub(super) fn portfolio_ratio_ppm(self, initial_ratio_ppm: u32) -> i128 {
        let r = i128::from(initial_ratio_ppm).max(PPM);
        match self {
            Req::Maintenance => PPM,
            Req::Initial => r,
            Req::ClearCall(b) => r + (i128::from(b) * (r - PPM) + PPM - 1) / PPM,
        }
    }
}

/// Equity at or above which a margin call clears: initial plus `b` ppm of
/// (initial - maintenance), rounded up.
pub(super) fn clear_level(initial: i128, maintenance: i128, b: u32) -> i128 {
    let gap = initial.saturating_sub(maintenance).max(0);
    initial.saturating_add(gap.saturating_mul(i128::from(b)).saturating_add(PPM - 1) / PPM)
}

/// Bound on `|d(equity - requirement)/d price|` per unit of size (ppm) of a
/// linear position of `size` at `price`: `d(rate(n) n)/dn = base + 2 growth
/// n / 1M <= 2 cap`, for every notional inside the band (at most 1.5 n).
pub(super) fn linear_sensitivity_ppm(
    c: &MarketConfig,
    fs: &FeedState,
    size: i128,
    price: i128,
    req: Req,
) -> Result<i128, EngineError> {
    let n = value(size, price)?.abs();
    let grow = mul_div_ceil(
        n,
        3 * i128::from(c.growth_ppm_per_million),
        1_000_000 * crate::fixed::MONEY_SCALE,
        "sensitivity",
    )?;
    // The concentration add-on's slope: n × add_on / L more per unit of
    // notional, with n up to 1.5 n inside a band; r + n r' <= 2 cap + that.
    let conc = match &c.concentration {
        None => 0,
        Some(k) => mul_div_ceil(
            3 * n,
            i128::from(k.add_on_ppm),
            2 * k.liquidity_notional.max(1),
            "sensitivity",
        )?,
    };
    Ok(PPM
        + (2 * max_rate_ppm(c) + conc).min(add(
            req.base_ppm(c, fs),
            add(grow, 2 * conc, "sensitivity")?,
            "sensitivity",
        )?))
}

impl Engine {
    /// Whether `name` is a trigger-index slot of a configured feed: its
    /// price, or one of its collateral slots.
    pub(super) fn known_slot(&self, name: &str) -> bool {
        super::slot_feed(name).is_some_and(|(f, _)| self.s.feeds.contains_key(f))
    }

    /// The value a slot's bands are checked against: the feed's price, or
    /// for an EMA slot the leaf's EMA (0: none).
    pub(super) fn slot_price(&self, name: &str) -> Option<i128> {
        let (feed, ema) = super::slot_feed(name)?;
        let last = self.s.feeds.get(feed)?.last.as_ref()?;
        Some(if ema { last.ema.max(0) } else { last.price })
    }

    pub(super) fn key_of(&self, account: AccountId, unit: &Unit) -> Option<Key> {
        match unit {
            Unit::Cross => Some(Key { account, slot: 0 }),
            Unit::Isolated { market } => self.s.markets.get(market).map(|m| Key {
                account,
                slot: m.slot + 1,
            }),
        }
    }

    pub(super) fn unit_of(&self, key: Key) -> Option<Unit> {
        super::unit_of_slot(key.slot, &self.market_by_slot)
    }

    pub(super) fn rebuild_index(&mut self) {
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
            // Slots in name order; `from_snapshot` checked the count.
            let _slot = self.idx.feed_slot(&f);
        }
        let ids: Vec<AccountId> = self.s.accounts.keys().copied().collect();
        for id in ids {
            self.reindex_account(id);
        }
        self.settle();
    }

    /// Drops a unit from the trigger index, with bands it waits for.
    pub(super) fn unindex(&mut self, key: Key) {
        self.idx.forget(key);
        self.unbanded.remove(&key);
    }

    /// Recomputes the trigger bands and at-risk ranks of every unit
    /// examined since the last call (in key order), at the health and clock
    /// of its examination.
    ///
    /// An input's outcome (events, state root) never waits for band
    /// work: examinations leave a unit's bands and rank here. The node
    /// calls this after it has published a report's root and answered its
    /// commands, off the report's critical path; every price report and
    /// every command that moves the clock calls it first, and so do
    /// snapshots and `index_entries`, so the index every input sees is the
    /// same whether or not the caller settled in between (a unit's account,
    /// the prices and the clock do not change between its examination and
    /// this, or it is examined again; docs/MARGIN.md, "Bands after the
    /// report").
    pub fn settle(&mut self) {
        while self.settle_some(usize::MAX) {}
    }

    /// [`Engine::settle`] in steps: the bands of at most `units` waiting
    /// units (the first in key order), then, once none wait, the grid
    /// prefill. Returns whether work is left. Any split gives the same
    /// index as one `settle` (each unit's bands depend only on the state at
    /// its examination), so the node releases the engine lock between
    /// steps and API reads do not wait for a whole report's band work.
    pub fn settle_some(&mut self, units: usize) -> bool {
        for _ in 0..units {
            let Some((key, (unit, h))) = self.unbanded.pop_first() else {
                break;
            };
            self.band(key, &unit, h);
        }
        if !self.unbanded.is_empty() {
            return true;
        }
        if std::mem::take(&mut self.prefill_due) {
            self.prefill_grid(2);
        }
        false
    }

    /// Units whose bands wait for [`Engine::settle`].
    pub fn unsettled_units(&self) -> usize {
        self.unbanded.len()
    }

    fn reindex_account(&mut self, id: AccountId) {
        let Some(acct) = self.by_id.get(&id) else {
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
                let Some(acct) = self.by_id.get(&id) else {
                    continue;
                };
                match self.health_of(acct, &u) {
                    Ok(h) => self.reindex(k, &u, h),
                    Err(_) => self.unindex(k),
                }
            }
        }
    }

    /// Leaves an examined unit's bands and at-risk rank to
    /// [`Engine::settle`] (`closest_to_liquidation` reads the waiting units
    /// too).
    pub(super) fn reindex(&mut self, key: Key, unit: &Unit, h: Health) {
        self.unbanded.insert(key, (unit.clone(), h));
    }

    /// Recomputes a unit's trigger bands from its health. A unit at or
    /// above initial keeps a band above initial (so the tick that takes it
    /// below initial examines it: the margin call comes that round); one in
    /// margin call keeps the intersection of "above maintenance" and "below
    /// initial"; one below maintenance (deferred) keeps the band that
    /// brings it back when it crosses maintenance upwards.
    fn band(&mut self, key: Key, unit: &Unit, h: Health) {
        let has_positions = self
            .acct(key.account)
            .is_some_and(|a| !Self::unit_positions(a, unit).is_empty());
        self.idx
            .set_rank(key, has_positions.then(|| rank_of_health(&h)));
        let in_call = self.s.margin_calls.contains(&(key.account, unit.clone()));
        let clear = Req::ClearCall(self.s.risk.margin_call_clear_buffer_ppm);
        let both = [Req::Maintenance, clear];
        let reqs: &[Req] = if h.equity < h.maintenance
            || h.equity < 0
            || !has_positions
            || !self.s.risk.prompt_margin_calls
        {
            &[Req::Maintenance]
        } else if in_call {
            &both
        } else {
            &[Req::Initial]
        };
        let mut grid = std::mem::take(&mut self.grid);
        let mut found: Option<FeedBands> = None;
        let mut failed = false;
        for req in reqs {
            let exact = self.exact_bands(&mut grid, key, unit, &h, *req);
            let bands = match exact {
                Ok(Some(b)) => Ok(b),
                _ => {
                    self.fallback_bands += 1;
                    self.bands_for(key.account, unit, h, *req)
                }
            };
            match bands {
                Ok(b) => found = Some(intersect(found, b)),
                Err(_) => failed = true,
            }
        }
        self.grid = grid;
        match found {
            Some((bands, recheck)) if !failed => self.insert_bands(key, bands, recheck),
            _ => {
                // Cannot bound it: examine it on every tick of its feeds.
                self.idx.remove(key);
                let slots = self
                    .acct(key.account)
                    .map(|a| self.unit_slots(a, unit))
                    .unwrap_or_default();
                let bands = slots
                    .into_iter()
                    .filter_map(|f| {
                        let p = self.slot_price(&f)?;
                        Some((f, p, p))
                    })
                    .collect();
                self.insert_bands(key, bands, None);
            }
        }
    }

    /// Puts a unit's bands `(feed, lo, hi)` in the index. A feed without a
    /// slot cannot happen (the engine holds at most `MAX_FEEDS` feeds); were
    /// it to, the unit is examined on the next input rather than missed.
    fn insert_bands(&mut self, key: Key, bands: Vec<(String, i128, i128)>, recheck: Option<u64>) {
        let slotted: Option<Vec<Band>> = bands
            .into_iter()
            .map(|(f, lo, hi)| {
                Some(Band {
                    feed: self.idx.feed_slot(&f)?,
                    lo,
                    hi,
                })
            })
            .collect();
        match slotted {
            Some(bands) => self.idx.insert(key, bands, recheck),
            None => self.idx.insert(key, Vec::new(), Some(self.s.now_ms)),
        }
    }

    #[allow(clippy::type_complexity)]
    fn bands_for(
        &self,
        account: AccountId,
        unit: &Unit,
        h: Health,
        req: Req,
    ) -> Result<(Vec<(String, i128, i128)>, Option<u64>), EngineError> {
        let Some(acct) = self.acct(account) else {
            return Ok((vec![], None));
        };
        let positions = Self::unit_positions(acct, unit);
        // Nothing to liquidate and nothing owed: no price can matter.
        if positions.is_empty() && (acct.cash >= 0 || *unit != Unit::Cross) {
            return Ok((vec![], None));
        }
        // A portfolio unit's initial requirement is its maintenance times
        // this ratio, so scenario losses move it that much faster.
        let ratio = req.portfolio_ratio_ppm(self.s.risk.portfolio_initial_ratio_ppm);
        // Sensitivity per feed: qty-weighted bound on |dHealth/dPrice|.
        let mut sens: BTreeMap<String, i128> = BTreeMap::new();
        let mut theta_money = 0i128;
        let mut count = 0i128;
        // Whole-ppm rate steps of linear requirements (`rate_rounding`).
        let mut rounding = 0i128;
        // Feeds pricing collateral: their EMA moves it too.
        let mut ema_feeds: std::collections::BTreeSet<String> = std::collections::BTreeSet::new();
        for (m, p) in &positions {
            let (ms, mark) = self.mark_of(m)?;
            // k bounds |d(equity - maintenance)/d price| per unit of size (ppm).
            let k =
                if h.portfolio {
                    let fs = self.s.feeds.get(&ms.config.feed);
                    let fc = fs.map(|f| &f.config);
                    let (opt_slope, d1_slope) = fs.map_or((2 * PPM, PPM), |f| f.loss_slopes_ppm());
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
                            mul_div_ceil(
                                d_ppm,
                                PPM + mul_div_ceil(ratio, opt_slope, PPM, "sensitivity")?,
                                PPM,
                                "sensitivity",
                            )?
                        }
                        // Equity moves by 1, each scenario loss by |m|.
                        _ => PPM + ratio * d1_slope / PPM + 1,
                    }
                } else {
                    let fs = self.s.feeds.get(&ms.config.feed).ok_or_else(|| {
                        EngineError::UnknownFeed {
                            feed: ms.config.feed.clone(),
                        }
                    })?;
                    rounding = add(
                        rounding,
                        super::bands::rate_rounding(value(p.size, mark.price)?)?,
                        "rounding",
                    )?;
                    linear_sensitivity_ppm(&ms.config, fs, p.size, mark.price, req)?
                };
            let s = mul_div_ceil(p.size.abs(), k, PPM, "sensitivity")?;
            let e = sens.entry(ms.config.feed.clone()).or_insert(0);
            *e = add(*e, s, "sensitivity")?;
            if matches!(ms.config.kind, MarketKind::Option { .. }) {
                theta_money = add(
                    theta_money,
                    value(p.size, crate::fixed::greek_to_price(mark.greeks.theta))?.abs(),
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
                    ema_feeds.insert(c.feed.clone());
                    count += 1;
                }
            }
        }
        if count == 0 {
            return Ok((vec![], None));
        }
        // Distance to the requirement in either direction.
        let dist = h.equity.saturating_sub(req.of(&h)).abs();
        // Options decay between price ticks. Reserve twice the current theta
        // over a horizon in which it eats at most half the distance (between
        // one recheck period and MAX_RECHECK_MS), and recheck at its end.
        let period = self.s.risk.option_recheck_ms.max(1);
        let (recheck, reserve) = if theta_money > 0 {
            let horizon = mul_div_floor(dist / 2, YEAR_MS_INT, 2 * theta_money, "recheck horizon")?
                .clamp(i128::from(period), i128::from(MAX_RECHECK_MS.max(period)));
            let horizon = u64::try_from(horizon).unwrap_or(period);
            // Not aligned to a grid: units that were examined together
            // spread their rechecks instead of all coming due on one tick.
            // (Snapshots carry the index, so a restore keeps these times.)
            let at = self.s.now_ms.saturating_add(horizon);
            let span = i128::from(at.saturating_sub(self.s.now_ms));
            (
                Some(at),
                mul_div_ceil(2 * theta_money, span, YEAR_MS_INT, "theta reserve")?,
            )
        } else {
            (None, 0)
        };
        let headroom = dist
            .saturating_sub(4 * count + 8)
            .saturating_sub(rounding)
            .saturating_sub(reserve);
        let mut exposure = 0i128;
        let mut prices = Vec::new();
        for (f, s) in &sens {
            let Some(price) = self.slot_price(f) else {
                continue;
            };
            exposure = add(exposure, value(*s, price)?, "exposure")?;
            prices.push((f.clone(), price));
        }
        let x_ppm = if headroom <= 0 {
            0
        } else if exposure == 0 {
            PPM / 2
        } else {
            mul_div_floor(headroom, PPM, exposure, "band")?.min(PPM / 2)
        };
        let mut bands: Vec<(String, i128, i128)> = prices
            .into_iter()
            .map(|(f, p)| {
                let d = p.saturating_mul(x_ppm) / PPM;
                (f, p - d, p + d)
            })
            .collect();
        // The whole-band bound keeps no margin for the EMA: any change of
        // a collateral feed's EMA brings the unit back.
        for f in ema_feeds {
            let slot = super::ema_slot(&f);
            if let Some(e) = self.slot_price(&slot) {
                bands.push((slot, e, e));
            }
        }
        Ok((bands, recheck))
    }

    /// An account's margin units: cross, then each isolated position.
    pub(super) fn units_of(acct: &Account) -> Vec<Unit> {
        let mut units = vec![Unit::Cross];
        units.extend(
            acct.positions
                .iter()
                .filter(|(_, p)| p.isolated.is_some())
                .map(|(m, _)| Unit::Isolated { market: m.clone() }),
        );
        units
    }

    pub(super) fn queue_account(&mut self, id: AccountId) {
        let Some(acct) = self.by_id.get(&id) else {
            return;
        };
        let units = Self::units_of(acct);
        for u in units {
            if let Some(k) = self.key_of(id, &u) {
                self.pending.insert(k);
            }
        }
    }

    pub(super) fn queue_every_unit(&mut self) {
        let ids: Vec<AccountId> = self.s.accounts.keys().copied().collect();
        for id in ids {
            self.queue_account(id);
        }
    }
}

/// A unit's bands `(feed, lo, hi)` and its time-based recheck.
pub(super) type FeedBands = (Vec<(String, i128, i128)>, Option<u64>);

/// A unit's place in the at-risk ranking from its health.
pub(super) fn rank_of_health(h: &Health) -> Rank {
    let class = if h.equity < h.maintenance || h.equity < 0 {
        0
    } else if h.equity < h.initial {
        1
    } else {
        2
    };
    let ratio = if h.maintenance > 0 {
        h.equity.saturating_mul(PPM) / h.maintenance
    } else {
        i128::MAX
    };
    Rank {
        class,
        ratio_ppm: i64::try_from(ratio).unwrap_or(if ratio < 0 { i64::MIN } else { i64::MAX }),
    }
}

/// Bands that hold where both `a` (if any) and `b` hold: per feed the
/// narrower edges, and the earlier recheck.
fn intersect(a: Option<FeedBands>, b: FeedBands) -> FeedBands {
    let Some((bands_a, recheck_a)) = a else {
        return b;
    };
    let (bands_b, recheck_b) = b;
    let mut by_feed: BTreeMap<String, (i128, i128)> = BTreeMap::new();
    for (f, lo, hi) in bands_a.into_iter().chain(bands_b) {
        by_feed
            .entry(f)
            .and_modify(|e| *e = (e.0.max(lo), e.1.min(hi)))
            .or_insert((lo, hi));
    }
    let recheck = match (recheck_a, recheck_b) {
        (Some(x), Some(y)) => Some(x.min(y)),
        (x, y) => x.or(y),
    };
    (
        by_feed
            .into_iter()
            .map(|(f, (lo, hi))| (f, lo, hi))
            .collect(),
        recheck,
    )
}
