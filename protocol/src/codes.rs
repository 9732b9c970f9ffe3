//! MySQL error codes and SQLSTATEs concord sends itself.

/// An error code with its SQLSTATE.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Code(pub u16, pub &'static [u8; 5]);

pub const CON_COUNT_ERROR: Code = Code(1040, b"08004");
pub const HANDSHAKE_ERROR: Code = Code(1043, b"08S01");
pub const ACCESS_DENIED: Code = Code(1045, b"28000");
pub const NO_DB_ERROR: Code = Code(1046, b"3D000");
pub const UNKNOWN_COM_ERROR: Code = Code(1047, b"08S01");
pub const BAD_DB_ERROR: Code = Code(1049, b"42000");
pub const SERVER_SHUTDOWN: Code = Code(1053, b"08S01");
pub const PARSE_ERROR: Code = Code(1064, b"42000");
pub const NET_PACKET_TOO_LARGE: Code = Code(1153, b"08S01");
pub const NET_READ_ERROR: Code = Code(1158, b"08S01");
pub const NET_PACKETS_OUT_OF_ORDER: Code = Code(1156, b"08S01");
pub const NET_READ_INTERRUPTED: Code = Code(1159, b"08S01");
pub const NO_SUCH_THREAD: Code = Code(1094, b"HY000");
/// MariaDB's "Connection was killed" (ER_CONNECTION_KILLED).
pub const CONNECTION_KILLED: Code = Code(1927, b"70100");
pub const NOT_SUPPORTED_YET: Code = Code(1235, b"42000");
pub const UNKNOWN_STMT_HANDLER: Code = Code(1243, b"HY000");
pub const STMT_HAS_NO_OPEN_CURSOR: Code = Code(1421, b"HY000");
pub const MAX_PREPARED_STMT_COUNT_REACHED: Code = Code(1461, b"42000");
pub const NOT_ALLOWED_COMMAND: Code = Code(1148, b"42000");
pub const QUERY_INTERRUPTED: Code = Code(1317, b"70100");
/// ER_LOCK_DEADLOCK: InnoDB rolled the whole transaction back.
pub const LOCK_DEADLOCK: Code = Code(1213, b"40001");
/// MariaDB's ER_STATEMENT_TIMEOUT (max_statement_time exceeded).
pub const STATEMENT_TIMEOUT: Code = Code(1969, b"70100");
pub const LOCK_WAIT_TIMEOUT: Code = Code(1205, b"HY000");
pub const OPTION_PREVENTS_STATEMENT: Code = Code(1290, b"HY000");
pub const READ_ONLY_TRANSACTION: Code = Code(1792, b"25006");
pub const SECURE_TRANSPORT_REQUIRED: Code = Code(3159, b"HY000");
pub const HOST_IS_BLOCKED: Code = Code(1129, b"HY000");
pub const USER_LIMIT_REACHED: Code = Code(1226, b"42000");
pub const UNKNOWN_ERROR: Code = Code(1105, b"HY000");
/// ER_NET_READ_ERROR, "Got an error reading communication packets":
/// concord sends it when a backend dies mid-command or with the session's
/// transaction or state. Never a client-side code (2013 "Lost
/// connection"): a server that sends one of those is rejected by
/// Connector/C (CONC-648) as a malformed packet, and the message is lost.
pub const BACKEND_LOST: Code = Code(1158, b"08S01");
/// ER_CONNECT_TO_FOREIGN_DATA_SOURCE: concord cannot connect to a
/// backend (a server-range code, for the reason above; not 2003).
pub const BACKEND_UNREACHABLE: Code = Code(1429, b"HY000");
