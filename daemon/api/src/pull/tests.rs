//! Pull payloads over real HTTP against a real SQLite store holding the
//! protocol's report vectors (real FROST secp256k1-evm signatures).

use super::super::*;
use alloy_sol_types::SolCall;
use serde_json::Value;
use sibyl_aggregator::{ConfigDigest, SignedReport, Suite, merkle};
use sibyl_chain::abi::{self, EvmGroupKey, submitFeedsCall};
use sibyl_node::store::Store;
use std::net::SocketAddr;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const VECTORS: &str = include_str!("../../../../aggregator/vectors/report_vectors.json");

fn vectors() -> Value {
    serde_json::from_str(VECTORS).expect("vectors parse")
}

fn unhex(s: &str) -> Vec<u8> {
    hex::decode(s.trim_start_matches("0x")).expect("hex")
}

/// The vector case `name` as a stored report.
fn case(v: &Value, name: &str) -> (SignedReport, Value) {
    let c = v["cases"]
        .as_array()
        .expect("cases")
        .iter()
        .find(|c| c["name"] == name)
        .expect("case")
        .clone();
    let digest: [u8; 32] = unhex(c["header"]["config_digest"].as_str().expect("digest"))
        .try_into()
        .expect("32 bytes");
    let wire = unhex(c["report_wire"].as_str().expect("wire"));
    let report = SignedReport::decode_expecting(&wire, &ConfigDigest(digest)).expect("decode");
    (report, c)
}

fn group_key(v: &Value) -> EvmGroupKey {
    let k = unhex(
        v["committee"]["secp256k1_evm"]["group_public_key"]
            .as_str()
            .expect("key"),
    );
    EvmGroupKey::from_compressed(&k).expect("valid key")
}

struct Harness {
    addr: SocketAddr,
    _dir: tempfile::TempDir,
}

async fn start(evm: Option<EvmPull>, reports: Vec<SignedReport>) -> Harness {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(&dir.path().join("pull.db")).expect("store");
    for r in reports {
        store.writer.insert_report(r).await.expect("insert");
    }
    let (reports, _) = broadcast::channel(4);
    let (_tx, committee) = watch::channel(CommitteeStatus::default());
    let mut feeds = BTreeMap::new();
    for id in ["BTC-USD", "ETH-USD", "WTI-SPREAD", "DOGE-USD"] {
        feeds.insert(
            FeedId::new(id).expect("id"),
            FeedInfo {
                decimals: 8,
                ..FeedInfo::default()
            },
        );
    }
    let state = ApiState::new(ApiParts {
        store: std::sync::Arc::new(store.readers.clone()),
        writer: None,
        margin: None,
        reports,
        committee,
        registry: Registry::default(),
        config: ApiConfig {
            feeds,
            evm,
            ..ApiConfig::default()
        },
    });
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(serve(listener, state));
    Harness { addr, _dir: dir }
}

async fn get(addr: SocketAddr, path: &str) -> (u16, Value) {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.expect("write");
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.expect("read");
    let text = String::from_utf8_lossy(&buf).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").expect("response");
    let status: u16 = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status");
    // axum answers JSON with Content-Length, no chunking
    (status, serde_json::from_str(body).unwrap_or(Value::Null))
}

fn evm_pull(v: &Value) -> EvmPull {
    EvmPull {
        group_key: group_key(v),
        contract: Some("0x5fbdb2315678afecb367f032d93f642f64180aa3".into()),
        chain_id: Some(31337),
    }
}

#[tokio::test]
async fn single_feed_update_carries_the_vector_signature_proof_and_calldata() {
    let v = vectors();
    let (three, c) = case(&v, "three-feeds-odd-promotion");
    let (twelve, _) = case(&v, "twelve-feeds");
    let h = start(Some(evm_pull(&v)), vec![three.clone(), twelve]).await;

    let (status, body) = get(h.addr, "/v1/feeds/ETH-USD/update").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["round"], 2);
    assert_eq!(body["feeds"], serde_json::json!(["ETH-USD"]));
    assert_eq!(body["function"], abi::SUBMIT_FEEDS_SIGNATURE);
    assert_eq!(
        body["contract"],
        "0x5fbdb2315678afecb367f032d93f642f64180aa3"
    );
    let evm = &c["signatures"]["secp256k1_evm"];
    let sig = &body["signature"];
    assert_eq!(sig["rx"], evm["r_x"]);
    assert_eq!(sig["ry"], evm["r_y"]);
    assert_eq!(sig["z"], evm["z"]);
    assert_eq!(
        sig["group_key_x"],
        v["committee"]["secp256k1_evm"]["public_key_x"]
    );
    assert_eq!(body["header_abi"], c["header_abi"]);
    assert_eq!(body["digest"], c["digest"]);
    let leaf = &body["leaves"][0];
    assert_eq!(leaf["leaf_index"], 1);
    assert_eq!(leaf["proof"], c["proofs"][1]["siblings"]);
    assert_eq!(leaf["leaf_abi"], c["leaf_abi"][1]);
    assert_eq!(leaf["price"], "251234500000");

    // The calldata decodes to exactly those fields, and its proof leads to the signed root.
    let calldata = unhex(body["calldata"].as_str().expect("calldata"));
    assert_eq!(
        hex::encode(&calldata[..4]),
        body["selector"].as_str().expect("sel")[2..]
    );
    let call = submitFeedsCall::abi_decode(&calldata).expect("calldata decodes");
    // The payload (for updateFeeds / SibylPull) carries the same header fields, signature,
    // leaf and proof, packed.
    let payload = unhex(body["payload"].as_str().expect("payload"));
    let packed = abi::decode_pull_payload(&payload).expect("payload decodes");
    assert_eq!(packed.round, call.header.round);
    assert_eq!(packed.config_digest, call.header.configDigest.0);
    assert_eq!(packed.timestamp_ms, call.header.timestampMs);
    assert_eq!(packed.margin_root, call.header.marginRoot.0);
    assert_eq!(packed.signature, call.signature);
    assert_eq!(packed.leaves.len(), 1);
    assert_eq!(packed.leaves[0].0, three.leaves[1]);
    assert_eq!(
        packed.leaves[0].1,
        call.proofs[0].iter().map(|b| b.0).collect::<Vec<_>>()
    );
    assert!(payload.len() < calldata.len() / 2 + 64, "packed");
    assert_eq!(call.header.round, 2);
    assert_eq!(call.header.merkleRoot.0, three.header.merkle_root);
    assert_eq!(call.leaves.len(), 1);
    assert_eq!(call.leaves[0], abi::leaf(&three.leaves[1]));
    let proof = merkle::MerkleProof {
        leaf_index: 1,
        leaf_count: 3,
        siblings: call.proofs[0].iter().map(|b| b.0).collect(),
    };
    assert!(merkle::verify_proof(
        &merkle::leaf_hash(&three.leaves[1]),
        &proof,
        &three.header.merkle_root
    ));
}

#[tokio::test]
async fn batch_groups_feeds_by_report() {
    let v = vectors();
    let (three, _) = case(&v, "three-feeds-odd-promotion");
    let (twelve, _) = case(&v, "twelve-feeds");
    let h = start(Some(evm_pull(&v)), vec![three, twelve]).await;

    let (status, body) = get(
        h.addr,
        "/v1/feeds/update?ids=FEED-00003,BTC-USD,WTI-SPREAD,BTC-USD",
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let updates = body["updates"].as_array().expect("updates");
    assert_eq!(updates.len(), 2, "{body}");
    assert_eq!(updates[0]["round"], 2);
    assert_eq!(
        updates[0]["feeds"],
        serde_json::json!(["BTC-USD", "WTI-SPREAD"])
    );
    assert_eq!(updates[1]["round"], 1_000_003);
    assert_eq!(updates[1]["feeds"], serde_json::json!(["FEED-00003"]));
    let call =
        submitFeedsCall::abi_decode(&unhex(updates[0]["calldata"].as_str().expect("calldata")))
            .expect("decodes");
    assert_eq!(call.leaves.len(), 2);
    assert_eq!(call.proofs.len(), 2);

    for (path, code) in [
        ("/v1/feeds/update", "bad_parameter"),
        ("/v1/feeds/update?ids=", "bad_parameter"),
        ("/v1/feeds/update?ids=BTC-USD&x=1", "bad_parameter"),
        ("/v1/feeds/update?ids=btc-usd", "bad_feed_id"),
    ] {
        let (status, body) = get(h.addr, path).await;
        assert_eq!(status, 400, "{path}: {body}");
        assert_eq!(body["error"]["code"], code, "{path}");
    }
    let (status, body) = get(h.addr, "/v1/feeds/update?ids=BTC-USD,NOPE-USD").await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (404, Some("unknown_feed"))
    );
    assert!(
        body["error"]["message"]
            .as_str()
            .expect("msg")
            .contains("NOPE-USD")
    );
}

#[tokio::test]
async fn clear_errors_without_the_evm_suite_feed_or_data() {
    let v = vectors();
    let (three, _) = case(&v, "three-feeds-odd-promotion");
    let mut ed_only = three.clone();
    ed_only.header.round = 3;
    ed_only.header.timestamp_ms += 1_000;
    ed_only.leaves.truncate(1); // BTC-USD only
    ed_only.header.merkle_root = merkle::root(&ed_only.leaves);
    ed_only.signatures.remove(&Suite::Secp256k1Evm);

    // A committee without secp256k1-evm: the routes say so.
    let h = start(None, vec![three.clone()]).await;
    let (status, body) = get(h.addr, "/v1/feeds/BTC-USD/update").await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (404, Some("no_evm_suite"))
    );
    assert!(
        body["error"]["message"]
            .as_str()
            .expect("msg")
            .contains("suites")
    );
    let (status, body) = get(h.addr, "/v1/feeds/update?ids=BTC-USD").await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (404, Some("no_evm_suite"))
    );

    let h = start(Some(evm_pull(&v)), vec![three, ed_only]).await;
    let (status, body) = get(h.addr, "/v1/feeds/NOPE-USD/update").await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (404, Some("unknown_feed"))
    );
    let (status, body) = get(h.addr, "/v1/feeds/bad%20id/update").await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("bad_feed_id"))
    );
    let (status, body) = get(h.addr, "/v1/feeds/DOGE-USD/update").await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (404, Some("no_data"))
    );
    // BTC-USD's latest report (round 3) has only an ed25519 signature.
    let (status, body) = get(h.addr, "/v1/feeds/BTC-USD/update").await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (404, Some("no_evm_signature")),
        "{body}"
    );
    // ETH-USD's latest value is still in round 2, which is EVM-signed.
    let (status, body) = get(h.addr, "/v1/feeds/ETH-USD/update").await;
    assert_eq!(status, 200, "{body}");
}
