//! A token bucket in integer arithmetic with the time passed in.

use std::time::{Duration, Instant};

/// Microtokens per token: a rate of `r` tokens per second adds exactly `r`
/// microtokens per microsecond, so refills are exact and never drift.
const MICRO: u64 = 1_000_000;

/// Holds up to `capacity` tokens and refills at `rate` tokens per second;
/// starts full. Every method takes the current time, so callers choose the
/// clock (std's or tokio's `Instant`, converted) and tests pass instants.
///
/// Integer microtokens: taking and refilling never round, and a bucket
/// behaves the same on every machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenBucket {
    /// Tokens × [`MICRO`] held at `last`.
    micro: u64,
    cap_micro: u64,
    /// Tokens per second (= microtokens per microsecond).
    rate: u64,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket of `capacity` tokens (at least 1) refilled at
    /// `rate_per_sec` tokens per second (0: never refilled).
    pub fn new(rate_per_sec: u64, capacity: u64, now: Instant) -> Self {
        let cap_micro = capacity.max(1).saturating_mul(MICRO);
        Self {
            micro: cap_micro,
            cap_micro,
            rate: rate_per_sec,
            last: now,
        }
    }

    /// Most tokens the bucket holds.
    pub fn capacity(&self) -> u64 {
        self.cap_micro / MICRO
    }

    /// Adds what `now - last` refills. A `now` before the last call adds
    /// nothing (and does not move `last` back).
    fn refill(&mut self, now: Instant) {
        let Some(elapsed) = now.checked_duration_since(self.last) else {
            return;
        };
        let elapsed_us = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        self.micro = self
            .micro
            .saturating_add(elapsed_us.saturating_mul(self.rate))
            .min(self.cap_micro);
        self.last = now;
    }

    /// Takes one token if there is one.
    pub fn take(&mut self, now: Instant) -> bool {
        self.take_n(1, now)
    }

    /// Takes `n` tokens if there are that many; otherwise takes none.
    pub fn take_n(&mut self, n: u64, now: Instant) -> bool {
        self.refill(now);
        let want = n.saturating_mul(MICRO);
        if self.micro >= want {
            self.micro -= want;
            true
        } else {
            false
        }
    }

    /// How long from `now` until `n` tokens are there (zero: now). `None`
    /// when they never will be: more than the capacity, or no refill.
    pub fn wait(&mut self, n: u64, now: Instant) -> Option<Duration> {
        self.refill(now);
        let want = n.saturating_mul(MICRO);
        if want > self.cap_micro {
            return None;
        }
        let missing = want.saturating_sub(self.micro);
        if missing == 0 {
            return Some(Duration::ZERO);
        }
        if self.rate == 0 {
            return None;
        }
        Some(Duration::from_micros(missing.div_ceil(self.rate)))
    }

    /// Whether the bucket is full at `now` (a client that has been quiet
    /// long enough: its bucket can be forgotten and made anew).
    pub fn is_full(&mut self, now: Instant) -> bool {
        self.refill(now);
        self.micro >= self.cap_micro
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_refill_up_to_the_capacity() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(10, 15, t0);
        assert_eq!(b.capacity(), 15);
        assert_eq!((0..100).filter(|_| b.take(t0)).count(), 15);
        assert!(!b.take(t0));
        // 100 ms at 10/s refills one token, exactly.
        let t1 = t0 + Duration::from_millis(100);
        assert!(b.take(t1));
        assert!(!b.take(t1));
        // 99.999 ms is not enough.
        let t2 = t1 + Duration::from_micros(99_999);
        assert!(!b.take(t2));
        assert!(b.take(t2 + Duration::from_micros(1)));
        // A long pause refills only up to the capacity.
        let later = t0 + Duration::from_secs(3600);
        assert!(b.is_full(later));
        assert_eq!((0..100).filter(|_| b.take(later)).count(), 15);
        assert!(!b.is_full(later));
    }

    #[test]
    fn take_n_takes_all_or_nothing() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(1000, 1500, t0);
        assert!(!b.take_n(1501, t0), "more than the capacity never passes");
        assert!(b.take_n(1200, t0));
        assert!(!b.take_n(301, t0), "only 300 left");
        assert!(b.take_n(300, t0));
        assert!(!b.take_n(1, t0));
        assert!(!b.take_n(251, t0 + Duration::from_millis(250)));
        assert!(b.take_n(250, t0 + Duration::from_millis(250)));
    }

    #[test]
    fn wait_says_when_tokens_are_back() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(3, 2, t0);
        assert_eq!(b.wait(1, t0), Some(Duration::ZERO));
        assert!(b.take_n(2, t0));
        // One token at 3/s: 333,333.33 µs, rounded up.
        let w = b.wait(1, t0).expect("refills");
        assert_eq!(w, Duration::from_micros(333_334));
        assert!(!b.take(t0 + w - Duration::from_micros(1)));
        assert!(b.take(t0 + w));
        assert_eq!(b.wait(3, t0 + w), None, "beyond the capacity");
        let mut dry = TokenBucket::new(0, 1, t0);
        assert!(dry.take(t0));
        assert_eq!(dry.wait(1, t0 + Duration::from_secs(60)), None);
        assert!(
            !dry.take(t0 + Duration::from_secs(60)),
            "no refill at rate 0"
        );
    }

    #[test]
    fn time_going_back_adds_nothing() {
        let t0 = Instant::now() + Duration::from_secs(10);
        let mut b = TokenBucket::new(10, 1, t0);
        assert!(b.take(t0));
        assert!(!b.take(t0 - Duration::from_secs(5)));
        // `last` stayed at t0: 100 ms after it, one token.
        assert!(b.take(t0 + Duration::from_millis(100)));
    }

    #[test]
    fn zero_capacity_is_one() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(1, 0, t0);
        assert_eq!(b.capacity(), 1);
        assert!(b.take(t0));
        assert!(!b.take(t0));
    }
}
