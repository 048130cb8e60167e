//! The Sibyl daemon: networking, keys, storage, the round driver, the HTTP
//! API and the on-chain transmitter around the pure protocol core.

pub mod cli;
pub mod config;
pub mod keygen;
pub mod keystore;
pub mod node;
pub mod store;
pub mod verify_cmd;
