//! Accountability: misbehaviour the protocol can prove with the culprit's own
//! signed messages. Anyone holding the committee (and, for shares, the public
//! key package) can check an [`Evidence`] without trusting whoever reported it.

use crate::report::Suite;
use crate::round::committee::Committee;
use crate::round::message::{Payload, SignedMessage};
use frost_core::{Ciphersuite, Identifier, SigningPackage, keys::PublicKeyPackage};
use serde::{Deserialize, Serialize};

/// A provable misbehaviour record. Every variant carries complete signed
/// messages exactly as the culprit sent them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Evidence {
    /// Two different signed observations from one member for one round.
    ConflictingObservations {
        #[serde(with = "hex::serde")]
        first: Vec<u8>,
        #[serde(with = "hex::serde")]
        second: Vec<u8>,
    },
    /// Two signed proposals of one round's leader for different reports.
    EquivocatingProposals {
        #[serde(with = "hex::serde")]
        first: Vec<u8>,
        #[serde(with = "hex::serde")]
        second: Vec<u8>,
    },
    /// A signed share message whose share does not verify for the signing
    /// package it names (by hash) under the committee's public key package.
    InvalidShare {
        suite: Suite,
        #[serde(with = "hex::serde")]
        share: Vec<u8>,
        #[serde(with = "hex::serde")]
        signing_package: Vec<u8>,
        #[serde(with = "hex::serde")]
        public_key_package: Vec<u8>,
    },
}

/// Why evidence does not prove misbehaviour.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EvidenceError {
    #[error("evidence message {which} is not a valid signed committee message: {reason}")]
    BadMessage { which: &'static str, reason: String },
    #[error("evidence message {which} is a {got} message, expected {expected}")]
    WrongKind {
        which: &'static str,
        got: &'static str,
        expected: &'static str,
    },
    #[error("the two messages come from different senders or rounds")]
    NotSameSenderRound,
    #[error("the two messages are the same; that is no conflict")]
    Identical,
    #[error("the evidence was made for suite {got:?}, checked as {expected}")]
    WrongSuite { got: Suite, expected: &'static str },
    #[error("the evidence's public key package is not the committee's")]
    WrongKeys,
    #[error("the signing package does not match the hash or digest the share names")]
    PackageMismatch,
    #[error("the evidence's {0} does not decode")]
    Undecodable(&'static str),
    #[error("the share verifies: no misbehaviour")]
    ShareValid,
}

fn kind_name(p: &Payload) -> &'static str {
    match p {
        Payload::Observation(_) => "observation",
        Payload::Proposal(_) => "proposal",
        Payload::Share(_) => "share",
        Payload::Report(_) => "report",
        Payload::Refusal(_) => "refusal",
        Payload::Offers(_) => "offers",
    }
}

fn decode(
    bytes: &[u8],
    committee: &Committee,
    which: &'static str,
) -> Result<SignedMessage, EvidenceError> {
    SignedMessage::decode(bytes, committee).map_err(|e| EvidenceError::BadMessage {
        which,
        reason: e.to_string(),
    })
}

fn expect(
    m: &SignedMessage,
    which: &'static str,
    expected: &'static str,
) -> Result<(), EvidenceError> {
    let got = kind_name(&m.payload);
    if got != expected {
        return Err(EvidenceError::WrongKind {
            which,
            got,
            expected,
        });
    }
    Ok(())
}

impl Evidence {
    /// Checks the evidence and returns the culprit's member index. `pubkeys`
    /// is the committee's public key package as the verifier knows it (used by
    /// [`Evidence::InvalidShare`] only; the other kinds need just the committee).
    pub fn verify<C: crate::round::SibylSuite>(
        &self,
        committee: &Committee,
        pubkeys: &PublicKeyPackage<C>,
    ) -> Result<u16, EvidenceError> {
        match self {
            Evidence::ConflictingObservations { first, second }
            | Evidence::EquivocatingProposals { first, second } => {
                let expected = match self {
                    Evidence::ConflictingObservations { .. } => "observation",
                    _ => "proposal",
                };
                let a = decode(first, committee, "first")?;
                let b = decode(second, committee, "second")?;
                expect(&a, "first", expected)?;
                expect(&b, "second", expected)?;
                if a.sender != b.sender || a.round != b.round {
                    return Err(EvidenceError::NotSameSenderRound);
                }
                if expected == "proposal" {
                    // Whoever sent them: the leader schedule depends on each
                    // member's view of the signed history, but no honest
                    // member proposes two different reports for one round.
                    // Retries of one report differ only in attempt and package;
                    // equivocation means a different report (timestamp or root).
                    let (Payload::Proposal(pa), Payload::Proposal(pb)) = (&a.payload, &b.payload)
                    else {
                        return Err(EvidenceError::Identical);
                    };
                    if pa.timestamp_ms == pb.timestamp_ms && pa.merkle_root == pb.merkle_root {
                        return Err(EvidenceError::Identical);
                    }
                } else if a.content() == b.content() {
                    return Err(EvidenceError::Identical);
                }
                Ok(a.sender)
            }
            Evidence::InvalidShare {
                suite,
                share,
                signing_package,
                public_key_package,
            } => {
                if *suite != C::SUITE {
                    return Err(EvidenceError::WrongSuite {
                        got: *suite,
                        expected: C::ID,
                    });
                }
                let m = decode(share, committee, "share")?;
                expect(&m, "share", "share")?;
                let Payload::Share(s) = &m.payload else {
                    return Err(EvidenceError::Undecodable("share"));
                };
                let included = PublicKeyPackage::<C>::deserialize(public_key_package)
                    .map_err(|_| EvidenceError::Undecodable("public key package"))?;
                if included != *pubkeys {
                    return Err(EvidenceError::WrongKeys);
                }
                // The share of the evidence's suite (one per suite the
                // committee signs with).
                let Some(entry) = s.shares.iter().find(|e| e.suite == *suite) else {
                    return Err(EvidenceError::PackageMismatch);
                };
                if keccak(signing_package) != entry.package_hash {
                    return Err(EvidenceError::PackageMismatch);
                }
                let package = SigningPackage::<C>::deserialize(signing_package)
                    .map_err(|_| EvidenceError::Undecodable("signing package"))?;
                if package.message().as_slice() != s.report_digest.as_slice() {
                    return Err(EvidenceError::PackageMismatch);
                }
                let id = Identifier::<C>::try_from(m.sender)
                    .map_err(|_| EvidenceError::Undecodable("identifier"))?;
                if package.signing_commitment(&id).is_none() {
                    return Err(EvidenceError::PackageMismatch);
                }
                let Ok(sig_share) =
                    frost_core::round2::SignatureShare::<C>::deserialize(&entry.share)
                else {
                    // An unparseable share is invalid by itself.
                    return Ok(m.sender);
                };
                let Some(verifying_share) = pubkeys.verifying_shares().get(&id) else {
                    return Err(EvidenceError::WrongKeys);
                };
                match frost_core::verify_signature_share(
                    id,
                    verifying_share,
                    &sig_share,
                    &package,
                    pubkeys.verifying_key(),
                ) {
                    Ok(()) => Err(EvidenceError::ShareValid),
                    Err(_) => Ok(m.sender),
                }
            }
        }
    }

    /// The kind as a short name (for logs and metrics).
    pub fn kind(&self) -> &'static str {
        match self {
            Evidence::ConflictingObservations { .. } => "conflicting_observations",
            Evidence::EquivocatingProposals { .. } => "equivocating_proposals",
            Evidence::InvalidShare { .. } => "invalid_share",
        }
    }
}

fn keccak(bytes: &[u8]) -> [u8; 32] {
    use sha3::{Digest, Keccak256};
    Keccak256::digest(bytes).into()
}

// Keep the trait in scope for `C::ID` above.
#[allow(unused_imports)]
use Ciphersuite as _;
