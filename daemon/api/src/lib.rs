//! The node's HTTP API (axum), its Prometheus `/metrics` and the built-in
//! dashboard.
//!
//! ```text
//!   node ── builds ApiState ──▶ api::serve_with(listener, state, node routes)
//!     │  Readers (own SQLite connections)        ◀── GET /v1/feeds, /history, /reports
//!     │  broadcast::Sender<Arc<SignedReport>>     ──▶ GET /v1/stream (SSE)
//!     │  watch::Receiver<CommitteeStatus>         ──▶ GET /v1/committee
//!     │  prometheus-client Registry (shared)      ──▶ GET /metrics
//!     └  StoreHandle (optional, admin routes)     ◀── POST /v1/admin/* (bearer token)
//! ```
//!
//! Read routes are public; routes that change state sit behind a bearer token
//! from the config ([`require_admin`]). Every request, the node's own routes
//! included, passes a per-client rate limit, a body size limit and a request
//! timeout, and is counted and timed in the registry. Connections are capped
//! and held to header-read and idle timeouts ([`server`]); report streams are
//! capped in all and per client, and a client that does not keep up with its
//! stream is dropped. Errors are JSON:
//! `{"error": {"code": "...", "message": "..."}}`, 404 and 405 included.

mod dashboard;
mod error;
mod handlers;
mod limits;
pub mod margin;
pub mod node;
pub mod openapi;
mod pull;
mod server;
pub mod store;
mod types;
mod udf;
mod ws;

pub use error::ApiError;
pub use handlers::round_param;
pub use limits::{RateLimiter, require_admin};
pub use pull::{EvmPull, MAX_BATCH_FEEDS, pull_config};
pub use sibyl_node::driver::metrics::openmetrics_to_prometheus;
pub use store::ReportStore;
pub use types::{CommitteeStatus, FeedInfo, MemberStatus};

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use sibyl_aggregator::{FeedId, SignedReport};
use sibyl_node::store::{RetentionPolicy, StoreHandle};
use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{broadcast, watch};

/// Limits on what one client may ask for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiLimits {
    /// Largest request body accepted, in bytes.
    pub max_body_bytes: usize,
    /// Requests per second per client IP (token bucket refill rate); 0 = no limit.
    pub requests_per_second: u32,
    /// Burst size of the per-client token bucket.
    pub burst: u32,
    /// Most points or candles in one history page.
    pub max_page: usize,
    /// Widest `to - from` of a raw-points history query.
    pub max_raw_range: Duration,
    /// Most candle buckets a `from`..`to` range with an `interval` may span.
    pub max_buckets: u64,
    /// Concurrent SSE streams served at most.
    pub max_streams: usize,
    /// Concurrent SSE streams one client IP may hold.
    pub max_streams_per_client: usize,
    /// Reports queued for one stream; a client further behind is dropped.
    pub stream_queue: usize,
    /// Open connections at most; further ones are closed as they arrive.
    pub max_connections: usize,
    /// Open connections one client IP may hold.
    pub max_connections_per_client: usize,
    /// Longest a handler may take to answer (a stream, once open, is not bound by it).
    pub request_timeout: Duration,
    /// Longest a request head may take to arrive, from the accept or its first byte.
    pub header_read_timeout: Duration,
    /// A connection with no request under way, or whose response the client
    /// has not read for this long, is closed.
    pub idle_timeout: Duration,
}

impl Default for ApiLimits {
    fn default() -> Self {
        Self::from_config(&sibyl_node::config::ApiSection::default())
    }
}

impl ApiLimits {
    /// The limits the node config's `[api]` section sets (its defaults
    /// included), and fixed values for the rest.
    pub fn from_config(api: &sibyl_node::config::ApiSection) -> Self {
        Self {
            max_body_bytes: 64 * 1024,
            requests_per_second: 100,
            burst: 200,
            max_page: 10_000,
            max_raw_range: Duration::from_secs(31 * 86_400),
            max_buckets: 1_000_000,
            max_streams: *api.max_streams.get_ref(),
            max_streams_per_client: *api.max_streams_per_client.get_ref(),
            stream_queue: 64,
            max_connections: *api.max_connections.get_ref(),
            max_connections_per_client: *api.max_connections_per_client.get_ref(),
            request_timeout: api.request_timeout.get_ref().0,
            header_read_timeout: api.header_read_timeout.get_ref().0,
            idle_timeout: api.idle_timeout.get_ref().0,
        }
    }
}

/// Settings of the API, from the node config.
#[derive(Clone, Debug, Default)]
pub struct ApiConfig {
    /// Bearer token for state-changing routes. `None`: those routes answer 403.
    pub admin_token: Option<String>,
    /// The committee's feeds (from the committee file). Feeds found in the
    /// store are served too; a feed in neither is "unknown" (404).
    pub feeds: BTreeMap<FeedId, FeedInfo>,
    pub limits: ApiLimits,
    /// Policy that `POST /v1/admin/retention` runs.
    pub retention: RetentionPolicy,
    /// The committee's secp256k1-evm group key (and the feed contract), for
    /// the pull payloads `GET /v1/feeds/{id}/update` and
    /// `GET /v1/feeds/update`. `None`: those routes answer 404 `no_evm_suite`.
    pub evm: Option<EvmPull>,
    /// `[api] public = false`: serve only `/healthz`, `/metrics`, the admin
    /// routes, the node's own routes and what gateways follow
    /// (`/v1/stream`, `/v1/reports*`); every other route answers 404.
    pub private: bool,
}

/// Everything the node hands the API. Plain fields so the node can build it
/// piece by piece; [`ApiState::new`] turns it into the shared state.
pub struct ApiParts {
    /// What the public routes read: a member's SQLite readers
    /// (`Arc::new(readers)`) or a gateway's PostgreSQL store.
    pub store: Arc<dyn ReportStore>,
    /// The store's writer, for admin routes (retention). `None` disables them.
    pub writer: Option<StoreHandle>,
    /// The node sends every verified, stored signed report here.
    pub reports: broadcast::Sender<Arc<SignedReport>>,
    /// The node publishes committee health here.
    pub committee: watch::Receiver<CommitteeStatus>,
    /// The node's metrics registry, with the node's own metrics already
    /// registered; the API adds its own (`sibyl_api_*`, `sibyl_db_size_bytes`).
    pub registry: Registry,
    /// The margin engine's service, for `/v1/margin/*`; `None` answers 503.
    pub margin: Option<sibyl_node::margin_svc::MarginHandle>,
    pub config: ApiConfig,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    method: String,
    route: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: String,
}

type HistogramFamily = Family<RouteLabels, Histogram, fn() -> Histogram>;

struct ApiMetrics {
    requests: Family<RequestLabels, Counter>,
    latency: HistogramFamily,
    rate_limited: Counter,
    db_size: Gauge,
    streams: Gauge,
    streams_refused: Family<ReasonLabels, Counter>,
    streams_lagged: Counter,
    connections: Gauge,
    connections_refused: Family<ReasonLabels, Counter>,
    connections_closed: Family<ReasonLabels, Counter>,
}

impl ApiMetrics {
    fn register(registry: &mut Registry) -> Self {
        fn latency_histogram() -> Histogram {
            // 100 µs .. ~3.3 s
            Histogram::new(exponential_buckets(0.0001, 2.0, 16))
        }
        let m = Self {
            requests: Family::default(),
            latency: Family::new_with_constructor(latency_histogram),
            rate_limited: Counter::default(),
            db_size: Gauge::default(),
            streams: Gauge::default(),
            streams_refused: Family::default(),
            streams_lagged: Counter::default(),
            connections: Gauge::default(),
            connections_refused: Family::default(),
            connections_closed: Family::default(),
        };
        registry.register(
            "sibyl_api_requests",
            "HTTP API requests by method, route and status",
            m.requests.clone(),
        );
        registry.register(
            "sibyl_api_request_duration_seconds",
            "HTTP API request latency by route",
            m.latency.clone(),
        );
        registry.register(
            "sibyl_api_rate_limited",
            "HTTP API requests refused by the per-client rate limit",
            m.rate_limited.clone(),
        );
        registry.register(
            "sibyl_db_size_bytes",
            "Size of the SQLite database file plus its WAL",
            m.db_size.clone(),
        );
        registry.register(
            "sibyl_api_streams",
            "Open /v1/stream (SSE) connections",
            m.streams.clone(),
        );
        registry.register(
            "sibyl_api_streams_refused",
            "/v1/stream requests refused by the stream cap (reason: global, per_client)",
            m.streams_refused.clone(),
        );
        registry.register(
            "sibyl_api_streams_lagged",
            "Streams ended because their client fell more than the stream queue behind",
            m.streams_lagged.clone(),
        );
        registry.register(
            "sibyl_api_connections",
            "Open HTTP API connections",
            m.connections.clone(),
        );
        registry.register(
            "sibyl_api_connections_refused",
            "HTTP API connections closed on arrival (reason: global = api.max_connections open, per_client = api.max_connections_per_client open from that IP)",
            m.connections_refused.clone(),
        );
        registry.register(
            "sibyl_api_connections_closed",
            "HTTP API connections the server closed (reason: idle_timeout, header_read_timeout, write_stalled, slow_stream)",
            m.connections_closed.clone(),
        );
        m
    }
}

struct Inner {
    store: Arc<dyn ReportStore>,
    writer: Option<StoreHandle>,
    reports: broadcast::Sender<Arc<SignedReport>>,
    committee: watch::Receiver<CommitteeStatus>,
    registry: Registry,
    metrics: ApiMetrics,
    margin: Option<sibyl_node::margin_svc::MarginHandle>,
    config: ApiConfig,
    rate: RateLimiter,
    /// Open streams per client IP.
    stream_clients: Mutex<HashMap<IpAddr, usize>>,
}

/// Shared state of the API; cheap to clone.
#[derive(Clone)]
pub struct ApiState {
    inner: Arc<Inner>,
}

impl ApiState {
    /// Register the API's metrics in `parts.registry` and build the state.
    pub fn new(parts: ApiParts) -> Self {
        let ApiParts {
            store,
            writer,
            reports,
            committee,
            mut registry,
            margin,
            config,
        } = parts;
        let metrics = ApiMetrics::register(&mut registry);
        let rate = RateLimiter::new(config.limits.requests_per_second, config.limits.burst);
        Self {
            inner: Arc::new(Inner {
                store,
                writer,
                reports,
                committee,
                registry,
                metrics,
                margin,
                config,
                rate,
                stream_clients: Mutex::new(HashMap::new()),
            }),
        }
    }

    pub fn store(&self) -> &Arc<dyn ReportStore> {
        &self.inner.store
    }

    pub fn config(&self) -> &ApiConfig {
        &self.inner.config
    }
}

/// Every route of the API as (method, path), in the router's path syntax.
/// The OpenAPI document and the tests are checked against this list.
pub const ROUTES: &[(&str, &str)] = &[
    ("GET", "/healthz"),
    ("GET", "/metrics"),
    ("GET", "/v1/feeds"),
    ("GET", "/v1/feeds/{id}/latest"),
    ("GET", "/v1/feeds/{id}/history"),
    ("GET", "/v1/feeds/{id}/update"),
    ("GET", "/v1/feeds/update"),
    ("GET", "/v1/feeds/meta"),
    ("GET", "/v1/reports"),
    ("GET", "/v1/reports/{round}"),
    ("GET", "/v1/stream"),
    ("GET", "/v1/ws"),
    ("GET", "/udf/config"),
    ("GET", "/udf/symbols"),
    ("GET", "/udf/history"),
    ("GET", "/v1/committee"),
    ("GET", "/v1/openapi.json"),
    ("POST", "/v1/admin/retention"),
    ("GET", "/v1/margin/accounts/{account}"),
    ("GET", "/v1/margin/accounts/{account}/positions"),
    ("GET", "/v1/margin/accounts/{account}/greeks"),
    ("GET", "/v1/margin/accounts/{account}/proof"),
    ("GET", "/v1/margin/at-risk"),
    ("GET", "/v1/margin/liquidations"),
    ("GET", "/v1/margin/insurance"),
    ("GET", "/v1/margin/markets"),
    ("GET", "/v1/margin/signing"),
    ("POST", "/v1/margin/accounts"),
    ("POST", "/v1/margin/accounts/{account}/deposit"),
    ("POST", "/v1/margin/accounts/{account}/withdraw"),
    ("POST", "/v1/margin/accounts/{account}/positions"),
    (
        "POST",
        "/v1/margin/accounts/{account}/positions/{market}/close",
    ),
    ("POST", "/v1/margin/signed"),
];

/// The API's router with its state applied: JSON routes, `/metrics`, the
/// dashboard at `/`, limits and request metrics.
pub fn router(state: ApiState) -> Router {
    router_with(state, Router::new())
}

/// [`router`] plus `extra` routes (the node's own), all behind the same
/// limits: rate, body size, request timeout, JSON 404 and 405.
pub fn router_with(state: ApiState, extra: Router) -> Router {
    let admin = Router::new()
        .route("/v1/admin/retention", post(handlers::admin_retention))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            require_admin,
        ));
    let admin_layer = || axum::middleware::from_fn_with_state(state.clone(), require_admin);
    let margin = Router::new()
        .route("/v1/margin/accounts", post(margin::create_account))
        .route(
            "/v1/margin/accounts/{account}/deposit",
            post(margin::deposit),
        )
        .route(
            "/v1/margin/accounts/{account}/withdraw",
            post(margin::withdraw),
        )
        .route(
            "/v1/margin/accounts/{account}/positions/{market}/close",
            post(margin::close),
        )
        .route_layer(admin_layer())
        .route("/v1/margin/accounts/{account}", get(margin::account))
        .route(
            "/v1/margin/accounts/{account}/positions",
            get(margin::positions).merge(post(margin::open).route_layer(admin_layer())),
        )
        .route("/v1/margin/accounts/{account}/greeks", get(margin::greeks))
        .route("/v1/margin/accounts/{account}/proof", get(margin::proof))
        .route("/v1/margin/at-risk", get(margin::at_risk))
        .route("/v1/margin/liquidations", get(margin::liquidations))
        .route("/v1/margin/insurance", get(margin::insurance))
        .route("/v1/margin/markets", get(margin::markets))
        .route("/v1/margin/signing", get(margin::signing))
        .route("/v1/margin/signed", post(margin::signed));
    let public = Router::new()
        .route("/v1/feeds", get(handlers::feeds))
        .route("/v1/feeds/{id}/latest", get(handlers::feed_latest))
        .route("/v1/feeds/{id}/history", get(handlers::feed_history))
        .route("/v1/feeds/{id}/update", get(pull::feed_update))
        .route("/v1/feeds/update", get(pull::feeds_update))
        .route("/v1/feeds/meta", get(handlers::feeds_meta))
        .route("/v1/ws", get(ws::upgrade))
        .route("/v1/committee", get(handlers::committee))
        .route("/v1/openapi.json", get(handlers::openapi))
        .route("/udf/config", get(udf::config))
        .route("/udf/symbols", get(udf::symbols))
        .route("/udf/history", get(udf::history))
        .merge(margin)
        .merge(dashboard::routes());
    // What a member keeps serving with `[api] public = false`: health,
    // metrics, admin, and the signed reports gateways follow.
    let mut routes = Router::new()
        .route("/healthz", get(handlers::healthz))
        .route("/metrics", get(handlers::metrics))
        .route("/v1/reports", get(handlers::reports))
        .route("/v1/reports/{round}", get(handlers::report))
        .route("/v1/stream", get(handlers::stream))
        .merge(admin);
    if !state.inner.config.private {
        routes = routes.merge(public);
    }
    routes
        .with_state(state.clone())
        .merge(extra)
        .method_not_allowed_fallback(handlers::method_not_allowed)
        .fallback(handlers::not_found)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            limits::request_timeout,
        ))
        .layer(DefaultBodyLimit::max(
            state.inner.config.limits.max_body_bytes,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            limits::rate_limit,
        ))
        .layer(axum::middleware::from_fn_with_state(state, limits::track))
}

/// Serve the API on `listener` until the future is dropped.
pub async fn serve(listener: TcpListener, state: ApiState) {
    serve_with(listener, state, Router::new()).await;
}

/// Serve the API and `extra` routes (see [`router_with`]) on `listener`:
/// connections capped at `max_connections`, each held to the header-read
/// and idle timeouts.
pub async fn serve_with(listener: TcpListener, state: ApiState, extra: Router) {
    let app = router_with(state.clone(), extra);
    server::run(listener, app, state).await;
}

#[cfg(test)]
mod tests;
