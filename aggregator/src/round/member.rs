//! The member side: observe, check a proposal, record the signing, sign.

use super::*;

/// What a signer checked in a proposal's packages: their hashes (one per
/// suite) and the members they name.
pub(super) struct Signing {
    pub(super) package_hashes: Vec<[u8; 32]>,
    pub(super) signers: BTreeSet<u16>,
}

impl Node {
    pub(super) fn send_observation<R: RngCore + CryptoRng>(
        &mut self,
        now: TimestampMs,
        rng: &mut R,
    ) {
        if !self.started
            || self.rs.observation_sent
            || self.rs.reported
            || self.leader_unreachable(self.round)
            || self.faults.mute_observations()
        {
            return;
        }
        let t = self.committee.timeouts();
        let entries: Vec<ObservationEntry> = self
            .local
            .values()
            .filter(|o| {
                o.observed_at_ms <= now.saturating_add(t.max_clock_skew_ms)
                    && o.observed_at_ms.saturating_add(t.max_observation_age_ms) >= now
            })
            .map(ObservationEntry::from)
            .collect();
        if entries.is_empty() {
            return;
        }
        if self.last_observed_round.is_some_and(|r| r >= self.round) {
            // Observed this round before a restart: a second observation would conflict.
            self.rs.observation_sent = true;
            return;
        }
        // A member whose clock is off beyond the skew bound (and not yet
        // corrected) would refuse every proposal: it observes only.
        let commitments = if self.clock.doubtful {
            self.stats.observed_without_signing += 1;
            Vec::new()
        } else {
            // Nonces for every suite: one round, one signature per suite.
            let attempts = self.committee.attempts();
            let mut all = Vec::with_capacity(self.lanes.len());
            for lane in &mut self.lanes {
                let suite = lane.suite();
                match with_lane!(lane, l => l.begin(attempts, rng)) {
                    Some(commitments) => all.push(SuiteCommitments { suite, commitments }),
                    None => return,
                }
            }
            self.rs.offered = true;
            all
        };
        self.rs.observation_sent = true;
        self.last_observed_round = Some(self.round);
        self.out
            .push(Action::RecordObservation { round: self.round });
        let relayed = self.offers_to_relay();
        let msg = self.sign_msg(
            self.round,
            Payload::Observation(ObservationMsg {
                entries,
                commitments,
                commands: self.offered_commands.clone(),
                margin_roots: self.attested_roots.clone(),
                relayed,
            }),
        );
        let leader = self.leader_of(self.round);
        self.rs.own_observation = Some(msg.bytes.clone());
        self.send(leader, msg.bytes);
    }

    pub(super) fn on_proposal(
        &mut self,
        now: TimestampMs,
        msg: SignedMessage,
        hashes: &[[u8; 64]],
    ) {
        let SignedMessage {
            round,
            sender,
            payload,
            bytes,
        } = msg;
        let Payload::Proposal(p) = &payload else {
            return;
        };
        if sender != self.leader_of(round) {
            self.stats.invalid_messages += 1;
            return;
        }
        if !p.observations.is_empty() {
            // A signer's copy may come twice: from the leader and relayed by
            // another signer (`Node::relay_to_stuck`). The second is ignored:
            // signing it again would refuse a used nonce to the leader.
            if self
                .rs
                .proposals
                .get(&p.attempt)
                .is_some_and(|b| *b == bytes)
            {
                self.stats.proposals_duplicate += 1;
                return;
            }
            self.rs.proposals.insert(p.attempt, bytes.clone());
        }
        let header = ReportHeader {
            version: PROTOCOL_VERSION,
            config_digest: *self.committee.config_digest(),
            round,
            timestamp_ms: p.timestamp_ms,
            merkle_root: p.merkle_root,
            margin_root: margin_root(&p.commands, p.margin_state.as_ref()),
        };
        let digest = report_digest(&header);
        match &self.rs.first_proposal {
            Some((first, first_bytes)) if *first != digest => {
                if !self.rs.equivocation_blamed {
                    self.rs.equivocation_blamed = true;
                    let ev = Evidence::EquivocatingProposals {
                        first: first_bytes.clone(),
                        second: bytes,
                    };
                    self.blame(ev);
                }
                self.stats.proposals_refused += 1;
                return;
            }
            Some(_) => {}
            None => self.rs.first_proposal = Some((digest, bytes)),
        }
        if self.rs.reported {
            // The leader asks this member to sign a round whose report it
            // already holds (assembled from the others' shares): one share
            // of the first attempt is stuck on its way to the leader (a lost
            // packet on a WAN link) and this is the leader's hedge. Signers
            // holding the report do not sign again; each hands the leader
            // the report instead, once, so the leader holds it about one
            // round trip after the hedge rather than when the stuck share
            // arrives. A follower's copy asks for nothing, nor does a first
            // attempt (it is late here, and the leader made the report).
            if p.attempt > 0
                && !p.observations.is_empty()
                && let Some(report) = self.rs.held.take()
            {
                let msg = self.sign_msg(round, Payload::Report(report));
                self.send(sender, msg.bytes);
                self.stats.reports_returned += 1;
            }
            return;
        }
        if p.observations.is_empty() {
            // A follower's copy: this member is not a signer of the attempt.
            // It is no clock sample: a member's offset is estimated from the
            // proposals it is asked to sign and the refusals it gets, as
            // before the copies existed (with every proposal sampled, two
            // leaders with skewed clocks moved honest members' estimates
            // enough for the simulator to see a stale value signed).
            self.on_follower_proposal(now, &header, digest, p);
            return;
        }
        // Only a first attempt is a clock sample: a later attempt carries the
        // timestamp the leader chose for the first, so it arrives older by
        // every share timeout before it (a withholding signer made every
        // honest member's retries ~500 ms stale, the honest members moved
        // their clocks by that much, and leaders then waited for their
        // shifted clocks to pass the last report: 57-80 % of the rate).
        if p.attempt == 0 {
            self.clock_sample(sender, p.timestamp_ms);
        }
        let checked = if self.faults.refuse() {
            Err(RefusalReason::Other)
        } else {
            self.check_proposal(now, round, p, hashes, &header, &digest)
        };
        let (
            Signing {
                package_hashes,
                signers,
            },
            leaves,
        ) = match checked {
            Ok(checked) => checked,
            Err(reason) => {
                self.stats.proposals_refused += 1;
                self.refuse(now, round, usize::from(p.attempt), digest, reason);
                return;
            }
        };
        let attempt = usize::from(p.attempt);
        let follow = follow::AttemptPackage {
            number: attempt,
            signers,
            package_hashes: package_hashes.clone(),
        };
        self.follow_attempt(
            now,
            &header,
            digest,
            &leaves,
            follow::margin_part(p),
            follow,
        );
        if self.rs.checked.is_none() {
            self.rs.checked = Some((header.merkle_root, leaves));
        }
        let record = SigningRecord { round, digest };
        self.prepare_signing(now, record, attempt, package_hashes);
    }

    /// Tells the round's leader, signed, that this member will not sign
    /// `attempt` and why, so it moves on at once (once per attempt).
    pub(super) fn refuse(
        &mut self,
        now: TimestampMs,
        round: Round,
        attempt: usize,
        digest: [u8; 32],
        reason: RefusalReason,
    ) {
        let Ok(attempt) = u8::try_from(attempt) else {
            return;
        };
        if round != self.round || !self.rs.refused.insert(attempt) {
            return;
        }
        self.stats.refusals_sent += 1;
        let msg = self.sign_msg(
            round,
            Payload::Refusal(RefusalMsg {
                attempt,
                report_digest: digest,
                reason,
                clock_ms: now,
            }),
        );
        let leader = self.leader_of(round);
        self.send(leader, msg.bytes);
    }

    /// Signs a checked proposal: refuses a used nonce and anything the
    /// signing ledger forbids, then records (two-phase) and signs.
    pub(super) fn prepare_signing(
        &mut self,
        now: TimestampMs,
        record: SigningRecord,
        attempt: usize,
        package_hashes: Vec<[u8; 32]>,
    ) {
        let (round, digest) = (record.round, record.digest);
        let nonces = self.rs.offered
            && self
                .lanes
                .iter()
                .all(|lane| with_lane!(lane, l => l.has_nonce(attempt)));
        if !nonces || self.pending.iter().any(|p| p.attempt == attempt) {
            // That commitment was already used (or never ours): never sign twice with a nonce.
            self.stats.nonce_reuse_refused += 1;
            self.refuse(now, round, attempt, digest, RefusalReason::NonceUsed);
            return;
        }
        if let Some(l) = self.ledger
            && (l.round > round || (l.round == round && l.digest != digest))
        {
            self.stats.proposals_refused += 1;
            self.refuse(now, round, attempt, digest, RefusalReason::Ledger);
            return;
        }
        if self.pending.iter().any(|p| p.record != record) {
            self.stats.proposals_refused += 1;
            self.refuse(now, round, attempt, digest, RefusalReason::Ledger);
            return;
        }
        let pending = PendingSign {
            record,
            attempt,
            package_hashes,
        };
        if self.ledger == Some(record) {
            // Already durably recorded (another attempt of the same report): sign now.
            self.sign_share(now, pending);
        } else {
            // One ledger write per record: later attempts wait for its answer.
            let first = self.pending.is_empty();
            self.pending.push(pending);
            if first {
                self.out.push(Action::RecordSigning { round, digest });
            }
        }
    }

    pub(super) fn check_proposal(
        &mut self,
        now: TimestampMs,
        round: Round,
        p: &ProposalMsg,
        hashes: &[[u8; 64]],
        header: &ReportHeader,
        digest: &[u8; 32],
    ) -> Result<(Signing, Vec<ReportLeaf>), Refusal> {
        let skew = self.committee.timeouts().max_clock_skew_ms;
        if p.timestamp_ms.abs_diff(now) > skew {
            return Err(Refusal::Timestamp);
        }
        // Never older than a report already signed: then a later round is a later
        // timestamp for every feed, which is all SibylFeed compares.
        if self
            .last_values
            .values()
            .any(|v| p.timestamp_ms <= v.reported_at_ms)
        {
            return Err(Refusal::Timestamp);
        }
        // Attributed observations: signed, this round, distinct ascending
        // senders; then the signer-only ones, likewise and disjoint.
        let hashes =
            (hashes.len() == p.observations.len() + p.signer_observations.len()).then_some(hashes);
        let attributed = self.attributed(round, &p.observations, hashes, 0, &BTreeMap::new())?;
        if attributed.len() < self.committee.quorum() {
            return Err(Refusal::Observation);
        }
        let signer_only = self.attributed(
            round,
            &p.signer_observations,
            hashes,
            p.observations.len(),
            &attributed,
        )?;
        if p.leaves.is_empty()
            || p.leaves
                .iter()
                .any(|l| !self.committee.feeds().contains_key(&l.feed_id))
        {
            return Err(Refusal::Mismatch);
        }
        let obs: Vec<&ObservationMsg> = attributed.values().collect();
        let computed = compute_leaves(
            &self.committee,
            p.timestamp_ms,
            &obs,
            p.leaves.iter().map(|l| &l.feed_id),
            &self.last_values,
        );
        let mut leaves = Vec::with_capacity(computed.len());
        for (_, leaf) in computed {
            leaves.push(leaf.ok_or(Refusal::Mismatch)?);
        }
        // Field-by-field equality is byte-for-byte equality of the canonical
        // encoding (every value has exactly one encoding).
        if leaves != p.leaves {
            return Err(Refusal::Mismatch);
        }
        if merkle_root(&leaves) != header.merkle_root {
            return Err(Refusal::Mismatch);
        }
        // The commands are the attributed observations' offers, in order;
        // the header's margin root was computed from `p.commands`.
        if order_commands(attributed.iter().map(|(k, v)| (*k, v))) != p.commands {
            return Err(Refusal::Mismatch);
        }
        // A margin state root only if this member computed it itself (and
        // attested it in the observation it sent).
        if let Some(state) = &p.margin_state
            && !self.attested_roots.contains(state)
        {
            self.stats.margin_states_refused += 1;
            return Err(Refusal::Mismatch);
        }
        let attempt = usize::from(p.attempt);
        let sources: BTreeMap<u16, &ObservationMsg> = attributed
            .iter()
            .chain(signer_only.iter())
            .map(|(k, v)| (*k, v))
            .collect();
        let signing =
            self.check_packages(&p.signing_packages, p.key_set, &sources, attempt, digest)?;
        Ok((signing, leaves))
    }

    /// Decodes and checks a proposal's list of signed observations: each of
    /// this round, senders strictly ascending and none in `taken`.
    /// `hashes` (content hashes of every embedded observation of the
    /// proposal, from decoding it) are used from index `offset` on.
    pub(super) fn attributed(
        &self,
        round: Round,
        list: &[Vec<u8>],
        hashes: Option<&[[u8; 64]]>,
        offset: usize,
        taken: &BTreeMap<u16, ObservationMsg>,
    ) -> Result<BTreeMap<u16, ObservationMsg>, Refusal> {
        let mut out = BTreeMap::new();
        let mut last_sender = 0u16;
        for (i, bytes) in list.iter().enumerate() {
            let hash = hashes.and_then(|h| h.get(offset + i));
            let m = if self.rs.own_observation.as_ref() == Some(bytes) {
                SignedMessage::decode_own(bytes, &self.committee)
            } else {
                SignedMessage::decode_hashed(bytes, &self.committee, hash).map(|(m, _)| m)
            }
            .map_err(|_| Refusal::Observation)?;
            let Payload::Observation(o) = m.payload else {
                return Err(Refusal::Observation);
            };
            if m.round != round || m.sender <= last_sender || taken.contains_key(&m.sender) {
                return Err(Refusal::Observation);
            }
            last_sender = m.sender;
            out.insert(m.sender, o);
        }
        Ok(out)
    }

    /// The proposal's signing packages, one per suite this member signs
    /// with, each checked by its lane ([`Lane::check_package`]: canonical,
    /// at least `t` signers, each commitment byte for byte the one that
    /// signer announced for this suite and attempt, this member's own
    /// among them, the report digest as message), all naming the same
    /// signers. Kept only when every one passes; returns their hashes and
    /// the signers.
    pub(super) fn check_packages(
        &mut self,
        packages: &[SuitePackage],
        set: u64,
        attributed: &BTreeMap<u16, &ObservationMsg>,
        attempt: usize,
        digest: &[u8; 32],
    ) -> Result<Signing, Refusal> {
        let checked = self.stage_packages(packages, set, attributed, attempt, digest);
        for lane in &mut self.lanes {
            if checked.is_ok() {
                with_lane!(lane, l => l.keep_staged());
            } else {
                with_lane!(lane, l => l.drop_staged());
            }
        }
        checked
    }

    fn stage_packages(
        &mut self,
        packages: &[SuitePackage],
        set: u64,
        attributed: &BTreeMap<u16, &ObservationMsg>,
        attempt: usize,
        digest: &[u8; 32],
    ) -> Result<Signing, Refusal> {
        if packages.len() != self.lanes.len() {
            return Err(Refusal::Package);
        }
        let (me, t) = (self.me, self.committee.t());
        let mut hashes = Vec::with_capacity(packages.len());
        let mut signers: Option<BTreeSet<u16>> = None;
        for (i, package) in packages.iter().enumerate() {
            let announced: BTreeMap<u16, &[u8]> = attributed
                .iter()
                .filter_map(|(m, o)| Some((*m, self.announced(&o.commitments, i, attempt)?)))
                .collect();
            let lane = &mut self.lanes[i];
            if lane.suite() != package.suite {
                return Err(Refusal::Package);
            }
            with_lane!(lane, l => l.check_package(attempt, set, &package.package, &announced, me, digest, t))?;
            let (named, hash) = with_lane!(lane, l => (l.staged_signers(), l.staged_hash()));
            let (Some(named), Some(hash)) = (named, hash) else {
                return Err(Refusal::Package);
            };
            if signers.as_ref().is_some_and(|s| *s != named) {
                return Err(Refusal::Package);
            }
            signers = Some(named);
            hashes.push(hash);
        }
        Ok(Signing {
            package_hashes: hashes,
            signers: signers.unwrap_or_default(),
        })
    }

    pub(super) fn on_recorded<R: RngCore + CryptoRng>(
        &mut self,
        now: TimestampMs,
        record: SigningRecord,
        _rng: &mut R,
    ) {
        if self.ledger.is_none_or(|l| l.round <= record.round) {
            self.ledger = Some(record);
        }
        let ready: Vec<PendingSign> = self
            .pending
            .extract_if(.., |p| p.record == record)
            .collect();
        if record.round != self.round || self.rs.reported {
            return;
        }
        for pending in ready {
            self.sign_share(now, pending);
        }
    }

    pub(super) fn sign_share(&mut self, now: TimestampMs, pending: PendingSign) {
        // Each lane erases its nonce before signing: used at most once.
        let corrupt = self.faults.invalid_shares();
        let mut shares = Vec::with_capacity(self.lanes.len());
        for (lane, hash) in self.lanes.iter_mut().zip(&pending.package_hashes) {
            let suite = lane.suite();
            let share = with_lane!(lane, l => l.sign(pending.attempt, hash, corrupt));
            match share {
                Some(share) => shares.push(SuiteShare {
                    suite,
                    package_hash: *hash,
                    share,
                }),
                None => {
                    self.stats.nonce_reuse_refused += 1;
                    return;
                }
            }
        }
        if shares.len() != self.lanes.len() {
            return;
        }
        let share_msg = ShareMsg {
            // Below `attempts()`, at most MAX_COMMITMENTS.
            #[allow(clippy::cast_possible_truncation)]
            attempt: pending.attempt as u8,
            report_digest: pending.record.digest,
            shares,
        };
        let round = pending.record.round;
        let msg = self.sign_msg(round, Payload::Share(share_msg.clone()));
        self.stats.shares_sent += 1;
        // To every member: each assembles the report itself (follow.rs).
        self.out.push(Action::Broadcast {
            bytes: msg.bytes.clone(),
        });
        if self.leader_of(round) == self.me {
            self.loopback.push_back(msg.bytes);
        } else {
            self.follow_share(now, self.me, &share_msg);
        }
    }
}
