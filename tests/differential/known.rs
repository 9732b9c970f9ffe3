//! The intentional differences between a session through concord and the
//! same session on the primary, in one place (the README's Compatibility
//! section lists the same, with reasons). The checker normalizes exactly
//! these and nothing else.

/// Each difference, and why.
pub const DIFFERENCES: &[(&str, &str)] = &[
    (
        "session-state information in OK packets",
        "concord asks every backend to report all session variables (session_track_system_variables = '*'), so a client that negotiated CLIENT_SESSION_TRACK sees more entries than its own setting asks for; the packets are compared without their state block",
    ),
    (
        "statement ids in PREPARE_OK",
        "concord numbers prepared statements per session (one id whatever backend connections the statement is prepared on)",
    ),
    (
        "diagnostics of errors concord answers itself",
        "a KILL concord refuses (unknown id, the session itself) never reaches a server, so the server's diagnostics area does not hold its error: on MariaDB a SHOW WARNINGS / SHOW ERRORS / @@error_count right after it, before any statement that uses a table, shows what came before",
    ),
    (
        "FOUND_ROWS() far from its SELECT",
        "FOUND_ROWS() is read where the session's previous SELECT ran; inside a transaction it is read on the transaction's connection, so a SELECT that ran on a replica before BEGIN is not what it counts (SQL_CALC_FOUND_ROWS followed by FOUND_ROWS(), as pagination code sends them, is exact)",
    ),
    (
        "how a killed idle session learns it was killed",
        "MariaDB closes the socket without a packet; concord sends error 1927 with the reason first. Either way the session is gone",
    ),
];

/// An error after which the server closes the connection.
pub fn closes_session(err_payload: &[u8]) -> bool {
    let code = err_payload
        .get(1..3)
        .map(|c| u16::from_le_bytes([c[0], c[1]]));
    matches!(code, Some(1927) | Some(1158) | Some(1053))
}

/// A killed session's next statement, reduced to "it is gone".
pub fn gone(after: &[Vec<u8>]) -> Vec<u8> {
    let closed = after.iter().any(|p| p == b"<closed>")
        || after
            .iter()
            .any(|p| p.first() == Some(&0xff) && closes_session(p));
    if closed {
        b"<session gone>".to_vec()
    } else {
        let mut v = b"<session alive: ".to_vec();
        for p in after {
            v.extend_from_slice(p);
        }
        v.push(b'>');
        v
    }
}
