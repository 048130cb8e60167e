//! `sibyl rotation`: the hand-over of SibylFeed to a new committee, signed by
//! the current committee and by the new one (proof that the new group key is
//! held), and the `rotateCommittee` calldata.
//!
//! ```text
//!   t member configs (current committee) ─► their secp256k1-evm key packages
//!   t member configs (new committee)     ─► the new key packages + public key package
//!   --new-group-key must equal the new public key package's group key
//!   message = keccak256(abi.encode(keccak256("Sibyl committee rotation v2"), chainId,
//!       contract, rotationCount, currentDigest, newDigest, newX, newY,
//!       keccak256(abi.encode(feedIds, decimals))))      (the new committee's feeds)
//!   FROST sign with each set of shares ─► aggregate ─► verify ─► calldata
//! ```
//!
//! `sibyl rotation` uses the shares on one machine: it suits a devnet, or
//! committees whose `t` share holders meet for the hand-over. Without a
//! trusted machine: the networked signing (`sibyl rotation-sign`) run by `t` members of each
//! committee, each with its own node.toml, signs where the shares are (a
//! FROST session over the committee's network,
//! [`sibyl_aggregator::dkg::sign`]), and `sibyl rotation-assemble` turns the
//! two signatures into the calldata.

use alloy_primitives::{Address, B256, U256};
use alloy_sol_types::{SolCall, SolValue};
use anyhow::{Context, Result, bail};
use frost_secp256k1_evm::Secp256K1Keccak256 as Evm;
use sha3::{Digest, Keccak256};
use sibyl_chain::abi::{EvmGroupKey, ISibylFeed, Signature};
use sibyl_node::config::{Committee, Config};
use std::collections::BTreeMap;
use std::path::PathBuf;

/// Arguments of `sibyl rotation`.
#[derive(Debug, clap::Args)]
pub struct RotationArgs {
    /// node.toml of a member of the current committee whose secp256k1-evm key
    /// share signs; repeat for at least the threshold of members.
    #[arg(long = "member-config", required = true)]
    pub member_configs: Vec<PathBuf>,
    /// node.toml of a member of the new committee (its key share proves that
    /// the new group key is held); repeat for at least the new threshold.
    #[arg(long = "new-member-config", required = true)]
    pub new_member_configs: Vec<PathBuf>,
    #[command(flatten)]
    pub handover: HandoverArgs,
}

/// What names one hand-over (`sibyl rotation` and `sibyl rotation-sign`).
#[derive(Debug, clap::Args)]
pub struct HandoverArgs {
    /// The new committee file (its config digest and feeds go into the message).
    #[arg(long)]
    pub new_committee: PathBuf,
    /// The new committee's secp256k1-evm group key, hex (33-byte compressed
    /// or 65-byte uncompressed SEC1), as `sibyl keygen`/`sibyl dkg` print it.
    /// Refused unless it is the new members' public key package's key.
    #[arg(long)]
    pub new_group_key: String,
    /// EIP-155 chain id of the chain the contract is on.
    #[arg(long)]
    pub chain_id: u64,
    /// SibylFeed's address.
    #[arg(long)]
    pub contract: Address,
    /// The contract's `rotationCount()` (0 before its first hand-over):
    /// `cast call <contract> 'rotationCount()(uint32)'`.
    #[arg(long)]
    pub rotation_count: u32,
}

/// Everything a rotation message names (SibylFeed.rotationDigest).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Handover {
    pub chain_id: u64,
    pub contract: Address,
    pub rotation_count: u32,
    pub current: [u8; 32],
    pub new_digest: [u8; 32],
    pub new_key: EvmGroupKey,
    /// The new committee's feeds (ids as bytes32) and decimals.
    pub feeds: Vec<([u8; 32], u8)>,
}

impl Handover {
    /// The new committee's feeds, in committee-file order.
    pub fn feeds_of(committee: &Committee) -> Vec<([u8; 32], u8)> {
        committee
            .feeds
            .iter()
            .map(|f| (f.id.to_bytes32(), f.decimals))
            .collect()
    }

    fn feed_ids(&self) -> Vec<B256> {
        self.feeds.iter().map(|(id, _)| B256::from(*id)).collect()
    }

    fn decimals(&self) -> Vec<u8> {
        self.feeds.iter().map(|(_, d)| *d).collect()
    }
}

/// The message both committees sign (SibylFeed.rotationDigest).
pub fn rotation_digest(h: &Handover) -> [u8; 32] {
    let domain: [u8; 32] = Keccak256::digest(b"Sibyl committee rotation v2").into();
    // uint8[] as 32-byte words (alloy encodes a Vec<u8> as `bytes`)
    let decimals: Vec<U256> = h.decimals().into_iter().map(U256::from).collect();
    let feeds: [u8; 32] = Keccak256::digest((h.feed_ids(), decimals).abi_encode_params()).into();
    let encoded = (
        B256::from(domain),
        U256::from(h.chain_id),
        h.contract,
        U256::from(h.rotation_count),
        B256::from(h.current),
        B256::from(h.new_digest),
        U256::from_be_bytes(h.new_key.x),
        U256::from_be_bytes(h.new_key.y),
        B256::from(feeds),
    )
        .abi_encode_params();
    Keccak256::digest(&encoded).into()
}

/// A signed rotation, ready to submit.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SignedRotation {
    pub chain_id: u64,
    pub contract: String,
    pub rotation_count: u32,
    pub current_config_digest: String,
    pub new_config_digest: String,
    pub new_group_key_x: String,
    pub new_group_key_y: String,
    /// The 32-byte message both group keys signed.
    pub message: String,
    pub signers: Vec<u16>,
    pub new_signers: Vec<u16>,
    pub signature: BTreeMap<&'static str, String>,
    pub new_key_signature: BTreeMap<&'static str, String>,
    pub function: &'static str,
    pub calldata: String,
}

fn hex0x(b: impl AsRef<[u8]>) -> String {
    format!("0x{}", hex::encode(b))
}

/// A FROST signature of `message` by `shares` (at least the threshold) of
/// `public`, checked, as the contract's `Signature` and its hex fields.
fn threshold_sign(
    public: &frost_core::keys::PublicKeyPackage<Evm>,
    shares: &[frost_core::keys::KeyPackage<Evm>],
    message: &[u8; 32],
    who: &str,
) -> Result<(Signature, BTreeMap<&'static str, String>, Vec<u16>)> {
    let mut rng = rand::rngs::OsRng;
    let mut nonces = BTreeMap::new();
    let mut commitments = BTreeMap::new();
    for kp in shares {
        let (n, c) = frost_core::round1::commit(kp.signing_share(), &mut rng);
        nonces.insert(*kp.identifier(), n);
        commitments.insert(*kp.identifier(), c);
    }
    let package = frost_core::SigningPackage::new(commitments, message);
    let mut sig_shares = BTreeMap::new();
    for kp in shares {
        let n = nonces
            .get(kp.identifier())
            .context("a signer lost its nonce")?;
        let s = frost_core::round2::sign(&package, n, kp)
            .map_err(|e| anyhow::anyhow!("{who}: signing share failed: {e}"))?;
        sig_shares.insert(*kp.identifier(), s);
    }
    let sig = frost_core::aggregate(&package, &sig_shares, public)
        .map_err(|e| anyhow::anyhow!("{who}: cannot aggregate the rotation signature: {e}"))?;
    public
        .verifying_key()
        .verify(message, &sig)
        .map_err(|e| anyhow::anyhow!("{who}: the rotation signature does not verify: {e}"))?;
    let (signature, fields) = contract_signature(public, &sig)?;
    let mut signers: Vec<u16> = shares
        .iter()
        .filter_map(|kp| {
            let ser = kp.identifier().serialize();
            // identifiers 1..=n serialize as big-endian scalars
            let tail: [u8; 2] = ser.get(ser.len().saturating_sub(2)..)?.try_into().ok()?;
            Some(u16::from_be_bytes(tail))
        })
        .collect();
    signers.sort_unstable();
    Ok((signature, fields, signers))
}

/// A group signature as the contract's `Signature` and its hex fields.
fn contract_signature(
    public: &frost_core::keys::PublicKeyPackage<Evm>,
    sig: &frost_core::Signature<Evm>,
) -> Result<(Signature, BTreeMap<&'static str, String>)> {
    let bytes = sig
        .serialize()
        .map_err(|e| anyhow::anyhow!("cannot encode the signature: {e}"))?;
    if bytes.len() != 65 {
        bail!("a secp256k1-evm signature is 65 bytes, got {}", bytes.len());
    }
    let (rx, ry) = sibyl_chain::abi::affine(&bytes[..33]).context("signature R is not a point")?;
    let key = sibyl_chain::evm_group_key(public.verifying_key())?;
    let signature = Signature {
        groupKeyX: U256::from_be_bytes(key.x),
        rx: U256::from_be_bytes(rx),
        ry: U256::from_be_bytes(ry),
        z: U256::from_be_slice(&bytes[33..]),
    };
    let fields = [
        ("group_key_x", hex0x(key.x)),
        ("rx", hex0x(rx)),
        ("ry", hex0x(ry)),
        ("z", hex0x(&bytes[33..])),
        ("raw", hex0x(&bytes)),
    ]
    .into_iter()
    .collect();
    Ok((signature, fields))
}

/// Signs the hand-over with the current committee's shares and, as proof of
/// possession, the new committee's shares; refuses a new key that is not the
/// new public key package's.
pub fn sign_rotation(
    current: (
        &frost_core::keys::PublicKeyPackage<Evm>,
        &[frost_core::keys::KeyPackage<Evm>],
    ),
    new: (
        &frost_core::keys::PublicKeyPackage<Evm>,
        &[frost_core::keys::KeyPackage<Evm>],
    ),
    handover: &Handover,
) -> Result<SignedRotation> {
    if handover.current == handover.new_digest {
        bail!(
            "the new committee has the same config digest as the current one; the contract refuses that (ConfigDigestUnchanged): change the committee file"
        );
    }
    let package_key = sibyl_chain::evm_group_key(new.0.verifying_key())?;
    if package_key != handover.new_key {
        bail!(
            "--new-group-key is not the new committee's group key (its public key package has x = {}); a hand-over to a key nobody holds would be permanent",
            hex0x(package_key.x)
        );
    }
    let message = rotation_digest(handover);
    let (signature, fields, signers) =
        threshold_sign(current.0, current.1, &message, "current committee")?;
    let (new_key_signature, new_fields, new_signers) =
        threshold_sign(new.0, new.1, &message, "new committee")?;
    let call = ISibylFeed::rotateCommitteeCall {
        newConfigDigest: B256::from(handover.new_digest),
        newGroupKeyX: U256::from_be_bytes(handover.new_key.x),
        newGroupKeyY: U256::from_be_bytes(handover.new_key.y),
        feedIds: handover.feed_ids(),
        decimals: handover.decimals(),
        signature,
        newKeySignature: new_key_signature,
    };
    Ok(SignedRotation {
        chain_id: handover.chain_id,
        contract: format!("{}", handover.contract),
        rotation_count: handover.rotation_count,
        current_config_digest: hex0x(handover.current),
        new_config_digest: hex0x(handover.new_digest),
        new_group_key_x: hex0x(handover.new_key.x),
        new_group_key_y: hex0x(handover.new_key.y),
        message: hex0x(message),
        signers,
        new_signers,
        signature: fields,
        new_key_signature: new_fields,
        function: "rotateCommittee(bytes32,uint256,uint256,bytes32[],uint8[],(uint256,uint256,uint256,uint256),(uint256,uint256,uint256,uint256))",
        calldata: hex0x(call.abi_encode()),
    })
}

/// The secp256k1-evm public key package and key shares of `configs`, which
/// must all belong to one committee and together reach its threshold.
fn load_shares(
    configs: &[PathBuf],
    what: &str,
) -> Result<(
    Committee,
    frost_core::keys::PublicKeyPackage<Evm>,
    Vec<frost_core::keys::KeyPackage<Evm>>,
)> {
    let mut current: Option<(Committee, frost_core::keys::PublicKeyPackage<Evm>)> = None;
    let mut shares: Vec<frost_core::keys::KeyPackage<Evm>> = Vec::new();
    for path in configs {
        let config = Config::load(path)?;
        let digest = config.committee.digest;
        let store = config.keystore();
        let public = store
            .read_public_key_package::<Evm>(&digest)
            .with_context(|| format!("{}: no secp256k1-evm public key package", path.display()))?;
        let kp = store
            .read_key_package::<Evm>(&digest, &config.read_key_passphrase()?)
            .with_context(|| {
                format!(
                    "{}: cannot open its secp256k1-evm key share",
                    path.display()
                )
            })?;
        match &current {
            None => current = Some((config.committee.clone(), public)),
            Some((c, p)) => {
                if c.digest != digest || p.verifying_key() != public.verifying_key() {
                    bail!(
                        "{} belongs to another committee than {}",
                        path.display(),
                        configs[0].display()
                    );
                }
            }
        }
        if shares.iter().any(|s| s.identifier() == kp.identifier()) {
            bail!("{} repeats a member already given", path.display());
        }
        shares.push(kp);
    }
    let Some((committee, public)) = current else {
        bail!("give at least the threshold of {what} member configs");
    };
    if shares.len() < usize::from(committee.threshold) {
        bail!(
            "{} {what} member key shares given, that committee needs {} (its threshold)",
            shares.len(),
            committee.threshold
        );
    }
    Ok((committee, public, shares))
}

/// `sibyl rotation` entry point: prints the signed rotation as JSON.
pub fn run(args: RotationArgs) -> Result<()> {
    let new_committee = Committee::load(&args.handover.new_committee)?;
    let (committee, public, shares) = load_shares(&args.member_configs, "current")?;
    let (next, new_public, new_shares) = load_shares(&args.new_member_configs, "new")?;
    if next.digest != new_committee.digest {
        bail!(
            "--new-member-config files belong to another committee than --new-committee {}",
            args.handover.new_committee.display()
        );
    }
    let handover = handover_of(&committee, &new_committee, &args.handover)?;
    let signed = sign_rotation((&public, &shares), (&new_public, &new_shares), &handover)?;
    println!("{}", serde_json::to_string_pretty(&signed)?);
    eprintln!(
        "submit with: cast send {} --data {} (anyone may send it)",
        signed.contract, signed.calldata
    );
    Ok(())
}

/// Arguments of `sibyl rotation-sign`: one member's part of signing the
/// hand-over where its share lives.
#[derive(Debug, clap::Args)]
pub struct RotationSignArgs {
    /// This member's node.toml (a member of the current or of the new
    /// committee: its committee file says which part it signs).
    #[arg(long)]
    pub config: PathBuf,
    /// The current committee file (its config digest goes into the message).
    #[arg(long)]
    pub current_committee: PathBuf,
    #[command(flatten)]
    pub handover: HandoverArgs,
    /// The `t` members of this member's committee who sign, comma-separated
    /// (default: the `t` lowest-numbered); the same on every signer.
    #[arg(long)]
    pub signers: Option<String>,
    /// Give up if the signature is not made after this long.
    #[arg(long, default_value = "10m")]
    pub timeout: String,
    /// Sign inside this member's running `sibyl run` (its API, admin token
    /// from node.toml): the committee keeps signing reports meanwhile.
    /// Every signer's operator runs it against its own member.
    #[arg(long)]
    pub live: bool,
}

/// One committee's signature of a hand-over, as `sibyl rotation-sign`
/// prints it and `sibyl rotation-assemble` reads it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RotationPart {
    /// `current` (the committee handing over) or `new` (proof of possession).
    pub role: String,
    pub chain_id: u64,
    pub contract: String,
    pub rotation_count: u32,
    pub current_config_digest: String,
    pub new_config_digest: String,
    pub new_group_key_x: String,
    pub new_group_key_y: String,
    pub message: String,
    pub signers: Vec<u16>,
    pub signature: BTreeMap<String, String>,
}

fn parse_members(list: &str, what: &str) -> Result<std::collections::BTreeSet<u16>> {
    list.split(',')
        .map(|s| {
            s.trim()
                .parse::<u16>()
                .map_err(|e| anyhow::anyhow!("{what} {list:?}: {s:?}: {e}"))
        })
        .collect()
}

fn handover_of(current: &Committee, new: &Committee, args: &HandoverArgs) -> Result<Handover> {
    let key_bytes = hex::decode(args.new_group_key.trim().trim_start_matches("0x"))
        .context("--new-group-key must be hex")?;
    let new_key = EvmGroupKey::from_compressed(&key_bytes)
        .context("--new-group-key is not a secp256k1 point (33-byte compressed or 65-byte SEC1)")?;
    if current.digest == new.digest {
        bail!(
            "the new committee has the same config digest as the current one; the contract refuses that (ConfigDigestUnchanged): change the committee file"
        );
    }
    Ok(Handover {
        chain_id: args.chain_id,
        contract: args.contract,
        rotation_count: args.rotation_count,
        current: current.digest.0,
        new_digest: new.digest.0,
        new_key,
        feeds: Handover::feeds_of(new),
    })
}

/// `sibyl rotation-sign`: this member's part of its committee's signature
/// of the hand-over, made with the other signers over the committee's
/// network; every signer prints the same signature.
pub fn sign_networked(args: RotationSignArgs) -> Result<()> {
    use sibyl_aggregator::dkg::Input;
    use sibyl_aggregator::dkg::sign::{SignConfig, SignOutput, ThresholdSign};
    let config = Config::load(&args.config)?;
    let current = Committee::load(&args.current_committee)?;
    let new = Committee::load(&args.handover.new_committee)?;
    let handover = handover_of(&current, &new, &args.handover)?;
    let mine = &config.committee;
    let role = if mine.digest == current.digest {
        "current"
    } else if mine.digest == new.digest {
        "new"
    } else {
        bail!(
            "{} belongs to neither --current-committee nor --new-committee",
            args.config.display()
        );
    };
    let timeout = sibyl_node::config::parse_duration(&args.timeout)
        .map_err(|e| anyhow::anyhow!("--timeout: {e}"))?;
    let keystore = config.keystore();
    let passphrase = config.key_passphrase()?;
    let public = keystore
        .read_public_key_package::<Evm>(&mine.digest)
        .context("no secp256k1-evm public key package: the hand-over is signed with that suite")?;
    if role == "new" && sibyl_chain::evm_group_key(public.verifying_key())? != handover.new_key {
        bail!(
            "--new-group-key is not this (new) committee's group key; a hand-over to a key nobody holds would be permanent"
        );
    }
    let members: std::collections::BTreeSet<u16> = mine.members.iter().map(|m| m.index).collect();
    let signers = match &args.signers {
        Some(list) => parse_members(list, "--signers")?,
        None => members
            .iter()
            .copied()
            .take(usize::from(mine.threshold))
            .collect(),
    };
    if let Some(s) = signers.iter().find(|s| !members.contains(s)) {
        bail!("--signers: {s} is not a member of this committee ({members:?})");
    }
    let message = rotation_digest(&handover);
    if args.live {
        let sig = sign_live(&config, &signers, message, timeout)?;
        let (_, fields) = contract_signature(&public, &sig)?;
        return print_part(role, &handover, message, signers, fields);
    }
    let key = keystore.read_key_package::<Evm>(&mine.digest, &passphrase)?;
    let identity = keystore.read_identity(&passphrase)?;
    let (params, net_config, runtime) =
        sibyl_node::dkg::ceremony_setup(&config, identity, timeout)?;
    let me = mine
        .members
        .iter()
        .find(|m| m.peer_id == net_config.identity.public().to_peer_id())
        .map(|m| m.index)
        .context("this node's identity is not a member of its committee")?;
    if !signers.contains(&me) {
        bail!("member {me} is not one of the signers {signers:?}; it has nothing to do");
    }
    let cfg = SignConfig {
        digest: mine.digest,
        me,
        signers: signers.clone(),
        message,
        resend_interval_ms: u64::try_from(params.resend_interval.as_millis()).unwrap_or(1000),
        timeout_ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
    };
    let mut machine =
        ThresholdSign::<Evm>::new(cfg, key, public.clone()).map_err(|e| anyhow::anyhow!("{e}"))?;
    let linger = sibyl_node::dkg::linger_of(&params);
    let sig = runtime.block_on(async {
        let mut net = sibyl_node::net::Net::new(net_config)?;
        eprintln!(
            "rotation-sign: member {me} of the {role} committee, signers {signers:?}, message 0x{}",
            hex::encode(message)
        );
        let mut rng = rand::rngs::OsRng;
        let epoch = tokio::time::Instant::now();
        let now = || u64::try_from(epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
        let mut outs = machine.handle(
            now(),
            Input::Start {
                connected: net.connected(),
            },
            &mut rng,
        );
        let signature = loop {
            let mut done = None;
            for o in outs {
                match o {
                    SignOutput::Send { to, bytes } => {
                        let _ = net.send(to, bytes);
                    }
                    SignOutput::Progress(l) => eprintln!("rotation-sign: {l}"),
                    SignOutput::Signed(sig) => done = Some(sig),
                    SignOutput::Failed(e) => {
                        if let Some(m) = e.culprit() {
                            eprintln!("rotation-sign: FAILED, member {m} is at fault");
                        }
                        anyhow::bail!("rotation-sign: {e}");
                    }
                }
            }
            if let Some(sig) = done {
                break sig;
            }
            let wake = epoch + std::time::Duration::from_millis(machine.next_wake().unwrap_or(0));
            outs = match tokio::time::timeout_at(wake, net.next_event()).await {
                Ok(sibyl_node::net::NetEvent::Message { from, bytes }) => {
                    machine.handle(now(), Input::Message { from, bytes }, &mut rng)
                }
                Ok(_) => Vec::new(),
                Err(_) => machine.handle(now(), Input::Tick, &mut rng),
            };
        };
        // The coordinator stays to answer a signer whose copy was lost.
        let until = tokio::time::Instant::now() + linger;
        while let Ok(ev) = tokio::time::timeout_at(until, net.next_event()).await {
            if let sibyl_node::net::NetEvent::Message { from, bytes } = ev
                && let Some((to, b)) = machine.answer_late(from, &bytes)
            {
                let _ = net.send(to, b);
            }
        }
        anyhow::Ok(signature)
    })?;
    let (_, fields) = contract_signature(&public, &sig)?;
    print_part(role, &handover, message, signers, fields)
}

/// `sibyl rotation-sign --live`: this member's running `sibyl run` signs
/// `message` with the other signers (`POST /v1/node/rotation/sign`).
fn sign_live(
    config: &Config,
    signers: &std::collections::BTreeSet<u16>,
    message: [u8; 32],
    timeout: std::time::Duration,
) -> Result<frost_core::Signature<Evm>> {
    let token = config
        .admin_token()
        .context("cannot read the admin token")?
        .context("node.toml sets no [api] admin_token_file or admin_token_env: the signing route needs it")?;
    let url = format!("http://{}/v1/node/rotation/sign", config.api_listen());
    let body = serde_json::json!({
        "message": hex0x(message),
        "signers": signers,
        "timeout_ms": u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX).clamp(1_000, 3_600_000),
    });
    eprintln!(
        "rotation-sign: asking the running member at {url} to sign 0x{} with {signers:?}",
        hex::encode(message)
    );
    let answer = crate::cmd::devnet::http_post_json(&url, &token, &body.to_string(), timeout)
        .with_context(|| format!("signing at {url}"))?;
    let v: serde_json::Value = serde_json::from_str(&answer).context("the answer is not JSON")?;
    let hex_sig = v["signature"]
        .as_str()
        .context("the answer has no signature")?;
    let bytes = hex::decode(hex_sig.trim_start_matches("0x")).context("signature hex")?;
    frost_core::Signature::<Evm>::deserialize(&bytes)
        .map_err(|e| anyhow::anyhow!("the member's signature does not parse: {e}"))
}

/// The part `sibyl rotation-assemble` reads, on stdout.
fn print_part(
    role: &str,
    handover: &Handover,
    message: [u8; 32],
    signers: std::collections::BTreeSet<u16>,
    fields: BTreeMap<&'static str, String>,
) -> Result<()> {
    let part = RotationPart {
        role: role.into(),
        chain_id: handover.chain_id,
        contract: format!("{}", handover.contract),
        rotation_count: handover.rotation_count,
        current_config_digest: hex0x(handover.current),
        new_config_digest: hex0x(handover.new_digest),
        new_group_key_x: hex0x(handover.new_key.x),
        new_group_key_y: hex0x(handover.new_key.y),
        message: hex0x(message),
        signers: signers.into_iter().collect(),
        signature: fields
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect(),
    };
    println!("{}", serde_json::to_string_pretty(&part)?);
    Ok(())
}

/// Arguments of `sibyl rotation-assemble`.
#[derive(Debug, clap::Args)]
pub struct RotationAssembleArgs {
    /// The current committee's part (`sibyl rotation-sign` output, role
    /// current). For a hand-over that keeps the group key (members removed
    /// or added), a part of the new committee (it is the same key's
    /// signature), e.g. the same file as --new.
    #[arg(long)]
    pub current: PathBuf,
    /// The new committee's part (role new).
    #[arg(long)]
    pub new: PathBuf,
    /// The new committee file (its feeds go into the calldata).
    #[arg(long)]
    pub new_committee: PathBuf,
    /// Also send the call, from the transmitter account of this node.toml's
    /// `[chain]` (any member's, of either committee), and wait for it to be
    /// mined. Without it, the calldata is printed for `cast send`.
    #[arg(long, value_name = "NODE_TOML")]
    pub submit_with: Option<PathBuf>,
}

fn word(fields: &BTreeMap<String, String>, k: &str, what: &str) -> Result<U256> {
    let v = fields
        .get(k)
        .with_context(|| format!("{what}: no {k} in the signature"))?;
    U256::from_str_radix(v.trim_start_matches("0x"), 16)
        .map_err(|e| anyhow::anyhow!("{what}: {k} {v:?}: {e}"))
}

fn part_signature(p: &RotationPart, what: &str) -> Result<Signature> {
    Ok(Signature {
        groupKeyX: word(&p.signature, "group_key_x", what)?,
        rx: word(&p.signature, "rx", what)?,
        ry: word(&p.signature, "ry", what)?,
        z: word(&p.signature, "z", what)?,
    })
}

/// `sibyl rotation-assemble`: both committees' parts -> the signed rotation
/// and its calldata, refused unless both signed the same hand-over and that
/// hand-over's message is what the new committee file makes it.
pub fn assemble(args: RotationAssembleArgs) -> Result<()> {
    let read = |p: &PathBuf| -> Result<RotationPart> {
        serde_json::from_slice(
            &std::fs::read(p).with_context(|| format!("cannot read {}", p.display()))?,
        )
        .with_context(|| format!("{}: not a `sibyl rotation-sign` output", p.display()))
    };
    let (cur, new) = (read(&args.current)?, read(&args.new)?);
    // A hand-over that keeps the group key (members removed or added: only
    // the digest changes) has no "current" part to make: the new
    // committee's signature is one by the current key. Checked below
    // against the hand-over's key.
    let same_key = cur.role == "new" && new.role == "new";
    if !same_key && (cur.role != "current" || new.role != "new") {
        bail!(
            "--current is a {:?} part and --new a {:?} part; give the current committee's, then the new one's",
            cur.role,
            new.role
        );
    }
    if cur.message != new.message {
        bail!(
            "the two parts signed different messages ({} and {}): different hand-overs",
            cur.message,
            new.message
        );
    }
    let new_committee = Committee::load(&args.new_committee)?;
    let unhex32 = |v: &str, what: &str| -> Result<[u8; 32]> {
        hex::decode(v.trim_start_matches("0x"))
            .ok()
            .and_then(|b| b.try_into().ok())
            .with_context(|| format!("{what} {v:?} is not 32 bytes of hex"))
    };
    let handover = Handover {
        chain_id: cur.chain_id,
        contract: cur.contract.parse().context("contract address")?,
        rotation_count: cur.rotation_count,
        current: unhex32(&cur.current_config_digest, "current_config_digest")?,
        new_digest: unhex32(&cur.new_config_digest, "new_config_digest")?,
        new_key: EvmGroupKey {
            x: unhex32(&cur.new_group_key_x, "new_group_key_x")?,
            y: unhex32(&cur.new_group_key_y, "new_group_key_y")?,
        },
        feeds: Handover::feeds_of(&new_committee),
    };
    if handover.new_digest != new_committee.digest.0 {
        bail!("--new-committee is not the committee the parts hand over to");
    }
    if same_key {
        let signer_x = word(&cur.signature, "group_key_x", "--current")?;
        if signer_x != U256::from_be_bytes(handover.new_key.x) {
            bail!(
                "--current is a part of the new committee, which stands for the current key only when the hand-over keeps the group key; this one changes it: give the current committee's part"
            );
        }
        eprintln!(
            "rotation-assemble: the hand-over keeps the group key; the new committee's signature serves as the current key's too"
        );
    }
    if hex0x(rotation_digest(&handover)) != cur.message {
        bail!(
            "the parts' message is not this hand-over's (chain, contract, count, digests, key or feeds differ)"
        );
    }
    let call = ISibylFeed::rotateCommitteeCall {
        newConfigDigest: B256::from(handover.new_digest),
        newGroupKeyX: U256::from_be_bytes(handover.new_key.x),
        newGroupKeyY: U256::from_be_bytes(handover.new_key.y),
        feedIds: handover.feed_ids(),
        decimals: handover.decimals(),
        signature: part_signature(&cur, "--current")?,
        newKeySignature: part_signature(&new, "--new")?,
    };
    let out = serde_json::json!({
        "contract": cur.contract,
        "message": cur.message,
        "signers": cur.signers,
        "new_signers": new.signers,
        "function": "rotateCommittee(bytes32,uint256,uint256,bytes32[],uint8[],(uint256,uint256,uint256,uint256),(uint256,uint256,uint256,uint256))",
        "calldata": hex0x(call.abi_encode()),
    });
    println!("{}", serde_json::to_string_pretty(&out)?);
    let Some(node_toml) = &args.submit_with else {
        eprintln!(
            "submit with: cast send {} --data <calldata> (anyone may send it), or add --submit-with node.toml",
            cur.contract
        );
        return Ok(());
    };
    let config = Config::load(node_toml)?;
    let contract: alloy_primitives::Address = cur.contract.parse().context("contract address")?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let (hash, receipt) = runtime.block_on(sibyl_chain::submit_call(
        &config,
        contract,
        &call.abi_encode(),
        std::time::Duration::from_secs(120),
    ))?;
    if !receipt.success {
        bail!(
            "transaction {hash} reverted on chain (gas used {})",
            receipt.gas_used
        );
    }
    eprintln!(
        "rotation-assemble: hand-over mined in transaction {hash}, gas used {}: the contract now names config digest {}",
        receipt.gas_used,
        hex0x(handover.new_digest)
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use sibyl_aggregator::testkit::dealer_keys;

    fn handover(new_key: EvmGroupKey) -> Handover {
        Handover {
            chain_id: 31337,
            contract: Address::repeat_byte(0x5b),
            rotation_count: 0,
            current: [1; 32],
            new_digest: [2; 32],
            new_key,
            feeds: vec![([7; 32], 8)],
        }
    }

    #[test]
    fn both_committees_sign_a_rotation_their_group_keys_verify() {
        let mut rng = rand::rngs::OsRng;
        let old = dealer_keys::<Evm, _>(4, 3, &mut rng).expect("old keys");
        let new = dealer_keys::<Evm, _>(4, 3, &mut rng).expect("new keys");
        let new_key =
            sibyl_chain::evm_group_key(new.public_key_package.verifying_key()).expect("new key");
        let shares: Vec<_> = old.key_packages.values().take(3).cloned().collect();
        let new_shares: Vec<_> = new.key_packages.values().skip(1).cloned().collect();
        let h = handover(new_key);
        let signed = sign_rotation(
            (&old.public_key_package, &shares),
            (&new.public_key_package, &new_shares),
            &h,
        )
        .expect("signed");
        assert_eq!(signed.signers, vec![1, 2, 3]);
        assert_eq!(signed.new_signers, vec![2, 3, 4]);
        assert_eq!(signed.message, hex0x(rotation_digest(&h)));
        let call = ISibylFeed::rotateCommitteeCall::abi_decode(
            &hex::decode(&signed.calldata[2..]).expect("hex"),
        )
        .expect("calldata decodes");
        assert_eq!(call.newConfigDigest, B256::from([2; 32]));
        assert_eq!(call.newGroupKeyX, U256::from_be_bytes(new_key.x));
        assert_eq!(
            call.newKeySignature.groupKeyX,
            U256::from_be_bytes(new_key.x)
        );
        assert_eq!(call.decimals, vec![8]);
        // keccak256(abi.encode(bytes32[] [0x07..07], uint8[] [8])) as Solidity computes it:
        // offsets 0x40, 0x80; then [1, 0x07..07]; then [1, 8]
        let mut sol = Vec::new();
        for w in [0x40u8, 0x80, 1] {
            sol.extend([0u8; 31]);
            sol.push(w);
        }
        sol.extend([7u8; 32]);
        for w in [1u8, 8] {
            sol.extend([0u8; 31]);
            sol.push(w);
        }
        let decimals: Vec<U256> = h.decimals().into_iter().map(U256::from).collect();
        assert_eq!((h.feed_ids(), decimals).abi_encode_params(), sol);
        // the message binds chain, contract and counter
        for other in [
            Handover {
                chain_id: 1,
                ..h.clone()
            },
            Handover {
                contract: Address::repeat_byte(1),
                ..h.clone()
            },
            Handover {
                rotation_count: 1,
                ..h.clone()
            },
            Handover {
                feeds: vec![],
                ..h.clone()
            },
        ] {
            assert_ne!(rotation_digest(&other), rotation_digest(&h));
        }
        // Same digest: refused before signing.
        let same = Handover {
            new_digest: [1; 32],
            ..h.clone()
        };
        assert!(
            sign_rotation(
                (&old.public_key_package, &shares),
                (&new.public_key_package, &new_shares),
                &same
            )
            .is_err()
        );
    }

    #[test]
    fn a_new_key_that_is_not_the_new_committees_is_refused() {
        let mut rng = rand::rngs::OsRng;
        let old = dealer_keys::<Evm, _>(4, 3, &mut rng).expect("old keys");
        let new = dealer_keys::<Evm, _>(4, 3, &mut rng).expect("new keys");
        let stranger = dealer_keys::<Evm, _>(4, 3, &mut rng).expect("stranger keys");
        let stranger_key =
            sibyl_chain::evm_group_key(stranger.public_key_package.verifying_key()).expect("k");
        let shares: Vec<_> = old.key_packages.values().take(3).cloned().collect();
        let new_shares: Vec<_> = new.key_packages.values().take(3).cloned().collect();
        let e = sign_rotation(
            (&old.public_key_package, &shares),
            (&new.public_key_package, &new_shares),
            &handover(stranger_key),
        )
        .expect_err("a key nobody of the new committee holds");
        assert!(
            e.to_string().contains("not the new committee's group key"),
            "{e}"
        );
    }

    #[test]
    fn fewer_shares_than_the_threshold_do_not_sign() {
        let mut rng = rand::rngs::OsRng;
        let old = dealer_keys::<Evm, _>(4, 3, &mut rng).expect("old keys");
        let new = dealer_keys::<Evm, _>(4, 3, &mut rng).expect("new keys");
        let key = sibyl_chain::evm_group_key(new.public_key_package.verifying_key()).expect("k");
        let shares: Vec<_> = old.key_packages.values().take(2).cloned().collect();
        let new_shares: Vec<_> = new.key_packages.values().take(3).cloned().collect();
        assert!(
            sign_rotation(
                (&old.public_key_package, &shares),
                (&new.public_key_package, &new_shares),
                &handover(key)
            )
            .is_err()
        );
        let shares: Vec<_> = old.key_packages.values().take(3).cloned().collect();
        let new_shares: Vec<_> = new.key_packages.values().take(2).cloned().collect();
        assert!(
            sign_rotation(
                (&old.public_key_package, &shares),
                (&new.public_key_package, &new_shares),
                &handover(key)
            )
            .is_err()
        );
    }
}
