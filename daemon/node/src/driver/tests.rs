//! Drivers of a whole committee in one process over the in-memory transport,
//! with real SQLite stores and the real state machine and keys.
//!
//! The committee runs on tokio's paused time ([`clock::TokioClock`] on a
//! current-thread runtime with `start_paused`): rounds follow each other as
//! fast as the CPU allows, and every timeout here is virtual time, so a
//! loaded machine does not make a round miss its deadline.

use super::clock::TokioClock;
use super::transport::{MemoryControl, MemoryNetwork, MemoryTransport};
use super::*;
use crate::config::Committee as ConfigCommittee;
use crate::store::{Db, Store};
use frost_ed25519::Ed25519Sha512;
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use sibyl_aggregator::round::NodeKeys;
use sibyl_aggregator::testkit::dealer_keys;
use std::path::{Path, PathBuf};

fn committee_toml(n: u8, t: u16) -> String {
    let mut s = format!(
        "threshold = {t}\n[round]\ninterval = \"100ms\"\nobservation_timeout = \"50ms\"\nshare_timeout = \"200ms\"\nround_timeout = \"800ms\"\n\n"
    );
    for i in 1..=n {
        let kp = libp2p_identity::Keypair::ed25519_from_bytes([i; 32]).unwrap();
        s += &format!(
            "[[members]]\nindex = {i}\npeer_id = \"{}\"\naddress = \"/ip4/127.0.0.1/tcp/{}\"\n",
            kp.public().to_peer_id(),
            9000 + u16::from(i)
        );
    }
    s += "[[feeds]]\nid = \"BTC-USD\"\ndecimals = 8\nheartbeat = \"1s\"\n[[feeds]]\nid = \"ETH-USD\"\ndecimals = 8\nheartbeat = \"1s\"\n";
    s
}

struct Member {
    index: u16,
    db: PathBuf,
    margin: Option<crate::margin_svc::MarginHandle>,
    shutdown: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
    status: StatusHandle,
    registry: prometheus_client::registry::Registry,
}

struct Harness {
    _dir: tempfile::TempDir,
    committee: ConfigCommittee,
    keys: sibyl_aggregator::testkit::DealerKeys<Ed25519Sha512>,
    control: MemoryControl,
    members: BTreeMap<u16, Member>,
    /// Start a margin service (with a small demo book) beside each driver.
    margin: bool,
    /// Every member's clock: one (virtual) time for the committee.
    clock: TokioClock,
}

impl Harness {
    fn new(n: u8, t: u16) -> (Self, Vec<MemoryTransport>) {
        let committee =
            ConfigCommittee::parse(Path::new("committee.toml"), &committee_toml(n, t)).unwrap();
        let mut rng = ChaCha20Rng::seed_from_u64(7);
        let keys = dealer_keys::<Ed25519Sha512, _>(u16::from(n), t, &mut rng).unwrap();
        let (transports, control) = MemoryNetwork::build(u16::from(n));
        (
            Self {
                _dir: tempfile::tempdir().unwrap(),
                committee,
                keys,
                control,
                members: BTreeMap::new(),
                margin: false,
                clock: TokioClock::from_system(),
            },
            transports,
        )
    }

    async fn start(&mut self, index: u16, transport: MemoryTransport) {
        let db = self._dir.path().join(format!("node-{index}.db"));
        let store = Store::open(&db).unwrap();
        let observed = observed::ObservationLedger::open(
            &self._dir.path().join(format!("node-{index}.observed")),
        )
        .unwrap();
        let protocol = Arc::new(self.committee.to_protocol().unwrap());
        let horizon = sibyl_aggregator::round::schedule::LeaderSchedule::horizon(&protocol);
        let restore =
            restore_from(&store.readers, &observed, horizon, &self.committee.digest).unwrap();
        let last_report_round = restore.last_report_round;
        let id = frost_core::Identifier::try_from(index).unwrap();
        let node_keys = NodeKeys {
            identity_seed: [index as u8; 32],
            key_package: self.keys.key_packages[&id].clone(),
            public_key_package: self.keys.public_key_package.clone(),
        };
        let node = Node::new(protocol, index, node_keys, restore).unwrap();
        let group_keys = GroupKeys::new(self.committee.digest)
            .with_ed25519(*self.keys.public_key_package.verifying_key());
        let (api_tx, _) = broadcast::channel::<Arc<SignedReport>>(16);
        let (shutdown, shutdown_rx) = watch::channel(false);
        let margin = if self.margin {
            Some(
                crate::margin_svc::start_with(
                    &store,
                    self.committee.feeds.clone(),
                    api_tx.subscribe(),
                    shutdown_rx.clone(),
                    crate::margin_svc::MarginOptions {
                        demo: Some(crate::margin_svc::DemoSeed {
                            accounts: 30,
                            seed: 7,
                        }),
                        snapshot_every_rounds: 0,
                        ordered_by: Some(index),
                        committee: crate::margin_svc::committee_key(&group_keys),
                    },
                )
                .await
                .unwrap(),
            )
        } else {
            None
        };
        let sink = ReportSink::start(store.writer.clone(), api_tx);
        let driver = Driver::new(
            DriverParts {
                node,
                transport,
                ledger: store.signing_ledger().unwrap(),
                store,
                group_keys,
                observations: source::builtin_on(self.committee.feeds.clone(), self.clock),
                sink,
                observed,
                rng: ChaCha20Rng::seed_from_u64(u64::from(index) + 1000),
                shutdown: shutdown_rx,
                clock: self.clock,
                rekey: None,
                offers: margin.as_ref().and_then(|m| m.offers()),
                attest: margin.as_ref().map(|m| m.attested()),
            },
            last_report_round,
        );
        let status = driver.status();
        let mut registry = prometheus_client::registry::Registry::default();
        driver.register_metrics(&mut registry);
        let task = tokio::spawn(driver.run());
        self.members.insert(
            index,
            Member {
                index,
                db,
                margin,
                shutdown,
                task,
                status,
                registry,
            },
        );
    }

    fn stop(&mut self, index: u16) -> Member {
        let m = self.members.remove(&index).unwrap();
        let _ = m.shutdown.send(true);
        m
    }

    fn reports(&self, index: u16) -> Vec<SignedReport> {
        let db = Db::open_read_only(&self.members_db(index)).unwrap();
        // Round 0 included (`reports_after(0, ..)` would leave it out).
        db.reports_in(0, Round::MAX, 100_000).unwrap()
    }

    fn members_db(&self, index: u16) -> PathBuf {
        self._dir.path().join(format!("node-{index}.db"))
    }

    /// Waits until member `index`'s store holds the newest report its driver
    /// accepted (`status`). The report sink writes on the store's own thread,
    /// which paused time does not wait for: a fixed sleep here would be
    /// virtual and end at once.
    async fn wait_stored(&self, index: u16, status: &StatusHandle) {
        let db = self.members_db(index);
        wait_for(&format!("member {index}'s sink to store"), 30, || {
            let Some(want) = status_snapshot(status).last_report_round else {
                return true;
            };
            Db::open_read_only(&db)
                .and_then(|db| db.newest_round())
                .is_ok_and(|r| r.is_some_and(|r| r >= want))
        })
        .await;
    }

    /// Stops every member and waits until each one's store holds the
    /// newest report its driver accepted.
    async fn stop_all(&mut self) {
        let stopped: Vec<(u16, StatusHandle)> = self
            .members
            .iter()
            .map(|(i, m)| (*i, m.status.clone()))
            .collect();
        for (_, m) in std::mem::take(&mut self.members) {
            let _ = m.shutdown.send(true);
            let _ = tokio::time::timeout(Duration::from_secs(5), m.task).await;
        }
        for (i, s) in &stopped {
            self.wait_stored(*i, s).await;
        }
    }

    fn group_keys(&self) -> GroupKeys {
        GroupKeys::new(self.committee.digest)
            .with_ed25519(*self.keys.public_key_package.verifying_key())
    }

    /// The committee key owners sign margin commands for.
    fn committee_key(&self) -> sibyl_margin::CommitteeKey {
        crate::margin_svc::committee_key(&self.group_keys()).unwrap()
    }

    /// The margin engine a member's stored inputs (in order) rebuild.
    fn restore_log(&self, inputs: &[String]) -> crate::margin_svc::MarginState {
        let stored: Vec<(u64, String)> = inputs
            .iter()
            .enumerate()
            .map(|(i, b)| (i as u64, b.clone()))
            .collect();
        crate::margin_svc::restore(Some(&self.committee_key()), &stored).unwrap()
    }
}

/// Polls `f` every 50 ms of (virtual) time for up to `secs` seconds.
async fn wait_for(what: &str, secs: u64, mut f: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    while tokio::time::Instant::now() < deadline {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for {what}");
}

#[tokio::test(start_paused = true)]
async fn committee_signs_stores_and_survives_a_crash_and_restart() {
    let (mut h, transports) = Harness::new(4, 3);
    for (i, t) in transports.into_iter().enumerate() {
        h.start(i as u16 + 1, t).await;
    }
    let status: Vec<StatusHandle> = h.members.values().map(|m| m.status.clone()).collect();
    wait_for("5 reports at every member", 30, || {
        status
            .iter()
            .all(|s| status_snapshot(s).protocol.reports_accepted >= 5)
    })
    .await;
    for (i, s) in (1..).zip(&status) {
        h.wait_stored(i, s).await;
    }

    // Every member stored verifying reports, the same ones.
    let keys = h.group_keys();
    let first = h.reports(1);
    assert!(first.len() >= 5, "{}", first.len());
    for r in &first {
        verify_report(r, &keys).expect("stored report verifies");
        assert_eq!(r.leaves.len(), 2);
    }
    for i in 2..=4 {
        let other = h.reports(i);
        let common: Vec<_> = other
            .iter()
            .filter(|r| first.iter().any(|f| f.header.round == r.header.round))
            .collect();
        assert!(!common.is_empty());
        for r in common {
            let mine = first
                .iter()
                .find(|f| f.header.round == r.header.round)
                .unwrap();
            assert_eq!(mine, r, "members agree on round {}", r.header.round);
        }
    }

    // A malformed message is dropped and counted; the node keeps going.
    h.control.inject(2, 1, vec![0xff, 1, 2, 3]);
    h.control.inject(2, 1, vec![]);
    let s1 = h.members[&1].status.clone();
    wait_for("malformed counted", 5, || {
        status_snapshot(&s1).driver.malformed_messages >= 2
    })
    .await;

    // Crash member 4: the other three go on.
    h.control.set_cut(4, true);
    let crashed = h.stop(4);
    crashed.task.abort();
    let before = status_snapshot(&s1).protocol.reports_accepted;
    wait_for("rounds continue without member 4", 30, || {
        status_snapshot(&s1).protocol.reports_accepted >= before + 5
    })
    .await;

    // Restart it with the same database: it catches up what it missed.
    h.control.set_cut(4, false);
    let transport = h.control.reattach(4);
    h.start(4, transport).await;
    let newest_at_1 = h.reports(1).last().unwrap().header.round;
    let db4 = h.members_db(4);
    wait_for("member 4 catches up", 30, || {
        Db::open_read_only(&db4)
            .and_then(|db| db.report(newest_at_1))
            .map(|r| r.is_some())
            .unwrap_or(false)
    })
    .await;
    let s4 = h.members[&4].status.clone();
    let accepted = status_snapshot(&s4).protocol.reports_accepted;
    wait_for("member 4 takes part again", 30, || {
        status_snapshot(&s4).protocol.reports_accepted >= accepted + 3
    })
    .await;
    // And signs again: each share means it computed the leaves byte for
    // byte as the leader did, EMA and volatility included, from the state
    // its store and catch-up gave it.
    wait_for("member 4 signs again", 30, || {
        status_snapshot(&s4).protocol.shares_sent >= 1
    })
    .await;

    for (_, m) in std::mem::take(&mut h.members) {
        let _ = m.shutdown.send(true);
        let _ = tokio::time::timeout(Duration::from_secs(5), m.task).await;
        assert!(m.db.exists(), "member {}", m.index);
    }
    drop(crashed);

    // Never signed two things in one round: wherever a member's ledger and
    // the stored report share a round, the ledger holds that report's digest.
    let mut checked = 0;
    for i in 1..=4u16 {
        let conn = rusqlite::Connection::open(h.members_db(i)).unwrap();
        let mut stmt = conn
            .prepare("SELECT round, digest FROM signing_ledger")
            .unwrap();
        let ledger: Vec<(i64, Vec<u8>)> = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert!(!ledger.is_empty(), "member {i} signed nothing");
        for r in h.reports(i) {
            if let Some((_, d)) = ledger
                .iter()
                .find(|(round, _)| *round as u64 == r.header.round)
            {
                assert_eq!(
                    d.as_slice(),
                    sibyl_aggregator::digest::header_digest(&r.header),
                    "member {i} round {}",
                    r.header.round
                );
                checked += 1;
            }
        }
    }
    assert!(checked > 5, "{checked}");
}

/// Waits up to 30 s for a member's driver counters to meet `f`; on a
/// timeout the panic shows them.
async fn wait_for_driver(what: &str, s: &StatusHandle, mut f: impl FnMut(&DriverStats) -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while tokio::time::Instant::now() < deadline {
        if f(&status_snapshot(s).driver) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let st = status_snapshot(s);
    panic!(
        "timed out waiting for {what}: round {} last report {:?} connected {:?} {:?}",
        st.round, st.last_report_round, st.connected, st.driver
    );
}

/// The stored margin inputs and events of a member's database.
fn margin_log(db: &Path) -> (Vec<String>, Vec<String>) {
    let db = Db::open_read_only(db).unwrap();
    let inputs = db
        .margin_inputs()
        .unwrap()
        .into_iter()
        .map(|(_, b)| b)
        .collect();
    let events = db
        .margin_events_from(0, usize::MAX >> 1)
        .unwrap()
        .into_iter()
        .map(|e| e.body)
        .collect();
    (inputs, events)
}

/// The rounds of the prices inputs among stored margin inputs.
fn input_rounds(inputs: &[String]) -> Vec<u64> {
    inputs
        .iter()
        .filter_map(|b| match serde_json::from_str::<sibyl_margin::Input>(b) {
            Ok(sibyl_margin::Input::Prices(p)) => Some(p.round),
            _ => None,
        })
        .collect()
}

#[tokio::test(start_paused = true)]
async fn a_member_that_misses_rounds_converges_history_and_margin_state() {
    let (mut h, transports) = Harness::new(4, 3);
    h.margin = true;
    let mut transports = transports.into_iter();
    // Member 4 starts late: cut off until then, so it sees nothing of the
    // first rounds (round 0 included) but by catch-up.
    h.control.set_cut(4, true);
    for i in 1..=3 {
        h.start(i, transports.next().unwrap()).await;
    }
    let t4 = transports.next().unwrap();
    let s1 = h.members[&1].status.clone();
    wait_for("5 reports without member 4", 30, || {
        status_snapshot(&s1).protocol.reports_accepted >= 5
    })
    .await;
    h.control.set_cut(4, false);
    h.start(4, t4).await;
    let s4 = h.members[&4].status.clone();
    wait_for_driver("member 4 fetches the first rounds", &s4, |d| {
        d.caught_up_reports >= 3 && d.history_complete_below >= 8 && d.history_missing_rounds == 0
    })
    .await;
    h.wait_stored(1, &s1).await;
    h.wait_stored(4, &s4).await;
    let first = |i: u16| {
        Db::open_read_only(&h.members_db(i))
            .unwrap()
            .stored_rounds_from(0)
            .unwrap()[0]
    };
    assert_eq!(
        first(4),
        first(1),
        "the first stored round, round 0 if it was signed"
    );

    // A partition: member 4 misses rounds while the others sign, then
    // gets live reports again before it fetched the gap.
    h.control.set_cut(4, true);
    let cut_at = status_snapshot(&s1).last_report_round.unwrap();
    wait_for("8 reports during the partition", 30, || {
        status_snapshot(&s1)
            .last_report_round
            .is_some_and(|r| r >= cut_at + 8)
    })
    .await;
    let healed_at = status_snapshot(&s1).last_report_round.unwrap();
    h.control.set_cut(4, false);
    let healed = tokio::time::Instant::now();
    wait_for_driver("member 4 fills the gap in the middle", &s4, |d| {
        d.history_complete_below > healed_at + 2 && d.history_missing_rounds == 0
    })
    .await;
    let filled = healed.elapsed();
    // Every margin engine past the partition (each takes its store's
    // reports strictly in round order, so a round some member never settled
    // would hold its engine back for good).
    for m in h.members.values() {
        let margin = m.margin.clone().unwrap();
        wait_for(
            &format!("member {}'s margin engine passes the partition", m.index),
            30,
            || margin.read().next_round > healed_at + 2,
        )
        .await;
    }
    let d4 = status_snapshot(&s4).driver;
    // Figures, not asserted (virtual time: rounds of 100 ms).
    eprintln!(
        "member 4: partition rounds {cut_at}..={healed_at}; gap filled {:.0} ms and every margin engine past it {:.0} ms after the heal (virtual); {} catch-up requests, {} reports caught up, {} rounds settled absent",
        filled.as_secs_f64() * 1e3,
        healed.elapsed().as_secs_f64() * 1e3,
        d4.catchup_requests_sent,
        d4.caught_up_reports,
        d4.rounds_settled_absent
    );

    h.stop_all().await;

    // Stored history: member 4 holds every round the others do, up to the
    // newest round they all reached.
    let rounds: Vec<Vec<u64>> = (1..=4)
        .map(|i| {
            Db::open_read_only(&h.members_db(i))
                .unwrap()
                .stored_rounds_from(0)
                .unwrap()
        })
        .collect();
    let common = rounds.iter().map(|r| *r.last().unwrap()).min().unwrap();
    let upto = |r: &Vec<u64>| {
        r.iter()
            .copied()
            .filter(|&x| x <= common)
            .collect::<Vec<_>>()
    };
    for (i, r) in rounds.iter().enumerate().skip(1) {
        assert_eq!(upto(r), upto(&rounds[0]), "member {} vs member 1", i + 1);
    }
    assert!(
        rounds[3].iter().any(|&r| r > cut_at && r <= healed_at),
        "member 4 holds rounds of the partition"
    );

    // Margin: every member applied the same inputs in the same order and
    // got the same events (one log is a prefix of another: they stopped at
    // different rounds), and the same state at the common prefix.
    let logs: Vec<(Vec<String>, Vec<String>)> =
        (1..=4).map(|i| margin_log(&h.members_db(i))).collect();
    let n = logs.iter().map(|(i, _)| i.len()).min().unwrap();
    let e = logs.iter().map(|(_, e)| e.len()).min().unwrap();
    assert!(
        n > 30,
        "the demo book and reports: {n} inputs; per member {:?}",
        logs.iter().map(|(i, _)| i.len()).collect::<Vec<_>>()
    );
    for (i, (inputs, events)) in logs.iter().enumerate().skip(1) {
        assert_eq!(inputs[..n], logs[0].0[..n], "member {} inputs", i + 1);
        assert_eq!(events[..e], logs[0].1[..e], "member {} events", i + 1);
    }
    let rounds4 = input_rounds(&logs[3].0);
    assert!(
        rounds4.windows(2).all(|w| w[0] < w[1]),
        "reports applied in round order: {rounds4:?}"
    );
    assert!(
        rounds4.iter().any(|&r| r > cut_at && r <= healed_at),
        "member 4's engine took the rounds it missed"
    );
    let state = |inputs: &[String]| {
        serde_json::to_string(&h.restore_log(inputs).engine.snapshot()).unwrap()
    };
    let reference = state(&logs[0].0[..n]);
    for (i, (inputs, _)) in logs.iter().enumerate().skip(1) {
        assert_eq!(state(&inputs[..n]), reference, "member {} state", i + 1);
    }
}

/// The value of the sample `line_start` (e.g. `sibyl_rounds_signed_total`) in
/// the text exposition.
fn sample(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

#[tokio::test(start_paused = true)]
async fn driver_metrics_follow_the_rounds() {
    let (mut h, transports) = Harness::new(4, 3);
    for (i, t) in transports.into_iter().enumerate() {
        h.start(i as u16 + 1, t).await;
    }
    let s1 = h.members[&1].status.clone();
    wait_for("5 reports at member 1, one of them led by it", 30, || {
        let p = status_snapshot(&s1).protocol;
        p.reports_accepted >= 5 && p.reports_led >= 1
    })
    .await;
    h.control.inject(2, 1, vec![0xff, 1, 2, 3]);
    wait_for("malformed counted", 5, || {
        status_snapshot(&s1).driver.malformed_messages >= 1
    })
    .await;
    // A gossiped report with more leaves than the committee has feeds is
    // refused before any signature or leaf is checked, even when the group
    // signed it (here with the dealer's keys).
    h.wait_stored(1, &s1).await;
    let mut big = h.reports(1).pop().expect("a stored report");
    // A round nobody holds (a held round's copy is dropped as a duplicate).
    big.header.round += 1_000_000;
    let extra = big.leaves[0].clone();
    for i in 0..h.committee.feeds.len() {
        let mut leaf = extra.clone();
        leaf.feed_id = sibyl_aggregator::report::FeedId::new(format!("ZZ{i}-USD")).unwrap();
        big.leaves.push(leaf);
    }
    big.leaves.sort_by(|a, b| a.feed_id.cmp(&b.feed_id));
    big.header.merkle_root = sibyl_aggregator::merkle::root(&big.leaves);
    let digest = sibyl_aggregator::digest::header_digest(&big.header);
    let mut rng = ChaCha20Rng::seed_from_u64(3);
    let signers = sibyl_aggregator::testkit::first_signers(&h.keys, 3);
    let sig = sibyl_aggregator::testkit::threshold_sign(&h.keys, &signers, &digest, &mut rng)
        .and_then(|s| s.serialize())
        .unwrap();
    big.signatures.insert(
        sibyl_aggregator::report::Suite::Ed25519,
        sibyl_aggregator::report::SignatureBytes(sig),
    );
    assert!(sibyl_aggregator::verify::verify_report(&big, &h.group_keys()).is_ok());
    let before = status_snapshot(&s1).driver.invalid_reports;
    h.control
        .inject_report(2, 1, sibyl_aggregator::codec::Encode::to_bytes(&big));
    wait_for("oversized report refused", 5, || {
        status_snapshot(&s1).driver.invalid_reports > before
    })
    .await;
    assert!(
        h.reports(1)
            .iter()
            .all(|r| r.header.round != big.header.round),
        "the oversized report was stored"
    );
    tokio::time::sleep(Duration::from_millis(150)).await;
    let status = status_snapshot(&s1);
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &h.members[&1].registry).unwrap();
    let text = crate::driver::metrics::openmetrics_to_prometheus(&text);

    let signed = sample(&text, "sibyl_rounds_signed_total").expect(&text);
    assert!(signed >= 5.0, "{text}");
    let led = sample(&text, "sibyl_rounds_led_total").expect(&text);
    assert!(led >= 1.0 && led <= signed, "{text}");
    assert!(
        sample(&text, "sibyl_rounds_missed_total").is_some(),
        "{text}"
    );
    let observed = sample(&text, "sibyl_round_duration_seconds_count").expect(&text);
    assert!(observed >= 1.0 && observed <= signed, "{text}");
    let round = sample(&text, "sibyl_current_round").expect(&text);
    // Set on entering a round, before the status is refreshed: never behind it.
    assert!(round >= status.round as f64 && round >= 5.0, "{text}");
    assert_eq!(
        sample(&text, "sibyl_messages_malformed_total"),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, "sibyl_signing_ledger_refusals_total"),
        Some(0.0),
        "{text}"
    );
    for m in 2..=4 {
        assert_eq!(
            sample(&text, &format!(r#"sibyl_peer_connected{{member="{m}"}}"#)),
            Some(1.0),
            "{text}"
        );
    }
    assert!(
        !text.contains(r#"sibyl_peer_connected{member="1"}"#),
        "{text}"
    );
    for m in 1..=4 {
        assert_eq!(
            sample(
                &text,
                &format!(r#"sibyl_share_failures_total{{member="{m}"}}"#)
            ),
            Some(0.0),
            "{text}"
        );
    }
    for feed in ["BTC-USD", "ETH-USD"] {
        let age = sample(
            &text,
            &format!(r#"sibyl_feed_age_seconds{{feed="{feed}"}}"#),
        )
        .expect(&text);
        // Rounds every 100 ms; the newest report is well under 5 s old.
        assert!((0.0..5.0).contains(&age), "{feed}: {age}\n{text}");
        assert_eq!(
            sample(
                &text,
                &format!(r#"sibyl_feed_heartbeat_seconds{{feed="{feed}"}}"#)
            ),
            Some(1.0),
            "{text}"
        );
    }
    promtool_check(&text);

    for (_, m) in std::mem::take(&mut h.members) {
        let _ = m.shutdown.send(true);
        let _ = tokio::time::timeout(Duration::from_secs(5), m.task).await;
    }
}

/// `promtool check metrics` accepts the exposition (Debian's `prometheus`
/// package, installed by scripts/setup.d/30-api).
fn promtool_check(text: &str) {
    use std::io::Write;
    let mut child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect(
            "promtool not found: install Debian's `prometheus` package (scripts/setup.d/30-api)",
        );
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics failed:\n{}{}\n---\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `/v1/committee` shows what each member sees of the others: they were
/// heard from, the leaders of signed rounds led them, shares arrived.
#[tokio::test(start_paused = true)]
async fn committee_status_shows_each_members_figures() {
    let (mut h, transports) = Harness::new(4, 3);
    for (i, t) in transports.into_iter().enumerate() {
        h.start(i as u16 + 1, t).await;
    }
    let status: BTreeMap<u16, StatusHandle> = h
        .members
        .iter()
        .map(|(i, m)| (*i, m.status.clone()))
        .collect();
    wait_for("8 reports at every member", 30, || {
        status
            .values()
            .all(|s| status_snapshot(s).protocol.reports_accepted >= 8)
    })
    .await;
    // The member views are refreshed a few times a second.
    tokio::time::sleep(Duration::from_millis(500)).await;
    h.wait_stored(1, &status[&1]).await;
    let now = h.clock.now_ms();
    let leaders: BTreeSet<u16> = {
        let protocol = h.committee.to_protocol().unwrap();
        h.reports(1)
            .iter()
            .map(|r| protocol.leader(r.header.round))
            .collect()
    };
    assert!(!leaders.is_empty());
    let mut shares = 0;
    for (&me, s) in &status {
        // What sibyl-api's `/v1/committee` serves: every committee member
        // with this member's view of it.
        let snap = status_snapshot(s);
        assert_eq!(snap.member, me);
        let views: Vec<(u16, members::MemberView)> = h
            .committee
            .members
            .iter()
            .map(|m| {
                (
                    m.index,
                    snap.members.get(&m.index).cloned().unwrap_or_default(),
                )
            })
            .collect();
        assert_eq!(views.len(), 4);
        for (index, m) in &views {
            if *index == me {
                assert_eq!(m.last_seen_ms, None, "member {me} about itself");
                continue;
            }
            let seen = m
                .last_seen_ms
                .unwrap_or_else(|| panic!("member {me} never saw member {index}: {views:?}"));
            assert!(
                now.saturating_sub(seen) < 5_000,
                "member {me} last saw member {index} {} ms ago",
                now.saturating_sub(seen)
            );
            shares += m.shares_received;
        }
        for &leader in &leaders {
            let (_, led) = views.iter().find(|(i, _)| *i == leader).unwrap();
            // Member 1's reports' leaders; a member may have missed one of
            // them, never all.
            if me == 1 {
                assert!(led.rounds_led > 0, "member 1: leader {leader}: {views:?}");
            }
        }
        let total: u64 = views.iter().map(|(_, m)| m.rounds_led).sum();
        let accepted = status_snapshot(s).protocol.reports_accepted;
        assert!(
            total > 0 && total <= accepted,
            "member {me}: {total} > {accepted}"
        );
    }
    assert!(shares > 0, "no member received a share");

    for (_, m) in std::mem::take(&mut h.members) {
        let _ = m.shutdown.send(true);
        let _ = tokio::time::timeout(Duration::from_secs(5), m.task).await;
    }
}

/// A restarted member starts from the newest stored leaf of each feed, every
/// field of it, so its next leaves equal those of a member that never
/// stopped (the pure function is property-tested in the aggregator).
#[tokio::test]
async fn a_restore_hands_the_newest_stored_leaf_of_each_feed_to_the_round() {
    use sibyl_aggregator::aggregate::LastValue;
    use sibyl_aggregator::{ConfigDigest, FeedId, LeafStatus, ReportLeaf};
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("n.db")).unwrap();
    let observed = observed::ObservationLedger::open(&dir.path().join("n.observed")).unwrap();
    let leaf = |price: i128, at: u64| ReportLeaf {
        bid: price - 1,
        ask: price + 1,
        venues: 4,
        status: LeafStatus::Degraded,
        flags: sibyl_aggregator::report::flags::UNCONFIRMED_JUMP,
        ema: price - 7,
        ema_confidence: 13,
        volatility: 612_345_678,
        ..ReportLeaf::basic(FeedId::new("BTC-USD").unwrap(), price, 5, 4, at)
    };
    let mut newest = None;
    for (round, ts) in [(1u64, 10_000u64), (2, 11_000)] {
        let leaves = vec![leaf(1_000 + round as i128, ts - 100)];
        newest = Some((leaves[0].clone(), ts));
        let report = unsigned_report(round, ts, leaves);
        assert!(store.writer.insert_report(report).await.unwrap());
    }
    let (newest, ts) = newest.unwrap();
    let restore = restore_from(&store.readers, &observed, 16, &ConfigDigest([1; 32])).unwrap();
    assert_eq!(
        restore.last_values[&newest.feed_id],
        LastValue::of_leaf(&newest, ts)
    );
    // Another committee (members removed or added since): nothing carries
    // over, as at a member that joined with an empty store; the rounds go
    // on after the stored ones (the signing ledger holds them).
    let restore = restore_from(&store.readers, &observed, 16, &ConfigDigest([2; 32])).unwrap();
    assert!(restore.last_values.is_empty());
    assert_eq!(restore.round, 3);
}

/// A member that missed the newest report computes other leaves than the
/// committee (each feed's EMA, volatility and jump flag start from its
/// previous leaf) and refuses every proposal as a mismatch. With exactly t
/// members up, no later report comes to show it the gap: it must ask for
/// what it missed when it sees the committee in a round it holds no
/// predecessor of. (The docker test met this: member 4, restarted, missed
/// one report before its gossip mesh formed, then member 3 was killed and
/// the committee signed nothing until member 3 came back.)
#[tokio::test(start_paused = true)]
async fn a_member_missing_the_newest_report_fetches_it_when_only_t_are_up() {
    let (mut h, transports) = Harness::new(4, 3);
    for (i, t) in (1..=4).zip(transports) {
        h.start(i, t).await;
    }
    let s1 = h.members[&1].status.clone();
    wait_for("5 reports", 30, || {
        status_snapshot(&s1).protocol.reports_accepted >= 5
    })
    .await;
    // Member 4 misses two reports the others sign; then member 3 goes.
    h.control.set_cut(4, true);
    let cut_at = status_snapshot(&s1).last_report_round.unwrap();
    wait_for("2 reports without member 4", 30, || {
        status_snapshot(&s1)
            .last_report_round
            .is_some_and(|r| r >= cut_at + 2)
    })
    .await;
    let gone = h.stop(3);
    let _ = tokio::time::timeout(Duration::from_secs(5), gone.task).await;
    let missed_to = status_snapshot(&s1).last_report_round.unwrap();
    h.control.set_cut(4, false);
    let healed = tokio::time::Instant::now();
    // Members 1, 2 and 4 are exactly t: every report needs member 4.
    wait_for("a report signed by members 1, 2 and 4", 20, || {
        status_snapshot(&s1)
            .last_report_round
            .is_some_and(|r| r > missed_to)
    })
    .await;
    let s4 = h.members[&4].status.clone();
    let d4 = status_snapshot(&s4).driver;
    assert!(
        d4.caught_up_reports >= 1,
        "member 4 fetched what it missed: {d4:?}"
    );
    eprintln!(
        "member 4 missed rounds {}..={missed_to}; the three signed again {:.0} ms (virtual) after it was reconnected",
        cut_at + 1,
        healed.elapsed().as_secs_f64() * 1e3
    );
    for (_, m) in std::mem::take(&mut h.members) {
        let _ = m.shutdown.send(true);
        let _ = tokio::time::timeout(Duration::from_secs(5), m.task).await;
    }
}

/// A command through member `m`'s margin service (committee-ordered).
async fn send_command(
    h: &Harness,
    m: u16,
    command: sibyl_margin::Command,
) -> Result<Vec<sibyl_margin::EventRecord>, crate::margin_svc::MarginError> {
    h.members[&m].margin.clone().unwrap().command(command).await
}

fn usd(units: i128) -> i128 {
    units * sibyl_margin::fixed::MONEY_SCALE
}

/// Commands sent to different members are ordered by the committee: each
/// API call answers once its command is in a signed report, and every
/// member applies the same commands in the same order (the same inputs,
/// events and state, and the same refusal of a withdrawal that two members
/// raced for). A member cut off meanwhile takes the commands it missed
/// from the reports it catches up, and its own command, offered while it
/// was cut off, is ordered once it is back.
#[tokio::test(start_paused = true)]
async fn commands_sent_to_different_members_apply_in_the_same_order_everywhere() {
    use sibyl_margin::Command;
    let (mut h, transports) = Harness::new(4, 3);
    h.margin = true;
    for (i, t) in transports.into_iter().enumerate() {
        h.start(i as u16 + 1, t).await;
    }
    for m in h.members.values() {
        let margin = m.margin.clone().unwrap();
        wait_for(&format!("member {}'s demo book", m.index), 30, || {
            margin.read().engine.state().accounts.len() >= 30
        })
        .await;
    }
    // Accounts opened through members 1 and 2, funded through 3 and 4.
    let (a, b) = (
        send_command(
            &h,
            1,
            Command::CreateAccount {
                account: 9_001,
                owner: None,
            },
        ),
        send_command(
            &h,
            2,
            Command::CreateAccount {
                account: 9_002,
                owner: None,
            },
        ),
    );
    let (a, b) = tokio::join!(a, b);
    assert!(a.is_ok() && b.is_ok(), "{a:?} {b:?}");
    for (m, account) in [(3, 9_001), (4, 9_002)] {
        let deposit = Command::Deposit {
            account,
            asset: "USD".into(),
            amount: usd(1_000),
        };
        send_command(&h, m, deposit).await.unwrap();
    }
    // Two members race to withdraw 600 of the 1,000: one is refused, and
    // every member refuses the same one.
    let withdraw = || Command::Withdraw {
        account: 9_001,
        asset: "USD".into(),
        amount: usd(600),
    };
    let (x, y) = tokio::join!(
        send_command(&h, 2, withdraw()),
        send_command(&h, 4, withdraw())
    );
    assert_eq!(
        [x.is_ok(), y.is_ok()].iter().filter(|ok| **ok).count(),
        1,
        "exactly one withdrawal: {x:?} {y:?}"
    );
    // A refused command answers with the engine's refusal.
    let over = send_command(
        &h,
        1,
        Command::Withdraw {
            account: 9_002,
            asset: "USD".into(),
            amount: usd(5_000),
        },
    )
    .await;
    assert!(
        matches!(over, Err(crate::margin_svc::MarginError::Engine(_))),
        "{over:?}"
    );

    // An account with an owner key: the owner's signed withdrawal, offered
    // through member 2, applies everywhere; a withdrawal of the rest that
    // "hostile" member 3's operator offers unsigned is ordered like any
    // command and refused by every engine, the account unchanged.
    let owner = [11u8; 32];
    send_command(
        &h,
        1,
        Command::CreateAccount {
            account: 9_010,
            owner: Some(sibyl_margin::signed::public_key(&owner)),
        },
    )
    .await
    .unwrap();
    send_command(
        &h,
        3,
        Command::Deposit {
            account: 9_010,
            asset: "USD".into(),
            amount: usd(1_000),
        },
    )
    .await
    .unwrap();
    let text = serde_json::to_string(&Command::Withdraw {
        account: 9_010,
        asset: "USD".into(),
        amount: usd(100),
    })
    .unwrap();
    let signed = sibyl_margin::SignedCommand::sign(&owner, &h.committee_key(), 9_010, 1, text);
    let m2 = h.members[&2].margin.clone().unwrap();
    let (mine, forged) = tokio::join!(
        m2.signed(signed),
        send_command(
            &h,
            3,
            Command::Withdraw {
                account: 9_010,
                asset: "USD".into(),
                amount: usd(900),
            },
        )
    );
    assert!(mine.is_ok(), "{mine:?}");
    assert!(
        matches!(
            forged,
            Err(crate::margin_svc::MarginError::Engine(
                sibyl_margin::EngineError::Unauthorized { account: 9_010, .. }
            ))
        ),
        "{forged:?}"
    );

    // Member 4 cut off: the others (exactly t) order member 1's command;
    // member 4's own waits for it to come back.
    h.control.set_cut(4, true);
    send_command(
        &h,
        1,
        Command::Deposit {
            account: 9_002,
            asset: "USD".into(),
            amount: usd(7),
        },
    )
    .await
    .unwrap();
    let m4 = h.members[&4].margin.clone().unwrap();
    let offered = tokio::spawn(async move {
        m4.command(Command::CreateAccount {
            account: 9_004,
            owner: None,
        })
        .await
    });
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(!offered.is_finished(), "ordered while cut off");
    h.control.set_cut(4, false);
    let events = offered.await.unwrap().unwrap();
    assert!(!events.is_empty(), "the account's creation");

    // Every member's engine takes every command; then compare the logs.
    let last_round = status_snapshot(&h.members[&1].status)
        .last_report_round
        .unwrap();
    // A later report carries a margin state after the commands.
    let m1 = h.members[&1].margin.clone().unwrap();
    wait_for("a signed margin state after the commands", 120, || {
        m1.read()
            .signed_states
            .last_key_value()
            .is_some_and(|(r, _)| *r >= last_round)
    })
    .await;
    for m in h.members.values() {
        let margin = m.margin.clone().unwrap();
        wait_for(
            &format!(
                "member {}'s margin engine passes round {last_round}",
                m.index
            ),
            30,
            || margin.read().next_round > last_round,
        )
        .await;
    }
    let roots: Vec<_> = h
        .members
        .values()
        .map(|m| {
            let margin = m.margin.clone().unwrap();
            let mut g = margin.read();
            (g.next_round, g.engine.state_root())
        })
        .collect();
    let last_states: Vec<(u16, sibyl_aggregator::MarginCheckpoint)> = h
        .members
        .values()
        .map(|m| {
            (
                m.index,
                m.margin.clone().unwrap().read().last_state.unwrap(),
            )
        })
        .collect();
    h.stop_all().await;
    let logs: Vec<(Vec<String>, Vec<String>)> =
        (1..=4).map(|i| margin_log(&h.members_db(i))).collect();
    let n = logs.iter().map(|(i, _)| i.len()).min().unwrap();
    let e = logs.iter().map(|(_, e)| e.len()).min().unwrap();
    for (i, (inputs, events)) in logs.iter().enumerate().skip(1) {
        assert_eq!(inputs[..n], logs[0].0[..n], "member {} inputs", i + 1);
        assert_eq!(events[..e], logs[0].1[..e], "member {} events", i + 1);
    }
    let commands = |inputs: &[String]| {
        inputs
            .iter()
            .filter(|b| b.starts_with("{\"command\"") && b.contains("\"account\":900"))
            .count()
    };
    // Two creations, two deposits, one withdrawal, the deposit while cut
    // off and member 4's creation; the refused ones are not inputs.
    assert_eq!(commands(&logs[0].0[..n]), 7, "{:?}", &logs[0].0[..n]);
    let signed = logs[0].0[..n]
        .iter()
        .filter(|b| b.starts_with("{\"signed\""))
        .count();
    assert_eq!(signed, 1, "the owner's withdrawal is an input");
    // The same state root from every member's log at the common prefix.
    let root_of = |inputs: &[String]| h.restore_log(inputs).engine.state_root();
    let reference = root_of(&logs[0].0[..n]);
    // Every member's log leaves the owned account with 900 USD (the owner's
    // withdrawal applied, the forged one not) and nonce 1.
    for (i, (inputs, _)) in logs.iter().enumerate() {
        let st = h.restore_log(inputs);
        let a = &st.engine.state().accounts[&9_010];
        assert_eq!((a.cash, a.nonce), (usd(900), 1), "member {}", i + 1);
    }
    for (i, (inputs, _)) in logs.iter().enumerate().skip(1) {
        assert_eq!(root_of(&inputs[..n]), reference, "member {} root", i + 1);
    }
    // Roots taken live at each member's own progress: equal where the
    // progress is.
    for (i, (round, root)) in roots.iter().enumerate() {
        for (j, (other_round, other)) in roots.iter().enumerate() {
            if round == other_round {
                assert_eq!(
                    root,
                    other,
                    "members {} and {} at round {round}",
                    i + 1,
                    j + 1
                );
            }
        }
    }
    eprintln!("live state roots by member (next round, root): {roots:?}");

    // Signed margin state roots: reports carried them, and a replay from
    // member 1's signed reports alone computes each one, and each member's
    // last state.
    let db1 = Db::open_read_only(&h.members_db(1)).unwrap();
    let reports = crate::replay::complete_reports(&db1).unwrap();
    let carried = reports.iter().filter(|r| r.margin_state.is_some()).count();
    // Virtual time runs ahead of the engines (the store and the demo book's
    // seeding run in real time), so how many reports carry one depends on
    // the machine's load: at least the one waited for above.
    assert!(
        carried >= 1,
        "{carried} of {} reports carry a margin state",
        reports.len()
    );
    let states: Vec<(u64, u64)> = reports
        .iter()
        .filter_map(|r| r.margin_state.map(|m| (r.header.round, m.round)))
        .collect();
    assert!(
        states.iter().all(|(r, s)| s < r) && states.windows(2).all(|w| w[0].1 < w[1].1),
        "each an earlier round, increasing: {states:?}"
    );
    eprintln!(
        "{carried} of {} reports carry a margin state",
        reports.len()
    );
    let replay = crate::replay::replay_reports(
        reports,
        &h.committee.feeds,
        Some(crate::margin_svc::DemoSeed {
            accounts: 30,
            seed: 7,
        }),
        Some(&h.committee_key()),
    );
    assert_eq!(replay.signed_state_mismatch, None);
    assert_eq!(replay.signed_states_matched as usize, carried);
    assert_eq!(
        replay.refused_commands, 3,
        "the lost withdrawal race, the overdraft and the forged withdrawal"
    );
    for (m, last) in &last_states {
        assert_eq!(
            replay.roots.get(&last.round),
            Some(&last.root),
            "member {m}'s engine after round {}",
            last.round
        );
    }
}

/// A signed report the store cannot take (a full disk) is held and stored
/// once there is space, without a restart, and the reports that came
/// meanwhile after it, in round order; each is announced once stored, and
/// a settled gap waits in line the same way. (Before: logged and dropped,
/// and the margin engine, which takes stored reports in round order,
/// waited for that round until a restart.)
#[tokio::test]
async fn reports_that_cannot_be_stored_wait_and_are_stored_when_space_returns() {
    use sibyl_aggregator::{FeedId, ReportLeaf};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("n.db");
    let store = Store::open(&path).unwrap();
    let (tx, mut announced) = broadcast::channel::<Arc<SignedReport>>(64);
    let sink = ReportSink::start(store.writer.clone(), tx);
    let report = |round: u64| {
        // Big leaves: each report needs new pages in the database.
        let leaves: Vec<ReportLeaf> = (0..40)
            .map(|i| {
                ReportLeaf::basic(
                    FeedId::new(format!("F{i:03}-USD")).unwrap(),
                    1_000 + i128::from(i),
                    5,
                    4,
                    round * 1_000,
                )
            })
            .collect();
        unsigned_report(round, round * 1_000, leaves)
    };
    let stored = |_: &Store| {
        let db = Db::open_read_only(&path).unwrap();
        db.reports_in(0, Round::MAX, 1_000)
            .unwrap()
            .iter()
            .map(|r| r.header.round)
            .collect::<Vec<_>>()
    };
    assert!(sink.push(report(1)));
    let first = tokio::time::timeout(Duration::from_secs(5), announced.recv())
        .await
        .expect("round 1 announced")
        .unwrap();
    assert_eq!(first.header.round, 1);
    store.writer.write(|db| db.cap_size_here()).await.unwrap();
    for round in 2..=6 {
        assert!(sink.push(report(round)));
    }
    sink.push_absent(7, 9);
    assert!(sink.push(report(9)));
    // Two retry periods with the disk full: nothing more is stored or
    // announced, and nothing is lost.
    tokio::time::sleep(SINK_RETRY * 2 + Duration::from_millis(300)).await;
    assert_eq!(stored(&store), vec![1]);
    assert!(
        announced.try_recv().is_err(),
        "announced a report it did not store"
    );
    store.writer.write(|db| db.lift_size_cap()).await.unwrap();
    let mut rounds = Vec::new();
    while rounds.len() < 6 {
        let r = tokio::time::timeout(SINK_RETRY * 3, announced.recv())
            .await
            .expect("the held reports are stored once there is space")
            .unwrap();
        rounds.push(r.header.round);
    }
    assert_eq!(rounds, vec![2, 3, 4, 5, 6, 9]);
    assert_eq!(stored(&store), vec![1, 2, 3, 4, 5, 6, 9]);
    let gaps = store
        .readers
        .read(|db| db.report_run(1, 100))
        .await
        .unwrap();
    assert_eq!(
        gaps.reports
            .iter()
            .map(|r| r.header.round)
            .collect::<Vec<_>>(),
        vec![1, 2, 3, 4, 5, 6, 9],
        "rounds 7 and 8 settled as having no report, so a run reads on past them"
    );
}

/// A report of committee digest `[1; 32]` over `leaves`, without
/// signatures (the store does not check them).
fn unsigned_report(
    round: Round,
    ts: u64,
    leaves: Vec<sibyl_aggregator::ReportLeaf>,
) -> SignedReport {
    SignedReport {
        header: sibyl_aggregator::ReportHeader {
            version: sibyl_aggregator::PROTOCOL_VERSION,
            config_digest: sibyl_aggregator::ConfigDigest([1; 32]),
            round,
            timestamp_ms: ts,
            merkle_root: sibyl_aggregator::merkle::root(&leaves),
            margin_root: [0; 32],
        },
        leaves,
        signatures: BTreeMap::new(),
        commands: Vec::new(),
        margin_state: None,
    }
}
