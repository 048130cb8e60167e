//! `sibyl keygen --dealer`: trusted-dealer keys for tests and the devnet.
//!
//! One process makes every member's identity key and FROST key package, so it
//! knows every secret: never use this for a real committee (use `sibyl dkg`).
//!
//! ```text
//!  OUT/keygen.json            members (index, peer id, key dir), group keys
//!  OUT/node-<i>/passphrase    generated passphrase (unless one was given)
//!  OUT/node-<i>/identity.key, identity.pub.json, frost.<suite>.key, frost.<suite>.pub.json
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use frost_core::Ciphersuite;
use frost_core::keys::{IdentifierList, KeyPackage, generate_with_dealer};
use libp2p::PeerId;
use libp2p::identity::Keypair;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sibyl_aggregator::{ConfigDigest, Suite};

use crate::keystore::{self, KdfParams, Keystore, Passphrase};

/// Which ciphersuites to make keys for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum SuiteChoice {
    Ed25519,
    #[value(name = "secp256k1-evm")]
    Secp256k1Evm,
    Both,
}

impl SuiteChoice {
    pub fn suites(self) -> Vec<Suite> {
        match self {
            SuiteChoice::Ed25519 => vec![Suite::Ed25519],
            SuiteChoice::Secp256k1Evm => vec![Suite::Secp256k1Evm],
            SuiteChoice::Both => vec![Suite::Ed25519, Suite::Secp256k1Evm],
        }
    }
}

/// Arguments of `sibyl keygen`.
#[derive(Debug, clap::Args)]
pub struct KeygenArgs {
    /// Trusted-dealer mode (tests and devnet only; the only mode for now).
    #[arg(long)]
    pub dealer: bool,
    /// Committee size n.
    #[arg(long)]
    pub nodes: u16,
    /// Signing threshold t (2..=n).
    #[arg(long)]
    pub threshold: u16,
    /// Output directory; one key directory per member is made inside it.
    #[arg(long)]
    pub out: PathBuf,
    /// Ciphersuite(s) to make FROST keys for.
    #[arg(long, value_enum, default_value = "ed25519")]
    pub suite: SuiteChoice,
    /// Committee config digest (64 hex chars) the keys are bound to. Default:
    /// all zeros (a devnet that does not check it yet).
    #[arg(long, conflicts_with = "committee")]
    pub config_digest: Option<String>,
    /// Bind the keys to this committee file's digest (its members must be the
    /// identities of a previous run in --out; they are kept).
    #[arg(long)]
    pub committee: Option<PathBuf>,
    /// Environment variable holding one passphrase for every member. Default:
    /// a random passphrase per member, written to `node-<i>/passphrase`.
    #[arg(long, conflicts_with = "passphrase_file")]
    pub passphrase_env: Option<String>,
    /// File holding one passphrase for every member.
    #[arg(long)]
    pub passphrase_file: Option<PathBuf>,
}

/// Where each member's passphrase comes from.
#[derive(Debug, Clone)]
pub enum PassphraseSource {
    /// A fresh random passphrase per member, written next to its keys (0600).
    GeneratePerMember,
    /// The same passphrase for everyone.
    Shared(Passphrase),
}

/// Parameters of a dealer run.
#[derive(Debug, Clone)]
pub struct DealerParams {
    pub nodes: u16,
    pub threshold: u16,
    pub suites: Vec<Suite>,
    pub config_digest: ConfigDigest,
    pub kdf: KdfParams,
}

/// One member's result, also written to `OUT/keygen.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DealerMember {
    pub index: u16,
    pub peer_id: String,
    pub key_dir: PathBuf,
    /// Set when the passphrase was generated.
    pub passphrase_file: Option<PathBuf>,
}

/// The summary written to `OUT/keygen.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DealerOutput {
    pub nodes: u16,
    pub threshold: u16,
    #[serde(with = "hex::serde")]
    pub config_digest: [u8; 32],
    pub members: Vec<DealerMember>,
    /// Group verifying key per suite, hex in the suite's serialization.
    pub group_keys: BTreeMap<Suite, String>,
}

/// The key directory of member `index` under `out`.
pub fn member_dir(out: &Path, index: u16) -> PathBuf {
    out.join(format!("node-{index}"))
}

/// Make identity keys and dealer FROST keys for `nodes` members under `out`.
/// Identity keys already there are kept (so a committee file written after a
/// first run stays valid); FROST keys are always dealt anew.
pub fn dealer_keygen(
    out: &Path,
    params: &DealerParams,
    passphrases: &PassphraseSource,
) -> anyhow::Result<DealerOutput> {
    if params.nodes < 2 {
        bail!("--nodes must be at least 2 (got {})", params.nodes);
    }
    if params.threshold < 2 || params.threshold > params.nodes {
        bail!(
            "--threshold must be between 2 and --nodes ({}) (got {})",
            params.nodes,
            params.threshold
        );
    }
    if params.suites.is_empty() {
        bail!("no ciphersuite chosen");
    }
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;

    let mut members = Vec::new();
    let mut stores = Vec::new();
    for index in 1..=params.nodes {
        let dir = member_dir(out, index);
        let store = Keystore::new(&dir).with_kdf(params.kdf);
        let (pass, pass_file) = match passphrases {
            PassphraseSource::Shared(p) => (p.clone(), None),
            PassphraseSource::GeneratePerMember => {
                let file = dir.join("passphrase");
                if file.exists() {
                    // A second run (e.g. with the committee's digest) keeps
                    // the member's passphrase and identity.
                    (Passphrase::from_file(&file)?, Some(file))
                } else {
                    std::fs::create_dir_all(&dir)
                        .with_context(|| format!("cannot create {}", dir.display()))?;
                    let mut raw = [0u8; 24];
                    rand::rngs::OsRng.fill_bytes(&mut raw);
                    let text = zeroize::Zeroizing::new(hex::encode(raw));
                    keystore::write_atomic(&file, text.as_bytes(), 0o600)?;
                    (Passphrase::new(text.as_str())?, Some(file))
                }
            }
        };
        // Keep an existing identity: the committee file names its PeerId.
        let identity = if store.identity_path().exists() {
            store.read_identity(&pass)?
        } else {
            let identity = Keypair::generate_ed25519();
            store.write_identity(&identity, &pass)?;
            identity
        };
        members.push(DealerMember {
            index,
            peer_id: PeerId::from(identity.public()).to_string(),
            key_dir: dir,
            passphrase_file: pass_file,
        });
        stores.push((store, pass));
    }

    let mut group_keys = BTreeMap::new();
    for suite in &params.suites {
        let key = match suite {
            Suite::Ed25519 => deal::<frost_ed25519::Ed25519Sha512>(params, &stores)?,
            Suite::Secp256k1Evm => {
                deal::<frost_secp256k1_evm::Secp256K1Keccak256>(params, &stores)?
            }
        };
        group_keys.insert(*suite, key);
    }

    let output = DealerOutput {
        nodes: params.nodes,
        threshold: params.threshold,
        config_digest: params.config_digest.0,
        members,
        group_keys,
    };
    let json = serde_json::to_vec_pretty(&output)?;
    keystore::write_atomic(&out.join("keygen.json"), &json, 0o644)?;
    Ok(output)
}

fn deal<C: Ciphersuite>(
    params: &DealerParams,
    stores: &[(Keystore, Passphrase)],
) -> anyhow::Result<String> {
    let (shares, pkp) = generate_with_dealer::<C, _>(
        params.nodes,
        params.threshold,
        IdentifierList::Default,
        &mut rand::rngs::OsRng,
    )
    .map_err(|e| anyhow::anyhow!("dealer key generation failed: {e}"))?;
    for (i, (store, pass)) in stores.iter().enumerate() {
        let index = u16::try_from(i + 1)?;
        let id = frost_core::Identifier::<C>::try_from(index)
            .map_err(|e| anyhow::anyhow!("identifier {index}: {e}"))?;
        let share = shares
            .get(&id)
            .with_context(|| format!("dealer produced no share for member {index}"))?;
        let kp = KeyPackage::try_from(share.clone())
            .map_err(|e| anyhow::anyhow!("share of member {index} does not verify: {e}"))?;
        store.write_key_package(&params.config_digest, &kp, pass)?;
        store.write_public_key_package(&params.config_digest, &pkp)?;
    }
    Ok(keystore::group_key_hex(&pkp))
}

/// Parse a 32-byte digest from 64 hex characters.
pub fn parse_digest(s: &str) -> anyhow::Result<ConfigDigest> {
    let bytes = hex::decode(s.trim_start_matches("0x"))
        .with_context(|| format!("config digest {s:?} is not hex"))?;
    let arr: [u8; 32] = bytes
        .try_into()
        .map_err(|_| anyhow::anyhow!("config digest must be 32 bytes (64 hex characters)"))?;
    Ok(ConfigDigest(arr))
}

/// `sibyl keygen` entry point.
pub fn run(args: KeygenArgs) -> anyhow::Result<()> {
    if !args.dealer {
        bail!(
            "only `--dealer` key generation exists (tests and devnet); a real committee runs `sibyl dkg --config <node.toml>`"
        );
    }
    let config_digest = match (&args.config_digest, &args.committee) {
        (Some(s), _) => parse_digest(s)?,
        (None, Some(path)) => {
            let committee = crate::config::Committee::load(path)?;
            if committee.n() != args.nodes || committee.threshold != args.threshold {
                bail!(
                    "{} has {} members and threshold {}, but --nodes {} --threshold {} was given",
                    path.display(),
                    committee.n(),
                    committee.threshold,
                    args.nodes,
                    args.threshold
                );
            }
            committee.digest
        }
        (None, None) => ConfigDigest([0; 32]),
    };
    let passphrases = if let Some(var) = &args.passphrase_env {
        PassphraseSource::Shared(Passphrase::from_env(var)?)
    } else if let Some(file) = &args.passphrase_file {
        PassphraseSource::Shared(Passphrase::from_file(file)?)
    } else {
        PassphraseSource::GeneratePerMember
    };
    let params = DealerParams {
        nodes: args.nodes,
        threshold: args.threshold,
        suites: args.suite.suites(),
        config_digest,
        kdf: KdfParams::default(),
    };
    eprintln!(
        "WARNING: trusted-dealer keys are for tests and devnets only; use `sibyl dkg` for a real committee"
    );
    if let Some(path) = &args.committee {
        // The committee names the identities of a previous run: check them
        // before dealing keys bound to its digest.
        let committee = crate::config::Committee::load(path)?;
        for index in 1..=args.nodes {
            let dir = member_dir(&args.out, index);
            let have = Keystore::new(&dir).read_peer_id().ok();
            let listed = committee.member(index).map(|c| c.peer_id);
            if have.is_none() || have != listed {
                bail!(
                    "member {index} in {} is not the identity in {}; run keygen without --committee first and write the PeerIds it prints into the committee file",
                    path.display(),
                    dir.display()
                );
            }
        }
    }
    let out = dealer_keygen(&args.out, &params, &passphrases)?;
    println!(
        "made keys for {} members, threshold {}, config digest {}",
        out.nodes,
        out.threshold,
        hex::encode(out.config_digest)
    );
    for (suite, key) in &out.group_keys {
        println!("group public key ({}): {key}", suite_name(*suite));
    }
    for m in &out.members {
        println!(
            "member {}: peer id {}  keys {}",
            m.index,
            m.peer_id,
            m.key_dir.display()
        );
    }
    println!("summary: {}", args.out.join("keygen.json").display());
    Ok(())
}

/// The suite's name as written on the command line and in files.
pub fn suite_name(suite: Suite) -> &'static str {
    match suite {
        Suite::Ed25519 => "ed25519",
        Suite::Secp256k1Evm => "secp256k1-evm",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keystore::tests::tempdir;

    #[test]
    fn dealer_keys_sign_and_verify() {
        let dir = tempdir();
        let params = DealerParams {
            nodes: 3,
            threshold: 2,
            suites: vec![Suite::Ed25519, Suite::Secp256k1Evm],
            config_digest: ConfigDigest([9; 32]),
            kdf: KdfParams::insecure_fast(),
        };
        let out = dealer_keygen(dir.path(), &params, &PassphraseSource::GeneratePerMember)
            .expect("keygen");
        assert_eq!(out.members.len(), 3);
        assert_eq!(out.group_keys.len(), 2);
        let summary: DealerOutput = serde_json::from_slice(
            &std::fs::read(dir.path().join("keygen.json")).expect("summary"),
        )
        .expect("json");
        assert_eq!(summary, out);

        // Two members' stored keys produce a signature the group key verifies.
        type C = frost_ed25519::Ed25519Sha512;
        let mut kps = BTreeMap::new();
        for m in &out.members[..2] {
            let pf = m.passphrase_file.as_ref().expect("generated");
            let pass = Passphrase::from_file(pf).expect("pass");
            let store = Keystore::new(&m.key_dir);
            let id = store.read_identity(&pass).expect("identity");
            assert_eq!(id.public().to_peer_id().to_string(), m.peer_id);
            let kp = store
                .read_key_package::<C>(&params.config_digest, &pass)
                .expect("kp");
            kps.insert(*kp.identifier(), kp);
        }
        let pkp = Keystore::new(&out.members[2].key_dir)
            .read_public_key_package::<C>(&params.config_digest)
            .expect("pkp");
        assert_eq!(
            keystore::group_key_hex(&pkp),
            out.group_keys[&Suite::Ed25519]
        );
        let mut rng = rand::rngs::OsRng;
        let msg = b"report";
        let mut nonces = BTreeMap::new();
        let mut commitments = BTreeMap::new();
        for (id, kp) in &kps {
            let (n, c) = frost_core::round1::commit(kp.signing_share(), &mut rng);
            nonces.insert(*id, n);
            commitments.insert(*id, c);
        }
        let sp = frost_core::SigningPackage::new(commitments, msg);
        let mut shares = BTreeMap::new();
        for (id, kp) in &kps {
            let s = frost_core::round2::sign(&sp, &nonces[id], kp).expect("sign");
            shares.insert(*id, s);
        }
        let sig = frost_core::aggregate(&sp, &shares, &pkp).expect("aggregate");
        pkp.verifying_key().verify(msg, &sig).expect("verifies");
    }

    #[test]
    fn second_run_keeps_identities_and_binds_new_digest() {
        let dir = tempdir();
        let mut params = DealerParams {
            nodes: 2,
            threshold: 2,
            suites: vec![Suite::Ed25519],
            config_digest: ConfigDigest([0; 32]),
            kdf: KdfParams::insecure_fast(),
        };
        let first = dealer_keygen(dir.path(), &params, &PassphraseSource::GeneratePerMember)
            .expect("first");
        params.config_digest = ConfigDigest([3; 32]);
        let second = dealer_keygen(dir.path(), &params, &PassphraseSource::GeneratePerMember)
            .expect("second");
        assert_eq!(first.members, second.members);
        assert_ne!(first.group_keys, second.group_keys);
        let m = &second.members[0];
        let pass = Passphrase::from_file(m.passphrase_file.as_ref().expect("file")).expect("pass");
        Keystore::new(&m.key_dir)
            .read_key_package::<frost_ed25519::Ed25519Sha512>(&ConfigDigest([3; 32]), &pass)
            .expect("bound to the new digest");
    }

    #[test]
    fn bad_threshold_is_explained() {
        let dir = tempdir();
        let params = DealerParams {
            nodes: 3,
            threshold: 4,
            suites: vec![Suite::Ed25519],
            config_digest: ConfigDigest([0; 32]),
            kdf: KdfParams::insecure_fast(),
        };
        let err = dealer_keygen(dir.path(), &params, &PassphraseSource::GeneratePerMember)
            .expect_err("t > n");
        assert!(err.to_string().contains("--threshold"), "{err}");
    }
}
