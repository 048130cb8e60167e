//! What the round driver needs from the network, and the envelope that
//! tells its message kinds apart.
//!
//! The libp2p `Net` implements [`Transport`] for `sibyl run`; tests use the
//! in-memory [`MemoryTransport`]. Every point-to-point payload is wrapped in
//! an [`Envelope`]: round-protocol messages (signed by their sender inside)
//! and the catch-up requests and replies a restarted member uses to fetch the
//! reports it missed.

use sibyl_aggregator::{Reader, Round, Writer};
use std::collections::BTreeMap;
use std::future::Future;
use tokio::sync::mpsc;

/// An event from the network.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TransportEvent {
    /// A point-to-point message from member `from` (an encoded [`Envelope`]).
    Message {
        from: u16,
        bytes: Vec<u8>,
    },
    /// A gossiped signed report (wire codec), origin member `from`.
    Report {
        from: u16,
        bytes: Vec<u8>,
    },
    PeerConnected(u16),
    PeerDisconnected(u16),
    /// The transport dropped something inbound (already counted there).
    Dropped {
        reason: &'static str,
    },
    /// The transport stopped; the driver ends.
    Closed,
}

/// The network as the round driver uses it. `next_event` must be cancel-safe
/// (it sits in a `tokio::select!`).
pub trait Transport: Send {
    fn next_event(&mut self) -> impl Future<Output = TransportEvent> + Send;
    fn send(&mut self, to: u16, bytes: Vec<u8>) -> Result<(), String>;
    fn broadcast(&mut self, bytes: Vec<u8>) -> Result<(), String>;
    fn publish_report(&mut self, bytes: Vec<u8>) -> Result<(), String>;
    /// Hands what `send` and `broadcast` queued to the network now, without
    /// waiting for an event. The driver calls it before it waits on the
    /// signing ledger, so messages already decided (the leader's proposal)
    /// do not wait for that fsync too. A transport that sends at once has
    /// nothing to do.
    fn flush(&mut self) {}
    /// When each member was last heard from (unix ms) by what the transport
    /// sees and does not deliver, like ping replies. The driver counts the
    /// messages and reports it is handed itself.
    fn last_seen_ms(&self) -> BTreeMap<u16, u64> {
        BTreeMap::new()
    }
}

/// Largest signed report accepted in a catch-up reply.
pub const MAX_REPORT_BYTES: usize = 4 << 20;

/// Most reports one catch-up reply carries.
pub const CATCHUP_PAGE: u16 = 128;

const TAG_ROUND: u8 = 1;
/// Tags 2 and 3 were the first catch-up request and reply ("after round r",
/// no covered range); they are refused as unknown.
const TAG_COMMITMENTS: u8 = 4;
const TAG_CATCHUP_REQUEST: u8 = 5;
const TAG_CATCHUP_REPLY: u8 = 6;
const TAG_CEREMONY: u8 = 7;

/// Largest key-ceremony message carried (a 16-member DKG's are a few KiB).
pub const MAX_CEREMONY_BYTES: usize = 1 << 20;

/// Largest serialized commitment a hint may carry (either suite's is < 100).
const MAX_COMMITMENT_BYTES: usize = 256;

/// A point-to-point payload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Envelope {
    /// A round-protocol message (observation, proposal, share, report).
    Round(Vec<u8>),
    /// "Send me up to `limit` stored reports with `from <= round < end`"
    /// (`end = Round::MAX`: up to the newest).
    CatchupRequest { from: Round, end: Round, limit: u16 },
    /// Signed reports in the wire codec, oldest first, and the range they
    /// cover: the sender holds no other report with `from <= round < end`
    /// (`end == from`: it covered nothing, e.g. it holds nothing that new).
    CatchupReply {
        from: Round,
        end: Round,
        reports: Vec<Vec<u8>>,
    },
    /// The sender's serialized first-attempt commitments for its next
    /// observation (one per suite, `Node::next_commitments`), sent mid-round so receivers parse them before they are
    /// needed ([`sibyl_aggregator::round::Node::warm_commitments`]). A hint:
    /// unsigned, since only byte-for-byte equal commitments of a signed
    /// observation ever use the parse.
    Commitments(Vec<u8>),
    /// A key ceremony's message (the in-node refresh, [`crate::rekey`]):
    /// the ceremony authenticates and decodes it.
    Ceremony(Vec<u8>),
}

/// Why an envelope could not be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EnvelopeError {
    #[error("empty message")]
    Empty,
    #[error("unknown message tag {0}")]
    UnknownTag(u8),
    #[error("malformed {what}: {reason}")]
    Malformed { what: &'static str, reason: String },
}

impl Envelope {
    pub fn encode(&self) -> Vec<u8> {
        match self {
            Envelope::Round(bytes) => {
                let mut out = Vec::with_capacity(bytes.len() + 1);
                out.push(TAG_ROUND);
                out.extend_from_slice(bytes);
                out
            }
            Envelope::CatchupRequest { from, end, limit } => {
                let mut w = Writer::new();
                w.u8(TAG_CATCHUP_REQUEST).u64(*from).u64(*end).u16(*limit);
                w.finish()
            }
            Envelope::CatchupReply { from, end, reports } => {
                let mut w = Writer::new();
                w.u8(TAG_CATCHUP_REPLY).u64(*from).u64(*end);
                w.seq(reports.iter(), |w, r| {
                    w.bytes(r);
                });
                w.finish()
            }
            Envelope::Commitments(bytes) => {
                let mut w = Writer::new();
                w.u8(TAG_COMMITMENTS).bytes(bytes);
                w.finish()
            }
            Envelope::Ceremony(bytes) => {
                let mut w = Writer::new();
                w.u8(TAG_CEREMONY).bytes(bytes);
                w.finish()
            }
        }
    }

    pub fn decode(bytes: &[u8]) -> Result<Envelope, EnvelopeError> {
        let (&tag, rest) = bytes.split_first().ok_or(EnvelopeError::Empty)?;
        let bad = |what: &'static str| {
            move |e: sibyl_aggregator::DecodeError| EnvelopeError::Malformed {
                what,
                reason: e.to_string(),
            }
        };
        match tag {
            TAG_ROUND => Ok(Envelope::Round(rest.to_vec())),
            TAG_CATCHUP_REQUEST => {
                let what = "catch-up request";
                let mut r = Reader::new(rest);
                let from = r.u64(what).map_err(bad(what))?;
                let end = r.u64(what).map_err(bad(what))?;
                let limit = r.u16(what).map_err(bad(what))?;
                r.finish(what).map_err(bad(what))?;
                if end <= from {
                    return Err(EnvelopeError::Malformed {
                        what,
                        reason: format!("empty range {from}..{end}"),
                    });
                }
                Ok(Envelope::CatchupRequest { from, end, limit })
            }
            TAG_CATCHUP_REPLY => {
                let what = "catch-up reply";
                let mut r = Reader::new(rest);
                let from = r.u64(what).map_err(bad(what))?;
                let end = r.u64(what).map_err(bad(what))?;
                if end < from {
                    return Err(EnvelopeError::Malformed {
                        what,
                        reason: format!("covered range {from}..{end} ends before it starts"),
                    });
                }
                let count = r.u32(what).map_err(bad(what))?;
                if count > u32::from(CATCHUP_PAGE) {
                    return Err(EnvelopeError::Malformed {
                        what,
                        reason: format!("{count} reports is more than a page ({CATCHUP_PAGE})"),
                    });
                }
                let mut reports = Vec::with_capacity(count as usize);
                for _ in 0..count {
                    reports.push(r.bytes(what, MAX_REPORT_BYTES).map_err(bad(what))?.to_vec());
                }
                r.finish(what).map_err(bad(what))?;
                Ok(Envelope::CatchupReply { from, end, reports })
            }
            TAG_COMMITMENTS => {
                let what = "commitments hint";
                let mut r = Reader::new(rest);
                let bytes = r
                    .bytes(what, MAX_COMMITMENT_BYTES)
                    .map_err(bad(what))?
                    .to_vec();
                r.finish(what).map_err(bad(what))?;
                Ok(Envelope::Commitments(bytes))
            }
            TAG_CEREMONY => {
                let what = "ceremony message";
                let mut r = Reader::new(rest);
                let bytes = r
                    .bytes(what, MAX_CEREMONY_BYTES)
                    .map_err(bad(what))?
                    .to_vec();
                r.finish(what).map_err(bad(what))?;
                Ok(Envelope::Ceremony(bytes))
            }
            other => Err(EnvelopeError::UnknownTag(other)),
        }
    }
}

/// An in-memory committee network for tests: every member's transport
/// delivers to the others' queues. A member can be cut off to simulate a
/// crash or a partition.
pub struct MemoryNetwork;

#[derive(Clone)]
struct Wires {
    peers: std::sync::Arc<std::sync::Mutex<BTreeMap<u16, mpsc::UnboundedSender<TransportEvent>>>>,
    cut: std::sync::Arc<std::sync::Mutex<std::collections::BTreeSet<u16>>>,
}

/// One member's end of a [`MemoryNetwork`].
pub struct MemoryTransport {
    me: u16,
    rx: mpsc::UnboundedReceiver<TransportEvent>,
    wires: Wires,
}

/// Controls a [`MemoryNetwork`] from a test.
#[derive(Clone)]
pub struct MemoryControl {
    wires: Wires,
}

impl MemoryControl {
    /// Cut member `index` off (nothing in or out) or reconnect it.
    pub fn set_cut(&self, index: u16, cut: bool) {
        if let Ok(mut c) = self.wires.cut.lock() {
            if cut {
                c.insert(index);
            } else {
                c.remove(&index);
            }
        }
    }

    /// Replace member `index`'s transport (a restarted member). As a real
    /// connection would, it tells both sides: the others that `index` is
    /// connected, and `index` that each of them is.
    pub fn reattach(&self, index: u16) -> MemoryTransport {
        let (tx, rx) = mpsc::unbounded_channel();
        if let Ok(mut p) = self.wires.peers.lock() {
            for (&other, other_tx) in p.iter() {
                if other != index {
                    let _ = other_tx.send(TransportEvent::PeerConnected(index));
                    let _ = tx.send(TransportEvent::PeerConnected(other));
                }
            }
            p.insert(index, tx);
        }
        MemoryTransport {
            me: index,
            rx,
            wires: self.wires.clone(),
        }
    }

    /// Deliver raw bytes to member `to` as if member `from` sent them.
    pub fn inject(&self, from: u16, to: u16, bytes: Vec<u8>) {
        if let Ok(p) = self.wires.peers.lock()
            && let Some(tx) = p.get(&to)
        {
            let _ = tx.send(TransportEvent::Message { from, bytes });
        }
    }

    /// Delivers `bytes` to member `to` as a gossiped report from `from`.
    pub fn inject_report(&self, from: u16, to: u16, bytes: Vec<u8>) {
        if let Ok(p) = self.wires.peers.lock()
            && let Some(tx) = p.get(&to)
        {
            let _ = tx.send(TransportEvent::Report { from, bytes });
        }
    }
}

impl MemoryNetwork {
    /// Transports for members `1..=n` plus a controller.
    pub fn build(n: u16) -> (Vec<MemoryTransport>, MemoryControl) {
        let wires = Wires {
            peers: Default::default(),
            cut: Default::default(),
        };
        let control = MemoryControl {
            wires: wires.clone(),
        };
        let transports = (1..=n).map(|i| control.reattach(i)).collect();
        (transports, control)
    }
}

impl MemoryTransport {
    fn deliver(&self, to: u16, event: TransportEvent) -> Result<(), String> {
        let cut = self.wires.cut.lock().map_err(|e| e.to_string())?;
        if cut.contains(&self.me) || cut.contains(&to) {
            return Ok(()); // lost on the wire
        }
        drop(cut);
        let peers = self.wires.peers.lock().map_err(|e| e.to_string())?;
        match peers.get(&to) {
            Some(tx) => {
                let _ = tx.send(event);
                Ok(())
            }
            None => Err(format!("no member {to}")),
        }
    }

    fn others(&self) -> Vec<u16> {
        self.wires
            .peers
            .lock()
            .map(|p| p.keys().copied().filter(|&i| i != self.me).collect())
            .unwrap_or_default()
    }
}

impl Transport for MemoryTransport {
    async fn next_event(&mut self) -> TransportEvent {
        self.rx.recv().await.unwrap_or(TransportEvent::Closed)
    }

    fn send(&mut self, to: u16, bytes: Vec<u8>) -> Result<(), String> {
        let from = self.me;
        self.deliver(to, TransportEvent::Message { from, bytes })
    }

    fn broadcast(&mut self, bytes: Vec<u8>) -> Result<(), String> {
        for to in self.others() {
            self.send(to, bytes.clone())?;
        }
        Ok(())
    }

    fn publish_report(&mut self, bytes: Vec<u8>) -> Result<(), String> {
        let from = self.me;
        for to in self.others() {
            self.deliver(
                to,
                TransportEvent::Report {
                    from,
                    bytes: bytes.clone(),
                },
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelopes_round_trip() {
        for e in [
            Envelope::Round(vec![1, 2, 3]),
            Envelope::Round(vec![]),
            Envelope::CatchupRequest {
                from: 0,
                end: Round::MAX,
                limit: 12,
            },
            Envelope::CatchupRequest {
                from: 40,
                end: 61,
                limit: 128,
            },
            Envelope::CatchupReply {
                from: 0,
                end: 2,
                reports: vec![vec![9; 10], vec![]],
            },
            Envelope::CatchupReply {
                from: 7,
                end: 7,
                reports: vec![],
            },
            Envelope::Commitments(vec![0; 69]),
            Envelope::Ceremony(b"SDKG rest".to_vec()),
            Envelope::Ceremony(Vec::new()),
        ] {
            assert_eq!(Envelope::decode(&e.encode()), Ok(e));
        }
    }

    #[test]
    fn malformed_envelopes_are_refused() {
        assert_eq!(Envelope::decode(&[]), Err(EnvelopeError::Empty));
        assert_eq!(Envelope::decode(&[9, 1]), Err(EnvelopeError::UnknownTag(9)));
        assert!(matches!(
            Envelope::decode(&[TAG_CATCHUP_REQUEST, 1, 2]),
            Err(EnvelopeError::Malformed { .. })
        ));
        // A commitments hint larger than any commitment.
        let mut w = Writer::new();
        w.u8(TAG_COMMITMENTS)
            .bytes(&[0u8; MAX_COMMITMENT_BYTES + 1]);
        assert!(Envelope::decode(&w.finish()).is_err());
        let mut long = Envelope::CatchupRequest {
            from: 1,
            end: 2,
            limit: 1,
        }
        .encode();
        long.push(0);
        assert!(Envelope::decode(&long).is_err(), "trailing bytes");
        // A reply claiming more reports than a page.
        let mut w = Writer::new();
        w.u8(TAG_CATCHUP_REPLY).u64(0).u64(10).u32(1_000_000);
        assert!(Envelope::decode(&w.finish()).is_err());
        // Empty or inverted ranges.
        let mut w = Writer::new();
        w.u8(TAG_CATCHUP_REQUEST).u64(5).u64(5).u16(1);
        assert!(Envelope::decode(&w.finish()).is_err(), "empty request");
        let mut w = Writer::new();
        w.u8(TAG_CATCHUP_REPLY).u64(5).u64(4).u32(0);
        assert!(Envelope::decode(&w.finish()).is_err(), "inverted reply");
        // The first catch-up messages (tags 2 and 3) are refused.
        let mut w = Writer::new();
        w.u8(2).u64(0).u16(1);
        assert_eq!(
            Envelope::decode(&w.finish()),
            Err(EnvelopeError::UnknownTag(2))
        );
        assert_eq!(Envelope::decode(&[3, 0]), Err(EnvelopeError::UnknownTag(3)));
    }
}
