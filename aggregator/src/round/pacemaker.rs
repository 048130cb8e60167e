//! Entering rounds, timeouts, skipping rounds whose leader is unreachable,
//! and following the committee to a higher round.

use super::*;

impl Node {
    /// Enters `round` at `now`; `start` is its scheduled slot (`<= now`) or `now`.
    pub(super) fn enter_round<R: RngCore + CryptoRng>(
        &mut self,
        now: TimestampMs,
        start: TimestampMs,
        round: Round,
        rng: &mut R,
    ) {
        let start = start.min(now);
        self.round = round;
        self.next_round_at = None;
        let deadline = if self.leader_unreachable(round) {
            start
        } else {
            start + self.committee.round_ms()
        };
        self.rs = RoundState::new(start, deadline);
        for lane in &mut self.lanes {
            with_lane!(lane, l => l.reset());
        }
        self.stats.rounds_entered += 1;
        self.schedule.prune(&self.committee, round);
        self.out.push(Action::RoundEntered {
            round,
            leader: self.leader_of(round),
            start_ms: self.local_time(start),
        });
        // Signing state of older rounds is useless now; its nonces are gone with `rs`.
        self.pending.retain(|p| p.record.round >= round);
        self.resend_offers_if_due();
        self.send_observation(now, rng);
        // Drop buffered messages of rounds left behind, replay this round's.
        let keep = self.future.split_off(&round);
        self.future = keep;
        if let Some(msgs) = self.future.remove(&round) {
            for m in msgs {
                self.dispatch(now, m, Vec::new(), rng);
                if self.round != round {
                    break;
                }
            }
        }
    }

    pub(super) fn check_timers<R: RngCore + CryptoRng>(&mut self, now: TimestampMs, rng: &mut R) {
        if let Some((r, at)) = self.next_round_at
            && now >= at
        {
            self.enter_round(now, at, r, rng);
        }
        if self.rs.reported {
            return;
        }
        if self.leader_of(self.round) == self.me {
            if self.rs.leader.is_none() {
                self.try_propose(now, rng);
            } else {
                self.on_attempt_deadlines(now);
            }
        }
        self.ask_for_report(now);
        self.relay_to_stuck(now);
        // Rounds whose leader is unreachable end at once (see
        // `enter_round`); bounded by the committee size.
        let round_ms = self.committee.round_ms();
        let mut steps = 0;
        while now >= self.rs.deadline && !self.rs.reported && steps <= self.committee.n() {
            steps += 1;
            // A member that skips a round may be alone in seeing its leader
            // gone: the others leave that round only at its ordinary
            // deadline. The next round this member plays therefore lasts
            // until a round after that, so it meets them there instead of
            // running ahead of them.
            let carry = if self.leader_unreachable(self.round) {
                self.stats.rounds_skipped_unreachable += 1;
                Some(self.rs.carry.max(self.rs.entered_at + round_ms))
            } else {
                self.stats.rounds_timed_out += 1;
                None
            };
            self.enter_round(now, now, self.round + 1, rng);
            if let Some(carry) = carry {
                if self.leader_unreachable(self.round) {
                    self.rs.carry = carry + round_ms;
                } else {
                    self.rs.deadline = self.rs.deadline.max(carry + round_ms);
                }
            }
        }
    }

    /// Whether `round`'s leader is another member this one cannot reach,
    /// while it reaches `2f + 1` members (itself included): then the round
    /// cannot be signed and is skipped. An isolated member skips nothing.
    pub(super) fn leader_unreachable(&self, round: Round) -> bool {
        let leader = self.leader_of(round);
        leader != self.me
            && self.unreachable.contains(&leader)
            && self.committee.n() - self.unreachable.len() >= self.committee.quorum()
    }

    /// Round synchronisation: `f + 1` members (one of them honest) at a higher
    /// round means the committee moved on.
    pub(super) fn note_round<R: RngCore + CryptoRng>(
        &mut self,
        now: TimestampMs,
        sender: u16,
        round: Round,
        rng: &mut R,
    ) {
        if sender == self.me {
            return;
        }
        let e = self.highest_seen.entry(sender).or_insert(0);
        *e = (*e).max(round);
        let mut seen: Vec<Round> = self.highest_seen.values().copied().collect();
        let f = usize::from(self.committee.f());
        if seen.len() <= f {
            return;
        }
        seen.sort_unstable_by(|a, b| b.cmp(a));
        let target = seen[f];
        let pending_round = self.next_round_at.map_or(self.round, |(r, _)| r);
        if target > self.round && target > pending_round {
            self.stats.round_jumps += 1;
            self.enter_round(now, now, target, rng);
        }
    }
}
