//! Exact decimal-string to fixed-point conversion.
//!
//! Exchanges send prices as decimal strings ("67012.34000000") or JSON numbers
//! (Bitfinex, HTX, Kraken WebSocket). Both are parsed from their literal text,
//! never through `f64`, so a price reaches the observation digit for digit.

use crate::error::PriceError;

/// Largest exponent accepted in scientific notation; anything beyond it is
/// absurd for a price or a volume and would only risk overflow.
const MAX_EXPONENT: i64 = 40;

/// Parse a decimal literal (`"123.45"`, `"-1"`, `"1.2e-5"`) into a fixed-point
/// integer with `decimals` fractional digits, rounding half away from zero.
///
/// Rejects empty strings, `NaN`/`Infinity`, stray characters and values that
/// do not fit in an `i128`. Sign is kept: callers decide whether negative or
/// zero values are acceptable (prices: not).
pub fn parse_fixed(text: &str, decimals: u32) -> Result<i128, PriceError> {
    let s = text.trim();
    if s.is_empty() {
        return Err(PriceError::Empty);
    }
    let lower = s.to_ascii_lowercase();
    if lower.contains("nan") || lower.contains("inf") {
        return Err(PriceError::NonFinite(truncate(s)));
    }
    let (negative, body) = match s.as_bytes()[0] {
        b'-' => (true, &s[1..]),
        b'+' => (false, &s[1..]),
        _ => (false, s),
    };
    let (mantissa, exponent) = match body.find(['e', 'E']) {
        Some(i) => {
            let exp: i64 = body[i + 1..]
                .parse()
                .map_err(|_| PriceError::Malformed(truncate(s)))?;
            if exp.abs() > MAX_EXPONENT {
                return Err(PriceError::Absurd(truncate(s)));
            }
            (&body[..i], exp)
        }
        None => (body, 0),
    };
    let (int_part, frac_part) = match mantissa.find('.') {
        Some(i) => (&mantissa[..i], &mantissa[i + 1..]),
        None => (mantissa, ""),
    };
    if int_part.is_empty() && frac_part.is_empty() {
        return Err(PriceError::Malformed(truncate(s)));
    }
    if !int_part.bytes().all(|b| b.is_ascii_digit())
        || !frac_part.bytes().all(|b| b.is_ascii_digit())
    {
        return Err(PriceError::Malformed(truncate(s)));
    }
    // All digits as one integer string; the decimal point sits `frac_len - exponent`
    // places from the right.
    let digits: String = int_part.chars().chain(frac_part.chars()).collect();
    let digits = digits.trim_start_matches('0');
    let point_from_right = frac_part.len() as i64 - exponent;
    // We want value * 10^decimals: shift = decimals - point_from_right.
    let shift = decimals as i64 - point_from_right;
    let value: i128 = if digits.is_empty() {
        0
    } else if shift >= 0 {
        let base = parse_digits(digits, s)?;
        let scale = pow10(shift as u32).ok_or_else(|| PriceError::Absurd(truncate(s)))?;
        base.checked_mul(scale)
            .ok_or_else(|| PriceError::Absurd(truncate(s)))?
    } else {
        // Drop `-shift` trailing digits, rounding half away from zero.
        let drop = (-shift) as usize;
        if drop > digits.len() {
            // Everything is below the last kept digit; only rounding can matter,
            // and only when exactly `drop == len` and the first digit >= 5.
            0
        } else {
            let (keep, dropped) = digits.split_at(digits.len() - drop);
            let base = if keep.is_empty() {
                0
            } else {
                parse_digits(keep, s)?
            };
            let round_up = dropped.as_bytes().first().is_some_and(|d| *d >= b'5');
            if round_up {
                base.checked_add(1)
                    .ok_or_else(|| PriceError::Absurd(truncate(s)))?
            } else {
                base
            }
        }
    };
    Ok(if negative { -value } else { value })
}

fn parse_digits(digits: &str, original: &str) -> Result<i128, PriceError> {
    if digits.len() > 38 {
        return Err(PriceError::Absurd(truncate(original)));
    }
    digits
        .parse::<i128>()
        .map_err(|_| PriceError::Absurd(truncate(original)))
}

/// `10^exp` as an `i128`, `None` past 10^38.
pub fn pow10(exp: u32) -> Option<i128> {
    10i128.checked_pow(exp)
}

/// Render a fixed-point integer as a decimal string (for logs and the CLI).
pub fn format_fixed(value: i128, decimals: u32) -> String {
    let negative = value < 0;
    let abs = value.unsigned_abs();
    let scale = 10u128.pow(decimals);
    let int = abs / scale;
    let frac = abs % scale;
    let sign = if negative { "-" } else { "" };
    if decimals == 0 {
        format!("{sign}{int}")
    } else {
        format!("{sign}{int}.{frac:0width$}", width = decimals as usize)
    }
}

/// Convert between decimal scales, rounding half away from zero when digits
/// are dropped.
pub fn rescale(value: i128, from: u32, to: u32) -> Option<i128> {
    if to >= from {
        value.checked_mul(pow10(to - from)?)
    } else {
        let div = pow10(from - to)?;
        let q = value / div;
        let r = (value % div).abs();
        if r * 2 >= div {
            Some(if value < 0 { q - 1 } else { q + 1 })
        } else {
            Some(q)
        }
    }
}

fn truncate(s: &str) -> String {
    s.chars().take(40).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_plain_decimals_exactly() {
        assert_eq!(parse_fixed("67012.34000000", 8), Ok(6_701_234_000_000));
        assert_eq!(parse_fixed("0.1", 8), Ok(10_000_000));
        assert_eq!(parse_fixed("1", 0), Ok(1));
        assert_eq!(parse_fixed("  42.5 ", 2), Ok(4250));
        assert_eq!(parse_fixed(".5", 1), Ok(5));
        assert_eq!(parse_fixed("5.", 1), Ok(50));
        assert_eq!(parse_fixed("-3.25", 2), Ok(-325));
    }

    #[test]
    fn rounds_half_away_from_zero() {
        assert_eq!(parse_fixed("1.005", 2), Ok(101));
        assert_eq!(parse_fixed("1.0049999", 2), Ok(100));
        assert_eq!(parse_fixed("-1.005", 2), Ok(-101));
        assert_eq!(parse_fixed("0.000000004", 8), Ok(0));
        assert_eq!(parse_fixed("0.000000005", 8), Ok(1));
    }

    #[test]
    fn parses_scientific_notation() {
        assert_eq!(parse_fixed("1.2e-5", 8), Ok(1200));
        assert_eq!(parse_fixed("6.7E4", 2), Ok(6_700_000));
        assert_eq!(parse_fixed("1e2", 0), Ok(100));
    }

    #[test]
    fn rejects_garbage() {
        for bad in [
            "", "abc", "1.2.3", "--1", "1e", "NaN", "nan", "Infinity", "-inf", "1,5", "0x10",
            "1e999",
        ] {
            assert!(parse_fixed(bad, 8).is_err(), "{bad:?} must be rejected");
        }
        assert!(matches!(
            parse_fixed("NaN", 8),
            Err(PriceError::NonFinite(_))
        ));
        assert!(matches!(
            parse_fixed("999999999999999999999999999999999999", 8),
            Err(PriceError::Absurd(_))
        ));
    }

    #[test]
    fn formats_and_rescales() {
        assert_eq!(format_fixed(6_701_234_000_000, 8), "67012.34000000");
        assert_eq!(format_fixed(-5, 2), "-0.05");
        assert_eq!(rescale(12_345, 4, 2), Some(123));
        assert_eq!(rescale(12_355, 4, 2), Some(124));
        assert_eq!(rescale(-12_355, 4, 2), Some(-124));
        assert_eq!(rescale(5, 2, 4), Some(500));
    }
}
