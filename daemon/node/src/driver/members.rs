//! What this member sees of each committee member, for `/v1/committee`, the
//! dashboard's committee panel and the `sibyl_peer_*` metrics.
//!
//! ```text
//!   Transport: messages, reports ──► Driver::last_seen ─┐
//!   Transport::last_seen_ms (ping replies) ─────────────┤
//!   Node::member_stats (shares, refusals, offsets) ─────┼──► NodeStatus::members
//!   accepted reports: the round's leader ──► led ───────┘         (a few times a second)
//! ```

use super::Driver;
use super::clock::Clock;
use super::transport::Transport;
use rand_core::{CryptoRng, RngCore};
use serde::Serialize;

/// One committee member as this member sees it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct MemberView {
    /// When this member last heard from it (unix ms): any authenticated
    /// message, gossiped report or ping reply. None for this member itself.
    pub last_seen_ms: Option<u64>,
    /// Signed reports accepted here whose round it led.
    pub rounds_led: u64,
    /// Its signature shares this member received as leader.
    pub shares_received: u64,
    /// Its signature shares that did not verify.
    pub invalid_shares: u64,
    /// Its refusals to sign this member's proposals.
    pub refusals: u64,
    /// Signing attempts (led by this member) it did not answer.
    pub attempts_silent: u64,
    /// Its clock's offset as estimated here; for this member itself, its own
    /// estimated offset from the committee.
    pub clock_offset_ms: Option<i64>,
}

impl<T: Transport, R: RngCore + CryptoRng + Send, K: Clock> Driver<T, R, K> {
    /// Refreshes every member's view in the status and the `sibyl_peer_*`
    /// and `sibyl_clock_offset_seconds` metrics. Called a few times a
    /// second, not per event.
    pub(super) fn publish_members(&mut self, now_ms: u64) {
        for (index, at) in self.transport.last_seen_ms() {
            let seen = self.last_seen.entry(index).or_insert(at);
            *seen = (*seen).max(at);
        }
        let me = self.node.index();
        let stats = self.node.member_stats();
        let own_offset = self.node.clock_offset_ms();
        let mut views = std::collections::BTreeMap::new();
        for m in self.node.committee().members() {
            let mut view = MemberView {
                rounds_led: self.led.get(&m.index).copied().unwrap_or(0),
                ..MemberView::default()
            };
            if m.index == me {
                view.clock_offset_ms = own_offset;
            } else {
                let s = stats.get(&m.index);
                let by_round = s.and_then(|s| s.last_message_ms);
                let by_net = self.last_seen.get(&m.index).copied();
                view.last_seen_ms = by_net.max(by_round);
                if let Some(s) = s {
                    view.shares_received = s.shares_received;
                    view.invalid_shares = s.invalid_shares;
                    view.refusals = s.refusals;
                    view.attempts_silent = s.attempts_silent;
                    view.clock_offset_ms = s.clock_offset_ms;
                }
                if let Some(at) = view.last_seen_ms {
                    self.metrics.set_last_seen(m.index, now_ms, at);
                }
            }
            views.insert(m.index, view);
        }
        self.metrics.set_clock_offset(own_offset);
        self.warn_on_clock_offset(own_offset);
        if let Ok(mut s) = self.status.lock() {
            s.members = views;
            s.clock_offset_ms = own_offset;
        }
    }

    /// Logs (once per change) when this member's clock is off by more than a
    /// quarter of `max_clock_skew`: the protocol then runs on a corrected
    /// clock, but the machine's clock needs fixing (NTP).
    fn warn_on_clock_offset(&mut self, offset: Option<i64>) {
        let limit = self.node.committee().timeouts().max_clock_skew_ms / 4;
        let off = offset.is_some_and(|o| o.unsigned_abs() > limit);
        if off == self.clock_warned {
            return;
        }
        self.clock_warned = off;
        if off {
            tracing::warn!(
                offset_ms = offset,
                correction_ms = self.node.clock_correction_ms(),
                limit_ms = limit,
                "this member's clock is off from the committee's; the protocol corrects for it, but fix the clock (run NTP or chrony)"
            );
        } else {
            tracing::info!(offset_ms = offset, "clock offset back within bounds");
        }
    }
}
