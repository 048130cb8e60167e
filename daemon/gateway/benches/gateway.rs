//! Gateway benchmarks (issue 19). Prints figures; never gates CI. Needs a
//! PostgreSQL database: `scripts/bench-gateway` starts a throwaway cluster,
//! runs this and removes the cluster.
//!
//!     SIBYL_BENCH_PG="host=/tmp/pg user=sibyl dbname=sibyl" \
//!         cargo bench -p sibyl-gateway --bench gateway --profile dev
//!
//! Environment: `SIBYL_BENCH_PG` (required), `SIBYL_BENCH_POINTS` (points
//! per feed, 10 feeds of one-second points; default 10,000,000; a database
//! already holding them is reused), `SIBYL_BENCH_LOAD_SECS` (stop loading
//! after this long and measure what is there; default 600),
//! `SIBYL_BENCH_SECS` (wrk length, 10), `SIBYL_BENCH_INGEST` (reports of
//! 1,000 feeds to ingest, 200).
//!
//! Measures: latest value and 24 h of one-second points as one-minute
//! candles, from the store and over HTTP; ingest of verified reports of
//! 1,000 feeds (verify + store); `GET /v1/feeds/{id}/latest` requests/s
//! with two gateway API servers on the same database, loaded together.

use sibyl_aggregator::testkit;
use sibyl_aggregator::verify::{GroupKeys, verify_report};
use sibyl_aggregator::{
    ConfigDigest, PROTOCOL_VERSION, ReportHeader, ReportLeaf, SignatureBytes, SignedReport, Suite,
    merkle,
};
use sibyl_api::{ApiConfig, ApiLimits, ApiParts, ApiState, CommitteeStatus, ReportStore};
use sibyl_gateway::pg::PgStore;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

const FEEDS: usize = 10;
const DAY_MS: i64 = 86_400_000;
/// The history ends here (ms); one point per second before it.
const END: i64 = 1_750_000_000_000;

#[path = "../../api/benches/support/mod.rs"]
mod support;
use support::{env_u64, feed, http_get, report_timing};

/// Points of feed `key` with index in `[from, to)`: `ts = start + k s`.
fn load_sql(key: i32, start: i64, from: i64, to: i64) -> String {
    format!(
        "INSERT INTO points (feed_key, ts_ms, round, price, confidence, num_observations, observed_at_ms,
                             bid, ask, venues, status, flags, ema, ema_confidence, volatility)
         SELECT {key}, {start} + k * 1000, k + 1, 6000000000000 + (k * 7919) % 100000, 1000, 4,
                {start} + k * 1000 - 10, 0, 0, 4, 0, 0, 6000000000000, 1000, 0
         FROM generate_series({from}::bigint, {to}::bigint - 1) AS k
         ON CONFLICT DO NOTHING"
    )
}

async fn serve(store: Arc<PgStore>) -> SocketAddr {
    let (reports, _) = tokio::sync::broadcast::channel(16);
    let (_c, committee) = tokio::sync::watch::channel(CommitteeStatus::default());
    std::mem::forget(_c);
    let state = ApiState::new(ApiParts {
        store,
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
    addr
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let Ok(conn) = std::env::var("SIBYL_BENCH_PG") else {
        eprintln!("set SIBYL_BENCH_PG to a libpq connection string, or run scripts/bench-gateway");
        std::process::exit(2);
    };
    let per_feed = env_u64("SIBYL_BENCH_POINTS", 10_000_000) as i64;
    let load_budget = Duration::from_secs(env_u64("SIBYL_BENCH_LOAD_SECS", 600));
    let store = Arc::new(PgStore::connect(&conn).await.expect("connect"));
    let start = END - per_feed * 1000;
    store
        .ensure_partitions(start, END)
        .await
        .expect("partitions");

    // --- load: newest first per chunk, so an early stop still leaves the
    // last day complete for every feed --------------------------------------
    let t = Instant::now();
    const CHUNK: i64 = 500_000;
    let mut loaded = 0i64;
    let mut stopped = false;
    let mut hi = per_feed;
    while hi > 0 && !stopped {
        let lo = (hi - CHUNK).max(0);
        for f in 0..FEEDS {
            let key = store.register_feed(&feed(f)).await.expect("feed");
            store
                .execute_batch(&load_sql(key, start, lo, hi))
                .await
                .expect("load");
            loaded += hi - lo;
        }
        hi = lo;
        println!(
            "  loaded {loaded} points in {:.0} s ({:.0} points/s)",
            t.elapsed().as_secs_f64(),
            loaded as f64 / t.elapsed().as_secs_f64()
        );
        if t.elapsed() > load_budget {
            stopped = true;
        }
    }
    if loaded > 0 {
        store
            .rebuild_candles(start, END + 1)
            .await
            .expect("one-minute candles");
    }
    store
        .execute_batch("ANALYZE points; ANALYZE candles_1m")
        .await
        .expect("analyze");
    let per_feed_loaded = (per_feed - hi) as u64;
    println!(
        "points: {per_feed_loaded} per feed x {FEEDS} feeds{} in {:.0} s; database {:.0} MB",
        if stopped {
            format!(
                " (stopped loading after {} s; asked for {per_feed})",
                load_budget.as_secs()
            )
        } else {
            String::new()
        },
        t.elapsed().as_secs_f64(),
        store.size_bytes().await as f64 / 1e6
    );

    // One report on top, so /latest has a report and a proof.
    let leaves: Vec<ReportLeaf> = (0..FEEDS)
        .map(|f| ReportLeaf::basic(feed(f), 6_000_000_000_000, 1_000, 4, END as u64 - 10))
        .collect();
    let top = SignedReport {
        header: ReportHeader {
            version: PROTOCOL_VERSION,
            config_digest: ConfigDigest([3; 32]),
            round: per_feed as u64 + 1,
            timestamp_ms: END as u64,
            merkle_root: merkle::root(&leaves),
            margin_root: [0; 32],
        },
        leaves,
        signatures: BTreeMap::from([(Suite::Ed25519, SignatureBytes(vec![1; 64]))]),
        commands: Vec::new(),
        margin_state: None,
    };
    store.insert_report(&top, 0).await.expect("top report");

    // --- store level ---------------------------------------------------------
    let mut lat = Vec::new();
    for i in 0..2_000 {
        let t = Instant::now();
        let p = store.latest(feed(i % FEEDS)).await.expect("latest");
        lat.push(t.elapsed());
        assert!(p.is_some());
    }
    report_timing("store: latest value of a feed", lat);
    let mut can = Vec::new();
    for _ in 0..30 {
        let t = Instant::now();
        let (c, _) = store
            .candles(
                feed(3),
                (END - DAY_MS) as u64,
                END as u64 + 1,
                60_000,
                10_000,
            )
            .await
            .expect("candles");
        can.push(t.elapsed());
        assert!(c.len() >= 1_440, "{} candles", c.len());
    }
    report_timing("store: 24 h of 1 s points as 1 min candles", can);

    // --- HTTP ------------------------------------------------------------------
    let addr = serve(store.clone()).await;
    let latest_path = format!("/v1/feeds/{}/latest", feed(3));
    let candles_path = format!(
        "/v1/feeds/{}/history?from={}&to={}&interval=1m&limit=10000",
        feed(3),
        END - DAY_MS,
        END + 1
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
        for _ in 0..30 {
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

    // --- ingest: verified reports of 1,000 feeds ---------------------------------
    let n_reports = env_u64("SIBYL_BENCH_INGEST", 200);
    let mut rng = <rand_chacha::ChaCha20Rng as rand_core::SeedableRng>::seed_from_u64(19);
    let keys = testkit::dealer_keys::<frost_ed25519::Ed25519Sha512, _>(4, 3, &mut rng)
        .expect("dealer keys");
    let group = GroupKeys::new(testkit::FIXTURE_CONFIG_DIGEST)
        .with_ed25519(*keys.public_key_package.verifying_key());
    let leaves = testkit::sample_leaves(1_000);
    let first_round = 10_000_000_000u64;
    let reports: Vec<SignedReport> = (0..n_reports)
        .map(|i| {
            let header =
                testkit::header_for(testkit::FIXTURE_CONFIG_DIGEST, first_round + i, &leaves);
            let digest = sibyl_aggregator::digest::header_digest(&header);
            let sig = testkit::threshold_sign(
                &keys,
                &testkit::first_signers(&keys, 3),
                &digest,
                &mut rng,
            )
            .and_then(|s| s.serialize())
            .expect("sign");
            SignedReport {
                header,
                leaves: leaves.clone(),
                signatures: BTreeMap::from([(Suite::Ed25519, SignatureBytes(sig))]),
                commands: Vec::new(),
                margin_state: None,
            }
        })
        .collect();
    let t = Instant::now();
    let (mut each, mut verifying, mut storing) = (Vec::new(), Vec::new(), Vec::new());
    for r in &reports {
        let t1 = Instant::now();
        verify_report(r, &group).expect("verifies");
        let t2 = Instant::now();
        assert!(store.insert_report(r, 0).await.expect("insert"));
        verifying.push(t2 - t1);
        storing.push(t2.elapsed());
        each.push(t1.elapsed());
    }
    let secs = t.elapsed().as_secs_f64();
    println!(
        "ingest: {n_reports} reports of 1,000 feeds (verify + store) in {secs:.1} s: {:.1} reports/s, {:.0} points/s",
        n_reports as f64 / secs,
        n_reports as f64 * 1_000.0 / secs
    );
    report_timing("ingest: one 1,000-feed report (verify + store)", each);
    report_timing("ingest: of which verify", verifying);
    report_timing("ingest: of which store (one transaction)", storing);

    // --- requests/s, two gateway API servers on one database -----------------------
    let second = Arc::new(PgStore::connect(&conn).await.expect("connect"));
    // A second gateway ingests the same reports (stored already: `false`),
    // which keeps its in-memory newest points as the first one's.
    assert!(!second.insert_report(&top, 0).await.expect("second ingest"));
    let addr2 = serve(second).await;
    let secs = env_u64("SIBYL_BENCH_SECS", 10);
    let run = |a: SocketAddr| {
        let url = format!("http://{a}{latest_path}");
        tokio::process::Command::new("wrk")
            .args(["-t1", "-c16", &format!("-d{secs}s"), "--latency", &url])
            .output()
    };
    let (o1, o2) = tokio::join!(run(addr), run(addr2));
    let mut total = 0.0;
    for (i, o) in [o1, o2].into_iter().enumerate() {
        match o {
            Ok(out) if out.status.success() => {
                let text = String::from_utf8_lossy(&out.stdout).into_owned();
                let rps: f64 = text
                    .lines()
                    .find_map(|l| l.strip_prefix("Requests/sec:"))
                    .and_then(|v| v.trim().parse().ok())
                    .unwrap_or(0.0);
                let p99 = text
                    .lines()
                    .find(|l| l.trim_start().starts_with("99%"))
                    .unwrap_or("")
                    .trim()
                    .to_owned();
                println!(
                    "gateway {}: wrk -t1 -c16 -d{secs}s: {rps:.0} req/s ({p99})",
                    i + 1
                );
                total += rps;
            }
            _ => println!("gateway {}: wrk not available (apt-get install wrk)", i + 1),
        }
    }
    println!("two gateways together: {total:.0} req/s on /v1/feeds/{{id}}/latest");
}
