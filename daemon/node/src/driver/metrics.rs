//! The round driver's Prometheus metrics.
//!
//! The driver owns one [`NodeMetrics`] and updates it where the events
//! happen (next to its JSON [`super::NodeStatus`]); `sibyl run` registers it
//! in the registry it hands to the API, which serves it at `/metrics` next to
//! the network's (`sibyl_net_*`), the sources' (`sibyl_source_*`) and its own
//! (`sibyl_api_*`, `sibyl_db_size_bytes`).
//!
//! | family | type | meaning |
//! |---|---|---|
//! | `sibyl_round_duration_seconds` | histogram | round latency: the round's observation instant (its slot) → signed report held here |
//! | `sibyl_rounds_signed_total` | counter | rounds that ended with a signed report accepted here |
//! | `sibyl_rounds_missed_total` | counter | rounds left without a signed report |
//! | `sibyl_rounds_led_total` | counter | signed reports this member led |
//! | `sibyl_share_failures_total{member}` | counter | invalid signature shares seen from a member (as leader) |
//! | `sibyl_peer_connected{member}` | gauge | 1 when connected to that member, else 0 |
//! | `sibyl_peer_last_seen_seconds{member}` | gauge | seconds since the member was last heard from (message, report or ping reply); absent until it was |
//! | `sibyl_clock_offset_seconds` | gauge | this member's estimated clock offset from the committee; NaN while unknown |
//! | `sibyl_feed_age_seconds{feed}` | gauge | now − timestamp of the newest signed report with the feed |
//! | `sibyl_feed_heartbeat_seconds{feed}` | gauge | the feed's heartbeat from the committee file |
//! | `sibyl_current_round` | gauge | the round this member is in |
//! | `sibyl_signing_ledger_refusals_total` | counter | signings the ledger refused (never signed twice) |
//! | `sibyl_messages_malformed_total` | counter | point-to-point messages that were not a valid envelope |
//! | `sibyl_reports_invalid_total` | counter | gossiped or caught-up reports that failed to decode or verify |

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use sibyl_aggregator::round::committee::Committee;
use sibyl_aggregator::{FeedId, TimestampMs};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::AtomicU64;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MemberLabels {
    pub member: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FeedLabels {
    pub feed: String,
}

type FloatGauge = Gauge<f64, AtomicU64>;

/// The driver's metrics. Cloning shares the underlying values.
#[derive(Clone, Debug)]
pub struct NodeMetrics {
    pub round_duration: Histogram,
    pub rounds_signed: Counter,
    pub rounds_missed: Counter,
    pub rounds_led: Counter,
    pub share_failures: Family<MemberLabels, Counter>,
    pub peer_connected: Family<MemberLabels, Gauge>,
    pub peer_last_seen: Family<MemberLabels, FloatGauge>,
    pub clock_offset: FloatGauge,
    pub feed_age: Family<FeedLabels, FloatGauge>,
    pub feed_heartbeat: Family<FeedLabels, FloatGauge>,
    pub current_round: Gauge,
    pub ledger_refusals: Counter,
    pub malformed_messages: Counter,
    pub invalid_reports: Counter,
    pub key_refreshes: Counter,
    pub key_refresh_failures: Counter,
    pub key_sets: Gauge,
    /// Round-state counters about margin state roots (since start).
    pub margin_states_proposed: Gauge,
    pub margin_states_refused: Gauge,
    pub offers_sent: Gauge,
    pub offers_relayed: Gauge,
    pub margin_root_disagreements: Gauge,
}

impl Default for NodeMetrics {
    fn default() -> Self {
        Self {
            // 1 ms .. 16 s: the latency goal is a few milliseconds.
            round_duration: Histogram::new(exponential_buckets(0.001, 2.0, 15)),
            rounds_signed: Counter::default(),
            rounds_missed: Counter::default(),
            rounds_led: Counter::default(),
            share_failures: Family::default(),
            peer_connected: Family::default(),
            peer_last_seen: Family::default(),
            clock_offset: {
                let g = FloatGauge::default();
                g.set(f64::NAN);
                g
            },
            feed_age: Family::default(),
            feed_heartbeat: Family::default(),
            current_round: Gauge::default(),
            ledger_refusals: Counter::default(),
            malformed_messages: Counter::default(),
            invalid_reports: Counter::default(),
            key_refreshes: Counter::default(),
            key_refresh_failures: Counter::default(),
            key_sets: Gauge::default(),
            margin_states_proposed: Gauge::default(),
            margin_states_refused: Gauge::default(),
            offers_sent: Gauge::default(),
            offers_relayed: Gauge::default(),
            margin_root_disagreements: Gauge::default(),
        }
    }
}

fn member(index: u16) -> MemberLabels {
    MemberLabels {
        member: index.to_string(),
    }
}

fn feed(id: &FeedId) -> FeedLabels {
    FeedLabels {
        feed: id.as_str().to_owned(),
    }
}

fn seconds_since(now_ms: TimestampMs, then_ms: TimestampMs) -> f64 {
    // Millisecond precision; a report stamped slightly ahead of this clock is age 0.
    now_ms.saturating_sub(then_ms) as f64 / 1000.0
}

impl NodeMetrics {
    /// Metrics for member `me` of `committee`: every other member starts
    /// disconnected, every feed's heartbeat is set and every member's share
    /// failures start at 0 (so the series exist before the first event).
    pub fn new(committee: &Committee, me: u16) -> Self {
        let m = Self::default();
        for mem in committee.members() {
            let _ = m.share_failures.get_or_create(&member(mem.index));
            if mem.index != me {
                m.peer_connected.get_or_create(&member(mem.index)).set(0);
            }
        }
        for (id, cfg) in committee.feeds() {
            m.feed_heartbeat
                .get_or_create(&feed(id))
                .set(cfg.heartbeat_ms as f64 / 1000.0);
        }
        m
    }

    /// Registers clones of every family in `registry`.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "sibyl_round_margin_states_proposed",
            "Reports this member led carrying a margin state root t members attested, since start",
            self.margin_states_proposed.clone(),
        );
        registry.register(
            "sibyl_round_margin_states_refused",
            "Proposals this member refused for carrying a margin state root it had not computed, since start",
            self.margin_states_refused.clone(),
        );
        registry.register(
            "sibyl_round_offers_sent",
            "Times this member sent its pending margin commands to every member (when they changed, and again while they waited), since start",
            self.offers_sent.clone(),
        );
        registry.register(
            "sibyl_round_offers_relayed",
            "Other members' pending margin commands this member carried in its observations after they waited 2 rounds unordered, since start",
            self.offers_relayed.clone(),
        );
        registry.register(
            "sibyl_round_margin_root_disagreements",
            "Rounds this member led whose observations attested two margin state roots for one round (engines diverged), since start",
            self.margin_root_disagreements.clone(),
        );
        registry.register(
            "sibyl_key_refreshes",
            "Proactive key refreshes this member completed (switched to new shares) since it started",
            self.key_refreshes.clone(),
        );
        registry.register(
            "sibyl_key_refresh_failures",
            "Key refreshes that failed or were parked here since start (each is retried)",
            self.key_refresh_failures.clone(),
        );
        registry.register(
            "sibyl_key_sets",
            "Key sets this member holds: 1, or 2 during a refresh",
            self.key_sets.clone(),
        );
        registry.register(
            "sibyl_round_duration_seconds",
            "Round latency: from the round's observation instant (its slot on the round grid) until this member holds the verified signed report",
            self.round_duration.clone(),
        );
        registry.register(
            "sibyl_rounds_signed",
            "Rounds that ended with a signed report accepted by this member",
            self.rounds_signed.clone(),
        );
        registry.register(
            "sibyl_rounds_missed",
            "Rounds this member left without a signed report",
            self.rounds_missed.clone(),
        );
        registry.register(
            "sibyl_rounds_led",
            "Signed reports this member produced as the round's leader",
            self.rounds_led.clone(),
        );
        registry.register(
            "sibyl_share_failures",
            "Invalid signature shares received from a member (seen as leader, with evidence)",
            self.share_failures.clone(),
        );
        registry.register(
            "sibyl_peer_connected",
            "1 when this member is connected to the given member, else 0",
            self.peer_connected.clone(),
        );
        registry.register(
            "sibyl_peer_last_seen_seconds",
            "Seconds since this member last heard from the given member (a message, report or ping reply)",
            self.peer_last_seen.clone(),
        );
        registry.register(
            "sibyl_clock_offset_seconds",
            "This member's estimated clock offset from the committee (NaN while unknown)",
            self.clock_offset.clone(),
        );
        registry.register(
            "sibyl_feed_age_seconds",
            "Seconds since the timestamp of the newest signed report holding the feed",
            self.feed_age.clone(),
        );
        registry.register(
            "sibyl_feed_heartbeat_seconds",
            "The feed's heartbeat from the committee file",
            self.feed_heartbeat.clone(),
        );
        registry.register(
            "sibyl_current_round",
            "The round this member is in",
            self.current_round.clone(),
        );
        registry.register(
            "sibyl_signing_ledger_refusals",
            "Signings the signing ledger refused (the member never signs twice in a round)",
            self.ledger_refusals.clone(),
        );
        registry.register(
            "sibyl_messages_malformed",
            "Point-to-point messages dropped because they were not a valid envelope",
            self.malformed_messages.clone(),
        );
        registry.register(
            "sibyl_reports_invalid",
            "Gossiped or caught-up reports dropped because they did not decode or verify",
            self.invalid_reports.clone(),
        );
    }

    pub fn set_connected(&self, index: u16, connected: bool) {
        self.peer_connected
            .get_or_create(&member(index))
            .set(i64::from(connected));
    }

    /// Member `index` was last heard from at `seen_ms`.
    pub fn set_last_seen(&self, index: u16, now_ms: TimestampMs, seen_ms: TimestampMs) {
        self.peer_last_seen
            .get_or_create(&member(index))
            .set(seconds_since(now_ms, seen_ms));
    }

    pub fn set_clock_offset(&self, offset_ms: Option<i64>) {
        self.clock_offset
            .set(offset_ms.map_or(f64::NAN, |ms| ms as f64 / 1000.0));
    }

    pub fn share_failure(&self, index: u16) {
        self.share_failures.get_or_create(&member(index)).inc();
    }

    pub fn set_round(&self, round: u64) {
        self.current_round
            .set(i64::try_from(round).unwrap_or(i64::MAX));
    }

    /// Refreshes `sibyl_feed_age_seconds` from the newest report timestamp
    /// known per feed.
    pub fn update_feed_ages(&self, latest: &BTreeMap<FeedId, TimestampMs>, now_ms: TimestampMs) {
        for (id, ts) in latest {
            self.feed_age
                .get_or_create(&feed(id))
                .set(seconds_since(now_ms, *ts));
        }
    }
}

/// prometheus-client writes OpenMetrics, where a counter family `x` has
/// samples `x_total`. The classic Prometheus text format (what `promtool check
/// metrics` and every scraper read) names the family `x_total` itself and has
/// no `# EOF` or `# UNIT` lines.
pub fn openmetrics_to_prometheus(text: &str) -> String {
    let counters: BTreeSet<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.strip_suffix(" counter"))
        .filter(|name| !name.ends_with("_total"))
        .collect();
    let mut out = String::with_capacity(text.len() + 16 * counters.len());
    for line in text.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let renamed = ["# HELP ", "# TYPE "].iter().find_map(|prefix| {
            let rest = line.strip_prefix(prefix)?;
            let (name, tail) = rest.split_once(' ')?;
            counters
                .contains(name)
                .then(|| format!("{prefix}{name}_total {tail}"))
        });
        match renamed {
            Some(l) => out.push_str(&l),
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode(r: &Registry) -> String {
        let mut s = String::new();
        prometheus_client::encoding::text::encode(&mut s, r).unwrap();
        s
    }

    #[test]
    fn families_are_registered_with_their_values() {
        let m = NodeMetrics::default();
        let mut r = Registry::default();
        m.register(&mut r);
        m.set_connected(2, true);
        m.set_connected(3, false);
        m.share_failure(3);
        m.rounds_signed.inc();
        m.set_round(42);
        m.set_last_seen(2, 10_000, 8_500);
        m.set_clock_offset(Some(-250));
        let id: FeedId = "BTC-USD".parse().unwrap();
        m.update_feed_ages(&BTreeMap::from([(id, 1_000)]), 3_500);
        let text = encode(&r);
        for line in [
            r#"sibyl_peer_connected{member="2"} 1"#,
            r#"sibyl_peer_connected{member="3"} 0"#,
            r#"sibyl_share_failures_total{member="3"} 1"#,
            "sibyl_rounds_signed_total 1",
            "sibyl_current_round 42",
            r#"sibyl_peer_last_seen_seconds{member="2"} 1.5"#,
            "sibyl_clock_offset_seconds -0.25",
            r#"sibyl_feed_age_seconds{feed="BTC-USD"} 2.5"#,
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing in\n{text}");
        }
        assert!(text.contains("# TYPE sibyl_round_duration_seconds histogram"));
    }

    #[test]
    fn unknown_clock_offset_is_nan_and_unseen_members_have_no_series() {
        let m = NodeMetrics::default();
        let mut r = Registry::default();
        m.register(&mut r);
        let text = encode(&r);
        assert!(
            text.lines().any(|l| l == "sibyl_clock_offset_seconds NaN"),
            "{text}"
        );
        assert!(!text.contains("sibyl_peer_last_seen_seconds{"), "{text}");
        m.set_clock_offset(Some(10));
        m.set_clock_offset(None);
        assert!(encode(&r).contains("sibyl_clock_offset_seconds NaN"));
    }

    #[test]
    fn a_report_from_the_future_is_age_zero() {
        assert_eq!(seconds_since(1_000, 2_000), 0.0);
    }
}
