//! `sibyl devnet` survives a member's exit: a member killed with SIGKILL is
//! reported (index, pid, status, log) and marked in devnet.json, the devnet
//! keeps running and the other members keep signing; Ctrl-C then stops the
//! rest cleanly. Real processes, real sockets.

use crate::common;

use sibyl::cmd::devnet::DevnetFile;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The devnet process, interrupted (as by Ctrl-C) when dropped.
struct Devnet(std::process::Child);

impl Devnet {
    fn interrupt(&mut self) -> std::process::ExitStatus {
        let _ = Command::new("kill")
            .arg("-INT")
            .arg(self.0.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(s)) = self.0.try_wait() {
                return s;
            }
            if Instant::now() > deadline {
                let _ = self.0.kill();
                return self.0.wait().expect("wait devnet");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Devnet {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            self.interrupt();
        }
    }
}

fn read_file(path: &std::path::Path) -> Option<DevnetFile> {
    std::fs::read(path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
}

fn alive(pid: u32) -> bool {
    // A zombie still has /proc/<pid>; its state is 'Z'.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit_once(')').map(|(_, r)| r.trim_start().to_string()))
        .is_some_and(|r| !r.starts_with('Z'))
}

#[test]
fn devnet_reports_a_killed_member_and_keeps_the_others_running() {
    let _committee = crate::common::one_committee_at_a_time();
    let dir = tempfile::tempdir().expect("tempdir");
    let net_dir = dir.path().join("devnet");
    let stderr_path = dir.path().join("devnet.stderr");
    let stderr = std::fs::File::create(&stderr_path).expect("stderr file");
    let mut devnet = Devnet(
        common::sibyl()
            .args(["devnet", "--builtin-source", "--nodes", "4"])
            .args(["--interval", "250ms", "--demo-accounts", "0"])
            .args(["--duration", "300s", "--dir"])
            .arg(&net_dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("start sibyl devnet"),
    );
    let file_path = net_dir.join("devnet.json");
    common::wait_for("devnet.json with every pid", 60, || {
        read_file(&file_path).is_some_and(|f| f.members.iter().all(|m| m.pid.is_some()))
    });
    let file = read_file(&file_path).expect("devnet.json");
    let api: Vec<String> = file.members.iter().map(|m| m.api_url.clone()).collect();
    common::wait_for("3 signed reports at member 1", 120, || {
        common::last_round(&api[0]).is_some_and(|r| r >= 3)
    });

    // kill -9 member 4.
    let victim = file.members[3].pid.expect("member 4's pid");
    let status = Command::new("kill")
        .args(["-9", &victim.to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    common::wait_for("the exit in devnet.json", 30, || {
        read_file(&file_path).is_some_and(|f| f.members[3].exited.is_some())
    });
    let after = read_file(&file_path).expect("devnet.json");
    let m4 = &after.members[3];
    assert_eq!(m4.pid, None, "an exited member has no pid");
    let exited = m4.exited.as_deref().unwrap_or_default();
    assert!(
        exited.contains(&victim.to_string()) && exited.contains("9"),
        "{exited}"
    );
    for m in &after.members[..3] {
        assert!(m.exited.is_none(), "member {} still runs", m.index);
        assert!(alive(m.pid.expect("pid")), "member {} is alive", m.index);
    }
    let text = std::fs::read_to_string(&stderr_path).expect("stderr");
    let line = text
        .lines()
        .find(|l| l.contains(&format!("member 4 (pid {victim}) exited")))
        .unwrap_or_else(|| panic!("no exit line in:\n{text}"));
    assert!(
        line.contains("node-4") && line.contains("node.log"),
        "{line}"
    );
    assert!(line.contains("3 member(s) still running"), "{line}");

    // The devnet still runs and the other three keep signing.
    let r0 = common::last_round(&api[0]).expect("member 1 answers");
    common::wait_for("4 more reports without member 4", 120, || {
        common::last_round(&api[0]).is_some_and(|r| r >= r0 + 4)
            && common::last_round(&api[1]).is_some_and(|r| r >= r0 + 4)
    });
    assert!(
        matches!(devnet.0.try_wait(), Ok(None)),
        "the devnet process is still running"
    );

    // Ctrl-C stops the rest cleanly.
    let status = devnet.interrupt();
    assert!(status.success(), "devnet exited with {status}");
    for m in &after.members[..3] {
        let pid = m.pid.expect("pid");
        assert!(!alive(pid), "member {} (pid {pid}) stopped", m.index);
    }
    let text = std::fs::read_to_string(&stderr_path).expect("stderr");
    assert!(
        !text.contains("did not stop on SIGTERM"),
        "every member stopped on SIGTERM:\n{text}"
    );
}
