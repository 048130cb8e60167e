//! The FROST Pedersen DKG ceremony across the committee (`sibyl dkg`) as a
//! sans-io state machine: no clock, no I/O, no OS randomness. The daemon's
//! driver (`sibyl-node`, `dkg.rs`) carries the bytes over libp2p, keeps the
//! timer and writes the key files; the simulator ([`sim`], feature `sim`)
//! runs whole committees of it with Byzantine members on one seed.
//!
//! ```text
//!            Input                                   Output
//!  Start{connected} ──┐                        ┌──► Send{to, bytes}
//!  Connected(set) ────┤      ┌────────────┐    ├──► Progress(line)
//!  Message{from,bytes}┼────► │    Dkg     │ ───┼──► Done(keys of every suite)
//!  Tick ──────────────┘      └────────────┘    └──► Failed(DkgError: culprit, evidence)
//!                    (now_ms and rng passed in; next_wake() says when to Tick)
//!
//!  per suite:  connect ─► nonce ─► round 1 ─────────► echo ──────────────► round 2 ──────────► done
//!                        fresh   part1; package +    hash + sender's       part2; one signed    part3; every member
//!                        random  identity signature  signature of every    package per member,  confirms the same
//!                        to all  to every member     round-1 package seen  point to point       public key package
//! ```
//!
//! Each suite's run begins with every member's fresh random nonce; the run
//! session ([`run_session`]) hashes them all, and round-1 and round-2
//! signatures cover it, so nothing signed in an earlier run verifies in this
//! one (a replayed echo blames whoever replays it). Round-1 packages are
//! signed by their sender's identity key, and every member echoes what it
//! received. A member that sent two different packages has
//! signed both, so the mismatch is proof ([`EquivocationProof`]) and names it;
//! an echo with a bad signature names the member who echoed it. `part2`/`part3`
//! failures name their culprit (FROST cheater detection); round-2 packages
//! are signed, so a member that receives a bad share reveals it to everyone
//! (a complaint) and every member checks it against the sender's commitment
//! and blames the sender, or the complainer if the share was good. Undecodable bytes
//! name their sender (the transport authenticates it). The suites run one
//! after the other; [`Output::Done`] comes only when every suite's ceremony
//! finished and all members confirmed the same result.
//!
//! Messages of other ceremonies (a later suite, another committee) carry a
//! different session id and are set aside in a bounded stash, never mixed in.
//! Every `resend_interval_ms` a member re-sends what it sent to the members
//! its phase still waits for, and it re-sends to a member that repeats itself
//! (to each at most once per interval), so a member whose first messages
//! were lost still completes.
//! After the end the machine keeps answering repeats of its sessions.

mod ceremony;
mod machine;
pub mod repair;
pub mod sign;
/// The seeded DKG simulator (cargo feature `sim`).
#[cfg(any(test, feature = "sim"))]
#[allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::cast_possible_truncation
)]
pub mod sim;
#[cfg(test)]
mod tests;
pub mod wire;

use std::collections::{BTreeMap, BTreeSet};

use ed25519_dalek::{Verifier, VerifyingKey};
use frost_core::Ciphersuite;
use frost_core::keys::{KeyPackage, PublicKeyPackage};

use crate::report::{ConfigDigest, Suite};
pub use machine::{Dkg, DkgStats};
pub use wire::{
    DkgDecodeError, DkgMessage, EchoEntries, RunNonces, SessionId, refresh_session_id,
    round1_statement, round2_statement, run_session, session_id,
};

type Ed = frost_ed25519::Ed25519Sha512;
type Evm = frost_secp256k1_evm::Secp256K1Keccak256;

/// Stash cap: at most 16 distinct messages per sender are kept for sessions
/// this member has not reached. An honest member sends at most 6 distinct
/// messages per suite to one member (nonce, round 1, echo, round 2,
/// confirmation, a complaint), so 16 holds two ceremonies ahead; a member flooding other sessions fills only its own
/// slots, and the stash stays below `16 × n` messages.
pub const STASH_PER_MEMBER: usize = 16;

/// Ceremony phases, for progress and errors.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Phase {
    Connect,
    /// Every member's fresh nonce for this run.
    Nonce,
    Round1,
    Echo,
    Round2,
    Done,
}

impl std::fmt::Display for Phase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Phase::Connect => "connect",
            Phase::Nonce => "nonce",
            Phase::Round1 => "round 1",
            Phase::Echo => "echo",
            Phase::Round2 => "round 2",
            Phase::Done => "confirmation",
        })
    }
}

/// Two round-1 statements of one member, both signed by its identity key:
/// anyone holding the committee file can check them ([`Self::verify`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EquivocationProof {
    pub session: SessionId,
    /// (package hash, signature over [`round1_statement`]).
    pub first: ([u8; 32], Vec<u8>),
    pub second: ([u8; 32], Vec<u8>),
}

impl EquivocationProof {
    /// Both statements differ and both verify under `member`'s identity key.
    pub fn verify(&self, member: u16, key: &VerifyingKey) -> bool {
        let ok = |(hash, sig): &([u8; 32], Vec<u8>)| {
            ed25519_dalek::Signature::from_slice(sig).is_ok_and(|s| {
                key.verify(&round1_statement(&self.session, member, hash), &s)
                    .is_ok()
            })
        };
        self.first.0 != self.second.0 && ok(&self.first) && ok(&self.second)
    }
}

/// Why a ceremony failed. Every variant that can blame a member names it.
#[derive(Debug, thiserror::Error)]
pub enum DkgError {
    #[error("member {member} equivocated: it signed two different round-1 packages")]
    Equivocation {
        member: u16,
        proof: Box<EquivocationProof>,
    },
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
    #[error(
        "member {member} gave member {relayed_by} a different run nonce than it gave us (or member {relayed_by} misreports it); one of the two is faulty: rerun, and if it repeats, look at both"
    )]
    NonceConflict { member: u16, relayed_by: u16 },
    #[error("member {member} finished with a different public key package")]
    Mismatch { member: u16 },
    #[error(
        "timed out in {phase}: still waiting for member(s) {missing:?}; are they running `sibyl dkg` with the same committee file?"
    )]
    Timeout { phase: Phase, missing: Vec<u16> },
    #[error(
        "timed out: still waiting for member(s) {missing:?}; are they running `sibyl repair --member {lost}` with the same --helpers?"
    )]
    RepairTimeout { lost: u16, missing: Vec<u16> },
    #[error(
        "timed out: no sigma yet from helper(s) {missing:?} (a helper sends its sigma once every helper's delta reached it: the helpers' own output names whom they wait for)"
    )]
    RepairIncomplete { missing: Vec<u16> },
    #[error("member {member} gave up its repair: {reason}")]
    RepairAbandoned { member: u16, reason: String },
    #[error(
        "timed out: still waiting for member(s) {missing:?}; are they running `sibyl rotation-sign` with the same arguments and --signers?"
    )]
    SignTimeout { missing: Vec<u16> },
    #[error("invalid ceremony parameters: {0}")]
    Params(String),
    #[error("FROST: {0}")]
    Frost(String),
}

impl DkgError {
    /// The member this error blames, if any.
    pub fn culprit(&self) -> Option<u16> {
        match self {
            DkgError::Equivocation { member, .. }
            | DkgError::BadMessage { member, .. }
            | DkgError::InvalidProof { member }
            | DkgError::InvalidShare { member }
            | DkgError::Mismatch { member } => Some(*member),
            _ => None,
        }
    }

    /// The members this error points at without proof: the culprit, both
    /// members of a nonce conflict, or whom a timeout still waited for.
    pub fn suspects(&self) -> Vec<u16> {
        match self {
            DkgError::NonceConflict { member, relayed_by } => vec![*member, *relayed_by],
            DkgError::Timeout { missing, .. }
            | DkgError::RepairTimeout { missing, .. }
            | DkgError::SignTimeout { missing } => missing.clone(),
            e => e.culprit().into_iter().collect(),
        }
    }
}

/// Signs with this member's identity key (the key behind its PeerId).
pub trait IdentitySigner: Send {
    /// An ed25519 signature over `message`.
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, String>;
}

impl IdentitySigner for ed25519_dalek::SigningKey {
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, String> {
        Ok(ed25519_dalek::Signer::sign(self, message)
            .to_bytes()
            .to_vec())
    }
}

/// Parameters of one member's side of the ceremonies.
#[derive(Clone, Debug)]
pub struct DkgConfig {
    /// Binds every message to the committee (through the session id).
    pub digest: ConfigDigest,
    /// The signing threshold t.
    pub threshold: u16,
    /// This member's index.
    pub me: u16,
    /// Every member's index and identity key (this member included).
    pub members: BTreeMap<u16, VerifyingKey>,
    /// The suites, run in this order.
    pub suites: Vec<Suite>,
    /// Each suite's ceremony (its connect phase included) fails after this long.
    pub timeout_ms: u64,
    /// The whole run (every suite) fails this long after [`Input::Start`]
    /// at the latest; `None`: only the per-suite timeout applies. `sibyl dkg
    /// --timeout` bounds the command with it.
    pub total_timeout_ms: Option<u64>,
    /// Re-send to members that have not answered after this long.
    pub resend_interval_ms: u64,
}

/// A finished ceremony's keys for one suite.
pub struct DkgOutput<C: Ciphersuite> {
    pub key_package: KeyPackage<C>,
    pub public_key_package: PublicKeyPackage<C>,
}

impl<C: Ciphersuite> DkgOutput<C> {
    /// The group public key, hex.
    pub fn group_key_hex(&self) -> String {
        group_key_hex(&self.public_key_package)
    }
}

/// Hex of a public key package's group key.
pub fn group_key_hex<C: Ciphersuite>(pkp: &PublicKeyPackage<C>) -> String {
    match pkp.verifying_key().serialize() {
        Ok(bytes) => hex::encode(bytes),
        // Only the identity element fails to serialize; a DKG never yields it.
        Err(_) => "<unencodable>".to_string(),
    }
}

impl<C: Ciphersuite> std::fmt::Debug for DkgOutput<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DkgOutput")
            .field("group_key", &self.group_key_hex())
            .finish_non_exhaustive()
    }
}

/// The keys of a finished ceremony for every suite.
#[derive(Debug, Default)]
pub struct DkgResult {
    pub ed25519: Option<DkgOutput<Ed>>,
    pub secp256k1_evm: Option<DkgOutput<Evm>>,
}

impl DkgResult {
    /// Group key per suite, hex.
    pub fn group_keys(&self) -> BTreeMap<Suite, String> {
        let mut out = BTreeMap::new();
        if let Some(o) = &self.ed25519 {
            out.insert(Suite::Ed25519, o.group_key_hex());
        }
        if let Some(o) = &self.secp256k1_evm {
            out.insert(Suite::Secp256k1Evm, o.group_key_hex());
        }
        out
    }
}

/// The keys a member holds now, per suite, for a refresh
/// ([`Dkg::refresh`]). Its `Debug` shows only the group keys.
#[derive(Clone, Default)]
pub struct RefreshKeys {
    pub ed25519: Option<(KeyPackage<Ed>, PublicKeyPackage<Ed>)>,
    pub secp256k1_evm: Option<(KeyPackage<Evm>, PublicKeyPackage<Evm>)>,
}

impl std::fmt::Debug for RefreshKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RefreshKeys")
            .field(
                "ed25519",
                &self.ed25519.as_ref().map(|(_, p)| group_key_hex(p)),
            )
            .field(
                "secp256k1_evm",
                &self.secp256k1_evm.as_ref().map(|(_, p)| group_key_hex(p)),
            )
            .finish()
    }
}

/// The name of suite `C` in progress lines.
pub(crate) fn suite_label<C: Ciphersuite>() -> &'static str {
    if C::ID == Ed::ID {
        "ed25519"
    } else if C::ID == Evm::ID {
        "secp256k1-evm"
    } else {
        C::ID
    }
}

/// What the driver feeds the machine, with the current time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Input {
    /// Begin, with the members connected now (a transport without
    /// connections passes every member).
    Start { connected: BTreeSet<u16> },
    /// The members connected now; replaces the previous set.
    Connected(BTreeSet<u16>),
    /// Bytes from member `from` (authenticated by the transport).
    Message { from: u16, bytes: Vec<u8> },
    /// Time passed (the time [`Dkg::next_wake`] asked for, or any tick).
    Tick,
}

/// What the machine asks the driver to do, in order.
#[derive(Debug)]
pub enum Output {
    Send {
        to: u16,
        bytes: Vec<u8>,
    },
    /// A progress line for the operator ("ed25519: round 1 3/4 packages").
    Progress(String),
    /// Every suite finished; store the keys. Emitted once.
    Done(Box<DkgResult>),
    /// The ceremony failed; store nothing. Emitted once.
    Failed(DkgError),
}
