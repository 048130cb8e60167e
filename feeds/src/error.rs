//! Typed errors of the price sources. Each one says which source failed and
//! why, and maps to a short `reason` label for `sibyl_source_errors_total`.

use thiserror::Error;

/// A decimal literal that could not become a fixed-point number.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum PriceError {
    #[error("empty number")]
    Empty,
    #[error("non-finite number {0:?}")]
    NonFinite(String),
    #[error("not a decimal number: {0:?}")]
    Malformed(String),
    #[error("absurdly large number {0:?}")]
    Absurd(String),
}

/// Why a parsed quote was refused by the sanity checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Error)]
pub enum Rejection {
    #[error("price is not a finite decimal number")]
    NonFinite,
    #[error("price is zero")]
    Zero,
    #[error("price is negative")]
    Negative,
    #[error("price is absurdly large")]
    Absurd,
    #[error("bid is above ask")]
    Crossed,
    #[error("quote timestamp is in the future")]
    Future,
    #[error("quote is too old")]
    TooOld,
    #[error("quote has neither bid/ask nor last price")]
    NoPrice,
}

impl Rejection {
    pub fn label(self) -> &'static str {
        match self {
            Rejection::NonFinite => "non_finite",
            Rejection::Zero => "zero",
            Rejection::Negative => "negative",
            Rejection::Absurd => "absurd",
            Rejection::Crossed => "crossed",
            Rejection::Future => "future",
            Rejection::TooOld => "too_old",
            Rejection::NoPrice => "no_price",
        }
    }
}

impl From<PriceError> for Rejection {
    fn from(e: PriceError) -> Self {
        match e {
            PriceError::Absurd(_) => Rejection::Absurd,
            PriceError::Empty | PriceError::NonFinite(_) | PriceError::Malformed(_) => {
                Rejection::NonFinite
            }
        }
    }
}

/// Why one fetch from one source produced no quote.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SourceError {
    #[error("request timed out after {0} ms")]
    Timeout(u64),
    #[error("connection failed: {0}")]
    Connect(String),
    #[error("HTTP {status}: {body}")]
    HttpStatus { status: u16, body: String },
    #[error("rate limited by the venue (HTTP {status}): {message}")]
    RateLimited { status: u16, message: String },
    #[error("the venue does not know market {0:?}; check the feed's symbol for this venue")]
    UnknownSymbol(String),
    #[error("venue error {code}: {message}")]
    Venue { code: String, message: String },
    #[error("response body is not in the venue's documented format: {0}")]
    Malformed(String),
    #[error("quote rejected: {0}")]
    Rejected(Rejection),
    #[error("circuit breaker open after repeated failures; retrying in {0} ms")]
    CircuitOpen(u64),
    #[error("market {0:?} was not subscribed")]
    NotSubscribed(String),
}

impl SourceError {
    /// Short label for metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            SourceError::Timeout(_) => "timeout",
            SourceError::Connect(_) => "connect",
            SourceError::HttpStatus { .. } => "http_status",
            SourceError::RateLimited { .. } => "rate_limited",
            SourceError::UnknownSymbol(_) => "unknown_symbol",
            SourceError::Venue { .. } => "venue_error",
            SourceError::Malformed(_) => "malformed",
            SourceError::Rejected(r) => r.label(),
            SourceError::CircuitOpen(_) => "circuit_open",
            SourceError::NotSubscribed(_) => "not_subscribed",
        }
    }

    /// Whether retrying the same request soon could help.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            SourceError::Timeout(_)
                | SourceError::Connect(_)
                | SourceError::HttpStatus {
                    status: 500..=599,
                    ..
                }
        )
    }

    pub(crate) fn malformed(e: impl std::fmt::Display) -> Self {
        SourceError::Malformed(snippet(&e.to_string()))
    }
}

/// Why a feed has no observation right now.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ObservationError {
    /// No venue gave a usable price. (Fewer than the feed's `min_sources`
    /// but at least one is not an error: the observation says so.)
    #[error(
        "feed {feed}: no usable source ({quotes} fresh quotes, {outliers} of them left out as outliers); check the venues with `sibyl sources probe`"
    )]
    NoUsableSource {
        feed: String,
        quotes: usize,
        outliers: usize,
    },
    #[error("feed {feed}: arithmetic overflow while aggregating")]
    Overflow { feed: String },
}

/// A configuration mistake, with where it is.
#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("invalid sources config: {0}")]
    Parse(String),
    #[error("invalid sources config: {0}")]
    Invalid(String),
}

pub(crate) fn snippet(s: &str) -> String {
    let mut out: String = s.chars().take(160).collect();
    if s.chars().count() > 160 {
        out.push('…');
    }
    out
}
