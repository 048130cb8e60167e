//! `sibyl config check` as an operator runs it: the real binary on real files.

use std::path::Path;
use std::process::Command;

fn sibyl() -> Command {
    Command::new(env!("CARGO_BIN_EXE_sibyl"))
}

#[test]
fn example_configs_pass_the_check() {
    let node = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/examples/node.toml");
    // The example's key files do not exist: check the files only.
    let out = sibyl()
        .args(["config", "check", "--keys", "none", "--config"])
        .arg(&node)
        .output()
        .expect("run sibyl");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.starts_with("OK:"), "{stdout}");
    assert!(stdout.contains("4 members, threshold 3"), "{stdout}");
    assert!(stdout.contains("config digest 0x"), "{stdout}");
}

#[test]
fn a_mistake_is_reported_with_file_line_and_key() {
    let dir = std::env::temp_dir().join(format!("sibyl-config-check-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/examples");
    let committee = std::fs::read_to_string(examples.join("committee.toml")).unwrap();
    std::fs::write(
        dir.join("committee.toml"),
        committee.replace("threshold = 3", "threshold = 4"),
    )
    .unwrap();
    std::fs::write(
        dir.join("node.toml"),
        "[node]\ncommittee = \"committee.toml\"\n\n[keys]\npassphrase_env = \"P\"\n\n[api]\nlisten = \"nowhere\"\n",
    )
    .unwrap();
    let out = sibyl()
        .args(["config", "check", "--config"])
        .arg(dir.join("node.toml"))
        .output()
        .expect("run sibyl");
    assert!(!out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("node.toml:8:"), "{stdout}");
    assert!(stdout.contains("`api.listen`"), "{stdout}");
    assert!(stdout.contains("`threshold`"), "{stdout}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Broken `[sources]` sections: `sibyl config check` refuses each one with
/// the key and its line in node.toml, and `sibyl run` refuses the same file
/// with the same problem before it starts anything.
#[test]
fn broken_sources_are_refused_by_check_and_by_run_with_key_and_line() {
    let dir = std::env::temp_dir().join(format!("sibyl-sources-check-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/examples");
    let committee = std::fs::read_to_string(examples.join("committee.toml")).unwrap();
    std::fs::write(dir.join("committee.toml"), &committee).unwrap();
    // BTC-USD at 20 decimals: more than the sources observe at.
    let wide = committee.replacen("decimals = 8", "decimals = 20", 1);
    std::fs::write(dir.join("committee-wide.toml"), wide).unwrap();

    // Lines 1-7 of every node.toml; [sources] starts at line 6.
    let head = |committee: &str| {
        format!(
            "[node]\ncommittee = \"{committee}\"\n\n[keys]\npassphrase_env = \"SIBYL_TEST_PASSPHRASE\"\n[sources]\npoll_interval = \"1s\"\n"
        )
    };
    let feed = "[[sources.feeds]]\nid = \"BTC-USD\"\nmin_sources = 2\nsources = [{ venue = \"kraken\" }, { venue = \"coinbase\" }]\n";
    // (name, committee file, the rest of [sources] from line 8, key, line)
    let cases: Vec<(&str, &str, String, &str, usize)> = vec![
        (
            "misspelt venue table",
            "committee.toml",
            format!("[sources.venues.krakn]\nws = false\n{feed}"),
            "sources.venues.krakn",
            8,
        ),
        (
            "min_sources as a word",
            "committee.toml",
            feed.replace("min_sources = 2", "min_sources = \"three\""),
            "sources.feeds[0].min_sources",
            10,
        ),
        (
            "misspelt key",
            "committee.toml",
            format!("max_quote_agee = \"10s\"\n{feed}"),
            "sources.max_quote_agee",
            8,
        ),
        (
            "a duration outside the grammar",
            "committee.toml",
            format!("max_quote_age = \"10 seconds\"\n{feed}"),
            "sources.max_quote_age",
            8,
        ),
        (
            "unknown venue",
            "committee.toml",
            feed.replace("\"coinbase\"", "\"coinbass\""),
            "sources.feeds[0].sources[1].venue",
            11,
        ),
        (
            "decimals stated in the sources",
            "committee.toml",
            feed.replace("min_sources = 2", "decimals = 8\nmin_sources = 2"),
            "sources.feeds[0].decimals",
            10,
        ),
        (
            "more sources required than listed",
            "committee.toml",
            feed.replace("min_sources = 2", "min_sources = 5"),
            "sources.feeds[0].min_sources",
            10,
        ),
        (
            "a USDT market without the USDT-USD feed",
            "committee.toml",
            feed.replace(
                "{ venue = \"coinbase\" }",
                "{ venue = \"binance\", quote = \"USDT\" }",
            ),
            "sources.feeds[0].sources[1].quote",
            11,
        ),
        (
            "a disabled venue used",
            "committee.toml",
            format!("[sources.venues.kraken]\nenabled = false\n{feed}"),
            "sources.feeds[0].sources[0].venue",
            13,
        ),
        (
            "committee decimals the sources cannot observe at",
            "committee-wide.toml",
            feed.to_string(),
            "sources.feeds[0].id",
            9,
        ),
    ];
    for (name, committee, rest, key, line) in cases {
        let node = dir.join("node.toml");
        std::fs::write(&node, head(committee) + &rest).unwrap();
        let at = format!("node.toml:{line}:");
        let check = sibyl()
            .args(["config", "check", "--config"])
            .arg(&node)
            .output()
            .expect("run sibyl config check");
        let stdout = String::from_utf8_lossy(&check.stdout);
        assert!(
            !check.status.success(),
            "{name}: config check passed:\n{stdout}"
        );
        assert!(
            stdout
                .lines()
                .any(|l| l.contains(&at) && l.contains(&format!("`{key}`"))),
            "{name}: expected {at} `{key}` in:\n{stdout}"
        );
        let run = sibyl()
            .args(["run", "--config"])
            .arg(&node)
            .env("SIBYL_TEST_PASSPHRASE", "unused")
            .output()
            .expect("run sibyl run");
        let stderr = String::from_utf8_lossy(&run.stderr);
        assert!(
            !run.status.success(),
            "{name}: sibyl run started:\n{stderr}"
        );
        assert!(
            stderr
                .lines()
                .any(|l| l.contains(&at) && l.contains(&format!("`{key}`"))),
            "{name}: expected {at} `{key}` from run in:\n{stderr}"
        );
    }
    // The same node.toml with a valid section passes (there are no keys).
    std::fs::write(dir.join("node.toml"), head("committee.toml") + feed).unwrap();
    let ok = sibyl()
        .args(["config", "check", "--keys", "none", "--config"])
        .arg(dir.join("node.toml"))
        .output()
        .expect("run sibyl config check");
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stdout)
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// `sibyl run --config node` with stderr in a file; killed after `secs` if
/// it is still running (a setup it should have refused). Returns whether it
/// exited with success and its stderr.
fn run_briefly(node: &Path, env: &[(&str, &str)], secs: u64) -> (Option<bool>, String) {
    let log = node.with_extension("run.log");
    let mut cmd = sibyl();
    cmd.args(["run", "--config"])
        .arg(node)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log file"));
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("start sibyl run");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break Some(status.success());
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    (status, std::fs::read_to_string(&log).unwrap_or_default())
}

/// 1-based line of the first line of `text` containing `needle`.
fn line_of(text: &str, needle: &str) -> usize {
    text.lines()
        .position(|l| l.contains(needle))
        .unwrap_or_else(|| panic!("no {needle:?} in\n{text}"))
        + 1
}

/// A committee feed no source observes, and a committee listing both
/// suites: `config check` passes but warns with the committee file's key and
/// line; `sibyl run` logs the same warnings at start.
#[test]
fn a_feed_with_no_source_is_warned_by_check_and_run_and_both_suites_are_not() {
    let dir = tempfile::tempdir().unwrap();
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/examples");
    let committee = std::fs::read_to_string(examples.join("committee.toml"))
        .unwrap()
        .replace(
            "suites = [\"ed25519\"]",
            "suites = [\"ed25519\", \"secp256k1-evm\"]",
        );
    std::fs::write(dir.path().join("committee.toml"), &committee).unwrap();
    // Sources for BTC-USD only: ETH-USD and SOL-USD have none.
    let node = dir.path().join("node.toml");
    std::fs::write(
        &node,
        "[node]\ncommittee = \"committee.toml\"\n[keys]\npassphrase_env = \"SIBYL_TEST_PASSPHRASE\"\n[sources]\n[[sources.feeds]]\nid = \"BTC-USD\"\nmin_sources = 2\nsources = [{ venue = \"kraken\" }, { venue = \"coinbase\" }]\n",
    )
    .unwrap();
    let expected = [
        (
            format!(
                "committee.toml:{}:",
                line_of(&committee, "id = \"ETH-USD\"")
            ),
            "`feeds[1].id`",
            "committee feed ETH-USD has no source",
        ),
        (
            format!(
                "committee.toml:{}:",
                line_of(&committee, "id = \"SOL-USD\"")
            ),
            "`feeds[2].id`",
            "committee feed SOL-USD has no source",
        ),
    ];
    let check = sibyl()
        .args(["config", "check", "--keys", "none", "--config"])
        .arg(&node)
        .output()
        .expect("run sibyl config check");
    let stdout = String::from_utf8_lossy(&check.stdout);
    assert!(check.status.success(), "{stdout}");
    assert!(stdout.starts_with("OK:"), "{stdout}");
    for (at, key, cause) in &expected {
        assert!(
            stdout.lines().any(|l| l.starts_with("warning: ")
                && l.contains(at)
                && l.contains(key)
                && l.contains(cause)),
            "expected a warning {at} {key} {cause} in:\n{stdout}"
        );
    }
    assert!(!stdout.contains("BTC-USD has no source"), "{stdout}");
    // Both suites listed is what the committee signs with: no warning.
    assert!(!stdout.contains("`suites`"), "{stdout}");
    // `run` warns the same before it refuses the missing keys.
    let (status, stderr) = run_briefly(&node, &[("SIBYL_TEST_PASSPHRASE", "unused")], 30);
    assert_eq!(status, Some(false), "{stderr}");
    for (at, key, cause) in &expected {
        assert!(
            stderr.lines().any(|l| l.contains("WARN")
                && l.contains(at)
                && l.contains(key)
                && l.contains(cause)),
            "expected a logged warning {at} {key} {cause} in:\n{stderr}"
        );
    }
}

/// Keys that `sibyl run` refuses: `config check` refuses them too, with the
/// same cause at the same key and line of node.toml.
#[test]
fn config_check_refuses_the_keys_run_refuses_with_the_same_cause() {
    let dir = tempfile::tempdir().unwrap();
    crate::common::setup_devnet(dir.path(), 4);
    let member = dir.path().join("node-1");
    let node = std::fs::read_to_string(member.join("node.toml")).unwrap();
    let good = member.join("node.toml");
    let ok = sibyl()
        .args(["config", "check", "--config"])
        .arg(&good)
        .output()
        .expect("run sibyl config check");
    assert!(
        ok.status.success(),
        "{}{}",
        String::from_utf8_lossy(&ok.stdout),
        String::from_utf8_lossy(&ok.stderr)
    );

    // Setups for the cases.
    std::fs::write(member.join("wrong-passphrase"), "not the passphrase\n").unwrap();
    let stranger = sibyl()
        .args(["identity", "--out"])
        .arg(member.join("stranger"))
        .arg("--passphrase-file")
        .arg(member.join("passphrase"))
        .output()
        .expect("run sibyl identity");
    assert!(stranger.status.success());
    let committee = std::fs::read_to_string(dir.path().join("committee.toml")).unwrap();
    let other = committee.replacen("deviation_bps = 10", "deviation_bps = 11", 1);
    assert_ne!(other, committee);
    std::fs::write(dir.path().join("other-committee.toml"), other).unwrap();

    let pass_line = "passphrase_file = \"passphrase\"";
    // (case, node.toml text, key, cause)
    let cases = [
        (
            "passphrase variable unset",
            node.replace(
                pass_line,
                "passphrase_env = \"SIBYL_TEST_UNSET_PASSPHRASE\"",
            ),
            "keys.passphrase_env",
            "SIBYL_TEST_UNSET_PASSPHRASE is not set",
        ),
        (
            "wrong passphrase",
            node.replace(pass_line, "passphrase_file = \"wrong-passphrase\""),
            "keys.passphrase_file",
            "wrong passphrase for",
        ),
        (
            "identity not in the committee",
            node.replace(
                "identity = \"keys/identity.key\"",
                "identity = \"stranger/identity.key\"",
            ),
            "keys.identity",
            "is not a member of the committee",
        ),
        (
            "keys made for another committee",
            node.replace("../committee.toml", "../other-committee.toml"),
            "keys.key_package",
            "belongs to committee config digest",
        ),
        (
            "key package missing",
            node.replace(
                "key_package = \"keys/frost.key\"",
                "key_package = \"keys/gone.key\"",
            ),
            "keys.key_package",
            "not found",
        ),
    ];
    for (name, text, key, cause) in cases {
        assert_ne!(text, node, "{name}: the case changed nothing");
        let path = member.join("case.toml");
        std::fs::write(&path, &text).unwrap();
        let key_line = text
            .lines()
            .position(|l| l.starts_with(key.rsplit('.').next().unwrap_or(key)))
            .map(|i| i + 1)
            .unwrap_or_else(|| panic!("{name}: no {key} in\n{text}"));
        let at = format!("case.toml:{key_line}:");
        let check = sibyl()
            .args(["config", "check", "--config"])
            .arg(&path)
            .output()
            .expect("run sibyl config check");
        let stdout = String::from_utf8_lossy(&check.stdout);
        assert!(
            !check.status.success(),
            "{name}: config check passed:\n{stdout}"
        );
        let refusal = |out: &str| {
            out.lines()
                .any(|l| l.contains(&at) && l.contains(&format!("`{key}`")) && l.contains(cause))
        };
        assert!(
            refusal(&stdout),
            "{name}: expected {at} `{key}` {cause} in:\n{stdout}"
        );
        let (status, stderr) = run_briefly(&path, &[], 30);
        assert_eq!(
            status,
            Some(false),
            "{name}: sibyl run was not refused:\n{stderr}"
        );
        assert!(
            refusal(&stderr),
            "{name}: expected {at} `{key}` {cause} from run in:\n{stderr}"
        );
        assert!(
            !stdout.contains("not the passphrase") && !stderr.contains("not the passphrase"),
            "{name}: a passphrase reached the output"
        );
    }
}

/// TOML syntax errors: every one in node.toml is reported (the parser stops
/// at the first, the check parses on past each), and the committee file's
/// are reported in the same run.
#[test]
fn every_syntax_error_of_both_files_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("committee.toml"),
        "threshold = = 3\nsuites = [\"ed25519\"]\n",
    )
    .unwrap();
    let node = dir.path().join("node.toml");
    std::fs::write(
        &node,
        "[node]\ncommittee = \"committee.toml\"\n[keys]\npassphrase_env = SIBYL\n[api]\nlisten = \"127.0.0.1:8080\n",
    )
    .unwrap();
    let check = sibyl()
        .args(["config", "check", "--config"])
        .arg(&node)
        .output()
        .expect("run sibyl config check");
    let stdout = String::from_utf8_lossy(&check.stdout);
    assert!(!check.status.success(), "{stdout}");
    for at in ["node.toml:4:", "node.toml:6:", "committee.toml:1:"] {
        assert!(
            stdout.lines().any(|l| l.contains(at)),
            "expected an error at {at} in:\n{stdout}"
        );
    }
    assert!(stdout.contains("stops at a syntax error"), "{stdout}");
    let (status, stderr) = run_briefly(&node, &[], 30);
    assert_eq!(status, Some(false), "{stderr}");
    assert!(stderr.contains("node.toml:6:"), "{stderr}");
}

/// A closed stdout (`sibyl config check ... | true`): no panic, no stack
/// trace, a quiet exit; the same for other printing commands.
#[test]
fn a_closed_stdout_ends_commands_quietly() {
    use std::io::Read;
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/examples");
    let node = examples.join("node.toml");
    let node = node.to_str().unwrap();
    let commands: [&[&str]; 4] = [
        &["config", "check", "--keys", "none", "--config", node],
        &["version"],
        &["simulate", "--nodes", "4", "--seeds", "2", "--rounds", "3"],
        &["config", "check", "--config", "/nonexistent/node.toml"],
    ];
    for args in commands {
        let mut child = sibyl()
            .args(args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("start sibyl");
        // Close the read end before the command writes: its writes fail with EPIPE.
        drop(child.stdout.take());
        let mut stderr = String::new();
        child
            .stderr
            .take()
            .expect("stderr")
            .read_to_string(&mut stderr)
            .expect("read stderr");
        let status = child.wait().expect("wait");
        assert!(!stderr.contains("panicked"), "{args:?}:\n{stderr}");
        assert!(!stderr.contains("Broken pipe"), "{args:?}:\n{stderr}");
        assert_ne!(status.code(), Some(101), "{args:?}: {status}\n{stderr}");
    }
}
