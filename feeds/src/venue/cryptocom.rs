//! Crypto.com Exchange v1: `GET /exchange/v1/public/get-tickers?instrument_name=BTC_USD`.
//! Published limit: 100 req/s.

use serde::Deserialize;
#[cfg(feature = "sim")]
use serde_json::json;

#[cfg(feature = "sim")]
use super::Tick;
use super::{
    Num, RateLimit, RawQuote, Route, SymbolStyle, VenueSpec, code_text, json, listed, n,
    rate_limited, says_unknown_symbol, venue_err,
};
use crate::error::SourceError;

pub(super) struct Spec;

impl VenueSpec for Spec {
    fn base_url(&self) -> &'static str {
        "https://api.crypto.com"
    }
    fn rate_limit(&self) -> RateLimit {
        RateLimit {
            per_second: 50,
            burst: 20,
        }
    }
    fn symbol_style(&self) -> SymbolStyle {
        SymbolStyle::Separated('_')
    }
    fn ticker_route(&self) -> Route {
        Route::query("/exchange/v1/public/get-tickers", "instrument_name")
    }
    fn parse_rest(&self, status: u16, body: &[u8], market: &str) -> Result<RawQuote, SourceError> {
        parse_cryptocom(status, body, market)
    }
    #[cfg(feature = "sim")]
    fn render_ticker(&self, market: &str, t: &Tick) -> String {
        json!({"id": -1, "method": "public/get-tickers", "code": 0, "result": {"data": [{
            "i": market, "h": t.ask, "l": t.bid, "a": t.last, "v": t.volume, "vv": "0", "c": "0", "b": t.bid, "k": t.ask,
            "oi": "0", "t": t.time_ms
        }]}})
        .to_string()
    }
    #[cfg(feature = "sim")]
    fn render_unknown_symbol(&self, _market: &str) -> (u16, String) {
        (
            400,
            json!({"id": -1, "method": "public/get-tickers", "code": 40004, "message": "Invalid instrument_name"})
                .to_string(),
        )
    }
    #[cfg(feature = "sim")]
    fn render_rate_limited(&self) -> serde_json::Value {
        json!({"id": -1, "method": "public/get-tickers", "code": 42901, "message": "TOO_MANY_REQUESTS"})
    }
}

#[derive(Deserialize)]
struct CdcResp {
    /// A JSON number, or on some errors a string ("20005").
    code: serde_json::Value,
    message: Option<String>,
    result: Option<CdcResult>,
}

#[derive(Deserialize)]
struct CdcResult {
    #[serde(default)]
    data: Vec<CdcTicker>,
}

#[derive(Deserialize)]
struct CdcTicker {
    i: String,
    a: Option<Num>,
    b: Option<Num>,
    k: Option<Num>,
    v: Option<Num>,
    t: Option<u64>,
}

fn parse_cryptocom(status: u16, body: &[u8], market: &str) -> Result<RawQuote, SourceError> {
    let resp: CdcResp = json(body)?;
    let msg = resp.message.unwrap_or_default();
    match code_text(&resp.code).as_str() {
        "0" => {}
        "10006" | "42901" => return Err(rate_limited(status, msg)),
        // 30003 SYMBOL_NOT_FOUND; 40004 (missing or invalid argument) when
        // the argument is the instrument.
        "30003" => return Err(SourceError::UnknownSymbol(market.into())),
        _ if says_unknown_symbol(&msg) || msg.to_ascii_lowercase().contains("instrument") => {
            return Err(SourceError::UnknownSymbol(market.into()));
        }
        code => return Err(venue_err(code, msg)),
    }
    let list = resp.result.map(|r| r.data).unwrap_or_default();
    let t = listed(list, market, |t| &t.i)?;
    Ok(RawQuote {
        bid: n(&t.b),
        ask: n(&t.k),
        last: n(&t.a),
        volume: n(&t.v),
        venue_time_ms: t.t,
    })
}
