//! Bybit v5 spot: `GET /v5/market/tickers?category=spot&symbol=BTCUSDT`.
//! Published limit: 600 req/5 s.

use serde::Deserialize;
#[cfg(feature = "sim")]
use serde_json::json;

#[cfg(feature = "sim")]
use super::Tick;
use super::{
    MarketState, state_at,
    Num, RateLimit, RawQuote, Route, VenueSpec, json, listed, n, rate_limited, says_unknown_symbol,
    venue_err,
};
use crate::error::SourceError;

pub(super) struct Spec;

impl VenueSpec for Spec {
    fn base_url(&self) -> &'static str {
        "https://api.bybit.com"
    }
    fn rate_limit(&self) -> RateLimit {
        RateLimit {
            per_second: 100,
            burst: 20,
        }
    }
    fn ticker_route(&self) -> Route {
        Route::Query {
            path: "/v5/market/tickers",
            fixed: "category=spot",
            param: "symbol",
        }
    }
    fn parse_rest(&self, status: u16, body: &[u8], market: &str) -> Result<RawQuote, SourceError> {
        parse_bybit(status, body, market)
    }
    fn status_route(&self) -> Option<Route> {
        Some(Route::Query {
            path: "/v5/market/instruments-info",
            fixed: "category=spot",
            param: "symbol",
        })
    }
    fn parse_status(&self, body: &[u8], _market: &str) -> Result<MarketState, SourceError> {
        // {"retCode": 0, "result": {"category": "spot", "list": [{"symbol": "BTCUSDT", "status": "Trading"}]}}
        // Bybit's spot "Closed" is a suspended market (trading stopped),
        // "PreLaunch" one that has not opened.
        state_at(body, "/result/list/0/status", "status", |v| {
            Some(match v.as_str()? {
                "Trading" => MarketState::Open,
                "Closed" | "Delivering" | "Settling" => MarketState::Halted,
                "PreLaunch" => MarketState::Closed,
                _ => return None,
            })
        })
    }
    #[cfg(feature = "sim")]
    fn render_status(&self, market: &str, state: MarketState) -> String {
        let s = match state {
            MarketState::Open => "Trading",
            MarketState::Halted => "Closed",
            MarketState::Closed => "PreLaunch",
        };
        json!({"retCode": 0, "retMsg": "OK", "result": {"category": "spot", "list": [{"symbol": market, "status": s}]}, "time": 0})
            .to_string()
    }
    #[cfg(feature = "sim")]
    fn render_ticker(&self, market: &str, t: &Tick) -> String {
        json!({"retCode": 0, "retMsg": "OK", "result": {"category": "spot", "list": [{
            "symbol": market, "bid1Price": t.bid, "bid1Size": "1.2", "ask1Price": t.ask, "ask1Size": "0.5",
            "lastPrice": t.last, "prevPrice24h": t.last, "price24hPcnt": "0", "highPrice24h": t.ask,
            "lowPrice24h": t.bid, "turnover24h": "0", "volume24h": t.volume
        }]}, "retExtInfo": {}, "time": t.time_ms})
        .to_string()
    }
    #[cfg(feature = "sim")]
    fn render_unknown_symbol(&self, _market: &str) -> (u16, String) {
        (
            200,
            json!({"retCode": 10001, "retMsg": "Not supported symbols", "result": {}, "retExtInfo": {}, "time": 0})
                .to_string(),
        )
    }
    #[cfg(feature = "sim")]
    fn render_rate_limited(&self) -> serde_json::Value {
        json!({"retCode": 10006, "retMsg": "Too many visits!", "result": {}, "retExtInfo": {}, "time": 0})
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct BybitResp {
    ret_code: i64,
    ret_msg: String,
    result: Option<BybitResult>,
    time: Option<u64>,
}

#[derive(Deserialize)]
struct BybitResult {
    #[serde(default)]
    list: Vec<BybitTicker>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct BybitTicker {
    symbol: String,
    bid1_price: Option<Num>,
    ask1_price: Option<Num>,
    last_price: Option<Num>,
    #[serde(rename = "volume24h")]
    volume_24h: Option<Num>,
}

fn parse_bybit(status: u16, body: &[u8], market: &str) -> Result<RawQuote, SourceError> {
    if status == 403 {
        return Err(rate_limited(status, String::from_utf8_lossy(body)));
    }
    let resp: BybitResp = json(body)?;
    match resp.ret_code {
        0 => {}
        // 10001 is every parameter error ("params error: symbol invalid",
        // "Not supported symbols"); 170121 "Invalid symbol." (spot).
        10001 if resp.ret_msg.to_ascii_lowercase().contains("symbol") => {
            return Err(SourceError::UnknownSymbol(market.into()));
        }
        170121 => return Err(SourceError::UnknownSymbol(market.into())),
        _ if says_unknown_symbol(&resp.ret_msg) => {
            return Err(SourceError::UnknownSymbol(market.into()));
        }
        10006 | 10018 => return Err(rate_limited(status, resp.ret_msg)),
        code => return Err(venue_err(code, resp.ret_msg)),
    }
    let list = resp.result.map(|r| r.list).unwrap_or_default();
    let t = listed(list, market, |t| &t.symbol)?;
    Ok(RawQuote {
        bid: n(&t.bid1_price),
        ask: n(&t.ask1_price),
        last: n(&t.last_price),
        volume: n(&t.volume_24h),
        venue_time_ms: resp.time,
    })
}
