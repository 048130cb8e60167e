//! The message FROST signs: a domain-separated Keccak-256 digest of the header.
//!
//! ```text
//! digest = keccak256(abi.encode(keccak256("Sibyl report v1"), uint8 version,
//!                    bytes32 configDigest, uint64 round, uint64 timestampMs,
//!                    bytes32 merkleRoot))
//! ```
//!
//! A Solidity verifier computes the same 32 bytes with one `abi.encode` and
//! one `keccak256`, so the same signature verifies off-chain and on-chain. The
//! domain tag keeps a Sibyl signature from being valid for any other message
//! the group key might sign (observations, evidence, other protocols).

#![warn(missing_docs)]

use crate::encoding::{HEADER_ABI_LEN, WORD, encode_header};
use crate::report::ReportHeader;
use sha3::{Digest, Keccak256};

/// The domain string; its Keccak-256 hash is the first ABI word of the digest preimage.
pub const REPORT_DOMAIN: &[u8] = b"Sibyl report v1";

/// `keccak256("Sibyl report v1")`.
pub fn report_domain_separator() -> [u8; 32] {
    Keccak256::digest(REPORT_DOMAIN).into()
}

/// The preimage of [`header_digest`]: the domain word then `abi.encode(header)`.
pub fn header_digest_preimage(h: &ReportHeader) -> [u8; WORD + HEADER_ABI_LEN] {
    let mut out = [0u8; WORD + HEADER_ABI_LEN];
    out[..WORD].copy_from_slice(&report_domain_separator());
    out[WORD..].copy_from_slice(&encode_header(h));
    out
}

/// The 32 bytes FROST signs for a report with header `h`.
pub fn header_digest(h: &ReportHeader) -> [u8; 32] {
    Keccak256::digest(header_digest_preimage(h)).into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::ConfigDigest;

    fn header() -> ReportHeader {
        ReportHeader {
            version: 1,
            config_digest: ConfigDigest([0x11; 32]),
            round: 42,
            timestamp_ms: 1_700_000_000_000,
            merkle_root: [0x22; 32],
        }
    }

    #[test]
    fn domain_separator_is_keccak_of_tag() {
        // keccak256("Sibyl report v1"), computed independently of this module.
        let expected: [u8; 32] = Keccak256::digest(b"Sibyl report v1").into();
        assert_eq!(report_domain_separator(), expected);
        assert_ne!(report_domain_separator(), [0; 32]);
    }

    #[test]
    fn preimage_is_six_abi_words() {
        let p = header_digest_preimage(&header());
        assert_eq!(p.len(), 192);
        assert_eq!(p[63], 1); // version
        assert_eq!(&p[64..96], &[0x11; 32]);
        assert_eq!(p[127], 42); // round
        assert_eq!(&p[152..160], &1_700_000_000_000u64.to_be_bytes());
        assert_eq!(&p[160..192], &[0x22; 32]);
    }

    #[test]
    fn every_field_changes_the_digest() {
        let base = header_digest(&header());
        let mut h = header();
        h.version = 2;
        assert_ne!(header_digest(&h), base);
        let mut h = header();
        h.config_digest.0[31] ^= 1;
        assert_ne!(header_digest(&h), base);
        let mut h = header();
        h.round += 1;
        assert_ne!(header_digest(&h), base);
        let mut h = header();
        h.timestamp_ms += 1;
        assert_ne!(header_digest(&h), base);
        let mut h = header();
        h.merkle_root[0] ^= 1;
        assert_ne!(header_digest(&h), base);
    }
}
