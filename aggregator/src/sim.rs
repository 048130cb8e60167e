//! Seeded committee simulator: `n` real [`Node`]s in one process over a
//! simulated network, all driven by one seed and a manual clock.
//!
//! ```text
//!   seed ──► ChaCha ──► link latencies, jitter, loss, partitions, crashes,
//!                       Byzantine members and their kinds, prices
//!
//!   event queue (time, seq) ──► Deliver / Wake / Observe / Crash / Restart
//!        ▲                                   │
//!        └──── Send / Broadcast / WakeAt ◄── Node::handle(now, input, rng)
//!                                            │
//!                      RecordSigning ──► per-node signing ledger (survives crashes)
//!                      SignedReport  ──► safety checker
//! ```
//!
//! The simulator plays the daemon: it persists every
//! [`Action::RecordSigning`] in the member's ledger before answering
//! [`Input::SigningRecorded`], keeps the latest [`Action::WakeAt`], and on a
//! restart rebuilds the node from its ledger and last report with
//! [`Restore`]. Every delivered message and every action is hashed into a
//! transcript digest: the same seed gives the same digest, byte for byte.
//!
//! Safety checks on every signed report any member produces: no two different
//! reports for one round, every report verifies against the group key
//! ([`crate::verify::verify_report`]), and every feed's aggregate lies within
//! the range of the honest members' observations that were fresh at the
//! report's timestamp.

use crate::aggregate::{LastValue, note_signed_leaf};
use crate::digest::header_digest;
use crate::report::{ConfigDigest, FeedId, Price, Round, SignedReport, TimestampMs};
use crate::round::committee::{Committee, FeedConfig, Member, Timeouts};
use crate::round::message::{Payload, decode_unverified};
use crate::round::schedule::LeaderSchedule;
use crate::round::{
    Action, Input, LocalObservation, Node, NodeKeySet, Restore, SibylSuite, SigningRecord,
};
use crate::testkit::dealer_keys;
use crate::verify::{GroupKeys, verify_report};
use ed25519_dalek::SigningKey;
use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore, SeedableRng};
use serde::Serialize;
use sha3::{Digest, Keccak256};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

/// Simulated wall clock at the start of every run (ms since the Unix epoch).
pub const SIM_EPOCH_MS: TimestampMs = 1_760_000_000_000;
/// Rounds at the start that liveness figures ignore (nodes still starting).
pub const WARM_UP_ROUNDS: Round = 2;

/// Misbehaviour of a Byzantine member.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ByzantineKind {
    /// Observes prices 10x the truth.
    LieFar,
    /// Observes prices 2% above the truth.
    LieSlight,
    /// Observes random prices.
    LieRandom,
    /// As leader, sends different proposals to different signers.
    EquivocatingLeader,
    /// As signer, returns signature shares that do not verify.
    InvalidShares,
    /// Re-sends signed messages of earlier rounds to everyone.
    Replay,
    /// Sends observations but withholds its proposals and shares.
    Withhold,
    /// Sends nothing at all (withholds its observations too): a member that
    /// stays connected but is dead to the protocol.
    Mute,
    /// Observes, then refuses every proposal with a signed refusal.
    Refuse,
    /// Its clock runs 3 s ahead of the others'.
    ClockAhead,
    /// Its clock runs 3 s behind the others'.
    ClockBehind,
    /// Its clock runs 30 s ahead of the others'.
    ClockFarAhead,
}

impl ByzantineKind {
    pub const ALL: [ByzantineKind; 12] = [
        ByzantineKind::LieFar,
        ByzantineKind::LieSlight,
        ByzantineKind::LieRandom,
        ByzantineKind::EquivocatingLeader,
        ByzantineKind::InvalidShares,
        ByzantineKind::Replay,
        ByzantineKind::Withhold,
        ByzantineKind::Mute,
        ByzantineKind::Refuse,
        ByzantineKind::ClockAhead,
        ByzantineKind::ClockBehind,
        ByzantineKind::ClockFarAhead,
    ];

    /// How far the member's clock is off (ms).
    pub fn clock_skew_ms(self) -> i64 {
        match self {
            ByzantineKind::ClockAhead => 3_000,
            ByzantineKind::ClockBehind => -3_000,
            ByzantineKind::ClockFarAhead => 30_000,
            _ => 0,
        }
    }

    /// Whether the kind lies about prices.
    pub fn lies(self) -> bool {
        matches!(
            self,
            ByzantineKind::LieFar | ByzantineKind::LieSlight | ByzantineKind::LieRandom
        )
    }
}

/// The simulated network.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct NetworkConfig {
    /// Each directed link gets a base latency drawn from this range.
    pub min_latency_ms: u64,
    pub max_latency_ms: u64,
    /// Extra per-message delay in `0..=jitter_ms` (reorders messages).
    pub jitter_ms: u64,
    /// Per-message loss probability in parts per million.
    pub loss_ppm: u32,
    /// Split the committee in two for a while, from time to time.
    pub partitions: bool,
    /// Crash members (losing all in-memory state) and restart them from
    /// their signing ledger.
    pub crashes: bool,
    /// Crashes are power cuts: the signing ledger is lost too (as with the
    /// daemon's default `ledger_sync = "normal"`, whose ledger commits are
    /// not fsynced); only the observation record (fsynced) and the stored
    /// reports survive.
    pub power_loss: bool,
}

impl NetworkConfig {
    /// A connected network: latency and jitter, no loss, partitions or crashes.
    pub fn connected() -> Self {
        Self {
            min_latency_ms: 5,
            max_latency_ms: 60,
            jitter_ms: 30,
            loss_ppm: 0,
            partitions: false,
            crashes: false,
            power_loss: false,
        }
    }

    /// A hostile network: 2% loss, partitions and crashes.
    pub fn chaos() -> Self {
        Self {
            loss_ppm: 20_000,
            partitions: true,
            crashes: true,
            ..Self::connected()
        }
    }
}

/// One simulation run's parameters (the seed comes separately).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SimConfig {
    pub nodes: u16,
    /// Number of Byzantine members.
    pub byzantine: u16,
    /// Kinds assigned to the Byzantine members in turn; empty: drawn from
    /// the seed. At most `f` members lie about prices (with more liars than
    /// the fault model allows no median can stay within the honest range);
    /// further liars are turned into other kinds.
    pub kinds: Vec<ByzantineKind>,
    /// Run until every live honest member has entered this round.
    pub rounds: Round,
    /// Feeds in the committee.
    pub feeds: usize,
    pub network: NetworkConfig,
    pub timeouts: Timeouts,
}

impl SimConfig {
    /// `n` members of which `byzantine` misbehave, a connected network, 3 feeds.
    pub fn new(nodes: u16, byzantine: u16, rounds: Round) -> Self {
        Self {
            nodes,
            byzantine,
            kinds: Vec::new(),
            rounds,
            feeds: 3,
            network: NetworkConfig::connected(),
            timeouts: Timeouts::default(),
        }
    }

    /// The fault bound for `n` members: the largest `f` with `n >= 3f + 1`.
    pub fn f(&self) -> u16 {
        self.nodes.saturating_sub(1) / 3
    }
}

/// A safety property broken in a run.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Violation {
    /// Two different signed reports for one round.
    ConflictingReports { round: Round },
    /// A signed report that does not verify against the group key.
    ReportDoesNotVerify { round: Round, reason: String },
    /// A member was cleared to release shares for two different reports in
    /// one round (across its crashes and restarts).
    MemberSignedTwice { member: u16, round: Round },
    /// A feed's aggregate outside the range of honest observations.
    AggregateOutsideHonestRange {
        round: Round,
        feed: String,
        price: String,
        honest_min: String,
        honest_max: String,
    },
}

/// What one run produced.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SimOutcome {
    pub seed: u64,
    pub rounds: Round,
    /// Rounds `< rounds` with a signed report.
    pub signed_rounds: u64,
    /// Longest run of rounds without a signed report, from round
    /// [`WARM_UP_ROUNDS`] on.
    pub max_consecutive_unsigned_rounds: u64,
    /// The same from round `WARM_UP_ROUNDS + 2n` on, once every member has
    /// been the base leader twice: a faulty member has then failed as a
    /// leader and the leader schedule ([`crate::round::schedule`]) keeps it
    /// from leading two rounds after another faulty one.
    pub max_consecutive_unsigned_rounds_settled: u64,
    /// Rounds after warm-up with an honest leader but no signed report.
    pub unsigned_rounds_with_honest_leader: u64,
    /// Those rounds and their leaders (for diagnosis).
    pub honest_unsigned: Vec<(Round, u16)>,
    /// Every unsigned round after warm-up with its leader (for diagnosis).
    pub unsigned: Vec<(Round, u16)>,
    pub violations: Vec<Violation>,
    /// Evidence records emitted by honest members (all of them verified).
    pub evidence: u64,
    /// Evidence that failed [`crate::evidence::Evidence::verify`] (must be 0).
    pub unverifiable_evidence: u64,
    pub byzantine: BTreeMap<u16, ByzantineKind>,
    pub messages_delivered: u64,
    pub messages_dropped: u64,
    pub crashes: u64,
    /// Proposals that attributed a signer's commitments through a
    /// signer-only (late) observation.
    pub signer_only_attributions: u64,
    pub simulated_ms: u64,
    #[serde(with = "hex::serde")]
    pub transcript_digest: [u8; 32],
}

/// Why a run could not start.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error("invalid committee: {0}")]
    Committee(#[from] crate::round::committee::CommitteeError),
    #[error("byzantine = {byzantine} but the committee has only {nodes} members")]
    TooManyByzantine { byzantine: u16, nodes: u16 },
    #[error("need at least 1 feed and at most 1000 in the simulator, got {0}")]
    Feeds(usize),
    #[error("key generation failed: {0}")]
    Keys(String),
    #[error("node setup failed: {0}")]
    Node(#[from] crate::round::NodeError),
}

#[derive(Clone, Debug)]
enum Event {
    Deliver { to: u16, from: u16, bytes: Vec<u8> },
    Wake { node: u16, at: TimestampMs },
    Observe,
    Crash { node: u16 },
    Restart { node: u16 },
    Partition { groups: Option<Vec<u8>> },
    Replay { node: u16 },
}

/// What survives a crash: the signing ledger and the last report.
#[derive(Clone, Debug, Default)]
struct Durable {
    ledger: Option<SigningRecord>,
    last_report_round: Option<Round>,
    last_values: BTreeMap<FeedId, LastValue>,
    last_observed_round: Option<Round>,
    /// Rounds of the reports it stored.
    report_rounds: BTreeSet<Round>,
}

struct Member_ {
    node: Option<Node>,
    keys: NodeKeySet,
    durable: Durable,
    wake: Option<TimestampMs>,
    kind: Option<ByzantineKind>,
    rng: ChaCha20Rng,
    /// For `Replay`: signed messages seen, by round.
    seen: BTreeMap<Round, Vec<Vec<u8>>>,
}

struct Sim<C: SibylSuite> {
    cfg: SimConfig,
    committee: Arc<Committee>,
    group_keys: GroupKeys,
    pubkeys: frost_core::keys::PublicKeyPackage<C>,
    /// With both suites: the secp256k1-evm public key package.
    evm_pubkeys:
        Option<frost_core::keys::PublicKeyPackage<frost_secp256k1_evm::Secp256K1Keccak256>>,
    members: Vec<Member_>,
    rng: ChaCha20Rng,
    queue: BTreeMap<(TimestampMs, u64), Event>,
    seq: u64,
    now: TimestampMs,
    latency: Vec<Vec<u64>>,
    partition: Option<Vec<u8>>,
    truth: BTreeMap<FeedId, Price>,
    /// Honest observations fed, per feed: (observed_at, price).
    honest_values: BTreeMap<FeedId, Vec<(TimestampMs, Price)>>,
    reports: BTreeMap<Round, [u8; 32]>,
    checked: BTreeSet<(Round, [u8; 32])>,
    /// Every signing each member was cleared for, across crashes: what its
    /// shares could sign, seen from outside the member.
    cleared: BTreeMap<(u16, Round), [u8; 32]>,
    violations: Vec<Violation>,
    transcript: Keccak256,
    evidence: u64,
    unverifiable_evidence: u64,
    delivered: u64,
    dropped: u64,
    crashes: u64,
    signer_only: u64,
}

fn config_digest_for(cfg: &SimConfig, seed: u64) -> ConfigDigest {
    let mut h = Keccak256::new();
    h.update(b"sibyl/sim-committee");
    h.update(seed.to_be_bytes());
    h.update(cfg.nodes.to_be_bytes());
    ConfigDigest(h.finalize().into())
}

fn uniform(rng: &mut ChaCha20Rng, below: u64) -> u64 {
    if below == 0 {
        0
    } else {
        rng.next_u64() % below
    }
}

/// Runs one seed of the simulation.
pub fn run<C: SibylSuite>(cfg: &SimConfig, seed: u64) -> Result<SimOutcome, SimError> {
    let mut sim = Sim::<C>::new(cfg.clone(), seed, false)?;
    sim.run();
    Ok(sim.outcome(seed))
}

/// Runs one seed with a committee that signs every report with both
/// suites (ed25519 and secp256k1-evm): every report must verify under both
/// group keys.
pub fn run_both(cfg: &SimConfig, seed: u64) -> Result<SimOutcome, SimError> {
    let mut sim = Sim::<frost_ed25519::Ed25519Sha512>::new(cfg.clone(), seed, true)?;
    sim.run();
    Ok(sim.outcome(seed))
}

/// Runs one seed with the ciphersuite named at run time.
pub fn run_suite(suite: crate::Suite, cfg: &SimConfig, seed: u64) -> Result<SimOutcome, SimError> {
    match suite {
        crate::Suite::Ed25519 => run::<frost_ed25519::Ed25519Sha512>(cfg, seed),
        crate::Suite::Secp256k1Evm => run::<frost_secp256k1_evm::Secp256K1Keccak256>(cfg, seed),
    }
}

impl<C: SibylSuite> Sim<C> {
    fn new(cfg: SimConfig, seed: u64, both: bool) -> Result<Self, SimError> {
        if cfg.byzantine > cfg.nodes {
            return Err(SimError::TooManyByzantine {
                byzantine: cfg.byzantine,
                nodes: cfg.nodes,
            });
        }
        if cfg.feeds == 0 || cfg.feeds > 1000 {
            return Err(SimError::Feeds(cfg.feeds));
        }
        let mut rng = ChaCha20Rng::seed_from_u64(seed);
        let n = cfg.nodes;
        let f = cfg.f();
        let t = 2 * f + 1;
        let seeds: Vec<[u8; 32]> = (0..n)
            .map(|_| {
                let mut s = [0u8; 32];
                rng.fill_bytes(&mut s);
                s
            })
            .collect();
        let members: Vec<Member> = seeds
            .iter()
            .enumerate()
            .map(|(i, s)| Member {
                index: i as u16 + 1,
                identity: SigningKey::from_bytes(s).verifying_key().to_bytes(),
            })
            .collect();
        let feeds: Vec<FeedConfig> = (0..cfg.feeds)
            .map(|i| FeedConfig {
                id: FeedId::new(format!("SIM{i:04}-USD")).expect("generated feed ids are valid"),
                decimals: 8,
                deviation_bps: 50,
                heartbeat_ms: 3_000,
                policy: Default::default(),
            })
            .collect();
        let truth = feeds
            .iter()
            .map(|fc| {
                let base = 1_000 + uniform(&mut rng, 100_000) as i128;
                (fc.id.clone(), base * 100_000_000)
            })
            .collect();
        let committee = Arc::new(Committee::new(
            members,
            t,
            f,
            rng.next_u64(),
            feeds,
            config_digest_for(&cfg, seed),
            cfg.timeouts,
        )?);
        let dealer =
            dealer_keys::<C, _>(n, t, &mut rng).map_err(|e| SimError::Keys(e.to_string()))?;
        let vk = dealer
            .public_key_package
            .verifying_key()
            .serialize()
            .map_err(|e| SimError::Keys(e.to_string()))?;
        let mut group_keys = GroupKeys::new(*committee.config_digest())
            .with_key_bytes(C::SUITE, &vk)
            .map_err(|e| SimError::Keys(e.to_string()))?;
        let evm = if both {
            let evm = dealer_keys::<frost_secp256k1_evm::Secp256K1Keccak256, _>(n, t, &mut rng)
                .map_err(|e| SimError::Keys(e.to_string()))?;
            group_keys = group_keys.with_secp256k1_evm(*evm.public_key_package.verifying_key());
            Some(evm)
        } else {
            None
        };

        // Byzantine members and their kinds, from the seed.
        let mut order: Vec<u16> = (1..=n).collect();
        for i in (1..order.len()).rev() {
            let j = uniform(&mut rng, i as u64 + 1) as usize;
            order.swap(i, j);
        }
        let mut byzantine: BTreeMap<u16, ByzantineKind> = BTreeMap::new();
        let mut liars = 0u16;
        for (i, m) in order.iter().take(usize::from(cfg.byzantine)).enumerate() {
            let mut kind = if cfg.kinds.is_empty() {
                ByzantineKind::ALL[uniform(&mut rng, ByzantineKind::ALL.len() as u64) as usize]
            } else {
                cfg.kinds[i % cfg.kinds.len()]
            };
            if kind.lies() {
                if liars >= f {
                    kind = [
                        ByzantineKind::EquivocatingLeader,
                        ByzantineKind::InvalidShares,
                        ByzantineKind::Replay,
                        ByzantineKind::Withhold,
                    ][i % 4];
                } else {
                    liars += 1;
                }
            }
            byzantine.insert(*m, kind);
        }

        let mut nodes = Vec::with_capacity(usize::from(n));
        for (i, seed_bytes) in seeds.iter().enumerate() {
            let index = i as u16 + 1;
            let id = frost_core::Identifier::<C>::try_from(index)
                .map_err(|e| SimError::Keys(e.to_string()))?;
            let key_package = dealer
                .key_packages
                .get(&id)
                .cloned()
                .ok_or_else(|| SimError::Keys(format!("no key package for {index}")))?;
            let mut keys =
                NodeKeySet::new(*seed_bytes).with(key_package, dealer.public_key_package.clone());
            if let Some(evm) = &evm {
                let id = frost_core::Identifier::try_from(index)
                    .map_err(|e| SimError::Keys(e.to_string()))?;
                let key_package = evm
                    .key_packages
                    .get(&id)
                    .cloned()
                    .ok_or_else(|| SimError::Keys(format!("no key package for {index}")))?;
                keys = keys.with(key_package, evm.public_key_package.clone());
            }
            let mut node_seed = [0u8; 32];
            rng.fill_bytes(&mut node_seed);
            nodes.push(Member_ {
                node: None,
                keys,
                durable: Durable::default(),
                wake: None,
                kind: byzantine.get(&index).copied(),
                rng: ChaCha20Rng::from_seed(node_seed),
                seen: BTreeMap::new(),
            });
        }
        let latency = (0..n)
            .map(|_| {
                (0..n)
                    .map(|_| {
                        cfg.network.min_latency_ms
                            + uniform(
                                &mut rng,
                                cfg.network
                                    .max_latency_ms
                                    .saturating_sub(cfg.network.min_latency_ms)
                                    + 1,
                            )
                    })
                    .collect()
            })
            .collect();
        let mut sim = Self {
            cfg,
            committee,
            group_keys,
            pubkeys: dealer.public_key_package,
            evm_pubkeys: evm.map(|e| e.public_key_package),
            members: nodes,
            rng,
            queue: BTreeMap::new(),
            seq: 0,
            now: SIM_EPOCH_MS,
            latency,
            partition: None,
            truth,
            honest_values: BTreeMap::new(),
            reports: BTreeMap::new(),
            checked: BTreeSet::new(),
            cleared: BTreeMap::new(),
            violations: Vec::new(),
            transcript: Keccak256::new(),
            evidence: 0,
            unverifiable_evidence: 0,
            delivered: 0,
            dropped: 0,
            crashes: 0,
            signer_only: 0,
        };
        for i in 0..n {
            sim.start_node(i + 1)?;
        }
        Ok(sim)
    }

    fn schedule(&mut self, at: TimestampMs, event: Event) {
        self.seq += 1;
        self.queue.insert((at, self.seq), event);
    }

    fn start_node(&mut self, index: u16) -> Result<(), SimError> {
        let m = &mut self.members[usize::from(index) - 1];
        let restore = Restore {
            round: m.durable.last_report_round.map_or(0, |r| r + 1),
            last_signed: m.durable.ledger,
            last_values: m.durable.last_values.clone(),
            last_report_round: m.durable.last_report_round,
            last_observed_round: m.durable.last_observed_round,
            // What it stored, and what catch-up would fetch at once: the
            // reports the others signed while it was down.
            report_rounds: m
                .durable
                .report_rounds
                .iter()
                .chain(self.reports.keys())
                .copied()
                .collect(),
            history_from: 0,
        };
        let mut node = Node::new(self.committee.clone(), index, m.keys.clone(), restore)?;
        match m.kind {
            Some(ByzantineKind::EquivocatingLeader) => node.faults.equivocate = true,
            Some(ByzantineKind::InvalidShares) => node.faults.invalid_shares = true,
            Some(ByzantineKind::Refuse) => node.faults.refuse = true,
            _ => {}
        }
        m.node = Some(node);
        m.wake = None;
        self.schedule(
            self.now,
            Event::Wake {
                node: index,
                at: self.now,
            },
        );
        Ok(())
    }

    fn time_limit(&self) -> TimestampMs {
        let per_round = self.committee.round_ms() + self.cfg.timeouts.round_interval_ms;
        SIM_EPOCH_MS + (self.cfg.rounds + 4) * per_round * 2
    }

    fn done(&self) -> bool {
        self.members
            .iter()
            .filter(|m| m.kind.is_none())
            .filter_map(|m| m.node.as_ref())
            .all(|n| n.round() >= self.cfg.rounds)
    }

    fn run(&mut self) {
        self.schedule(SIM_EPOCH_MS, Event::Observe);
        if self.cfg.network.partitions || self.cfg.network.crashes {
            self.plan_chaos();
        }
        for i in 1..=self.cfg.nodes {
            if self.members[usize::from(i) - 1].kind == Some(ByzantineKind::Replay) {
                self.schedule(SIM_EPOCH_MS + 700, Event::Replay { node: i });
            }
        }
        let limit = self.time_limit();
        while let Some(((at, _), event)) = self.queue.pop_first() {
            if at > limit || self.done() {
                break;
            }
            self.now = at;
            self.step(event);
        }
    }

    /// Crashes and partitions over the run, from the seed. Crashes hit at most
    /// `f` members at a time so that the honest majority stays alive.
    fn plan_chaos(&mut self) {
        // Spread over the time the run takes when rounds sign at their pace.
        let span = (self.cfg.rounds + 2) * self.cfg.timeouts.round_interval_ms * 3 / 2;
        let round_ms = self.committee.round_ms();
        if self.cfg.network.crashes {
            let count = 1 + uniform(&mut self.rng, 3);
            let mut last_end = SIM_EPOCH_MS;
            for _ in 0..count {
                let node = 1 + uniform(&mut self.rng, u64::from(self.cfg.nodes)) as u16;
                let at = last_end + uniform(&mut self.rng, span / (count + 1)) + 1;
                let down = round_ms / 2 + uniform(&mut self.rng, 3 * round_ms);
                self.schedule(at, Event::Crash { node });
                self.schedule(at + down, Event::Restart { node });
                last_end = at + down + 1;
            }
        }
        if self.cfg.network.partitions {
            let count = 1 + uniform(&mut self.rng, 2);
            for k in 0..count {
                let at = SIM_EPOCH_MS + (k + 1) * span / (count + 2);
                let groups: Vec<u8> = (0..self.cfg.nodes)
                    .map(|_| (self.rng.next_u32() & 1) as u8)
                    .collect();
                let heal = at + round_ms + uniform(&mut self.rng, 3 * round_ms);
                self.schedule(
                    at,
                    Event::Partition {
                        groups: Some(groups),
                    },
                );
                self.schedule(heal, Event::Partition { groups: None });
            }
        }
    }

    fn step(&mut self, event: Event) {
        match event {
            Event::Deliver { to, from, bytes } => {
                self.record(b"deliver", to, &bytes);
                self.delivered += 1;
                if let Some(ByzantineKind::Replay) = self.members[usize::from(to) - 1].kind {
                    self.remember(to, &bytes);
                }
                self.input(to, Input::Message { from, bytes });
            }
            Event::Wake { node, at } => {
                let m = &self.members[usize::from(node) - 1];
                if m.node.is_some() && (m.wake == Some(at) || m.wake.is_none()) {
                    self.record(b"wake", node, &at.to_be_bytes());
                    self.input(node, Input::Tick);
                }
            }
            Event::Observe => {
                self.observe();
                self.schedule(self.now + 200, Event::Observe);
            }
            Event::Crash { node } => {
                let m = &mut self.members[usize::from(node) - 1];
                if m.node.take().is_some() {
                    if self.cfg.network.power_loss {
                        m.durable.ledger = None;
                    }
                    self.crashes += 1;
                    self.record(b"crash", node, &[]);
                }
            }
            Event::Restart { node } => {
                if self.members[usize::from(node) - 1].node.is_none() {
                    self.record(b"restart", node, &[]);
                    // Start errors cannot happen for keys that started before.
                    let _ = self.start_node(node);
                }
            }
            Event::Partition { groups } => {
                self.record(b"partition", 0, groups.as_deref().unwrap_or(&[]));
                self.partition = groups;
            }
            Event::Replay { node } => {
                self.replay(node);
                self.schedule(self.now + 300, Event::Replay { node });
            }
        }
    }

    fn record(&mut self, what: &[u8], node: u16, bytes: &[u8]) {
        self.transcript.update(self.now.to_be_bytes());
        self.transcript.update(what);
        self.transcript.update(node.to_be_bytes());
        self.transcript.update((bytes.len() as u64).to_be_bytes());
        self.transcript.update(bytes);
    }

    fn remember(&mut self, node: u16, bytes: &[u8]) {
        if let Ok((msg, _)) = decode_unverified(bytes, self.committee.config_digest()) {
            let m = &mut self.members[usize::from(node) - 1];
            let slot = m.seen.entry(msg.round).or_default();
            if slot.len() < 64 {
                slot.push(bytes.to_vec());
            }
            while m.seen.len() > 8 {
                m.seen.pop_first();
            }
        }
    }

    fn replay(&mut self, node: u16) {
        let m = &self.members[usize::from(node) - 1];
        let Some(current) = m.node.as_ref().map(|n| n.round()) else {
            return;
        };
        let old: Vec<&Vec<u8>> = m
            .seen
            .range(..current)
            .flat_map(|(_, v)| v.iter())
            .collect();
        if old.is_empty() {
            return;
        }
        let pick = uniform(&mut self.rng, old.len() as u64) as usize;
        let bytes = old[pick].clone();
        for to in 1..=self.cfg.nodes {
            if to != node {
                self.transmit(node, to, bytes.clone());
            }
        }
    }

    /// Prices move a little every 200 ms; every live member observes them.
    fn observe(&mut self) {
        let ids: Vec<FeedId> = self.truth.keys().cloned().collect();
        for id in &ids {
            let step = uniform(&mut self.rng, 41) as i128 - 20; // +-20 bps
            if let Some(p) = self.truth.get_mut(id) {
                *p += *p * step / 10_000;
            }
        }
        for index in 1..=self.cfg.nodes {
            let i = usize::from(index) - 1;
            if self.members[i].node.is_none() {
                continue;
            }
            let kind = self.members[i].kind;
            let mut list = Vec::with_capacity(ids.len());
            for id in &ids {
                let truth = self.truth[id];
                let noise = uniform(&mut self.rng, 21) as i128 - 10; // +-10 bps
                let honest = truth + truth * noise / 10_000;
                let price = match kind {
                    Some(ByzantineKind::LieFar) => truth * 10,
                    Some(ByzantineKind::LieSlight) => truth + truth / 50,
                    Some(ByzantineKind::LieRandom) => {
                        (self.rng.next_u64() >> 1) as i128
                            * if self.rng.next_u32() & 1 == 0 { 1 } else { -1 }
                    }
                    _ => honest,
                };
                if kind.is_none_or(|k| !k.lies()) {
                    self.honest_values
                        .entry(id.clone())
                        .or_default()
                        .push((self.now, price));
                }
                list.push(LocalObservation::basic(
                    id.clone(),
                    price,
                    (truth / 10_000).unsigned_abs(),
                    self.local_now(index),
                ));
            }
            self.input(index, Input::Observations(list));
        }
    }

    fn linked(&self, a: u16, b: u16) -> bool {
        match &self.partition {
            None => true,
            Some(g) => g[usize::from(a) - 1] == g[usize::from(b) - 1],
        }
    }

    fn transmit(&mut self, from: u16, to: u16, bytes: Vec<u8>) {
        let net = &self.cfg.network;
        if net.loss_ppm > 0 && uniform(&mut self.rng, 1_000_000) < u64::from(net.loss_ppm) {
            self.dropped += 1;
            return;
        }
        if !self.linked(from, to) {
            self.dropped += 1;
            return;
        }
        let delay = self.latency[usize::from(from) - 1][usize::from(to) - 1]
            + uniform(&mut self.rng, net.jitter_ms + 1);
        self.schedule(self.now + delay, Event::Deliver { to, from, bytes });
    }

    /// Feeds one input to a member and performs its actions (recursively for
    /// ledger answers, which the simulated store gives at once).
    fn input(&mut self, index: u16, input: Input) {
        let mut inputs = vec![input];
        while let Some(input) = inputs.pop() {
            let i = usize::from(index) - 1;
            let now = self.local_now(index);
            let m = &mut self.members[i];
            let Some(node) = m.node.as_mut() else {
                return;
            };
            let actions = node.handle(now, input, &mut m.rng);
            for action in actions {
                if let Some(next) = self.perform(index, action) {
                    inputs.push(next);
                }
            }
        }
    }

    /// Member `index`'s clock now (the simulated time plus its skew).
    fn local_now(&self, index: u16) -> TimestampMs {
        let skew = self.members[usize::from(index) - 1]
            .kind
            .map_or(0, ByzantineKind::clock_skew_ms);
        self.now.saturating_add_signed(skew)
    }

    fn withholds(&self, index: u16, bytes: &[u8]) -> bool {
        match self.members[usize::from(index) - 1].kind {
            Some(ByzantineKind::Mute) => return true,
            Some(ByzantineKind::Withhold) => {}
            _ => return false,
        }
        matches!(
            decode_unverified(bytes, self.committee.config_digest()),
            Ok((m, _)) if matches!(m.payload, Payload::Proposal(_) | Payload::Share(_))
        )
    }

    fn perform(&mut self, index: u16, action: Action) -> Option<Input> {
        let i = usize::from(index) - 1;
        match action {
            Action::Send { to, bytes } => {
                self.record(b"send", index, &bytes);
                if let Ok((m, _)) = decode_unverified(&bytes, self.committee.config_digest())
                    && let Payload::Proposal(p) = &m.payload
                    && !p.signer_observations.is_empty()
                {
                    self.signer_only += 1;
                }
                if self.members[i].kind == Some(ByzantineKind::Replay) {
                    self.remember(index, &bytes);
                }
                if !self.withholds(index, &bytes) && self.committee.is_member(to) {
                    self.transmit(index, to, bytes);
                }
                None
            }
            Action::Broadcast { bytes } => {
                self.record(b"broadcast", index, &bytes);
                if !self.withholds(index, &bytes) {
                    for to in 1..=self.cfg.nodes {
                        if to != index {
                            self.transmit(index, to, bytes.clone());
                        }
                    }
                }
                None
            }
            Action::RecordSigning { round, digest } => {
                self.record(b"record-signing", index, &digest);
                let ledger = &mut self.members[i].durable.ledger;
                let refuse = ledger
                    .is_some_and(|l| l.round > round || (l.round == round && l.digest != digest));
                if refuse {
                    Some(Input::SigningRefused { round, digest })
                } else {
                    *ledger = Some(SigningRecord { round, digest });
                    if let Some(earlier) = self.cleared.insert((index, round), digest)
                        && earlier != digest
                    {
                        self.violations.push(Violation::MemberSignedTwice {
                            member: index,
                            round,
                        });
                    }
                    Some(Input::SigningRecorded { round, digest })
                }
            }
            Action::SignedReport(report) => {
                self.record(b"report", index, &header_digest(&report.header));
                let d = &mut self.members[i].durable;
                d.last_report_round = Some(report.header.round);
                d.report_rounds.insert(report.header.round);
                for leaf in &report.leaves {
                    note_signed_leaf(&mut d.last_values, leaf, report.header.timestamp_ms);
                }
                self.check_report(&report);
                None
            }
            Action::Blame(evidence) => {
                self.record(b"blame", index, evidence.kind().as_bytes());
                if self.members[i].kind.is_none() {
                    self.evidence += 1;
                    let verified = match (&evidence, &self.evm_pubkeys) {
                        (
                            crate::evidence::Evidence::InvalidShare {
                                suite: crate::Suite::Secp256k1Evm,
                                ..
                            },
                            Some(evm),
                        ) => evidence.verify(&self.committee, evm),
                        _ => evidence.verify::<C>(&self.committee, &self.pubkeys),
                    };
                    match verified {
                        Ok(culprit) if self.members[usize::from(culprit) - 1].kind.is_some() => {}
                        _ => self.unverifiable_evidence += 1,
                    }
                }
                None
            }
            Action::RecordObservation { round } => {
                self.record(b"record-observation", index, &round.to_be_bytes());
                self.members[i].durable.last_observed_round = Some(round);
                None
            }
            Action::RoundEntered { round, leader, .. } => {
                let mut b = round.to_be_bytes().to_vec();
                b.extend_from_slice(&leader.to_be_bytes());
                self.record(b"round", index, &b);
                None
            }
            // The simulator holds no stores to ask: a message it delivers is
            // never stuck behind a lost packet (the case asking is for), and
            // one it drops is gone for good.
            Action::AskReport { .. } => None,
            Action::WakeAt(at) => {
                // `at` is the member's clock; the queue runs on simulated time.
                self.members[i].wake = Some(at);
                let skew = self.members[i].kind.map_or(0, ByzantineKind::clock_skew_ms);
                let when = at.saturating_add_signed(-skew).max(self.now);
                self.schedule(when, Event::Wake { node: index, at });
                None
            }
        }
    }

    fn check_report(&mut self, report: &SignedReport) {
        let round = report.header.round;
        let digest = header_digest(&report.header);
        if !self.checked.insert((round, digest)) {
            return;
        }
        match self.reports.get(&round) {
            Some(d) if *d != digest => {
                self.violations
                    .push(Violation::ConflictingReports { round });
            }
            Some(_) => {}
            None => {
                self.reports.insert(round, digest);
            }
        }
        if let Err(e) = verify_report(report, &self.group_keys) {
            self.violations.push(Violation::ReportDoesNotVerify {
                round,
                reason: e.to_string(),
            });
        }
        let t = &self.cfg.timeouts;
        let oldest = report
            .header
            .timestamp_ms
            .saturating_sub(t.max_observation_age_ms);
        let newest = report.header.timestamp_ms + t.max_clock_skew_ms;
        for leaf in &report.leaves {
            let values = self.honest_values.get(&leaf.feed_id);
            let range = values
                .into_iter()
                .flatten()
                .filter(|(at, _)| *at >= oldest && *at <= newest);
            let (lo, hi) = range.fold((Price::MAX, Price::MIN), |(lo, hi), (_, p)| {
                (lo.min(*p), hi.max(*p))
            });
            if leaf.price < lo || leaf.price > hi {
                self.violations
                    .push(Violation::AggregateOutsideHonestRange {
                        round,
                        feed: leaf.feed_id.to_string(),
                        price: leaf.price.to_string(),
                        honest_min: lo.to_string(),
                        honest_max: hi.to_string(),
                    });
            }
        }
    }

    fn outcome(mut self, seed: u64) -> SimOutcome {
        let rounds = self.cfg.rounds;
        let signed_rounds = self.reports.range(..rounds).count() as u64;
        let mut max_run = 0u64;
        let mut run = 0u64;
        let mut honest_unsigned = 0u64;
        let settled_from = WARM_UP_ROUNDS + 2 * self.committee.n() as Round;
        let mut max_run_settled = 0u64;
        let mut honest_list = Vec::new();
        let mut unsigned = Vec::new();
        // The leader of each round as the signed history defines it.
        let schedule = LeaderSchedule::new(0, self.reports.keys().copied());
        for r in WARM_UP_ROUNDS..rounds {
            if self.reports.contains_key(&r) {
                run = 0;
            } else {
                run += 1;
                max_run = max_run.max(run);
                if r >= settled_from {
                    max_run_settled = max_run_settled.max(run.min(r + 1 - settled_from));
                }
                let leader = schedule.leader(&self.committee, r);
                unsigned.push((r, leader));
                if self.members[usize::from(leader) - 1].kind.is_none() {
                    honest_unsigned += 1;
                    honest_list.push((r, leader));
                }
            }
        }
        let byzantine = self
            .members
            .iter()
            .enumerate()
            .filter_map(|(i, m)| m.kind.map(|k| (i as u16 + 1, k)))
            .collect();
        self.transcript.update(b"end");
        SimOutcome {
            seed,
            rounds,
            signed_rounds,
            max_consecutive_unsigned_rounds: max_run,
            max_consecutive_unsigned_rounds_settled: max_run_settled,
            unsigned_rounds_with_honest_leader: honest_unsigned,
            honest_unsigned: honest_list,
            unsigned,
            violations: self.violations,
            evidence: self.evidence,
            unverifiable_evidence: self.unverifiable_evidence,
            byzantine,
            messages_delivered: self.delivered,
            messages_dropped: self.dropped,
            crashes: self.crashes,
            signer_only_attributions: self.signer_only,
            simulated_ms: self.now - SIM_EPOCH_MS,
            transcript_digest: self.transcript.finalize().into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use frost_ed25519::Ed25519Sha512 as Ed;
    use frost_secp256k1_evm::Secp256K1Keccak256 as Evm;

    fn assert_safe(o: &SimOutcome) {
        assert!(
            o.violations.is_empty(),
            "seed {}: {:?}",
            o.seed,
            o.violations
        );
        assert_eq!(o.unverifiable_evidence, 0, "seed {}", o.seed);
    }

    #[test]
    fn honest_committee_signs_every_round_both_suites() {
        for seed in 0..3 {
            let cfg = SimConfig::new(4, 0, 8);
            let o = run::<Ed>(&cfg, seed).unwrap();
            assert_safe(&o);
            assert_eq!(o.signed_rounds, 8, "{o:?}");
            let o = run::<Evm>(&cfg, seed).unwrap();
            assert_safe(&o);
            assert_eq!(o.signed_rounds, 8, "{o:?}");
        }
    }

    /// A committee that signs with both suites: every report carries both
    /// signatures (the simulator verifies each under both group keys), with
    /// every Byzantine kind within f, and deterministically.
    #[test]
    fn a_both_suite_committee_is_safe_with_every_byzantine_kind() {
        let o = run_both(&SimConfig::new(4, 0, 8), 0).unwrap();
        assert_safe(&o);
        assert_eq!(o.signed_rounds, 8, "{o:?}");
        for kind in ByzantineKind::ALL {
            let mut cfg = SimConfig::new(4, 1, 10);
            cfg.kinds = vec![kind];
            let o = run_both(&cfg, 1).unwrap();
            assert_safe(&o);
            assert_eq!(o.unsigned_rounds_with_honest_leader, 0, "{kind:?} {o:?}");
            if kind == ByzantineKind::InvalidShares {
                assert!(o.evidence > 0 || o.signed_rounds == 10, "{kind:?} {o:?}");
            }
        }
        let mut cfg = SimConfig::new(7, 2, 10);
        cfg.network = NetworkConfig::chaos();
        let a = run_both(&cfg, 5).unwrap();
        assert_safe(&a);
        assert_eq!(a, run_both(&cfg, 5).unwrap());
    }

    #[test]
    fn same_seed_same_transcript() {
        let mut cfg = SimConfig::new(4, 1, 8);
        cfg.network = NetworkConfig::chaos();
        let a = run::<Ed>(&cfg, 42).unwrap();
        let b = run::<Ed>(&cfg, 42).unwrap();
        assert_eq!(a, b);
        let c = run::<Ed>(&cfg, 43).unwrap();
        assert_ne!(a.transcript_digest, c.transcript_digest);
    }

    #[test]
    fn every_byzantine_kind_within_f_is_safe_and_costs_at_most_its_rounds() {
        for kind in ByzantineKind::ALL {
            for seed in 0..3 {
                let mut cfg = SimConfig::new(4, 1, 12);
                cfg.kinds = vec![kind];
                let o = run::<Ed>(&cfg, seed).unwrap();
                assert_safe(&o);
                // Only rounds led by the faulty member may go unsigned, and
                // the leader rotates: at most one round in a row.
                assert_eq!(o.unsigned_rounds_with_honest_leader, 0, "{kind:?} {o:?}");
                assert!(o.max_consecutive_unsigned_rounds <= 1, "{kind:?} {o:?}");
                if kind == ByzantineKind::InvalidShares || kind == ByzantineKind::EquivocatingLeader
                {
                    // The faulty member is caught with evidence that verifies.
                    assert!(o.evidence > 0 || o.signed_rounds == 12, "{kind:?} {o:?}");
                }
            }
        }
    }

    #[test]
    fn every_fault_kind_and_mixes_for_seven_and_ten_members_cost_no_honest_round() {
        let mixes: Vec<Vec<ByzantineKind>> = ByzantineKind::ALL
            .iter()
            .map(|k| vec![*k])
            .chain([
                vec![
                    ByzantineKind::ClockAhead,
                    ByzantineKind::InvalidShares,
                    ByzantineKind::Withhold,
                ],
                vec![
                    ByzantineKind::Refuse,
                    ByzantineKind::Mute,
                    ByzantineKind::ClockFarAhead,
                ],
            ])
            .collect();
        for n in [7u16, 10] {
            for kinds in &mixes {
                let mut cfg = SimConfig::new(n, (n - 1) / 3, 16);
                cfg.kinds = kinds.clone();
                let o = run::<Ed>(&cfg, u64::from(n)).unwrap();
                assert_safe(&o);
                assert_eq!(o.unsigned_rounds_with_honest_leader, 0, "{kinds:?} {o:?}");
            }
        }
    }

    #[test]
    fn a_member_whose_clock_is_far_off_corrects_it_and_leads_signed_rounds() {
        // Member clocks 30 s ahead; it leads a quarter of the rounds. Were its
        // proposals refused (timestamps 30 s in the future) or its refusals
        // not heard, at most 30 of 40 rounds could be signed.
        for seed in 0..3 {
            let mut cfg = SimConfig::new(4, 1, 40);
            cfg.kinds = vec![ByzantineKind::ClockFarAhead];
            let o = run::<Ed>(&cfg, seed).unwrap();
            assert_safe(&o);
            assert!(o.signed_rounds >= 37, "{o:?}");
            assert_eq!(o.unsigned_rounds_with_honest_leader, 0, "{o:?}");
        }
    }

    #[test]
    fn a_leader_that_proposes_at_once_still_signs_when_an_early_observer_refuses() {
        // observe_ms = 0: the leader proposes with the first 2f + 1
        // observations. When a refusing member is among them the pool runs
        // out; the observation that arrives next makes its sender a signer
        // (a signer-only observation in the next attempt's proposal).
        let mut late_paths = 0;
        for seed in 0..8 {
            let mut cfg = SimConfig::new(4, 1, 20);
            cfg.kinds = vec![ByzantineKind::Refuse];
            cfg.timeouts.observe_ms = 0;
            let o = run::<Ed>(&cfg, seed).unwrap();
            assert_safe(&o);
            assert_eq!(o.unsigned_rounds_with_honest_leader, 0, "{o:?}");
            late_paths += o.signer_only_attributions;
        }
        assert!(late_paths > 0, "the late-observer path never ran");
    }

    #[test]
    fn seven_members_two_byzantine_suites() {
        for seed in 0..2 {
            let cfg = SimConfig::new(7, 2, 10);
            let o = run::<Evm>(&cfg, seed).unwrap();
            assert_safe(&o);
            assert_eq!(o.unsigned_rounds_with_honest_leader, 0, "{o:?}");
        }
    }

    #[test]
    fn more_than_f_faults_stay_safe() {
        for seed in 0..3 {
            let cfg = SimConfig::new(4, 2, 8);
            let o = run::<Ed>(&cfg, seed).unwrap();
            assert_safe(&o);
        }
    }

    #[test]
    fn power_cuts_that_lose_the_signing_ledger_stay_safe() {
        // Every crash also loses the signing ledger; the fsynced observation
        // record alone must keep each member from signing two reports in one
        // round (crashes restart within 0.5-3.5 round timeouts, often inside
        // the round they hit).
        let mut crashes = 0;
        for seed in 0..12 {
            let mut cfg = SimConfig::new(4, 0, 12);
            cfg.network = NetworkConfig::chaos();
            cfg.network.power_loss = true;
            let o = run::<Ed>(&cfg, seed).unwrap();
            assert_safe(&o);
            crashes += o.crashes;
        }
        assert!(crashes >= 12, "only {crashes} crashes");
    }

    #[test]
    fn chaos_network_stays_safe() {
        for seed in 0..3 {
            let mut cfg = SimConfig::new(4, 1, 10);
            cfg.network = NetworkConfig::chaos();
            let o = run::<Ed>(&cfg, seed).unwrap();
            assert!(o.violations.is_empty(), "{o:?}");
        }
    }
}
