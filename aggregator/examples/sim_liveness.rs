//! Liveness of the round protocol under every fault kind of the simulator:
//! for n = 4, 7 and 10 with f faulty members of each kind (and mixes), runs
//! SEEDS seeds of ROUNDS rounds and prints, per row, the signed rounds, the
//! unsigned rounds whose leader was honest (must be 0), the longest run of
//! unsigned rounds and the safety violations (must be 0).
//!
//! ```sh
//! cargo run --release -p sibyl-aggregator --example sim_liveness [SEEDS] [ROUNDS]
//! ```
//! `SIM_N=7` and `SIM_ROW=Mute` (a substring of the row name) restrict the
//! rows, `SIM_SEED=4` the seeds; `VERBOSE=1` prints each failing seed's outcome (an honest
//! leader's round unsigned, a violation, or a settled run over one round).
//!
//! `max-unsig` is the longest run of unsigned rounds; `settled` the same
//! once every member has been the base leader twice (each faulty leader has
//! failed once and the leader schedule keeps it apart from the others).
//!
//! Exits 1 if any row has an unsigned round with an honest leader, a settled
//! run longer than one round or a
//! safety violation.

use sibyl_aggregator::sim::{ByzantineKind, SimConfig, run};

type Ed = frost_ed25519::Ed25519Sha512;

fn main() {
    let mut args = std::env::args().skip(1);
    let seeds: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(100);
    let rounds: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(100);
    let mut rows: Vec<(String, Vec<ByzantineKind>)> = ByzantineKind::ALL
        .iter()
        .map(|k| (format!("{k:?}"), vec![*k]))
        .collect();
    rows.push(("none".into(), vec![]));
    rows.push((
        "mix: clock-ahead + invalid-shares + withhold".into(),
        vec![
            ByzantineKind::ClockAhead,
            ByzantineKind::InvalidShares,
            ByzantineKind::Withhold,
        ],
    ));
    rows.push((
        "mix: refuse + mute + clock-far-ahead".into(),
        vec![
            ByzantineKind::Refuse,
            ByzantineKind::Mute,
            ByzantineKind::ClockFarAhead,
        ],
    ));
    rows.push(("mix: drawn per seed".into(), Vec::new()));
    let mut failed = false;
    println!(
        "{:<48} {:>3} {:>3} {:>9} {:>12} {:>10} {:>8} {:>10}",
        "faults (f members)",
        "n",
        "f",
        "signed",
        "honest-unsig",
        "max-unsig",
        "settled",
        "violations"
    );
    let only_n: Option<u16> = std::env::var("SIM_N").ok().and_then(|v| v.parse().ok());
    let only_row = std::env::var("SIM_ROW").ok();
    let only_seed: Option<u64> = std::env::var("SIM_SEED").ok().and_then(|v| v.parse().ok());
    for n in [4u16, 7, 10] {
        if only_n.is_some_and(|o| o != n) {
            continue;
        }
        for (name, kinds) in &rows {
            if only_row
                .as_ref()
                .is_some_and(|o| !name.contains(o.as_str()))
            {
                continue;
            }
            let f = (n - 1) / 3;
            let byz = if name == "none" { 0 } else { f };
            let mut cfg = SimConfig::new(n, byz, rounds);
            cfg.kinds = kinds.clone();
            let (mut signed, mut honest_unsigned, mut max_run, mut violations) = (0, 0, 0, 0);
            let mut settled = 0;
            for seed in (0..seeds).filter(|s| only_seed.is_none_or(|o| o == *s)) {
                let o = match run::<Ed>(&cfg, seed) {
                    Ok(o) => o,
                    Err(e) => {
                        eprintln!("n={n} {name} seed {seed}: {e}");
                        std::process::exit(2);
                    }
                };
                signed += o.signed_rounds;
                honest_unsigned += o.unsigned_rounds_with_honest_leader;
                max_run = max_run.max(o.max_consecutive_unsigned_rounds);
                settled = settled.max(o.max_consecutive_unsigned_rounds_settled);
                violations += o.violations.len();
                if (o.unsigned_rounds_with_honest_leader > 0
                    || !o.violations.is_empty()
                    || o.max_consecutive_unsigned_rounds_settled > 1)
                    && std::env::var_os("VERBOSE").is_some()
                {
                    eprintln!("  n={n} {name} seed {seed}: {o:?}");
                }
            }
            failed |= honest_unsigned > 0 || violations > 0 || settled > 1;
            println!(
                "{name:<48} {n:>3} {byz:>3} {:>9} {honest_unsigned:>12} {max_run:>10} {settled:>8} {violations:>10}",
                format!("{signed}/{}", seeds * rounds)
            );
        }
    }
    if failed {
        std::process::exit(1);
    }
}
