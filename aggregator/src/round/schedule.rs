//! Who leads a round: the base rotation, corrected by the committee's signed
//! history so that a member whose rounds go unsigned stops leading for a
//! while, and members coming back from that never lead two rounds in a row.
//!
//! The base rotation is [`Committee::leader`]: `base(r) = members[(r + seed)
//! mod n]`. On top of it every member reads the same facts: which rounds have
//! a signed report. Only rounds at least [`LAG`] rounds old are read, so a
//! report still in flight does not make members disagree.
//!
//! - A member is **suspect** at `r` when a round it was the *base* leader of,
//!   in the window `[r - LAG - W, r - LAG)`, has no report (`W =
//!   SUSPECT_CYCLES * n`). Blame goes to the base leader even when a
//!   substitute led that round: it is what keeps the rule free of recursion
//!   (no member's view depends on an earlier computed schedule), so a member
//!   that restarts computes the same leaders from its stored reports.
//! - It is **on probation** for `P = (f + 2) * n` rounds after that (an
//!   unsigned base round in `[r - LAG - W - P, r - LAG - W)`, none since).
//! - Everyone else is **in good standing**.
//!
//! `leader(r)` is `base(r)` when that member is in good standing, or on
//! probation while `base(r - 1)` is not; otherwise a substitute: the first
//! member in good standing after it in the base order that neither led
//! round `r - 1` nor is `base(r - 1)` or `base(r + 1)` (so a substitute that
//! is faulty too, and has not failed as a leader yet, cannot cost two rounds
//! in a row by also leading its own round beside it); `base(r)` when there
//! is none in good standing (e.g. after an outage every member is suspect,
//! and the base rotation resumes). So a faulty member leads again only after `W` rounds,
//! and two members on probation never lead adjacent rounds: with `f`
//! members that never lead a report, at most one round in a row goes
//! unsigned once each has failed once, and the cost is one round per faulty
//! member every `W + n` rounds or so.
//!
//! What a member does not know counts as signed: rounds before
//! [`LeaderSchedule::new`]'s `history_from` (a member that joined later).
//! Reports a member stores from catch-up enter with
//! [`LeaderSchedule::note_report`]; until they arrive its view may differ
//! from the others' for the rounds it missed.

use super::committee::Committee;
use crate::report::Round;
use std::cell::Cell;
use std::collections::BTreeSet;

/// Rounds a report may still be in flight: the schedule of round `r` reads
/// reports of rounds up to `r - LAG`.
pub const LAG: Round = 2;
/// A member whose base round went unsigned is suspect for
/// `SUSPECT_CYCLES * n` rounds.
pub const SUSPECT_CYCLES: Round = 16;

/// The signed-history facts the leader schedule reads (see the module doc).
#[derive(Clone, Debug, Default)]
pub struct LeaderSchedule {
    /// Rounds with a known signed report, from `horizon` rounds before the
    /// newest one noted.
    reported: BTreeSet<Round>,
    /// Rounds before this count as signed (nothing is known of them).
    history_from: Round,
    /// The last answer of [`Self::leader`]: every message of a round asks
    /// for its leader, and the answer changes only with the facts.
    cache: Cell<Option<(Round, u16)>>,
}

impl LeaderSchedule {
    /// A schedule knowing the reports of `reported`; rounds before
    /// `history_from` count as signed.
    pub fn new(history_from: Round, reported: impl IntoIterator<Item = Round>) -> Self {
        Self {
            reported: reported.into_iter().collect(),
            history_from,
            cache: Cell::new(None),
        }
    }

    /// How many rounds before `r` the schedule of `r` reads.
    pub fn horizon(committee: &Committee) -> Round {
        let (w, p) = windows(committee);
        LAG + w + p
    }

    /// A signed report of `round` is known (stored or accepted).
    pub fn note_report(&mut self, round: Round) {
        if self.reported.insert(round) {
            self.cache.set(None);
        }
    }

    /// Forgets what rounds before `round - horizon` said.
    pub fn prune(&mut self, committee: &Committee, round: Round) {
        // Twice the horizon: a late question about a recent round still
        // finds what it read.
        let keep_from = round.saturating_sub(2 * Self::horizon(committee));
        self.reported = self.reported.split_off(&keep_from);
        self.cache.set(None);
    }

    /// The leader of `round`.
    pub fn leader(&self, committee: &Committee, round: Round) -> u16 {
        if let Some((r, leader)) = self.cache.get()
            && r == round
        {
            return leader;
        }
        let leader = self.compute_leader(committee, round);
        self.cache.set(Some((round, leader)));
        leader
    }

    fn compute_leader(&self, committee: &Committee, round: Round) -> u16 {
        let base = committee.leader(round);
        if self.leads_own_round(committee, round) {
            return base;
        }
        // A run of substituted rounds is assigned from its start, each round
        // avoiding the member that led the round before it.
        let n = committee.n() as Round;
        let mut start = round;
        while start > 0 && round - start < n && !self.leads_own_round(committee, start - 1) {
            start -= 1;
        }
        let mut previous = start.checked_sub(1).map(|r| committee.leader(r));
        let mut leader = base;
        for r in start..=round {
            leader = self.substitute(committee, r, previous);
            previous = Some(leader);
        }
        leader
    }

    /// Whether the base leader of `round` leads it: in good standing, or on
    /// probation while the base leader of the round before is not.
    fn leads_own_round(&self, committee: &Committee, round: Round) -> bool {
        let base = committee.leader(round);
        match self.standing(committee, base, round) {
            Standing::Good => true,
            Standing::Probation => {
                round == 0
                    || self.standing(committee, committee.leader(round - 1), round)
                        != Standing::Probation
            }
            Standing::Suspect => false,
        }
    }

    /// Who leads `round` in place of its base leader: the first member in
    /// good standing after it in the base order that led neither the round
    /// before (`previous`) nor leads its own round next to this one, so a
    /// substitute that turns out faulty too costs one round, not two in a
    /// row. With too few members in good standing the neighbours are
    /// allowed again, and with none the base leader leads.
    fn substitute(&self, committee: &Committee, round: Round, previous: Option<u16>) -> u16 {
        let n = committee.n() as Round;
        let before = round.checked_sub(1).map(|r| committee.leader(r));
        let after = committee.leader(round + 1);
        // Candidates in base order; a standing is computed only until the
        // first that fits (with large committees most runs stop at once).
        let (mut not_previous, mut any) = (None, None);
        for m in (1..n).map(|k| committee.leader(round + k)) {
            if self.standing(committee, m, round) != Standing::Good {
                continue;
            }
            if Some(m) != previous && Some(m) != before && m != after {
                return m;
            }
            if Some(m) != previous {
                not_previous.get_or_insert(m);
            }
            any.get_or_insert(m);
        }
        not_previous
            .or(any)
            .unwrap_or_else(|| committee.leader(round))
    }

    /// Member `member`'s standing for the schedule of `round`.
    pub fn standing(&self, committee: &Committee, member: u16, round: Round) -> Standing {
        let (w, p) = windows(committee);
        let Some(to) = round.checked_sub(LAG) else {
            return Standing::Good;
        };
        let suspect_from = to.saturating_sub(w);
        if self.failed(committee, member, suspect_from, to) {
            Standing::Suspect
        } else if self.failed(
            committee,
            member,
            suspect_from.saturating_sub(p),
            suspect_from,
        ) {
            Standing::Probation
        } else {
            Standing::Good
        }
    }

    /// Whether a round in `[from, to)` whose base leader is `member` has no
    /// known report.
    fn failed(&self, committee: &Committee, member: u16, from: Round, to: Round) -> bool {
        let from = from.max(self.history_from);
        if from >= to {
            return false;
        }
        let n = committee.n() as Round;
        // The first round at or after `from` that `member` is the base leader of.
        let Some(first) = (0..n)
            .map(|k| from + k)
            .find(|r| committee.leader(*r) == member)
        else {
            return false;
        };
        (first..to)
            .step_by(committee.n())
            .any(|r| !self.reported.contains(&r))
    }
}

/// A member's standing in the leader schedule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Standing {
    Good,
    Probation,
    Suspect,
}

/// The suspicion window `W` and the probation `P` (rounds).
fn windows(committee: &Committee) -> (Round, Round) {
    let n = committee.n() as Round;
    (SUSPECT_CYCLES * n, (Round::from(committee.f()) + 2) * n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::round::committee::{Member, Timeouts};

    /// `n` members, `f` the largest the size allows, leader seed 3.
    fn committee(n: u16) -> Committee {
        let members = (1..=n)
            .map(|i| Member {
                index: i,
                identity: ed25519_dalek::SigningKey::from_bytes(&[i as u8; 32])
                    .verifying_key()
                    .to_bytes(),
            })
            .collect();
        let f = (n - 1) / 3;
        let feeds = vec![crate::round::committee::FeedConfig {
            id: crate::report::FeedId::new("BTC-USD").expect("a feed id"),
            decimals: 8,
            deviation_bps: 50,
            heartbeat_ms: 60_000,
            policy: Default::default(),
        }];
        let digest = crate::report::ConfigDigest([7; 32]);
        Committee::new(members, 2 * f + 1, f, 3, feeds, digest, Timeouts::default())
            .expect("a valid committee")
    }

    /// Every round from 0 to `to` signed except `unsigned`.
    fn history(to: Round, unsigned: &[Round]) -> LeaderSchedule {
        LeaderSchedule::new(0, (0..to).filter(|r| !unsigned.contains(r)))
    }

    #[test]
    fn a_full_history_gives_the_base_rotation() {
        let c = committee(7);
        let s = history(500, &[]);
        for r in 0..500 {
            assert_eq!(s.leader(&c, r), c.leader(r), "round {r}");
        }
    }

    #[test]
    fn a_member_whose_round_went_unsigned_is_replaced_then_tried_again() {
        let c = committee(4);
        let bad = c.leader(10);
        let s = history(200, &[10]);
        // Until LAG rounds passed, nobody reads round 10.
        assert_eq!(s.standing(&c, bad, 10 + LAG), Standing::Good);
        assert_eq!(s.standing(&c, bad, 11 + LAG), Standing::Suspect);
        // Its base rounds in the window are led by a member in good standing
        // that leads neither neighbouring round (with n = 4, the one
        // opposite it in the base order).
        for r in (14..10 + LAG + 64).filter(|r| c.leader(*r) == bad) {
            assert_ne!(s.leader(&c, r), bad, "round {r}");
            assert_eq!(s.leader(&c, r), c.leader(r + 2), "round {r}");
        }
        // After the window it is on probation and leads its base rounds.
        let back = 10 + LAG + SUSPECT_CYCLES * 4 + 1;
        assert_eq!(s.standing(&c, bad, back), Standing::Probation);
        let r = (back..back + 4)
            .find(|r| c.leader(*r) == bad)
            .unwrap_or(back);
        assert_eq!(s.leader(&c, r), bad);
    }

    #[test]
    fn two_members_on_probation_never_lead_adjacent_rounds() {
        let c = committee(7);
        // Members leading rounds 20 and 21 both failed there.
        let (a, b) = (c.leader(20), c.leader(21));
        let s = history(400, &[20, 21]);
        let mut led_by_a = None;
        for r in 22 + LAG..300 {
            let l = s.leader(&c, r);
            if l == a && led_by_a.is_none() && r > 30 {
                led_by_a = Some(r);
                assert_ne!(
                    s.leader(&c, r + 1),
                    b,
                    "b leads right after a in round {}",
                    r + 1
                );
            }
        }
        assert!(led_by_a.is_some(), "a never led again");
    }

    /// Seed 4 of the simulator's n = 10 clock-behind row: the substitute of
    /// a suspect leader was the next member in the base order, faulty too
    /// but not yet failed, so it lost the substituted round and then its own.
    #[test]
    fn no_member_leads_two_rounds_in_a_row_while_another_is_substituted() {
        for n in [4u16, 7, 10] {
            let c = committee(n);
            // Every member in turn is suspect (its base round failed).
            for bad_round in 20..20 + Round::from(n) {
                let s = history(400, &[bad_round]);
                let leaders: Vec<u16> = (bad_round + LAG..300).map(|r| s.leader(&c, r)).collect();
                for (i, pair) in leaders.windows(2).enumerate() {
                    let r = bad_round + LAG + i as Round;
                    assert_ne!(
                        pair[0],
                        pair[1],
                        "n = {n}: one leader for rounds {r} and {}",
                        r + 1
                    );
                }
            }
            // Two members adjacent in the base order both suspect.
            let s = history(400, &[30, 31]);
            let leaders: Vec<u16> = (32 + LAG..300).map(|r| s.leader(&c, r)).collect();
            for (i, pair) in leaders.windows(2).enumerate() {
                assert_ne!(
                    pair[0],
                    pair[1],
                    "n = {n}: adjacent suspects, round {}",
                    32 + LAG + i as Round
                );
            }
        }
    }

    #[test]
    fn when_every_member_is_suspect_the_base_rotation_resumes() {
        let c = committee(4);
        let s = history(100, &(40..60).collect::<Vec<_>>());
        for r in 62..70 {
            assert_eq!(s.leader(&c, r), c.leader(r), "round {r}");
        }
    }

    #[test]
    fn unknown_history_counts_as_signed_and_pruning_keeps_the_window() {
        let c = committee(4);
        let s = LeaderSchedule::new(1_000, []);
        assert_eq!(s.leader(&c, 1_001), c.leader(1_001));
        let mut s = history(600, &[500]);
        let before: Vec<u16> = (560..600).map(|r| s.leader(&c, r)).collect();
        s.prune(&c, 560);
        let after: Vec<u16> = (560..600).map(|r| s.leader(&c, r)).collect();
        assert_eq!(before, after);
    }
}
