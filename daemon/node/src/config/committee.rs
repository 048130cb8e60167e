//! `committee.toml`: the file as written, the validated committee and its
//! config digest.

use super::*;

// ---------------------------------------------------------------------------
// Committee file (committee.toml)
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CommitteeFile {
    threshold: Spanned<u16>,
    #[serde(default = "default_suites")]
    suites: Spanned<Vec<Suite>>,
    #[serde(default)]
    leader_seed: u64,
    #[serde(default)]
    round: RoundFile,
    #[serde(default)]
    members: Vec<Spanned<MemberFile>>,
    #[serde(default)]
    feeds: Vec<Spanned<FeedFile>>,
}

pub(crate) fn default_suites() -> Spanned<Vec<Suite>> {
    Spanned::new(0..0, vec![Suite::Ed25519])
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct MemberFile {
    index: Spanned<u16>,
    peer_id: Spanned<String>,
    address: Spanned<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FeedFile {
    id: Spanned<String>,
    decimals: Spanned<u8>,
    #[serde(default = "default_deviation")]
    deviation_bps: Spanned<u32>,
    #[serde(default = "default_heartbeat")]
    heartbeat: Spanned<ConfigDuration>,
    /// Lowest plausible price, a decimal in the feed's units ("0.01").
    #[serde(default)]
    band_min: Option<Spanned<String>>,
    /// Highest plausible price, likewise.
    #[serde(default)]
    band_max: Option<Spanned<String>>,
    #[serde(default = "default_max_jump")]
    max_jump_bps: Spanned<u32>,
    #[serde(default = "default_max_confidence")]
    max_confidence_bps: Spanned<u32>,
}

/// A move of more than 10 % in one leaf is flagged `unconfirmed_jump`.
pub(crate) fn default_max_jump() -> Spanned<u32> {
    Spanned::new(0..0, 1_000)
}
/// A confidence wider than 2 % of the price is flagged `wide_confidence`.
pub(crate) fn default_max_confidence() -> Spanned<u32> {
    Spanned::new(0..0, 200)
}

/// Most a jump or confidence bound may be: 1000 %.
const MAX_BOUND_BPS: u32 = 100_000;

/// Most decimals a feed may have when the committee signs for EVM chains:
/// SibylFeed stores a price as int96 and a confidence as uint72 (its
/// MAX_DECIMALS), so with 18 decimals prices up to 3.9e10 units and
/// confidences up to 4,722 units fit; more decimals leave less.
pub const EVM_MAX_DECIMALS: u8 = 18;
/// SibylFeed's stored price range (int96).
const EVM_PRICE_MAX: i128 = (1 << 95) - 1;

/// `"123.45"` as a fixed-point integer with `decimals` decimals; `None` if it
/// is not a plain decimal, has more fractional digits, or does not fit.
pub(crate) fn parse_fixed(text: &str, decimals: u8) -> Option<sibyl_aggregator::Price> {
    let (neg, body) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let (int, frac) = body.split_once('.').unwrap_or((body, ""));
    if int.is_empty()
        || frac.len() > usize::from(decimals)
        || !int.bytes().chain(frac.bytes()).all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let scale = 10i128.checked_pow(u32::from(decimals))?;
    let int: i128 = int.parse().ok()?;
    let frac_digits = u32::try_from(frac.len()).ok()?;
    let frac: i128 = if frac.is_empty() {
        0
    } else {
        frac.parse().ok()?
    };
    let frac = frac.checked_mul(10i128.checked_pow(u32::from(decimals) - frac_digits)?)?;
    let v = int.checked_mul(scale)?.checked_add(frac)?;
    Some(if neg { -v } else { v })
}

pub(crate) fn default_deviation() -> Spanned<u32> {
    Spanned::new(0..0, 50)
}
pub(crate) fn default_heartbeat() -> Spanned<ConfigDuration> {
    Spanned::new(0..0, ConfigDuration::from_millis(60_000))
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RoundFile {
    #[serde(default = "default_interval")]
    interval: Spanned<ConfigDuration>,
    #[serde(default = "default_observation_timeout")]
    observation_timeout: Spanned<ConfigDuration>,
    #[serde(default = "default_share_timeout")]
    share_timeout: Spanned<ConfigDuration>,
    #[serde(default = "default_round_timeout")]
    round_timeout: Spanned<ConfigDuration>,
    #[serde(default = "default_max_clock_skew")]
    max_clock_skew: Spanned<ConfigDuration>,
    #[serde(default = "default_max_observation_age")]
    max_observation_age: Spanned<ConfigDuration>,
}

pub(crate) fn default_interval() -> Spanned<ConfigDuration> {
    Spanned::new(0..0, ConfigDuration::from_millis(1000))
}
pub(crate) fn default_observation_timeout() -> Spanned<ConfigDuration> {
    Spanned::new(0..0, ConfigDuration::from_millis(200))
}
pub(crate) fn default_share_timeout() -> Spanned<ConfigDuration> {
    Spanned::new(0..0, ConfigDuration::from_millis(400))
}
pub(crate) fn default_max_observation_age() -> Spanned<ConfigDuration> {
    Spanned::new(0..0, ConfigDuration::from_millis(5000))
}
pub(crate) fn default_round_timeout() -> Spanned<ConfigDuration> {
    Spanned::new(0..0, ConfigDuration::from_millis(2000))
}
pub(crate) fn default_max_clock_skew() -> Spanned<ConfigDuration> {
    Spanned::new(0..0, ConfigDuration::from_millis(2000))
}

impl Default for RoundFile {
    fn default() -> Self {
        Self {
            interval: default_interval(),
            observation_timeout: default_observation_timeout(),
            share_timeout: default_share_timeout(),
            round_timeout: default_round_timeout(),
            max_clock_skew: default_max_clock_skew(),
            max_observation_age: default_max_observation_age(),
        }
    }
}

/// A committee member, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// FROST identifier, 1..=n.
    pub index: u16,
    pub peer_id: PeerId,
    /// Ed25519 identity public key (extracted from the PeerId).
    pub identity_key: [u8; 32],
    pub address: Multiaddr,
}

/// A feed's parameters, validated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FeedParams {
    pub id: FeedId,
    pub decimals: u8,
    /// Publish when the price moves by at least this many basis points...
    pub deviation_bps: u32,
    /// ...or when this much time has passed since the last published value.
    pub heartbeat_ms: u64,
    /// Band, jump and confidence bounds the leaf flags (docs/PROTOCOL.md, "Status and flags").
    pub policy: sibyl_aggregator::round::committee::FeedPolicy,
}

/// Round timing, validated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct RoundTiming {
    /// Time between round starts.
    pub interval_ms: u64,
    /// How long the leader waits for more than `2f + 1` observations.
    pub observation_timeout_ms: u64,
    /// How long the leader waits for signature shares before retrying without the silent signers.
    pub share_timeout_ms: u64,
    /// Pacemaker: no signed report by then, move to the next round and leader.
    pub round_timeout_ms: u64,
    /// Largest accepted difference between a report's timestamp and our clock.
    pub max_clock_skew_ms: u64,
    /// Observations older than this (relative to the report timestamp) are left out.
    pub max_observation_age_ms: u64,
}

/// The committee file, validated. Identical on every member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Committee {
    pub threshold: u16,
    pub suites: Vec<Suite>,
    pub leader_seed: u64,
    pub round: RoundTiming,
    /// Sorted by index; `members[i].index == i + 1`.
    pub members: Vec<Member>,
    /// Sorted by feed id.
    pub feeds: Vec<FeedParams>,
    /// Hash of the canonical form; see the module docs.
    pub digest: ConfigDigest,
}

impl Committee {
    pub fn n(&self) -> u16 {
        self.members.len() as u16
    }

    /// Largest number of faulty members tolerated: `f = floor((n - 1) / 3)`.
    pub fn max_faulty(&self) -> u16 {
        max_faulty(self.n())
    }

    pub fn member(&self, index: u16) -> Option<&Member> {
        self.members.iter().find(|m| m.index == index)
    }

    pub fn member_by_peer(&self, peer: &PeerId) -> Option<&Member> {
        self.members.iter().find(|m| &m.peer_id == peer)
    }

    /// How `new` changes this committee's membership: (the members it
    /// removes, the members it adds), by index. Refused, with the reason,
    /// when the threshold or the suites differ or a member in both has
    /// another identity: a removal (`sibyl refresh --new-committee`) and an
    /// addition (`sibyl repair --new-committee`) keep all three.
    pub fn membership_change(&self, new: &Committee) -> Result<(Vec<u16>, Vec<u16>), String> {
        if new.threshold != self.threshold {
            return Err(format!(
                "the new committee's threshold is {}, the current one's {}: a membership change keeps the threshold (changing it takes a new DKG and a hand-over)",
                new.threshold, self.threshold
            ));
        }
        if new.suites != self.suites {
            return Err(format!(
                "the new committee signs with {:?}, the current one with {:?}: a membership change keeps the suites",
                new.suites, self.suites
            ));
        }
        if let Some(m) = new
            .members
            .iter()
            .find(|m| self.member(m.index).is_some_and(|c| c.peer_id != m.peer_id))
        {
            return Err(format!(
                "member {} has another identity (peer id) in the new committee than in the current one",
                m.index
            ));
        }
        let removed = self
            .members
            .iter()
            .map(|c| c.index)
            .filter(|i| new.member(*i).is_none())
            .collect();
        let added = new
            .members
            .iter()
            .map(|m| m.index)
            .filter(|i| self.member(*i).is_none())
            .collect();
        Ok((removed, added))
    }

    pub fn feed(&self, id: &FeedId) -> Option<&FeedParams> {
        self.feeds.iter().find(|f| &f.id == id)
    }

    /// The protocol's view of the members, feeds and timeouts.
    pub(crate) fn protocol_parts(
        &self,
    ) -> (
        Vec<sibyl_aggregator::round::committee::Member>,
        Vec<sibyl_aggregator::round::committee::FeedConfig>,
        sibyl_aggregator::round::committee::Timeouts,
    ) {
        use sibyl_aggregator::round::committee as pc;
        let members = self
            .members
            .iter()
            .map(|m| pc::Member {
                index: m.index,
                identity: m.identity_key,
            })
            .collect();
        let feeds = self
            .feeds
            .iter()
            .map(|f| pc::FeedConfig {
                id: f.id.clone(),
                decimals: f.decimals,
                deviation_bps: f.deviation_bps,
                heartbeat_ms: f.heartbeat_ms,
                policy: f.policy,
            })
            .collect();
        let t = &self.round;
        let timeouts = pc::Timeouts {
            observe_ms: t.observation_timeout_ms,
            share_ms: t.share_timeout_ms,
            round_ms: t.round_timeout_ms,
            round_interval_ms: t.interval_ms,
            max_clock_skew_ms: t.max_clock_skew_ms,
            max_observation_age_ms: t.max_observation_age_ms,
        };
        (members, feeds, timeouts)
    }

    /// The config digest (`sibyl_aggregator::round::committee::committee_digest`,
    /// docs/PROTOCOL.md "Config digest"); members' addresses are not in it.
    pub(crate) fn compute_digest(&self) -> ConfigDigest {
        let (members, feeds, timeouts) = self.protocol_parts();
        sibyl_aggregator::round::committee::committee_digest(
            self.threshold,
            &self.suites,
            self.leader_seed,
            &timeouts,
            &members,
            &feeds,
        )
    }

    /// Parses and validates a committee file's text. `file` is only used in messages.
    pub fn parse(file: &Path, src: &str) -> Result<Committee, ConfigError> {
        let mut report = Report::new(file, src);
        let raw: CommitteeFile = match toml::from_str(src) {
            Ok(raw) => raw,
            Err(e) => {
                report.toml_errors(&e);
                return Err(ConfigError::Invalid(report.problems));
            }
        };
        match validate_committee(raw, &mut report) {
            Some(c) if report.problems.is_empty() => Ok(c),
            _ => Err(ConfigError::Invalid(report.problems)),
        }
    }

    pub fn load(path: &Path) -> Result<Committee, ConfigError> {
        let src = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(path, &src)
    }
}

impl Committee {
    /// The committee as the round protocol sees it.
    pub fn to_protocol(
        &self,
    ) -> Result<
        sibyl_aggregator::round::committee::Committee,
        sibyl_aggregator::round::committee::CommitteeError,
    > {
        use sibyl_aggregator::round::committee as pc;
        let (members, feeds, timeouts) = self.protocol_parts();
        pc::Committee::new(
            members,
            self.threshold,
            self.max_faulty(),
            self.leader_seed,
            feeds,
            self.digest,
            timeouts,
        )
    }
}

/// `f = floor((n - 1) / 3)`.
pub fn max_faulty(n: u16) -> u16 {
    n.saturating_sub(1) / 3
}

/// Extracts the Ed25519 public key a PeerId was derived from.
pub fn ed25519_key_of(peer: &PeerId) -> Option<[u8; 32]> {
    let mh: &multiaddr::multihash::Multihash<64> = peer.as_ref();
    if mh.code() != 0 {
        return None; // not an identity multihash: the key isn't inlined
    }
    let pk = libp2p_identity::PublicKey::try_decode_protobuf(mh.digest()).ok()?;
    pk.try_into_ed25519().ok().map(|k| k.to_bytes())
}

pub(crate) fn span<T>(s: &Spanned<T>) -> Option<Range<usize>> {
    let r = s.span();
    if r.start == 0 && r.end == 0 {
        None
    } else {
        Some(r)
    }
}

pub(crate) fn validate_committee(raw: CommitteeFile, r: &mut Report<'_>) -> Option<Committee> {
    // Members.
    let n = raw.members.len();
    if n == 0 {
        r.at(
            None,
            "members",
            "the committee has no members",
            "add one [[members]] table per member with index, peer_id and address",
        );
    }
    if n > MAX_MEMBERS {
        r.at(
            None,
            "members",
            format!("{n} members is more than the round protocol takes ({MAX_MEMBERS})"),
            format!("a committee has at most {MAX_MEMBERS} members"),
        );
    }
    let mut members = Vec::new();
    let mut seen_index = BTreeMap::new();
    let mut seen_peer = BTreeMap::new();
    let mut seen_addr = BTreeMap::new();
    for (i, m) in raw.members.iter().enumerate() {
        let m = m.get_ref();
        let key = |field: &str| format!("members[{i}].{field}");
        let index = *m.index.get_ref();
        if index == 0 || usize::from(index) > n {
            r.at(
                span(&m.index),
                key("index"),
                format!("index {index} is out of range"),
                format!("members are numbered 1..={n}, one index each"),
            );
        } else if let Some(prev) = seen_index.insert(index, i) {
            r.at(
                span(&m.index),
                key("index"),
                format!("index {index} is also used by members[{prev}]"),
                "give every member its own index 1..=n",
            );
        }
        let peer = match m.peer_id.get_ref().parse::<PeerId>() {
            Ok(p) => match ed25519_key_of(&p) {
                Some(k) => Some((p, k)),
                None => {
                    r.at(span(&m.peer_id), key("peer_id"), format!("{} is not the PeerId of an Ed25519 key", m.peer_id.get_ref()), "members use Ed25519 identity keys; their PeerIds start with 12D3KooW (see `sibyl keygen`)");
                    None
                }
            },
            Err(e) => {
                r.at(span(&m.peer_id), key("peer_id"), format!("{:?} is not a valid PeerId: {e}", m.peer_id.get_ref()), "copy the member's PeerId exactly as `sibyl keygen` printed it (starts with 12D3KooW)");
                None
            }
        };
        if let Some((p, _)) = &peer
            && let Some(prev) = seen_peer.insert(*p, i)
        {
            r.at(
                span(&m.peer_id),
                key("peer_id"),
                format!("PeerId is also used by members[{prev}]"),
                "every member needs its own identity key",
            );
        }
        let addr = match parse_member_address(m.address.get_ref()) {
            Ok(a) => Some(a),
            Err(msg) => {
                r.at(span(&m.address), key("address"), msg, "write it like \"/ip4/10.0.0.5/tcp/9000\" or \"/dns/node1.example.org/tcp/9000\"");
                None
            }
        };
        if let Some(a) = &addr
            && let Some(prev) = seen_addr.insert(a.clone(), i)
        {
            r.at(
                span(&m.address),
                key("address"),
                format!("address is also used by members[{prev}]"),
                "every member listens on its own address",
            );
        }
        if let (Some((peer_id, identity_key)), Some(address)) = (peer, addr) {
            members.push(Member {
                index,
                peer_id,
                identity_key,
                address,
            });
        }
    }
    members.sort_by_key(|m| m.index);

    // Threshold.
    let t = *raw.threshold.get_ref();
    if n > 0 && n <= usize::from(u16::MAX) {
        let n16 = n as u16;
        let f = max_faulty(n16);
        // Below 2f + 1, f faulty members plus honest ones could sign two
        // different reports in one round (two signer sets need not overlap
        // in an honest member).
        let lo = 2 * f + 1;
        let hi = n16 - f;
        if t < lo || t > hi || t == 0 {
            r.at(
                span(&raw.threshold),
                "threshold",
                format!("threshold {t} is outside {lo}..={hi} for n = {n} (tolerating f = {f} faulty members)"),
                format!("use t with 2f + 1 <= t <= n - f (below 2f + 1, f faulty members can get two different reports signed in one round); the usual choice is 2f + 1 = {}", 2 * f + 1),
            );
        }
    }

    // Suites.
    let mut suites = raw.suites.get_ref().clone();
    if suites.is_empty() {
        r.at(
            span(&raw.suites),
            "suites",
            "no signature suite",
            "use suites = [\"ed25519\"], or [\"secp256k1-evm\"] for the EVM path",
        );
    }
    let before = suites.len();
    suites.sort();
    suites.dedup();
    if suites.len() != before {
        r.at(
            span(&raw.suites),
            "suites",
            "a suite is listed twice",
            "list each suite once",
        );
    }

    // Round timing.
    let rt = &raw.round;
    let round = RoundTiming {
        interval_ms: rt.interval.get_ref().as_millis(),
        observation_timeout_ms: rt.observation_timeout.get_ref().as_millis(),
        share_timeout_ms: rt.share_timeout.get_ref().as_millis(),
        round_timeout_ms: rt.round_timeout.get_ref().as_millis(),
        max_clock_skew_ms: rt.max_clock_skew.get_ref().as_millis(),
        max_observation_age_ms: rt.max_observation_age.get_ref().as_millis(),
    };
    if round.share_timeout_ms == 0 {
        r.at(
            span(&rt.share_timeout),
            "round.share_timeout",
            "the share timeout is zero",
            "give signers time to answer, e.g. \"400ms\"",
        );
    }
    if round.max_observation_age_ms == 0 {
        r.at(
            span(&rt.max_observation_age),
            "round.max_observation_age",
            "the observation age limit is zero",
            "allow observations a few seconds old, e.g. \"5s\"",
        );
    }
    if round.interval_ms == 0 {
        r.at(
            span(&rt.interval),
            "round.interval",
            "the round interval is zero",
            "use at least \"50ms\"; \"250ms\" to \"1s\" is typical",
        );
    }
    // observation_timeout = 0 is allowed: the leader proposes as soon as it
    // holds 2f + 1 observations.
    if round.round_timeout_ms <= round.observation_timeout_ms {
        r.at(
            span(&rt.round_timeout),
            "round.round_timeout",
            format!("round_timeout ({}ms) must be longer than observation_timeout ({}ms)", round.round_timeout_ms, round.observation_timeout_ms),
            "the round must outlast the observation phase; e.g. observation_timeout = \"100ms\", round_timeout = \"1s\"",
        );
    }

    // Feeds.
    if raw.feeds.is_empty() {
        r.at(
            None,
            "feeds",
            "the committee has no feeds",
            "add a [[feeds]] table with id, decimals, deviation_bps and heartbeat",
        );
    }
    if raw.feeds.len() > MAX_FEEDS {
        r.at(
            None,
            "feeds",
            format!(
                "{} feeds is more than a report carries ({MAX_FEEDS})",
                raw.feeds.len()
            ),
            "split the feeds across committees",
        );
    }
    let mut feeds = Vec::new();
    let mut seen_feed: BTreeMap<FeedId, usize> = BTreeMap::new();
    for (i, f) in raw.feeds.iter().enumerate() {
        let f = f.get_ref();
        let key = |field: &str| format!("feeds[{i}].{field}");
        let id = match FeedId::new(f.id.get_ref().clone()) {
            Ok(id) => Some(id),
            Err(e) => {
                r.at(
                    span(&f.id),
                    key("id"),
                    e.to_string(),
                    "feed ids are 1..=32 characters of A-Z, 0-9, '-', '_', '.', like \"BTC-USD\"",
                );
                None
            }
        };
        if let Some(id) = &id
            && let Some(prev) = seen_feed.insert(id.clone(), i)
        {
            r.at(
                span(&f.id),
                key("id"),
                format!("feed {id} is also defined by feeds[{prev}]"),
                "define each feed once",
            );
        }
        let decimals = *f.decimals.get_ref();
        if decimals > MAX_DECIMALS {
            r.at(
                span(&f.decimals),
                key("decimals"),
                format!("{decimals} decimals is more than {MAX_DECIMALS}"),
                "8 or 18 decimals is typical",
            );
        }
        if decimals <= MAX_DECIMALS
            && decimals > EVM_MAX_DECIMALS
            && suites.contains(&Suite::Secp256k1Evm)
        {
            r.at(
                span(&f.decimals),
                key("decimals"),
                format!("{decimals} decimals do not fit the EVM contract: SibylFeed stores prices as int96 and confidence as uint72, at most {EVM_MAX_DECIMALS} decimals"),
                "use at most 18 decimals (8 is typical) for a committee that signs secp256k1-evm",
            );
        }
        let dev = *f.deviation_bps.get_ref();
        if dev == 0 || dev > 10_000 {
            r.at(
                span(&f.deviation_bps),
                key("deviation_bps"),
                format!("deviation_bps {dev} is outside 1..=10000"),
                "a price move of this many basis points triggers an update; 50 (0.5%) is typical",
            );
        }
        let hb = f.heartbeat.get_ref().as_millis();
        if hb < round.interval_ms {
            r.at(span(&f.heartbeat), key("heartbeat"), format!("heartbeat ({hb}ms) is shorter than the round interval ({}ms)", round.interval_ms), "a feed can't be published more often than once a round; use a heartbeat of at least one interval");
        }
        let mut band = [None, None];
        for (slot, (field, text)) in band
            .iter_mut()
            .zip([("band_min", &f.band_min), ("band_max", &f.band_max)])
        {
            let Some(text) = text else { continue };
            match parse_fixed(text.get_ref(), decimals) {
                Some(v) => *slot = Some(v),
                None => r.at(
                    span(text),
                    key(field),
                    format!(
                        "{field} {:?} is not a decimal price with at most {decimals} decimals",
                        text.get_ref()
                    ),
                    "write the price in the feed's units as a string, e.g. \"0.01\"",
                ),
            }
        }
        for (field, text, v) in [
            ("band_min", &f.band_min, band[0]),
            ("band_max", &f.band_max, band[1]),
        ] {
            if let Some(v) = v
                && !(-EVM_PRICE_MAX - 1..=EVM_PRICE_MAX).contains(&v)
                && suites.contains(&Suite::Secp256k1Evm)
            {
                r.at(
                    text.as_ref().and_then(span),
                    key(field),
                    format!(
                        "{field} does not fit the EVM contract's int96 price at {decimals} decimals"
                    ),
                    "use fewer decimals for this feed, or a committee without secp256k1-evm",
                );
            }
        }
        if let [Some(lo), Some(hi)] = band
            && lo >= hi
        {
            r.at(
                f.band_max.as_ref().and_then(span),
                key("band_max"),
                "band_max is not above band_min",
                "the band is the range of plausible prices: band_min < band_max",
            );
        }
        for (field, v) in [
            ("max_jump_bps", &f.max_jump_bps),
            ("max_confidence_bps", &f.max_confidence_bps),
        ] {
            if *v.get_ref() > MAX_BOUND_BPS {
                r.at(
                    span(v),
                    key(field),
                    format!("{field} {} is more than {MAX_BOUND_BPS} (1000 %)", v.get_ref()),
                    "0 turns the flag off; 1000 (10 %) for jumps and 200 (2 %) for confidence are the defaults",
                );
            }
        }
        if let Some(id) = id {
            feeds.push(FeedParams {
                id,
                decimals,
                deviation_bps: dev,
                heartbeat_ms: hb,
                policy: sibyl_aggregator::round::committee::FeedPolicy {
                    band_min: band[0],
                    band_max: band[1],
                    max_jump_bps: *f.max_jump_bps.get_ref(),
                    max_confidence_bps: *f.max_confidence_bps.get_ref(),
                },
            });
        }
    }
    feeds.sort_by(|a, b| a.id.cmp(&b.id));
    feeds.dedup_by(|a, b| a.id == b.id);

    if !r.problems.is_empty() {
        return None;
    }
    let mut c = Committee {
        threshold: t,
        suites,
        leader_seed: raw.leader_seed,
        round,
        members,
        feeds,
        digest: ConfigDigest([0; 32]),
    };
    c.digest = c.compute_digest();
    Some(c)
}

/// A member address must be a dialable TCP multiaddr: `/ip4|ip6|dns|dns4|dns6/<host>/tcp/<port>`.
pub fn parse_member_address(s: &str) -> Result<Multiaddr, String> {
    let addr: Multiaddr = s
        .parse()
        .map_err(|e| format!("{s:?} is not a multiaddr: {e}"))?;
    let mut it = addr.iter();
    let host_ok = matches!(
        it.next(),
        Some(
            Protocol::Ip4(_)
                | Protocol::Ip6(_)
                | Protocol::Dns(_)
                | Protocol::Dns4(_)
                | Protocol::Dns6(_)
        )
    );
    let tcp_ok = matches!(it.next(), Some(Protocol::Tcp(_)));
    let rest_ok = match it.next() {
        None => true,
        // A trailing /p2p/<peer> is tolerated (it must match peer_id; checked by net).
        Some(Protocol::P2p(_)) => it.next().is_none(),
        _ => false,
    };
    if host_ok && tcp_ok && rest_ok {
        Ok(addr)
    } else {
        Err(format!(
            "{s:?} is not a TCP address (host then /tcp/<port>)"
        ))
    }
}
