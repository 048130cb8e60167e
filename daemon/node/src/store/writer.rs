//! The writer thread and the handles around it.

use super::db::{Candle, Db, HistoryCursor, Point};
use super::{LedgerSync, SigningDigest, SigningRecord, StoreError};
use sibyl_aggregator::{FeedId, Round, SignedReport};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use tokio::sync::{mpsc, oneshot};

/// How many write commands may wait for the writer before senders wait too.
const WRITE_QUEUE: usize = 256;

type Job = Box<dyn FnOnce(&mut Db) + Send>;

/// Cloneable handle to the writer thread. Every method is one transaction,
/// committed before it returns.
#[derive(Clone)]
pub struct StoreHandle {
    tx: mpsc::Sender<Job>,
}

impl StoreHandle {
    /// Run `f` on the writer's connection and return its result.
    pub async fn write<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Db) -> Result<T, StoreError> + Send + 'static,
    {
        let (reply, rx) = oneshot::channel();
        let job: Job = Box::new(move |db| {
            let _ = reply.send(f(db));
        });
        self.tx
            .send(job)
            .await
            .map_err(|_| StoreError::WriterGone)?;
        rx.await.map_err(|_| StoreError::WriterGone)?
    }

    /// Like [`StoreHandle::write`], for threads outside the async runtime.
    /// Must not be called from inside an async task.
    pub fn write_blocking<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Db) -> Result<T, StoreError> + Send + 'static,
    {
        let (reply, rx) = oneshot::channel();
        let job: Job = Box::new(move |db| {
            let _ = reply.send(f(db));
        });
        self.tx
            .blocking_send(job)
            .map_err(|_| StoreError::WriterGone)?;
        rx.blocking_recv().map_err(|_| StoreError::WriterGone)?
    }

    /// Store a verified signed report and its history points.
    pub async fn insert_report(&self, report: SignedReport) -> Result<bool, StoreError> {
        self.write(move |db| db.insert_report(&report)).await
    }

    /// Durably record that this member signs `digest` in `round`; see
    /// [`Db::record_signing`]. Call before releasing a signature share.
    pub async fn record_signing(
        &self,
        round: Round,
        digest: SigningDigest,
    ) -> Result<SigningRecord, StoreError> {
        self.write(move |db| db.record_signing(round, &digest, super::now_ms()))
            .await
    }
}

/// A pool of read-only connections. Queries run on the blocking thread pool.
#[derive(Clone)]
pub struct Readers {
    path: PathBuf,
    idle: Arc<Mutex<Vec<Db>>>,
}

/// Idle reader connections kept open.
const MAX_IDLE_READERS: usize = 8;

impl Readers {
    pub fn new(path: &Path) -> Self {
        Self {
            path: path.to_owned(),
            idle: Arc::new(Mutex::new(Vec::new())),
        }
    }

    /// Run `f` on a reader connection, on the current thread.
    pub fn read_blocking<T>(
        &self,
        f: impl FnOnce(&mut Db) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let pooled = self.idle.lock().map(|mut v| v.pop()).unwrap_or(None);
        let mut db = match pooled {
            Some(db) => db,
            None => Db::open_read_only(&self.path)?,
        };
        let out = f(&mut db);
        if let Ok(mut idle) = self.idle.lock()
            && idle.len() < MAX_IDLE_READERS
        {
            idle.push(db);
        }
        out
    }

    /// Run `f` on a reader connection on tokio's blocking pool.
    pub async fn read<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Db) -> Result<T, StoreError> + Send + 'static,
    {
        let this = self.clone();
        tokio::task::spawn_blocking(move || this.read_blocking(f))
            .await
            .map_err(|_| StoreError::WriterGone)?
    }

    pub async fn latest(&self, feed: FeedId) -> Result<Option<Point>, StoreError> {
        self.read(move |db| db.latest(&feed)).await
    }

    pub async fn latest_all(&self) -> Result<Vec<Point>, StoreError> {
        self.read(|db| db.latest_all()).await
    }

    pub async fn report(&self, round: Round) -> Result<Option<SignedReport>, StoreError> {
        self.read(move |db| db.report(round)).await
    }

    pub async fn reports_after(
        &self,
        after: Round,
        limit: usize,
    ) -> Result<Vec<SignedReport>, StoreError> {
        self.read(move |db| db.reports_after(after, limit)).await
    }

    pub async fn history(
        &self,
        feed: FeedId,
        from_ms: u64,
        to_ms: u64,
        after: Option<HistoryCursor>,
        limit: usize,
    ) -> Result<(Vec<Point>, Option<HistoryCursor>), StoreError> {
        self.read(move |db| db.history(&feed, from_ms, to_ms, after, limit))
            .await
    }

    pub async fn candles(
        &self,
        feed: FeedId,
        from_ms: u64,
        to_ms: u64,
        interval_ms: u64,
        limit: usize,
    ) -> Result<(Vec<Candle>, Option<u64>), StoreError> {
        self.read(move |db| db.candles(&feed, from_ms, to_ms, interval_ms, limit))
            .await
    }

    /// Size of the database file plus its WAL, in bytes.
    pub fn size_bytes(&self) -> u64 {
        let mut wal = self.path.clone().into_os_string();
        wal.push("-wal");
        [self.path.clone(), PathBuf::from(wal)]
            .iter()
            .filter_map(|p| std::fs::metadata(p).ok())
            .map(|m| m.len())
            .sum()
    }
}

/// The store: the writer handle plus the readers.
#[derive(Clone)]
pub struct Store {
    pub writer: StoreHandle,
    pub readers: Readers,
    path: PathBuf,
    ledger_sync: LedgerSync,
}

impl Store {
    /// Open (creating and migrating if needed) the database at `path` and
    /// start its writer thread. The thread ends when every handle is dropped.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        Self::open_with(path, LedgerSync::Full)
    }

    /// [`Store::open`], with the signing ledger committed as `ledger_sync` says.
    pub fn open_with(path: &Path, ledger_sync: LedgerSync) -> Result<Self, StoreError> {
        let mut db = Db::open(path)?;
        db.set_ledger_sync(ledger_sync);
        let (tx, mut rx) = mpsc::channel::<Job>(WRITE_QUEUE);
        std::thread::Builder::new()
            .name("sibyl-store-writer".into())
            .spawn(move || {
                crate::priority::enter_background();
                while let Some(job) = rx.blocking_recv() {
                    job(&mut db);
                }
                if let Err(e) = db.checkpoint() {
                    tracing::warn!(error = %e, "final WAL checkpoint failed");
                }
            })
            .map_err(|e| StoreError::Unsupported {
                path: path.to_owned(),
                what: format!("cannot start the writer thread: {e}"),
            })?;
        Ok(Self {
            writer: StoreHandle { tx },
            readers: Readers::new(path),
            path: path.to_owned(),
            ledger_sync,
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A write connection of its own for the signing ledger, committing as
    /// the store was opened to ([`LedgerSync`]). The round driver records
    /// signings on it in its own thread: no hand-off to the writer thread and
    /// back on the round's critical path. Its exclusive transaction
    /// serializes with the writer's (SQLite's write lock, 5 s busy timeout).
    pub fn signing_ledger(&self) -> Result<Db, StoreError> {
        let mut db = Db::open(&self.path)?;
        db.set_ledger_sync(self.ledger_sync);
        Ok(db)
    }
}
