//! Price sources: one adapter per exchange format, source health, and the
//! simulated exchange the devnet and tests run against.
//!
//! ```text
//!  venue REST ──(poll, rate limit, retry, breaker)──┐
//!  venue WS ────(subscribe, ping, stale → reconnect)┤  RawQuote (decimal text)
//!                                                   ▼
//!                        quote::Quote::check  (sanity; rejections counted per source/reason)
//!                                                   ▼
//!                     slots: latest Quote per (feed, source)  ──► metrics
//!                                                   ▼  every 250 ms / on change
//!          aggregate::observe (stablecoin conversion, outliers, weighted median)
//!                                                   ▼
//!          FeedService::observations(): watch<BTreeMap<feed, Observation>>
//! ```
//!
//! Prices are decimal text until [`quote`] turns them into `i128` fixed point
//! at the feed's decimals (the committee's, handed over in [`config`]); no
//! float touches a price. Each venue is one file under `venue/` behind
//! `VenueSpec`; `ws` and `service` run them, sharing the source state of
//! `slots`. `sim` (feature `sim`) is a seeded simulated exchange that speaks
//! every venue's format on loopback, rendered by the venue's own file.

pub mod aggregate;
pub mod config;
pub mod decimal;
pub mod duration;
pub mod error;
pub mod health;
pub mod metrics;
pub mod quote;
pub mod service;
#[cfg(feature = "sim")]
pub mod sim;
mod slots;
pub mod time;
pub mod venue;
pub mod ws;

pub use aggregate::Observation;
pub use config::SourcesConfig;
pub use service::{FeedService, Observations, SourceStatus};
