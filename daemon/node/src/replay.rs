//! Re-run the margin engine's stored inputs through a fresh [`Engine`] and
//! compare, event by event, with the stored events (`sibyl replay`, and the
//! margin service's tests); or rebuild it from signed reports alone
//! ([`replay_reports`], `sibyl replay --from-reports`). Either is given the
//! committee key owners signed their commands for ([`configured_committee_key`]
//! reads it from a member's keystore): without it, a stored signed command is
//! refused.

use crate::config::{Config, FeedParams};
use crate::margin_svc::{DemoSeed, book, committee_key, price_report, report_commands};
use crate::store::Db;
use anyhow::{Context, Result, bail};
use sibyl_aggregator::verify::GroupKeys;
use sibyl_aggregator::{Round, SignedReport, Suite};
use sibyl_margin::{CommitteeKey, Engine, EventRecord, Input};
use std::collections::BTreeMap;
use std::path::Path;

/// What a replay found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplayReport {
    pub inputs: u64,
    pub events: u64,
    pub insurance_fund: i128,
    pub divergence: Option<Divergence>,
}

/// The first event where the replay and the store disagree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Divergence {
    /// Event sequence number.
    pub seq: u64,
    /// Stored event JSON, or `None` if the store has no event there.
    pub expected: Option<String>,
    /// Replayed event JSON, or `None` if the replay produced no event there.
    pub got: Option<String>,
}

/// The committee key of the member `config` describes: the group key of
/// its committee's first suite ([`committee_key`]), read from the public
/// key package in its keystore (no passphrase needed).
pub fn configured_committee_key(config: &Config) -> Result<CommitteeKey> {
    let committee = &config.committee;
    let keystore = config.keystore();
    let digest = committee.digest;
    let suite = *committee
        .suites
        .iter()
        .min()
        .context("the committee file lists no suite")?;
    let bytes = match suite {
        Suite::Ed25519 => keystore
            .read_public_key_package::<frost_ed25519::Ed25519Sha512>(&digest)?
            .verifying_key()
            .serialize()
            .map_err(|e| e.to_string()),
        Suite::Secp256k1Evm => keystore
            .read_public_key_package::<frost_secp256k1_evm::Secp256K1Keccak256>(&digest)?
            .verifying_key()
            .serialize()
            .map_err(|e| e.to_string()),
    }
    .map_err(|e| anyhow::anyhow!("cannot encode the {suite:?} group key: {e}"))?;
    let keys = GroupKeys::new(digest).with_key_bytes(suite, &bytes)?;
    committee_key(&keys).context("the keystore's group key is not a committee key")
}

/// Replay the database at `path`; its signed commands were signed for
/// `committee` (without it they are refused and the replay stops there).
pub fn replay_db(path: &Path, committee: Option<&CommitteeKey>) -> Result<ReplayReport> {
    let db = Db::open_read_only(path)
        .with_context(|| format!("cannot open {} for replay", path.display()))?;
    let inputs = db.margin_inputs()?;
    let mut engine = Engine::default();
    if let Some(c) = committee {
        engine.set_committee(c.clone());
    }
    let mut got: Vec<EventRecord> = Vec::new();
    let started = std::time::Instant::now();
    let mut last_progress = started;
    for (i, (seq, body)) in inputs.iter().enumerate() {
        // Progress on stderr about once a second, so a long replay of a
        // busy node's history visibly moves (stdout keeps only the verdict).
        if last_progress.elapsed() >= std::time::Duration::from_secs(1) {
            last_progress = std::time::Instant::now();
            eprintln!(
                "replay: {i}/{} inputs ({}%), {:.0} s",
                inputs.len(),
                i * 100 / inputs.len().max(1),
                started.elapsed().as_secs_f64()
            );
        }
        if *seq != i as u64 {
            bail!("stored margin inputs have a gap: expected input {i}, found {seq}");
        }
        let input: Input = serde_json::from_str(body)
            .with_context(|| format!("stored margin input {seq} is not a valid engine input"))?;
        let events = engine
            .apply(&input)
            .with_context(|| format!("replay: stored input {seq} was refused by the engine"))?;
        got.extend(events);
    }
    let mut divergence = None;
    let mut stored_count = 0u64;
    let mut next = 0u64;
    let mut replayed = got.iter();
    loop {
        let page = db.margin_events_from(next, 10_000)?;
        if page.is_empty() {
            break;
        }
        for row in &page {
            stored_count += 1;
            next = row.seq + 1;
            if divergence.is_some() {
                continue;
            }
            let mine = replayed.next();
            let mine_json = mine.map(serde_json::to_string).transpose()?;
            let same = match (mine, serde_json::from_str::<EventRecord>(&row.body)) {
                (Some(m), Ok(stored)) => *m == stored && m.seq == row.seq,
                _ => false,
            };
            if !same {
                divergence = Some(Divergence {
                    seq: mine.map(|m| m.seq).unwrap_or(row.seq).min(row.seq),
                    expected: Some(row.body.clone()),
                    got: mine_json,
                });
            }
        }
    }
    if divergence.is_none()
        && let Some(extra) = replayed.next()
    {
        divergence = Some(Divergence {
            seq: extra.seq,
            expected: None,
            got: Some(serde_json::to_string(extra)?),
        });
    }
    Ok(ReplayReport {
        inputs: inputs.len() as u64,
        events: stored_count,
        insurance_fund: engine.insurance_fund(),
        divergence,
    })
}

/// What rebuilding the margin engine from signed reports found
/// ([`replay_reports`]).
#[derive(Debug)]
pub struct ReportReplay {
    /// Reports taken, in round order.
    pub reports: u64,
    /// Engine inputs the reports gave (the demo book's, prices, commands).
    pub inputs: u64,
    /// Ordered commands the engine refused (the same on every member).
    pub refused_commands: u64,
    /// The engine state root after each report, by round.
    pub roots: BTreeMap<Round, [u8; 32]>,
    /// Signed margin states (carried by the reports) this replay computed
    /// itself and found equal.
    pub signed_states_matched: u64,
    /// The first signed margin state this replay computed differently:
    /// (state round, signed root, replayed root).
    pub signed_state_mismatch: Option<(Round, [u8; 32], [u8; 32])>,
    /// The rebuilt engine.
    pub engine: Engine,
}

/// Rebuilds the margin engine from signed reports alone (in round order, as
/// the margin service takes them): the demo book at the first report with
/// an ok demo feed if `demo` is set, each report's prices, then its ordered
/// commands ([`report_commands`]), exactly as every member does; checks every
/// margin state root a report carries against the replayed one. `committee`
/// is the committee key of the group keys the reports verify under
/// ([`committee_key`]), the one owners signed their commands for; without
/// it every signed command is refused (and the roots differ from the
/// committee's once one was taken).
pub fn replay_reports(
    reports: impl IntoIterator<Item = SignedReport>,
    feeds: &[FeedParams],
    mut demo: Option<DemoSeed>,
    committee: Option<&CommitteeKey>,
) -> ReportReplay {
    let mut engine = Engine::default();
    if let Some(c) = committee {
        engine.set_committee(c.clone());
    }
    let mut marks = BTreeMap::new();
    let mut out = ReportReplay {
        reports: 0,
        inputs: 0,
        refused_commands: 0,
        roots: BTreeMap::new(),
        signed_states_matched: 0,
        signed_state_mismatch: None,
        engine: Engine::default(),
    };
    for report in reports {
        out.reports += 1;
        let prices = price_report(&report, feeds);
        let inputs = match demo.take_if(|_| book::ready(&prices)) {
            Some(d) => book::demo_inputs(d, &prices),
            None => vec![Input::Prices(prices)],
        };
        for input in inputs {
            if engine.apply(&input).is_ok() {
                out.inputs += 1;
            }
        }
        for (_, input) in report_commands(&report, &mut marks) {
            match input.map(|i| engine.apply(&i)) {
                Ok(Ok(_)) => out.inputs += 1,
                _ => out.refused_commands += 1,
            }
        }
        out.roots.insert(report.header.round, engine.state_root());
        if let Some(m) = &report.margin_state
            && let Some(mine) = out.roots.get(&m.round)
        {
            if *mine == m.root {
                out.signed_states_matched += 1;
            } else if out.signed_state_mismatch.is_none() {
                out.signed_state_mismatch = Some((m.round, m.root, *mine));
            }
        }
    }
    out.engine = engine;
    out
}

/// The reports of `db` in round order as far as its history is complete
/// (the margin service's order: a round neither stored nor settled as
/// absent ends it).
pub fn complete_reports(db: &Db) -> Result<Vec<SignedReport>> {
    let mut out = Vec::new();
    let mut from = 0;
    loop {
        let run = db.report_run(from, 4096)?;
        let full = run.reports.len() == 4096;
        out.extend(run.reports);
        from = run.next;
        if !full {
            return Ok(out);
        }
    }
}
