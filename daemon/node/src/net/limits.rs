//! Per-member inbound limits: a token bucket ([`sibyl_util::TokenBucket`]),
//! of messages or of bytes.

use sibyl_util::TokenBucket;
use std::time::Instant;

/// A member's budget: `rate_per_sec` tokens (messages or bytes) per second,
/// holding a second's worth plus `burst`.
pub fn member_bucket(rate_per_sec: u32, burst: u32, now: Instant) -> TokenBucket {
    let rate = u64::from(rate_per_sec);
    TokenBucket::new(rate, rate.saturating_add(u64::from(burst)), now)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn burst_then_refill() {
        let t0 = Instant::now();
        let mut b = member_bucket(10, 5, t0);
        let taken = (0..100).filter(|_| b.take(t0)).count();
        assert_eq!(taken, 15);
        assert!(!b.take(t0));
        // 100 ms at 10/s refills one token.
        assert!(b.take(t0 + Duration::from_millis(100)));
        assert!(!b.take(t0 + Duration::from_millis(100)));
        // A long pause refills only up to the cap.
        let later = t0 + Duration::from_secs(3600);
        assert_eq!((0..100).filter(|_| b.take(later)).count(), 15);
    }

    #[test]
    fn byte_budget_takes_all_or_nothing() {
        let t0 = Instant::now();
        // 1000 bytes/s plus 500 of burst: 1500 at most at once.
        let mut b = member_bucket(1000, 500, t0);
        assert!(!b.take_n(1501, t0), "more than the capacity never passes");
        assert!(b.take_n(1200, t0));
        assert!(!b.take_n(301, t0), "only 300 left");
        assert!(b.take_n(300, t0));
        assert!(!b.take_n(1, t0));
        // 250 ms refill 250 bytes.
        assert!(!b.take_n(251, t0 + Duration::from_millis(250)));
        assert!(b.take_n(250, t0 + Duration::from_millis(250)));
    }
}
