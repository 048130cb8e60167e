//! Store and API benchmarks of issue 5. Prints figures; never gates CI.
//!
//!     cargo bench -p sibyl-api --bench api            # optimized (slow to build)
//!     cargo bench -p sibyl-api --bench api --profile dev
//!
//! Environment: `SIBYL_BENCH_POINTS` (default 10,000,000 points, spread over
//! 10 feeds of one-second points), `SIBYL_BENCH_DIR` (keep the database there
//! and reuse it on the next run), `SIBYL_BENCH_SECS` (load test length, 10).
//!
//! Measures: a feed's latest value from the store, 24 h of one-second points
//! as one-minute candles, the same two over HTTP, and requests per second of
//! `GET /v1/feeds/{id}/latest` on loopback with `wrk` (Debian's package) or,
//! without it, a small built-in keep-alive load generator.

use sibyl_aggregator::merkle;
use sibyl_aggregator::{
    ConfigDigest, PROTOCOL_VERSION, ReportHeader, ReportLeaf, SignatureBytes, SignedReport, Suite,
};
use sibyl_api::{ApiConfig, ApiLimits, ApiParts, ApiState, CommitteeStatus};
use sibyl_node::store::{Point, Store};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

const FEEDS: usize = 10;
const DAY_MS: u64 = 86_400_000;

mod support;
use support::{env_u64, feed, http_get, report_timing};

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let total = env_u64("SIBYL_BENCH_POINTS", 10_000_000);
    let per_feed = (total / FEEDS as u64).max(DAY_MS / 1_000 + 1);
    let keep = std::env::var("SIBYL_BENCH_DIR").ok();
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = keep
        .as_deref()
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| tmp.path().to_owned());
    std::fs::create_dir_all(&dir).expect("bench dir");
    let path = dir.join(format!("bench-{total}.db"));
    let store = Store::open(&path).expect("open store");

    // Points end at `end`; one second apart; round = index.
    let end: u64 = 1_750_000_000_000;
    let start = end - per_feed * 1_000;
    let have = store
        .readers
        .read(|db| db.point_count())
        .await
        .expect("count");
    if have < per_feed * FEEDS as u64 {
        println!(
            "seeding {} points ({FEEDS} feeds x {per_feed}) into {} ...",
            per_feed * FEEDS as u64,
            path.display()
        );
        let t = Instant::now();
        const BATCH: u64 = 200_000;
        for f in 0..FEEDS {
            let mut i = 0;
            while i < per_feed {
                let n = BATCH.min(per_feed - i);
                let batch: Vec<Point> = (i..i + n)
                    .map(|k| {
                        let leaf = ReportLeaf::basic(
                            feed(f),
                            6_000_000_000_000 + ((k * 7_919) % 100_000) as i128,
                            1_000,
                            4,
                            start + k * 1_000 - 10,
                        );
                        Point::of_leaf(&leaf, k + 1, start + k * 1_000)
                    })
                    .collect();
                store
                    .writer
                    .write(move |db| db.insert_points(&batch))
                    .await
                    .expect("insert");
                i += n;
            }
        }
        // One signed report on top, so /latest has a report and a proof.
        let leaves: Vec<ReportLeaf> = (0..FEEDS)
            .map(|f| ReportLeaf::basic(feed(f), 6_000_000_000_000, 1_000, 4, end - 10))
            .collect();
        let report = SignedReport {
            header: ReportHeader {
                version: PROTOCOL_VERSION,
                config_digest: ConfigDigest([3; 32]),
                round: per_feed + 1,
                timestamp_ms: end,
                merkle_root: merkle::root(&leaves),
                margin_root: [0; 32],
            },
            leaves,
            signatures: BTreeMap::from([(Suite::Ed25519, SignatureBytes(vec![1; 64]))]),
            commands: Vec::new(),
            margin_state: None,
        };
        store.writer.insert_report(report).await.expect("report");
        println!("seeded in {:.1} s", t.elapsed().as_secs_f64());
    }
    let n = store
        .readers
        .read(|db| db.point_count())
        .await
        .expect("count");
    println!(
        "store: {n} points, {:.0} MB (file + WAL)",
        store.readers.size_bytes() as f64 / 1e6
    );

    // --- store level ---------------------------------------------------------
    let readers = store.readers.clone();
    let bench_feed = feed(3);
    let (latest, candles) = tokio::task::spawn_blocking(move || {
        let mut lat = Vec::new();
        for i in 0..2_000 {
            let f = feed(i % FEEDS);
            let t = Instant::now();
            let p = readers.read_blocking(|db| db.latest(&f)).expect("latest");
            lat.push(t.elapsed());
            assert!(p.is_some());
        }
        let mut can = Vec::new();
        for _ in 0..30 {
            let f = bench_feed.clone();
            let t = Instant::now();
            let (c, _) = readers
                .read_blocking(|db| db.candles(&f, end - DAY_MS, end + 1, 60_000, 10_000))
                .expect("candles");
            can.push(t.elapsed());
            assert!(c.len() >= 1_440, "{} candles", c.len());
        }
        (lat, can)
    })
    .await
    .expect("store bench");
    report_timing("store: latest value of a feed", latest);
    report_timing("store: 24 h of 1 s points as 1 min candles", candles);

    // --- HTTP ------------------------------------------------------------------
    let (reports, _) = tokio::sync::broadcast::channel(16);
    let (_c, committee) = tokio::sync::watch::channel(CommitteeStatus::default());
    let state = ApiState::new(ApiParts {
        store: std::sync::Arc::new(store.readers.clone()),
        writer: None,
        reports,
        committee,
        registry: Default::default(),
        margin: None,
        config: ApiConfig {
            limits: ApiLimits {
                requests_per_second: 0,
                ..ApiLimits::default()
            },
            ..ApiConfig::default()
        },
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(sibyl_api::serve(listener, state));
    let latest_path = format!("/v1/feeds/{}/latest", feed(3));
    let candles_path = format!(
        "/v1/feeds/{}/history?from={}&to={}&interval=1m&limit=10000",
        feed(3),
        end - DAY_MS,
        end + 1
    );
    let (lp, cp) = (latest_path.clone(), candles_path.clone());
    let (http_latest, http_candles) = tokio::task::spawn_blocking(move || {
        let mut a = Vec::new();
        for _ in 0..500 {
            let t = Instant::now();
            let (status, _) = http_get(addr, &lp);
            a.push(t.elapsed());
            assert_eq!(status, 200);
        }
        let mut b = Vec::new();
        for _ in 0..20 {
            let t = Instant::now();
            let (status, len) = http_get(addr, &cp);
            b.push(t.elapsed());
            assert_eq!(status, 200);
            assert!(len > 100_000);
        }
        (a, b)
    })
    .await
    .expect("http bench");
    report_timing(
        "http: GET /v1/feeds/{id}/latest (new connection each)",
        http_latest,
    );
    report_timing(
        "http: GET .../history 24 h as 1 min candles (JSON)",
        http_candles,
    );

    // --- requests per second ---------------------------------------------------
    let secs = env_u64("SIBYL_BENCH_SECS", 10);
    let url = format!("http://{addr}{latest_path}");
    let wrk = tokio::process::Command::new("wrk")
        .args(["-t2", "-c32", &format!("-d{secs}s"), "--latency", &url])
        .output()
        .await;
    match wrk {
        Ok(out) if out.status.success() => {
            println!("wrk -t2 -c32 -d{secs}s --latency {url}");
            print!("{}", String::from_utf8_lossy(&out.stdout));
        }
        _ => {
            println!(
                "wrk not available; built-in load generator, 32 keep-alive connections, {secs} s"
            );
            let done = Arc::new(std::sync::atomic::AtomicU64::new(0));
            let deadline = Instant::now() + Duration::from_secs(secs);
            let mut threads = Vec::new();
            for _ in 0..32 {
                let done = done.clone();
                let path = latest_path.clone();
                threads.push(std::thread::spawn(move || {
                    keep_alive_client(addr, &path, deadline, &done)
                }));
            }
            for t in threads {
                let _ = t.join();
            }
            let n = done.load(std::sync::atomic::Ordering::Relaxed);
            println!("requests/second: {:.0}", n as f64 / secs as f64);
        }
    }
}

fn keep_alive_client(
    addr: SocketAddr,
    path: &str,
    deadline: Instant,
    done: &std::sync::atomic::AtomicU64,
) {
    let Ok(mut s) = TcpStream::connect(addr) else {
        return;
    };
    let req = format!("GET {path} HTTP/1.1\r\nHost: b\r\n\r\n");
    let mut buf = vec![0u8; 64 * 1024];
    while Instant::now() < deadline {
        if s.write_all(req.as_bytes()).is_err() {
            return;
        }
        // Read one response: headers, then content-length bytes.
        let mut have = 0;
        let body_end = loop {
            let Ok(n) = s.read(&mut buf[have..]) else {
                return;
            };
            if n == 0 {
                return;
            }
            have += n;
            let text = &buf[..have];
            if let Some(h) = text.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&text[..h]).to_ascii_lowercase();
                let len: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse().ok())
                    .unwrap_or(0);
                break h + 4 + len;
            }
        };
        while have < body_end {
            let Ok(n) = s.read(&mut buf[have..]) else {
                return;
            };
            if n == 0 {
                return;
            }
            have += n;
        }
        done.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
}
