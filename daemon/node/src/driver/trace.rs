//! Where a round's time goes: the driver marks each step of a round with a
//! timestamp of its clock ([`super::clock`]; the wall clock in `sibyl run`),
//! relative to the round's observation instant.
//!
//! ```text
//!  start ─► wake ─► observed ─────────────────────────────────────────────► held ─► stored
//!  (slot on      (observation       leader: quorum ─► proposed ─► signed  (report verified
//!   the round     durable, sent)    signer: proposal_in ─► recorded ─►     here: the latency)
//!   grid)                                   share_out
//! ```
//!
//! The round's start is its slot on the committee's round grid
//! ([`sibyl_aggregator::round::next_slot`]): every member observes then, so
//! one instant serves the whole committee and members on one machine (one
//! clock) give comparable figures. **Latency** is `held - start`: from the
//! round's observation instant until this member holds the signed report,
//! verified against the group key. `stored` (SQLite commit, then API
//! subscribers) comes after and is reported separately.
//!
//! Offsets are microseconds since the start; the `ledger` and
//! `observation_ledger` phases are durations (the signing ledger's exclusive
//! transaction including its fsync, and any wait for the observation record).

use serde::Serialize;
use sibyl_aggregator::Round;
use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};

/// Samples kept per phase.
const SAMPLES: usize = 4096;
/// Rounds whose marks are kept (later marks of older rounds are ignored).
const ROUNDS: usize = 64;
/// Samples per phase in the status JSON (pooled by `sibyl devnet`).
pub const RECENT: usize = 512;

/// A step of a round, in the order they happen.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// The member entered the round (timer slack after the slot).
    Wake,
    /// Its observation is recorded durably and on its way to the leader.
    Observed,
    /// Leader: the input after which it proposed (the observation that made
    /// the quorum, or the observation timeout) arrived.
    Quorum,
    /// Leader: the proposal is sent to the signers.
    Proposed,
    /// Signer (not the leader): the proposal arrived.
    ProposalIn,
    /// Signer: the signing ledger holds the round (committed).
    Recorded,
    /// Signer (not the leader): its share is sent.
    ShareOut,
    /// Leader: the shares are aggregated into the signed report.
    Signed,
    /// The member holds the signed report, verified: the round's latency.
    Held,
    /// The report is committed to this member's SQLite store.
    Stored,
    /// Duration of the signing ledger's transaction (write + fsync).
    Ledger,
    /// Duration the observation waited for its durable record (zero when it
    /// was recorded ahead of the round).
    ObservationLedger,
}

impl Phase {
    pub const ALL: [Phase; 12] = [
        Phase::Wake,
        Phase::Observed,
        Phase::Quorum,
        Phase::Proposed,
        Phase::ProposalIn,
        Phase::Recorded,
        Phase::ShareOut,
        Phase::Signed,
        Phase::Held,
        Phase::Stored,
        Phase::Ledger,
        Phase::ObservationLedger,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Phase::Wake => "wake",
            Phase::Observed => "observed",
            Phase::Quorum => "quorum",
            Phase::Proposed => "proposed",
            Phase::ProposalIn => "proposal_in",
            Phase::Recorded => "recorded",
            Phase::ShareOut => "share_out",
            Phase::Signed => "signed",
            Phase::Held => "held",
            Phase::Stored => "stored",
            Phase::Ledger => "ledger",
            Phase::ObservationLedger => "observation_ledger",
        }
    }

    /// Whether the phase is a duration rather than an offset from the start.
    pub fn is_duration(self) -> bool {
        matches!(self, Phase::Ledger | Phase::ObservationLedger)
    }
}

/// What marks read the time from: the driver's clock once it is given one.
type NowUs = Box<dyn Fn() -> u64 + Send>;

#[derive(Default)]
struct Inner {
    /// Start (µs since the epoch) and the phases already marked, per round.
    rounds: BTreeMap<Round, (u64, Vec<Phase>)>,
    samples: BTreeMap<Phase, VecDeque<u64>>,
    /// The clock marks read; the system clock while unset.
    clock: Option<NowUs>,
}

impl Inner {
    fn now_us(&self) -> u64 {
        self.clock
            .as_ref()
            .map_or_else(super::clock::system_now_us, |now| now())
    }

    /// Marks `phase` of `round` at `at_us` (first mark wins).
    fn mark(&mut self, round: Round, phase: Phase, at_us: u64) -> Option<u64> {
        let (start, done) = self.rounds.get_mut(&round)?;
        if done.contains(&phase) {
            return None;
        }
        done.push(phase);
        let offset = at_us.saturating_sub(*start);
        self.push(phase, offset);
        Some(offset)
    }

    fn push(&mut self, phase: Phase, us: u64) {
        let s = self.samples.entry(phase).or_default();
        if s.len() >= SAMPLES {
            s.pop_front();
        }
        s.push_back(us);
    }
}

/// The per-round phase marks of one member; cheap to clone (shared with the
/// report sink, which marks `stored`).
#[derive(Clone, Default)]
pub struct RoundTrace {
    inner: Arc<Mutex<Inner>>,
}

impl std::fmt::Debug for RoundTrace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RoundTrace").finish_non_exhaustive()
    }
}

/// p50, p99 and recent samples of one phase.
#[derive(Clone, Debug, Serialize)]
pub struct PhaseStats {
    pub phase: Phase,
    pub samples: usize,
    pub p50_us: u64,
    pub p99_us: u64,
    /// Newest samples, oldest first (at most [`RECENT`]).
    pub recent_us: Vec<u64>,
}

impl RoundTrace {
    /// Makes [`RoundTrace::mark`] (here and in every clone) read `clock`.
    /// The driver sets its own clock when it is built.
    pub fn use_clock(&self, clock: impl super::clock::Clock) {
        if let Ok(mut g) = self.inner.lock() {
            g.clock = Some(Box::new(move || clock.now_us()));
        }
    }

    /// Round `round` started at `start_ms` (its observation instant).
    pub fn start(&self, round: Round, start_ms: u64) {
        if let Ok(mut g) = self.inner.lock() {
            g.rounds
                .entry(round)
                .or_insert((start_ms.saturating_mul(1000), Vec::new()));
            while g.rounds.len() > ROUNDS {
                g.rounds.pop_first();
            }
        }
    }

    /// Marks `phase` of `round` now (first mark wins); returns the offset
    /// from the round's start in µs, or `None` for a round not started here.
    pub fn mark(&self, round: Round, phase: Phase) -> Option<u64> {
        let mut g = self.inner.lock().ok()?;
        let at = g.now_us();
        g.mark(round, phase, at)
    }

    /// Like [`RoundTrace::mark`] at a given time (µs since the epoch).
    pub fn mark_at(&self, round: Round, phase: Phase, at_us: u64) -> Option<u64> {
        self.inner.lock().ok()?.mark(round, phase, at_us)
    }

    /// Whether this member already holds the signed report of `round` (a
    /// recent round it took part in).
    pub fn is_held(&self, round: Round) -> bool {
        self.inner.lock().is_ok_and(|g| {
            g.rounds
                .get(&round)
                .is_some_and(|(_, done)| done.contains(&Phase::Held))
        })
    }

    /// Records a duration phase (µs).
    pub fn duration(&self, phase: Phase, us: u64) {
        if let Ok(mut g) = self.inner.lock() {
            g.push(phase, us);
        }
    }

    /// Rounds started here before `round` that have no signed report yet;
    /// they are forgotten.
    pub fn take_missed(&self, round: Round) -> usize {
        let Ok(mut g) = self.inner.lock() else {
            return 0;
        };
        let keep = g.rounds.split_off(&round);
        let missed = g
            .rounds
            .values()
            .filter(|(_, done)| !done.contains(&Phase::Held))
            .count();
        g.rounds = keep;
        missed
    }

    /// Statistics of every phase with samples, in phase order.
    pub fn stats(&self) -> Vec<PhaseStats> {
        let Ok(g) = self.inner.lock() else {
            return Vec::new();
        };
        g.samples
            .iter()
            .filter_map(|(phase, s)| {
                let v: Vec<u64> = s.iter().copied().collect();
                let (p50, p99) = super::percentiles(&v)?;
                Some(PhaseStats {
                    phase: *phase,
                    samples: v.len(),
                    p50_us: p50,
                    p99_us: p99,
                    recent_us: v[v.len().saturating_sub(RECENT)..].to_vec(),
                })
            })
            .collect()
    }
}

/// Time the threads of process `pid` spent runnable but waiting for a CPU
/// (the kernel's `schedstat`, summed over the live threads), in
/// nanoseconds. On a shared machine this is the CPU contention a member saw.
pub fn runqueue_wait_ns(pid: u32) -> Option<u64> {
    let mut total = 0u64;
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).ok()? {
        let Ok(task) = task else { continue };
        let Ok(text) = std::fs::read_to_string(task.path().join("schedstat")) else {
            continue;
        };
        if let Some(wait) = text
            .split_whitespace()
            .nth(1)
            .and_then(|v| v.parse::<u64>().ok())
        {
            total = total.saturating_add(wait);
        }
    }
    Some(total)
}

/// What each phase means, for the printed table.
fn describe(phase: Phase) -> &'static str {
    match phase {
        Phase::Wake => "member entered the round (timer slack)",
        Phase::Observed => "observation durable and sent",
        Phase::Quorum => "leader: input that completed the quorum arrived",
        Phase::Proposed => "leader: proposal sent to the signers",
        Phase::ProposalIn => "signer: proposal arrived",
        Phase::Recorded => "signer: signing ledger committed",
        Phase::ShareOut => "signer: share sent",
        Phase::Signed => "leader: shares aggregated, report sent",
        Phase::Held => "member holds the verified report = LATENCY",
        Phase::Stored => "report committed to SQLite",
        Phase::Ledger => "duration: signing ledger transaction",
        Phase::ObservationLedger => "duration: wait for the observation record",
    }
}

/// Prints the phase table pooled over members' `/v1/node/status` bodies:
/// every member's recent samples of a phase together (they share the round
/// start, so offsets are comparable on one clock).
pub fn print_phases(statuses: &[serde_json::Value]) {
    let mut pooled: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for s in statuses {
        let Some(phases) = s.get("phases").and_then(|p| p.as_array()) else {
            continue;
        };
        for p in phases {
            let (Some(name), Some(recent)) = (
                p.get("phase").and_then(|v| v.as_str()),
                p.get("recent_us").and_then(|v| v.as_array()),
            ) else {
                continue;
            };
            pooled
                .entry(name.to_string())
                .or_default()
                .extend(recent.iter().filter_map(|v| v.as_u64()));
        }
    }
    if pooled.is_empty() {
        return;
    }
    println!("phase (offset from the round's observation instant; all members pooled)");
    println!(
        "  {:<19} {:>8} {:>10} {:>10}  what",
        "phase", "samples", "p50", "p99"
    );
    for phase in Phase::ALL {
        let Some(v) = pooled.get(phase.name()) else {
            continue;
        };
        let Some((p50, p99)) = super::percentiles(v) else {
            continue;
        };
        println!(
            "  {:<19} {:>8} {:>8}us {:>8}us  {}",
            phase.name(),
            v.len(),
            p50,
            p99,
            describe(phase)
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marks_are_offsets_from_the_start_and_first_mark_wins() {
        let t = RoundTrace::default();
        t.start(7, 1_000);
        assert_eq!(t.mark_at(7, Phase::Held, 1_004_500), Some(4_500));
        assert_eq!(t.mark_at(7, Phase::Held, 1_009_000), None, "marked once");
        assert_eq!(
            t.mark_at(8, Phase::Held, 1_009_000),
            None,
            "round not started"
        );
        // A clock that went backwards gives zero, not a wrapped value.
        t.start(9, 2_000);
        assert_eq!(t.mark_at(9, Phase::Wake, 1_999_000), Some(0));
        t.duration(Phase::Ledger, 1_200);
        let stats = t.stats();
        let held = stats.iter().find(|s| s.phase == Phase::Held).unwrap();
        assert_eq!((held.samples, held.p50_us, held.p99_us), (1, 4_500, 4_500));
        assert!(stats.iter().any(|s| s.phase == Phase::Ledger));
    }

    #[test]
    fn rounds_without_a_report_count_as_missed() {
        let t = RoundTrace::default();
        for r in 1..=3 {
            t.start(r, r * 250);
        }
        t.mark_at(2, Phase::Held, 600_000);
        assert_eq!(t.take_missed(3), 1, "round 1 had no report, round 2 had");
        assert_eq!(t.take_missed(3), 0, "forgotten once counted");
        assert_eq!(t.mark_at(3, Phase::Held, 800_000), Some(50_000));
    }
}
