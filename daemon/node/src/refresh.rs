//! `sibyl refresh`: proactive refresh of this member's key shares, keeping
//! the group key (nothing changes on chain). Every member runs it at about
//! the same time, with the node stopped, over the committee's network like
//! `sibyl dkg` (the same hardened ceremony, in refresh mode:
//! [`sibyl_aggregator::dkg::Dkg::refresh`]).
//!
//! ```text
//!   ceremony ──all confirmed the new public key package──► write keys/*.pending (encrypted)
//!        ──► "stored" to every member, until every member said "stored" ──► switch:
//!            the new key package replaces the old one, pending files removed
//! ```
//!
//! Old shares are replaced only once every member confirmed it holds its new
//! share on disk: a refresh that cannot finish leaves every member with its
//! old, working share (a failed ceremony writes nothing; a member that
//! timed out waiting for the others' "stored" keeps its pending files:
//! `sibyl refresh --finish` switches to them once the operators agree that
//! every member switched, `--abandon` drops them).

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use sibyl_aggregator::dkg::{DkgResult, Input, Output, RefreshKeys};
use sibyl_aggregator::{ConfigDigest, Suite};

use crate::dkg::{DkgError, DkgParams, drive, linger_of, refresh_machine};
use crate::keystore::{Keystore, Passphrase};
pub use crate::keystore::{pending_files, pending_keystore, pending_refresh_refusal};
use crate::net::{Net, NetEvent};

type Ed = frost_ed25519::Ed25519Sha512;
type Evm = frost_secp256k1_evm::Secp256K1Keccak256;

/// `"SRFS" | SHA3-256 of every suite's new public key package`: "I stored
/// my new shares of this refresh".
pub(crate) const STORED_MAGIC: &[u8; 4] = b"SRFS";

/// The keys a member holds for `suites`.
pub fn read_keys(
    keystore: &Keystore,
    digest: &ConfigDigest,
    passphrase: &Passphrase,
    suites: &[Suite],
) -> Result<RefreshKeys, DkgError> {
    let mut keys = RefreshKeys::default();
    for suite in suites {
        match suite {
            Suite::Ed25519 => {
                keys.ed25519 = Some((
                    keystore.read_key_package::<Ed>(digest, passphrase)?,
                    keystore.read_public_key_package::<Ed>(digest)?,
                ));
            }
            Suite::Secp256k1Evm => {
                keys.secp256k1_evm = Some((
                    keystore.read_key_package::<Evm>(digest, passphrase)?,
                    keystore.read_public_key_package::<Evm>(digest)?,
                ));
            }
        }
    }
    Ok(keys)
}

/// The new keys a refresh left pending (`None`: no pending files), checked:
/// every suite's pair present, readable with the passphrase, and of the
/// same group key as the live keys. `Err`: the refusal `sibyl run` and
/// `sibyl config check` give.
pub fn read_pending(
    keystore: &Keystore,
    digest: &ConfigDigest,
    passphrase: &Passphrase,
    suites: &[Suite],
) -> Result<Option<RefreshKeys>, String> {
    let files = pending_files(keystore, suites);
    if files.is_empty() {
        return Ok(None);
    }
    let refuse = |why: String| crate::keystore::pending_refresh_refusal(&files, &why);
    let pending = read_keys(&pending_keystore(keystore), digest, passphrase, suites)
        .map_err(|e| refuse(e.to_string()))?;
    let live =
        read_keys(keystore, digest, passphrase, suites).map_err(|e| refuse(e.to_string()))?;
    let same = |a: &RefreshKeys, b: &RefreshKeys| {
        a.ed25519.as_ref().map(|(_, p)| *p.verifying_key())
            == b.ed25519.as_ref().map(|(_, p)| *p.verifying_key())
            && a.secp256k1_evm.as_ref().map(|(_, p)| *p.verifying_key())
                == b.secp256k1_evm.as_ref().map(|(_, p)| *p.verifying_key())
    };
    if !same(&pending, &live) {
        return Err(refuse("they belong to another group key".into()));
    }
    Ok(Some(pending))
}

/// SHA3-256 over every suite's public key package (the refresh's outcome).
pub(crate) fn outcome_hash(keys: &RefreshKeys) -> [u8; 32] {
    use sha3::Digest;
    let mut h = sha3::Sha3_256::new();
    if let Some((_, p)) = &keys.ed25519 {
        h.update(p.serialize().unwrap_or_default());
    }
    if let Some((_, p)) = &keys.secp256k1_evm {
        h.update(p.serialize().unwrap_or_default());
    }
    h.finalize().into()
}

pub(crate) fn keys_of(result: DkgResult) -> RefreshKeys {
    RefreshKeys {
        ed25519: result
            .ed25519
            .map(|o| (o.key_package, o.public_key_package)),
        secp256k1_evm: result
            .secp256k1_evm
            .map(|o| (o.key_package, o.public_key_package)),
    }
}

pub(crate) fn write_keys(
    keystore: &Keystore,
    digest: &ConfigDigest,
    keys: &RefreshKeys,
    passphrase: &Passphrase,
) -> Result<(), DkgError> {
    if let Some((k, p)) = &keys.ed25519 {
        keystore.write_key_package(digest, k, passphrase)?;
        keystore.write_public_key_package(digest, p)?;
    }
    if let Some((k, p)) = &keys.secp256k1_evm {
        keystore.write_key_package(digest, k, passphrase)?;
        keystore.write_public_key_package(digest, p)?;
    }
    Ok(())
}

/// Switch to the pending keys: they replace the live ones (each file
/// atomically), then the pending files go.
pub fn switch_to_pending(
    live: &Keystore,
    digest: &ConfigDigest,
    passphrase: &Passphrase,
    suites: &[Suite],
) -> Result<RefreshKeys, DkgError> {
    let keys = read_keys(&pending_keystore(live), digest, passphrase, suites)?;
    write_keys(live, digest, &keys, passphrase)?;
    for f in pending_files(live, suites) {
        let _ = std::fs::remove_file(f);
    }
    Ok(keys)
}

/// How a refresh ended.
#[derive(Debug)]
pub enum RefreshOutcome {
    /// Every member stored its new shares; this member switched to them.
    Switched(Box<RefreshKeys>),
    /// The new shares are stored as pending but not every member said so in
    /// time: the old keys stay live. `missing`: who did not confirm.
    Pending { missing: Vec<u16> },
}

/// Run the refresh ceremony over `net`, store the new keys as pending,
/// exchange "stored" with every member, and switch once all did.
///
/// `from`: the digest the live keys are bound to. The same as
/// `params.digest` for a plain refresh; the current committee's when
/// `params` is a smaller committee (removing members): the new shares are
/// then bound to `params.digest`, and only its members get one.
pub async fn run_refresh(
    net: &mut Net,
    params: DkgParams,
    from: &ConfigDigest,
    suites: &[Suite],
    keystore: &Keystore,
    passphrase: &Passphrase,
    mut progress: impl FnMut(&str) + Send,
) -> Result<RefreshOutcome, DkgError> {
    let digest = params.digest;
    let old = read_keys(keystore, from, passphrase, suites)?;
    let mut machine = refresh_machine(net, &params, suites, old)?;
    let mut rng = rand::rngs::OsRng;
    // Lingering after the end (as `sibyl dkg` does) delivers what a failed
    // ceremony sent last, e.g. the echo or complaint that lets the others
    // name the culprit too; "stored" messages that arrive meanwhile are
    // sent again by their senders every interval.
    let linger = linger_of(&params);
    let result = drive(net, &mut machine, linger, &mut progress, &mut rng).await?;
    let new = keys_of(result);
    write_keys(&pending_keystore(keystore), &digest, &new, passphrase)?;
    let hash = outcome_hash(&new);
    progress("new shares stored as pending; waiting until every member stored its own");

    // The "stored" exchange; the finished machine keeps answering repeats
    // of the ceremony for members still finishing it.
    let mut stored = STORED_MAGIC.to_vec();
    stored.extend_from_slice(&hash);
    let others: BTreeSet<u16> = params
        .members
        .keys()
        .copied()
        .filter(|i| *i != net.me())
        .collect();
    let mut acked = BTreeSet::new();
    let mut answered: BTreeMap<u16, tokio::time::Instant> = BTreeMap::new();
    let deadline = tokio::time::Instant::now() + params.timeout;
    let mut resend_at = tokio::time::Instant::now();
    let epoch = tokio::time::Instant::now();
    let now_ms = || u64::try_from(epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
    while acked != others {
        let now = tokio::time::Instant::now();
        if now >= deadline {
            let missing: Vec<u16> = others.difference(&acked).copied().collect();
            return Ok(RefreshOutcome::Pending { missing });
        }
        if now >= resend_at {
            for &to in others.difference(&acked) {
                let _ = net.send(to, stored.clone());
            }
            resend_at = now + params.resend_interval;
        }
        let wake = resend_at.min(deadline);
        if let Ok(NetEvent::Message { from, bytes }) =
            tokio::time::timeout_at(wake, net.next_event()).await
        {
            if bytes.starts_with(STORED_MAGIC) {
                if bytes[STORED_MAGIC.len()..] == hash[..] && acked.insert(from) {
                    progress(&format!(
                        "member {from} stored its new shares ({}/{})",
                        acked.len() + 1,
                        others.len() + 1
                    ));
                }
                // Answer (at most once per interval): it may lack ours.
                let due = answered
                    .get(&from)
                    .is_none_or(|t| t.elapsed() >= params.resend_interval);
                if due {
                    answered.insert(from, tokio::time::Instant::now());
                    let _ = net.send(from, stored.clone());
                }
            } else {
                for o in machine.handle(now_ms(), Input::Message { from, bytes }, &mut rng) {
                    if let Output::Send { to, bytes } = o {
                        let _ = net.send(to, bytes);
                    }
                }
            }
        }
    }
    let keys = switch_to_pending(keystore, &digest, passphrase, suites)?;
    progress("every member stored its new shares: switched, old shares erased");
    // Stay a moment to answer members whose last "stored" from us was lost.
    let linger_until = tokio::time::Instant::now() + linger_of(&params);
    while let Ok(event) = tokio::time::timeout_at(linger_until, net.next_event()).await {
        if let NetEvent::Message { from, bytes } = event
            && bytes.starts_with(STORED_MAGIC)
        {
            let _ = net.send(from, stored.clone());
        }
    }
    Ok(RefreshOutcome::Switched(Box::new(keys)))
}

/// Arguments of `sibyl refresh`.
#[derive(Debug, clap::Args)]
pub struct RefreshArgs {
    /// This member's node.toml.
    #[arg(long)]
    pub config: PathBuf,
    /// Give up if the refresh has not finished after this long.
    #[arg(long, default_value = "10m")]
    pub timeout: String,
    /// Switch to the pending new shares a refresh left (only once every
    /// other member reports it switched: mixing old and new shares signs
    /// nothing).
    #[arg(long, conflicts_with = "abandon")]
    pub finish: bool,
    /// Delete the pending new shares a refresh left; the old ones stay.
    #[arg(long)]
    pub abandon: bool,
    /// Refresh inside the running member instead (the others join; no
    /// feed waits): asks this member's API to start and follows it to the
    /// end. Run it on one member only.
    #[arg(long, conflicts_with_all = ["finish", "abandon"])]
    pub live: bool,
    /// Remove members: refresh among the members of this committee file
    /// only (the current one without the members removed: same indices,
    /// identities, threshold and suites). The new shares are bound to it
    /// and the removed members' shares no longer combine with anyone's;
    /// the group key stays. Then point node.toml's `committee` at it and
    /// hand the contract over to its digest (docs/OPERATOR.md).
    #[arg(long, conflicts_with_all = ["abandon", "live"])]
    pub new_committee: Option<PathBuf>,
}

/// Checks that `new` is `current` without some members
/// ([`crate::config::Committee::membership_change`]) and keeps at least
/// the threshold. Returns the members removed.
pub fn removal_of(
    current: &crate::config::Committee,
    new: &crate::config::Committee,
) -> anyhow::Result<Vec<u16>> {
    use anyhow::bail;
    let (removed, added) = current.membership_change(new).map_err(anyhow::Error::msg)?;
    if !added.is_empty() {
        bail!(
            "member(s) {added:?} of the new committee are not in the current one: a removal only drops members (add one with `sibyl repair --member N --new-committee`)"
        );
    }
    if removed.is_empty() {
        bail!(
            "the new committee has every current member: nothing to remove (a plain refresh needs no --new-committee)"
        );
    }
    if new.members.len() < usize::from(new.threshold) {
        bail!(
            "the new committee has {} members, fewer than its threshold {}",
            new.members.len(),
            new.threshold
        );
    }
    Ok(removed)
}

/// `sibyl refresh --config <node.toml>`.
pub fn command(args: RefreshArgs) -> anyhow::Result<()> {
    use anyhow::Context;
    let mut config = crate::config::Config::load(&args.config)?;
    let timeout = crate::config::parse_duration(&args.timeout)
        .map_err(|e| anyhow::anyhow!("--timeout: {e}"))?;
    let keystore = config.keystore();
    let passphrase = config.key_passphrase()?;
    // The digest the live keys are bound to; with --new-committee the
    // ceremony runs among that committee's members and binds to its digest.
    let from = config.committee.digest;
    let mut removed = Vec::new();
    if let Some(path) = &args.new_committee {
        let new = crate::config::Committee::load(path)?;
        removed = removal_of(&config.committee, &new)
            .with_context(|| format!("--new-committee {}", path.display()))?;
        config.committee = new;
    }
    let committee = &config.committee;
    let digest = committee.digest;
    let suites = committee.suites.clone();
    let pending = pending_files(&keystore, &suites);
    if args.abandon {
        for f in &pending {
            std::fs::remove_file(f).with_context(|| format!("cannot remove {}", f.display()))?;
        }
        eprintln!(
            "refresh: removed {} pending file(s); the old shares stay",
            pending.len()
        );
        return Ok(());
    }
    if args.finish {
        if pending.is_empty() {
            anyhow::bail!("no pending refresh to finish (no *.pending.* key files)");
        }
        let keys = switch_to_pending(&keystore, &digest, &passphrase, &suites)?;
        print_keys(&keys);
        eprintln!("refresh: switched to the pending shares; old shares erased");
        return Ok(());
    }
    if !pending.is_empty() {
        anyhow::bail!(
            "a refresh left pending new shares ({}); if every other member switched (`sibyl refresh` printed \"switched\" there), run `sibyl refresh --finish`, else `sibyl refresh --abandon`, then retry",
            pending
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    let identity = keystore.read_identity(&passphrase)?;
    let (params, net_config, runtime) = crate::dkg::ceremony_setup(&config, identity, timeout)?;
    let outcome = runtime.block_on(async {
        let mut net = Net::new(net_config)?;
        eprintln!(
            "refresh: member {} of {}, threshold {}, committee digest {}",
            net.me(),
            params.members.len(),
            params.threshold,
            hex::encode(digest.0)
        );
        if !removed.is_empty() {
            eprintln!(
                "refresh: removing member(s) {removed:?}: new shares for the {} others only, bound to the new committee (was {})",
                params.members.len(),
                hex::encode(from.0)
            );
        }
        let r = run_refresh(
            &mut net,
            params,
            &from,
            &suites,
            &keystore,
            &passphrase,
            |line| eprintln!("refresh: {line}"),
        )
        .await;
        anyhow::Ok(r)
    })?;
    match outcome {
        Ok(RefreshOutcome::Switched(keys)) => {
            print_keys(&keys);
            if let Some(path) = &args.new_committee {
                eprintln!(
                    "refresh: member(s) {removed:?} removed. Next: set `committee = \"{}\"` in node.toml, start the node, and hand the contract over to config digest {} with the same group key (docs/OPERATOR.md, \"Removing a member\")",
                    path.display(),
                    hex::encode(digest.0)
                );
            }
            Ok(())
        }
        Ok(RefreshOutcome::Pending { missing }) => anyhow::bail!(
            "refresh: member(s) {missing:?} did not confirm they stored their new shares; this member keeps its old shares live and the new ones pending. Ask those operators: if they switched, run `sibyl refresh --finish`; if not, `sibyl refresh --abandon` on every member that has pending files, then refresh again"
        ),
        Err(e) => {
            if let Some(member) = e.culprit() {
                eprintln!("refresh: FAILED, member {member} is at fault; the old shares stay");
            } else {
                eprintln!("refresh: FAILED; the old shares stay");
            }
            Err(e.into())
        }
    }
}

fn print_keys(keys: &RefreshKeys) {
    if let Some((_, p)) = &keys.ed25519 {
        println!(
            "group public key (ed25519), unchanged: {}",
            crate::keystore::group_key_hex(p)
        );
    }
    if let Some((_, p)) = &keys.secp256k1_evm {
        println!(
            "group public key (secp256k1-evm), unchanged: {}",
            crate::keystore::group_key_hex(p)
        );
    }
}
