//! `DIR/devnet.json`: what `sibyl devnet` started, for the command itself,
//! its chain part and the tests that drive a devnet.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;

/// One member in `devnet.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DevnetMember {
    pub index: u16,
    pub peer_id: String,
    pub p2p_address: String,
    pub api_url: String,
    /// Process id; `None` with `--setup-only` and once the member exited.
    pub pid: Option<u32>,
    pub config: PathBuf,
    pub db: PathBuf,
    pub log: PathBuf,
    /// How the member's process ended while the devnet ran, e.g.
    /// `pid 1234: signal: 9 (SIGKILL)`; absent while it runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exited: Option<String>,
}

/// `DIR/devnet.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DevnetFile {
    pub committee: PathBuf,
    pub threshold: u16,
    pub config_digest: String,
    /// Group public key of `suite` (the first the committee lists), hex.
    pub group_key: String,
    pub suite: String,
    /// Every suite the committee signs with -> its group key, hex.
    #[serde(default)]
    pub group_keys: BTreeMap<String, String>,
    /// The simulated exchange's base URL (absent with `--builtin-source`).
    #[serde(default)]
    pub sim_exchange: Option<String>,
    /// The chain and the deployed contracts (with `--chain`).
    #[serde(default)]
    pub chain: Option<ChainInfo>,
    pub members: Vec<DevnetMember>,
}

/// The chain part of `devnet.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChainInfo {
    pub rpc_url: String,
    pub chain_id: u64,
    /// SibylFeed's address.
    pub feed: String,
    /// Feed id -> its SibylAggregatorV3 adapter.
    pub adapters: BTreeMap<String, String>,
    /// Gas of each deployment transaction.
    pub deploy_gas: BTreeMap<String, u64>,
    /// anvil's process id, when the devnet started it.
    pub anvil_pid: Option<u32>,
    /// Delay per member rank in the transmit schedule, ms.
    pub stagger_ms: u64,
}
