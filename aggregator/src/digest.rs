//! The message FROST signs: a domain-separated Keccak-256 digest of the header.
//!
//! ```text
//! digest = keccak256(abi.encode(keccak256("Sibyl report v1"), uint8 version,
//!                    bytes32 configDigest, uint64 round, uint64 timestampMs,
//!                    bytes32 merkleRoot, bytes32 marginRoot))
//!
//! commandsRoot = 0                                     (no commands)
//!              = keccak256("Sibyl margin commands v1" ‖ for each command in order:
//!                          u16 origin ‖ u64 nonce ‖ u32 len ‖ body)   (big-endian)
//! marginRoot   = commandsRoot                          (no state root carried)
//!              = keccak256("Sibyl margin state v1" ‖ commandsRoot ‖ u64 round ‖ stateRoot)
//! ```
//!
//! A Solidity verifier computes the same 32 bytes with one `abi.encode` and
//! one `keccak256`, so the same signature verifies off-chain and on-chain. The
//! domain tag keeps a Sibyl signature from being valid for any other message
//! the group key might sign (observations, evidence, other protocols).

#![warn(missing_docs)]

use crate::encoding::{HEADER_ABI_LEN, WORD, encode_header};
use crate::report::{MarginCheckpoint, MarginCommand, ReportHeader};
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

/// Domain of [`commands_root`].
pub const COMMANDS_DOMAIN: &[u8] = b"Sibyl margin commands v1";

/// The header's `margin_root` for a round that orders `commands` (in report
/// order): all zero for none, else the domain-separated Keccak-256 of each
/// command's origin, nonce, body length and body.
pub fn commands_root(commands: &[MarginCommand]) -> [u8; 32] {
    if commands.is_empty() {
        return [0; 32];
    }
    let mut h = Keccak256::new();
    h.update(COMMANDS_DOMAIN);
    for c in commands {
        h.update(c.origin.to_be_bytes());
        h.update(c.nonce.to_be_bytes());
        // A body is at most MAX_COMMAND_BYTES, so its length fits a u32.
        h.update(
            u32::try_from(c.body.len())
                .unwrap_or(u32::MAX)
                .to_be_bytes(),
        );
        h.update(c.body.as_bytes());
    }
    h.finalize().into()
}

/// Domain of [`margin_root`] with a state root.
pub const MARGIN_STATE_DOMAIN: &[u8] = b"Sibyl margin state v1";

/// The header's `margin_root`: [`commands_root`] of the round's commands,
/// bound with the engine state root the report carries, if any.
pub fn margin_root(commands: &[MarginCommand], state: Option<&MarginCheckpoint>) -> [u8; 32] {
    let commands = commands_root(commands);
    let Some(state) = state else {
        return commands;
    };
    let mut h = Keccak256::new();
    h.update(MARGIN_STATE_DOMAIN);
    h.update(commands);
    h.update(state.round.to_be_bytes());
    h.update(state.root);
    h.finalize().into()
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
            margin_root: [0x33; 32],
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
    fn preimage_is_seven_abi_words() {
        let p = header_digest_preimage(&header());
        assert_eq!(p.len(), 224);
        assert_eq!(&p[192..224], &[0x33; 32]);
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
        let mut h = header();
        h.margin_root[31] ^= 1;
        assert_ne!(header_digest(&h), base);
    }

    fn command(origin: u16, nonce: u64, body: &str) -> MarginCommand {
        MarginCommand {
            origin,
            nonce,
            body: body.to_string(),
        }
    }

    #[test]
    fn commands_root_is_zero_for_none_and_moves_with_every_part() {
        assert_eq!(commands_root(&[]), [0; 32]);
        let base = [command(1, 7, "{\"a\":1}"), command(2, 1, "{}")];
        let root = commands_root(&base);
        assert_ne!(root, [0; 32]);
        let variants = [
            vec![command(3, 7, "{\"a\":1}"), command(2, 1, "{}")],
            vec![command(1, 8, "{\"a\":1}"), command(2, 1, "{}")],
            vec![command(1, 7, "{\"a\":2}"), command(2, 1, "{}")],
            vec![command(2, 1, "{}"), command(1, 7, "{\"a\":1}")],
            vec![command(1, 7, "{\"a\":1}")],
            // The length prefix keeps a body from bleeding into the next command.
            vec![command(1, 7, "{\"a\":1}{}"), command(2, 1, "")],
        ];
        for v in variants {
            assert_ne!(commands_root(&v), root, "{v:?}");
        }
    }
}
