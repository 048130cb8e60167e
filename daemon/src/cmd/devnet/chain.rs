//! `sibyl devnet --chain`: a local chain beside the devnet committee.
//!
//! ```text
//!   anvil (contracts/tools, or --chain-rpc-url) ◄── deploy.sh: SibylFeed(config digest,
//!        ▲                                          secp256k1-evm group key) + adapters
//!        │ submitReport / submitFeeds
//!   member i ── [chain] in node-i/node.toml, key node-i/transmitter.key
//!               (anvil development key i; key 0 deploys)
//! ```

use super::file::{ChainInfo, DevnetFile};
use super::http::http_get;
use anyhow::{Context, Result, bail};
use sibyl_chain::abi::EvmGroupKey;
use sibyl_chain::devchain::{self, ANVIL_KEY_0, ANVIL_KEYS, Anvil, DeployParams};
use sibyl_node::config::Committee;
use sibyl_node::keystore::write_atomic;
use std::path::Path;

/// A running devnet chain; dropping it stops the anvil it started.
pub struct DevChain {
    pub anvil: Option<Anvil>,
    pub info: ChainInfo,
}

/// Delay per rank in the devnet's transmit schedule: anvil mines each
/// transaction at once, so a second is plenty for the leader's to land.
pub const DEVNET_STAGGER_MS: u64 = 1_000;

/// Starts (or connects to) the chain, deploys the contracts for the devnet's
/// committee and adds a `[chain]` section to every member's node.toml.
pub fn prepare(dir: &Path, file: &mut DevnetFile, rpc_url: Option<&str>) -> Result<DevChain> {
    if file.members.len() >= ANVIL_KEYS.len() {
        bail!(
            "--chain supports at most {} members (anvil's funded development keys; key 0 deploys)",
            ANVIL_KEYS.len() - 1
        );
    }
    let Some(evm_key) = file.group_keys.get("secp256k1-evm").cloned() else {
        bail!("--chain needs a committee that signs with secp256k1-evm");
    };
    let contracts = devchain::find_contracts_dir()?;
    let anvil = match rpc_url {
        Some(_) => None,
        None => Some(Anvil::start(&contracts, 0, None, &dir.join("anvil.log"))?),
    };
    let rpc_url = match (rpc_url, &anvil) {
        (Some(u), _) => u.to_string(),
        (None, Some(a)) => a.rpc_url.clone(),
        (None, None) => bail!("no chain to use"),
    };
    let committee = Committee::load(&file.committee)?;
    let group_key = EvmGroupKey::from_compressed(
        &hex::decode(&evm_key).context("the devnet's group key is not hex")?,
    )?;
    let deployment = devchain::deploy(
        &contracts,
        &DeployParams {
            rpc_url: &rpc_url,
            private_key: ANVIL_KEY_0,
            config_digest: committee.digest.0,
            group_key_x: group_key.x,
            group_key_y: group_key.y,
            feeds: committee
                .feeds
                .iter()
                .map(|f| (f.id.to_string(), f.decimals))
                .collect(),
            max_drift_ms: 5_000,
        },
    )?;
    for m in &file.members {
        let node_dir = m
            .config
            .parent()
            .context("a member's node.toml has no directory")?;
        let key = ANVIL_KEYS[usize::from(m.index)];
        write_atomic(&node_dir.join("transmitter.key"), key.as_bytes(), 0o600)?;
        let section = format!(
            "\n# The devnet's chain, written by `sibyl devnet --chain`.\n[chain]\nrpc_url = \"{rpc_url}\"\nchain_id = {}\ncontract = \"{}\"\ntransmitter_key_file = \"transmitter.key\"\nstagger = \"{DEVNET_STAGGER_MS}ms\"\nreplace_after = \"10s\"\n",
            deployment.chain_id, deployment.feed
        );
        let mut text = std::fs::read_to_string(&m.config)
            .with_context(|| format!("cannot read {}", m.config.display()))?;
        text.push_str(&section);
        std::fs::write(&m.config, text)
            .with_context(|| format!("cannot write {}", m.config.display()))?;
        sibyl_node::config::Config::load(&m.config)?;
    }
    let info = ChainInfo {
        rpc_url,
        chain_id: deployment.chain_id,
        feed: deployment.feed,
        adapters: deployment.adapters,
        deploy_gas: deployment.gas_used,
        anvil_pid: anvil.as_ref().map(Anvil::pid),
        stagger_ms: DEVNET_STAGGER_MS,
    };
    file.chain = Some(info.clone());
    Ok(DevChain { anvil, info })
}

/// Prints each member's transmitter counters (from its `/metrics`).
pub fn summary(file: &DevnetFile) {
    println!("member  tx sent  confirmed  failed  replaced  skipped  gas used");
    for m in &file.members {
        let text = http_get(&format!("{}/metrics", m.api_url)).unwrap_or_default();
        let get = |name: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse::<f64>().ok())
                .map_or_else(|| "-".to_string(), |v| format!("{v:.0}"))
        };
        println!(
            "{:>6}  {:>7}  {:>9}  {:>6}  {:>8}  {:>7}  {:>8}",
            m.index,
            get("sibyl_chain_tx_sent_total"),
            get("sibyl_chain_tx_confirmed_total"),
            get("sibyl_chain_tx_failed_total"),
            get("sibyl_chain_tx_replaced_total"),
            get("sibyl_chain_updates_skipped_total"),
            get("sibyl_chain_gas_used_total"),
        );
    }
}
