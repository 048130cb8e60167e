//! Variable-time checks for FROST(Ed25519, SHA-512) that answer exactly as
//! frost's own, for public inputs only.
//!
//! frost-ed25519 checks every point it parses for the prime-order subgroup
//! with a constant-time scalar multiplication, and verifies a signature with
//! three more. Commitments and signatures are public, so nothing is gained by
//! constant time there, and on the critical path of a round every signer
//! parses all the signers' commitments and every member verifies the report.
//! These functions accept exactly the inputs frost accepts (tested against
//! frost on valid, tampered, small-order, mixed-order, non-canonical and
//! random inputs), except that commitments with trailing bytes are refused,
//! for a fraction of the cost.

use curve25519_dalek::edwards::{CompressedEdwardsY, EdwardsPoint};
use curve25519_dalek::scalar::Scalar;
use curve25519_dalek::traits::IsIdentity;
use frost_core::round1::{NonceCommitment, SigningCommitments};
use frost_core::{Ciphersuite, VerifyingKey};
use frost_ed25519::Ed25519Sha512;

/// A point as frost-ed25519's `Group::deserialize` takes it: a valid
/// encoding, not the identity, in the prime-order subgroup. The subgroup test
/// is `[ℓ]P = 0`, computed as `[ℓ - 1]P + P` with ℓ - 1 (a reduced scalar) in
/// variable time. Non-canonical encodings decode to small- or mixed-order
/// points (or to nothing), so the subgroup test refuses them as frost's does.
pub(crate) fn point(bytes: &[u8; 32]) -> Option<EdwardsPoint> {
    let p = CompressedEdwardsY(*bytes).decompress()?;
    if p.is_identity() {
        return None;
    }
    let l_minus_one = -Scalar::ONE;
    let l_p =
        EdwardsPoint::vartime_double_scalar_mul_basepoint(&l_minus_one, &p, &Scalar::ZERO) + p;
    l_p.is_identity().then_some(p)
}

/// The serialization header of this suite's commitments (`SigningCommitments`
/// serialize as header ‖ hiding ‖ binding).
fn header() -> &'static [u8] {
    static HEADER: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    HEADER.get_or_init(|| {
        let g = curve25519_dalek::constants::ED25519_BASEPOINT_POINT;
        let c = SigningCommitments::<Ed25519Sha512>::new(
            NonceCommitment::new(g),
            NonceCommitment::new(g),
        );
        let mut bytes = c.serialize().unwrap_or_default();
        bytes.truncate(bytes.len().saturating_sub(64));
        bytes
    })
}

/// `SigningCommitments::deserialize`, with the subgroup test above, except
/// that bytes after the two points are refused (frost ignores them).
pub(crate) fn commitments(bytes: &[u8]) -> Option<SigningCommitments<Ed25519Sha512>> {
    let header = header();
    if header.is_empty() || bytes.len() != header.len() + 64 || !bytes.starts_with(header) {
        return None;
    }
    let body = &bytes[header.len()..];
    let hiding = point(body[..32].try_into().ok()?)?;
    let binding = point(body[32..].try_into().ok()?)?;
    Some(SigningCommitments::new(
        NonceCommitment::new(hiding),
        NonceCommitment::new(binding),
    ))
}

/// `Signature::deserialize` then `VerifyingKey::verify`: frost refuses an `R`
/// outside the prime-order subgroup (or the identity) and a non-canonical
/// `z`, then checks `[8]([z]B - [c]A - R) = 0`. With `R` and `A` in the
/// subgroup that is the same as `[z]B - [c]A = R`, which is one
/// variable-time double-base multiplication and also refuses any `R` with a
/// torsion part; so only the identity and the encoding need their own test.
pub(crate) fn verify(key: &VerifyingKey<Ed25519Sha512>, msg: &[u8], sig: &[u8]) -> bool {
    let (Ok(r_bytes), Ok(z_bytes)) = (
        <[u8; 32]>::try_from(sig.get(..32).unwrap_or_default()),
        <[u8; 32]>::try_from(sig.get(32..).unwrap_or_default()),
    ) else {
        return false;
    };
    let Some(z) = Option::<Scalar>::from(Scalar::from_canonical_bytes(z_bytes)) else {
        return false;
    };
    let Some(r) = CompressedEdwardsY(r_bytes).decompress() else {
        return false;
    };
    if r.is_identity() {
        return false;
    }
    // The key's point as frost holds it (no second decompression); its
    // encoding for the challenge.
    let a = key.to_element();
    let Ok(key_bytes) = key.serialize() else {
        return false;
    };
    // frost hashes the canonical encoding of R. Every non-canonical encoding
    // decodes to a point outside the prime-order subgroup, which the equation
    // below refuses, so hashing the bytes as given changes no answer.
    let mut preimage = Vec::with_capacity(64 + msg.len());
    preimage.extend_from_slice(&r_bytes);
    preimage.extend_from_slice(&key_bytes);
    preimage.extend_from_slice(msg);
    let c = <Ed25519Sha512 as Ciphersuite>::H2(&preimage);
    let zb_minus_ca = EdwardsPoint::vartime_double_scalar_mul_basepoint(&c, &-a, &z);
    zb_minus_ca == r
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::{dealer_keys, first_signers, threshold_sign};
    use curve25519_dalek::constants::{ED25519_BASEPOINT_POINT, EIGHT_TORSION};
    use curve25519_dalek::traits::Identity;
    use frost_core::Group;
    use frost_ed25519 as frost;
    use proptest::prelude::*;
    use rand_chacha::ChaCha20Rng;
    use rand_core::SeedableRng;

    fn frost_point(bytes: &[u8; 32]) -> Option<EdwardsPoint> {
        frost::Ed25519Group::deserialize(bytes).ok()
    }

    /// Every y < 2^255 with its sign bit, that is not canonical (y >= p):
    /// the 19 values p..p+18 and both signs.
    fn non_canonical_encodings() -> Vec<[u8; 32]> {
        let mut out = Vec::new();
        for k in 0u8..19 {
            // p = 2^255 - 19; p + k little-endian, then with the sign bit.
            let mut b = [0xffu8; 32];
            b[0] = 0xed + k;
            b[31] = 0x7f;
            out.push(b);
            b[31] = 0xff;
            out.push(b);
        }
        out
    }

    #[test]
    fn points_are_accepted_exactly_as_frost_accepts_them() {
        let mut rng = ChaCha20Rng::seed_from_u64(7);
        let mut cases: Vec<([u8; 32], Option<bool>)> = Vec::new();
        for i in 0..64u64 {
            let p = ED25519_BASEPOINT_POINT * Scalar::from(i * 7919 + 3);
            for (k, t) in EIGHT_TORSION.iter().enumerate() {
                // k = 0 adds the identity: prime order; otherwise mixed order.
                cases.push(((p + t).compress().to_bytes(), Some(k == 0)));
            }
            let mut random = [0u8; 32];
            rand_core::RngCore::fill_bytes(&mut rng, &mut random);
            cases.push((random, None));
        }
        for t in EIGHT_TORSION.iter() {
            cases.push((t.compress().to_bytes(), Some(false))); // small order, the identity too
        }
        for e in non_canonical_encodings() {
            cases.push((e, Some(false)));
        }
        for (c, expected) in &cases {
            let ours = point(c);
            assert_eq!(ours, frost_point(c), "encoding {}", hex::encode(c));
            if let Some(expected) = expected {
                assert_eq!(ours.is_some(), *expected, "encoding {}", hex::encode(c));
            }
        }
    }

    fn signed(msg: &[u8], seed: u64) -> (frost::keys::PublicKeyPackage, Vec<u8>) {
        let mut rng = ChaCha20Rng::seed_from_u64(seed);
        let keys = dealer_keys::<Ed25519Sha512, _>(4, 3, &mut rng).unwrap();
        let sig = threshold_sign(&keys, &first_signers(&keys, 3), msg, &mut rng).unwrap();
        (keys.public_key_package, sig.serialize().unwrap())
    }

    fn frost_verify(key: &VerifyingKey<Ed25519Sha512>, msg: &[u8], sig: &[u8]) -> bool {
        frost::Signature::deserialize(sig).is_ok_and(|s| key.verify(msg, &s).is_ok())
    }

    #[test]
    fn signatures_verify_exactly_as_frost_verifies_them() {
        let msg = [0x5au8; 32];
        let (pkp, sig) = signed(&msg, 1);
        let key = pkp.verifying_key();
        assert!(verify(key, &msg, &sig));
        assert!(frost_verify(key, &msg, &sig));
        let r = CompressedEdwardsY(sig[..32].try_into().unwrap())
            .decompress()
            .unwrap();
        let mut variants: Vec<(Vec<u8>, Vec<u8>)> = vec![(msg.to_vec(), sig.clone())];
        // R with each torsion part added: frost refuses R outside the subgroup.
        for t in EIGHT_TORSION.iter() {
            let mut s = sig.clone();
            s[..32].copy_from_slice((r + t).compress().as_bytes());
            variants.push((msg.to_vec(), s));
        }
        // z + ℓ (non-canonical), z + 1, flipped bits everywhere, other message, short.
        let z = Scalar::from_canonical_bytes(sig[32..].try_into().unwrap()).unwrap();
        let mut s = sig.clone();
        s[32..].copy_from_slice((z + Scalar::ONE).as_bytes());
        variants.push((msg.to_vec(), s));
        // ℓ = 2^252 + 27742317777372353535851937790883648493, little-endian.
        let l: [u8; 32] =
            hex::decode("edd3f55c1a631258d69cf7a2def9de1400000000000000000000000000000010")
                .unwrap()
                .try_into()
                .unwrap();
        let mut unreduced = [0u8; 32];
        let mut carry = 0u16;
        for i in 0..32 {
            let v = u16::from(sig[32 + i]) + u16::from(l[i]) + carry;
            unreduced[i] = v as u8;
            carry = v >> 8;
        }
        let mut s = sig.clone();
        s[32..].copy_from_slice(&unreduced);
        variants.push((msg.to_vec(), s));
        for bit in (0..512).step_by(7) {
            let mut s = sig.clone();
            s[bit / 8] ^= 1 << (bit % 8);
            variants.push((msg.to_vec(), s));
        }
        variants.push((b"another".to_vec(), sig.clone()));
        variants.push((msg.to_vec(), sig[..63].to_vec()));
        variants.push((msg.to_vec(), [0u8; 64].to_vec()));
        for enc in non_canonical_encodings() {
            let mut s = sig.clone();
            s[..32].copy_from_slice(&enc);
            variants.push((msg.to_vec(), s));
        }
        let mut valid = 0;
        for (m, s) in &variants {
            let ours = verify(key, m, s);
            assert_eq!(
                ours,
                frost_verify(key, m, s),
                "sig {} msg {}",
                hex::encode(s),
                hex::encode(m)
            );
            valid += usize::from(ours);
        }
        assert_eq!(
            valid, 2,
            "the signature and R + the identity torsion point (itself)"
        );
        // Another committee's key refuses it.
        let (other, _) = signed(&msg, 2);
        assert!(!verify(other.verifying_key(), &msg, &sig));
        assert!(!frost_verify(other.verifying_key(), &msg, &sig));
    }

    #[test]
    fn commitments_parse_exactly_as_frost_parses_them() {
        let mut rng = ChaCha20Rng::seed_from_u64(3);
        let keys = dealer_keys::<Ed25519Sha512, _>(3, 2, &mut rng).unwrap();
        let share = keys.key_packages.values().next().unwrap();
        let (_, c) = frost::round1::commit(share.signing_share(), &mut rng);
        let bytes = c.serialize().unwrap();
        assert_eq!(commitments(&bytes), Some(c));
        let frost_parse = |b: &[u8]| frost::round1::SigningCommitments::deserialize(b).ok();
        // frost ignores bytes after the commitments; these are refused (an
        // honest member never sends them, and a package's framing needs the
        // exact length).
        let mut long = bytes.clone();
        long.push(0);
        assert!(frost_parse(&long).is_some());
        assert_eq!(commitments(&long), None);
        let mut variants = vec![bytes.clone(), bytes[..bytes.len() - 1].to_vec()];
        for i in 0..bytes.len() {
            let mut b = bytes.clone();
            b[i] ^= 0x01;
            variants.push(b);
        }
        let n = bytes.len();
        let hiding = CompressedEdwardsY(bytes[n - 64..n - 32].try_into().unwrap())
            .decompress()
            .unwrap();
        let mut b = bytes.clone();
        b[n - 64..n - 32].copy_from_slice((hiding + EIGHT_TORSION[1]).compress().as_bytes());
        variants.push(b);
        let mut b = bytes.clone();
        b[n - 32..].copy_from_slice(EdwardsPoint::identity().compress().as_bytes());
        variants.push(b);
        for v in &variants {
            assert_eq!(commitments(v), frost_parse(v), "bytes {}", hex::encode(v));
        }
    }

    proptest! {
        #[test]
        fn random_points_and_signatures_agree_with_frost(bytes in any::<[u8; 32]>(), sig in proptest::collection::vec(any::<u8>(), 64)) {
            prop_assert_eq!(point(&bytes), frost_point(&bytes));
            let (pkp, _) = signed(b"m", 9);
            prop_assert_eq!(verify(pkp.verifying_key(), b"m", &sig), frost_verify(pkp.verifying_key(), b"m", &sig));
        }
    }
}
