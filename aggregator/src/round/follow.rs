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

/// One attempt a member follows.
pub(super) struct FollowAttempt<C: Ciphersuite> {
    package: SigningPackage<C>,
    package_hash: [u8; 32],
    signers: BTreeSet<u16>,
    shares: BTreeMap<Identifier<C>, SignatureShare<C>>,
    senders: BTreeSet<u16>,
    /// The shares did not add up to a valid signature: wait for the report.
    failed: bool,
}

/// An attempt's signing package and the hash of its serialization.
pub(super) struct AttemptPackage<C: Ciphersuite> {
    pub(super) number: usize,
    pub(super) package: SigningPackage<C>,
    pub(super) package_hash: [u8; 32],
}

/// The report a member is assembling in this round.
pub(super) struct Follow<C: Ciphersuite> {
    header: ReportHeader,
    digest: [u8; 32],
    leaves: Vec<ReportLeaf>,
    attempts: BTreeMap<usize, FollowAttempt<C>>,
}

impl<C: SibylSuite> Node<C> {
    /// A proposal whose leaves this member established (checked as a
    /// signer, or Merkle root recomputed as a follower) and whose package it
    /// parsed: follow the attempt, and use the shares that came before it.
    pub(super) fn follow_attempt(
        &mut self,
        now: TimestampMs,
        header: &ReportHeader,
        digest: [u8; 32],
        leaves: &[ReportLeaf],
        attempt: AttemptPackage<C>,
    ) {
        let AttemptPackage {
            number: attempt,
            package,
            package_hash,
        } = attempt;
        if self.rs.reported {
            return;
        }
        let follow = self.rs.follow.get_or_insert_with(|| Follow {
            header: header.clone(),
            digest,
            leaves: leaves.to_vec(),
            attempts: BTreeMap::new(),
        });
        if follow.digest != digest || follow.attempts.contains_key(&attempt) {
            return;
        }
        let signers = package
            .signing_commitments()
            .keys()
            .filter_map(|id| self.ids.get(id).copied())
            .collect();
        follow.attempts.insert(
            attempt,
            FollowAttempt {
                package,
                package_hash,
                signers,
                shares: BTreeMap::new(),
                senders: BTreeSet::new(),
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
    /// Merkle root; a canonical package over the report digest with at least
    /// `t` members) and follows the attempt.
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
        let known = self.rs.follow.as_ref().is_some_and(|f| f.digest == digest);
        if !known {
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
        let Some(package) = self.parse_package(&p.signing_package, &digest) else {
            self.stats.invalid_messages += 1;
            return;
        };
        let package_hash = keccak(&p.signing_package);
        let attempt = AttemptPackage {
            number: usize::from(p.attempt),
            package,
            package_hash,
        };
        self.follow_attempt(now, header, digest, &p.leaves, attempt);
        if let Some(f) = &self.rs.follow
            && self.rs.checked.is_none()
        {
            // The leader's report over these leaves needs no second Merkle tree.
            self.rs.checked = Some((f.header.merkle_root, f.leaves.clone()));
        }
    }

    /// Parses a signing package without a commitment of this member's to
    /// compare with: canonical framing, identifiers of members ascending,
    /// at least `t` of them, the report digest as its message.
    fn parse_package(&self, bytes: &[u8], digest: &[u8; 32]) -> Option<SigningPackage<C>> {
        let parts = split_package_for_digest::<C>(bytes)?;
        if parts.message != digest.as_slice()
            || parts.signers.len() < usize::from(self.committee.t())
        {
            return None;
        }
        let mut commitments = BTreeMap::new();
        let mut last: Option<Identifier<C>> = None;
        for (id_bytes, c_bytes) in parts.signers {
            let id = Identifier::<C>::deserialize(id_bytes).ok()?;
            if last.is_some_and(|l| l >= id) {
                return None;
            }
            last = Some(id);
            let member = *self.ids.get(&id)?;
            commitments.insert(id, self.parse_commitments_of(member, c_bytes)?);
        }
        Some(SigningPackage::new(commitments, digest))
    }

    /// A share sent to every member: kept for its attempt (or until its
    /// proposal arrives, at most `attempts × n` of them); the attempt's last
    /// share assembles the report.
    pub(super) fn follow_share(&mut self, now: TimestampMs, sender: u16, s: &ShareMsg) {
        if self.rs.reported {
            return;
        }
        let attempt = usize::from(s.attempt);
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
            || s.package_hash != a.package_hash
            || !a.signers.contains(&sender)
            || !a.senders.insert(sender)
        {
            return;
        }
        let (Ok(share), Ok(id)) = (
            SignatureShare::<C>::deserialize(&s.share),
            Identifier::<C>::try_from(sender),
        ) else {
            a.failed = true;
            return;
        };
        a.shares.insert(id, share);
        if a.shares.len() < a.signers.len() {
            return;
        }
        let Some(sig) = aggregate_verified(&a.package, &a.shares, &self.pubkeys) else {
            a.failed = true;
            return;
        };
        let Some(report) = sealed_report(&f.header, &f.leaves, &sig) else {
            return;
        };
        self.stats.reports_assembled += 1;
        self.accept_report(now, report);
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

/// The signed report of `header` and `leaves` under the aggregate `sig`.
pub(super) fn sealed_report<C: SibylSuite>(
    header: &ReportHeader,
    leaves: &[ReportLeaf],
    sig: &frost::Signature<C>,
) -> Option<SignedReport> {
    let sig_bytes = sig.serialize().ok()?;
    Some(SignedReport {
        header: header.clone(),
        leaves: leaves.to_vec(),
        signatures: BTreeMap::from([(C::SUITE, SignatureBytes(sig_bytes))]),
    })
}

/// [`split_package`] for a package whose message is a 32-byte digest, the
/// commitment length taken from the framing (a follower has no commitment
/// of its own to measure).
fn split_package_for_digest<C: Ciphersuite>(bytes: &[u8]) -> Option<PackageParts<'_>> {
    let empty = SigningPackage::<C>::new(BTreeMap::new(), &[])
        .serialize()
        .ok()?;
    let header_len = empty.len().checked_sub(2)?;
    let id_len = Identifier::<C>::try_from(1u16).ok()?.serialize().len();
    let rest = bytes.get(header_len..)?;
    // k (at most MAX_MEMBERS < 128: one varint byte) ‖ k entries ‖ 32 ‖ digest
    let (&k, entries) = rest.split_first()?;
    let k = usize::from(k);
    if k == 0 || k >= 128 {
        return None;
    }
    let body = entries.len().checked_sub(1 + 32)?;
    if body % k != 0 || body / k <= id_len {
        return None;
    }
    split_package::<C>(bytes, body / k - id_len)
}
