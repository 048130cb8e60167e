//! A committee of real `sibyl run` processes on loopback: signed reports
//! that verify, a member killed with SIGKILL while the rest go on, and its
//! restart: it rejoins, catches up what it missed and never signs two
//! different things in one round, and its margin engine applies the same
//! inputs as the others'. Also: a process whose identity is not in
//! the committee is refused.

use crate::common;

use common::{Members, accepted, last_round, sample, sibyl, spawn, terminate, wait_for};
use sibyl::cmd::devnet::http_get;
use std::process::{Command, Stdio};

#[test]
fn four_processes_sign_survive_a_kill_and_a_restart_catches_up() {
    let _committee = crate::common::one_committee_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let net_dir = dir.path().join("devnet");
    let file = common::setup_devnet(&net_dir, 4);
    assert_eq!(file.members.len(), 4);
    assert_eq!(file.threshold, 3);

    let mut members = Members(
        file.members
            .iter()
            .map(|m| Some(spawn(&m.config, &m.log)))
            .collect(),
    );
    let api: Vec<String> = file.members.iter().map(|m| m.api_url.clone()).collect();
    wait_for("3 signed reports at member 1", 120, || {
        last_round(&api[0]).is_some_and(|r| r >= 3)
    });

    // A real member's /metrics has every family (driver, network, API) and
    // passes `promtool check metrics`.
    // (One API request first, so the API's request families have samples.)
    http_get(&format!("{}/v1/feeds", api[0])).expect("GET /v1/feeds");
    let metrics = http_get(&format!("{}/metrics", api[0])).expect("GET /metrics");
    check_metrics(&metrics);

    // The newest report verifies with `sibyl verify` against the group key
    // and the committee file.
    let out = sibyl()
        .arg("verify")
        .arg(format!("{}/v1/reports/latest", api[1]))
        .args(["--group-key", &file.group_key, "--committee"])
        .arg(&file.committee)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("VERIFIED report of round"), "{stdout}");
    assert!(stdout.contains("(matches the committee)"), "{stdout}");
    // A wrong group key fails.
    let out = sibyl()
        .arg("verify")
        .arg(format!("{}/v1/reports/latest", api[1]))
        .args(["--group-key", &"11".repeat(32), "--committee"])
        .arg(&file.committee)
        .output()
        .unwrap();
    assert!(!out.status.success());

    // SIGKILL member 4: the other three keep signing.
    let mut killed = members.0[3].take().unwrap();
    killed.kill().unwrap();
    killed.wait().unwrap();
    let r0 = last_round(&api[0]).unwrap();
    // Margin commands while member 4 is down: the three order them.
    let token = |k: usize| {
        let dir = file.members[k].config.parent().unwrap().to_path_buf();
        std::fs::read_to_string(dir.join("admin-token")).unwrap()
    };
    for (k, path, body, want) in [
        (1, "/v1/margin/accounts", r#"{"account": 8001}"#, 201),
        (
            2,
            "/v1/margin/accounts/8001/deposit",
            r#"{"amount": "1234.5"}"#,
            200,
        ),
    ] {
        let (code, text) =
            common::post_with_token(&format!("{}{path}", api[k]), token(k).trim(), Some(body));
        assert_eq!(code, want, "member {} {path}: {text}", k + 1);
    }
    wait_for("4 more reports without member 4", 120, || {
        last_round(&api[0]).is_some_and(|r| r >= r0 + 4)
    });
    let missed = last_round(&api[0]).unwrap();

    // Restart it on the same database: it catches up and takes part again.
    members.0[3] = Some(spawn(&file.members[3].config, &file.members[3].log));
    wait_for("member 4 to catch up the rounds it missed", 120, || {
        http_get(&format!("{}/v1/reports/{missed}", api[3])).is_ok()
    });
    let before = accepted(&api[3]);
    wait_for("member 4 to take part in new rounds", 120, || {
        accepted(&api[3]) >= before + 3
    });
    // Its engine took the commands ordered while it was down.
    wait_for(
        "member 4's engine to take the commands it missed",
        120,
        || {
            http_get(&format!("{}/v1/margin/accounts/8001", api[3]))
                .ok()
                .and_then(|b| serde_json::from_str::<serde_json::Value>(&b).ok())
                .is_some_and(|v| v["cash"] == "1234500000")
        },
    );
    // Every margin engine seeded its demo book (300 accounts, ~1,400
    // inputs, in one transaction) and applies reports after it: in a debug
    // build on two loaded cores the seeding takes seconds, so wait for it
    // rather than stop members mid-way (their logs are compared below).
    wait_for(
        "every member's margin engine past its demo book",
        120,
        || {
            file.members.iter().all(|m| {
                sibyl_node::store::Db::open_read_only(&m.db)
                    .and_then(|db| db.margin_inputs())
                    .is_ok_and(|inputs| inputs.len() > 300)
            })
        },
    );
    for c in members.0.iter_mut().flatten() {
        terminate(c);
    }
    members.0.clear();

    // Members agree, and nobody signed two different things in a round:
    // wherever a ledger entry and a stored report share a round, the ledger
    // holds that report's digest.
    let mut checked = 0;
    let reports_1 = sibyl_node::store::Db::open_read_only(&file.members[0].db)
        .unwrap()
        .reports_after(0, 1_000_000)
        .unwrap();
    for m in &file.members {
        let db = sibyl_node::store::Db::open_read_only(&m.db).unwrap();
        let reports = db.reports_after(0, 1_000_000).unwrap();
        assert!(!reports.is_empty(), "member {} stored nothing", m.index);
        for r in &reports {
            if let Some(same) = reports_1.iter().find(|x| x.header.round == r.header.round) {
                // The signed content agrees; the signature bytes may differ
                // when two attempts of the round completed (a hedge:
                // docs/ROUND.md), each one the group's over the same digest.
                assert_eq!(
                    (&same.header, &same.leaves),
                    (&r.header, &r.leaves),
                    "members 1 and {} differ on round {}",
                    m.index,
                    r.header.round
                );
                let keys = sibyl_aggregator::verify::GroupKeys::new(r.header.config_digest)
                    .with_key_bytes(
                        sibyl_aggregator::Suite::Ed25519,
                        &hex::decode(&file.group_key).unwrap(),
                    )
                    .unwrap();
                for x in [same, r] {
                    sibyl_aggregator::verify::verify_report(x, &keys).unwrap_or_else(|e| {
                        panic!("member {} round {}: {e}", m.index, x.header.round)
                    });
                }
            }
        }
        let conn = rusqlite::Connection::open_with_flags(
            &m.db,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
        )
        .unwrap();
        let mut stmt = conn
            .prepare("SELECT round, digest FROM signing_ledger")
            .unwrap();
        let ledger: Vec<(i64, Vec<u8>)> = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert!(!ledger.is_empty(), "member {} never signed", m.index);
        for (round, digest) in ledger {
            if let Some(r) = reports.iter().find(|r| r.header.round == round as u64) {
                assert_eq!(
                    digest,
                    sibyl_aggregator::digest::header_digest(&r.header).to_vec(),
                    "member {} round {round}",
                    m.index
                );
                checked += 1;
            }
        }
    }
    assert!(checked >= 4, "{checked}");
    // Member 4's database holds the report of a round it was down for.
    let db4 = sibyl_node::store::Db::open_read_only(&file.members[3].db).unwrap();
    assert!(db4.report(missed).unwrap().is_some());

    // Margin: every member's engine took the demo book and the reports in
    // the same order, member 4's too (killed, restarted, caught up): each
    // stored log is a prefix of the longest one (members stopped at
    // different rounds), and `sibyl replay` reproduces it.
    let logs: Vec<(Vec<String>, Vec<String>)> = file
        .members
        .iter()
        .map(|m| {
            let db = sibyl_node::store::Db::open_read_only(&m.db).unwrap();
            let inputs = db.margin_inputs().unwrap();
            let events = db.margin_events_from(0, 1 << 40).unwrap();
            (
                inputs.into_iter().map(|(_, b)| b).collect(),
                events.into_iter().map(|e| e.body).collect(),
            )
        })
        .collect();
    let longest = logs.iter().max_by_key(|(i, _)| i.len()).unwrap();
    for (m, (inputs, events)) in file.members.iter().zip(&logs) {
        if inputs.len() <= 300 {
            // What the margin service was waiting for: the first stored
            // rounds, the settled gaps, and what the log says about both.
            let db = sibyl_node::store::Db::open_read_only(&m.db).unwrap();
            let rounds: Vec<u64> = db
                .stored_rounds_from(0)
                .unwrap()
                .into_iter()
                .take(12)
                .collect();
            let gaps = db.report_gaps_from(0).unwrap();
            let first_missing = db.first_missing_round().unwrap();
            let log = std::fs::read_to_string(&m.log).unwrap_or_default();
            let lines: Vec<&str> = log
                .lines()
                .filter(|l| {
                    l.contains("margin")
                        || l.contains("catch-up")
                        || l.contains("history")
                        || l.contains("WARN")
                        || l.contains("ERROR")
                })
                .take(40)
                .collect();
            for other in &file.members {
                let log = std::fs::read_to_string(&other.log).unwrap_or_default();
                for l in log.lines().filter(|l| l.contains("margin")) {
                    eprintln!("member {} log: {l}", other.index);
                }
            }
            panic!(
                "member {}: {} inputs; first stored rounds {rounds:?}, settled gaps {gaps:?}, first missing round {first_missing}; log:\n{}",
                m.index,
                inputs.len(),
                lines.join("\n")
            );
        }
        assert_eq!(
            inputs[..],
            longest.0[..inputs.len()],
            "member {} margin inputs",
            m.index
        );
        assert_eq!(
            events[..],
            longest.1[..events.len()],
            "member {} margin events",
            m.index
        );
        let out = sibyl()
            .arg("replay")
            .arg("--db")
            .arg(&m.db)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && stdout.contains("OK: every event matches"),
            "replay of member {}: {stdout}",
            m.index
        );
    }

    // Rebuilt from its signed reports alone, every member's engine gives
    // every margin state root the committee signed (member 4 included: it
    // missed the commands' reports live and took them from catch-up) and
    // its own margin log's root.
    for m in &file.members {
        if let Err(e) = common::replay_from_reports(&m.config) {
            panic!("replay from reports of member {}: {e}", m.index);
        }
    }
}

#[test]
fn an_identity_outside_the_committee_is_refused() {
    let _committee = crate::common::one_committee_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let net_dir = dir.path().join("devnet");
    common::setup_devnet(&net_dir, 4);
    // Keys of another committee: a valid libp2p identity that is no member here.
    let other = dir.path().join("other");
    let out = sibyl()
        .args([
            "keygen",
            "--dealer",
            "--nodes",
            "2",
            "--threshold",
            "2",
            "--out",
        ])
        .arg(&other)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let node_dir = net_dir.join("node-1");
    let config = std::fs::read_to_string(node_dir.join("node.toml"))
        .unwrap()
        .replace(
            "keys/identity.key",
            &other.join("node-1/identity.key").display().to_string(),
        )
        .replace(
            "passphrase_file = \"passphrase\"",
            &format!(
                "passphrase_file = \"{}\"",
                other.join("node-1/passphrase").display()
            ),
        );
    let outsider = node_dir.join("outsider.toml");
    std::fs::write(&outsider, config).unwrap();
    let out = sibyl()
        .arg("run")
        .arg("--config")
        .arg(&outsider)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("is not a member of the committee"),
        "{stderr}"
    );
}

fn check_metrics(text: &str) {
    for family in [
        "sibyl_round_duration_seconds",
        "sibyl_rounds_signed_total",
        "sibyl_rounds_missed_total",
        "sibyl_rounds_led_total",
        "sibyl_share_failures_total",
        "sibyl_peer_connected",
        "sibyl_feed_age_seconds",
        "sibyl_feed_heartbeat_seconds",
        "sibyl_current_round",
        "sibyl_signing_ledger_refusals_total",
        "sibyl_messages_malformed_total",
        "sibyl_net_messages_total",
        "sibyl_net_connected_members",
        "sibyl_api_requests_total",
        "sibyl_db_size_bytes",
    ] {
        assert!(
            text.contains(&format!("# TYPE {family} ")),
            "{family} missing in\n{text}"
        );
    }
    let signed = sample(text, "sibyl_rounds_signed_total").expect("rounds signed");
    assert!(signed >= 1.0, "{text}");
    let connected = sample(text, "sibyl_net_connected_members").expect("connected");
    assert!(connected >= 2.0, "{text}");
    assert!(
        sample(text, "sibyl_db_size_bytes").is_some_and(|v| v > 0.0),
        "{text}"
    );
    use std::io::Write;
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect(
            "promtool not found: install Debian's `prometheus` package (scripts/setup.d/30-api)",
        );
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics failed:\n{}{}\n---\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
