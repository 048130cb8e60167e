//! Serving the HTTP API next to the round driver.
//!
//! The API itself is [`crate::api`]; the node hands it the store's readers,
//! the stream of stored reports, a committee status it refreshes twice a
//! second, and its metrics registry. The node adds one route of its own,
//! `GET /v1/node/status`: this member's driver and protocol counters, its
//! recent round latencies and their phase breakdown (what `sibyl devnet`
//! and `sibyl bench` read).

use crate::{ApiConfig, ApiLimits, ApiParts, ApiState, CommitteeStatus, FeedInfo, MemberStatus};
use anyhow::{Context, Result};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Serialize;
use sibyl_aggregator::SignedReport;
use sibyl_node::config::Config;
use sibyl_node::driver::{NodeStatus, StatusHandle, percentiles, status_snapshot};
use sibyl_node::store::{Readers, RetentionPolicy, Store};
use std::sync::Arc;
use tokio::sync::{broadcast, watch};

#[derive(Clone)]
struct NodeApi {
    status: StatusHandle,
    readers: Readers,
    /// The in-node key refresh (`POST /v1/node/keys/refresh`).
    rekey: Option<tokio::sync::mpsc::Sender<sibyl_node::rekey::RekeyEvent>>,
}

#[derive(Serialize)]
struct StatusBody {
    #[serde(flatten)]
    status: NodeStatus,
    latency_samples: usize,
    latency_p50_us: Option<u64>,
    latency_p99_us: Option<u64>,
    /// Recent round latencies, oldest first, microseconds.
    recent_latencies_us: Vec<u64>,
    /// Where the time goes: each phase's offset from the round's start (or
    /// duration), see `node::trace`.
    phases: Vec<sibyl_node::driver::trace::PhaseStats>,
}

async fn node_status(State(api): State<NodeApi>) -> Json<StatusBody> {
    let status = status_snapshot(&api.status);
    let samples: Vec<u64> = status.latencies_us.iter().copied().collect();
    let p = percentiles(&samples);
    let recent = samples.iter().rev().take(64).rev().copied().collect();
    Json(StatusBody {
        latency_samples: samples.len(),
        latency_p50_us: p.map(|p| p.0),
        latency_p99_us: p.map(|p| p.1),
        recent_latencies_us: recent,
        phases: status
            .trace
            .as_ref()
            .map(sibyl_node::driver::trace::RoundTrace::stats)
            .unwrap_or_default(),
        status,
    })
}

fn error(code: StatusCode, message: String) -> Response {
    (
        code,
        Json(serde_json::json!({"error": {"code": code.as_u16(), "message": message}})),
    )
        .into_response()
}

async fn report(State(api): State<NodeApi>, Path(round): Path<String>) -> Response {
    let found = if round == "latest" {
        api.readers.read(|db| db.latest_report()).await
    } else {
        match crate::round_param(&round) {
            Ok(r) => api.readers.report(r).await,
            Err(e) => return e.into_response(),
        }
    };
    match found {
        Ok(Some(r)) => Json::<SignedReport>(r).into_response(),
        Ok(None) => error(
            StatusCode::NOT_FOUND,
            format!("no signed report for round {round}"),
        ),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

/// `POST /v1/node/keys/refresh` (admin): start a proactive refresh of the
/// key shares now. The other members join it (each at most once per
/// `min_gap`); progress is in `GET /v1/node/status` (`refresh`) and the log.
async fn start_refresh(State(api): State<NodeApi>) -> Response {
    let Some(tx) = &api.rekey else {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "this node runs no in-node key refresh".into(),
        );
    };
    match tx.try_send(sibyl_node::rekey::RekeyEvent::Start) {
        Ok(()) => (
            StatusCode::ACCEPTED,
            Json(serde_json::json!({
                "started": true,
                "refresh": status_snapshot(&api.status).refresh,
            })),
        )
            .into_response(),
        Err(e) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("the key refresh cannot take the request now: {e}"),
        ),
    }
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct SignBody {
    /// 0x and 64 hex digits: the hand-over's rotation digest.
    message: String,
    /// Exactly t members, this one among them.
    signers: Vec<u16>,
    #[serde(default = "default_sign_timeout_ms")]
    timeout_ms: u64,
}

fn default_sign_timeout_ms() -> u64 {
    120_000
}

/// `POST /v1/node/rotation/sign` (admin): this member's part of its
/// committee's signature of a hand-over, made with the other signers over
/// the round network while the member keeps signing reports (`sibyl
/// rotation-sign --live` computes the message from the committee files and
/// calls it). Answers when the signature is made: `{"signature": "0x…"}`.
async fn rotation_sign(State(api): State<NodeApi>, body: axum::body::Bytes) -> Response {
    let bad = |m: String| error(StatusCode::BAD_REQUEST, m);
    let body: SignBody = match serde_json::from_slice(&body) {
        Ok(b) => b,
        Err(e) => {
            return bad(format!(
                "the body must be {{\"message\", \"signers\"[, \"timeout_ms\"]}}: {e}"
            ));
        }
    };
    let message: [u8; 32] = match hex::decode(body.message.trim_start_matches("0x"))
        .ok()
        .and_then(|b| b.try_into().ok())
    {
        Some(m) => m,
        None => return bad("`message` must be 0x and 64 hex digits".into()),
    };
    if !(1_000..=3_600_000).contains(&body.timeout_ms) {
        return bad("`timeout_ms` must be within 1000..=3600000".into());
    }
    let Some(tx) = &api.rekey else {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "this node runs no in-node ceremonies".into(),
        );
    };
    let (reply, answer) = tokio::sync::oneshot::channel();
    let req = sibyl_node::rekey::SignRequest {
        message,
        signers: body.signers.into_iter().collect(),
        timeout_ms: body.timeout_ms,
        reply,
    };
    if let Err(e) = tx.try_send(sibyl_node::rekey::RekeyEvent::Sign(req)) {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("the node cannot take the request now: {e}"),
        );
    }
    let wait = std::time::Duration::from_millis(body.timeout_ms + 5_000);
    match tokio::time::timeout(wait, answer).await {
        Ok(Ok(Ok(sig))) => Json(serde_json::json!({
            "signature": format!("0x{}", hex::encode(sig)),
        }))
        .into_response(),
        Ok(Ok(Err(why))) => error(StatusCode::CONFLICT, why),
        _ => error(
            StatusCode::GATEWAY_TIMEOUT,
            "the signing session did not answer in time".into(),
        ),
    }
}

/// The node's own routes; the state-changing one needs `admin_token` as
/// the other admin routes do (`None`: it answers 403).
pub fn router(
    status: StatusHandle,
    readers: Readers,
    rekey: Option<tokio::sync::mpsc::Sender<sibyl_node::rekey::RekeyEvent>>,
    admin_token: Option<String>,
) -> Router {
    let api = NodeApi {
        status,
        readers,
        rekey,
    };
    let token = Arc::new(admin_token);
    let keys = Router::new()
        .route("/v1/node/keys/refresh", post(start_refresh))
        .route("/v1/node/rotation/sign", post(rotation_sign))
        .route_layer(axum::middleware::from_fn(
            move |req: axum::extract::Request, next: axum::middleware::Next| {
                let token = token.clone();
                async move {
                    match crate::limits::admin_refusal(token.as_deref(), &req) {
                        Some(refused) => refused,
                        None => next.run(req).await,
                    }
                }
            },
        ));
    Router::new()
        .route("/v1/node/status", get(node_status))
        .route("/v1/node/reports/{round}", get(report))
        .merge(keys)
        .with_state(api)
}

/// The committee status the API serves at `/v1/committee`: the driver's
/// view of every member (see `node::members`).
pub(crate) fn committee_status(
    c: &sibyl_node::config::Committee,
    status: &NodeStatus,
) -> CommitteeStatus {
    CommitteeStatus {
        threshold: c.threshold,
        self_index: status.member,
        current_round: status.round,
        last_signed_round: status.last_report_round,
        recent_round_latency_ms: status
            .latencies_us
            .iter()
            .rev()
            .take(32)
            .rev()
            .map(|us| us / 1000)
            .collect(),
        members: c
            .members
            .iter()
            .map(|m| {
                let view = status.members.get(&m.index).cloned().unwrap_or_default();
                MemberStatus {
                    index: m.index,
                    peer_id: m.peer_id.to_base58(),
                    connected: m.index == status.member || status.connected.contains(&m.index),
                    last_seen_ms: view.last_seen_ms,
                    rounds_led: view.rounds_led,
                    shares_received: view.shares_received,
                    share_failures: view.invalid_shares,
                    refusals: view.refusals,
                    clock_offset_ms: view.clock_offset_ms,
                }
            })
            .collect(),
        updated_at_ms: sibyl_node::store::now_ms(),
    }
}

/// What a running member hands its API.
pub struct NodeServices {
    pub store: Store,
    /// Every verified, stored signed report.
    pub reports: broadcast::Sender<Arc<SignedReport>>,
    pub status: StatusHandle,
    /// The node's metrics, registered already.
    pub registry: prometheus_client::registry::Registry,
    pub margin: sibyl_node::margin_svc::MarginHandle,
    /// Starts the in-node key refresh (`POST /v1/node/keys/refresh`).
    pub rekey: Option<tokio::sync::mpsc::Sender<sibyl_node::rekey::RekeyEvent>>,
}

/// Binds the API's listener (if enabled) and serves it in a task.
pub async fn serve_if_enabled(
    config: &Config,
    services: NodeServices,
    group_keys: &sibyl_aggregator::verify::GroupKeys,
) -> Result<()> {
    let NodeServices {
        store,
        reports,
        status,
        registry,
        margin,
        rekey,
    } = services;
    if !config.node.api.enabled {
        return Ok(());
    }
    let evm = crate::pull::pull_config(config, group_keys)?;
    let admin_token = config.admin_token()?;
    let feeds = config
        .committee
        .feeds
        .iter()
        .map(|f| (f.id.clone(), FeedInfo::of(f)))
        .collect();
    let (committee_tx, committee_rx) = watch::channel(committee_status(
        &config.committee,
        &status_snapshot(&status),
    ));
    {
        let config = config.clone();
        let status = status.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(std::time::Duration::from_millis(500));
            loop {
                tick.tick().await;
                if committee_tx
                    .send(committee_status(
                        &config.committee,
                        &status_snapshot(&status),
                    ))
                    .is_err()
                {
                    return;
                }
            }
        });
    }
    let state = ApiState::new(ApiParts {
        store: Arc::new(store.readers.clone()),
        writer: Some(store.writer.clone()),
        reports,
        committee: committee_rx,
        registry,
        margin: Some(margin),
        config: ApiConfig {
            admin_token: admin_token.clone(),
            feeds,
            limits: ApiLimits::from_config(&config.node.api),
            retention: RetentionPolicy::default(),
            evm,
            private: !config.node.api.public,
        },
    });
    let addr = config.api_listen();
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr} for the API; choose another `api.listen` or stop the process using it"))?;
    let node_routes = router(status, store.readers.clone(), rekey, admin_token);
    tracing::info!(%addr, "API listening");
    tokio::spawn(crate::serve_with(listener, state, node_routes));
    Ok(())
}
