//! `sibyl sim-exchange` and `sibyl sources probe|bench`: the price sources
//! from the operator's side.

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use sibyl_feeds::SourcesConfig;
use sibyl_feeds::config::Dur;
use sibyl_feeds::decimal::format_fixed;
use sibyl_feeds::service::{ProbeReport, Prober};
use sibyl_feeds::sim::{Scenario, SimExchange, SimOptions};
use sibyl_feeds::venue::Venue;

/// `sibyl sim-exchange`
#[derive(Debug, Args)]
pub struct SimExchangeArgs {
    /// Address to serve on (loopback unless you mean it).
    #[arg(long, default_value = "127.0.0.1:9100")]
    pub listen: SocketAddr,
    /// Seed of the market model: the same seed gives the same price path.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Faults to start with: calm, flash-crash, outage, slow, stale, garbage,
    /// rate-limited, drift, chaos, thousand-x, wick, thin-pump, dropout,
    /// depeg, market-closed, halted (docs/SOURCES.md). Change them at runtime with
    /// POST /control/scenario, /control/fault or /control/depeg.
    #[arg(long, default_value = "calm")]
    pub scenario: String,
    /// Keep prices still (no random walk).
    #[arg(long)]
    pub frozen: bool,
}

/// `sibyl sources ...`
#[derive(Debug, Args)]
pub struct SourcesArgs {
    #[command(subcommand)]
    pub command: SourcesCommand,
}

#[derive(Debug, Subcommand)]
pub enum SourcesCommand {
    /// Fetch every configured source once and show its quote, latency and health.
    Probe {
        /// Node config (its `[sources]` section is used) or a sources-only TOML file.
        #[arg(long)]
        config: PathBuf,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Benchmark against an in-process simulated exchange: fetch-to-observation
    /// time and CPU per second of the source tasks.
    Bench {
        #[arg(long, default_value_t = 20)]
        feeds: usize,
        #[arg(long, default_value_t = 12)]
        venues: usize,
        /// Fetch rounds to time.
        #[arg(long, default_value_t = 50)]
        rounds: usize,
        /// Seconds to run the live sources for the CPU measurement.
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// REST poll interval of the live sources ("500ms", "2s").
        #[arg(long, default_value = "500ms")]
        poll: String,
    },
}

fn runtime(name: &str, workers: usize) -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .thread_name(name)
        .enable_all()
        .build()
        .context("cannot start the tokio runtime")
}

pub fn sim_exchange(args: SimExchangeArgs) -> anyhow::Result<()> {
    let Some(scenario) = Scenario::from_name(&args.scenario) else {
        let names: Vec<&str> = Scenario::ALL.iter().map(|s| s.name()).collect();
        bail!(
            "unknown scenario {:?}; choose one of: {}",
            args.scenario,
            names.join(", ")
        );
    };
    runtime("sim-exchange", 2)?.block_on(async move {
        let opts = SimOptions { listen: args.listen, seed: args.seed, scenario, walk: !args.frozen, ..SimOptions::default() };
        let sim = SimExchange::start(opts).await?;
        let base = sim.base_url();
        let mut banner = format!("simulated exchange on {base} (seed {}, scenario {})\n", args.seed, scenario.name());
        banner += &format!("  REST:    {base}/<venue>/<the venue's own ticker path>, venues: {}\n", venue_names());
        banner += &format!("  streams: {}/ws/<binance|coinbase|kraken|okx>\n", base.replacen("http://", "ws://", 1));
        banner += &format!(
            "  control: GET {base}/control/faults, POST {base}/control/fault {{\"venue\":\"binance\",\"fault\":{{\"kind\":\"flash_crash\",\"bps\":3000}}}}\n"
        );
        banner += &format!("           POST {base}/control/scenario {{\"name\":\"chaos\"}}, GET {base}/control/price/BTC\n");
        for (v, f) in sim.faults() {
            banner += &format!("  fault:   {v}: {f:?}\n");
        }
        // A closed stdout (the caller stopped reading) must not stop the exchange.
        let mut out = std::io::stdout();
        let _ = out.write_all(banner.as_bytes()).and_then(|()| out.flush());
        tokio::select! {
            _ = sim.wait() => Ok(()),
            r = tokio::signal::ctrl_c() => r.context("waiting for Ctrl-C"),
        }
    })
}

fn venue_names() -> String {
    Venue::ALL
        .iter()
        .map(|v| v.name())
        .collect::<Vec<_>>()
        .join(", ")
}

pub fn sources(args: SourcesArgs) -> anyhow::Result<()> {
    match args.command {
        SourcesCommand::Probe { config, json } => probe(&config, json),
        SourcesCommand::Bench {
            feeds,
            venues,
            rounds,
            seconds,
            poll,
        } => {
            let poll: Dur = poll.parse().map_err(|e| anyhow::anyhow!("--poll: {e}"))?;
            bench(feeds, venues, rounds, seconds, poll)
        }
    }
}

/// Read the sources section: `[sources]` of a node config (loaded and checked
/// as `sibyl run` does, so feed decimals come from its committee file), or a
/// file that is only the sources section (feeds at 8 decimals).
pub fn load_sources_config(path: &Path) -> anyhow::Result<SourcesConfig> {
    Ok(load_for_probe(path)?.0)
}

/// The sources section and, for a node config, the committee feeds it has
/// no source for (they can never have an observation).
fn load_for_probe(path: &Path) -> anyhow::Result<(SourcesConfig, Vec<String>)> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let doc: toml::Table =
        toml::from_str(&text).with_context(|| format!("{} is not valid TOML", path.display()))?;
    if doc.contains_key("node") {
        let config = sibyl_node::config::Config::load(path)?;
        let sources = config.node.sources.with_context(|| {
            format!(
                "{} has no [sources] section; add one (docs/SOURCES.md)",
                path.display()
            )
        })?;
        let unsourced = config
            .committee
            .feeds
            .iter()
            .map(|f| f.id.as_str().to_string())
            .filter(|id| !sources.feeds.iter().any(|f| &f.id == id))
            .collect();
        return Ok((sources, unsourced));
    }
    let sources =
        SourcesConfig::from_toml(&text).with_context(|| format!("in {}", path.display()))?;
    Ok((sources, Vec::new()))
}

fn probe(path: &Path, json: bool) -> anyhow::Result<()> {
    let (config, unsourced) = load_for_probe(path)?;
    let report = runtime("sibyl-probe", 1)?
        .block_on(async { sibyl_feeds::service::probe(&config).await })?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_probe(&report);
        for feed in &unsourced {
            println!("{feed:<10} NONE: a committee feed with no source in [sources]");
        }
    }
    let mut missing: Vec<&String> = report
        .observations
        .iter()
        .filter(|(_, o)| o.is_err())
        .map(|(f, _)| f)
        .collect();
    missing.extend(&unsourced);
    if !missing.is_empty() {
        bail!(
            "{} feed(s) have no observation: {:?}; see the sources marked with an error above, and add a [[sources.feeds]] table for a committee feed with none",
            missing.len(),
            missing
        );
    }
    Ok(())
}

fn print_probe(report: &ProbeReport) {
    println!(
        "{:<10} {:<24} {:>20} {:>9} {:>9}  health",
        "feed", "source", "price", "age", "latency"
    );
    for s in &report.sources {
        let price = s
            .price
            .map(|p| format_fixed(p, s.decimals))
            .unwrap_or_else(|| "-".into());
        let age = s
            .age_ms
            .map(|a| format!("{a}ms"))
            .unwrap_or_else(|| "-".into());
        let latency = s
            .latency_ms
            .map(|l| format!("{l}ms"))
            .unwrap_or_else(|| "-".into());
        let health = match &s.last_error {
            None => "ok".to_string(),
            Some(e) => format!("ERROR {e}"),
        };
        println!(
            "{:<10} {:<24} {:>20} {:>9} {:>9}  {health}",
            s.feed, s.source, price, age, latency
        );
    }
    println!();
    println!(
        "{:<10} {:>20} {:>8} {:>11}  outliers / flags",
        "feed", "observation", "sources", "spread_bps"
    );
    for (feed, o) in &report.observations {
        match o {
            Ok(o) => {
                let mut notes = vec![o.outliers.join(",")];
                if o.is_degraded() {
                    notes.push(format!(
                        "DEGRADED ({} of {} venues)",
                        o.num_sources, o.min_sources
                    ));
                }
                if o.peg_departed {
                    notes.push("PEG_DEPARTED".into());
                }
                println!(
                    "{:<10} {:>20} {:>8} {:>11}  {}",
                    feed,
                    format_fixed(o.price_fixed, o.decimals),
                    o.num_sources,
                    o.spread_bps,
                    notes.join(" ").trim()
                )
            }
            Err(e) => println!("{feed:<10} NONE: {e}"),
        }
    }
}

const BENCH_ASSETS: [&str; 22] = [
    "BTC", "ETH", "SOL", "BNB", "XRP", "DOGE", "ADA", "AVAX", "LINK", "DOT", "LTC", "BCH", "UNI",
    "ATOM", "NEAR", "APT", "ARB", "OP", "TRX", "XLM", "FIL", "AAVE",
];

fn bench(
    feeds: usize,
    venues: usize,
    rounds: usize,
    seconds: u64,
    poll: Dur,
) -> anyhow::Result<()> {
    if feeds == 0 || feeds > BENCH_ASSETS.len() || venues < 3 || venues > Venue::ALL.len() {
        bail!(
            "--feeds must be 1..={} and --venues 3..={}",
            BENCH_ASSETS.len(),
            Venue::ALL.len()
        );
    }
    // The simulated exchange runs on its own runtime and threads so that the
    // CPU of the source tasks can be measured apart from it.
    let sim_rt = runtime("sim-exchange", 1)?;
    let sim = sim_rt.block_on(SimExchange::start(SimOptions::default()))?;
    let ids: Vec<String> = BENCH_ASSETS[..feeds]
        .iter()
        .map(|a| format!("{a}-USD"))
        .collect();
    let id_refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    let mut config =
        SourcesConfig::for_sim_exchange_venues(&sim.base_url(), &id_refs, &Venue::ALL[..venues]);
    config.poll_interval = poll;
    let markets = config.resolved_sources().len();
    println!(
        "{} feeds (+ USDT-USD for conversion) over {venues} venues = {markets} (feed, market) sources, simulated exchange at {}",
        feeds,
        sim.base_url()
    );

    let feeds_rt = runtime("sibyl-feeds", 1)?;
    // 1. Fetch-to-observation: every market fetched once over REST (venues in
    //    parallel, warm connections) and every observation computed.
    let (times, last) = feeds_rt.block_on(async {
        let prober = Prober::new(config.clone())?;
        prober.round().await; // warm up connections
        let mut times = Vec::with_capacity(rounds);
        let mut last = None;
        for _ in 0..rounds {
            let t = Instant::now();
            let report = prober.round().await;
            times.push(t.elapsed());
            last = Some(report);
        }
        anyhow::Ok((times, last))
    })?;
    let valid = last
        .as_ref()
        .map(|r| r.observations.values().filter(|o| o.is_ok()).count())
        .unwrap_or(0);
    let mut sorted = times.clone();
    sorted.sort();
    let pct = |p: usize| sorted[(sorted.len() * p / 100).min(sorted.len() - 1)];
    println!(
        "fetch-to-observation over {rounds} rounds: median {:.1} ms, p95 {:.1} ms, max {:.1} ms ({valid} valid observations)",
        ms(pct(50)),
        ms(pct(95)),
        ms(sorted[sorted.len() - 1])
    );

    // 2. CPU of the live source tasks (REST pollers every poll_interval,
    //    four WebSocket streams, aggregation) on their own runtime.
    let cpu_before = thread_cpu("sibyl-feeds");
    let wall = Instant::now();
    let (obs_count, poll) = feeds_rt.block_on(async {
        let mut registry = prometheus_client::registry::Registry::default();
        let svc = sibyl_feeds::FeedService::start(config.clone(), &mut registry)?;
        tokio::time::sleep(Duration::from_secs(seconds)).await;
        let n = svc.observations().borrow().len();
        svc.shutdown();
        anyhow::Ok((n, svc.config().poll_interval))
    })?;
    let wall = wall.elapsed().as_secs_f64();
    let cpu = thread_cpu("sibyl-feeds")
        .zip(cpu_before)
        .map(|(a, b)| a - b);
    match cpu {
        Some(cpu) => println!(
            "source tasks: {:.3} CPU-seconds per second ({:.1}% of one core) over {wall:.1} s, REST poll every {poll}, WebSocket on 4 venues; {obs_count} feeds observed",
            cpu / wall,
            100.0 * cpu / wall
        ),
        None => println!(
            "source tasks: CPU not measurable on this platform (needs /proc); {obs_count} feeds observed"
        ),
    }
    drop(sim);
    Ok(())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// User + system CPU seconds of this process's threads named `name` (Linux /proc).
fn thread_cpu(name: &str) -> Option<f64> {
    let ticks_per_sec = 100.0; // USER_HZ, 100 on every Linux we run on
    let mut total = 0u64;
    for entry in std::fs::read_dir("/proc/self/task").ok()? {
        let dir = entry.ok()?.path();
        let comm = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
        if !comm.trim_end().starts_with(name) {
            continue;
        }
        let stat = std::fs::read_to_string(dir.join("stat")).ok()?;
        // Fields after the ")" that closes the command name: state is field 3, utime 14, stime 15.
        let rest = &stat[stat.rfind(')')? + 2..];
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let utime: u64 = fields.get(11)?.parse().ok()?;
        let stime: u64 = fields.get(12)?.parse().ok()?;
        total += utime + stime;
    }
    Some(total as f64 / ticks_per_sec)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_sources_from_a_node_config_or_a_sources_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let example = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/sources.sim.toml");
        let direct = load_sources_config(Path::new(example)).expect("example parses");
        assert_eq!(direct.feeds.len(), 3);

        let text = std::fs::read_to_string(example).expect("example");
        let committee = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../deploy/examples/committee.toml"
        );
        let mut node = format!(
            "[node]\ncommittee = \"{committee}\"\n\n[keys]\npassphrase_env = \"P\"\n\n[sources]\n"
        );
        // Re-home the example under [sources]: its tables become sources.*.
        node.push_str(
            &text
                .replace("[venues.", "[sources.venues.")
                .replace("[[feeds]]", "[[sources.feeds]]"),
        );
        let path = dir.path().join("node.toml");
        std::fs::write(&path, node).expect("write");
        let from_node = load_sources_config(&path).expect("node config parses");
        assert_eq!(from_node.feeds, direct.feeds);
        // Decimals come from the committee file, for the committee's feeds only.
        assert_eq!(from_node.decimals_of("BTC-USD"), 8);
        assert!(!from_node.decimals.contains_key("USDT-USD"));

        // A decimals key in the sources is refused, at its line.
        let old = dir.path().join("old.toml");
        std::fs::write(&old, "[[feeds]]\nid = \"BTC-USD\"\ndecimals = 8\nmin_sources = 1\nsources = [{ venue = \"kraken\" }]\n").expect("write");
        let err = format!("{:#}", load_sources_config(&old).expect_err("decimals"));
        assert!(
            err.contains("line 3") && err.contains("committee file"),
            "{err}"
        );

        let bad = dir.path().join("bad.toml");
        std::fs::write(&bad, "poll_interval = \"soon\"\n").expect("write");
        let err = format!("{:#}", load_sources_config(&bad).expect_err("bad duration"));
        assert!(
            err.contains("bad.toml") && err.contains("duration"),
            "{err}"
        );
    }
}
