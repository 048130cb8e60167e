//! The market model behind the simulated exchange and the faults it can
//! inject. Floats are fine here: this is a test double of the outside world,
//! not consensus code; prices leave it as decimal text.

use std::collections::BTreeMap;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::venue::{Tick, Venue};

/// A fault injected on one venue.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Fault {
    /// HTTP 503 on REST, WebSocket upgrades refused and sessions closed.
    Outage,
    /// Every REST answer is delayed by `ms`.
    Slow { ms: u64 },
    /// Price and timestamp frozen at the moment the fault started; the
    /// WebSocket stops sending ticks.
    Stale,
    /// Bodies that must never become a price: HTML, NaN, negative, zero,
    /// absurd, crossed bid/ask, truncated JSON (rotating).
    Garbage,
    /// HTTP 429 with the venue's own rate-limit body.
    RateLimited,
    /// The venue's price drops by `bps` basis points.
    FlashCrash { bps: u32 },
    /// The venue's price drifts away from the market by `bps_per_sec`, growing.
    Drift { bps_per_sec: u32 },
}

/// Named sets of faults for `sibyl sim-exchange --scenario NAME`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scenario {
    Calm,
    FlashCrash,
    Outage,
    Slow,
    Stale,
    Garbage,
    RateLimited,
    Drift,
    /// One different fault on each of seven venues at once.
    Chaos,
}

impl Scenario {
    pub const ALL: [Scenario; 9] = [
        Scenario::Calm,
        Scenario::FlashCrash,
        Scenario::Outage,
        Scenario::Slow,
        Scenario::Stale,
        Scenario::Garbage,
        Scenario::RateLimited,
        Scenario::Drift,
        Scenario::Chaos,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Scenario::Calm => "calm",
            Scenario::FlashCrash => "flash-crash",
            Scenario::Outage => "outage",
            Scenario::Slow => "slow",
            Scenario::Stale => "stale",
            Scenario::Garbage => "garbage",
            Scenario::RateLimited => "rate-limited",
            Scenario::Drift => "drift",
            Scenario::Chaos => "chaos",
        }
    }

    pub fn from_name(name: &str) -> Option<Scenario> {
        Scenario::ALL.into_iter().find(|s| s.name() == name)
    }

    /// The faults this scenario starts with.
    pub fn faults(self) -> BTreeMap<Venue, Fault> {
        let one = |v, f| BTreeMap::from([(v, f)]);
        match self {
            Scenario::Calm => BTreeMap::new(),
            Scenario::FlashCrash => one(Venue::Binance, Fault::FlashCrash { bps: 3_000 }),
            Scenario::Outage => one(Venue::Coinbase, Fault::Outage),
            Scenario::Slow => one(Venue::Bitstamp, Fault::Slow { ms: 3_000 }),
            Scenario::Stale => one(Venue::Okx, Fault::Stale),
            Scenario::Garbage => one(Venue::Kraken, Fault::Garbage),
            Scenario::RateLimited => one(Venue::Bybit, Fault::RateLimited),
            Scenario::Drift => one(Venue::Kucoin, Fault::Drift { bps_per_sec: 5 }),
            Scenario::Chaos => BTreeMap::from([
                (Venue::Binance, Fault::FlashCrash { bps: 3_000 }),
                (Venue::Coinbase, Fault::Outage),
                (Venue::Bitstamp, Fault::Slow { ms: 3_000 }),
                (Venue::Okx, Fault::Stale),
                (Venue::Kraken, Fault::Garbage),
                (Venue::Bybit, Fault::RateLimited),
                (Venue::Kucoin, Fault::Drift { bps_per_sec: 5 }),
            ]),
        }
    }
}

/// Assets the model knows, with their starting USD prices. Anything else is
/// an unknown symbol on every venue.
const ASSETS: [(&str, f64); 27] = [
    ("BTC", 67_000.0),
    ("ETH", 3_500.0),
    ("SOL", 150.0),
    ("BNB", 580.0),
    ("XRP", 0.6),
    ("DOGE", 0.15),
    ("ADA", 0.45),
    ("AVAX", 35.0),
    ("LINK", 15.0),
    ("DOT", 7.0),
    ("LTC", 80.0),
    ("BCH", 450.0),
    ("UNI", 9.0),
    ("ATOM", 9.0),
    ("NEAR", 6.0),
    ("APT", 9.0),
    ("ARB", 1.1),
    ("OP", 2.5),
    ("TRX", 0.12),
    ("XLM", 0.11),
    ("FIL", 5.5),
    ("AAVE", 95.0),
    ("ETC", 25.0),
    ("USDT", 1.0002),
    ("USDC", 0.9999),
    ("EUR", 1.08),
    ("USD", 1.0),
];

const STABLES: [&str; 3] = ["USDT", "USDC", "USD"];

#[derive(Debug, Clone, Copy)]
struct ActiveFault {
    fault: Fault,
    since_ms: u64,
}

/// The seeded market: a log-normal random walk with rare jumps per asset,
/// stablecoins mean-reverting around their peg.
pub(crate) struct Market {
    rng: ChaCha8Rng,
    /// USD price per asset.
    usd: BTreeMap<&'static str, f64>,
    /// Static per-venue offset in basis points (venues never agree exactly).
    offsets_bps: BTreeMap<Venue, f64>,
    faults: BTreeMap<Venue, ActiveFault>,
    /// Frozen ticks of stale venues, per market.
    frozen: BTreeMap<(Venue, String, String), Tick>,
    pub(crate) walk: bool,
    pub(crate) steps: u64,
    /// Garbage bodies served so far, per venue: each venue cycles through
    /// every kind of garbage in order from its first request, whatever the
    /// other venues are asked (a shared counter let a venue's circuit
    /// breaker open before it had seen every kind).
    pub(crate) garbage_served: BTreeMap<Venue, u64>,
}

impl Market {
    pub(crate) fn new(seed: u64, walk: bool) -> Market {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let offsets_bps = Venue::ALL
            .into_iter()
            .map(|v| (v, rng.gen_range(-2.0..2.0)))
            .collect();
        Market {
            rng,
            usd: ASSETS.into_iter().collect(),
            offsets_bps,
            faults: BTreeMap::new(),
            frozen: BTreeMap::new(),
            walk,
            steps: 0,
            garbage_served: BTreeMap::new(),
        }
    }

    /// Advance the walk by one step (the server steps every 100 ms).
    pub(crate) fn step(&mut self) {
        self.steps += 1;
        if !self.walk {
            return;
        }
        for (asset, price) in self.usd.iter_mut() {
            if *asset == "USD" {
                continue;
            }
            if STABLES.contains(asset) {
                // Mean-revert to 1.0 with a 0.5 bp wiggle.
                let noise: f64 = self.rng.gen_range(-0.5e-4..0.5e-4);
                *price += (1.0 - *price) * 0.05 + noise;
                continue;
            }
            // ~1.5 bp per step; a jump of up to +-40 bp once every ~500 steps.
            let mut r: f64 = self.rng.gen_range(-1.5e-4..1.5e-4);
            if self.rng.gen_ratio(1, 500) {
                r += self.rng.gen_range(-40e-4..40e-4);
            }
            *price *= 1.0 + r;
        }
    }

    pub(crate) fn usd_price(&self, asset: &str) -> Option<f64> {
        self.usd.get(asset).copied()
    }

    pub(crate) fn set_fault(&mut self, venue: Venue, fault: Option<Fault>, now_ms: u64) {
        self.frozen.retain(|(v, _, _), _| *v != venue);
        match fault {
            Some(fault) => {
                self.faults.insert(
                    venue,
                    ActiveFault {
                        fault,
                        since_ms: now_ms,
                    },
                );
            }
            None => {
                self.faults.remove(&venue);
            }
        }
    }

    pub(crate) fn fault(&self, venue: Venue) -> Option<Fault> {
        self.faults.get(&venue).map(|f| f.fault)
    }

    pub(crate) fn faults(&self) -> BTreeMap<Venue, Fault> {
        self.faults.iter().map(|(v, f)| (*v, f.fault)).collect()
    }

    /// The venue's quote for `base`/`quote`, or `None` for an unknown market.
    pub(crate) fn tick(
        &mut self,
        venue: Venue,
        base: &str,
        quote: &str,
        now_ms: u64,
    ) -> Option<Tick> {
        let (b, q) = (self.usd_price(base)?, self.usd_price(quote)?);
        if base == quote {
            return None;
        }
        let key = (venue, base.to_string(), quote.to_string());
        let active = self.faults.get(&venue).copied();
        if let Some(ActiveFault {
            fault: Fault::Stale,
            ..
        }) = active
            && let Some(t) = self.frozen.get(&key)
        {
            return Some(t.clone());
        }
        let mut bps = self.offsets_bps.get(&venue).copied().unwrap_or(0.0);
        match active {
            Some(ActiveFault {
                fault: Fault::FlashCrash { bps: drop },
                ..
            }) => bps -= f64::from(drop),
            Some(ActiveFault {
                fault: Fault::Drift { bps_per_sec },
                since_ms,
            }) => {
                bps += f64::from(bps_per_sec) * now_ms.saturating_sub(since_ms) as f64 / 1000.0;
            }
            _ => {}
        }
        let mid = b / q * (1.0 + bps / 10_000.0);
        let dp = decimals_for(mid);
        let half_bid_ask = (mid * 0.5e-4).max(10f64.powi(-(dp as i32)));
        // Volume differs per venue so volume weighting has something to weigh.
        let volume = 1_000.0 * (1.0 + venue as u8 as f64) * 67_000.0 / b.max(1e-9);
        let tick = Tick {
            bid: format!("{:.*}", dp, mid - half_bid_ask),
            ask: format!("{:.*}", dp, mid + half_bid_ask),
            last: format!("{:.*}", dp, mid),
            volume: format!("{volume:.4}"),
            time_ms: now_ms,
        };
        if let Some(ActiveFault {
            fault: Fault::Stale,
            ..
        }) = active
        {
            self.frozen.insert(key, tick.clone());
        }
        Some(tick)
    }
}

/// Decimal places a venue would quote a price of this size with.
fn decimals_for(price: f64) -> usize {
    if price >= 1_000.0 {
        2
    } else if price >= 10.0 {
        3
    } else if price >= 1.0 {
        5
    } else {
        6
    }
}

/// Split a venue market into (base, quote) the way the simulated exchange
/// understands it; `None` when the symbol is not in the venue's format.
pub(crate) fn market_assets(venue: Venue, market: &str) -> Option<(String, String)> {
    if let Some((b, q)) = market.split_once('/') {
        return Some((b.to_ascii_uppercase(), q.to_ascii_uppercase())); // Kraken WS v2
    }
    venue.parse_market(market)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_walk() {
        let mut a = Market::new(7, true);
        let mut b = Market::new(7, true);
        for _ in 0..1000 {
            a.step();
            b.step();
        }
        assert_eq!(a.usd_price("BTC"), b.usd_price("BTC"));
        let mut c = Market::new(8, true);
        for _ in 0..1000 {
            c.step();
        }
        assert_ne!(a.usd_price("BTC"), c.usd_price("BTC"));
        let t = a.tick(Venue::Binance, "BTC", "USDT", 5).unwrap();
        assert!(t.bid < t.ask);
        assert!(a.tick(Venue::Binance, "NOPE", "USDT", 5).is_none());
    }

    #[test]
    fn faults_shape_prices() {
        let mut m = Market::new(1, false);
        let calm: f64 = m
            .tick(Venue::Okx, "BTC", "USD", 0)
            .unwrap()
            .last
            .parse()
            .unwrap();
        m.set_fault(Venue::Okx, Some(Fault::FlashCrash { bps: 3_000 }), 0);
        let crashed: f64 = m
            .tick(Venue::Okx, "BTC", "USD", 0)
            .unwrap()
            .last
            .parse()
            .unwrap();
        assert!((crashed / calm - 0.7).abs() < 0.001, "{crashed} vs {calm}");
        m.set_fault(Venue::Okx, Some(Fault::Stale), 10);
        let t1 = m.tick(Venue::Okx, "BTC", "USD", 10).unwrap();
        let t2 = m.tick(Venue::Okx, "BTC", "USD", 99_999).unwrap();
        assert_eq!(t1, t2, "stale venues repeat themselves, timestamp included");
        assert_eq!(
            Scenario::from_name("chaos").map(|s| s.faults().len()),
            Some(7)
        );
    }
}
