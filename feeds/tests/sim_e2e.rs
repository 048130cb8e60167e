//! End to end: the real adapters, over real HTTP and WebSocket on
//! 127.0.0.1, against the simulated exchange with faults injected.

use std::time::Duration;

use prometheus_client::registry::Registry;
use sibyl_feeds::config::Dur;
use sibyl_feeds::sim::{Fault, Scenario, SimExchange, SimOptions};
use sibyl_feeds::venue::Venue;
use sibyl_feeds::{FeedService, Observation, SourcesConfig};

const FEED: &str = "BTC-USD";

async fn sim(scenario: Scenario, walk: bool) -> SimExchange {
    SimExchange::start(SimOptions {
        scenario,
        walk,
        seed: 42,
        ..SimOptions::default()
    })
    .await
    .expect("simulated exchange starts on 127.0.0.1")
}

fn config(sim: &SimExchange) -> SourcesConfig {
    let mut cfg = SourcesConfig::for_sim_exchange(&sim.base_url(), &[FEED, "ETH-USD"]);
    cfg.poll_interval = Dur::ms(300);
    cfg.max_quote_age = Dur::ms(3_000);
    cfg
}

fn start(cfg: SourcesConfig) -> (FeedService, Registry) {
    let mut registry = Registry::default();
    let svc = FeedService::start(cfg, &mut registry).expect("valid config");
    (svc, registry)
}

/// Poll `f` every 50 ms until it returns `Some`, or panic after `secs`.
async fn eventually<T>(secs: u64, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(t) = f() {
            return t;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn venues_with_price(svc: &FeedService, feed: &str) -> Vec<Venue> {
    let mut v: Vec<Venue> = svc
        .source_status()
        .into_iter()
        .filter(|s| s.feed == feed && s.price.is_some())
        .map(|s| s.venue)
        .collect();
    v.dedup();
    v
}

fn bps_apart(a: i128, b: i128) -> i128 {
    (a - b).abs() * 10_000 / b
}

async fn all_sources_up(svc: &FeedService) -> Observation {
    eventually(20, "all 14 venues to quote BTC-USD", || {
        (venues_with_price(svc, FEED).len() == Venue::ALL.len()).then_some(())
    })
    .await;
    eventually(5, "an observation from all 14 sources", || {
        svc.latest(FEED).filter(|o| o.num_sources == 14)
    })
    .await
}

fn model_fixed(sim: &SimExchange, asset: &str) -> i128 {
    (sim.usd_price(asset).expect("known asset") * 1e8) as i128
}

fn metrics_text(registry: &Registry) -> String {
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, registry).expect("encode metrics");
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_adapter_produces_quotes_over_rest_and_ws() {
    let sim = sim(Scenario::Calm, true).await;
    let (svc, registry) = start(config(&sim));
    let obs = all_sources_up(&svc).await;
    assert_eq!(obs.decimals, 8);
    assert!(
        obs.outliers.is_empty(),
        "calm market has no outliers: {:?}",
        obs.outliers
    );
    // The model keeps walking; venues sit within a few bps of it.
    assert!(
        bps_apart(obs.price_fixed, model_fixed(&sim, "BTC")) <= 25,
        "{obs:?}"
    );
    let eth = eventually(5, "ETH-USD", || svc.latest("ETH-USD")).await;
    assert!(
        bps_apart(eth.price_fixed, model_fixed(&sim, "ETH")) <= 25,
        "{eth:?}"
    );
    // The four streaming venues deliver over WebSocket.
    for v in [Venue::Binance, Venue::Coinbase, Venue::Kraken, Venue::Okx] {
        eventually(10, &format!("{v} quotes over WebSocket"), || {
            svc.source_status()
                .iter()
                .any(|s| s.venue == v && s.via_ws && s.price.is_some())
                .then_some(())
        })
        .await;
    }
    let text = metrics_text(&registry);
    assert!(
        text.contains("sibyl_source_quotes_total{source=\"gemini:btcusd\",feed=\"BTC-USD\"}"),
        "{text}"
    );
    assert!(text.contains("sibyl_source_staleness_seconds{"), "{text}");
    svc.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flash_crash_on_one_venue_moves_the_observation_at_most_10_bps() {
    let sim = sim(Scenario::Calm, false).await;
    let (svc, _registry) = start(config(&sim));
    let before = all_sources_up(&svc).await;

    // A 30% crash on Binance (REST and stream): left out as an outlier.
    sim.set_fault(Venue::Binance, Some(Fault::FlashCrash { bps: 3_000 }));
    let during = eventually(10, "binance left out as an outlier", || {
        svc.latest(FEED)
            .filter(|o| o.outliers.iter().any(|s| s.starts_with("binance:")))
    })
    .await;
    assert!(
        bps_apart(during.price_fixed, before.price_fixed) <= 10,
        "{before:?} -> {during:?}"
    );

    // A small crash (80 bps, inside the outlier band) on the heaviest venue
    // stays in the median and still barely moves it.
    sim.set_fault(Venue::Binance, None);
    sim.set_fault(Venue::Bitget, Some(Fault::FlashCrash { bps: 80 }));
    let bitget_before = svc
        .source_status()
        .into_iter()
        .find(|s| s.feed == FEED && s.venue == Venue::Bitget);
    let bitget_before = bitget_before.and_then(|s| s.price).expect("bitget quoted");
    eventually(10, "bitget's crashed price", || {
        svc.source_status()
            .into_iter()
            .find(|s| s.feed == FEED && s.venue == Venue::Bitget)
            .and_then(|s| s.price)
            .filter(|p| bps_apart(*p, bitget_before) >= 70)
    })
    .await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    let after = svc.latest(FEED).expect("observation stays valid");
    assert!(
        after.sources_used.iter().any(|s| s.starts_with("bitget:")),
        "{after:?}"
    );
    assert!(
        bps_apart(after.price_fixed, before.price_fixed) <= 10,
        "{before:?} -> {after:?}"
    );
    svc.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outage_of_one_venue_leaves_the_observation_valid() {
    let sim = sim(Scenario::Calm, false).await;
    let (svc, registry) = start(config(&sim));
    let before = all_sources_up(&svc).await;
    sim.set_fault(Venue::Coinbase, Some(Fault::Outage));
    // Coinbase leaves the price at its first failed request (its stream closes and it is REST-polled at once) while every other source carries on.
    let after = eventually(15, "coinbase to drop out", || {
        svc.latest(FEED)
            .filter(|o| !o.sources_used.iter().any(|s| s.starts_with("coinbase:")))
    })
    .await;
    assert_eq!(after.num_sources, 13);
    assert!(bps_apart(after.price_fixed, before.price_fixed) <= 10);
    // Coinbase leaves at its first failed request; the poll's error is
    // counted once its retries are spent too.
    let error = "sibyl_source_errors_total{source=\"coinbase:BTC-USD\",reason=\"http_status\"}";
    eventually(10, "coinbase's failed poll counted", || {
        metrics_text(&registry).contains(error).then_some(())
    })
    .await;
    // Back from the outage: the breaker closes again and Coinbase returns.
    sim.set_fault(Venue::Coinbase, None);
    eventually(20, "coinbase to come back", || {
        svc.latest(FEED)
            .filter(|o| o.sources_used.iter().any(|s| s.starts_with("coinbase:")))
    })
    .await;
    svc.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_never_becomes_a_price() {
    // Kraken answers garbage (REST and stream) from the start; Bybit rate-limits.
    let sim = sim(Scenario::Garbage, false).await;
    sim.set_fault(Venue::Bybit, Some(Fault::RateLimited));
    let (svc, registry) = start(config(&sim));
    let obs = eventually(15, "an observation", || {
        svc.latest(FEED).filter(|o| o.num_sources >= 12)
    })
    .await;
    let model = model_fixed(&sim, "BTC");
    for _ in 0..40 {
        for s in svc.source_status() {
            if s.venue == Venue::Kraken || s.venue == Venue::Bybit {
                assert_eq!(s.price, None, "{} must never have a price: {s:?}", s.source);
            }
        }
        let o = svc.latest(FEED).expect("observation stays valid");
        assert!(
            !o.sources_used
                .iter()
                .any(|s| s.starts_with("kraken:") || s.starts_with("bybit:"))
        );
        assert!(bps_apart(o.price_fixed, model) <= 5, "{o:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(bps_apart(obs.price_fixed, model) <= 5);
    let text = metrics_text(&registry);
    for reason in ["malformed", "non_finite", "rate_limited"] {
        assert!(
            text.contains(&format!("reason=\"{reason}\"")),
            "no {reason} error counted:\n{text}"
        );
    }
    assert!(text.contains("source=\"kraken:XBTUSD\""), "{text}");
    svc.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probe_reports_every_source() {
    let sim = sim(Scenario::Outage, false).await;
    let report = sibyl_feeds::service::probe(&config(&sim))
        .await
        .expect("probe runs");
    let btc: Vec<_> = report.sources.iter().filter(|s| s.feed == FEED).collect();
    assert_eq!(btc.len(), 14);
    for s in &btc {
        if s.venue == Venue::Coinbase {
            assert!(s.price.is_none() && s.last_error.is_some(), "{s:?}");
        } else {
            assert!(s.price.is_some() && s.latency_ms.is_some(), "{s:?}");
        }
    }
    assert!(matches!(report.observations.get(FEED), Some(Ok(o)) if o.num_sources == 13));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_on_seven_venues_leaves_an_honest_observation() {
    // Flash crash (Binance), outage (Coinbase), garbage (Kraken), stale
    // (OKX), rate limited (Bybit), slow beyond the timeout (Bitstamp) and a
    // drifting KuCoin, all at once, from the start.
    let sim = sim(Scenario::Chaos, false).await;
    let (svc, registry) = start(config(&sim));
    let model = model_fixed(&sim, "BTC");
    let faulty = [
        "binance:",
        "coinbase:",
        "kraken:",
        "okx:",
        "bybit:",
        "bitstamp:",
    ];
    // OKX's first (frozen) quote is fresh for max_quote_age (3 s), then ages
    // out; the failing venues leave as their breakers open, which can be
    // before every honest venue (and the USDT conversion) is in.
    let obs = eventually(20, "the honest venues alone in the observation", || {
        svc.latest(FEED).filter(|o| {
            o.num_sources >= 7
                && !o
                    .sources_used
                    .iter()
                    .any(|s| faulty.iter().any(|f| s.starts_with(f)))
        })
    })
    .await;
    assert!(
        bps_apart(obs.price_fixed, model) <= 10,
        "{obs:?} vs model {model}"
    );
    // Bitstamp's timeouts are counted once its retries are spent (about 3 s).
    eventually(
        10,
        "too_old, timeout, rate_limited and http_status errors counted",
        || {
            let text = metrics_text(&registry);
            ["too_old", "timeout", "rate_limited", "http_status"]
                .iter()
                .all(|r| text.contains(&format!("reason=\"{r}\"")))
                .then_some(())
        },
    )
    .await;
    let now = svc.latest(FEED).expect("still valid");
    assert!(
        bps_apart(now.price_fixed, model) <= 10,
        "{now:?} vs model {model}"
    );
    svc.shutdown();
}
