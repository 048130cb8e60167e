//! End-to-end test of the built-in dashboard in headless Chromium.
//!
//! Serves the API over a seeded SQLite store on 127.0.0.1, publishes a new
//! signed report every 300 ms, loads `/` in Chromium and drives it over the
//! DevTools protocol (a minimal WebSocket client below, no dependencies):
//! the page must log no console errors or exceptions, list the feeds, draw
//! candles, and redraw the chart as reports arrive over SSE. A real margin
//! service seeds its demo book at the first published report; the page's
//! margin section must show its accounts at risk, its liquidations (the
//! reports' prices wiggle ±0.5 %) and the insurance fund, refreshed live.
//!
//! Needs Debian's `chromium` (installed by `scripts/setup.d/30-api`), so this
//! target has `test = false` (not part of a plain `cargo test`) and runs by
//! name from `scripts/test.d/30-api-dashboard`:
//!     cargo test -p sibyl --test dashboard_e2e -- --nocapture

use serde_json::{Value, json};
use sibyl::cmd::devnet::http_get;
use sibyl_aggregator::merkle;
use sibyl_aggregator::{
    ConfigDigest, FeedId, PROTOCOL_VERSION, ReportHeader, ReportLeaf, SignatureBytes, SignedReport,
    Suite,
};
use sibyl_api::{ApiConfig, ApiParts, ApiState, CommitteeStatus, FeedInfo, MemberStatus};
use sibyl_node::config::FeedParams;
use sibyl_node::margin_svc::{self, DemoSeed, MarginOptions};
use sibyl_node::store::{Point, Store, now_ms};
use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{broadcast, watch};
use tokio_tungstenite::tungstenite::stream::MaybeTlsStream;
use tokio_tungstenite::tungstenite::{self, Message, WebSocket};

const FEEDS: [(&str, i128); 3] = [("BTC-USD", 60_000), ("ETH-USD", 3_000), ("SOL-USD", 150)];
const DECIMALS: u32 = 8;

fn price(base: i128, i: u64) -> i128 {
    // A deterministic wiggle around the base price.
    let wiggle = ((i * 7_919) % 1_000) as i128 - 500;
    base * 10i128.pow(DECIMALS) + wiggle * 10i128.pow(DECIMALS - 3) * base / 100
}

/// A leaf with its quality fields; the last feed is degraded (too few
/// venues), so the table shows both statuses.
fn leaf(id: &str, price: i128, observed_at_ms: u64) -> ReportLeaf {
    let mut l = ReportLeaf::basic(
        FeedId::new(id).expect("feed"),
        price,
        1_000,
        4,
        observed_at_ms,
    );
    l.ema = price - 1_000;
    l.venues = 5;
    if id == FEEDS[FEEDS.len() - 1].0 {
        l.venues = 1;
        l.status = sibyl_aggregator::LeafStatus::Degraded;
        l.flags = sibyl_aggregator::report::flags::FEW_VENUES;
    }
    l
}

fn report(round: u64, ts: u64) -> SignedReport {
    let leaves: Vec<ReportLeaf> = FEEDS
        .iter()
        .map(|(id, base)| leaf(id, price(*base, round), ts - 20))
        .collect();
    SignedReport {
        header: ReportHeader {
            version: PROTOCOL_VERSION,
            config_digest: ConfigDigest([1; 32]),
            round,
            timestamp_ms: ts,
            merkle_root: merkle::root(&leaves),
            margin_root: [0; 32],
        },
        leaves,
        signatures: BTreeMap::from([(Suite::Ed25519, SignatureBytes(vec![9; 64]))]),
        commands: Vec::new(),
        margin_state: None,
    }
}

/// Chromium with a DevTools port, killed on drop.
struct Browser {
    child: Child,
    _profile: tempfile::TempDir,
    port: u16,
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn launch_chromium() -> Browser {
    let profile = tempfile::tempdir().expect("profile dir");
    let child = Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-extensions",
            "--disable-background-networking",
            "--disable-component-update",
            "--window-size=1280,900",
            "--remote-debugging-address=127.0.0.1",
            "--remote-debugging-port=0",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg("about:blank")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromium not found: install Debian's `chromium` (scripts/setup.d/30-api)");
    // Chromium writes the port it chose to DevToolsActivePort in the profile.
    let port_file = profile.path().join("DevToolsActivePort");
    let deadline = Instant::now() + Duration::from_secs(60);
    let port = loop {
        if let Ok(s) = std::fs::read_to_string(&port_file)
            && let Some(p) = s.lines().next().and_then(|l| l.trim().parse::<u16>().ok())
        {
            break p;
        }
        assert!(
            Instant::now() < deadline,
            "chromium did not open its DevTools port"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    Browser {
        child,
        _profile: profile,
        port,
    }
}

/// A DevTools WebSocket (tungstenite's blocking client, from tokio-tungstenite).
struct Ws(WebSocket<MaybeTlsStream<TcpStream>>);

impl Ws {
    fn connect(url: &str) -> Ws {
        let (ws, _) = tungstenite::connect(url).expect("websocket upgrade to devtools");
        if let MaybeTlsStream::Plain(s) = ws.get_ref() {
            s.set_read_timeout(Some(Duration::from_secs(30)))
                .expect("read timeout");
        }
        Ws(ws)
    }

    fn send(&mut self, text: &str) {
        self.0.send(Message::text(text)).expect("send frame");
    }

    /// The next complete text message.
    fn recv(&mut self) -> String {
        loop {
            match self.0.read().expect("devtools message") {
                Message::Text(t) => return t.as_str().to_owned(),
                Message::Close(_) => panic!("devtools closed the connection"),
                _ => {} // ping/pong/binary: not used by DevTools
            }
        }
    }
}

/// A DevTools session on one page: commands by id, events collected.
struct Cdp {
    ws: Ws,
    next_id: u64,
    events: Vec<Value>,
}

impl Cdp {
    fn call(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        self.ws
            .send(&json!({ "id": id, "method": method, "params": params }).to_string());
        loop {
            let msg: Value = serde_json::from_str(&self.ws.recv()).expect("devtools JSON");
            if msg["id"] == id {
                assert!(msg["error"].is_null(), "{method} failed: {msg}");
                return msg["result"].clone();
            }
            if msg.get("method").is_some() {
                self.events.push(msg);
            }
        }
    }

    fn eval(&mut self, expression: &str) -> Value {
        let r = self.call(
            "Runtime.evaluate",
            json!({ "expression": expression, "returnByValue": true }),
        );
        assert!(
            r["exceptionDetails"].is_null(),
            "evaluating {expression}: {r}"
        );
        r["result"]["value"].clone()
    }

    /// Console errors, uncaught exceptions and error log entries so far.
    fn errors(&self) -> Vec<String> {
        self.events
            .iter()
            .filter_map(|e| match e["method"].as_str()? {
                "Runtime.consoleAPICalled"
                    if matches!(e["params"]["type"].as_str(), Some("error" | "assert")) =>
                {
                    Some(format!("console: {}", e["params"]["args"]))
                }
                "Runtime.exceptionThrown" => {
                    Some(format!("exception: {}", e["params"]["exceptionDetails"]))
                }
                "Log.entryAdded" if e["params"]["entry"]["level"] == "error" => Some(format!(
                    "log: {} {}",
                    e["params"]["entry"]["text"], e["params"]["entry"]["url"]
                )),
                _ => None,
            })
            .collect()
    }

    fn wait_for(
        &mut self,
        what: &str,
        timeout: Duration,
        mut ok: impl FnMut(&Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let v = self.eval(PAGE_STATE);
            let v: Value = serde_json::from_str(v.as_str().unwrap_or("null")).expect("state");
            if ok(&v) {
                return v;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; page state: {v}; errors: {:?}",
                self.errors()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

const PAGE_STATE: &str = r#"(() => {
  const chart = document.getElementById('chart');
  // Until the parser has read the whole page, later elements (the status
  // line) may not exist yet; on a loaded machine a probe lands in between.
  if (!chart || document.readyState === 'loading') return JSON.stringify({ loading: true });
  return JSON.stringify({
    rows: Array.from(document.querySelectorAll('#feeds tbody tr')).filter(tr => tr.children.length >= 7).map(tr => ({
      feed: tr.dataset.feed, price: tr.children[1].textContent, status: tr.children[4].textContent,
      flags: tr.children[4].title, ema: tr.children[5].textContent, round: tr.children[6].textContent })),
    updates: Number(chart.dataset.updates),
    candles: Number(chart.dataset.candles),
    conn: document.getElementById('conn').textContent,
    committee: document.querySelectorAll('#committee tbody tr').length,
    summary: document.getElementById('committee-summary').textContent,
    margin: !!document.getElementById('margin-section'),
    margin_updates: Number(document.getElementById('margin-section').dataset.updates),
    at_risk: Array.from(document.querySelectorAll('#margin-at-risk tbody tr')).map(tr => ({
      account: Number(tr.dataset.account), ratio: tr.children[4].textContent, status: tr.children[5].textContent })),
    liquidations: Array.from(document.querySelectorAll('#margin-liquidations tbody tr')).map(tr => ({
      account: Number(tr.dataset.account), kind: tr.children[3].textContent, penalty: tr.children[5].textContent })),
    insurance: document.getElementById('margin-insurance').textContent,
    account: document.getElementById('margin-account').hidden ? null : {
      id: Number(document.getElementById('margin-account-id').textContent),
      positions: Array.from(document.querySelectorAll('#margin-account tbody tr')).map(tr => ({
        market: tr.children[0].textContent, delta: tr.children[7].textContent })) },
    status: document.getElementById('status').textContent
  });
})()"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_shows_feeds_and_live_chart_in_chromium() {
    // A store with two hours of 10-second history for three feeds.
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(&dir.path().join("e2e.db")).expect("store");
    let now = now_ms();
    let start = now - 2 * 3_600_000;
    let mut round = 0u64;
    let mut points = Vec::new();
    for ts in (start..now).step_by(10_000) {
        round += 1;
        for (id, base) in FEEDS {
            points.push(Point::of_leaf(
                &leaf(id, price(base, round), ts - 20),
                round,
                ts,
            ));
        }
    }
    store
        .writer
        .write(move |db| db.insert_points(&points))
        .await
        .expect("seed points");
    round += 1;
    // The margin engine takes stored reports in round order: the history
    // points above have no stored reports, so their rounds are settled as
    // having none (as catch-up settles them on a node).
    let first_report = round;
    store
        .writer
        .write(move |db| db.insert_report_gap(0, first_report))
        .await
        .expect("seed gap");
    store
        .writer
        .insert_report(report(round, now))
        .await
        .expect("seed report");

    let (reports, _) = broadcast::channel::<Arc<SignedReport>>(64);
    let (_committee_tx, committee_rx) = watch::channel(CommitteeStatus {
        threshold: 3,
        self_index: 1,
        current_round: round,
        last_signed_round: Some(round),
        recent_round_latency_ms: vec![3, 4, 5],
        members: (1..=4)
            .map(|i| MemberStatus {
                index: i,
                peer_id: format!("12D3KooWmember{i}"),
                connected: i != 4,
                last_seen_ms: Some(now),
                rounds_led: 10,
                shares_received: 30,
                share_failures: u64::from(i == 4),
                refusals: 0,
                clock_offset_ms: Some(2),
            })
            .collect(),
        updated_at_ms: now,
    });
    let feeds = FEEDS
        .iter()
        .map(|(id, _)| {
            (
                FeedId::new(*id).expect("feed"),
                FeedInfo {
                    decimals: DECIMALS as u8,
                    ..FeedInfo::default()
                },
            )
        })
        .collect();
    // The margin engine, fed by the published reports like a node's.
    let (_margin_stop, margin_stop_rx) = watch::channel(false);
    let margin = margin_svc::start_with(
        &store,
        FEEDS
            .iter()
            .map(|(id, _)| FeedParams {
                id: FeedId::new(*id).expect("feed"),
                decimals: DECIMALS as u8,
                deviation_bps: 10,
                heartbeat_ms: 60_000,
                policy: Default::default(),
            })
            .collect(),
        reports.subscribe(),
        margin_stop_rx,
        MarginOptions {
            demo: Some(DemoSeed {
                accounts: 150,
                seed: 3,
            }),
            snapshot_every_rounds: 0,
            ordered_by: None,
            committee: None,
        },
    )
    .await
    .expect("margin service");
    let state = ApiState::new(ApiParts {
        store: std::sync::Arc::new(store.readers.clone()),
        writer: Some(store.writer.clone()),
        reports: reports.clone(),
        committee: committee_rx,
        registry: Default::default(),
        margin: Some(margin.clone()),
        config: ApiConfig {
            feeds,
            ..ApiConfig::default()
        },
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(sibyl_api::serve(listener, state));

    // The "node": a new signed report every 300 ms, stored then published.
    let writer = store.writer.clone();
    let publisher = tokio::spawn(async move {
        let mut round = round;
        loop {
            tokio::time::sleep(Duration::from_millis(300)).await;
            round += 1;
            let rep = report(round, now_ms());
            if writer.insert_report(rep.clone()).await.is_err() {
                return;
            }
            let _ = reports.send(Arc::new(rep));
        }
    });

    let url = format!("http://{addr}/");
    let result = tokio::task::spawn_blocking(move || drive_browser(&url)).await;
    publisher.abort();
    result.expect("browser test");
}

fn drive_browser(url: &str) {
    let browser = launch_chromium();
    eprintln!("chromium devtools on port {}", browser.port);
    let devtools: SocketAddr = format!("127.0.0.1:{}", browser.port).parse().expect("addr");
    let targets: Value = serde_json::from_str(
        &http_get(&format!("http://{devtools}/json/list")).expect("GET /json/list"),
    )
    .expect("targets");
    let ws_url = targets
        .as_array()
        .and_then(|t| t.iter().find(|t| t["type"] == "page"))
        .and_then(|t| t["webSocketDebuggerUrl"].as_str())
        .expect("a page target")
        .to_owned();
    eprintln!("page target {ws_url}");
    let mut cdp = Cdp {
        ws: Ws::connect(&ws_url),
        next_id: 0,
        events: Vec::new(),
    };
    cdp.call("Runtime.enable", json!({}));
    cdp.call("Log.enable", json!({}));
    cdp.call("Page.enable", json!({}));
    cdp.call("Page.navigate", json!({ "url": url }));
    eprintln!("navigated to {url}");

    // Feeds listed with prices, candles drawn, stream connected, committee shown.
    let first = cdp.wait_for("feeds, chart and stream", Duration::from_secs(30), |s| {
        s["rows"].as_array().map(Vec::len) == Some(3)
            && s["candles"].as_u64().unwrap_or(0) > 50
            && s["conn"] == "stream: live"
            && s["committee"] == 4
    });
    let rows = first["rows"].as_array().expect("rows");
    assert_eq!(rows[0]["feed"], "BTC-USD");
    assert!(
        rows[0]["price"].as_str().unwrap_or("").contains(','),
        "price shown with decimals and separators: {first}"
    );
    assert!(
        first["summary"]
            .as_str()
            .unwrap_or("")
            .contains("3 of 4 members connected")
    );
    assert_eq!(first["margin"], true);
    // Every leaf's status and EMA are shown; the degraded feed says why.
    assert_eq!(rows[0]["status"], "ok", "{first}");
    assert!(
        rows[0]["ema"].as_str().unwrap_or("").contains(','),
        "EMA shown like the price: {first}"
    );
    assert_eq!(rows[2]["status"], "degraded *", "{first}");
    assert_eq!(rows[2]["flags"], "few_venues", "{first}");

    // Live updates: the chart redraws and the table's round moves on.
    eprintln!("page loaded: {first}");
    let updates = first["updates"].as_u64().unwrap_or(0);
    let round0: u64 = rows[0]["round"]
        .as_str()
        .and_then(|r| r.parse().ok())
        .unwrap_or(0);
    let live = cdp.wait_for("live chart updates", Duration::from_secs(15), |s| {
        let r: u64 = s["rows"][0]["round"]
            .as_str()
            .and_then(|r| r.parse().ok())
            .unwrap_or(0);
        s["updates"].as_u64().unwrap_or(0) >= updates + 3 && r >= round0 + 3
    });

    // Changing the candle interval reloads the chart with wider candles.
    let candles_1m = live["candles"].as_u64().unwrap_or(0);
    cdp.eval(
        "(() => { const s = document.getElementById('interval'); s.value = '5m'; \
         s.dispatchEvent(new Event('change')); return true; })()",
    );
    cdp.wait_for("5-minute candles", Duration::from_secs(15), |s| {
        let n = s["candles"].as_u64().unwrap_or(0);
        n > 0 && n * 3 < candles_1m
    });

    // The margin section: the seeded book's accounts at risk (ranked by
    // margin ratio), liquidations caused by the reports' price moves, the
    // insurance fund; refreshed as reports arrive.
    let m = cdp.wait_for("margin rows", Duration::from_secs(30), |s| {
        s["at_risk"].as_array().map(Vec::len) == Some(12)
            && s["liquidations"].as_array().is_some_and(|l| !l.is_empty())
            && s["insurance"]
                .as_str()
                .is_some_and(|t| t.contains("150 accounts"))
    });
    eprintln!("margin section: {m}");
    let at_risk = m["at_risk"].as_array().expect("at-risk rows");
    assert!(
        at_risk.iter().all(|r| r["account"]
            .as_u64()
            .is_some_and(|a| (1..=150).contains(&a))),
        "{m}"
    );
    let ratios: Vec<f64> = at_risk
        .iter()
        .filter_map(|r| r["ratio"].as_str()?.replace(',', "").parse().ok())
        .collect();
    assert_eq!(ratios.len(), at_risk.len(), "{m}");
    assert!(
        ratios.windows(2).all(|w| w[0] <= w[1]),
        "ranked: {ratios:?}"
    );
    let liq = &m["liquidations"][0];
    assert!(
        liq["kind"] == "full" || liq["kind"].as_str().unwrap_or("").starts_with("partial "),
        "{m}"
    );
    assert!(
        m["insurance"]
            .as_str()
            .unwrap_or("")
            .starts_with("Insurance fund 1,0"),
        "{m}"
    );
    // Clicking the riskiest account shows its positions with Greeks.
    let riskiest = at_risk[0]["account"].as_u64().expect("account");
    cdp.eval("document.querySelector('#margin-at-risk tbody tr').click(), true");
    let detail = cdp.wait_for("account positions", Duration::from_secs(15), |s| {
        s["account"]["positions"]
            .as_array()
            .is_some_and(|p| !p.is_empty())
    });
    assert_eq!(detail["account"]["id"], riskiest, "{detail}");
    let first_position = &detail["account"]["positions"][0];
    assert!(
        first_position["market"]
            .as_str()
            .unwrap_or("")
            .contains('-')
            && first_position["delta"] != "–",
        "{detail}"
    );
    let updates = m["margin_updates"].as_u64().unwrap_or(0);
    cdp.wait_for("live margin refresh", Duration::from_secs(15), |s| {
        s["margin_updates"].as_u64().unwrap_or(0) >= updates + 3
    });

    // A short settle so late errors (e.g. from the stream) are seen too.
    std::thread::sleep(Duration::from_millis(500));
    cdp.eval("1");
    let errors = cdp.errors();
    assert!(errors.is_empty(), "console errors: {errors:#?}");
    let status = cdp.eval("document.getElementById('status').textContent");
    assert_eq!(status, "", "page reported a problem");
    drop(browser);
}
