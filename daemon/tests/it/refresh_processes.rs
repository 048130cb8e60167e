//! `sibyl refresh` on a devnet, as processes: the members stop, run the
//! refresh together while member 2's refresh is killed mid-ceremony and
//! restarted; whatever that run's outcome, every member ends with shares
//! that work together (all old or all new, never a mix, no pending files).
//! A refresh run to the end then gives every member a new share of the same
//! group key, and the restarted devnet keeps signing reports that verify
//! against the group key it always had.

use crate::common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

fn refresh(config: &Path) -> Child {
    common::sibyl()
        .args(["refresh", "--timeout", "20s", "--config"])
        .arg(config)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start sibyl refresh")
}

/// Waits for a refresh process; (success, stdout, stderr).
fn finish(mut c: Child) -> (bool, String, String) {
    use std::io::Read;
    let mut out = String::new();
    let mut err = String::new();
    if let Some(mut s) = c.stdout.take() {
        let _ = s.read_to_string(&mut out);
    }
    if let Some(mut s) = c.stderr.take() {
        let _ = s.read_to_string(&mut err);
    }
    let status = c.wait().expect("wait refresh");
    (status.success(), out, err)
}

fn key_file(config: &Path) -> PathBuf {
    config
        .parent()
        .expect("member dir")
        .join("keys/frost.ed25519.key")
}

fn pending_files(config: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(config.parent().expect("dir").join("keys"))
        .expect("keys dir")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.to_string_lossy().contains(".pending."))
        .collect()
}

fn start_all(c: &mut common::RunningCommittee) {
    for (i, m) in c.file.members.iter().enumerate() {
        c.members.0[i] = Some(common::spawn(&m.config, &m.log));
    }
}

fn reports_continue(c: &common::RunningCommittee) {
    let api = c.api(0).to_string();
    let start = common::last_round(&api).unwrap_or(0);
    common::wait_for("new reports after the refresh", 120, || {
        common::last_round(&api).is_some_and(|r| r > start + 3)
    });
}

#[test]
fn a_refresh_keeps_the_group_key_and_a_killed_member_leaves_no_mix() {
    let _committee = common::one_committee_at_a_time();
    let mut c = common::RunningCommittee::start(4);
    let configs: Vec<PathBuf> = c.file.members.iter().map(|m| m.config.clone()).collect();
    let group_key = c.file.group_key.clone();
    c.stop_all();
    let before: Vec<Vec<u8>> = configs
        .iter()
        .map(|p| std::fs::read(key_file(p)).expect("key file"))
        .collect();

    // Members 1, 3 and 4 start; member 2 starts, and is killed (SIGKILL) as
    // soon as it has every nonce, then restarted.
    let mut running: Vec<Option<Child>> = (0..4).map(|_| None).collect();
    for i in [0usize, 2, 3] {
        running[i] = Some(refresh(&configs[i]));
    }
    let mut victim = refresh(&configs[1]);
    let stderr = victim.stderr.take().expect("stderr");
    let t0 = Instant::now();
    let mut seen = String::new();
    for line in BufReader::new(stderr).lines() {
        let line = line.expect("line");
        seen += &line;
        seen.push('\n');
        if line.contains("every nonce in") || t0.elapsed() > Duration::from_secs(30) {
            break;
        }
    }
    assert!(
        seen.contains("every nonce in"),
        "member 2 never got going:\n{seen}"
    );
    let _ = victim.kill();
    let _ = victim.wait();
    running[1] = Some(refresh(&configs[1]));
    let results: Vec<(bool, String, String)> = running
        .into_iter()
        .map(|c| finish(c.expect("refresh")))
        .collect();
    let after: Vec<Vec<u8>> = configs
        .iter()
        .map(|p| std::fs::read(key_file(p)).expect("key file"))
        .collect();
    let switched: Vec<bool> = (0..4).map(|i| after[i] != before[i]).collect();
    eprintln!("the run with member 2 killed: switched {switched:?}");
    // No mix: all switched or none did; nothing pending either way.
    assert!(
        switched.iter().all(|s| *s) || switched.iter().all(|s| !*s),
        "switched {switched:?}: {results:#?}"
    );
    for (i, p) in configs.iter().enumerate() {
        assert!(pending_files(p).is_empty(), "member {}: pending", i + 1);
        assert_eq!(
            results[i].0,
            switched[i],
            "member {}: {:?}",
            i + 1,
            results[i]
        );
    }
    // A member with pending files (a refresh that did not finish) does not
    // start; `--abandon` drops them and keeps the old shares.
    let keys_dir = configs[0].parent().expect("dir").join("keys");
    std::fs::copy(
        key_file(&configs[0]),
        keys_dir.join("frost.ed25519.pending.key"),
    )
    .expect("fake pending file");
    // `config check` refuses it as `run` does.
    let check = common::sibyl()
        .args(["config", "check", "--config"])
        .arg(&configs[0])
        .output()
        .expect("config check");
    let said = String::from_utf8_lossy(&check.stdout).to_string()
        + &String::from_utf8_lossy(&check.stderr);
    assert!(!check.status.success(), "{said}");
    assert!(said.contains("a key refresh did not finish here"), "{said}");
    let log = c.dir.path().join("pending-run.log");
    let mut refused = common::spawn(&configs[0], &log);
    let status = common::exit_within("sibyl run over pending refresh files", &mut refused, 30);
    assert!(!status.success());
    let text = std::fs::read_to_string(&log).expect("log");
    assert!(text.contains("a key refresh did not finish here"), "{text}");
    let out = common::sibyl()
        .args(["refresh", "--abandon", "--config"])
        .arg(&configs[0])
        .output()
        .expect("abandon");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(pending_files(&configs[0]).is_empty());
    // The committee signs with whatever it holds now.
    start_all(&mut c);
    reports_continue(&c);

    // A refresh run to the end: new shares of the same group key. The
    // members stop for it, so the feeds go without reports from the stop
    // to the first report after the restart (printed: issue 17's "longest
    // gap" figure for a refresh as run today).
    let api = c.api(0).to_string();
    let last_before = common::last_round(&api).unwrap_or(0);
    let stopped_at = Instant::now();
    c.stop_all();
    let before: Vec<Vec<u8>> = configs
        .iter()
        .map(|p| std::fs::read(key_file(p)).expect("key file"))
        .collect();
    let children: Vec<Child> = configs.iter().map(|p| refresh(p)).collect();
    for (i, ch) in children.into_iter().enumerate() {
        let (ok, out, err) = finish(ch);
        assert!(ok, "member {}: {err}", i + 1);
        assert!(
            out.contains(&format!("unchanged: {group_key}")),
            "member {}: {out}",
            i + 1
        );
        assert!(err.contains("switched, old shares erased"), "{err}");
        let now = std::fs::read(key_file(&configs[i])).expect("key file");
        assert_ne!(now, before[i], "member {}: share not renewed", i + 1);
        assert!(pending_files(&configs[i]).is_empty());
    }
    let ceremony = stopped_at.elapsed();
    start_all(&mut c);
    common::wait_for("a report after the refresh", 120, || {
        common::last_round(&api).is_some_and(|r| r > last_before)
    });
    eprintln!(
        "refresh gap: {:.1?} from stopping the members to the first report after the restart ({:.1?} of it stopped and in the ceremony)",
        stopped_at.elapsed(),
        ceremony
    );
    // Members verify every report against the group key before storing it.
    reports_continue(&c);
    latest_verifies(&c);
}

/// Member 1's newest report verifies (`sibyl verify`) against the group key
/// the committee always had.
fn latest_verifies(c: &common::RunningCommittee) {
    let group_key = &c.file.group_key;
    let out = common::sibyl()
        .arg("verify")
        .arg(format!("{}/v1/reports/latest", c.api(0)))
        .args(["--group-key", group_key, "--committee"])
        .arg(&c.file.committee)
        .output()
        .expect("sibyl verify");
    assert!(
        out.status.success(),
        "the newest report does not verify against {group_key}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn post_refresh(api: &str, token: &str) -> (u16, String) {
    common::post_with_token(&format!("{api}/v1/node/keys/refresh"), token, None)
}

/// The feeds' heartbeat in a devnet committee file (every feed has the same).
pub(crate) fn heartbeat_ms(committee: &std::path::Path) -> u64 {
    std::fs::read_to_string(committee)
        .expect("committee")
        .lines()
        .find_map(|l| l.strip_prefix("heartbeat = \""))
        .and_then(|v| v.trim_end_matches('"').strip_suffix("ms"))
        .and_then(|v| v.parse().ok())
        .expect("heartbeat in the committee file")
}

/// SIGKILLs member `i + 1` and starts it again 2 s later.
fn kill_and_restart(c: &mut common::RunningCommittee, i: usize) {
    let mut victim = c.members.0[i].take().expect("member");
    victim.kill().expect("kill");
    let _ = victim.wait();
    std::thread::sleep(Duration::from_secs(2));
    let m = &c.file.members[i];
    c.members.0[i] = Some(common::spawn(&m.config, &m.log));
}

/// Every member proposes with one and the same key set, its key file
/// changed from `before` to `after`, and nothing is left pending.
fn all_renewed(apis: &[String], configs: &[PathBuf], before: &[Vec<u8>], after: &[Vec<u8>]) {
    let sets: Vec<String> = apis
        .iter()
        .map(|a| refresh_status(a).expect("status")["key_set"].to_string())
        .collect();
    assert!(sets.iter().all(|s| *s == sets[0]), "one key set: {sets:?}");
    for i in 0..configs.len() {
        assert_ne!(after[i], before[i], "member {}: share renewed", i + 1);
        assert!(pending_files(&configs[i]).is_empty(), "member {}", i + 1);
    }
}

/// Member `api`'s refresh status (`refresh` in `/v1/node/status`).
fn refresh_status(api: &str) -> Option<serde_json::Value> {
    common::status(api).and_then(|s| s.get("refresh").cloned())
}

/// The key set member `api` proposes with, once its refresh is idle.
fn key_set(api: &str) -> Option<String> {
    refresh_status(api)
        .filter(|r| r["phase"] == "idle")
        .and_then(|r| r["key_set"].as_str().map(str::to_string))
}

fn completed(api: &str) -> u64 {
    refresh_status(api)
        .and_then(|r| r["completed"].as_u64())
        .unwrap_or(0)
}

/// Every signed report member `api` holds after round `after`: (round,
/// timestamp, feeds in it).
pub(crate) fn reports_after(api: &str, mut after: u64) -> Vec<(u64, u64, Vec<String>)> {
    let mut out = Vec::new();
    loop {
        let page: serde_json::Value = serde_json::from_str(
            &sibyl::cmd::devnet::http_get(&format!("{api}/v1/reports?after={after}&limit=500"))
                .expect("GET /v1/reports"),
        )
        .expect("json");
        for r in page["reports"].as_array().expect("reports") {
            let h = &r["report"]["header"];
            let feeds = r["report"]["leaves"]
                .as_array()
                .expect("leaves")
                .iter()
                .map(|l| l["feed_id"].as_str().expect("feed id").to_string())
                .collect();
            out.push((
                h["round"].as_u64().expect("round"),
                h["timestamp_ms"].as_u64().expect("timestamp"),
                feeds,
            ));
        }
        match page["next_after"].as_u64() {
            Some(n) => after = n,
            None => return out,
        }
    }
}

/// The longest time between two reports, and per feed the longest time
/// between two reports holding it (ms), over `reports` (ascending).
pub(crate) fn gaps(reports: &[(u64, u64, Vec<String>)]) -> (u64, u64) {
    let any = reports
        .windows(2)
        .map(|w| w[1].1 - w[0].1)
        .max()
        .unwrap_or(0);
    let mut last: std::collections::BTreeMap<&str, u64> = Default::default();
    let mut feed = 0;
    for (_, ts, feeds) in reports {
        for f in feeds {
            if let Some(prev) = last.insert(f, *ts) {
                feed = feed.max(ts - prev);
            }
        }
    }
    (any, feed)
}

/// The in-node refresh (`sibyl refresh --live`, `POST
/// /v1/node/keys/refresh`): the members keep
/// running and signing while they refresh, once with every member up and
/// once with member 3 killed (SIGKILL) in the middle and restarted. After
/// each, every member holds a new share of the same group key (its key file
/// changed, nothing pending), and the signed history around both has no
/// feed without an update for longer than its heartbeat (the longest gaps
/// are printed: the figure issue 17 asks for).
#[test]
fn a_refresh_inside_run_keeps_the_feeds_signed_through_a_killed_member() {
    let _committee = common::one_committee_at_a_time();
    let mut c = common::RunningCommittee::start(4);
    let configs: Vec<PathBuf> = c.file.members.iter().map(|m| m.config.clone()).collect();
    let token = |i: usize| {
        std::fs::read_to_string(configs[i].with_file_name("admin-token")).expect("admin token")
    };
    let apis: Vec<String> = c.apis().iter().map(|s| s.to_string()).collect();
    let key_files = || -> Vec<Vec<u8>> {
        configs
            .iter()
            .map(|p| std::fs::read(key_file(p)).expect("key file"))
            .collect()
    };
    let start_round = common::last_round(&apis[0]).unwrap_or(0);
    let before = key_files();

    // Without the token the route refuses.
    let (code, body) = post_refresh(&apis[0], "wrong");
    assert_eq!(code, 401, "{body}");

    // 1. Every member up, started with `sibyl refresh --live` at member 1,
    // which follows it to the switch.
    let t = Instant::now();
    let out = common::sibyl()
        .args(["refresh", "--live", "--timeout", "60s", "--config"])
        .arg(&configs[0])
        .output()
        .expect("sibyl refresh --live");
    let said = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(said.contains("switched to key set"), "{said}");
    common::wait_for("every member to finish the refresh", 60, || {
        apis.iter().all(|a| completed(a) >= 1)
    });
    let first = t.elapsed();
    // A few rounds more, so the window covers the switch and the grace.
    std::thread::sleep(Duration::from_secs(2));
    let first_end = common::last_round(&apis[0]).unwrap_or(0);
    let after_first = key_files();
    all_renewed(&apis, &configs, &before, &after_first);
    let metrics = sibyl::cmd::devnet::http_get(&format!("{}/metrics", apis[3])).expect("metrics");
    assert_eq!(
        common::sample(&metrics, "sibyl_key_refreshes_total"),
        Some(1.0),
        "{metrics}"
    );

    // 2. Member 3 killed right after the start, restarted 2 s later.
    let t = Instant::now();
    let (code, body) = post_refresh(&apis[1], &token(1));
    assert_eq!(code, 202, "{body}");
    std::thread::sleep(Duration::from_millis(300));
    kill_and_restart(&mut c, 2);
    // Done when every member proposes with one new set (member 3's
    // counter started again with its process, and the refresh may even
    // have finished before the kill).
    let first_set = key_set(&apis[0]);
    common::wait_for("every member to finish the second refresh", 150, || {
        let sets: Vec<Option<String>> = apis.iter().map(|a| key_set(a)).collect();
        sets[0].is_some() && sets[0] != first_set && sets.iter().all(|s| *s == sets[0])
    });
    let second = t.elapsed();
    let after_second = key_files();
    all_renewed(&apis, &configs, &after_first, &after_second);
    // Reports keep coming and verify against the group key the committee
    // always had.
    reports_continue(&c);
    latest_verifies(&c);
    // The same kill without a refresh, for comparison (of member 4: the
    // leader schedule still passes over member 3 after its kill).
    let second_end = common::last_round(&apis[0]).unwrap_or(0);
    kill_and_restart(&mut c, 3);
    reports_continue(&c);
    let reports = reports_after(&apis[0], start_round);
    let (_, feed) = gaps(&reports);
    let split = reports.partition_point(|r| r.0 <= first_end);
    let split2 = reports.partition_point(|r| r.0 <= second_end);
    let (any_up, feed_up) = gaps(&reports[..split]);
    let (any_kill, feed_kill) = gaps(&reports[split.saturating_sub(1)..split2]);
    let (any_plain, _) = gaps(&reports[split2.saturating_sub(1)..]);
    let heartbeat_ms = heartbeat_ms(&c.file.committee);
    eprintln!(
        "in-node refresh: all up {first:.1?} (longest gap between reports {any_up} ms, per feed {feed_up} ms), member 3 killed and restarted {second:.1?} (longest gap {any_kill} ms, per feed {feed_kill} ms), the same kill of member 4 without a refresh: longest gap {any_plain} ms; {} reports from round {start_round}, heartbeat {heartbeat_ms} ms",
        reports.len()
    );
    assert!(
        feed <= heartbeat_ms,
        "a feed went {feed} ms without an update (heartbeat {heartbeat_ms} ms)"
    );
}

/// The committee file without member `removed`'s `[[members]]` block.
fn committee_without(text: &str, removed: u16) -> String {
    let mut out = String::new();
    for (i, block) in text.split("[[members]]").enumerate() {
        if i > 0 && block.contains(&format!("\nindex = {removed}\n")) {
            // Keep what follows the members (the feeds).
            if let Some(rest) = block.find("\n[[").map(|at| &block[at..]) {
                out.push_str(rest.trim_start_matches('\n'));
            }
            continue;
        }
        if i > 0 {
            out.push_str("[[members]]");
        }
        out.push_str(block);
    }
    out
}

/// Removing a member, as processes: a 4-member devnet (t = 3) stops;
/// members 1-3 run `sibyl refresh --new-committee` with a committee file
/// that leaves member 4 out, member 2's killed mid-ceremony and restarted
/// (no member ends with a mix); run to the end it gives 1-3 new shares
/// bound to the new committee, 4's old share no longer combines with
/// theirs, and the three restarted on the new committee sign reports that
/// verify against the group key they always had.
#[test]
fn removing_a_member_refreshes_among_the_rest_and_keeps_the_group_key() {
    use frost_ed25519 as frost;
    let _committee = common::one_committee_at_a_time();
    let mut c = common::RunningCommittee::start(4);
    let configs: Vec<PathBuf> = c.file.members.iter().map(|m| m.config.clone()).collect();
    let group_key = c.file.group_key.clone();
    let old_text = std::fs::read_to_string(&c.file.committee).expect("committee");
    let new_committee = c.file.committee.with_file_name("committee-without-4.toml");
    std::fs::write(&new_committee, committee_without(&old_text, 4)).expect("write");
    let old = sibyl_node::config::Committee::load(&c.file.committee).expect("old");
    let new = sibyl_node::config::Committee::load(&new_committee).expect("new committee parses");
    assert_eq!(new.members.len(), 3);
    assert_eq!(new.feeds, old.feeds);
    c.stop_all();
    let remove = |config: &Path, new_committee: &Path| {
        common::sibyl()
            .args(["refresh", "--timeout", "20s", "--config"])
            .arg(config)
            .arg("--new-committee")
            .arg(new_committee)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start sibyl refresh --new-committee")
    };

    // Refused: a committee that adds nobody and removes nobody, and one with
    // another threshold.
    let out = common::sibyl()
        .args(["refresh", "--config"])
        .arg(&configs[0])
        .arg("--new-committee")
        .arg(&c.file.committee)
        .output()
        .expect("refresh");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("nothing to remove"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lower = c.file.committee.with_file_name("committee-t2.toml");
    std::fs::write(
        &lower,
        committee_without(&old_text, 4).replace("threshold = 3", "threshold = 2"),
    )
    .expect("write");
    let out = common::sibyl()
        .args(["refresh", "--config"])
        .arg(&configs[0])
        .arg("--new-committee")
        .arg(&lower)
        .output()
        .expect("refresh");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("keeps the threshold"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let before: Vec<Vec<u8>> = configs
        .iter()
        .map(|p| std::fs::read(key_file(p)).expect("key file"))
        .collect();
    // Members 1 and 3 start; member 2 starts and is killed as soon as it has
    // every nonce, then restarted.
    let mut running: Vec<Option<Child>> = (0..3).map(|_| None).collect();
    for i in [0usize, 2] {
        running[i] = Some(remove(&configs[i], &new_committee));
    }
    let mut victim = remove(&configs[1], &new_committee);
    let stderr = victim.stderr.take().expect("stderr");
    let t0 = Instant::now();
    let mut seen = String::new();
    for line in BufReader::new(stderr).lines() {
        let line = line.expect("line");
        seen += &line;
        seen.push('\n');
        if line.contains("every nonce in") || t0.elapsed() > Duration::from_secs(30) {
            break;
        }
    }
    assert!(seen.contains("removing member(s) [4]"), "{seen}");
    assert!(
        seen.contains("every nonce in"),
        "member 2 never got going:\n{seen}"
    );
    let _ = victim.kill();
    let _ = victim.wait();
    running[1] = Some(remove(&configs[1], &new_committee));
    let results: Vec<(bool, String, String)> = running
        .into_iter()
        .map(|c| finish(c.expect("refresh")))
        .collect();
    let switched: Vec<bool> = (0..3)
        .map(|i| std::fs::read(key_file(&configs[i])).expect("key file") != before[i])
        .collect();
    eprintln!("the removal with member 2 killed: switched {switched:?}");
    assert!(
        switched.iter().all(|s| *s) || switched.iter().all(|s| !*s),
        "switched {switched:?}: {results:#?}"
    );
    if !switched[0] {
        // The killed run did not finish: nobody switched; run it again.
        for p in &configs[..3] {
            assert!(pending_files(p).is_empty(), "{}: pending", p.display());
        }
        let ceremony = Instant::now();
        let children: Vec<Child> = configs[..3]
            .iter()
            .map(|p| remove(p, &new_committee))
            .collect();
        for (i, ch) in children.into_iter().enumerate() {
            let (ok, _, err) = finish(ch);
            assert!(ok, "member {}: {err}", i + 1);
        }
        eprintln!(
            "removal ceremony (members 1-3, nodes stopped): {:.2?}",
            ceremony.elapsed()
        );
    }
    for (i, p) in configs[..3].iter().enumerate() {
        assert!(pending_files(p).is_empty(), "member {}: pending", i + 1);
        assert_ne!(std::fs::read(key_file(p)).expect("key"), before[i]);
    }
    // Member 4's key file is untouched (its operator deletes it).
    assert_eq!(
        std::fs::read(key_file(&configs[3])).expect("key"),
        before[3]
    );

    // The math: new shares 1-3 sign under the group key; member 4's old
    // share with two new ones does not.
    let keys = |config: &Path, digest: &sibyl_aggregator::ConfigDigest| {
        let cfg = sibyl_node::config::Config::load(config).expect("config");
        let pass = cfg.key_passphrase().expect("passphrase");
        let ks = cfg.keystore();
        (
            ks.read_key_package::<frost::Ed25519Sha512>(digest, &pass)
                .expect("key package"),
            ks.read_public_key_package::<frost::Ed25519Sha512>(digest)
                .expect("public key package"),
        )
    };
    let new_keys: Vec<_> = configs[..3].iter().map(|p| keys(p, &new.digest)).collect();
    let (old4, old_public) = keys(&configs[3], &old.digest);
    let new_public = new_keys[0].1.clone();
    assert_eq!(new_public.verifying_key(), old_public.verifying_key());
    assert_eq!(
        new_public.verifying_shares().len(),
        3,
        "member 4 has no share of the new set"
    );
    let sign = |signers: &[&frost::keys::KeyPackage], public: &frost::keys::PublicKeyPackage| {
        let mut rng = rand::rngs::OsRng;
        let message = b"sibyl removal check";
        let mut nonces = std::collections::BTreeMap::new();
        let mut commitments = std::collections::BTreeMap::new();
        for k in signers {
            let (n, c) = frost::round1::commit(k.signing_share(), &mut rng);
            nonces.insert(*k.identifier(), n);
            commitments.insert(*k.identifier(), c);
        }
        let package = frost::SigningPackage::new(commitments, message);
        let shares: std::collections::BTreeMap<_, _> = signers
            .iter()
            .map(|k| {
                let share = frost::round2::sign(&package, &nonces[k.identifier()], k)
                    .expect("signature share");
                (*k.identifier(), share)
            })
            .collect();
        frost::aggregate(&package, &shares, public)
            .ok()
            .filter(|sig| public.verifying_key().verify(message, sig).is_ok())
    };
    let all_new: Vec<&frost::keys::KeyPackage> = new_keys.iter().map(|(k, _)| k).collect();
    assert!(
        sign(&all_new, &new_public).is_some(),
        "the three new shares sign"
    );
    let mixed = [&new_keys[0].0, &new_keys[1].0, &old4];
    assert!(
        sign(&mixed, &old_public).is_none() && sign(&mixed, &new_public).is_none(),
        "member 4's old share signed with two new ones"
    );

    // Members 1-3 run on the new committee: reports verify against the same
    // group key and the new committee file.
    for p in &configs[..3] {
        let text = std::fs::read_to_string(p).expect("node.toml");
        let moved = text.replace(
            "committee = \"../committee.toml\"",
            "committee = \"../committee-without-4.toml\"",
        );
        assert_ne!(moved, text, "node.toml names its committee file");
        std::fs::write(p, moved).expect("node.toml");
    }
    let stopped_at = Instant::now();
    for i in 0..3 {
        let m = &c.file.members[i];
        c.members.0[i] = Some(common::spawn(&m.config, &m.log));
    }
    let api = c.api(0).to_string();
    let verify = || {
        common::sibyl()
            .arg("verify")
            .arg(format!("{api}/v1/reports/latest"))
            .args(["--group-key", &group_key, "--committee"])
            .arg(&new_committee)
            .output()
            .expect("sibyl verify")
    };
    // The newest report is the old committee's until the three sign one.
    common::wait_for(
        "a report of the new committee verifying against the group key",
        120,
        || verify().status.success(),
    );
    eprintln!(
        "removal: first report of the new committee {:.1?} after the start",
        stopped_at.elapsed()
    );
    let out = verify();
    assert!(String::from_utf8_lossy(&out.stdout).contains("(matches the committee)"));
}
