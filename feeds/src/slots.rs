//! The latest state of every source, shared by the REST pollers, the
//! WebSocket streams and the aggregation task: each fetch is recorded here
//! (checked into a [`Quote`]) and observations are computed from here.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use serde::Serialize;
use tokio::sync::Notify;
use tracing::debug;

use crate::config::{ResolvedSource, SourcesConfig};
use crate::error::{ObservationError, Rejection, SourceError};
use crate::health::{BreakerState, CircuitBreaker};
use crate::metrics::{SourceFeedLabels, SourceMetrics, StateLabels};
use crate::quote::Quote;
use crate::time::now_ms;
use crate::venue::{MarketState, RawQuote, Venue};

/// Latest state of one source (one venue market for one feed).
#[derive(Debug, Clone)]
pub(crate) struct Slot {
    pub(crate) source: ResolvedSource,
    pub(crate) decimals: u32,
    pub(crate) quote: Option<Quote>,
    /// When we last stored a good quote (our clock).
    pub(crate) updated_ms: u64,
    pub(crate) via_ws: bool,
    pub(crate) last_error: Option<SourceError>,
    pub(crate) latency_ms: Option<u64>,
    pub(crate) breaker: CircuitBreaker,
    /// What the venue's status endpoint last said about the market, and
    /// when (our clock); `None`: never asked or no endpoint.
    pub(crate) market_state: Option<(MarketState, u64)>,
    /// Read the venue's status for this market now, not at the next status
    /// interval: another venue of the feed announced a change.
    pub(crate) status_wanted: bool,
    /// The latest poll's first attempt failed and it is being retried: the
    /// last quote is not the venue's price until an attempt succeeds.
    pub(crate) retrying: bool,
}

/// What the CLI and the API show about a source.
#[derive(Debug, Clone, Serialize)]
pub struct SourceStatus {
    pub feed: String,
    pub source: String,
    pub venue: Venue,
    pub market: String,
    /// Latest good price in the market's own quote currency, fixed point at `decimals`.
    pub price: Option<i128>,
    pub decimals: u32,
    pub age_ms: Option<u64>,
    pub latency_ms: Option<u64>,
    pub via_ws: bool,
    pub last_error: Option<String>,
    pub breaker: String,
    /// What the venue's status endpoint last said about the market
    /// (`None`: the venue has none we read, or it has not answered yet).
    pub market_state: Option<MarketState>,
}

/// Why a venue's poller was woken early: the statuses it was asked for
/// ([`Slot::status_wanted`]), and whether its stream just ended (`poll`:
/// poll its tickers now, not at the next tick).
#[derive(Default)]
pub(crate) struct Wake {
    pub(crate) notify: Notify,
    pub(crate) poll: AtomicBool,
}

pub(crate) struct Shared {
    pub(crate) config: SourcesConfig,
    pub(crate) slots: Mutex<BTreeMap<(String, String), Slot>>,
    pub(crate) metrics: SourceMetrics,
    pub(crate) changed: Notify,
    /// Wakes a venue's poller before its next tick.
    pub(crate) wake: BTreeMap<Venue, Wake>,
    pub(crate) feed_errors: Mutex<BTreeMap<String, ObservationError>>,
}

impl Shared {
    pub(crate) fn new(config: SourcesConfig, metrics: SourceMetrics) -> Shared {
        let mut slots = BTreeMap::new();
        for s in config.resolved_sources() {
            let decimals = config.decimals_of(&s.feed);
            let breaker =
                CircuitBreaker::new(config.breaker_failures, config.breaker_cooldown.as_ms());
            slots.insert(
                (s.feed.clone(), s.label()),
                Slot {
                    source: s,
                    decimals,
                    quote: None,
                    updated_ms: 0,
                    via_ws: false,
                    last_error: None,
                    latency_ms: None,
                    breaker,
                    market_state: None,
                    status_wanted: false,
                    retrying: false,
                },
            );
        }
        let wake = slots
            .values()
            .map(|s| (s.source.venue, Wake::default()))
            .collect();
        Shared {
            config,
            slots: Mutex::new(slots),
            metrics,
            changed: Notify::new(),
            wake,
            feed_errors: Mutex::new(BTreeMap::new()),
        }
    }

    pub(crate) fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<(String, String), Slot>> {
        // A panic while holding the lock cannot leave a slot half-written in a
        // way that matters: every field is replaced whole. Keep going.
        self.slots.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Record the outcome of a fetch (REST or WS) for every slot of `venue` trading `market`.
    /// A status answer for `market` on `venue`: its state is kept for every
    /// slot on that market; a failure is counted (as `status_<reason>`)
    /// and leaves the last known state to age out.
    /// Record what a venue says about a market's trading state. A change
    /// (a halt, a close, a reopening) asks every other venue of the same
    /// feeds that publishes a status to read it now rather than at its next
    /// status interval, so the feed's majority moves within a poll of the
    /// first venue that announced it (a streamed status moves it at once).
    pub(crate) fn record_state(
        &self,
        venue: Venue,
        market: &str,
        result: Result<MarketState, SourceError>,
        streamed: bool,
    ) {
        if let Ok(state) = &result {
            self.metrics
                .market_states
                .get_or_create(&StateLabels {
                    venue: venue.name().into(),
                    via: if streamed { "stream" } else { "rest" }.into(),
                    state: state.name().into(),
                })
                .inc();
        }
        let now = now_ms();
        let mut slots = self.lock();
        let mut changed_feeds = Vec::new();
        for slot in slots
            .values_mut()
            .filter(|s| s.source.venue == venue && s.source.market == market)
        {
            match &result {
                Ok(state) => {
                    let before = slot.market_state.map_or(MarketState::Open, |(s, _)| s);
                    if before != *state {
                        changed_feeds.push(slot.source.feed.clone());
                    }
                    slot.market_state = Some((*state, now));
                }
                Err(e) => {
                    let label = slot.source.label();
                    debug!(source = %label, error = %e, "market status unavailable");
                    self.metrics
                        .error(&label, &format!("status_{}", e.reason()));
                }
            }
        }
        let mut wake = std::collections::BTreeSet::new();
        if !self.config.market_status_interval.0.is_zero() {
            for slot in slots.values_mut().filter(|s| {
                s.source.venue != venue
                    && s.source.venue.publishes_status()
                    && changed_feeds.contains(&s.source.feed)
            }) {
                slot.status_wanted = true;
                wake.insert(slot.source.venue);
            }
        }
        drop(slots);
        for v in wake {
            if let Some(w) = self.wake.get(&v) {
                w.notify.notify_one();
            }
        }
        self.changed.notify_one();
    }

    /// The markets of `venue` whose status was asked for, clearing the asks.
    pub(crate) fn take_status_wanted(&self, venue: Venue) -> Vec<String> {
        let mut slots = self.lock();
        let mut markets = Vec::new();
        for slot in slots
            .values_mut()
            .filter(|s| s.source.venue == venue && s.status_wanted)
        {
            slot.status_wanted = false;
            if !markets.contains(&slot.source.market) {
                markets.push(slot.source.market.clone());
            }
        }
        markets
    }

    /// A venue's stream ended: its slots are REST-polled again at once (not
    /// only at the next tick, nor once their last streamed quote is two polls
    /// old), so a venue that went down shows as failing within one request.
    pub(crate) fn stream_ended(&self, venue: Venue) {
        let mut slots = self.lock();
        for slot in slots.values_mut().filter(|s| s.source.venue == venue) {
            slot.via_ws = false;
        }
        drop(slots);
        if let Some(w) = self.wake.get(&venue) {
            w.poll.store(true, Ordering::Relaxed);
            w.notify.notify_one();
        }
    }

    /// A poll's first attempt failed and will be retried: the source leaves
    /// the price now, and comes back with the attempt that succeeds.
    pub(crate) fn retrying(&self, venue: Venue, market: &str) {
        let mut slots = self.lock();
        for slot in slots
            .values_mut()
            .filter(|s| s.source.venue == venue && s.source.market == market)
        {
            slot.retrying = true;
        }
        drop(slots);
        self.changed.notify_one();
    }

    pub(crate) fn record(
        &self,
        venue: Venue,
        market: &str,
        result: Result<RawQuote, SourceError>,
        latency_ms: Option<u64>,
        via_ws: bool,
    ) {
        let now = now_ms();
        let limits = self.config.sanity();
        let mut slots = self.lock();
        for slot in slots
            .values_mut()
            .filter(|s| s.source.venue == venue && s.source.market == market)
        {
            let label = slot.source.label();
            slot.retrying = false;
            let checked = result.clone().and_then(|raw| {
                Quote::check(&raw, slot.decimals, now, &limits).map_err(SourceError::Rejected)
            });
            match checked {
                Ok(q) => {
                    slot.quote = Some(q);
                    slot.updated_ms = now;
                    slot.via_ws = via_ws;
                    slot.last_error = None;
                    if latency_ms.is_some() {
                        slot.latency_ms = latency_ms;
                    }
                    slot.breaker.on_success();
                    self.metrics
                        .quotes
                        .get_or_create(&SourceFeedLabels {
                            source: label,
                            feed: slot.source.feed.clone(),
                        })
                        .inc();
                }
                Err(e) => {
                    debug!(source = %label, feed = %slot.source.feed, error = %e, "source error");
                    self.metrics.error(&label, e.reason());
                    // A quote that is only old (a halted or closed market's
                    // frozen book) came from a venue that answers: its age
                    // decides (max_quote_age), not the breaker, whose
                    // cooldown would keep the venue out long after trading
                    // resumes.
                    let answered = matches!(e, SourceError::Rejected(Rejection::TooOld));
                    if !via_ws && !answered {
                        slot.breaker.on_failure(now);
                    }
                    slot.last_error = Some(e);
                }
            }
        }
        drop(slots);
        self.changed.notify_one();
    }

    pub(crate) fn statuses(&self) -> Vec<SourceStatus> {
        let now = now_ms();
        self.lock()
            .values()
            .map(|s| SourceStatus {
                feed: s.source.feed.clone(),
                source: s.source.label(),
                venue: s.source.venue,
                market: s.source.market.clone(),
                price: s.quote.map(|q| q.price),
                decimals: s.decimals,
                age_ms: s.quote.map(|q| now.saturating_sub(q.time_ms)),
                latency_ms: s.latency_ms,
                via_ws: s.via_ws,
                last_error: s.last_error.as_ref().map(|e| e.to_string()),
                market_state: s.market_state.map(|(m, _)| m),
                breaker: match s.breaker.state() {
                    BreakerState::Closed => "closed".into(),
                    BreakerState::HalfOpen => "half-open".into(),
                    BreakerState::Open { until_ms } => {
                        format!("open for {} ms", until_ms.saturating_sub(now))
                    }
                },
            })
            .collect()
    }
}

/// rustls needs a process-wide crypto provider; we use ring (no C toolchain beyond cc).
pub(crate) fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shared() -> Shared {
        let config = SourcesConfig::for_sim_exchange_venues(
            "http://127.0.0.1:1",
            &["BTC-USD"],
            &[Venue::Kraken],
        );
        Shared::new(config, SourceMetrics::register(&mut Default::default()))
    }

    fn failing(s: &Shared, market: &str) -> bool {
        s.lock()
            .values()
            .filter(|slot| slot.source.market == market)
            .all(|slot| slot.breaker.failing())
    }

    #[test]
    fn a_failed_poll_marks_the_source_failing_but_an_old_quote_does_not() {
        let s = shared();
        let market = s
            .lock()
            .values()
            .next()
            .expect("slot")
            .source
            .market
            .clone();
        s.record(
            Venue::Kraken,
            &market,
            Err(SourceError::Rejected(Rejection::TooOld)),
            None,
            false,
        );
        assert!(
            !failing(&s, &market),
            "a venue answering with an old quote is not failing"
        );
        s.record(
            Venue::Kraken,
            &market,
            Err(SourceError::Timeout(1_000)),
            None,
            false,
        );
        assert!(
            failing(&s, &market),
            "a poll that failed marks the venue failing at once"
        );
    }

    /// A poll whose first attempt failed takes the venue out of the price
    /// while it retries; the attempt that succeeds brings it back, and the
    /// breaker counts the poll once, not per attempt.
    #[test]
    fn a_retried_poll_leaves_the_price_until_an_attempt_succeeds() {
        let s = shared();
        let market = s
            .lock()
            .values()
            .next()
            .expect("slot")
            .source
            .market
            .clone();
        let quote = |last: &str| RawQuote {
            bid: Some(last.into()),
            ask: Some(last.into()),
            last: Some(last.into()),
            volume: Some("10".into()),
            venue_time_ms: Some(now_ms()),
        };
        s.record(Venue::Kraken, &market, Ok(quote("100")), None, false);
        let used = |s: &Shared| {
            let obs = crate::service::compute_observations(&s.config, &s.lock(), now_ms(), None);
            obs["BTC-USD"].as_ref().map(|o| o.num_sources).unwrap_or(0)
        };
        assert_eq!(used(&s), 1);
        s.retrying(Venue::Kraken, &market);
        assert_eq!(used(&s), 0, "a retried poll leaves the price at once");
        assert!(
            !failing(&s, &market),
            "the breaker waits for the poll's end"
        );
        s.record(Venue::Kraken, &market, Ok(quote("101")), None, false);
        assert_eq!(used(&s), 1, "the attempt that succeeds brings it back");
    }
}
