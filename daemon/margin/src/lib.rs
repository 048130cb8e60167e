//! Sibyl's embedded margin and liquidation engine: pure and deterministic.
//!
//! ```text
//!  verified signed reports ──► apply_prices ──┐
//!  admin commands ───────────► apply_command ─┤──► Engine ──► Vec<EventRecord>
//!  owner-signed commands ────► apply_signed ──┤
//!                                             │    (BTreeMaps, i128 money)
//!  snapshot / restore ◄───────────────────────┘
//! ```
//!
//! No I/O, no clock, no tokio: time arrives with the inputs. Money, prices
//! and sizes are fixed-point `i128` with checked arithmetic (`fixed`); floats
//! appear only inside option pricing (`options`, on the deterministic
//! `detmath` functions) and are rounded at the boundary, so every node and
//! every replay computes the same events byte for byte.

// Nothing here may panic on its inputs or silently wrap a number: money is
// converted with checked conversions that return `EngineError`.
#![warn(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss
)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

pub mod demo;
pub mod detmath;
pub mod engine;
pub mod error;
pub mod fixed;
mod index;
pub mod options;
mod parallel;
pub mod signed;
pub mod state_root;
pub mod types;
pub mod unit_set;
mod warm;

pub use demo::{DemoBook, DemoParams, demo_book, demo_book_with};
pub use engine::{Engine, Greeks, Snapshot};
pub use error::EngineError;
pub use signed::{CommitteeKey, OwnerKey, SignedCommand};
pub use types::*;
pub use unit_set::UnitSet;
/// Tuning: reading ahead on (the default) or off (`warm.rs`).
pub use warm::set_read_ahead;
