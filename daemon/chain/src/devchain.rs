//! A local development chain: anvil started from the project's own tools
//! (`contracts/tools/`, installed by scripts/setup.d/20-contracts), and
//! SibylFeed with its adapters deployed by `contracts/script/deploy.sh`.
//! Used by `sibyl devnet --chain` and the chain tests; blocking code.

use anyhow::{Context, Result, bail};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Anvil's first development key: funded with 10,000 ETH on every start.
pub const ANVIL_KEY_0: &str = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80";

/// Anvil's first ten development keys (the mnemonic "test test ... junk").
pub const ANVIL_KEYS: [&str; 10] = [
    ANVIL_KEY_0,
    "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d",
    "0x5de4111afa1a4b94908f83103eb1f1706367c2e68ca870fc3fb9a804cdab365a",
    "0x7c852118294e51e653712a81e05800f419141751be58f605c371e15141b007a6",
    "0x47e179ec197488593b187f80a00eb0da91f1b9d0b13f8733639f19c30a34926a",
    "0x8b3a350cf5c34c9194ca85829a2df0ec3153be0318b5e2d3348e872092edffba",
    "0x92db14e403b83dfe3df233f83dfa3a0d7096f21ca9b0d6d6b8d88b2b4ec1564e",
    "0x4bbbf85ce3377467afe5d46f804f221813b2bb87f24d81f60f1fcdbf7cbf4356",
    "0xdbda1821b80551c9d65939329250298aa3472ba22feea921c0cf5d620ea67b97",
    "0x2a871d0798f97d79848a013d4936a73bf4cc922c825d33c1cf7073dff6d409c6",
];

/// The `contracts/` directory: `$SIBYL_CONTRACTS_DIR`, or the first
/// `contracts/` with `script/deploy.sh` above the working directory or the
/// executable (a `target/debug/sibyl` inside the repository finds it).
pub fn find_contracts_dir() -> Result<PathBuf> {
    if let Ok(dir) = std::env::var("SIBYL_CONTRACTS_DIR") {
        let dir = PathBuf::from(dir);
        if dir.join("script/deploy.sh").is_file() {
            return Ok(dir);
        }
        bail!(
            "SIBYL_CONTRACTS_DIR={} has no script/deploy.sh; point it at the repository's contracts/ directory",
            dir.display()
        );
    }
    let mut starts = Vec::new();
    if let Ok(cwd) = std::env::current_dir() {
        starts.push(cwd);
    }
    if let Ok(exe) = std::env::current_exe() {
        starts.push(exe);
    }
    for start in starts {
        for dir in start.ancestors() {
            let c = dir.join("contracts");
            if c.join("script/deploy.sh").is_file() {
                return Ok(c);
            }
        }
    }
    bail!(
        "cannot find the contracts/ directory (with script/deploy.sh); run from the repository or set SIBYL_CONTRACTS_DIR"
    )
}

/// A tool from `contracts/tools/` (anvil, cast, forge), checked to run.
pub fn tool(contracts: &Path, name: &str) -> Result<PathBuf> {
    let path = contracts.join("tools").join(name);
    let ok = Command::new(&path)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !ok {
        bail!(
            "{} does not run; install the Solidity tools with scripts/setup.d/20-contracts (npm ci in contracts/)",
            path.display()
        );
    }
    Ok(path)
}

/// A running anvil, killed on drop.
pub struct Anvil {
    child: Child,
    pub rpc_url: String,
    pub port: u16,
}

impl Anvil {
    /// Starts anvil on 127.0.0.1 (`port` 0: a free port) with `block_time`
    /// seconds between blocks (`None`: a block per transaction) and waits
    /// until it answers.
    pub fn start(
        contracts: &Path,
        port: u16,
        block_time: Option<u64>,
        log: &Path,
    ) -> Result<Anvil> {
        let anvil = tool(contracts, "anvil")?;
        let cast = tool(contracts, "cast")?;
        let port = if port == 0 { free_port()? } else { port };
        let log_file = std::fs::File::create(log)
            .with_context(|| format!("cannot create the anvil log {}", log.display()))?;
        let mut cmd = Command::new(anvil);
        cmd.args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .stdout(log_file.try_clone()?)
            .stderr(log_file)
            .stdin(Stdio::null());
        if let Some(t) = block_time {
            cmd.args(["--block-time", &t.to_string()]);
        }
        let child = cmd.spawn().context("cannot start anvil")?;
        let mut me = Anvil {
            child,
            rpc_url: format!("http://127.0.0.1:{port}"),
            port,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let up = Command::new(&cast)
                .args(["chain-id", "--rpc-url", &me.rpc_url])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
            if up {
                return Ok(me);
            }
            if let Ok(Some(status)) = me.child.try_wait() {
                bail!(
                    "anvil exited with {status} before answering; see {}",
                    log.display()
                );
            }
            if Instant::now() > deadline {
                bail!("anvil did not answer on {} within 30s", me.rpc_url);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Anvil {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A free TCP port on 127.0.0.1 (bound and released).
pub fn free_port() -> Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").context("cannot bind 127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

/// What deploy.sh deployed.
#[derive(Debug, Clone, serde::Deserialize, serde::Serialize)]
pub struct Deployment {
    #[serde(rename = "chainId")]
    pub chain_id: u64,
    /// SibylFeed's address.
    pub feed: String,
    /// Feed id -> its SibylAggregatorV3 adapter.
    pub adapters: BTreeMap<String, String>,
    #[serde(rename = "gasUsed")]
    pub gas_used: BTreeMap<String, u64>,
}

/// What to deploy.
pub struct DeployParams<'a> {
    pub rpc_url: &'a str,
    /// Funded key that pays for the deployment.
    pub private_key: &'a str,
    pub config_digest: [u8; 32],
    /// The committee's secp256k1-evm group key, affine.
    pub group_key_x: [u8; 32],
    pub group_key_y: [u8; 32],
    /// (feed id, decimals)
    pub feeds: Vec<(String, u8)>,
    pub max_drift_ms: u64,
}

/// Runs `contracts/script/deploy.sh` (it builds the contracts when needed).
pub fn deploy(contracts: &Path, p: &DeployParams<'_>) -> Result<Deployment> {
    let mut cmd = Command::new(contracts.join("script/deploy.sh"));
    cmd.args(["--rpc-url", p.rpc_url, "--private-key", p.private_key])
        .args([
            "--config-digest",
            &format!("0x{}", hex::encode(p.config_digest)),
        ])
        .args([
            "--group-key-x",
            &format!("0x{}", hex::encode(p.group_key_x)),
        ])
        .args([
            "--group-key-y",
            &format!("0x{}", hex::encode(p.group_key_y)),
        ])
        .args(["--max-drift-ms", &p.max_drift_ms.to_string()]);
    for (id, decimals) in &p.feeds {
        cmd.args(["--feed", &format!("{id}:{decimals}")]);
    }
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .context("cannot run contracts/script/deploy.sh")?;
    if !out.status.success() {
        bail!(
            "deploy.sh failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout.lines().last().unwrap_or("");
    serde_json::from_str(line)
        .with_context(|| format!("deploy.sh printed {line:?}, not its JSON deployment line"))
}

#[cfg(test)]
mod tests {
    use super::ANVIL_KEYS;

    /// Each key is the account anvil funds (its documented addresses, from
    /// the "test test ... junk" mnemonic). Key 7 once had a wrong tail: a
    /// 7-member `devnet --chain` gave member 7 an empty account.
    #[test]
    fn the_development_keys_are_anvils_funded_accounts() {
        let funded = [
            "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266",
            "0x70997970C51812dc3A010C7d01b50e0d17dc79C8",
            "0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC",
            "0x90F79bf6EB2c4f870365E785982E1f101E93b906",
            "0x15d34AAf54267DB7D7c367839AAf71A00a2C6A65",
            "0x9965507D1a55bcC2695C58ba16FB37d819B0A4dc",
            "0x976EA74026E726554dB657fA54763abd0C3a0aa9",
            "0x14dC79964da2C08b23698B3D3cc7Ca32193d9955",
            "0x23618e81E3f5cdF7f54C3d65f7FBc0aBf5B21E8f",
            "0xa0Ee7A142d267C1f36714E4a8F75612F20a79720",
        ];
        for (i, (key, address)) in ANVIL_KEYS.iter().zip(funded).enumerate() {
            let signer: alloy_signer_local::PrivateKeySigner = key.parse().expect("key");
            assert_eq!(signer.address().to_checksum(None), address, "key {i}");
        }
    }
}
