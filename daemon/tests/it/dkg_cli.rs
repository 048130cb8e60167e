//! `sibyl keygen --dealer` and `sibyl dkg` as operators run them: the real
//! binary, four processes on loopback, real files.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

const PASS_VAR: &str = "SIBYL_DKG_CLI_TEST_PASS";

fn sibyl() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_sibyl"));
    c.env(PASS_VAR, "correct horse battery staple");
    c
}

/// A free loopback port below the ephemeral range (so no outgoing connection
/// can take it between now and the bind), unique within this process.
fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let base = 20_000 + (std::process::id() % 600) * 20;
    loop {
        let offset = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = u16::try_from(20_000 + (base - 20_000 + offset) % 12_000).unwrap_or(20_000);
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

fn tempdir() -> PathBuf {
    let d = std::env::temp_dir().join(format!(
        "sibyl-dkg-cli-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0)
    ));
    std::fs::create_dir_all(&d).expect("mkdir");
    d
}

fn write_configs(dir: &Path, peer_ids: &[String]) -> Vec<PathBuf> {
    let mut committee = String::from(
        "threshold = 3\nsuites = [\"ed25519\", \"secp256k1-evm\"]\n\n[round]\ninterval = \"250ms\"\nobservation_timeout = \"100ms\"\nround_timeout = \"1s\"\n\n",
    );
    for (i, peer) in peer_ids.iter().enumerate() {
        committee += &format!(
            "[[members]]\nindex = {}\npeer_id = \"{peer}\"\naddress = \"/ip4/127.0.0.1/tcp/{}\"\n\n",
            i + 1,
            free_port()
        );
    }
    committee += "[[feeds]]\nid = \"BTC-USD\"\ndecimals = 8\n";
    std::fs::write(dir.join("committee.toml"), committee).expect("write committee");
    (1..=peer_ids.len())
        .map(|i| {
            let path = dir.join(format!("node-{i}.toml"));
            std::fs::write(
                &path,
                format!(
                    "[node]\ncommittee = \"committee.toml\"\ndata_dir = \"node-{i}/data\"\n\n[keys]\nidentity = \"node-{i}/identity.key\"\nkey_package = \"node-{i}/keys/key_package.enc\"\npublic_key_package = \"node-{i}/keys/public_key_package.json\"\npassphrase_env = \"{PASS_VAR}\"\n\n[api]\nenabled = false\n"
                ),
            )
            .expect("write node.toml");
            path
        })
        .collect()
}

/// `sibyl keygen --dealer` for 4 members, threshold 3, in `dir`: returns its
/// stdout and the members' PeerIds from `keygen.json`.
fn dealer_keygen(dir: &Path) -> (String, Vec<String>) {
    let out = sibyl()
        .args([
            "keygen",
            "--dealer",
            "--nodes",
            "4",
            "--threshold",
            "3",
            "--out",
        ])
        .arg(dir)
        .args(["--passphrase-env", PASS_VAR])
        .output()
        .expect("run keygen");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("keygen.json")).expect("summary"))
            .expect("json");
    let peers = summary["members"]
        .as_array()
        .expect("members")
        .iter()
        .map(|m| m["peer_id"].as_str().expect("peer id").to_string())
        .collect();
    (stdout, peers)
}

#[test]
fn keygen_then_dkg_across_four_processes() {
    let _committee = crate::common::one_committee_at_a_time();
    let dir = tempdir();
    let (stdout, peers) = dealer_keygen(&dir);
    assert!(stdout.contains("group public key (ed25519): "), "{stdout}");
    assert_eq!(peers.len(), 4);
    for p in &peers {
        assert!(stdout.contains(p.as_str()), "peer id {p} not printed");
    }

    let configs = write_configs(&dir, &peers);

    // Second dealer run bound to the committee's digest keeps the identities.
    let out = sibyl()
        .args([
            "keygen",
            "--dealer",
            "--nodes",
            "4",
            "--threshold",
            "3",
            "--out",
        ])
        .arg(&dir)
        .args(["--passphrase-env", PASS_VAR, "--committee"])
        .arg(dir.join("committee.toml"))
        .output()
        .expect("run keygen --committee");
    let stdout2 = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout2}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for p in &peers {
        assert!(stdout2.contains(p.as_str()), "identity of {p} not kept");
    }
    assert!(!stdout2.contains("config digest 000000"), "{stdout2}");
    let children: Vec<_> = configs
        .iter()
        .map(|c| {
            sibyl()
                .args(["dkg", "--timeout", "60s", "--config"])
                .arg(c)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawn dkg")
        })
        .collect();
    let mut group_lines = Vec::new();
    for child in children {
        let out = child.wait_with_output().expect("wait");
        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
        let stderr = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(out.status.success(), "dkg failed:\n{stdout}\n{stderr}");
        assert!(stderr.contains("round 1"), "no progress shown: {stderr}");
        assert!(!stderr.contains("correct horse"), "passphrase leaked");
        let lines: Vec<String> = stdout
            .lines()
            .filter(|l| l.starts_with("group public key"))
            .map(str::to_string)
            .collect();
        assert_eq!(lines.len(), 2, "{stdout}");
        // It says where the keys went.
        for suite in ["ed25519", "secp256k1-evm"] {
            assert!(
                stdout.lines().any(|l| l.starts_with("wrote ")
                    && l.contains(&format!("keys/key_package.{suite}.enc"))
                    && l.contains(&format!("keys/public_key_package.{suite}.json"))),
                "{stdout}"
            );
        }
        group_lines.push(lines);
    }
    assert!(
        group_lines.windows(2).all(|w| w[0] == w[1]),
        "{group_lines:?}"
    );

    for i in 1..=4 {
        for suite in ["ed25519", "secp256k1-evm"] {
            let secret = dir.join(format!("node-{i}/keys/key_package.{suite}.enc"));
            let mode = std::fs::metadata(&secret)
                .expect("key package")
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "{}", secret.display());
            assert!(
                dir.join(format!("node-{i}/keys/public_key_package.{suite}.json"))
                    .exists()
            );
        }
    }

    // A second run refuses to overwrite the keys.
    let out = sibyl()
        .args(["dkg", "--timeout", "5s", "--config"])
        .arg(&configs[0])
        .output()
        .expect("run dkg");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("already exists"));

    // A wrong passphrase is named as such.
    let out = sibyl()
        .env(PASS_VAR, "wrong")
        .args(["dkg", "--force", "--timeout", "5s", "--config"])
        .arg(&configs[0])
        .output()
        .expect("run dkg");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("wrong passphrase"), "{stderr}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// `--timeout` bounds the whole command: a member whose peers never come
/// gives up by its timeout (the linger that answers repeats is inside it),
/// naming the members it waited for.
#[test]
fn dkg_gives_up_within_its_timeout() {
    let dir = tempdir();
    let (_, peers) = dealer_keygen(&dir);
    let configs = write_configs(&dir, &peers);
    // Timed from its first progress line (the ceremony's start), so process
    // start and key decryption (slow in a debug build) are not counted.
    let mut child = sibyl()
        .args(["dkg", "--force", "--timeout", "3s", "--config"])
        .arg(&configs[0])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn dkg");
    let stderr_pipe = child.stderr.take().expect("stderr");
    let mut stderr = String::new();
    let mut first_line_at = None;
    for line in std::io::BufRead::lines(std::io::BufReader::new(stderr_pipe)) {
        let line = line.expect("stderr line");
        if first_line_at.is_none() && line.contains("waiting for") {
            first_line_at = Some(std::time::Instant::now());
        }
        stderr.push_str(&line);
        stderr.push('\n');
    }
    let status = child.wait().expect("wait dkg");
    let took = first_line_at.map(|t| t.elapsed());
    assert!(!status.success(), "a lone member cannot finish: {stderr}");
    assert!(
        stderr.contains("timed out") && stderr.contains("[2, 3, 4]"),
        "names the members it waited for: {stderr}"
    );
    eprintln!("dkg --timeout 3s: {took:?} from its first progress line to exit");
    assert!(
        took.is_some_and(|t| t < std::time::Duration::from_millis(3_800)),
        "--timeout 3s took {took:?} after the ceremony started: {stderr}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
