//! Every member assembles the report itself: the leader sends each attempt's
//! proposal to every member (signers get it whole; the others a copy without
//! the attributed observations, which only a signer checks) and every signer
//! sends its share to every member. A member holding an attempt's signing
//! package and all of its shares aggregates them and checks the result
//! against the group key, so the signed report is complete one message
//! delay after the shares are sent, not two (share to the leader, report
//! from the leader). The leader still broadcasts the report: a member that
//! missed the proposal or a share has it one hop later, as before.
//!
//! Nothing here is trusted: a report is accepted only when the aggregate
//! verifies under the group key, exactly as a report from the leader is. A
//! member never blames on what it sees here (the leader, which picks the
//! signers, does).

use super::*;

/// One attempt a member follows (its packages are kept by the lanes).
pub(super) struct FollowAttempt {
    package_hashes: Vec<[u8; 32]>,
    signers: BTreeSet<u16>,
    senders: BTreeSet<u16>,
    /// When its first share from another signer than this member and the
    /// leader came (the shares that travel the same way as a missing one).
    first_share_at: Option<TimestampMs>,
    /// The shares did not add up to a valid signature: wait for the report.
    failed: bool,
}

/// An attempt whose signing packages the lanes kept: its signers and the
/// hashes of its packages (one per suite).
pub(super) struct AttemptPackage {
    pub(super) number: usize,
    pub(super) signers: BTreeSet<u16>,
    pub(super) package_hashes: Vec<[u8; 32]>,
}

/// The report a member is assembling in this round.
pub(super) struct Follow {
    header: ReportHeader,
    digest: [u8; 32],
    leaves: Vec<ReportLeaf>,
    margin: MarginPart,
    attempts: BTreeMap<usize, FollowAttempt>,
}

/// A report's margin part: its commands and the state root it carries.
#[derive(Clone, Debug, Default)]
pub(super) struct MarginPart {
    pub(super) commands: Vec<MarginCommand>,
    pub(super) state: Option<MarginCheckpoint>,
}

/// The margin part of proposal `p`.
pub(super) fn margin_part(p: &ProposalMsg) -> MarginPart {
    MarginPart {
        commands: p.commands.clone(),
        state: p.margin_state,
    }
}

impl Node {
    /// A proposal whose leaves this member established (checked as a
    /// signer, or Merkle root recomputed as a follower) and whose packages
    /// it parsed: follow the attempt, and use the shares that came before it.
    pub(super) fn follow_attempt(
        &mut self,
        now: TimestampMs,
        header: &ReportHeader,
        digest: [u8; 32],
        leaves: &[ReportLeaf],
        margin: MarginPart,
        attempt: AttemptPackage,
    ) {
        let AttemptPackage {
            number: attempt,
            signers,
            package_hashes,
        } = attempt;
        if self.rs.reported {
            return;
        }
        let follow = self.rs.follow.get_or_insert_with(|| Follow {
            header: header.clone(),
            digest,
            leaves: leaves.to_vec(),
            margin,
            attempts: BTreeMap::new(),
        });
        if follow.digest != digest || follow.attempts.contains_key(&attempt) {
            return;
        }
        follow.attempts.insert(
            attempt,
            FollowAttempt {
                package_hashes,
                signers,
                senders: BTreeSet::new(),
                first_share_at: None,
                failed: false,
            },
        );
        let early: Vec<(u16, ShareMsg)> = self
            .rs
            .early_shares
            .extract_if(.., |(_, s)| usize::from(s.attempt) == attempt)
            .collect();
        for (sender, share) in early {
            self.follow_share(now, sender, &share);
        }
    }

    /// A follower's copy of a proposal (no attributed observations): this
    /// member is not among the attempt's signers. It checks what it needs
    /// to assemble the report (leaves of committee feeds under the header's
    /// Merkle root; per suite a canonical package over the report digest
    /// with at least `t` members, all naming the same members) and follows
    /// the attempt.
    pub(super) fn on_follower_proposal(
        &mut self,
        now: TimestampMs,
        header: &ReportHeader,
        digest: [u8; 32],
        p: &ProposalMsg,
    ) {
        if self.rs.reported {
            return;
        }
        let number = usize::from(p.attempt);
        let known = self.rs.follow.as_ref().filter(|f| f.digest == digest);
        if known.is_some_and(|f| f.attempts.contains_key(&number)) {
            return;
        }
        if known.is_none() {
            let feeds = self.committee.feeds();
            if p.leaves.is_empty()
                || p.leaves.len() > feeds.len()
                || p.leaves.iter().any(|l| !feeds.contains_key(&l.feed_id))
                || merkle_root(&p.leaves) != header.merkle_root
            {
                self.stats.invalid_messages += 1;
                return;
            }
        }
        let parsed = self.stage_followed_packages(&p.signing_packages, p.key_set, &digest, number);
        for lane in &mut self.lanes {
            if parsed.is_some() {
                with_lane!(lane, l => l.keep_staged());
            } else {
                with_lane!(lane, l => l.drop_staged());
            }
        }
        let Some((package_hashes, signers)) = parsed else {
            self.stats.invalid_messages += 1;
            return;
        };
        let attempt = AttemptPackage {
            number,
            signers,
            package_hashes,
        };
        self.follow_attempt(now, header, digest, &p.leaves, margin_part(p), attempt);
        if let Some(f) = &self.rs.follow
            && self.rs.checked.is_none()
        {
            // The leader's report over these leaves needs no second Merkle tree.
            self.rs.checked = Some((f.header.merkle_root, f.leaves.clone()));
        }
    }

    /// Parses and stages a follower's packages, one per suite.
    fn stage_followed_packages(
        &mut self,
        packages: &[SuitePackage],
        set: u64,
        digest: &[u8; 32],
        number: usize,
    ) -> Option<(Vec<[u8; 32]>, BTreeSet<u16>)> {
        if packages.len() != self.lanes.len() {
            return None;
        }
        let t = self.committee.t();
        let mut hashes = Vec::with_capacity(packages.len());
        let mut signers: Option<BTreeSet<u16>> = None;
        for (lane, package) in self.lanes.iter_mut().zip(packages) {
            if lane.suite() != package.suite
                || !with_lane!(lane, l => l.parse_package(number, set, &package.package, digest, t))
            {
                return None;
            }
            let (named, hash) = with_lane!(lane, l => (l.staged_signers()?, l.staged_hash()?));
            if signers.as_ref().is_some_and(|s| *s != named) {
                return None;
            }
            signers = Some(named);
            hashes.push(hash);
        }
        Some((hashes, signers?))
    }

    /// A share sent to every member: kept for its attempt (or until its
    /// proposal arrives, at most `attempts × n` of them); the attempt's last
    /// share assembles the report, one signature per suite.
    pub(super) fn follow_share(&mut self, now: TimestampMs, sender: u16, s: &ShareMsg) {
        if self.rs.reported {
            return;
        }
        let attempt = usize::from(s.attempt);
        let remote = sender != self.me && sender != self.leader_of(self.round);
        let Some(f) = &mut self.rs.follow else {
            self.keep_early(sender, s);
            return;
        };
        let digest = f.digest;
        let Some(a) = f.attempts.get_mut(&attempt) else {
            self.keep_early(sender, s);
            return;
        };
        if a.failed
            || s.report_digest != digest
            || !leader::shares_answer(&s.shares, &a.package_hashes, &self.lanes)
            || !a.signers.contains(&sender)
            || !a.senders.insert(sender)
        {
            return;
        }
        for (lane, sh) in self.lanes.iter_mut().zip(&s.shares) {
            if !with_lane!(lane, l => l.add_share(attempt, sender, &sh.share)) {
                a.failed = true;
                return;
            }
        }
        let first = if remote {
            *a.first_share_at.get_or_insert(now)
        } else {
            a.first_share_at.unwrap_or(now)
        };
        if a.senders.len() < a.signers.len() {
            let missing: Vec<u16> = a.signers.difference(&a.senders).copied().collect();
            let signers = a.signers.clone();
            self.plan_relay(now, attempt, first, &signers, &missing);
            if let [one] = missing[..]
                && one != self.me
                && self.rs.ask_at.is_none()
                && !self.rs.share_senders.is_empty()
            {
                // One share alone missing here: the others likely hold the
                // report already (only this member's link from that signer
                // is stuck), so ask for it (`note_share_sender`) as soon as
                // a relay would go out.
                let wait = now.saturating_sub(first).max(ASK_AFTER_MIN_MS);
                self.rs.ask_at = Some(now + wait);
            }
            return;
        }
        let mut signatures = BTreeMap::new();
        for lane in &self.lanes {
            match with_lane!(lane, l => l.aggregate(attempt, false)) {
                Ok(sig) => {
                    signatures.insert(lane.suite(), SignatureBytes(sig));
                }
                Err(_) => {
                    a.failed = true;
                    return;
                }
            }
        }
        let report = SignedReport {
            header: f.header.clone(),
            leaves: f.leaves.clone(),
            signatures,
            commands: f.margin.commands.clone(),
            margin_state: f.margin.state,
        };
        let push_to = self.stuck_signers(attempt);
        self.stats.reports_assembled += 1;
        self.accept_report(now, report.clone());
        if !push_to.is_empty() {
            let msg = self.sign_msg(report.header.round, Payload::Report(report));
            for to in push_to {
                self.send(to, msg.bytes.clone());
            }
            self.stats.reports_pushed += 1;
        }
    }

    /// Who this member sends the report of hedge attempt `attempt` to: the
    /// earlier attempts' signers (not the leader) whose shares it never saw.
    /// Their link from the leader is likely stuck behind a lost packet (the
    /// hedge exists because their shares were missing), so neither the
    /// leader's proposal copy nor its report reaches them soon; one hop
    /// from here is sooner than asking (`note_share_sender`). Only the two
    /// lowest signers of the completing attempt other than the leader send,
    /// so a stuck member gets two copies, not `t - 1`.
    fn stuck_signers(&self, attempt: usize) -> Vec<u16> {
        let Some(f) = &self.rs.follow else {
            return Vec::new();
        };
        let Some(done) = f.attempts.get(&attempt) else {
            return Vec::new();
        };
        let leader = self.leader_of(self.round);
        let pushers: Vec<u16> = done
            .signers
            .iter()
            .copied()
            .filter(|m| *m != leader)
            .take(2)
            .collect();
        if attempt == 0 || !pushers.contains(&self.me) {
            return Vec::new();
        }
        let stuck: BTreeSet<u16> = f
            .attempts
            .range(..attempt)
            .flat_map(|(_, a)| a.signers.difference(&a.senders))
            .copied()
            .filter(|m| *m != leader && *m != self.me && !done.signers.contains(m))
            .collect();
        stuck.into_iter().collect()
    }

    fn keep_early(&mut self, sender: u16, s: &ShareMsg) {
        let cap = self.committee.attempts() * self.committee.n();
        if usize::from(s.attempt) < self.committee.attempts()
            && self.rs.early_shares.len() < cap
            && !self
                .rs
                .early_shares
                .iter()
                .any(|(m, e)| *m == sender && e.attempt == s.attempt)
        {
            self.rs.early_shares.push((sender, s.clone()));
        }
    }
}

/// The least a signer waits, once one signer's share alone is missing,
/// before relaying the proposal to it.
const RELAY_AFTER_MIN_MS: u64 = 10;

impl Node {
    /// A signer of `attempt` that holds every share but one signer's
    /// (`missing`, not the leader) relays the leader's proposal and the
    /// leader's share to it if its share has not come after as long again
    /// as the other signers' shares took to arrive, first to last (its own
    /// and the leader's left out: they come a hop earlier), at least
    /// `RELAY_AFTER_MIN_MS`. On a WAN the
    /// usual cause is its link from the leader stuck behind a lost packet,
    /// so it never got the proposal. Both messages are the leader's,
    /// signed: the stuck signer checks and signs the proposal as if the
    /// leader's copy had come, and its share completes the attempt about
    /// one round trip after the others' instead of when the leader's hedge
    /// completes (and the stuck member itself holds the report at once).
    /// Only the two lowest signers besides the leader and the stuck one
    /// relay, once a round each; the leader's own copy, when it comes, is
    /// recognised and ignored.
    fn plan_relay(
        &mut self,
        now: TimestampMs,
        attempt: usize,
        first: TimestampMs,
        signers: &BTreeSet<u16>,
        missing: &[u16],
    ) {
        let &[stuck] = missing else {
            return;
        };
        let leader = self.leader_of(self.round);
        let Ok(number) = u8::try_from(attempt) else {
            return;
        };
        if self.rs.relay.is_some()
            || self.rs.relayed
            || stuck == leader
            || stuck == self.me
            || !self.rs.proposals.contains_key(&number)
        {
            return;
        }
        let relayers = signers
            .iter()
            .filter(|m| **m != leader && **m != stuck)
            .take(2);
        if !relayers.into_iter().any(|m| *m == self.me) {
            return;
        }
        let wait = now.saturating_sub(first).max(RELAY_AFTER_MIN_MS);
        self.rs.relay = Some((now + wait, number, stuck));
    }

    /// Relays what `plan_relay` planned if the share is still missing.
    pub(super) fn relay_to_stuck(&mut self, now: TimestampMs) {
        let Some((at, number, stuck)) = self.rs.relay else {
            return;
        };
        if self.rs.reported || now < at {
            return;
        }
        self.rs.relay = None;
        self.rs.relayed = true;
        let missing = self
            .rs
            .follow
            .as_ref()
            .and_then(|f| f.attempts.get(&usize::from(number)))
            .is_some_and(|a| !a.failed && !a.senders.contains(&stuck));
        if !missing {
            return;
        }
        if let Some(bytes) = self.rs.proposals.get(&number).cloned() {
            self.send(stuck, bytes);
        }
        if let Some(bytes) = self.rs.leader_shares.get(&number).cloned() {
            self.send(stuck, bytes);
        }
        self.stats.proposals_relayed += 1;
    }
}

/// How many times a member asks for a report it saw signed (each time two
/// signers), and the least it waits before asking.
const MAX_ASKS: u8 = 2;
const ASK_AFTER_MIN_MS: u64 = 10;

impl Node {
    /// A share of this round's `attempt` from `sender` (not the leader's concern: the
    /// leader hedges instead). Once `t - 1` members other than the leader
    /// have sent shares, the report is signed or about to be; if it has not
    /// come after half the time those shares took to arrive (at least
    /// `ASK_AFTER_MIN_MS`), this member's link from the leader is likely
    /// stuck (a lost packet: the proposal copy or the leader's share and
    /// report queue behind it) and it asks two of those signers for the
    /// report (`ask_for_report`). On the WAN bench such a member otherwise
    /// held the report by gossip about 75 ms after the others.
    pub(super) fn note_share_sender(&mut self, now: TimestampMs, sender: u16, attempt: u8) {
        if self.rs.reported || sender == self.me || sender == self.leader_of(self.round) {
            return;
        }
        // The spread counts from the first share of the latest attempt seen
        // (a hedge's shares come a whole attempt after the first's).
        if self.rs.share_senders.is_empty() || attempt > self.rs.share_attempt {
            self.rs.first_share_at = now;
            self.rs.share_attempt = attempt;
        }
        if let Some(i) = self.rs.share_senders.iter().position(|s| *s == sender) {
            // Latest senders are asked first.
            self.rs.share_senders.remove(i);
        }
        self.rs.share_senders.push(sender);
        let t = usize::from(self.committee.t());
        if self.rs.ask_at.is_none() && self.rs.share_senders.len() + 1 >= t {
            let wait = (now.saturating_sub(self.rs.first_share_at) / 2).max(ASK_AFTER_MIN_MS);
            self.rs.ask_at = Some(now + wait);
        }
    }

    /// Asks for the report when `note_share_sender`'s time came and it is
    /// still missing: two of the signers that sent shares, the latest first
    /// (a second ask goes to the next two, round the list); at most
    /// `MAX_ASKS` times a round, twice the shares' spread apart.
    pub(super) fn ask_for_report(&mut self, now: TimestampMs) {
        let Some(at) = self.rs.ask_at else {
            return;
        };
        if self.rs.reported || now < at || self.rs.asked >= MAX_ASKS {
            return;
        }
        let senders = &self.rs.share_senders;
        let len = senders.len();
        let skip = 2 * usize::from(self.rs.asked);
        let mut peers: Vec<u16> = (0..len.min(2))
            .map(|k| senders[len - 1 - (skip + k) % len])
            .collect();
        peers.dedup();
        self.rs.asked += 1;
        self.rs.ask_at = (self.rs.asked < MAX_ASKS).then(|| {
            now + 2 * now
                .saturating_sub(self.rs.first_share_at)
                .max(ASK_AFTER_MIN_MS)
        });
        self.stats.reports_asked += 1;
        self.out.push(Action::AskReport {
            round: self.round,
            peers,
        });
    }
}
