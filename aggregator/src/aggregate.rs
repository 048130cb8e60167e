//! Per-feed aggregation: median, confidence and the update decision.
//!
//! Everything here is integer arithmetic on attributed observations, so the
//! leader and every member compute the same bytes.
//!
//! - **Median**: the *lower* median (element `(k - 1) / 2` of the sorted
//!   values). With `k >= 2f + 1` values of which at most `f` are Byzantine,
//!   at least `f + 1` values lie on each side of it, so it lies within the
//!   range of the honest values.
//! - **Confidence**: the larger of the median absolute deviation of the prices
//!   (lower median of `|p - median|`) and the lower median of the members'
//!   spreads (each max − min of its source prices; docs/PROTOCOL.md, "Spread
//!   and confidence"). Both are robust to `f` outliers in the same way.
//! - **Update decision**: a feed is due when it was never signed, when the new
//!   aggregate deviates from the last signed value by at least the feed's
//!   `deviation_bps`, or when its heartbeat has elapsed.

use crate::report::{FeedId, Price, ReportLeaf, TimestampMs};

/// One member's observation of one feed, attributed to that member.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FeedObservation {
    pub price: Price,
    /// The member's spread: max − min of the source prices behind its
    /// price (docs/PROTOCOL.md, "Spread and confidence"), same fixed point
    /// as `price`.
    pub spread: u128,
    pub observed_at_ms: TimestampMs,
}

/// Why a feed could not be aggregated.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AggregateError {
    #[error("feed {feed} has {have} observations but needs at least {need} (2f+1)")]
    NotEnoughObservations {
        feed: FeedId,
        have: usize,
        need: usize,
    },
}

/// Lower median of a non-empty slice (sorts it in place). `None` when empty.
pub fn lower_median<T: Ord + Copy>(values: &mut [T]) -> Option<T> {
    if values.is_empty() {
        return None;
    }
    let mid = (values.len() - 1) / 2;
    let (_, m, _) = values.select_nth_unstable(mid);
    Some(*m)
}

/// Aggregates one feed from its attributed observations. Requires at least
/// `min_observations` (the committee's `2f + 1`).
pub fn aggregate_feed(
    feed: &FeedId,
    observations: &[FeedObservation],
    min_observations: usize,
) -> Result<ReportLeaf, AggregateError> {
    if observations.len() < min_observations.max(1) {
        return Err(AggregateError::NotEnoughObservations {
            feed: feed.clone(),
            have: observations.len(),
            need: min_observations.max(1),
        });
    }
    let mut prices: Vec<Price> = observations.iter().map(|o| o.price).collect();
    let median = lower_median(&mut prices).unwrap_or_default();
    let mut deviations: Vec<u128> = prices.iter().map(|p| p.abs_diff(median)).collect();
    let mad = lower_median(&mut deviations).unwrap_or_default();
    let mut spreads: Vec<u128> = observations.iter().map(|o| o.spread).collect();
    let median_spread = lower_median(&mut spreads).unwrap_or_default();
    let mut times: Vec<TimestampMs> = observations.iter().map(|o| o.observed_at_ms).collect();
    let observed_at_ms = lower_median(&mut times).unwrap_or_default();
    Ok(ReportLeaf {
        feed_id: feed.clone(),
        price: median,
        confidence: mad.max(median_spread),
        num_observations: u16::try_from(observations.len()).unwrap_or(u16::MAX),
        observed_at_ms,
    })
}

/// The last signed value of a feed, as the update decision sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LastValue {
    pub price: Price,
    /// Timestamp of the report that carried it.
    pub reported_at_ms: TimestampMs,
}

/// Why a feed is due for an update.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UpdateReason {
    /// Never signed before.
    First,
    /// Moved by at least the feed's deviation threshold (basis points).
    Deviation,
    /// The heartbeat elapsed since the last signed value.
    Heartbeat,
}

/// Decides whether a feed is due: deviation in basis points against the last
/// signed value, or heartbeat elapsed. Overflow counts as a deviation.
pub fn update_due(
    last: Option<&LastValue>,
    candidate: Price,
    now_ms: TimestampMs,
    deviation_bps: u32,
    heartbeat_ms: u64,
) -> Option<UpdateReason> {
    let Some(last) = last else {
        return Some(UpdateReason::First);
    };
    if deviation_exceeds(last.price, candidate, deviation_bps) {
        return Some(UpdateReason::Deviation);
    }
    if now_ms.saturating_sub(last.reported_at_ms) >= heartbeat_ms {
        return Some(UpdateReason::Heartbeat);
    }
    None
}

/// `|new - old| * 10_000 >= bps * |old|`, in checked integer arithmetic
/// (overflow means a huge move: true). From a zero price any move counts.
pub fn deviation_exceeds(old: Price, new: Price, deviation_bps: u32) -> bool {
    let diff = old.abs_diff(new);
    if diff == 0 {
        return false;
    }
    let lhs = diff.checked_mul(10_000);
    let rhs = old.unsigned_abs().checked_mul(u128::from(deviation_bps));
    match (lhs, rhs) {
        (Some(l), Some(r)) => l >= r,
        (None, _) => true,
        (Some(_), None) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn obs(price: Price) -> FeedObservation {
        FeedObservation {
            price,
            spread: 0,
            observed_at_ms: 0,
        }
    }

    #[test]
    fn lower_median_of_even_count_takes_the_lower_middle() {
        assert_eq!(lower_median(&mut [4, 1, 3, 2]), Some(2));
        assert_eq!(lower_median(&mut [5, 1, 3]), Some(3));
        assert_eq!(lower_median::<i128>(&mut []), None);
    }

    #[test]
    fn too_few_observations_leave_the_feed_out() {
        let feed = FeedId::new("BTC-USD").unwrap();
        let err = aggregate_feed(&feed, &[obs(1), obs(2)], 3).unwrap_err();
        assert_eq!(
            err,
            AggregateError::NotEnoughObservations {
                feed,
                have: 2,
                need: 3
            }
        );
    }

    #[test]
    fn confidence_is_mad_or_median_spread() {
        let feed = FeedId::new("BTC-USD").unwrap();
        let leaf = aggregate_feed(&feed, &[obs(100), obs(104), obs(90), obs(1000)], 3).unwrap();
        // sorted 90 100 104 1000 -> lower median 100; deviations 10 0 4 900 -> 4
        assert_eq!(leaf.price, 100);
        assert_eq!(leaf.confidence, 4);
        let mut wide = vec![obs(100), obs(100), obs(100)];
        for o in &mut wide {
            o.spread = 7;
        }
        assert_eq!(aggregate_feed(&feed, &wide, 3).unwrap().confidence, 7);
    }

    #[test]
    fn update_decision() {
        let last = LastValue {
            price: 10_000,
            reported_at_ms: 1_000,
        };
        assert_eq!(
            update_due(None, 1, 0, 50, 60_000),
            Some(UpdateReason::First)
        );
        // 0.5% = 50 bps: 10_050 is exactly at the threshold.
        assert_eq!(
            update_due(Some(&last), 10_050, 2_000, 50, 60_000),
            Some(UpdateReason::Deviation)
        );
        assert_eq!(update_due(Some(&last), 10_049, 2_000, 50, 60_000), None);
        assert_eq!(
            update_due(Some(&last), 10_049, 61_000, 50, 60_000),
            Some(UpdateReason::Heartbeat)
        );
        assert!(deviation_exceeds(i128::MAX, i128::MIN, 1));
        assert!(deviation_exceeds(0, 1, 10_000));
    }

    proptest! {
        #[test]
        fn median_ignores_order(mut values in proptest::collection::vec(any::<i128>(), 1..40), seed in any::<u64>()) {
            let a = lower_median(&mut values.clone());
            // A deterministic shuffle from the seed.
            let mut s = seed;
            for i in (1..values.len()).rev() {
                s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                values.swap(i, (s >> 33) as usize % (i + 1));
            }
            prop_assert_eq!(a, lower_median(&mut values));
        }

        #[test]
        fn median_stays_within_honest_range(
            f in 0usize..6,
            extra in 0usize..6,
            honest_seed in proptest::collection::vec(-1_000_000i128..1_000_000, 40),
            byz in proptest::collection::vec(any::<i128>(), 6),
            byz_count in 0usize..6,
        ) {
            // k >= 2f+1 observations of which at most f are Byzantine.
            let byz_count = byz_count.min(f);
            let k = 2 * f + 1 + extra;
            let honest: Vec<i128> = honest_seed[..k - byz_count].to_vec();
            let mut all: Vec<FeedObservation> = honest.iter().copied().map(obs).collect();
            all.extend(byz[..byz_count].iter().copied().map(obs));
            let feed = FeedId::new("X").unwrap();
            let leaf = aggregate_feed(&feed, &all, 2 * f + 1).unwrap();
            let lo = *honest.iter().min().unwrap();
            let hi = *honest.iter().max().unwrap();
            prop_assert!(lo <= leaf.price && leaf.price <= hi, "{} not in [{lo}, {hi}]", leaf.price);
        }
    }
}
