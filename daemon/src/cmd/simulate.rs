//! `sibyl simulate`: runs the seeded committee simulator of
//! `sibyl_aggregator::sim` over many seeds, reruns every seed to check that
//! the transcript is deterministic, prints progress and, on its last line,
//! one JSON summary. Exits non-zero on any safety violation.

use anyhow::{Context, bail};
use clap::{Args, ValueEnum};
use serde::Serialize;
use sibyl_aggregator::Suite;
use sibyl_aggregator::sim::{self, ByzantineKind, NetworkConfig, SimConfig, SimOutcome, Violation};
use std::io::Write;
use std::time::Instant;

/// Ciphersuite for `--suite`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SuiteArg {
    Ed25519,
    #[value(name = "secp256k1-evm")]
    Secp256k1Evm,
    /// Both suites: every report signed with each, in one round.
    Both,
}

/// Byzantine kind for `--kinds`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum KindArg {
    LieFar,
    LieSlight,
    LieRandom,
    Equivocate,
    InvalidShares,
    Replay,
    Withhold,
    /// Sends nothing at all (no observations either).
    Mute,
    /// Observes, then refuses every proposal (signed refusals).
    Refuse,
    /// Clock 3 s ahead.
    ClockAhead,
    /// Clock 3 s behind.
    ClockBehind,
    /// Clock 30 s ahead.
    ClockFarAhead,
}

impl From<KindArg> for ByzantineKind {
    fn from(k: KindArg) -> Self {
        match k {
            KindArg::LieFar => ByzantineKind::LieFar,
            KindArg::LieSlight => ByzantineKind::LieSlight,
            KindArg::LieRandom => ByzantineKind::LieRandom,
            KindArg::Equivocate => ByzantineKind::EquivocatingLeader,
            KindArg::InvalidShares => ByzantineKind::InvalidShares,
            KindArg::Replay => ByzantineKind::Replay,
            KindArg::Withhold => ByzantineKind::Withhold,
            KindArg::Mute => ByzantineKind::Mute,
            KindArg::Refuse => ByzantineKind::Refuse,
            KindArg::ClockAhead => ByzantineKind::ClockAhead,
            KindArg::ClockBehind => ByzantineKind::ClockBehind,
            KindArg::ClockFarAhead => ByzantineKind::ClockFarAhead,
        }
    }
}

/// Run the deterministic committee simulator over many seeds.
#[derive(Debug, Args)]
pub struct SimulateArgs {
    /// Committee size n (threshold t = 2f + 1 with f = (n - 1) / 3).
    #[arg(long, default_value_t = 4)]
    pub nodes: u16,
    /// Number of Byzantine members (chosen per seed).
    #[arg(long, default_value_t = 1)]
    pub byzantine: u16,
    /// Number of seeds to run (each twice, to check determinism).
    #[arg(long, default_value_t = 100)]
    pub seeds: u64,
    /// First seed.
    #[arg(long, default_value_t = 0)]
    pub first_seed: u64,
    /// Rounds per seed.
    #[arg(long, default_value_t = 20)]
    pub rounds: u64,
    /// FROST ciphersuite.
    #[arg(long, value_enum, default_value_t = SuiteArg::Ed25519)]
    pub suite: SuiteArg,
    /// Feeds in the committee.
    #[arg(long, default_value_t = 3)]
    pub feeds: usize,
    /// Byzantine kinds assigned in turn (default: drawn from each seed).
    #[arg(long, value_enum, value_delimiter = ',')]
    pub kinds: Vec<KindArg>,
    /// Hostile network: 2% message loss, partitions, crashes and restarts.
    /// Liveness figures then include rounds lost to the network.
    #[arg(long)]
    pub chaos: bool,
}

/// The JSON summary printed on the last line.
#[derive(Debug, Serialize)]
pub struct Summary {
    pub seeds: u64,
    pub first_seed: u64,
    pub rounds: u64,
    pub nodes: u16,
    pub byzantine: u16,
    pub f: u16,
    pub t: u16,
    pub suite: SuiteArg,
    pub chaos: bool,
    /// Signed rounds summed over all seeds (of `seeds * rounds`).
    pub signed_rounds: u64,
    /// Fewest signed rounds in one seed.
    pub min_signed_rounds_per_seed: u64,
    pub safety_violations: u64,
    /// Longest run of unsigned rounds after warm-up, over all seeds.
    pub max_consecutive_unsigned_rounds: u64,
    /// Unsigned rounds after warm-up whose leader was honest, over all seeds.
    pub unsigned_rounds_with_honest_leader: u64,
    /// Every seed's rerun gave an identical transcript digest.
    pub deterministic: bool,
    pub evidence: u64,
    pub unverifiable_evidence: u64,
    pub messages_delivered: u64,
    pub messages_dropped: u64,
    pub crashes: u64,
    pub elapsed_ms: u128,
    /// Up to 5 violations with their seed, for debugging.
    pub sample_violations: Vec<(u64, Violation)>,
}

/// Runs a seed twice; the flag says whether both runs were identical.
fn run_seed(args: &SimulateArgs, cfg: &SimConfig, seed: u64) -> anyhow::Result<(SimOutcome, bool)> {
    let once = || match args.suite {
        SuiteArg::Ed25519 => sim::run_suite(Suite::Ed25519, cfg, seed),
        SuiteArg::Secp256k1Evm => sim::run_suite(Suite::Secp256k1Evm, cfg, seed),
        SuiteArg::Both => sim::run_both(cfg, seed),
    };
    let a = once().with_context(|| format!("seed {seed}"))?;
    let b = once().with_context(|| format!("seed {seed} (rerun)"))?;
    let same = a == b;
    Ok((a, same))
}

/// Runs the simulation and returns the summary (prints progress to stdout).
pub fn simulate(args: &SimulateArgs) -> anyhow::Result<Summary> {
    if args.nodes < 1 {
        bail!("--nodes must be at least 1");
    }
    if args.byzantine > args.nodes {
        bail!(
            "--byzantine {} exceeds --nodes {}; choose at most n",
            args.byzantine,
            args.nodes
        );
    }
    if args.seeds == 0 || args.rounds == 0 {
        bail!("--seeds and --rounds must be at least 1");
    }
    let mut cfg = SimConfig::new(args.nodes, args.byzantine, args.rounds);
    cfg.feeds = args.feeds;
    cfg.kinds = args.kinds.iter().map(|k| (*k).into()).collect();
    if args.chaos {
        cfg.network = NetworkConfig::chaos();
    }
    let f = cfg.f();
    let started = Instant::now();
    let mut s = Summary {
        seeds: args.seeds,
        first_seed: args.first_seed,
        rounds: args.rounds,
        nodes: args.nodes,
        byzantine: args.byzantine,
        f,
        t: 2 * f + 1,
        suite: args.suite,
        chaos: args.chaos,
        signed_rounds: 0,
        min_signed_rounds_per_seed: u64::MAX,
        safety_violations: 0,
        max_consecutive_unsigned_rounds: 0,
        unsigned_rounds_with_honest_leader: 0,
        deterministic: true,
        evidence: 0,
        unverifiable_evidence: 0,
        messages_delivered: 0,
        messages_dropped: 0,
        crashes: 0,
        elapsed_ms: 0,
        sample_violations: Vec::new(),
    };
    let mut stdout = std::io::stdout().lock();
    for seed in args.first_seed..args.first_seed.saturating_add(args.seeds) {
        let (o, same) = run_seed(args, &cfg, seed)?;
        s.signed_rounds += o.signed_rounds;
        s.min_signed_rounds_per_seed = s.min_signed_rounds_per_seed.min(o.signed_rounds);
        s.safety_violations += o.violations.len() as u64;
        s.max_consecutive_unsigned_rounds = s
            .max_consecutive_unsigned_rounds
            .max(o.max_consecutive_unsigned_rounds);
        s.unsigned_rounds_with_honest_leader += o.unsigned_rounds_with_honest_leader;
        s.deterministic &= same;
        s.evidence += o.evidence;
        s.unverifiable_evidence += o.unverifiable_evidence;
        s.messages_delivered += o.messages_delivered;
        s.messages_dropped += o.messages_dropped;
        s.crashes += o.crashes;
        for v in &o.violations {
            if s.sample_violations.len() < 5 {
                s.sample_violations.push((seed, v.clone()));
            }
        }
        let byz: Vec<String> = o
            .byzantine
            .iter()
            .map(|(m, k)| format!("{m}:{k:?}"))
            .collect();
        writeln!(
            stdout,
            "seed {seed}: signed {}/{} rounds, max unsigned run {}, violations {}, evidence {}, deterministic {same}, byzantine [{}], transcript {}",
            o.signed_rounds,
            o.rounds,
            o.max_consecutive_unsigned_rounds,
            o.violations.len(),
            o.evidence,
            byz.join(" "),
            o.transcript_digest[..8]
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<String>(),
        )?;
    }
    s.elapsed_ms = started.elapsed().as_millis();
    Ok(s)
}

/// `sibyl simulate`: prints the summary as JSON on the last line; exits with
/// status 1 on any safety violation or nondeterminism.
pub fn run(args: SimulateArgs) -> anyhow::Result<()> {
    let summary = simulate(&args)?;
    let failed = summary.safety_violations > 0 || !summary.deterministic;
    if failed {
        eprintln!(
            "FAILED: {} safety violations, deterministic = {}",
            summary.safety_violations, summary.deterministic
        );
    }
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{}", serde_json::to_string(&summary)?)?;
    stdout.flush()?;
    if failed {
        std::process::exit(1);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(nodes: u16, byzantine: u16, seeds: u64) -> SimulateArgs {
        SimulateArgs {
            nodes,
            byzantine,
            seeds,
            first_seed: 0,
            rounds: 10,
            suite: SuiteArg::Ed25519,
            feeds: 3,
            kinds: Vec::new(),
            chaos: false,
        }
    }

    #[test]
    fn within_f_is_safe_live_and_deterministic() {
        let s = simulate(&args(4, 1, 4)).unwrap();
        assert_eq!(s.safety_violations, 0, "{s:?}");
        assert!(s.deterministic);
        assert!(s.max_consecutive_unsigned_rounds <= 1, "{s:?}");
        assert_eq!(s.unsigned_rounds_with_honest_leader, 0, "{s:?}");
        assert!(s.signed_rounds >= 4 * 10 * 2 / 3, "{s:?}");
    }

    #[test]
    fn secp256k1_evm_suite_runs() {
        let mut a = args(4, 1, 2);
        a.suite = SuiteArg::Secp256k1Evm;
        let s = simulate(&a).unwrap();
        assert_eq!(s.safety_violations, 0, "{s:?}");
        assert!(s.deterministic);
    }

    #[test]
    fn beyond_f_is_still_safe() {
        let s = simulate(&args(4, 3, 3)).unwrap();
        assert_eq!(s.safety_violations, 0, "{s:?}");
    }

    #[test]
    fn bad_arguments_are_explained() {
        let err = simulate(&args(4, 5, 1)).unwrap_err().to_string();
        assert!(err.contains("--byzantine 5 exceeds --nodes 4"), "{err}");
    }
}
