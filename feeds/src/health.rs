//! Source health: per-host rate limiting, jittered exponential backoff and a
//! circuit breaker per source.

use std::time::Duration;

use rand::Rng;
use sibyl_util::TokenBucket;
use tokio::sync::Mutex;
use tokio::time::Instant;

/// Paces every request to one venue host: a [`TokenBucket`] (sibyl-util's)
/// that a request waits on for its token.
#[derive(Debug)]
pub struct RateLimiter {
    bucket: Mutex<TokenBucket>,
}

impl RateLimiter {
    /// `per_second` requests a second (at least 1), up to `burst` (at least
    /// 1) at once.
    pub fn new(per_second: u32, burst: u32) -> RateLimiter {
        let bucket = TokenBucket::new(
            u64::from(per_second.max(1)),
            u64::from(burst.max(1)),
            Instant::now().into_std(),
        );
        RateLimiter {
            bucket: Mutex::new(bucket),
        }
    }

    /// Wait until a request may be sent.
    pub async fn acquire(&self) {
        loop {
            let wait = {
                let mut bucket = self.bucket.lock().await;
                // tokio's clock, so paused-time tests pace too.
                let now = Instant::now().into_std();
                if bucket.take(now) {
                    return;
                }
                // Capacity >= 1 and rate >= 1: one token always comes back.
                bucket.wait(1, now).unwrap_or(Duration::from_secs(1))
            };
            tokio::time::sleep(wait).await;
        }
    }
}

/// Exponential backoff with full jitter: a uniformly random delay in
/// `[base/2, min(cap, base * 2^attempt)]`, so many members retrying the same
/// venue do not synchronise.
pub fn backoff(attempt: u32, base: Duration, cap: Duration) -> Duration {
    let exp = base.saturating_mul(1u32 << attempt.min(16)).min(cap);
    let lo = (base / 2).min(exp);
    let ms = rand::thread_rng()
        .gen_range(lo.as_millis() as u64..=exp.as_millis().max(lo.as_millis()) as u64);
    Duration::from_millis(ms)
}

/// Circuit breaker state of one source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    Closed,
    /// Open until the given time (ms); then one trial request is allowed.
    Open {
        until_ms: u64,
    },
    HalfOpen,
}

/// Opens after `threshold` consecutive failures; after `cooldown_ms` lets a
/// trial request through; closes on its success, re-opens (with doubled
/// cooldown, capped at 8x) on its failure.
#[derive(Debug, Clone)]
pub struct CircuitBreaker {
    threshold: u32,
    cooldown_ms: u64,
    failures: u32,
    trips: u32,
    state: BreakerState,
}

impl CircuitBreaker {
    pub fn new(threshold: u32, cooldown_ms: u64) -> CircuitBreaker {
        CircuitBreaker {
            threshold: threshold.max(1),
            cooldown_ms,
            failures: 0,
            trips: 0,
            state: BreakerState::Closed,
        }
    }

    /// `Ok` if a request may go out now, else how long until it may.
    pub fn allow(&mut self, now_ms: u64) -> Result<(), u64> {
        match self.state {
            BreakerState::Closed | BreakerState::HalfOpen => Ok(()),
            BreakerState::Open { until_ms } if now_ms >= until_ms => {
                self.state = BreakerState::HalfOpen;
                Ok(())
            }
            BreakerState::Open { until_ms } => Err(until_ms - now_ms),
        }
    }

    pub fn on_success(&mut self) {
        self.failures = 0;
        self.trips = 0;
        self.state = BreakerState::Closed;
    }

    pub fn on_failure(&mut self, now_ms: u64) {
        self.failures += 1;
        if self.state == BreakerState::HalfOpen || self.failures >= self.threshold {
            self.trips = (self.trips + 1).min(4);
            let cooldown = self.cooldown_ms.saturating_mul(1 << (self.trips - 1));
            self.state = BreakerState::Open {
                until_ms: now_ms.saturating_add(cooldown),
            };
            self.failures = 0;
        }
    }

    pub fn state(&self) -> BreakerState {
        self.state
    }

    /// Whether the source's latest request failed (after its retries) or the
    /// breaker is not closed: its last quote is then no longer its price.
    pub fn failing(&self) -> bool {
        self.failures > 0 || self.state != BreakerState::Closed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn breaker_opens_half_opens_and_closes() {
        let mut b = CircuitBreaker::new(3, 1000);
        for _ in 0..2 {
            b.on_failure(0);
        }
        assert_eq!(b.allow(0), Ok(()));
        b.on_failure(0);
        assert_eq!(b.allow(500), Err(500));
        assert_eq!(b.allow(1000), Ok(()));
        assert_eq!(b.state(), BreakerState::HalfOpen);
        b.on_failure(1000);
        assert_eq!(b.allow(1000), Err(2000), "second trip doubles the cooldown");
        assert_eq!(b.allow(3000), Ok(()));
        b.on_success();
        assert_eq!(b.state(), BreakerState::Closed);
    }

    #[test]
    fn backoff_is_bounded_and_jittered() {
        let base = Duration::from_millis(100);
        let cap = Duration::from_millis(2000);
        for attempt in 0..10 {
            let d = backoff(attempt, base, cap);
            assert!(d >= Duration::from_millis(50) && d <= cap, "{d:?}");
        }
        let samples: std::collections::BTreeSet<_> =
            (0..50).map(|_| backoff(5, base, cap)).collect();
        assert!(samples.len() > 1, "jitter must vary the delay");
    }

    #[tokio::test]
    async fn rate_limiter_spaces_requests() {
        let rl = RateLimiter::new(10, 2);
        let start = Instant::now();
        for _ in 0..12 {
            rl.acquire().await;
        }
        // 2 from the burst, 10 more at 10/s: about one second.
        let took = start.elapsed();
        assert!(
            took >= Duration::from_millis(950) && took < Duration::from_millis(3000),
            "{took:?}"
        );
    }
}
