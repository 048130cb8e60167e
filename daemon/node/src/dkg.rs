//! `sibyl dkg`: the driver of the DKG state machine
//! ([`sibyl_aggregator::dkg`], where the ceremony, its messages and its blame
//! rules live). This file only carries the machine's bytes over the
//! committee's libp2p network, keeps its timer, prints its progress and, once
//! every suite's ceremony succeeded, writes the key files.
//!
//! ```text
//!   Net ──Message{from, bytes}──► Dkg::handle(now, input, rng) ──Send{to, bytes}──► Net
//!   Net connections ──Connected──►        │                   ──Progress──► stderr
//!   timer (next_wake) ──Tick─────►        │                   ──Done(keys)──► keystore
//!                                          └──────────────────  Failed(culprit)
//! ```

use std::collections::BTreeMap;
use std::time::Duration;

use libp2p::PeerId;
use libp2p::identity::{Keypair, PublicKey};
use rand_core::{CryptoRng, RngCore};
use sibyl_aggregator::dkg::{Dkg, DkgConfig, IdentitySigner, Input, Output};
use sibyl_aggregator::{ConfigDigest, Suite};

pub use sibyl_aggregator::dkg::{
    DkgDecodeError, DkgMessage, DkgOutput, DkgResult, EchoEntries, Phase, round1_statement,
    session_id,
};

use crate::keystore::{self, Keystore, Passphrase};
use crate::net::{Net, NetEvent};

/// Why `sibyl dkg` failed: the ceremony (which names the member at fault,
/// if any) or writing the keys.
#[derive(Debug, thiserror::Error)]
pub enum DkgError {
    #[error(transparent)]
    Ceremony(#[from] sibyl_aggregator::dkg::DkgError),
    #[error(transparent)]
    Keystore(#[from] keystore::KeystoreError),
}

impl DkgError {
    /// The member this error blames, if any.
    pub fn culprit(&self) -> Option<u16> {
        match self {
            DkgError::Ceremony(e) => e.culprit(),
            DkgError::Keystore(_) => None,
        }
    }
}

fn params_error(reason: String) -> DkgError {
    DkgError::Ceremony(sibyl_aggregator::dkg::DkgError::Params(reason))
}

/// Parameters of one member's side of the ceremony.
#[derive(Clone, Debug)]
pub struct DkgParams {
    /// Binds every message to the committee.
    pub digest: ConfigDigest,
    /// The signing threshold t.
    pub threshold: u16,
    /// This member's identity key (the same one the `Net` uses).
    pub identity: Keypair,
    /// Every member's index and PeerId (this member included).
    pub members: BTreeMap<u16, PeerId>,
    /// Give up after this long (per suite).
    pub timeout: Duration,
    /// Re-send to members that have not answered after this long.
    pub resend_interval: Duration,
}

impl DkgParams {
    /// This member's side of a ceremony of `committee` (re-sends every second).
    pub fn of_committee(
        committee: &crate::config::Committee,
        identity: Keypair,
        timeout: Duration,
    ) -> Self {
        Self {
            digest: committee.digest,
            threshold: committee.threshold,
            identity,
            members: committee
                .members
                .iter()
                .map(|m| (m.index, m.peer_id))
                .collect(),
            timeout,
            resend_interval: Duration::from_secs(1),
        }
    }
}

/// The ed25519 public key inside an ed25519 PeerId.
pub fn public_key_of(peer: &PeerId) -> Option<PublicKey> {
    let mh = peer.as_ref();
    // Identity multihash (code 0): the protobuf-encoded public key is inline.
    if mh.code() != 0 {
        return None;
    }
    PublicKey::try_decode_protobuf(mh.digest()).ok()
}

/// The identity key as the machine's signer.
struct Libp2pSigner(Keypair);

impl IdentitySigner for Libp2pSigner {
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, String> {
        self.0.sign(message).map_err(|e| e.to_string())
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// The machine for this member's side of the ceremonies over `net`.
pub fn machine(net: &Net, params: &DkgParams, suites: &[Suite]) -> Result<Dkg, DkgError> {
    Ok(Dkg::new(
        dkg_config(net, params, suites)?,
        Box::new(Libp2pSigner(params.identity.clone())),
    )?)
}

/// The machine of a proactive refresh of `keys` over `net` (`sibyl refresh`).
pub fn refresh_machine(
    net: &Net,
    params: &DkgParams,
    suites: &[Suite],
    keys: sibyl_aggregator::dkg::RefreshKeys,
) -> Result<Dkg, DkgError> {
    Ok(Dkg::refresh(
        dkg_config(net, params, suites)?,
        Box::new(Libp2pSigner(params.identity.clone())),
        keys,
    )?)
}

fn dkg_config(net: &Net, params: &DkgParams, suites: &[Suite]) -> Result<DkgConfig, DkgError> {
    dkg_config_of(net.me(), net.local_peer_id(), params, suites)
}

/// The in-node refresh's machine factory ([`crate::rekey`]): member `me`
/// (whose identity is `params.identity`) refreshing whatever keys it holds
/// when a refresh starts.
pub fn refresh_factory(
    me: u16,
    params: &DkgParams,
    suites: &[Suite],
) -> Result<crate::rekey::MachineFactory, DkgError> {
    let local = params.identity.public().to_peer_id();
    let config = dkg_config_of(me, local, params, suites)?;
    let identity = params.identity.clone();
    Ok(Box::new(move |keys, run| {
        let config = DkgConfig {
            digest: crate::rekey::ceremony_digest(&config.digest, &keys, run),
            ..config.clone()
        };
        Dkg::refresh(config, Box::new(Libp2pSigner(identity.clone())), keys)
    }))
}

fn dkg_config_of(
    me: u16,
    local: PeerId,
    params: &DkgParams,
    suites: &[Suite],
) -> Result<DkgConfig, DkgError> {
    if params.members.get(&me) != Some(&local) {
        return Err(params_error(format!(
            "the network's identity is not member {me} of the committee"
        )));
    }
    let mut members = BTreeMap::new();
    for (&i, peer) in &params.members {
        let key = public_key_of(peer)
            .and_then(|k| k.try_into_ed25519().ok())
            .and_then(|k| ed25519_dalek::VerifyingKey::from_bytes(&k.to_bytes()).ok())
            .ok_or_else(|| {
                params_error(format!(
                    "member {i}'s PeerId {peer} has no ed25519 key; every member needs an ed25519 identity (`sibyl identity`)"
                ))
            })?;
        members.insert(i, key);
    }
    let config = DkgConfig {
        digest: params.digest,
        threshold: params.threshold,
        me,
        members,
        suites: suites.to_vec(),
        // The command ends within `timeout`: the ceremonies get what the
        // linger (answering repeats after the end) leaves of it.
        timeout_ms: millis(params.timeout.saturating_sub(linger_of(params))),
        total_timeout_ms: Some(millis(params.timeout.saturating_sub(linger_of(params)))),
        resend_interval_ms: millis(params.resend_interval),
    };
    Ok(config)
}

/// Drive `machine` over `net` until it finishes, then keep answering repeats
/// for `linger` so members that missed our last messages finish too.
/// Nothing is stored.
pub async fn drive<R: RngCore + CryptoRng>(
    net: &mut Net,
    machine: &mut Dkg,
    linger: Duration,
    mut progress: impl FnMut(&str) + Send,
    rng: &mut R,
) -> Result<DkgResult, DkgError> {
    let epoch = tokio::time::Instant::now();
    let now = || millis(epoch.elapsed());
    let mut outcome = None;
    let mut outputs = machine.handle(
        now(),
        Input::Start {
            connected: net.connected(),
        },
        rng,
    );
    loop {
        for output in outputs {
            match output {
                Output::Send { to, bytes } => {
                    if let Err(e) = net.send(to, bytes) {
                        tracing::warn!(member = to, error = %e, "cannot send DKG message");
                    }
                }
                Output::Progress(line) => progress(&line),
                Output::Done(result) => outcome = Some(Ok(*result)),
                Output::Failed(e) => outcome = Some(Err(DkgError::Ceremony(e))),
            }
        }
        if outcome.is_some() {
            break;
        }
        let wake = epoch + Duration::from_millis(machine.next_wake().unwrap_or(0));
        outputs = match tokio::time::timeout_at(wake, net.next_event()).await {
            Ok(NetEvent::Message { from, bytes }) => {
                machine.handle(now(), Input::Message { from, bytes }, rng)
            }
            Ok(_) => machine.handle(now(), Input::Connected(net.connected()), rng),
            Err(_) => {
                let mut o = machine.handle(now(), Input::Connected(net.connected()), rng);
                o.extend(machine.handle(now(), Input::Tick, rng));
                o
            }
        };
    }
    // Stay a moment so what we already sent (e.g. the echo that lets the
    // others catch an equivocator too) is delivered, and answer repeats.
    let deadline = tokio::time::Instant::now() + linger;
    while let Ok(event) = tokio::time::timeout_at(deadline, net.next_event()).await {
        if let NetEvent::Message { from, bytes } = event {
            for output in machine.handle(now(), Input::Message { from, bytes }, rng) {
                if let Output::Send { to, bytes } = output
                    && let Err(e) = net.send(to, bytes)
                {
                    tracing::warn!(member = to, error = %e, "cannot re-send DKG message");
                }
            }
        }
    }
    outcome.unwrap_or_else(|| Err(params_error("the ceremony ended without a result".into())))
}

/// Write every suite's key package (encrypted) and public key package.
/// Called only after every ceremony succeeded.
pub fn store(
    result: &DkgResult,
    keystore: &Keystore,
    digest: &ConfigDigest,
    passphrase: &Passphrase,
) -> Result<(), DkgError> {
    if let Some(o) = &result.ed25519 {
        keystore.write_key_package(digest, &o.key_package, passphrase)?;
        keystore.write_public_key_package(digest, &o.public_key_package)?;
    }
    if let Some(o) = &result.secp256k1_evm {
        keystore.write_key_package(digest, &o.key_package, passphrase)?;
        keystore.write_public_key_package(digest, &o.public_key_package)?;
    }
    Ok(())
}

/// How long a member keeps answering repeats after its ceremonies ended:
/// three re-send intervals, at most a quarter of the timeout (which bounds
/// the whole run, linger included).
pub fn linger_of(params: &DkgParams) -> Duration {
    (params.resend_interval * 3).min(params.timeout / 4)
}

/// Run the ceremony for each of `suites` over `net`; nothing is stored.
pub async fn run_dkg(
    net: &mut Net,
    params: DkgParams,
    suites: &[Suite],
    progress: impl FnMut(&str) + Send,
) -> Result<DkgResult, DkgError> {
    let mut machine = machine(net, &params, suites)?;
    let linger = linger_of(&params);
    drive(net, &mut machine, linger, progress, &mut rand::rngs::OsRng).await
}

/// Run the ceremonies and, only if all of them succeed, store the keys.
/// On failure nothing is written.
pub async fn run_dkg_and_store(
    net: &mut Net,
    params: DkgParams,
    suites: &[Suite],
    keystore: &Keystore,
    passphrase: &Passphrase,
    progress: impl FnMut(&str) + Send,
) -> Result<DkgResult, DkgError> {
    let digest = params.digest;
    let result = run_dkg(net, params, suites, progress).await?;
    store(&result, keystore, &digest, passphrase)?;
    Ok(result)
}

/// What a ceremony over the committee network needs (`sibyl dkg`, `sibyl
/// refresh`): its parameters for this committee, the network's settings
/// from node.toml and a single-threaded runtime to drive it.
pub fn ceremony_setup(
    config: &crate::config::Config,
    identity: Keypair,
    timeout: Duration,
) -> anyhow::Result<(DkgParams, crate::net::NetConfig, tokio::runtime::Runtime)> {
    use anyhow::Context;
    let params = DkgParams::of_committee(&config.committee, identity.clone(), timeout);
    let net_config = crate::net::NetConfig::from_node_config(config, identity)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    Ok((params, net_config, runtime))
}

/// Arguments of `sibyl dkg`.
#[derive(Debug, clap::Args)]
pub struct DkgArgs {
    /// This member's node.toml (names the committee file, keys and passphrase).
    #[arg(long)]
    pub config: std::path::PathBuf,
    /// Give up if the ceremony has not finished after this long.
    #[arg(long, default_value = "10m")]
    pub timeout: String,
    /// Replace key packages that already exist for this committee.
    #[arg(long)]
    pub force: bool,
}

/// `sibyl dkg --config <node.toml>`.
pub fn command(args: DkgArgs) -> anyhow::Result<()> {
    let config = crate::config::Config::load(&args.config)?;
    let timeout = crate::config::parse_duration(&args.timeout)
        .map_err(|e| anyhow::anyhow!("--timeout: {e}"))?;
    let keystore = config.keystore();
    let passphrase = config.key_passphrase()?;
    let identity = keystore.read_identity(&passphrase)?;
    let committee = &config.committee;
    let digest = committee.digest;
    if !args.force {
        for suite in &committee.suites {
            let path = match suite {
                Suite::Ed25519 => keystore.key_package_path::<frost_ed25519::Ed25519Sha512>(),
                Suite::Secp256k1Evm => {
                    keystore.key_package_path::<frost_secp256k1_evm::Secp256K1Keccak256>()
                }
            };
            if path.exists() {
                anyhow::bail!(
                    "{} already exists; pass --force to replace it with the keys of a new ceremony",
                    path.display()
                );
            }
        }
    }
    let (params, net_config, runtime) = ceremony_setup(&config, identity, timeout)?;
    let suites = committee.suites.clone();
    let written = keystore.clone();
    let result = runtime.block_on(async move {
        let mut net = crate::net::Net::new(net_config)?;
        eprintln!(
            "dkg: member {} of {}, threshold {}, committee digest {}",
            net.me(),
            params.members.len(),
            params.threshold,
            hex::encode(digest.0)
        );
        let r = run_dkg_and_store(&mut net, params, &suites, &keystore, &passphrase, |line| {
            eprintln!("dkg: {line}")
        })
        .await;
        anyhow::Ok(r)
    })?;
    match result {
        Ok(result) => {
            for (suite, key) in result.group_keys() {
                println!(
                    "group public key ({}): {key}",
                    crate::keygen::suite_name(suite)
                );
            }
            for suite in &config.committee.suites {
                let (key, public) = match suite {
                    Suite::Ed25519 => key_paths::<frost_ed25519::Ed25519Sha512>(&written),
                    Suite::Secp256k1Evm => {
                        key_paths::<frost_secp256k1_evm::Secp256K1Keccak256>(&written)
                    }
                };
                println!(
                    "wrote {} (encrypted key package, mode 0600) and {} (public key package)",
                    key.display(),
                    public.display()
                );
            }
            Ok(())
        }
        Err(e) => {
            if let Some(member) = e.culprit() {
                eprintln!("dkg: FAILED, member {member} is at fault; nothing was stored");
            } else {
                eprintln!("dkg: FAILED; nothing was stored");
            }
            Err(e.into())
        }
    }
}

/// Where `sibyl dkg` wrote one suite's key package and public key package.
fn key_paths<C: frost_core::Ciphersuite>(
    keystore: &Keystore,
) -> (std::path::PathBuf, std::path::PathBuf) {
    (
        keystore.key_package_path::<C>(),
        keystore.public_key_package_path::<C>(),
    )
}

#[cfg(test)]
mod tests;
