//! API tests over real HTTP on 127.0.0.1 against a real SQLite store.

use super::*;
use prometheus_client::metrics::counter::Counter;
use serde_json::{Value, json};
use sibyl_aggregator::Decode;
use sibyl_aggregator::merkle::{self, MerkleProof};
use sibyl_aggregator::{
    ConfigDigest, PROTOCOL_VERSION, ReportHeader, ReportLeaf, SignatureBytes, Suite, digest,
};
use sibyl_node::store::Store;
use std::net::SocketAddr;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

mod hardening;
mod margin;

const T0: u64 = 1_700_000_000_000;

fn feed(s: &str) -> FeedId {
    FeedId::new(s).expect("feed id")
}

/// A report over BTC-USD, ETH-USD, SOL-USD with a real Merkle root.
fn report(round: u64) -> SignedReport {
    let ts = T0 + round * 1_000;
    let leaves: Vec<ReportLeaf> = [("BTC-USD", 60_000), ("ETH-USD", 3_000), ("SOL-USD", 150)]
        .iter()
        .map(|(id, base)| {
            let price = (*base as i128) * 100_000_000 + round as i128;
            let mut l = ReportLeaf::basic(feed(id), price, 5, 4, ts - 50);
            l.bid = price - 10;
            l.ask = price + 10;
            l.venues = 4;
            l.ema = price - 3;
            l.volatility = 512_000_000;
            if *id == "SOL-USD" {
                // One feed on too few venues, its last move not yet confirmed.
                l.status = sibyl_aggregator::LeafStatus::Degraded;
                l.flags = sibyl_aggregator::report::flags::FEW_VENUES
                    | sibyl_aggregator::report::flags::UNCONFIRMED_JUMP;
            }
            l
        })
        .collect();
    let mut signatures = BTreeMap::new();
    signatures.insert(Suite::Ed25519, SignatureBytes(vec![0xAB; 64]));
    SignedReport {
        header: ReportHeader {
            version: PROTOCOL_VERSION,
            config_digest: ConfigDigest([7; 32]),
            round,
            timestamp_ms: ts,
            merkle_root: merkle::root(&leaves),
            margin_root: [0; 32],
        },
        leaves,
        signatures,
        commands: Vec::new(),
        margin_state: None,
    }
}

struct Harness {
    addr: SocketAddr,
    reports: broadcast::Sender<Arc<SignedReport>>,
    committee: watch::Sender<CommitteeStatus>,
    _dir: tempfile::TempDir,
}

async fn start(config: ApiConfig) -> Harness {
    start_with(config, Router::new()).await
}

/// The API and `extra` routes served as the node serves them ([`serve_with`]).
async fn start_with(config: ApiConfig, extra: Router) -> Harness {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(&dir.path().join("api.db")).expect("store");
    for r in 1..=20 {
        store.writer.insert_report(report(r)).await.expect("insert");
    }
    let (reports, _) = broadcast::channel(64);
    let (committee_tx, committee_rx) = watch::channel(CommitteeStatus::default());
    let mut registry = Registry::default();
    // The node registers its own metrics in the same registry.
    let rounds = Counter::<u64>::default();
    rounds.inc_by(3);
    registry.register("sibyl_rounds_signed", "Rounds signed", rounds);
    let state = ApiState::new(ApiParts {
        store: std::sync::Arc::new(store.readers.clone()),
        writer: Some(store.writer.clone()),
        reports: reports.clone(),
        committee: committee_rx,
        registry,
        margin: None,
        config,
    });
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(serve_with(listener, state, extra));
    Harness {
        addr,
        reports,
        committee: committee_tx,
        _dir: dir,
    }
}

fn config() -> ApiConfig {
    let mut feeds = BTreeMap::new();
    for id in ["BTC-USD", "ETH-USD", "SOL-USD", "DOGE-USD"] {
        feeds.insert(
            feed(id),
            FeedInfo {
                decimals: 8,
                ..FeedInfo::default()
            },
        );
    }
    ApiConfig {
        feeds,
        ..ApiConfig::default()
    }
}

struct Resp {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Resp {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "not JSON ({e}): {}",
                String::from_utf8_lossy(&self.body[..self.body.len().min(500)])
            )
        })
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn error_code(&self) -> String {
        self.json()["error"]["code"]
            .as_str()
            .unwrap_or_else(|| panic!("no error code in {}", self.json()))
            .to_owned()
    }
}

/// A minimal HTTP/1.1 client: one request per connection.
async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Resp {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).await.expect("write");
    s.write_all(body).await.expect("write body");
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).await.expect("read");
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("end of headers");
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.split("\r\n");
    let status: u16 = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .expect("status line");
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect();
    let mut body = raw[split + 4..].to_vec();
    let chunked = headers
        .iter()
        .any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"));
    if chunked {
        body = dechunk(&body);
    }
    Resp {
        status,
        headers,
        body,
    }
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let Some(eol) = b.windows(2).position(|w| w == b"\r\n") else {
            return out;
        };
        let size =
            usize::from_str_radix(String::from_utf8_lossy(&b[..eol]).trim(), 16).unwrap_or(0);
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&b[eol + 2..eol + 2 + size]);
        b = &b[eol + 2 + size + 2..];
    }
}

async fn get(addr: SocketAddr, path: &str) -> Resp {
    http(addr, "GET", path, &[], b"").await
}

#[tokio::test]
async fn openapi_lists_every_route_and_every_route_exists() {
    let h = start(config()).await;
    let doc = get(h.addr, "/v1/openapi.json").await.json();
    let paths = doc["paths"].as_object().expect("paths");
    for (method, path) in ROUTES {
        let op = &paths
            .get(*path)
            .unwrap_or_else(|| panic!("{path} missing from openapi.json"))[method.to_lowercase()];
        assert!(op.is_object(), "{method} {path} missing from openapi.json");
        // The route is really served: no `no_route` fallback answer.
        let concrete = path
            .replace("{id}", "BTC-USD")
            .replace("{round}", "1")
            .replace("{account}", "1")
            .replace("{market}", "BTC-PERP");
        if *path == "/v1/stream" {
            continue; // never ends; covered by its own test
        }
        let r = http(h.addr, method, &concrete, &[], b"").await;
        assert!(
            r.status != 404 || r.error_code() != "no_route",
            "{method} {path} is not routed"
        );
    }
    // And nothing in the document that is not a route.
    for (path, ops) in paths {
        for method in ops.as_object().expect("ops").keys() {
            assert!(
                ROUTES
                    .iter()
                    .any(|(m, p)| p == path && m.eq_ignore_ascii_case(method)),
                "openapi.json documents {method} {path}, which is not a route"
            );
        }
    }
    let r = get(h.addr, "/v2/nothing").await;
    assert_eq!((r.status, r.error_code().as_str()), (404, "no_route"));
}

#[tokio::test]
async fn feeds_and_latest_with_a_verifiable_proof() {
    let h = start(config()).await;
    let feeds = get(h.addr, "/v1/feeds").await.json();
    let list = feeds["feeds"].as_array().expect("feeds");
    assert_eq!(list.len(), 4, "{feeds}");
    assert_eq!(list[0]["feed_id"], "BTC-USD");
    assert_eq!(list[0]["price"], "6000000000020");
    assert_eq!(list[0]["round"], 20);
    assert_eq!(list[0]["decimals"], 8);
    // What the leaf says about the price comes with it.
    assert_eq!(list[0]["status"], "ok", "{feeds}");
    assert_eq!(list[0]["flags"], serde_json::json!([]));
    assert_eq!(list[0]["bid"], "6000000000010");
    assert_eq!(list[0]["ask"], "6000000000030");
    assert_eq!(list[0]["venues"], 4);
    assert_eq!(list[0]["ema"], "6000000000017");
    assert_eq!(list[0]["volatility"], "512000000");
    assert_eq!(list[3]["feed_id"], "SOL-USD");
    assert_eq!(list[3]["status"], "degraded");
    assert_eq!(
        list[3]["flags"],
        serde_json::json!(["few_venues", "unconfirmed_jump"])
    );
    // Configured but never reported: listed without a value.
    assert_eq!(list[1]["feed_id"], "DOGE-USD");
    assert!(list[1]["round"].is_null());

    let r = get(h.addr, "/v1/feeds/ETH-USD/latest").await;
    assert_eq!(r.status, 200);
    let v = r.json();
    assert_eq!(v["price"], "300000000020");
    let report: SignedReport = serde_json::from_value(v["report"].clone()).expect("report");
    assert_eq!(report.header.round, 20);
    let proof: MerkleProof = serde_json::from_value(v["proof"].clone()).expect("proof");
    let index = v["leaf_index"].as_u64().expect("index") as usize;
    let leaf = &report.leaves[index];
    assert_eq!(leaf.feed_id, feed("ETH-USD"));
    assert!(merkle::verify_proof(
        &merkle::leaf_hash(leaf),
        &proof,
        &report.header.merkle_root
    ));
    assert_eq!(
        v["digest"],
        hex::encode(digest::header_digest(&report.header))
    );
    assert_eq!(
        v["report"]["signatures"]["ed25519"],
        hex::encode([0xAB; 64])
    );

    let r = get(h.addr, "/v1/feeds/XRP-USD/latest").await;
    assert_eq!((r.status, r.error_code().as_str()), (404, "unknown_feed"));
    let r = get(h.addr, "/v1/feeds/btc-usd/latest").await;
    assert_eq!((r.status, r.error_code().as_str()), (400, "bad_feed_id"));
    let r = get(h.addr, "/v1/feeds/DOGE-USD/latest").await;
    assert_eq!((r.status, r.error_code().as_str()), (404, "no_data"));
}

#[tokio::test]
async fn reports_by_round() {
    let h = start(config()).await;
    let v = get(h.addr, "/v1/reports/7").await.json();
    let rep: SignedReport = serde_json::from_value(v["report"].clone()).expect("report");
    assert_eq!(rep, report(7));
    let v = get(h.addr, "/v1/reports/latest").await.json();
    assert_eq!(v["report"]["header"]["round"], 20);
    let r = get(h.addr, "/v1/reports/99").await;
    assert_eq!((r.status, r.error_code().as_str()), (404, "unknown_round"));
    let r = get(h.addr, "/v1/reports/-1").await;
    assert_eq!((r.status, r.error_code().as_str()), (400, "bad_parameter"));
    assert!(
        r.json()["error"]["message"]
            .as_str()
            .expect("msg")
            .contains("round")
    );
}

#[tokio::test]
async fn history_points_candles_and_bad_requests() {
    let h = start(config()).await;
    let base = format!("/v1/feeds/BTC-USD/history?from={T0}&to={}", T0 + 100_000);
    // Raw points, paged by 8: 8 + 8 + 4.
    let mut cursor: Option<String> = None;
    let mut rounds = Vec::new();
    loop {
        let path = match &cursor {
            Some(c) => format!("{base}&limit=8&cursor={c}"),
            None => format!("{base}&limit=8"),
        };
        let v = get(h.addr, &path).await.json();
        for p in v["points"].as_array().expect("points") {
            rounds.push(p["round"].as_u64().expect("round"));
        }
        match v["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    assert_eq!(rounds, (1..=20).collect::<Vec<u64>>());
    // 10-second candles: rounds 1..=9, 10..=19, 20, then seven buckets with
    // no report, each there with count 0 and null prices (no silent gap).
    let v = get(h.addr, &format!("{base}&interval=10s")).await.json();
    let candles = v["candles"].as_array().expect("candles");
    assert_eq!(candles.len(), 10, "{v}");
    assert_eq!(candles[0]["count"], 9);
    for (i, c) in candles.iter().enumerate().skip(3) {
        assert_eq!(c["count"], 0, "{c}");
        assert!(c["open"].is_null() && c["close"].is_null(), "{c}");
        assert_eq!(c["start_ms"], T0 + 10_000 * i as u64);
    }
    // Pages count empty buckets too: 4 then the next page from bucket 4.
    let v = get(h.addr, &format!("{base}&interval=10s&limit=4"))
        .await
        .json();
    assert_eq!(v["candles"].as_array().expect("candles").len(), 4);
    assert_eq!(v["next_from"], T0 + 40_000);
    assert_eq!(candles[1]["open"], "6000000000010");
    assert_eq!(candles[1]["close"], "6000000000019");
    assert_eq!(v["interval_ms"], 10_000);

    let cases: &[(&str, u16, &str)] = &[
        ("/v1/feeds/NOPE/history", 404, "unknown_feed"),
        ("/v1/feeds/BTC-USD/history?from=10&to=5", 400, "bad_range"),
        ("/v1/feeds/BTC-USD/history?from=abc", 400, "bad_parameter"),
        ("/v1/feeds/BTC-USD/history?to=1.5", 400, "bad_parameter"),
        ("/v1/feeds/BTC-USD/history?limit=-3", 400, "bad_parameter"),
        ("/v1/feeds/BTC-USD/history?limit=0", 400, "bad_parameter"),
        (
            "/v1/feeds/BTC-USD/history?limit=1000000",
            400,
            "page_too_large",
        ),
        (
            "/v1/feeds/BTC-USD/history?from=0&to=99999999999",
            400,
            "range_too_large",
        ),
        (
            "/v1/feeds/BTC-USD/history?from=0&to=99999999999999&interval=1s",
            400,
            "range_too_large",
        ),
        (
            "/v1/feeds/BTC-USD/history?interval=7x",
            400,
            "bad_parameter",
        ),
        (
            "/v1/feeds/BTC-USD/history?interval=10ms",
            400,
            "bad_parameter",
        ),
        ("/v1/feeds/BTC-USD/history?cursor=zzz", 400, "bad_parameter"),
        ("/v1/feeds/BTC-USD/history?frm=1", 400, "bad_parameter"),
    ];
    for (path, status, code) in cases {
        let r = get(h.addr, path).await;
        assert_eq!(
            (r.status, r.error_code().as_str()),
            (*status, *code),
            "{path}: {}",
            r.json()
        );
        assert!(
            !r.json()["error"]["message"]
                .as_str()
                .expect("msg")
                .is_empty()
        );
    }
    // The message names the parameter.
    let r = get(h.addr, "/v1/feeds/BTC-USD/history?from=abc").await;
    assert!(
        r.json()["error"]["message"]
            .as_str()
            .expect("msg")
            .contains("`from`")
    );
}

#[tokio::test]
async fn stream_sends_new_reports_filtered_by_feed() {
    let h = start(config()).await;
    let mut s = TcpStream::connect(h.addr).await.expect("connect");
    s.write_all(
        b"GET /v1/stream?feeds=ETH-USD HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n",
    )
    .await
    .expect("write");
    // Wait for the subscription to exist before publishing.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while h.reports.receiver_count() == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "stream never subscribed"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    h.reports.send(Arc::new(report(21))).expect("send");
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let text = loop {
        let n = tokio::time::timeout_at(deadline, s.read(&mut chunk))
            .await
            .expect("event in time")
            .expect("read");
        assert!(n > 0, "stream closed");
        buf.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buf).into_owned();
        if text.contains("event: report") && text.contains("\n\n") && text.contains("data: {") {
            break text;
        }
    };
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.contains("text/event-stream"), "{text}");
    let data = text
        .lines()
        .find_map(|l| l.strip_prefix("data: "))
        .expect("data line");
    let v: Value = serde_json::from_str(data).expect("event JSON");
    assert_eq!(v["round"], 21);
    let leaves = v["leaves"].as_array().expect("leaves");
    assert_eq!(leaves.len(), 1);
    assert_eq!(leaves[0]["feed_id"], "ETH-USD");
    assert_eq!(leaves[0]["price"], "300000000021");
    assert_eq!(leaves[0]["status"], "ok");
    assert_eq!(leaves[0]["ema"], "300000000018");

    let r = get(h.addr, "/v1/stream?feeds=NOPE-USD").await;
    assert_eq!((r.status, r.error_code().as_str()), (404, "unknown_feed"));
}

/// Reads SSE from `s` until `n` report events came; returns their (id, data).
async fn read_reports(s: &mut TcpStream, n: usize) -> Vec<(u64, Value)> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        let text = String::from_utf8_lossy(&buf).into_owned();
        let events: Vec<(u64, Value)> = text
            .split("\n\n")
            .filter(|e| e.contains("event: report") && e.contains("data: "))
            .filter_map(|e| {
                let id = e
                    .lines()
                    .find_map(|l| l.strip_prefix("id: "))?
                    .parse()
                    .ok()?;
                let data = e.lines().find_map(|l| l.strip_prefix("data: "))?;
                Some((id, serde_json::from_str(data).ok()?))
            })
            .collect();
        if events.len() >= n {
            return events;
        }
        let k = tokio::time::timeout_at(deadline, s.read(&mut chunk))
            .await
            .expect("events in time")
            .expect("read");
        assert!(k > 0, "stream closed: {text}");
        buf.extend_from_slice(&chunk[..k]);
    }
}

#[tokio::test]
async fn a_stream_resumes_after_last_event_id_with_no_gap_and_no_duplicate() {
    let h = start(config()).await;
    let mut s = TcpStream::connect(h.addr).await.expect("connect");
    s.write_all(b"GET /v1/stream?signed=true HTTP/1.1\r\nHost: x\r\nLast-Event-ID: 17\r\n\r\n")
        .await
        .expect("write");
    // 18..=20 come from the store.
    let replayed = read_reports(&mut s, 3).await;
    assert_eq!(
        replayed.iter().map(|(id, _)| *id).collect::<Vec<_>>(),
        [18, 19, 20]
    );
    let (_, first) = &replayed[0];
    assert_eq!(first["round"], 18);
    let bytes = hex::decode(first["signed_report"].as_str().expect("signed_report")).expect("hex");
    assert_eq!(
        SignedReport::from_bytes(&bytes).expect("decodes"),
        report(18),
        "the signed report travels whole"
    );
    // Live: a copy of 20 (already sent) is dropped, 21 follows.
    while h.reports.receiver_count() == 0 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    h.reports.send(Arc::new(report(20))).expect("send");
    h.reports.send(Arc::new(report(21))).expect("send");
    let live = read_reports(&mut s, 1).await;
    assert_eq!(
        live.iter().map(|(id, _)| *id).collect::<Vec<_>>(),
        [21],
        "the copy of 20 must not come again"
    );
    // A bad Last-Event-ID is a 400 naming it.
    let r = http(h.addr, "GET", "/v1/stream", &[("Last-Event-ID", "x1")], b"").await;
    assert_eq!((r.status, r.error_code().as_str()), (400, "bad_parameter"));
    let body = String::from_utf8_lossy(&r.body).into_owned();
    assert!(body.contains("Last-Event-ID"), "{body}");
}

#[tokio::test]
async fn the_websocket_subscribes_per_feed_replays_and_unsubscribes() {
    use futures::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let h = start(config()).await;
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{}/v1/ws", h.addr))
        .await
        .expect("websocket");
    let send = |v: Value| Message::Text(v.to_string().into());
    ws.send(send(
        json!({"op": "subscribe", "feeds": ["ETH-USD"], "after_round": 18}),
    ))
    .await
    .expect("send");
    let mut got = Vec::new();
    while got.len() < 3 {
        let m = tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .expect("in time")
            .expect("open")
            .expect("frame");
        if let Message::Text(t) = m {
            got.push(serde_json::from_str::<Value>(t.as_str()).expect("json"));
        }
    }
    assert_eq!(got[0]["type"], "subscribed");
    assert_eq!(
        (got[1]["type"].as_str(), got[1]["round"].as_u64()),
        (Some("report"), Some(19))
    );
    assert_eq!(got[2]["round"], 20);
    let leaves = got[2]["leaves"].as_array().expect("leaves");
    assert_eq!(leaves.len(), 1);
    assert_eq!(leaves[0]["feed_id"], "ETH-USD");
    // Live 21 arrives; after unsubscribing, 22 does not (the pong comes first).
    h.reports.send(Arc::new(report(21))).expect("send");
    ws.send(send(json!({"op": "unsubscribe", "feeds": ["ETH-USD"]})))
        .await
        .expect("send");
    let mut rest = Vec::new();
    while rest.len() < 2 {
        if let Message::Text(t) = ws.next().await.expect("open").expect("frame") {
            rest.push(serde_json::from_str::<Value>(t.as_str()).expect("json"));
        }
    }
    assert_eq!(rest[0]["round"], 21, "{rest:?}");
    assert_eq!(rest[1]["type"], "unsubscribed");
    h.reports.send(Arc::new(report(22))).expect("send");
    ws.send(send(json!({"op": "ping"}))).await.expect("send");
    loop {
        if let Message::Text(t) = ws.next().await.expect("open").expect("frame") {
            let v: Value = serde_json::from_str(t.as_str()).expect("json");
            assert_eq!(v["type"], "pong", "nothing after unsubscribing: {v}");
            break;
        }
    }
    // An unknown feed is an error message; the connection stays.
    ws.send(send(json!({"op": "subscribe", "feeds": ["NOPE-USD"]})))
        .await
        .expect("send");
    loop {
        if let Message::Text(t) = ws.next().await.expect("open").expect("frame") {
            let v: Value = serde_json::from_str(t.as_str()).expect("json");
            assert_eq!(
                (v["type"].as_str(), v["code"].as_str()),
                (Some("error"), Some("unknown_feed"))
            );
            break;
        }
    }
}

#[tokio::test]
async fn a_private_api_serves_only_health_metrics_admin_and_what_gateways_follow() {
    let h = start(ApiConfig {
        private: true,
        ..config()
    })
    .await;
    for path in [
        "/healthz",
        "/metrics",
        "/v1/reports?after=18",
        "/v1/reports/20",
    ] {
        assert_eq!(get(h.addr, path).await.status, 200, "{path}");
    }
    let v = get(h.addr, "/v1/reports?after=18").await.json();
    assert_eq!(v["reports"].as_array().map(Vec::len), Some(2), "{v}");
    for path in [
        "/v1/feeds",
        "/v1/feeds/BTC-USD/latest",
        "/v1/feeds/BTC-USD/history",
        "/v1/feeds/meta",
        "/v1/committee",
        "/udf/config",
        "/",
    ] {
        let r = get(h.addr, path).await;
        assert_eq!(
            (r.status, r.error_code().as_str()),
            (404, "no_route"),
            "{path}"
        );
    }
    // The stream gateways follow stays open.
    let mut s = TcpStream::connect(h.addr).await.expect("connect");
    s.write_all(b"GET /v1/stream?signed=true HTTP/1.1\r\nHost: x\r\nLast-Event-ID: 19\r\n\r\n")
        .await
        .expect("write");
    let got = read_reports(&mut s, 1).await;
    assert_eq!(got[0].0, 20);
}

#[tokio::test]
async fn feed_discovery_and_udf_describe_the_feeds() {
    let h = start(ApiConfig {
        feeds: BTreeMap::from([(
            feed("BTC-USD"),
            FeedInfo {
                decimals: 8,
                deviation_bps: Some(25),
                heartbeat_ms: Some(60_000),
            },
        )]),
        ..config()
    })
    .await;
    let v = get(h.addr, "/v1/feeds/meta").await.json();
    let btc = v["feeds"]
        .as_array()
        .and_then(|f| f.iter().find(|f| f["feed_id"] == "BTC-USD"))
        .expect("BTC-USD listed")
        .clone();
    assert_eq!(btc["decimals"], 8);
    assert_eq!(btc["deviation_bps"], 25);
    assert_eq!(btc["heartbeat_ms"], 60_000);
    assert_eq!(btc["venues"], 4);
    assert_eq!(btc["status"], "ok");
    assert_eq!(btc["last_round"], 20);
    assert_eq!(btc["overdue"], true, "its last report is years old: {btc}");
    let sym = get(h.addr, "/udf/symbols?symbol=BTC-USD").await.json();
    assert_eq!(sym["pricescale"], 100_000_000u64);
    let from = T0 / 1000;
    let bars = get(
        h.addr,
        &format!(
            "/udf/history?symbol=BTC-USD&resolution=10S&from={from}&to={}",
            from + 100
        ),
    )
    .await
    .json();
    assert_eq!(bars["s"], "ok", "{bars}");
    assert_eq!(bars["t"], json!([from, from + 10, from + 20]));
    assert_eq!(bars["v"], json!([9, 10, 1]));
    assert_eq!(bars["o"][1], json!(60_000.0000001));
    let none = get(
        h.addr,
        "/udf/history?symbol=BTC-USD&resolution=1D&from=1&to=1000",
    )
    .await
    .json();
    assert_eq!(none["s"], "no_data");
    let bad = get(
        h.addr,
        "/udf/history?symbol=BTC-USD&resolution=7X&from=1&to=2",
    )
    .await;
    assert_eq!(
        (bad.status, bad.error_code().as_str()),
        (400, "bad_parameter")
    );
}

#[tokio::test]
async fn committee_status_follows_the_watch_channel() {
    let h = start(config()).await;
    let v = get(h.addr, "/v1/committee").await.json();
    assert_eq!(v["members"].as_array().map(Vec::len), Some(0));
    h.committee.send_replace(CommitteeStatus {
        threshold: 3,
        self_index: 1,
        current_round: 42,
        last_signed_round: Some(41),
        recent_round_latency_ms: vec![4, 5, 6],
        members: vec![MemberStatus {
            index: 2,
            peer_id: "12D3KooWpeer".into(),
            connected: true,
            last_seen_ms: Some(T0),
            rounds_led: 10,
            shares_received: 30,
            share_failures: 1,
            refusals: 0,
            clock_offset_ms: Some(-3),
        }],
        updated_at_ms: T0,
    });
    let v = get(h.addr, "/v1/committee").await.json();
    assert_eq!(v["current_round"], 42);
    assert_eq!(v["members"][0]["share_failures"], 1);
    assert_eq!(v["members"][0]["connected"], true);
}

#[tokio::test]
async fn admin_routes_need_the_bearer_token_and_bodies_are_limited() {
    let h = start(config()).await;
    let r = http(h.addr, "POST", "/v1/admin/retention", &[], b"").await;
    assert_eq!((r.status, r.error_code().as_str()), (403, "admin_disabled"));

    let h = start(ApiConfig {
        admin_token: Some("s3cret".into()),
        ..config()
    })
    .await;
    let r = http(h.addr, "POST", "/v1/admin/retention", &[], b"").await;
    assert_eq!((r.status, r.error_code().as_str()), (401, "missing_token"));
    assert_eq!(r.header("www-authenticate"), Some("Bearer"));
    let wrong = [("Authorization", "Bearer nope")];
    let r = http(h.addr, "POST", "/v1/admin/retention", &wrong, b"").await;
    assert_eq!((r.status, r.error_code().as_str()), (401, "bad_token"));
    let auth = [("Authorization", "Bearer s3cret")];
    let r = http(h.addr, "POST", "/v1/admin/retention", &auth, b"{}").await;
    assert_eq!(r.status, 200, "{}", r.json());
    assert!(r.json()["transactions"].is_u64());
    let big = vec![b' '; 65 * 1024];
    let r = http(h.addr, "POST", "/v1/admin/retention", &auth, &big).await;
    assert_eq!(r.status, 413);
    assert_eq!(r.error_code(), "bad_body");
    // GET on an admin route is not a way around the token: nothing runs.
    let r = get(h.addr, "/v1/admin/retention").await;
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (405, "method_not_allowed")
    );
    assert_eq!(r.header("allow"), Some("POST"));
}

#[tokio::test]
async fn rate_limit_answers_429_with_json() {
    let h = start(ApiConfig {
        limits: ApiLimits {
            requests_per_second: 1,
            burst: 3,
            ..ApiLimits::default()
        },
        ..config()
    })
    .await;
    for _ in 0..3 {
        assert_eq!(get(h.addr, "/healthz").await.status, 200);
    }
    let r = get(h.addr, "/healthz").await;
    assert_eq!((r.status, r.error_code().as_str()), (429, "rate_limited"));
    assert!(r.header("retry-after").is_some());
}

#[tokio::test]
async fn metrics_pass_promtool() {
    let h = start(config()).await;
    get(h.addr, "/v1/feeds").await;
    get(h.addr, "/v1/feeds/NOPE/latest").await;
    let r = get(h.addr, "/metrics").await;
    assert_eq!(r.status, 200);
    assert!(
        r.header("content-type")
            .expect("ct")
            .starts_with("text/plain; version=0.0.4")
    );
    let text = String::from_utf8(r.body).expect("utf8");
    assert!(
        text.contains("# TYPE sibyl_api_requests_total counter"),
        "{text}"
    );
    assert!(!text.contains("# EOF"), "{text}");
    assert!(
        text.contains(r#"sibyl_api_requests_total{method="GET",route="/v1/feeds",status="200"} 1"#),
        "{text}"
    );
    assert!(
        text.contains(r#"route="/v1/feeds/{id}/latest",status="404"} 1"#),
        "{text}"
    );
    assert!(
        text.contains("sibyl_api_request_duration_seconds_bucket"),
        "{text}"
    );
    assert!(text.contains("sibyl_rounds_signed_total 3"), "{text}");
    let size_line = text
        .lines()
        .find(|l| l.starts_with("sibyl_db_size_bytes "))
        .expect("db size");
    let size: u64 = size_line["sibyl_db_size_bytes ".len()..]
        .parse()
        .expect("number");
    assert!(size > 4096, "{size_line}");
    let promtool = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn();
    let mut child = promtool.expect(
        "promtool not found: install Debian's `prometheus` package (scripts/setup.d/30-api)",
    );
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().expect("stdin");
        stdin.write_all(text.as_bytes()).expect("feed promtool");
    }
    let out = child.wait_with_output().expect("promtool");
    assert!(
        out.status.success(),
        "promtool check metrics failed:\n{}{}\n---\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn dashboard_is_served_from_the_binary() {
    let h = start(config()).await;
    let r = get(h.addr, "/").await;
    assert_eq!(r.status, 200);
    let html = String::from_utf8_lossy(&r.body);
    assert!(html.contains("<canvas id=\"chart\""));
    assert!(!html.contains("http://") && !html.contains("https://"));
    assert!(
        r.header("content-security-policy")
            .expect("csp")
            .contains("default-src 'self'")
    );
    let js = get(h.addr, "/assets/app.js").await;
    assert_eq!(js.status, 200);
    assert!(
        js.header("content-type")
            .expect("ct")
            .starts_with("text/javascript")
    );
    assert!(String::from_utf8_lossy(&js.body).contains("EventSource"));
    assert_eq!(get(h.addr, "/assets/app.css").await.status, 200);
}

#[tokio::test]
async fn healthz_reports_the_last_round() {
    let h = start(config()).await;
    let v = get(h.addr, "/healthz").await.json();
    assert_eq!(v["status"], "ok");
    assert_eq!(v["last_report_round"], 20);
}

#[test]
fn intervals_parse() {
    assert_eq!(handlers::parse_interval("1m"), Ok(60_000));
    assert_eq!(handlers::parse_interval("250"), Ok(250));
    assert_eq!(handlers::parse_interval("2h"), Ok(7_200_000));
    assert!(handlers::parse_interval("m").is_err());
    assert!(handlers::parse_interval("1 m").is_err());
    assert!(handlers::parse_interval("99999999999999999999d").is_err());
}

#[test]
fn limits_come_from_the_api_section() {
    let api: sibyl_node::config::ApiSection = toml::from_str(
        "request_timeout = \"5s\"\nheader_read_timeout = \"1s500ms\"\nidle_timeout = \"2m\"\nmax_connections = 500\nmax_connections_per_client = 50\nmax_streams = 100\nmax_streams_per_client = 4\n",
    )
    .expect("valid [api] section");
    let limits = ApiLimits::from_config(&api);
    assert_eq!(limits.request_timeout, Duration::from_secs(5));
    assert_eq!(limits.header_read_timeout, Duration::from_millis(1500));
    assert_eq!(limits.idle_timeout, Duration::from_secs(120));
    assert_eq!(
        (
            limits.max_connections,
            limits.max_connections_per_client,
            limits.max_streams,
            limits.max_streams_per_client
        ),
        (500, 50, 100, 4)
    );
    assert_eq!(
        ApiLimits::from_config(&sibyl_node::config::ApiSection::default()),
        ApiLimits::default()
    );
}

/// Leaf values beyond 64 bits (an 18-decimal feed at 3,500 units is
/// 3.5e21) are served exactly by every route that carries the report.
#[tokio::test]
async fn values_beyond_64_bits_are_served_exactly() {
    let mut big = report(21);
    let price: i128 = 3_500 * 10i128.pow(18) + 7;
    for l in &mut big.leaves {
        l.price = price;
        l.bid = price - 1;
        l.ask = price + 1;
        l.ema = price;
    }
    big.header.merkle_root = merkle::root(&big.leaves);
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(&dir.path().join("big.db")).expect("store");
    store
        .writer
        .insert_report(big.clone())
        .await
        .expect("insert");
    let (reports, _) = broadcast::channel(4);
    let (_committee_tx, committee_rx) = watch::channel(CommitteeStatus::default());
    let state = ApiState::new(ApiParts {
        store: std::sync::Arc::new(store.readers.clone()),
        writer: None,
        reports,
        committee: committee_rx,
        registry: Registry::default(),
        margin: None,
        config: config(),
    });
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(serve_with(listener, state, Router::new()));

    #[derive(serde::Deserialize)]
    struct Served {
        report: SignedReport,
    }
    for path in [
        "/v1/reports/21",
        "/v1/reports/latest",
        "/v1/feeds/BTC-USD/latest",
    ] {
        let r = get(addr, path).await;
        assert_eq!(
            r.status,
            200,
            "{path}: {}",
            String::from_utf8_lossy(&r.body)
        );
        let served: Served = serde_json::from_slice(&r.body).expect("typed body");
        assert_eq!(served.report, big, "{path}");
        assert!(
            String::from_utf8_lossy(&r.body).contains(&price.to_string()),
            "{path}"
        );
    }
    #[derive(serde::Deserialize)]
    struct Page {
        reports: Vec<Served>,
    }
    let r = get(addr, "/v1/reports?after=20").await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let page: Page = serde_json::from_slice(&r.body).expect("typed page");
    assert_eq!(page.reports.len(), 1);
    assert_eq!(page.reports[0].report, big);
    let v = get(addr, "/v1/feeds/BTC-USD/latest").await.json();
    assert_eq!(v["price"], price.to_string());
    assert_eq!(v["leaf_index"], 0);
}
