//! The `[sources]` section of a node's config: venues, feeds, and the
//! health and observation parameters. TOML, `deny_unknown_fields`,
//! durations as strings ("500ms", "2s", "1m").

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::ConfigError;
use crate::quote::SanityLimits;
use crate::venue::Venue;

/// A duration written as a string: `"250ms"`, `"2s"`, `"1m"`, `"1h"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Dur(pub Duration);

impl Dur {
    pub const fn ms(ms: u64) -> Dur {
        Dur(Duration::from_millis(ms))
    }
    pub fn as_ms(self) -> u64 {
        self.0.as_millis() as u64
    }
}

impl std::str::FromStr for Dur {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
        let (num, unit) = s.split_at(split);
        let n: u64 = num.parse().map_err(|_| {
            format!("invalid duration {s:?}: expected e.g. \"500ms\", \"2s\", \"1m\"")
        })?;
        let ms = match unit.trim() {
            "ms" => n,
            "s" => n.saturating_mul(1000),
            "m" => n.saturating_mul(60_000),
            "h" => n.saturating_mul(3_600_000),
            other => {
                return Err(format!(
                    "invalid duration unit {other:?} in {s:?}: use ms, s, m or h"
                ));
            }
        };
        Ok(Dur::ms(ms))
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
    /// Prices above this many whole units are rejected as absurd.
    pub max_price_units: u64,
    /// Consecutive failures that open a source's circuit breaker.
    pub breaker_failures: u32,
    /// How long an open breaker waits before letting one trial request through.
    pub breaker_cooldown: Dur,
    /// A WebSocket with no message for this long is considered dead and reconnected.
    pub ws_stale_after: Dur,
    pub venues: BTreeMap<Venue, VenueConfig>,
    pub feeds: Vec<FeedConfig>,
}

impl Default for SourcesConfig {
    fn default() -> Self {
        SourcesConfig {
            poll_interval: Dur::ms(2_000),
            request_timeout: Dur::ms(2_000),
            max_retries: 2,
            max_quote_age: Dur::ms(30_000),
            max_clock_skew: Dur::ms(5_000),
            max_deviation_bps: 100,
            max_price_units: 1_000_000_000_000,
            breaker_failures: 5,
            breaker_cooldown: Dur::ms(30_000),
            ws_stale_after: Dur::ms(30_000),
            venues: BTreeMap::new(),
            feeds: Vec::new(),
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
    #[serde(default = "default_decimals")]
    pub decimals: u32,
    #[serde(default = "default_min_sources")]
    pub min_sources: usize,
    /// Overrides the section-wide `max_deviation_bps` for this feed.
    #[serde(default)]
    pub max_deviation_bps: Option<u32>,
    pub sources: Vec<SourceConfig>,
}

fn default_decimals() -> u32 {
    8
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

impl SourcesConfig {
    /// Parse a TOML document holding just this section's keys.
    pub fn from_toml(text: &str) -> Result<SourcesConfig, ConfigError> {
        let cfg: SourcesConfig =
            toml::from_str(text).map_err(|e| ConfigError::Parse(e.to_string()))?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Parse and validate an already-parsed TOML value (the `[sources]`
    /// table of a node config).
    pub fn from_value(value: toml::Value) -> Result<SourcesConfig, ConfigError> {
        let cfg: SourcesConfig = value
            .try_into()
            .map_err(|e: toml::de::Error| ConfigError::Parse(e.to_string()))?;
        cfg.validate()?;
        Ok(cfg)
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

    pub fn sanity(&self) -> SanityLimits {
        SanityLimits {
            max_price_units: self.max_price_units,
            max_age_ms: self.max_quote_age.as_ms(),
            max_future_ms: self.max_clock_skew.as_ms(),
        }
    }

    /// Check everything a typo could break, naming the feed and source at fault.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: String| Err(ConfigError::Invalid(m));
        if self.poll_interval.as_ms() < 50 {
            return bad("poll_interval must be at least 50ms".into());
        }
        if self.request_timeout.as_ms() == 0 {
            return bad("request_timeout must be positive".into());
        }
        let ids: BTreeSet<&str> = self.feeds.iter().map(|f| f.id.as_str()).collect();
        if ids.len() != self.feeds.len() {
            return bad("a feed id appears twice in [[feeds]]".into());
        }
        for f in &self.feeds {
            let Some((_, fq)) = split_feed_id(&f.id) else {
                return bad(format!(
                    "feed id {:?} must look like \"BTC-USD\" (upper-case BASE-QUOTE)",
                    f.id
                ));
            };
            if f.decimals > 18 {
                return bad(format!(
                    "feed {}: decimals {} is more than 18",
                    f.id, f.decimals
                ));
            }
            if f.min_sources == 0 || f.min_sources > f.sources.len() {
                return bad(format!(
                    "feed {}: min_sources = {} but {} sources are listed",
                    f.id,
                    f.min_sources,
                    f.sources.len()
                ));
            }
            let mut seen = BTreeSet::new();
            for s in &f.sources {
                if !self.venue(s.venue).enabled {
                    return bad(format!(
                        "feed {}: source venue {} is disabled in [venues]",
                        f.id, s.venue
                    ));
                }
                if let Some(q) = &s.quote
                    && q != fq
                {
                    let via = format!("{q}-{fq}");
                    let Some(conv) = self.feeds.iter().find(|g| g.id == via) else {
                        return bad(format!(
                            "feed {}: source {} quotes in {q}, so feed {via} must be configured to convert it",
                            f.id, s.venue
                        ));
                    };
                    if conv
                        .sources
                        .iter()
                        .any(|s| s.quote.as_deref().is_some_and(|cq| cq != fq))
                    {
                        return bad(format!(
                            "feed {via} converts feed {} and may not itself need conversion",
                            f.id
                        ));
                    }
                }
                if !seen.insert(s.venue) {
                    return bad(format!("feed {}: venue {} is listed twice", f.id, s.venue));
                }
            }
        }
        Ok(())
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
                decimals: 8,
                min_sources: 3,
                max_deviation_bps: None,
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
        assert!(err("poll_interval = \"1 fortnight\"").contains("invalid duration"));
        assert!(err("[[feeds]]\nid = \"btc\"\nsources = []").contains("BASE-QUOTE"));
        let e = err(
            "[[feeds]]\nid = \"BTC-USD\"\nmin_sources = 1\nsources = [{ venue = \"binance\", quote = \"USDT\" }]",
        );
        assert!(e.contains("USDT-USD must be configured"), "{e}");
        assert!(
            err("[[feeds]]\nid = \"BTC-USD\"\nsources = [{ venue = \"nope\" }]")
                .contains("unknown variant")
        );
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
