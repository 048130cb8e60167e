//! Engine behaviour: commands, liquidation, guard rails, bad debt, settlement,
//! determinism. Amounts: money 6 decimals, prices and sizes 8 decimals.

use sibyl_margin::fixed::{MONEY_SCALE as M, PRICE_SCALE as P, QTY_SCALE as Q};
use sibyl_margin::options::{OptionKind, PricingModel};
use sibyl_margin::*;

const T0: u64 = 1_700_000_000_000;

fn feed(name: &str) -> FeedConfig {
    FeedConfig {
        feed: name.into(),
        max_staleness_ms: 60_000,
        max_confidence_ppm: 20_000,
        max_jump_ppm: 200_000,
        average_window: 4,
        rate_ppm: 0,
        grid: ScenarioGrid::default(),
        vol_surface: None,
        vol_scaling: None,
    }
}

fn perp(name: &str, feed: &str) -> MarketConfig {
    MarketConfig {
        market: name.into(),
        feed: feed.into(),
        kind: MarketKind::Perpetual,
        initial_ppm: 100_000,
        maintenance_ppm: 50_000,
        growth_ppm_per_million: 0,
        max_rate_ppm: 500_000,
        taker_fee_ppm: 0,
        liquidation_penalty_ppm: 10_000,
        liquidator_share_ppm: 500_000,
        concentration: None,
    }
}

struct World {
    e: Engine,
    round: u64,
    t: u64,
    events: Vec<EventRecord>,
}

impl World {
    fn new(f: FeedConfig, m: MarketConfig, price: i128) -> Self {
        let mut w = World {
            e: Engine::default(),
            round: 0,
            t: T0,
            events: Vec::new(),
        };
        let feed = f.feed.clone();
        w.cmd(Command::ConfigureFeed(f)).unwrap();
        w.cmd(Command::ConfigureMarket(m)).unwrap();
        w.price(&feed, price).unwrap();
        w
    }

    fn cmd(&mut self, c: Command) -> Result<Vec<EventRecord>, EngineError> {
        let r = self.e.apply_command(self.t, &c)?;
        self.events.extend(r.clone());
        Ok(r)
    }

    fn price_conf(
        &mut self,
        feed: &str,
        price: i128,
        conf: u128,
    ) -> Result<Vec<EventRecord>, EngineError> {
        self.round += 1;
        self.t += 1_000;
        let r = self
            .e
            .apply_prices(self.round, self.t, &[(feed, price, 8u8, conf)])?;
        self.events.extend(r.clone());
        Ok(r)
    }

    fn price(&mut self, feed: &str, price: i128) -> Result<Vec<EventRecord>, EngineError> {
        self.price_conf(feed, price, 0)
    }

    /// A report whose leaf carries `status`, `flags`, an EMA and a volatility.
    fn leaf(&mut self, input: PriceInput) -> Result<Vec<EventRecord>, EngineError> {
        self.round += 1;
        self.t += 1_000;
        let r = self.e.apply_report(&PriceReport {
            round: self.round,
            timestamp_ms: self.t,
            prices: vec![input],
        })?;
        self.events.extend(r.clone());
        Ok(r)
    }

    fn account(&mut self, id: u64, cash: i128) {
        self.cmd(Command::CreateAccount {
            account: id,
            owner: None,
        })
        .unwrap();
        self.cmd(Command::Deposit {
            account: id,
            asset: "USD".into(),
            amount: cash,
        })
        .unwrap();
    }

    fn open(
        &mut self,
        id: u64,
        market: &str,
        side: Side,
        size: i128,
    ) -> Result<Vec<EventRecord>, EngineError> {
        self.cmd(Command::Open {
            account: id,
            market: market.into(),
            side,
            size,
            margin: MarginMode::Cross,
            price: None,
        })
    }

    fn health(&self, id: u64) -> Health {
        self.e.account_view(id).unwrap()[0].health
    }
}

fn liquidations(ev: &[EventRecord]) -> Vec<&Event> {
    ev.iter()
        .map(|r| &r.event)
        .filter(|e| matches!(e, Event::Liquidated { .. }))
        .collect()
}

#[test]
fn open_then_move_liquidates_partially_or_fully() {
    let mut w = World::new(feed("BTC-USD"), perp("BTC-PERP", "BTC-USD"), 100 * P);
    w.account(1, 1_000 * M);
    // 1 BTC... 90 units at 100 = 9000 notional, 9x leverage; initial 10% = 900.
    w.open(1, "BTC-PERP", Side::Long, 90 * Q).unwrap();
    let h = w.health(1);
    assert_eq!(h.equity, 1_000 * M);
    assert_eq!(h.initial, 900 * M);
    assert_eq!(h.maintenance, 450 * M);
    // Down 5%: equity 550 > maintenance 427.5: below initial, no liquidation.
    let ev = w.price("BTC-USD", 95 * P).unwrap();
    assert!(liquidations(&ev).is_empty());
    let h = w.health(1);
    assert!(h.equity < h.initial && h.equity >= h.maintenance, "{h:?}");
    // Down to 93.5: equity 415 < maintenance 420.75: liquidated.
    let ev = w.price("BTC-USD", 935 * P / 10).unwrap();
    let l = liquidations(&ev);
    assert_eq!(l.len(), 1, "{ev:?}");
    let Event::Liquidated {
        before,
        after,
        penalty,
        to_liquidator,
        to_insurance,
        kind,
        ..
    } = l[0]
    else {
        unreachable!()
    };
    assert!(before.equity < before.maintenance);
    assert!(after.equity >= after.maintenance, "{after:?}");
    assert!(matches!(kind, LiquidationKind::Partial { .. }), "{kind:?}");
    assert_eq!(*to_liquidator + *to_insurance, *penalty);
    assert_eq!(w.e.insurance_fund(), *to_insurance);
}

fn btc(price: i128, status: u8, flags: u16) -> PriceInput {
    PriceInput {
        feed: "BTC-USD".into(),
        price,
        decimals: 8,
        status,
        flags,
        ..PriceInput::default()
    }
}

/// The signed leaf's status gates the engine: no liquidation on a degraded
/// or unconfirmed price (deferred, then done on the next ok leaf); while
/// stale, halted or closed the market is reduce-only.
#[test]
fn leaf_status_defers_liquidation_and_makes_markets_reduce_only() {
    let mut w = World::new(feed("BTC-USD"), perp("BTC-PERP", "BTC-USD"), 100 * P);
    w.account(1, 1_000 * M);
    w.account(2, 10_000 * M);
    w.open(1, "BTC-PERP", Side::Long, 90 * Q).unwrap();
    w.open(2, "BTC-PERP", Side::Long, 10 * Q).unwrap();
    // Below maintenance on a degraded leaf, and on an ok leaf whose jump is
    // unconfirmed: deferred, not liquidated.
    for (status, flags) in [
        (status::DEGRADED, 0),
        (status::OK, status::UNCONFIRMED_JUMP),
        (status::DEGRADED, status::UNCONFIRMED_JUMP),
    ] {
        let ev = w.leaf(btc(93 * P, status, flags)).unwrap();
        assert!(liquidations(&ev).is_empty(), "{status}/{flags}: {ev:?}");
        assert!(
            w.e.state().deferred.contains(&(1, Unit::Cross)),
            "{status}/{flags}"
        );
        let guard = w.e.state().feeds["BTC-USD"].guard.clone();
        assert_eq!(guard, Some(GuardReason::Status { status, flags }));
    }
    // Reduce-only: more risk is refused, reducing is allowed.
    for status in [status::STALE, status::HALTED, status::MARKET_CLOSED] {
        w.leaf(btc(100 * P, status, 0)).unwrap();
        let more = w.open(2, "BTC-PERP", Side::Long, Q);
        assert!(
            matches!(more, Err(EngineError::GuardUp { .. })),
            "{status}: {more:?}"
        );
        w.cmd(Command::Close {
            account: 2,
            market: "BTC-PERP".into(),
            size: Some(Q),
            price: None,
        })
        .unwrap();
    }
    // The next ok leaf below maintenance liquidates.
    let ev = w.leaf(btc(93 * P, status::OK, 0)).unwrap();
    assert_eq!(liquidations(&ev).len(), 1, "{ev:?}");
    assert!(w.e.state().deferred.is_empty());
}

/// A market's penalty above the engine's cap is charged at most at the cap.
#[test]
fn liquidation_penalty_is_capped() {
    let run = |cap: u32| -> (i128, i128) {
        let mut m = perp("BTC-PERP", "BTC-USD");
        m.liquidation_penalty_ppm = 200_000;
        let mut w = World::new(feed("BTC-USD"), m, 100 * P);
        let r = RiskParams {
            max_liquidation_penalty_ppm: cap,
            ..RiskParams::default()
        };
        w.cmd(Command::ConfigureRisk(r)).unwrap();
        w.account(1, 1_000 * M);
        w.open(1, "BTC-PERP", Side::Long, 90 * Q).unwrap();
        let ev = w.price("BTC-USD", 935 * P / 10).unwrap();
        let l = liquidations(&ev);
        assert_eq!(l.len(), 1, "{ev:?}");
        let Event::Liquidated {
            closed, penalty, ..
        } = l[0]
        else {
            unreachable!()
        };
        let notional: i128 = closed
            .iter()
            .map(|c| (c.size * c.price / (Q * P / M)).abs())
            .sum();
        (*penalty, notional)
    };
    assert_eq!(RiskParams::default().max_liquidation_penalty_ppm, 50_000);
    let (capped, notional) = run(10_000);
    assert!(notional > 0 && capped > 0);
    assert!(
        capped <= notional / 100 + 1,
        "penalty {capped} above 1 % of {notional}"
    );
    let (uncapped, _) = run(1_000_000);
    assert!(uncapped > capped, "{uncapped} vs {capped}");
    let mut w = World::new(feed("BTC-USD"), perp("BTC-PERP", "BTC-USD"), 100 * P);
    let r = RiskParams {
        max_liquidation_penalty_ppm: 1_000_001,
        ..RiskParams::default()
    };
    assert!(matches!(
        w.cmd(Command::ConfigureRisk(r)),
        Err(EngineError::InvalidConfig { .. })
    ));
}

/// Requirements follow the signed volatility in whole steps, bounded, with
/// half a step of hysteresis on the way down; a step that takes a unit
/// below maintenance liquidates it in that report, with no price move.
#[test]
fn requirements_scale_with_the_signed_volatility() {
    let mut f = feed("BTC-USD");
    f.vol_scaling = Some(VolScaling {
        reference_volatility: 500_000_000,
        max_multiplier_ppm: 2_000_000,
        step_ppm: 250_000,
    });
    let mut w = World::new(f, perp("BTC-PERP", "BTC-USD"), 100 * P);
    w.account(1, 1_000 * M);
    w.open(1, "BTC-PERP", Side::Long, 90 * Q).unwrap();
    let at = |w: &mut World, vol: u64| {
        let mut leaf = btc(100 * P, status::OK, 0);
        leaf.volatility = vol;
        let ev = w.leaf(leaf).unwrap();
        (w.e.state().feeds["BTC-USD"].vol_multiplier_ppm, ev)
    };
    // At the reference: as configured (maintenance 5 % of 9,000 = 450).
    let (m, _) = at(&mut w, 500_000_000);
    assert_eq!(m, 1_000_000);
    assert_eq!(w.health(1).maintenance, 450 * M);
    // 1.1x the reference: one step up, rounded up (x1.25): 562.5.
    let (m, ev) = at(&mut w, 550_000_000);
    assert_eq!(m, 1_250_000);
    assert!(ev.iter().any(|r| matches!(
        r.event,
        Event::VolatilityScaled {
            to_ppm: 1_250_000,
            ..
        }
    )));
    assert_eq!(w.health(1).maintenance, 5625 * M / 10);
    // Down only half a step below the step: 1.05x and 0.9x stay, 0.85x
    // goes back to 1.
    assert_eq!(at(&mut w, 525_000_000).0, 1_250_000);
    assert_eq!(at(&mut w, 450_000_000).0, 1_250_000);
    assert_eq!(at(&mut w, 425_000_000).0, 1_000_000);
    // Bounded at 2x however high; maintenance 900 > equity 1,000? No:
    // 900 < 1,000, so a margin call but no liquidation yet.
    let (m, ev) = at(&mut w, 50_000_000_000);
    assert_eq!(m, 2_000_000);
    assert!(liquidations(&ev).is_empty());
    assert_eq!(w.health(1).maintenance, 900 * M);
    // A small loss now liquidates at 2x what it would not at 1x.
    let ev = w.price("BTC-USD", 98 * P).unwrap();
    assert!(
        liquidations(&ev).is_empty(),
        "volatility 0 in this leaf: back to 1x"
    );
    let mut leaf = btc(98 * P, status::OK, 0);
    leaf.volatility = 50_000_000_000;
    let ev = w.leaf(leaf).unwrap();
    assert_eq!(liquidations(&ev).len(), 1, "{ev:?}");
}

/// The default portfolio-margin grid is at least as wide as Deribit's.
#[test]
fn default_grid_is_at_least_as_wide_as_deribits() {
    let g = ScenarioGrid::default();
    assert!(g.price_moves_ppm.len() >= 9);
    assert_eq!(g.price_moves_ppm.iter().min(), Some(&-160_000));
    assert_eq!(g.price_moves_ppm.iter().max(), Some(&160_000));
    assert!(g.price_moves_ppm.contains(&0));
    assert!(g.vol_shocks_ppm.iter().any(|s| *s < 0));
    assert!(g.vol_shocks_ppm.contains(&0));
    assert!(g.vol_shocks_ppm.iter().any(|s| *s > 0));
    assert_eq!(g.extreme_moves_ppm.iter().min(), Some(&-660_000));
    assert_eq!(g.extreme_moves_ppm.iter().max(), Some(&5_000_000));
    // Every move at every vol shock, then the extended table.
    assert_eq!(
        g.scenarios().len(),
        g.price_moves_ppm.len() * g.vol_shocks_ppm.len() + g.extreme_moves_ppm.len()
    );
}

/// A scenario's weight read by index is the one in the scenario list, for
/// the default grid and a scaled one, and 1e6 past the end.
#[test]
fn scenario_weights_by_index_match_the_list() {
    let mut fs = sibyl_margin::engine::FeedState {
        config: feed("BTC"),
        last: None,
        recent: Vec::new(),
        jump: None,
        guard: None,
        vol_multiplier_ppm: 1_000_000,
    };
    for multiplier in [1_000_000, 1_700_000] {
        fs.vol_multiplier_ppm = multiplier;
        let list = fs.scenarios();
        assert!(list.iter().any(|s| s.weight_ppm != 1_000_000));
        for (i, s) in list.iter().enumerate() {
            assert_eq!(fs.scenario_weight_ppm(i), i128::from(s.weight_ppm), "{i}");
        }
        assert_eq!(fs.scenario_weight_ppm(list.len()), 1_000_000);
    }
}

/// A fill away from the oracle mark is allowed within the mark ± the
/// market's (initial - maintenance) rate (here 5 %), refused beyond it.
#[test]
fn fills_stay_within_the_price_band() {
    let mut w = World::new(feed("BTC-USD"), perp("BTC-PERP", "BTC-USD"), 100 * P);
    w.account(1, 1_000 * M);
    let open = |w: &mut World, price: i128| {
        w.cmd(Command::Open {
            account: 1,
            market: "BTC-PERP".into(),
            side: Side::Long,
            size: Q,
            margin: MarginMode::Cross,
            price: Some(price),
        })
    };
    let before = w.e.snapshot();
    for px in [106 * P, 94 * P, 0] {
        let r = open(&mut w, px);
        assert!(
            matches!(r, Err(EngineError::PriceOutsideBand { band, mark, .. }) if band == 5 * P && mark == 100 * P),
            "{px}: {r:?}"
        );
        assert_eq!(w.e.snapshot(), before);
    }
    let ev = open(&mut w, 105 * P).unwrap();
    assert!(
        ev.iter()
            .any(|r| matches!(r.event, Event::Filled { price, .. } if price == 105 * P)),
        "{ev:?}"
    );
    let close = |w: &mut World, price: i128| {
        w.cmd(Command::Close {
            account: 1,
            market: "BTC-PERP".into(),
            size: None,
            price: Some(price),
        })
    };
    assert!(matches!(
        close(&mut w, 9_499 * P / 100),
        Err(EngineError::PriceOutsideBand { .. })
    ));
    close(&mut w, 95 * P).unwrap();
    // Bought at 105, sold at 95: the 10 is lost, and money is conserved.
    assert_eq!(w.e.state().accounts[&1].cash, 990 * M);
}

/// A position large against the market's liquidity pays the concentration
/// add-on on both requirements; one within it pays none.
#[test]
fn concentration_add_on_grows_with_size_beyond_liquidity() {
    let mut m = perp("BTC-PERP", "BTC-USD");
    m.concentration = Some(Concentration {
        liquidity_notional: 5_000 * M,
        add_on_ppm: 100_000,
    });
    let mut w = World::new(feed("BTC-USD"), m, 100 * P);
    w.account(1, 10_000 * M);
    w.account(2, 10_000 * M);
    // 4,000 notional: within the liquidity, 10 % / 5 %.
    w.open(1, "BTC-PERP", Side::Long, 40 * Q).unwrap();
    let h = w.health(1);
    assert_eq!((h.initial, h.maintenance), (400 * M, 200 * M));
    // 10,000 notional: twice the liquidity, +10 %: 20 % / 15 %.
    w.open(2, "BTC-PERP", Side::Long, 100 * Q).unwrap();
    let h = w.health(2);
    assert_eq!((h.initial, h.maintenance), (2_000 * M, 1_500 * M));
    let mut bad = perp("ETH-PERP", "BTC-USD");
    bad.concentration = Some(Concentration {
        liquidity_notional: 0,
        add_on_ppm: 1,
    });
    assert!(matches!(
        w.cmd(Command::ConfigureMarket(bad)),
        Err(EngineError::InvalidConfig { .. })
    ));
}

#[test]
fn deep_loss_closes_in_full_and_insurance_covers_bad_debt() {
    let mut f = feed("BTC-USD");
    f.max_jump_ppm = 900_000;
    let mut w = World::new(f, perp("BTC-PERP", "BTC-USD"), 100 * P);
    w.cmd(Command::FundInsurance { amount: 10_000 * M })
        .unwrap();
    w.account(1, 1_000 * M);
    w.open(1, "BTC-PERP", Side::Long, 90 * Q).unwrap();
    let total = w.e.total_money().unwrap();
    // Gap down 20%: loss 1800 > equity 1000: bankrupt by 800.
    let ev = w.price("BTC-USD", 80 * P).unwrap();
    let l = liquidations(&ev);
    assert_eq!(l.len(), 1);
    assert!(matches!(
        l[0],
        Event::Liquidated {
            kind: LiquidationKind::Full,
            ..
        }
    ));
    let bad = ev.iter().find_map(|r| match &r.event {
        Event::BadDebt {
            deficit,
            from_insurance,
            from_deleveraging,
            from_venue,
            ..
        } => Some((*deficit, *from_insurance, *from_deleveraging, *from_venue)),
        _ => None,
    });
    assert_eq!(bad, Some((800 * M, 800 * M, 0, 0)));
    assert_eq!(w.e.insurance_fund(), 9_200 * M);
    assert_eq!(w.health(1).equity, 0);
    assert!(w.e.state().accounts[&1].positions.is_empty());
    assert_eq!(w.e.total_money().unwrap(), total, "money is conserved");
}

#[test]
fn bad_debt_beyond_the_fund_deleverages_profitable_opposing_positions() {
    let mut f = feed("BTC-USD");
    f.max_jump_ppm = 900_000;
    let mut w = World::new(f, perp("BTC-PERP", "BTC-USD"), 100 * P);
    w.account(1, 1_000 * M); // will go bankrupt (long)
    w.account(2, 5_000 * M); // short, profits from the fall
    w.account(3, 5_000 * M); // short, smaller
    w.account(4, 7_000 * M); // no positions: must never pay
    w.open(1, "BTC-PERP", Side::Long, 90 * Q).unwrap();
    w.open(2, "BTC-PERP", Side::Short, 100 * Q).unwrap();
    w.open(3, "BTC-PERP", Side::Short, 10 * Q).unwrap();
    let total = w.e.total_money().unwrap();
    let ev = w.price("BTC-USD", 80 * P).unwrap();
    let adl: Vec<_> = ev
        .iter()
        .filter_map(|r| match &r.event {
            Event::AutoDeleveraged {
                account,
                charge,
                rank,
                bankrupt,
                ..
            } => Some((*account, *charge, *rank, *bankrupt)),
            _ => None,
        })
        .collect();
    assert!(!adl.is_empty(), "{ev:?}");
    assert_eq!(adl[0].2, 1);
    assert!(adl.iter().all(|a| a.3 == 1 && a.0 != 4));
    let charged: i128 = adl.iter().map(|a| a.1).sum();
    assert_eq!(charged, 800 * M);
    // Account 2 (more leverage, same profit ratio) ranks first.
    assert_eq!(adl[0].0, 2);
    // The bystander kept every cent.
    assert_eq!(w.health(4).equity, 7_000 * M);
    // Deleveraged accounts lost at most their profit.
    for (acct, charge, ..) in &adl {
        assert!(
            w.health(*acct).equity >= 5_000 * M,
            "account {acct} charged {charge}"
        );
    }
    assert_eq!(w.e.total_money().unwrap(), total);
}

/// Healths computed ahead of a pass (`set_health_ahead`) go stale when
/// the pass changes an account it has not reached yet: here account
/// 301's bad debt deleverages accounts 302 and 303. Three hundred
/// bystanders come first in key order, so the helper thread has computed
/// the winners' healths (from before the deleveraging) by the time the
/// pass reaches them. The engine recomputes them: the same events, state,
/// bands and ranks as one that computes every health when it examines
/// the unit.
#[test]
fn healths_computed_ahead_are_recomputed_after_deleveraging() {
    let world = |ahead: bool| {
        let mut f = feed("BTC-USD");
        f.max_jump_ppm = 900_000;
        let mut w = World::new(f, perp("BTC-PERP", "BTC-USD"), 100 * P);
        // Every unit pending on every report.
        w.e.set_exhaustive_checks(true);
        w.e.set_health_ahead(1, if ahead { 2 } else { 1 });
        for id in 1..=300 {
            w.account(id, 5_000 * M);
            w.open(id, "BTC-PERP", Side::Long, Q).unwrap();
        }
        w.account(301, 1_000 * M);
        w.account(302, 5_000 * M);
        w.account(303, 5_000 * M);
        w.open(301, "BTC-PERP", Side::Long, 90 * Q).unwrap();
        w.open(302, "BTC-PERP", Side::Short, 100 * Q).unwrap();
        w.open(303, "BTC-PERP", Side::Short, 10 * Q).unwrap();
        let ev = w.price("BTC-USD", 80 * P).unwrap();
        assert!(
            ev.iter()
                .any(|r| matches!(r.event, Event::AutoDeleveraged { account: 302, .. })),
            "{ev:?}"
        );
        w
    };
    let (mut serial, mut ahead) = (world(false), world(true));
    assert_eq!(ahead.events, serial.events);
    assert_eq!(ahead.e.snapshot(), serial.e.snapshot());
    assert_eq!(ahead.e.state_root(), serial.e.state_root());
    // Bands and ranks come from the health each unit was examined at.
    assert_eq!(ahead.e.index_entries(), serial.e.index_entries());
    for w in [&mut serial, &mut ahead] {
        assert_eq!(
            w.e.closest_to_liquidation(3),
            w.e.closest_to_liquidation_scan(3)
        );
    }
}

/// `last_report_timing` describes the last accepted report: the units it
/// examined and a time for each phase; a refused report leaves it alone.
#[test]
fn report_timing_describes_the_last_report() {
    let mut w = World::new(feed("BTC-USD"), perp("BTC-PERP", "BTC-USD"), 100 * P);
    for id in 1..=3 {
        w.account(id, 1_000 * M);
        w.open(id, "BTC-PERP", Side::Long, 5 * Q).unwrap();
    }
    let before = w.e.examined_units();
    w.e.set_exhaustive_checks(true);
    w.price("BTC-USD", 99 * P).unwrap();
    let t = w.e.last_report_timing();
    assert_eq!(t.units, w.e.examined_units() - before);
    assert!(t.units >= 3, "{t:?}");
    assert!(
        t.examinations > std::time::Duration::ZERO && t.root > std::time::Duration::ZERO,
        "{t:?}"
    );
    // A refused report (a round already applied) changes nothing.
    let refused = w.e.apply_report(&PriceReport {
        round: 1,
        timestamp_ms: 1,
        prices: vec![PriceInput {
            feed: "BTC-USD".into(),
            price: 98 * P,
            decimals: 8,
            ..PriceInput::default()
        }],
    });
    assert!(refused.is_err());
    assert_eq!(w.e.last_report_timing(), t);
}

#[test]
fn guard_rails_defer_liquidation_and_refuse_new_risk() {
    let mut w = World::new(feed("BTC-USD"), perp("BTC-PERP", "BTC-USD"), 100 * P);
    w.account(1, 1_000 * M);
    w.account(2, 1_000 * M);
    w.open(1, "BTC-PERP", Side::Long, 90 * Q).unwrap();
    // Wide confidence (5% > 2%) at a price that would liquidate: deferred.
    let ev = w.price_conf("BTC-USD", 93 * P, 5 * P as u128).unwrap();
    assert!(liquidations(&ev).is_empty());
    assert!(ev.iter().any(|r| matches!(
        &r.event,
        Event::GuardRaised {
            reason: GuardReason::ConfidenceTooWide { .. },
            ..
        }
    )));
    assert!(ev.iter().any(|r| matches!(
        &r.event,
        Event::LiquidationDeferred {
            account: 1,
            reason: GuardReason::ConfidenceTooWide { .. },
            ..
        }
    )));
    // New risk is refused with the reason, and nothing changes.
    let before = w.e.snapshot();
    let err = w.open(2, "BTC-PERP", Side::Long, Q).unwrap_err();
    assert!(matches!(err, EngineError::GuardUp { .. }), "{err}");
    assert_eq!(w.e.snapshot(), before);
    // A good price clears the guard and the deferred liquidation runs.
    let ev = w.price("BTC-USD", 93 * P).unwrap();
    assert!(
        ev.iter()
            .any(|r| matches!(r.event, Event::GuardCleared { .. }))
    );
    assert_eq!(liquidations(&ev).len(), 1);
}

#[test]
fn jump_guard_blocks_liquidation_on_an_implausible_print() {
    let mut w = World::new(feed("BTC-USD"), perp("BTC-PERP", "BTC-USD"), 100 * P);
    w.account(1, 1_000 * M);
    w.open(1, "BTC-PERP", Side::Long, 90 * Q).unwrap();
    for _ in 0..3 {
        w.price("BTC-USD", 100 * P).unwrap();
    }
    // -40% against an average of 100 (max 20%): a jump, not a liquidation.
    let ev = w.price("BTC-USD", 60 * P).unwrap();
    assert!(liquidations(&ev).is_empty(), "{ev:?}");
    assert!(ev.iter().any(|r| matches!(
        &r.event,
        Event::LiquidationDeferred {
            reason: GuardReason::Jump { .. },
            ..
        }
    )));
    // Back to normal: the guard clears, the account is healthy again.
    let ev = w.price("BTC-USD", 100 * P).unwrap();
    assert!(
        ev.iter()
            .any(|r| matches!(r.event, Event::GuardCleared { .. }))
    );
    assert!(liquidations(&ev).is_empty());
}

#[test]
fn stale_price_blocks_liquidation() {
    let mut w = World::new(feed("BTC-USD"), perp("BTC-PERP", "BTC-USD"), 100 * P);
    let mut g = feed("ETH-USD");
    g.max_jump_ppm = 900_000;
    w.cmd(Command::ConfigureFeed(g)).unwrap();
    w.cmd(Command::ConfigureMarket(perp("ETH-PERP", "ETH-USD")))
        .unwrap();
    w.price("ETH-USD", 10 * P).unwrap();
    w.account(1, 1_000 * M);
    w.open(1, "BTC-PERP", Side::Long, 45 * Q).unwrap();
    w.open(1, "ETH-PERP", Side::Long, 450 * Q).unwrap();
    // Time passes with ETH ticking only: BTC goes stale.
    w.t += 120_000;
    let ev = w.price("ETH-USD", 8 * P).unwrap();
    assert!(ev.iter().any(|r| matches!(&r.event, Event::GuardRaised { feed, reason: GuardReason::Stale { .. } } if feed == "BTC-USD")));
    assert!(liquidations(&ev).is_empty());
    assert!(
        ev.iter().any(
            |r| matches!(&r.event, Event::LiquidationDeferred { feed, .. } if feed == "BTC-USD")
        )
    );
}

#[test]
fn bad_commands_are_refused_and_change_nothing() {
    let mut w = World::new(feed("BTC-USD"), perp("BTC-PERP", "BTC-USD"), 100 * P);
    w.account(1, 1_000 * M);
    let before = w.e.snapshot();
    type IsExpected = fn(&EngineError) -> bool;
    let cases: Vec<(Command, IsExpected)> = vec![
        (
            Command::Open {
                account: 1,
                market: "NOPE".into(),
                side: Side::Long,
                size: Q,
                margin: MarginMode::Cross,
                price: None,
            },
            |e| matches!(e, EngineError::UnknownMarket { .. }),
        ),
        (
            Command::Open {
                account: 1,
                market: "BTC-PERP".into(),
                side: Side::Long,
                size: -Q,
                margin: MarginMode::Cross,
                price: None,
            },
            |e| matches!(e, EngineError::NonPositive { .. }),
        ),
        (
            Command::Open {
                account: 1,
                market: "BTC-PERP".into(),
                side: Side::Long,
                size: i128::MAX,
                margin: MarginMode::Cross,
                price: None,
            },
            |e| matches!(e, EngineError::Overflow { .. }),
        ),
        (
            Command::Open {
                account: 1,
                market: "BTC-PERP".into(),
                side: Side::Long,
                size: 200 * Q,
                margin: MarginMode::Cross,
                price: None,
            },
            |e| matches!(e, EngineError::InsufficientMargin { .. }),
        ),
        (
            Command::Deposit {
                account: 1,
                asset: "USD".into(),
                amount: i128::MAX,
            },
            |e| matches!(e, EngineError::Overflow { .. }),
        ),
        (
            Command::Deposit {
                account: 9,
                asset: "USD".into(),
                amount: M,
            },
            |e| matches!(e, EngineError::UnknownAccount { .. }),
        ),
        (
            Command::Deposit {
                account: 1,
                asset: "DOGE".into(),
                amount: M,
            },
            |e| matches!(e, EngineError::UnknownAsset { .. }),
        ),
        (
            Command::Withdraw {
                account: 1,
                asset: "USD".into(),
                amount: 2_000 * M,
            },
            |e| matches!(e, EngineError::InsufficientBalance { .. }),
        ),
        (
            Command::CreateAccount {
                account: 1,
                owner: None,
            },
            |e| matches!(e, EngineError::AccountExists { .. }),
        ),
        (
            Command::Close {
                account: 1,
                market: "BTC-PERP".into(),
                size: None,
                price: None,
            },
            |e| matches!(e, EngineError::NoPosition { .. }),
        ),
        (Command::FundInsurance { amount: 0 }, |e| {
            matches!(e, EngineError::NonPositive { .. })
        }),
    ];
    for (c, ok) in cases {
        let err = w.e.apply_command(w.t, &c).unwrap_err();
        assert!(ok(&err), "{c:?} gave {err}");
        assert!(!err.to_string().is_empty());
        assert_eq!(w.e.snapshot(), before, "{c:?} changed state");
    }
    // Withdrawal below initial margin is refused; within it, accepted.
    w.open(1, "BTC-PERP", Side::Long, 50 * Q).unwrap(); // initial 500
    let before = w.e.snapshot();
    let err = w
        .cmd(Command::Withdraw {
            account: 1,
            asset: "USD".into(),
            amount: 600 * M,
        })
        .unwrap_err();
    assert!(
        matches!(err, EngineError::InsufficientMargin { .. }),
        "{err}"
    );
    assert_eq!(w.e.snapshot(), before);
    w.cmd(Command::Withdraw {
        account: 1,
        asset: "USD".into(),
        amount: 400 * M,
    })
    .unwrap();
    // Bad prices are refused whole.
    let before = w.e.snapshot();
    assert!(matches!(
        w.e.apply_prices(99, T0 + 9_000_000, &[("BTC-USD", -1i128, 8u8, 0u128)]),
        Err(EngineError::NonPositivePrice { .. })
    ));
    assert!(matches!(
        w.e.apply_prices(0, T0 + 9_000_000, &[("BTC-USD", P, 8u8, 0u128)]),
        Err(EngineError::OutOfOrderPrice { .. })
    ));
    assert!(matches!(
        w.e.apply_prices(
            99,
            T0 + 9_000_000,
            &[("BTC-USD", P, 8u8, 0u128), ("BTC-USD", P, 8u8, 0u128)]
        ),
        Err(EngineError::DuplicateFeed { .. })
    ));
    assert_eq!(w.e.snapshot(), before);
}

#[test]
fn multi_asset_collateral_counts_with_haircut() {
    let mut w = World::new(feed("BTC-USD"), perp("BTC-PERP", "BTC-USD"), 50_000 * P);
    w.cmd(Command::ConfigureAsset(AssetConfig {
        asset: "BTC".into(),
        feed: "BTC-USD".into(),
        haircut_ppm: 200_000,
    }))
    .unwrap();
    w.cmd(Command::CreateAccount {
        account: 7,
        owner: None,
    })
    .unwrap();
    w.cmd(Command::Deposit {
        account: 7,
        asset: "BTC".into(),
        amount: Q / 10,
    })
    .unwrap();
    // 0.1 BTC at 50,000 with a 20% haircut = 4,000.
    assert_eq!(w.health(7).equity, 4_000 * M);
    w.price("BTC-USD", 55_000 * P).unwrap();
    assert_eq!(w.health(7).equity, 4_400 * M);
}

/// A BTC perpetual market and ETH as collateral without a haircut.
fn btc_perp_with_eth_collateral() -> World {
    let mut w = World::new(feed("BTC-USD"), perp("BTC-PERP", "BTC-USD"), 50_000 * P);
    w.cmd(Command::ConfigureFeed(feed("ETH-USD"))).unwrap();
    w.cmd(Command::ConfigureAsset(AssetConfig {
        asset: "ETH".into(),
        feed: "ETH-USD".into(),
        haircut_ppm: 0,
    }))
    .unwrap();
    w
}

impl World {
    /// Account `id` with 10 ETH of collateral and nothing else, long 3.6
    /// BTC-PERP at the mark.
    fn eth_backed_btc_long(&mut self, id: u64) {
        self.cmd(Command::CreateAccount {
            account: id,
            owner: None,
        })
        .unwrap();
        self.cmd(Command::Deposit {
            account: id,
            asset: "ETH".into(),
            amount: 10 * Q,
        })
        .unwrap();
        self.open(id, "BTC-PERP", Side::Long, 36 * Q / 10).unwrap();
    }
}

/// Collateral counts at the more conservative of the signed price and its
/// EMA (the lower for a holding): a wick up lends nothing, and an EMA
/// catching up with a fall moves the unit by itself. The trigger index
/// follows the EMA: the margin call and the liquidation come with the
/// report whose EMA crosses, with the price unchanged.
#[test]
fn collateral_counts_at_the_lower_of_price_and_ema() {
    let mut w = btc_perp_with_eth_collateral();
    let eth = |price: i128, ema: i128| PriceInput {
        feed: "ETH-USD".into(),
        price: price * P,
        ema: ema * P,
        decimals: 8,
        ..PriceInput::default()
    };
    w.leaf(eth(2_000, 2_000)).unwrap();
    // 3.6 BTC at 50,000: initial 18,000, maintenance 9,000.
    w.eth_backed_btc_long(1);
    assert_eq!(w.health(1).equity, 20_000 * M);
    // A wick to 2,300 with the EMA at 2,000 values the ETH at 2,000.
    w.leaf(eth(2_300, 2_000)).unwrap();
    assert_eq!(w.health(1).equity, 20_000 * M);
    // No EMA on the leaf: the price alone.
    w.leaf(eth(2_100, 0)).unwrap();
    assert_eq!(w.health(1).equity, 21_000 * M);
    // The price back at 2,000, the EMA at 1,790 below it: 17,900 < 18,000,
    // the margin call comes with this report.
    let ev = w.leaf(eth(2_000, 1_790)).unwrap();
    assert_eq!(w.health(1).equity, 17_900 * M);
    assert!(
        ev.iter()
            .any(|r| matches!(r.event, Event::MarginCall { account: 1, .. })),
        "{ev:?}"
    );
    assert!(liquidations(&ev).is_empty());
    // Only the EMA falls on (price 2,000): 8,800 < 9,000 liquidates now.
    let ev = w.leaf(eth(2_000, 880)).unwrap();
    assert_eq!(liquidations(&ev).len(), 1, "{ev:?}");
}

/// A unit's margin call comes with the report that takes it below initial
/// margin, also when the price that moved it is not its positions' feed
/// (here its ETH collateral), and clears with the report that takes it
/// past initial plus the clearing buffer; reports that keep it on one side
/// emit nothing.
#[test]
fn margin_call_comes_the_round_any_price_crosses_initial() {
    let mut w = btc_perp_with_eth_collateral();
    w.price("ETH-USD", 2_000 * P).unwrap();
    // 3.6 BTC at 50,000: initial 10 % = 18,000, maintenance 9,000; the
    // collateral is worth 20,000.
    w.eth_backed_btc_long(1);
    assert!(w.e.state().margin_calls.is_empty());
    let calls = |ev: &[EventRecord]| {
        ev.iter()
            .filter(|r| matches!(r.event, Event::MarginCall { .. }))
            .count()
    };
    let cleared = |ev: &[EventRecord]| {
        ev.iter()
            .filter(|r| matches!(r.event, Event::MarginCallCleared { .. }))
            .count()
    };
    // Above initial (18,500 then 18,100): nothing.
    for eth in [1_850, 1_810] {
        let ev = w.price("ETH-USD", eth * P).unwrap();
        assert_eq!((calls(&ev), cleared(&ev)), (0, 0), "ETH at {eth}");
    }
    // 1,790: equity 17,900 < 18,000 — the call comes with this report.
    let ev = w.price("ETH-USD", 1_790 * P).unwrap();
    assert_eq!(calls(&ev), 1, "ETH at 1,790 crosses initial: {ev:?}");
    assert!(w.e.state().margin_calls.contains(&(1, Unit::Cross)));
    assert!(liquidations(&ev).is_empty());
    // Inside the call: nothing new, on either feed.
    let ev = w.price("ETH-USD", 1_700 * P).unwrap();
    assert_eq!((calls(&ev), cleared(&ev)), (0, 0));
    let ev = w.price("BTC-USD", 50_010 * P).unwrap();
    assert_eq!((calls(&ev), cleared(&ev)), (0, 0));
    // Back above initial (18,800 >= 18,180) but below initial plus a
    // quarter of (initial - maintenance) (20,453): still called.
    let ev = w.price("BTC-USD", 50_500 * P).unwrap();
    assert_eq!((calls(&ev), cleared(&ev)), (0, 0), "{ev:?}");
    // The BTC price alone takes it past the clearing level: cleared now.
    let ev = w.price("BTC-USD", 51_500 * P).unwrap();
    assert_eq!(cleared(&ev), 1, "BTC at 51,500 clears the call: {ev:?}");
    assert!(w.e.state().margin_calls.is_empty());
}

/// With `prompt_margin_calls` off the bands hold maintenance only: the
/// collateral move that crosses initial is not noticed until the unit is
/// examined for another reason (here a deposit).
#[test]
fn margin_calls_wait_for_an_examination_when_not_prompt() {
    let mut w = World::new(feed("BTC-USD"), perp("BTC-PERP", "BTC-USD"), 50_000 * P);
    w.cmd(Command::ConfigureRisk(RiskParams {
        prompt_margin_calls: false,
        ..RiskParams::default()
    }))
    .unwrap();
    w.cmd(Command::ConfigureFeed(feed("ETH-USD"))).unwrap();
    w.cmd(Command::ConfigureAsset(AssetConfig {
        asset: "ETH".into(),
        feed: "ETH-USD".into(),
        haircut_ppm: 0,
    }))
    .unwrap();
    w.price("ETH-USD", 2_000 * P).unwrap();
    w.cmd(Command::CreateAccount {
        account: 1,
        owner: None,
    })
    .unwrap();
    w.cmd(Command::Deposit {
        account: 1,
        asset: "ETH".into(),
        amount: 10 * Q,
    })
    .unwrap();
    // 3.95 BTC: initial 19,750 against 20,000 of collateral.
    w.open(1, "BTC-PERP", Side::Long, 395 * Q / 100).unwrap();
    // ETH at 1,970: equity 19,700 < initial, well inside the maintenance
    // band: no examination, no call yet.
    w.price("ETH-USD", 1_970 * P).unwrap();
    assert!(w.e.state().margin_calls.is_empty());
    w.cmd(Command::Deposit {
        account: 1,
        asset: "USD".into(),
        amount: 1,
    })
    .unwrap();
    assert!(w.e.state().margin_calls.contains(&(1, Unit::Cross)));
}

#[test]
fn isolated_margin_limits_the_loss_to_its_pool() {
    let mut f = feed("BTC-USD");
    f.max_jump_ppm = 900_000;
    let mut w = World::new(f, perp("BTC-PERP", "BTC-USD"), 100 * P);
    w.cmd(Command::FundInsurance { amount: 10_000 * M })
        .unwrap();
    w.account(1, 5_000 * M);
    w.cmd(Command::Open {
        account: 1,
        market: "BTC-PERP".into(),
        side: Side::Long,
        size: 90 * Q,
        margin: MarginMode::Isolated {
            collateral: 1_000 * M,
        },
        price: None,
    })
    .unwrap();
    let ev = w.price("BTC-USD", 80 * P).unwrap();
    assert_eq!(liquidations(&ev).len(), 1);
    // The cross pool keeps its 4,000; the pool's 800 deficit went to the fund.
    assert_eq!(w.health(1).equity, 4_000 * M);
    assert_eq!(w.e.insurance_fund(), 9_200 * M);
}

#[test]
fn requirements_grow_with_position_size() {
    let mut m = perp("BTC-PERP", "BTC-USD");
    m.growth_ppm_per_million = 10_000; // +1% per 1M notional
    let mut w = World::new(feed("BTC-USD"), m, 100 * P);
    w.account(1, 10_000_000 * M);
    w.open(1, "BTC-PERP", Side::Long, 10_000 * Q).unwrap(); // 1M notional
    let small = w.health(1);
    assert_eq!(small.initial, 110_000 * M); // 11% of 1M
    w.open(1, "BTC-PERP", Side::Long, 30_000 * Q).unwrap(); // 4M notional
    let big = w.health(1);
    assert_eq!(big.initial, 560_000 * M); // 14% of 4M
}

fn option_market(name: &str, kind: OptionKind, strike: i128, expiry_ms: u64) -> MarketConfig {
    MarketConfig {
        kind: MarketKind::Option {
            kind,
            strike,
            expiry_ms,
            model: PricingModel::Black76,
            vol: VolSource::Fixed { vol_ppm: 250_000 },
        },
        ..perp(name, "OIL-USD")
    }
}

#[test]
fn option_marks_greeks_portfolio_margin_and_settlement() {
    // Hull Example 18.8: F = K = 20, r = 9%, sigma = 25%, T = 4 months: put 1.12.
    let mut f = feed("OIL-USD");
    f.rate_ppm = 90_000;
    let expiry = T0 + 1_000 + 10_512_000_000; // 4/12 of a 365-day year after the first price
    let mut w = World::new(
        f,
        option_market("OIL-P-20", OptionKind::Put, 20 * P, expiry),
        20 * P,
    );
    w.cmd(Command::ConfigureMarket(MarketConfig {
        kind: MarketKind::Future { expiry_ms: expiry },
        ..perp("OIL-FUT", "OIL-USD")
    }))
    .unwrap();
    let mark = w.e.state().markets["OIL-P-20"].mark.clone().unwrap();
    assert!(
        (mark.price - 112 * P / 100).abs() < P / 200,
        "put premium {}",
        mark.price
    );
    assert!(mark.greeks.delta < 0 && mark.greeks.gamma > 0 && mark.greeks.vega > 0);
    // A short put hedged with a short future: portfolio margin with Greeks.
    w.account(1, 10_000 * M);
    w.open(1, "OIL-P-20", Side::Short, 100 * Q).unwrap();
    w.open(1, "OIL-FUT", Side::Short, 50 * Q).unwrap();
    let view = w.e.account_view(1).unwrap();
    assert!(view[0].health.portfolio);
    assert!(view[0].health.maintenance > 0 && view[0].health.initial > view[0].health.maintenance);
    let g = view[0].greeks["OIL-USD"];
    // -100 × put delta (~ -0.47) - 50 ≈ -3.
    let gs = sibyl_margin::engine::GREEK_SCALE;
    assert!(g.delta > -10 * gs && g.delta < 5 * gs, "{g:?}");
    assert!(g.gamma < 0 && g.vega < 0);
    // Expiry: settled at intrinsic value (K - F = 2) and at F for the future.
    let total = w.e.total_money().unwrap();
    w.t = expiry;
    let ev = w.price("OIL-USD", 18 * P).unwrap();
    let settled: Vec<_> = ev
        .iter()
        .filter_map(|r| match &r.event {
            Event::Settled { market, price, .. } => Some((market.clone(), *price)),
            _ => None,
        })
        .collect();
    assert!(
        settled.contains(&("OIL-P-20".to_string(), 2 * P)),
        "{settled:?}"
    );
    assert!(settled.contains(&("OIL-FUT".to_string(), 18 * P)));
    assert!(w.e.state().accounts[&1].positions.is_empty());
    assert_eq!(w.e.total_money().unwrap(), total);
    let err = w.open(1, "OIL-FUT", Side::Long, Q).unwrap_err();
    assert!(matches!(err, EngineError::Settled { .. }), "{err}");
}

#[test]
fn vol_surface_interpolates() {
    let surf = VolSurface {
        slices: vec![
            VolSlice {
                expiry_ms: 1_000,
                points: vec![
                    VolPoint {
                        strike: 100,
                        vol_ppm: 500_000,
                    },
                    VolPoint {
                        strike: 200,
                        vol_ppm: 300_000,
                    },
                ],
            },
            VolSlice {
                expiry_ms: 3_000,
                points: vec![VolPoint {
                    strike: 100,
                    vol_ppm: 400_000,
                }],
            },
        ],
    };
    let v = sibyl_margin::engine::surface_vol(&surf, 150, 1_000, 0);
    assert!((v - 0.4).abs() < 1e-12);
    assert!((sibyl_margin::engine::surface_vol(&surf, 50, 500, 0) - 0.5).abs() < 1e-12);
    // Halfway in time between 0.5 (T=1000) and 0.4 (T=3000) in total variance.
    let v = sibyl_margin::engine::surface_vol(&surf, 100, 2_000, 0);
    let w = (0.25 * 1000.0 + (0.16 * 3000.0 - 0.25 * 1000.0) * 0.5) / 2000.0;
    assert!((v - f64::sqrt(w)).abs() < 1e-12);
}

#[test]
fn demo_book_replays_and_has_accounts_near_liquidation() {
    let book = demo_book(7, 300);
    assert_eq!(book.engine.state().accounts.len(), 300);
    let positions: usize = book
        .engine
        .state()
        .accounts
        .values()
        .map(|a| a.positions.len())
        .sum();
    assert!(positions >= 300, "{positions}");
    // Replaying the stored inputs reproduces the same state.
    let mut e = Engine::default();
    for i in &book.inputs {
        e.apply(i).unwrap();
    }
    assert_eq!(e.snapshot(), book.engine.snapshot());
    // A 3% move liquidates some accounts (and conserves money).
    let mut e = book.engine.clone();
    let total = e.total_money().unwrap();
    let t = e.now_ms() + 1_000;
    let ev = e
        .apply_prices(
            1,
            t,
            &[
                ("BTC-USD", 58_200 * P, 8u8, 0u128),
                ("ETH-USD", 3_090 * P, 8, 0),
                ("SOL-USD", 145 * P, 8, 0),
            ],
        )
        .unwrap();
    assert!(!liquidations(&ev).is_empty());
    assert_eq!(e.total_money().unwrap(), total);
}

#[test]
fn restore_refuses_a_stored_band_on_an_unknown_feed() {
    let mut w = World::new(feed("BTC-USD"), perp("BTC-PERP", "BTC-USD"), 100 * P);
    w.account(1, 1_000 * M);
    w.open(1, "BTC-PERP", Side::Long, 90 * Q).unwrap();
    let (s, mut idx) = w.e.snapshot_with_index();
    // The live index restores as it is.
    let restored = Engine::restore(s.clone(), &idx).unwrap();
    assert_eq!(restored.indexed_units(), w.e.indexed_units());
    // A band naming a feed the engine does not hold is a corrupt store.
    let unit = idx.iter_mut().find(|u| !u.bands.is_empty()).unwrap();
    unit.bands[0].0 = "NOPE-USD".into();
    let err = Engine::restore(s, &idx).err().unwrap();
    assert!(err.to_string().contains("NOPE-USD"), "{err}");
}

/// Greeks keep their precision: a BTC-like gamma (~2.3e-5 at S = 100,000,
/// 30 days, σ = 0.6) within 1e-9 relative of the model's float, and gamma at
/// S = 1e9 is not rounded to zero.
#[test]
fn greeks_keep_btc_like_gamma() {
    use sibyl_margin::engine::{GREEK_SCALE, YEAR_MS};
    use sibyl_margin::options::OptionInputs;
    for spot in [100_000i128, 1_000_000_000] {
        let expiry = T0 + 1_000 + 30 * 86_400_000;
        let mut w = World::new(
            feed("BTC-USD"),
            MarketConfig {
                kind: MarketKind::Option {
                    kind: OptionKind::Call,
                    strike: spot * P,
                    expiry_ms: expiry,
                    model: PricingModel::Black76,
                    vol: VolSource::Fixed { vol_ppm: 600_000 },
                },
                ..perp("BTC-C", "BTC-USD")
            },
            spot * P,
        );
        w.cmd(Command::CreateAccount {
            account: 1,
            owner: None,
        })
        .unwrap();
        let mark = w.e.state().markets["BTC-C"].mark.clone().unwrap();
        let want = options::price(
            PricingModel::Black76,
            &OptionInputs {
                kind: OptionKind::Call,
                underlying: spot as f64,
                strike: spot as f64,
                years: (expiry - mark.at_ms) as f64 / YEAR_MS,
                vol: 0.6,
                rate: 0.0,
                carry: 0.0,
            },
        )
        .gamma;
        let got = mark.greeks.gamma as f64 / GREEK_SCALE as f64;
        assert!(got > 0.0, "gamma at S = {spot} rounded to {got}");
        let rel = ((got - want) / want).abs();
        assert!(
            rel <= 1e-9,
            "S = {spot}: gamma {got} vs {want}: {rel:e} relative"
        );
        if spot == 100_000 {
            assert!((want - 2.3e-5).abs() < 0.1e-5, "{want}");
        }
    }
}

/// A market whose expiry is not after the engine clock is refused with
/// `ExpiryInPast` and nothing changes; one expiring later is accepted.
#[test]
fn market_with_past_expiry_is_refused() {
    let mut w = World::new(feed("BTC-USD"), perp("BTC-PERP", "BTC-USD"), 100 * P);
    let before = w.e.snapshot();
    for expiry_ms in [T0, w.t] {
        for kind in [
            MarketKind::Future { expiry_ms },
            MarketKind::Option {
                kind: OptionKind::Put,
                strike: 100 * P,
                expiry_ms,
                model: PricingModel::Black76,
                vol: VolSource::Fixed { vol_ppm: 500_000 },
            },
        ] {
            let err = w
                .cmd(Command::ConfigureMarket(MarketConfig {
                    kind,
                    ..perp("OLD", "BTC-USD")
                }))
                .unwrap_err();
            assert!(matches!(err, EngineError::ExpiryInPast { .. }), "{err}");
            assert!(err.to_string().contains("later expiry_ms"), "{err}");
        }
    }
    assert_eq!(w.e.snapshot(), before);
    w.cmd(Command::ConfigureMarket(MarketConfig {
        kind: MarketKind::Future {
            expiry_ms: w.t + 86_400_000,
        },
        ..perp("NEXT", "BTC-USD")
    }))
    .unwrap();
}

/// A bulk load's first root is built over several threads (leaves and the
/// wide levels of the tree): it is the root one thread computes from the
/// state alone.
#[test]
fn a_bulk_root_built_over_threads_is_the_serial_root() {
    let mut e = Engine::default();
    for account in 1..=40_000u64 {
        e.apply_command(
            T0,
            &Command::CreateAccount {
                account,
                owner: None,
            },
        )
        .unwrap();
        e.apply_command(
            T0,
            &Command::Deposit {
                account,
                asset: "USD".into(),
                amount: i128::from(account) * M,
            },
        )
        .unwrap();
    }
    let root = e.state_root();
    assert_eq!(root, e.state_root_from_scratch());
    // And after a restart from a snapshot.
    let mut back = Engine::decode_snapshot(&e.encode_snapshot().unwrap()).unwrap();
    assert_eq!(back.state_root(), root);
}

/// A snapshot naming one account twice is refused as corrupt, naming it
/// (the restore builds the account map in one sorted pass and checks).
#[test]
fn a_snapshot_with_an_account_twice_is_refused() {
    let mut e = Engine::default();
    for account in [0x1111_1111u64, 0x2222_2222] {
        e.apply_command(
            T0,
            &Command::CreateAccount {
                account,
                owner: None,
            },
        )
        .unwrap();
    }
    let mut bytes = e.encode_snapshot().unwrap();
    let second = 0x2222_2222u64.to_be_bytes();
    let at = bytes
        .windows(8)
        .position(|w| w == second)
        .expect("the second account's id is in the snapshot");
    bytes[at..at + 8].copy_from_slice(&0x1111_1111u64.to_be_bytes());
    let Err(err) = Engine::decode_snapshot(&bytes) else {
        panic!("a snapshot with an account twice was accepted");
    };
    assert!(
        err.to_string().contains("account 286331153 appears twice"),
        "{err}"
    );
    // The untouched bytes still restore.
    assert!(Engine::decode_snapshot(&e.encode_snapshot().unwrap()).is_ok());
}

/// Damaged snapshot bytes (a store row hit by a bad disk, a truncated
/// copy) are refused with an error or give an engine that encodes and
/// decodes again; never a panic. 3,000 seeded single-byte changes and
/// truncations of a real book's snapshot (the restart path reads the
/// account map, holders and index in bulk now).
#[test]
fn damaged_snapshot_bytes_are_refused_without_a_panic() {
    let mut book = demo_book_with(3, 40, &DemoParams::default());
    let good = book.engine.encode_snapshot().unwrap();
    let mut z = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        z ^= z << 13;
        z ^= z >> 7;
        z ^= z << 17;
        z
    };
    let (mut refused, mut decoded) = (0, 0);
    for i in 0..3_000 {
        let mut bytes = good.clone();
        let at = (next() % bytes.len() as u64) as usize;
        if i % 10 == 0 {
            bytes.truncate(at);
        } else {
            bytes[at] ^= 1 << (next() % 8);
        }
        match Engine::decode_snapshot(&bytes) {
            Ok(mut e) => {
                decoded += 1;
                let _ = e.state_root();
                let again = e.encode_snapshot().unwrap();
                assert!(
                    Engine::decode_snapshot(&again).is_ok(),
                    "change {i} at {at}"
                );
            }
            Err(err) => {
                refused += 1;
                assert!(!err.to_string().is_empty());
            }
        }
    }
    assert!(
        refused > 0 && refused + decoded == 3_000,
        "{refused} refused, {decoded} decoded"
    );
}
