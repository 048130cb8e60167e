//! HTX (Huobi): `GET /market/detail/merged?symbol=btcusdt`.
//! Published limit: 100 req/10 s for market data (conservative).

use serde::Deserialize;
#[cfg(feature = "sim")]
use serde_json::json;

#[cfg(feature = "sim")]
use super::Tick;
use super::{
    Num, RateLimit, RawQuote, Route, SymbolStyle, VenueSpec, json, n, rate_limited,
    says_unknown_symbol, venue_err,
};
use crate::error::SourceError;

pub(super) struct Spec;

impl VenueSpec for Spec {
    fn base_url(&self) -> &'static str {
        "https://api.huobi.pro"
    }
    fn rate_limit(&self) -> RateLimit {
        RateLimit {
            per_second: 10,
            burst: 10,
        }
    }
    fn symbol_style(&self) -> SymbolStyle {
        SymbolStyle::JoinedLower
    }
    fn ticker_route(&self) -> Route {
        Route::query("/market/detail/merged", "symbol")
    }
    fn parse_rest(&self, status: u16, body: &[u8], market: &str) -> Result<RawQuote, SourceError> {
        parse_htx(status, body, market)
    }
    #[cfg(feature = "sim")]
    fn render_ticker(&self, market: &str, t: &Tick) -> String {
        let (bid, ask, last, volume, time_ms) = (&t.bid, &t.ask, &t.last, &t.volume, t.time_ms);
        format!(
            r#"{{"ch":"market.{market}.detail.merged","status":"ok","ts":{time_ms},"tick":{{"id":1,"version":1,"open":{last},"close":{last},"low":{bid},"high":{ask},"amount":{volume},"vol":0,"count":1,"bid":[{bid},1.2],"ask":[{ask},0.5]}}}}"#
        )
    }
    #[cfg(feature = "sim")]
    fn render_unknown_symbol(&self, _market: &str) -> (u16, String) {
        (
            200,
            json!({"ts": 0, "status": "error", "err-code": "invalid-parameter", "err-msg": "invalid symbol"}).to_string(),
        )
    }
    #[cfg(feature = "sim")]
    fn render_rate_limited(&self) -> serde_json::Value {
        json!({"status": "error", "err-code": "api-limit-exceeded", "err-msg": "Too many requests"})
    }
}

#[derive(Deserialize)]
struct HtxResp {
    status: String,
    ts: Option<u64>,
    tick: Option<HtxTick>,
    #[serde(rename = "err-code")]
    err_code: Option<String>,
    #[serde(rename = "err-msg")]
    err_msg: Option<String>,
}

#[derive(Deserialize)]
struct HtxTick {
    close: Option<Num>,
    amount: Option<Num>,
    #[serde(default)]
    bid: Option<Vec<Num>>,
    #[serde(default)]
    ask: Option<Vec<Num>>,
}

fn parse_htx(status: u16, body: &[u8], market: &str) -> Result<RawQuote, SourceError> {
    let resp: HtxResp = json(body)?;
    if resp.status != "ok" {
        let code = resp.err_code.unwrap_or_default();
        let msg = resp.err_msg.unwrap_or_default();
        return Err(
            // "invalid-parameter" / "bad-request" with "invalid symbol",
            // "base-symbol-error" ("The symbol is invalid").
            if matches!(code.as_str(), "invalid-symbol" | "base-symbol-error")
                || says_unknown_symbol(&msg)
            {
                SourceError::UnknownSymbol(market.into())
            } else if code.contains("too-many") || code.contains("rate") || code.contains("limit") {
                rate_limited(status, msg)
            } else {
                venue_err(code, msg)
            },
        );
    }
    let t = resp
        .tick
        .ok_or_else(|| SourceError::Malformed("status ok without tick".into()))?;
    Ok(RawQuote {
        bid: t.bid.and_then(|b| b.into_iter().next()).map(|x| x.0),
        ask: t.ask.and_then(|a| a.into_iter().next()).map(|x| x.0),
        last: n(&t.close),
        volume: n(&t.amount),
        venue_time_ms: resp.ts,
    })
}
