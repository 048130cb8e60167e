//! Property tests: random books under random price paths.
//!
//! - no liquidation while equity is at or above maintenance, and no unit is
//!   left below maintenance unless a guard deferred it (the trigger index
//!   misses nobody);
//! - a liquidation never leaves an account worse off than before it (margin
//!   excess does not fall; equity falls by at most the penalty);
//! - conservation of money and collateral across liquidations, bad debt,
//!   deleveraging and settlement;
//! - same inputs give the same event bytes, also after a snapshot restore;
//! - the trigger index is exact: an engine that re-examines every unit on
//!   every report (`set_exhaustive_checks`) emits the same liquidations,
//!   deferrals, bad debt, deleveraging and settlements, event by event, and
//!   ends in the same state.

use proptest::prelude::*;
use sibyl_margin::engine::IndexedUnit;
use sibyl_margin::fixed::{MONEY_SCALE as M, PRICE_SCALE as P, QTY_SCALE as Q};
use sibyl_margin::options::{OptionKind, PricingModel};
use sibyl_margin::*;
use std::collections::BTreeMap;

const T0: u64 = 1_700_000_000_000;
const FEEDS: [&str; 2] = ["BTC-USD", "ETH-USD"];
const MARKETS: [&str; 5] = ["BTC-PERP", "ETH-PERP", "BTC-FUT", "BTC-C", "ETH-P"];

fn config(jump_ppm: u32, expiry_days: u64) -> Vec<Command> {
    let feed = |f: &str| FeedConfig {
        feed: f.into(),
        max_staleness_ms: 3_600_000,
        max_confidence_ppm: 20_000,
        max_jump_ppm: jump_ppm,
        average_window: 4,
        rate_ppm: 30_000,
        grid: ScenarioGrid::default(),
        vol_surface: None,
        vol_scaling: Some(VolScaling {
            reference_volatility: 500_000_000,
            max_multiplier_ppm: 3_000_000,
            step_ppm: 250_000,
        }),
    };
    let m = |name: &str, f: &str, kind: MarketKind| MarketConfig {
        market: name.into(),
        feed: f.into(),
        kind,
        initial_ppm: 100_000,
        maintenance_ppm: 50_000,
        growth_ppm_per_million: 10_000_000,
        max_rate_ppm: 400_000,
        taker_fee_ppm: 700,
        liquidation_penalty_ppm: 15_000,
        liquidator_share_ppm: 400_000,
        // Positions beyond 1,000 USD of notional pay a concentration add-on.
        concentration: (name != "ETH-PERP").then_some(Concentration {
            liquidity_notional: 1_000 * M,
            add_on_ppm: 50_000,
        }),
    };
    let opt = |kind, strike, model| MarketKind::Option {
        kind,
        strike,
        expiry_ms: T0 + expiry_days * 86_400_000,
        model,
        vol: VolSource::Fixed { vol_ppm: 600_000 },
    };
    vec![
        Command::ConfigureRisk(RiskParams::default()),
        Command::ConfigureFeed(feed("BTC-USD")),
        Command::ConfigureFeed(feed("ETH-USD")),
        Command::ConfigureAsset(AssetConfig {
            asset: "ETH".into(),
            feed: "ETH-USD".into(),
            haircut_ppm: 200_000,
        }),
        Command::ConfigureMarket(m("BTC-PERP", "BTC-USD", MarketKind::Perpetual)),
        Command::ConfigureMarket(m("ETH-PERP", "ETH-USD", MarketKind::Perpetual)),
        Command::ConfigureMarket(m(
            "BTC-FUT",
            "BTC-USD",
            MarketKind::Future {
                expiry_ms: T0 + 10 * 86_400_000,
            },
        )),
        Command::ConfigureMarket(m(
            "BTC-C",
            "BTC-USD",
            opt(OptionKind::Call, 100 * P, PricingModel::Black76),
        )),
        Command::ConfigureMarket(m(
            "ETH-P",
            "ETH-USD",
            opt(
                OptionKind::Put,
                10 * P,
                PricingModel::BlackScholes {
                    carry_yield_ppm: 10_000,
                },
            ),
        )),
    ]
}

#[derive(Clone, Debug)]
struct Trade {
    account: u64,
    market: usize,
    long: bool,
    size_milli: i128,
    isolated: bool,
    /// Fill price offset from the mark (ppm), for the delta-one markets;
    /// beyond the band the open is refused.
    fill_ppm: i64,
}

#[derive(Clone, Debug)]
struct Step {
    dt_ms: u64,
    moves_ppm: [i64; 2],
    wide: bool,
    /// Per feed: the leaf's (status, flags).
    leaf: [(u8, u16); 2],
    /// Per feed: the leaf's realized volatility (1e9 = 100 % a year).
    vols: [u64; 2],
    /// Per feed: how far the leaf's EMA follows the price this step (ppm
    /// of the gap) and a jolt (ppm of the price) added after, or `None` for
    /// a leaf without an EMA.
    emas: [Option<(i64, i64)>; 2],
}

/// An EMA step: mostly a slow follower, sometimes a jump to the price or
/// past it, sometimes absent.
fn ema() -> impl Strategy<Value = Option<(i64, i64)>> {
    prop_oneof![
        1 => Just(None),
        4 => (0i64..=200_000).prop_map(|w| Some((w, 0))),
        1 => (0i64..=1_500_000).prop_map(|w| Some((w, 0))),
    ]
}

fn vol() -> impl Strategy<Value = u64> {
    prop_oneof![
        4 => Just(0u64),
        1 => 0u64..3_000_000_000,
    ]
}

/// A leaf's status: mostly ok, sometimes each of the others, sometimes an
/// unconfirmed jump.
fn leaf() -> impl Strategy<Value = (u8, u16)> {
    prop_oneof![
        12 => Just((status::OK, 0u16)),
        1 => Just((status::DEGRADED, 0)),
        1 => Just((status::OK, status::UNCONFIRMED_JUMP)),
        1 => Just((status::STALE, 0)),
        1 => Just((status::HALTED, 0)),
        1 => Just((status::MARKET_CLOSED, 0)),
    ]
}

fn trade() -> impl Strategy<Value = Trade> {
    (
        1u64..=8,
        0usize..5,
        any::<bool>(),
        1i128..=40_000,
        prop::bool::weighted(0.2),
        prop_oneof![2 => Just(0i64), 1 => -60_000i64..=60_000],
    )
        .prop_map(
            |(account, market, long, size_milli, isolated, fill_ppm)| Trade {
                account,
                market,
                long,
                size_milli,
                isolated,
                fill_ppm,
            },
        )
}

fn step() -> impl Strategy<Value = Step> {
    (
        prop_oneof![0u64..120_000, 0u64..7_200_000, 0u64..2 * 86_400_000],
        [-90_000i64..=90_000, -90_000i64..=90_000],
        prop::bool::weighted(0.1),
        [leaf(), leaf()],
        [vol(), vol()],
        [ema(), ema()],
    )
        .prop_map(|(dt_ms, moves_ppm, wide, leaf, vols, emas)| Step {
            dt_ms,
            moves_ppm,
            wide,
            leaf,
            vols,
            emas,
        })
}

/// Quiet markets: small moves, time passing (options decay between reports).
fn calm_step() -> impl Strategy<Value = Step> {
    (
        prop_oneof![0u64..600_000, 0u64..14_400_000],
        [-3_000i64..=3_000, -3_000i64..=3_000],
        [ema(), ema()],
    )
        .prop_map(|(dt_ms, moves_ppm, emas)| Step {
            dt_ms,
            moves_ppm,
            wide: false,
            leaf: [(status::OK, 0); 2],
            vols: [0; 2],
            emas,
        })
}

/// An EMA that follows the price by some part of the gap, then jolts: far
/// (beyond any band) or by a little (inside or at the edge of one, where a
/// band that forgot the EMA's share of the margin would let a unit slip).
fn ema_jolt() -> impl Strategy<Value = Option<(i64, i64)>> {
    (
        0i64..=1_000_000,
        prop_oneof![
            1 => -300_000i64..=300_000,
            2 => -30_000i64..=30_000,
            2 => -3_000i64..=3_000,
        ],
    )
        .prop_map(Some)
}

/// Prices that barely move while the EMAs swing around them: what moves a
/// unit is its collateral valued at the lower of price and EMA.
fn ema_step() -> impl Strategy<Value = Step> {
    (
        0u64..60_000,
        [-2_000i64..=2_000, -2_000i64..=2_000],
        [ema_jolt(), ema_jolt()],
    )
        .prop_map(|(dt_ms, moves_ppm, emas)| Step {
            dt_ms,
            moves_ppm,
            wide: false,
            leaf: [(status::OK, 0); 2],
            vols: [0; 2],
            emas,
        })
}

/// The inputs of one case: configuration, book, then the price path.
fn inputs(
    jump_ppm: u32,
    expiry_days: u64,
    cash: &[i128],
    eth_collateral: &[i128],
    trades: &[Trade],
    steps: &[Step],
) -> Vec<Input> {
    let mut v = Vec::new();
    let cmd = |c| Input::Command {
        at_ms: T0,
        command: c,
    };
    for c in config(jump_ppm, expiry_days) {
        v.push(cmd(c));
    }
    let mut prices = [100 * P, 10 * P];
    let report = |round,
                  t,
                  prices: &[i128; 2],
                  wide: bool,
                  leaf: [(u8, u16); 2],
                  vols: [u64; 2],
                  emas: [i128; 2]| {
        Input::Prices(PriceReport {
            round,
            timestamp_ms: t,
            prices: FEEDS
                .iter()
                .zip(prices)
                .zip(leaf)
                .zip(vols)
                .zip(emas)
                .map(
                    |((((f, p), (status, flags)), volatility), ema)| PriceInput {
                        feed: f.to_string(),
                        price: *p,
                        decimals: 8,
                        confidence: if wide {
                            (*p / 10) as u128
                        } else {
                            (*p / 1_000) as u128
                        },
                        status,
                        flags,
                        volatility,
                        ema,
                        ..PriceInput::default()
                    },
                )
                .collect(),
        })
    };
    v.push(report(
        1,
        T0,
        &prices,
        false,
        [(status::OK, 0); 2],
        [0; 2],
        [0; 2],
    ));
    v.push(cmd(Command::FundInsurance { amount: 50 * M }));
    for (i, c) in cash.iter().enumerate() {
        let account = i as u64 + 1;
        v.push(cmd(Command::CreateAccount {
            account,
            owner: None,
        }));
        v.push(cmd(Command::Deposit {
            account,
            asset: "USD".into(),
            amount: *c,
        }));
        if let Some(e) = eth_collateral.get(i).filter(|e| **e > 0) {
            v.push(cmd(Command::Deposit {
                account,
                asset: "ETH".into(),
                amount: *e,
            }));
        }
    }
    for t in trades {
        let margin = if t.isolated {
            MarginMode::Isolated {
                collateral: t.size_milli * M / 200,
            }
        } else {
            MarginMode::Cross
        };
        v.push(cmd(Command::Open {
            account: t.account,
            market: MARKETS[t.market].into(),
            side: if t.long { Side::Long } else { Side::Short },
            size: t.size_milli * Q / 1_000,
            margin,
            // The book trades at the first report's prices.
            price: (t.fill_ppm != 0 && t.market < 3).then(|| {
                let mark = if t.market == 1 { prices[1] } else { prices[0] };
                mark * (1_000_000 + i128::from(t.fill_ppm)) / 1_000_000
            }),
        }));
    }
    let mut t = T0;
    let mut emas = prices;
    for (i, s) in steps.iter().enumerate() {
        t += 1_000 + s.dt_ms;
        for (p, m) in prices.iter_mut().zip(s.moves_ppm) {
            *p = (*p * (1_000_000 + i128::from(m)) / 1_000_000).max(P / 100);
        }
        let mut leaf_emas = [0i128; 2];
        for ((e, out), (p, w)) in emas
            .iter_mut()
            .zip(&mut leaf_emas)
            .zip(prices.iter().zip(s.emas))
        {
            if let Some((w, jolt)) = w {
                *e = (*e + (p - *e) * i128::from(w) / 1_000_000 + p * i128::from(jolt) / 1_000_000)
                    .max(P / 100);
                *out = *e;
            }
        }
        v.push(report(
            i as u64 + 2,
            t,
            &prices,
            s.wide,
            s.leaf,
            s.vols,
            leaf_emas,
        ));
    }
    v
}

fn units(e: &Engine) -> Vec<(u64, Unit, Health, bool)> {
    let mut v = Vec::new();
    for (id, a) in &e.state().accounts {
        for view in e.account_view(*id).unwrap() {
            let has = match &view.unit {
                Unit::Cross => a.positions.values().any(|p| p.isolated.is_none()),
                Unit::Isolated { .. } => true,
            };
            v.push((*id, view.unit, view.health, has));
        }
    }
    v
}

fn collateral(e: &Engine) -> BTreeMap<String, i128> {
    let mut m = BTreeMap::new();
    let s = e.state();
    for c in s
        .accounts
        .values()
        .map(|a| &a.collateral)
        .chain(std::iter::once(&s.venue.collateral))
    {
        for (k, q) in c {
            *m.entry(k.clone()).or_insert(0) += q;
        }
    }
    m
}

fn before_money(s: &Snapshot) -> i128 {
    Engine::from_snapshot(s.clone())
        .unwrap()
        .total_money()
        .unwrap()
}

fn before_collateral(s: &Snapshot) -> BTreeMap<String, i128> {
    collateral(&Engine::from_snapshot(s.clone()).unwrap())
}

/// Runs the inputs, checking the invariants after every price report.
fn run_checked(inputs: &[Input]) -> Result<Vec<u8>, TestCaseError> {
    let mut e = Engine::default();
    let mut bytes = Vec::new();
    let mut money: Option<i128> = None;
    let mut coll: Option<BTreeMap<String, i128>> = None;
    for input in inputs {
        let before = e.snapshot();
        let root_before = e.state_root();
        let r = e.apply(input);
        let Ok(events) = r else {
            // Refused: nothing changed.
            prop_assert_eq!(&e.snapshot(), &before);
            prop_assert_eq!(e.state_root(), root_before);
            continue;
        };
        // The incrementally maintained root is the root of the state.
        prop_assert_eq!(
            e.state_root(),
            e.state_root_from_scratch(),
            "incremental root drifted"
        );
        for ev in &events {
            bytes.extend(serde_json::to_vec(ev).unwrap());
        }
        if !matches!(input, Input::Prices(_)) {
            // Deposits and funding bring money in: compare from the next report.
            money = None;
            coll = None;
            continue;
        }
        // Conservation across everything prices trigger.
        let m = e.total_money().unwrap();
        let c = collateral(&e);
        if money.is_none() {
            money = Some(before_money(&before));
            coll = Some(before_collateral(&before));
        }
        if let Some(m0) = money {
            prop_assert_eq!(m, m0, "money not conserved");
        }
        if let Some(c0) = &coll {
            prop_assert_eq!(&c, c0, "collateral not conserved");
        }
        money = Some(m);
        coll = Some(c);
        for ev in &events {
            if let Event::Liquidated {
                before,
                after,
                penalty,
                kind,
                closed,
                ..
            } = &ev.event
            {
                prop_assert!(
                    before.equity < before.maintenance || before.equity < 0,
                    "liquidated a healthy unit: {:?}",
                    before
                );
                // Never on a leaf that is not ok or whose jump is unconfirmed.
                for slice in closed {
                    let feed = &e.state().markets[&slice.market].config.feed;
                    let last = e.state().feeds[feed].last.as_ref().unwrap();
                    prop_assert!(
                        last.status == status::OK && last.flags & status::UNCONFIRMED_JUMP == 0,
                        "liquidated {} on a leaf with status {} flags {}",
                        slice.market,
                        last.status,
                        last.flags
                    );
                }
                let slack = 4 * (closed.len() as i128 + 1);
                let excess_before = before.equity - before.maintenance;
                let excess_after = after.equity - after.maintenance;
                prop_assert!(
                    excess_after + slack >= excess_before,
                    "liquidation made it worse: {:?} -> {:?}",
                    before,
                    after
                );
                prop_assert!(
                    before.equity - after.equity <= penalty + slack,
                    "lost more than the penalty"
                );
                if matches!(kind, LiquidationKind::Partial { .. }) {
                    prop_assert!(after.equity >= after.maintenance);
                }
            }
        }
        // The at-risk ranking holds every unit with positions; the whole
        // ranking equals a full scan, and every unit below maintenance or
        // in margin call that the scan puts in the first n is returned.
        let all = units(&e);
        let with_positions = all.iter().filter(|u| u.3).count();
        prop_assert_eq!(e.ranked_units(), with_positions, "ranking size");
        prop_assert_eq!(
            e.closest_to_liquidation(with_positions + 1),
            e.closest_to_liquidation_scan(with_positions + 1)
        );
        for n in [1usize, 3, 8] {
            let got = e.closest_to_liquidation(n);
            prop_assert!(got.len() == n.min(with_positions));
            prop_assert!(
                got.windows(2)
                    .all(|w| w[0].margin_ratio_ppm <= w[1].margin_ratio_ppm)
            );
            for r in e.closest_to_liquidation_scan(n) {
                if r.health.equity < r.health.initial {
                    prop_assert!(
                        got.iter()
                            .any(|g| g.account == r.account && g.unit == r.unit),
                        "unit {} {} at risk ({:?}) ranked in the first {} by a scan but not returned",
                        r.account,
                        r.unit,
                        r.health,
                        n
                    );
                }
            }
        }
        // The index missed nobody: every unit below maintenance is deferred
        // by a guard, and every unit with positions between maintenance and
        // initial is in margin call (and none above initial), after every
        // report, whichever price moved it.
        index_missed_nobody(&e)?;
    }
    Ok(bytes)
}

/// Every unit below maintenance is deferred by a guard; every unit with
/// positions below initial is in margin call, and none in margin call is
/// at or above its clearing level.
fn index_missed_nobody(e: &Engine) -> Result<(), TestCaseError> {
    let st = e.state();
    for (id, unit, h, has) in units(e) {
        let key = (id, unit.clone());
        if h.equity < h.maintenance || h.equity < 0 {
            prop_assert!(
                st.deferred.contains(&key),
                "unit {:?} below maintenance and not deferred: {:?}",
                key,
                h
            );
        } else {
            // Called below initial, cleared at initial plus the buffer
            // (between the two either is right, by history).
            let buffer = st.risk.margin_call_clear_buffer_ppm as i128;
            let clear_at =
                h.initial + ((h.initial - h.maintenance).max(0) * buffer + 999_999) / 1_000_000;
            let called = st.margin_calls.contains(&key);
            prop_assert!(
                !(has && h.equity < h.initial) || called,
                "unit {:?} below initial and not in margin call: {:?}",
                key,
                h
            );
            prop_assert!(
                !called || (has && h.equity < clear_at),
                "unit {:?} in margin call at or above the clearing level {}: {:?}",
                key,
                clear_at,
                h
            );
        }
    }
    Ok(())
}

/// The engine after one more report that moves only `feed`, to `price`, at
/// the same time (no decay) with the feed's other leaf fields unchanged.
fn moved(e: &Engine, feed: &str, price: i128) -> Option<Engine> {
    let last = e.state().feeds.get(feed)?.last.clone()?;
    let mut next = e.clone();
    next.apply_report(&PriceReport {
        round: last.round + 1,
        timestamp_ms: e.now_ms(),
        prices: vec![PriceInput {
            feed: feed.to_string(),
            price,
            decimals: 8,
            confidence: u128::try_from(last.confidence).ok()?,
            status: last.status,
            flags: last.flags,
            ema: last.ema,
            volatility: last.volatility,
            ..PriceInput::default()
        }],
    })
    .ok()?;
    Some(next)
}

/// Each price band edge the index holds, moved to from inside: the unit
/// stays unexamined there, so its recorded class must still be right (a
/// band one step too wide shows up as a unit below maintenance or initial
/// that nobody examined). The exhaustive-reference tests only catch a band
/// that is too wide where a random price path happens to land.
fn band_edges_hold(e: &Engine) -> Result<usize, TestCaseError> {
    bands_hold_at(e, 4)
}

/// [`band_edges_hold`] at the inner edges and `parts - 1` evenly spaced
/// prices between them (a band proven in steps must hold between the
/// steps too).
fn bands_hold_at(e: &Engine, parts: i128) -> Result<usize, TestCaseError> {
    let mut checked = 0;
    for entry in e.index_entries() {
        for (feed, lo, hi) in &entry.bands {
            if !e.state().feeds.contains_key(feed) || hi - lo <= 2 {
                continue;
            }
            let (lo, hi) = (*lo, *hi);
            let inner = (1..parts).map(|i| lo + (hi - lo) * i / parts);
            for price in std::iter::once(lo + 1).chain(inner).chain([hi - 1]) {
                if price <= 0 {
                    continue;
                }
                let Some(next) = moved(e, feed, price) else {
                    continue;
                };
                index_missed_nobody(&next).map_err(|err| {
                    TestCaseError::fail(format!(
                        "{feed} moved to {price} inside the band [{lo}, {hi}] of account {} {:?}: {err}",
                        entry.account, entry.unit
                    ))
                })?;
                checked += 1;
            }
        }
    }
    Ok(checked)
}

/// Every event, margin calls included (the bands keep units on one side of
/// initial margin too, so a margin call comes the report that crosses it).
fn decisive(events: &[EventRecord]) -> Vec<(u64, u64, String)> {
    events
        .iter()
        .map(|r| (r.seq, r.at_ms, serde_json::to_string(&r.event).unwrap()))
        .collect()
}

/// Runs `inputs` through an indexed engine and an exhaustive one and
/// compares them after every input.
fn compare_with_exhaustive(inputs: &[Input]) -> Result<(u64, u64, usize), TestCaseError> {
    let mut fast = Engine::default();
    let mut slow = Engine::default();
    slow.set_exhaustive_checks(true);
    let mut decisions = 0usize;
    for (i, input) in inputs.iter().enumerate() {
        let a = fast.apply(input);
        let b = slow.apply(input);
        prop_assert_eq!(
            a.is_ok(),
            b.is_ok(),
            "input {} accepted by one engine only",
            i
        );
        let (Ok(a), Ok(b)) = (a, b) else { continue };
        let (da, db) = (decisive(&a), decisive(&b));
        decisions += da.len();
        prop_assert_eq!(da, db, "input {}: events differ", i);
        prop_assert_eq!(
            fast.snapshot(),
            slow.snapshot(),
            "input {}: states differ",
            i
        );
    }
    Ok((fast.examined_units(), slow.examined_units(), decisions))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn index_matches_exhaustive_reference(
        jump in prop::sample::select(vec![150_000u32, 10_000_000]),
        expiry_days in 1u64..=20,
        cash in prop::collection::vec(50i128 * M..=2_000 * M, 8),
        eth in prop::collection::vec(0i128..=50 * Q, 8),
        trades in prop::collection::vec(trade(), 4..40),
        steps in prop::collection::vec(step(), 1..24),
    ) {
        let inputs = inputs(jump, expiry_days, &cash, &eth, &trades, &steps);
        let (fast, slow, _) = compare_with_exhaustive(&inputs)?;
        prop_assert!(fast <= slow, "index examined more ({fast}) than exhaustive ({slow})");
    }

    #[test]
    fn index_matches_exhaustive_reference_as_the_ema_moves(
        cash in prop::collection::vec(5i128 * M..=300 * M, 8),
        eth in prop::collection::vec(10 * Q..=200 * Q, 8),
        trades in prop::collection::vec(trade(), 4..40),
        steps in prop::collection::vec(ema_step(), 1..40),
    ) {
        let inputs = inputs(10_000_000, 20, &cash, &eth, &trades, &steps);
        compare_with_exhaustive(&inputs)?;
    }

    #[test]
    fn index_matches_exhaustive_reference_as_options_decay(
        expiry_days in 1u64..=4,
        cash in prop::collection::vec(50i128 * M..=2_000 * M, 8),
        trades in prop::collection::vec(trade(), 4..40),
        steps in prop::collection::vec(calm_step(), 1..60),
    ) {
        let inputs = inputs(10_000_000, expiry_days, &cash, &[], &trades, &steps);
        compare_with_exhaustive(&inputs)?;
    }

    #[test]
    fn invariants_hold_on_random_books(
        jump in prop::sample::select(vec![150_000u32, 10_000_000]),
        cash in prop::collection::vec(50i128 * M..=2_000 * M, 8),
        eth in prop::collection::vec(0i128..=50 * Q, 8),
        trades in prop::collection::vec(trade(), 4..30),
        steps in prop::collection::vec(step(), 1..16),
    ) {
        let inputs = inputs(jump, 20, &cash, &eth, &trades, &steps);
        let a = run_checked(&inputs)?;
        // Determinism: a second run gives the same bytes.
        let b = run_checked(&inputs)?;
        prop_assert_eq!(a, b);
    }

    #[test]
    fn every_band_edge_holds_from_inside(
        jump in prop::sample::select(vec![150_000u32, 10_000_000]),
        expiry_days in 1u64..=20,
        cash in prop::collection::vec(50i128 * M..=2_000 * M, 8),
        eth in prop::collection::vec(0i128..=50 * Q, 8),
        trades in prop::collection::vec(trade(), 4..30),
        steps in prop::collection::vec(step(), 1..8),
    ) {
        let inputs = inputs(jump, expiry_days, &cash, &eth, &trades, &steps);
        let mut e = Engine::default();
        for input in &inputs {
            if e.apply(input).is_ok() && matches!(input, Input::Prices(_)) {
                band_edges_hold(&e)?;
            }
        }
    }

    /// Option books hedged with perpetuals (long or short gamma, over- or
    /// under-hedged), so the health curve bends inside bands: every band
    /// holds at 64 points across it. Bands far wider than the slope bound
    /// allows come from the curvature bound (`option_curvature`), which
    /// this checks; the random books above rarely bend enough to tell.
    #[test]
    fn option_hedges_hold_their_bands_throughout(
        expiry_days in 3u64..=20,
        option_long in any::<bool>(),
        option_milli in 1_000i128..=20_000,
        hedge_long in any::<bool>(),
        hedge_ppm in 0i128..=1_500_000,
        // Where the withdrawal leaves equity: this much of the way from
        // maintenance to initial (ppm; above 1e6 is above initial).
        left_ppm in 0i128..=1_200_000,
        steps in prop::collection::vec(step(), 1..5),
    ) {
        let trades = [
            Trade {
                account: 1,
                market: 3,
                long: option_long,
                size_milli: option_milli,
                isolated: false,
                fill_ppm: 0,
            },
            Trade {
                account: 1,
                market: 0,
                long: hedge_long,
                size_milli: (option_milli * hedge_ppm / 1_000_000).max(1),
                isolated: false,
                fill_ppm: 0,
            },
        ];
        let setup = inputs(150_000, expiry_days, &[5_000 * M], &[], &trades, &[]);
        let mut all = inputs(150_000, expiry_days, &[5_000 * M], &[], &trades, &steps);
        let mut e = Engine::default();
        for input in &setup {
            let _ = e.apply(input);
        }
        // Near the margin-call and liquidation levels, where bands are
        // narrow and their edges matter.
        let h = e.account_view(1).unwrap()[0].health;
        let keep = h.maintenance + (h.initial - h.maintenance) * left_ppm / 1_000_000;
        let amount = (h.equity - keep).min(h.equity - h.initial).max(0);
        all.insert(
            setup.len(),
            Input::Command {
                at_ms: T0,
                command: Command::Withdraw {
                    account: 1,
                    asset: "USD".into(),
                    amount,
                },
            },
        );
        let mut e = Engine::default();
        for input in &all {
            if e.apply(input).is_ok() && matches!(input, Input::Prices(_)) {
                bands_hold_at(&e, 64)?;
            }
        }
    }

    #[test]
    fn restore_mid_stream_reproduces_the_events(
        cash in prop::collection::vec(50i128 * M..=2_000 * M, 8),
        trades in prop::collection::vec(trade(), 4..30),
        steps in prop::collection::vec(step(), 2..12),
        cut in 0.0f64..1.0,
    ) {
        let inputs = inputs(150_000, 20, &cash, &[], &trades, &steps);
        let cut = ((inputs.len() as f64) * cut) as usize;
        let mut live = Engine::default();
        let mut tail_live = Vec::new();
        let mut restored: Option<Engine> = None;
        let mut tail_restored = Vec::new();
        for (i, input) in inputs.iter().enumerate() {
            if i == cut {
                let (s, idx) = live.snapshot_with_index();
                // Through JSON, as the daemon would store it.
                let s: Snapshot = serde_json::from_slice(&serde_json::to_vec(&s).unwrap()).unwrap();
                let idx: Vec<IndexedUnit> = serde_json::from_slice(&serde_json::to_vec(&idx).unwrap()).unwrap();
                restored = Some(Engine::restore(s, &idx).unwrap());
            }
            let ev = live.apply(input).unwrap_or_default();
            if let Some(r) = restored.as_mut() {
                tail_live.extend(serde_json::to_vec(&ev).unwrap());
                tail_restored.extend(serde_json::to_vec(&r.apply(input).unwrap_or_default()).unwrap());
            }
        }
        prop_assert_eq!(tail_live, tail_restored);
        if let Some(mut r) = restored {
            prop_assert_eq!(r.state_root(), live.state_root());
        }
    }

    /// Restart = the latest stored snapshot plus the inputs after it: the
    /// same events, the same state, the same root and the same snapshot
    /// bytes as replaying every input from the start.
    #[test]
    fn restart_from_stored_snapshot_matches_full_replay(
        cash in prop::collection::vec(50i128 * M..=2_000 * M, 8),
        eth in prop::collection::vec(0i128..=50 * Q, 8),
        trades in prop::collection::vec(trade(), 4..30),
        steps in prop::collection::vec(step(), 2..12),
        cut in 0.0f64..1.0,
    ) {
        let inputs = inputs(150_000, 20, &cash, &eth, &trades, &steps);
        let cut = ((inputs.len() as f64) * cut) as usize;
        let mut full = Engine::default();
        let mut tail_full = Vec::new();
        let mut bytes = Vec::new();
        for (i, input) in inputs.iter().enumerate() {
            if i == cut {
                bytes = full.encode_snapshot().unwrap();
            }
            let ev = full.apply(input).unwrap_or_default();
            if i >= cut {
                tail_full.extend(serde_json::to_vec(&ev).unwrap());
            }
        }
        if cut == inputs.len() {
            bytes = full.encode_snapshot().unwrap();
        }
        let mut restarted = Engine::decode_snapshot(&bytes).unwrap();
        // Decoding and encoding again gives the same bytes.
        prop_assert_eq!(&restarted.encode_snapshot().unwrap(), &bytes);
        let mut tail = Vec::new();
        for input in &inputs[cut..] {
            tail.extend(serde_json::to_vec(&restarted.apply(input).unwrap_or_default()).unwrap());
        }
        prop_assert_eq!(tail, tail_full);
        prop_assert_eq!(restarted.snapshot(), full.snapshot());
        prop_assert_eq!(restarted.state_root(), full.state_root());
        prop_assert_eq!(restarted.encode_snapshot().unwrap(), full.encode_snapshot().unwrap());
        // A damaged snapshot is refused, not half-loaded.
        if bytes.len() > 20 {
            prop_assert!(Engine::decode_snapshot(&bytes[..bytes.len() - 1]).is_err());
        }
    }

    /// Any change to one account changes the root, and an account's proof
    /// verifies against its own root only.
    #[test]
    fn root_commits_to_every_account_and_proofs_verify_only_against_their_root(
        cash in prop::collection::vec(50i128 * M..=2_000 * M, 8),
        trades in prop::collection::vec(trade(), 4..20),
        steps in prop::collection::vec(step(), 1..6),
        pick in 0usize..8,
        change in 0u8..5,
    ) {
        use sibyl_margin::state_root::{verify_account_proof, AccountProof};
        let inputs = inputs(150_000, 20, &cash, &[], &trades, &steps);
        let mut e = Engine::default();
        for input in &inputs {
            let _ = e.apply(input);
        }
        let root = e.state_root();
        let ids: Vec<u64> = e.state().accounts.keys().copied().collect();
        let id = ids[pick % ids.len()];
        let other = ids[(pick + 1) % ids.len()];
        let (state, proof, proved_root) = e.account_proof(id).unwrap();
        prop_assert_eq!(proved_root, root);
        prop_assert!(verify_account_proof(&root, &state, &proof).is_ok());
        // The leaf preimage decodes to the state, and nothing else does.
        let bytes = state.encode();
        prop_assert_eq!(&sibyl_margin::state_root::AccountState::decode(&bytes).unwrap(), &state);
        for cut in [0, 1, bytes.len() / 2, bytes.len() - 1] {
            prop_assert!(sibyl_margin::state_root::AccountState::decode(&bytes[..cut]).is_err());
        }
        let mut long = bytes.clone();
        long.push(0);
        prop_assert!(sibyl_margin::state_root::AccountState::decode(&long).is_err());
        // The proof of another account does not prove this state.
        let (_, other_proof, _) = e.account_proof(other).unwrap();
        if other != id {
            prop_assert!(verify_account_proof(&root, &state, &other_proof).is_err());
        }
        // One change to one account, made in the state itself.
        let mut s = e.snapshot();
        let a = std::sync::Arc::make_mut(s.accounts.get_mut(&id).unwrap());
        match change {
            0 => a.cash += 1,
            1 => { a.collateral.insert("ETH".into(), 1); }
            2 => match a.positions.values_mut().next() {
                Some(p) => p.size += 1,
                None => a.cash -= 1,
            },
            3 => match a.positions.values_mut().next() {
                Some(p) => p.isolated = Some(p.isolated.unwrap_or(0) + 1),
                None => { a.collateral.insert("BTC".into(), 7); }
            },
            _ => { s.margin_calls.insert((id, Unit::Isolated { market: "X".into() })); }
        }
        let mut changed = Engine::from_snapshot(s).unwrap();
        let new_root = changed.state_root();
        prop_assert_ne!(new_root, root, "a change to account {} kept the root", id);
        prop_assert_eq!(new_root, changed.state_root_from_scratch());
        // The old proof verifies only against the old root, the new state's
        // proof only against the new one.
        prop_assert!(verify_account_proof(&new_root, &state, &proof).is_err());
        let (new_state, new_proof, _) = changed.account_proof(id).unwrap();
        prop_assert!(verify_account_proof(&new_root, &new_state, &new_proof).is_ok());
        prop_assert!(verify_account_proof(&root, &new_state, &new_proof).is_err());
        let _: &AccountProof = &new_proof;
    }
}

/// Time alone can liquidate: a delta-hedged long call (long call, short
/// perpetual) with just its initial margin loses as the call decays. For
/// many price levels (so that units sit at various distances from
/// maintenance), time passes at a constant price; the indexed engine must
/// liquidate at exactly the report the exhaustive one does.
#[test]
fn index_matches_exhaustive_reference_under_pure_time_decay() {
    let mut time_liquidations = 0;
    for level in 0..24i128 {
        let mut fast = Engine::default();
        let mut slow = Engine::default();
        slow.set_exhaustive_checks(true);
        let mut apply = |input: Input, check_round: Option<u64>| -> bool {
            let a = fast.apply(&input).map(|e| decisive(&e));
            let b = slow.apply(&input).map(|e| decisive(&e));
            assert_eq!(a, b, "level {level}: {input:?}");
            if let (Ok(a), Some(r)) = (&a, check_round)
                && r > 2
                && a.iter().any(|(_, _, e)| e.contains("\"liquidated\""))
            {
                time_liquidations += 1;
            }
            a.is_ok()
        };
        let cmd = |c| Input::Command {
            at_ms: T0,
            command: c,
        };
        let report = |round: u64, t: u64, btc: i128| {
            Input::Prices(PriceReport {
                round,
                timestamp_ms: t,
                prices: vec![
                    PriceInput {
                        feed: "BTC-USD".into(),
                        price: btc,
                        decimals: 8,
                        confidence: (btc / 1_000) as u128,
                        ..PriceInput::default()
                    },
                    PriceInput {
                        feed: "ETH-USD".into(),
                        price: 10 * P,
                        decimals: 8,
                        confidence: (P / 100) as u128,
                        ..PriceInput::default()
                    },
                ],
            })
        };
        for c in config(10_000_000, 3) {
            apply(cmd(c), None);
        }
        apply(report(1, T0, 100 * P), None);
        apply(cmd(Command::FundInsurance { amount: 1_000 * M }), None);
        apply(
            cmd(Command::CreateAccount {
                account: 1,
                owner: None,
            }),
            None,
        );
        apply(
            cmd(Command::Deposit {
                account: 1,
                asset: "USD".into(),
                amount: 1_000 * M,
            }),
            None,
        );
        let contracts = (1..=40i128)
            .rev()
            .map(|c| c * 10)
            .find(|c| {
                apply(
                    cmd(Command::Open {
                        account: 1,
                        market: "BTC-C".into(),
                        side: Side::Long,
                        size: c * Q,
                        margin: MarginMode::Cross,
                        price: None,
                    }),
                    None,
                )
            })
            .expect("some calls fit");
        apply(
            cmd(Command::Open {
                account: 1,
                market: "BTC-PERP".into(),
                side: Side::Short,
                size: contracts * Q / 2,
                margin: MarginMode::Cross,
                price: None,
            }),
            None,
        );
        // Withdraw down to the initial requirement.
        for step in [100 * M, 10 * M, M, M / 10, M / 100] {
            while apply(
                cmd(Command::Withdraw {
                    account: 1,
                    asset: "USD".into(),
                    amount: step,
                }),
                None,
            ) {}
        }
        let btc = 100 * P - 12 * P / 4 + level * P / 4;
        let mut t = T0 + 60_000;
        apply(report(2, t, btc), Some(2));
        for round in 3..150u64 {
            t += 15 * 60_000;
            apply(report(round, t, btc), Some(round));
        }
    }
    assert!(
        time_liquidations > 0,
        "no level liquidated through time decay alone: the test lost its point"
    );
    eprintln!("{time_liquidations} liquidations by time decay");
}
