//! Route handlers. Each parses and validates its input first, so that a bad
//! request gets a 4xx naming the parameter before the store is touched.

use super::server::ConnHandle;
use super::types::{FeedValue, LeafValue};
use super::{ApiError, ApiState, openapi};
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{Method, StatusCode, Uri, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde_json::{Value, json};
use sibyl_aggregator::merkle::{self, MerkleProof};
use sibyl_aggregator::{FeedId, Round, SignedReport, Writer, digest, encoding};
use sibyl_node::store::{Db, HistoryCursor, Point, StoreError, now_ms, retention};
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
    let f = feed.clone();
    if st.inner.readers.read(move |db| db.has_feed(&f)).await? {
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
        .readers
        .read(|db| Ok(db.latest_report()?.map(|r| r.header.round)))
        .await?;
    Ok(Json(json!({
        "status": "ok",
        "last_report_round": last,
        "db_size_bytes": st.inner.readers.size_bytes(),
    })))
}

pub(super) async fn metrics(State(st): State<ApiState>) -> Result<Response, ApiError> {
    let size = i64::try_from(st.inner.readers.size_bytes()).unwrap_or(i64::MAX);
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
    let points = st
        .inner
        .readers
        .read(move |db| {
            let mut ids: BTreeSet<FeedId> = db.feed_ids()?.into_iter().collect();
            ids.extend(configured);
            let mut out = Vec::with_capacity(ids.len());
            for id in ids {
                let p = db.latest(&id)?;
                out.push((id, p));
            }
            Ok(out)
        })
        .await?;
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

pub(super) async fn feed_latest(
    State(st): State<ApiState>,
    Path(id): Path<String>,
) -> Result<Json<FeedLatest>, ApiError> {
    let feed = known_feed(&st, &id).await?;
    let f = feed.clone();
    let found = st
        .inner
        .readers
        .read(move |db: &mut Db| {
            let Some(p) = db.latest(&f)? else {
                return Ok(None);
            };
            let report = db.report(p.round)?;
            Ok(Some((p, report)))
        })
        .await?;
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
                .readers
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
                .readers
                .candles(feed.clone(), from, to, interval_ms, limit)
                .await?;
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
        st.inner.readers.read(|db| db.latest_report()).await?
    } else {
        let r: Round = round_param(&round)?;
        st.inner.readers.report(r).await?
    };
    match found {
        Some(rep) => Ok(Json(report_json(rep))),
        None => Err(ApiError::not_found(
            "unknown_round",
            format!("no signed report for round {round} is stored on this node"),
        )),
    }
}

/// A round number in a path: `round` in `0..=MAX_INT`.
pub fn round_param(round: &str) -> Result<Round, ApiError> {
    int_param("round", round, "a round number (or `latest`)")
}

/// One open stream, counted in all and for its client until dropped.
struct StreamSlot {
    st: ApiState,
    ip: IpAddr,
}

impl StreamSlot {
    /// Takes a slot for `ip`, or says which cap is full.
    fn take(st: &ApiState, ip: IpAddr) -> Result<Self, ApiError> {
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

/// `GET /v1/stream`: one task per stream moves reports from the node's
/// broadcast into a queue of `stream_queue` reports; the response drains it.
/// The broadcast never waits for a stream. A client that lets the queue fill
/// gets a final `lagged` event and its connection is closed if that has not
/// gone out within [`LAGGED_GRACE`]; so one stream holds at most
/// `stream_queue` reports (shared `Arc`s) plus hyper's write buffer.
pub(super) async fn stream(
    State(st): State<ApiState>,
    conn: Option<Extension<ConnHandle>>,
    q: Result<Query<Params>, QueryRejection>,
) -> Result<Response, ApiError> {
    let p = params(q, &["feeds"])?;
    let mut filter: Option<BTreeSet<FeedId>> = None;
    if let Some(list) = p.get("feeds") {
        let mut set = BTreeSet::new();
        for id in list.split(',').filter(|s| !s.is_empty()) {
            set.insert(known_feed(&st, id).await?);
        }
        filter = Some(set);
    }
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
                Queued::Report(report) => report_event(&report, filter.as_ref()),
                Queued::Skipped(n) => Some(Event::default().event("lagged").data(format!(
                    "{n} reports were skipped (the node fell behind); fetch /v1/feeds to resync"
                ))),
            }
        })
        .chain(tokio_stream::once(()).filter_map(move |()| {
            lagged.load(Ordering::Acquire).then(|| {
                Event::default().event("lagged").data(
                    "this client read too slowly and the stream ends here; reconnect and fetch /v1/feeds to resync",
                )
            })
        }))
        .map(Ok::<Event, Infallible>);
    Ok(Sse::new(events)
        .keep_alive(KeepAlive::default())
        .into_response())
}

/// What a stream's queue carries.
enum Queued {
    Report(Arc<SignedReport>),
    /// The broadcast overran this stream's task (the node itself was busy).
    Skipped(u64),
}

/// What a stream's task needs when its client falls behind.
struct StreamEnd {
    st: ApiState,
    conn: Option<ConnHandle>,
    lagged: Arc<AtomicBool>,
}

async fn forward_reports(
    mut sub: broadcast::Receiver<Arc<SignedReport>>,
    tx: mpsc::Sender<Queued>,
    filter: Option<BTreeSet<FeedId>>,
    end: StreamEnd,
) {
    loop {
        let item = tokio::select! {
            () = tx.closed() => return,
            r = sub.recv() => match r {
                Ok(report) => {
                    let wanted = filter
                        .as_ref()
                        .is_none_or(|f| report.leaves.iter().any(|l| f.contains(&l.feed_id)));
                    if !wanted {
                        continue;
                    }
                    Queued::Report(report)
                }
                Err(broadcast::error::RecvError::Lagged(n)) => Queued::Skipped(n),
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

fn report_event(report: &Arc<SignedReport>, filter: Option<&BTreeSet<FeedId>>) -> Option<Event> {
    let leaves: Vec<LeafValue> = report
        .leaves
        .iter()
        .filter(|l| filter.is_none_or(|f| f.contains(&l.feed_id)))
        .map(LeafValue::from)
        .collect();
    if leaves.is_empty() {
        return None;
    }
    let data = json!({
        "round": report.header.round,
        "timestamp_ms": report.header.timestamp_ms,
        "leaves": leaves,
    });
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
