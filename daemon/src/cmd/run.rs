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

use anyhow::{Context, Result};
use sibyl_aggregator::round::{Node, NodeKeySet, SibylSuite};
use sibyl_aggregator::verify::{GroupKeys, verify_report};
use sibyl_aggregator::{SignedReport, Suite};
use sibyl_node::config::Config;
use sibyl_node::driver::{
    Driver, DriverParts, ReportSink, StatusHandle, observed, restore_from, source,
};
use sibyl_node::keystore::Keystore;
use sibyl_node::net::{Limits, Net, NetConfig};
use sibyl_node::store::Store;
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

/// Installs the tracing subscriber: `RUST_LOG` or `log.level`; JSON when
/// stderr is not a terminal (or `log.format = "json"`).
pub fn init_logging(config: &Config) {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(config.node.log.level.get_ref()))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let json = match config.node.log.format {
        sibyl_node::config::LogFormat::Json => true,
        sibyl_node::config::LogFormat::Text => false,
        sibyl_node::config::LogFormat::Auto => !std::io::stderr().is_terminal(),
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
    for w in &config.warnings {
        tracing::warn!("{w}");
    }
    // The same key checks as `sibyl config check`, before anything starts.
    let problems = sibyl_node::config::check_keys(&config);
    if !problems.is_empty() {
        return Err(sibyl_node::config::ConfigError::Invalid(problems).into());
    }
    sibyl_node::priority::set_background_nice(*config.node.node.background_nice.get_ref());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(worker_threads())
        .on_thread_start(sibyl_node::priority::enter_background)
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

pub(crate) async fn wait_for_signal() {
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
    let committee = &config.committee;
    let digest = committee.digest;
    let pass = config.read_key_passphrase()?;
    let keystore = config.keystore();
    // New shares a refresh stored but did not switch to yet: the refresh
    // resumes with them (`sibyl_node::rekey`); unusable ones refuse the start.
    let pending = sibyl_node::refresh::read_pending(&keystore, &digest, &pass, &committee.suites)
        .map_err(anyhow::Error::msg)?;
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
    let seed: [u8; 32] = identity
        .clone()
        .try_into_ed25519()
        .map_err(|_| anyhow::anyhow!("the identity key is not an ed25519 key"))?
        .secret()
        .as_ref()
        .try_into()
        .map_err(|_| anyhow::anyhow!("the identity key's secret is not 32 bytes"))?;
    // One report, one signature per suite the committee lists: the member
    // needs its keys of every one (`check_keys` above named what is missing).
    let mut keys = NodeKeySet::new(seed);
    let mut group_keys = GroupKeys::new(digest);
    for suite in &committee.suites {
        (keys, group_keys) = match suite {
            Suite::Ed25519 => add_suite::<frost_ed25519::Ed25519Sha512>(
                &keystore, &digest, &pass, keys, group_keys,
            )?,
            Suite::Secp256k1Evm => add_suite::<frost_secp256k1_evm::Secp256K1Keccak256>(
                &keystore, &digest, &pass, keys, group_keys,
            )?,
        };
    }
    tracing::info!(suites = ?committee.suites, "signing every report with each listed suite");

    let data_dir = config.data_dir();
    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("cannot create the data directory {}", data_dir.display()))?;
    let store = Store::open_with(&config.db_path(), config.node.store.ledger_sync)?;
    let observed = observed::ObservationLedger::open(&config.observed_round_path())?;
    let protocol = Arc::new(committee.to_protocol()?);
    let horizon = sibyl_aggregator::round::schedule::LeaderSchedule::horizon(&protocol);
    let restore = restore_from(&store.readers, &observed, horizon, &committee.digest)?;
    if restore
        .last_signed
        .as_ref()
        .is_some_and(|l| l.round == sibyl_node::store::RETIRED_ROUND)
    {
        anyhow::bail!(
            "the signing ledger in {} was retired by `sibyl ledger export` (the member moved to another host): it must never sign again. Run the member where its ledger was imported, or give this host a new data directory and `sibyl ledger import` the newest export into it",
            config.db_path().display()
        );
    }
    let last_report_round = restore.last_report_round;

    let round_interval = Duration::from_millis(protocol.timeouts().round_interval_ms);
    let live_keys = sibyl_node::rekey::refresh_keys_of(&keys.suites);
    let node = Node::new(protocol, me.index, keys, restore)?;
    let (rekey_link, rekey_events) = start_rekey(
        &config, me.index, &identity, &pass, live_keys, pending, &shutdown,
    )?;

    let validator_keys = group_keys.clone();
    let api_group_keys = group_keys.clone();
    let validator: sibyl_node::net::ReportValidator = Arc::new(move |bytes: &[u8]| {
        SignedReport::decode_expecting(bytes, &digest)
            .ok()
            .is_some_and(|r| verify_report(&r, &validator_keys).is_ok())
    });
    let net_cfg = &config.node.net;
    let listen = match &net_cfg.listen {
        Some(l) => {
            sibyl_node::config::parse_member_address(l.get_ref()).map_err(|e| anyhow::anyhow!(e))?
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
            .map(|m| sibyl_node::net::Member {
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
        Some(sources) => {
            // Typed and checked (with the committee's decimals) by Config::load.
            let service = sibyl_feeds::FeedService::start(sources.clone(), &mut registry)
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
    let _transmitter = sibyl_chain::start_transmitter(
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
    let margin = sibyl_node::margin_svc::start_with(
        &store,
        committee.feeds.clone(),
        reports_tx.subscribe(),
        shutdown.clone(),
        sibyl_node::margin_svc::MarginOptions {
            demo: (margin_cfg.demo_accounts > 0).then_some(sibyl_node::margin_svc::DemoSeed {
                accounts: margin_cfg.demo_accounts,
                seed: margin_cfg.demo_seed,
            }),
            snapshot_every_rounds: margin_cfg.snapshot_every_rounds(),
            ordered_by: Some(me.index),
            // Owners sign their commands for this committee's group key.
            committee: sibyl_node::margin_svc::committee_key(&api_group_keys),
        },
    )
    .await
    .context("cannot start the margin engine")?;
    margin.register_metrics(&mut registry);
    #[cfg(feature = "fault-injection")]
    let node = sibyl_node::driver::fault::apply(node);
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
            clock: sibyl_node::driver::clock::SystemClock,
            shutdown,
            rekey: Some(rekey_link),
            offers: margin.offers(),
            attest: Some(margin.attested()),
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
    sibyl_api::node::serve_if_enabled(
        &config,
        sibyl_api::node::NodeServices {
            store,
            reports: reports_tx,
            status,
            registry,
            margin: margin.clone(),
            rekey: Some(rekey_events),
        },
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
async fn run_on_round_thread<R>(driver: Driver<Net, R>) -> Result<()>
where
    R: rand_core::RngCore + rand_core::CryptoRng + Send + 'static,
{
    // Its blocking pool (the observation record's fsync) is background work;
    // the thread that drives the runtime is not.
    let rt = tokio::runtime::Builder::new_current_thread()
        .on_thread_start(sibyl_node::priority::enter_background)
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

/// Starts the in-node key refresh (`sibyl_node::rekey`) on the worker pool;
/// returns the driver's side of its channels and the sender the API starts
/// it with.
fn start_rekey(
    config: &Config,
    me: u16,
    identity: &libp2p::identity::Keypair,
    pass: &sibyl_node::keystore::Passphrase,
    live: sibyl_aggregator::dkg::RefreshKeys,
    pending: Option<sibyl_aggregator::dkg::RefreshKeys>,
    shutdown: &watch::Receiver<bool>,
) -> Result<(
    sibyl_node::rekey::RekeyLink,
    tokio::sync::mpsc::Sender<sibyl_node::rekey::RekeyEvent>,
)> {
    use sibyl_node::rekey;
    let committee = &config.committee;
    let params = sibyl_node::dkg::DkgParams::of_committee(
        committee,
        identity.clone(),
        REFRESH_CEREMONY_TIMEOUT,
    );
    let factory = sibyl_node::dkg::refresh_factory(me, &params, &committee.suites)?;
    let timing = rekey::Timing {
        every_ms: config
            .node
            .keys
            .refresh_every
            .as_ref()
            .map(|e| e.get_ref().as_millis()),
        ..rekey::Timing::default()
    };
    let (machine, first) = rekey::Rekey::new(
        me,
        committee.members.iter().map(|m| m.index),
        timing,
        factory,
        live,
        pending,
        sibyl_node::store::now_ms(),
    );
    let (events_tx, events_rx) = tokio::sync::mpsc::channel(1024);
    let (commands_tx, commands_rx) = tokio::sync::mpsc::channel(1024);
    let io = rekey::RekeyIo {
        keystore: config.keystore(),
        digest: committee.digest,
        passphrase: pass.clone(),
        suites: committee.suites.clone(),
    };
    tokio::spawn(rekey::run(
        machine,
        first,
        io,
        events_rx,
        commands_tx,
        shutdown.clone(),
    ));
    Ok((
        rekey::RekeyLink {
            events: events_tx.clone(),
            commands: commands_rx,
        },
        events_tx,
    ))
}

/// How long an in-node refresh ceremony may take before it fails (and is
/// retried); the committee keeps signing with the old shares meanwhile.
const REFRESH_CEREMONY_TIMEOUT: Duration = Duration::from_secs(30);

/// Reads this member's keys of suite `C` and adds them, and the group key,
/// to what the node signs and verifies with.
fn add_suite<C: SibylSuite>(
    keystore: &Keystore,
    digest: &sibyl_aggregator::ConfigDigest,
    pass: &sibyl_node::keystore::Passphrase,
    keys: NodeKeySet,
    group_keys: GroupKeys,
) -> Result<(NodeKeySet, GroupKeys)> {
    let key_package = keystore.read_key_package::<C>(digest, pass)?;
    let public_key_package = keystore.read_public_key_package::<C>(digest)?;
    let group_key = public_key_package
        .verifying_key()
        .serialize()
        .map_err(|e| anyhow::anyhow!("cannot encode the {:?} group key: {e}", C::SUITE))?;
    let group_keys = group_keys.with_key_bytes(C::SUITE, &group_key)?;
    Ok((keys.with(key_package, public_key_package), group_keys))
}
