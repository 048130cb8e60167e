//! Property tests: random books under random price paths.
//!
//! - no liquidation while equity is at or above maintenance, and no unit is
//!   left below maintenance unless a guard deferred it (the trigger index
//!   misses nobody);
//! - a liquidation never leaves an account worse off than before it (margin
//!   excess does not fall; equity falls by at most the penalty);
//! - conservation of money and collateral across liquidations, bad debt,
//!   deleveraging and settlement;
//! - same inputs give the same event bytes and state roots, also after a
//!   snapshot restore and with healths computed ahead over threads
//!   (`set_health_ahead`);
//! - the trigger index is exact: an engine that re-examines every unit on
//!   every report (`set_exhaustive_checks`) emits the same liquidations,
//!   deferrals, bad debt, deleveraging and settlements, event by event, and
//!   ends in the same state.
//!
//! A generated subset of the accounts is owned (an Ed25519 key, registered
//! by the operator or by the owner's own signed `CreateAccount`): every
//! withdrawal, open, close and margin adjustment on one goes in as
//! `Input::Signed`, signed by the owner with the account's next nonce, and
//! every engine (restored, decoded and exhaustive ones too) is given the
//! same committee key. On top of the properties above:
//!
//! - nothing is refused for its authorization (a signature, a nonce, a
//!   missing owner): only for the command's own reasons;
//! - each account's nonce is the number of signed commands applied to it;
//! - owners' signed commands of every kind apply in the generated books;
//! - a signed command replayed, or signed again with a nonce not above the
//!   account's last, is refused and changes nothing.

use proptest::prelude::*;
use sibyl_margin::engine::IndexedUnit;
use sibyl_margin::fixed::{MONEY_SCALE as M, PRICE_SCALE as P, QTY_SCALE as Q};
use sibyl_margin::options::{OptionKind, PricingModel};
use sibyl_margin::signed::public_key;
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

/// The committee every engine of these tests belongs to: owners sign for
/// it, and each engine is given it (context, not state: an engine restored
/// or decoded from a snapshot is given it again).
fn committee() -> CommitteeKey {
    CommitteeKey::new(vec![0xC7; 32]).unwrap()
}

/// `e` with the committee key.
fn with_committee(mut e: Engine) -> Engine {
    e.set_committee(committee());
    e
}

/// An empty engine with the committee key.
fn engine() -> Engine {
    with_committee(Engine::default())
}

/// Who holds an account.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Holder {
    /// No owner key: the operator's commands move it.
    Operator,
    /// An owner key the operator registered (an unsigned `CreateAccount`).
    Owner,
    /// An owner key that registered itself (a signed `CreateAccount`).
    SelfRegistered,
}

impl Holder {
    fn owned(self) -> bool {
        self != Holder::Operator
    }
}

/// Mostly operator accounts; about two in five owned.
fn holder() -> impl Strategy<Value = Holder> {
    prop_oneof![
        3 => Just(Holder::Operator),
        1 => Just(Holder::Owner),
        1 => Just(Holder::SelfRegistered),
    ]
}

fn holders() -> impl Strategy<Value = Vec<Holder>> {
    prop::collection::vec(holder(), 8)
}

/// The owner secret of `account`.
fn secret(account: u64) -> [u8; 32] {
    let mut s = [0x5A; 32];
    s[24..].copy_from_slice(&account.to_be_bytes());
    s
}

/// `cmd` signed by `account`'s owner with `nonce`, for [`committee`].
fn sign(account: u64, nonce: u64, cmd: &Command) -> SignedCommand {
    SignedCommand::sign(
        &secret(account),
        &committee(),
        account,
        nonce,
        serde_json::to_string(cmd).unwrap(),
    )
}

/// The nonce an owner signs its next command on `account` with: one above
/// the account's last, as a client reads it from the book.
fn next_nonce(e: &Engine, account: u64) -> u64 {
    e.state().accounts.get(&account).map_or(0, |a| a.nonce) + 1
}

/// What a generated book command does: mostly opens, sometimes one of the
/// other commands an owner signs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Act {
    Open,
    /// All of one of the account's positions (odd size) or part of it.
    Close,
    /// Cash, `size_milli / 100` USD.
    Withdraw,
    /// Into (long) or out of (short) one of the account's isolated pools.
    Adjust,
}

#[derive(Clone, Debug)]
struct Trade {
    act: Act,
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
        prop_oneof![
            12 => Just(Act::Open),
            1 => Just(Act::Close),
            1 => Just(Act::Withdraw),
            1 => Just(Act::Adjust),
        ],
        1u64..=8,
        0usize..5,
        any::<bool>(),
        1i128..=40_000,
        prop::bool::weighted(0.2),
        prop_oneof![2 => Just(0i64), 1 => -60_000i64..=60_000],
    )
        .prop_map(
            |(act, account, market, long, size_milli, isolated, fill_ppm)| Trade {
                act,
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

/// A case's inputs as they are made: the book's are applied to an engine
/// on the way, so that an owner signs each command with its account's next
/// nonce and a close or margin adjustment names a market the account holds.
struct Builder {
    e: Engine,
    v: Vec<Input>,
    /// Accounts with an owner key (as generated, not as the engine says).
    owned: Vec<u64>,
}

impl Builder {
    fn push(&mut self, input: Input) {
        let _ = self.e.apply(&input);
        self.v.push(input);
    }

    /// `cmd` on its account: signed by the owner with the next nonce where
    /// the account is owned and the command moves its funds or positions,
    /// the operator's otherwise.
    fn account_command(&mut self, cmd: Command) {
        let account = cmd.account().expect("an account command");
        let moves = matches!(
            cmd,
            Command::Withdraw { .. }
                | Command::Open { .. }
                | Command::Close { .. }
                | Command::AdjustIsolatedMargin { .. }
        );
        let input = if moves && self.owned.contains(&account) {
            Input::Signed {
                at_ms: T0,
                signed: sign(account, next_nonce(&self.e, account), &cmd),
            }
        } else {
            Input::Command {
                at_ms: T0,
                command: cmd,
            }
        };
        self.push(input);
    }

    /// The market a close or margin adjustment of `t` acts on: one the
    /// account holds (an isolated one to adjust), picked by `t.market`, or
    /// `t`'s own where it holds none (and the command is refused).
    fn held_market(&self, t: &Trade) -> String {
        let held: Vec<&String> = self
            .e
            .state()
            .accounts
            .get(&t.account)
            .map(|a| {
                a.positions
                    .iter()
                    .filter(|(_, p)| t.act != Act::Adjust || p.isolated.is_some())
                    .map(|(m, _)| m)
                    .collect()
            })
            .unwrap_or_default();
        match held.len() {
            0 => MARKETS[t.market].into(),
            n => held[t.market % n].clone(),
        }
    }
}

/// The inputs of one case: configuration, book, then the price path.
/// `holders[i]` holds account `i + 1` (the operator where it is missing).
fn inputs(
    jump_ppm: u32,
    expiry_days: u64,
    cash: &[i128],
    eth_collateral: &[i128],
    holders: &[Holder],
    trades: &[Trade],
    steps: &[Step],
) -> Vec<Input> {
    let holder = |i: usize| holders.get(i).copied().unwrap_or(Holder::Operator);
    let mut b = Builder {
        e: engine(),
        v: Vec::new(),
        owned: (0..cash.len())
            .filter(|i| holder(*i).owned())
            .map(|i| i as u64 + 1)
            .collect(),
    };
    let cmd = |c| Input::Command {
        at_ms: T0,
        command: c,
    };
    for c in config(jump_ppm, expiry_days) {
        b.push(cmd(c));
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
    b.push(report(
        1,
        T0,
        &prices,
        false,
        [(status::OK, 0); 2],
        [0; 2],
        [0; 2],
    ));
    b.push(cmd(Command::FundInsurance { amount: 50 * M }));
    for (i, c) in cash.iter().enumerate() {
        let account = i as u64 + 1;
        let create = |owner| Command::CreateAccount { account, owner };
        let key = public_key(&secret(account));
        match holder(i) {
            Holder::Operator => b.push(cmd(create(None))),
            Holder::Owner => b.push(cmd(create(Some(key)))),
            Holder::SelfRegistered => b.push(Input::Signed {
                at_ms: T0,
                signed: sign(account, next_nonce(&b.e, account), &create(Some(key))),
            }),
        }
        // Deposits stay the operator's, owned accounts included.
        b.push(cmd(Command::Deposit {
            account,
            asset: "USD".into(),
            amount: *c,
        }));
        if let Some(e) = eth_collateral.get(i).filter(|e| **e > 0) {
            b.push(cmd(Command::Deposit {
                account,
                asset: "ETH".into(),
                amount: *e,
            }));
        }
    }
    for t in trades {
        let command = match t.act {
            Act::Open => {
                let margin = if t.isolated {
                    MarginMode::Isolated {
                        collateral: t.size_milli * M / 200,
                    }
                } else {
                    MarginMode::Cross
                };
                Command::Open {
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
                }
            }
            Act::Close => Command::Close {
                account: t.account,
                market: b.held_market(t),
                size: (t.size_milli % 2 == 0).then_some(t.size_milli * Q / 1_000),
                price: None,
            },
            Act::Withdraw => Command::Withdraw {
                account: t.account,
                asset: "USD".into(),
                amount: t.size_milli * M / 100,
            },
            Act::Adjust => Command::AdjustIsolatedMargin {
                account: t.account,
                market: b.held_market(t),
                delta: if t.long { 1 } else { -1 } * t.size_milli * M / 400,
            },
        };
        b.account_command(command);
    }
    // The price path is not applied here: no command follows it.
    let mut v = b.v;
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

/// A refusal for the command's own reasons (margin, balance, prices, no
/// such position), never for its authorization: every move of an owned
/// account is signed by its owner with the account's next nonce, for the
/// engine's committee, and nothing else needs a signature.
fn refused_for_the_command(input: &Input, err: &EngineError) -> Result<(), TestCaseError> {
    prop_assert!(
        !matches!(
            err,
            EngineError::Unauthorized { .. }
                | EngineError::NoCommitteeKey
                | EngineError::BadSignature { .. }
                | EngineError::StaleNonce { .. }
                | EngineError::NoOwner { .. }
                | EngineError::AccountMismatch { .. }
                | EngineError::NotSignable { .. }
                | EngineError::BadSignedCommand { .. }
                | EngineError::InvalidOwnerKey { .. }
        ),
        "refused for its authorization ({}): {:?}",
        err,
        input
    );
    Ok(())
}

/// Counts `input` in `signed` (applied signed commands per account) if
/// it is a signed one.
fn count_signed(signed: &mut BTreeMap<u64, u64>, input: &Input) {
    if let Input::Signed { signed: env, .. } = input {
        *signed.entry(env.account).or_default() += 1;
    }
}

/// Every account's nonce is the number of signed commands applied to it
/// (each was signed with the next nonce; a refused one moves no nonce).
fn nonces_count_signed(e: &Engine, signed: &BTreeMap<u64, u64>) -> Result<(), TestCaseError> {
    for (id, a) in &e.state().accounts {
        let applied = signed.get(id).copied().unwrap_or(0);
        prop_assert_eq!(
            a.nonce,
            applied,
            "account {}: nonce against signed commands applied",
            id
        );
    }
    Ok(())
}

fn before_money(s: &Snapshot) -> i128 {
    with_committee(Engine::from_snapshot(s.clone()).unwrap())
        .total_money()
        .unwrap()
}

fn before_collateral(s: &Snapshot) -> BTreeMap<String, i128> {
    collateral(&with_committee(Engine::from_snapshot(s.clone()).unwrap()))
}

/// Runs the inputs, checking the invariants after every price report.
fn run_checked(inputs: &[Input], ahead: bool) -> Result<Vec<u8>, TestCaseError> {
    let mut e = engine();
    if ahead {
        // Healths computed ahead on three threads from a single pending
        // unit (by default only from 256, on the machine's cores).
        e.set_health_ahead(1, 3);
    }
    let mut bytes = Vec::new();
    let mut money: Option<i128> = None;
    let mut coll: Option<BTreeMap<String, i128>> = None;
    let mut signed = BTreeMap::new();
    for input in inputs {
        let before = e.snapshot();
        let root_before = e.state_root();
        let r = e.apply(input);
        let events = match r {
            Ok(events) => events,
            Err(err) => {
                // Refused: nothing changed.
                prop_assert_eq!(&e.snapshot(), &before);
                prop_assert_eq!(e.state_root(), root_before);
                refused_for_the_command(input, &err)?;
                continue;
            }
        };
        count_signed(&mut signed, input);
        prop_assert!(e.account_index_matches_state(), "account index drifted");
        // The incrementally maintained root is the root of the state.
        let root = e.state_root();
        prop_assert_eq!(
            root,
            e.state_root_from_scratch(),
            "incremental root drifted"
        );
        bytes.extend(root);
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
        // in margin call that the scan puts in the first n is returned:
        // with the units this report examined still waiting for `settle`
        // (their ranks too), and after it.
        let all = units(&e);
        let with_positions = all.iter().filter(|u| u.3).count();
        prop_assert_eq!(
            e.closest_to_liquidation(with_positions + 1),
            e.closest_to_liquidation_scan(with_positions + 1)
        );
        e.settle();
        // Bands and ranks (from the healths the units were examined at)
        // are part of what a second run must reproduce.
        bytes.extend(serde_json::to_vec(&e.index_entries()).unwrap());
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
    nonces_count_signed(&e, &signed)?;
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
fn band_edges_hold(e: &mut Engine) -> Result<usize, TestCaseError> {
    bands_hold_at(e, 4)
}

/// [`band_edges_hold`] at the inner edges and `parts - 1` evenly spaced
/// prices between them (a band proven in steps must hold between the
/// steps too).
fn bands_hold_at(e: &mut Engine, parts: i128) -> Result<usize, TestCaseError> {
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

/// A long-gamma book whose health dips between the current price and
/// prices where it is higher again (see [`long_gamma_book`]).
struct Dip {
    /// The book at the current price, before the withdrawal.
    e: Engine,
    feed: &'static str,
    /// Price at the dip's low.
    low: i128,
    /// Account 1's equity above initial at the current price.
    h0: i128,
    /// How far below `h0` the dip goes.
    depth: i128,
}

/// Account 1 holds `size_milli` thousandths of long options, BTC-C calls
/// (strike 100, Black-76) or with `put` ETH-P puts (strike 10,
/// Black-Scholes-Merton), and a perpetual on the same feed for
/// `hedge_ppm` of the size against the options' delta, opened at the
/// strike with 5,000 USD; then the price moves by `move_ppm`. The options'
/// gamma makes the health convex near the money: from the current price
/// it falls toward the strike (or past it, to where the hedge's delta
/// matches the options') and rises again. Returns the deepest such dip on
/// either side, with health back at the current level within 30 %
/// (measured at 1 % steps); `None` without one.
fn long_gamma_book(
    put: bool,
    expiry_days: u64,
    size_milli: i128,
    hedge_ppm: i128,
    move_ppm: i128,
) -> Option<Dip> {
    long_gamma_book_with(put, expiry_days, size_milli, hedge_ppm, move_ppm, false)
}

/// A smile with its least vol, 60 %, at the option's strike and ten times
/// that in the wings, on two slices that bracket every expiry the tests
/// draw: the option's vol is the surface's least point wherever the clock
/// is, and any other point would be far larger.
fn smile_surface(strike: i128) -> VolSurface {
    let slice = |days: u64| VolSlice {
        expiry_ms: T0 + days * 86_400_000,
        points: vec![
            VolPoint {
                strike: strike / 2,
                vol_ppm: 6_000_000,
            },
            VolPoint {
                strike,
                vol_ppm: 600_000,
            },
            VolPoint {
                strike: strike * 2,
                vol_ppm: 6_000_000,
            },
        ],
    };
    VolSurface {
        slices: vec![slice(1), slice(60)],
    }
}

/// `inputs` with the option markets marked from their feed's
/// [`smile_surface`] instead of a fixed vol.
fn on_surface(inputs: Vec<Input>) -> Vec<Input> {
    let strike_of = |feed: &str| if feed == "BTC-USD" { 100 * P } else { 10 * P };
    inputs
        .into_iter()
        .map(|input| match input {
            Input::Command {
                at_ms,
                command: Command::ConfigureFeed(mut f),
            } => {
                f.vol_surface = Some(smile_surface(strike_of(&f.feed)));
                Input::Command {
                    at_ms,
                    command: Command::ConfigureFeed(f),
                }
            }
            Input::Command {
                at_ms,
                command: Command::ConfigureMarket(mut m),
            } => {
                if let MarketKind::Option { vol, .. } = &mut m.kind {
                    *vol = VolSource::Surface;
                }
                Input::Command {
                    at_ms,
                    command: Command::ConfigureMarket(m),
                }
            }
            other => other,
        })
        .collect()
}

/// [`long_gamma_book`], with `surface` the options marked from
/// [`smile_surface`].
fn long_gamma_book_with(
    put: bool,
    expiry_days: u64,
    size_milli: i128,
    hedge_ppm: i128,
    move_ppm: i128,
    surface: bool,
) -> Option<Dip> {
    let (option, perp, feed, strike) = if put {
        (4, 1, "ETH-USD", 10 * P)
    } else {
        (3, 0, "BTC-USD", 100 * P)
    };
    let trade = |market, long, size_milli| Trade {
        act: Act::Open,
        account: 1,
        market,
        long,
        size_milli,
        isolated: false,
        fill_ppm: 0,
    };
    let mut trades = vec![trade(option, true, size_milli)];
    let hedge = size_milli * hedge_ppm / 1_000_000;
    if hedge > 0 {
        // A call's delta is positive, a put's negative.
        trades.push(trade(perp, put, hedge));
    }
    let mut e = engine();
    let book = inputs(
        10_000_000,
        expiry_days,
        &[5_000 * M],
        &[],
        &[Holder::Operator],
        &trades,
        &[],
    );
    let book = if surface { on_surface(book) } else { book };
    for input in book {
        let _ = e.apply(&input);
    }
    let p0 = strike * (1_000_000 + move_ppm) / 1_000_000;
    let e = moved(&e, feed, p0)?;
    let above_initial = |e: &Engine| {
        let h = e.account_view(1).ok()?.first()?.health;
        Some(h.equity - h.initial)
    };
    let h0 = above_initial(&e)?;
    let (mut depth, mut low) = (0, p0);
    for dir in [1, -1] {
        let (mut least, mut at) = (h0, p0);
        for k in 1..=30 {
            let q = p0 * (100 + dir * k) / 100;
            let h = above_initial(&moved(&e, feed, q)?)?;
            if h >= h0 {
                if h0 - least > depth {
                    (depth, low) = (h0 - least, at);
                }
                break;
            }
            if h < least {
                (least, at) = (h, q);
            }
        }
    }
    (depth > 0).then_some(Dip {
        e,
        feed,
        low,
        h0,
        depth,
    })
}

impl Dip {
    /// The book after account 1 withdraws down to `frac_ppm` of the dip's
    /// depth above initial: thin at the current price, below initial at
    /// the dip's low, above it past the dip. Two probes on either side of
    /// the dip hold, so only the curvature bound keeps a band from
    /// spanning it. `None` when nothing is left to withdraw.
    fn thin(&self, frac_ppm: i128) -> Option<Engine> {
        let amount = self.h0 - self.depth * frac_ppm / 1_000_000;
        if amount <= 0 {
            return None;
        }
        let mut e = self.e.clone();
        let at_ms = e.now_ms();
        e.apply(&Input::Command {
            at_ms,
            command: Command::Withdraw {
                account: 1,
                asset: "USD".into(),
                amount,
            },
        })
        .ok()?;
        Some(e)
    }
}

/// The unit is rightly classed after a report that moves `feed` to
/// `price`: examined there unless a band holds it.
fn holds_at(e: &Engine, feed: &str, price: i128) -> Result<(), TestCaseError> {
    let next = moved(e, feed, price).ok_or_else(|| TestCaseError::fail("report refused"))?;
    index_missed_nobody(&next)
        .map_err(|err| TestCaseError::fail(format!("{feed} moved to {price}: {err}")))
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
    let mut fast = engine();
    let mut slow = engine();
    slow.set_exhaustive_checks(true);
    // Every unit on every report, healths computed ahead on three threads:
    // liquidations and deleveraging mid-pass leave other units' healths
    // stale (tests/engine.rs has a book where they do).
    slow.set_health_ahead(1, 3);
    let mut decisions = 0usize;
    let mut signed = BTreeMap::new();
    for (i, input) in inputs.iter().enumerate() {
        let a = fast.apply(input);
        let b = slow.apply(input);
        prop_assert_eq!(
            a.is_ok(),
            b.is_ok(),
            "input {} accepted by one engine only",
            i
        );
        let (a, b) = match (a, b) {
            (Ok(a), Ok(b)) => (a, b),
            (Err(err), _) => {
                refused_for_the_command(input, &err)?;
                continue;
            }
            _ => continue,
        };
        count_signed(&mut signed, input);
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
    nonces_count_signed(&fast, &signed)?;
    nonces_count_signed(&slow, &signed)?;
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
        holders in holders(),
        trades in prop::collection::vec(trade(), 4..40),
        steps in prop::collection::vec(step(), 1..24),
    ) {
        let inputs = inputs(jump, expiry_days, &cash, &eth, &holders, &trades, &steps);
        let (fast, slow, _) = compare_with_exhaustive(&inputs)?;
        prop_assert!(fast <= slow, "index examined more ({fast}) than exhaustive ({slow})");
    }

    #[test]
    fn index_matches_exhaustive_reference_as_the_ema_moves(
        cash in prop::collection::vec(5i128 * M..=300 * M, 8),
        eth in prop::collection::vec(10 * Q..=200 * Q, 8),
        holders in holders(),
        trades in prop::collection::vec(trade(), 4..40),
        steps in prop::collection::vec(ema_step(), 1..40),
    ) {
        let inputs = inputs(10_000_000, 20, &cash, &eth, &holders, &trades, &steps);
        compare_with_exhaustive(&inputs)?;
    }

    #[test]
    fn index_matches_exhaustive_reference_as_options_decay(
        expiry_days in 1u64..=4,
        cash in prop::collection::vec(50i128 * M..=2_000 * M, 8),
        holders in holders(),
        trades in prop::collection::vec(trade(), 4..40),
        steps in prop::collection::vec(calm_step(), 1..60),
    ) {
        let inputs = inputs(10_000_000, expiry_days, &cash, &[], &holders, &trades, &steps);
        compare_with_exhaustive(&inputs)?;
    }

    #[test]
    fn invariants_hold_on_random_books(
        jump in prop::sample::select(vec![150_000u32, 10_000_000]),
        cash in prop::collection::vec(50i128 * M..=2_000 * M, 8),
        eth in prop::collection::vec(0i128..=50 * Q, 8),
        holders in holders(),
        trades in prop::collection::vec(trade(), 4..30),
        steps in prop::collection::vec(step(), 1..16),
    ) {
        let inputs = inputs(jump, 20, &cash, &eth, &holders, &trades, &steps);
        let a = run_checked(&inputs, false)?;
        // Determinism: a second run gives the same events and roots, also
        // with the healths computed ahead over threads.
        let b = run_checked(&inputs, true)?;
        prop_assert_eq!(a, b);
    }

    #[test]
    fn every_band_edge_holds_from_inside(
        jump in prop::sample::select(vec![150_000u32, 10_000_000]),
        expiry_days in 1u64..=20,
        cash in prop::collection::vec(50i128 * M..=2_000 * M, 8),
        eth in prop::collection::vec(0i128..=50 * Q, 8),
        holders in holders(),
        trades in prop::collection::vec(trade(), 4..30),
        steps in prop::collection::vec(step(), 1..8),
    ) {
        let inputs = inputs(jump, expiry_days, &cash, &eth, &holders, &trades, &steps);
        let mut e = engine();
        for input in &inputs {
            if e.apply(input).is_ok() && matches!(input, Input::Prices(_)) {
                band_edges_hold(&mut e)?;
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
        holder in holder(),
        steps in prop::collection::vec(step(), 1..5),
    ) {
        let trades = [
            Trade {
                act: Act::Open,
                account: 1,
                market: 3,
                long: option_long,
                size_milli: option_milli,
                isolated: false,
                fill_ppm: 0,
            },
            Trade {
                act: Act::Open,
                account: 1,
                market: 0,
                long: hedge_long,
                size_milli: (option_milli * hedge_ppm / 1_000_000).max(1),
                isolated: false,
                fill_ppm: 0,
            },
        ];
        let book = |steps| inputs(150_000, expiry_days, &[5_000 * M], &[], &[holder], &trades, steps);
        let setup = book(&[]);
        let mut all = book(&steps);
        let mut e = engine();
        for input in &setup {
            let _ = e.apply(input);
        }
        // Near the margin-call and liquidation levels, where bands are
        // narrow and their edges matter.
        let h = e.account_view(1).unwrap()[0].health;
        let keep = h.maintenance + (h.initial - h.maintenance) * left_ppm / 1_000_000;
        let amount = (h.equity - keep).min(h.equity - h.initial).max(0);
        let withdraw = Command::Withdraw {
            account: 1,
            asset: "USD".into(),
            amount,
        };
        all.insert(
            setup.len(),
            if holder.owned() {
                Input::Signed { at_ms: T0, signed: sign(1, next_nonce(&e, 1), &withdraw) }
            } else {
                Input::Command { at_ms: T0, command: withdraw }
            },
        );
        let mut e = engine();
        for input in &all {
            if e.apply(input).is_ok() && matches!(input, Input::Prices(_)) {
                bands_hold_at(&mut e, 64)?;
            }
        }
    }

    #[test]
    fn restore_mid_stream_reproduces_the_events(
        cash in prop::collection::vec(50i128 * M..=2_000 * M, 8),
        holders in holders(),
        trades in prop::collection::vec(trade(), 4..30),
        steps in prop::collection::vec(step(), 2..12),
        cut in 0.0f64..1.0,
    ) {
        let inputs = inputs(150_000, 20, &cash, &[], &holders, &trades, &steps);
        let cut = ((inputs.len() as f64) * cut) as usize;
        let mut live = engine();
        let mut tail_live = Vec::new();
        let mut restored: Option<Engine> = None;
        let mut tail_restored = Vec::new();
        for (i, input) in inputs.iter().enumerate() {
            if i == cut {
                let (s, idx) = live.snapshot_with_index();
                // Through JSON, as the daemon would store it.
                let s: Snapshot = serde_json::from_slice(&serde_json::to_vec(&s).unwrap()).unwrap();
                let idx: Vec<IndexedUnit> = serde_json::from_slice(&serde_json::to_vec(&idx).unwrap()).unwrap();
                restored = Some(with_committee(Engine::restore(s, &idx).unwrap()));
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

    /// Band work waits for `Engine::settle` (the node runs it after a
    /// report's root is out): an engine that settles after every input, one
    /// that never does (its reports and clock-moving commands settle first),
    /// one that settles now and then, and one that settles a few units
    /// after each input (`settle_some`) give the same events, state and
    /// root after every input, examine the same units, and end with the
    /// same trigger index. Commands come between reports, at a report's
    /// time (as ordered commands do) and later (moving the clock).
    #[test]
    fn settling_early_late_or_never_changes_nothing(
        cash in prop::collection::vec(50i128 * M..=2_000 * M, 8),
        eth in prop::collection::vec(0i128..=50 * Q, 8),
        holders in holders(),
        trades in prop::collection::vec(trade(), 4..30),
        steps in prop::collection::vec(step(), 2..14),
        between in prop::collection::vec((trade(), 0u64..3), 0..40),
        every in 2usize..5,
        step in 1usize..4,
    ) {
        let base = inputs(150_000, 20, &cash, &eth, &holders, &trades, &steps);
        // Commands after the reports of the price path (plain, unsigned:
        // on an owned account they are refused alike by all three).
        let mut inputs = Vec::new();
        let mut extra = between.iter();
        let mut reports = 0;
        for input in base {
            let at = match &input {
                Input::Prices(r) => Some(r.timestamp_ms),
                _ => None,
            };
            inputs.push(input);
            let Some(at) = at else { continue };
            reports += 1;
            if reports == 1 {
                continue;
            }
            for (t, when) in extra.by_ref().take(3) {
                let command = match t.act {
                    Act::Close => Command::Close {
                        account: t.account,
                        market: MARKETS[t.market].into(),
                        size: None,
                        price: None,
                    },
                    Act::Withdraw | Act::Adjust => Command::Withdraw {
                        account: t.account,
                        asset: "USD".into(),
                        amount: t.size_milli * M / 100,
                    },
                    Act::Open => Command::Open {
                        account: t.account,
                        market: MARKETS[t.market].into(),
                        side: if t.long { Side::Long } else { Side::Short },
                        size: t.size_milli * Q / 4_000,
                        margin: MarginMode::Cross,
                        price: None,
                    },
                };
                inputs.push(Input::Command { at_ms: at + when * 400, command });
            }
        }
        let mut eager = engine();
        let mut lazy = engine();
        let mut sometimes = engine();
        // Settles `step` units after each input (`settle_some`): part of
        // the work, the rest left to the next input or step.
        let mut stepwise = engine();
        let mut most_waiting = 0;
        for (i, input) in inputs.iter().enumerate() {
            let a = eager.apply(input);
            eager.settle();
            prop_assert_eq!(eager.unsettled_units(), 0);
            let b = lazy.apply(input);
            most_waiting = most_waiting.max(lazy.unsettled_units());
            let c = sometimes.apply(input);
            if i % every == 0 {
                sometimes.settle();
            }
            let d = stepwise.apply(input);
            let before = stepwise.unsettled_units();
            let more = stepwise.settle_some(step);
            prop_assert_eq!(stepwise.unsettled_units(), before.saturating_sub(step));
            prop_assert_eq!(more, stepwise.unsettled_units() > 0);
            let bytes = |r: &Result<Vec<EventRecord>, EngineError>| match r {
                Ok(ev) => serde_json::to_vec(ev).unwrap(),
                Err(e) => e.to_string().into_bytes(),
            };
            prop_assert_eq!(bytes(&a), bytes(&b), "input {}: events differ (never settled)", i);
            prop_assert_eq!(bytes(&a), bytes(&c), "input {}: events differ (settled now and then)", i);
            prop_assert_eq!(bytes(&a), bytes(&d), "input {}: events differ (settled in steps)", i);
            prop_assert_eq!(eager.examined_units(), stepwise.examined_units(), "input {}", i);
            prop_assert_eq!(eager.state_root(), stepwise.state_root(), "input {}", i);
            prop_assert_eq!(eager.examined_units(), lazy.examined_units(), "input {}", i);
            prop_assert_eq!(eager.examined_units(), sometimes.examined_units(), "input {}", i);
            prop_assert_eq!(eager.state_root(), lazy.state_root(), "input {}", i);
            prop_assert_eq!(eager.state_root(), sometimes.state_root(), "input {}", i);
        }
        prop_assert_eq!(eager.snapshot(), lazy.snapshot());
        // The lazy engine did leave band work waiting.
        prop_assert!(most_waiting > 0);
        prop_assert_eq!(eager.index_entries(), lazy.index_entries());
        prop_assert_eq!(eager.index_entries(), sometimes.index_entries());
        prop_assert_eq!(eager.index_entries(), stepwise.index_entries());
        prop_assert_eq!(lazy.unsettled_units(), 0);
    }

    /// Restart = the latest stored snapshot plus the inputs after it: the
    /// same events, the same state, the same root and the same snapshot
    /// bytes as replaying every input from the start.
    #[test]
    fn restart_from_stored_snapshot_matches_full_replay(
        cash in prop::collection::vec(50i128 * M..=2_000 * M, 8),
        eth in prop::collection::vec(0i128..=50 * Q, 8),
        holders in holders(),
        trades in prop::collection::vec(trade(), 4..30),
        steps in prop::collection::vec(step(), 2..12),
        cut in 0.0f64..1.0,
    ) {
        let inputs = inputs(150_000, 20, &cash, &eth, &holders, &trades, &steps);
        let cut = ((inputs.len() as f64) * cut) as usize;
        let mut full = engine();
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
        // The committee key is context, not in the snapshot: given again.
        let mut restarted = with_committee(Engine::decode_snapshot(&bytes).unwrap());
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
        holders in holders(),
        trades in prop::collection::vec(trade(), 4..20),
        steps in prop::collection::vec(step(), 1..6),
        pick in 0usize..8,
        change in 0u8..5,
    ) {
        use sibyl_margin::state_root::{verify_account_proof, AccountProof};
        let inputs = inputs(150_000, 20, &cash, &[], &holders, &trades, &steps);
        let mut e = engine();
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
            // Except one cut: an owned account's leaf less its
            // `0x01 ‖ owner:32 ‖ nonce:u64` tail is the leaf of the same
            // account without an owner (another state, another hash).
            if let Ok(d) = sibyl_margin::state_root::AccountState::decode(&bytes[..cut]) {
                let mut unowned = state.clone();
                unowned.state.owner = None;
                unowned.state.nonce = 0;
                prop_assert!(
                    state.state.owner.is_some() && cut + 41 == bytes.len() && d == unowned,
                    "a {}-byte cut of account {}'s leaf decodes: {:?}",
                    cut,
                    id,
                    d
                );
            }
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
        let mut changed = with_committee(Engine::from_snapshot(s).unwrap());
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

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

    /// Long-gamma books with thin margin at the current price and a dip
    /// below initial toward (or across) the strike ([`long_gamma_book`]):
    /// the dip's low stays outside the band at six margins, and every band
    /// holds at 128 points across it at one of them. Two probes on either
    /// side of the dip both hold, so only the curvature bound keeps the
    /// band from spanning it; a curvature too small claims the dip (the
    /// hedged books of `option_hedges_hold_their_bands_throughout` are too
    /// flat to tell).
    #[test]
    fn long_gamma_dips_stay_outside_the_bands(
        (put, expiry_days, size_milli, hedge_ppm, move_ppm, frac_ppm) in dip_case(),
    ) {
        if let Some(dip) = long_gamma_book(put, expiry_days, size_milli, hedge_ppm, move_ppm) {
            dip_stays_outside(&dip, frac_ppm)?;
        }
    }
}

/// A long-gamma book to draw ([`long_gamma_book`]: put or call, days to
/// expiry, size, hedge, the price's distance from the strike) and the
/// margin to leave for the whole-band check (ppm of the dip's depth).
fn dip_case() -> impl Strategy<Value = (bool, u64, i128, i128, i128, i128)> {
    (
        any::<bool>(),
        3u64..=20,
        2_000i128..=20_000,
        0i128..=1_000_000,
        -200_000i128..=200_000,
        400_000i128..1_000_000,
    )
}

/// The dip's low stays outside the band at margins from half its depth to
/// nearly all of it (the more margin, the further a curvature too small
/// reaches), and the whole band holds at 128 points at `frac_ppm`.
fn dip_stays_outside(dip: &Dip, frac_ppm: i128) -> Result<(), TestCaseError> {
    for frac_ppm in [500_000, 750_000, 900_000, 970_000, 990_000] {
        if let Some(e) = dip.thin(frac_ppm) {
            holds_at(&e, dip.feed, dip.low)?;
        }
    }
    if let Some(mut e) = dip.thin(frac_ppm) {
        holds_at(&e, dip.feed, dip.low)?;
        bands_hold_at(&mut e, 128)?;
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// `long_gamma_dips_stay_outside_the_bands` with the options marked
    /// from a vol surface ([`smile_surface`]): the curvature bound must
    /// take the surface's least vol (the option's own here), not another
    /// point. It fails if the bound takes the largest point (ten times the
    /// least: the curvature ten times too small).
    #[test]
    fn long_gamma_dips_on_a_vol_surface_stay_outside_the_bands(
        (put, expiry_days, size_milli, hedge_ppm, move_ppm, frac_ppm) in dip_case(),
    ) {
        if let Some(dip) =
            long_gamma_book_with(put, expiry_days, size_milli, hedge_ppm, move_ppm, true)
        {
            // The surface is what marks the option: its vol at the strike.
            let e = &dip.e;
            let market = if put { "ETH-P" } else { "BTC-C" };
            let on_surface = matches!(
                &e.state().markets[market].config.kind,
                MarketKind::Option { vol: VolSource::Surface, .. }
            );
            prop_assert!(on_surface, "{} is not marked from the surface", market);
            dip_stays_outside(&dip, frac_ppm)?;
        }
    }
}

/// Two fixed [`long_gamma_book`]s (a call hedged short, a put hedged
/// long, 10 contracts, 10 days, the price 10 % off the strike, margin at
/// 90 % of the dip's depth), so the curvature check does not rest on what
/// the generator draws: each fails with the curvature bound shrunk 10x.
#[test]
fn long_gamma_dip_stays_outside_the_band() {
    for (put, move_ppm) in [(false, -100_000), (true, 100_000)] {
        let dip = long_gamma_book(put, 10, 10_000, 600_000, move_ppm).expect("a dip");
        let mut e = dip.thin(900_000).expect("margin to withdraw");
        let feed = dip.feed;
        // The premises: below initial at the dip's low, and a band that
        // reaches more than half way to it, which takes the curvature
        // bound (the slope bound alone reaches about a fifth of the way).
        let h = moved(&e, feed, dip.low).unwrap().account_view(1).unwrap()[0].health;
        assert!(h.equity < h.initial, "{feed} at {}: {h:?}", dip.low);
        let p0 = e.state().feeds[feed].last.as_ref().unwrap().price;
        let (_, lo, hi) = e.index_entries()[0].bands[0].clone();
        let reach = if dip.low < p0 { p0 - lo } else { hi - p0 };
        assert!(
            2 * reach > (dip.low - p0).abs(),
            "{feed} band [{lo}, {hi}] from {p0} toward {}",
            dip.low
        );
        holds_at(&e, feed, dip.low).unwrap();
        bands_hold_at(&mut e, 512).unwrap();
    }
}

/// `input` (signed) is refused as stale (`AccountExists` for a
/// self-registration: the account it creates is there) and the engine's
/// state, snapshot bytes and root are what they were.
fn stale_changes_nothing(e: &mut Engine, input: &Input) -> Result<(), TestCaseError> {
    let Input::Signed { signed: env, .. } = input else {
        return Err(TestCaseError::fail("not a signed input"));
    };
    let before = e.snapshot();
    let bytes = e.encode_snapshot().unwrap();
    let root = e.state_root();
    let err = e.apply(input).err();
    let creates = matches!(env.parse(), Ok(Command::CreateAccount { .. }));
    prop_assert!(
        match &err {
            Some(EngineError::StaleNonce {
                account,
                nonce,
                current,
            }) => !creates && *account == env.account && *nonce == env.nonce && *nonce <= *current,
            Some(EngineError::AccountExists { account }) => creates && *account == env.account,
            _ => false,
        },
        "nonce {} on account {}: {:?}",
        env.nonce,
        env.account,
        err
    );
    prop_assert_eq!(e.state_root(), root);
    prop_assert_eq!(e.encode_snapshot().unwrap(), bytes);
    prop_assert_eq!(e.snapshot(), before);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// Every signed input the book applied is refused when it comes again
    /// (the same envelope), and so is the owner's fresh, validly signed
    /// envelope with a nonce not above the account's last; neither changes
    /// the state, the snapshot bytes or the root. The same command with the
    /// next nonce passes the checks (the nonce was the reason).
    #[test]
    fn replayed_and_stale_signed_commands_change_nothing(
        cash in prop::collection::vec(50i128 * M..=2_000 * M, 8),
        holders in holders(),
        trades in prop::collection::vec(trade(), 4..30),
        steps in prop::collection::vec(step(), 0..4),
        back in any::<u64>(),
    ) {
        let mut holders = holders;
        if !holders.iter().any(|h| h.owned()) {
            holders[0] = Holder::SelfRegistered;
        }
        let inputs = inputs(150_000, 20, &cash, &[], &holders, &trades, &steps);
        let mut e = engine();
        let mut applied = Vec::new();
        for input in &inputs {
            if e.apply(input).is_ok() && matches!(input, Input::Signed { .. }) {
                applied.push(input.clone());
            }
        }
        for input in &applied {
            stale_changes_nothing(&mut e, input)?;
        }
        for (i, _) in holders.iter().enumerate().filter(|(_, h)| h.owned()) {
            let account = i as u64 + 1;
            let last = e.state().accounts[&account].nonce;
            let cmd = Command::Withdraw { account, asset: "USD".into(), amount: 1 };
            // 0 up to the last nonce itself.
            let stale = sign(account, back % (last + 1), &cmd);
            let at_ms = e.now_ms();
            stale_changes_nothing(&mut e, &Input::Signed { at_ms, signed: stale })?;
            prop_assert_eq!(e.check_signed(&sign(account, last + 1, &cmd)).ok(), Some(cmd));
        }
    }
}

/// Owned accounts trade in the generated books: over a fixed run of them
/// (no price path; until each kind has applied, at most 256 books),
/// owners' signed registrations, opens, closes, withdrawals and margin
/// adjustments all apply somewhere, nothing is
/// refused for its authorization, and every nonce counts its account's
/// applied signed commands. Fails if signing broke (every signed command
/// refused) or the generators stopped making owned accounts or their
/// commands.
#[test]
fn owned_accounts_trade_in_generated_books() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    let mut runner = TestRunner::deterministic();
    let book = (
        prop::collection::vec(50i128 * M..=2_000 * M, 8),
        prop::collection::vec(0i128..=50 * Q, 8),
        holders(),
        prop::collection::vec(trade(), 4..40),
    );
    const KINDS: [&str; 5] = [
        "create_account",
        "open",
        "close",
        "withdraw",
        "adjust_isolated_margin",
    ];
    let mut applied: BTreeMap<&'static str, usize> = BTreeMap::new();
    let mut owned_positions = 0;
    let mut books = 0;
    while books < 256 && !(owned_positions > 0 && KINDS.iter().all(|k| applied.contains_key(k))) {
        books += 1;
        let (cash, eth, holders, trades) = book.new_tree(&mut runner).unwrap().current();
        let mut e = engine();
        let mut signed = BTreeMap::new();
        for input in inputs(150_000, 20, &cash, &eth, &holders, &trades, &[]) {
            match e.apply(&input) {
                Ok(_) => {
                    if let Input::Signed { signed: env, .. } = &input {
                        *applied.entry(env.parse().unwrap().kind()).or_default() += 1;
                    }
                    count_signed(&mut signed, &input);
                }
                Err(err) => refused_for_the_command(&input, &err).unwrap(),
            }
        }
        nonces_count_signed(&e, &signed).unwrap();
        owned_positions += e
            .state()
            .accounts
            .values()
            .filter(|a| a.owner.is_some())
            .map(|a| a.positions.len())
            .sum::<usize>();
    }
    for kind in KINDS {
        assert!(
            applied.contains_key(kind),
            "no signed {kind} applied in {books} books: {applied:?}"
        );
    }
    assert!(owned_positions > 0, "no owned account holds a position");
    eprintln!(
        "{books} books: signed commands applied {applied:?}; {owned_positions} owned positions"
    );
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
        let mut fast = engine();
        let mut slow = engine();
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
