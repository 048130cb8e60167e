//! A member's observation of one feed from its sources' quotes: pure,
//! integer-only, order-independent.
//!
//! 1. cross-source median of all fresh quotes;
//! 2. quotes further than `max_deviation_bps` from it are left out (outliers);
//! 3. fewer than `min_sources` left: no observation;
//! 4. the observation is the volume-weighted median of the rest (weight = 24 h
//!    base volume, capped at 3x the median weight so no single venue decides
//!    alone; sources without volume get the median weight), and the spread is
//!    max - min of the prices used: "spread" always means that width (see
//!    docs/PROTOCOL.md, "Spread and confidence"); the committee's confidence
//!    half-width is derived from the members' spreads in `aggregator`.

use serde::Serialize;

use crate::error::ObservationError;

/// One source's checked price for a feed, ready to aggregate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourcePrice {
    pub source: String,
    pub price: i128,
    pub volume: Option<i128>,
    pub time_ms: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ObservationParams {
    pub min_sources: usize,
    pub max_deviation_bps: u32,
}

/// A member's view of one feed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Observation {
    pub feed: String,
    pub decimals: u32,
    /// The observed price, fixed point at `decimals`.
    pub price_fixed: i128,
    /// Max - min of the prices used (a full width, not a half-width), same
    /// units as `price_fixed`.
    pub spread: i128,
    /// `spread` relative to the price, in basis points (rounded up); smaller
    /// is tighter.
    pub spread_bps: u32,
    /// How many sources entered the median (`sources_used.len()`).
    pub num_sources: u32,
    /// Timestamp of the oldest quote used (Unix ms): the observation is at least this fresh.
    pub observed_at_ms: u64,
    /// Sources whose price entered the median, sorted.
    pub sources_used: Vec<String>,
    /// Sources left out as too far from the cross-source median, sorted.
    pub outliers: Vec<String>,
}

/// Median of a non-empty sorted slice (mean of the middle two, rounded down).
fn median_sorted(v: &[i128]) -> i128 {
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        let (a, b) = (v[n / 2 - 1], v[n / 2]);
        a + (b - a) / 2
    }
}

pub fn observe(
    feed: &str,
    decimals: u32,
    quotes: &[SourcePrice],
    params: ObservationParams,
) -> Result<Observation, ObservationError> {
    let insufficient = |have| ObservationError::InsufficientSources {
        feed: feed.to_string(),
        have,
        need: params.min_sources.max(1),
    };
    let positive: Vec<&SourcePrice> = quotes.iter().filter(|q| q.price > 0).collect();
    if positive.is_empty() || positive.len() < params.min_sources {
        return Err(insufficient(positive.len()));
    }
    let mut all: Vec<i128> = positive.iter().map(|q| q.price).collect();
    all.sort_unstable();
    let center = median_sorted(&all);
    let overflow = || ObservationError::Overflow {
        feed: feed.to_string(),
    };

    let mut kept = Vec::new();
    let mut outliers = Vec::new();
    for q in positive {
        let dev = (q.price - center).checked_abs().ok_or_else(overflow)?;
        let lhs = dev.checked_mul(10_000).ok_or_else(overflow)?;
        let rhs = center
            .checked_mul(params.max_deviation_bps as i128)
            .ok_or_else(overflow)?;
        if lhs > rhs {
            outliers.push(q.source.clone());
        } else {
            kept.push(q);
        }
    }
    if kept.is_empty() || kept.len() < params.min_sources {
        return Err(insufficient(kept.len()));
    }
    // Deterministic order: by price, then by source name.
    kept.sort_by(|a, b| a.price.cmp(&b.price).then_with(|| a.source.cmp(&b.source)));

    let mut known: Vec<i128> = kept.iter().filter_map(|q| q.volume).collect();
    known.sort_unstable();
    let default_w = if known.is_empty() {
        1
    } else {
        median_sorted(&known).max(1)
    };
    let cap = default_w.saturating_mul(3);
    let weights: Vec<i128> = kept
        .iter()
        .map(|q| q.volume.unwrap_or(default_w).clamp(1, cap))
        .collect();
    let total: i128 = weights
        .iter()
        .try_fold(0i128, |acc, w| acc.checked_add(*w))
        .ok_or_else(overflow)?;

    // Weighted median: the first price where the cumulative weight reaches half;
    // on an exact tie at the boundary take the midpoint with the next price.
    let mut cum = 0i128;
    let mut price = kept[kept.len() - 1].price;
    for (i, (q, w)) in kept.iter().zip(&weights).enumerate() {
        cum += *w;
        let twice = cum.checked_mul(2).ok_or_else(overflow)?;
        if twice == total && i + 1 < kept.len() {
            let next = kept[i + 1].price;
            price = q.price + (next - q.price) / 2;
            break;
        }
        if twice > total {
            price = q.price;
            break;
        }
    }
    let spread = kept[kept.len() - 1].price - kept[0].price;
    // price > 0 here (every kept price is positive); round the ratio up.
    let spread_bps = spread
        .checked_mul(10_000)
        .map(|n| (n + price - 1) / price)
        .ok_or_else(overflow)?;
    let spread_bps = u32::try_from(spread_bps).unwrap_or(u32::MAX);
    let observed_at_ms = kept.iter().map(|q| q.time_ms).min().unwrap_or(0);
    let mut sources_used: Vec<String> = kept.iter().map(|q| q.source.clone()).collect();
    sources_used.sort();
    outliers.sort();
    Ok(Observation {
        feed: feed.to_string(),
        decimals,
        price_fixed: price,
        spread,
        spread_bps,
        num_sources: u32::try_from(sources_used.len()).unwrap_or(u32::MAX),
        observed_at_ms,
        sources_used,
        outliers,
    })
}

#[cfg(test)]
#[allow(clippy::inconsistent_digit_grouping)] // prices written as units_cents
mod tests {
    use super::*;

    fn sp(source: &str, price: i128, volume: Option<i128>) -> SourcePrice {
        SourcePrice {
            source: source.into(),
            price,
            volume,
            time_ms: 7,
        }
    }

    const P: ObservationParams = ObservationParams {
        min_sources: 3,
        max_deviation_bps: 100,
    };

    #[test]
    fn median_without_volume() {
        let q = [
            sp("a", 100_00, None),
            sp("b", 100_10, None),
            sp("c", 100_05, None),
        ];
        let o = observe("X", 2, &q, P).unwrap();
        assert_eq!(o.price_fixed, 100_05);
        assert_eq!(o.spread, 10);
        assert_eq!(
            o.spread_bps, 10,
            "10 / 10005 of the price, rounded up to 10 bps"
        );
        assert_eq!(o.num_sources, 3);
        assert_eq!(o.sources_used, vec!["a", "b", "c"]);
        assert_eq!(o.observed_at_ms, 7);
    }

    #[test]
    fn outlier_left_out_and_order_irrelevant() {
        let mut q = vec![
            sp("a", 100_00, Some(10)),
            sp("b", 100_10, Some(10)),
            sp("c", 70_00, Some(1000)),
            sp("d", 100_05, Some(10)),
        ];
        let o1 = observe("X", 2, &q, P).unwrap();
        assert_eq!(o1.outliers, vec!["c"]);
        assert!((100_00..=100_10).contains(&o1.price_fixed));
        q.reverse();
        assert_eq!(observe("X", 2, &q, P).unwrap(), o1);
    }

    #[test]
    fn volume_weights_are_capped() {
        // One huge venue cannot decide alone: capped at 3x the median weight.
        // Uncapped, "d" would outweigh the other four together.
        let q = [
            sp("a", 100_00, Some(1)),
            sp("b", 100_01, Some(1)),
            sp("c", 100_02, Some(1)),
            sp("e", 100_03, Some(1)),
            sp("d", 100_50, Some(1_000_000)),
        ];
        let o = observe("X", 2, &q, P).unwrap();
        assert_eq!(o.price_fixed, 100_03);
        // Real weighting moves the median toward the heavy side.
        let q = [
            sp("a", 100_00, Some(1)),
            sp("b", 100_01, Some(3)),
            sp("c", 100_02, Some(3)),
        ];
        assert_eq!(observe("X", 2, &q, P).unwrap().price_fixed, 100_01);
    }

    #[test]
    fn too_few_sources() {
        let q = [sp("a", 100, None), sp("b", 100, None)];
        assert!(matches!(
            observe("X", 2, &q, P),
            Err(ObservationError::InsufficientSources {
                have: 2,
                need: 3,
                ..
            })
        ));
        let q = [sp("a", 100, None), sp("b", 100, None), sp("c", 200, None)];
        assert!(observe("X", 2, &q, P).is_err());
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        fn quotes() -> impl Strategy<Value = Vec<SourcePrice>> {
            proptest::collection::vec(
                (1i128..1_000_000_000, proptest::option::of(1i128..1_000_000)),
                3..20,
            )
            .prop_map(|v| {
                v.into_iter()
                    .enumerate()
                    .map(|(i, (price, volume))| SourcePrice {
                        source: format!("s{i:02}"),
                        price,
                        volume,
                        time_ms: 1,
                    })
                    .collect()
            })
        }

        proptest! {
            #[test]
            fn order_does_not_matter(q in quotes(), seed in any::<u64>()) {
                let p = ObservationParams { min_sources: 1, max_deviation_bps: 500 };
                let a = observe("X", 8, &q, p);
                let mut shuffled = q.clone();
                // Deterministic shuffle from the seed.
                let n = shuffled.len();
                for i in 0..n {
                    let j = (seed.wrapping_mul(6364136223846793005).wrapping_add(i as u64) % n as u64) as usize;
                    shuffled.swap(i, j);
                }
                prop_assert_eq!(a, observe("X", 8, &shuffled, p));
            }

            #[test]
            fn price_stays_within_the_prices_used(q in quotes()) {
                let p = ObservationParams { min_sources: 1, max_deviation_bps: 10_000 };
                if let Ok(o) = observe("X", 8, &q, p) {
                    let used: Vec<i128> = q.iter().filter(|s| o.sources_used.contains(&s.source)).map(|s| s.price).collect();
                    let (lo, hi) = (*used.iter().min().unwrap(), *used.iter().max().unwrap());
                    prop_assert!(lo <= o.price_fixed && o.price_fixed <= hi);
                    prop_assert_eq!(o.spread, hi - lo);
                    prop_assert_eq!(o.num_sources as usize, used.len());
                }
            }

            /// Liars (fewer than a third, any volume) cannot move the
            /// observation further than the outlier band (100 bps) beyond the
            /// honest range: the unweighted cross-source median stays inside
            /// the honest range and nothing outside its band is used.
            #[test]
            fn a_minority_of_liars_moves_it_at_most_the_outlier_band(
                honest in proptest::collection::vec(99_900i128..=100_100, 5..12),
                liars in proptest::collection::vec(prop_oneof![1i128..10_000_000, 97_000i128..103_000], 0..5),
                volumes in proptest::collection::vec(proptest::option::of(1i128..1_000_000), 17),
            ) {
                prop_assume!(liars.len() * 3 < honest.len() + liars.len());
                let q: Vec<SourcePrice> = honest.iter().chain(liars.iter()).enumerate().map(|(i, p)| SourcePrice {
                    source: format!("s{i:02}"), price: *p, volume: volumes[i], time_ms: 1,
                }).collect();
                let o = observe("X", 8, &q, ObservationParams { min_sources: 3, max_deviation_bps: 100 }).unwrap();
                prop_assert!((98_901..=101_101).contains(&o.price_fixed), "{:?}", o);
            }
        }
    }
}
