//! Where a member's observations come from: the feeds service (real and
//! simulated exchanges), or a built-in deterministic source for tests and a
//! devnet without one. Either way the driver reads a `watch` of the latest
//! observation per feed.

use super::clock::{Clock, SystemClock};
use crate::config::FeedParams;
use sibyl_aggregator::round::LocalObservation;
use sibyl_aggregator::round::message::entry_flags;
use sibyl_feeds::venue::MarketState;
use tokio::sync::watch;

/// Latest observation per feed (ascending feed id).
pub type ObservationRx = watch::Receiver<Vec<LocalObservation>>;

/// How often the built-in source refreshes.
pub const BUILTIN_TICK_MS: u64 = 100;

fn fnv1a(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The built-in source's price of `feed` at `now_ms`: a base derived from the
/// feed id and a triangle wave of ±2 % with a 2-minute period, on a 100 ms
/// grid. Every member computes the same value, so a committee on one clock
/// observes identical prices. Integers only.
pub fn builtin_observation(feed: &FeedParams, now_ms: u64) -> LocalObservation {
    let t = now_ms - now_ms % BUILTIN_TICK_MS;
    let scale = 10i128.checked_pow(u32::from(feed.decimals)).unwrap_or(1);
    let units = 100 + i128::from(fnv1a(feed.id.as_str()) % 60_000);
    let base = units.saturating_mul(scale);
    let period = 1_200u64; // ticks of 100 ms
    let phase = (t / BUILTIN_TICK_MS) % period;
    let tri = if phase < period / 2 {
        phase
    } else {
        period - phase
    } as i128; // 0..=600
    let bps = tri * 400 / 600 - 200; // -200..=200
    let price = base + base / 10_000 * bps;
    // Bid and ask half a spread around the price; the built-in source
    // stands for one venue that is all a feed needs.
    let spread = (base / 10_000).unsigned_abs();
    let half = base / 20_000;
    LocalObservation {
        bid: Some(price - half),
        ask: Some(price + half),
        ..LocalObservation::basic(feed.id.clone(), price, spread, t)
    }
}

/// Starts the built-in source for `feeds` on the system clock; it stops when
/// every receiver is dropped.
pub fn builtin(feeds: Vec<FeedParams>) -> ObservationRx {
    builtin_on(feeds, SystemClock)
}

/// [`builtin`] on `clock` (the driver's, so observations and rounds share
/// one time): a new observation every 100 ms, half-way between ticks of the
/// grid, so a round slot (on the grid) never races the source's update.
pub fn builtin_on(feeds: Vec<FeedParams>, clock: impl Clock) -> ObservationRx {
    let now = clock.now_ms();
    let (tx, rx) = watch::channel(feeds.iter().map(|f| builtin_observation(f, now)).collect());
    tokio::spawn(async move {
        loop {
            let now = clock.now_ms();
            let half = BUILTIN_TICK_MS / 2;
            let next = (now + half) - (now + half) % BUILTIN_TICK_MS + half;
            clock.sleep_until_ms(next).await;
            let now = clock.now_ms();
            let list = feeds.iter().map(|f| builtin_observation(f, now)).collect();
            if tx.send(list).is_err() {
                return;
            }
        }
    });
    rx
}

/// Adapts the feeds service's observations to the committee's feeds.
/// Observations of feeds outside the committee (conversion feeds such as
/// `USDT-USD`) are left out. The service observes every committee feed at the
/// committee's decimals (`Config::load` hands them over), so no price needs
/// rescaling here.
pub fn from_feed_service(
    service: sibyl_feeds::FeedService,
    feeds: Vec<FeedParams>,
) -> ObservationRx {
    let mut src = service.observations();
    let (tx, rx) = watch::channel(Vec::new());
    tokio::spawn(async move {
        let _keep = service; // the service's tasks stop when its last clone drops
        loop {
            let list: Vec<LocalObservation> = {
                let obs = src.borrow_and_update();
                feeds
                    .iter()
                    .filter_map(|f| {
                        let o = obs.get(f.id.as_str())?;
                        Some(local_observation(f, o))
                    })
                    .collect()
            };
            if tx.send(list).is_err() {
                return;
            }
            if src.changed().await.is_err() {
                return;
            }
        }
    });
    rx
}

/// Feed ids as strings, for building a sources config.
pub fn feed_names(feeds: &[FeedParams]) -> Vec<String> {
    feeds.iter().map(|f| f.id.as_str().to_string()).collect()
}

/// One feeds-service observation as the round's local observation: price,
/// spread, best bid/ask, venue counts and the peg flag.
fn local_observation(f: &FeedParams, o: &sibyl_feeds::aggregate::Observation) -> LocalObservation {
    LocalObservation {
        // Best bid and ask among the venues used, in the
        // feed's fixed point (None: no used venue gave one).
        bid: o.best_bid,
        ask: o.best_ask,
        venues: u16::try_from(o.num_sources).unwrap_or(u16::MAX),
        min_venues: u16::try_from(o.min_sources).unwrap_or(u16::MAX),
        // The venues' status endpoints (docs/SOURCES.md, "Market
        // status"): a stopped market's last price, flagged.
        flags: [
            (o.peg_departed, entry_flags::PEG_DEPARTED),
            (o.market == Some(MarketState::Halted), entry_flags::HALTED),
            (
                o.market == Some(MarketState::Closed),
                entry_flags::MARKET_CLOSED,
            ),
        ]
        .into_iter()
        .filter(|(on, _)| *on)
        .fold(0, |acc, (_, bit)| acc | bit),
        ..LocalObservation::basic(
            f.id.clone(),
            o.price_fixed,
            o.spread.unsigned_abs(),
            o.observed_at_ms,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sibyl_aggregator::FeedId;

    fn feed(id: &str, decimals: u8) -> FeedParams {
        FeedParams {
            id: FeedId::new(id).unwrap(),
            decimals,
            deviation_bps: 50,
            heartbeat_ms: 60_000,
            policy: Default::default(),
        }
    }

    #[test]
    fn builtin_is_deterministic_bounded_and_moves() {
        let f = feed("BTC-USD", 8);
        let a = builtin_observation(&f, 1_700_000_000_050);
        let b = builtin_observation(&f, 1_700_000_000_099);
        assert_eq!(a, b, "same 100 ms tick, same observation");
        assert_eq!(a.observed_at_ms, 1_700_000_000_000);
        let c = builtin_observation(&f, 1_700_000_030_000);
        assert_ne!(a.price, c.price, "the price moves over time");
        let scale = 10i128.pow(8);
        for t in (0..240_000).step_by(700) {
            let o = builtin_observation(&f, 1_700_000_000_000 + t);
            assert!(o.price > 90 * scale, "{o:?}");
            assert!(o.spread > 0);
        }
        let other = builtin_observation(&feed("ETH-USD", 8), 1_700_000_000_050);
        assert_ne!(a.price, other.price, "feeds get different prices");
    }

    /// A degraded, off-peg observation from the feeds service reaches the
    /// round with its bid/ask, both venue counts and the peg flag.
    #[test]
    fn feeds_observation_maps_every_quality_field() {
        let f = feed("BTC-USD", 8);
        let mut o = sibyl_feeds::Observation {
            feed: "BTC-USD".into(),
            decimals: 8,
            price_fixed: 6_000_000_000_000,
            spread: -1_500,
            spread_bps: 1,
            num_sources: 2,
            observed_at_ms: 1_700_000_000_000,
            sources_used: vec!["a".into(), "b".into()],
            outliers: Vec::new(),
            best_bid: Some(5_999_999_000_000),
            best_ask: Some(6_000_001_000_000),
            min_sources: 3,
            peg_departed: true,
            market: None,
        };
        let l = local_observation(&f, &o);
        assert_eq!((l.price, l.spread), (6_000_000_000_000, 1_500));
        assert_eq!((l.bid, l.ask), (o.best_bid, o.best_ask));
        assert_eq!((l.venues, l.min_venues), (2, 3));
        assert_eq!(l.flags, entry_flags::PEG_DEPARTED);
        o.peg_departed = false;
        o.best_bid = None;
        o.min_sources = u32::MAX;
        let l = local_observation(&f, &o);
        assert_eq!((l.bid, l.flags, l.min_venues), (None, 0, u16::MAX));
        o.market = Some(MarketState::Halted);
        assert_eq!(local_observation(&f, &o).flags, entry_flags::HALTED);
        o.market = Some(MarketState::Closed);
        o.peg_departed = true;
        assert_eq!(
            local_observation(&f, &o).flags,
            entry_flags::MARKET_CLOSED | entry_flags::PEG_DEPARTED
        );
    }
}
