//! The session machine: every suite's ceremony in turn, the stash of
//! messages of sessions not reached yet, the outbox and its re-sends.

use std::collections::{BTreeMap, BTreeSet};

use rand_core::{CryptoRng, RngCore};

use super::ceremony::{Ceremony, Effect, Mode};
use super::wire::{DkgMessage, SessionId, refresh_session_id, session_id, sha3};
use super::{
    DkgConfig, DkgError, DkgResult, Ed, Evm, IdentitySigner, Input, Output, Phase, RefreshKeys,
    STASH_PER_MEMBER, suite_label,
};
use crate::report::{Suite, TimestampMs};

/// The ceremony of the current suite (the two suites are distinct types).
enum Current {
    Ed(Ceremony<Ed>),
    Evm(Ceremony<Evm>),
}

impl Current {
    fn phase(&self) -> Phase {
        match self {
            Current::Ed(c) => c.phase(),
            Current::Evm(c) => c.phase(),
        }
    }
    fn missing(&self) -> BTreeSet<u16> {
        match self {
            Current::Ed(c) => c.missing(),
            Current::Evm(c) => c.missing(),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Status {
    NotStarted,
    Running,
    Finished,
}

/// Counters for tests and diagnostics.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DkgStats {
    /// Messages set aside for a later session.
    pub stashed: u64,
    /// Messages dropped because their sender's stash slots were full.
    pub stash_dropped: u64,
    /// Messages sent again.
    pub resent: u64,
}

/// One member's DKG: every suite's ceremony, one after the other.
pub struct Dkg {
    config: DkgConfig,
    /// A refresh: the keys whose shares are renewed (else a new key).
    refresh: Option<RefreshKeys>,
    signer: Box<dyn IdentitySigner>,
    others: BTreeSet<u16>,
    status: Status,
    /// Index into `config.suites` of the ceremony running now.
    suite: usize,
    current: Option<(SessionId, Current)>,
    result: DkgResult,
    connected: BTreeSet<u16>,
    /// This suite's deadline.
    deadline: TimestampMs,
    /// The whole run's deadline (`DkgConfig::total_timeout_ms` after start).
    run_deadline: TimestampMs,
    /// When to re-send next to the members the current phase waits for.
    resend_due: TimestampMs,
    /// Messages of sessions not reached yet, per session, decoded.
    stash: BTreeMap<SessionId, Vec<(u16, DkgMessage)>>,
    stash_count: BTreeMap<u16, usize>,
    /// (session, sender, SHA3 of the bytes) of every stashed message: a
    /// repeat is found without scanning the stash.
    stash_index: BTreeSet<(SessionId, u16, [u8; 32])>,
    /// Everything sent, per session and member, for re-sending.
    outbox: BTreeMap<SessionId, BTreeMap<u16, Vec<Vec<u8>>>>,
    last_resend: BTreeMap<(SessionId, u16), TimestampMs>,
    stats: DkgStats,
}

impl Dkg {
    /// A member's ceremonies; nothing happens until [`Input::Start`].
    pub fn new(config: DkgConfig, signer: Box<dyn IdentitySigner>) -> Result<Self, DkgError> {
        let n = u16::try_from(config.members.len())
            .map_err(|_| DkgError::Params("too many members".into()))?;
        if config.threshold < 2 || config.threshold > n {
            return Err(DkgError::Params(format!(
                "threshold {} must be between 2 and the committee size {n}",
                config.threshold
            )));
        }
        if !config.members.contains_key(&config.me) {
            return Err(DkgError::Params(format!(
                "member {} is not in the committee",
                config.me
            )));
        }
        if config.suites.is_empty() {
            return Err(DkgError::Params("no suite to run a ceremony for".into()));
        }
        let others = config
            .members
            .keys()
            .copied()
            .filter(|i| *i != config.me)
            .collect();
        Ok(Self {
            config,
            refresh: None,
            signer,
            others,
            status: Status::NotStarted,
            suite: 0,
            current: None,
            result: DkgResult::default(),
            connected: BTreeSet::new(),
            deadline: 0,
            run_deadline: TimestampMs::MAX,
            resend_due: 0,
            stash: BTreeMap::new(),
            stash_count: BTreeMap::new(),
            stash_index: BTreeSet::new(),
            outbox: BTreeMap::new(),
            last_resend: BTreeMap::new(),
            stats: DkgStats::default(),
        })
    }

    /// A proactive refresh instead of a new key: the same ceremony over
    /// frost-core's `refresh_dkg_*`, giving every member a new share of the
    /// group key `keys` holds (for every suite of `config`). Old shares and
    /// new shares do not mix: fewer than `t` old shares plus any new ones
    /// sign nothing.
    pub fn refresh(
        config: DkgConfig,
        signer: Box<dyn IdentitySigner>,
        keys: RefreshKeys,
    ) -> Result<Self, DkgError> {
        for suite in &config.suites {
            let held = match suite {
                Suite::Ed25519 => keys.ed25519.is_some(),
                Suite::Secp256k1Evm => keys.secp256k1_evm.is_some(),
            };
            if !held {
                return Err(DkgError::Params(format!(
                    "no key package of suite {} to refresh",
                    match suite {
                        Suite::Ed25519 => suite_label::<Ed>(),
                        Suite::Secp256k1Evm => suite_label::<Evm>(),
                    }
                )));
            }
        }
        let mut m = Self::new(config, signer)?;
        m.refresh = Some(keys);
        Ok(m)
    }

    /// This member's index.
    pub fn me(&self) -> u16 {
        self.config.me
    }

    /// Whether `Done` or `Failed` was emitted (the machine still answers
    /// repeats of its sessions).
    pub fn finished(&self) -> bool {
        self.status == Status::Finished
    }

    /// The current suite's phase (`Done` once finished).
    pub fn phase(&self) -> Phase {
        match (&self.current, self.status) {
            (_, Status::Finished) => Phase::Done,
            (Some((_, c)), _) => c.phase(),
            (None, _) => Phase::Connect,
        }
    }

    pub fn stats(&self) -> &DkgStats {
        &self.stats
    }

    /// Messages held in the stash now.
    pub fn stashed(&self) -> usize {
        self.stash.values().map(Vec::len).sum()
    }

    /// Everything sent so far: per session, per member, in sending order.
    pub fn sent(&self) -> &BTreeMap<SessionId, BTreeMap<u16, Vec<Vec<u8>>>> {
        &self.outbox
    }

    /// When the driver should feed [`Input::Tick`] next (`None`: no timer
    /// needed).
    pub fn next_wake(&self) -> Option<TimestampMs> {
        match self.status {
            Status::Running => Some(self.deadline.min(self.resend_due)),
            _ => None,
        }
    }

    /// Feed one input at `now` (ms, the driver's clock); perform the outputs
    /// in order.
    pub fn handle<R: RngCore + CryptoRng>(
        &mut self,
        now: TimestampMs,
        input: Input,
        rng: &mut R,
    ) -> Vec<Output> {
        let mut out = Vec::new();
        if let Err(e) = self.step(now, input, rng, &mut out) {
            self.status = Status::Finished;
            out.push(Output::Failed(e));
        }
        out
    }

    fn step<R: RngCore + CryptoRng>(
        &mut self,
        now: TimestampMs,
        input: Input,
        rng: &mut R,
        out: &mut Vec<Output>,
    ) -> Result<(), DkgError> {
        if self.status == Status::Finished {
            // Linger: answer repeats of our sessions so members that missed
            // our last messages finish too.
            if let Input::Message { from, bytes } = input
                && let Ok((session, _)) = DkgMessage::decode(&bytes)
                && self.outbox.contains_key(&session)
            {
                self.resend(now, session, from, out);
            }
            return Ok(());
        }
        match input {
            Input::Start { connected } => {
                if self.status == Status::NotStarted {
                    self.status = Status::Running;
                    self.connected = connected;
                    if let Some(total) = self.config.total_timeout_ms {
                        self.run_deadline = now.saturating_add(total);
                    }
                    self.begin_suite(now, out)?;
                }
            }
            Input::Connected(set) => self.connected = set,
            Input::Message { from, bytes } => {
                let (session, msg) =
                    DkgMessage::decode(&bytes).map_err(|e| DkgError::BadMessage {
                        member: from,
                        phase: self.phase(),
                        reason: e.to_string(),
                    })?;
                if !self.others.contains(&from) {
                    return Ok(());
                }
                let running = self
                    .current
                    .as_ref()
                    .filter(|(s, c)| *s == session && c.phase() != Phase::Connect)
                    .is_some();
                if running {
                    self.deliver(now, from, msg, rng, out)?;
                } else if self.outbox.contains_key(&session) {
                    // A straggler of a ceremony we finished: it lacks our messages.
                    self.resend(now, session, from, out);
                } else {
                    self.stash_message(session, from, msg, sha3(&[&bytes]));
                }
            }
            Input::Tick => {}
        }
        if self.status != Status::Running {
            return Ok(());
        }
        // Connected everyone: round 1.
        if let Some((_, c)) = &self.current
            && c.phase() == Phase::Connect
            && self.others.is_subset(&self.connected)
        {
            self.start_suite(now, rng, out)?;
        }
        if self.status != Status::Running {
            return Ok(());
        }
        if now >= self.deadline {
            let (phase, missing) = match &self.current {
                Some((_, c)) if c.phase() == Phase::Connect => (
                    Phase::Connect,
                    self.others.difference(&self.connected).copied().collect(),
                ),
                Some((_, c)) => (c.phase(), c.missing().into_iter().collect()),
                None => (Phase::Connect, self.others.iter().copied().collect()),
            };
            return Err(DkgError::Timeout { phase, missing });
        }
        if now >= self.resend_due {
            self.resend_due = now.saturating_add(self.config.resend_interval_ms);
            // Every interval: re-send our messages to whoever has not
            // answered yet (not only after a quiet interval: with many
            // members, others' repeats can keep a member from ever being
            // quiet while the one message it waits for was lost).
            if let Some((session, c)) = &self.current
                && c.phase() != Phase::Connect
            {
                let session = *session;
                for to in c.missing() {
                    self.resend(now, session, to, out);
                }
            }
        }
        Ok(())
    }

    /// The session id of `suite`'s ceremony (message headers, the stash): the
    /// one place it is derived. What members sign is bound to the run
    /// (every member's fresh nonce, [`super::run_session`]), in the ceremony.
    fn session_of(&self, suite: Suite) -> SessionId {
        match (&self.refresh, suite) {
            (None, Suite::Ed25519) => session_id::<Ed>(&self.config.digest),
            (None, Suite::Secp256k1Evm) => session_id::<Evm>(&self.config.digest),
            (Some(k), Suite::Ed25519) => refresh_session_id::<Ed>(
                &self.config.digest,
                &k.ed25519
                    .as_ref()
                    .map(|(_, p)| super::group_key_hex(p))
                    .unwrap_or_default(),
            ),
            (Some(k), Suite::Secp256k1Evm) => refresh_session_id::<Evm>(
                &self.config.digest,
                &k.secp256k1_evm
                    .as_ref()
                    .map(|(_, p)| super::group_key_hex(p))
                    .unwrap_or_default(),
            ),
        }
    }

    /// Enter the connect phase of suite `self.suite`.
    fn begin_suite(&mut self, now: TimestampMs, out: &mut Vec<Output>) -> Result<(), DkgError> {
        let Some(&suite) = self.config.suites.get(self.suite) else {
            return Ok(());
        };
        let me = self.config.me;
        let t = self.config.threshold;
        let members = self.config.members.clone();
        let session = self.session_of(suite);
        let (current, label) = match suite {
            Suite::Ed25519 => {
                let mode = match self.refresh.as_ref().and_then(|k| k.ed25519.clone()) {
                    Some((key_package, public_key_package)) => Mode::Refresh {
                        key_package,
                        public_key_package,
                    },
                    None => Mode::Dkg,
                };
                (
                    Current::Ed(Ceremony::new(session, me, t, members, mode)?),
                    suite_label::<Ed>(),
                )
            }
            Suite::Secp256k1Evm => {
                let mode = match self.refresh.as_ref().and_then(|k| k.secp256k1_evm.clone()) {
                    Some((key_package, public_key_package)) => Mode::Refresh {
                        key_package,
                        public_key_package,
                    },
                    None => Mode::Dkg,
                };
                (
                    Current::Evm(Ceremony::new(session, me, t, members, mode)?),
                    suite_label::<Evm>(),
                )
            }
        };
        self.current = Some((session, current));
        self.deadline = now
            .saturating_add(self.config.timeout_ms)
            .min(self.run_deadline);
        self.resend_due = now.saturating_add(self.config.resend_interval_ms);
        out.push(Output::Progress(format!(
            "{label}: waiting for {} members to connect",
            self.others.len()
        )));
        Ok(())
    }

    /// Round 1 of the current suite, then what the stash holds for it.
    fn start_suite<R: RngCore + CryptoRng>(
        &mut self,
        now: TimestampMs,
        rng: &mut R,
        out: &mut Vec<Output>,
    ) -> Result<(), DkgError> {
        let mut fx = Vec::new();
        let (session, started) = match &mut self.current {
            Some((s, Current::Ed(c))) => (*s, c.start(rng, &mut fx)),
            Some((s, Current::Evm(c))) => (*s, c.start(rng, &mut fx)),
            None => return Ok(()),
        };
        self.resend_due = now.saturating_add(self.config.resend_interval_ms);
        self.apply(now, session, fx, out);
        started?;
        let held = self.stash.remove(&session).unwrap_or_default();
        self.stash_index.retain(|(s, _, _)| *s != session);
        for (from, _) in &held {
            if let Some(c) = self.stash_count.get_mut(from) {
                *c = c.saturating_sub(1);
            }
        }
        for (from, msg) in held {
            // The suite may end (and the next begin) before the last of
            // these: the rest belongs to a finished session.
            if self.status != Status::Running
                || self.current.as_ref().map(|(s, _)| *s) != Some(session)
            {
                break;
            }
            self.deliver(now, from, msg, rng, out)?;
        }
        Ok(())
    }

    /// One message of the current session into its ceremony, then advance;
    /// on the suite's end, the next suite or `Done`.
    fn deliver<R: RngCore + CryptoRng>(
        &mut self,
        now: TimestampMs,
        from: u16,
        msg: DkgMessage,
        rng: &mut R,
        out: &mut Vec<Output>,
    ) -> Result<(), DkgError> {
        let mut fx = Vec::new();
        let Some((session, current)) = &mut self.current else {
            return Ok(());
        };
        let session = *session;
        let signer = self.signer.as_ref();
        let step = match current {
            Current::Ed(c) => c
                .receive(from, msg, &mut fx)
                .and_then(|()| c.advance(signer, &mut fx))
                .map(|o| o.map(|o| self.result.ed25519 = Some(o))),
            Current::Evm(c) => c
                .receive(from, msg, &mut fx)
                .and_then(|()| c.advance(signer, &mut fx))
                .map(|o| o.map(|o| self.result.secp256k1_evm = Some(o))),
        };
        // What the ceremony sent before an error still goes out (e.g. the echo
        // that lets the others catch an equivocator too).
        self.apply(now, session, fx, out);
        let finished = step?;
        if finished.is_some() {
            self.current = None;
            self.suite += 1;
            if self.suite < self.config.suites.len() {
                self.begin_suite(now, out)?;
                if self.others.is_subset(&self.connected) {
                    self.start_suite(now, rng, out)?;
                }
            } else {
                self.status = Status::Finished;
                out.push(Output::Done(Box::new(std::mem::take(&mut self.result))));
            }
        }
        Ok(())
    }

    fn apply(
        &mut self,
        now: TimestampMs,
        session: SessionId,
        fx: Vec<Effect>,
        out: &mut Vec<Output>,
    ) {
        for e in fx {
            match e {
                Effect::Send { to, msg } => {
                    let bytes = msg.encode(&session);
                    let sent = self
                        .outbox
                        .entry(session)
                        .or_default()
                        .entry(to)
                        .or_default();
                    if !sent.contains(&bytes) {
                        sent.push(bytes.clone());
                    }
                    out.push(Output::Send { to, bytes });
                }
                Effect::Resend { to } => self.resend(now, session, to, out),
                Effect::Progress(line) => out.push(Output::Progress(line)),
            }
        }
    }

    /// Re-send everything we sent `to` in `session`, at most once per resend
    /// interval.
    fn resend(&mut self, now: TimestampMs, session: SessionId, to: u16, out: &mut Vec<Output>) {
        if let Some(last) = self.last_resend.get(&(session, to))
            && now.saturating_sub(*last) < self.config.resend_interval_ms
        {
            return;
        }
        self.last_resend.insert((session, to), now);
        let msgs = self
            .outbox
            .get(&session)
            .and_then(|o| o.get(&to))
            .cloned()
            .unwrap_or_default();
        for bytes in msgs {
            self.stats.resent += 1;
            out.push(Output::Send { to, bytes });
        }
    }

    fn stash_message(&mut self, session: SessionId, from: u16, msg: DkgMessage, hash: [u8; 32]) {
        if self.stash_index.contains(&(session, from, hash)) {
            return;
        }
        let count = self.stash_count.entry(from).or_default();
        if *count >= STASH_PER_MEMBER {
            self.stats.stash_dropped += 1;
            return;
        }
        *count += 1;
        self.stash_index.insert((session, from, hash));
        self.stash.entry(session).or_default().push((from, msg));
        self.stats.stashed += 1;
    }
}
