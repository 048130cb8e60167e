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
