//! History retention: thin old points to one per bucket, delete very old ones.
//!
//! Work is cut into small transactions sent through the writer queue one at a
//! time, with a pause between them, so a round's write never waits behind a
//! long delete.

use super::{StoreError, StoreHandle};
use std::time::Duration;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetentionPolicy {
    /// Keep every point this long; older points are thinned. `None`: never thin.
    pub raw_for: Option<Duration>,
    /// After thinning, one point (the last) per bucket of this length remains.
    pub downsample_to: Duration,
    /// Delete points older than this. `None`: keep forever.
    pub delete_after: Option<Duration>,
    /// Most points deleted per transaction when pruning.
    pub batch: usize,
    /// Buckets thinned per transaction when downsampling.
    pub buckets_per_batch: u64,
    /// Pause between two batches.
    pub pause: Duration,
    /// How often a retention pass runs.
    pub every: Duration,
}

impl Default for RetentionPolicy {
    fn default() -> Self {
        Self {
            raw_for: Some(Duration::from_secs(7 * 24 * 3600)),
            downsample_to: Duration::from_secs(60),
            delete_after: None,
            batch: 5_000,
            buckets_per_batch: 60,
            pause: Duration::from_millis(20),
            every: Duration::from_secs(600),
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RetentionStats {
    pub deleted: usize,
    pub thinned: usize,
    pub transactions: usize,
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// One full retention pass as of `now_ms`.
pub async fn run_once(
    store: &StoreHandle,
    policy: &RetentionPolicy,
    now_ms: u64,
) -> Result<RetentionStats, StoreError> {
    let mut stats = RetentionStats::default();
    let batch = policy.batch.max(1);
    if let Some(keep) = policy.delete_after {
        let before = now_ms.saturating_sub(ms(keep));
        loop {
            let n = store
                .write(move |db| db.prune_points(before, batch))
                .await?;
            stats.deleted += n;
            stats.transactions += 1;
            if n < batch {
                break;
            }
            tokio::time::sleep(policy.pause).await;
        }
    }
    if let Some(raw_for) = policy.raw_for {
        let bucket = ms(policy.downsample_to).max(1);
        let cutoff = now_ms.saturating_sub(ms(raw_for));
        let cutoff = cutoff - cutoff % bucket;
        let window = bucket.saturating_mul(policy.buckets_per_batch.max(1));
        let feeds = store.write(|db| db.retention_state()).await?;
        for f in feeds {
            let Some(oldest) = f.oldest_ms else { continue };
            let feed_key = f.feed_key;
            let mut from = f
                .downsampled_until_ms
                .unwrap_or(0)
                .max(oldest - oldest % bucket);
            while from < cutoff {
                // Jump over empty stretches instead of walking them window by window.
                let next = store
                    .write(move |db| db.next_point_ms(feed_key, from))
                    .await?;
                let to = match next {
                    Some(ts) if ts < cutoff => {
                        from = from.max(ts - ts % bucket);
                        from.saturating_add(window).min(cutoff)
                    }
                    // Nothing left to thin: just record the progress.
                    _ => cutoff,
                };
                let n = store
                    .write(move |db| db.downsample_range(feed_key, from, to, bucket))
                    .await?;
                stats.thinned += n;
                stats.transactions += 1;
                from = to;
                if from < cutoff {
                    tokio::time::sleep(policy.pause).await;
                }
            }
        }
    }
    Ok(stats)
}

/// Run retention passes forever, every `policy.every`. Errors are logged and
/// the next pass tries again.
pub async fn run(store: StoreHandle, policy: RetentionPolicy) {
    let mut tick = tokio::time::interval(policy.every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        match run_once(&store, &policy, super::now_ms()).await {
            Ok(s) => tracing::debug!(deleted = s.deleted, thinned = s.thinned, "retention pass"),
            Err(StoreError::WriterGone) => return,
            Err(e) => tracing::warn!(error = %e, "retention pass failed"),
        }
    }
}
