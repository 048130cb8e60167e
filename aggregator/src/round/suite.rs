//! The FROST ciphersuites Sibyl signs with.

use super::frost_internals::fast25519;
use crate::report::Suite;
use frost_core::{
    self as frost, Ciphersuite, VerifyingKey,
    keys::{KeyPackage, PublicKeyPackage},
    round1::SigningCommitments,
};

/// A member's FROST keys for one suite.
#[derive(Clone, Debug)]
pub enum SuiteKeys {
    Ed25519(
        KeyPackage<frost_ed25519::Ed25519Sha512>,
        PublicKeyPackage<frost_ed25519::Ed25519Sha512>,
    ),
    Secp256k1Evm(
        KeyPackage<frost_secp256k1_evm::Secp256K1Keccak256>,
        PublicKeyPackage<frost_secp256k1_evm::Secp256K1Keccak256>,
    ),
}

impl SuiteKeys {
    /// Keys of suite `C`.
    pub fn new<C: SibylSuite>(
        key_package: KeyPackage<C>,
        public_key_package: PublicKeyPackage<C>,
    ) -> Self {
        C::suite_keys(key_package, public_key_package)
    }

    /// The serialized public key package.
    pub fn public_key_package_bytes(&self) -> Vec<u8> {
        match self {
            Self::Ed25519(_, p) => p.serialize().unwrap_or_default(),
            Self::Secp256k1Evm(_, p) => p.serialize().unwrap_or_default(),
        }
    }

    pub fn suite(&self) -> Suite {
        match self {
            Self::Ed25519(..) => Suite::Ed25519,
            Self::Secp256k1Evm(..) => Suite::Secp256k1Evm,
        }
    }
}

/// A FROST ciphersuite Sibyl signs with.
pub trait SibylSuite: Ciphersuite + 'static {
    const SUITE: Suite;

    /// Wraps keys of this suite.
    fn suite_keys(
        key_package: KeyPackage<Self>,
        public_key_package: PublicKeyPackage<Self>,
    ) -> SuiteKeys;

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

    fn suite_keys(
        key_package: KeyPackage<Self>,
        public_key_package: PublicKeyPackage<Self>,
    ) -> SuiteKeys {
        SuiteKeys::Ed25519(key_package, public_key_package)
    }

    fn parse_commitments(bytes: &[u8]) -> Option<SigningCommitments<Self>> {
        fast25519::commitments(bytes)
    }

    fn verify_signature_bytes(key: &VerifyingKey<Self>, msg: &[u8], sig: &[u8]) -> bool {
        fast25519::verify(key, msg, sig)
    }
}

impl SibylSuite for frost_secp256k1_evm::Secp256K1Keccak256 {
    const SUITE: Suite = Suite::Secp256k1Evm;

    fn suite_keys(
        key_package: KeyPackage<Self>,
        public_key_package: PublicKeyPackage<Self>,
    ) -> SuiteKeys {
        SuiteKeys::Secp256k1Evm(key_package, public_key_package)
    }
}
