//! The Sibyl daemon: networking, keys, storage, the round driver, the HTTP
//! API and the on-chain transmitter around the pure protocol core.

pub mod api;
pub mod chain;
pub mod cli;
pub mod cmd_identity;
pub mod cmd_simulate;
pub mod cmd_sources;
pub mod config;
pub mod devnet;
pub mod dkg;
pub mod fuzz;
pub mod keygen;
pub mod keystore;
pub mod margin_svc;
pub mod net;
pub mod node;
pub mod priority;
pub mod replay;
pub mod store;
pub mod verify_cmd;
