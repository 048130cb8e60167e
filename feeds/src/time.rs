//! Clock helpers: the wall clock in Unix milliseconds, and RFC 3339
//! timestamps (Coinbase's) read and written with the `time` crate.

use std::time::{SystemTime, UNIX_EPOCH};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// Milliseconds since the Unix epoch (0 if the clock is before 1970).
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// Why a venue's timestamp was not read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TimestampError {
    #[error(
        "`{input}` is not an RFC 3339 timestamp ({reason}); expected e.g. `2022-10-19T23:28:22.061769Z`"
    )]
    Malformed { input: String, reason: String },
    #[error("`{input}` is before the Unix epoch")]
    BeforeEpoch { input: String },
}

/// Reads an RFC 3339 timestamp (`2022-10-19T23:28:22.061769Z`, any number
/// of fractional digits, `Z` or a numeric offset) as Unix milliseconds,
/// rounded down.
pub fn parse_rfc3339_ms(s: &str) -> Result<u64, TimestampError> {
    let t = OffsetDateTime::parse(s, &Rfc3339).map_err(|e| TimestampError::Malformed {
        input: s.chars().take(64).collect(),
        reason: e.to_string(),
    })?;
    let ms = t.unix_timestamp_nanos().div_euclid(1_000_000);
    u64::try_from(ms).map_err(|_| TimestampError::BeforeEpoch {
        input: s.chars().take(64).collect(),
    })
}

/// Writes Unix ms as RFC 3339 in UTC with microseconds, as Coinbase does
/// (the simulated Coinbase). Beyond the year 9999 it writes that year's end.
pub fn format_rfc3339_ms(ms: u64) -> String {
    let nanos = i128::from(ms) * 1_000_000;
    let t = OffsetDateTime::from_unix_timestamp_nanos(nanos).unwrap_or(
        // 9999-12-31T23:59:59.999Z, the largest instant `time` holds by default.
        OffsetDateTime::from_unix_timestamp_nanos(253_402_300_799_999_000_000)
            .unwrap_or(OffsetDateTime::UNIX_EPOCH),
    );
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}000Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.millisecond()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_round_trip() {
        assert_eq!(parse_rfc3339_ms("1970-01-01T00:00:00Z"), Ok(0));
        assert_eq!(
            parse_rfc3339_ms("2020-03-20T00:22:57.833Z"),
            Ok(1_584_663_777_833)
        );
        assert_eq!(
            parse_rfc3339_ms("2022-10-19T23:28:22.061769Z"),
            Ok(1_666_222_102_061)
        );
        let t = 1_700_000_123_456;
        assert_eq!(parse_rfc3339_ms(&format_rfc3339_ms(t)), Ok(t));
        assert_eq!(format_rfc3339_ms(t), "2023-11-14T22:15:23.456000Z");
        assert_eq!(format_rfc3339_ms(0), "1970-01-01T00:00:00.000000Z");
    }

    #[test]
    fn fractional_seconds_of_any_length_round_down_to_the_millisecond() {
        let base = 1_666_222_102_000;
        assert_eq!(parse_rfc3339_ms("2022-10-19T23:28:22Z"), Ok(base));
        for (frac, ms) in [
            ("9", 900),
            ("06", 60),
            ("061", 61),
            ("0617", 61),
            ("06176", 61),
            ("061769", 61),
            ("0617699", 61),
            ("99999999", 999),
            ("999999999", 999),
        ] {
            let s = format!("2022-10-19T23:28:22.{frac}Z");
            assert_eq!(parse_rfc3339_ms(&s), Ok(base + ms), "{s}");
        }
        // A dot needs at least one digit.
        assert!(parse_rfc3339_ms("2022-10-19T23:28:22.Z").is_err());
    }

    #[test]
    fn offsets_are_converted_to_utc() {
        let utc = parse_rfc3339_ms("2022-10-19T23:28:22.5Z");
        assert_eq!(parse_rfc3339_ms("2022-10-19T23:28:22.5+00:00"), utc);
        assert_eq!(parse_rfc3339_ms("2022-10-20T01:28:22.5+02:00"), utc);
        assert_eq!(parse_rfc3339_ms("2022-10-19T18:58:22.5-04:30"), utc);
        assert_eq!(
            parse_rfc3339_ms("2022-10-19t23:28:22.5z"),
            utc,
            "lower case"
        );
        // Across a day, month and year boundary.
        assert_eq!(
            parse_rfc3339_ms("2021-12-31T23:30:00-01:00"),
            parse_rfc3339_ms("2022-01-01T00:30:00Z")
        );
    }

    #[test]
    fn garbage_is_refused_with_a_typed_error() {
        for bad in [
            "garbage",
            "",
            "2022-10-19",
            "2022-10-19T23:28:22",          // no offset
            "2022-10-19T23:28:22+0100",     // offset without a colon
            "2022-13-19T23:28:22Z",         // month 13
            "2022-02-30T23:28:22Z",         // 30 February
            "2022-10-19T24:00:00Z",         // hour 24
            "2022-10-19T23:60:00Z",         // minute 60
            "2022-10-19 23:28:22 UTC",      // not RFC 3339
            "1666222102061",                // a number
            "2022-10-19T23:28:22.061769Zx", // trailing text
        ] {
            match parse_rfc3339_ms(bad) {
                Err(TimestampError::Malformed { input, reason }) => {
                    assert_eq!(input, bad);
                    assert!(!reason.is_empty());
                }
                other => panic!("{bad:?}: {other:?}"),
            }
        }
        assert_eq!(
            parse_rfc3339_ms("1969-12-31T23:59:59Z"),
            Err(TimestampError::BeforeEpoch {
                input: "1969-12-31T23:59:59Z".into()
            })
        );
        let e = parse_rfc3339_ms("garbage").unwrap_err().to_string();
        assert!(e.contains("`garbage`") && e.contains("RFC 3339"), "{e}");
    }
}
