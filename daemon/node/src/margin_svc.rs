//! The margin service: one task owning the [`Engine`], fed by the stored
//! signed reports strictly in round order and by admin commands, persisting
//! every accepted input and every event through the store writer.
//!
//! ```text
//!  store: reports + report_gaps ─(round order)─┐  woken by reports_tx, polled
//!  admin commands (mpsc + oneshot) ────────────┤─► Engine ─► store: margin_commands (inputs)
//!                                              │               margin_events  (events)
//!  API reads ◄── Arc<Mutex<Engine>> ◄──────────┘
//! ```
//!
//! Round order whatever order reports arrive in: the service takes round
//! `r` only once every round before it is stored or settled as having no
//! report (catch-up stores those in `report_gaps`), so every member applies
//! the same reports in the same order (docs/MARGIN.md, "Report order").
//!
//! The `margin_commands` table holds every accepted input (prices and
//! commands) as `Input` JSON with the engine's input sequence; the
//! `margin_events` table holds every `EventRecord` with the engine's event
//! seq. Both are gapless, so `sibyl replay` can re-run them.
//!
//! **A write that fails** (a full disk: `StoreError::DiskFull`) loses
//! nothing and leaves no gap: the engine has applied the inputs already (it
//! cannot take them back), so their steps and marks wait in memory
//! ([`Unstored`], gauge `sibyl_margin_unstored_inputs`,
//! [`MarginHandle::unstored_inputs`]). While they wait the service writes
//! them (all in one transaction) before anything else, at least every
//! second ([`UNSTORED_RETRY`]); takes no further report, so the report
//! cursor never runs ahead of the log by more than the report that failed;
//! refuses new commands ([`MarginError::LogUnwritable`]); and takes no
//! snapshot. Once written it carries on, catching up with the reports
//! stored meanwhile. A lone engine's command whose own write failed answers
//! [`MarginError::NotDurable`]: it took effect and waits with the rest. An
//! ordered command in a report whose write failed answers with its events:
//! the report is stored and signed, and a restart takes it again.
//!
//! **Committee-ordered commands** (a service started with
//! [`MarginOptions::ordered_by`], as `sibyl run` does): an API command is
//! not applied here at once. It becomes this member's *offer*
//! ([`MarginHandle::offers`], which the round driver hands to the round
//! state machine); the member's observations carry it, the round's leader
//! orders the offers of the observations it aggregates into the report,
//! and every member applies a report's commands after its prices, in report
//! order, at the report's timestamp. A command is taken once: per origin
//! member the highest nonce taken is kept (`margin_marks`, stored with the
//! report's inputs), and a later copy (a member offers a command until it
//! sees it ordered) is skipped. The API call waits for its command's turn
//! and answers with the events it produced, as before.
//!
//! ```text
//!  API ─► MarginHandle::command ─► offers (watch) ─► driver ─► Input::OfferCommands
//!     ◄── events ◄── waiter ◄── Service::apply_report(report with commands) ◄── store
//! ```
//!
//! A command signed by its account's owner ([`MarginHandle::signed`], the
//! public `POST /v1/margin/signed`) travels the same way with the body
//! `{"signed": <envelope>}`; every engine checks the signature and nonce
//! at its turn, so a member cannot forge one, and an unsigned command on an
//! account with an owner key is refused by every engine alike. The signed
//! bytes name the committee's group key ([`committee_key`], given to the
//! engine at start as [`MarginOptions::committee`]), so an envelope made
//! for another committee's book is refused here.

pub mod book;

pub use book::DemoSeed;

use crate::config::FeedParams;
use crate::store::{MarginStep, Readers, Store, StoreError, StoreHandle};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use sibyl_aggregator::verify::GroupKeys;
use sibyl_aggregator::{
    MAX_COMMAND_BYTES, MAX_COMMANDS_PER_MEMBER, MarginCheckpoint, MarginCommand, Round,
    SignedReport, report::MAX_ATTESTED_ROOTS,
};
use sibyl_margin::engine::{AtRisk, SnapshotSource};
use sibyl_margin::{
    Command, CommitteeKey, Engine, EngineError, EventRecord, Input, PriceInput, PriceReport,
    SignedCommand,
};
use std::collections::BTreeMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::{broadcast, mpsc, oneshot, watch};

/// How often the service looks at the store again while the next round is
/// neither stored nor settled (reports wake it at once; settled gaps do not).
const FOLLOW_POLL: Duration = Duration::from_millis(250);
/// Reports read from the store per batch.
const FOLLOW_BATCH: usize = 256;
/// How long an API command waits for the committee to order it.
pub const ORDER_TIMEOUT: Duration = Duration::from_secs(30);
/// Commands this member may have offered and not yet seen ordered; one
/// more is refused as busy.
pub const MAX_OFFERED: usize = 16 * MAX_COMMANDS_PER_MEMBER;
/// How often the service tries again to store the inputs it applied but
/// could not store ([`Unstored`]).
pub const UNSTORED_RETRY: Duration = Duration::from_secs(1);
/// How often a margin log that still cannot be written is logged again.
const UNSTORED_LOG_EVERY: Duration = Duration::from_secs(30);

/// Why the service refused or failed a step.
#[derive(Debug, thiserror::Error)]
pub enum MarginError {
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error("margin store: {0}")]
    Store(#[from] StoreError),
    #[error("stored margin input {seq} is not valid JSON for an engine input: {error}")]
    BadStoredInput { seq: u64, error: String },
    #[error("stored margin input {seq} was refused by the engine on restore: {error}")]
    RestoreRefused { seq: u64, error: EngineError },
    #[error(
        "stored margin inputs jump from seq {expected} to {found}: the log is damaged; delete the margin snapshot row to replay from the start, or restore the database from a backup"
    )]
    InputGap { expected: u64, found: u64 },
    #[error("cannot encode margin data as JSON: {0}")]
    Encode(String),
    #[error("the margin service has stopped")]
    Stopped,
    /// The margin log could not be written: inputs the engine applied wait
    /// in memory ([`MarginHandle::unstored_inputs`]) and the service takes
    /// nothing new until they are stored.
    #[error(
        "the margin log in {path} cannot be written ({error}); {inputs} margin inputs this member applied wait in memory to be stored, and until they are it takes no new margin command and no further report: free space on the disk holding the database (the node retries every second and carries on by itself)"
    )]
    LogUnwritable {
        path: String,
        inputs: u64,
        error: String,
    },
    /// A lone engine's command (no committee ordering) took effect but its
    /// write failed: it waits in memory with the other unstored inputs.
    #[error(
        "margin input {seq} took effect in this member's engine (reads show it), but the margin log in {path} could not store it ({error}); it waits in memory and is written as soon as the database can be written again (free disk space): do not send it again; if the member stops before then, it is lost"
    )]
    NotDurable {
        seq: u64,
        path: String,
        error: String,
    },
    #[error(
        "the committee did not order margin command {origin}/{nonce} within {waited_s} s (too few members signing?); it is withdrawn, but a report being signed as it timed out may still carry it: look for it in the account's events before sending it again"
    )]
    NotOrdered {
        origin: u16,
        nonce: u64,
        waited_s: u64,
    },
    #[error(
        "{offered} margin commands are already waiting for the committee to order them (at most {MAX_OFFERED}); retry later"
    )]
    Busy { offered: usize },
    #[error(
        "the margin command is {len} bytes as JSON, more than the {MAX_COMMAND_BYTES} a report carries"
    )]
    CommandTooLarge { len: usize },
    #[error(
        "margin command {origin}/{nonce} in the report of round {round} is not a command: {error}"
    )]
    BadOrderedCommand {
        origin: u16,
        nonce: u64,
        round: Round,
        error: String,
    },
}

/// Converts a verified report's leaves into the engine's price input, with
/// each feed's decimals from the committee file. Leaves of feeds the
/// committee does not list are skipped (a verified report never has them).
pub fn price_report(report: &SignedReport, feeds: &[FeedParams]) -> PriceReport {
    let decimals: BTreeMap<&str, u8> = feeds.iter().map(|f| (f.id.as_str(), f.decimals)).collect();
    PriceReport {
        round: report.header.round,
        timestamp_ms: report.header.timestamp_ms,
        prices: report
            .leaves
            .iter()
            .filter_map(|l| {
                let d = *decimals.get(l.feed_id.as_str())?;
                Some(PriceInput {
                    feed: l.feed_id.as_str().to_string(),
                    price: l.price,
                    decimals: d,
                    confidence: l.confidence,
                    status: l.status.as_u8(),
                    flags: l.flags,
                    ema: l.ema,
                    ema_confidence: l.ema_confidence,
                    volatility: l.volatility,
                })
            })
            .collect(),
    }
}

/// The committee key owners sign their commands for (docs/MARGIN.md,
/// "Account keys"): the group verifying key of the committee's first suite
/// (FROST(Ed25519) when it signs with it, else FROST(secp256k1)) in that
/// suite's serialization. Every member, and a replay, derives the same one
/// from the same committee; a share refresh or a resharing keeps it. `None`
/// when `keys` hold no group key.
pub fn committee_key(keys: &GroupKeys) -> Option<CommitteeKey> {
    let bytes = match (&keys.ed25519, &keys.secp256k1_evm) {
        (Some(k), _) => k.serialize().ok()?,
        (None, Some(k)) => k.serialize().ok()?,
        (None, None) => return None,
    };
    CommitteeKey::new(bytes).ok()
}

/// An offer's body when it carries a command signed by an account owner:
/// `{"signed": <SignedCommand>}`. An operator's command is the `Command`'s
/// own JSON (`{"withdraw": {...}}`), which never has a `signed` key, so the
/// two cannot be confused (docs/MARGIN.md, "Account keys").
#[derive(serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct SignedOffer {
    signed: SignedCommand,
}

/// The engine input an ordered command's body stands for, at `at_ms`.
fn ordered_input(body: &str, at_ms: u64) -> Result<Input, serde_json::Error> {
    if let Ok(SignedOffer { signed }) = serde_json::from_str(body) {
        return Ok(Input::Signed { at_ms, signed });
    }
    serde_json::from_str::<Command>(body).map(|command| Input::Command { at_ms, command })
}

/// A report's ordered commands as the engine takes them, the same on every
/// member and in `sibyl replay --from-reports`: each command not taken
/// before (nonce above its origin's mark in `marks`, which moves) becomes an
/// engine input at the report's timestamp (an operator's command, or one
/// signed by its account's owner: [`SignedOffer`]), or the reason it cannot
/// (a body that is neither). Commands taken before are left out.
pub fn report_commands(
    report: &SignedReport,
    marks: &mut BTreeMap<u16, u64>,
) -> Vec<(MarginCommand, Result<Input, MarginError>)> {
    let mut out = Vec::new();
    for c in &report.commands {
        if marks.get(&c.origin).is_some_and(|m| c.nonce <= *m) {
            continue;
        }
        marks.insert(c.origin, c.nonce);
        let input = ordered_input(&c.body, report.header.timestamp_ms).map_err(|e| {
            MarginError::BadOrderedCommand {
                origin: c.origin,
                nonce: c.nonce,
                round: report.header.round,
                error: e.to_string(),
            }
        });
        out.push((c.clone(), input));
    }
    out
}

/// The kind of an event (its serde variant name), for the `kind` column.
pub fn event_kind(ev: &EventRecord) -> Result<(String, String), MarginError> {
    let v = serde_json::to_value(&ev.event).map_err(|e| MarginError::Encode(e.to_string()))?;
    let kind = match &v {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Object(m) => m.keys().next().cloned().unwrap_or_default(),
        _ => String::new(),
    };
    let body = serde_json::to_string(ev).map_err(|e| MarginError::Encode(e.to_string()))?;
    Ok((kind, body))
}

/// The service's Prometheus metrics; registered by
/// [`MarginHandle::register_metrics`], updated after every input.
#[derive(Clone)]
struct Metrics {
    inputs: Counter,
    refused: Family<KindLabel, Counter>,
    liquidations: Counter,
    margin_calls: Counter,
    accounts: Gauge,
    units_in_margin_call: Gauge,
    insurance_fund: Gauge<f64, AtomicU64>,
    units_examined: Gauge,
    step_seconds: Family<KindLabel, Histogram, fn() -> Histogram>,
    /// Inputs applied but not yet stored ([`Unstored`]); 0 normally.
    unstored_inputs: Gauge,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabel {
    /// `prices`, `command` or `signed`; `bands`: the trigger-band work
    /// after an input (`Engine::settle`), off the input's critical path;
    /// `examinations` and `root`: the two costly phases inside `prices`.
    kind: &'static str,
}

impl Default for Metrics {
    fn default() -> Self {
        fn step_histogram() -> Histogram {
            // 10 µs .. ~5 s
            Histogram::new(exponential_buckets(0.00001, 2.5, 15))
        }
        Self {
            inputs: Counter::default(),
            refused: Family::default(),
            liquidations: Counter::default(),
            margin_calls: Counter::default(),
            accounts: Gauge::default(),
            units_in_margin_call: Gauge::default(),
            insurance_fund: Gauge::default(),
            units_examined: Gauge::default(),
            step_seconds: Family::new_with_constructor(step_histogram),
            unstored_inputs: Gauge::default(),
        }
    }
}

impl Metrics {
    /// After an input is applied (`inputs` counts it once stored).
    fn observe(&self, engine: &Engine, events: &[EventRecord]) {
        for e in events {
            match e.event {
                sibyl_margin::Event::Liquidated { .. } => {
                    self.liquidations.inc();
                }
                sibyl_margin::Event::MarginCall { .. } => {
                    self.margin_calls.inc();
                }
                _ => {}
            }
        }
        self.gauges(engine);
    }

    /// A report's examinations and state root, each its own `kind`
    /// (both inside the report's `kind="prices"` step).
    fn report_phases(&self, t: sibyl_margin::engine::ReportTiming) {
        for (kind, d) in [("examinations", t.examinations), ("root", t.root)] {
            self.step_seconds
                .get_or_create(&KindLabel { kind })
                .observe(d.as_secs_f64());
        }
    }

    fn gauges(&self, engine: &Engine) {
        let s = engine.state();
        self.accounts.set(s.accounts.len() as i64);
        self.units_in_margin_call.set(s.margin_calls.len() as i64);
        // Metrics only: a float is fine here, nothing is computed from it.
        self.insurance_fund
            .set(s.insurance_fund as f64 / sibyl_margin::fixed::MONEY_SCALE as f64);
        self.units_examined
            .set(i64::try_from(engine.examined_units()).unwrap_or(i64::MAX));
    }
}

/// The engine plus its input counter, shared with the API for reads.
pub struct MarginState {
    pub engine: Engine,
    /// Sequence number the next accepted input gets.
    pub next_input: u64,
    /// Verified reports this service has handled since it started (applied,
    /// refused, or seeding the demo book).
    pub reports_handled: u64,
    /// The round whose report the engine takes next: every stored report
    /// before it has been handled.
    pub next_round: Round,
    /// Per origin member, the highest ordered command nonce taken.
    pub marks: BTreeMap<u16, u64>,
    /// The last report handled and the engine's state root after it: the
    /// state an account proof is taken from.
    pub last_state: Option<MarginCheckpoint>,
    /// Margin states that signed reports carried, by the state's round:
    /// (its root, the round of the report that carries it); the newest
    /// [`SIGNED_STATES_KEPT`].
    pub signed_states: BTreeMap<Round, ([u8; 32], Round)>,
    /// The state roots after the latest reports handled (oldest first).
    pub recent_roots: std::collections::VecDeque<MarginCheckpoint>,
}

impl MarginState {
    /// This engine's state root after `round`, if it is among the recent ones.
    pub fn engine_root_at(&self, round: Round) -> Option<[u8; 32]> {
        self.recent_roots
            .iter()
            .find(|c| c.round == round)
            .map(|c| c.root)
    }
}

/// Signed margin states remembered for proofs.
pub const SIGNED_STATES_KEPT: usize = 256;

/// An API call waiting for its command's outcome.
type Waiter = oneshot::Sender<Result<Vec<EventRecord>, MarginError>>;

/// This member's side of committee ordering: its offers and the API calls
/// waiting for their commands' turn.
struct Orderer {
    me: u16,
    offers: watch::Sender<Vec<MarginCommand>>,
    waiters: Mutex<BTreeMap<u64, Waiter>>,
    last_nonce: Mutex<u64>,
}

impl Orderer {
    /// A nonce above every one this member used or the committee took from
    /// it: microseconds of the wall clock, or one more than the last.
    fn next_nonce(&self, taken: Option<u64>) -> u64 {
        let mut last = self.last_nonce.lock().unwrap_or_else(|p| p.into_inner());
        let now_us = crate::store::now_ms().saturating_mul(1000);
        let n = now_us
            .max(last.saturating_add(1))
            .max(taken.map_or(0, |t| t.saturating_add(1)));
        *last = n;
        n
    }

    /// Withdraws the offers `gone` names (taken, or given up on).
    fn withdraw(&self, gone: impl Fn(&MarginCommand) -> bool) {
        self.offers.send_if_modified(|v| {
            let before = v.len();
            v.retain(|c| !gone(c));
            v.len() != before
        });
    }

    fn resolve(&self, nonce: u64, result: Result<Vec<EventRecord>, MarginError>) {
        let waiter = self
            .waiters
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&nonce);
        if let Some(w) = waiter {
            let _ = w.send(result);
        }
    }
}

/// Cloneable handle: reads through the shared state, writes through the task.
#[derive(Clone)]
pub struct MarginHandle {
    state: Arc<Mutex<MarginState>>,
    commands: mpsc::Sender<CommandMsg>,
    metrics: Metrics,
    /// The last ranking of units closest to liquidation, with the input
    /// count it was computed at: every dashboard asks for it after every
    /// report, and each answer evaluates ~1,000 units.
    at_risk: AtRiskCache,
    /// Committee ordering; `None`: commands apply here at once.
    orderer: Option<Arc<Orderer>>,
    /// The state roots after the latest reports, for the driver to attest.
    attest: watch::Sender<Vec<MarginCheckpoint>>,
    /// Why the margin log is behind the engine, while it is.
    log_fault: LogFaultCell,
}

/// The margin log is behind the engine: inputs applied wait in memory
/// because their write failed ([`Unstored`]).
#[derive(Clone, Debug)]
struct LogFault {
    /// The database file.
    path: String,
    /// [`Unstored::count`].
    inputs: u64,
    /// The last failed write's error.
    error: String,
}

impl LogFault {
    fn refusal(&self) -> MarginError {
        MarginError::LogUnwritable {
            path: self.path.clone(),
            inputs: self.inputs,
            error: self.error.clone(),
        }
    }
}

type LogFaultCell = Arc<Mutex<Option<LogFault>>>;

fn lock_fault(cell: &LogFaultCell) -> MutexGuard<'_, Option<LogFault>> {
    cell.lock().unwrap_or_else(|p| p.into_inner())
}

/// `(engine input count, ranking)`.
type AtRiskCache = Arc<Mutex<Option<(u64, Vec<AtRisk>)>>>;

/// Rows of the cached at-risk ranking (the API's largest page).
pub const AT_RISK_CACHED: usize = 1_000;

impl MarginHandle {
    /// Lock the engine for a read.
    pub fn read(&self) -> MutexGuard<'_, MarginState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The `n` units closest to liquidation (lowest equity / maintenance
    /// first). Computed at most once per engine input (the state, clock
    /// included, only changes with inputs) and shared by every caller.
    pub fn closest_to_liquidation(&self, n: usize) -> Vec<AtRisk> {
        let st = self.read();
        let mut cache = self.at_risk.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((at, rows)) = cache.as_ref()
            && *at == st.next_input
            && (n <= AT_RISK_CACHED || rows.len() < AT_RISK_CACHED)
        {
            return rows.iter().take(n).cloned().collect();
        }
        let mut rows = st.engine.closest_to_liquidation(n.max(AT_RISK_CACHED));
        *cache = Some((st.next_input, rows.clone()));
        rows.truncate(n);
        rows
    }

    /// Register the service's metrics (`sibyl_margin_*`) in `registry`.
    pub fn register_metrics(&self, registry: &mut Registry) {
        let m = &self.metrics;
        m.gauges(&self.read().engine);
        registry.register(
            "sibyl_margin_inputs",
            "Margin engine inputs (signed reports and commands) accepted and stored",
            m.inputs.clone(),
        );
        registry.register(
            "sibyl_margin_refused",
            "Margin engine inputs refused, by kind (prices, command, signed)",
            m.refused.clone(),
        );
        registry.register(
            "sibyl_margin_liquidations",
            "Liquidations (partial or full) by the margin engine",
            m.liquidations.clone(),
        );
        registry.register(
            "sibyl_margin_margin_calls",
            "Margin calls (a unit fell below its initial requirement)",
            m.margin_calls.clone(),
        );
        registry.register(
            "sibyl_margin_accounts",
            "Accounts in the margin engine",
            m.accounts.clone(),
        );
        registry.register(
            "sibyl_margin_units_in_margin_call",
            "Margin units currently below their initial requirement",
            m.units_in_margin_call.clone(),
        );
        registry.register(
            "sibyl_margin_insurance_fund_usd",
            "Insurance fund balance in USD",
            m.insurance_fund.clone(),
        );
        registry.register(
            "sibyl_margin_units_examined",
            "Margin units the trigger index let through for a health check since start",
            m.units_examined.clone(),
        );
        registry.register(
            "sibyl_margin_step_duration_seconds",
            "Time to apply one input to the margin engine and store it, by kind (kind=\"bands\": the trigger-band work run after a report's root is attested and its commands answered; kind=\"examinations\" and \"root\": the two costly phases of a report, inside its kind=\"prices\" step)",
            m.step_seconds.clone(),
        );
        registry.register(
            "sibyl_margin_unstored_inputs",
            "Margin inputs the engine applied that wait in memory because the margin log cannot be written (disk full?); while above 0 the engine takes no report or command. 0 normally",
            m.unstored_inputs.clone(),
        );
    }

    /// Apply an admin command; returns its events, or the engine's refusal.
    /// With committee ordering, offers it and waits (at most
    /// [`ORDER_TIMEOUT`]) until a signed report carries it and the engine
    /// has taken it at that report's turn.
    pub async fn command(&self, command: Command) -> Result<Vec<EventRecord>, MarginError> {
        self.log_writable()?;
        if let Some(o) = &self.orderer {
            let body =
                serde_json::to_string(&command).map_err(|e| MarginError::Encode(e.to_string()))?;
            return self.ordered(o, body).await;
        }
        self.unordered(Offer::Command(command)).await
    }

    /// Apply a command signed by its account's owner, as [`command`] does
    /// (offered and ordered, or at once without ordering). Before it is
    /// offered it must fit a report and pass the engine's authorization
    /// check as of now (a command, one an owner signs, the owner's valid
    /// signature, a nonce above the account's), so only plausible envelopes
    /// reach the committee; the engine checks again at its turn.
    ///
    /// [`command`]: MarginHandle::command
    pub async fn signed(&self, signed: SignedCommand) -> Result<Vec<EventRecord>, MarginError> {
        self.log_writable()?;
        let offer = SignedOffer { signed };
        let body = serde_json::to_string(&offer).map_err(|e| MarginError::Encode(e.to_string()))?;
        if body.len() > MAX_COMMAND_BYTES {
            return Err(MarginError::CommandTooLarge { len: body.len() });
        }
        self.read().engine.check_signed(&offer.signed)?;
        match &self.orderer {
            Some(o) => self.ordered(o, body).await,
            None => self.unordered(Offer::Signed(offer.signed)).await,
        }
    }

    /// Margin inputs the engine applied that wait in memory because the
    /// margin log could not be written (a full disk); 0 normally. While
    /// any wait, the service takes no report and no command.
    pub fn unstored_inputs(&self) -> u64 {
        lock_fault(&self.log_fault).as_ref().map_or(0, |f| f.inputs)
    }

    /// [`MarginError::LogUnwritable`] while inputs wait to be stored: a
    /// command now would not be taken (nor, ordered, would its report).
    fn log_writable(&self) -> Result<(), MarginError> {
        match lock_fault(&self.log_fault).as_ref() {
            Some(f) => Err(f.refusal()),
            None => Ok(()),
        }
    }

    /// A lone engine: the service task applies it at once.
    async fn unordered(&self, offer: Offer) -> Result<Vec<EventRecord>, MarginError> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send((offer, tx))
            .await
            .map_err(|_| MarginError::Stopped)?;
        rx.await.map_err(|_| MarginError::Stopped)?
    }

    /// Offers `body` (a command's JSON, or a [`SignedOffer`]'s) to the
    /// committee and waits for its turn.
    async fn ordered(
        &self,
        o: &Arc<Orderer>,
        body: String,
    ) -> Result<Vec<EventRecord>, MarginError> {
        if body.len() > MAX_COMMAND_BYTES {
            return Err(MarginError::CommandTooLarge { len: body.len() });
        }
        let offered = o.offers.borrow().len();
        if offered >= MAX_OFFERED {
            return Err(MarginError::Busy { offered });
        }
        let taken = self.read().marks.get(&o.me).copied();
        let nonce = o.next_nonce(taken);
        let (tx, rx) = oneshot::channel();
        o.waiters
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(nonce, tx);
        o.offers.send_modify(|v| {
            v.push(MarginCommand {
                origin: o.me,
                nonce,
                body,
            });
        });
        match tokio::time::timeout(ORDER_TIMEOUT, rx).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(MarginError::Stopped),
            Err(_) => {
                o.waiters
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&nonce);
                // Withdrawn, so it does not apply hours later when the
                // committee is back (only a report in flight can carry it).
                o.withdraw(|c| c.nonce == nonce);
                Err(MarginError::NotOrdered {
                    origin: o.me,
                    nonce,
                    waited_s: ORDER_TIMEOUT.as_secs(),
                })
            }
        }
    }

    /// The engine's state roots after its latest reports (at most
    /// `MAX_ATTESTED_ROOTS`), for the round driver to attest
    /// ([`crate::driver::DriverParts::attest`]).
    pub fn attested(&self) -> watch::Receiver<Vec<MarginCheckpoint>> {
        self.attest.subscribe()
    }

    /// The committee key owners sign for ([`committee_key`]); `None` if the
    /// service was started without one (it then refuses signed commands).
    pub fn committee(&self) -> Option<CommitteeKey> {
        self.read().engine.committee().cloned()
    }

    /// This member's offered commands, for the round driver
    /// ([`crate::driver::DriverParts::offers`]); `None` without ordering.
    pub fn offers(&self) -> Option<watch::Receiver<Vec<MarginCommand>>> {
        self.orderer.as_ref().map(|o| o.offers.subscribe())
    }
}

/// Rebuild the engine of `committee` (which its stored signed commands
/// were signed for) from the stored inputs (in order).
pub fn restore(
    committee: Option<&CommitteeKey>,
    inputs: &[(u64, String)],
) -> Result<MarginState, MarginError> {
    restore_from(committee, None, inputs)
}

/// Bytes before the engine snapshot in a stored snapshot row: the
/// service's `next_round` (u64, big-endian).
const SNAPSHOT_PREFIX: usize = 8;

/// A stored snapshot row's body: `next_round` then the engine's bytes.
/// Runs without the engine lock: `source` was taken under it.
fn snapshot_body(next_round: Round, source: SnapshotSource) -> Result<Vec<u8>, MarginError> {
    let engine = source.encode()?;
    let mut body = Vec::with_capacity(SNAPSHOT_PREFIX + engine.len());
    body.extend_from_slice(&next_round.to_be_bytes());
    body.extend_from_slice(&engine);
    Ok(body)
}

/// Rebuild the engine of `committee` from a stored snapshot `(inputs
/// covered, body)`, if any, and the stored inputs after it (`inputs` must
/// start at the snapshot's input count). Without a snapshot, `inputs` are
/// all of them.
pub fn restore_from(
    committee: Option<&CommitteeKey>,
    snapshot: Option<(u64, &[u8])>,
    inputs: &[(u64, String)],
) -> Result<MarginState, MarginError> {
    let (mut engine, mut next_input, mut next_round) = match snapshot {
        None => (Engine::default(), 0, 0),
        Some((covered, body)) => {
            let (round, engine) =
                body.split_at_checked(SNAPSHOT_PREFIX)
                    .ok_or(MarginError::Engine(EngineError::SnapshotCorrupt {
                        detail: "row shorter than its round prefix".into(),
                    }))?;
            let mut r = [0u8; SNAPSHOT_PREFIX];
            r.copy_from_slice(round);
            (
                Engine::decode_snapshot(engine)?,
                covered,
                u64::from_be_bytes(r),
            )
        }
    };
    // Context, not state: a snapshot does not hold it.
    if let Some(c) = committee {
        engine.set_committee(c.clone());
    }
    for (seq, body) in inputs {
        if *seq != next_input {
            return Err(MarginError::InputGap {
                expected: next_input,
                found: *seq,
            });
        }
        next_input += 1;
        let input: Input = serde_json::from_str(body).map_err(|e| MarginError::BadStoredInput {
            seq: *seq,
            error: e.to_string(),
        })?;
        engine
            .apply(&input)
            .map_err(|error| MarginError::RestoreRefused { seq: *seq, error })?;
        if let Input::Prices(r) = &input {
            next_round = next_round.max(r.round.saturating_add(1));
        }
    }
    // The replayed inputs' band work, before the service answers anything.
    engine.settle();
    Ok(MarginState {
        engine,
        next_input,
        reports_handled: 0,
        next_round,
        marks: BTreeMap::new(),
        last_state: None,
        signed_states: BTreeMap::new(),
        recent_roots: std::collections::VecDeque::new(),
    })
}

/// Units whose bands one step of [`Service::settle`] computes under the
/// engine lock (~10–30 µs each at a million accounts: a few milliseconds).
const SETTLE_STEP: usize = 128;

/// Applies one input to the engine (not yet stored): the step to store,
/// its events and its kind. The engine is only changed when it accepts.
fn apply_input(
    state: &Mutex<MarginState>,
    metrics: &Metrics,
    input: Input,
    round: Option<u64>,
) -> Result<(MarginStep, Vec<EventRecord>, KindLabel), MarginError> {
    let (at_ms, kind) = match &input {
        Input::Prices(r) => (r.timestamp_ms, KindLabel { kind: "prices" }),
        Input::Command { at_ms, .. } => (*at_ms, KindLabel { kind: "command" }),
        Input::Signed { at_ms, .. } => (*at_ms, KindLabel { kind: "signed" }),
    };
    let body = serde_json::to_string(&input).map_err(|e| MarginError::Encode(e.to_string()))?;
    let mut st = state.lock().unwrap_or_else(|p| p.into_inner());
    let events = match st.engine.apply(&input) {
        Ok(ev) => ev,
        Err(e) => {
            metrics.refused.get_or_create(&kind).inc();
            return Err(e.into());
        }
    };
    metrics.observe(&st.engine, &events);
    if matches!(input, Input::Prices(_)) {
        metrics.report_phases(st.engine.last_report_timing());
    }
    let seq = st.next_input;
    st.next_input += 1;
    if let Input::Prices(r) = &input {
        st.next_round = st.next_round.max(r.round.saturating_add(1));
    }
    drop(st);
    let rows = events
        .iter()
        .map(|e| event_kind(e).map(|(k, b)| (e.seq, k, b)))
        .collect::<Result<Vec<_>, _>>()?;
    let step = MarginStep {
        input_seq: seq,
        at_ms,
        input: body,
        round,
        events: rows,
    };
    Ok((step, events, kind))
}

/// Seed inputs (e.g. a demo book) into an engine that has none yet: the
/// service applies and stores each at once, as a lone engine's command.
/// Returns how many were applied and stored.
pub async fn seed(handle: &MarginHandle, inputs: Vec<Input>) -> u64 {
    let mut n = 0;
    for input in inputs {
        match handle.unordered(Offer::Input(input)).await {
            Ok(_) => n += 1,
            Err(e) => tracing::warn!(error = %e, "margin seed input refused"),
        }
    }
    n
}

/// Options of the margin service.
#[derive(Clone, Debug, Default)]
pub struct MarginOptions {
    /// Seed a demo book at the first verified report with an ok demo feed,
    /// unless the store already holds it (devnet, demos). See [`book`].
    pub demo: Option<DemoSeed>,
    /// Store an engine snapshot after every report whose round is a
    /// multiple of this (0 = never): a restart loads it and replays only
    /// the inputs after it.
    pub snapshot_every_rounds: u64,
    /// Committee ordering of commands, as member `Some(index)`: API
    /// commands become this member's offers and apply when a signed report
    /// carries them (see the module docs). `None`: they apply here at once
    /// (a lone engine: tests, tools).
    pub ordered_by: Option<u16>,
    /// The committee owners sign their commands for ([`committee_key`] of
    /// the node's group keys). `None`: signed commands are refused.
    pub committee: Option<CommitteeKey>,
}

/// Start the service: restore from the store, then run until `shutdown`.
pub async fn start(
    store: &Store,
    feeds: Vec<FeedParams>,
    reports: broadcast::Receiver<Arc<SignedReport>>,
    shutdown: watch::Receiver<bool>,
) -> Result<MarginHandle, MarginError> {
    start_with(store, feeds, reports, shutdown, MarginOptions::default()).await
}

/// [`start`] with options.
pub async fn start_with(
    store: &Store,
    feeds: Vec<FeedParams>,
    reports: broadcast::Receiver<Arc<SignedReport>>,
    shutdown: watch::Receiver<bool>,
    options: MarginOptions,
) -> Result<MarginHandle, MarginError> {
    let started = std::time::Instant::now();
    let snapshot = store.writer.write(|db| db.margin_snapshot()).await?;
    let from = snapshot.as_ref().map_or(0, |(covered, _)| *covered);
    let inputs = store
        .writer
        .write(move |db| db.margin_inputs_from(from))
        .await?;
    let mut state = restore_from(
        options.committee.as_ref(),
        snapshot.as_ref().map(|(c, b)| (*c, b.as_slice())),
        &inputs,
    )?;
    state.marks = store.writer.write(|db| db.margin_marks()).await?;
    let restored = state.next_input;
    if restored > 0 {
        tracing::info!(
            inputs = restored,
            from_snapshot = from,
            replayed = inputs.len(),
            took_ms = started.elapsed().as_millis() as u64,
            "margin engine restored from the store"
        );
    }
    let state = Arc::new(Mutex::new(state));
    // The demo book goes in at the first report it is ready at, on every
    // member alike: so also after a restart that stored only reports it
    // was not ready at (their prices inputs), never into a log that holds
    // it (the ready report's prices input is one of the book's inputs).
    let demo = match options.demo {
        Some(d) if restored > 0 => {
            let stored = store.writer.write(|db| db.margin_inputs_from(0)).await?;
            let seeded = stored.iter().any(|(_, body)| {
                serde_json::from_str::<Input>(body)
                    .is_ok_and(|i| matches!(&i, Input::Prices(p) if book::ready(p)))
            });
            (!seeded).then_some(d)
        }
        other => other,
    };
    let (tx, rx) = mpsc::channel(64);
    let metrics = Metrics::default();
    let orderer = options.ordered_by.map(|me| {
        Arc::new(Orderer {
            me,
            offers: watch::channel(Vec::new()).0,
            waiters: Mutex::new(BTreeMap::new()),
            last_nonce: Mutex::new(0),
        })
    });
    let attest = watch::channel(Vec::new()).0;
    let log_fault = LogFaultCell::default();
    let handle = MarginHandle {
        state: state.clone(),
        commands: tx,
        metrics: metrics.clone(),
        at_risk: Arc::new(Mutex::new(None)),
        orderer: orderer.clone(),
        attest: attest.clone(),
        log_fault: log_fault.clone(),
    };
    tokio::spawn(run(
        Service {
            state,
            metrics,
            writer: store.writer.clone(),
            readers: store.readers.clone(),
            feeds,
            demo,
            snapshot_every_rounds: options.snapshot_every_rounds,
            orderer,
            attest,
            unstored: Unstored::default(),
            log_fault,
            db_path: store.path().display().to_string(),
        },
        reports,
        rx,
        shutdown,
    ));
    Ok(handle)
}

/// Seeds the demo book at the first verified report with an ok demo feed
/// (which is one of its inputs, stored with its round). The book's inputs
/// are applied one by one like any others; their steps are returned to be
/// stored with the rest of the report in one transaction, so seeding costs
/// the store's writer (which also records signings) one fsync, not
/// thousands. Building and applying the book (about a second for 300
/// accounts in a debug build) runs on the blocking pool, not on a runtime
/// worker.
async fn seed_demo(
    state: &Arc<Mutex<MarginState>>,
    metrics: &Metrics,
    demo: DemoSeed,
    first: &PriceReport,
) -> Vec<MarginStep> {
    let started = std::time::Instant::now();
    let (state2, metrics2, first2) = (state.clone(), metrics.clone(), first.clone());
    let built = tokio::task::spawn_blocking(move || apply_demo(&state2, &metrics2, demo, &first2));
    let Ok(DemoApplied {
        steps,
        total,
        accounts,
        first_seq,
        built_ms,
    }) = built.await
    else {
        tracing::error!(
            "the demo book could not be built (its task failed); the margin log goes on without it"
        );
        return Vec::new();
    };
    tracing::info!(
        accounts,
        inputs = steps.len(),
        refused = total - steps.len(),
        from_input = first_seq,
        round = first.round,
        built_ms,
        took_ms = started.elapsed().as_millis() as u64,
        "margin demo book seeded at the first verified report with an ok demo feed"
    );
    steps
}

/// The demo book applied to the engine, its steps still to store.
struct DemoApplied {
    steps: Vec<MarginStep>,
    /// Inputs the book had (the refused ones are not in `steps`).
    total: usize,
    accounts: usize,
    first_seq: u64,
    built_ms: u64,
}

/// Builds the demo book and applies it to the engine (blocking).
fn apply_demo(
    state: &Mutex<MarginState>,
    metrics: &Metrics,
    demo: DemoSeed,
    first: &PriceReport,
) -> DemoApplied {
    let started = std::time::Instant::now();
    let inputs = book::demo_inputs(demo, first);
    let built_ms = started.elapsed().as_millis() as u64;
    let total = inputs.len();
    let mut steps = Vec::with_capacity(total);
    let mut st = state.lock().unwrap_or_else(|p| p.into_inner());
    let first_seq = st.next_input;
    for input in inputs {
        let (at_ms, round) = match &input {
            Input::Prices(r) => (r.timestamp_ms, Some(r.round)),
            Input::Command { at_ms, .. } | Input::Signed { at_ms, .. } => (*at_ms, None),
        };
        let body = match serde_json::to_string(&input) {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(error = %e, "cannot encode a demo book input");
                continue;
            }
        };
        let events = match st.engine.apply(&input) {
            Ok(ev) => ev,
            Err(e) => {
                tracing::warn!(error = %e, "demo book input refused");
                continue;
            }
        };
        metrics.observe(&st.engine, &events);
        if let Input::Prices(r) = &input {
            st.next_round = st.next_round.max(r.round.saturating_add(1));
        }
        let rows = events
            .iter()
            .filter_map(|e| event_kind(e).ok().map(|(k, b)| (e.seq, k, b)))
            .collect();
        steps.push(MarginStep {
            input_seq: st.next_input,
            at_ms,
            input: body,
            round,
            events: rows,
        });
        st.next_input += 1;
    }
    DemoApplied {
        steps,
        total,
        accounts: st.engine.state().accounts.len(),
        first_seq,
        built_ms,
    }
}

/// What the API hands a lone engine: an operator's command or an owner's
/// (stamped when applied), or a whole input ([`seed`]).
enum Offer {
    Command(Command),
    Signed(SignedCommand),
    Input(Input),
}

/// A command with its reply channel.
type CommandMsg = (
    Offer,
    oneshot::Sender<Result<Vec<EventRecord>, MarginError>>,
);
type CommandRx = mpsc::Receiver<CommandMsg>;

/// What the service task owns besides its channels.
struct Service {
    state: Arc<Mutex<MarginState>>,
    metrics: Metrics,
    writer: StoreHandle,
    readers: Readers,
    feeds: Vec<FeedParams>,
    /// The demo book still to seed at the first report.
    demo: Option<DemoSeed>,
    /// Snapshot period in rounds (0 = never).
    snapshot_every_rounds: u64,
    orderer: Option<Arc<Orderer>>,
    attest: watch::Sender<Vec<MarginCheckpoint>>,
    /// Inputs applied whose write failed, waiting to be stored.
    unstored: Unstored,
    /// Shared with the handle while `unstored` is not empty.
    log_fault: LogFaultCell,
    /// The database file, for messages.
    db_path: String,
}

/// Inputs the engine applied whose write failed (a full disk), in input
/// order, with the command marks they move. While any wait, the service
/// tries to write them all in one transaction before anything else, takes
/// no report (so the report cursor stays where the stored log can follow
/// it), refuses commands and takes no snapshot: the log never gets a gap.
#[derive(Default)]
struct Unstored {
    steps: Vec<MarginStep>,
    marks: BTreeMap<u16, u64>,
    /// When the first of these writes failed.
    since: Option<tokio::time::Instant>,
    /// When the failure was last logged.
    logged: Option<tokio::time::Instant>,
    /// No paced retry before this.
    retry_at: Option<tokio::time::Instant>,
}

impl Unstored {
    fn is_empty(&self) -> bool {
        self.steps.is_empty() && self.marks.is_empty()
    }

    /// The inputs waiting; at least 1 while only marks wait (a report
    /// whose prices and commands were all refused still moves marks).
    fn count(&self) -> u64 {
        (self.steps.len() as u64).max(u64::from(!self.marks.is_empty()))
    }
}

impl Service {
    /// Applies the stored reports from `next_round` on, in round order, as
    /// far as the history is complete.
    /// Nothing while applied inputs wait to be stored (and cannot be yet):
    /// the report cursor does not move past what the log holds.
    async fn follow(&mut self) {
        if !self.log_complete(true).await {
            return;
        }
        loop {
            let from = self.state().next_round;
            let run = match self
                .readers
                .read(move |db| db.report_run(from, FOLLOW_BATCH))
                .await
            {
                Ok(run) => run,
                Err(e) => {
                    tracing::warn!(round = from, error = %e, "margin engine cannot read the stored reports; retrying");
                    return;
                }
            };
            let full = run.reports.len() == FOLLOW_BATCH;
            for report in &run.reports {
                self.apply_report(report).await;
                if !self.unstored.is_empty() {
                    // Its inputs could not be stored: no further report
                    // (nor the settled gaps after these) until they are.
                    return;
                }
            }
            {
                let mut st = self.state();
                st.next_round = st.next_round.max(run.next);
            }
            if !full {
                return;
            }
        }
    }

    /// One report, in its turn: seeds the demo book at the first with
    /// an ok demo feed ([`book::ready`]), else one engine step. A refused
    /// report (the same on every member) is skipped.
    async fn apply_report(&mut self, report: &SignedReport) {
        let round = report.header.round;
        let prices = price_report(report, &self.feeds);
        let mut steps = Vec::new();
        if let Some(d) = self.demo.take_if(|_| book::ready(&prices)) {
            steps = seed_demo(&self.state, &self.metrics, d, &prices).await;
        } else {
            let started = std::time::Instant::now();
            match apply_input(
                &self.state,
                &self.metrics,
                Input::Prices(prices),
                Some(round),
            ) {
                Ok((step, _, kind)) => {
                    steps.push(step);
                    self.metrics
                        .step_seconds
                        .get_or_create(&kind)
                        .observe(started.elapsed().as_secs_f64());
                }
                Err(e) => tracing::warn!(round, error = %e, "margin engine refused a report"),
            }
        }
        let (outcomes, marks) = self.take_commands(report, &mut steps);
        // On failure they wait in memory (`Unstored`, logged there); the
        // outcomes below are still answered: the commands are in a signed
        // report this member stored, and a restart takes it again.
        let stored = self.store(steps, &marks).await.is_ok();
        self.note_state(report);
        if let Some(o) = &self.orderer {
            if let Some(&mark) = marks.get(&o.me) {
                o.withdraw(|c| c.nonce <= mark);
            }
            for (nonce, result) in outcomes {
                o.resolve(nonce, result);
            }
        }
        // The root is attested and the commands answered: now the bands of
        // the units this report examined (docs/MARGIN.md, "Bands after the
        // report"), before the next report needs them.
        self.settle().await;
        // The snapshot is taken under the engine lock (a copy of the map of
        // shared accounts and the encoded index: ~0.1 s at a million
        // accounts) and encoded without it, so API reads go on meanwhile;
        // this task waits for the bytes so snapshot rows stay in input order.
        let source = {
            let mut st = self.state();
            st.reports_handled += 1;
            st.next_round = st.next_round.max(round.saturating_add(1));
            let every = self.snapshot_every_rounds;
            // Never a snapshot covering inputs the log does not hold.
            (stored && every > 0 && round.is_multiple_of(every))
                .then(|| (st.next_input, st.next_round, st.engine.snapshot_source()))
        };
        if let Some((covered, next_round, source)) = source {
            let body = match source {
                Ok(source) => {
                    tokio::task::spawn_blocking(move || snapshot_body(next_round, source))
                        .await
                        .unwrap_or_else(|e| {
                            Err(MarginError::Encode(format!("snapshot encoder: {e}")))
                        })
                }
                Err(e) => Err(e.into()),
            };
            let stored = match body {
                Ok(body) => self
                    .writer
                    .write(move |db| db.put_margin_snapshot(covered, &body))
                    .await
                    .map_err(MarginError::from),
                Err(e) => Err(e),
            };
            if let Err(e) = stored {
                tracing::warn!(round, error = %e, "margin snapshot not stored; a restart replays more inputs");
            }
        }
    }

    /// The engine's deferred band work ([`Engine::settle`]), timed as
    /// `sibyl_margin_step_duration_seconds{kind="bands"}`: in steps of
    /// [`SETTLE_STEP`] units, the engine lock released between them so API
    /// reads do not wait for all of it (~30 ms at p99 with a million
    /// accounts).
    async fn settle(&self) {
        let started = std::time::Instant::now();
        while self.state().engine.settle_some(SETTLE_STEP) {
            // A reader waiting for the lock gets it before the next step.
            tokio::task::yield_now().await;
        }
        self.metrics
            .step_seconds
            .get_or_create(&KindLabel { kind: "bands" })
            .observe(started.elapsed().as_secs_f64());
    }

    fn state(&self) -> MutexGuard<'_, MarginState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Stores `steps` (applied already) and the marks they move after the
    /// inputs still waiting, if any, in one transaction. On failure they
    /// all wait in [`Unstored`] and the error is returned.
    async fn store(
        &mut self,
        steps: Vec<MarginStep>,
        marks: &BTreeMap<u16, u64>,
    ) -> Result<(), StoreError> {
        self.unstored.steps.extend(steps);
        for (origin, nonce) in marks {
            let m = self.unstored.marks.entry(*origin).or_insert(*nonce);
            *m = (*m).max(*nonce);
        }
        self.write_unstored().await
    }

    /// Writes every input waiting in [`Unstored`] (and its marks) in one
    /// transaction. A failure keeps them, logs it (at the first failure,
    /// then every [`UNSTORED_LOG_EVERY`]) and shows it to the handle and
    /// the `sibyl_margin_unstored_inputs` gauge.
    async fn write_unstored(&mut self) -> Result<(), StoreError> {
        if self.unstored.is_empty() {
            return Ok(());
        }
        let steps = Arc::new(std::mem::take(&mut self.unstored.steps));
        let marks: Vec<(u16, u64)> = self.unstored.marks.iter().map(|(o, n)| (*o, *n)).collect();
        let batch = steps.clone();
        let written = self
            .writer
            .write(move |db| db.append_margin_report(&batch, &marks))
            .await;
        // The writer dropped its copy when the job ran (or was refused).
        let steps = Arc::unwrap_or_clone(steps);
        let now = tokio::time::Instant::now();
        match written {
            Ok(()) => {
                self.metrics
                    .inputs
                    .inc_by(u64::try_from(steps.len()).unwrap_or(u64::MAX));
                if let Some(since) = self.unstored.since {
                    tracing::warn!(
                        path = %self.db_path,
                        inputs = steps.len(),
                        after_s = now.duration_since(since).as_secs(),
                        "the margin log is written again: the inputs that waited in memory are stored, and the margin engine carries on"
                    );
                }
                self.unstored = Unstored::default();
                self.metrics.unstored_inputs.set(0);
                *lock_fault(&self.log_fault) = None;
                Ok(())
            }
            Err(e) => {
                self.unstored.steps = steps;
                let u = &mut self.unstored;
                u.retry_at = Some(now + UNSTORED_RETRY);
                let first = u.since.is_none();
                let since = *u.since.get_or_insert(now);
                let inputs = u.count();
                if first
                    || u.logged
                        .is_none_or(|t| now.duration_since(t) >= UNSTORED_LOG_EVERY)
                {
                    u.logged = Some(now);
                    tracing::error!(
                        path = %self.db_path,
                        error = %e,
                        inputs,
                        first_input = u.steps.first().map(|s| s.input_seq),
                        for_s = now.duration_since(since).as_secs(),
                        "the margin log cannot be written: inputs the margin engine applied wait in memory (sibyl_margin_unstored_inputs), and it takes no further report or command until they are stored; retried every second. Free space on the disk holding the database"
                    );
                }
                self.metrics
                    .unstored_inputs
                    .set(i64::try_from(inputs).unwrap_or(i64::MAX));
                *lock_fault(&self.log_fault) = Some(LogFault {
                    path: self.db_path.clone(),
                    inputs,
                    error: e.to_string(),
                });
                Err(e)
            }
        }
    }

    /// Whether every applied input is stored; if some wait, first one more
    /// try to write them (`paced`: not within [`UNSTORED_RETRY`] of the
    /// last).
    async fn log_complete(&mut self, paced: bool) -> bool {
        if self.unstored.is_empty() {
            return true;
        }
        if paced
            && self
                .unstored
                .retry_at
                .is_some_and(|t| tokio::time::Instant::now() < t)
        {
            return false;
        }
        self.write_unstored().await.is_ok()
    }

    /// A lone engine's input (an API command, or [`seed`]), applied at once
    /// and stored. Refused (changing nothing) while earlier inputs wait to
    /// be stored. If the engine accepts it but its write fails, it stays
    /// applied (the engine cannot take it back) and waits with the other
    /// unstored inputs; the caller gets [`MarginError::NotDurable`].
    async fn step(&mut self, input: Input) -> Result<Vec<EventRecord>, MarginError> {
        if !self.log_complete(false).await {
            let fault = lock_fault(&self.log_fault).clone();
            return Err(fault.map_or(MarginError::Stopped, |f| f.refusal()));
        }
        let started = std::time::Instant::now();
        let (step, events, kind) = apply_input(&self.state, &self.metrics, input, None)?;
        let seq = step.input_seq;
        if let Err(e) = self.store(vec![step], &BTreeMap::new()).await {
            return Err(MarginError::NotDurable {
                seq,
                path: self.db_path.clone(),
                error: e.to_string(),
            });
        }
        self.metrics
            .step_seconds
            .get_or_create(&kind)
            .observe(started.elapsed().as_secs_f64());
        self.settle().await;
        Ok(events)
    }

    /// After a report: the engine's state root (attested in this member's
    /// next observations) and the margin state the report carries.
    fn note_state(&mut self, report: &SignedReport) {
        let round = report.header.round;
        let mut st = self.state();
        let root = st.engine.state_root();
        let checkpoint = MarginCheckpoint { round, root };
        st.last_state = Some(checkpoint);
        st.recent_roots.push_back(checkpoint);
        while st.recent_roots.len() > MAX_ATTESTED_ROOTS {
            st.recent_roots.pop_front();
        }
        if let Some(m) = &report.margin_state {
            st.signed_states.insert(m.round, (m.root, round));
            while st.signed_states.len() > SIGNED_STATES_KEPT {
                st.signed_states.pop_first();
            }
            if st.engine_root_at(m.round).is_some_and(|r| r != m.root) {
                tracing::error!(
                    round = m.round,
                    signed = %hex::encode(m.root),
                    "the committee signed a margin state root this member's engine did not compute: its margin state differs from the committee's; stop the member and rebuild its margin log with `sibyl replay --from-reports`"
                );
            }
        }
        let recent: Vec<MarginCheckpoint> = st.recent_roots.iter().copied().collect();
        drop(st);
        self.attest.send_replace(recent);
    }

    /// Takes a report's ordered commands, after its prices, at its
    /// timestamp: each command not taken before (nonce above its origin's
    /// mark) is applied or refused, the same on every member. Returns this
    /// member's outcomes by nonce and the marks moved.
    #[allow(clippy::type_complexity)]
    fn take_commands(
        &mut self,
        report: &SignedReport,
        steps: &mut Vec<MarginStep>,
    ) -> (
        Vec<(u64, Result<Vec<EventRecord>, MarginError>)>,
        BTreeMap<u16, u64>,
    ) {
        let round = report.header.round;
        let mut outcomes = Vec::new();
        let mut moved = BTreeMap::new();
        let me = self.orderer.as_ref().map(|o| o.me);
        let taken = report_commands(report, &mut self.state().marks);
        for (c, input) in taken {
            moved.insert(c.origin, c.nonce);
            let result = input.and_then(|input| {
                apply_input(&self.state, &self.metrics, input, Some(round)).map(
                    |(step, events, _)| {
                        steps.push(step);
                        events
                    },
                )
            });
            match &result {
                Ok(events) => tracing::info!(
                    round,
                    origin = c.origin,
                    nonce = c.nonce,
                    events = events.len(),
                    "ordered margin command applied"
                ),
                Err(e) => tracing::info!(
                    round,
                    origin = c.origin,
                    nonce = c.nonce,
                    error = %e,
                    "ordered margin command refused (the same on every member)"
                ),
            }
            if Some(c.origin) == me {
                outcomes.push((c.nonce, result));
            }
        }
        (outcomes, moved)
    }
}

async fn run(
    mut svc: Service,
    mut reports: broadcast::Receiver<Arc<SignedReport>>,
    mut commands: CommandRx,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut sink_open = true;
    loop {
        svc.follow().await;
        tokio::select! {
            _ = shutdown.changed() => {
                if *shutdown.borrow() { break; }
            }
            // A stored report: look at the store again (whatever round it is).
            r = reports.recv(), if sink_open => {
                if let Err(broadcast::error::RecvError::Closed) = r {
                    sink_open = false;
                }
            }
            _ = tokio::time::sleep(FOLLOW_POLL) => {}
            c = commands.recv() => match c {
                Some((offer, reply)) => {
                    let now = crate::store::now_ms();
                    let at_ms = now.max(svc.state().engine.now_ms());
                    let input = match offer {
                        Offer::Command(command) => Input::Command { at_ms, command },
                        Offer::Signed(signed) => Input::Signed { at_ms, signed },
                        Offer::Input(input) => input,
                    };
                    let res = svc.step(input).await;
                    let _ = reply.send(res);
                }
                None => break,
            },
        }
    }
    if !svc.log_complete(false).await {
        tracing::error!(
            path = %svc.db_path,
            inputs = svc.unstored.count(),
            "the margin service stops with inputs it could not store: the margin log ends before them. On restart the engine takes the stored reports after its log again (their prices and ordered commands come back); commands applied without committee ordering are lost"
        );
    }
}

#[cfg(test)]
mod tests;
