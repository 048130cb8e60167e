//! Bybit v5 spot: `GET /v5/market/tickers?category=spot&symbol=BTCUSDT`.
//! Published limit: 600 req/5 s.

use serde::Deserialize;
#[cfg(feature = "sim")]
use serde_json::json;

use super::{Num, RateLimit, RawQuote, VenueSpec, json, n, query_param, rate_limited, split_by_quote, venue_err};
use crate::error::SourceError;
#[cfg(feature = "sim")]
use super::Tick;

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
    fn market(&self, base: &str, quote: &str) -> String {
        format!("{}{}", base.to_ascii_uppercase(), quote.to_ascii_uppercase())
    }
    fn parse_market(&self, market: &str) -> Option<(String, String)> {
        split_by_quote(&market.to_ascii_uppercase())
    }
    fn ticker_path(&self, market: &str) -> String {
        format!("/v5/market/tickers?category=spot&symbol={market}")
    }
    fn market_of_request(&self, path: &str, query: &str) -> Option<String> {
        if path == "/v5/market/tickers" {
            query_param(query, "symbol")
        } else {
            None
        }
    }
    fn parse_rest(&self, status: u16, body: &[u8], market: &str) -> Result<RawQuote, SourceError> {
        parse_bybit(status, body, market)
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
        let body = json!({"retCode": 0, "retMsg": "OK", "result": {"category": "spot", "list": [{
            "symbol": market, "bid1Price": bid, "bid1Size": "1.2", "ask1Price": ask, "ask1Size": "0.5",
            "lastPrice": last, "prevPrice24h": last, "price24hPcnt": "0", "highPrice24h": ask,
            "lowPrice24h": bid, "turnover24h": "0", "volume24h": volume
        }]}, "retExtInfo": {}, "time": time_ms})
        .to_string();
        (200, body)
    }
    #[cfg(feature = "sim")]
    fn render_unknown_symbol(&self, market: &str) -> (u16, String) {
        let _ = market;
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
        10001 if resp.ret_msg.to_ascii_lowercase().contains("symbol") => {
            return Err(SourceError::UnknownSymbol(market.into()));
        }
        10006 | 10018 => return Err(rate_limited(status, resp.ret_msg)),
        code => return Err(venue_err(code, resp.ret_msg)),
    }
    let t = resp
        .result
        .and_then(|r| r.list.into_iter().find(|t| t.symbol == market))
        .ok_or_else(|| SourceError::UnknownSymbol(market.into()))?;
    Ok(RawQuote {
        bid: n(&t.bid1_price),
        ask: n(&t.ask1_price),
        last: n(&t.last_price),
        volume: n(&t.volume_24h),
        venue_time_ms: resp.time,
    })
}
