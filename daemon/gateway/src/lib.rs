//! `sibyl gateway`: a process holding no keys that follows members' signed
//! report streams, verifies every report against the committee's group
//! key(s), stores it in PostgreSQL and serves the same public API, streams
//! and dashboard as a member (the `sibyl-api` routes over [`pg::PgStore`]).
//!
//! ```text
//!   member 1 ── /v1/reports (catch-up) + /v1/stream?signed=true ──┐ follow (one task each)
//!   member 2 ── ...                                               ├─▶ mpsc ─▶ ingest: verify_report
//!   member n ── ...                                               ┘            │ (refused: counted)
//!                                                                              ▼
//!        PostgreSQL (reports, points partitioned by week, feed_latest) ◀── insert (round once)
//!                                                                              │ stored
//!   API (sibyl-api over PgStore): /v1/*, SSE with Last-Event-ID, /v1/ws ◀── broadcast
//! ```
//!
//! De-duplication is by round: the first verified copy is stored and
//! broadcast, later copies are counted as duplicates. Any one member may go
//! away: the others keep delivering, and its follower resumes from the
//! gateway's newest round when it comes back.

pub mod follow;
pub mod pg;

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use serde::Serialize;
use sha2::{Digest, Sha256};
use sibyl_aggregator::verify::{GroupKeys, VerifyError, verify_report};
use sibyl_aggregator::{Encode, FeedId, Round, SignedReport};
use sibyl_api::{ApiConfig, ApiLimits, ApiParts, ApiState, CommitteeStatus, FeedInfo};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::{broadcast, mpsc, watch};

#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error(
        "cannot connect to PostgreSQL ({conn}): {source}; check `--postgres` (libpq form, e.g. \"host=/run/postgresql dbname=sibyl user=sibyl\") and that the server runs"
    )]
    Connect {
        conn: String,
        #[source]
        source: tokio_postgres::Error,
    },
    #[error("PostgreSQL failed to {what}: {source}")]
    Postgres {
        what: String,
        #[source]
        source: tokio_postgres::Error,
    },
    #[error("schema migration {version} failed: {source}; the database is unchanged by it")]
    Migration {
        version: i32,
        #[source]
        source: tokio_postgres::Error,
    },
    #[error(
        "the database has gateway schema version {found}, this build knows {expected}; run a matching sibyl"
    )]
    SchemaTooNew { found: i32, expected: i32 },
    #[error("value out of range for the database: {0}")]
    OutOfRange(String),
    #[error(
        "cannot listen on {addr}: {source}; choose another `--listen` or stop the process using it"
    )]
    Listen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot build the HTTP client for following members: {0}")]
    Http(#[source] reqwest::Error),
    #[error("follow at least one member (`--follow http://HOST:PORT`)")]
    NoMembers,
}

/// What `sibyl gateway` needs.
pub struct GatewayConfig {
    /// Members' API base URLs (`http://host:port`).
    pub members: Vec<String>,
    /// libpq connection string of the gateway's database.
    pub postgres: String,
    pub listen: SocketAddr,
    /// The committee's group key(s) and config digest: every report is
    /// verified against them before it is stored.
    pub keys: GroupKeys,
    /// Feeds of the committee file, for decimals and discovery.
    pub feeds: BTreeMap<FeedId, FeedInfo>,
    /// The committee as the committee file describes it (`/v1/committee`).
    pub committee: CommitteeStatus,
    pub limits: ApiLimits,
}

/// One followed member, as the gateway sees it.
pub struct MemberState {
    pub url: String,
    connected: AtomicBool,
    received: AtomicU64,
    last_error: Mutex<Option<String>>,
}

impl MemberState {
    fn new(url: String) -> Self {
        Self {
            url,
            connected: AtomicBool::new(false),
            received: AtomicU64::new(0),
            last_error: Mutex::new(None),
        }
    }
    pub(crate) fn set_connected(&self, up: bool) {
        self.connected.store(up, Ordering::Relaxed);
    }
    pub(crate) fn count_received(&self) {
        self.received.fetch_add(1, Ordering::Relaxed);
    }
    pub(crate) fn received(&self) -> u64 {
        self.received.load(Ordering::Relaxed)
    }
    pub(crate) fn set_error(&self, e: String) {
        *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
    }
}

/// A report a follower read, not yet verified.
pub struct Received {
    pub member: Arc<MemberState>,
    /// `Err`: what the member sent could not be read as a signed report.
    pub report: Result<SignedReport, String>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RefusedLabels {
    member: String,
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MemberLabels {
    member: String,
}

#[derive(Clone, Default)]
struct Metrics {
    stored: Counter,
    duplicates: Counter,
    refused: Family<RefusedLabels, Counter>,
    store_errors: Counter,
    newest_round: Gauge,
    connected: Family<MemberLabels, Gauge>,
}

impl Metrics {
    fn register(r: &mut Registry) -> Self {
        let m = Self::default();
        r.register(
            "sibyl_gateway_reports_stored",
            "Verified reports stored (each round once)",
            m.stored.clone(),
        );
        r.register(
            "sibyl_gateway_reports_duplicate",
            "Verified copies of a round already stored (another member's, or a replay)",
            m.duplicates.clone(),
        );
        r.register(
            "sibyl_gateway_reports_refused",
            "Reports refused before storing, by member and reason (malformed, version, config_digest, signature, merkle_root, leaves, conflict)",
            m.refused.clone(),
        );
        r.register(
            "sibyl_gateway_store_errors",
            "Verified reports the database failed to store",
            m.store_errors.clone(),
        );
        r.register(
            "sibyl_gateway_newest_round",
            "Newest round stored",
            m.newest_round.clone(),
        );
        r.register(
            "sibyl_gateway_member_connected",
            "1 while the follower of a member holds an open session",
            m.connected.clone(),
        );
        m
    }
}

fn refusal_reason(e: &VerifyError) -> &'static str {
    match e {
        VerifyError::WrongVersion { .. } => "version",
        VerifyError::WrongConfigDigest { .. } => "config_digest",
        VerifyError::RootMismatch { .. } | VerifyError::BadProof { .. } => "merkle_root",
        VerifyError::CommandsMismatch { .. } => "margin_root",
        VerifyError::TooManyLeaves { .. } | VerifyError::LeavesNotSorted { .. } => "leaves",
        VerifyError::MissingSignature { .. }
        | VerifyError::MalformedSignature { .. }
        | VerifyError::BadSignature { .. } => "signature",
        VerifyError::NoGroupKeys | VerifyError::BadGroupKey { .. } => "keys",
    }
}

/// Rounds stored recently with a hash of their bytes: a second copy with the
/// same bytes is a duplicate without verifying it again.
struct Recent {
    by_round: HashMap<Round, [u8; 32]>,
    order: VecDeque<Round>,
}

const RECENT: usize = 4096;

impl Recent {
    fn insert(&mut self, round: Round, hash: [u8; 32]) {
        if self.by_round.insert(round, hash).is_none() {
            self.order.push_back(round);
            if self.order.len() > RECENT
                && let Some(old) = self.order.pop_front()
            {
                self.by_round.remove(&old);
            }
        }
    }
}

/// The ingest task: verify, de-duplicate, store, broadcast.
struct Ingest {
    store: Arc<pg::PgStore>,
    keys: GroupKeys,
    reports: broadcast::Sender<Arc<SignedReport>>,
    newest: watch::Sender<Option<Round>>,
    metrics: Metrics,
    recent: Recent,
}

impl Ingest {
    async fn run(mut self, mut rx: mpsc::Receiver<Received>) {
        while let Some(rcv) = rx.recv().await {
            self.on_received(rcv).await;
        }
    }

    fn refuse(&self, member: &MemberState, reason: &str, why: &str) {
        tracing::warn!(member = %member.url, reason, why, "refused a report");
        self.metrics
            .refused
            .get_or_create(&RefusedLabels {
                member: member.url.clone(),
                reason: reason.to_owned(),
            })
            .inc();
    }

    async fn on_received(&mut self, rcv: Received) {
        let report = match rcv.report {
            Ok(r) => r,
            Err(why) => return self.refuse(&rcv.member, "malformed", &why),
        };
        let round = report.header.round;
        let hash: [u8; 32] = Sha256::digest(report.to_bytes()).into();
        match self.recent.by_round.get(&round) {
            Some(h) if *h == hash => {
                self.metrics.duplicates.inc();
                return;
            }
            Some(_) => {
                // Another report for a stored round: verify it to say why.
                let why = match verify_report(&report, &self.keys) {
                    Err(e) => return self.refuse(&rcv.member, refusal_reason(&e), &e.to_string()),
                    Ok(_) => {
                        "a second validly signed report for a stored round (committee equivocation?); kept the first"
                    }
                };
                return self.refuse(&rcv.member, "conflict", why);
            }
            None => {}
        }
        if let Err(e) = verify_report(&report, &self.keys) {
            return self.refuse(&rcv.member, refusal_reason(&e), &e.to_string());
        }
        let now = sibyl_node::store::now_ms();
        match self.store.insert_report(&report, now).await {
            Ok(true) => {
                self.recent.insert(round, hash);
                self.metrics.stored.inc();
                let newer = self.newest.borrow().is_none_or(|n| round > n);
                if newer {
                    self.newest.send_replace(Some(round));
                    self.metrics
                        .newest_round
                        .set(i64::try_from(round).unwrap_or(i64::MAX));
                }
                let _ = self.reports.send(Arc::new(report));
            }
            Ok(false) => {
                // Stored before this process knew (a restart): remember it.
                self.recent.insert(round, hash);
                self.metrics.duplicates.inc();
            }
            Err(e) => {
                self.metrics.store_errors.inc();
                tracing::error!(round, error = %e, "cannot store a verified report; it comes back with the next catch-up");
            }
        }
    }
}

#[derive(Serialize)]
struct MemberView {
    url: String,
    connected: bool,
    received: u64,
    last_error: Option<String>,
}

#[derive(Clone)]
struct StatusState {
    members: Vec<Arc<MemberState>>,
    newest: watch::Receiver<Option<Round>>,
}

async fn gateway_status(State(s): State<StatusState>) -> Json<serde_json::Value> {
    let members: Vec<MemberView> = s
        .members
        .iter()
        .map(|m| MemberView {
            url: m.url.clone(),
            connected: m.connected.load(Ordering::Relaxed),
            received: m.received(),
            last_error: m
                .last_error
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
        })
        .collect();
    let newest = *s.newest.borrow();
    Json(serde_json::json!({ "newest_round": newest, "members": members }))
}

/// Runs the gateway until a fatal error: connects to PostgreSQL (applying
/// migrations), starts a follower per member and the ingest task, and
/// serves the API on `config.listen`.
pub async fn run(config: GatewayConfig) -> Result<(), GatewayError> {
    if config.members.is_empty() {
        return Err(GatewayError::NoMembers);
    }
    let _ = rustls::crypto::ring::default_provider().install_default();
    let store = Arc::new(pg::PgStore::connect(&config.postgres).await?);
    let newest_stored = store.newest_round().await?;
    let mut registry = Registry::default();
    let metrics = Metrics::register(&mut registry);
    let (reports_tx, _) = broadcast::channel::<Arc<SignedReport>>(256);
    let (newest_tx, newest_rx) = watch::channel(newest_stored);
    let (tx, rx) = mpsc::channel::<Received>(1024);
    let http = reqwest::Client::builder()
        .connect_timeout(std::time::Duration::from_secs(5))
        .build()
        .map_err(GatewayError::Http)?;
    let members: Vec<Arc<MemberState>> = config
        .members
        .iter()
        .map(|u| Arc::new(MemberState::new(u.trim_end_matches('/').to_owned())))
        .collect();
    tokio::spawn(
        Ingest {
            store: store.clone(),
            keys: config.keys,
            reports: reports_tx.clone(),
            newest: newest_tx,
            metrics: metrics.clone(),
            recent: Recent {
                by_round: HashMap::new(),
                order: VecDeque::new(),
            },
        }
        .run(rx),
    );
    for m in &members {
        tokio::spawn(follow::follow(
            m.clone(),
            http.clone(),
            tx.clone(),
            newest_rx.clone(),
        ));
    }
    drop(tx);
    // Publish follower connectivity and the newest round to /v1/committee and /metrics.
    let (committee_tx, committee_rx) = watch::channel(config.committee.clone());
    {
        let members = members.clone();
        let metrics = metrics.clone();
        let mut newest = newest_rx.clone();
        let base = config.committee;
        tokio::spawn(async move {
            loop {
                for m in &members {
                    metrics
                        .connected
                        .get_or_create(&MemberLabels {
                            member: m.url.clone(),
                        })
                        .set(i64::from(m.connected.load(Ordering::Relaxed)));
                }
                let mut status = base.clone();
                status.last_signed_round = *newest.borrow_and_update();
                status.current_round = status.last_signed_round.unwrap_or(0);
                status.updated_at_ms = sibyl_node::store::now_ms();
                if committee_tx.send(status).is_err() {
                    return;
                }
                tokio::select! {
                    _ = newest.changed() => {}
                    () = tokio::time::sleep(std::time::Duration::from_millis(500)) => {}
                }
            }
        });
    }
    let state = ApiState::new(ApiParts {
        store: store.clone(),
        writer: None,
        reports: reports_tx,
        committee: committee_rx,
        registry,
        margin: None,
        config: ApiConfig {
            admin_token: None,
            feeds: config.feeds,
            limits: config.limits,
            retention: Default::default(),
            evm: None,
            private: false,
        },
    });
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|source| GatewayError::Listen {
            addr: config.listen,
            source,
        })?;
    let addr = listener.local_addr().unwrap_or(config.listen);
    tracing::info!(%addr, members = members.len(), "gateway API listening");
    println!("gateway API listening on http://{addr}");
    let extra = Router::new()
        .route("/v1/gateway/status", get(gateway_status))
        .with_state(StatusState {
            members,
            newest: newest_rx,
        });
    sibyl_api::serve_with(listener, state, extra).await;
    Ok(())
}
