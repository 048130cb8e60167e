//! Route handlers. Each parses and validates its input first, so that a bad
//! request gets a 4xx naming the parameter before the store is touched.

use super::server::ConnHandle;
use super::types::{FeedValue, LeafValue};
use super::{ApiError, ApiState, openapi};
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde_json::{Value, json};
use sibyl_aggregator::merkle::{self, MerkleProof};
use sibyl_aggregator::{Encode, FeedId, Round, SignedReport, Writer, digest, encoding};
use sibyl_node::store::{Candle, HistoryCursor, Point, StoreError, now_ms, retention};
use std::collections::{BTreeMap, BTreeSet};
use std::convert::Infallible;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::sync::{broadcast, mpsc};
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;

/// A route's query parameters.
pub(super) type Params = BTreeMap<String, String>;

/// The query parameters, refusing any this route does not take.
pub(super) fn params(
    q: Result<Query<Params>, QueryRejection>,
    allowed: &[&str],
) -> Result<Params, ApiError> {
    let Query(p) =
        q.map_err(|e| ApiError::bad_parameter(format!("malformed query string: {e}")))?;
    if let Some(k) = p.keys().find(|k| !allowed.contains(&k.as_str())) {
        return Err(ApiError::bad_parameter(format!(
            "unknown parameter `{k}`; this route takes {}",
            allowed
                .iter()
                .map(|a| format!("`{a}`"))
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    Ok(p)
}

/// Largest integer a parameter may carry: the store's integers are SQLite's
/// signed 64-bit ones.
pub(super) const MAX_INT: u64 = i64::MAX as u64;

/// Parameter `name` as a whole number in `0..=MAX_INT`; anything else is a
/// 400 that names it (`out_of_range` for a number too large).
pub(super) fn int_param(name: &str, v: &str, what: &str) -> Result<u64, ApiError> {
    let too_large = || {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "out_of_range",
            format!("`{name}` = {v} is out of range: it must be {what} in 0..={MAX_INT}"),
        )
    };
    match v.parse::<u64>() {
        Ok(n) if n <= MAX_INT => Ok(n),
        Ok(_) => Err(too_large()),
        Err(_) if !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) => Err(too_large()),
        Err(_) => Err(ApiError::bad_parameter(format!(
            "`{name}` must be {what}, got {v:?}"
        ))),
    }
}

fn u64_param(p: &Params, name: &str, what: &str) -> Result<Option<u64>, ApiError> {
    p.get(name).map(|v| int_param(name, v, what)).transpose()
}

/// `"1m"`, `"5m"`, `"1h"`, `"500ms"`, `"30s"`, `"1d"` or a bare number of ms.
pub(super) fn parse_interval(s: &str) -> Result<u64, ApiError> {
    let bad = || {
        ApiError::bad_parameter(format!(
            "`interval` must be a duration like `1m`, `5m`, `1h`, `1d`, `30s` or milliseconds, got {s:?}"
        ))
    };
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().map_err(|_| bad())?;
    let mult = match unit {
        "" | "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return Err(bad()),
    };
    n.checked_mul(mult).ok_or_else(bad)
}

/// Parse a feed id and make sure the node knows it (configured or stored).
async fn known_feed(st: &ApiState, id: &str) -> Result<FeedId, ApiError> {
    let feed = FeedId::new(id)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "bad_feed_id", format!("{e}")))?;
    if st.inner.config.feeds.contains_key(&feed) {
        return Ok(feed);
    }
    if st.inner.store.has_feed(feed.clone()).await? {
        return Ok(feed);
    }
    Err(ApiError::not_found(
        "unknown_feed",
        format!("unknown feed {id:?}; GET /v1/feeds lists the feeds this node serves"),
    ))
}

fn decimals(st: &ApiState, feed: &FeedId) -> Option<u8> {
    st.inner.config.feeds.get(feed).map(|f| f.decimals)
}

fn feed_value(st: &ApiState, p: &Point) -> FeedValue {
    FeedValue {
        feed_id: p.feed_id.to_string(),
        decimals: decimals(st, &p.feed_id),
        round: p.round,
        timestamp_ms: p.timestamp_ms,
        price: p.price.to_string(),
        confidence: p.confidence.to_string(),
        num_observations: p.num_observations,
        observed_at_ms: p.observed_at_ms,
        quality: crate::types::LeafQuality::from(&p.leaf()),
    }
}

/// The report fields a verifier needs besides the report itself.
/// A signed report as served, with what a verifier needs besides it. Typed,
/// not a `serde_json::Value`: a leaf value beyond 64 bits (an 18-decimal
/// feed above about 9.2 units) has no `Value` form, and building one failed
/// the request.
#[derive(serde::Serialize)]
pub(super) struct ReportJson {
    report: SignedReport,
    digest: String,
    header_abi: String,
}

fn report_json(report: SignedReport) -> ReportJson {
    ReportJson {
        digest: hex::encode(digest::header_digest(&report.header)),
        header_abi: hex::encode(encoding::encode_header(&report.header)),
        report,
    }
}

/// `GET /v1/feeds/{id}/latest`: the value, its leaf's Merkle proof and the
/// whole report.
#[derive(serde::Serialize)]
pub(super) struct FeedLatest {
    #[serde(flatten)]
    value: FeedValue,
    leaf_index: usize,
    proof: MerkleProof,
    proof_hex: String,
    leaf_abi: String,
    #[serde(flatten)]
    report: ReportJson,
}

pub(super) async fn healthz(State(st): State<ApiState>) -> Result<Json<Value>, ApiError> {
    let last = st
        .inner
        .store
        .latest_report()
        .await?
        .map(|r| r.header.round);
    Ok(Json(json!({
        "status": "ok",
        "last_report_round": last,
        "db_size_bytes": st.inner.store.size_bytes().await,
        // Margin inputs applied but not stored (the disk is full?); 0 normally.
        "margin_unstored_inputs": st.inner.margin.as_ref().map(|m| m.unstored_inputs()),
    })))
}

pub(super) async fn metrics(State(st): State<ApiState>) -> Result<Response, ApiError> {
    let size = i64::try_from(st.inner.store.size_bytes().await).unwrap_or(i64::MAX);
    st.inner.metrics.db_size.set(size);
    let mut body = String::new();
    prometheus_client::encoding::text::encode(&mut body, &st.inner.registry).map_err(|_| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "metrics_encoding",
            "could not encode the metrics registry",
        )
    })?;
    Ok((
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        crate::openmetrics_to_prometheus(&body),
    )
        .into_response())
}

pub(super) async fn feeds(State(st): State<ApiState>) -> Result<Json<Value>, ApiError> {
    let configured: Vec<FeedId> = st.inner.config.feeds.keys().cloned().collect();
    let points = latest_points(&st, configured).await?;
    let feeds: Vec<Value> = points
        .iter()
        .map(|(id, p)| match p {
            Some(p) => json!(feed_value(&st, p)),
            None => {
                json!({ "feed_id": id.to_string(), "decimals": decimals(&st, id), "round": null })
            }
        })
        .collect();
    Ok(Json(json!({ "feeds": feeds })))
}

/// Every feed (configured or stored) with its newest point.
async fn latest_points(
    st: &ApiState,
    configured: Vec<FeedId>,
) -> Result<Vec<(FeedId, Option<Point>)>, ApiError> {
    let store = &st.inner.store;
    let mut ids: BTreeSet<FeedId> = store.feed_ids().await?.into_iter().collect();
    ids.extend(configured);
    let mut out = Vec::with_capacity(ids.len());
    for id in ids {
        let p = store.latest(id.clone()).await?;
        out.push((id, p));
    }
    Ok(out)
}

/// `GET /v1/feeds/meta`: feed discovery. Each feed's static parameters
/// (decimals, deviation, heartbeat from the committee file) and what its
/// newest leaf says (venues, status, flags, age; `overdue` when no value came
/// for two heartbeats).
pub(super) async fn feeds_meta(State(st): State<ApiState>) -> Result<Json<Value>, ApiError> {
    let configured: Vec<FeedId> = st.inner.config.feeds.keys().cloned().collect();
    let points = latest_points(&st, configured).await?;
    let now = now_ms();
    let feeds: Vec<Value> = points
        .iter()
        .map(|(id, p)| {
            let info = st.inner.config.feeds.get(id);
            let heartbeat = info.and_then(|i| i.heartbeat_ms);
            let age = p.as_ref().map(|p| now.saturating_sub(p.timestamp_ms));
            let overdue = match (heartbeat, age) {
                (Some(hb), Some(age)) => Some(age > hb.saturating_mul(2)),
                (Some(_), None) => Some(true),
                _ => None,
            };
            json!({
                "feed_id": id.to_string(),
                "decimals": info.map(|i| i.decimals),
                "deviation_bps": info.and_then(|i| i.deviation_bps),
                "heartbeat_ms": heartbeat,
                "configured": info.is_some(),
                "venues": p.as_ref().map(|p| p.venues),
                "status": p.as_ref().map(|p| p.status.as_str()),
                "flags": p.as_ref().map(|p| sibyl_aggregator::report::flags::names(p.flags)),
                "last_round": p.as_ref().map(|p| p.round),
                "last_timestamp_ms": p.as_ref().map(|p| p.timestamp_ms),
                "age_ms": age,
                "overdue": overdue,
            })
        })
        .collect();
    Ok(Json(json!({ "feeds": feeds })))
}

pub(super) async fn feed_latest(
    State(st): State<ApiState>,
    Path(id): Path<String>,
) -> Result<Json<FeedLatest>, ApiError> {
    let feed = known_feed(&st, &id).await?;
    let found = match st.inner.store.latest(feed.clone()).await? {
        Some(p) => {
            let report = st.inner.store.report(p.round).await?;
            Some((p, report))
        }
        None => None,
    };
    let Some((point, report)) = found else {
        return Err(ApiError::not_found(
            "no_data",
            format!("feed {feed} has no signed value yet"),
        ));
    };
    let Some(report) = report else {
        return Err(ApiError::not_found(
            "report_missing",
            format!(
                "the signed report of round {} (feed {feed}'s latest value) is not stored on this node",
                point.round
            ),
        ));
    };
    let Some(index) = report.leaves.iter().position(|l| l.feed_id == feed) else {
        return Err(StoreError::Corrupt(format!(
            "report of round {} has no leaf for {feed}",
            point.round
        ))
        .into());
    };
    let proof: MerkleProof = merkle::proof(&report.leaves, index).map_err(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "proof_failed",
            format!("cannot build the Merkle proof: {e}"),
        )
    })?;
    let mut w = Writer::new();
    w.put(&proof);
    Ok(Json(FeedLatest {
        value: feed_value(&st, &point),
        leaf_index: index,
        proof,
        proof_hex: hex::encode(w.finish()),
        leaf_abi: hex::encode(encoding::encode_leaf(&report.leaves[index])),
        report: report_json(report),
    }))
}

pub(super) async fn feed_history(
    State(st): State<ApiState>,
    Path(id): Path<String>,
    q: Result<Query<Params>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let p = params(q, &["from", "to", "interval", "limit", "cursor"])?;
    let limits = &st.inner.config.limits;
    let to = u64_param(&p, "to", "milliseconds since the Unix epoch")?
        .unwrap_or_else(|| now_ms().saturating_add(1));
    let from = u64_param(&p, "from", "milliseconds since the Unix epoch")?
        .unwrap_or_else(|| to.saturating_sub(3_600_000));
    if from > to {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_range",
            format!("`from` ({from}) is after `to` ({to})"),
        ));
    }
    let interval = p.get("interval").map(|s| parse_interval(s)).transpose()?;
    let limit = u64_param(&p, "limit", "a positive integer")?;
    if limit == Some(0) {
        return Err(ApiError::bad_parameter("`limit` must be at least 1"));
    }
    if let Some(l) = limit
        && l > limits.max_page as u64
    {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "page_too_large",
            format!(
                "`limit` {l} is above the maximum page of {}",
                limits.max_page
            ),
        ));
    }
    let feed = known_feed(&st, &id).await?;
    let dec = decimals(&st, &feed);
    match interval {
        None => {
            let max_range = u64::try_from(limits.max_raw_range.as_millis()).unwrap_or(u64::MAX);
            if to - from > max_range {
                return Err(ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "range_too_large",
                    format!(
                        "raw points over {} ms requested, at most {max_range} ms at a time; narrow `from`..`to` or ask for candles with `interval`",
                        to - from
                    ),
                ));
            }
            let cursor = p.get("cursor").map(|c| parse_cursor(c)).transpose()?;
            let limit = limit.unwrap_or(1_000) as usize;
            let (points, next) = st
                .inner
                .store
                .history(feed.clone(), from, to, cursor, limit)
                .await?;
            Ok(Json(json!({
                "feed_id": feed.to_string(),
                "decimals": dec,
                "from": from,
                "to": to,
                "points": points,
                "next_cursor": next.map(|c| format!("{}:{}", c.timestamp_ms, c.round)),
            })))
        }
        Some(interval_ms) => {
            if p.contains_key("cursor") {
                return Err(ApiError::bad_parameter(
                    "`cursor` pages raw points; for candles pass the previous page's `next_from` as `from`",
                ));
            }
            if !(1_000..=30 * 86_400_000).contains(&interval_ms) {
                return Err(ApiError::bad_parameter(format!(
                    "`interval` must be between 1s and 30d, got {interval_ms} ms"
                )));
            }
            let buckets = (to - from).div_ceil(interval_ms);
            if buckets > limits.max_buckets {
                return Err(ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "range_too_large",
                    format!(
                        "{buckets} candles of {interval_ms} ms requested, at most {}; use a longer `interval` or a narrower range",
                        limits.max_buckets
                    ),
                ));
            }
            let limit = limit.unwrap_or(1_500) as usize;
            let (candles, next) = st
                .inner
                .store
                .candles(feed.clone(), from, to, interval_ms, limit)
                .await?;
            let (candles, next) = fill_empty_buckets(candles, next, from, to, interval_ms, limit);
            Ok(Json(json!({
                "feed_id": feed.to_string(),
                "decimals": dec,
                "interval_ms": interval_ms,
                "from": from,
                "to": to,
                "candles": candles,
                "next_from": next,
            })))
        }
    }
}

/// Candles for every bucket from the one holding `from` on, at most `limit`:
/// a bucket without a report is there with `count: 0` and null prices, so
/// a gap in the history is never silent. Returns the next page's start.
pub(super) fn fill_empty_buckets(
    stored: Vec<Candle>,
    stored_next: Option<u64>,
    from: u64,
    to: u64,
    interval_ms: u64,
    limit: usize,
) -> (Vec<Value>, Option<u64>) {
    let interval_ms = interval_ms.max(1);
    // Buckets up to the stored page's end: the next stored bucket, or `to`.
    let end = stored_next.unwrap_or(to);
    let mut out = Vec::new();
    let mut start = from - from % interval_ms;
    let mut stored = stored.into_iter().peekable();
    while start < end {
        if out.len() == limit {
            return (out, Some(start));
        }
        match stored.peek() {
            Some(c) if c.start_ms == start => {
                out.push(json!(c));
                stored.next();
            }
            _ => out.push(json!({
                "start_ms": start,
                "open": null, "high": null, "low": null, "close": null,
                "count": 0,
            })),
        }
        start = match start.checked_add(interval_ms) {
            Some(s) => s,
            None => break,
        };
    }
    (out, stored_next)
}

fn parse_cursor(c: &str) -> Result<HistoryCursor, ApiError> {
    let bad = || {
        ApiError::bad_parameter(format!(
            "`cursor` must be a `next_cursor` from a previous page (`<timestamp_ms>:<round>`), got {c:?}"
        ))
    };
    let (ts, round) = c.split_once(':').ok_or_else(bad)?;
    let part = |v: &str| int_param("cursor", v, "a `next_cursor` from a previous page");
    if [ts, round]
        .iter()
        .any(|v| v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()))
    {
        return Err(bad());
    }
    Ok(HistoryCursor {
        timestamp_ms: part(ts)?,
        round: part(round)?,
    })
}

pub(super) async fn report(
    State(st): State<ApiState>,
    Path(round): Path<String>,
) -> Result<Json<ReportJson>, ApiError> {
    let found = if round == "latest" {
        st.inner.store.latest_report().await?
    } else {
        let r: Round = round_param(&round)?;
        st.inner.store.report(r).await?
    };
    match found {
        Some(rep) => Ok(Json(report_json(rep))),
        None => Err(ApiError::not_found(
            "unknown_round",
            format!("no signed report for round {round} is stored on this node"),
        )),
    }
}

/// Most reports one `GET /v1/reports` page returns.
pub(super) const MAX_REPORTS_PAGE: usize = 500;

/// `GET /v1/reports?after=R[&limit=N]`: the signed reports after round `R`,
/// oldest first (catch-up for followers: a gateway fills its gaps here).
/// `next_after` is the last round of the page when more may follow.
pub(super) async fn reports(
    State(st): State<ApiState>,
    q: Result<Query<Params>, QueryRejection>,
) -> Result<Json<ReportPage>, ApiError> {
    let p = params(q, &["after", "limit"])?;
    let after = u64_param(&p, "after", "a round number")?;
    let limit = u64_param(&p, "limit", "a positive integer")?.unwrap_or(100);
    if limit == 0 || limit > MAX_REPORTS_PAGE as u64 {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "page_too_large",
            format!("`limit` must be in 1..={MAX_REPORTS_PAGE}, got {limit}"),
        ));
    }
    let limit = limit as usize;
    // Without `after` the listing starts at round 0 itself.
    let mut reports = Vec::with_capacity(limit);
    let after = match after {
        Some(a) => a,
        None => {
            reports.extend(st.inner.store.report(0).await?);
            0
        }
    };
    let rest = limit - reports.len();
    if rest > 0 {
        reports.extend(st.inner.store.reports_after(after, rest).await?);
    }
    let next_after = (reports.len() == limit)
        .then(|| reports.last().map(|r| r.header.round))
        .flatten();
    Ok(Json(ReportPage {
        reports: reports.into_iter().map(report_json).collect(),
        next_after,
    }))
}

/// `GET /v1/reports`: one page (typed, as [`ReportJson`]).
#[derive(serde::Serialize)]
pub(super) struct ReportPage {
    reports: Vec<ReportJson>,
    next_after: Option<Round>,
}

/// A round number in a path: `round` in `0..=MAX_INT`.
pub fn round_param(round: &str) -> Result<Round, ApiError> {
    int_param("round", round, "a round number (or `latest`)")
}

/// One open stream, counted in all and for its client until dropped.
pub(super) struct StreamSlot {
    st: ApiState,
    ip: IpAddr,
}

impl StreamSlot {
    /// Takes a slot for `ip`, or says which cap is full.
    pub(super) fn take(st: &ApiState, ip: IpAddr) -> Result<Self, ApiError> {
        let limits = &st.inner.config.limits;
        let m = &st.inner.metrics;
        let refused = |reason: &str| {
            m.streams_refused
                .get_or_create(&super::ReasonLabels {
                    reason: reason.to_owned(),
                })
                .inc();
        };
        let mut clients = st
            .inner
            .stream_clients
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let mine = clients.get(&ip).copied().unwrap_or(0);
        if mine >= limits.max_streams_per_client {
            refused("per_client");
            return Err(ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "too_many_streams",
                format!(
                    "{ip} already holds {mine} streams, the most one client may open; close one first"
                ),
            ));
        }
        if m.streams.get() >= limits.max_streams as i64 {
            refused("global");
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "too_many_streams",
                "this node serves no more report streams right now; retry later",
            ));
        }
        clients.insert(ip, mine + 1);
        m.streams.inc();
        Ok(Self { st: st.clone(), ip })
    }
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        let inner = &self.st.inner;
        inner.metrics.streams.dec();
        let mut clients = inner
            .stream_clients
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(n) = clients.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                clients.remove(&self.ip);
            }
        }
    }
}

/// How long a stream that fell behind may take to flush its last events
/// before its connection is closed.
pub(super) const LAGGED_GRACE: Duration = Duration::from_secs(2);

/// Reports read from the store per page while a stream replays.
const REPLAY_PAGE: usize = 256;

/// The round a resuming client last saw: the `Last-Event-ID` header (what
/// an `EventSource` sends on reconnect) or the `last_event_id` parameter.
fn resume_point(headers: &HeaderMap, p: &Params) -> Result<Option<Round>, ApiError> {
    if let Some(v) = headers.get("last-event-id") {
        let v = v.to_str().map_err(|_| {
            ApiError::bad_parameter("`Last-Event-ID` must be a round number (the last event's id)")
        })?;
        let v = v.trim();
        if !v.is_empty() {
            return int_param("Last-Event-ID", v, "a round number (the last event's id)").map(Some);
        }
    }
    p.get("last_event_id")
        .map(|v| int_param("last_event_id", v, "a round number (the last event's id)"))
        .transpose()
}

/// `true`/`false` parameter.
pub(super) fn bool_param(p: &Params, name: &str) -> Result<bool, ApiError> {
    match p.get(name).map(String::as_str) {
        None | Some("false" | "0") => Ok(false),
        Some("true" | "1" | "") => Ok(true),
        Some(other) => Err(ApiError::bad_parameter(format!(
            "`{name}` must be `true` or `false`, got {other:?}"
        ))),
    }
}

/// `GET /v1/stream`: one task per stream moves reports from the node's
/// broadcast into a queue of `stream_queue` reports; the response drains it.
/// The broadcast never waits for a stream. A client that lets the queue fill
/// gets a final `lagged` event and its connection is closed if that has not
/// gone out within [`LAGGED_GRACE`]; so one stream holds at most
/// `stream_queue` reports (shared `Arc`s) plus hyper's write buffer.
///
/// Resume: with `Last-Event-ID: R` (event id = round) the task first replays
/// every stored report after round `R` from the store, at the client's pace,
/// then goes on live from the broadcast, to which it subscribed before
/// reading the store; a live report at or below the last round sent is
/// dropped, so the client sees every report once, in round order. A task the
/// broadcast overran fills the gap from the store the same way.
pub(super) async fn stream(
    State(st): State<ApiState>,
    conn: Option<Extension<ConnHandle>>,
    headers: HeaderMap,
    q: Result<Query<Params>, QueryRejection>,
) -> Result<Response, ApiError> {
    let p = params(q, &["feeds", "signed", "last_event_id"])?;
    let filter = feed_filter(&st, p.get("feeds").map(String::as_str)).await?;
    let signed = bool_param(&p, "signed")?;
    let resume = resume_point(&headers, &p)?;
    let conn = conn.map(|Extension(c)| c);
    let ip = conn
        .as_ref()
        .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |c| c.peer.ip());
    let slot = StreamSlot::take(&st, ip)?;
    let (tx, rx) = mpsc::channel(st.inner.config.limits.stream_queue.max(1));
    let lagged = Arc::new(AtomicBool::new(false));
    tokio::spawn(forward_reports(
        st.inner.reports.subscribe(),
        tx,
        filter.clone(),
        resume,
        StreamEnd {
            st: st.clone(),
            conn,
            lagged: lagged.clone(),
        },
    ));
    let events = ReceiverStream::new(rx)
        .filter_map(move |item| {
            let _slot = &slot;
            match item {
                Queued::Report(report) => report_event(&report, filter.as_ref(), signed),
                Queued::Skipped(n) => Some(Event::default().event("lagged").data(format!(
                    "{n} reports were skipped (the node fell behind); fetch /v1/feeds to resync"
                ))),
            }
        })
        .chain(tokio_stream::once(()).filter_map(move |()| {
            lagged.load(Ordering::Acquire).then(|| {
                Event::default().event("lagged").data(
                    "this client read too slowly and the stream ends here; reconnect with Last-Event-ID set to the last event's id to resume without a gap",
                )
            })
        }))
        .map(Ok::<Event, Infallible>);
    Ok(Sse::new(events)
        .keep_alive(KeepAlive::default())
        .into_response())
}

/// The `feeds=A,B` filter of a stream, each feed checked.
pub(super) async fn feed_filter(
    st: &ApiState,
    list: Option<&str>,
) -> Result<Option<BTreeSet<FeedId>>, ApiError> {
    let Some(list) = list else {
        return Ok(None);
    };
    let mut set = BTreeSet::new();
    for id in list.split(',').filter(|s| !s.is_empty()) {
        set.insert(known_feed(st, id).await?);
    }
    Ok(Some(set))
}

/// Whether `report` carries a leaf the filter wants.
pub(super) fn wanted(report: &SignedReport, filter: Option<&BTreeSet<FeedId>>) -> bool {
    filter.is_none_or(|f| report.leaves.iter().any(|l| f.contains(&l.feed_id)))
}

/// What a stream's queue carries.
enum Queued {
    Report(Arc<SignedReport>),
    /// The broadcast overran this stream's task before it had sent anything
    /// it could resume from.
    Skipped(u64),
}

/// What a stream's task needs when its client falls behind.
struct StreamEnd {
    st: ApiState,
    conn: Option<ConnHandle>,
    lagged: Arc<AtomicBool>,
}

/// Sends the stored reports after round `after` (those the filter wants)
/// into `tx`, waiting for the client as it goes. Returns the last round
/// read, or `None` when the stream is gone or the store failed.
pub(super) async fn replay_into<T>(
    st: &ApiState,
    tx: &mpsc::Sender<T>,
    filter: Option<&BTreeSet<FeedId>>,
    mut after: Round,
    wrap: impl Fn(Arc<SignedReport>) -> T,
) -> Option<Round> {
    loop {
        let page = match st.inner.store.reports_after(after, REPLAY_PAGE).await {
            Ok(page) => page,
            Err(e) => {
                tracing::warn!(error = ?e, after, "stream replay: the store could not answer; ending the stream (the client resumes from its last event)");
                return None;
            }
        };
        let Some(last) = page.last() else {
            return Some(after);
        };
        let full = page.len() == REPLAY_PAGE;
        after = last.header.round;
        for report in page {
            if wanted(&report, filter) && tx.send(wrap(Arc::new(report))).await.is_err() {
                return None;
            }
        }
        if !full {
            return Some(after);
        }
    }
}

async fn forward_reports(
    mut sub: broadcast::Receiver<Arc<SignedReport>>,
    tx: mpsc::Sender<Queued>,
    filter: Option<BTreeSet<FeedId>>,
    mut last: Option<Round>,
    end: StreamEnd,
) {
    if let Some(after) = last {
        match replay_into(&end.st, &tx, filter.as_ref(), after, Queued::Report).await {
            Some(l) => last = Some(l),
            None => return,
        }
    }
    loop {
        let item = tokio::select! {
            () = tx.closed() => return,
            r = sub.recv() => match r {
                Ok(report) => {
                    let round = report.header.round;
                    if last.is_some_and(|l| round <= l) {
                        continue; // replayed already (or older than what the client has)
                    }
                    last = Some(round);
                    if !wanted(&report, filter.as_ref()) {
                        continue;
                    }
                    Queued::Report(report)
                }
                Err(broadcast::error::RecvError::Lagged(n)) => match last {
                    Some(after) => {
                        match replay_into(&end.st, &tx, filter.as_ref(), after, Queued::Report).await {
                            Some(l) => last = Some(l),
                            None => return,
                        }
                        continue;
                    }
                    None => Queued::Skipped(n),
                },
                Err(broadcast::error::RecvError::Closed) => return,
            },
        };
        match tx.try_send(item) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Closed(_)) => return,
            Err(mpsc::error::TrySendError::Full(_)) => {
                end.lagged.store(true, Ordering::Release);
                end.st.inner.metrics.streams_lagged.inc();
                if let Some(conn) = &end.conn {
                    tracing::debug!(peer = %conn.peer, "stream client fell behind; dropping it");
                    conn.close_within(LAGGED_GRACE);
                }
                return;
            }
        }
    }
}

/// A report as the stream and the WebSocket send it: round, timestamp and
/// the wanted leaves, plus with `signed` the whole signed report in its
/// wire encoding (hex), which a follower verifies before storing.
pub(super) fn report_body(
    report: &SignedReport,
    filter: Option<&BTreeSet<FeedId>>,
    signed: bool,
) -> Option<Value> {
    let leaves: Vec<LeafValue> = report
        .leaves
        .iter()
        .filter(|l| filter.is_none_or(|f| f.contains(&l.feed_id)))
        .map(LeafValue::from)
        .collect();
    if leaves.is_empty() {
        return None;
    }
    let mut data = json!({
        "round": report.header.round,
        "timestamp_ms": report.header.timestamp_ms,
        "leaves": leaves,
    });
    if signed && let Some(obj) = data.as_object_mut() {
        obj.insert(
            "signed_report".into(),
            Value::String(hex::encode(report.to_bytes())),
        );
    }
    Some(data)
}

fn report_event(
    report: &Arc<SignedReport>,
    filter: Option<&BTreeSet<FeedId>>,
    signed: bool,
) -> Option<Event> {
    let data = report_body(report, filter, signed)?;
    Some(
        Event::default()
            .event("report")
            .id(report.header.round.to_string())
            .data(data.to_string()),
    )
}

pub(super) async fn committee(State(st): State<ApiState>) -> Json<Value> {
    let status = st.inner.committee.borrow().clone();
    Json(json!(status))
}

pub(super) async fn openapi() -> Json<Value> {
    Json(openapi::document())
}

pub(super) async fn admin_retention(
    State(st): State<ApiState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    let body = body.map_err(|e| {
        ApiError::new(
            e.status(),
            "bad_body",
            format!("cannot read the request body: {}", e.body_text()),
        )
    })?;
    if !body.is_empty() && serde_json::from_slice::<Value>(&body).is_err() {
        return Err(ApiError::bad_parameter("the body must be empty or JSON"));
    }
    let Some(writer) = st.inner.writer.clone() else {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "no_writer",
            "this API instance has no write access to the store",
        ));
    };
    let stats = retention::run_once(&writer, &st.inner.config.retention, now_ms()).await?;
    Ok(Json(json!({
        "deleted": stats.deleted,
        "thinned": stats.thinned,
        "transactions": stats.transactions,
    })))
}

pub(super) async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!(
            "{method} is not allowed on {}; the `Allow` header lists the methods it takes",
            uri.path()
        ),
    )
}

pub(super) async fn not_found(method: Method, uri: Uri) -> ApiError {
    ApiError::not_found(
        "no_route",
        format!("no route {method} {}; see /v1/openapi.json", uri.path()),
    )
}
