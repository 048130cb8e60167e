//! The server under hostile clients, over real sockets: slow stream readers,
//! stream hoarders, idle and slowloris connections, the connection cap, huge
//! numbers, 405s, and the node's own routes behind the same limits.

use super::*;
use tokio::net::TcpSocket;
use tokio::time::Instant;

/// Limits with short timeouts, for tests that do not exercise them.
fn limits() -> ApiLimits {
    ApiLimits {
        idle_timeout: Duration::from_secs(30),
        header_read_timeout: Duration::from_secs(30),
        ..ApiLimits::default()
    }
}

fn with_limits(limits: ApiLimits) -> ApiConfig {
    ApiConfig { limits, ..config() }
}

/// A connection from `from` (any 127.0.0.0/8 address: another "client IP").
async fn connect_from(from: &str, to: SocketAddr, recv_buffer: Option<u32>) -> TcpStream {
    let sock = TcpSocket::new_v4().expect("socket");
    if let Some(size) = recv_buffer {
        sock.set_recv_buffer_size(size).expect("SO_RCVBUF");
    }
    sock.bind(format!("{from}:0").parse().expect("addr"))
        .expect("bind");
    sock.connect(to).await.expect("connect")
}

/// Sends a stream request on `s` and reads until the response head is in.
async fn open_stream(s: &mut TcpStream, addr: SocketAddr) -> String {
    let req = format!("GET /v1/stream HTTP/1.1\r\nHost: {addr}\r\n\r\n");
    s.write_all(req.as_bytes()).await.expect("write");
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut chunk))
            .await
            .expect("response head in time")
            .expect("read");
        assert!(n > 0, "closed before the response head");
        buf.extend_from_slice(&chunk[..n]);
    }
    String::from_utf8_lossy(&buf).into_owned()
}

/// Reads until the peer closes (EOF or reset); `None` if it is still open
/// after `within`.
async fn closed_within(s: &mut TcpStream, within: Duration) -> Option<Duration> {
    let start = Instant::now();
    let mut chunk = [0u8; 64 * 1024];
    loop {
        match tokio::time::timeout_at(start + within, s.read(&mut chunk)).await {
            Err(_) => return None,
            Ok(Ok(0)) | Ok(Err(_)) => return Some(start.elapsed()),
            Ok(Ok(_)) => {}
        }
    }
}

/// One keep-alive request on an open connection; returns the status.
async fn keep_alive_get(s: &mut TcpStream, addr: SocketAddr, path: &str) -> u16 {
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n");
    s.write_all(req.as_bytes()).await.expect("write");
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut chunk))
            .await
            .expect("response in time")
            .expect("read");
        assert!(n > 0, "closed before the response");
        buf.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buf);
        if let Some(head_end) = text.find("\r\n\r\n") {
            let len: usize = text[..head_end]
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse().ok())?
                })
                .expect("content-length");
            if buf.len() >= head_end + 4 + len {
                return text[9..12].parse().expect("status");
            }
        }
    }
}

/// The value of the sample `series` (name plus labels, as printed) in `/metrics`.
async fn metric(addr: SocketAddr, series: &str) -> f64 {
    let r = get(addr, "/metrics").await;
    let text = String::from_utf8(r.body).expect("utf8");
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .map_or(0.0, |v| v.trim().parse().expect("sample value"))
}

/// A report over `feeds` feeds (about 150 bytes of event per feed).
fn wide_report(round: u64, feeds: usize) -> SignedReport {
    let mut r = report(round);
    r.leaves = (0..feeds)
        .map(|i| {
            ReportLeaf::basic(
                feed(&format!("F{i:04}-USD")),
                1_000_000_000 + round as i128,
                5,
                4,
                T0,
            )
        })
        .collect();
    r.header.merkle_root = merkle::root(&r.leaves);
    r
}

#[tokio::test]
async fn a_slow_stream_reader_is_dropped_while_others_keep_their_stream() {
    let h = start(with_limits(ApiLimits {
        stream_queue: 16,
        ..limits()
    }))
    .await;
    // The slow client: a small receive buffer, and it never reads.
    let mut slow = connect_from("127.0.0.1", h.addr, Some(4096)).await;
    open_stream(&mut slow, h.addr).await;
    // A client that reads everything.
    let mut fast = connect_from("127.0.0.2", h.addr, None).await;
    open_stream(&mut fast, h.addr).await;
    let (seen_tx, mut seen_rx) = watch::channel(0u64);
    let reader = tokio::spawn(async move {
        let mut chunk = vec![0u8; 256 * 1024];
        let mut tail = String::new();
        loop {
            let n = match fast.read(&mut chunk).await {
                Ok(0) | Err(_) => return tail,
                Ok(n) => n,
            };
            tail.push_str(&String::from_utf8_lossy(&chunk[..n]));
            if let Some(round) = tail
                .rsplit("\nid: ")
                .next()
                .and_then(|l| l.split('\n').next())
                .and_then(|r| r.trim().parse::<u64>().ok())
            {
                seen_tx.send_replace(round);
            }
            let keep = tail.len().saturating_sub(4096);
            tail.drain(..keep);
        }
    });
    // Send ~15 kB reports at a pace the reading client keeps up with, until
    // the slow one has fallen a full queue behind.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut round = 100;
    while metric(h.addr, "sibyl_api_streams_lagged_total").await < 1.0 {
        assert!(
            Instant::now() < deadline,
            "the slow reader was never dropped"
        );
        for _ in 0..20 {
            round += 1;
            h.reports
                .send(Arc::new(wide_report(round, 100)))
                .expect("send");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    // It still does not read: its connection is closed after the grace
    // period (a client that drains in time gets a final `lagged` event).
    tokio::time::sleep(handlers::LAGGED_GRACE + Duration::from_secs(1)).await;
    let closed = closed_within(&mut slow, Duration::from_secs(10)).await;
    assert!(
        closed.is_some(),
        "the slow reader's connection is still open"
    );
    assert_eq!(
        metric(
            h.addr,
            r#"sibyl_api_connections_closed_total{reason="slow_stream"}"#
        )
        .await,
        1.0
    );
    // ...while the reading client gets every report up to the last one and more.
    round += 1;
    h.reports
        .send(Arc::new(wide_report(round, 100)))
        .expect("send");
    tokio::time::timeout(Duration::from_secs(10), seen_rx.wait_for(|r| *r == round))
        .await
        .expect("the reading client got the last report in time")
        .expect("reader alive");
    assert_eq!(metric(h.addr, "sibyl_api_streams").await, 1.0);
    assert_eq!(metric(h.addr, "sibyl_api_streams_lagged_total").await, 1.0);
    reader.abort();
}

#[tokio::test]
async fn one_client_cannot_hold_every_stream() {
    let h = start(with_limits(ApiLimits {
        max_streams_per_client: 2,
        max_streams: 10,
        ..limits()
    }))
    .await;
    let mut first = connect_from("127.0.0.1", h.addr, None).await;
    let mut mine = Vec::new();
    for _ in 0..2 {
        let mut s = connect_from("127.0.0.1", h.addr, None).await;
        assert!(
            open_stream(&mut s, h.addr)
                .await
                .starts_with("HTTP/1.1 200")
        );
        mine.push(s);
    }
    let head = open_stream(&mut first, h.addr).await;
    assert!(head.starts_with("HTTP/1.1 429"), "{head}");
    assert!(head.contains("too_many_streams"), "{head}");
    // Another client still gets one.
    let mut other = connect_from("127.0.0.2", h.addr, None).await;
    let head = open_stream(&mut other, h.addr).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(
        metric(
            h.addr,
            r#"sibyl_api_streams_refused_total{reason="per_client"}"#
        )
        .await,
        1.0
    );
    // Closing one of its streams gives the first client its slot back.
    drop(mine.pop());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut s = connect_from("127.0.0.1", h.addr, None).await;
        if open_stream(&mut s, h.addr)
            .await
            .starts_with("HTTP/1.1 200")
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the closed stream's slot never came back"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn idle_keep_alive_connections_are_closed() {
    let idle = Duration::from_millis(400);
    let h = start(with_limits(ApiLimits {
        idle_timeout: idle,
        ..limits()
    }))
    .await;
    let mut s = connect_from("127.0.0.1", h.addr, None).await;
    assert_eq!(keep_alive_get(&mut s, h.addr, "/healthz").await, 200);
    // Still open well inside the idle timeout: a second request is served.
    tokio::time::sleep(idle / 4).await;
    assert_eq!(keep_alive_get(&mut s, h.addr, "/healthz").await, 200);
    let after = closed_within(&mut s, Duration::from_secs(10))
        .await
        .expect("the idle connection was never closed");
    assert!(
        after >= idle / 2,
        "closed after {after:?}, before the idle timeout"
    );
    assert_eq!(
        metric(
            h.addr,
            r#"sibyl_api_connections_closed_total{reason="idle_timeout"}"#
        )
        .await,
        1.0
    );
}

#[tokio::test]
async fn a_request_head_that_never_ends_is_closed() {
    let h = start(with_limits(ApiLimits {
        header_read_timeout: Duration::from_millis(500),
        ..limits()
    }))
    .await;
    // Slowloris: a header line every 100 ms, never the blank line.
    let mut s = connect_from("127.0.0.1", h.addr, None).await;
    s.write_all(b"GET /healthz HTTP/1.1\r\n")
        .await
        .expect("write");
    let start = Instant::now();
    let mut closed = false;
    for i in 0..100 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if s.write_all(format!("X-Slow-{i}: a\r\n").as_bytes())
            .await
            .is_err()
        {
            closed = true;
            break;
        }
        let mut b = [0u8; 1024];
        if let Ok(Ok(0) | Err(_)) =
            tokio::time::timeout(Duration::from_millis(1), s.read(&mut b)).await
        {
            closed = true;
            break;
        }
    }
    assert!(
        closed,
        "a trickling request head kept its connection for 10 s"
    );
    assert!(start.elapsed() >= Duration::from_millis(300));
    // A connection that sends nothing at all is closed by the same limit.
    let mut silent = connect_from("127.0.0.1", h.addr, None).await;
    assert!(
        closed_within(&mut silent, Duration::from_secs(10))
            .await
            .is_some()
    );
    assert_eq!(
        metric(
            h.addr,
            r#"sibyl_api_connections_closed_total{reason="header_read_timeout"}"#
        )
        .await,
        2.0
    );
}

#[tokio::test]
async fn connections_above_the_cap_are_refused_and_service_recovers() {
    let h = start(with_limits(ApiLimits {
        max_connections: 4,
        ..limits()
    }))
    .await;
    let mut held = Vec::new();
    for _ in 0..4 {
        let mut s = connect_from("127.0.0.1", h.addr, None).await;
        assert_eq!(keep_alive_get(&mut s, h.addr, "/healthz").await, 200);
        held.push(s);
    }
    // The fifth is accepted by the kernel and closed by the server at once.
    let mut extra = connect_from("127.0.0.1", h.addr, None).await;
    let _ = extra
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await;
    let mut b = Vec::new();
    let r = tokio::time::timeout(Duration::from_secs(5), extra.read_to_end(&mut b))
        .await
        .expect("the refused connection was closed in time");
    assert!(
        r.is_err() || b.is_empty(),
        "a connection above the cap was served: {}",
        String::from_utf8_lossy(&b)
    );
    // One held connection goes away: new clients are served again.
    drop(held.pop());
    let deadline = Instant::now() + Duration::from_secs(10);
    while !served("127.0.0.1", h.addr).await {
        assert!(Instant::now() < deadline, "no connection was served again");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(held);
    while !served("127.0.0.1", h.addr).await {
        assert!(
            Instant::now() < deadline,
            "the held connections never closed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        metric(
            h.addr,
            r#"sibyl_api_connections_refused_total{reason="global"}"#
        )
        .await
            >= 1.0
    );
}

#[tokio::test]
async fn one_client_cannot_take_every_connection() {
    let h = start(with_limits(ApiLimits {
        max_connections: 10,
        max_connections_per_client: 3,
        ..limits()
    }))
    .await;
    let mut mine = Vec::new();
    for _ in 0..3 {
        let mut s = connect_from("127.0.0.1", h.addr, None).await;
        assert_eq!(keep_alive_get(&mut s, h.addr, "/healthz").await, 200);
        mine.push(s);
    }
    assert!(
        !served("127.0.0.1", h.addr).await,
        "a fourth connection from one client was served"
    );
    assert!(
        served("127.0.0.2", h.addr).await,
        "another client was refused"
    );
    drop(mine);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !served("127.0.0.1", h.addr).await {
        assert!(
            Instant::now() < deadline,
            "the client never got its slots back"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        metric(
            h.addr,
            r#"sibyl_api_connections_refused_total{reason="per_client"}"#
        )
        .await,
        1.0
    );
}

/// Whether a fresh connection gets `GET /healthz` answered 200.
async fn served(from: &str, addr: SocketAddr) -> bool {
    let mut s = connect_from(from, addr, None).await;
    let req = format!("GET /healthz HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    let mut b = [0u8; 12];
    s.write_all(req.as_bytes()).await.is_ok()
        && matches!(
            tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut b)).await,
            Ok(Ok(_))
        )
        && &b == b"HTTP/1.1 200"
}

#[tokio::test]
async fn numbers_out_of_range_are_400_naming_the_parameter() {
    let h = start(config()).await;
    let above_i64 = "9223372036854775808";
    let above_u64 = "18446744073709551616";
    for (path, param) in [
        (
            format!("/v1/feeds/BTC-USD/history?from={above_i64}"),
            "`from`",
        ),
        (format!("/v1/feeds/BTC-USD/history?to={above_u64}"), "`to`"),
        (
            format!("/v1/feeds/BTC-USD/history?from=0&to=1&cursor={above_i64}:1"),
            "`cursor`",
        ),
        (
            format!("/v1/feeds/BTC-USD/history?limit={above_u64}"),
            "`limit`",
        ),
        (format!("/v1/reports/{above_i64}"), "`round`"),
        (format!("/v1/reports/{above_u64}"), "`round`"),
        (
            format!("/v1/margin/liquidations?before={above_i64}"),
            "`before`",
        ),
    ] {
        let r = get(h.addr, &path).await;
        assert_eq!(r.status, 400, "{path}: {}", r.json());
        assert_eq!(r.error_code(), "out_of_range", "{path}");
        let message = r.json()["error"]["message"]
            .as_str()
            .unwrap_or("")
            .to_owned();
        assert!(message.contains(param), "{path}: {message}");
    }
    // The largest storable number is still a valid (unknown) round.
    let r = get(h.addr, "/v1/reports/9223372036854775807").await;
    assert_eq!((r.status, r.error_code().as_str()), (404, "unknown_round"));
}

#[tokio::test]
async fn method_not_allowed_and_unknown_routes_answer_json() {
    let h = start(config()).await;
    let r = http(h.addr, "DELETE", "/v1/feeds", &[], b"").await;
    assert_eq!(r.status, 405);
    assert_eq!(r.error_code(), "method_not_allowed");
    assert_eq!(r.header("allow"), Some("GET,HEAD"));
    let r = http(h.addr, "POST", "/v1/feeds/BTC-USD/latest", &[], b"").await;
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (405, "method_not_allowed")
    );
    let r = http(h.addr, "GET", "/v1/nothing/here", &[], b"").await;
    assert_eq!((r.status, r.error_code().as_str()), (404, "no_route"));
}

/// The node's own routes, served as `sibyl run` serves them.
async fn start_with_node_routes(limits: ApiLimits) -> (Harness, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(&dir.path().join("node.db")).expect("store");
    let node_routes = crate::node::router(
        sibyl_node::driver::StatusHandle::default(),
        store.readers.clone(),
        None,
        Some("secret".into()),
    );
    (start_with(with_limits(limits), node_routes).await, dir)
}

#[tokio::test]
async fn node_routes_sit_behind_the_same_limits() {
    let (h, _dir) = start_with_node_routes(ApiLimits {
        requests_per_second: 1,
        burst: 3,
        ..limits()
    })
    .await;
    for _ in 0..3 {
        assert_eq!(get(h.addr, "/v1/node/status").await.status, 200);
    }
    let r = get(h.addr, "/v1/node/status").await;
    assert_eq!((r.status, r.error_code().as_str()), (429, "rate_limited"));

    let (h, _dir) = start_with_node_routes(limits()).await;
    let r = http(h.addr, "POST", "/v1/node/status", &[], b"").await;
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (405, "method_not_allowed")
    );
    let r = get(h.addr, "/v1/node/reports/99999999999999999999").await;
    assert_eq!((r.status, r.error_code().as_str()), (400, "out_of_range"));
    let r = get(h.addr, "/v1/node/reports/9223372036854775808").await;
    assert_eq!((r.status, r.error_code().as_str()), (400, "out_of_range"));
}

#[tokio::test]
async fn a_handler_that_does_not_answer_in_time_gets_503() {
    let slow = Router::new().route(
        "/v1/node/slow",
        axum::routing::get(|| async {
            tokio::time::sleep(Duration::from_secs(30)).await;
            "late"
        }),
    );
    let h = start_with(
        with_limits(ApiLimits {
            request_timeout: Duration::from_millis(200),
            ..limits()
        }),
        slow,
    )
    .await;
    let r = get(h.addr, "/v1/node/slow").await;
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (503, "request_timeout")
    );
}
