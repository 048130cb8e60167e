//! Moving a member to a new host with `sibyl ledger export` / `import`, as
//! processes: member 4 of a running devnet is stopped, its ledger exported
//! (which retires the old data directory: `sibyl run` refuses it), imported
//! into a new data directory, and the member started from there keeps
//! signing rounds after the exported ones, never one at or below them.

use crate::common;

use sibyl_node::store::{Db, LedgerInterchange};
use std::path::Path;
use std::time::Duration;

fn ledger(args: &[&str], config: &Path, file: &Path) -> std::process::Output {
    common::sibyl()
        .arg("ledger")
        .args(args)
        .arg("--config")
        .arg(config)
        .arg(file)
        .output()
        .expect("run sibyl ledger")
}

/// Every (round, digest) the ledger at `db` holds (a short read
/// transaction; the member keeps running).
fn signed(db: &Path) -> Vec<(u64, String)> {
    let mut db = Db::open(db).expect("open ledger");
    let (file, _) = db
        .export_ledger(&[0; 32], None, false, 0)
        .expect("read ledger");
    file.signing
        .into_iter()
        .map(|s| (s.round, s.digest))
        .collect()
}

#[test]
fn a_member_moved_with_its_ledger_keeps_signing_and_never_signs_a_round_twice() {
    let _committee = common::one_committee_at_a_time();
    let mut c = common::RunningCommittee::start(4);
    let m = c.file.members[3].clone();
    // Let member 4 sign a few rounds, then stop it.
    common::wait_for("member 4 signed a round", 60, || !signed(&m.db).is_empty());
    if let Some(mut child) = c.members.0[3].take() {
        common::terminate(&mut child);
    }
    let before = signed(&m.db);

    // Export: the JSON holds every signed round; the old directory retires.
    let out_path = c.dir.path().join("ledger.json");
    let out = common::sibyl()
        .args(["ledger", "export", "--config"])
        .arg(&m.config)
        .arg("--out")
        .arg(&out_path)
        .output()
        .expect("export");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let file: LedgerInterchange =
        serde_json::from_slice(&std::fs::read(&out_path).expect("read export")).expect("json");
    let exported: Vec<(u64, String)> = file
        .signing
        .iter()
        .map(|s| (s.round, s.digest.clone()))
        .collect();
    assert_eq!(exported, before);
    let newest = file.newest_signed().expect("member 4 signed");
    assert!(file.last_observed_round.is_some_and(|o| o >= newest));
    assert_eq!(file.config_digest, c.file.config_digest);

    // The old data directory refuses to run.
    let old_log = c.dir.path().join("old-run.log");
    // Held in a kill-on-drop guard: if it kept running, the failing
    // assertion below must not leave it behind.
    let mut old = common::Members(vec![Some(common::spawn(&m.config, &old_log))]);
    let status = {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        let child = old.0[0].as_mut().expect("spawned");
        loop {
            if let Some(s) = child.try_wait().expect("wait") {
                break s;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the retired member kept running"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    assert!(!status.success());
    let log = std::fs::read_to_string(&old_log).expect("log");
    assert!(log.contains("retired by `sibyl ledger export`"), "{log}");

    // The new host: same keys, a new data directory.
    let base = m.config.parent().expect("config dir");
    let new_config = base.join("node-moved.toml");
    let toml = std::fs::read_to_string(&m.config).expect("config");
    assert!(toml.contains("data_dir = \"data\""));
    std::fs::write(
        &new_config,
        toml.replace("data_dir = \"data\"", "data_dir = \"data-moved\""),
    )
    .expect("write config");
    let out = ledger(&["import"], &new_config, &out_path);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Importing again into the same (now in use) ledger is refused.
    let again = ledger(&["import"], &new_config, &out_path);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("--merge"));
    // Importing into the retired directory is refused.
    let retired = ledger(&["import", "--merge"], &m.config, &out_path);
    assert!(!retired.status.success());
    assert!(String::from_utf8_lossy(&retired.stderr).contains("retired"));

    // Start the member on its new data directory: it signs again, only
    // rounds after the newest exported one.
    let new_db = base.join("data-moved").join("sibyl.db");
    let new_log = c.dir.path().join("moved-run.log");
    c.members.0[3] = Some(common::spawn(&new_config, &new_log));
    common::wait_for("the moved member signs a new round", 90, || {
        signed(&new_db).last().is_some_and(|(r, _)| *r > newest)
    });
    let after = signed(&new_db);
    let (old_rows, new_rows): (Vec<_>, Vec<_>) =
        after.iter().cloned().partition(|(r, _)| *r <= newest);
    assert_eq!(old_rows, exported, "rounds at or before the export changed");
    assert!(!new_rows.is_empty());
    // The committee, member 4 included, keeps reporting.
    let api = m.api_url.clone();
    let start = common::last_round(&api).unwrap_or(0);
    common::wait_for("the moved member holds new reports", 60, || {
        common::last_round(&api).is_some_and(|r| r > start + 2)
    });
}
