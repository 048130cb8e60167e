//! Bitget v2 spot: `GET /api/v2/spot/market/tickers?symbol=BTCUSDT`.
//! Published limit: 20 req/s.

use serde::Deserialize;
#[cfg(feature = "sim")]
use serde_json::json;

#[cfg(feature = "sim")]
use super::Tick;
use super::{
    MarketState, state_at,
    Num, RateLimit, RawQuote, Route, VenueSpec, json, listed, n, num_u64, rate_limited,
    says_unknown_symbol, venue_err,
};
use crate::error::SourceError;

pub(super) struct Spec;

impl VenueSpec for Spec {
    fn base_url(&self) -> &'static str {
        "https://api.bitget.com"
    }
    fn rate_limit(&self) -> RateLimit {
        RateLimit {
            per_second: 20,
            burst: 10,
        }
    }
    fn ticker_route(&self) -> Route {
        Route::query("/api/v2/spot/market/tickers", "symbol")
    }
    fn parse_rest(&self, status: u16, body: &[u8], market: &str) -> Result<RawQuote, SourceError> {
        parse_bitget(status, body, market)
    }
    fn status_route(&self) -> Option<Route> {
        Some(Route::query("/api/v2/spot/public/symbols", "symbol"))
    }
    fn parse_status(&self, body: &[u8], _market: &str) -> Result<MarketState, SourceError> {
        // {"code": "00000", "msg": "success", "data": [{"symbol": "BTCUSDT", "status": "online"}]}
        state_at(body, "/data/0/status", "status", |v| {
            Some(match v.as_str()? {
                "online" => MarketState::Open,
                "halt" | "offline" => MarketState::Halted,
                "gray" => MarketState::Closed,
                _ => return None,
            })
        })
    }
    #[cfg(feature = "sim")]
    fn render_status(&self, market: &str, state: MarketState) -> String {
        let s = match state {
            MarketState::Open => "online",
            MarketState::Halted => "halt",
            MarketState::Closed => "gray",
        };
        json!({"code": "00000", "msg": "success", "requestTime": 0, "data": [{"symbol": market, "status": s}]})
            .to_string()
    }
    #[cfg(feature = "sim")]
    fn render_ticker(&self, market: &str, t: &Tick) -> String {
        let ts = t.time_ms.to_string();
        json!({"code": "00000", "msg": "success", "requestTime": t.time_ms, "data": [{
            "symbol": market, "high24h": t.ask, "open": t.last, "low24h": t.bid, "lastPr": t.last, "quoteVolume": "0",
            "baseVolume": t.volume, "usdtVolume": "0", "bidPr": t.bid, "askPr": t.ask, "bidSz": "1", "askSz": "1",
            "openUtc": t.last, "ts": ts, "changeUtc24h": "0", "change24h": "0"
        }]})
        .to_string()
    }
    #[cfg(feature = "sim")]
    fn render_unknown_symbol(&self, market: &str) -> (u16, String) {
        (
            400,
            json!({"code": "40034", "msg": format!("Parameter {market} does not exist"), "requestTime": 0, "data": null})
                .to_string(),
        )
    }
    #[cfg(feature = "sim")]
    fn render_rate_limited(&self) -> serde_json::Value {
        json!({"code": "429", "msg": "Too Many Requests", "requestTime": 0, "data": null})
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct BitgetResp {
    code: String,
    msg: String,
    data: Option<Vec<BitgetTicker>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct BitgetTicker {
    symbol: String,
    last_pr: Option<Num>,
    bid_pr: Option<Num>,
    ask_pr: Option<Num>,
    base_volume: Option<Num>,
    ts: Option<Num>,
}

fn parse_bitget(status: u16, body: &[u8], market: &str) -> Result<RawQuote, SourceError> {
    let resp: BitgetResp = json(body)?;
    match resp.code.as_str() {
        "00000" => {}
        "429" | "40007" => return Err(rate_limited(status, resp.msg)),
        // 40034 "Parameter {symbol} does not exist", 40309 "The symbol has been removed".
        "40034" | "40309" => return Err(SourceError::UnknownSymbol(market.into())),
        _ if says_unknown_symbol(&resp.msg) => {
            return Err(SourceError::UnknownSymbol(market.into()));
        }
        code => return Err(venue_err(code, resp.msg)),
    }
    let t = listed(resp.data.unwrap_or_default(), market, |t| &t.symbol)?;
    Ok(RawQuote {
        bid: n(&t.bid_pr),
        ask: n(&t.ask_pr),
        last: n(&t.last_pr),
        volume: n(&t.base_volume),
        venue_time_ms: num_u64(&t.ts),
    })
}
