//! `sibyl config check`, and the key checks `sibyl run` makes before it
//! starts anything (one function, so both refuse a setup for the same cause).

use super::*;
use crate::keystore::{Keystore, KeystoreError, Passphrase};

/// How much of the key store `sibyl config check` opens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum KeyCheck {
    /// Everything `sibyl run` opens: passphrase, identity, membership, and
    /// every suite's key package and public key package.
    #[default]
    All,
    /// Before the DKG: passphrase, identity and membership, not the FROST keys.
    Identity,
    /// The two files and `[sources]` only (no key files are read).
    None,
}

/// `sibyl config check`: prints OK with a summary and any warnings, or every
/// problem (both files, then the keys).
pub fn check_command(path: &Path, keys: KeyCheck) -> anyhow::Result<()> {
    match Config::load(path) {
        Ok(c) => {
            let problems = match keys {
                KeyCheck::All => check_keys(&c),
                KeyCheck::Identity => check_identity(&c).err().unwrap_or_default(),
                KeyCheck::None => Vec::new(),
            };
            if !problems.is_empty() {
                for p in &problems {
                    println!("{p}");
                }
                anyhow::bail!("{} problem(s) found", problems.len())
            }
            let set: BTreeSet<_> = c
                .committee
                .suites
                .iter()
                .map(|s| format!("{s:?}"))
                .collect();
            println!(
                "OK: {} (committee {}: {} members, threshold {}, {} feeds, suites {:?}, round interval {}ms)\nconfig digest 0x{}",
                path.display(),
                c.committee_path.display(),
                c.committee.n(),
                c.committee.threshold,
                c.committee.feeds.len(),
                set,
                c.committee.round.interval_ms,
                hex::encode(c.committee.digest.0)
            );
            for w in &c.warnings {
                println!("warning: {w}");
            }
            Ok(())
        }
        Err(ConfigError::Invalid(ps)) => {
            for p in &ps {
                println!("{p}");
            }
            anyhow::bail!("{} problem(s) found", ps.len())
        }
        Err(e) => Err(e.into()),
    }
}

/// What `sibyl run` needs from the key files, checked in its order: the
/// passphrase is set, it opens the identity key, the identity is a member of
/// the committee, and every suite the committee lists has a key package and
/// a public key package made for this committee (config digest) that the
/// passphrase opens. Stops at the first problem that hides the next ones
/// (no passphrase: nothing can be opened). Each problem names its key and
/// line in node.toml.
pub fn check_keys(config: &Config) -> Vec<Problem> {
    let pass = match check_identity(config) {
        Ok(pass) => pass,
        Err(problems) => return problems,
    };
    let keystore = config.keystore();
    let mut problems = Vec::new();
    for suite in &config.committee.suites {
        let read = match suite {
            Suite::Ed25519 => read_suite::<frost_ed25519::Ed25519Sha512>(config, &keystore, &pass),
            Suite::Secp256k1Evm => {
                read_suite::<frost_secp256k1_evm::Secp256K1Keccak256>(config, &keystore, &pass)
            }
        };
        if let Err((key, e)) = read {
            problems.push(key_problem(config, key, e));
        }
    }
    if problems.is_empty()
        && let Err(why) = crate::refresh::read_pending(
            &keystore,
            &config.committee.digest,
            &pass,
            &config.committee.suites,
        )
    {
        problems.push(config.node_problem(
            "keys.key_package",
            why,
            "`sibyl run` refuses to start until the refresh is finished or abandoned",
        ));
    }
    problems
}

/// The first part of [`check_keys`], what can be checked before the DKG:
/// the passphrase opens the identity key, and the identity is a member.
pub fn check_identity(config: &Config) -> Result<Passphrase, Vec<Problem>> {
    let pass = config.read_key_passphrase().map_err(|e| {
        vec![config.node_problem(
            passphrase_key(config),
            format!("{e:#}"),
            "the key passphrase must be readable by the node's user when it starts",
        )]
    })?;
    let identity = config
        .keystore()
        .read_identity(&pass)
        .map_err(|e| vec![key_problem(config, "keys.identity", e)])?;
    let peer_id = identity.public().to_peer_id();
    if config.committee.member_by_peer(&peer_id).is_none() {
        return Err(vec![config.node_problem(
            "keys.identity",
            not_a_member(config, &peer_id),
            "check [keys] in node.toml and the committee file",
        )]);
    }
    Ok(pass)
}

/// The node.toml key the passphrase comes from.
fn passphrase_key(config: &Config) -> &'static str {
    if config.node.keys.passphrase_file.is_some() {
        "keys.passphrase_file"
    } else {
        "keys.passphrase_env"
    }
}

/// A key file that did not open: a wrong passphrase is the passphrase's
/// problem (named at its key), anything else the file's.
fn key_problem(config: &Config, file_key: &str, e: KeystoreError) -> Problem {
    let key = match e {
        KeystoreError::WrongPassphrase { .. } => passphrase_key(config),
        _ => file_key,
    };
    config.node_problem(key, e.to_string(), "")
}

/// The refusal of an identity that is not in the committee.
pub fn not_a_member(config: &Config, peer_id: &PeerId) -> String {
    format!(
        "this node's identity {peer_id} (from {}) is not a member of the committee in {}",
        config.identity_path().display(),
        config.committee_path.display()
    )
}

fn read_suite<C: frost_core::Ciphersuite>(
    config: &Config,
    keystore: &Keystore,
    pass: &Passphrase,
) -> Result<(), (&'static str, KeystoreError)> {
    let digest = &config.committee.digest;
    keystore
        .read_key_package::<C>(digest, pass)
        .map_err(|e| ("keys.key_package", e))?;
    keystore
        .read_public_key_package::<C>(digest)
        .map_err(|e| ("keys.public_key_package", e))?;
    Ok(())
}
