//! `sibyl gateway` with real processes: a 4-member devnet, two gateways on
//! a throwaway PostgreSQL cluster (scripts/pg-throwaway), a fake member that
//! injects tampered reports into what gateway A follows, and a client that
//! reads gateway A's stream, loses it when a member and then gateway A are
//! killed, and resumes on gateway B (and back on a restarted A) with
//! `Last-Event-ID`: it must see every round exactly once, in order.

use crate::common::{self, RunningCommittee, wait_for};
use sibyl::cmd::devnet::http_get;
use sibyl_aggregator::{Encode, SignedReport};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../scripts")
        .join(name)
}

/// A throwaway PostgreSQL cluster, stopped and removed when dropped.
struct Postgres {
    dir: PathBuf,
    conn: String,
}

impl Postgres {
    fn start(dir: PathBuf, extra_dbs: &[&str]) -> Self {
        let out = Command::new(script("pg-throwaway"))
            .arg("start")
            .arg(&dir)
            .args(extra_dbs)
            .output()
            .expect("run scripts/pg-throwaway (bash)");
        assert!(
            out.status.success(),
            "scripts/pg-throwaway start failed (PostgreSQL is installed by scripts/setup): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let conn = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        Self { dir, conn }
    }

    fn conn_to(&self, db: &str) -> String {
        self.conn.replace("dbname=sibyl", &format!("dbname={db}"))
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let _ = Command::new(script("pg-throwaway"))
            .arg("stop")
            .arg(&self.dir)
            .status();
    }
}

/// A gateway process, killed when dropped.
struct Gateway {
    child: Option<Child>,
    url: String,
    args: Vec<String>,
    log: PathBuf,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

impl Gateway {
    fn start(
        file: &sibyl::cmd::devnet::DevnetFile,
        follow: &[&str],
        conn: &str,
        log: PathBuf,
    ) -> Self {
        let port = free_port();
        let mut args = vec![
            "gateway".to_string(),
            "--committee".into(),
            file.committee.display().to_string(),
            "--group-key".into(),
            format!("{}:{}", file.suite, file.group_key),
            "--postgres".into(),
            conn.to_owned(),
            "--listen".into(),
            format!("127.0.0.1:{port}"),
            "--requests-per-second".into(),
            "0".into(),
        ];
        for f in follow {
            args.push("--follow".into());
            args.push((*f).to_owned());
        }
        let mut g = Self {
            child: None,
            url: format!("http://127.0.0.1:{port}"),
            args,
            log,
        };
        g.spawn();
        g
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("gateway log");
        self.child = Some(
            common::sibyl()
                .args(&self.args)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .expect("start sibyl gateway"),
        );
        let url = self.url.clone();
        wait_for("the gateway's API", 60, || {
            http_get(&format!("{url}/healthz")).is_ok()
        });
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn newest(&self) -> Option<u64> {
        let body = http_get(&format!("{}/v1/gateway/status", self.url)).ok()?;
        serde_json::from_str::<serde_json::Value>(&body)
            .ok()?
            .get("newest_round")?
            .as_u64()
    }

    fn metric(&self, name: &str) -> f64 {
        http_get(&format!("{}/metrics", self.url))
            .ok()
            .and_then(|t| common::sample(&t, name))
            .unwrap_or(0.0)
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A fake member: answers `/v1/reports` with nothing and `/v1/stream` with
/// the given events (then holds the stream open until stopped).
struct FakeMember {
    url: String,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FakeMember {
    fn start(events: Vec<String>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind fake member");
        listener.set_nonblocking(true).expect("nonblocking");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let thread = std::thread::spawn(move || {
            while !stop2.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((s, _)) => {
                        let events = events.clone();
                        let stop3 = stop2.clone();
                        std::thread::spawn(move || serve_fake(s, &events, &stop3));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        });
        Self {
            url,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for FakeMember {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve_fake(mut s: TcpStream, events: &[String], stop: &AtomicBool) {
    let _ = s.set_nonblocking(false);
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match s.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            _ => return,
        }
    }
    let head = String::from_utf8_lossy(&head);
    if head.starts_with("GET /v1/reports") {
        let body = r#"{"reports":[],"next_after":null}"#;
        let _ = write!(
            s,
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
    } else if head.starts_with("GET /v1/stream") {
        let _ = write!(
            s,
            "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n"
        );
        for e in events {
            let _ = s.write_all(e.as_bytes());
        }
        while !stop.load(Ordering::Relaxed) {
            if s.write_all(b": keep-alive\n\n").is_err() {
                return;
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    } else {
        let _ = write!(
            s,
            "HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
        );
    }
}

fn signed_event(report: &SignedReport) -> String {
    let data = serde_json::json!({
        "round": report.header.round,
        "timestamp_ms": report.header.timestamp_ms,
        "leaves": [],
        "signed_report": hex::encode(report.to_bytes()),
    });
    format!(
        "event: report\nid: {}\ndata: {data}\n\n",
        report.header.round
    )
}

/// Reads `event: report` ids from an SSE stream at `url` (after
/// `last_id`) into `ids` until `until` returns true or the stream ends.
/// Returns whether the stream ended (the server went away).
fn read_stream(
    url: &str,
    last_id: Option<u64>,
    ids: &mut Vec<u64>,
    mut until: impl FnMut(&[u64]) -> bool,
) -> bool {
    let addr = url.trim_start_matches("http://");
    let mut s = TcpStream::connect(addr).expect("connect to the gateway");
    s.set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    let resume = last_id
        .map(|r| format!("Last-Event-ID: {r}\r\n"))
        .unwrap_or_default();
    write!(
        s,
        "GET /v1/stream HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\n{resume}\r\n"
    )
    .expect("send the request");
    let mut r = BufReader::new(s);
    let mut line = String::new();
    let mut is_report = false;
    loop {
        line.clear();
        match r.read_line(&mut line) {
            Ok(0) | Err(_) => return true,
            Ok(_) => {}
        }
        let l = line.trim_end();
        if l == "event: report" {
            is_report = true;
        } else if let Some(id) = l.strip_prefix("id: ")
            && is_report
        {
            ids.push(id.parse().expect("numeric event id"));
            is_report = false;
            if until(ids) {
                return false;
            }
        } else if l.is_empty() {
            is_report = false;
        }
    }
}

/// Every round `url` stores after `after`, up to `upto`, from `/v1/reports`.
fn stored_rounds(url: &str, after: u64, upto: u64) -> Vec<u64> {
    let mut out = Vec::new();
    let mut after = after;
    loop {
        let body = http_get(&format!("{url}/v1/reports?after={after}&limit=500"))
            .expect("GET /v1/reports");
        let v: serde_json::Value = serde_json::from_str(&body).expect("json");
        let page = v["reports"].as_array().expect("reports");
        for r in page {
            let round = r["report"]["header"]["round"].as_u64().expect("round");
            if round <= upto {
                out.push(round);
            }
            after = round;
        }
        if v["next_after"].is_null() || after > upto {
            return out;
        }
    }
}

#[test]
fn two_gateways_survive_a_member_and_a_gateway_dying_and_a_client_resumes_exactly_once() {
    let _committee = common::one_committee_at_a_time();
    let c = RunningCommittee::start(4);
    let pg = Postgres::start(c.dir.path().join("pg"), &["gw_b"]);
    let apis: Vec<String> = c.apis().iter().map(|s| s.to_string()).collect();
    let apis: Vec<&str> = apis.iter().map(String::as_str).collect();

    // Tampered copies of a real report, at rounds far ahead so that a
    // wrongly accepted one would show: a changed price (Merkle root), a
    // changed round (signature), bytes that are not a report.
    let latest: serde_json::Value = serde_json::from_str(
        &http_get(&format!("{}/v1/reports/latest", apis[0])).expect("latest report"),
    )
    .expect("json");
    let real: SignedReport = serde_json::from_value(latest["report"].clone()).expect("report");
    let mut price_leaf = real.clone();
    price_leaf.leaves[0].price += 1;
    let mut round = real.clone();
    round.header.round += 2_000_000;
    let events = vec![
        signed_event(&price_leaf),
        signed_event(&round),
        "event: report\nid: 3000000\ndata: {\"signed_report\":\"00ff\"}\n\n".to_string(),
    ];
    let fake = FakeMember::start(events);

    let mut a = Gateway::start(
        &c.file,
        &[apis[0], apis[1], &fake.url],
        &pg.conn,
        c.dir.path().join("gateway-a.log"),
    );
    let b = Gateway::start(
        &c.file,
        &[apis[2], apis[3]],
        &pg.conn_to("gw_b"),
        c.dir.path().join("gateway-b.log"),
    );
    wait_for("both gateways to store reports", 60, || {
        a.newest().is_some() && b.newest().is_some()
    });

    // The tampered reports are refused and counted, by reason.
    let fake_url = fake.url.clone();
    let refused = |g: &Gateway, reason: &str| {
        g.metric(&format!(
            "sibyl_gateway_reports_refused_total{{member=\"{}\",reason=\"{reason}\"}}",
            fake_url
        ))
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while !(refused(&a, "merkle_root") >= 1.0
        && refused(&a, "signature") >= 1.0
        && refused(&a, "malformed") >= 1.0)
    {
        assert!(
            Instant::now() < deadline,
            "the fake member's reports were not refused as expected:\n{}\n{}",
            http_get(&format!("{}/metrics", a.url)).unwrap_or_default(),
            std::fs::read_to_string(&a.log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // The changed price is a copy of a stored round: the stored one stays.
    let stored: serde_json::Value = serde_json::from_str(
        &http_get(&format!("{}/v1/reports/{}", a.url, real.header.round)).expect("stored"),
    )
    .expect("json");
    assert_eq!(
        stored["report"]["leaves"][0]["price"],
        latest["report"]["leaves"][0]["price"]
    );
    for r in [round.header.round, 3_000_000] {
        assert!(
            http_get(&format!("{}/v1/reports/{r}", a.url)).is_err(),
            "tampered round {r} must not be stored"
        );
    }

    // The client: gateway A from a round in the past (replayed from its
    // store), then live; member 1 is killed meanwhile.
    let first = a.newest().expect("newest").saturating_sub(5);
    let mut ids = Vec::new();
    let mut members = c.members;
    let t0 = Instant::now();
    let ended = read_stream(&a.url, Some(first), &mut ids, |ids| {
        if ids.len() == 10
            && let Some(mut m) = members.0[0].take()
        {
            let _ = m.kill();
            let _ = m.wait();
        }
        t0.elapsed() > Duration::from_secs(6)
    });
    assert!(!ended, "gateway A's stream ended early: {ids:?}");
    let before_kill = ids.len();
    assert!(before_kill > 12, "too few reports from gateway A: {ids:?}");

    // Gateway A dies mid-stream; the client resumes on gateway B.
    let t1 = Instant::now();
    let mut killed = false;
    let a_url = a.url.clone();
    let ended = read_stream(&a_url, ids.last().copied(), &mut ids, |_| {
        if !killed && t1.elapsed() > Duration::from_secs(2) {
            killed = true;
            a.kill();
        }
        false
    });
    assert!(ended, "gateway A's stream must end when it is killed");
    let t2 = Instant::now();
    read_stream(&b.url, ids.last().copied(), &mut ids, |_| {
        t2.elapsed() > Duration::from_secs(5)
    });
    // Gateway A comes back (same database), catches up from the members,
    // and the client returns to it.
    a.spawn();
    wait_for("gateway A to catch up with gateway B", 60, || {
        a.newest() >= b.newest()
    });
    let t3 = Instant::now();
    read_stream(&a.url, ids.last().copied(), &mut ids, |_| {
        t3.elapsed() > Duration::from_secs(3)
    });

    let last = *ids.last().expect("some reports");
    assert!(
        ids.windows(2).all(|w| w[0] < w[1]),
        "rounds out of order or repeated: {ids:?}"
    );
    wait_for("gateway B to hold the client's last round", 30, || {
        b.newest().is_some_and(|n| n >= last)
    });
    let expected = stored_rounds(&b.url, first, last);
    assert_eq!(ids, expected, "the client must see every stored round once");
    assert_eq!(
        stored_rounds(&a.url, first, last),
        expected,
        "both gateways hold the same rounds"
    );
    assert!(
        ids.len() > before_kill + 20,
        "the committee kept signing without member 1: {} reports",
        ids.len()
    );
    // The same history from PostgreSQL (gateway B) and SQLite (member 3):
    // candles of whole minutes (B's one-minute rollup plus raw edges) and of
    // 10 s (raw), empty buckets included, over a range cut mid-minute.
    let report_ms = |url: &str, round: u64| -> u64 {
        let v: serde_json::Value =
            serde_json::from_str(&http_get(&format!("{url}/v1/reports/{round}")).expect("report"))
                .expect("json");
        v["report"]["header"]["timestamp_ms"].as_u64().expect("ts")
    };
    let (from, to) = (
        report_ms(&b.url, ids[0]) - 7_300,
        report_ms(&b.url, last) + 1,
    );
    let feed = &real.leaves[0].feed_id;
    for interval in ["1m", "10s", "2m"] {
        let path =
            format!("/v1/feeds/{feed}/history?from={from}&to={to}&interval={interval}&limit=10000");
        let candles = |url: &str| -> serde_json::Value {
            let v: serde_json::Value =
                serde_json::from_str(&http_get(&format!("{url}{path}")).expect("candles"))
                    .expect("json");
            v["candles"].clone()
        };
        let (pg, sqlite) = (candles(&b.url), candles(apis[2]));
        assert!(pg.as_array().is_some_and(|c| !c.is_empty()), "{pg}");
        assert_eq!(
            pg, sqlite,
            "candles of {interval} differ between the stores"
        );
    }
    // Every refused report is still refused after the restart (the fake
    // member's stream is read again), and none was ever stored.
    assert!(refused(&a, "signature") >= 1.0);
    drop(fake);
    drop(members);
}
