//! `sibyl replay --db node.sqlite`: re-run the margin engine's stored inputs
//! through a fresh engine and compare, event by event, with the stored
//! events. Exits non-zero at the first divergence.
//!
//! `sibyl replay --config node.toml --from-reports`: rebuild the margin
//! engine from the node's stored signed reports alone (their prices and
//! their committee-ordered commands, as every member takes them), check
//! every margin state root the reports carry, and compare the result with
//! the node's own margin log.
//!
//! Owners' signed commands name the committee's group key, so a replay that
//! meets one needs it: from the member's keystore with `--config`, or given
//! as `--group-key HEX`.

use anyhow::{Context, Result, bail};
use sibyl_node::replay::{complete_reports, replay_db, replay_reports};
use std::path::PathBuf;

/// Arguments of `sibyl replay`.
#[derive(Debug, clap::Args)]
pub struct ReplayArgs {
    /// The node's SQLite database (opened read-only); with `--config`, the
    /// one node.toml names by default.
    #[arg(long, required_unless_present = "config")]
    pub db: Option<PathBuf>,
    /// The member's node.toml: its committee's feeds and its margin demo
    /// book settings, for `--from-reports`.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Rebuild the engine from the stored signed reports instead of the
    /// stored margin inputs (needs `--config`).
    #[arg(long, requires = "config")]
    pub from_reports: bool,
    /// The committee's group public key (hex) that owners signed their
    /// margin commands for; by default, with `--config`, read from the
    /// member's keystore.
    #[arg(long)]
    pub group_key: Option<String>,
}

/// The committee key: `--group-key`, else the keystore's with `--config`.
fn committee_key(
    args: &ReplayArgs,
    config: Option<&sibyl_node::config::Config>,
) -> Result<Option<sibyl_margin::CommitteeKey>> {
    if let Some(hex) = &args.group_key {
        return crate::cmd::margin::parse_committee(hex).map(Some);
    }
    config
        .map(|c| {
            sibyl_node::replay::configured_committee_key(c).context(
                "cannot read the committee's group key from the keystore; give it as --group-key HEX",
            )
        })
        .transpose()
}

/// `sibyl replay` entry point.
pub fn run(args: ReplayArgs) -> Result<()> {
    let config = args
        .config
        .as_deref()
        .map(sibyl_node::config::Config::load)
        .transpose()?;
    let db = match (&args.db, &config) {
        (Some(db), _) => db.clone(),
        (None, Some(c)) => c.db_path(),
        (None, None) => bail!("say which database to replay: --db FILE or --config node.toml"),
    };
    let committee = committee_key(&args, config.as_ref())?;
    if args.from_reports {
        let config = config.context("--from-reports needs --config node.toml")?;
        return from_reports(&db, &config, committee.as_ref());
    }
    let r = replay_db(&db, committee.as_ref())?;
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

fn from_reports(
    db: &std::path::Path,
    config: &sibyl_node::config::Config,
    committee: Option<&sibyl_margin::CommitteeKey>,
) -> Result<()> {
    let store = sibyl_node::store::Db::open_read_only(db)
        .with_context(|| format!("cannot open {} for replay", db.display()))?;
    let reports = complete_reports(&store)?;
    let Some(last) = reports.last().map(|r| r.header.round) else {
        bail!("{} holds no signed reports from round 0 on", db.display());
    };
    let margin = &config.node.margin;
    let demo = (margin.demo_accounts > 0).then_some(sibyl_node::margin_svc::DemoSeed {
        accounts: margin.demo_accounts,
        seed: margin.demo_seed,
    });
    let started = std::time::Instant::now();
    let mut r = replay_reports(reports, &config.committee.feeds, demo, committee);
    println!(
        "replayed {} signed reports (rounds up to {last}) in {:.1} s: {} engine inputs, {} ordered commands refused (as by every member); state root 0x{}",
        r.reports,
        started.elapsed().as_secs_f64(),
        r.inputs,
        r.refused_commands,
        hex::encode(r.engine.state_root())
    );
    if let Some((round, signed, mine)) = r.signed_state_mismatch {
        bail!(
            "DIVERGENCE: the committee signed margin state root 0x{} for round {round}; these reports give 0x{}",
            hex::encode(signed),
            hex::encode(mine)
        );
    }
    println!(
        "OK: every signed margin state root ({}) is the one the reports give",
        r.signed_states_matched
    );
    // The node's own margin log, rebuilt, ends after some report (at or
    // after the newest one whose prices it stored; later reports may have
    // brought only commands or refused prices): its root must be the
    // reports' root after one of those.
    let inputs = store.margin_inputs()?;
    let mut own = sibyl_node::margin_svc::restore(committee, &inputs)
        .context("the node's margin log does not replay; rebuild it from the reports")?;
    let own_root = own.engine.state_root();
    let from = own.next_round.saturating_sub(1);
    match r.roots.range(from..).find(|(_, root)| **root == own_root) {
        Some((a, _)) => {
            println!("OK: the node's margin log gives the same state root after round {a}");
            Ok(())
        }
        None if own.next_round == 0 => {
            println!("the node's margin log is empty; not compared");
            Ok(())
        }
        None => bail!(
            "DIVERGENCE: the node's margin log gives state root 0x{}, which these reports give after no round from {from} on (their root after round {from}: {})",
            hex::encode(own_root),
            r.roots
                .get(&from)
                .map_or("none".into(), |x| format!("0x{}", hex::encode(x)))
        ),
    }
}
