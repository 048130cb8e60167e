//! Proactive refresh inside `sibyl run`: new shares of the same group key
//! while the committee keeps signing (nothing changes on chain, no feed
//! waits).
//!
//! ```text
//!   trigger: [keys] refresh_every boundary | POST /v1/node/keys/refresh | a member's "refresh" request
//!      │
//!      ▼
//!   ceremony (the hardened DKG in refresh mode, over the round network, Envelope::Ceremony)
//!      │ Done                                   │ Failed (names the culprit)
//!      ▼                                        ▼
//!   write keys/*.pending (encrypted) ──► add the new set to the round machine (it signs
//!      │                                  proposals naming it; it still leads with the old)
//!      ▼
//!   "stored" ⇄ every member, re-sent every second, until all said so
//!      │
//!      ▼
//!   switch: pending files replace the live ones (the old shares are erased on disk);
//!   lead with the new set; the old set is erased from memory `grace` later
//! ```
//!
//! Shares of two sets never combine, so each proposal names its set
//! (`ProposalMsg::key_set`): until a member switched it keeps proposing with
//! the old set, which everyone still holds, and signs whatever set a
//! proposal names if it holds it. Nobody erases old shares before every
//! member confirmed it stored its new ones; a refresh that cannot finish
//! leaves everyone signing with the old set.
//!
//! A member that answers "not held" for a set this member stored (its own
//! ceremony failed) ends the wait: the stored set is *parked*, kept on disk
//! and in memory but not led with, and the refresh is retried. Parking
//! rather than deleting keeps a member that switched able to find signers
//! even if a Byzantine member told some members "stored" and others "not
//! held". A member restarted with pending files loads them as a second set
//! and resumes the "stored" exchange.
//!
//! [`Rekey`] is the sans-io state machine (tests drive several in memory);
//! [`run`] carries it: disk writes on the blocking pool, messages and
//! key-set changes through the round driver ([`DriverCmd`]).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use rand_core::{CryptoRng, RngCore};
use serde::Serialize;
use sibyl_aggregator::dkg::{Dkg, DkgError as CeremonyError, Input, Output, RefreshKeys};
use sibyl_aggregator::round::{SuiteKeys, key_set_id};
use tokio::sync::{mpsc, watch};

use crate::refresh::{STORED_MAGIC, keys_of, outcome_hash};

/// `"SRFN" | hash`: "I do not hold that set, and no ceremony of mine is
/// running that could give it to me".
pub const NOT_HELD_MAGIC: &[u8; 4] = b"SRFN";
/// `"SRFQ" | u64 run`: "join refresh run `run`". Every start names a run
/// (a scheduled one its boundary in unix ms, any other one the later of
/// the last run + 1 and the clock), the run enters the ceremony's session,
/// and a member joins a higher run than its own once `min_gap` passed since
/// its last start: members that started apart, or a member restarted in
/// the middle, converge on one run without mixing messages of two.
pub const REQUEST_MAGIC: &[u8; 4] = b"SRFQ";

/// A requested run may be at most this far ahead of this member's clock
/// (runs are named after the clock, see [`REQUEST_MAGIC`]).
pub const MAX_RUN_AHEAD_MS: u64 = 10 * 60 * 1000;

/// Timing of the in-node refresh.
#[derive(Clone, Debug)]
pub struct Timing {
    /// Re-send "stored" to members that have not confirmed, this often.
    pub resend_ms: u64,
    /// After a failed ceremony, start again this much later.
    pub retry_ms: u64,
    /// A member's request starts a refresh here only this long after the
    /// last start (bounds what a hostile member can make everyone do).
    pub min_gap_ms: u64,
    /// The old set stays in memory this long after the switch, for
    /// proposals of members that switch a moment later.
    pub grace_ms: u64,
    /// `[keys] refresh_every`: start at every multiple of this (unix ms).
    pub every_ms: Option<u64>,
}

impl Default for Timing {
    fn default() -> Self {
        Self {
            resend_ms: 1_000,
            retry_ms: 30_000,
            min_gap_ms: 10_000,
            grace_ms: 30_000,
            every_ms: None,
        }
    }
}

/// Builds the refresh machine of the keys held now, for run `run`
/// ([`ceremony_digest`]).
pub type MachineFactory = Box<dyn Fn(RefreshKeys, u64) -> Result<Dkg, CeremonyError> + Send>;

/// What the state machine is fed.
#[derive(Debug)]
pub enum RekeyInput {
    /// Start a refresh now (operator's request).
    Start,
    Message {
        from: u16,
        bytes: Vec<u8>,
    },
    Connected(BTreeSet<u16>),
    Tick,
    /// The pending files are written (or why not).
    Written(Result<(), String>),
    /// The pending files replaced the live ones (or why not).
    Switched(Result<(), String>),
}

/// What the state machine asks for, in order.
#[derive(Debug)]
pub enum RekeyOutput {
    Send {
        to: u16,
        bytes: Vec<u8>,
    },
    /// Write these keys as the pending files, then feed [`RekeyInput::Written`].
    WritePending(Box<RefreshKeys>),
    /// Replace the live key files with the pending ones, then feed
    /// [`RekeyInput::Switched`].
    SwitchToPending,
    /// Give the round machine this key set (it signs proposals naming it).
    AddKeySet(Vec<SuiteKeys>),
    /// Propose with this set from now on.
    LeadWith(u64),
    /// Erase this set from the round machine.
    Retire(u64),
    Progress(String),
}

/// The refresh as `GET /v1/node/status` shows it (`refresh`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct RekeyStatus {
    /// `idle`, `ceremony`, `writing`, `stored` (waiting for every member's
    /// "stored") or `switching`.
    pub phase: &'static str,
    /// The newest run started or joined.
    pub run: u64,
    /// The key set this member proposes with (hex of its id).
    pub key_set: String,
    /// Refreshes this process completed (switched).
    pub completed: u64,
    /// Refreshes that failed or were parked.
    pub failed: u64,
    /// Why the last one failed; `culprit`: the member it blamed.
    pub last_error: Option<String>,
    pub culprit: Option<u16>,
    /// Members whose "stored" is still awaited.
    pub waiting_for: Vec<u16>,
    /// When (unix ms) the last switch happened and the next scheduled start.
    pub last_switch_ms: Option<u64>,
    pub next_scheduled_ms: Option<u64>,
}

enum State {
    Idle,
    Ceremony(Box<Dkg>),
    Writing {
        keys: Box<RefreshKeys>,
        hash: [u8; 32],
    },
    Stored {
        keys: Box<RefreshKeys>,
        hash: [u8; 32],
        set: u64,
        acked: BTreeSet<u16>,
    },
    Switching {
        keys: Box<RefreshKeys>,
        hash: [u8; 32],
        set: u64,
    },
}

impl State {
    fn name(&self) -> &'static str {
        match self {
            State::Idle => "idle",
            State::Ceremony(_) => "ceremony",
            State::Writing { .. } => "writing",
            State::Stored { .. } => "stored",
            State::Switching { .. } => "switching",
        }
    }
}

/// One member's in-node refresh (see the module docs).
pub struct Rekey {
    me: u16,
    others: BTreeSet<u16>,
    timing: Timing,
    factory: MachineFactory,
    /// The live keys (what the next refresh starts from), their outcome
    /// hash and set id.
    current: Box<RefreshKeys>,
    current_hash: [u8; 32],
    current_set: u64,
    state: State,
    connected: BTreeSet<u16>,
    /// The last finished ceremony: answers members that repeat themselves.
    last_machine: Option<Box<Dkg>>,
    last_start: Option<u64>,
    /// The newest run started or joined, and a higher one asked for that
    /// waits for `min_gap`.
    run: u64,
    wanted: Option<u64>,
    /// When to repeat the run's request (restarted members join with it).
    request_at: Option<u64>,
    retry_at: Option<u64>,
    resend_at: Option<u64>,
    next_due: Option<u64>,
    /// The old set to erase from memory, and when.
    retire: Option<(u64, u64)>,
    /// Sets stored here whose refresh was given up (hash, id).
    parked: Vec<([u8; 32], u64)>,
    /// When each member was last answered (replies at most every half
    /// resend interval).
    answered: BTreeMap<u16, u64>,
    status: RekeyStatus,
}

/// The digest an in-node refresh of `keys` binds its ceremony to: the
/// committee's, the set being refreshed and the run, so each run of a
/// committee's refresh has a session of its own. A member whose last refresh finished keeps
/// answering repeats of that session; with one session for every refresh
/// of a group key, it would answer the next refresh's first messages with
/// the last one's and make that one fail.
pub fn ceremony_digest(
    digest: &sibyl_aggregator::ConfigDigest,
    keys: &RefreshKeys,
    run: u64,
) -> sibyl_aggregator::ConfigDigest {
    use sha3::Digest;
    let mut h = sha3::Sha3_256::new();
    h.update(b"sibyl/in-node-refresh/v1");
    h.update(digest.0);
    h.update(set_of(keys).to_be_bytes());
    h.update(run.to_be_bytes());
    sibyl_aggregator::ConfigDigest(h.finalize().into())
}

/// The set id of `keys` ([`key_set_id`]).
pub fn set_of(keys: &RefreshKeys) -> u64 {
    key_set_id(&suite_keys(keys))
}

/// The round machine's keys as a refresh takes them.
pub fn refresh_keys_of(suites: &[SuiteKeys]) -> RefreshKeys {
    let mut keys = RefreshKeys::default();
    for k in suites {
        match k {
            SuiteKeys::Ed25519(kp, pkp) => keys.ed25519 = Some((kp.clone(), pkp.clone())),
            SuiteKeys::Secp256k1Evm(kp, pkp) => {
                keys.secp256k1_evm = Some((kp.clone(), pkp.clone()));
            }
        }
    }
    keys
}

/// `keys` as the round machine takes them.
pub fn suite_keys(keys: &RefreshKeys) -> Vec<SuiteKeys> {
    let mut out = Vec::new();
    if let Some((k, p)) = &keys.ed25519 {
        out.push(SuiteKeys::new(k.clone(), p.clone()));
    }
    if let Some((k, p)) = &keys.secp256k1_evm {
        out.push(SuiteKeys::new(k.clone(), p.clone()));
    }
    out
}

fn tagged(magic: &[u8; 4], hash: &[u8; 32]) -> Vec<u8> {
    let mut m = magic.to_vec();
    m.extend_from_slice(hash);
    m
}

fn hash_after<'a>(bytes: &'a [u8], magic: &[u8; 4]) -> Option<&'a [u8]> {
    bytes
        .strip_prefix(magic.as_slice())
        .filter(|rest| rest.len() == 32)
}

impl Rekey {
    /// Member `me` of `members`, holding `current` (live) and, after a
    /// restart in the middle of a refresh, `pending` (its stored new keys:
    /// the "stored" exchange resumes). Returns the first outputs.
    pub fn new(
        me: u16,
        members: impl IntoIterator<Item = u16>,
        timing: Timing,
        factory: MachineFactory,
        current: RefreshKeys,
        pending: Option<RefreshKeys>,
        now: u64,
    ) -> (Self, Vec<RekeyOutput>) {
        let current_hash = outcome_hash(&current);
        let current_set = set_of(&current);
        let mut r = Self {
            me,
            others: members.into_iter().filter(|m| *m != me).collect(),
            next_due: timing.every_ms.map(|e| next_multiple(now, e)),
            timing,
            factory,
            current: Box::new(current),
            current_hash,
            current_set,
            state: State::Idle,
            connected: BTreeSet::new(),
            last_machine: None,
            last_start: None,
            run: 0,
            wanted: None,
            request_at: None,
            retry_at: None,
            resend_at: None,
            retire: None,
            parked: Vec::new(),
            answered: BTreeMap::new(),
            status: RekeyStatus::default(),
        };
        let mut out = Vec::new();
        if let Some(keys) = pending {
            let hash = outcome_hash(&keys);
            let set = set_of(&keys);
            out.push(RekeyOutput::Progress(format!(
                "pending new shares found (set {set:016x}): asking every member whether it stored its own"
            )));
            out.push(RekeyOutput::AddKeySet(suite_keys(&keys)));
            r.state = State::Stored {
                keys: Box::new(keys),
                hash,
                set,
                acked: BTreeSet::new(),
            };
            r.resend_at = Some(now);
        }
        r.refresh_status();
        (r, out)
    }

    pub fn status(&self) -> &RekeyStatus {
        &self.status
    }

    /// When [`RekeyInput::Tick`] is due (unix ms).
    pub fn next_wake(&self) -> Option<u64> {
        let (machine, request) = match &self.state {
            State::Ceremony(m) => (m.next_wake(), self.request_at),
            _ => (None, None),
        };
        let wanted = self.wanted.map(|_| self.rested_at());
        let resend = matches!(self.state, State::Stored { .. })
            .then_some(self.resend_at)
            .flatten();
        [
            machine,
            request,
            wanted,
            resend,
            self.retire.map(|(_, at)| at),
            self.retry_at,
            self.next_due,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    pub fn handle<R: RngCore + CryptoRng>(
        &mut self,
        now: u64,
        input: RekeyInput,
        rng: &mut R,
    ) -> Vec<RekeyOutput> {
        let mut out = Vec::new();
        match input {
            RekeyInput::Start => {
                if matches!(self.state, State::Idle) {
                    let run = self.next_run(now);
                    self.start(now, run, "requested here", rng, &mut out);
                } else {
                    out.push(RekeyOutput::Progress(format!(
                        "a refresh is already in progress ({})",
                        self.state.name()
                    )));
                }
            }
            RekeyInput::Connected(set) => {
                self.connected = set.clone();
                if let State::Ceremony(m) = &mut self.state {
                    let o = m.handle(now, Input::Connected(set), rng);
                    self.absorb(now, o, &mut out);
                }
            }
            RekeyInput::Message { from, bytes } => self.on_message(now, from, bytes, rng, &mut out),
            RekeyInput::Tick => self.tick(now, rng, &mut out),
            RekeyInput::Written(result) => self.on_written(now, result, &mut out),
            RekeyInput::Switched(result) => self.on_switched(now, result, &mut out),
        }
        self.refresh_status();
        out
    }

    /// A run of this member's own: after every run seen, and at least the clock.
    fn next_run(&self, now: u64) -> u64 {
        self.run.saturating_add(1).max(now)
    }

    /// When this member may start or join another run.
    fn rested_at(&self) -> u64 {
        self.last_start
            .map_or(0, |t| t.saturating_add(self.timing.min_gap_ms))
    }

    fn start<R: RngCore + CryptoRng>(
        &mut self,
        now: u64,
        run: u64,
        why: &str,
        rng: &mut R,
        out: &mut Vec<RekeyOutput>,
    ) {
        self.retry_at = None;
        self.wanted = None;
        self.last_start = Some(now);
        self.run = run;
        let mut machine = match (self.factory)((*self.current).clone(), run) {
            Ok(m) => Box::new(m),
            Err(e) => {
                self.fail(now, format!("cannot start: {e}"), None, out);
                return;
            }
        };
        out.push(RekeyOutput::Progress(format!(
            "refresh run {run} started ({why}); set {:016x} keeps signing meanwhile",
            self.current_set
        )));
        self.send_request(now, out);
        let connected = self.connected.clone();
        let o = machine.handle(now, Input::Start { connected }, rng);
        self.state = State::Ceremony(machine);
        self.absorb(now, o, out);
    }

    /// "Join run `run`" to every other member; repeated while the
    /// ceremony runs.
    fn send_request(&mut self, now: u64, out: &mut Vec<RekeyOutput>) {
        let mut bytes = REQUEST_MAGIC.to_vec();
        bytes.extend_from_slice(&self.run.to_be_bytes());
        for &to in &self.others {
            out.push(RekeyOutput::Send {
                to,
                bytes: bytes.clone(),
            });
        }
        self.request_at = Some(now + 2 * self.timing.resend_ms);
    }

    fn fail(&mut self, now: u64, why: String, culprit: Option<u16>, out: &mut Vec<RekeyOutput>) {
        self.status.failed += 1;
        self.status.culprit = culprit;
        out.push(RekeyOutput::Progress(format!(
            "refresh failed: {why}; the current shares keep signing, retrying in {} s",
            self.timing.retry_ms / 1000
        )));
        self.status.last_error = Some(why);
        self.state = State::Idle;
        self.retry_at = Some(now + self.timing.retry_ms);
    }

    /// The running machine's outputs.
    fn absorb(&mut self, now: u64, outputs: Vec<Output>, out: &mut Vec<RekeyOutput>) {
        for o in outputs {
            match o {
                Output::Send { to, bytes } => out.push(RekeyOutput::Send { to, bytes }),
                Output::Progress(line) => out.push(RekeyOutput::Progress(line)),
                Output::Done(result) => {
                    let keys = Box::new(keys_of(*result));
                    let hash = outcome_hash(&keys);
                    if let State::Ceremony(m) = std::mem::replace(&mut self.state, State::Idle) {
                        self.last_machine = Some(m);
                    }
                    out.push(RekeyOutput::Progress(
                        "ceremony done: storing the new shares as pending".into(),
                    ));
                    out.push(RekeyOutput::WritePending(keys.clone()));
                    self.state = State::Writing { keys, hash };
                }
                Output::Failed(e) => {
                    let culprit = e.culprit();
                    if let State::Ceremony(m) = std::mem::replace(&mut self.state, State::Idle) {
                        self.last_machine = Some(m);
                    }
                    self.fail(now, format!("ceremony: {e}"), culprit, out);
                }
            }
        }
    }

    fn on_written(&mut self, now: u64, result: Result<(), String>, out: &mut Vec<RekeyOutput>) {
        let State::Writing { keys, hash } = std::mem::replace(&mut self.state, State::Idle) else {
            return;
        };
        if let Err(e) = result {
            self.fail(now, format!("cannot store the new shares: {e}"), None, out);
            return;
        }
        let set = set_of(&keys);
        out.push(RekeyOutput::AddKeySet(suite_keys(&keys)));
        out.push(RekeyOutput::Progress(format!(
            "new shares stored (set {set:016x}); waiting until every member stored its own"
        )));
        self.state = State::Stored {
            keys,
            hash,
            set,
            acked: BTreeSet::new(),
        };
        self.resend_at = Some(now);
        self.send_stored(now, out);
    }

    fn on_switched(&mut self, now: u64, result: Result<(), String>, out: &mut Vec<RekeyOutput>) {
        let State::Switching { keys, hash, set } = std::mem::replace(&mut self.state, State::Idle)
        else {
            return;
        };
        if let Err(e) = result {
            // Nothing was erased that the old set needs: try again.
            out.push(RekeyOutput::Progress(format!(
                "cannot switch the key files ({e}); retrying"
            )));
            self.state = State::Stored {
                keys,
                hash,
                set,
                acked: self.others.clone(),
            };
            self.resend_at = Some(now + self.timing.resend_ms);
            return;
        }
        let old = self.current_set;
        out.push(RekeyOutput::LeadWith(set));
        for (_, parked) in std::mem::take(&mut self.parked) {
            if parked != set {
                out.push(RekeyOutput::Retire(parked));
            }
        }
        out.push(RekeyOutput::Progress(format!(
            "every member stored its new shares: switched to set {set:016x}; the old shares are erased from disk, from memory in {} s",
            self.timing.grace_ms / 1000
        )));
        self.retire = Some((old, now + self.timing.grace_ms));
        self.current = keys;
        self.current_hash = hash;
        self.current_set = set;
        self.status.completed += 1;
        self.status.last_switch_ms = Some(now);
        self.status.last_error = None;
        self.status.culprit = None;
    }

    fn on_message<R: RngCore + CryptoRng>(
        &mut self,
        now: u64,
        from: u16,
        bytes: Vec<u8>,
        rng: &mut R,
        out: &mut Vec<RekeyOutput>,
    ) {
        if !self.others.contains(&from) {
            return;
        }
        if let Some(run) = bytes
            .strip_prefix(REQUEST_MAGIC.as_slice())
            .and_then(|r| <[u8; 8]>::try_from(r).ok())
            .map(u64::from_be_bytes)
        {
            if run > now.saturating_add(MAX_RUN_AHEAD_MS) {
                // A run named far ahead of the clock would leave no room
                // for the runs after it: a hostile member's, ignored.
                out.push(RekeyOutput::Progress(format!(
                    "member {from} asked for run {run}, too far ahead of this clock: ignored"
                )));
                return;
            }
            match &self.state {
                State::Idle | State::Ceremony(_) if run > self.run => {
                    if now >= self.rested_at() {
                        self.start(now, run, &format!("member {from} asked"), rng, out);
                    } else {
                        self.wanted = Some(self.wanted.unwrap_or(0).max(run));
                    }
                }
                State::Stored { hash, .. } => {
                    let hash = *hash;
                    self.reply(now, from, STORED_MAGIC, &hash, out);
                }
                _ => {}
            }
            return;
        }
        if let Some(h) = hash_after(&bytes, STORED_MAGIC) {
            let h: [u8; 32] = h.try_into().unwrap_or_default();
            self.on_stored(now, from, h, out);
            return;
        }
        if let Some(h) = hash_after(&bytes, NOT_HELD_MAGIC) {
            let h: [u8; 32] = h.try_into().unwrap_or_default();
            self.on_not_held(now, from, h, out);
            return;
        }
        if bytes.starts_with(b"SRF") {
            // One of ours that does not parse: never the ceremony's.
            tracing::debug!(from, "malformed refresh message dropped");
            return;
        }
        match &mut self.state {
            State::Ceremony(m) => {
                let o = m.handle(now, Input::Message { from, bytes }, rng);
                self.absorb(now, o, out);
            }
            _ => {
                // Repeats of the finished ceremony are answered; nothing
                // else it says matters now.
                if let Some(m) = &mut self.last_machine {
                    for o in m.handle(now, Input::Message { from, bytes }, rng) {
                        if let Output::Send { to, bytes } = o {
                            out.push(RekeyOutput::Send { to, bytes });
                        }
                    }
                }
            }
        }
    }

    fn on_stored(&mut self, now: u64, from: u16, h: [u8; 32], out: &mut Vec<RekeyOutput>) {
        match &mut self.state {
            State::Stored { hash, acked, .. } if *hash == h => {
                if acked.insert(from) {
                    out.push(RekeyOutput::Progress(format!(
                        "member {from} stored its new shares ({}/{})",
                        acked.len() + 1,
                        self.others.len() + 1
                    )));
                }
                self.reply(now, from, STORED_MAGIC, &h, out);
                self.maybe_switch(out);
            }
            State::Switching { hash, .. } if *hash == h => {
                self.reply(now, from, STORED_MAGIC, &h, out)
            }
            _ if h == self.current_hash || self.parked.iter().any(|(p, _)| *p == h) => {
                self.reply(now, from, STORED_MAGIC, &h, out)
            }
            // Our own ceremony may still give us that set.
            State::Ceremony(_) | State::Writing { .. } => {}
            _ => self.reply(now, from, NOT_HELD_MAGIC, &h, out),
        }
    }

    fn on_not_held(&mut self, now: u64, from: u16, h: [u8; 32], out: &mut Vec<RekeyOutput>) {
        let State::Stored {
            hash, set, acked, ..
        } = &self.state
        else {
            return;
        };
        if *hash != h {
            return;
        }
        if acked.contains(&from) {
            out.push(RekeyOutput::Progress(format!(
                "member {from} said it stored set {set:016x} and then that it does not hold it: ignored"
            )));
            return;
        }
        let (hash, set) = (*hash, *set);
        self.parked.push((hash, set));
        self.fail(
            now,
            format!(
                "member {from} does not hold the new shares (its ceremony ended without them); set {set:016x} is parked"
            ),
            None,
            out,
        );
    }

    fn maybe_switch(&mut self, out: &mut Vec<RekeyOutput>) {
        let all = matches!(&self.state, State::Stored { acked, .. } if *acked == self.others);
        if !all {
            return;
        }
        if let State::Stored {
            keys, hash, set, ..
        } = std::mem::replace(&mut self.state, State::Idle)
        {
            out.push(RekeyOutput::SwitchToPending);
            self.state = State::Switching { keys, hash, set };
        }
    }

    /// Answers `to` (at most every half resend interval per member).
    fn reply(
        &mut self,
        now: u64,
        to: u16,
        magic: &[u8; 4],
        hash: &[u8; 32],
        out: &mut Vec<RekeyOutput>,
    ) {
        let due = self
            .answered
            .get(&to)
            .is_none_or(|t| now.saturating_sub(*t) >= self.timing.resend_ms / 2);
        if due {
            self.answered.insert(to, now);
            out.push(RekeyOutput::Send {
                to,
                bytes: tagged(magic, hash),
            });
        }
    }

    fn send_stored(&mut self, now: u64, out: &mut Vec<RekeyOutput>) {
        if let State::Stored { hash, acked, .. } = &self.state {
            for &to in self.others.difference(acked) {
                out.push(RekeyOutput::Send {
                    to,
                    bytes: tagged(STORED_MAGIC, hash),
                });
            }
            self.resend_at = Some(now + self.timing.resend_ms);
        }
    }

    fn tick<R: RngCore + CryptoRng>(&mut self, now: u64, rng: &mut R, out: &mut Vec<RekeyOutput>) {
        if let State::Ceremony(m) = &mut self.state
            && m.next_wake().is_some_and(|w| w <= now)
        {
            let o = m.handle(now, Input::Tick, rng);
            self.absorb(now, o, out);
        }
        if matches!(self.state, State::Ceremony(_)) && self.request_at.is_some_and(|t| t <= now) {
            self.send_request(now, out);
        }
        if let Some(run) = self.wanted
            && now >= self.rested_at()
        {
            self.wanted = None;
            if matches!(self.state, State::Idle | State::Ceremony(_)) && run > self.run {
                self.start(now, run, "a member asked", rng, out);
            }
        }
        if matches!(self.state, State::Stored { .. }) && self.resend_at.is_some_and(|t| t <= now) {
            self.send_stored(now, out);
            // After a switch that failed on disk every member is acked
            // already: nothing new arrives to try it again, so the timer does.
            self.maybe_switch(out);
        }
        if let Some((set, at)) = self.retire
            && at <= now
        {
            self.retire = None;
            out.push(RekeyOutput::Retire(set));
            out.push(RekeyOutput::Progress(format!(
                "old set {set:016x} erased from memory"
            )));
        }
        let scheduled = self.next_due.is_some_and(|t| t <= now);
        if scheduled && let Some(every) = self.timing.every_ms {
            self.next_due = Some(next_multiple(now, every));
        }
        let retry = self.retry_at.is_some_and(|t| t <= now);
        if matches!(self.state, State::Idle) && (scheduled || retry) {
            // A scheduled run is named by its boundary, the same at every member.
            let (run, why) = match (scheduled, self.timing.every_ms) {
                (true, Some(every)) => ((now / every.max(1)) * every, "scheduled"),
                _ => (self.next_run(now), "retry"),
            };
            let run = if run > self.run {
                run
            } else {
                self.next_run(now)
            };
            self.start(now, run, why, rng, out);
        }
    }

    fn refresh_status(&mut self) {
        self.status.phase = self.state.name();
        self.status.run = self.run;
        self.status.key_set = format!("{:016x}", self.current_set);
        self.status.waiting_for = match &self.state {
            State::Stored { acked, .. } => self.others.difference(acked).copied().collect(),
            _ => Vec::new(),
        };
        self.status.next_scheduled_ms = self.next_due;
    }
}

/// The first multiple of `every` after `now`.
fn next_multiple(now: u64, every: u64) -> u64 {
    let every = every.max(1);
    (now / every + 1) * every
}

/// Where the refresh keeps its files and how it opens them.
#[derive(Clone)]
pub struct RekeyIo {
    pub keystore: crate::keystore::Keystore,
    pub digest: sibyl_aggregator::ConfigDigest,
    pub passphrase: crate::keystore::Passphrase,
    pub suites: Vec<sibyl_aggregator::Suite>,
}

/// What the refresh asks of the round driver.
#[derive(Debug)]
pub enum DriverCmd {
    /// Send ceremony bytes to a member (`Envelope::Ceremony`).
    Send {
        to: u16,
        bytes: Vec<u8>,
    },
    AddKeySet(Vec<SuiteKeys>),
    LeadWith(u64),
    Retire(u64),
    Status(RekeyStatus),
}

/// What the round driver and the API hand the refresh.
#[derive(Debug)]
pub enum RekeyEvent {
    Message {
        from: u16,
        bytes: Vec<u8>,
    },
    Connected(BTreeSet<u16>),
    /// `POST /v1/node/keys/refresh`.
    Start,
    /// `POST /v1/node/rotation/sign`: sign a hand-over with the other signers.
    Sign(SignRequest),
}

/// A signing session of one message with this member's secp256k1-evm share
/// (the committee's hand-over, `sibyl rotation-sign --live`), run inside
/// `sibyl run` over the round network: the members keep signing reports
/// meanwhile. Every signer's operator asks its own member, with the same
/// message and signers.
#[derive(Debug)]
pub struct SignRequest {
    pub message: [u8; 32],
    /// Exactly `t` members, this one among them; the lowest coordinates.
    pub signers: BTreeSet<u16>,
    pub timeout_ms: u64,
    /// The serialized signature, verified against the group key; or why not.
    pub reply: tokio::sync::oneshot::Sender<Result<Vec<u8>, String>>,
}

/// Signing messages kept from before a session starts here (a few per
/// member; the session ignores those of other messages or runs).
const MAX_EARLY_SIGN_MESSAGES: usize = 64;

/// The signing session's wire magic (`sibyl_aggregator::dkg::sign`).
const SIGN_MAGIC: &[u8; 4] = b"SSIG";

type Evm = frost_secp256k1_evm::Secp256K1Keccak256;

/// The signing session the runner holds: the machine, who waits for its
/// signature, and (once it ended) until when it lingers to answer late
/// signers.
struct Session {
    machine: sibyl_aggregator::dkg::sign::ThresholdSign<Evm>,
    reply: Option<tokio::sync::oneshot::Sender<Result<Vec<u8>, String>>>,
    linger_until: Option<u64>,
}

impl Session {
    fn start(
        rekey: &Rekey,
        digest: sibyl_aggregator::ConfigDigest,
        req: SignRequest,
        now: u64,
    ) -> Result<(Self, Vec<RekeyOutput>), (SignRequest, String)> {
        use sibyl_aggregator::dkg::sign::{SignConfig, ThresholdSign};
        if !matches!(rekey.state, State::Idle) || rekey.retire.is_some() {
            // Signers on two key sets would give shares that do not combine.
            return Err((
                req,
                "a key refresh is in progress here; sign the hand-over once it is done (refresh.phase idle, one key set)".into(),
            ));
        }
        let Some((key, public)) = rekey.current.secp256k1_evm.clone() else {
            return Err((
                req,
                "this committee does not sign with secp256k1-evm, the suite of the hand-over"
                    .into(),
            ));
        };
        let cfg = SignConfig {
            digest,
            me: rekey.me,
            signers: req.signers.clone(),
            message: req.message,
            resend_interval_ms: rekey.timing.resend_ms,
            timeout_ms: req.timeout_ms,
        };
        let mut machine = match ThresholdSign::<Evm>::new(cfg, key, public) {
            Ok(m) => m,
            Err(e) => return Err((req, e.to_string())),
        };
        let outputs = machine.handle(
            now,
            Input::Start {
                connected: rekey.connected.clone(),
            },
            &mut rand::rngs::OsRng,
        );
        let mut session = Session {
            machine,
            reply: Some(req.reply),
            linger_until: None,
        };
        let out = session.absorb(now, outputs);
        Ok((session, out))
    }

    fn absorb(
        &mut self,
        now: u64,
        outputs: Vec<sibyl_aggregator::dkg::sign::SignOutput<Evm>>,
    ) -> Vec<RekeyOutput> {
        use sibyl_aggregator::dkg::sign::SignOutput;
        let mut out = Vec::new();
        for o in outputs {
            match o {
                SignOutput::Send { to, bytes } => out.push(RekeyOutput::Send { to, bytes }),
                SignOutput::Progress(l) => {
                    out.push(RekeyOutput::Progress(format!("rotation-sign: {l}")));
                }
                SignOutput::Signed(sig) => {
                    if let Some(reply) = self.reply.take() {
                        let _ = reply.send(sig.serialize().map_err(|e| e.to_string()));
                    }
                    self.linger_until = Some(now + 3_000);
                    out.push(RekeyOutput::Progress("rotation-sign: signed".into()));
                }
                SignOutput::Failed(e) => {
                    let culprit = e
                        .culprit()
                        .map(|m| format!(" (member {m} at fault)"))
                        .unwrap_or_default();
                    if let Some(reply) = self.reply.take() {
                        let _ = reply.send(Err(format!("{e}{culprit}")));
                    }
                    self.linger_until = Some(now);
                }
            }
        }
        out
    }

    fn on_message(&mut self, now: u64, from: u16, bytes: Vec<u8>) -> Vec<RekeyOutput> {
        if self.linger_until.is_some() {
            return self
                .machine
                .answer_late(from, &bytes)
                .map(|(to, bytes)| vec![RekeyOutput::Send { to, bytes }])
                .unwrap_or_default();
        }
        let o = self
            .machine
            .handle(now, Input::Message { from, bytes }, &mut rand::rngs::OsRng);
        self.absorb(now, o)
    }

    fn next_wake(&self) -> Option<u64> {
        match self.linger_until {
            Some(t) => Some(t),
            None => self.machine.next_wake(),
        }
    }

    fn tick(&mut self, now: u64) -> Vec<RekeyOutput> {
        if self.linger_until.is_some() {
            return Vec::new();
        }
        let o = self
            .machine
            .handle(now, Input::Tick, &mut rand::rngs::OsRng);
        self.absorb(now, o)
    }
}

/// The channels between the round driver and the refresh task.
pub struct RekeyLink {
    /// Ceremony messages and connection changes, to the refresh.
    pub events: mpsc::Sender<RekeyEvent>,
    /// Sends and key-set changes, from the refresh.
    pub commands: mpsc::Receiver<DriverCmd>,
}

/// Carries `rekey` until shutdown: its writes on the blocking pool, the
/// rest through the driver.
pub async fn run(
    mut rekey: Rekey,
    first: Vec<RekeyOutput>,
    io: RekeyIo,
    mut events: mpsc::Receiver<RekeyEvent>,
    driver: mpsc::Sender<DriverCmd>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut rng = rand::rngs::OsRng;
    let mut pending = std::collections::VecDeque::from(first);
    let mut last_status = None;
    let mut session: Option<Session> = None;
    // Signing messages that came before this member's operator asked it to
    // sign (the coordinator's start, most likely): replayed when it does,
    // instead of waiting for the coordinator's next re-send.
    let mut early: std::collections::VecDeque<(u16, Vec<u8>)> = Default::default();
    loop {
        while let Some(o) = pending.pop_front() {
            let now = crate::store::now_ms();
            let follow = match o {
                RekeyOutput::Send { to, bytes } => {
                    cmd(&driver, DriverCmd::Send { to, bytes }).await;
                    None
                }
                RekeyOutput::AddKeySet(k) => {
                    cmd(&driver, DriverCmd::AddKeySet(k)).await;
                    None
                }
                RekeyOutput::LeadWith(s) => {
                    cmd(&driver, DriverCmd::LeadWith(s)).await;
                    None
                }
                RekeyOutput::Retire(s) => {
                    cmd(&driver, DriverCmd::Retire(s)).await;
                    None
                }
                RekeyOutput::Progress(line) => {
                    tracing::info!(target: "sibyl::refresh", "{line}");
                    None
                }
                RekeyOutput::WritePending(keys) => {
                    let io = io.clone();
                    let r = tokio::task::spawn_blocking(move || {
                        let pending = crate::keystore::pending_keystore(&io.keystore);
                        crate::refresh::write_keys(&pending, &io.digest, &keys, &io.passphrase)
                            .map_err(|e| e.to_string())
                    })
                    .await
                    .unwrap_or_else(|e| Err(e.to_string()));
                    Some(RekeyInput::Written(r))
                }
                RekeyOutput::SwitchToPending => {
                    let io = io.clone();
                    let r = tokio::task::spawn_blocking(move || {
                        crate::refresh::switch_to_pending(
                            &io.keystore,
                            &io.digest,
                            &io.passphrase,
                            &io.suites,
                        )
                        .map(|_| ())
                        .map_err(|e| e.to_string())
                    })
                    .await
                    .unwrap_or_else(|e| Err(e.to_string()));
                    Some(RekeyInput::Switched(r))
                }
            };
            if let Some(input) = follow {
                pending.extend(rekey.handle(now, input, &mut rng));
            }
        }
        if last_status.as_ref() != Some(rekey.status()) {
            last_status = Some(rekey.status().clone());
            cmd(&driver, DriverCmd::Status(rekey.status().clone())).await;
        }
        let now = crate::store::now_ms();
        if session
            .as_ref()
            .is_some_and(|s| s.linger_until.is_some_and(|t| t <= now))
        {
            session = None;
        }
        let wake = [
            rekey.next_wake(),
            session.as_ref().and_then(Session::next_wake),
        ]
        .into_iter()
        .flatten()
        .min();
        let sleep = wake.map_or(Duration::from_secs(3600), |w| {
            Duration::from_millis(w.saturating_sub(now))
        });
        let input = tokio::select! {
            r = shutdown.changed() => {
                if r.is_err() || *shutdown.borrow() {
                    return;
                }
                continue;
            }
            ev = events.recv() => match ev {
                None => return,
                Some(RekeyEvent::Message { from, bytes }) if bytes.starts_with(SIGN_MAGIC) => {
                    match &mut session {
                        Some(s) => pending.extend(s.on_message(crate::store::now_ms(), from, bytes)),
                        None => {
                            if early.len() == MAX_EARLY_SIGN_MESSAGES {
                                early.pop_front();
                            }
                            early.push_back((from, bytes));
                        }
                    }
                    continue;
                }
                Some(RekeyEvent::Message { from, bytes }) => RekeyInput::Message { from, bytes },
                Some(RekeyEvent::Connected(set)) => RekeyInput::Connected(set),
                Some(RekeyEvent::Start) => RekeyInput::Start,
                Some(RekeyEvent::Sign(req)) => {
                    if session.as_ref().is_some_and(|s| s.linger_until.is_none()) {
                        let _ = req
                            .reply
                            .send(Err("a signing session is already running here".into()));
                    } else {
                        let now = crate::store::now_ms();
                        match Session::start(&rekey, io.digest, req, now) {
                            Ok((mut s, out)) => {
                                pending.extend(out);
                                for (from, bytes) in early.drain(..) {
                                    pending.extend(s.on_message(now, from, bytes));
                                }
                                session = Some(s);
                            }
                            Err((req, why)) => {
                                let _ = req.reply.send(Err(why));
                            }
                        }
                    }
                    continue;
                }
            },
            _ = tokio::time::sleep(sleep) => {
                let now = crate::store::now_ms();
                if let Some(s) = &mut session
                    && s.next_wake().is_some_and(|w| w <= now)
                {
                    pending.extend(s.tick(now));
                }
                RekeyInput::Tick
            }
        };
        pending.extend(rekey.handle(crate::store::now_ms(), input, &mut rng));
    }
}

async fn cmd(driver: &mpsc::Sender<DriverCmd>, c: DriverCmd) {
    if driver.send(c).await.is_err() {
        tracing::debug!("the round driver stopped; refresh command dropped");
    }
}

#[cfg(test)]
mod tests;
