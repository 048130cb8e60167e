//! This member's estimate of its clock's offset from the committee's
//! (docs/ROUND.md, "Clocks").

use super::*;

/// This member's view of the committee's clock. Samples are "this member's
/// raw clock minus the other member's timestamp" (the message delay
/// included), taken from proposals and refusals, which are stamped when
/// sent (a report's timestamp is older by the whole signing); the correction is their median, applied only when it is
/// robust (at least `2f + 1` samples, or `f + 1` that agree) and larger
/// than a quarter of `max_clock_skew_ms` (NTP-synced members never correct).
#[derive(Clone, Debug, Default)]
pub(super) struct Clock {
    pub(super) samples: BTreeMap<u16, i64>,
    /// Median of the samples when there are at least `f + 1`.
    pub(super) estimate: Option<i64>,
    /// Applied correction: committee time = raw time - offset.
    pub(super) offset: i64,
    /// The samples are not robust but `f + 1` of them say this clock is
    /// off by more than `max_clock_skew_ms`: observe without offering to sign.
    pub(super) doubtful: bool,
}

impl Clock {
    pub(super) fn recompute(&mut self, f: usize, max_skew_ms: u64) {
        let mut v: Vec<i64> = self.samples.values().copied().collect();
        v.sort_unstable();
        let k = v.len();
        let skew = i64::try_from(max_skew_ms).unwrap_or(i64::MAX);
        let deadband = skew / 4;
        self.estimate = (k > f && k > 0).then(|| v[(k - 1) / 2]);
        let robust = k > 2 * f || (k > f && v[k - 1].saturating_sub(v[0]) <= deadband);
        self.offset = match self.estimate {
            Some(m) if robust && m.abs() > deadband => m,
            _ => 0,
        };
        let ahead = v.iter().filter(|&&x| x > skew).count();
        let behind = v.iter().filter(|&&x| x < -skew).count();
        self.doubtful = self.offset == 0 && (ahead > f || behind > f);
    }
}

impl Node {
    /// The driver's time as committee time.
    pub(super) fn committee_time(&self, raw: TimestampMs) -> TimestampMs {
        shift(raw, -self.clock.offset)
    }
    /// Committee time as the driver's time.
    pub(super) fn local_time(&self, t: TimestampMs) -> TimestampMs {
        shift(t, self.clock.offset)
    }

    /// A clock sample: member `from` stamped `remote_ms` (committee time as it
    /// sees it) on a message that arrived now.
    pub(super) fn clock_sample(&mut self, from: u16, remote_ms: TimestampMs) {
        if from == self.me || self.faults.fixed_clock() {
            return;
        }
        let raw = i64::try_from(self.raw_now).unwrap_or(i64::MAX);
        let remote = i64::try_from(remote_ms).unwrap_or(i64::MAX);
        self.clock.samples.insert(from, raw.saturating_sub(remote));
        self.clock.recompute(
            usize::from(self.committee.f()),
            self.committee.timeouts().max_clock_skew_ms,
        );
        let mine = raw.saturating_sub(self.clock.offset);
        if let Some(m) = self.member_stats.get_mut(&from) {
            m.clock_offset_ms = Some(remote.saturating_sub(mine));
        }
    }
}
