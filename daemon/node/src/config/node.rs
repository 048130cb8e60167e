//! `node.toml`: its sections, defaults and validation.

use super::*;

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
    /// Store an engine snapshot every this many rounds (rounds that are a
    /// multiple of it); a restart loads the latest and replays only the
    /// inputs after it. Absent: `DEFAULT_SNAPSHOT_EVERY_ROUNDS`; 0: never.
    #[serde(default)]
    pub snapshot_every_rounds: Option<u64>,
}

/// Snapshot period when `[margin] snapshot_every_rounds` is absent: about
/// four minutes of 250 ms rounds.
pub const DEFAULT_SNAPSHOT_EVERY_ROUNDS: u64 = 1_000;

impl MarginSection {
    /// The snapshot period in rounds (0 = never).
    pub fn snapshot_every_rounds(&self) -> u64 {
        self.snapshot_every_rounds
            .unwrap_or(DEFAULT_SNAPSHOT_EVERY_ROUNDS)
    }
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

pub(crate) fn default_stagger() -> ConfigDuration {
    ConfigDuration::from_millis(2000)
}

pub(crate) fn default_max_fee_gwei() -> u64 {
    200
}

pub(crate) fn default_max_priority_fee_gwei() -> u64 {
    2
}

pub(crate) fn default_replace_after() -> ConfigDuration {
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

pub(crate) fn default_background_nice() -> Spanned<u8> {
    Spanned::new(0..0, 10)
}

pub(crate) fn default_data_dir() -> PathBuf {
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
    /// Refresh the key shares inside `sibyl run` at every multiple of this
    /// (unix time, so every member starts together), e.g. "24h". Unset: only
    /// on demand (`POST /v1/node/keys/refresh`). At least 10 s.
    #[serde(default)]
    pub refresh_every: Option<Spanned<ConfigDuration>>,
}

pub(crate) fn default_identity() -> PathBuf {
    PathBuf::from("keys/identity.key")
}
pub(crate) fn default_key_package() -> PathBuf {
    PathBuf::from("keys/frost.key")
}
pub(crate) fn default_public_key_package() -> PathBuf {
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
            refresh_every: None,
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

pub(crate) fn default_max_message_bytes() -> usize {
    1 << 20
}
pub(crate) fn default_rate_limit() -> u32 {
    200
}
pub(crate) fn default_redial() -> ConfigDuration {
    ConfigDuration::from_millis(1000)
}
pub(crate) fn default_request_timeout() -> ConfigDuration {
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
    /// `false`: serve only `/healthz`, `/metrics`, the admin routes, the
    /// node's own routes and the signed reports gateways follow
    /// (`/v1/stream`, `/v1/reports*`): a member whose public API gateways serve.
    #[serde(default = "default_true")]
    pub public: bool,
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

pub(crate) fn default_api_request_timeout() -> Spanned<ConfigDuration> {
    Spanned::new(0..0, ConfigDuration::from_millis(30_000))
}
pub(crate) fn default_api_header_read_timeout() -> Spanned<ConfigDuration> {
    Spanned::new(0..0, ConfigDuration::from_millis(10_000))
}
pub(crate) fn default_api_idle_timeout() -> Spanned<ConfigDuration> {
    Spanned::new(0..0, ConfigDuration::from_millis(60_000))
}
pub(crate) fn default_api_max_connections() -> Spanned<usize> {
    Spanned::new(0..0, 2_048)
}
pub(crate) fn default_api_max_connections_per_client() -> Spanned<usize> {
    Spanned::new(0..0, 256)
}
pub(crate) fn default_api_max_streams() -> Spanned<usize> {
    Spanned::new(0..0, 1_024)
}
pub(crate) fn default_api_max_streams_per_client() -> Spanned<usize> {
    Spanned::new(0..0, 16)
}

pub(crate) fn default_true() -> bool {
    true
}
pub(crate) fn default_api_listen() -> Spanned<String> {
    Spanned::new(0..0, "127.0.0.1:8080".to_string())
}

impl Default for ApiSection {
    fn default() -> Self {
        Self {
            enabled: true,
            public: true,
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

pub(crate) fn default_db() -> PathBuf {
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

pub(crate) fn default_level() -> Spanned<String> {
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
    pub(crate) fn parse_with_problems(
        file: &Path,
        src: &str,
    ) -> (Option<NodeConfig>, Vec<Problem>) {
        let mut report = Report::new(file, src);
        match toml::from_str::<NodeConfig>(src) {
            Ok(node) => {
                validate_node(&node, &mut report);
                (Some(node), report.problems)
            }
            Err(e) => {
                report.toml_errors(&e);
                (None, report.problems)
            }
        }
    }
}

pub(crate) fn validate_api_limits(api: &ApiSection, r: &mut Report<'_>) {
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
pub(crate) fn report_sources(problems: Vec<sibyl_feeds::config::Problem>, r: &mut Report<'_>) {
    for p in problems {
        let key = format!("sources.{}", p.key);
        let at = sibyl_feeds::config::locate(r.src, &key);
        r.at(at, key, p.message, p.hint);
    }
}

pub(crate) fn validate_node(n: &NodeConfig, r: &mut Report<'_>) {
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
    if let Some(every) = &n.keys.refresh_every
        && every.get_ref().0 < Duration::from_secs(10)
    {
        r.at(
            span(every),
            "keys.refresh_every",
            format!("{:?} is shorter than 10 s", every.get_ref().0),
            "a refresh takes a few seconds across the committee; use e.g. \"24h\"",
        );
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
