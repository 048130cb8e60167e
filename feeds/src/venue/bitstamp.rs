//! Bitstamp: `GET /api/v2/ticker/btcusd/`. Published limit: 400 req/s.

use serde::Deserialize;
#[cfg(feature = "sim")]
use serde_json::json;

#[cfg(feature = "sim")]
use super::Tick;
use super::{
    Num, RateLimit, RawQuote, Route, SymbolStyle, VenueSpec, json_either, n, rate_limited,
    says_unknown_symbol, venue_err,
};
use crate::error::SourceError;

pub(super) struct Spec;

impl VenueSpec for Spec {
    fn base_url(&self) -> &'static str {
        "https://www.bitstamp.net"
    }
    fn rate_limit(&self) -> RateLimit {
        RateLimit {
            per_second: 100,
            burst: 20,
        }
    }
    fn symbol_style(&self) -> SymbolStyle {
        SymbolStyle::JoinedLower
    }
    fn ticker_route(&self) -> Route {
        Route::Segment {
            prefix: "/api/v2/ticker/",
            suffix: "/",
        }
    }
    fn parse_rest(&self, status: u16, body: &[u8], market: &str) -> Result<RawQuote, SourceError> {
        parse_bitstamp(status, body, market)
    }
    #[cfg(feature = "sim")]
    fn render_ticker(&self, _market: &str, t: &Tick) -> String {
        json!({
            "timestamp": (t.time_ms / 1000).to_string(), "open": t.last, "high": t.ask, "low": t.bid, "last": t.last,
            "volume": t.volume, "vwap": t.last, "bid": t.bid, "ask": t.ask, "side": "0", "open_24": t.last,
            "percent_change_24": "0.00"
        })
        .to_string()
    }
    #[cfg(feature = "sim")]
    fn render_unknown_symbol(&self, _market: &str) -> (u16, String) {
        (
            404,
            json!({"status": "error", "reason": "Invalid currency pair", "code": "API0003"})
                .to_string(),
        )
    }
    #[cfg(feature = "sim")]
    fn render_rate_limited(&self) -> serde_json::Value {
        json!({"status": "error", "reason": "Rate limit exceeded", "code": "API0001"})
    }
}

#[derive(Deserialize)]
struct BitstampTicker {
    timestamp: Num,
    last: Option<Num>,
    bid: Option<Num>,
    ask: Option<Num>,
    volume: Option<Num>,
}

/// `{"status": "error", "reason": ..., "code": "API0003"}`, or the newer
/// `{"response_code": "400.002", "response_explanation": ...}`.
#[derive(Deserialize)]
struct BitstampError {
    status: Option<String>,
    reason: Option<serde_json::Value>,
    code: Option<String>,
    response_code: Option<String>,
    response_explanation: Option<String>,
}

fn parse_bitstamp(status: u16, body: &[u8], market: &str) -> Result<RawQuote, SourceError> {
    if status == 404 {
        return Err(SourceError::UnknownSymbol(market.into()));
    }
    match json_either::<BitstampTicker, BitstampError>(body)? {
        Ok(BitstampTicker {
            timestamp,
            last,
            bid,
            ask,
            volume,
        }) => Ok(RawQuote {
            bid: n(&bid),
            ask: n(&ask),
            last: n(&last),
            volume: n(&volume),
            venue_time_ms: timestamp
                .0
                .parse::<u64>()
                .ok()
                .map(|s| s.saturating_mul(1000)),
        }),
        Err(BitstampError {
            status: st,
            reason,
            code,
            response_code,
            response_explanation,
        }) => {
            // `reason` is a string or an object of field errors.
            let reason = reason.map(|r| match r {
                serde_json::Value::String(s) => s,
                other => other.to_string(),
            });
            let message = reason.or(response_explanation).or(st).unwrap_or_default();
            let code = code.or(response_code).unwrap_or_default();
            Err(
                if code.starts_with("API0001")
                    || code == "400.002"
                    || message.to_ascii_lowercase().contains("rate limit")
                {
                    rate_limited(status, message)
                } else if says_unknown_symbol(&message) {
                    SourceError::UnknownSymbol(market.into())
                } else {
                    venue_err(code, message)
                },
            )
        }
    }
}
