use super::*;
use crate::replay::replay_db;
use sibyl_aggregator::report::{ConfigDigest, FeedId, ReportHeader, ReportLeaf};
use sibyl_margin::{DemoParams, demo_book_with};
use std::time::Duration;

const SCALE: i128 = 100_000_000;

/// The committee key the test services are started with.
fn committee() -> CommitteeKey {
    CommitteeKey::new(vec![0xAB; 32]).unwrap()
}

fn feeds() -> Vec<FeedParams> {
    ["BTC-USD", "ETH-USD", "SOL-USD"]
        .iter()
        .map(|id| FeedParams {
            id: FeedId::new(*id).expect("feed id"),
            decimals: 8,
            deviation_bps: 10,
            heartbeat_ms: 60_000,
            policy: Default::default(),
        })
        .collect()
}

/// A running service: its store, handle, report sender and shutdown.
type Service4 = (
    Store,
    MarginHandle,
    broadcast::Sender<Arc<SignedReport>>,
    watch::Sender<bool>,
);

/// Starts a service without a demo book over the store at `path`.
async fn open(path: &std::path::Path, every: u64, ordered_by: Option<u16>) -> Service4 {
    open_with(
        path,
        MarginOptions {
            demo: None,
            snapshot_every_rounds: every,
            ordered_by,
            committee: Some(committee()),
        },
    )
    .await
}

/// Starts a service with `options` over the store at `path`.
async fn open_with(path: &std::path::Path, options: MarginOptions) -> Service4 {
    let store = Store::open(path).expect("store");
    let (reports_tx, reports_rx) = broadcast::channel(16);
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let h = start_with(&store, feeds(), reports_rx, shutdown_rx, options)
        .await
        .expect("start");
    (store, h, reports_tx, shutdown_tx)
}

fn report(round: u64, ts: u64, prices: &[(&str, i128)]) -> Arc<SignedReport> {
    let mut leaves: Vec<ReportLeaf> = prices
        .iter()
        .map(|(f, p)| ReportLeaf::basic(FeedId::new(*f).expect("feed id"), *p, 1_000, 3, ts))
        .collect();
    leaves.sort_by(|a, b| a.feed_id.as_str().cmp(b.feed_id.as_str()));
    Arc::new(SignedReport {
        header: ReportHeader {
            version: 1,
            config_digest: ConfigDigest([0; 32]),
            round,
            timestamp_ms: ts,
            merkle_root: [0; 32],
            margin_root: [0; 32],
        },
        leaves,
        signatures: Default::default(),
        commands: Vec::new(),
        margin_state: None,
    })
}

async fn wait_inputs(h: &MarginHandle, n: u64) {
    for _ in 0..500 {
        if h.read().next_input >= n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the margin service did not reach {n} inputs");
}

/// Runs the service over a seeded demo book, a falling market and a few
/// admin commands; returns the database path (service stopped).
async fn build_db(dir: &std::path::Path) -> (std::path::PathBuf, i128, u64) {
    build_db_with(dir, 0).await
}

/// `build_db` with a snapshot every `every` rounds.
async fn build_db_with(dir: &std::path::Path, every: u64) -> (std::path::PathBuf, i128, u64) {
    let path = dir.join("node.sqlite");
    let (store, h, reports_tx, shutdown_tx) = open(&path, every, None).await;
    let params = DemoParams::default();
    let book = demo_book_with(7, 40, &params);
    let seeded = seed(&h, book.inputs.clone()).await;
    assert_eq!(seeded, book.inputs.len() as u64);
    // The service's engine is the demo book's engine, input for input.
    assert_eq!(
        h.read().engine.insurance_fund(),
        book.engine.insurance_fund()
    );
    let mut n = seeded;
    let (mut btc, mut eth, mut sol) = (60_000 * SCALE, 3_000 * SCALE, 150 * SCALE);
    for i in 1..=12u64 {
        btc = btc * 97 / 100;
        eth = eth * 97 / 100;
        sol = sol * 96 / 100;
        let r = report(
            params.round + i,
            params.start_ms + i * 60_000,
            &[
                ("BTC-USD", btc),
                ("ETH-USD", eth),
                ("SOL-USD", sol),
                ("XAU-USD", 1),
            ],
        );
        // The service takes reports from the store, in round order.
        store
            .writer
            .insert_report((*r).clone())
            .await
            .expect("store the report");
        let _ = reports_tx.send(r);
        n += 1;
        wait_inputs(&h, n).await;
    }
    // An admin command is stored as an input too; a refusal is typed and
    // stores nothing.
    h.command(Command::CreateAccount {
        account: 9_999,
        owner: None,
    })
    .await
    .expect("create");
    let refused = h
        .command(Command::Withdraw {
            account: 123_456,
            asset: "USD".into(),
            amount: 1,
        })
        .await;
    assert!(
        matches!(refused, Err(MarginError::Engine(_))),
        "{refused:?}"
    );
    n += 1;
    assert_eq!(h.read().next_input, n);
    let fund = h.read().engine.insurance_fund();
    let _ = shutdown_tx.send(true);
    drop(store);
    (path, fund, n)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_db_replays_identically_and_tampering_is_found() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (path, fund, n_inputs) = build_db(dir.path()).await;

    let r = tokio::task::spawn_blocking({
        let path = path.clone();
        move || replay_db(&path, Some(&committee()))
    })
    .await
    .expect("join")
    .expect("replay");
    assert_eq!(r.divergence, None);
    assert_eq!(r.inputs, n_inputs);
    assert!(
        r.events > r.inputs,
        "events {} inputs {}",
        r.events,
        r.inputs
    );
    assert_eq!(r.insurance_fund, fund);

    // Events are stored gapless from 0.
    let conn = rusqlite::Connection::open(&path).expect("open");
    let (min, max, count): (i64, i64, i64) = conn
        .query_row(
            "SELECT MIN(seq), MAX(seq), COUNT(*) FROM margin_events",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .expect("query");
    assert_eq!((min, max + 1), (0, count));

    // Tamper with one event: the replay names it as the first divergence.
    let target = count / 2;
    let body: String = conn
        .query_row(
            "SELECT body FROM margin_events WHERE seq = ?1",
            [target],
            |r| r.get(0),
        )
        .expect("body");
    let mut v: serde_json::Value = serde_json::from_str(&body).expect("json");
    v["at_ms"] = serde_json::json!(v["at_ms"].as_u64().expect("at_ms") + 1);
    conn.execute(
        "UPDATE margin_events SET body = ?1 WHERE seq = ?2",
        rusqlite::params![v.to_string(), target],
    )
    .expect("tamper");
    drop(conn);
    let r = replay_db(&path, Some(&committee())).expect("replay");
    let d = r.divergence.expect("divergence");
    assert_eq!(d.seq, target as u64);
    assert_eq!(d.expected.as_deref(), Some(v.to_string().as_str()));
    assert_eq!(d.got.as_deref(), Some(body.as_str()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_restores_its_engine_from_the_store() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (path, fund, n_inputs) = build_db(dir.path()).await;
    let store = Store::open(&path).expect("store");
    let (_tx, rx) = broadcast::channel(4);
    let (_stx, srx) = watch::channel(false);
    let h = start(&store, feeds(), rx, srx).await.expect("restart");
    assert_eq!(h.read().next_input, n_inputs);
    assert_eq!(h.read().engine.insurance_fund(), fund);
    // The next command continues the sequences without a gap.
    h.command(Command::CreateAccount {
        account: 10_000,
        owner: None,
    })
    .await
    .expect("create");
    let r = tokio::task::spawn_blocking(move || replay_db(&path, Some(&committee())))
        .await
        .expect("join")
        .expect("replay");
    assert_eq!(r.divergence, None);
    assert_eq!(r.inputs, n_inputs + 1);
}

/// A restart loads the latest stored snapshot and replays only the inputs
/// after it, and ends in exactly the state (and root) a full replay of every
/// stored input gives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_from_snapshot_equals_full_replay() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (path, fund, n_inputs) = build_db_with(dir.path(), 5).await;
    let store = Store::open(&path).expect("store");
    let (covered, _) = store
        .writer
        .write(|db| db.margin_snapshot())
        .await
        .expect("read")
        .expect("a snapshot was stored");
    assert!(covered > 0 && covered < n_inputs, "{covered} of {n_inputs}");
    let all = store
        .writer
        .write(|db| db.margin_inputs())
        .await
        .expect("inputs");
    let mut full = restore(Some(&committee()), &all).expect("full replay");
    let (_tx, rx) = broadcast::channel(4);
    let (_stx, srx) = watch::channel(false);
    let h = start(&store, feeds(), rx, srx).await.expect("restart");
    {
        let mut st = h.read();
        assert_eq!(st.next_input, n_inputs);
        assert_eq!(st.next_round, full.next_round);
        assert_eq!(st.engine.insurance_fund(), fund);
        assert_eq!(st.engine.snapshot(), full.engine.snapshot());
        assert_eq!(st.engine.state_root(), full.engine.state_root());
        assert_eq!(
            st.engine.encode_snapshot().expect("encode"),
            full.engine.encode_snapshot().expect("encode")
        );
    }
    // The log continues without a gap and still replays from the start.
    h.command(Command::CreateAccount {
        account: 10_001,
        owner: None,
    })
    .await
    .expect("create");
    let r = tokio::task::spawn_blocking(move || replay_db(&path, Some(&committee())))
        .await
        .expect("join")
        .expect("replay");
    assert_eq!(r.divergence, None);
    assert_eq!(r.inputs, n_inputs + 1);
}

/// The prices rounds of the stored margin inputs, in input order.
fn input_rounds(store: &Store) -> Vec<u64> {
    store
        .readers
        .read_blocking(|db| db.margin_inputs())
        .expect("inputs")
        .iter()
        .filter_map(|(_, body)| match serde_json::from_str::<Input>(body) {
            Ok(Input::Prices(p)) => Some(p.round),
            _ => None,
        })
        .collect()
}

/// Waits until the stored inputs' prices rounds are `want` (the engine
/// moves its cursor before the store write of the step completes).
async fn wait_input_rounds(store: &Store, want: &[u64]) {
    for _ in 0..500 {
        if input_rounds(store) == want {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(input_rounds(store), want);
}

async fn wait_next_round(h: &MarginHandle, round: u64) {
    // Up to 30 s: a member catching up applies and fsyncs dozens of reports.
    for _ in 0..3_000 {
        if h.read().next_round >= round {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!(
        "the margin service did not reach round {round} (at {})",
        h.read().next_round
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reports_are_taken_in_round_order_waiting_for_gaps() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(&dir.path().join("node.sqlite")).expect("store");
    let (tx, rx) = broadcast::channel(16);
    let (_stx, srx) = watch::channel(false);
    let h = start(&store, feeds(), rx, srx).await.expect("start");
    let put = |round: u64| {
        let r = report(round, 1_000 + round, &[("BTC-USD", 60_000 * SCALE)]);
        let writer = store.writer.clone();
        let tx = tx.clone();
        async move {
            writer.insert_report((*r).clone()).await.expect("store");
            let _ = tx.send(r);
        }
    };
    // Round 1 is missing: 0 is taken, 2 and 3 wait.
    put(0).await;
    put(3).await;
    put(2).await;
    wait_next_round(&h, 1).await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(h.read().next_round, 1, "waits for round 1");
    wait_input_rounds(&store, &[0]).await;
    // Round 1 arrives late (catch-up): 1, 2, 3 in order.
    put(1).await;
    wait_next_round(&h, 4).await;
    wait_input_rounds(&store, &[0, 1, 2, 3]).await;
    // Rounds 4 and 5 settled as having no report; 6 arrives: taken after
    // the poll finds the settled gap.
    put(6).await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(h.read().next_round, 4);
    store
        .writer
        .write(|db| db.insert_report_gap(4, 6))
        .await
        .expect("gap");
    wait_next_round(&h, 7).await;
    wait_input_rounds(&store, &[0, 1, 2, 3, 6]).await;
    for _ in 0..100 {
        if h.read().reports_handled >= 5 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(h.read().reports_handled, 5);
}

/// Starts an ordered service (this member is `me`) over the store at `path`.
async fn ordered(path: &std::path::Path, me: u16) -> Service4 {
    open(path, 0, Some(me)).await
}

/// A report of `round` carrying `commands`, stored and announced.
async fn publish(
    store: &Store,
    tx: &broadcast::Sender<Arc<SignedReport>>,
    round: u64,
    commands: Vec<MarginCommand>,
) {
    let mut r = (*report(
        round,
        1_700_000_000_000 + round * 1_000,
        &[("BTC-USD", 60_000 * SCALE)],
    ))
    .clone();
    r.commands = commands;
    store.writer.insert_report(r.clone()).await.expect("store");
    let _ = tx.send(Arc::new(r));
}

/// An ordered member asked to create `account`: the pending API call and
/// the member's offers once the command is among them.
async fn offer_create_account(
    h: &MarginHandle,
    account: u64,
) -> (
    tokio::task::JoinHandle<Result<Vec<EventRecord>, MarginError>>,
    Vec<MarginCommand>,
) {
    let mut offers = h.offers().expect("ordered");
    let h2 = h.clone();
    let answer = tokio::spawn(async move {
        h2.command(Command::CreateAccount {
            account,
            owner: None,
        })
        .await
    });
    offers.changed().await.unwrap();
    let offered = offers.borrow_and_update().clone();
    (answer, offered)
}

/// An ordered command is offered, answers once a report carries it, is
/// taken once although later reports carry it again (also after a
/// restart: the marks are stored), and leaves the offers once taken.
#[tokio::test]
async fn an_ordered_command_applies_once_at_its_reports_turn() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("node.sqlite");
    let (store, h, tx, shutdown) = ordered(&path, 2).await;
    let (answer, offered) = offer_create_account(&h, 77).await;
    assert_eq!(offered.len(), 1);
    assert_eq!(offered[0].origin, 2);
    assert!(offered[0].body.contains("77"), "{offered:?}");
    // Not applied before a report carries it.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!answer.is_finished());
    assert!(h.read().engine.state().accounts.is_empty());
    publish(&store, &tx, 0, offered.clone()).await;
    let events = answer.await.unwrap().expect("applied");
    assert!(!events.is_empty());
    assert!(
        h.offers().expect("ordered").borrow().is_empty(),
        "withdrawn once taken"
    );
    // Carried again (the member offered it once more before it saw it
    // taken): skipped.
    publish(&store, &tx, 1, offered.clone()).await;
    wait_inputs(&h, 3).await;
    let inputs = h.read().next_input;
    assert_eq!(inputs, 3, "prices, the command, prices");
    let _ = shutdown.send(true);
    drop(h);
    tokio::time::sleep(Duration::from_millis(100)).await;
    drop(store);
    // Restarted: the mark is restored, a third copy is skipped too.
    let (store, h, tx, _shutdown) = ordered(&path, 2).await;
    assert_eq!(h.read().marks.get(&2), Some(&offered[0].nonce));
    publish(&store, &tx, 2, offered.clone()).await;
    wait_inputs(&h, 4).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(h.read().next_input, 4, "one more prices input, no command");
    assert_eq!(h.read().engine.state().accounts.len(), 1);
}

/// A command no report carries answers `NotOrdered` after the timeout and
/// is withdrawn from the offers.
#[tokio::test(start_paused = true)]
async fn a_command_never_ordered_times_out_and_is_withdrawn() {
    let dir = tempfile::tempdir().unwrap();
    let (_store, h, _tx, _shutdown) = ordered(&dir.path().join("node.sqlite"), 3).await;
    let offers = h.offers().expect("ordered");
    let err = refused_create_account(&h, 5).await;
    assert!(
        matches!(err, MarginError::NotOrdered { origin: 3, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("withdrawn"), "{err}");
    assert!(offers.borrow().is_empty());
}

/// A command body as a member offers it.
fn offer(origin: u16, nonce: u64, command: &Command) -> MarginCommand {
    MarginCommand {
        origin,
        nonce,
        body: serde_json::to_string(command).unwrap(),
    }
}

/// A command signed by its account's owner is checked before it is
/// offered (a bad signature or a stale nonce never reaches the
/// committee), offered as `{"signed": ...}`, and applied at its report's
/// turn; an operator's withdrawal from that account, offered by another
/// member and ordered, is refused by the engine with nothing changed.
#[tokio::test]
async fn a_signed_command_offered_and_ordered_applies() {
    use sibyl_margin::signed::public_key;
    let secret = [5u8; 32];
    let dir = tempfile::tempdir().unwrap();
    let (store, h, tx, _shutdown) = ordered(&dir.path().join("node.sqlite"), 2).await;
    let mut offers = h.offers().expect("ordered");
    let setup = vec![
        offer(
            1,
            1,
            &Command::CreateAccount {
                account: 40,
                owner: Some(public_key(&secret)),
            },
        ),
        offer(
            1,
            2,
            &Command::Deposit {
                account: 40,
                asset: "USD".into(),
                amount: 1_000_000_000,
            },
        ),
    ];
    publish(&store, &tx, 0, setup).await;
    wait_inputs(&h, 3).await;
    let withdraw = |amount| {
        serde_json::to_string(&Command::Withdraw {
            account: 40,
            asset: "USD".into(),
            amount,
        })
        .unwrap()
    };
    // Refused before offering: a wrong key, then (below) a stale nonce.
    assert_eq!(h.committee(), Some(committee()));
    let wrong = SignedCommand::sign(&[6u8; 32], &committee(), 40, 1, withdraw(1));
    let err = h.signed(wrong).await.unwrap_err();
    assert!(
        matches!(err, MarginError::Engine(EngineError::BadSignature { .. })),
        "{err}"
    );
    // The owner's key, but signed for another committee's book.
    let elsewhere = CommitteeKey::new(vec![0xAB; 33]).unwrap();
    let misdirected = SignedCommand::sign(&secret, &elsewhere, 40, 3, withdraw(1));
    let err = h.signed(misdirected).await.unwrap_err();
    assert!(
        matches!(err, MarginError::Engine(EngineError::BadSignature { .. })),
        "{err}"
    );
    assert!(offers.borrow_and_update().is_empty());
    let env = SignedCommand::sign(&secret, &committee(), 40, 3, withdraw(250_000_000));
    let h2 = h.clone();
    let env2 = env.clone();
    let answer = tokio::spawn(async move { h2.signed(env2).await });
    offers.changed().await.unwrap();
    let offered = offers.borrow_and_update().clone();
    assert_eq!(offered.len(), 1);
    assert!(
        offered[0]
            .body
            .starts_with(r#"{"signed":{"account":40,"nonce":3,"#)
    );
    // Ordered together with a forged operator withdrawal from member 3.
    let mut carried = offered.clone();
    carried.push(offer(
        3,
        1,
        &Command::Withdraw {
            account: 40,
            asset: "USD".into(),
            amount: 750_000_000,
        },
    ));
    publish(&store, &tx, 1, carried).await;
    let events = answer.await.unwrap().expect("applied");
    assert!(matches!(
        events[0].event,
        sibyl_margin::Event::Withdrawn {
            account: 40,
            amount: 250_000_000,
            ..
        }
    ));
    wait_inputs(&h, 5).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    {
        let st = h.read();
        let a = &st.engine.state().accounts[&40];
        assert_eq!(
            (a.cash, a.nonce),
            (750_000_000, 3),
            "the forged withdrawal changed nothing"
        );
        assert_eq!(
            st.next_input, 5,
            "prices, create, deposit, prices, the signed withdrawal"
        );
    }
    let err = h.signed(env).await.unwrap_err();
    assert!(
        matches!(
            err,
            MarginError::Engine(EngineError::StaleNonce { current: 3, .. })
        ),
        "{err}"
    );
    // The stored log replays to the same state (the signed input included).
    let rows = store
        .writer
        .write(|db| db.margin_inputs_from(0))
        .await
        .unwrap();
    assert!(
        rows.iter().any(|(_, b)| b.starts_with(r#"{"signed":"#)),
        "{rows:?}"
    );
    let replayed = restore(Some(&committee()), &rows).unwrap();
    assert_eq!(replayed.engine.snapshot(), h.read().engine.snapshot());
    // The log does not hold the committee key: restored without it, the
    // signed input is refused rather than taken unchecked.
    let err = restore(None, &rows).err().expect("refused");
    assert!(
        matches!(
            err,
            MarginError::RestoreRefused {
                error: EngineError::NoCommitteeKey,
                ..
            }
        ),
        "{err}"
    );
}

/// The committee key is the first suite's group key: Ed25519's when the
/// committee signs with both suites, secp256k1's (33 bytes) when only with
/// it, none without a group key.
#[test]
fn the_committee_key_is_the_first_suites_group_key() {
    let mut rng = <rand_chacha::ChaCha20Rng as rand_core::SeedableRng>::seed_from_u64(9);
    let (_, ed) = frost_ed25519::keys::generate_with_dealer(
        3,
        2,
        frost_ed25519::keys::IdentifierList::Default,
        &mut rng,
    )
    .unwrap();
    let (_, secp) = frost_secp256k1_evm::keys::generate_with_dealer(
        3,
        2,
        frost_secp256k1_evm::keys::IdentifierList::Default,
        &mut rng,
    )
    .unwrap();
    let none = GroupKeys::new(ConfigDigest([1; 32]));
    assert_eq!(committee_key(&none), None);
    let only_secp = none.clone().with_secp256k1_evm(*secp.verifying_key());
    let k = committee_key(&only_secp).unwrap();
    assert_eq!(k.as_bytes(), secp.verifying_key().serialize().unwrap());
    assert_eq!(k.as_bytes().len(), 33);
    let both = only_secp.with_ed25519(*ed.verifying_key());
    let k = committee_key(&both).unwrap();
    assert_eq!(k.as_bytes(), ed.verifying_key().serialize().unwrap());
}

/// The test reports of the full-disk tests: round `round` at a price of
/// its own, carrying member 1's commands creating account 1000 + round and
/// funding it.
fn round_report(round: u64) -> SignedReport {
    let mut r = (*report(
        round,
        1_700_000_000_000 + round * 1_000,
        &[("BTC-USD", (60_000 + i128::from(round)) * SCALE)],
    ))
    .clone();
    let account = 1_000 + round;
    r.commands = vec![
        offer(
            1,
            2 * round + 1,
            &Command::CreateAccount {
                account,
                owner: None,
            },
        ),
        offer(
            1,
            2 * round + 2,
            &Command::Deposit {
                account,
                asset: "USD".into(),
                amount: 1_000_000 * (i128::from(round) + 1),
            },
        ),
    ];
    r
}

/// Stores `report` and announces it.
async fn put_report(
    store: &Store,
    tx: &broadcast::Sender<Arc<SignedReport>>,
    report: SignedReport,
) {
    store
        .writer
        .insert_report(report.clone())
        .await
        .expect("store the report");
    let _ = tx.send(Arc::new(report));
}

/// The service's Prometheus text.
/// Asks the service to create `account` and returns the refusal.
async fn refused_create_account(h: &MarginHandle, account: u64) -> MarginError {
    h.command(Command::CreateAccount {
        account,
        owner: None,
    })
    .await
    .unwrap_err()
}

/// The value of the sample line `name` in the exposition, if any.
fn metric(h: &MarginHandle, name: &str) -> Option<String> {
    let prefix = format!("{name} ");
    metrics_text(h)
        .lines()
        .find_map(|l| l.strip_prefix(&prefix).map(str::to_string))
}

fn metrics_text(h: &MarginHandle) -> String {
    let mut registry = Registry::default();
    h.register_metrics(&mut registry);
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).expect("encode");
    text
}

/// The stored margin inputs, checked gapless from 0.
async fn stored_inputs(store: &Store) -> Vec<(u64, String)> {
    let rows = store
        .readers
        .read(|db| db.margin_inputs_from(0))
        .await
        .expect("inputs");
    for (i, (seq, _)) in rows.iter().enumerate() {
        assert_eq!(*seq, i as u64, "the stored margin log has a gap");
    }
    rows
}

/// The database fills up while an ordered member applies reports with
/// commands: the report whose inputs cannot be stored keeps them in
/// memory, no later report is applied, commands are refused with a clear
/// error and the gauge shows the backlog; once there is space again the
/// backlog is written, the member catches up with the reports stored
/// meanwhile, and its log restores (from a snapshot plus inputs) to
/// exactly the state of a member whose disk never filled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_holds_the_margin_engine_back_and_loses_nothing() {
    const LAST: u64 = 60;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("node.sqlite");
    let (store, h, tx, shutdown) = open(&path, 4, Some(2)).await;
    let mut published = Vec::new();
    for round in 0..3 {
        published.push(round_report(round));
        put_report(&store, &tx, round_report(round)).await;
    }
    wait_next_round(&h, 3).await;
    assert_eq!(
        metric(&h, "sibyl_margin_unstored_inputs").as_deref(),
        Some("0")
    );
    // Rounds 4.. are stored while round 3 is missing: the service waits.
    for round in 4..=LAST {
        store
            .writer
            .insert_report(round_report(round))
            .await
            .expect("store");
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(h.read().next_round, 3);
    // Round 3 arrives, and the disk is full right after it.
    store
        .writer
        .write(|db| {
            db.insert_report(&round_report(3))?;
            db.cap_size_here()
        })
        .await
        .expect("store round 3 and cap");
    let _ = tx.send(Arc::new(round_report(3)));
    published.extend((3..=LAST).map(round_report));
    for _ in 0..1_000 {
        if h.unstored_inputs() > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let unstored = h.unstored_inputs();
    let (held, handled, next_input, root) = {
        let mut st = h.read();
        (
            st.next_round,
            st.reports_handled,
            st.next_input,
            st.engine.state_root(),
        )
    };
    assert!(
        unstored > 0,
        "no margin write failed on the capped database (at round {held})"
    );
    assert!(held > 3 && held <= LAST, "held at round {held}");
    // Retried every second, still full: no later report is applied.
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    {
        let mut st = h.read();
        assert_eq!(
            (st.next_round, st.reports_handled, st.next_input),
            (held, handled, next_input),
            "a report was applied while its predecessor's inputs were not stored"
        );
        assert_eq!(st.engine.state_root(), root);
    }
    assert_eq!(h.unstored_inputs(), unstored);
    // The stored log ends exactly before the inputs that wait: no gap.
    let stored = stored_inputs(&store).await;
    assert_eq!(stored.len() as u64 + unstored, next_input);
    // No snapshot covers inputs the log does not hold.
    let (covered, _) = store
        .readers
        .read(|db| db.margin_snapshot())
        .await
        .expect("read")
        .expect("a snapshot (every 4 rounds)");
    assert!(covered <= stored.len() as u64, "snapshot covers {covered}");
    assert_eq!(
        metric(&h, "sibyl_margin_unstored_inputs"),
        Some(unstored.to_string())
    );
    // The inputs counter counts stored inputs only.
    assert_eq!(
        metric(&h, "sibyl_margin_inputs_total"),
        Some(stored.len().to_string())
    );
    // Commands are refused with the reason, and not offered.
    let err = refused_create_account(&h, 5).await;
    assert!(
        matches!(err, MarginError::LogUnwritable { inputs, .. } if inputs == unstored),
        "{err:?}"
    );
    let msg = err.to_string();
    for part in [
        "the margin log in",
        path.to_str().unwrap(),
        "the disk holding the database is full",
        "takes no new margin command",
    ] {
        assert!(msg.contains(part), "{part:?} not in {msg}");
    }
    let env = SignedCommand::sign(&[5u8; 32], &committee(), 1_000, 1, "{}".into());
    assert!(matches!(
        h.signed(env).await,
        Err(MarginError::LogUnwritable { .. })
    ));
    assert!(h.offers().expect("ordered").borrow().is_empty());

    // Space again: the backlog is written, the service catches up with the
    // reports stored meanwhile and takes commands again.
    store
        .writer
        .write(|db| db.lift_size_cap())
        .await
        .expect("lift");
    published.push(round_report(LAST + 1));
    put_report(&store, &tx, round_report(LAST + 1)).await;
    wait_next_round(&h, LAST + 2).await;
    assert_eq!(h.unstored_inputs(), 0);
    assert_eq!(
        metric(&h, "sibyl_margin_unstored_inputs").as_deref(),
        Some("0")
    );
    let (answer, offered) = offer_create_account(&h, 7).await;
    let mut last = round_report(LAST + 2);
    last.commands.extend(offered);
    published.push(last.clone());
    put_report(&store, &tx, last).await;
    answer.await.unwrap().expect("applied");
    wait_next_round(&h, LAST + 3).await;
    let (next_input, root, marks) = {
        let mut st = h.read();
        (st.next_input, st.engine.state_root(), st.marks.clone())
    };
    assert_eq!(stored_inputs(&store).await.len() as u64, next_input);
    assert_eq!(
        metric(&h, "sibyl_margin_inputs_total"),
        Some(next_input.to_string())
    );

    // A member whose disk never filled, given the same reports, is in the
    // same state.
    let (rstore, rh, rtx, _rshutdown) = ordered(&dir.path().join("reference.sqlite"), 2).await;
    for r in &published {
        put_report(&rstore, &rtx, r.clone()).await;
    }
    wait_next_round(&rh, LAST + 3).await;
    {
        let mut st = rh.read();
        assert_eq!(st.next_input, next_input);
        assert_eq!(st.engine.state_root(), root);
        assert_eq!(st.marks, marks);
    }

    // Restarted from its database (the latest snapshot plus the inputs
    // after it): the same state again, and the log replays from the start.
    let _ = shutdown.send(true);
    drop(h);
    tokio::time::sleep(Duration::from_millis(100)).await;
    drop(store);
    let (_store, h, _tx, _shutdown) = open(&path, 4, Some(2)).await;
    {
        let mut st = h.read();
        assert_eq!(st.next_input, next_input);
        assert_eq!(st.next_round, LAST + 3);
        assert_eq!(st.engine.state_root(), root);
        assert_eq!(st.marks, marks);
    }
    let r = tokio::task::spawn_blocking(move || replay_db(&path, Some(&committee())))
        .await
        .expect("join")
        .expect("replay");
    assert_eq!(r.divergence, None);
    assert_eq!(r.inputs, next_input);
}

/// A lone engine (no committee ordering) applies a command at once: when
/// its write fails the caller is told it took effect but is not stored
/// yet, the command waits in memory, further commands are refused and
/// change nothing, and once there is space it is written by itself; the
/// log then restores to the same state.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lone_engines_command_that_cannot_be_stored_waits_and_is_not_lost() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("node.sqlite");
    let (store, h, _tx, shutdown) = open(&path, 0, None).await;
    let create = |account| Command::CreateAccount {
        account,
        owner: None,
    };
    h.command(create(1)).await.expect("create");
    store
        .writer
        .write(|db| db.cap_size_here())
        .await
        .expect("cap");
    let mut account = 2;
    let err = loop {
        match h.command(create(account)).await {
            Ok(_) => account += 1,
            Err(e) => break e,
        }
        assert!(account < 10_000, "the capped database never filled");
    };
    let next_input = h.read().next_input;
    assert!(
        matches!(&err, MarginError::NotDurable { seq, .. } if *seq + 1 == next_input),
        "{err:?}"
    );
    let msg = err.to_string();
    for part in [
        "took effect",
        "the disk holding the database is full",
        "do not send it again",
    ] {
        assert!(msg.contains(part), "{part:?} not in {msg}");
    }
    assert!(h.read().engine.state().accounts.contains_key(&account));
    assert_eq!(h.unstored_inputs(), 1);
    assert_eq!(stored_inputs(&store).await.len() as u64 + 1, next_input);
    // The next command is refused and changes nothing.
    let err = h.command(create(account + 1)).await.unwrap_err();
    assert!(
        matches!(err, MarginError::LogUnwritable { inputs: 1, .. }),
        "{err:?}"
    );
    assert!(
        !h.read()
            .engine
            .state()
            .accounts
            .contains_key(&(account + 1))
    );
    assert_eq!(h.read().next_input, next_input);
    // Space again: the service writes the waiting input by itself.
    store
        .writer
        .write(|db| db.lift_size_cap())
        .await
        .expect("lift");
    for _ in 0..300 {
        if h.unstored_inputs() == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(h.unstored_inputs(), 0);
    assert_eq!(stored_inputs(&store).await.len() as u64, next_input);
    h.command(create(account + 1)).await.expect("taken again");
    let root = h.read().engine.state_root();
    let _ = shutdown.send(true);
    drop(h);
    tokio::time::sleep(Duration::from_millis(100)).await;
    drop(store);
    let (_store, h, _tx, _shutdown) = open(&path, 0, None).await;
    assert_eq!(h.read().next_input, next_input + 1);
    assert_eq!(h.read().engine.state_root(), root);
    let r = tokio::task::spawn_blocking(move || replay_db(&path, Some(&committee())))
        .await
        .expect("join")
        .expect("replay");
    assert_eq!(r.divergence, None);
}

/// Stops a service and waits until its task has ended (its command
/// receiver is gone), so a service started next over the same database is
/// the only one there.
async fn stop(svc: &Service4) {
    let _ = svc.3.send(true);
    tokio::time::timeout(Duration::from_secs(30), svc.1.commands.closed())
        .await
        .expect("the margin service stops");
}

/// Waits until a service's store holds every input its engine applied
/// (the engine moves before the write), so a restart over the same
/// database sees them all.
async fn wait_stored(svc: &Service4) {
    for _ in 0..3_000 {
        let want = svc.1.read().next_input;
        let stored = svc
            .0
            .readers
            .read(|db| db.margin_inputs_from(0))
            .await
            .expect("read the margin log")
            .len() as u64;
        if stored == want {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the margin service did not store its inputs");
}

/// A member restarted after it stored only reports the demo book was not
/// ready at (every demo feed degraded) still seeds the book at the first
/// ready report, as a member that never restarted does: same accounts,
/// same state root. One restarted after the book went in does not seed it
/// again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_before_the_demo_book_was_ready_still_seeds_it() {
    let demo = DemoSeed {
        accounts: 30,
        seed: 7,
    };
    let start_demo = |path: std::path::PathBuf| async move {
        let options = MarginOptions {
            demo: Some(demo),
            snapshot_every_rounds: 0,
            ordered_by: None,
            committee: Some(committee()),
        };
        open_with(&path, options).await
    };
    let t0 = 1_767_225_600_000;
    let prices = [
        ("BTC-USD", 60_000 * SCALE),
        ("ETH-USD", 3_000 * SCALE),
        ("SOL-USD", 150 * SCALE),
    ];
    let not_ready = {
        let mut r = (*report(0, t0, &prices)).clone();
        for l in &mut r.leaves {
            l.status = sibyl_aggregator::report::LeafStatus::Degraded;
        }
        Arc::new(r)
    };
    let ready = report(1, t0 + 1_000, &prices);
    let later = report(2, t0 + 2_000, &prices);
    let feed = |svc: &Service4, r: Arc<SignedReport>| {
        let (store, _, tx, _) = svc;
        let (writer, tx) = (store.writer.clone(), tx.clone());
        async move {
            writer
                .insert_report((*r).clone())
                .await
                .expect("store the report");
            let _ = tx.send(r);
        }
    };
    let dir = tempfile::tempdir().expect("tempdir");
    // The reference: never restarted.
    let reference = start_demo(dir.path().join("reference.sqlite")).await;
    for r in [not_ready.clone(), ready.clone(), later.clone()] {
        feed(&reference, r).await;
    }
    wait_next_round(&reference.1, 3).await;
    let want_root = reference.1.read().engine.state_root();
    assert_eq!(reference.1.read().engine.state().accounts.len(), 30);
    // Restarted after the report it was not ready at.
    let path = dir.path().join("restarted.sqlite");
    let first = start_demo(path.clone()).await;
    feed(&first, not_ready).await;
    wait_next_round(&first.1, 1).await;
    assert!(first.1.read().next_input > 0, "the prices input is stored");
    assert!(first.1.read().engine.state().accounts.is_empty());
    wait_stored(&first).await;
    stop(&first).await;
    drop(first);
    let second = start_demo(path.clone()).await;
    feed(&second, ready).await;
    wait_next_round(&second.1, 2).await;
    assert_eq!(
        second.1.read().engine.state().accounts.len(),
        30,
        "seeded after the restart"
    );
    wait_stored(&second).await;
    stop(&second).await;
    drop(second);
    // Restarted after the book went in: not seeded twice.
    let third = start_demo(path).await;
    let inputs = third.1.read().next_input;
    feed(&third, later).await;
    wait_next_round(&third.1, 3).await;
    assert_eq!(
        third.1.read().next_input,
        inputs + 1,
        "only the report's prices"
    );
    assert_eq!(third.1.read().engine.state_root(), want_root);
}
