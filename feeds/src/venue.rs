//! One adapter per exchange REST format: symbol mapping, request path,
//! response parsing (including each venue's error and rate-limit bodies) and
//! the venue's published public rate limit.
//!
//! Adapters return [`RawQuote`]: the literal decimal text of bid, ask, last
//! and volume. Turning text into fixed-point numbers and checking sanity is
//! done once, in [`crate::quote`], for every venue alike.

use std::fmt;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::value::RawValue;

use crate::error::{SourceError, snippet};
use crate::time::parse_rfc3339_ms;

/// Every supported venue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Venue {
    Binance,
    Coinbase,
    Kraken,
    Okx,
    Bybit,
    Bitstamp,
    Gemini,
    Kucoin,
    Bitfinex,
    Gateio,
    Htx,
    Cryptocom,
    Mexc,
    Bitget,
}

/// A ticker as the venue sent it: decimal literals, not yet trusted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RawQuote {
    pub bid: Option<String>,
    pub ask: Option<String>,
    pub last: Option<String>,
    /// 24 h volume in the base asset, where the venue reports it.
    pub volume: Option<String>,
    /// The venue's own timestamp for the quote, where it sends one.
    pub venue_time_ms: Option<u64>,
}

/// Published public market-data limit of a venue, as requests per second
/// per IP (rounded down where the venue states a per-minute weight budget).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    pub per_second: u32,
    pub burst: u32,
}

impl Venue {
    pub const ALL: [Venue; 14] = [
        Venue::Binance,
        Venue::Coinbase,
        Venue::Kraken,
        Venue::Okx,
        Venue::Bybit,
        Venue::Bitstamp,
        Venue::Gemini,
        Venue::Kucoin,
        Venue::Bitfinex,
        Venue::Gateio,
        Venue::Htx,
        Venue::Cryptocom,
        Venue::Mexc,
        Venue::Bitget,
    ];

    /// Lower-case name used in config, metrics labels and sim-exchange paths.
    pub fn name(self) -> &'static str {
        match self {
            Venue::Binance => "binance",
            Venue::Coinbase => "coinbase",
            Venue::Kraken => "kraken",
            Venue::Okx => "okx",
            Venue::Bybit => "bybit",
            Venue::Bitstamp => "bitstamp",
            Venue::Gemini => "gemini",
            Venue::Kucoin => "kucoin",
            Venue::Bitfinex => "bitfinex",
            Venue::Gateio => "gateio",
            Venue::Htx => "htx",
            Venue::Cryptocom => "cryptocom",
            Venue::Mexc => "mexc",
            Venue::Bitget => "bitget",
        }
    }

    pub fn from_name(name: &str) -> Option<Venue> {
        Venue::ALL.into_iter().find(|v| v.name() == name)
    }

    /// Public REST base URL of the venue.
    pub fn default_base_url(self) -> &'static str {
        match self {
            Venue::Binance => "https://api.binance.com",
            Venue::Coinbase => "https://api.exchange.coinbase.com",
            Venue::Kraken => "https://api.kraken.com",
            Venue::Okx => "https://www.okx.com",
            Venue::Bybit => "https://api.bybit.com",
            Venue::Bitstamp => "https://www.bitstamp.net",
            Venue::Gemini => "https://api.gemini.com",
            Venue::Kucoin => "https://api.kucoin.com",
            Venue::Bitfinex => "https://api-pub.bitfinex.com",
            Venue::Gateio => "https://api.gateio.ws",
            Venue::Htx => "https://api.huobi.pro",
            Venue::Cryptocom => "https://api.crypto.com",
            Venue::Mexc => "https://api.mexc.com",
            Venue::Bitget => "https://api.bitget.com",
        }
    }

    /// Public WebSocket URL, for the venues we stream from.
    pub fn default_ws_url(self) -> Option<&'static str> {
        match self {
            Venue::Binance => Some("wss://stream.binance.com:9443/stream"),
            Venue::Coinbase => Some("wss://ws-feed.exchange.coinbase.com"),
            Venue::Kraken => Some("wss://ws.kraken.com/v2"),
            Venue::Okx => Some("wss://ws.okx.com:8443/ws/v5/public"),
            _ => None,
        }
    }

    /// Published public limits (per IP). Sources: each venue's REST docs:
    /// Binance 6000 weight/min (24 h ticker = 2), Coinbase 10 req/s,
    /// Kraken ~1 req/s public, OKX 20 req/2 s, Bybit 600 req/5 s,
    /// Bitstamp 400 req/s, Gemini 120 req/min, KuCoin 2000 weight/30 s (level1 = 2),
    /// Bitfinex ticker 90 req/min, Gate.io 200 req/10 s, HTX 100 req/10 s (market
    /// data, conservative), Crypto.com 100 req/s, MEXC 500 weight/10 s,
    /// Bitget 20 req/s. We stay at or below each.
    pub fn published_rate_limit(self) -> RateLimit {
        let (per_second, burst) = match self {
            Venue::Binance => (40, 20),
            Venue::Coinbase => (10, 10),
            Venue::Kraken => (1, 2),
            Venue::Okx => (10, 10),
            Venue::Bybit => (100, 20),
            Venue::Bitstamp => (100, 20),
            Venue::Gemini => (2, 5),
            Venue::Kucoin => (30, 10),
            Venue::Bitfinex => (1, 3),
            Venue::Gateio => (20, 10),
            Venue::Htx => (10, 10),
            Venue::Cryptocom => (50, 20),
            Venue::Mexc => (20, 10),
            Venue::Bitget => (20, 10),
        };
        RateLimit { per_second, burst }
    }

    /// The venue's market symbol for `base`/`quote` (canonical upper-case asset codes).
    pub fn market(self, base: &str, quote: &str) -> String {
        let (b, q) = (base.to_ascii_uppercase(), quote.to_ascii_uppercase());
        match self {
            Venue::Binance | Venue::Bybit | Venue::Mexc | Venue::Bitget => format!("{b}{q}"),
            Venue::Coinbase | Venue::Okx | Venue::Kucoin => format!("{b}-{q}"),
            Venue::Gateio | Venue::Cryptocom => format!("{b}_{q}"),
            Venue::Bitstamp | Venue::Gemini | Venue::Htx => format!("{b}{q}").to_ascii_lowercase(),
            Venue::Kraken => format!("{}{}", kraken_asset(&b), kraken_asset(&q)),
            Venue::Bitfinex => {
                let (b, q) = (bitfinex_asset(&b), bitfinex_asset(&q));
                if b.len() > 3 || q.len() > 3 {
                    format!("t{b}:{q}")
                } else {
                    format!("t{b}{q}")
                }
            }
        }
    }

    /// Inverse of [`Venue::market`] (used by the simulated exchange).
    pub fn parse_market(self, market: &str) -> Option<(String, String)> {
        let split = |s: &str, sep: char| {
            let (b, q) = s.split_once(sep)?;
            Some((b.to_ascii_uppercase(), q.to_ascii_uppercase()))
        };
        match self {
            Venue::Coinbase | Venue::Okx | Venue::Kucoin => split(market, '-'),
            Venue::Gateio | Venue::Cryptocom => split(market, '_'),
            Venue::Binance
            | Venue::Bybit
            | Venue::Mexc
            | Venue::Bitget
            | Venue::Bitstamp
            | Venue::Gemini
            | Venue::Htx => split_by_quote(&market.to_ascii_uppercase()),
            Venue::Kraken => {
                let (b, q) = split_by_quote(&market.to_ascii_uppercase())?;
                Some((from_kraken_asset(&b), from_kraken_asset(&q)))
            }
            Venue::Bitfinex => {
                let s = market.strip_prefix('t')?;
                let (b, q) = match s.split_once(':') {
                    Some((b, q)) => (b.to_string(), q.to_string()),
                    None if s.len() == 6 => (s[..3].to_string(), s[3..].to_string()),
                    None => return None,
                };
                Some((from_bitfinex_asset(&b), from_bitfinex_asset(&q)))
            }
        }
    }

    /// Path and query of the venue's single-market ticker endpoint, appended to the base URL.
    pub fn ticker_path(self, market: &str) -> String {
        match self {
            Venue::Binance => format!("/api/v3/ticker/24hr?symbol={market}"),
            Venue::Coinbase => format!("/products/{market}/ticker"),
            Venue::Kraken => format!("/0/public/Ticker?pair={market}"),
            Venue::Okx => format!("/api/v5/market/ticker?instId={market}"),
            Venue::Bybit => format!("/v5/market/tickers?category=spot&symbol={market}"),
            Venue::Bitstamp => format!("/api/v2/ticker/{market}/"),
            Venue::Gemini => format!("/v1/pubticker/{market}"),
            Venue::Kucoin => format!("/api/v1/market/orderbook/level1?symbol={market}"),
            Venue::Bitfinex => format!("/v2/ticker/{market}"),
            Venue::Gateio => format!("/api/v4/spot/tickers?currency_pair={market}"),
            Venue::Htx => format!("/market/detail/merged?symbol={market}"),
            Venue::Cryptocom => format!("/exchange/v1/public/get-tickers?instrument_name={market}"),
            Venue::Mexc => format!("/api/v3/ticker/24hr?symbol={market}"),
            Venue::Bitget => format!("/api/v2/spot/market/tickers?symbol={market}"),
        }
    }

    /// Which market a ticker request asks for (inverse of [`Venue::ticker_path`]),
    /// given the path after the base URL and the raw query string.
    pub fn market_of_request(self, path: &str, query: &str) -> Option<String> {
        let param = |name: &str| {
            query.split('&').find_map(|kv| {
                let (k, v) = kv.split_once('=')?;
                (k == name).then(|| v.to_string())
            })
        };
        match self {
            Venue::Binance | Venue::Mexc if path == "/api/v3/ticker/24hr" => param("symbol"),
            Venue::Coinbase => path
                .strip_prefix("/products/")?
                .strip_suffix("/ticker")
                .map(str::to_string),
            Venue::Kraken if path == "/0/public/Ticker" => param("pair"),
            Venue::Okx if path == "/api/v5/market/ticker" => param("instId"),
            Venue::Bybit if path == "/v5/market/tickers" => param("symbol"),
            Venue::Bitstamp => path
                .strip_prefix("/api/v2/ticker/")
                .map(|s| s.trim_end_matches('/').to_string()),
            Venue::Gemini => path.strip_prefix("/v1/pubticker/").map(str::to_string),
            Venue::Kucoin if path == "/api/v1/market/orderbook/level1" => param("symbol"),
            Venue::Bitfinex => path
                .strip_prefix("/v2/ticker/")
                .map(|s| s.replace("%3A", ":")),
            Venue::Gateio if path == "/api/v4/spot/tickers" => param("currency_pair"),
            Venue::Htx if path == "/market/detail/merged" => param("symbol"),
            Venue::Cryptocom if path == "/exchange/v1/public/get-tickers" => {
                param("instrument_name")
            }
            Venue::Bitget if path == "/api/v2/spot/market/tickers" => param("symbol"),
            _ => None,
        }
    }

    /// Parse a ticker response. `status` is the HTTP status; error bodies
    /// become typed errors (unknown symbol, rate limited, venue error).
    pub fn parse_ticker(
        self,
        status: u16,
        body: &[u8],
        market: &str,
    ) -> Result<RawQuote, SourceError> {
        if status == 429 || status == 418 {
            return Err(SourceError::RateLimited {
                status,
                message: snippet(&String::from_utf8_lossy(body)),
            });
        }
        let result = match self {
            Venue::Binance | Venue::Mexc => parse_binance(status, body, market),
            Venue::Coinbase => parse_coinbase(status, body, market),
            Venue::Kraken => parse_kraken(status, body, market),
            Venue::Okx => parse_okx(status, body, market),
            Venue::Bybit => parse_bybit(status, body, market),
            Venue::Bitstamp => parse_bitstamp(status, body, market),
            Venue::Gemini => parse_gemini(status, body, market),
            Venue::Kucoin => parse_kucoin(status, body, market),
            Venue::Bitfinex => parse_bitfinex(status, body, market),
            Venue::Gateio => parse_gateio(status, body, market),
            Venue::Htx => parse_htx(status, body, market),
            Venue::Cryptocom => parse_cryptocom(status, body, market),
            Venue::Bitget => parse_bitget(status, body, market),
        };
        match result {
            // A body we could not read on a non-2xx status is an HTTP error, not a format change.
            Err(SourceError::Malformed(_)) if !(200..300).contains(&status) => {
                Err(SourceError::HttpStatus {
                    status,
                    body: snippet(&String::from_utf8_lossy(body)),
                })
            }
            other => other,
        }
    }
}

impl fmt::Display for Venue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

const QUOTES: [&str; 7] = ["USDT", "USDC", "USD", "EUR", "BTC", "UST", "ZUSD"];

fn split_by_quote(s: &str) -> Option<(String, String)> {
    // Longest suffix first so "USDT" wins over "USD"... but "ZUSD" (Kraken) last-resort.
    for q in QUOTES {
        if let Some(b) = s.strip_suffix(q)
            && !b.is_empty()
        {
            return Some((b.to_string(), q.to_string()));
        }
    }
    None
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

/// A number as the venue wrote it, string or JSON number, kept as text so
/// that no float ever touches it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Num(pub String);

impl<'de> Deserialize<'de> for Num {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw: Box<RawValue> = Deserialize::deserialize(d)?;
        let text = raw.get().trim();
        if text.starts_with('"') {
            let s: String = serde_json::from_str(text).map_err(serde::de::Error::custom)?;
            Ok(Num(s))
        } else if text.starts_with(['-', '0', '1', '2', '3', '4', '5', '6', '7', '8', '9']) {
            Ok(Num(text.to_string()))
        } else {
            Err(serde::de::Error::custom(format!(
                "expected a number, got {}",
                snippet(text)
            )))
        }
    }
}

fn n(v: &Option<Num>) -> Option<String> {
    v.as_ref().map(|x| x.0.clone())
}

fn num_u64(v: &Option<Num>) -> Option<u64> {
    v.as_ref().and_then(|x| x.0.parse().ok())
}

fn json<T: DeserializeOwned>(body: &[u8]) -> Result<T, SourceError> {
    serde_json::from_slice(body).map_err(SourceError::malformed)
}

/// Parse `body` as the venue's success shape, or else as its error shape.
/// (Serde's untagged enums cannot hold [`Num`], which borrows the raw text.)
fn json_either<T: DeserializeOwned, E: DeserializeOwned>(
    body: &[u8],
) -> Result<Result<T, E>, SourceError> {
    match serde_json::from_slice::<T>(body) {
        Ok(t) => Ok(Ok(t)),
        Err(first) => match serde_json::from_slice::<E>(body) {
            Ok(e) => Ok(Err(e)),
            Err(_) => Err(SourceError::malformed(first)),
        },
    }
}

fn venue_err(code: impl ToString, message: impl AsRef<str>) -> SourceError {
    SourceError::Venue {
        code: code.to_string(),
        message: snippet(message.as_ref()),
    }
}

fn rate_limited(status: u16, message: impl AsRef<str>) -> SourceError {
    SourceError::RateLimited {
        status,
        message: snippet(message.as_ref()),
    }
}

// ---------------------------------------------------------------- Binance / MEXC

#[derive(Deserialize)]
struct BinanceError {
    code: i64,
    msg: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct BinanceTicker {
    symbol: String,
    last_price: Num,
    bid_price: Option<Num>,
    ask_price: Option<Num>,
    volume: Option<Num>,
    close_time: Option<Num>,
}

fn parse_binance(status: u16, body: &[u8], market: &str) -> Result<RawQuote, SourceError> {
    match json_either::<BinanceTicker, BinanceError>(body)? {
        Ok(t) => {
            if t.symbol != market {
                return Err(SourceError::Malformed(format!(
                    "asked for {market}, got {}",
                    t.symbol
                )));
            }
            Ok(RawQuote {
                bid: n(&t.bid_price),
                ask: n(&t.ask_price),
                last: Some(t.last_price.0),
                volume: n(&t.volume),
                venue_time_ms: num_u64(&t.close_time),
            })
        }
        Err(BinanceError { code, msg }) => Err(match code {
            -1121 => SourceError::UnknownSymbol(market.into()),
            -1003 | 429 => rate_limited(status, msg),
            _ => venue_err(code, msg),
        }),
    }
}

// ---------------------------------------------------------------- Coinbase Exchange

#[derive(Deserialize)]
struct CoinbaseTicker {
    bid: Num,
    ask: Num,
    price: Num,
    volume: Option<Num>,
    time: Option<String>,
}

#[derive(Deserialize)]
struct CoinbaseError {
    message: String,
}

fn parse_coinbase(status: u16, body: &[u8], market: &str) -> Result<RawQuote, SourceError> {
    match json_either::<CoinbaseTicker, CoinbaseError>(body)? {
        Ok(CoinbaseTicker {
            bid,
            ask,
            price,
            volume,
            time,
        }) => Ok(RawQuote {
            bid: Some(bid.0),
            ask: Some(ask.0),
            last: Some(price.0),
            volume: n(&volume),
            venue_time_ms: time.as_deref().and_then(parse_rfc3339_ms),
        }),
        Err(CoinbaseError { message }) => Err(if status == 404 || message == "NotFound" {
            SourceError::UnknownSymbol(market.into())
        } else if message.to_ascii_lowercase().contains("rate limit") {
            rate_limited(status, message)
        } else {
            venue_err(status, message)
        }),
    }
}

// ---------------------------------------------------------------- Kraken

#[derive(Deserialize)]
struct KrakenResp {
    error: Vec<String>,
    #[serde(default)]
    result: Option<std::collections::BTreeMap<String, KrakenTicker>>,
}

#[derive(Deserialize)]
struct KrakenTicker {
    a: Vec<Num>,
    b: Vec<Num>,
    c: Vec<Num>,
    v: Vec<Num>,
}

fn parse_kraken(status: u16, body: &[u8], market: &str) -> Result<RawQuote, SourceError> {
    let resp: KrakenResp = json(body)?;
    if let Some(e) = resp.error.first() {
        return Err(if e.starts_with("EQuery:Unknown asset pair") {
            SourceError::UnknownSymbol(market.into())
        } else if e.contains("Rate limit") || e.contains("Too many requests") {
            rate_limited(status, e)
        } else {
            venue_err("kraken", e)
        });
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

// ---------------------------------------------------------------- OKX

#[derive(Deserialize)]
struct OkxResp {
    code: String,
    msg: String,
    #[serde(default)]
    data: Vec<OkxTicker>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct OkxTicker {
    pub(crate) inst_id: String,
    pub(crate) last: Option<Num>,
    pub(crate) ask_px: Option<Num>,
    pub(crate) bid_px: Option<Num>,
    #[serde(rename = "vol24h")]
    pub(crate) vol_24h: Option<Num>,
    pub(crate) ts: Option<Num>,
}

impl OkxTicker {
    pub(crate) fn raw(&self) -> RawQuote {
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
        "51001" => return Err(SourceError::UnknownSymbol(market.into())),
        "50011" => return Err(rate_limited(status, resp.msg)),
        code => return Err(venue_err(code, resp.msg)),
    }
    let t = resp
        .data
        .iter()
        .find(|t| t.inst_id == market)
        .ok_or_else(|| SourceError::UnknownSymbol(market.into()))?;
    Ok(t.raw())
}

// ---------------------------------------------------------------- Bybit v5

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

// ---------------------------------------------------------------- Bitstamp

#[derive(Deserialize)]
struct BitstampTicker {
    timestamp: Num,
    last: Num,
    bid: Num,
    ask: Num,
    volume: Option<Num>,
}

#[derive(Deserialize)]
struct BitstampError {
    status: Option<String>,
    reason: Option<serde_json::Value>,
    code: Option<String>,
}

fn parse_bitstamp(status: u16, body: &[u8], market: &str) -> Result<RawQuote, SourceError> {
    if status == 404 {
        return Err(SourceError::UnknownSymbol(market.into()));
    }
    match json_either::<BitstampTicker, BitstampError>(body)? {
        Ok(BitstampTicker {
            timestamp,
            last,
            bid,
            ask,
            volume,
        }) => Ok(RawQuote {
            bid: Some(bid.0),
            ask: Some(ask.0),
            last: Some(last.0),
            volume: n(&volume),
            venue_time_ms: timestamp
                .0
                .parse::<u64>()
                .ok()
                .map(|s| s.saturating_mul(1000)),
        }),
        Err(BitstampError {
            status: st,
            reason,
            code,
        }) => {
            let message = reason.map(|r| r.to_string()).or(st).unwrap_or_default();
            let code = code.unwrap_or_default();
            Err(
                if code.starts_with("API0001")
                    || message.to_ascii_lowercase().contains("rate limit")
                {
                    rate_limited(status, message)
                } else {
                    venue_err(code, message)
                },
            )
        }
    }
}

// ---------------------------------------------------------------- Gemini

#[derive(Deserialize)]
struct GeminiTicker {
    bid: Num,
    ask: Num,
    last: Num,
    volume: Option<serde_json::Map<String, serde_json::Value>>,
}

#[derive(Deserialize)]
struct GeminiError {
    reason: String,
    message: Option<String>,
}

fn parse_gemini(status: u16, body: &[u8], market: &str) -> Result<RawQuote, SourceError> {
    match json_either::<GeminiTicker, GeminiError>(body)? {
        Ok(GeminiTicker {
            bid,
            ask,
            last,
            volume,
        }) => {
            // volume: {"BTC": "2210.5", "USD": "2135477.4", "timestamp": 1483018200000}
            let base = Venue::Gemini
                .parse_market(market)
                .map(|(b, _)| b)
                .unwrap_or_default();
            let vol = volume.as_ref();
            let base_vol = vol
                .and_then(|m| m.get(&base))
                .and_then(|v| v.as_str())
                .map(str::to_string);
            let ts = vol
                .and_then(|m| m.get("timestamp"))
                .and_then(|v| v.as_u64());
            Ok(RawQuote {
                bid: Some(bid.0),
                ask: Some(ask.0),
                last: Some(last.0),
                volume: base_vol,
                venue_time_ms: ts,
            })
        }
        Err(GeminiError { reason, message }) => {
            let message = message.unwrap_or_else(|| reason.clone());
            Err(match reason.as_str() {
                "InvalidSymbol" => SourceError::UnknownSymbol(market.into()),
                "RateLimit" | "RateLimited" => rate_limited(status, message),
                _ => venue_err(reason, message),
            })
        }
    }
}

// ---------------------------------------------------------------- KuCoin

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
        "900001" => return Err(SourceError::UnknownSymbol(market.into())),
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

// ---------------------------------------------------------------- Bitfinex v2

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
        return Err(if msg.contains("symbol") {
            SourceError::UnknownSymbol(market.into())
        } else if code == "11010" || msg.contains("ratelimit") {
            rate_limited(status, msg)
        } else {
            venue_err(code, msg)
        });
    }
    if items.len() < 10 {
        return Err(SourceError::Malformed(format!(
            "ticker array has {} fields, expected 10",
            items.len()
        )));
    }
    let num = |i: usize| -> Result<String, SourceError> {
        serde_json::from_str::<Num>(items[i].get())
            .map(|x| x.0)
            .map_err(SourceError::malformed)
    };
    Ok(RawQuote {
        bid: Some(num(0)?),
        ask: Some(num(2)?),
        last: Some(num(6)?),
        volume: Some(num(7)?),
        venue_time_ms: None,
    })
}

// ---------------------------------------------------------------- Gate.io v4

#[derive(Deserialize)]
struct GateError {
    label: String,
    message: Option<String>,
}

#[derive(Deserialize)]
struct GateTicker {
    currency_pair: String,
    last: Option<Num>,
    lowest_ask: Option<Num>,
    highest_bid: Option<Num>,
    base_volume: Option<Num>,
}

fn parse_gateio(status: u16, body: &[u8], market: &str) -> Result<RawQuote, SourceError> {
    match json_either::<Vec<GateTicker>, GateError>(body)? {
        Ok(list) => {
            let t = list
                .into_iter()
                .find(|t| t.currency_pair == market)
                .ok_or_else(|| SourceError::UnknownSymbol(market.into()))?;
            Ok(RawQuote {
                bid: n(&t.highest_bid),
                ask: n(&t.lowest_ask),
                last: n(&t.last),
                volume: n(&t.base_volume),
                venue_time_ms: None,
            })
        }
        Err(GateError { label, message }) => Err(match label.as_str() {
            "INVALID_CURRENCY_PAIR" | "INVALID_CURRENCY" => {
                SourceError::UnknownSymbol(market.into())
            }
            "TOO_MANY_REQUESTS" => rate_limited(status, message.unwrap_or(label)),
            _ => venue_err(label, message.unwrap_or_default()),
        }),
    }
}

// ---------------------------------------------------------------- HTX (Huobi)

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
    close: Num,
    amount: Option<Num>,
    bid: Vec<Num>,
    ask: Vec<Num>,
}

fn parse_htx(status: u16, body: &[u8], market: &str) -> Result<RawQuote, SourceError> {
    let resp: HtxResp = json(body)?;
    if resp.status != "ok" {
        let code = resp.err_code.unwrap_or_default();
        let msg = resp.err_msg.unwrap_or_default();
        return Err(
            if msg.contains("invalid symbol") || code == "invalid-symbol" {
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
        bid: t.bid.first().map(|x| x.0.clone()),
        ask: t.ask.first().map(|x| x.0.clone()),
        last: Some(t.close.0),
        volume: n(&t.amount),
        venue_time_ms: resp.ts,
    })
}

// ---------------------------------------------------------------- Crypto.com Exchange v1

#[derive(Deserialize)]
struct CdcResp {
    code: i64,
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
    match resp.code {
        0 => {}
        10006 | 42901 => return Err(rate_limited(status, msg)),
        _ if msg.contains("INSTRUMENT") || msg.to_ascii_lowercase().contains("instrument") => {
            return Err(SourceError::UnknownSymbol(market.into()));
        }
        code => return Err(venue_err(code, msg)),
    }
    let t = resp
        .result
        .and_then(|r| r.data.into_iter().find(|t| t.i == market))
        .ok_or_else(|| SourceError::UnknownSymbol(market.into()))?;
    Ok(RawQuote {
        bid: n(&t.b),
        ask: n(&t.k),
        last: n(&t.a),
        volume: n(&t.v),
        venue_time_ms: t.t,
    })
}

// ---------------------------------------------------------------- Bitget v2

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn market_symbols_round_trip() {
        for v in Venue::ALL {
            for (b, q) in [
                ("BTC", "USD"),
                ("ETH", "USDT"),
                ("SOL", "USDC"),
                ("DOGE", "USD"),
            ] {
                let m = v.market(b, q);
                assert_eq!(
                    v.parse_market(&m),
                    Some((b.to_string(), q.to_string())),
                    "{v} {m}"
                );
                let path = v.ticker_path(&m);
                let (p, q) = path.split_once('?').unwrap_or((&path, ""));
                assert_eq!(
                    v.market_of_request(p, q).as_deref(),
                    Some(m.as_str()),
                    "{v} {path}"
                );
            }
            assert_eq!(Venue::from_name(v.name()), Some(v));
        }
        assert_eq!(Venue::Kraken.market("BTC", "USD"), "XBTUSD");
        assert_eq!(Venue::Bitfinex.market("BTC", "USDT"), "tBTCUST");
        assert_eq!(Venue::Bitfinex.market("DOGE", "USD"), "tDOGE:USD");
        assert_eq!(Venue::Gemini.market("ETH", "USD"), "ethusd");
    }

    #[test]
    fn num_keeps_literal_text() {
        let v: Vec<Num> =
            serde_json::from_str(r#"["1.10", 2.5000, 67012.123456789012345]"#).unwrap();
        assert_eq!(v[0].0, "1.10");
        assert_eq!(v[1].0, "2.5000");
        assert_eq!(v[2].0, "67012.123456789012345");
        assert!(serde_json::from_str::<Num>("true").is_err());
        assert!(serde_json::from_str::<Num>("{}").is_err());
    }
}
