//! A member's observation of one feed from its sources' quotes: pure,
//! integer-only, order-independent.
//!
//! 1. cross-source median of all fresh quotes (unweighted, so no volume
//!    figure can move the reference the outliers are judged against);
//! 2. quotes further than `max_deviation_bps` from it are left out (outliers);
//! 3. no source left: no observation (an error); fewer than `min_sources`
//!    left: an observation that says so (`num_sources < min_sources`, the
//!    leaf's `degraded`);
//! 4. the observation is the weighted median of the rest: a venue's weight
//!    is its own 24 h base volume; venues without one get the median of the
//!    others' volumes (equal weights when none publishes); then every weight
//!    is capped at `max_venue_weight_bps` of the total ([`capped_weights`]),
//!    so with a cap below 50 % no single venue decides alone and a venue set
//!    to any price keeps the result within the range of the others;
//! 5. the spread is max - min of the prices used: "spread" always means that
//!    width (see docs/PROTOCOL.md, "Spread and confidence"); the committee's
//!    confidence half-width is derived from the members' spreads in
//!    `aggregator`. Best bid and ask are the highest bid and lowest ask of
//!    the venues used.

use serde::Serialize;

use crate::error::ObservationError;

/// One source's checked price for a feed, ready to aggregate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourcePrice {
    pub source: String,
    pub price: i128,
    /// The venue's best bid and ask, converted like `price`, when it gave them.
    pub bid: Option<i128>,
    pub ask: Option<i128>,
    pub volume: Option<i128>,
    pub time_ms: u64,
    /// The price was converted through a stablecoin feed that is off its peg.
    pub peg_departed: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ObservationParams {
    pub min_sources: usize,
    pub max_deviation_bps: u32,
    /// Most of the total weight one venue may carry, in basis points.
    pub max_venue_weight_bps: u32,
}

/// Default of `max_venue_weight_bps`: 40 %, below half, so that one venue
/// never decides the weighted median alone (needs at least three venues;
/// with fewer the weights are equal).
pub const DEFAULT_MAX_VENUE_WEIGHT_BPS: u32 = 4_000;

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
    /// Highest bid among the venues used, same units; `None` when none gave one.
    pub best_bid: Option<i128>,
    /// Lowest ask among the venues used, same units; `None` when none gave one.
    pub best_ask: Option<i128>,
    /// How many sources entered the median (`sources_used.len()`).
    pub num_sources: u32,
    /// The feed's configured minimum; `num_sources < min_sources` means the
    /// observation is degraded (still a price, from fewer venues than asked).
    pub min_sources: u32,
    /// A stablecoin leg used to convert this feed is off its peg by more
    /// than `max_peg_deviation_bps` (on a stablecoin's own feed such as
    /// `USDT-USD`: the stablecoin itself is off its peg).
    pub peg_departed: bool,
    /// The venues say trading stopped (a strict majority of those that
    /// publish a status): `Halted` or `Closed`, and the price is the last
    /// one before it stopped. `None`: trading, or nothing says otherwise.
    pub market: Option<crate::venue::MarketState>,
    /// Timestamp of the oldest quote used (Unix ms): the observation is at least this fresh.
    pub observed_at_ms: u64,
    /// Sources whose price entered the median, sorted.
    pub sources_used: Vec<String>,
    /// Sources left out as too far from the cross-source median, sorted.
    pub outliers: Vec<String>,
}

impl Observation {
    /// Fewer venues behind the price than the feed asks for.
    pub fn is_degraded(&self) -> bool {
        self.num_sources < self.min_sources
    }
}

/// Whether `price` (fixed point at `decimals`) is further than `bound_bps`
/// from 1.0: a stablecoin off its peg. Integer only; `None` on overflow.
pub fn off_peg(price: i128, decimals: u32, bound_bps: u32) -> Option<bool> {
    let one = 10i128.checked_pow(decimals)?;
    let dev = price.checked_sub(one)?.checked_abs()?;
    Some(dev.checked_mul(10_000)? > one.checked_mul(i128::from(bound_bps))?)
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

/// Caps every weight at `cap_bps` of the total, exactly, keeping the
/// uncapped weights' proportions (water-filling). With the `k` heaviest
/// capped and `rest` the sum of the others, each capped weight becomes
/// `cap * rest` and each other `w * (10_000 - k * cap)`: a capped share is
/// then exactly `cap / 10_000`. `k` is the smallest count for which the
/// heaviest uncapped weight is within the cap. When no assignment can meet
/// the cap (`n * cap <= 10_000`, e.g. two venues under a 40 % cap) the
/// weights are equal, the most even there is. `None` on overflow.
pub fn capped_weights(raw: &[i128], cap_bps: u32) -> Option<Vec<i128>> {
    let n = raw.len();
    let cap = i128::from(cap_bps);
    if cap >= 10_000 || n <= 1 {
        return Some(raw.to_vec());
    }
    let n_i = i128::try_from(n).ok()?;
    if n_i.checked_mul(cap)? <= 10_000 {
        return Some(vec![1; n]);
    }
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&a, &b| raw[b].cmp(&raw[a]).then(a.cmp(&b)));
    let total = raw.iter().try_fold(0i128, |acc, w| acc.checked_add(*w))?;
    let mut rest = total;
    for (k, &heaviest) in order.iter().enumerate() {
        let k_i = i128::try_from(k).ok()?;
        let free = 10_000 - k_i * cap;
        if free <= 0 {
            break;
        }
        let capped = cap.checked_mul(rest)?;
        if raw[heaviest].checked_mul(free)? <= capped {
            if k == 0 {
                return Some(raw.to_vec());
            }
            let mut out = Vec::with_capacity(n);
            for (i, w) in raw.iter().enumerate() {
                let is_capped = order[..k].contains(&i);
                out.push(if is_capped {
                    capped
                } else {
                    w.checked_mul(free)?
                });
            }
            return Some(out);
        }
        rest -= raw[heaviest];
    }
    Some(vec![1; n])
}

pub fn observe(
    feed: &str,
    decimals: u32,
    quotes: &[SourcePrice],
    params: ObservationParams,
) -> Result<Observation, ObservationError> {
    let overflow = || ObservationError::Overflow {
        feed: feed.to_string(),
    };
    let positive: Vec<&SourcePrice> = quotes.iter().filter(|q| q.price > 0).collect();
    let no_source = |outliers: usize| ObservationError::NoUsableSource {
        feed: feed.to_string(),
        quotes: positive.len(),
        outliers,
    };
    if positive.is_empty() {
        return Err(no_source(0));
    }
    let mut all: Vec<i128> = positive.iter().map(|q| q.price).collect();
    all.sort_unstable();
    let center = median_sorted(&all);

    let mut kept = Vec::new();
    let mut outliers = Vec::new();
    for q in positive.iter().copied() {
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
    if kept.is_empty() {
        return Err(no_source(outliers.len()));
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
    let raw: Vec<i128> = if known.is_empty() {
        vec![1; kept.len()]
    } else {
        kept.iter()
            .map(|q| q.volume.unwrap_or(default_w).max(1))
            .collect()
    };
    let weights = capped_weights(&raw, params.max_venue_weight_bps).ok_or_else(overflow)?;
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
    let best_bid = kept.iter().filter_map(|q| q.bid).max();
    let best_ask = kept.iter().filter_map(|q| q.ask).min();
    let peg_departed = kept.iter().any(|q| q.peg_departed);
    let mut sources_used: Vec<String> = kept.iter().map(|q| q.source.clone()).collect();
    sources_used.sort();
    outliers.sort();
    Ok(Observation {
        feed: feed.to_string(),
        decimals,
        price_fixed: price,
        spread,
        spread_bps,
        best_bid,
        best_ask,
        num_sources: u32::try_from(sources_used.len()).unwrap_or(u32::MAX),
        min_sources: u32::try_from(params.min_sources).unwrap_or(u32::MAX),
        peg_departed,
        market: None,
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
            bid: None,
            ask: None,
            volume,
            time_ms: 7,
            peg_departed: false,
        }
    }

    const P: ObservationParams = ObservationParams {
        min_sources: 3,
        max_deviation_bps: 100,
        max_venue_weight_bps: DEFAULT_MAX_VENUE_WEIGHT_BPS,
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
        assert_eq!(o.min_sources, 3);
        assert!(!o.is_degraded() && !o.peg_departed);
        assert_eq!((o.best_bid, o.best_ask), (None, None));
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
        // One huge venue cannot decide alone: capped at 40 % of the total.
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
        // A venue without volume weighs the median of the others' volumes.
        let q = [
            sp("a", 100_00, Some(10)),
            sp("b", 100_01, None),
            sp("c", 100_02, Some(1)),
            sp("d", 100_03, Some(1)),
        ];
        // weights 10, 1 (median of 10, 1, 1), 1, 1 -> capped: a at 40 %.
        assert_eq!(observe("X", 2, &q, P).unwrap().price_fixed, 100_01);
    }

    #[test]
    fn capped_weights_are_exact() {
        let w = capped_weights(&[100, 1, 1, 1], 4_000).unwrap();
        let total: i128 = w.iter().sum();
        assert_eq!(w[0] * 10_000, 4_000 * total, "{w:?}");
        assert_eq!(w[1], w[2]);
        // Two heavy venues capped together, the light ones keep their ratio.
        let w = capped_weights(&[50, 40, 2, 1, 1], 3_000).unwrap();
        let total: i128 = w.iter().sum();
        assert_eq!(w[0] * 10_000, 3_000 * total, "{w:?}");
        assert_eq!(w[1] * 10_000, 3_000 * total, "{w:?}");
        assert_eq!(w[2], 2 * w[3]);
        // Already within the cap: unchanged.
        assert_eq!(capped_weights(&[3, 3, 2], 4_000).unwrap(), vec![3, 3, 2]);
        // Two venues cannot both stay under 40 %: equal weights.
        assert_eq!(capped_weights(&[9, 1], 4_000).unwrap(), vec![1, 1]);
        assert_eq!(capped_weights(&[9, 1], 10_000).unwrap(), vec![9, 1]);
        assert_eq!(capped_weights(&[5], 4_000).unwrap(), vec![5]);
    }

    #[test]
    fn best_bid_and_ask_of_the_venues_used() {
        let with = |s: &str, p: i128, bid: Option<i128>, ask: Option<i128>| SourcePrice {
            bid,
            ask,
            ..sp(s, p, None)
        };
        let q = [
            with("a", 100_00, Some(99_99), Some(100_01)),
            with("b", 100_02, Some(100_01), None),
            with("c", 100_04, None, Some(100_05)),
            // An outlier's book is not used.
            with("d", 150_00, Some(149_00), Some(99_00)),
        ];
        let o = observe("X", 2, &q, P).unwrap();
        assert_eq!(o.outliers, vec!["d"]);
        assert_eq!(o.best_bid, Some(100_01));
        assert_eq!(o.best_ask, Some(100_01));
    }

    #[test]
    fn fewer_venues_than_the_minimum_is_degraded_not_an_error() {
        let q = [sp("a", 100_00, None), sp("b", 100_02, None)];
        let o = observe("X", 2, &q, P).unwrap();
        assert_eq!((o.num_sources, o.min_sources), (2, 3));
        assert!(o.is_degraded());
        assert_eq!(o.price_fixed, 100_01);
        let one = observe("X", 2, &q[..1], P).unwrap();
        assert_eq!((one.num_sources, one.price_fixed), (1, 100_00));
        // Nothing usable stays an error.
        assert!(matches!(
            observe("X", 2, &[], P),
            Err(ObservationError::NoUsableSource { quotes: 0, .. })
        ));
        // Two venues 2 % apart: both are outliers of their midpoint.
        let q = [sp("a", 100_00, None), sp("b", 103_00, None)];
        assert!(matches!(
            observe("X", 2, &q, P),
            Err(ObservationError::NoUsableSource {
                quotes: 2,
                outliers: 2,
                ..
            })
        ));
    }

    #[test]
    fn off_peg_is_a_strict_bound() {
        // 50 bps of 1.00000000 is 0.00500000.
        assert_eq!(off_peg(99_500_000, 8, 50), Some(false));
        assert_eq!(off_peg(100_500_000, 8, 50), Some(false));
        assert_eq!(off_peg(99_499_999, 8, 50), Some(true));
        assert_eq!(off_peg(100_500_001, 8, 50), Some(true));
        assert_eq!(off_peg(95_000_000, 8, 50), Some(true));
        assert_eq!(off_peg(1, 40, 50), None, "10^40 overflows i128");
    }

    #[test]
    fn two_venues_left_meet_halfway() {
        // The third venue is an outlier; of the two left neither can carry
        // under 40 %, so both weigh the same whatever their volumes.
        let q = [
            sp("a", 100_00, Some(1)),
            sp("b", 100_60, Some(1_000_000)),
            sp("c", 90_00, Some(5)),
        ];
        let o = observe("X", 2, &q, P).unwrap();
        assert_eq!(o.outliers, vec!["c"]);
        assert_eq!(o.price_fixed, 100_30);
    }

    #[test]
    fn peg_departure_is_reported_when_a_departed_leg_is_used() {
        let off = |s: &str, p: i128| SourcePrice {
            peg_departed: true,
            ..sp(s, p, None)
        };
        let q = [
            sp("a", 100_00, None),
            sp("b", 100_01, None),
            off("c", 100_02),
        ];
        assert!(observe("X", 2, &q, P).unwrap().peg_departed);
        let q = [
            sp("a", 100_00, None),
            sp("b", 100_01, None),
            sp("c", 100_02, None),
            off("d", 200_00),
        ];
        let o = observe("X", 2, &q, P).unwrap();
        assert!(!o.peg_departed, "the departed leg was an outlier: {o:?}");
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
                        volume,
                        time_ms: 1,
                        ..sp(&format!("s{i:02}"), price, None)
                    })
                    .collect()
            })
        }

        fn params(max_deviation_bps: u32) -> ObservationParams {
            ObservationParams {
                min_sources: 1,
                max_deviation_bps,
                max_venue_weight_bps: DEFAULT_MAX_VENUE_WEIGHT_BPS,
            }
        }

        proptest! {
            #[test]
            fn order_does_not_matter(q in quotes(), seed in any::<u64>()) {
                let p = params(500);
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
                if let Ok(o) = observe("X", 8, &q, params(10_000)) {
                    let used: Vec<i128> = q.iter().filter(|s| o.sources_used.contains(&s.source)).map(|s| s.price).collect();
                    let (lo, hi) = (*used.iter().min().unwrap(), *used.iter().max().unwrap());
                    prop_assert!(lo <= o.price_fixed && o.price_fixed <= hi);
                    prop_assert_eq!(o.spread, hi - lo);
                    prop_assert_eq!(o.num_sources as usize, used.len());
                }
            }

            /// The cap holds: every weight is at most `cap` of the total
            /// whenever `n * cap > 10_000` makes that possible, and the
            /// weights are equal otherwise.
            #[test]
            fn no_weight_exceeds_its_cap(
                raw in proptest::collection::vec(1i128..1_000_000_000_000, 1..20),
                cap in 1u32..=10_000,
            ) {
                let w = capped_weights(&raw, cap).unwrap();
                prop_assert_eq!(w.len(), raw.len());
                let total: i128 = w.iter().sum();
                prop_assert!(w.iter().all(|x| *x > 0));
                if cap < 10_000 && raw.len() > 1 && raw.len() as i128 * i128::from(cap) <= 10_000 {
                    prop_assert!(w.iter().all(|x| *x == w[0]), "{:?}", w);
                } else {
                    for x in &w {
                        prop_assert!(x * 10_000 <= i128::from(cap) * total || raw.len() == 1, "{:?} cap {}", w, cap);
                    }
                }
            }

            /// One venue, set to any price with any volume, cannot take the
            /// observation outside the range of the other venues whenever at
            /// least three venues are used (the 40 % cap is then met), for
            /// any outlier band. With two used the weights are equal and the
            /// price is their midpoint (`two_venues_left_meet_halfway`).
            #[test]
            fn one_venue_cannot_leave_the_range_of_the_others(
                others in proptest::collection::vec((1_000_000i128..1_000_000_000, proptest::option::of(1i128..1_000_000)), 2..15),
                liar_price in 1i128..1_000_000_000_000,
                liar_volume in proptest::option::of(1i128..1_000_000_000_000),
                band in prop_oneof![Just(100u32), Just(1_000), Just(10_000), 1u32..100_000],
            ) {
                let mut q: Vec<SourcePrice> = others.iter().enumerate().map(|(i, (p, v))| SourcePrice {
                    volume: *v,
                    ..sp(&format!("s{i:02}"), *p, None)
                }).collect();
                q.push(SourcePrice { volume: liar_volume, ..sp("liar", liar_price, None) });
                let lo = others.iter().map(|o| o.0).min().unwrap();
                let hi = others.iter().map(|o| o.0).max().unwrap();
                if let Ok(o) = observe("X", 8, &q, params(band))
                    && o.num_sources >= 3
                {
                    prop_assert!(lo <= o.price_fixed && o.price_fixed <= hi, "{:?} outside [{}, {}]", o, lo, hi);
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
                    volume: volumes[i],
                    ..sp(&format!("s{i:02}"), *p, None)
                }).collect();
                let o = observe("X", 8, &q, P).unwrap();
                prop_assert!((98_901..=101_101).contains(&o.price_fixed), "{:?}", o);
            }
        }
    }
}
