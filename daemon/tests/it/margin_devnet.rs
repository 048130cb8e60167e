//! `sibyl devnet` seeds a demo margin book on every member at its first
//! signed report; the simulated exchange's price walk then liquidates part
//! of it; afterwards `sibyl replay --db` on every member's database finds no
//! divergence. Real processes, real sockets, real SQLite files.

use crate::common;

use serde_json::Value;
use sibyl::cmd::devnet::{DevnetFile, http_get};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const ACCOUNTS: u64 = 200;

fn json(url: &str) -> Option<Value> {
    http_get(url)
        .ok()
        .and_then(|b| serde_json::from_str(&b).ok())
}

/// The devnet process, interrupted (as by Ctrl-C) when dropped.
struct Devnet(std::process::Child);

impl Devnet {
    fn stop(&mut self) -> std::process::ExitStatus {
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
            self.stop();
        }
    }
}

#[test]
fn devnet_seeds_a_book_that_liquidates_and_replays_exactly() {
    let _committee = crate::common::one_committee_at_a_time();
    let dir = tempfile::tempdir().expect("tempdir");
    let net_dir = dir.path().join("devnet");
    let mut devnet = Devnet(
        common::sibyl()
            .args(["devnet", "--nodes", "4", "--interval", "500ms"])
            .args(["--duration", "300s", "--demo-accounts"])
            .arg(ACCOUNTS.to_string())
            .arg("--dir")
            .arg(&net_dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start sibyl devnet"),
    );
    let file_path = net_dir.join("devnet.json");
    common::wait_for("devnet.json", 60, || {
        std::fs::read(&file_path)
            .ok()
            .and_then(|b| serde_json::from_slice::<DevnetFile>(&b).ok())
            .is_some_and(|f| f.members.iter().all(|m| m.pid.is_some()))
    });
    let file: DevnetFile =
        serde_json::from_slice(&std::fs::read(&file_path).expect("read")).expect("devnet.json");
    let api = file.members[0].api_url.clone();

    // Every member seeds the book at its first report.
    for m in &file.members {
        common::wait_for("the demo book", 90, || {
            json(&format!("{}/v1/margin/insurance", m.api_url))
                .is_some_and(|v| v["accounts"] == ACCOUNTS)
        });
    }
    let risk = json(&format!("{api}/v1/margin/at-risk?limit=5")).expect("at-risk");
    let units = risk["units"].as_array().expect("units");
    assert_eq!(units.len(), 5, "{risk}");
    assert_eq!(units[0]["health"]["status"], "margin_call", "{risk}");

    // The price walk liquidates some of the high-leverage tail.
    let started = Instant::now();
    common::wait_for("a liquidation from price movement", 120, || {
        json(&format!("{api}/v1/margin/liquidations?limit=1"))
            .and_then(|v| v["liquidations"].as_array().map(|l| !l.is_empty()))
            .unwrap_or(false)
    });
    eprintln!(
        "first liquidation {:.1}s after the book was seeded",
        started.elapsed().as_secs_f64()
    );
    let liq = json(&format!("{api}/v1/margin/liquidations?limit=1")).expect("liquidations");
    let first = &liq["liquidations"][0];
    assert!(first["round"].as_u64().is_some(), "{first}");
    // Parts per million (the margin routes' rate scale): 1.0 is 1,000,000.
    let ratio: i64 = first["before"]["margin_ratio"]
        .as_str()
        .expect("ratio")
        .parse()
        .expect("integer");
    assert!(
        ratio < 1_000_000,
        "liquidated below maintenance only: {first}"
    );

    let status = devnet.stop();
    assert!(status.success(), "devnet exited with {status}");

    // Every member's stored inputs replay to exactly its stored events.
    for m in &file.members {
        let out = common::sibyl()
            .arg("replay")
            .arg("--db")
            .arg(&m.db)
            .output()
            .expect("sibyl replay");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && stdout.contains("OK: every event matches"),
            "replay of member {}: {stdout}{}",
            m.index,
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
