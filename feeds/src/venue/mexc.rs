//! MEXC spot: the Binance API shape (`GET /api/v3/ticker/24hr?symbol=BTCUSDT`,
//! same bodies), its own rate-limit body. Published limit: 500 weight/10 s.

#[cfg(feature = "sim")]
use serde_json::json;

#[cfg(feature = "sim")]
use super::Tick;
use super::{RateLimit, RawQuote, Route, VenueSpec, binance};
use crate::error::SourceError;

pub(super) struct Spec;

impl VenueSpec for Spec {
    fn base_url(&self) -> &'static str {
        "https://api.mexc.com"
    }
    fn rate_limit(&self) -> RateLimit {
        RateLimit {
            per_second: 20,
            burst: 10,
        }
    }
    fn ticker_route(&self) -> Route {
        Route::query("/api/v3/ticker/24hr", "symbol")
    }
    fn parse_rest(&self, status: u16, body: &[u8], market: &str) -> Result<RawQuote, SourceError> {
        // -1121 "Invalid symbol.", 10007 "bad symbol" (not open to the API).
        binance::parse_binance(status, body, market, &[-1121, 10007])
    }
    #[cfg(feature = "sim")]
    fn render_ticker(&self, market: &str, t: &Tick) -> String {
        binance::render_ticker(market, t)
    }
    #[cfg(feature = "sim")]
    fn render_unknown_symbol(&self, _market: &str) -> (u16, String) {
        binance::render_unknown_symbol()
    }
    #[cfg(feature = "sim")]
    fn render_rate_limited(&self) -> serde_json::Value {
        json!({"code": 429, "msg": "Too Many Requests"})
    }
}
