//! `sibyl identity`: make (or show) this member's libp2p identity key, the
//! first step of joining a committee. The key is written encrypted at rest
//! (mode 0600) through the key store; its PeerId goes into the committee file.

use anyhow::{Context, bail};
use libp2p::{PeerId, identity::Keypair};
use sibyl_node::keystore::{Keystore, KeystoreError, Passphrase};
use std::path::PathBuf;

/// Arguments of `sibyl identity`.
#[derive(Debug, clap::Args)]
#[command(after_help = "Example:\n  \
    SIBYL_KEY_PASSPHRASE=... sibyl identity --out /var/lib/sibyl/keys --passphrase-env SIBYL_KEY_PASSPHRASE\n\n\
    Send the printed PeerId and your listen address to whoever assembles the\n\
    committee file; then run `sibyl dkg --config node.toml` with the others.")]
pub struct IdentityArgs {
    /// Key directory: writes `identity.key` (encrypted) and `identity.pub.json`.
    #[arg(long)]
    pub out: PathBuf,
    /// Name of the environment variable holding the key passphrase.
    #[arg(long, conflicts_with = "passphrase_file")]
    pub passphrase_env: Option<String>,
    /// File whose first line is the key passphrase.
    #[arg(long)]
    pub passphrase_file: Option<PathBuf>,
}

/// Make the identity key unless one exists, then print its PeerId.
pub fn run(args: IdentityArgs) -> anyhow::Result<()> {
    let passphrase = match (&args.passphrase_env, &args.passphrase_file) {
        (Some(var), None) => Passphrase::from_env(var)?,
        (None, Some(file)) => Passphrase::from_file(file)?,
        _ => bail!(
            "say where the key passphrase comes from: --passphrase-env VAR or --passphrase-file FILE"
        ),
    };
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("cannot create {}", args.out.display()))?;
    let store = Keystore::new(&args.out);
    let (keypair, made) = if store.identity_path().exists() {
        let keypair = store.read_identity(&passphrase).map_err(|e| match e {
            // The key store's message names node.toml's [keys]; this command
            // takes the passphrase from its own options.
            KeystoreError::WrongPassphrase { path } => anyhow::anyhow!(
                "wrong passphrase for the existing identity key {}: the passphrase from --passphrase-env / --passphrase-file is not the one it was made with; give that one (this command keeps an existing key and never replaces it)",
                path.display()
            ),
            other => other.into(),
        })?;
        (keypair, false)
    } else {
        let keypair = Keypair::generate_ed25519();
        store.write_identity(&keypair, &passphrase)?;
        (keypair, true)
    };
    let peer_id = PeerId::from(keypair.public());
    if made {
        println!("made identity key {}", store.identity_path().display());
    } else {
        println!(
            "identity key {} already exists; kept it",
            store.identity_path().display()
        );
    }
    println!("peer_id = \"{peer_id}\"");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn makes_then_keeps_the_identity_and_refuses_a_wrong_passphrase() {
        let dir = tempfile::tempdir().unwrap();
        let pass = dir.path().join("pass");
        std::fs::write(&pass, "correct horse\n").unwrap();
        let args = || IdentityArgs {
            out: dir.path().join("keys"),
            passphrase_env: None,
            passphrase_file: Some(pass.clone()),
        };
        run(args()).unwrap();
        let store = Keystore::new(dir.path().join("keys"));
        let first = store.read_peer_id().unwrap();
        run(args()).unwrap();
        assert_eq!(
            store.read_peer_id().unwrap(),
            first,
            "a second run keeps the key"
        );
        std::fs::write(&pass, "wrong\n").unwrap();
        let err = run(args()).unwrap_err().to_string();
        assert!(err.contains("wrong passphrase"), "{err}");
        assert!(err.contains("--passphrase-file"), "{err}");
        assert!(!err.contains("node.toml"), "{err}");
        let missing = IdentityArgs {
            out: dir.path().join("keys"),
            passphrase_env: None,
            passphrase_file: None,
        };
        assert!(run(missing).is_err());
    }
}
