//! One file per exchange: each venue's symbol mapping, REST ticker path and
//! parser (with its error and rate-limit bodies), published rate limit,
//! WebSocket stream (where we stream from it) and, with the `sim` feature,
//! the simulated exchange's rendering of the same formats. Every venue
//! implements [`VenueSpec`] (and [`StreamSpec`] for its stream); the
//! [`venues!`] registry below lists them. Adding a venue is one file here
//! plus one registry line.
//!
//! Adapters return [`RawQuote`]: the literal decimal text of bid, ask, last
//! and volume. Turning text into fixed-point numbers and checking sanity is
//! done once, in [`crate::quote`], for every venue alike.

use std::fmt;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::value::RawValue;

use crate::error::{SourceError, snippet};

/// The registry: `Variant => module`. The module (`venue/<module>.rs`)
/// defines `Spec`, the venue's [`VenueSpec`]; its name is the venue's name in
/// config, metrics labels and simulated-exchange paths. The order is the
/// order of [`Venue::ALL`] (the simulated market's per-venue offsets follow it).
macro_rules! venues {
    ($($variant:ident => $module:ident,)*) => {
        $(mod $module;)*

        /// Every supported venue.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(rename_all = "lowercase")]
        pub enum Venue {
            $($variant,)*
        }

        impl Venue {
            pub const ALL: [Venue; [$(stringify!($module)),*].len()] = [$(Venue::$variant),*];

            /// Lower-case name used in config, metrics labels and sim-exchange paths.
            pub fn name(self) -> &'static str {
                match self {
                    $(Venue::$variant => stringify!($module),)*
                }
            }

            /// The venue's formats and limits.
            pub(crate) fn spec(self) -> &'static dyn VenueSpec {
                match self {
                    $(Venue::$variant => &$module::Spec,)*
                }
            }
        }
    };
}

venues! {
    Binance => binance,
    Coinbase => coinbase,
    Kraken => kraken,
    Okx => okx,
    Bybit => bybit,
    Bitstamp => bitstamp,
    Gemini => gemini,
    Kucoin => kucoin,
    Bitfinex => bitfinex,
    Gateio => gateio,
    Htx => htx,
    Cryptocom => cryptocom,
    Mexc => mexc,
    Bitget => bitget,
}

/// Everything Sibyl knows about one venue's REST market data.
pub(crate) trait VenueSpec: Sync {
    /// Public REST base URL.
    fn base_url(&self) -> &'static str;
    /// Published public limit (per IP); we stay at or below it.
    fn rate_limit(&self) -> RateLimit;
    /// How the venue spells a market symbol. Kraken and Bitfinex, with asset
    /// codes of their own, override [`VenueSpec::market`] and
    /// [`VenueSpec::parse_market`] instead.
    fn symbol_style(&self) -> SymbolStyle {
        SymbolStyle::Joined
    }
    /// The venue's market symbol for `base`/`quote` (canonical upper-case asset codes).
    fn market(&self, base: &str, quote: &str) -> String {
        self.symbol_style().market(base, quote)
    }
    /// Inverse of [`VenueSpec::market`].
    fn parse_market(&self, market: &str) -> Option<(String, String)> {
        self.symbol_style().parse(market)
    }
    /// Where the single-market ticker endpoint is.
    fn ticker_route(&self) -> Route;
    /// Path and query of the single-market ticker endpoint, appended to the base URL.
    fn ticker_path(&self, market: &str) -> String {
        self.ticker_route().path(market)
    }
    /// Inverse of [`VenueSpec::ticker_path`]: the market a request asks for.
    fn market_of_request(&self, path: &str, query: &str) -> Option<String> {
        self.ticker_route().market(path, query)
    }
    /// Parse a ticker response (the venue's success and error bodies).
    fn parse_rest(&self, status: u16, body: &[u8], market: &str) -> Result<RawQuote, SourceError>;
    /// Where the venue says whether one market trades (its instrument or
    /// product endpoint); `None`: no per-market status is read from this
    /// venue.
    fn status_route(&self) -> Option<Route> {
        None
    }
    /// Parse a successful status answer into the market's state; a value
    /// the venue does not document is an error, not a guess.
    fn parse_status(&self, _body: &[u8], market: &str) -> Result<MarketState, SourceError> {
        Err(SourceError::Malformed(format!(
            "no market status endpoint is read for {market}"
        )))
    }
    /// Body of a successful status answer saying `state`.
    #[cfg(feature = "sim")]
    fn render_status(&self, _market: &str, _state: MarketState) -> String {
        String::new()
    }
    /// The venue's WebSocket stream, for the venues we stream from.
    fn stream(&self) -> Option<&'static dyn StreamSpec> {
        None
    }
    /// Body of a successful ticker answer (HTTP 200).
    #[cfg(feature = "sim")]
    fn render_ticker(&self, market: &str, t: &Tick) -> String;
    /// (HTTP status, body) the venue answers for a market it does not list.
    #[cfg(feature = "sim")]
    fn render_unknown_symbol(&self, market: &str) -> (u16, String);
    /// Body of the venue's rate-limit answer (HTTP 429).
    #[cfg(feature = "sim")]
    fn render_rate_limited(&self) -> serde_json::Value;
}

/// What a venue's instrument endpoint says about trading in one market.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MarketState {
    /// Trading (limit-only or reduce-only included: prices still form).
    Open,
    /// Trading stopped: halted, suspended, cancel-only or post-only (no
    /// order matches, so the book and last trade are frozen).
    Halted,
    /// Outside trading hours or not open yet (pre-open, pre-listing).
    Closed,
}

impl MarketState {
    /// The state's name, as in JSON and metrics labels.
    pub fn name(self) -> &'static str {
        match self {
            MarketState::Open => "open",
            MarketState::Halted => "halted",
            MarketState::Closed => "closed",
        }
    }
}

/// An undocumented status value, as an error naming it.
fn unknown_state(field: &str, value: &str) -> SourceError {
    SourceError::Malformed(format!(
        "{field} {value:?} is not a documented market status"
    ))
}

/// The value at JSON pointer `at` of a status body, mapped by `state`
/// (`None`: undocumented). `field` names it in errors.
fn state_at(
    body: &[u8],
    at: &str,
    field: &str,
    state: impl Fn(&serde_json::Value) -> Option<MarketState>,
) -> Result<MarketState, SourceError> {
    let v: serde_json::Value = json(body)?;
    let value = v
        .pointer(at)
        .ok_or_else(|| SourceError::Malformed(format!("no {field} in the status answer")))?;
    state(value).ok_or_else(|| unknown_state(field, &value.to_string()))
}

/// How a venue spells the market `base`/`quote` (canonical upper-case codes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SymbolStyle {
    /// `BTCUSDT`
    Joined,
    /// `btcusdt`
    JoinedLower,
    /// `BTC-USDT` or `BTC_USDT`
    Separated(char),
}

impl SymbolStyle {
    fn market(self, base: &str, quote: &str) -> String {
        let (b, q) = (base.to_ascii_uppercase(), quote.to_ascii_uppercase());
        match self {
            SymbolStyle::Joined => format!("{b}{q}"),
            SymbolStyle::JoinedLower => format!("{b}{q}").to_ascii_lowercase(),
            SymbolStyle::Separated(sep) => format!("{b}{sep}{q}"),
        }
    }

    fn parse(self, market: &str) -> Option<(String, String)> {
        match self {
            SymbolStyle::Joined | SymbolStyle::JoinedLower => {
                split_by_quote(&market.to_ascii_uppercase())
            }
            SymbolStyle::Separated(sep) => {
                let (b, q) = market.split_once(sep)?;
                Some((b.to_ascii_uppercase(), q.to_ascii_uppercase()))
            }
        }
    }
}

/// Where a venue serves one market's ticker, relative to its base URL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Route {
    /// `{path}?{fixed}&{param}={market}`; `fixed` (other parameters) may be empty.
    Query {
        path: &'static str,
        fixed: &'static str,
        param: &'static str,
    },
    /// `{prefix}{market}{suffix}`: the market is a path segment.
    Segment {
        prefix: &'static str,
        suffix: &'static str,
    },
}

impl Route {
    /// `{path}?{param}={market}`.
    const fn query(path: &'static str, param: &'static str) -> Route {
        Route::Query {
            path,
            fixed: "",
            param,
        }
    }

    fn path(self, market: &str) -> String {
        match self {
            Route::Query {
                path,
                fixed: "",
                param,
            } => format!("{path}?{param}={market}"),
            Route::Query { path, fixed, param } => format!("{path}?{fixed}&{param}={market}"),
            Route::Segment { prefix, suffix } => format!("{prefix}{market}{suffix}"),
        }
    }

    /// The market a request (path after the base URL, raw query) asks for.
    fn market(self, path: &str, query: &str) -> Option<String> {
        match self {
            Route::Query { path: p, param, .. } => {
                if path == p {
                    query_param(query, param)
                } else {
                    None
                }
            }
            Route::Segment { prefix, suffix } => {
                let rest = path.strip_prefix(prefix)?;
                // A trailing slash in the route is optional in a request.
                let segment = match suffix.strip_suffix('/') {
                    Some(s) => rest.trim_end_matches('/').strip_suffix(s)?,
                    None => rest.strip_suffix(suffix)?,
                };
                // Bitfinex's `tDOGE:USD` may arrive percent-encoded. A
                // market is one path segment.
                Some(segment.replace("%3A", ":")).filter(|m| !m.is_empty() && !m.contains('/'))
            }
        }
    }
}

/// The ticker in a list answer that is `market`'s (`symbol` names an
/// entry's market); a list without it means the venue does not list it.
fn listed<T>(
    list: impl IntoIterator<Item = T>,
    market: &str,
    symbol: impl Fn(&T) -> &str,
) -> Result<T, SourceError> {
    list.into_iter()
        .find(|t| symbol(t) == market)
        .ok_or_else(|| SourceError::UnknownSymbol(market.into()))
}

/// One venue's view of one market at one instant, as the simulated
/// exchange renders it (decimal text, like a venue's own bodies).
#[cfg(feature = "sim")]
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Tick {
    pub bid: String,
    pub ask: String,
    pub last: String,
    pub volume: String,
    pub time_ms: u64,
}

/// The client's keepalive on a venue's stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ping {
    /// An application-level text message.
    Text(&'static str),
    /// A WebSocket ping frame.
    Frame,
}

/// One venue's WebSocket stream: how to subscribe, keep it alive and read it,
/// and (with `sim`) how the simulated exchange speaks it.
pub(crate) trait StreamSpec: Sync {
    /// Public WebSocket URL.
    fn url(&self) -> &'static str;
    /// The stream's own symbol for a REST market symbol.
    fn symbol(&self, market: &str) -> String {
        market.to_string()
    }
    /// The URL to connect to for these stream symbols.
    fn connect_url(&self, url: &str, _symbols: &[&String]) -> String {
        url.to_string()
    }
    /// Messages to send after connecting.
    fn subscribe(&self, symbols: &[&String]) -> Vec<String>;
    /// Application-level keepalive the venue expects from clients.
    fn ping(&self) -> Ping {
        Ping::Frame
    }
    /// Parse one stream message into (stream symbol, quote) ticks. Control
    /// messages (subscription acks, heartbeats, pongs, status) give no ticks.
    fn parse(&self, text: &str) -> Result<Vec<(String, RawQuote)>, SourceError>;
    /// Market states in one message of the venue's status channel, by
    /// stream symbol (a state the venue does not document is an error for
    /// that symbol); any other message gives none. Venues whose stream
    /// carries no status give none.
    fn parse_states(&self, _text: &str) -> Vec<(String, Result<MarketState, SourceError>)> {
        Vec::new()
    }
    /// A status-channel message saying `state` for these stream symbols.
    #[cfg(feature = "sim")]
    fn render_states(&self, _symbols: &[String], _state: MarketState) -> Option<String> {
        None
    }
    /// Whether a client message subscribes the status channel.
    #[cfg(feature = "sim")]
    fn subscribes_states(&self, _text: &str) -> bool {
        false
    }
    /// One ticker message. `symbol` is the stream's own symbol.
    #[cfg(feature = "sim")]
    fn render_ticker(&self, symbol: &str, market: &str, t: &Tick, seq: u64) -> String;
    /// Stream symbol -> the venue's REST market.
    #[cfg(feature = "sim")]
    fn market_of_symbol(&self, symbol: &str) -> String {
        symbol.to_string()
    }
    /// Symbols subscribed by the connect URL's query (Binance's combined streams).
    #[cfg(feature = "sim")]
    fn symbols_in_query(&self, _query: &str) -> Vec<String> {
        Vec::new()
    }
    /// The venue's periodic heartbeat message, if it sends one.
    #[cfg(feature = "sim")]
    fn heartbeat(&self, _symbols: &[String], _seq: u64, _now_ms: u64) -> Option<String> {
        None
    }
    /// Answers to a client message (subscriptions, pings), adding subscribed symbols.
    #[cfg(feature = "sim")]
    fn answer(&self, text: &str, symbols: &mut Vec<String>) -> Vec<String>;
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
    pub fn from_name(name: &str) -> Option<Venue> {
        Venue::ALL.into_iter().find(|v| v.name() == name)
    }

    /// Public REST base URL of the venue.
    pub fn default_base_url(self) -> &'static str {
        self.spec().base_url()
    }

    /// Public WebSocket URL, for the venues we stream from.
    pub fn default_ws_url(self) -> Option<&'static str> {
        self.spec().stream().map(|s| s.url())
    }

    /// Published public limits (per IP), from each venue's REST docs (see
    /// the venue's file). We stay at or below each.
    pub fn published_rate_limit(self) -> RateLimit {
        self.spec().rate_limit()
    }

    /// The venue's market symbol for `base`/`quote` (canonical upper-case asset codes).
    pub fn market(self, base: &str, quote: &str) -> String {
        self.spec().market(base, quote)
    }

    /// Inverse of [`Venue::market`] (used by the simulated exchange).
    pub fn parse_market(self, market: &str) -> Option<(String, String)> {
        self.spec().parse_market(market)
    }

    /// Path and query of the venue's single-market ticker endpoint, appended to the base URL.
    pub fn ticker_path(self, market: &str) -> String {
        self.spec().ticker_path(market)
    }

    /// Which market a ticker request asks for (inverse of [`Venue::ticker_path`]),
    /// given the path after the base URL and the raw query string.
    pub fn market_of_request(self, path: &str, query: &str) -> Option<String> {
        self.spec().market_of_request(path, query)
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
        match self.spec().parse_rest(status, body, market) {
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

impl Venue {
    /// Whether the venue publishes a per-market trading status we read.
    pub fn publishes_status(self) -> bool {
        self.spec().status_route().is_some()
    }

    /// Path and query of the venue's status endpoint for `market`, if it has one.
    pub fn status_path(self, market: &str) -> Option<String> {
        self.spec().status_route().map(|r| r.path(market))
    }

    /// Which market a status request asks for (inverse of [`Venue::status_path`]).
    pub fn market_of_status_request(self, path: &str, query: &str) -> Option<String> {
        self.spec().status_route()?.market(path, query)
    }

    /// Parse a status response; error bodies become the same typed errors
    /// as the venue's ticker errors (unknown symbol, rate limited, venue error).
    pub fn parse_market_status(
        self,
        status: u16,
        body: &[u8],
        market: &str,
    ) -> Result<MarketState, SourceError> {
        if status == 429 || status == 418 {
            return Err(SourceError::RateLimited {
                status,
                message: snippet(&String::from_utf8_lossy(body)),
            });
        }
        let parsed = if (200..300).contains(&status) {
            self.spec().parse_status(body, market)
        } else {
            Err(SourceError::Malformed(String::new()))
        };
        match parsed {
            Ok(state) => Ok(state),
            // The venue's own error words, read as its ticker errors are.
            Err(e) => match self.parse_ticker(status, body, market) {
                Err(SourceError::Malformed(_)) | Ok(_) if (200..300).contains(&status) => Err(e),
                Err(venue) => Err(venue),
                Ok(_) => Err(SourceError::HttpStatus {
                    status,
                    body: snippet(&String::from_utf8_lossy(body)),
                }),
            },
        }
    }

    /// Body of a successful status answer (the simulated exchange).
    #[cfg(feature = "sim")]
    pub fn render_status(self, market: &str, state: MarketState) -> Option<String> {
        self.spec()
            .status_route()
            .map(|_| self.spec().render_status(market, state))
    }
}

impl fmt::Display for Venue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

const QUOTES: [&str; 7] = ["USDT", "USDC", "USD", "EUR", "BTC", "UST", "ZUSD"];

pub(crate) fn split_by_quote(s: &str) -> Option<(String, String)> {
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

/// The value of query parameter `name` in a raw query string.
fn query_param(query: &str, name: &str) -> Option<String> {
    query.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == name).then(|| v.to_string())
    })
}

/// The strings of a JSON array (a subscription's symbols).
#[cfg(feature = "sim")]
fn json_strings(v: Option<&serde_json::Value>) -> Vec<String> {
    v.and_then(|a| a.as_array())
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// Adds newly subscribed symbols, keeping the order of first subscription.
#[cfg(feature = "sim")]
fn add_symbols(symbols: &mut Vec<String>, list: Vec<String>) {
    for s in list {
        if !symbols.contains(&s) {
            symbols.push(s);
        }
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

/// Like [`json_either`], for a success shape whose fields are all optional
/// (an error body would parse as an empty ticker): the error shape, which
/// has a required field, is tried first.
fn json_error_first<T: DeserializeOwned, E: DeserializeOwned>(
    body: &[u8],
) -> Result<Result<T, E>, SourceError> {
    match serde_json::from_slice::<E>(body) {
        Ok(e) => Ok(Err(e)),
        Err(_) => json(body).map(Ok),
    }
}

/// Whether a venue's error message says the market does not exist, in the
/// words the venues document for an unknown or invalid symbol, pair,
/// instrument or product. Each venue checks its exact codes first; this
/// catches the codes it shares one message among (OKX's 51000, Bybit's
/// 10001, Crypto.com's 40004) and message-only errors.
fn says_unknown_symbol(message: &str) -> bool {
    const PHRASES: [&str; 22] = [
        "invalid symbol",
        "bad symbol",
        "unknown symbol",
        "symbol not exist",
        "symbol does not exist",
        "symbol not found",
        "symbol_not_found",
        "symbol is invalid",
        "symbol: invalid",
        "not supported symbol",
        "not a valid symbol",
        "unknown asset pair",
        "invalid asset pair",
        "invalid currency pair",
        "unknown currency pair",
        "currency pair not supported",
        "instrument id does not exist",
        "invalid instrument",
        "instrument not found",
        "not a valid product",
        "product not found",
        "invalid product",
    ];
    let m = message.to_ascii_lowercase();
    PHRASES.iter().any(|p| m.contains(p))
        || (m.contains("instid") && (m.contains("doesn't exist") || m.contains("error")))
}

/// A venue's error code as text, whether it sent a JSON number or a string.
fn code_text(code: &serde_json::Value) -> String {
    match code {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
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

#[cfg(test)]
#[allow(clippy::inconsistent_digit_grouping)] // prices written as units_cents
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
    fn ticker_routes_spell_each_venue_path() {
        assert_eq!(
            Venue::Bybit.ticker_path("BTCUSDT"),
            "/v5/market/tickers?category=spot&symbol=BTCUSDT"
        );
        assert_eq!(
            Venue::Okx.ticker_path("BTC-USDT"),
            "/api/v5/market/ticker?instId=BTC-USDT"
        );
        assert_eq!(
            Venue::Coinbase.ticker_path("BTC-USD"),
            "/products/BTC-USD/ticker"
        );
        assert_eq!(
            Venue::Bitstamp.ticker_path("btcusd"),
            "/api/v2/ticker/btcusd/"
        );
        // A route's trailing slash is optional in a request; others are not.
        let of = |v: Venue, path: &str, query: &str| v.market_of_request(path, query);
        assert_eq!(
            of(Venue::Bitstamp, "/api/v2/ticker/btcusd", "").as_deref(),
            Some("btcusd")
        );
        assert_eq!(of(Venue::Coinbase, "/products/BTC-USD", ""), None);
        assert_eq!(
            of(Venue::Okx, "/api/v5/market/tickers", "instId=BTC-USDT"),
            None
        );
        assert_eq!(
            of(Venue::Okx, "/api/v5/market/ticker", "symbol=BTC-USDT"),
            None
        );
        assert_eq!(
            of(Venue::Bitfinex, "/v2/ticker/tDOGE%3AUSD", "").as_deref(),
            Some("tDOGE:USD")
        );
    }

    /// Every venue's ticker with one side of the book at zero still gives
    /// a price (the last trade, on the right side of the other one); with
    /// no book at all only a dated last trade does.
    #[cfg(feature = "sim")]
    #[test]
    fn every_venue_falls_back_when_a_book_side_is_zero() {
        use crate::quote::{Quote, SanityLimits};
        let now = 1_700_000_123_456;
        let tick = |bid: &str, ask: &str| Tick {
            bid: bid.into(),
            ask: ask.into(),
            last: "67012.20".into(),
            volume: "1234.5".into(),
            time_ms: now,
        };
        for v in Venue::ALL {
            let m = v.market("BTC", "USDT");
            let check = |t: &Tick| -> Result<(Quote, RawQuote), String> {
                let body = v.spec().render_ticker(&m, t);
                let raw = v
                    .parse_ticker(200, body.as_bytes(), &m)
                    .map_err(|e| e.to_string())?;
                let q = Quote::check(&raw, 2, now, &SanityLimits::default())
                    .map_err(|e| e.to_string())?;
                Ok((q, raw))
            };
            let (q, _) = check(&tick("0", "67012.30")).unwrap_or_else(|e| panic!("{v}: {e}"));
            assert_eq!(
                (q.price, q.bid, q.ask),
                (67012_20, None, Some(67012_30)),
                "{v}"
            );
            let (q, _) = check(&tick("67012.10", "0")).unwrap_or_else(|e| panic!("{v}: {e}"));
            assert_eq!(
                (q.price, q.bid, q.ask),
                (67012_20, Some(67012_10), None),
                "{v}"
            );
            let dated = check(&tick("67012.10", "67012.30"))
                .unwrap_or_else(|e| panic!("{v}: {e}"))
                .1
                .venue_time_ms
                .is_some();
            match check(&tick("0", "0")) {
                Ok((q, _)) if dated => assert_eq!((q.price, q.bid, q.ask), (67012_20, None, None)),
                Err(e) if !dated => assert_eq!(e, "price is zero", "{v}"),
                other => panic!("{v} (dated: {dated}): {other:?}"),
            }
        }
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

    /// Every venue that publishes a market status parses what the simulated
    /// exchange renders for each state (Kraken and Gate.io have no closed
    /// state: their closest word is a halt), answers the request the
    /// status path makes, and refuses a value its documentation lacks.
    #[cfg(feature = "sim")]
    #[test]
    fn market_status_round_trips_and_refuses_undocumented_values() {
        let mut publishing = 0;
        for v in Venue::ALL {
            let m = v.market("BTC", "USDT");
            let Some(path) = v.status_path(&m) else {
                assert_eq!(v.render_status(&m, MarketState::Open), None);
                continue;
            };
            publishing += 1;
            let (p, q) = path.split_once('?').unwrap_or((&path, ""));
            assert_eq!(
                v.market_of_status_request(p, q).as_deref(),
                Some(m.as_str()),
                "{v}"
            );
            // The ticker path is not a status request (and vice versa).
            let t = v.ticker_path(&m);
            let (tp, tq) = t.split_once('?').unwrap_or((&t, ""));
            assert_eq!(v.market_of_status_request(tp, tq), None, "{v} {t}");
            for state in [MarketState::Open, MarketState::Halted, MarketState::Closed] {
                let body = v.render_status(&m, state).expect("a status body");
                let got = v.parse_market_status(200, body.as_bytes(), &m);
                let lossy = state == MarketState::Closed && got == Ok(MarketState::Halted);
                assert!(
                    got == Ok(state) || lossy,
                    "{v} {state:?}: {got:?} from {body}"
                );
            }
            let odd = v
                .render_status(&m, MarketState::Open)
                .expect("a status body")
                .replace("TRADING", "MOON")
                .replace("\"online\"", "\"moon\"")
                .replace("\"live\"", "\"moon\"")
                .replace("\"Trading\"", "\"moon\"")
                .replace("\"open\"", "\"moon\"")
                .replace("\"tradable\"", "\"moon\"")
                .replace("true", "\"moon\"");
            match v.parse_market_status(200, odd.as_bytes(), &m) {
                Err(SourceError::Malformed(msg)) => {
                    assert!(msg.to_lowercase().contains("moon"), "{v}: {msg}")
                }
                other => panic!("{v}: an undocumented status gave {other:?} from {odd}"),
            }
            let (status, unknown) = v.spec().render_unknown_symbol(&m);
            assert!(
                matches!(
                    v.parse_market_status(status, unknown.as_bytes(), &m),
                    Err(SourceError::UnknownSymbol(_))
                ),
                "{v}: {unknown}"
            );
        }
        assert_eq!(publishing, 9);
    }

    /// Status answers in the shapes the venues document (trimmed copies of
    /// their published examples).
    #[test]
    fn documented_status_answers_parse() {
        let cases: [(Venue, &str, &str, MarketState); 6] = [
            (
                Venue::Binance,
                "BTCUSDT",
                r#"{"timezone":"UTC","serverTime":1565246363776,"rateLimits":[],"exchangeFilters":[],"symbols":[{"symbol":"ETHBTC","status":"BREAK","baseAsset":"ETH"}]}"#,
                MarketState::Halted,
            ),
            (
                Venue::Coinbase,
                "BTC-USD",
                r#"{"id":"BTC-USD","base_currency":"BTC","quote_currency":"USD","quote_increment":"0.01","display_name":"BTC/USD","status":"online","margin_enabled":false,"status_message":"","cancel_only":true,"limit_only":false,"post_only":false,"trading_disabled":false,"auction_mode":false}"#,
                MarketState::Halted,
            ),
            (
                Venue::Kraken,
                "XBTUSD",
                r#"{"error":[],"result":{"XXBTZUSD":{"altname":"XBTUSD","wsname":"XBT/USD","aclass_base":"currency","base":"XXBT","quote":"ZUSD","status":"online"}}}"#,
                MarketState::Open,
            ),
            (
                Venue::Okx,
                "BTC-USDT",
                r#"{"code":"0","msg":"","data":[{"instType":"SPOT","instId":"BTC-USDT","baseCcy":"BTC","quoteCcy":"USDT","state":"preopen"}]}"#,
                MarketState::Closed,
            ),
            (
                Venue::Gemini,
                "btcusd",
                r#"{"symbol":"BTCUSD","base_currency":"BTC","quote_currency":"USD","tick_size":1E-8,"quote_increment":0.01,"min_order_size":"0.00001","status":"closed","wrap_enabled":false}"#,
                MarketState::Closed,
            ),
            (
                Venue::Kucoin,
                "BTC-USDT",
                r#"{"code":"200000","data":{"symbol":"BTC-USDT","name":"BTC-USDT","baseCurrency":"BTC","quoteCurrency":"USDT","enableTrading":false}}"#,
                MarketState::Halted,
            ),
        ];
        for (v, m, body, want) in cases {
            assert_eq!(
                v.parse_market_status(200, body.as_bytes(), m),
                Ok(want),
                "{v}"
            );
        }
        assert!(matches!(
            Venue::Binance.parse_market_status(429, b"{}", "BTCUSDT"),
            Err(SourceError::RateLimited { .. })
        ));
    }
}
