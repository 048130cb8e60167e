//! KuCoin: `GET /api/v1/market/orderbook/level1?symbol=BTC-USDT`.
//! Published limit: 2000 weight/30 s, level1 costs 2.

use serde::Deserialize;
#[cfg(feature = "sim")]
use serde_json::json;

#[cfg(feature = "sim")]
use super::Tick;
use super::{
    MarketState, state_at,
    Num, RateLimit, RawQuote, Route, SymbolStyle, VenueSpec, json, n, rate_limited,
    says_unknown_symbol, venue_err,
};
use crate::error::SourceError;

pub(super) struct Spec;

impl VenueSpec for Spec {
    fn base_url(&self) -> &'static str {
        "https://api.kucoin.com"
    }
    fn rate_limit(&self) -> RateLimit {
        RateLimit {
            per_second: 30,
            burst: 10,
        }
    }
    fn symbol_style(&self) -> SymbolStyle {
        SymbolStyle::Separated('-')
    }
    fn ticker_route(&self) -> Route {
        Route::query("/api/v1/market/orderbook/level1", "symbol")
    }
    fn parse_rest(&self, status: u16, body: &[u8], market: &str) -> Result<RawQuote, SourceError> {
        parse_kucoin(status, body, market)
    }
    fn status_route(&self) -> Option<Route> {
        Some(Route::Segment {
            prefix: "/api/v2/symbols/",
            suffix: "",
        })
    }
    fn parse_status(&self, body: &[u8], _market: &str) -> Result<MarketState, SourceError> {
        // {"code": "200000", "data": {"symbol": "BTC-USDT", "enableTrading": true, ...}}
        state_at(body, "/data/enableTrading", "enableTrading", |v| {
            Some(if v.as_bool()? {
                MarketState::Open
            } else {
                MarketState::Halted
            })
        })
    }
    #[cfg(feature = "sim")]
    fn render_status(&self, market: &str, state: MarketState) -> String {
        let open = state == MarketState::Open;
        json!({"code": "200000", "data": {"symbol": market, "enableTrading": open}}).to_string()
    }
    #[cfg(feature = "sim")]
    fn render_ticker(&self, _market: &str, t: &Tick) -> String {
        json!({"code": "200000", "data": {
            "time": t.time_ms, "sequence": "1", "price": t.last, "size": "0.1", "bestBid": t.bid,
            "bestBidSize": "1", "bestAsk": t.ask, "bestAskSize": "1"
        }})
        .to_string()
    }
    #[cfg(feature = "sim")]
    fn render_unknown_symbol(&self, _market: &str) -> (u16, String) {
        (200, json!({"code": "200000", "data": null}).to_string())
    }
    #[cfg(feature = "sim")]
    fn render_rate_limited(&self) -> serde_json::Value {
        json!({"code": "429000", "msg": "Too Many Requests"})
    }
}

#[derive(Deserialize)]
struct KucoinResp {
    code: String,
    msg: Option<String>,
    data: Option<KucoinLevel1>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct KucoinLevel1 {
    time: Option<u64>,
    price: Option<Num>,
    best_bid: Option<Num>,
    best_ask: Option<Num>,
}

fn parse_kucoin(status: u16, body: &[u8], market: &str) -> Result<RawQuote, SourceError> {
    let resp: KucoinResp = json(body)?;
    let msg = resp.msg.unwrap_or_default();
    match resp.code.as_str() {
        "200000" => {}
        "429000" => return Err(rate_limited(status, msg)),
        // 900001 "symbol not exists".
        "900001" => return Err(SourceError::UnknownSymbol(market.into())),
        _ if says_unknown_symbol(&msg) || msg.contains("pair is not provided") => {
            return Err(SourceError::UnknownSymbol(market.into()));
        }
        code => return Err(venue_err(code, msg)),
    }
    // KuCoin answers an unknown symbol with success and `"data": null`.
    let t = resp
        .data
        .ok_or_else(|| SourceError::UnknownSymbol(market.into()))?;
    Ok(RawQuote {
        bid: n(&t.best_bid),
        ask: n(&t.best_ask),
        last: n(&t.price),
        volume: None,
        venue_time_ms: t.time,
    })
}
