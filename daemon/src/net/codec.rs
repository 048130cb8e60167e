//! Request-response codec for opaque byte messages with a size limit.
//!
//! A request is a 4-byte big-endian length and that many message bytes, so the
//! receiver hands it up as soon as they are in, without waiting for the
//! sender to close its side of the stream; the response is an empty
//! acknowledgement. A request whose length is over the limit is not read at
//! all (nothing of it is buffered) and is handed up as [`Wire::Oversized`],
//! so the event loop can count it: request-response does not report failed
//! reads to the behaviour.

use std::io;

use futures::prelude::*;
use libp2p::StreamProtocol;

/// The protocol name of member-to-member messages.
pub const MESSAGE_PROTOCOL: StreamProtocol = StreamProtocol::new("/sibyl/msg/2");

/// A message on the wire: its bytes, or (inbound only) the fact that it was
/// over the size limit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Wire {
    Bytes(Vec<u8>),
    Oversized,
}

#[derive(Clone, Debug)]
pub struct BytesCodec {
    pub max_message_bytes: usize,
}

async fn read_limited<T>(io: &mut T, max: usize) -> io::Result<Wire>
where
    T: AsyncRead + Unpin + Send,
{
    let mut buf = Vec::new();
    let limit = u64::try_from(max).unwrap_or(u64::MAX).saturating_add(1);
    io.take(limit).read_to_end(&mut buf).await?;
    if buf.len() > max {
        return Ok(Wire::Oversized);
    }
    Ok(Wire::Bytes(buf))
}

impl libp2p::request_response::Codec for BytesCodec {
    type Protocol = StreamProtocol;
    type Request = Wire;
    type Response = ();

    async fn read_request<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Wire>
    where
        T: AsyncRead + Unpin + Send,
    {
        let mut len = [0u8; 4];
        io.read_exact(&mut len).await?;
        let len = usize::try_from(u32::from_be_bytes(len)).unwrap_or(usize::MAX);
        if len > self.max_message_bytes {
            return Ok(Wire::Oversized);
        }
        let mut buf = vec![0u8; len];
        io.read_exact(&mut buf).await?;
        Ok(Wire::Bytes(buf))
    }

    async fn read_response<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<()>
    where
        T: AsyncRead + Unpin + Send,
    {
        match read_limited(io, 0).await? {
            Wire::Bytes(_) => Ok(()),
            Wire::Oversized => Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "acknowledgement must be empty",
            )),
        }
    }

    async fn write_request<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        req: Wire,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        if let Wire::Bytes(bytes) = req {
            let len = u32::try_from(bytes.len())
                .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "message over 4 GiB"))?;
            // One write, so length and bytes leave in one frame.
            let mut framed = Vec::with_capacity(4 + bytes.len());
            framed.extend_from_slice(&len.to_be_bytes());
            framed.extend_from_slice(&bytes);
            io.write_all(&framed).await?;
        }
        io.close().await
    }

    async fn write_response<T>(&mut self, _: &StreamProtocol, io: &mut T, _: ()) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        io.close().await
    }
}
