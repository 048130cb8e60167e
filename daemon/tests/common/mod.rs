//! Helpers shared by the tests that run real `sibyl` processes.
#![allow(dead_code)] // each test file uses its own subset

use sibyl::cmd::devnet::{DevnetFile, http_get};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Tests that run a committee of `sibyl` processes hold this while they
/// run, so two committees never share the machine's cores and skew each
/// other's timing (as separate test binaries they never overlapped).
pub fn one_committee_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The `sibyl` binary under test.
pub fn sibyl() -> Command {
    Command::new(env!("CARGO_BIN_EXE_sibyl"))
}

/// `sibyl devnet --setup-only --builtin-source` for `nodes` members at 250 ms
/// rounds in `dir`; returns its `devnet.json`.
pub fn setup_devnet(dir: &Path, nodes: u16) -> DevnetFile {
    setup_devnet_with(dir, nodes, &["--builtin-source", "--interval", "250ms"])
}

/// `sibyl devnet --setup-only --nodes N` with `args` in `dir`; returns its
/// `devnet.json` (without `--builtin-source` the members observe the
/// simulated exchange named in it, which the caller starts).
pub fn setup_devnet_with(dir: &Path, nodes: u16, args: &[&str]) -> DevnetFile {
    let out = sibyl()
        .args(["devnet", "--setup-only", "--nodes"])
        .arg(nodes.to_string())
        .args(args)
        .arg("--dir")
        .arg(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&std::fs::read(dir.join("devnet.json")).unwrap()).unwrap()
}

/// Starts `sibyl run --config config`, appending its stderr to `log`.
pub fn spawn(config: &Path, log: &Path) -> Child {
    spawn_cmd(sibyl(), config, log)
}

/// Like [`spawn`], with `cmd` as the program: `sibyl()` with extra
/// environment (libfaketime, a test-only fault), or a wrapper such as
/// `ip netns exec NS <sibyl>` that execs it (so the child is the member).
pub fn spawn_cmd(mut cmd: Command, config: &Path, log: &Path) -> Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    cmd.arg("run")
        .arg("--config")
        .arg(config)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start sibyl run")
}

/// Member processes, killed when dropped (also when a test panics).
pub struct Members(pub Vec<Option<Child>>);

impl Drop for Members {
    fn drop(&mut self) {
        for c in self.0.iter_mut().flatten() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

pub fn status(api: &str) -> Option<serde_json::Value> {
    http_get(&format!("{api}/v1/node/status"))
        .ok()
        .and_then(|b| serde_json::from_str(&b).ok())
}

pub fn last_round(api: &str) -> Option<u64> {
    status(api)?.get("last_report_round")?.as_u64()
}

pub fn wait_for(what: &str, secs: u64, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        if f() {
            return;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!("timed out after {secs}s waiting for {what}");
}

/// The value of the first sample named exactly `name` (labels included).
pub fn sample(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

/// Signed reports member `api` accepted so far (0 when it does not answer).
pub fn accepted(api: &str) -> u64 {
    status(api)
        .and_then(|s| s.pointer("/protocol/reports_accepted")?.as_u64())
        .unwrap_or(0)
}

/// Reports member `api` accepts during `window` (its status, polled at the
/// start and at the end), per second.
pub fn report_rate(api: &str, window: Duration) -> f64 {
    let start = accepted(api);
    let t0 = Instant::now();
    std::thread::sleep(window);
    let n = accepted(api).saturating_sub(start);
    n as f64 / t0.elapsed().as_secs_f64()
}

/// Reports accepted per second at each of `apis` over `window`, measured
/// together.
pub fn report_rates(apis: &[&str], window: Duration) -> Vec<f64> {
    let start: Vec<u64> = apis.iter().map(|a| accepted(a)).collect();
    let t0 = Instant::now();
    std::thread::sleep(window);
    let secs = t0.elapsed().as_secs_f64();
    apis.iter()
        .zip(start)
        .map(|(a, s)| accepted(a).saturating_sub(s) as f64 / secs)
        .collect()
}

/// A devnet committee of `nodes` members running as processes, past its
/// first reports: the start of every test that measures a fault against a
/// baseline. `members` are terminated when it drops.
pub struct RunningCommittee {
    pub dir: tempfile::TempDir,
    pub file: DevnetFile,
    pub members: Members,
}

impl RunningCommittee {
    /// Sets up and starts the committee, waits for 3 signed reports at
    /// member 1 and 2 s more.
    pub fn start(nodes: u16) -> RunningCommittee {
        let dir = tempfile::tempdir().unwrap();
        let file = setup_devnet(&dir.path().join("devnet"), nodes);
        let members = Members(
            file.members
                .iter()
                .map(|m| Some(spawn(&m.config, &m.log)))
                .collect(),
        );
        let c = RunningCommittee { dir, file, members };
        let api = c.api(0).to_string();
        wait_for("3 signed reports at member 1", 120, || {
            last_round(&api).is_some_and(|r| r >= 3)
        });
        std::thread::sleep(Duration::from_secs(2));
        c
    }

    /// Stops every running member (SIGTERM, then waits).
    pub fn stop_all(&mut self) {
        for child in self.members.0.iter_mut() {
            if let Some(mut ch) = child.take() {
                terminate(&mut ch);
            }
        }
    }

    /// Member `i`'s (0-based) API base URL.
    pub fn api(&self, i: usize) -> &str {
        &self.file.members[i].api_url
    }

    /// Every member's API base URL.
    pub fn apis(&self) -> Vec<&str> {
        self.file
            .members
            .iter()
            .map(|m| m.api_url.as_str())
            .collect()
    }

    /// Restarts member `i` (0-based) as `cmd` (`sibyl()` with a fault or
    /// libfaketime in its environment), waits for its API and 3 s more for
    /// it to join the rounds.
    pub fn restart(&mut self, i: usize, cmd: Command) {
        if let Some(mut c) = self.members.0[i].take() {
            terminate(&mut c);
        }
        let m = &self.file.members[i];
        self.members.0[i] = Some(spawn_cmd(cmd, &m.config, &m.log));
        let api = self.api(i).to_string();
        wait_for("the restarted member's API", 60, || status(&api).is_some());
        std::thread::sleep(Duration::from_secs(3));
    }
}

/// Sends SIGTERM and waits (at most 10 s, then SIGKILL).
pub fn terminate(c: &mut Child) {
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(c.id().to_string())
        .status();
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = c.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = c.kill();
    let _ = c.wait();
}

/// Waits at most `secs` for `c` to exit by itself; kills it and fails
/// (naming `what`) if it is still running then.
pub fn exit_within(what: &str, c: &mut Child, secs: u64) -> std::process::ExitStatus {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        if let Ok(Some(status)) = c.try_wait() {
            return status;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = c.kill();
    let _ = c.wait();
    panic!("{what}: still running after {secs} s");
}

/// Fails with `hint` unless `program --version`-like `probe` runs.
pub fn require_tool(program: &str, probe: &[&str], hint: &str) {
    let ok = Command::new(program)
        .args(probe)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "`{program}` is missing or does not run: {hint}");
}

/// `curl -X POST` with `Authorization: Bearer <token>` and, if given, a JSON
/// body: (HTTP status, body).
pub fn post_with_token(url: &str, token: &str, json: Option<&str>) -> (u16, String) {
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "-o", "-", "-w", "\n%{http_code}", "-X", "POST", "-H"])
        .arg(format!("authorization: Bearer {token}"));
    if let Some(body) = json {
        cmd.args(["-H", "content-type: application/json", "-d", body]);
    }
    let out = cmd.arg(url).output().expect("curl");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

/// `sibyl replay --config <node.toml> --from-reports` on a stopped member:
/// its stdout when the engine rebuilt from its signed reports gives every
/// signed margin state root and its own margin log's root, else what it said.
pub fn replay_from_reports(config: &Path) -> Result<String, String> {
    let out = sibyl()
        .arg("replay")
        .arg("--config")
        .arg(config)
        .arg("--from-reports")
        .output()
        .map_err(|e| format!("sibyl replay: {e}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    if out.status.success()
        && stdout.contains("OK: every signed margin state root")
        && stdout.contains("OK: the node's margin log gives the same state root")
    {
        Ok(stdout)
    } else {
        Err(format!("{stdout}{}", String::from_utf8_lossy(&out.stderr)))
    }
}

/// Creates margin account `account` through member `via + 1`, deposits
/// 77.5 into it through member `fund + 1`, and waits until every member's
/// engine holds the deposit (committee-ordered commands, issue 20). Each
/// attempt that is not yet the answer wanted is logged with its status.
pub fn margin_account_through(committee: &RunningCommittee, via: usize, fund: usize, account: u64) {
    let token = |k: usize| {
        let dir = committee.file.members[k].config.parent().unwrap();
        std::fs::read_to_string(dir.join("admin-token")).unwrap()
    };
    let started = Instant::now();
    for (k, path, body, want) in [
        (
            via,
            "/v1/margin/accounts".to_string(),
            format!(r#"{{"account": {account}}}"#),
            201,
        ),
        (
            fund,
            format!("/v1/margin/accounts/{account}/deposit"),
            r#"{"amount": "77.5"}"#.to_string(),
            200,
        ),
    ] {
        let url = format!("{}{path}", committee.api(k));
        // The deposit may reach its member before the creation is ordered
        // there: retried until the account exists.
        let mut last = (0, String::new());
        wait_for(&format!("POST {path} at member {}", k + 1), 60, || {
            last = post_with_token(&url, token(k).trim(), Some(&body));
            if last.0 != want {
                eprintln!(
                    "POST {path} at member {} after {:.1} s: {} {}",
                    k + 1,
                    started.elapsed().as_secs_f64(),
                    last.0,
                    last.1.trim()
                );
            }
            last.0 == want
        });
        assert_eq!(last.0, want, "member {} {path}: {}", k + 1, last.1);
    }
    for i in 0..committee.file.members.len() {
        wait_for(
            &format!(
                "member {}'s engine to hold account {account}'s deposit",
                i + 1
            ),
            60,
            || {
                http_get(&format!(
                    "{}/v1/margin/accounts/{account}",
                    committee.api(i)
                ))
                .ok()
                .and_then(|b| serde_json::from_str::<serde_json::Value>(&b).ok())
                .is_some_and(|v| v["cash"] == "77500000")
            },
        );
    }
    eprintln!(
        "account {account}: created through member {}, funded through member {}, on every member after {:.1} s",
        via + 1,
        fund + 1,
        started.elapsed().as_secs_f64()
    );
}
