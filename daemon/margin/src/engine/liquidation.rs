//! Liquidation: examining a unit, deferring under a guard, flagging margin
//! calls, and closing positions (partially where that restores health).

use super::Engine;
use super::fills::Slice;
use crate::error::EngineError;
use crate::fixed::{PPM, add, mul_div_floor, ppm_ceil, ppm_floor, sub, value};
use crate::index::Key;
use crate::types::*;
use std::sync::Arc;

/// Units pending from which their healths are computed ahead, split over
/// the cores: a heavy report at a million accounts examines ~1,400 units,
/// and a health (the positions, their markets and marks) is most of an
/// examination. Below this, one core is quicker than starting a thread.
const AHEAD_MIN: usize = 256;

/// When `drain_pending` computes healths ahead (a runtime setting, not
/// state: the events and the state are the same either way).
#[derive(Clone, Copy, Debug)]
pub(super) struct HealthAhead {
    min_units: usize,
    /// 0: the machine's cores.
    threads: usize,
}

impl Default for HealthAhead {
    fn default() -> Self {
        HealthAhead {
            min_units: AHEAD_MIN,
            threads: 0,
        }
    }
}

/// A unit's health computed ahead of its examination, from `acct`. Valid
/// while the account is still that `Arc`: a health reads the account and
/// the markets, feeds, assets and risk configuration, and during an
/// examination pass only accounts change, each by replacing its `Arc`
/// (`put_account`). Holding the `Arc` keeps its address from being
/// reused, so pointer equality means "unchanged".
struct Ahead {
    key: Key,
    acct: Arc<Account>,
    health: Result<Health, EngineError>,
    has_positions: bool,
}

impl Engine {
    /// Test and tuning knob: compute healths ahead from `min_units`
    /// pending units on `threads` threads (0: the machine's cores; 1:
    /// never). Changes nothing but the time a report takes.
    pub fn set_health_ahead(&mut self, min_units: usize, threads: usize) {
        self.ahead = HealthAhead { min_units, threads };
    }

    pub(super) fn drain_pending(&mut self) {
        let mut ahead = self.healths_ahead().into_iter().peekable();
        // Each examination may liquidate and queue deleveraged units; every
        // step closes size or removes a unit, so the loop ends. Keys come
        // out in order except those queued behind the pass (an account's
        // other units after a liquidation), which find no health ahead.
        while let Some(k) = self.pending.pop_first() {
            while ahead.next_if(|a| a.key < k).is_some() {}
            let pre = ahead.next_if(|a| a.key == k);
            self.examine(k, pre);
        }
    }

    /// The healths of the pending units, in key order, computed over
    /// threads; empty when there are too few to be worth it.
    fn healths_ahead(&self) -> Vec<Ahead> {
        let n = self.pending.len();
        let threads = match self.ahead.threads {
            0 => crate::state_root::cores(),
            t => t,
        };
        if threads < 2 || n < self.ahead.min_units.max(1) {
            return Vec::new();
        }
        let keys: Vec<Key> = self.pending.iter().copied().collect();
        let compute = |chunk: &[Key]| -> Vec<Ahead> {
            chunk
                .iter()
                .filter_map(|key| {
                    let unit = self.unit_of(*key)?;
                    let acct = self.acct(key.account)?;
                    Some(Ahead {
                        key: *key,
                        acct: Arc::clone(acct),
                        health: self.health_of(acct, &unit),
                        has_positions: !Self::unit_positions(acct, &unit).is_empty(),
                    })
                })
                .collect()
        };
        let mut chunks = keys.chunks(n.div_ceil(threads));
        let first = chunks.next().unwrap_or_default();
        std::thread::scope(|scope| {
            let rest: Vec<_> = chunks
                .map(|chunk| scope.spawn(move || compute(chunk)))
                .collect();
            let mut all = compute(first);
            for part in rest {
                match part.join() {
                    Ok(v) => all.extend(v),
                    Err(panic) => std::panic::resume_unwind(panic),
                }
            }
            all
        })
    }

    /// Re-evaluates one unit: liquidate, defer, or flag a margin call;
    /// reindex. `pre`: its health computed ahead, used if still valid.
    fn examine(&mut self, key: Key, pre: Option<Ahead>) {
        self.examined += 1;
        let Some(unit) = self.unit_of(key) else {
            return;
        };
        let Some(acct) = self.acct(key.account) else {
            self.unindex(key);
            return;
        };
        if let Unit::Isolated { market } = &unit
            && acct
                .positions
                .get(market)
                .is_none_or(|p| p.isolated.is_none())
        {
            self.unindex(key);
            return;
        }
        let (health, has_positions) = match pre {
            Some(a) if Arc::ptr_eq(&a.acct, acct) => (a.health, a.has_positions),
            _ => (
                self.health_of(acct, &unit),
                !Self::unit_positions(acct, &unit).is_empty(),
            ),
        };
        let h = match health {
            Ok(h) => h,
            Err(e) => {
                self.emit(Event::EvaluationFailed {
                    account: key.account,
                    unit,
                    error: e.to_string(),
                });
                self.unindex(key);
                return;
            }
        };
        let id = (key.account, unit.clone());
        if h.equity < h.maintenance || h.equity < 0 {
            let feeds = self.unit_feeds(acct, &unit);
            if let Some((feed, reason)) = self.first_guard(&feeds) {
                if self.s.deferred.insert(id.clone()) {
                    self.touch(key.account);
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
            if self.s.deferred.remove(&id) {
                self.touch(key.account);
            }
            if let Err(e) = self.liquidate(key.account, &unit, h) {
                self.emit(Event::EvaluationFailed {
                    account: key.account,
                    unit: unit.clone(),
                    error: e.to_string(),
                });
                return;
            }
            if self.s.margin_calls.remove(&id) {
                self.touch(key.account);
            }
            // Every unit of the account may have moved (an isolated pool
            // returns to cash): examine them all again.
            self.queue_account(key.account);
            return;
        }
        if self.s.deferred.remove(&id) {
            self.touch(key.account);
        }
        // Called below initial; cleared only at initial plus the buffer.
        let clear_at = super::triggers::clear_level(
            h.initial,
            h.maintenance,
            self.s.risk.margin_call_clear_buffer_ppm,
        );
        let in_call = self.s.margin_calls.contains(&id);
        if has_positions && h.equity < h.initial {
            if !in_call {
                self.s.margin_calls.insert(id.clone());
                self.touch(key.account);
                self.emit(Event::MarginCall {
                    account: key.account,
                    unit: unit.clone(),
                    health: h,
                });
            }
        } else if in_call && (!has_positions || h.equity >= clear_at) {
            self.s.margin_calls.remove(&id);
            self.touch(key.account);
            self.emit(Event::MarginCallCleared {
                account: key.account,
                unit: unit.clone(),
                health: h,
            });
        }
        self.reindex(key, &unit, h);
    }

    fn liquidate(
        &mut self,
        account: AccountId,
        unit: &Unit,
        before: Health,
    ) -> Result<(), EngineError> {
        let acct0 = self.account(account)?.clone();
        let positions: Vec<(String, i128)> = Self::unit_positions(&acct0, unit)
            .into_iter()
            .map(|(m, p)| (m.clone(), p.size))
            .collect();
        let buffer = i128::from(self.s.risk.liquidation_buffer_ppm);
        // Partial: the smallest configured fraction that restores health with a buffer.
        if before.equity > 0 && !positions.is_empty() {
            let steps = self.s.risk.partial_steps_ppm.clone();
            for step in steps {
                let Closing {
                    account: mut a,
                    slices,
                    penalty,
                    to_liquidator: to_liq,
                } = self.close_at_mark(account, &acct0, unit, &positions, Some(step))?;
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
        let Closing {
            account: mut a,
            slices,
            penalty: raw_pen,
            to_liquidator: raw_liq,
        } = self.close_at_mark(account, &acct0, unit, &positions, None)?;
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
        self.put_account(account, Arc::new(a));
        self.touch(account);
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
            .acct(account)
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
            .take_account(account)
            .ok_or(EngineError::UnknownAccount { account })?;
        self.tidy(account, &mut a)?;
        self.put_account(account, Arc::new(a));
        self.touch(account);
        Ok(())
    }

    /// The one close path of partial and full liquidation: closes
    /// `fraction_ppm` of each position (all of it for `None`; a position
    /// whose fraction rounds to zero is skipped) at its mark on a copy of
    /// `acct`, crediting realized PnL to the unit, and adds up each market's
    /// penalty and the liquidator's share of it. Nothing is committed and
    /// no penalty is debited yet.
    fn close_at_mark(
        &self,
        account: AccountId,
        acct: &Account,
        unit: &Unit,
        positions: &[(String, i128)],
        fraction_ppm: Option<u32>,
    ) -> Result<Closing, EngineError> {
        let mut a = acct.clone();
        let mut slices = Vec::new();
        let mut penalty = 0i128;
        let mut to_liquidator = 0i128;
        for (m, size) in positions {
            let c = match fraction_ppm {
                Some(step) => {
                    let c = crate::fixed::mul(*size, i128::from(step), "partial size")? / PPM;
                    if c == 0 {
                        continue;
                    }
                    c
                }
                None => *size,
            };
            let (ms, mark) = self.mark_of(m)?;
            let price = mark.price;
            let rate = ms
                .config
                .liquidation_penalty_ppm
                .min(self.s.risk.max_liquidation_penalty_ppm);
            let pen = ppm_ceil(value(c, price)?.abs(), i128::from(rate))?;
            to_liquidator = add(
                to_liquidator,
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
        Ok(Closing {
            account: a,
            slices,
            penalty,
            to_liquidator,
        })
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
}

/// Positions closed at mark on a copy of the account, not yet committed.
struct Closing {
    /// The account after the fills (penalty not yet debited).
    account: Account,
    /// The fills, to commit.
    slices: Vec<Slice>,
    /// Σ penalty over the closed markets.
    penalty: i128,
    /// The liquidator's share of `penalty`.
    to_liquidator: i128,
}
