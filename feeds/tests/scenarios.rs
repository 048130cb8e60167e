//! The issue-18 scenarios end to end: the real adapters over real HTTP and
//! WebSocket on 127.0.0.1 against the simulated exchange, each scenario
//! switched on through the exchange's control API (`POST /control/...`)
//! once every venue quotes. The observation stays within 10 bps of the
//! honest venues' median where it should, and `num_sources`,
//! `min_sources`, `outliers`, `peg_departed` and `market` say what happened.

use std::time::{Duration, Instant};

use prometheus_client::registry::Registry;
use sibyl_feeds::config::Dur;
use sibyl_feeds::error::ObservationError;
use sibyl_feeds::sim::{Scenario, SimExchange, SimOptions};
use sibyl_feeds::venue::{MarketState, Venue};
use sibyl_feeds::{FeedService, Observation, SourcesConfig};

const FEED: &str = "BTC-USD";
const MAX_QUOTE_AGE_MS: u64 = 3_000;

struct Rig {
    sim: SimExchange,
    svc: FeedService,
    _registry: Registry,
    http: reqwest::Client,
}

impl Drop for Rig {
    fn drop(&mut self) {
        self.svc.shutdown();
    }
}

/// A frozen market (no walk) with every venue quoting BTC-USD.
async fn rig() -> Rig {
    rig_with(|_| {}).await
}

/// [`rig`] with the sources config changed by `tweak` first.
async fn rig_with(tweak: impl FnOnce(&mut SourcesConfig)) -> Rig {
    let sim = SimExchange::start(SimOptions {
        scenario: Scenario::Calm,
        walk: false,
        seed: 42,
        ..SimOptions::default()
    })
    .await
    .expect("simulated exchange starts on 127.0.0.1");
    let mut cfg = SourcesConfig::for_sim_exchange(&sim.base_url(), &[FEED]);
    cfg.poll_interval = Dur::ms(300);
    cfg.max_quote_age = Dur::ms(MAX_QUOTE_AGE_MS);
    tweak(&mut cfg);
    let mut registry = Registry::default();
    let svc = FeedService::start(cfg, &mut registry).expect("valid config");
    eventually(20, "an observation from all 14 venues", || {
        svc.latest(FEED).filter(|o| o.num_sources == 14)
    })
    .await;
    Rig {
        sim,
        svc,
        _registry: registry,
        http: reqwest::Client::new(),
    }
}

impl Rig {
    /// `POST /control/<what>` with a JSON body, as an operator would.
    async fn control(&self, what: &str, body: &str) {
        let resp = self
            .http
            .post(format!("{}/control/{what}", self.sim.base_url()))
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .expect("control API answers");
        assert!(
            resp.status().is_success(),
            "POST /control/{what} {body}: {resp:?}"
        );
    }

    async fn scenario(&self, name: &str) {
        self.control("scenario", &format!(r#"{{"name":"{name}"}}"#))
            .await;
    }

    fn latest(&self) -> Option<Observation> {
        self.svc.latest(FEED)
    }

    /// Median of the USD-quoted venues' own prices, leaving out `faulty`
    /// (the honest reference: no conversion involved).
    fn honest_median(&self, faulty: &[Venue]) -> i128 {
        let mut prices: Vec<i128> = self
            .svc
            .source_status()
            .into_iter()
            .filter(|s| s.feed == FEED && !faulty.contains(&s.venue))
            .filter(|s| {
                s.venue
                    .parse_market(&s.market)
                    .is_some_and(|(_, q)| q == "USD")
            })
            .filter_map(|s| s.price)
            .collect();
        prices.sort_unstable();
        assert!(!prices.is_empty(), "no honest USD venue quotes");
        let n = prices.len();
        if n % 2 == 1 {
            prices[n / 2]
        } else {
            (prices[n / 2 - 1] + prices[n / 2]) / 2
        }
    }

    /// The observation is within 10 bps of the honest venues' median.
    fn assert_honest(&self, o: &Observation, faulty: &[Venue]) {
        let honest = self.honest_median(faulty);
        assert!(
            bps_apart(o.price_fixed, honest) <= 10,
            "{} bps from the honest median {honest}: {o:?}",
            bps_apart(o.price_fixed, honest)
        );
    }
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

fn bps_apart(a: i128, b: i128) -> i128 {
    (a - b).abs() * 10_000 / b
}

fn uses(o: &Observation, venue: Venue) -> bool {
    o.sources_used
        .iter()
        .any(|s| s.starts_with(&format!("{venue}:")))
}

fn left_out(o: &Observation, venue: Venue) -> bool {
    o.outliers
        .iter()
        .any(|s| s.starts_with(&format!("{venue}:")))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_venue_1000x_off_is_left_out() {
    let rig = rig().await;
    rig.scenario("thousand-x").await;
    eventually(10, "gate.io left out as an outlier", || {
        rig.latest().filter(|o| left_out(o, Venue::Gateio))
    })
    .await;
    for _ in 0..20 {
        let o = rig.latest().expect("the observation stays");
        assert!(left_out(&o, Venue::Gateio) && o.num_sources == 13, "{o:?}");
        assert!(!o.is_degraded());
        rig.assert_honest(&o, &[]);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wick_on_one_venue_never_reaches_the_observation() {
    let rig = rig().await;
    rig.scenario("wick").await; // Coinbase +30 % for 5 s
    let started = Instant::now();
    let mut seen_out = false;
    while started.elapsed() < Duration::from_millis(6_000) {
        let o = rig.latest().expect("the observation stays");
        seen_out |= left_out(&o, Venue::Coinbase);
        assert!(!o.is_degraded(), "{o:?}");
        rig.assert_honest(&o, &[Venue::Coinbase]);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(seen_out, "the wick was never seen: the test saw no fault");
    let o = eventually(10, "coinbase back after its wick", || {
        rig.latest()
            .filter(|o| uses(o, Venue::Coinbase) && o.outliers.is_empty())
    })
    .await;
    rig.assert_honest(&o, &[]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thin_pumped_venue_inside_the_band_barely_moves_it() {
    let rig = rig().await;
    let before = rig.latest().expect("observation");
    let mexc = |rig: &Rig| {
        rig.svc
            .source_status()
            .into_iter()
            .find(|s| s.feed == FEED && s.venue == Venue::Mexc)
            .and_then(|s| s.price)
    };
    let mexc_before = mexc(&rig).expect("mexc quotes");
    rig.scenario("thin-pump").await; // MEXC +90 bps, a thousandth of its volume
    eventually(10, "mexc's pumped price", || {
        mexc(&rig).filter(|p| bps_apart(*p, mexc_before) >= 80)
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    for _ in 0..10 {
        let o = rig.latest().expect("the observation stays");
        // Inside the 100 bps band the pump is used, and weighs next to nothing.
        assert!(uses(&o, Venue::Mexc) && o.num_sources == 14, "{o:?}");
        rig.assert_honest(&o, &[Venue::Mexc]);
        assert!(
            bps_apart(o.price_fixed, before.price_fixed) <= 2,
            "{before:?} -> {o:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn venues_dropping_out_degrade_the_feed_then_take_it_away() {
    let rig = rig().await;
    // The eight USDT venues go down first: six USD venues remain, enough.
    for v in [
        Venue::Binance,
        Venue::Okx,
        Venue::Bybit,
        Venue::Kucoin,
        Venue::Gateio,
        Venue::Htx,
        Venue::Mexc,
        Venue::Bitget,
    ] {
        rig.control(
            "fault",
            &format!(r#"{{"venue":"{v}","fault":{{"kind":"outage"}}}}"#),
        )
        .await;
    }
    let o = eventually(15, "six venues left", || {
        rig.latest().filter(|o| o.num_sources == 6)
    })
    .await;
    assert!(!o.is_degraded(), "{o:?}");
    rig.assert_honest(&o, &[]);
    // Then all but Kraken and Bitstamp: two venues, fewer than three.
    rig.scenario("dropout").await;
    let o = eventually(15, "a degraded observation from two venues", || {
        rig.latest().filter(|o| o.num_sources == 2)
    })
    .await;
    assert_eq!((o.num_sources, o.min_sources), (2, 3), "{o:?}");
    assert!(o.is_degraded());
    assert!(
        uses(&o, Venue::Kraken) && uses(&o, Venue::Bitstamp),
        "{o:?}"
    );
    rig.assert_honest(&o, &[]);
    assert!(o.best_bid.is_some() && o.best_ask.is_some(), "{o:?}");
    // And the last two: no usable venue is no observation, with the reason.
    for v in [Venue::Kraken, Venue::Bitstamp] {
        rig.control(
            "fault",
            &format!(r#"{{"venue":"{v}","fault":{{"kind":"outage"}}}}"#),
        )
        .await;
    }
    eventually(15, "the feed to go away", || {
        rig.latest().is_none().then_some(())
    })
    .await;
    assert!(matches!(
        rig.svc.feed_errors().get(FEED),
        Some(ObservationError::NoUsableSource { quotes: 0, .. })
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stablecoin_depeg_is_converted_and_flagged() {
    let rig = rig().await;
    assert!(!rig.latest().expect("observation").peg_departed);
    rig.scenario("depeg").await; // USDT at 0.95 USD
    let o = eventually(15, "the depeg flagged with all 14 venues used", || {
        rig.latest()
            .filter(|o| o.peg_departed && o.num_sources == 14)
    })
    .await;
    // The USDT venues quote BTC 5 % higher in USDT; converted with USDT's
    // own feed they agree with the USD venues.
    assert!(o.outliers.is_empty(), "{o:?}");
    rig.assert_honest(&o, &[]);
    let usdt = rig.svc.latest("USDT-USD").expect("USDT-USD observed");
    assert!(
        usdt.peg_departed && bps_apart(usdt.price_fixed, 95_000_000) <= 10,
        "{usdt:?}"
    );
    // Over the HTTP control API: the peg comes back, and so does the flag.
    rig.control("depeg", r#"{"asset":"USDT","usd":null}"#).await;
    let o = eventually(15, "the peg back", || {
        rig.latest()
            .filter(|o| !o.peg_departed && o.num_sources == 14)
    })
    .await;
    rig.assert_honest(&o, &[]);
}

/// Waits for the observation to say the market stopped (`state`), checks
/// it keeps the stopping price, and that it still says so after the venues'
/// last quotes are older than `max_quote_age` (the last prices stand).
async fn stops_at_its_last_price(rig: &Rig, scenario: &str, state: MarketState) {
    let before = rig.latest().expect("observation").price_fixed;
    rig.scenario(scenario).await;
    let at = Instant::now();
    let o = eventually(10, &format!("the observation to say {state:?}"), || {
        rig.latest().filter(|o| o.market == Some(state))
    })
    .await;
    let said = at.elapsed();
    assert!(bps_apart(o.price_fixed, before) <= 10, "{o:?}");
    let want = match state {
        MarketState::Halted => 1,
        _ => 2,
    };
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &rig._registry).expect("metrics encode");
    assert!(
        text.contains(&format!(
            "sibyl_observation_market_stopped{{feed=\"{FEED}\"}} {want}"
        )),
        "{text}"
    );
    tokio::time::sleep(Duration::from_millis(MAX_QUOTE_AGE_MS + 1_000)).await;
    let later = rig.latest().expect("a stopped market keeps its last price");
    assert_eq!(later.market, Some(state), "{later:?}");
    assert!(bps_apart(later.price_fixed, before) <= 10, "{later:?}");
    println!(
        "{scenario}: observation says {state:?} {said:?} after the venues stopped (streamed by three venues, the rest asked at once; reads every 2 s otherwise); still {state:?} at the last price after {:?}",
        at.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_market_is_observed_closed_at_its_last_price() {
    let rig = rig().await;
    stops_at_its_last_price(&rig, "market-closed", MarketState::Closed).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_halted_market_is_observed_halted_at_its_last_price() {
    let rig = rig().await;
    stops_at_its_last_price(&rig, "halted", MarketState::Halted).await;
    // Trading resumes: the flag goes, and the price is live again.
    rig.scenario("calm").await;
    eventually(10, "the market trading again", || {
        rig.latest()
            .filter(|o| o.market.is_none() && o.num_sources == 14)
    })
    .await;
}

/// A halt is known as soon as the first venue announces it, not at the
/// next status read: the streams' status channels (Coinbase `status`,
/// Kraken `instrument`, OKX `instruments`) say it at once, and that change
/// sends every other venue of the feed to its status endpoint right away.
/// Status reads here are a minute apart, so only those two paths can be
/// what stops the feed within seconds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_halt_announced_on_a_stream_stops_the_feed_before_the_next_status_read() {
    let rig = rig_with(|cfg| cfg.market_status_interval = Dur::ms(60_000)).await;
    let stream_venues = [Venue::Coinbase, Venue::Kraken, Venue::Okx];
    let statuses = |state| {
        rig.svc
            .source_status()
            .into_iter()
            .filter(|s| s.feed == FEED && s.market_state == Some(state))
            .map(|s| s.venue)
            .collect::<Vec<_>>()
    };
    let with_status = rig
        .svc
        .source_status()
        .iter()
        .filter(|s| s.feed == FEED && s.venue.publishes_status())
        .count();
    // Every venue with a status endpoint answered its first read (at start).
    eventually(10, "the first status reads", || {
        (statuses(MarketState::Open).len() == with_status).then_some(())
    })
    .await;
    let open = statuses(MarketState::Open);
    let at = Instant::now();
    rig.scenario("halted").await;
    let o = eventually(10, "the observation to say Halted", || {
        rig.latest()
            .filter(|o| o.market == Some(MarketState::Halted))
    })
    .await;
    let took = at.elapsed();
    let halted = statuses(MarketState::Halted);
    let mut metrics = String::new();
    prometheus_client::encoding::text::encode(&mut metrics, &rig._registry)
        .expect("metrics encode");
    for v in stream_venues {
        let streamed = format!(
            "sibyl_source_market_states_total{{venue=\"{v}\",via=\"stream\",state=\"halted\"}}"
        );
        assert!(
            metrics.contains(&streamed),
            "{v} streamed no halt:\n{metrics}"
        );
    }
    // The venues without a status stream were asked, not left to the minute.
    assert_eq!(
        halted.len(),
        open.len(),
        "every venue that said open now says halted: {halted:?} (open before: {open:?})"
    );
    assert_eq!(o.market, Some(MarketState::Halted));
    println!(
        "halt announced on the streams: observation Halted {took:?} after the switch (status reads 60 s apart; {} venues asked at once)",
        halted.len() - stream_venues.len()
    );
    // And the reopening travels the same way.
    let at = Instant::now();
    rig.scenario("calm").await;
    eventually(10, "the market trading again", || {
        rig.latest()
            .filter(|o| o.market.is_none() && o.num_sources == 14)
    })
    .await;
    assert_eq!(statuses(MarketState::Open).len(), open.len());
    println!(
        "halt lifted: observation trading again {:?} after the switch",
        at.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_venue_halted_among_trading_ones_is_left_out() {
    let rig = rig().await;
    rig.control("fault", r#"{"venue":"binance","fault":{"kind":"halted"}}"#)
        .await;
    let o = eventually(10, "binance left out, the market still trading", || {
        rig.latest()
            .filter(|o| !uses(o, Venue::Binance) && o.num_sources == 13)
    })
    .await;
    assert_eq!(o.market, None, "{o:?}");
    let status = rig
        .svc
        .source_status()
        .into_iter()
        .find(|s| s.venue == Venue::Binance && s.feed == FEED)
        .expect("binance source");
    assert_eq!(status.market_state, Some(MarketState::Halted));
    rig.assert_honest(&o, &[Venue::Binance]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_market_status_a_closed_market_leaves_no_price_behind() {
    let rig = rig_with(|cfg| cfg.market_status_interval = Dur::ms(0)).await;
    let close = rig.latest().expect("observation").price_fixed;
    rig.scenario("market-closed").await;
    let closed_at = Instant::now();
    // Until the last quotes age out the observation is the closing price,
    // from fewer and fewer venues (the undated ones drop at once: an empty
    // book with an undated last trade is no price).
    while let Some(o) = rig.latest() {
        assert!(bps_apart(o.price_fixed, close) <= 10, "{o:?}");
        assert_eq!(o.market, None, "no status is read: {o:?}");
        assert!(
            closed_at.elapsed() < Duration::from_millis(MAX_QUOTE_AGE_MS + 5_000),
            "a closed market still has a price after {:?}: {o:?}",
            closed_at.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(matches!(
        rig.svc.feed_errors().get(FEED),
        Some(ObservationError::NoUsableSource { .. })
    ));
}
