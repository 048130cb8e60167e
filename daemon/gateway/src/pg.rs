//! The gateway's PostgreSQL store: verified reports, the per-feed history in
//! a time-partitioned `points` table, each feed's newest point, and the
//! [`ReportStore`] reads the API serves from it.
//!
//! Versioned migrations live in `daemon/gateway/migrations/` and are compiled
//! in; [`PgStore::connect`] applies the missing ones in a transaction each,
//! under an advisory lock so gateways sharing a database do not race. Prices
//! (`i128` fixed point) are `numeric`, read and written as text.

use crate::GatewayError;
use futures::future::BoxFuture;
use sibyl_aggregator::{Decode, Encode, FeedId, LeafStatus, Round, SignedReport};
use sibyl_api::store::{CandlePage, HistoryPage};
use sibyl_api::{ApiError, ReportStore};
use sibyl_node::store::{Candle, HistoryCursor, Point};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use tokio_postgres::{Client, NoTls, Row, Statement};

/// Schema migrations, in order; version = position + 1.
const MIGRATIONS: &[&str] = &[
    include_str!("../migrations/0001_init.sql"),
    include_str!("../migrations/0002_candles_1m.sql"),
];

/// The rollup's bucket: candles of a multiple of this read `candles_1m`.
const ROLLUP_MS: u64 = 60_000;

const UNNEST_COLUMNS: &str = "p(feed_key, ts_ms, round, price, confidence, num_observations, observed_at_ms, bid, ask, venues, status, flags, ema, ema_confidence, volatility)";

/// Width of one `points` partition: a week of report time.
pub const PARTITION_MS: i64 = 7 * 86_400_000;

/// Connections kept open; queries are spread over them (each also pipelines).
const POOL: usize = 4;

const POINT_COLUMNS: &str = "ts_ms, round, price::text, confidence::text, num_observations, observed_at_ms, bid::text, ask::text, venues, status, flags, ema::text, ema_confidence::text, volatility";

/// The gateway's store on PostgreSQL.
pub struct PgStore {
    clients: Vec<Client>,
    next: AtomicUsize,
    /// feed id -> feed_key, for feeds seen.
    feed_keys: Mutex<HashMap<FeedId, i32>>,
    /// Partitions known to exist (their week numbers).
    partitions: Mutex<BTreeSet<i64>>,
    /// Each feed's newest point and its report, as this process stored (or
    /// was handed) them: `/latest` and the pull routes read no table. Empty
    /// after a start until the first report; the tables answer meanwhile.
    newest: Mutex<HashMap<FeedId, (Point, Arc<SignedReport>)>>,
    /// The writer's prepared statements, by SQL text (one round trip per
    /// statement instead of two).
    prepared: Mutex<HashMap<String, Statement>>,
}

fn pg_err(what: &str) -> impl Fn(tokio_postgres::Error) -> GatewayError + '_ {
    move |source| GatewayError::Postgres {
        what: what.to_owned(),
        source,
    }
}

fn unavailable(e: impl std::fmt::Display) -> ApiError {
    tracing::warn!(error = %e, "PostgreSQL query failed");
    ApiError::new(
        axum_status_503(),
        "store_unavailable",
        format!("the gateway's database could not answer: {e}"),
    )
}

fn axum_status_503() -> axum::http::StatusCode {
    axum::http::StatusCode::SERVICE_UNAVAILABLE
}

fn i64_of(v: u64, what: &str) -> Result<i64, ApiError> {
    i64::try_from(v).map_err(|_| {
        ApiError::new(
            axum::http::StatusCode::BAD_REQUEST,
            "out_of_range",
            format!("{what} = {v} is above 2^63-1"),
        )
    })
}

fn corrupt(what: impl std::fmt::Display) -> ApiError {
    unavailable(format!("stored data is damaged: {what}"))
}

fn point_of(feed: &FeedId, r: &Row) -> Result<Point, ApiError> {
    let int = |i: usize| -> Result<i128, ApiError> {
        let s: String = r.try_get(i).map_err(unavailable)?;
        s.parse::<i128>()
            .map_err(|_| corrupt(format!("column {i} = {s:?} is not an integer")))
    };
    let u = |i: usize| -> Result<u64, ApiError> {
        let v: i64 = r.try_get(i).map_err(unavailable)?;
        u64::try_from(v).map_err(|_| corrupt(format!("negative column {i}")))
    };
    let small = |i: usize| -> Result<u16, ApiError> {
        let v: i32 = r.try_get(i).map_err(unavailable)?;
        u16::try_from(v).map_err(|_| corrupt(format!("column {i} = {v} out of range")))
    };
    let status: i16 = r.try_get(9).map_err(unavailable)?;
    let status = u8::try_from(status)
        .ok()
        .and_then(LeafStatus::from_u8)
        .ok_or_else(|| corrupt(format!("status {status}")))?;
    let unsigned = |v: i128, what: &str| -> Result<u128, ApiError> {
        u128::try_from(v).map_err(|_| corrupt(format!("negative {what}")))
    };
    Ok(Point {
        feed_id: feed.clone(),
        timestamp_ms: u(0)?,
        round: u(1)?,
        price: int(2)?,
        confidence: unsigned(int(3)?, "confidence")?,
        num_observations: small(4)?,
        observed_at_ms: u(5)?,
        bid: int(6)?,
        ask: int(7)?,
        venues: small(8)?,
        status,
        flags: small(10)?,
        ema: int(11)?,
        ema_confidence: unsigned(int(12)?, "ema_confidence")?,
        volatility: u(13)?,
    })
}

fn candle_of(r: &Row) -> Result<Candle, ApiError> {
    let start: i64 = r.try_get(0).map_err(unavailable)?;
    let price = |i: usize| -> Result<i128, ApiError> {
        let s: String = r.try_get(i).map_err(unavailable)?;
        s.parse()
            .map_err(|_| corrupt(format!("price {s:?} is not an integer")))
    };
    let count: i64 = r.try_get(5).map_err(unavailable)?;
    Ok(Candle {
        start_ms: u64::try_from(start).map_err(|_| corrupt("negative bucket start"))?,
        open: price(1)?,
        high: price(2)?,
        low: price(3)?,
        close: price(4)?,
        count: u64::try_from(count).unwrap_or(0),
    })
}

fn decode_report(body: &[u8]) -> Result<SignedReport, ApiError> {
    SignedReport::from_bytes(body).map_err(|e| corrupt(format!("stored report: {e}")))
}

/// Columns of a batch of points, for one `unnest` insert.
#[derive(Default)]
struct PointColumns {
    feed_key: Vec<i32>,
    ts_ms: Vec<i64>,
    round: Vec<i64>,
    price: Vec<String>,
    confidence: Vec<String>,
    num_observations: Vec<i32>,
    observed_at_ms: Vec<i64>,
    bid: Vec<String>,
    ask: Vec<String>,
    venues: Vec<i32>,
    status: Vec<i16>,
    flags: Vec<i32>,
    ema: Vec<String>,
    ema_confidence: Vec<String>,
    volatility: Vec<i64>,
}

const UNNEST: &str = "SELECT * FROM unnest($1::int4[], $2::int8[], $3::int8[], $4::text[]::numeric[], $5::text[]::numeric[], $6::int4[], $7::int8[], $8::text[]::numeric[], $9::text[]::numeric[], $10::int4[], $11::int2[], $12::int4[], $13::text[]::numeric[], $14::text[]::numeric[], $15::int8[])";

impl PointColumns {
    fn push(&mut self, key: i32, p: &Point) -> Result<(), GatewayError> {
        let big = |v: u64, what: &str| {
            i64::try_from(v).map_err(|_| GatewayError::OutOfRange(format!("{what} = {v}")))
        };
        self.feed_key.push(key);
        self.ts_ms.push(big(p.timestamp_ms, "timestamp")?);
        self.round.push(big(p.round, "round")?);
        self.price.push(p.price.to_string());
        self.confidence.push(p.confidence.to_string());
        self.num_observations.push(i32::from(p.num_observations));
        self.observed_at_ms
            .push(big(p.observed_at_ms, "observed_at_ms")?);
        self.bid.push(p.bid.to_string());
        self.ask.push(p.ask.to_string());
        self.venues.push(i32::from(p.venues));
        self.status.push(i16::from(p.status.as_u8()));
        self.flags.push(i32::from(p.flags));
        self.ema.push(p.ema.to_string());
        self.ema_confidence.push(p.ema_confidence.to_string());
        self.volatility.push(big(p.volatility, "volatility")?);
        Ok(())
    }

    fn params(&self) -> [&(dyn tokio_postgres::types::ToSql + Sync); 15] {
        [
            &self.feed_key,
            &self.ts_ms,
            &self.round,
            &self.price,
            &self.confidence,
            &self.num_observations,
            &self.observed_at_ms,
            &self.bid,
            &self.ask,
            &self.venues,
            &self.status,
            &self.flags,
            &self.ema,
            &self.ema_confidence,
            &self.volatility,
        ]
    }
}

impl PgStore {
    /// Connects (`conn` in libpq's `key=value` or URL form), applies the
    /// missing migrations and loads the feed keys.
    pub async fn connect(conn: &str) -> Result<Self, GatewayError> {
        let mut clients = Vec::with_capacity(POOL);
        for _ in 0..POOL {
            let (client, connection) =
                tokio_postgres::connect(conn, NoTls)
                    .await
                    .map_err(|source| GatewayError::Connect {
                        conn: redact(conn),
                        source,
                    })?;
            tokio::spawn(async move {
                if let Err(e) = connection.await {
                    tracing::warn!(error = %e, "PostgreSQL connection ended");
                }
            });
            clients.push(client);
        }
        let store = Self {
            clients,
            next: AtomicUsize::new(0),
            feed_keys: Mutex::new(HashMap::new()),
            partitions: Mutex::new(BTreeSet::new()),
            newest: Mutex::new(HashMap::new()),
            prepared: Mutex::new(HashMap::new()),
        };
        store.migrate().await?;
        store.load_feeds().await?;
        Ok(store)
    }

    fn client(&self) -> &Client {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.clients.len();
        &self.clients[i]
    }

    /// The writer's connection (the first): partition creation and inserts.
    fn writer(&self) -> &Client {
        &self.clients[0]
    }

    async fn migrate(&self) -> Result<(), GatewayError> {
        let c = self.writer();
        // One gateway migrates at a time (a fixed advisory lock key: "SIBY").
        c.batch_execute(
            "SELECT pg_advisory_lock(1397310041);
             CREATE TABLE IF NOT EXISTS schema_version (version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now());",
        )
        .await
        .map_err(pg_err("create schema_version"))?;
        let result = self.apply_migrations().await;
        c.batch_execute("SELECT pg_advisory_unlock(1397310041)")
            .await
            .map_err(pg_err("release the migration lock"))?;
        result
    }

    async fn apply_migrations(&self) -> Result<(), GatewayError> {
        let c = self.writer();
        let row = c
            .query_one("SELECT coalesce(max(version), 0) FROM schema_version", &[])
            .await
            .map_err(pg_err("read schema_version"))?;
        let have: i32 = row.get(0);
        let known = MIGRATIONS.len() as i32;
        if have > known {
            return Err(GatewayError::SchemaTooNew {
                found: have,
                expected: known,
            });
        }
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(have as usize) {
            let version = i as i32 + 1;
            let body = format!(
                "BEGIN;\n{sql}\nINSERT INTO schema_version (version) VALUES ({version});\nCOMMIT;"
            );
            if let Err(source) = c.batch_execute(&body).await {
                let _ = c.batch_execute("ROLLBACK").await;
                return Err(GatewayError::Migration { version, source });
            }
            tracing::info!(version, "applied gateway schema migration");
        }
        Ok(())
    }

    async fn load_feeds(&self) -> Result<(), GatewayError> {
        let rows = self
            .writer()
            .query("SELECT feed_id, feed_key FROM feeds", &[])
            .await
            .map_err(pg_err("load feeds"))?;
        let mut keys = self.feed_keys.lock().unwrap_or_else(|e| e.into_inner());
        for r in rows {
            let id: String = r.get(0);
            if let Ok(feed) = FeedId::new(id.as_str()) {
                keys.insert(feed, r.get(1));
            }
        }
        Ok(())
    }

    fn cached_key(&self, feed: &FeedId) -> Option<i32> {
        self.feed_keys
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(feed)
            .copied()
    }

    async fn feed_key(&self, feed: &FeedId) -> Result<i32, GatewayError> {
        if let Some(k) = self.cached_key(feed) {
            return Ok(k);
        }
        let row = self
            .writer()
            .query_one(
                "INSERT INTO feeds (feed_id) VALUES ($1)
                 ON CONFLICT (feed_id) DO UPDATE SET feed_id = EXCLUDED.feed_id
                 RETURNING feed_key",
                &[&feed.as_str()],
            )
            .await
            .map_err(pg_err("register a feed"))?;
        let key: i32 = row.get(0);
        self.feed_keys
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(feed.clone(), key);
        Ok(key)
    }

    async fn ensure_partition(&self, ts_ms: i64) -> Result<(), GatewayError> {
        let week = ts_ms.div_euclid(PARTITION_MS);
        if self
            .partitions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(&week)
        {
            return Ok(());
        }
        let (from, to) = (week * PARTITION_MS, (week + 1) * PARTITION_MS);
        let sql = format!(
            "CREATE TABLE IF NOT EXISTS points_w{week} PARTITION OF points FOR VALUES FROM ({from}) TO ({to})"
        );
        if let Err(e) = self.writer().batch_execute(&sql).await {
            // Another gateway on the same database may have made it meanwhile.
            let exists = self
                .writer()
                .query_opt(
                    "SELECT 1 FROM pg_class WHERE relname = $1",
                    &[&format!("points_w{week}")],
                )
                .await
                .map_err(pg_err("look up a partition"))?
                .is_some();
            if !exists {
                return Err(GatewayError::Postgres {
                    what: format!("create partition points_w{week}"),
                    source: e,
                });
            }
        }
        self.partitions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(week);
        Ok(())
    }

    /// Registers `feed` (if new) and returns its key in `points`.
    pub async fn register_feed(&self, feed: &FeedId) -> Result<i32, GatewayError> {
        self.feed_key(feed).await
    }

    /// Creates the `points` partitions covering `[from_ms, to_ms]` (bulk
    /// loads; report inserts create theirs as they go).
    pub async fn ensure_partitions(&self, from_ms: i64, to_ms: i64) -> Result<(), GatewayError> {
        let mut week = from_ms.div_euclid(PARTITION_MS);
        while week * PARTITION_MS <= to_ms {
            self.ensure_partition(week * PARTITION_MS).await?;
            week += 1;
        }
        Ok(())
    }

    /// Rebuilds the one-minute candles of `[from_ms, to_ms)` from `points`
    /// (after a bulk load that wrote `points` directly).
    pub async fn rebuild_candles(&self, from_ms: i64, to_ms: i64) -> Result<(), GatewayError> {
        let (from, to) = (from_ms - from_ms.rem_euclid(60_000), to_ms);
        self.writer()
            .execute(
                "DELETE FROM candles_1m WHERE bucket_ms >= $1 AND bucket_ms < $2",
                &[&from, &to],
            )
            .await
            .map_err(pg_err("clear one-minute candles"))?;
        self.writer()
            .execute(
                "INSERT INTO candles_1m
                 SELECT feed_key, ts_ms - ts_ms % 60000,
                        (array_agg(price ORDER BY ts_ms, round))[1], max(price), min(price),
                        (array_agg(price ORDER BY ts_ms DESC, round DESC))[1], count(*),
                        (array_agg(ts_ms ORDER BY ts_ms, round))[1], (array_agg(round ORDER BY ts_ms, round))[1],
                        (array_agg(ts_ms ORDER BY ts_ms DESC, round DESC))[1], (array_agg(round ORDER BY ts_ms DESC, round DESC))[1]
                 FROM points WHERE ts_ms >= $1 AND ts_ms < $2
                 GROUP BY feed_key, ts_ms - ts_ms % 60000",
                &[&from, &to],
            )
            .await
            .map_err(pg_err("rebuild one-minute candles"))?;
        Ok(())
    }

    /// Candles of `[from, to)` computed from raw points, at most `limit`.
    async fn raw_candles(
        &self,
        key: i32,
        from: u64,
        to: u64,
        interval: i64,
        limit: usize,
    ) -> Result<Vec<Candle>, ApiError> {
        self.candles_query(
            "SELECT ts_ms - ts_ms % $4 AS bucket,
                            (array_agg(price ORDER BY ts_ms, round))[1]::text,
                            max(price)::text, min(price)::text,
                            (array_agg(price ORDER BY ts_ms DESC, round DESC))[1]::text,
                            count(*)
                     FROM points
                     WHERE feed_key = $1 AND ts_ms >= $2 AND ts_ms < $3
                     GROUP BY bucket ORDER BY bucket LIMIT $5",
            key,
            from,
            to,
            interval,
            limit,
        )
        .await
    }

    /// Candles of `[from, to)` (both on minute boundaries) from the
    /// one-minute rollup, at most `limit`.
    async fn rollup_candles(
        &self,
        key: i32,
        from: u64,
        to: u64,
        interval: i64,
        limit: usize,
    ) -> Result<Vec<Candle>, ApiError> {
        self.candles_query(
            "SELECT bucket_ms - bucket_ms % $4 AS bucket,
                            (array_agg(open ORDER BY bucket_ms))[1]::text,
                            max(high)::text, min(low)::text,
                            (array_agg(close ORDER BY bucket_ms DESC))[1]::text,
                            sum(count)::bigint
                     FROM candles_1m
                     WHERE feed_key = $1 AND bucket_ms >= $2 AND bucket_ms < $3
                     GROUP BY bucket ORDER BY bucket LIMIT $5",
            key,
            from,
            to,
            interval,
            limit,
        )
        .await
    }

    /// Runs a candle query (`$1` feed key, `[$2, $3)` times, `$4` interval,
    /// `$5` limit; rows of bucket, open, high, low, close, count).
    async fn candles_query(
        &self,
        sql: &str,
        key: i32,
        from: u64,
        to: u64,
        interval: i64,
        limit: usize,
    ) -> Result<Vec<Candle>, ApiError> {
        let rows = self
            .client()
            .query(
                sql,
                &[
                    &key,
                    &i64_of(from, "from")?,
                    &i64_of(to.min(i64::MAX as u64), "to")?,
                    &interval,
                    &(limit as i64),
                ],
            )
            .await
            .map_err(unavailable)?;
        rows.iter().map(candle_of).collect()
    }

    /// Runs `sql` on the writer's connection (bulk loads, `ANALYZE`).
    pub async fn execute_batch(&self, sql: &str) -> Result<(), GatewayError> {
        self.writer()
            .batch_execute(sql)
            .await
            .map_err(pg_err("run a batch"))
    }

    /// `sql` prepared on the writer's connection, once.
    async fn prepared(&self, sql: &str) -> Result<Statement, GatewayError> {
        if let Some(st) = self
            .prepared
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(sql)
        {
            return Ok(st.clone());
        }
        let st = self
            .writer()
            .prepare(sql)
            .await
            .map_err(pg_err("prepare a statement"))?;
        self.prepared
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(sql.to_owned(), st.clone());
        Ok(st)
    }

    /// Remembers `report` as the newest of each of its feeds it is newer for.
    fn remember(&self, report: &SignedReport) {
        let h = &report.header;
        let shared = Arc::new(report.clone());
        let mut newest = self.newest.lock().unwrap_or_else(|e| e.into_inner());
        for leaf in &report.leaves {
            let newer = newest
                .get(&leaf.feed_id)
                .is_none_or(|(p, _)| (p.timestamp_ms, p.round) < (h.timestamp_ms, h.round));
            if newer {
                newest.insert(
                    leaf.feed_id.clone(),
                    (
                        Point::of_leaf(leaf, h.round, h.timestamp_ms),
                        shared.clone(),
                    ),
                );
            }
        }
    }

    fn cached_report(&self, round: Round) -> Option<SignedReport> {
        let newest = self.newest.lock().unwrap_or_else(|e| e.into_inner());
        newest
            .values()
            .find(|(p, _)| p.round == round)
            .map(|(_, r)| (**r).clone())
    }

    /// Stores a verified report and its points in one transaction. `false`
    /// when a report of that round was stored already (nothing changes).
    pub async fn insert_report(
        &self,
        report: &SignedReport,
        received_at_ms: u64,
    ) -> Result<bool, GatewayError> {
        let stored = self.insert_report_tx(report, received_at_ms).await?;
        self.remember(report);
        Ok(stored)
    }

    async fn insert_report_tx(
        &self,
        report: &SignedReport,
        received_at_ms: u64,
    ) -> Result<bool, GatewayError> {
        let h = &report.header;
        let big = |v: u64, what: &str| {
            i64::try_from(v).map_err(|_| GatewayError::OutOfRange(format!("{what} = {v}")))
        };
        let (round, ts) = (big(h.round, "round")?, big(h.timestamp_ms, "timestamp")?);
        self.ensure_partition(ts).await?;
        let mut cols = PointColumns::default();
        for leaf in &report.leaves {
            let key = self.feed_key(&leaf.feed_id).await?;
            cols.push(key, &Point::of_leaf(leaf, h.round, h.timestamp_ms))?;
        }
        let c = self.writer();
        c.batch_execute("BEGIN")
            .await
            .map_err(pg_err("begin a report"))?;
        let result = async {
            let insert = self
                .prepared(
                    "INSERT INTO reports (round, ts_ms, body, received_at_ms) VALUES ($1, $2, $3, $4)
                     ON CONFLICT (round) DO NOTHING",
                )
                .await?;
            let n = c
                .execute(
                    &insert,
                    &[&round, &ts, &report.to_bytes(), &big(received_at_ms, "received_at")?],
                )
                .await
                .map_err(pg_err("insert a report"))?;
            if n == 0 {
                return Ok(false);
            }
            let params = cols.params();
            let points = self
                .prepared(&format!("INSERT INTO points {UNNEST} ON CONFLICT DO NOTHING"))
                .await?;
            c.execute(&points, &params)
            .await
            .map_err(pg_err("insert points"))?;
            let latest = self
                .prepared(&format!(
                    "INSERT INTO feed_latest {UNNEST}
                     ON CONFLICT (feed_key) DO UPDATE SET
                       ts_ms = EXCLUDED.ts_ms, round = EXCLUDED.round, price = EXCLUDED.price,
                       confidence = EXCLUDED.confidence, num_observations = EXCLUDED.num_observations,
                       observed_at_ms = EXCLUDED.observed_at_ms, bid = EXCLUDED.bid, ask = EXCLUDED.ask,
                       venues = EXCLUDED.venues, status = EXCLUDED.status, flags = EXCLUDED.flags,
                       ema = EXCLUDED.ema, ema_confidence = EXCLUDED.ema_confidence,
                       volatility = EXCLUDED.volatility
                     WHERE (feed_latest.ts_ms, feed_latest.round) < (EXCLUDED.ts_ms, EXCLUDED.round)"
                ))
                .await?;
            c.execute(&latest, &params)
            .await
            .map_err(pg_err("update latest points"))?;
            let rollup = self
                .prepared(&format!(
                    "INSERT INTO candles_1m (feed_key, bucket_ms, open, high, low, close, count, first_ts, first_round, last_ts, last_round)
                     SELECT feed_key, ts_ms - ts_ms % 60000, price, price, price, price, 1, ts_ms, round, ts_ms, round
                     FROM ({UNNEST}) AS {UNNEST_COLUMNS}
                     ON CONFLICT (feed_key, bucket_ms) DO UPDATE SET
                       high = greatest(candles_1m.high, EXCLUDED.high),
                       low = least(candles_1m.low, EXCLUDED.low),
                       count = candles_1m.count + 1,
                       open = CASE WHEN (EXCLUDED.first_ts, EXCLUDED.first_round) < (candles_1m.first_ts, candles_1m.first_round) THEN EXCLUDED.open ELSE candles_1m.open END,
                       first_ts = CASE WHEN (EXCLUDED.first_ts, EXCLUDED.first_round) < (candles_1m.first_ts, candles_1m.first_round) THEN EXCLUDED.first_ts ELSE candles_1m.first_ts END,
                       first_round = CASE WHEN (EXCLUDED.first_ts, EXCLUDED.first_round) < (candles_1m.first_ts, candles_1m.first_round) THEN EXCLUDED.first_round ELSE candles_1m.first_round END,
                       close = CASE WHEN (EXCLUDED.last_ts, EXCLUDED.last_round) > (candles_1m.last_ts, candles_1m.last_round) THEN EXCLUDED.close ELSE candles_1m.close END,
                       last_ts = CASE WHEN (EXCLUDED.last_ts, EXCLUDED.last_round) > (candles_1m.last_ts, candles_1m.last_round) THEN EXCLUDED.last_ts ELSE candles_1m.last_ts END,
                       last_round = CASE WHEN (EXCLUDED.last_ts, EXCLUDED.last_round) > (candles_1m.last_ts, candles_1m.last_round) THEN EXCLUDED.last_round ELSE candles_1m.last_round END"
                ))
                .await?;
            c.execute(&rollup, &params)
            .await
            .map_err(pg_err("update one-minute candles"))?;
            Ok(true)
        }
        .await;
        let end = if matches!(result, Ok(true)) {
            "COMMIT"
        } else {
            "ROLLBACK"
        };
        c.batch_execute(end)
            .await
            .map_err(pg_err("commit a report"))?;
        result
    }

    /// The newest stored round.
    pub async fn newest_round(&self) -> Result<Option<Round>, GatewayError> {
        let row = self
            .writer()
            .query_one("SELECT max(round) FROM reports", &[])
            .await
            .map_err(pg_err("read the newest round"))?;
        let r: Option<i64> = row.get(0);
        Ok(r.and_then(|r| u64::try_from(r).ok()))
    }

    /// Total bytes of the database.
    async fn database_size(&self) -> Result<u64, tokio_postgres::Error> {
        let row = self
            .client()
            .query_one("SELECT pg_database_size(current_database())", &[])
            .await?;
        let n: i64 = row.get(0);
        Ok(u64::try_from(n).unwrap_or(0))
    }
}

/// The connection string without its password, for error messages.
fn redact(conn: &str) -> String {
    conn.split_whitespace()
        .map(|kv| {
            if kv.starts_with("password=") {
                "password=***"
            } else {
                kv
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

impl ReportStore for PgStore {
    fn feed_ids(&self) -> BoxFuture<'_, Result<Vec<FeedId>, ApiError>> {
        Box::pin(async move {
            let rows = self
                .client()
                .query(
                    "SELECT f.feed_id FROM feeds f JOIN feed_latest l USING (feed_key) ORDER BY f.feed_id",
                    &[],
                )
                .await
                .map_err(unavailable)?;
            rows.iter()
                .map(|r| {
                    let s: String = r.get(0);
                    FeedId::new(s.as_str()).map_err(|e| corrupt(format!("feed id {s:?}: {e}")))
                })
                .collect()
        })
    }

    fn has_feed(&self, feed: FeedId) -> BoxFuture<'_, Result<bool, ApiError>> {
        Box::pin(async move { Ok(self.cached_key(&feed).is_some()) })
    }

    fn latest(&self, feed: FeedId) -> BoxFuture<'_, Result<Option<Point>, ApiError>> {
        Box::pin(async move {
            if let Some((p, _)) = self
                .newest
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(&feed)
            {
                return Ok(Some(p.clone()));
            }
            let Some(key) = self.cached_key(&feed) else {
                return Ok(None);
            };
            let row = self
                .client()
                .query_opt(
                    &format!("SELECT {POINT_COLUMNS} FROM feed_latest WHERE feed_key = $1"),
                    &[&key],
                )
                .await
                .map_err(unavailable)?;
            row.map(|r| point_of(&feed, &r)).transpose()
        })
    }

    fn report(&self, round: Round) -> BoxFuture<'_, Result<Option<SignedReport>, ApiError>> {
        Box::pin(async move {
            if let Some(r) = self.cached_report(round) {
                return Ok(Some(r));
            }
            let Ok(round) = i64::try_from(round) else {
                return Ok(None);
            };
            let row = self
                .client()
                .query_opt("SELECT body FROM reports WHERE round = $1", &[&round])
                .await
                .map_err(unavailable)?;
            row.map(|r| decode_report(r.get::<_, &[u8]>(0))).transpose()
        })
    }

    fn latest_report(&self) -> BoxFuture<'_, Result<Option<SignedReport>, ApiError>> {
        Box::pin(async move {
            let row = self
                .client()
                .query_opt("SELECT body FROM reports ORDER BY round DESC LIMIT 1", &[])
                .await
                .map_err(unavailable)?;
            row.map(|r| decode_report(r.get::<_, &[u8]>(0))).transpose()
        })
    }

    fn reports_after(
        &self,
        after: Round,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<SignedReport>, ApiError>> {
        Box::pin(async move {
            let Ok(after) = i64::try_from(after) else {
                return Ok(Vec::new());
            };
            let rows = self
                .client()
                .query(
                    "SELECT body FROM reports WHERE round > $1 ORDER BY round LIMIT $2",
                    &[&after, &(limit as i64)],
                )
                .await
                .map_err(unavailable)?;
            rows.iter()
                .map(|r| decode_report(r.get::<_, &[u8]>(0)))
                .collect()
        })
    }

    fn history(
        &self,
        feed: FeedId,
        from: u64,
        to: u64,
        cursor: Option<HistoryCursor>,
        limit: usize,
    ) -> BoxFuture<'_, Result<HistoryPage, ApiError>> {
        Box::pin(async move {
            let Some(key) = self.cached_key(&feed) else {
                return Ok((Vec::new(), None));
            };
            let (cts, cround) = match cursor {
                Some(c) => (
                    i64_of(c.timestamp_ms, "cursor")?,
                    i64_of(c.round, "cursor")?,
                ),
                None => (i64::MIN, i64::MIN),
            };
            let rows = self
                .client()
                .query(
                    &format!(
                        "SELECT {POINT_COLUMNS} FROM points
                         WHERE feed_key = $1 AND ts_ms >= $2 AND ts_ms < $3 AND (ts_ms, round) > ($4, $5)
                         ORDER BY ts_ms, round LIMIT $6"
                    ),
                    &[
                        &key,
                        &i64_of(from, "from")?,
                        &i64_of(to.min(i64::MAX as u64), "to")?,
                        &cts,
                        &cround,
                        &(limit as i64 + 1),
                    ],
                )
                .await
                .map_err(unavailable)?;
            let more = rows.len() > limit;
            let points = rows
                .iter()
                .take(limit)
                .map(|r| point_of(&feed, r))
                .collect::<Result<Vec<_>, _>>()?;
            let next = if more {
                points.last().map(|p| HistoryCursor {
                    timestamp_ms: p.timestamp_ms,
                    round: p.round,
                })
            } else {
                None
            };
            Ok((points, next))
        })
    }

    fn candles(
        &self,
        feed: FeedId,
        from: u64,
        to: u64,
        interval_ms: u64,
        limit: usize,
    ) -> BoxFuture<'_, Result<CandlePage, ApiError>> {
        Box::pin(async move {
            let Some(key) = self.cached_key(&feed) else {
                return Ok((Vec::new(), None));
            };
            let interval_ms = interval_ms.max(1);
            let interval = i64_of(interval_ms, "interval")?;
            if !interval_ms.is_multiple_of(ROLLUP_MS) {
                let mut c = self.raw_candles(key, from, to, interval, limit + 1).await?;
                let next = (c.len() > limit).then(|| c[limit].start_ms);
                c.truncate(limit);
                return Ok((c, next));
            }
            // Whole minutes from the rollup; the partial minutes at either
            // end from raw points. Each bucket of the interval is whole
            // minutes, so a partial minute belongs to one bucket.
            let a = from.div_ceil(ROLLUP_MS).saturating_mul(ROLLUP_MS).min(to);
            let b = (to - to % ROLLUP_MS).max(a);
            let mut buckets: BTreeMap<u64, Candle> = BTreeMap::new();
            let mut merge = |list: Vec<Candle>| {
                for c in list {
                    match buckets.get_mut(&c.start_ms) {
                        None => {
                            buckets.insert(c.start_ms, c);
                        }
                        // Segments come in time order: this one is later.
                        Some(m) => {
                            m.high = m.high.max(c.high);
                            m.low = m.low.min(c.low);
                            m.close = c.close;
                            m.count += c.count;
                        }
                    }
                }
            };
            if from < a {
                merge(self.raw_candles(key, from, a, interval, limit + 1).await?);
            }
            let middle = self.rollup_candles(key, a, b, interval, limit + 1).await?;
            let truncated = middle.len() > limit;
            merge(middle);
            if !truncated && b < to {
                merge(self.raw_candles(key, b, to, interval, limit + 1).await?);
            }
            let mut all = buckets.into_values();
            let out: Vec<Candle> = all.by_ref().take(limit).collect();
            Ok((out, all.next().map(|c| c.start_ms)))
        })
    }

    fn size_bytes(&self) -> BoxFuture<'_, u64> {
        Box::pin(async move { self.database_size().await.unwrap_or(0) })
    }
}
