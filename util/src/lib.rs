//! Small pieces every layer of Sibyl uses and that depend on nothing else:
//! the lowest crate of the workspace (no dependencies, no I/O, no clock).
//!
//! - [`TokenBucket`]: the one rate limiter. The committee network limits
//!   each member's messages and bytes with it, the HTTP API each client
//!   address, and the price sources each venue host (waiting for a token).

mod token_bucket;

pub use token_bucket::TokenBucket;
