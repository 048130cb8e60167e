//! `sibyl repair`: give a member that lost its key shares its *own* shares
//! back, from `t` helpers, over the committee's network (FROST's repairable
//! threshold scheme: [`sibyl_aggregator::dkg::repair`]). The group key, the
//! other members' shares and the committee file stay as they are: nothing
//! changes on chain.
//!
//! Every participant (the `t` helpers and the member being repaired) runs
//! `sibyl repair --member <lost>` at about the same time, with its node
//! stopped, and the same `--helpers` (default: the `t` lowest-numbered
//! other members). The repaired member writes its key packages (encrypted)
//! only once its shares check against the group's public key package; then
//! it tells the helpers, who stop. A run that fails or is killed writes
//! nothing; run it again (a restarted member starts a new run and the
//! helpers follow it).

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

use sibyl_aggregator::dkg::repair::{LostKeys, Repair, RepairConfig, RepairOutput, RepairRole};
use sibyl_aggregator::dkg::{Input, RefreshKeys};
use sibyl_aggregator::{ConfigDigest, Suite};

use crate::dkg::DkgError;
use crate::keystore::Keystore;
use crate::net::{Net, NetEvent};
use crate::refresh::{read_keys, write_keys};

type Ed = frost_ed25519::Ed25519Sha512;
type Evm = frost_secp256k1_evm::Secp256K1Keccak256;

/// How a repair ended for this member.
#[derive(Debug)]
pub enum RepairOutcome {
    /// This member's shares were repaired and stored.
    Repaired(Box<RefreshKeys>),
    /// This member helped; the repaired member stored its shares.
    Helped,
}

/// The helpers: `--helpers` as given, or the `t` lowest-numbered members
/// other than `lost`.
pub fn helpers_of(
    members: &BTreeSet<u16>,
    threshold: u16,
    lost: u16,
    given: Option<&str>,
) -> anyhow::Result<BTreeSet<u16>> {
    if !members.contains(&lost) {
        anyhow::bail!("--member {lost}: no such member (members: {members:?})");
    }
    let helpers: BTreeSet<u16> = match given {
        Some(list) => list
            .split(',')
            .map(|s| {
                s.trim()
                    .parse::<u16>()
                    .map_err(|e| anyhow::anyhow!("--helpers {list:?}: {s:?}: {e}"))
            })
            .collect::<anyhow::Result<_>>()?,
        None => members
            .iter()
            .copied()
            .filter(|m| *m != lost)
            .take(usize::from(threshold))
            .collect(),
    };
    if let Some(h) = helpers.iter().find(|h| !members.contains(h)) {
        anyhow::bail!("--helpers: {h} is not a member (members: {members:?})");
    }
    if helpers.contains(&lost) {
        anyhow::bail!("--helpers: member {lost} cannot help repair itself");
    }
    if helpers.len() != usize::from(threshold) {
        anyhow::bail!(
            "a repair needs exactly t = {threshold} helpers; {helpers:?} are {}",
            helpers.len()
        );
    }
    Ok(helpers)
}

/// Drive `machine` over `net`: the repaired member stores its keys when
/// they come, then keeps telling the helpers for `linger`; a helper ends
/// when the repaired member says it stored them.
pub async fn drive_repair<R: rand_core::RngCore + rand_core::CryptoRng>(
    net: &mut Net,
    machine: &mut Repair,
    store: &mut dyn FnMut(&RefreshKeys) -> Result<(), DkgError>,
    linger: Duration,
    mut progress: impl FnMut(&str) + Send,
    rng: &mut R,
) -> Result<RepairOutcome, DkgError> {
    let epoch = tokio::time::Instant::now();
    let now = || u64::try_from(epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
    let mut outcome: Option<Result<RepairOutcome, DkgError>> = None;
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
                RepairOutput::Send { to, bytes } => {
                    if let Err(e) = net.send(to, bytes) {
                        tracing::warn!(member = to, error = %e, "cannot send repair message");
                    }
                }
                RepairOutput::Progress(line) => progress(&line),
                RepairOutput::Repaired(keys) => {
                    // Stored before the helpers hear "done" (the sends
                    // after this output): a failed write tells nobody.
                    store(&keys)?;
                    progress("repaired shares stored");
                    outcome = Some(Ok(RepairOutcome::Repaired(keys)));
                }
                RepairOutput::Helped => outcome = Some(Ok(RepairOutcome::Helped)),
                RepairOutput::Failed(e) => return Err(e.into()),
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
            Ok(_) => Vec::new(),
            Err(_) => machine.handle(now(), Input::Tick, rng),
        };
    }
    // The repaired member keeps saying "done" (every resend interval, and
    // in answer to a sigma) so a helper whose copy was lost ends too.
    let deadline = tokio::time::Instant::now() + linger;
    loop {
        let wake = (epoch + Duration::from_millis(machine.next_wake().unwrap_or(0))).min(deadline);
        let outs = match tokio::time::timeout_at(wake, net.next_event()).await {
            Ok(NetEvent::Message { from, bytes }) => {
                machine.handle(now(), Input::Message { from, bytes }, rng)
            }
            Ok(_) => Vec::new(),
            Err(_) if tokio::time::Instant::now() >= deadline => break,
            Err(_) => machine.handle(now(), Input::Tick, rng),
        };
        for o in outs {
            if let RepairOutput::Send { to, bytes } = o {
                let _ = net.send(to, bytes);
            }
        }
    }
    outcome.unwrap_or_else(|| {
        Err(
            sibyl_aggregator::dkg::DkgError::Params("the repair ended without a result".into())
                .into(),
        )
    })
}

/// Arguments of `sibyl repair`.
#[derive(Debug, clap::Args)]
pub struct RepairArgs {
    /// This member's node.toml.
    #[arg(long)]
    pub config: PathBuf,
    /// The member whose key shares are repaired (every participant names it).
    #[arg(long)]
    pub member: u16,
    /// The `t` helpers, comma-separated (default: the `t` lowest-numbered
    /// members other than `--member`). Every participant gives the same list.
    #[arg(long)]
    pub helpers: Option<String>,
    /// Give up if the repair has not finished after this long.
    #[arg(long, default_value = "10m")]
    pub timeout: String,
    /// On the repaired member: replace key packages that still exist (a
    /// damaged file, or one encrypted under a lost passphrase).
    #[arg(long)]
    pub force: bool,
    /// Add `--member` to the committee: this committee file is the current
    /// one plus that member (same threshold, suites and other members). The
    /// `t` helpers give the new member a share of the same group key; every
    /// current member (helper or not) re-binds its shares to this committee,
    /// with the new member's verifying share added. Then point node.toml's
    /// `committee` at it and hand the contract over to its digest.
    #[arg(long)]
    pub new_committee: Option<PathBuf>,
}

/// Checks that `new` is `current` plus member `added` and nothing else
/// ([`crate::config::Committee::membership_change`]).
pub fn addition_of(
    current: &crate::config::Committee,
    new: &crate::config::Committee,
    added: u16,
) -> anyhow::Result<()> {
    use anyhow::bail;
    let (removed, extra) = current.membership_change(new).map_err(anyhow::Error::msg)?;
    if !removed.is_empty() {
        bail!(
            "member(s) {removed:?} of the current committee are not in the new one: remove members with `sibyl refresh --new-committee`, one change at a time"
        );
    }
    if extra != [added] {
        bail!(
            "the new committee adds member(s) {extra:?}; --member {added} must be the one member it adds"
        );
    }
    Ok(())
}

/// This member's keys for the committee `new` that adds member `added`:
/// the same key packages, the public key packages extended with the new
/// member's verifying share, all bound to `new`'s digest.
pub fn rebind_for_addition(
    keystore: &Keystore,
    keys: &RefreshKeys,
    new: &ConfigDigest,
    added: u16,
    passphrase: &crate::keystore::Passphrase,
) -> Result<RefreshKeys, DkgError> {
    use sibyl_aggregator::dkg::repair::enrolled;
    type Pair<C> = (
        frost_core::keys::KeyPackage<C>,
        frost_core::keys::PublicKeyPackage<C>,
    );
    fn extend<C: frost_core::Ciphersuite>(
        pair: &Option<Pair<C>>,
        added: u16,
    ) -> Result<Option<Pair<C>>, DkgError> {
        let Some((k, p)) = pair else {
            return Ok(None);
        };
        let id = frost_core::Identifier::<C>::try_from(added)
            .map_err(|e| sibyl_aggregator::dkg::DkgError::Params(format!("member {added}: {e}")))?;
        Ok(Some((k.clone(), enrolled(p, id)?)))
    }
    let rebound = RefreshKeys {
        ed25519: extend(&keys.ed25519, added)?,
        secp256k1_evm: extend(&keys.secp256k1_evm, added)?,
    };
    write_keys(keystore, new, &rebound, passphrase)?;
    Ok(rebound)
}

/// Public key packages this member still has (a repaired member may have
/// lost only its secret files).
fn own_public<C: frost_core::Ciphersuite>(
    keystore: &Keystore,
    digest: &ConfigDigest,
) -> Option<frost_core::keys::PublicKeyPackage<C>> {
    keystore.read_public_key_package::<C>(digest).ok()
}

/// `sibyl repair --config <node.toml> --member <lost>`.
pub fn command(args: RepairArgs) -> anyhow::Result<()> {
    use anyhow::Context;
    let mut config = crate::config::Config::load(&args.config)?;
    let timeout = crate::config::parse_duration(&args.timeout)
        .map_err(|e| anyhow::anyhow!("--timeout: {e}"))?;
    let keystore = config.keystore();
    let passphrase = config.key_passphrase()?;
    // Adding a member: the digest this member's keys are bound to now
    // (None on the joining member, whose node.toml names the new committee).
    let mut current_digest = None;
    if let Some(path) = &args.new_committee {
        let new = crate::config::Committee::load(path)?;
        if new.digest != config.committee.digest {
            addition_of(&config.committee, &new, args.member)
                .with_context(|| format!("--new-committee {}", path.display()))?;
            current_digest = Some(config.committee.digest);
            config.committee = new;
        } else if !new.members.iter().any(|m| m.index == args.member) {
            anyhow::bail!("--member {}: not in --new-committee", args.member);
        }
    }
    let adding = args.new_committee.is_some();
    let committee = &config.committee;
    let digest = committee.digest;
    let suites = committee.suites.clone();
    let members: BTreeSet<u16> = committee.members.iter().map(|m| m.index).collect();
    let helpers = helpers_of(
        &members,
        committee.threshold,
        args.member,
        args.helpers.as_deref(),
    )?;
    let identity = keystore.read_identity(&passphrase)?;
    let (params, net_config, runtime) = crate::dkg::ceremony_setup(&config, identity, timeout)?;
    let me = committee
        .members
        .iter()
        .find(|m| m.peer_id == net_config.identity.public().to_peer_id())
        .map(|m| m.index)
        .ok_or_else(|| anyhow::anyhow!("this node's identity is not a member of the committee"))?;
    let role = if me == args.member {
        if !args.force {
            for suite in &suites {
                let path = match suite {
                    Suite::Ed25519 => keystore.key_package_path::<Ed>(),
                    Suite::Secp256k1Evm => keystore.key_package_path::<Evm>(),
                };
                if path.exists() {
                    anyhow::bail!(
                        "{} exists: this member has not lost its shares. If the file is damaged or its passphrase is lost, pass --force to replace it with the repaired shares",
                        path.display()
                    );
                }
            }
        }
        RepairRole::Lost(Box::new(LostKeys {
            ed25519: own_public::<Ed>(&keystore, &digest),
            secp256k1_evm: own_public::<Evm>(&keystore, &digest),
            enrol: adding,
        }))
    } else if adding {
        // Every current member re-binds its shares to the new committee
        // first (a local, deterministic step: the same key packages, the
        // public key packages extended with the new member's interpolated
        // verifying share), then helpers help with them. A rerun finds them
        // re-bound already.
        let keys = match current_digest.map(|d| read_keys(&keystore, &d, &passphrase, &suites)) {
            Some(Ok(k)) => rebind_for_addition(&keystore, &k, &digest, args.member, &passphrase)?,
            _ => read_keys(&keystore, &digest, &passphrase, &suites)?,
        };
        if !helpers.contains(&me) {
            println!(
                "member {me}: shares re-bound to the new committee {} (member {} added); not a helper, nothing else to do",
                hex::encode(digest.0),
                args.member
            );
            return Ok(());
        }
        RepairRole::Helper(Box::new(keys))
    } else if helpers.contains(&me) {
        RepairRole::Helper(Box::new(read_keys(
            &keystore,
            &digest,
            &passphrase,
            &suites,
        )?))
    } else {
        anyhow::bail!(
            "member {me} is neither the member being repaired ({}) nor one of the helpers {helpers:?}; it has nothing to do",
            args.member
        );
    };
    let cfg = RepairConfig {
        digest,
        me,
        lost: args.member,
        helpers: helpers.clone(),
        suites: suites.clone(),
        resend_interval_ms: u64::try_from(params.resend_interval.as_millis()).unwrap_or(1000),
        timeout_ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
    };
    let mut machine = Repair::new(cfg, role).map_err(DkgError::from)?;
    let linger = crate::dkg::linger_of(&params);
    let outcome = runtime.block_on(async {
        let mut net = Net::new(net_config)?;
        eprintln!(
            "repair: member {me}, repairing member {} with helpers {helpers:?}, committee digest {}",
            args.member,
            hex::encode(digest.0)
        );
        let mut store = |keys: &RefreshKeys| write_keys(&keystore, &digest, keys, &passphrase);
        let r = drive_repair(
            &mut net,
            &mut machine,
            &mut store,
            linger,
            |line| eprintln!("repair: {line}"),
            &mut rand::rngs::OsRng,
        )
        .await;
        anyhow::Ok(r)
    })?;
    match outcome {
        Ok(RepairOutcome::Repaired(keys)) => {
            for (suite, p) in [
                (
                    "ed25519",
                    keys.ed25519
                        .as_ref()
                        .map(|(_, p)| crate::keystore::group_key_hex(p)),
                ),
                (
                    "secp256k1-evm",
                    keys.secp256k1_evm
                        .as_ref()
                        .map(|(_, p)| crate::keystore::group_key_hex(p)),
                ),
            ] {
                if let Some(p) = p {
                    println!("repaired this member's share of group key ({suite}): {p}");
                }
            }
            Ok(())
        }
        Ok(RepairOutcome::Helped) => {
            if adding {
                println!(
                    "helped member {} join; shares re-bound to the new committee {}",
                    args.member,
                    hex::encode(digest.0)
                );
                return Ok(());
            }
            println!("helped member {} repair its shares", args.member);
            Ok(())
        }
        Err(e) => {
            if let Some(member) = e.culprit() {
                eprintln!("repair: FAILED, member {member} is at fault; nothing was stored");
            } else {
                eprintln!("repair: FAILED; nothing was stored");
            }
            if adding && me != args.member {
                eprintln!(
                    "repair: this member's shares are re-bound to the new committee all the same (it needs nothing more); if member {} printed \"repaired this member's share\", the addition is done, else run it again on member {} and t helpers",
                    args.member, args.member
                );
            }
            Err(e.into())
        }
    }
}
