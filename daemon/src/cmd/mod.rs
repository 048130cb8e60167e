//! One module per subcommand; [`crate::cli`] dispatches to them.

pub mod config;
pub mod devnet;
pub mod dkg;
pub mod gateway;
pub mod identity;
pub mod keygen;
pub mod ledger;
pub mod margin;
pub mod replay;
pub mod rotation;
pub mod run;
pub mod simulate;
pub mod sources;
pub mod verify;
