//! Fixed-point money, prices and quantities with checked arithmetic.
//!
//! Every amount the engine stores or compares is an `i128` at one of three
//! scales. Floats exist only inside option pricing (`options`), and are
//! rounded to these scales at the boundary.

use crate::error::EngineError;

/// Prices (feeds, marks, option premiums, strikes) carry 8 decimals.
pub const PRICE_DECIMALS: u8 = 8;
/// 10^PRICE_DECIMALS.
pub const PRICE_SCALE: i128 = 100_000_000;
/// Quantities (position sizes, collateral amounts in base units) carry 8 decimals.
pub const QTY_SCALE: i128 = 100_000_000;
/// Money (quote currency: balances, equity, requirements, fees) carries 6 decimals.
pub const MONEY_SCALE: i128 = 1_000_000;
/// Rates and fractions are parts per million.
pub const PPM: i128 = 1_000_000;
/// qty * price / VALUE_DIVISOR = money.
pub const VALUE_DIVISOR: i128 = QTY_SCALE * PRICE_SCALE / MONEY_SCALE;

/// The quote asset: deposits of it are cash, everything is valued in it.
pub const QUOTE_ASSET: &str = "USD";

pub fn overflow(what: &'static str) -> EngineError {
    EngineError::Overflow { what }
}

pub fn add(a: i128, b: i128, what: &'static str) -> Result<i128, EngineError> {
    a.checked_add(b).ok_or_else(|| overflow(what))
}

pub fn sub(a: i128, b: i128, what: &'static str) -> Result<i128, EngineError> {
    a.checked_sub(b).ok_or_else(|| overflow(what))
}

pub fn mul(a: i128, b: i128, what: &'static str) -> Result<i128, EngineError> {
    a.checked_mul(b).ok_or_else(|| overflow(what))
}

/// floor(a * b / d) for d > 0: rounding toward negative infinity, so the same
/// inputs give the same integer everywhere.
pub fn mul_div_floor(a: i128, b: i128, d: i128, what: &'static str) -> Result<i128, EngineError> {
    let p = mul(a, b, what)?;
    Ok(div_euclid(p, d))
}

/// ceil(a * b / d) for d > 0: used for requirements and fees (round against
/// the account).
pub fn mul_div_ceil(a: i128, b: i128, d: i128, what: &'static str) -> Result<i128, EngineError> {
    let p = mul(a, b, what)?;
    let q = div_euclid(p, d);
    // The remainder from the quotient (one division, not two): it lies in
    // 0..d, so the wrapping arithmetic that finds it is exact.
    Ok(if p.wrapping_sub(q.wrapping_mul(d)) == 0 {
        q
    } else {
        q + 1
    })
}

/// `p.div_euclid(d)`, on the processor's 64-bit division when both fit in
/// an i64 (most requirements and ppm fractions): i128 division is a
/// library call several times slower. The same quotient either way.
fn div_euclid(p: i128, d: i128) -> i128 {
    match (i64::try_from(p), i64::try_from(d)) {
        (Ok(p), Ok(d)) => i128::from(p.div_euclid(d)),
        _ => p.div_euclid(d),
    }
}

/// floor(qty × x / QTY_SCALE) without forming the full product, so a size
/// times an 18-decimal Greek does not overflow before the division.
pub fn qty_times(qty: i128, x: i128, what: &'static str) -> Result<i128, EngineError> {
    let whole = mul(qty.div_euclid(QTY_SCALE), x, what)?;
    let part = mul_div_floor(qty.rem_euclid(QTY_SCALE), x, QTY_SCALE, what)?;
    add(whole, part, what)
}

/// A Greek (18 decimals) at the price scale (8 decimals), rounded away from
/// zero so reserves built on it stay conservative.
pub fn greek_to_price(x: i128) -> i128 {
    const F: i128 = crate::types::GREEK_SCALE / PRICE_SCALE;
    let q = x / F;
    if x % F == 0 { q } else { q + x.signum() }
}

/// Money value of `qty` at `price` (floor).
pub fn value(qty: i128, price: i128) -> Result<i128, EngineError> {
    let p = mul(qty, price, "position value")?;
    // 1e10 = 2^10 × 5^10 and floor(floor(p / a) / b) = floor(p / ab): a
    // shift, then a 64-bit division by a constant (a multiplication) for
    // every product below 2^73 (a size of 1e4 at a price of 1e8 and
    // more), where dividing the i128 by 1e10 is a library call.
    const FIVES: i128 = 9_765_625;
    const _: () = assert!(VALUE_DIVISOR == 1024 * FIVES);
    let shifted = p >> 10;
    Ok(match i64::try_from(shifted) {
        Ok(s) => i128::from(s.div_euclid(9_765_625)),
        Err(_) => shifted.div_euclid(FIVES),
    })
}

/// `amount * ppm / 1e6`, rounded up.
pub fn ppm_ceil(amount: i128, ppm: i128) -> Result<i128, EngineError> {
    mul_div_ceil(amount, ppm, PPM, "ppm fraction")
}

/// `amount * ppm / 1e6`, rounded down.
pub fn ppm_floor(amount: i128, ppm: i128) -> Result<i128, EngineError> {
    mul_div_floor(amount, ppm, PPM, "ppm fraction")
}

/// Rescales a feed price with `decimals` to PRICE_DECIMALS, rounding half
/// away from zero when decimals are dropped.
pub fn rescale(value: i128, decimals: u8) -> Result<i128, EngineError> {
    let d = i32::from(decimals) - i32::from(PRICE_DECIMALS);
    if d <= 0 {
        let f = 10i128
            .checked_pow(d.unsigned_abs())
            .ok_or_else(|| overflow("price rescale"))?;
        mul(value, f, "price rescale")
    } else {
        let f = 10i128
            .checked_pow(d.unsigned_abs())
            .ok_or_else(|| overflow("price rescale"))?;
        let q = value / f;
        let r = value % f;
        Ok(if r.abs() * 2 >= f {
            q + value.signum()
        } else {
            q
        })
    }
}

/// Rounds a float to the nearest integer of `scale` (half away from zero).
/// The single float-to-integer boundary of the crate.
pub fn round_to_scale(x: f64, scale: i128, what: &'static str) -> Result<i128, EngineError> {
    let y = (x * scale as f64).round();
    // 1.7e38 is i128's range; stay well inside it.
    if !y.is_finite() || y.abs() > 1e36 {
        return Err(EngineError::Pricing {
            what,
            detail: format!("non-finite or huge value {x}"),
        });
    }
    #[allow(
        clippy::cast_possible_truncation,
        reason = "y is a finite integer-valued float of magnitude <= 1e36 < i128::MAX"
    )]
    Ok(y as i128)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounding_is_directional() {
        assert_eq!(mul_div_floor(-7, 1, 2, "t").unwrap(), -4);
        assert_eq!(mul_div_ceil(-7, 1, 2, "t").unwrap(), -3);
        assert_eq!(mul_div_ceil(7, 1, 2, "t").unwrap(), 4);
        assert_eq!(
            value(QTY_SCALE, 50_000 * PRICE_SCALE).unwrap(),
            50_000 * MONEY_SCALE
        );
    }

    /// The 64-bit fast path and the remainder taken from the quotient
    /// give the plain i128 floor and ceiling on both sides of the i64
    /// range, for either sign and divisors of every size.
    #[test]
    fn mul_div_matches_i128_division_at_every_size() {
        let (min, max) = (i128::from(i64::MIN), i128::from(i64::MAX));
        let ps = [
            0,
            1,
            -1,
            7,
            -7,
            999_999,
            -1_000_001,
            max,
            max + 1,
            max - 1,
            min,
            min - 1,
            min + 1,
            max * 3 + 2,
            min * 5 - 4,
            i128::MAX,
            i128::MIN + 1,
            i128::MAX - 5,
            i128::MIN / 3,
        ];
        let ds = [
            1,
            2,
            3,
            7,
            PPM,
            VALUE_DIVISOR,
            max,
            max + 1,
            max * 2 + 1,
            i128::MAX,
        ];
        for p in ps {
            for d in ds {
                let floor = p.div_euclid(d);
                let ceil = floor + i128::from(p.rem_euclid(d) != 0);
                assert_eq!(mul_div_floor(p, 1, d, "t").unwrap(), floor, "{p} / {d}");
                assert_eq!(mul_div_ceil(p, 1, d, "t").unwrap(), ceil, "{p} / {d}");
            }
        }
        assert!(mul_div_floor(i128::MAX, 2, 3, "t").is_err());
        // Values: the shift-and-divide path against i128 division by 1e10.
        for p in ps {
            for q in [1, -1, 3, -7, QTY_SCALE, 1 << 40] {
                if let Some(x) = p.checked_mul(q) {
                    let v = value(p, q).unwrap();
                    assert_eq!(v, x.div_euclid(VALUE_DIVISOR), "{p} × {q}");
                    assert_eq!(value(q, p).unwrap(), v);
                }
            }
        }
        for (q, price) in [
            (QTY_SCALE, 50_000 * PRICE_SCALE),
            (-QTY_SCALE / 3, 7 * PRICE_SCALE / 3),
        ] {
            assert_eq!(
                value(q, price).unwrap(),
                (q * price).div_euclid(VALUE_DIVISOR)
            );
        }
        assert!(value(i128::MAX, 2).is_err());
        // And random operands of every bit length.
        let mut x = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for _ in 0..200_000 {
            let bits = |r: u64| (r % 126) as u32;
            let a = (i128::from(next()) << 64 | i128::from(next())) >> bits(next());
            let b = (i128::from(next()) << 64 | i128::from(next())) >> (bits(next()) + 1);
            let d = (i128::from(next()) >> (bits(next()) % 64)).max(1);
            if let Some(p) = a.checked_mul(b) {
                assert_eq!(
                    value(a, b).unwrap(),
                    p.div_euclid(VALUE_DIVISOR),
                    "{a} × {b}"
                );
                let floor = p.div_euclid(d);
                assert_eq!(mul_div_floor(a, b, d, "t").unwrap(), floor);
                let ceil = floor + i128::from(p.rem_euclid(d) != 0);
                assert_eq!(mul_div_ceil(a, b, d, "t").unwrap(), ceil);
            }
        }
    }

    #[test]
    fn qty_times_is_the_exact_floor() {
        for (q, x) in [
            (7 * QTY_SCALE / 2, 3),
            (-7, 10i128.pow(18)),
            (-QTY_SCALE - 1, 5),
        ] {
            assert_eq!(
                qty_times(q, x, "t").unwrap(),
                (q * x).div_euclid(QTY_SCALE),
                "{q} × {x}"
            );
        }
        // 1e9 contracts × a vega of 1e4 (1e22 at 18 decimals): the full
        // product (1e39) would overflow i128, the result (1e31) does not.
        let big = qty_times(10i128.pow(17) + 1, 10i128.pow(22), "t").unwrap();
        assert_eq!(big, 10i128.pow(31) + 10i128.pow(14));
        assert_eq!(greek_to_price(-1), -1);
        assert_eq!(greek_to_price(10i128.pow(10)), 1);
    }

    #[test]
    fn rescale_both_ways() {
        assert_eq!(rescale(123, 2).unwrap(), 123_000_000);
        assert_eq!(rescale(123_456_789_015, 10).unwrap(), 1_234_567_890);
        assert_eq!(rescale(123_456_789_050, 10).unwrap(), 1_234_567_891);
        assert!(rescale(i128::MAX / 2, 0).is_err());
    }
}
