//! `sibyl gateway`: follow members, verify, store in PostgreSQL, serve the
//! public API (the `sibyl-gateway` crate does the work; this parses the
//! command line and the committee file).

use anyhow::{Context, Result, bail};
use sibyl_aggregator::Suite;
use sibyl_aggregator::verify::GroupKeys;
use sibyl_api::{ApiLimits, CommitteeStatus, FeedInfo, MemberStatus};
use std::net::SocketAddr;
use std::path::PathBuf;

/// Arguments of `sibyl gateway`.
#[derive(Debug, clap::Args)]
pub struct GatewayArgs {
    /// The committee file: its digest must match every report's, and its
    /// feeds give decimals, deviation and heartbeat.
    #[arg(long)]
    pub committee: PathBuf,
    /// A group key to verify reports against, `[SUITE:]HEX` (suite
    /// `ed25519`, the default, or `secp256k1-evm`); repeat for a committee
    /// that signs with both. Every suite given must verify.
    #[arg(long = "group-key", required = true)]
    pub group_keys: Vec<String>,
    /// A member's API base URL to follow (repeat: any one may go away).
    #[arg(long = "follow", required = true)]
    pub follow: Vec<String>,
    /// PostgreSQL connection string (libpq form), e.g.
    /// "host=/run/postgresql dbname=sibyl user=sibyl".
    #[arg(long, env = "SIBYL_GATEWAY_POSTGRES")]
    pub postgres: String,
    /// Where to serve the API.
    #[arg(long, default_value = "127.0.0.1:8090")]
    pub listen: SocketAddr,
    /// Per-client request rate limit (requests/s; 0 turns it off, e.g.
    /// behind a load balancer that limits clients itself).
    #[arg(long, default_value_t = 100)]
    pub requests_per_second: u32,
}

fn parse_key(spec: &str) -> Result<(Suite, Vec<u8>)> {
    let (suite, hex_key) = match spec.split_once(':') {
        Some(("ed25519", k)) => (Suite::Ed25519, k),
        Some(("secp256k1-evm", k)) => (Suite::Secp256k1Evm, k),
        Some((other, _)) => {
            bail!("unknown suite {other:?} in --group-key; use ed25519 or secp256k1-evm")
        }
        None => (Suite::Ed25519, spec),
    };
    let key = hex::decode(hex_key.trim().trim_start_matches("0x"))
        .with_context(|| format!("--group-key {spec:?}: the key is not hex"))?;
    Ok((suite, key))
}

/// `sibyl gateway` entry point.
pub fn run(args: GatewayArgs) -> Result<()> {
    let committee = sibyl_node::config::Committee::load(&args.committee)?;
    let mut keys = GroupKeys::new(committee.digest);
    for spec in &args.group_keys {
        let (suite, key) = parse_key(spec)?;
        keys = keys
            .with_key_bytes(suite, &key)
            .map_err(|e| anyhow::anyhow!("--group-key {spec:?} is not a valid key: {e}"))?;
    }
    let feeds = committee
        .feeds
        .iter()
        .map(|f| (f.id.clone(), FeedInfo::of(f)))
        .collect();
    let status = CommitteeStatus {
        threshold: committee.threshold,
        self_index: 0,
        members: committee
            .members
            .iter()
            .map(|m| MemberStatus {
                index: m.index,
                peer_id: m.peer_id.to_string(),
                ..MemberStatus::default()
            })
            .collect(),
        ..CommitteeStatus::default()
    };
    let limits = ApiLimits {
        requests_per_second: args.requests_per_second,
        ..ApiLimits::default()
    };
    init_logging();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    rt.block_on(async move {
        let config = sibyl_gateway::GatewayConfig {
            members: args.follow,
            postgres: args.postgres,
            listen: args.listen,
            keys,
            feeds,
            committee: status,
            limits,
        };
        tokio::select! {
            r = sibyl_gateway::run(config) => r.map_err(anyhow::Error::from),
            () = super::run::wait_for_signal() => Ok(()),
        }
    })
}

/// `RUST_LOG` (default `info`); JSON when stderr is not a terminal.
fn init_logging() {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = if std::io::stderr().is_terminal() {
        builder.try_init()
    } else {
        builder.json().try_init()
    };
}
