//! A Sibyl committee member below its commands and its API: the node
//! config, the SQLite store, the encrypted keystore, the libp2p committee
//! network, the key ceremonies, the round driver and the margin service.
//!
//! ```text
//!   feeds (sources) ──► driver::source ──► observations ─┐
//!                                                       ▼
//!   net (libp2p) ◄──── Transport ────► driver::Driver (aggregator's round machine)
//!                                        │ signed reports (broadcast)
//!                                        ├──► store (history, signing ledger)
//!                                        └──► margin_svc (the margin engine)
//! ```
//!
//! The crates above it (`sibyl-chain`, `sibyl-api`, the `sibyl` binary)
//! subscribe to the driver's reports and read the store; nothing here
//! depends on them.

pub mod config;
pub mod dkg;
pub mod driver;
/// Fuzz entry points (cargo feature `fuzz`, used by the daemon/fuzz crate).
#[cfg(any(test, feature = "fuzz"))]
pub mod fuzz;
pub mod keygen;
pub mod keystore;
pub mod margin_svc;
pub mod net;
pub mod priority;
pub mod refresh;
pub mod rekey;
pub mod repair;
pub mod replay;
pub mod store;
