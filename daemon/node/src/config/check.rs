//! `sibyl config check`.

use super::*;

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
