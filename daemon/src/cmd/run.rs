//! `sibyl run --config node.toml`: wire a member together and run it until
//! Ctrl-C or SIGTERM.
//!
//! ```text
//!   node.toml + committee.toml ─► Config ─┬─► keystore (identity, FROST keys)
//!                                         ├─► Store (SQLite WAL) ─► restore
//!                                         ├─► Net (libp2p)
//!                                         ├─► observations (feeds | built-in)
//!                                         └─► Driver::run (the one event loop)
//! ```

use super::transport::{Transport, TransportEvent};
use super::{Driver, DriverParts, ReportSink, StatusHandle, observed, restore_from, source};
use crate::config::Config;
use crate::keystore::{Keystore, Passphrase};
use crate::net::{Limits, Net, NetConfig, NetEvent};
use crate::store::Store;
use anyhow::{Context, Result, bail};
use sibyl_aggregator::round::{Node, NodeKeys, SibylSuite};
use sibyl_aggregator::verify::{GroupKeys, verify_report};
use sibyl_aggregator::{SignedReport, Suite};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{broadcast, watch};

/// Arguments of `sibyl run`.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// The node configuration (it names the committee file).
    #[arg(long)]
    pub config: PathBuf,
}

impl Transport for Net {
    async fn next_event(&mut self) -> TransportEvent {
        match Net::next_event(self).await {
            NetEvent::Message { from, bytes } => TransportEvent::Message { from, bytes },
            NetEvent::Report { from, bytes } => TransportEvent::Report { from, bytes },
            NetEvent::PeerConnected(p) => TransportEvent::PeerConnected(p),
            NetEvent::PeerDisconnected(p) => TransportEvent::PeerDisconnected(p),
            NetEvent::Dropped { reason, .. } => TransportEvent::Dropped {
                reason: reason.as_str(),
            },
        }
    }

    fn send(&mut self, to: u16, bytes: Vec<u8>) -> Result<(), String> {
        Net::send(self, to, bytes).map_err(|e| e.to_string())
    }

    fn broadcast(&mut self, bytes: Vec<u8>) -> Result<(), String> {
        Net::broadcast(self, bytes).map_err(|e| e.to_string())
    }

    fn publish_report(&mut self, bytes: Vec<u8>) -> Result<(), String> {
        Net::publish_report(self, bytes).map_err(|e| e.to_string())
    }

    fn flush(&mut self) {
        Net::flush(self);
    }

    fn last_seen_ms(&self) -> std::collections::BTreeMap<u16, u64> {
        let now = std::time::Instant::now();
        let now_ms = crate::store::now_ms();
        self.last_seen()
            .iter()
            .map(|(&index, &at)| {
                let ago = u64::try_from(now.saturating_duration_since(at).as_millis())
                    .unwrap_or(u64::MAX);
                (index, now_ms.saturating_sub(ago))
            })
            .collect()
    }
}

/// Installs the tracing subscriber: `RUST_LOG` or `log.level`; JSON when
/// stderr is not a terminal (or `log.format = "json"`).
pub fn init_logging(config: &Config) {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(config.node.log.level.get_ref()))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let json = match config.node.log.format {
        crate::config::LogFormat::Json => true,
        crate::config::LogFormat::Text => false,
        crate::config::LogFormat::Auto => !std::io::stderr().is_terminal(),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}

/// `sibyl run` entry point.
pub fn run(args: RunArgs) -> Result<()> {
    let config = Config::load(&args.config)?;
    init_logging(&config);
    crate::priority::set_background_nice(*config.node.node.background_nice.get_ref());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(worker_threads())
        .on_thread_start(crate::priority::enter_background)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    rt.block_on(async move {
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        tokio::spawn(async move {
            wait_for_signal().await;
            tracing::info!("shutting down");
            let _ = shutdown_tx.send(true);
        });
        run_node(config, shutdown_rx, |_| {}).await
    })
}

/// Async worker threads for the sources, API and margin engine:
/// `SIBYL_WORKER_THREADS` (1..=64), default 2. The round driver and the
/// network have their own thread either way ([`run_on_round_thread`]).
fn worker_threads() -> usize {
    std::env::var("SIBYL_WORKER_THREADS")
        .ok()
        .and_then(|v| v.trim().parse::<usize>().ok())
        .filter(|n| (1..=64).contains(n))
        .unwrap_or(2)
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Runs one member until `shutdown` turns true. `on_start` receives the
/// driver's status handle once everything is up.
pub async fn run_node(
    config: Config,
    shutdown: watch::Receiver<bool>,
    on_start: impl FnOnce(StatusHandle),
) -> Result<()> {
    let suites = &config.committee.suites;
    if suites.contains(&Suite::Ed25519) {
        if suites.len() > 1 {
            tracing::warn!(
                "the committee lists several suites; this build signs with ed25519 only"
            );
        }
        run_suite::<frost_ed25519::Ed25519Sha512>(config, shutdown, on_start).await
    } else {
        run_suite::<frost_secp256k1_evm::Secp256K1Keccak256>(config, shutdown, on_start).await
    }
}

/// The key passphrase node.toml's `[keys]` names (environment or file).
pub(crate) fn passphrase(config: &Config) -> Result<Passphrase> {
    let keys = &config.node.keys;
    if let Some(var) = &keys.passphrase_env {
        return Ok(Passphrase::from_env(var.get_ref())?);
    }
    if let Some(file) = &keys.passphrase_file {
        return Ok(Passphrase::from_file(&config.resolve(file.get_ref()))?);
    }
    bail!(
        "no key passphrase configured; set keys.passphrase_env or keys.passphrase_file in node.toml"
    )
}

async fn run_suite<C: SibylSuite + Send + 'static>(
    config: Config,
    shutdown: watch::Receiver<bool>,
    on_start: impl FnOnce(StatusHandle),
) -> Result<()>
where
    C::Group: Send,
{
    let committee = &config.committee;
    let digest = committee.digest;
    let pass = passphrase(&config)?;
    let keystore = Keystore::from_config(&config);
    let identity = keystore.read_identity(&pass)?;
    let peer_id = identity.public().to_peer_id();
    let me = committee
        .member_by_peer(&peer_id)
        .with_context(|| {
            format!(
                "this node's identity {peer_id} (from {}) is not a member of the committee in {}; check [keys] in node.toml and the committee file",
                config.identity_path().display(),
                config.committee_path.display()
            )
        })?
        .clone();
    let key_package = keystore.read_key_package::<C>(&digest, &pass)?;
    let public_key_package = keystore.read_public_key_package::<C>(&digest)?;
    let seed: [u8; 32] = identity
        .clone()
        .try_into_ed25519()
        .map_err(|_| anyhow::anyhow!("the identity key is not an ed25519 key"))?
        .secret()
        .as_ref()
        .try_into()
        .map_err(|_| anyhow::anyhow!("the identity key's secret is not 32 bytes"))?;

    let data_dir = config.data_dir();
    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("cannot create the data directory {}", data_dir.display()))?;
    let store = Store::open_with(&config.db_path(), config.node.store.ledger_sync)?;
    let observed = observed::ObservationLedger::open(&data_dir.join("observed-round"))?;
    let restore = restore_from(&store.readers, &observed)?;
    let last_report_round = restore.last_report_round;

    let group_key = public_key_package
        .verifying_key()
        .serialize()
        .map_err(|e| anyhow::anyhow!("cannot encode the group key: {e}"))?;
    let group_keys = GroupKeys::new(digest).with_key_bytes(C::SUITE, &group_key)?;
    let protocol = Arc::new(committee.to_protocol()?);
    let round_interval = Duration::from_millis(protocol.timeouts().round_interval_ms);
    let node = Node::<C>::new(
        protocol,
        me.index,
        NodeKeys {
            identity_seed: seed,
            key_package,
            public_key_package,
        },
        restore,
    )?;

    let validator_keys = group_keys.clone();
    let api_group_keys = group_keys.clone();
    let validator: crate::net::ReportValidator = Arc::new(move |bytes: &[u8]| {
        SignedReport::decode_expecting(bytes, &digest)
            .ok()
            .is_some_and(|r| verify_report(&r, &validator_keys).is_ok())
    });
    let net_cfg = &config.node.net;
    let listen = match &net_cfg.listen {
        Some(l) => {
            crate::config::parse_member_address(l.get_ref()).map_err(|e| anyhow::anyhow!(e))?
        }
        None => me.address.clone(),
    };
    let limits = Limits {
        max_message_bytes: net_cfg.max_message_bytes,
        rate_per_sec: net_cfg.rate_limit_per_peer,
        burst: net_cfg.rate_limit_per_peer.saturating_mul(2),
        redial_min: Duration::from_millis(250).min(net_cfg.redial_interval.0),
        redial_max: net_cfg.redial_interval.0.max(Duration::from_millis(250)),
        request_timeout: net_cfg.request_timeout.0,
        ..Limits::default()
    }
    .with_byte_budget(
        committee.members.len(),
        committee.feeds.len(),
        round_interval,
    );
    let net = Net::new(NetConfig {
        listen,
        identity,
        members: committee
            .members
            .iter()
            .map(|m| crate::net::Member {
                index: m.index,
                peer_id: m.peer_id,
                addr: m.address.clone(),
            })
            .collect(),
        limits,
        report_validator: Some(validator),
    })?;

    let mut registry = prometheus_client::registry::Registry::default();
    net.register_metrics(&mut registry);
    let observations = match &config.node.sources {
        Some(value) => {
            let text = toml::to_string(value).context("cannot re-encode the [sources] section")?;
            let sources = sibyl_feeds::SourcesConfig::from_toml(&text)
                .map_err(|e| anyhow::anyhow!("[sources] in {}: {e}", config.node_path.display()))?;
            let service = sibyl_feeds::FeedService::start(sources, &mut registry)
                .map_err(|e| anyhow::anyhow!("cannot start the price sources: {e}"))?;
            source::from_feed_service(service, committee.feeds.clone())
        }
        None => {
            tracing::warn!(
                "no [sources] in node.toml: observing the built-in deterministic source (devnet/tests only)"
            );
            source::builtin(committee.feeds.clone())
        }
    };

    let (reports_tx, _) = broadcast::channel::<Arc<SignedReport>>(256);
    let sink = ReportSink::start(store.writer.clone(), reports_tx.clone());
    // The on-chain transmitter pushes the verified reports when node.toml has [chain].
    let _transmitter = crate::chain::start_transmitter(
        &config,
        me.index,
        &api_group_keys,
        reports_tx.subscribe(),
        &mut registry,
        shutdown.clone(),
    )
    .await
    .context("cannot start the on-chain transmitter")?;
    // The margin engine consumes the verified reports the sink broadcasts
    // (always on; it starts with an empty book unless the store has inputs).
    // Held until the driver stops: dropping the handle stops the service.
    let margin_cfg = &config.node.margin;
    let margin = crate::margin_svc::start_with(
        &store,
        committee.feeds.clone(),
        reports_tx.subscribe(),
        shutdown.clone(),
        crate::margin_svc::MarginOptions {
            demo: (margin_cfg.demo_accounts > 0).then_some(crate::margin_svc::DemoSeed {
                accounts: margin_cfg.demo_accounts,
                seed: margin_cfg.demo_seed,
            }),
        },
    )
    .await
    .context("cannot start the margin engine")?;
    margin.register_metrics(&mut registry);
    #[cfg(feature = "fault-injection")]
    let node = crate::node::fault::apply(node);
    let driver = Driver::new(
        DriverParts {
            node,
            transport: net,
            ledger: store.signing_ledger()?,
            store: store.clone(),
            group_keys,
            observations,
            sink,
            observed,
            rng: rand::rngs::OsRng,
            shutdown,
        },
        last_report_round,
    );
    driver.register_metrics(&mut registry);
    let status = driver.status();
    tracing::info!(
        member = me.index,
        peer_id = %peer_id,
        config_digest = %hex::encode(digest.0),
        db = %config.db_path().display(),
        "member starting"
    );
    on_start(status.clone());
    super::api::serve_if_enabled(
        &config,
        store,
        reports_tx,
        status,
        registry,
        margin.clone(),
        &api_group_keys,
    )
    .await?;
    run_on_round_thread(driver).await?;
    drop(margin);
    Ok(())
}

/// Runs the round driver on a thread of its own with a single-threaded
/// runtime. The libp2p connection tasks it spawns run there too, so a round
/// message passes from socket to protocol without waking another thread;
/// the price sources, the API, the margin engine and the store stay on the
/// worker pool and the writer thread, off the round's thread.
async fn run_on_round_thread<C, R>(driver: Driver<C, Net, R>) -> Result<()>
where
    C: SibylSuite + Send + 'static,
    C::Group: Send,
    R: rand_core::RngCore + rand_core::CryptoRng + Send + 'static,
{
    // Its blocking pool (the observation record's fsync) is background work;
    // the thread that drives the runtime is not.
    let rt = tokio::runtime::Builder::new_current_thread()
        .on_thread_start(crate::priority::enter_background)
        .enable_all()
        .build()
        .context("cannot start the round driver's runtime")?;
    let (done_tx, done_rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("sibyl-round".into())
        .spawn(move || {
            rt.block_on(driver.run());
            let _ = done_tx.send(());
        })
        .context("cannot start the round driver's thread")?;
    done_rx
        .await
        .map_err(|_| anyhow::anyhow!("the round driver's thread panicked"))
}
