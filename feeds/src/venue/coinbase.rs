//! Coinbase Exchange: `GET /products/BTC-USD/ticker`, and the `ticker`,
//! `heartbeat` and `status` channels of `wss://ws-feed.exchange.coinbase.com`.
//! Published limit: 10 req/s.

use serde::Deserialize;
#[cfg(feature = "sim")]
use serde_json::json;

#[cfg(feature = "sim")]
use super::Tick;
use super::{
    MarketState, Num, RateLimit, RawQuote, Route, StreamSpec, SymbolStyle, VenueSpec, json_error_first, n,
    rate_limited, says_unknown_symbol, venue_err,
};
#[cfg(feature = "sim")]
use super::{add_symbols, json_strings};
use crate::error::{SourceError, snippet};
#[cfg(feature = "sim")]
use crate::time::format_rfc3339_ms;
use crate::time::parse_rfc3339_ms;

pub(super) struct Spec;

impl VenueSpec for Spec {
    fn base_url(&self) -> &'static str {
        "https://api.exchange.coinbase.com"
    }
    fn rate_limit(&self) -> RateLimit {
        RateLimit {
            per_second: 10,
            burst: 10,
        }
    }
    fn symbol_style(&self) -> SymbolStyle {
        SymbolStyle::Separated('-')
    }
    fn ticker_route(&self) -> Route {
        Route::Segment {
            prefix: "/products/",
            suffix: "/ticker",
        }
    }
    fn parse_rest(&self, status: u16, body: &[u8], market: &str) -> Result<RawQuote, SourceError> {
        parse_coinbase(status, body, market)
    }
    fn status_route(&self) -> Option<Route> {
        Some(Route::Segment {
            prefix: "/products/",
            suffix: "",
        })
    }
    fn parse_status(&self, body: &[u8], _market: &str) -> Result<MarketState, SourceError> {
        product_state(&super::json(body)?)
    }
    #[cfg(feature = "sim")]
    fn render_status(&self, market: &str, state: MarketState) -> String {
        render_product(market, state).to_string()
    }
    fn stream(&self) -> Option<&'static dyn StreamSpec> {
        Some(&Stream)
    }
    #[cfg(feature = "sim")]
    fn render_ticker(&self, _market: &str, t: &Tick) -> String {
        json!({
            "ask": t.ask, "bid": t.bid, "volume": t.volume, "trade_id": 86326522, "price": t.last,
            "size": "0.01", "time": format_rfc3339_ms(t.time_ms)
        })
        .to_string()
    }
    #[cfg(feature = "sim")]
    fn render_unknown_symbol(&self, _market: &str) -> (u16, String) {
        (404, json!({"message": "NotFound"}).to_string())
    }
    #[cfg(feature = "sim")]
    fn render_rate_limited(&self) -> serde_json::Value {
        json!({"message": "Public rate limit exceeded"})
    }
}

/// A product's trading state, from a product object (the REST product
/// endpoint and the stream's `status` channel share its shape):
/// `{"id": "BTC-USD", "status": "online", "trading_disabled": false,
///  "cancel_only": false, "post_only": false, "auction_mode": false, ...}`.
fn product_state(v: &serde_json::Value) -> Result<MarketState, SourceError> {
    let flag = |k: &str| v.get(k).and_then(serde_json::Value::as_bool).unwrap_or(false);
    let halted = flag("trading_disabled") || flag("cancel_only") || flag("post_only");
    let status = v
        .get("status")
        .ok_or_else(|| SourceError::Malformed("no status in the product".into()))?;
    Ok(match status.as_str() {
        Some("online") if halted => MarketState::Halted,
        Some("online") if flag("auction_mode") => MarketState::Closed,
        Some("online") => MarketState::Open,
        Some("offline" | "internal" | "delisted") => MarketState::Halted,
        _ => return Err(super::unknown_state("status", &status.to_string())),
    })
}

#[cfg(feature = "sim")]
fn render_product(market: &str, state: MarketState) -> serde_json::Value {
    let (status, disabled, auction) = match state {
        MarketState::Open => ("online", false, false),
        MarketState::Halted => ("online", true, false),
        MarketState::Closed => ("online", false, true),
    };
    json!({"id": market, "status": status, "status_message": "", "trading_disabled": disabled,
        "cancel_only": false, "post_only": false, "limit_only": false, "auction_mode": auction})
}

struct Stream;

#[derive(Deserialize)]
struct TypeOnly {
    #[serde(rename = "type")]
    kind: String,
    message: Option<String>,
    /// Why, on an error: "BTC-USDX is not a valid product".
    reason: Option<String>,
}

#[derive(Deserialize)]
struct CoinbaseWsTicker {
    product_id: String,
    price: Option<Num>,
    best_bid: Option<Num>,
    best_ask: Option<Num>,
    volume_24h: Option<Num>,
    time: Option<String>,
}

impl StreamSpec for Stream {
    fn url(&self) -> &'static str {
        "wss://ws-feed.exchange.coinbase.com"
    }
    /// The `status` channel takes no products: it lists every product.
    fn subscribe(&self, symbols: &[&String]) -> Vec<String> {
        vec![
            serde_json::json!({"type": "subscribe", "product_ids": symbols, "channels": ["ticker", "heartbeat"]}).to_string(),
            serde_json::json!({"type": "subscribe", "channels": [{"name": "status"}]}).to_string(),
        ]
    }
    /// The heartbeat channel keeps traffic flowing; ping frames besides.
    fn parse(&self, text: &str) -> Result<Vec<(String, RawQuote)>, SourceError> {
        let bad = SourceError::malformed;
        let head: TypeOnly = serde_json::from_str(text).map_err(bad)?;
        match head.kind.as_str() {
            "ticker" => {
                let t: CoinbaseWsTicker = serde_json::from_str(text).map_err(bad)?;
                let q = RawQuote {
                    bid: t.best_bid.map(|x| x.0),
                    ask: t.best_ask.map(|x| x.0),
                    last: t.price.map(|x| x.0),
                    volume: t.volume_24h.map(|x| x.0),
                    venue_time_ms: t.time.as_deref().and_then(|t| parse_rfc3339_ms(t).ok()),
                };
                Ok(vec![(t.product_id, q)])
            }
            "error" => {
                let reason = head.reason.unwrap_or_default();
                Err(match reason.split_whitespace().next() {
                    Some(product) if says_unknown_symbol(&reason) => {
                        SourceError::UnknownSymbol(product.to_string())
                    }
                    _ => SourceError::Venue {
                        code: "ws".into(),
                        message: snippet(&format!(
                            "{}: {reason}",
                            head.message.unwrap_or_default()
                        )),
                    },
                })
            }
            _ => Ok(vec![]), // subscriptions, heartbeat, status
        }
    }
    /// `{"type": "status", "products": [<product>, ...], "currencies": [...]}`.
    fn parse_states(&self, text: &str) -> Vec<(String, Result<MarketState, SourceError>)> {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(text) else {
            return Vec::new();
        };
        if v["type"] != "status" {
            return Vec::new();
        }
        let products = v["products"].as_array().map(Vec::as_slice).unwrap_or_default();
        products
            .iter()
            .filter_map(|p| Some((p["id"].as_str()?.to_string(), product_state(p))))
            .collect()
    }
    #[cfg(feature = "sim")]
    fn render_states(&self, symbols: &[String], state: MarketState) -> Option<String> {
        let products: Vec<_> = symbols.iter().map(|s| render_product(s, state)).collect();
        Some(json!({"type": "status", "products": products, "currencies": []}).to_string())
    }
    #[cfg(feature = "sim")]
    fn subscribes_states(&self, text: &str) -> bool {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(text) else {
            return false;
        };
        v["type"] == "subscribe"
            && v["channels"].as_array().is_some_and(|cs| {
                cs.iter()
                    .any(|c| c == "status" || c["name"] == "status")
            })
    }
    #[cfg(feature = "sim")]
    fn render_ticker(&self, symbol: &str, _market: &str, t: &Tick, seq: u64) -> String {
        json!({
            "type": "ticker", "sequence": seq, "product_id": symbol, "price": t.last, "open_24h": t.last,
            "volume_24h": t.volume, "low_24h": t.bid, "high_24h": t.ask, "volume_30d": t.volume, "best_bid": t.bid,
            "best_bid_size": "1", "best_ask": t.ask, "best_ask_size": "1", "side": "buy",
            "time": format_rfc3339_ms(t.time_ms), "trade_id": seq, "last_size": "0.01"
        })
        .to_string()
    }
    #[cfg(feature = "sim")]
    fn heartbeat(&self, symbols: &[String], seq: u64, now_ms: u64) -> Option<String> {
        symbols.first().map(|p| json!({"type": "heartbeat", "sequence": seq, "last_trade_id": seq, "product_id": p, "time": format_rfc3339_ms(now_ms)}).to_string())
    }
    #[cfg(feature = "sim")]
    fn answer(&self, text: &str, symbols: &mut Vec<String>) -> Vec<String> {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(text) else {
            return vec![];
        };
        if v["type"] != "subscribe" {
            return vec![];
        }
        if self.subscribes_states(text) {
            return vec![json!({"type": "subscriptions", "channels": [{"name": "status", "product_ids": []}]}).to_string()];
        }
        let ids = json_strings(v.get("product_ids"));
        add_symbols(symbols, ids.clone());
        vec![json!({"type": "subscriptions", "channels": [{"name": "ticker", "product_ids": ids}, {"name": "heartbeat", "product_ids": ids}]}).to_string()]
    }
}

#[derive(Deserialize)]
struct CoinbaseTicker {
    bid: Option<Num>,
    ask: Option<Num>,
    price: Option<Num>,
    volume: Option<Num>,
    time: Option<String>,
}

#[derive(Deserialize)]
struct CoinbaseError {
    message: String,
}

fn parse_coinbase(status: u16, body: &[u8], market: &str) -> Result<RawQuote, SourceError> {
    match json_error_first::<CoinbaseTicker, CoinbaseError>(body)? {
        Ok(CoinbaseTicker {
            bid,
            ask,
            price,
            volume,
            time,
        }) => Ok(RawQuote {
            bid: n(&bid),
            ask: n(&ask),
            last: n(&price),
            volume: n(&volume),
            venue_time_ms: time.as_deref().and_then(|t| parse_rfc3339_ms(t).ok()),
        }),
        Err(CoinbaseError { message }) => Err(
            if status == 404 || message == "NotFound" || says_unknown_symbol(&message) {
                SourceError::UnknownSymbol(market.into())
            } else if message.to_ascii_lowercase().contains("rate limit") {
                rate_limited(status, message)
            } else {
                venue_err(status, message)
            },
        ),
    }
}
