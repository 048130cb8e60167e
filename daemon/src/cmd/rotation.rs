//! `sibyl rotation`: the current committee's signature over SibylFeed's
//! rotation message, and the `rotateCommittee` calldata that hands the
//! contract over to a new committee.
//!
//! ```text
//!   t member configs (old committee) ─► their secp256k1-evm key packages
//!   new committee file + new group key ─► message = keccak256(abi.encode(
//!        keccak256("Sibyl committee rotation v1"), currentDigest, newDigest, newX, newY))
//!   FROST round 1 + round 2 with the t shares ─► aggregate ─► verify ─► calldata
//! ```
//!
//! The shares are used on one machine: the command suits a devnet, or a
//! committee whose `t` share holders meet for the hand-over. (A networked
//! ceremony in which every member signs with its own share where it runs is
//! not implemented.)

use alloy_primitives::{B256, U256};
use alloy_sol_types::{SolCall, SolValue};
use anyhow::{Context, Result, bail};
use frost_secp256k1_evm::Secp256K1Keccak256 as Evm;
use sha3::{Digest, Keccak256};
use sibyl_chain::abi::{EvmGroupKey, ISibylFeed, Signature};
use sibyl_node::config::{Committee, Config};
use sibyl_node::keystore::Keystore;
use std::collections::BTreeMap;
use std::path::PathBuf;

/// Arguments of `sibyl rotation`.
#[derive(Debug, clap::Args)]
pub struct RotationArgs {
    /// node.toml of a member of the current committee whose secp256k1-evm key
    /// share signs; repeat for at least the threshold of members.
    #[arg(long = "member-config", required = true)]
    pub member_configs: Vec<PathBuf>,
    /// The new committee file (its config digest goes into the message).
    #[arg(long)]
    pub new_committee: PathBuf,
    /// The new committee's secp256k1-evm group key, hex (33-byte compressed
    /// or 65-byte uncompressed SEC1), as `sibyl keygen`/`sibyl dkg` print it.
    #[arg(long)]
    pub new_group_key: String,
}

/// The message `rotateCommittee` checks (SibylFeed.rotationDigest).
pub fn rotation_digest(current: [u8; 32], new: [u8; 32], key: &EvmGroupKey) -> [u8; 32] {
    let domain: [u8; 32] = Keccak256::digest(b"Sibyl committee rotation v1").into();
    let encoded = (
        B256::from(domain),
        B256::from(current),
        B256::from(new),
        U256::from_be_bytes(key.x),
        U256::from_be_bytes(key.y),
    )
        .abi_encode();
    Keccak256::digest(&encoded).into()
}

/// A signed rotation, ready to submit.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SignedRotation {
    pub current_config_digest: String,
    pub new_config_digest: String,
    pub new_group_key_x: String,
    pub new_group_key_y: String,
    /// The 32-byte message the current group key signed.
    pub message: String,
    pub signers: Vec<u16>,
    pub signature: BTreeMap<&'static str, String>,
    pub function: &'static str,
    pub calldata: String,
}

fn hex0x(b: impl AsRef<[u8]>) -> String {
    format!("0x{}", hex::encode(b))
}

/// Signs the rotation from `current` to `new_digest`/`new_key` with the
/// given key packages (at least the threshold) and checks the result.
pub fn sign_rotation(
    public: &frost_core::keys::PublicKeyPackage<Evm>,
    shares: &[frost_core::keys::KeyPackage<Evm>],
    current: [u8; 32],
    new_digest: [u8; 32],
    new_key: &EvmGroupKey,
) -> Result<SignedRotation> {
    if current == new_digest {
        bail!(
            "the new committee has the same config digest as the current one; the contract refuses that (ConfigDigestUnchanged): change the committee file"
        );
    }
    let message = rotation_digest(current, new_digest, new_key);
    let mut rng = rand::rngs::OsRng;
    let mut nonces = BTreeMap::new();
    let mut commitments = BTreeMap::new();
    for kp in shares {
        let (n, c) = frost_core::round1::commit(kp.signing_share(), &mut rng);
        nonces.insert(*kp.identifier(), n);
        commitments.insert(*kp.identifier(), c);
    }
    let package = frost_core::SigningPackage::new(commitments, &message);
    let mut sig_shares = BTreeMap::new();
    for kp in shares {
        let n = nonces
            .get(kp.identifier())
            .context("a signer lost its nonce")?;
        let s = frost_core::round2::sign(&package, n, kp)
            .map_err(|e| anyhow::anyhow!("signing share failed: {e}"))?;
        sig_shares.insert(*kp.identifier(), s);
    }
    let sig = frost_core::aggregate(&package, &sig_shares, public)
        .map_err(|e| anyhow::anyhow!("cannot aggregate the rotation signature: {e}"))?;
    public
        .verifying_key()
        .verify(&message, &sig)
        .map_err(|e| anyhow::anyhow!("the rotation signature does not verify: {e}"))?;
    let bytes = sig
        .serialize()
        .map_err(|e| anyhow::anyhow!("cannot encode the signature: {e}"))?;
    if bytes.len() != 65 {
        bail!("a secp256k1-evm signature is 65 bytes, got {}", bytes.len());
    }
    let (rx, ry) = sibyl_chain::abi::affine(&bytes[..33]).context("signature R is not a point")?;
    let current_key = sibyl_chain::evm_group_key(public.verifying_key())?;
    let signature = Signature {
        groupKeyX: U256::from_be_bytes(current_key.x),
        rx: U256::from_be_bytes(rx),
        ry: U256::from_be_bytes(ry),
        z: U256::from_be_slice(&bytes[33..]),
    };
    let call = ISibylFeed::rotateCommitteeCall {
        newConfigDigest: B256::from(new_digest),
        newGroupKeyX: U256::from_be_bytes(new_key.x),
        newGroupKeyY: U256::from_be_bytes(new_key.y),
        signature: signature.clone(),
    };
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
    Ok(SignedRotation {
        current_config_digest: hex0x(current),
        new_config_digest: hex0x(new_digest),
        new_group_key_x: hex0x(new_key.x),
        new_group_key_y: hex0x(new_key.y),
        message: hex0x(message),
        signers,
        signature: [
            ("group_key_x", hex0x(current_key.x)),
            ("rx", hex0x(rx)),
            ("ry", hex0x(ry)),
            ("z", hex0x(&bytes[33..])),
            ("raw", hex0x(&bytes)),
        ]
        .into_iter()
        .collect(),
        function: "rotateCommittee(bytes32,uint256,uint256,(uint256,uint256,uint256,uint256))",
        calldata: hex0x(call.abi_encode()),
    })
}

/// `sibyl rotation` entry point: prints the signed rotation as JSON.
pub fn run(args: RotationArgs) -> Result<()> {
    let new_committee = Committee::load(&args.new_committee)?;
    let key_bytes = hex::decode(args.new_group_key.trim().trim_start_matches("0x"))
        .context("--new-group-key must be hex")?;
    let new_key = EvmGroupKey::from_compressed(&key_bytes)
        .context("--new-group-key is not a secp256k1 point (33-byte compressed or 65-byte SEC1)")?;
    let mut current: Option<(Committee, frost_core::keys::PublicKeyPackage<Evm>)> = None;
    let mut shares: Vec<frost_core::keys::KeyPackage<Evm>> = Vec::new();
    for path in &args.member_configs {
        let config = Config::load(path)?;
        let digest = config.committee.digest;
        let store = Keystore::from_config(&config);
        let public = store
            .read_public_key_package::<Evm>(&digest)
            .with_context(|| format!("{}: no secp256k1-evm public key package", path.display()))?;
        let kp = store
            .read_key_package::<Evm>(&digest, &sibyl_node::keystore::passphrase(&config)?)
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
                        args.member_configs[0].display()
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
        bail!("give --member-config for at least the threshold of current members");
    };
    if shares.len() < usize::from(committee.threshold) {
        bail!(
            "{} member key shares given, the current committee needs {} (its threshold)",
            shares.len(),
            committee.threshold
        );
    }
    let signed = sign_rotation(
        &public,
        &shares,
        committee.digest.0,
        new_committee.digest.0,
        &new_key,
    )?;
    println!("{}", serde_json::to_string_pretty(&signed)?);
    eprintln!(
        "submit with: cast send <SibylFeed address> --data {} (anyone may send it)",
        signed.calldata
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use sibyl_aggregator::testkit::dealer_keys;

    #[test]
    fn a_threshold_of_shares_signs_a_rotation_the_group_key_verifies() {
        let mut rng = rand::rngs::OsRng;
        let old = dealer_keys::<Evm, _>(4, 3, &mut rng).expect("old keys");
        let new = dealer_keys::<Evm, _>(4, 3, &mut rng).expect("new keys");
        let new_key =
            sibyl_chain::evm_group_key(new.public_key_package.verifying_key()).expect("new key");
        let shares: Vec<_> = old.key_packages.values().take(3).cloned().collect();
        let signed = sign_rotation(&old.public_key_package, &shares, [1; 32], [2; 32], &new_key)
            .expect("signed");
        assert_eq!(signed.signers, vec![1, 2, 3]);
        assert_eq!(
            signed.message,
            hex0x(rotation_digest([1; 32], [2; 32], &new_key))
        );
        let call = ISibylFeed::rotateCommitteeCall::abi_decode(
            &hex::decode(&signed.calldata[2..]).expect("hex"),
        )
        .expect("calldata decodes");
        assert_eq!(call.newConfigDigest, B256::from([2; 32]));
        assert_eq!(call.newGroupKeyX, U256::from_be_bytes(new_key.x));
        // Same digest: refused before signing.
        assert!(
            sign_rotation(&old.public_key_package, &shares, [1; 32], [1; 32], &new_key).is_err()
        );
    }

    #[test]
    fn fewer_shares_than_the_threshold_do_not_sign() {
        let mut rng = rand::rngs::OsRng;
        let old = dealer_keys::<Evm, _>(4, 3, &mut rng).expect("old keys");
        let key = sibyl_chain::evm_group_key(old.public_key_package.verifying_key()).expect("k");
        let shares: Vec<_> = old.key_packages.values().take(2).cloned().collect();
        assert!(sign_rotation(&old.public_key_package, &shares, [1; 32], [2; 32], &key).is_err());
    }
}
