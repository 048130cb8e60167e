//! Bitstamp: `GET /api/v2/ticker/btcusd/`. Published limit: 400 req/s.

use serde::Deserialize;
#[cfg(feature = "sim")]
use serde_json::json;

use super::{Num, RateLimit, RawQuote, VenueSpec, json_either, n, rate_limited, split_by_quote, venue_err};
use crate::error::SourceError;
#[cfg(feature = "sim")]
use super::Tick;

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
    fn market(&self, base: &str, quote: &str) -> String {
        format!("{}{}", base.to_ascii_uppercase(), quote.to_ascii_uppercase()).to_ascii_lowercase()
    }
    fn parse_market(&self, market: &str) -> Option<(String, String)> {
        split_by_quote(&market.to_ascii_uppercase())
    }
    fn ticker_path(&self, market: &str) -> String {
        format!("/api/v2/ticker/{market}/")
    }
    fn market_of_request(&self, path: &str, query: &str) -> Option<String> {
        let _ = query;
        path.strip_prefix("/api/v2/ticker/")
            .map(|s| s.trim_end_matches('/').to_string())
    }
    fn parse_rest(&self, status: u16, body: &[u8], market: &str) -> Result<RawQuote, SourceError> {
        parse_bitstamp(status, body, market)
    }
    #[cfg(feature = "sim")]
    fn render_ticker(&self, market: &str, t: &Tick) -> (u16, String) {
        let Tick {
            bid,
            ask,
            last,
            volume,
            time_ms,
        } = t;
        let body = json!({
            "timestamp": (time_ms / 1000).to_string(), "open": last, "high": ask, "low": bid, "last": last,
            "volume": volume, "vwap": last, "bid": bid, "ask": ask, "side": "0", "open_24": last,
            "percent_change_24": "0.00"
        })
        .to_string();
        let _ = market;
        (200, body)
    }
    #[cfg(feature = "sim")]
    fn render_unknown_symbol(&self, market: &str) -> (u16, String) {
        let _ = market;
        (
            404,
            json!({"status": "error", "reason": "Invalid currency pair", "code": "API0003"}).to_string(),
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
    last: Num,
    bid: Num,
    ask: Num,
    volume: Option<Num>,
}

#[derive(Deserialize)]
struct BitstampError {
    status: Option<String>,
    reason: Option<serde_json::Value>,
    code: Option<String>,
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
            bid: Some(bid.0),
            ask: Some(ask.0),
            last: Some(last.0),
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
        }) => {
            let message = reason.map(|r| r.to_string()).or(st).unwrap_or_default();
            let code = code.unwrap_or_default();
            Err(
                if code.starts_with("API0001")
                    || message.to_ascii_lowercase().contains("rate limit")
                {
                    rate_limited(status, message)
                } else {
                    venue_err(code, message)
                },
            )
        }
    }
}
