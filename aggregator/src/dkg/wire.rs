//! The DKG's wire format: `MAGIC | VERSION | kind | session | body`, lengths
//! big-endian (docs/PROTOCOL.md), the session id and the statement a member
//! signs for its round-1 package.

use sha3::{Digest, Sha3_256};
use std::collections::BTreeMap;

use crate::report::ConfigDigest;

const MAGIC: &[u8; 4] = b"SDKG";
const VERSION: u8 = 2;
const KIND_ROUND1: u8 = 1;
const KIND_ECHO: u8 = 2;
const KIND_ROUND2: u8 = 3;
const KIND_DONE: u8 = 4;
const KIND_NONCE: u8 = 5;
const KIND_COMPLAINT: u8 = 6;

/// A ceremony's session id (32 bytes); every message carries it.
pub type SessionId = [u8; 32];

pub(crate) fn sha3(parts: &[&[u8]]) -> [u8; 32] {
    let mut h = Sha3_256::new();
    for p in parts {
        h.update(p);
    }
    h.finalize().into()
}

/// The ceremony's session id: committee digest and suite (`C::ID`). Every
/// message's header carries it (it routes messages to their ceremony); what
/// members sign is bound to the run instead ([`run_session`]).
pub fn session_id<C: frost_core::Ciphersuite>(digest: &ConfigDigest) -> SessionId {
    sha3(&[b"sibyl-dkg-session-v1", &digest.0, C::ID.as_bytes()])
}

/// A refresh's session id: the ceremony's ([`session_id`]) and the group key
/// being refreshed (hex), so its messages never mix with a DKG's or with
/// another key's refresh.
pub fn refresh_session_id<C: frost_core::Ciphersuite>(
    digest: &ConfigDigest,
    group_key_hex: &str,
) -> SessionId {
    sha3(&[
        b"sibyl-refresh-session-v1",
        &session_id::<C>(digest),
        group_key_hex.as_bytes(),
    ])
}

/// Every member's nonce contribution to one run: member -> 32 random bytes.
pub type RunNonces = BTreeMap<u16, [u8; 32]>;

/// The run's session id: the ceremony's session id and every member's fresh
/// nonce. Round-1 and round-2 signatures cover it, so a statement signed in
/// an earlier run (same committee, same suite) never verifies in this one.
pub fn run_session(session: &SessionId, nonces: &RunNonces) -> SessionId {
    let mut h = Sha3_256::new();
    h.update(b"sibyl-dkg-run-v2");
    h.update(session);
    for (member, nonce) in nonces {
        h.update(member.to_be_bytes());
        h.update(nonce);
    }
    h.finalize().into()
}

/// What a member signs with its identity key for its round-1 package
/// (`session`: the run's, [`run_session`]).
pub fn round1_statement(session: &SessionId, from: u16, hash: &[u8; 32]) -> Vec<u8> {
    let mut m = b"sibyl-dkg-round1".to_vec();
    m.extend_from_slice(session);
    m.extend_from_slice(&from.to_be_bytes());
    m.extend_from_slice(hash);
    m
}

/// What member `from` signs for the round-2 package it sends member `to`
/// (`hash`: SHA3-256 of the package; `session`: the run's). A recipient who
/// finds the share bad reveals the package with this signature
/// ([`DkgMessage::Complaint`]) and anyone can check who lied.
pub fn round2_statement(session: &SessionId, from: u16, to: u16, hash: &[u8; 32]) -> Vec<u8> {
    let mut m = b"sibyl-dkg-round2".to_vec();
    m.extend_from_slice(session);
    m.extend_from_slice(&from.to_be_bytes());
    m.extend_from_slice(&to.to_be_bytes());
    m.extend_from_slice(hash);
    m
}

/// Echoed round-1 packages: member -> (package hash, member's signature).
pub type EchoEntries = BTreeMap<u16, ([u8; 32], Vec<u8>)>;

/// A DKG wire message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DkgMessage {
    /// The sender's fresh nonce for this run (first message of a suite).
    Nonce { nonce: [u8; 32] },
    /// Every member's nonce as the sender received it (its run session),
    /// the sender's round-1 package and its identity signature over
    /// [`round1_statement`] in that run session.
    Round1 {
        nonces: RunNonces,
        package: Vec<u8>,
        signature: Vec<u8>,
    },
    /// For each member: hash of its round-1 package and its signature.
    Echo { entries: EchoEntries },
    /// The sender's round-2 package for the recipient (point to point) and
    /// its identity signature over [`round2_statement`].
    Round2 {
        package: Vec<u8>,
        signature: Vec<u8>,
    },
    /// SHA3-256 of the sender's serialized public key package.
    Done { public_key_package_hash: [u8; 32] },
    /// The sender's round-2 package from `accused`, revealed with
    /// `accused`'s signature, because its share does not match `accused`'s
    /// commitment (to every member).
    Complaint {
        accused: u16,
        package: Vec<u8>,
        signature: Vec<u8>,
    },
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
            DkgMessage::Nonce { nonce } => {
                out.push(KIND_NONCE);
                out.extend_from_slice(session);
                out.extend_from_slice(nonce);
            }
            DkgMessage::Round1 {
                nonces,
                package,
                signature,
            } => {
                out.push(KIND_ROUND1);
                out.extend_from_slice(session);
                out.extend_from_slice(
                    &u16::try_from(nonces.len())
                        .unwrap_or(u16::MAX)
                        .to_be_bytes(),
                );
                for (member, nonce) in nonces {
                    out.extend_from_slice(&member.to_be_bytes());
                    out.extend_from_slice(nonce);
                }
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
            DkgMessage::Round2 { package, signature } => {
                out.push(KIND_ROUND2);
                out.extend_from_slice(session);
                put_bytes(&mut out, package);
                put_bytes(&mut out, signature);
            }
            DkgMessage::Complaint {
                accused,
                package,
                signature,
            } => {
                out.push(KIND_COMPLAINT);
                out.extend_from_slice(session);
                out.extend_from_slice(&accused.to_be_bytes());
                put_bytes(&mut out, package);
                put_bytes(&mut out, signature);
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
            KIND_NONCE => DkgMessage::Nonce {
                nonce: r.array::<32>()?,
            },
            KIND_ROUND1 => {
                let count = r.u16()?;
                let mut nonces = BTreeMap::new();
                for _ in 0..count {
                    let member = r.u16()?;
                    if nonces.last_key_value().is_some_and(|(m, _)| *m > member) {
                        return Err(DkgDecodeError::OutOfOrder(member));
                    }
                    if nonces.insert(member, r.array::<32>()?).is_some() {
                        return Err(DkgDecodeError::DuplicateNonce(member));
                    }
                }
                DkgMessage::Round1 {
                    nonces,
                    package: r.bytes()?.to_vec(),
                    signature: r.bytes()?.to_vec(),
                }
            }
            KIND_ECHO => {
                let count = r.u16()?;
                let mut entries = BTreeMap::new();
                for _ in 0..count {
                    let member = r.u16()?;
                    let hash = r.array::<32>()?;
                    let sig = r.bytes()?.to_vec();
                    if entries.last_key_value().is_some_and(|(m, _)| *m > member) {
                        return Err(DkgDecodeError::OutOfOrder(member));
                    }
                    if entries.insert(member, (hash, sig)).is_some() {
                        return Err(DkgDecodeError::DuplicateEcho(member));
                    }
                }
                DkgMessage::Echo { entries }
            }
            KIND_ROUND2 => DkgMessage::Round2 {
                package: r.bytes()?.to_vec(),
                signature: r.bytes()?.to_vec(),
            },
            KIND_COMPLAINT => DkgMessage::Complaint {
                accused: r.u16()?,
                package: r.bytes()?.to_vec(),
                signature: r.bytes()?.to_vec(),
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
    #[error("round-1 message lists member {0}'s nonce twice")]
    DuplicateNonce(u16),
    /// A list (nonces, echo entries) not in ascending member order: the
    /// encoding is canonical, one byte string per message.
    #[error("DKG message lists member {0} after a higher member (lists are in ascending order)")]
    OutOfOrder(u16),
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
