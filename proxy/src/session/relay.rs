//! Moving bytes: a client command to a backend, and the backend's response
//! back, packet boundaries found by the scanner, bytes forwarded as they
//! arrive (one write per read, no re-encoding, bounded buffers).

use bytes::Buf;
use concord_protocol::consts::{cap, status};
use concord_protocol::err::ErrPacket;
use concord_protocol::ok::{without_session_state, OkPacket, StateChange};
use concord_protocol::packet::{header, HEADER, MAX_PAYLOAD};
use concord_protocol::scan::{Scanner, Step, WHOLE_LIMIT};
use concord_protocol::{codes, PacketStream, ProtoError};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

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
    /// For an answer from a primary: the lease it must arrive under, and
    /// the epoch it was routed with. Nothing of it is relayed once that
    /// epoch's lease has lapsed ([`RelayError::Late`]).
    pub lease: Option<(&'a concord_consensus::Lease, u64)>,
    /// The statement's timeout, if it has one.
    pub timeout: Option<Timeout>,
    /// What a KILL QUERY of the statement needs (its timeout passed, or
    /// its client went away). `None` only in unit tests.
    pub running: Option<Running<'a>>,
    /// The statement may write: killed if its primary is fenced (a read
    /// there harms nothing and its answer is withheld anyway).
    pub may_write: bool,
}

/// When a statement is cut off, and which setting says so.
#[derive(Clone, Copy, Debug)]
pub struct Timeout {
    /// From when the statement is sent.
    pub limit: std::time::Duration,
    /// The transaction's deadline is what binds: its `transaction_timeout`.
    pub txn: Option<std::time::Duration>,
    /// When (absolute) it passes, if not `limit` from when the statement
    /// is sent (a transaction's deadline is fixed).
    pub at: Option<std::time::Instant>,
}

impl Timeout {
    fn error(&self) -> ErrPacket {
        let what = match self.txn {
            Some(t) => format!("transaction_timeout of {t:?} passed with this transaction open; the statement was killed on the server and concord rolls the transaction back"),
            None => format!("statement timeout of {:?} exceeded: listener.statement_timeout, the user's statement_timeout or a /* concord:timeout */ hint; the statement was killed on the server", self.limit),
        };
        ErrPacket::new(
            codes::STATEMENT_TIMEOUT,
            format!("Query execution was interrupted (concord: {what})"),
        )
    }
}

/// The statement being relayed: the session and backend thread a KILL
/// QUERY through a side connection needs. Borrowed, so a statement that
/// is never killed costs nothing.
pub struct Running<'a> {
    pub shared: &'a crate::shared::Shared,
    pub info: &'a crate::shared::SessionInfo,
    pub conn_id: u64,
    pub thread_id: u32,
    pub pool: &'a std::sync::Arc<crate::backend::BackendPool>,
    pub user: &'a std::sync::Arc<crate::users::User>,
}

/// Why a statement is killed when its primary is fenced.
const FENCED: &str = "fenced primary";

impl Running<'_> {
    async fn kill(&self, why: &str) {
        if concord_config::testhooks::on(match why {
            "timeout" => "timeout-without-kill",
            FENCED => "fence-without-kill",
            _ => "disconnect-without-kill",
        }) {
            return;
        }
        let held = crate::shared::HeldConn {
            conn_id: self.conn_id,
            thread_id: self.thread_id,
            pool: self.pool.clone(),
            user: self.user.clone(),
        };
        crate::session::kill::kill_running(self.shared, self.info, &held, why).await;
    }
}

/// Client bytes read ahead while a statement runs, beyond which its
/// disconnect is no longer watched for (a client pipelining that much is
/// alive).
const WATCH_LIMIT: usize = 64 * 1024;

impl Stall<'_> {
    /// An answer from the primary of `epoch` arrived after the lease for
    /// it ran out (a Raft election under way is the usual cause). Its
    /// outcome is safe to report only if the fence of that epoch had not
    /// been committed when it arrived: wait, bounded by
    /// `failover.write_buffer_timeout`, for a quorum confirmation that
    /// started after now and still finds `epoch` (see DESIGN, "Why a
    /// fenced primary never acknowledges a write").
    async fn reconfirmed(&self, lease: &concord_consensus::Lease, epoch: u64) -> bool {
        let arrived = concord_consensus::lease::boot_nanos();
        let limit = self.config.load().failover.write_buffer_timeout.get();
        let start = std::time::Instant::now();
        loop {
            match lease.confirmed_since(epoch, arrived) {
                Some(true) => return true,
                None => return false,
                Some(false) if start.elapsed() >= limit => return false,
                Some(false) => tokio::time::sleep(std::time::Duration::from_millis(10)).await,
            }
        }
    }

    /// `progress` counts the reads that brought data; it is compared
    /// between nudges, so the hot path reads no clock for this.
    /// `stopped`: the statement was killed for its fenced primary already.
    async fn wait(&self, progress: &std::sync::atomic::AtomicU64, stopped: bool) -> Stalled {
        // Stamped at the first nudge (`u64::MAX` is never a count seen):
        // a statement answered before any nudge reads no clock here.
        let mut seen = (u64::MAX, None::<std::time::Instant>);
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
            if let (Some((lease, epoch)), Some(r), false, true) =
                (self.lease, &self.running, stopped, self.may_write)
            {
                // Sent to the primary of `epoch`, which a fence took away
                // (this node's confirmation waits for it) or whose lease
                // lapsed: to be stopped on the server, so it cannot run on
                // past a promotion. Its answer (an error) is relayed only
                // if the epoch is confirmed still current (`Late`).
                if r.shared.gate.must_stop(epoch) || !lease.valid_for(epoch) {
                    return Stalled::Fenced;
                }
            }
            let now = std::time::Instant::now();
            let p = progress.load(std::sync::atomic::Ordering::Relaxed);
            let since = match seen {
                (q, Some(t)) if q == p => t,
                _ => {
                    seen = (p, Some(now));
                    continue;
                }
            };
            let quiet = now.duration_since(since);
            if self.pool.is_down() && quiet >= self.config.load().monitor.timeout.get() {
                return Stalled::Down(ProtoError::Io(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!(
                        "the health checks declare it down and it sent nothing for {:.1}s",
                        quiet.as_secs_f64()
                    ),
                )));
            }
        }
    }
}

/// Why [`Stall::wait`] gave up waiting for an answer.
enum Stalled {
    /// The backend is declared down and sent nothing for a while.
    Down(ProtoError),
    /// The statement must stop on its server: its primary was fenced.
    Fenced,
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
    /// The primary's answer (or the rest of it) arrived after this node's
    /// lease for the route's epoch lapsed: a failover may have promoted
    /// another server meanwhile, so it is not relayed. Fields as in
    /// `Backend`.
    Late { mid_packet: bool, next_seq: u8 },
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
pub async fn forward_command<C, B>(
    client: &mut PacketStream<C>,
    backend: &mut PacketStream<B>,
    cmd: CmdHead,
    consume_now: bool,
    may_send: &(dyn Fn() -> bool + Sync),
    patience: std::time::Duration,
) -> Result<(), RelayError>
where
    C: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
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
        may_send,
        patience,
    )
    .await
    .map(|_| ())
}

/// Drops a whole command left in the buffer by `forward_command(.., false)`.
pub fn consume<C>(client: &mut PacketStream<C>, cmd: CmdHead) {
    if cmd.whole {
        client.rbuf.advance(HEADER + cmd.len);
    }
}

/// Forwards physical packets from `src` to `dst` as bytes arrive until a
/// packet for which `last(len, seq)` holds has passed. Bodies are not
/// buffered whole. Returns the sequence id of the last packet.
async fn pump<C: AsyncRead + AsyncWrite + Unpin, W: AsyncWrite + Unpin>(
    src: &mut PacketStream<C>,
    dst: &mut W,
    mut last: impl FnMut(usize, u8) -> bool,
    limit: Option<usize>,
    may_send: &(dyn Fn() -> bool + Sync),
    patience: std::time::Duration,
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
            // The client paces a streamed statement or file: the route
            // to the primary may lapse before its last byte, and the
            // server runs it only then. Not sending the rest (the caller
            // closes both ends) keeps it from running on a fenced primary.
            if !may_send() && !concord_config::testhooks::on("stream-without-lease-check") {
                // A lapse is most often an election: the lease coming back
                // for the same epoch proves no fence came between, as for
                // the first byte (up to `patience`).
                let t0 = std::time::Instant::now();
                loop {
                    if t0.elapsed() >= patience {
                        return Err(RelayError::Client(ProtoError::Io(std::io::Error::other(
                            "the route to the primary lapsed while the client was still sending; the statement was not executed",
                        ))));
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                    if may_send() {
                        break;
                    }
                }
            }
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
    /// Session-state changes the server reported, in order, from every OK
    /// packet of the response (several for a multi-statement).
    pub changes: Vec<StateChange>,
    /// A status carried SESSION_STATE_CHANGED whose details could not be
    /// read: an old-style EOF carries none, or the OK did not decode. The
    /// session cannot tell what changed.
    pub state_unreadable: bool,
    /// Warnings the last OK/EOF reported.
    pub warnings: u16,
    /// (affected rows, last insert id) of the last OK that ended a
    /// statement without rows; `None` when the last statement sent rows.
    pub ok_counts: Option<(u64, u64)>,
    /// The backend asked for LOCAL INFILE and the client had not allowed it.
    pub refused_infile: bool,
    /// The backend sent bytes after the end of the response: the answer
    /// the client got is complete, but the connection is out of step and
    /// must not be used again.
    pub trailing: bool,
    /// The statement passed its timeout and was killed before anything of
    /// its answer reached the client: the answer (an error or rows, never
    /// an OK: what completed is reported as completed) was replaced by
    /// error 1969.
    pub timed_out: bool,
}

/// The GTID a commit reported as MariaDB's `last_gtid` among `changes`,
/// unless a `SESSION_TRACK_GTIDS` entry is there already.
fn own_gtid(changes: &[StateChange]) -> Option<&[u8]> {
    let mut own = None;
    for c in changes {
        match c {
            StateChange::Gtids(_) => return None,
            StateChange::SystemVariable(n, v)
                if !v.is_empty() && n.eq_ignore_ascii_case(b"last_gtid") =>
            {
                own = Some(v.as_slice())
            }
            _ => {}
        }
    }
    own
}

/// Relays the backend's response to the client until the scanner says it
/// is complete. `prepare_id`: for COM_STMT_PREPARE, the statement id the
/// client sees, written over the backend's own id in PREPARE_OK. OK
/// packets carrying session state are decoded (their changes collected in
/// [`RelayEnd`]) and, for a client that did not negotiate SESSION_TRACK,
/// rewritten without the state block as the server would have sent them.
/// `fix`: (flags to clear, flags to set) in every status the response
/// carries, for an answer from a connection that is not where the
/// session's transaction runs.
#[allow(clippy::too_many_arguments)]
pub async fn relay_response<B, C>(
    backend: &mut PacketStream<B>,
    client: &mut PacketStream<C>,
    sc: &mut Scanner,
    client_caps: u32,
    backend_caps: u32,
    prepare_id: Option<u32>,
    fix: Option<(u16, u16)>,
    stall: &Stall<'_>,
) -> Result<RelayEnd, RelayError>
where
    B: AsyncRead + AsyncWrite + Unpin,
    C: AsyncRead + AsyncWrite + Unpin,
{
    let mut end = RelayEnd::default();
    let progress = std::sync::atomic::AtomicU64::new(0);
    let mut fills = 0u64;
    let mut skip = 0usize;
    let mut next_seq = 1u8;
    let strip_state = client_caps & cap::SESSION_TRACK == 0;
    // After a refused LOCAL INFILE the rest of the response is swallowed
    // and replaced by one error packet carrying this sequence id.
    let mut swallow: Option<u8> = None;
    // Something of the answer reached the client.
    let mut sent = false;
    // The timeout passed (the statement was killed on its server).
    let deadline = stall.timeout.as_ref().map(|t| match t.at {
        Some(at) => tokio::time::Instant::from_std(at),
        None => tokio::time::Instant::now() + t.limit,
    });
    let mut expired = false;
    // Killed on its server for a fenced primary (once).
    let mut stopped = false;
    // A client that sent COM_QUIT and closed is not waited on: its
    // statement runs to its end, as on a server.
    let mut watch_client = true;
    'relay: loop {
        // Where this chunk starts: inside a packet, or at the header of
        // the packet with sequence id `next_seq`.
        let (chunk_mid, chunk_seq) = (skip > 0, next_seq);
        let mut pos = 0;
        let mut done = false;
        let mut infile_at: Option<(usize, u8)> = None;
        let mut patch_at: Option<usize> = None;
        // An OK packet rewritten for the client: (where it starts, its
        // sequence id, the new payload).
        let mut rewrite: Option<(usize, u8, bytes::BytesMut)> = None;
        // Status fields patched in place: EOF packets whose
        // SESSION_STATE_CHANGED flag a client without SESSION_TRACK must
        // not see, and every status when `fix` asks (offset of the u16).
        let mut patches = [0usize; 8];
        let mut npatch = 0;
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
                let start = pos;
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
                    let old_eof = body.first() == Some(&0xfe)
                        && (5..9).contains(&len)
                        && backend_caps & cap::DEPRECATE_EOF == 0;
                    if old_eof
                        && (fix.is_some()
                            || (strip_state
                                && u16::from_le_bytes([body[3], body[4]])
                                    & status::SESSION_STATE_CHANGED
                                    != 0))
                    {
                        patches[npatch] = pos + HEADER + 3;
                        npatch += 1;
                    } else if fix.is_some() && sc.last_was_ok {
                        if let Some(at) = concord_protocol::ok::status_offset(body) {
                            patches[npatch] = pos + HEADER + at;
                            npatch += 1;
                        }
                    }
                    if sc.last_was_ok || old_eof {
                        end.ok_counts = if old_eof {
                            None
                        } else {
                            concord_protocol::ok::ok_counts(body)
                        };
                        end.warnings = if old_eof {
                            u16::from_le_bytes([body[1], body[2]])
                        } else {
                            concord_protocol::ok::status_offset(body)
                                .and_then(|at| body.get(at + 2..at + 4))
                                .map_or(0, |w| u16::from_le_bytes([w[0], w[1]]))
                        };
                    }
                    if old_eof
                        && u16::from_le_bytes([body[3], body[4]]) & status::SESSION_STATE_CHANGED
                            != 0
                    {
                        end.state_unreadable = true;
                    }
                    if sc.last_was_ok && sc.status & status::SESSION_STATE_CHANGED != 0 {
                        let first = end.changes.len();
                        match OkPacket::decode(body, backend_caps).and_then(|ok| ok.state_changes())
                        {
                            Ok(c) => end.changes.extend(c),
                            Err(_) => end.state_unreadable = true,
                        }
                        let rewritten = if strip_state {
                            without_session_state(body)
                        } else {
                            // MariaDB reports a commit's GTID as `last_gtid`:
                            // it also goes where MySQL's OWN_GTID tracking
                            // puts it, the causal token a client can carry.
                            own_gtid(&end.changes[first..])
                                .and_then(|g| concord_protocol::ok::with_gtids(body, g))
                        };
                        {
                            rewrite = rewritten.map(|mut p| {
                                if let (Some((clear, set)), Some(at)) =
                                    (fix, concord_protocol::ok::status_offset(&p))
                                {
                                    let st = u16::from_le_bytes([p[at], p[at + 1]]);
                                    p[at..at + 2]
                                        .copy_from_slice(&((st & !clear) | set).to_le_bytes());
                                }
                                (start, seq, p)
                            });
                        }
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
                    if step == Step::LocalInfile {
                        // A file name longer than any path: not a server.
                        return Err(backend_err(
                            ProtoError::malformed("LOCAL INFILE request longer than 64 KiB"),
                            false,
                            next_seq,
                        ));
                    }
                    pos += HEADER + n;
                    skip = len - n;
                    step
                };
                next_seq = seq.wrapping_add(1);
                match step {
                    Step::More => {}
                    Step::Done => done = true,
                    Step::LocalInfile => {
                        infile_at = Some((start, seq));
                        break;
                    }
                }
                if rewrite.is_some() || npatch == patches.len() {
                    break;
                }
            }
        }
        if let (Some(at), Some(id)) = (patch_at, prepare_id) {
            backend.rbuf[at..at + 4].copy_from_slice(&id.to_le_bytes());
        }
        for &at in &patches[..npatch] {
            let mut st = u16::from_le_bytes([backend.rbuf[at], backend.rbuf[at + 1]]);
            if strip_state {
                st &= !status::SESSION_STATE_CHANGED;
            }
            if let Some((clear, set)) = fix {
                st = (st & !clear) | set;
            }
            backend.rbuf[at..at + 2].copy_from_slice(&st.to_le_bytes());
        }
        let forward_to = match (&infile_at, &rewrite) {
            (Some((start, _)), _) if client_caps & cap::LOCAL_FILES == 0 => *start,
            (_, Some((start, _, _))) => *start,
            _ => pos,
        };
        if let Some((lease, epoch)) = stall.lease {
            let relaying = forward_to > 0 || rewrite.is_some();
            if relaying
                && !lease.valid_for(epoch)
                && !concord_config::testhooks::on("no-late-answer-check")
                && !stall.reconfirmed(lease, epoch).await
            {
                return Err(RelayError::Late {
                    mid_packet: chunk_mid,
                    next_seq: chunk_seq,
                });
            }
        }
        if expired && swallow.is_none() && !sent && !chunk_mid {
            // Killed past its timeout: an error or rows from the server
            // become the timeout's error. An OK is what the statement did
            // before the kill arrived: reported as it is.
            match backend.rbuf.get(HEADER) {
                // Nothing of the answer yet: decided when it comes.
                None | Some(0x00) => {}
                Some(_) => {
                    swallow = Some(chunk_seq);
                    end.timed_out = true;
                }
            }
        }
        if swallow.is_none() {
            sent |= forward_to > 0 || rewrite.is_some();
            if let Some((_, seq, payload)) = &rewrite {
                client.wbuf.extend_from_slice(&backend.rbuf[..forward_to]);
                let mut s = *seq;
                client.write_packet(&mut s, payload);
                client.flush().await.map_err(RelayError::Client)?;
            } else if forward_to > 0 {
                client
                    .io
                    .write_all(&backend.rbuf[..forward_to])
                    .await
                    .map_err(|e| RelayError::Client(ProtoError::Io(e)))?;
            }
        }
        backend.rbuf.advance(pos);
        if let Some((_, seq)) = infile_at {
            if client_caps & cap::LOCAL_FILES != 0 && swallow.is_none() {
                client
                    .io
                    .flush()
                    .await
                    .map_err(|e| RelayError::Client(ProtoError::Io(e)))?;
                let lease = stall.lease;
                let may_send = move || lease.is_none_or(|(l, e)| l.valid_for(e));
                let patience = stall.config.load().failover.write_buffer_timeout.get();
                pump(
                    client,
                    &mut backend.io,
                    |len, _| len == 0,
                    None,
                    &may_send,
                    patience,
                )
                .await?;
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
                let err = match &stall.timeout {
                    Some(t) if end.timed_out => t.error(),
                    _ => ErrPacket::new(
                    codes::NOT_ALLOWED_COMMAND,
                    "The used command is not allowed with this MySQL version: LOAD DATA LOCAL needs the client to enable local files (e.g. --local-infile)",
                    ),
                };
                let mut s = seq;
                client.write_packet(&mut s, &err.to_payload());
            }
            client.flush().await.map_err(RelayError::Client)?;
            // The answer is complete; anything more is the connection's
            // problem, not this client's.
            end.trailing = !backend.rbuf.is_empty();
            return Ok(end);
        }
        if rewrite.is_some() || npatch == patches.len() {
            // More of the response may already be buffered.
            continue;
        }
        // Biased: an answer already waiting is taken without registering
        // the other watches at all. While the answer is awaited, the
        // client is read too: bytes it sends early stay buffered for the
        // command loop, and its going away kills the statement on the
        // server instead of leaving it to run to the end.
        let wait = stall.wait(&progress, stopped);
        tokio::pin!(wait);
        let filled = loop {
            tokio::select! {
                biased;
                r = backend.fill() => break r,
                e = &mut wait => match e {
                    Stalled::Down(e) => break Err(e),
                    Stalled::Fenced => {
                        // Run to completion here, not inside the wait (a
                        // KILL cut off mid-way could land on the
                        // connection's next statement).
                        stopped = true;
                        if let Some(r) = &stall.running {
                            r.kill(FENCED).await;
                        }
                        continue 'relay;
                    }
                },
                _ = until(deadline), if deadline.is_some() && !expired => {
                    expired = true;
                    if stall.timeout.is_some_and(|t| t.txn.is_none()) {
                        crate::metrics::statement_timeout();
                    }
                    if let Some(r) = &stall.running {
                        r.kill("timeout").await;
                    }
                    continue 'relay;
                }
                r = client.fill(), if watch_client && client.rbuf.len() < WATCH_LIMIT => {
                    if r.is_err()
                        && client.rbuf.ends_with(&[1, 0, 0, 0, concord_protocol::consts::com::QUIT])
                        && !concord_config::testhooks::on("quit-is-disconnect")
                    {
                        watch_client = false;
                        continue;
                    }
                    if let Err(e) = r {
                        crate::metrics::client_gone_mid_statement();
                        if let Some(r) = &stall.running {
                            r.kill("client gone").await;
                        }
                        return Err(RelayError::Client(e));
                    }
                }
            }
        };
        if let Err(e) = filled {
            let _ = client.io.flush().await;
            return Err(backend_err(e, skip > 0, next_seq));
        }
        fills += 1;
        progress.store(fills, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Resolves at `at`; never without one.
pub async fn until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
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
pub async fn discard_command<C: AsyncRead + AsyncWrite + Unpin>(
    client: &mut PacketStream<C>,
    cmd: CmdHead,
) -> Result<(), ProtoError> {
    if cmd.whole {
        client.rbuf.advance(HEADER + cmd.len);
        return Ok(());
    }
    let mut sink = tokio::io::sink();
    let limit = client.max_packet;
    match pump(
        client,
        &mut sink,
        |len, _| len < MAX_PAYLOAD,
        Some(limit),
        &|| true,
        std::time::Duration::ZERO,
    )
    .await
    {
        Ok(_) => Ok(()),
        Err(RelayError::Client(e)) => Err(e),
        Err(RelayError::Backend { source, .. }) => Err(source),
        Err(RelayError::Late { .. }) => Ok(()),
    }
}

/// The relay over in-memory pipes: a scripted backend response in, what
/// the client receives out. Shared by the unit tests below and the fuzz
/// entry (`fuzz_relay`), so both drive the code real sessions run.
pub mod harness {
    use super::*;
    use crate::backend::{BackendPool, PoolSettings};
    use concord_protocol::scan::Expect;
    use std::time::Duration;
    use tokio::io::AsyncReadExt;

    pub const MINIMAL_CONFIG: &str = "[listener]\naddr = \"127.0.0.1:0\"\n[[users]]\nname = \"u\"\npassword = \"p\"\n[[backends]]\nname = \"b\"\naddr = \"127.0.0.1:1\"\n";

    /// Relays `backend` (the server's bytes, then end of stream) for a
    /// command expecting `expect`; returns the outcome and every byte the
    /// client got.
    pub async fn relay_bytes(
        backend: &[u8],
        expect: Expect,
        client_caps: u32,
        backend_caps: u32,
    ) -> (Result<RelayEnd, RelayError>, Vec<u8>) {
        let (near_b, mut far_b) = tokio::io::duplex(1 << 16);
        let (near_c, mut far_c) = tokio::io::duplex(1 << 16);
        let data = backend.to_vec();
        let feeder = tokio::spawn(async move {
            let _ = far_b.write_all(&data).await;
            drop(far_b);
        });
        let reader = tokio::spawn(async move {
            let mut out = Vec::new();
            let _ = far_c.read_to_end(&mut out).await;
            out
        });
        let mut b = PacketStream::new(near_b);
        let mut c = PacketStream::new(near_c);
        let pool = BackendPool::new(
            "b",
            "127.0.0.1:1",
            PoolSettings {
                min_idle: 0,
                max: 1,
                connect_timeout: Duration::from_secs(1),
                max_idle_time: Duration::from_secs(1),
                max_lifetime: Duration::ZERO,
                acquire_timeout: Duration::from_secs(1),
            },
        );
        let nudge = tokio::sync::Notify::new();
        let kill = std::sync::Mutex::new(None);
        let cfg = match concord_config::Config::parse(MINIMAL_CONFIG) {
            Ok(c) => arc_swap::ArcSwap::from_pointee(c),
            Err(e) => panic!("test config: {e}"),
        };
        let stall = Stall {
            pool: &pool,
            nudge: &nudge,
            kill_reason: &kill,
            config: &cfg,
            lease: None,
            timeout: None,
            running: None,
            may_write: true,
        };
        let mut sc = Scanner::new(expect, backend_caps & cap::DEPRECATE_EOF != 0);
        let r = tokio::time::timeout(
            Duration::from_secs(5),
            relay_response(
                &mut b,
                &mut c,
                &mut sc,
                client_caps,
                backend_caps,
                None,
                None,
                &stall,
            ),
        )
        .await
        .unwrap_or(Err(RelayError::Client(ProtoError::Timeout("relay"))));
        drop(c);
        drop(b);
        let _ = feeder.await;
        let out = reader.await.unwrap_or_default();
        (r, out)
    }

    /// Client bytes through the command reader and forwarder: every
    /// command announced in `client` is read (whole, or streamed when
    /// larger than the whole-packet limit) and forwarded to a sink.
    pub async fn forward_client_bytes(client: &[u8], max_packet: usize) {
        let (near_c, mut far_c) = tokio::io::duplex(1 << 16);
        let data = client.to_vec();
        let feeder = tokio::spawn(async move {
            let _ = far_c.write_all(&data).await;
            drop(far_c);
        });
        let mut c = PacketStream::new(near_c);
        c.max_packet = max_packet;
        let (near_b, far_b) = tokio::io::duplex(1 << 16);
        let drain = tokio::spawn(async move {
            let mut far_b = far_b;
            let mut sink = Vec::new();
            let _ = far_b.read_to_end(&mut sink).await;
        });
        let mut b = PacketStream::new(near_b);
        let _ = tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                match command_ready(&c.rbuf, c.max_packet) {
                    Ok(Some(cmd)) => {
                        if forward_command(&mut c, &mut b, cmd, true, &|| true, Duration::ZERO)
                            .await
                            .is_err()
                        {
                            return;
                        }
                    }
                    Ok(None) => {
                        if c.fill().await.is_err() {
                            return;
                        }
                    }
                    Err(_) => return,
                }
            }
        })
        .await;
        // Both ends go before the helpers are awaited: a feeder blocked on
        // a full pipe the relay stopped reading ends when it closes.
        drop(b);
        drop(c);
        let _ = feeder.await;
        let _ = drain.await;
    }

    /// Fuzz entry (`fuzz/fuzz_targets/relay.rs` and a property test): the
    /// first byte picks the response shape and client capabilities, the
    /// rest is what the backend (and, for odd first bytes, the client)
    /// sends.
    pub async fn fuzz(data: &[u8]) {
        let Some((&sel, rest)) = data.split_first() else {
            return;
        };
        let expect = match sel % 6 {
            5 => Expect::Cursor,
            0 => Expect::ResultSets,
            1 => Expect::Prepare,
            2 => Expect::FieldList,
            3 => Expect::Rows,
            _ => Expect::Single,
        };
        let client_caps = if sel & 0x10 != 0 {
            cap::SESSION_TRACK
        } else {
            0
        } | if sel & 0x20 != 0 { cap::LOCAL_FILES } else { 0 };
        let backend_caps = cap::SESSION_TRACK
            | if sel & 0x40 != 0 {
                cap::DEPRECATE_EOF
            } else {
                0
            };
        if sel & 0x80 != 0 {
            forward_client_bytes(rest, 1 << 20).await;
        } else {
            let _ = relay_bytes(rest, expect, client_caps, backend_caps).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::harness::relay_bytes;
    use super::*;
    use concord_protocol::ok::OkPacket;
    use concord_protocol::packet::put_packet;
    use concord_protocol::scan::Expect;

    fn packets(payloads: &[&[u8]]) -> Vec<u8> {
        let mut b = bytes::BytesMut::new();
        let mut seq = 1;
        for p in payloads {
            put_packet(&mut b, &mut seq, p);
        }
        b.to_vec()
    }

    fn ok(status: u16, state: &[u8]) -> Vec<u8> {
        let mut b = bytes::BytesMut::new();
        OkPacket {
            status,
            session_state: state.to_vec(),
            ..Default::default()
        }
        .encode(&mut b, cap::SESSION_TRACK);
        b.to_vec()
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(300))]
        /// Backend and client bytes up to and past the whole-packet limit:
        /// errors are fine, panics are not.
        #[test]
        fn the_relay_never_panics(
            sel in proptest::prelude::any::<u8>(),
            body in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..80_000),
            len_at in 0usize..4,
        ) {
            // A plausible packet header in front, announcing a length near
            // the limits, so the large-packet paths run.
            let lens = [WHOLE_LIMIT - 1, WHOLE_LIMIT + 1, MAX_PAYLOAD, body.len()];
            let len = lens[len_at].min(MAX_PAYLOAD);
            let mut data = vec![sel, (len & 0xff) as u8, ((len >> 8) & 0xff) as u8, ((len >> 16) & 0xff) as u8, if sel & 0x80 != 0 { 0 } else { 1 }];
            data.extend_from_slice(&body);
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(super::harness::fuzz(&data));
        }
    }

    #[tokio::test]
    async fn data_after_a_complete_response_is_not_an_error_to_the_client() {
        // A complete OK, then garbage: the client gets exactly the OK.
        let okp = ok(status::AUTOCOMMIT, b"");
        let mut bytes = packets(&[&okp]);
        let clean = bytes.clone();
        bytes.extend_from_slice(&packets(&[b"\xff\x01\x02garbage"]));
        let (r, got) = relay_bytes(
            &bytes,
            Expect::ResultSets,
            cap::SESSION_TRACK,
            cap::SESSION_TRACK,
        )
        .await;
        let end = r.expect("the answer was complete");
        assert!(end.trailing, "the connection is marked unusable");
        assert_eq!(got, clean, "nothing but the answer reached the client");
    }

    #[tokio::test]
    async fn an_oversized_local_infile_request_is_a_backend_error_not_a_panic() {
        let mut req = vec![0xfbu8];
        req.extend(std::iter::repeat_n(b'a', WHOLE_LIMIT + 10));
        let bytes = packets(&[&req]);
        // Fed in pieces: the request packet arrives over several reads.
        let (r, _) = relay_bytes(&bytes, Expect::ResultSets, cap::LOCAL_FILES, 0).await;
        assert!(matches!(r, Err(RelayError::Backend { .. })), "{r:?}");
    }

    #[tokio::test]
    async fn state_blocks_are_stripped_for_clients_that_did_not_ask() {
        let state = [2u8, 2, 1, b'1'];
        let okp = ok(status::AUTOCOMMIT | status::SESSION_STATE_CHANGED, &state);
        let bytes = packets(&[&okp]);
        let (r, got) = relay_bytes(&bytes, Expect::ResultSets, 0, cap::SESSION_TRACK).await;
        let end = r.unwrap();
        assert!(!end.state_unreadable);
        assert_eq!(end.changes, vec![StateChange::StateChanged(true)]);
        let want = packets(&[&without_session_state(&okp).unwrap()]);
        assert_eq!(got, want);
        // A client with SESSION_TRACK gets the packet as the server sent it.
        let (_, got) = relay_bytes(
            &bytes,
            Expect::ResultSets,
            cap::SESSION_TRACK,
            cap::SESSION_TRACK,
        )
        .await;
        assert_eq!(got, bytes);
    }

    #[tokio::test]
    async fn every_ok_of_a_multi_statement_is_tracked_and_rewritten() {
        let var = |n: &[u8], v: &[u8]| {
            let mut d = bytes::BytesMut::new();
            use concord_protocol::wr::Wr;
            d.put_lenenc_bytes(n);
            d.put_lenenc_bytes(v);
            let mut e = bytes::BytesMut::new();
            e.put_u8(0);
            e.put_lenenc_bytes(&d);
            e.to_vec()
        };
        use bytes::BufMut;
        let s1 = var(b"sql_mode", b"ANSI");
        let s2 = var(b"time_zone", b"+01:00");
        let more = status::AUTOCOMMIT | status::SESSION_STATE_CHANGED | status::MORE_RESULTS_EXISTS;
        let p1 = ok(more, &s1);
        let p2 = ok(status::AUTOCOMMIT | status::SESSION_STATE_CHANGED, &s2);
        let bytes = packets(&[&p1, &p2]);
        let (r, got) = relay_bytes(&bytes, Expect::ResultSets, 0, cap::SESSION_TRACK).await;
        let end = r.unwrap();
        assert_eq!(
            end.changes,
            vec![
                StateChange::SystemVariable(b"sql_mode".to_vec(), b"ANSI".to_vec()),
                StateChange::SystemVariable(b"time_zone".to_vec(), b"+01:00".to_vec()),
            ]
        );
        let want = packets(&[
            &without_session_state(&p1).unwrap(),
            &without_session_state(&p2).unwrap(),
        ]);
        assert_eq!(got, want);
    }
}
