//! The round protocol of DESIGN.md as a sans-io state machine.
//!
//! ```text
//!            Input                                   Action
//!  Tick ─────────────┐                        ┌──► Send{to, bytes} / Broadcast{bytes}
//!  Observations ─────┤      ┌────────────┐    ├──► RecordSigning{round, digest}
//!  Message{bytes} ───┼────► │  Node<C>   │ ───┼──► SignedReport(report)
//!  SigningRecorded ──┤      └────────────┘    ├──► Blame(evidence)
//!  SigningRefused ───┘   (no clock, no I/O:   ├──► RoundEntered{round, leader}
//!                         now_ms and rng in)  └──► WakeAt(ms)
//! ```
//!
//! One round `r` (leader `L(r)`):
//!
//! 1. On entering `r` every member signs its latest local observation together
//!    with [`Committee::attempts`] fresh FROST commitments and sends it to
//!    `L(r)` (none: it observes but does not offer to sign, e.g. while its
//!    clock is off and not yet corrected). Rounds
//!    that follow a signed report start on the committee's round grid (the
//!    multiples of `round_interval_ms`, see [`next_slot`]), so all members
//!    observe at the same instant.
//! 2. `L(r)` waits for all `n` observations, or for `2f + 1` once `observe_ms`
//!    passed since the round's start (`observe_ms = 0`: as soon as it holds
//!    `2f + 1`); aggregates every feed with `2f + 1` observations, keeps
//!    the feeds due for update (all of them when none is due), builds the
//!    report and sends `t` signers a proposal: leaves, timestamp, Merkle root,
//!    the attributed signed observations and the FROST signing package.
//! 3. A signer checks every observation signature, recomputes the leaves and
//!    root from them byte for byte, checks the timestamp against its clock,
//!    its own commitment and its signing ledger, then asks the driver to
//!    record the signing durably ([`Action::RecordSigning`]); only after
//!    [`Input::SigningRecorded`] does it use (and erase) the nonce.
//! 4. `L(r)` aggregates with FROST cheater detection. Signing is robust in
//!    the spirit of ROAST: every member whose observation the leader holds
//!    (also one that arrives after the leaves were fixed) is a candidate
//!    signer. An invalid share ([`Evidence`]) or a signed refusal starts
//!    another attempt at once without that member; an attempt still
//!    incomplete after `share_ms` stays open (a late share still completes
//!    it) while another attempt starts with the silent signers ranked last.
//!    Each attempt uses the next commitment of each signer. Faults are
//!    remembered across rounds (a penalty that decays) so a persistently
//!    faulty member is picked last. The signed report is broadcast; members
//!    verify it against the group key before accepting it.
//! 5. Pacemaker: no accepted report `round_ms` after entering `r`: move to
//!    `r + 1`. A node that sees `f + 1` members at a higher round jumps there.
//!
//! Clocks: each member estimates its clock's offset from the committee's
//! (from the timestamps of proposals and refusals) and runs the
//! protocol on the corrected clock, so a member whose clock is off keeps
//! signing (see [`Node::clock_offset_ms`]). All times in [`Input`] and
//! [`Action`] are the driver's own clock; the conversion happens here.
//!
//! The driver contract: feed every input with the current time; perform
//! every action in order; after each call keep only the latest
//! [`Action::WakeAt`] and call [`Node::handle`] with [`Input::Tick`] then.

pub mod committee;
mod fast25519;
pub mod message;
pub mod schedule;
#[cfg(test)]
mod tests;

use crate::aggregate::{FeedObservation, LastValue, aggregate_feed, update_due};
use crate::evidence::Evidence;
use crate::report::{
    FeedId, PROTOCOL_VERSION, Price, ReportHeader, ReportLeaf, Round, SignatureBytes, SignedReport,
    Suite, TimestampMs,
};
use committee::Committee;
use ed25519_dalek::SigningKey;
use frost_core::{
    self as frost, Ciphersuite, Identifier, SigningPackage, VerifyingKey,
    keys::{KeyPackage, PublicKeyPackage},
    round1::{SigningCommitments, SigningNonces},
    round2::SignatureShare,
};
use message::{
    Kind, ObservationEntry, ObservationMsg, Payload, ProposalMsg, RefusalMsg, RefusalReason,
    ShareMsg, SignedMessage,
};
use rand_core::{CryptoRng, RngCore};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;

/// How many rounds ahead messages are buffered.
const FUTURE_WINDOW: Round = 3;
/// Penalties (signer ranking, remembered across rounds): what a fault adds
/// and the cap. Every [`FORGIVE_EVERY`] rounds this member leads, each
/// penalty drops by 1: a member that stayed silent once is tried again
/// after about 32 rounds led (so it costs an attempt rarely), and one that
/// then behaves is back in good standing.
const PENALTY_INVALID: u32 = 16;
const PENALTY_REFUSAL: u32 = 8;
const PENALTY_SILENT: u32 = 4;
const PENALTY_CAP: u32 = 64;
const FORGIVE_EVERY: u64 = 8;

/// A FROST ciphersuite Sibyl signs with.
pub trait SibylSuite: Ciphersuite {
    const SUITE: Suite;

    /// One participant's serialized commitments, parsed and validated: the
    /// same answer as `SigningCommitments::deserialize`. A suite may answer
    /// faster (the inputs are public).
    fn parse_commitments(bytes: &[u8]) -> Option<SigningCommitments<Self>> {
        SigningCommitments::deserialize(bytes).ok()
    }

    /// Whether `sig` (serialized) is a valid signature on `msg` under `key`:
    /// the same answer as `Signature::deserialize` then `VerifyingKey::verify`.
    fn verify_signature_bytes(key: &VerifyingKey<Self>, msg: &[u8], sig: &[u8]) -> bool {
        frost::Signature::<Self>::deserialize(sig).is_ok_and(|s| key.verify(msg, &s).is_ok())
    }
}

impl SibylSuite for frost_ed25519::Ed25519Sha512 {
    const SUITE: Suite = Suite::Ed25519;

    fn parse_commitments(bytes: &[u8]) -> Option<SigningCommitments<Self>> {
        fast25519::commitments(bytes)
    }

    fn verify_signature_bytes(key: &VerifyingKey<Self>, msg: &[u8], sig: &[u8]) -> bool {
        fast25519::verify(key, msg, sig)
    }
}

impl SibylSuite for frost_secp256k1_evm::Secp256K1Keccak256 {
    const SUITE: Suite = Suite::Secp256k1Evm;
}

/// A member's own current observation of one feed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocalObservation {
    pub feed: FeedId,
    pub price: Price,
    pub spread: u128,
    pub observed_at_ms: TimestampMs,
}

/// What the driver feeds the node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Input {
    /// Time passed (a requested [`Action::WakeAt`] fired, or any periodic tick).
    Tick,
    /// The node's latest observations; replaces earlier ones per feed.
    Observations(Vec<LocalObservation>),
    /// A message from a peer. The sender is authenticated by the signature
    /// inside the message; `from` (the transport peer) is for diagnostics only,
    /// since signed reports may be relayed.
    Message { from: u16, bytes: Vec<u8> },
    /// The driver durably recorded "signed `digest` in `round`" in the signing
    /// ledger (exclusive transaction) after an [`Action::RecordSigning`].
    SigningRecorded { round: Round, digest: [u8; 32] },
    /// The ledger refused (it holds a different digest for this round or a later round).
    SigningRefused { round: Round, digest: [u8; 32] },
    /// The members the driver cannot reach now (no connection): replaces the
    /// previous set. A round whose leader is unreachable is skipped at once
    /// instead of waiting for `round_ms`, as long as this member reaches
    /// `2f + 1` members (itself included); an isolated member keeps the
    /// ordinary timeouts, so it never runs ahead of the committee.
    Unreachable(Vec<u16>),
    /// Rounds of signed reports the driver stored from elsewhere (catch-up):
    /// the leader schedule reads them ([`schedule`]).
    StoredReports(Vec<Round>),
}

/// What the node asks the driver to do, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Send to one member (FROST identifier `to`).
    Send { to: u16, bytes: Vec<u8> },
    /// Send to every other member.
    Broadcast { bytes: Vec<u8> },
    /// Persist "signing `digest` in `round`" in an exclusive transaction, then
    /// answer with [`Input::SigningRecorded`] (or [`Input::SigningRefused`]).
    RecordSigning { round: Round, digest: [u8; 32] },
    /// A report verified against the group key: store and use it.
    SignedReport(SignedReport),
    /// Provable misbehaviour; anyone can check it with [`Evidence::verify`].
    Blame(Evidence),
    /// Persist "observed in `round`" (e.g. next to the signing ledger) before
    /// performing the following actions; restore it as
    /// [`Restore::last_observed_round`]. A restarted member thus never sends
    /// a second, different observation for a round (which would be evidence
    /// against it).
    RecordObservation { round: Round },
    /// The node entered a round. `start_ms` is the round's observation
    /// instant: its slot on the committee's round grid (multiples of the round
    /// interval) when the round began on schedule, else the time it was
    /// entered (after a timeout or a jump). Latency is measured from it.
    RoundEntered {
        round: Round,
        leader: u16,
        start_ms: TimestampMs,
    },
    /// Call `handle(Tick)` at this time; supersedes earlier `WakeAt`s.
    WakeAt(TimestampMs),
}

/// The signing ledger's last entry: the node signed `digest` in `round`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SigningRecord {
    pub round: Round,
    #[serde(with = "hex::serde")]
    pub digest: [u8; 32],
}

/// Durable state a node restarts from.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Restore {
    /// Round to start in (e.g. last stored report's round + 1); the node
    /// starts at least at the ledger's round.
    pub round: Round,
    /// The signing ledger's last entry.
    pub last_signed: Option<SigningRecord>,
    /// Last signed value per feed (for the update decision).
    pub last_values: BTreeMap<FeedId, LastValue>,
    /// Round of the newest stored signed report.
    pub last_report_round: Option<Round>,
    /// The latest [`Action::RecordObservation`] persisted.
    pub last_observed_round: Option<Round>,
    /// Rounds of the stored reports in the leader schedule's horizon
    /// before `round` ([`schedule::LeaderSchedule::horizon`]).
    pub report_rounds: Vec<Round>,
    /// The oldest round the store knows about (its first report's round):
    /// the leader schedule counts older rounds as signed.
    pub history_from: Round,
}

/// A member's keys.
#[derive(Clone, Debug)]
pub struct NodeKeys<C: Ciphersuite> {
    /// The 32-byte ed25519 secret seed of the member's identity (libp2p) key.
    pub identity_seed: [u8; 32],
    pub key_package: KeyPackage<C>,
    pub public_key_package: PublicKeyPackage<C>,
}

/// Why a node cannot be built.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("member {0} is not in the committee")]
    NotAMember(u16),
    #[error(
        "the identity key does not match member {0}'s identity in the committee file; check the key file"
    )]
    IdentityMismatch(u16),
    #[error("the FROST key package belongs to another identifier than member {0}")]
    KeyPackageMismatch(u16),
    #[error("the FROST key package's group key differs from the public key package's")]
    GroupKeyMismatch,
    #[error("FROST error: {0}")]
    Frost(String),
}

/// Counters a driver can export as metrics.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Stats {
    pub rounds_entered: u64,
    pub rounds_timed_out: u64,
    pub round_jumps: u64,
    pub reports_accepted: u64,
    pub reports_led: u64,
    /// Messages for rounds already left (replays, late arrivals).
    pub stale_messages: u64,
    pub invalid_messages: u64,
    pub buffered_messages: u64,
    pub proposals_refused: u64,
    pub nonce_reuse_refused: u64,
    pub shares_sent: u64,
    pub invalid_shares: u64,
    pub signing_refused_by_ledger: u64,
    pub evidence: u64,
    pub attempts_started: u64,
    /// Attempts still incomplete after `share_ms` (another one started).
    pub attempts_timed_out: u64,
    /// Signed refusals this member sent as a signer, and received as leader.
    pub refusals_sent: u64,
    pub refusals_received: u64,
    /// Rounds in which this member observed without offering to sign
    /// (its clock was off and not yet corrected).
    pub observed_without_signing: u64,
    /// Rounds skipped at once because their leader was unreachable.
    pub rounds_skipped_unreachable: u64,
}

/// What this member saw of another member: the committee panel's figures.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct MemberStats {
    /// Signature shares received from it (as leader) that verified.
    pub shares_received: u64,
    /// Shares from it that did not verify (each one with evidence).
    pub invalid_shares: u64,
    /// Signed refusals received from it (as leader).
    pub refusals: u64,
    /// Attempts in which it was picked and stayed silent past `share_ms`.
    pub attempts_silent: u64,
    /// When its latest valid message arrived (the driver's clock).
    pub last_message_ms: Option<TimestampMs>,
    /// Its clock minus this member's corrected clock, from the timestamp of
    /// its latest proposal or refusal (includes the message's delay).
    pub clock_offset_ms: Option<i64>,
}

/// This member's view of the committee's clock. Samples are "this member's
/// raw clock minus the other member's timestamp" (the message delay
/// included), taken from proposals and refusals, which are stamped when
/// sent (a report's timestamp is older by the whole signing); the correction is their median, applied only when it is
/// robust (at least `2f + 1` samples, or `f + 1` that agree) and larger
/// than a quarter of `max_clock_skew_ms` (NTP-synced members never correct).
#[derive(Clone, Debug, Default)]
struct Clock {
    samples: BTreeMap<u16, i64>,
    /// Median of the samples when there are at least `f + 1`.
    estimate: Option<i64>,
    /// Applied correction: committee time = raw time - offset.
    offset: i64,
    /// The samples are not robust but `f + 1` of them say this clock is
    /// off by more than `max_clock_skew_ms`: observe without offering to sign.
    doubtful: bool,
}

impl Clock {
    fn recompute(&mut self, f: usize, max_skew_ms: u64) {
        let mut v: Vec<i64> = self.samples.values().copied().collect();
        v.sort_unstable();
        let k = v.len();
        let skew = i64::try_from(max_skew_ms).unwrap_or(i64::MAX);
        let deadband = skew / 4;
        self.estimate = (k > f && k > 0).then(|| v[(k - 1) / 2]);
        let robust = k > 2 * f || (k > f && v[k - 1].saturating_sub(v[0]) <= deadband);
        self.offset = match self.estimate {
            Some(m) if robust && m.abs() > deadband => m,
            _ => 0,
        };
        let ahead = v.iter().filter(|&&x| x > skew).count();
        let behind = v.iter().filter(|&&x| x < -skew).count();
        self.doubtful = self.offset == 0 && (ahead > f || behind > f);
    }
}

/// Simulator-only misbehaviour switches.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Faults {
    /// As leader, send two different proposals to different signers.
    pub equivocate: bool,
    /// As signer, return signature shares that do not verify.
    pub invalid_shares: bool,
    /// As signer, refuse every proposal (with a signed refusal).
    pub refuse: bool,
    /// Never correct the clock (a member whose clock is off and stays off).
    pub fixed_clock: bool,
}

struct Attributed {
    msg: ObservationMsg,
    bytes: Vec<u8>,
}

struct Attempt<C: Ciphersuite> {
    signers: BTreeSet<u16>,
    package: SigningPackage<C>,
    package_bytes: Vec<u8>,
    package_hash: [u8; 32],
    shares: BTreeMap<u16, (SignatureShare<C>, Vec<u8>)>,
    deadline: TimestampMs,
    /// Past its deadline: another attempt started, this one stays open.
    timed_out: bool,
}

struct LeaderRound<C: Ciphersuite> {
    header: ReportHeader,
    digest: [u8; 32],
    leaves: Vec<ReportLeaf>,
    /// The signed observations the leaves were computed from.
    observations: Vec<Vec<u8>>,
    /// Signed observations that arrived after the leaves were fixed: they
    /// only attribute their senders' commitments.
    late: BTreeMap<u16, Vec<u8>>,
    /// Each candidate signer's serialized commitments, one per attempt. They
    /// are parsed only for the signers an attempt picks: parsing checks that
    /// the points are in the prime-order subgroup (a scalar multiplication
    /// each), and most commitments are never used.
    signers_pool: BTreeMap<u16, Vec<Vec<u8>>>,
    /// Refused, sent an invalid share or unusable commitments: not picked
    /// again this round.
    excluded: BTreeSet<u16>,
    /// Open attempts by number.
    attempts: BTreeMap<usize, Attempt<C>>,
    next_attempt: usize,
}

/// FROST nonces and commitments made ahead of the round that uses them
/// ([`Node::precompute`]); they move into exactly one round's state.
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

struct PendingSign<C: Ciphersuite> {
    record: SigningRecord,
    attempt: usize,
    package: SigningPackage<C>,
    package_hash: [u8; 32],
}

struct RoundState<C: Ciphersuite> {
    entered_at: TimestampMs,
    deadline: TimestampMs,
    reported: bool,
    // member side
    observation_sent: bool,
    /// This member's observation of the round, as sent: when it comes back
    /// (looped back to itself as leader, or inside a proposal) its signature
    /// is not checked again.
    own_observation: Option<Vec<u8>>,
    nonces: Vec<Option<SigningNonces<C>>>,
    commitments: Vec<SigningCommitments<C>>,
    first_proposal: Option<([u8; 32], Vec<u8>)>,
    equivocation_blamed: bool,
    /// Merkle root and leaves of a proposal this member checked (recomputed
    /// itself) in this round: a report carrying exactly these needs no second
    /// Merkle computation.
    checked: Option<([u8; 32], Vec<ReportLeaf>)>,
    // leader side
    observations: BTreeMap<u16, Attributed>,
    /// First-attempt commitments of the observers, parsed as their
    /// observations arrived (while the leader waits for the quorum) rather
    /// than all at once when it proposes; `None`: they do not parse.
    first_commitments: BTreeMap<u16, Option<SigningCommitments<C>>>,
    conflict_blamed: BTreeSet<u16>,
    leader: Option<LeaderRound<C>>,
    /// Attempts this member refused (one refusal each).
    refused: BTreeSet<u8>,
    /// In a run of skipped rounds: when members that did not skip them
    /// would leave the last one (see `check_timers`).
    carry: TimestampMs,
}

impl<C: Ciphersuite> RoundState<C> {
    fn new(entered_at: TimestampMs, deadline: TimestampMs) -> Self {
        Self {
            entered_at,
            deadline,
            reported: false,
            observation_sent: false,
            own_observation: None,
            nonces: Vec::new(),
            commitments: Vec::new(),
            first_proposal: None,
            equivocation_blamed: false,
            checked: None,
            observations: BTreeMap::new(),
            first_commitments: BTreeMap::new(),
            conflict_blamed: BTreeSet::new(),
            leader: None,
            refused: BTreeSet::new(),
            carry: 0,
        }
    }
}

/// One committee member's round state machine. See the module docs.
pub struct Node<C: SibylSuite> {
    committee: Arc<Committee>,
    me: u16,
    identity: SigningKey,
    key_package: KeyPackage<C>,
    pubkeys: PublicKeyPackage<C>,
    ids: BTreeMap<Identifier<C>, u16>,
    ledger: Option<SigningRecord>,
    /// Signings waiting for the ledger's answer (one record, several attempts).
    pending: Vec<PendingSign<C>>,
    last_values: BTreeMap<FeedId, LastValue>,
    last_report_round: Option<Round>,
    last_observed_round: Option<Round>,
    local: BTreeMap<FeedId, LocalObservation>,
    start_round: Round,
    started: bool,
    round: Round,
    rs: RoundState<C>,
    next_round_at: Option<(Round, TimestampMs)>,
    future: BTreeMap<Round, Vec<SignedMessage>>,
    highest_seen: BTreeMap<u16, Round>,
    stats: Stats,
    pub(crate) faults: Faults,
    out: Vec<Action>,
    loopback: VecDeque<Vec<u8>>,
    last_wake: Option<TimestampMs>,
    /// Nonces for the next observation, made in idle time.
    spare: Option<Prepared<C>>,
    /// Each member's announced next commitments, parsed ahead
    /// ([`Node::warm_commitments`]).
    warm: BTreeMap<u16, (Vec<u8>, SigningCommitments<C>)>,
    /// The driver's clock at the current `handle` call.
    raw_now: TimestampMs,
    clock: Clock,
    /// Signer ranking penalties, remembered across rounds.
    penalty: BTreeMap<u16, u32>,
    /// Rounds this member proposed in (paces the forgiveness).
    rounds_led_total: u64,
    member_stats: BTreeMap<u16, MemberStats>,
    /// Members the driver cannot reach ([`Input::Unreachable`]).
    unreachable: BTreeSet<u16>,
    /// Which rounds have reports, for the leader schedule.
    schedule: schedule::LeaderSchedule,
}

/// Result of checking a proposal as a signer.
type Refusal = RefusalReason;

/// A serialized `SigningPackage` taken apart without parsing a point: frost
/// writes header ‖ varint(k) ‖ k × (identifier ‖ serialized commitments) ‖
/// varint(message length) ‖ message, the identifiers ascending.
struct PackageParts<'a> {
    signers: Vec<(&'a [u8], &'a [u8])>,
    message: &'a [u8],
}

/// Splits `bytes` as [`PackageParts`], each commitment `commitment_len`
/// bytes long; `None` unless the bytes are exactly that framing with frost's
/// header for `C` (so the package frost would write for these parts).
fn split_package<C: Ciphersuite>(bytes: &[u8], commitment_len: usize) -> Option<PackageParts<'_>> {
    // The header: what frost writes before an empty package's two lengths.
    let empty = SigningPackage::<C>::new(BTreeMap::new(), &[])
        .serialize()
        .ok()?;
    let header = empty.get(..empty.len().checked_sub(2)?)?;
    let id_len = Identifier::<C>::try_from(1u16).ok()?.serialize().len();
    let mut rest = bytes.strip_prefix(header)?;
    let k = read_varint(&mut rest)?;
    let entry = id_len + commitment_len;
    if rest.len() < k.checked_mul(entry)? {
        return None;
    }
    let mut signers = Vec::with_capacity(k);
    for _ in 0..k {
        let (e, tail) = rest.split_at(entry);
        signers.push(e.split_at(id_len));
        rest = tail;
    }
    let len = read_varint(&mut rest)?;
    (rest.len() == len).then_some(PackageParts {
        signers,
        message: rest,
    })
}

/// A postcard (LEB128) length, canonical and at most `u32`.
fn read_varint(bytes: &mut &[u8]) -> Option<usize> {
    let mut value: u64 = 0;
    for i in 0..5 {
        let (&b, rest) = bytes.split_first()?;
        *bytes = rest;
        value |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            if i > 0 && b == 0 {
                return None; // a longer encoding than needed
            }
            return usize::try_from(u32::try_from(value).ok()?).ok();
        }
    }
    None
}

/// The signature the shares add up to, if it verifies under the group key
/// ([`SibylSuite::verify_signature_bytes`]): what `frost::aggregate` returns
/// when every share is good (neither ciphersuite changes its aggregation
/// hooks). `None` otherwise, and the caller lets frost find the cheaters.
fn aggregate_verified<C: SibylSuite>(
    package: &SigningPackage<C>,
    shares: &BTreeMap<Identifier<C>, SignatureShare<C>>,
    pubkeys: &PublicKeyPackage<C>,
) -> Option<frost::Signature<C>> {
    if !package.signing_commitments().keys().eq(shares.keys()) {
        return None;
    }
    let factors = frost::compute_binding_factor_list(package, pubkeys.verifying_key(), &[]).ok()?;
    let r = frost::compute_group_commitment(package, &factors).ok()?;
    type F<C> = <<C as Ciphersuite>::Group as frost::Group>::Field;
    let mut z = <F<C> as frost::Field>::zero();
    for share in shares.values() {
        // A share is its scalar's serialization.
        let mut buf = <F<C> as frost::Field>::serialize(&z);
        let bytes = share.serialize();
        if buf.as_ref().len() != bytes.len() {
            return None;
        }
        buf.as_mut().copy_from_slice(&bytes);
        z = z + <F<C> as frost::Field>::deserialize(&buf).ok()?;
    }
    let sig = frost::Signature::new(r.to_element(), z);
    let bytes = sig.serialize().ok()?;
    C::verify_signature_bytes(pubkeys.verifying_key(), package.message(), &bytes).then_some(sig)
}

fn keccak(bytes: &[u8]) -> [u8; 32] {
    use sha3::{Digest, Keccak256};
    Keccak256::digest(bytes).into()
}

/// The first slot of the round grid (the multiples of `interval_ms` since
/// the Unix epoch) at or after `at`. Members that schedule their next round on
/// this grid enter it, and observe, at the same instant, whatever their
/// offsets in the round before: the leader then gets every observation at
/// once instead of waiting for the latest member.
pub fn next_slot(at: TimestampMs, interval_ms: u64) -> TimestampMs {
    let interval = interval_ms.max(1);
    match at % interval {
        0 => at,
        rem => at.saturating_add(interval - rem),
    }
}

/// Merkle root over the leaves (ascending feed order).
pub fn merkle_root(leaves: &[ReportLeaf]) -> [u8; 32] {
    crate::merkle::root(leaves)
}

/// The digest FROST signs: the domain-separated hash of the header.
pub fn report_digest(header: &ReportHeader) -> [u8; 32] {
    crate::digest::header_digest(header)
}

/// Computes the leaves of `feeds` from attributed observations at report time
/// `timestamp_ms`. Observations of a feed outside the freshness window are left
/// out; a feed with fewer than `2f + 1` remaining observations yields `None`.
/// Deterministic: leader and members call exactly this.
pub fn compute_leaves<'a>(
    committee: &Committee,
    timestamp_ms: TimestampMs,
    attributed: &[&ObservationMsg],
    feeds: impl Iterator<Item = &'a FeedId>,
) -> Vec<(FeedId, Option<ReportLeaf>)> {
    let t = committee.timeouts();
    let newest = timestamp_ms.saturating_add(t.max_clock_skew_ms);
    let oldest = timestamp_ms.saturating_sub(t.max_observation_age_ms);
    let mut gathered: Vec<FeedObservation> = Vec::with_capacity(attributed.len());
    // Entries are strictly ascending and feeds normally come ascending too:
    // walk one cursor per observation instead of a binary search per feed.
    let mut cursors = vec![0usize; attributed.len()];
    let mut prev: Option<&FeedId> = None;
    feeds
        .map(|feed| {
            gathered.clear();
            if prev.is_some_and(|p| p >= feed) {
                // Not ascending: start over (still correct, just slower).
                cursors.iter_mut().for_each(|c| *c = 0);
            }
            prev = Some(feed);
            for (obs, cursor) in attributed.iter().zip(cursors.iter_mut()) {
                while obs.entries.get(*cursor).is_some_and(|e| e.feed < *feed) {
                    *cursor += 1;
                }
                if let Some(e) = obs.entries.get(*cursor).filter(|e| e.feed == *feed)
                    && e.observed_at_ms >= oldest
                    && e.observed_at_ms <= newest
                {
                    gathered.push(FeedObservation {
                        price: e.price,
                        spread: e.spread,
                        observed_at_ms: e.observed_at_ms,
                    });
                }
            }
            let leaf = aggregate_feed(feed, &gathered, committee.quorum()).ok();
            (feed.clone(), leaf)
        })
        .collect()
}

/// `t + delta`, saturating at 0 and `u64::MAX`.
fn shift(t: TimestampMs, delta: i64) -> TimestampMs {
    if delta >= 0 {
        t.saturating_add(delta.unsigned_abs())
    } else {
        t.saturating_sub(delta.unsigned_abs())
    }
}

fn committee_members_except(committee: &Committee, me: u16) -> BTreeMap<u16, MemberStats> {
    committee
        .members()
        .iter()
        .filter(|m| m.index != me)
        .map(|m| (m.index, MemberStats::default()))
        .collect()
}

impl<C: SibylSuite> Node<C> {
    /// Builds member `me`'s state machine. `restore` comes from the node's
    /// store: the signing ledger and the last signed values.
    pub fn new(
        committee: Arc<Committee>,
        me: u16,
        keys: NodeKeys<C>,
        restore: Restore,
    ) -> Result<Self, NodeError> {
        let member_key = committee.identity(me).ok_or(NodeError::NotAMember(me))?;
        let identity = SigningKey::from_bytes(&keys.identity_seed);
        if identity.verifying_key() != *member_key {
            return Err(NodeError::IdentityMismatch(me));
        }
        let my_id = Identifier::<C>::try_from(me).map_err(|e| NodeError::Frost(e.to_string()))?;
        if *keys.key_package.identifier() != my_id {
            return Err(NodeError::KeyPackageMismatch(me));
        }
        if keys.key_package.verifying_key() != keys.public_key_package.verifying_key() {
            return Err(NodeError::GroupKeyMismatch);
        }
        let mut ids = BTreeMap::new();
        for m in committee.members() {
            let id =
                Identifier::<C>::try_from(m.index).map_err(|e| NodeError::Frost(e.to_string()))?;
            ids.insert(id, m.index);
        }
        let start_round = restore
            .round
            .max(restore.last_signed.map_or(0, |r| r.round));
        Ok(Self {
            me,
            identity,
            key_package: keys.key_package,
            pubkeys: keys.public_key_package,
            ids,
            ledger: restore.last_signed,
            pending: Vec::new(),
            last_values: restore.last_values,
            last_report_round: restore.last_report_round,
            last_observed_round: restore.last_observed_round,
            local: BTreeMap::new(),
            start_round,
            started: false,
            round: start_round,
            rs: RoundState::new(0, 0),
            next_round_at: None,
            future: BTreeMap::new(),
            highest_seen: BTreeMap::new(),
            stats: Stats::default(),
            faults: Faults::default(),
            out: Vec::new(),
            loopback: VecDeque::new(),
            last_wake: None,
            spare: None,
            warm: BTreeMap::new(),
            raw_now: 0,
            clock: Clock::default(),
            penalty: BTreeMap::new(),
            rounds_led_total: 0,
            member_stats: committee_members_except(&committee, me),
            unreachable: BTreeSet::new(),
            schedule: schedule::LeaderSchedule::new(restore.history_from, restore.report_rounds),
            committee,
        })
    }

    /// The member's FROST identifier / committee index.
    pub fn index(&self) -> u16 {
        self.me
    }
    /// The round the node is in.
    pub fn round(&self) -> Round {
        self.round
    }
    pub fn committee(&self) -> &Arc<Committee> {
        &self.committee
    }
    /// The leader of `round` by this member's view of the signed history
    /// (see [`schedule`]): the base rotation, with members whose rounds went
    /// unsigned replaced for a while.
    pub fn leader_of(&self, round: Round) -> u16 {
        self.schedule.leader(&self.committee, round)
    }
    pub fn stats(&self) -> &Stats {
        &self.stats
    }
    /// The signing ledger as the node knows it.
    pub fn last_signed(&self) -> Option<SigningRecord> {
        self.ledger
    }
    /// Last signed value per feed.
    pub fn last_values(&self) -> &BTreeMap<FeedId, LastValue> {
        &self.last_values
    }
    pub fn public_key_package(&self) -> &PublicKeyPackage<C> {
        &self.pubkeys
    }
    /// What this member saw of each other member.
    pub fn member_stats(&self) -> &BTreeMap<u16, MemberStats> {
        &self.member_stats
    }
    /// This member's clock minus the committee's, estimated from the other
    /// members' proposal and refusal timestamps (message delay included);
    /// `None` until `f + 1` members were heard from.
    pub fn clock_offset_ms(&self) -> Option<i64> {
        self.clock.estimate
    }
    /// The correction the protocol applies to the driver's clock (0 unless
    /// the estimate is robust and beyond a quarter of `max_clock_skew_ms`).
    pub fn clock_correction_ms(&self) -> i64 {
        self.clock.offset
    }
    /// Whether this member currently observes without offering to sign
    /// (its clock looks off by more than `max_clock_skew_ms` and cannot be
    /// corrected yet).
    pub fn clock_doubtful(&self) -> bool {
        self.clock.doubtful
    }
    /// Test-only misbehaviour (cargo feature `fault-injection`, for the fault
    /// tests and benchmarks with real processes): send signature shares that
    /// do not verify, or refuse every proposal with a signed refusal.
    #[cfg(feature = "fault-injection")]
    pub fn inject_faults(&mut self, invalid_shares: bool, refuse: bool) {
        self.faults.invalid_shares = invalid_shares;
        self.faults.refuse = refuse;
    }

    /// The driver's time as committee time.
    fn committee_time(&self, raw: TimestampMs) -> TimestampMs {
        shift(raw, -self.clock.offset)
    }
    /// Committee time as the driver's time.
    fn local_time(&self, t: TimestampMs) -> TimestampMs {
        shift(t, self.clock.offset)
    }

    /// A clock sample: member `from` stamped `remote_ms` (committee time as it
    /// sees it) on a message that arrived now.
    fn clock_sample(&mut self, from: u16, remote_ms: TimestampMs) {
        if from == self.me || self.faults.fixed_clock {
            return;
        }
        let raw = i64::try_from(self.raw_now).unwrap_or(i64::MAX);
        let remote = i64::try_from(remote_ms).unwrap_or(i64::MAX);
        self.clock.samples.insert(from, raw.saturating_sub(remote));
        self.clock.recompute(
            usize::from(self.committee.f()),
            self.committee.timeouts().max_clock_skew_ms,
        );
        let mine = raw.saturating_sub(self.clock.offset);
        if let Some(m) = self.member_stats.get_mut(&from) {
            m.clock_offset_ms = Some(remote.saturating_sub(mine));
        }
    }

    fn penalize(&mut self, member: u16, by: u32) {
        let p = self.penalty.entry(member).or_insert(0);
        *p = (*p + by).min(PENALTY_CAP);
    }

    fn member(&mut self, index: u16) -> Option<&mut MemberStats> {
        self.member_stats.get_mut(&index)
    }

    /// Idle-time work: makes the FROST nonces and commitments of the next
    /// observation now, so entering the next round does not wait for them.
    /// Each set is used in exactly one round (it moves into that round's
    /// state, where a nonce is erased when it signs), never serialized, and
    /// dropped with the node. Calling it again before they are used is a no-op.
    pub fn precompute<R: RngCore + CryptoRng>(&mut self, rng: &mut R) {
        if self.spare.is_none() {
            self.spare = Prepared::generate(&self.key_package, self.committee.attempts(), rng);
        }
    }

    /// The first-attempt commitments (serialized) of the nonces made ahead
    /// ([`Node::precompute`]): what this member's next observation will
    /// announce, for the other members to [`Node::warm_commitments`].
    pub fn next_commitments(&self) -> Option<&[u8]> {
        self.spare
            .as_ref()
            .and_then(|p| p.commitment_bytes.first())
            .map(Vec::as_slice)
    }

    /// Parses member `from`'s announced next commitments now, off the
    /// round's critical path, and keeps them (one set per member, the
    /// latest). Parsing is a pure function of the bytes: a proposal or
    /// observation later uses the kept parse only for byte-for-byte the same
    /// commitments, inside a signed observation, so a wrong or stale hint
    /// only costs the parse it would have saved. Returns whether they parsed.
    pub fn warm_commitments(&mut self, from: u16, bytes: &[u8]) -> bool {
        if from == self.me || self.committee.identity(from).is_none() {
            return false;
        }
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
    fn parse_commitments_of(&self, from: u16, bytes: &[u8]) -> Option<SigningCommitments<C>> {
        match self.warm.get(&from) {
            Some((b, c)) if b.as_slice() == bytes => Some(*c),
            _ => C::parse_commitments(bytes),
        }
    }

    /// Feeds one input at time `now_ms`; returns the actions to perform in order.
    pub fn handle<R: RngCore + CryptoRng>(
        &mut self,
        now_ms: TimestampMs,
        input: Input,
        rng: &mut R,
    ) -> Vec<Action> {
        self.raw_now = now_ms;
        let now_ms = self.committee_time(now_ms);
        if !self.started {
            self.started = true;
            self.enter_round(now_ms, now_ms, self.start_round.max(self.round), rng);
        }
        match input {
            Input::Tick => {}
            Input::Observations(list) => {
                for mut o in list {
                    if self.committee.feeds().contains_key(&o.feed) {
                        o.observed_at_ms = self.committee_time(o.observed_at_ms);
                        self.local.insert(o.feed.clone(), o);
                    }
                }
                self.send_observation(now_ms, rng);
            }
            Input::Message { from: _, bytes } => self.on_bytes(now_ms, &bytes, rng),
            Input::SigningRecorded { round, digest } => {
                self.on_recorded(now_ms, SigningRecord { round, digest }, rng)
            }
            Input::SigningRefused { round, digest } => {
                let record = SigningRecord { round, digest };
                let refused: Vec<PendingSign<C>> = self
                    .pending
                    .extract_if(.., |p| p.record == record)
                    .collect();
                for p in refused {
                    self.refuse(now_ms, round, p.attempt, digest, RefusalReason::Ledger);
                }
                self.stats.signing_refused_by_ledger += 1;
            }
            Input::Unreachable(list) => {
                self.unreachable = list
                    .into_iter()
                    .filter(|m| *m != self.me && self.committee.is_member(*m))
                    .collect();
                if self.leader_unreachable(self.round) && !self.rs.reported {
                    self.rs.deadline = self.rs.deadline.min(now_ms);
                }
            }
            Input::StoredReports(rounds) => {
                for r in rounds {
                    self.schedule.note_report(r);
                }
            }
        }
        self.check_timers(now_ms, rng);
        self.drain_loopback(now_ms, rng);
        if let Some(at) = self.next_wake(now_ms) {
            let at = self.local_time(at);
            if self.last_wake != Some(at) {
                self.last_wake = Some(at);
                self.out.push(Action::WakeAt(at));
            }
        }
        std::mem::take(&mut self.out)
    }

    fn drain_loopback<R: RngCore + CryptoRng>(&mut self, now: TimestampMs, rng: &mut R) {
        // Messages to self; processing may queue more (bounded by the protocol).
        let mut budget = 64;
        while let Some(bytes) = self.loopback.pop_front() {
            self.on_bytes(now, &bytes, rng);
            self.check_timers(now, rng);
            budget -= 1;
            if budget == 0 {
                break;
            }
        }
    }

    fn next_wake(&self, now: TimestampMs) -> Option<TimestampMs> {
        let mut times = Vec::new();
        if let Some((_, at)) = self.next_round_at {
            times.push(at);
        }
        if !self.rs.reported {
            times.push(self.rs.deadline);
        }
        if self.leader_of(self.round) == self.me && !self.rs.reported {
            match &self.rs.leader {
                None => {
                    times.push(self.rs.entered_at + self.committee.timeouts().observe_ms);
                    times.push(self.patience_deadline());
                }
                Some(l) => times.extend(
                    l.attempts
                        .values()
                        .filter(|a| !a.timed_out)
                        .map(|a| a.deadline),
                ),
            }
        }
        times.into_iter().filter(|&t| t > now).min()
    }

    fn send(&mut self, to: u16, bytes: Vec<u8>) {
        if to == self.me {
            self.loopback.push_back(bytes);
        } else {
            self.out.push(Action::Send { to, bytes });
        }
    }

    fn sign_msg(&self, round: Round, payload: Payload) -> SignedMessage {
        SignedMessage::sign(
            &self.identity,
            self.committee.config_digest(),
            round,
            self.me,
            payload,
        )
    }

    fn blame(&mut self, evidence: Evidence) {
        self.stats.evidence += 1;
        self.out.push(Action::Blame(evidence));
    }

    // ---------------------------------------------------------------- rounds

    /// Enters `round` at `now`; `start` is its scheduled slot (`<= now`) or `now`.
    fn enter_round<R: RngCore + CryptoRng>(
        &mut self,
        now: TimestampMs,
        start: TimestampMs,
        round: Round,
        rng: &mut R,
    ) {
        let start = start.min(now);
        self.round = round;
        self.next_round_at = None;
        let deadline = if self.leader_unreachable(round) {
            start
        } else {
            start + self.committee.round_ms()
        };
        self.rs = RoundState::new(start, deadline);
        self.stats.rounds_entered += 1;
        self.schedule.prune(&self.committee, round);
        self.out.push(Action::RoundEntered {
            round,
            leader: self.leader_of(round),
            start_ms: self.local_time(start),
        });
        // Signing state of older rounds is useless now; its nonces are gone with `rs`.
        self.pending.retain(|p| p.record.round >= round);
        self.send_observation(now, rng);
        // Drop buffered messages of rounds left behind, replay this round's.
        let keep = self.future.split_off(&round);
        self.future = keep;
        if let Some(msgs) = self.future.remove(&round) {
            for m in msgs {
                self.dispatch(now, m, Vec::new(), rng);
                if self.round != round {
                    break;
                }
            }
        }
    }

    fn check_timers<R: RngCore + CryptoRng>(&mut self, now: TimestampMs, rng: &mut R) {
        if let Some((r, at)) = self.next_round_at
            && now >= at
        {
            self.enter_round(now, at, r, rng);
        }
        if self.rs.reported {
            return;
        }
        if self.leader_of(self.round) == self.me {
            if self.rs.leader.is_none() {
                self.try_propose(now, rng);
            } else {
                self.on_attempt_deadlines(now);
            }
        }
        // Rounds whose leader is unreachable end at once (see
        // `enter_round`); bounded by the committee size.
        let round_ms = self.committee.round_ms();
        let mut steps = 0;
        while now >= self.rs.deadline && !self.rs.reported && steps <= self.committee.n() {
            steps += 1;
            // A member that skips a round may be alone in seeing its leader
            // gone: the others leave that round only at its ordinary
            // deadline. The next round this member plays therefore lasts
            // until a round after that, so it meets them there instead of
            // running ahead of them.
            let carry = if self.leader_unreachable(self.round) {
                self.stats.rounds_skipped_unreachable += 1;
                Some(self.rs.carry.max(self.rs.entered_at + round_ms))
            } else {
                self.stats.rounds_timed_out += 1;
                None
            };
            self.enter_round(now, now, self.round + 1, rng);
            if let Some(carry) = carry {
                if self.leader_unreachable(self.round) {
                    self.rs.carry = carry + round_ms;
                } else {
                    self.rs.deadline = self.rs.deadline.max(carry + round_ms);
                }
            }
        }
    }

    /// Whether `round`'s leader is another member this one cannot reach,
    /// while it reaches `2f + 1` members (itself included): then the round
    /// cannot be signed and is skipped. An isolated member skips nothing.
    fn leader_unreachable(&self, round: Round) -> bool {
        let leader = self.leader_of(round);
        leader != self.me
            && self.unreachable.contains(&leader)
            && self.committee.n() - self.unreachable.len() >= self.committee.quorum()
    }

    /// Round synchronisation: `f + 1` members (one of them honest) at a higher
    /// round means the committee moved on.
    fn note_round<R: RngCore + CryptoRng>(
        &mut self,
        now: TimestampMs,
        sender: u16,
        round: Round,
        rng: &mut R,
    ) {
        if sender == self.me {
            return;
        }
        let e = self.highest_seen.entry(sender).or_insert(0);
        *e = (*e).max(round);
        let mut seen: Vec<Round> = self.highest_seen.values().copied().collect();
        let f = usize::from(self.committee.f());
        if seen.len() <= f {
            return;
        }
        seen.sort_unstable_by(|a, b| b.cmp(a));
        let target = seen[f];
        let pending_round = self.next_round_at.map_or(self.round, |(r, _)| r);
        if target > self.round && target > pending_round {
            self.stats.round_jumps += 1;
            self.enter_round(now, now, target, rng);
        }
    }

    fn on_bytes<R: RngCore + CryptoRng>(&mut self, now: TimestampMs, bytes: &[u8], rng: &mut R) {
        let decoded = if self.rs.own_observation.as_deref() == Some(bytes) {
            SignedMessage::decode_own(bytes, &self.committee).map(|m| (m, Vec::new()))
        } else {
            SignedMessage::decode_hashed(bytes, &self.committee, None)
        };
        let (msg, hashes) = match decoded {
            Ok(m) => m,
            Err(_) => {
                self.stats.invalid_messages += 1;
                return;
            }
        };
        let raw = self.raw_now;
        if let Some(m) = self.member(msg.sender) {
            m.last_message_ms = Some(raw);
        }
        self.note_round(now, msg.sender, msg.round, rng);
        self.dispatch(now, msg, hashes, rng);
    }

    /// `hashes`: for a proposal, the content hashes of its attributed
    /// observations from decoding it (empty if unknown).
    fn dispatch<R: RngCore + CryptoRng>(
        &mut self,
        now: TimestampMs,
        msg: SignedMessage,
        hashes: Vec<[u8; 64]>,
        rng: &mut R,
    ) {
        if let Payload::Report(_) = msg.payload {
            self.on_report(now, msg);
            return;
        }
        if msg.round < self.round {
            self.stats.stale_messages += 1;
            return;
        }
        if msg.round > self.round {
            if msg.round - self.round > FUTURE_WINDOW {
                self.stats.stale_messages += 1;
                return;
            }
            let n = self.committee.n();
            let slot = self.future.entry(msg.round).or_default();
            if slot.len() < 4 * n {
                self.stats.buffered_messages += 1;
                slot.push(msg);
            }
            return;
        }
        match msg.payload.kind() {
            Kind::Observation => self.on_observation(now, msg, rng),
            Kind::Proposal => self.on_proposal(now, msg, &hashes),
            Kind::Share => self.on_share(now, msg, rng),
            Kind::Refusal => self.on_refusal(now, msg),
            Kind::Report => {}
        }
    }

    // ---------------------------------------------------------- member side

    fn send_observation<R: RngCore + CryptoRng>(&mut self, now: TimestampMs, rng: &mut R) {
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
            .map(|o| ObservationEntry {
                feed: o.feed.clone(),
                price: o.price,
                spread: o.spread,
                observed_at_ms: o.observed_at_ms,
            })
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

    fn on_proposal(&mut self, now: TimestampMs, msg: SignedMessage, hashes: &[[u8; 64]]) {
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
        self.clock_sample(sender, p.timestamp_ms);
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
        let checked = if self.faults.refuse {
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
        if self.rs.checked.is_none() {
            self.rs.checked = Some((header.merkle_root, leaves));
        }
        let record = SigningRecord { round, digest };
        let package_hash = keccak(&p.signing_package);
        self.prepare_signing(now, record, usize::from(p.attempt), package, package_hash);
    }

    /// Tells the round's leader, signed, that this member will not sign
    /// `attempt` and why, so it moves on at once (once per attempt).
    fn refuse(
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
    fn prepare_signing(
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
            self.sign_share(pending);
        } else {
            // One ledger write per record: later attempts wait for its answer.
            let first = self.pending.is_empty();
            self.pending.push(pending);
            if first {
                self.out.push(Action::RecordSigning { round, digest });
            }
        }
    }

    fn check_proposal(
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
    fn attributed(
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
    fn check_package(
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

    fn on_recorded<R: RngCore + CryptoRng>(
        &mut self,
        _now: TimestampMs,
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
            self.sign_share(pending);
        }
    }

    fn sign_share(&mut self, pending: PendingSign<C>) {
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
        let share = if self.faults.invalid_shares {
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
        let msg = self.sign_msg(
            pending.record.round,
            Payload::Share(ShareMsg {
                attempt: pending.attempt as u8,
                report_digest: pending.record.digest,
                package_hash: pending.package_hash,
                share: share.serialize(),
            }),
        );
        self.stats.shares_sent += 1;
        let leader = self.leader_of(pending.record.round);
        self.send(leader, msg.bytes);
    }

    fn on_report(&mut self, now: TimestampMs, msg: SignedMessage) {
        let Payload::Report(report) = msg.payload else {
            return;
        };
        if self
            .last_report_round
            .is_some_and(|r| report.header.round <= r)
        {
            self.stats.stale_messages += 1;
            return;
        }
        // A report of this round over exactly the leaves and root this member
        // recomputed and checked itself needs no second Merkle computation;
        // the group signature is checked either way.
        let checked = report.header.round == self.round
            && self.rs.checked.as_ref().is_some_and(|(root, leaves)| {
                *root == report.header.merkle_root && *leaves == report.leaves
            });
        let valid = if checked {
            self.verify_report_signature(&report)
        } else {
            self.verify_report(&report)
        };
        if !valid {
            self.stats.invalid_messages += 1;
            return;
        }
        self.accept_report(now, report);
    }

    /// Checks a signed report against the group key and its own leaves. The
    /// header's signature comes first: a forged report costs one signature
    /// check, not a Merkle tree over its leaves.
    pub fn verify_report(&self, report: &SignedReport) -> bool {
        if report.leaves.len() > self.committee.feeds().len() {
            return false;
        }
        self.verify_report_signature(report)
            && merkle_root(&report.leaves) == report.header.merkle_root
    }

    /// Version, config digest and group signature of a report, without the
    /// Merkle root (which the caller has established).
    fn verify_report_signature(&self, report: &SignedReport) -> bool {
        if report.header.version != PROTOCOL_VERSION
            || report.header.config_digest != *self.committee.config_digest()
            || report.leaves.is_empty()
        {
            return false;
        }
        let Some(sig) = report.signatures.get(&C::SUITE) else {
            return false;
        };
        C::verify_signature_bytes(
            self.pubkeys.verifying_key(),
            &report_digest(&report.header),
            &sig.0,
        )
    }

    fn accept_report(&mut self, now: TimestampMs, report: SignedReport) {
        let round = report.header.round;
        self.last_report_round = Some(round);
        self.schedule.note_report(round);
        for leaf in &report.leaves {
            self.last_values.insert(
                leaf.feed_id.clone(),
                LastValue {
                    price: leaf.price,
                    reported_at_ms: report.header.timestamp_ms,
                },
            );
        }
        self.stats.reports_accepted += 1;
        self.out.push(Action::SignedReport(report));
        if round >= self.round {
            let pending_round = self.next_round_at.map_or(0, |(r, _)| r);
            if round + 1 > pending_round {
                let at = if round == self.round {
                    self.rs.reported = true;
                    // The first slot after this round's start: one round
                    // per slot, and a round that began off the grid (after
                    // a timeout or a jump) brings the member back onto it.
                    next_slot(
                        now.max(self.rs.entered_at) + 1,
                        self.committee.timeouts().round_interval_ms,
                    )
                } else {
                    now
                };
                self.next_round_at = Some((round + 1, at));
            }
        }
    }

    // ---------------------------------------------------------- leader side

    fn on_observation<R: RngCore + CryptoRng>(
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

    fn try_propose<R: RngCore + CryptoRng>(&mut self, now: TimestampMs, _rng: &mut R) {
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
        let obs: Vec<&ObservationMsg> = self.rs.observations.values().map(|a| &a.msg).collect();
        let computed = compute_leaves(&self.committee, now, &obs, self.committee.feeds().keys());
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
    fn patience_deadline(&self) -> TimestampMs {
        let t = self.committee.timeouts();
        self.rs.entered_at + t.observe_ms + t.share_ms / 2
    }

    /// Whether an attempt is open and not yet past its deadline.
    fn live_attempt(&self) -> bool {
        self.rs
            .leader
            .as_ref()
            .is_some_and(|l| l.attempts.values().any(|a| !a.timed_out))
    }

    /// Starts the next signing attempt with `t` of the candidate signers:
    /// not excluded this round, ranked by (silent in an open attempt,
    /// remembered penalty, distance after the leader). Returns whether one
    /// started (not when the attempts are used up or too few candidates remain).
    fn start_attempt(&mut self, now: TimestampMs) -> bool {
        let t = usize::from(self.committee.t());
        let attempts = self.committee.attempts();
        let me = self.me;
        let equivocate = self.faults.equivocate;
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
    fn on_attempt_deadlines(&mut self, now: TimestampMs) {
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

    fn invalid_share(&mut self, member: u16, evidence: Evidence) {
        self.stats.invalid_shares += 1;
        if let Some(m) = self.member(member) {
            m.invalid_shares += 1;
        }
        self.penalize(member, PENALTY_INVALID);
        self.blame(evidence);
    }

    fn on_share<R: RngCore + CryptoRng>(
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
            self.stats.stale_messages += 1;
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
    fn on_refusal(&mut self, now: TimestampMs, msg: SignedMessage) {
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

    fn invalid_share_evidence(&self, share_msg: &[u8], package_bytes: &[u8]) -> Evidence {
        Evidence::InvalidShare {
            suite: C::SUITE,
            share: share_msg.to_vec(),
            signing_package: package_bytes.to_vec(),
            public_key_package: self.pubkeys.serialize().unwrap_or_default(),
        }
    }

    fn finish_attempt(&mut self, now: TimestampMs, number: usize) {
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
                let Ok(sig_bytes) = sig.serialize() else {
                    return;
                };
                let report = SignedReport {
                    header: l.header.clone(),
                    leaves: l.leaves.clone(),
                    signatures: BTreeMap::from([(C::SUITE, SignatureBytes(sig_bytes))]),
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
fn share_valid<C: Ciphersuite>(
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
