//! Sibyl's protocol core: pure and deterministic. No I/O, no clock, no OS
//! randomness: time and randomness come in as arguments, so every rule of the
//! protocol can be tested in microseconds and replayed exactly.

#![cfg_attr(not(test), warn(clippy::unwrap_used, clippy::expect_used))]
#![warn(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
#![cfg_attr(test, allow(clippy::cast_possible_truncation))]

pub mod codec;
pub mod digest;
pub mod encoding;
/// Fuzz entry points (cargo feature `test-utils`).
#[cfg(any(test, feature = "test-utils"))]
#[allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::cast_possible_truncation
)]
pub mod fuzz;
pub mod merkle;
pub mod report;
/// Trusted-dealer keys and fixtures for tests (cargo feature `test-utils`).
#[cfg(any(test, feature = "test-utils"))]
#[allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::cast_possible_truncation
)]
pub mod testkit;
pub mod verify;

pub mod aggregate;
pub mod dkg;
pub mod ema;
pub use round::evidence;
pub mod round;
/// The seeded committee simulator (cargo feature `sim`).
#[cfg(any(test, feature = "sim"))]
#[allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::cast_possible_truncation
)]
pub mod sim;

pub use codec::{Decode, DecodeError, Encode, Reader, Writer};
pub use report::{
    ConfigDigest, FeedId, FeedIdError, LeafStatus, MAX_COMMAND_BYTES, MAX_COMMANDS_PER_MEMBER,
    MAX_REPORT_COMMANDS, MarginCheckpoint, MarginCommand, PROTOCOL_VERSION, Price, ReportHeader,
    ReportLeaf, Round, SignatureBytes, SignedReport, Suite, TimestampMs,
};
