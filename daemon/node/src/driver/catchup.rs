//! What catch-up still has to fetch: the rounds this member holds, the
//! rounds settled as having no signed report, and what each peer answered.
//! Pure bookkeeping (no I/O, no clock); the driver sends the requests it
//! proposes and feeds it the replies.
//!
//! ```text
//!   complete            horizon (newest held + 1)
//!   ────────┤ held │ gap │ held held │ gap │ held ├── tail (unknown)
//!   every round below `complete` is held or settled absent
//! ```
//!
//! A *gap* is a run of rounds below the horizon with no report here. A peer
//! answers a request `[from, end)` with every report it holds there and the
//! range it covered; a round it covered without a report counts as one
//! peer's "none". A gap round is settled absent once `quorum` distinct peers
//! (f + 1: at least one honest member) answered none for it. Rounds at or
//! above the horizon are never settled: a round may still be in progress.
//! Settled gaps are stored (`report_gaps`), which lets the margin engine
//! take the stored reports strictly in round order (docs/MARGIN.md).

use sibyl_aggregator::Round;
use std::collections::BTreeMap;
use std::ops::Bound::{Excluded, Unbounded};

/// Disjoint, merged half-open ranges of rounds.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RangeSet(BTreeMap<Round, Round>);

impl RangeSet {
    /// Adds `[from, end)`, merging with what touches it.
    pub fn insert(&mut self, from: Round, end: Round) {
        if from >= end {
            return;
        }
        let (mut s, mut e) = (from, end);
        if let Some((&ps, &pe)) = self.0.range(..=s).next_back()
            && pe >= s
        {
            s = ps;
            e = e.max(pe);
        }
        let touching: Vec<Round> = self.0.range(s..=e).map(|(&k, _)| k).collect();
        for k in touching {
            if let Some(v) = self.0.remove(&k) {
                e = e.max(v);
            }
        }
        self.0.insert(s, e);
    }

    /// The range holding `x`.
    pub fn containing(&self, x: Round) -> Option<(Round, Round)> {
        self.0
            .range(..=x)
            .next_back()
            .filter(|&(_, &e)| e > x)
            .map(|(&s, &e)| (s, e))
    }

    /// The start of the first range after `x`.
    pub fn next_start_after(&self, x: Round) -> Option<Round> {
        self.0
            .range((Excluded(x), Unbounded))
            .next()
            .map(|(&s, _)| s)
    }

    /// Takes round `x` out of the set.
    pub fn remove(&mut self, x: Round) {
        if let Some((s, e)) = self.containing(x) {
            self.0.remove(&s);
            if s < x {
                self.0.insert(s, x);
            }
            if x.saturating_add(1) < e {
                self.0.insert(x + 1, e);
            }
        }
    }

    /// Forgets everything below `x`.
    pub fn remove_below(&mut self, x: Round) {
        let below: Vec<Round> = self.0.range(..x).map(|(&k, _)| k).collect();
        for k in below {
            if let Some(e) = self.0.remove(&k)
                && e > x
            {
                self.0.insert(x, e);
            }
        }
    }

    /// One past the highest round held.
    pub fn end(&self) -> Option<Round> {
        self.0.values().next_back().copied()
    }

    /// The parts of `[from, end)` in the set.
    pub fn within(&self, from: Round, end: Round) -> Vec<(Round, Round)> {
        let start = self.containing(from).map_or(from, |(s, _)| s);
        self.0
            .range(start..end)
            .map(|(&s, &e)| (s.max(from), e.min(end)))
            .filter(|(s, e)| s < e)
            .collect()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// A request catch-up wants sent: reports of `from..end` from member `to`
/// (`end == Round::MAX`: everything from `from` on).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Want {
    pub to: u16,
    pub from: Round,
    pub end: Round,
}

/// The member's view of its report history (see the module docs).
#[derive(Clone, Debug)]
pub struct History {
    complete: Round,
    held: RangeSet,
    absent: RangeSet,
    covered: BTreeMap<u16, RangeSet>,
    quorum: usize,
    want_tail: bool,
    /// Rotates the peer asked first, so retries and votes spread.
    rotation: usize,
    /// Ranges settled absent since the last [`History::take_settled`].
    settled: Vec<(Round, Round)>,
}

/// Rounds below `complete` whose settled-absent ranges are remembered.
const ABSENT_KEPT: Round = 100_000;

/// Missing runs looked at per request decision.
const RUNS_LOOKED_AT: usize = 64;

impl History {
    /// `complete`: every round below it is stored or settled here; `held`:
    /// stored rounds at or above it; `absent`: settled gaps. `quorum`:
    /// distinct peers whose "none" settles a round.
    pub fn new(
        complete: Round,
        held: impl IntoIterator<Item = Round>,
        absent: impl IntoIterator<Item = (Round, Round)>,
        quorum: usize,
    ) -> Self {
        let mut h = Self {
            complete,
            held: RangeSet::default(),
            absent: RangeSet::default(),
            covered: BTreeMap::new(),
            quorum,
            want_tail: true,
            rotation: 0,
            settled: Vec::new(),
        };
        for r in held {
            h.held.insert(r, r.saturating_add(1));
        }
        for (a, b) in absent {
            h.absent.insert(a, b);
        }
        h.advance();
        h
    }

    /// Distinct peers that must answer "none" for a round: f + 1 of an
    /// n-member committee (f = (n - 1) / 3), at most the other members (a
    /// committee of one settles its gaps by itself).
    pub fn quorum_for(n: usize) -> usize {
        let f = n.saturating_sub(1) / 3;
        (f + 1).min(n.saturating_sub(1))
    }

    /// The ranges settled absent since the last call (to store).
    pub fn take_settled(&mut self) -> Vec<(Round, Round)> {
        std::mem::take(&mut self.settled)
    }

    /// Every round below this is held or settled absent.
    pub fn complete(&self) -> Round {
        self.complete
    }

    /// One past the newest round held.
    pub fn horizon(&self) -> Round {
        self.held.end().unwrap_or(self.complete).max(self.complete)
    }

    /// Whether a report of `round` is held (below `complete`: unless the
    /// round was settled absent).
    pub fn holds(&self, round: Round) -> bool {
        if round < self.complete {
            return self.absent.containing(round).is_none();
        }
        self.held.containing(round).is_some()
    }

    /// Whether `round` was settled as having no report.
    pub fn settled_absent(&self, round: Round) -> bool {
        self.absent.containing(round).is_some()
    }

    /// Notes a report held here (stored or on its way). Returns whether it
    /// was new. A report of a round settled absent (it was held by fewer
    /// members than answered "none") is held from now on.
    pub fn hold(&mut self, round: Round) -> bool {
        if self.holds(round) {
            return false;
        }
        self.absent.remove(round);
        if round < self.complete {
            return true;
        }
        self.held.insert(round, round.saturating_add(1));
        if self.quorum == 0 {
            self.settle();
        } else {
            self.advance();
        }
        true
    }

    /// Asks for what follows the newest round held (start, a reconnection).
    pub fn want_tail(&mut self) {
        self.want_tail = true;
    }

    /// The round machine entered `round`: reports of rounds before it may
    /// exist. If the newest held is older than `round - 1`, asks for the
    /// tail. (A member missing the newest report computes other leaves than
    /// the committee, whose EMA, volatility and jump flag start from each
    /// feed's previous leaf, and refuses every proposal; with exactly t
    /// members up no later report would ever show it the gap.) Returns
    /// whether the tail is now wanted.
    pub fn entered(&mut self, round: Round) -> bool {
        if self.horizon() < round {
            self.want_tail = true;
        }
        self.want_tail
    }

    /// Whether the tail is still wanted.
    pub fn wants_tail(&self) -> bool {
        self.want_tail
    }

    /// A peer answered `from..end` (every report it holds there is in its
    /// reply and was given to [`History::hold`] first). `full_page`: the
    /// reply was a full page, so more may follow. Ranges it settles absent
    /// are returned by the next [`History::take_settled`].
    pub fn on_reply(
        &mut self,
        peer: u16,
        from: Round,
        end: Round,
        tail_request: bool,
        full_page: bool,
    ) {
        if tail_request && !full_page {
            self.want_tail = false;
        }
        if full_page {
            self.want_tail = true;
        }
        let from = from.max(self.complete);
        if from < end {
            self.covered.entry(peer).or_default().insert(from, end);
        }
        self.settle();
    }

    /// Gap runs `[a, b)` below the horizon, oldest first.
    pub fn gaps(&self, limit: usize) -> Vec<(Round, Round)> {
        let horizon = self.horizon();
        let mut runs = Vec::new();
        let mut a = self.complete;
        while a < horizon && runs.len() < limit {
            if let Some((_, e)) = self.held.containing(a) {
                a = e;
                continue;
            }
            if let Some((_, e)) = self.absent.containing(a) {
                a = e;
                continue;
            }
            let b = [
                self.held.next_start_after(a),
                self.absent.next_start_after(a),
            ]
            .into_iter()
            .flatten()
            .fold(horizon, Round::min);
            runs.push((a, b));
            a = b;
        }
        runs
    }

    /// Rounds below the horizon still missing (neither held nor settled).
    pub fn missing_count(&self) -> u64 {
        self.gaps(usize::MAX).iter().map(|(a, b)| b - a).sum()
    }

    /// The next request to send, if anything is missing and some peer in
    /// `peers` has not answered for it yet.
    pub fn next_request(&mut self, peers: &[u16]) -> Option<Want> {
        if peers.is_empty() {
            return None;
        }
        let start = self.rotation % peers.len();
        let order: Vec<u16> = peers[start..]
            .iter()
            .chain(&peers[..start])
            .copied()
            .collect();
        for (a, b) in self.gaps(RUNS_LOOKED_AT) {
            for &p in &order {
                let cov = self.covered.get(&p);
                let mut x = a;
                while let Some((_, e)) = cov.and_then(|c| c.containing(x)) {
                    x = e;
                }
                if x < b {
                    let y = cov
                        .and_then(|c| c.next_start_after(x))
                        .map_or(b, |s| s.min(b));
                    self.rotation = self.rotation.wrapping_add(1);
                    return Some(Want {
                        to: p,
                        from: x,
                        end: y,
                    });
                }
            }
        }
        if self.want_tail {
            self.rotation = self.rotation.wrapping_add(1);
            return Some(Want {
                to: order[0],
                from: self.horizon(),
                end: Round::MAX,
            });
        }
        None
    }

    /// Settles gap rounds `quorum` peers answered "none" for.
    fn settle(&mut self) {
        let mut settled = Vec::new();
        for (a, b) in self.gaps(usize::MAX) {
            if self.quorum == 0 {
                settled.push((a, b));
                continue;
            }
            // Sweep the peers' covered parts of [a, b): each peer's ranges are
            // disjoint, so the depth is the number of distinct peers.
            let mut edges: Vec<(Round, i64)> = Vec::new();
            for cov in self.covered.values() {
                for (s, e) in cov.within(a, b) {
                    edges.push((s, 1));
                    edges.push((e, -1));
                }
            }
            if edges.len() / 2 < self.quorum {
                continue;
            }
            edges.sort_unstable();
            let mut depth: i64 = 0;
            let mut open: Option<Round> = None;
            for (at, d) in edges {
                depth += d;
                let enough = depth >= self.quorum as i64;
                match (open, enough) {
                    (None, true) => open = Some(at),
                    (Some(s), false) => {
                        if s < at {
                            settled.push((s, at));
                        }
                        open = None;
                    }
                    _ => {}
                }
            }
        }
        for &(a, b) in &settled {
            self.absent.insert(a, b);
        }
        self.settled.extend(settled);
        self.advance();
    }

    /// Moves `complete` over held and settled rounds; forgets what is below.
    fn advance(&mut self) {
        loop {
            if let Some((_, e)) = self.held.containing(self.complete) {
                self.complete = e;
            } else if let Some((_, e)) = self.absent.containing(self.complete) {
                self.complete = e;
            } else {
                break;
            }
        }
        let c = self.complete;
        // Settled ranges stay for a while, so a late report of such a round
        // is still stored; older than that, it is taken for held.
        self.held.remove_below(c);
        self.absent.remove_below(c.saturating_sub(ABSENT_KEPT));
        for cov in self.covered.values_mut() {
            cov.remove_below(c);
        }
        self.covered.retain(|_, cov| !cov.is_empty());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn range_set_merges_and_trims() {
        let mut s = RangeSet::default();
        s.insert(5, 7);
        s.insert(10, 12);
        s.insert(7, 10); // touches both
        assert_eq!(s.containing(5), Some((5, 12)));
        assert_eq!(s.containing(12), None);
        s.insert(20, 25);
        assert_eq!(s.next_start_after(12), Some(20));
        assert_eq!(s.within(8, 22), vec![(8, 12), (20, 22)]);
        s.remove(11);
        assert_eq!(s.containing(10), Some((5, 11)));
        assert_eq!(s.containing(11), None);
        assert_eq!(s.containing(12), None);
        s.insert(11, 12);
        s.remove_below(10);
        assert_eq!(s.containing(9), None);
        assert_eq!(s.containing(10), Some((10, 12)));
        assert_eq!(s.end(), Some(25));
    }

    #[test]
    fn entering_a_round_past_the_newest_held_asks_for_the_tail() {
        let mut h = History::new(0, [0, 1, 2], [], 2);
        h.on_reply(2, 3, 3, true, false);
        assert!(!h.wants_tail());
        // Round 3 follows the newest held: nothing to ask.
        assert!(!h.entered(3));
        assert_eq!(h.next_request(&[2, 3]), None);
        // Round 5 entered, round 3 and 4 not held: ask from round 3 on.
        assert!(h.entered(5));
        assert_eq!(
            h.next_request(&[2, 3]).map(|w| (w.from, w.end)),
            Some((3, Round::MAX))
        );
    }

    #[test]
    fn a_fresh_member_asks_from_round_0() {
        let mut h = History::new(0, [], [], 2);
        let want = h.next_request(&[2, 3, 4]).expect("a request");
        assert_eq!((want.from, want.end), (0, Round::MAX));
    }

    #[test]
    fn a_gap_in_the_middle_is_asked_for_alone_and_filled() {
        // Holds 0..40 and 61..=70: missed 40..61 during a partition.
        let mut h = History::new(0, (0..40).chain(61..=70), [], 2);
        assert_eq!(h.complete(), 40);
        assert_eq!(h.gaps(10), vec![(40, 61)]);
        let want = h.next_request(&[2, 3, 4]).expect("a request");
        assert_eq!((want.from, want.end), (40, 61), "only the gap");
        // The peer sends all of them.
        for r in 40..61 {
            assert!(h.hold(r));
        }
        h.on_reply(want.to, 40, 61, false, false);
        assert!(h.take_settled().is_empty(), "nothing absent");
        assert_eq!(h.complete(), 71);
        // Only the tail is left (asked once after start).
        let want = h.next_request(&[2, 3, 4]).expect("tail");
        assert_eq!((want.from, want.end), (71, Round::MAX));
        h.on_reply(want.to, 71, 71, true, false);
        assert_eq!(h.next_request(&[2, 3, 4]), None, "nothing is missing");
        // A reconnection asks only for what follows.
        h.want_tail();
        let want = h.next_request(&[2, 3, 4]).expect("tail");
        assert_eq!(want.from, 71);
    }

    #[test]
    fn rounds_without_a_report_settle_after_a_quorum_of_nones() {
        // Round 5 had no report anywhere; 0..5 and 6..=9 are held.
        let mut h = History::new(0, (0..5).chain(6..10), [], 2);
        h.on_reply(1, 10, 10, true, false); // tail: nothing newer
        let first = h.next_request(&[2, 3, 4]).expect("ask for 5");
        assert_eq!((first.from, first.end), (5, 6));
        h.on_reply(first.to, 5, 6, false, false);
        assert!(h.take_settled().is_empty());
        assert_eq!(h.complete(), 5, "one none is not enough");
        let second = h.next_request(&[2, 3, 4]).expect("ask another peer");
        assert_ne!(second.to, first.to, "a different peer");
        h.on_reply(second.to, 5, 6, false, false);
        assert_eq!(h.take_settled(), vec![(5, 6)]);
        assert_eq!(h.complete(), 10);
        assert_eq!(h.next_request(&[2, 3, 4]), None);
        // Round 5's report turns up after all: it is new (to store), once.
        assert!(h.settled_absent(5) && !h.holds(5));
        assert!(h.hold(5));
        assert!(h.holds(5) && !h.hold(5));
        assert_eq!(h.complete(), 10);
        // The same peer twice does not settle.
        let mut h = History::new(0, (0..5).chain(6..10), [], 2);
        h.on_reply(2, 10, 10, true, false);
        h.on_reply(2, 5, 6, false, false);
        h.on_reply(2, 5, 6, false, false);
        assert!(h.take_settled().is_empty());
        assert_eq!(h.complete(), 5);
        // Peer 2 already answered and no other peer is reachable: wait.
        assert_eq!(h.next_request(&[2]), None);
        // A committee of one settles its gaps by itself.
        let mut h = History::new(0, 0..5, [], History::quorum_for(1));
        h.hold(7);
        assert_eq!(h.take_settled(), vec![(5, 7)]);
        assert_eq!(h.complete(), 8);
    }

    #[test]
    fn nothing_at_or_above_the_horizon_is_settled() {
        let mut h = History::new(0, 0..3, [], 1);
        // A peer claims it covered far beyond what anyone holds.
        h.on_reply(2, 3, 1_000, false, false);
        assert!(h.take_settled().is_empty());
        assert_eq!(h.complete(), 3);
    }

    #[test]
    fn stored_gaps_and_full_pages() {
        let mut h = History::new(0, (0..3).chain(5..6), [(3, 5)], 2);
        assert_eq!(h.complete(), 6);
        // A full page keeps asking for the tail.
        let w = h.next_request(&[2]).expect("tail");
        for r in 6..134 {
            h.hold(r);
        }
        h.on_reply(w.to, 6, 134, true, true);
        assert!(h.wants_tail());
        assert_eq!(h.next_request(&[2]).map(|w| w.from), Some(134));
        assert_eq!(History::quorum_for(4), 2);
        assert_eq!(History::quorum_for(7), 3);
        assert_eq!(History::quorum_for(2), 1);
        assert_eq!(History::quorum_for(1), 0);
    }
}
