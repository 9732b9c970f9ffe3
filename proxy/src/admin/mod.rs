//! The admin port: MySQL protocol (any `mysql`/`mariadb` client), one
//! account from `[admin]`. Each command is a type in its own file under
//! [`cmd`] behind the [`command::Command`] trait; [`parse`] finds it by
//! its leading words. Every mutation goes through Raft and is answered
//! only after it is committed and applied.

pub mod cmd;
pub mod command;
pub mod fleet_digests;
pub mod parse;
pub mod views;

use crate::net::ClientIo;
use crate::session::handshake::{self, Gate};
use crate::shared::Shared;
use crate::users::UserDb;
use concord_protocol::codes;
use concord_protocol::consts::{com, status};
use concord_protocol::err::ErrPacket;
use concord_protocol::resultset::{write_err, write_ok, write_resultset};
use concord_protocol::PacketStream;
use std::path::PathBuf;
use std::sync::Arc;
use tokio::net::TcpListener;

/// What a command produced.
pub enum Output {
    Table(views::Table),
    Ok(String),
    Err(ErrPacket),
}

pub async fn serve(shared: Arc<Shared>, listener: TcpListener, config_path: PathBuf) {
    let config_path = Arc::new(config_path);
    loop {
        let Ok((tcp, peer)) = listener.accept().await else {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            continue;
        };
        crate::net::tune(&tcp);
        let shared = shared.clone();
        let path = config_path.clone();
        tokio::spawn(async move {
            let cfg = shared.config.load_full();
            let users = UserDb::admin(&cfg.admin.user, &cfg.admin.password);
            let gate = Gate {
                users: &users,
                require_tls: false,
                max_packet: 1 << 20,
            };
            let id = shared.sessions.next_id(shared.node_id) as u32;
            let Some(auth) = handshake::login(tcp, peer, &shared, id, &gate, "admin").await else {
                return;
            };
            let mut seq = auth.seq;
            let mut stream = auth.stream;
            write_ok(&mut stream.wbuf, &mut seq, auth.caps, 0, "");
            if stream.flush().await.is_err() {
                return;
            }
            tracing::info!(%peer, "admin session opened");
            let _ = session(&shared, &mut stream, auth.caps, &path).await;
        });
    }
}

async fn session(
    shared: &Arc<Shared>,
    s: &mut PacketStream<ClientIo>,
    caps: u32,
    config_path: &std::path::Path,
) -> Result<(), concord_protocol::ProtoError> {
    loop {
        let p = s.read_packet_seq(0).await?;
        let mut seq = 1;
        match p.first() {
            Some(com::QUIT) | None => return Ok(()),
            Some(com::PING) | Some(com::INIT_DB) => write_ok(&mut s.wbuf, &mut seq, caps, 0, ""),
            Some(com::QUERY) => {
                let sql = String::from_utf8_lossy(&p.payload[1..]).into_owned();
                let out = match parse::parse(&sql) {
                    Ok(cmd) => {
                        tracing::info!("admin: {}", sql.trim());
                        cmd.run(command::Ctx {
                            shared,
                            config_path,
                        })
                        .await
                    }
                    Err(e) => Output::Err(ErrPacket::new(
                        codes::PARSE_ERROR,
                        format!("{e}: {}. Commands: {}", sql.trim(), parse::help()),
                    )),
                };
                match out {
                    Output::Table(t) => write_resultset(
                        &mut s.wbuf,
                        &mut seq,
                        caps,
                        status::AUTOCOMMIT,
                        &t.columns,
                        &t.rows,
                    ),
                    Output::Ok(msg) => write_ok(&mut s.wbuf, &mut seq, caps, 0, &msg),
                    Output::Err(e) => write_err(&mut s.wbuf, &mut seq, &e),
                }
            }
            Some(other) => write_err(
                &mut s.wbuf,
                &mut seq,
                &ErrPacket::new(
                    codes::UNKNOWN_COM_ERROR,
                    format!("the admin port does not support {}", com::name(other)),
                ),
            ),
        }
        s.flush().await?;
    }
}
