//! Verifying and accepting signed reports.

use super::*;

impl Node {
    pub(super) fn on_report(&mut self, now: TimestampMs, msg: SignedMessage) {
        let Payload::Report(report) = msg.payload else {
            return;
        };
        if self
            .last_report_round
            .is_some_and(|r| report.header.round <= r)
        {
            self.stats.stale_messages += 1;
            return;
        }
        // A report of this round over exactly the leaves and root this member
        // recomputed and checked itself needs no second Merkle computation;
        // the group signature is checked either way.
        let checked = report.header.round == self.round
            && self.rs.checked.as_ref().is_some_and(|(root, leaves)| {
                *root == report.header.merkle_root && *leaves == report.leaves
            });
        let valid = if checked {
            self.verify_report_signature(&report)
        } else {
            self.verify_report(&report)
        };
        if !valid {
            self.stats.invalid_messages += 1;
            return;
        }
        self.accept_report(now, report);
    }

    /// Checks a signed report against the group key and its own leaves. The
    /// header's signature comes first: a forged report costs one signature
    /// check, not a Merkle tree over its leaves.
    pub fn verify_report(&self, report: &SignedReport) -> bool {
        if report.leaves.len() > self.committee.feeds().len() {
            return false;
        }
        self.verify_report_signature(report)
            && merkle_root(&report.leaves) == report.header.merkle_root
    }

    /// Version, config digest and group signature of a report, without the
    /// Merkle root (which the caller has established).
    pub(super) fn verify_report_signature(&self, report: &SignedReport) -> bool {
        if report.header.version != PROTOCOL_VERSION
            || report.header.config_digest != *self.committee.config_digest()
            || report.leaves.is_empty()
            || margin_root(&report.commands, report.margin_state.as_ref())
                != report.header.margin_root
        {
            return false;
        }
        // One signature per suite the committee signs with, each valid.
        if report.signatures.len() != self.lanes.len() {
            return false;
        }
        let digest = report_digest(&report.header);
        self.lanes.iter().all(|lane| {
            report
                .signatures
                .get(&lane.suite())
                .is_some_and(|sig| with_lane!(lane, l => l.verify(&digest, &sig.0)))
        })
    }

    pub(super) fn accept_report(&mut self, now: TimestampMs, report: SignedReport) {
        let round = report.header.round;
        self.last_report_round = Some(round);
        if let Some(m) = &report.margin_state {
            self.last_margin_round = self.last_margin_round.max(Some(m.round));
        }
        self.schedule.note_report(round);
        for leaf in &report.leaves {
            note_signed_leaf(&mut self.last_values, leaf, report.header.timestamp_ms);
        }
        self.note_ordered(&report);
        self.stats.reports_accepted += 1;
        if round == self.round && !self.rs.reported {
            if self.rs.leader.is_some() {
                // The leader of the round sends the report to every member,
                // whether its own attempt completed or a signer handed it
                // the report (`Node::on_proposal`): members that could not
                // assemble it themselves hold it one hop later, and their
                // view of the leader schedule stays the others'.
                let msg = self.sign_msg(round, Payload::Report(report.clone()));
                self.out.push(Action::Broadcast { bytes: msg.bytes });
            } else if self.leader_of(round) != self.me {
                self.rs.held = Some(report.clone());
            }
        }
        self.out.push(Action::SignedReport(report));
        if round >= self.round {
            let pending_round = self.next_round_at.map_or(0, |(r, _)| r);
            if round + 1 > pending_round {
                let at = if round == self.round {
                    self.rs.reported = true;

                    // The first slot after this round's start: one round
                    // per slot, and a round that began off the grid (after
                    // a timeout or a jump) brings the member back onto it.
                    next_slot(
                        now.max(self.rs.entered_at) + 1,
                        self.committee.timeouts().round_interval_ms,
                    )
                } else {
                    now
                };
                self.next_round_at = Some((round + 1, at));
            }
        }
    }
}
