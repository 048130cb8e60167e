//! Settlement of expired futures and options.

use super::{Engine, Greeks, Mark};
use crate::error::EngineError;
use crate::options::OptionKind;
use crate::types::*;
use std::sync::Arc;

impl Engine {
    /// Settles markets whose expiry passed, at the feed price (futures) or
    /// intrinsic value (options), unless the feed's guard is up.
    pub(super) fn settle_expired(&mut self) -> Result<(), EngineError> {
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
                let Some(mut acct) = self.acct(id).map(|a| Account::clone(a)) else {
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
                self.put_account(id, Arc::new(acct));
                self.touch(id);
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
}
