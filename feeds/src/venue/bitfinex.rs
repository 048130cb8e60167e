//! Bitfinex v2: `GET /v2/ticker/tBTCUSD` (an array of JSON numbers; USDT
//! is `UST`, long assets as `tDOGE:USD`). Published limit: ticker 90 req/min.

#[cfg(feature = "sim")]
use serde_json::json;
use serde_json::value::RawValue;

#[cfg(feature = "sim")]
use super::Tick;
use super::{
    Num, RateLimit, RawQuote, Route, VenueSpec, json, rate_limited, says_unknown_symbol, venue_err,
};
use crate::error::SourceError;

pub(super) struct Spec;

impl VenueSpec for Spec {
    fn base_url(&self) -> &'static str {
        "https://api-pub.bitfinex.com"
    }
    fn rate_limit(&self) -> RateLimit {
        RateLimit {
            per_second: 1,
            burst: 3,
        }
    }
    fn market(&self, base: &str, quote: &str) -> String {
        let (b, q) = (base.to_ascii_uppercase(), quote.to_ascii_uppercase());
        let (b, q) = (bitfinex_asset(&b), bitfinex_asset(&q));
        if b.len() > 3 || q.len() > 3 {
            format!("t{b}:{q}")
        } else {
            format!("t{b}{q}")
        }
    }
    fn parse_market(&self, market: &str) -> Option<(String, String)> {
        let s = market.strip_prefix('t')?;
        let (b, q) = match s.split_once(':') {
            Some((b, q)) => (b.to_string(), q.to_string()),
            None if s.len() == 6 => (s[..3].to_string(), s[3..].to_string()),
            None => return None,
        };
        Some((from_bitfinex_asset(&b), from_bitfinex_asset(&q)))
    }
    fn ticker_route(&self) -> Route {
        Route::Segment {
            prefix: "/v2/ticker/",
            suffix: "",
        }
    }
    fn parse_rest(&self, status: u16, body: &[u8], market: &str) -> Result<RawQuote, SourceError> {
        parse_bitfinex(status, body, market)
    }
    #[cfg(feature = "sim")]
    fn render_ticker(&self, _market: &str, t: &Tick) -> String {
        let (bid, ask, last, volume) = (&t.bid, &t.ask, &t.last, &t.volume);
        // JSON numbers, written from the text so nothing is lost.
        format!("[{bid},12.8,{ask},9.4,0,0,{last},{volume},{ask},{bid}]")
    }
    #[cfg(feature = "sim")]
    fn render_unknown_symbol(&self, _market: &str) -> (u16, String) {
        (500, r#"["error",10020,"symbol: invalid"]"#.to_string())
    }
    #[cfg(feature = "sim")]
    fn render_rate_limited(&self) -> serde_json::Value {
        json!({"error": "ERR_RATE_LIMIT"})
    }
}

fn bitfinex_asset(a: &str) -> String {
    match a {
        "USDT" => "UST".into(),
        "USDC" => "UDC".into(),
        other => other.into(),
    }
}

fn from_bitfinex_asset(a: &str) -> String {
    match a {
        "UST" => "USDT".into(),
        "UDC" => "USDC".into(),
        other => other.into(),
    }
}

fn parse_bitfinex(status: u16, body: &[u8], market: &str) -> Result<RawQuote, SourceError> {
    // Success: [BID, BID_SIZE, ASK, ASK_SIZE, DAILY_CHANGE, DAILY_CHANGE_RELATIVE,
    //           LAST_PRICE, VOLUME, HIGH, LOW] as JSON numbers.
    // Error:   ["error", CODE, "message"]; rate limit: {"error":"ERR_RATE_LIMIT"}.
    if let Ok(obj) = serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(body) {
        let e = obj
            .get("error")
            .and_then(|v| v.as_str())
            .unwrap_or("unknown");
        return Err(if e == "ERR_RATE_LIMIT" {
            rate_limited(status, e)
        } else if says_unknown_symbol(e) {
            SourceError::UnknownSymbol(market.into())
        } else {
            venue_err("bitfinex", e)
        });
    }
    let items: Vec<Box<RawValue>> = json(body)?;
    if items.is_empty() {
        return Err(SourceError::UnknownSymbol(market.into()));
    }
    if items[0].get() == "\"error\"" {
        let code = items
            .get(1)
            .map(|c| c.get().to_string())
            .unwrap_or_default();
        let msg: String = items
            .get(2)
            .and_then(|m| serde_json::from_str(m.get()).ok())
            .unwrap_or_default();
        // 10020 (ERR_PARAMS) names the bad field: "symbol: invalid".
        return Err(
            if says_unknown_symbol(&msg) || (code == "10020" && msg.starts_with("symbol")) {
                SourceError::UnknownSymbol(market.into())
            } else if code == "11010" || msg.contains("ratelimit") {
                rate_limited(status, msg)
            } else {
                venue_err(code, msg)
            },
        );
    }
    if items.len() < 10 {
        return Err(SourceError::Malformed(format!(
            "ticker array has {} fields, expected 10",
            items.len()
        )));
    }
    // A field may be `null` (an empty book side): absent, not malformed.
    let num = |i: usize| -> Result<Option<String>, SourceError> {
        serde_json::from_str::<Option<Num>>(items[i].get())
            .map(|x| x.map(|x| x.0))
            .map_err(SourceError::malformed)
    };
    Ok(RawQuote {
        bid: num(0)?,
        ask: num(2)?,
        last: num(6)?,
        volume: num(7)?,
        venue_time_ms: None,
    })
}
