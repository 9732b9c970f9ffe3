//! Typed errors of the data path and the one place they become MySQL error
//! packets. Each variant says whose fault it is and whether the client may
//! retry safely.

use concord_protocol::codes::{self, Code};
use concord_protocol::err::ErrPacket;
use concord_protocol::ProtoError;
use std::sync::Arc;
use thiserror::Error;

/// Failures talking to one backend.
#[derive(Debug, Error)]
pub enum BackendError {
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("connecting to {addr} timed out")]
    ConnectTimeout { addr: String },
    #[error("login refused by the backend: {0}")]
    Auth(ErrPacket),
    /// The connection broke before login finished (the server, or a
    /// proxy in front of it, is not answering).
    #[error("connection lost during login: {0}")]
    Handshake(ProtoError),
    #[error("{0}")]
    Unsupported(String),
    #[error("protocol error: {0}")]
    Protocol(#[from] ProtoError),
    #[error("pool exhausted: {0} connections open and none freed within the acquire timeout")]
    PoolExhausted(u32),
}

impl BackendError {
    /// The backend could not be reached at all (nothing was sent).
    pub fn is_unreachable(&self) -> bool {
        matches!(
            self,
            BackendError::Connect { .. }
                | BackendError::ConnectTimeout { .. }
                | BackendError::Handshake(_)
        )
    }

    /// True when the connection died (as opposed to a refusal).
    pub fn is_lost(&self) -> bool {
        matches!(
            self,
            BackendError::Protocol(ProtoError::Closed) | BackendError::Protocol(ProtoError::Io(_))
        )
    }
}

/// Why a session could not carry out a command.
#[derive(Debug, Error)]
pub enum SessionError {
    /// The client sent something invalid or went away: close the session.
    #[error("client protocol error: {0}")]
    Client(ProtoError),
    /// A backend failed. `mid_response` means part of the answer already
    /// reached the client, so only closing the client is clean.
    #[error("backend '{backend}': {source}")]
    Backend {
        backend: Arc<str>,
        #[source]
        source: BackendError,
        mid_response: bool,
    },
    /// Answer the client with this error; the session carries on.
    #[error("{0}")]
    Reply(ErrPacket),
    /// Answer the client with this error, then close the session.
    #[error("{0}")]
    Fatal(ErrPacket),
}

impl SessionError {
    pub fn reply(code: Code, msg: impl Into<String>) -> Self {
        SessionError::Reply(ErrPacket::new(code, msg))
    }
    pub fn fatal(code: Code, msg: impl Into<String>) -> Self {
        SessionError::Fatal(ErrPacket::new(code, msg))
    }

    /// The packet the client receives for this error, if any.
    pub fn to_packet(&self) -> Option<ErrPacket> {
        match self {
            SessionError::Client(ProtoError::TooLarge { len, limit }) => Some(ErrPacket::new(
                codes::NET_PACKET_TOO_LARGE,
                format!("Got a packet bigger than 'max_allowed_packet' bytes ({len} > {limit}); concord closed the connection"),
            )),
            SessionError::Client(ProtoError::Sequence { .. }) => Some(ErrPacket::new(
                codes::NET_PACKETS_OUT_OF_ORDER,
                "Got packets out of order; concord closed the connection",
            )),
            SessionError::Client(ProtoError::Malformed(m)) => Some(ErrPacket::new(
                codes::HANDSHAKE_ERROR,
                format!("Malformed packet ({m}); concord closed the connection"),
            )),
            SessionError::Client(ProtoError::Truncated(m)) => Some(ErrPacket::new(
                codes::HANDSHAKE_ERROR,
                format!("Malformed packet (truncated {m}); concord closed the connection"),
            )),
            SessionError::Client(ProtoError::Timeout(what)) => Some(ErrPacket::new(
                codes::NET_READ_INTERRUPTED,
                format!("Timed out waiting for the client ({what}); concord closed the connection"),
            )),
            SessionError::Client(_) => None,
            SessionError::Backend {
                backend, source, ..
            } => Some(backend_packet(backend, source)),
            SessionError::Reply(p) | SessionError::Fatal(p) => Some(p.clone()),
        }
    }
}

/// Maps a backend failure to what the client sees.
pub fn backend_packet(backend: &str, e: &BackendError) -> ErrPacket {
    match e {
        BackendError::Auth(p) => ErrPacket {
            code: p.code,
            state: p.state,
            message: format!("concord could not log in to backend '{backend}': {}", p.message),
        },
                BackendError::Connect { .. } | BackendError::ConnectTimeout { .. } | BackendError::Handshake(_) => ErrPacket::new(
            codes::BACKEND_UNREACHABLE,
            format!("concord cannot reach backend '{backend}': {e}; safe to retry"),
        ),
        BackendError::PoolExhausted(_) => ErrPacket::new(
            codes::CON_COUNT_ERROR,
            format!("concord: backend '{backend}' {e}; safe to retry"),
        ),
        BackendError::Unsupported(_) => ErrPacket::new(
            codes::NOT_SUPPORTED_YET,
            format!("concord: backend '{backend}': {e}"),
        ),
        BackendError::Protocol(_) => ErrPacket::new(
            codes::BACKEND_LOST,
            format!("Lost connection to backend '{backend}' during query ({e}); the statement may or may not have been applied"),
        ),
    }
}
