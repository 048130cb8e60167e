//! Re-run the margin engine's stored inputs through a fresh [`Engine`] and
//! compare, event by event, with the stored events (`sibyl replay`, and the
//! margin service's tests).

use crate::store::Db;
use anyhow::{Context, Result, bail};
use sibyl_margin::{Engine, EventRecord, Input};
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

/// Replay the database at `path`.
pub fn replay_db(path: &Path) -> Result<ReplayReport> {
    let db = Db::open_read_only(path)
        .with_context(|| format!("cannot open {} for replay", path.display()))?;
    let inputs = db.margin_inputs()?;
    let mut engine = Engine::default();
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
