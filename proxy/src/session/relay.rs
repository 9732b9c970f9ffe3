//! Moving bytes: a client command to a backend, and the backend's response
//! back, packet boundaries found by the scanner, bytes forwarded as they
//! arrive (one write per read, no re-encoding, bounded buffers).

use crate::net::ClientIo;
use bytes::Buf;
use concord_protocol::consts::{cap, status};
use concord_protocol::err::ErrPacket;
use concord_protocol::ok::OkPacket;
use concord_protocol::packet::{header, HEADER, MAX_PAYLOAD};
use concord_protocol::scan::{Scanner, Step, WHOLE_LIMIT};
use concord_protocol::{codes, PacketStream, ProtoError};
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

/// When to give up on a backend that stopped answering mid-query: the
/// health checks declared it down and nothing arrived from it for
/// `monitor.timeout`.
/// A black-holed server never resets the connection, so without this a
/// session would wait for TCP keepalive (hours). The wake-up is the
/// session's own `nudge` Notify (upkeep nudges every session each second
/// while a backend is down): waiting registers on nothing shared.
pub struct Stall<'a> {
    pub pool: &'a crate::backend::BackendPool,
    pub nudge: &'a tokio::sync::Notify,
    /// Set when the session is being killed: leave the nudge for the
    /// command loop.
    pub kill_reason: &'a std::sync::Mutex<Option<String>>,
    /// `monitor.timeout` is read from here when nudged, not per query.
    pub config: &'a arc_swap::ArcSwap<concord_config::Config>,
}

impl Stall<'_> {
    /// `progress` counts the reads that brought data; it is compared
    /// between nudges, so the hot path reads no clock for this.
    async fn wait(&self, progress: &std::sync::atomic::AtomicU64) -> ProtoError {
        let mut seen = (u64::MAX, std::time::Instant::now());
        loop {
            self.nudge.notified().await;
            let killed = self
                .kill_reason
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .is_some();
            if killed {
                // KILL SESSION / idle timeout take effect between commands:
                // put the wake-up back for the command loop and stop here.
                self.nudge.notify_one();
                return std::future::pending().await;
            }
            let now = std::time::Instant::now();
            let p = progress.load(std::sync::atomic::Ordering::Relaxed);
            if p != seen.0 {
                seen = (p, now);
                continue;
            }
            let quiet = now.duration_since(seen.1);
            if self.pool.is_down() && quiet >= self.config.load().monitor.timeout.get() {
                return ProtoError::Io(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!(
                        "the health checks declare it down and it sent nothing for {:.1}s",
                        quiet.as_secs_f64()
                    ),
                ));
            }
        }
    }
}

#[derive(Debug)]
pub enum RelayError {
    /// The client failed or misbehaved; the backend connection is in an
    /// unknown state.
    Client(ProtoError),
    /// The backend failed. `mid_packet`: the client got part of a packet,
    /// so an error packet cannot be injected cleanly. `next_seq`: the
    /// sequence id an injected error must carry (1: nothing was relayed).
    Backend {
        source: ProtoError,
        mid_packet: bool,
        next_seq: u8,
    },
}

/// A command's first bytes are in the client's read buffer.
#[derive(Clone, Copy, Debug)]
pub struct CmdHead {
    /// Payload length of the first physical packet.
    pub len: usize,
    /// The whole logical packet is in the buffer.
    pub whole: bool,
}

impl CmdHead {
    /// Bytes of the payload available for inspection.
    pub fn visible<'a>(&self, rbuf: &'a [u8]) -> &'a [u8] {
        let end = (HEADER + self.len).min(rbuf.len());
        &rbuf[HEADER.min(end)..end]
    }
}

/// Waits until the next command is readable: its header, and either the
/// whole packet (small) or its first `WHOLE_LIMIT` bytes (large).
pub fn command_ready(rbuf: &[u8], max_packet: usize) -> Result<Option<CmdHead>, ProtoError> {
    let Some((len, seq)) = header(rbuf) else {
        return Ok(None);
    };
    if seq != 0 {
        return Err(ProtoError::Sequence {
            expected: 0,
            got: seq,
        });
    }
    if len == 0 {
        return Err(ProtoError::malformed("empty command packet"));
    }
    if len > max_packet {
        return Err(ProtoError::TooLarge {
            len,
            limit: max_packet,
        });
    }
    // WHOLE_LIMIT is far below MAX_PAYLOAD: a packet this small is never split.
    let whole = len <= WHOLE_LIMIT;
    let need = HEADER + if whole { len } else { WHOLE_LIMIT };
    Ok((rbuf.len() >= need).then_some(CmdHead { len, whole }))
}

/// Sends the command at the head of the client buffer to the backend.
/// With `consume_now = false` a whole command stays in the buffer (the
/// caller drops it with [`consume`] once answered, or retries it
/// elsewhere); large streamed commands are always consumed.
pub async fn forward_command(
    client: &mut PacketStream<ClientIo>,
    backend: &mut PacketStream<TcpStream>,
    cmd: CmdHead,
    consume_now: bool,
) -> Result<(), RelayError> {
    let lost = |e: std::io::Error| RelayError::Backend {
        source: ProtoError::Io(e),
        mid_packet: false,
        next_seq: 1,
    };
    if cmd.whole {
        let n = HEADER + cmd.len;
        backend
            .io
            .write_all(&client.rbuf[..n])
            .await
            .map_err(lost)?;
        if consume_now {
            client.rbuf.advance(n);
        }
        return Ok(());
    }
    let limit = client.max_packet;
    pump(
        client,
        &mut backend.io,
        |len, _| len < MAX_PAYLOAD,
        Some(limit),
    )
    .await
    .map(|_| ())
}

/// Drops a whole command left in the buffer by `forward_command(.., false)`.
pub fn consume(client: &mut PacketStream<ClientIo>, cmd: CmdHead) {
    if cmd.whole {
        client.rbuf.advance(HEADER + cmd.len);
    }
}

/// Forwards physical packets from `src` to `dst` as bytes arrive until a
/// packet for which `last(len, seq)` holds has passed. Bodies are not
/// buffered whole. Returns the sequence id of the last packet.
async fn pump<W: AsyncWrite + Unpin>(
    src: &mut PacketStream<ClientIo>,
    dst: &mut W,
    mut last: impl FnMut(usize, u8) -> bool,
    limit: Option<usize>,
) -> Result<u8, RelayError> {
    let mut skip = 0usize; // body bytes of the current packet still to pass
    let mut finishing = false;
    let mut total = 0usize;
    let mut last_seq = 0u8;
    loop {
        let mut pos = 0;
        let buf = &src.rbuf[..];
        while pos < buf.len() {
            if skip > 0 {
                let n = skip.min(buf.len() - pos);
                pos += n;
                skip -= n;
                continue;
            }
            if finishing {
                break;
            }
            let Some((len, seq)) = header(&buf[pos..]) else {
                break;
            };
            total += len;
            if let Some(limit) = limit {
                if total > limit {
                    return Err(RelayError::Client(ProtoError::TooLarge {
                        len: total,
                        limit,
                    }));
                }
            }
            last_seq = seq;
            pos += HEADER;
            skip = len;
            finishing = last(len, seq);
        }
        if pos > 0 {
            dst.write_all(&src.rbuf[..pos])
                .await
                .map_err(|e| RelayError::Backend {
                    source: ProtoError::Io(e),
                    mid_packet: false,
                    next_seq: 1,
                })?;
            src.rbuf.advance(pos);
        }
        if finishing && skip == 0 {
            return Ok(last_seq);
        }
        src.fill().await.map_err(RelayError::Client)?;
    }
}

/// What the end of a response said.
#[derive(Debug, Default)]
pub struct RelayEnd {
    /// The final OK, decoded when it carried session state changes.
    pub ok: Option<OkPacket>,
    /// The backend asked for LOCAL INFILE and the client had not allowed it.
    pub refused_infile: bool,
}

/// Relays the backend's response to the client until the scanner says it
/// is complete. `prepare_id`: for COM_STMT_PREPARE, the statement id the
/// client sees, written over the backend's own id in PREPARE_OK.
pub async fn relay_response(
    backend: &mut PacketStream<TcpStream>,
    client: &mut PacketStream<ClientIo>,
    sc: &mut Scanner,
    client_caps: u32,
    backend_caps: u32,
    prepare_id: Option<u32>,
    stall: &Stall<'_>,
) -> Result<RelayEnd, RelayError> {
    let mut end = RelayEnd::default();
    let progress = std::sync::atomic::AtomicU64::new(0);
    let mut fills = 0u64;
    let mut skip = 0usize;
    let mut next_seq = 1u8;
    // After a refused LOCAL INFILE the rest of the response is swallowed
    // and replaced by one error packet carrying this sequence id.
    let mut swallow: Option<u8> = None;
    loop {
        let mut pos = 0;
        let mut done = false;
        let mut infile_at: Option<(usize, u8)> = None;
        let mut patch_at: Option<usize> = None;
        {
            let buf = &backend.rbuf[..];
            while pos < buf.len() {
                if skip > 0 {
                    let n = skip.min(buf.len() - pos);
                    pos += n;
                    skip -= n;
                    continue;
                }
                if done {
                    break;
                }
                let Some((len, seq)) = header(&buf[pos..]) else {
                    break;
                };
                let avail = buf.len() - pos - HEADER;
                let step = if len <= WHOLE_LIMIT {
                    if avail < len {
                        break;
                    }
                    let body = &buf[pos + HEADER..pos + HEADER + len];
                    let had_prepare = sc.prepare.is_some();
                    let step = sc
                        .packet(body, len)
                        .map_err(|e| backend_err(e, false, next_seq))?;
                    if !had_prepare && sc.prepare.is_some() {
                        patch_at = Some(pos + HEADER + 1);
                    }
                    if sc.last_was_ok && sc.status & status::SESSION_STATE_CHANGED != 0 {
                        end.ok = OkPacket::decode(body, backend_caps).ok();
                    }
                    pos += HEADER + len;
                    step
                } else {
                    if avail == 0 {
                        break;
                    }
                    let n = avail.min(len);
                    let step = sc
                        .packet(&buf[pos + HEADER..pos + HEADER + n], len)
                        .map_err(|e| backend_err(e, false, next_seq))?;
                    pos += HEADER + n;
                    skip = len - n;
                    step
                };
                next_seq = seq.wrapping_add(1);
                match step {
                    Step::More => {}
                    Step::Done => done = true,
                    Step::LocalInfile => {
                        infile_at = Some((pos - HEADER - len, seq));
                        break;
                    }
                }
            }
        }
        if let (Some(at), Some(id)) = (patch_at, prepare_id) {
            backend.rbuf[at..at + 4].copy_from_slice(&id.to_le_bytes());
        }
        let forward_to = match infile_at {
            Some((start, _)) if client_caps & cap::LOCAL_FILES == 0 => start,
            _ => pos,
        };
        if swallow.is_none() && forward_to > 0 {
            client
                .io
                .write_all(&backend.rbuf[..forward_to])
                .await
                .map_err(|e| RelayError::Client(ProtoError::Io(e)))?;
        }
        backend.rbuf.advance(pos);
        if let Some((_, seq)) = infile_at {
            if client_caps & cap::LOCAL_FILES != 0 && swallow.is_none() {
                client
                    .io
                    .flush()
                    .await
                    .map_err(|e| RelayError::Client(ProtoError::Io(e)))?;
                pump(client, &mut backend.io, |len, _| len == 0, None).await?;
            } else {
                // Tell the backend there is no file, hide its reply.
                let mut s = seq.wrapping_add(1);
                backend.write_packet(&mut s, &[]);
                backend
                    .flush()
                    .await
                    .map_err(|e| backend_err(e, false, seq))?;
                swallow.get_or_insert(seq);
                end.refused_infile = true;
            }
            sc.after_local_infile();
            continue;
        }
        if done && skip == 0 {
            if let Some(seq) = swallow {
                let err = ErrPacket::new(
                    codes::NOT_ALLOWED_COMMAND,
                    "The used command is not allowed with this MySQL version: LOAD DATA LOCAL needs the client to enable local files (e.g. --local-infile)",
                );
                let mut s = seq;
                client.write_packet(&mut s, &err.to_payload());
            }
            client.flush().await.map_err(RelayError::Client)?;
            if !backend.rbuf.is_empty() {
                return Err(backend_err(
                    ProtoError::malformed("backend sent data after the end of a response"),
                    false,
                    next_seq,
                ));
            }
            return Ok(end);
        }
        // Biased: an answer already waiting is taken without registering
        // the stall watch at all.
        let filled = tokio::select! {
            biased;
            r = backend.fill() => r,
            e = stall.wait(&progress) => Err(e),
        };
        if let Err(e) = filled {
            let _ = client.io.flush().await;
            return Err(backend_err(e, skip > 0, next_seq));
        }
        fills += 1;
        progress.store(fills, std::sync::atomic::Ordering::Relaxed);
    }
}

fn backend_err(source: ProtoError, mid_packet: bool, next_seq: u8) -> RelayError {
    RelayError::Backend {
        source,
        mid_packet,
        next_seq,
    }
}

/// Drops a command the session answers itself (or refuses), including the
/// remainder of a large one still on the wire.
pub async fn discard_command(
    client: &mut PacketStream<ClientIo>,
    cmd: CmdHead,
) -> Result<(), ProtoError> {
    if cmd.whole {
        client.rbuf.advance(HEADER + cmd.len);
        return Ok(());
    }
    let mut sink = tokio::io::sink();
    let limit = client.max_packet;
    match pump(client, &mut sink, |len, _| len < MAX_PAYLOAD, Some(limit)).await {
        Ok(_) => Ok(()),
        Err(RelayError::Client(e)) => Err(e),
        Err(RelayError::Backend { source, .. }) => Err(source),
    }
}
