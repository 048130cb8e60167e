//! The EMA, its confidence and the realised volatility of a feed: a pure
//! function of the feed's previous signed leaf, this round's aggregate and
//! the time between them (docs/PROTOCOL.md, "EMA and volatility").
//!
//! Every member computes these from the last *signed* leaf of the feed it
//! holds (a restarted member reads it from its store), so the same inputs
//! give the same bytes everywhere. Integer arithmetic only, fixed point
//! `Q = 2^32` for weights:
//!
//! ```text
//! α        = 1 − exp(−Δt / τ),   τ = 1 hour, Δt = observedAt − prev.observedAt (ms, ≥ 0)
//! c, e     = max(confidence, 1), max(prev.emaConfidence, 1)
//! ema      = prev.ema + (price − prev.ema) · α·e / ((1 − α)·c + α·e)
//! emaConf  = c·e / ((1 − α)·c + α·e)          (1/emaConf = (1−α)/e + α/c)
//! r        = ln(price / prev.price) ≈ 2u + 2u³/3,  u = (price − prev)/(price + prev)
//! var      = (1 − α)·prev.volatility² + α · r² · YEAR / Δt
//! vol      = floor(sqrt(var))                 (fraction with 9 decimals, per year)
//! ```
//!
//! This is Pyth's confidence-weighted EMA (each price weighted by
//! `decay / confidence`) written as a recursion whose whole state is the
//! previous leaf's `ema` and `emaConfidence`: with the decay weights
//! normalised to sum 1, the sum of the weights `Σ decay_i / conf_i` is
//! exactly `1 / emaConfidence`. Pyth decays per slot (~1 h); Sibyl decays
//! by elapsed time, so a feed published every second or once a minute gets
//! the same one-hour memory.

use crate::report::{Price, TimestampMs};

/// The EMA's time constant: one hour.
pub const EMA_TIME_CONSTANT_MS: u64 = 3_600_000;
/// Milliseconds in a (365-day) year, for annualising the variance.
pub const YEAR_MS: u64 = 365 * 24 * 3_600_000;
/// Fixed point of [`ReportLeaf::volatility`](crate::ReportLeaf::volatility): 1e9 = 100 % a year.
pub const VOLATILITY_ONE: u64 = 1_000_000_000;

const Q_BITS: u32 = 32;
const Q: u128 = 1 << Q_BITS;
/// ln 2 in Q32, rounded.
const LN2_Q: u64 = 2_977_044_472;
/// Confidences above this are shifted down (both together) before weighting,
/// so every product stays inside u128.
const WEIGHT_BITS: u32 = 46;

/// What the previous signed leaf of a feed hands to the next one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct EmaState {
    pub price: Price,
    pub observed_at_ms: TimestampMs,
    pub ema: Price,
    pub ema_confidence: u128,
    pub volatility: u64,
}

/// The EMA fields of a new leaf.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EmaFields {
    pub ema: Price,
    pub ema_confidence: u128,
    pub volatility: u64,
}

/// The next EMA, EMA confidence and volatility. Without a previous leaf the
/// EMA starts at the price with its confidence and the volatility at 0.
pub fn next(
    prev: Option<&EmaState>,
    price: Price,
    confidence: u128,
    observed_at_ms: TimestampMs,
) -> EmaFields {
    let Some(prev) = prev else {
        return EmaFields {
            ema: price,
            ema_confidence: confidence,
            volatility: 0,
        };
    };
    let elapsed = observed_at_ms.saturating_sub(prev.observed_at_ms);
    if elapsed == 0 {
        return EmaFields {
            ema: prev.ema,
            ema_confidence: prev.ema_confidence,
            volatility: prev.volatility,
        };
    }
    let a = Q - decay_q(elapsed);
    let (ema, ema_confidence) = if a == Q {
        (price, confidence)
    } else {
        weighted(prev.ema, prev.ema_confidence, price, confidence, a)
    };
    EmaFields {
        ema,
        ema_confidence,
        volatility: volatility(prev, price, elapsed, a),
    }
}

/// The confidence-weighted step, `0 < a < Q`.
fn weighted(prev_ema: Price, prev_conf: u128, price: Price, conf: u128, a: u128) -> (Price, u128) {
    let c = conf.max(1);
    let e = prev_conf.max(1);
    let shift = (128 - c.max(e).leading_zeros()).saturating_sub(WEIGHT_BITS);
    let c = (c >> shift).max(1);
    let e = (e >> shift).max(1);
    // c, e < 2^46 and a <= 2^32: every product below fits.
    let d = (Q - a) * c + a * e;
    let w = a * e * Q / d; // 0..=Q
    let ema = match price.checked_sub(prev_ema) {
        Some(diff) => prev_ema.saturating_add(mul_div_i128(diff, w, Q)),
        None => price, // opposite extremes of i128: start over at the price
    };
    // c·e / ((1 − α)c + αe) with α = a/Q; at most max(c, e) < 2^46 before the shift back.
    let ema_conf = (c * e * Q / d).checked_shl(shift).unwrap_or(u128::MAX);
    (ema, ema_conf)
}

fn volatility(prev: &EmaState, price: Price, elapsed: u64, a: u128) -> u64 {
    let var_prev = u128::from(prev.volatility) * u128::from(prev.volatility);
    let sample = match log_return_q(prev.price, price) {
        Some(r) => {
            let r2 = r.unsigned_abs() * r.unsigned_abs(); // Q64, < 2^68
            // r² in units of 1e-18, then per year.
            let r2 = r2.saturating_mul(1_000_000_000_000_000_000) >> 64;
            r2.saturating_mul(u128::from(YEAR_MS)) / u128::from(elapsed)
        }
        // No log return (a non-positive price): the variance only decays.
        None => 0,
    };
    let var = if sample >= var_prev {
        var_prev.saturating_add(mul_div_u128(sample - var_prev, a, Q))
    } else {
        var_prev - mul_div_u128(var_prev - sample, a, Q)
    };
    u64::try_from(var.isqrt()).unwrap_or(u64::MAX)
}

/// `ln(new / old)` in Q32 as `2u + 2u³/3` with `u = (new − old)/(new + old)`;
/// `None` unless both prices are positive.
pub fn log_return_q(old: Price, new: Price) -> Option<i128> {
    if old <= 0 || new <= 0 {
        return None;
    }
    let (mut o, mut n) = (old.unsigned_abs(), new.unsigned_abs());
    while (o | n) >= 1 << 92 {
        o >>= 1;
        n >>= 1;
    }
    let sum = i128::try_from(o + n).ok()?.max(1);
    let diff = i128::try_from(n).ok()? - i128::try_from(o).ok()?;
    let u = diff * (1 << Q_BITS) / sum; // |u| <= Q
    let u3 = u * u / (1 << Q_BITS) * u / (1 << Q_BITS);
    Some(2 * u + 2 * u3 / 3)
}

/// `exp(−elapsed / τ)` in Q32, from `2^−n · exp(−r)` with `r < ln 2` and a
/// 12-term Taylor series (error far below one unit of Q32).
pub fn decay_q(elapsed_ms: u64) -> u128 {
    let x = u128::from(elapsed_ms) * Q / u128::from(EMA_TIME_CONSTANT_MS);
    if x >= 45 * Q {
        return 0;
    }
    // x < 45 · 2^32 < 2^38 and every term below is <= 2^32: u64 suffices
    // (a u128 division costs several times a u64 one, and this runs per leaf).
    let Ok(x) = u64::try_from(x) else { return 0 };
    let n = x / LN2_Q;
    let r = x - n * LN2_Q;
    let (mut pos, mut neg, mut term) = (1u64 << Q_BITS, 0u64, 1u64 << Q_BITS);
    for i in 1..=12u64 {
        term = ((term * r) >> Q_BITS) / i;
        if i % 2 == 1 {
            neg += term;
        } else {
            pos += term;
        }
    }
    let n = u32::try_from(n).unwrap_or(63).min(63);
    u128::from((pos - neg) >> n)
}

/// `x · num / den` with `num <= den`, exact up to rounding toward zero; never overflows.
fn mul_div_i128(x: i128, num: u128, den: u128) -> i128 {
    let neg = x < 0;
    let m = mul_div_u128(x.unsigned_abs(), num, den);
    // m <= |x|, so it fits back (|i128::MIN| only when num == den).
    let m = i128::try_from(m).unwrap_or(i128::MAX);
    if neg {
        m.checked_neg().unwrap_or(i128::MIN)
    } else {
        m
    }
}

/// `x · num / den` with `num <= den < 2^64`, rounded down; never overflows.
fn mul_div_u128(x: u128, num: u128, den: u128) -> u128 {
    let (q, r) = (x / den, x % den);
    q * num + r * num / den
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn state(price: Price, at: u64) -> EmaState {
        EmaState {
            price,
            observed_at_ms: at,
            ema: price,
            ema_confidence: 10,
            volatility: 0,
        }
    }

    #[test]
    fn decay_matches_the_exponential() {
        assert_eq!(decay_q(0), Q);
        for (ms, want) in [
            (1_000u64, (-1.0f64 / 3600.0).exp()),
            (3_600_000, (-1.0f64).exp()),
            (36_000_000, (-10.0f64).exp()),
        ] {
            let got = decay_q(ms) as f64 / Q as f64;
            assert!((got - want).abs() < 1e-8, "{ms}: {got} vs {want}");
        }
        assert_eq!(decay_q(u64::MAX), 0);
    }

    #[test]
    fn log_return_is_close_to_ln() {
        // The error of 2u + 2u³/3 is about 2u⁵/5: below 1e-6 up to ±10 %,
        // about 0.5 % of the return for a factor of 2.3.
        for (a, b, tol) in [
            (100i128, 101i128, 1e-8),
            (100, 90, 1e-6),
            (1_000_000, 1_100_000, 1e-6),
            (7, 3, 5e-3),
        ] {
            let got = log_return_q(a, b).unwrap() as f64 / Q as f64;
            let want = (b as f64 / a as f64).ln();
            assert!((got - want).abs() <= tol, "{a}->{b}: {got} vs {want}");
        }
        assert_eq!(log_return_q(0, 5), None);
        assert!(log_return_q(i128::MAX, i128::MAX - 1).is_some());
    }

    #[test]
    fn one_time_constant_moves_the_ema_most_of_the_way() {
        // Equal confidences: after τ the EMA covers 1 − 1/e ≈ 63.2 % of a step.
        let prev = EmaState {
            ema_confidence: 100,
            ..state(1_000_000, 0)
        };
        let f = next(Some(&prev), 2_000_000, 100, EMA_TIME_CONSTANT_MS);
        assert!((1_632_000..=1_633_000).contains(&f.ema), "{}", f.ema);
        assert_eq!(f.ema_confidence, 100);
        // A price ten times less certain moves it about ten times less.
        let g = next(Some(&prev), 2_000_000, 1_000, EMA_TIME_CONSTANT_MS);
        assert!((1_140_000..=1_150_000).contains(&g.ema), "{}", g.ema);
        assert!(g.ema_confidence > 100 && g.ema_confidence < 1_000);
    }

    #[test]
    fn volatility_of_a_steady_random_walk_is_annualised() {
        // ±1 % every hour: hourly σ = 1 %, annual σ = 1 % · sqrt(8760) ≈ 93.6 %.
        let mut prev = state(1_000_000_000, 0);
        let mut vol = 0;
        for i in 1..=200u64 {
            let price = if i % 2 == 0 {
                1_000_000_000
            } else {
                1_010_000_000
            };
            let f = next(Some(&prev), price, 10, i * 3_600_000);
            prev = EmaState {
                price,
                observed_at_ms: i * 3_600_000,
                ema: f.ema,
                ema_confidence: f.ema_confidence,
                volatility: f.volatility,
            };
            vol = f.volatility;
        }
        assert!((920_000_000..=950_000_000).contains(&vol), "{vol}");
    }

    #[test]
    fn no_time_no_change_and_first_leaf_starts_at_the_price() {
        let prev = state(500, 10);
        let f = next(Some(&prev), 900, 3, 10);
        assert_eq!((f.ema, f.ema_confidence, f.volatility), (500, 10, 0));
        let f = next(None, 900, 3, 10);
        assert_eq!((f.ema, f.ema_confidence, f.volatility), (900, 3, 0));
    }

    proptest! {
        #[test]
        fn ema_stays_between_the_previous_ema_and_the_price(
            ema in any::<i128>(), price in any::<i128>(),
            ec in any::<u128>(), c in any::<u128>(),
            vol in any::<u64>(), elapsed in 1u64..100_000_000,
        ) {
            let prev = EmaState { price: ema, observed_at_ms: 0, ema, ema_confidence: ec, volatility: vol };
            let f = next(Some(&prev), price, c, elapsed);
            prop_assert!(f.ema >= ema.min(price) && f.ema <= ema.max(price));
            prop_assert!(f.ema_confidence <= ec.max(c).max(1));
        }
    }
}
