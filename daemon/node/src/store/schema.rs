//! Opening a database file: connection settings, identity check and versioned
//! migrations.
//!
//! A Sibyl database is marked with `PRAGMA application_id` so that a file that
//! belongs to some other program is refused instead of being "migrated" into a
//! mix of both. Each migration runs in its own transaction together with the
//! row that records it in `schema_version`, so a crash mid-migration leaves the
//! previous version intact.

use super::StoreError;
use rusqlite::{Connection, OpenFlags, TransactionBehavior};
use std::path::Path;
use std::time::Duration;

/// `PRAGMA application_id` of a Sibyl database: ASCII "SIBY".
pub const APPLICATION_ID: i32 = 0x5349_4259;

/// Migrations in order; index + 1 is the schema version they produce.
const MIGRATIONS: &[&str] = &[
    // 1: reports, feed history, signing ledger, margin event log.
    r#"
    CREATE TABLE reports (
        round          INTEGER PRIMARY KEY,
        version        INTEGER NOT NULL,
        config_digest  BLOB    NOT NULL,
        timestamp_ms   INTEGER NOT NULL,
        merkle_root    BLOB    NOT NULL,
        -- how `body` is encoded: 'json' (serde JSON of SignedReport)
        encoding       TEXT    NOT NULL,
        body           BLOB    NOT NULL
    );
    CREATE TABLE report_signatures (
        round      INTEGER NOT NULL REFERENCES reports(round) ON DELETE CASCADE,
        suite      TEXT    NOT NULL,
        signature  BLOB    NOT NULL,
        PRIMARY KEY (round, suite)
    ) WITHOUT ROWID;
    CREATE TABLE feeds (
        feed_key  INTEGER PRIMARY KEY,
        feed_id   TEXT    NOT NULL UNIQUE
    );
    -- The history: one row per feed per signed report. Prices and confidences
    -- are i128/u128 stored as 16-byte big-endian blobs. The primary key is the
    -- index every history query walks (feed, then time), and it covers them.
    CREATE TABLE points (
        feed_key          INTEGER NOT NULL REFERENCES feeds(feed_key),
        ts_ms             INTEGER NOT NULL,
        round             INTEGER NOT NULL,
        price             BLOB    NOT NULL,
        confidence        BLOB    NOT NULL,
        num_observations  INTEGER NOT NULL,
        observed_at_ms    INTEGER NOT NULL,
        PRIMARY KEY (feed_key, ts_ms, round)
    ) WITHOUT ROWID;
    -- Retention progress per feed: points before `downsampled_until_ms` have
    -- been thinned to one per bucket.
    CREATE TABLE retention_progress (
        feed_key              INTEGER PRIMARY KEY REFERENCES feeds(feed_key),
        downsampled_until_ms  INTEGER NOT NULL
    );
    -- The signing ledger: every round this member released a share for, with
    -- the digest it signed. Written before the share leaves the process.
    CREATE TABLE signing_ledger (
        round           INTEGER PRIMARY KEY,
        digest          BLOB    NOT NULL,
        recorded_at_ms  INTEGER NOT NULL
    );
    -- Margin engine: commands in, events out, both as JSON, so replay can
    -- rebuild state; `margin_state` holds snapshots keyed by name.
    CREATE TABLE margin_commands (
        seq          INTEGER PRIMARY KEY,
        received_ms  INTEGER NOT NULL,
        body         TEXT    NOT NULL
    );
    CREATE TABLE margin_events (
        seq      INTEGER PRIMARY KEY,
        round    INTEGER,
        kind     TEXT    NOT NULL,
        body     TEXT    NOT NULL
    );
    CREATE INDEX margin_events_by_kind ON margin_events(kind, seq);
    CREATE TABLE margin_state (
        name     TEXT PRIMARY KEY,
        seq      INTEGER NOT NULL,
        body     TEXT    NOT NULL
    );
    "#,
    // 2: rounds known to have no signed report (catch-up settled them), so
    // the margin engine can take the reports strictly in round order.
    r#"
    CREATE TABLE report_gaps (
        from_round  INTEGER PRIMARY KEY,
        end_round   INTEGER NOT NULL
    );
    "#,
    // 3: the leaf's quality fields (docs/PROTOCOL.md, "Leaf"). Rows written
    // before it have NULLs and read as a leaf without them: no bid/ask, no
    // venues, status ok, no flags, EMA = price, EMA confidence = confidence,
    // volatility 0. i128/u128 as 16-byte big-endian blobs, like price.
    r#"
    ALTER TABLE points ADD COLUMN bid             BLOB;
    ALTER TABLE points ADD COLUMN ask             BLOB;
    ALTER TABLE points ADD COLUMN venues          INTEGER;
    ALTER TABLE points ADD COLUMN status          INTEGER;
    ALTER TABLE points ADD COLUMN flags           INTEGER;
    ALTER TABLE points ADD COLUMN ema             BLOB;
    ALTER TABLE points ADD COLUMN ema_confidence  BLOB;
    ALTER TABLE points ADD COLUMN volatility      INTEGER;
    "#,
    // 4: committee-ordered margin commands: per origin member, the highest
    // command nonce the engine has taken (applied or refused) from a signed
    // report, written with the report's margin inputs; a later copy of a
    // command (members offer it until they see it ordered) is skipped.
    r#"
    CREATE TABLE margin_marks (
        origin  INTEGER PRIMARY KEY,
        nonce   INTEGER NOT NULL
    );
    "#,
];

/// The schema version this build writes and understands.
pub const SCHEMA_VERSION: u32 = MIGRATIONS.len() as u32;

/// Open (creating if needed) a database for reading and writing, check that it
/// is a Sibyl database, and bring its schema up to date.
pub fn open_rw(path: &Path) -> Result<Connection, StoreError> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| StoreError::open(path, e))?;
    configure(&conn, path)?;
    migrate(&conn, path)?;
    Ok(conn)
}

/// Open an existing database read-only (for reader connections). The writer
/// must have opened (and migrated) it first.
pub fn open_ro(path: &Path) -> Result<Connection, StoreError> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| StoreError::open(path, e))?;
    conn.busy_timeout(Duration::from_secs(5))
        .map_err(|e| StoreError::open(path, e))?;
    check_identity(&conn, path)?;
    let v = current_version(&conn, path)?;
    if v != SCHEMA_VERSION {
        return Err(StoreError::SchemaMismatch {
            path: path.to_owned(),
            found: v,
            expected: SCHEMA_VERSION,
        });
    }
    Ok(conn)
}

fn configure(conn: &Connection, path: &Path) -> Result<(), StoreError> {
    let err = |e| StoreError::open(path, e);
    conn.busy_timeout(Duration::from_secs(5)).map_err(err)?;
    // Reading the header is the first thing that fails on a file that is not
    // SQLite at all ("file is not a database").
    check_identity(conn, path)?;
    let mode: String = conn
        .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
        .map_err(err)?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(StoreError::Unsupported {
            path: path.to_owned(),
            what: format!(
                "journal_mode is {mode}, WAL is required (is the file on a network filesystem?)"
            ),
        });
    }
    // FULL: every commit fsyncs the WAL, so whatever a commit acknowledged
    // (above all the signing ledger) survives kill -9 and power loss.
    conn.execute_batch(
        "PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON; PRAGMA wal_autocheckpoint = 1000;",
    )
    .map_err(err)?;
    Ok(())
}

fn check_identity(conn: &Connection, path: &Path) -> Result<(), StoreError> {
    let app_id: i32 = conn
        .query_row("PRAGMA application_id", [], |r| r.get(0))
        .map_err(|e| StoreError::open(path, e))?;
    if app_id == APPLICATION_ID {
        return Ok(());
    }
    if app_id != 0 {
        return Err(StoreError::Foreign {
            path: path.to_owned(),
            why: format!("its application_id is {app_id:#x}, not Sibyl's {APPLICATION_ID:#x}"),
        });
    }
    // A fresh file has no tables; anything else with application_id 0 was made
    // by someone else.
    let tables: i64 = conn
        .query_row(
            "SELECT count(*) FROM sqlite_schema WHERE type = 'table'",
            [],
            |r| r.get(0),
        )
        .map_err(|e| StoreError::open(path, e))?;
    if tables > 0 {
        return Err(StoreError::Foreign {
            path: path.to_owned(),
            why: format!("it already holds {tables} table(s) but no Sibyl marker"),
        });
    }
    Ok(())
}

fn current_version(conn: &Connection, path: &Path) -> Result<u32, StoreError> {
    let has_table: bool = conn
        .query_row(
            "SELECT count(*) FROM sqlite_schema WHERE type='table' AND name='schema_version'",
            [],
            |r| r.get::<_, i64>(0),
        )
        .map_err(|e| StoreError::open(path, e))?
        > 0;
    if !has_table {
        return Ok(0);
    }
    let v: Option<i64> = conn
        .query_row("SELECT max(version) FROM schema_version", [], |r| r.get(0))
        .map_err(|e| StoreError::open(path, e))?;
    Ok(v.unwrap_or(0).clamp(0, i64::from(u32::MAX)) as u32)
}

fn migrate(conn: &Connection, path: &Path) -> Result<(), StoreError> {
    migrate_to(conn, path, SCHEMA_VERSION)
}

/// A database at schema `version` (an older build's file), for migration tests.
#[cfg(test)]
pub(crate) fn create_at_version(path: &Path, version: u32) -> Result<Connection, StoreError> {
    let conn = Connection::open(path).map_err(|e| StoreError::open(path, e))?;
    configure(&conn, path)?;
    migrate_to(&conn, path, version)?;
    Ok(conn)
}

fn migrate_to(conn: &Connection, path: &Path, target: u32) -> Result<(), StoreError> {
    let err = |e| StoreError::open(path, e);
    conn.execute_batch(&format!(
        "BEGIN IMMEDIATE;
         PRAGMA application_id = {APPLICATION_ID};
         CREATE TABLE IF NOT EXISTS schema_version (
             version     INTEGER PRIMARY KEY,
             applied_ms  INTEGER NOT NULL
         );
         COMMIT;"
    ))
    .map_err(err)?;
    let found = current_version(conn, path)?;
    if found > SCHEMA_VERSION {
        return Err(StoreError::SchemaMismatch {
            path: path.to_owned(),
            found,
            expected: SCHEMA_VERSION,
        });
    }
    for (i, sql) in MIGRATIONS
        .iter()
        .enumerate()
        .take(target as usize)
        .skip(found as usize)
    {
        let version = i as i64 + 1;
        let tx = rusqlite::Transaction::new_unchecked(conn, TransactionBehavior::Exclusive)
            .map_err(err)?;
        tx.execute_batch(sql).map_err(|e| StoreError::Migration {
            path: path.to_owned(),
            version: version as u32,
            source: e,
        })?;
        tx.execute(
            "INSERT INTO schema_version (version, applied_ms) VALUES (?1, ?2)",
            rusqlite::params![version, super::now_ms() as i64],
        )
        .map_err(err)?;
        tx.commit().map_err(err)?;
        tracing::info!(path = %path.display(), version, "applied database migration");
    }
    Ok(())
}
