//! On-chain consumers: SibylFeed's ABI ([`abi`]), the pull payloads the API
//! serves (built from [`abi`]), and the transmitter that pushes reports.
//!
//! ```text
//!   round driver ── verified SignedReport (broadcast) ──► transmitter ──► JSON-RPC
//!                                                          (staggered,      (alloy, local
//!                                                           deviation /      EIP-1559
//!                                                           heartbeat)       signing)
//!   API  GET /v1/feeds/{id}/update ── abi::submit_feeds ──► calldata for a protocol
//! ```
//!
//! [`devchain`] starts anvil and deploys the contracts for `sibyl devnet --chain`.
//! The API's pull payloads (`sibyl_api::pull`) use [`abi`]; this crate knows
//! nothing of the API.

pub mod abi;
pub mod devchain;
pub mod rpc;
pub mod transmitter;

use abi::EvmGroupKey;
use alloy_primitives::{Address, B256};
use anyhow::{Context, Result, bail};
use prometheus_client::registry::Registry;
use sibyl_aggregator::SignedReport;
use sibyl_aggregator::verify::GroupKeys;
use sibyl_node::config::Config;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{broadcast, watch};
use transmitter::{ChainMetrics, CheckError, FeedRule, Schedule, Settings, Transmitter};

/// The contract's view of a secp256k1-evm group key.
pub fn evm_group_key(key: &frost_secp256k1_evm::VerifyingKey) -> Result<EvmGroupKey> {
    let bytes = key
        .serialize()
        .map_err(|e| anyhow::anyhow!("cannot encode the secp256k1-evm group key: {e}"))?;
    Ok(EvmGroupKey::from_compressed(&bytes)?)
}

/// Reads a transmitter key file: 32 bytes as hex, `0x` optional. Errors name
/// the file, never its content.
pub fn read_transmitter_key(
    path: &std::path::Path,
) -> Result<alloy_signer_local::PrivateKeySigner> {
    let text = std::fs::read_to_string(path).with_context(|| {
        format!(
            "cannot read the transmitter key file {} (chain.transmitter_key_file)",
            path.display()
        )
    })?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(meta) = std::fs::metadata(path)
            && meta.permissions().mode() & 0o077 != 0
        {
            tracing::warn!(file = %path.display(), "the transmitter key file is readable by other users; chmod 600 it");
        }
    }
    let hex_text = text.trim();
    let hex_text = hex_text.strip_prefix("0x").unwrap_or(hex_text);
    let bad = || {
        anyhow::anyhow!(
            "{} must hold the transmitter's secp256k1 secret key as 64 hex digits (0x optional)",
            path.display()
        )
    };
    let bytes: [u8; 32] = hex::decode(hex_text)
        .map_err(|_| bad())?
        .try_into()
        .map_err(|_| bad())?;
    alloy_signer_local::PrivateKeySigner::from_bytes(&B256::from(bytes)).map_err(|_| {
        anyhow::anyhow!(
            "{} does not hold a valid secp256k1 secret key (zero or above the curve order)",
            path.display()
        )
    })
}

/// The chain RPC of node.toml's `[chain]`, signing with its transmitter
/// key, calling `contract`.
fn rpc_of(
    config: &Config,
    chain: &sibyl_node::config::ChainSection,
    contract: Address,
) -> Result<rpc::AlloyRpc> {
    let signer = read_transmitter_key(&config.resolve(&chain.transmitter_key_file))?;
    rpc::AlloyRpc::new(chain.rpc_url.get_ref(), contract, chain.chain_id, signer)
        .map_err(|e| anyhow::anyhow!("{e}"))
}

/// Starts the transmitter when node.toml has a `[chain]` section: checks
/// the chain id against the RPC (a mismatch refuses to start; an unreachable
/// RPC is retried in the background), registers `sibyl_chain_*` metrics.
pub async fn start_transmitter(
    config: &Config,
    member: u16,
    group_keys: &GroupKeys,
    reports: broadcast::Receiver<Arc<SignedReport>>,
    registry: &mut Registry,
    shutdown: watch::Receiver<bool>,
) -> Result<Option<tokio::task::JoinHandle<()>>> {
    let Some(chain) = &config.node.chain else {
        return Ok(None);
    };
    let Some(key) = &group_keys.secp256k1_evm else {
        bail!(
            "node.toml has a [chain] section, but this node does not sign with secp256k1-evm: list \"secp256k1-evm\" in the committee file's `suites` (alone or with \"ed25519\": a committee signs every report with each suite it lists) or remove [chain]"
        );
    };
    let key = evm_group_key(key)?;
    let contract: Address = chain
        .contract
        .get_ref()
        .parse()
        .map_err(|e| anyhow::anyhow!("chain.contract: {e}"))?;
    let rpc = rpc_of(config, chain, contract)?;
    let protocol = Arc::new(config.committee.to_protocol()?);
    let leader_of = protocol.clone();
    let schedule = Schedule {
        member,
        leader: Arc::new(move |round| leader_of.leader(round)),
        n: config.committee.n(),
    };
    let rules = config
        .committee
        .feeds
        .iter()
        .map(|f| {
            (
                f.id.clone(),
                FeedRule {
                    deviation_bps: f.deviation_bps,
                    heartbeat_ms: f.heartbeat_ms,
                },
            )
        })
        .collect();
    let gwei = 1_000_000_000u128;
    let settings = Settings {
        stagger: chain.stagger.0,
        max_fee_per_gas: u128::from(chain.max_fee_gwei) * gwei,
        max_priority_fee_per_gas: u128::from(chain.max_priority_fee_gwei) * gwei,
        replace_after: chain.replace_after.0,
        ..Settings::default()
    };
    let metrics = ChainMetrics::register(registry);
    let t = Transmitter::new(rpc, key, rules, schedule, settings, metrics);
    let chain_id = chain.chain_id;
    let rpc_url = chain.rpc_url.get_ref().clone();
    let mut ready = false;
    match tokio::time::timeout(Duration::from_secs(5), t.check(chain_id)).await {
        Ok(Ok(())) => ready = true,
        Ok(Err(e @ CheckError::WrongChain { .. })) => return Err(e.into()),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, rpc = %rpc_url, "chain RPC not ready; the transmitter keeps trying")
        }
        Err(_) => {
            tracing::warn!(rpc = %rpc_url, "chain RPC did not answer within 5s; the transmitter keeps trying")
        }
    }
    let mut shutdown_wait = shutdown.clone();
    Ok(Some(tokio::spawn(async move {
        // Until the chain id has been confirmed, send nothing.
        let mut delay = Duration::from_secs(1);
        while !ready {
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = shutdown_wait.changed() => return,
            }
            match t.check(chain_id).await {
                Ok(()) => ready = true,
                Err(e @ CheckError::WrongChain { .. }) => {
                    tracing::error!(error = %e, "transmitter stopped");
                    return;
                }
                Err(e) => tracing::warn!(error = %e, "chain RPC unreachable; retrying"),
            }
            delay = (delay * 2).min(Duration::from_secs(30));
        }
        t.run(reports, shutdown).await;
    })))
}

/// Sends `calldata` to `contract` from this member's transmitter account
/// (node.toml's `[chain]`: RPC, chain id, key file) and waits up to
/// `timeout` for the receipt: for calls an operator makes once, such as
/// the committee hand-over. The call is estimated first, so a refusal comes
/// back as the contract's decoded error and costs nothing.
pub async fn submit_call(
    config: &Config,
    contract: Address,
    calldata: &[u8],
    timeout: Duration,
) -> Result<(B256, rpc::Receipt)> {
    use rpc::{ChainRpc, RpcError, TxParams};
    let Some(chain) = &config.node.chain else {
        bail!("node.toml has no [chain] section: no RPC or transmitter account to send with");
    };
    let rpc = rpc_of(config, chain, contract)?;
    let got = rpc
        .chain_id()
        .await
        .map_err(|e| anyhow::anyhow!("cannot ask the chain RPC for its chain id: {e}"))?;
    if got != chain.chain_id {
        bail!(
            "the RPC serves chain {got}, node.toml's chain.chain_id is {}",
            chain.chain_id
        );
    }
    let gas = match rpc.estimate_gas(calldata).await {
        Ok(g) => g,
        Err(RpcError::Reverted { error }) => {
            bail!("the contract refuses the call: {error}; nothing was sent")
        }
        Err(e) => bail!("cannot estimate the call's gas: {e}"),
    };
    let fees = rpc
        .suggested_fees()
        .await
        .map_err(|e| anyhow::anyhow!("cannot read the fees: {e}"))?;
    let nonce = rpc
        .pending_nonce()
        .await
        .map_err(|e| anyhow::anyhow!("cannot read the account's nonce: {e}"))?;
    let hash = rpc
        .send(&TxParams {
            nonce,
            gas_limit: gas.saturating_add(gas / 4).saturating_add(10_000),
            fees,
            calldata: calldata.to_vec(),
        })
        .await
        .map_err(|e| anyhow::anyhow!("the RPC refused the transaction: {e}"))?;
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        match rpc.receipt(hash).await {
            Ok(Some(r)) => return Ok((hash, r)),
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(tx = %hash, error = %e, "cannot read the receipt; asking again")
            }
        }
        if tokio::time::Instant::now() >= deadline {
            bail!(
                "transaction {hash} sent but not mined within {timeout:?}: look it up before sending again (a second hand-over would revert)"
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
