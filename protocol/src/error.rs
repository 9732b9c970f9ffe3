use thiserror::Error;

/// A protocol violation or I/O failure while reading or writing packets.
#[derive(Debug, Error)]
pub enum ProtoError {
    #[error("connection closed by peer")]
    Closed,
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
    #[error("truncated packet: {0}")]
    Truncated(&'static str),
    #[error("malformed packet: {0}")]
    Malformed(String),
    #[error("packet of {len} bytes exceeds the limit of {limit} bytes")]
    TooLarge { len: usize, limit: usize },
    #[error("packet out of order: expected sequence id {expected}, got {got}")]
    Sequence { expected: u8, got: u8 },
    #[error("timed out: {0}")]
    Timeout(&'static str),
}

impl ProtoError {
    pub fn malformed(msg: impl Into<String>) -> Self {
        ProtoError::Malformed(msg.into())
    }
}
