//! A minimal, fast MySQL server: handshake and native auth, ping, queries
//! answered with one small fixed row (or OK for writes), prepared
//! statements with binary rows. It measures a proxy's own cost with no
//! database in the way. Common responses are encoded once per connection
//! and written with one syscall per batch of pipelined commands.

use crate::BenchError;
use bytes::{Buf, BufMut, BytesMut};
use concord_protocol::auth;
use concord_protocol::column::Column;
use concord_protocol::consts::{cap, com, status};
use concord_protocol::err::ErrPacket;
use concord_protocol::handshake::{HandshakeResponse, HandshakeV10};
use concord_protocol::ok::OkPacket;
use concord_protocol::packet::{build, header, HEADER};
use concord_protocol::resultset::{write_err, write_ok, write_resultset, write_terminator};
use concord_protocol::wr::Wr;
use concord_protocol::PacketStream;
use std::collections::HashMap;
use std::sync::Arc;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};

#[derive(Clone, Debug, Default)]
pub struct MockOpts {
    /// Accept only this user/password (any login when `None`).
    pub user: Option<String>,
    pub password: Option<String>,
}

pub async fn serve(listener: TcpListener, opts: Arc<MockOpts>) {
    let mut next_id = 1u32;
    loop {
        let Ok((s, _)) = listener.accept().await else {
            continue;
        };
        let _ = s.set_nodelay(true);
        let opts = opts.clone();
        let id = next_id;
        next_id = next_id.wrapping_add(1);
        tokio::spawn(async move {
            if let Err(e) = session(s, id, &opts).await {
                tracing::debug!("mock session ended: {e}");
            }
        });
    }
}

/// Select-list expressions of a SELECT (top level, split at commas).
fn select_list(sql: &str) -> Vec<String> {
    let lower = sql.to_ascii_lowercase();
    let Some(start) = lower.find("select") else {
        return Vec::new();
    };
    let body = &sql[start + 6..];
    let lbody = &lower[start + 6..];
    let end = lbody
        .find(" from ")
        .or_else(|| lbody.find(" limit "))
        .unwrap_or(body.len());
    let list = &body[..end];
    let mut out = Vec::new();
    let (mut depth, mut cur, mut quote) = (0i32, String::new(), None::<char>);
    for c in list.chars() {
        match (quote, c) {
            (Some(q), c) if c == q => {
                quote = None;
                cur.push(c);
            }
            (Some(_), c) => cur.push(c),
            (None, '\'' | '"' | '`') => {
                quote = Some(c);
                cur.push(c);
            }
            (None, '(') => {
                depth += 1;
                cur.push(c);
            }
            (None, ')') => {
                depth -= 1;
                cur.push(c);
            }
            (None, ',') if depth == 0 => out.push(std::mem::take(&mut cur).trim().to_string()),
            (None, c) => cur.push(c),
        }
    }
    if !cur.trim().is_empty() {
        out.push(cur.trim().to_string());
    }
    out
}

/// A plausible value for a selected expression (what probes ask for).
fn value_for(expr: &str) -> String {
    let e = expr.to_ascii_lowercase();
    if e.contains("read_only") {
        "0".into()
    } else if e.contains("version_comment") {
        "concord-bench mock server".into()
    } else if e.contains("version") {
        "10.11.99-MariaDB-mock".into()
    } else if e.contains("gtid") {
        String::new()
    } else if e.contains("max_allowed_packet") {
        "67108864".into()
    } else if e.contains("timeout") {
        "28800".into()
    } else {
        // server_id and anything else
        "1".into()
    }
}

struct Conn {
    caps: u32,
    /// Cached text result for a plain one-column SELECT.
    one_row: BytesMut,
    ok: BytesMut,
    ok_write: BytesMut,
    /// Prepared statements: id -> (columns, params)
    stmts: HashMap<u32, (u16, u16)>,
    next_stmt: u32,
}

impl Conn {
    fn new(caps: u32) -> Self {
        let mut one_row = BytesMut::new();
        let mut seq = 1;
        write_resultset(
            &mut one_row,
            &mut seq,
            caps,
            status::AUTOCOMMIT,
            &[Column::str("c")],
            &[vec![Some("1".into())]],
        );
        let mut ok = BytesMut::new();
        let mut seq = 1;
        write_ok(&mut ok, &mut seq, caps, 0, "");
        let mut ok_write = BytesMut::new();
        let mut seq = 1;
        write_ok(&mut ok_write, &mut seq, caps, 1, "");
        Conn {
            caps,
            one_row,
            ok,
            ok_write,
            stmts: HashMap::new(),
            next_stmt: 1,
        }
    }

    fn query(&mut self, sql: &str, out: &mut BytesMut) {
        let t = sql.trim_start().to_ascii_lowercase();
        if t.starts_with("select") || t.starts_with("(select") {
            let cols = select_list(sql);
            if cols.len() == 1
                && !cols[0].contains("@@")
                && !cols[0].to_ascii_lowercase().contains("version")
            {
                out.extend_from_slice(&self.one_row);
                return;
            }
            let columns: Vec<Column> = cols.iter().map(|c| Column::str(c)).collect();
            let row: Vec<Option<String>> = cols.iter().map(|c| Some(value_for(c))).collect();
            let mut seq = 1;
            write_resultset(
                out,
                &mut seq,
                self.caps,
                status::AUTOCOMMIT,
                &columns,
                &[row],
            );
        } else if t.starts_with("show") {
            let mut seq = 1;
            write_resultset(
                out,
                &mut seq,
                self.caps,
                status::AUTOCOMMIT,
                &[Column::str("Value")],
                &[],
            );
        } else if t.starts_with("insert")
            || t.starts_with("update")
            || t.starts_with("delete")
            || t.starts_with("replace")
        {
            out.extend_from_slice(&self.ok_write);
        } else {
            out.extend_from_slice(&self.ok);
        }
    }

    fn prepare(&mut self, sql: &str, out: &mut BytesMut) {
        let params = sql.matches('?').count() as u16;
        let t = sql.trim_start().to_ascii_lowercase();
        let columns = if t.starts_with("select") {
            select_list(sql).len().max(1) as u16
        } else {
            0
        };
        let id = self.next_stmt;
        self.next_stmt += 1;
        self.stmts.insert(id, (columns, params));
        let mut seq = 1;
        build(out, &mut seq, |b| {
            b.put_u8(0);
            b.put_u32_le(id);
            b.put_u16_le(columns);
            b.put_u16_le(params);
            b.put_u8(0);
            b.put_u16_le(0);
        });
        let deprecate = self.caps & cap::DEPRECATE_EOF != 0;
        for _ in 0..params {
            build(out, &mut seq, |b| Column::str("?").encode(b));
        }
        if params > 0 && !deprecate {
            build(out, &mut seq, |b| {
                concord_protocol::ok::encode_eof(b, 0, status::AUTOCOMMIT)
            });
        }
        for i in 0..columns {
            build(out, &mut seq, |b| Column::str(&format!("c{i}")).encode(b));
        }
        if columns > 0 && !deprecate {
            build(out, &mut seq, |b| {
                concord_protocol::ok::encode_eof(b, 0, status::AUTOCOMMIT)
            });
        }
    }

    fn execute(&mut self, id: u32, out: &mut BytesMut) {
        let Some(&(columns, _)) = self.stmts.get(&id) else {
            let mut seq = 1;
            write_err(
                out,
                &mut seq,
                &ErrPacket::new(
                    concord_protocol::codes::UNKNOWN_STMT_HANDLER,
                    format!("Unknown prepared statement handler ({id})"),
                ),
            );
            return;
        };
        if columns == 0 {
            out.extend_from_slice(&self.ok_write);
            return;
        }
        let mut seq = 1;
        build(out, &mut seq, |b| b.put_lenenc(u64::from(columns)));
        for i in 0..columns {
            build(out, &mut seq, |b| Column::str(&format!("c{i}")).encode(b));
        }
        if self.caps & cap::DEPRECATE_EOF == 0 {
            build(out, &mut seq, |b| {
                concord_protocol::ok::encode_eof(b, 0, status::AUTOCOMMIT)
            });
        }
        build(out, &mut seq, |b| {
            b.put_u8(0);
            for _ in 0..(usize::from(columns) + 9) / 8 {
                b.put_u8(0);
            }
            for _ in 0..columns {
                b.put_lenenc_bytes(b"1");
            }
        });
        write_terminator(out, &mut seq, self.caps, status::AUTOCOMMIT);
    }
}

async fn session(s: TcpStream, conn_id: u32, opts: &MockOpts) -> Result<(), BenchError> {
    let mut io = PacketStream::new(s);
    let scramble = auth::new_scramble();
    let hs = HandshakeV10 {
        server_version: b"5.5.5-10.11.99-MariaDB-concord-bench-mock".to_vec(),
        connection_id: conn_id,
        scramble: scramble.to_vec(),
        capabilities: cap::SERVER_OFFER,
        collation: 45,
        status: status::AUTOCOMMIT,
        auth_plugin: b"mysql_native_password".to_vec(),
    };
    let mut b = BytesMut::new();
    hs.encode(&mut b);
    let mut seq = 0;
    io.send(&mut seq, &b).await?;
    let p = io.read_packet().await?;
    let resp = HandshakeResponse::decode(&p.payload)?;
    let mut seq = p.next_seq();
    if let (Some(u), Some(pw)) = (&opts.user, &opts.password) {
        let good = resp.user == u.as_bytes()
            && (pw.is_empty() && resp.auth_response.is_empty()
                || auth::native_verify(
                    &auth::native_digest(pw.as_bytes()),
                    &scramble,
                    &resp.auth_response,
                ));
        if !good {
            let e = ErrPacket::new(
                concord_protocol::codes::ACCESS_DENIED,
                "Access denied (mock server)",
            );
            io.send(&mut seq, &e.to_payload()).await?;
            return Ok(());
        }
    }
    let caps = resp.capabilities & cap::SERVER_OFFER;
    let ok = OkPacket {
        status: status::AUTOCOMMIT,
        ..Default::default()
    };
    let mut b = BytesMut::new();
    ok.encode(&mut b, caps);
    io.send(&mut seq, &b).await?;
    let mut c = Conn::new(caps);
    let mut out = BytesMut::with_capacity(4096);
    loop {
        // Answer every complete command in the buffer, then write once.
        while let Some((len, _)) = header(&io.rbuf) {
            if io.rbuf.len() < HEADER + len {
                break;
            }
            let payload = &io.rbuf[HEADER..HEADER + len];
            match payload.first().copied() {
                Some(com::QUIT) | None => return Ok(()),
                Some(com::QUERY) => c.query(&String::from_utf8_lossy(&payload[1..]), &mut out),
                Some(com::STMT_PREPARE) => {
                    c.prepare(&String::from_utf8_lossy(&payload[1..]), &mut out)
                }
                Some(com::STMT_EXECUTE) => {
                    let id = payload
                        .get(1..5)
                        .map_or(0, |b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
                    c.execute(id, &mut out);
                }
                Some(com::STMT_CLOSE) | Some(com::STMT_SEND_LONG_DATA) => {}
                Some(com::SET_OPTION) => {
                    let mut seq = 1;
                    write_terminator(&mut out, &mut seq, c.caps, status::AUTOCOMMIT);
                }
                Some(com::PING)
                | Some(com::INIT_DB)
                | Some(com::STMT_RESET)
                | Some(com::RESET_CONNECTION) => out.extend_from_slice(&c.ok),
                Some(other) => {
                    let mut seq = 1;
                    write_err(
                        &mut out,
                        &mut seq,
                        &ErrPacket::new(
                            concord_protocol::codes::UNKNOWN_COM_ERROR,
                            format!("mock server: command 0x{other:02x} not supported"),
                        ),
                    );
                }
            }
            io.rbuf.advance(HEADER + len);
        }
        if !out.is_empty() {
            io.io.write_all(&out).await?;
            out.clear();
        }
        io.fill().await?;
    }
}

#[cfg(test)]
mod tests {
    use super::select_list;

    #[test]
    fn select_lists() {
        assert_eq!(select_list("SELECT c FROM t WHERE id=1"), vec!["c"]);
        assert_eq!(
            select_list("select @@version, @@read_only, @@server_id"),
            vec!["@@version", "@@read_only", "@@server_id"]
        );
        assert_eq!(
            select_list("SELECT CONCAT(a, b), 'x,y' FROM t"),
            vec!["CONCAT(a, b)", "'x,y'"]
        );
        assert_eq!(
            select_list("SELECT @@version_comment LIMIT 1"),
            vec!["@@version_comment"]
        );
    }
}
