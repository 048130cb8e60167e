//! Solidity `abi.encode`-compatible encoding of report leaves and headers.
//!
//! These are the bytes that get hashed (leaf hashes, the signed digest), so a
//! contract can rebuild them with `abi.encode(...)` and reach the same hashes.
//! Every field is a static ABI type, so each encoding is a fixed number of
//! 32-byte words (see `docs/PROTOCOL.md`):
//!
//! ```text
//! leaf   = abi.encode(bytes32 feedId, int256 price, uint256 confidence,
//!                     uint16 numObservations, uint64 observedAtMs,
//!                     int256 bid, int256 ask, uint16 venues, uint8 status,
//!                     uint16 flags, int256 ema, uint256 emaConfidence,
//!                     uint64 volatility)                                416 bytes
//! header = abi.encode(uint8 version, bytes32 configDigest, uint64 round,
//!                     uint64 timestampMs, bytes32 merkleRoot,
//!                     bytes32 marginRoot)                               192 bytes
//! ```
//!
//! Decoding is strict: a word whose padding is not what `abi.encode` would
//! write (e.g. an `int256` outside the `i128` range, a `uint16` with high bits
//! set) is rejected as non-canonical, so every value has exactly one encoding.

#![warn(missing_docs)]

use crate::codec::DecodeError;
use crate::report::{ConfigDigest, FeedId, LeafStatus, ReportHeader, ReportLeaf, flags};

/// One ABI word.
pub const WORD: usize = 32;
/// Length of `abi.encode(leaf)`.
pub const LEAF_ABI_LEN: usize = 13 * WORD;
/// Length of `abi.encode(header)`.
pub const HEADER_ABI_LEN: usize = 6 * WORD;

/// Right-aligned unsigned word (`uintN`).
pub fn word_u128(v: u128) -> [u8; 32] {
    let mut w = [0u8; 32];
    w[16..].copy_from_slice(&v.to_be_bytes());
    w
}

/// Sign-extended signed word (`int256` holding an `i128`).
pub fn word_i128(v: i128) -> [u8; 32] {
    let mut w = if v < 0 { [0xff; 32] } else { [0u8; 32] };
    w[16..].copy_from_slice(&v.to_be_bytes());
    w
}

/// `abi.encode(bytes32 feedId, int256 price, uint256 confidence, uint16 numObservations,
/// uint64 observedAtMs, int256 bid, int256 ask, uint16 venues, uint8 status, uint16 flags,
/// int256 ema, uint256 emaConfidence, uint64 volatility)`.
pub fn encode_leaf(leaf: &ReportLeaf) -> [u8; LEAF_ABI_LEN] {
    let mut out = [0u8; LEAF_ABI_LEN];
    let words: [[u8; 32]; 13] = [
        leaf.feed_id.to_bytes32(),
        word_i128(leaf.price),
        word_u128(leaf.confidence),
        word_u128(leaf.num_observations.into()),
        word_u128(leaf.observed_at_ms.into()),
        word_i128(leaf.bid),
        word_i128(leaf.ask),
        word_u128(leaf.venues.into()),
        word_u128(leaf.status.as_u8().into()),
        word_u128(leaf.flags.into()),
        word_i128(leaf.ema),
        word_u128(leaf.ema_confidence),
        word_u128(leaf.volatility.into()),
    ];
    for (i, w) in words.iter().enumerate() {
        out[i * WORD..(i + 1) * WORD].copy_from_slice(w);
    }
    out
}

/// `abi.encode(uint8 version, bytes32 configDigest, uint64 round, uint64 timestampMs, bytes32 merkleRoot, bytes32 marginRoot)`.
pub fn encode_header(h: &ReportHeader) -> [u8; HEADER_ABI_LEN] {
    let mut out = [0u8; HEADER_ABI_LEN];
    out[0..32].copy_from_slice(&word_u128(h.version.into()));
    out[32..64].copy_from_slice(&h.config_digest.0);
    out[64..96].copy_from_slice(&word_u128(h.round.into()));
    out[96..128].copy_from_slice(&word_u128(h.timestamp_ms.into()));
    out[128..160].copy_from_slice(&h.merkle_root);
    out[160..192].copy_from_slice(&h.margin_root);
    out
}

/// Inverse of [`encode_leaf`]; rejects any input `encode_leaf` could not produce
/// (including an unknown status or flag bit).
pub fn decode_leaf(bytes: &[u8]) -> Result<ReportLeaf, DecodeError> {
    let words = words::<13>(bytes, "ABI leaf")?;
    let feed_id = FeedId::from_bytes32(&words[0]).map_err(|e| DecodeError::Invalid {
        what: "ABI leaf feed id",
        at: 0,
        reason: e.to_string(),
    })?;
    let status_byte: u8 = narrow(&words[8], 1, "ABI leaf status", 8 * WORD)?;
    let status = LeafStatus::from_u8(status_byte).ok_or(DecodeError::NonCanonical {
        what: "ABI leaf status",
        at: 8 * WORD,
    })?;
    let flag_bits: u16 = narrow(&words[9], 2, "ABI leaf flags", 9 * WORD)?;
    if flag_bits & !flags::ALL != 0 {
        return Err(DecodeError::NonCanonical {
            what: "ABI leaf flags",
            at: 9 * WORD,
        });
    }
    Ok(ReportLeaf {
        feed_id,
        price: read_i128(&words[1], "ABI leaf price", WORD)?,
        confidence: read_uint(&words[2], 16, "ABI leaf confidence", 2 * WORD)?,
        num_observations: narrow(&words[3], 2, "ABI leaf numObservations", 3 * WORD)?,
        observed_at_ms: narrow(&words[4], 8, "ABI leaf observedAtMs", 4 * WORD)?,
        bid: read_i128(&words[5], "ABI leaf bid", 5 * WORD)?,
        ask: read_i128(&words[6], "ABI leaf ask", 6 * WORD)?,
        venues: narrow(&words[7], 2, "ABI leaf venues", 7 * WORD)?,
        status,
        flags: flag_bits,
        ema: read_i128(&words[10], "ABI leaf ema", 10 * WORD)?,
        ema_confidence: read_uint(&words[11], 16, "ABI leaf emaConfidence", 11 * WORD)?,
        volatility: narrow(&words[12], 8, "ABI leaf volatility", 12 * WORD)?,
    })
}

/// Inverse of [`encode_header`]; rejects any input `encode_header` could not produce.
pub fn decode_header(bytes: &[u8]) -> Result<ReportHeader, DecodeError> {
    let words = words::<6>(bytes, "ABI header")?;
    Ok(ReportHeader {
        version: narrow(&words[0], 1, "ABI header version", 0)?,
        config_digest: ConfigDigest(words[1]),
        round: narrow(&words[2], 8, "ABI header round", 2 * WORD)?,
        timestamp_ms: narrow(&words[3], 8, "ABI header timestampMs", 3 * WORD)?,
        merkle_root: words[4],
        margin_root: words[5],
    })
}

fn words<const N: usize>(bytes: &[u8], what: &'static str) -> Result<[[u8; 32]; N], DecodeError> {
    let need = N * WORD;
    if bytes.len() < need {
        return Err(DecodeError::Truncated {
            what,
            at: 0,
            need,
            have: bytes.len(),
        });
    }
    if bytes.len() > need {
        return Err(DecodeError::TrailingBytes {
            what,
            at: need,
            count: bytes.len() - need,
        });
    }
    let mut out = [[0u8; 32]; N];
    for (i, w) in out.iter_mut().enumerate() {
        w.copy_from_slice(&bytes[i * WORD..(i + 1) * WORD]);
    }
    Ok(out)
}

/// A right-aligned unsigned integer of `width` bytes; the rest must be zero.
/// [`read_uint`] into the integer type `width` bytes fit (no cast).
fn narrow<T: TryFrom<u128>>(
    word: &[u8; 32],
    width: usize,
    what: &'static str,
    at: usize,
) -> Result<T, DecodeError> {
    T::try_from(read_uint(word, width, what, at)?)
        .map_err(|_| DecodeError::NonCanonical { what, at })
}

fn read_uint(
    word: &[u8; 32],
    width: usize,
    what: &'static str,
    at: usize,
) -> Result<u128, DecodeError> {
    if word[..32 - width].iter().any(|&b| b != 0) {
        return Err(DecodeError::NonCanonical { what, at });
    }
    let mut buf = [0u8; 16];
    buf[16 - width..].copy_from_slice(&word[32 - width..]);
    Ok(u128::from_be_bytes(buf))
}

/// An `int256` that must lie in the `i128` range (upper 16 bytes are the sign extension).
fn read_i128(word: &[u8; 32], what: &'static str, at: usize) -> Result<i128, DecodeError> {
    let mut low = [0u8; 16];
    low.copy_from_slice(&word[16..]);
    let v = i128::from_be_bytes(low);
    let ext = if v < 0 { 0xff } else { 0 };
    if word[..16].iter().any(|&b| b != ext) {
        return Err(DecodeError::NonCanonical { what, at });
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    pub(crate) fn leaf_strategy() -> impl Strategy<Value = ReportLeaf> {
        (
            (
                "[A-Z0-9][A-Z0-9._-]{0,31}",
                any::<i128>(),
                any::<u128>(),
                any::<u16>(),
                any::<u64>(),
            ),
            (
                any::<i128>(),
                any::<i128>(),
                any::<u16>(),
                0u8..5,
                0..=flags::ALL,
            ),
            (any::<i128>(), any::<u128>(), any::<u64>()),
        )
            .prop_map(
                |((id, price, confidence, n, t), (bid, ask, venues, st, fl), (ema, ec, vol))| {
                    ReportLeaf {
                        feed_id: FeedId::new(id).expect("strategy produces valid ids"),
                        price,
                        confidence,
                        num_observations: n,
                        observed_at_ms: t,
                        bid,
                        ask,
                        venues,
                        status: LeafStatus::from_u8(st).expect("0..5 are statuses"),
                        flags: fl,
                        ema,
                        ema_confidence: ec,
                        volatility: vol,
                    }
                },
            )
    }

    fn leaf() -> ReportLeaf {
        ReportLeaf {
            bid: -6,
            ask: 9,
            venues: 5,
            status: LeafStatus::Degraded,
            flags: flags::FEW_VENUES | flags::UNCONFIRMED_JUMP,
            ema: 11,
            ema_confidence: 12,
            volatility: 0x0304,
            ..ReportLeaf::basic(FeedId::new("BTC-USD").unwrap(), -5, 7, 3, 0x0102)
        }
    }

    #[test]
    fn leaf_layout_matches_abi_encode() {
        let b = encode_leaf(&leaf());
        assert_eq!(&b[..7], b"BTC-USD");
        assert!(b[7..32].iter().all(|&x| x == 0));
        assert!(b[32..63].iter().all(|&x| x == 0xff));
        assert_eq!(b[63], 0xfb);
        assert_eq!(b[95], 7);
        assert_eq!(b[127], 3);
        assert_eq!(&b[158..160], &[1, 2]);
        assert!(b[160..191].iter().all(|&x| x == 0xff));
        assert_eq!(b[191], 0xfa); // bid -6
        assert_eq!(b[223], 9);
        assert_eq!(b[255], 5);
        assert_eq!(b[287], 1); // degraded
        assert_eq!(b[319], 0x11);
        assert_eq!(b[351], 11);
        assert_eq!(b[383], 12);
        assert_eq!(&b[414..416], &[3, 4]);
        assert_eq!(decode_leaf(&b).unwrap(), leaf());
    }

    #[test]
    fn non_canonical_words_are_rejected() {
        let mut b = encode_leaf(&leaf());
        b[32] = 0; // price no longer sign-extended
        assert_eq!(
            decode_leaf(&b).unwrap_err(),
            DecodeError::NonCanonical {
                what: "ABI leaf price",
                at: 32
            }
        );
        let mut b = encode_leaf(&leaf());
        b[125] = 1; // numObservations above u16
        assert!(matches!(
            decode_leaf(&b),
            Err(DecodeError::NonCanonical { at: 96, .. })
        ));
        let mut b = encode_leaf(&leaf());
        b[287] = 5; // no such status
        assert!(matches!(
            decode_leaf(&b),
            Err(DecodeError::NonCanonical { at: 256, .. })
        ));
        let mut b = encode_leaf(&leaf());
        b[318] = 1; // flag bit 8 is not defined
        assert!(matches!(
            decode_leaf(&b),
            Err(DecodeError::NonCanonical { at: 288, .. })
        ));
        assert!(matches!(
            decode_leaf(&b[..415]),
            Err(DecodeError::Truncated { need: 416, .. })
        ));
        let mut long = encode_leaf(&leaf()).to_vec();
        long.push(0);
        assert!(matches!(
            decode_leaf(&long),
            Err(DecodeError::TrailingBytes { count: 1, .. })
        ));
    }

    proptest! {
        #[test]
        fn leaf_roundtrip(l in leaf_strategy()) {
            prop_assert_eq!(decode_leaf(&encode_leaf(&l)).unwrap(), l);
        }

        #[test]
        fn header_roundtrip(v: u8, cd: [u8; 32], round: u64, ts: u64, root: [u8; 32]) {
            let h = ReportHeader { version: v, config_digest: ConfigDigest(cd), round, timestamp_ms: ts, merkle_root: root, margin_root: [0; 32] };
            prop_assert_eq!(decode_header(&encode_header(&h)).unwrap(), h);
        }

        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..450)) {
            if let Ok(l) = decode_leaf(&bytes) {
                prop_assert_eq!(&encode_leaf(&l)[..], &bytes[..]);
            }
            if let Ok(h) = decode_header(&bytes) {
                prop_assert_eq!(&encode_header(&h)[..], &bytes[..]);
            }
        }
    }
}
