//! `sibyl repair` on a devnet, as processes: member 4 loses every key file
//! (its secret shares and its copy of the public key package); members 1
//! and 2 start helping and member 4 asks, then member 4's repair is killed
//! (SIGKILL) mid-run and restarted while member 3, the last helper, joins:
//! the helpers follow the restarted run and member 4 gets its own shares
//! back. The group key is unchanged, and with member 1 stopped the
//! committee of 2, 3 and 4 (exactly t = 3) keeps signing reports that
//! verify against it: member 4's repaired share signs.

use crate::common;

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::time::Duration;

fn repair(config: &Path, lost: u16) -> Child {
    common::sibyl()
        .args([
            "repair",
            "--timeout",
            "60s",
            "--member",
            &lost.to_string(),
            "--config",
        ])
        .arg(config)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start sibyl repair")
}

/// Forwards a child's stderr lines to a channel (and keeps them).
fn lines(c: &mut Child) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    let err = c.stderr.take().expect("stderr");
    std::thread::spawn(move || {
        for line in BufReader::new(err).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// Waits for a line containing `needle`; returns everything read so far.
fn wait_line(rx: &mpsc::Receiver<String>, needle: &str, secs: u64) -> String {
    let mut seen = String::new();
    let end = std::time::Instant::now() + Duration::from_secs(secs);
    while std::time::Instant::now() < end {
        if let Ok(l) = rx.recv_timeout(Duration::from_millis(200)) {
            seen += &l;
            seen.push('\n');
            if l.contains(needle) {
                return seen;
            }
        }
    }
    panic!("no line with {needle:?} in {secs} s:\n{seen}");
}

fn finish(mut c: Child, rx: mpsc::Receiver<String>) -> (bool, String, String) {
    let mut out = String::new();
    if let Some(mut s) = c.stdout.take() {
        let _ = s.read_to_string(&mut out);
    }
    let status = c.wait().expect("wait repair");
    let err: Vec<String> = rx.try_iter().collect();
    (status.success(), out, err.join("\n"))
}

fn frost_files(config: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(config.parent().expect("member dir").join("keys"))
        .expect("keys dir")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("frost."))
        })
        .collect()
}

#[test]
fn a_member_that_lost_its_keys_gets_its_own_shares_back_from_t_helpers() {
    let _committee = common::one_committee_at_a_time();
    let mut c = common::RunningCommittee::start(4);
    let configs: Vec<PathBuf> = c.file.members.iter().map(|m| m.config.clone()).collect();
    let group_key = c.file.group_key.clone();
    c.stop_all();
    let lost_files = frost_files(&configs[3]);
    assert!(!lost_files.is_empty());
    for f in &lost_files {
        std::fs::remove_file(f).expect("lose a key file");
    }
    // Without its shares member 4 cannot run, and says why.
    let check = common::sibyl()
        .args(["config", "check", "--config"])
        .arg(&configs[3])
        .output()
        .expect("config check");
    assert!(!check.status.success());

    // A helper refuses to help with the wrong helper count; a member whose
    // shares exist refuses to be "repaired" without --force.
    let out = common::sibyl()
        .args(["repair", "--member", "4", "--helpers", "1,2", "--config"])
        .arg(&configs[0])
        .output()
        .expect("repair");
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && said.contains("exactly t = 3 helpers"),
        "{said}"
    );
    let out = common::sibyl()
        .args(["repair", "--member", "1", "--config"])
        .arg(&configs[0])
        .output()
        .expect("repair");
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && said.contains("has not lost its shares"),
        "{said}"
    );

    // Helpers 1 and 2 and member 4 start; once member 4's request reached
    // helper 1, member 4 is killed and restarted, and helper 3 joins.
    let mut h1 = repair(&configs[0], 4);
    let h1_lines = lines(&mut h1);
    let mut h2 = repair(&configs[1], 4);
    let h2_lines = lines(&mut h2);
    let mut lost = repair(&configs[3], 4);
    let _lost_lines = lines(&mut lost);
    let seen = wait_line(&h1_lines, "asked for its shares", 60);
    assert!(!seen.contains("restarted"), "{seen}");
    let _ = lost.kill();
    let _ = lost.wait();
    let mut lost = repair(&configs[3], 4);
    let lost_lines = lines(&mut lost);
    let mut h3 = repair(&configs[2], 4);
    let h3_lines = lines(&mut h3);
    let seen = wait_line(&h1_lines, "restarted and asked for its shares", 60);
    eprintln!("helper 1:\n{seen}");

    let (ok, out, err) = finish(lost, lost_lines);
    assert!(ok, "member 4: {out}\n{err}");
    assert!(
        out.contains(&format!(
            "repaired this member's share of group key (ed25519): {group_key}"
        )),
        "member 4: {out}\n{err}"
    );
    for (i, (h, rx)) in [(h1, h1_lines), (h2, h2_lines), (h3, h3_lines)]
        .into_iter()
        .enumerate()
    {
        let (ok, out, err) = finish(h, rx);
        assert!(ok, "helper {}: {out}\n{err}", i + 1);
        assert!(out.contains("helped member 4"), "helper {}: {out}", i + 1);
    }
    assert_eq!(
        frost_files(&configs[3]).len(),
        lost_files.len(),
        "every lost key file is back"
    );

    // Member 1 stays down: 2, 3 and 4 are exactly t, so every report now
    // carries member 4's repaired share.
    for (i, config) in configs.iter().enumerate().skip(1) {
        c.members.0[i] = Some(common::spawn(config, &c.file.members[i].log));
    }
    let api = c.api(1).to_string();
    common::wait_for("member 2's API", 60, || common::status(&api).is_some());
    let start = common::last_round(&api).unwrap_or(0);
    common::wait_for("reports signed by members 2, 3 and 4", 120, || {
        common::last_round(&api).is_some_and(|r| r > start + 3)
    });
    let out = common::sibyl()
        .arg("verify")
        .arg(format!("{api}/v1/reports/latest"))
        .args(["--group-key", &group_key, "--committee"])
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

/// A free loopback TCP port (bound, then released).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// Adding a member, as processes: a 4-member devnet (t = 3) stops; a fifth
/// node makes its identity (`sibyl identity`) and is written into a new
/// committee file; helpers 1-3 give it a share of the same group key with
/// `sibyl repair --member 5 --new-committee` (helper 2 killed mid-run and
/// restarted), member 4 re-binds its shares; then all five run on the new
/// committee and, with members 1 and 2 stopped, 3, 4 and 5 (exactly t)
/// sign reports that verify against the group key the committee always
/// had: the new member's share signs.
#[test]
fn a_new_member_joins_with_a_share_of_the_same_group_key() {
    let _committee = common::one_committee_at_a_time();
    let mut c = common::RunningCommittee::start(4);
    let configs: Vec<PathBuf> = c.file.members.iter().map(|m| m.config.clone()).collect();
    let group_key = c.file.group_key.clone();
    c.stop_all();
    // The fifth node: its own directory, passphrase and identity.
    let net_dir = configs[0]
        .parent()
        .and_then(Path::parent)
        .expect("devnet dir");
    let five = net_dir.join("node-5");
    std::fs::create_dir_all(five.join("keys")).expect("node-5");
    std::fs::copy(
        configs[3].with_file_name("passphrase"),
        five.join("passphrase"),
    )
    .expect("passphrase");
    let out = common::sibyl()
        .args(["identity", "--out"])
        .arg(five.join("keys"))
        .arg("--passphrase-file")
        .arg(five.join("passphrase"))
        .output()
        .expect("sibyl identity");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let public: serde_json::Value = serde_json::from_slice(
        &std::fs::read(five.join("keys/identity.pub.json")).expect("identity.pub.json"),
    )
    .expect("json");
    let peer_id = public["peer_id"].as_str().expect("peer_id").to_string();
    let p2p = free_port();
    let old_text = std::fs::read_to_string(&c.file.committee).expect("committee");
    let at = old_text.find("[[feeds]]").expect("feeds");
    let new_text = format!(
        "{}[[members]]\nindex = 5\npeer_id = \"{peer_id}\"\naddress = \"/ip4/127.0.0.1/tcp/{p2p}\"\n\n{}",
        &old_text[..at],
        &old_text[at..]
    );
    let new_committee = c.file.committee.with_file_name("committee-with-5.toml");
    std::fs::write(&new_committee, new_text).expect("write");
    // node-5's node.toml: member 4's with its own ports and the new committee.
    let four = std::fs::read_to_string(&configs[3]).expect("node.toml");
    let listen = |prefix: &str| -> String {
        four.lines()
            .find(|l| l.starts_with("listen = ") && l.contains(prefix))
            .expect("listen line")
            .to_string()
    };
    let api_port = free_port();
    let five_toml = four
        .replace(
            "committee = \"../committee.toml\"",
            "committee = \"../committee-with-5.toml\"",
        )
        .replace(
            &listen("/ip4/"),
            &format!("listen = \"/ip4/127.0.0.1/tcp/{p2p}\""),
        )
        .replace(
            &listen("127.0.0.1:"),
            &format!("listen = \"127.0.0.1:{api_port}\""),
        );
    assert!(five_toml.contains("committee-with-5") && five_toml.contains(&api_port.to_string()));
    let config5 = five.join("node.toml");
    std::fs::write(&config5, five_toml).expect("node-5 toml");
    std::fs::copy(
        configs[3].with_file_name("admin-token"),
        five.join("admin-token"),
    )
    .expect("admin token");

    let join = |config: &Path| {
        common::sibyl()
            .args([
                "repair",
                "--timeout",
                "60s",
                "--member",
                "5",
                "--new-committee",
            ])
            .arg(&new_committee)
            .arg("--config")
            .arg(config)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start sibyl repair --new-committee")
    };
    // A committee file that adds someone else is refused.
    let out = common::sibyl()
        .args(["repair", "--member", "4", "--new-committee"])
        .arg(&new_committee)
        .arg("--config")
        .arg(&configs[0])
        .output()
        .expect("repair");
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && said.contains("--member 4 must be the one member it adds"),
        "{said}"
    );

    // Member 4 (no helper) re-binds at once.
    let out = common::sibyl()
        .args(["repair", "--member", "5", "--new-committee"])
        .arg(&new_committee)
        .arg("--config")
        .arg(&configs[3])
        .output()
        .expect("repair");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("re-bound to the new committee"));
    // Helpers 1 and 3 and the new member start; helper 2 is killed once it
    // sent its part and restarted.
    let joined = std::time::Instant::now();
    let mut h1 = join(&configs[0]);
    let h1_lines = lines(&mut h1);
    let mut h3 = join(&configs[2]);
    let h3_lines = lines(&mut h3);
    let mut new_member = join(&config5);
    let new_lines = lines(&mut new_member);
    let mut h2 = join(&configs[1]);
    let h2_first = lines(&mut h2);
    // Killed right after it sent its deltas (before its sigma could go
    // out), restarted: it sends the same deltas again (derived from its
    // share and the run), so the others' sums still add up.
    let seen = wait_line(&h2_first, "deltas to the other helpers", 60);
    let _ = h2.kill();
    let _ = h2.wait();
    eprintln!("helper 2 before the kill:\n{seen}");
    let mut h2 = join(&configs[1]);
    let h2_lines = lines(&mut h2);
    let (ok, out, err) = finish(new_member, new_lines);
    eprintln!(
        "addition: member 5 stored its share {:.2?} after the helpers started (helper 2 killed and restarted meanwhile)",
        joined.elapsed()
    );
    assert!(ok, "member 5: {out}\n{err}");
    assert!(
        out.contains(&format!(
            "repaired this member's share of group key (ed25519): {group_key}"
        )),
        "member 5: {out}\n{err}"
    );
    for (i, (h, rx)) in [(h1, h1_lines), (h2, h2_lines), (h3, h3_lines)]
        .into_iter()
        .enumerate()
    {
        let (ok, out, err) = finish(h, rx);
        // The restarted helper 2 may come back after member 5 got its
        // share from its first sigma; it then waits for nobody and says its
        // shares are re-bound all the same.
        assert!(
            (ok && out.contains("helped member 5 join"))
                || (i == 1 && err.contains("re-bound to the new committee all the same")),
            "helper {}: {out}\n{err}",
            i + 1
        );
    }

    // Everyone on the new committee; members 1 and 2 stay down so that
    // 3, 4 and 5 (exactly t) sign.
    for p in &configs {
        let text = std::fs::read_to_string(p).expect("node.toml");
        std::fs::write(
            p,
            text.replace(
                "committee = \"../committee.toml\"",
                "committee = \"../committee-with-5.toml\"",
            ),
        )
        .expect("node.toml");
    }
    for (i, config) in configs.iter().enumerate().skip(2) {
        c.members.0[i] = Some(common::spawn(config, &c.file.members[i].log));
    }
    let restarted = std::time::Instant::now();
    // Kept with the others, so a failing assertion stops it too.
    c.members
        .0
        .push(Some(common::spawn(&config5, &five.join("node.log"))));
    let api = c.api(2).to_string();
    let verify = || {
        common::sibyl()
            .arg("verify")
            .arg(format!("{api}/v1/reports/latest"))
            .args(["--group-key", &group_key, "--committee"])
            .arg(&new_committee)
            .output()
            .expect("sibyl verify")
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while !verify().status.success() {
        if std::time::Instant::now() > deadline {
            let tail = |p: &Path| {
                let t = std::fs::read_to_string(p).unwrap_or_default();
                let lines: Vec<&str> = t.lines().collect();
                lines[lines.len().saturating_sub(15)..].join("\n")
            };
            panic!(
                "no report of members 3, 4 and 5 verifying against the group key in 120 s; member 5's log:\n{}\nmember 3's log:\n{}",
                tail(&five.join("node.log")),
                tail(&c.file.members[2].log)
            );
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    eprintln!(
        "addition: first report of members 3, 4 and 5 {:.2?} after their start",
        restarted.elapsed()
    );
    let api5 = format!("http://127.0.0.1:{api_port}");
    common::wait_for("member 5 to take part in rounds", 120, || {
        common::accepted(&api5) >= 3
    });
    if let Some(mut fifth) = c.members.0.pop().flatten() {
        common::terminate(&mut fifth);
    }
    let out = verify();
    assert!(String::from_utf8_lossy(&out.stdout).contains("(matches the committee)"));
}
