//! The libp2p committee network ([`Net`]) as the driver's [`Transport`];
//! tests drive the same driver over `transport::MemoryTransport`.

use super::transport::{Transport, TransportEvent};
use crate::net::{Net, NetEvent};

impl Transport for Net {
    async fn next_event(&mut self) -> TransportEvent {
        match Net::next_event(self).await {
            NetEvent::Message { from, bytes } => TransportEvent::Message { from, bytes },
            NetEvent::Report { from, bytes } => TransportEvent::Report { from, bytes },
            NetEvent::PeerConnected(p) => TransportEvent::PeerConnected(p),
            NetEvent::PeerDisconnected(p) => TransportEvent::PeerDisconnected(p),
            NetEvent::Dropped { reason, .. } => TransportEvent::Dropped {
                reason: reason.as_str(),
            },
        }
    }

    fn send(&mut self, to: u16, bytes: Vec<u8>) -> Result<(), String> {
        Net::send(self, to, bytes).map_err(|e| e.to_string())
    }

    fn broadcast(&mut self, bytes: Vec<u8>) -> Result<(), String> {
        Net::broadcast(self, bytes).map_err(|e| e.to_string())
    }

    fn publish_report(&mut self, bytes: Vec<u8>) -> Result<(), String> {
        Net::publish_report(self, bytes).map_err(|e| e.to_string())
    }

    fn flush(&mut self) {
        Net::flush(self);
    }

    fn last_seen_ms(&self) -> std::collections::BTreeMap<u16, u64> {
        let now = std::time::Instant::now();
        let now_ms = crate::store::now_ms();
        self.last_seen()
            .iter()
            .map(|(&index, &at)| {
                let ago = u64::try_from(now.saturating_duration_since(at).as_millis())
                    .unwrap_or(u64::MAX);
                (index, now_ms.saturating_sub(ago))
            })
            .collect()
    }
}
