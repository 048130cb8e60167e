//! `sibyl sim-exchange` and `sibyl sources probe` as separate processes over
//! loopback: the operator's first check, end to end.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

struct Kill(Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

#[test]
fn probe_sees_every_source_of_a_simulated_exchange() {
    let sibyl = env!("CARGO_BIN_EXE_sibyl");
    let port = free_port();
    let mut child = Command::new(sibyl)
        .args([
            "sim-exchange",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--seed",
            "5",
            "--frozen",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn sim-exchange");
    // The first line announces the address once it is listening.
    let stdout = child.stdout.take().expect("stdout");
    let sim = Kill(child);
    let mut first = String::new();
    BufReader::new(stdout)
        .read_line(&mut first)
        .expect("read banner");
    assert!(first.contains(&format!("127.0.0.1:{port}")), "{first}");

    let dir = tempfile::tempdir().expect("tempdir");
    let example = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../docs/sources.sim.toml"
    ))
    .expect("example config");
    let config = dir.path().join("node.toml");
    std::fs::write(&config, example.replace("9100", &port.to_string())).expect("write config");

    let out = Command::new(sibyl)
        .args(["sources", "probe", "--config"])
        .arg(&config)
        .output()
        .expect("run probe");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "probe failed:\n{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for source in [
        "binance:BTCUSDT",
        "coinbase:BTC-USD",
        "kraken:XBTUSD",
        "okx:BTC-USDT",
        "kucoin:ETH-USDT",
    ] {
        let line = text
            .lines()
            .find(|l| l.contains(source))
            .unwrap_or_else(|| panic!("no {source} in\n{text}"));
        assert!(line.ends_with(" ok"), "{line}");
    }
    assert!(!text.contains("ERROR"), "{text}");
    assert!(!text.contains("NONE"), "{text}");

    // The same sources in a node.toml whose committee (the example) also
    // has SOL-USD, which no source observes: probe says so and fails.
    let committee = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../deploy/examples/committee.toml"
    ))
    .expect("example committee");
    std::fs::write(dir.path().join("committee.toml"), committee).expect("write committee");
    let sources = example
        .replace("9100", &port.to_string())
        .replace("[venues.", "[sources.venues.")
        .replace("[[feeds]]", "[[sources.feeds]]");
    let node = dir.path().join("member.toml");
    std::fs::write(
        &node,
        format!(
            "[node]\ncommittee = \"committee.toml\"\n[keys]\npassphrase_env = \"UNUSED\"\n[sources]\n{sources}"
        ),
    )
    .expect("write node.toml");
    let out = Command::new(sibyl)
        .args(["sources", "probe", "--config"])
        .arg(&node)
        .output()
        .expect("run probe");
    let text = String::from_utf8_lossy(&out.stdout);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "probe passed:\n{text}");
    assert!(
        text.lines().any(
            |l| l.starts_with("SOL-USD") && l.contains("NONE: a committee feed with no source")
        ),
        "{text}"
    );
    assert!(err.contains("1 feed(s) have no observation"), "{err}");
    assert!(err.contains("SOL-USD"), "{err}");

    // Against a port nobody listens on, probe fails and says which feeds lack an observation.
    drop(sim);
    std::thread::sleep(Duration::from_millis(100));
    let out = Command::new(sibyl)
        .args(["sources", "probe", "--config"])
        .arg(&config)
        .output()
        .expect("run probe");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("have no observation"), "{err}");
}
