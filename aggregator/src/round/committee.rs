//! The committee as the round protocol sees it: members (FROST identifier and
//! identity key), fault bound, threshold, leader schedule, feeds and timeouts.

use crate::report::{ConfigDigest, FeedId, Round, Suite};
use ed25519_dalek::VerifyingKey;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// One committee member.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// FROST identifier, `1..=n`, equal to the member's position + 1.
    pub index: u16,
    /// Ed25519 identity public key (the libp2p identity key's public half).
    #[serde(with = "hex::serde")]
    pub identity: [u8; 32],
}

/// A feed and its update policy.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FeedConfig {
    pub id: FeedId,
    /// Fixed-point decimals of the feed's prices.
    pub decimals: u8,
    /// Update when the aggregate moved at least this many basis points.
    pub deviation_bps: u32,
    /// Update at least this often.
    pub heartbeat_ms: u64,
    /// Band and jump bounds: what the leaf flags (never clamps).
    #[serde(default)]
    pub policy: FeedPolicy,
}

/// A feed's flag bounds (docs/PROTOCOL.md, "Status and flags"). Crossing one
/// sets a flag in the leaf; no price is ever floored, capped or held back.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FeedPolicy {
    /// Below this price the leaf is flagged `out_of_band`.
    pub band_min: Option<crate::report::Price>,
    /// Above this price the leaf is flagged `out_of_band`.
    pub band_max: Option<crate::report::Price>,
    /// A move of more than this many basis points from the feed's previous
    /// signed leaf is flagged `unconfirmed_jump`; 0: no bound.
    pub max_jump_bps: u32,
    /// A confidence wider than this many basis points of the price is
    /// flagged `wide_confidence`; 0: no bound.
    pub max_confidence_bps: u32,
}

/// Protocol timeouts, all in milliseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Timeouts {
    /// How long after the round's start the leader waits for more than
    /// `2f + 1` observations before it proposes with what it has (it
    /// proposes at once when all `n` arrived; with 0, as soon as it holds
    /// `2f + 1`).
    pub observe_ms: u64,
    /// How long the leader waits for the signers' shares before it retries
    /// without the silent ones.
    pub share_ms: u64,
    /// Pacemaker: without a signed report by this time after entering a round,
    /// everyone moves to the next round (and leader).
    pub round_ms: u64,
    /// The round grid: a round that follows a signed report starts at the
    /// next multiple of this (milliseconds since the Unix epoch), so the
    /// committee observes in lockstep, one round per slot.
    pub round_interval_ms: u64,
    /// How far a report or observation timestamp may be from a member's clock.
    pub max_clock_skew_ms: u64,
    /// Observations older than this (relative to the report timestamp) are
    /// left out of the aggregate.
    pub max_observation_age_ms: u64,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            observe_ms: 250,
            share_ms: 400,
            round_ms: 2_000,
            round_interval_ms: 500,
            max_clock_skew_ms: 2_000,
            max_observation_age_ms: 5_000,
        }
    }
}

/// Why a committee description is unusable.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CommitteeError {
    #[error("committee has {n} members; need n >= 3f + 1 = {need} for f = {f}")]
    TooSmall { n: usize, f: u16, need: usize },
    #[error(
        "threshold t = {t} outside 2f + 1 ..= n - f = {lo}..={hi}: below 2f + 1, f faulty members could get two different reports signed in one round; the default is t = 2f + 1"
    )]
    BadThreshold { t: u16, lo: usize, hi: usize },
    #[error(
        "member at position {position} has index {index}; members must be numbered 1..=n in order"
    )]
    BadIndex { position: usize, index: u16 },
    #[error("member {index} has an invalid ed25519 identity key")]
    BadIdentity { index: u16 },
    #[error("members {a} and {b} share an identity key")]
    DuplicateIdentity { a: u16, b: u16 },
    #[error("committee lists no feeds")]
    NoFeeds,
    #[error("feed {0} is listed twice")]
    DuplicateFeed(FeedId),
    #[error("committee has more than {max} members", max = super::message::MAX_MEMBERS)]
    TooManyMembers,
    #[error("committee has more than {max} feeds", max = super::message::MAX_FEEDS)]
    TooManyFeeds,
}

/// The committee: validated, with parsed identity keys.
#[derive(Clone, Debug)]
pub struct Committee {
    members: Vec<Member>,
    identities: Vec<VerifyingKey>,
    t: u16,
    f: u16,
    leader_seed: u64,
    feeds: BTreeMap<FeedId, FeedConfig>,
    config_digest: ConfigDigest,
    timeouts: Timeouts,
}

impl Committee {
    /// Validates and builds a committee. `config_digest` is the hash of the
    /// committee file (the driver computes it).
    pub fn new(
        members: Vec<Member>,
        t: u16,
        f: u16,
        leader_seed: u64,
        feeds: Vec<FeedConfig>,
        config_digest: ConfigDigest,
        timeouts: Timeouts,
    ) -> Result<Self, CommitteeError> {
        let n = members.len();
        if n > super::message::MAX_MEMBERS {
            return Err(CommitteeError::TooManyMembers);
        }
        let need = 3 * usize::from(f) + 1;
        if n < need {
            return Err(CommitteeError::TooSmall { n, f, need });
        }
        // t >= 2f + 1: any two signer sets of t share f + 1 members, one of
        // them honest, so two different reports cannot both be signed in one
        // round. t <= n - f: f silent members cannot stop the committee.
        let (lo, hi) = (2 * usize::from(f) + 1, n - usize::from(f));
        if usize::from(t) < lo || usize::from(t) > hi {
            return Err(CommitteeError::BadThreshold { t, lo, hi });
        }
        let mut identities = Vec::with_capacity(n);
        let mut seen: BTreeMap<[u8; 32], u16> = BTreeMap::new();
        for (position, m) in members.iter().enumerate() {
            if usize::from(m.index) != position + 1 {
                return Err(CommitteeError::BadIndex {
                    position,
                    index: m.index,
                });
            }
            let key = VerifyingKey::from_bytes(&m.identity)
                .map_err(|_| CommitteeError::BadIdentity { index: m.index })?;
            if let Some(a) = seen.insert(m.identity, m.index) {
                return Err(CommitteeError::DuplicateIdentity { a, b: m.index });
            }
            identities.push(key);
        }
        if feeds.is_empty() {
            return Err(CommitteeError::NoFeeds);
        }
        if feeds.len() > super::message::MAX_FEEDS {
            return Err(CommitteeError::TooManyFeeds);
        }
        let mut map = BTreeMap::new();
        for feed in feeds {
            let id = feed.id.clone();
            if map.insert(id.clone(), feed).is_some() {
                return Err(CommitteeError::DuplicateFeed(id));
            }
        }
        Ok(Self {
            members,
            identities,
            t,
            f,
            leader_seed,
            feeds: map,
            config_digest,
            timeouts,
        })
    }

    pub fn n(&self) -> usize {
        self.members.len()
    }
    pub fn t(&self) -> u16 {
        self.t
    }
    pub fn f(&self) -> u16 {
        self.f
    }
    /// The pacemaker's round timeout: the committee's `round_ms`, but at
    /// least `observe_ms + attempts * share_ms`, the time the leader needs
    /// to wait for observations and run every signing attempt. Shorter, and
    /// `f` members withholding their shares could run an honest leader out
    /// of time (n = 10 with the default timeouts needs 2,250 ms, not 2,000).
    pub fn round_ms(&self) -> u64 {
        let t = &self.timeouts;
        let attempts = self.attempts() as u64;
        t.round_ms.max(
            t.observe_ms
                .saturating_add(attempts.saturating_mul(t.share_ms)),
        )
    }
    /// `2f + 1`: observations needed per feed, and for a proposal.
    pub fn quorum(&self) -> usize {
        2 * usize::from(self.f) + 1
    }
    /// Signing attempts per round (FROST commitments per observation):
    /// `f + 2`, at least 3. Each failed attempt (a refusal, an invalid share,
    /// a silent signer) takes at least one faulty member out of the next
    /// attempt, so `f + 1` attempts always reach an all-honest signer set;
    /// one more covers an honest signer that was only slow.
    pub fn attempts(&self) -> usize {
        (usize::from(self.f) + 2).clamp(3, super::message::MAX_COMMITMENTS)
    }
    pub fn members(&self) -> &[Member] {
        &self.members
    }
    pub fn feeds(&self) -> &BTreeMap<FeedId, FeedConfig> {
        &self.feeds
    }
    pub fn config_digest(&self) -> &ConfigDigest {
        &self.config_digest
    }
    pub fn timeouts(&self) -> &Timeouts {
        &self.timeouts
    }
    pub fn leader_seed(&self) -> u64 {
        self.leader_seed
    }

    /// Whether `index` names a member.
    pub fn is_member(&self, index: u16) -> bool {
        index >= 1 && usize::from(index) <= self.members.len()
    }

    /// Identity key of member `index`, if it is one.
    pub fn identity(&self, index: u16) -> Option<&VerifyingKey> {
        if !self.is_member(index) {
            return None;
        }
        self.identities.get(usize::from(index) - 1)
    }

    /// `L(r) = members[(r + seed) mod n]`.
    pub fn leader(&self, round: Round) -> u16 {
        let n = self.members.len() as u64;
        let pos = (round % n + self.leader_seed % n) % n;
        // `pos < n`, a `usize`.
        #[allow(clippy::cast_possible_truncation)]
        self.members[pos as usize].index
    }
}

/// Domain separator of the committee's config digest ([`committee_digest`]).
pub const COMMITTEE_DIGEST_DOMAIN: &[u8] = b"sibyl-committee-v3\0";

/// The committee's config digest: what every report and message carries and
/// every key is bound to. Specified byte for byte in docs/PROTOCOL.md
/// ("Config digest"); independent of any serde encoding. Members' network
/// addresses are not part of it: moving a host leaves the committee's
/// signing identity unchanged (the identity key authenticates the member
/// wherever it runs).
///
/// `keccak256(COMMITTEE_DIGEST_DOMAIN ‖ body)`, integers big-endian:
///
/// ```text
/// u16 threshold
/// u8  suite count ‖ suite tags (1 ed25519, 2 secp256k1-evm), ascending, no repeats
/// u64 leader_seed
/// u64 round_interval_ms ‖ u64 observe_ms ‖ u64 share_ms ‖ u64 round_ms
///     ‖ u64 max_clock_skew_ms ‖ u64 max_observation_age_ms
/// u16 member count ‖ per member, by index: u16 index ‖ 32-byte Ed25519 identity key
/// u16 feed count ‖ per feed, by id: u8 id length ‖ id (ASCII)
///     ‖ u8 decimals ‖ u32 deviation_bps ‖ u64 heartbeat_ms
///     ‖ band_min ‖ band_max (each u8 0 = none, or u8 1 ‖ i128)
///     ‖ u32 max_jump_bps ‖ u32 max_confidence_bps
/// ```
///
/// Suites, members and feeds are sorted here, so their order in a file does
/// not matter.
pub fn committee_digest(
    threshold: u16,
    suites: &[Suite],
    leader_seed: u64,
    timeouts: &Timeouts,
    members: &[Member],
    feeds: &[FeedConfig],
) -> ConfigDigest {
    use sha3::{Digest, Keccak256};
    let mut h = Keccak256::new();
    h.update(COMMITTEE_DIGEST_DOMAIN);
    h.update(threshold.to_be_bytes());
    let tags: BTreeSet<u8> = suites.iter().map(|s| crate::codec::suite_tag(*s)).collect();
    h.update([u8::try_from(tags.len()).unwrap_or(u8::MAX)]);
    h.update(tags.iter().copied().collect::<Vec<u8>>());
    h.update(leader_seed.to_be_bytes());
    for t in [
        timeouts.round_interval_ms,
        timeouts.observe_ms,
        timeouts.share_ms,
        timeouts.round_ms,
        timeouts.max_clock_skew_ms,
        timeouts.max_observation_age_ms,
    ] {
        h.update(t.to_be_bytes());
    }
    let mut members: Vec<&Member> = members.iter().collect();
    members.sort_by_key(|m| m.index);
    h.update(
        u16::try_from(members.len())
            .unwrap_or(u16::MAX)
            .to_be_bytes(),
    );
    for m in members {
        h.update(m.index.to_be_bytes());
        h.update(m.identity);
    }
    let mut feeds: Vec<&FeedConfig> = feeds.iter().collect();
    feeds.sort_by(|a, b| a.id.cmp(&b.id));
    h.update(u16::try_from(feeds.len()).unwrap_or(u16::MAX).to_be_bytes());
    for f in feeds {
        let id = f.id.as_str().as_bytes();
        h.update([u8::try_from(id.len()).unwrap_or(u8::MAX)]);
        h.update(id);
        h.update([f.decimals]);
        h.update(f.deviation_bps.to_be_bytes());
        h.update(f.heartbeat_ms.to_be_bytes());
        for bound in [f.policy.band_min, f.policy.band_max] {
            match bound {
                None => h.update([0u8]),
                Some(v) => {
                    h.update([1u8]);
                    h.update(v.to_be_bytes());
                }
            }
        }
        h.update(f.policy.max_jump_bps.to_be_bytes());
        h.update(f.policy.max_confidence_bps.to_be_bytes());
    }
    ConfigDigest(h.finalize().into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha3::{Digest, Keccak256};

    fn feed(id: &str, decimals: u8) -> FeedConfig {
        FeedConfig {
            id: FeedId::new(id).expect("a feed id"),
            decimals,
            deviation_bps: 50,
            heartbeat_ms: 60_000,
            policy: FeedPolicy::default(),
        }
    }

    fn members() -> Vec<Member> {
        (1..=4u16)
            .map(|i| Member {
                index: i,
                identity: [i as u8; 32],
            })
            .collect()
    }

    /// The digest is keccak256 of exactly the bytes PROTOCOL.md lists,
    /// written out here by hand.
    #[test]
    fn the_digest_hashes_the_specified_bytes() {
        let t = Timeouts::default();
        let feeds = [feed("ETH-USD", 8), feed("BTC-USD", 6)];
        let got = committee_digest(
            3,
            &[Suite::Secp256k1Evm, Suite::Ed25519],
            7,
            &t,
            &members(),
            &feeds,
        );
        let mut pre = b"sibyl-committee-v3\0".to_vec();
        pre.extend_from_slice(&[0, 3]); // threshold
        pre.extend_from_slice(&[2, 1, 2]); // two suites, tags ascending
        pre.extend_from_slice(&7u64.to_be_bytes());
        for v in [500u64, 250, 400, 2_000, 2_000, 5_000] {
            pre.extend_from_slice(&v.to_be_bytes());
        }
        pre.extend_from_slice(&[0, 4]);
        for i in 1..=4u8 {
            pre.extend_from_slice(&[0, i]);
            pre.extend_from_slice(&[i; 32]);
        }
        pre.extend_from_slice(&[0, 2]);
        for (id, dec) in [("BTC-USD", 6u8), ("ETH-USD", 8)] {
            pre.push(id.len() as u8);
            pre.extend_from_slice(id.as_bytes());
            pre.push(dec);
            pre.extend_from_slice(&50u32.to_be_bytes());
            pre.extend_from_slice(&60_000u64.to_be_bytes());
            pre.extend_from_slice(&[0, 0]); // no band
            pre.extend_from_slice(&[0; 8]); // no jump or confidence bound
        }
        let want: [u8; 32] = Keccak256::digest(&pre).into();
        assert_eq!(got.0, want);
    }

    #[test]
    fn order_does_not_matter_and_substance_does() {
        let t = Timeouts::default();
        let mut m = members();
        let feeds = [feed("BTC-USD", 8), feed("ETH-USD", 8)];
        let a = committee_digest(3, &[Suite::Ed25519], 7, &t, &m, &feeds);
        m.reverse();
        let rev = [feeds[1].clone(), feeds[0].clone()];
        assert_eq!(
            a,
            committee_digest(3, &[Suite::Ed25519, Suite::Ed25519], 7, &t, &m, &rev)
        );
        assert_ne!(a, committee_digest(2, &[Suite::Ed25519], 7, &t, &m, &feeds));
        assert_ne!(a, committee_digest(3, &[Suite::Ed25519], 8, &t, &m, &feeds));
        let slower = Timeouts { share_ms: 401, ..t };
        assert_ne!(
            a,
            committee_digest(3, &[Suite::Ed25519], 7, &slower, &m, &feeds)
        );
        let mut banded = feeds.clone();
        banded[0].policy.band_min = Some(0);
        assert_ne!(
            a,
            committee_digest(3, &[Suite::Ed25519], 7, &t, &m, &banded)
        );
        banded[0].policy.band_min = None;
        banded[0].policy.max_jump_bps = 1;
        assert_ne!(
            a,
            committee_digest(3, &[Suite::Ed25519], 7, &t, &m, &banded)
        );
        m[0].identity[0] ^= 1;
        assert_ne!(a, committee_digest(3, &[Suite::Ed25519], 7, &t, &m, &feeds));
    }
}
