//! The round driver: one event loop per member that owns the network, the
//! round state machine and its timer, and interprets the machine's actions.
//!
//! ```text
//!   observations (feeds service | built-in source) ──watch──┐
//!   Transport events (libp2p Net | in-memory) ──────────────┤
//!   WakeAt timer ───────────────────────────────────────────┼──► Driver::run (select!)
//!   catch-up replies read by store tasks ───mpsc────────────┘        │
//!                                                                    ▼
//!                                             Node::handle(now, Input, rng)
//!                                                                    │ Vec<Action>
//!   Send / Broadcast ──► Transport (Envelope::Round)                 ▼
//!   RecordSigning ─────► store: exclusive transaction ──► Input::SigningRecorded
//!   SignedReport ──────► gossip (leader) ─► report sink task: store ─► API broadcast
//!   WakeAt ────────────► the one timer
//! ```
//!
//! The ledger write runs inside the loop, on the loop's own connection, on
//! purpose: no other input is handled until the signing is recorded, so the
//! share can only leave the process after it. Everything else slow (storing reports, answering
//! catch-up requests) runs in its own task.
//!
//! Catch-up ([`catchup`]): the driver keeps track of which rounds it holds
//! and asks the other members, one request at a time, for what it lacks:
//! everything after its newest report on start and whenever a peer
//! (re)connects, and every gap in the middle of its history as soon as a
//! later report shows one. Replies say which range they covered, so rounds
//! that never had a signed report are settled (and stored) once f + 1
//! members answered "none" for them. Reports from catch-up and from gossip
//! are verified against the group key before they are stored.

pub mod catchup;
pub mod clock;
#[cfg(feature = "fault-injection")]
pub mod fault;
pub mod members;
pub mod metrics;
mod net_transport;
pub mod observed;
pub mod source;
pub mod trace;
pub mod transport;

use crate::store::{StoreError, StoreHandle};
use clock::{Clock, SystemClock};
use rand_core::{CryptoRng, RngCore};
use serde::Serialize;
use sibyl_aggregator::evidence::Evidence;
use sibyl_aggregator::round::message::{Kind, peek};
use sibyl_aggregator::round::{Action, Input, LocalObservation, Node, Restore, SigningRecord};
use sibyl_aggregator::verify::{GroupKeys, verify_report};
use sibyl_aggregator::{
    ConfigDigest, Encode, FeedId, MarginCheckpoint, MarginCommand, Round, SignedReport, TimestampMs,
};
use source::ObservationRx;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{broadcast, mpsc, watch};
use trace::{Phase, RoundTrace};
use transport::{CATCHUP_PAGE, Envelope, Transport, TransportEvent};

/// A member lost and silent this long is unreachable (see `refresh_unreachable`).
const UNREACHABLE_AFTER_MS: u64 = 2_000;
/// Latency samples kept for the status (and `sibyl bench`).
const LATENCY_SAMPLES: usize = 4096;
/// How long the leader holds the gossiped copy of a report back: members get
/// the report point to point at once; the gossip copy (for members without
/// a direct connection) then arrives after they hold it and costs them no
/// verification on the round's critical path.
const GOSSIP_DELAY_US: u64 = 20_000;

/// How often `sibyl_feed_age_seconds` is refreshed.
const FEED_AGE_REFRESH_MS: u64 = 200;

/// Scheduler passes the driver gives the connection tasks on its thread
/// before signing, so messages already decided reach the sockets first
/// (a request takes a few polls: substream, negotiation, write).
const YIELDS_TO_SEND: usize = 4;
/// How long a catch-up request may stay unanswered before another member is
/// asked.
const CATCHUP_TIMEOUT_MS: u64 = 2_000;
/// How long to wait before asking again after a reply that brought nothing
/// (the peer had not stored that far yet).
const CATCHUP_RETRY_MS: u64 = 500;

/// Counters of the driver itself (the state machine has its own `Stats`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct DriverStats {
    /// Point-to-point messages that were not a valid envelope.
    pub malformed_messages: u64,
    /// Gossiped or caught-up reports that failed to decode or verify.
    pub invalid_reports: u64,
    /// Verified reports received by gossip.
    pub gossip_reports: u64,
    /// Gossiped copies of reports already held (not verified again).
    pub gossip_duplicates: u64,
    /// Verified reports received by catch-up.
    pub caught_up_reports: u64,
    pub catchup_requests_sent: u64,
    pub catchup_requests_served: u64,
    /// Every round below this one is held here or settled as having no
    /// signed report.
    pub history_complete_below: Round,
    /// Rounds below the newest held report that are still missing here.
    pub history_missing_rounds: u64,
    /// Rounds settled as having no signed report (f + 1 members had none).
    pub rounds_settled_absent: u64,
    /// Signings the ledger refused (never signed twice).
    pub ledger_refusals: u64,
    /// Signings recorded in the ledger.
    pub ledger_records: u64,
    pub ledger_errors: u64,
    pub send_errors: u64,
    pub blames: u64,
    /// Drops the transport reported (oversized, rate-limited, ...).
    pub transport_drops: u64,
    /// Commitment hints received and parsed ahead / that did not parse.
    pub commitment_hints: u64,
    pub commitment_hints_invalid: u64,
}

/// A snapshot of the driver for the API, health checks and benchmarks.
#[derive(Clone, Debug, Default, Serialize)]
pub struct NodeStatus {
    pub member: u16,
    pub round: Round,
    pub leader: u16,
    pub last_report_round: Option<Round>,
    pub connected: BTreeSet<u16>,
    pub driver: DriverStats,
    pub protocol: sibyl_aggregator::round::Stats,
    /// Round latency at this member, in microseconds, newest last: from the
    /// round's observation instant (its slot on the round grid) until this
    /// member holds the verified signed report (see [`trace`]).
    #[serde(skip)]
    pub latencies_us: VecDeque<u64>,
    /// The per-phase timings behind the latency.
    #[serde(skip)]
    pub trace: Option<RoundTrace>,
    /// Every member as this one sees it (see [`members`]).
    pub members: BTreeMap<u16, members::MemberView>,
    /// This member's estimated clock offset from the committee.
    pub clock_offset_ms: Option<i64>,
    /// Every key set this member holds (hex ids; two during a refresh).
    pub key_sets: Vec<String>,
    /// The in-node refresh ([`crate::rekey`]); `None` without one.
    pub refresh: Option<crate::rekey::RekeyStatus>,
}

/// Shared, cheaply readable view of a running driver.
pub type StatusHandle = Arc<Mutex<NodeStatus>>;

/// Reads a snapshot of the status.
pub fn status_snapshot(h: &StatusHandle) -> NodeStatus {
    h.lock().map(|s| s.clone()).unwrap_or_default()
}

/// What the report sink stores, in order.
enum SinkItem {
    Report(Box<SignedReport>),
    /// Rounds `from..end` have no signed report (settled by catch-up).
    Absent {
        from: Round,
        end: Round,
    },
}

/// How often the report sink retries a write that failed.
const SINK_RETRY: Duration = Duration::from_secs(1);
/// How often a failing report write is logged again.
const SINK_LOG_EVERY: Duration = Duration::from_secs(30);
/// Most report writes the sink holds for retry (an hour of 500 ms rounds).
const SINK_HELD: usize = 7_200;

/// Stores one sink item; a stored report is announced. On failure the item
/// comes back with the error.
async fn sink_write(
    store: &StoreHandle,
    reports: &broadcast::Sender<Arc<SignedReport>>,
    marks: &RoundTrace,
    item: SinkItem,
) -> Result<(), (SinkItem, crate::store::StoreError)> {
    match item {
        SinkItem::Report(report) => {
            let round = report.header.round;
            match store.insert_report((*report).clone()).await {
                Ok(true) => {
                    marks.mark(round, Phase::Stored);
                    let _ = reports.send(Arc::new(*report));
                    Ok(())
                }
                Ok(false) => Ok(()), // already stored
                Err(e) => Err((SinkItem::Report(report), e)),
            }
        }
        SinkItem::Absent { from, end } => store
            .write(move |db| db.insert_report_gap(from, end))
            .await
            .map_err(|e| (SinkItem::Absent { from, end }, e)),
    }
}

/// What the report sink does with every verified report: store it, then tell
/// API subscribers (and the margin engine, which then reads the store).
#[derive(Clone)]
pub struct ReportSink {
    tx: mpsc::Sender<SinkItem>,
    trace: RoundTrace,
}

impl ReportSink {
    /// Starts the sink task writing to `store`; every stored report is also
    /// sent on `reports`. A write that fails (a full disk) is kept and
    /// retried every [`SINK_RETRY`] until it is stored, so the margin engine,
    /// which takes the stored reports in round order, does not wait for the
    /// round until a restart; at most [`SINK_HELD`] writes wait (older ones
    /// are dropped: catch-up fetches those reports again after a restart).
    pub fn start(store: StoreHandle, reports: broadcast::Sender<Arc<SignedReport>>) -> Self {
        let (tx, mut rx) = mpsc::channel::<SinkItem>(1024);
        let trace = RoundTrace::default();
        let marks = trace.clone();
        tokio::spawn(async move {
            let mut held: std::collections::VecDeque<SinkItem> = std::collections::VecDeque::new();
            let mut failing_since: Option<tokio::time::Instant> = None;
            let mut logged: Option<tokio::time::Instant> = None;
            let mut retry_at = tokio::time::Instant::now();
            loop {
                let item = if held.is_empty() {
                    match rx.recv().await {
                        Some(item) => item,
                        None => return,
                    }
                } else {
                    tokio::select! {
                        next = rx.recv() => match next {
                            Some(item) => item,
                            None => return,
                        },
                        () = tokio::time::sleep_until(retry_at) => {
                            // Retry the held writes in order; stop at the
                            // first that fails again.
                            retry_at = tokio::time::Instant::now() + SINK_RETRY;
                            while let Some(item) = held.pop_front() {
                                if let Err((item, _)) = sink_write(&store, &reports, &marks, item).await {
                                    held.push_front(item);
                                    break;
                                }
                            }
                            if held.is_empty() {
                                if let Some(since) = failing_since.take() {
                                    tracing::warn!(
                                        after_s = since.elapsed().as_secs(),
                                        "signed reports are stored again: the writes that failed are done"
                                    );
                                }
                                logged = None;
                            }
                            continue;
                        }
                    }
                };
                // Behind held writes: wait in line (round order is kept).
                let item = if held.is_empty() {
                    match sink_write(&store, &reports, &marks, item).await {
                        Ok(()) => continue,
                        Err((item, e)) => {
                            let now = tokio::time::Instant::now();
                            retry_at = now + SINK_RETRY;
                            failing_since.get_or_insert(now);
                            if logged.is_none_or(|t| now.duration_since(t) >= SINK_LOG_EVERY) {
                                logged = Some(now);
                                tracing::error!(error = %e, "cannot store a signed report (or a settled gap): held in memory and retried every second; the margin engine waits for it. Free space on the disk holding the database");
                            }
                            item
                        }
                    }
                } else {
                    item
                };
                held.push_back(item);
                if held.len() > SINK_HELD {
                    held.pop_front();
                    tracing::error!(
                        held = SINK_HELD,
                        "too many signed reports wait to be stored: the oldest is dropped (catch-up fetches it again after a restart)"
                    );
                }
            }
        });
        Self { tx, trace }
    }

    /// The round trace the sink marks `stored` in (the driver marks the rest).
    pub fn trace(&self) -> RoundTrace {
        self.trace.clone()
    }

    /// Queues a report for the store; false when the queue is full (the
    /// report then stays missing here and catch-up fetches it again).
    fn push(&self, report: SignedReport) -> bool {
        match self.tx.try_send(SinkItem::Report(Box::new(report))) {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(error = %e, "report sink is full; a report is not stored now (catch-up will fetch it)");
                false
            }
        }
    }

    /// Queues "rounds `from..end` have no report" for the store.
    fn push_absent(&self, from: Round, end: Round) {
        if let Err(mpsc::error::TrySendError::Full(item)) =
            self.tx.try_send(SinkItem::Absent { from, end })
        {
            // Order does not matter for these: wait for room off the loop.
            let tx = self.tx.clone();
            tokio::spawn(async move {
                let _ = tx.send(item).await;
            });
        }
    }
}

/// Reads what a member restarts from: the signing ledger, the observation
/// ledger and its newest reports.
///
/// `horizon` is how many rounds of report history the leader schedule reads
/// ([`sibyl_aggregator::round::schedule::LeaderSchedule::horizon`]).
///
/// `digest`: this committee's. When the newest stored report is another
/// committee's (members were removed or added since), no feed's previous
/// leaf carries over: every member of the new committee, the one that
/// joined with an empty store too, starts each feed's EMA, volatility and
/// jump flag afresh at its first report, so they compute the same leaves.
pub fn restore_from(
    readers: &crate::store::Readers,
    observed: &observed::ObservationLedger,
    horizon: Round,
    digest: &ConfigDigest,
) -> Result<Restore, StoreError> {
    let last_observed_round = observed.last();
    readers.read_blocking(|db| {
        let last_signed = db
            .last_signed()?
            .map(|(round, digest)| SigningRecord { round, digest });
        let last = db.latest_report()?;
        // The newest stored leaf of each feed: the next leaf's EMA,
        // volatility and jump flag start from it exactly as on a member
        // that never stopped (docs/PROTOCOL.md, "EMA and volatility").
        let mut last_values = BTreeMap::new();
        let same_committee = last
            .as_ref()
            .is_none_or(|r| r.header.config_digest == *digest);
        if !same_committee {
            tracing::info!(
                "the newest stored report is another committee's (a committee change): each feed's EMA, volatility and jump flag start afresh"
            );
        }
        if same_committee {
            for p in db.latest_all()? {
                sibyl_aggregator::aggregate::note_signed_leaf(
                    &mut last_values,
                    &p.leaf(),
                    p.timestamp_ms,
                );
            }
        }
        let last_report_round = last.as_ref().map(|r| r.header.round);
        let round = last_report_round.map_or(0, |r| r + 1);
        Ok(Restore {
            round,
            last_signed,
            last_values,
            last_report_round,
            last_observed_round,
            report_rounds: db.stored_rounds_from(round.saturating_sub(horizon))?,
            history_from: db.oldest_round()?.unwrap_or(round),
        })
    })
}

/// Everything the driver runs with.
pub struct DriverParts<T: Transport, R: RngCore + CryptoRng + Send, K: Clock = SystemClock> {
    pub node: Node,
    pub transport: T,
    pub store: crate::store::Store,
    /// The signing ledger's own connection ([`crate::store::Store::signing_ledger`]).
    pub ledger: crate::store::Db,
    /// Verifies gossiped and caught-up reports.
    pub group_keys: GroupKeys,
    pub observations: ObservationRx,
    pub sink: ReportSink,
    /// Where `RecordObservation` is made durable.
    pub observed: observed::ObservationLedger,
    pub rng: R,
    pub shutdown: watch::Receiver<bool>,
    /// The only clock the driver reads or sleeps on ([`clock`]).
    pub clock: K,
    /// The in-node key refresh's channels; `None`: no refresh here.
    pub rekey: Option<crate::rekey::RekeyLink>,
    /// The margin commands this member offers for ordering
    /// ([`crate::margin_svc::MarginHandle::offers`]); `None`: none.
    pub offers: Option<watch::Receiver<Vec<MarginCommand>>>,
    /// The margin engine's state roots after its latest reports
    /// ([`crate::margin_svc::MarginHandle::attested`]), attested in this
    /// member's observations; `None`: none.
    pub attest: Option<watch::Receiver<Vec<MarginCheckpoint>>>,
}

/// The running driver. Build with [`Driver::new`], then `run().await`.
pub struct Driver<T: Transport, R: RngCore + CryptoRng + Send, K: Clock = SystemClock> {
    node: Node,
    transport: T,
    store: crate::store::Store,
    /// The signing ledger, written synchronously in the event loop.
    ledger: crate::store::Db,
    group_keys: GroupKeys,
    digest: ConfigDigest,
    observations: ObservationRx,
    sink: ReportSink,
    /// The observation ledger, written on the blocking pool.
    observed: Arc<Mutex<observed::ObservationLedger>>,
    /// The write of the next round's observation record, made ahead of it.
    observed_ahead: Option<tokio::task::JoinHandle<()>>,
    /// The next round whose observation record is due ahead, at `idle_at`.
    ahead_due: Option<Round>,
    /// When (unix ms) to do the work a round can wait for: the next round's
    /// nonces and observation record. Mid-round, away from the burst of CPU
    /// every member spends right after a round's slot (see `idle_work`).
    idle_at: Option<u64>,
    rng: R,
    shutdown: watch::Receiver<bool>,
    clock: K,
    status: StatusHandle,
    metrics: metrics::NodeMetrics,
    /// Timestamp of the newest signed report holding each feed (for
    /// `sibyl_feed_age_seconds`).
    feed_reported_at: BTreeMap<FeedId, TimestampMs>,
    /// When (unix ms) `sibyl_feed_age_seconds` was last refreshed.
    ages_updated: Option<u64>,
    wake: Option<u64>,
    connected: BTreeSet<u16>,
    /// When each member was last heard from (unix ms), by messages and reports.
    last_seen: BTreeMap<u16, u64>,
    /// Signed reports accepted here, by their round's leader.
    led: BTreeMap<u16, u64>,
    /// Whether the clock-offset warning is in force (logged on each change).
    clock_warned: bool,
    /// Members whose connection was lost and is not back.
    lost: BTreeSet<u16>,
    /// Reports stored from gossip or catch-up, for the round machine's
    /// leader schedule and its feeds' last values ([`Input::StoredReports`]).
    stored_news: Vec<SignedReport>,
    /// The unreachable set last given to the round machine.
    reported_unreachable: BTreeSet<u16>,
    stats: DriverStats,
    /// Phase timestamps of recent rounds (shared with the report sink).
    trace: RoundTrace,
    /// Reports this member led, to gossip at the given time (unix µs).
    gossip_queue: VecDeque<(u64, Round, Vec<u8>)>,
    /// Newest report round known stored (or received) here.
    stored_through: Option<Round>,
    /// Which rounds are held, settled absent or still missing here.
    history: catchup::History,
    /// The catch-up request waiting for its reply.
    catchup_inflight: Option<Inflight>,
    /// No catch-up request before this (unix ms; after a reply that
    /// brought nothing).
    catchup_retry_at: Option<u64>,
    replies_tx: mpsc::Sender<(u16, Vec<u8>)>,
    replies_rx: mpsc::Receiver<(u16, Vec<u8>)>,
    /// The in-node refresh: its events out, its commands in.
    rekey_events: Option<mpsc::Sender<crate::rekey::RekeyEvent>>,
    rekey_commands: Option<mpsc::Receiver<crate::rekey::DriverCmd>>,
    offers: Option<watch::Receiver<Vec<MarginCommand>>>,
    attest: Option<watch::Receiver<Vec<MarginCheckpoint>>>,
}

impl<T: Transport, R: RngCore + CryptoRng + Send, K: Clock> Driver<T, R, K> {
    pub fn new(parts: DriverParts<T, R, K>, last_report_round: Option<Round>) -> Self {
        let digest = *parts.node.committee().config_digest();
        let trace = parts.sink.trace();
        // The sink marks `stored` in the same trace: on the driver's clock.
        trace.use_clock(parts.clock.clone());
        let status = Arc::new(Mutex::new(NodeStatus {
            member: parts.node.index(),
            round: parts.node.round(),
            last_report_round,
            trace: Some(trace.clone()),
            ..NodeStatus::default()
        }));
        let (replies_tx, replies_rx) = mpsc::channel(64);
        let metrics = metrics::NodeMetrics::new(parts.node.committee(), parts.node.index());
        let (rekey_events, rekey_commands) = match parts.rekey {
            Some(l) => (Some(l.events), Some(l.commands)),
            None => (None, None),
        };
        metrics.set_round(parts.node.round());
        Self {
            node: parts.node,
            transport: parts.transport,
            store: parts.store,
            ledger: parts.ledger,
            group_keys: parts.group_keys,
            digest,
            observations: parts.observations,
            sink: parts.sink,
            observed: Arc::new(Mutex::new(parts.observed)),
            observed_ahead: None,
            ahead_due: None,
            idle_at: None,
            rng: parts.rng,
            shutdown: parts.shutdown,
            clock: parts.clock,
            status,
            metrics,
            feed_reported_at: BTreeMap::new(),
            ages_updated: None,
            wake: None,
            connected: BTreeSet::new(),
            last_seen: BTreeMap::new(),
            led: BTreeMap::new(),
            clock_warned: false,
            lost: BTreeSet::new(),
            stored_news: Vec::new(),
            reported_unreachable: BTreeSet::new(),
            stats: DriverStats::default(),
            trace,
            gossip_queue: VecDeque::new(),
            stored_through: last_report_round,
            // Loaded from the store when the driver starts (`load_history`).
            history: catchup::History::new(0, [], [], 0),
            catchup_inflight: None,
            catchup_retry_at: None,
            replies_tx,
            replies_rx,
            rekey_events,
            rekey_commands,
            offers: parts.offers,
            attest: parts.attest,
        }
    }

    /// A handle to the driver's status, readable while it runs.
    pub fn status(&self) -> StatusHandle {
        self.status.clone()
    }

    /// Registers the driver's metrics (see [`metrics`]) in `registry`.
    pub fn register_metrics(&self, registry: &mut prometheus_client::registry::Registry) {
        self.metrics.register(registry);
    }

    /// Runs until shutdown is signalled or the transport closes.
    pub async fn run(mut self) {
        let me = self.node.index();
        self.load_feed_ages().await;
        tracing::info!(
            member = me,
            round = self.node.round(),
            "round driver started"
        );
        self.input(Input::Tick).await;
        self.node.precompute(&mut self.rng);
        self.load_history().await;
        self.catchup_poll();
        // The ages and the committee panel exist from the start, before
        // the first event of the loop.
        self.note_key_sets();
        self.publish_status();
        loop {
            // The wake that starts a round is the observation instant every
            // phase is measured from: woken as precisely as the clock can.
            let wake_due = self.wake.is_some();
            let wake = self
                .clock
                .wake_at_us(self.wake.unwrap_or(0).saturating_mul(1000));
            let idle_sleep = self.clock.sleep_until_ms(self.idle_at.unwrap_or(0));
            let catchup_wake = self.catchup_wake();
            let catchup_sleep = self.clock.sleep_until_ms(catchup_wake.unwrap_or(0));
            let gossip_sleep = self
                .clock
                .sleep_until_us(self.gossip_queue.front().map_or(0, |(at, _, _)| *at));
            tokio::select! {
                biased;
                r = self.shutdown.changed() => {
                    if r.is_err() || *self.shutdown.borrow() {
                        break;
                    }
                }
                ev = self.transport.next_event() => {
                    if ev == TransportEvent::Closed {
                        tracing::warn!("network closed; the round driver stops");
                        break;
                    }
                    self.on_transport(ev).await;
                }
                Some(cmd) = recv_opt(&mut self.rekey_commands) => self.on_rekey(cmd),
                Some(list) = watch_changed(&mut self.offers) => {
                    self.input(Input::OfferCommands(list)).await;
                }
                Some(roots) = watch_changed(&mut self.attest) => {
                    self.input(Input::AttestMarginRoots(roots)).await;
                }
                Some((to, bytes)) = self.replies_rx.recv() => {
                    if let Err(e) = self.transport.send(to, bytes) {
                        self.stats.send_errors += 1;
                        tracing::debug!(to, error = %e, "catch-up reply not sent");
                    }
                }
                r = self.observations.changed() => {
                    if r.is_ok() {
                        let list: Vec<LocalObservation> = self.observations.borrow_and_update().clone();
                        if !list.is_empty() {
                            self.input(Input::Observations(list)).await;
                        }
                    } else {
                        // The source ended; keep serving without new observations.
                        let at = self.clock.now_ms().saturating_add(50);
                        self.clock.sleep_until_ms(at).await;
                    }
                }
                _ = wake, if wake_due => {
                    self.wake = None;
                    self.input(Input::Tick).await;
                }
                _ = gossip_sleep, if !self.gossip_queue.is_empty() => self.publish_due(),
                _ = catchup_sleep, if catchup_wake.is_some() => self.catchup_poll(),
                _ = idle_sleep, if self.idle_at.is_some() => self.idle_work(),
            }
            self.publish_status();
            self.refresh_unreachable().await;
        }
        tracing::info!(member = me, "round driver stopped");
    }

    /// Seeds the feed ages from the newest stored point of every feed.
    async fn load_feed_ages(&mut self) {
        match self.store.readers.read(|db| db.latest_all()).await {
            Ok(points) => {
                for p in points {
                    self.note_feed(p.feed_id, p.timestamp_ms);
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot read the stored feeds' latest points"),
        }
        // A committee feed with no report yet ages from the start, so its
        // stale-feed alert fires even if it is never published.
        let start = self.clock.now_ms();
        let feeds: Vec<FeedId> = self.node.committee().feeds().keys().cloned().collect();
        for id in feeds {
            self.feed_reported_at.entry(id).or_insert(start);
        }
    }

    fn note_feed(&mut self, feed: FeedId, at: TimestampMs) {
        let e = self.feed_reported_at.entry(feed).or_insert(at);
        *e = (*e).max(at);
    }

    /// Remembers the feeds of a verified report (for their age).
    fn note_report_feeds(&mut self, report: &SignedReport) {
        let at = report.header.timestamp_ms;
        for leaf in &report.leaves {
            self.note_feed(leaf.feed_id.clone(), at);
        }
    }

    fn publish_status(&mut self) {
        self.metrics.set_round(self.node.round());
        // The ages move with the clock, not with events: refreshed a few
        // times a second, not after every message of a round.
        let now = self.clock.now_ms();
        if self
            .ages_updated
            .is_none_or(|at| now.saturating_sub(at) >= FEED_AGE_REFRESH_MS)
        {
            self.ages_updated = Some(now);
            self.metrics.update_feed_ages(&self.feed_reported_at, now);
            self.publish_members(now);
        }
        if let Ok(mut s) = self.status.lock() {
            s.round = self.node.round();
            s.leader = self.node.leader_of(self.node.round());
            s.connected = self.connected.clone();
            s.driver = self.stats.clone();
            s.protocol = self.node.stats().clone();
            let gauge = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
            let m = &self.metrics;
            m.margin_states_proposed
                .set(gauge(s.protocol.margin_states_proposed));
            m.margin_states_refused
                .set(gauge(s.protocol.margin_states_refused));
            m.margin_root_disagreements
                .set(gauge(s.protocol.margin_root_disagreements));
            m.offers_sent.set(gauge(s.protocol.offers_sent));
            m.offers_relayed.set(gauge(s.protocol.offers_relayed));
            s.last_report_round = self.stored_through;
        }
    }

    /// The key sets held, in the status and `sibyl_key_sets` (on a change
    /// only: `publish_status` runs after every event).
    fn note_key_sets(&mut self) {
        let sets = self.node.key_sets();
        self.metrics
            .key_sets
            .set(i64::try_from(sets.len()).unwrap_or(i64::MAX));
        if let Ok(mut s) = self.status.lock() {
            s.key_sets = sets.iter().map(|k| format!("{k:016x}")).collect();
        }
    }

    /// What the in-node refresh asks for.
    fn on_rekey(&mut self, cmd: crate::rekey::DriverCmd) {
        use crate::rekey::DriverCmd;
        match cmd {
            DriverCmd::Send { to, bytes } => {
                if let Err(e) = self.transport.send(to, Envelope::Ceremony(bytes).encode()) {
                    self.stats.send_errors += 1;
                    tracing::debug!(to, error = %e, "refresh message not sent");
                }
            }
            DriverCmd::AddKeySet(keys) => {
                match self.node.add_key_set(keys) {
                    Ok(set) => tracing::info!(set = %format!("{set:016x}"), "new key set held"),
                    Err(e) => tracing::error!(error = %e, "the refresh's new key set is refused"),
                }
                self.note_key_sets();
            }
            DriverCmd::LeadWith(set) => {
                if self.node.lead_with(set) {
                    tracing::info!(set = %format!("{set:016x}"), "proposing with the new key set");
                } else {
                    tracing::error!(set = %format!("{set:016x}"), "cannot lead with a key set not held");
                }
                self.note_key_sets();
            }
            DriverCmd::Retire(set) => {
                self.node.retire_key_set(set);
                self.note_key_sets();
            }
            DriverCmd::Status(st) => {
                if let Ok(mut s) = self.status.lock() {
                    let (done, failed) = s
                        .refresh
                        .as_ref()
                        .map_or((0, 0), |r| (r.completed, r.failed));
                    self.metrics
                        .key_refreshes
                        .inc_by(st.completed.saturating_sub(done));
                    self.metrics
                        .key_refresh_failures
                        .inc_by(st.failed.saturating_sub(failed));
                    s.refresh = Some(st);
                }
            }
        }
    }

    fn tell_rekey(&self, event: crate::rekey::RekeyEvent) {
        if let Some(tx) = &self.rekey_events
            && tx.try_send(event).is_err()
        {
            tracing::debug!("the refresh is busy; ceremony event dropped (it re-sends)");
        }
    }

    /// Feeds one input and performs the resulting actions (and those of the
    /// inputs the actions produce, like `SigningRecorded`).
    async fn input(&mut self, input: Input) {
        // When this input arrived: what made the leader propose or a signer
        // sign (see `trace`).
        let arrived_us = self.clock.now_us();
        let mut queue: VecDeque<Action> = self
            .node
            .handle(self.clock.now_ms(), input, &mut self.rng)
            .into();
        while let Some(action) = queue.pop_front() {
            match action {
                Action::Send { to, bytes } => {
                    let kind = peek(&bytes);
                    if let Some((round, _, k)) = kind {
                        tracing::trace!(round, to, kind = ?k, "round message out");
                    }
                    #[cfg(feature = "fault-injection")]
                    if fault::withhold() && matches!(kind, Some((_, _, Kind::Share))) {
                        continue;
                    }
                    if let Err(e) = self.transport.send(to, Envelope::Round(bytes).encode()) {
                        self.stats.send_errors += 1;
                        tracing::debug!(to, error = %e, "send failed");
                    }
                    match kind {
                        Some((round, _, Kind::Proposal)) => {
                            self.trace.mark_at(round, Phase::Quorum, arrived_us);
                            self.trace.mark(round, Phase::Proposed);
                        }
                        Some((round, _, Kind::Share)) => {
                            self.trace.mark(round, Phase::ShareOut);
                        }
                        _ => {}
                    }
                }
                Action::Broadcast { bytes } => {
                    let kind = peek(&bytes);
                    if let Some((round, _, k)) = kind {
                        tracing::trace!(round, kind = ?k, "round message out to all");
                    }
                    #[cfg(feature = "fault-injection")]
                    if fault::withhold() && matches!(kind, Some((_, _, Kind::Share))) {
                        continue;
                    }
                    if let Err(e) = self.transport.broadcast(Envelope::Round(bytes).encode()) {
                        self.stats.send_errors += 1;
                        tracing::debug!(error = %e, "broadcast failed");
                    }
                    match kind {
                        Some((round, _, Kind::Report)) => {
                            self.trace.mark(round, Phase::Signed);
                        }
                        // Shares go to every member (each assembles the report).
                        Some((round, _, Kind::Share)) => {
                            self.trace.mark(round, Phase::ShareOut);
                        }
                        _ => {}
                    }
                }
                Action::RecordSigning { round, digest } => {
                    if self.node.leader_of(round) != self.node.index() {
                        self.trace.mark_at(round, Phase::ProposalIn, arrived_us);
                    }
                    // What is queued (the leader's proposal) leaves now, not
                    // after this member's own ledger write and signing: the
                    // connection tasks share this thread, so let them write
                    // it to the sockets first.
                    self.transport.flush();
                    for _ in 0..YIELDS_TO_SEND {
                        tokio::task::yield_now().await;
                    }
                    let started = Instant::now();
                    let reply = self.record_signing(round, digest);
                    self.trace
                        .duration(Phase::Ledger, micros(started.elapsed()));
                    self.trace.mark(round, Phase::Recorded);
                    queue.extend(self.node.handle(self.clock.now_ms(), reply, &mut self.rng));
                }
                Action::SignedReport(report) => self.on_signed_report(report),
                Action::Blame(evidence) => {
                    self.stats.blames += 1;
                    self.count_share_failure(&evidence);
                    tracing::warn!(?evidence, "misbehaviour detected");
                }
                Action::RoundEntered {
                    round,
                    leader,
                    start_ms,
                } => {
                    tracing::debug!(round, leader, start_ms, "entered round");
                    // Rounds left behind without a signed report (those
                    // with one were marked when it was accepted).
                    let missed = self.trace.take_missed(round);
                    if missed > 0 {
                        self.metrics.rounds_missed.inc_by(missed as u64);
                    }
                    self.metrics.set_round(round);
                    self.trace.start(round, start_ms);
                    self.trace.mark(round, Phase::Wake);
                    if self.history.entered(round) {
                        self.catchup_poll();
                    }
                }
                Action::WakeAt(at) => self.wake = Some(at),
                Action::AskReport { round, peers } => {
                    // A catch-up request for the one round, outside the
                    // catch-up's own one-at-a-time flow (its reply is
                    // handled the same way; the round counts as held once
                    // a report comes).
                    tracing::debug!(round, ?peers, "asking signers for a report not received");
                    let bytes = Envelope::CatchupRequest {
                        from: round,
                        end: round.saturating_add(1),
                        limit: 1,
                    }
                    .encode();
                    for to in peers {
                        if let Err(e) = self.transport.send(to, bytes.clone()) {
                            self.stats.send_errors += 1;
                            tracing::debug!(to, error = %e, "report request not sent");
                        }
                    }
                }
                Action::RecordObservation { round } => {
                    if let Err(e) = self.record_observation(round).await {
                        // Not durable: the observation must not go out. Stop
                        // here; the round's remaining actions are dropped.
                        self.stats.ledger_errors += 1;
                        tracing::error!(round, error = %e, "cannot record the observation; not sending it");
                        return;
                    }
                    self.trace.mark(round, Phase::Observed);
                }
            }
        }
    }

    /// The work of the next round that need not happen at its slot: its
    /// FROST nonces (six scalar multiplications), their commitments sent to
    /// the others to parse ahead, and its observation record (an fsync). Done at `idle_at`, half a round after this round's
    /// observation: every member of a committee spends its round CPU in the
    /// few milliseconds after the slot, and on a shared or small machine
    /// anything else done then delays the round's messages.
    fn idle_work(&mut self) {
        self.idle_at = None;
        self.node.precompute(&mut self.rng);
        // Let the others parse this member's next commitments now rather
        // than when they sign (see `Node::warm_commitments`).
        if let Some(c) = self.node.next_commitments() {
            let hint = Envelope::Commitments(c).encode();
            if let Err(e) = self.transport.broadcast(hint) {
                tracing::debug!(error = %e, "commitments hint not sent");
            }
        }
        if let Some(next) = self.ahead_due.take() {
            let ledger = self.observed.clone();
            self.observed_ahead = Some(tokio::task::spawn_blocking(move || {
                if let Ok(mut l) = ledger.lock()
                    && let Err(e) = l.record(next)
                {
                    tracing::warn!(round = next, error = %e, "cannot record the next observation round ahead; it will be recorded when the round starts");
                }
            }));
        }
    }

    /// Makes "observed in `round`" durable before the observation leaves.
    /// The record for the next round is written ahead, on the blocking pool
    /// half a round later (`idle_work`), so in steady state the round's observation waits for no fsync: a
    /// member that crashes then sits out at most that one round (it will not
    /// observe in a round it recorded), which is safe. A round reached by a
    /// jump is recorded here, synchronously.
    async fn record_observation(&mut self, round: Round) -> Result<(), observed::ObservedError> {
        let started = Instant::now();
        if let Some(ahead) = self.observed_ahead.take() {
            let _ = ahead.await; // normally long done
        }
        let ledger = self.observed.clone();
        let durable = ledger.lock().ok().and_then(|l| l.last());
        if durable.is_none_or(|r| r < round) {
            let ledger = ledger.clone();
            tokio::task::spawn_blocking(move || match ledger.lock() {
                Ok(mut l) => l.record(round),
                Err(_) => Err(observed::ObservedError::Poisoned),
            })
            .await
            .map_err(|_| observed::ObservedError::Poisoned)??;
        }
        self.trace
            .duration(Phase::ObservationLedger, micros(started.elapsed()));
        self.ahead_due = Some(round.saturating_add(1));
        let half = self.node.committee().timeouts().round_interval_ms / 2;
        self.idle_at = Some(self.clock.now_ms().saturating_add(half));
        Ok(())
    }

    /// Checks and writes the signing ledger in one exclusive transaction, on
    /// this thread: nothing else of the round happens until it returns.
    fn record_signing(&mut self, round: Round, digest: [u8; 32]) -> Input {
        match self
            .ledger
            .record_signing(round, &digest, self.clock.now_ms())
        {
            Ok(_) => {
                self.stats.ledger_records += 1;
                Input::SigningRecorded { round, digest }
            }
            Err(StoreError::NotSafeToSign { recorded_round, .. }) => {
                self.stats.ledger_refusals += 1;
                self.metrics.ledger_refusals.inc();
                tracing::warn!(
                    round,
                    recorded_round,
                    "signing ledger refused: not safe to sign"
                );
                Input::SigningRefused { round, digest }
            }
            Err(e) => {
                self.stats.ledger_errors += 1;
                tracing::error!(round, error = %e, "cannot write the signing ledger; not signing");
                Input::SigningRefused { round, digest }
            }
        }
    }

    /// A report the state machine accepted (it verified it, or led it).
    fn on_signed_report(&mut self, report: SignedReport) {
        let round = report.header.round;
        let latency = self
            .trace
            .mark(round, Phase::Held)
            .map(Duration::from_micros);
        let leader = self.node.leader_of(round);
        *self.led.entry(leader).or_insert(0) += 1;
        self.metrics.rounds_signed.inc();
        if leader == self.node.index() {
            self.metrics.rounds_led.inc();
        }
        self.note_report_feeds(&report);
        if let Some(l) = latency {
            self.metrics.round_duration.observe(l.as_secs_f64());
            let us = micros(l);
            if let Ok(mut s) = self.status.lock() {
                if s.latencies_us.len() >= LATENCY_SAMPLES {
                    s.latencies_us.pop_front();
                }
                s.latencies_us.push_back(us);
            }
            tracing::info!(
                round,
                leader,
                feeds = report.leaves.len(),
                latency_us = us,
                "signed report"
            );
        } else {
            tracing::info!(round, leader, feeds = report.leaves.len(), "signed report");
        }
        if leader == self.node.index() {
            let at = self.clock.now_us().saturating_add(GOSSIP_DELAY_US);
            self.gossip_queue.push_back((at, round, report.to_bytes()));
        }
        self.accept_report(report);
    }

    /// A verified report new or not: stored (once) and counted in the
    /// history; a gap it reveals is asked for. Returns whether it was new.
    fn accept_report(&mut self, report: SignedReport) -> bool {
        let round = report.header.round;
        if self.history.holds(round) {
            return false;
        }
        if self.history.settled_absent(round) {
            tracing::warn!(
                round,
                "a report turned up for a round settled as having no report: stored; a margin engine already past the round does not apply it (docs/MARGIN.md, \"Report order\")"
            );
        }
        self.note_report_feeds(&report);
        self.note_stored(round);
        let news = report.clone();
        if !self.sink.push(report) {
            return false;
        }
        self.history.hold(round);
        self.stored_news.push(news);
        self.store_settled();
        self.catchup_poll();
        true
    }

    /// Stores the rounds the history settled as having no report.
    fn store_settled(&mut self) {
        for (from, end) in self.history.take_settled() {
            self.stats.rounds_settled_absent += end - from;
            tracing::info!(
                from,
                through = end - 1,
                "catch-up: rounds settled as having no signed report"
            );
            self.sink.push_absent(from, end);
        }
        self.stats.history_complete_below = self.history.complete();
        self.stats.history_missing_rounds = self.history.missing_count();
    }

    /// Gossips the led reports whose delay is over.
    fn publish_due(&mut self) {
        let now = self.clock.now_us();
        while self
            .gossip_queue
            .front()
            .is_some_and(|(at, _, _)| *at <= now)
        {
            let Some((_, round, bytes)) = self.gossip_queue.pop_front() else {
                break;
            };
            if let Err(e) = self.transport.publish_report(bytes) {
                self.stats.send_errors += 1;
                tracing::debug!(round, error = %e, "cannot gossip the report");
            }
        }
    }

    /// Counts an invalid share against the member the evidence proves sent it.
    fn count_share_failure(&self, evidence: &Evidence) {
        if !matches!(evidence, Evidence::InvalidShare { .. }) {
            return;
        }
        match self.node.verify_evidence(evidence) {
            Ok(member) => self.metrics.share_failure(member),
            Err(e) => tracing::warn!(error = %e, "own invalid-share evidence does not verify"),
        }
    }

    fn note_stored(&mut self, round: Round) {
        if self.stored_through.is_none_or(|r| round > r) {
            self.stored_through = Some(round);
        }
    }

    /// Decodes and verifies a report from gossip or catch-up.
    fn check_report(&mut self, bytes: &[u8]) -> Option<SignedReport> {
        let report = match SignedReport::decode_expecting(bytes, &self.digest) {
            Ok(r) => r,
            Err(e) => {
                self.stats.invalid_reports += 1;
                self.metrics.invalid_reports.inc();
                tracing::debug!(error = %e, "undecodable report dropped");
                return None;
            }
        };
        // A report of this committee holds at most its feeds: a larger one
        // is refused before its signature or any leaf is checked.
        let feeds = self.node.committee().feeds().len();
        if report.leaves.len() > feeds {
            self.stats.invalid_reports += 1;
            self.metrics.invalid_reports.inc();
            tracing::warn!(
                round = report.header.round,
                leaves = report.leaves.len(),
                feeds,
                "report holds more leaves than the committee has feeds; dropped"
            );
            return None;
        }
        match verify_report(&report, &self.group_keys) {
            Ok(v) => Some(v.report),
            Err(e) => {
                self.stats.invalid_reports += 1;
                self.metrics.invalid_reports.inc();
                tracing::warn!(round = report.header.round, error = %e, "report failed verification; dropped");
                None
            }
        }
    }

    async fn on_transport(&mut self, ev: TransportEvent) {
        if let TransportEvent::Message { from, .. } | TransportEvent::Report { from, .. } = &ev {
            self.last_seen.insert(*from, self.clock.now_ms());
        }
        self.on_transport_event(ev).await;
        if !self.stored_news.is_empty() {
            let reports = std::mem::take(&mut self.stored_news);
            self.input(Input::StoredReports(reports)).await;
        }
    }

    async fn on_transport_event(&mut self, ev: TransportEvent) {
        match ev {
            TransportEvent::Message { from, bytes } => match Envelope::decode(&bytes) {
                Ok(Envelope::Round(bytes)) => {
                    if tracing::enabled!(tracing::Level::TRACE)
                        && let Some((round, sender, kind)) = peek(&bytes)
                    {
                        tracing::trace!(round, from, sender, ?kind, "round message in");
                    }
                    self.input(Input::Message { from, bytes }).await
                }
                Ok(Envelope::CatchupRequest {
                    from: first,
                    end,
                    limit,
                }) => self.serve_catchup(from, first, end, limit),
                Ok(Envelope::Commitments(bytes)) => {
                    if self.node.warm_commitments(from, &bytes) {
                        self.stats.commitment_hints += 1;
                    } else {
                        self.stats.commitment_hints_invalid += 1;
                        tracing::debug!(from, "commitments hint that does not parse");
                    }
                }
                Ok(Envelope::CatchupReply {
                    from: first,
                    end,
                    reports,
                }) => self.on_catchup_reply(from, first, end, reports),
                Ok(Envelope::Ceremony(bytes)) => {
                    self.tell_rekey(crate::rekey::RekeyEvent::Message { from, bytes })
                }
                Err(e) => {
                    self.stats.malformed_messages += 1;
                    self.metrics.malformed_messages.inc();
                    tracing::debug!(from, error = %e, "malformed message dropped");
                }
            },
            TransportEvent::Report { from, bytes } => {
                // The gossiped copy of a report the round protocol already
                // delivered (and verified) here: nothing to verify or store.
                if let Ok(r) = SignedReport::decode_expecting(&bytes, &self.digest)
                    && self.trace.is_held(r.header.round)
                {
                    self.stats.gossip_duplicates += 1;
                    return;
                }
                if let Some(r) = self.check_report(&bytes) {
                    self.stats.gossip_reports += 1;
                    tracing::debug!(
                        round = r.header.round,
                        via = from,
                        "report from gossip before the round protocol delivered it"
                    );
                    self.accept_report(r);
                }
            }
            TransportEvent::PeerConnected(peer) => {
                self.connected.insert(peer);
                self.metrics.set_connected(peer, true);
                // Whatever was signed while apart: ask for what follows.
                self.history.want_tail();
                self.catchup_poll();
                self.lost.remove(&peer);
                self.tell_rekey(crate::rekey::RekeyEvent::Connected(self.connected.clone()));
            }
            TransportEvent::PeerDisconnected(peer) => {
                self.connected.remove(&peer);
                self.metrics.set_connected(peer, false);
                self.lost.insert(peer);
                self.tell_rekey(crate::rekey::RekeyEvent::Connected(self.connected.clone()));
            }
            TransportEvent::Dropped { reason } => {
                self.stats.transport_drops += 1;
                tracing::debug!(reason, "transport dropped an inbound message");
            }
            TransportEvent::Closed => {}
        }
    }

    /// Tells the round machine (when it changes) which members are
    /// unreachable, so a round led by one of them is skipped instead of
    /// timed out: a member whose connection was lost, that is not connected
    /// again and that nothing (message, ping reply) came from for
    /// `UNREACHABLE_AFTER_MS`. A member not yet connected after start is not
    /// counted: only a lost connection is evidence.
    async fn refresh_unreachable(&mut self) {
        let now = self.clock.now_ms();
        let unreachable: BTreeSet<u16> = self
            .lost
            .iter()
            .copied()
            .filter(|m| !self.connected.contains(m))
            .filter(|m| {
                self.last_seen
                    .get(m)
                    .is_none_or(|&at| now.saturating_sub(at) > UNREACHABLE_AFTER_MS)
            })
            .collect();
        if unreachable != self.reported_unreachable {
            self.reported_unreachable = unreachable.clone();
            self.input(Input::Unreachable(unreachable.into_iter().collect()))
                .await;
        }
    }

    /// Reads which rounds are stored and settled (start of `run`).
    async fn load_history(&mut self) {
        let quorum = catchup::History::quorum_for(self.node.committee().n());
        let loaded = self
            .store
            .readers
            .read(|db| {
                let complete = db.first_missing_round()?;
                Ok((
                    complete,
                    db.stored_rounds_from(complete)?,
                    db.report_gaps_from(complete)?,
                ))
            })
            .await;
        match loaded {
            Ok((complete, held, gaps)) => {
                self.history = catchup::History::new(complete, held, gaps, quorum);
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the stored history; catch-up asks from round 0");
                self.history = catchup::History::new(0, [], [], quorum);
            }
        }
        self.stats.history_complete_below = self.history.complete();
        self.stats.history_missing_rounds = self.history.missing_count();
        tracing::info!(
            complete_below = self.history.complete(),
            newest = self.history.horizon().checked_sub(1),
            missing = self.stats.history_missing_rounds,
            "stored report history"
        );
    }

    /// The members catch-up may ask: the connected ones, or every other
    /// member while none is known connected.
    fn catchup_peers(&self) -> Vec<u16> {
        let me = self.node.index();
        let connected: Vec<u16> = self
            .connected
            .iter()
            .copied()
            .filter(|&p| p != me)
            .collect();
        if !connected.is_empty() {
            return connected;
        }
        let n = u16::try_from(self.node.committee().n()).unwrap_or(u16::MAX);
        (1..=n).filter(|&p| p != me).collect()
    }

    /// When (unix ms) the catch-up needs the loop again without an event:
    /// the in-flight request's timeout, or the end of a retry pause.
    fn catchup_wake(&self) -> Option<u64> {
        match (&self.catchup_inflight, self.catchup_retry_at) {
            (Some(f), _) => Some(f.at.saturating_add(CATCHUP_TIMEOUT_MS)),
            (None, Some(t)) => Some(t),
            (None, None) => None,
        }
    }

    /// Sends the next catch-up request if one is due: one at a time, the
    /// next as soon as a reply is in.
    fn catchup_poll(&mut self) {
        let now = self.clock.now_ms();
        if let Some(f) = &self.catchup_inflight {
            if now.saturating_sub(f.at) < CATCHUP_TIMEOUT_MS {
                return;
            }
            tracing::debug!(
                to = f.to,
                "catch-up request unanswered; asking another member"
            );
            self.catchup_inflight = None;
        }
        if self.catchup_retry_at.is_some_and(|t| now < t) {
            return;
        }
        self.catchup_retry_at = None;
        let peers = self.catchup_peers();
        if let Some(want) = self.history.next_request(&peers) {
            self.stats.catchup_requests_sent += 1;
            let bytes = Envelope::CatchupRequest {
                from: want.from,
                end: want.end,
                limit: CATCHUP_PAGE,
            }
            .encode();
            if let Err(e) = self.transport.send(want.to, bytes) {
                self.stats.send_errors += 1;
                tracing::debug!(to = want.to, error = %e, "catch-up request not sent");
            }
            self.catchup_inflight = Some(Inflight {
                to: want.to,
                from: want.from,
                end: want.end,
                at: now,
            });
        }
    }

    /// A peer's reply: its reports are verified and stored, the range it
    /// covered counts as its "none" for the rounds it sent nothing for.
    fn on_catchup_reply(&mut self, peer: u16, from: Round, end: Round, reports: Vec<Vec<u8>>) {
        let tail_request = match &self.catchup_inflight {
            Some(f) if f.to == peer && f.from == from => {
                let tail = f.end == Round::MAX;
                self.catchup_inflight = None;
                tail
            }
            _ => false,
        };
        let full_page = reports.len() >= usize::from(CATCHUP_PAGE);
        let mut new = 0u64;
        let mut trusted = true;
        let mut newest = None;
        for bytes in &reports {
            // Rounds already held cost no verification.
            if let Ok(r) = SignedReport::decode_expecting(bytes, &self.digest)
                && self.history.holds(r.header.round)
                && (from..end).contains(&r.header.round)
            {
                continue;
            }
            let Some(r) = self.check_report(bytes) else {
                trusted = false;
                continue;
            };
            let round = r.header.round;
            if !(from..end).contains(&round) {
                self.stats.invalid_reports += 1;
                trusted = false;
                tracing::warn!(
                    peer,
                    round,
                    from,
                    end,
                    "catch-up reply holds a report outside the range it covers; its range is ignored"
                );
                continue;
            }
            newest = Some(round);
            if self.accept_report(r) {
                self.stats.caught_up_reports += 1;
                new += 1;
            }
        }
        // A reply with a bad report is no evidence that a round is empty.
        let end = if trusted { end } else { from };
        self.history
            .on_reply(peer, from, end, tail_request, full_page);
        self.store_settled();
        if let Some(through) = newest.filter(|_| new > 0) {
            // Progress for the operator: a restarted member shows how far
            // behind it was and how fast it is catching up.
            tracing::info!(
                from = peer,
                reports = new,
                through_round = through,
                total_caught_up = self.stats.caught_up_reports,
                missing = self.stats.history_missing_rounds,
                "catch-up: stored missed reports"
            );
        }
        if new == 0 && end <= from {
            self.catchup_retry_at = Some(self.clock.now_ms().saturating_add(CATCHUP_RETRY_MS));
        }
        self.catchup_poll();
    }

    /// Answers a catch-up request from the store, off the event loop: the
    /// reports of `from..end` (one page) and the range the answer covers.
    fn serve_catchup(&mut self, to: u16, from: Round, end: Round, limit: u16) {
        self.stats.catchup_requests_served += 1;
        let limit = limit.clamp(1, CATCHUP_PAGE);
        let readers = self.store.readers.clone();
        let replies = self.replies_tx.clone();
        tokio::spawn(async move {
            // The newest round first: a report stored between the two reads
            // then only makes the answer cover less, never claim too much.
            let read = readers
                .read(move |db| {
                    let newest = db.newest_round()?;
                    let reports = db.reports_in(from, end, usize::from(limit))?;
                    Ok((newest, reports))
                })
                .await;
            match read {
                Ok((newest, reports)) => {
                    let covered = match reports.last() {
                        Some(last) if reports.len() == usize::from(limit) => {
                            last.header.round.saturating_add(1)
                        }
                        last => newest
                            .map_or(from, |n| n.saturating_add(1))
                            .max(last.map_or(from, |l| l.header.round.saturating_add(1)))
                            .max(from)
                            .min(end),
                    };
                    let reports = reports.iter().map(Encode::to_bytes).collect();
                    let reply = Envelope::CatchupReply {
                        from,
                        end: covered,
                        reports,
                    };
                    let _ = replies.send((to, reply.encode())).await;
                }
                Err(e) => {
                    tracing::warn!(to, error = %e, "cannot read reports for a catch-up request")
                }
            }
        });
    }
}

/// A catch-up request waiting for its reply.
/// The next item of an optional channel; pending forever without one.
/// The watched value, once it changes; never for `None` or a closed channel.
async fn watch_changed<T: Clone>(rx: &mut Option<watch::Receiver<T>>) -> Option<T> {
    if let Some(w) = rx
        && w.changed().await.is_ok()
    {
        return Some(w.borrow_and_update().clone());
    }
    std::future::pending().await
}

async fn recv_opt<T>(rx: &mut Option<mpsc::Receiver<T>>) -> Option<T> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

struct Inflight {
    to: u16,
    from: Round,
    end: Round,
    /// When it was sent (unix ms).
    at: u64,
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// p50 and p99 of samples (microseconds).
pub fn percentiles(samples: &[u64]) -> Option<(u64, u64)> {
    if samples.is_empty() {
        return None;
    }
    let mut v = samples.to_vec();
    v.sort_unstable();
    let at = |q: usize| v[((v.len() - 1) * q).div_ceil(100)];
    Some((at(50), at(99)))
}

#[cfg(test)]
mod tests;
