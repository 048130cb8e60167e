//! A committee whose file lists both suites, as real `sibyl run` processes:
//! every report carries an ed25519 and a secp256k1-evm signature, `sibyl
//! verify` accepts each under its group key, the pull payload for the
//! chain is served, the signing ledger holds one digest per round, and a
//! member missing one suite's key is refused by `config check` and `run`.

use crate::common;

use common::{Members, last_round, sibyl, spawn, terminate, wait_for};
use sibyl::cmd::devnet::{DevnetFile, http_get};
use sibyl_aggregator::Suite;
use sibyl_aggregator::verify::{GroupKeys, verify_report};
use std::path::Path;

fn setup_both(dir: &Path) -> DevnetFile {
    let out = sibyl()
        .args(["devnet", "--setup-only", "--builtin-source", "--nodes", "4"])
        .args(["--interval", "250ms", "--suites", "ed25519,secp256k1-evm"])
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

fn verify_cli(url: &str, suite: &str, key: &str, committee: &Path) -> (bool, String) {
    let out = sibyl()
        .arg("verify")
        .arg(url)
        .args(["--suite", suite, "--group-key", key, "--committee"])
        .arg(committee)
        .output()
        .unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn a_committee_listing_both_suites_signs_every_report_with_both() {
    let _committee = crate::common::one_committee_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let net_dir = dir.path().join("devnet");
    let file = setup_both(&net_dir);
    let ed = file.group_keys["ed25519"].clone();
    let evm = file.group_keys["secp256k1-evm"].clone();

    // `config check` passes with no word about the suites.
    let check = sibyl()
        .args(["config", "check", "--config"])
        .arg(&file.members[0].config)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&check.stdout);
    assert!(check.status.success(), "{stdout}");
    assert!(!stdout.contains("`suites`"), "{stdout}");

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

    // `sibyl verify` accepts the newest report under each suite's key.
    let latest = format!("{}/v1/reports/latest", api[1]);
    for (suite, key) in [("ed25519", &ed), ("secp256k1-evm", &evm)] {
        let (ok, out) = verify_cli(&latest, suite, key, &file.committee);
        assert!(ok, "{suite}: {out}");
        assert!(out.contains("VERIFIED report of round"), "{out}");
    }
    // Each key fails for the other suite's signature.
    let (ok, out) = verify_cli(&latest, "secp256k1-evm", &ed, &file.committee);
    assert!(!ok, "{out}");

    // The EVM pull payload is served by the same committee.
    let update = http_get(&format!("{}/v1/feeds/BTC-USD/update", api[2]))
        .expect("GET /v1/feeds/BTC-USD/update");
    let update: serde_json::Value = serde_json::from_str(&update).unwrap();
    assert!(
        update["calldata"].as_str().is_some_and(|c| c.len() > 10),
        "{update}"
    );
    for c in members.0.iter_mut().flatten() {
        terminate(c);
    }
    members.0.clear();

    // Every stored report of every member carries both signatures, each
    // valid; the ledger holds the report's digest for each round signed.
    let keys = GroupKeys::new(sibyl_aggregator::ConfigDigest(
        hex::decode(&file.config_digest)
            .unwrap()
            .try_into()
            .unwrap(),
    ))
    .with_key_bytes(Suite::Ed25519, &hex::decode(&ed).unwrap())
    .unwrap()
    .with_key_bytes(Suite::Secp256k1Evm, &hex::decode(&evm).unwrap())
    .unwrap();
    let mut ledger_checked = 0;
    for m in &file.members {
        let db = sibyl_node::store::Db::open_read_only(&m.db).unwrap();
        let reports = db.reports_after(0, 1_000_000).unwrap();
        assert!(
            reports.len() >= 3,
            "member {} stored {}",
            m.index,
            reports.len()
        );
        for r in &reports {
            assert_eq!(
                r.signatures.len(),
                2,
                "member {} round {}",
                m.index,
                r.header.round
            );
            verify_report(r, &keys)
                .unwrap_or_else(|e| panic!("member {} round {}: {e}", m.index, r.header.round));
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
        for (round, digest) in ledger {
            if let Some(r) = reports.iter().find(|r| r.header.round == round as u64) {
                assert_eq!(
                    digest,
                    sibyl_aggregator::digest::header_digest(&r.header).to_vec()
                );
                ledger_checked += 1;
            }
        }
    }
    assert!(ledger_checked >= 1);

    // A member without its secp256k1-evm key package is refused by both
    // `config check` and `run`, naming the file.
    let node_dir = file.members[0].config.parent().unwrap().to_path_buf();
    let evm_key = node_dir.join("keys/frost.secp256k1-evm.key");
    assert!(evm_key.exists(), "{}", evm_key.display());
    std::fs::remove_file(&evm_key).unwrap();
    let check = sibyl()
        .args(["config", "check", "--config"])
        .arg(&file.members[0].config)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&check.stdout);
    assert!(!check.status.success(), "{stdout}");
    assert!(stdout.contains("frost.secp256k1-evm.key"), "{stdout}");
    let run = sibyl()
        .args(["run", "--config"])
        .arg(&file.members[0].config)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(!run.status.success(), "{stderr}");
    assert!(stderr.contains("frost.secp256k1-evm.key"), "{stderr}");
}
