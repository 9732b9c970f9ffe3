//! A buffered packet connection over any async byte stream.
//!
//! Used for handshakes, auth, the admin port and the backend side of state
//! replay; the relay reads `rbuf` directly so it can forward bytes without
//! joining or copying packets.

use crate::packet::{header, Packet, HEADER, MAX_PAYLOAD};
use crate::ProtoError;
use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Initial buffer capacity; buffers grow only as large packets require and
/// are shrunk back by [`PacketStream::shrink`].
pub const INITIAL_BUF: usize = 4096;

pub struct PacketStream<S> {
    pub io: S,
    pub rbuf: BytesMut,
    pub wbuf: BytesMut,
    /// Largest logical packet accepted by `read_packet`.
    pub max_packet: usize,
}

impl<S> PacketStream<S> {
    pub fn new(io: S) -> Self {
        PacketStream {
            io,
            rbuf: BytesMut::with_capacity(INITIAL_BUF),
            wbuf: BytesMut::with_capacity(INITIAL_BUF),
            max_packet: 64 << 20,
        }
    }

    /// Replaces the transport (e.g. after a TLS upgrade), keeping buffers.
    pub fn map<T>(self, f: impl FnOnce(S) -> T) -> PacketStream<T> {
        PacketStream {
            io: f(self.io),
            rbuf: self.rbuf,
            wbuf: self.wbuf,
            max_packet: self.max_packet,
        }
    }

    /// Queues one logical packet (split if needed) for the next flush.
    pub fn write_packet(&mut self, seq: &mut u8, payload: &[u8]) {
        crate::packet::put_packet(&mut self.wbuf, seq, payload);
    }

    /// Gives back memory a large packet made the buffers grow to.
    pub fn shrink(&mut self) {
        const KEEP: usize = 64 * 1024;
        if self.rbuf.is_empty() && self.rbuf.capacity() > KEEP {
            self.rbuf = BytesMut::with_capacity(INITIAL_BUF);
        }
        if self.wbuf.is_empty() && self.wbuf.capacity() > KEEP {
            self.wbuf = BytesMut::with_capacity(INITIAL_BUF);
        }
    }

    /// Takes one complete logical packet out of the read buffer, if there.
    pub fn try_take_packet(&mut self) -> Result<Option<Packet>, ProtoError> {
        // Walk the physical packets to see whether the logical one is complete.
        let mut off = 0;
        let mut total = 0usize;
        let mut parts = 0usize;
        let mut first_seq = None;
        let mut last_seq = 0u8;
        loop {
            let Some((len, seq)) = header(&self.rbuf[off..]) else {
                return Ok(None);
            };
            total += len;
            if total > self.max_packet {
                return Err(ProtoError::TooLarge {
                    len: total,
                    limit: self.max_packet,
                });
            }
            if first_seq.is_none() {
                first_seq = Some(seq);
            } else if seq != last_seq.wrapping_add(1) {
                return Err(ProtoError::Sequence {
                    expected: last_seq.wrapping_add(1),
                    got: seq,
                });
            }
            last_seq = seq;
            if self.rbuf.len() < off + HEADER + len {
                // Make room for the rest now, bounded by what was announced
                // and already checked against max_packet.
                let want = off + HEADER + len - self.rbuf.len();
                self.rbuf.reserve(want.min(1 << 20));
                return Ok(None);
            }
            off += HEADER + len;
            parts += 1;
            if len < MAX_PAYLOAD {
                break;
            }
        }
        let seq = first_seq.unwrap_or(0);
        let payload = if parts == 1 {
            self.rbuf.advance(HEADER);
            self.rbuf.split_to(total).freeze()
        } else {
            let mut joined = BytesMut::with_capacity(total);
            while parts > 0 {
                let (len, _) = header(&self.rbuf).unwrap_or((0, 0));
                self.rbuf.advance(HEADER);
                joined.extend_from_slice(&self.rbuf[..len]);
                self.rbuf.advance(len);
                parts -= 1;
            }
            joined.freeze()
        };
        Ok(Some(Packet {
            seq,
            last_seq,
            payload,
        }))
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> PacketStream<S> {
    /// Reads more bytes into `rbuf`; `Closed` at end of stream.
    pub async fn fill(&mut self) -> Result<usize, ProtoError> {
        if self.rbuf.capacity() - self.rbuf.len() < 1024 {
            self.rbuf.reserve(INITIAL_BUF);
        }
        let n = self.io.read_buf(&mut self.rbuf).await?;
        if n == 0 {
            return Err(ProtoError::Closed);
        }
        Ok(n)
    }

    /// Reads one logical packet.
    pub async fn read_packet(&mut self) -> Result<Packet, ProtoError> {
        loop {
            if let Some(p) = self.try_take_packet()? {
                return Ok(p);
            }
            self.fill().await?;
        }
    }

    /// Reads one packet and checks its sequence id.
    pub async fn read_packet_seq(&mut self, expected: u8) -> Result<Packet, ProtoError> {
        let p = self.read_packet().await?;
        if p.seq != expected {
            return Err(ProtoError::Sequence {
                expected,
                got: p.seq,
            });
        }
        Ok(p)
    }

    /// Writes everything queued.
    pub async fn flush(&mut self) -> Result<(), ProtoError> {
        if !self.wbuf.is_empty() {
            self.io.write_all(&self.wbuf).await?;
            self.wbuf.clear();
        }
        self.io.flush().await?;
        Ok(())
    }

    /// Queues and flushes one packet.
    pub async fn send(&mut self, seq: &mut u8, payload: &[u8]) -> Result<(), ProtoError> {
        self.write_packet(seq, payload);
        self.flush().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::put_packet;

    #[tokio::test]
    async fn joins_split_packets_and_checks_limits() {
        let (a, b) = tokio::io::duplex(1 << 20);
        let mut w = PacketStream::new(a);
        let mut r = PacketStream::new(b);
        r.max_packet = 32 << 20;
        let big = vec![9u8; MAX_PAYLOAD + 5];
        let mut seq = 0;
        let writer = tokio::spawn(async move {
            w.write_packet(&mut seq, &big);
            w.write_packet(&mut seq, b"next");
            w.flush().await.unwrap();
            w
        });
        let p = r.read_packet().await.unwrap();
        assert_eq!(p.payload.len(), MAX_PAYLOAD + 5);
        assert_eq!((p.seq, p.last_seq), (0, 1));
        let p2 = r.read_packet().await.unwrap();
        assert_eq!(&p2.payload[..], b"next");
        assert_eq!(p2.seq, 2);
        drop(writer.await.unwrap());
    }

    #[test]
    fn refuses_oversized_header_without_allocating() {
        let mut s = PacketStream::new(());
        s.max_packet = 1024;
        s.rbuf.extend_from_slice(&[0xff, 0xff, 0xff, 0x00]);
        assert!(matches!(
            s.try_take_packet(),
            Err(ProtoError::TooLarge { .. })
        ));
        assert!(s.rbuf.capacity() < 1 << 20);
    }

    #[test]
    fn refuses_bad_continuation_sequence() {
        let mut s = PacketStream::new(());
        let mut out = BytesMut::new();
        let mut seq = 0;
        put_packet(&mut out, &mut seq, &vec![0u8; MAX_PAYLOAD + 1]);
        out[HEADER + MAX_PAYLOAD + 3] = 9;
        s.rbuf = out;
        assert!(matches!(
            s.try_take_packet(),
            Err(ProtoError::Sequence { .. })
        ));
    }
}
