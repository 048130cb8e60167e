//! `sibyl replay --db node.sqlite`: re-run the margin engine's stored inputs
//! through a fresh engine and compare, event by event, with the stored
//! events. Exits non-zero at the first divergence.

use anyhow::{Result, bail};
use sibyl_node::replay::replay_db;
use std::path::PathBuf;

/// Arguments of `sibyl replay`.
#[derive(Debug, clap::Args)]
pub struct ReplayArgs {
    /// The node's SQLite database (opened read-only).
    #[arg(long)]
    pub db: PathBuf,
}

/// `sibyl replay` entry point.
pub fn run(args: ReplayArgs) -> Result<()> {
    let r = replay_db(&args.db)?;
    println!(
        "replayed {} inputs; {} stored events; insurance fund {} USD",
        r.inputs,
        r.events,
        sibyl_api::margin::decimal(r.insurance_fund, 6)
    );
    match r.divergence {
        None => {
            println!("OK: every event matches");
            Ok(())
        }
        Some(d) => {
            println!("DIVERGENCE at event seq {}", d.seq);
            println!(
                "  expected (stored): {}",
                d.expected.as_deref().unwrap_or("<none>")
            );
            println!(
                "  got (replayed):    {}",
                d.got.as_deref().unwrap_or("<none>")
            );
            bail!("replay diverged at event seq {}", d.seq)
        }
    }
}
