//! Command line. Each subcommand lives in its own module and is dispatched here.

use clap::{Parser, Subcommand};

/// Sibyl: a decentralized price oracle with threshold-signed reports.
#[derive(Debug, Parser)]
#[command(
    name = "sibyl",
    version,
    about,
    long_about = None,
    after_help = "Start here:\n  sibyl devnet                              a local committee with a dashboard\n  sibyl config check --config node.toml     validate a member's configuration\n  sibyl run --config node.toml              run a member\n\nEach command's --help shows an example. The operator guide is docs/OPERATOR.md."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print the version and exit.
    #[command(after_help = "Example:\n  sibyl version")]
    Version,
    /// Serve a simulated exchange that speaks every adapter's format on loopback.
    #[command(
        after_help = "Example:\n  sibyl sim-exchange --listen 127.0.0.1:9100 --scenario flash-crash\n  curl -X POST 127.0.0.1:9100/control/scenario ...   # change faults at runtime (docs/SOURCES.md)"
    )]
    SimExchange(crate::cmd::sources::SimExchangeArgs),
    /// Inspect and benchmark the price sources (`probe`, `bench`).
    #[command(
        after_help = "Example:\n  sibyl sources probe --config /etc/sibyl/node.toml\n  sibyl sources bench"
    )]
    Sources(crate::cmd::sources::SourcesArgs),
    /// Make this member's identity key (the first step of joining a committee).
    Identity(crate::cmd::identity::IdentityArgs),
    /// Make trusted-dealer keys for a test or devnet committee.
    #[command(
        after_help = "Example:\n  sibyl keygen --dealer --nodes 4 --threshold 3 --out ./keys\n\nFor a real committee use `sibyl identity` and `sibyl dkg` instead."
    )]
    Keygen(crate::cmd::keygen::KeygenArgs),
    /// Run a committee member.
    #[command(
        after_help = "Example:\n  sibyl run --config /etc/sibyl/node.toml\n\nCheck the config first with `sibyl config check --config ...`. SIGTERM stops the node cleanly."
    )]
    Run(crate::cmd::run::RunArgs),
    /// Check a signed report against a committee's group key.
    #[command(
        after_help = "Example:\n  sibyl verify http://127.0.0.1:8080/v1/reports/latest --group-key <HEX> --committee committee.toml\n  sibyl verify report.json --keys keys/frost.ed25519.pub.json --config-digest <HEX>"
    )]
    Verify(crate::cmd::verify::VerifyArgs),
    /// Follow members, verify their reports, store them in PostgreSQL and serve the public API.
    #[command(
        after_help = "Example:\n  sibyl gateway --committee committee.toml --group-key ed25519:<HEX> \\\n      --follow http://10.0.0.1:8080 --follow http://10.0.0.2:8080 \\\n      --postgres \"host=/run/postgresql dbname=sibyl\" --listen 0.0.0.0:8090\n\nHolds no keys; several gateways behind a load balancer give the same answers (docs/API.md, \"Gateways\")."
    )]
    Gateway(crate::cmd::gateway::GatewayArgs),
    /// Run a whole committee on this machine (keys, configs, processes).
    #[command(
        after_help = "Example:\n  sibyl devnet --nodes 4 --duration 60s --dir /tmp/devnet\n\nPrints the dashboard URL and a ready `sibyl verify` command; Ctrl-C stops everything."
    )]
    Devnet(crate::cmd::devnet::DevnetArgs),
    /// Run the distributed key generation ceremony with the committee.
    #[command(
        after_help = "Example:\n  sibyl dkg --config /etc/sibyl/node.toml\n\nEvery member runs it at about the same time; on success it prints the group key."
    )]
    Dkg(crate::cmd::dkg::DkgArgs),
    /// Proactive refresh: every member gets a new share of the same group
    /// key; old shares are erased once every member stored its new one.
    #[command(
        after_help = "Example:\n  sibyl refresh --live --config /etc/sibyl/node.toml   # on one member, nodes running: the committee refreshes inside `sibyl run`\n  sibyl refresh --config /etc/sibyl/node.toml          # offline: every member at about the same time, with the node stopped\n  sibyl refresh --config /etc/sibyl/node.toml --new-committee committee-without-4.toml   # remove member 4: every other member, nodes stopped\n\ndocs/OPERATOR.md, \"Refreshing key shares\" and \"Removing a member\"."
    )]
    Refresh(crate::cmd::dkg::RefreshArgs),
    /// Give a member that lost its key shares its own shares back, from t
    /// helpers (the group key and every other share stay as they are).
    #[command(
        after_help = "Example: member 4 lost its keys (helpers default to the t lowest-numbered others):\n  sibyl repair --config /etc/sibyl/node.toml --member 4\nAdd member 5 (every member, the new one too):\n  sibyl repair --config /etc/sibyl/node.toml --member 5 --new-committee committee-with-5.toml\n\nThe repaired member and every helper run it at about the same time, with the node stopped (docs/OPERATOR.md, \"Repairing a member that lost its shares\", \"Adding a member\")."
    )]
    Repair(crate::cmd::dkg::RepairArgs),
    /// Inspect configuration files.
    #[command(after_help = "Example:\n  sibyl config check --config /etc/sibyl/node.toml")]
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Run the deterministic committee simulator over many seeds; the last
    /// line of output is a JSON summary. Exits non-zero on a safety violation.
    #[command(
        after_help = "Example:\n  sibyl simulate --nodes 4 --byzantine 1 --seeds 100 --rounds 20\n  sibyl simulate --nodes 7 --byzantine 2 --seeds 20 --rounds 50 --suite secp256k1-evm"
    )]
    Simulate(crate::cmd::simulate::SimulateArgs),
    /// Sign the on-chain committee rotation (SibylFeed.rotateCommittee) with
    /// the current committee's secp256k1-evm key shares.
    #[command(
        after_help = "Example:\n  sibyl rotation --member-config old/node-1/node.toml --member-config old/node-2/node.toml \\\n      --member-config old/node-3/node.toml --new-committee new/committee.toml --new-group-key 03ab...\n\nPrints JSON with the signature and ready rotateCommittee calldata (docs/OPERATOR.md, section 6)."
    )]
    Rotation(crate::cmd::rotation::RotationArgs),
    /// One member's part of signing the rotation where its share lives: t
    /// members of a committee run it together over the committee network.
    #[command(
        after_help = "Example: on each of t members of the current committee (and of the new one):\n  sibyl rotation-sign --config /etc/sibyl/node.toml --current-committee old.toml --new-committee new.toml \\\n      --new-group-key 03ab... --chain-id 1 --contract 0x... --rotation-count 0 > part.json\n(add --live to sign inside the running member: the committee keeps signing reports)\n\nThen `sibyl rotation-assemble --current old-part.json --new new-part.json --new-committee new.toml` (docs/OPERATOR.md, section 6)."
    )]
    RotationSign(crate::cmd::rotation::RotationSignArgs),
    /// Turn the two committees' `rotation-sign` parts into rotateCommittee calldata.
    #[command(
        after_help = "Example:\n  sibyl rotation-assemble --current old-part.json --new new-part.json --new-committee new.toml\n  ... --submit-with /etc/sibyl/node.toml   # also send it from that member's transmitter account and wait for the receipt\n\nPrints the rotateCommittee calldata; anyone may send it (docs/OPERATOR.md, section 6)."
    )]
    RotationAssemble(crate::cmd::rotation::RotationAssembleArgs),
    /// Re-run the margin engine's stored inputs and compare with its stored events.
    #[command(
        after_help = "Example:\n  sibyl replay --db /var/lib/sibyl/sibyl.db\n  sibyl replay --config /etc/sibyl/node.toml --from-reports\n\nExits non-zero and prints the first differing event if the replay diverges. With --from-reports the engine is rebuilt from the stored signed reports alone (prices and committee-ordered commands), every signed margin state root is checked, and the result is compared with the node's margin log."
    )]
    Replay(crate::cmd::replay::ReplayArgs),
    /// Margin account owners: make a key, sign a command for
    /// `POST /v1/margin/signed`.
    #[command(
        after_help = "Example:\n  sibyl margin keygen --out owner.key\n  sibyl margin sign --key owner.key --node http://127.0.0.1:8080 --account 40 --nonce 1 '{\"withdraw\":{\"account\":40,\"asset\":\"USD\",\"amount\":250000000}}'\n\ndocs/MARGIN.md, \"Account keys\"."
    )]
    Margin(crate::cmd::margin::MarginArgs),
    /// Move a member's signing and observation ledgers to a new host
    /// (export, then import there) so it never signs a round twice.
    #[command(
        after_help = "Example:\n  old host: sibyl ledger export --config node.toml --out ledger.json\n  new host: sibyl ledger import --config node.toml ledger.json\n\nThe procedure: docs/OPERATOR.md, \"Moving a member to a new host\"."
    )]
    Ledger(crate::cmd::ledger::LedgerArgs),
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Validate node.toml and the committee file it names; print OK or every problem.
    #[command(
        after_help = "Example:\n  sibyl config check --config /etc/sibyl/node.toml\n  sibyl config check --config node.toml --keys identity    # before the DKG\n\nExits non-zero on every problem `sibyl run` would refuse; prints warnings for settings that load but do not do what they say."
    )]
    Check {
        #[arg(long)]
        config: std::path::PathBuf,
        /// Which key files to open: `all` (what `sibyl run` opens), `identity`
        /// (before the DKG: passphrase, identity, membership) or `none` (the
        /// files only).
        #[arg(long, value_enum, default_value = "all")]
        keys: sibyl_node::config::KeyCheck,
    },
}

pub fn main() -> anyhow::Result<()> {
    exit_quietly_on_broken_pipe();
    let cli = Cli::parse();
    match cli.command {
        Command::Version => {
            println!("sibyl {}", env!("CARGO_PKG_VERSION"));
            Ok(())
        }
        Command::SimExchange(args) => crate::cmd::sources::sim_exchange(args),
        Command::Sources(args) => crate::cmd::sources::sources(args),
        Command::Identity(args) => crate::cmd::identity::run(args),
        Command::Keygen(args) => crate::cmd::keygen::run(args),
        Command::Run(args) => crate::cmd::run::run(args),
        Command::Verify(args) => crate::cmd::verify::run(args),
        Command::Devnet(args) => crate::cmd::devnet::run(args),
        Command::Gateway(args) => crate::cmd::gateway::run(args),
        Command::Dkg(args) => crate::cmd::dkg::command(args),
        Command::Refresh(args) => crate::cmd::dkg::refresh_command(args),
        Command::Repair(args) => crate::cmd::dkg::repair_command(args),
        Command::Config(ConfigCommand::Check { config, keys }) => {
            crate::cmd::config::check_command(&config, keys)
        }
        Command::Simulate(args) => crate::cmd::simulate::run(args),
        Command::Replay(args) => crate::cmd::replay::run(args),
        Command::Rotation(args) => crate::cmd::rotation::run(args),
        Command::RotationSign(args) => crate::cmd::rotation::sign_networked(args),
        Command::RotationAssemble(args) => crate::cmd::rotation::assemble(args),
        Command::Ledger(args) => crate::cmd::ledger::run(args),
        Command::Margin(args) => crate::cmd::margin::run(args),
    }
}

/// Exit status of a command whose output pipe was closed (as if killed by
/// SIGPIPE, which a shell reports as 128 + 13).
pub const BROKEN_PIPE_EXIT: u8 = 141;

/// Whether a command failed because its output pipe was closed (a command
/// that writes with `writeln!` and returns the error).
pub fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// `sibyl config check ... | head -1`: Rust ignores SIGPIPE, so `println!`
/// to a closed pipe panics ("failed printing to stdout: Broken pipe"). Every
/// command prints with `println!`; rather than a stack trace, exit quietly
/// with [`BROKEN_PIPE_EXIT`], as a program killed by SIGPIPE would. Other
/// panics keep the default report.
fn exit_quietly_on_broken_pipe() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let message = info.payload_as_str().unwrap_or("");
        if (message.starts_with("failed printing to stdout")
            || message.starts_with("failed printing to stderr"))
            && message.contains("Broken pipe")
        {
            std::process::exit(i32::from(BROKEN_PIPE_EXIT));
        }
        default(info);
    }));
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn every_subcommand_help_shows_an_example() {
        let mut cli = Cli::command();
        cli.build();
        let top = cli.render_long_help().to_string();
        assert!(top.contains("sibyl devnet"), "{top}");
        for sub in cli.get_subcommands_mut() {
            let name = sub.get_name().to_string();
            if name == "help" {
                continue;
            }
            let help = sub.render_long_help().to_string();
            assert!(
                help.contains("Example:"),
                "`sibyl {name} --help` has no example:\n{help}"
            );
        }
    }
}
