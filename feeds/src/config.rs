//! The `[sources]` section of a node's config: venues, feeds, and the
//! health and observation parameters. TOML, `deny_unknown_fields`,
//! durations in the node's one grammar ("500ms", "2s", "1m30s").
//!
//! The node config deserializes this section as a typed part of node.toml
//! (never re-encoded and parsed again), so a type error carries its line;
//! [`SourcesConfig::problems`] names the key of every semantic mistake and
//! [`locate`] turns that key into a place in the file.
//!
//! Feed decimals are not stated here: the committee file declares them once
//! and the node hands them over with [`SourcesConfig::with_decimals`]. A feed
//! the committee does not list (a conversion feed such as `USDT-USD`) is
//! observed at [`SOURCES_ONLY_DECIMALS`].

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::ops::Range;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::aggregate::DEFAULT_MAX_VENUE_WEIGHT_BPS;
use crate::duration::parse_duration;
use crate::error::ConfigError;
use crate::quote::SanityLimits;
use crate::venue::Venue;

/// A duration written as a string, in the node's one duration grammar
/// ([`crate::duration::parse_duration`]): `"250ms"`, `"2s"`, `"1m30s"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Dur(pub Duration);

impl Dur {
    pub const fn ms(ms: u64) -> Dur {
        Dur(Duration::from_millis(ms))
    }
    pub fn as_ms(self) -> u64 {
        u64::try_from(self.0.as_millis()).unwrap_or(u64::MAX)
    }
}

impl std::str::FromStr for Dur {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        parse_duration(s).map(Dur)
    }
}

impl fmt::Display for Dur {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.as_ms();
        if ms.is_multiple_of(1000) && ms > 0 {
            write!(f, "{}s", ms / 1000)
        } else {
            write!(f, "{ms}ms")
        }
    }
}

impl Serialize for Dur {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// The whole sources section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SourcesConfig {
    /// How often each venue's REST poller refreshes every market.
    pub poll_interval: Dur,
    /// Per-request timeout.
    pub request_timeout: Dur,
    /// Retries of a failed request (timeouts, 5xx, connection errors) within one poll.
    pub max_retries: u32,
    /// Quotes older than this are not used (and venue timestamps older than this are rejected).
    pub max_quote_age: Dur,
    /// Allowance for venue clocks ahead of ours.
    pub max_clock_skew: Dur,
    /// Quotes further than this from the cross-source median are left out.
    pub max_deviation_bps: u32,
    /// Most of a feed's total weight one venue may carry (basis points; 4000 =
    /// 40 %, so one venue never decides the weighted median alone).
    pub max_venue_weight_bps: u32,
    /// A stablecoin feed (see `stablecoins`) further than this from 1.0 is
    /// off its peg: feeds converted through it say `peg_departed`.
    pub max_peg_deviation_bps: u32,
    /// Stablecoins and the currency each is pegged 1:1 to (`USDT = "USD"`).
    /// A conversion feed `S-Q` with `stablecoins[S] == Q` is a stablecoin leg.
    pub stablecoins: BTreeMap<String, String>,
    /// Prices above this many whole units are rejected as absurd.
    pub max_price_units: u64,
    /// Consecutive failures that open a source's circuit breaker.
    pub breaker_failures: u32,
    /// How long an open breaker waits before letting one trial request through.
    pub breaker_cooldown: Dur,
    /// A WebSocket with no message for this long is considered dead and reconnected.
    pub ws_stale_after: Dur,
    /// How often each market's trading status is read from the venues that
    /// publish one (docs/SOURCES.md, "Market status"); "0s" turns it off.
    pub market_status_interval: Dur,
    pub venues: BTreeMap<Venue, VenueConfig>,
    pub feeds: Vec<FeedConfig>,
    /// Decimals per feed id, from the committee file (never read from this
    /// section); see [`SourcesConfig::with_decimals`].
    #[serde(skip)]
    pub decimals: BTreeMap<String, u32>,
}

/// The USD stablecoins known without configuration.
pub fn default_stablecoins() -> BTreeMap<String, String> {
    ["USDT", "USDC", "DAI", "FDUSD", "PYUSD", "TUSD", "USDE"]
        .into_iter()
        .map(|s| (s.to_string(), "USD".to_string()))
        .collect()
}

/// Decimals of a feed the committee file does not list (a feed observed only
/// to convert others, e.g. `USDT-USD`).
pub const SOURCES_ONLY_DECIMALS: u32 = 8;

/// Most decimals the sources observe a feed at (prices are `i128` and the
/// sanity bound `max_price_units` must fit).
pub const MAX_SOURCE_DECIMALS: u32 = 18;

impl Default for SourcesConfig {
    fn default() -> Self {
        SourcesConfig {
            poll_interval: Dur::ms(2_000),
            request_timeout: Dur::ms(2_000),
            max_retries: 2,
            max_quote_age: Dur::ms(30_000),
            max_clock_skew: Dur::ms(5_000),
            max_deviation_bps: 100,
            max_venue_weight_bps: DEFAULT_MAX_VENUE_WEIGHT_BPS,
            max_peg_deviation_bps: 50,
            stablecoins: default_stablecoins(),
            max_price_units: 1_000_000_000_000,
            breaker_failures: 5,
            breaker_cooldown: Dur::ms(30_000),
            ws_stale_after: Dur::ms(30_000),
            market_status_interval: Dur::ms(30_000),
            venues: BTreeMap::new(),
            feeds: Vec::new(),
            decimals: BTreeMap::new(),
        }
    }
}

/// Per-venue settings. A venue absent from `[venues]` uses these defaults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct VenueConfig {
    pub enabled: bool,
    /// Override of the REST base URL (e.g. a simulated exchange).
    pub base_url: Option<String>,
    /// Stream over WebSocket (Binance, Coinbase, Kraken, OKX); REST stays as fallback.
    /// Default: on where the venue has a stream.
    pub ws: Option<bool>,
    pub ws_url: Option<String>,
    /// Override of the published request rate (requests per second).
    pub rate_limit_per_sec: Option<u32>,
}

impl Default for VenueConfig {
    fn default() -> Self {
        VenueConfig {
            enabled: true,
            base_url: None,
            ws: None,
            ws_url: None,
            rate_limit_per_sec: None,
        }
    }
}

/// One feed and where it comes from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeedConfig {
    /// Canonical id "BASE-QUOTE", e.g. "BTC-USD".
    pub id: String,
    /// Refused when present: feed decimals live in the committee file. Read
    /// only so that the mistake gets a message saying so.
    #[serde(default, skip_serializing)]
    pub decimals: Option<toml::Value>,
    #[serde(default = "default_min_sources")]
    pub min_sources: usize,
    /// Overrides the section-wide `max_deviation_bps` for this feed.
    #[serde(default)]
    pub max_deviation_bps: Option<u32>,
    /// Overrides the section-wide `max_venue_weight_bps` for this feed.
    #[serde(default)]
    pub max_venue_weight_bps: Option<u32>,
    pub sources: Vec<SourceConfig>,
}

fn default_min_sources() -> usize {
    3
}

/// One venue market feeding a feed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    pub venue: Venue,
    /// Quote asset of the venue's market when it differs from the feed's (e.g. "USDT"):
    /// the price is converted with the feed "<quote>-<feed quote>", which must be configured.
    #[serde(default)]
    pub quote: Option<String>,
    /// Explicit venue symbol, when the derived one is wrong.
    #[serde(default)]
    pub symbol: Option<String>,
}

/// A source resolved against its feed: venue, market symbol, conversion.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct ResolvedSource {
    pub feed: String,
    pub venue: Venue,
    pub market: String,
    /// Feed id to multiply by when the market's quote differs from the feed's.
    pub convert_via: Option<String>,
}

impl ResolvedSource {
    /// Label used in metrics and observations: "binance:BTCUSDT".
    pub fn label(&self) -> String {
        format!("{}:{}", self.venue, self.market)
    }
}

pub fn split_feed_id(id: &str) -> Option<(&str, &str)> {
    let (b, q) = id.split_once('-')?;
    let ok = |s: &str| {
        !s.is_empty()
            && s.len() <= 12
            && s.bytes()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit())
    };
    (ok(b) && ok(q)).then_some((b, q))
}

/// A semantic mistake in the sources section, at `key` (relative to the
/// section, e.g. `feeds[1].min_sources`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub key: String,
    pub message: String,
    /// What to do about it.
    pub hint: String,
}

impl Problem {
    fn new(key: impl Into<String>, message: impl Into<String>, hint: impl Into<String>) -> Self {
        Problem {
            key: key.into(),
            message: message.into(),
            hint: hint.into(),
        }
    }
}

/// Byte span of `key` (dotted, with `[i]` for array elements, e.g.
/// `sources.feeds[1].sources[0].venue`) in the TOML text `src`. A key that is
/// not written (a default) gets the span of its closest written parent.
pub fn locate(src: &str, key: &str) -> Option<Range<usize>> {
    use toml_edit::{Item, Value};
    enum At<'a> {
        Item(&'a Item),
        Value(&'a Value),
        Table(&'a toml_edit::Table),
    }
    fn span(at: &At<'_>) -> Option<Range<usize>> {
        match at {
            At::Item(i) => i.span(),
            At::Value(v) => v.span(),
            At::Table(t) => t.span(),
        }
    }
    fn child<'a>(at: &At<'a>, name: &str) -> Option<At<'a>> {
        let table = match at {
            At::Table(t) => Some(*t),
            At::Item(Item::Table(t)) => Some(t),
            _ => None,
        };
        if let Some(t) = table {
            return t.get(name).map(At::Item);
        }
        let inline = match at {
            At::Item(Item::Value(Value::InlineTable(t))) | At::Value(Value::InlineTable(t)) => t,
            _ => return None,
        };
        inline.get(name).map(At::Value)
    }
    fn index<'a>(at: &At<'a>, i: usize) -> Option<At<'a>> {
        match at {
            At::Item(Item::ArrayOfTables(a)) => a.get(i).map(At::Table),
            At::Item(Item::Value(Value::Array(a))) | At::Value(Value::Array(a)) => {
                a.get(i).map(At::Value)
            }
            _ => None,
        }
    }
    let doc = toml_edit::ImDocument::parse(src).ok()?;
    let mut at = At::Table(doc.as_table());
    let mut best = None;
    for part in key.split('.') {
        let mut pieces = part.split('[');
        let name = pieces.next().unwrap_or_default();
        let Some(next) = child(&at, name) else {
            return best;
        };
        at = next;
        best = span(&at).or(best);
        for idx in pieces {
            let Some(next) = idx
                .trim_end_matches(']')
                .parse()
                .ok()
                .and_then(|i| index(&at, i))
            else {
                return best;
            };
            at = next;
            best = span(&at).or(best);
        }
    }
    best
}

/// The dotted key (as [`locate`] takes it, e.g. `sources.feeds[0].min_sources`)
/// of the deepest key or value at byte `offset` of `src`: names the key of a
/// TOML error, which carries only a span.
pub fn key_at(src: &str, offset: usize) -> Option<String> {
    use toml_edit::{Item, Table, Value};
    fn hit(span: Option<Range<usize>>, o: usize) -> bool {
        span.is_some_and(|s| s.start <= o && o < s.end.max(s.start + 1))
    }
    fn join(path: &str, k: &str) -> String {
        if path.is_empty() {
            k.to_string()
        } else {
            format!("{path}.{k}")
        }
    }
    fn in_table(t: &Table, o: usize, path: &str) -> Option<String> {
        t.iter().find_map(|(k, item)| {
            let p = join(path, k);
            in_item(item, o, &p).or_else(|| {
                (hit(t.key(k).and_then(|k| k.span()), o) || hit(item.span(), o)).then_some(p)
            })
        })
    }
    fn in_item(item: &Item, o: usize, path: &str) -> Option<String> {
        match item {
            Item::Table(t) => in_table(t, o, path),
            Item::ArrayOfTables(a) => a.iter().enumerate().find_map(|(i, t)| {
                let p = format!("{path}[{i}]");
                in_table(t, o, &p).or_else(|| hit(t.span(), o).then_some(p))
            }),
            Item::Value(v) => in_value(v, o, path),
            Item::None => None,
        }
    }
    fn in_value(v: &Value, o: usize, path: &str) -> Option<String> {
        match v {
            Value::Array(a) => a.iter().enumerate().find_map(|(i, v)| {
                let p = format!("{path}[{i}]");
                in_value(v, o, &p).or_else(|| hit(v.span(), o).then_some(p))
            }),
            Value::InlineTable(t) => t.iter().find_map(|(k, v)| {
                let p = join(path, k);
                in_value(v, o, &p).or_else(|| {
                    (hit(t.key(k).and_then(|k| k.span()), o) || hit(v.span(), o)).then_some(p)
                })
            }),
            _ => None,
        }
    }
    let doc = toml_edit::ImDocument::parse(src).ok()?;
    in_table(doc.as_table(), offset, "")
}

/// 1-based line of a byte offset.
fn line_of(src: &str, offset: usize) -> usize {
    src.get(..offset.min(src.len()))
        .map(|before| before.matches('\n').count() + 1)
        .unwrap_or(1)
}

impl SourcesConfig {
    /// Parse and validate a TOML document holding just this section's keys
    /// (a sources-only file for `sibyl sources probe`). Errors name the line
    /// and key of each mistake.
    pub fn from_toml(text: &str) -> Result<SourcesConfig, ConfigError> {
        let cfg: SourcesConfig =
            toml::from_str(text).map_err(|e| ConfigError::Parse(e.to_string()))?;
        let problems = cfg.problems();
        if problems.is_empty() {
            return Ok(cfg);
        }
        let lines: Vec<String> = problems
            .iter()
            .map(|p| {
                let line = locate(text, &p.key).map_or(0, |s| line_of(text, s.start));
                format!("line {line}: `{}`: {} ({})", p.key, p.message, p.hint)
            })
            .collect();
        Err(ConfigError::Invalid(lines.join("; ")))
    }

    /// Hands over the decimals the committee file declares per feed. Feeds
    /// it does not list are observed at [`SOURCES_ONLY_DECIMALS`].
    pub fn with_decimals(mut self, decimals: BTreeMap<String, u32>) -> SourcesConfig {
        self.decimals = decimals;
        self
    }

    /// The decimals feed `id` is observed at.
    pub fn decimals_of(&self, id: &str) -> u32 {
        self.decimals
            .get(id)
            .copied()
            .unwrap_or(SOURCES_ONLY_DECIMALS)
    }

    pub fn venue(&self, v: Venue) -> VenueConfig {
        self.venues.get(&v).cloned().unwrap_or_default()
    }

    pub fn base_url(&self, v: Venue) -> String {
        self.venue(v)
            .base_url
            .unwrap_or_else(|| v.default_base_url().to_string())
            .trim_end_matches('/')
            .to_string()
    }

    pub fn ws_enabled(&self, v: Venue) -> bool {
        v.default_ws_url().is_some() && self.venue(v).enabled && self.venue(v).ws.unwrap_or(true)
    }

    pub fn ws_url(&self, v: Venue) -> Option<String> {
        self.venue(v)
            .ws_url
            .or_else(|| v.default_ws_url().map(str::to_string))
    }

    /// Whether feed `id` is a stablecoin priced in the currency it is
    /// pegged to (`USDT-USD`): its price should stay near 1.0.
    pub fn is_peg_feed(&self, id: &str) -> bool {
        split_feed_id(id).is_some_and(|(b, q)| self.stablecoins.get(b).is_some_and(|p| p == q))
    }

    pub fn sanity(&self) -> SanityLimits {
        SanityLimits {
            max_price_units: self.max_price_units,
            max_age_ms: self.max_quote_age.as_ms(),
            max_future_ms: self.max_clock_skew.as_ms(),
        }
    }

    /// Every mistake [`SourcesConfig::problems`] finds, as one error.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let problems = self.problems();
        if problems.is_empty() {
            return Ok(());
        }
        let text: Vec<String> = problems
            .iter()
            .map(|p| format!("`{}`: {} ({})", p.key, p.message, p.hint))
            .collect();
        Err(ConfigError::Invalid(text.join("; ")))
    }

    /// Check everything a typo could break, naming the key at fault: the
    /// section's own values and the decimals handed over from the committee.
    pub fn problems(&self) -> Vec<Problem> {
        let mut out = self.section_problems();
        out.extend(self.decimals_problems());
        out
    }

    /// Decimals from the committee ([`SourcesConfig::with_decimals`]) the
    /// sources cannot observe at, keyed at the feed's `id`.
    pub fn decimals_problems(&self) -> Vec<Problem> {
        let mut out = Vec::new();
        for (i, f) in self.feeds.iter().enumerate() {
            let decimals = self.decimals_of(&f.id);
            if decimals > MAX_SOURCE_DECIMALS {
                out.push(Problem::new(
                    format!("feeds[{i}].id"),
                    format!(
                        "feed {}: the committee file gives it {decimals} decimals; the price sources observe at most {MAX_SOURCE_DECIMALS}",
                        f.id
                    ),
                    "lower the feed's decimals in the committee file (8 or 18 is typical)",
                ));
            }
        }
        out
    }

    /// The section's own mistakes (no committee needed).
    pub fn section_problems(&self) -> Vec<Problem> {
        let mut out = Vec::new();
        if self.poll_interval.as_ms() < 50 {
            out.push(Problem::new(
                "poll_interval",
                format!("{} is shorter than 50ms", self.poll_interval),
                "poll every 500ms or more; WebSocket venues stream in between",
            ));
        }
        let status = self.market_status_interval.as_ms();
        if status != 0 && status < 1_000 {
            out.push(Problem::new(
                "market_status_interval",
                format!(
                    "{} is shorter than 1s",
                    self.market_status_interval
                ),
                "read market status every 1s or more (the default is 30s), or \"0s\" to turn it off",
            ));
        }
        if self.request_timeout.as_ms() == 0 {
            out.push(Problem::new(
                "request_timeout",
                "the timeout is zero",
                "use a positive duration, e.g. \"2s\"",
            ));
        }
        let weight_problem = |key: String, bps: u32| {
            (bps == 0 || bps > 10_000).then(|| {
                Problem::new(
                    key,
                    format!("{bps} is not a share of the total weight in basis points"),
                    "use 1..=10000; the default 4000 (40 %) keeps any one venue from deciding alone with three or more venues",
                )
            })
        };
        out.extend(weight_problem(
            "max_venue_weight_bps".into(),
            self.max_venue_weight_bps,
        ));
        if self.max_peg_deviation_bps == 0 || self.max_peg_deviation_bps >= 10_000 {
            out.push(Problem::new(
                "max_peg_deviation_bps",
                format!(
                    "{} bps is not a bound on a stablecoin's distance from 1.0",
                    self.max_peg_deviation_bps
                ),
                "use 1..=9999; the default 50 (0.5 %) flags a real depeg, not daily noise",
            ));
        }
        let mut ids = BTreeSet::new();
        for (i, f) in self.feeds.iter().enumerate() {
            let key = |k: &str| format!("feeds[{i}].{k}");
            if let Some(bps) = f.max_venue_weight_bps {
                out.extend(weight_problem(key("max_venue_weight_bps"), bps));
            }
            if !ids.insert(f.id.as_str()) {
                out.push(Problem::new(
                    key("id"),
                    format!("feed {} appears twice in [[feeds]]", f.id),
                    "keep one table per feed and list all its sources there",
                ));
            }
            if f.decimals.is_some() {
                out.push(Problem::new(
                    key("decimals"),
                    format!("feed {}: `decimals` is no longer set in the sources", f.id),
                    "remove it: feed decimals are declared once, in the committee file's [[feeds]]; a feed the committee does not list is observed at 8 decimals",
                ));
            }
            let Some((_, fq)) = split_feed_id(&f.id) else {
                out.push(Problem::new(
                    key("id"),
                    format!("feed id {:?} is not BASE-QUOTE", f.id),
                    "write it in upper case like \"BTC-USD\"",
                ));
                continue;
            };
            if f.min_sources == 0 || f.min_sources > f.sources.len() {
                out.push(Problem::new(
                    key("min_sources"),
                    format!(
                        "feed {}: min_sources = {} but {} sources are listed",
                        f.id,
                        f.min_sources,
                        f.sources.len()
                    ),
                    "min_sources must be between 1 and the number of sources; the default is 3",
                ));
            }
            let mut seen = BTreeSet::new();
            for (j, s) in f.sources.iter().enumerate() {
                let key = |k: &str| format!("feeds[{i}].sources[{j}].{k}");
                if !self.venue(s.venue).enabled {
                    out.push(Problem::new(
                        key("venue"),
                        format!("feed {}: venue {} is disabled in [venues]", f.id, s.venue),
                        format!(
                            "enable it ([venues.{}] enabled = true) or remove this source",
                            s.venue
                        ),
                    ));
                }
                if let Some(q) = &s.quote
                    && q != fq
                {
                    let via = format!("{q}-{fq}");
                    match self.feeds.iter().find(|g| g.id == via) {
                        None => out.push(Problem::new(
                            key("quote"),
                            format!(
                                "feed {}: source {} quotes in {q}, so feed {via} must be configured to convert it",
                                f.id, s.venue
                            ),
                            format!("add a [[feeds]] table with id = \"{via}\" and its own sources"),
                        )),
                        Some(conv)
                            if conv
                                .sources
                                .iter()
                                .any(|s| s.quote.as_deref().is_some_and(|cq| cq != fq)) =>
                        {
                            out.push(Problem::new(
                                key("quote"),
                                format!("feed {via} converts feed {} and may not itself need conversion", f.id),
                                format!("source feed {via} from markets quoted in {fq}"),
                            ))
                        }
                        Some(_) => {}
                    }
                }
                if !seen.insert(s.venue) {
                    out.push(Problem::new(
                        key("venue"),
                        format!("feed {}: venue {} is listed twice", f.id, s.venue),
                        "list each venue once per feed",
                    ));
                }
            }
        }
        out
    }

    /// Every (feed, venue market) to fetch.
    pub fn resolved_sources(&self) -> Vec<ResolvedSource> {
        let mut out = Vec::new();
        for f in &self.feeds {
            let Some((base, fq)) = split_feed_id(&f.id) else {
                continue;
            };
            for s in &f.sources {
                let quote = s.quote.clone().unwrap_or_else(|| fq.to_string());
                let market = s
                    .symbol
                    .clone()
                    .unwrap_or_else(|| s.venue.market(base, &quote));
                let convert_via = (quote != fq).then(|| format!("{quote}-{fq}"));
                out.push(ResolvedSource {
                    feed: f.id.clone(),
                    venue: s.venue,
                    market,
                    convert_via,
                });
            }
        }
        out
    }

    /// A config that points every venue at a simulated exchange
    /// (`sibyl sim-exchange`) at `base_url` (e.g. "http://127.0.0.1:9100"),
    /// with the given feeds (e.g. ["BTC-USD", "ETH-USD"]) sourced from all
    /// venues; USDT markets are converted through a "USDT-USD" feed added here.
    pub fn for_sim_exchange(base_url: &str, feeds: &[&str]) -> SourcesConfig {
        SourcesConfig::for_sim_exchange_venues(base_url, feeds, &Venue::ALL)
    }

    /// [`SourcesConfig::for_sim_exchange`] restricted to some venues.
    pub fn for_sim_exchange_venues(
        base_url: &str,
        feeds: &[&str],
        venues: &[Venue],
    ) -> SourcesConfig {
        let base = base_url.trim_end_matches('/');
        let ws_base = base
            .replacen("http://", "ws://", 1)
            .replacen("https://", "wss://", 1);
        let mut cfg = SourcesConfig {
            poll_interval: Dur::ms(500),
            request_timeout: Dur::ms(1_000),
            breaker_cooldown: Dur::ms(3_000),
            ws_stale_after: Dur::ms(5_000),
            max_quote_age: Dur::ms(10_000),
            market_status_interval: Dur::ms(2_000),
            ..SourcesConfig::default()
        };
        for v in venues.iter().copied() {
            cfg.venues.insert(
                v,
                VenueConfig {
                    enabled: true,
                    base_url: Some(format!("{base}/{}", v.name())),
                    ws: Some(v.default_ws_url().is_some()),
                    ws_url: v
                        .default_ws_url()
                        .map(|_| format!("{ws_base}/ws/{}", v.name())),
                    // The simulated exchange has no limits unless a scenario adds them.
                    rate_limit_per_sec: Some(500),
                },
            );
        }
        let usd_venues = [
            Venue::Coinbase,
            Venue::Kraken,
            Venue::Bitstamp,
            Venue::Gemini,
            Venue::Bitfinex,
            Venue::Cryptocom,
        ];
        let usdt_venues = [
            Venue::Binance,
            Venue::Okx,
            Venue::Bybit,
            Venue::Kucoin,
            Venue::Gateio,
            Venue::Htx,
            Venue::Mexc,
            Venue::Bitget,
        ];
        let mut ids: Vec<String> = feeds.iter().map(|s| s.to_string()).collect();
        let needs_usdt = ids
            .iter()
            .any(|id| id.ends_with("-USD") && id != "USDT-USD");
        if needs_usdt && !ids.iter().any(|id| id == "USDT-USD") {
            ids.push("USDT-USD".into());
        }
        let usd_venues: Vec<Venue> = usd_venues
            .into_iter()
            .filter(|v| venues.contains(v))
            .collect();
        let usdt_venues: Vec<Venue> = usdt_venues
            .into_iter()
            .filter(|v| venues.contains(v))
            .collect();
        for id in ids {
            let usd = id.ends_with("-USD");
            let mut sources: Vec<SourceConfig> = Vec::new();
            for v in usd_venues.iter().copied() {
                sources.push(SourceConfig {
                    venue: v,
                    quote: None,
                    symbol: None,
                });
            }
            if usd && id != "USDT-USD" {
                for v in usdt_venues.iter().copied() {
                    sources.push(SourceConfig {
                        venue: v,
                        quote: Some("USDT".into()),
                        symbol: None,
                    });
                }
            } else if !usd {
                for v in usdt_venues.iter().copied() {
                    sources.push(SourceConfig {
                        venue: v,
                        quote: None,
                        symbol: None,
                    });
                }
            }
            cfg.feeds.push(FeedConfig {
                id,
                decimals: None,
                min_sources: 3,
                max_deviation_bps: None,
                max_venue_weight_bps: None,
                sources,
            });
        }
        cfg
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse() {
        assert_eq!("500ms".parse::<Dur>(), Ok(Dur::ms(500)));
        assert_eq!("2s".parse::<Dur>(), Ok(Dur::ms(2000)));
        assert_eq!("1m".parse::<Dur>(), Ok(Dur::ms(60_000)));
        assert_eq!("1m30s".parse::<Dur>(), Ok(Dur::ms(90_000)));
        assert!("2 parsecs".parse::<Dur>().is_err());
        assert!("s".parse::<Dur>().is_err());
        assert_eq!(Dur::ms(1500).to_string(), "1500ms");
    }

    #[test]
    fn parses_toml_and_resolves_symbols() {
        let cfg = SourcesConfig::from_toml(
            r#"
            poll_interval = "500ms"
            [venues.kraken]
            ws = false
            [venues.gemini]
            enabled = false
            [[feeds]]
            id = "BTC-USD"
            min_sources = 2
            sources = [{ venue = "kraken" }, { venue = "binance", quote = "USDT" }, { venue = "coinbase", symbol = "BTC-USD" }]
            [[feeds]]
            id = "USDT-USD"
            min_sources = 1
            sources = [{ venue = "kraken" }]
            "#,
        )
        .unwrap();
        assert_eq!(cfg.poll_interval, Dur::ms(500));
        assert!(!cfg.ws_enabled(Venue::Kraken));
        assert!(cfg.ws_enabled(Venue::Binance));
        let r = cfg.resolved_sources();
        assert_eq!(r[0].market, "XBTUSD");
        assert_eq!(r[1].market, "BTCUSDT");
        assert_eq!(r[1].convert_via.as_deref(), Some("USDT-USD"));
        assert_eq!(r[3].label(), "kraken:USDTUSD");
    }

    #[test]
    fn explains_mistakes() {
        let err = |t: &str| SourcesConfig::from_toml(t).unwrap_err().to_string();
        assert!(err("pol_interval = \"1s\"").contains("unknown field"));
        assert!(err("poll_interval = \"1 fortnight\"").contains("is not a duration"));
        assert!(err("poll_interval = \"1 fortnight\"").contains("line 1"));
        assert!(err("[[feeds]]\nid = \"btc\"\nsources = []").contains("BASE-QUOTE"));
        let e = err(
            "[[feeds]]\nid = \"BTC-USD\"\nmin_sources = 1\nsources = [{ venue = \"binance\", quote = \"USDT\" }]",
        );
        assert!(e.contains("USDT-USD must be configured"), "{e}");
        assert!(
            err("[[feeds]]\nid = \"BTC-USD\"\nsources = [{ venue = \"nope\" }]")
                .contains("unknown variant")
        );
        let e = err("market_status_interval = \"500ms\"");
        assert!(
            e.contains("line 1: `market_status_interval`: 500ms is shorter than 1s"),
            "{e}"
        );
        let off = "market_status_interval = \"0s\"\n[[feeds]]\nid = \"BTC-USD\"\nmin_sources = 1\nsources = [{ venue = \"kraken\" }]";
        assert_eq!(
            SourcesConfig::from_toml(off)
                .unwrap()
                .market_status_interval,
            Dur::ms(0)
        );
    }

    #[test]
    fn mistakes_carry_key_and_line() {
        let src = "poll_interval = \"1s\"\n\n[[feeds]]\nid = \"BTC-USD\"\ndecimals = 8\nmin_sources = 4\nsources = [{ venue = \"kraken\" }, { venue = \"kraken\" }]\n";
        let cfg: SourcesConfig = toml::from_str(src).unwrap();
        let problems = cfg.problems();
        let keys: Vec<&str> = problems.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "feeds[0].decimals",
                "feeds[0].min_sources",
                "feeds[0].sources[1].venue"
            ]
        );
        assert!(problems[0].hint.contains("committee file"), "{problems:?}");
        let line = |key: &str| locate(src, key).map(|s| line_of(src, s.start));
        assert_eq!(line("feeds[0].decimals"), Some(5));
        assert_eq!(line("feeds[0].min_sources"), Some(6));
        assert_eq!(line("feeds[0].sources[1].venue"), Some(7));
        // A key left to its default points at its table.
        assert_eq!(line("feeds[0].max_deviation_bps"), Some(3));
        let e = SourcesConfig::from_toml(src).unwrap_err().to_string();
        assert!(e.contains("line 5: `feeds[0].decimals`"), "{e}");
        // Nested under [sources] in a node config.
        let node = format!(
            "[node]\nname = \"a\"\n\n[sources]\n{}",
            src.replace("[[feeds]]", "[[sources.feeds]]")
        );
        assert_eq!(
            locate(&node, "sources.feeds[0].min_sources").map(|s| line_of(&node, s.start)),
            Some(10)
        );
        let e = SourcesConfig::from_toml(
            "[[feeds]]\nid = \"BTC-USD\"\nmin_sources = \"three\"\nsources = []\n",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("line 3") && e.contains("min_sources"), "{e}");
    }

    #[test]
    fn key_at_names_the_key_of_a_span() {
        let src = "[node]\nname = \"a\"\n[sources]\npol_interval = \"1s\"\n[sources.venues.krakn]\nws = false\n[[sources.feeds]]\nid = \"BTC-USD\"\nmin_sources = \"three\"\nsources = [{ venue = \"kraken\" }, { venue = \"nope\" }]\n";
        let at = |needle: &str| key_at(src, src.find(needle).unwrap());
        assert_eq!(at("pol_interval").as_deref(), Some("sources.pol_interval"));
        assert_eq!(at("krakn").as_deref(), Some("sources.venues.krakn"));
        assert_eq!(
            at("\"three\"").as_deref(),
            Some("sources.feeds[0].min_sources")
        );
        assert_eq!(
            at("\"nope\"").as_deref(),
            Some("sources.feeds[0].sources[1].venue")
        );
        assert_eq!(at("name").as_deref(), Some("node.name"));
    }

    #[test]
    fn decimals_come_from_the_committee() {
        let cfg = SourcesConfig::for_sim_exchange("http://127.0.0.1:9", &["BTC-USD"])
            .with_decimals(BTreeMap::from([("BTC-USD".to_string(), 6)]));
        assert_eq!(cfg.decimals_of("BTC-USD"), 6);
        assert_eq!(cfg.decimals_of("USDT-USD"), SOURCES_ONLY_DECIMALS);
        assert!(cfg.problems().is_empty());
        let wide = cfg.with_decimals(BTreeMap::from([("BTC-USD".to_string(), 19)]));
        let p = wide.problems();
        assert_eq!(p.len(), 1, "{p:?}");
        assert_eq!(p[0].key, "feeds[0].id");
        assert!(p[0].message.contains("19 decimals"), "{p:?}");
    }

    #[test]
    fn sim_config_is_valid() {
        let cfg = SourcesConfig::for_sim_exchange("http://127.0.0.1:9", &["BTC-USD", "ETH-USD"]);
        cfg.validate().unwrap();
        assert_eq!(cfg.base_url(Venue::Okx), "http://127.0.0.1:9/okx");
        assert_eq!(
            cfg.ws_url(Venue::Kraken).as_deref(),
            Some("ws://127.0.0.1:9/ws/kraken")
        );
        assert_eq!(cfg.feeds.len(), 3);
        let text = toml::to_string(&cfg).unwrap();
        assert_eq!(SourcesConfig::from_toml(&text).unwrap(), cfg);
    }
}
