//! Member-to-member messages on one long-lived stream per direction and
//! peer (`/sibyl/msg/3`), each message a 4-byte big-endian length and its
//! bytes.
//!
//! A request-response exchange per message opened a substream, negotiated
//! its protocol, wrote, closed and waited for an acknowledgement: several
//! frames, syscalls and wakeups on both sides for every round message. Here
//! a message is one frame on a stream both sides keep open, in order.
//!
//! Each peer gets a writer task fed by a bounded queue; it opens the stream
//! on first use and again after an error (dialling if need be), waits for
//! the reader's one-byte acknowledgement of the stream (once per stream, not
//! per message), and writes each frame once more on a fresh stream if the
//! old one broke. Each inbound
//! stream gets a reader task. Both run on the runtime the [`super::Net`]
//! was built in and report to it through one channel, so limits, counting
//! and delivery stay in the event loop. A frame whose length is over the
//! limit is not read: it is reported as oversized and the stream is dropped
//! (the sender opens a new one for its next message).

use std::io;
use std::time::Duration;

use futures::{AsyncReadExt, AsyncWriteExt, StreamExt};
use libp2p::{PeerId, Stream, StreamProtocol};
use tokio::sync::mpsc;

/// A message as read: its bytes, or the fact that its length was over the
/// limit (then nothing of it was read).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Wire {
    Bytes(Vec<u8>),
    Oversized,
}

/// The protocol name of member-to-member messages.
pub const MESSAGE_PROTOCOL: StreamProtocol = StreamProtocol::new("/sibyl/msg/3");

/// Messages queued for one peer before `send` counts a failure.
pub const PEER_QUEUE: usize = 256;

/// Stream events waiting for the event loop.
pub const EVENT_QUEUE: usize = 1024;

/// What a writer task is asked to do.
#[derive(Debug)]
pub enum Outgoing {
    /// Open a fresh stream now (the connection is new), so the first round
    /// message does not wait for it.
    Open,
    Message(Vec<u8>),
}

/// What the stream tasks report to the event loop.
#[derive(Debug)]
pub enum StreamEvent {
    /// A message from `peer` (or the fact that it was over the limit).
    Inbound { peer: PeerId, wire: Wire },
    /// A message to `peer` could not be written.
    SendFailed { peer: PeerId, error: String },
}

/// Reads frames from `stream` until it ends, fails or carries an oversized
/// frame.
pub async fn read_loop(
    peer: PeerId,
    mut stream: Stream,
    events: mpsc::Sender<StreamEvent>,
    max: usize,
) {
    // Tell the writer this stream reached a reader (see `open`).
    if stream.write_all(&[ACCEPTED]).await.is_err() || stream.flush().await.is_err() {
        return;
    }
    loop {
        let mut len = [0u8; 4];
        if stream.read_exact(&mut len).await.is_err() {
            return; // closed or broken: the sender reopens
        }
        let len = usize::try_from(u32::from_be_bytes(len)).unwrap_or(usize::MAX);
        if len > max {
            let _ = events
                .send(StreamEvent::Inbound {
                    peer,
                    wire: Wire::Oversized,
                })
                .await;
            return;
        }
        let mut buf = vec![0u8; len];
        if stream.read_exact(&mut buf).await.is_err() {
            return;
        }
        // A full channel holds this reader, and the peer's stream with it
        // (flow control), until the event loop catches up.
        if events
            .send(StreamEvent::Inbound {
                peer,
                wire: Wire::Bytes(buf),
            })
            .await
            .is_err()
        {
            return;
        }
    }
}

/// Accepts inbound message streams and starts a reader for each.
pub async fn accept_loop(
    mut incoming: libp2p_stream::IncomingStreams,
    events: mpsc::Sender<StreamEvent>,
    max: usize,
) {
    while let Some((peer, stream)) = incoming.next().await {
        tokio::spawn(read_loop(peer, stream, events.clone(), max));
    }
}

/// Writes the messages queued for `peer`, one stream kept open.
pub async fn write_loop(
    mut control: libp2p_stream::Control,
    peer: PeerId,
    mut queue: mpsc::Receiver<Outgoing>,
    events: mpsc::Sender<StreamEvent>,
) {
    let mut stream: Option<Stream> = None;
    while let Some(item) = queue.recv().await {
        let bytes = match item {
            Outgoing::Open => {
                // A new connection: the old stream (if any) rode on one that
                // is gone or going.
                stream = open(&mut control, peer).await.ok();
                continue;
            }
            Outgoing::Message(bytes) => bytes,
        };
        let framed = frame(&bytes);
        let mut last_error = None;
        // A stream that broke since the last message gets one fresh retry.
        for _ in 0..2 {
            let s = match stream.as_mut() {
                Some(s) => s,
                None => match open(&mut control, peer).await {
                    Ok(s) => stream.insert(s),
                    Err(e) => {
                        last_error = Some(e);
                        break;
                    }
                },
            };
            match write_frame(s, &framed).await {
                Ok(()) => {
                    last_error = None;
                    break;
                }
                Err(e) => {
                    stream = None;
                    last_error = Some(e.to_string());
                }
            }
        }
        if let Some(error) = last_error {
            let _ = events.try_send(StreamEvent::SendFailed { peer, error });
        }
    }
}

/// The byte a reader sends first on a stream it took.
const ACCEPTED: u8 = 0x01;

/// How long a new stream may wait for the reader's byte.
const ACCEPT_TIMEOUT: Duration = Duration::from_secs(2);

/// Opens a message stream to `peer` and waits until the peer's reader holds
/// it: libp2p-stream drops an inbound stream when the acceptor has not taken
/// the previous one yet, and with optimistic negotiation the writer would
/// not learn of it before its first message was lost. Tries a few times.
async fn open(control: &mut libp2p_stream::Control, peer: PeerId) -> Result<Stream, String> {
    let mut error = String::new();
    for attempt in 0..4u32 {
        if attempt > 0 {
            tokio::time::sleep(Duration::from_millis(5 << attempt)).await;
        }
        // Bounded: a request to a connection that is being closed is never
        // answered.
        let opened =
            tokio::time::timeout(ACCEPT_TIMEOUT, control.open_stream(peer, MESSAGE_PROTOCOL));
        let mut s = match opened.await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                error = e.to_string();
                continue;
            }
            Err(_) => {
                error = "stream not opened in time".to_string();
                continue;
            }
        };
        let mut byte = [0u8; 1];
        match tokio::time::timeout(ACCEPT_TIMEOUT, s.read_exact(&mut byte)).await {
            Ok(Ok(())) if byte[0] == ACCEPTED => return Ok(s),
            Ok(Ok(())) => error = format!("unexpected first byte {:#04x}", byte[0]),
            Ok(Err(e)) => error = format!("stream not taken: {e}"),
            Err(_) => error = "stream not taken in time".to_string(),
        }
    }
    Err(error)
}

fn frame(bytes: &[u8]) -> Vec<u8> {
    let len = u32::try_from(bytes.len()).unwrap_or(u32::MAX);
    let mut framed = Vec::with_capacity(4 + bytes.len());
    framed.extend_from_slice(&len.to_be_bytes());
    framed.extend_from_slice(bytes);
    framed
}

async fn write_frame(stream: &mut Stream, framed: &[u8]) -> io::Result<()> {
    stream.write_all(framed).await?;
    stream.flush().await
}
