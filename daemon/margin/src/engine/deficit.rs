//! Deficit: covering a bankrupt unit from the insurance fund, then by
//! auto-deleveraging opposing profitable positions, then from the venue.

use super::Engine;
use crate::error::EngineError;
use crate::fixed::{PPM, add, mul_div_ceil, mul_div_floor, sub, value};
use crate::types::*;
use std::sync::Arc;

impl Engine {
    /// Covers a bankrupt unit's deficit: insurance fund, then auto-deleveraging
    /// of opposing profitable positions, then the venue.
    pub(super) fn cover_deficit(
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
                    let Some(acct) = self.acct(h) else {
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
                let mut acct = self.account(h)?.clone();
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
                self.put_account(h, Arc::new(acct));
                self.touch(h);
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
}
