//! A simulated exchange: one seeded market model served in every adapter's
//! REST format (and the Binance, Coinbase, Kraken and OKX WebSocket formats)
//! on loopback, with faults per venue on demand.
//!
//! ```text
//!   market model (seeded random walk with jumps, one USD price per asset)
//!        │  per venue: small static offset, fault (flash crash, drift, stale, ...)
//!        ▼
//!   GET /<venue>/<venue's own ticker path>   ── REST, in the venue's format
//!   GET /ws/<venue>                          ── WebSocket, in the venue's format
//!   GET/POST /control/...                    ── faults and scenarios at runtime
//! ```
//!
//! Point adapters at it with a per-venue base URL `http://HOST:PORT/<venue>`
//! (see [`crate::config::SourcesConfig::for_sim_exchange`]).

mod model;
mod render;
mod server;

pub use model::{Fault, Scenario};
pub use server::{SimError, SimExchange, SimOptions};
