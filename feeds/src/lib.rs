//! Price sources: one adapter per exchange format, source health, and the
//! simulated exchange the devnet and tests run against.

pub mod aggregate;
pub mod config;
pub mod decimal;
pub mod error;
pub mod health;
pub mod metrics;
pub mod quote;
pub mod service;
pub mod time;
pub mod venue;
pub mod ws;
