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
    let proven = ordered_commands_and_a_proof_across_members(&file);
    owner_signed_commands_across_members(&file, dir.path());

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

    // A liquidation is provable against a signed root: member 2's proof of
    // the liquidated account verifies (with `sibyl verify`) together with the
    // report member 1 serves for it.
    let liquidated = first["account"].as_u64().expect("liquidated account");
    verify_proof_with_report_from(&file, liquidated, 1, 0);
    eprintln!("{proven}");

    let status = devnet.stop();
    assert!(status.success(), "devnet exited with {status}");

    // Every member's engine, rebuilt from its signed reports alone, gives
    // every margin state root the committee signed and its own margin log's.
    for m in &file.members {
        match common::replay_from_reports(&m.config) {
            Ok(out) => eprintln!(
                "member {}: {}",
                m.index,
                out.lines().take(2).collect::<Vec<_>>().join("; ")
            ),
            Err(e) => panic!("replay from reports of member {}: {e}", m.index),
        }
    }

    // Every member's stored inputs replay to exactly its stored events (the
    // owner's signed withdrawal among them, checked against the committee's
    // group key).
    for m in &file.members {
        let out = common::sibyl()
            .arg("replay")
            .arg("--db")
            .arg(&m.db)
            .args(["--group-key", &file.group_key])
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

fn admin_post(file: &DevnetFile, k: usize, path: &str, body: &str) -> (u16, String) {
    let m = &file.members[k];
    let token_file = m.config.parent().expect("member dir").join("admin-token");
    let token = std::fs::read_to_string(&token_file).expect("admin token");
    common::post_with_token(&format!("{}{path}", m.api_url), token.trim(), Some(body))
}

/// Margin commands sent to different members are ordered by the committee:
/// each answers once its command is in a signed report, a refused one is
/// refused alike everywhere, and every member then shows the same account.
/// Returns a line of figures.
fn ordered_commands_and_a_proof_across_members(file: &DevnetFile) -> String {
    let t0 = Instant::now();
    let steps: [(usize, &str, &str, u16); 6] = [
        (0, "/v1/margin/accounts", r#"{"account": 9001}"#, 201),
        (1, "/v1/margin/accounts", r#"{"account": 9002}"#, 201),
        (
            2,
            "/v1/margin/accounts/9001/deposit",
            r#"{"amount": "25000"}"#,
            200,
        ),
        (
            3,
            "/v1/margin/accounts/9002/deposit",
            r#"{"amount": "40000"}"#,
            200,
        ),
        (
            1,
            "/v1/margin/accounts/9001/positions",
            r#"{"market": "BTC-PERP", "side": "long", "size": "0.2"}"#,
            200,
        ),
        // More than the account holds: refused by the engine of every member.
        (
            3,
            "/v1/margin/accounts/9002/withdraw",
            r#"{"amount": "90000"}"#,
            422,
        ),
    ];
    let mut took = Vec::new();
    for (k, path, body, want) in steps {
        let started = Instant::now();
        let (code, text) = admin_post(file, k, path, body);
        took.push(started.elapsed().as_millis());
        assert_eq!(code, want, "member {} {path} {body}: {text}", k + 1);
    }
    // Every member: the same cash and position (once its engine took the
    // reports that carry the commands).
    for m in &file.members {
        common::wait_for("the ordered commands at every member", 30, || {
            json(&format!("{}/v1/margin/accounts/9002", m.api_url))
                .is_some_and(|v| v["cash"] == "40000000000")
        });
        let p =
            json(&format!("{}/v1/margin/accounts/9001/positions", m.api_url)).expect("positions");
        let sizes: Vec<&Value> = p["positions"]
            .as_array()
            .expect("positions")
            .iter()
            .map(|x| &x["size"])
            .collect();
        assert_eq!(sizes.len(), 1, "member {}: {p}", m.index);
    }
    verify_proof_with_report_from(file, 9001, 3, 0);
    format!(
        "ordered commands answered in {took:?} ms (sent to members 1, 2, 3, 4, 2, 4); {:.1} s with the proofs",
        t0.elapsed().as_secs_f64()
    )
}

/// `curl -X POST` of a JSON body without any token: (HTTP status, body).
fn post_without_token(url: &str, body: &str) -> (u16, String) {
    let out = std::process::Command::new("curl")
        .args(["-sS", "-o", "-", "-w", "\n%{http_code}", "-X", "POST"])
        .args(["-H", "content-type: application/json", "-d", body])
        .arg(url)
        .output()
        .expect("curl");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

/// An account with an owner key, with real processes: `sibyl margin keygen`
/// makes the key, the account is created with it at member 1, the owner's
/// withdrawal is signed by `sibyl margin sign --node` (which reads the
/// committee key from member 2) and sent without a token to member 3; the
/// operator's own unsigned withdrawal and a replay of the envelope are
/// refused, and every member ends with the same balance and nonce, which
/// a proof from member 3 verifies against member 1's signed report.
fn owner_signed_commands_across_members(file: &DevnetFile, dir: &std::path::Path) {
    const ACCOUNT: u64 = 9003;
    let key = dir.join("owner.key");
    let out = common::sibyl()
        .args(["margin", "keygen", "--out"])
        .arg(&key)
        .output()
        .expect("sibyl margin keygen");
    let printed = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "keygen: {printed}");
    let owner = printed
        .lines()
        .find_map(|l| l.strip_prefix("owner = \""))
        .and_then(|l| l.strip_suffix('"'))
        .unwrap_or_else(|| panic!("no owner key in {printed}"))
        .to_string();
    let (code, text) = admin_post(
        file,
        0,
        "/v1/margin/accounts",
        &format!(r#"{{"account": {ACCOUNT}, "owner": "{owner}"}}"#),
    );
    assert_eq!(code, 201, "{text}");
    let deposit = format!("/v1/margin/accounts/{ACCOUNT}/deposit");
    let (code, text) = admin_post(file, 1, &deposit, r#"{"amount": "10000"}"#);
    assert_eq!(code, 200, "{text}");
    // The operator may credit the account but not take from it.
    let withdraw = format!("/v1/margin/accounts/{ACCOUNT}/withdraw");
    let (code, text) = admin_post(file, 0, &withdraw, r#"{"amount": "10"}"#);
    assert_eq!(
        code, 403,
        "the operator withdrew from an owned account: {text}"
    );
    assert!(text.contains("unauthorized"), "{text}");
    // The owner signs 2,500 USD out (engine integers: 6 decimals).
    let command =
        format!(r#"{{"withdraw":{{"account":{ACCOUNT},"asset":"USD","amount":2500000000}}}}"#);
    let out = common::sibyl()
        .args(["margin", "sign", "--key"])
        .arg(&key)
        .args(["--account", &ACCOUNT.to_string(), "--nonce", "1"])
        .args(["--node", &file.members[1].api_url])
        .arg(&command)
        .output()
        .expect("sibyl margin sign");
    let envelope = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(
        out.status.success(),
        "sign: {envelope}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let signed = format!("{}/v1/margin/signed", file.members[2].api_url);
    let (code, text) = post_without_token(&signed, &envelope);
    assert_eq!(code, 200, "the owner's signed withdrawal: {text}");
    // The same envelope again, at another member: a replay.
    let again = format!("{}/v1/margin/signed", file.members[3].api_url);
    let (code, text) = post_without_token(&again, &envelope);
    assert_eq!(code, 409, "a replayed envelope: {text}");
    for m in &file.members {
        common::wait_for("the owner's withdrawal at every member", 30, || {
            json(&format!("{}/v1/margin/accounts/{ACCOUNT}", m.api_url))
                .is_some_and(|v| v["cash"] == "7500000000" && v["nonce"] == 1)
        });
        let a = json(&format!("{}/v1/margin/accounts/{ACCOUNT}", m.api_url)).expect("account");
        assert_eq!(a["owner"], owner.as_str(), "member {}: {a}", m.index);
    }
    verify_proof_with_report_from(file, ACCOUNT, 2, 0);
}

/// Member `prover`'s proof of `account`, with the signed report that carries
/// its root replaced by the copy member `server` serves, passes `sibyl
/// verify` against the committee's group key; a changed balance does not.
fn verify_proof_with_report_from(file: &DevnetFile, account: u64, prover: usize, server: usize) {
    let mut proof = json(&format!(
        "{}/v1/margin/accounts/{account}/proof?wait_ms=15000",
        file.members[prover].api_url
    ))
    .expect("proof");
    assert_eq!(proof["signed"], true, "member {}: {proof}", prover + 1);
    let round = proof["report"]["header"]["round"]
        .as_u64()
        .expect("report round");
    let served = json(&format!(
        "{}/v1/reports/{round}",
        file.members[server].api_url
    ))
    .expect("report from the other member");
    let report = served.get("report").cloned().unwrap_or(served);
    proof["report"] = report;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("proof.json");
    std::fs::write(&path, proof.to_string()).expect("write proof");
    let verify = |p: &std::path::Path| {
        common::sibyl()
            .arg("verify")
            .arg(p)
            .args(["--group-key", &file.group_key, "--suite", &file.suite])
            .args(["--committee"])
            .arg(&file.committee)
            .output()
            .expect("sibyl verify")
    };
    let out = verify(&path);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains(&format!("VERIFIED account {account}")),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The same proof with one byte of the account's state changed.
    let pre = proof["leaf_preimage"]
        .as_str()
        .expect("preimage")
        .to_string();
    let flipped = format!(
        "{}{}",
        &pre[..pre.len() - 1],
        if pre.ends_with('0') { '1' } else { '0' }
    );
    proof["leaf_preimage"] = Value::String(flipped);
    std::fs::write(&path, proof.to_string()).expect("write proof");
    let out = verify(&path);
    assert!(!out.status.success(), "a changed state verified");
}
