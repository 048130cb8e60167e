//! Prices and guards: applying a signed report's prices, the guard rails
//! that stop liquidation on a stale, wide or jumping price, and the marks
//! (perpetuals, futures, options and their portfolio scenarios) derived
//! from them.

use super::{Engine, FeedPrice, FeedState, GREEK_SCALE, Greeks, Mark, MarketState, YEAR_MS};
use crate::error::EngineError;
use crate::fixed::{PPM, PRICE_SCALE, mul_div_floor, rescale, round_to_scale};
use crate::options::{OptionInputs, PricingModel};
use crate::types::*;
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

/// Where a price report's wall-clock time went, by phase (a metric for
/// operators and benchmarks; not part of the state).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReportTiming {
    /// Validation, guards, marks, settlement and the trigger-index
    /// queries that decide which units to examine.
    pub prepare: Duration,
    /// The examinations: healths, liquidations, margin calls.
    pub examinations: Duration,
    /// The state root after them.
    pub root: Duration,
    /// Units examined.
    pub units: u64,
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

impl Engine {
    /// `apply_report` with only `(feed, price, decimals, confidence)` per
    /// feed (status ok, no EMA, no volatility).
    pub fn apply_prices<S: AsRef<str>>(
        &mut self,
        round: u64,
        timestamp_ms: u64,
        prices: &[(S, i128, u8, u128)],
    ) -> Result<Vec<EventRecord>, EngineError> {
        let report = PriceReport {
            round,
            timestamp_ms,
            prices: prices
                .iter()
                .map(|(feed, price, decimals, confidence)| PriceInput {
                    feed: feed.as_ref().to_string(),
                    price: *price,
                    decimals: *decimals,
                    confidence: *confidence,
                    ..PriceInput::default()
                })
                .collect(),
        };
        self.apply_report(&report)
    }

    /// Applies the feeds of one verified signed report. Feeds the engine
    /// does not know are ignored (a report covers many feeds). The whole
    /// report is refused, with nothing changed, if a known feed's price is
    /// not positive, out of range, or not newer than the last one applied.
    pub fn apply_report(&mut self, report: &PriceReport) -> Result<Vec<EventRecord>, EngineError> {
        let start = Instant::now();
        let (round, timestamp_ms) = (report.round, report.timestamp_ms);
        // Validate everything first.
        let mut accepted: BTreeMap<String, (FeedPrice, Option<GuardReason>)> = BTreeMap::new();
        for p in &report.prices {
            let (feed, raw, decimals, conf) =
                (p.feed.as_str(), &p.price, &p.decimals, &p.confidence);
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
            // A missing or non-positive EMA (older inputs) reads as none.
            let ema = if p.ema > 0 {
                rescale(p.ema, *decimals)?
            } else {
                0
            };
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
                        status: p.status,
                        flags: p.flags,
                        ema,
                        volatility: p.volatility,
                    },
                    jump,
                ),
            );
        }
        // Validation done: mutate. The bands of the units the last input
        // examined first: this report's crossings are checked against them.
        self.settle();
        self.out.clear();
        let mut scaled: Vec<(String, u64, u32, u32)> = Vec::new();
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
            if let Some(v) = &fs.config.vol_scaling {
                let next = v.next_ppm(fs.vol_multiplier_ppm, fp.volatility);
                if next != fs.vol_multiplier_ppm {
                    scaled.push((feed.clone(), fp.volatility, fs.vol_multiplier_ppm, next));
                    fs.vol_multiplier_ppm = next;
                }
            }
        }
        self.refresh_guards();
        if !scaled.is_empty() {
            // Requirements and scenario marks of these feeds moved: cached
            // option values are stale.
            self.grid.clear();
        }
        for feed in accepted.keys() {
            self.remark_feed(feed);
        }
        for (feed, volatility, from_ppm, to_ppm) in scaled {
            self.emit(Event::VolatilityScaled {
                feed: feed.clone(),
                volatility,
                from_ppm,
                to_ppm,
            });
            // Every holder of the feed's markets: its bands assumed the old
            // multiplier (collateral is valued without it).
            let holders: Vec<AccountId> = self
                .s
                .markets
                .iter()
                .filter(|(_, m)| m.config.feed == feed)
                .filter_map(|(name, _)| self.idx.holders.get(name))
                .flat_map(|h| h.iter().copied())
                .collect();
            for id in holders {
                self.queue_account(id);
            }
        }
        self.settle_expired()?;
        for (feed, (fp, _)) in &accepted {
            self.idx.crossed(feed, fp.price, &mut self.pending);
        }
        // EMA slots: only the feeds that price a collateral asset have them.
        let collateral_feeds: BTreeSet<&String> = self
            .s
            .assets
            .values()
            .map(|a| &a.feed)
            .filter(|f| accepted.contains_key(*f))
            .collect();
        for feed in collateral_feeds {
            let fp = &accepted[feed].0;
            self.idx
                .crossed(&super::ema_slot(feed), fp.ema.max(0), &mut self.pending);
        }
        self.idx.due(self.s.now_ms, &mut self.pending);
        if self.exhaustive {
            self.queue_every_unit();
        }
        let (examined, prepared) = (self.examined, Instant::now());
        self.drain_pending();
        self.prefill_due = true;
        let examinations = Instant::now();
        // A report closes a round: its root is part of the report's cost.
        // The examined units' new bands are not (`settle`).
        self.flush_root();
        self.timing = ReportTiming {
            prepare: prepared.duration_since(start),
            examinations: examinations.duration_since(prepared),
            root: examinations.elapsed(),
            units: self.examined - examined,
        };
        Ok(std::mem::take(&mut self.out))
    }

    /// Where the last accepted price report's time went (all zero before
    /// the first).
    pub fn last_report_timing(&self) -> ReportTiming {
        self.timing
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
        // The committee's own verdict on the leaf: no liquidation on a
        // degraded or unconfirmed price, reduce-only while stale, halted or
        // closed.
        if last.status != status::OK || last.flags & status::UNCONFIRMED_JUMP != 0 {
            return Some(GuardReason::Status {
                status: last.status,
                flags: last.flags,
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

    pub(super) fn guard_at(&self, feed: &str, now: u64) -> Option<GuardReason> {
        self.s
            .feeds
            .get(feed)
            .map_or(Some(GuardReason::NoPrice), |fs| Self::guard_of(fs, now))
    }

    /// Re-evaluates every feed's guard at the current clock; emits transitions.
    pub(super) fn refresh_guards(&mut self) {
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
            let keys: Vec<(AccountId, Unit)> = self
                .s
                .deferred
                .iter()
                .map(|(a, u)| (a, u.clone()))
                .collect();
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

    pub(super) fn remark_feed(&mut self, feed: &str) {
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
        let ms = self.market_state(market)?;
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
    pub(super) fn mark_at(
        market: &str,
        ms: &MarketState,
        fs: &FeedState,
        p: i128,
        now: u64,
    ) -> Result<Mark, EngineError> {
        let scen = fs.scenarios();
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
}
