//! What the public routes read, behind one trait so the same routes serve a
//! member's SQLite file ([`Readers`]) and a gateway's PostgreSQL database
//! (`sibyl-gateway`).
//!
//! Methods return boxed futures so the trait stays object-safe
//! (`Arc<dyn ReportStore>` in the API state). Errors are [`ApiError`]s: a
//! store that cannot answer says `store_unavailable` (503).

use crate::ApiError;
use futures::future::BoxFuture;
use sibyl_aggregator::{FeedId, Round, SignedReport};
use sibyl_node::store::{Candle, Db, HistoryCursor, Point, Readers};

/// One page of raw points and the cursor of the next page.
pub type HistoryPage = (Vec<Point>, Option<HistoryCursor>);
/// One page of candles (non-empty buckets only) and where the next page starts.
pub type CandlePage = (Vec<Candle>, Option<u64>);

/// The reads behind the public API.
pub trait ReportStore: Send + Sync + 'static {
    /// Feeds that have at least one stored point.
    fn feed_ids(&self) -> BoxFuture<'_, Result<Vec<FeedId>, ApiError>>;
    /// Whether the store holds a point of `feed`.
    fn has_feed(&self, feed: FeedId) -> BoxFuture<'_, Result<bool, ApiError>>;
    /// The newest point of `feed`.
    fn latest(&self, feed: FeedId) -> BoxFuture<'_, Result<Option<Point>, ApiError>>;
    /// The signed report of `round`.
    fn report(&self, round: Round) -> BoxFuture<'_, Result<Option<SignedReport>, ApiError>>;
    /// The newest stored report.
    fn latest_report(&self) -> BoxFuture<'_, Result<Option<SignedReport>, ApiError>>;
    /// Up to `limit` reports with round > `after`, oldest first.
    fn reports_after(
        &self,
        after: Round,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<SignedReport>, ApiError>>;
    /// Raw points of `feed` in `[from, to)` after `cursor`, at most `limit`.
    fn history(
        &self,
        feed: FeedId,
        from: u64,
        to: u64,
        cursor: Option<HistoryCursor>,
        limit: usize,
    ) -> BoxFuture<'_, Result<HistoryPage, ApiError>>;
    /// Candles of `feed` over `[from, to)` in buckets of `interval_ms`
    /// (buckets holding at least one point), at most `limit` of them.
    fn candles(
        &self,
        feed: FeedId,
        from: u64,
        to: u64,
        interval_ms: u64,
        limit: usize,
    ) -> BoxFuture<'_, Result<CandlePage, ApiError>>;
    /// Bytes the store takes on disk (for `/healthz` and `sibyl_db_size_bytes`).
    fn size_bytes(&self) -> BoxFuture<'_, u64>;
    /// The member's SQLite readers, for the routes only a member serves (the
    /// margin engine's event log). `None` on a gateway.
    fn sqlite(&self) -> Option<&Readers> {
        None
    }
}

impl ReportStore for Readers {
    fn feed_ids(&self) -> BoxFuture<'_, Result<Vec<FeedId>, ApiError>> {
        Box::pin(async move { Ok(self.read(|db| db.feed_ids()).await?) })
    }

    fn has_feed(&self, feed: FeedId) -> BoxFuture<'_, Result<bool, ApiError>> {
        Box::pin(async move { Ok(self.read(move |db| db.has_feed(&feed)).await?) })
    }

    fn latest(&self, feed: FeedId) -> BoxFuture<'_, Result<Option<Point>, ApiError>> {
        Box::pin(async move { Ok(Readers::latest(self, feed).await?) })
    }

    fn report(&self, round: Round) -> BoxFuture<'_, Result<Option<SignedReport>, ApiError>> {
        Box::pin(async move { Ok(Readers::report(self, round).await?) })
    }

    fn latest_report(&self) -> BoxFuture<'_, Result<Option<SignedReport>, ApiError>> {
        Box::pin(async move { Ok(self.read(|db: &mut Db| db.latest_report()).await?) })
    }

    fn reports_after(
        &self,
        after: Round,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<SignedReport>, ApiError>> {
        Box::pin(async move { Ok(Readers::reports_after(self, after, limit).await?) })
    }

    fn history(
        &self,
        feed: FeedId,
        from: u64,
        to: u64,
        cursor: Option<HistoryCursor>,
        limit: usize,
    ) -> BoxFuture<'_, Result<HistoryPage, ApiError>> {
        Box::pin(async move { Ok(Readers::history(self, feed, from, to, cursor, limit).await?) })
    }

    fn candles(
        &self,
        feed: FeedId,
        from: u64,
        to: u64,
        interval_ms: u64,
        limit: usize,
    ) -> BoxFuture<'_, Result<CandlePage, ApiError>> {
        Box::pin(
            async move { Ok(Readers::candles(self, feed, from, to, interval_ms, limit).await?) },
        )
    }

    fn size_bytes(&self) -> BoxFuture<'_, u64> {
        Box::pin(async move { Readers::size_bytes(self) })
    }

    fn sqlite(&self) -> Option<&Readers> {
        Some(self)
    }
}
