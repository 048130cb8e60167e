//! The hand-over's signing session inside `sibyl run`
//! (`POST /v1/node/rotation/sign`): three members of a running
//! secp256k1-evm committee sign one message together, each where its share
//! lives, while the committee keeps signing reports; the signature verifies
//! under the group key, a non-signer and a wrong token are refused.

use crate::common;

use std::time::{Duration, Instant};

fn post_sign(api: &str, token: &str, body: &str) -> (u16, String) {
    common::post_with_token(&format!("{api}/v1/node/rotation/sign"), token, Some(body))
}

#[test]
fn three_members_sign_a_hand_over_inside_run_while_reports_continue() {
    use frost_secp256k1_evm::Secp256K1Keccak256 as Evm;
    let _committee = common::one_committee_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let file = common::setup_devnet_with(
        &dir.path().join("devnet"),
        4,
        &[
            "--builtin-source",
            "--interval",
            "250ms",
            "--suites",
            "secp256k1-evm",
        ],
    );
    let mut members = common::Members(
        file.members
            .iter()
            .map(|m| Some(common::spawn(&m.config, &m.log)))
            .collect(),
    );
    let apis: Vec<String> = file.members.iter().map(|m| m.api_url.clone()).collect();
    common::wait_for("3 signed reports", 120, || {
        common::last_round(&apis[0]).is_some_and(|r| r >= 3)
    });
    std::thread::sleep(Duration::from_secs(2));
    let token = |i: usize| {
        std::fs::read_to_string(file.members[i].config.with_file_name("admin-token"))
            .expect("admin token")
    };
    let message = [0x5a_u8; 32];
    let body = format!(
        r#"{{"message":"0x{}","signers":[1,2,3],"timeout_ms":60000}}"#,
        hex::encode(message)
    );
    assert_eq!(post_sign(&apis[0], "wrong", &body).0, 401);
    let (code, said) = post_sign(&apis[3], &token(3), &body);
    assert_eq!(code, 409, "member 4 is not a signer: {said}");
    assert!(said.contains("not one of the signers"), "{said}");
    let (code, said) = post_sign(
        &apis[0],
        &token(0),
        r#"{"message":"0x12","signers":[1,2,3]}"#,
    );
    assert_eq!(code, 400, "{said}");

    let before = common::last_round(&apis[0]).unwrap_or(0);
    let t = Instant::now();
    let handles: Vec<_> = (0..3)
        .map(|i| {
            let (api, token, body) = (apis[i].clone(), token(i), body.clone());
            std::thread::spawn(move || post_sign(&api, &token, &body))
        })
        .collect();
    let answers: Vec<(u16, String)> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let took = t.elapsed();
    let mut sigs = Vec::new();
    for (i, (code, said)) in answers.iter().enumerate() {
        assert_eq!(*code, 200, "member {}: {said}", i + 1);
        let v: serde_json::Value = serde_json::from_str(said).expect("json");
        sigs.push(v["signature"].as_str().expect("signature").to_string());
    }
    assert!(
        sigs.iter().all(|s| *s == sigs[0]),
        "one signature: {sigs:?}"
    );
    let key_hex = file
        .group_keys
        .get("secp256k1-evm")
        .cloned()
        .unwrap_or_else(|| file.group_key.clone());
    let key = frost_core::VerifyingKey::<Evm>::deserialize(&hex::decode(key_hex).unwrap())
        .expect("group key");
    let sig = frost_core::Signature::<Evm>::deserialize(
        &hex::decode(sigs[0].trim_start_matches("0x")).unwrap(),
    )
    .expect("signature");
    key.verify(&message, &sig)
        .expect("the signature verifies under the group key");
    assert!(key.verify(&[0x5b; 32], &sig).is_err());
    // The committee kept signing: reports kept coming during the session.
    std::thread::sleep(Duration::from_secs(1));
    let after = common::last_round(&apis[0]).unwrap_or(0);
    eprintln!(
        "in-node hand-over signature: {took:.2?} for 3 signers; rounds {before} -> {after} meanwhile"
    );
    assert!(
        after > before,
        "no report while signing ({before} -> {after})"
    );

    // The whole hand-over: committee A (running) signs with `sibyl
    // rotation-sign --live` at three members, committee B (stopped) proves
    // its key with the offline signing, `sibyl rotation-assemble` makes the
    // contract call.
    let b = common::setup_devnet_with(
        &dir.path().join("b"),
        4,
        &["--builtin-source", "--suites", "secp256k1-evm"],
    );
    let b_key = b
        .group_keys
        .get("secp256k1-evm")
        .cloned()
        .unwrap_or(b.group_key.clone());
    let sign = |config: &std::path::Path, live: bool| {
        let mut cmd = common::sibyl();
        cmd.arg("rotation-sign")
            .arg("--config")
            .arg(config)
            .arg("--current-committee")
            .arg(&file.committee)
            .arg("--new-committee")
            .arg(&b.committee)
            .args(["--new-group-key", &b_key, "--chain-id", "31337"])
            .args(["--contract", "0x5FbDB2315678afecb367f032d93F642f64180aa3"])
            .args(["--rotation-count", "0", "--timeout", "60s"]);
        if live {
            cmd.arg("--live");
        }
        cmd.stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("sibyl rotation-sign")
    };
    let parts = |children: Vec<std::process::Child>| -> Vec<serde_json::Value> {
        children
            .into_iter()
            .map(|c| {
                let out = c.wait_with_output().expect("wait");
                assert!(
                    out.status.success(),
                    "{}",
                    String::from_utf8_lossy(&out.stderr)
                );
                serde_json::from_slice(&out.stdout).expect("part JSON")
            })
            .collect()
    };
    let before = common::last_round(&apis[0]).unwrap_or(0);
    let t = Instant::now();
    let current = parts(
        (0..3)
            .map(|i| sign(&file.members[i].config, true))
            .collect(),
    );
    let took = t.elapsed();
    assert!(current.iter().all(|p| *p == current[0]), "{current:?}");
    assert_eq!(current[0]["role"], "current");
    let new = parts((0..3).map(|i| sign(&b.members[i].config, false)).collect());
    assert_eq!(new[0]["role"], "new");
    let cur_file = dir.path().join("current.json");
    let new_file = dir.path().join("new.json");
    std::fs::write(&cur_file, current[0].to_string()).unwrap();
    std::fs::write(&new_file, new[0].to_string()).unwrap();
    let out = common::sibyl()
        .arg("rotation-assemble")
        .arg("--current")
        .arg(&cur_file)
        .arg("--new")
        .arg(&new_file)
        .arg("--new-committee")
        .arg(&b.committee)
        .output()
        .expect("assemble");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let assembled: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert!(
        assembled["calldata"]
            .as_str()
            .is_some_and(|c| c.starts_with("0x") && c.len() > 10),
        "{assembled}"
    );
    let after = common::last_round(&apis[0]).unwrap_or(0);
    let reports = crate::refresh_processes::reports_after(&apis[0], before.saturating_sub(1));
    let (gap, feed) = crate::refresh_processes::gaps(&reports);
    let heartbeat = crate::refresh_processes::heartbeat_ms(&file.committee);
    eprintln!(
        "rotation-sign --live at 3 members of the running committee: {took:.2?}; rounds {before} -> {after} meanwhile, longest gap between reports {gap} ms"
    );
    assert!(
        feed <= heartbeat,
        "a feed went {feed} ms without a report while the committee signed (heartbeat {heartbeat} ms)"
    );
    for c in members.0.iter_mut().flatten() {
        common::terminate(c);
    }
}
