//! Command relay: a member's pending margin commands reach every member, and
//! any member carries them into a round when the origin's own observations
//! do not (docs/ROUND.md, "Command relay").
//!
//! A member sends its offers ([`Payload::Offers`], signed with its identity
//! key) to every member whenever they change (also to none: its commands
//! were taken or withdrawn), and again every [`OFFERS_RESEND_MS`] while
//! they wait. Every member keeps each origin's latest offers; once they
//! waited [`RELAY_AFTER_ROUNDS`] rounds without a report ordering them, it
//! relays the signed message in its own observations
//! ([`ObservationMsg::relayed`]), for at most [`OFFERS_TTL_MS`] after the
//! latest copy arrived, and leader and signers order them as if the
//! origin's observation had been attributed. A relayed copy of a command
//! already ordered changes nothing: members take each (origin, nonce) once.
//! Times here are this member's own clock (`raw_now`): only durations
//! matter.

use super::*;

/// Bytes of relayed offers one observation carries beyond the first
/// (longest-waiting) origin's: a full list of 64 commands of 4 KiB each.
const RELAYED_BYTES: usize = 256 << 10;

impl Node {
    /// Sends this member's offers to every member, after a change (an
    /// empty list only if a non-empty one was sent: holders drop theirs) or
    /// when they are due again.
    pub(super) fn send_offers(&mut self) {
        if self.offered_commands.is_empty() && self.offers_sent_ms.is_none() {
            return;
        }
        let msg = self.sign_msg(
            self.round,
            Payload::Offers(OffersMsg {
                commands: self.offered_commands.clone(),
            }),
        );
        self.offers_sent_ms = (!self.offered_commands.is_empty()).then_some(self.raw_now);
        self.stats.offers_sent += 1;
        self.out.push(Action::Broadcast { bytes: msg.bytes });
    }

    /// On entering a round: sends the pending offers again if
    /// [`OFFERS_RESEND_MS`] passed since they were last sent.
    pub(super) fn resend_offers_if_due(&mut self) {
        if self
            .offers_sent_ms
            .is_some_and(|at| self.raw_now >= at.saturating_add(OFFERS_RESEND_MS))
        {
            self.send_offers();
        }
    }

    /// Another member's offers (decoded and signature-checked): kept in
    /// place of the origin's earlier ones unless older; dropped if a report
    /// already ordered every command in them (or there are none).
    pub(super) fn on_offers(&mut self, msg: SignedMessage) {
        let Payload::Offers(o) = msg.payload else {
            return;
        };
        let origin = msg.sender;
        if origin == self.me {
            return;
        }
        if self
            .held_offers
            .get(&origin)
            .is_some_and(|h| h.round > msg.round)
        {
            return;
        }
        let mark = self.ordered_marks.get(&origin).copied();
        if o.commands
            .iter()
            .all(|c| mark.is_some_and(|m| c.nonce <= m))
        {
            self.held_offers.remove(&origin);
            return;
        }
        // Waiting starts now, or earlier if the same commands were already
        // waiting (a resend must not restart the wait).
        let since = match self.held_offers.get(&origin) {
            Some(h) if h.relayed.commands.first() == o.commands.first() => h.since,
            _ => self.round,
        };
        self.held_offers.insert(
            origin,
            HeldOffers {
                relayed: RelayedOffers {
                    origin,
                    commands: o.commands,
                    bytes: msg.bytes,
                },
                round: msg.round,
                since,
                arrived_ms: self.raw_now,
            },
        );
    }

    /// The offers this member relays in its observation of this round: the
    /// ones that waited longest (at most [`message::MAX_RELAYED_OFFERS`]),
    /// ascending by origin. Expired ones are dropped.
    pub(super) fn offers_to_relay(&mut self) -> Vec<RelayedOffers> {
        let now = self.raw_now;
        self.held_offers
            .retain(|_, h| now <= h.arrived_ms.saturating_add(OFFERS_TTL_MS));
        let mut due: Vec<(&u16, &HeldOffers)> = self
            .held_offers
            .iter()
            .filter(|(_, h)| self.round >= h.since.saturating_add(RELAY_AFTER_ROUNDS))
            .collect();
        due.sort_by_key(|(origin, h)| (h.since, **origin));
        due.truncate(message::MAX_RELAYED_OFFERS);
        // The longest-waiting always; others while the relayed bytes stay
        // within RELAYED_BYTES (observations stay well under a transport's
        // message limit, 1 MiB by default).
        let mut bytes = 0usize;
        let mut out: Vec<RelayedOffers> = Vec::new();
        for (_, h) in due {
            bytes += h.relayed.bytes.len();
            if !out.is_empty() && bytes > RELAYED_BYTES {
                break;
            }
            out.push(h.relayed.clone());
        }
        out.sort_by_key(|r| r.origin);
        self.stats.offers_relayed += out.len() as u64;
        out
    }

    /// A report this member holds: its commands are ordered, so offers that
    /// hold nothing newer are no longer relayed.
    pub(super) fn note_ordered(&mut self, report: &SignedReport) {
        if report.commands.is_empty() {
            return;
        }
        for c in &report.commands {
            let m = self.ordered_marks.entry(c.origin).or_insert(c.nonce);
            *m = (*m).max(c.nonce);
        }
        let marks = &self.ordered_marks;
        self.held_offers.retain(|origin, h| {
            let mark = marks.get(origin).copied();
            h.relayed
                .commands
                .iter()
                .any(|c| mark.is_none_or(|m| c.nonce > m))
        });
    }
}
