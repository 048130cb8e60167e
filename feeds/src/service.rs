//! The running sources: one REST poller per venue, one WebSocket task per
//! streaming venue, and one aggregation task that turns the latest quotes
//! into observations published on a `watch` channel.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::future::join_all;
use prometheus_client::registry::Registry;
use serde::Serialize;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior};
use tracing::debug;

use crate::aggregate::{Observation, ObservationParams, SourcePrice, observe, off_peg};
use crate::config::SourcesConfig;
use crate::decimal::pow10;
use crate::error::{ObservationError, SourceError, snippet};
use crate::health::{RateLimiter, backoff};
use crate::metrics::{FeedLabels, SourceFeedLabels, SourceMetrics};
pub use crate::slots::SourceStatus;
use crate::slots::{Shared, Slot, install_crypto_provider};
use crate::time::now_ms;
use crate::venue::{MarketState, RawQuote, Venue};
use crate::ws;

/// Largest response body we read from a venue.
const MAX_BODY: usize = 256 * 1024;

/// Compute every feed's observation from the current slots. Conversion feeds
/// (e.g. USDT-USD) are computed first and used to convert USDT markets.
pub(crate) fn compute_observations(
    config: &SourcesConfig,
    slots: &BTreeMap<(String, String), Slot>,
    now: u64,
    metrics: Option<&SourceMetrics>,
) -> BTreeMap<String, Result<Observation, ObservationError>> {
    let max_age = config.max_quote_age.as_ms();
    let mut out: BTreeMap<String, Result<Observation, ObservationError>> = BTreeMap::new();
    let is_converter = |id: &str| {
        slots
            .values()
            .any(|s| s.source.convert_via.as_deref() == Some(id))
    };
    let mut order: Vec<&crate::config::FeedConfig> = config.feeds.iter().collect();
    order.sort_by_key(|f| (!is_converter(&f.id), f.id.clone()));
    for feed in order {
        let market = stopped_market(config, slots, &feed.id, now);
        let mut prices = Vec::new();
        for slot in slots.values().filter(|s| s.source.feed == feed.id) {
            let label = slot.source.label();
            let Some(q) = slot.quote else { continue };
            let state = fresh_state(config, slot, now);
            // A venue that says its market stopped while the others trade:
            // its frozen book is no price.
            if market.is_none() && matches!(state, Some(MarketState::Halted | MarketState::Closed))
            {
                continue;
            }
            // A venue whose latest poll failed (from its first failed
            // attempt: retries bring it back when they succeed), or whose
            // breaker is open: its last quote is no longer its price, so an
            // outage shows in the first round after the failed request, not
            // after the retries, `max_quote_age` or `breaker_failures` polls.
            // A stopped market's venues fail on their frozen quotes; theirs
            // stand.
            if market.is_none() && (slot.breaker.failing() || slot.retrying) {
                continue;
            }
            let age = now
                .saturating_sub(q.time_ms)
                .max(now.saturating_sub(slot.updated_ms));
            if let Some(m) = metrics {
                m.staleness
                    .get_or_create(&SourceFeedLabels {
                        source: label.clone(),
                        feed: feed.id.clone(),
                    })
                    .set(age as f64 / 1000.0);
            }
            // The whole market stopped: the last prices stand, however old.
            if age > max_age && market.is_none() {
                continue;
            }
            // A market quoted in another asset is converted with that
            // asset's own feed, when it has one from enough venues (a
            // degraded rate would move every market converted through it);
            // a stablecoin rate off its peg converts but is flagged.
            let converted = match &slot.source.convert_via {
                None => Some((q.price, q.bid, q.ask, false)),
                Some(via) => match out.get(via) {
                    Some(Ok(conv)) if !conv.is_degraded() => {
                        let at = |p: i128| {
                            pow10(conv.decimals).and_then(|scale| {
                                p.checked_mul(conv.price_fixed).map(|p| p / scale)
                            })
                        };
                        let departed = conv.peg_departed;
                        at(q.price).map(|p| (p, q.bid.and_then(at), q.ask.and_then(at), departed))
                    }
                    _ => None,
                },
            };
            let Some((price, bid, ask, peg_departed)) = converted else {
                continue;
            };
            prices.push(SourcePrice {
                source: label,
                price,
                bid,
                ask,
                volume: q.volume,
                time_ms: q.time_ms,
                peg_departed,
            });
        }
        let params = ObservationParams {
            min_sources: feed.min_sources,
            max_deviation_bps: feed.max_deviation_bps.unwrap_or(config.max_deviation_bps),
            max_venue_weight_bps: feed
                .max_venue_weight_bps
                .unwrap_or(config.max_venue_weight_bps),
        };
        let mut result = observe(&feed.id, config.decimals_of(&feed.id), &prices, params);
        if let (Some((state, said_at)), Ok(o)) = (market, &mut result) {
            // Observed now: the venues said so at `said_at`.
            o.market = Some(state);
            o.observed_at_ms = said_at;
        }
        // A stablecoin's own feed says whether it is off its peg; every feed
        // converted through it inherits that (above).
        if config.is_peg_feed(&feed.id)
            && let Ok(o) = &mut result
        {
            o.peg_departed |=
                off_peg(o.price_fixed, o.decimals, config.max_peg_deviation_bps).unwrap_or(true);
        }
        if let Some(m) = metrics {
            let n = result
                .as_ref()
                .map(|o| o.sources_used.len() as i64)
                .unwrap_or(0);
            m.observation_sources
                .get_or_create(&FeedLabels {
                    feed: feed.id.clone(),
                })
                .set(n);
            let stopped = match market {
                None => 0,
                Some((MarketState::Halted, _)) => 1,
                Some((_, _)) => 2,
            };
            m.market_stopped
                .get_or_create(&FeedLabels {
                    feed: feed.id.clone(),
                })
                .set(stopped);
        }
        out.insert(feed.id.clone(), result);
    }
    out
}

/// When a market status answer counts as current: three status intervals
/// plus a request's timeout (one missed answer does not drop it).
fn state_ttl_ms(config: &SourcesConfig) -> u64 {
    config
        .market_status_interval
        .as_ms()
        .saturating_mul(3)
        .saturating_add(config.request_timeout.as_ms())
}

/// The slot's market state, if the venue said it recently.
fn fresh_state(config: &SourcesConfig, slot: &Slot, now: u64) -> Option<MarketState> {
    slot.market_state
        .filter(|(_, at)| now.saturating_sub(*at) <= state_ttl_ms(config))
        .map(|(s, _)| s)
}

/// Whether trading in `feed`'s market stopped: a strict majority of its
/// sources that report a current status say halted or closed (halted when
/// at least as many say halted as closed), with the newest such answer's
/// time. One venue's halt among trading venues is that venue's matter (its
/// quote is left out); a feed whose venues publish no status never stops.
fn stopped_market(
    config: &SourcesConfig,
    slots: &BTreeMap<(String, String), Slot>,
    feed: &str,
    now: u64,
) -> Option<(MarketState, u64)> {
    let (mut known, mut halted, mut closed, mut newest) = (0usize, 0usize, 0usize, 0u64);
    for slot in slots.values().filter(|s| s.source.feed == feed) {
        let Some(state) = fresh_state(config, slot, now) else {
            continue;
        };
        known += 1;
        let at = slot.market_state.map_or(0, |(_, at)| at);
        match state {
            MarketState::Open => continue,
            MarketState::Halted => halted += 1,
            MarketState::Closed => closed += 1,
        }
        newest = newest.max(at);
    }
    if known == 0 || (halted + closed) * 2 <= known {
        return None;
    }
    let state = if halted >= closed {
        MarketState::Halted
    } else {
        MarketState::Closed
    };
    Some((state, newest))
}

/// Latest observations, keyed by feed id, degraded ones included (fewer
/// venues than the feed's `min_sources`: [`Observation::is_degraded`]). A
/// feed with no usable source right now is absent; ask
/// [`FeedService::feed_errors`] why.
pub type Observations = Arc<BTreeMap<String, Observation>>;

/// Aborts the service's tasks when the last [`FeedService`] clone is dropped.
struct Tasks(Mutex<Vec<JoinHandle<()>>>);

impl Tasks {
    fn abort_all(&self) {
        let tasks = std::mem::take(&mut *self.0.lock().unwrap_or_else(|e| e.into_inner()));
        for t in tasks {
            t.abort();
        }
    }
}

impl Drop for Tasks {
    fn drop(&mut self) {
        self.abort_all();
    }
}

/// The running price sources of one member: REST pollers, WebSocket streams
/// and the aggregation task, publishing observations on a `watch` channel.
///
/// ```no_run
/// # async fn run(config: sibyl_feeds::config::SourcesConfig) -> Result<(), sibyl_feeds::error::ConfigError> {
/// let mut registry = prometheus_client::registry::Registry::default();
/// let feeds = sibyl_feeds::FeedService::start(config, &mut registry)?;
/// let mut rx = feeds.observations();
/// while rx.changed().await.is_ok() {
///     if let Some(obs) = rx.borrow().get("BTC-USD") {
///         println!("{} = {} (1e-{}), {} sources", obs.feed, obs.price_fixed, obs.decimals, obs.num_sources);
///     }
/// }
/// # Ok(()) }
/// ```
///
/// Cloneable. The tasks stop on [`FeedService::shutdown`] or when the last
/// clone is dropped. Must be started inside a tokio runtime.
#[derive(Clone)]
pub struct FeedService {
    shared: Arc<Shared>,
    observations: watch::Receiver<Observations>,
    tasks: Arc<Tasks>,
}

impl FeedService {
    /// Validate `config`, register the sources' metrics in `registry` and
    /// start fetching on the current tokio runtime.
    pub fn start(
        config: SourcesConfig,
        registry: &mut Registry,
    ) -> Result<FeedService, crate::error::ConfigError> {
        config.validate()?;
        let metrics = SourceMetrics::register(registry);
        let shared = Arc::new(Shared::new(config, metrics));
        let client = http_client(&shared.config)?;
        let (tx, rx) = watch::channel(Observations::default());
        let mut tasks = Vec::new();

        let mut by_venue: BTreeMap<Venue, Vec<String>> = BTreeMap::new();
        for s in shared.config.resolved_sources() {
            let markets = by_venue.entry(s.venue).or_default();
            if !markets.contains(&s.market) {
                markets.push(s.market);
            }
        }
        for (venue, markets) in by_venue {
            let limiter = Arc::new(venue_limiter(&shared.config, venue));
            tasks.push(tokio::spawn(poll_venue(
                shared.clone(),
                client.clone(),
                limiter,
                venue,
                markets.clone(),
            )));
            if shared.config.ws_enabled(venue) {
                tasks.push(tokio::spawn(ws::stream_venue(
                    shared.clone(),
                    venue,
                    markets,
                )));
            }
        }
        tasks.push(tokio::spawn(aggregate_loop(shared.clone(), tx)));
        Ok(FeedService {
            shared,
            observations: rx,
            tasks: Arc::new(Tasks(Mutex::new(tasks))),
        })
    }

    /// A receiver of the latest observations; `changed()` fires on every
    /// recomputation (at least every 250 ms, sooner after new quotes).
    pub fn observations(&self) -> watch::Receiver<Observations> {
        self.observations.clone()
    }

    /// The latest valid observation of `feed`, if any.
    pub fn latest(&self, feed: &str) -> Option<Observation> {
        self.observations.borrow().get(feed).cloned()
    }

    /// Why each feed without a valid observation has none.
    pub fn feed_errors(&self) -> BTreeMap<String, ObservationError> {
        self.shared
            .feed_errors
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Every source's latest quote, latency, error and breaker state.
    pub fn source_status(&self) -> Vec<SourceStatus> {
        self.shared.statuses()
    }

    /// The configuration the service runs with.
    pub fn config(&self) -> &SourcesConfig {
        &self.shared.config
    }

    /// Stop every task (also happens when the last clone is dropped).
    pub fn shutdown(&self) {
        self.tasks.abort_all();
    }
}

pub(crate) fn venue_limiter(config: &SourcesConfig, venue: Venue) -> RateLimiter {
    let published = venue.published_rate_limit();
    match config.venue(venue).rate_limit_per_sec {
        Some(r) => RateLimiter::new(r, r.max(published.burst)),
        None => RateLimiter::new(published.per_second, published.burst),
    }
}

pub(crate) fn http_client(
    config: &SourcesConfig,
) -> Result<reqwest::Client, crate::error::ConfigError> {
    install_crypto_provider();
    reqwest::Client::builder()
        .timeout(config.request_timeout.0)
        .connect_timeout(config.request_timeout.0)
        .user_agent(concat!("sibyl/", env!("CARGO_PKG_VERSION")))
        .pool_max_idle_per_host(4)
        .build()
        .map_err(|e| crate::error::ConfigError::Invalid(format!("cannot build HTTP client: {e}")))
}

async fn aggregate_loop(shared: Arc<Shared>, tx: watch::Sender<Observations>) {
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shared.changed.notified() => {
                // Coalesce bursts of updates from many sources into one computation.
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        let now = now_ms();
        let result = {
            let slots = shared.lock();
            compute_observations(&shared.config, &slots, now, Some(&shared.metrics))
        };
        let mut valid = BTreeMap::new();
        let mut errors = BTreeMap::new();
        for (feed, r) in result {
            match r {
                Ok(o) => {
                    valid.insert(feed, o);
                }
                Err(e) => {
                    errors.insert(feed, e);
                }
            }
        }
        *shared.feed_errors.lock().unwrap_or_else(|e| e.into_inner()) = errors;
        tx.send_replace(Arc::new(valid));
    }
}

async fn poll_venue(
    shared: Arc<Shared>,
    client: reqwest::Client,
    limiter: Arc<RateLimiter>,
    venue: Venue,
    markets: Vec<String>,
) {
    let base = shared.config.base_url(venue);
    let poll = shared.config.poll_interval.0;
    let mut tick = tokio::time::interval(poll);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let status_every = shared.config.market_status_interval.0;
    let reads_status = !status_every.is_zero() && venue.publishes_status();
    let mut status_due = Instant::now();
    let wake = shared.wake.get(&venue);
    loop {
        // Woken early to read the statuses another venue's change asked
        // for, or to poll at once because the venue's stream ended.
        let woken = tokio::select! {
            _ = tick.tick() => false,
            _ = async {
                match wake {
                    Some(w) => w.notify.notified().await,
                    None => std::future::pending().await,
                }
            } => true,
        };
        let poll_now = wake.is_some_and(|w| w.poll.swap(false, Ordering::Relaxed));
        let wanted = shared.take_status_wanted(venue);
        let due = Instant::now() >= status_due;
        if reads_status && (due || !wanted.is_empty()) {
            if due {
                status_due = Instant::now() + status_every;
            }
            for market in markets.iter().filter(|m| due || wanted.contains(m)) {
                let result = fetch_market_state(
                    &client,
                    &limiter,
                    &base,
                    venue,
                    market,
                    shared.config.request_timeout.as_ms(),
                )
                .await;
                shared.record_state(venue, market, result, false);
            }
        }
        if woken && !poll_now {
            continue;
        }
        let jobs = markets.iter().map(|market| {
            let (shared, client, limiter, base) = (
                shared.clone(),
                client.clone(),
                limiter.clone(),
                base.clone(),
            );
            async move {
                let now = now_ms();
                let (fresh_ws, allowed) = {
                    let mut slots = shared.lock();
                    let mut fresh_ws = false;
                    let mut allowed = Ok(());
                    for s in slots
                        .values_mut()
                        .filter(|s| s.source.venue == venue && &s.source.market == market)
                    {
                        fresh_ws |= s.via_ws
                            && now.saturating_sub(s.updated_ms) < 2 * poll.as_millis() as u64;
                        if let Err(wait) = s.breaker.allow(now) {
                            allowed = Err(wait);
                        }
                    }
                    (fresh_ws, allowed)
                };
                if fresh_ws {
                    return; // the stream is live; REST is only the fallback
                }
                if let Err(wait) = allowed {
                    shared
                        .metrics
                        .error(&format!("{venue}:{market}"), "circuit_open");
                    debug!(%venue, %market, wait_ms = wait, "circuit open, skipping");
                    return;
                }
                let started = Instant::now();
                let result = fetch_ticker(
                    &client,
                    &limiter,
                    &base,
                    venue,
                    market,
                    Retries {
                        max: shared.config.max_retries,
                        timeout_ms: shared.config.request_timeout.as_ms(),
                    },
                    || shared.retrying(venue, market),
                )
                .await;
                let latency = started.elapsed().as_millis() as u64;
                shared.record(venue, market, result, Some(latency), false);
            }
        });
        join_all(jobs).await;
    }
}

/// How often a ticker fetch is retried, and the request timeout it reports.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Retries {
    pub(crate) max: u32,
    pub(crate) timeout_ms: u64,
}

/// One ticker fetch with retries on transient errors (jittered backoff);
/// `on_retry` runs before the first retry (the poller marks the source
/// failing then, not only after the last attempt).
pub(crate) async fn fetch_ticker(
    client: &reqwest::Client,
    limiter: &RateLimiter,
    base: &str,
    venue: Venue,
    market: &str,
    Retries {
        max: max_retries,
        timeout_ms,
    }: Retries,
    on_retry: impl Fn(),
) -> Result<RawQuote, SourceError> {
    let url = format!("{base}{}", venue.ticker_path(market));
    let mut attempt = 0;
    loop {
        limiter.acquire().await;
        let result = fetch_once(client, &url)
            .await
            .map_err(|e| match e {
                SourceError::Timeout(_) => SourceError::Timeout(timeout_ms),
                other => other,
            })
            .and_then(|(status, body)| venue.parse_ticker(status, &body, market));
        match result {
            Err(e) if e.is_transient() && attempt < max_retries => {
                debug!(%venue, %market, error = %e, attempt, "retrying");
                if attempt == 0 {
                    on_retry();
                }
                tokio::time::sleep(backoff(
                    attempt,
                    Duration::from_millis(100),
                    Duration::from_secs(2),
                ))
                .await;
                attempt += 1;
            }
            other => return other,
        }
    }
}

/// One read of a market's trading status (no retries: the next read is
/// one status interval away, and the last answer stays current until then).
async fn fetch_market_state(
    client: &reqwest::Client,
    limiter: &RateLimiter,
    base: &str,
    venue: Venue,
    market: &str,
    timeout_ms: u64,
) -> Result<MarketState, SourceError> {
    let Some(path) = venue.status_path(market) else {
        return Err(SourceError::Malformed(format!(
            "{venue} publishes no market status"
        )));
    };
    limiter.acquire().await;
    let (status, body) =
        fetch_once(client, &format!("{base}{path}"))
            .await
            .map_err(|e| match e {
                SourceError::Timeout(_) => SourceError::Timeout(timeout_ms),
                other => other,
            })?;
    venue.parse_market_status(status, &body, market)
}

async fn fetch_once(client: &reqwest::Client, url: &str) -> Result<(u16, Vec<u8>), SourceError> {
    let map = |e: reqwest::Error| {
        if e.is_timeout() {
            SourceError::Timeout(0)
        } else {
            SourceError::Connect(snippet(&format!("{e}")))
        }
    };
    let mut resp = client.get(url).send().await.map_err(map)?;
    let status = resp.status().as_u16();
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(map)? {
        body.extend_from_slice(&chunk);
        if body.len() > MAX_BODY {
            return Err(SourceError::Malformed(format!(
                "body larger than {MAX_BODY} bytes"
            )));
        }
    }
    Ok((status, body))
}

/// Result of a one-shot probe of every configured source.
#[derive(Debug, Clone, Serialize)]
pub struct ProbeReport {
    pub sources: Vec<SourceStatus>,
    pub observations: BTreeMap<String, Result<Observation, String>>,
}

/// Fetch every configured source once over REST and compute observations:
/// the operator's check that the node sees the market.
pub async fn probe(config: &SourcesConfig) -> Result<ProbeReport, crate::error::ConfigError> {
    Ok(Prober::new(config.clone())?.round().await)
}

/// Repeated one-shot fetch rounds over one HTTP client (warm connections):
/// `probe` is one round; the benchmark times many.
pub struct Prober {
    shared: Arc<Shared>,
    client: reqwest::Client,
    venues: Vec<(Venue, String, Arc<RateLimiter>, Vec<String>)>,
    timeout_ms: u64,
}

impl Prober {
    pub fn new(config: SourcesConfig) -> Result<Prober, crate::error::ConfigError> {
        config.validate()?;
        let client = http_client(&config)?;
        let mut markets: BTreeMap<Venue, Vec<String>> = BTreeMap::new();
        for s in config.resolved_sources() {
            let m = markets.entry(s.venue).or_default();
            if !m.contains(&s.market) {
                m.push(s.market);
            }
        }
        let venues = markets
            .into_iter()
            .map(|(v, ms)| {
                (
                    v,
                    config.base_url(v),
                    Arc::new(venue_limiter(&config, v)),
                    ms,
                )
            })
            .collect();
        let timeout_ms = config.request_timeout.as_ms();
        let shared = Arc::new(Shared::new(config, SourceMetrics::default()));
        Ok(Prober {
            shared,
            client,
            venues,
            timeout_ms,
        })
    }

    /// Fetch every market once (all venues concurrently, each within its
    /// rate limit, no retries) and compute every feed's observation.
    pub async fn round(&self) -> ProbeReport {
        let mut jobs = Vec::new();
        for (venue, base, limiter, markets) in &self.venues {
            for market in markets {
                jobs.push(async move {
                    let started = Instant::now();
                    let r = fetch_ticker(
                        &self.client,
                        limiter,
                        base,
                        *venue,
                        market,
                        Retries {
                            max: 0,
                            timeout_ms: self.timeout_ms,
                        },
                        || {},
                    )
                    .await;
                    let latency = started.elapsed().as_millis() as u64;
                    self.shared.record(*venue, market, r, Some(latency), false);
                });
            }
        }
        join_all(jobs).await;
        let observations = {
            let slots = self.shared.lock();
            compute_observations(&self.shared.config, &slots, now_ms(), None)
        };
        ProbeReport {
            sources: self.shared.statuses(),
            observations: observations
                .into_iter()
                .map(|(k, v)| (k, v.map_err(|e| e.to_string())))
                .collect(),
        }
    }
}

#[cfg(test)]
#[allow(clippy::inconsistent_digit_grouping)] // prices written as units_cents
mod tests {
    use super::*;
    use crate::quote::Quote;

    const NOW: u64 = 1_000_000;

    /// BTC-USD from three USD venues and three USDT venues, converted with
    /// USDT-USD from the three USD venues' USDT markets; every price in 8
    /// decimals, as the sim config observes them.
    fn slots(usdt_usd: &[i128], btc_usd: i128, btc_usdt: i128) -> BTreeMap<(String, String), Slot> {
        let venues = [
            Venue::Coinbase,
            Venue::Kraken,
            Venue::Bitstamp,
            Venue::Binance,
            Venue::Okx,
            Venue::Bybit,
        ];
        let cfg =
            SourcesConfig::for_sim_exchange_venues("http://127.0.0.1:9", &["BTC-USD"], &venues);
        let shared = Shared::new(cfg, SourceMetrics::default());
        let mut slots = shared.lock().clone();
        let mut usdt = usdt_usd.iter();
        for slot in slots.values_mut() {
            let price = match (slot.source.feed.as_str(), &slot.source.convert_via) {
                ("USDT-USD", _) => usdt.next().copied(),
                (_, None) => Some(btc_usd),
                (_, Some(_)) => Some(btc_usdt),
            };
            slot.quote = price.map(|p| Quote {
                price: p,
                bid: Some(p - 1),
                ask: Some(p + 1),
                volume: None,
                time_ms: NOW,
            });
            slot.updated_ms = NOW;
        }
        slots
    }

    fn observe_all(
        slots: &BTreeMap<(String, String), Slot>,
    ) -> BTreeMap<String, Result<Observation, ObservationError>> {
        let venues = [
            Venue::Coinbase,
            Venue::Kraken,
            Venue::Bitstamp,
            Venue::Binance,
            Venue::Okx,
            Venue::Bybit,
        ];
        let cfg =
            SourcesConfig::for_sim_exchange_venues("http://127.0.0.1:9", &["BTC-USD"], &venues);
        compute_observations(&cfg, slots, NOW, None)
    }

    #[test]
    fn stablecoin_legs_convert_with_their_own_feed_and_flag_a_depeg() {
        // On its peg (1.0002): converted, not flagged.
        let out = observe_all(&slots(
            &[1_0002_0000, 1_0002_0000, 1_0002_0000],
            67_000_00000000,
            66_986_60267946,
        ));
        let usdt = out["USDT-USD"].as_ref().unwrap();
        assert!(!usdt.peg_departed, "{usdt:?}");
        let btc = out["BTC-USD"].as_ref().unwrap();
        assert_eq!(btc.num_sources, 6, "{btc:?}");
        assert!(!btc.peg_departed);
        assert!(
            (btc.price_fixed - 67_000_00000000).abs() <= 1_00000000,
            "{btc:?}"
        );

        // USDT at 0.95: BTC quotes 5 % higher in USDT; converted with the
        // real rate the USDT venues agree with the USD ones, and both feeds
        // say the peg is gone.
        let out = observe_all(&slots(
            &[95_000_000, 95_000_000, 95_000_000],
            67_000_00000000,
            70_526_31578947,
        ));
        let usdt = out["USDT-USD"].as_ref().unwrap();
        assert!(usdt.peg_departed, "{usdt:?}");
        let btc = out["BTC-USD"].as_ref().unwrap();
        assert_eq!(btc.num_sources, 6, "no outliers: {btc:?}");
        assert!(btc.peg_departed, "{btc:?}");
        assert!(
            (btc.price_fixed - 67_000_00000000).abs() <= 1_00000000,
            "{btc:?}"
        );
        // Bid and ask are converted like the price.
        assert!(
            btc.best_bid
                .is_some_and(|b| (b - 67_000_00000000).abs() < 1_00000000)
        );

        // Without USDT venues converting, a USD-only feed is never flagged.
        let mut only_usd = slots(
            &[95_000_000, 95_000_000, 95_000_000],
            67_000_00000000,
            70_526_31578947,
        );
        only_usd.retain(|(feed, _), s| feed == "USDT-USD" || s.source.convert_via.is_none());
        let btc = observe_all(&only_usd)["BTC-USD"].clone().unwrap();
        assert!(!btc.peg_departed && btc.num_sources == 3, "{btc:?}");
    }

    #[test]
    fn a_degraded_conversion_feed_converts_nothing() {
        // Two of USDT-USD's three venues quote: it is degraded (min 3), so
        // the USDT markets are left out of BTC-USD, which keeps its three USD venues.
        let out = observe_all(&slots(
            &[1_0000_0000, 1_0000_0000],
            67_000_00000000,
            67_000_00000000,
        ));
        let usdt = out["USDT-USD"].as_ref().unwrap();
        assert!(usdt.is_degraded(), "{usdt:?}");
        let btc = out["BTC-USD"].as_ref().unwrap();
        assert_eq!(btc.num_sources, 3, "{btc:?}");
        assert!(
            btc.sources_used.iter().all(|s| !s.contains("USDT")),
            "{btc:?}"
        );
    }

    /// The market stops for a feed only when a strict majority of its
    /// sources with a current status say so; an old status counts for
    /// nothing; a stopped market's last prices stand past `max_quote_age`.
    #[test]
    fn a_strict_majority_of_current_statuses_stops_the_market() {
        let set = |slots: &mut BTreeMap<(String, String), Slot>,
                   states: &[(Venue, MarketState, u64)]| {
            for slot in slots.values_mut().filter(|s| s.source.feed == "BTC-USD") {
                slot.market_state = states
                    .iter()
                    .find(|(v, _, _)| *v == slot.source.venue)
                    .map(|(_, s, at)| (*s, *at));
            }
        };
        let btc = |slots: &BTreeMap<(String, String), Slot>| {
            observe_all(slots)["BTC-USD"].clone().unwrap()
        };
        let mut s = slots(&[1_0000_0000; 3], 67_000_00000000, 67_000_00000000);
        // Two of four reporting venues halted: no majority; both left out.
        use MarketState::{Closed, Halted, Open};
        set(
            &mut s,
            &[
                (Venue::Coinbase, Halted, NOW),
                (Venue::Kraken, Halted, NOW),
                (Venue::Binance, Open, NOW),
                (Venue::Okx, Open, NOW),
            ],
        );
        let o = btc(&s);
        assert_eq!((o.market, o.num_sources), (None, 4), "{o:?}");
        // Three of four: halted, every venue's last price used.
        set(
            &mut s,
            &[
                (Venue::Coinbase, Halted, NOW),
                (Venue::Kraken, Closed, NOW),
                (Venue::Binance, Halted, NOW - 1),
                (Venue::Okx, Open, NOW),
            ],
        );
        let o = btc(&s);
        assert_eq!(
            (o.market, o.num_sources, o.observed_at_ms),
            (Some(Halted), 6, NOW),
            "{o:?}"
        );
        // More closed than halted: closed.
        set(
            &mut s,
            &[
                (Venue::Coinbase, Closed, NOW),
                (Venue::Kraken, Closed, NOW),
                (Venue::Binance, Halted, NOW),
            ],
        );
        assert_eq!(btc(&s).market, Some(Closed));
        // Statuses older than three intervals plus a timeout count for nothing.
        set(
            &mut s,
            &[
                (Venue::Coinbase, Closed, 1),
                (Venue::Kraken, Closed, 1),
                (Venue::Binance, Closed, 1),
            ],
        );
        let o = btc(&s);
        assert_eq!((o.market, o.num_sources), (None, 6), "{o:?}");
        // A stopped market's quotes older than max_quote_age still stand.
        set(
            &mut s,
            &[(Venue::Coinbase, Closed, NOW), (Venue::Kraken, Closed, NOW)],
        );
        for slot in s.values_mut().filter(|s| s.source.feed == "BTC-USD") {
            slot.updated_ms = 1;
            if let Some(q) = &mut slot.quote {
                q.time_ms = 1;
            }
        }
        let o = btc(&s);
        assert_eq!((o.market, o.num_sources), (Some(Closed), 6), "{o:?}");
        // A venue whose latest poll failed is left out at once while the
        // market trades, and back with its next good poll; one whose breaker
        // opened (it kept failing) stays out; in a stopped market its last
        // price stands.
        let mut s = slots(&[1_0000_0000; 3], 67_000_00000000, 67_000_00000000);
        let kraken = |s: &mut BTreeMap<(String, String), Slot>, f: &dyn Fn(&mut Slot)| {
            for slot in s
                .values_mut()
                .filter(|s| s.source.venue == Venue::Kraken && s.source.feed == "BTC-USD")
            {
                f(slot);
            }
        };
        kraken(&mut s, &|slot| slot.breaker.on_failure(NOW));
        assert_eq!(
            btc(&s).num_sources,
            5,
            "one failed poll leaves the venue out"
        );
        kraken(&mut s, &|slot| slot.breaker.on_success());
        assert_eq!(btc(&s).num_sources, 6, "a good poll brings it back");
        kraken(&mut s, &|slot| {
            for _ in 0..10 {
                slot.breaker.on_failure(NOW);
            }
        });
        let o = btc(&s);
        assert_eq!(o.num_sources, 5, "{o:?}");
        assert!(
            !o.sources_used.iter().any(|s| s.starts_with("kraken")),
            "{o:?}"
        );
        set(
            &mut s,
            &[(Venue::Coinbase, Closed, NOW), (Venue::Kraken, Closed, NOW)],
        );
        assert_eq!(btc(&s).num_sources, 6);
    }
}
