//! `sibyl ledger export|import`: move a member to a new host with its
//! signing and observation ledgers, so it never signs (or observes) a round
//! twice. The format and the rules live in `sibyl_node::store`
//! (`LedgerInterchange`); docs/OPERATOR.md, "Moving a member to a new host",
//! is the procedure.

use anyhow::{Context, Result, bail};
use sibyl_node::config::Config;
use sibyl_node::driver::observed::ObservationLedger;
use sibyl_node::store::{Db, LedgerInterchange, now_ms};
use std::io::Write;
use std::path::{Path, PathBuf};

/// Arguments of `sibyl ledger`.
#[derive(Debug, clap::Args)]
pub struct LedgerArgs {
    #[command(subcommand)]
    pub command: LedgerCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum LedgerCommand {
    /// Write this member's ledgers as JSON and retire them here: this data
    /// directory refuses to sign any later round. Run with the node stopped.
    #[command(
        after_help = "Example:\n  sibyl ledger export --config /etc/sibyl/node.toml --out ledger.json\n\nCopy ledger.json to the new host and run `sibyl ledger import` there before its first start."
    )]
    Export {
        #[arg(long)]
        config: PathBuf,
        /// Where to write the JSON (`-`: standard output).
        #[arg(long, default_value = "-")]
        out: PathBuf,
        /// Do not retire this data directory (a snapshot only: a member run
        /// from it again may sign rounds the file does not hold).
        #[arg(long)]
        keep: bool,
    },
    /// Merge an exported ledger into this member's data directory; refuses a
    /// file of another committee, a file older than the ledger here, and a
    /// ledger already in use (unless --merge). Run with the node stopped.
    #[command(
        after_help = "Example:\n  sibyl ledger import --config /etc/sibyl/node.toml ledger.json\n  sibyl run --config /etc/sibyl/node.toml"
    )]
    Import {
        #[arg(long)]
        config: PathBuf,
        /// The file `sibyl ledger export` wrote.
        file: PathBuf,
        /// Also merge into a ledger that already holds signed rounds.
        #[arg(long)]
        merge: bool,
    },
}

/// `sibyl ledger` entry point.
pub fn run(args: LedgerArgs) -> Result<()> {
    match args.command {
        LedgerCommand::Export { config, out, keep } => export(&config, &out, keep),
        LedgerCommand::Import {
            config,
            file,
            merge,
        } => import(&config, &file, merge),
    }
}

/// The member must be stopped: its API port must be free. (A running node
/// keeps its observation record in memory and would not see the change.)
fn refuse_if_running(config: &Config) -> Result<()> {
    let mut addr = config.api_listen();
    if addr.ip().is_unspecified() {
        addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    if std::net::TcpStream::connect_timeout(&addr, std::time::Duration::from_millis(300)).is_ok() {
        bail!(
            "something listens on this member's API address {addr}: stop the node (`systemctl stop sibyl`) before moving its ledgers"
        );
    }
    Ok(())
}

fn export(config_path: &Path, out: &Path, keep: bool) -> Result<()> {
    let config = Config::load(config_path)?;
    refuse_if_running(&config)?;
    let db_path = config.db_path();
    if !db_path.exists() {
        bail!(
            "{} does not exist: this member has no signing ledger to export (check `node.data_dir` and `store.path`)",
            db_path.display()
        );
    }
    let observed = ObservationLedger::open(&config.observed_round_path())?;
    let mut db = Db::open(&db_path)?;
    let digest = config.committee.digest.0;
    let (file, was_retired) = db.export_ledger(&digest, observed.last(), !keep, now_ms())?;
    let json = serde_json::to_string_pretty(&file)? + "\n";
    if out == Path::new("-") {
        std::io::stdout().write_all(json.as_bytes())?;
    } else {
        std::fs::write(out, &json).with_context(|| format!("cannot write {}", out.display()))?;
    }
    eprintln!(
        "ledger: exported {} signed round(s) (newest {}), newest observed round {}",
        file.signing.len(),
        file.newest_signed()
            .map_or_else(|| "none".into(), |r| r.to_string()),
        file.last_observed_round
            .map_or_else(|| "none".into(), |r| r.to_string()),
    );
    if was_retired {
        eprintln!("ledger: this data directory was already retired by an earlier export");
    } else if keep {
        eprintln!(
            "ledger: --keep: this data directory can still sign; never run the member here and on another host"
        );
    } else {
        eprintln!(
            "ledger: this data directory is retired: it refuses every later round (`sibyl run` refuses to start from it)"
        );
    }
    Ok(())
}

fn import(config_path: &Path, path: &Path, merge: bool) -> Result<()> {
    let config = Config::load(config_path)?;
    refuse_if_running(&config)?;
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let file: LedgerInterchange = serde_json::from_slice(&bytes)
        .with_context(|| format!("{} is not a ledger interchange file", path.display()))?;
    let data_dir = config.data_dir();
    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("cannot create the data directory {}", data_dir.display()))?;
    let mut db = Db::open(&config.db_path())?;
    let summary = db.import_ledger(&file, &config.committee.digest.0, merge)?;
    // Never lowered: `record` only moves forward. A member that signed a
    // round observed it, so the newest signed round bounds it too.
    let mut observed = ObservationLedger::open(&config.observed_round_path())?;
    if let Some(r) = file.last_observed_round.max(file.newest_signed()) {
        observed.record(r)?;
    }
    eprintln!(
        "ledger: imported {} signed round(s) ({} already held); newest signed round {}, newest observed round {}",
        summary.added,
        summary.already,
        summary
            .newest
            .map_or_else(|| "none".into(), |r| r.to_string()),
        observed
            .last()
            .map_or_else(|| "none".into(), |r| r.to_string()),
    );
    Ok(())
}
