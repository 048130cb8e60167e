//! The FROST Pedersen DKG ceremony across the committee (`sibyl dkg`).
//!
//! ```text
//!  connect ─► round 1 ─────────► echo ──────────────► round 2 ─────────► done
//!            part1; package +    hash + sender's       part2; one package  part3; every member
//!            identity signature  signature of every    per member, point   confirms the same
//!            to every member     round-1 package seen  to point (Noise)    public key package
//! ```
//!
//! Round-1 packages are signed by their sender's identity key, and every member
//! echoes what it received. A member that sent two different packages has
//! signed both, so the mismatch is proof and names it; an echo with a bad
//! signature names the member who echoed it. `part2`/`part3` failures name
//! their culprit (FROST cheater detection). Keys are written only when every
//! suite's ceremony has finished and all members confirmed the same result.
//!
//! Messages of other ceremonies (another suite, another committee) carry a
//! different session id and are set aside for later, never mixed in. Messages
//! are re-sent to members that have not answered yet, so a member whose first
//! messages were lost still completes.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use frost_core::keys::dkg::{part1, part2, part3, round1, round2};
use frost_core::keys::{KeyPackage, PublicKeyPackage};
use frost_core::{Ciphersuite, Identifier};
use libp2p::PeerId;
use libp2p::identity::{Keypair, PublicKey};
use sha3::{Digest, Sha3_256};
use sibyl_aggregator::{ConfigDigest, Suite};

use crate::keystore::{self, Keystore, Passphrase};
use crate::net::{Net, NetEvent};

const MAGIC: &[u8; 4] = b"SDKG";
const VERSION: u8 = 1;
const KIND_ROUND1: u8 = 1;
const KIND_ECHO: u8 = 2;
const KIND_ROUND2: u8 = 3;
const KIND_DONE: u8 = 4;

/// Ceremony phases, for progress and errors.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Phase {
    Connect,
    Round1,
    Echo,
    Round2,
    Done,
}

impl std::fmt::Display for Phase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Phase::Connect => "connect",
            Phase::Round1 => "round 1",
            Phase::Echo => "echo",
            Phase::Round2 => "round 2",
            Phase::Done => "confirmation",
        })
    }
}

/// Why a ceremony failed. Every variant that can blame a member names it.
#[derive(Debug, thiserror::Error)]
pub enum DkgError {
    #[error("member {member} equivocated: it signed two different round-1 packages")]
    Equivocation { member: u16 },
    #[error("member {member} sent an invalid {phase} message: {reason}")]
    BadMessage {
        member: u16,
        phase: Phase,
        reason: String,
    },
    #[error("member {member}'s round-1 proof of knowledge does not verify")]
    InvalidProof { member: u16 },
    #[error("member {member} sent a round-2 secret share that does not match its commitment")]
    InvalidShare { member: u16 },
    #[error("member {member} finished with a different public key package")]
    Mismatch { member: u16 },
    #[error(
        "timed out in {phase}: still waiting for member(s) {missing:?}; are they running `sibyl dkg` with the same committee file?"
    )]
    Timeout { phase: Phase, missing: Vec<u16> },
    #[error("invalid ceremony parameters: {0}")]
    Params(String),
    #[error("FROST: {0}")]
    Frost(String),
    #[error(transparent)]
    Keystore(#[from] keystore::KeystoreError),
}

impl DkgError {
    /// The member this error blames, if any.
    pub fn culprit(&self) -> Option<u16> {
        match self {
            DkgError::Equivocation { member }
            | DkgError::BadMessage { member, .. }
            | DkgError::InvalidProof { member }
            | DkgError::InvalidShare { member }
            | DkgError::Mismatch { member } => Some(*member),
            _ => None,
        }
    }
}

/// Parameters of one member's side of the ceremony.
#[derive(Clone, Debug)]
pub struct DkgParams {
    /// Binds every message to the committee.
    pub digest: ConfigDigest,
    /// The signing threshold t.
    pub threshold: u16,
    /// This member's identity key (the same one the `Net` uses).
    pub identity: Keypair,
    /// Every member's index and PeerId (this member included).
    pub members: BTreeMap<u16, PeerId>,
    /// Give up after this long.
    pub timeout: Duration,
    /// Re-send to members that have not answered after this long.
    pub resend_interval: Duration,
}

/// A finished ceremony's keys for one suite.
pub struct DkgOutput<C: Ciphersuite> {
    pub key_package: KeyPackage<C>,
    pub public_key_package: PublicKeyPackage<C>,
}

impl<C: Ciphersuite> std::fmt::Debug for DkgOutput<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DkgOutput")
            .field(
                "group_key",
                &keystore::group_key_hex(&self.public_key_package),
            )
            .finish_non_exhaustive()
    }
}

fn sha3(parts: &[&[u8]]) -> [u8; 32] {
    let mut h = Sha3_256::new();
    for p in parts {
        h.update(p);
    }
    h.finalize().into()
}

/// The ceremony's session id: committee digest and suite.
fn session_id<C: Ciphersuite>(digest: &ConfigDigest) -> [u8; 32] {
    sha3(&[b"sibyl-dkg-session-v1", &digest.0, C::ID.as_bytes()])
}

/// What a member signs for its round-1 package.
fn round1_statement(session: &[u8; 32], from: u16, hash: &[u8; 32]) -> Vec<u8> {
    let mut m = b"sibyl-dkg-round1".to_vec();
    m.extend_from_slice(session);
    m.extend_from_slice(&from.to_be_bytes());
    m.extend_from_slice(hash);
    m
}

/// The ed25519 public key inside an ed25519 PeerId.
pub fn public_key_of(peer: &PeerId) -> Option<PublicKey> {
    let mh = peer.as_ref();
    // Identity multihash (code 0): the protobuf-encoded public key is inline.
    if mh.code() != 0 {
        return None;
    }
    PublicKey::try_decode_protobuf(mh.digest()).ok()
}

/// Echoed round-1 packages: member -> (package hash, member's signature).
pub type EchoEntries = BTreeMap<u16, ([u8; 32], Vec<u8>)>;

/// A DKG wire message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DkgMessage {
    Round1 {
        package: Vec<u8>,
        signature: Vec<u8>,
    },
    /// For each member: hash of its round-1 package and its signature.
    Echo {
        entries: EchoEntries,
    },
    Round2 {
        package: Vec<u8>,
    },
    Done {
        public_key_package_hash: [u8; 32],
    },
}

impl DkgMessage {
    fn phase(&self) -> Phase {
        match self {
            DkgMessage::Round1 { .. } => Phase::Round1,
            DkgMessage::Echo { .. } => Phase::Echo,
            DkgMessage::Round2 { .. } => Phase::Round2,
            DkgMessage::Done { .. } => Phase::Done,
        }
    }

    /// `MAGIC | VERSION | kind | session | body`, lengths big-endian.
    pub fn encode(&self, session: &[u8; 32]) -> Vec<u8> {
        let mut out = Vec::with_capacity(64);
        out.extend_from_slice(MAGIC);
        out.push(VERSION);
        let put_bytes = |out: &mut Vec<u8>, b: &[u8]| {
            out.extend_from_slice(&u32::try_from(b.len()).unwrap_or(u32::MAX).to_be_bytes());
            out.extend_from_slice(b);
        };
        match self {
            DkgMessage::Round1 { package, signature } => {
                out.push(KIND_ROUND1);
                out.extend_from_slice(session);
                put_bytes(&mut out, package);
                put_bytes(&mut out, signature);
            }
            DkgMessage::Echo { entries } => {
                out.push(KIND_ECHO);
                out.extend_from_slice(session);
                out.extend_from_slice(
                    &u16::try_from(entries.len())
                        .unwrap_or(u16::MAX)
                        .to_be_bytes(),
                );
                for (member, (hash, sig)) in entries {
                    out.extend_from_slice(&member.to_be_bytes());
                    out.extend_from_slice(hash);
                    put_bytes(&mut out, sig);
                }
            }
            DkgMessage::Round2 { package } => {
                out.push(KIND_ROUND2);
                out.extend_from_slice(session);
                put_bytes(&mut out, package);
            }
            DkgMessage::Done {
                public_key_package_hash,
            } => {
                out.push(KIND_DONE);
                out.extend_from_slice(session);
                out.extend_from_slice(public_key_package_hash);
            }
        }
        out
    }

    /// Decode; returns the session id and the message.
    pub fn decode(bytes: &[u8]) -> Result<([u8; 32], DkgMessage), DkgDecodeError> {
        let mut r = Reader(bytes);
        if r.take(4)? != MAGIC {
            return Err(DkgDecodeError::NotDkg);
        }
        let version = r.u8()?;
        if version != VERSION {
            return Err(DkgDecodeError::Version(version));
        }
        let kind = r.u8()?;
        let session = r.array::<32>()?;
        let msg = match kind {
            KIND_ROUND1 => DkgMessage::Round1 {
                package: r.bytes()?.to_vec(),
                signature: r.bytes()?.to_vec(),
            },
            KIND_ECHO => {
                let count = r.u16()?;
                let mut entries = BTreeMap::new();
                for _ in 0..count {
                    let member = r.u16()?;
                    let hash = r.array::<32>()?;
                    let sig = r.bytes()?.to_vec();
                    if entries.insert(member, (hash, sig)).is_some() {
                        return Err(DkgDecodeError::DuplicateEcho(member));
                    }
                }
                DkgMessage::Echo { entries }
            }
            KIND_ROUND2 => DkgMessage::Round2 {
                package: r.bytes()?.to_vec(),
            },
            KIND_DONE => DkgMessage::Done {
                public_key_package_hash: r.array::<32>()?,
            },
            other => return Err(DkgDecodeError::UnknownKind(other)),
        };
        if !r.0.is_empty() {
            return Err(DkgDecodeError::TrailingBytes(r.0.len()));
        }
        Ok((session, msg))
    }
}

/// Why bytes are not a DKG message.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DkgDecodeError {
    #[error("not a DKG message (no SDKG magic)")]
    NotDkg,
    #[error(
        "unsupported DKG message version {0}; every member must run the same sibyl release for the ceremony"
    )]
    Version(u8),
    #[error("DKG message truncated")]
    Truncated,
    #[error("unknown DKG message kind {0}")]
    UnknownKind(u8),
    #[error("echo lists member {0} twice")]
    DuplicateEcho(u16),
    #[error("{0} trailing bytes after the DKG message")]
    TrailingBytes(usize),
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], DkgDecodeError> {
        if self.0.len() < n {
            return Err(DkgDecodeError::Truncated);
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Ok(head)
    }
    fn u8(&mut self) -> Result<u8, DkgDecodeError> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, DkgDecodeError> {
        Ok(u16::from_be_bytes(self.array::<2>()?))
    }
    fn array<const N: usize>(&mut self) -> Result<[u8; N], DkgDecodeError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }
    fn bytes(&mut self) -> Result<&'a [u8], DkgDecodeError> {
        let len = u32::from_be_bytes(self.array::<4>()?);
        self.take(usize::try_from(len).map_err(|_| DkgDecodeError::Truncated)?)
    }
}

/// Runs ceremonies over one `Net`, keeping messages of later ceremonies.
pub struct Ceremony<'n> {
    net: &'n mut Net,
    params: DkgParams,
    /// (from, bytes) of messages for another session, kept for later.
    stash: Vec<(u16, Vec<u8>)>,
    /// Everything we sent, per session and member, for re-sending.
    outbox: BTreeMap<[u8; 32], BTreeMap<u16, Vec<Vec<u8>>>>,
    /// When we last re-sent to a member, per session: bounds the traffic two
    /// members answering each other's repeats can make.
    last_resend: BTreeMap<([u8; 32], u16), tokio::time::Instant>,
    progress: Box<dyn FnMut(&str) + Send + 'n>,
}

struct Round1Seen {
    hash: [u8; 32],
    signature: Vec<u8>,
    package: Vec<u8>,
}

impl<'n> Ceremony<'n> {
    pub fn new(net: &'n mut Net, params: DkgParams) -> Result<Self, DkgError> {
        let n = u16::try_from(params.members.len())
            .map_err(|_| DkgError::Params("too many members".into()))?;
        if params.threshold < 2 || params.threshold > n {
            return Err(DkgError::Params(format!(
                "threshold {} must be between 2 and the committee size {n}",
                params.threshold
            )));
        }
        if params.members.get(&net.me()) != Some(&net.local_peer_id()) {
            return Err(DkgError::Params(format!(
                "the network's identity is not member {} of the committee",
                net.me()
            )));
        }
        Ok(Self {
            net,
            params,
            stash: Vec::new(),
            outbox: BTreeMap::new(),
            last_resend: BTreeMap::new(),
            progress: Box::new(|_| {}),
        })
    }

    /// Receive progress lines ("round 1: 3/4 packages").
    pub fn with_progress(mut self, f: impl FnMut(&str) + Send + 'n) -> Self {
        self.progress = Box::new(f);
        self
    }

    fn others(&self) -> BTreeSet<u16> {
        let me = self.net.me();
        self.params
            .members
            .keys()
            .copied()
            .filter(|i| *i != me)
            .collect()
    }

    /// Next DKG message of `session`, from the stash first. `None` at the
    /// resend tick (so the caller can re-send) .
    async fn next_message(
        &mut self,
        session: &[u8; 32],
        deadline: tokio::time::Instant,
        phase: Phase,
        missing: &BTreeSet<u16>,
    ) -> Result<Option<(u16, DkgMessage)>, DkgError> {
        if let Some(pos) = self
            .stash
            .iter()
            .position(|(_, b)| DkgMessage::decode(b).is_ok_and(|(s, _)| &s == session))
        {
            let (from, bytes) = self.stash.remove(pos);
            return Ok(DkgMessage::decode(&bytes).ok().map(|(_, m)| (from, m)));
        }
        let wake = deadline.min(tokio::time::Instant::now() + self.params.resend_interval);
        loop {
            let event = match tokio::time::timeout_at(wake, self.net.next_event()).await {
                Ok(e) => e,
                Err(_) if tokio::time::Instant::now() >= deadline => {
                    return Err(DkgError::Timeout {
                        phase,
                        missing: missing.iter().copied().collect(),
                    });
                }
                Err(_) => return Ok(None),
            };
            let NetEvent::Message { from, bytes } = event else {
                continue;
            };
            match DkgMessage::decode(&bytes) {
                Ok((s, msg)) if &s == session => return Ok(Some((from, msg))),
                // A straggler of a ceremony we finished: it lacks our messages.
                Ok((s, _)) if self.outbox.contains_key(&s) => self.resend(&s, from),
                Ok(_) => self.stash.push((from, bytes)),
                Err(e) => {
                    return Err(DkgError::BadMessage {
                        member: from,
                        phase,
                        reason: e.to_string(),
                    });
                }
            }
        }
    }

    fn send(&mut self, to: u16, msg: &DkgMessage, session: &[u8; 32]) {
        let bytes = msg.encode(session);
        let sent = self
            .outbox
            .entry(*session)
            .or_default()
            .entry(to)
            .or_default();
        if !sent.contains(&bytes) {
            sent.push(bytes.clone());
        }
        if let Err(e) = self.net.send(to, bytes) {
            tracing::warn!(member = to, error = %e, "cannot send DKG message");
        }
    }

    /// Re-send everything we sent `to` in `session`, at most once per resend
    /// interval.
    fn resend(&mut self, session: &[u8; 32], to: u16) {
        let now = tokio::time::Instant::now();
        if let Some(last) = self.last_resend.get(&(*session, to))
            && now.duration_since(*last) < self.params.resend_interval
        {
            return;
        }
        self.last_resend.insert((*session, to), now);
        let msgs = self
            .outbox
            .get(session)
            .and_then(|o| o.get(&to))
            .cloned()
            .unwrap_or_default();
        for bytes in msgs {
            if let Err(e) = self.net.send(to, bytes) {
                tracing::warn!(member = to, error = %e, "cannot re-send DKG message");
            }
        }
    }

    /// Run one ceremony for suite `C`. Stores nothing.
    pub async fn run<C: Ciphersuite>(&mut self) -> Result<DkgOutput<C>, DkgError> {
        let deadline = tokio::time::Instant::now() + self.params.timeout;
        let session = session_id::<C>(&self.params.digest);
        let me = self.net.me();
        let n = u16::try_from(self.params.members.len())
            .map_err(|_| DkgError::Params("too many members".into()))?;
        let others = self.others();
        let ident = |i: u16| {
            Identifier::<C>::try_from(i).map_err(|e| DkgError::Params(format!("member {i}: {e}")))
        };
        let mut by_ident = BTreeMap::new();
        for &i in self.params.members.keys() {
            by_ident.insert(ident(i)?, i);
        }
        let member_of = |id: &Identifier<C>| by_ident.get(id).copied().unwrap_or(0);
        let frost_err = |e: frost_core::Error<C>, phase: Phase| -> DkgError {
            match (e.culprits().first().map(&member_of), &e) {
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
        };

        // Connect: wait for everyone so nothing is sent into the void.
        (self.progress)(&format!(
            "{}: waiting for {} members to connect",
            suite_label::<C>(),
            others.len()
        ));
        loop {
            let connected = self.net.connected();
            let missing: BTreeSet<u16> = others.difference(&connected).copied().collect();
            if missing.is_empty() {
                break;
            }
            let wake = deadline.min(tokio::time::Instant::now() + self.params.resend_interval);
            match tokio::time::timeout_at(wake, self.net.next_event()).await {
                Ok(NetEvent::Message { from, bytes }) => self.stash.push((from, bytes)),
                Ok(_) => {}
                Err(_) if tokio::time::Instant::now() >= deadline => {
                    return Err(DkgError::Timeout {
                        phase: Phase::Connect,
                        missing: missing.into_iter().collect(),
                    });
                }
                Err(_) => {}
            }
        }

        // Round 1.
        let mut rng = rand::rngs::OsRng;
        let (secret1, package1) = part1::<C, _>(ident(me)?, n, self.params.threshold, &mut rng)
            .map_err(|e| frost_err(e, Phase::Round1))?;
        let my_bytes = package1
            .serialize()
            .map_err(|e| DkgError::Frost(e.to_string()))?;
        let my_hash = sha3(&[&my_bytes]);
        let my_sig = self
            .params
            .identity
            .sign(&round1_statement(&session, me, &my_hash))
            .map_err(|e| DkgError::Params(format!("cannot sign: {e}")))?;
        let round1_msg = DkgMessage::Round1 {
            package: my_bytes.clone(),
            signature: my_sig.clone(),
        };
        let mut seen: BTreeMap<u16, Round1Seen> = BTreeMap::new();
        seen.insert(
            me,
            Round1Seen {
                hash: my_hash,
                signature: my_sig,
                package: my_bytes,
            },
        );
        let mut echoes: BTreeMap<u16, EchoEntries> = BTreeMap::new();
        let mut round2_in: BTreeMap<u16, Vec<u8>> = BTreeMap::new();
        let mut done_in: BTreeMap<u16, [u8; 32]> = BTreeMap::new();
        let mut secret2 = None;
        let mut result: Option<(KeyPackage<C>, PublicKeyPackage<C>, DkgMessage)> = None;
        let mut phase = Phase::Round1;
        for &to in &others {
            self.send(to, &round1_msg, &session);
        }
        (self.progress)(&format!("{}: round 1 sent", suite_label::<C>()));

        loop {
            // Advance as far as the messages so far allow.
            if phase == Phase::Round1 && seen.len() == usize::from(n) {
                let entries = seen
                    .iter()
                    .map(|(i, s)| (*i, (s.hash, s.signature.clone())))
                    .collect();
                let msg = DkgMessage::Echo { entries };
                for &to in &others {
                    self.send(to, &msg, &session);
                }
                phase = Phase::Echo;
                (self.progress)(&format!(
                    "{}: round 1 complete, echo sent",
                    suite_label::<C>()
                ));
            }
            if phase == Phase::Echo {
                // Check every echo that has arrived against what we saw.
                for (&k, entries) in &echoes {
                    check_echo(&session, k, entries, &seen, &self.params.members)?;
                }
                if echoes.len() == others.len() {
                    let mut r1 = BTreeMap::new();
                    for (&i, s) in &seen {
                        if i == me {
                            continue;
                        }
                        let pkg = round1::Package::<C>::deserialize(&s.package).map_err(|e| {
                            DkgError::BadMessage {
                                member: i,
                                phase: Phase::Round1,
                                reason: format!("round-1 package does not decode: {e}"),
                            }
                        })?;
                        r1.insert(ident(i)?, pkg);
                    }
                    let (s2, out) =
                        part2(secret1.clone(), &r1).map_err(|e| frost_err(e, Phase::Round1))?;
                    for (id, pkg) in out {
                        let to = member_of(&id);
                        let bytes = pkg
                            .serialize()
                            .map_err(|e| DkgError::Frost(e.to_string()))?;
                        self.send(to, &DkgMessage::Round2 { package: bytes }, &session);
                    }
                    secret2 = Some((s2, r1));
                    phase = Phase::Round2;
                    (self.progress)(&format!(
                        "{}: echoes consistent, round 2 sent",
                        suite_label::<C>()
                    ));
                }
            }
            if phase == Phase::Round2
                && round2_in.len() == others.len()
                && let Some((s2, r1)) = &secret2
            {
                let mut r2 = BTreeMap::new();
                for (&i, bytes) in &round2_in {
                    let pkg = round2::Package::<C>::deserialize(bytes).map_err(|e| {
                        DkgError::BadMessage {
                            member: i,
                            phase: Phase::Round2,
                            reason: format!("round-2 package does not decode: {e}"),
                        }
                    })?;
                    r2.insert(ident(i)?, pkg);
                }
                let (kp, pkp) = part3(s2, r1, &r2).map_err(|e| frost_err(e, Phase::Round2))?;
                let hash = sha3(&[&pkp
                    .serialize()
                    .map_err(|e| DkgError::Frost(e.to_string()))?]);
                let msg = DkgMessage::Done {
                    public_key_package_hash: hash,
                };
                for &to in &others {
                    self.send(to, &msg, &session);
                }
                result = Some((kp, pkp, msg));
                phase = Phase::Done;
                (self.progress)(&format!(
                    "{}: round 2 complete, confirming",
                    suite_label::<C>()
                ));
            }
            if phase == Phase::Done
                && let Some((
                    kp,
                    pkp,
                    DkgMessage::Done {
                        public_key_package_hash,
                    },
                )) = &result
            {
                for (&m, h) in &done_in {
                    if h != public_key_package_hash {
                        return Err(DkgError::Mismatch { member: m });
                    }
                }
                if done_in.len() == others.len() {
                    (self.progress)(&format!(
                        "{}: all {} members confirmed group key {}",
                        suite_label::<C>(),
                        n,
                        keystore::group_key_hex(pkp)
                    ));
                    return Ok(DkgOutput {
                        key_package: kp.clone(),
                        public_key_package: pkp.clone(),
                    });
                }
            }

            let missing: BTreeSet<u16> = match phase {
                Phase::Connect | Phase::Round1 => others
                    .iter()
                    .filter(|i| !seen.contains_key(i))
                    .copied()
                    .collect(),
                Phase::Echo => others
                    .iter()
                    .filter(|i| !echoes.contains_key(i))
                    .copied()
                    .collect(),
                Phase::Round2 => others
                    .iter()
                    .filter(|i| !round2_in.contains_key(i))
                    .copied()
                    .collect(),
                Phase::Done => others
                    .iter()
                    .filter(|i| !done_in.contains_key(i))
                    .copied()
                    .collect(),
            };
            let Some((from, msg)) = self
                .next_message(&session, deadline, phase, &missing)
                .await?
            else {
                // Quiet for a while: re-send our messages to whoever has not
                // answered yet.
                for &to in &missing {
                    self.resend(&session, to);
                }
                continue;
            };
            if !others.contains(&from) {
                continue;
            }
            let msg_phase = msg.phase();
            match msg {
                DkgMessage::Round1 { package, signature } => {
                    let hash = sha3(&[&package]);
                    let key = self.params.members.get(&from).and_then(public_key_of);
                    let valid = key.is_some_and(|k| {
                        k.verify(&round1_statement(&session, from, &hash), &signature)
                    });
                    if !valid {
                        return Err(DkgError::BadMessage {
                            member: from,
                            phase: msg_phase,
                            reason: "round-1 signature does not verify".into(),
                        });
                    }
                    match seen.get(&from) {
                        Some(prev) if prev.hash != hash => {
                            return Err(DkgError::Equivocation { member: from });
                        }
                        // A repeat: the sender may lack ours.
                        Some(_) => self.resend(&session, from),
                        None => {
                            seen.insert(
                                from,
                                Round1Seen {
                                    hash,
                                    signature,
                                    package,
                                },
                            );
                            (self.progress)(&format!(
                                "{}: round 1 {}/{} packages",
                                suite_label::<C>(),
                                seen.len(),
                                n
                            ));
                        }
                    }
                }
                DkgMessage::Echo { entries } => {
                    if let Some(prev) = echoes.get(&from) {
                        if *prev != entries {
                            return Err(DkgError::BadMessage {
                                member: from,
                                phase: msg_phase,
                                reason: "sent two different echoes".into(),
                            });
                        }
                        self.resend(&session, from);
                    } else {
                        echoes.insert(from, entries);
                    }
                }
                DkgMessage::Round2 { package } => match round2_in.get(&from) {
                    Some(prev) if *prev != package => {
                        return Err(DkgError::BadMessage {
                            member: from,
                            phase: msg_phase,
                            reason: "sent two different round-2 packages".into(),
                        });
                    }
                    Some(_) => self.resend(&session, from),
                    None => {
                        round2_in.insert(from, package);
                    }
                },
                DkgMessage::Done {
                    public_key_package_hash,
                } => {
                    if done_in.insert(from, public_key_package_hash).is_some() {
                        self.resend(&session, from);
                    }
                }
            }
        }
    }

    /// Keep answering repeats for `duration` after finishing, so members that
    /// missed our last message can finish too.
    pub async fn linger(&mut self, duration: Duration) {
        let deadline = tokio::time::Instant::now() + duration;
        while let Ok(event) = tokio::time::timeout_at(deadline, self.net.next_event()).await {
            if let NetEvent::Message { from, bytes } = event
                && let Ok((session, _)) = DkgMessage::decode(&bytes)
                && self.outbox.contains_key(&session)
            {
                self.resend(&session, from);
            }
        }
    }
}

/// Check member `k`'s echo against the round-1 packages we saw.
fn check_echo(
    session: &[u8; 32],
    k: u16,
    entries: &EchoEntries,
    seen: &BTreeMap<u16, Round1Seen>,
    members: &BTreeMap<u16, PeerId>,
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
        let key = members
            .get(&j)
            .and_then(public_key_of)
            .ok_or_else(|| DkgError::Params(format!("member {j}'s PeerId has no ed25519 key")))?;
        if key.verify(&round1_statement(session, j, hash), sig) {
            return Err(DkgError::Equivocation { member: j });
        }
        return Err(bad(format!(
            "echoed a round-1 package of member {j} that member {j} never signed"
        )));
    }
    Ok(())
}

fn suite_label<C: Ciphersuite>() -> String {
    keystore::suite_slug::<C>()
}

/// The keys of a finished ceremony for every suite.
#[derive(Debug, Default)]
pub struct DkgResult {
    pub ed25519: Option<DkgOutput<frost_ed25519::Ed25519Sha512>>,
    pub secp256k1_evm: Option<DkgOutput<frost_secp256k1_evm::Secp256K1Keccak256>>,
}

impl DkgResult {
    /// Group key per suite, hex.
    pub fn group_keys(&self) -> BTreeMap<Suite, String> {
        let mut out = BTreeMap::new();
        if let Some(o) = &self.ed25519 {
            out.insert(
                Suite::Ed25519,
                keystore::group_key_hex(&o.public_key_package),
            );
        }
        if let Some(o) = &self.secp256k1_evm {
            out.insert(
                Suite::Secp256k1Evm,
                keystore::group_key_hex(&o.public_key_package),
            );
        }
        out
    }

    /// Write every suite's key package (encrypted) and public key package.
    /// Called only after every ceremony succeeded.
    pub fn store(
        &self,
        keystore: &Keystore,
        digest: &ConfigDigest,
        passphrase: &Passphrase,
    ) -> Result<(), DkgError> {
        if let Some(o) = &self.ed25519 {
            keystore.write_key_package(digest, &o.key_package, passphrase)?;
            keystore.write_public_key_package(digest, &o.public_key_package)?;
        }
        if let Some(o) = &self.secp256k1_evm {
            keystore.write_key_package(digest, &o.key_package, passphrase)?;
            keystore.write_public_key_package(digest, &o.public_key_package)?;
        }
        Ok(())
    }
}

/// Run the ceremony for each of `suites` over `net`; nothing is stored.
pub async fn run_dkg(
    net: &mut Net,
    params: DkgParams,
    suites: &[Suite],
    progress: impl FnMut(&str) + Send,
) -> Result<DkgResult, DkgError> {
    let linger = params.resend_interval * 3;
    // `params.timeout` bounds the whole command (every suite and the
    // lingering), not each suite's ceremony.
    let end = tokio::time::Instant::now() + params.timeout;
    let left = || end.saturating_duration_since(tokio::time::Instant::now());
    let mut ceremony = Ceremony::new(net, params)?.with_progress(progress);
    let mut result = DkgResult::default();
    for suite in suites {
        ceremony.params.timeout = left();
        let outcome = match suite {
            Suite::Ed25519 => ceremony.run().await.map(|o| result.ed25519 = Some(o)),
            Suite::Secp256k1Evm => ceremony.run().await.map(|o| result.secp256k1_evm = Some(o)),
        };
        if let Err(e) = outcome {
            // Stay a moment so what we already sent (e.g. the echo that lets
            // the others catch an equivocator too) is delivered.
            ceremony.linger(linger.min(left())).await;
            return Err(e);
        }
    }
    ceremony.linger(linger.min(left())).await;
    Ok(result)
}

/// Run the ceremonies and, only if all of them succeed, store the keys.
/// On failure nothing is written.
pub async fn run_dkg_and_store(
    net: &mut Net,
    params: DkgParams,
    suites: &[Suite],
    keystore: &Keystore,
    passphrase: &Passphrase,
    progress: impl FnMut(&str) + Send,
) -> Result<DkgResult, DkgError> {
    let digest = params.digest;
    let result = run_dkg(net, params, suites, progress).await?;
    result.store(keystore, &digest, passphrase)?;
    Ok(result)
}

/// Arguments of `sibyl dkg`.
#[derive(Debug, clap::Args)]
pub struct DkgArgs {
    /// This member's node.toml (names the committee file, keys and passphrase).
    #[arg(long)]
    pub config: std::path::PathBuf,
    /// Give up if the ceremony has not finished after this long.
    #[arg(long, default_value = "10m")]
    pub timeout: String,
    /// Replace key packages that already exist for this committee.
    #[arg(long)]
    pub force: bool,
}

/// `sibyl dkg --config <node.toml>`.
pub fn command(args: DkgArgs) -> anyhow::Result<()> {
    use anyhow::Context;
    let config = crate::config::Config::load(&args.config)?;
    let timeout = crate::config::parse_duration(&args.timeout)
        .map_err(|e| anyhow::anyhow!("--timeout: {e}"))?;
    let keystore = Keystore::from_config(&config);
    let passphrase = Passphrase::from_config(&config)?;
    let identity = keystore.read_identity(&passphrase)?;
    let committee = &config.committee;
    let digest = committee.digest;
    if !args.force {
        for suite in &committee.suites {
            let path = match suite {
                Suite::Ed25519 => keystore.key_package_path::<frost_ed25519::Ed25519Sha512>(),
                Suite::Secp256k1Evm => {
                    keystore.key_package_path::<frost_secp256k1_evm::Secp256K1Keccak256>()
                }
            };
            if path.exists() {
                anyhow::bail!(
                    "{} already exists; pass --force to replace it with the keys of a new ceremony",
                    path.display()
                );
            }
        }
    }
    let params = DkgParams {
        digest,
        threshold: committee.threshold,
        identity: identity.clone(),
        members: committee
            .members
            .iter()
            .map(|m| (m.index, m.peer_id))
            .collect(),
        timeout,
        resend_interval: Duration::from_secs(1),
    };
    let net_config = crate::net::NetConfig::from_node_config(&config, identity)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let suites = committee.suites.clone();
    let written = keystore.clone();
    let result = runtime.block_on(async move {
        let mut net = crate::net::Net::new(net_config)?;
        eprintln!(
            "dkg: member {} of {}, threshold {}, committee digest {}",
            net.me(),
            params.members.len(),
            params.threshold,
            hex::encode(digest.0)
        );
        let r = run_dkg_and_store(&mut net, params, &suites, &keystore, &passphrase, |line| {
            eprintln!("dkg: {line}")
        })
        .await;
        anyhow::Ok(r)
    })?;
    match result {
        Ok(result) => {
            for (suite, key) in result.group_keys() {
                println!(
                    "group public key ({}): {key}",
                    crate::keygen::suite_name(suite)
                );
            }
            for suite in &config.committee.suites {
                let (key, public) = match suite {
                    Suite::Ed25519 => key_paths::<frost_ed25519::Ed25519Sha512>(&written),
                    Suite::Secp256k1Evm => {
                        key_paths::<frost_secp256k1_evm::Secp256K1Keccak256>(&written)
                    }
                };
                println!(
                    "wrote {} (encrypted key package, mode 0600) and {} (public key package)",
                    key.display(),
                    public.display()
                );
            }
            Ok(())
        }
        Err(e) => {
            if let Some(member) = e.culprit() {
                eprintln!("dkg: FAILED, member {member} is at fault; nothing was stored");
            } else {
                eprintln!("dkg: FAILED; nothing was stored");
            }
            Err(e.into())
        }
    }
}

/// Where `sibyl dkg` wrote one suite's key package and public key package.
fn key_paths<C: frost_core::Ciphersuite>(
    keystore: &Keystore,
) -> (std::path::PathBuf, std::path::PathBuf) {
    (
        keystore.key_package_path::<C>(),
        keystore.public_key_package_path::<C>(),
    )
}

#[cfg(test)]
mod tests;
