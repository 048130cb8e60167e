//! Store tests on real SQLite files in temporary directories.

use super::retention::{RetentionPolicy, run_once};
use super::*;
use sibyl_aggregator::{
    ConfigDigest, FeedId, PROTOCOL_VERSION, ReportHeader, ReportLeaf, SignatureBytes, SignedReport,
    Suite,
};
use std::collections::BTreeMap;
use std::time::Duration;

fn feed(s: &str) -> FeedId {
    FeedId::new(s).expect("valid feed id")
}

fn leaf(id: &str, price: i128, ts: u64) -> ReportLeaf {
    ReportLeaf {
        bid: price - 2,
        ask: price + 3,
        venues: 5,
        status: sibyl_aggregator::LeafStatus::Degraded,
        flags: sibyl_aggregator::report::flags::UNCONFIRMED_JUMP,
        ema: price - 1,
        ema_confidence: 9,
        volatility: u64::MAX - 1,
        ..ReportLeaf::basic(feed(id), price, 7, 4, ts.saturating_sub(100))
    }
}

fn report(round: u64, ts: u64, leaves: Vec<ReportLeaf>) -> SignedReport {
    let mut signatures = BTreeMap::new();
    signatures.insert(Suite::Ed25519, SignatureBytes(vec![round as u8; 64]));
    SignedReport {
        header: ReportHeader {
            version: PROTOCOL_VERSION,
            config_digest: ConfigDigest([9; 32]),
            round,
            timestamp_ms: ts,
            merkle_root: [round as u8; 32],
            margin_root: [0; 32],
        },
        leaves,
        signatures,
        commands: Vec::new(),
        margin_state: None,
    }
}

fn temp() -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("sibyl.db");
    (dir, path)
}

#[tokio::test]
async fn reports_and_history_round_trip_and_survive_reopen() {
    let (_dir, path) = temp();
    {
        let store = Store::open(&path).expect("open");
        for r in 1..=5u64 {
            let rep = report(
                r,
                1_000 * r,
                vec![
                    leaf("BTC-USD", 100 + r as i128, 1_000 * r),
                    leaf("ETH-USD", -(r as i128), 1_000 * r),
                ],
            );
            assert!(store.writer.insert_report(rep).await.expect("insert"));
        }
        // The same report again is a no-op; a different one for the round is refused.
        let again = report(
            3,
            3_000,
            vec![leaf("BTC-USD", 103, 3_000), leaf("ETH-USD", -3, 3_000)],
        );
        assert!(!store.writer.insert_report(again).await.expect("idempotent"));
        let other = report(3, 3_000, vec![leaf("BTC-USD", 999, 3_000)]);
        assert!(matches!(
            store.writer.insert_report(other).await,
            Err(StoreError::Corrupt(_))
        ));
        let latest = store
            .readers
            .latest(feed("BTC-USD"))
            .await
            .expect("latest")
            .expect("has a point");
        assert_eq!((latest.round, latest.price), (5, 105));
    }
    // Dropped every handle: the writer thread ends. Reopen and read it all back.
    let store = Store::open(&path).expect("reopen");
    let all = store.readers.latest_all().await.expect("latest_all");
    assert_eq!(all.len(), 2);
    assert_eq!(all[0].feed_id, feed("BTC-USD"));
    assert_eq!(all[1].price, -5);
    let r3 = store
        .readers
        .report(3)
        .await
        .expect("report")
        .expect("stored");
    assert_eq!(r3.leaves[0].price, 103);
    assert_eq!(r3.signatures[&Suite::Ed25519].0, vec![3u8; 64]);
    assert!(store.readers.report(6).await.expect("report").is_none());
    let after = store.readers.reports_after(2, 2).await.expect("after");
    assert_eq!(
        after.iter().map(|r| r.header.round).collect::<Vec<_>>(),
        vec![3, 4]
    );
    let latest_report = store
        .readers
        .read(|db| db.latest_report())
        .await
        .expect("latest report")
        .expect("some");
    assert_eq!(latest_report.header.round, 5);
    assert!(
        store
            .readers
            .latest(feed("SOL-USD"))
            .await
            .expect("ok")
            .is_none()
    );
}

/// A database written before the leaf had its quality fields (schema 2)
/// opens, migrates, and its rows read as leaves without them; new rows keep
/// every field.
#[tokio::test]
async fn a_schema_2_database_opens_and_its_points_read_as_plain_leaves() {
    let (_dir, path) = temp();
    {
        let conn = super::schema::create_at_version(&path, 2).expect("a schema-2 file");
        conn.execute(
            "INSERT INTO feeds (feed_key, feed_id) VALUES (1, 'BTC-USD')",
            [],
        )
        .expect("feed");
        conn.execute(
            "INSERT INTO points (feed_key, ts_ms, round, price, confidence, num_observations, observed_at_ms)
             VALUES (1, 1000, 1, ?1, ?2, 3, 900)",
            rusqlite::params![&77i128.to_be_bytes()[..], &5u128.to_be_bytes()[..]],
        )
        .expect("old point");
    }
    let store = Store::open(&path).expect("migrates");
    let old = store
        .readers
        .latest(feed("BTC-USD"))
        .await
        .expect("latest")
        .expect("the old point");
    assert_eq!(
        old.leaf(),
        ReportLeaf::basic(feed("BTC-USD"), 77, 5, 3, 900),
        "an old row is a leaf without quality fields: EMA = price, status ok"
    );
    let rep = report(2, 2_000, vec![leaf("BTC-USD", 80, 2_000)]);
    let newest = rep.leaves[0].clone();
    assert!(store.writer.insert_report(rep).await.expect("insert"));
    let p = store
        .readers
        .latest(feed("BTC-USD"))
        .await
        .expect("latest")
        .expect("the new point");
    assert_eq!(p.leaf(), newest, "every field of the new leaf comes back");
    assert_eq!(p.volatility, u64::MAX - 1, "u64 above i64::MAX survives");
}

#[tokio::test]
async fn history_pages_and_candles() {
    let (_dir, path) = temp();
    let store = Store::open(&path).expect("open");
    // 300 one-second points, price = second index.
    let points: Vec<Point> = (0..300u64)
        .map(|i| {
            Point::of_leaf(
                &ReportLeaf::basic(feed("BTC-USD"), i as i128, 1, 3, 60_000 + i * 1_000),
                i + 1,
                60_000 + i * 1_000,
            )
        })
        .collect();
    store
        .writer
        .write(move |db| db.insert_points(&points))
        .await
        .expect("bulk insert");
    // Pages of 100 over [60s, 360s): three pages, then none.
    let mut cursor = None;
    let mut seen = Vec::new();
    loop {
        let (page, next) = store
            .readers
            .history(feed("BTC-USD"), 60_000, 360_000, cursor, 100)
            .await
            .expect("history");
        seen.extend(page.iter().map(|p| p.price));
        match next {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    assert_eq!(seen, (0..300).collect::<Vec<i128>>());
    // One-minute candles: 5 buckets of 60 points each.
    let (candles, next) = store
        .readers
        .candles(feed("BTC-USD"), 0, u64::MAX, 60_000, 100)
        .await
        .expect("candles");
    assert!(next.is_none());
    assert_eq!(candles.len(), 5);
    assert_eq!(candles[1].start_ms, 120_000);
    assert_eq!(
        (
            candles[1].open,
            candles[1].high,
            candles[1].low,
            candles[1].close,
            candles[1].count
        ),
        (60, 119, 60, 119, 60)
    );
    // Paged candles: limit 2 returns the start of the third bucket.
    let (first, next) = store
        .readers
        .candles(feed("BTC-USD"), 0, u64::MAX, 60_000, 2)
        .await
        .expect("candles");
    assert_eq!(first.len(), 2);
    assert_eq!(next, Some(180_000));
}

#[tokio::test]
async fn signing_ledger_refuses_a_second_digest_and_survives_reopen() {
    // The same checks whether the commit is fsynced or not (`ledger_sync`).
    for sync in [LedgerSync::Full, LedgerSync::Normal] {
        ledger_refuses_a_second_digest_and_survives_reopen(sync).await;
    }
}

async fn ledger_refuses_a_second_digest_and_survives_reopen(sync: LedgerSync) {
    let (_dir, path) = temp();
    {
        let store = Store::open_with(&path, sync).expect("open");
        assert_eq!(
            store.readers.read(|db| db.last_signed()).await.expect("ok"),
            None
        );
        assert_eq!(
            store
                .writer
                .record_signing(7, [1; 32])
                .await
                .expect("first"),
            SigningRecord::Recorded
        );
        // Same digest again: idempotent (a resent request after a crash).
        assert_eq!(
            store.writer.record_signing(7, [1; 32]).await.expect("same"),
            SigningRecord::AlreadyRecorded
        );
        match store.writer.record_signing(7, [2; 32]).await {
            Err(StoreError::NotSafeToSign {
                round,
                recorded_round,
                recorded_digest,
            }) => {
                assert_eq!((round, recorded_round, recorded_digest), (7, 7, [1; 32]));
            }
            other => panic!("expected NotSafeToSign, got {other:?}"),
        }
        // An older round than one already signed is refused too.
        assert!(matches!(
            store.writer.record_signing(6, [3; 32]).await,
            Err(StoreError::NotSafeToSign {
                recorded_round: 7,
                ..
            })
        ));
        assert_eq!(
            store.writer.record_signing(8, [4; 32]).await.expect("next"),
            SigningRecord::Recorded
        );
    }
    let store = Store::open_with(&path, sync).expect("reopen");
    assert_eq!(
        store.readers.read(|db| db.last_signed()).await.expect("ok"),
        Some((8, [4; 32])),
        "{sync:?}"
    );
    assert!(matches!(
        store.writer.record_signing(8, [5; 32]).await,
        Err(StoreError::NotSafeToSign { .. })
    ));
    assert_eq!(
        store.writer.record_signing(8, [4; 32]).await.expect("same"),
        SigningRecord::AlreadyRecorded
    );
}

#[test]
fn a_full_disk_is_a_clear_error_and_loses_nothing_stored() {
    let (_dir, path) = temp();
    let leaves = |round: u64| {
        (0..50)
            .map(|f| {
                leaf(
                    &format!("F{f:02}-USD"),
                    i128::from(round) * 100 + f,
                    1_000 * round,
                )
            })
            .collect::<Vec<_>>()
    };
    let mut db = Db::open(&path).expect("open");
    db.set_ledger_sync(LedgerSync::Normal);
    for round in 1..=3 {
        db.insert_report(&report(round, 1_000 * round, leaves(round)))
            .expect("insert");
    }
    db.record_signing(3, &[3; 32], 5).expect("ledger");
    db.cap_size_here().expect("cap");
    // Fill what is left of the last page, then hit the limit.
    let mut full = None;
    for round in 4..200 {
        match db.insert_report(&report(round, 1_000 * round, leaves(round))) {
            Ok(_) => {}
            Err(e) => {
                full = Some((round, e));
                break;
            }
        }
    }
    let (failed, e) = full.expect("the capped database fills up");
    assert!(matches!(e, StoreError::DiskFull(_)), "{e:?}");
    assert!(
        e.to_string().contains("disk holding the database is full"),
        "{e}"
    );
    // The ledger refuses the same way rather than half-writing.
    for round in failed..failed + 50 {
        match db.record_signing(round, &[round as u8; 32], 6) {
            Ok(_) => {}
            Err(e) => {
                assert!(matches!(e, StoreError::DiskFull(_)), "{e:?}");
                break;
            }
        }
    }
    drop(db);

    // Space again: everything committed is there, the failed report is not,
    // and writing works.
    let mut db = Db::open(&path).expect("reopen");
    for round in 1..failed {
        let r = db.report(round).expect("read").expect("stored report");
        assert_eq!(r.leaves.len(), 50);
    }
    assert_eq!(db.report(failed).expect("read"), None);
    assert!(
        db.last_signed()
            .expect("ledger")
            .is_some_and(|(r, _)| r >= 3)
    );
    db.insert_report(&report(failed, 1_000 * failed, leaves(failed)))
        .expect("insert after space returns");
}

#[tokio::test]
async fn two_processes_on_one_file_cannot_both_sign_a_round() {
    // Two independent stores (as two processes would be) race on the same file;
    // the exclusive transaction lets exactly one digest in.
    let (_dir, path) = temp();
    let a = Store::open_with(&path, LedgerSync::Normal).expect("open a");
    let b = Store::open_with(&path, LedgerSync::Full).expect("open b");
    let mut tasks = Vec::new();
    for i in 0..8u8 {
        let w = if i % 2 == 0 {
            a.writer.clone()
        } else {
            b.writer.clone()
        };
        tasks.push(tokio::spawn(
            async move { w.record_signing(42, [i; 32]).await },
        ));
    }
    let mut ok = 0;
    for t in tasks {
        match t.await.expect("join") {
            Ok(_) => ok += 1,
            Err(StoreError::NotSafeToSign { .. }) => {}
            Err(e) => panic!("unexpected error {e}"),
        }
    }
    assert_eq!(ok, 1);
}

#[test]
fn garbage_file_is_refused_and_left_untouched() {
    let (_dir, path) = temp();
    let garbage: Vec<u8> = (0..10_000u32).map(|i| (i * 7 + 3) as u8).collect();
    std::fs::write(&path, &garbage).expect("write");
    match Store::open(&path) {
        Err(e @ StoreError::NotADatabase { .. }) => {
            assert!(e.to_string().contains("not a SQLite database"), "{e}");
        }
        Err(e) => panic!("expected NotADatabase, got {e}"),
        Ok(_) => panic!("opened a garbage file"),
    }
    assert_eq!(std::fs::read(&path).expect("read"), garbage);
}

#[test]
fn corrupt_sibyl_database_is_refused_without_overwriting() {
    let (_dir, path) = temp();
    {
        let store = Store::open(&path).expect("open");
        store
            .writer
            .write_blocking(|db| db.record_signing(1, &[1; 32], 5))
            .expect("record");
        // Fold the WAL into the file now, so the writer's final checkpoint on
        // shutdown has nothing left to write over the bytes we damage below.
        store
            .writer
            .write_blocking(|db| db.checkpoint())
            .expect("checkpoint");
    }
    // Wait for the writer thread to let go, then trash the middle of the file
    // (keeping the header valid so SQLite gets as far as reading pages).
    std::thread::sleep(Duration::from_millis(500));
    let mut bytes = std::fs::read(&path).expect("read");
    assert!(bytes.len() > 4096);
    for b in bytes.iter_mut().skip(100) {
        *b = 0xA5;
    }
    std::fs::write(&path, &bytes).expect("write");
    let _ = std::fs::remove_file(path.with_extension("db-wal"));
    let _ = std::fs::remove_file(path.with_extension("db-shm"));
    let Err(err) = Store::open(&path) else {
        panic!("opened a corrupt database");
    };
    let msg = err.to_string();
    assert!(
        matches!(
            err,
            StoreError::NotADatabase { .. } | StoreError::Open { .. } | StoreError::Foreign { .. }
        ),
        "unexpected error kind: {msg}"
    );
    assert!(msg.contains(&path.display().to_string()), "{msg}");
    assert_eq!(std::fs::read(&path).expect("read"), bytes);
}

#[test]
fn foreign_sqlite_database_is_refused() {
    let (_dir, path) = temp();
    {
        let conn = rusqlite::Connection::open(&path).expect("open");
        conn.execute_batch("CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT);")
            .expect("create");
    }
    let before = std::fs::read(&path).expect("read");
    match Store::open(&path) {
        Err(StoreError::Foreign { .. }) => {}
        Err(e) => panic!("expected Foreign, got {e}"),
        Ok(_) => panic!("opened a foreign database"),
    }
    assert_eq!(std::fs::read(&path).expect("read"), before);
}

#[test]
fn newer_schema_is_refused() {
    let (_dir, path) = temp();
    drop(Store::open(&path).expect("open"));
    std::thread::sleep(Duration::from_millis(100));
    {
        let conn = rusqlite::Connection::open(&path).expect("open");
        conn.execute(
            "INSERT INTO schema_version (version, applied_ms) VALUES (?1, 0)",
            [i64::from(schema::SCHEMA_VERSION) + 1],
        )
        .expect("bump");
    }
    match Store::open(&path) {
        Err(StoreError::SchemaMismatch {
            found, expected, ..
        }) => assert_eq!((found, expected), (expected + 1, schema::SCHEMA_VERSION)),
        Err(e) => panic!("expected SchemaMismatch, got {e}"),
        Ok(_) => panic!("opened a newer schema"),
    }
}

#[test]
fn missing_directory_is_a_clear_error() {
    let (dir, _) = temp();
    let path = dir.path().join("no/such/dir/sibyl.db");
    match Store::open(&path) {
        Err(e @ StoreError::Open { .. }) => {
            assert!(e.to_string().contains("no/such/dir"), "{e}")
        }
        Err(e) => panic!("expected Open, got {e}"),
        Ok(_) => panic!("opened a path in a missing directory"),
    }
}

#[tokio::test]
async fn retention_thins_then_prunes_in_batches() {
    let (_dir, path) = temp();
    let store = Store::open(&path).expect("open");
    let day = 86_400_000u64;
    let now = 10 * day;
    // 2 hours of 1-second points, 3 days old, for two feeds.
    let start = now - 3 * day;
    let points: Vec<Point> = ["BTC-USD", "ETH-USD"]
        .iter()
        .flat_map(|f| {
            (0..7_200u64).map(move |i| {
                Point::of_leaf(
                    &ReportLeaf::basic(feed(f), i as i128, 0, 1, start + i * 1_000),
                    i + 1,
                    start + i * 1_000,
                )
            })
        })
        .collect();
    store
        .writer
        .write(move |db| db.insert_points(&points))
        .await
        .expect("insert");
    let policy = RetentionPolicy {
        raw_for: Some(Duration::from_secs(86_400)),
        downsample_to: Duration::from_secs(60),
        delete_after: None,
        batch: 1_000,
        buckets_per_batch: 10,
        pause: Duration::from_millis(0),
        every: Duration::from_secs(1),
    };
    let stats = run_once(&store.writer, &policy, now).await.expect("pass");
    // 120 one-minute buckets per feed remain, the last point of each.
    assert_eq!(stats.thinned, 2 * (7_200 - 120));
    assert!(stats.transactions >= 24, "{stats:?}");
    let count = store.readers.read(|db| db.point_count()).await.expect("n");
    assert_eq!(count, 240);
    let (pts, _) = store
        .readers
        .history(feed("BTC-USD"), 0, u64::MAX, None, 10)
        .await
        .expect("history");
    assert_eq!(pts[0].price, 59);
    // A second pass finds nothing more to do.
    let again = run_once(&store.writer, &policy, now).await.expect("pass");
    assert_eq!(again.thinned, 0);
    // Pruning: everything older than 2 days goes, in batches of 100.
    let prune = RetentionPolicy {
        raw_for: None,
        delete_after: Some(Duration::from_secs(2 * 86_400)),
        batch: 100,
        ..policy
    };
    let stats = run_once(&store.writer, &prune, now).await.expect("prune");
    assert_eq!(stats.deleted, 240);
    assert!(stats.transactions >= 3);
    let count = store.readers.read(|db| db.point_count()).await.expect("n");
    assert_eq!(count, 0);
}

#[test]
fn catch_up_queries_cover_round_0_gaps_and_settled_rounds() {
    let (_dir, path) = temp();
    let mut db = Db::open(&path).expect("open");
    let rounds = |rs: &[SignedReport]| rs.iter().map(|r| r.header.round).collect::<Vec<_>>();
    assert_eq!(db.first_missing_round().expect("first missing"), 0);
    assert_eq!(db.newest_round().expect("newest"), None);
    // Rounds 0..=3 and 8..=9 stored; 4..8 missed (a partition).
    for r in (0..=3).chain(8..=9) {
        db.insert_report(&report(r, 1_000 + r, vec![leaf("BTC-USD", 1, 1_000 + r)]))
            .expect("insert");
    }
    assert_eq!(db.first_missing_round().expect("first missing"), 4);
    assert_eq!(db.newest_round().expect("newest"), Some(9));
    // From round 0 inclusive; bounded by `end`; paged by `limit`.
    assert_eq!(
        rounds(&db.reports_in(0, u64::MAX, 100).expect("in")),
        vec![0, 1, 2, 3, 8, 9]
    );
    assert_eq!(
        rounds(&db.reports_in(2, 9, 100).expect("in")),
        vec![2, 3, 8]
    );
    assert_eq!(
        rounds(&db.reports_in(0, u64::MAX, 2).expect("in")),
        vec![0, 1]
    );
    assert_eq!(db.stored_rounds_from(3).expect("rounds"), vec![3, 8, 9]);
    // The run in round order stops at the first undecided round.
    let run = db.report_run(0, 100).expect("run");
    assert_eq!((rounds(&run.reports), run.next), (vec![0, 1, 2, 3], 4));
    // 4..6 settled absent, 6..8 fetched later: the run goes on.
    db.insert_report_gap(4, 6).expect("gap");
    db.insert_report_gap(4, 5)
        .expect("a shorter gap does not shrink it");
    assert_eq!(db.first_missing_round().expect("first missing"), 6);
    let run = db.report_run(2, 100).expect("run");
    assert_eq!((rounds(&run.reports), run.next), (vec![2, 3], 6));
    for r in 6..8 {
        db.insert_report(&report(r, 1_000 + r, vec![leaf("BTC-USD", 1, 1_000 + r)]))
            .expect("insert");
    }
    let run = db.report_run(4, 100).expect("run");
    assert_eq!((rounds(&run.reports), run.next), (vec![6, 7, 8, 9], 10));
    // A settled gap after the newest report is passed too; limits page.
    db.insert_report_gap(10, 12).expect("gap");
    assert_eq!(db.report_run(10, 100).expect("run").next, 12);
    let run = db.report_run(0, 3).expect("run");
    assert_eq!((rounds(&run.reports), run.next), (vec![0, 1, 2], 3));
    assert_eq!(db.first_missing_round().expect("first missing"), 12);
    assert_eq!(
        db.report_gaps_from(5).expect("gaps"),
        vec![(4, 6), (10, 12)]
    );
    assert_eq!(db.report_gaps_from(6).expect("gaps"), vec![(10, 12)]);
}
