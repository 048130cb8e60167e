//! The round protocol of DESIGN.md as a sans-io state machine.
//!
//! ```text
//!            Input                                   Action
//!  Tick ─────────────┐                        ┌──► Send{to, bytes} / Broadcast{bytes}
//!  Observations ─────┤      ┌────────────┐    ├──► RecordSigning{round, digest}
//!  Message{bytes} ───┼────► │    Node    │ ───┼──► SignedReport(report)
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
//!    the attributed signed observations and the FROST signing package (and
//!    every other member a copy without the observations).
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
//!    faulty member is picked last. Proposals go to every member (the
//!    non-signers get a copy without the observations) and shares to every
//!    member, so each member assembles the report itself
//!    (`follow.rs`); the leader's signed report is still broadcast as the
//!    fallback. Members verify either against the group key before
//!    accepting it.
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

mod accept;
mod clock;
pub mod committee;
pub mod evidence;
mod follow;
mod frost_internals;
mod lane;
mod leader;
mod member;
pub mod message;
mod offers;
mod pacemaker;
pub mod schedule;
mod suite;
#[cfg(test)]
mod tests;

use crate::aggregate::{
    FeedObservation, LastValue, LeafContext, aggregate_feed, note_signed_leaf, update_due,
};
use crate::digest::margin_root;
use crate::report::{
    FeedId, MAX_ATTESTED_ROOTS, MAX_COMMAND_BYTES, MAX_COMMANDS_PER_MEMBER, MarginCheckpoint,
    MarginCommand, PROTOCOL_VERSION, Price, ReportHeader, ReportLeaf, Round, SignatureBytes,
    SignedReport, Suite, TimestampMs,
};
use crate::round::evidence::Evidence;
use crate::round::evidence::EvidenceError;
use clock::Clock;
use committee::Committee;
use ed25519_dalek::SigningKey;
use frost_core::keys::{KeyPackage, PublicKeyPackage};
use lane::{AnyLane, Lane, keccak, with_lane};
use leader::MAX_HEDGES;
use message::{
    Kind, ObservationEntry, ObservationMsg, OffersMsg, Payload, ProposalMsg, RefusalMsg,
    RefusalReason, RelayedOffers, ShareMsg, SignedMessage, SuiteCommitments, SuitePackage,
    SuiteShare, order_commands,
};
use rand_core::{CryptoRng, RngCore};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;
pub use suite::{SibylSuite, SuiteKeys};

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

/// A member's own current observation of one feed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocalObservation {
    pub feed: FeedId,
    pub price: Price,
    /// max − min of the member's source prices (docs/PROTOCOL.md, "Spread
    /// and confidence").
    pub spread: u128,
    pub observed_at_ms: TimestampMs,
    /// Best bid across the member's venues, if known.
    pub bid: Option<Price>,
    /// Best ask across the member's venues, if known.
    pub ask: Option<Price>,
    /// Venues behind `price`.
    pub venues: u16,
    /// The feed's minimum number of venues in the member's sources config.
    pub min_venues: u16,
    /// [`message::entry_flags`] bits.
    pub flags: u8,
}

impl LocalObservation {
    /// An observation with only price, spread and time (no bid/ask, one
    /// venue, minimum one, no flags): tests and the built-in source.
    pub fn basic(feed: FeedId, price: Price, spread: u128, observed_at_ms: TimestampMs) -> Self {
        Self {
            feed,
            price,
            spread,
            observed_at_ms,
            bid: None,
            ask: None,
            venues: 1,
            min_venues: 1,
            flags: 0,
        }
    }
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
    /// Signed reports the driver stored from elsewhere (catch-up), verified:
    /// the leader schedule reads their rounds ([`schedule`]), and their
    /// leaves become their feeds' last values unless newer ones are held
    /// ([`note_signed_leaf`]), so the next leaves' EMA starts from them.
    StoredReports(Vec<SignedReport>),
    /// The margin commands this member offers for ordering from now on
    /// (replaces the earlier offer): its own (`origin` = this member),
    /// ascending by nonce; the first [`MAX_COMMANDS_PER_MEMBER`] are offered.
    /// The driver withdraws a command once a stored report carries it.
    OfferCommands(Vec<MarginCommand>),
    /// This member's margin engine state roots after its latest rounds
    /// (replaces the earlier list; the newest [`MAX_ATTESTED_ROOTS`] by
    /// round are kept): its observations attest them, and it signs a report
    /// carrying a margin state only if that state is one of them.
    AttestMarginRoots(Vec<MarginCheckpoint>),
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
    /// This round's report is most likely signed and held by `peers` but
    /// not here (their shares arrived, the report did not: this member's
    /// link from the leader is stuck). Ask them for it (the driver sends a
    /// catch-up request for `round`); it comes back as
    /// [`Input::StoredReports`].
    AskReport { round: Round, peers: Vec<u16> },
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

/// A member's keys for a committee that signs with one suite.
#[derive(Clone, Debug)]
pub struct NodeKeys<C: SibylSuite> {
    /// The 32-byte ed25519 secret seed of the member's identity (libp2p) key.
    pub identity_seed: [u8; 32],
    pub key_package: KeyPackage<C>,
    pub public_key_package: PublicKeyPackage<C>,
}

/// A member's keys: its identity and its FROST keys for every suite the
/// committee signs with (one report, one signature per suite).
#[derive(Clone, Debug)]
pub struct NodeKeySet {
    /// The 32-byte ed25519 secret seed of the member's identity (libp2p) key.
    pub identity_seed: [u8; 32],
    /// One entry per suite, in any order.
    pub suites: Vec<SuiteKeys>,
}

impl NodeKeySet {
    /// The identity with no FROST keys yet.
    pub fn new(identity_seed: [u8; 32]) -> Self {
        Self {
            identity_seed,
            suites: Vec::new(),
        }
    }

    /// Adds the keys of suite `C`.
    pub fn with<C: SibylSuite>(
        mut self,
        key_package: KeyPackage<C>,
        public_key_package: PublicKeyPackage<C>,
    ) -> Self {
        self.suites
            .push(SuiteKeys::new(key_package, public_key_package));
        self
    }
}

impl<C: SibylSuite> From<NodeKeys<C>> for NodeKeySet {
    fn from(k: NodeKeys<C>) -> Self {
        Self::new(k.identity_seed).with(k.key_package, k.public_key_package)
    }
}

/// The id of a member's key set: the first 8 bytes (big-endian) of
/// SHA3-256 over `"sibyl/key-set/v1"` and every suite's serialized public
/// key package, suites ascending. Every member of a committee computes the
/// same id for the same refresh (the public key packages are common), and a
/// proposal names the set its attempt signs with.
pub fn key_set_id(suites: &[SuiteKeys]) -> u64 {
    use sha3::Digest;
    let mut sorted: Vec<&SuiteKeys> = suites.iter().collect();
    sorted.sort_by_key(|k| k.suite());
    let mut h = sha3::Sha3_256::new();
    h.update(b"sibyl/key-set/v1");
    for k in sorted {
        h.update([k.suite() as u8]);
        h.update(k.public_key_package_bytes());
    }
    let d: [u8; 32] = h.finalize().into();
    let mut id = [0u8; 8];
    id.copy_from_slice(&d[..8]);
    u64::from_be_bytes(id)
}

/// Why a node cannot be built.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("a new key set must hold keys for exactly the suites the member signs with")]
    KeySetSuites,
    #[error("member {0} is not in the committee")]
    NotAMember(u16),
    #[error(
        "the identity key does not match member {0}'s identity in the committee file; check the key file"
    )]
    IdentityMismatch(u16),
    #[error("the {suite:?} FROST key package belongs to another identifier than member {member}")]
    KeyPackageMismatch { member: u16, suite: Suite },
    #[error("the {0:?} FROST key package's group key differs from the public key package's")]
    GroupKeyMismatch(Suite),
    #[error("no FROST keys given: a member needs keys for every suite the committee lists")]
    NoSuite,
    #[error("FROST keys for {0:?} given twice")]
    DuplicateSuite(Suite),
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
    /// Reports this member assembled itself from the signers' shares
    /// (before the leader's copy arrived).
    pub reports_assembled: u64,
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
    /// Hedge attempts: another attempt started (without blaming anyone)
    /// because an open one was slower than the share round trip this
    /// leader usually sees (at most two a round).
    pub attempts_hedged: u64,
    /// Signed refusals this member sent as a signer, and received as leader.
    pub refusals_sent: u64,
    pub refusals_received: u64,
    /// Rounds in which this member observed without offering to sign
    /// (its clock was off and not yet corrected).
    pub observed_without_signing: u64,
    /// Rounds skipped at once because their leader was unreachable.
    pub rounds_skipped_unreachable: u64,
    /// Reports handed back to a leader that asked this member to sign a
    /// round it already held the report of (the leader's own copy of a
    /// share was stuck; see `Node::on_proposal`).
    pub reports_returned: u64,
    /// Times this member asked the signers for a report it saw signed but
    /// did not get ([`Action::AskReport`]).
    pub reports_asked: u64,
    /// Reports this member assembled from a hedge attempt and sent on to
    /// the earlier attempts' signers whose shares never came (their link
    /// from the leader is likely stuck; see `Node::follow_share`).
    pub reports_pushed: u64,
    /// Proposals this member relayed, with the leader's share, to the one
    /// signer of an attempt whose share did not come (`Node::plan_relay`).
    pub proposals_relayed: u64,
    /// Second copies of a proposal already handled (one from the leader,
    /// one relayed), ignored.
    pub proposals_duplicate: u64,
    /// Proposals this member led carrying a margin state root.
    pub margin_states_proposed: u64,
    /// Rounds this member led in which observations attested different
    /// margin state roots for one round: members' engines diverged (a bug,
    /// or a member lying); see the log of the members named.
    pub margin_root_disagreements: u64,
    /// Proposals this member refused because they carried a margin state
    /// root it had not attested (its engine is behind, or differs).
    pub margin_states_refused: u64,
    /// Offers messages this member sent to every member (its pending
    /// margin commands, when they changed and again while they wait).
    pub offers_sent: u64,
    /// Other members' offers it carried in its observations because they
    /// had waited [`RELAY_AFTER_ROUNDS`] rounds without being ordered.
    pub offers_relayed: u64,
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

/// Simulator-only misbehaviour switches (cargo feature `sim`; without it
/// every switch is a constant `false` and its branches compile out).
#[cfg(any(test, feature = "sim"))]
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
    /// Never send an observation (one whose observations never reach the
    /// leader's aggregate: always late).
    pub mute_observations: bool,
}

#[cfg(any(test, feature = "sim"))]
impl Faults {
    pub(crate) fn equivocate(&self) -> bool {
        self.equivocate
    }
    pub(crate) fn invalid_shares(&self) -> bool {
        self.invalid_shares
    }
    pub(crate) fn refuse(&self) -> bool {
        self.refuse
    }
    pub(crate) fn fixed_clock(&self) -> bool {
        self.fixed_clock
    }
    pub(crate) fn mute_observations(&self) -> bool {
        self.mute_observations
    }
}

/// Without the simulator no member misbehaves on purpose.
#[cfg(not(any(test, feature = "sim")))]
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Faults {
    _none: (),
}

#[cfg(not(any(test, feature = "sim")))]
impl Faults {
    pub(crate) const fn equivocate(&self) -> bool {
        false
    }
    pub(crate) const fn invalid_shares(&self) -> bool {
        false
    }
    pub(crate) const fn refuse(&self) -> bool {
        false
    }
    pub(crate) const fn fixed_clock(&self) -> bool {
        false
    }
    pub(crate) const fn mute_observations(&self) -> bool {
        false
    }
}

/// Rounds a member's offers wait at another member before it relays them
/// in its observations: in the common case the origin's own observation
/// gets them ordered within a round, and nothing is relayed.
pub const RELAY_AFTER_ROUNDS: Round = 2;
/// While its offers wait, a member sends them to every member again this
/// often (members that restarted or were cut off get them, and a holder's
/// copy stays fresh).
pub const OFFERS_RESEND_MS: TimestampMs = 2_000;
/// A member relays another's offers only this long after they arrived: a
/// command its origin withdrew (its API call gave up, 504 `not_ordered`)
/// is never relayed later than this even if the withdrawal did not reach
/// the holder.
pub const OFFERS_TTL_MS: TimestampMs = 10_000;

/// Another member's offers this member holds for relaying.
struct HeldOffers {
    relayed: RelayedOffers,
    /// The round its origin signed it in (the message's envelope).
    round: Round,
    /// The round this member was in when these commands started waiting.
    since: Round,
    /// When the latest copy arrived.
    arrived_ms: TimestampMs,
}

struct Attributed {
    msg: ObservationMsg,
    bytes: Vec<u8>,
}

/// One signing attempt the leader runs.
struct Attempt {
    signers: BTreeSet<u16>,
    /// Keccak-256 of each lane's signing package.
    package_hashes: Vec<[u8; 32]>,
    /// Each signer's share message, as received.
    shares: BTreeMap<u16, Vec<u8>>,
    deadline: TimestampMs,
    /// Past its deadline: another attempt started, this one stays open.
    timed_out: bool,
    /// When the attempt went out (for the share round-trip estimate).
    started_at: TimestampMs,
    /// When a hedge attempt starts if this one is still incomplete (see
    /// `Node::hedge_delay`); `None` once a hedge started after it, or when
    /// the round may have no further hedge.
    hedge_at: Option<TimestampMs>,
}

struct LeaderRound {
    header: ReportHeader,
    digest: [u8; 32],
    leaves: Vec<ReportLeaf>,
    /// The margin commands ordered from the same observations.
    commands: Vec<MarginCommand>,
    /// The margin state root the report carries ([`choose_margin_state`]):
    /// only members that attested it are signers.
    margin_state: Option<MarginCheckpoint>,
    /// The signed observations the leaves were computed from.
    observations: Vec<Vec<u8>>,
    /// Signed observations that arrived after the leaves were fixed: they
    /// only attribute their senders' commitments.
    late: BTreeMap<u16, Vec<u8>>,
    /// Each candidate signer's serialized commitments, per suite and
    /// attempt. They are parsed only for the signers an attempt picks:
    /// parsing checks that the points are in the prime-order subgroup (a
    /// scalar multiplication each), and most commitments are never used.
    signers_pool: BTreeMap<u16, Vec<SuiteCommitments>>,
    /// Refused, sent an invalid share or unusable commitments: not picked
    /// again this round.
    excluded: BTreeSet<u16>,
    /// Open attempts by number.
    attempts: BTreeMap<usize, Attempt>,
    next_attempt: usize,
    /// Hedge attempts started this round (at most `MAX_HEDGES`).
    hedges: u8,
}

impl LeaderRound {
    /// Whether another hedge attempt may start: the first always (it is
    /// the attempt the budget keeps for an honest signer that was only
    /// slow); a second only while nothing this round looked like a fault
    /// (no member excluded, no attempt past its share deadline) and an
    /// attempt is left after it, so it never takes the attempts `f` faulty
    /// members may need.
    fn may_hedge(&self, attempts: usize) -> bool {
        match self.hedges {
            0 => true,
            h if h < MAX_HEDGES => {
                self.next_attempt + 1 < attempts
                    && self.excluded.is_empty()
                    && self.attempts.values().all(|a| !a.timed_out)
            }
            _ => false,
        }
    }
}

struct PendingSign {
    record: SigningRecord,
    attempt: usize,
    /// Keccak-256 of each lane's signing package of the attempt.
    package_hashes: Vec<[u8; 32]>,
}

struct RoundState {
    entered_at: TimestampMs,
    deadline: TimestampMs,
    reported: bool,
    // member side
    observation_sent: bool,
    /// This member's observation of the round, as sent: when it comes back
    /// (looped back to itself as leader, or inside a proposal) its signature
    /// is not checked again.
    own_observation: Option<Vec<u8>>,
    /// Whether this member made nonces for this round (it offered to sign).
    offered: bool,
    first_proposal: Option<([u8; 32], Vec<u8>)>,
    equivocation_blamed: bool,
    /// Merkle root and leaves of a proposal this member checked (recomputed
    /// itself) in this round: a report carrying exactly these needs no second
    /// Merkle computation.
    checked: Option<([u8; 32], Vec<ReportLeaf>)>,
    // leader side
    observations: BTreeMap<u16, Attributed>,
    conflict_blamed: BTreeSet<u16>,
    leader: Option<LeaderRound>,
    /// The report this member assembles from the signers' shares.
    follow: Option<follow::Follow>,
    /// This round's report once held, when another member leads the round:
    /// handed back to the leader if it asks for a share after all
    /// (`Node::on_proposal`), then gone.
    held: Option<SignedReport>,
    /// Members other than the leader whose shares of this round arrived,
    /// the latest last.
    share_senders: Vec<u16>,
    /// The latest attempt whose share arrived, and when its first one came.
    share_attempt: u8,
    first_share_at: TimestampMs,
    /// When to ask them for the report if it has not come
    /// (`Node::note_share_sender`), and how many times this member asked.
    ask_at: Option<TimestampMs>,
    asked: u8,
    /// The proposals this member got as a signer, by attempt, as received
    /// (relayed to a stuck signer, and a second copy recognised).
    proposals: BTreeMap<u8, Vec<u8>>,
    /// The leader's share messages of this round, by attempt, as received.
    leader_shares: BTreeMap<u8, Vec<u8>>,
    /// When to relay an attempt's proposal and the leader's share to the
    /// one signer whose share is missing (`Node::plan_relay`): time,
    /// attempt, member; and whether this member relayed this round.
    relay: Option<(TimestampMs, u8, u16)>,
    relayed: bool,
    /// Shares that came before their attempt's proposal (bounded).
    early_shares: Vec<(u16, ShareMsg)>,
    /// Attempts this member refused (one refusal each).
    refused: BTreeSet<u8>,
    /// In a run of skipped rounds: when members that did not skip them
    /// would leave the last one (see `check_timers`).
    carry: TimestampMs,
}

impl RoundState {
    fn new(entered_at: TimestampMs, deadline: TimestampMs) -> Self {
        Self {
            entered_at,
            deadline,
            reported: false,
            observation_sent: false,
            own_observation: None,
            offered: false,
            first_proposal: None,
            equivocation_blamed: false,
            checked: None,
            observations: BTreeMap::new(),
            conflict_blamed: BTreeSet::new(),
            leader: None,
            follow: None,
            held: None,
            share_senders: Vec::new(),
            share_attempt: 0,
            first_share_at: 0,
            ask_at: None,
            asked: 0,
            proposals: BTreeMap::new(),
            leader_shares: BTreeMap::new(),
            relay: None,
            relayed: false,
            early_shares: Vec::new(),
            refused: BTreeSet::new(),
            carry: 0,
        }
    }
}

/// One committee member's round state machine. See the module docs.
pub struct Node {
    committee: Arc<Committee>,
    me: u16,
    identity: SigningKey,
    /// One lane per suite the committee signs with, suites ascending.
    lanes: Vec<AnyLane>,
    ledger: Option<SigningRecord>,
    /// Signings waiting for the ledger's answer (one record, several attempts).
    pending: Vec<PendingSign>,
    last_values: BTreeMap<FeedId, LastValue>,
    last_report_round: Option<Round>,
    last_observed_round: Option<Round>,
    local: BTreeMap<FeedId, LocalObservation>,
    /// The margin commands this member offers in its observations
    /// ([`Input::OfferCommands`]).
    offered_commands: Vec<MarginCommand>,
    /// When this member last sent its pending offers to every member
    /// ([`Payload::Offers`]); `None`: none are pending.
    offers_sent_ms: Option<TimestampMs>,
    /// Other members' latest offers (by origin), relayed in this member's
    /// observations once they waited [`RELAY_AFTER_ROUNDS`] rounds.
    held_offers: BTreeMap<u16, HeldOffers>,
    /// Per origin, the highest nonce a report this member accepted ordered.
    ordered_marks: BTreeMap<u16, u64>,
    /// The margin state roots this member attests ([`Input::AttestMarginRoots`]).
    attested_roots: Vec<MarginCheckpoint>,
    /// The round of the newest margin state a report this member holds carries.
    last_margin_round: Option<Round>,
    start_round: Round,
    started: bool,
    round: Round,
    rs: RoundState,
    next_round_at: Option<(Round, TimestampMs)>,
    future: BTreeMap<Round, Vec<SignedMessage>>,
    highest_seen: BTreeMap<u16, Round>,
    stats: Stats,
    pub(crate) faults: Faults,
    out: Vec<Action>,
    loopback: VecDeque<Vec<u8>>,
    last_wake: Option<TimestampMs>,
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
    /// Time (ms) from sending an attempt's proposal to holding all of its
    /// shares, for this member's last `SHARE_RTT_SAMPLES` completed attempts
    /// as leader (the hedge delay uses their median).
    share_rtts: VecDeque<u64>,
    /// Which rounds have reports, for the leader schedule.
    schedule: schedule::LeaderSchedule,
}

/// Result of checking a proposal as a signer.
type Refusal = RefusalReason;

/// The margin state a leader puts in its report, and who attested it:
/// among the states after `after` (the newest carried so far) that at least
/// `t` of `attested` (member, its attested roots) name with the same root,
/// the newest (members whose engines keep up attest the previous report's
/// round, so successive reports carry successive rounds); with two roots
/// for one round the one more members attested (then the lower root).
/// `None` when no state has `t` attesters. Also returns whether some round
/// was attested with two different roots.
pub fn choose_margin_state<'a>(
    attested: impl IntoIterator<Item = (u16, &'a [MarginCheckpoint])>,
    t: usize,
    after: Option<Round>,
) -> (Option<(MarginCheckpoint, BTreeSet<u16>)>, bool) {
    let mut by: BTreeMap<MarginCheckpoint, BTreeSet<u16>> = BTreeMap::new();
    for (member, roots) in attested {
        for c in roots {
            if after.is_none_or(|a| c.round > a) {
                by.entry(*c).or_default().insert(member);
            }
        }
    }
    let mut rounds = BTreeMap::<Round, usize>::new();
    for c in by.keys() {
        *rounds.entry(c.round).or_default() += 1;
    }
    let disagree = rounds.values().any(|n| *n > 1);
    let chosen = by
        .into_iter()
        .filter(|(_, who)| who.len() >= t)
        .min_by_key(|(c, who)| {
            (
                std::cmp::Reverse(c.round),
                std::cmp::Reverse(who.len()),
                c.root,
            )
        });
    (chosen, disagree)
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
/// `timestamp_ms` and each feed's previous signed leaf in `last_values` (its
/// EMA, volatility and jump flag start there). Observations of a feed outside
/// the freshness window are left out; a feed with fewer than `2f + 1`
/// remaining observations yields `None`. Deterministic: leader and members
/// call exactly this, so a member whose last signed leaf of a feed differs
/// from the leader's (it missed a report) computes different bytes and
/// refuses until catch-up brings the report.
pub fn compute_leaves<'a>(
    committee: &Committee,
    timestamp_ms: TimestampMs,
    attributed: &[&ObservationMsg],
    feeds: impl Iterator<Item = &'a FeedId>,
    last_values: &BTreeMap<FeedId, LastValue>,
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
                        bid: e.bid,
                        ask: e.ask,
                        venues: e.venues,
                        min_venues: e.min_venues,
                        flags: e.flags,
                    });
                }
            }
            let ctx = LeafContext {
                policy: committee
                    .feeds()
                    .get(feed)
                    .map(|f| f.policy)
                    .unwrap_or_default(),
                prev: last_values.get(feed).and_then(|v| v.leaf),
                report_ms: timestamp_ms,
                stale_after_ms: t.max_observation_age_ms / 2,
            };
            let leaf = aggregate_feed(feed, &gathered, committee.quorum(), &ctx).ok();
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

impl Node {
    /// Builds member `me`'s state machine. `keys` holds the member's FROST
    /// keys for every suite the committee signs with (a [`NodeKeys`] for a
    /// single suite); `restore` comes from the node's store: the signing
    /// ledger and the last signed values.
    pub fn new(
        committee: Arc<Committee>,
        me: u16,
        keys: impl Into<NodeKeySet>,
        restore: Restore,
    ) -> Result<Self, NodeError> {
        let keys: NodeKeySet = keys.into();
        let member_key = committee.identity(me).ok_or(NodeError::NotAMember(me))?;
        let identity = SigningKey::from_bytes(&keys.identity_seed);
        if identity.verifying_key() != *member_key {
            return Err(NodeError::IdentityMismatch(me));
        }
        let set = key_set_id(&keys.suites);
        let mut lanes = Vec::with_capacity(keys.suites.len());
        for k in keys.suites {
            let lane = match k {
                SuiteKeys::Ed25519(kp, pkp) => {
                    AnyLane::Ed25519(Box::new(Lane::new(&committee, me, set, kp, pkp)?))
                }
                SuiteKeys::Secp256k1Evm(kp, pkp) => {
                    AnyLane::Secp256k1Evm(Box::new(Lane::new(&committee, me, set, kp, pkp)?))
                }
            };
            lanes.push(lane);
        }
        lanes.sort_by_key(AnyLane::suite);
        if let Some(w) = lanes.windows(2).find(|w| w[0].suite() == w[1].suite()) {
            return Err(NodeError::DuplicateSuite(w[0].suite()));
        }
        if lanes.is_empty() {
            return Err(NodeError::NoSuite);
        }
        let start_round = restore
            .round
            .max(restore.last_signed.map_or(0, |r| r.round));
        Ok(Self {
            me,
            identity,
            lanes,
            ledger: restore.last_signed,
            pending: Vec::new(),
            last_values: restore.last_values,
            last_report_round: restore.last_report_round,
            last_observed_round: restore.last_observed_round,
            local: BTreeMap::new(),
            offered_commands: Vec::new(),
            offers_sent_ms: None,
            held_offers: BTreeMap::new(),
            ordered_marks: BTreeMap::new(),
            attested_roots: Vec::new(),
            last_margin_round: None,
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
            raw_now: 0,
            clock: Clock::default(),
            penalty: BTreeMap::new(),
            rounds_led_total: 0,
            member_stats: committee_members_except(&committee, me),
            unreachable: BTreeSet::new(),
            share_rtts: VecDeque::new(),
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
    /// The suites this member signs every report with, ascending.
    pub fn suites(&self) -> Vec<Suite> {
        self.lanes.iter().map(AnyLane::suite).collect()
    }
    /// The key set this member proposes with as leader ([`key_set_id`]).
    pub fn key_set(&self) -> u64 {
        self.lanes
            .first()
            .map_or(0, |l| with_lane!(l, x => x.lead()))
    }

    /// Every key set this member holds (ascending). More than one only
    /// during a proactive refresh: the old shares and the new ones.
    pub fn key_sets(&self) -> Vec<u64> {
        self.lanes
            .first()
            .map(|l| with_lane!(l, x => x.sets()))
            .unwrap_or_default()
    }

    /// Adds a key set: new shares of the same group key for every suite
    /// this member signs with (a refresh). Returns its id. The member signs
    /// with it when a proposal names it, and proposes with it after
    /// [`Node::lead_with`].
    pub fn add_key_set(&mut self, suites: Vec<SuiteKeys>) -> Result<u64, NodeError> {
        let set = key_set_id(&suites);
        let mut seen: Vec<Suite> = suites.iter().map(SuiteKeys::suite).collect();
        seen.sort();
        if seen != self.suites() {
            return Err(NodeError::KeySetSuites);
        }
        // Checked on every lane before any takes it.
        for k in &suites {
            let me = self.me;
            let lane = self.lanes.iter().find(|l| l.suite() == k.suite());
            let ok = match (k, lane) {
                (SuiteKeys::Ed25519(kp, pkp), Some(AnyLane::Ed25519(l))) => {
                    lane::check_same_group(me, l, kp, pkp)
                }
                (SuiteKeys::Secp256k1Evm(kp, pkp), Some(AnyLane::Secp256k1Evm(l))) => {
                    lane::check_same_group(me, l, kp, pkp)
                }
                _ => Err(NodeError::KeySetSuites),
            };
            ok?;
        }
        for k in suites {
            let suite = k.suite();
            match (k, self.lanes.iter_mut().find(|l| l.suite() == suite)) {
                (SuiteKeys::Ed25519(kp, pkp), Some(AnyLane::Ed25519(l))) => {
                    l.insert_set(set, kp, pkp);
                }
                (SuiteKeys::Secp256k1Evm(kp, pkp), Some(AnyLane::Secp256k1Evm(l))) => {
                    l.insert_set(set, kp, pkp);
                }
                _ => {}
            }
        }
        Ok(set)
    }

    /// Proposes with key set `set` from now on (as leader). `false` if this
    /// member does not hold it.
    pub fn lead_with(&mut self, set: u64) -> bool {
        if !self.lanes.iter().all(|l| with_lane!(l, x => x.holds(set))) {
            return false;
        }
        for lane in &mut self.lanes {
            with_lane!(lane, x => x.set_lead(set));
        }
        // Nonces made ahead were hedged with the old share: harmless, but
        // the next ones use the lead set's.
        true
    }

    /// Forgets key set `set` (its shares are erased from memory). The set
    /// this member leads with is kept.
    pub fn retire_key_set(&mut self, set: u64) {
        for lane in &mut self.lanes {
            with_lane!(lane, x => x.retire(set));
        }
    }

    /// The public key package of suite `C`, if the member signs with it.
    pub fn public_key_package<C: SibylSuite>(&self) -> Option<&PublicKeyPackage<C>> {
        self.lanes
            .iter()
            .find_map(|l| l.get::<C>())
            .map(Lane::pubkeys)
    }
    /// Checks evidence against the committee and, for an invalid share,
    /// the group keys of its suite ([`Evidence::verify`]); returns the
    /// culprit.
    pub fn verify_evidence(&self, evidence: &Evidence) -> Result<u16, EvidenceError> {
        let suite = match evidence {
            Evidence::InvalidShare { suite, .. } => Some(*suite),
            _ => None,
        };
        let lane = self
            .lanes
            .iter()
            .find(|l| suite.is_none_or(|s| l.suite() == s))
            .or(self.lanes.first());
        match lane {
            Some(lane) => with_lane!(lane, l => l.verify_evidence(evidence, &self.committee)),
            None => Err(EvidenceError::WrongKeys),
        }
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
    /// The first suite's commitments made ahead ([`Node::precompute`]).
    #[cfg(test)]
    fn spare_commitments(&self) -> Option<Vec<Vec<u8>>> {
        self.lanes
            .first()
            .and_then(|lane| with_lane!(lane, l => l.spare_commitments()))
    }

    /// Test-only misbehaviour (cargo feature `fault-injection`, for the fault
    /// tests and benchmarks with real processes): send signature shares that
    /// do not verify, refuse every proposal with a signed refusal, or never
    /// send an observation (a member whose observations never reach the
    /// leader's aggregate).
    #[cfg(feature = "fault-injection")]
    pub fn inject_faults(&mut self, invalid_shares: bool, refuse: bool, mute_observations: bool) {
        self.faults.invalid_shares = invalid_shares;
        self.faults.refuse = refuse;
        self.faults.mute_observations = mute_observations;
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
        let attempts = self.committee.attempts();
        for lane in &mut self.lanes {
            with_lane!(lane, l => l.precompute(attempts, rng));
        }
    }

    /// The first-attempt commitments of the nonces made ahead
    /// ([`Node::precompute`]), one per suite, encoded as a hint: what this
    /// member's next observation will announce, for the other members to
    /// [`Node::warm_commitments`]. The encoding is the codec's
    /// `seq of bytes`, suites ascending.
    pub fn next_commitments(&self) -> Option<Vec<u8>> {
        let mut firsts = Vec::with_capacity(self.lanes.len());
        for lane in &self.lanes {
            firsts.push(with_lane!(lane, l => l.next_commitment())?);
        }
        let mut w = crate::codec::Writer::new();
        w.seq(firsts.iter(), |w, c| {
            w.bytes(c);
        });
        Some(w.finish())
    }

    /// Parses member `from`'s announced next commitments (a
    /// [`Node::next_commitments`] hint) now, off the round's critical path,
    /// and keeps them (one set per member and suite, the latest). Parsing is
    /// a pure function of the bytes: a proposal or observation later uses
    /// the kept parse only for byte-for-byte the same commitments, inside a
    /// signed observation, so a wrong or stale hint only costs the parse it
    /// would have saved. Returns whether they parsed.
    pub fn warm_commitments(&mut self, from: u16, hint: &[u8]) -> bool {
        if from == self.me || self.committee.identity(from).is_none() {
            return false;
        }
        let mut r = crate::codec::Reader::new(hint);
        let Ok(firsts) = r.seq("commitments hint", message::MAX_SUITES, 4, |r| {
            r.bytes("commitment", 256).map(<[u8]>::to_vec)
        }) else {
            return false;
        };
        if r.finish("commitments hint").is_err() || firsts.len() != self.lanes.len() {
            return false;
        }
        let mut all = true;
        for (lane, bytes) in self.lanes.iter_mut().zip(&firsts) {
            all &= with_lane!(lane, l => l.warm(from, bytes));
        }
        all
    }

    /// Member `sender`'s commitment of lane `lane` for `attempt` in its
    /// observation's commitments.
    fn announced<'a>(
        &self,
        commitments: &'a [SuiteCommitments],
        lane: usize,
        attempt: usize,
    ) -> Option<&'a [u8]> {
        let suite = self.lanes.get(lane)?.suite();
        commitments
            .get(lane)
            .filter(|c| c.suite == suite)
            .and_then(|c| c.commitments.get(attempt))
            .map(Vec::as_slice)
    }

    /// Whether an observation's commitments are an offer to sign this
    /// committee can use: exactly one entry per suite it signs with, in
    /// order, each with one commitment per attempt.
    fn offer_complete(&self, commitments: &[SuiteCommitments]) -> bool {
        commitments.len() == self.lanes.len()
            && commitments.iter().zip(&self.lanes).all(|(c, l)| {
                c.suite == l.suite() && c.commitments.len() == self.committee.attempts()
            })
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
                let refused: Vec<PendingSign> = self
                    .pending
                    .extract_if(.., |p| p.record == record)
                    .collect();
                for p in refused {
                    // Not signed: the same proposal coming again is no copy.
                    if let Ok(a) = u8::try_from(p.attempt) {
                        self.rs.proposals.remove(&a);
                    }
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
            Input::OfferCommands(mut commands) => {
                commands.retain(|c| c.origin == self.me && c.body.len() <= MAX_COMMAND_BYTES);
                commands.sort_by_key(|c| c.nonce);
                commands.dedup_by_key(|c| c.nonce);
                commands.truncate(MAX_COMMANDS_PER_MEMBER);
                let changed = commands != self.offered_commands;
                self.offered_commands = commands;
                if changed {
                    self.send_offers();
                }
            }
            Input::AttestMarginRoots(mut roots) => {
                roots.sort_by_key(|c| c.round);
                roots.dedup_by_key(|c| c.round);
                let drop = roots.len().saturating_sub(MAX_ATTESTED_ROOTS);
                roots.drain(..drop);
                self.attested_roots = roots;
            }
            Input::StoredReports(reports) => {
                for r in reports {
                    // The report of the round being played (or of a later
                    // one) that reached the driver another way (gossip
                    // forwarded by other members, catch-up): the round is
                    // over here too. A member whose link from the leader is
                    // stalled (a lost packet) then holds the report about
                    // one hop after the others instead of at the round's
                    // timeout. Checked again here: it decides the round.
                    let current = !self.rs.reported && r.header.round >= self.round;
                    if current
                        && self.last_report_round.is_none_or(|l| r.header.round > l)
                        && self.verify_report(&r)
                    {
                        self.accept_report(now_ms, r);
                        continue;
                    }
                    self.schedule.note_report(r.header.round);
                    for leaf in &r.leaves {
                        note_signed_leaf(&mut self.last_values, leaf, r.header.timestamp_ms);
                    }
                    self.note_ordered(&r);
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
            times.extend(self.rs.ask_at);
            times.extend(self.rs.relay.map(|(at, _, _)| at));
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
                        .flat_map(|a| [Some(a.deadline), a.hedge_at])
                        .flatten(),
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
        if let Payload::Offers(_) = msg.payload {
            // Not tied to a round: kept until a report orders the commands.
            self.on_offers(msg);
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
            Kind::Report | Kind::Offers => {}
        }
    }
}
