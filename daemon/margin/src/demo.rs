//! A seeded, realistic book of demo accounts for the devnet, the dashboard,
//! replay and the benchmark: several feeds and markets (perpetuals, a
//! future, options on a vol surface and on a fixed vol), multi-asset
//! collateral, cross and isolated margin, and a share of accounts opened
//! close to their initial requirement so that a modest move liquidates some.
//!
//! The book is built by applying ordinary inputs to an engine; `inputs`
//! holds exactly the accepted ones, so storing them and replaying them
//! reproduces the book.

use crate::engine::Engine;
use crate::fixed::{MONEY_SCALE, PRICE_SCALE, QTY_SCALE, QUOTE_ASSET};
use crate::options::{OptionKind, PricingModel};
use crate::types::*;

/// What the demo book is built around.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DemoParams {
    /// Engine time of the seed inputs (ms). Option expiries are relative to it.
    pub start_ms: u64,
    /// Round number of the seed prices (the daemon's first real report must
    /// come after it).
    pub round: u64,
    /// Feed prices at `start_ms` (8 decimals), by feed id.
    pub prices: Vec<(String, i128)>,
    /// Share of accounts opened near their initial requirement (ppm).
    pub near_liquidation_ppm: u32,
    /// Share of accounts that also trade options (ppm).
    pub options_ppm: u32,
    /// Keep the accepted inputs in `DemoBook::inputs` (off for benchmarks).
    pub keep_inputs: bool,
}

impl Default for DemoParams {
    fn default() -> Self {
        Self {
            start_ms: 1_767_225_600_000, // 2026-01-01T00:00:00Z
            round: 0,
            prices: vec![
                ("BTC-USD".into(), 60_000 * PRICE_SCALE),
                ("ETH-USD".into(), 3_000 * PRICE_SCALE),
                ("SOL-USD".into(), 150 * PRICE_SCALE),
            ],
            near_liquidation_ppm: 80_000,
            options_ppm: 100_000,
            keep_inputs: true,
        }
    }
}

/// The built book.
#[derive(Clone, Debug)]
pub struct DemoBook {
    /// The engine holding the book.
    pub engine: Engine,
    /// The accepted inputs, in order: store these to replay the book.
    pub inputs: Vec<Input>,
    /// Inputs the engine refused while building (random sizes that did not
    /// fit the margin); not part of `inputs`.
    pub refused: u64,
}

/// SplitMix64: tiny, seeded, identical everywhere.
#[derive(Clone, Debug)]
pub struct SplitMix(u64);

impl SplitMix {
    /// A generator from a seed.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next_u64() % (hi - lo + 1)
    }

    /// Uniform in `0..len` (`len > 0`): an index into a slice.
    pub fn index(&mut self, len: usize) -> usize {
        // The remainder is below `len`, which is a usize: the conversion
        // back cannot fail.
        usize::try_from(self.range(0, len as u64 - 1)).unwrap_or(0)
    }

    /// True with probability `ppm / 1e6`.
    pub fn chance(&mut self, ppm: u32) -> bool {
        self.next_u64() % 1_000_000 < u64::from(ppm)
    }
}

const DAY_MS: u64 = 86_400_000;

fn feed_config(feed: &str, surface: Option<VolSurface>) -> FeedConfig {
    FeedConfig {
        feed: feed.into(),
        max_staleness_ms: 120_000,
        max_confidence_ppm: 20_000,
        max_jump_ppm: 150_000,
        average_window: 8,
        rate_ppm: 50_000,
        grid: ScenarioGrid::default(),
        vol_surface: surface,
        vol_scaling: None,
    }
}

fn perp(market: &str, feed: &str, initial_ppm: u32, maintenance_ppm: u32) -> MarketConfig {
    MarketConfig {
        market: market.into(),
        feed: feed.into(),
        kind: MarketKind::Perpetual,
        initial_ppm,
        maintenance_ppm,
        growth_ppm_per_million: 2_000,
        max_rate_ppm: 500_000,
        taker_fee_ppm: 500,
        liquidation_penalty_ppm: 10_000,
        liquidator_share_ppm: 500_000,
        concentration: None,
    }
}

/// The markets of the demo book (all configuration commands, in order).
pub fn demo_config(p: &DemoParams) -> Vec<Command> {
    let t0 = p.start_ms;
    let btc = p
        .prices
        .iter()
        .find(|(f, _)| f == "BTC-USD")
        .map_or(60_000 * PRICE_SCALE, |x| x.1);
    let eth = p
        .prices
        .iter()
        .find(|(f, _)| f == "ETH-USD")
        .map_or(3_000 * PRICE_SCALE, |x| x.1);
    let surface = VolSurface {
        slices: vec![
            VolSlice {
                expiry_ms: t0 + 7 * DAY_MS,
                points: vec![
                    VolPoint {
                        strike: btc * 8 / 10,
                        vol_ppm: 650_000,
                    },
                    VolPoint {
                        strike: btc,
                        vol_ppm: 550_000,
                    },
                    VolPoint {
                        strike: btc * 12 / 10,
                        vol_ppm: 600_000,
                    },
                ],
            },
            VolSlice {
                expiry_ms: t0 + 90 * DAY_MS,
                points: vec![
                    VolPoint {
                        strike: btc * 8 / 10,
                        vol_ppm: 600_000,
                    },
                    VolPoint {
                        strike: btc,
                        vol_ppm: 520_000,
                    },
                    VolPoint {
                        strike: btc * 12 / 10,
                        vol_ppm: 560_000,
                    },
                ],
            },
        ],
    };
    let mut v = vec![
        Command::ConfigureFeed(feed_config("BTC-USD", Some(surface))),
        Command::ConfigureFeed(feed_config("ETH-USD", None)),
        Command::ConfigureFeed(feed_config("SOL-USD", None)),
        Command::ConfigureAsset(AssetConfig {
            asset: "BTC".into(),
            feed: "BTC-USD".into(),
            haircut_ppm: 100_000,
        }),
        Command::ConfigureAsset(AssetConfig {
            asset: "ETH".into(),
            feed: "ETH-USD".into(),
            haircut_ppm: 150_000,
        }),
        Command::ConfigureMarket(perp("BTC-PERP", "BTC-USD", 50_000, 25_000)),
        Command::ConfigureMarket(perp("ETH-PERP", "ETH-USD", 50_000, 25_000)),
        Command::ConfigureMarket(perp("SOL-PERP", "SOL-USD", 100_000, 50_000)),
        Command::ConfigureMarket(MarketConfig {
            kind: MarketKind::Future {
                expiry_ms: t0 + 30 * DAY_MS,
            },
            ..perp("BTC-FUT-30D", "BTC-USD", 60_000, 30_000)
        }),
    ];
    for (name, kind, strike) in [
        ("BTC-30D-C-60", OptionKind::Call, btc),
        ("BTC-30D-P-60", OptionKind::Put, btc),
        ("BTC-30D-C-66", OptionKind::Call, btc * 11 / 10),
        ("BTC-30D-P-54", OptionKind::Put, btc * 9 / 10),
    ] {
        v.push(Command::ConfigureMarket(MarketConfig {
            kind: MarketKind::Option {
                kind,
                strike,
                expiry_ms: t0 + 30 * DAY_MS,
                model: PricingModel::Black76,
                vol: VolSource::Surface,
            },
            ..perp(name, "BTC-USD", 100_000, 50_000)
        }));
    }
    v.push(Command::ConfigureMarket(MarketConfig {
        kind: MarketKind::Option {
            kind: OptionKind::Call,
            strike: eth,
            expiry_ms: t0 + 14 * DAY_MS,
            model: PricingModel::BlackScholes { carry_yield_ppm: 0 },
            vol: VolSource::Fixed { vol_ppm: 700_000 },
        },
        ..perp("ETH-14D-C-ATM", "ETH-USD", 100_000, 50_000)
    }));
    v
}

/// A book of `n_accounts` demo accounts with the default parameters.
pub fn demo_book(seed: u64, n_accounts: usize) -> DemoBook {
    demo_book_with(seed, n_accounts, &DemoParams::default())
}

/// A book of `n_accounts` demo accounts (ids 1..=n) built from `seed`.
pub fn demo_book_with(seed: u64, n_accounts: usize, p: &DemoParams) -> DemoBook {
    let mut rng = SplitMix::new(seed);
    let mut engine = Engine::default();
    let mut inputs = Vec::new();
    let mut refused = 0u64;
    let t0 = p.start_ms;
    let keep = p.keep_inputs;
    let mut push =
        |engine: &mut Engine, input: Input, inputs: &mut Vec<Input>| match engine.apply(&input) {
            Ok(_) => {
                if keep {
                    inputs.push(input);
                }
                true
            }
            Err(_) => {
                refused += 1;
                false
            }
        };
    for c in demo_config(p) {
        push(
            &mut engine,
            Input::Command {
                at_ms: t0,
                command: c,
            },
            &mut inputs,
        );
    }
    let report = PriceReport {
        round: p.round,
        timestamp_ms: t0,
        prices: p
            .prices
            .iter()
            .map(|(f, px)| PriceInput {
                feed: f.clone(),
                price: *px,
                decimals: 8,
                confidence: (*px / 2_000).unsigned_abs(),
                ..PriceInput::default()
            })
            .collect(),
    };
    push(&mut engine, Input::Prices(report), &mut inputs);
    push(
        &mut engine,
        Input::Command {
            at_ms: t0,
            command: Command::FundInsurance {
                amount: 1_000_000 * MONEY_SCALE,
            },
        },
        &mut inputs,
    );
    let perps = ["BTC-PERP", "ETH-PERP", "SOL-PERP", "BTC-FUT-30D"];
    let options = [
        "BTC-30D-C-60",
        "BTC-30D-P-60",
        "BTC-30D-C-66",
        "BTC-30D-P-54",
        "ETH-14D-C-ATM",
    ];
    for i in 0..n_accounts {
        let account = i as u64 + 1;
        let at = |command| Input::Command { at_ms: t0, command };
        push(
            &mut engine,
            at(Command::CreateAccount {
                account,
                owner: None,
            }),
            &mut inputs,
        );
        let cash = rng.range(1_000, 100_000) as i128 * MONEY_SCALE;
        push(
            &mut engine,
            at(Command::Deposit {
                account,
                asset: QUOTE_ASSET.into(),
                amount: cash,
            }),
            &mut inputs,
        );
        if rng.chance(250_000) {
            let btc = rng.range(1, 50) as i128 * QTY_SCALE / 100;
            push(
                &mut engine,
                at(Command::Deposit {
                    account,
                    asset: "BTC".into(),
                    amount: btc,
                }),
                &mut inputs,
            );
        }
        let near = rng.chance(p.near_liquidation_ppm);
        let n_pos = 1 + rng.index(5);
        let holds_options = rng.chance(p.options_ppm);
        for k in 0..n_pos {
            let market = if holds_options && k > 0 {
                options[rng.index(5)]
            } else {
                perps[rng.index(4)]
            };
            let Some(mark) = engine
                .state()
                .markets
                .get(market)
                .and_then(|m| m.mark.as_ref())
                .map(|m| m.price)
            else {
                continue;
            };
            if mark <= 0 {
                continue;
            }
            // Leverage on this position's share of the cash: near-liquidation
            // accounts use up to ~19x (initial 5%), others 0.5x..5x.
            let share = cash / n_pos as i128;
            let lev_x10 = if near {
                rng.range(170, 195)
            } else {
                rng.range(5, 50)
            } as i128;
            let notional = share * lev_x10 / 10;
            let size = notional * (QTY_SCALE * PRICE_SCALE / MONEY_SCALE) / mark;
            if size <= 0 {
                continue;
            }
            let side = if rng.chance(500_000) {
                Side::Long
            } else {
                Side::Short
            };
            let margin = if !near && rng.chance(150_000) {
                MarginMode::Isolated {
                    collateral: share / 2,
                }
            } else {
                MarginMode::Cross
            };
            let cmd = Command::Open {
                account,
                market: market.into(),
                side,
                size,
                margin,
                price: None,
            };
            if !push(&mut engine, at(cmd), &mut inputs) && near {
                // Too much for the margin left: try half.
                let cmd = Command::Open {
                    account,
                    market: market.into(),
                    side,
                    size: size / 2,
                    margin: MarginMode::Cross,
                    price: None,
                };
                push(&mut engine, at(cmd), &mut inputs);
            }
        }
    }
    DemoBook {
        engine,
        inputs,
        refused,
    }
}
