//! `/v1/margin/*` over real HTTP, with the real margin service and store:
//! the demo book seeded at the first report, reads, admin commands, bad
//! commands that change nothing, liquidations paged, and a replay of the
//! resulting database.

use super::{Resp, get, http};
use crate::{ApiConfig, ApiParts, ApiState, CommitteeStatus, FeedInfo, serve};
use serde_json::Value;
use sibyl_aggregator::merkle;
use sibyl_aggregator::{ConfigDigest, FeedId, PROTOCOL_VERSION, ReportHeader, ReportLeaf};
use sibyl_aggregator::{SignatureBytes, SignedReport, Suite};
use sibyl_node::config::FeedParams;
use sibyl_node::margin_svc::{self, DemoSeed, MarginHandle, MarginOptions};
use sibyl_node::replay::replay_db;
use sibyl_node::store::{Store, now_ms};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{broadcast, watch};

const TOKEN: &str = "margin-s3cret";
const ACCOUNTS: usize = 60;

/// The committee key the test node's engine is started with.
fn committee() -> sibyl_margin::CommitteeKey {
    sibyl_margin::CommitteeKey::new(vec![0x5A; 32]).unwrap()
}

fn feed(s: &str) -> FeedId {
    FeedId::new(s).expect("feed id")
}

fn report(round: u64, ts: u64, btc: i128, eth: i128, sol: i128) -> Arc<SignedReport> {
    let leaves: Vec<ReportLeaf> = [("BTC-USD", btc), ("ETH-USD", eth), ("SOL-USD", sol)]
        .iter()
        .map(|(id, px)| ReportLeaf::basic(feed(id), *px, 1_000, 4, ts))
        .collect();
    Arc::new(SignedReport {
        header: ReportHeader {
            version: PROTOCOL_VERSION,
            config_digest: ConfigDigest([7; 32]),
            round,
            timestamp_ms: ts,
            merkle_root: merkle::root(&leaves),
            margin_root: [0; 32],
        },
        leaves,
        signatures: BTreeMap::from([(Suite::Ed25519, SignatureBytes(vec![1; 64]))]),
        commands: Vec::new(),
        margin_state: None,
    })
}

struct Node {
    addr: SocketAddr,
    margin: MarginHandle,
    reports: broadcast::Sender<Arc<SignedReport>>,
    store: Store,
    db: std::path::PathBuf,
    _shutdown: watch::Sender<bool>,
    _dir: tempfile::TempDir,
}

const PX: i128 = 100_000_000;

impl Node {
    async fn start() -> Node {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = dir.path().join("node.db");
        let store = Store::open(&db).expect("store");
        let (reports, _) = broadcast::channel(64);
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let feeds: Vec<FeedParams> = ["BTC-USD", "ETH-USD", "SOL-USD"]
            .iter()
            .map(|id| FeedParams {
                id: feed(id),
                decimals: 8,
                deviation_bps: 10,
                heartbeat_ms: 60_000,
                policy: Default::default(),
            })
            .collect();
        let margin = margin_svc::start_with(
            &store,
            feeds,
            reports.subscribe(),
            shutdown_rx,
            MarginOptions {
                demo: Some(DemoSeed {
                    accounts: ACCOUNTS,
                    seed: 11,
                }),
                snapshot_every_rounds: 0,
                ordered_by: None,
                committee: Some(committee()),
            },
        )
        .await
        .expect("margin service");
        let (_c, committee) = watch::channel(CommitteeStatus::default());
        let mut registry = prometheus_client::registry::Registry::default();
        margin.register_metrics(&mut registry);
        let state = ApiState::new(ApiParts {
            store: std::sync::Arc::new(store.readers.clone()),
            writer: Some(store.writer.clone()),
            reports: reports.clone(),
            committee,
            registry,
            margin: Some(margin.clone()),
            config: ApiConfig {
                admin_token: Some(TOKEN.into()),
                feeds: ["BTC-USD", "ETH-USD", "SOL-USD"]
                    .iter()
                    .map(|f| {
                        (
                            feed(f),
                            FeedInfo {
                                decimals: 8,
                                ..FeedInfo::default()
                            },
                        )
                    })
                    .collect(),
                ..ApiConfig::default()
            },
        });
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(serve(listener, state));
        let node = Node {
            addr,
            margin,
            reports,
            store,
            db,
            _shutdown: shutdown_tx,
            _dir: dir,
        };
        // The margin engine takes stored reports in round order: round 0 had
        // none here. The first report seeds the demo book.
        node.store
            .writer
            .write(|db| db.insert_report_gap(0, 1))
            .await
            .expect("gap");
        node.price(1, now_ms() - 5_000, 60_000 * PX, 3_000 * PX, 150 * PX)
            .await;
        node
    }

    /// Publishes a report and waits until the margin service stored it.
    async fn price(&self, round: u64, ts: u64, btc: i128, eth: i128, sol: i128) {
        self.publish(report(round, ts, btc, eth, sol)).await;
    }

    /// Publishes `r` and waits until the margin service took it.
    async fn publish(&self, r: Arc<SignedReport>) {
        let round = r.header.round;
        let before = self.margin.read().reports_handled;
        self.store
            .writer
            .insert_report((*r).clone())
            .await
            .expect("store report");
        self.reports.send(r).expect("send report");
        for _ in 0..1_000 {
            if self.margin.read().reports_handled > before {
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        panic!("the margin service did not take report {round}");
    }

    async fn post(&self, path: &str, body: &str) -> Resp {
        let auth = format!("Bearer {TOKEN}");
        http(
            self.addr,
            "POST",
            path,
            &[
                ("Authorization", auth.as_str()),
                ("Content-Type", "application/json"),
            ],
            body.as_bytes(),
        )
        .await
    }

    fn stored_inputs(&self) -> u64 {
        self.store
            .readers
            .read_blocking(|db| db.margin_inputs())
            .expect("inputs")
            .len() as u64
    }

    /// The stored log of inputs replayed (`replay_db`): it must give the
    /// same events, and every stored input.
    async fn replayed(&self) -> sibyl_node::replay::ReplayReport {
        let db = self.db.clone();
        let r = tokio::task::spawn_blocking(move || replay_db(&db, Some(&committee())))
            .await
            .expect("join")
            .expect("replay");
        assert_eq!(r.divergence, None);
        assert_eq!(r.inputs, self.stored_inputs());
        r
    }
}

/// A fixed-point value as every route renders it: a string of digits.
fn is_fixed(v: &Value) -> bool {
    v.as_str().is_some_and(|s| {
        let s = s.strip_prefix('-').unwrap_or(s);
        !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_book_is_seeded_and_readable() {
    let n = Node::start().await;
    let insurance = get(n.addr, "/v1/margin/insurance").await;
    assert_eq!(insurance.status, 200);
    let ins = insurance.json();
    assert_eq!(ins["accounts"], ACCOUNTS as u64);
    assert_eq!(ins["balance"], "1000000000000", "{ins}"); // 1,000,000 USD
    assert!(is_fixed(&ins["fees"]), "{ins}");
    assert_eq!(ins["recent"][0]["kind"], "insurance_fund");
    assert_eq!(ins["recent"][0]["reason"], "funded");

    // Closest to liquidation: ranked by margin ratio, lowest first, and the
    // book's tightened tail is in margin call.
    let risk = get(n.addr, "/v1/margin/at-risk?limit=10").await.json();
    let units = risk["units"].as_array().expect("units");
    assert_eq!(units.len(), 10);
    let ratios: Vec<f64> = units
        .iter()
        .map(|u| {
            u["health"]["margin_ratio"]
                .as_str()
                .expect("ratio")
                .parse::<f64>()
                .expect("number")
                / 1e6
        })
        .collect();
    assert!(ratios.windows(2).all(|w| w[0] <= w[1]), "{ratios:?}");
    assert!(ratios[0] >= 1.0 && ratios[0] < 1.2, "{ratios:?}");
    assert_eq!(units[0]["rank"], 1);
    assert_eq!(units[0]["health"]["status"], "margin_call");
    assert_eq!(units[0]["in_margin_call"], true);
    for k in ["equity", "initial", "maintenance", "notional"] {
        assert!(is_fixed(&units[0]["health"][k]), "{k}: {}", units[0]);
    }

    // One at-risk account in full.
    let id = units[0]["account"].as_u64().expect("account");
    let acct = get(n.addr, &format!("/v1/margin/accounts/{id}"))
        .await
        .json();
    assert_eq!(acct["account"], id);
    assert!(is_fixed(&acct["cash"]));
    let u0 = &acct["units"][0];
    assert!(u0["mode"] == "cross" || u0["mode"] == "isolated", "{acct}");
    {
        let g = n.margin.read();
        let view = g.engine.account_view(id).expect("view");
        let eq = view[0].health.equity;
        assert_eq!(
            u0["health"]["equity"],
            crate::margin::fixed(eq),
            "served equity is the engine's, exactly"
        );
    }

    // An account holding options: positions carry Greeks, the account
    // sums them per underlying.
    let option_account = {
        let g = n.margin.read();
        let s = g.engine.state();
        s.accounts
            .iter()
            .find(|(_, a)| {
                a.positions
                    .keys()
                    .any(|m| m.contains("-C-") || m.contains("-P-"))
            })
            .map(|(id, _)| *id)
            .expect("the demo book has an option account")
    };
    let pos = get(
        n.addr,
        &format!("/v1/margin/accounts/{option_account}/positions"),
    )
    .await
    .json();
    let opt = pos["positions"]
        .as_array()
        .expect("positions")
        .iter()
        .find(|p| p["instrument"]["type"] == "option")
        .expect("an option position")
        .clone();
    assert!(
        is_fixed(&opt["mark_price"]) && is_fixed(&opt["entry_price"]),
        "{opt}"
    );
    assert_ne!(opt["greeks"]["gamma"], "0", "{opt}");
    assert_ne!(opt["greeks"]["vega"], "0", "{opt}");
    let greeks = get(
        n.addr,
        &format!("/v1/margin/accounts/{option_account}/greeks"),
    )
    .await
    .json();
    assert!(is_fixed(&greeks["greeks"]["BTC-USD"]["delta"]), "{greeks}");

    // An account proof over HTTP verifies against the served root with the
    // engine's own verifier, and only against that root.
    {
        use sibyl_margin::state_root::{AccountProof, verify_account_proof};
        let p = get(
            n.addr,
            &format!("/v1/margin/accounts/{option_account}/proof?wait_ms=0"),
        )
        .await
        .json();
        let h32 = |v: &Value| -> [u8; 32] {
            let s = v.as_str().expect("hex string");
            hex::decode(s.trim_start_matches("0x"))
                .expect("hex")
                .try_into()
                .expect("32 bytes")
        };
        let proof = AccountProof {
            slot: p["proof"]["slot"].as_u64().expect("slot"),
            count: p["proof"]["count"].as_u64().expect("count"),
            siblings: p["proof"]["siblings"]
                .as_array()
                .expect("siblings")
                .iter()
                .map(h32)
                .collect(),
            globals_hash: h32(&p["proof"]["globals_hash"]),
        };
        let root = h32(&p["state_root"]);
        assert_eq!(p["signed"], false, "{p}");
        let state = n
            .margin
            .read()
            .engine
            .account_state(option_account)
            .expect("account");
        assert_eq!(
            p["leaf_preimage"],
            format!("0x{}", hex::encode(state.encode())),
            "served preimage is the engine's account state"
        );
        assert!(
            p["state"]["positions"]
                .as_object()
                .is_some_and(|m| !m.is_empty()),
            "{p}"
        );
        verify_account_proof(&root, &state, &proof).expect("the served proof verifies");
        let mut other = root;
        other[0] ^= 1;
        assert!(verify_account_proof(&other, &state, &proof).is_err());
        assert_eq!(
            proof.size_bytes(),
            p["proof"]["size_bytes"].as_u64().expect("size") as usize
        );
        let missing = get(n.addr, "/v1/margin/accounts/999999999/proof").await;
        assert_eq!(missing.status, 404);
    }

    // Markets: marks, rates and no guard while prices are fresh.
    let m = get(n.addr, "/v1/margin/markets").await.json();
    let perp = m["markets"]
        .as_array()
        .expect("markets")
        .iter()
        .find(|x| x["market"] == "BTC-PERP")
        .expect("BTC-PERP")
        .clone();
    assert_eq!(perp["mark_price"], "6000000000000"); // 60,000 at 8 decimals
    assert_eq!(perp["guarded"], false, "{perp}");
    assert_eq!(perp["guard"], Value::Null);

    // A jump raises the BTC guard: the market says why, and new risk there
    // is refused with the reason.
    n.price(2, now_ms() - 4_000, 80_000 * PX, 3_000 * PX, 150 * PX)
        .await;
    // The cached ranking follows the new input.
    let ids = |v: &Value| -> Vec<(u64, String)> {
        v["units"]
            .as_array()
            .expect("units")
            .iter()
            .map(|u| {
                (
                    u["account"].as_u64().expect("id"),
                    u["health"]["equity"].as_str().expect("equity").to_string(),
                )
            })
            .collect()
    };
    let direct = |n: &Node| -> Vec<(u64, String)> {
        n.margin
            .read()
            .engine
            .closest_to_liquidation(10)
            .iter()
            .map(|r| (r.account, crate::margin::fixed(r.health.equity)))
            .collect()
    };
    assert_ne!(ids(&risk), direct(&n), "the jump moved the ranking");
    let risk2 = get(n.addr, "/v1/margin/at-risk?limit=10").await.json();
    assert_eq!(ids(&risk2), direct(&n));
    let m = get(n.addr, "/v1/margin/markets").await.json();
    let perp = m["markets"]
        .as_array()
        .expect("markets")
        .iter()
        .find(|x| x["market"] == "BTC-PERP")
        .expect("BTC-PERP")
        .clone();
    assert_eq!(perp["guarded"], true, "{perp}");
    assert_eq!(perp["guard"]["reason"], "jump", "{perp}");
    assert!(
        perp["guard"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("recent average"),
        "{perp}"
    );
    let r = n
        .post(
            "/v1/margin/accounts/1/positions",
            r#"{"market": "BTC-PERP", "side": "long", "size": "0.001"}"#,
        )
        .await;
    assert_eq!((r.status, r.error_code().as_str()), (409, "guard_up"));

    // Unknown and malformed account ids.
    let r = get(n.addr, "/v1/margin/accounts/999999").await;
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (404, "unknown_account")
    );
    let r = get(n.addr, "/v1/margin/accounts/abc").await;
    assert_eq!((r.status, r.error_code().as_str()), (400, "bad_parameter"));
    let r = get(n.addr, "/v1/margin/at-risk?limit=0").await;
    assert_eq!((r.status, r.error_code().as_str()), (400, "bad_parameter"));
    let r = get(n.addr, "/v1/margin/at-risk?top=3").await;
    assert_eq!((r.status, r.error_code().as_str()), (400, "bad_parameter"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_commands_apply_through_the_service_and_replay() {
    let n = Node::start().await;
    n.price(2, now_ms() - 1_000, 60_010 * PX, 3_001 * PX, 150 * PX)
        .await;

    // The token is required.
    let r = http(n.addr, "POST", "/v1/margin/accounts", &[], b"{}").await;
    assert_eq!((r.status, r.error_code().as_str()), (401, "missing_token"));
    let r = http(
        n.addr,
        "POST",
        "/v1/margin/accounts/1/positions",
        &[("Authorization", "Bearer nope")],
        b"{}",
    )
    .await;
    assert_eq!((r.status, r.error_code().as_str()), (401, "bad_token"));

    // Create (id chosen by the node), deposit, open, close part, withdraw.
    let r = n.post("/v1/margin/accounts", "").await;
    assert_eq!(r.status, 201, "{}", r.json());
    let id = r.json()["account"].as_u64().expect("id");
    assert_eq!(id, ACCOUNTS as u64 + 1);
    assert_eq!(r.json()["events"][0]["kind"], "account_created");
    let r = n
        .post(
            &format!("/v1/margin/accounts/{id}/deposit"),
            r#"{"amount": "10000.5"}"#,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.json());
    assert_eq!(r.json()["events"][0]["amount"], "10000500000");
    assert_eq!(r.json()["health"]["equity"], "10000500000");
    let r = n
        .post(
            &format!("/v1/margin/accounts/{id}/positions"),
            r#"{"market": "ETH-PERP", "side": "short", "size": "10"}"#,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.json());
    let fill = &r.json()["events"][0];
    assert_eq!(fill["kind"], "filled");
    assert_eq!(fill["size"], "-1000000000");
    assert_eq!(fill["price"], "300100000000");
    let pos = get(n.addr, &format!("/v1/margin/accounts/{id}/positions"))
        .await
        .json();
    assert_eq!(pos["positions"][0]["side"], "short");
    assert_eq!(pos["positions"][0]["entry_price"], "300100000000");
    assert_eq!(
        pos["positions"][0]["greeks"]["delta"],
        "-10000000000000000000"
    );
    let r = n
        .post(
            &format!("/v1/margin/accounts/{id}/positions"),
            r#"{"market": "BTC-PERP", "side": "long", "size": "0.1", "mode": "isolated", "isolated_margin": "1000"}"#,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.json());
    let acct = get(n.addr, &format!("/v1/margin/accounts/{id}"))
        .await
        .json();
    let modes: Vec<&str> = acct["units"]
        .as_array()
        .expect("units")
        .iter()
        .filter_map(|u| u["mode"].as_str())
        .collect();
    assert_eq!(modes, ["cross", "isolated"], "{acct}");
    let r = n
        .post(
            &format!("/v1/margin/accounts/{id}/positions/ETH-PERP/close"),
            r#"{"size": "4"}"#,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.json());
    assert_eq!(r.json()["events"][0]["size"], "400000000");
    let r = n
        .post(
            &format!("/v1/margin/accounts/{id}/withdraw"),
            r#"{"asset": "USD", "amount": "100"}"#,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.json());
    assert_eq!(r.json()["events"][0]["kind"], "withdrawn");

    // Bad commands: a clear error, the engine and the stored log unchanged.
    let exists = format!(r#"{{"account": {id}}}"#);
    let bad: Vec<(String, &str, u16, &str)> = vec![
        (
            format!("/v1/margin/accounts/{id}/positions"),
            r#"{"market": "DOGE-PERP", "side": "long", "size": "1"}"#,
            404,
            "unknown_market",
        ),
        (
            "/v1/margin/accounts/424242/deposit".into(),
            r#"{"amount": "1"}"#,
            404,
            "unknown_account",
        ),
        (
            format!("/v1/margin/accounts/{id}/deposit"),
            r#"{"asset": "XAU", "amount": "1"}"#,
            404,
            "unknown_asset",
        ),
        (
            format!("/v1/margin/accounts/{id}/positions"),
            r#"{"market": "ETH-PERP", "side": "long", "size": "-1"}"#,
            400,
            "not_positive",
        ),
        (
            format!("/v1/margin/accounts/{id}/positions"),
            r#"{"market": "ETH-PERP", "side": "long", "size": "0"}"#,
            400,
            "not_positive",
        ),
        (
            format!("/v1/margin/accounts/{id}/deposit"),
            r#"{"amount": "-5"}"#,
            400,
            "not_positive",
        ),
        (
            format!("/v1/margin/accounts/{id}/positions"),
            r#"{"market": "ETH-PERP", "side": "long", "size": "99999999999999999999999999999"}"#,
            400,
            "overflow",
        ),
        (
            format!("/v1/margin/accounts/{id}/deposit"),
            r#"{"amount": "999999999999999999999999999999999999999999"}"#,
            400,
            "overflow",
        ),
        (
            format!("/v1/margin/accounts/{id}/positions"),
            r#"{"market": "ETH-PERP", "side": "long", "size": "1000"}"#,
            422,
            "insufficient_margin",
        ),
        (
            format!("/v1/margin/accounts/{id}/withdraw"),
            r#"{"amount": "8000"}"#,
            422,
            "insufficient_margin",
        ),
        (
            format!("/v1/margin/accounts/{id}/withdraw"),
            r#"{"asset": "BTC", "amount": "1"}"#,
            422,
            "insufficient_balance",
        ),
        (
            format!("/v1/margin/accounts/{id}/positions/ETH-PERP/close"),
            r#"{"size": "7"}"#,
            422,
            "exceeds_position",
        ),
        (
            format!("/v1/margin/accounts/{id}/positions/SOL-PERP/close"),
            "",
            404,
            "no_position",
        ),
        (
            format!("/v1/margin/accounts/{id}/positions"),
            r#"{"market": "BTC-PERP", "side": "long", "size": "0.1"}"#,
            409,
            "margin_mode_conflict",
        ),
        ("/v1/margin/accounts".into(), &exists, 409, "account_exists"),
        (
            format!("/v1/margin/accounts/{id}/positions"),
            r#"{"market": "ETH-PERP", "side": "long", "size": 1.5}"#,
            400,
            "bad_json",
        ),
        (
            format!("/v1/margin/accounts/{id}/positions"),
            r#"{"market": "ETH-PERP", "side": "up", "size": "1"}"#,
            400,
            "bad_json",
        ),
        (
            format!("/v1/margin/accounts/{id}/deposit"),
            r#"{"amount": "1", "extra": true}"#,
            400,
            "bad_json",
        ),
        (
            format!("/v1/margin/accounts/{id}/deposit"),
            r#"{"amount": "#,
            400,
            "bad_json",
        ),
        (
            format!("/v1/margin/accounts/{id}/deposit"),
            r#"{"amount": "1.0000001"}"#,
            400,
            "bad_parameter",
        ),
        (
            format!("/v1/margin/accounts/{id}/deposit"),
            r#"{"amount": "1e3"}"#,
            400,
            "bad_parameter",
        ),
        (
            "/v1/margin/accounts/-1/deposit".into(),
            r#"{"amount": "1"}"#,
            400,
            "bad_parameter",
        ),
    ];
    let before = n.margin.read().engine.snapshot();
    let inputs_before = n.stored_inputs();
    for (path, body, status, code) in &bad {
        let r = n.post(path, body).await;
        assert_eq!(
            (r.status, r.error_code().as_str()),
            (*status, *code),
            "POST {path} {body}: {}",
            r.json()
        );
        assert!(
            !r.json()["error"]["message"]
                .as_str()
                .unwrap_or("")
                .is_empty(),
            "{path}"
        );
        assert_eq!(
            n.margin.read().engine.snapshot(),
            before,
            "{path} {body} changed the engine"
        );
    }
    assert_eq!(
        n.stored_inputs(),
        inputs_before,
        "a refused command was stored"
    );

    // The log of inputs (book, reports, commands) replays to the same events.
    let r = n.replayed().await;
    assert_eq!(r.insurance_fund, n.margin.read().engine.insurance_fund());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn liquidations_are_served_newest_first_in_pages() {
    let n = Node::start().await;
    // A falling market: 1 % per report.
    let (mut btc, mut eth, mut sol) = (60_000 * PX, 3_000 * PX, 150 * PX);
    let t = now_ms() - 4_000;
    for i in 0..8u64 {
        btc = btc * 99 / 100;
        eth = eth * 99 / 100;
        sol = sol * 99 / 100;
        n.price(2 + i, t + i * 100, btc, eth, sol).await;
    }
    let total = n
        .store
        .readers
        .read_blocking(|db| db.margin_events_of_kind_before("liquidated", None, 10_000))
        .expect("events")
        .len();
    assert!(
        total >= 3,
        "a 8 % fall liquidates part of the book ({total})"
    );

    let mut seen = Vec::new();
    let mut path = "/v1/margin/liquidations?limit=2".to_string();
    loop {
        let page = get(n.addr, &path).await.json();
        let rows = page["liquidations"].as_array().expect("rows").clone();
        assert!(rows.len() <= 2);
        for r in &rows {
            assert_eq!(r["kind"], "liquidated");
            assert!(
                r["liquidation"] == "partial" || r["liquidation"] == "full",
                "{r}"
            );
            assert!(
                is_fixed(&r["penalty"]) && is_fixed(&r["before"]["equity"]),
                "{r}"
            );
            // Parts per million: below 1.0 is below 1,000,000.
            let before: i64 = r["before"]["margin_ratio"]
                .as_str()
                .expect("ratio")
                .parse()
                .expect("integer");
            assert!(before < 1_000_000, "liquidated only below maintenance: {r}");
            seen.push(r["seq"].as_u64().expect("seq"));
        }
        match page["next_before"].as_u64() {
            Some(b) => path = format!("/v1/margin/liquidations?limit=2&before={b}"),
            None => break,
        }
    }
    assert_eq!(seen.len(), total);
    assert!(
        seen.windows(2).all(|w| w[0] > w[1]),
        "newest first: {seen:?}"
    );
    let r = get(n.addr, "/v1/margin/liquidations?before=x").await;
    assert_eq!((r.status, r.error_code().as_str()), (400, "bad_parameter"));

    // Metrics count the same liquidations and pass promtool.
    let text = String::from_utf8(get(n.addr, "/metrics").await.body).expect("utf8");
    let value = |name: &str| -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("{name} missing:\n{text}"))
    };
    assert_eq!(value("sibyl_margin_liquidations_total"), total as f64);
    assert_eq!(value("sibyl_margin_accounts"), ACCOUNTS as f64);
    assert_eq!(value("sibyl_margin_inputs_total"), n.stored_inputs() as f64);
    assert!(value("sibyl_margin_insurance_fund_usd") > 1_000_000.0);
    // Eight reports after the one that seeded the book (stored as a batch).
    // Each with its two costly phases.
    for kind in ["prices", "examinations", "root"] {
        assert!(
            text.contains(&format!(
                r#"sibyl_margin_step_duration_seconds_count{{kind="{kind}"}} 8"#
            )),
            "{kind}: {text}"
        );
    }
    let mut promtool = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect(
            "promtool not found: install Debian's `prometheus` package (scripts/setup.d/30-api)",
        );
    {
        use std::io::Write;
        let mut stdin = promtool.stdin.take().expect("stdin");
        stdin.write_all(text.as_bytes()).expect("feed promtool");
    }
    let out = promtool.wait_with_output().expect("promtool");
    assert!(
        out.status.success(),
        "promtool: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    // The penalty's insurance share shows up in the fund's movements.
    let ins = get(n.addr, "/v1/margin/insurance?limit=5").await.json();
    assert!(
        ins["recent"]
            .as_array()
            .expect("recent")
            .iter()
            .any(|e| e["reason"] == "penalty" || e["reason"] == "bad_debt"),
        "{ins}"
    );
}

/// Keys whose values are plain JSON integers: counts, ids, rounds, times
/// (`*_ms`, `from`, `to`) and scales. Any other number in a response is a fixed-point
/// value that drifted from the convention.
const INTEGER_KEYS: &[&str] = &[
    "account",
    "accounts",
    "accounts_total",
    "count",
    "decimals",
    // A leaf's flag bits (history points; /v1/feeds names them).
    "flags",
    "from",
    "leaf_count",
    "leaf_index",
    "next_before",
    "next_from",
    // An account's signed-command counter, not a value.
    "nonce",
    "num_observations",
    "positions",
    "rank",
    "round",
    "seq",
    "to",
    // How many venues a leaf's price came from: a count, not a value.
    "venues",
    "version",
];

/// Where `v` breaks the API's one convention for fixed-point values (a
/// string of digits, never a JSON number, never a decimal point). The
/// `report` object is the signed report in its own serde form (what `sibyl
/// verify` reads) and is left out.
fn convention_breaks(path: &str, key: &str, v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                if k == "report" || (k == "decimals" && x.is_object()) {
                    continue;
                }
                convention_breaks(&format!("{path}.{k}"), k, x, out);
            }
        }
        Value::Array(a) => {
            for (i, x) in a.iter().enumerate() {
                convention_breaks(&format!("{path}[{i}]"), key, x, out);
            }
        }
        Value::Number(_) if !(INTEGER_KEYS.contains(&key) || key.ends_with("_ms")) => {
            out.push(format!("{path} is a JSON number: {v}"));
        }
        Value::String(s) => {
            let t = s.strip_prefix('-').unwrap_or(s);
            if let Some((i, f)) = t.split_once('.')
                && !i.is_empty()
                && i.bytes().chain(f.bytes()).all(|b| b.is_ascii_digit())
            {
                out.push(format!("{path} is a decimal string: {s}"));
            }
        }
        _ => {}
    }
}

/// One price-text convention on every route: the feed routes, the stream
/// and the margin routes render prices, amounts, rates and Greeks as the
/// fixed-point integer in a string, with the scale beside it; the same
/// feed's price reads the same on `/v1/feeds` and `/v1/margin/markets`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_renders_fixed_point_values_one_way() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let n = Node::start().await;
    // A fill and a liquidation, so events of every kind are served.
    let r = n.post("/v1/margin/accounts", r#"{"account": 9001}"#).await;
    assert_eq!(r.status, 201, "{}", r.json());
    let deposit = n
        .post(
            "/v1/margin/accounts/9001/deposit",
            r#"{"amount": "2500.5"}"#,
        )
        .await;
    assert_eq!(deposit.status, 200, "{}", deposit.json());
    let fill = n
        .post(
            "/v1/margin/accounts/9001/positions",
            r#"{"market": "BTC-PERP", "side": "long", "size": "0.25"}"#,
        )
        .await;
    assert_eq!(fill.status, 200, "{}", fill.json());
    assert_eq!(deposit.json()["events"][0]["amount"], "2500500000");

    // The stream, subscribed before the next report.
    let subscribed = n.reports.receiver_count();
    let mut stream = tokio::net::TcpStream::connect(n.addr)
        .await
        .expect("connect");
    stream
        .write_all(b"GET /v1/stream HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n")
        .await
        .expect("write");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while n.reports.receiver_count() <= subscribed {
        assert!(
            tokio::time::Instant::now() < deadline,
            "stream never subscribed"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // A falling market, 1 % per report (as in the liquidations test).
    let (mut btc, mut eth, mut sol) = (60_000 * PX, 3_000 * PX, 150 * PX);
    let t = now_ms() - 4_000;
    let first_btc = btc * 99 / 100;
    for i in 0..8u64 {
        btc = btc * 99 / 100;
        eth = eth * 99 / 100;
        sol = sol * 99 / 100;
        n.price(2 + i, t + i * 100, btc, eth, sol).await;
    }
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let event: Value = loop {
        let got = tokio::time::timeout_at(deadline, stream.read(&mut chunk))
            .await
            .expect("event in time")
            .expect("read");
        assert!(got > 0, "stream closed");
        buf.extend_from_slice(&chunk[..got]);
        let text = String::from_utf8_lossy(&buf);
        if let Some(data) = text
            .lines()
            .find_map(|l| l.strip_prefix("data: "))
            .filter(|d| d.ends_with('}'))
        {
            break serde_json::from_str(data).expect("event JSON");
        }
    };

    let mut breaks = Vec::new();
    let mut bodies = BTreeMap::new();
    for path in [
        "/v1/feeds",
        "/v1/feeds/BTC-USD/latest",
        "/v1/feeds/BTC-USD/history",
        "/v1/feeds/BTC-USD/history?interval=1m",
        "/v1/margin/accounts/9001",
        "/v1/margin/accounts/9001/positions",
        "/v1/margin/accounts/9001/greeks",
        "/v1/margin/at-risk?limit=50",
        "/v1/margin/liquidations?limit=50",
        "/v1/margin/insurance?limit=50",
        "/v1/margin/markets",
    ] {
        let r = get(n.addr, path).await;
        assert_eq!(r.status, 200, "{path}");
        let v = r.json();
        convention_breaks(path, "", &v, &mut breaks);
        bodies.insert(path, v);
    }
    for (what, v) in [
        ("deposit", deposit.json()),
        ("fill", fill.json()),
        ("stream", event.clone()),
    ] {
        convention_breaks(what, "", &v, &mut breaks);
    }
    assert!(breaks.is_empty(), "{breaks:#?}");
    // The walk saw the values it is about (a route that lost them would
    // pass it vacuously).
    let liquidations = bodies["/v1/margin/liquidations?limit=50"]["liquidations"]
        .as_array()
        .expect("liquidations")
        .len();
    assert!(liquidations > 0, "the falling market liquidated someone");
    assert_eq!(event["round"], 2);
    assert_eq!(event["leaves"][0]["price"], first_btc.to_string());

    // The same feed, the same text, the same scale, on both families.
    let feeds = &bodies["/v1/feeds"]["feeds"];
    let margin_feeds = &bodies["/v1/margin/markets"]["feeds"];
    for id in ["BTC-USD", "ETH-USD", "SOL-USD"] {
        let f = feeds
            .as_array()
            .and_then(|a| a.iter().find(|f| f["feed_id"] == id))
            .expect("feed");
        let m = margin_feeds
            .as_array()
            .and_then(|a| a.iter().find(|f| f["feed"] == id))
            .expect("margin feed");
        assert_eq!(f["decimals"], m["decimals"], "{id}");
        assert_eq!(f["price"], m["price"], "{id}: {f} vs {m}");
        assert_eq!(f["confidence"], m["confidence"], "{id}");
    }
    assert_eq!(
        bodies["/v1/margin/markets"]["decimals"],
        serde_json::json!({"money": 6, "price": 8, "size": 8, "rate": 6, "greek": 18})
    );
}

/// The proof route waits for a signed report to carry the state it proves
/// and answers with that report; a bad `wait_ms` is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_account_proof_comes_with_the_report_that_carries_its_state() {
    let n = Node::start().await;
    let at = n.margin.read().last_state.expect("a state after round 1");
    assert_eq!(at.round, 1);
    let addr = n.addr;
    let pending = tokio::spawn(async move {
        get(addr, "/v1/margin/accounts/3/proof?wait_ms=10000")
            .await
            .json()
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut next = (*report(2, now_ms() - 4_000, 60_000 * PX, 3_000 * PX, 150 * PX)).clone();
    next.margin_state = Some(at);
    n.publish(Arc::new(next.clone())).await;
    let p = pending.await.expect("proof task");
    assert_eq!(p["signed"], true, "{p}");
    assert_eq!(p["state_round"], 1, "{p}");
    assert_eq!(p["state_root"], format!("0x{}", hex::encode(at.root)));
    let served: SignedReport =
        serde_json::from_value(p["report"].clone()).expect("the report as JSON");
    assert_eq!(served, next);
    // The proof verifies against the carried root.
    let preimage = hex::decode(
        p["leaf_preimage"]
            .as_str()
            .unwrap()
            .trim_start_matches("0x"),
    )
    .expect("hex");
    let state = sibyl_margin::state_root::AccountState::decode(&preimage).expect("preimage");
    assert_eq!(state.account, 3);
    // Without a carrying report the route answers unsigned once it stops waiting.
    let p = get(n.addr, "/v1/margin/accounts/3/proof?wait_ms=200")
        .await
        .json();
    assert_eq!(p["signed"], false, "{p}");
    assert!(p.get("report").is_none(), "{p}");
    for bad in ["wait_ms=30001", "wait_ms=soon", "later=1"] {
        let r = get(n.addr, &format!("/v1/margin/accounts/3/proof?{bad}")).await;
        assert_eq!(r.status, 400, "{bad}: {}", String::from_utf8_lossy(&r.body));
    }
}

/// `POST /v1/margin/signed` without a token: an owned account's withdrawal
/// applies when its owner signed it and is refused as an admin command;
/// every malformed, forged, replayed or unsignable envelope is refused with
/// its own code and changes nothing; self-registration; the account and
/// its proof show owner and nonce; the log replays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_commands_need_the_owners_key_not_the_token() {
    use sibyl_margin::{Command, SignedCommand, signed::public_key};
    let n = Node::start().await;
    n.price(2, now_ms() - 1_000, 60_010 * PX, 3_001 * PX, 150 * PX)
        .await;
    let secret = [3u8; 32];
    let owner = hex::encode(public_key(&secret));
    let r = n
        .post(
            "/v1/margin/accounts",
            &format!(r#"{{"account": 500, "owner": "{owner}"}}"#),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.json());
    assert_eq!(r.json()["events"][0]["owner"], owner.as_str());
    let r = n
        .post("/v1/margin/accounts/500/deposit", r#"{"amount": "10000"}"#)
        .await;
    assert_eq!(r.status, 200, "{}", r.json());
    let acct = get(n.addr, "/v1/margin/accounts/500").await.json();
    assert_eq!(
        (acct["owner"].as_str(), acct["nonce"].as_u64()),
        (Some(owner.as_str()), Some(0))
    );
    let demo = get(n.addr, "/v1/margin/accounts/1").await.json();
    assert_eq!(
        (demo["owner"].clone(), demo["nonce"].as_u64()),
        (Value::Null, Some(0))
    );

    let withdraw = |account: u64, amount: i128| {
        serde_json::to_string(&Command::Withdraw {
            account,
            asset: "USD".into(),
            amount,
        })
        .unwrap()
    };
    let post_signed = |body: String| async move {
        http(
            n.addr,
            "POST",
            "/v1/margin/signed",
            &[("Content-Type", "application/json")],
            body.as_bytes(),
        )
        .await
    };
    // A client learns the committee key the signed bytes name from the API.
    let signing = get(n.addr, "/v1/margin/signing").await.json();
    assert_eq!(signing["domain"], "Sibyl margin command v2");
    assert_eq!(signing["committee_key"], committee().to_hex());
    let served =
        sibyl_margin::CommitteeKey::from_hex(signing["committee_key"].as_str().unwrap()).unwrap();
    let env = |s: &[u8; 32], account, nonce, command: String| {
        serde_json::to_string(&SignedCommand::sign(s, &served, account, nonce, command)).unwrap()
    };
    // The same owner's envelope, signed for another committee's book.
    let elsewhere = sibyl_margin::CommitteeKey::new(vec![0x5B; 32]).unwrap();
    let misdirected = serde_json::to_string(&SignedCommand::sign(
        &secret,
        &elsewhere,
        500,
        2,
        withdraw(500, 1),
    ))
    .unwrap();

    // The owner's signed withdrawal applies, without any token.
    let r = post_signed(env(&secret, 500, 1, withdraw(500, 1_000_000_000))).await;
    assert_eq!(r.status, 200, "{}", r.json());
    assert_eq!(r.json()["events"][0]["kind"], "withdrawn");
    assert_eq!(r.json()["health"]["equity"], "9000000000");
    let acct = get(n.addr, "/v1/margin/accounts/500").await.json();
    assert_eq!(acct["nonce"], 1);

    let mut forged: SignedCommand =
        serde_json::from_str(&env(&secret, 500, 2, withdraw(500, 1))).unwrap();
    forged.signature[0] ^= 0x80;
    let big = env(
        &secret,
        500,
        2,
        format!("{:width$}", withdraw(500, 1), width = 5_000),
    );
    let bad: Vec<(String, u16, &str, &str)> = vec![
        // The admin route cannot move an owned account.
        (String::new(), 403, "unauthorized", "signed by the owner"),
        (
            env(&secret, 500, 1, withdraw(500, 1)),
            409,
            "stale_nonce",
            "current nonce 1",
        ),
        (
            env(&[4u8; 32], 500, 2, withdraw(500, 1)),
            401,
            "bad_signature",
            "owner key",
        ),
        (
            serde_json::to_string(&forged).unwrap(),
            401,
            "bad_signature",
            "owner key",
        ),
        (misdirected, 401, "bad_signature", "owner key"),
        (
            env(
                &secret,
                500,
                2,
                serde_json::to_string(&Command::Deposit {
                    account: 500,
                    asset: "USD".into(),
                    amount: 1,
                })
                .unwrap(),
            ),
            403,
            "not_signable",
            "deposit",
        ),
        (
            env(&secret, 1, 2, withdraw(1, 1)),
            403,
            "no_owner",
            "account 1",
        ),
        (
            env(&secret, 500, 2, withdraw(1, 1)),
            400,
            "account_mismatch",
            "account 1",
        ),
        (
            env(&secret, 500, 2, "{\"withdraw\":1}".into()),
            400,
            "bad_command",
            "not a margin command",
        ),
        (
            r#"{"account": 500, "command": "{}", "signature": "00"}"#.into(),
            400,
            "bad_envelope",
            "`nonce`",
        ),
        (
            r#"{"account": -1, "nonce": 2, "command": "{}", "signature": "00"}"#.into(),
            400,
            "bad_envelope",
            "`account`",
        ),
        (
            r#"{"account": 500, "nonce": 2, "command": "{}", "signature": "zz"}"#.into(),
            400,
            "bad_envelope",
            "`signature`",
        ),
        (
            r#"{"account": 500, "nonce": 2, "command": {}, "signature": "00"}"#.into(),
            400,
            "bad_envelope",
            "`command`",
        ),
        (
            format!(
                r#"{{"account": 500, "nonce": 2, "command": "{{}}", "signature": "{}", "x": 1}}"#,
                "00".repeat(64)
            ),
            400,
            "bad_envelope",
            "`x`",
        ),
        ("[1]".into(), 400, "bad_envelope", "JSON object"),
        (big, 413, "command_too_large", "4096"),
        (
            env(&secret, 777, 1, withdraw(777, 1)),
            404,
            "unknown_account",
            "777",
        ),
    ];
    let before = n.margin.read().engine.snapshot();
    let inputs_before = n.stored_inputs();
    for (body, status, code, says) in &bad {
        let r = if body.is_empty() {
            n.post("/v1/margin/accounts/500/withdraw", r#"{"amount": "1"}"#)
                .await
        } else {
            post_signed(body.clone()).await
        };
        assert_eq!(
            (r.status, r.error_code().as_str()),
            (*status, *code),
            "{body}: {}",
            r.json()
        );
        let message = r.json()["error"]["message"]
            .as_str()
            .unwrap_or("")
            .to_owned();
        assert!(message.contains(says), "{code}: {message}");
        assert!(!message.contains(&hex::encode(secret)), "{message}");
        assert_eq!(
            n.margin.read().engine.snapshot(),
            before,
            "{body} changed the engine"
        );
    }
    assert_eq!(
        n.stored_inputs(),
        inputs_before,
        "a refused command was stored"
    );

    // Self-registration: a new key signs its own account's creation.
    let secret2 = [8u8; 32];
    let create = serde_json::to_string(&Command::CreateAccount {
        account: 501,
        owner: Some(public_key(&secret2)),
    })
    .unwrap();
    let r = post_signed(env(&secret2, 501, 1, create)).await;
    assert_eq!(r.status, 201, "{}", r.json());
    let acct = get(n.addr, "/v1/margin/accounts/501").await.json();
    assert_eq!(acct["owner"], hex::encode(public_key(&secret2)));

    // The proof's state shows owner and nonce, from the proven leaf.
    n.price(3, now_ms(), 60_010 * PX, 3_001 * PX, 150 * PX)
        .await;
    let p = get(n.addr, "/v1/margin/accounts/500/proof?wait_ms=0")
        .await
        .json();
    assert_eq!(p["state"]["owner"], owner.as_str());
    assert_eq!(p["state"]["nonce"], 1);
    let preimage = hex::decode(
        p["leaf_preimage"]
            .as_str()
            .unwrap()
            .trim_start_matches("0x"),
    )
    .unwrap();
    let st = sibyl_margin::state_root::AccountState::decode(&preimage).unwrap();
    assert_eq!(
        (st.state.owner, st.state.nonce),
        (Some(public_key(&secret)), 1)
    );

    n.replayed().await;
}
