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
    /// Mid of bid and ask when both are known; with one side, the last trade
    /// kept on the right side of it (or the side alone); with no book, the
    /// last trade if the venue dated it. A missing, empty or zero field is
    /// absent, never a price.
    pub price: i128,
    /// The venue's best bid and ask, when it gave them (not zero).
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
        // A missing, empty or zero field is absent (an empty book side, no
        // trade yet); anything else must be a sane positive number, or the
        // whole quote is refused (a venue sending garbage in one field is not
        // trusted with the others).
        let mut saw_zero = false;
        let mut price_of = |field: &Option<String>| -> Result<Option<i128>, Rejection> {
            let Some(text) = field.as_deref().map(str::trim).filter(|t| !t.is_empty()) else {
                return Ok(None);
            };
            let v = parse_fixed(text, decimals)?;
            if v < 0 {
                return Err(Rejection::Negative);
            }
            if v == 0 {
                saw_zero = true;
                return Ok(None);
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
            // One side of the book: the last trade, but never below a
            // standing bid nor above a standing ask; else the side itself.
            (Some(b), None, l) => l.map_or(b, |l| l.max(b)),
            (None, Some(a), l) => l.map_or(a, |l| l.min(a)),
            // No book: the last trade, only when the venue dates it (a
            // closed or halted market keeps showing its last trade; without
            // a timestamp its age is unknown).
            (None, None, Some(l)) if raw.venue_time_ms.is_some() => l,
            (None, None, _) if saw_zero => return Err(Rejection::Zero),
            (None, None, _) => return Err(Rejection::NoPrice),
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
#[allow(clippy::inconsistent_digit_grouping)] // prices written as units_cents
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
        assert_eq!(Quote::check(&raw("0", "0"), 2, 0, &l), Err(Rejection::Zero));
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

    fn quote(
        bid: Option<&str>,
        ask: Option<&str>,
        last: Option<&str>,
        time: Option<u64>,
    ) -> RawQuote {
        RawQuote {
            bid: bid.map(str::to_string),
            ask: ask.map(str::to_string),
            last: last.map(str::to_string),
            volume: None,
            venue_time_ms: time,
        }
    }

    /// A missing or zero bid or ask falls back to the other fields instead
    /// of voiding the venue: (bid, ask, last, venue time) -> (price, bid, ask).
    #[test]
    fn a_missing_or_zero_side_falls_back_to_the_other_fields() {
        let l = SanityLimits::default();
        let t = Some(1_000);
        type Case<'a> = (
            Option<&'a str>,
            Option<&'a str>,
            Option<&'a str>,
            Option<u64>,
        );
        type Want = (i128, Option<i128>, Option<i128>);
        let ok: [(Case<'_>, Want); 14] = [
            // Both sides: the mid, whatever the last trade says.
            (
                (Some("99"), Some("101"), Some("0"), None),
                (100_00, Some(99_00), Some(101_00)),
            ),
            (
                (Some("99"), Some("101"), None, None),
                (100_00, Some(99_00), Some(101_00)),
            ),
            // No ask (missing, zero, empty): last trade, not below the bid.
            (
                (Some("99"), None, Some("100"), None),
                (100_00, Some(99_00), None),
            ),
            (
                (Some("99"), Some("0"), Some("100"), None),
                (100_00, Some(99_00), None),
            ),
            (
                (Some("99"), Some(""), Some("100"), None),
                (100_00, Some(99_00), None),
            ),
            (
                (Some("99"), Some("0"), Some("98"), None),
                (99_00, Some(99_00), None),
            ),
            (
                (Some("99"), Some("0"), None, None),
                (99_00, Some(99_00), None),
            ),
            (
                (Some("99"), Some("0"), Some("0"), None),
                (99_00, Some(99_00), None),
            ),
            // No bid: last trade, not above the ask.
            (
                (None, Some("101"), Some("100"), None),
                (100_00, None, Some(101_00)),
            ),
            (
                (Some("0"), Some("101"), Some("100"), None),
                (100_00, None, Some(101_00)),
            ),
            (
                (Some("0"), Some("101"), Some("102"), None),
                (101_00, None, Some(101_00)),
            ),
            (
                (Some("0.00"), Some("101"), None, None),
                (101_00, None, Some(101_00)),
            ),
            // No book: the last trade when the venue dates it.
            ((Some("0"), Some("0"), Some("100"), t), (100_00, None, None)),
            ((None, None, Some("100"), t), (100_00, None, None)),
        ];
        for ((bid, ask, last, time), want) in ok {
            let q = Quote::check(&quote(bid, ask, last, time), 2, 1_000, &l)
                .unwrap_or_else(|e| panic!("{bid:?} {ask:?} {last:?}: {e}"));
            assert_eq!((q.price, q.bid, q.ask), want, "{bid:?} {ask:?} {last:?}");
        }
        let refused: [(Case<'_>, Rejection); 6] = [
            // An undated last trade alone may be from a market closed for days.
            ((None, None, Some("100"), None), Rejection::NoPrice),
            ((Some("0"), Some("0"), Some("100"), None), Rejection::Zero),
            ((Some("0"), Some("0"), Some("0"), t), Rejection::Zero),
            ((None, None, None, t), Rejection::NoPrice),
            // Garbage in one field voids the quote; zero does not hide it.
            ((Some("0"), Some("-1"), Some("100"), t), Rejection::Negative),
            (
                (Some("NaN"), Some("101"), Some("100"), t),
                Rejection::NonFinite,
            ),
        ];
        for ((bid, ask, last, time), want) in refused {
            assert_eq!(
                Quote::check(&quote(bid, ask, last, time), 2, 1_000, &l),
                Err(want),
                "{bid:?} {ask:?} {last:?} {time:?}"
            );
        }
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
