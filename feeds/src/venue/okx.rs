//! OKX v5: `GET /api/v5/market/ticker?instId=BTC-USDT`, and the `tickers`
//! and `instruments` channels of `wss://ws.okx.com:8443/ws/v5/public` (same
//! ticker and instrument objects as REST).
//! Published limit: 20 req/2 s.

use serde::Deserialize;
#[cfg(feature = "sim")]
use serde_json::json;

#[cfg(feature = "sim")]
use super::Tick;
#[cfg(feature = "sim")]
use super::add_symbols;
use super::{
    MarketState, state_at,
    Num, Ping, RateLimit, RawQuote, Route, StreamSpec, SymbolStyle, VenueSpec, json, listed, n,
    num_u64, rate_limited, says_unknown_symbol, venue_err,
};
use crate::error::{SourceError, snippet};

pub(super) struct Spec;

impl VenueSpec for Spec {
    fn base_url(&self) -> &'static str {
        "https://www.okx.com"
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
        Route::query("/api/v5/market/ticker", "instId")
    }
    fn parse_rest(&self, status: u16, body: &[u8], market: &str) -> Result<RawQuote, SourceError> {
        parse_okx(status, body, market)
    }
    fn status_route(&self) -> Option<Route> {
        Some(Route::Query {
            path: "/api/v5/public/instruments",
            fixed: "instType=SPOT",
            param: "instId",
        })
    }
    fn parse_status(&self, body: &[u8], _market: &str) -> Result<MarketState, SourceError> {
        // {"code": "0", "msg": "", "data": [{"instId": "BTC-USDT", "state": "live", ...}]}
        state_at(body, "/data/0/state", "state", inst_state)
    }
    #[cfg(feature = "sim")]
    fn render_status(&self, market: &str, state: MarketState) -> String {
        json!({"code": "0", "msg": "", "data": [render_instrument(market, state)]}).to_string()
    }
    fn stream(&self) -> Option<&'static dyn StreamSpec> {
        Some(&Stream)
    }
    #[cfg(feature = "sim")]
    fn render_ticker(&self, market: &str, t: &Tick) -> String {
        let ts = t.time_ms.to_string();
        json!({"code": "0", "msg": "", "data": [{
            "instType": "SPOT", "instId": market, "last": t.last, "lastSz": "0.01", "askPx": t.ask, "askSz": "0.5",
            "bidPx": t.bid, "bidSz": "1.2", "open24h": t.last, "high24h": t.ask, "low24h": t.bid, "volCcy24h": "0",
            "vol24h": t.volume, "ts": ts, "sodUtc0": t.last, "sodUtc8": t.last
        }]})
        .to_string()
    }
    #[cfg(feature = "sim")]
    fn render_unknown_symbol(&self, _market: &str) -> (u16, String) {
        (
            200,
            json!({"code": "51001", "data": [], "msg": "Instrument ID does not exist"}).to_string(),
        )
    }
    #[cfg(feature = "sim")]
    fn render_rate_limited(&self) -> serde_json::Value {
        json!({"msg": "Too Many Requests", "code": "50011"})
    }
}

/// An instrument's `state`, as the REST instruments answer and the
/// `instruments` channel spell it.
fn inst_state(v: &serde_json::Value) -> Option<MarketState> {
    Some(match v.as_str()? {
        "live" => MarketState::Open,
        "suspend" => MarketState::Halted,
        "preopen" | "test" => MarketState::Closed,
        _ => return None,
    })
}

#[cfg(feature = "sim")]
fn render_instrument(market: &str, state: MarketState) -> serde_json::Value {
    let s = match state {
        MarketState::Open => "live",
        MarketState::Halted => "suspend",
        MarketState::Closed => "preopen",
    };
    json!({"instId": market, "instType": "SPOT", "state": s})
}

struct Stream;

#[derive(Deserialize)]
struct OkxWsArg {
    channel: Option<String>,
}

#[derive(Deserialize)]
struct OkxWsMsg {
    arg: Option<OkxWsArg>,
    event: Option<String>,
    code: Option<String>,
    msg: Option<String>,
    #[serde(default)]
    data: Vec<OkxTicker>,
}

impl StreamSpec for Stream {
    fn url(&self) -> &'static str {
        "wss://ws.okx.com:8443/ws/v5/public"
    }
    fn subscribe(&self, symbols: &[&String]) -> Vec<String> {
        let args: Vec<_> = symbols
            .iter()
            .map(|s| serde_json::json!({"channel": "tickers", "instId": s}))
            .collect();
        vec![
            serde_json::json!({"op": "subscribe", "args": args}).to_string(),
            serde_json::json!({"op": "subscribe", "args": [{"channel": "instruments", "instType": "SPOT"}]}).to_string(),
        ]
    }
    fn ping(&self) -> Ping {
        Ping::Text("ping")
    }
    fn parse(&self, text: &str) -> Result<Vec<(String, RawQuote)>, SourceError> {
        if text == "pong" {
            return Ok(vec![]);
        }
        let m: OkxWsMsg = serde_json::from_str(text).map_err(SourceError::malformed)?;
        if m.event.as_deref() == Some("error") {
            let msg = m.msg.unwrap_or_default();
            // 60018: "Wrong URL or channel:tickers,instId:BTC-USDX doesn't exist. ..."
            if m.code.as_deref() == Some("60018") || says_unknown_symbol(&msg) {
                let inst = msg
                    .split("instId:")
                    .nth(1)
                    .and_then(|rest| rest.split([' ', ',', '.']).next())
                    .unwrap_or_default();
                return Err(SourceError::UnknownSymbol(inst.to_string()));
            }
            return Err(SourceError::Venue {
                code: m.code.unwrap_or_else(|| "ws".into()),
                message: snippet(&msg),
            });
        }
        if m.arg.and_then(|a| a.channel).as_deref() != Some("tickers") {
            return Ok(vec![]); // acks, instruments
        }
        Ok(m.data
            .iter()
            .map(|t| (t.inst_id.clone(), t.raw()))
            .collect())
    }
    /// `{"arg": {"channel": "instruments", "instType": "SPOT"}, "data":
    /// [{"instId": "BTC-USDT", "state": "live", ...}]}`, pushed on changes.
    fn parse_states(&self, text: &str) -> Vec<(String, Result<MarketState, SourceError>)> {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(text) else {
            return Vec::new();
        };
        if v["arg"]["channel"] != "instruments" {
            return Vec::new();
        }
        let data = v["data"].as_array().map(Vec::as_slice).unwrap_or_default();
        data.iter()
            .filter_map(|i| {
                let id = i["instId"].as_str()?.to_string();
                let state = inst_state(&i["state"])
                    .ok_or_else(|| super::unknown_state("state", &i["state"].to_string()));
                Some((id, state))
            })
            .collect()
    }
    #[cfg(feature = "sim")]
    fn render_states(&self, symbols: &[String], state: MarketState) -> Option<String> {
        let data: Vec<_> = symbols.iter().map(|s| render_instrument(s, state)).collect();
        Some(json!({"arg": {"channel": "instruments", "instType": "SPOT"}, "data": data}).to_string())
    }
    #[cfg(feature = "sim")]
    fn subscribes_states(&self, text: &str) -> bool {
        serde_json::from_str::<serde_json::Value>(text).is_ok_and(|v| {
            v["op"] == "subscribe"
                && v["args"]
                    .as_array()
                    .is_some_and(|a| a.iter().any(|x| x["channel"] == "instruments"))
        })
    }
    #[cfg(feature = "sim")]
    fn render_ticker(&self, symbol: &str, _market: &str, t: &Tick, _seq: u64) -> String {
        json!({"arg": {"channel": "tickers", "instId": symbol}, "data": [{
            "instType": "SPOT", "instId": symbol, "last": t.last, "lastSz": "0.01", "askPx": t.ask, "askSz": "1",
            "bidPx": t.bid, "bidSz": "1", "open24h": t.last, "high24h": t.ask, "low24h": t.bid, "volCcy24h": "0",
            "vol24h": t.volume, "ts": t.time_ms.to_string(), "sodUtc0": t.last, "sodUtc8": t.last
        }]})
        .to_string()
    }
    #[cfg(feature = "sim")]
    fn answer(&self, text: &str, symbols: &mut Vec<String>) -> Vec<String> {
        if text == "ping" {
            return vec!["pong".into()];
        }
        let Ok(v) = serde_json::from_str::<serde_json::Value>(text) else {
            return vec![json!({"event": "error", "code": "60012", "msg": format!("Invalid request: {text}")}).to_string()];
        };
        if v["op"] != "subscribe" {
            return vec![];
        }
        let args: Vec<serde_json::Value> = v["args"].as_array().cloned().unwrap_or_default();
        add_symbols(
            symbols,
            args.iter()
                .filter_map(|a| a["instId"].as_str().map(str::to_string))
                .collect(),
        );
        args.into_iter()
            .map(|a| json!({"event": "subscribe", "arg": a, "connId": "sim"}).to_string())
            .collect()
    }
}

#[derive(Deserialize)]
struct OkxResp {
    code: String,
    msg: String,
    #[serde(default)]
    data: Vec<OkxTicker>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct OkxTicker {
    inst_id: String,
    last: Option<Num>,
    ask_px: Option<Num>,
    bid_px: Option<Num>,
    #[serde(rename = "vol24h")]
    vol_24h: Option<Num>,
    ts: Option<Num>,
}

impl OkxTicker {
    fn raw(&self) -> RawQuote {
        RawQuote {
            bid: n(&self.bid_px),
            ask: n(&self.ask_px),
            last: n(&self.last),
            volume: n(&self.vol_24h),
            venue_time_ms: num_u64(&self.ts),
        }
    }
}

fn parse_okx(status: u16, body: &[u8], market: &str) -> Result<RawQuote, SourceError> {
    let resp: OkxResp = json(body)?;
    match resp.code.as_str() {
        "0" => {}
        // 51001 "Instrument ID does not exist", 51002 "Instrument ID does not
        // match underlying index"; 51000 "Parameter instId error".
        "51001" | "51002" => return Err(SourceError::UnknownSymbol(market.into())),
        _ if says_unknown_symbol(&resp.msg) => {
            return Err(SourceError::UnknownSymbol(market.into()));
        }
        "50011" => return Err(rate_limited(status, resp.msg)),
        code => return Err(venue_err(code, resp.msg)),
    }
    let t = listed(&resp.data, market, |t| &t.inst_id)?;
    Ok(t.raw())
}
