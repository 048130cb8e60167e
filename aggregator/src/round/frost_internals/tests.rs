//! Differential tests of the frost-dependent pieces against frost itself
//! (the fast25519 ones are in `fast25519`): re-run on every frost upgrade.

use super::*;
use crate::testkit::{dealer_keys, first_signers, signing_run};
use frost_ed25519::Ed25519Sha512 as Ed;
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

/// Packages frost serializes split into exactly their parts, for both
/// suites; any other framing of the same parts is refused.
#[test]
fn signing_packages_split_into_their_parts_and_nothing_else_does() {
    fn check<C: SibylSuite>(seed: u64) {
        let mut rng = ChaCha20Rng::seed_from_u64(seed);
        let keys = dealer_keys::<C, _>(5, 3, &mut rng).unwrap();
        let digest = [0x42u8; 32];
        let run = signing_run(&keys, &first_signers(&keys, 4), &digest, &mut rng).unwrap();
        let bytes_of: Vec<(Vec<u8>, Vec<u8>)> = run
            .package
            .signing_commitments()
            .iter()
            .map(|(id, c)| (id.serialize(), c.serialize().unwrap()))
            .collect();
        let bytes = run.package.serialize().unwrap();
        let clen = bytes_of[0].1.len();
        let parts = split_package::<C>(&bytes, clen).expect("frost's own framing");
        assert_eq!(parts.message, digest.as_slice());
        let got: Vec<(Vec<u8>, Vec<u8>)> = parts
            .signers
            .iter()
            .map(|(i, c)| (i.to_vec(), c.to_vec()))
            .collect();
        assert_eq!(got, bytes_of);
        for (_, c) in &parts.signers {
            assert!(C::parse_commitments(c).is_some());
        }
        // Trailing byte, truncation, wrong commitment length, wrong header.
        let mut long = bytes.clone();
        long.push(0);
        assert!(split_package::<C>(&long, clen).is_none());
        assert!(split_package::<C>(&bytes[..bytes.len() - 1], clen).is_none());
        assert!(split_package::<C>(&bytes, clen + 1).is_none());
        let mut header = bytes.clone();
        header[1] ^= 1;
        assert!(split_package::<C>(&header, clen).is_none());
        // A non-minimal length (k written in two bytes) is refused.
        let hlen = bytes.len() - 1 - 4 * (bytes_of[0].0.len() + clen) - 1 - 32;
        let mut padded = bytes[..hlen].to_vec();
        padded.extend_from_slice(&[bytes[hlen] | 0x80, 0x00]);
        padded.extend_from_slice(&bytes[hlen + 1..]);
        assert!(split_package::<C>(&padded, clen).is_none());
    }
    check::<Ed>(1);
    check::<frost_secp256k1_evm::Secp256K1Keccak256>(2);
}

/// The leader's one-verification aggregation gives frost's signature when
/// every share is good, for both suites, and stands aside otherwise.
#[test]
fn aggregation_with_one_verification_matches_frost() {
    fn check<C: SibylSuite>(seed: u64) {
        let mut rng = ChaCha20Rng::seed_from_u64(seed);
        let keys = dealer_keys::<C, _>(5, 3, &mut rng).unwrap();
        let pkp = &keys.public_key_package;
        let signers = keys.key_packages.keys().skip(1).take(3).copied().collect();
        let run = signing_run(&keys, &signers, &[7u8; 32], &mut rng).unwrap();
        let (package, mut sig_shares) = (run.package, run.shares);
        let expected = frost::aggregate(&package, &sig_shares, pkp).unwrap();
        assert_eq!(
            aggregate_verified(&package, &sig_shares, pkp),
            Some(expected)
        );
        // A share from another package: frost's path must name the cheater.
        let other = SigningPackage::new(package.signing_commitments().clone(), &[8u8; 32]);
        let id = *run.nonces.keys().nth(1).unwrap();
        let share = frost::round2::sign(&other, &run.nonces[&id], &keys.key_packages[&id]).unwrap();
        sig_shares.insert(id, share);
        assert_eq!(aggregate_verified(&package, &sig_shares, pkp), None);
        // A missing share: not this path either.
        sig_shares.remove(&id);
        assert_eq!(aggregate_verified(&package, &sig_shares, pkp), None);
    }
    check::<Ed>(3);
    check::<frost_secp256k1_evm::Secp256K1Keccak256>(4);
}
