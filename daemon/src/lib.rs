//! The `sibyl` binary: the command line and one module per subcommand
//! under [`cmd`]. The node, the chain transmitter and the API are the
//! crates `sibyl-node`, `sibyl-chain` and `sibyl-api` (docs/ARCHITECTURE.md).

pub mod cli;
pub mod cmd;
