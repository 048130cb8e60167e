//! The demo book a node seeds at its first verified signed report (devnet,
//! demos): `sibyl_margin::demo_book_with` opened at that report's prices,
//! then the perpetuals' and futures' requirements raised to their "current
//! tier", as an exchange's risk desk does when volatility rises.
//!
//! Why the second step: the engine opens a position only while equity stays
//! at or above the *initial* requirement, so a book opened at today's price
//! sits at least `initial - maintenance` away from liquidation (a 2.5 % move
//! for BTC at 5 % / 2.5 %), which the simulated exchange's walk takes many
//! minutes to cover. Raising maintenance to 98 % of the launch initial rate
//! (and initial to 120 %) leaves the high-leverage tail of the book between
//! 0.1 % and ~1 % of notional above maintenance and in margin call, so the
//! first minutes of price movement liquidate some of it. Every step is an
//! ordinary engine input stored by the margin service, so `sibyl replay`
//! reproduces the book and everything after it.

use sibyl_margin::fixed::rescale;
use sibyl_margin::{Command, DemoParams, Input, MarketKind, PriceReport, demo::demo_config};

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
    let book = sibyl_margin::demo_book_with(demo.seed, demo.accounts, &params);
    let mut inputs: Vec<Input> = book
        .inputs
        .into_iter()
        .map(|input| match input {
            // The real report, not the demo's copy of its prices.
            Input::Prices(_) => Input::Prices(first.clone()),
            other => other,
        })
        .collect();
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
        inputs.push(Input::Command {
            at_ms: first.timestamp_ms,
            command: Command::ConfigureMarket(m),
        });
    }
    inputs
}
