//! The demo book a node seeds at its first verified signed report (devnet,
//! demos), in three steps, every one an ordinary engine input that the
//! margin service stores, so `sibyl replay` reproduces the book and all
//! that follows:
//!
//! 1. `sibyl_margin::demo_book_with` opened at that report's prices (the
//!    report itself is the book's price input): perpetuals, a future and
//!    options, cross and isolated, multi-asset collateral;
//! 2. one account in ten is a trader at the largest size the engine accepts
//!    (97-100 % of maximum leverage) in a perpetual;
//! 3. the perpetuals' and the future's requirements are raised to their
//!    "current tier" (initial ×1.2, maintenance to 98 % of the launch initial
//!    rate), as an exchange's risk desk does when volatility rises.
//!
//! Why: the engine opens a position only while equity stays at or above the
//! *initial* requirement, so a book opened at today's price sits at least
//! `initial - maintenance` from liquidation (a 2.5 % move for BTC at 5 % /
//! 2.5 %), which the simulated exchange's walk (~0.2 % a minute) takes long
//! to cover. After step 3 the max-leverage traders are ~0.1-0.25 % of
//! notional above maintenance and in margin call, so the first minute or two
//! of price movement liquidates some of them; the rest of the book is spread
//! further out.

use sibyl_margin::demo::{SplitMix, demo_config};
use sibyl_margin::fixed::{MONEY_SCALE, QUOTE_ASSET, VALUE_DIVISOR, rescale};
use sibyl_margin::{Command, DemoParams, Engine, Input, MarginMode, MarketKind, PriceReport, Side};

/// Feeds the demo book trades.
pub const DEMO_FEEDS: [&str; 3] = ["BTC-USD", "ETH-USD", "SOL-USD"];

/// How many demo accounts to seed, and from which seed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DemoSeed {
    /// Accounts (ids 1..=accounts).
    pub accounts: usize,
    /// Seed of the book's random choices.
    pub seed: u64,
}

/// Whether the demo book can be seeded at `report`: one of the demo feeds
/// it carries has an ok leaf with no unconfirmed jump. A member's first
/// report is often degraded everywhere (a few venues have answered yet),
/// and the engine refuses new risk on a guarded feed, so a book seeded
/// there would open no positions. Every member decides from the same
/// signed leaves.
pub fn ready(report: &PriceReport) -> bool {
    report
        .prices
        .iter()
        .filter(|p| DEMO_FEEDS.contains(&p.feed.as_str()))
        .any(|p| {
            p.status == sibyl_margin::status::OK
                && p.flags & sibyl_margin::status::UNCONFIRMED_JUMP == 0
        })
}

/// The inputs that seed the demo book, given the first verified report (as
/// the engine's price input). The report itself is one of them, in the
/// place where the demo book applies its opening prices.
pub fn demo_inputs(demo: DemoSeed, first: &PriceReport) -> Vec<Input> {
    let prices: Vec<(String, i128)> = first
        .prices
        .iter()
        .filter(|p| DEMO_FEEDS.contains(&p.feed.as_str()))
        .filter_map(|p| Some((p.feed.clone(), rescale(p.price, p.decimals).ok()?)))
        .filter(|(_, px)| *px > 0)
        .collect();
    let params = DemoParams {
        start_ms: first.timestamp_ms,
        round: first.round,
        prices,
        // A fifth of the book at high leverage, a sixth trading options.
        near_liquidation_ppm: 200_000,
        options_ppm: 160_000,
        keep_inputs: true,
    };
    // One account in ten (at least 3) is a max-leverage trader added below.
    let edge = if demo.accounts >= 10 {
        (demo.accounts / 10).max(3)
    } else {
        0
    };
    let book = sibyl_margin::demo_book_with(demo.seed, demo.accounts - edge, &params);
    let mut inputs: Vec<Input> = book
        .inputs
        .into_iter()
        .map(|input| match input {
            // The real report, not the demo's copy of its prices.
            Input::Prices(_) => Input::Prices(first.clone()),
            other => other,
        })
        .collect();
    let at = |command| Input::Command {
        at_ms: first.timestamp_ms,
        command,
    };
    // A scratch engine keeps only what the engine accepts (an open on a
    // feed whose leaf is not ok is refused as new risk) and finds the
    // largest size each edge account may open.
    let mut scratch = Engine::default();
    inputs.retain(|i| scratch.apply(i).is_ok());
    let mut rng = SplitMix::new(demo.seed ^ 0x5eed_ed9e);
    let markets = ["BTC-PERP", "ETH-PERP", "SOL-PERP"];
    for j in 0..edge {
        let account = (demo.accounts - edge + j + 1) as u64;
        let cash = rng.range(2_000, 20_000) as i128 * MONEY_SCALE;
        let market = markets[j % markets.len()];
        let side = if j % 2 == 0 { Side::Long } else { Side::Short };
        let setup = [
            at(Command::CreateAccount {
                account,
                owner: None,
            }),
            at(Command::Deposit {
                account,
                asset: QUOTE_ASSET.into(),
                amount: cash,
            }),
        ];
        if setup.iter().any(|i| scratch.apply(i).is_err()) {
            continue;
        }
        inputs.extend(setup);
        let Some((mark, initial_ppm)) = scratch
            .state()
            .markets
            .get(market)
            .and_then(|m| Some((m.mark.as_ref()?.price, m.config.initial_ppm)))
        else {
            continue;
        };
        // Start at full leverage on the base rate and back off 0.5 % at a
        // time until the engine accepts; then use 97-100 % of that.
        let max_notional = cash * 1_000_000 / i128::from(initial_ppm.max(1));
        let mut size = max_notional * VALUE_DIVISOR / mark.max(1);
        let use_ppm = i128::from(rng.range(970_000, 1_000_000) as u32);
        for _ in 0..200 {
            let open = at(Command::Open {
                account,
                market: market.into(),
                side,
                size: size * use_ppm / 1_000_000,
                margin: MarginMode::Cross,
                price: None,
            });
            if scratch.apply(&open).is_ok() {
                inputs.push(open);
                break;
            }
            size = size * 995 / 1_000;
        }
    }
    for command in demo_config(&params) {
        let Command::ConfigureMarket(mut m) = command else {
            continue;
        };
        if !matches!(m.kind, MarketKind::Perpetual | MarketKind::Future { .. }) {
            continue;
        }
        let launch_initial = m.initial_ppm;
        m.initial_ppm = (launch_initial.saturating_mul(6) / 5).min(m.max_rate_ppm);
        m.maintenance_ppm = (launch_initial.saturating_mul(49) / 50).min(m.initial_ppm);
        inputs.push(at(Command::ConfigureMarket(m)));
    }
    inputs
}

#[cfg(test)]
mod tests {
    use super::*;
    use sibyl_margin::{Engine, Event, PriceInput};

    const PX: i128 = 100_000_000;

    fn report(round: u64, ts: u64, move_ppm: i128) -> PriceReport {
        PriceReport {
            round,
            timestamp_ms: ts,
            prices: [("BTC-USD", 60_000), ("ETH-USD", 3_000), ("SOL-USD", 150)]
                .iter()
                .map(|(f, p)| PriceInput {
                    feed: (*f).into(),
                    price: p * PX + p * PX * move_ppm / 1_000_000,
                    decimals: 8,
                    confidence: 1_000,
                    ..PriceInput::default()
                })
                .collect(),
        }
    }

    fn liquidations(events: &[sibyl_margin::EventRecord]) -> usize {
        events
            .iter()
            .filter(|e| matches!(e.event, Event::Liquidated { .. }))
            .count()
    }

    /// The seeded book has nothing to liquidate at its own prices, a tail in
    /// margin call, and a small move (the simulated exchange's walk covers
    /// 0.3 % in a minute or two) liquidates part of that tail, either way.
    #[test]
    fn seeded_book_is_near_but_not_past_liquidation() {
        let t0 = 1_767_225_600_000;
        let first = report(5, t0, 0);
        let inputs = demo_inputs(
            DemoSeed {
                accounts: 300,
                seed: 7,
            },
            &first,
        );
        assert!(inputs.contains(&Input::Prices(first.clone())));
        let mut engine = Engine::default();
        let mut seed_events = Vec::new();
        for i in &inputs {
            seed_events.extend(engine.apply(i).expect("every seed input is accepted"));
        }
        assert_eq!(engine.state().accounts.len(), 300);
        assert_eq!(liquidations(&seed_events), 0);
        let calls = seed_events
            .iter()
            .filter(|e| matches!(e.event, Event::MarginCall { .. }))
            .count();
        assert!(calls >= 10, "margin calls after tightening: {calls}");
        for move_ppm in [-3_000, 3_000] {
            let mut e = engine.clone();
            let ev = e
                .apply(&Input::Prices(report(6, t0 + 30_000, move_ppm)))
                .expect("prices");
            assert!(
                liquidations(&ev) >= 1,
                "a {move_ppm} ppm move liquidates some of the book"
            );
        }
    }

    /// A degraded demo feed keeps the book from opening on it (the engine
    /// refuses new risk there) but not from seeding; a report with every
    /// demo feed degraded does not seed at all.
    #[test]
    fn a_degraded_feed_is_left_out_of_the_book_and_all_degraded_waits() {
        let t0 = 1_767_225_600_000;
        let mut first = report(5, t0, 0);
        for p in &mut first.prices {
            if p.feed == "SOL-USD" {
                p.status = sibyl_margin::status::DEGRADED;
            }
        }
        assert!(ready(&first));
        let inputs = demo_inputs(
            DemoSeed {
                accounts: 300,
                seed: 7,
            },
            &first,
        );
        let mut engine = Engine::default();
        for i in &inputs {
            engine.apply(i).expect("every seed input is accepted");
        }
        let positions: Vec<&str> = engine
            .state()
            .accounts
            .values()
            .flat_map(|a| a.positions.keys().map(String::as_str))
            .collect();
        assert!(positions.iter().any(|m| m.starts_with("BTC")));
        assert!(
            !positions.iter().any(|m| m.starts_with("SOL")),
            "{positions:?}"
        );
        for p in &mut first.prices {
            p.status = sibyl_margin::status::DEGRADED;
        }
        assert!(!ready(&first));
    }
}
