//! Liquidation: examining a unit, deferring under a guard, flagging margin
//! calls, and closing positions (partially where that restores health).

use super::Engine;
use super::fills::Slice;
use crate::error::EngineError;
use crate::fixed::{PPM, add, mul_div_floor, ppm_ceil, ppm_floor, sub, value};
use crate::index::Key;
use crate::types::*;
use std::sync::Arc;

/// Pending units from which a pass computes healths on helper threads.
/// A heavy report at a million accounts examines ~1,400 units and a
/// health (the account's positions, their markets and marks, mostly cache
/// misses) is most of an examination; below this, waking a helper and
/// copying the pricing costs more than it saves (a threshold set when
/// helpers were spawned per pass; with parked helpers it could be lower).
const AHEAD_MIN: usize = 128;

/// When `drain_pending` computes healths on helper threads (a runtime
/// setting, not state: the events and the state are the same either way).
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

/// A unit's health and whether it has positions, computed from `acct`.
type Computed = (Result<Health, EngineError>, bool);

/// One pass's healths computed ahead: the pending keys in order, the
/// accounts as the pass began (`AccountIndex::begin_pass`), and a slot per
/// key that whichever thread claims it (`next`) fills. A filled slot is
/// valid while the pass has not changed the account
/// (`AccountIndex::unchanged_in_pass`): a health reads the account and
/// the pricing (markets, feeds, assets, risk), and during a pass only
/// accounts change, each through `put_account`, which the index records.
struct Ahead<'a> {
    keys: Vec<Key>,
    accounts: &'a super::accounts::AccountMap,
    /// Isolated units' markets by slot (`Engine::market_by_slot`).
    markets: &'a [String],
    slots: Vec<std::sync::OnceLock<Option<Computed>>>,
    next: std::sync::atomic::AtomicUsize,
    /// Helper threads running: counted in as one starts (before it
    /// claims anything), out as it returns or unwinds, so a block claimed
    /// by a helper that is gone (it panicked) is not waited for. The
    /// counters are sequentially consistent: whoever sees a helper's
    /// claim in `next` sees it counted in.
    helpers: std::sync::atomic::AtomicUsize,
}

impl<'a> Ahead<'a> {
    /// The work for `keys` (in order), reading `accounts` (the index as the
    /// pass began) and `markets` (isolated units' markets by slot).
    fn new(
        keys: Vec<Key>,
        accounts: &'a super::accounts::AccountMap,
        markets: &'a [String],
    ) -> Self {
        Ahead {
            slots: keys.iter().map(|_| Default::default()).collect(),
            keys,
            accounts,
            markets,
            next: 0.into(),
            helpers: 0.into(),
        }
    }

    /// The keys of block `b` (`warm::BATCH` keys: a thread claims a block,
    /// reads its accounts ahead, then computes its healths).
    fn block(&self, b: usize) -> std::ops::Range<usize> {
        let start = b.saturating_mul(crate::warm::BATCH).min(self.keys.len());
        start..(start + crate::warm::BATCH).min(self.keys.len())
    }

    /// Fills every slot of block `b` (claimed by the caller).
    fn fill_block(&self, b: usize, pricing: super::health::Pricing<'_>) {
        let range = self.block(b);
        let keys = &self.keys[range.clone()];
        crate::warm::accounts(
            keys.iter()
                .filter_map(|k| self.accounts.get(&k.account))
                .map(|a| &**a),
        );
        for (slot, key) in self.slots[range].iter().zip(keys) {
            let unit = super::unit_of_slot(key.slot, self.markets);
            let computed = unit
                .zip(self.accounts.get(&key.account))
                .map(|(unit, acct)| pricing.examined(acct, &unit));
            // Only the claimer fills a slot (a lost race leaves the first).
            let _ = slot.set(computed);
        }
    }

    /// Claims the next unclaimed block and fills it; false when none is left.
    fn fill_next(&self, pricing: super::health::Pricing<'_>) -> bool {
        let b = self.next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        if self.block(b).is_empty() {
            return false;
        }
        self.fill_block(b, pricing);
        true
    }

    /// The health of slot `i` as of the pass's start, once the slot is
    /// filled: claims and fills its block first if nobody has, and fills
    /// later blocks while a helper is still on it. None: compute it.
    fn wait_for(&self, i: usize, pricing: super::health::Pricing<'_>) -> Option<Computed> {
        use std::sync::atomic::Ordering::SeqCst;
        let b = i / crate::warm::BATCH;
        loop {
            if let Some(done) = self.slots[i].get() {
                return done.clone();
            }
            if self.next.fetch_max(b + 1, SeqCst) <= b {
                // Unclaimed, now ours (blocks before it are behind the
                // examining thread: nobody needs them).
                self.fill_block(b, pricing);
                continue;
            }
            if self.helpers.load(SeqCst) == 0 {
                // Claimed by a helper that is gone: nobody will fill it.
                return None;
            }
            // A helper is on it: fill a later block meanwhile.
            if !self.fill_next(pricing) {
                std::thread::yield_now();
            }
        }
    }
}

/// Counts a helper out when it returns or unwinds.
struct HelperDone<'a>(&'a std::sync::atomic::AtomicUsize);

impl Drop for HelperDone<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Engine {
    /// Test and tuning knob: compute healths on helper threads from
    /// `min_units` pending units, with `threads` threads in all (0: the
    /// machine's cores; 1: never). Changes nothing but the time a report
    /// takes.
    pub fn set_health_ahead(&mut self, min_units: usize, threads: usize) {
        self.ahead = HealthAhead { min_units, threads };
    }

    /// Reads ahead what examining `keys` looks up first: each account's
    /// entry in the id index and its first line, and its tree slot.
    fn warm_keys(&self, keys: &[Key]) {
        crate::warm::lines(keys.iter().filter_map(|k| self.acct(k.account)));
        self.warm_slots(keys.iter().map(|k| k.account));
    }

    pub(super) fn drain_pending(&mut self) {
        let threads = match self.ahead.threads {
            0 => crate::state_root::cores(),
            t => t,
        };
        if threads < 2 || self.pending.len() < self.ahead.min_units.max(1) {
            while let Some(k) = self.pending.pop_first() {
                self.examine(k, None);
            }
            return;
        }
        let accounts = self.by_id.begin_pass();
        let markets = self.market_by_slot.clone();
        let ahead = Ahead::new(self.pending.iter().copied().collect(), &accounts, &markets);
        let copy = self.pricing_copy();
        let help = || {
            ahead
                .helpers
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let _done = HelperDone(&ahead.helpers);
            while ahead.fill_next(copy.view()) {}
        };
        crate::parallel::with_helpers(threads - 1, help, || {
            // Each examination may liquidate and queue deleveraged units;
            // every step closes size or removes a unit, so the loop ends.
            // Keys come out in order except those queued behind the pass
            // (an account's other units after a liquidation), which find
            // nothing ahead.
            let mut cur = 0;
            let mut warmed = 0;
            while let Some(k) = self.pending.pop_first() {
                while ahead.keys.get(cur).is_some_and(|c| *c < k) {
                    cur += 1;
                }
                if cur >= warmed {
                    warmed = (cur + crate::warm::BATCH).min(ahead.keys.len());
                    self.warm_keys(ahead.keys.get(cur..warmed).unwrap_or_default());
                }
                let mut pre = None;
                if ahead.keys.get(cur) == Some(&k) {
                    if self.by_id.unchanged_in_pass(k.account) {
                        pre = ahead.wait_for(cur, copy.view());
                    }
                    cur += 1;
                }
                self.examine(k, pre);
            }
            // Nothing left to examine: helpers stop at their next claim
            // (one that starts only now finds nothing).
            ahead
                .next
                .fetch_max(ahead.keys.len(), std::sync::atomic::Ordering::SeqCst);
        });
        drop(ahead);
        drop(accounts);
        self.by_id.end_pass();
    }

    /// Re-evaluates one unit: liquidate, defer, or flag a margin call;
    /// reindex. `pre`: its health and whether it has positions, computed
    /// ahead from the account as it is now.
    fn examine(&mut self, key: Key, pre: Option<Computed>) {
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
        let (health, has_positions) = pre.unwrap_or_else(|| self.pricing().examined(acct, &unit));
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
        // One search of the margin-call set (a B-tree over every unit in
        // call): `insert` and `remove` say whether they changed it.
        if has_positions && h.equity < h.initial {
            if self.s.margin_calls.insert(id) {
                self.touch(key.account);
                self.emit(Event::MarginCall {
                    account: key.account,
                    unit: unit.clone(),
                    health: h,
                });
            }
        } else if (!has_positions || h.equity >= clear_at) && self.s.margin_calls.remove(&id) {
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A health computed ahead serves only while the pass has not changed
    /// the account: accounts replaced during the pass (even by an equal
    /// copy) read as changed, and lookups see the replacement at once;
    /// the others' healths are the current ones. `drain_pending`'s
    /// interleaving with its helpers depends on timing (tests/engine.rs
    /// runs a pass whose deleveraging makes healths stale); this pins the
    /// check that makes every interleaving equal.
    #[test]
    fn a_health_computed_ahead_serves_only_unchanged_accounts() {
        let mut e = crate::demo::demo_book(7, 40).engine;
        e.queue_every_unit();
        let keys: Vec<Key> = std::mem::take(&mut e.pending).into_iter().collect();
        let accounts = e.by_id.begin_pass();
        let markets = e.market_by_slot.clone();
        let ahead = Ahead::new(keys, &accounts, &markets);
        let copy = e.pricing_copy();
        while ahead.fill_next(copy.view()) {}
        // Replace every other account before its units are read.
        let mut replaced = std::collections::BTreeMap::new();
        for key in &ahead.keys {
            if key.account % 2 == 0 && !replaced.contains_key(&key.account) {
                let acct = Arc::new(Account::clone(e.acct(key.account).unwrap()));
                e.put_account(key.account, Arc::clone(&acct));
                replaced.insert(key.account, acct);
            }
        }
        let (mut used, mut computed) = (0, 0);
        for (i, key) in ahead.keys.iter().enumerate() {
            let acct = Arc::clone(e.acct(key.account).unwrap());
            if let Some(new) = replaced.get(&key.account) {
                assert!(!e.by_id.unchanged_in_pass(key.account), "{key:?}");
                assert!(Arc::ptr_eq(&acct, new), "{key:?}");
                computed += 1;
            } else {
                assert!(e.by_id.unchanged_in_pass(key.account), "{key:?}");
                let unit = e.unit_of(*key).unwrap();
                let fresh = (
                    e.health_of(&acct, &unit),
                    !Engine::unit_positions(&acct, &unit).is_empty(),
                );
                assert_eq!(ahead.wait_for(i, copy.view()), Some(fresh), "{key:?}");
                used += 1;
            }
        }
        assert!(
            used > 15 && computed > 15,
            "{used} used, {computed} computed"
        );
        // The pass's changes merge into the index when it ends.
        drop(ahead);
        drop(accounts);
        e.by_id.end_pass();
        assert!(e.account_index_matches_state());
        for (id, new) in &replaced {
            assert!(Arc::ptr_eq(e.acct(*id).unwrap(), new));
            assert!(e.by_id.unchanged_in_pass(*id));
        }
    }

    /// A clone of an engine shares the account index until one of them
    /// changes an account; the other keeps its own.
    #[test]
    fn cloned_engines_keep_their_own_accounts() {
        let mut e = crate::demo::demo_book(7, 10).engine;
        let before = e.clone();
        let id = *e.s.accounts.keys().next().unwrap();
        let mut acct = Account::clone(e.acct(id).unwrap());
        acct.cash += 1;
        e.put_account(id, Arc::new(acct));
        assert_eq!(e.acct(id).unwrap().cash, before.acct(id).unwrap().cash + 1);
        assert!(e.account_index_matches_state());
        assert!(before.account_index_matches_state());
    }
}
