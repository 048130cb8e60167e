//! Wire messages of the round protocol, in the crate's canonical codec.
//!
//! Every message is an envelope signed by the sender's ed25519 identity key:
//!
//! ```text
//! u8 version | bytes32 config digest | u64 round | u16 sender | u8 kind | body | [64] signature
//! ```
//!
//! The signature covers `MESSAGE_DOMAIN || prehash`, where `prehash` is the
//! SHA-512 of everything before the signature: the (possibly large) body is
//! hashed once, and ed25519 then signs a short fixed-size input (signing
//! hashes its input twice, verifying once). In a proposal each attributed
//! observation (a complete signed message) enters the prehash as
//! `SHA-512(its content) || its signature` instead of its raw bytes (its
//! length prefix stays), so a signer hashes each observation once, for both
//! the observation's and the proposal's signature. Kinds and bodies:
//!
//! | kind | message | body |
//! |---|---|---|
//! | 1 | observation (member -> leader) | seq of (feed bytes32, price i128, spread u128 = max − min of the member's source prices, observed_at u64, bid option i128, ask option i128, venues u16, min_venues u16, flags u8), seq of (suite u8, seq of FROST commitments (bytes)), seq of margin commands the member offers (origin u16 = sender, nonce u64, body str), seq of attested margin state roots (round u64, root bytes32; rounds strictly ascending), seq of relayed offers (bytes: another member's complete signed kind-6 message, origins strictly ascending, none the sender's) |
//! | 2 | proposal (leader -> signers) | attempt u8, timestamp u64, merkle root bytes32, seq of leaves, seq of signed observations (bytes), seq of (suite u8, signing package (bytes)), seq of signed signer-only observations (bytes), key set u64, seq of margin commands, option margin state (round u64, root bytes32) |
//! | 3 | share (signer -> all) | attempt u8, report digest bytes32, seq of (suite u8, signing package hash bytes32, share (bytes)) |
//! | 4 | signed report (leader -> all) | header timestamp u64, merkle root bytes32, margin root bytes32, seq of leaves, seq of (suite u8, signature bytes), seq of margin commands, option margin state |
//! | 5 | refusal (signer -> leader) | attempt u8, report digest bytes32, reason u8, signer's clock u64 |
//! | 6 | offers (member -> all) | seq of margin commands the sender offers (origin u16 = sender, nonce u64, body str) |
//!
//! Per-suite lists name each suite the committee signs with once, suites
//! ascending (1 ed25519, 2 secp256k1-evm): a committee listing both suites
//! signs each report with both in one round (`lane.rs`). An observation with
//! no commitments is an observation only: its sender does not offer to sign
//! the round. A proposal's signer-only observations
//! (observations that arrived after the leaves were fixed) attribute the
//! commitments of signers whose observation is not among the leaves'
//! observations; they do not enter the leaves.
//!
//! A proposal's margin commands are [`order_commands`] of its attributed
//! observations (each sender's own offers and the offers it relays for
//! other members, ascending by origin and nonce);
//! the header's margin root commits to them and to the margin state the
//! proposal carries, which every signer of the attempt attested in its own
//! observation ([`crate::digest::margin_root`]).
//!
//! A leaf is the canonical `ReportLeaf` encoding (`codec.rs`, docs/PROTOCOL.md). Sequences are strictly ordered where order matters
//! (feeds ascending), so every value has exactly one encoding.

use super::committee::Committee;
use crate::codec::{
    DecodeError, Reader, Writer, decode_commands, decode_margin_state, encode_commands,
    encode_margin_state,
};
use crate::report::{
    ConfigDigest, FeedId, MAX_ATTESTED_ROOTS, MAX_COMMAND_BYTES, MAX_COMMANDS_PER_MEMBER,
    MAX_REPORT_COMMANDS, MarginCheckpoint, MarginCommand, PROTOCOL_VERSION, ReportHeader,
    ReportLeaf, Round, SignatureBytes, SignedReport, Suite, TimestampMs,
};
use ed25519_dalek::{Signature, Signer, SigningKey};
use sha2::{Digest, Sha512};
use std::collections::BTreeMap;
use std::ops::Range;

/// Domain separator for identity-key signatures over messages.
pub const MESSAGE_DOMAIN: &[u8] = b"sibyl/round-message/v6";
/// Most feeds a message may carry.
pub const MAX_FEEDS: usize = 10_000;
/// Most members a committee may have (and observations a proposal may attribute).
pub const MAX_MEMBERS: usize = 1_024;
/// Most FROST commitments per observation and suite (signing attempts per round).
pub const MAX_COMMITMENTS: usize = 8;
/// Most suites a committee signs with.
pub const MAX_SUITES: usize = crate::codec::MAX_SIGNATURES;
/// Upper bound on any message (a 1,024-member proposal of 10,000 feeds does not fit; real committees are far smaller).
pub const MAX_MESSAGE_BYTES: usize = 32 << 20;
const MAX_SMALL_BYTES: usize = 256;
const MAX_OBSERVATION_BYTES: usize = 4
    + MAX_FEEDS * ENTRY_MAX_BYTES
    + 4
    + MAX_SUITES * (5 + MAX_COMMITMENTS * 260)
    + 4
    + MAX_COMMANDS_PER_MEMBER * (2 + 8 + 4 + MAX_COMMAND_BYTES)
    + 4
    + MAX_ATTESTED_ROOTS * 40
    + 4
    + MAX_RELAYED_OFFERS * (4 + MAX_OFFERS_BYTES)
    + 128;
/// Most other members' offers one observation relays.
pub const MAX_RELAYED_OFFERS: usize = 4;
/// Upper bound on an offers message (kind 6).
const MAX_OFFERS_BYTES: usize =
    45 + 4 + MAX_COMMANDS_PER_MEMBER * (2 + 8 + 4 + MAX_COMMAND_BYTES) + SIGNATURE_LEN;
/// Wire size of an observation entry without bid and ask, and with both.
const ENTRY_MIN_BYTES: usize = 32 + 16 + 16 + 8 + 1 + 1 + 2 + 2 + 1;
const ENTRY_MAX_BYTES: usize = ENTRY_MIN_BYTES + 32;
const MAX_PACKAGE_BYTES: usize = 1 << 20;
const SIGNATURE_LEN: usize = 64;

/// Message kinds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    Observation = 1,
    Proposal = 2,
    Share = 3,
    Report = 4,
    Refusal = 5,
    Offers = 6,
}

/// One feed in a member's observation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObservationEntry {
    pub feed: FeedId,
    pub price: i128,
    /// max − min of the member's source prices (docs/PROTOCOL.md, "Spread
    /// and confidence").
    pub spread: u128,
    pub observed_at_ms: TimestampMs,
    /// Best bid across the member's venues, if it knows one.
    pub bid: Option<i128>,
    /// Best ask across the member's venues, if it knows one.
    pub ask: Option<i128>,
    /// Venues behind `price`.
    pub venues: u16,
    /// The feed's minimum number of venues (the member's sources config).
    pub min_venues: u16,
    /// [`entry_flags`] bits; a decoder refuses unknown bits.
    pub flags: u8,
}

/// Bits of [`ObservationEntry::flags`]: what the member's sources say about
/// the market. A leaf sets the matching leaf flag when a strict majority of
/// its attributed observations do (docs/PROTOCOL.md, "Status and flags").
pub mod entry_flags {
    /// A stablecoin leg of the feed is off its peg.
    pub const PEG_DEPARTED: u8 = 1 << 0;
    /// The market is closed (outside trading hours).
    pub const MARKET_CLOSED: u8 = 1 << 1;
    /// Trading is halted on the venues.
    pub const HALTED: u8 = 1 << 2;
    /// Every defined bit.
    pub const ALL: u8 = (1 << 3) - 1;
}

impl From<&super::LocalObservation> for ObservationEntry {
    fn from(o: &super::LocalObservation) -> Self {
        Self {
            feed: o.feed.clone(),
            price: o.price,
            spread: o.spread,
            observed_at_ms: o.observed_at_ms,
            bid: o.bid,
            ask: o.ask,
            venues: o.venues,
            min_venues: o.min_venues,
            flags: o.flags,
        }
    }
}

/// A member's observation for a round, with fresh FROST commitments (per
/// suite, one per signing attempt) for the leader.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObservationMsg {
    /// Strictly ascending by feed id.
    pub entries: Vec<ObservationEntry>,
    /// One entry per suite the committee signs with, suites ascending;
    /// empty: an observation only (no offer to sign).
    pub commitments: Vec<SuiteCommitments>,
    /// Margin commands the sender offers for ordering (its own, `origin` =
    /// the sender), strictly ascending by nonce, at most
    /// [`MAX_COMMANDS_PER_MEMBER`].
    pub commands: Vec<MarginCommand>,
    /// The sender's margin state roots after its latest rounds (rounds
    /// strictly ascending, at most [`MAX_ATTESTED_ROOTS`]): it vouches for
    /// each, and signs a report carrying one only if it attested it.
    pub margin_roots: Vec<MarginCheckpoint>,
    /// Other members' signed offers the sender carries for them (origins
    /// strictly ascending, none the sender, at most
    /// [`MAX_RELAYED_OFFERS`]): their commands are ordered as if their
    /// origin's own observation had been attributed, so a member whose
    /// observations keep missing the leader's aggregate (slow, far, clock
    /// off, just restarted) still gets its commands ordered.
    pub relayed: Vec<RelayedOffers>,
}

/// A member's offers ([`Payload::Offers`]) as another member relays them:
/// the complete signed message, and what it says. A decoded one's
/// signature was checked against `origin`'s identity key
/// ([`SignedMessage::decode`]; not for a member's own message,
/// [`SignedMessage::decode_own`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RelayedOffers {
    pub origin: u16,
    /// Each with `origin`, strictly ascending by nonce.
    pub commands: Vec<MarginCommand>,
    /// The offers message, signature included.
    pub bytes: Vec<u8>,
}

/// A member's pending margin commands, sent to every member (kind 6) when
/// they change and again while they wait, so that any member can relay
/// them ([`ObservationMsg::relayed`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OffersMsg {
    /// Each with `origin` = the sender, strictly ascending by nonce, at
    /// most [`MAX_COMMANDS_PER_MEMBER`].
    pub commands: Vec<MarginCommand>,
}

/// One suite's commitments in an observation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SuiteCommitments {
    pub suite: Suite,
    /// Serialized `SigningCommitments`, attempt `a` uses element `a`.
    pub commitments: Vec<Vec<u8>>,
}

/// One suite's signing package in a proposal.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SuitePackage {
    pub suite: Suite,
    /// Serialized FROST `SigningPackage` over the header digest.
    pub package: Vec<u8>,
}

/// One suite's signature share in a share message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SuiteShare {
    pub suite: Suite,
    /// Keccak-256 of the signing package the share answers, so the share
    /// message alone pins down what was signed (used by evidence).
    pub package_hash: [u8; 32],
    pub share: Vec<u8>,
}

/// The leader's proposal for one signing attempt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProposalMsg {
    pub attempt: u8,
    pub timestamp_ms: TimestampMs,
    pub merkle_root: [u8; 32],
    /// Ascending by feed id.
    pub leaves: Vec<ReportLeaf>,
    /// The attributed observations: each one a complete signed observation
    /// message as its sender sent it.
    pub observations: Vec<Vec<u8>>,
    /// One signing package per suite (suites ascending), each over the
    /// header digest and naming the same signers.
    pub signing_packages: Vec<SuitePackage>,
    /// Signed observations of signers whose observation is not in
    /// `observations` (it arrived after the leaves were fixed): only their
    /// commitments are used. Ascending by sender, disjoint from `observations`.
    pub signer_observations: Vec<Vec<u8>>,
    /// The key set the attempt signs with ([`crate::round::key_set_id`]):
    /// during a proactive refresh members hold the old shares and the new
    /// ones, and shares of different sets never combine.
    pub key_set: u64,
    /// The round's margin commands: [`order_commands`] of `observations`
    /// (a follower's copy carries them too). The header's margin root is
    /// their [`crate::digest::commands_root`].
    pub commands: Vec<MarginCommand>,
    /// The margin state root the report carries: attested by every signer
    /// of the attempt in its observation; `None`: none.
    pub margin_state: Option<MarginCheckpoint>,
}

/// The margin commands a round orders from its attributed observations
/// (`(sender, observation)`): each sender's offers whose origin is the
/// sender, and the offers it relays (signed by their origin), ascending by
/// (origin, nonce); of two different bodies an origin signed for one nonce
/// the smaller. Leader and signers compute it alike, so a leader cannot
/// add, drop or reorder a command unnoticed.
pub fn order_commands<'a>(
    observations: impl IntoIterator<Item = (u16, &'a ObservationMsg)>,
) -> Vec<MarginCommand> {
    let mut out: Vec<MarginCommand> = observations
        .into_iter()
        .flat_map(|(sender, o)| {
            let own = o.commands.iter().filter(move |c| c.origin == sender);
            let relayed = o
                .relayed
                .iter()
                .filter(move |r| r.origin != sender)
                .flat_map(|r| r.commands.iter().filter(|c| c.origin == r.origin));
            own.chain(relayed)
        })
        .cloned()
        .collect();
    out.sort_by(|a, b| (a.origin, a.nonce, &a.body).cmp(&(b.origin, b.nonce, &b.body)));
    out.dedup_by_key(|c| (c.origin, c.nonce));
    out.truncate(MAX_REPORT_COMMANDS);
    out
}

/// A signer's signature shares: one per suite (suites ascending).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShareMsg {
    pub attempt: u8,
    pub report_digest: [u8; 32],
    pub shares: Vec<SuiteShare>,
}

/// Why a signer will not sign a proposal.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RefusalReason {
    /// The proposal's timestamp is too far from the signer's clock (or not
    /// later than the last report it holds).
    Timestamp = 1,
    /// An attributed observation does not decode, is not of this round or
    /// is not signed by its sender.
    Observation = 2,
    /// The recomputed leaves or Merkle root differ from the proposal's.
    Mismatch = 3,
    /// The signing package is malformed or does not carry the signer's
    /// announced commitment.
    Package = 4,
    /// The signer's ledger holds another report for this round or a later round.
    Ledger = 5,
    /// The commitment the attempt names was already used.
    NonceUsed = 6,
    /// Any other reason (e.g. a signer that chooses not to sign).
    Other = 7,
}

impl RefusalReason {
    fn from_tag(tag: u8) -> Option<Self> {
        Some(match tag {
            1 => Self::Timestamp,
            2 => Self::Observation,
            3 => Self::Mismatch,
            4 => Self::Package,
            5 => Self::Ledger,
            6 => Self::NonceUsed,
            7 => Self::Other,
            _ => return None,
        })
    }

    /// A short snake_case name (logs and metrics).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Timestamp => "timestamp",
            Self::Observation => "observation",
            Self::Mismatch => "mismatch",
            Self::Package => "package",
            Self::Ledger => "ledger",
            Self::NonceUsed => "nonce_used",
            Self::Other => "other",
        }
    }
}

/// A signer's signed refusal of one signing attempt: the leader moves on at
/// once instead of waiting for the attempt's timeout.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RefusalMsg {
    pub attempt: u8,
    pub report_digest: [u8; 32],
    pub reason: RefusalReason,
    /// The signer's (corrected) clock when it refused: a clock sample for
    /// the leader.
    pub clock_ms: TimestampMs,
}

/// The payload of a message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Payload {
    Observation(ObservationMsg),
    Proposal(ProposalMsg),
    Share(ShareMsg),
    Report(SignedReport),
    Refusal(RefusalMsg),
    Offers(OffersMsg),
}

impl Payload {
    pub fn kind(&self) -> Kind {
        match self {
            Payload::Observation(_) => Kind::Observation,
            Payload::Proposal(_) => Kind::Proposal,
            Payload::Share(_) => Kind::Share,
            Payload::Report(_) => Kind::Report,
            Payload::Refusal(_) => Kind::Refusal,
            Payload::Offers(_) => Kind::Offers,
        }
    }
}

/// A decoded, signature-checked message together with its exact bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignedMessage {
    pub round: Round,
    pub sender: u16,
    pub payload: Payload,
    /// The complete encoding including the signature.
    pub bytes: Vec<u8>,
}

/// Why a message was rejected.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MessageError {
    #[error("malformed message: {0}")]
    Decode(#[from] DecodeError),
    #[error("message of {len} bytes exceeds the maximum {max}")]
    Oversized { len: usize, max: usize },
    #[error("message claims sender {0}, which is not a committee member")]
    UnknownSender(u16),
    #[error("message from member {sender} carries an invalid identity signature")]
    BadSignature { sender: u16 },
    #[error(
        "observation from member {sender} relays offers of member {origin} that are not validly signed by it"
    )]
    BadRelayed { sender: u16, origin: u16 },
}

impl SignedMessage {
    /// Encodes and signs a message.
    pub fn sign(
        identity: &SigningKey,
        config_digest: &ConfigDigest,
        round: Round,
        sender: u16,
        payload: Payload,
    ) -> Self {
        let mut w = Writer::new();
        w.u8(PROTOCOL_VERSION)
            .bytes32(&config_digest.0)
            .u64(round)
            .u16(sender)
            .u8(payload.kind() as u8);
        let spans = encode_payload(&mut w, &payload);
        let mut bytes = w.finish();
        let hashes: Vec<[u8; 64]> = spans.iter().map(|s| embedded_hash(&bytes, s)).collect();
        let sig = identity.sign(&signing_input(&prehash(&bytes, &spans, &hashes)));
        bytes.extend_from_slice(&sig.to_bytes());
        Self {
            round,
            sender,
            payload,
            bytes,
        }
    }

    /// Decodes a message and checks version, config digest, sender and
    /// identity signature. Never panics.
    pub fn decode(bytes: &[u8], committee: &Committee) -> Result<Self, MessageError> {
        Self::decode_hashed(bytes, committee, None).map(|(msg, _)| msg)
    }

    /// [`SignedMessage::decode`], also returning, for a proposal, the
    /// SHA-512 of each attributed observation's content (empty for other
    /// kinds). With `content_hash` the caller supplies the SHA-512 of
    /// `bytes` without the signature, computed from these very bytes (a
    /// proposal's embedded observation); it is used only for messages
    /// without embedded observations.
    pub fn decode_hashed(
        bytes: &[u8],
        committee: &Committee,
        content_hash: Option<&[u8; 64]>,
    ) -> Result<(Self, Vec<[u8; 64]>), MessageError> {
        let (msg, signed_len, spans) =
            decode_inner(bytes, committee.config_digest(), committee.feeds().len())?;
        let key = committee
            .identity(msg.sender)
            .ok_or(MessageError::UnknownSender(msg.sender))?;
        let sig_bytes: [u8; SIGNATURE_LEN] = bytes[signed_len..]
            .try_into()
            .map_err(|_| MessageError::BadSignature { sender: msg.sender })?;
        let sig = Signature::from_bytes(&sig_bytes);
        let content = &bytes[..signed_len];
        let hashes: Vec<[u8; 64]> = spans.iter().map(|s| embedded_hash(content, s)).collect();
        let digest = match content_hash {
            Some(h) if spans.is_empty() => *h,
            _ => prehash(content, &spans, &hashes),
        };
        key.verify_strict(&signing_input(&digest), &sig)
            .map_err(|_| MessageError::BadSignature { sender: msg.sender })?;
        check_offers(&msg)?;
        if let Payload::Observation(o) = &msg.payload {
            for r in &o.relayed {
                verify_relayed(r, committee).map_err(|_| MessageError::BadRelayed {
                    sender: msg.sender,
                    origin: r.origin,
                })?;
            }
        }
        Ok((msg, hashes))
    }

    /// Decodes a message this member signed itself, given byte for byte as it
    /// sent it (its own observation, embedded in a proposal or looped back to
    /// itself as leader): the signature was made here and is not checked
    /// again. Everything else is, as in [`SignedMessage::decode`].
    pub fn decode_own(bytes: &[u8], committee: &Committee) -> Result<Self, MessageError> {
        let (msg, signed_len, _) =
            decode_inner(bytes, committee.config_digest(), committee.feeds().len())?;
        if committee.identity(msg.sender).is_none() {
            return Err(MessageError::UnknownSender(msg.sender));
        }
        check_offers(&msg)?;
        if bytes.len() != signed_len + SIGNATURE_LEN {
            return Err(MessageError::BadSignature { sender: msg.sender });
        }
        Ok(msg)
    }

    /// The signed content without the signature: two messages with different
    /// content are a conflict, whatever their signatures.
    pub fn content(&self) -> &[u8] {
        &self.bytes[..self.bytes.len().saturating_sub(SIGNATURE_LEN)]
    }
}

/// Checks a relayed offers message's signature against its origin's key
/// (its structure was checked while decoding the observation).
fn verify_relayed(r: &RelayedOffers, committee: &Committee) -> Result<(), ()> {
    let key = committee.identity(r.origin).ok_or(())?;
    let signed_len = r.bytes.len().checked_sub(SIGNATURE_LEN).ok_or(())?;
    let sig_bytes: [u8; SIGNATURE_LEN] = r.bytes[signed_len..].try_into().map_err(|_| ())?;
    let digest: [u8; 64] = Sha512::digest(&r.bytes[..signed_len]).into();
    key.verify_strict(&signing_input(&digest), &Signature::from_bytes(&sig_bytes))
        .map_err(|_| ())
}

/// Round, claimed sender and kind of an encoded message, read from its
/// envelope without decoding or checking it: for diagnostics and timing only,
/// since nothing here is authenticated.
pub fn peek(bytes: &[u8]) -> Option<(Round, u16, Kind)> {
    let round = u64::from_be_bytes(bytes.get(33..41)?.try_into().ok()?);
    let sender = u16::from_be_bytes(bytes.get(41..43)?.try_into().ok()?);
    let kind = match bytes.get(43)? {
        1 => Kind::Observation,
        2 => Kind::Proposal,
        3 => Kind::Share,
        4 => Kind::Report,
        5 => Kind::Refusal,
        6 => Kind::Offers,
        _ => return None,
    };
    Some((round, sender, kind))
}

/// `MESSAGE_DOMAIN || prehash`: what the identity key signs.
fn signing_input(prehash: &[u8; 64]) -> [u8; MESSAGE_DOMAIN.len() + 64] {
    let mut v = [0u8; MESSAGE_DOMAIN.len() + 64];
    v[..MESSAGE_DOMAIN.len()].copy_from_slice(MESSAGE_DOMAIN);
    v[MESSAGE_DOMAIN.len()..].copy_from_slice(prehash);
    v
}

/// The signature-less part of an embedded message occupying `span` of `content`.
fn embedded_content<'a>(content: &'a [u8], span: &Range<usize>) -> (&'a [u8], &'a [u8]) {
    let sig_at = span.end - SIGNATURE_LEN.min(span.len());
    (&content[span.start..sig_at], &content[sig_at..span.end])
}

/// SHA-512 of an embedded message's content (its signature excluded).
fn embedded_hash(content: &[u8], span: &Range<usize>) -> [u8; 64] {
    Sha512::digest(embedded_content(content, span).0).into()
}

/// The message prehash: SHA-512 of `content` in which every embedded
/// message (`spans`, ascending, disjoint) is replaced by its content hash
/// (`hashes`) followed by its signature bytes.
fn prehash(content: &[u8], spans: &[Range<usize>], hashes: &[[u8; 64]]) -> [u8; 64] {
    let mut h = Sha512::new();
    let mut at = 0;
    for (span, hash) in spans.iter().zip(hashes) {
        h.update(&content[at..span.start]);
        h.update(hash);
        h.update(embedded_content(content, span).1);
        at = span.end;
    }
    h.update(&content[at..]);
    h.finalize().into()
}

/// Decodes everything except the signature check; returns the message and
/// the length of the signed part.
pub fn decode_unverified(
    bytes: &[u8],
    config_digest: &ConfigDigest,
) -> Result<(SignedMessage, usize), MessageError> {
    decode_inner(bytes, config_digest, MAX_FEEDS).map(|(msg, len, _)| (msg, len))
}

/// Like [`decode_unverified`], also returning the byte ranges of a
/// proposal's embedded observations. Observations, proposals and reports
/// carry at most `max_feeds` feeds (the committee's): a larger message is
/// refused while decoding, before anything is hashed or verified.
fn decode_inner(
    bytes: &[u8],
    config_digest: &ConfigDigest,
    max_feeds: usize,
) -> Result<(SignedMessage, usize, Vec<Range<usize>>), MessageError> {
    if bytes.len() > MAX_MESSAGE_BYTES {
        return Err(MessageError::Oversized {
            len: bytes.len(),
            max: MAX_MESSAGE_BYTES,
        });
    }
    let mut r = Reader::new(bytes);
    r.version(PROTOCOL_VERSION)?;
    r.config_digest(Some(config_digest))?;
    let round = r.u64("round")?;
    let sender = r.u16("sender")?;
    let at = r.position();
    let kind = r.u8("message kind")?;
    let mut spans = Vec::new();
    let max_feeds = max_feeds.min(MAX_FEEDS);
    let payload = match kind {
        1 => Payload::Observation(decode_observation(
            &mut r,
            max_feeds,
            config_digest,
            sender,
        )?),
        2 => Payload::Proposal(decode_proposal(&mut r, &mut spans, max_feeds)?),
        3 => Payload::Share(decode_share(&mut r)?),
        4 => Payload::Report(decode_report_body(
            &mut r,
            *config_digest,
            round,
            max_feeds,
        )?),
        5 => Payload::Refusal(decode_refusal(&mut r)?),
        6 => Payload::Offers(decode_offers(&mut r)?),
        tag => {
            return Err(DecodeError::InvalidTag {
                what: "message kind",
                at,
                tag: tag.into(),
            }
            .into());
        }
    };
    let signed_len = r.position();
    r.raw("signature", SIGNATURE_LEN)?;
    r.finish("message")?;
    Ok((
        SignedMessage {
            round,
            sender,
            payload,
            bytes: bytes.to_vec(),
        },
        signed_len,
        spans,
    ))
}

/// Encodes a payload; returns the byte ranges of embedded observations.
fn encode_payload(w: &mut Writer, payload: &Payload) -> Vec<Range<usize>> {
    let mut spans = Vec::new();
    match payload {
        Payload::Observation(o) => {
            w.seq(o.entries.iter(), |w, e| {
                w.bytes32(&e.feed.to_bytes32())
                    .i128(e.price)
                    .u128(e.spread)
                    .u64(e.observed_at_ms)
                    .option(e.bid, |w, v| {
                        w.i128(v);
                    })
                    .option(e.ask, |w, v| {
                        w.i128(v);
                    })
                    .u16(e.venues)
                    .u16(e.min_venues)
                    .u8(e.flags);
            });
            w.seq(o.commitments.iter(), |w, s| {
                w.u8(suite_tag(s.suite)).seq(s.commitments.iter(), |w, c| {
                    w.bytes(c);
                });
            });
            encode_commands(w, &o.commands);
            w.seq(o.margin_roots.iter(), |w, m| {
                w.u64(m.round).bytes32(&m.root);
            });
            w.seq(o.relayed.iter(), |w, r| {
                w.bytes(&r.bytes);
            });
        }
        Payload::Proposal(p) => {
            w.u8(p.attempt).u64(p.timestamp_ms).bytes32(&p.merkle_root);
            encode_leaves(w, &p.leaves);
            w.seq(p.observations.iter(), |w, o| {
                w.bytes(o);
                spans.push(w.len() - o.len()..w.len());
            });
            w.seq(p.signing_packages.iter(), |w, s| {
                w.u8(suite_tag(s.suite)).bytes(&s.package);
            });
            w.seq(p.signer_observations.iter(), |w, o| {
                w.bytes(o);
                spans.push(w.len() - o.len()..w.len());
            });
            w.u64(p.key_set);
            encode_commands(w, &p.commands);
            encode_margin_state(w, p.margin_state.as_ref());
        }
        Payload::Share(s) => {
            w.u8(s.attempt)
                .bytes32(&s.report_digest)
                .seq(s.shares.iter(), |w, s| {
                    w.u8(suite_tag(s.suite))
                        .bytes32(&s.package_hash)
                        .bytes(&s.share);
                });
        }
        Payload::Report(report) => {
            w.u64(report.header.timestamp_ms)
                .bytes32(&report.header.merkle_root)
                .bytes32(&report.header.margin_root);
            encode_leaves(w, &report.leaves);
            w.seq(report.signatures.iter(), |w, (suite, sig)| {
                w.u8(suite_tag(*suite)).bytes(&sig.0);
            });
            encode_commands(w, &report.commands);
            encode_margin_state(w, report.margin_state.as_ref());
        }
        Payload::Refusal(f) => {
            w.u8(f.attempt)
                .bytes32(&f.report_digest)
                .u8(f.reason as u8)
                .u64(f.clock_ms);
        }
        Payload::Offers(o) => encode_commands(w, &o.commands),
    }
    spans
}

/// Canonical encoding of a list of leaves (used for byte-for-byte comparison).
pub fn encode_leaves(w: &mut Writer, leaves: &[ReportLeaf]) {
    w.seq(leaves.iter(), |w, l| {
        w.put(l);
    });
}

fn suite_tag(suite: Suite) -> u8 {
    match suite {
        Suite::Ed25519 => 1,
        Suite::Secp256k1Evm => 2,
    }
}

fn feed(r: &mut Reader<'_>, what: &'static str) -> Result<FeedId, DecodeError> {
    let at = r.position();
    let raw = r.bytes32(what)?;
    FeedId::from_bytes32(&raw).map_err(|e| DecodeError::Invalid {
        what,
        at,
        reason: e.to_string(),
    })
}

/// Checks strict ascending order of feed ids (one canonical encoding, no duplicates).
fn check_ascending<'a>(
    ids: impl Iterator<Item = &'a FeedId>,
    what: &'static str,
    at: usize,
) -> Result<(), DecodeError> {
    let mut prev: Option<&FeedId> = None;
    for id in ids {
        if prev.is_some_and(|p| p >= id) {
            return Err(DecodeError::NonCanonical { what, at });
        }
        prev = Some(id);
    }
    Ok(())
}

/// An offers message's body (commands strictly ascending: the codec
/// checks the order; [`check_offers`] that they are the sender's).
fn decode_offers(r: &mut Reader<'_>) -> Result<OffersMsg, DecodeError> {
    Ok(OffersMsg {
        commands: decode_commands(r, MAX_COMMANDS_PER_MEMBER)?,
    })
}

/// An offers message may carry only its sender's commands.
fn check_offers(msg: &SignedMessage) -> Result<(), DecodeError> {
    match &msg.payload {
        Payload::Offers(o) if o.commands.iter().any(|c| c.origin != msg.sender) => {
            Err(DecodeError::Invalid {
                what: "offered margin commands",
                at: 44,
                reason: format!("a command's origin is not the sender {}", msg.sender),
            })
        }
        _ => Ok(()),
    }
}

/// An observation's relayed offers: each a complete offers message of
/// another member (decoded here; its signature is checked by
/// [`SignedMessage::decode_hashed`]), origins strictly ascending.
fn decode_relayed(
    r: &mut Reader<'_>,
    config_digest: &ConfigDigest,
    sender: u16,
) -> Result<Vec<RelayedOffers>, DecodeError> {
    let at = r.position();
    let relayed = r.seq("relayed offers", MAX_RELAYED_OFFERS, 4, |r| {
        let at = r.position();
        let bytes = r.bytes("relayed offers", MAX_OFFERS_BYTES)?;
        let invalid = |reason: String| DecodeError::Invalid {
            what: "relayed offers",
            at,
            reason,
        };
        // Only an offers message is decoded (no nesting of observations).
        if bytes.get(43) != Some(&(Kind::Offers as u8)) {
            return Err(invalid("not an offers message".into()));
        }
        let (m, _, _) =
            decode_inner(bytes, config_digest, 0).map_err(|e| invalid(e.to_string()))?;
        check_offers(&m)?;
        let Payload::Offers(o) = m.payload else {
            return Err(invalid("not an offers message".into()));
        };
        if m.sender == sender {
            return Err(invalid("the sender's own offers".into()));
        }
        Ok(RelayedOffers {
            origin: m.sender,
            commands: o.commands,
            bytes: bytes.to_vec(),
        })
    })?;
    if relayed.windows(2).any(|p| p[0].origin >= p[1].origin) {
        return Err(DecodeError::NonCanonical {
            what: "relayed offers (origins strictly ascending)",
            at,
        });
    }
    Ok(relayed)
}

fn decode_observation(
    r: &mut Reader<'_>,
    max_feeds: usize,
    config_digest: &ConfigDigest,
    sender: u16,
) -> Result<ObservationMsg, DecodeError> {
    let at = r.position();
    let entries = r.seq("observation entries", max_feeds, ENTRY_MIN_BYTES, |r| {
        let feed = feed(r, "observation feed id")?;
        let price = r.i128("observation price")?;
        let spread = r.u128("observation spread")?;
        let observed_at_ms = r.u64("observation timestamp")?;
        let bid = r.option("observation bid", |r| r.i128("observation bid"))?;
        let ask = r.option("observation ask", |r| r.i128("observation ask"))?;
        let venues = r.u16("observation venues")?;
        let min_venues = r.u16("observation minimum venues")?;
        let at = r.position();
        let flags = r.u8("observation flags")?;
        if flags & !entry_flags::ALL != 0 {
            return Err(DecodeError::NonCanonical {
                what: "observation flags",
                at,
            });
        }
        Ok(ObservationEntry {
            feed,
            price,
            spread,
            observed_at_ms,
            bid,
            ask,
            venues,
            min_venues,
            flags,
        })
    })?;
    check_ascending(entries.iter().map(|e| &e.feed), "observation entries", at)?;
    let at = r.position();
    let commitments = r.seq("commitments", MAX_SUITES, 5, |r| {
        Ok(SuiteCommitments {
            suite: r.get()?,
            commitments: r.seq("commitments", MAX_COMMITMENTS, 4, |r| {
                Ok(r.bytes("commitment", MAX_SMALL_BYTES)?.to_vec())
            })?,
        })
    })?;
    check_suites(commitments.iter().map(|c| c.suite), "commitments", at)?;
    let commands = decode_commands(r, MAX_COMMANDS_PER_MEMBER)?;
    let at = r.position();
    let margin_roots = r.seq("attested margin roots", MAX_ATTESTED_ROOTS, 40, |r| {
        Ok(MarginCheckpoint {
            round: r.u64("attested margin round")?,
            root: r.bytes32("attested margin root")?,
        })
    })?;
    if margin_roots.windows(2).any(|p| p[0].round >= p[1].round) {
        return Err(DecodeError::NonCanonical {
            what: "attested margin roots (rounds strictly ascending)",
            at,
        });
    }
    let relayed = decode_relayed(r, config_digest, sender)?;
    Ok(ObservationMsg {
        entries,
        commitments,
        commands,
        margin_roots,
        relayed,
    })
}

fn decode_leaves(r: &mut Reader<'_>, max_feeds: usize) -> Result<Vec<ReportLeaf>, DecodeError> {
    let at = r.position();
    let leaves: Vec<ReportLeaf> = r.seq("leaves", max_feeds, crate::codec::LEAF_WIRE_LEN, |r| {
        r.get()
    })?;
    check_ascending(leaves.iter().map(|l| &l.feed_id), "leaves", at)?;
    Ok(leaves)
}

fn decode_proposal(
    r: &mut Reader<'_>,
    spans: &mut Vec<Range<usize>>,
    max_feeds: usize,
) -> Result<ProposalMsg, DecodeError> {
    let attempt = r.u8("attempt")?;
    let timestamp_ms = r.u64("proposal timestamp")?;
    let merkle_root = r.bytes32("merkle root")?;
    let leaves = decode_leaves(r, max_feeds)?;
    let observations = r.seq("attributed observations", MAX_MEMBERS, 4, |r| {
        let o = r.bytes("attributed observation", MAX_OBSERVATION_BYTES)?;
        spans.push(r.position() - o.len()..r.position());
        Ok(o.to_vec())
    })?;
    let at = r.position();
    let signing_packages = r.seq("signing packages", MAX_SUITES, 5, |r| {
        Ok(SuitePackage {
            suite: r.get()?,
            package: r.bytes("signing package", MAX_PACKAGE_BYTES)?.to_vec(),
        })
    })?;
    check_suites(
        signing_packages.iter().map(|p| p.suite),
        "signing packages",
        at,
    )?;
    let signer_observations = r.seq("signer-only observations", MAX_MEMBERS, 4, |r| {
        let o = r.bytes("signer-only observation", MAX_OBSERVATION_BYTES)?;
        spans.push(r.position() - o.len()..r.position());
        Ok(o.to_vec())
    })?;
    let key_set = r.u64("key set")?;
    let commands = decode_commands(r, MAX_REPORT_COMMANDS)?;
    let margin_state = decode_margin_state(r)?;
    Ok(ProposalMsg {
        attempt,
        timestamp_ms,
        merkle_root,
        leaves,
        observations,
        signing_packages,
        signer_observations,
        key_set,
        commands,
        margin_state,
    })
}

fn decode_share(r: &mut Reader<'_>) -> Result<ShareMsg, DecodeError> {
    let attempt = r.u8("attempt")?;
    let report_digest = r.bytes32("report digest")?;
    let at = r.position();
    let shares = r.seq("signature shares", MAX_SUITES, 1 + 32 + 4, |r| {
        Ok(SuiteShare {
            suite: r.get()?,
            package_hash: r.bytes32("signing package hash")?,
            share: r.bytes("signature share", MAX_SMALL_BYTES)?.to_vec(),
        })
    })?;
    check_suites(shares.iter().map(|s| s.suite), "signature shares", at)?;
    Ok(ShareMsg {
        attempt,
        report_digest,
        shares,
    })
}

/// Checks strict ascending order of suites (each suite at most once).
fn check_suites(
    suites: impl Iterator<Item = Suite>,
    what: &'static str,
    at: usize,
) -> Result<(), DecodeError> {
    let mut prev: Option<Suite> = None;
    for s in suites {
        if prev.is_some_and(|p| p >= s) {
            return Err(DecodeError::NonCanonical { what, at });
        }
        prev = Some(s);
    }
    Ok(())
}

fn decode_refusal(r: &mut Reader<'_>) -> Result<RefusalMsg, DecodeError> {
    let attempt = r.u8("attempt")?;
    let report_digest = r.bytes32("report digest")?;
    let at = r.position();
    let tag = r.u8("refusal reason")?;
    let reason = RefusalReason::from_tag(tag).ok_or(DecodeError::InvalidTag {
        what: "refusal reason",
        at,
        tag: tag.into(),
    })?;
    Ok(RefusalMsg {
        attempt,
        report_digest,
        reason,
        clock_ms: r.u64("refusal clock")?,
    })
}

fn decode_report_body(
    r: &mut Reader<'_>,
    config_digest: ConfigDigest,
    round: Round,
    max_feeds: usize,
) -> Result<SignedReport, DecodeError> {
    let timestamp_ms = r.u64("report timestamp")?;
    let merkle_root = r.bytes32("merkle root")?;
    let margin_root = r.bytes32("margin root")?;
    let leaves = decode_leaves(r, max_feeds)?;
    let at = r.position();
    let sigs = r.seq("signatures", 2, 5, |r| {
        let at = r.position();
        let suite = match r.u8("suite")? {
            1 => Suite::Ed25519,
            2 => Suite::Secp256k1Evm,
            tag => {
                return Err(DecodeError::InvalidTag {
                    what: "suite",
                    at,
                    tag: tag.into(),
                });
            }
        };
        Ok((
            suite,
            SignatureBytes(r.bytes("signature", MAX_SMALL_BYTES)?.to_vec()),
        ))
    })?;
    let mut signatures = BTreeMap::new();
    let mut prev = None;
    for (suite, sig) in sigs {
        if prev.is_some_and(|p| p >= suite) {
            return Err(DecodeError::NonCanonical {
                what: "signatures",
                at,
            });
        }
        prev = Some(suite);
        signatures.insert(suite, sig);
    }
    let commands = decode_commands(r, MAX_REPORT_COMMANDS)?;
    let margin_state = decode_margin_state(r)?;
    Ok(SignedReport {
        header: ReportHeader {
            version: PROTOCOL_VERSION,
            config_digest,
            round,
            timestamp_ms,
            merkle_root,
            margin_root,
        },
        leaves,
        signatures,
        commands,
        margin_state,
    })
}
