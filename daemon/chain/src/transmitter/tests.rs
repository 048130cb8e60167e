//! The transmitter's schedule, due-feed selection, fees, nonces and
//! replacement against a fake chain (the real chain is in
//! daemon/tests/chain_anvil.rs).

use super::*;
use crate::abi::{submitFeedsCall, submitReportCall};
use crate::rpc::Receipt;
use alloy_primitives::Address;
use alloy_sol_types::SolCall;
use serde_json::Value;
use sibyl_aggregator::ConfigDigest;
use std::sync::Mutex;

const VECTORS: &str = include_str!("../../../../aggregator/vectors/report_vectors.json");

fn unhex(s: &str) -> Vec<u8> {
    hex::decode(s.trim_start_matches("0x")).expect("hex")
}

/// The three-feed vector report (BTC-USD, ETH-USD, WTI-SPREAD; round 2).
fn report() -> (Arc<SignedReport>, EvmGroupKey) {
    let v: Value = serde_json::from_str(VECTORS).expect("vectors");
    let c = &v["cases"][1];
    let digest: [u8; 32] = unhex(c["header"]["config_digest"].as_str().expect("d"))
        .try_into()
        .expect("32");
    let r = SignedReport::decode_expecting(
        &unhex(c["report_wire"].as_str().expect("wire")),
        &ConfigDigest(digest),
    )
    .expect("decode");
    let key = EvmGroupKey::from_compressed(&unhex(
        v["committee"]["secp256k1_evm"]["group_public_key"]
            .as_str()
            .expect("key"),
    ))
    .expect("key");
    (Arc::new(r), key)
}

#[derive(Default)]
struct Chain {
    onchain: BTreeMap<FeedId, OnChainValue>,
    nonce: u64,
    sent: Vec<TxParams>,
    receipts: BTreeMap<B256, Receipt>,
    suggested: Option<Fees>,
    balance: u128,
    estimate_error: Option<RpcError>,
}

#[derive(Clone, Default)]
struct FakeRpc(Arc<Mutex<Chain>>);

impl FakeRpc {
    fn chain(&self) -> std::sync::MutexGuard<'_, Chain> {
        self.0.lock().expect("lock")
    }
}

impl ChainRpc for FakeRpc {
    fn address(&self) -> Address {
        Address::repeat_byte(0x11)
    }
    async fn chain_id(&self) -> Result<u64, RpcError> {
        Ok(31337)
    }
    async fn latest_feeds(&self, feeds: &[FeedId]) -> Result<Vec<Option<OnChainValue>>, RpcError> {
        let c = self.chain();
        Ok(feeds.iter().map(|f| c.onchain.get(f).copied()).collect())
    }
    async fn pending_nonce(&self) -> Result<u64, RpcError> {
        Ok(self.chain().nonce)
    }
    async fn suggested_fees(&self) -> Result<Fees, RpcError> {
        Ok(self.chain().suggested.unwrap_or(Fees {
            max_fee_per_gas: 3_000_000_000,
            max_priority_fee_per_gas: 1_000_000_000,
        }))
    }
    async fn balance(&self) -> Result<u128, RpcError> {
        Ok(self.chain().balance)
    }
    async fn estimate_gas(&self, _calldata: &[u8]) -> Result<u64, RpcError> {
        match self.chain().estimate_error.clone() {
            Some(e) => Err(e),
            None => Ok(40_000),
        }
    }
    async fn send(&self, tx: &TxParams) -> Result<B256, RpcError> {
        let mut c = self.chain();
        if tx.nonce < c.nonce {
            return Err(RpcError::NonceTooLow(format!("{} < {}", tx.nonce, c.nonce)));
        }
        c.sent.push(tx.clone());
        Ok(B256::with_last_byte(c.sent.len() as u8))
    }
    async fn receipt(&self, hash: B256) -> Result<Option<Receipt>, RpcError> {
        Ok(self.chain().receipts.get(&hash).copied())
    }
}

fn rules() -> BTreeMap<FeedId, FeedRule> {
    ["BTC-USD", "ETH-USD", "WTI-SPREAD"]
        .into_iter()
        .map(|id| {
            (
                FeedId::new(id).expect("id"),
                FeedRule {
                    deviation_bps: 50,
                    heartbeat_ms: 3_600_000,
                },
            )
        })
        .collect()
}

/// Member `member` of 4; round r's leader is member (r mod 4) + 1.
fn transmitter(member: u16, rpc: FakeRpc, key: EvmGroupKey) -> Transmitter<FakeRpc> {
    let schedule = Schedule {
        member,
        leader: Arc::new(|r| (r % 4) as u16 + 1),
        n: 4,
    };
    let settings = Settings {
        stagger: Duration::from_secs(2),
        max_fee_per_gas: 10_000_000_000,
        max_priority_fee_per_gas: 2_000_000_000,
        replace_after: Duration::from_secs(30),
        poll_interval: Duration::from_millis(500),
        low_balance_updates: 100,
    };
    Transmitter::new(
        rpc,
        key,
        rules(),
        schedule,
        settings,
        ChainMetrics::default(),
    )
}

fn rich() -> FakeRpc {
    let rpc = FakeRpc::default();
    rpc.chain().balance = 10u128.pow(20);
    rpc
}

#[tokio::test]
async fn the_leader_pushes_the_whole_report_at_once_and_counts_the_receipt() {
    let (report, key) = report();
    let rpc = rich();
    // round 2: leader is member 3
    let mut t = transmitter(3, rpc.clone(), key);
    let t0 = Instant::now();
    t.on_report(report.clone(), t0);
    t.on_tick(t0).await;
    let sent = rpc.chain().sent.clone();
    assert_eq!(sent.len(), 1);
    let call = submitReportCall::abi_decode(&sent[0].calldata).expect("submitReport");
    assert_eq!(call.leaves.len(), 3);
    assert_eq!(call.meta.round, 2);
    assert_eq!(sent[0].nonce, 0);
    assert_eq!(sent[0].gas_limit, 40_000 + 10_000 + 10_000);
    assert_eq!(t.metrics().sent.get(), 1);

    rpc.chain().receipts.insert(
        B256::with_last_byte(1),
        Receipt {
            success: true,
            gas_used: 61_000,
            effective_gas_price: 2_000_000_000,
        },
    );
    land(
        &rpc,
        &report,
        &report
            .leaves
            .iter()
            .map(|l| l.feed_id.clone())
            .collect::<Vec<_>>(),
    );
    t.on_tick(t0 + Duration::from_secs(1)).await;
    assert_eq!(t.metrics().confirmed.get(), 1);
    // the follow-up read finds everything landed: nothing resent
    assert_eq!(rpc.chain().sent.len(), 1);
    assert_eq!(t.metrics().gas_used.get(), 61_000);
    assert_eq!(t.metrics().feeds_pushed.get(), 3);
    assert_eq!(t.metrics().fees_paid_wei.get(), 61_000.0 * 2e9);
    // The next report goes out with the next nonce.
    let mut newer = (*report).clone();
    newer.header.timestamp_ms += 1_000;
    for l in &mut newer.leaves {
        l.price += l.price / 50; // past the 0.5 % deviation
    }
    rpc.chain().nonce = 1;
    t.on_report(Arc::new(newer), t0 + Duration::from_secs(2));
    t.on_tick(t0 + Duration::from_secs(2)).await;
    assert_eq!(rpc.chain().sent.last().map(|s| s.nonce), Some(1));
}

/// `feeds` of `report` hold its values on chain.
fn land(rpc: &FakeRpc, report: &SignedReport, feeds: &[FeedId]) {
    for l in report.leaves.iter().filter(|l| feeds.contains(&l.feed_id)) {
        rpc.chain().onchain.insert(
            l.feed_id.clone(),
            OnChainValue {
                price: l.price,
                timestamp_ms: report.header.timestamp_ms,
                round_id: 1,
            },
        );
    }
}

#[tokio::test]
async fn after_a_receipt_what_did_not_land_is_sent_again() {
    let (report, key) = report();
    let rpc = rich();
    let mut t = transmitter(3, rpc.clone(), key);
    let t0 = Instant::now();
    t.on_report(report.clone(), t0);
    t.on_tick(t0).await;
    assert_eq!(rpc.chain().sent.len(), 1);
    // Someone copied one leaf and landed it first, and our batch reverted anyway
    // (out of gas, or an older contract): only that leaf is on chain.
    let griefed = report.leaves[1].feed_id.clone();
    land(&rpc, &report, std::slice::from_ref(&griefed));
    rpc.chain().receipts.insert(
        B256::with_last_byte(1),
        Receipt {
            success: false,
            gas_used: 30_000,
            effective_gas_price: 1,
        },
    );
    rpc.chain().nonce = 1;
    t.on_tick(t0 + Duration::from_secs(1)).await;
    let sent = rpc.chain().sent.clone();
    assert_eq!(sent.len(), 2, "the rest was not resent");
    let call = submitFeedsCall::abi_decode(&sent[1].calldata).expect("submitFeeds");
    let ids: Vec<B256> = call.leaves.iter().map(|l| l.feedId).collect();
    assert_eq!(ids.len(), 2);
    assert!(!ids.contains(&B256::from(griefed.to_bytes32())));
    assert_eq!(sent[1].nonce, 1);
    // That one lands; the next follow-up finds nothing to send.
    rpc.chain().receipts.insert(
        B256::with_last_byte(2),
        Receipt {
            success: true,
            gas_used: 50_000,
            effective_gas_price: 1,
        },
    );
    let all: Vec<FeedId> = report.leaves.iter().map(|l| l.feed_id.clone()).collect();
    land(&rpc, &report, &all);
    t.on_tick(t0 + Duration::from_secs(2)).await;
    assert_eq!(rpc.chain().sent.len(), 2);
    assert_eq!(t.metrics().confirmed.get(), 1);
    assert_eq!(t.metrics().failed.get(), 1);
}

#[tokio::test]
async fn followers_wait_their_turn_and_skip_what_landed() {
    let (report, key) = report();
    let rpc = rich();
    // leader of round 2 is member 3; member 1 has rank 2: 4 s later
    let mut t = transmitter(1, rpc.clone(), key);
    let t0 = Instant::now();
    t.on_report(report.clone(), t0);
    assert_eq!(t.next_wake(t0), t0 + Duration::from_secs(4));
    t.on_tick(t0 + Duration::from_secs(3)).await;
    assert!(rpc.chain().sent.is_empty(), "sent before its turn");
    // the leader's transaction landed meanwhile
    for l in &report.leaves {
        rpc.chain().onchain.insert(
            l.feed_id.clone(),
            OnChainValue {
                price: l.price,
                timestamp_ms: report.header.timestamp_ms,
                round_id: 1,
            },
        );
    }
    t.on_tick(t0 + Duration::from_secs(4)).await;
    assert!(
        rpc.chain().sent.is_empty(),
        "pushed a report that had landed"
    );
    assert_eq!(t.metrics().skipped.get(), 1);
}

#[tokio::test]
async fn only_feeds_past_deviation_or_heartbeat_are_pushed_with_proofs() {
    let (report, key) = report();
    let rpc = rich();
    let ts = report.header.timestamp_ms;
    let btc = &report.leaves[0];
    let eth = &report.leaves[1];
    let wti = &report.leaves[2];
    {
        let mut c = rpc.chain();
        // BTC-USD: 0.1% away, recent -> not due (50 bps)
        c.onchain.insert(
            btc.feed_id.clone(),
            OnChainValue {
                price: btc.price - btc.price / 1000,
                timestamp_ms: ts - 1_000,
                round_id: 1,
            },
        );
        // ETH-USD: 1% away -> due
        c.onchain.insert(
            eth.feed_id.clone(),
            OnChainValue {
                price: eth.price - eth.price / 100,
                timestamp_ms: ts - 1_000,
                round_id: 1,
            },
        );
        // WTI-SPREAD: unchanged but its heartbeat elapsed -> due
        c.onchain.insert(
            wti.feed_id.clone(),
            OnChainValue {
                price: wti.price,
                timestamp_ms: ts - 3_600_000,
                round_id: 1,
            },
        );
    }
    let mut t = transmitter(3, rpc.clone(), key);
    let t0 = Instant::now();
    t.on_report(report.clone(), t0);
    t.on_tick(t0).await;
    let sent = rpc.chain().sent.clone();
    assert_eq!(sent.len(), 1);
    let call = submitFeedsCall::abi_decode(&sent[0].calldata).expect("submitFeeds");
    let ids: Vec<B256> = call.leaves.iter().map(|l| l.feedId).collect();
    assert_eq!(
        ids,
        vec![
            B256::from(eth.feed_id.to_bytes32()),
            B256::from(wti.feed_id.to_bytes32())
        ]
    );
    assert_eq!(call.proofs.len(), 2);
    assert!(call.proofs.iter().all(|p| !p.is_empty()));
}

#[tokio::test]
async fn fees_are_capped_and_a_stuck_transaction_is_replaced_at_the_same_nonce() {
    let (report, key) = report();
    let rpc = rich();
    rpc.chain().nonce = 7;
    rpc.chain().suggested = Some(Fees {
        max_fee_per_gas: 50_000_000_000, // above the 10 gwei cap
        max_priority_fee_per_gas: 1_000_000_000,
    });
    let mut t = transmitter(3, rpc.clone(), key);
    let t0 = Instant::now();
    t.on_report(report.clone(), t0);
    t.on_tick(t0).await;
    let first = rpc.chain().sent[0].clone();
    assert_eq!(first.nonce, 7);
    assert_eq!(first.fees.max_fee_per_gas, 10_000_000_000);
    assert_eq!(first.fees.max_priority_fee_per_gas, 1_000_000_000);

    // no receipt for 30 s: replaced, same nonce, tip +25%, max fee stays at the cap
    t.on_tick(t0 + Duration::from_secs(10)).await;
    assert_eq!(rpc.chain().sent.len(), 1);
    t.on_tick(t0 + Duration::from_secs(31)).await;
    let sent = rpc.chain().sent.clone();
    assert_eq!(sent.len(), 2);
    assert_eq!(sent[1].nonce, 7);
    assert_eq!(sent[1].calldata, first.calldata);
    assert_eq!(sent[1].fees.max_priority_fee_per_gas, 1_250_000_001);
    assert_eq!(sent[1].fees.max_fee_per_gas, 10_000_000_000);
    assert_eq!(t.metrics().replaced.get(), 1);

    // a newer report while stuck takes the same nonce
    let mut newer = (*report).clone();
    newer.header.timestamp_ms += 1_000;
    t.on_report(Arc::new(newer), t0 + Duration::from_secs(32));
    t.on_tick(t0 + Duration::from_secs(32)).await;
    let sent = rpc.chain().sent.clone();
    assert_eq!(sent.len(), 3);
    assert_eq!(sent[2].nonce, 7);
    assert_ne!(sent[2].calldata, first.calldata);
    assert!(sent[2].fees.max_priority_fee_per_gas > sent[1].fees.max_priority_fee_per_gas);

    // the replacement's receipt settles the nonce
    rpc.chain().receipts.insert(
        B256::with_last_byte(3),
        Receipt {
            success: true,
            gas_used: 40_000,
            effective_gas_price: 1,
        },
    );
    t.on_tick(t0 + Duration::from_secs(33)).await;
    assert_eq!(t.metrics().confirmed.get(), 1);
}

#[tokio::test]
async fn a_refused_estimate_sends_nothing_and_an_empty_account_sends_nothing() {
    let (report, key) = report();
    let rpc = rich();
    rpc.chain().estimate_error = Some(RpcError::Reverted {
        error: "ReportFromFuture".into(),
    });
    let mut t = transmitter(3, rpc.clone(), key);
    let t0 = Instant::now();
    t.on_report(report.clone(), t0);
    t.on_tick(t0).await;
    assert!(rpc.chain().sent.is_empty());
    assert_eq!(t.metrics().failed.get(), 1);

    let poor = FakeRpc::default();
    let mut t = transmitter(3, poor.clone(), key);
    t.on_report(report, t0);
    t.on_tick(t0).await;
    assert!(poor.chain().sent.is_empty());
    assert_eq!(t.metrics().failed.get(), 1);
}

#[tokio::test]
async fn a_contract_naming_another_committee_is_waited_for_not_failed() {
    let (report, key) = report();
    let rpc = rich();
    rpc.chain().estimate_error = Some(RpcError::Reverted {
        error: "WrongConfigDigest(WrongConfigDigest { expected: 0x11, got: 0x22 })".into(),
    });
    let mut t = transmitter(3, rpc.clone(), key);
    let t0 = Instant::now();
    t.on_report(report.clone(), t0);
    t.on_tick(t0).await;
    assert!(rpc.chain().sent.is_empty());
    assert_eq!(
        t.metrics().failed.get(),
        0,
        "waiting for a hand-over is no failure"
    );
    assert_eq!(t.metrics().skipped.get(), 1);
    assert_eq!(t.metrics().contract_names_committee.get(), 0);
    // The hand-over lands: the next due report goes out.
    rpc.chain().estimate_error = None;
    t.on_report(report, t0 + Duration::from_secs(1));
    t.on_tick(t0 + Duration::from_secs(1)).await;
    assert_eq!(rpc.chain().sent.len(), 1);
    assert_eq!(t.metrics().contract_names_committee.get(), 1);
}

#[tokio::test]
async fn a_wrong_chain_id_is_refused() {
    let (_, key) = report();
    let t = transmitter(1, rich(), key);
    let e = t.check(1).await.expect_err("chain 31337 is not chain 1");
    assert_eq!(
        e,
        CheckError::WrongChain {
            rpc: 31337,
            configured: 1
        }
    );
    assert!(e.to_string().contains("chain.chain_id"), "{e}");
    t.check(31337).await.expect("right chain");
}

#[test]
fn rank_counts_members_after_the_leader() {
    let s = |member| Schedule {
        member,
        leader: Arc::new(|r| (r % 4) as u16 + 1),
        n: 4,
    };
    // round 2 -> leader 3
    assert_eq!(s(3).rank(2), 0);
    assert_eq!(s(4).rank(2), 1);
    assert_eq!(s(1).rank(2), 2);
    assert_eq!(s(2).rank(2), 3);
}
