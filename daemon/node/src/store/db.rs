//! Synchronous operations on one connection. The writer thread owns one `Db`
//! opened read-write; readers each hold one opened read-only.

use super::{LedgerSync, SigningDigest, SigningRecord, StoreError, schema};
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use serde::Serialize;
use sibyl_aggregator::{FeedId, LeafStatus, Price, ReportLeaf, Round, SignedReport, TimestampMs};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

/// One feed's value in one signed report: a point of the history.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Point {
    pub feed_id: FeedId,
    pub round: Round,
    /// The report's timestamp.
    pub timestamp_ms: TimestampMs,
    #[serde(with = "as_string")]
    pub price: Price,
    #[serde(with = "as_string")]
    pub confidence: u128,
    pub num_observations: u16,
    pub observed_at_ms: TimestampMs,
    /// 0 = unknown.
    #[serde(with = "as_string")]
    pub bid: Price,
    /// 0 = unknown.
    #[serde(with = "as_string")]
    pub ask: Price,
    pub venues: u16,
    pub status: LeafStatus,
    pub flags: u16,
    #[serde(with = "as_string")]
    pub ema: Price,
    #[serde(with = "as_string")]
    pub ema_confidence: u128,
    /// Annualised, 1e9 = 100 %; a fixed-point value, so text like the others.
    #[serde(with = "as_string")]
    pub volatility: u64,
}

impl Point {
    /// The point of `leaf` in a report of `round` stamped `timestamp_ms`.
    pub fn of_leaf(leaf: &ReportLeaf, round: Round, timestamp_ms: TimestampMs) -> Self {
        Self {
            feed_id: leaf.feed_id.clone(),
            round,
            timestamp_ms,
            price: leaf.price,
            confidence: leaf.confidence,
            num_observations: leaf.num_observations,
            observed_at_ms: leaf.observed_at_ms,
            bid: leaf.bid,
            ask: leaf.ask,
            venues: leaf.venues,
            status: leaf.status,
            flags: leaf.flags,
            ema: leaf.ema,
            ema_confidence: leaf.ema_confidence,
            volatility: leaf.volatility,
        }
    }

    /// The leaf this point stores (its feed's last value for the next leaf).
    pub fn leaf(&self) -> ReportLeaf {
        ReportLeaf {
            feed_id: self.feed_id.clone(),
            price: self.price,
            confidence: self.confidence,
            num_observations: self.num_observations,
            observed_at_ms: self.observed_at_ms,
            bid: self.bid,
            ask: self.ask,
            venues: self.venues,
            status: self.status,
            flags: self.flags,
            ema: self.ema,
            ema_confidence: self.ema_confidence,
            volatility: self.volatility,
        }
    }
}

/// One time bucket of a feed's history.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Candle {
    /// Start of the bucket (a multiple of the interval since the epoch).
    pub start_ms: TimestampMs,
    #[serde(with = "as_string")]
    pub open: Price,
    #[serde(with = "as_string")]
    pub high: Price,
    #[serde(with = "as_string")]
    pub low: Price,
    #[serde(with = "as_string")]
    pub close: Price,
    pub count: u64,
}

/// Where the next page of raw history starts: after this (timestamp, round).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HistoryCursor {
    pub timestamp_ms: TimestampMs,
    pub round: Round,
}

/// Retention progress of one feed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FeedRetention {
    pub feed_key: i64,
    /// Points before this have been thinned already.
    pub downsampled_until_ms: Option<u64>,
    /// The feed's oldest point.
    pub oldest_ms: Option<u64>,
}

/// One margin-engine input with its events, for [`Db::append_margin_steps`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MarginStep {
    pub input_seq: u64,
    pub at_ms: u64,
    /// The input as JSON.
    pub input: String,
    pub round: Option<Round>,
    /// `(event seq, kind, JSON)`.
    pub events: Vec<(u64, String, String)>,
}

/// One stored margin event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MarginEventRow {
    pub seq: u64,
    pub round: Option<Round>,
    pub kind: String,
    /// The event as JSON.
    pub body: String,
}

/// Integers wider than 53 bits go over JSON as strings so that JavaScript
/// clients do not round them.
mod as_string {
    pub fn serialize<T: std::fmt::Display, S: serde::Serializer>(
        v: &T,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.collect_str(v)
    }
}

/// Reports in round order from [`Db::report_run`].
#[derive(Debug)]
pub struct ReportRun {
    pub reports: Vec<SignedReport>,
    /// The first round not covered by `reports` or a settled gap after them.
    pub next: Round,
}

mod interchange;
pub use interchange::{
    ImportSummary, LEDGER_FORMAT, LEDGER_VERSION, LedgerImportError, LedgerInterchange,
    RETIRED_ROUND, SignedRound,
};

pub struct Db {
    conn: Connection,
    path: PathBuf,
    feed_keys: HashMap<FeedId, i64>,
    ledger_sync: LedgerSync,
}

fn i64_of(v: u64, what: &str) -> Result<i64, StoreError> {
    i64::try_from(v).map_err(|_| StoreError::OutOfRange(format!("{what} {v} exceeds 2^63-1")))
}

fn u64_of(v: i64, what: &str) -> Result<u64, StoreError> {
    u64::try_from(v).map_err(|_| StoreError::Corrupt(format!("negative {what} {v}")))
}

fn i128_of(b: &[u8], what: &str) -> Result<i128, StoreError> {
    let a: [u8; 16] = b
        .try_into()
        .map_err(|_| StoreError::Corrupt(format!("{what} is {} bytes, expected 16", b.len())))?;
    Ok(i128::from_be_bytes(a))
}

fn u128_of(b: &[u8], what: &str) -> Result<u128, StoreError> {
    let a: [u8; 16] = b
        .try_into()
        .map_err(|_| StoreError::Corrupt(format!("{what} is {} bytes, expected 16", b.len())))?;
    Ok(u128::from_be_bytes(a))
}

fn feed_of(s: String) -> Result<FeedId, StoreError> {
    FeedId::new(s).map_err(|e| StoreError::Corrupt(format!("stored feed id: {e}")))
}

impl Db {
    /// Open read-write, migrating the schema (the writer's connection).
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        Ok(Self {
            conn: schema::open_rw(path)?,
            path: path.to_owned(),
            feed_keys: HashMap::new(),
            ledger_sync: LedgerSync::Full,
        })
    }

    /// Open read-only (a reader's connection).
    pub fn open_read_only(path: &Path) -> Result<Self, StoreError> {
        Ok(Self {
            conn: schema::open_ro(path)?,
            path: path.to_owned(),
            feed_keys: HashMap::new(),
            ledger_sync: LedgerSync::Full,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Caps the database at its current size, as a full disk would (tests).
    #[cfg(test)]
    pub(crate) fn cap_size_here(&mut self) -> Result<(), StoreError> {
        let pages: i64 = self.conn.query_row("PRAGMA page_count", [], |r| r.get(0))?;
        self.conn
            .query_row(&format!("PRAGMA max_page_count = {pages}"), [], |_| Ok(()))?;
        Ok(())
    }

    /// Lifts [`Db::cap_size_here`]'s cap, as freeing disk space would (tests).
    #[cfg(test)]
    pub(crate) fn lift_size_cap(&mut self) -> Result<(), StoreError> {
        self.conn
            .query_row("PRAGMA max_page_count = 1073741823", [], |_| Ok(()))?;
        Ok(())
    }

    /// How [`Db::record_signing`] commits; [`LedgerSync::Full`] unless set.
    pub fn set_ledger_sync(&mut self, sync: LedgerSync) {
        self.ledger_sync = sync;
    }

    fn feed_key(&mut self, feed: &FeedId) -> Result<Option<i64>, StoreError> {
        if let Some(k) = self.feed_keys.get(feed) {
            return Ok(Some(*k));
        }
        let k: Option<i64> = self
            .conn
            .prepare_cached("SELECT feed_key FROM feeds WHERE feed_id = ?1")?
            .query_row([feed.as_str()], |r| r.get(0))
            .optional()?;
        if let Some(k) = k {
            self.feed_keys.insert(feed.clone(), k);
        }
        Ok(k)
    }

    fn feed_key_or_insert(
        tx: &rusqlite::Transaction<'_>,
        cache: &mut HashMap<FeedId, i64>,
        feed: &FeedId,
    ) -> Result<i64, StoreError> {
        if let Some(k) = cache.get(feed) {
            return Ok(*k);
        }
        tx.prepare_cached("INSERT OR IGNORE INTO feeds (feed_id) VALUES (?1)")?
            .execute([feed.as_str()])?;
        let k: i64 = tx
            .prepare_cached("SELECT feed_key FROM feeds WHERE feed_id = ?1")?
            .query_row([feed.as_str()], |r| r.get(0))?;
        cache.insert(feed.clone(), k);
        Ok(k)
    }

    // ---- writes -------------------------------------------------------------

    /// Store a signed report and its leaves as history points, in one
    /// transaction. Storing the same report again is a no-op (returns false);
    /// a different report for a round already stored is refused.
    ///
    /// Committed with `synchronous = NORMAL`: in WAL mode the commit reaches
    /// the operating system (it survives `kill -9` of the node) but is not
    /// fsynced by itself; the next fsynced commit (a margin command, a
    /// `LedgerSync::Full` ledger) or WAL checkpoint makes it durable against
    /// power loss too. A report lost to a power cut is signed and held by
    /// the whole committee and comes back by catch-up. This keeps an fsync
    /// per round off the disk.
    pub fn insert_report(&mut self, report: &SignedReport) -> Result<bool, StoreError> {
        self.with_synchronous("NORMAL", |db| db.insert_report_tx(report))
    }

    /// Runs `f` with `PRAGMA synchronous = level` (whatever an earlier write
    /// left), then back to the connection's `FULL`.
    fn with_synchronous<T>(
        &mut self,
        level: &str,
        f: impl FnOnce(&mut Self) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        self.conn
            .execute_batch(&format!("PRAGMA synchronous = {level}"))?;
        let result = f(self);
        self.conn.execute_batch("PRAGMA synchronous = FULL")?;
        result
    }

    fn insert_report_tx(&mut self, report: &SignedReport) -> Result<bool, StoreError> {
        let round = i64_of(report.header.round, "round")?;
        let ts = i64_of(report.header.timestamp_ms, "timestamp")?;
        let body = serde_json::to_vec(report)
            .map_err(|e| StoreError::OutOfRange(format!("cannot encode report: {e}")))?;
        // Keep the cache consistent if the transaction rolls back.
        let mut cache = self.feed_keys.clone();
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let existing: Option<Vec<u8>> = tx
            .prepare_cached("SELECT body FROM reports WHERE round = ?1")?
            .query_row([round], |r| r.get(0))
            .optional()?;
        if let Some(existing) = existing {
            let same = serde_json::from_slice::<SignedReport>(&existing)
                .map(|r| r == *report)
                .unwrap_or(false);
            return if same {
                Ok(false)
            } else {
                Err(StoreError::Corrupt(format!(
                    "a different signed report for round {} is already stored",
                    report.header.round
                )))
            };
        }
        tx.prepare_cached(
            "INSERT INTO reports (round, version, config_digest, timestamp_ms, merkle_root, encoding, body)
             VALUES (?1, ?2, ?3, ?4, ?5, 'json', ?6)",
        )?
        .execute(params![
            round,
            report.header.version,
            &report.header.config_digest.0[..],
            ts,
            &report.header.merkle_root[..],
            body
        ])?;
        for (suite, sig) in &report.signatures {
            let suite = serde_json::to_value(suite)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_else(|| format!("{suite:?}"));
            tx.prepare_cached(
                "INSERT INTO report_signatures (round, suite, signature) VALUES (?1, ?2, ?3)",
            )?
            .execute(params![round, suite, &sig.0])?;
        }
        for leaf in &report.leaves {
            let key = Self::feed_key_or_insert(&tx, &mut cache, &leaf.feed_id)?;
            insert_point(&tx, key, round, ts, leaf)?;
        }
        tx.commit()?;
        self.feed_keys = cache;
        Ok(true)
    }

    /// Bulk-load history points without reports (benchmarks, imports). One
    /// transaction for the whole slice.
    pub fn insert_points(&mut self, points: &[Point]) -> Result<(), StoreError> {
        let mut cache = self.feed_keys.clone();
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        for p in points {
            let key = Self::feed_key_or_insert(&tx, &mut cache, &p.feed_id)?;
            let leaf = p.leaf();
            insert_point(
                &tx,
                key,
                i64_of(p.round, "round")?,
                i64_of(p.timestamp_ms, "timestamp")?,
                &leaf,
            )?;
        }
        tx.commit()?;
        self.feed_keys = cache;
        Ok(())
    }

    /// Record that this member is about to sign `digest` in `round`,
    /// committed as [`Db::set_ledger_sync`] says (fsynced by default;
    /// the node's default `LedgerSync::Normal` is not).
    ///
    /// One exclusive transaction checks and writes the ledger, so two callers
    /// (or a restarted process) can never both pass the check. Refuses with
    /// [`StoreError::NotSafeToSign`] if a different digest was recorded for
    /// this round or any round at or after it was recorded; the same digest for
    /// the same round is accepted again (idempotent).
    pub fn record_signing(
        &mut self,
        round: Round,
        digest: &SigningDigest,
        now_ms: u64,
    ) -> Result<SigningRecord, StoreError> {
        let r = i64_of(round, "round")?;
        // See `LedgerSync`: NORMAL survives kill -9 (the observation record
        // covers power loss); FULL also fsyncs.
        let level = match self.ledger_sync {
            LedgerSync::Normal => "NORMAL",
            LedgerSync::Full => "FULL",
        };
        self.with_synchronous(level, |db| db.record_signing_tx(r, round, digest, now_ms))
    }

    fn record_signing_tx(
        &mut self,
        r: i64,
        round: Round,
        digest: &SigningDigest,
        now_ms: u64,
    ) -> Result<SigningRecord, StoreError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Exclusive)?;
        let last: Option<(i64, Vec<u8>)> = tx
            .prepare_cached(
                "SELECT round, digest FROM signing_ledger WHERE round >= ?1 ORDER BY round DESC LIMIT 1",
            )?
            .query_row([r], |row| Ok((row.get(0)?, row.get(1)?)))
            .optional()?;
        if let Some((last_round, last_digest)) = last {
            let last_digest: SigningDigest = last_digest.as_slice().try_into().map_err(|_| {
                StoreError::Corrupt(format!("signing ledger digest for round {last_round}"))
            })?;
            if last_round == r && last_digest == *digest {
                return Ok(SigningRecord::AlreadyRecorded);
            }
            return Err(StoreError::NotSafeToSign {
                round,
                recorded_round: u64_of(last_round, "round")?,
                recorded_digest: last_digest,
            });
        }
        tx.prepare_cached(
            "INSERT INTO signing_ledger (round, digest, recorded_at_ms) VALUES (?1, ?2, ?3)",
        )?
        .execute(params![r, &digest[..], i64_of(now_ms, "timestamp")?])?;
        tx.commit()?;
        Ok(SigningRecord::Recorded)
    }

    /// Accepted margin-engine inputs (JSON, each at its `input_seq` in the
    /// `margin_commands` table, which holds every input: prices and
    /// commands) and the events each produced (`(seq, kind, JSON)`), in one
    /// transaction: one fsync for a batch. Sequence numbers are the
    /// engine's own, so a repeat is refused by the primary key instead of
    /// silently stored. This and [`Db::append_margin_report`] are the only
    /// writers of the margin log.
    pub fn append_margin_steps(&mut self, steps: &[MarginStep]) -> Result<(), StoreError> {
        self.append_margin_report(steps, &[])
    }

    /// A report's margin steps (its prices, then its ordered commands) and
    /// the command marks they move (`(origin, nonce)`: the highest nonce
    /// taken per origin), in one transaction: a crash keeps all or none,
    /// so a restart never applies half a report's commands.
    pub fn append_margin_report(
        &mut self,
        steps: &[MarginStep],
        marks: &[(u16, u64)],
    ) -> Result<(), StoreError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        for (origin, nonce) in marks {
            tx.prepare_cached(
                "INSERT INTO margin_marks (origin, nonce) VALUES (?1, ?2)
                 ON CONFLICT(origin) DO UPDATE SET nonce = max(nonce, excluded.nonce)",
            )?
            .execute(params![origin, i64_of(*nonce, "command nonce")?])?;
        }
        for st in steps {
            let round = st.round.map(|r| i64_of(r, "round")).transpose()?;
            tx.prepare_cached(
                "INSERT INTO margin_commands (seq, received_ms, body) VALUES (?1, ?2, ?3)",
            )?
            .execute(params![
                i64_of(st.input_seq, "seq")?,
                i64_of(st.at_ms, "timestamp")?,
                st.input
            ])?;
            for (seq, kind, body) in &st.events {
                tx.prepare_cached(
                    "INSERT INTO margin_events (seq, round, kind, body) VALUES (?1, ?2, ?3, ?4)",
                )?
                .execute(params![i64_of(*seq, "seq")?, round, kind, body])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Delete up to `limit` points older than `before_ms`; returns how many.
    pub fn prune_points(&mut self, before_ms: u64, limit: usize) -> Result<usize, StoreError> {
        let n = self
            .conn
            .prepare_cached(
                "DELETE FROM points WHERE (feed_key, ts_ms, round) IN (
                   SELECT feed_key, ts_ms, round FROM points WHERE ts_ms < ?1 LIMIT ?2)",
            )?
            .execute(params![i64_of(before_ms, "timestamp")?, limit as i64])?;
        Ok(n)
    }

    /// Thin one feed's points in `[from_ms, to_ms)` to the last point of each
    /// `bucket_ms` bucket, and remember that the range is done. `from_ms` and
    /// `to_ms` must be bucket-aligned. Returns the number of points deleted.
    pub fn downsample_range(
        &mut self,
        feed_key: i64,
        from_ms: u64,
        to_ms: u64,
        bucket_ms: u64,
    ) -> Result<usize, StoreError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let n = tx
            .prepare_cached(
                "DELETE FROM points WHERE feed_key = ?1 AND ts_ms >= ?2 AND ts_ms < ?3
                 AND ts_ms NOT IN (
                   SELECT max(ts_ms) FROM points
                   WHERE feed_key = ?1 AND ts_ms >= ?2 AND ts_ms < ?3
                   GROUP BY ts_ms / ?4)",
            )?
            .execute(params![
                feed_key,
                i64_of(from_ms, "timestamp")?,
                i64_of(to_ms, "timestamp")?,
                i64_of(bucket_ms.max(1), "interval")?
            ])?;
        tx.prepare_cached(
            "INSERT INTO retention_progress (feed_key, downsampled_until_ms) VALUES (?1, ?2)
             ON CONFLICT (feed_key) DO UPDATE SET downsampled_until_ms = excluded.downsampled_until_ms",
        )?
        .execute(params![feed_key, i64_of(to_ms, "timestamp")?])?;
        tx.commit()?;
        Ok(n)
    }

    /// Timestamp of a feed's first point at or after `from_ms`, if any.
    pub fn next_point_ms(&self, feed_key: i64, from_ms: u64) -> Result<Option<u64>, StoreError> {
        let ts: Option<i64> = self
            .conn
            .prepare_cached(
                "SELECT ts_ms FROM points WHERE feed_key = ?1 AND ts_ms >= ?2 ORDER BY ts_ms LIMIT 1",
            )?
            .query_row(params![feed_key, i64_of(from_ms, "timestamp")?], |r| r.get(0))
            .optional()?;
        ts.map(|t| u64_of(t, "timestamp")).transpose()
    }

    /// Per feed: where downsampling got to and its oldest point.
    pub fn retention_state(&self) -> Result<Vec<FeedRetention>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT f.feed_key, r.downsampled_until_ms,
                    (SELECT min(ts_ms) FROM points p WHERE p.feed_key = f.feed_key)
             FROM feeds f LEFT JOIN retention_progress r ON r.feed_key = f.feed_key
             ORDER BY f.feed_key",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, Option<i64>>(1)?,
                r.get::<_, Option<i64>>(2)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (k, until, oldest) = row?;
            out.push(FeedRetention {
                feed_key: k,
                downsampled_until_ms: until.map(|v| u64_of(v, "timestamp")).transpose()?,
                oldest_ms: oldest.map(|v| u64_of(v, "timestamp")).transpose()?,
            });
        }
        Ok(out)
    }

    /// Fold the WAL back into the main file (cheap when little changed).
    pub fn checkpoint(&self) -> Result<(), StoreError> {
        self.conn
            .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))?;
        Ok(())
    }

    // ---- reads --------------------------------------------------------------

    /// The highest round recorded in the signing ledger and its digest.
    pub fn last_signed(&self) -> Result<Option<(Round, SigningDigest)>, StoreError> {
        let row: Option<(i64, Vec<u8>)> = self
            .conn
            .prepare_cached("SELECT round, digest FROM signing_ledger ORDER BY round DESC LIMIT 1")?
            .query_row([], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?;
        row.map(|(r, d)| {
            let d: SigningDigest = d
                .as_slice()
                .try_into()
                .map_err(|_| StoreError::Corrupt(format!("signing ledger digest for round {r}")))?;
            Ok((u64_of(r, "round")?, d))
        })
        .transpose()
    }

    /// Feed ids that have any history, in order.
    pub fn feed_ids(&self) -> Result<Vec<FeedId>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT feed_id FROM feeds ORDER BY feed_id")?;
        let ids = stmt.query_map([], |r| r.get::<_, String>(0))?;
        ids.map(|s| feed_of(s?)).collect()
    }

    /// Whether the store has ever seen `feed`.
    pub fn has_feed(&mut self, feed: &FeedId) -> Result<bool, StoreError> {
        Ok(self.feed_key(feed)?.is_some())
    }

    /// The newest point of a feed, if it has any.
    pub fn latest(&mut self, feed: &FeedId) -> Result<Option<Point>, StoreError> {
        let Some(key) = self.feed_key(feed)? else {
            return Ok(None);
        };
        let mut stmt = self.conn.prepare_cached(
            "SELECT ts_ms, round, price, confidence, num_observations, observed_at_ms,
                    bid, ask, venues, status, flags, ema, ema_confidence, volatility
             FROM points WHERE feed_key = ?1 ORDER BY ts_ms DESC, round DESC LIMIT 1",
        )?;
        let mut rows = stmt.query([key])?;
        match rows.next()? {
            Some(row) => Ok(Some(point_of(feed, row)?)),
            None => Ok(None),
        }
    }

    /// The newest point of every feed.
    pub fn latest_all(&mut self) -> Result<Vec<Point>, StoreError> {
        let mut out = Vec::new();
        for feed in self.feed_ids()? {
            if let Some(p) = self.latest(&feed)? {
                out.push(p);
            }
        }
        Ok(out)
    }

    pub fn report(&self, round: Round) -> Result<Option<SignedReport>, StoreError> {
        let body: Option<Vec<u8>> = self
            .conn
            .prepare_cached("SELECT body FROM reports WHERE round = ?1")?
            .query_row([i64_of(round, "round")?], |r| r.get(0))
            .optional()?;
        body.map(|b| decode_report(round, &b)).transpose()
    }

    /// The newest stored report, if any.
    pub fn latest_report(&self) -> Result<Option<SignedReport>, StoreError> {
        let row: Option<(i64, Vec<u8>)> = self
            .conn
            .prepare_cached("SELECT round, body FROM reports ORDER BY round DESC LIMIT 1")?
            .query_row([], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?;
        row.map(|(r, b)| decode_report(u64_of(r, "round")?, &b))
            .transpose()
    }

    /// Up to `limit` reports with round > `after`, oldest first (catch-up).
    pub fn reports_after(
        &self,
        after: Round,
        limit: usize,
    ) -> Result<Vec<SignedReport>, StoreError> {
        // Rounds above i64::MAX cannot be stored, so nothing is after them.
        let Ok(after) = i64::try_from(after) else {
            return Ok(Vec::new());
        };
        let mut stmt = self.conn.prepare_cached(
            "SELECT round, body FROM reports WHERE round > ?1 ORDER BY round LIMIT ?2",
        )?;
        let rows = stmt.query_map(params![after, limit as i64], |r| {
            Ok((r.get::<_, i64>(0)?, r.get::<_, Vec<u8>>(1)?))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (r, b) = row?;
            out.push(decode_report(u64_of(r, "round")?, &b)?);
        }
        Ok(out)
    }

    /// Up to `limit` reports with `from <= round < end`, oldest first
    /// (catch-up; `end = Round::MAX` for "to the newest").
    pub fn reports_in(
        &self,
        from: Round,
        end: Round,
        limit: usize,
    ) -> Result<Vec<SignedReport>, StoreError> {
        let (Ok(from), end) = (i64::try_from(from), i64::try_from(end).unwrap_or(i64::MAX)) else {
            return Ok(Vec::new());
        };
        let mut stmt = self.conn.prepare_cached(
            "SELECT round, body FROM reports WHERE round >= ?1 AND round < ?2 ORDER BY round LIMIT ?3",
        )?;
        let rows = stmt.query_map(params![from, end, limit as i64], |r| {
            Ok((r.get::<_, i64>(0)?, r.get::<_, Vec<u8>>(1)?))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (r, b) = row?;
            out.push(decode_report(u64_of(r, "round")?, &b)?);
        }
        Ok(out)
    }

    /// The newest stored report's round.
    pub fn newest_round(&self) -> Result<Option<Round>, StoreError> {
        let r: Option<i64> = self
            .conn
            .prepare_cached("SELECT MAX(round) FROM reports")?
            .query_row([], |r| r.get(0))?;
        r.map(|r| u64_of(r, "round")).transpose()
    }

    /// Round of the oldest stored report.
    pub fn oldest_round(&self) -> Result<Option<Round>, StoreError> {
        let r: Option<i64> = self
            .conn
            .prepare_cached("SELECT MIN(round) FROM reports")?
            .query_row([], |r| r.get(0))?;
        r.map(|r| u64_of(r, "round")).transpose()
    }

    /// Rounds of the stored reports at or above `from`, ascending.
    pub fn stored_rounds_from(&self, from: Round) -> Result<Vec<Round>, StoreError> {
        let Ok(from) = i64::try_from(from) else {
            return Ok(Vec::new());
        };
        let mut stmt = self
            .conn
            .prepare_cached("SELECT round FROM reports WHERE round >= ?1 ORDER BY round")?;
        let rows = stmt.query_map([from], |r| r.get::<_, i64>(0))?;
        let mut out = Vec::new();
        for row in rows {
            out.push(u64_of(row?, "round")?);
        }
        Ok(out)
    }

    /// Records that the rounds `from..end` have no signed report (catch-up
    /// settled them: see docs/NODE.md, "Catch-up").
    pub fn insert_report_gap(&mut self, from: Round, end: Round) -> Result<(), StoreError> {
        if end <= from {
            return Ok(());
        }
        self.conn
            .prepare_cached(
                "INSERT INTO report_gaps (from_round, end_round) VALUES (?1, ?2)
                 ON CONFLICT(from_round) DO UPDATE SET end_round = MAX(end_round, excluded.end_round)",
            )?
            .execute(params![i64_of(from, "round")?, i64_of(end, "round")?])?;
        Ok(())
    }

    /// The settled report gaps `(from, end)` that reach past `round`, by start.
    pub fn report_gaps_from(&self, round: Round) -> Result<Vec<(Round, Round)>, StoreError> {
        let round = i64::try_from(round).unwrap_or(i64::MAX);
        let mut stmt = self.conn.prepare_cached(
            "SELECT from_round, end_round FROM report_gaps WHERE end_round > ?1 ORDER BY from_round",
        )?;
        let rows = stmt.query_map([round], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?)))?;
        let mut out = Vec::new();
        for row in rows {
            let (a, b) = row?;
            out.push((u64_of(a, "round")?, u64_of(b, "round")?));
        }
        Ok(out)
    }

    /// The end of the settled gap holding `round`, if one does.
    fn gap_end_at(&self, round: i64) -> Result<Option<i64>, StoreError> {
        Ok(self
            .conn
            .prepare_cached(
                "SELECT MAX(end_round) FROM report_gaps WHERE from_round <= ?1 AND end_round > ?1",
            )?
            .query_row([round], |r| r.get::<_, Option<i64>>(0))?)
    }

    /// The first round that is neither stored nor in a settled gap: every
    /// round before it is complete here.
    pub fn first_missing_round(&self) -> Result<Round, StoreError> {
        // The first missing round is 0, the round after a report, or the end
        // of a gap; take the smallest such candidate that is itself missing.
        let r: Option<i64> = self
            .conn
            .prepare_cached(
                "SELECT MIN(c) FROM (SELECT 0 AS c UNION SELECT round + 1 FROM reports
                                     UNION SELECT end_round FROM report_gaps)
                 WHERE NOT EXISTS (SELECT 1 FROM reports WHERE round = c)
                   AND NOT EXISTS (SELECT 1 FROM report_gaps WHERE from_round <= c AND end_round > c)",
            )?
            .query_row([], |r| r.get(0))?;
        u64_of(r.unwrap_or(0), "round")
    }

    /// The reports from round `from` on, in round order, as far as the
    /// history here is complete: a round that is neither stored nor in a
    /// settled gap stops the run. At most `limit` reports; `next` is the
    /// round to continue from.
    pub fn report_run(&self, from: Round, limit: usize) -> Result<ReportRun, StoreError> {
        let mut next = i64_of(from, "round")?;
        let mut reports = Vec::new();
        let candidates = self.reports_in(from, Round::MAX, limit)?;
        for report in candidates {
            let round = i64_of(report.header.round, "round")?;
            // Skip settled gaps up to this report.
            while next < round {
                match self.gap_end_at(next)? {
                    Some(end) => next = end.min(round),
                    None => break,
                }
            }
            if next != round {
                break;
            }
            reports.push(report);
            next = round + 1;
        }
        if reports.len() < limit {
            // Past the last report: settled gaps beyond it.
            while let Some(end) = self.gap_end_at(next)? {
                if end <= next {
                    break;
                }
                next = end;
            }
        }
        Ok(ReportRun {
            reports,
            next: u64_of(next, "round")?,
        })
    }

    /// Raw points of a feed in `[from_ms, to_ms)`, oldest first, at most
    /// `limit`, starting after `cursor`. Returns the cursor of the next page
    /// when there is more.
    pub fn history(
        &mut self,
        feed: &FeedId,
        from_ms: u64,
        to_ms: u64,
        after: Option<HistoryCursor>,
        limit: usize,
    ) -> Result<(Vec<Point>, Option<HistoryCursor>), StoreError> {
        let Some(key) = self.feed_key(feed)? else {
            return Ok((Vec::new(), None));
        };
        let (cur_ts, cur_round) = match after {
            Some(c) => (
                i64_of(c.timestamp_ms, "cursor")?,
                i64_of(c.round, "cursor")?,
            ),
            None => (i64::MIN, i64::MIN),
        };
        let mut stmt = self.conn.prepare_cached(
            "SELECT ts_ms, round, price, confidence, num_observations, observed_at_ms,
                    bid, ask, venues, status, flags, ema, ema_confidence, volatility
             FROM points WHERE feed_key = ?1 AND ts_ms >= ?2 AND ts_ms < ?3
               AND (ts_ms, round) > (?4, ?5)
             ORDER BY ts_ms, round LIMIT ?6",
        )?;
        let mut rows = stmt.query(params![
            key,
            i64_of(from_ms, "from")?,
            i64_of(to_ms.min(i64::MAX as u64), "to")?,
            cur_ts,
            cur_round,
            limit as i64 + 1
        ])?;
        let mut out = Vec::with_capacity(limit.min(4096));
        let mut more = false;
        while let Some(row) = rows.next()? {
            if out.len() == limit {
                more = true;
                break;
            }
            out.push(point_of(feed, row)?);
        }
        let next = if more {
            out.last().map(|p| HistoryCursor {
                timestamp_ms: p.timestamp_ms,
                round: p.round,
            })
        } else {
            None
        };
        Ok((out, next))
    }

    /// Candles of a feed over `[from_ms, to_ms)` in buckets of `interval_ms`,
    /// at most `limit` of them. Returns the start of the next page when the
    /// range held more.
    pub fn candles(
        &mut self,
        feed: &FeedId,
        from_ms: u64,
        to_ms: u64,
        interval_ms: u64,
        limit: usize,
    ) -> Result<(Vec<Candle>, Option<u64>), StoreError> {
        let interval_ms = interval_ms.max(1);
        let Some(key) = self.feed_key(feed)? else {
            return Ok((Vec::new(), None));
        };
        let mut stmt = self.conn.prepare_cached(
            "SELECT ts_ms, price FROM points
             WHERE feed_key = ?1 AND ts_ms >= ?2 AND ts_ms < ?3 ORDER BY ts_ms, round",
        )?;
        let mut rows = stmt.query(params![
            key,
            i64_of(from_ms, "from")?,
            i64_of(to_ms.min(i64::MAX as u64), "to")?
        ])?;
        let mut out: Vec<Candle> = Vec::new();
        while let Some(row) = rows.next()? {
            let ts = u64_of(row.get::<_, i64>(0)?, "timestamp")?;
            let price = i128_of(blob(row, 1)?, "price")?;
            let start = ts - ts % interval_ms;
            match out.last_mut() {
                Some(c) if c.start_ms == start => {
                    c.high = c.high.max(price);
                    c.low = c.low.min(price);
                    c.close = price;
                    c.count += 1;
                }
                _ => {
                    if out.len() == limit {
                        return Ok((out, Some(start)));
                    }
                    out.push(Candle {
                        start_ms: start,
                        open: price,
                        high: price,
                        low: price,
                        close: price,
                        count: 1,
                    });
                }
            }
        }
        Ok((out, None))
    }

    /// Number of history points (all feeds).
    pub fn point_count(&self) -> Result<u64, StoreError> {
        let n: i64 = self
            .conn
            .query_row("SELECT count(*) FROM points", [], |r| r.get(0))?;
        u64_of(n, "count")
    }

    /// The stored margin inputs with seq >= `from`, oldest first.
    /// The command marks: per origin member, the highest margin command
    /// nonce taken from a signed report.
    pub fn margin_marks(&self) -> Result<BTreeMap<u16, u64>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT origin, nonce FROM margin_marks")?;
        let rows = stmt.query_map([], |r| Ok((r.get::<_, u16>(0)?, r.get::<_, i64>(1)?)))?;
        let mut out = BTreeMap::new();
        for row in rows {
            let (origin, nonce) = row?;
            out.insert(origin, u64::try_from(nonce).unwrap_or(0));
        }
        Ok(out)
    }

    pub fn margin_inputs_from(&self, from: u64) -> Result<Vec<(u64, String)>, StoreError> {
        let from = i64::try_from(from).unwrap_or(i64::MAX);
        let mut stmt = self
            .conn
            .prepare_cached("SELECT seq, body FROM margin_commands WHERE seq >= ?1 ORDER BY seq")?;
        let rows = stmt.query_map([from], |r| {
            Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (seq, body) = row?;
            out.push((u64_of(seq, "seq")?, body));
        }
        Ok(out)
    }

    /// Stores the engine snapshot taken after `inputs` stored inputs
    /// (`margin_state` row `snapshot`; replaces the previous one).
    pub fn put_margin_snapshot(&mut self, inputs: u64, body: &[u8]) -> Result<(), StoreError> {
        let inputs = i64::try_from(inputs).unwrap_or(i64::MAX);
        self.conn.execute(
            "INSERT OR REPLACE INTO margin_state (name, seq, body) VALUES ('snapshot', ?1, ?2)",
            rusqlite::params![inputs, body],
        )?;
        Ok(())
    }

    /// The latest engine snapshot: `(inputs it covers, bytes)`.
    pub fn margin_snapshot(&self) -> Result<Option<(u64, Vec<u8>)>, StoreError> {
        let row = self
            .conn
            .query_row(
                "SELECT seq, body FROM margin_state WHERE name = 'snapshot'",
                [],
                |r| Ok((r.get::<_, i64>(0)?, r.get::<_, Vec<u8>>(1)?)),
            )
            .optional()?;
        row.map(|(seq, body)| Ok((u64_of(seq, "seq")?, body)))
            .transpose()
    }

    /// Every stored margin input `(seq, JSON)`, oldest first.
    pub fn margin_inputs(&self) -> Result<Vec<(u64, String)>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT seq, body FROM margin_commands ORDER BY seq")?;
        let rows = stmt.query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?)))?;
        let mut out = Vec::new();
        for row in rows {
            let (seq, body) = row?;
            out.push((u64_of(seq, "seq")?, body));
        }
        Ok(out)
    }

    /// Up to `limit` margin events with seq >= `from`, oldest first.
    pub fn margin_events_from(
        &self,
        from: u64,
        limit: usize,
    ) -> Result<Vec<MarginEventRow>, StoreError> {
        self.margin_events_query(
            "SELECT seq, round, kind, body FROM margin_events WHERE seq >= ?1 ORDER BY seq LIMIT ?2",
            params![i64_of(from, "seq")?, limit as i64],
        )
    }

    /// Up to `limit` most recent margin events of `kind`, newest first.
    pub fn margin_events_of_kind(
        &self,
        kind: &str,
        limit: usize,
    ) -> Result<Vec<MarginEventRow>, StoreError> {
        self.margin_events_query(
            "SELECT seq, round, kind, body FROM margin_events WHERE kind = ?1 ORDER BY seq DESC LIMIT ?2",
            params![kind, limit as i64],
        )
    }

    /// Runs `sql` (selecting seq, round, kind, body) over margin_events.
    fn margin_events_query(
        &self,
        sql: &str,
        params: impl rusqlite::Params,
    ) -> Result<Vec<MarginEventRow>, StoreError> {
        let mut stmt = self.conn.prepare_cached(sql)?;
        let rows = stmt.query_map(params, |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, Option<i64>>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, String>(3)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (seq, round, kind, body) = row?;
            out.push(MarginEventRow {
                seq: u64_of(seq, "seq")?,
                round: round.map(|r| u64_of(r, "round")).transpose()?,
                kind,
                body,
            });
        }
        Ok(out)
    }

    /// Up to `limit` margin events of `kind` with seq < `before` (all when
    /// `None`), newest first: pages of recent liquidations for the API.
    pub fn margin_events_of_kind_before(
        &self,
        kind: &str,
        before: Option<u64>,
        limit: usize,
    ) -> Result<Vec<MarginEventRow>, StoreError> {
        let before = match before {
            Some(b) => i64_of(b, "seq")?,
            None => i64::MAX,
        };
        self.margin_events_query(
            "SELECT seq, round, kind, body FROM margin_events WHERE kind = ?1 AND seq < ?2 ORDER BY seq DESC LIMIT ?3",
            params![kind, before, limit as i64],
        )
    }

    /// Margin events with seq > `after`, oldest first.
    pub fn margin_events_after(
        &self,
        after: u64,
        limit: usize,
    ) -> Result<Vec<MarginEventRow>, StoreError> {
        self.margin_events_query(
            "SELECT seq, round, kind, body FROM margin_events WHERE seq > ?1 ORDER BY seq LIMIT ?2",
            params![i64_of(after, "seq")?, limit as i64],
        )
    }
}

fn insert_point(
    tx: &rusqlite::Transaction<'_>,
    key: i64,
    round: i64,
    ts: i64,
    leaf: &ReportLeaf,
) -> Result<(), StoreError> {
    tx.prepare_cached(
        "INSERT OR REPLACE INTO points
           (feed_key, ts_ms, round, price, confidence, num_observations, observed_at_ms,
            bid, ask, venues, status, flags, ema, ema_confidence, volatility)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)",
    )?
    .execute(params![
        key,
        ts,
        round,
        &leaf.price.to_be_bytes()[..],
        &leaf.confidence.to_be_bytes()[..],
        leaf.num_observations,
        i64_of(leaf.observed_at_ms, "observation timestamp")?,
        &leaf.bid.to_be_bytes()[..],
        &leaf.ask.to_be_bytes()[..],
        leaf.venues,
        leaf.status.as_u8(),
        leaf.flags,
        &leaf.ema.to_be_bytes()[..],
        &leaf.ema_confidence.to_be_bytes()[..],
        // SQLite integers are i64: the u64 is stored as its bit pattern.
        i64::from_be_bytes(leaf.volatility.to_be_bytes())
    ])?;
    Ok(())
}

fn blob<'r>(row: &'r rusqlite::Row<'_>, idx: usize) -> Result<&'r [u8], StoreError> {
    row.get_ref(idx)?
        .as_blob()
        .map_err(|e| StoreError::Corrupt(format!("column {idx}: {e}")))
}

/// Reads a point from `SELECT ts_ms, round, price, confidence,
/// num_observations, observed_at_ms, bid, ask, venues, status, flags, ema,
/// ema_confidence, volatility`. A row from before schema 3 (NULL quality
/// columns) reads as a leaf without them (schema.rs, migration 3).
fn point_of(feed: &FeedId, row: &rusqlite::Row<'_>) -> Result<Point, StoreError> {
    let price = i128_of(blob(row, 2)?, "price")?;
    let confidence = u128_of(blob(row, 3)?, "confidence")?;
    let opt_blob = |idx: usize| -> Result<Option<&[u8]>, StoreError> {
        row.get_ref(idx)?
            .as_blob_or_null()
            .map_err(|e| StoreError::Corrupt(format!("column {idx}: {e}")))
    };
    let i128_or = |idx: usize, what: &str, default: i128| -> Result<i128, StoreError> {
        opt_blob(idx)?.map_or(Ok(default), |b| i128_of(b, what))
    };
    let status: Option<u8> = row.get(9)?;
    let status = match status {
        None => LeafStatus::Ok,
        Some(v) => LeafStatus::from_u8(v)
            .ok_or_else(|| StoreError::Corrupt(format!("unknown leaf status {v}")))?,
    };
    let volatility: Option<i64> = row.get(13)?;
    Ok(Point {
        feed_id: feed.clone(),
        timestamp_ms: u64_of(row.get(0)?, "timestamp")?,
        round: u64_of(row.get(1)?, "round")?,
        price,
        confidence,
        num_observations: row.get(4)?,
        observed_at_ms: u64_of(row.get(5)?, "observation timestamp")?,
        bid: i128_or(6, "bid", 0)?,
        ask: i128_or(7, "ask", 0)?,
        venues: row.get::<_, Option<u16>>(8)?.unwrap_or(0),
        status,
        flags: row.get::<_, Option<u16>>(10)?.unwrap_or(0),
        ema: i128_or(11, "ema", price)?,
        ema_confidence: opt_blob(12)?.map_or(Ok(confidence), |b| u128_of(b, "ema confidence"))?,
        volatility: volatility.map_or(0, |v| u64::from_be_bytes(v.to_be_bytes())),
    })
}

fn decode_report(round: Round, body: &[u8]) -> Result<SignedReport, StoreError> {
    serde_json::from_slice(body)
        .map_err(|e| StoreError::Corrupt(format!("stored report for round {round}: {e}")))
}
