//! One ciphersuite's part of a round: a committee that lists several
//! suites signs every report with each of them, in one round. The round
//! logic (who observes, proposes, signs, when an attempt is complete) is
//! suite-independent and lives in the rest of the module; everything typed
//! by a suite — the member's key package, its nonces and commitments, each
//! attempt's signing package and shares — lives in a [`Lane`], one per
//! suite the member holds keys for, in ascending suite order.
//!
//! ```text
//!  observation:  commitments  per suite × per attempt
//!  proposal:     one signing package per suite (same signers, same digest)
//!  share:        one share per suite
//!  report:       one signature per suite, all over the same header digest
//! ```
//!
//! [`AnyLane`] holds a lane of either suite; [`with_lane!`] runs the same
//! generic code on whichever it is.

use super::frost_internals::{PackageParts, aggregate_verified, split_package};
use super::{NodeError, Refusal, SibylSuite};
use crate::report::Suite;
use crate::round::committee::Committee;
use crate::round::evidence::{Evidence, EvidenceError};
use frost_core::{
    self as frost, Ciphersuite, Identifier, SigningPackage,
    keys::{KeyPackage, PublicKeyPackage},
    round1::{SigningCommitments, SigningNonces},
    round2::SignatureShare,
};
use rand_core::{CryptoRng, RngCore};
use std::any::Any;
use std::collections::{BTreeMap, BTreeSet};

/// A lane of either suite.
pub(super) enum AnyLane {
    Ed25519(Box<Lane<frost_ed25519::Ed25519Sha512>>),
    Secp256k1Evm(Box<Lane<frost_secp256k1_evm::Secp256K1Keccak256>>),
}

/// Runs `$body` with `$l` bound to the typed lane inside `$lane`.
macro_rules! with_lane {
    ($lane:expr, $l:ident => $body:expr) => {
        match $lane {
            $crate::round::lane::AnyLane::Ed25519($l) => $body,
            $crate::round::lane::AnyLane::Secp256k1Evm($l) => $body,
        }
    };
}
pub(super) use with_lane;

impl AnyLane {
    /// The lane of suite `C`, if this is one.
    pub(super) fn get<C: SibylSuite>(&self) -> Option<&Lane<C>> {
        with_lane!(self, l => (l.as_ref() as &dyn Any).downcast_ref::<Lane<C>>())
    }

    pub(super) fn suite(&self) -> Suite {
        with_lane!(self, l => l.suite())
    }
}

/// FROST nonces and commitments made ahead of the round that uses them
/// ([`super::Node::precompute`]); they move into exactly one round's state.
struct Prepared<C: Ciphersuite> {
    nonces: Vec<Option<SigningNonces<C>>>,
    commitments: Vec<SigningCommitments<C>>,
    commitment_bytes: Vec<Vec<u8>>,
}

impl<C: Ciphersuite> Prepared<C> {
    fn generate<R: RngCore + CryptoRng>(
        key: &KeyPackage<C>,
        attempts: usize,
        rng: &mut R,
    ) -> Option<Self> {
        let mut p = Self {
            nonces: Vec::with_capacity(attempts),
            commitments: Vec::with_capacity(attempts),
            commitment_bytes: Vec::with_capacity(attempts),
        };
        for _ in 0..attempts {
            let (n, c) = frost::round1::commit(key.signing_share(), rng);
            p.commitment_bytes.push(c.serialize().ok()?);
            p.nonces.push(Some(n));
            p.commitments.push(c);
        }
        Some(p)
    }
}

/// One key set's keys of this suite: the member's key package and the
/// public key package it belongs to.
struct Keys<C: Ciphersuite> {
    key_package: KeyPackage<C>,
    pubkeys: PublicKeyPackage<C>,
}

/// One suite's keys and round state (see the module docs).
///
/// A lane holds one or more key sets ([`super::key_set_id`]): a proactive
/// refresh gives every member new shares of the same group key, and for a
/// while a member holds both. Each attempt is signed with the set its
/// proposal names (shares of different sets never combine), so the lane
/// remembers which set each kept package belongs to.
pub(super) struct Lane<C: SibylSuite> {
    /// The set this member proposes with as leader (and whose share it
    /// hedges its nonces with), and its keys.
    lead: u64,
    lead_keys: Keys<C>,
    /// The other sets held (during a refresh: the old or the new shares).
    others: BTreeMap<u64, Keys<C>>,
    ids: BTreeMap<Identifier<C>, u16>,
    /// Nonces for the next observation, made in idle time.
    spare: Option<Prepared<C>>,
    /// Each member's announced next commitments, parsed ahead.
    warm: BTreeMap<u16, (Vec<u8>, SigningCommitments<C>)>,
    // This round (cleared by `reset`).
    nonces: Vec<Option<SigningNonces<C>>>,
    commitments: Vec<SigningCommitments<C>>,
    /// Leader: the observers' first-attempt commitments, parsed as their
    /// observations arrived; `None`: they do not parse.
    first_commitments: BTreeMap<u16, Option<SigningCommitments<C>>>,
    /// Each attempt's signing package (built as leader, checked as signer or
    /// parsed as follower) and the Keccak-256 of its serialization. The
    /// first one stored for an attempt stays. With it, the key set the
    /// attempt signs with.
    packages: BTreeMap<usize, (SigningPackage<C>, [u8; 32], u64)>,
    /// A package checked or built but not yet kept: every lane's must pass
    /// before any is ([`Lane::keep_staged`]).
    staged: Option<(usize, SigningPackage<C>, [u8; 32], u64)>,
    /// Each attempt's shares received (leader or follower).
    shares: BTreeMap<usize, BTreeMap<Identifier<C>, SignatureShare<C>>>,
}

pub(super) fn keccak(bytes: &[u8]) -> [u8; 32] {
    use sha3::{Digest, Keccak256};
    Keccak256::digest(bytes).into()
}

impl<C: SibylSuite> Lane<C> {
    pub(super) fn new(
        committee: &Committee,
        me: u16,
        set: u64,
        key_package: KeyPackage<C>,
        pubkeys: PublicKeyPackage<C>,
    ) -> Result<Self, NodeError> {
        check_keys(me, &key_package, &pubkeys)?;
        let mut ids = BTreeMap::new();
        for m in committee.members() {
            let id =
                Identifier::<C>::try_from(m.index).map_err(|e| NodeError::Frost(e.to_string()))?;
            ids.insert(id, m.index);
        }
        Ok(Self {
            lead: set,
            lead_keys: Keys {
                key_package,
                pubkeys,
            },
            others: BTreeMap::new(),
            ids,
            spare: None,
            warm: BTreeMap::new(),
            nonces: Vec::new(),
            commitments: Vec::new(),
            first_commitments: BTreeMap::new(),
            packages: BTreeMap::new(),
            staged: None,
            shares: BTreeMap::new(),
        })
    }

    pub(super) fn suite(&self) -> Suite {
        C::SUITE
    }

    /// The public key package of the set this member leads with.
    pub(super) fn pubkeys(&self) -> &PublicKeyPackage<C> {
        &self.lead_keys().pubkeys
    }

    fn lead_keys(&self) -> &Keys<C> {
        &self.lead_keys
    }

    #[cfg(test)]
    pub(super) fn lead_key_package(&self) -> &KeyPackage<C> {
        &self.lead_keys.key_package
    }

    pub(super) fn lead(&self) -> u64 {
        self.lead
    }

    fn keys_of_set(&self, set: u64) -> Option<&Keys<C>> {
        if set == self.lead {
            Some(&self.lead_keys)
        } else {
            self.others.get(&set)
        }
    }

    /// Adds key set `set`, checked by [`check_same_group`] first.
    pub(super) fn insert_set(
        &mut self,
        set: u64,
        key_package: KeyPackage<C>,
        pubkeys: PublicKeyPackage<C>,
    ) {
        if set != self.lead {
            self.others.insert(
                set,
                Keys {
                    key_package,
                    pubkeys,
                },
            );
        }
    }

    pub(super) fn holds(&self, set: u64) -> bool {
        set == self.lead || self.others.contains_key(&set)
    }

    /// Every set held, ascending.
    pub(super) fn sets(&self) -> Vec<u64> {
        let mut all: Vec<u64> = self.others.keys().copied().collect();
        all.push(self.lead);
        all.sort_unstable();
        all
    }

    pub(super) fn set_lead(&mut self, set: u64) {
        if let Some(keys) = self.others.remove(&set) {
            let old = std::mem::replace(&mut self.lead_keys, keys);
            self.others.insert(self.lead, old);
            self.lead = set;
        }
    }

    /// Forgets key set `set` (never the lead).
    pub(super) fn retire(&mut self, set: u64) {
        self.others.remove(&set);
    }

    /// The keys attempt `attempt`'s kept package signs with.
    fn keys_of(&self, attempt: usize) -> Option<(&SigningPackage<C>, &Keys<C>)> {
        let (package, _, set) = self.packages.get(&attempt)?;
        Some((package, self.keys_of_set(*set)?))
    }

    /// Forgets the round's nonces, commitments, packages and shares.
    pub(super) fn reset(&mut self) {
        self.nonces.clear();
        self.commitments.clear();
        self.first_commitments.clear();
        self.packages.clear();
        self.staged = None;
        self.shares.clear();
    }

    pub(super) fn precompute<R: RngCore + CryptoRng>(&mut self, attempts: usize, rng: &mut R) {
        if self.spare.is_none() {
            self.spare = Prepared::generate(&self.lead_keys().key_package, attempts, rng);
        }
    }

    pub(super) fn next_commitment(&self) -> Option<&[u8]> {
        self.spare
            .as_ref()
            .and_then(|p| p.commitment_bytes.first())
            .map(Vec::as_slice)
    }

    #[cfg(test)]
    pub(super) fn spare_commitments(&self) -> Option<Vec<Vec<u8>>> {
        self.spare.as_ref().map(|p| p.commitment_bytes.clone())
    }

    /// Parses and keeps member `from`'s announced next commitment.
    pub(super) fn warm(&mut self, from: u16, bytes: &[u8]) -> bool {
        if self
            .warm
            .get(&from)
            .is_some_and(|(b, _)| b.as_slice() == bytes)
        {
            return true;
        }
        match C::parse_commitments(bytes) {
            Some(c) => {
                self.warm.insert(from, (bytes.to_vec(), c));
                true
            }
            None => {
                self.warm.remove(&from);
                false
            }
        }
    }

    /// [`SibylSuite::parse_commitments`], answered from the warm set when
    /// member `from` announced exactly these bytes ahead.
    fn parse_of(&self, from: u16, bytes: &[u8]) -> Option<SigningCommitments<C>> {
        match self.warm.get(&from) {
            Some((b, c)) if b.as_slice() == bytes => Some(*c),
            _ => C::parse_commitments(bytes),
        }
    }

    /// Installs this round's nonces (the ones made ahead, or fresh ones) and
    /// returns their commitments, serialized, one per attempt.
    pub(super) fn begin<R: RngCore + CryptoRng>(
        &mut self,
        attempts: usize,
        rng: &mut R,
    ) -> Option<Vec<Vec<u8>>> {
        let prepared = match self.spare.take().filter(|p| p.nonces.len() == attempts) {
            Some(p) => p,
            None => Prepared::generate(&self.lead_keys().key_package, attempts, rng)?,
        };
        self.nonces = prepared.nonces;
        self.commitments = prepared.commitments;
        Some(prepared.commitment_bytes)
    }

    /// Leader: parses an observer's first-attempt commitment as its
    /// observation arrives (`own`: this member's, which it made).
    pub(super) fn note_first(&mut self, sender: u16, bytes: Option<&[u8]>, own: bool) {
        let first = if own {
            self.commitments.first().copied()
        } else {
            bytes.and_then(|b| self.parse_of(sender, b))
        };
        self.first_commitments.insert(sender, first);
    }

    /// Leader: stages attempt `attempt`'s package over `digest` from the
    /// signers' announced commitments (serialized), to be signed with the
    /// lead key set. `Err(member)`: that member's commitment does not parse.
    pub(super) fn build_package(
        &mut self,
        attempt: usize,
        signers: &[(u16, &[u8])],
        digest: &[u8; 32],
    ) -> Result<Vec<u8>, Option<u16>> {
        let mut commitments = BTreeMap::new();
        for (s, bytes) in signers {
            let id = Identifier::<C>::try_from(*s).map_err(|_| None)?;
            let parsed = match (attempt, self.first_commitments.get(s)) {
                (0, Some(first)) => *first,
                _ => self.parse_of(*s, bytes),
            };
            commitments.insert(id, parsed.ok_or(Some(*s))?);
        }
        let package = SigningPackage::new(commitments, digest);
        let bytes = package.serialize().map_err(|_| None)?;
        let hash = keccak(&bytes);
        self.staged = Some((attempt, package, hash, self.lead));
        Ok(bytes)
    }

    /// Signer: the proposal's signing package for this suite, checked and
    /// staged: its canonical serialization over at least `t` signers, each
    /// commitment byte for byte the one that signer announced for this
    /// suite and attempt (`announced`), this member's own among them, and
    /// the report digest as its message.
    ///
    /// The bytes are compared before any point is parsed, and this member's
    /// own commitment (which it made) is not parsed at all; the others are
    /// parsed with [`SibylSuite::parse_commitments`]. The result equals what
    /// `SigningPackage::deserialize` gives for every package accepted here
    /// (a package is canonical, so the bytes decide it). `set`: the key set
    /// the proposal signs with, which this member must hold.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn check_package(
        &mut self,
        attempt: usize,
        set: u64,
        bytes: &[u8],
        announced: &BTreeMap<u16, &[u8]>,
        me: u16,
        digest: &[u8; 32],
        t: u16,
    ) -> Result<(), Refusal> {
        if !self.holds(set) {
            return Err(Refusal::Package);
        }
        let mine = self.commitments.get(attempt).ok_or(Refusal::Package)?;
        let my_id = *self.lead_keys().key_package.identifier();
        let my_bytes = announced.get(&me).ok_or(Refusal::Package)?;
        let parts = split_package::<C>(bytes, my_bytes.len()).ok_or(Refusal::Package)?;
        if parts.message != digest.as_slice() || parts.signers.len() < usize::from(t) {
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
            if announced.get(&member).copied() != Some(c_bytes) {
                return Err(Refusal::Package);
            }
            let c = if id == my_id {
                *mine
            } else {
                self.parse_of(member, c_bytes).ok_or(Refusal::Package)?
            };
            commitments.insert(id, c);
        }
        if !commitments.contains_key(&my_id) {
            return Err(Refusal::Package);
        }
        self.staged = Some((
            attempt,
            SigningPackage::new(commitments, digest),
            keccak(bytes),
            set,
        ));
        Ok(())
    }

    /// Follower: parses and stages a signing package without a commitment
    /// of this member's to compare with: canonical framing, identifiers of
    /// members ascending, at least `t` of them, the report digest as its
    /// message.
    pub(super) fn parse_package(
        &mut self,
        attempt: usize,
        set: u64,
        bytes: &[u8],
        digest: &[u8; 32],
        t: u16,
    ) -> bool {
        if !self.holds(set) {
            return false;
        }
        let parse = || {
            let parts = split_package_for_digest::<C>(bytes)?;
            if parts.message != digest.as_slice() || parts.signers.len() < usize::from(t) {
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
                commitments.insert(id, self.parse_of(member, c_bytes)?);
            }
            Some(SigningPackage::new(commitments, digest))
        };
        match parse() {
            Some(package) => {
                self.staged = Some((attempt, package, keccak(bytes), set));
                true
            }
            None => false,
        }
    }

    /// The members the staged package names.
    pub(super) fn staged_signers(&self) -> Option<BTreeSet<u16>> {
        self.staged.as_ref().map(|(_, p, _, _)| {
            p.signing_commitments()
                .keys()
                .filter_map(|id| self.ids.get(id).copied())
                .collect()
        })
    }

    /// The staged package's hash.
    pub(super) fn staged_hash(&self) -> Option<[u8; 32]> {
        self.staged.as_ref().map(|(_, _, h, _)| *h)
    }

    /// Keeps the staged package for its attempt (unless one is kept already).
    pub(super) fn keep_staged(&mut self) {
        if let Some((attempt, package, hash, set)) = self.staged.take() {
            self.packages.entry(attempt).or_insert((package, hash, set));
        }
    }

    pub(super) fn drop_staged(&mut self) {
        self.staged = None;
    }

    /// Whether this member still holds its nonce for `attempt`.
    pub(super) fn has_nonce(&self, attempt: usize) -> bool {
        self.nonces.get(attempt).is_some_and(Option::is_some)
    }

    /// Signs attempt `attempt`'s kept package whose hash is `hash`, erasing
    /// the nonce first (it is used at most once, also when signing fails).
    /// `corrupt`: a share that does not verify (simulator and fault tests).
    pub(super) fn sign(
        &mut self,
        attempt: usize,
        hash: &[u8; 32],
        corrupt: bool,
    ) -> Option<Vec<u8>> {
        let nonces = self.nonces.get_mut(attempt).and_then(Option::take)?;
        let (_, kept, _) = self.packages.get(&attempt)?;
        if kept != hash {
            return None;
        }
        let (package, keys) = self.keys_of(attempt)?;
        let share = if corrupt {
            let mut wrong = package.message().clone();
            wrong.push(0);
            let bad = SigningPackage::new(package.signing_commitments().clone(), &wrong);
            frost::round2::sign(&bad, &nonces, &keys.key_package)
        } else {
            frost::round2::sign(package, &nonces, &keys.key_package)
        };
        share.ok().map(|s| s.serialize())
    }

    /// Keeps member `sender`'s share of `attempt`; `false` if it does not parse.
    pub(super) fn add_share(&mut self, attempt: usize, sender: u16, bytes: &[u8]) -> bool {
        let (Ok(share), Ok(id)) = (
            SignatureShare::<C>::deserialize(bytes),
            Identifier::<C>::try_from(sender),
        ) else {
            return false;
        };
        self.shares.entry(attempt).or_default().insert(id, share);
        true
    }

    /// Whether member `member`'s share of `attempt` is valid.
    pub(super) fn share_valid(&self, attempt: usize, member: u16) -> bool {
        let (Ok(id), Some((package, keys))) =
            (Identifier::<C>::try_from(member), self.keys_of(attempt))
        else {
            return false;
        };
        let (Some(share), Some(verifying_share)) = (
            self.shares.get(&attempt).and_then(|s| s.get(&id)),
            keys.pubkeys.verifying_shares().get(&id),
        ) else {
            return false;
        };
        frost::verify_signature_share(
            id,
            verifying_share,
            share,
            package,
            keys.pubkeys.verifying_key(),
        )
        .is_ok()
    }

    /// Adds up `attempt`'s shares into the group signature (serialized).
    /// The common case (every share good) is checked with one signature
    /// verification; with `find_cheaters`, a failure names the members whose
    /// shares are invalid (frost's cheater detection), else it names none.
    pub(super) fn aggregate(
        &self,
        attempt: usize,
        find_cheaters: bool,
    ) -> Result<Vec<u8>, Vec<u16>> {
        let (Some((package, keys)), Some(shares)) =
            (self.keys_of(attempt), self.shares.get(&attempt))
        else {
            return Err(Vec::new());
        };
        if let Some(sig) = aggregate_verified(package, shares, &keys.pubkeys) {
            return sig.serialize().map_err(|_| Vec::new());
        }
        if !find_cheaters {
            return Err(Vec::new());
        }
        match frost::aggregate_custom(
            package,
            shares,
            &keys.pubkeys,
            frost::CheaterDetection::AllCheaters,
        ) {
            Ok(sig) => sig.serialize().map_err(|_| Vec::new()),
            Err(frost::Error::InvalidSignatureShare { culprits }) => Err(culprits
                .iter()
                .filter_map(|id| self.ids.get(id).copied())
                .collect()),
            Err(_) => Err(Vec::new()),
        }
    }

    /// Whether `sig` is a valid group signature on `digest` in this suite.
    pub(super) fn verify(&self, digest: &[u8; 32], sig: &[u8]) -> bool {
        C::verify_signature_bytes(self.pubkeys().verifying_key(), digest, sig)
    }

    /// This suite's signing package of `attempt`, serialized (evidence).
    pub(super) fn package_bytes(&self, attempt: usize) -> Vec<u8> {
        self.packages
            .get(&attempt)
            .and_then(|(p, _, _)| p.serialize().ok())
            .unwrap_or_default()
    }

    /// Evidence that member `member`'s share of this suite in `share_msg`
    /// does not verify against `attempt`'s package.
    pub(super) fn invalid_share_evidence(&self, share_msg: &[u8], attempt: usize) -> Evidence {
        Evidence::InvalidShare {
            suite: C::SUITE,
            share: share_msg.to_vec(),
            signing_package: self.package_bytes(attempt),
            public_key_package: self
                .keys_of(attempt)
                .map_or_else(|| self.pubkeys(), |(_, k)| &k.pubkeys)
                .serialize()
                .unwrap_or_default(),
        }
    }

    pub(super) fn verify_evidence(
        &self,
        evidence: &Evidence,
        committee: &Committee,
    ) -> Result<u16, EvidenceError> {
        // The evidence names the public key package of its attempt's set:
        // it is checked against whichever held set it is.
        let mut result = Err(EvidenceError::WrongKeys);
        for keys in std::iter::once(&self.lead_keys).chain(self.others.values()) {
            result = evidence.verify::<C>(committee, &keys.pubkeys);
            if result.is_ok() {
                break;
            }
        }
        result
    }
}

/// New keys of member `me` for `lane`'s group key (a refresh's).
pub(super) fn check_same_group<C: SibylSuite>(
    me: u16,
    lane: &Lane<C>,
    key_package: &KeyPackage<C>,
    pubkeys: &PublicKeyPackage<C>,
) -> Result<(), NodeError> {
    check_keys(me, key_package, pubkeys)?;
    if pubkeys.verifying_key() != lane.pubkeys().verifying_key() {
        return Err(NodeError::GroupKeyMismatch(C::SUITE));
    }
    Ok(())
}

/// A key package of member `me` that belongs to `pubkeys`.
fn check_keys<C: SibylSuite>(
    me: u16,
    key_package: &KeyPackage<C>,
    pubkeys: &PublicKeyPackage<C>,
) -> Result<(), NodeError> {
    let my_id = Identifier::<C>::try_from(me).map_err(|e| NodeError::Frost(e.to_string()))?;
    if *key_package.identifier() != my_id {
        return Err(NodeError::KeyPackageMismatch {
            member: me,
            suite: C::SUITE,
        });
    }
    if key_package.verifying_key() != pubkeys.verifying_key() {
        return Err(NodeError::GroupKeyMismatch(C::SUITE));
    }
    Ok(())
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
