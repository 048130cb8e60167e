//! Kraken: `GET /0/public/Ticker?pair=XBTUSD` (assets in Kraken's own
//! codes: XBT, XDG), and the v2 `ticker` and
//! `instrument` channels of `wss://ws.kraken.com/v2`
//! (symbols like `BTC/USD`). Published limit: about 1 req/s public.

use serde::Deserialize;
#[cfg(feature = "sim")]
use serde_json::json;

#[cfg(feature = "sim")]
use super::Tick;
use super::{
    MarketState,
    Num, Ping, RateLimit, RawQuote, Route, StreamSpec, SymbolStyle, VenueSpec, json, rate_limited,
    says_unknown_symbol, venue_err,
};
#[cfg(feature = "sim")]
use super::{add_symbols, json_strings};
use crate::error::{SourceError, snippet};

pub(super) struct Spec;

impl VenueSpec for Spec {
    fn base_url(&self) -> &'static str {
        "https://api.kraken.com"
    }
    fn rate_limit(&self) -> RateLimit {
        RateLimit {
            per_second: 1,
            burst: 2,
        }
    }
    /// Joined, in Kraken's own asset codes.
    fn market(&self, base: &str, quote: &str) -> String {
        let (b, q) = (base.to_ascii_uppercase(), quote.to_ascii_uppercase());
        SymbolStyle::Joined.market(&kraken_asset(&b), &kraken_asset(&q))
    }
    fn parse_market(&self, market: &str) -> Option<(String, String)> {
        let (b, q) = SymbolStyle::Joined.parse(market)?;
        Some((from_kraken_asset(&b), from_kraken_asset(&q)))
    }
    fn ticker_route(&self) -> Route {
        Route::query("/0/public/Ticker", "pair")
    }
    fn parse_rest(&self, status: u16, body: &[u8], market: &str) -> Result<RawQuote, SourceError> {
        parse_kraken(status, body, market)
    }
    fn status_route(&self) -> Option<Route> {
        Some(Route::query("/0/public/AssetPairs", "pair"))
    }
    fn parse_status(&self, body: &[u8], _market: &str) -> Result<MarketState, SourceError> {
        // {"error": [], "result": {"XXBTZUSD": {"altname": "XBTUSD", "status": "online", ...}}}
        let v: serde_json::Value = json(body)?;
        let pair = v
            .get("result")
            .and_then(serde_json::Value::as_object)
            .and_then(|r| r.values().next())
            .ok_or_else(|| SourceError::Malformed("no pair in the AssetPairs answer".into()))?;
        let status = pair.get("status").and_then(serde_json::Value::as_str).ok_or_else(|| {
            SourceError::Malformed("no status in the AssetPairs answer".into())
        })?;
        pair_state(status)
    }
    #[cfg(feature = "sim")]
    fn render_status(&self, market: &str, state: MarketState) -> String {
        let s = render_pair_state(state);
        json!({"error": [], "result": {market: {"altname": market, "status": s}}}).to_string()
    }
    fn stream(&self) -> Option<&'static dyn StreamSpec> {
        Some(&Stream)
    }
    #[cfg(feature = "sim")]
    fn render_ticker(&self, market: &str, t: &Tick) -> String {
        json!({"error": [], "result": {market: {
            "a": [t.ask, "1", "1.000"], "b": [t.bid, "2", "2.000"], "c": [t.last, "0.01"],
            "v": [t.volume, t.volume], "p": [t.last, t.last], "t": [100, 200], "l": [t.bid, t.bid], "h": [t.ask, t.ask], "o": t.last
        }}})
        .to_string()
    }
    #[cfg(feature = "sim")]
    fn render_unknown_symbol(&self, _market: &str) -> (u16, String) {
        (
            200,
            json!({"error": ["EQuery:Unknown asset pair"]}).to_string(),
        )
    }
    #[cfg(feature = "sim")]
    fn render_rate_limited(&self) -> serde_json::Value {
        json!({"error": ["EGeneral:Too many requests"]})
    }
}

fn kraken_asset(a: &str) -> String {
    match a {
        "BTC" => "XBT".into(),
        "DOGE" => "XDG".into(),
        other => other.into(),
    }
}

fn from_kraken_asset(a: &str) -> String {
    match a {
        "XBT" | "XXBT" => "BTC".into(),
        "XDG" => "DOGE".into(),
        "ZUSD" => "USD".into(),
        other => other.into(),
    }
}

/// A pair's status, as the REST AssetPairs answer and the v2 `instrument`
/// channel spell it.
fn pair_state(status: &str) -> Result<MarketState, SourceError> {
    match status {
        "online" | "limit_only" | "reduce_only" => Ok(MarketState::Open),
        "cancel_only" | "post_only" | "maintenance" | "work_in_progress" | "delisted" => {
            Ok(MarketState::Halted)
        }
        other => Err(super::unknown_state("status", other)),
    }
}

#[cfg(feature = "sim")]
fn render_pair_state(state: MarketState) -> &'static str {
    match state {
        MarketState::Open => "online",
        MarketState::Halted => "cancel_only",
        MarketState::Closed => "post_only",
    }
}

struct Stream;

#[derive(Deserialize)]
struct KrakenWsMsg {
    channel: Option<String>,
    method: Option<String>,
    success: Option<bool>,
    error: Option<String>,
    /// The symbol an error is about.
    symbol: Option<String>,
    /// Tickers on the `ticker` channel; other channels' shapes differ.
    #[serde(default)]
    data: serde_json::Value,
}

#[derive(Deserialize)]
struct KrakenWsTicker {
    symbol: String,
    bid: Option<Num>,
    ask: Option<Num>,
    last: Option<Num>,
    volume: Option<Num>,
}

impl StreamSpec for Stream {
    fn url(&self) -> &'static str {
        "wss://ws.kraken.com/v2"
    }
    fn symbol(&self, market: &str) -> String {
        match Spec.parse_market(market) {
            Some((b, q)) => format!("{b}/{q}"),
            None => market.to_string(),
        }
    }
    /// The `instrument` channel takes no symbols: it lists every pair.
    fn subscribe(&self, symbols: &[&String]) -> Vec<String> {
        vec![
            serde_json::json!({"method": "subscribe", "params": {"channel": "ticker", "symbol": symbols}}).to_string(),
            serde_json::json!({"method": "subscribe", "params": {"channel": "instrument", "snapshot": true}}).to_string(),
        ]
    }
    fn ping(&self) -> Ping {
        Ping::Text(r#"{"method":"ping"}"#)
    }
    fn parse(&self, text: &str) -> Result<Vec<(String, RawQuote)>, SourceError> {
        let m: KrakenWsMsg = serde_json::from_str(text).map_err(SourceError::malformed)?;
        if m.success == Some(false) {
            let error = m.error.unwrap_or_default();
            // "Currency pair not supported", "Currency pair not in ISO 4217-A3 format".
            if error.starts_with("Currency pair not") || says_unknown_symbol(&error) {
                return Err(SourceError::UnknownSymbol(m.symbol.unwrap_or_default()));
            }
            return Err(SourceError::Venue {
                code: m.method.unwrap_or_default(),
                message: snippet(&error),
            });
        }
        if m.channel.as_deref() != Some("ticker") {
            return Ok(vec![]); // heartbeat, status, instrument, pong, acks
        }
        let data: Vec<KrakenWsTicker> =
            serde_json::from_value(m.data).map_err(SourceError::malformed)?;
        Ok(data
            .into_iter()
            .map(|t| {
                let q = RawQuote {
                    bid: t.bid.map(|x| x.0),
                    ask: t.ask.map(|x| x.0),
                    last: t.last.map(|x| x.0),
                    volume: t.volume.map(|x| x.0),
                    venue_time_ms: None,
                };
                (t.symbol, q)
            })
            .collect())
    }
    /// `{"channel": "instrument", "type": "snapshot" | "update", "data":
    /// {"assets": [...], "pairs": [{"symbol": "BTC/USD", "status": "online", ...}]}}`.
    fn parse_states(&self, text: &str) -> Vec<(String, Result<MarketState, SourceError>)> {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(text) else {
            return Vec::new();
        };
        if v["channel"] != "instrument" {
            return Vec::new();
        }
        let pairs = v["data"]["pairs"].as_array().map(Vec::as_slice).unwrap_or_default();
        pairs
            .iter()
            .filter_map(|p| {
                let symbol = p["symbol"].as_str()?.to_string();
                let state = match p["status"].as_str() {
                    Some(s) => pair_state(s),
                    None => Err(SourceError::Malformed(format!("no status for {symbol}"))),
                };
                Some((symbol, state))
            })
            .collect()
    }
    #[cfg(feature = "sim")]
    fn render_states(&self, symbols: &[String], state: MarketState) -> Option<String> {
        let pairs: Vec<_> = symbols
            .iter()
            .map(|s| {
                let (base, quote) = s.split_once('/').unwrap_or((s, ""));
                json!({"symbol": s, "base": base, "quote": quote, "status": render_pair_state(state),
                    "qty_precision": 8, "qty_increment": 0.00000001, "price_precision": 1,
                    "price_increment": 0.1, "cost_precision": 5, "marginable": true, "has_index": true})
            })
            .collect();
        Some(json!({"channel": "instrument", "type": "update", "data": {"assets": [], "pairs": pairs}}).to_string())
    }
    #[cfg(feature = "sim")]
    fn subscribes_states(&self, text: &str) -> bool {
        serde_json::from_str::<serde_json::Value>(text).is_ok_and(|v| {
            v["method"] == "subscribe" && v["params"]["channel"] == "instrument"
        })
    }
    #[cfg(feature = "sim")]
    fn render_ticker(&self, symbol: &str, _market: &str, t: &Tick, _seq: u64) -> String {
        let (bid, ask, last, volume) = (&t.bid, &t.ask, &t.last, &t.volume);
        format!(
            r#"{{"channel":"ticker","type":"update","data":[{{"symbol":"{symbol}","bid":{bid},"bid_qty":1.0,"ask":{ask},"ask_qty":1.0,"last":{last},"volume":{volume},"vwap":{last},"low":{bid},"high":{ask},"change":0.0,"change_pct":0.0}}]}}"#
        )
    }
    #[cfg(feature = "sim")]
    fn heartbeat(&self, _symbols: &[String], _seq: u64, _now_ms: u64) -> Option<String> {
        Some(r#"{"channel":"heartbeat"}"#.to_string())
    }
    #[cfg(feature = "sim")]
    fn answer(&self, text: &str, symbols: &mut Vec<String>) -> Vec<String> {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(text) else {
            return vec![];
        };
        if v["method"] == "ping" {
            return vec![json!({"method": "pong", "time_in": "2023-11-14T22:13:20.000000Z", "time_out": "2023-11-14T22:13:20.000100Z"}).to_string()];
        }
        if v["method"] != "subscribe" {
            return vec![];
        }
        if self.subscribes_states(text) {
            return vec![json!({"method": "subscribe", "result": {"channel": "instrument", "snapshot": true}, "success": true}).to_string()];
        }
        let list = json_strings(v["params"].get("symbol"));
        add_symbols(symbols, list.clone());
        list.iter()
            .map(|s| json!({"method": "subscribe", "result": {"channel": "ticker", "symbol": s}, "success": true}).to_string())
            .collect()
    }
}

#[derive(Deserialize)]
struct KrakenResp {
    error: Vec<String>,
    #[serde(default)]
    result: Option<std::collections::BTreeMap<String, KrakenTicker>>,
}

#[derive(Deserialize)]
struct KrakenTicker {
    #[serde(default)]
    a: Vec<Num>,
    #[serde(default)]
    b: Vec<Num>,
    #[serde(default)]
    c: Vec<Num>,
    #[serde(default)]
    v: Vec<Num>,
}

fn parse_kraken(status: u16, body: &[u8], market: &str) -> Result<RawQuote, SourceError> {
    let resp: KrakenResp = json(body)?;
    if let Some(e) = resp.error.first() {
        // "EQuery:Unknown asset pair", "EQuery:Unknown asset", "EQuery:Invalid asset pair".
        return Err(
            if e.starts_with("EQuery:Unknown asset") || says_unknown_symbol(e) {
                SourceError::UnknownSymbol(market.into())
            } else if e.contains("Rate limit") || e.contains("Too many requests") {
                rate_limited(status, e)
            } else {
                venue_err("kraken", e)
            },
        );
    }
    // Kraken keys the result by its own pair name (XBTUSD -> XXBTZUSD); we ask for one pair.
    let result = resp.result.unwrap_or_default();
    if result.len() != 1 {
        return Err(SourceError::Malformed(format!(
            "expected one pair in result, got {}",
            result.len()
        )));
    }
    let t = result
        .into_values()
        .next()
        .ok_or_else(|| SourceError::Malformed("empty result".into()))?;
    Ok(RawQuote {
        bid: t.b.first().map(|x| x.0.clone()),
        ask: t.a.first().map(|x| x.0.clone()),
        last: t.c.first().map(|x| x.0.clone()),
        volume: t.v.get(1).map(|x| x.0.clone()),
        venue_time_ms: None,
    })
}
