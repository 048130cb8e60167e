//! Per-member inbound limits: a token bucket, of messages or of bytes.

use std::time::Instant;

/// `rate` tokens per second refill, up to `rate + burst` tokens. Integer
/// arithmetic in microtokens so refills never drift.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    /// Tokens * 1e6.
    micro: u64,
    cap_micro: u64,
    rate: u64,
    last: Instant,
}

const MICRO: u64 = 1_000_000;

impl TokenBucket {
    pub fn new(rate_per_sec: u32, burst: u32, now: Instant) -> Self {
        let cap = u64::from(rate_per_sec)
            .saturating_add(u64::from(burst))
            .max(1);
        Self {
            micro: cap.saturating_mul(MICRO),
            cap_micro: cap.saturating_mul(MICRO),
            rate: u64::from(rate_per_sec),
            last: now,
        }
    }

    /// Take one token if there is one.
    pub fn take(&mut self, now: Instant) -> bool {
        self.take_n(1, now)
    }

    /// Take `n` tokens if there are that many; otherwise take none.
    pub fn take_n(&mut self, n: u64, now: Instant) -> bool {
        let elapsed_us =
            u64::try_from(now.saturating_duration_since(self.last).as_micros()).unwrap_or(u64::MAX);
        // rate tokens/s == rate microtokens/us.
        self.micro = self
            .micro
            .saturating_add(elapsed_us.saturating_mul(self.rate))
            .min(self.cap_micro);
        self.last = now;
        let want = n.saturating_mul(MICRO);
        if self.micro >= want {
            self.micro -= want;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn burst_then_refill() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(10, 5, t0);
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
        let mut b = TokenBucket::new(1000, 500, t0);
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
