//! The member's key store: its libp2p identity key and its FROST key
//! packages, encrypted at rest; the public key packages in plain JSON.
//!
//! ```text
//!  DIR/identity.key             encrypted 32-byte ed25519 seed (mode 0600)
//!  DIR/identity.pub.json        peer id + public key
//!  DIR/frost.<suite>.key        encrypted FROST KeyPackage (mode 0600)
//!  DIR/frost.<suite>.pub.json   PublicKeyPackage + group key + config digest
//! ```
//!
//! (or the paths of node.toml's `[keys]` section, with the suite's name
//! inserted before the extension: `keys/frost.key` gives `keys/frost.ed25519.key`). Suites are
//! `ed25519` and `secp256k1-evm`.
//!
//! ```text
//! ```
//!
//! Encryption: Argon2id derives a 32-byte key from the passphrase and a random
//! salt; ChaCha20-Poly1305 seals the secret with the file header (kind, suite,
//! config digest) as associated data, so a header edited to point the secret
//! at another committee fails to open. A SHA3 check value of the derived key
//! tells a wrong passphrase apart from a damaged file. Every file is written
//! to a temporary name, synced and renamed, so a crash never leaves half a key.
//!
//! Secrets live in `Zeroizing` buffers and never reach `Debug` output, logs or
//! error messages.

use std::fmt;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Nonce};
use frost_core::Ciphersuite;
use frost_core::keys::{KeyPackage, PublicKeyPackage};
use libp2p::PeerId;
use libp2p::identity::Keypair;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha3::{Digest, Sha3_256};
use sibyl_aggregator::ConfigDigest;
use zeroize::Zeroizing;

/// File format version written into every key file.
const FORMAT_VERSION: u32 = 1;
const KIND_IDENTITY: &str = "identity";
const KIND_FROST: &str = "frost-key-package";
const KIND_FROST_PUBLIC: &str = "frost-public-key-package";

/// What went wrong with a key file. Never carries secret material.
#[derive(Debug, thiserror::Error)]
pub enum KeystoreError {
    #[error(
        "key file {} not found: run `sibyl dkg` (or `sibyl keygen --dealer` for a devnet) first, or point the config at the right key directory",
        path.display()
    )]
    Missing { path: PathBuf },
    #[error("cannot access {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "wrong passphrase for {}: check that keys.passphrase_env / keys.passphrase_file in node.toml give the passphrase this key was made with",
        path.display()
    )]
    WrongPassphrase { path: PathBuf },
    #[error("key file {} is corrupted: {reason}; restore it from your backup (docs/OPERATOR.md)", path.display())]
    Corrupted { path: PathBuf, reason: String },
    #[error(
        "key file {} belongs to committee config digest {found}, but this committee's digest is {expected}: the committee file changed since the keys were made; run a new DKG for this committee",
        path.display()
    )]
    WrongCommittee {
        path: PathBuf,
        expected: String,
        found: String,
    },
    #[error("key file {} holds {found}, expected {expected}", path.display())]
    WrongKind {
        path: PathBuf,
        expected: String,
        found: String,
    },
    #[error(
        "passphrase environment variable {var} is not set or not valid UTF-8: export it before starting (systemd: Environment= or EnvironmentFile=), or use keys.passphrase_file"
    )]
    PassphraseEnvMissing { var: String },
    #[error("cannot read passphrase file {}: {source}", path.display())]
    PassphraseFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the passphrase is empty")]
    EmptyPassphrase,
    #[error("the identity key is not an ed25519 key")]
    NotEd25519,
    #[error("cannot encode key material for {}: {reason}", path.display())]
    Encode { path: PathBuf, reason: String },
}

pub type Result<T, E = KeystoreError> = std::result::Result<T, E>;

/// A passphrase. Zeroed on drop; `Debug` prints nothing of it.
#[derive(Clone)]
pub struct Passphrase(Zeroizing<String>);

impl Passphrase {
    /// A passphrase given directly (tests, prompts).
    pub fn new(passphrase: impl Into<String>) -> Result<Self> {
        let s = Zeroizing::new(passphrase.into());
        if s.is_empty() {
            return Err(KeystoreError::EmptyPassphrase);
        }
        Ok(Self(s))
    }

    /// Read the passphrase from the environment variable `var`.
    pub fn from_env(var: &str) -> Result<Self> {
        let value = std::env::var(var).map_err(|_| KeystoreError::PassphraseEnvMissing {
            var: var.to_string(),
        })?;
        Self::new(value)
    }

    /// Read the passphrase from a file; one trailing newline is ignored.
    pub fn from_file(path: &Path) -> Result<Self> {
        let raw = Zeroizing::new(fs::read_to_string(path).map_err(|source| {
            KeystoreError::PassphraseFile {
                path: path.to_path_buf(),
                source,
            }
        })?);
        let trimmed = raw
            .strip_suffix("\r\n")
            .or_else(|| raw.strip_suffix('\n'))
            .unwrap_or(&raw);
        Self::new(trimmed.to_string())
    }

    fn as_bytes(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

impl fmt::Debug for Passphrase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Passphrase(<redacted>)")
    }
}

/// Argon2id cost parameters, stored in each file so old files stay readable
/// when the defaults change.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KdfParams {
    /// Memory in KiB.
    pub m_cost: u32,
    pub t_cost: u32,
    pub p_cost: u32,
}

impl Default for KdfParams {
    /// OWASP's Argon2id recommendation: 19 MiB, 2 passes, 1 lane.
    fn default() -> Self {
        Self {
            m_cost: 19 * 1024,
            t_cost: 2,
            p_cost: 1,
        }
    }
}

impl KdfParams {
    /// Cheap parameters for tests only.
    pub fn insecure_fast() -> Self {
        Self {
            m_cost: 64,
            t_cost: 1,
            p_cost: 1,
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SealedFile {
    version: u32,
    kind: String,
    suite: Option<String>,
    config_digest: Option<String>,
    kdf: KdfFields,
    cipher: String,
    #[serde(with = "hex::serde")]
    nonce: [u8; 12],
    /// SHA3-256("sibyl-keystore-check" || derived key): passphrase check.
    #[serde(with = "hex::serde")]
    key_check: [u8; 32],
    #[serde(with = "hex::serde")]
    ciphertext: Vec<u8>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct KdfFields {
    alg: String,
    m_cost: u32,
    t_cost: u32,
    p_cost: u32,
    #[serde(with = "hex::serde")]
    salt: [u8; 16],
}

/// The public identity file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdentityPublic {
    pub peer_id: String,
    /// 32-byte ed25519 public key, hex.
    pub public_key: String,
}

/// The public key package file: everything a verifier or a peer may know.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[serde(bound = "")]
struct PublicFile<C: Ciphersuite> {
    version: u32,
    kind: String,
    suite: String,
    config_digest: String,
    /// The group verifying key in the suite's serialization, hex.
    group_key: String,
    public_key_package: PublicKeyPackage<C>,
}

/// Short file-name-safe name of a ciphersuite: `ed25519`, `secp256k1-evm`.
pub fn suite_slug<C: Ciphersuite>() -> String {
    match C::ID {
        id if id == frost_ed25519::Ed25519Sha512::ID => "ed25519".to_string(),
        id if id == frost_secp256k1_evm::Secp256K1Keccak256::ID => "secp256k1-evm".to_string(),
        other => other
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_lowercase()
                } else {
                    '-'
                }
            })
            .collect(),
    }
}

/// The group verifying key of a public key package, hex in the suite's encoding.
pub fn group_key_hex<C: Ciphersuite>(pkp: &PublicKeyPackage<C>) -> String {
    match pkp.verifying_key().serialize() {
        Ok(bytes) => hex::encode(bytes),
        // Only the identity element fails to serialize; a DKG never yields it.
        Err(_) => "<unencodable>".to_string(),
    }
}

/// Where one member's key files live.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyPaths {
    /// Encrypted identity seed; its public file is this path with the
    /// extension `pub.json`.
    pub identity: PathBuf,
    /// Encrypted key package; the suite's name goes before the extension:
    /// `keys/key_package.enc` -> `keys/key_package.ed25519.enc`.
    pub key_package: PathBuf,
    /// Public key package, suite name inserted the same way.
    pub public_key_package: PathBuf,
}

impl KeyPaths {
    /// The standard layout inside one directory.
    pub fn in_dir(dir: &Path) -> Self {
        Self {
            identity: dir.join("identity.key"),
            key_package: dir.join("frost.key"),
            public_key_package: dir.join("frost.pub.json"),
        }
    }
}

/// `a/b.ext` + `suite` -> `a/b.suite.ext` (`a/b` -> `a/b.suite`).
fn with_suite(path: &Path, suite: &str) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let new_name = match name.split_once('.') {
        Some((stem, ext)) => format!("{stem}.{suite}.{ext}"),
        None => format!("{name}.{suite}"),
    };
    path.with_file_name(new_name)
}

/// One member's key files.
#[derive(Clone, Debug)]
pub struct Keystore {
    paths: KeyPaths,
    kdf: KdfParams,
}

impl Keystore {
    /// The standard layout inside `dir` (see [`KeyPaths::in_dir`]).
    pub fn new(dir: impl AsRef<Path>) -> Self {
        Self::with_paths(KeyPaths::in_dir(dir.as_ref()))
    }

    /// Explicit paths, e.g. from node.toml's `[keys]` section.
    pub fn with_paths(paths: KeyPaths) -> Self {
        Self {
            paths,
            kdf: KdfParams::default(),
        }
    }

    /// Use these Argon2id costs for files written from now on.
    pub fn with_kdf(mut self, kdf: KdfParams) -> Self {
        self.kdf = kdf;
        self
    }

    pub fn paths(&self) -> &KeyPaths {
        &self.paths
    }

    pub fn identity_path(&self) -> PathBuf {
        self.paths.identity.clone()
    }

    pub fn identity_public_path(&self) -> PathBuf {
        self.paths.identity.with_extension("pub.json")
    }

    pub fn key_package_path<C: Ciphersuite>(&self) -> PathBuf {
        with_suite(&self.paths.key_package, &suite_slug::<C>())
    }

    pub fn public_key_package_path<C: Ciphersuite>(&self) -> PathBuf {
        with_suite(&self.paths.public_key_package, &suite_slug::<C>())
    }

    /// Store the identity key (must be ed25519) encrypted, plus its public part.
    pub fn write_identity(&self, keypair: &Keypair, passphrase: &Passphrase) -> Result<()> {
        let ed = keypair
            .clone()
            .try_into_ed25519()
            .map_err(|_| KeystoreError::NotEd25519)?;
        let secret = ed.secret();
        let seed = Zeroizing::new(secret.as_ref().to_vec());
        let path = self.identity_path();
        self.ensure_dir(&path)?;
        let sealed = seal(
            &path,
            KIND_IDENTITY,
            None,
            None,
            &seed,
            passphrase,
            self.kdf,
        )?;
        write_atomic(&path, &sealed, 0o600)?;
        let public = IdentityPublic {
            peer_id: keypair.public().to_peer_id().to_string(),
            public_key: hex::encode(ed.public().to_bytes()),
        };
        let json = to_json(&self.identity_public_path(), &public)?;
        write_atomic(&self.identity_public_path(), &json, 0o644)
    }

    /// Load and decrypt the identity key.
    pub fn read_identity(&self, passphrase: &Passphrase) -> Result<Keypair> {
        let path = self.identity_path();
        let mut seed = open(&path, KIND_IDENTITY, None, None, passphrase)?;
        if seed.len() != 32 {
            return Err(corrupted(&path, "identity seed is not 32 bytes"));
        }
        Keypair::ed25519_from_bytes(&mut seed[..])
            .map_err(|_| corrupted(&path, "identity seed is not a valid ed25519 key"))
    }

    /// The member's PeerId from the public identity file (no passphrase needed).
    pub fn read_peer_id(&self) -> Result<PeerId> {
        let path = self.identity_public_path();
        let public: IdentityPublic = from_json(&path, &read(&path)?)?;
        public
            .peer_id
            .parse()
            .map_err(|_| corrupted(&path, "peer_id is not a valid PeerId"))
    }

    /// Store a FROST key package encrypted, bound to the committee's digest.
    pub fn write_key_package<C: Ciphersuite>(
        &self,
        digest: &ConfigDigest,
        key_package: &KeyPackage<C>,
        passphrase: &Passphrase,
    ) -> Result<()> {
        let path = self.key_package_path::<C>();
        let bytes = Zeroizing::new(key_package.serialize().map_err(|e| KeystoreError::Encode {
            path: path.clone(),
            reason: e.to_string(),
        })?);
        self.ensure_dir(&path)?;
        let sealed = seal(
            &path,
            KIND_FROST,
            Some(C::ID),
            Some(digest),
            &bytes,
            passphrase,
            self.kdf,
        )?;
        write_atomic(&path, &sealed, 0o600)
    }

    /// Load and decrypt a FROST key package; refuses one made for another committee.
    pub fn read_key_package<C: Ciphersuite>(
        &self,
        digest: &ConfigDigest,
        passphrase: &Passphrase,
    ) -> Result<KeyPackage<C>> {
        let path = self.key_package_path::<C>();
        let bytes = open(&path, KIND_FROST, Some(C::ID), Some(digest), passphrase)?;
        KeyPackage::<C>::deserialize(&bytes)
            .map_err(|_| corrupted(&path, "decrypted key package does not decode"))
    }

    /// Store the public key package (plain JSON) bound to the committee's digest.
    pub fn write_public_key_package<C: Ciphersuite>(
        &self,
        digest: &ConfigDigest,
        pkp: &PublicKeyPackage<C>,
    ) -> Result<()> {
        let path = self.public_key_package_path::<C>();
        let file = PublicFile::<C> {
            version: FORMAT_VERSION,
            kind: KIND_FROST_PUBLIC.to_string(),
            suite: C::ID.to_string(),
            config_digest: hex::encode(digest.0),
            group_key: group_key_hex(pkp),
            public_key_package: pkp.clone(),
        };
        self.ensure_dir(&path)?;
        let json = to_json(&path, &file)?;
        write_atomic(&path, &json, 0o644)
    }

    /// Load the public key package; refuses one made for another committee.
    pub fn read_public_key_package<C: Ciphersuite>(
        &self,
        digest: &ConfigDigest,
    ) -> Result<PublicKeyPackage<C>> {
        let path = self.public_key_package_path::<C>();
        let file: PublicFile<C> = from_json(&path, &read(&path)?)?;
        check_header(
            &path,
            (KIND_FROST_PUBLIC, &file.kind),
            Some((C::ID, file.suite.as_str())),
        )?;
        check_digest(&path, digest, Some(&file.config_digest))?;
        if group_key_hex(&file.public_key_package) != file.group_key {
            return Err(corrupted(
                &path,
                "group_key does not match the public key package",
            ));
        }
        Ok(file.public_key_package)
    }

    fn ensure_dir(&self, file: &Path) -> Result<()> {
        let Some(dir) = file.parent().filter(|d| !d.as_os_str().is_empty()) else {
            return Ok(());
        };
        fs::create_dir_all(dir).map_err(|source| KeystoreError::Io {
            path: dir.to_path_buf(),
            source,
        })
    }
}

fn corrupted(path: &Path, reason: impl Into<String>) -> KeystoreError {
    KeystoreError::Corrupted {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

fn read(path: &Path) -> Result<Vec<u8>> {
    fs::read(path).map_err(|source| {
        if source.kind() == std::io::ErrorKind::NotFound {
            KeystoreError::Missing {
                path: path.to_path_buf(),
            }
        } else {
            KeystoreError::Io {
                path: path.to_path_buf(),
                source,
            }
        }
    })
}

fn to_json<T: Serialize>(path: &Path, value: &T) -> Result<Vec<u8>> {
    let mut out = serde_json::to_vec_pretty(value).map_err(|e| KeystoreError::Encode {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    out.push(b'\n');
    Ok(out)
}

fn from_json<T: for<'de> Deserialize<'de>>(path: &Path, bytes: &[u8]) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|e| corrupted(path, format!("not a valid key file: {e}")))
}

/// Associated data binding the ciphertext to its header.
fn aad(kind: &str, suite: Option<&str>, digest: Option<&str>) -> Vec<u8> {
    format!(
        "sibyl-keystore-v{FORMAT_VERSION}\0{kind}\0{}\0{}",
        suite.unwrap_or(""),
        digest.unwrap_or("")
    )
    .into_bytes()
}

fn derive_key(
    path: &Path,
    passphrase: &Passphrase,
    salt: &[u8; 16],
    kdf: KdfParams,
) -> Result<Zeroizing<[u8; 32]>> {
    let params = argon2::Params::new(kdf.m_cost, kdf.t_cost, kdf.p_cost, Some(32))
        .map_err(|e| corrupted(path, format!("invalid argon2 parameters: {e}")))?;
    let argon = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
    let mut key = Zeroizing::new([0u8; 32]);
    argon
        .hash_password_into(passphrase.as_bytes(), salt, &mut key[..])
        .map_err(|e| corrupted(path, format!("key derivation failed: {e}")))?;
    Ok(key)
}

fn cipher_for(path: &Path, key: &[u8; 32]) -> Result<ChaCha20Poly1305> {
    ChaCha20Poly1305::new_from_slice(&key[..]).map_err(|_| KeystoreError::Encode {
        path: path.to_path_buf(),
        reason: "invalid key length".to_string(),
    })
}

fn key_check(key: &[u8; 32]) -> [u8; 32] {
    let mut h = Sha3_256::new();
    h.update(b"sibyl-keystore-check");
    h.update(key);
    h.finalize().into()
}

fn seal(
    path: &Path,
    kind: &str,
    suite: Option<&str>,
    digest: Option<&ConfigDigest>,
    secret: &[u8],
    passphrase: &Passphrase,
    kdf: KdfParams,
) -> Result<Vec<u8>> {
    let mut salt = [0u8; 16];
    let mut nonce = [0u8; 12];
    rand::rngs::OsRng.fill_bytes(&mut salt);
    rand::rngs::OsRng.fill_bytes(&mut nonce);
    let key = derive_key(path, passphrase, &salt, kdf)?;
    let digest_hex = digest.map(|d| hex::encode(d.0));
    let cipher = cipher_for(path, &key)?;
    let ciphertext = cipher
        .encrypt(
            &Nonce::from(nonce),
            Payload {
                msg: secret,
                aad: &aad(kind, suite, digest_hex.as_deref()),
            },
        )
        .map_err(|_| KeystoreError::Encode {
            path: path.to_path_buf(),
            reason: "encryption failed".to_string(),
        })?;
    let file = SealedFile {
        version: FORMAT_VERSION,
        kind: kind.to_string(),
        suite: suite.map(str::to_string),
        config_digest: digest_hex,
        kdf: KdfFields {
            alg: "argon2id".to_string(),
            m_cost: kdf.m_cost,
            t_cost: kdf.t_cost,
            p_cost: kdf.p_cost,
            salt,
        },
        cipher: "chacha20poly1305".to_string(),
        nonce,
        key_check: key_check(&key),
        ciphertext,
    };
    to_json(path, &file)
}

fn check_header(
    path: &Path,
    (expected_kind, found_kind): (&str, &str),
    suite: Option<(&str, &str)>,
) -> Result<()> {
    if expected_kind != found_kind {
        return Err(KeystoreError::WrongKind {
            path: path.to_path_buf(),
            expected: expected_kind.to_string(),
            found: found_kind.to_string(),
        });
    }
    if let Some((expected, found)) = suite
        && expected != found
    {
        return Err(KeystoreError::WrongKind {
            path: path.to_path_buf(),
            expected: format!("a {expected} key"),
            found: format!("a {found} key"),
        });
    }
    Ok(())
}

fn check_digest(path: &Path, expected: &ConfigDigest, found: Option<&str>) -> Result<()> {
    let expected_hex = hex::encode(expected.0);
    match found {
        Some(found) if found.eq_ignore_ascii_case(&expected_hex) => Ok(()),
        Some(found) => Err(KeystoreError::WrongCommittee {
            path: path.to_path_buf(),
            expected: expected_hex,
            found: found.to_string(),
        }),
        None => Err(corrupted(path, "config_digest is missing")),
    }
}

fn open(
    path: &Path,
    kind: &str,
    suite: Option<&str>,
    digest: Option<&ConfigDigest>,
    passphrase: &Passphrase,
) -> Result<Zeroizing<Vec<u8>>> {
    let file: SealedFile = from_json(path, &read(path)?)?;
    if file.version != FORMAT_VERSION {
        return Err(corrupted(
            path,
            format!("unsupported format version {}", file.version),
        ));
    }
    if file.kdf.alg != "argon2id" || file.cipher != "chacha20poly1305" {
        return Err(corrupted(path, "unsupported kdf or cipher"));
    }
    check_header(
        path,
        (kind, &file.kind),
        suite.map(|s| (s, file.suite.as_deref().unwrap_or(""))),
    )?;
    if let Some(digest) = digest {
        check_digest(path, digest, file.config_digest.as_deref())?;
    }
    let kdf = KdfParams {
        m_cost: file.kdf.m_cost,
        t_cost: file.kdf.t_cost,
        p_cost: file.kdf.p_cost,
    };
    let key = derive_key(path, passphrase, &file.kdf.salt, kdf)?;
    if key_check(&key) != file.key_check {
        return Err(KeystoreError::WrongPassphrase {
            path: path.to_path_buf(),
        });
    }
    let cipher = cipher_for(path, &key)?;
    let plain = cipher
        .decrypt(
            &Nonce::from(file.nonce),
            Payload {
                msg: &file.ciphertext,
                aad: &aad(kind, file.suite.as_deref(), file.config_digest.as_deref()),
            },
        )
        .map_err(|_| {
            corrupted(
                path,
                "authentication failed: ciphertext or header was modified",
            )
        })?;
    Ok(Zeroizing::new(plain))
}

/// Write `bytes` to `path` atomically: temp file with `mode`, fsync, rename,
/// fsync the directory.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let io_err = |source| KeystoreError::Io {
        path: path.to_path_buf(),
        source,
    };
    let dir = path.parent().unwrap_or_else(|| Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "key".to_string());
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let result = (|| {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)?;
        // `mode` applies only when the file is created; enforce it anyway.
        f.set_permissions(fs::Permissions::from_mode(mode))?;
        f.write_all(bytes)?;
        f.sync_all()?;
        fs::rename(&tmp, path)?;
        if let Ok(d) = fs::File::open(dir) {
            d.sync_all()?;
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.map_err(io_err)
}

/// Where a refresh keeps the new keys until every member stored them:
/// the key files' names with `.pending` before the suite
/// (`keys/frost.key` -> `keys/frost.ed25519.pending.key`: the suite goes after the first stem, see `Keystore::key_package_path`).
pub fn pending_keystore(live: &Keystore) -> Keystore {
    let p = live.paths();
    let pending = |path: &std::path::Path| {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let new = match name.split_once('.') {
            Some((stem, ext)) => format!("{stem}.pending.{ext}"),
            None => format!("{name}.pending"),
        };
        path.with_file_name(new)
    };
    Keystore::with_paths(KeyPaths {
        identity: p.identity.clone(),
        key_package: pending(&p.key_package),
        public_key_package: pending(&p.public_key_package),
    })
}

/// The pending key files of `suites` (those that exist).
pub fn pending_files(live: &Keystore, suites: &[sibyl_aggregator::Suite]) -> Vec<PathBuf> {
    let pending = pending_keystore(live);
    suites
        .iter()
        .flat_map(|s| match s {
            sibyl_aggregator::Suite::Ed25519 => [
                pending.key_package_path::<frost_ed25519::Ed25519Sha512>(),
                pending.public_key_package_path::<frost_ed25519::Ed25519Sha512>(),
            ],
            sibyl_aggregator::Suite::Secp256k1Evm => [
                pending.key_package_path::<frost_secp256k1_evm::Secp256K1Keccak256>(),
                pending.public_key_package_path::<frost_secp256k1_evm::Secp256K1Keccak256>(),
            ],
        })
        .filter(|p| p.exists())
        .collect()
}

/// Why a member whose pending refresh files cannot be used must not start
/// (`sibyl run` refuses, `sibyl config check` reports it). Readable pending
/// files are resumed by `sibyl run` instead (`crate::rekey`).
pub fn pending_refresh_refusal(pending: &[PathBuf], why: &str) -> String {
    format!(
        "a key refresh did not finish here and its pending files cannot be used ({why}; {} pending); this member's shares may not match the others'. Run `sibyl refresh --finish` if every other member switched, else `sibyl refresh --abandon` (docs/OPERATOR.md, \"Refreshing key shares\")",
        pending
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    )
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use frost_core::keys::{IdentifierList, generate_with_dealer};
    use std::collections::BTreeMap;
    use std::os::unix::fs::PermissionsExt;

    type Ed = frost_ed25519::Ed25519Sha512;
    type Evm = frost_secp256k1_evm::Secp256K1Keccak256;

    fn store(dir: &Path) -> Keystore {
        Keystore::new(dir).with_kdf(KdfParams::insecure_fast())
    }

    fn pass(s: &str) -> Passphrase {
        Passphrase::new(s).expect("non-empty")
    }

    fn dealer<C: Ciphersuite>() -> (
        BTreeMap<frost_core::Identifier<C>, KeyPackage<C>>,
        PublicKeyPackage<C>,
    ) {
        let (shares, pkp) =
            generate_with_dealer::<C, _>(3, 2, IdentifierList::Default, &mut rand::rngs::OsRng)
                .expect("dealer");
        let kps = shares
            .into_iter()
            .map(|(id, s)| (id, KeyPackage::try_from(s).expect("share")))
            .collect();
        (kps, pkp)
    }

    fn roundtrip<C: Ciphersuite>() {
        let dir = tempdir();
        let ks = store(dir.path());
        let digest = ConfigDigest([7; 32]);
        let (kps, pkp) = dealer::<C>();
        let kp = kps.values().next().expect("one");
        ks.write_key_package(&digest, kp, &pass("hunter2"))
            .expect("write");
        ks.write_public_key_package(&digest, &pkp)
            .expect("write pub");
        let back = ks
            .read_key_package::<C>(&digest, &pass("hunter2"))
            .expect("read");
        assert_eq!(&back, kp);
        assert_eq!(ks.read_public_key_package::<C>(&digest).expect("pub"), pkp);
        let mode = fs::metadata(ks.key_package_path::<C>())
            .expect("meta")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn key_package_roundtrip_both_suites() {
        roundtrip::<Ed>();
        roundtrip::<Evm>();
    }

    #[test]
    fn identity_roundtrip_and_peer_id() {
        let dir = tempdir();
        let ks = store(dir.path());
        let kp = Keypair::generate_ed25519();
        ks.write_identity(&kp, &pass("pw")).expect("write");
        let back = ks.read_identity(&pass("pw")).expect("read");
        assert_eq!(back.public(), kp.public());
        assert_eq!(ks.read_peer_id().expect("peer"), kp.public().to_peer_id());
        let mode = fs::metadata(ks.identity_path())
            .expect("meta")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let raw = fs::read_to_string(ks.identity_path()).expect("raw");
        let ed = kp.try_into_ed25519().expect("ed");
        assert!(
            !raw.contains(&hex::encode(ed.secret().as_ref())),
            "seed stored in clear"
        );
    }

    #[test]
    fn wrong_passphrase_is_named() {
        let dir = tempdir();
        let ks = store(dir.path());
        ks.write_identity(&Keypair::generate_ed25519(), &pass("right"))
            .expect("write");
        let err = ks.read_identity(&pass("wrong")).expect_err("must fail");
        assert!(
            matches!(err, KeystoreError::WrongPassphrase { .. }),
            "{err}"
        );
        assert!(err.to_string().contains("identity.key"));
    }

    #[test]
    fn missing_file_names_path() {
        let dir = tempdir();
        let ks = store(dir.path());
        let err = ks
            .read_key_package::<Ed>(&ConfigDigest([0; 32]), &pass("x"))
            .expect_err("missing");
        assert!(matches!(err, KeystoreError::Missing { .. }));
        assert!(err.to_string().contains("frost.ed25519.key"), "{err}");
    }

    #[test]
    fn wrong_committee_is_refused() {
        let dir = tempdir();
        let ks = store(dir.path());
        let (kps, pkp) = dealer::<Ed>();
        let kp = kps.values().next().expect("one");
        ks.write_key_package(&ConfigDigest([1; 32]), kp, &pass("p"))
            .expect("w");
        ks.write_public_key_package(&ConfigDigest([1; 32]), &pkp)
            .expect("w");
        let err = ks
            .read_key_package::<Ed>(&ConfigDigest([2; 32]), &pass("p"))
            .expect_err("digest");
        assert!(matches!(err, KeystoreError::WrongCommittee { .. }), "{err}");
        let err = ks
            .read_public_key_package::<Ed>(&ConfigDigest([2; 32]))
            .expect_err("digest");
        assert!(matches!(err, KeystoreError::WrongCommittee { .. }), "{err}");
    }

    #[test]
    fn tampered_header_or_ciphertext_is_corrupted() {
        let dir = tempdir();
        let ks = store(dir.path());
        let (kps, _) = dealer::<Ed>();
        let kp = kps.values().next().expect("one");
        let digest = ConfigDigest([1; 32]);
        ks.write_key_package(&digest, kp, &pass("p")).expect("w");
        let path = ks.key_package_path::<Ed>();
        let text = fs::read_to_string(&path).expect("read");
        // Flip the recorded digest: the header no longer matches the AAD.
        let other = ConfigDigest([2; 32]);
        fs::write(
            &path,
            text.replace(&hex::encode(digest.0), &hex::encode(other.0)),
        )
        .expect("w");
        let err = ks
            .read_key_package::<Ed>(&other, &pass("p"))
            .expect_err("aad");
        assert!(matches!(err, KeystoreError::Corrupted { .. }), "{err}");
        // Garbage.
        fs::write(&path, b"{not json").expect("w");
        let err = ks
            .read_key_package::<Ed>(&digest, &pass("p"))
            .expect_err("garbage");
        assert!(matches!(err, KeystoreError::Corrupted { .. }), "{err}");
    }

    #[test]
    fn config_paths_get_the_suite_name() {
        let ks = Keystore::with_paths(KeyPaths {
            identity: "k/identity.key".into(),
            key_package: "k/key_package.enc".into(),
            public_key_package: "k/public_key_package.json".into(),
        });
        assert_eq!(
            ks.identity_public_path(),
            PathBuf::from("k/identity.pub.json")
        );
        assert_eq!(
            ks.key_package_path::<Ed>(),
            PathBuf::from("k/key_package.ed25519.enc")
        );
        assert_eq!(
            ks.public_key_package_path::<Evm>(),
            PathBuf::from("k/public_key_package.secp256k1-evm.json")
        );
    }

    #[test]
    fn secrets_stay_out_of_debug() {
        let p = pass("supersecret");
        assert!(!format!("{p:?}").contains("supersecret"));
    }

    #[test]
    fn passphrase_from_file_and_env() {
        let dir = tempdir();
        let f = dir.path().join("pass");
        fs::write(&f, "abc\n").expect("w");
        let p = Passphrase::from_file(&f).expect("file");
        assert_eq!(p.as_bytes(), b"abc");
        let err = Passphrase::from_env("SIBYL_TEST_SURELY_UNSET_VAR").expect_err("unset");
        assert!(err.to_string().contains("SIBYL_TEST_SURELY_UNSET_VAR"));
        assert!(matches!(
            Passphrase::from_file(&dir.path().join("nope")),
            Err(KeystoreError::PassphraseFile { .. })
        ));
    }

    /// Minimal temp dir (avoids a dev-dependency).
    pub(crate) struct TempDir(PathBuf);
    impl TempDir {
        pub(crate) fn path(&self) -> &Path {
            &self.0
        }
    }
    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }
    pub(crate) fn tempdir() -> TempDir {
        let mut r = [0u8; 8];
        rand::rngs::OsRng.fill_bytes(&mut r);
        let p = std::env::temp_dir().join(format!("sibyl-test-{}", hex::encode(r)));
        fs::create_dir_all(&p).expect("mkdir");
        TempDir(p)
    }
}
