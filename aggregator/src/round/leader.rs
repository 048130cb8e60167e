//! The leader side: gather observations, propose, run the signing
//! attempts (robust, in the spirit of ROAST), aggregate.

use super::*;

/// A signing attempt the leader just set up.
struct Started {
    proposal: ProposalMsg,
    /// A Byzantine leader's second proposal (simulator only).
    twin: Option<ProposalMsg>,
    signers: BTreeSet<u16>,
    /// Keccak-256 of each suite's signing package.
    package_hashes: Vec<[u8; 32]>,
}

/// Hedge attempts per round at most (`LeaderRound::may_hedge`).
pub(super) const MAX_HEDGES: u8 = 2;
/// Share round trips kept for the hedge delay (`Node::hedge_delay`).
pub(super) const SHARE_RTT_SAMPLES: usize = 8;

impl Node {
    pub(super) fn on_observation<R: RngCore + CryptoRng>(
        &mut self,
        now: TimestampMs,
        msg: SignedMessage,
        rng: &mut R,
    ) {
        if self.leader_of(msg.round) != self.me {
            self.stats.invalid_messages += 1;
            return;
        }
        let Payload::Observation(o) = &msg.payload else {
            return;
        };
        if let Some(prev) = self.rs.observations.get(&msg.sender) {
            if prev.bytes[..prev.bytes.len() - 64] != *msg.content()
                && self.rs.conflict_blamed.insert(msg.sender)
            {
                let ev = Evidence::ConflictingObservations {
                    first: prev.bytes.clone(),
                    second: msg.bytes.clone(),
                };
                self.blame(ev);
            }
            return;
        }
        let offers = !o.commitments.is_empty();
        if offers && !self.offer_complete(&o.commitments) {
            self.stats.invalid_messages += 1;
            return;
        }
        let sender = msg.sender;
        let Payload::Observation(o) = msg.payload else {
            return;
        };
        if self.rs.leader.is_none() && offers {
            for i in 0..self.lanes.len() {
                let bytes = self.announced(&o.commitments, i, 0);
                let own = sender == self.me;
                with_lane!(&mut self.lanes[i], l => l.note_first(sender, bytes, own));
            }
        }
        let late = self.rs.leader.as_mut().map(|l| {
            // The leaves are fixed: a later observation only makes its
            // sender a candidate signer.
            // A late member signs only a margin state it attested.
            let attests = l.margin_state.is_none_or(|m| o.margin_roots.contains(&m));
            if offers && attests {
                l.late.insert(sender, msg.bytes.clone());
                l.signers_pool.insert(sender, o.commitments.clone());
            }
        });
        self.rs.observations.insert(
            sender,
            Attributed {
                msg: o,
                bytes: msg.bytes,
            },
        );
        match late {
            None => self.try_propose(now, rng),
            Some(()) if offers && !self.live_attempt() => {
                self.start_attempt(now);
            }
            Some(()) => {}
        }
    }

    pub(super) fn try_propose<R: RngCore + CryptoRng>(&mut self, now: TimestampMs, _rng: &mut R) {
        if self.rs.leader.is_some() || self.rs.reported {
            return;
        }
        let have = self.rs.observations.len();
        let waited = now >= self.rs.entered_at + self.committee.timeouts().observe_ms;
        // Observations can still come from the reachable members not heard
        // from; waiting for an unreachable member's is waiting for nothing
        // (with exactly t reachable, a 3/1 split, it cost every round this
        // member led its whole wait: 67 % of the report rate).
        let may_still_observe = self.committee.members().iter().any(|m| {
            !self.rs.observations.contains_key(&m.index) && !self.unreachable.contains(&m.index)
        });
        if have < self.committee.quorum() || (may_still_observe && !waited) {
            return;
        }
        // With fewer than t candidate signers in good standing (offering to
        // sign, no remembered fault), wait a little longer for the others'
        // observations rather than pick a member that failed before (while
        // one may still come, as above).
        let good = self
            .rs
            .observations
            .iter()
            .filter(|(m, a)| !a.msg.commitments.is_empty() && !self.penalty.contains_key(m))
            .count();
        if may_still_observe
            && good < usize::from(self.committee.t())
            && now < self.patience_deadline()
        {
            return;
        }
        // Members refuse a timestamp not later than the last signed report's:
        // a leader whose clock is behind it waits for its clock to pass it.
        if self.last_values.values().any(|v| now <= v.reported_at_ms) {
            return;
        }
        let obs: Vec<&ObservationMsg> = self.rs.observations.values().map(|a| &a.msg).collect();
        let computed = compute_leaves(
            &self.committee,
            now,
            &obs,
            self.committee.feeds().keys(),
            &self.last_values,
        );
        let candidates: Vec<ReportLeaf> = computed.into_iter().filter_map(|(_, l)| l).collect();
        if candidates.is_empty() {
            // A quorum observed, yet nothing is fresh by this member's
            // clock: the clock is likely far off (a member no leader picks
            // as signer hears no proposals). The observers' newest
            // timestamps are clock samples, older by their fetch age.
            let samples: Vec<(u16, TimestampMs)> = self
                .rs
                .observations
                .iter()
                .filter_map(|(m, a)| {
                    a.msg
                        .entries
                        .iter()
                        .map(|e| e.observed_at_ms)
                        .max()
                        .map(|t| (*m, t))
                })
                .collect();
            for (m, t) in samples {
                self.clock_sample(m, t);
            }
            return;
        }
        let due: Vec<ReportLeaf> = candidates
            .iter()
            .filter(|l| {
                let cfg = &self.committee.feeds()[&l.feed_id];
                update_due(
                    self.last_values.get(&l.feed_id),
                    l.price,
                    now,
                    cfg.deviation_bps,
                    cfg.heartbeat_ms,
                )
                .is_some()
            })
            .cloned()
            .collect();
        // Nothing due: refresh every feed, so each round still seals one report.
        let leaves = if due.is_empty() { candidates } else { due };
        let commands = order_commands(self.rs.observations.iter().map(|(k, a)| (*k, &a.msg)));
        // A margin state root every member offering to sign attested (each
        // signer checks its own): the signers are then any of them, as
        // without one, so a member whose engine lags delays the roots, never
        // the prices.
        let attested: Vec<(u16, &[MarginCheckpoint])> = self
            .rs
            .observations
            .iter()
            .filter(|(_, a)| !a.msg.commitments.is_empty())
            .map(|(k, a)| (*k, a.msg.margin_roots.as_slice()))
            .collect();
        let need = usize::from(self.committee.t()).max(attested.len());
        let (margin, disagree) = choose_margin_state(attested, need, self.last_margin_round);
        if disagree {
            self.stats.margin_root_disagreements += 1;
        }
        let (margin_state, attesters) = match margin {
            Some((state, who)) => {
                self.stats.margin_states_proposed += 1;
                (Some(state), Some(who))
            }
            None => (None, None),
        };
        let header = ReportHeader {
            version: PROTOCOL_VERSION,
            config_digest: *self.committee.config_digest(),
            round: self.round,
            timestamp_ms: now,
            merkle_root: merkle_root(&leaves),
            margin_root: margin_root(&commands, margin_state.as_ref()),
        };
        let digest = report_digest(&header);
        let observations = self
            .rs
            .observations
            .values()
            .map(|a| a.bytes.clone())
            .collect();
        let signers_pool = self
            .rs
            .observations
            .iter()
            .filter(|(_, a)| !a.msg.commitments.is_empty())
            .filter(|(k, _)| attesters.as_ref().is_none_or(|w| w.contains(k)))
            .map(|(k, a)| (*k, a.msg.commitments.clone()))
            .collect();
        // Leading forgives a little of every remembered fault, slowly.
        self.rounds_led_total += 1;
        if self.rounds_led_total.is_multiple_of(FORGIVE_EVERY) {
            self.penalty.retain(|_, p| {
                *p = p.saturating_sub(1);
                *p > 0
            });
        }
        self.rs.leader = Some(LeaderRound {
            header,
            digest,
            leaves,
            commands,
            margin_state,
            observations,
            late: BTreeMap::new(),
            signers_pool,
            excluded: BTreeSet::new(),
            attempts: BTreeMap::new(),
            next_attempt: 0,
            hedges: 0,
        });
        self.start_attempt(now);
    }

    /// How long a leader waits for observations of members in good
    /// standing: `observe_ms` plus half of `share_ms` (less than the attempt
    /// a faulty signer would cost).
    pub(super) fn patience_deadline(&self) -> TimestampMs {
        let t = self.committee.timeouts();
        self.rs.entered_at + t.observe_ms + t.share_ms / 2
    }

    /// Whether an attempt is open and not yet past its deadline.
    pub(super) fn live_attempt(&self) -> bool {
        self.rs
            .leader
            .as_ref()
            .is_some_and(|l| l.attempts.values().any(|a| !a.timed_out))
    }

    /// Starts the next signing attempt with `t` of the candidate signers:
    /// not excluded this round, ranked by (silent in an open attempt,
    /// remembered penalty, distance after the leader). Returns whether one
    /// started (not when the attempts are used up or too few candidates remain).
    pub(super) fn start_attempt(&mut self, now: TimestampMs) -> bool {
        let Some(mut l) = self.rs.leader.take() else {
            return false;
        };
        let started = self.pick_signers(&mut l, now);
        self.rs.leader = Some(l);
        let Some(Started {
            proposal,
            twin,
            signers,
            package_hashes,
        }) = started
        else {
            return false;
        };
        self.stats.attempts_started += 1;
        let me = self.me;
        let round = self.round;
        let number = usize::from(proposal.attempt);
        let record = SigningRecord {
            round,
            digest: report_digest(&ReportHeader {
                version: PROTOCOL_VERSION,
                config_digest: *self.committee.config_digest(),
                round,
                timestamp_ms: proposal.timestamp_ms,
                merkle_root: proposal.merkle_root,
                margin_root: margin_root(&proposal.commands, proposal.margin_state.as_ref()),
            }),
        };
        let proposal_for_followers = ProposalMsg {
            leaves: proposal.leaves.clone(),
            signing_packages: proposal.signing_packages.clone(),
            commands: proposal.commands.clone(),
            observations: Vec::new(),
            signer_observations: Vec::new(),
            ..proposal
        };
        let msg = self.sign_msg(round, Payload::Proposal(proposal));
        let twin = twin.map(|p| self.sign_msg(round, Payload::Proposal(p)));
        for (i, s) in signers.iter().enumerate() {
            if *s == me {
                continue;
            }
            match &twin {
                Some(twin) if i % 2 == 1 => self.send(*s, twin.bytes.clone()),
                Some(twin) if i == 0 => {
                    self.send(*s, msg.bytes.clone());
                    self.send(*s, twin.bytes.clone());
                }
                _ => self.send(*s, msg.bytes.clone()),
            }
        }
        // The other members get a copy without the attributed observations
        // (only a signer checks them): they assemble the report themselves
        // from the shares every signer sends to all (follow.rs).
        let followers: Vec<u16> = self
            .committee
            .members()
            .iter()
            .map(|m| m.index)
            .filter(|m| *m != me && !signers.contains(m))
            .collect();
        if !followers.is_empty() {
            let copy = self.sign_msg(round, Payload::Proposal(proposal_for_followers));
            for m in followers {
                self.send(m, copy.bytes.clone());
            }
        }
        // The leader built the proposal itself: it signs without decoding and
        // re-checking its own message. Its ledger write comes after the sends
        // above, so it overlaps the other signers' instead of delaying them.
        if signers.contains(&me) {
            if self.rs.first_proposal.is_none() {
                self.rs.first_proposal = Some((record.digest, msg.bytes.clone()));
            }
            self.prepare_signing(now, record, number, package_hashes);
        }
        true
    }

    /// Picks the next attempt's signers and builds its signing packages
    /// (one per suite, kept by the lanes); returns the proposal, a
    /// Byzantine leader's twin (simulator only), the signers and the
    /// packages' hashes.
    fn pick_signers(&mut self, l: &mut LeaderRound, now: TimestampMs) -> Option<Started> {
        let t = usize::from(self.committee.t());
        let me = self.me;
        let equivocate = self.faults.equivocate();
        // At most MAX_MEMBERS.
        #[allow(clippy::cast_possible_truncation)]
        let n = self.committee.n() as u32;
        let number = l.next_attempt;
        if number >= self.committee.attempts() {
            return None;
        }
        // Signers of open attempts that have not answered (timed out, or
        // slow when a hedge starts) go last.
        let silent: BTreeSet<u16> = l
            .attempts
            .values()
            .flat_map(|a| a.signers.iter().filter(|s| !a.shares.contains_key(s)))
            .copied()
            .collect();
        // Pick the signers and parse their commitments for this attempt; a
        // member whose commitment does not parse (it signed garbage into its
        // observation) is excluded and the pick repeats.
        let mut unusable_found = Vec::new();
        let digest = l.digest;
        let picked = loop {
            let mut pool: Vec<u16> = l
                .signers_pool
                .keys()
                .copied()
                .filter(|s| !l.excluded.contains(s))
                .filter(|s| !(equivocate && *s == me))
                .collect();
            if pool.len() < t {
                break None;
            }
            // The leader signs first (it needs no message round trip), then
            // the members after it in index order, wrapping: with the
            // rotating leader every member signs regularly.
            pool.sort_by_key(|s| {
                (
                    silent.contains(s),
                    self.penalty.get(s).copied().unwrap_or(0),
                    (u32::from(*s) + n - u32::from(me)) % n,
                )
            });
            let signers: BTreeSet<u16> = pool.into_iter().take(t).collect();
            let built = self.build_packages(l, &signers, number, &digest);
            for lane in &mut self.lanes {
                if built.is_ok() {
                    with_lane!(lane, x => x.keep_staged());
                } else {
                    with_lane!(lane, x => x.drop_staged());
                }
            }
            match built {
                Ok(packages) => break Some((signers, packages)),
                Err(Some(s)) => {
                    l.excluded.insert(s);
                    unusable_found.push(s);
                }
                Err(None) => break None,
            }
        };
        self.stats.invalid_messages += unusable_found.len() as u64;
        for s in unusable_found {
            self.penalize(s, PENALTY_INVALID);
        }
        let (signers, packages) = picked?;
        let package_hashes: Vec<[u8; 32]> = packages.iter().map(|p| keccak(&p.package)).collect();
        let proposal = ProposalMsg {
            // Below `attempts()`, at most MAX_COMMITMENTS.
            #[allow(clippy::cast_possible_truncation)]
            attempt: number as u8,
            timestamp_ms: l.header.timestamp_ms,
            merkle_root: l.header.merkle_root,
            leaves: l.leaves.clone(),
            observations: l.observations.clone(),
            signing_packages: packages,
            signer_observations: signers
                .iter()
                .filter_map(|s| l.late.get(s).cloned())
                .collect(),
            key_set: self.key_set(),
            commands: l.commands.clone(),
            margin_state: l.margin_state,
        };
        // A Byzantine leader (simulator only) sends a second, different report
        // to every other signer and to the lowest one as well.
        let twin = if equivocate {
            let mut header = l.header.clone();
            header.timestamp_ms += 1;
            let digest = report_digest(&header);
            let twin = self.build_packages(l, &signers, number, &digest);
            for lane in &mut self.lanes {
                with_lane!(lane, x => x.drop_staged());
            }
            twin.ok().map(|packages| ProposalMsg {
                timestamp_ms: header.timestamp_ms,
                signing_packages: packages,
                ..proposal.clone()
            })
        } else {
            None
        };
        let hedge_at = (l.hedges < MAX_HEDGES).then(|| now + self.hedge_delay());
        l.attempts.insert(
            number,
            Attempt {
                signers: signers.clone(),
                package_hashes: package_hashes.clone(),
                shares: BTreeMap::new(),
                deadline: now + self.committee.timeouts().share_ms,
                timed_out: false,
                started_at: now,
                hedge_at,
            },
        );
        l.next_attempt = number + 1;
        Some(Started {
            proposal,
            twin,
            signers,
            package_hashes,
        })
    }

    /// Stages attempt `number`'s signing package over `digest` in every
    /// lane. `Err(Some(member))`: that member's commitments are unusable.
    fn build_packages(
        &mut self,
        l: &LeaderRound,
        signers: &BTreeSet<u16>,
        number: usize,
        digest: &[u8; 32],
    ) -> Result<Vec<SuitePackage>, Option<u16>> {
        let mut packages = Vec::with_capacity(self.lanes.len());
        for i in 0..self.lanes.len() {
            let mut list = Vec::with_capacity(signers.len());
            for s in signers {
                let bytes = l
                    .signers_pool
                    .get(s)
                    .and_then(|c| self.announced(c, i, number))
                    .ok_or(Some(*s))?;
                list.push((*s, bytes));
            }
            let lane = &mut self.lanes[i];
            let suite = lane.suite();
            let package = with_lane!(lane, x => x.build_package(number, &list, digest))?;
            packages.push(SuitePackage { suite, package });
        }
        Ok(packages)
    }

    /// Attempts past their deadline stay open (a late share still completes
    /// them); their silent signers are counted and ranked last, shares that
    /// arrived but do not verify are blamed, and another attempt starts.
    pub(super) fn on_attempt_deadlines(&mut self, now: TimestampMs) {
        self.on_hedge(now);
        let Some(l) = &mut self.rs.leader else {
            return;
        };
        let mut silent = Vec::new();
        let mut received = Vec::new();
        let mut any = false;
        for (number, a) in l.attempts.iter_mut() {
            if a.timed_out || now < a.deadline {
                continue;
            }
            any = true;
            a.timed_out = true;
            silent.extend(a.signers.iter().filter(|s| !a.shares.contains_key(s)));
            for (member, bytes) in &a.shares {
                received.push((*number, *member, bytes.clone()));
            }
        }
        if !any {
            return;
        }
        // Shares that arrived but do not verify, in any suite.
        let mut invalid = Vec::new();
        for (number, member, bytes) in received {
            let bad = self
                .lanes
                .iter()
                .find(|lane| !with_lane!(lane, x => x.share_valid(number, member)));
            if let Some(lane) = bad {
                let ev = with_lane!(lane, x => x.invalid_share_evidence(&bytes, number));
                invalid.push((number, member, ev));
            }
        }
        if let Some(l) = &mut self.rs.leader {
            for (number, member, _) in &invalid {
                l.attempts.remove(number);
                l.excluded.insert(*member);
            }
        }
        for s in silent {
            self.stats.attempts_timed_out += 1;
            if let Some(m) = self.member(s) {
                m.attempts_silent += 1;
            }
            self.penalize(s, PENALTY_SILENT);
        }
        for (_, member, ev) in invalid {
            self.invalid_share(member, ev);
        }
        if !self.live_attempt() {
            self.start_attempt(now);
        }
    }

    /// How long after sending an attempt the leader starts a hedge attempt
    /// if that one is still incomplete: 5/4 of the median share round trip
    /// of its last `SHARE_RTT_SAMPLES` attempts plus 2 ms, between 2 ms and
    /// half of `share_ms` (half of `share_ms` until it has seen one). The
    /// median, not a running mean: the first attempts after a start (new
    /// connections) and a round that met a lost packet would keep a mean high
    /// for many rounds. On a WAN a share stalled behind a lost packet (a TCP
    /// retransmission, 200 ms or one RTT) then costs about one round trip
    /// instead of `share_ms`.
    pub(super) fn hedge_delay(&self) -> u64 {
        let cap = (self.committee.timeouts().share_ms / 2).max(2);
        let mut seen: Vec<u64> = self.share_rtts.iter().copied().collect();
        seen.sort_unstable();
        seen.get(seen.len() / 2)
            .map_or(cap, |rtt| (rtt * 5 / 4 + 2).clamp(2, cap))
    }

    /// Starts a hedge attempt: when an open attempt passes its hedge time
    /// without all of its shares, another attempt starts with the signers
    /// that have not answered ranked last (`pick_signers`). Nobody is blamed
    /// and the earlier attempts stay open: whichever completes first makes
    /// the report (every attempt signs the same digest). A hedge that is
    /// itself late gets a second one (`LeaderRound::may_hedge`): on a WAN
    /// about 0.3 % of rounds meet a second lost packet in the first hedge.
    fn on_hedge(&mut self, now: TimestampMs) {
        let attempts = self.committee.attempts();
        let Some(l) = &mut self.rs.leader else {
            return;
        };
        let due = l
            .attempts
            .values()
            .any(|a| !a.timed_out && a.hedge_at.is_some_and(|h| now >= h));
        if !due {
            return;
        }
        for a in l.attempts.values_mut() {
            a.hedge_at = None;
        }
        if !l.may_hedge(attempts) {
            return;
        }
        l.hedges += 1;
        if self.start_attempt(now) {
            self.stats.attempts_hedged += 1;
        }
    }

    pub(super) fn invalid_share(&mut self, member: u16, evidence: Evidence) {
        self.stats.invalid_shares += 1;
        if let Some(m) = self.member(member) {
            m.invalid_shares += 1;
        }
        self.penalize(member, PENALTY_INVALID);
        self.blame(evidence);
    }

    pub(super) fn on_share<R: RngCore + CryptoRng>(
        &mut self,
        now: TimestampMs,
        msg: SignedMessage,
        _rng: &mut R,
    ) {
        let Payload::Share(s) = &msg.payload else {
            return;
        };
        let sender = msg.sender;
        let number = usize::from(s.attempt);
        let Some(l) = &mut self.rs.leader else {
            // Not leading this round: assemble the report from the shares.
            if sender == self.leader_of(self.round) {
                self.rs
                    .leader_shares
                    .entry(s.attempt)
                    .or_insert_with(|| msg.bytes.clone());
            }
            self.note_share_sender(now, sender, s.attempt);
            self.follow_share(now, sender, s);
            return;
        };
        let digest = l.digest;
        let Some(a) = l.attempts.get_mut(&number) else {
            self.stats.stale_messages += 1;
            return;
        };
        if !shares_answer(&s.shares, &a.package_hashes, &self.lanes)
            || s.report_digest != digest
            || !a.signers.contains(&sender)
            || a.shares.contains_key(&sender)
        {
            self.stats.stale_messages += 1;
            return;
        }
        let unparsable =
            self.lanes.iter_mut().zip(&s.shares).position(
                |(lane, sh)| !with_lane!(lane, x => x.add_share(number, sender, &sh.share)),
            );
        match unparsable {
            None => {
                a.shares.insert(sender, msg.bytes.clone());
                if a.shares.len() == a.signers.len() {
                    let took = now.saturating_sub(a.started_at);
                    if self.share_rtts.len() == SHARE_RTT_SAMPLES {
                        self.share_rtts.pop_front();
                    }
                    self.share_rtts.push_back(took);
                    self.finish_attempt(now, number);
                }
            }
            Some(i) => {
                l.attempts.remove(&number);
                l.excluded.insert(sender);
                let ev =
                    with_lane!(&self.lanes[i], x => x.invalid_share_evidence(&msg.bytes, number));
                self.invalid_share(sender, ev);
                if !self.live_attempt() {
                    self.start_attempt(now);
                }
            }
        }
    }

    /// A signer's signed refusal: the attempt cannot complete, so another
    /// one starts at once without that signer.
    pub(super) fn on_refusal(&mut self, now: TimestampMs, msg: SignedMessage) {
        let Payload::Refusal(f) = &msg.payload else {
            return;
        };
        let sender = msg.sender;
        if self.leader_of(msg.round) != self.me {
            self.stats.invalid_messages += 1;
            return;
        }
        self.clock_sample(sender, f.clock_ms);
        let number = usize::from(f.attempt);
        let Some(l) = &mut self.rs.leader else {
            self.stats.stale_messages += 1;
            return;
        };
        let open = l
            .attempts
            .get(&number)
            .is_some_and(|a| a.signers.contains(&sender) && !a.shares.contains_key(&sender));
        if f.report_digest != l.digest || !open {
            self.stats.stale_messages += 1;
            return;
        }
        l.attempts.remove(&number);
        l.excluded.insert(sender);
        self.stats.refusals_received += 1;
        if let Some(m) = self.member(sender) {
            m.refusals += 1;
        }
        self.penalize(sender, PENALTY_REFUSAL);
        if !self.live_attempt() {
            self.start_attempt(now);
        }
    }

    /// All of an attempt's shares are in: every suite's signature is added
    /// up and checked; the report carries one signature per suite. A suite
    /// whose shares do not add up names its cheaters (frost's cheater
    /// detection), each blamed once with the evidence of the first suite it
    /// cheated in.
    pub(super) fn finish_attempt(&mut self, now: TimestampMs, number: usize) {
        let Some(l) = &mut self.rs.leader else {
            return;
        };
        let Some(a) = l.attempts.get(&number) else {
            return;
        };
        let mut signatures = BTreeMap::new();
        let mut culprits: BTreeMap<u16, usize> = BTreeMap::new();
        let mut failed = false;
        for (i, lane) in self.lanes.iter().enumerate() {
            match with_lane!(lane, x => x.aggregate(number, true)) {
                Ok(sig) => {
                    signatures.insert(lane.suite(), SignatureBytes(sig));
                }
                Err(found) if found.is_empty() => failed = true,
                Err(found) => {
                    for m in found {
                        culprits.entry(m).or_insert(i);
                    }
                }
            }
        }
        let signers: Vec<u16> = a.signers.iter().copied().collect();
        if culprits.is_empty() && !failed {
            let report = SignedReport {
                header: l.header.clone(),
                leaves: l.leaves.clone(),
                signatures,
                commands: l.commands.clone(),
                margin_state: l.margin_state,
            };
            l.attempts.clear();
            for s in signers {
                if let Some(m) = self.member(s) {
                    m.shares_received += 1;
                }
            }
            self.stats.reports_led += 1;
            self.accept_report(now, report);
            return;
        }
        let mut evidence = Vec::new();
        for (member, lane) in &culprits {
            if let Some(bytes) = a.shares.get(member) {
                let ev =
                    with_lane!(&self.lanes[*lane], x => x.invalid_share_evidence(bytes, number));
                evidence.push((*member, ev));
            }
        }
        l.attempts.remove(&number);
        for (member, _) in &evidence {
            l.excluded.insert(*member);
        }
        if !culprits.is_empty() {
            for s in signers {
                if !culprits.contains_key(&s)
                    && let Some(m) = self.member(s)
                {
                    m.shares_received += 1;
                }
            }
        }
        for (member, ev) in evidence {
            self.invalid_share(member, ev);
        }
        if !self.live_attempt() {
            self.start_attempt(now);
        }
    }
}

/// Whether a share message's per-suite entries answer the attempt whose
/// packages hash to `hashes`: one entry per lane, same suite, same hash.
pub(super) fn shares_answer(shares: &[SuiteShare], hashes: &[[u8; 32]], lanes: &[AnyLane]) -> bool {
    shares.len() == lanes.len()
        && hashes.len() == lanes.len()
        && shares
            .iter()
            .zip(hashes)
            .zip(lanes)
            .all(|((s, h), l)| s.suite == l.suite() && s.package_hash == *h)
}
