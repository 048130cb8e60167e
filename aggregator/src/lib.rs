//! Sibyl's protocol core: pure and deterministic. No I/O, no clock, no OS
//! randomness: time and randomness come in as arguments, so every rule of the
//! protocol can be tested in microseconds and replayed exactly.

pub mod codec;
pub mod digest;
pub mod encoding;
/// Fuzz entry points (cargo feature `test-utils`).
#[cfg(any(test, feature = "test-utils"))]
pub mod fuzz;
pub mod merkle;
pub mod report;
/// Trusted-dealer keys and fixtures for tests (cargo feature `test-utils`).
#[cfg(any(test, feature = "test-utils"))]
pub mod testkit;
pub mod verify;

pub mod aggregate;
pub mod evidence;
pub mod round;
/// The seeded committee simulator (cargo feature `sim`).
#[cfg(any(test, feature = "sim"))]
pub mod sim;

pub use codec::{Decode, DecodeError, Encode, Reader, Writer};
pub use report::{
    ConfigDigest, FeedId, FeedIdError, PROTOCOL_VERSION, Price, ReportHeader, ReportLeaf, Round,
    SignatureBytes, SignedReport, Suite, TimestampMs,
};
