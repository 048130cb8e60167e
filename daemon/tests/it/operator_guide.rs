//! docs/OPERATOR.md as an operator follows it: the guide's commands, as
//! written, for four members on loopback (issue 22), and what the guide
//! promises about a feed that never reports.

use crate::common::{
    Members, last_round, one_committee_at_a_time, sample, sibyl, spawn, status, terminate, wait_for,
};
use sibyl::cmd::devnet::http_get;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

fn ok(what: &str, out: &Output) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// A committee feed that no report ever carried still has its
/// `sibyl_feed_age_seconds` from the start, growing, so `SibylFeedStale`
/// (`age > heartbeat * 1.5`) can fire for it: one member of four runs, so
/// no report is ever signed.
#[test]
fn the_feed_age_gauge_exists_for_a_feed_that_never_reported() {
    let _committee = one_committee_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let file = crate::common::setup_devnet(&dir.path().join("devnet"), 4);
    let m = &file.members[0];
    let _members = Members(vec![Some(spawn(&m.config, &m.log))]);
    let api = m.api_url.clone();
    let metrics = || http_get(&format!("{api}/metrics")).unwrap_or_default();
    wait_for("member 1's metrics", 60, || !metrics().is_empty());
    let feeds: Vec<String> = std::fs::read_to_string(&file.committee)
        .unwrap()
        .lines()
        .filter_map(|l| l.strip_prefix("id = \""))
        .map(|l| l.trim_end_matches('"').to_string())
        .collect();
    assert!(!feeds.is_empty());
    let age = |text: &str, feed: &str| {
        sample(text, &format!(r#"sibyl_feed_age_seconds{{feed="{feed}"}}"#))
    };
    // The API answers as soon as it listens; the round driver registers
    // the ages when it starts, a moment later on a loaded machine.
    wait_for("member 1's feed ages", 60, || {
        let text = metrics();
        feeds.iter().all(|feed| age(&text, feed).is_some())
    });
    let first = metrics();
    std::thread::sleep(Duration::from_millis(1500));
    let later = metrics();
    assert_eq!(last_round(&api), None, "no report can be signed by 1 of 4");
    for feed in &feeds {
        let a = age(&first, feed).unwrap_or_else(|| panic!("no age for {feed}:\n{first}"));
        let b = age(&later, feed).unwrap_or_else(|| panic!("no age for {feed}:\n{later}"));
        assert!(b >= a + 1.0, "{feed}: the age does not grow: {a} then {b}");
        assert!(
            sample(
                &later,
                &format!(r#"sibyl_feed_heartbeat_seconds{{feed="{feed}"}}"#)
            )
            .is_some(),
            "{later}"
        );
    }
}

/// One member's files, laid out as the guide's section 2 has them.
struct Member {
    dir: PathBuf,
    passphrase: String,
    port: u16,
    api: String,
    peer_id: String,
}

impl Member {
    fn node(&self) -> PathBuf {
        self.dir.join("node.toml")
    }
    fn cmd(&self) -> Command {
        let mut c = sibyl();
        c.env("SIBYL_KEY_PASSPHRASE", &self.passphrase)
            .env("SIBYL_ADMIN_TOKEN", "walk-admin-token");
        c
    }
    fn start(&self) -> Child {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("run.log"))
            .unwrap();
        self.cmd()
            .arg("run")
            .arg("--config")
            .arg(self.node())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start sibyl run")
    }
}

/// The guide's path for four new operators on loopback: `sibyl identity`,
/// the committee file from the example with their PeerIds, node.toml from
/// the example, `config check --keys identity`, `sibyl dkg` together,
/// `config check`, `sibyl run`, `sibyl verify` against a member's API, a
/// member restarted (section 7), and one backed up, lost and restored
/// (section 4). Each member has its own passphrase.
#[test]
fn the_operator_guide_walk_on_loopback() {
    let _committee = one_committee_at_a_time();
    let t0 = Instant::now();
    let root = tempfile::tempdir().unwrap();
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/examples");
    // Section 2, step 1: identities.
    let mut members: Vec<Member> = (1..=4)
        .map(|i| {
            let dir = root.path().join(format!("operator-{i}"));
            std::fs::create_dir_all(&dir).unwrap();
            let passphrase = format!("passphrase of operator {i}");
            let out = sibyl()
                .env("SIBYL_KEY_PASSPHRASE", &passphrase)
                .args(["identity", "--out"])
                .arg(dir.join("keys"))
                .args(["--passphrase-env", "SIBYL_KEY_PASSPHRASE"])
                .output()
                .expect("run sibyl identity");
            let stdout = ok("sibyl identity", &out);
            let peer_id = stdout
                .lines()
                .find_map(|l| l.strip_prefix("peer_id = \""))
                .and_then(|l| l.strip_suffix('"'))
                .unwrap_or_else(|| panic!("no peer_id in {stdout}"))
                .to_string();
            Member {
                dir,
                passphrase,
                port: free_port(),
                api: String::new(),
                peer_id,
            }
        })
        .collect();
    // Step 2: the committee file from the example, with their PeerIds and
    // addresses; every member gets the identical file.
    let example = std::fs::read_to_string(examples.join("committee.toml")).unwrap();
    let mut committee = String::new();
    let mut index = 0;
    for line in example.lines() {
        let line = if let Some(i) = line.strip_prefix("index = ") {
            index = i.trim().parse::<usize>().unwrap();
            line.to_string()
        } else if line.starts_with("peer_id = ") {
            format!("peer_id = \"{}\"", members[index - 1].peer_id)
        } else if line.starts_with("address = ") {
            format!(
                "address = \"/ip4/127.0.0.1/tcp/{}\"",
                members[index - 1].port
            )
        } else {
            line.to_string()
        };
        committee.push_str(&line);
        committee.push('\n');
    }
    assert_eq!(index, 4, "the example lists four members");
    // Step 3: node.toml from the example: its own listen and API addresses.
    let node_example = std::fs::read_to_string(examples.join("node.toml")).unwrap();
    for m in &mut members {
        std::fs::write(m.dir.join("committee.toml"), &committee).unwrap();
        let api_port = free_port();
        m.api = format!("http://127.0.0.1:{api_port}");
        let node = node_example
            .replace(
                "/ip4/0.0.0.0/tcp/9001",
                &format!("/ip4/127.0.0.1/tcp/{}", m.port),
            )
            .replace("127.0.0.1:8080", &format!("127.0.0.1:{api_port}"));
        assert_ne!(node, node_example);
        std::fs::write(m.node(), node).unwrap();
    }
    // Step 4: config check before the ceremony; the digest is the same for all.
    let mut digests = Vec::new();
    for m in &members {
        let out = m
            .cmd()
            .args(["config", "check", "--keys", "identity", "--config"])
            .arg(m.node())
            .output()
            .expect("config check");
        let stdout = ok("config check --keys identity", &out);
        digests.push(
            stdout
                .lines()
                .find(|l| l.starts_with("config digest 0x"))
                .unwrap_or_else(|| panic!("{stdout}"))
                .to_string(),
        );
    }
    assert!(digests.windows(2).all(|w| w[0] == w[1]), "{digests:?}");
    // Before the DKG the full check refuses: the key package is missing.
    let out = members[0]
        .cmd()
        .args(["config", "check", "--config"])
        .arg(members[0].node())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("`keys.key_package`"));

    // Section 3: the ceremony, all members at about the same time.
    // Killed if the test fails before they end.
    let mut dkg = Members(
        members
            .iter()
            .map(|m| {
                m.cmd()
                    .args(["dkg", "--timeout", "60s", "--config"])
                    .arg(m.node())
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
                    .ok()
            })
            .collect(),
    );
    let mut group_keys = Vec::new();
    for (m, child) in members.iter().zip(dkg.0.iter_mut()) {
        let child = child.take().expect("sibyl dkg started");
        let out = child.wait_with_output().expect("wait for dkg");
        let stdout = ok("sibyl dkg", &out);
        assert!(!String::from_utf8_lossy(&out.stderr).contains(&m.passphrase));
        group_keys.push(
            stdout
                .lines()
                .find_map(|l| l.strip_prefix("group public key (ed25519): "))
                .unwrap_or_else(|| panic!("no group key in {stdout}"))
                .to_string(),
        );
        let wrote = m.dir.join("keys/frost.ed25519.key");
        assert!(stdout.contains(&wrote.display().to_string()), "{stdout}");
        assert!(wrote.exists());
    }
    assert!(
        group_keys.windows(2).all(|w| w[0] == w[1]),
        "{group_keys:?}"
    );
    let group_key = group_keys[0].clone();
    let dkg_done = t0.elapsed();

    // Section 2, step 4 again: now the full check passes.
    for m in &members {
        let out = m
            .cmd()
            .args(["config", "check", "--config"])
            .arg(m.node())
            .output()
            .unwrap();
        assert!(ok("config check", &out).starts_with("OK:"));
    }

    // Run the members.
    let mut running = Members(members.iter().map(|m| Some(m.start())).collect());
    let api1 = members[0].api.clone();
    wait_for("3 signed reports at member 1", 90, || {
        last_round(&api1).is_some_and(|r| r >= 3)
    });
    let first_report = t0.elapsed();

    // Verify the latest report as a consumer would.
    let verify = |api: &str| {
        let out = sibyl()
            .arg("verify")
            .arg(format!("{api}/v1/reports/latest"))
            .args(["--group-key", &group_key, "--committee"])
            .arg(members[0].dir.join("committee.toml"))
            .output()
            .expect("run sibyl verify");
        ok("sibyl verify", &out)
    };
    verify(&api1);

    // Section 7: restart member 2; it signs again and holds new reports.
    let missed = |api: &str| {
        sample(
            &http_get(&format!("{api}/metrics")).unwrap_or_default(),
            "sibyl_rounds_missed_total",
        )
        .unwrap_or(0.0)
    };
    let missed_before = missed(&api1);
    let api2 = members[1].api.clone();
    if let Some(mut c) = running.0[1].take() {
        terminate(&mut c);
    }
    running.0[1] = Some(members[1].start());
    let before = last_round(&api1).unwrap_or(0);
    wait_for("member 2 back and holding new reports", 60, || {
        last_round(&api2).is_some_and(|r| r > before + 2)
    });
    let missed_in_restart = missed(&api1) - missed_before;

    // Section 4: back up member 3 (keys and a `.backup` copy of the live
    // database, plus observed-round), lose everything, restore, wait one
    // round_timeout, start: it holds reports again.
    let m3 = &members[2];
    let backup = root.path().join("backup-3");
    std::fs::create_dir_all(&backup).unwrap();
    let out = Command::new("sqlite3")
        .arg(m3.dir.join("data/sibyl.db"))
        .arg(format!(".backup {}", backup.join("sibyl.db").display()))
        .output()
        .expect("run sqlite3 (Debian's sqlite3 package)");
    ok("sqlite3 .backup", &out);
    for f in [
        "identity.key",
        "identity.pub.json",
        "frost.ed25519.key",
        "frost.ed25519.pub.json",
    ] {
        std::fs::copy(m3.dir.join("keys").join(f), backup.join(f)).unwrap();
    }
    if let Some(mut c) = running.0[2].take() {
        terminate(&mut c);
    }
    std::fs::copy(
        m3.dir.join("data/observed-round"),
        backup.join("observed-round"),
    )
    .unwrap();
    std::fs::remove_dir_all(m3.dir.join("keys")).unwrap();
    std::fs::remove_dir_all(m3.dir.join("data")).unwrap();
    // Without its keys it is refused, by the check and by run.
    let out = m3
        .cmd()
        .args(["config", "check", "--config"])
        .arg(m3.node())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("`keys.identity`"));
    std::fs::create_dir_all(m3.dir.join("keys")).unwrap();
    std::fs::create_dir_all(m3.dir.join("data")).unwrap();
    for f in [
        "identity.key",
        "identity.pub.json",
        "frost.ed25519.key",
        "frost.ed25519.pub.json",
    ] {
        std::fs::copy(backup.join(f), m3.dir.join("keys").join(f)).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(
            m3.dir.join("keys").join(f),
            std::fs::Permissions::from_mode(0o600),
        )
        .unwrap();
    }
    std::fs::copy(backup.join("sibyl.db"), m3.dir.join("data/sibyl.db")).unwrap();
    std::fs::copy(
        backup.join("observed-round"),
        m3.dir.join("data/observed-round"),
    )
    .unwrap();
    std::thread::sleep(Duration::from_secs(2)); // round.round_timeout of the example
    running.0[2] = Some(m3.start());
    let api3 = m3.api.clone();
    let before = last_round(&api1).unwrap_or(0);
    wait_for("restored member 3 holding new reports", 60, || {
        last_round(&api3).is_some_and(|r| r > before + 2)
    });
    verify(&api3);
    assert!(status(&api3).is_some());

    // Section 5: operator 4 leaves, operator 5 joins. The new committee file
    // (new digest) and a second DKG among the new members, into key files of
    // their own (`keys/frost-2.key`: the old committee's keys stay, the
    // rotation signs with them), while the old committee keeps running.
    let dir5 = root.path().join("operator-5");
    let passphrase5 = "passphrase of operator 5".to_string();
    let out = sibyl()
        .env("SIBYL_KEY_PASSPHRASE", &passphrase5)
        .args(["identity", "--out"])
        .arg(dir5.join("keys"))
        .args(["--passphrase-env", "SIBYL_KEY_PASSPHRASE"])
        .output()
        .unwrap();
    let stdout = ok("sibyl identity", &out);
    let peer5 = stdout
        .lines()
        .find_map(|l| l.strip_prefix("peer_id = \""))
        .and_then(|l| l.strip_suffix('"'))
        .unwrap_or_else(|| panic!("{stdout}"))
        .to_string();
    let mut next: Vec<Member> = Vec::new();
    let new_committee = committee.replace(&members[3].peer_id, &peer5).replace(
        &format!("tcp/{}\"", members[3].port),
        &format!("tcp/{}\"", free_port()),
    );
    let port5: u16 = new_committee
        .lines()
        .filter_map(|l| l.strip_prefix("address = \"/ip4/127.0.0.1/tcp/"))
        .nth(3)
        .and_then(|p| p.trim_end_matches('"').parse().ok())
        .expect("member 4's new address");
    // Members 1-3 listen on new ports for the new committee: the old one
    // still runs on theirs.
    for (dir, passphrase, peer_id, port) in [
        (
            &members[0].dir,
            &members[0].passphrase,
            &members[0].peer_id,
            free_port(),
        ),
        (
            &members[1].dir,
            &members[1].passphrase,
            &members[1].peer_id,
            free_port(),
        ),
        (
            &members[2].dir,
            &members[2].passphrase,
            &members[2].peer_id,
            free_port(),
        ),
        (&dir5, &passphrase5, &peer5, port5),
    ] {
        next.push(Member {
            dir: dir.join("next"),
            passphrase: passphrase.clone(),
            port,
            api: String::new(),
            peer_id: peer_id.clone(),
        });
    }
    // Every member needs the identical file: apply all the new ports.
    let mut new_committee = new_committee;
    for (i, m) in next.iter().enumerate().take(3) {
        new_committee = new_committee.replace(
            &format!("tcp/{}\"", members[i].port),
            &format!("tcp/{}\"", m.port),
        );
    }
    for m in &mut next {
        std::fs::create_dir_all(&m.dir).unwrap();
        std::fs::write(m.dir.join("committee.toml"), &new_committee).unwrap();
        let api_port = free_port();
        m.api = format!("http://127.0.0.1:{api_port}");
        let keys = m.dir.parent().unwrap().join("keys");
        let node = node_example
            .replace(
                "/ip4/0.0.0.0/tcp/9001",
                &format!("/ip4/127.0.0.1/tcp/{}", m.port),
            )
            .replace("127.0.0.1:8080", &format!("127.0.0.1:{api_port}"))
            .replace(
                "\"keys/identity.key\"",
                &format!("\"{}\"", keys.join("identity.key").display()),
            )
            .replace(
                "\"keys/frost.key\"",
                &format!("\"{}\"", keys.join("frost-2.key").display()),
            )
            .replace(
                "\"keys/frost.pub.json\"",
                &format!("\"{}\"", keys.join("frost-2.pub.json").display()),
            );
        std::fs::write(m.node(), node).unwrap();
    }
    let mut dkg = Members(
        next.iter()
            .map(|m| {
                m.cmd()
                    .args(["dkg", "--timeout", "60s", "--config"])
                    .arg(m.node())
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
                    .ok()
            })
            .collect(),
    );
    let mut new_keys = Vec::new();
    for child in dkg.0.iter_mut() {
        let child = child.take().expect("sibyl dkg started");
        let stdout = ok("the second sibyl dkg", &child.wait_with_output().unwrap());
        new_keys.push(
            stdout
                .lines()
                .find_map(|l| l.strip_prefix("group public key (ed25519): "))
                .unwrap_or_else(|| panic!("{stdout}"))
                .to_string(),
        );
    }
    assert!(new_keys.windows(2).all(|w| w[0] == w[1]), "{new_keys:?}");
    assert_ne!(
        new_keys[0], group_key,
        "a new committee has a new group key"
    );
    // The old committee's keys are untouched.
    assert!(members[0].dir.join("keys/frost.ed25519.key").exists());
    assert!(members[0].dir.join("keys/frost-2.ed25519.key").exists());
    // Stop the old committee, start the new one; its reports verify with
    // the new group key and the new committee file.
    for c in running.0.iter_mut() {
        if let Some(mut child) = c.take() {
            terminate(&mut child);
            assert!(
                child.try_wait().ok().flatten().is_some(),
                "stopped on SIGTERM"
            );
        }
    }
    for m in &next {
        let out = m
            .cmd()
            .args(["config", "check", "--config"])
            .arg(m.node())
            .output()
            .unwrap();
        assert!(ok("config check (new committee)", &out).starts_with("OK:"));
    }
    let _new_running = Members(next.iter().map(|m| Some(m.start())).collect());
    let api_new = next[3].api.clone();
    wait_for(
        "3 signed reports of the new committee at member 5",
        90,
        || last_round(&api_new).is_some_and(|r| r >= 3),
    );
    let out = sibyl()
        .arg("verify")
        .arg(format!("{api_new}/v1/reports/latest"))
        .args(["--group-key", &new_keys[0], "--committee"])
        .arg(next[0].dir.join("committee.toml"))
        .output()
        .unwrap();
    ok("sibyl verify (new committee)", &out);
    // The old group key does not verify the new committee's report.
    let out = sibyl()
        .arg("verify")
        .arg(format!("{api_new}/v1/reports/latest"))
        .args(["--group-key", &group_key, "--committee"])
        .arg(next[0].dir.join("committee.toml"))
        .output()
        .unwrap();
    assert!(!out.status.success());

    eprintln!(
        "operator guide walk: DKG done after {:.1}s, first report held after {:.1}s, rounds missed at member 1 while member 2 restarted: {missed_in_restart}, all after {:.1}s",
        dkg_done.as_secs_f64(),
        first_report.as_secs_f64(),
        t0.elapsed().as_secs_f64()
    );
}
