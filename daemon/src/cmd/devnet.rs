//! `sibyl devnet`: a whole committee on this machine with one command, no
//! internet needed.
//!
//! ```text
//!   DIR/committee.toml            members on 127.0.0.1, feeds, round timing
//!   DIR/node-<i>/node.toml        one per member (API port, keys, data dir)
//!   DIR/node-<i>/keys/            identity + FROST key package (trusted dealer)
//!   DIR/node-<i>/passphrase       random, mode 0600
//!   DIR/node-<i>/node.log         the member's log (JSON lines)
//!   DIR/devnet.json               per member: index, peer_id, api_url, pid,
//!                                 config and database paths; the group key
//! ```
//!
//! The members are separate `sibyl run` processes. Prices come from the
//! built-in deterministic source. A member that exits (crashed, killed) is
//! reported with its pid, exit status and log, and marked in devnet.json;
//! the others keep running, so a crash and a restart can be tried by hand.
//! Ctrl-C (or the end of `--duration`, or every member gone) stops every
//! member with SIGTERM, then prints each member's round latency, CPU time
//! and peak RSS.

use anyhow::{Context, Result, bail};
use libp2p::identity::Keypair;
use rand::RngCore;
use sibyl_aggregator::Suite;
use sibyl_node::config::{Committee, parse_duration};
use sibyl_node::keystore::{KdfParams, KeyPaths, Keystore, Passphrase, write_atomic};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub mod chain;
pub mod file;
pub mod http;

pub use file::{ChainInfo, DevnetFile, DevnetMember};
pub use http::{http_get, http_post, http_post_json};

/// Arguments of `sibyl devnet`.
#[derive(Debug, clap::Args)]
pub struct DevnetArgs {
    /// Committee size.
    #[arg(long, default_value_t = 4)]
    pub nodes: u16,
    /// Signatures per report; default 2f + 1.
    #[arg(long)]
    pub threshold: Option<u16>,
    /// Directory for configs, keys, databases and logs (made if missing).
    #[arg(long, default_value = "devnet")]
    pub dir: PathBuf,
    /// Stop after this long (e.g. "60s"); default: run until Ctrl-C.
    #[arg(long, value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// Round interval.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    pub interval: Duration,
    /// How long after a round's start the leader waits for every member's
    /// observation; after it, 2f + 1 suffice. The default, "0ms", proposes
    /// as soon as 2f + 1 are in (lowest latency).
    #[arg(long, default_value = "0ms", value_parser = parse_duration)]
    pub observation_timeout: Duration,
    /// Number of feeds (BTC-USD, ETH-USD, SOL-USD, then synthetic ones).
    #[arg(long, default_value_t = 3)]
    pub feeds: u16,
    /// Only write the committee, configs and keys; start nothing.
    #[arg(long)]
    pub setup_only: bool,
    /// Observe the built-in deterministic price source instead of the
    /// simulated exchange. By default the devnet starts `sibyl sim-exchange`
    /// and every member observes it through the real exchange adapters.
    #[arg(long)]
    pub builtin_source: bool,
    /// Also run a chain: start anvil (from contracts/tools), deploy SibylFeed
    /// and one adapter per feed, sign with secp256k1-evm and let every member
    /// transmit (at most 9 members: anvil's funded development keys).
    #[arg(long)]
    pub chain: bool,
    /// Suites the committee signs every report with, comma-separated:
    /// `ed25519`, `secp256k1-evm` or both (one round, one signature per
    /// suite). Default: ed25519, or secp256k1-evm with --chain (which
    /// needs secp256k1-evm among them).
    #[arg(long, value_delimiter = ',', value_parser = parse_suite)]
    pub suites: Vec<Suite>,
    /// With --chain: use this JSON-RPC node (an anvil, whose development keys
    /// are funded) instead of starting one.
    #[arg(long, requires = "chain")]
    pub chain_rpc_url: Option<String>,
    /// Accounts in the demo margin book each member seeds at its first
    /// signed report (0 = none).
    #[arg(long, default_value_t = 300)]
    pub demo_accounts: usize,
}

impl DevnetArgs {
    /// Whether the members observe a simulated exchange (the default).
    pub fn sim_exchange(&self) -> bool {
        !self.builtin_source
    }

    /// The suites the devnet's committee signs with, ascending.
    pub fn suite_list(&self) -> Vec<Suite> {
        let mut suites = self.suites.clone();
        if suites.is_empty() {
            suites.push(if self.chain {
                Suite::Secp256k1Evm
            } else {
                Suite::Ed25519
            });
        }
        suites.sort();
        suites.dedup();
        suites
    }
}

fn parse_suite(s: &str) -> Result<Suite, String> {
    match s.trim() {
        "ed25519" => Ok(Suite::Ed25519),
        "secp256k1-evm" => Ok(Suite::Secp256k1Evm),
        other => Err(format!(
            "unknown suite {other:?}; use ed25519 and/or secp256k1-evm"
        )),
    }
}

fn suite_name(s: Suite) -> &'static str {
    match s {
        Suite::Ed25519 => "ed25519",
        Suite::Secp256k1Evm => "secp256k1-evm",
    }
}

/// Free ports on 127.0.0.1, each held (bound) until the holder is dropped,
/// so that no two ports handed out are the same (closing each probe at once
/// let the system hand one port to two members).
#[derive(Default)]
struct Ports(Vec<std::net::TcpListener>);

impl Ports {
    fn take(&mut self) -> Result<u16> {
        let l = std::net::TcpListener::bind("127.0.0.1:0")
            .context("cannot find a free port on 127.0.0.1")?;
        let port = l.local_addr()?.port();
        self.0.push(l);
        Ok(port)
    }
}

/// Assets the simulated exchange quotes (and the built-in source names feeds after).
const ASSETS: [&str; 23] = [
    "BTC", "ETH", "SOL", "BNB", "XRP", "DOGE", "ADA", "AVAX", "LINK", "DOT", "LTC", "BCH", "UNI",
    "ATOM", "NEAR", "APT", "ARB", "OP", "TRX", "XLM", "FIL", "AAVE", "ETC",
];

fn feed_ids(n: u16) -> Vec<String> {
    (0..n)
        .map(|i| match ASSETS.get(usize::from(i)) {
            Some(a) => format!("{a}-USD"),
            None => format!("SYN{i}-USD"),
        })
        .collect()
}

/// The `[sources]` section pointing at a simulated exchange on `port`.
///
/// Seven venues: five quoting in USD and two in USDT (converted through the
/// `USDT-USD` feed, which the sources service computes for that purpose only:
/// it is not a committee feed). Four of them stream over WebSocket.
fn sim_sources(port: u16, feeds: &[String]) -> String {
    const USD_VENUES: [&str; 5] = ["coinbase", "kraken", "bitstamp", "gemini", "bitfinex"];
    const USDT_VENUES: [&str; 2] = ["binance", "okx"];
    const STREAMING: [&str; 4] = ["coinbase", "kraken", "binance", "okx"];
    let mut s = String::from(
        "\n# Prices from the devnet's simulated exchange.\n[sources]\npoll_interval = \"500ms\"\nrequest_timeout = \"1s\"\nmax_quote_age = \"10s\"\nmax_deviation_bps = 200\nmarket_status_interval = \"1s\"\n",
    );
    for v in USD_VENUES.iter().chain(&USDT_VENUES) {
        s += &format!("[sources.venues.{v}]\nbase_url = \"http://127.0.0.1:{port}/{v}\"\n");
        // The simulator publishes no limits; the venues' real ones would
        // throttle seven venues times twenty feeds.
        s += "rate_limit_per_sec = 500\n";
        if STREAMING.contains(v) {
            // These adapters also stream; point the stream at the simulator too.
            s += &format!("ws_url = \"ws://127.0.0.1:{port}/ws/{v}\"\n");
        }
    }
    let usd_sources = USD_VENUES.map(|v| format!("{{ venue = \"{v}\" }}"));
    let usdt_sources = USDT_VENUES.map(|v| format!("{{ venue = \"{v}\", quote = \"USDT\" }}"));
    for f in feeds {
        let mut sources: Vec<&str> = usd_sources.iter().map(String::as_str).collect();
        if f != "USDT-USD" {
            sources.extend(usdt_sources.iter().map(String::as_str));
        }
        s += &format!(
            "[[sources.feeds]]\nid = \"{f}\"\nmin_sources = 3\nsources = [{}]\n",
            sources.join(", ")
        );
    }
    if !feeds.iter().any(|f| f == "USDT-USD") {
        s += &format!(
            "# Only for converting the USDT markets above; not a committee feed.\n[[sources.feeds]]\nid = \"USDT-USD\"\nmin_sources = 3\nsources = [{}]\n",
            usd_sources.join(", ")
        );
    }
    s
}

/// Writes the committee, configs and keys; returns the devnet description
/// (without pids).
pub fn setup(args: &DevnetArgs) -> Result<DevnetFile> {
    let n = args.nodes;
    if !(1..=64).contains(&n) {
        bail!("--nodes must be 1..=64 (got {n})");
    }
    let f = n.saturating_sub(1) / 3;
    let t = args.threshold.unwrap_or(2 * f + 1);
    if t < f + 1 || t > n - f {
        bail!(
            "--threshold {t} is outside f + 1 ..= n - f = {}..={} for {n} nodes",
            f + 1,
            n - f
        );
    }
    if args.feeds == 0 {
        bail!("--feeds must be at least 1");
    }
    let suites = args.suite_list();
    if args.chain && !suites.contains(&Suite::Secp256k1Evm) {
        bail!("--chain needs secp256k1-evm among --suites (the contract verifies that signature)");
    }
    let suites_toml = suites
        .iter()
        .map(|s| format!("\"{}\"", suite_name(*s)))
        .collect::<Vec<_>>()
        .join(", ");
    if args.sim_exchange() && usize::from(args.feeds) > ASSETS.len() {
        bail!(
            "the simulated exchange quotes {} assets; use --feeds {} or fewer",
            ASSETS.len(),
            ASSETS.len()
        );
    }
    let mut ports = Ports::default();
    let sim_port = if args.sim_exchange() {
        Some(ports.take()?)
    } else {
        None
    };
    let dir = &args.dir;
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let dir = dir
        .canonicalize()
        .with_context(|| format!("cannot resolve {}", dir.display()))?;
    if dir.join("devnet.json").exists() {
        bail!(
            "{} already holds a devnet; choose another --dir or delete it",
            dir.display()
        );
    }

    let interval_ms = u64::try_from(args.interval.as_millis())
        .unwrap_or(u64::MAX)
        .max(50);
    let mut members = Vec::new();
    let mut identities = Vec::new();
    let mut committee = format!(
        "# Devnet committee written by `sibyl devnet`.\nthreshold = {t}\nsuites = [{suites_toml}]\nleader_seed = 0\n\n[round]\ninterval = \"{interval_ms}ms\"\nobservation_timeout = \"{}ms\"\nshare_timeout = \"{}ms\"\nround_timeout = \"{}ms\"\n\n",
        args.observation_timeout.as_millis(),
        (interval_ms * 2).clamp(100, 1000),
        (interval_ms * 4).max(1000),
    );
    for index in 1..=n {
        let kp = Keypair::generate_ed25519();
        let p2p = ports.take()?;
        let api = ports.take()?;
        let peer_id = kp.public().to_peer_id().to_string();
        let p2p_address = format!("/ip4/127.0.0.1/tcp/{p2p}");
        committee += &format!(
            "[[members]]\nindex = {index}\npeer_id = \"{peer_id}\"\naddress = \"{p2p_address}\"\n\n"
        );
        let node_dir = dir.join(format!("node-{index}"));
        members.push(DevnetMember {
            index,
            peer_id,
            p2p_address,
            api_url: format!("http://127.0.0.1:{api}"),
            pid: None,
            config: node_dir.join("node.toml"),
            db: node_dir.join("data").join("sibyl.db"),
            log: node_dir.join("node.log"),
            exited: None,
        });
        identities.push(kp);
    }
    let heartbeat_ms = (interval_ms * 10).max(5_000);
    let feeds = feed_ids(args.feeds);
    for id in &feeds {
        committee += &format!(
            "[[feeds]]\nid = \"{id}\"\ndecimals = 8\ndeviation_bps = 10\nheartbeat = \"{heartbeat_ms}ms\"\n\n"
        );
    }
    let committee_path = dir.join("committee.toml");
    std::fs::write(&committee_path, &committee)
        .with_context(|| format!("cannot write {}", committee_path.display()))?;
    let parsed = Committee::load(&committee_path)?;
    let digest = parsed.digest;

    // Trusted dealer, bound to this committee's digest: keys of each suite.
    let mut dealt = Vec::new();
    let mut group_keys = BTreeMap::new();
    for suite in &suites {
        let keys = match suite {
            Suite::Ed25519 => Dealt::Ed(deal(n, t)?),
            Suite::Secp256k1Evm => Dealt::Evm(deal(n, t)?),
        };
        group_keys.insert(suite_name(*suite).to_string(), keys.group_key()?);
        dealt.push(keys);
    }
    let primary = suite_name(suites[0]).to_string();
    let group_key = group_keys[&primary].clone();
    for (m, kp) in members.iter().zip(&identities) {
        let node_dir = dir.join(format!("node-{}", m.index));
        std::fs::create_dir_all(node_dir.join("data"))
            .with_context(|| format!("cannot create {}", node_dir.display()))?;
        let mut raw = [0u8; 24];
        rand::rngs::OsRng.fill_bytes(&mut raw);
        let pass_text = hex::encode(raw);
        write_atomic(&node_dir.join("passphrase"), pass_text.as_bytes(), 0o600)?;
        let pass = Passphrase::new(pass_text)?;
        let store = Keystore::with_paths(KeyPaths::in_dir(&node_dir.join("keys")))
            .with_kdf(KdfParams::default());
        store.write_identity(kp, &pass)?;
        for keys in &dealt {
            match keys {
                Dealt::Ed(k) => write_keys(&store, &digest, k, m.index, &pass)?,
                Dealt::Evm(k) => write_keys(&store, &digest, k, m.index, &pass)?,
            }
        }
        let api_listen = m.api_url.trim_start_matches("http://");
        let node_toml = format!(
            "# Devnet member {index}, written by `sibyl devnet`.\n[node]\ncommittee = \"../committee.toml\"\ndata_dir = \"data\"\n\n[keys]\nidentity = \"keys/identity.key\"\nkey_package = \"keys/frost.key\"\npublic_key_package = \"keys/frost.pub.json\"\npassphrase_file = \"passphrase\"\n\n[net]\nlisten = \"{listen}\"\nredial_interval = \"1s\"\n\n[api]\nlisten = \"{api_listen}\"\nadmin_token_file = \"admin-token\"\n\n[store]\npath = \"sibyl.db\"\n\n[log]\nlevel = \"info\"\nformat = \"json\"\n",
            index = m.index,
            listen = m.p2p_address,
        );
        let node_toml = match sim_port {
            Some(port) => node_toml + &sim_sources(port, &feeds),
            None => node_toml,
        };
        let node_toml = node_toml + &margin_section(&node_dir, args.demo_accounts)?;
        std::fs::write(&m.config, node_toml)
            .with_context(|| format!("cannot write {}", m.config.display()))?;
        sibyl_node::config::Config::load(&m.config)?; // the same validation `sibyl run` does
    }
    Ok(DevnetFile {
        committee: committee_path,
        threshold: t,
        config_digest: hex::encode(digest.0),
        group_key,
        suite: primary,
        group_keys,
        sim_exchange: sim_port.map(|p| format!("http://127.0.0.1:{p}")),
        chain: None,
        members,
    })
}

/// The trusted dealer's keys for one of the devnet's suites.
enum Dealt {
    Ed(sibyl_aggregator::testkit::DealerKeys<frost_ed25519::Ed25519Sha512>),
    Evm(sibyl_aggregator::testkit::DealerKeys<frost_secp256k1_evm::Secp256K1Keccak256>),
}

impl Dealt {
    /// The group key, hex in the suite's serialization.
    fn group_key(&self) -> Result<String> {
        let bytes = match self {
            Dealt::Ed(k) => k
                .public_key_package
                .verifying_key()
                .serialize()
                .map_err(|e| e.to_string()),
            Dealt::Evm(k) => k
                .public_key_package
                .verifying_key()
                .serialize()
                .map_err(|e| e.to_string()),
        }
        .map_err(|e| anyhow::anyhow!("cannot encode the group key: {e}"))?;
        Ok(hex::encode(bytes))
    }
}

fn deal<C: frost_core::Ciphersuite>(
    n: u16,
    t: u16,
) -> Result<sibyl_aggregator::testkit::DealerKeys<C>> {
    sibyl_aggregator::testkit::dealer_keys::<C, _>(n, t, &mut rand::rngs::OsRng)
        .map_err(|e| anyhow::anyhow!("dealer key generation failed: {e}"))
}

fn write_keys<C: frost_core::Ciphersuite>(
    store: &Keystore,
    digest: &sibyl_aggregator::ConfigDigest,
    keys: &sibyl_aggregator::testkit::DealerKeys<C>,
    index: u16,
    pass: &Passphrase,
) -> Result<()> {
    let id = frost_core::Identifier::try_from(index)
        .map_err(|e| anyhow::anyhow!("identifier {index}: {e}"))?;
    let kpkg = keys
        .key_packages
        .get(&id)
        .with_context(|| format!("the dealer made no key for member {index}"))?;
    store.write_key_package(digest, kpkg, pass)?;
    store.write_public_key_package(digest, &keys.public_key_package)?;
    Ok(())
}

/// The `[margin]` section (the demo book; the same seed on every member, so
/// members that see the same first report hold the same book), and an admin
/// token in `node-<i>/admin-token` for the margin commands of the API.
fn margin_section(node_dir: &Path, demo_accounts: usize) -> Result<String> {
    let mut raw = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut raw);
    write_atomic(
        &node_dir.join("admin-token"),
        hex::encode(raw).as_bytes(),
        0o600,
    )?;
    Ok(format!(
        "\n# The embedded margin engine's demo book.\n[margin]\ndemo_accounts = {demo_accounts}\ndemo_seed = 7\n"
    ))
}

fn write_file(dir: &Path, file: &DevnetFile) -> Result<()> {
    let json = serde_json::to_vec_pretty(file)?;
    write_atomic(&dir.join("devnet.json"), &json, 0o644)?;
    Ok(())
}

/// Starts `sibyl run` for one member, its stderr going to its log file.
pub fn spawn_member(m: &DevnetMember) -> Result<Child> {
    let exe = std::env::current_exe().context("cannot find the sibyl executable")?;
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&m.log)
        .with_context(|| format!("cannot open {}", m.log.display()))?;
    Command::new(exe)
        .arg("run")
        .arg("--config")
        .arg(&m.config)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .with_context(|| format!("cannot start member {}", m.index))
}

/// CPU seconds (user + system) and peak RSS in KiB of a process, from /proc.
pub fn proc_usage(pid: u32) -> Option<(f64, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = after.split_whitespace().collect();
    // Fields after the command: state is [0]; utime is field 14 overall -> [11], stime [12].
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let hwm = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    Some(((utime + stime) as f64 / 100.0, hwm))
}

fn terminate(pid: u32) {
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(pid.to_string())
        .status();
}

/// `sibyl devnet` entry point.
pub fn run(args: DevnetArgs) -> Result<()> {
    if args.chain && args.setup_only && args.chain_rpc_url.is_none() {
        bail!(
            "--setup-only --chain needs --chain-rpc-url: the contracts are deployed during setup"
        );
    }
    let mut file = setup(&args)?;
    let dir = args.dir.canonicalize()?;
    // Held until the devnet stops: dropping it stops the anvil it started.
    let chain = if args.chain {
        Some(chain::prepare(
            &dir,
            &mut file,
            args.chain_rpc_url.as_deref(),
        )?)
    } else {
        None
    };
    if args.setup_only {
        write_file(&dir, &file)?;
        println!(
            "devnet written to {} (not started: --setup-only)",
            dir.display()
        );
        return Ok(());
    }
    let mut sim = None;
    if let Some(url) = &file.sim_exchange {
        let listen = url.trim_start_matches("http://").to_string();
        let exe = std::env::current_exe().context("cannot find the sibyl executable")?;
        let log = std::fs::File::create(dir.join("sim-exchange.log"))?;
        let child = Command::new(exe)
            .args(["sim-exchange", "--listen", &listen])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("cannot start the simulated exchange")?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(&listen).is_err() {
            if Instant::now() > deadline {
                bail!(
                    "the simulated exchange did not start; see {}",
                    dir.join("sim-exchange.log").display()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        println!(
            "simulated exchange: {url} (log {})",
            dir.join("sim-exchange.log").display()
        );
        sim = Some(child);
    }
    let mut children = Vec::new();
    for m in &mut file.members {
        let child = spawn_member(m)?;
        m.pid = Some(child.id());
        children.push(child);
    }
    write_file(&dir, &file)?;
    println!(
        "devnet of {} members (threshold {}) in {}",
        file.members.len(),
        file.threshold,
        dir.display()
    );
    for (suite, key) in &file.group_keys {
        println!("group public key ({suite}): {key}");
    }
    println!("config digest: 0x{}", file.config_digest);
    for m in &file.members {
        println!(
            "  member {}  pid {}  api {}  log {}",
            m.index,
            m.pid.unwrap_or(0),
            m.api_url,
            m.log.display()
        );
    }
    let first = &file.members[0];
    if let Some(c) = &chain {
        let i = &c.info;
        println!("chain: {} (chain id {})", i.rpc_url, i.chain_id);
        println!("  SibylFeed: {}", i.feed);
        for (feed, adapter) in &i.adapters {
            println!("  {feed} adapter (AggregatorV3Interface): {adapter}");
        }
        println!(
            "  pull payload: curl {}/v1/feeds/{}/update",
            first.api_url,
            i.adapters
                .keys()
                .next()
                .map(String::as_str)
                .unwrap_or("BTC-USD")
        );
    }
    println!("dashboard: {}/", first.api_url);
    if args.demo_accounts > 0 {
        println!(
            "margin: {} demo accounts at the first report; {}/v1/margin/at-risk; admin token for the margin commands in {}",
            args.demo_accounts,
            first.api_url,
            first.config.with_file_name("admin-token").display()
        );
    }
    println!(
        "verify the newest report:\n  sibyl verify {}/v1/reports/latest --group-key {} --committee {}",
        first.api_url,
        file.group_key,
        file.committee.display()
    );
    println!(
        "details: {}; Ctrl-C stops the devnet",
        dir.join("devnet.json").display()
    );

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let started = Instant::now();
    // Which members' processes have ended (never signalled again: their
    // pids may belong to another process by then).
    let mut gone = vec![false; children.len()];
    rt.block_on(async {
        let deadline = async {
            match args.duration {
                Some(d) => tokio::time::sleep(d).await,
                None => std::future::pending().await,
            }
        };
        let watch_children = watch_members(&dir, &mut file, &mut children, &mut gone);
        tokio::select! {
            _ = tokio::signal::ctrl_c() => println!("\nCtrl-C: stopping the devnet"),
            _ = deadline => println!("duration reached: stopping the devnet"),
            _ = watch_children => println!("every member stopped: stopping the devnet"),
        }
    });
    println!("ran for {:.1}s", started.elapsed().as_secs_f64());
    summary(&file, started.elapsed(), args.interval);
    if chain.is_some() {
        chain::summary(&file);
    }
    for (c, _) in children.iter().zip(&gone).filter(|(_, g)| !**g) {
        terminate(c.id());
    }
    let stop_deadline = Instant::now() + Duration::from_secs(10);
    for ((c, m), _) in children
        .iter_mut()
        .zip(&file.members)
        .zip(&gone)
        .filter(|(_, g)| !**g)
    {
        loop {
            match c.try_wait() {
                Ok(Some(_)) => break,
                Ok(None) if Instant::now() < stop_deadline => {
                    std::thread::sleep(Duration::from_millis(50))
                }
                _ => {
                    eprintln!("member {} did not stop on SIGTERM; killing it", m.index);
                    let _ = c.kill();
                    let _ = c.wait();
                    break;
                }
            }
        }
    }
    if let Some(mut sim) = sim {
        terminate(sim.id());
        std::thread::sleep(Duration::from_millis(300));
        let _ = sim.kill();
        let _ = sim.wait();
    }
    drop(chain);
    println!("devnet stopped");
    Ok(())
}

/// Watches the members' processes: one that exits is reported (index, pid,
/// exit status, log) and marked in devnet.json while the others go on.
/// Returns when every member has exited.
async fn watch_members(
    dir: &Path,
    file: &mut DevnetFile,
    children: &mut [Child],
    gone: &mut [bool],
) {
    loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let mut exits = Vec::new();
        for ((c, m), g) in children
            .iter_mut()
            .zip(&mut file.members)
            .zip(gone.iter_mut())
        {
            if *g {
                continue;
            }
            let status = match c.try_wait() {
                Ok(Some(status)) => status.to_string(),
                Ok(None) => continue,
                Err(e) => format!("cannot wait for it: {e}"),
            };
            *g = true;
            let pid = c.id();
            m.pid = None;
            m.exited = Some(format!("pid {pid}: {status}"));
            exits.push((m.index, pid, status, m.log.clone()));
        }
        let changed = !exits.is_empty();
        let running = gone.iter().filter(|g| !**g).count();
        for (index, pid, status, log) in exits {
            eprintln!(
                "member {index} (pid {pid}) exited: {status}; log {}; {running} member(s) still running",
                log.display()
            );
        }
        if changed {
            if let Err(e) = write_file(dir, file) {
                eprintln!("cannot update devnet.json: {e:#}");
            }
            if gone.iter().all(|g| *g) {
                return;
            }
        }
    }
}

/// Prints each member's round latency (from its API), CPU and RSS, then
/// the phase breakdown pooled over members.
pub fn summary(file: &DevnetFile, elapsed: Duration, interval: Duration) {
    println!(
        "member  last report  p50 latency  p99 latency  samples  cpu(s)  cpu(%)  peak RSS  runq wait/round"
    );
    let mut statuses = Vec::new();
    for m in &file.members {
        let status: Option<serde_json::Value> = http_get(&format!("{}/v1/node/status", m.api_url))
            .ok()
            .and_then(|b| serde_json::from_str(&b).ok());
        let get = |k: &str| {
            status
                .as_ref()
                .and_then(|s| s.get(k))
                .map(|v| v.to_string())
                .unwrap_or_else(|| "-".into())
        };
        let (cpu, rss) = m.pid.and_then(proc_usage).unwrap_or((0.0, 0));
        // Time runnable but without a CPU, per round (elapsed / interval).
        let rounds = (elapsed.as_secs_f64() / interval.as_secs_f64().max(1e-3)).max(1.0);
        let runq_us = m
            .pid
            .and_then(sibyl_node::driver::trace::runqueue_wait_ns)
            .map_or(0.0, |ns| ns as f64 / 1000.0 / rounds);
        println!(
            "{:>6}  {:>11}  {:>9}us  {:>9}us  {:>7}  {:>6.2}  {:>6.2}  {:>6} MiB  {:>13.0}us",
            m.index,
            get("last_report_round"),
            get("latency_p50_us"),
            get("latency_p99_us"),
            get("latency_samples"),
            cpu,
            100.0 * cpu / elapsed.as_secs_f64().max(1e-3),
            rss / 1024,
            runq_us
        );
        statuses.extend(status);
    }
    sibyl_node::driver::trace::print_phases(&statuses);
}

#[cfg(test)]
mod tests {
    use super::*;
    use sibyl_feeds::venue::Venue;

    #[test]
    fn sim_sources_use_seven_loopback_venues_and_convert_usdt() {
        let feeds = feed_ids(3);
        let text = sim_sources(9100, &feeds);
        #[derive(serde::Deserialize)]
        struct Section {
            sources: sibyl_feeds::SourcesConfig,
        }
        let cfg = toml::from_str::<Section>(&text)
            .expect("the section is a typed [sources]")
            .sources;
        cfg.validate().expect("validates");
        assert_eq!(cfg.venues.len(), 7);
        for v in cfg.venues.keys() {
            assert!(
                cfg.base_url(*v).starts_with("http://127.0.0.1:9100/"),
                "{v:?}"
            );
            // A streaming venue must never be left on its real internet URL.
            if cfg.ws_enabled(*v) {
                let ws = cfg.ws_url(*v).expect("ws url");
                assert!(ws.starts_with("ws://127.0.0.1:9100/ws/"), "{v:?}: {ws}");
            }
        }
        let btc = cfg
            .feeds
            .iter()
            .find(|f| f.id == "BTC-USD")
            .expect("BTC-USD");
        assert_eq!(btc.sources.len(), 7);
        assert!(
            btc.sources
                .iter()
                .any(|s| s.venue == Venue::Binance && s.quote.as_deref() == Some("USDT"))
        );
        let usdt = cfg
            .feeds
            .iter()
            .find(|f| f.id == "USDT-USD")
            .expect("conversion feed");
        assert!(usdt.sources.iter().all(|s| s.quote.is_none()));
    }
}
