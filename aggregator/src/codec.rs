//! Canonical binary codec for wire messages.
//!
//! Every peer-to-peer message (observation, proposal, share, ...) is written
//! with [`Writer`] and read back with [`Reader`]. The format is deliberately
//! small and has exactly one encoding per value, so that "recompute and
//! compare byte for byte" works and signatures over encodings are unambiguous:
//!
//! | value          | bytes                                                   |
//! |----------------|---------------------------------------------------------|
//! | `u8..u128`     | fixed width, big-endian                                 |
//! | `i128`         | 16 bytes, big-endian two's complement                   |
//! | `bool`         | one byte, `0x00` or `0x01` (anything else: non-canonical) |
//! | `bytes32`      | 32 raw bytes                                            |
//! | bytes / string | `u32` big-endian length, then the bytes; each call site names a maximum |
//! | vector         | `u32` big-endian count, then the elements; each call site names a maximum |
//! | option         | one tag byte `0x00` (none) or `0x01` (some) then the value |
//! | message        | `u8` version first, usually followed by the config digest |
//!
//! A [`Reader`] never panics and never allocates more than the input could
//! justify: lengths are checked against their maximum *and* against the bytes
//! that remain before anything is allocated. Errors say what was being read
//! and at which byte offset.

#![warn(missing_docs)]

use crate::report::{
    ConfigDigest, FeedId, MAX_COMMAND_BYTES, MAX_LEAVES, MAX_REPORT_COMMANDS, MarginCheckpoint,
    MarginCommand, PROTOCOL_VERSION, ReportHeader, ReportLeaf, SignatureBytes, SignedReport, Suite,
};
use std::collections::BTreeMap;

/// Why a byte string is not a valid encoding. `what` names the field being
/// read, `at` is the byte offset in the input where reading it started.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The input ends before the field does.
    #[error(
        "truncated input: reading {what} at byte {at} needs {need} bytes but only {have} remain"
    )]
    Truncated {
        /// The field being read.
        what: &'static str,
        /// Byte offset of the read that ran out of input.
        at: usize,
        /// Bytes the field needs.
        need: usize,
        /// Bytes left in the input.
        have: usize,
    },
    /// A length or count prefix (or a proof's leaf count) exceeds the field's maximum;
    /// checked before anything is allocated.
    #[error("{what} at byte {at} is too long: length {len} exceeds the maximum {max}")]
    TooLong {
        /// The field being read.
        what: &'static str,
        /// Byte offset of the length prefix.
        at: usize,
        /// The length the input claims.
        len: u64,
        /// The field's maximum.
        max: u64,
    },
    /// The message's version byte is not the one this release speaks ([`PROTOCOL_VERSION`]).
    #[error(
        "wrong protocol version: got {got}, expected {expected}; is the peer running a compatible release?"
    )]
    WrongVersion {
        /// The version in the input.
        got: u8,
        /// The version this release speaks.
        expected: u8,
    },
    /// The message names another committee configuration than the caller expects
    /// (only when the caller passes one, e.g. [`SignedReport::decode_expecting`]).
    #[error(
        "wrong config digest: got 0x{}, expected 0x{}; the message belongs to a different committee configuration",
        hex::encode(got.0),
        hex::encode(expected.0)
    )]
    WrongConfigDigest {
        /// The config digest in the input.
        got: ConfigDigest,
        /// The config digest the caller expects.
        expected: ConfigDigest,
    },
    /// A value with another encoding than the one allowed: a `bool` byte above 1,
    /// misordered or duplicate leaves or signatures, an ABI word with wrong padding.
    #[error("non-canonical encoding of {what} at byte {at}")]
    NonCanonical {
        /// The field being read.
        what: &'static str,
        /// Byte offset where reading it started.
        at: usize,
    },
    /// An unknown tag byte: an option tag other than 0/1, a suite tag other than
    /// 1 (Ed25519) or 2 (secp256k1-evm), an unknown round-message kind.
    #[error("unknown tag {tag} for {what} at byte {at}")]
    InvalidTag {
        /// The field being read.
        what: &'static str,
        /// Byte offset of the tag.
        at: usize,
        /// The tag found.
        tag: u64,
    },
    /// Well-formed bytes that are not a valid value: a bad feed id, a string that is not
    /// UTF-8, a signature shorter than its suite's, a proof inconsistent with its position.
    #[error("invalid {what} at byte {at}: {reason}")]
    Invalid {
        /// The field being read.
        what: &'static str,
        /// Byte offset where reading it started.
        at: usize,
        /// What is wrong with it.
        reason: String,
    },
    /// Bytes are left after a whole message was read (`from_bytes`, `decode_expecting`).
    #[error("{count} trailing bytes after {what} at byte {at}")]
    TrailingBytes {
        /// The message that was read.
        what: &'static str,
        /// Byte offset where the message ended.
        at: usize,
        /// Number of bytes left over.
        count: usize,
    },
}

/// Appends canonical encodings to a byte buffer.
#[derive(Clone, Debug, Default)]
pub struct Writer {
    buf: Vec<u8>,
}

impl Writer {
    /// An empty writer.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty writer with room for `capacity` bytes.
    pub fn with_capacity(capacity: usize) -> Self {
        Self {
            buf: Vec::with_capacity(capacity),
        }
    }

    /// The encoded bytes.
    pub fn finish(self) -> Vec<u8> {
        self.buf
    }

    /// Bytes written so far.
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// Whether nothing was written yet.
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// One byte.
    pub fn u8(&mut self, v: u8) -> &mut Self {
        self.buf.push(v);
        self
    }

    /// 2 bytes, big-endian.
    pub fn u16(&mut self, v: u16) -> &mut Self {
        self.raw(&v.to_be_bytes())
    }

    /// 4 bytes, big-endian.
    pub fn u32(&mut self, v: u32) -> &mut Self {
        self.raw(&v.to_be_bytes())
    }

    /// 8 bytes, big-endian.
    pub fn u64(&mut self, v: u64) -> &mut Self {
        self.raw(&v.to_be_bytes())
    }

    /// 16 bytes, big-endian.
    pub fn u128(&mut self, v: u128) -> &mut Self {
        self.raw(&v.to_be_bytes())
    }

    /// 16 bytes, big-endian two's complement.
    pub fn i128(&mut self, v: i128) -> &mut Self {
        self.raw(&v.to_be_bytes())
    }

    /// One byte, `0x00` or `0x01`.
    pub fn bool(&mut self, v: bool) -> &mut Self {
        self.u8(u8::from(v))
    }

    /// 32 raw bytes.
    pub fn bytes32(&mut self, v: &[u8; 32]) -> &mut Self {
        self.raw(v)
    }

    /// Raw bytes with no length prefix: only for fixed-size fields.
    pub fn raw(&mut self, v: &[u8]) -> &mut Self {
        self.buf.extend_from_slice(v);
        self
    }

    /// Length-prefixed bytes. Panics only on a programming error: a value
    /// longer than `u32::MAX` bytes, which no Sibyl message can hold.
    pub fn bytes(&mut self, v: &[u8]) -> &mut Self {
        self.len_prefix(v.len());
        self.raw(v)
    }

    /// Length-prefixed UTF-8.
    pub fn str(&mut self, v: &str) -> &mut Self {
        self.bytes(v.as_bytes())
    }

    /// Count-prefixed sequence: writes the count, then each element with `f`.
    pub fn seq<T>(
        &mut self,
        items: impl ExactSizeIterator<Item = T>,
        mut f: impl FnMut(&mut Self, T),
    ) -> &mut Self {
        self.len_prefix(items.len());
        for item in items {
            f(self, item);
        }
        self
    }

    /// Tag byte 0 (none) or 1 (some) then the value.
    pub fn option<T>(&mut self, v: Option<T>, f: impl FnOnce(&mut Self, T)) -> &mut Self {
        match v {
            None => self.u8(0),
            Some(v) => {
                self.u8(1);
                f(self, v);
                self
            }
        }
    }

    /// Any [`Encode`] value.
    pub fn put<T: Encode + ?Sized>(&mut self, v: &T) -> &mut Self {
        v.encode(self);
        self
    }

    fn len_prefix(&mut self, len: usize) {
        // Every encoded sequence is bounded far below u32::MAX (MAX_LEAVES,
        // the message caps): a longer one is a bug, not input.
        #[allow(clippy::expect_used)]
        let len = u32::try_from(len).expect("encoded length exceeds u32::MAX");
        self.u32(len);
    }
}

/// Reads canonical encodings from a byte slice, tracking the offset for errors.
#[derive(Clone, Debug)]
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    /// A reader at the start of `buf`.
    pub fn new(buf: &'a [u8]) -> Self {
        Self { buf, pos: 0 }
    }

    /// Byte offset of the next read.
    pub fn position(&self) -> usize {
        self.pos
    }

    /// Bytes not read yet.
    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// Succeeds only if every byte was consumed; `what` names the message.
    pub fn finish(&self, what: &'static str) -> Result<(), DecodeError> {
        match self.remaining() {
            0 => Ok(()),
            count => Err(DecodeError::TrailingBytes {
                what,
                at: self.pos,
                count,
            }),
        }
    }

    /// The next `n` raw bytes.
    pub fn raw(&mut self, what: &'static str, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.remaining() < n {
            return Err(DecodeError::Truncated {
                what,
                at: self.pos,
                need: n,
                have: self.remaining(),
            });
        }
        let out = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(out)
    }

    fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], DecodeError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.raw(what, N)?);
        Ok(out)
    }

    /// One byte; [`DecodeError::Truncated`] at the end of input.
    pub fn u8(&mut self, what: &'static str) -> Result<u8, DecodeError> {
        Ok(self.array::<1>(what)?[0])
    }

    /// 2 bytes, big-endian.
    pub fn u16(&mut self, what: &'static str) -> Result<u16, DecodeError> {
        self.array(what).map(u16::from_be_bytes)
    }

    /// 4 bytes, big-endian.
    pub fn u32(&mut self, what: &'static str) -> Result<u32, DecodeError> {
        self.array(what).map(u32::from_be_bytes)
    }

    /// 8 bytes, big-endian.
    pub fn u64(&mut self, what: &'static str) -> Result<u64, DecodeError> {
        self.array(what).map(u64::from_be_bytes)
    }

    /// 16 bytes, big-endian.
    pub fn u128(&mut self, what: &'static str) -> Result<u128, DecodeError> {
        self.array(what).map(u128::from_be_bytes)
    }

    /// 16 bytes, big-endian two's complement.
    pub fn i128(&mut self, what: &'static str) -> Result<i128, DecodeError> {
        self.array(what).map(i128::from_be_bytes)
    }

    /// `0x00` or `0x01`; any other byte is [`DecodeError::NonCanonical`].
    pub fn bool(&mut self, what: &'static str) -> Result<bool, DecodeError> {
        let at = self.pos;
        match self.u8(what)? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(DecodeError::NonCanonical { what, at }),
        }
    }

    /// 32 raw bytes.
    pub fn bytes32(&mut self, what: &'static str) -> Result<[u8; 32], DecodeError> {
        self.array(what)
    }

    /// Length-prefixed bytes of at most `max` bytes.
    pub fn bytes(&mut self, what: &'static str, max: usize) -> Result<&'a [u8], DecodeError> {
        let len = self.len_prefix(what, max, 1)?;
        self.raw(what, len)
    }

    /// Length-prefixed UTF-8 of at most `max` bytes.
    pub fn str(&mut self, what: &'static str, max: usize) -> Result<&'a str, DecodeError> {
        let at = self.pos;
        let bytes = self.bytes(what, max)?;
        std::str::from_utf8(bytes).map_err(|e| DecodeError::Invalid {
            what,
            at,
            reason: format!("not UTF-8: {e}"),
        })
    }

    /// Count-prefixed sequence of at most `max` elements, each read with `f`.
    /// `min_elem_size` (bytes, at least 1 is assumed) lets a bogus count be
    /// rejected before anything is allocated.
    pub fn seq<T>(
        &mut self,
        what: &'static str,
        max: usize,
        min_elem_size: usize,
        mut f: impl FnMut(&mut Self) -> Result<T, DecodeError>,
    ) -> Result<Vec<T>, DecodeError> {
        let count = self.len_prefix(what, max, min_elem_size.max(1))?;
        let mut out = Vec::with_capacity(count);
        for _ in 0..count {
            out.push(f(self)?);
        }
        Ok(out)
    }

    /// Tag byte 0/1 then the value.
    pub fn option<T>(
        &mut self,
        what: &'static str,
        f: impl FnOnce(&mut Self) -> Result<T, DecodeError>,
    ) -> Result<Option<T>, DecodeError> {
        let at = self.pos;
        match self.u8(what)? {
            0 => Ok(None),
            1 => f(self).map(Some),
            tag => Err(DecodeError::InvalidTag {
                what,
                at,
                tag: tag.into(),
            }),
        }
    }

    /// Reads the version byte and checks it ([`DecodeError::WrongVersion`]).
    pub fn version(&mut self, expected: u8) -> Result<u8, DecodeError> {
        let got = self.u8("version")?;
        if got != expected {
            return Err(DecodeError::WrongVersion { got, expected });
        }
        Ok(got)
    }

    /// Reads a config digest and, when the caller expects one, checks it
    /// ([`DecodeError::WrongConfigDigest`]).
    pub fn config_digest(
        &mut self,
        expected: Option<&ConfigDigest>,
    ) -> Result<ConfigDigest, DecodeError> {
        let got = ConfigDigest(self.bytes32("config digest")?);
        match expected {
            Some(expected) if *expected != got => Err(DecodeError::WrongConfigDigest {
                got,
                expected: *expected,
            }),
            _ => Ok(got),
        }
    }

    /// Any [`Decode`] value.
    pub fn get<T: Decode>(&mut self) -> Result<T, DecodeError> {
        T::decode(self)
    }

    /// Reads a `u32` length and checks it against `max` and against what
    /// remains (`elem_size` bytes per element at least).
    fn len_prefix(
        &mut self,
        what: &'static str,
        max: usize,
        elem_size: usize,
    ) -> Result<usize, DecodeError> {
        let at = self.pos;
        let len = self.u32(what)?;
        let len_usize = usize::try_from(len).unwrap_or(usize::MAX);
        if len_usize > max {
            return Err(DecodeError::TooLong {
                what,
                at,
                len: len.into(),
                max: max as u64,
            });
        }
        let need = len_usize.saturating_mul(elem_size);
        if need > self.remaining() {
            return Err(DecodeError::Truncated {
                what,
                at: self.pos,
                need,
                have: self.remaining(),
            });
        }
        Ok(len_usize)
    }
}

/// A value with one canonical encoding.
pub trait Encode {
    /// Appends the value's canonical encoding to `w`.
    fn encode(&self, w: &mut Writer);

    /// The value's canonical encoding.
    fn to_bytes(&self) -> Vec<u8> {
        let mut w = Writer::new();
        self.encode(&mut w);
        w.finish()
    }
}

/// A value that can be read back from its canonical encoding.
pub trait Decode: Sized {
    /// Name used in errors (e.g. "observation").
    const WHAT: &'static str;

    /// Reads one value from `r`, leaving `r` after it; trailing bytes are the caller's business.
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError>;

    /// Decodes a whole buffer: trailing bytes are an error.
    fn from_bytes(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(bytes);
        let v = Self::decode(&mut r)?;
        r.finish(Self::WHAT)?;
        Ok(v)
    }
}

/// Feed ids travel as their canonical `bytes32` (right zero-padded ASCII).
impl Encode for FeedId {
    fn encode(&self, w: &mut Writer) {
        w.bytes32(&self.to_bytes32());
    }
}

impl Decode for FeedId {
    const WHAT: &'static str = "feed id";
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let at = r.position();
        let b = r.bytes32(Self::WHAT)?;
        FeedId::from_bytes32(&b).map_err(|e| DecodeError::Invalid {
            what: Self::WHAT,
            at,
            reason: e.to_string(),
        })
    }
}

impl Encode for ConfigDigest {
    fn encode(&self, w: &mut Writer) {
        w.bytes32(&self.0);
    }
}

impl Decode for ConfigDigest {
    const WHAT: &'static str = "config digest";
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        r.bytes32(Self::WHAT).map(ConfigDigest)
    }
}

/// Suite tags on the wire: 1 = Ed25519, 2 = secp256k1-evm.
pub fn suite_tag(suite: Suite) -> u8 {
    match suite {
        Suite::Ed25519 => 1,
        Suite::Secp256k1Evm => 2,
    }
}

/// Serialized signature length of each suite: R ‖ z.
pub fn signature_len(suite: Suite) -> usize {
    match suite {
        Suite::Ed25519 => 64,
        Suite::Secp256k1Evm => 65,
    }
}

/// Wire size of one [`ReportHeader`].
pub const HEADER_WIRE_LEN: usize = 1 + 32 + 8 + 8 + 32;
/// Most signatures a report carries (one per suite).
pub const MAX_SIGNATURES: usize = 2;

impl Decode for Suite {
    const WHAT: &'static str = "suite";
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let at = r.position();
        match r.u8("suite tag")? {
            1 => Ok(Suite::Ed25519),
            2 => Ok(Suite::Secp256k1Evm),
            tag => Err(DecodeError::InvalidTag {
                what: "suite",
                at,
                tag: tag.into(),
            }),
        }
    }
}

/// Wire size of one [`ReportLeaf`].
pub const LEAF_WIRE_LEN: usize = 32 + 16 + 16 + 2 + 8 + 16 + 16 + 2 + 1 + 2 + 16 + 16 + 8;

/// `bytes32 feed ‖ i128 price ‖ u128 confidence ‖ u16 observations ‖ u64 observed at
/// ‖ i128 bid ‖ i128 ask ‖ u16 venues ‖ u8 status ‖ u16 flags ‖ i128 ema
/// ‖ u128 ema confidence ‖ u64 volatility` ([`LEAF_WIRE_LEN`] = 151 bytes).
impl Encode for ReportLeaf {
    fn encode(&self, w: &mut Writer) {
        w.put(&self.feed_id)
            .i128(self.price)
            .u128(self.confidence)
            .u16(self.num_observations)
            .u64(self.observed_at_ms)
            .i128(self.bid)
            .i128(self.ask)
            .u16(self.venues)
            .u8(self.status.as_u8())
            .u16(self.flags)
            .i128(self.ema)
            .u128(self.ema_confidence)
            .u64(self.volatility);
    }
}

impl Decode for ReportLeaf {
    const WHAT: &'static str = "report leaf";
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let feed_id = r.get()?;
        let price = r.i128("leaf price")?;
        let confidence = r.u128("leaf confidence")?;
        let num_observations = r.u16("leaf observation count")?;
        let observed_at_ms = r.u64("leaf observed-at timestamp")?;
        let bid = r.i128("leaf bid")?;
        let ask = r.i128("leaf ask")?;
        let venues = r.u16("leaf venues")?;
        let at = r.position();
        let tag = r.u8("leaf status")?;
        let status = crate::report::LeafStatus::from_u8(tag).ok_or(DecodeError::InvalidTag {
            what: "leaf status",
            at,
            tag: tag.into(),
        })?;
        let at = r.position();
        let flags = r.u16("leaf flags")?;
        if flags & !crate::report::flags::ALL != 0 {
            return Err(DecodeError::NonCanonical {
                what: "leaf flags",
                at,
            });
        }
        Ok(ReportLeaf {
            feed_id,
            price,
            confidence,
            num_observations,
            observed_at_ms,
            bid,
            ask,
            venues,
            status,
            flags,
            ema: r.i128("leaf ema")?,
            ema_confidence: r.u128("leaf ema confidence")?,
            volatility: r.u64("leaf volatility")?,
        })
    }
}

/// `u8 version ‖ bytes32 config digest ‖ u64 round ‖ u64 timestamp ‖ bytes32 merkle root ‖ bytes32 margin root` (113 bytes).
/// A version 1 header (stored history from before the margin root) has no
/// margin root (81 bytes).
impl Encode for ReportHeader {
    fn encode(&self, w: &mut Writer) {
        w.u8(self.version)
            .put(&self.config_digest)
            .u64(self.round)
            .u64(self.timestamp_ms)
            .bytes32(&self.merkle_root);
        if self.version != LEGACY_VERSION {
            w.bytes32(&self.margin_root);
        }
    }
}

/// The protocol version before the margin root (reports stored by earlier
/// releases): decoded and re-encoded as they were, never verified
/// (`verify_report` takes only [`PROTOCOL_VERSION`]).
pub const LEGACY_VERSION: u8 = 1;

/// Reads a header, checking the version and, if given, the config digest.
pub fn decode_header(
    r: &mut Reader<'_>,
    expected: Option<&ConfigDigest>,
) -> Result<ReportHeader, DecodeError> {
    let version = r.u8("version")?;
    if version != PROTOCOL_VERSION && version != LEGACY_VERSION {
        return Err(DecodeError::WrongVersion {
            got: version,
            expected: PROTOCOL_VERSION,
        });
    }
    Ok(ReportHeader {
        version,
        config_digest: r.config_digest(expected)?,
        round: r.u64("report round")?,
        timestamp_ms: r.u64("report timestamp")?,
        merkle_root: r.bytes32("merkle root")?,
        margin_root: if version == LEGACY_VERSION {
            [0; 32]
        } else {
            r.bytes32("margin root")?
        },
    })
}

impl Decode for ReportHeader {
    const WHAT: &'static str = "report header";
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        decode_header(r, None)
    }
}

/// Writes a suite → signature map: count, then `u8 tag ‖ bytes signature` in suite order.
pub fn encode_signatures(w: &mut Writer, signatures: &BTreeMap<Suite, SignatureBytes>) {
    w.seq(signatures.iter(), |w, (suite, sig)| {
        w.u8(suite_tag(*suite)).bytes(&sig.0);
    });
}

/// Reads a suite → signature map: at most one per suite, strictly ascending
/// tags, each signature exactly its suite's length.
pub fn decode_signatures(
    r: &mut Reader<'_>,
) -> Result<BTreeMap<Suite, SignatureBytes>, DecodeError> {
    let at = r.position();
    let list = r.seq("signatures", MAX_SIGNATURES, 1 + 4, |r| {
        let suite: Suite = r.get()?;
        let sig_at = r.position();
        let sig = r.bytes("signature", signature_len(suite))?;
        if sig.len() != signature_len(suite) {
            return Err(DecodeError::Invalid {
                what: "signature",
                at: sig_at,
                reason: format!(
                    "a {suite:?} signature is {} bytes, got {}",
                    signature_len(suite),
                    sig.len()
                ),
            });
        }
        Ok((suite, SignatureBytes(sig.to_vec())))
    })?;
    if list.windows(2).any(|w| w[0].0 >= w[1].0) {
        return Err(DecodeError::NonCanonical {
            what: "signatures (suites must be unique and ascending)",
            at,
        });
    }
    Ok(list.into_iter().collect())
}

/// Reads a leaf list: at most `MAX_LEAVES`, feed ids strictly ascending.
pub fn decode_leaves(r: &mut Reader<'_>) -> Result<Vec<ReportLeaf>, DecodeError> {
    let at = r.position();
    let leaves: Vec<ReportLeaf> = r.seq("leaves", MAX_LEAVES, LEAF_WIRE_LEN, |r| r.get())?;
    if let Some(i) = leaves.windows(2).position(|w| w[0].feed_id >= w[1].feed_id) {
        return Err(DecodeError::NonCanonical {
            what: "leaves (feed ids must be unique and ascending)",
            at: at + 4 + (i + 1) * LEAF_WIRE_LEN,
        });
    }
    Ok(leaves)
}

/// `header ‖ u32 n ‖ n × leaf ‖ u32 m ‖ m × (u8 suite ‖ u32 len ‖ signature)`.
impl Encode for SignedReport {
    fn encode(&self, w: &mut Writer) {
        w.put(&self.header).seq(self.leaves.iter(), |w, l| {
            w.put(l);
        });
        encode_signatures(w, &self.signatures);
        if self.header.version != LEGACY_VERSION {
            encode_commands(w, &self.commands);
            encode_margin_state(w, self.margin_state.as_ref());
        }
    }
}

/// `option (u64 round ‖ bytes32 root)`.
pub fn encode_margin_state(w: &mut Writer, state: Option<&MarginCheckpoint>) {
    w.option(state, |w, s| {
        w.u64(s.round).bytes32(&s.root);
    });
}

/// Inverse of [`encode_margin_state`].
pub fn decode_margin_state(r: &mut Reader<'_>) -> Result<Option<MarginCheckpoint>, DecodeError> {
    r.option("margin state", |r| {
        Ok(MarginCheckpoint {
            round: r.u64("margin state round")?,
            root: r.bytes32("margin state root")?,
        })
    })
}

/// `u16 origin ‖ u64 nonce ‖ str body`.
impl Encode for MarginCommand {
    fn encode(&self, w: &mut Writer) {
        w.u16(self.origin).u64(self.nonce).str(&self.body);
    }
}

impl Decode for MarginCommand {
    const WHAT: &'static str = "margin command";
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(MarginCommand {
            origin: r.u16("margin command origin")?,
            nonce: r.u64("margin command nonce")?,
            body: r.str("margin command body", MAX_COMMAND_BYTES)?.to_string(),
        })
    }
}

/// Writes margin commands: count, then each [`MarginCommand`].
pub fn encode_commands(w: &mut Writer, commands: &[MarginCommand]) {
    w.seq(commands.iter(), |w, c| {
        w.put(c);
    });
}

/// Reads at most `max` margin commands, strictly ascending by (origin, nonce).
pub fn decode_commands(r: &mut Reader<'_>, max: usize) -> Result<Vec<MarginCommand>, DecodeError> {
    let at = r.position();
    let list: Vec<MarginCommand> = r.seq("margin commands", max, 2 + 8 + 4, |r| r.get())?;
    if list
        .windows(2)
        .any(|p| (p[0].origin, p[0].nonce) >= (p[1].origin, p[1].nonce))
    {
        return Err(DecodeError::NonCanonical {
            what: "margin commands (strictly ascending by origin and nonce)",
            at,
        });
    }
    Ok(list)
}

impl Decode for SignedReport {
    const WHAT: &'static str = "signed report";
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        decode_signed_report(r, None)
    }
}

fn decode_signed_report(
    r: &mut Reader<'_>,
    expected: Option<&ConfigDigest>,
) -> Result<SignedReport, DecodeError> {
    let header = decode_header(r, expected)?;
    let leaves = decode_leaves(r)?;
    let signatures = decode_signatures(r)?;
    if header.version == LEGACY_VERSION {
        return Ok(SignedReport {
            header,
            leaves,
            signatures,
            commands: Vec::new(),
            margin_state: None,
        });
    }
    Ok(SignedReport {
        header,
        leaves,
        signatures,
        commands: decode_commands(r, MAX_REPORT_COMMANDS)?,
        margin_state: decode_margin_state(r)?,
    })
}

impl SignedReport {
    /// Decodes a whole buffer and checks that the report belongs to the
    /// committee configuration `expected`. Decoding does not verify
    /// signatures: use [`crate::verify::verify_report`].
    pub fn decode_expecting(bytes: &[u8], expected: &ConfigDigest) -> Result<Self, DecodeError> {
        let mut r = Reader::new(bytes);
        let v = decode_signed_report(&mut r, Some(expected))?;
        r.finish(Self::WHAT)?;
        Ok(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A report stored by a release before the margin root (protocol
    /// version 1: an 81-byte header, no commands or margin state on the
    /// wire, no `margin_root` in JSON) still decodes, re-encodes to the same
    /// bytes, and is refused by verification.
    #[test]
    fn a_version_1_report_from_stored_history_still_decodes() {
        use rand_core::SeedableRng;
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(5);
        let f = crate::testkit::fixture(3, &mut rng);
        let mut old = f.report.clone();
        old.header.version = LEGACY_VERSION;
        let bytes = old.to_bytes();
        let v2 = f.report.to_bytes();
        // 32 bytes of margin root, the empty command list and the absent state fewer.
        assert_eq!(bytes.len(), v2.len() - 32 - 4 - 1);
        let back = SignedReport::from_bytes(&bytes).unwrap();
        assert_eq!(back, old);
        assert_eq!(back.to_bytes(), bytes);
        let mut json = serde_json::to_value(&old).unwrap();
        json["header"]
            .as_object_mut()
            .unwrap()
            .remove("margin_root");
        let from_json: SignedReport = serde_json::from_value(json).unwrap();
        assert_eq!(from_json, old);
        assert!(matches!(
            crate::verify::verify_report(&old, &f.keys),
            Err(crate::verify::VerifyError::WrongVersion { got: 1, .. })
        ));
        // Any other version is refused by the decoder.
        let mut other = bytes.clone();
        other[0] = 3;
        assert_eq!(
            SignedReport::from_bytes(&other).unwrap_err(),
            DecodeError::WrongVersion {
                got: 3,
                expected: PROTOCOL_VERSION
            }
        );
    }

    #[derive(Debug, Clone, PartialEq)]
    struct Sample {
        a: u8,
        b: u16,
        c: u64,
        d: i128,
        e: bool,
        f: [u8; 32],
        g: Vec<u8>,
        h: Vec<u64>,
        i: Option<u32>,
        s: String,
    }

    impl Encode for Sample {
        fn encode(&self, w: &mut Writer) {
            w.u8(self.a)
                .u16(self.b)
                .u64(self.c)
                .i128(self.d)
                .bool(self.e)
                .bytes32(&self.f)
                .bytes(&self.g)
                .seq(self.h.iter(), |w, x| {
                    w.u64(*x);
                })
                .option(self.i, |w, x| {
                    w.u32(x);
                })
                .str(&self.s);
        }
    }

    impl Decode for Sample {
        const WHAT: &'static str = "sample";
        fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
            Ok(Sample {
                a: r.u8("a")?,
                b: r.u16("b")?,
                c: r.u64("c")?,
                d: r.i128("d")?,
                e: r.bool("e")?,
                f: r.bytes32("f")?,
                g: r.bytes("g", 64)?.to_vec(),
                h: r.seq("h", 16, 8, |r| r.u64("h[i]"))?,
                i: r.option("i", |r| r.u32("i"))?,
                s: r.str("s", 32)?.to_owned(),
            })
        }
    }

    fn sample() -> impl Strategy<Value = Sample> {
        (
            any::<(u8, u16, u64, i128, bool, [u8; 32])>(),
            proptest::collection::vec(any::<u8>(), 0..=64),
            proptest::collection::vec(any::<u64>(), 0..=16),
            any::<Option<u32>>(),
            "[a-zA-Z0-9 ]{0,32}",
        )
            .prop_map(|((a, b, c, d, e, f), g, h, i, s)| Sample {
                a,
                b,
                c,
                d,
                e,
                f,
                g,
                h,
                i,
                s,
            })
    }

    #[test]
    fn integers_are_big_endian() {
        let mut w = Writer::new();
        w.u16(0x0102).u32(0x0304_0506).i128(-2);
        let b = w.finish();
        assert_eq!(&b[..6], &[1, 2, 3, 4, 5, 6]);
        assert_eq!(&b[6..21], &[0xff; 15]);
        assert_eq!(b[21], 0xfe);
    }

    #[test]
    fn errors_say_what_and_where() {
        let mut r = Reader::new(&[0, 0, 0, 9, 1, 2]);
        let err = r.bytes("signature", 8).unwrap_err();
        assert_eq!(
            err,
            DecodeError::TooLong {
                what: "signature",
                at: 0,
                len: 9,
                max: 8
            }
        );
        let mut r = Reader::new(&[0, 0, 0, 4, 1, 2]);
        let err = r.bytes("signature", 8).unwrap_err();
        assert_eq!(
            err,
            DecodeError::Truncated {
                what: "signature",
                at: 4,
                need: 4,
                have: 2
            }
        );
        assert!(err.to_string().contains("signature at byte 4"));
        let mut r = Reader::new(&[2]);
        assert_eq!(
            r.bool("flag").unwrap_err(),
            DecodeError::NonCanonical {
                what: "flag",
                at: 0
            }
        );
    }

    #[test]
    fn version_and_config_digest_are_checked() {
        let mut w = Writer::new();
        w.u8(2).bytes32(&[7; 32]);
        let b = w.finish();
        assert_eq!(
            Reader::new(&b).version(1).unwrap_err(),
            DecodeError::WrongVersion {
                got: 2,
                expected: 1
            }
        );
        let mut r = Reader::new(&b[1..]);
        let err = r.config_digest(Some(&ConfigDigest([8; 32]))).unwrap_err();
        assert!(matches!(err, DecodeError::WrongConfigDigest { .. }));
        assert!(err.to_string().contains(&"07".repeat(32)));
        let mut r = Reader::new(&b[1..]);
        assert_eq!(r.config_digest(None).unwrap(), ConfigDigest([7; 32]));
    }

    #[test]
    fn huge_counts_are_rejected_before_allocating() {
        let mut r = Reader::new(&[0xff, 0xff, 0xff, 0xff]);
        assert!(matches!(
            r.seq("items", usize::MAX, 8, |r| r.u64("item")),
            Err(DecodeError::Truncated { what: "items", .. })
        ));
    }

    #[test]
    fn feed_id_roundtrips_and_rejects_garbage() {
        let id = FeedId::new("BTC-USD").unwrap();
        assert_eq!(FeedId::from_bytes(&id.to_bytes()).unwrap(), id);
        let mut bad = id.to_bytes32();
        bad[31] = b'X';
        assert!(matches!(
            FeedId::from_bytes(&bad),
            Err(DecodeError::Invalid {
                what: "feed id",
                ..
            })
        ));
    }

    proptest! {
        #[test]
        fn roundtrip(s in sample()) {
            let bytes = s.to_bytes();
            prop_assert_eq!(Sample::from_bytes(&bytes).unwrap(), s);
        }

        #[test]
        fn every_truncation_is_a_typed_error(s in sample()) {
            let bytes = s.to_bytes();
            for cut in 0..bytes.len() {
                let err = Sample::from_bytes(&bytes[..cut]).unwrap_err();
                prop_assert!(matches!(err, DecodeError::Truncated { .. }), "cut {}: {:?}", cut, err);
            }
        }

        #[test]
        fn trailing_bytes_are_rejected(s in sample(), extra in proptest::collection::vec(any::<u8>(), 1..8)) {
            let mut bytes = s.to_bytes();
            let len = bytes.len();
            bytes.extend_from_slice(&extra);
            prop_assert_eq!(
                Sample::from_bytes(&bytes).unwrap_err(),
                DecodeError::TrailingBytes { what: "sample", at: len, count: extra.len() }
            );
        }

        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = Sample::from_bytes(&bytes);
            let _ = FeedId::from_bytes(&bytes);
        }
    }
}
