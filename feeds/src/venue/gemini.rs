//! Gemini: `GET /v1/pubticker/btcusd`. Published limit: 120 req/min.

use serde::Deserialize;
#[cfg(feature = "sim")]
use serde_json::json;

#[cfg(feature = "sim")]
use super::Tick;
use super::{
    MarketState, state_at,
    Num, RateLimit, RawQuote, Route, SymbolStyle, VenueSpec, json_error_first, n, rate_limited,
    says_unknown_symbol, venue_err,
};
use crate::error::SourceError;

pub(super) struct Spec;

impl VenueSpec for Spec {
    fn base_url(&self) -> &'static str {
        "https://api.gemini.com"
    }
    fn rate_limit(&self) -> RateLimit {
        RateLimit {
            per_second: 2,
            burst: 5,
        }
    }
    fn symbol_style(&self) -> SymbolStyle {
        SymbolStyle::JoinedLower
    }
    fn ticker_route(&self) -> Route {
        Route::Segment {
            prefix: "/v1/pubticker/",
            suffix: "",
        }
    }
    fn parse_rest(&self, status: u16, body: &[u8], market: &str) -> Result<RawQuote, SourceError> {
        parse_gemini(status, body, market)
    }
    fn status_route(&self) -> Option<Route> {
        Some(Route::Segment {
            prefix: "/v1/symbols/details/",
            suffix: "",
        })
    }
    fn parse_status(&self, body: &[u8], _market: &str) -> Result<MarketState, SourceError> {
        // {"symbol": "BTCUSD", "status": "open", ...}
        state_at(body, "/status", "status", |v| {
            Some(match v.as_str()? {
                "open" | "limit_only" => MarketState::Open,
                "cancel_only" | "post_only" => MarketState::Halted,
                "closed" => MarketState::Closed,
                _ => return None,
            })
        })
    }
    #[cfg(feature = "sim")]
    fn render_status(&self, market: &str, state: MarketState) -> String {
        let s = match state {
            MarketState::Open => "open",
            MarketState::Halted => "cancel_only",
            MarketState::Closed => "closed",
        };
        json!({"symbol": market.to_ascii_uppercase(), "status": s, "wrap_enabled": false}).to_string()
    }
    #[cfg(feature = "sim")]
    fn render_ticker(&self, market: &str, t: &Tick) -> String {
        let base = Spec
            .parse_market(market)
            .map(|(b, _)| b)
            .unwrap_or_default();
        json!({"bid": t.bid, "ask": t.ask, "volume": {base: t.volume, "timestamp": t.time_ms}, "last": t.last})
            .to_string()
    }
    #[cfg(feature = "sim")]
    fn render_unknown_symbol(&self, market: &str) -> (u16, String) {
        (
            400,
            json!({"result": "error", "reason": "InvalidSymbol", "message": format!("Supplied value '{market}' is not a valid symbol")})
                .to_string(),
        )
    }
    #[cfg(feature = "sim")]
    fn render_rate_limited(&self) -> serde_json::Value {
        json!({"result": "error", "reason": "RateLimited", "message": "Requests were made too frequently."})
    }
}

#[derive(Deserialize)]
struct GeminiTicker {
    bid: Option<Num>,
    ask: Option<Num>,
    last: Option<Num>,
    volume: Option<serde_json::Map<String, serde_json::Value>>,
}

#[derive(Deserialize)]
struct GeminiError {
    reason: String,
    message: Option<String>,
}

fn parse_gemini(status: u16, body: &[u8], market: &str) -> Result<RawQuote, SourceError> {
    match json_error_first::<GeminiTicker, GeminiError>(body)? {
        Ok(GeminiTicker {
            bid,
            ask,
            last,
            volume,
        }) => {
            // volume: {"BTC": "2210.5", "USD": "2135477.4", "timestamp": 1483018200000}
            let base = Spec
                .parse_market(market)
                .map(|(b, _)| b)
                .unwrap_or_default();
            let vol = volume.as_ref();
            let base_vol = vol
                .and_then(|m| m.get(&base))
                .and_then(|v| v.as_str())
                .map(str::to_string);
            let ts = vol
                .and_then(|m| m.get("timestamp"))
                .and_then(|v| v.as_u64());
            Ok(RawQuote {
                bid: n(&bid),
                ask: n(&ask),
                last: n(&last),
                volume: base_vol,
                venue_time_ms: ts,
            })
        }
        Err(GeminiError { reason, message }) => {
            let message = message.unwrap_or_else(|| reason.clone());
            Err(match reason.as_str() {
                "InvalidSymbol" => SourceError::UnknownSymbol(market.into()),
                _ if says_unknown_symbol(&message) => SourceError::UnknownSymbol(market.into()),
                "RateLimit" | "RateLimited" => rate_limited(status, message),
                _ => venue_err(reason, message),
            })
        }
    }
}
