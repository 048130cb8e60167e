//! Prometheus metrics of the price sources, registered in a registry the
//! caller owns (never a global one).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    pub source: String,
    pub reason: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SourceFeedLabels {
    pub source: String,
    pub feed: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VenueLabels {
    pub venue: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabels {
    pub venue: String,
    /// `stream` (the venue's status channel) or `rest` (its status endpoint).
    pub via: String,
    pub state: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FeedLabels {
    pub feed: String,
}

#[derive(Debug, Clone, Default)]
pub struct SourceMetrics {
    /// `sibyl_source_errors_total{source,reason}`
    pub errors: Family<ErrorLabels, Counter>,
    /// `sibyl_source_staleness_seconds{source,feed}`: age of the source's latest usable quote.
    pub staleness: Family<SourceFeedLabels, Gauge<f64, AtomicU64>>,
    /// `sibyl_source_quotes_total{source,feed}`: quotes that passed the sanity checks.
    pub quotes: Family<SourceFeedLabels, Counter>,
    /// `sibyl_observation_sources{feed}`: sources in the latest observation (0: none).
    pub observation_sources: Family<FeedLabels, Gauge>,
    /// `sibyl_source_ws_connects_total{venue}`
    pub ws_connects: Family<VenueLabels, Counter>,
    /// `sibyl_observation_market_stopped{feed}`: 0 trading, 1 halted, 2
    /// closed, as the venues' status endpoints say (docs/SOURCES.md).
    pub market_stopped: Family<FeedLabels, Gauge>,
    /// `sibyl_source_market_states_total{venue,via,state}`: market states
    /// the venues said, per path (`stream` or `rest`) and state.
    pub market_states: Family<StateLabels, Counter>,
}

impl SourceMetrics {
    pub fn register(registry: &mut Registry) -> SourceMetrics {
        let m = SourceMetrics::default();
        registry.register(
            "sibyl_source_errors",
            "Failed fetches and rejected quotes per source and reason",
            m.errors.clone(),
        );
        registry.register(
            "sibyl_source_staleness_seconds",
            "Age of the newest usable quote per source and feed",
            m.staleness.clone(),
        );
        registry.register(
            "sibyl_source_quotes",
            "Quotes fetched that passed the sanity checks",
            m.quotes.clone(),
        );
        registry.register(
            "sibyl_observation_sources",
            "Sources used in the latest observation per feed",
            m.observation_sources.clone(),
        );
        registry.register(
            "sibyl_source_ws_connects",
            "WebSocket connection attempts per venue",
            m.ws_connects.clone(),
        );
        registry.register(
            "sibyl_observation_market_stopped",
            "Whether the venues say a feed's market stopped: 0 trading, 1 halted, 2 closed",
            m.market_stopped.clone(),
        );
        registry.register(
            "sibyl_source_market_states",
            "Market states the venues said, per venue, path (stream or rest) and state",
            m.market_states.clone(),
        );
        m
    }

    pub fn error(&self, source: &str, reason: &str) {
        self.errors
            .get_or_create(&ErrorLabels {
                source: source.into(),
                reason: reason.into(),
            })
            .inc();
    }
}
