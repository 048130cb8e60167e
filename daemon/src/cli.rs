//! Command line. Each subcommand lives in its own module and is dispatched here.

use clap::{Parser, Subcommand};

/// Sibyl: a decentralized price oracle with threshold-signed reports.
#[derive(Debug, Parser)]
#[command(name = "sibyl", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print the version and exit.
    Version,
    /// Serve a simulated exchange that speaks every adapter's format on loopback.
    SimExchange(crate::cmd_sources::SimExchangeArgs),
    /// Inspect and benchmark the price sources (`probe`, `bench`).
    Sources(crate::cmd_sources::SourcesArgs),
    /// Make this member's identity key (the first step of joining a committee).
    Identity(crate::cmd_identity::IdentityArgs),
    /// Make trusted-dealer keys for a test or devnet committee.
    Keygen(crate::keygen::KeygenArgs),
    /// Run a committee member.
    Run(crate::node::run::RunArgs),
    /// Check a signed report against a committee's group key.
    Verify(crate::verify_cmd::VerifyArgs),
    /// Run a whole committee on this machine (keys, configs, processes).
    Devnet(crate::devnet::DevnetArgs),
    /// Run the distributed key generation ceremony with the committee.
    Dkg(crate::dkg::DkgArgs),
    /// Inspect configuration files.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Run the deterministic committee simulator over many seeds; the last
    /// line of output is a JSON summary. Exits non-zero on a safety violation.
    Simulate(crate::cmd_simulate::SimulateArgs),
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Validate node.toml and the committee file it names; print OK or every problem.
    Check {
        #[arg(long)]
        config: std::path::PathBuf,
    },
}

pub fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Version => {
            println!("sibyl {}", env!("CARGO_PKG_VERSION"));
            Ok(())
        }
        Command::SimExchange(args) => crate::cmd_sources::sim_exchange(args),
        Command::Sources(args) => crate::cmd_sources::sources(args),
        Command::Identity(args) => crate::cmd_identity::run(args),
        Command::Keygen(args) => crate::keygen::run(args),
        Command::Run(args) => crate::node::run::run(args),
        Command::Verify(args) => crate::verify_cmd::run(args),
        Command::Devnet(args) => crate::devnet::run(args),
        Command::Dkg(args) => crate::dkg::command(args),
        Command::Config(ConfigCommand::Check { config }) => crate::config::check_command(&config),
        Command::Simulate(args) => crate::cmd_simulate::run(args),
    }
}
