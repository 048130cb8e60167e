//! The leader side: gather observations, propose, run the signing
//! attempts (robust, in the spirit of ROAST), aggregate.

use super::*;

impl<C: SibylSuite> Node<C> {
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
        if offers && o.commitments.len() != self.committee.attempts() {
            self.stats.invalid_messages += 1;
            return;
        }
        let sender = msg.sender;
        let Payload::Observation(o) = msg.payload else {
            return;
        };
        if self.rs.leader.is_none() && offers {
            let first = if sender == self.me {
                self.rs.commitments.first().copied()
            } else {
                o.commitments
                    .first()
                    .and_then(|c| self.parse_commitments_of(sender, c))
            };
            self.rs.first_commitments.insert(sender, first);
        }
        let late = self.rs.leader.as_mut().map(|l| {
            // The leaves are fixed: a later observation only makes its
            // sender a candidate signer.
            if offers {
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
        if have < self.committee.quorum() || (have < self.committee.n() && !waited) {
            return;
        }
        // With fewer than t candidate signers in good standing (offering to
        // sign, no remembered fault), wait a little longer for the others'
        // observations rather than pick a member that failed before.
        let good = self
            .rs
            .observations
            .iter()
            .filter(|(m, a)| !a.msg.commitments.is_empty() && !self.penalty.contains_key(m))
            .count();
        if have < self.committee.n()
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
        let header = ReportHeader {
            version: PROTOCOL_VERSION,
            config_digest: *self.committee.config_digest(),
            round: self.round,
            timestamp_ms: now,
            merkle_root: merkle_root(&leaves),
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
            observations,
            late: BTreeMap::new(),
            signers_pool,
            excluded: BTreeSet::new(),
            attempts: BTreeMap::new(),
            next_attempt: 0,
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
        let t = usize::from(self.committee.t());
        let attempts = self.committee.attempts();
        let me = self.me;
        let equivocate = self.faults.equivocate();
        // At most MAX_MEMBERS.
        #[allow(clippy::cast_possible_truncation)]
        let n = self.committee.n() as u32;
        let Some(l) = &mut self.rs.leader else {
            return false;
        };
        let number = l.next_attempt;
        if number >= attempts {
            return false;
        }
        let silent: BTreeSet<u16> = l
            .attempts
            .values()
            .filter(|a| a.timed_out)
            .flat_map(|a| a.signers.iter().filter(|s| !a.shares.contains_key(s)))
            .copied()
            .collect();
        // Pick the signers and parse their commitments for this attempt; a
        // member whose commitment does not parse (it signed garbage into its
        // observation) is excluded and the pick repeats.
        let mut unusable_found = Vec::new();
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
            let mut commitments = BTreeMap::new();
            let mut unusable = None;
            for s in &signers {
                let Ok(id) = Identifier::<C>::try_from(*s) else {
                    return false;
                };
                let bytes = l.signers_pool.get(s).and_then(|c| c.get(number));
                let parsed = match (number, self.rs.first_commitments.get(s)) {
                    (0, Some(first)) => *first,
                    _ => bytes.and_then(|b| match self.warm.get(s) {
                        Some((w, c)) if w == b => Some(*c),
                        _ => C::parse_commitments(b),
                    }),
                };
                match parsed {
                    Some(c) => {
                        commitments.insert(id, c);
                    }
                    None => {
                        unusable = Some(*s);
                        break;
                    }
                }
            }
            match unusable {
                Some(s) => {
                    l.excluded.insert(s);
                    unusable_found.push(s);
                }
                None => break Some((signers, commitments)),
            }
        };
        self.stats.invalid_messages += unusable_found.len() as u64;
        for s in unusable_found {
            self.penalize(s, PENALTY_INVALID);
        }
        let Some((signers, commitments)) = picked else {
            return false;
        };
        let Some(l) = &mut self.rs.leader else {
            return false;
        };
        let package = SigningPackage::new(commitments.clone(), &l.digest);
        let Ok(package_bytes) = package.serialize() else {
            return false;
        };
        let package_hash = keccak(&package_bytes);
        let proposal = ProposalMsg {
            // Below `attempts()`, at most MAX_COMMITMENTS.
            #[allow(clippy::cast_possible_truncation)]
            attempt: number as u8,
            timestamp_ms: l.header.timestamp_ms,
            merkle_root: l.header.merkle_root,
            leaves: l.leaves.clone(),
            observations: l.observations.clone(),
            signing_package: package_bytes.clone(),
            signer_observations: signers
                .iter()
                .filter_map(|s| l.late.get(s).cloned())
                .collect(),
        };
        // A Byzantine leader (simulator only) sends a second, different report
        // to every other signer and to the lowest one as well.
        let twin = if equivocate {
            let mut header = l.header.clone();
            header.timestamp_ms += 1;
            let digest = report_digest(&header);
            let twin_package = SigningPackage::new(commitments, &digest);
            twin_package.serialize().ok().map(|bytes| ProposalMsg {
                timestamp_ms: header.timestamp_ms,
                signing_package: bytes,
                ..proposal.clone()
            })
        } else {
            None
        };
        let record = SigningRecord {
            round: self.round,
            digest: l.digest,
        };
        let own = signers
            .contains(&me)
            .then(|| (package.clone(), package_hash));
        l.attempts.insert(
            number,
            Attempt {
                signers: signers.clone(),
                package,
                package_bytes,
                package_hash,
                shares: BTreeMap::new(),
                deadline: now + self.committee.timeouts().share_ms,
                timed_out: false,
            },
        );
        l.next_attempt = number + 1;
        self.stats.attempts_started += 1;
        let round = self.round;
        let proposal_for_followers = ProposalMsg {
            leaves: proposal.leaves.clone(),
            signing_package: proposal.signing_package.clone(),
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
        if let Some((package, package_hash)) = own {
            if self.rs.first_proposal.is_none() {
                self.rs.first_proposal = Some((record.digest, msg.bytes.clone()));
            }
            self.prepare_signing(now, record, number, package, package_hash);
        }
        true
    }

    /// Attempts past their deadline stay open (a late share still completes
    /// them); their silent signers are counted and ranked last, shares that
    /// arrived but do not verify are blamed, and another attempt starts.
    pub(super) fn on_attempt_deadlines(&mut self, now: TimestampMs) {
        let Some(l) = &mut self.rs.leader else {
            return;
        };
        let mut silent = Vec::new();
        let mut invalid = Vec::new();
        let mut closed = Vec::new();
        let mut any = false;
        for (number, a) in l.attempts.iter_mut() {
            if a.timed_out || now < a.deadline {
                continue;
            }
            any = true;
            a.timed_out = true;
            silent.extend(a.signers.iter().filter(|s| !a.shares.contains_key(s)));
            for (member, (share, bytes)) in &a.shares {
                if !share_valid(&self.pubkeys, *member, share, &a.package) {
                    invalid.push((*member, bytes.clone(), a.package_bytes.clone()));
                    closed.push(*number);
                }
            }
        }
        if !any {
            return;
        }
        for number in &closed {
            l.attempts.remove(number);
        }
        for (member, _, _) in &invalid {
            l.excluded.insert(*member);
        }
        for s in silent {
            self.stats.attempts_timed_out += 1;
            if let Some(m) = self.member(s) {
                m.attempts_silent += 1;
            }
            self.penalize(s, PENALTY_SILENT);
        }
        for (member, share, package) in invalid {
            let ev = self.invalid_share_evidence(&share, &package);
            self.invalid_share(member, ev);
        }
        if !self.live_attempt() {
            self.start_attempt(now);
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
            self.follow_share(now, sender, s);
            return;
        };
        let digest = l.digest;
        let Some(a) = l.attempts.get_mut(&number) else {
            self.stats.stale_messages += 1;
            return;
        };
        if s.package_hash != a.package_hash
            || s.report_digest != digest
            || !a.signers.contains(&sender)
            || a.shares.contains_key(&sender)
        {
            self.stats.stale_messages += 1;
            return;
        }
        match SignatureShare::<C>::deserialize(&s.share) {
            Ok(share) => {
                a.shares.insert(sender, (share, msg.bytes));
                if a.shares.len() == a.signers.len() {
                    self.finish_attempt(now, number);
                }
            }
            Err(_) => {
                let package = a.package_bytes.clone();
                l.attempts.remove(&number);
                l.excluded.insert(sender);
                let ev = self.invalid_share_evidence(&msg.bytes, &package);
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

    pub(super) fn invalid_share_evidence(
        &self,
        share_msg: &[u8],
        package_bytes: &[u8],
    ) -> Evidence {
        Evidence::InvalidShare {
            suite: C::SUITE,
            share: share_msg.to_vec(),
            signing_package: package_bytes.to_vec(),
            public_key_package: self.pubkeys.serialize().unwrap_or_default(),
        }
    }

    pub(super) fn finish_attempt(&mut self, now: TimestampMs, number: usize) {
        let Some(l) = &mut self.rs.leader else {
            return;
        };
        let Some(a) = l.attempts.get(&number) else {
            return;
        };
        let mut shares = BTreeMap::new();
        for (s, (share, _)) in &a.shares {
            if let Ok(id) = Identifier::<C>::try_from(*s) {
                shares.insert(id, *share);
            }
        }
        // The common case (every share good) is checked with one signature
        // verification; otherwise frost's aggregation finds the cheaters.
        let aggregated = match aggregate_verified(&a.package, &shares, &self.pubkeys) {
            Some(sig) => Ok(sig),
            None => frost::aggregate_custom(
                &a.package,
                &shares,
                &self.pubkeys,
                frost::CheaterDetection::AllCheaters,
            ),
        };
        let signers: Vec<u16> = a.signers.iter().copied().collect();
        match aggregated {
            Ok(sig) => {
                let Some(report) = sealed_report(&l.header, &l.leaves, &sig) else {
                    return;
                };
                l.attempts.clear();
                for s in signers {
                    if let Some(m) = self.member(s) {
                        m.shares_received += 1;
                    }
                }
                let msg = self.sign_msg(self.round, Payload::Report(report.clone()));
                self.out.push(Action::Broadcast { bytes: msg.bytes });
                self.stats.reports_led += 1;
                self.accept_report(now, report);
            }
            Err(frost::Error::InvalidSignatureShare { culprits }) => {
                let package = a.package_bytes.clone();
                let mut evidence = Vec::new();
                for id in culprits {
                    let Some(&member) = self.ids.get(&id) else {
                        continue;
                    };
                    if let Some((_, bytes)) = a.shares.get(&member) {
                        evidence.push((member, bytes.clone()));
                    }
                }
                l.attempts.remove(&number);
                for (member, _) in &evidence {
                    l.excluded.insert(*member);
                }
                for s in signers {
                    if !evidence.iter().any(|(m, _)| *m == s)
                        && let Some(m) = self.member(s)
                    {
                        m.shares_received += 1;
                    }
                }
                for (member, bytes) in evidence {
                    let ev = self.invalid_share_evidence(&bytes, &package);
                    self.invalid_share(member, ev);
                }
                if !self.live_attempt() {
                    self.start_attempt(now);
                }
            }
            Err(_) => {
                l.attempts.remove(&number);
                if !self.live_attempt() {
                    self.start_attempt(now);
                }
            }
        }
    }
}

/// Whether `share` is member `member`'s valid share for `package`.
pub(super) fn share_valid<C: Ciphersuite>(
    pubkeys: &PublicKeyPackage<C>,
    member: u16,
    share: &SignatureShare<C>,
    package: &SigningPackage<C>,
) -> bool {
    let Ok(id) = Identifier::<C>::try_from(member) else {
        return false;
    };
    let Some(verifying_share) = pubkeys.verifying_shares().get(&id) else {
        return false;
    };
    frost::verify_signature_share(id, verifying_share, share, package, pubkeys.verifying_key())
        .is_ok()
}
