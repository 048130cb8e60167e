//! The API's pull payloads against the real contract on a real anvil: the
//! calldata from `GET /v1/feeds/{id}/update` and `GET /v1/feeds/update` is
//! sent with `cast send --data` and the stored values read back.
//!
//! Needs anvil/cast/forge from scripts/setup.d/20-contracts, so this target
//! has `test = false` (not part of a plain `cargo test`) and runs by name
//! from scripts/test.d/22-chain, where a missing tool fails the test:
//!     cargo test -p sibyl --test chain_anvil -- --test-threads 1

use serde_json::Value;
use sibyl_aggregator::{ConfigDigest, FeedId, SignedReport};
use sibyl_api::{ApiConfig, ApiParts, ApiState, CommitteeStatus, EvmPull, FeedInfo, serve};
use sibyl_chain::abi::EvmGroupKey;
use sibyl_chain::devchain::{self, ANVIL_KEY_0, Anvil, DeployParams};
use sibyl_node::store::Store;
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
            feeds: vec![
                ("BTC-USD".into(), 8),
                ("ETH-USD".into(), 8),
                ("FEED-00003".into(), 8),
                ("WTI-SPREAD".into(), 8),
            ],
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
        feeds.insert(
            f.feed_id.clone(),
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
            "1".to_string() // the feed's first round id
        ]
    );
    // The same payload again is stale: its leaf is skipped (no revert), nothing changes.
    send(
        &contracts,
        &rpc,
        &deployment.feed,
        update["calldata"].as_str().expect("calldata"),
    );
    assert_eq!(
        latest_feed(&contracts, &rpc, &deployment.feed, "ETH-USD")[3],
        "1",
        "a replayed pull payload changed the feed"
    );

    // A batch over two reports: one transaction per report, through the packed
    // `payload` and updateFeeds(bytes) (the SibylPull library calls the same function
    // as updateFeeds_kxYh(bytes), a selector the contract's dispatcher finds first).
    let (status, body) = get(addr, "/v1/feeds/update?ids=BTC-USD,WTI-SPREAD,FEED-00003").await;
    assert_eq!(status, 200, "{body}");
    let updates = body["updates"].as_array().expect("updates");
    assert_eq!(updates.len(), 2);
    let mut gas = Vec::new();
    for u in updates {
        let call = cast(
            &contracts,
            &[
                "calldata",
                "updateFeeds(bytes)",
                u["payload"].as_str().expect("payload"),
            ],
        );
        gas.push(send(&contracts, &rpc, &deployment.feed, &call));
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
        assert_eq!(got[2], report.header.timestamp_ms.to_string(), "{id}");
        assert_eq!(got[3], "1", "{id}: the feed's first round id");
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
    assert_eq!(words[0], "1");
    assert_eq!(words[1], three.leaves[0].price.to_string());
    assert_eq!(words[3], (three.header.timestamp_ms / 1000).to_string());
    println!(
        "gas: pull ETH-USD (1 of 3 feeds, fresh slot, submitFeeds) {gas_one}; updateFeeds(payload) BTC-USD+WTI-SPREAD {}; FEED-00003 (1 of 12) {}",
        gas[0], gas[1]
    );
    drop(anvil);
}

/// Stops a `sibyl devnet` (SIGINT, as Ctrl-C) when dropped, so a failing
/// test leaves no members or anvil behind.
struct Devnet(std::process::Child);

impl Drop for Devnet {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-INT", &self.0.id().to_string()])
            .status();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while std::time::Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn http_json(url: &str) -> Option<Value> {
    sibyl::cmd::devnet::http_get(url)
        .ok()
        .and_then(|b| serde_json::from_str(&b).ok())
}

fn wait_for<T>(what: &str, secs: u64, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "timed out after {secs}s waiting for {what}"
        );
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
}

/// Deploys a contract that forge compiled into `contracts/out` (`file`, `name`)
/// with `cast send --create`; returns its address.
fn create(contracts: &std::path::Path, rpc: &str, file: &str, name: &str, ctor: &[&str]) -> String {
    let artifact: Value = serde_json::from_str(
        &std::fs::read_to_string(contracts.join(format!("out/{file}/{name}.json")))
            .expect("forge artifact (forge build)"),
    )
    .expect("artifact JSON");
    let code = artifact["bytecode"]["object"].as_str().expect("bytecode");
    let args = cast(contracts, &[&["abi-encode"], ctor].concat());
    let receipt: Value = serde_json::from_str(&cast(
        contracts,
        &[
            "send",
            "--rpc-url",
            rpc,
            "--private-key",
            ANVIL_KEY_0,
            "--json",
            "--create",
            &format!("{code}{}", args.trim_start_matches("0x")),
        ],
    ))
    .expect("receipt");
    receipt["contractAddress"]
        .as_str()
        .expect("contract address")
        .to_string()
}

/// Chainlink-only consumers (contracts/test/consumers) read the live pushes on
/// `adapter`: latestRoundData only, the legacy latestAnswer, and one that
/// checks the previous round. Prints the gas of each adapter read.
fn chainlink_consumers_read_live_pushes(contracts: &std::path::Path, rpc: &str, adapter: &str) {
    let file = "ChainlinkConsumers.sol";
    let latest = create(
        contracts,
        rpc,
        file,
        "LatestRoundConsumer",
        &["constructor(address)", adapter],
    );
    let legacy = create(
        contracts,
        rpc,
        file,
        "LegacyConsumer",
        &["constructor(address)", adapter],
    );
    // the previous-round consumer checks at construction that round id - 1 exists
    wait_for("a second push on the adapter", 180, || {
        let w = words(&cast(
            contracts,
            &["call", "--rpc-url", rpc, adapter, "latestRound()(uint256)"],
        ));
        (w.first()?.parse::<u64>().ok()? >= 2).then_some(())
    });
    let previous = create(
        contracts,
        rpc,
        file,
        "PreviousRoundConsumer",
        &[
            "constructor(address,uint256,uint256)",
            adapter,
            "3600",
            "10000",
        ],
    );
    let answer = words(&cast(
        contracts,
        &[
            "call",
            "--rpc-url",
            rpc,
            &latest,
            "price(uint256)(int256,uint8)",
            "3600",
        ],
    ));
    let legacy_answer = words(&cast(
        contracts,
        &["call", "--rpc-url", rpc, &legacy, "price()(int256)"],
    ));
    let scaled = words(&cast(
        contracts,
        &["call", "--rpc-url", rpc, &previous, "price()(uint256)"],
    ));
    assert_eq!(answer[1], "8", "decimals");
    assert!(answer[0].parse::<i128>().expect("answer") > 0);
    assert!(legacy_answer[0].parse::<i128>().expect("legacy answer") > 0);
    assert!(scaled[0].parse::<u128>().expect("scaled") > 0);
    let mut gas = Vec::new();
    for read in [
        "latestRoundData()",
        "latestAnswer()",
        "latestTimestamp()",
        "latestRound()",
        "decimals()",
    ] {
        let g = cast(contracts, &["estimate", "--rpc-url", rpc, adapter, read]);
        gas.push(format!("{read} {g}"));
    }
    println!(
        "chainlink consumers on live pushes: latestRoundData {} ({} decimals), latestAnswer {}, previous-round check {} (1e18); adapter reads as transactions: {}",
        answer[0],
        answer[1],
        legacy_answer[0],
        scaled[0],
        gas.join(", ")
    );
}

fn words(out: &str) -> Vec<String> {
    out.lines()
        .map(|l| l.split_whitespace().next().unwrap_or("").to_string())
        .collect()
}

fn hex_u64(v: &Value) -> u64 {
    u64::from_str_radix(v.as_str().unwrap_or("0x0").trim_start_matches("0x"), 16).unwrap_or(0)
}

/// `sibyl devnet --chain`: the members' transmitters push the committee's
/// secp256k1-evm reports; `latestRoundData` on the BTC-USD adapter must equal
/// the latest signed report the API serves, normally with one transaction
/// per update. The API's pull payload of a live report lands on a second
/// deployment of the contract.
#[test]
fn devnet_chain_pushes_reports_that_match_the_api() {
    let contracts = devchain::find_contracts_dir().expect("contracts dir");
    devchain::tool(&contracts, "anvil").expect("anvil (scripts/setup.d/20-contracts)");
    devchain::tool(&contracts, "forge").expect("forge (scripts/setup.d/20-contracts)");
    let dir = tempfile::tempdir().expect("tempdir");
    let net = dir.path().join("devnet");
    let log = std::fs::File::create(dir.path().join("devnet.out")).expect("log");
    let child = Command::new(env!("CARGO_BIN_EXE_sibyl"))
        .args(["devnet", "--chain", "--nodes", "4", "--builtin-source"])
        .args(["--duration", "300s", "--dir"])
        .arg(&net)
        .env("SIBYL_CONTRACTS_DIR", &contracts)
        .stdout(log.try_clone().expect("log"))
        .stderr(log)
        .spawn()
        .expect("start sibyl devnet --chain");
    let devnet = Devnet(child);
    let file: Value = wait_for("devnet.json with the chain", 180, || {
        let v: Value =
            serde_json::from_str(&std::fs::read_to_string(net.join("devnet.json")).ok()?).ok()?;
        v["chain"]["feed"].is_string().then_some(v)
    });
    let chain = &file["chain"];
    let rpc = chain["rpc_url"].as_str().expect("rpc").to_string();
    let feed = chain["feed"].as_str().expect("feed").to_string();
    let btc = chain["adapters"]["BTC-USD"]
        .as_str()
        .expect("BTC-USD adapter")
        .to_string();
    let api = file["members"][0]["api_url"]
        .as_str()
        .expect("api")
        .to_string();
    assert_eq!(file["suite"], "secp256k1-evm");

    // latestRoundData is a signed report the API serves (same price and
    // time as the API's history point of that report), a few rounds in, and
    // not far behind the API's latest. Compared through the history, not
    // with the API's latest at the instant of the poll: a push lands a
    // little after its report, and on a loaded machine the next report can
    // come before it (the API is then always one report ahead).
    let first_round = wait_for("a first signed report", 120, || {
        http_json(&format!("{api}/v1/feeds/BTC-USD/latest"))?["round"].as_u64()
    });
    let (matched_round, answer) = wait_for("the adapter to show a report of the API", 90, || {
        let out = Command::new(contracts.join("tools/cast"))
            .args(["call", "--rpc-url", &rpc, &btc])
            .arg("latestRoundData()(uint80,int256,uint256,uint256,uint80)")
            .output()
            .ok()?;
        if !out.status.success() {
            return None; // NoDataPresent before the first push
        }
        let w = words(&String::from_utf8_lossy(&out.stdout));
        // roundId is the feed's own counter (1 at its first push), not the committee's round
        if w.first()? == "0" || w.get(4)? != w.first()? {
            return None;
        }
        let updated: u64 = w.get(3)?.parse().ok()?;
        let history = http_json(&format!(
            "{api}/v1/feeds/BTC-USD/history?from={}&to={}",
            updated * 1000,
            updated * 1000 + 999
        ))?;
        let point = history["points"].as_array()?.iter().find(|p| {
            p["price"].as_str() == w.get(1).map(String::as_str)
                && p["timestamp_ms"].as_u64().map(|t| t / 1000) == Some(updated)
        })?;
        let round = point["round"].as_u64()?;
        let latest = http_json(&format!("{api}/v1/feeds/BTC-USD/latest"))?["round"].as_u64()?;
        // a few rounds in, so that several updates have gone through the schedule
        (round >= first_round + 10 && latest.saturating_sub(round) <= 20)
            .then(|| (round, w[1].clone()))
    });
    assert!(
        matched_round <= first_round + 60,
        "the chain caught up only at round {matched_round} (first report {first_round})"
    );
    println!(
        "latestRoundData on BTC-USD = the API's report of round {matched_round}: answer {answer}"
    );
    chainlink_consumers_read_live_pushes(&contracts, &rpc, &btc);

    // The API's pull payload of a live report, on a second deployment of the contract.
    let digest = b32(file["config_digest"].as_str().expect("digest"));
    let key = EvmGroupKey::from_compressed(&unhex(file["group_key"].as_str().expect("key")))
        .expect("group key");
    let second = devchain::deploy(
        &contracts,
        &DeployParams {
            rpc_url: &rpc,
            private_key: ANVIL_KEY_0,
            config_digest: digest,
            group_key_x: key.x,
            group_key_y: key.y,
            feeds: vec![("BTC-USD".into(), 8)],
            max_drift_ms: 5_000,
        },
    )
    .expect("second deployment");
    let update = http_json(&format!("{api}/v1/feeds/BTC-USD/update")).expect("pull payload");
    assert_eq!(update["contract"], feed.to_lowercase());
    let pull_gas = send(
        &contracts,
        &rpc,
        &second.feed,
        update["calldata"].as_str().expect("calldata"),
    );
    let got = latest_feed(&contracts, &rpc, &second.feed, "BTC-USD");
    assert_eq!(
        got[0],
        update["leaves"][0]["price"].as_str().expect("price")
    );
    assert_eq!(
        got[3], "1",
        "the second deployment's first BTC-USD round id"
    );

    // Transactions to the feed contract per update, and their gas.
    let head: u64 = cast(&contracts, &["block-number", "--rpc-url", &rpc])
        .parse()
        .expect("block number");
    let mut per_round: BTreeMap<u64, Vec<(u64, bool, usize)>> = BTreeMap::new();
    for n in 1..=head {
        let block: Value = serde_json::from_str(&cast(
            &contracts,
            &[
                "block",
                &n.to_string(),
                "--full",
                "--json",
                "--rpc-url",
                &rpc,
            ],
        ))
        .expect("block JSON");
        for tx in block["transactions"].as_array().into_iter().flatten() {
            if tx["to"].as_str().map(str::to_lowercase) != Some(feed.to_lowercase()) {
                continue;
            }
            let input = unhex(tx["input"].as_str().expect("input"));
            let (round, feeds) = if let Ok(c) =
                <sibyl_chain::abi::submitReportCall as alloy_sol_types::SolCall>::abi_decode(&input)
            {
                (c.meta.round, c.leaves.len())
            } else if let Ok(c) =
                <sibyl_chain::abi::submitFeedsCall as alloy_sol_types::SolCall>::abi_decode(&input)
            {
                (c.header.round, c.leaves.len())
            } else {
                panic!("a transaction to the feed contract that is neither update call")
            };
            let receipt: Value = serde_json::from_str(&cast(
                &contracts,
                &[
                    "receipt",
                    tx["hash"].as_str().expect("hash"),
                    "--json",
                    "--rpc-url",
                    &rpc,
                ],
            ))
            .expect("receipt JSON");
            per_round.entry(round).or_default().push((
                hex_u64(&receipt["gasUsed"]),
                receipt["status"] == "0x1",
                feeds,
            ));
        }
    }
    // The members' transmitter metrics account for those transactions.
    let (mut sent, mut confirmed, mut gas_metric, mut warn_level) = (0u64, 0u64, 0u64, 0u64);
    for m in file["members"].as_array().expect("members") {
        let url = format!("{}/metrics", m["api_url"].as_str().expect("api"));
        let text = sibyl::cmd::devnet::http_get(&url).expect("metrics");
        let metric = |name: &str| -> u64 {
            text.lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse::<f64>().ok())
                .unwrap_or_else(|| panic!("{name} missing from {url}")) as u64
        };
        sent += metric("sibyl_chain_tx_sent_total");
        confirmed += metric("sibyl_chain_tx_confirmed_total");
        gas_metric += metric("sibyl_chain_gas_used_total");
        assert!(metric("sibyl_chain_balance_wei") > 0, "no balance in {url}");
        warn_level += metric("sibyl_chain_balance_warn_wei");
    }
    drop(devnet);
    assert!(confirmed >= 1 && sent >= confirmed && gas_metric > 0 && warn_level > 0);
    println!(
        "transmitter metrics (all members): sent {sent}, confirmed {confirmed}, gas used {gas_metric}"
    );
    let updates = per_round.len();
    let txs: usize = per_round.values().map(Vec::len).sum();
    let landed: Vec<u64> = per_round
        .values()
        .flatten()
        .filter(|(_, ok, _)| *ok)
        .map(|(g, _, _)| *g)
        .collect();
    assert!(updates >= 3, "only {updates} updates landed");
    for (round, txs) in &per_round {
        assert_eq!(
            txs.iter().filter(|(_, ok, _)| *ok).count(),
            1,
            "round {round}: {txs:?}"
        );
    }
    // The first push fills fresh storage slots; steady state is the rest.
    let steady = &landed[1..];
    let avg = steady.iter().sum::<u64>() / steady.len().max(1) as u64;
    println!(
        "devnet --chain: {updates} updates, {txs} transactions ({:.2} per update); gas per update: first {} (fresh slots), steady min {} avg {avg} max {} ({} feeds per report); pull submitFeeds of one live feed {pull_gas}",
        txs as f64 / updates as f64,
        landed[0],
        steady.iter().min().copied().unwrap_or(0),
        steady.iter().max().copied().unwrap_or(0),
        per_round
            .values()
            .next()
            .and_then(|v| v.first())
            .map_or(0, |t| t.2),
    );
}

/// `sibyl devnet --chain --suites ed25519,secp256k1-evm`: one committee
/// signs every report with both suites. The transmitters push its
/// secp256k1-evm signature to the contract (the BTC-USD adapter reaches the
/// API's latest report), the API's pull payload names the contract, and
/// the very reports the chain took verify under the ed25519 group key too.
#[test]
fn devnet_chain_with_both_suites_pushes_and_keeps_ed25519() {
    let contracts = devchain::find_contracts_dir().expect("contracts dir");
    devchain::tool(&contracts, "anvil").expect("anvil (scripts/setup.d/20-contracts)");
    devchain::tool(&contracts, "forge").expect("forge (scripts/setup.d/20-contracts)");
    let dir = tempfile::tempdir().expect("tempdir");
    let net = dir.path().join("devnet");
    let log = std::fs::File::create(dir.path().join("devnet.out")).expect("log");
    let child = Command::new(env!("CARGO_BIN_EXE_sibyl"))
        .args(["devnet", "--chain", "--nodes", "4", "--builtin-source"])
        .args(["--suites", "ed25519,secp256k1-evm"])
        .args(["--duration", "300s", "--dir"])
        .arg(&net)
        .env("SIBYL_CONTRACTS_DIR", &contracts)
        .stdout(log.try_clone().expect("log"))
        .stderr(log)
        .spawn()
        .expect("start sibyl devnet --chain --suites ed25519,secp256k1-evm");
    let devnet = Devnet(child);
    let file: Value = wait_for("devnet.json with the chain", 180, || {
        let v: Value =
            serde_json::from_str(&std::fs::read_to_string(net.join("devnet.json")).ok()?).ok()?;
        v["chain"]["feed"].is_string().then_some(v)
    });
    let rpc = file["chain"]["rpc_url"].as_str().expect("rpc").to_string();
    let feed = file["chain"]["feed"].as_str().expect("feed").to_string();
    let btc = file["chain"]["adapters"]["BTC-USD"]
        .as_str()
        .expect("BTC-USD adapter")
        .to_string();
    let api = file["members"][0]["api_url"]
        .as_str()
        .expect("api")
        .to_string();
    let digest = ConfigDigest(b32(file["config_digest"].as_str().expect("digest")));
    let key = |suite: &str| unhex(file["group_keys"][suite].as_str().expect("group key"));
    let keys = sibyl_aggregator::verify::GroupKeys::new(digest)
        .with_key_bytes(sibyl_aggregator::Suite::Ed25519, &key("ed25519"))
        .expect("ed25519 key")
        .with_key_bytes(sibyl_aggregator::Suite::Secp256k1Evm, &key("secp256k1-evm"))
        .expect("secp256k1-evm key");

    let first_round = wait_for("a first signed report", 120, || {
        http_json(&format!("{api}/v1/feeds/BTC-USD/latest"))?["round"].as_u64()
    });
    let pushed = wait_for("the adapter to match the API", 120, || {
        let latest = http_json(&format!("{api}/v1/feeds/BTC-USD/latest"))?;
        let out = Command::new(contracts.join("tools/cast"))
            .args(["call", "--rpc-url", &rpc, &btc])
            .arg("latestRoundData()(uint80,int256,uint256,uint256,uint80)")
            .output()
            .ok()?;
        if !out.status.success() {
            return None; // NoDataPresent before the first push
        }
        let w = words(&String::from_utf8_lossy(&out.stdout));
        let round = latest["round"].as_u64()?;
        // The adapter's round ids count the feed's own updates (issue 16):
        // the same value is the same price at the same time.
        let same = w.get(1)? == latest["price"].as_str()?
            && w.get(3)? == &(latest["timestamp_ms"].as_u64()? / 1000).to_string();
        (same && round >= first_round + 3).then_some(round)
    });
    // The report the chain took carries both signatures, each valid.
    let body = http_json(&format!("{api}/v1/reports/{pushed}")).expect("the pushed report");
    let report: SignedReport =
        serde_json::from_value(body.get("report").cloned().unwrap_or(body)).expect("a report");
    assert_eq!(report.signatures.len(), 2);
    sibyl_aggregator::verify::verify_report(&report, &keys).expect("both signatures verify");
    let update = http_json(&format!("{api}/v1/feeds/BTC-USD/update")).expect("pull payload");
    assert_eq!(update["contract"], feed.to_lowercase());
    assert!(update["calldata"].as_str().is_some_and(|c| c.len() > 10));
    drop(devnet);
    println!("devnet --chain with both suites: round {pushed} on chain, both signatures verify");
}

/// The devnet committee's feeds as cast arrays (ids as bytes32, decimals).
fn rotation_feeds(devnet: &Value) -> String {
    let committee = std::fs::read_to_string(devnet["committee"].as_str().expect("committee"))
        .expect("committee file");
    let mut ids: Vec<String> = committee
        .lines()
        .filter_map(|l| l.strip_prefix("id = \""))
        .map(|id| {
            let id = id.trim_end_matches('"');
            let mut b = [0u8; 32];
            b[..id.len()].copy_from_slice(id.as_bytes());
            format!("0x{}", hex::encode(b))
        })
        .collect();
    ids.sort(); // the committee's feeds, ordered by id as `sibyl rotation` lists them
    format!("[{}]", ids.join(","))
}

fn rotation_decimals(devnet: &Value) -> String {
    let committee = std::fs::read_to_string(devnet["committee"].as_str().expect("committee"))
        .expect("committee file");
    let ds: Vec<&str> = committee
        .lines()
        .filter_map(|l| l.strip_prefix("decimals = "))
        .collect();
    format!("[{}]", ds.join(","))
}

/// `sibyl devnet --chain --setup-only` of 4 members against `rpc`, in
/// `dir`: its devnet.json (configs, committee file, group key, contract).
fn setup_committee(contracts: &std::path::Path, rpc: &str, dir: &std::path::Path) -> Value {
    let out = Command::new(env!("CARGO_BIN_EXE_sibyl"))
        .args([
            "devnet",
            "--chain",
            "--setup-only",
            "--builtin-source",
            "--nodes",
            "4",
        ])
        .args(["--chain-rpc-url", rpc, "--dir"])
        .arg(dir)
        .env("SIBYL_CONTRACTS_DIR", contracts)
        .output()
        .expect("sibyl devnet --setup-only");
    assert!(
        out.status.success(),
        "devnet setup failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(&std::fs::read_to_string(dir.join("devnet.json")).expect("json"))
        .expect("devnet.json")
}

/// `sibyl rotation`: committee A (deployed by `sibyl devnet --chain
/// --setup-only`) signs the hand-over to committee B with three of its
/// members' key shares and B proves it holds its key with three of its own;
/// the contract accepts the calldata once, and then names B's config digest
/// and group key. A --new-group-key that is not B's is refused.
#[test]
fn rotation_signed_by_the_current_committee_is_accepted_on_chain() {
    let contracts = devchain::find_contracts_dir().expect("contracts dir");
    let dir = tempfile::tempdir().expect("tempdir");
    let anvil = Anvil::start(&contracts, 0, None, &dir.path().join("anvil.log")).expect("anvil");
    let rpc = anvil.rpc_url.clone();
    let setup = |name: &str| setup_committee(&contracts, &rpc, &dir.path().join(name));
    let a = setup("a");
    let b = setup("b");
    let feed = a["chain"]["feed"].as_str().expect("feed").to_string();

    let member = |i: usize| {
        a["members"][i]["config"]
            .as_str()
            .expect("config")
            .to_string()
    };
    let new_member = |i: usize| {
        b["members"][i]["config"]
            .as_str()
            .expect("config")
            .to_string()
    };
    let chain_id = cast(&contracts, &["chain-id", "--rpc-url", &rpc]);
    let rotation_with = |configs: &[String], new_key: &str| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_sibyl"));
        cmd.arg("rotation");
        for c in configs {
            cmd.args(["--member-config", c]);
        }
        for i in 0..3 {
            cmd.args(["--new-member-config", &new_member(i)]);
        }
        cmd.args([
            "--new-committee",
            b["committee"].as_str().expect("committee"),
        ])
        .args(["--new-group-key", new_key])
        .args([
            "--chain-id",
            &chain_id,
            "--contract",
            &feed,
            "--rotation-count",
            "0",
        ])
        .output()
        .expect("sibyl rotation")
    };
    let rotation =
        |configs: &[String]| rotation_with(configs, b["group_key"].as_str().expect("key"));
    // A key that is not the new committee's public key package's is refused.
    let out = rotation_with(
        &[member(0), member(2), member(3)],
        a["group_key"].as_str().expect("key"),
    );
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not the new committee's group key"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Two shares are below the threshold of 3.
    let out = rotation(&[member(0), member(1)]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("threshold"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = rotation(&[member(0), member(2), member(3)]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let signed: Value = serde_json::from_slice(&out.stdout).expect("rotation JSON");
    // The message is the contract's own rotationDigest.
    let onchain_message = cast(
        &contracts,
        &[
            "call",
            "--rpc-url",
            &rpc,
            &feed,
            "rotationDigest(uint256,address,uint256,bytes32,bytes32,uint256,uint256,bytes32[],uint8[])(bytes32)",
            &chain_id,
            &feed,
            "0",
            signed["current_config_digest"].as_str().expect("cur"),
            signed["new_config_digest"].as_str().expect("new"),
            signed["new_group_key_x"].as_str().expect("x"),
            signed["new_group_key_y"].as_str().expect("y"),
            &rotation_feeds(&b),
            &rotation_decimals(&b),
        ],
    );
    assert_eq!(
        onchain_message,
        signed["message"].as_str().expect("message")
    );
    let gas = send(
        &contracts,
        &rpc,
        &feed,
        signed["calldata"].as_str().expect("calldata"),
    );
    let committee = cast(
        &contracts,
        &[
            "call",
            "--rpc-url",
            &rpc,
            &feed,
            "committee()(bytes32,uint256,uint8)",
        ],
    );
    let w = words(&committee);
    assert_eq!(
        w[0],
        format!("0x{}", b["config_digest"].as_str().expect("digest"))
    );
    let bx = EvmGroupKey::from_compressed(&unhex(b["group_key"].as_str().expect("key")))
        .expect("key")
        .x;
    assert_eq!(
        alloy_primitives::U256::from_str_radix(&w[1], 10).expect("x"),
        alloy_primitives::U256::from_be_bytes(bx)
    );
    // A replay is refused (the digest already moved).
    let replay = Command::new(contracts.join("tools/cast"))
        .args(["call", "--rpc-url", &rpc, &feed, "--data"])
        .arg(signed["calldata"].as_str().expect("calldata"))
        .output()
        .expect("cast call");
    assert!(!replay.status.success(), "a replayed rotation was accepted");
    println!("gas: rotateCommittee {gas}");
    drop(anvil);
}

/// `sibyl rotation-sign` at member `i` of `net`, handing committee `a`'s
/// contract `feed` (rotation count 0) over to committee `b`'s `new_key`.
fn rotation_sign(
    net: &Value,
    i: usize,
    a: &Value,
    b: &Value,
    new_key: &str,
    chain_id: &str,
    feed: &str,
) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sibyl"));
    cmd.arg("rotation-sign")
        .args([
            "--config",
            net["members"][i]["config"].as_str().expect("config"),
        ])
        .args(["--current-committee", a["committee"].as_str().expect("a")])
        .args(["--new-committee", b["committee"].as_str().expect("b")])
        .args(["--new-group-key", new_key, "--chain-id", chain_id])
        .args([
            "--contract",
            feed,
            "--rotation-count",
            "0",
            "--timeout",
            "60s",
        ]);
    cmd
}

/// `sibyl rotation-assemble` of the parts `current` and `new` for the new
/// committee file `committee`.
fn rotation_assemble(current: &std::path::Path, new: &std::path::Path, committee: &str) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sibyl"));
    cmd.arg("rotation-assemble")
        .arg("--current")
        .arg(current)
        .arg("--new")
        .arg(new)
        .args(["--new-committee", committee]);
    cmd
}

/// `sibyl rotation-sign` + `rotation-assemble`: the hand-over signed where
/// the shares live. Three members of committee A sign over A's network
/// (member 2's signer is killed after it committed and restarted, so the
/// coordinator starts a new run), three of B prove B's key over B's
/// network; the assembled calldata is accepted once and the contract then
/// names B. No process ever holds two shares.
#[test]
fn rotation_signed_over_the_committee_networks_is_accepted_on_chain() {
    use std::io::{BufRead, BufReader};
    let contracts = devchain::find_contracts_dir().expect("contracts dir");
    let dir = tempfile::tempdir().expect("tempdir");
    let anvil = Anvil::start(&contracts, 0, None, &dir.path().join("anvil.log")).expect("anvil");
    let rpc = anvil.rpc_url.clone();
    let setup = |name: &str| setup_committee(&contracts, &rpc, &dir.path().join(name));
    let a = setup("a");
    let b = setup("b");
    let feed = a["chain"]["feed"].as_str().expect("feed").to_string();
    let chain_id = cast(&contracts, &["chain-id", "--rpc-url", &rpc]);
    let new_key = b["group_key"].as_str().expect("key").to_string();
    let sign = |net: &Value, i: usize| {
        rotation_sign(net, i, &a, &b, &new_key, &chain_id, &feed)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("sibyl rotation-sign")
    };
    let finish = |c: std::process::Child, who: &str| -> Value {
        let out = c.wait_with_output().expect("wait");
        assert!(
            out.status.success(),
            "{who}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("part JSON")
    };
    // Committee A: members 1 and 2 start; once 2 committed it is killed and
    // restarted, and member 3 joins.
    let mut a1 = sign(&a, 0);
    let mut a2 = sign(&a, 1);
    let (tx, rx) = std::sync::mpsc::channel();
    let err = a1.stderr.take().expect("stderr");
    std::thread::spawn(move || {
        for line in BufReader::new(err).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut seen = String::new();
    while let Ok(line) = rx.recv_timeout(std::time::Duration::from_secs(60)) {
        seen += &line;
        seen.push('\n');
        if line.contains("commitment from member 2") {
            break;
        }
    }
    assert!(seen.contains("commitment from member 2"), "{seen}");
    let _ = a2.kill();
    let _ = a2.wait();
    let started = std::time::Instant::now();
    let a2 = sign(&a, 1);
    let a3 = sign(&a, 2);
    let parts: Vec<Value> = [(a1, "A1"), (a2, "A2"), (a3, "A3")]
        .into_iter()
        .map(|(c, w)| finish(c, w))
        .collect();
    let coordinator: Vec<String> = rx.try_iter().collect();
    eprintln!(
        "A signed {:?} after member 2's restart; coordinator:\n{seen}{}",
        started.elapsed(),
        coordinator.join("\n")
    );
    assert!(
        coordinator
            .iter()
            .any(|l| l.contains("new commitment (restarted?): new run")),
        "the coordinator did not start a new run: {coordinator:?}"
    );
    assert!(
        parts.iter().all(|p| p == &parts[0]),
        "every signer prints the same part"
    );
    assert_eq!(parts[0]["role"], "current");
    // Committee B proves it holds the new key.
    let b_parts: Vec<Value> = (0..3)
        .map(|i| sign(&b, i))
        .collect::<Vec<_>>()
        .into_iter()
        .map(|c| finish(c, "B"))
        .collect();
    assert_eq!(b_parts[0]["role"], "new");
    let cur_file = dir.path().join("current-part.json");
    let new_file = dir.path().join("new-part.json");
    std::fs::write(&cur_file, parts[0].to_string()).expect("write");
    std::fs::write(&new_file, b_parts[0].to_string()).expect("write");
    // Parts in the wrong order are refused.
    let wrong = rotation_assemble(&new_file, &cur_file, b["committee"].as_str().expect("b"))
        .output()
        .expect("assemble");
    assert!(!wrong.status.success());
    let out = rotation_assemble(&cur_file, &new_file, b["committee"].as_str().expect("b"))
        .output()
        .expect("assemble");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let signed: Value = serde_json::from_slice(&out.stdout).expect("assembled JSON");
    let gas = send(
        &contracts,
        &rpc,
        &feed,
        signed["calldata"].as_str().expect("calldata"),
    );
    let committee = cast(
        &contracts,
        &[
            "call",
            "--rpc-url",
            &rpc,
            &feed,
            "committee()(bytes32,uint256,uint8)",
        ],
    );
    let w = words(&committee);
    assert_eq!(
        w[0],
        format!("0x{}", b["config_digest"].as_str().expect("digest"))
    );
    println!("gas: rotateCommittee (networked signatures) {gas}");
    drop(anvil);
}

/// The transmitter's real RPC path on anvil with mining paused: the report
/// goes out, gets no receipt, is replaced at the same nonce with higher fees
/// (anvil's mempool accepts the replacement), and once a block is mined the
/// replacement's receipt settles it and the feeds hold the report.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transmitter_replaces_a_stuck_transaction_on_anvil() {
    use sibyl_chain::rpc::AlloyRpc;
    use sibyl_chain::transmitter::{ChainMetrics, FeedRule, Schedule, Settings, Transmitter};
    use std::sync::Arc;
    use tokio::time::{Duration, Instant};

    let contracts = devchain::find_contracts_dir().expect("contracts dir");
    let dir = tempfile::tempdir().expect("tempdir");
    let anvil = Anvil::start(&contracts, 0, None, &dir.path().join("anvil.log")).expect("anvil");
    let rpc_url = anvil.rpc_url.clone();
    let v = vectors();
    let three = case(&v, "three-feeds-odd-promotion");
    let key = EvmGroupKey::from_compressed(&unhex(
        v["committee"]["secp256k1_evm"]["group_public_key"]
            .as_str()
            .expect("key"),
    ))
    .expect("group key");
    let deployment = devchain::deploy(
        &contracts,
        &DeployParams {
            rpc_url: &rpc_url,
            private_key: ANVIL_KEY_0,
            config_digest: three.header.config_digest.0,
            group_key_x: key.x,
            group_key_y: key.y,
            feeds: vec![
                ("BTC-USD".into(), 8),
                ("ETH-USD".into(), 8),
                ("WTI-SPREAD".into(), 8),
            ],
            max_drift_ms: 5_000,
        },
    )
    .expect("deploy");
    cast(
        &contracts,
        &["rpc", "--rpc-url", &rpc_url, "evm_setAutomine", "false"],
    );

    let signer = devchain::ANVIL_KEYS[1].parse().expect("dev key");
    let rpc = AlloyRpc::new(
        &rpc_url,
        deployment.feed.parse().expect("address"),
        deployment.chain_id,
        signer,
    )
    .expect("rpc");
    let rules = three
        .leaves
        .iter()
        .map(|l| {
            (
                l.feed_id.clone(),
                FeedRule {
                    deviation_bps: 10,
                    heartbeat_ms: 60_000,
                },
            )
        })
        .collect();
    let schedule = Schedule {
        member: 1,
        leader: Arc::new(|_| 1),
        n: 4,
    };
    let settings = Settings {
        stagger: Duration::from_secs(1),
        max_fee_per_gas: 100_000_000_000,
        max_priority_fee_per_gas: 2_000_000_000,
        replace_after: Duration::from_secs(1),
        ..Settings::default()
    };
    let metrics = ChainMetrics::default();
    let mut t = Transmitter::new(rpc, key, rules, schedule, settings, metrics.clone());
    t.check(deployment.chain_id)
        .await
        .expect("chain id matches");
    assert!(
        t.check(deployment.chain_id + 1).await.is_err(),
        "a wrong chain id was accepted"
    );

    let t0 = Instant::now();
    t.on_report(Arc::new(three.clone()), t0);
    t.on_tick(t0).await;
    assert_eq!(metrics.sent.get(), 1, "the leader did not send");
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    t.on_tick(Instant::now()).await;
    assert_eq!(metrics.confirmed.get(), 0, "mined with mining paused");
    assert_eq!(
        metrics.replaced.get(),
        1,
        "the stuck transaction was not replaced"
    );
    assert_eq!(metrics.sent.get(), 2);

    cast(&contracts, &["rpc", "--rpc-url", &rpc_url, "evm_mine"]);
    t.on_tick(Instant::now()).await;
    assert_eq!(
        metrics.confirmed.get(),
        1,
        "the replacement's receipt was not seen"
    );
    assert!(metrics.gas_used.get() > 0);
    let got = latest_feed(&contracts, &rpc_url, &deployment.feed, "BTC-USD");
    assert_eq!(got[2], three.header.timestamp_ms.to_string());
    assert_eq!(got[3], "1", "the feed's first round id");
    // Only one of the two transactions was mined: the nonce advanced once.
    let nonce = cast(
        &contracts,
        &[
            "nonce",
            "--rpc-url",
            &rpc_url,
            "0x70997970C51812dc3A010C7d01b50e0d17dc79C8",
        ],
    );
    assert_eq!(nonce, "1");
    drop(anvil);
}

/// `sibyl run` of one member, its stderr to `log`; killed when dropped.
struct Member(std::process::Child);

impl Member {
    fn start(config: &str, log: &std::path::Path) -> Self {
        let log = std::fs::File::create(log).expect("member log");
        Self(
            Command::new(env!("CARGO_BIN_EXE_sibyl"))
                .args(["run", "--config", config])
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null())
                .stderr(log)
                .spawn()
                .expect("sibyl run"),
        )
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The feed's stored timestamp (ms) on chain, by a raw `eth_call` of
/// `latestFeed(bytes32)` (selector `sel`); None before its first value.
fn stored_ms(rpc: &str, contract: &str, sel: &str, id: &str) -> Option<u64> {
    let id32 = hex::encode(FeedId::new(id).expect("id").to_bytes32());
    let body = serde_json::json!({
        "jsonrpc": "2.0", "id": 1, "method": "eth_call",
        "params": [{"to": contract, "data": format!("{sel}{id32}")}, "latest"],
    });
    let answer = sibyl::cmd::devnet::http_post_json(
        rpc,
        "",
        &body.to_string(),
        std::time::Duration::from_secs(2),
    )
    .ok()?;
    let v: Value = serde_json::from_str(&answer).ok()?;
    let out = v["result"].as_str()?.trim_start_matches("0x");
    // (price, confidence, timestampMs, roundId): the third word.
    u64::from_str_radix(out.get(128 + 48..192)?, 16).ok()
}

fn metric(api: &str, name: &str) -> f64 {
    sibyl::cmd::devnet::http_get(&format!("{api}/metrics"))
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        })
        .unwrap_or(0.0)
}

/// Unix time, ms.
fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as u64
}

/// Samples every feed's stored timestamp on chain (`latestFeed`, selector
/// `sel`) every 100 ms on a thread of its own until stopped.
struct FeedSampler {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<Vec<(u64, Vec<u64>)>>,
}

impl FeedSampler {
    fn start(rpc: &str, contract: &str, sel: &str, ids: &[String]) -> Self {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (flag, rpc, contract, sel, ids) = (
            stop.clone(),
            rpc.to_string(),
            contract.to_string(),
            sel.to_string(),
            ids.to_vec(),
        );
        let thread = std::thread::spawn(move || {
            let mut samples = Vec::new();
            while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                let at = unix_ms();
                let ts: Option<Vec<u64>> = ids
                    .iter()
                    .map(|id| stored_ms(&rpc, &contract, &sel, id))
                    .collect();
                if let Some(ts) = ts {
                    samples.push((at, ts));
                }
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
            samples
        });
        Self { stop, thread }
    }

    /// (sampled at, each feed's stored timestamp), oldest first.
    fn stop(self) -> Vec<(u64, Vec<u64>)> {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread.join().expect("sampler")
    }
}

/// Per feed, the longest it stood unchanged among the samples taken in
/// `[from, to)`: sampling time minus its stored timestamp.
fn longest_unchanged(samples: &[(u64, Vec<u64>)], feeds: usize, from: u64, to: u64) -> Vec<u64> {
    (0..feeds)
        .map(|f| {
            samples
                .iter()
                .filter(|(at, _)| (from..to).contains(at))
                .map(|(at, ts)| at.saturating_sub(ts[f]))
                .max()
                .unwrap_or(0)
        })
        .collect()
}

/// The hand-over with both committees running, as the issue asks: committee
/// A pushes to its SibylFeed; committee B runs beside it with `[chain]`
/// pointed at A's contract and transmitters of its own (the contract
/// refuses B's reports until the switch). Three members of A sign the
/// hand-over inside their running `sibyl run` (`rotation-sign --live`),
/// three of B prove B's key the same way, `rotation-assemble` makes the
/// call, and it lands. Throughout, every feed's stored timestamp is sampled:
/// the longest a consumer would have seen a feed unchanged stays within the
/// feed's heartbeat plus the push schedule's slack, and after the switch
/// the values come from B (A's pushes are refused).
#[test]
fn hand_over_with_both_committees_running_keeps_every_feed_fresh() {
    use std::time::{Duration, Instant};
    let contracts = devchain::find_contracts_dir().expect("contracts dir");
    let dir = tempfile::tempdir().expect("tempdir");
    let anvil = Anvil::start(&contracts, 0, None, &dir.path().join("anvil.log")).expect("anvil");
    let rpc = anvil.rpc_url.clone();
    let a = setup_committee(&contracts, &rpc, &dir.path().join("a"));
    let b = setup_committee(&contracts, &rpc, &dir.path().join("b"));
    let feed = a["chain"]["feed"].as_str().expect("feed").to_string();
    let b_own = b["chain"]["feed"].as_str().expect("feed").to_string();
    // B pushes to A's contract with anvil's accounts 5..8 (A has 1..4).
    for (i, m) in b["members"].as_array().expect("members").iter().enumerate() {
        let config = PathBuf::from(m["config"].as_str().expect("config"));
        let text = std::fs::read_to_string(&config).expect("node.toml");
        let moved = text.replace(
            &format!("contract = \"{b_own}\""),
            &format!("contract = \"{feed}\""),
        );
        assert_ne!(moved, text, "B's [chain].contract");
        std::fs::write(&config, moved).expect("node.toml");
        let key = config.with_file_name("transmitter.key");
        std::fs::write(&key, devchain::ANVIL_KEYS[5 + i]).expect("transmitter key");
        std::fs::set_permissions(
            &key,
            <std::fs::Permissions as std::os::unix::fs::PermissionsExt>::from_mode(0o600),
        )
        .expect("key mode");
    }
    let heartbeat_ms: u64 = std::fs::read_to_string(a["committee"].as_str().expect("committee"))
        .expect("committee file")
        .lines()
        .find_map(|l| {
            l.strip_prefix("heartbeat = \"")?
                .strip_suffix("ms\"")?
                .parse()
                .ok()
        })
        .expect("a feed heartbeat in ms");
    let ids: Vec<String> = std::fs::read_to_string(a["committee"].as_str().expect("committee"))
        .expect("committee file")
        .lines()
        .filter_map(|l| Some(l.strip_prefix("id = \"")?.trim_end_matches('"').to_string()))
        .collect();
    let sel = cast(&contracts, &["sig", "latestFeed(bytes32)"]);

    let start = |net: &Value, name: &str| -> Vec<Member> {
        net["members"]
            .as_array()
            .expect("members")
            .iter()
            .enumerate()
            .map(|(i, m)| {
                Member::start(
                    m["config"].as_str().expect("config"),
                    &dir.path().join(format!("{name}{}.log", i + 1)),
                )
            })
            .collect()
    };
    let api = |net: &Value, i: usize| {
        net["members"][i]["api_url"]
            .as_str()
            .expect("api")
            .to_string()
    };
    let a_members = start(&a, "a");
    let b_members = start(&b, "b");
    wait_for("A's pushes on every feed", 180, || {
        ids.iter()
            .all(|id| stored_ms(&rpc, &feed, &sel, id).is_some())
            .then_some(())
    });
    wait_for("B signing reports", 120, || {
        http_json(&format!("{}/v1/node/status", api(&b, 0)))?["last_report_round"]
            .as_u64()
            .filter(|r| *r >= 3)
    });

    // Sample every feed's stored timestamp until told to stop.
    let sampler = FeedSampler::start(&rpc, &feed, &sel, &ids);
    std::thread::sleep(Duration::from_secs(10));

    // Both committees sign their parts inside their running members.
    let chain_id = cast(&contracts, &["chain-id", "--rpc-url", &rpc]);
    let new_key = b["group_key"].as_str().expect("key").to_string();
    let sign = |net: &Value, i: usize| {
        rotation_sign(net, i, &a, &b, &new_key, &chain_id, &feed)
            .arg("--live")
            .stdin(std::process::Stdio::null())
            .output()
            .expect("sibyl rotation-sign --live")
    };
    let part = |net: &Value, name: &str| -> PathBuf {
        let signed = Instant::now();
        let outs: Vec<_> = std::thread::scope(|s| {
            let hs: Vec<_> = (0..3).map(|i| s.spawn(move || sign(net, i))).collect();
            hs.into_iter().map(|h| h.join().expect("signer")).collect()
        });
        for o in &outs {
            assert!(
                o.status.success(),
                "{name}: {}",
                String::from_utf8_lossy(&o.stderr)
            );
            assert_eq!(
                o.stdout, outs[0].stdout,
                "{name}: every signer prints the same part"
            );
        }
        eprintln!(
            "{name}'s part signed inside sibyl run in {:.2?}",
            signed.elapsed()
        );
        let path = dir.path().join(format!("{name}-part.json"));
        std::fs::write(&path, &outs[0].stdout).expect("part");
        path
    };
    let cur = part(&a, "A");
    let new = part(&b, "B");
    let b_sent_before: f64 = (0..4)
        .map(|i| metric(&api(&b, i), "sibyl_chain_tx_confirmed_total"))
        .sum();
    let named = |net: &Value| -> f64 {
        (0..4)
            .map(|i| metric(&api(net, i), "sibyl_chain_contract_names_committee"))
            .sum()
    };
    let b_named_before = named(&b);
    // Assembled and sent in one step, from B's member 1's transmitter
    // account (idle until the switch).
    let submit = |member: usize| {
        rotation_assemble(&cur, &new, b["committee"].as_str().expect("b"))
            .args([
                "--submit-with",
                b["members"][member]["config"].as_str().expect("config"),
            ])
            .output()
            .expect("assemble")
    };
    let out = submit(0);
    let said = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "{said}");
    let gas: u64 = said
        .split("gas used ")
        .nth(1)
        .and_then(|rest| rest.split(':').next())
        .and_then(|g| g.trim().parse().ok())
        .unwrap_or_else(|| panic!("no gas figure in: {said}"));
    // Sent again, the contract refuses it before anything is sent.
    let again = submit(1);
    let refused = String::from_utf8_lossy(&again.stderr);
    assert!(
        !again.status.success() && refused.contains("the contract refuses the call"),
        "{refused}"
    );
    let switched_at = unix_ms();
    let w = words(&cast(
        &contracts,
        &[
            "call",
            "--rpc-url",
            &rpc,
            &feed,
            "committee()(bytes32,uint256,uint8)",
        ],
    ));
    assert_eq!(
        w[0],
        format!("0x{}", b["config_digest"].as_str().expect("digest"))
    );

    // B takes over: every feed gets values signed after the switch.
    wait_for("values from B on every feed", 60, || {
        ids.iter()
            .all(|id| stored_ms(&rpc, &feed, &sel, id).is_some_and(|t| t > switched_at))
            .then_some(())
    });
    std::thread::sleep(Duration::from_secs(10));
    let samples = sampler.stop();
    let a_failed: f64 = (0..4)
        .map(|i| metric(&api(&a, i), "sibyl_chain_tx_failed_total"))
        .sum();
    let b_failed: f64 = (0..4)
        .map(|i| metric(&api(&b, i), "sibyl_chain_tx_failed_total"))
        .sum();
    let b_named_after = named(&b);
    let b_confirmed: f64 = (0..4)
        .map(|i| metric(&api(&b, i), "sibyl_chain_tx_confirmed_total"))
        .sum();
    drop(a_members);
    drop(b_members);

    // The longest any feed stood unchanged (sampling time minus its stored
    // timestamp), before and across the switch.
    let worst = |from: u64, to: u64| longest_unchanged(&samples, ids.len(), from, to);
    let first = samples.first().expect("samples").0;
    let last = samples.last().expect("samples").0;
    let before = worst(first, switched_at);
    let across = worst(switched_at.saturating_sub(5_000), last + 1);
    eprintln!(
        "hand-over with both committees running: rotateCommittee gas {gas}; {} samples; \
         longest a feed stood unchanged (ms) per feed {ids:?}: before the switch {before:?}, \
         across it {across:?}; heartbeat {heartbeat_ms} ms; failed pushes: A {a_failed}, B {b_failed}, \
         B's confirmed pushes {b_confirmed} (before the switch {b_sent_before}); \
         B's transmitters naming their committee: {b_named_before} before, {b_named_after} after",
        samples.len()
    );
    assert_eq!(
        b_sent_before, 0.0,
        "the contract took B's reports before the switch"
    );
    assert!(b_confirmed > 0.0, "B never pushed after the switch");
    let chain_warnings = |name: &str| -> String {
        (1..=4)
            .flat_map(|i| {
                std::fs::read_to_string(dir.path().join(format!("{name}{i}.log")))
                    .unwrap_or_default()
                    .lines()
                    .filter(|l| l.contains("sibyl_chain") && !l.contains("\"INFO\""))
                    .map(|l| format!("{name}{i}: {l}\n"))
                    .collect::<Vec<_>>()
            })
            .collect()
    };
    assert_eq!(
        b_failed,
        0.0,
        "B's wait for the hand-over counted as failures:\n{}",
        chain_warnings("b")
    );
    assert_eq!(
        a_failed,
        0.0,
        "A's refused pushes counted as failures:\n{}",
        chain_warnings("a")
    );
    assert!(
        b_named_before == 0.0 && b_named_after > 0.0,
        "B's sibyl_chain_contract_names_committee: {b_named_before} before, {b_named_after} after"
    );
    let b_logs: String = (1..=4)
        .map(|i| std::fs::read_to_string(dir.path().join(format!("b{i}.log"))).unwrap_or_default())
        .collect();
    assert!(
        b_logs.contains("the feed contract names another committee"),
        "B's log does not say it waits for the hand-over"
    );
    assert!(
        b_logs.contains("the feed contract names this committee now"),
        "B's log does not say it took over"
    );
    // The push schedule: a leaf is due once its heartbeat has passed (one
    // round of 250 ms to notice), the first-ranked transmitter sends at
    // once and the next ones one stagger (1 s) later each; anvil mines at
    // once. So a fresh feed stands unchanged at most heartbeat + 2 s.
    let bound = heartbeat_ms + 2_000;
    for (id, (b4, ac)) in ids.iter().zip(before.iter().zip(&across)) {
        assert!(
            *b4 <= bound,
            "{id} stood {b4} ms unchanged before the switch (bound {bound})"
        );
        assert!(
            *ac <= bound,
            "{id} stood {ac} ms unchanged across the switch (bound {bound})"
        );
    }
    drop(anvil);
}

/// Removing a member on chain: committee A (4 members, t = 3, deployed on
/// anvil) drops member 4 with `sibyl refresh --new-committee` at members
/// 1-3 (same group key, new digest), the three sign the hand-over to the
/// new digest (one signature serves as both the current and the new key's:
/// the key did not change), the contract then names the new digest with
/// the same key, and the three running on the new committee push reports
/// it accepts.
#[test]
fn removing_a_member_hands_the_contract_over_with_the_same_key() {
    let contracts = devchain::find_contracts_dir().expect("contracts dir");
    let dir = tempfile::tempdir().expect("tempdir");
    let anvil = Anvil::start(&contracts, 0, None, &dir.path().join("anvil.log")).expect("anvil");
    let rpc = anvil.rpc_url.clone();
    let a = setup_committee(&contracts, &rpc, &dir.path().join("a"));
    let feed = a["chain"]["feed"].as_str().expect("feed").to_string();
    let committee = PathBuf::from(a["committee"].as_str().expect("committee"));
    let text = std::fs::read_to_string(&committee).expect("committee");
    // Member 4's block is the last one, before the feeds.
    let start = text
        .find("[[members]]\nindex = 4")
        .expect("member 4's block");
    let end = start + text[start..].find("[[feeds]]").expect("feeds");
    let new_committee = committee.with_file_name("committee-without-4.toml");
    std::fs::write(
        &new_committee,
        format!("{}{}", &text[..start], &text[end..]),
    )
    .expect("write");
    let config = |i: usize| PathBuf::from(a["members"][i]["config"].as_str().expect("config"));
    let run_all = |args: &dyn Fn(usize) -> Vec<String>| -> Vec<std::process::Output> {
        let children: Vec<_> = (0..3)
            .map(|i| {
                Command::new(env!("CARGO_BIN_EXE_sibyl"))
                    .args(args(i))
                    .stdin(std::process::Stdio::null())
                    .stdout(std::process::Stdio::piped())
                    .stderr(std::process::Stdio::piped())
                    .spawn()
                    .expect("sibyl")
            })
            .collect();
        children
            .into_iter()
            .map(|c| c.wait_with_output().expect("wait"))
            .collect()
    };
    // A runs and pushes; every feed's stored timestamp is sampled from here
    // to the end.
    let ids: Vec<String> = ["BTC-USD", "ETH-USD", "SOL-USD"]
        .into_iter()
        .filter(|id| text.contains(&format!("id = \"{id}\"")))
        .map(String::from)
        .collect();
    let sel = cast(&contracts, &["sig", "latestFeed(bytes32)"]);
    let members: Vec<Member> = (0..4)
        .map(|i| {
            Member::start(
                a["members"][i]["config"].as_str().expect("config"),
                &dir.path().join(format!("a{}.log", i + 1)),
            )
        })
        .collect();
    wait_for("A's pushes on every feed", 180, || {
        ids.iter()
            .all(|id| stored_ms(&rpc, &feed, &sel, id).is_some())
            .then_some(())
    });
    let sampler = FeedSampler::start(&rpc, &feed, &sel, &ids);
    std::thread::sleep(std::time::Duration::from_secs(3));
    let stopped = std::time::Instant::now();
    drop(members);
    let outs = run_all(&|i| {
        vec![
            "refresh".into(),
            "--timeout".into(),
            "60s".into(),
            "--config".into(),
            config(i).display().to_string(),
            "--new-committee".into(),
            new_committee.display().to_string(),
        ]
    });
    for (i, o) in outs.iter().enumerate() {
        assert!(
            o.status.success(),
            "member {}: {}",
            i + 1,
            String::from_utf8_lossy(&o.stderr)
        );
    }
    for i in 0..3 {
        let p = config(i);
        let text = std::fs::read_to_string(&p).expect("node.toml");
        std::fs::write(
            &p,
            text.replace(
                "committee = \"../committee.toml\"",
                "committee = \"../committee-without-4.toml\"",
            ),
        )
        .expect("node.toml");
    }
    let ceremony = stopped.elapsed();
    // The three run on the new committee; they sign the hand-over inside
    // `sibyl run` once they sign reports.
    let members: Vec<Member> = (0..3)
        .map(|i| {
            Member::start(
                a["members"][i]["config"].as_str().expect("config"),
                &dir.path().join(format!("m{}.log", i + 1)),
            )
        })
        .collect();
    let api = |i: usize| {
        a["members"][i]["api_url"]
            .as_str()
            .expect("api")
            .to_string()
    };
    let verify = || {
        Command::new(env!("CARGO_BIN_EXE_sibyl"))
            .arg("verify")
            .arg(format!("{}/v1/reports/latest", api(0)))
            .args(["--group-key", a["group_key"].as_str().expect("key")])
            .args(["--suite", "secp256k1-evm", "--committee"])
            .arg(&new_committee)
            .output()
            .expect("sibyl verify")
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    loop {
        let out = verify();
        if out.status.success() {
            break;
        }
        if std::time::Instant::now() > deadline {
            let log = std::fs::read_to_string(dir.path().join("m1.log")).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(20).collect();
            panic!(
                "no report of the three-member committee in 120 s; sibyl verify: {}{}\nmember 1's log (newest first):\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr),
                tail.join("\n")
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
    let chain_id = cast(&contracts, &["chain-id", "--rpc-url", &rpc]);
    let key = a["group_key"].as_str().expect("key").to_string();
    let outs = run_all(&|i| {
        [
            "rotation-sign",
            "--live",
            "--config",
            &config(i).display().to_string(),
            "--current-committee",
            &committee.display().to_string(),
            "--new-committee",
            &new_committee.display().to_string(),
            "--new-group-key",
            &key,
            "--chain-id",
            &chain_id,
            "--contract",
            &feed,
            "--rotation-count",
            "0",
            "--timeout",
            "60s",
        ]
        .map(String::from)
        .to_vec()
    });
    for (i, o) in outs.iter().enumerate() {
        assert!(
            o.status.success(),
            "member {}: {}",
            i + 1,
            String::from_utf8_lossy(&o.stderr)
        );
    }
    let part: Value = serde_json::from_slice(&outs[0].stdout).expect("part");
    assert_eq!(part["role"], "new");
    let part_file = dir.path().join("part.json");
    std::fs::write(&part_file, &outs[0].stdout).expect("part");
    let out = rotation_assemble(&part_file, &part_file, &new_committee.display().to_string())
        .output()
        .expect("assemble");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("keeps the group key"));
    let signed: Value = serde_json::from_slice(&out.stdout).expect("assembled");
    let gas = send(
        &contracts,
        &rpc,
        &feed,
        signed["calldata"].as_str().expect("calldata"),
    );
    let new_digest = sibyl_node::config::Committee::load(&new_committee)
        .expect("new committee")
        .digest;
    let w = words(&cast(
        &contracts,
        &[
            "call",
            "--rpc-url",
            &rpc,
            &feed,
            "committee()(bytes32,uint256,uint8)",
        ],
    ));
    assert_eq!(w[0], format!("0x{}", hex::encode(new_digest.0)));
    let x = EvmGroupKey::from_compressed(&unhex(&key)).expect("key").x;
    assert_eq!(
        alloy_primitives::U256::from_str_radix(&w[1], 10).expect("x"),
        alloy_primitives::U256::from_be_bytes(x),
        "the group key is unchanged"
    );
    // Their pushes land.
    let switched_at = unix_ms();
    wait_for(
        "pushes of the three-member committee on every feed",
        120,
        || {
            ids.iter()
                .all(|id| stored_ms(&rpc, &feed, &sel, id).is_some_and(|t| t > switched_at))
                .then_some(())
        },
    );
    wait_for("a confirmed push counted by the three", 60, || {
        ((0..3)
            .map(|i| metric(&api(i), "sibyl_chain_tx_confirmed_total"))
            .sum::<f64>()
            > 0.0)
            .then_some(())
    });
    let samples = sampler.stop();
    let worst = longest_unchanged(&samples, ids.len(), 0, u64::MAX);
    println!(
        "removal on chain: committee stopped {:.1?} for the refresh among the three; the longest a feed stood unchanged on chain (ms) per feed {ids:?}: {worst:?} ({} samples, stop to the hand-over's pushes)",
        ceremony,
        samples.len()
    );
    drop(members);
    println!("gas: rotateCommittee keeping the key (member removed) {gas}");
    drop(anvil);
}
