//! Signing one message with the committee's group key where each share
//! lives (`sibyl rotation-sign`): a FROST signing session among `t` named
//! signers over the committee's network, as a sans-io state machine. No
//! share leaves its member; the committee's hand-over to a new key is
//! signed without `t` shares on one machine.
//!
//! ```text
//!   coordinator (lowest signer)            every signer (coordinator included)
//!   Start{run} ──────────────────────────► fresh nonces for this run only
//!              ◄────────────────────────── Commit{run, commitments}
//!   t commitments: Package{run, all} ────► message its own? own commitment in it?
//!              ◄────────────────────────── Share{run, share}     (once per run)
//!   aggregate (a bad share names its signer), verify
//!   Signed{run, signature} ──────────────► everyone checks it against the group key
//! ```
//!
//! Every message carries the committee digest, the message being signed and
//! the run id the coordinator drew; a signer signs only the message it
//! computed itself, at most once per run, with nonces drawn for that run
//! (a nonce never meets two signing packages). A signer that restarts gets
//! new nonces: its commitment for the run changes, and the coordinator
//! starts a new run rather than mix the two. A restarted coordinator starts
//! a new run too, and the signers follow the newest.

use std::collections::{BTreeMap, BTreeSet};

use frost_core::keys::{KeyPackage, PublicKeyPackage};
use frost_core::round1::{SigningCommitments, SigningNonces};
use frost_core::round2::SignatureShare;
use frost_core::{Ciphersuite, Identifier, Signature, SigningPackage};
use rand_core::{CryptoRng, RngCore};

use super::ceremony::ident;
use super::{DkgError, Input, Phase};
use crate::report::ConfigDigest;

const MAGIC: &[u8; 4] = b"SSIG";
const VERSION: u8 = 1;
const KIND_START: u8 = 1;
const KIND_COMMIT: u8 = 2;
const KIND_PACKAGE: u8 = 3;
const KIND_SHARE: u8 = 4;
const KIND_SIGNED: u8 = 5;
/// New runs one signer may cause (each a changed commitment: a restart)
/// before the coordinator names it and stops.
const MAX_RESTARTS: u32 = 3;
/// Largest body accepted (a package of 255 commitments fits many times).
const MAX_BODY: usize = 64 * 1024;

/// One signer's side of a signing session.
#[derive(Clone, Debug)]
pub struct SignConfig {
    pub digest: ConfigDigest,
    pub me: u16,
    /// Exactly the threshold of members; the lowest coordinates.
    pub signers: BTreeSet<u16>,
    /// The 32-byte message every signer computed itself.
    pub message: [u8; 32],
    pub resend_interval_ms: u64,
    pub timeout_ms: u64,
}

/// What the machine asks the driver to do.
pub enum SignOutput<C: Ciphersuite> {
    Send {
        to: u16,
        bytes: Vec<u8>,
    },
    Progress(String),
    /// The group's signature of the message, verified. Once.
    Signed(Signature<C>),
    Failed(DkgError),
}

/// `MAGIC | VERSION | digest | message | run | kind | len u32 | body`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignEnvelope {
    pub digest: ConfigDigest,
    pub message: [u8; 32],
    pub run: [u8; 32],
    pub kind: u8,
    pub body: Vec<u8>,
}

impl SignEnvelope {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(110 + self.body.len());
        out.extend_from_slice(MAGIC);
        out.push(VERSION);
        out.extend_from_slice(&self.digest.0);
        out.extend_from_slice(&self.message);
        out.extend_from_slice(&self.run);
        out.push(self.kind);
        out.extend_from_slice(
            &u32::try_from(self.body.len())
                .unwrap_or(u32::MAX)
                .to_be_bytes(),
        );
        out.extend_from_slice(&self.body);
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<SignEnvelope, String> {
        const HEAD: usize = 4 + 1 + 32 + 32 + 32 + 1 + 4;
        if bytes.len() < HEAD {
            return Err(format!(
                "{} bytes, shorter than the {HEAD}-byte header",
                bytes.len()
            ));
        }
        if &bytes[..4] != MAGIC {
            return Err("not a signing message (magic)".into());
        }
        if bytes[4] != VERSION {
            return Err(format!(
                "signing message version {}, expected {VERSION}",
                bytes[4]
            ));
        }
        let arr = |at: usize| -> [u8; 32] { bytes[at..at + 32].try_into().unwrap_or([0; 32]) };
        let kind = bytes[101];
        if !(KIND_START..=KIND_SIGNED).contains(&kind) {
            return Err(format!("unknown signing message kind {kind}"));
        }
        let len = u32::from_be_bytes(bytes[102..106].try_into().unwrap_or([0; 4])) as usize;
        if len > MAX_BODY {
            return Err(format!("body of {len} bytes (at most {MAX_BODY})"));
        }
        if bytes.len() != HEAD + len {
            return Err(format!(
                "body length {len} but {} bytes follow the header",
                bytes.len() - HEAD
            ));
        }
        Ok(SignEnvelope {
            digest: ConfigDigest(arr(5)),
            message: arr(37),
            run: arr(69),
            kind,
            body: bytes[HEAD..].to_vec(),
        })
    }
}

fn bad(member: u16, reason: String) -> DkgError {
    DkgError::BadMessage {
        member,
        phase: Phase::Round2,
        reason,
    }
}

/// The FROST signing package of these members' commitments.
fn signing_package<C: Ciphersuite>(
    commits: BTreeMap<u16, SigningCommitments<C>>,
    message: &[u8; 32],
) -> Result<SigningPackage<C>, DkgError> {
    let by_id = commits
        .into_iter()
        .map(|(m, c)| Ok((ident::<C>(m)?, c)))
        .collect::<Result<BTreeMap<_, _>, DkgError>>()?;
    Ok(SigningPackage::new(by_id, message))
}

/// A package body: `count u16 | (member u16 | len u16 | commitment)*`.
fn encode_package<C: Ciphersuite>(commits: &BTreeMap<u16, SigningCommitments<C>>) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(
        &u16::try_from(commits.len())
            .unwrap_or(u16::MAX)
            .to_be_bytes(),
    );
    for (m, c) in commits {
        let b = c.serialize().unwrap_or_default();
        out.extend_from_slice(&m.to_be_bytes());
        out.extend_from_slice(&u16::try_from(b.len()).unwrap_or(u16::MAX).to_be_bytes());
        out.extend_from_slice(&b);
    }
    out
}

fn decode_package<C: Ciphersuite>(
    body: &[u8],
) -> Result<BTreeMap<u16, SigningCommitments<C>>, String> {
    let mut at = 0usize;
    let mut take = |n: usize| -> Result<&[u8], String> {
        let s = body
            .get(at..at + n)
            .ok_or_else(|| format!("package truncated at byte {at}"))?;
        at += n;
        Ok(s)
    };
    let u16_of = |s: &[u8]| u16::from_be_bytes(s.try_into().unwrap_or([0; 2]));
    let count = u16_of(take(2)?);
    let mut out = BTreeMap::new();
    for _ in 0..count {
        let m = u16_of(take(2)?);
        let len = usize::from(u16_of(take(2)?));
        let c = SigningCommitments::<C>::deserialize(take(len)?)
            .map_err(|e| format!("member {m}'s commitment: {e}"))?;
        out.insert(m, c);
    }
    if at != body.len() {
        return Err(format!(
            "{} trailing bytes after the package",
            body.len() - at
        ));
    }
    Ok(out)
}

/// One signer's side of the session (see the module docs).
pub struct ThresholdSign<C: Ciphersuite> {
    cfg: SignConfig,
    key: KeyPackage<C>,
    public: PublicKeyPackage<C>,
    /// The run this member takes part in, its nonces and commitment for it.
    run: Option<[u8; 32]>,
    nonces: Option<SigningNonces<C>>,
    commitment: Option<SigningCommitments<C>>,
    /// Runs this member signed in (never twice in one).
    signed_runs: BTreeSet<[u8; 32]>,
    /// The coordinator's collection for `run`.
    commits: BTreeMap<u16, SigningCommitments<C>>,
    package: Option<Vec<u8>>,
    shares: BTreeMap<u16, SignatureShare<C>>,
    share_out: Option<Vec<u8>>,
    signature: Option<Signature<C>>,
    started_ms: Option<u64>,
    /// Per signer, how often its commitment changed within a run (the
    /// coordinator's count; each change starts a new run).
    restarts: BTreeMap<u16, u32>,
    next_resend_ms: u64,
    failed: bool,
}

impl<C: Ciphersuite> ThresholdSign<C> {
    pub fn new(
        cfg: SignConfig,
        key: KeyPackage<C>,
        public: PublicKeyPackage<C>,
    ) -> Result<Self, DkgError> {
        let t = usize::from(*key.min_signers());
        if cfg.signers.len() != t {
            return Err(DkgError::Params(format!(
                "a signing session needs exactly t = {t} signers, not {} ({:?})",
                cfg.signers.len(),
                cfg.signers
            )));
        }
        if !cfg.signers.contains(&cfg.me) {
            return Err(DkgError::Params(format!(
                "member {} is not one of the signers {:?}",
                cfg.me, cfg.signers
            )));
        }
        if *key.identifier() != ident::<C>(cfg.me)? {
            return Err(DkgError::Params(format!(
                "this key package is not member {}'s",
                cfg.me
            )));
        }
        Ok(ThresholdSign {
            cfg,
            key,
            public,
            run: None,
            nonces: None,
            commitment: None,
            signed_runs: BTreeSet::new(),
            commits: BTreeMap::new(),
            package: None,
            shares: BTreeMap::new(),
            share_out: None,
            signature: None,
            started_ms: None,
            restarts: BTreeMap::new(),
            next_resend_ms: 0,
            failed: false,
        })
    }

    fn coordinator(&self) -> u16 {
        self.cfg.signers.first().copied().unwrap_or(0)
    }

    fn is_coordinator(&self) -> bool {
        self.cfg.me == self.coordinator()
    }

    pub fn next_wake(&self) -> Option<u64> {
        if self.failed {
            return None;
        }
        match (self.started_ms, self.signature.is_some()) {
            (Some(s), false) => Some(self.next_resend_ms.min(s + self.cfg.timeout_ms)),
            _ => Some(self.next_resend_ms),
        }
    }

    fn envelope(&self, run: [u8; 32], kind: u8, body: Vec<u8>) -> Vec<u8> {
        SignEnvelope {
            digest: self.cfg.digest,
            message: self.cfg.message,
            run,
            kind,
            body,
        }
        .encode()
    }

    pub fn handle<R: RngCore + CryptoRng>(
        &mut self,
        now: u64,
        input: Input,
        rng: &mut R,
    ) -> Vec<SignOutput<C>> {
        if self.failed {
            return Vec::new();
        }
        let mut out = Vec::new();
        let r = match input {
            Input::Start { .. } => {
                self.started_ms = Some(now);
                self.next_resend_ms = now + self.cfg.resend_interval_ms;
                if self.is_coordinator() {
                    self.new_run(rng, &mut out)
                } else {
                    out.push(SignOutput::Progress(format!(
                        "waiting for member {} (the coordinator) to start",
                        self.coordinator()
                    )));
                    Ok(())
                }
            }
            Input::Connected(_) => Ok(()),
            Input::Tick => self.tick(now, &mut out),
            Input::Message { from, bytes } => self.on_message(from, &bytes, rng, &mut out),
        };
        if let Err(e) = r {
            self.failed = true;
            out.push(SignOutput::Failed(e));
        }
        out
    }

    /// The coordinator draws a run id and takes part itself.
    fn new_run<R: RngCore + CryptoRng>(
        &mut self,
        rng: &mut R,
        out: &mut Vec<SignOutput<C>>,
    ) -> Result<(), DkgError> {
        let mut run = [0u8; 32];
        rng.fill_bytes(&mut run);
        self.commits.clear();
        self.package = None;
        self.shares.clear();
        out.push(SignOutput::Progress(format!(
            "run {}: asking signers {:?} for commitments",
            hex::encode(&run[..4]),
            self.cfg.signers
        )));
        self.join_run(run, rng);
        if let Some(c) = self.commitment {
            self.commits.insert(self.cfg.me, c);
        }
        self.broadcast_start(out);
        Ok(())
    }

    /// Fresh nonces for `run` (the previous run's are dropped unused or
    /// used once).
    fn join_run<R: RngCore + CryptoRng>(&mut self, run: [u8; 32], rng: &mut R) {
        let (nonces, commitment) = frost_core::round1::commit(self.key.signing_share(), rng);
        self.run = Some(run);
        self.nonces = Some(nonces);
        self.commitment = Some(commitment);
        self.share_out = None;
    }

    fn broadcast_start(&self, out: &mut Vec<SignOutput<C>>) {
        let Some(run) = self.run else { return };
        for s in self.cfg.signers.iter().filter(|s| **s != self.cfg.me) {
            let bytes = match &self.package {
                Some(p) => self.envelope(run, KIND_PACKAGE, p.clone()),
                None if self.commits.contains_key(s) => continue,
                None => self.envelope(run, KIND_START, Vec::new()),
            };
            out.push(SignOutput::Send { to: *s, bytes });
        }
    }

    fn tick(&mut self, now: u64, out: &mut Vec<SignOutput<C>>) -> Result<(), DkgError> {
        if let Some(s) = self.started_ms
            && self.signature.is_none()
            && now >= s + self.cfg.timeout_ms
        {
            let missing: Vec<u16> = if self.is_coordinator() {
                self.cfg
                    .signers
                    .iter()
                    .copied()
                    .filter(|m| {
                        if self.package.is_some() {
                            !self.shares.contains_key(m)
                        } else {
                            !self.commits.contains_key(m)
                        }
                    })
                    .collect()
            } else if self.run.is_some() {
                // The coordinator answered: whom it waits for is in its log,
                // not a suspicion of it.
                Vec::new()
            } else {
                vec![self.coordinator()]
            };
            return Err(DkgError::SignTimeout { missing });
        }
        if now < self.next_resend_ms {
            return Ok(());
        }
        self.next_resend_ms = now + self.cfg.resend_interval_ms;
        if self.signature.is_some() {
            return Ok(());
        }
        if self.is_coordinator() {
            if self.package.is_some() {
                // Re-send the package to the signers whose share is missing.
                if let (Some(run), Some(p)) = (self.run, self.package.clone()) {
                    for s in self
                        .cfg
                        .signers
                        .iter()
                        .filter(|s| **s != self.cfg.me && !self.shares.contains_key(s))
                    {
                        out.push(SignOutput::Send {
                            to: *s,
                            bytes: self.envelope(run, KIND_PACKAGE, p.clone()),
                        });
                    }
                }
            } else {
                self.broadcast_start(out);
            }
        } else if let Some(run) = self.run {
            self.send_to_coordinator(run, out);
        }
        Ok(())
    }

    /// A signer's commitment (and share, once made) to the coordinator.
    fn send_to_coordinator(&self, run: [u8; 32], out: &mut Vec<SignOutput<C>>) {
        let to = self.coordinator();
        if let Some(share) = &self.share_out {
            out.push(SignOutput::Send {
                to,
                bytes: self.envelope(run, KIND_SHARE, share.clone()),
            });
        } else if let Some(c) = &self.commitment {
            out.push(SignOutput::Send {
                to,
                bytes: self.envelope(run, KIND_COMMIT, c.serialize().unwrap_or_default()),
            });
        }
    }

    fn on_message<R: RngCore + CryptoRng>(
        &mut self,
        from: u16,
        bytes: &[u8],
        rng: &mut R,
        out: &mut Vec<SignOutput<C>>,
    ) -> Result<(), DkgError> {
        let Ok(env) = SignEnvelope::decode(bytes) else {
            return Ok(()); // not ours
        };
        if env.digest != self.cfg.digest
            || env.message != self.cfg.message
            || !self.cfg.signers.contains(&from)
        {
            return Ok(()); // another session, or not a signer of ours
        }
        let coordinator = self.coordinator();
        match env.kind {
            KIND_START | KIND_PACKAGE if from == coordinator && !self.is_coordinator() => {
                if self.run != Some(env.run) {
                    self.join_run(env.run, rng);
                    out.push(SignOutput::Progress(format!(
                        "run {}: commitment to member {coordinator}",
                        hex::encode(&env.run[..4])
                    )));
                }
                if env.kind == KIND_PACKAGE {
                    self.on_package(from, env.run, &env.body, out)?;
                } else {
                    self.send_to_coordinator(env.run, out);
                }
                Ok(())
            }
            KIND_COMMIT if self.is_coordinator() && self.run == Some(env.run) => {
                let c = SigningCommitments::<C>::deserialize(&env.body)
                    .map_err(|e| bad(from, format!("commitment: {e}")))?;
                match self.commits.get(&from) {
                    Some(old) if *old == c => Ok(()),
                    // A signer restarted and drew new nonces: a new run,
                    // rather than a package some have signed and some not.
                    Some(_) => {
                        let n = self.restarts.entry(from).or_insert(0);
                        *n += 1;
                        if *n > MAX_RESTARTS {
                            return Err(bad(
                                from,
                                format!(
                                    "it sent a new commitment {n} times in one session (a restart each time?); more than {MAX_RESTARTS} is taken for a signer keeping the others from finishing: check that member, or sign without it (--signers)"
                                ),
                            ));
                        }
                        out.push(SignOutput::Progress(format!(
                            "member {from} sent a new commitment (restarted?): new run"
                        )));
                        self.new_run(rng, out)
                    }
                    None => {
                        self.commits.insert(from, c);
                        out.push(SignOutput::Progress(format!(
                            "commitment from member {from} ({}/{})",
                            self.commits.len(),
                            self.cfg.signers.len()
                        )));
                        if self.commits.len() == self.cfg.signers.len() {
                            let body = encode_package(&self.commits);
                            self.package = Some(body.clone());
                            out.push(SignOutput::Progress(
                                "every commitment in: signing package to the signers".into(),
                            ));
                            self.broadcast_start(out);
                            let run = env.run;
                            self.on_package(self.cfg.me, run, &body, out)?;
                        }
                        Ok(())
                    }
                }
            }
            KIND_SHARE if self.is_coordinator() && self.run == Some(env.run) => {
                if self.package.is_none() || self.signature.is_some() {
                    return Ok(());
                }
                let s = SignatureShare::<C>::deserialize(&env.body)
                    .map_err(|e| bad(from, format!("signature share: {e}")))?;
                self.shares.entry(from).or_insert(s);
                self.try_aggregate(env.run, out)
            }
            KIND_SIGNED if from == coordinator && !self.is_coordinator() => {
                if self.signature.is_some() {
                    return Ok(());
                }
                let sig = Signature::<C>::deserialize(&env.body)
                    .map_err(|e| bad(from, format!("signature: {e}")))?;
                self.public
                    .verifying_key()
                    .verify(&self.cfg.message, &sig)
                    .map_err(|_| {
                        bad(
                            from,
                            "its signature does not verify under the group key".into(),
                        )
                    })?;
                self.signature = Some(sig);
                out.push(SignOutput::Progress(
                    "the group signature verifies under the group key".into(),
                ));
                out.push(SignOutput::Signed(sig));
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// A signer's share for the run's package: once per run, only over the
    /// message it computed, and only if the package holds its commitment.
    fn on_package(
        &mut self,
        from: u16,
        run: [u8; 32],
        body: &[u8],
        out: &mut Vec<SignOutput<C>>,
    ) -> Result<(), DkgError> {
        if self.share_out.is_some() {
            if !self.is_coordinator() {
                self.send_to_coordinator(run, out);
            }
            return Ok(());
        }
        let commits = decode_package::<C>(body).map_err(|e| bad(from, e))?;
        let set: BTreeSet<u16> = commits.keys().copied().collect();
        if set != self.cfg.signers {
            return Err(bad(
                from,
                format!(
                    "its package names signers {set:?}, not {:?}",
                    self.cfg.signers
                ),
            ));
        }
        if commits.get(&self.cfg.me) != self.commitment.as_ref() {
            // Not this member's current commitment (it restarted): send the
            // current one; the coordinator starts a new run.
            self.send_to_coordinator(run, out);
            return Ok(());
        }
        if !self.signed_runs.insert(run) {
            return Ok(());
        }
        let package = signing_package(commits, &self.cfg.message)?;
        let nonces = self
            .nonces
            .take()
            .ok_or_else(|| DkgError::Params("no nonces for this run".into()))?;
        let share = frost_core::round2::sign(&package, &nonces, &self.key)
            .map_err(|e| DkgError::Frost(e.to_string()))?;
        self.share_out = Some(share.serialize());
        if self.is_coordinator() {
            self.shares.insert(self.cfg.me, share);
            self.try_aggregate(run, out)
        } else {
            out.push(SignOutput::Progress(
                "signature share to the coordinator".into(),
            ));
            self.send_to_coordinator(run, out);
            Ok(())
        }
    }

    /// With every share: the signature (a share that does not verify names
    /// its signer), checked, and sent to every signer.
    fn try_aggregate(
        &mut self,
        run: [u8; 32],
        out: &mut Vec<SignOutput<C>>,
    ) -> Result<(), DkgError> {
        if self.shares.len() != self.cfg.signers.len() || self.signature.is_some() {
            return Ok(());
        }
        let Some(body) = &self.package else {
            return Ok(());
        };
        let commits = decode_package::<C>(body).map_err(DkgError::Params)?;
        let ids: BTreeMap<Identifier<C>, u16> = commits
            .keys()
            .map(|m| Ok((ident::<C>(*m)?, *m)))
            .collect::<Result<_, DkgError>>()?;
        let package = signing_package(commits, &self.cfg.message)?;
        let shares = self
            .shares
            .iter()
            .map(|(m, s)| Ok((ident::<C>(*m)?, *s)))
            .collect::<Result<BTreeMap<_, _>, DkgError>>()?;
        let sig = frost_core::aggregate(&package, &shares, &self.public).map_err(|e| {
            match e.culprits().first().and_then(|c| ids.get(c)) {
                Some(m) => DkgError::InvalidShare { member: *m },
                None => DkgError::Frost(e.to_string()),
            }
        })?;
        self.public
            .verifying_key()
            .verify(&self.cfg.message, &sig)
            .map_err(|e| DkgError::Frost(format!("the aggregate does not verify: {e}")))?;
        self.signature = Some(sig);
        let bytes = sig
            .serialize()
            .map_err(|e| DkgError::Frost(e.to_string()))?;
        for s in self.cfg.signers.iter().filter(|s| **s != self.cfg.me) {
            out.push(SignOutput::Send {
                to: *s,
                bytes: self.envelope(run, KIND_SIGNED, bytes.clone()),
            });
        }
        out.push(SignOutput::Progress(
            "every share in: the group signature verifies; sent to every signer".into(),
        ));
        out.push(SignOutput::Signed(sig));
        Ok(())
    }

    /// After [`SignOutput::Signed`] the coordinator keeps answering a
    /// signer that still asks (its copy of the signature was lost).
    pub fn answer_late(&self, from: u16, bytes: &[u8]) -> Option<(u16, Vec<u8>)> {
        let sig = self.signature.as_ref()?;
        if !self.is_coordinator() {
            return None;
        }
        let env = SignEnvelope::decode(bytes).ok()?;
        if env.message != self.cfg.message || !self.cfg.signers.contains(&from) {
            return None;
        }
        let run = self.run?;
        Some((from, self.envelope(run, KIND_SIGNED, sig.serialize().ok()?)))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use frost_core::keys::{IdentifierList, generate_with_dealer};
    use rand_chacha::ChaCha20Rng;
    use rand_core::{RngCore, SeedableRng};
    use std::collections::VecDeque;

    type Evm = frost_secp256k1_evm::Secp256K1Keccak256;

    struct Net {
        machines: BTreeMap<u16, ThresholdSign<Evm>>,
        signed: BTreeMap<u16, Signature<Evm>>,
        failed: BTreeMap<u16, String>,
        /// Per failed member, whom its error points at.
        suspects: BTreeMap<u16, Vec<u16>>,
        queue: VecDeque<(u16, u16, Vec<u8>)>,
    }

    impl Net {
        fn absorb(&mut self, me: u16, outs: Vec<SignOutput<Evm>>) {
            for o in outs {
                match o {
                    SignOutput::Send { to, bytes } => self.queue.push_back((me, to, bytes)),
                    SignOutput::Signed(s) => {
                        self.signed.insert(me, s);
                    }
                    SignOutput::Failed(e) => {
                        self.suspects.insert(me, e.suspects());
                        self.failed.insert(me, e.to_string());
                    }
                    SignOutput::Progress(_) => {}
                }
            }
        }
    }

    fn setup(
        n: u16,
        t: u16,
        signers: &[u16],
        rng: &mut ChaCha20Rng,
    ) -> (Net, PublicKeyPackage<Evm>, BTreeMap<u16, KeyPackage<Evm>>) {
        let (shares, pkp) =
            generate_with_dealer::<Evm, _>(n, t, IdentifierList::Default, &mut *rng).unwrap();
        let keys: BTreeMap<u16, KeyPackage<Evm>> = (1..=n)
            .map(|i| {
                let id = Identifier::try_from(i).unwrap();
                (i, KeyPackage::try_from(shares[&id].clone()).unwrap())
            })
            .collect();
        let signers: BTreeSet<u16> = signers.iter().copied().collect();
        let machines = signers
            .iter()
            .map(|&s| {
                let cfg = SignConfig {
                    digest: ConfigDigest([3; 32]),
                    me: s,
                    signers: signers.clone(),
                    message: [9; 32],
                    resend_interval_ms: 100,
                    timeout_ms: 5_000,
                };
                (
                    s,
                    ThresholdSign::new(cfg, keys[&s].clone(), pkp.clone()).unwrap(),
                )
            })
            .collect();
        let net = Net {
            machines,
            signed: BTreeMap::new(),
            failed: BTreeMap::new(),
            suspects: BTreeMap::new(),
            queue: VecDeque::new(),
        };
        (net, pkp, keys)
    }

    fn run_all(net: &mut Net, rng: &mut ChaCha20Rng, tamper: impl Fn(u16, u16, &mut Vec<u8>)) {
        let members: Vec<u16> = net.machines.keys().copied().collect();
        for m in &members {
            let o = net.machines.get_mut(m).unwrap().handle(
                0,
                Input::Start {
                    connected: BTreeSet::new(),
                },
                rng,
            );
            net.absorb(*m, o);
        }
        let mut now = 0;
        for _ in 0..50 {
            while let Some((from, to, mut bytes)) = net.queue.pop_front() {
                tamper(from, to, &mut bytes);
                let o = net.machines.get_mut(&to).unwrap().handle(
                    now,
                    Input::Message { from, bytes },
                    rng,
                );
                net.absorb(to, o);
            }
            if net.signed.len() == members.len() || !net.failed.is_empty() {
                return;
            }
            now += 100;
            for m in &members {
                let o = net
                    .machines
                    .get_mut(m)
                    .unwrap()
                    .handle(now, Input::Tick, rng);
                net.absorb(*m, o);
            }
        }
    }

    #[test]
    fn t_signers_sign_where_their_shares_are_and_all_get_one_signature() {
        let mut rng = ChaCha20Rng::seed_from_u64(1);
        for (n, t, signers) in [(4u16, 3u16, vec![2u16, 3, 4]), (7, 5, vec![1, 3, 4, 6, 7])] {
            let (mut net, pkp, _) = setup(n, t, &signers, &mut rng);
            run_all(&mut net, &mut rng, |_, _, _| {});
            assert!(net.failed.is_empty(), "{:?}", net.failed);
            assert_eq!(net.signed.len(), signers.len());
            let first = net.signed.values().next().copied().unwrap();
            assert!(net.signed.values().all(|s| *s == first));
            pkp.verifying_key().verify(&[9; 32], &first).unwrap();
        }
    }

    #[test]
    fn a_bad_share_names_its_signer() {
        let mut rng = ChaCha20Rng::seed_from_u64(2);
        let (mut net, _, _) = setup(4, 3, &[1, 2, 3], &mut rng);
        run_all(&mut net, &mut rng, |from, _, bytes| {
            if from == 3 && bytes.get(101) == Some(&KIND_SHARE) {
                let n = bytes.len();
                bytes[n - 1] ^= 1;
            }
        });
        assert!(net.signed.is_empty());
        assert!(
            net.failed.get(&1).is_some_and(|e| e.contains("member 3")),
            "{:?}",
            net.failed
        );
    }

    #[test]
    fn a_restarted_signer_gets_a_new_run_and_no_nonce_signs_twice() {
        let mut rng = ChaCha20Rng::seed_from_u64(3);
        let (mut net, pkp, keys) = setup(4, 3, &[1, 2, 3], &mut rng);
        // Start everyone; deliver until signer 2 has committed, then replace
        // signer 2 by a fresh machine (a restart: new nonces).
        let members = [1u16, 2, 3];
        for m in members {
            let o = net.machines.get_mut(&m).unwrap().handle(
                0,
                Input::Start {
                    connected: BTreeSet::new(),
                },
                &mut rng,
            );
            net.absorb(m, o);
        }
        while let Some((from, to, bytes)) = net.queue.pop_front() {
            let o = net.machines.get_mut(&to).unwrap().handle(
                0,
                Input::Message { from, bytes },
                &mut rng,
            );
            net.absorb(to, o);
            if net.machines[&1].commits.contains_key(&2) {
                break;
            }
        }
        let first_run = net.machines[&1].run;
        let cfg = net.machines[&2].cfg.clone();
        let mut fresh = ThresholdSign::new(cfg, keys[&2].clone(), pkp.clone()).unwrap();
        let o = fresh.handle(
            0,
            Input::Start {
                connected: BTreeSet::new(),
            },
            &mut rng,
        );
        net.machines.insert(2, fresh);
        net.absorb(2, o);
        let mut now = 0;
        for _ in 0..50 {
            while let Some((from, to, bytes)) = net.queue.pop_front() {
                let o = net.machines.get_mut(&to).unwrap().handle(
                    now,
                    Input::Message { from, bytes },
                    &mut rng,
                );
                net.absorb(to, o);
            }
            if net.signed.len() == 3 {
                break;
            }
            now += 100;
            for m in members {
                let o = net
                    .machines
                    .get_mut(&m)
                    .unwrap()
                    .handle(now, Input::Tick, &mut rng);
                net.absorb(m, o);
            }
        }
        assert!(net.failed.is_empty(), "{:?}", net.failed);
        assert_eq!(net.signed.len(), 3);
        let sig = net.signed[&2];
        pkp.verifying_key().verify(&[9; 32], &sig).unwrap();
        // The coordinator moved to a new run; every share of it came from
        // nonces drawn for it (a run's nonces are taken when they sign).
        assert_ne!(
            net.machines[&1].run, first_run,
            "no new run after the restart"
        );
        assert!(net.machines[&2].signed_runs.len() == 1);
        for m in members {
            assert!(
                net.machines[&m].nonces.is_none(),
                "member {m} kept a used nonce"
            );
        }
    }

    #[derive(Clone, Copy, Debug, PartialEq)]
    enum Byz {
        BadShare,
        Equivocate,
        Withhold,
        BadPackage,
        OtherMessage,
        Garbage,
    }

    /// Over 100 seeds: a random t of n sign, one of them Byzantine in one
    /// of six ways (the coordinator included). Every failure's suspects are
    /// that member alone; every signature made verifies.
    #[test]
    fn byzantine_signers_over_100_seeds_blame_no_honest_member() {
        let kinds = [
            Byz::BadShare,
            Byz::Equivocate,
            Byz::Withhold,
            Byz::BadPackage,
            Byz::OtherMessage,
            Byz::Garbage,
        ];
        let mut outcomes: BTreeMap<String, usize> = BTreeMap::new();
        for seed in 0..100u64 {
            let mut rng = ChaCha20Rng::seed_from_u64(seed);
            let (n, t) = if seed % 2 == 0 { (4u16, 3u16) } else { (7, 5) };
            let mut all: Vec<u16> = (1..=n).collect();
            for i in (1..all.len()).rev() {
                let j = (rng.next_u32() as usize) % (i + 1);
                all.swap(i, j);
            }
            let mut signers: Vec<u16> = all[..usize::from(t)].to_vec();
            signers.sort_unstable();
            let byz = signers[(rng.next_u32() as usize) % signers.len()];
            let kind = kinds[(seed as usize / 2) % kinds.len()];
            let (mut net, pkp, keys) = setup(n, t, &signers, &mut rng);
            let byz_key = keys[&byz].clone();
            let mut forge_rng = ChaCha20Rng::seed_from_u64(seed + 1000);
            let mut tamper = |from: u16, bytes: &mut Vec<u8>| -> bool {
                if from != byz {
                    return true;
                }
                match kind {
                    Byz::Withhold => false,
                    Byz::Garbage => {
                        *bytes = vec![0xde; 40];
                        true
                    }
                    Byz::OtherMessage => {
                        bytes[37] ^= 1; // the message field: another session
                        true
                    }
                    Byz::BadShare if bytes[101] == KIND_SHARE => {
                        let n = bytes.len();
                        bytes[n - 1] ^= 1;
                        true
                    }
                    Byz::BadPackage if bytes[101] == KIND_PACKAGE => {
                        let n = bytes.len();
                        bytes[n - 1] ^= 1;
                        true
                    }
                    Byz::Equivocate if bytes[101] == KIND_COMMIT => {
                        let (_, c) =
                            frost_core::round1::commit(byz_key.signing_share(), &mut forge_rng);
                        let mut env = SignEnvelope::decode(bytes).unwrap();
                        env.body = c.serialize().unwrap();
                        *bytes = env.encode();
                        true
                    }
                    _ => true,
                }
            };
            let members: Vec<u16> = net.machines.keys().copied().collect();
            for m in &members {
                let o = net.machines.get_mut(m).unwrap().handle(
                    0,
                    Input::Start {
                        connected: BTreeSet::new(),
                    },
                    &mut rng,
                );
                net.absorb(*m, o);
            }
            let mut now = 0;
            while now <= 6_000 {
                while let Some((from, to, mut bytes)) = net.queue.pop_front() {
                    if !tamper(from, &mut bytes) {
                        continue;
                    }
                    let o = net.machines.get_mut(&to).unwrap().handle(
                        now,
                        Input::Message { from, bytes },
                        &mut rng,
                    );
                    net.absorb(to, o);
                }
                let honest_done = members
                    .iter()
                    .filter(|m| **m != byz)
                    .all(|m| net.signed.contains_key(m) || net.failed.contains_key(m));
                if honest_done {
                    break;
                }
                now += 100;
                for m in &members {
                    let o = net
                        .machines
                        .get_mut(m)
                        .unwrap()
                        .handle(now, Input::Tick, &mut rng);
                    net.absorb(*m, o);
                }
            }
            for m in members.iter().filter(|m| **m != byz) {
                let e = net.failed.get(m).map(String::as_str).unwrap_or("");
                assert!(
                    net.signed.contains_key(m) || !e.is_empty(),
                    "seed {seed} {kind:?}: member {m} neither signed nor failed"
                );
            }
            for (m, sig) in &net.signed {
                pkp.verifying_key()
                    .verify(&[9; 32], sig)
                    .unwrap_or_else(|e| panic!("seed {seed}: member {m}'s signature: {e}"));
            }
            for (m, who) in &net.suspects {
                if *m != byz {
                    assert!(
                        who.iter().all(|w| *w == byz),
                        "seed {seed} {kind:?} (byzantine {byz}): member {m} suspects {who:?}: {}",
                        net.failed[m]
                    );
                }
            }
            let key = format!(
                "{kind:?}: {}",
                if net.signed.len() >= members.len() - 1 {
                    "signed"
                } else {
                    "failed"
                }
            );
            *outcomes.entry(key).or_default() += 1;
        }
        eprintln!("{outcomes:#?}");
    }

    #[test]
    fn wrong_parameters_and_garbage_are_refused() {
        let mut rng = ChaCha20Rng::seed_from_u64(4);
        let (net, pkp, keys) = setup(4, 3, &[1, 2, 3], &mut rng);
        let mut cfg = net.machines[&1].cfg.clone();
        cfg.signers = [1, 2].into_iter().collect();
        let e = ThresholdSign::new(cfg.clone(), keys[&1].clone(), pkp.clone())
            .err()
            .unwrap();
        assert!(e.to_string().contains("exactly t = 3 signers"), "{e}");
        cfg.signers = [2, 3, 4].into_iter().collect();
        let e = ThresholdSign::new(cfg, keys[&1].clone(), pkp)
            .err()
            .unwrap();
        assert!(e.to_string().contains("not one of the signers"), "{e}");
        let env = SignEnvelope {
            digest: ConfigDigest([1; 32]),
            message: [2; 32],
            run: [3; 32],
            kind: KIND_SHARE,
            body: vec![5; 32],
        };
        let b = env.encode();
        assert_eq!(SignEnvelope::decode(&b).unwrap(), env);
        for cut in 0..b.len() {
            assert!(SignEnvelope::decode(&b[..cut]).is_err(), "cut {cut}");
        }
        let mut k = b.clone();
        k[101] = 9;
        assert!(SignEnvelope::decode(&k).unwrap_err().contains("kind"));
    }
}
