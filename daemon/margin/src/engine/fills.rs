//! Fills: moving size and money between an account, its units and the venue.

use super::Engine;
use crate::error::EngineError;
use crate::fixed::{add, sub, value};
use crate::types::*;
use std::sync::Arc;

/// One fill of a liquidation or deleveraging, before it is committed.
pub(super) struct Slice {
    pub(super) market: String,
    pub(super) size: i128,
    pub(super) paid: i128,
    pub(super) price: i128,
    pub(super) realized: i128,
}

impl Engine {
    /// Buys `d` (signed) at `price` into `pos`; returns (money paid v, realized PnL).
    /// The counterparty gets exactly `-d` and `+v`.
    pub(super) fn fill(
        pos: &mut Position,
        d: i128,
        price: i128,
    ) -> Result<(i128, i128), EngineError> {
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

    pub(super) fn venue_fill(&mut self, market: &str, d: i128, v: i128) -> Result<(), EngineError> {
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
    pub(super) fn credit(acct: &mut Account, unit: &Unit, amount: i128) -> Result<(), EngineError> {
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

    pub(super) fn credit_unit(
        &mut self,
        account: AccountId,
        unit: &Unit,
        amount: i128,
    ) -> Result<(), EngineError> {
        let mut a = Account::clone(self.account(account)?);
        Self::credit(&mut a, unit, amount)?;
        self.put_account(account, Arc::new(a));
        self.touch(account);
        Ok(())
    }

    /// The unit's base balance (cash, or the isolated pool).
    pub(super) fn base_of(acct: &Account, unit: &Unit) -> i128 {
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
    pub(super) fn tidy(
        &mut self,
        account: AccountId,
        acct: &mut Account,
    ) -> Result<(), EngineError> {
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
                self.unindex(k);
            }
        }
        for m in acct.positions.keys() {
            self.idx.add_holder(m, account);
        }
        Ok(())
    }

    /// Applies slices to the venue, installs the account, emits fills.
    pub(super) fn commit_fills(
        &mut self,
        account: AccountId,
        mut a: Account,
        slices: &[Slice],
        reason: FillReason,
    ) -> Result<Vec<ClosedSlice>, EngineError> {
        let closed = self.commit_fills_keep(account, slices, reason)?;
        self.tidy(account, &mut a)?;
        self.put_account(account, Arc::new(a));
        self.touch(account);
        Ok(closed)
    }

    pub(super) fn commit_fills_keep(
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
}
