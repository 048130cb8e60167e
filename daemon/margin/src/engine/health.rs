//! Health: a unit's equity and its initial and maintenance requirements
//! (linear per position, or portfolio margin over the feed's scenario grid).

use super::{Engine, FeedState, Mark, MarketState};
use crate::error::EngineError;
use crate::fixed::{PPM, add, mul_div_floor, ppm_ceil, ppm_floor, sub, value};
use crate::types::*;
use std::collections::{BTreeMap, BTreeSet};

pub(super) fn max_rate_ppm(m: &MarketConfig) -> i128 {
    i128::from(m.max_rate_ppm)
}

/// What a linear position of notional `n` adds to both base rates (ppm):
/// size growth plus the concentration add-on.
pub(super) fn size_add_on_ppm(c: &MarketConfig, n: i128) -> Result<i128, EngineError> {
    let growth = mul_div_floor(
        n,
        i128::from(c.growth_ppm_per_million),
        1_000_000 * crate::fixed::MONEY_SCALE,
        "requirement growth",
    )?;
    let Some(k) = &c.concentration else {
        return Ok(growth);
    };
    let over = n.saturating_sub(k.liquidity_notional).max(0);
    let add = crate::fixed::mul_div_ceil(
        over,
        i128::from(k.add_on_ppm),
        k.liquidity_notional.max(1),
        "concentration add-on",
    )?;
    add_checked(growth, add)
}

fn add_checked(a: i128, b: i128) -> Result<i128, EngineError> {
    add(a, b, "requirement add-on")
}

/// What a health reads besides the account: the markets and their marks,
/// the feeds, the collateral assets and the risk parameters. None of it
/// changes while a pass examines units (only accounts, flags and funds
/// do), so a pass computes healths on other threads from a copy
/// (`PricingCopy`; `liquidation.rs`, `drain_pending`).
#[derive(Clone, Copy)]
pub(super) struct Pricing<'a> {
    markets: &'a BTreeMap<String, MarketState>,
    feeds: &'a BTreeMap<String, FeedState>,
    assets: &'a BTreeMap<String, AssetConfig>,
    risk: &'a RiskParams,
}

/// An owned copy of what `Pricing` reads (a few feeds and markets).
pub(super) struct PricingCopy {
    markets: BTreeMap<String, MarketState>,
    feeds: BTreeMap<String, FeedState>,
    assets: BTreeMap<String, AssetConfig>,
    risk: RiskParams,
}

impl PricingCopy {
    pub(super) fn view(&self) -> Pricing<'_> {
        Pricing {
            markets: &self.markets,
            feeds: &self.feeds,
            assets: &self.assets,
            risk: &self.risk,
        }
    }
}

impl Engine {
    pub(super) fn pricing(&self) -> Pricing<'_> {
        Pricing {
            markets: &self.s.markets,
            feeds: &self.s.feeds,
            assets: &self.s.assets,
            risk: &self.s.risk,
        }
    }

    pub(super) fn pricing_copy(&self) -> PricingCopy {
        PricingCopy {
            markets: self.s.markets.clone(),
            feeds: self.s.feeds.clone(),
            assets: self.s.assets.clone(),
            risk: self.s.risk.clone(),
        }
    }

    pub(super) fn market_state(&self, market: &str) -> Result<&MarketState, EngineError> {
        self.pricing().market_state(market)
    }

    pub(super) fn mark_of(&self, market: &str) -> Result<(&MarketState, &Mark), EngineError> {
        self.pricing().mark_of(market)
    }

    /// Positions of a unit.
    pub(super) fn unit_positions<'a>(
        acct: &'a Account,
        unit: &Unit,
    ) -> Vec<(&'a String, &'a Position)> {
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
        self.pricing().health(acct, unit)
    }
}

impl<'a> Pricing<'a> {
    pub(super) fn market_state(&self, market: &str) -> Result<&'a MarketState, EngineError> {
        self.markets
            .get(market)
            .ok_or_else(|| EngineError::UnknownMarket {
                market: market.to_string(),
            })
    }

    pub(super) fn mark_of(&self, market: &str) -> Result<(&'a MarketState, &'a Mark), EngineError> {
        let ms = self.market_state(market)?;
        let mark = ms.mark.as_ref().ok_or_else(|| EngineError::NoPrice {
            market: market.to_string(),
            feed: ms.config.feed.clone(),
        })?;
        Ok((ms, mark))
    }

    fn collateral_value(&self, collateral: &BTreeMap<String, i128>) -> Result<i128, EngineError> {
        let mut total = 0i128;
        for (asset, qty) in collateral {
            let Some(cfg) = self.assets.get(asset) else {
                continue;
            };
            let Some(price) = self
                .feeds
                .get(&cfg.feed)
                .and_then(|f| f.collateral_price(*qty))
            else {
                continue;
            };
            let v = value(*qty, price)?;
            let v = if v > 0 {
                ppm_floor(v, PPM - i128::from(cfg.haircut_ppm))?
            } else {
                v
            };
            total = add(total, v, "collateral value")?;
        }
        Ok(total)
    }

    /// Equity and requirements of one unit of `acct` at the current marks.
    pub(super) fn health(&self, acct: &Account, unit: &Unit) -> Result<Health, EngineError> {
        self.health_of_positions(acct, unit, &Engine::unit_positions(acct, unit))
    }

    /// The health of a unit and whether it holds positions (what an
    /// examination needs), walking its positions once.
    pub(super) fn examined(
        &self,
        acct: &Account,
        unit: &Unit,
    ) -> (Result<Health, EngineError>, bool) {
        let positions = Engine::unit_positions(acct, unit);
        (
            self.health_of_positions(acct, unit, &positions),
            !positions.is_empty(),
        )
    }

    /// `health` given the unit's positions (`Engine::unit_positions`).
    fn health_of_positions(
        &self,
        acct: &Account,
        unit: &Unit,
        positions: &[(&String, &Position)],
    ) -> Result<Health, EngineError> {
        let mut equity = match unit {
            Unit::Cross => add(
                acct.cash,
                self.collateral_value(&acct.collateral)?,
                "equity",
            )?,
            Unit::Isolated { .. } => positions.first().and_then(|(_, p)| p.isolated).unwrap_or(0),
        };
        // Each position's market and mark, looked up once (market names
        // are map keys: a lookup is a few string comparisons).
        let legs = positions
            .iter()
            .map(|(m, p)| {
                let (ms, mark) = self.mark_of(m)?;
                Ok((m.as_str(), ms, mark, *p))
            })
            .collect::<Result<Vec<_>, EngineError>>()?;
        let mut notional = 0i128;
        let mut has_option = false;
        for (_, ms, mark, p) in &legs {
            let v = value(p.size, mark.price)?;
            equity = add(equity, add(p.quote, v, "position value")?, "equity")?;
            notional = add(notional, v.abs(), "notional")?;
            has_option |= matches!(ms.config.kind, MarketKind::Option { .. });
        }
        if !has_option {
            let (mut initial, mut maintenance) = (0i128, 0i128);
            for (_, ms, mark, p) in &legs {
                let n = value(p.size, mark.price)?.abs();
                let c = &ms.config;
                let fs = self
                    .feeds
                    .get(&c.feed)
                    .ok_or_else(|| EngineError::UnknownFeed {
                        feed: c.feed.clone(),
                    })?;
                let growth = size_add_on_ppm(c, n)?;
                let im_rate = (fs.scaled_rate_ppm(c.initial_ppm) + growth).min(max_rate_ppm(c));
                let mm_rate = (fs.scaled_rate_ppm(c.maintenance_ppm) + growth).min(max_rate_ppm(c));
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
        for (m, ms, mark, p) in &legs {
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
                .feeds
                .get(feed)
                .ok_or_else(|| EngineError::UnknownFeed {
                    feed: feed.to_string(),
                })?;
            let mut worst = 0i128;
            for (i, loss) in l.iter().enumerate() {
                worst = worst.max(ppm_ceil(*loss, fs.scenario_weight_ppm(i))?);
            }
            maintenance = add(maintenance, worst, "maintenance")?;
        }
        let initial = ppm_ceil(
            maintenance,
            i128::from(self.risk.portfolio_initial_ratio_ppm),
        )?;
        Ok(Health {
            equity,
            initial,
            maintenance,
            notional,
            portfolio: true,
        })
    }
}

impl Engine {
    /// Trigger-index slots a unit depends on: its positions' feeds, and for
    /// cross its collateral's feeds and their EMA slots.
    pub(super) fn unit_slots(&self, acct: &Account, unit: &Unit) -> BTreeSet<String> {
        let mut f = self.unit_feeds(acct, unit);
        if *unit == Unit::Cross {
            for (a, q) in &acct.collateral {
                if *q != 0
                    && let Some(c) = self.s.assets.get(a)
                {
                    f.insert(super::ema_slot(&c.feed));
                }
            }
        }
        f
    }

    /// Feeds a unit depends on (position underlyings, and collateral for cross).
    pub(super) fn unit_feeds(&self, acct: &Account, unit: &Unit) -> BTreeSet<String> {
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

    pub(super) fn first_guard(&self, feeds: &BTreeSet<String>) -> Option<(String, GuardReason)> {
        for f in feeds {
            if let Some(g) = self.s.feeds.get(f).and_then(|fs| fs.guard.clone()) {
                return Some((f.clone(), g));
            }
        }
        None
    }
}
