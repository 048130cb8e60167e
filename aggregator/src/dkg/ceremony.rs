//! One suite's ceremony: FROST's Pedersen DKG (`part1..3`) with a per-run
//! nonce, signed and echoed round-1 packages, signed round-2 packages and
//! verifiable complaints. Pure: the session machine ([`super::Dkg`]) feeds
//! it decoded messages of its session and carries out its [`Effect`]s.

use std::collections::{BTreeMap, BTreeSet};

use ed25519_dalek::{Verifier, VerifyingKey};
use frost_core::keys::dkg::{part1, part2, part3, round1, round2};
use frost_core::keys::refresh::{refresh_dkg_part1, refresh_dkg_part2, refresh_dkg_shares};
use frost_core::keys::{
    CoefficientCommitment, KeyPackage, PublicKeyPackage, SecretShare,
    VerifiableSecretSharingCommitment,
};
use frost_core::{Ciphersuite, Group, Identifier};
use rand_core::{CryptoRng, RngCore};

use super::wire::{
    DkgMessage, EchoEntries, RunNonces, SessionId, round1_statement, round2_statement, run_session,
    sha3,
};
use super::{DkgError, DkgOutput, EquivocationProof, IdentitySigner, Phase, suite_label};

/// Round-1 messages a member may send before this member has every nonce
/// (kept per sender until the run session is known; more are dropped).
const EARLY_ROUND1_PER_MEMBER: usize = 2;

/// What a ceremony step asks of the session machine.
#[derive(Debug)]
pub(crate) enum Effect {
    /// Send (and remember for re-sending).
    Send {
        to: u16,
        msg: DkgMessage,
    },
    /// The member repeated a message: it may lack ours; re-send (rate-limited).
    Resend {
        to: u16,
    },
    Progress(String),
}

#[derive(Clone)]
pub(crate) struct Round1Seen {
    pub(crate) hash: [u8; 32],
    pub(crate) signature: Vec<u8>,
    pub(crate) package: Vec<u8>,
}

type Round1Packages<C> = BTreeMap<Identifier<C>, round1::Package<C>>;

/// A revealed round-2 package: (accused, package, accused's signature).
type Complaint = (u16, Vec<u8>, Vec<u8>);

/// What the ceremony makes: a new key, or new shares of the key held now
/// (frost-core's refresh with DKG: every member deals a sharing of zero).
pub(crate) enum Mode<C: Ciphersuite> {
    Dkg,
    Refresh {
        key_package: KeyPackage<C>,
        public_key_package: PublicKeyPackage<C>,
    },
}

/// One member's side of one suite's ceremony.
pub(crate) struct Ceremony<C: Ciphersuite> {
    mode: Mode<C>,
    /// The ceremony's session id (message headers).
    session: SessionId,
    /// The run session, once every nonce is in: what signatures cover.
    run: Option<SessionId>,
    me: u16,
    threshold: u16,
    members: BTreeMap<u16, VerifyingKey>,
    others: BTreeSet<u16>,
    by_ident: BTreeMap<Identifier<C>, u16>,
    phase: Phase,
    nonces: RunNonces,
    /// Round-1 messages that came before the last nonce.
    early_round1: Vec<(u16, DkgMessage)>,
    secret1: Option<round1::SecretPackage<C>>,
    /// Our round-1 package (signed once the run session is known).
    package1: Vec<u8>,
    seen: BTreeMap<u16, Round1Seen>,
    echoes: BTreeMap<u16, EchoEntries>,
    /// Round-2 packages for us: (package, sender's signature).
    round2_in: BTreeMap<u16, (Vec<u8>, Vec<u8>)>,
    done_in: BTreeMap<u16, [u8; 32]>,
    /// Per complainer.
    complaints: BTreeMap<u16, Complaint>,
    /// After `part2`: its secret and the others' round-1 packages.
    secret2: Option<(round2::SecretPackage<C>, Round1Packages<C>)>,
    result: Option<(KeyPackage<C>, PublicKeyPackage<C>, [u8; 32])>,
}

/// Member `i`'s FROST identifier.
pub(crate) fn ident<C: Ciphersuite>(i: u16) -> Result<Identifier<C>, DkgError> {
    Identifier::<C>::try_from(i).map_err(|e| DkgError::Params(format!("member {i}: {e}")))
}

impl<C: Ciphersuite> Ceremony<C> {
    pub(crate) fn new(
        session: SessionId,
        me: u16,
        threshold: u16,
        members: BTreeMap<u16, VerifyingKey>,
        mode: Mode<C>,
    ) -> Result<Self, DkgError> {
        let mut by_ident = BTreeMap::new();
        for &i in members.keys() {
            by_ident.insert(ident::<C>(i)?, i);
        }
        if let Mode::Refresh {
            key_package,
            public_key_package,
        } = &mode
        {
            if *key_package.min_signers() != threshold {
                return Err(DkgError::Params(format!(
                    "a refresh keeps the threshold: the key package has {}, the committee {threshold}",
                    key_package.min_signers()
                )));
            }
            if *key_package.identifier() != ident::<C>(me)? {
                return Err(DkgError::Params(format!(
                    "the key package is not member {me}'s"
                )));
            }
            for id in by_ident.keys() {
                if !public_key_package.verifying_shares().contains_key(id) {
                    return Err(DkgError::Params(format!(
                        "member {} holds no share of the key being refreshed",
                        by_ident[id]
                    )));
                }
            }
        }
        let others = members.keys().copied().filter(|i| *i != me).collect();
        Ok(Self {
            mode,
            session,
            run: None,
            me,
            threshold,
            members,
            others,
            by_ident,
            phase: Phase::Connect,
            nonces: BTreeMap::new(),
            early_round1: Vec::new(),
            secret1: None,
            package1: Vec::new(),
            seen: BTreeMap::new(),
            echoes: BTreeMap::new(),
            round2_in: BTreeMap::new(),
            done_in: BTreeMap::new(),
            complaints: BTreeMap::new(),
            secret2: None,
            result: None,
        })
    }

    pub(crate) fn phase(&self) -> Phase {
        self.phase
    }

    fn member_of(&self, id: &Identifier<C>) -> u16 {
        self.by_ident.get(id).copied().unwrap_or(0)
    }

    fn frost_err(&self, e: frost_core::Error<C>, phase: Phase) -> DkgError {
        match (e.culprits().first().map(|c| self.member_of(c)), &e) {
            (Some(m), frost_core::Error::InvalidProofOfKnowledge { .. }) => {
                DkgError::InvalidProof { member: m }
            }
            (Some(m), frost_core::Error::InvalidSecretShare { .. }) => {
                DkgError::InvalidShare { member: m }
            }
            (Some(m), _) => DkgError::BadMessage {
                member: m,
                phase,
                reason: e.to_string(),
            },
            (None, _) => DkgError::Frost(e.to_string()),
        }
    }

    /// The members this phase still waits for.
    pub(crate) fn missing(&self) -> BTreeSet<u16> {
        let has = |i: &u16| match self.phase {
            Phase::Connect | Phase::Nonce => self.nonces.contains_key(i),
            Phase::Round1 => self.seen.contains_key(i),
            Phase::Echo => self.echoes.contains_key(i),
            Phase::Round2 => self.round2_in.contains_key(i),
            Phase::Done => self.done_in.contains_key(i),
        };
        self.others.iter().filter(|i| !has(i)).copied().collect()
    }

    /// The run's nonce and `part1` (both from `rng`); the nonce goes to
    /// every other member. Round 1 goes out once every nonce is in.
    pub(crate) fn start<R: RngCore + CryptoRng>(
        &mut self,
        rng: &mut R,
        fx: &mut Vec<Effect>,
    ) -> Result<(), DkgError> {
        let n = u16::try_from(self.members.len())
            .map_err(|_| DkgError::Params("too many members".into()))?;
        let mut nonce = [0u8; 32];
        rng.fill_bytes(&mut nonce);
        let (secret1, package1) = match self.mode {
            Mode::Dkg => part1::<C, _>(ident(self.me)?, n, self.threshold, &mut *rng),
            Mode::Refresh { .. } => {
                refresh_dkg_part1::<C, _>(ident(self.me)?, n, self.threshold, &mut *rng)
            }
        }
        .map_err(|e| self.frost_err(e, Phase::Round1))?;
        self.package1 = package1
            .serialize()
            .map_err(|e| DkgError::Frost(e.to_string()))?;
        self.secret1 = Some(secret1);
        self.nonces.insert(self.me, nonce);
        self.phase = Phase::Nonce;
        for &to in &self.others {
            fx.push(Effect::Send {
                to,
                msg: DkgMessage::Nonce { nonce },
            });
        }
        fx.push(Effect::Progress(format!(
            "{}: run nonce sent",
            suite_label::<C>()
        )));
        Ok(())
    }

    /// Take in one message of this session from another member.
    pub(crate) fn receive(
        &mut self,
        from: u16,
        msg: DkgMessage,
        fx: &mut Vec<Effect>,
    ) -> Result<(), DkgError> {
        match msg {
            DkgMessage::Nonce { nonce } => match self.nonces.get(&from) {
                Some(prev) if *prev != nonce => {
                    return Err(DkgError::BadMessage {
                        member: from,
                        phase: Phase::Nonce,
                        reason: "sent two different run nonces".into(),
                    });
                }
                Some(_) => fx.push(Effect::Resend { to: from }),
                None => {
                    self.nonces.insert(from, nonce);
                }
            },
            m @ DkgMessage::Round1 { .. } if self.run.is_none() => {
                let held = self.early_round1.iter().filter(|(f, _)| *f == from).count();
                if held < EARLY_ROUND1_PER_MEMBER {
                    self.early_round1.push((from, m));
                }
            }
            DkgMessage::Round1 {
                nonces,
                package,
                signature,
            } => self.round1(from, &nonces, package, signature, fx)?,
            DkgMessage::Echo { entries } => {
                if let Some(prev) = self.echoes.get(&from) {
                    if *prev != entries {
                        return Err(DkgError::BadMessage {
                            member: from,
                            phase: Phase::Echo,
                            reason: "sent two different echoes".into(),
                        });
                    }
                    fx.push(Effect::Resend { to: from });
                } else {
                    self.echoes.insert(from, entries);
                }
            }
            DkgMessage::Round2 { package, signature } => match self.round2_in.get(&from) {
                Some((prev, _)) if *prev != package => {
                    return Err(DkgError::BadMessage {
                        member: from,
                        phase: Phase::Round2,
                        reason: "sent two different round-2 packages".into(),
                    });
                }
                Some(_) => fx.push(Effect::Resend { to: from }),
                None => {
                    if let Some(run) = &self.run {
                        self.check_round2_signature(run, from, &package, &signature)?;
                    }
                    self.round2_in.insert(from, (package, signature));
                }
            },
            DkgMessage::Done {
                public_key_package_hash,
            } => {
                if self.done_in.insert(from, public_key_package_hash).is_some() {
                    fx.push(Effect::Resend { to: from });
                }
            }
            DkgMessage::Complaint {
                accused,
                package,
                signature,
            } => {
                let complaint = (accused, package, signature);
                match self.complaints.get(&from) {
                    Some(prev) if *prev != complaint => {
                        return Err(DkgError::BadMessage {
                            member: from,
                            phase: Phase::Round2,
                            reason: "sent two different complaints".into(),
                        });
                    }
                    Some(_) => fx.push(Effect::Resend { to: from }),
                    None => {
                        self.complaints.insert(from, complaint);
                    }
                }
            }
        }
        Ok(())
    }

    fn check_round2_signature(
        &self,
        run: &SessionId,
        from: u16,
        package: &[u8],
        signature: &[u8],
    ) -> Result<(), DkgError> {
        let statement = round2_statement(run, from, self.me, &sha3(&[package]));
        if verifies(self.members.get(&from), &statement, signature) {
            Ok(())
        } else {
            Err(DkgError::BadMessage {
                member: from,
                phase: Phase::Round2,
                reason: "round-2 signature does not verify".into(),
            })
        }
    }

    /// A round-1 message once the run session is known.
    fn round1(
        &mut self,
        from: u16,
        nonces: &RunNonces,
        package: Vec<u8>,
        signature: Vec<u8>,
        fx: &mut Vec<Effect>,
    ) -> Result<(), DkgError> {
        let Some(run) = self.run else {
            return Ok(());
        };
        if *nonces != self.nonces {
            let bad = |reason: &str| DkgError::BadMessage {
                member: from,
                phase: Phase::Round1,
                reason: reason.into(),
            };
            if nonces.keys().ne(self.members.keys()) {
                return Err(bad("round 1 does not list every member's nonce once"));
            }
            if nonces.get(&from) != self.nonces.get(&from) {
                return Err(bad(
                    "round 1 names a nonce of its sender other than the one it sent us",
                ));
            }
            // Member j told the sender one nonce and us another, or the sender
            // misreports it: we cannot tell which, so nobody is blamed.
            let j = nonces
                .iter()
                .find(|(j, v)| self.nonces.get(j) != Some(v))
                .map_or(from, |(j, _)| *j);
            return Err(DkgError::NonceConflict {
                member: j,
                relayed_by: from,
            });
        }
        let hash = sha3(&[&package]);
        let statement = round1_statement(&run, from, &hash);
        if !verifies(self.members.get(&from), &statement, &signature) {
            return Err(DkgError::BadMessage {
                member: from,
                phase: Phase::Round1,
                reason: "round-1 signature does not verify".into(),
            });
        }
        match self.seen.get(&from) {
            Some(prev) if prev.hash != hash => {
                return Err(DkgError::Equivocation {
                    member: from,
                    proof: Box::new(EquivocationProof {
                        session: run,
                        first: (prev.hash, prev.signature.clone()),
                        second: (hash, signature),
                    }),
                });
            }
            Some(_) => fx.push(Effect::Resend { to: from }),
            None => {
                // A package it signed that cannot take part (it does not
                // decode, or commits to a polynomial of the wrong degree: a
                // refresh's leaves out the constant term) names its sender
                // now; FROST would fail on it later without a culprit.
                let want = match self.mode {
                    Mode::Dkg => usize::from(self.threshold),
                    Mode::Refresh { .. } => usize::from(self.threshold).saturating_sub(1),
                };
                let got = round1::Package::<C>::deserialize(&package)
                    .map(|p| p.commitment().coefficients().len());
                if got.as_ref().ok() != Some(&want) {
                    return Err(DkgError::BadMessage {
                        member: from,
                        phase: Phase::Round1,
                        reason: match got {
                            Ok(n) => {
                                format!("round-1 package commits to {n} coefficients, not {want}")
                            }
                            Err(e) => format!("round-1 package does not decode: {e}"),
                        },
                    });
                }
                self.seen.insert(
                    from,
                    Round1Seen {
                        hash,
                        signature,
                        package,
                    },
                );
                fx.push(Effect::Progress(format!(
                    "{}: round 1 {}/{} packages",
                    suite_label::<C>(),
                    self.seen.len(),
                    self.members.len()
                )));
            }
        }
        Ok(())
    }

    /// Check member `complainer`'s complaint: the revealed package must be
    /// the accused's (its signature) and its share must not match the
    /// accused's round-1 commitment; whoever lied is named.
    fn judge_complaint(
        &self,
        run: &SessionId,
        complainer: u16,
        (accused, package, signature): &Complaint,
    ) -> DkgError {
        let complainer_lied = |reason: String| DkgError::BadMessage {
            member: complainer,
            phase: Phase::Round2,
            reason,
        };
        let accused = *accused;
        if accused == complainer || !self.members.contains_key(&accused) {
            return complainer_lied(format!("complained about member {accused}"));
        }
        let statement = round2_statement(run, accused, complainer, &sha3(&[package]));
        if !verifies(self.members.get(&accused), &statement, signature) {
            return complainer_lied(format!(
                "its complaint reveals a round-2 package member {accused} never signed"
            ));
        }
        if self.share_is_valid(accused, complainer, package) {
            complainer_lied(format!(
                "complained about a valid round-2 share from member {accused}"
            ))
        } else {
            DkgError::InvalidShare { member: accused }
        }
    }

    /// Whether `package` (from `from` to `to`) holds a share that matches
    /// `from`'s round-1 commitment; an undecodable package does not.
    fn share_is_valid(&self, from: u16, to: u16, package: &[u8]) -> bool {
        let commitment = self
            .seen
            .get(&from)
            .and_then(|s| round1::Package::<C>::deserialize(&s.package).ok())
            .map(|p| p.commitment().clone());
        let share = round2::Package::<C>::deserialize(package).ok();
        match (commitment, share, ident::<C>(to)) {
            (Some(commitment), Some(share), Ok(id)) => {
                let commitment = match self.mode {
                    Mode::Dkg => commitment,
                    // A refresh deals a sharing of zero: its round-1
                    // commitment leaves out the constant term, the identity
                    // (frost-core's refresh puts it back the same way).
                    Mode::Refresh { .. } => VerifiableSecretSharingCommitment::new(
                        std::iter::once(CoefficientCommitment::new(C::Group::identity()))
                            .chain(commitment.coefficients().iter().copied())
                            .collect(),
                    ),
                };
                SecretShare::new(id, *share.signing_share(), commitment)
                    .verify()
                    .is_ok()
            }
            _ => false,
        }
    }

    /// Advance as far as the messages so far allow; the keys once every
    /// member confirmed the same public key package.
    pub(crate) fn advance(
        &mut self,
        signer: &dyn IdentitySigner,
        fx: &mut Vec<Effect>,
    ) -> Result<Option<DkgOutput<C>>, DkgError> {
        let label = suite_label::<C>();
        if self.phase == Phase::Nonce && self.nonces.len() == self.members.len() {
            let run = run_session(&self.session, &self.nonces);
            let hash = sha3(&[&self.package1]);
            let signature = signer
                .sign(&round1_statement(&run, self.me, &hash))
                .map_err(|e| DkgError::Params(format!("cannot sign: {e}")))?;
            let msg = DkgMessage::Round1 {
                nonces: self.nonces.clone(),
                package: self.package1.clone(),
                signature: signature.clone(),
            };
            self.seen.insert(
                self.me,
                Round1Seen {
                    hash,
                    signature,
                    package: self.package1.clone(),
                },
            );
            self.run = Some(run);
            self.phase = Phase::Round1;
            for &to in &self.others {
                fx.push(Effect::Send {
                    to,
                    msg: msg.clone(),
                });
            }
            fx.push(Effect::Progress(format!(
                "{label}: every nonce in, round 1 sent"
            )));
            for (from, m) in std::mem::take(&mut self.early_round1) {
                self.receive(from, m, fx)?;
            }
            // Round-2 packages that came before the run session was known.
            for (from, (package, signature)) in &self.round2_in {
                self.check_round2_signature(&run, *from, package, signature)?;
            }
        }
        let Some(run) = self.run else {
            return Ok(None);
        };
        if self.phase == Phase::Round1 && self.seen.len() == self.members.len() {
            let entries = self
                .seen
                .iter()
                .map(|(i, s)| (*i, (s.hash, s.signature.clone())))
                .collect();
            let msg = DkgMessage::Echo { entries };
            for &to in &self.others {
                fx.push(Effect::Send {
                    to,
                    msg: msg.clone(),
                });
            }
            self.phase = Phase::Echo;
            fx.push(Effect::Progress(format!(
                "{label}: round 1 complete, echo sent"
            )));
        }
        if self.phase == Phase::Echo {
            // Check every echo that has arrived against what we saw.
            for (&k, entries) in &self.echoes {
                check_echo(&run, k, entries, &self.seen, &self.members)?;
            }
            if self.echoes.len() == self.others.len() {
                let mut r1 = BTreeMap::new();
                for (&i, s) in &self.seen {
                    if i == self.me {
                        continue;
                    }
                    let pkg = round1::Package::<C>::deserialize(&s.package).map_err(|e| {
                        DkgError::BadMessage {
                            member: i,
                            phase: Phase::Round1,
                            reason: format!("round-1 package does not decode: {e}"),
                        }
                    })?;
                    r1.insert(ident::<C>(i)?, pkg);
                }
                let secret1 = self
                    .secret1
                    .clone()
                    .ok_or_else(|| DkgError::Frost("round 2 before round 1".into()))?;
                let (s2, out) = match self.mode {
                    Mode::Dkg => part2(secret1, &r1),
                    Mode::Refresh { .. } => refresh_dkg_part2(secret1, &r1),
                }
                .map_err(|e| self.frost_err(e, Phase::Round1))?;
                for (id, pkg) in out {
                    let to = self.member_of(&id);
                    let package = pkg
                        .serialize()
                        .map_err(|e| DkgError::Frost(e.to_string()))?;
                    let signature = signer
                        .sign(&round2_statement(&run, self.me, to, &sha3(&[&package])))
                        .map_err(|e| DkgError::Params(format!("cannot sign: {e}")))?;
                    fx.push(Effect::Send {
                        to,
                        msg: DkgMessage::Round2 { package, signature },
                    });
                }
                self.secret2 = Some((s2, r1));
                self.phase = Phase::Round2;
                fx.push(Effect::Progress(format!(
                    "{label}: echoes consistent, round 2 sent"
                )));
            }
        }
        // Complaints are judged once every round-1 commitment is agreed.
        if self.secret2.is_some()
            && let Some((&complainer, complaint)) = self.complaints.iter().next()
        {
            return Err(self.judge_complaint(&run, complainer, complaint));
        }
        if self.phase == Phase::Round2
            && self.round2_in.len() == self.others.len()
            && let Some((s2, r1)) = &self.secret2
        {
            let mut r2 = BTreeMap::new();
            for (&i, (bytes, _)) in &self.round2_in {
                let pkg =
                    round2::Package::<C>::deserialize(bytes).map_err(|e| DkgError::BadMessage {
                        member: i,
                        phase: Phase::Round2,
                        reason: format!("round-2 package does not decode: {e}"),
                    })?;
                r2.insert(ident::<C>(i)?, pkg);
            }
            // Every share checked here first: frost-core's refresh does not
            // name the sender of a bad one.
            let bad_share = self
                .round2_in
                .iter()
                .find(|(from, (package, _))| !self.share_is_valid(**from, self.me, package))
                .map(|(from, _)| *from);
            let keys = match (bad_share, &self.mode) {
                (Some(member), _) => Err(DkgError::InvalidShare { member }),
                (None, Mode::Dkg) => {
                    part3(s2, r1, &r2).map_err(|e| self.frost_err(e, Phase::Round2))
                }
                (
                    None,
                    Mode::Refresh {
                        key_package,
                        public_key_package,
                    },
                ) => {
                    refresh_dkg_shares(s2, r1, &r2, public_key_package.clone(), key_package.clone())
                        .map_err(|e| self.frost_err(e, Phase::Round2))
                        .and_then(|(kp, pkp)| {
                            if pkp.verifying_key() == public_key_package.verifying_key() {
                                Ok((kp, pkp))
                            } else {
                                Err(DkgError::Frost("the refresh changed the group key".into()))
                            }
                        })
                }
            };
            let (kp, pkp) = match keys {
                Ok(keys) => keys,
                Err(err) => {
                    // A bad share: reveal it, signed by its sender, so every
                    // member can check it and blame the sender too.
                    if let DkgError::InvalidShare { member } = err
                        && let Some((package, signature)) = self.round2_in.get(&member)
                    {
                        let msg = DkgMessage::Complaint {
                            accused: member,
                            package: package.clone(),
                            signature: signature.clone(),
                        };
                        for &to in &self.others {
                            fx.push(Effect::Send {
                                to,
                                msg: msg.clone(),
                            });
                        }
                    }
                    return Err(err);
                }
            };
            let hash = sha3(&[&pkp
                .serialize()
                .map_err(|e| DkgError::Frost(e.to_string()))?]);
            for &to in &self.others {
                fx.push(Effect::Send {
                    to,
                    msg: DkgMessage::Done {
                        public_key_package_hash: hash,
                    },
                });
            }
            self.result = Some((kp, pkp, hash));
            self.phase = Phase::Done;
            fx.push(Effect::Progress(format!(
                "{label}: round 2 complete, confirming"
            )));
        }
        if self.phase == Phase::Done
            && let Some((kp, pkp, hash)) = &self.result
        {
            for (&m, h) in &self.done_in {
                if h != hash {
                    return Err(DkgError::Mismatch { member: m });
                }
            }
            if self.done_in.len() == self.others.len() {
                let out = DkgOutput {
                    key_package: kp.clone(),
                    public_key_package: pkp.clone(),
                };
                fx.push(Effect::Progress(format!(
                    "{label}: all {} members confirmed group key {}",
                    self.members.len(),
                    out.group_key_hex()
                )));
                return Ok(Some(out));
            }
        }
        Ok(None)
    }
}

fn verifies(key: Option<&VerifyingKey>, statement: &[u8], signature: &[u8]) -> bool {
    let Some(key) = key else { return false };
    ed25519_dalek::Signature::from_slice(signature)
        .is_ok_and(|sig| key.verify(statement, &sig).is_ok())
}

/// Check member `k`'s echo against the round-1 packages we saw.
pub(crate) fn check_echo(
    session: &SessionId,
    k: u16,
    entries: &EchoEntries,
    seen: &BTreeMap<u16, Round1Seen>,
    members: &BTreeMap<u16, VerifyingKey>,
) -> Result<(), DkgError> {
    let bad = |reason: String| DkgError::BadMessage {
        member: k,
        phase: Phase::Echo,
        reason,
    };
    if entries.keys().ne(members.keys()) {
        return Err(bad("echo does not list every member exactly once".into()));
    }
    for (&j, (hash, sig)) in entries {
        let Some(ours) = seen.get(&j) else {
            // Not seen yet: checked again once it arrives.
            continue;
        };
        if *hash == ours.hash {
            continue;
        }
        // Different: if j really signed it, j signed two packages.
        if verifies(members.get(&j), &round1_statement(session, j, hash), sig) {
            return Err(DkgError::Equivocation {
                member: j,
                proof: Box::new(EquivocationProof {
                    session: *session,
                    first: (ours.hash, ours.signature.clone()),
                    second: (*hash, sig.clone()),
                }),
            });
        }
        return Err(bad(format!(
            "echoed a round-1 package of member {j} that member {j} never signed"
        )));
    }
    Ok(())
}
