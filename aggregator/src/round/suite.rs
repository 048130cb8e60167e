//! The FROST ciphersuites Sibyl signs with.

use super::frost_internals::fast25519;
use crate::report::Suite;
use frost_core::{self as frost, Ciphersuite, VerifyingKey, round1::SigningCommitments};

/// A FROST ciphersuite Sibyl signs with.
pub trait SibylSuite: Ciphersuite {
    const SUITE: Suite;

    /// One participant's serialized commitments, parsed and validated: the
    /// same answer as `SigningCommitments::deserialize`. A suite may answer
    /// faster (the inputs are public).
    fn parse_commitments(bytes: &[u8]) -> Option<SigningCommitments<Self>> {
        SigningCommitments::deserialize(bytes).ok()
    }

    /// Whether `sig` (serialized) is a valid signature on `msg` under `key`:
    /// the same answer as `Signature::deserialize` then `VerifyingKey::verify`.
    fn verify_signature_bytes(key: &VerifyingKey<Self>, msg: &[u8], sig: &[u8]) -> bool {
        frost::Signature::<Self>::deserialize(sig).is_ok_and(|s| key.verify(msg, &s).is_ok())
    }
}

impl SibylSuite for frost_ed25519::Ed25519Sha512 {
    const SUITE: Suite = Suite::Ed25519;

    fn parse_commitments(bytes: &[u8]) -> Option<SigningCommitments<Self>> {
        fast25519::commitments(bytes)
    }

    fn verify_signature_bytes(key: &VerifyingKey<Self>, msg: &[u8], sig: &[u8]) -> bool {
        fast25519::verify(key, msg, sig)
    }
}

impl SibylSuite for frost_secp256k1_evm::Secp256K1Keccak256 {
    const SUITE: Suite = Suite::Secp256k1Evm;
}
