//! The DKG under every fault kind of the DKG simulator: for n = 4, 7 and 10
//! with f = (n − 1) / 3 faulty members of each kind (and an honest committee,
//! also on lossy links), runs SEEDS seeds and prints per row how the honest
//! members ended: all finished (same key, t of them sign and it verifies),
//! all failed naming a faulty member, all failed otherwise (timeouts), or a
//! split; then honest members blamed (must be 0), honest members named in a
//! timeout's waiting list, unsafe seeds (must be 0), messages per seed, and
//! `found`: seeds where some honest member pointed at a faulty one (its
//! culprit, a nonce conflict, or the only members a timeout waited for).
//!
//! ```sh
//! cargo run --release -p sibyl-aggregator --example sim_dkg [SEEDS]
//! ```
//! `SIM_N=7` restricts n; `SIM_SUITES=both` runs Ed25519 then
//! secp256k1-evm (default: Ed25519 only); `SIM_REFRESH=1` runs a proactive
//! refresh of an honest DKG's keys under the faults; `VERBOSE=1` prints each unsafe
//! or split seed. Exits 1 if any seed is unsafe.

use sibyl_aggregator::Suite;
use sibyl_aggregator::dkg::sim::{DkgFault, DkgSimConfig, MemberResult, run};

fn main() {
    let seeds: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(100);
    let only_n: Option<u16> = std::env::var("SIM_N").ok().and_then(|v| v.parse().ok());
    let both = std::env::var("SIM_SUITES").is_ok_and(|v| v == "both");
    let refresh = std::env::var_os("SIM_REFRESH").is_some();
    let verbose = std::env::var_os("VERBOSE").is_some();
    let mut rows: Vec<(String, Option<DkgFault>, u8)> = vec![
        ("none".into(), None, 0),
        ("none, 20% loss".into(), None, 20),
    ];
    rows.extend(
        DkgFault::ALL
            .iter()
            .map(|k| (format!("{k:?}"), Some(*k), 0)),
    );
    println!(
        "{:<16} {:>3} {:>2} {:>5} {:>9} {:>11} {:>12} {:>6} {:>13} {:>12} {:>7} {:>6} {:>6}",
        "faults",
        "n",
        "f",
        "seeds",
        "all-done",
        "fail-named",
        "fail-timeout",
        "split",
        "honest-blamed",
        "honest-named",
        "unsafe",
        "msgs",
        "found"
    );
    let mut failed = false;
    let start = std::time::Instant::now();
    for n in [4u16, 7, 10] {
        if only_n.is_some_and(|o| o != n) {
            continue;
        }
        let f = (n - 1) / 3;
        for (name, fault, loss) in &rows {
            let mut cfg = DkgSimConfig::new(n, if fault.is_some() { f } else { 0 }, *fault);
            cfg.loss_percent = *loss;
            cfg.refresh = refresh;
            if both {
                cfg.suites = vec![Suite::Ed25519, Suite::Secp256k1Evm];
            }
            let (mut done, mut named, mut timeout, mut split) = (0, 0, 0, 0);
            let (mut blamed, mut honest_named, mut unsafe_, mut msgs) = (0, 0, 0, 0u64);
            let mut found = 0;
            for seed in 0..seeds {
                let o = run(&cfg, seed);
                msgs += o.messages;
                if o.results.values().any(|r| {
                    matches!(r, MemberResult::Failed { suspects, .. } if suspects.iter().any(|s| o.faulty.contains(s)))
                }) {
                    found += 1;
                }
                blamed += o.honest_blamed.len();
                honest_named += o.honest_named_missing.len();
                let culprits_faulty = o.results.values().all(|r| {
                    matches!(r, MemberResult::Failed { culprit: Some(c), .. } if o.faulty.contains(c))
                });
                if o.all_done {
                    done += 1;
                } else if o.all_failed && culprits_faulty {
                    named += 1;
                } else if o.all_failed {
                    timeout += 1;
                } else {
                    split += 1;
                }
                if !o.safe() {
                    unsafe_ += 1;
                    failed = true;
                }
                if verbose && (!o.safe() || !(o.all_done || o.all_failed)) {
                    println!("  seed {seed}: {o:?}");
                }
            }
            println!(
                "{:<16} {:>3} {:>2} {:>5} {:>9} {:>11} {:>12} {:>6} {:>13} {:>12} {:>7} {:>6} {:>6}",
                name,
                n,
                cfg.faulty,
                seeds,
                done,
                named,
                timeout,
                split,
                blamed,
                honest_named,
                unsafe_,
                msgs / seeds.max(1),
                found
            );
        }
    }
    println!("({:.1} s)", start.elapsed().as_secs_f64());
    if failed {
        std::process::exit(1);
    }
}
