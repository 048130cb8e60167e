//! Hostile committee members as real processes (issue 14). A 4-member
//! committee at 250 ms rounds runs a baseline window with every member
//! honest; then member 4 restarts misbehaving through the test-only
//! `SIBYL_FAULT` switch (cargo feature `fault-injection`, so this target has
//! `test = false` and scripts/test.d/40-faults runs it by name):
//! `withhold` (observes, never sends a signature share), `invalid-shares`
//! (shares that do not verify), `refuse` (signed refusals of everything) and
//! `mute-observations` (never sends an observation, so it is in no leader's
//! aggregate, as a member whose observations are always late).
//! In each window the honest members' report rate stays at least 90 % of the
//! baseline, and invalid shares are pinned on member 4 in the leaders'
//! `sibyl_share_failures_total{member="4"}`. In every window a margin
//! account created through member 4 and funded through member 1 reaches
//! every member's engine (issue 20); with muted observations only because
//! the others relay member 4's signed offers, which their
//! `sibyl_round_offers_relayed` counts. Afterwards every member's engine,
//! rebuilt from its signed reports alone (`sibyl replay --from-reports`),
//! gives every margin state root the committee signed.

mod common;

use common::{RunningCommittee, report_rate, sample, sibyl};
use sibyl::cmd::devnet::http_get;
use std::time::Duration;

const WINDOW: Duration = Duration::from_secs(20);

fn share_failures_of_4(api: &str) -> f64 {
    http_get(&format!("{api}/metrics"))
        .ok()
        .and_then(|t| sample(&t, "sibyl_share_failures_total{member=\"4\"}"))
        .unwrap_or(0.0)
}

fn offers_relayed(api: &str) -> f64 {
    http_get(&format!("{api}/metrics"))
        .ok()
        .and_then(|t| sample(&t, "sibyl_round_offers_relayed"))
        .unwrap_or(0.0)
}

#[test]
fn withholding_invalid_shares_and_refusals_from_one_member_cost_under_10_percent() {
    let mut committee = RunningCommittee::start(4);
    let apis: Vec<String> = committee.apis().iter().map(|a| a.to_string()).collect();
    let api: Vec<&str> = apis.iter().map(String::as_str).collect();
    let baseline = report_rate(api[0], WINDOW);
    eprintln!("baseline: {baseline:.2} reports/s at member 1");
    assert!(baseline > 1.0, "baseline {baseline:.2} reports/s");

    let mut failures = Vec::new();
    for (account, fault) in
        (9201..).zip(["withhold", "invalid-shares", "refuse", "mute-observations"])
    {
        let blamed_before: f64 = api[..3].iter().map(|a| share_failures_of_4(a)).sum();
        let mut cmd = sibyl();
        cmd.env("SIBYL_FAULT", fault);
        committee.restart(3, cmd);
        let r = report_rate(api[0], WINDOW);
        let blamed = api[..3].iter().map(|a| share_failures_of_4(a)).sum::<f64>() - blamed_before;
        eprintln!(
            "member 4 {fault}: member 1 {r:.2} reports/s ({:.0} % of baseline); invalid shares pinned on member 4: {blamed}",
            100.0 * r / baseline
        );
        if r < 0.9 * baseline {
            failures.push(format!(
                "{fault}: {r:.2} reports/s < 90 % of the baseline {baseline:.2}"
            ));
        }
        if fault == "invalid-shares" && blamed < 1.0 {
            failures.push("invalid shares were not pinned on member 4".into());
        }
        if fault != "invalid-shares" && blamed > 0.0 {
            failures.push(format!(
                "{fault}: member 4 blamed for invalid shares {blamed} times"
            ));
        }
        let relayed_before: f64 = api[..3].iter().map(|a| offers_relayed(a)).sum();
        common::margin_account_through(&committee, 3, 0, account);
        let relayed = api[..3].iter().map(|a| offers_relayed(a)).sum::<f64>() - relayed_before;
        eprintln!("{fault}: offers of member 4 relayed by members 1-3: {relayed}");
        if fault == "mute-observations" && relayed < 1.0 {
            failures.push("member 4's commands were ordered without a relay".into());
        }
    }
    // The faulty member's own log says it misbehaves on purpose.
    let log4 = std::fs::read_to_string(&committee.file.members[3].log).unwrap();
    assert!(log4.contains("FAULT INJECTION"), "member 4's log");
    committee.stop_all();
    assert!(failures.is_empty(), "{failures:?}");
    for m in &committee.file.members {
        if let Err(e) = common::replay_from_reports(&m.config) {
            panic!("replay from reports of member {}: {e}", m.index);
        }
    }
}
