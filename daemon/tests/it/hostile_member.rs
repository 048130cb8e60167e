//! A committee member gone bad, over real sockets: three `sibyl run`
//! processes sign while the test joins as the fourth member (with that
//! member's real identity key) and sends garbage and oversized messages.
//! Member 1 drops and counts every one of them (`/metrics`) and keeps signing.

use crate::common;

use common::{Members, last_round, spawn, wait_for};
use sibyl::cmd::devnet::http_get;
use sibyl_node::net::{Net, NetConfig};
use std::time::Duration;

/// Member `api`'s sample `name` (labels included); 0 before its first count.
fn metric(api: &str, name: &str) -> f64 {
    let text = http_get(&format!("{api}/metrics")).expect("GET /metrics");
    common::sample(&text, name).unwrap_or(0.0)
}

#[test]
fn garbage_and_oversized_messages_from_a_member_are_dropped_and_counted() {
    let _committee = crate::common::one_committee_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let net_dir = dir.path().join("devnet");
    let file = common::setup_devnet(&net_dir, 4);
    // Members 1..=3 run for real; the threshold is 3, so they sign alone.
    let _procs = Members(
        file.members[..3]
            .iter()
            .map(|m| Some(spawn(&m.config, &m.log)))
            .collect(),
    );
    let api = file.members[0].api_url.clone();
    wait_for("a signed report at member 1", 120, || {
        last_round(&api).is_some_and(|r| r >= 2)
    });

    // Member 4, played by this test with member 4's own identity key.
    let config =
        sibyl_node::config::Config::load(&file.members[3].config).expect("member 4 config");
    let pass = config.key_passphrase().expect("passphrase");
    let identity = config
        .keystore()
        .read_identity(&pass)
        .expect("member 4 identity");
    let mut net_config = NetConfig::from_node_config(&config, identity).expect("net config");
    let max = net_config.limits.max_message_bytes;
    // Our side must let an oversized message out so member 1's limit is tested.
    net_config.limits.max_message_bytes = max * 4;
    let rt = tokio::runtime::Runtime::new().unwrap();
    let garbage_before = metric(&api, "sibyl_messages_malformed_total");
    let oversized_before = metric(&api, "sibyl_net_dropped_total{reason=\"oversized\"}");
    rt.block_on(async {
        let mut net = Net::new(net_config).expect("member 4 network");
        // Wait until member 1 accepts the connection.
        tokio::time::timeout(Duration::from_secs(30), async {
            while !net.connected().contains(&1) {
                net.next_event().await;
            }
        })
        .await
        .expect("member 4 connects to member 1");
        let garbage: [&[u8]; 4] = [b"", b"\xff\xff\xff\xff", b"not an envelope", &[0u8; 300]];
        for g in garbage {
            net.send(1, g.to_vec()).expect("send garbage");
        }
        net.send(1, vec![7u8; max + 1024]).expect("send oversized");
        // Drive the swarm for a while so the messages go out.
        let _ = tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                net.next_event().await;
            }
        })
        .await;
    });

    wait_for("member 1 to count the garbage", 30, || {
        metric(&api, "sibyl_messages_malformed_total") >= garbage_before + 4.0
    });
    wait_for("member 1 to count the oversized message", 30, || {
        metric(&api, "sibyl_net_dropped_total{reason=\"oversized\"}") >= oversized_before + 1.0
    });
    // And it keeps signing.
    let now = last_round(&api).unwrap();
    wait_for("member 1 to sign on after the garbage", 60, || {
        last_round(&api).is_some_and(|r| r >= now + 2)
    });
}
