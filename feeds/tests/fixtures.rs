//! Every REST adapter against recorded bodies in its venue's documented
//! format (`fixtures/<venue>/{success,error,rate_limited,unknown_symbol}.json`),
//! with the HTTP status the venue answers them with.

use sibyl_feeds::decimal::parse_fixed;
use sibyl_feeds::error::SourceError;
use sibyl_feeds::quote::{Quote, SanityLimits};
use sibyl_feeds::venue::{RawQuote, Venue};

/// The success fixtures are all a BTC ticker at 2023-11-14T22:13:20Z.
const FIXTURE_TIME_MS: u64 = 1_700_000_000_000;

fn fixture(venue: Venue, case: &str) -> Vec<u8> {
    let path = format!(
        "{}/fixtures/{}/{case}.json",
        env!("CARGO_MANIFEST_DIR"),
        venue.name()
    );
    std::fs::read(&path).unwrap_or_else(|e| panic!("missing fixture {path}: {e}"))
}

fn parse(venue: Venue, case: &str, status: u16, market: &str) -> Result<RawQuote, SourceError> {
    venue.parse_ticker(status, &fixture(venue, case), market)
}

fn fixed(text: &Option<String>) -> Option<i128> {
    text.as_deref()
        .map(|t| parse_fixed(t, 8).expect("decimal text"))
}

macro_rules! venue_fixtures {
    ($name:ident, $venue:expr, $market:expr,
     success = $s:expr, volume = $vol:expr, time = $time:expr,
     error = $e:expr, rate_limited = $r:expr, unknown_symbol = $u:expr) => {
        mod $name {
            use super::*;

            #[test]
            fn success() {
                let raw = parse($venue, "success", $s, $market).expect("success fixture parses");
                assert_eq!(fixed(&raw.bid), Some(6_701_233_000_000));
                assert_eq!(fixed(&raw.ask), Some(6_701_235_000_000));
                assert_eq!(fixed(&raw.last), Some(6_701_234_000_000));
                assert_eq!(fixed(&raw.volume), fixed(&$vol.map(str::to_string)));
                assert_eq!(raw.venue_time_ms, $time);
                let q = Quote::check(&raw, 8, FIXTURE_TIME_MS, &SanityLimits::default())
                    .expect("sane quote");
                assert_eq!(q.price, 6_701_234_000_000, "mid of bid and ask, 8 decimals");
                assert_eq!(q.bid, Some(6_701_233_000_000));
            }

            #[test]
            fn error() {
                match parse($venue, "error", $e, $market) {
                    Err(SourceError::Venue { .. }) | Err(SourceError::HttpStatus { .. }) => {}
                    other => panic!("expected a venue error, got {other:?}"),
                }
            }

            #[test]
            fn rate_limited() {
                match parse($venue, "rate_limited", $r, $market) {
                    Err(SourceError::RateLimited { .. }) => {}
                    other => panic!("expected rate limited, got {other:?}"),
                }
            }

            #[test]
            fn unknown_symbol() {
                match parse($venue, "unknown_symbol", $u, $market) {
                    Err(SourceError::UnknownSymbol(m)) => assert_eq!(m, $market),
                    other => panic!("expected unknown symbol, got {other:?}"),
                }
            }

            #[test]
            fn truncated_body_is_malformed_not_a_price() {
                let body = fixture($venue, "success");
                let cut = &body[..body.len() / 2];
                match $venue.parse_ticker(200, cut, $market) {
                    Err(SourceError::Malformed(_)) => {}
                    other => panic!("expected malformed, got {other:?}"),
                }
            }
        }
    };
}

const T: Option<u64> = Some(FIXTURE_TIME_MS);

venue_fixtures!(
    binance,
    Venue::Binance,
    "BTCUSDT",
    success = 200,
    volume = Some("21345.76543000"),
    time = T,
    error = 400,
    rate_limited = 429,
    unknown_symbol = 400
);
venue_fixtures!(
    coinbase,
    Venue::Coinbase,
    "BTC-USD",
    success = 200,
    volume = Some("21345.76543"),
    time = T,
    error = 500,
    rate_limited = 429,
    unknown_symbol = 404
);
venue_fixtures!(
    kraken,
    Venue::Kraken,
    "XBTUSD",
    success = 200,
    volume = Some("21345.76543000"),
    time = None,
    error = 200,
    rate_limited = 200,
    unknown_symbol = 200
);
venue_fixtures!(
    okx,
    Venue::Okx,
    "BTC-USDT",
    success = 200,
    volume = Some("21345.76543"),
    time = T,
    error = 503,
    rate_limited = 429,
    unknown_symbol = 200
);
venue_fixtures!(
    bybit,
    Venue::Bybit,
    "BTCUSDT",
    success = 200,
    volume = Some("21345.76543"),
    time = T,
    error = 200,
    rate_limited = 200,
    unknown_symbol = 200
);
venue_fixtures!(
    bitstamp,
    Venue::Bitstamp,
    "btcusd",
    success = 200,
    volume = Some("21345.76543"),
    time = T,
    error = 500,
    rate_limited = 400,
    unknown_symbol = 404
);
venue_fixtures!(
    gemini,
    Venue::Gemini,
    "btcusd",
    success = 200,
    volume = Some("21345.76543"),
    time = T,
    error = 503,
    rate_limited = 429,
    unknown_symbol = 400
);
venue_fixtures!(
    kucoin,
    Venue::Kucoin,
    "BTC-USDT",
    success = 200,
    volume = None,
    time = T,
    error = 400,
    rate_limited = 429,
    unknown_symbol = 200
);
venue_fixtures!(
    bitfinex,
    Venue::Bitfinex,
    "tBTCUSD",
    success = 200,
    volume = Some("21345.76543"),
    time = None,
    error = 500,
    rate_limited = 429,
    unknown_symbol = 500
);
venue_fixtures!(
    gateio,
    Venue::Gateio,
    "BTC_USDT",
    success = 200,
    volume = Some("21345.76543"),
    time = None,
    error = 500,
    rate_limited = 429,
    unknown_symbol = 400
);
venue_fixtures!(
    htx,
    Venue::Htx,
    "btcusdt",
    success = 200,
    volume = Some("21345.76543"),
    time = T,
    error = 200,
    rate_limited = 200,
    unknown_symbol = 200
);
venue_fixtures!(
    cryptocom,
    Venue::Cryptocom,
    "BTC_USD",
    success = 200,
    volume = Some("21345.76543"),
    time = T,
    error = 500,
    rate_limited = 429,
    unknown_symbol = 400
);
venue_fixtures!(
    mexc,
    Venue::Mexc,
    "BTCUSDT",
    success = 200,
    volume = Some("21345.76543"),
    time = T,
    error = 400,
    rate_limited = 429,
    unknown_symbol = 400
);
venue_fixtures!(
    bitget,
    Venue::Bitget,
    "BTCUSDT",
    success = 200,
    volume = Some("21345.76543"),
    time = T,
    error = 400,
    rate_limited = 429,
    unknown_symbol = 400
);

#[test]
fn every_venue_has_all_four_fixtures() {
    for v in Venue::ALL {
        for case in ["success", "error", "rate_limited", "unknown_symbol"] {
            let body = fixture(v, case);
            assert!(
                serde_json::from_slice::<serde_json::Value>(&body).is_ok(),
                "{v}/{case} is JSON"
            );
        }
    }
}
