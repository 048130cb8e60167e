//! The transmitter: pushes signed reports to SibylFeed.
//!
//! ```text
//!   verified report (broadcast) ─► schedule: due at  now + stagger × rank
//!                                   rank = (me − leader(round)) mod n, leader first
//!        ┌──────────────────────────────┘
//!        ▼ at the due time
//!   latestFeed() per leaf ─► due feeds: newer report and (deviation ≥ bps
//!        │                   from the on-chain price, or heartbeat elapsed)
//!        │ none: another member landed it, or nothing moved ─► skip
//!        ▼
//!   one transaction: submitReport (every leaf due) or submitFeeds (a subset,
//!   with proofs); estimateGas first (StaleReport = landed meanwhile: skip);
//!   EIP-1559 fees capped; local nonce; balance checked
//!        ▼
//!   receipt polled ─► confirmed / failed, gas spent; no receipt after
//!   `replace_after` ─► same nonce, fees +25% (up to the cap), or the newest
//!   report in its place
//! ```
//!
//! Only one transaction is in flight at a time, so nonces never leave gaps;
//! a newer report replaces the pending one.

use super::abi::{self, EvmGroupKey};
use super::rpc::{ChainRpc, Fees, OnChainValue, RpcError, TxParams};
use alloy_primitives::B256;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use sibyl_aggregator::aggregate::{LastValue, update_due};
use sibyl_aggregator::{FeedId, Round, SignedReport, Suite};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;
use tokio::sync::{broadcast, watch};
use tokio::time::Instant;

/// A feed's update rule (from the committee file).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FeedRule {
    pub deviation_bps: u32,
    pub heartbeat_ms: u64,
}

/// Why the transmitter cannot start.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CheckError {
    #[error(
        "the chain RPC serves chain id {rpc}, but chain.chain_id is {configured}; fix chain.rpc_url or chain.chain_id in node.toml"
    )]
    WrongChain { rpc: u64, configured: u64 },
    #[error("{0}")]
    Unreachable(String),
}

/// How the transmitter behaves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    /// Delay per rank after the round's leader.
    pub stagger: Duration,
    /// Cap on `maxFeePerGas`, wei.
    pub max_fee_per_gas: u128,
    /// Cap on `maxPriorityFeePerGas`, wei.
    pub max_priority_fee_per_gas: u128,
    /// A transaction without a receipt after this long is replaced.
    pub replace_after: Duration,
    /// How often receipts are polled.
    pub poll_interval: Duration,
    /// Warn when the balance pays for fewer than this many updates at the current fees.
    pub low_balance_updates: u64,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            stagger: Duration::from_secs(2),
            max_fee_per_gas: 200_000_000_000,
            max_priority_fee_per_gas: 2_000_000_000,
            replace_after: Duration::from_secs(30),
            poll_interval: Duration::from_millis(500),
            low_balance_updates: 100,
        }
    }
}

/// Who this member is in the transmit schedule.
#[derive(Clone)]
pub struct Schedule {
    pub member: u16,
    /// Round -> its leader's index.
    pub leader: Arc<dyn Fn(Round) -> u16 + Send + Sync>,
    /// Committee size.
    pub n: u16,
}

impl Schedule {
    /// 0 for the round's leader, then 1, 2, ... in member order after it.
    pub fn rank(&self, round: Round) -> u16 {
        let n = self.n.max(1);
        let leader = (self.leader)(round);
        (self.member + n - (leader % n.max(1))) % n
    }
}

/// Transmitter metrics (registered under `sibyl_chain_*`).
#[derive(Clone, Default)]
pub struct ChainMetrics {
    pub sent: Counter,
    pub confirmed: Counter,
    pub failed: Counter,
    pub replaced: Counter,
    pub skipped: Counter,
    pub feeds_pushed: Counter,
    pub gas_used: Counter,
    pub fees_paid_wei: Counter<f64, AtomicU64>,
    pub balance_wei: Gauge<f64, AtomicU64>,
    /// Balance below which the transmitter warns: `low_balance_updates`
    /// updates at the last gas and fee figures (0 until the first update).
    pub balance_warn_wei: Gauge<f64, AtomicU64>,
    /// 1 while the contract names this committee (its last estimate passed
    /// the config digest check), 0 while it names another (before a
    /// hand-over to this committee, or after one away from it).
    pub contract_names_committee: Gauge,
}

impl ChainMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self::default();
        let r = registry;
        r.register(
            "sibyl_chain_tx_sent",
            "Transactions sent to the feed contract (replacements included)",
            m.sent.clone(),
        );
        r.register(
            "sibyl_chain_tx_confirmed",
            "Transactions that landed successfully",
            m.confirmed.clone(),
        );
        r.register(
            "sibyl_chain_tx_failed",
            "Transactions that reverted, or updates the contract or RPC refused",
            m.failed.clone(),
        );
        r.register(
            "sibyl_chain_tx_replaced",
            "Stuck transactions replaced with higher fees or a newer report",
            m.replaced.clone(),
        );
        r.register(
            "sibyl_chain_updates_skipped",
            "Reports not sent: already landed by another member or nothing due",
            m.skipped.clone(),
        );
        r.register(
            "sibyl_chain_feeds_pushed",
            "Feed values landed by this member's transactions",
            m.feeds_pushed.clone(),
        );
        r.register(
            "sibyl_chain_gas_used",
            "Gas used by this member's landed transactions",
            m.gas_used.clone(),
        );
        r.register(
            "sibyl_chain_fees_paid_wei",
            "Fees paid for landed transactions (gas used x effective price), wei",
            m.fees_paid_wei.clone(),
        );
        r.register(
            "sibyl_chain_balance_wei",
            "The transmitter account's balance, wei",
            m.balance_wei.clone(),
        );
        r.register(
            "sibyl_chain_balance_warn_wei",
            "Balance below which the transmitter warns: enough for 100 updates at the last gas and fee figures, wei",
            m.balance_warn_wei.clone(),
        );
        r.register(
            "sibyl_chain_contract_names_committee",
            "1 while the feed contract names this committee, 0 while it names another (waiting for a hand-over to it, or handed over away from it)",
            m.contract_names_committee.clone(),
        );
        m
    }
}

struct Scheduled {
    report: Arc<SignedReport>,
    due_at: Instant,
    /// Sends of this report that got a receipt already (see FOLLOW_UPS).
    follow_up: u8,
}

/// After a receipt (success or revert) the transmitter reads the report's
/// feeds again and sends what did not land, at most this many times per
/// report. A leaf the contract skipped for good (unregistered feed) would
/// otherwise be resent forever.
const FOLLOW_UPS: u8 = 2;

struct Inflight {
    nonce: u64,
    hashes: Vec<B256>,
    fees: Fees,
    gas_limit: u64,
    calldata: Vec<u8>,
    round: Round,
    feeds: usize,
    last_sent: Instant,
    warned_cap: bool,
    /// The report sent, to check after the receipt what landed.
    report: Arc<SignedReport>,
    follow_up: u8,
}

/// The transmitter's state; driven by [`Transmitter::run`], or step by step
/// in tests with [`Transmitter::on_report`] and [`Transmitter::on_tick`].
pub struct Transmitter<R> {
    rpc: R,
    key: EvmGroupKey,
    rules: BTreeMap<FeedId, FeedRule>,
    schedule: Schedule,
    settings: Settings,
    metrics: ChainMetrics,
    pending: Option<Scheduled>,
    inflight: Option<Inflight>,
    next_nonce: Option<u64>,
    /// Whether the contract named this committee at the last estimate
    /// (None before the first).
    named: Option<bool>,
}

/// Whether a leaf should be pushed over the stored value.
pub fn leaf_due(
    onchain: Option<&OnChainValue>,
    price: i128,
    report_ms: u64,
    rule: Option<&FeedRule>,
) -> bool {
    let Some(v) = onchain else {
        return true;
    };
    if report_ms <= v.timestamp_ms {
        return false; // landed already (or an older report)
    }
    let (bps, hb) = rule.map_or((0, 0), |r| (r.deviation_bps, r.heartbeat_ms));
    let last = LastValue::price_only(v.price, v.timestamp_ms);
    update_due(Some(&last), price, report_ms, bps, hb).is_some()
}

/// Whether a leaf fits SibylFeed's stored value (price int96, confidence
/// uint72); the contract skips one that does not, so it is not sent.
pub fn leaf_fits(price: i128, confidence: u128) -> bool {
    const PRICE_MAX: i128 = (1 << 95) - 1;
    (-PRICE_MAX - 1..=PRICE_MAX).contains(&price) && confidence < (1 << 72)
}

/// `fees` raised by 25% (nodes want at least 10-12.5% to replace), each capped.
fn bumped(fees: Fees, settings: &Settings) -> Fees {
    let up = |v: u128| v.saturating_add(v / 4).saturating_add(1);
    Fees {
        max_fee_per_gas: up(fees.max_fee_per_gas).min(settings.max_fee_per_gas),
        max_priority_fee_per_gas: up(fees.max_priority_fee_per_gas)
            .min(settings.max_priority_fee_per_gas),
    }
}

fn capped(fees: Fees, settings: &Settings) -> Fees {
    let tip = fees
        .max_priority_fee_per_gas
        .min(settings.max_priority_fee_per_gas);
    Fees {
        max_fee_per_gas: fees.max_fee_per_gas.min(settings.max_fee_per_gas).max(tip),
        max_priority_fee_per_gas: tip,
    }
}

impl<R: ChainRpc> Transmitter<R> {
    pub fn new(
        rpc: R,
        key: EvmGroupKey,
        rules: BTreeMap<FeedId, FeedRule>,
        schedule: Schedule,
        settings: Settings,
        metrics: ChainMetrics,
    ) -> Self {
        Self {
            rpc,
            key,
            rules,
            schedule,
            settings,
            metrics,
            pending: None,
            inflight: None,
            next_nonce: None,
            named: None,
        }
    }

    /// Checks the RPC's chain id against the configured one and reads the
    /// balance once; call before [`Transmitter::run`].
    pub async fn check(&self, chain_id: u64) -> Result<(), CheckError> {
        let got = self.rpc.chain_id().await.map_err(|e| {
            CheckError::Unreachable(format!("cannot ask the chain RPC for its chain id: {e}"))
        })?;
        if got != chain_id {
            return Err(CheckError::WrongChain {
                rpc: got,
                configured: chain_id,
            });
        }
        let balance = self.rpc.balance().await.map_err(|e| {
            CheckError::Unreachable(format!("cannot read the transmitter's balance: {e}"))
        })?;
        self.metrics.balance_wei.set(balance as f64);
        tracing::info!(
            address = %self.rpc.address(),
            chain_id,
            balance_wei = %balance,
            "transmitter ready"
        );
        if balance == 0 {
            tracing::warn!(address = %self.rpc.address(), "the transmitter account holds no funds; it cannot push until funded");
        }
        Ok(())
    }

    pub fn metrics(&self) -> &ChainMetrics {
        &self.metrics
    }

    /// A verified report arrived: schedule it by this member's rank.
    pub fn on_report(&mut self, report: Arc<SignedReport>, now: Instant) {
        if !report.signatures.contains_key(&Suite::Secp256k1Evm) {
            tracing::debug!(
                round = report.header.round,
                "report has no secp256k1-evm signature; not transmitted"
            );
            return;
        }
        if let Some(p) = &self.pending
            && p.report.header.timestamp_ms >= report.header.timestamp_ms
        {
            return;
        }
        let rank = self.schedule.rank(report.header.round);
        let due_at = now + self.settings.stagger * u32::from(rank);
        tracing::debug!(
            round = report.header.round,
            rank,
            "report scheduled for transmission"
        );
        self.pending = Some(Scheduled {
            report,
            due_at,
            follow_up: 0,
        });
    }

    /// When [`Transmitter::on_tick`] next has something to do.
    pub fn next_wake(&self, now: Instant) -> Instant {
        let mut at = now + Duration::from_secs(3600);
        if let Some(p) = &self.pending {
            at = at.min(p.due_at);
        }
        if self.inflight.is_some() {
            at = at.min(now + self.settings.poll_interval);
        }
        at
    }

    /// Polls the in-flight transaction, replaces it if stuck, and sends the
    /// pending report if its time has come.
    pub async fn on_tick(&mut self, now: Instant) {
        if self.inflight.is_some() {
            self.poll_inflight(now).await;
        }
        let due = self.pending.as_ref().is_some_and(|p| p.due_at <= now);
        if due && let Some(p) = self.pending.take() {
            self.attempt(p.report, p.follow_up, now).await;
        }
    }

    async fn poll_inflight(&mut self, now: Instant) {
        let Some(tx) = &self.inflight else { return };
        for hash in tx.hashes.iter().rev() {
            match self.rpc.receipt(*hash).await {
                Ok(Some(r)) => {
                    self.metrics.gas_used.inc_by(r.gas_used);
                    self.metrics
                        .fees_paid_wei
                        .inc_by(r.gas_used as f64 * r.effective_gas_price as f64);
                    if r.success {
                        self.metrics.confirmed.inc();
                        self.metrics.feeds_pushed.inc_by(tx.feeds as u64);
                        tracing::info!(round = tx.round, feeds = tx.feeds, gas_used = r.gas_used, tx = %hash, "report landed on chain");
                    } else {
                        self.metrics.failed.inc();
                        tracing::warn!(round = tx.round, tx = %hash, "transaction reverted (another member's update may have landed first)");
                    }
                    self.next_nonce = Some(tx.nonce + 1);
                    let (report, follow_up) = (tx.report.clone(), tx.follow_up);
                    self.inflight = None;
                    self.refresh_balance(r.gas_used).await;
                    // Re-read what landed and send the rest: a leaf another transmitter
                    // landed first was skipped, a reverted batch landed nothing.
                    if follow_up < FOLLOW_UPS && self.pending.is_none() {
                        self.pending = Some(Scheduled {
                            report,
                            due_at: now,
                            follow_up: follow_up + 1,
                        });
                    }
                    return;
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read a transaction receipt");
                    return;
                }
            }
        }
        if now.duration_since(tx.last_sent) >= self.settings.replace_after {
            let fees = bumped(tx.fees, &self.settings);
            let (calldata, gas_limit, round, feeds) =
                (tx.calldata.clone(), tx.gas_limit, tx.round, tx.feeds);
            self.replace(fees, calldata, gas_limit, round, feeds, now)
                .await;
        }
    }

    /// Sends `calldata` at the in-flight nonce with `fees`.
    async fn replace(
        &mut self,
        fees: Fees,
        calldata: Vec<u8>,
        gas_limit: u64,
        round: Round,
        feeds: usize,
        now: Instant,
    ) {
        let Some(tx) = self.inflight.as_mut() else {
            return;
        };
        let same = calldata == tx.calldata;
        if same && fees == tx.fees {
            if !tx.warned_cap {
                tracing::warn!(
                    round = tx.round,
                    max_fee_per_gas = fees.max_fee_per_gas,
                    "transaction stuck at the fee cap; raise chain.max_fee_gwei to get it mined"
                );
                tx.warned_cap = true;
            }
            tx.last_sent = now;
            return;
        }
        let params = TxParams {
            nonce: tx.nonce,
            gas_limit,
            fees,
            calldata: calldata.clone(),
        };
        match self.rpc.send(&params).await {
            Ok(hash) => {
                self.metrics.sent.inc();
                self.metrics.replaced.inc();
                tracing::info!(round, nonce = tx.nonce, max_fee_per_gas = fees.max_fee_per_gas, tx = %hash, "replaced a stuck transaction");
                tx.hashes.push(hash);
                tx.fees = fees;
                tx.calldata = calldata;
                tx.gas_limit = gas_limit;
                tx.round = round;
                tx.feeds = feeds;
                tx.last_sent = now;
            }
            Err(RpcError::NonceTooLow(_)) => {
                // The old transaction was mined meanwhile; its receipt settles it.
                tx.last_sent = now;
            }
            Err(e) => {
                tracing::warn!(error = %e, round, "cannot replace the stuck transaction");
                tx.last_sent = now;
            }
        }
    }

    async fn refresh_balance(&mut self, gas_per_update: u64) {
        let Ok(balance) = self.rpc.balance().await else {
            return;
        };
        self.metrics.balance_wei.set(balance as f64);
        let fees = match self.rpc.suggested_fees().await {
            Ok(f) => capped(f, &self.settings),
            Err(_) => return,
        };
        let per_update = u128::from(gas_per_update).saturating_mul(fees.max_fee_per_gas);
        self.set_warn_level(per_update);
        if per_update > 0 && balance / per_update < u128::from(self.settings.low_balance_updates) {
            tracing::warn!(
                address = %self.rpc.address(),
                balance_wei = %balance,
                updates_left = %(balance / per_update),
                "the transmitter's balance is running low; fund it before it runs dry"
            );
        }
    }

    fn set_warn_level(&self, per_update_wei: u128) {
        let warn = per_update_wei.saturating_mul(u128::from(self.settings.low_balance_updates));
        self.metrics.balance_warn_wei.set(warn as f64);
    }

    async fn attempt(&mut self, report: Arc<SignedReport>, follow_up: u8, now: Instant) {
        let round = report.header.round;
        let ids: Vec<FeedId> = report.leaves.iter().map(|l| l.feed_id.clone()).collect();
        let onchain = match self.rpc.latest_feeds(&ids).await {
            Ok(v) => v,
            Err(e) => {
                tracing::warn!(error = %e, round, "cannot read the feeds on chain; retrying");
                self.retry(report, now);
                return;
            }
        };
        let due: Vec<FeedId> = report
            .leaves
            .iter()
            .zip(&onchain)
            .filter(|(l, _)| {
                let fits = leaf_fits(l.price, l.confidence);
                if !fits {
                    tracing::warn!(round, feed = %l.feed_id, "the leaf's price or confidence does not fit the contract's stored value; not sent");
                }
                fits
            })
            .filter(|(l, v)| {
                leaf_due(
                    v.as_ref(),
                    l.price,
                    report.header.timestamp_ms,
                    self.rules.get(&l.feed_id),
                )
            })
            .map(|(l, _)| l.feed_id.clone())
            .collect();
        if due.is_empty() {
            if follow_up == 0 {
                self.metrics.skipped.inc();
                tracing::debug!(round, "nothing to push: landed already or within deviation");
            }
            return;
        }
        if follow_up > 0 {
            tracing::info!(
                round,
                feeds = due.len(),
                "part of the report did not land; sending the rest"
            );
        }
        let calldata = if due.len() == report.leaves.len() {
            abi::submit_report(&report, &self.key).map(|c| abi::calldata(&c))
        } else {
            abi::submit_feeds(&report, &self.key, &due).map(|(c, _)| abi::calldata(&c))
        };
        let calldata = match calldata {
            Ok(c) => c,
            Err(e) => {
                self.metrics.failed.inc();
                tracing::warn!(error = %e, round, "cannot encode the report for the contract");
                return;
            }
        };
        let gas = match self.rpc.estimate_gas(&calldata).await {
            Ok(g) => {
                self.note_named(true, round, "");
                g
            }
            Err(RpcError::Reverted { error }) if error.starts_with("WrongConfigDigest") => {
                // Not a failure: a new committee runs beside the old one
                // until the hand-over names it (and the old one until it is
                // stopped). Nothing is sent; the next due report asks again.
                self.metrics.skipped.inc();
                self.note_named(false, round, &error);
                return;
            }
            Err(RpcError::Reverted { error }) => {
                self.metrics.failed.inc();
                tracing::warn!(round, %error, "the contract refuses the report; not sent");
                return;
            }
            Err(e) => {
                tracing::warn!(error = %e, round, "cannot estimate gas; retrying");
                self.retry(report, now);
                return;
            }
        };
        let gas_limit = gas.saturating_add(gas / 4).saturating_add(10_000);
        let suggested = match self.rpc.suggested_fees().await {
            Ok(f) => f,
            Err(e) => {
                tracing::warn!(error = %e, round, "cannot read the fees; retrying");
                self.retry(report, now);
                return;
            }
        };
        let mut fees = capped(suggested, &self.settings);
        if suggested.max_fee_per_gas > self.settings.max_fee_per_gas {
            tracing::warn!(
                suggested_max_fee_per_gas = suggested.max_fee_per_gas,
                cap = self.settings.max_fee_per_gas,
                "fees are above chain.max_fee_gwei; sending at the cap"
            );
        }
        if let Some(tx) = &self.inflight {
            // Replace the stuck transaction with this newer report.
            let b = bumped(tx.fees, &self.settings);
            fees = Fees {
                max_fee_per_gas: fees.max_fee_per_gas.max(b.max_fee_per_gas),
                max_priority_fee_per_gas: fees
                    .max_priority_fee_per_gas
                    .max(b.max_priority_fee_per_gas),
            };
            self.replace(fees, calldata, gas_limit, round, due.len(), now)
                .await;
            if let Some(tx) = self.inflight.as_mut()
                && tx.round == round
            {
                // Whichever hash gets mined, the follow-up checks this newer report.
                (tx.report, tx.follow_up) = (report, follow_up);
            }
            return;
        }
        match self.rpc.balance().await {
            Ok(b) => {
                self.metrics.balance_wei.set(b as f64);
                let cost = u128::from(gas_limit).saturating_mul(fees.max_fee_per_gas);
                self.set_warn_level(u128::from(gas).saturating_mul(fees.max_fee_per_gas));
                if b < cost {
                    self.metrics.failed.inc();
                    tracing::error!(address = %self.rpc.address(), balance_wei = %b, needed_wei = %cost, round, "the transmitter cannot pay for an update; fund its account");
                    return;
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot read the transmitter's balance"),
        }
        let nonce = match self.next_nonce {
            Some(n) => n,
            None => match self.rpc.pending_nonce().await {
                Ok(n) => n,
                Err(e) => {
                    tracing::warn!(error = %e, round, "cannot read the nonce; retrying");
                    self.retry(report, now);
                    return;
                }
            },
        };
        let params = TxParams {
            nonce,
            gas_limit,
            fees,
            calldata: calldata.clone(),
        };
        match self.rpc.send(&params).await {
            Ok(hash) => {
                self.metrics.sent.inc();
                tracing::info!(round, feeds = due.len(), nonce, gas_limit, max_fee_per_gas = fees.max_fee_per_gas, tx = %hash, "report sent to the feed contract");
                self.next_nonce = Some(nonce + 1);
                self.inflight = Some(Inflight {
                    nonce,
                    hashes: vec![hash],
                    fees,
                    gas_limit,
                    calldata,
                    round,
                    feeds: due.len(),
                    last_sent: now,
                    warned_cap: false,
                    report,
                    follow_up,
                });
            }
            Err(RpcError::NonceTooLow(e)) => {
                tracing::info!(error = %e, nonce, "nonce already used; resynchronizing from the chain");
                self.next_nonce = None;
                self.retry(report, now);
            }
            Err(e) => {
                self.metrics.failed.inc();
                self.next_nonce = None;
                tracing::warn!(error = %e, round, "the RPC refused the transaction");
            }
        }
    }

    /// Notes whether the contract names this committee; says so when it
    /// changes.
    fn note_named(&mut self, named: bool, round: Round, error: &str) {
        self.metrics.contract_names_committee.set(i64::from(named));
        if self.named == Some(named) {
            return;
        }
        let first = self.named.is_none();
        self.named = Some(named);
        match (named, first) {
            (false, _) => tracing::warn!(
                round,
                %error,
                "the feed contract names another committee: not sending this committee's reports (before a hand-over to it this is expected; after one away from it, stop this committee)"
            ),
            (true, false) => tracing::info!(
                round,
                "the feed contract names this committee now (a hand-over landed): sending its reports"
            ),
            (true, true) => {}
        }
    }

    /// Try `report` again after a poll interval, unless a newer one arrives.
    fn retry(&mut self, report: Arc<SignedReport>, now: Instant) {
        if self.pending.is_none() {
            self.pending = Some(Scheduled {
                report,
                due_at: now + self.settings.poll_interval.max(Duration::from_millis(200)),
                follow_up: 0,
            });
        }
    }

    /// Runs until `shutdown` turns true or the report stream closes.
    pub async fn run(
        mut self,
        mut reports: broadcast::Receiver<Arc<SignedReport>>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        loop {
            let wake = self.next_wake(Instant::now());
            tokio::select! {
                r = reports.recv() => match r {
                    Ok(report) => self.on_report(report, Instant::now()),
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        tracing::warn!(missed = n, "transmitter fell behind the report stream");
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                },
                _ = tokio::time::sleep_until(wake) => self.on_tick(Instant::now()).await,
                _ = shutdown.changed() => {
                    if *shutdown.borrow() {
                        return;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
