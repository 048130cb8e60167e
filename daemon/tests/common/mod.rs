//! Helpers shared by the tests that run real `sibyl` processes.
#![allow(dead_code)] // each test file uses its own subset

use sibyl::devnet::{DevnetFile, http_get};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The `sibyl` binary under test.
pub fn sibyl() -> Command {
    Command::new(env!("CARGO_BIN_EXE_sibyl"))
}

/// `sibyl devnet --setup-only --builtin-source` for `nodes` members at 250 ms
/// rounds in `dir`; returns its `devnet.json`.
pub fn setup_devnet(dir: &Path, nodes: u16) -> DevnetFile {
    let out = sibyl()
        .args(["devnet", "--setup-only", "--builtin-source", "--nodes"])
        .arg(nodes.to_string())
        .args(["--interval", "250ms", "--dir"])
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
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    sibyl()
        .arg("run")
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
