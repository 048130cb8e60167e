//! Per-feed aggregation: median, confidence, bid/ask, venues, status and
//! flags, EMA and volatility, and the update decision.
//!
//! Everything here is integer arithmetic on attributed observations and the
//! feed's previous signed leaf, so the leader and every member compute the
//! same bytes (docs/PROTOCOL.md, "Leaf").
//!
//! - **Median**: the *lower* median (element `(k - 1) / 2` of the sorted
//!   values). With `k >= 2f + 1` values of which at most `f` are Byzantine,
//!   at least `f + 1` values lie on each side of it, so it lies within the
//!   range of the honest values.
//! - **Confidence**: the larger of the median absolute deviation of the prices
//!   (lower median of `|p - median|`) and the lower median of the members'
//!   spreads (each max − min of its source prices; docs/PROTOCOL.md, "Spread
//!   and confidence"). Both are robust to `f` outliers in the same way.
//! - **Bid/ask, venues**: lower medians over the members (bid and ask over
//!   the members reporting an uncrossed pair, and only with `2f + 1` of them).
//! - **Status and flags**: docs/PROTOCOL.md, "Status and flags"; flags, never
//!   clamps: the price is the median whatever the bounds say.
//! - **EMA and volatility**: [`crate::ema`].
//! - **Update decision**: a feed is due when it was never signed, when the new
//!   aggregate deviates from the last signed value by at least the feed's
//!   `deviation_bps`, or when its heartbeat has elapsed.

use crate::ema::{self, EmaState};
use crate::report::{FeedId, LeafStatus, Price, ReportLeaf, TimestampMs, flags};
use crate::round::committee::FeedPolicy;
use crate::round::message::entry_flags;

/// One member's observation of one feed, attributed to that member.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FeedObservation {
    pub price: Price,
    /// The member's spread: max − min of the source prices behind its
    /// price (docs/PROTOCOL.md, "Spread and confidence"), same fixed point
    /// as `price`.
    pub spread: u128,
    pub observed_at_ms: TimestampMs,
    pub bid: Option<Price>,
    pub ask: Option<Price>,
    pub venues: u16,
    pub min_venues: u16,
    /// [`entry_flags`] bits.
    pub flags: u8,
}

impl FeedObservation {
    /// Price, spread and time only (no bid/ask, one venue of one needed, no flags).
    pub fn basic(price: Price, spread: u128, observed_at_ms: TimestampMs) -> Self {
        Self {
            price,
            spread,
            observed_at_ms,
            bid: None,
            ask: None,
            venues: 1,
            min_venues: 1,
            flags: 0,
        }
    }
}

/// What a leaf needs besides the observations: the feed's bounds, its
/// previous signed leaf, and the report's time.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LeafContext {
    pub policy: FeedPolicy,
    /// The feed's previous signed leaf, if this member holds one.
    pub prev: Option<EmaState>,
    /// The report's timestamp.
    pub report_ms: TimestampMs,
    /// A leaf whose (median) observation is older than this at `report_ms`
    /// is `stale`; 0: never.
    pub stale_after_ms: u64,
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
    ctx: &LeafContext,
) -> Result<ReportLeaf, AggregateError> {
    let need = min_observations.max(1);
    if observations.len() < need {
        return Err(AggregateError::NotEnoughObservations {
            feed: feed.clone(),
            have: observations.len(),
            need,
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
    let confidence = mad.max(median_spread);

    // Bid and ask over the same members (each pair uncrossed), so the
    // medians are too: order statistics keep `bid_i <= ask_i`.
    let (mut bids, mut asks): (Vec<Price>, Vec<Price>) = observations
        .iter()
        .filter_map(|o| Some((o.bid?, o.ask?)))
        .filter(|(b, a)| b <= a)
        .unzip();
    let (bid, ask) = if bids.len() >= need {
        (
            lower_median(&mut bids).unwrap_or_default(),
            lower_median(&mut asks).unwrap_or_default(),
        )
    } else {
        (0, 0)
    };
    let mut venues: Vec<u16> = observations.iter().map(|o| o.venues).collect();
    let venues = lower_median(&mut venues).unwrap_or_default();
    let mut min_venues: Vec<u16> = observations.iter().map(|o| o.min_venues).collect();
    let min_venues = lower_median(&mut min_venues).unwrap_or_default();

    let majority = |bit: u8| {
        2 * observations.iter().filter(|o| o.flags & bit != 0).count() > observations.len()
    };
    let mut bits = 0u16;
    let mut set = |cond: bool, bit: u16| {
        if cond {
            bits |= bit;
        }
    };
    set(venues < min_venues, flags::FEW_VENUES);
    set(
        ctx.policy.max_confidence_bps > 0
            && exceeds_bps(
                median.unsigned_abs(),
                confidence,
                ctx.policy.max_confidence_bps,
            ),
        flags::WIDE_CONFIDENCE,
    );
    set(majority(entry_flags::PEG_DEPARTED), flags::PEG_DEPARTED);
    set(
        ctx.policy.band_min.is_some_and(|m| median < m)
            || ctx.policy.band_max.is_some_and(|m| median > m),
        flags::OUT_OF_BAND,
    );
    set(
        ctx.policy.max_jump_bps > 0
            && ctx.prev.is_some_and(|p| {
                exceeds_bps(
                    p.price.unsigned_abs(),
                    p.price.abs_diff(median),
                    ctx.policy.max_jump_bps,
                )
            }),
        flags::UNCONFIRMED_JUMP,
    );
    set(
        ctx.stale_after_ms > 0 && ctx.report_ms.saturating_sub(observed_at_ms) > ctx.stale_after_ms,
        flags::STALE,
    );
    set(majority(entry_flags::HALTED), flags::HALTED);
    set(majority(entry_flags::MARKET_CLOSED), flags::MARKET_CLOSED);
    let status = status_of(bits);

    let e = ema::next(ctx.prev.as_ref(), median, confidence, observed_at_ms);
    Ok(ReportLeaf {
        feed_id: feed.clone(),
        price: median,
        confidence,
        num_observations: u16::try_from(observations.len()).unwrap_or(u16::MAX),
        observed_at_ms,
        bid,
        ask,
        venues,
        status,
        flags: bits,
        ema: e.ema,
        ema_confidence: e.ema_confidence,
        volatility: e.volatility,
    })
}

/// The headline status of a set of flags: the most severe condition wins.
pub fn status_of(bits: u16) -> LeafStatus {
    const DEGRADING: u16 = flags::FEW_VENUES
        | flags::WIDE_CONFIDENCE
        | flags::PEG_DEPARTED
        | flags::OUT_OF_BAND
        | flags::UNCONFIRMED_JUMP;
    if bits & flags::HALTED != 0 {
        LeafStatus::Halted
    } else if bits & flags::MARKET_CLOSED != 0 {
        LeafStatus::MarketClosed
    } else if bits & flags::STALE != 0 {
        LeafStatus::Stale
    } else if bits & DEGRADING != 0 {
        LeafStatus::Degraded
    } else {
        LeafStatus::Ok
    }
}

/// `part * 10_000 > bps * whole`, checked (an overflow of the left side is a yes).
fn exceeds_bps(whole: u128, part: u128, bps: u32) -> bool {
    match (part.checked_mul(10_000), whole.checked_mul(u128::from(bps))) {
        (Some(l), Some(r)) => l > r,
        (None, _) => true,
        (Some(_), None) => false,
    }
}

/// The last signed value of a feed, as the update decision and the next
/// leaf see it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LastValue {
    pub price: Price,
    /// Timestamp of the report that carried it.
    pub reported_at_ms: TimestampMs,
    /// What the feed's next leaf computes its EMA, volatility and jump flag
    /// from; `None` where only the price is known (e.g. read from a chain).
    #[serde(default)]
    pub leaf: Option<EmaState>,
}

impl LastValue {
    /// A price known without its leaf (the next leaf starts a new EMA).
    pub fn price_only(price: Price, reported_at_ms: TimestampMs) -> Self {
        Self {
            price,
            reported_at_ms,
            leaf: None,
        }
    }

    /// The value a signed leaf leaves behind, in a report of `reported_at_ms`.
    pub fn of_leaf(leaf: &ReportLeaf, reported_at_ms: TimestampMs) -> Self {
        Self {
            price: leaf.price,
            reported_at_ms,
            leaf: Some(EmaState {
                price: leaf.price,
                observed_at_ms: leaf.observed_at_ms,
                ema: leaf.ema,
                ema_confidence: leaf.ema_confidence,
                volatility: leaf.volatility,
            }),
        }
    }
}

/// Records a signed leaf (of a report stamped `reported_at_ms`) as its
/// feed's last value, unless a newer report already gave one: a late
/// catch-up report never rewinds the state the next leaf starts from. The
/// node, the simulator and the store's restore all follow this rule.
pub fn note_signed_leaf(
    values: &mut std::collections::BTreeMap<FeedId, LastValue>,
    leaf: &ReportLeaf,
    reported_at_ms: TimestampMs,
) {
    if values
        .get(&leaf.feed_id)
        .is_none_or(|v| v.reported_at_ms <= reported_at_ms)
    {
        values.insert(
            leaf.feed_id.clone(),
            LastValue::of_leaf(leaf, reported_at_ms),
        );
    }
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
        FeedObservation::basic(price, 0, 0)
    }

    fn ctx() -> LeafContext {
        LeafContext::default()
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
        let err = aggregate_feed(&feed, &[obs(1), obs(2)], 3, &ctx()).unwrap_err();
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
        let leaf =
            aggregate_feed(&feed, &[obs(100), obs(104), obs(90), obs(1000)], 3, &ctx()).unwrap();
        // sorted 90 100 104 1000 -> lower median 100; deviations 10 0 4 900 -> 4
        assert_eq!(leaf.price, 100);
        assert_eq!(leaf.confidence, 4);
        let mut wide = vec![obs(100), obs(100), obs(100)];
        for o in &mut wide {
            o.spread = 7;
        }
        assert_eq!(
            aggregate_feed(&feed, &wide, 3, &ctx()).unwrap().confidence,
            7
        );
    }

    #[test]
    fn update_decision() {
        let last = LastValue::price_only(10_000, 1_000);
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

    fn full(
        price: Price,
        bid: Option<Price>,
        ask: Option<Price>,
        venues: u16,
        fl: u8,
    ) -> FeedObservation {
        FeedObservation {
            bid,
            ask,
            venues,
            min_venues: 3,
            flags: fl,
            ..FeedObservation::basic(price, 2, 1_000)
        }
    }

    #[test]
    fn bid_ask_venues_and_majority_flags() {
        let feed = FeedId::new("BTC-USD").unwrap();
        let o = [
            full(100, Some(99), Some(101), 4, 0),
            full(101, Some(100), Some(103), 2, entry_flags::PEG_DEPARTED),
            full(102, Some(105), Some(104), 5, entry_flags::PEG_DEPARTED), // crossed: no bid/ask
            full(100, Some(98), Some(102), 3, entry_flags::HALTED),
        ];
        let leaf = aggregate_feed(&feed, &o, 3, &ctx()).unwrap();
        // pairs (99,101) (100,103) (98,102): bids 98 99 100, asks 101 102 103.
        assert_eq!((leaf.bid, leaf.ask), (99, 102));
        assert_eq!(leaf.venues, 3); // venues 2 3 4 5 -> lower median 3
        // PEG_DEPARTED by 2 of 4 is no strict majority; HALTED by 1 neither.
        assert_eq!(leaf.flags, 0);
        assert_eq!(leaf.status, LeafStatus::Ok);
        // Fewer than 2f + 1 uncrossed pairs: no bid/ask at all.
        let leaf = aggregate_feed(&feed, &o[1..], 3, &ctx()).unwrap();
        assert_eq!((leaf.bid, leaf.ask), (0, 0));
        assert_eq!(leaf.flags, flags::PEG_DEPARTED); // 2 of 3
        assert_eq!(leaf.status, LeafStatus::Degraded);
    }

    #[test]
    fn flags_not_clamps() {
        let feed = FeedId::new("LUNA-USD").unwrap();
        let o: Vec<FeedObservation> = (0..3).map(|_| full(10, None, None, 1, 0)).collect();
        let mut c = LeafContext {
            policy: FeedPolicy {
                band_min: Some(50),
                band_max: None,
                max_jump_bps: 2_000,
                max_confidence_bps: 1_000,
            },
            ..ctx()
        };
        let leaf = aggregate_feed(&feed, &o, 3, &c).unwrap();
        // Below the band floor: published as it is, flagged; also fewer venues than 3,
        // and a confidence of 2 on 10 is 20 % > 10 %.
        assert_eq!(leaf.price, 10);
        assert_eq!(
            leaf.flags,
            flags::OUT_OF_BAND | flags::FEW_VENUES | flags::WIDE_CONFIDENCE
        );
        assert_eq!(leaf.status, LeafStatus::Degraded);
        // A 50 % drop from the previous signed leaf is an unconfirmed jump...
        c.policy.band_min = None;
        let prev = |p: Price| EmaState {
            price: p,
            observed_at_ms: 0,
            ema: p,
            ema_confidence: 1,
            volatility: 0,
        };
        c.prev = Some(prev(20));
        let o: Vec<FeedObservation> = (0..3).map(|_| full(10, None, None, 3, 0)).collect();
        let jumped = aggregate_feed(&feed, &o, 3, &c).unwrap();
        assert_eq!(
            jumped.flags & flags::UNCONFIRMED_JUMP,
            flags::UNCONFIRMED_JUMP
        );
        assert_eq!(jumped.price, 10);
        // ... that the next round confirms by staying within the bound of it.
        c.prev = Some(prev(10));
        let o: Vec<FeedObservation> = (0..3).map(|_| full(11, None, None, 3, 0)).collect();
        let confirmed = aggregate_feed(&feed, &o, 3, &c).unwrap();
        assert_eq!(confirmed.flags & flags::UNCONFIRMED_JUMP, 0);
        // Halted beats closed beats stale beats degraded.
        assert_eq!(
            status_of(flags::HALTED | flags::MARKET_CLOSED),
            LeafStatus::Halted
        );
        assert_eq!(
            status_of(flags::MARKET_CLOSED | flags::STALE),
            LeafStatus::MarketClosed
        );
        assert_eq!(
            status_of(flags::STALE | flags::FEW_VENUES),
            LeafStatus::Stale
        );
        let stale = LeafContext {
            report_ms: 10_000,
            stale_after_ms: 2_500,
            ..ctx()
        };
        let leaf = aggregate_feed(&feed, &o, 3, &stale).unwrap();
        assert_eq!(leaf.status, LeafStatus::Stale);
    }

    /// One round of a feed as the committee sees it: three members' prices
    /// around `base`, each with its spread, at `at`.
    fn round_obs(base: Price, spreads: [u128; 3], at: TimestampMs) -> Vec<FeedObservation> {
        (0..3)
            .map(|i| FeedObservation {
                bid: Some(base - 1),
                ask: Some(base + 1),
                venues: 3,
                min_venues: 2,
                ..FeedObservation::basic(base + i as i128, spreads[i], at + i as u64)
            })
            .collect()
    }

    proptest! {
        /// A member restarted from its store (the last signed leaf of each
        /// feed, through the wire codec and the store's JSON) computes the
        /// same leaves, byte for byte, as one that never stopped.
        #[test]
        fn a_restarted_member_computes_the_same_ema_and_volatility(
            steps in proptest::collection::vec((1i128..1_000_000_000_000, any::<[u16; 3]>(), 1u64..600_000), 2..30),
            restart_at in 0usize..30,
        ) {
            let feed = FeedId::new("ETH-USD").unwrap();
            let policy = FeedPolicy { band_min: None, band_max: None, max_jump_bps: 500, max_confidence_bps: 50 };
            let mut live = std::collections::BTreeMap::new();
            let mut restarted: Option<std::collections::BTreeMap<FeedId, LastValue>> = None;
            let mut at = 1_760_000_000_000u64;
            for (i, (price, spreads, dt)) in steps.iter().enumerate() {
                at += dt;
                let obs = round_obs(*price, spreads.map(u128::from), at);
                let ctx_of = |m: &std::collections::BTreeMap<FeedId, LastValue>| LeafContext {
                    policy,
                    prev: m.get(&feed).and_then(|v| v.leaf),
                    report_ms: at + 10,
                    stale_after_ms: 2_500,
                };
                let a = aggregate_feed(&feed, &obs, 3, &ctx_of(&live)).unwrap();
                if let Some(r) = restarted.as_mut() {
                    let b = aggregate_feed(&feed, &obs, 3, &ctx_of(r)).unwrap();
                    prop_assert_eq!(crate::encoding::encode_leaf(&a), crate::encoding::encode_leaf(&b));
                    note_signed_leaf(r, &b, at + 10);
                }
                note_signed_leaf(&mut live, &a, at + 10);
                if i == restart_at {
                    // What the store keeps and a restart reads back.
                    use crate::codec::{Decode, Encode};
                    let stored = ReportLeaf::from_bytes(&a.to_bytes()).unwrap();
                    let json = serde_json::to_vec(&stored).unwrap();
                    let stored: ReportLeaf = serde_json::from_slice(&json).unwrap();
                    let mut m = std::collections::BTreeMap::new();
                    note_signed_leaf(&mut m, &stored, at + 10);
                    restarted = Some(m);
                }
            }
        }

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
            let leaf = aggregate_feed(&feed, &all, 2 * f + 1, &ctx()).unwrap();
            let lo = *honest.iter().min().unwrap();
            let hi = *honest.iter().max().unwrap();
            prop_assert!(lo <= leaf.price && leaf.price <= hi, "{} not in [{lo}, {hi}]", leaf.price);
        }
    }
}
