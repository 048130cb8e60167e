//! The member side: observe, check a proposal, record the signing, sign.

use super::*;

impl<C: SibylSuite> Node<C> {
    pub(super) fn send_observation<R: RngCore + CryptoRng>(
        &mut self,
        now: TimestampMs,
        rng: &mut R,
    ) {
        if !self.started
            || self.rs.observation_sent
            || self.rs.reported
            || self.leader_unreachable(self.round)
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
        let commitment_bytes = if self.clock.doubtful {
            self.stats.observed_without_signing += 1;
            Vec::new()
        } else {
            let attempts = self.committee.attempts();
            let prepared = match self.spare.take().filter(|p| p.nonces.len() == attempts) {
                Some(p) => p,
                None => match Prepared::generate(&self.key_package, attempts, rng) {
                    Some(p) => p,
                    None => return,
                },
            };
            let Prepared {
                nonces,
                commitments,
                commitment_bytes,
            } = prepared;
            self.rs.nonces = nonces;
            self.rs.commitments = commitments;
            commitment_bytes
        };
        self.rs.observation_sent = true;
        self.last_observed_round = Some(self.round);
        self.out
            .push(Action::RecordObservation { round: self.round });
        let msg = self.sign_msg(
            self.round,
            Payload::Observation(ObservationMsg {
                entries,
                commitments: commitment_bytes,
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
        let header = ReportHeader {
            version: PROTOCOL_VERSION,
            config_digest: *self.committee.config_digest(),
            round,
            timestamp_ms: p.timestamp_ms,
            merkle_root: p.merkle_root,
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
        self.clock_sample(sender, p.timestamp_ms);
        let checked = if self.faults.refuse() {
            Err(RefusalReason::Other)
        } else {
            self.check_proposal(now, round, p, hashes, &header, &digest)
        };
        let (package, leaves) = match checked {
            Ok(checked) => checked,
            Err(reason) => {
                self.stats.proposals_refused += 1;
                self.refuse(now, round, usize::from(p.attempt), digest, reason);
                return;
            }
        };
        let package_hash = keccak(&p.signing_package);
        let attempt = usize::from(p.attempt);
        let follow = follow::AttemptPackage {
            number: attempt,
            package: package.clone(),
            package_hash,
        };
        self.follow_attempt(now, &header, digest, &leaves, follow);
        if self.rs.checked.is_none() {
            self.rs.checked = Some((header.merkle_root, leaves));
        }
        let record = SigningRecord { round, digest };
        self.prepare_signing(now, record, attempt, package, package_hash);
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
        package: SigningPackage<C>,
        package_hash: [u8; 32],
    ) {
        let (round, digest) = (record.round, record.digest);
        if self.rs.nonces.get(attempt).is_none_or(|n| n.is_none())
            || self.pending.iter().any(|p| p.attempt == attempt)
        {
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
            package,
            package_hash,
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
        &self,
        now: TimestampMs,
        round: Round,
        p: &ProposalMsg,
        hashes: &[[u8; 64]],
        header: &ReportHeader,
        digest: &[u8; 32],
    ) -> Result<(SigningPackage<C>, Vec<ReportLeaf>), Refusal> {
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
        let attempt = usize::from(p.attempt);
        let sources: BTreeMap<u16, &ObservationMsg> = attributed
            .iter()
            .chain(signer_only.iter())
            .map(|(k, v)| (*k, v))
            .collect();
        let package = self.check_package(&p.signing_package, &sources, attempt, digest)?;
        Ok((package, leaves))
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

    /// The proposal's signing package, checked: its canonical serialization
    /// over at least t signers, each commitment byte for byte the one that
    /// signer announced for this attempt in its attributed observation, this
    /// member's own among them, and the report digest as its message.
    ///
    /// The bytes are compared before any point is parsed, and this member's
    /// own commitment (which it made) is not parsed at all; the others are
    /// parsed with [`SibylSuite::parse_commitments`]. The result equals what
    /// `SigningPackage::deserialize` gives for every package accepted here
    /// (a package is canonical, so the bytes decide it).
    pub(super) fn check_package(
        &self,
        bytes: &[u8],
        attributed: &BTreeMap<u16, &ObservationMsg>,
        attempt: usize,
        digest: &[u8; 32],
    ) -> Result<SigningPackage<C>, Refusal> {
        let mine = self.rs.commitments.get(attempt).ok_or(Refusal::Package)?;
        let my_id = *self.key_package.identifier();
        let my_bytes = attributed
            .get(&self.me)
            .and_then(|o| o.commitments.get(attempt))
            .ok_or(Refusal::Package)?;
        let parts = split_package::<C>(bytes, my_bytes.len()).ok_or(Refusal::Package)?;
        if parts.message != digest.as_slice()
            || parts.signers.len() < usize::from(self.committee.t())
        {
            return Err(Refusal::Package);
        }
        let mut commitments = BTreeMap::new();
        let mut last: Option<Identifier<C>> = None;
        for (id_bytes, c_bytes) in parts.signers {
            let id = Identifier::<C>::deserialize(id_bytes).map_err(|_| Refusal::Package)?;
            if last.is_some_and(|l| l >= id) {
                return Err(Refusal::Package); // not the canonical (ascending) order
            }
            last = Some(id);
            let member = *self.ids.get(&id).ok_or(Refusal::Package)?;
            let announced = attributed
                .get(&member)
                .and_then(|o| o.commitments.get(attempt))
                .ok_or(Refusal::Package)?;
            if announced.as_slice() != c_bytes {
                return Err(Refusal::Package);
            }
            let c = if id == my_id {
                *mine
            } else {
                self.parse_commitments_of(member, c_bytes)
                    .ok_or(Refusal::Package)?
            };
            commitments.insert(id, c);
        }
        if !commitments.contains_key(&my_id) {
            return Err(Refusal::Package);
        }
        Ok(SigningPackage::new(commitments, digest))
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
        let ready: Vec<PendingSign<C>> = self
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

    pub(super) fn sign_share(&mut self, now: TimestampMs, pending: PendingSign<C>) {
        // Erase the nonce before anything else: it is used at most once.
        let Some(nonces) = self
            .rs
            .nonces
            .get_mut(pending.attempt)
            .and_then(Option::take)
        else {
            self.stats.nonce_reuse_refused += 1;
            return;
        };
        let share = if self.faults.invalid_shares() {
            let mut wrong = pending.package.message().clone();
            wrong.push(0);
            let bad = SigningPackage::new(pending.package.signing_commitments().clone(), &wrong);
            frost::round2::sign(&bad, &nonces, &self.key_package)
        } else {
            frost::round2::sign(&pending.package, &nonces, &self.key_package)
        };
        let Ok(share) = share else {
            return;
        };
        let share_msg = ShareMsg {
            // Below `attempts()`, at most MAX_COMMITMENTS.
            #[allow(clippy::cast_possible_truncation)]
            attempt: pending.attempt as u8,
            report_digest: pending.record.digest,
            package_hash: pending.package_hash,
            share: share.serialize(),
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
