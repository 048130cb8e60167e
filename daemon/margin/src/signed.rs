//! Commands signed by an account's own key (docs/MARGIN.md, "Account
//! keys"). An account created with an `owner` (an Ed25519 public key) takes
//! the commands that move its funds or positions only when that key signed
//! them; the operator can no longer withdraw from it or trade on it.
//!
//! ```text
//!  signed bytes = "Sibyl margin command v2"
//!               ‖ committee key length:u8 ‖ committee key
//!               ‖ account:u64 BE ‖ nonce:u64 BE ‖ command
//! ```
//!
//! The committee key is the group verifying key the committee signs its
//! reports with ([`CommitteeKey`]): an envelope made for one deployment's
//! book never verifies on another's, even where the same owner key holds
//! the same account id there with a lower nonce. `command` is the
//! `Command`'s JSON text exactly as the signer wrote it: the engine parses
//! the signed bytes themselves, so a signer in any language signs what it
//! sends and no canonical JSON is needed. `nonce` must be above the
//! account's last one: a replayed or reordered envelope is refused.

use crate::error::EngineError;
use crate::types::{AccountId, Command};
use ed25519_dalek::{Signature, VerifyingKey};
use serde::{Deserialize, Serialize};

/// Domain of the signed bytes: a signature made for anything else never
/// reads as a margin command. (v1 named no committee; a v1 signature never
/// verifies as v2.)
pub const SIGNED_COMMAND_DOMAIN: &[u8] = b"Sibyl margin command v2";

/// Longest committee key the signed bytes carry (a one-byte length).
pub const MAX_COMMITTEE_KEY_LEN: usize = 64;

/// The committee's group verifying key in its suite's own serialization
/// (32 bytes for FROST(Ed25519), 33 compressed for FROST(secp256k1)): the
/// deployment an owner's signature is for. It is context the engine is
/// given ([`crate::Engine::set_committee`]), not state: it is in neither
/// the state root nor the snapshot, and a share refresh or a resharing
/// keeps it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct CommitteeKey(Vec<u8>);

impl CommitteeKey {
    /// `bytes` as a committee key: 1 to [`MAX_COMMITTEE_KEY_LEN`] bytes
    /// (which curve point they are is the caller's to check).
    pub fn new(bytes: Vec<u8>) -> Result<Self, EngineError> {
        if bytes.is_empty() || bytes.len() > MAX_COMMITTEE_KEY_LEN {
            return Err(EngineError::InvalidCommitteeKey {
                detail: format!(
                    "{} bytes; a group key is 1 to {MAX_COMMITTEE_KEY_LEN} (32 for Ed25519, 33 for secp256k1)",
                    bytes.len()
                ),
            });
        }
        Ok(Self(bytes))
    }

    /// From hex (`0x` prefix optional).
    pub fn from_hex(s: &str) -> Result<Self, EngineError> {
        let s = s.trim();
        let s = s.strip_prefix("0x").unwrap_or(s);
        let bad = |detail: String| EngineError::InvalidCommitteeKey { detail };
        if !s.len().is_multiple_of(2) {
            return Err(bad(format!(
                "{} hex digits: a byte string has an even number",
                s.len()
            )));
        }
        let bytes = (0..s.len())
            .step_by(2)
            .map(|i| {
                s.get(i..i + 2)
                    .and_then(|p| u8::from_str_radix(p, 16).ok())
                    .ok_or_else(|| bad(format!("not hex at character {i}")))
            })
            .collect::<Result<Vec<u8>, _>>()?;
        Self::new(bytes)
    }

    /// The key's bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// Lowercase hex.
    pub fn to_hex(&self) -> String {
        hex_bytes::encode(&self.0)
    }
}

/// An account owner's Ed25519 public key.
pub type OwnerKey = [u8; 32];

/// A command with its account owner's signature, as clients send it and
/// as the engine stores it (`Input::Signed`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignedCommand {
    /// The account the command acts on (also named inside `command`).
    pub account: AccountId,
    /// Above the account's last signed nonce.
    pub nonce: u64,
    /// The `Command` as JSON text, exactly the bytes signed.
    pub command: String,
    /// Ed25519 signature of [`SignedCommand::signed_bytes`], hex in JSON.
    #[serde(with = "hex_bytes")]
    pub signature: [u8; 64],
}

impl SignedCommand {
    /// What the owner signs for `committee` (layout in the module docs).
    pub fn signed_bytes(
        committee: &CommitteeKey,
        account: AccountId,
        nonce: u64,
        command: &str,
    ) -> Vec<u8> {
        let key = committee.as_bytes();
        let mut m =
            Vec::with_capacity(SIGNED_COMMAND_DOMAIN.len() + 1 + key.len() + 16 + command.len());
        m.extend_from_slice(SIGNED_COMMAND_DOMAIN);
        // `CommitteeKey::new` holds the length to MAX_COMMITTEE_KEY_LEN.
        m.push(u8::try_from(key.len()).unwrap_or(u8::MAX));
        m.extend_from_slice(key);
        m.extend_from_slice(&account.to_be_bytes());
        m.extend_from_slice(&nonce.to_be_bytes());
        m.extend_from_slice(command.as_bytes());
        m
    }

    /// Signs `command` (JSON text) for `account` on `committee`'s book with
    /// the owner's secret key.
    pub fn sign(
        secret: &[u8; 32],
        committee: &CommitteeKey,
        account: AccountId,
        nonce: u64,
        command: String,
    ) -> Self {
        let key = ed25519_dalek::SigningKey::from_bytes(secret);
        let sig = ed25519_dalek::Signer::sign(
            &key,
            &Self::signed_bytes(committee, account, nonce, &command),
        );
        SignedCommand {
            account,
            nonce,
            command,
            signature: sig.to_bytes(),
        }
    }

    /// The command it carries.
    pub fn parse(&self) -> Result<Command, EngineError> {
        serde_json::from_str(&self.command).map_err(|e| EngineError::BadSignedCommand {
            detail: e.to_string(),
        })
    }

    /// Whether the signature verifies under `owner` for `committee`
    /// (strict Ed25519: no malleable signatures, no small-order keys, the
    /// same answer on every member).
    pub fn verifies(&self, owner: &OwnerKey, committee: &CommitteeKey) -> bool {
        let Ok(key) = VerifyingKey::from_bytes(owner) else {
            return false;
        };
        let sig = Signature::from_bytes(&self.signature);
        key.verify_strict(
            &Self::signed_bytes(committee, self.account, self.nonce, &self.command),
            &sig,
        )
        .is_ok()
    }
}

/// The public key of a 32-byte secret.
pub fn public_key(secret: &[u8; 32]) -> OwnerKey {
    ed25519_dalek::SigningKey::from_bytes(secret)
        .verifying_key()
        .to_bytes()
}

/// `Err(InvalidOwnerKey)` unless `key` is a usable Ed25519 public key (a
/// point on the curve, not of small order).
pub fn check_owner_key(key: &OwnerKey) -> Result<(), EngineError> {
    match VerifyingKey::from_bytes(key) {
        Ok(k) if !k.is_weak() => Ok(()),
        _ => Err(EngineError::InvalidOwnerKey {
            key: hex_bytes::encode(key),
        }),
    }
}

/// Fixed-size byte arrays (and optional ones) as lowercase hex strings in
/// JSON; an optional `0x` prefix is accepted on input.
pub mod hex_bytes {
    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    /// Lowercase hex.
    pub fn encode(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    /// `N` bytes from hex (`0x` prefix optional), or why not.
    pub fn decode<const N: usize>(s: &str) -> Result<[u8; N], String> {
        let s = s.strip_prefix("0x").unwrap_or(s);
        if s.len() != 2 * N {
            return Err(format!(
                "expected {N} bytes as {} hex digits, got {} characters",
                2 * N,
                s.len()
            ));
        }
        let mut out = [0u8; N];
        for (i, o) in out.iter_mut().enumerate() {
            let pair = s.get(2 * i..2 * i + 2).ok_or("not ASCII hex")?;
            *o = u8::from_str_radix(pair, 16).map_err(|_| format!("{pair:?} is not hex"))?;
        }
        Ok(out)
    }

    pub fn serialize<S: Serializer, const N: usize>(b: &[u8; N], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&encode(b))
    }

    pub fn deserialize<'de, D: Deserializer<'de>, const N: usize>(
        d: D,
    ) -> Result<[u8; N], D::Error> {
        let s = String::deserialize(d)?;
        decode(&s).map_err(D::Error::custom)
    }

    /// `Option<[u8; N]>`: absent or null is None.
    pub mod option {
        use serde::{Deserialize, Deserializer, Serializer, de::Error};

        pub fn serialize<S: Serializer, const N: usize>(
            b: &Option<[u8; N]>,
            s: S,
        ) -> Result<S::Ok, S::Error> {
            match b {
                Some(b) => s.serialize_str(&super::encode(b)),
                None => s.serialize_none(),
            }
        }

        pub fn deserialize<'de, D: Deserializer<'de>, const N: usize>(
            d: D,
        ) -> Result<Option<[u8; N]>, D::Error> {
            match Option::<String>::deserialize(d)? {
                None => Ok(None),
                Some(s) => super::decode(&s).map(Some).map_err(D::Error::custom),
            }
        }
    }
}
