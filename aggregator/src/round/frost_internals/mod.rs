//! Everything in the round that depends on how frost lays out its data or
//! on its internals: the Ed25519 fast paths (`fast25519`), the
//! signing-package framing (`split_package`) and `aggregate_verified`. On a
//! frost upgrade this module, and its differential tests against frost, is
//! the one place to re-check.

pub(crate) mod fast25519;
#[cfg(test)]
mod tests;

use super::SibylSuite;
use frost_core::{
    self as frost, Ciphersuite, Identifier, SigningPackage, keys::PublicKeyPackage,
    round2::SignatureShare,
};
use std::collections::BTreeMap;

/// A serialized `SigningPackage` taken apart without parsing a point: frost
/// writes header ‖ varint(k) ‖ k × (identifier ‖ serialized commitments) ‖
/// varint(message length) ‖ message, the identifiers ascending.
pub(crate) struct PackageParts<'a> {
    pub(crate) signers: Vec<(&'a [u8], &'a [u8])>,
    pub(crate) message: &'a [u8],
}

/// Splits `bytes` as [`PackageParts`], each commitment `commitment_len`
/// bytes long; `None` unless the bytes are exactly that framing with frost's
/// header for `C` (so the package frost would write for these parts).
pub(crate) fn split_package<C: Ciphersuite>(
    bytes: &[u8],
    commitment_len: usize,
) -> Option<PackageParts<'_>> {
    // The header: what frost writes before an empty package's two lengths.
    let empty = SigningPackage::<C>::new(BTreeMap::new(), &[])
        .serialize()
        .ok()?;
    let header = empty.get(..empty.len().checked_sub(2)?)?;
    let id_len = Identifier::<C>::try_from(1u16).ok()?.serialize().len();
    let mut rest = bytes.strip_prefix(header)?;
    let k = read_varint(&mut rest)?;
    let entry = id_len + commitment_len;
    if rest.len() < k.checked_mul(entry)? {
        return None;
    }
    let mut signers = Vec::with_capacity(k);
    for _ in 0..k {
        let (e, tail) = rest.split_at(entry);
        signers.push(e.split_at(id_len));
        rest = tail;
    }
    let len = read_varint(&mut rest)?;
    (rest.len() == len).then_some(PackageParts {
        signers,
        message: rest,
    })
}

/// A postcard (LEB128) length, canonical and at most `u32`.
fn read_varint(bytes: &mut &[u8]) -> Option<usize> {
    let mut value: u64 = 0;
    for i in 0..5 {
        let (&b, rest) = bytes.split_first()?;
        *bytes = rest;
        value |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            if i > 0 && b == 0 {
                return None; // a longer encoding than needed
            }
            return usize::try_from(u32::try_from(value).ok()?).ok();
        }
    }
    None
}

/// The signature the shares add up to, if it verifies under the group key
/// ([`SibylSuite::verify_signature_bytes`]): what `frost::aggregate` returns
/// when every share is good (neither ciphersuite changes its aggregation
/// hooks). `None` otherwise, and the caller lets frost find the cheaters.
pub(crate) fn aggregate_verified<C: SibylSuite>(
    package: &SigningPackage<C>,
    shares: &BTreeMap<Identifier<C>, SignatureShare<C>>,
    pubkeys: &PublicKeyPackage<C>,
) -> Option<frost::Signature<C>> {
    if !package.signing_commitments().keys().eq(shares.keys()) {
        return None;
    }
    let factors = frost::compute_binding_factor_list(package, pubkeys.verifying_key(), &[]).ok()?;
    let r = frost::compute_group_commitment(package, &factors).ok()?;
    type F<C> = <<C as Ciphersuite>::Group as frost::Group>::Field;
    let mut z = <F<C> as frost::Field>::zero();
    for share in shares.values() {
        // A share is its scalar's serialization.
        let mut buf = <F<C> as frost::Field>::serialize(&z);
        let bytes = share.serialize();
        if buf.as_ref().len() != bytes.len() {
            return None;
        }
        buf.as_mut().copy_from_slice(&bytes);
        z = z + <F<C> as frost::Field>::deserialize(&buf).ok()?;
    }
    let sig = frost::Signature::new(r.to_element(), z);
    let bytes = sig.serialize().ok()?;
    C::verify_signature_bytes(pubkeys.verifying_key(), package.message(), &bytes).then_some(sig)
}
