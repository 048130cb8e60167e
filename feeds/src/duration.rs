//! The one duration grammar of a node's config files (node.toml, its
//! `[sources]` section and the committee file): an integer and a unit,
//! `"500us"`, `"250ms"`, `"2s"`, `"5m"`, `"1h"`, or a sum such as `"1m30s"`.
//! It lives here, in the lowest crate that reads config, so that every
//! section of node.toml parses durations with the same function.

use std::time::Duration;

/// Parses `"250ms"`, `"2s"`, `"1m30s"`, `"1h"`, `"500us"`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let err = || format!("{s:?} is not a duration; write it like \"250ms\", \"2s\", \"1m30s\"");
    let s_trim = s.trim();
    if s_trim.is_empty() {
        return Err(err());
    }
    let mut total = Duration::ZERO;
    let mut rest = s_trim;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(err());
        }
        let n: u64 = rest[..digits].parse().map_err(|_| err())?;
        rest = &rest[digits..];
        let unit_len = rest.bytes().take_while(u8::is_ascii_alphabetic).count();
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let part = match unit {
            "us" => Duration::from_micros(n),
            "ms" => Duration::from_millis(n),
            "s" => Duration::from_secs(n),
            "m" => Duration::from_secs(n.checked_mul(60).ok_or_else(err)?),
            "h" => Duration::from_secs(n.checked_mul(3600).ok_or_else(err)?),
            _ => return Err(err()),
        };
        total = total.checked_add(part).ok_or_else(err)?;
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_grammar() {
        let ms = |s: &str| parse_duration(s).map(|d| d.as_millis());
        assert_eq!(ms("500ms"), Ok(500));
        assert_eq!(ms("2s"), Ok(2_000));
        assert_eq!(ms("1m"), Ok(60_000));
        assert_eq!(ms("1m30s"), Ok(90_000));
        assert_eq!(ms("1h"), Ok(3_600_000));
        assert_eq!(parse_duration("500us"), Ok(Duration::from_micros(500)));
        for bad in [
            "",
            "s",
            "2",
            "2 parsecs",
            "1.5s",
            "-1s",
            "2S",
            "99999999999999999999h",
        ] {
            let e = parse_duration(bad).expect_err(bad);
            assert!(e.contains("is not a duration"), "{bad}: {e}");
        }
    }
}
