//! The HTTP/WebSocket server of the simulated exchange.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, RawQuery, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::json;
use tokio::task::JoinHandle;

use super::model::{Fault, Market, Scenario, market_assets};
use super::render;
use crate::time::now_ms;
use crate::venue::{StreamSpec, Tick, Venue};

/// How the simulated exchange starts.
#[derive(Debug, Clone)]
pub struct SimOptions {
    pub listen: SocketAddr,
    pub seed: u64,
    pub scenario: Scenario,
    /// Move prices (random walk with jumps). Off: prices stay put, which
    /// lets tests measure exactly what a fault does to an observation.
    pub walk: bool,
    /// How often WebSocket streams push a tick.
    pub ws_interval: Duration,
}

impl Default for SimOptions {
    fn default() -> Self {
        SimOptions {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            seed: 1,
            scenario: Scenario::Calm,
            walk: true,
            ws_interval: Duration::from_millis(250),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error("cannot listen on {addr}: {source}; choose a different address with --listen")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot depeg {0}")]
    Depeg(String),
}

struct SimState {
    market: Mutex<Market>,
    ws_interval: Duration,
}

impl SimState {
    fn market(&self) -> MutexGuard<'_, Market> {
        self.market.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A running simulated exchange. Stops when dropped.
pub struct SimExchange {
    addr: SocketAddr,
    state: Arc<SimState>,
    server: JoinHandle<()>,
    stepper: JoinHandle<()>,
}

impl Drop for SimExchange {
    fn drop(&mut self) {
        self.server.abort();
        self.stepper.abort();
    }
}

impl SimExchange {
    pub async fn start(opts: SimOptions) -> Result<SimExchange, SimError> {
        let listener = tokio::net::TcpListener::bind(opts.listen)
            .await
            .map_err(|source| SimError::Bind {
                addr: opts.listen,
                source,
            })?;
        let addr = listener.local_addr().map_err(|source| SimError::Bind {
            addr: opts.listen,
            source,
        })?;
        let state = Arc::new(SimState {
            market: Mutex::new(Market::new(opts.seed, opts.walk)),
            ws_interval: opts.ws_interval,
        });
        apply_scenario(&state, opts.scenario);
        let app = Router::new()
            .route("/control/faults", get(get_faults))
            .route("/control/fault", post(post_fault))
            .route("/control/scenario", post(post_scenario))
            .route("/control/depeg", post(post_depeg))
            .route("/control/price/{asset}", get(get_price))
            .route("/ws/{venue}", get(ws_upgrade))
            .route("/{venue}/{*rest}", get(rest))
            .with_state(state.clone());
        let server = tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                tracing::error!(error = %e, "simulated exchange stopped");
            }
        });
        let st = state.clone();
        let stepper = tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(100));
            loop {
                tick.tick().await;
                st.market().step();
            }
        });
        Ok(SimExchange {
            addr,
            state,
            server,
            stepper,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`; venue `v` is served under `/<v>`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Inject (or with `None`, clear) a fault on one venue.
    pub fn set_fault(&self, venue: Venue, fault: Option<Fault>) {
        self.state.market().set_fault(venue, fault, now_ms());
    }

    /// Clear every fault and apply the scenario's.
    pub fn set_scenario(&self, scenario: Scenario) {
        apply_scenario(&self.state, scenario);
    }

    pub fn faults(&self) -> BTreeMap<Venue, Fault> {
        self.state.market().faults()
    }

    /// Move stablecoin `asset` (USDT, USDC) to `usd` dollars and keep it
    /// there; `None` restores its peg.
    pub fn set_depeg(&self, asset: &str, usd: Option<f64>) -> Result<(), SimError> {
        self.state
            .market()
            .set_depeg(asset, usd)
            .map_err(SimError::Depeg)
    }

    /// The model's true USD price of `asset` (what an honest observation approaches).
    pub fn usd_price(&self, asset: &str) -> Option<f64> {
        self.state.market().usd_price(asset)
    }

    /// Serve until the server task ends (used by `sibyl sim-exchange`).
    pub async fn wait(mut self) {
        let server = std::mem::replace(&mut self.server, tokio::spawn(async {}));
        let _ = server.await;
    }
}

fn apply_scenario(state: &SimState, scenario: Scenario) {
    let now = now_ms();
    let mut m = state.market();
    for v in Venue::ALL {
        m.set_fault(v, None, now);
    }
    for (v, f) in scenario.faults() {
        m.set_fault(v, Some(f), now);
    }
    let depegs = scenario.depegs();
    for asset in ["USDT", "USDC"] {
        // Both are stablecoins of the model, so neither call can fail.
        let _ = m.set_depeg(asset, depegs.get(asset).copied());
    }
}

fn json_response(status: u16, body: String) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

async fn rest(
    State(st): State<Arc<SimState>>,
    Path((venue, rest)): Path<(String, String)>,
    RawQuery(query): RawQuery,
) -> Response {
    let Some(v) = Venue::from_name(&venue) else {
        return (
            StatusCode::NOT_FOUND,
            format!("no venue {venue:?} on this simulated exchange"),
        )
            .into_response();
    };
    let fault = st.market().fault(v);
    if let Some(Fault::Slow { ms }) = fault {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    match fault {
        Some(Fault::Outage) => {
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                "<html><body>503 Service Temporarily Unavailable</body></html>",
            )
                .into_response();
        }
        Some(Fault::RateLimited) => {
            let (s, b) = render::rate_limited(v);
            return json_response(s, b);
        }
        _ => {}
    }
    let path = format!("/{rest}");
    let query = query.as_deref().unwrap_or("");
    if v.market_of_request(&path, query).is_none()
        && let Some(market) = v.market_of_status_request(&path, query)
    {
        // The instrument endpoint: the market's state under the venue's fault.
        let state = fault.map_or(crate::venue::MarketState::Open, Fault::market_state);
        let known = market_assets(v, &market).is_some();
        let (status, body) = match v.render_status(&market, state) {
            Some(body) if known => (200, body),
            _ => render::unknown_symbol(v, &market),
        };
        return json_response(status, body);
    }
    let Some(market) = v.market_of_request(&path, query) else {
        return (
            StatusCode::NOT_FOUND,
            format!("{v} serves no endpoint {path}"),
        )
            .into_response();
    };
    let now = now_ms();
    let (tick, garbage_n) = {
        let mut m = st.market();
        let tick = market_assets(v, &market).and_then(|(b, q)| m.tick(v, &b, &q, now));
        let served = if fault == Some(Fault::Garbage) {
            let n = m.garbage_served.entry(v).or_insert(0);
            *n += 1;
            *n - 1
        } else {
            0
        };
        (tick, served)
    };
    let (status, body) = match tick {
        None => render::unknown_symbol(v, &market),
        Some(t) if fault == Some(Fault::Garbage) => render::garbage(v, &market, &t, garbage_n),
        Some(t) => render::ticker(v, &market, &t),
    };
    json_response(status, body)
}

async fn get_faults(State(st): State<Arc<SimState>>) -> Json<BTreeMap<Venue, Fault>> {
    Json(st.market().faults())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FaultRequest {
    venue: Venue,
    fault: Option<Fault>,
}

async fn post_fault(
    State(st): State<Arc<SimState>>,
    Json(req): Json<FaultRequest>,
) -> Json<BTreeMap<Venue, Fault>> {
    let mut m = st.market();
    m.set_fault(req.venue, req.fault, now_ms());
    Json(m.faults())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ScenarioRequest {
    name: String,
}

async fn post_scenario(
    State(st): State<Arc<SimState>>,
    Json(req): Json<ScenarioRequest>,
) -> Response {
    let Some(s) = Scenario::from_name(&req.name) else {
        let names: Vec<&str> = Scenario::ALL.iter().map(|s| s.name()).collect();
        return (
            StatusCode::BAD_REQUEST,
            format!(
                "unknown scenario {:?}; one of {}",
                req.name,
                names.join(", ")
            ),
        )
            .into_response();
    };
    apply_scenario(&st, s);
    Json(st.market().faults()).into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DepegRequest {
    asset: String,
    /// The stablecoin's USD price; `null` restores its peg.
    usd: Option<f64>,
}

/// `POST /control/depeg {"asset":"USDT","usd":0.95}`: the depegged
/// stablecoins after the change.
async fn post_depeg(State(st): State<Arc<SimState>>, Json(req): Json<DepegRequest>) -> Response {
    let mut m = st.market();
    match m.set_depeg(&req.asset.to_ascii_uppercase(), req.usd) {
        Ok(()) => Json(m.depegs()).into_response(),
        Err(e) => (StatusCode::BAD_REQUEST, e).into_response(),
    }
}

async fn get_price(State(st): State<Arc<SimState>>, Path(asset): Path<String>) -> Response {
    match st.market().usd_price(&asset.to_ascii_uppercase()) {
        Some(p) => Json(json!({"asset": asset, "usd": format!("{p:.8}")})).into_response(),
        None => (StatusCode::NOT_FOUND, format!("unknown asset {asset:?}")).into_response(),
    }
}

// ---------------------------------------------------------------- WebSocket

async fn ws_upgrade(
    State(st): State<Arc<SimState>>,
    Path(venue): Path<String>,
    RawQuery(query): RawQuery,
    ws: WebSocketUpgrade,
) -> Response {
    let Some((v, stream)) = Venue::from_name(&venue).and_then(|v| Some((v, v.spec().stream()?)))
    else {
        return (
            StatusCode::NOT_FOUND,
            format!("no stream for venue {venue:?}"),
        )
            .into_response();
    };
    if st.market().fault(v) == Some(Fault::Outage) {
        return (StatusCode::SERVICE_UNAVAILABLE, "outage").into_response();
    }
    let symbols = query
        .as_deref()
        .map(|q| stream.symbols_in_query(q))
        .unwrap_or_default();
    ws.on_upgrade(move |socket| ws_session(st, v, stream, socket, symbols))
}

async fn ws_session(
    st: Arc<SimState>,
    venue: Venue,
    stream: &'static dyn StreamSpec,
    mut socket: WebSocket,
    mut symbols: Vec<String>,
) {
    let mut push = tokio::time::interval(st.ws_interval);
    let mut heartbeat = tokio::time::interval(Duration::from_secs(1));
    // The status channel, once subscribed: a snapshot, then each change as
    // the market's state moves (checked every 50 ms).
    let mut status = tokio::time::interval(Duration::from_millis(50));
    let (mut wants_states, mut sent_state) = (false, None);
    let mut seq = 0u64;
    loop {
        tokio::select! {
            _ = status.tick(), if wants_states => {
                let state = st
                    .market()
                    .fault(venue)
                    .map_or(crate::venue::MarketState::Open, Fault::market_state);
                if sent_state == Some(state) {
                    continue;
                }
                sent_state = Some(state);
                if let Some(text) = stream.render_states(&symbols, state)
                    && socket.send(Message::text(text)).await.is_err()
                {
                    return;
                }
            }
            _ = push.tick() => {
                let fault = st.market().fault(venue);
                match fault {
                    Some(Fault::Outage) => {
                        let _ = socket.send(Message::Close(None)).await;
                        return;
                    }
                    // A stale stream (or a closed market's) stays open and
                    // keeps its heartbeats but sends no prices.
                    Some(Fault::Stale | Fault::Closed | Fault::Halted) => continue,
                    Some(Fault::Garbage) => {
                        if socket.send(Message::text("{\"data\":{\"c\":NaN")).await.is_err() {
                            return;
                        }
                        continue;
                    }
                    _ => {}
                }
                let now = now_ms();
                let msgs: Vec<String> = {
                    let mut m = st.market();
                    symbols
                        .iter()
                        .filter_map(|s| {
                            let market = stream.market_of_symbol(s);
                            let (b, q) = market_assets(venue, &market)?;
                            let t: Tick = m.tick(venue, &b, &q, now)?;
                            seq += 1;
                            Some(stream.render_ticker(s, &market, &t, seq))
                        })
                        .collect()
                };
                for text in msgs {
                    if socket.send(Message::text(text)).await.is_err() {
                        return;
                    }
                }
            }
            _ = heartbeat.tick() => {
                let hb = stream.heartbeat(&symbols, seq, now_ms());
                if let Some(hb) = hb && socket.send(Message::text(hb)).await.is_err() {
                    return;
                }
            }
            msg = socket.recv() => {
                let text = match msg {
                    Some(Ok(Message::Text(t))) => t.to_string(),
                    Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
                    Some(Ok(_)) => continue, // pings are answered by the library
                };
                if stream.subscribes_states(&text) {
                    (wants_states, sent_state) = (true, None);
                }
                for reply in stream.answer(&text, &mut symbols) {
                    if socket.send(Message::text(reply)).await.is_err() {
                        return;
                    }
                }
            }
        }
    }
}
