//! `sibyl config check` as an operator runs it: the real binary on real files.

use std::path::Path;
use std::process::Command;

fn sibyl() -> Command {
    Command::new(env!("CARGO_BIN_EXE_sibyl"))
}

#[test]
fn example_configs_pass_the_check() {
    let node = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/examples/node.toml");
    let out = sibyl()
        .args(["config", "check", "--config"])
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
    // The same node.toml with a valid section passes.
    std::fs::write(dir.join("node.toml"), head("committee.toml") + feed).unwrap();
    let ok = sibyl()
        .args(["config", "check", "--config"])
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
