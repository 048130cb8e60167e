//! Sanity checks: a [`RawQuote`] (text from a venue) becomes a [`Quote`]
//! (fixed-point integers at the feed's decimals) or a typed [`Rejection`].

use crate::decimal::{parse_fixed, pow10};
use crate::error::Rejection;
use crate::venue::RawQuote;

/// Bounds a quote must respect to be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SanityLimits {
    /// Prices above this many whole units are absurd (default 10^12).
    pub max_price_units: u64,
    /// A venue timestamp older than this is stale.
    pub max_age_ms: u64,
    /// A venue timestamp further ahead than this is from the future (clock skew allowance).
    pub max_future_ms: u64,
}

impl Default for SanityLimits {
    fn default() -> Self {
        SanityLimits {
            max_price_units: 1_000_000_000_000,
            max_age_ms: 30_000,
            max_future_ms: 5_000,
        }
    }
}

/// A checked quote from one source, in the feed's fixed-point units.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quote {
    /// Mid of bid and ask when both are known, else the last trade.
    pub price: i128,
    pub bid: Option<i128>,
    pub ask: Option<i128>,
    /// 24 h base volume with [`VOLUME_DECIMALS`] decimals, when known and positive.
    pub volume: Option<i128>,
    /// The venue's timestamp if it sent one, else when we received the quote.
    pub time_ms: u64,
}

/// Volume is only a weight; four decimals are plenty.
pub const VOLUME_DECIMALS: u32 = 4;

impl Quote {
    pub fn check(
        raw: &RawQuote,
        decimals: u32,
        now_ms: u64,
        limits: &SanityLimits,
    ) -> Result<Quote, Rejection> {
        let max = pow10(decimals)
            .and_then(|s| s.checked_mul(limits.max_price_units as i128))
            .ok_or(Rejection::Absurd)?;
        let price_of = |field: &Option<String>| -> Result<Option<i128>, Rejection> {
            let Some(text) = field else { return Ok(None) };
            let v = parse_fixed(text, decimals)?;
            if v < 0 {
                return Err(Rejection::Negative);
            }
            if v == 0 {
                return Err(Rejection::Zero);
            }
            if v > max {
                return Err(Rejection::Absurd);
            }
            Ok(Some(v))
        };
        let bid = price_of(&raw.bid)?;
        let ask = price_of(&raw.ask)?;
        let last = price_of(&raw.last)?;
        let price = match (bid, ask, last) {
            (Some(b), Some(a), _) => {
                if b > a {
                    return Err(Rejection::Crossed);
                }
                // Round half up; both are positive and below `max`, so no overflow.
                (b + a + 1) / 2
            }
            (_, _, Some(l)) => l,
            _ => return Err(Rejection::NoPrice),
        };
        let time_ms = match raw.venue_time_ms {
            Some(t) => {
                if t > now_ms.saturating_add(limits.max_future_ms) {
                    return Err(Rejection::Future);
                }
                if now_ms.saturating_sub(t) > limits.max_age_ms {
                    return Err(Rejection::TooOld);
                }
                t
            }
            None => now_ms,
        };
        let volume = raw
            .volume
            .as_deref()
            .and_then(|v| parse_fixed(v, VOLUME_DECIMALS).ok())
            .filter(|v| *v > 0);
        Ok(Quote {
            price,
            bid,
            ask,
            volume,
            time_ms,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(bid: &str, ask: &str) -> RawQuote {
        RawQuote {
            bid: Some(bid.into()),
            ask: Some(ask.into()),
            last: None,
            volume: None,
            venue_time_ms: None,
        }
    }

    #[test]
    fn mid_price_and_rejections() {
        let l = SanityLimits::default();
        let q = Quote::check(&raw("100.00", "100.02"), 2, 1000, &l).unwrap();
        assert_eq!(q.price, 10001);
        assert_eq!(q.time_ms, 1000);
        assert_eq!(
            Quote::check(&raw("101", "100"), 2, 0, &l),
            Err(Rejection::Crossed)
        );
        assert_eq!(
            Quote::check(&raw("0", "100"), 2, 0, &l),
            Err(Rejection::Zero)
        );
        assert_eq!(
            Quote::check(&raw("-1", "100"), 2, 0, &l),
            Err(Rejection::Negative)
        );
        assert_eq!(
            Quote::check(&raw("NaN", "100"), 2, 0, &l),
            Err(Rejection::NonFinite)
        );
        assert_eq!(
            Quote::check(&raw("1e30", "1e30"), 2, 0, &l),
            Err(Rejection::Absurd)
        );
        assert_eq!(
            Quote::check(&raw("garbage", "1"), 2, 0, &l),
            Err(Rejection::NonFinite)
        );
        assert_eq!(
            Quote::check(&RawQuote::default(), 2, 0, &l),
            Err(Rejection::NoPrice)
        );
    }

    #[test]
    fn timestamps_are_bounded() {
        let l = SanityLimits::default();
        let mut r = raw("1", "1");
        r.venue_time_ms = Some(100_000);
        assert!(Quote::check(&r, 2, 100_000, &l).is_ok());
        assert_eq!(
            Quote::check(&r, 2, 100_000 - 6_000, &l),
            Err(Rejection::Future)
        );
        assert_eq!(
            Quote::check(&r, 2, 100_000 + 31_000, &l),
            Err(Rejection::TooOld)
        );
    }
}
