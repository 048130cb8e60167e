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
    /// The venue's price is `times` the market's (a unit or decimals
    /// mistake: the 1000x sKRW quote of 2019).
    Scaled { times: u32 },
    /// The venue's price moves by `bps` (signed) for `ms` after the fault
    /// starts, then returns: a wick on one venue's book.
    Wick { bps: i32, ms: u64 },
    /// A thin venue pumped: its price up by `bps` and its 24 h volume a
    /// thousandth of its usual.
    Pump { bps: u32 },
    /// The market closed: no book (bid and ask `0`), the last trade and
    /// its timestamp frozen at the close; the WebSocket sends no ticks. The
    /// status endpoint says closed.
    Closed,
    /// Trading halted: as `Closed`, and the status endpoint says halted.
    Halted,
}

impl Fault {
    /// What the venue's status endpoint says under this fault.
    pub fn market_state(self) -> crate::venue::MarketState {
        match self {
            Fault::Closed => crate::venue::MarketState::Closed,
            Fault::Halted => crate::venue::MarketState::Halted,
            _ => crate::venue::MarketState::Open,
        }
    }
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
    /// Gate.io quotes 1000x the market.
    ThousandX,
    /// Coinbase wicks 30 % up for 5 s, then comes back.
    Wick,
    /// MEXC, made thin (a thousandth of its volume), pumped 90 bps: inside
    /// the outlier band, so only the weights keep it from moving the price.
    ThinPump,
    /// Every venue but Kraken and Bitstamp is down: two venues left, fewer
    /// than a feed's usual minimum of three.
    Dropout,
    /// USDT trades at 0.95 USD.
    Depeg,
    /// The market closes on every venue (empty book, frozen last trade).
    MarketClosed,
    /// Trading halts on every venue (empty book, frozen last trade).
    Halted,
}

impl Scenario {
    pub const ALL: [Scenario; 16] = [
        Scenario::Calm,
        Scenario::FlashCrash,
        Scenario::Outage,
        Scenario::Slow,
        Scenario::Stale,
        Scenario::Garbage,
        Scenario::RateLimited,
        Scenario::Drift,
        Scenario::Chaos,
        Scenario::ThousandX,
        Scenario::Wick,
        Scenario::ThinPump,
        Scenario::Dropout,
        Scenario::Depeg,
        Scenario::MarketClosed,
        Scenario::Halted,
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
            Scenario::ThousandX => "thousand-x",
            Scenario::Wick => "wick",
            Scenario::ThinPump => "thin-pump",
            Scenario::Dropout => "dropout",
            Scenario::Depeg => "depeg",
            Scenario::MarketClosed => "market-closed",
            Scenario::Halted => "halted",
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
            Scenario::ThousandX => one(Venue::Gateio, Fault::Scaled { times: 1_000 }),
            Scenario::Wick => one(
                Venue::Coinbase,
                Fault::Wick {
                    bps: 3_000,
                    ms: 5_000,
                },
            ),
            Scenario::ThinPump => one(Venue::Mexc, Fault::Pump { bps: 90 }),
            Scenario::Dropout => Venue::ALL
                .into_iter()
                .filter(|v| !matches!(v, Venue::Kraken | Venue::Bitstamp))
                .map(|v| (v, Fault::Outage))
                .collect(),
            Scenario::Depeg => BTreeMap::new(),
            Scenario::MarketClosed => Venue::ALL.into_iter().map(|v| (v, Fault::Closed)).collect(),
            Scenario::Halted => Venue::ALL.into_iter().map(|v| (v, Fault::Halted)).collect(),
        }
    }

    /// Stablecoins this scenario moves off their peg: (asset, USD price).
    pub fn depegs(self) -> BTreeMap<&'static str, f64> {
        match self {
            Scenario::Depeg => BTreeMap::from([("USDT", 0.95)]),
            _ => BTreeMap::new(),
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
    /// Where each stablecoin mean-reverts to (1.0 unless depegged).
    pegs: BTreeMap<&'static str, f64>,
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
            pegs: STABLES.into_iter().map(|s| (s, 1.0)).collect(),
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
            if let Some(peg) = self.pegs.get(asset) {
                // Mean-revert to the peg with a 0.5 bp wiggle.
                let noise: f64 = self.rng.gen_range(-0.5e-4..0.5e-4);
                *price += (peg - *price) * 0.05 + noise;
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

    /// Move stablecoin `asset` to `usd` (and keep it there: its peg becomes
    /// `usd`); `None` restores its peg of 1.0 and its starting price.
    pub(crate) fn set_depeg(&mut self, asset: &str, usd: Option<f64>) -> Result<(), String> {
        let Some((name, start)) = ASSETS.into_iter().find(|(a, _)| *a == asset) else {
            return Err(format!("unknown asset {asset:?}"));
        };
        if !STABLES.contains(&name) || name == "USD" {
            return Err(format!(
                "{asset} is not a stablecoin here; one of USDT, USDC"
            ));
        }
        self.pegs.insert(name, usd.unwrap_or(1.0));
        self.usd.insert(name, usd.unwrap_or(start));
        Ok(())
    }

    /// Every stablecoin's current peg target that is not 1.0.
    pub(crate) fn depegs(&self) -> BTreeMap<String, f64> {
        self.pegs
            .iter()
            .filter(|(_, p)| **p != 1.0)
            .map(|(a, p)| (a.to_string(), *p))
            .collect()
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
        let frozen = matches!(
            active,
            Some(ActiveFault {
                fault: Fault::Stale | Fault::Closed | Fault::Halted,
                ..
            })
        );
        if frozen && let Some(t) = self.frozen.get(&key) {
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
            Some(ActiveFault {
                fault: Fault::Wick { bps: wick, ms },
                since_ms,
            }) if now_ms.saturating_sub(since_ms) < ms => bps += f64::from(wick),
            Some(ActiveFault {
                fault: Fault::Pump { bps: up },
                ..
            }) => bps += f64::from(up),
            _ => {}
        }
        let times = match active {
            Some(ActiveFault {
                fault: Fault::Scaled { times },
                ..
            }) => f64::from(times),
            _ => 1.0,
        };
        let thin = match active {
            Some(ActiveFault {
                fault: Fault::Pump { .. },
                ..
            }) => 0.001,
            _ => 1.0,
        };
        let mid = b / q * (1.0 + bps / 10_000.0) * times;
        let dp = decimals_for(mid);
        let half_bid_ask = (mid * 0.5e-4).max(10f64.powi(-(dp as i32)));
        // Volume differs per venue so volume weighting has something to weigh.
        let volume = thin * 1_000.0 * (1.0 + venue as u8 as f64) * 67_000.0 / b.max(1e-9);
        let mut tick = Tick {
            bid: format!("{:.*}", dp, mid - half_bid_ask),
            ask: format!("{:.*}", dp, mid + half_bid_ask),
            last: format!("{:.*}", dp, mid),
            volume: format!("{volume:.4}"),
            time_ms: now_ms,
        };
        if let Some(ActiveFault {
            fault: Fault::Closed | Fault::Halted,
            ..
        }) = active
        {
            // A closed or halted market has no book; its last trade stays.
            tick.bid = "0".into();
            tick.ask = "0".into();
        }
        if frozen {
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

    fn last(m: &mut Market, v: Venue, now: u64) -> f64 {
        m.tick(v, "BTC", "USD", now).unwrap().last.parse().unwrap()
    }

    #[test]
    fn the_issue_18_faults_shape_prices() {
        let mut m = Market::new(1, false);
        let calm = last(&mut m, Venue::Okx, 0);
        m.set_fault(Venue::Okx, Some(Fault::Scaled { times: 1_000 }), 0);
        assert!((last(&mut m, Venue::Okx, 0) / calm - 1_000.0).abs() < 0.01);

        m.set_fault(
            Venue::Okx,
            Some(Fault::Wick {
                bps: 3_000,
                ms: 5_000,
            }),
            1_000,
        );
        assert!((last(&mut m, Venue::Okx, 5_999) / calm - 1.3).abs() < 0.001);
        assert!(
            (last(&mut m, Venue::Okx, 6_000) / calm - 1.0).abs() < 1e-9,
            "the wick is over"
        );

        let volume = |m: &mut Market| -> f64 {
            m.tick(Venue::Okx, "BTC", "USD", 0)
                .unwrap()
                .volume
                .parse()
                .unwrap()
        };
        m.set_fault(Venue::Okx, None, 0);
        let usual = volume(&mut m);
        m.set_fault(Venue::Okx, Some(Fault::Pump { bps: 90 }), 0);
        assert!((volume(&mut m) / usual - 0.001).abs() < 1e-6);
        assert!((last(&mut m, Venue::Okx, 0) / calm - 1.009).abs() < 1e-4);

        m.set_fault(Venue::Okx, Some(Fault::Closed), 10);
        let t1 = m.tick(Venue::Okx, "BTC", "USD", 10).unwrap();
        let t2 = m.tick(Venue::Okx, "BTC", "USD", 60_000).unwrap();
        assert_eq!((t1.bid.as_str(), t1.ask.as_str()), ("0", "0"));
        assert_eq!(t1, t2, "a closed market's last trade and time stay");

        assert_eq!(Scenario::Dropout.faults().len(), Venue::ALL.len() - 2);
        assert_eq!(Scenario::MarketClosed.faults().len(), Venue::ALL.len());
        for s in Scenario::ALL {
            assert_eq!(Scenario::from_name(s.name()), Some(s));
        }
    }

    #[test]
    fn a_depeg_moves_the_stablecoin_and_its_markets() {
        let mut m = Market::new(1, false);
        let usdt: f64 = m
            .tick(Venue::Binance, "BTC", "USDT", 0)
            .unwrap()
            .last
            .parse()
            .unwrap();
        m.set_depeg("USDT", Some(0.95)).unwrap();
        assert_eq!(m.usd_price("USDT"), Some(0.95));
        let depegged: f64 = m
            .tick(Venue::Binance, "BTC", "USDT", 0)
            .unwrap()
            .last
            .parse()
            .unwrap();
        assert!(
            (depegged / usdt - 1.0002 / 0.95).abs() < 1e-4,
            "{depegged} vs {usdt}"
        );
        assert_eq!(m.depegs().get("USDT"), Some(&0.95));
        m.set_depeg("USDT", None).unwrap();
        assert_eq!(m.usd_price("USDT"), Some(1.0002));
        assert!(m.depegs().is_empty());
        assert!(m.set_depeg("BTC", Some(1.0)).is_err());
        assert!(m.set_depeg("NOPE", Some(1.0)).is_err());
    }
}
