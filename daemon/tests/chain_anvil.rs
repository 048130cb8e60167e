//! The API's pull payloads against the real contract on a real anvil: the
//! calldata from `GET /v1/feeds/{id}/update` and `GET /v1/feeds/update` is
//! sent with `cast send --data` and the stored values read back.
//!
//! Needs anvil/cast/forge from scripts/setup.d/20-contracts, so it is
//! `#[ignore]`d in plain `cargo test` and run by scripts/test.d/22-chain,
//! where a missing tool fails the test.

use serde_json::Value;
use sibyl::api::{ApiConfig, ApiParts, ApiState, CommitteeStatus, EvmPull, FeedInfo, serve};
use sibyl::chain::abi::EvmGroupKey;
use sibyl::chain::devchain::{self, ANVIL_KEY_0, Anvil, DeployParams};
use sibyl::store::Store;
use sibyl_aggregator::{ConfigDigest, FeedId, SignedReport};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("repo root")
        .to_path_buf()
}

fn unhex(s: &str) -> Vec<u8> {
    hex::decode(s.trim_start_matches("0x")).expect("hex")
}

fn b32(s: &str) -> [u8; 32] {
    unhex(s).try_into().expect("32 bytes")
}

fn vectors() -> Value {
    let text = std::fs::read_to_string(root().join("aggregator/vectors/report_vectors.json"))
        .expect("vectors");
    serde_json::from_str(&text).expect("vectors parse")
}

fn case(v: &Value, name: &str) -> SignedReport {
    let c = v["cases"]
        .as_array()
        .expect("cases")
        .iter()
        .find(|c| c["name"] == name)
        .expect("case");
    let digest = b32(c["header"]["config_digest"].as_str().expect("digest"));
    SignedReport::decode_expecting(
        &unhex(c["report_wire"].as_str().expect("wire")),
        &ConfigDigest(digest),
    )
    .expect("decode")
}

async fn get(addr: SocketAddr, path: &str) -> (u16, Value) {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.expect("write");
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.expect("read");
    let text = String::from_utf8_lossy(&buf).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").expect("response");
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status");
    (status, serde_json::from_str(body).unwrap_or(Value::Null))
}

fn cast(contracts: &std::path::Path, args: &[&str]) -> String {
    let out = Command::new(contracts.join("tools/cast"))
        .args(args)
        .output()
        .expect("run cast");
    assert!(
        out.status.success(),
        "cast {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Sends calldata to `to`; returns the receipt's gasUsed.
fn send(contracts: &std::path::Path, rpc: &str, to: &str, calldata: &str) -> u64 {
    let receipt: Value = serde_json::from_str(&cast(
        contracts,
        &[
            "send",
            "--rpc-url",
            rpc,
            "--private-key",
            ANVIL_KEY_0,
            "--json",
            to,
            "--data",
            calldata,
        ],
    ))
    .expect("receipt JSON");
    assert_eq!(receipt["status"], "0x1", "reverted: {receipt}");
    u64::from_str_radix(
        receipt["gasUsed"]
            .as_str()
            .expect("gasUsed")
            .trim_start_matches("0x"),
        16,
    )
    .expect("gas")
}

/// `latestFeed(feedId)` -> (price, confidence, timestampMs, round) as decimal strings.
fn latest_feed(contracts: &std::path::Path, rpc: &str, feed: &str, id: &str) -> Vec<String> {
    let id32 = format!(
        "0x{}",
        hex::encode(FeedId::new(id).expect("id").to_bytes32())
    );
    cast(
        contracts,
        &[
            "call",
            "--rpc-url",
            rpc,
            feed,
            "latestFeed(bytes32)(int256,uint256,uint64,uint64)",
            &id32,
        ],
    )
    .lines()
    .map(|l| l.split_whitespace().next().unwrap_or("").to_string())
    .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs anvil and cast (scripts/setup.d/20-contracts); run by scripts/test.d/22-chain"]
async fn pull_payload_calldata_lands_on_the_contract() {
    let contracts = devchain::find_contracts_dir().expect("contracts dir");
    let dir = tempfile::tempdir().expect("tempdir");
    let anvil = Anvil::start(&contracts, 0, None, &dir.path().join("anvil.log"))
        .expect("anvil starts (tools from scripts/setup.d/20-contracts)");
    let rpc = anvil.rpc_url.clone();

    let v = vectors();
    let evm = &v["committee"]["secp256k1_evm"];
    let three = case(&v, "three-feeds-odd-promotion");
    let twelve = case(&v, "twelve-feeds");
    let group_key =
        EvmGroupKey::from_compressed(&unhex(evm["group_public_key"].as_str().expect("key")))
            .expect("group key");
    let deployment = devchain::deploy(
        &contracts,
        &DeployParams {
            rpc_url: &rpc,
            private_key: ANVIL_KEY_0,
            config_digest: three.header.config_digest.0,
            group_key_x: group_key.x,
            group_key_y: group_key.y,
            feeds: vec![("BTC-USD".into(), 8), ("FEED-00003".into(), 8)],
            max_drift_ms: 5_000,
        },
    )
    .expect("deploy");

    // The API over a store holding two vector reports.
    let store = Store::open(&dir.path().join("api.db")).expect("store");
    for r in [three.clone(), twelve.clone()] {
        store.writer.insert_report(r).await.expect("insert");
    }
    let (reports, _) = tokio::sync::broadcast::channel(4);
    let (_tx, committee) = tokio::sync::watch::channel(CommitteeStatus::default());
    let mut feeds = BTreeMap::new();
    for f in &three.leaves {
        feeds.insert(f.feed_id.clone(), FeedInfo { decimals: 8 });
    }
    let state = ApiState::new(ApiParts {
        readers: store.readers.clone(),
        writer: None,
        margin: None,
        reports,
        committee,
        registry: Default::default(),
        config: ApiConfig {
            feeds,
            evm: Some(EvmPull {
                group_key,
                contract: Some(deployment.feed.clone()),
                chain_id: Some(deployment.chain_id),
            }),
            ..ApiConfig::default()
        },
    });
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(serve(listener, state));

    // One feed.
    let (status, update) = get(addr, "/v1/feeds/ETH-USD/update").await;
    assert_eq!(status, 200, "{update}");
    assert_eq!(update["contract"], deployment.feed.as_str());
    let gas_one = send(
        &contracts,
        &rpc,
        &deployment.feed,
        update["calldata"].as_str().expect("calldata"),
    );
    let got = latest_feed(&contracts, &rpc, &deployment.feed, "ETH-USD");
    let eth = &three.leaves[1];
    assert_eq!(
        got,
        vec![
            eth.price.to_string(),
            eth.confidence.to_string(),
            three.header.timestamp_ms.to_string(),
            three.header.round.to_string()
        ]
    );
    // The same payload again is stale: the contract refuses a replay.
    let replay = Command::new(contracts.join("tools/cast"))
        .args(["call", "--rpc-url", &rpc, &deployment.feed, "--data"])
        .arg(update["calldata"].as_str().expect("calldata"))
        .output()
        .expect("cast call");
    assert!(
        !replay.status.success(),
        "a replayed pull payload was accepted"
    );

    // A batch over two reports: one transaction per report.
    let (status, body) = get(addr, "/v1/feeds/update?ids=BTC-USD,WTI-SPREAD,FEED-00003").await;
    assert_eq!(status, 200, "{body}");
    let updates = body["updates"].as_array().expect("updates");
    assert_eq!(updates.len(), 2);
    let mut gas = Vec::new();
    for u in updates {
        gas.push(send(
            &contracts,
            &rpc,
            &deployment.feed,
            u["calldata"].as_str().expect("calldata"),
        ));
    }
    for (id, report, index) in [
        ("BTC-USD", &three, 0),
        ("WTI-SPREAD", &three, 2),
        ("FEED-00003", &twelve, 3),
    ] {
        let leaf = &report.leaves[index];
        assert_eq!(leaf.feed_id.as_str(), id);
        let got = latest_feed(&contracts, &rpc, &deployment.feed, id);
        assert_eq!(got[0], leaf.price.to_string(), "{id}");
        assert_eq!(got[3], report.header.round.to_string(), "{id}");
    }
    // Chainlink's interface on the BTC-USD adapter reads the pulled value.
    let out = cast(
        &contracts,
        &[
            "call",
            "--rpc-url",
            &rpc,
            &deployment.adapters["BTC-USD"],
            "latestRoundData()(uint80,int256,uint256,uint256,uint80)",
        ],
    );
    let words: Vec<&str> = out
        .lines()
        .map(|l| l.split_whitespace().next().unwrap_or(""))
        .collect();
    assert_eq!(words[0], three.header.round.to_string());
    assert_eq!(words[1], three.leaves[0].price.to_string());
    assert_eq!(words[3], (three.header.timestamp_ms / 1000).to_string());
    println!(
        "gas: pull ETH-USD (1 of 3 feeds, fresh slot) {gas_one}; batch BTC-USD+WTI-SPREAD {}; FEED-00003 (1 of 12) {}",
        gas[0], gas[1]
    );
    drop(anvil);
}
