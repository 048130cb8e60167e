//! Gate.io v4: `GET /api/v4/spot/tickers?currency_pair=BTC_USDT`.
//! Published limit: 200 req/10 s.

use serde::Deserialize;
#[cfg(feature = "sim")]
use serde_json::json;

#[cfg(feature = "sim")]
use super::Tick;
use super::{
    MarketState, state_at,
    Num, RateLimit, RawQuote, Route, SymbolStyle, VenueSpec, json_either, listed, n, rate_limited,
    says_unknown_symbol, venue_err,
};
use crate::error::SourceError;

pub(super) struct Spec;

impl VenueSpec for Spec {
    fn base_url(&self) -> &'static str {
        "https://api.gateio.ws"
    }
    fn rate_limit(&self) -> RateLimit {
        RateLimit {
            per_second: 20,
            burst: 10,
        }
    }
    fn symbol_style(&self) -> SymbolStyle {
        SymbolStyle::Separated('_')
    }
    fn ticker_route(&self) -> Route {
        Route::query("/api/v4/spot/tickers", "currency_pair")
    }
    fn parse_rest(&self, status: u16, body: &[u8], market: &str) -> Result<RawQuote, SourceError> {
        parse_gateio(status, body, market)
    }
    fn status_route(&self) -> Option<Route> {
        Some(Route::Segment {
            prefix: "/api/v4/spot/currency_pairs/",
            suffix: "",
        })
    }
    fn parse_status(&self, body: &[u8], _market: &str) -> Result<MarketState, SourceError> {
        // {"id": "BTC_USDT", "trade_status": "tradable", ...}
        state_at(body, "/trade_status", "trade_status", |v| {
            Some(match v.as_str()? {
                "tradable" | "buyable" | "sellable" => MarketState::Open,
                "untradable" => MarketState::Halted,
                _ => return None,
            })
        })
    }
    #[cfg(feature = "sim")]
    fn render_status(&self, market: &str, state: MarketState) -> String {
        let s = match state {
            MarketState::Open => "tradable",
            MarketState::Halted | MarketState::Closed => "untradable",
        };
        json!({"id": market, "trade_status": s}).to_string()
    }
    #[cfg(feature = "sim")]
    fn render_ticker(&self, market: &str, t: &Tick) -> String {
        json!([{
            "currency_pair": market, "last": t.last, "lowest_ask": t.ask, "highest_bid": t.bid,
            "change_percentage": "0", "base_volume": t.volume, "quote_volume": "0", "high_24h": t.ask, "low_24h": t.bid
        }])
        .to_string()
    }
    #[cfg(feature = "sim")]
    fn render_unknown_symbol(&self, market: &str) -> (u16, String) {
        (
            400,
            json!({"label": "INVALID_CURRENCY_PAIR", "message": format!("Invalid currency pair {market}")}).to_string(),
        )
    }
    #[cfg(feature = "sim")]
    fn render_rate_limited(&self) -> serde_json::Value {
        json!({"label": "TOO_MANY_REQUESTS", "message": "Request Rate Limit Exceeded"})
    }
}

#[derive(Deserialize)]
struct GateError {
    label: String,
    message: Option<String>,
}

#[derive(Deserialize)]
struct GateTicker {
    currency_pair: String,
    last: Option<Num>,
    lowest_ask: Option<Num>,
    highest_bid: Option<Num>,
    base_volume: Option<Num>,
}

fn parse_gateio(status: u16, body: &[u8], market: &str) -> Result<RawQuote, SourceError> {
    match json_either::<Vec<GateTicker>, GateError>(body)? {
        Ok(list) => {
            let t = listed(list, market, |t| &t.currency_pair)?;
            Ok(RawQuote {
                bid: n(&t.highest_bid),
                ask: n(&t.lowest_ask),
                last: n(&t.last),
                volume: n(&t.base_volume),
                venue_time_ms: None,
            })
        }
        Err(GateError { label, message }) => Err(match label.as_str() {
            "INVALID_CURRENCY_PAIR" | "INVALID_CURRENCY" => {
                SourceError::UnknownSymbol(market.into())
            }
            _ if message.as_deref().is_some_and(says_unknown_symbol) => {
                SourceError::UnknownSymbol(market.into())
            }
            "TOO_MANY_REQUESTS" => rate_limited(status, message.unwrap_or(label)),
            _ => venue_err(label, message.unwrap_or_default()),
        }),
    }
}
