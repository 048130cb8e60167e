//! The node's SQLite store: signed reports, the per-feed history, the signing
//! ledger and the margin engine's command/event log, in one WAL-mode file.
//!
//! ```text
//!   round driver ──┐                       ┌── API handlers (spawn_blocking)
//!   retention    ──┼─ StoreHandle ─ mpsc ─▶ writer thread ── write connection
//!   margin       ──┘   (oneshot replies)   │
//!                                          └── Readers: a pool of read-only
//!                                              connections, one per query
//! ```
//!
//! One writer thread owns the only write connection, so writes never contend
//! and each command is one transaction, committed (fsync'd, `synchronous =
//! FULL`) before its reply is sent: whatever a reply acknowledged survives
//! `kill -9`. Readers use their own connections and see committed data only.

mod db;
pub mod retention;
pub mod schema;
mod writer;

pub use db::{
    Candle, Db, FeedRetention, HistoryCursor, ImportSummary, LEDGER_FORMAT, LEDGER_VERSION,
    LedgerImportError, LedgerInterchange, MarginEventRow, MarginStep, Point, RETIRED_ROUND,
    ReportRun, SignedRound,
};
pub use retention::{RetentionPolicy, RetentionStats};
pub use writer::{Readers, Store, StoreHandle};

/// How the signing ledger's transaction is committed (`[store] ledger_sync`).
///
/// Either way the ledger is checked and written in one exclusive transaction
/// before a signature share leaves the process, and the commit survives
/// `kill -9` (WAL: a committed transaction is in the operating system once
/// `COMMIT` returns).
///
/// - `Normal` (the node's default) does not fsync that commit. Against a power
///   cut or kernel crash the node relies on its observation record
///   (`DATA_DIR/observed-round`), which *is* fsynced before an observation
///   leaves: a share for round `r` can only use FROST nonces that went out
///   with this process's observation for `r`, so a restarted member, which
///   never observes a recorded round again, has no nonce to sign any round
///   it may have signed before the cut. The last ledger rows may be lost; a
///   second signature for their rounds cannot happen.
/// - `Full` also fsyncs the ledger commit (about 1.6 ms on the critical path
///   of every round on this project's test machine).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LedgerSync {
    #[default]
    Normal,
    Full,
}

use sibyl_aggregator::Round;
use std::path::{Path, PathBuf};

/// Milliseconds since the Unix epoch, by the system clock.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// A 32-byte digest of what a member signed in a round.
pub type SigningDigest = [u8; 32];

/// What [`Db::record_signing`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SigningRecord {
    /// The round was new: recorded now, the share may be released.
    Recorded,
    /// The same digest was already recorded for this round (a retry after a
    /// crash or a resent signing request): safe to sign the same thing again.
    AlreadyRecorded,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(
        "cannot open database {path}: {source}; check the path, its permissions and free disk space"
    )]
    Open {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error(
        "{path} is not a SQLite database (damaged or some other kind of file); move it aside and restart to create a fresh one, then let the node catch up from its peers"
    )]
    NotADatabase { path: PathBuf },
    #[error(
        "{path} is a SQLite database of some other program ({why}); point `store.path` at a Sibyl database or a new file"
    )]
    Foreign { path: PathBuf, why: String },
    #[error(
        "database {path} has schema version {found}, this build of sibyl understands {expected}; run a matching version of sibyl"
    )]
    SchemaMismatch {
        path: PathBuf,
        found: u32,
        expected: u32,
    },
    #[error("migration to schema version {version} of {path} failed: {source}")]
    Migration {
        path: PathBuf,
        version: u32,
        #[source]
        source: rusqlite::Error,
    },
    #[error("database {path} cannot be used: {what}")]
    Unsupported { path: PathBuf, what: String },
    /// The signing ledger forbids signing: a different digest was already
    /// recorded for this round, or a later round was already signed.
    #[error(
        "not safe to sign round {round}: the ledger already holds round {recorded_round} with digest {}",
        hex::encode(recorded_digest)
    )]
    NotSafeToSign {
        round: Round,
        recorded_round: Round,
        recorded_digest: SigningDigest,
    },
    #[error("value out of range for the database: {0}")]
    OutOfRange(String),
    #[error("stored data is damaged: {0}")]
    Corrupt(String),
    /// SQLITE_FULL: the write was rolled back; what was committed before is
    /// untouched.
    #[error(
        "the disk holding the database is full ({0}); this write was rolled back and nothing stored before it changed; free space and the node carries on"
    )]
    DiskFull(rusqlite::Error),
    #[error("database error: {0}")]
    Sqlite(rusqlite::Error),
    #[error(
        "the store's writer has stopped (the database failed earlier or the node is shutting down)"
    )]
    WriterGone,
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        match &e {
            rusqlite::Error::SqliteFailure(f, _) if f.code == rusqlite::ErrorCode::DiskFull => {
                StoreError::DiskFull(e)
            }
            _ => StoreError::Sqlite(e),
        }
    }
}

impl StoreError {
    fn open(path: &Path, source: rusqlite::Error) -> Self {
        if let rusqlite::Error::SqliteFailure(e, _) = &source
            && matches!(
                e.code,
                rusqlite::ErrorCode::NotADatabase | rusqlite::ErrorCode::DatabaseCorrupt
            )
        {
            return StoreError::NotADatabase {
                path: path.to_owned(),
            };
        }
        StoreError::Open {
            path: path.to_owned(),
            source,
        }
    }
}

#[cfg(test)]
mod tests;
