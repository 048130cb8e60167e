//! The DKG's wire format: `MAGIC | VERSION | kind | session | body`, lengths
//! big-endian (docs/PROTOCOL.md), the session id and the statement a member
//! signs for its round-1 package.

use sha3::{Digest, Sha3_256};
use std::collections::BTreeMap;

use crate::report::ConfigDigest;

const MAGIC: &[u8; 4] = b"SDKG";
const VERSION: u8 = 1;
const KIND_ROUND1: u8 = 1;
const KIND_ECHO: u8 = 2;
const KIND_ROUND2: u8 = 3;
const KIND_DONE: u8 = 4;

/// A ceremony's session id (32 bytes); every message carries it.
pub type SessionId = [u8; 32];

pub(crate) fn sha3(parts: &[&[u8]]) -> [u8; 32] {
    let mut h = Sha3_256::new();
    for p in parts {
        h.update(p);
    }
    h.finalize().into()
}

/// The ceremony's session id: committee digest and suite (`C::ID`).
///
/// The seam for a per-run nonce (issue 17): it goes into this hash, after
/// the suite id, and every message and signature follows from it.
pub fn session_id<C: frost_core::Ciphersuite>(digest: &ConfigDigest) -> SessionId {
    sha3(&[b"sibyl-dkg-session-v1", &digest.0, C::ID.as_bytes()])
}

/// What a member signs with its identity key for its round-1 package.
pub fn round1_statement(session: &SessionId, from: u16, hash: &[u8; 32]) -> Vec<u8> {
    let mut m = b"sibyl-dkg-round1".to_vec();
    m.extend_from_slice(session);
    m.extend_from_slice(&from.to_be_bytes());
    m.extend_from_slice(hash);
    m
}

/// Echoed round-1 packages: member -> (package hash, member's signature).
pub type EchoEntries = BTreeMap<u16, ([u8; 32], Vec<u8>)>;

/// A DKG wire message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DkgMessage {
    /// The sender's round-1 package and its identity signature over
    /// [`round1_statement`].
    Round1 {
        package: Vec<u8>,
        signature: Vec<u8>,
    },
    /// For each member: hash of its round-1 package and its signature.
    Echo { entries: EchoEntries },
    /// The sender's round-2 package for the recipient (point to point).
    Round2 { package: Vec<u8> },
    /// SHA3-256 of the sender's serialized public key package.
    Done { public_key_package_hash: [u8; 32] },
}

impl DkgMessage {
    /// `MAGIC | VERSION | kind | session | body`, lengths big-endian.
    pub fn encode(&self, session: &SessionId) -> Vec<u8> {
        let mut out = Vec::with_capacity(64);
        out.extend_from_slice(MAGIC);
        out.push(VERSION);
        let put_bytes = |out: &mut Vec<u8>, b: &[u8]| {
            out.extend_from_slice(&u32::try_from(b.len()).unwrap_or(u32::MAX).to_be_bytes());
            out.extend_from_slice(b);
        };
        match self {
            DkgMessage::Round1 { package, signature } => {
                out.push(KIND_ROUND1);
                out.extend_from_slice(session);
                put_bytes(&mut out, package);
                put_bytes(&mut out, signature);
            }
            DkgMessage::Echo { entries } => {
                out.push(KIND_ECHO);
                out.extend_from_slice(session);
                out.extend_from_slice(
                    &u16::try_from(entries.len())
                        .unwrap_or(u16::MAX)
                        .to_be_bytes(),
                );
                for (member, (hash, sig)) in entries {
                    out.extend_from_slice(&member.to_be_bytes());
                    out.extend_from_slice(hash);
                    put_bytes(&mut out, sig);
                }
            }
            DkgMessage::Round2 { package } => {
                out.push(KIND_ROUND2);
                out.extend_from_slice(session);
                put_bytes(&mut out, package);
            }
            DkgMessage::Done {
                public_key_package_hash,
            } => {
                out.push(KIND_DONE);
                out.extend_from_slice(session);
                out.extend_from_slice(public_key_package_hash);
            }
        }
        out
    }

    /// Decode; returns the session id and the message.
    pub fn decode(bytes: &[u8]) -> Result<(SessionId, DkgMessage), DkgDecodeError> {
        let mut r = Reader(bytes);
        if r.take(4)? != MAGIC {
            return Err(DkgDecodeError::NotDkg);
        }
        let version = r.u8()?;
        if version != VERSION {
            return Err(DkgDecodeError::Version(version));
        }
        let kind = r.u8()?;
        let session = r.array::<32>()?;
        let msg = match kind {
            KIND_ROUND1 => DkgMessage::Round1 {
                package: r.bytes()?.to_vec(),
                signature: r.bytes()?.to_vec(),
            },
            KIND_ECHO => {
                let count = r.u16()?;
                let mut entries = BTreeMap::new();
                for _ in 0..count {
                    let member = r.u16()?;
                    let hash = r.array::<32>()?;
                    let sig = r.bytes()?.to_vec();
                    if entries.insert(member, (hash, sig)).is_some() {
                        return Err(DkgDecodeError::DuplicateEcho(member));
                    }
                }
                DkgMessage::Echo { entries }
            }
            KIND_ROUND2 => DkgMessage::Round2 {
                package: r.bytes()?.to_vec(),
            },
            KIND_DONE => DkgMessage::Done {
                public_key_package_hash: r.array::<32>()?,
            },
            other => return Err(DkgDecodeError::UnknownKind(other)),
        };
        if !r.0.is_empty() {
            return Err(DkgDecodeError::TrailingBytes(r.0.len()));
        }
        Ok((session, msg))
    }
}

/// Why bytes are not a DKG message.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DkgDecodeError {
    #[error("not a DKG message (no SDKG magic)")]
    NotDkg,
    #[error(
        "unsupported DKG message version {0}; every member must run the same sibyl release for the ceremony"
    )]
    Version(u8),
    #[error("DKG message truncated")]
    Truncated,
    #[error("unknown DKG message kind {0}")]
    UnknownKind(u8),
    #[error("echo lists member {0} twice")]
    DuplicateEcho(u16),
    #[error("{0} trailing bytes after the DKG message")]
    TrailingBytes(usize),
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], DkgDecodeError> {
        if self.0.len() < n {
            return Err(DkgDecodeError::Truncated);
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Ok(head)
    }
    fn u8(&mut self) -> Result<u8, DkgDecodeError> {
        let [b] = self.array::<1>()?;
        Ok(b)
    }
    fn u16(&mut self) -> Result<u16, DkgDecodeError> {
        Ok(u16::from_be_bytes(self.array::<2>()?))
    }
    fn array<const N: usize>(&mut self) -> Result<[u8; N], DkgDecodeError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }
    fn bytes(&mut self) -> Result<&'a [u8], DkgDecodeError> {
        let len = u32::from_be_bytes(self.array::<4>()?);
        self.take(usize::try_from(len).map_err(|_| DkgDecodeError::Truncated)?)
    }
}
