//! A member whose wall clock is off, as a real process under libfaketime
//! (Debian's `faketime`, installed by scripts/setup.d/40-faults): a 4-member
//! committee at 250 ms rounds runs a baseline window with every clock right,
//! then member 4 restarts with its wall clock 3 s behind, 3 s ahead and 30 s
//! ahead. The committee's report rate at member 1 in each window must stay at
//! least 90 % of the baseline (issue 14: rounds with an honest leader are
//! signed whatever one member's clock says). In each window a margin
//! account is created through the skewed member and funded through
//! another, every member's engine must hold it, and afterwards every
//! member's engine rebuilt from its signed reports alone must give every
//! margin state root the committee signed (issue 20).
//!
//! libfaketime: `LD_PRELOAD` of `libfaketimeMT.so.1` with `FAKETIME="+3s"`
//! shifts `CLOCK_REALTIME` (what `SystemTime::now`, hence the protocol's
//! wall-clock milliseconds, reads); `DONT_FAKE_MONOTONIC=1` leaves
//! `CLOCK_MONOTONIC` real, so tokio's timers and `Instant` are unaffected;
//! `FAKETIME_NO_CACHE=1` makes it read `FAKETIME` without its 10 s cache.

use crate::common;

use common::{RunningCommittee, report_rates, sibyl};
use sibyl::cmd::devnet::http_get;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

const LIBFAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1";
const WINDOW: Duration = Duration::from_secs(20);

fn faked(mut cmd: Command, offset: &str) -> Command {
    cmd.env("LD_PRELOAD", LIBFAKETIME)
        .env("FAKETIME", offset)
        .env("DONT_FAKE_MONOTONIC", "1")
        .env("FAKETIME_NO_CACHE", "1");
    cmd
}

#[test]
fn a_member_with_its_clock_off_by_3s_or_30s_costs_under_10_percent_of_reports() {
    let _committee = crate::common::one_committee_at_a_time();
    assert!(
        Path::new(LIBFAKETIME).exists(),
        "{LIBFAKETIME} is missing: install Debian's `faketime` package (./scripts/setup runs scripts/setup.d/40-faults)"
    );
    // libfaketime really shifts the wall clock of a child process.
    let out = faked(Command::new("date"), "+30s")
        .arg("+%s")
        .output()
        .expect("run date under libfaketime");
    let faked_now: i64 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    assert!(
        (faked_now - now - 30).abs() <= 2,
        "libfaketime did not shift the clock: {faked_now} vs {now}"
    );

    let mut committee = RunningCommittee::start(4);
    let apis: Vec<String> = committee.apis().iter().map(|a| a.to_string()).collect();
    let api: Vec<&str> = apis.iter().map(String::as_str).collect();
    let baseline = report_rates(&[api[0]], WINDOW)[0];
    eprintln!("baseline: {baseline:.2} reports/s at member 1");
    assert!(baseline > 1.0, "baseline {baseline:.2} reports/s");

    let mut failures = Vec::new();
    for offset in ["-3s", "+3s", "+30s"] {
        // Restarted, it has 3 s to start and estimate its offset.
        committee.restart(3, faked(sibyl(), offset));
        let r = report_rates(&[api[0], api[3]], WINDOW);
        let offset_seen = common::status(api[3]).map(|s| s.to_string()).and_then(|s| {
            let i = s.find("offset")?;
            Some(s[i..s.len().min(i + 80)].to_string())
        });
        let metrics_offset = http_get(&format!("{}/metrics", api[3])).ok().and_then(|t| {
            t.lines()
                .find(|l| l.contains("offset") && !l.starts_with('#'))
                .map(str::to_string)
        });
        eprintln!(
            "member 4 at {offset}: member 1 {:.2} reports/s ({:.0} % of baseline), member 4 {:.2}/s; status: {offset_seen:?}; metrics: {metrics_offset:?}",
            r[0],
            100.0 * r[0] / baseline,
            r[1]
        );
        if r[0] < 0.9 * baseline {
            failures.push(format!(
                "{offset}: {:.2} reports/s < 90 % of the baseline {baseline:.2}",
                r[0]
            ));
        }
        // Margin commands sent to the skewed member and to another are
        // ordered into rounds and applied by every member alike.
        let account = match offset {
            "-3s" => 9101,
            "+3s" => 9102,
            _ => 9103,
        };
        common::margin_account_through(&committee, 3, 0, account);
    }
    committee.stop_all();
    assert!(failures.is_empty(), "{failures:?}");
    // Rebuilt from its signed reports alone, every member's engine gives
    // every margin state root the committee signed, skewed windows
    // included, and its own margin log's root.
    for m in &committee.file.members {
        if let Err(e) = common::replay_from_reports(&m.config) {
            panic!("replay from reports of member {}: {e}", m.index);
        }
    }
}
