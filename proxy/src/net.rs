//! The client transport: plain TCP or TLS, behind one type so the session
//! code does not care which.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;

pub enum Transport {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

/// A client socket and the bytes moved on it since the last
/// [`ClientIo::take_bytes`]: plain counters of the session's own, summed
/// into the shared metrics every 64 KiB and when the session ends, not per
/// read, write or command (a shared atomic per query is measurable).
pub struct ClientIo {
    pub transport: Transport,
    bytes_in: u64,
    bytes_out: u64,
}

impl ClientIo {
    pub fn plain(tcp: TcpStream) -> Self {
        ClientIo {
            transport: Transport::Plain(tcp),
            bytes_in: 0,
            bytes_out: 0,
        }
    }

    pub fn tls(s: TlsStream<TcpStream>) -> Self {
        ClientIo {
            transport: Transport::Tls(Box::new(s)),
            bytes_in: 0,
            bytes_out: 0,
        }
    }

    pub fn is_tls(&self) -> bool {
        matches!(self.transport, Transport::Tls(_))
    }

    /// Bytes counted and not yet taken.
    pub fn pending_bytes(&self) -> u64 {
        self.bytes_in + self.bytes_out
    }

    /// (received, sent) since the last call.
    pub fn take_bytes(&mut self) -> (u64, u64) {
        (
            std::mem::take(&mut self.bytes_in),
            std::mem::take(&mut self.bytes_out),
        )
    }
}

fn count_out(n: &mut u64, r: Poll<io::Result<usize>>) -> Poll<io::Result<usize>> {
    if let Poll::Ready(Ok(k)) = &r {
        *n += *k as u64;
    }
    r
}

impl AsyncRead for ClientIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let me = self.get_mut();
        let before = buf.filled().len();
        let r = match &mut me.transport {
            Transport::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Transport::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        };
        me.bytes_in += (buf.filled().len() - before) as u64;
        r
    }
}

impl AsyncWrite for ClientIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let me = self.get_mut();
        let r = match &mut me.transport {
            Transport::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Transport::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        };
        count_out(&mut me.bytes_out, r)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let me = self.get_mut();
        let r = match &mut me.transport {
            Transport::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Transport::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        };
        count_out(&mut me.bytes_out, r)
    }

    fn is_write_vectored(&self) -> bool {
        match &self.transport {
            Transport::Plain(s) => s.is_write_vectored(),
            Transport::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().transport {
            Transport::Plain(s) => Pin::new(s).poll_flush(cx),
            Transport::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().transport {
            Transport::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Transport::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// Answers a connection that will not get a handshake (too many
/// connections, a throttled address) with one ERR packet, waiting at most
/// a second for a client that does not read, and lets it go.
pub async fn refuse(tcp: TcpStream, e: &concord_protocol::err::ErrPacket) {
    if let Some((tcp, rest)) = refuse_now(tcp, e) {
        refuse_rest(tcp, &rest).await;
    }
}

/// Writes the refusal without waiting; what the socket could not take yet
/// comes back with it (then [`refuse_rest`]), else (all sent, or the peer
/// already gone) the socket is closed.
pub fn refuse_now(
    tcp: TcpStream,
    e: &concord_protocol::err::ErrPacket,
) -> Option<(TcpStream, bytes::BytesMut)> {
    let mut buf = bytes::BytesMut::new();
    let mut seq = 0;
    concord_protocol::packet::put_packet(&mut buf, &mut seq, &e.to_payload());
    // Straight to the socket: tokio's `try_write` refuses before the
    // driver has seen the new socket writable, which it has not yet here.
    let sent = match socket2::SockRef::from(&tcp).send(&buf) {
        Ok(n) => n,
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => 0,
        Err(_) => return None,
    };
    if sent >= buf.len() {
        return None;
    }
    bytes::Buf::advance(&mut buf, sent);
    Some((tcp, buf))
}

/// The rest of a refusal, for at most a second.
pub async fn refuse_rest(mut tcp: TcpStream, rest: &[u8]) {
    use tokio::io::AsyncWriteExt;
    let _ = tokio::time::timeout(std::time::Duration::from_secs(1), tcp.write_all(rest)).await;
}

/// Low-latency socket options for both client and backend sockets.
pub fn tune(stream: &TcpStream) {
    let _ = stream.set_nodelay(true);
    let sock = socket2::SockRef::from(stream);
    let _ = sock.set_keepalive(true);
}
