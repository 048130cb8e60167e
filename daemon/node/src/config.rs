//! Node configuration and the committee file.
//!
//! Two TOML files configure a member:
//!
//! ```text
//!   node.toml  (one per operator: keys, listen addresses, store, API, logs, sources)
//!      │ node.committee = "committee.toml"   (path relative to node.toml)
//!      ▼
//!   committee.toml  (identical on every member: members, threshold, suites,
//!                    leader seed, round timing, feeds)
//!      │ canonical re-encoding → Keccak-256
//!      ▼
//!   config digest   (carried by every message and report)
//! ```
//!
//! Both files are parsed with `deny_unknown_fields`; every section has
//! defaults except the ones an operator must decide. Durations are strings
//! (`"250ms"`, `"2s"`, `"1m"`). Secrets are never written in the config: the
//! key passphrase comes from an environment variable (`passphrase_env`) or a
//! file (`passphrase_file`).
//!
//! Loading reports every problem it can find, each with the file, line,
//! column, the key and what to do. A syntax or type error stops parsing of
//! that file (TOML can't be reliably read past it); semantic problems (bad
//! threshold, duplicate members, bad peer ids, ...) are all collected.
//! `sibyl config check --config node.toml` runs exactly this validation.
//!
//! ## Config digest
//! The digest does not hash the file's bytes (comments and formatting must
//! not split a committee). It is the protocol's
//! `sibyl_aggregator::round::committee::committee_digest` of the validated
//! committee, specified byte for byte in docs/PROTOCOL.md ("Config digest"):
//! threshold, suites, leader seed, round timing, members (index and identity
//! key) and feeds. Members' network addresses are not in it, so moving a
//! host does not change the committee's identity. Two files that say the
//! same thing give the same digest; any change of substance gives another.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use libp2p_identity::PeerId;
use multiaddr::{Multiaddr, Protocol};
use serde::{Deserialize, Serialize};
use sibyl_aggregator::round::message::{MAX_FEEDS, MAX_MEMBERS};
use sibyl_aggregator::{ConfigDigest, FeedId, Suite};
use toml::Spanned;

/// Largest number of feed decimals: prices are i128 and must leave headroom.
pub const MAX_DECIMALS: u8 = 30;

// ---------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------

/// One mistake in a config file, located and explained.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub file: PathBuf,
    /// 1-based line and column; 0 when the mistake has no single place (e.g. a missing section).
    pub line: usize,
    pub col: usize,
    /// Dotted key path, e.g. `members[2].peer_id`.
    pub key: String,
    pub message: String,
    /// What to do about it.
    pub hint: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if self.line > 0 {
            write!(f, ":{}:{}", self.line, self.col)?;
        }
        if !self.key.is_empty() {
            write!(f, ": `{}`", self.key)?;
        }
        write!(f, ": {}", self.message)?;
        if !self.hint.is_empty() {
            write!(f, " ({})", self.hint)?;
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {}: {source}; check the path (relative paths in node.toml are relative to node.toml's directory)", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{} problem(s) in the configuration:\n{}", .0.len(), list(.0))]
    Invalid(Vec<Problem>),
}

fn list(problems: &[Problem]) -> String {
    problems
        .iter()
        .map(|p| format!("  - {p}"))
        .collect::<Vec<_>>()
        .join("\n")
}

impl ConfigError {
    /// The problems, if this is a validation error.
    pub fn problems(&self) -> &[Problem] {
        match self {
            ConfigError::Invalid(p) => p,
            ConfigError::Read { .. } => &[],
        }
    }
}

/// Collects problems for one file and turns byte spans into line:col.
struct Report<'a> {
    file: &'a Path,
    src: &'a str,
    problems: Vec<Problem>,
}

impl<'a> Report<'a> {
    fn new(file: &'a Path, src: &'a str) -> Self {
        Self {
            file,
            src,
            problems: Vec::new(),
        }
    }

    fn at(
        &mut self,
        span: Option<Range<usize>>,
        key: impl Into<String>,
        message: impl Into<String>,
        hint: impl Into<String>,
    ) {
        let (line, col) = span.map(|s| line_col(self.src, s.start)).unwrap_or((0, 0));
        self.problems.push(Problem {
            file: self.file.to_path_buf(),
            line,
            col,
            key: key.into(),
            message: message.into(),
            hint: hint.into(),
        });
    }

    fn toml_error(&mut self, err: &toml::de::Error) {
        let message = err.message().trim().to_string();
        if message.is_empty() {
            // toml names some syntax errors with no words at all (a control
            // character in a comment, for one): say what is at the spot.
            let at = err
                .span()
                .and_then(|s| self.src.get(s.start..))
                .and_then(|rest| rest.chars().next());
            let (message, hint) = match at {
                Some(c) if c.is_control() => (
                    format!(
                        "control character U+{:04X} is not allowed in TOML",
                        u32::from(c)
                    ),
                    "remove it; TOML allows no control characters but tab, even in comments",
                ),
                Some(c) => (
                    format!("invalid TOML syntax at {c:?}"),
                    "fix the syntax; the example configs in deploy/ show every key",
                ),
                None => (
                    "invalid TOML syntax".to_string(),
                    "fix the syntax; the example configs in deploy/ show every key",
                ),
            };
            self.at(err.span(), "", message, hint);
            return;
        }
        let hint = if message.contains("unknown field") {
            "remove it or fix its spelling; the example configs in deploy/ list every option"
        } else if message.contains("missing field") {
            "add it; the example configs in deploy/ show every required key"
        } else {
            "fix the value's syntax or type"
        };
        // Name the key of a mistake in [sources] (toml's error carries only its span).
        let key = err
            .span()
            .and_then(|s| sibyl_feeds::config::key_at(self.src, s.start))
            .filter(|k| k.starts_with("sources."))
            .unwrap_or_default();
        self.at(err.span(), key, message, hint);
    }
}

/// 1-based line and column (in characters) of a byte offset.
pub fn line_col(src: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(src.len());
    let before = &src[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map(|i| i + 1).unwrap_or(0);
    let col = before[line_start..].chars().count() + 1;
    (line, col)
}

// ---------------------------------------------------------------------------
// Durations
// ---------------------------------------------------------------------------

/// A duration written as a string: an integer and a unit, `"250ms"`, `"2s"`,
/// `"5m"`, `"1h"`, or a sum like `"1m30s"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ConfigDuration(pub Duration);

impl ConfigDuration {
    pub fn from_millis(ms: u64) -> Self {
        Self(Duration::from_millis(ms))
    }
    pub fn as_millis(&self) -> u64 {
        u64::try_from(self.0.as_millis()).unwrap_or(u64::MAX)
    }
}

/// The node's one duration grammar, shared with the `[sources]` section.
pub use sibyl_feeds::duration::parse_duration;

impl<'de> Deserialize<'de> for ConfigDuration {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        parse_duration(&s)
            .map(ConfigDuration)
            .map_err(serde::de::Error::custom)
    }
}

impl Serialize for ConfigDuration {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format!("{}ms", self.as_millis()))
    }
}

impl fmt::Display for ConfigDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

// ---------------------------------------------------------------------------
// Node config (node.toml)
// ---------------------------------------------------------------------------

/// `node.toml` as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    pub node: NodeSection,
    #[serde(default)]
    pub keys: KeysSection,
    #[serde(default)]
    pub net: NetSection,
    #[serde(default)]
    pub api: ApiSection,
    #[serde(default)]
    pub store: StoreSection,
    #[serde(default)]
    pub log: LogSection,
    /// The price sources, typed by the `feeds` crate and checked with the
    /// rest of the file; feed decimals are filled in from the committee at
    /// [`Config::load`]. Without it the node observes the built-in
    /// deterministic source (devnet/tests).
    #[serde(default)]
    pub sources: Option<sibyl_feeds::SourcesConfig>,
    /// On-chain transmission; absent means the node does not transmit.
    #[serde(default)]
    pub chain: Option<ChainSection>,
    /// The embedded margin engine.
    #[serde(default)]
    pub margin: MarginSection,
}

/// `[margin]`: the embedded margin engine.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MarginSection {
    /// Seed a demo book of this many accounts at the first verified report
    /// when the store holds no margin inputs yet (devnet, demos); 0 = none.
    #[serde(default)]
    pub demo_accounts: usize,
    /// Seed of the demo book's random choices.
    #[serde(default)]
    pub demo_seed: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChainSection {
    /// JSON-RPC endpoint, `http://` or `https://`.
    pub rpc_url: Spanned<String>,
    /// EIP-155 chain id the RPC endpoint must report.
    pub chain_id: u64,
    /// Address of the verifying contract, `0x` and 40 hex digits.
    pub contract: Spanned<String>,
    /// File holding the transmitter's secp256k1 key (hex; relative to node.toml).
    pub transmitter_key_file: PathBuf,
    /// Delay per member in the staggered transmit schedule.
    #[serde(default = "default_stagger")]
    pub stagger: ConfigDuration,
    /// Cap on the EIP-1559 max fee per gas, gwei.
    #[serde(default = "default_max_fee_gwei")]
    pub max_fee_gwei: u64,
    /// Cap on the EIP-1559 priority fee (tip) per gas, gwei.
    #[serde(default = "default_max_priority_fee_gwei")]
    pub max_priority_fee_gwei: u64,
    /// A transaction without a receipt after this long is replaced (same
    /// nonce, higher fees).
    #[serde(default = "default_replace_after")]
    pub replace_after: ConfigDuration,
}

fn default_stagger() -> ConfigDuration {
    ConfigDuration::from_millis(2000)
}

fn default_max_fee_gwei() -> u64 {
    200
}

fn default_max_priority_fee_gwei() -> u64 {
    2
}

fn default_replace_after() -> ConfigDuration {
    ConfigDuration::from_millis(30_000)
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeSection {
    /// Path of the committee file (relative to node.toml).
    pub committee: Spanned<PathBuf>,
    /// Directory for the database and other state (relative to node.toml).
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    /// Nice value (0..=19) of every thread except the round driver's: the
    /// price sources, the API, the margin engine and the store yield the CPU
    /// to the round protocol when both want it. 0 keeps them equal.
    #[serde(default = "default_background_nice")]
    pub background_nice: Spanned<u8>,
}

fn default_background_nice() -> Spanned<u8> {
    Spanned::new(0..0, 10)
}

fn default_data_dir() -> PathBuf {
    PathBuf::from("data")
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeysSection {
    /// The member's libp2p identity key (ed25519), encrypted; its public
    /// part sits next to it as `<name>.pub.json`.
    #[serde(default = "default_identity")]
    pub identity: PathBuf,
    /// The encrypted FROST key package; the suite's name is inserted before
    /// the extension (`frost.key` -> `frost.ed25519.key`).
    #[serde(default = "default_key_package")]
    pub key_package: PathBuf,
    /// The public key package (group key and verifying shares), suite name
    /// inserted the same way.
    #[serde(default = "default_public_key_package")]
    pub public_key_package: PathBuf,
    /// Name of an environment variable holding the key passphrase.
    #[serde(default)]
    pub passphrase_env: Option<Spanned<String>>,
    /// File holding the key passphrase (first line; relative to node.toml).
    #[serde(default)]
    pub passphrase_file: Option<Spanned<PathBuf>>,
}

fn default_identity() -> PathBuf {
    PathBuf::from("keys/identity.key")
}
fn default_key_package() -> PathBuf {
    PathBuf::from("keys/frost.key")
}
fn default_public_key_package() -> PathBuf {
    PathBuf::from("keys/frost.pub.json")
}

impl Default for KeysSection {
    fn default() -> Self {
        Self {
            identity: default_identity(),
            key_package: default_key_package(),
            public_key_package: default_public_key_package(),
            passphrase_env: None,
            passphrase_file: None,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetSection {
    /// Multiaddr to listen on; default: this member's address from the committee file.
    #[serde(default)]
    pub listen: Option<Spanned<String>>,
    /// Largest protocol message accepted, in bytes.
    #[serde(default = "default_max_message_bytes")]
    pub max_message_bytes: usize,
    /// Messages per second accepted from one peer before dropping.
    #[serde(default = "default_rate_limit")]
    pub rate_limit_per_peer: u32,
    /// Pause between reconnection attempts to a member.
    #[serde(default = "default_redial")]
    pub redial_interval: ConfigDuration,
    /// How long a request (observation, proposal, share, catch-up) may take.
    #[serde(default = "default_request_timeout")]
    pub request_timeout: ConfigDuration,
}

fn default_max_message_bytes() -> usize {
    1 << 20
}
fn default_rate_limit() -> u32 {
    200
}
fn default_redial() -> ConfigDuration {
    ConfigDuration::from_millis(1000)
}
fn default_request_timeout() -> ConfigDuration {
    ConfigDuration::from_millis(2000)
}

impl Default for NetSection {
    fn default() -> Self {
        Self {
            listen: None,
            max_message_bytes: default_max_message_bytes(),
            rate_limit_per_peer: default_rate_limit(),
            redial_interval: default_redial(),
            request_timeout: default_request_timeout(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiSection {
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// `host:port` of the HTTP API (and `/metrics`).
    #[serde(default = "default_api_listen")]
    pub listen: Spanned<String>,
    /// Environment variable holding the bearer token of the admin endpoints.
    #[serde(default)]
    pub admin_token_env: Option<Spanned<String>>,
    /// File holding the admin token (first line; relative to node.toml).
    #[serde(default)]
    pub admin_token_file: Option<Spanned<PathBuf>>,
    /// Longest a handler may take to answer; then 503 `request_timeout`.
    #[serde(default = "default_api_request_timeout")]
    pub request_timeout: Spanned<ConfigDuration>,
    /// Longest a request head may take to arrive (from the accept, or from
    /// the first byte of a later request on the connection).
    #[serde(default = "default_api_header_read_timeout")]
    pub header_read_timeout: Spanned<ConfigDuration>,
    /// A connection with no request under way (keep-alive), or whose
    /// response the client has not read, for this long is closed.
    #[serde(default = "default_api_idle_timeout")]
    pub idle_timeout: Spanned<ConfigDuration>,
    /// Open connections at most; more are closed as they arrive. Keep it
    /// well below the process's file-descriptor limit.
    #[serde(default = "default_api_max_connections")]
    pub max_connections: Spanned<usize>,
    /// Open connections one client IP may hold.
    #[serde(default = "default_api_max_connections_per_client")]
    pub max_connections_per_client: Spanned<usize>,
    /// `/v1/stream` connections at most, in all and per client IP.
    #[serde(default = "default_api_max_streams")]
    pub max_streams: Spanned<usize>,
    #[serde(default = "default_api_max_streams_per_client")]
    pub max_streams_per_client: Spanned<usize>,
}

fn default_api_request_timeout() -> Spanned<ConfigDuration> {
    Spanned::new(0..0, ConfigDuration::from_millis(30_000))
}
fn default_api_header_read_timeout() -> Spanned<ConfigDuration> {
    Spanned::new(0..0, ConfigDuration::from_millis(10_000))
}
fn default_api_idle_timeout() -> Spanned<ConfigDuration> {
    Spanned::new(0..0, ConfigDuration::from_millis(60_000))
}
fn default_api_max_connections() -> Spanned<usize> {
    Spanned::new(0..0, 2_048)
}
fn default_api_max_connections_per_client() -> Spanned<usize> {
    Spanned::new(0..0, 256)
}
fn default_api_max_streams() -> Spanned<usize> {
    Spanned::new(0..0, 1_024)
}
fn default_api_max_streams_per_client() -> Spanned<usize> {
    Spanned::new(0..0, 16)
}

fn default_true() -> bool {
    true
}
fn default_api_listen() -> Spanned<String> {
    Spanned::new(0..0, "127.0.0.1:8080".to_string())
}

impl Default for ApiSection {
    fn default() -> Self {
        Self {
            enabled: true,
            listen: default_api_listen(),
            admin_token_env: None,
            admin_token_file: None,
            request_timeout: default_api_request_timeout(),
            header_read_timeout: default_api_header_read_timeout(),
            idle_timeout: default_api_idle_timeout(),
            max_connections: default_api_max_connections(),
            max_connections_per_client: default_api_max_connections_per_client(),
            max_streams: default_api_max_streams(),
            max_streams_per_client: default_api_max_streams_per_client(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreSection {
    /// SQLite database file (relative to `node.data_dir`).
    #[serde(default = "default_db")]
    pub path: PathBuf,
    /// How the signing ledger's commit reaches the disk: `"normal"` (the
    /// default; survives `kill -9`, the fsynced observation record covers
    /// power loss) or `"full"` (also fsyncs it, on every round's critical
    /// path). See `store::LedgerSync`.
    #[serde(default)]
    pub ledger_sync: crate::store::LedgerSync,
}

fn default_db() -> PathBuf {
    PathBuf::from("sibyl.db")
}

impl Default for StoreSection {
    fn default() -> Self {
        Self {
            path: default_db(),
            ledger_sync: crate::store::LedgerSync::default(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// JSON when stderr is not a terminal, text otherwise.
    #[default]
    Auto,
    Json,
    Text,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSection {
    /// `tracing` filter, e.g. `"info"` or `"info,sibyl_node::net=debug"`; `RUST_LOG` overrides it.
    #[serde(default = "default_level")]
    pub level: Spanned<String>,
    #[serde(default)]
    pub format: LogFormat,
}

fn default_level() -> Spanned<String> {
    Spanned::new(0..0, "info".to_string())
}

impl Default for LogSection {
    fn default() -> Self {
        Self {
            level: default_level(),
            format: LogFormat::Auto,
        }
    }
}

// ---------------------------------------------------------------------------
// Committee file (committee.toml)
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct CommitteeFile {
    threshold: Spanned<u16>,
    #[serde(default = "default_suites")]
    suites: Spanned<Vec<Suite>>,
    #[serde(default)]
    leader_seed: u64,
    #[serde(default)]
    round: RoundFile,
    #[serde(default)]
    members: Vec<Spanned<MemberFile>>,
    #[serde(default)]
    feeds: Vec<Spanned<FeedFile>>,
}

fn default_suites() -> Spanned<Vec<Suite>> {
    Spanned::new(0..0, vec![Suite::Ed25519])
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct MemberFile {
    index: Spanned<u16>,
    peer_id: Spanned<String>,
    address: Spanned<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct FeedFile {
    id: Spanned<String>,
    decimals: Spanned<u8>,
    #[serde(default = "default_deviation")]
    deviation_bps: Spanned<u32>,
    #[serde(default = "default_heartbeat")]
    heartbeat: Spanned<ConfigDuration>,
}

fn default_deviation() -> Spanned<u32> {
    Spanned::new(0..0, 50)
}
fn default_heartbeat() -> Spanned<ConfigDuration> {
    Spanned::new(0..0, ConfigDuration::from_millis(60_000))
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RoundFile {
    #[serde(default = "default_interval")]
    interval: Spanned<ConfigDuration>,
    #[serde(default = "default_observation_timeout")]
    observation_timeout: Spanned<ConfigDuration>,
    #[serde(default = "default_share_timeout")]
    share_timeout: Spanned<ConfigDuration>,
    #[serde(default = "default_round_timeout")]
    round_timeout: Spanned<ConfigDuration>,
    #[serde(default = "default_max_clock_skew")]
    max_clock_skew: Spanned<ConfigDuration>,
    #[serde(default = "default_max_observation_age")]
    max_observation_age: Spanned<ConfigDuration>,
}

fn default_interval() -> Spanned<ConfigDuration> {
    Spanned::new(0..0, ConfigDuration::from_millis(1000))
}
fn default_observation_timeout() -> Spanned<ConfigDuration> {
    Spanned::new(0..0, ConfigDuration::from_millis(200))
}
fn default_share_timeout() -> Spanned<ConfigDuration> {
    Spanned::new(0..0, ConfigDuration::from_millis(400))
}
fn default_max_observation_age() -> Spanned<ConfigDuration> {
    Spanned::new(0..0, ConfigDuration::from_millis(5000))
}
fn default_round_timeout() -> Spanned<ConfigDuration> {
    Spanned::new(0..0, ConfigDuration::from_millis(2000))
}
fn default_max_clock_skew() -> Spanned<ConfigDuration> {
    Spanned::new(0..0, ConfigDuration::from_millis(2000))
}

impl Default for RoundFile {
    fn default() -> Self {
        Self {
            interval: default_interval(),
            observation_timeout: default_observation_timeout(),
            share_timeout: default_share_timeout(),
            round_timeout: default_round_timeout(),
            max_clock_skew: default_max_clock_skew(),
            max_observation_age: default_max_observation_age(),
        }
    }
}

/// A committee member, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// FROST identifier, 1..=n.
    pub index: u16,
    pub peer_id: PeerId,
    /// Ed25519 identity public key (extracted from the PeerId).
    pub identity_key: [u8; 32],
    pub address: Multiaddr,
}

/// A feed's parameters, validated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FeedParams {
    pub id: FeedId,
    pub decimals: u8,
    /// Publish when the price moves by at least this many basis points...
    pub deviation_bps: u32,
    /// ...or when this much time has passed since the last published value.
    pub heartbeat_ms: u64,
}

/// Round timing, validated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct RoundTiming {
    /// Time between round starts.
    pub interval_ms: u64,
    /// How long the leader waits for more than `2f + 1` observations.
    pub observation_timeout_ms: u64,
    /// How long the leader waits for signature shares before retrying without the silent signers.
    pub share_timeout_ms: u64,
    /// Pacemaker: no signed report by then, move to the next round and leader.
    pub round_timeout_ms: u64,
    /// Largest accepted difference between a report's timestamp and our clock.
    pub max_clock_skew_ms: u64,
    /// Observations older than this (relative to the report timestamp) are left out.
    pub max_observation_age_ms: u64,
}

/// The committee file, validated. Identical on every member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Committee {
    pub threshold: u16,
    pub suites: Vec<Suite>,
    pub leader_seed: u64,
    pub round: RoundTiming,
    /// Sorted by index; `members[i].index == i + 1`.
    pub members: Vec<Member>,
    /// Sorted by feed id.
    pub feeds: Vec<FeedParams>,
    /// Hash of the canonical form; see the module docs.
    pub digest: ConfigDigest,
}

impl Committee {
    pub fn n(&self) -> u16 {
        self.members.len() as u16
    }

    /// Largest number of faulty members tolerated: `f = floor((n - 1) / 3)`.
    pub fn max_faulty(&self) -> u16 {
        max_faulty(self.n())
    }

    pub fn member(&self, index: u16) -> Option<&Member> {
        self.members.iter().find(|m| m.index == index)
    }

    pub fn member_by_peer(&self, peer: &PeerId) -> Option<&Member> {
        self.members.iter().find(|m| &m.peer_id == peer)
    }

    pub fn feed(&self, id: &FeedId) -> Option<&FeedParams> {
        self.feeds.iter().find(|f| &f.id == id)
    }

    /// The protocol's view of the members, feeds and timeouts.
    fn protocol_parts(
        &self,
    ) -> (
        Vec<sibyl_aggregator::round::committee::Member>,
        Vec<sibyl_aggregator::round::committee::FeedConfig>,
        sibyl_aggregator::round::committee::Timeouts,
    ) {
        use sibyl_aggregator::round::committee as pc;
        let members = self
            .members
            .iter()
            .map(|m| pc::Member {
                index: m.index,
                identity: m.identity_key,
            })
            .collect();
        let feeds = self
            .feeds
            .iter()
            .map(|f| pc::FeedConfig {
                id: f.id.clone(),
                decimals: f.decimals,
                deviation_bps: f.deviation_bps,
                heartbeat_ms: f.heartbeat_ms,
            })
            .collect();
        let t = &self.round;
        let timeouts = pc::Timeouts {
            observe_ms: t.observation_timeout_ms,
            share_ms: t.share_timeout_ms,
            round_ms: t.round_timeout_ms,
            round_interval_ms: t.interval_ms,
            max_clock_skew_ms: t.max_clock_skew_ms,
            max_observation_age_ms: t.max_observation_age_ms,
        };
        (members, feeds, timeouts)
    }

    /// The config digest (`sibyl_aggregator::round::committee::committee_digest`,
    /// docs/PROTOCOL.md "Config digest"); members' addresses are not in it.
    fn compute_digest(&self) -> ConfigDigest {
        let (members, feeds, timeouts) = self.protocol_parts();
        sibyl_aggregator::round::committee::committee_digest(
            self.threshold,
            &self.suites,
            self.leader_seed,
            &timeouts,
            &members,
            &feeds,
        )
    }

    /// Parses and validates a committee file's text. `file` is only used in messages.
    pub fn parse(file: &Path, src: &str) -> Result<Committee, ConfigError> {
        let mut report = Report::new(file, src);
        let raw: CommitteeFile = match toml::from_str(src) {
            Ok(raw) => raw,
            Err(e) => {
                report.toml_error(&e);
                return Err(ConfigError::Invalid(report.problems));
            }
        };
        match validate_committee(raw, &mut report) {
            Some(c) if report.problems.is_empty() => Ok(c),
            _ => Err(ConfigError::Invalid(report.problems)),
        }
    }

    pub fn load(path: &Path) -> Result<Committee, ConfigError> {
        let src = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(path, &src)
    }
}

impl Committee {
    /// The committee as the round protocol sees it.
    pub fn to_protocol(
        &self,
    ) -> Result<
        sibyl_aggregator::round::committee::Committee,
        sibyl_aggregator::round::committee::CommitteeError,
    > {
        use sibyl_aggregator::round::committee as pc;
        let (members, feeds, timeouts) = self.protocol_parts();
        pc::Committee::new(
            members,
            self.threshold,
            self.max_faulty(),
            self.leader_seed,
            feeds,
            self.digest,
            timeouts,
        )
    }
}

/// `f = floor((n - 1) / 3)`.
pub fn max_faulty(n: u16) -> u16 {
    n.saturating_sub(1) / 3
}

/// Extracts the Ed25519 public key a PeerId was derived from.
pub fn ed25519_key_of(peer: &PeerId) -> Option<[u8; 32]> {
    let mh: &multiaddr::multihash::Multihash<64> = peer.as_ref();
    if mh.code() != 0 {
        return None; // not an identity multihash: the key isn't inlined
    }
    let pk = libp2p_identity::PublicKey::try_decode_protobuf(mh.digest()).ok()?;
    pk.try_into_ed25519().ok().map(|k| k.to_bytes())
}

fn span<T>(s: &Spanned<T>) -> Option<Range<usize>> {
    let r = s.span();
    if r.start == 0 && r.end == 0 {
        None
    } else {
        Some(r)
    }
}

fn validate_committee(raw: CommitteeFile, r: &mut Report<'_>) -> Option<Committee> {
    // Members.
    let n = raw.members.len();
    if n == 0 {
        r.at(
            None,
            "members",
            "the committee has no members",
            "add one [[members]] table per member with index, peer_id and address",
        );
    }
    if n > MAX_MEMBERS {
        r.at(
            None,
            "members",
            format!("{n} members is more than the round protocol takes ({MAX_MEMBERS})"),
            format!("a committee has at most {MAX_MEMBERS} members"),
        );
    }
    let mut members = Vec::new();
    let mut seen_index = BTreeMap::new();
    let mut seen_peer = BTreeMap::new();
    let mut seen_addr = BTreeMap::new();
    for (i, m) in raw.members.iter().enumerate() {
        let m = m.get_ref();
        let key = |field: &str| format!("members[{i}].{field}");
        let index = *m.index.get_ref();
        if index == 0 || usize::from(index) > n {
            r.at(
                span(&m.index),
                key("index"),
                format!("index {index} is out of range"),
                format!("members are numbered 1..={n}, one index each"),
            );
        } else if let Some(prev) = seen_index.insert(index, i) {
            r.at(
                span(&m.index),
                key("index"),
                format!("index {index} is also used by members[{prev}]"),
                "give every member its own index 1..=n",
            );
        }
        let peer = match m.peer_id.get_ref().parse::<PeerId>() {
            Ok(p) => match ed25519_key_of(&p) {
                Some(k) => Some((p, k)),
                None => {
                    r.at(span(&m.peer_id), key("peer_id"), format!("{} is not the PeerId of an Ed25519 key", m.peer_id.get_ref()), "members use Ed25519 identity keys; their PeerIds start with 12D3KooW (see `sibyl keygen`)");
                    None
                }
            },
            Err(e) => {
                r.at(span(&m.peer_id), key("peer_id"), format!("{:?} is not a valid PeerId: {e}", m.peer_id.get_ref()), "copy the member's PeerId exactly as `sibyl keygen` printed it (starts with 12D3KooW)");
                None
            }
        };
        if let Some((p, _)) = &peer
            && let Some(prev) = seen_peer.insert(*p, i)
        {
            r.at(
                span(&m.peer_id),
                key("peer_id"),
                format!("PeerId is also used by members[{prev}]"),
                "every member needs its own identity key",
            );
        }
        let addr = match parse_member_address(m.address.get_ref()) {
            Ok(a) => Some(a),
            Err(msg) => {
                r.at(span(&m.address), key("address"), msg, "write it like \"/ip4/10.0.0.5/tcp/9000\" or \"/dns/node1.example.org/tcp/9000\"");
                None
            }
        };
        if let Some(a) = &addr
            && let Some(prev) = seen_addr.insert(a.clone(), i)
        {
            r.at(
                span(&m.address),
                key("address"),
                format!("address is also used by members[{prev}]"),
                "every member listens on its own address",
            );
        }
        if let (Some((peer_id, identity_key)), Some(address)) = (peer, addr) {
            members.push(Member {
                index,
                peer_id,
                identity_key,
                address,
            });
        }
    }
    members.sort_by_key(|m| m.index);

    // Threshold.
    let t = *raw.threshold.get_ref();
    if n > 0 && n <= usize::from(u16::MAX) {
        let n16 = n as u16;
        let f = max_faulty(n16);
        // Below 2f + 1, f faulty members plus honest ones could sign two
        // different reports in one round (two signer sets need not overlap
        // in an honest member).
        let lo = 2 * f + 1;
        let hi = n16 - f;
        if t < lo || t > hi || t == 0 {
            r.at(
                span(&raw.threshold),
                "threshold",
                format!("threshold {t} is outside {lo}..={hi} for n = {n} (tolerating f = {f} faulty members)"),
                format!("use t with 2f + 1 <= t <= n - f (below 2f + 1, f faulty members can get two different reports signed in one round); the usual choice is 2f + 1 = {}", 2 * f + 1),
            );
        }
    }

    // Suites.
    let mut suites = raw.suites.get_ref().clone();
    if suites.is_empty() {
        r.at(
            span(&raw.suites),
            "suites",
            "no signature suite",
            "use suites = [\"ed25519\"] or [\"ed25519\", \"secp256k1-evm\"]",
        );
    }
    let before = suites.len();
    suites.sort();
    suites.dedup();
    if suites.len() != before {
        r.at(
            span(&raw.suites),
            "suites",
            "a suite is listed twice",
            "list each suite once",
        );
    }

    // Round timing.
    let rt = &raw.round;
    let round = RoundTiming {
        interval_ms: rt.interval.get_ref().as_millis(),
        observation_timeout_ms: rt.observation_timeout.get_ref().as_millis(),
        share_timeout_ms: rt.share_timeout.get_ref().as_millis(),
        round_timeout_ms: rt.round_timeout.get_ref().as_millis(),
        max_clock_skew_ms: rt.max_clock_skew.get_ref().as_millis(),
        max_observation_age_ms: rt.max_observation_age.get_ref().as_millis(),
    };
    if round.share_timeout_ms == 0 {
        r.at(
            span(&rt.share_timeout),
            "round.share_timeout",
            "the share timeout is zero",
            "give signers time to answer, e.g. \"400ms\"",
        );
    }
    if round.max_observation_age_ms == 0 {
        r.at(
            span(&rt.max_observation_age),
            "round.max_observation_age",
            "the observation age limit is zero",
            "allow observations a few seconds old, e.g. \"5s\"",
        );
    }
    if round.interval_ms == 0 {
        r.at(
            span(&rt.interval),
            "round.interval",
            "the round interval is zero",
            "use at least \"50ms\"; \"250ms\" to \"1s\" is typical",
        );
    }
    // observation_timeout = 0 is allowed: the leader proposes as soon as it
    // holds 2f + 1 observations.
    if round.round_timeout_ms <= round.observation_timeout_ms {
        r.at(
            span(&rt.round_timeout),
            "round.round_timeout",
            format!("round_timeout ({}ms) must be longer than observation_timeout ({}ms)", round.round_timeout_ms, round.observation_timeout_ms),
            "the round must outlast the observation phase; e.g. observation_timeout = \"100ms\", round_timeout = \"1s\"",
        );
    }

    // Feeds.
    if raw.feeds.is_empty() {
        r.at(
            None,
            "feeds",
            "the committee has no feeds",
            "add a [[feeds]] table with id, decimals, deviation_bps and heartbeat",
        );
    }
    if raw.feeds.len() > MAX_FEEDS {
        r.at(
            None,
            "feeds",
            format!(
                "{} feeds is more than a report carries ({MAX_FEEDS})",
                raw.feeds.len()
            ),
            "split the feeds across committees",
        );
    }
    let mut feeds = Vec::new();
    let mut seen_feed: BTreeMap<FeedId, usize> = BTreeMap::new();
    for (i, f) in raw.feeds.iter().enumerate() {
        let f = f.get_ref();
        let key = |field: &str| format!("feeds[{i}].{field}");
        let id = match FeedId::new(f.id.get_ref().clone()) {
            Ok(id) => Some(id),
            Err(e) => {
                r.at(
                    span(&f.id),
                    key("id"),
                    e.to_string(),
                    "feed ids are 1..=32 characters of A-Z, 0-9, '-', '_', '.', like \"BTC-USD\"",
                );
                None
            }
        };
        if let Some(id) = &id
            && let Some(prev) = seen_feed.insert(id.clone(), i)
        {
            r.at(
                span(&f.id),
                key("id"),
                format!("feed {id} is also defined by feeds[{prev}]"),
                "define each feed once",
            );
        }
        let decimals = *f.decimals.get_ref();
        if decimals > MAX_DECIMALS {
            r.at(
                span(&f.decimals),
                key("decimals"),
                format!("{decimals} decimals is more than {MAX_DECIMALS}"),
                "8 or 18 decimals is typical",
            );
        }
        let dev = *f.deviation_bps.get_ref();
        if dev == 0 || dev > 10_000 {
            r.at(
                span(&f.deviation_bps),
                key("deviation_bps"),
                format!("deviation_bps {dev} is outside 1..=10000"),
                "a price move of this many basis points triggers an update; 50 (0.5%) is typical",
            );
        }
        let hb = f.heartbeat.get_ref().as_millis();
        if hb < round.interval_ms {
            r.at(span(&f.heartbeat), key("heartbeat"), format!("heartbeat ({hb}ms) is shorter than the round interval ({}ms)", round.interval_ms), "a feed can't be published more often than once a round; use a heartbeat of at least one interval");
        }
        if let Some(id) = id {
            feeds.push(FeedParams {
                id,
                decimals,
                deviation_bps: dev,
                heartbeat_ms: hb,
            });
        }
    }
    feeds.sort_by(|a, b| a.id.cmp(&b.id));
    feeds.dedup_by(|a, b| a.id == b.id);

    if !r.problems.is_empty() {
        return None;
    }
    let mut c = Committee {
        threshold: t,
        suites,
        leader_seed: raw.leader_seed,
        round,
        members,
        feeds,
        digest: ConfigDigest([0; 32]),
    };
    c.digest = c.compute_digest();
    Some(c)
}

/// A member address must be a dialable TCP multiaddr: `/ip4|ip6|dns|dns4|dns6/<host>/tcp/<port>`.
pub fn parse_member_address(s: &str) -> Result<Multiaddr, String> {
    let addr: Multiaddr = s
        .parse()
        .map_err(|e| format!("{s:?} is not a multiaddr: {e}"))?;
    let mut it = addr.iter();
    let host_ok = matches!(
        it.next(),
        Some(
            Protocol::Ip4(_)
                | Protocol::Ip6(_)
                | Protocol::Dns(_)
                | Protocol::Dns4(_)
                | Protocol::Dns6(_)
        )
    );
    let tcp_ok = matches!(it.next(), Some(Protocol::Tcp(_)));
    let rest_ok = match it.next() {
        None => true,
        // A trailing /p2p/<peer> is tolerated (it must match peer_id; checked by net).
        Some(Protocol::P2p(_)) => it.next().is_none(),
        _ => false,
    };
    if host_ok && tcp_ok && rest_ok {
        Ok(addr)
    } else {
        Err(format!(
            "{s:?} is not a TCP address (host then /tcp/<port>)"
        ))
    }
}

impl NodeConfig {
    /// Parses and validates node.toml's text alone (not the committee file it
    /// names; [`Config::load`] reads both). `file` is only used in messages.
    pub fn parse(file: &Path, src: &str) -> Result<NodeConfig, ConfigError> {
        match Self::parse_with_problems(file, src) {
            (Some(node), problems) if problems.is_empty() => Ok(node),
            (_, problems) => Err(ConfigError::Invalid(problems)),
        }
    }

    /// The parsed config if the TOML matches its shape, and every problem.
    fn parse_with_problems(file: &Path, src: &str) -> (Option<NodeConfig>, Vec<Problem>) {
        let mut report = Report::new(file, src);
        match toml::from_str::<NodeConfig>(src) {
            Ok(node) => {
                validate_node(&node, &mut report);
                (Some(node), report.problems)
            }
            Err(e) => {
                report.toml_error(&e);
                (None, report.problems)
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Loading node.toml with its committee
// ---------------------------------------------------------------------------

/// Everything `sibyl run` needs from the two files, with paths resolved.
#[derive(Debug, Clone)]
pub struct Config {
    pub node: NodeConfig,
    pub committee: Committee,
    pub node_path: PathBuf,
    pub committee_path: PathBuf,
    /// Directory of node.toml; relative paths are resolved against it.
    pub base_dir: PathBuf,
}

impl Config {
    /// Reads node.toml and the committee file it names, validating both.
    /// All problems of both files are returned together.
    pub fn load(node_path: &Path) -> Result<Config, ConfigError> {
        let src = std::fs::read_to_string(node_path).map_err(|source| ConfigError::Read {
            path: node_path.to_path_buf(),
            source,
        })?;
        let base_dir = node_path
            .parent()
            .map(Path::to_path_buf)
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or_else(|| PathBuf::from("."));
        let (node, mut problems) = NodeConfig::parse_with_problems(node_path, &src);
        let Some(mut node) = node else {
            return Err(ConfigError::Invalid(problems));
        };

        let committee_path = base_dir.join(node.node.committee.get_ref());
        let committee = match Committee::load(&committee_path) {
            Ok(c) => Some(c),
            Err(ConfigError::Invalid(ps)) => {
                problems.extend(ps);
                None
            }
            Err(ConfigError::Read { source, .. }) => {
                let (line, col) = line_col(&src, node.node.committee.span().start);
                problems.push(Problem {
                    file: node_path.to_path_buf(),
                    line,
                    col,
                    key: "node.committee".into(),
                    message: format!(
                        "cannot read committee file {}: {source}",
                        committee_path.display()
                    ),
                    hint: "the path is relative to node.toml's directory".into(),
                });
                None
            }
        };
        // Feed decimals are stated once, in the committee file: the sources take them from it.
        if let (Some(c), Some(sources)) = (&committee, node.sources.take()) {
            let decimals = c
                .feeds
                .iter()
                .map(|f| (f.id.as_str().to_string(), u32::from(f.decimals)))
                .collect();
            let sources = sources.with_decimals(decimals);
            let mut report = Report::new(node_path, &src);
            report_sources(sources.decimals_problems(), &mut report);
            problems.extend(report.problems);
            node.sources = Some(sources);
        }
        match committee {
            Some(committee) if problems.is_empty() => Ok(Config {
                node,
                committee,
                node_path: node_path.to_path_buf(),
                committee_path,
                base_dir,
            }),
            _ => Err(ConfigError::Invalid(problems)),
        }
    }

    /// Resolves a path from node.toml against node.toml's directory.
    pub fn resolve(&self, p: &Path) -> PathBuf {
        self.base_dir.join(p)
    }

    pub fn data_dir(&self) -> PathBuf {
        self.resolve(&self.node.node.data_dir)
    }

    pub fn db_path(&self) -> PathBuf {
        self.data_dir().join(&self.node.store.path)
    }

    pub fn identity_path(&self) -> PathBuf {
        self.resolve(&self.node.keys.identity)
    }

    pub fn key_package_path(&self) -> PathBuf {
        self.resolve(&self.node.keys.key_package)
    }

    pub fn public_key_package_path(&self) -> PathBuf {
        self.resolve(&self.node.keys.public_key_package)
    }

    /// The API's socket address (validated at load).
    pub fn api_listen(&self) -> std::net::SocketAddr {
        self.node
            .api
            .listen
            .get_ref()
            .parse()
            .unwrap_or_else(|_| std::net::SocketAddr::from(([127, 0, 0, 1], 8080)))
    }

    /// Reads the key passphrase from the configured environment variable or file.
    /// The passphrase is never logged or put in an error.
    pub fn passphrase(&self) -> Result<String, PassphraseError> {
        let keys = &self.node.keys;
        if let Some(var) = &keys.passphrase_env {
            return std::env::var(var.get_ref())
                .map_err(|_| PassphraseError::EnvMissing(var.get_ref().clone()));
        }
        if let Some(file) = &keys.passphrase_file {
            let path = self.resolve(file.get_ref());
            let text = std::fs::read_to_string(&path)
                .map_err(|e| PassphraseError::File(path.clone(), e))?;
            let line = text.lines().next().unwrap_or("").to_string();
            if line.is_empty() {
                return Err(PassphraseError::Empty(path));
            }
            return Ok(line);
        }
        Err(PassphraseError::NotConfigured)
    }
}

impl Config {
    /// The admin token, if one is configured. `Ok(None)`: admin endpoints are disabled.
    pub fn admin_token(&self) -> Result<Option<String>, PassphraseError> {
        let api = &self.node.api;
        if let Some(var) = &api.admin_token_env {
            return std::env::var(var.get_ref())
                .map(Some)
                .map_err(|_| PassphraseError::EnvMissing(var.get_ref().clone()));
        }
        if let Some(file) = &api.admin_token_file {
            let path = self.resolve(file.get_ref());
            let text = std::fs::read_to_string(&path)
                .map_err(|e| PassphraseError::File(path.clone(), e))?;
            let line = text.lines().next().unwrap_or("").trim().to_string();
            if line.is_empty() {
                return Err(PassphraseError::Empty(path));
            }
            return Ok(Some(line));
        }
        Ok(None)
    }
}

/// A secret (key passphrase or admin token) could not be read. Never carries the secret.
#[derive(Debug, thiserror::Error)]
pub enum PassphraseError {
    #[error(
        "environment variable {0} (named in node.toml) is not set; export it before starting the node"
    )]
    EnvMissing(String),
    #[error("cannot read secret file {} (named in node.toml): {}", .0.display(), .1)]
    File(PathBuf, #[source] std::io::Error),
    #[error("secret file {} (named in node.toml) is empty", .0.display())]
    Empty(PathBuf),
    #[error(
        "no key passphrase configured; set keys.passphrase_env or keys.passphrase_file in node.toml"
    )]
    NotConfigured,
}

fn validate_api_limits(api: &ApiSection, r: &mut Report<'_>) {
    for (key, d, hint) in [
        ("api.request_timeout", &api.request_timeout, "e.g. \"30s\""),
        (
            "api.header_read_timeout",
            &api.header_read_timeout,
            "e.g. \"10s\"",
        ),
        ("api.idle_timeout", &api.idle_timeout, "e.g. \"60s\""),
    ] {
        if d.get_ref().0.is_zero() {
            r.at(span(d), key, "the timeout is zero", hint);
        } else if d.get_ref().0 > Duration::from_secs(86_400) {
            r.at(
                span(d),
                key,
                format!("{} is longer than a day", d.get_ref()),
                hint,
            );
        }
    }
    let (conns, streams, per_client) = (
        *api.max_connections.get_ref(),
        *api.max_streams.get_ref(),
        *api.max_streams_per_client.get_ref(),
    );
    if conns == 0 || conns > 1_000_000 {
        r.at(
            span(&api.max_connections),
            "api.max_connections",
            format!("{conns} is outside 1..=1000000"),
            "use a few thousand, well below the file-descriptor limit (e.g. 2048 with LimitNOFILE=65536)",
        );
    }
    let conns_per_client = *api.max_connections_per_client.get_ref();
    if conns_per_client == 0 || conns_per_client > conns {
        r.at(
            span(&api.max_connections_per_client),
            "api.max_connections_per_client",
            format!("{conns_per_client} is outside 1..=max_connections ({conns})"),
            "a few hundred lets one client keep many connections without crowding out others, e.g. 256; behind a reverse proxy every client has the proxy's IP",
        );
    }
    if streams >= conns {
        r.at(
            span(&api.max_streams),
            "api.max_streams",
            format!("max_streams ({streams}) must be below max_connections ({conns})"),
            "streams hold their connections; leave room for other requests, e.g. max_streams = max_connections / 2",
        );
    }
    if per_client == 0 || per_client > streams {
        r.at(
            span(&api.max_streams_per_client),
            "api.max_streams_per_client",
            format!("{per_client} is outside 1..=max_streams ({streams})"),
            "a client needs only a few streams, e.g. 16",
        );
    }
}

/// The `[sources]` problems, each at its key's line in node.toml.
fn report_sources(problems: Vec<sibyl_feeds::config::Problem>, r: &mut Report<'_>) {
    for p in problems {
        let key = format!("sources.{}", p.key);
        let at = sibyl_feeds::config::locate(r.src, &key);
        r.at(at, key, p.message, p.hint);
    }
}

fn validate_node(n: &NodeConfig, r: &mut Report<'_>) {
    if let Some(sources) = &n.sources {
        report_sources(sources.section_problems(), r);
    }
    match (&n.keys.passphrase_env, &n.keys.passphrase_file) {
        (Some(a), Some(_)) => r.at(span(a), "keys.passphrase_env", "both passphrase_env and passphrase_file are set", "keep one: the passphrase comes from exactly one place"),
        (None, None) => r.at(None, "keys", "no key passphrase source", "set keys.passphrase_env = \"SIBYL_KEY_PASSPHRASE\" or keys.passphrase_file = \"/run/secrets/sibyl-passphrase\""),
        (Some(v), None) => {
            let name = v.get_ref();
            if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
                r.at(span(v), "keys.passphrase_env", format!("{name:?} is not an environment variable name"), "use letters, digits and '_', e.g. \"SIBYL_KEY_PASSPHRASE\"");
            }
        }
        (None, Some(_)) => {}
    }
    if let Some(l) = &n.net.listen
        && let Err(msg) = parse_member_address(l.get_ref())
    {
        r.at(span(l), "net.listen", msg, "write it like \"/ip4/0.0.0.0/tcp/9000\", or leave it out to listen on this member's committee address");
    }
    if n.net.max_message_bytes < 1024 || n.net.max_message_bytes > 64 << 20 {
        r.at(
            None,
            "net.max_message_bytes",
            format!("{} is outside 1024..=67108864", n.net.max_message_bytes),
            "1048576 (1 MiB) fits reports with thousands of feeds",
        );
    }
    if n.net.rate_limit_per_peer == 0 {
        r.at(
            None,
            "net.rate_limit_per_peer",
            "a rate limit of 0 drops every message",
            "use at least a few messages per round, e.g. 200",
        );
    }
    if n.api
        .listen
        .get_ref()
        .parse::<std::net::SocketAddr>()
        .is_err()
    {
        r.at(
            span(&n.api.listen),
            "api.listen",
            format!("{:?} is not a socket address", n.api.listen.get_ref()),
            "write it like \"127.0.0.1:8080\" or \"0.0.0.0:8080\"",
        );
    }
    if let (Some(a), Some(_)) = (&n.api.admin_token_env, &n.api.admin_token_file) {
        r.at(
            span(a),
            "api.admin_token_env",
            "both admin_token_env and admin_token_file are set",
            "keep one: the token comes from exactly one place",
        );
    }
    if let Some(v) = &n.api.admin_token_env {
        let name = v.get_ref();
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            r.at(
                span(v),
                "api.admin_token_env",
                format!("{name:?} is not an environment variable name"),
                "use letters, digits and '_', e.g. \"SIBYL_ADMIN_TOKEN\"",
            );
        }
    }
    validate_api_limits(&n.api, r);
    if let Some(c) = &n.chain {
        let url = c.rpc_url.get_ref();
        if !(url.starts_with("http://") || url.starts_with("https://")) || url.len() < 10 {
            r.at(
                span(&c.rpc_url),
                "chain.rpc_url",
                format!("{url:?} is not an http(s) URL"),
                "write it like \"http://127.0.0.1:8545\"",
            );
        }
        let addr = c.contract.get_ref();
        let hex_ok = addr.len() == 42
            && addr.starts_with("0x")
            && addr[2..].bytes().all(|b| b.is_ascii_hexdigit());
        if !hex_ok {
            r.at(
                span(&c.contract),
                "chain.contract",
                format!("{addr:?} is not an address"),
                "write 0x followed by 40 hex digits",
            );
        }
        if c.chain_id == 0 {
            r.at(
                None,
                "chain.chain_id",
                "chain id 0 is not a chain",
                "use the EIP-155 id of your chain, e.g. 31337 for anvil",
            );
        }
        if c.max_fee_gwei == 0 || c.max_priority_fee_gwei > c.max_fee_gwei {
            r.at(
                None,
                "chain.max_fee_gwei",
                format!(
                    "max_fee_gwei = {} with max_priority_fee_gwei = {}: the fee cap must be positive and at least the tip cap",
                    c.max_fee_gwei, c.max_priority_fee_gwei
                ),
                "e.g. max_fee_gwei = 200 and max_priority_fee_gwei = 2",
            );
        }
    }
    let nice = *n.node.background_nice.get_ref();
    if nice > 19 {
        r.at(
            span(&n.node.background_nice),
            "node.background_nice",
            format!("{nice} is not a nice value"),
            "use 0 (no preference) to 19 (background threads yield the most); the default is 10",
        );
    }
    if n.log.level.get_ref().contains('{') {
        // Field values in a filter are compiled into regular-expression
        // automata, which can take seconds to minutes for a crafted value.
        r.at(
            span(&n.log.level),
            "log.level",
            "field filters (`[span{field=value}]`) are not taken from node.toml",
            "use a level (error, warn, info, debug, trace) or \"info,sibyl_node::net=debug\"; set RUST_LOG for field filters",
        );
    } else if let Err(e) = tracing_subscriber::EnvFilter::try_new(n.log.level.get_ref()) {
        r.at(
            span(&n.log.level),
            "log.level",
            format!("{:?} is not a log filter: {e}", n.log.level.get_ref()),
            "use a level (error, warn, info, debug, trace) or \"info,sibyl_node::net=debug\"",
        );
    }
}

/// `sibyl config check`: prints OK with a summary, or every problem.
pub fn check_command(path: &Path) -> anyhow::Result<()> {
    match Config::load(path) {
        Ok(c) => {
            let set: BTreeSet<_> = c
                .committee
                .suites
                .iter()
                .map(|s| format!("{s:?}"))
                .collect();
            println!(
                "OK: {} (committee {}: {} members, threshold {}, {} feeds, suites {:?}, round interval {}ms)\nconfig digest 0x{}",
                path.display(),
                c.committee_path.display(),
                c.committee.n(),
                c.committee.threshold,
                c.committee.feeds.len(),
                set,
                c.committee.round.interval_ms,
                hex::encode(c.committee.digest.0)
            );
            Ok(())
        }
        Err(ConfigError::Invalid(ps)) => {
            for p in &ps {
                println!("{p}");
            }
            anyhow::bail!("{} problem(s) found", ps.len())
        }
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests;
