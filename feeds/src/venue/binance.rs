//! Binance spot: `GET /api/v3/ticker/24hr?symbol=BTCUSDT`, and the combined
//! `@ticker` streams (`wss://stream.binance.com:9443/stream?streams=...`).
//! Published limit: 6000 weight/min, the 24 h ticker costs 2.

use serde::Deserialize;
#[cfg(feature = "sim")]
use serde_json::json;

#[cfg(feature = "sim")]
use super::Tick;
use super::{
    MarketState, state_at,
    Num, Ping, RateLimit, RawQuote, Route, StreamSpec, VenueSpec, json_either, n, num_u64,
    rate_limited, says_unknown_symbol, venue_err,
};
use crate::error::SourceError;

pub(super) struct Spec;

impl VenueSpec for Spec {
    fn base_url(&self) -> &'static str {
        "https://api.binance.com"
    }
    fn rate_limit(&self) -> RateLimit {
        RateLimit {
            per_second: 40,
            burst: 20,
        }
    }
    fn ticker_route(&self) -> Route {
        Route::query("/api/v3/ticker/24hr", "symbol")
    }
    fn parse_rest(&self, status: u16, body: &[u8], market: &str) -> Result<RawQuote, SourceError> {
        parse_binance(status, body, market, &[-1121])
    }
    fn status_route(&self) -> Option<Route> {
        Some(Route::query("/api/v3/exchangeInfo", "symbol"))
    }
    fn parse_status(&self, body: &[u8], _market: &str) -> Result<MarketState, SourceError> {
        // exchangeInfo: {"symbols": [{"symbol": "BTCUSDT", "status": "TRADING", ...}]}
        state_at(body, "/symbols/0/status", "status", |v| {
            Some(match v.as_str()? {
                "TRADING" => MarketState::Open,
                "HALT" | "BREAK" => MarketState::Halted,
                "PRE_TRADING" | "POST_TRADING" | "END_OF_DAY" | "AUCTION_MATCH" => {
                    MarketState::Closed
                }
                _ => return None,
            })
        })
    }
    #[cfg(feature = "sim")]
    fn render_status(&self, market: &str, state: MarketState) -> String {
        let status = match state {
            MarketState::Open => "TRADING",
            MarketState::Halted => "HALT",
            MarketState::Closed => "END_OF_DAY",
        };
        json!({"timezone": "UTC", "serverTime": 0, "symbols": [{"symbol": market, "status": status}]})
            .to_string()
    }
    fn stream(&self) -> Option<&'static dyn StreamSpec> {
        Some(&Stream)
    }
    #[cfg(feature = "sim")]
    fn render_ticker(&self, market: &str, t: &Tick) -> String {
        render_ticker(market, t)
    }
    #[cfg(feature = "sim")]
    fn render_unknown_symbol(&self, _market: &str) -> (u16, String) {
        render_unknown_symbol()
    }
    #[cfg(feature = "sim")]
    fn render_rate_limited(&self) -> serde_json::Value {
        json!({"code": -1003, "msg": "Too many requests; current limit of IP is 6000 requests per minute."})
    }
}

/// Binance's (and MEXC's) 24 h ticker body.
#[cfg(feature = "sim")]
pub(super) fn render_ticker(market: &str, t: &Tick) -> String {
    json!({
        "symbol": market, "priceChange": "0", "priceChangePercent": "0", "lastPrice": t.last,
        "bidPrice": t.bid, "bidQty": "1.5", "askPrice": t.ask, "askQty": "0.8", "volume": t.volume,
        "openTime": t.time_ms.saturating_sub(86_400_000), "closeTime": t.time_ms, "count": 1000
    })
    .to_string()
}

/// Binance's (and MEXC's) unknown-symbol answer.
#[cfg(feature = "sim")]
pub(super) fn render_unknown_symbol() -> (u16, String) {
    (
        400,
        json!({"code": -1121, "msg": "Invalid symbol."}).to_string(),
    )
}

struct Stream;

#[derive(Deserialize)]
struct BinanceCombined {
    data: BinanceWsTicker,
}

#[derive(Deserialize)]
struct BinanceWsTicker {
    #[serde(rename = "E")]
    event_time: Option<u64>,
    s: String,
    c: Option<Num>,
    b: Option<Num>,
    a: Option<Num>,
    v: Option<Num>,
}

impl StreamSpec for Stream {
    fn url(&self) -> &'static str {
        "wss://stream.binance.com:9443/stream"
    }
    fn symbol(&self, market: &str) -> String {
        market.to_ascii_lowercase()
    }
    fn connect_url(&self, url: &str, symbols: &[&String]) -> String {
        let streams: Vec<String> = symbols.iter().map(|s| format!("{s}@ticker")).collect();
        format!("{url}?streams={}", streams.join("/"))
    }
    /// Subscribed by the URL's combined streams.
    fn subscribe(&self, _symbols: &[&String]) -> Vec<String> {
        vec![]
    }
    /// Binance pings us (answered by tungstenite); our pings keep the socket busy.
    fn ping(&self) -> Ping {
        Ping::Frame
    }
    fn parse(&self, text: &str) -> Result<Vec<(String, RawQuote)>, SourceError> {
        if text.contains("\"result\"") {
            return Ok(vec![]); // subscription ack {"result":null,"id":1}
        }
        let m: BinanceCombined = serde_json::from_str(text).map_err(SourceError::malformed)?;
        let t = m.data;
        let q = RawQuote {
            bid: t.b.map(|x| x.0),
            ask: t.a.map(|x| x.0),
            last: t.c.map(|x| x.0),
            volume: t.v.map(|x| x.0),
            venue_time_ms: t.event_time,
        };
        Ok(vec![(t.s.to_ascii_lowercase(), q)])
    }
    #[cfg(feature = "sim")]
    fn render_ticker(&self, symbol: &str, market: &str, t: &Tick, _seq: u64) -> String {
        json!({"stream": format!("{symbol}@ticker"), "data": {
            "e": "24hrTicker", "E": t.time_ms, "s": market, "p": "0", "P": "0", "c": t.last, "Q": "0.01",
            "b": t.bid, "B": "1", "a": t.ask, "A": "1", "o": t.last, "h": t.ask, "l": t.bid, "v": t.volume, "q": "0"
        }})
        .to_string()
    }
    #[cfg(feature = "sim")]
    fn market_of_symbol(&self, symbol: &str) -> String {
        symbol.to_ascii_uppercase()
    }
    /// Combined streams named in the URL, `?streams=btcusdt@ticker/ethusdt@ticker`.
    #[cfg(feature = "sim")]
    fn symbols_in_query(&self, query: &str) -> Vec<String> {
        query
            .split('&')
            .find_map(|kv| kv.strip_prefix("streams="))
            .map(|list| {
                list.split('/')
                    .filter_map(|s| s.strip_suffix("@ticker"))
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default()
    }
    #[cfg(feature = "sim")]
    fn answer(&self, _text: &str, _symbols: &mut Vec<String>) -> Vec<String> {
        vec![]
    }
}

#[derive(Deserialize)]
struct BinanceError {
    code: i64,
    msg: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct BinanceTicker {
    symbol: String,
    last_price: Option<Num>,
    bid_price: Option<Num>,
    ask_price: Option<Num>,
    volume: Option<Num>,
    close_time: Option<Num>,
}

/// Binance's 24 h ticker and error bodies (MEXC speaks the same shape);
/// `unknown_codes` are the venue's codes for a market it does not list
/// (Binance: -1121 "Invalid symbol.").
pub(super) fn parse_binance(
    status: u16,
    body: &[u8],
    market: &str,
    unknown_codes: &[i64],
) -> Result<RawQuote, SourceError> {
    match json_either::<BinanceTicker, BinanceError>(body)? {
        Ok(t) => {
            if t.symbol != market {
                return Err(SourceError::Malformed(format!(
                    "asked for {market}, got {}",
                    t.symbol
                )));
            }
            Ok(RawQuote {
                bid: n(&t.bid_price),
                ask: n(&t.ask_price),
                last: n(&t.last_price),
                volume: n(&t.volume),
                venue_time_ms: num_u64(&t.close_time),
            })
        }
        Err(BinanceError { code, msg }) => Err(match code {
            c if unknown_codes.contains(&c) || says_unknown_symbol(&msg) => {
                SourceError::UnknownSymbol(market.into())
            }
            -1003 | 429 => rate_limited(status, msg),
            _ => venue_err(code, msg),
        }),
    }
}
