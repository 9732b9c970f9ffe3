//! Follows one command's response packet by packet, so a relay can forward
//! bytes as they arrive and still know exactly where the response ends, the
//! final status flags (transaction state), and whether it failed.
//!
//! The scanner looks at packet headers and, for small packets, their
//! payloads; it never needs a large row in memory: packets longer than
//! [`WHOLE_LIMIT`] are given to it by their first bytes only.

use crate::consts::status;
use crate::ok::{ok_status, terminator_status};
use crate::packet::MAX_PAYLOAD;
use crate::ProtoError;

/// Packets up to this length are handed to the scanner whole. Every control
/// packet (OK, ERR, EOF, column count, prepare OK) is far smaller.
pub const WHOLE_LIMIT: usize = 64 * 1024;

/// The shape of response a command produces.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expect {
    /// COM_QUERY, COM_STMT_EXECUTE: OK, ERR, LOCAL INFILE or result sets,
    /// possibly several (MORE_RESULTS_EXISTS).
    ResultSets,
    /// COM_STMT_EXECUTE that asked for a cursor: as `ResultSets`, except
    /// that a column EOF with CURSOR_EXISTS ends the response (its rows
    /// come through COM_STMT_FETCH). Anywhere else the flag means nothing:
    /// MariaDB sets it on every result set of a CALL whose procedure
    /// opened a cursor of its own.
    Cursor,
    /// COM_STMT_PREPARE.
    Prepare,
    /// COM_FIELD_LIST: column definitions until EOF.
    FieldList,
    /// COM_STMT_FETCH: rows until EOF.
    Rows,
    /// One packet (OK/ERR/EOF or a plain string for COM_STATISTICS).
    Single,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    First,
    Columns(u64),
    ColumnsEof,
    Rows,
    PrepareFirst,
    PrepareParams(u16, u16),
    PrepareParamsEof(u16),
    PrepareColumns(u16),
    PrepareColumnsEof,
    FieldList,
    Single,
    Done,
}

/// What the relay should do after a packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// More packets belong to this response.
    More,
    /// The response is complete with this packet.
    Done,
    /// The server asked for a LOCAL INFILE: the client now sends the file,
    /// ending with an empty packet; then the server replies.
    LocalInfile,
}

/// What a successful COM_STMT_PREPARE returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PrepareOk {
    pub statement_id: u32,
    pub columns: u16,
    pub params: u16,
}

#[derive(Clone, Debug)]
pub struct Scanner {
    state: State,
    /// A column EOF with CURSOR_EXISTS ends the response ([`Expect::Cursor`]).
    cursor: bool,
    deprecate_eof: bool,
    /// The previous physical packet had MAX_PAYLOAD bytes: this one continues it.
    continuing: bool,
    /// Status flags of the last OK/EOF seen.
    pub status: u16,
    /// Some OK/EOF carried status flags (an ERR carries none: after an
    /// error alone, the connection's status is what it was before).
    pub status_seen: bool,
    /// Error code if the response ended with ERR.
    pub error: Option<u16>,
    /// The last packet handled was an OK packet (0x00 layout or 0xfe
    /// terminator in DEPRECATE_EOF mode); its payload can be decoded.
    pub last_was_ok: bool,
    /// Set after a successful prepare.
    pub prepare: Option<PrepareOk>,
    /// Result sets started (column count packets seen).
    pub result_sets: u32,
    /// Rows of the last result set.
    pub rows: u64,
}

impl Scanner {
    pub fn new(expect: Expect, deprecate_eof: bool) -> Self {
        let state = match expect {
            Expect::ResultSets | Expect::Cursor => State::First,
            Expect::Prepare => State::PrepareFirst,
            Expect::FieldList => State::FieldList,
            Expect::Rows => State::Rows,
            Expect::Single => State::Single,
        };
        Scanner {
            state,
            cursor: expect == Expect::Cursor,
            deprecate_eof,
            continuing: false,
            status: 0,
            status_seen: false,
            error: None,
            last_was_ok: false,
            prepare: None,
            result_sets: 0,
            rows: 0,
        }
    }

    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// True once the response is known to carry rows (for metrics).
    pub fn in_rows(&self) -> bool {
        self.state == State::Rows
    }

    /// The next packet is a column definition of a result set.
    pub fn in_columns(&self) -> bool {
        matches!(self.state, State::Columns(_))
    }

    /// Feeds one physical packet. `payload` is the whole payload when
    /// `len <= WHOLE_LIMIT`, else at least its first byte.
    pub fn packet(&mut self, payload: &[u8], len: usize) -> Result<Step, ProtoError> {
        self.last_was_ok = false;
        let continuing = self.continuing;
        self.continuing = len == MAX_PAYLOAD;
        if continuing {
            // Tail of a split packet: its kind was decided by the first part.
            return Ok(if self.state == State::Done && !self.continuing {
                Step::Done
            } else {
                Step::More
            });
        }
        if self.state == State::Done {
            return Err(ProtoError::malformed("packet after the end of a response"));
        }
        let first = payload.first().copied();
        if first == Some(0xff) {
            // ERR ends any response: no row, column definition or count
            // can start with 0xff (it is not a valid length prefix).
            self.error = Some(if payload.len() >= 3 {
                u16::from_le_bytes([payload[1], payload[2]])
            } else {
                0
            });
            self.state = State::Done;
            return Ok(Step::Done);
        }
        let is_terminator = first == Some(0xfe)
            && if self.deprecate_eof {
                len < MAX_PAYLOAD
            } else {
                len < 9
            };
        match self.state {
            State::Single => {
                if matches!(first, Some(0x00) | Some(0xfe)) {
                    if let Some(s) = terminator_status(payload, self.deprecate_eof) {
                        self.set_status(s);
                    }
                    self.last_was_ok = first == Some(0x00);
                }
                self.state = State::Done;
                Ok(Step::Done)
            }
            State::First => match first {
                Some(0x00) | Some(0xfe) => {
                    let s = ok_status(payload)
                        .ok_or_else(|| ProtoError::malformed("short OK packet"))?;
                    self.last_was_ok = true;
                    Ok(self.end_of_result(s))
                }
                Some(0xfb) => Ok(Step::LocalInfile),
                Some(_) => {
                    let mut r = crate::rd::Rd::new(payload);
                    let n = r.lenenc("column count")?;
                    if n == 0 {
                        return Err(ProtoError::malformed("result set with zero columns"));
                    }
                    self.result_sets += 1;
                    self.rows = 0;
                    self.state = State::Columns(n);
                    Ok(Step::More)
                }
                None => Err(ProtoError::malformed("empty response packet")),
            },
            State::Columns(n) => {
                self.state = if n > 1 {
                    State::Columns(n - 1)
                } else if self.deprecate_eof {
                    State::Rows
                } else {
                    State::ColumnsEof
                };
                Ok(Step::More)
            }
            State::ColumnsEof => {
                if !is_terminator {
                    return Err(ProtoError::malformed(
                        "expected EOF after column definitions",
                    ));
                }
                let s = terminator_status(payload, false).unwrap_or(0);
                self.set_status(s);
                if self.cursor && s & status::CURSOR_EXISTS != 0 {
                    // COM_STMT_EXECUTE opened a cursor: rows come via FETCH.
                    self.state = State::Done;
                    return Ok(Step::Done);
                }
                self.state = State::Rows;
                Ok(Step::More)
            }
            State::Rows => {
                if is_terminator {
                    let s = terminator_status(payload, self.deprecate_eof)
                        .ok_or_else(|| ProtoError::malformed("short EOF packet"))?;
                    self.last_was_ok = self.deprecate_eof;
                    Ok(self.end_of_result(s))
                } else {
                    self.rows += 1;
                    Ok(Step::More)
                }
            }
            State::PrepareFirst => {
                let mut r = crate::rd::Rd::new(payload);
                if r.u8("prepare ok")? != 0 {
                    return Err(ProtoError::malformed("unexpected prepare response"));
                }
                let statement_id = r.u32("statement id")?;
                let columns = r.u16("column count")?;
                let params = r.u16("param count")?;
                self.prepare = Some(PrepareOk {
                    statement_id,
                    columns,
                    params,
                });
                Ok(self.prepare_next(params, columns))
            }
            State::PrepareParams(p, c) => {
                if p > 1 {
                    self.state = State::PrepareParams(p - 1, c);
                    Ok(Step::More)
                } else if self.deprecate_eof {
                    Ok(self.prepare_next(0, c))
                } else {
                    self.state = State::PrepareParamsEof(c);
                    Ok(Step::More)
                }
            }
            State::PrepareParamsEof(c) => Ok(self.prepare_next(0, c)),
            State::PrepareColumns(c) => {
                if c > 1 {
                    self.state = State::PrepareColumns(c - 1);
                    Ok(Step::More)
                } else if self.deprecate_eof {
                    self.state = State::Done;
                    Ok(Step::Done)
                } else {
                    self.state = State::PrepareColumnsEof;
                    Ok(Step::More)
                }
            }
            State::PrepareColumnsEof => {
                self.state = State::Done;
                Ok(Step::Done)
            }
            State::FieldList => {
                if is_terminator {
                    if let Some(s) = terminator_status(payload, self.deprecate_eof) {
                        self.set_status(s);
                    }
                    self.state = State::Done;
                    Ok(Step::Done)
                } else {
                    Ok(Step::More)
                }
            }
            State::Done => Err(ProtoError::malformed("packet after the end of a response")),
        }
    }

    fn set_status(&mut self, s: u16) {
        self.status = s;
        self.status_seen = true;
    }

    fn prepare_next(&mut self, params: u16, columns: u16) -> Step {
        if params > 0 {
            self.state = State::PrepareParams(params, columns);
            Step::More
        } else if columns > 0 {
            self.state = State::PrepareColumns(columns);
            Step::More
        } else {
            self.state = State::Done;
            Step::Done
        }
    }

    fn end_of_result(&mut self, s: u16) -> Step {
        self.set_status(s);
        if s & status::MORE_RESULTS_EXISTS != 0 {
            self.state = State::First;
            Step::More
        } else {
            self.state = State::Done;
            Step::Done
        }
    }

    /// After a LOCAL INFILE transfer the server answers with OK or ERR.
    pub fn after_local_infile(&mut self) {
        self.state = State::First;
    }
}

#[cfg(test)]
mod tests;
