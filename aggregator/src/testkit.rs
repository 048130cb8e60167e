//! Deterministic fixtures for tests, test vectors and benchmarks: sample
//! leaves, trusted-dealer FROST keys and a real t-of-n signing run.
//!
//! Nothing here is for production keys: the trusted dealer sees the whole
//! secret. Randomness comes in as an argument (a seeded ChaCha in tests), so
//! every fixture is reproducible byte for byte.

use crate::digest::header_digest;
use crate::merkle;
use crate::report::{
    ConfigDigest, FeedId, PROTOCOL_VERSION, ReportHeader, ReportLeaf, SignatureBytes, SignedReport,
    Suite,
};
use crate::verify::GroupKeys;
use frost_core::keys::{IdentifierList, KeyPackage, PublicKeyPackage};
use frost_core::round1::SigningNonces;
use frost_core::round2::SignatureShare;
use frost_core::{Ciphersuite, Identifier, Signature, SigningPackage};
use rand_core::{CryptoRng, RngCore};
use std::collections::{BTreeMap, BTreeSet};

/// A committee's keys from a trusted dealer.
pub struct DealerKeys<C: Ciphersuite> {
    pub key_packages: BTreeMap<Identifier<C>, KeyPackage<C>>,
    pub public_key_package: PublicKeyPackage<C>,
}

/// Trusted-dealer keygen for `n` members with threshold `t` (identifiers 1..=n).
pub fn dealer_keys<C: Ciphersuite, R: RngCore + CryptoRng>(
    n: u16,
    t: u16,
    rng: &mut R,
) -> Result<DealerKeys<C>, frost_core::Error<C>> {
    let (shares, public_key_package) =
        frost_core::keys::generate_with_dealer(n, t, IdentifierList::Default, rng)?;
    let key_packages = shares
        .into_iter()
        .map(|(id, share)| Ok((id, KeyPackage::try_from(share)?)))
        .collect::<Result<_, frost_core::Error<C>>>()?;
    Ok(DealerKeys {
        key_packages,
        public_key_package,
    })
}

/// The parts of a FROST signing run before aggregation: the signing
/// package, each signer's (used) nonces and its signature share.
pub struct SigningRun<C: Ciphersuite> {
    pub package: SigningPackage<C>,
    pub nonces: BTreeMap<Identifier<C>, SigningNonces<C>>,
    pub shares: BTreeMap<Identifier<C>, SignatureShare<C>>,
}

/// Round 1 commitments and round 2 shares by the members with the given
/// identifiers over `msg`.
pub fn signing_run<C: Ciphersuite, R: RngCore + CryptoRng>(
    keys: &DealerKeys<C>,
    signers: &BTreeSet<Identifier<C>>,
    msg: &[u8],
    rng: &mut R,
) -> Result<SigningRun<C>, frost_core::Error<C>> {
    let mut nonces = BTreeMap::new();
    let mut commitments = BTreeMap::new();
    for id in signers {
        let kp = keys
            .key_packages
            .get(id)
            .ok_or(frost_core::Error::UnknownIdentifier)?;
        let (n, c) = frost_core::round1::commit(kp.signing_share(), rng);
        nonces.insert(*id, n);
        commitments.insert(*id, c);
    }
    let package = SigningPackage::new(commitments, msg);
    let mut shares = BTreeMap::new();
    for (id, n) in &nonces {
        let kp = &keys.key_packages[id];
        shares.insert(*id, frost_core::round2::sign(&package, n, kp)?);
    }
    Ok(SigningRun {
        package,
        nonces,
        shares,
    })
}

/// A full FROST signing run (round 1 commitments, round 2 shares, aggregate)
/// by the members with the given identifiers over `msg`.
pub fn threshold_sign<C: Ciphersuite, R: RngCore + CryptoRng>(
    keys: &DealerKeys<C>,
    signers: &BTreeSet<Identifier<C>>,
    msg: &[u8],
    rng: &mut R,
) -> Result<Signature<C>, frost_core::Error<C>> {
    let run = signing_run(keys, signers, msg, rng)?;
    frost_core::aggregate(&run.package, &run.shares, &keys.public_key_package)
}

/// The first `t` members' identifiers.
pub fn first_signers<C: Ciphersuite>(keys: &DealerKeys<C>, t: usize) -> BTreeSet<Identifier<C>> {
    keys.key_packages.keys().take(t).copied().collect()
}

/// `n` leaves with distinct, sorted feed ids and varied values (negative
/// prices, zero and large confidence) so encodings exercise every word.
pub fn sample_leaves(n: usize) -> Vec<ReportLeaf> {
    let mut leaves: Vec<ReportLeaf> = (0..n)
        .map(|i| {
            let i64_ = i as i64;
            ReportLeaf {
                feed_id: FeedId::new(format!("FEED-{i:05}")).expect("valid generated feed id"),
                price: if i % 7 == 3 {
                    -(i64_ as i128) * 1_000_003
                } else {
                    (i64_ as i128 + 1) * 6_543_210_987_654_321
                },
                confidence: (i as u128) * 12_345 + if i % 5 == 0 { u64::MAX as u128 } else { 0 },
                num_observations: 3 + (i % 29) as u16,
                observed_at_ms: 1_760_000_000_000 + i as u64 * 17,
                bid: (i64_ as i128) * 1_000 - 1,
                ask: (i64_ as i128) * 1_000 + 1,
                venues: (i % 13) as u16,
                status: crate::report::LeafStatus::from_u8((i % 5) as u8).unwrap_or_default(),
                flags: (i as u16 * 37) & crate::report::flags::ALL,
                ema: (i64_ as i128 + 1) * 6_543_210_987_654_000,
                ema_confidence: (i as u128) * 9_999,
                volatility: i as u64 * 1_234_567,
            }
        })
        .collect();
    leaves.sort_by(|a, b| a.feed_id.cmp(&b.feed_id));
    leaves
}

/// A header over `leaves` (root computed) for the given round.
pub fn header_for(config_digest: ConfigDigest, round: u64, leaves: &[ReportLeaf]) -> ReportHeader {
    ReportHeader {
        version: PROTOCOL_VERSION,
        config_digest,
        round,
        timestamp_ms: 1_760_000_001_000 + round * 1_000,
        merkle_root: merkle::root(leaves),
        margin_root: [0; 32],
    }
}

/// A report signed with both suites, and the keys that verify it.
pub struct Fixture {
    pub report: SignedReport,
    pub keys: GroupKeys,
    pub ed25519: DealerKeys<frost_ed25519::Ed25519Sha512>,
    pub secp256k1_evm: DealerKeys<frost_secp256k1_evm::Secp256K1Keccak256>,
}

/// Config digest used by fixtures.
pub const FIXTURE_CONFIG_DIGEST: ConfigDigest = ConfigDigest([0x5b; 32]);

/// A 3-of-4 committee signing a report of `n_leaves` sample leaves with both suites.
pub fn fixture<R: RngCore + CryptoRng>(n_leaves: usize, rng: &mut R) -> Fixture {
    fixture_with_commands(n_leaves, Vec::new(), rng)
}

/// Two sample margin commands, in report order.
pub fn sample_commands() -> Vec<crate::report::MarginCommand> {
    vec![
        crate::report::MarginCommand {
            origin: 1,
            nonce: 1_760_000_000_000_000,
            body: r#"{"Deposit":{"account":7,"asset":"USD","amount":1000000000}}"#.into(),
        },
        crate::report::MarginCommand {
            origin: 3,
            nonce: 1_760_000_000_500_000,
            body: r#"{"Withdraw":{"account":7,"asset":"USD","amount":5000000}}"#.into(),
        },
    ]
}

/// [`fixture`] whose report orders `commands` (its margin root is theirs).
pub fn fixture_with_commands<R: RngCore + CryptoRng>(
    n_leaves: usize,
    commands: Vec<crate::report::MarginCommand>,
    rng: &mut R,
) -> Fixture {
    fixture_with_margin(n_leaves, commands, None, rng)
}

/// [`fixture`] whose report orders `commands` and carries `state`.
pub fn fixture_with_margin<R: RngCore + CryptoRng>(
    n_leaves: usize,
    commands: Vec<crate::report::MarginCommand>,
    state: Option<crate::report::MarginCheckpoint>,
    rng: &mut R,
) -> Fixture {
    let ed = dealer_keys::<frost_ed25519::Ed25519Sha512, _>(4, 3, rng).expect("valid 3-of-4");
    let evm =
        dealer_keys::<frost_secp256k1_evm::Secp256K1Keccak256, _>(4, 3, rng).expect("valid 3-of-4");
    let leaves = sample_leaves(n_leaves);
    let mut header = header_for(FIXTURE_CONFIG_DIGEST, 7, &leaves);
    header.margin_root = crate::digest::margin_root(&commands, state.as_ref());
    let digest = header_digest(&header);
    let sig_ed = threshold_sign(&ed, &first_signers(&ed, 3), &digest, rng)
        .and_then(|s| s.serialize())
        .expect("honest signing succeeds");
    let sig_evm = threshold_sign(&evm, &first_signers(&evm, 3), &digest, rng)
        .and_then(|s| s.serialize())
        .expect("honest signing succeeds");
    let keys = GroupKeys::new(FIXTURE_CONFIG_DIGEST)
        .with_ed25519(*ed.public_key_package.verifying_key())
        .with_secp256k1_evm(*evm.public_key_package.verifying_key());
    let signatures = [
        (Suite::Ed25519, SignatureBytes(sig_ed)),
        (Suite::Secp256k1Evm, SignatureBytes(sig_evm)),
    ]
    .into_iter()
    .collect();
    Fixture {
        report: SignedReport {
            header,
            leaves,
            signatures,
            commands,
            margin_state: state,
        },
        keys,
        ed25519: ed,
        secp256k1_evm: evm,
    }
}
