//! Bitget v2 spot: `GET /api/v2/spot/market/tickers?symbol=BTCUSDT`.
//! Published limit: 20 req/s.

use serde::Deserialize;
#[cfg(feature = "sim")]
use serde_json::json;

use super::{Num, RateLimit, RawQuote, VenueSpec, json, n, num_u64, query_param, rate_limited, split_by_quote, venue_err};
use crate::error::SourceError;
#[cfg(feature = "sim")]
use super::Tick;

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
    fn market(&self, base: &str, quote: &str) -> String {
        format!("{}{}", base.to_ascii_uppercase(), quote.to_ascii_uppercase())
    }
    fn parse_market(&self, market: &str) -> Option<(String, String)> {
        split_by_quote(&market.to_ascii_uppercase())
    }
    fn ticker_path(&self, market: &str) -> String {
        format!("/api/v2/spot/market/tickers?symbol={market}")
    }
    fn market_of_request(&self, path: &str, query: &str) -> Option<String> {
        if path == "/api/v2/spot/market/tickers" {
            query_param(query, "symbol")
        } else {
            None
        }
    }
    fn parse_rest(&self, status: u16, body: &[u8], market: &str) -> Result<RawQuote, SourceError> {
        parse_bitget(status, body, market)
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
        let ts = time_ms.to_string();
        let body = json!({"code": "00000", "msg": "success", "requestTime": time_ms, "data": [{
            "symbol": market, "high24h": ask, "open": last, "low24h": bid, "lastPr": last, "quoteVolume": "0",
            "baseVolume": volume, "usdtVolume": "0", "bidPr": bid, "askPr": ask, "bidSz": "1", "askSz": "1",
            "openUtc": last, "ts": ts, "changeUtc24h": "0", "change24h": "0"
        }]})
        .to_string();
        (200, body)
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
        "40034" => return Err(SourceError::UnknownSymbol(market.into())),
        code => return Err(venue_err(code, resp.msg)),
    }
    let t = resp
        .data
        .and_then(|d| d.into_iter().find(|t| t.symbol == market))
        .ok_or_else(|| SourceError::UnknownSymbol(market.into()))?;
    Ok(RawQuote {
        bid: n(&t.bid_pr),
        ask: n(&t.ask_pr),
        last: n(&t.last_pr),
        volume: n(&t.base_volume),
        venue_time_ms: num_u64(&t.ts),
    })
}
