//! Serving the HTTP API next to the round driver.
//!
//! `GET /v1/node/status` (this member's driver and protocol counters, and
//! recent round latencies) is the node's own route; the rest of the API
//! comes from the `api` module when it is built in. Until then a minimal
//! read-only set is served: `/healthz`, `/v1/reports/latest`,
//! `/v1/reports/{round}`.

use super::{NodeStatus, StatusHandle, percentiles, status_snapshot};
use crate::config::Config;
use crate::store::{Readers, Store};
use anyhow::{Context, Result};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;
use sibyl_aggregator::SignedReport;
use std::sync::Arc;
use tokio::sync::broadcast;

#[derive(Clone)]
struct NodeApi {
    status: StatusHandle,
    readers: Readers,
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
        let Ok(r) = round.parse::<u64>() else {
            return error(
                StatusCode::BAD_REQUEST,
                format!("{round:?} is not a round number"),
            );
        };
        api.readers.report(r).await
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

/// The node's routes (minimal API included).
pub fn router(status: StatusHandle, readers: Readers) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/v1/node/status", get(node_status))
        .route("/v1/reports/{round}", get(report))
        .with_state(NodeApi { status, readers })
}

/// Binds the API's listener (if enabled) and serves it in a task.
pub async fn serve_if_enabled(
    config: &Config,
    store: Store,
    _reports: broadcast::Sender<Arc<SignedReport>>,
    status: StatusHandle,
    _registry: prometheus_client::registry::Registry,
) -> Result<()> {
    if !config.node.api.enabled {
        return Ok(());
    }
    let addr = config.api_listen();
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr} for the API; choose another `api.listen` or stop the process using it"))?;
    let app = router(status, store.readers.clone());
    tracing::info!(%addr, "API listening");
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "API server stopped");
        }
    });
    Ok(())
}
