//! Deterministic transcendental functions for option pricing.
//!
//! `f64::exp`/`ln` call the platform's libm, whose last bit may differ
//! between machines; two nodes could then round a premium differently. These
//! versions use only `+ - * /` and `sqrt` (correctly rounded by IEEE 754), so
//! every node and every replay computes the same bits.

// fdlibm's split of ln 2: the high part has 32 trailing zero bits, so
// k * LN2_HI is exact for the k used here.
const LN2_HI: f64 = f64::from_bits(0x3fe6_2e42_fee0_0000);
const LN2_LO: f64 = f64::from_bits(0x3dea_39ef_3579_3c76);
const LN2: f64 = std::f64::consts::LN_2;

/// 2^k for k in the normal exponent range, built from its bits (exact).
fn pow2(k: i64) -> f64 {
    if k > 1023 {
        f64::INFINITY
    } else if k < -1022 {
        0.0
    } else {
        #[allow(clippy::cast_sign_loss, reason = "k + 1023 is in 1..=2046 here")]
        let biased = (k + 1023) as u64;
        f64::from_bits(biased << 52)
    }
}

/// e^x, relative error ~1e-16 over the range used by option pricing.
pub fn exp(x: f64) -> f64 {
    if x.is_nan() {
        return f64::NAN;
    }
    if x > 709.0 {
        return f64::INFINITY;
    }
    if x < -708.0 {
        return 0.0;
    }
    let k = (x / LN2).round();
    let r = (x - k * LN2_HI) - k * LN2_LO;
    // Taylor series to r^14/14!: |r| <= 0.347, error < 1e-18.
    let mut term = 1.0;
    let mut sum = 1.0;
    for i in 1..=14 {
        term = term * r / f64::from(i);
        sum += term;
    }
    #[allow(
        clippy::cast_possible_truncation,
        reason = "k = round(x / ln 2) with x in -708..=709: |k| <= 1023"
    )]
    let k = k as i64;
    sum * pow2(k)
}

/// ln(x) for x > 0 (NaN otherwise).
pub fn ln(x: f64) -> f64 {
    if x.is_nan() || x <= 0.0 || x < f64::MIN_POSITIVE {
        return f64::NAN;
    }
    if x.is_infinite() {
        return f64::INFINITY;
    }
    let bits = x.to_bits();
    let mut e = ((bits >> 52) & 0x7ff) as i64 - 1023;
    let mut m = f64::from_bits((bits & 0x000f_ffff_ffff_ffff) | 0x3ff0_0000_0000_0000);
    if m > std::f64::consts::SQRT_2 {
        m /= 2.0;
        e += 1;
    }
    // ln m = 2 atanh z, |z| <= 0.1716; terms to z^23 give error < 1e-18.
    let z = (m - 1.0) / (m + 1.0);
    let z2 = z * z;
    let mut pow = z;
    let mut sum = 0.0;
    let mut n = 1.0;
    for _ in 0..12 {
        sum += pow / n;
        pow *= z2;
        n += 2.0;
    }
    (e as f64) * LN2_HI + ((e as f64) * LN2_LO + 2.0 * sum)
}

/// Standard normal density.
pub fn norm_pdf(x: f64) -> f64 {
    // 1/sqrt(2 pi)
    0.398_942_280_401_432_7 * exp(-0.5 * x * x)
}

/// Standard normal distribution function (Marsaglia 2004 series), absolute
/// error ~1e-15.
pub fn norm_cdf(x: f64) -> f64 {
    if x.is_nan() {
        return f64::NAN;
    }
    if x < -37.0 {
        return 0.0;
    }
    if x > 37.0 {
        return 1.0;
    }
    if x.abs() > 8.0 {
        // Asymptotic tail: the series below needs too many terms here.
        let t = norm_pdf(x.abs()) / x.abs() * (1.0 - 1.0 / (x * x) + 3.0 / (x * x * x * x));
        return if x < 0.0 { t } else { 1.0 - t };
    }
    let q = x * x;
    let mut s = x;
    let mut b = x;
    let mut i = 1.0;
    for _ in 0..400 {
        let t = s;
        i += 2.0;
        b *= q / i;
        s = t + b;
        if s == t {
            break;
        }
    }
    0.5 + s * exp(-0.5 * q - 0.918_938_533_204_672_8)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64, tol: f64) -> bool {
        (a - b).abs() <= tol * b.abs().max(1.0)
    }

    #[test]
    fn exp_ln_match_std_closely() {
        for i in -400..400 {
            let x = f64::from(i) * 0.173;
            assert!(close(exp(x), x.exp(), 1e-14), "exp({x})");
        }
        for i in 1..500 {
            let x = f64::from(i) * 0.0371;
            assert!(close(ln(x), x.ln(), 1e-14), "ln({x})");
            assert!(close(ln(x * 1e9), (x * 1e9).ln(), 1e-14));
        }
    }

    #[test]
    fn cdf_known_values() {
        assert!(close(norm_cdf(0.0), 0.5, 1e-15));
        assert!((norm_cdf(1.0) - 0.841_344_746_068_542_9).abs() < 1e-14);
        assert!((norm_cdf(-1.959_963_984_540_054) - 0.025).abs() < 1e-14);
        assert!((norm_cdf(-10.0) - 7.619_853_024_160_527e-24).abs() < 1e-25);
        assert!(norm_cdf(9.0) > 0.999_999_999_999);
    }
}
