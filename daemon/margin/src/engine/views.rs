//! Read-only views for the API, the daemon's metrics and the tests.

use super::{Engine, Greeks};
use crate::error::EngineError;
use crate::fixed::{PPM, add};
use crate::types::*;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

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

impl Engine {
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
        let units = Self::units_of(acct);
        let mut out = Vec::new();
        for unit in units {
            let health = self.health_of(acct, &unit)?;
            let mut greeks: BTreeMap<String, Greeks> = BTreeMap::new();
            for (m, p) in Self::unit_positions(acct, &unit) {
                let (ms, mark) = self.mark_of(m)?;
                let g = greeks.entry(ms.config.feed.clone()).or_default();
                let scale = |x: i128| crate::fixed::qty_times(p.size, x, "greeks");
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

    /// The `n` units with positions closest to liquidation, ordered by
    /// equity / maintenance at the current marks, lowest first.
    ///
    /// No scan: candidates come from the at-risk ranking the engine keeps
    /// as it examines units (`Rank`: below maintenance, then in margin
    /// call, then the rest; within a class by the ratio at the unit's last
    /// examination). The candidates are every unit below maintenance or in
    /// margin call (classes are exact: the trigger bands hold both
    /// requirements) and the next `max(n, 1024)` by their last ratio; they
    /// are evaluated now and the `n` lowest current ratios returned (so
    /// answers for any `n <= 1024` are prefixes of one another). So a
    /// unit below maintenance or in margin call that a full scan ranks in
    /// the first `n` is always returned; a healthy unit's ratio may have
    /// moved since its last examination, within its trigger bands. Cost:
    /// O((units at risk + n) log units).
    pub fn closest_to_liquidation(&self, n: usize) -> Vec<AtRisk> {
        let extra = n.max(1024);
        let mut healthy = 0usize;
        let mut v = Vec::new();
        for (rank, key) in self.idx.ranked() {
            // Examined since the last `settle`: taken below, whatever rank.
            if self.unbanded.contains_key(&key) {
                continue;
            }
            if rank.class >= 2 {
                if healthy == extra {
                    break;
                }
                healthy += 1;
            }
            v.extend(self.at_risk_now(key));
        }
        // Units whose rank waits for `settle` (at most the units of the
        // inputs since): every one with positions is a candidate.
        v.extend(self.unbanded.keys().filter_map(|k| self.at_risk_now(*k)));
        sort_at_risk(&mut v);
        v.truncate(n);
        v
    }

    /// A unit with positions at the current marks (`None`: gone, no
    /// positions, or not evaluable).
    fn at_risk_now(&self, key: crate::index::Key) -> Option<AtRisk> {
        let unit = self.unit_of(key)?;
        let acct = self.acct(key.account)?;
        if Self::unit_positions(acct, &unit).is_empty() {
            return None;
        }
        let health = self.health_of(acct, &unit).ok()?;
        Some(AtRisk {
            account: key.account,
            margin_ratio_ppm: margin_ratio_ppm(&health),
            unit,
            health,
        })
    }

    /// `closest_to_liquidation` by evaluating every unit (O(units)): the
    /// reference the ranking is tested against.
    pub fn closest_to_liquidation_scan(&self, n: usize) -> Vec<AtRisk> {
        let mut v = Vec::new();
        for (id, acct) in &self.s.accounts {
            let units = Self::units_of(acct);
            for unit in units {
                if Self::unit_positions(acct, &unit).is_empty() {
                    continue;
                }
                let Ok(health) = self.health_of(acct, &unit) else {
                    continue;
                };
                v.push(AtRisk {
                    account: *id,
                    margin_ratio_ppm: margin_ratio_ppm(&health),
                    unit,
                    health,
                });
            }
        }
        sort_at_risk(&mut v);
        v.truncate(n);
        v
    }

    /// Units in the at-risk ranking (those with positions), as of the
    /// last [`Engine::settle`].
    pub fn ranked_units(&self) -> usize {
        self.idx.ranked_units()
    }

    /// Ranks every unit with positions from its health now (restoring a
    /// snapshot that did not store the ranking).
    pub(super) fn rank_every_unit(&mut self) {
        let mut ranks = Vec::new();
        for (id, acct) in &self.s.accounts {
            for unit in Self::units_of(acct) {
                let Some(key) = self.key_of(*id, &unit) else {
                    continue;
                };
                let rank = (!Self::unit_positions(acct, &unit).is_empty())
                    .then(|| self.health_of(acct, &unit).ok())
                    .flatten()
                    .map(|h| super::triggers::rank_of_health(&h));
                ranks.push((key, rank));
            }
        }
        for (key, rank) in ranks {
            self.idx.set_rank(key, rank);
        }
    }

    /// Revalues every unit at the current marks (no events, no changes).
    pub fn revalue_all(&self) -> Revaluation {
        let mut r = Revaluation::default();
        for acct in self.s.accounts.values() {
            let units = Self::units_of(acct);
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
}

fn margin_ratio_ppm(h: &Health) -> i128 {
    if h.maintenance > 0 {
        h.equity.saturating_mul(PPM) / h.maintenance
    } else {
        i128::MAX
    }
}

fn sort_at_risk(v: &mut [AtRisk]) {
    v.sort_by(|a, b| {
        a.margin_ratio_ppm
            .cmp(&b.margin_ratio_ppm)
            .then(a.account.cmp(&b.account))
            .then(a.unit.cmp(&b.unit))
    });
}
