//! Test-only misbehaviour of a real `sibyl run` process, compiled only with
//! the cargo feature `fault-injection` (daemon/tests/hostile_processes.rs and
//! scripts/bench-faults build it; a default or release build has none of
//! this). The environment variable `SIBYL_FAULT` picks one:
//!
//! - `withhold`: observe and take part, but never send a signature share;
//! - `invalid-shares`: send signature shares that do not verify;
//! - `refuse`: refuse every proposal with a signed refusal;
//! - `mute-observations`: never send an observation (follow the rounds and
//!   take reports, but never be in a leader's aggregate, as a member whose
//!   observations are always late).

use sibyl_aggregator::round::Node;
use std::sync::OnceLock;

/// The fault `SIBYL_FAULT` asks for, if any.
pub fn mode() -> Option<&'static str> {
    static MODE: OnceLock<Option<String>> = OnceLock::new();
    MODE.get_or_init(|| std::env::var("SIBYL_FAULT").ok().filter(|m| !m.is_empty()))
        .as_deref()
}

/// Whether this member withholds its signature shares.
pub fn withhold() -> bool {
    mode() == Some("withhold")
}

/// Switches the protocol's own fault modes on `node` as `SIBYL_FAULT` says.
pub fn apply(mut node: Node) -> Node {
    match mode() {
        None => {}
        Some("invalid-shares") => node.inject_faults(true, false, false),
        Some("refuse") => node.inject_faults(false, true, false),
        Some("mute-observations") => node.inject_faults(false, false, true),
        Some("withhold") => {}
        Some(other) => tracing::error!(fault = other, "unknown SIBYL_FAULT; behaving honestly"),
    }
    if let Some(m) = mode() {
        tracing::warn!(
            fault = m,
            "FAULT INJECTION: this member misbehaves on purpose (test build)"
        );
    }
    node
}
