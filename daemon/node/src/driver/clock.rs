//! The round driver's clock: what time it is (since the Unix epoch) and
//! sleeping until a given time. The driver reads no other clock, so tests
//! drive a whole committee on tokio's paused time ([`TokioClock`]) while
//! `sibyl run` uses the system clock ([`SystemClock`]).
//!
//! Both clocks count from the Unix epoch because the round protocol does:
//! round slots sit on a grid of epoch milliseconds and reports carry epoch
//! timestamps.

use std::future::Future;
use std::time::Duration;

/// Time for the round driver: now, and sleeping until a deadline.
///
/// Times are microseconds since the Unix epoch (`now_ms` is derived). The
/// futures own what they need (`'static`), so they can sit in a
/// `tokio::select!` beside borrows of the driver.
pub trait Clock: Clone + Send + Sync + 'static {
    /// Microseconds since the Unix epoch.
    fn now_us(&self) -> u64;

    /// Milliseconds since the Unix epoch.
    fn now_ms(&self) -> u64 {
        self.now_us() / 1000
    }

    /// Resolves at `at_us` (µs since the epoch) or later, at the timer's
    /// precision (tokio's: whole milliseconds); at once if it has passed.
    fn sleep_until_us(&self, at_us: u64) -> impl Future<Output = ()> + Send + 'static;

    /// Like [`Clock::sleep_until_us`], as close to `at_us` as the clock can:
    /// the round's start is the instant every phase is measured from. May
    /// block the calling thread for the last stretch.
    fn wake_at_us(&self, at_us: u64) -> impl Future<Output = ()> + Send + 'static {
        self.sleep_until_us(at_us)
    }

    /// [`Clock::sleep_until_us`] in milliseconds.
    fn sleep_until_ms(&self, at_ms: u64) -> impl Future<Output = ()> + Send + 'static {
        self.sleep_until_us(at_ms.saturating_mul(1000))
    }
}

/// How long before a precise wake-up the system clock leaves tokio's
/// (millisecond) timer for a thread sleep.
const PRECISE_WAKE_US: u64 = 1_500;

/// The system's wall clock and tokio's timer: `sibyl run`.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

/// Microseconds since the Unix epoch by the system clock (0 before 1970).
pub fn system_now_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

impl Clock for SystemClock {
    fn now_us(&self) -> u64 {
        system_now_us()
    }

    fn sleep_until_us(&self, at_us: u64) -> impl Future<Output = ()> + Send + 'static {
        // The wall clock may be stepped while we sleep; tokio's timer is
        // monotonic. The driver recomputes its deadlines on every pass of
        // its loop, so a step costs at most one early or late wake.
        tokio::time::sleep(Duration::from_micros(at_us.saturating_sub(system_now_us())))
    }

    // Not an `async fn`: that would borrow `self`, and the trait wants a
    // future that owns what it needs.
    #[allow(clippy::manual_async_fn)]
    fn wake_at_us(&self, at_us: u64) -> impl Future<Output = ()> + Send + 'static {
        async move {
            // Tokio's timer wakes on whole-millisecond ticks, rounded up (and
            // epoll waits in whole milliseconds): 0.5-1.5 ms late. Sleep on
            // the timer until shortly before `at_us` and the rest in a thread
            // sleep (~60 µs slack) on the caller's thread: the driver's loop,
            // which has nothing else due at a round boundary.
            let early = at_us.saturating_sub(PRECISE_WAKE_US);
            tokio::time::sleep(Duration::from_micros(early.saturating_sub(system_now_us()))).await;
            let left = at_us.saturating_sub(system_now_us());
            if left > 0 {
                std::thread::sleep(Duration::from_micros(left.min(PRECISE_WAKE_US)));
            }
        }
    }
}

/// A clock on tokio's timer: epoch time is `epoch_us` at the instant the
/// clock was made plus the time tokio's `Instant` has moved since. Under
/// `tokio::time::pause` (or `#[tokio::test(start_paused = true)]`) that time
/// is virtual: it stands still while any task runs and jumps to the next
/// timer when all of them wait, so a committee's rounds run as fast as the
/// CPU allows and the same way on a loaded machine.
///
/// Use a current-thread runtime (tokio pauses time only there). Work on
/// other threads that is not a `spawn_blocking` task (the store's writer
/// thread) does not hold the clock back: tokio may jump ahead while a task
/// waits for it, as if that work had been slow.
#[derive(Clone, Copy, Debug)]
pub struct TokioClock {
    origin: tokio::time::Instant,
    epoch_us: u64,
}

impl TokioClock {
    /// A clock that reads `epoch_ms` now.
    pub fn starting_at_ms(epoch_ms: u64) -> Self {
        Self {
            origin: tokio::time::Instant::now(),
            epoch_us: epoch_ms.saturating_mul(1000),
        }
    }

    /// A clock that reads the system's time (to the millisecond) now.
    pub fn from_system() -> Self {
        Self::starting_at_ms(system_now_us() / 1000)
    }

    fn instant_at(&self, at_us: u64) -> tokio::time::Instant {
        self.origin + Duration::from_micros(at_us.saturating_sub(self.epoch_us))
    }
}

impl Clock for TokioClock {
    fn now_us(&self) -> u64 {
        let since = u64::try_from(self.origin.elapsed().as_micros()).unwrap_or(u64::MAX);
        self.epoch_us.saturating_add(since)
    }

    fn sleep_until_us(&self, at_us: u64) -> impl Future<Output = ()> + Send + 'static {
        tokio::time::sleep_until(self.instant_at(at_us))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn tokio_clock_follows_paused_time_exactly() {
        let clock = TokioClock::starting_at_ms(1_700_000_000_000);
        assert_eq!(clock.now_ms(), 1_700_000_000_000);
        assert_eq!(clock.now_us(), 1_700_000_000_000_000);
        // Paused time stands still while this task runs...
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(clock.now_ms(), 1_700_000_000_000);
        // ...and a sleep ends exactly at its deadline.
        clock.sleep_until_ms(1_700_000_000_250).await;
        assert_eq!(clock.now_ms(), 1_700_000_000_250);
        clock.wake_at_us(1_700_000_000_300_000).await;
        assert_eq!(clock.now_us(), 1_700_000_000_300_000);
        // A deadline in the past resolves at once without moving time.
        clock.sleep_until_ms(1_700_000_000_000).await;
        assert_eq!(clock.now_ms(), 1_700_000_000_300);
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(clock.now_ms(), 1_700_000_002_300);
    }

    #[tokio::test]
    async fn system_clock_reads_the_wall_clock_and_wakes_on_time() {
        let clock = SystemClock;
        let before = system_now_us();
        let now = clock.now_us();
        assert!(now >= before && now - before < 1_000_000, "{before} {now}");
        assert_eq!(clock.now_ms(), clock.now_us() / 1000);
        let at = clock.now_us() + 20_000;
        clock.wake_at_us(at).await;
        // Never early (how late is a matter of the machine's load).
        assert!(
            clock.now_us() >= at,
            "woke {} µs early",
            at - clock.now_us()
        );
        let at = clock.now_us() + 5_000;
        clock.sleep_until_us(at).await;
        assert!(clock.now_us() >= at);
    }
}
