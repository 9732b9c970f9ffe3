//! Statement classification by a hand-written lexer over the SQL text:
//! keywords, comments, strings and quoted names, no parse tree. Tens of
//! nanoseconds for a point select; see the unit and property tests.

use std::time::Duration;

/// What a statement is, for routing and session-state tracking.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// May run on a lag-bounded replica.
    Read,
    /// Must run on the primary.
    Write,
    /// BEGIN / START TRANSACTION.
    Begin { read_only: bool },
    /// COMMIT.
    Commit,
    /// ROLLBACK (not ROLLBACK TO SAVEPOINT).
    Rollback,
    /// Session-level SET that must be replayed on every backend connection.
    SetSession,
    /// `SET autocommit = ...` (tracked, replayed).
    SetAutocommit(bool),
    /// `SET TRANSACTION ...`: only affects the next transaction; primary.
    SetTransaction,
    /// `USE db`.
    Use,
    /// Answered by concord itself (`SHOW CONCORD STATUS`).
    ConcordStatus,
    /// `KILL [QUERY | CONNECTION] n`: carried out by concord on the
    /// session whose id is `n` (see `session::kill`).
    Kill,
}

/// Why a statement keeps the session on its connections: state the
/// server holds that concord cannot read back and replay elsewhere.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Pin {
    TempTable,
    LockTables,
    UserLock,
    SqlPrepare,
    Xa,
    Handler,
    Role,
    /// A state change the server reported that no tracked value explains
    /// (a stored program assigned a user variable, ...).
    Untracked,
    /// More session variables than concord keeps.
    Overflow,
    /// A backend that does not report session state.
    NoTracking,
    /// NEXTVAL / SETVAL: the connection holds the session's LASTVAL of a
    /// sequence (MariaDB), which no tracker reports.
    Sequence,
    /// `sql_mode` NO_BACKSLASH_ESCAPES: concord's reading of statements
    /// assumes backslash escapes, so the session's statements all go to
    /// its primary connection, as they are.
    NoBackslashEscapes,
}

impl Pin {
    pub const ALL: [Pin; 12] = [
        Pin::TempTable,
        Pin::LockTables,
        Pin::UserLock,
        Pin::SqlPrepare,
        Pin::Xa,
        Pin::Handler,
        Pin::Role,
        Pin::Untracked,
        Pin::Overflow,
        Pin::NoTracking,
        Pin::Sequence,
        Pin::NoBackslashEscapes,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Pin::TempTable => "temporary_table",
            Pin::LockTables => "lock_tables",
            Pin::UserLock => "get_lock",
            Pin::SqlPrepare => "sql_prepare",
            Pin::Xa => "xa_transaction",
            Pin::Handler => "handler",
            Pin::Role => "set_role",
            Pin::Untracked => "untracked_state",
            Pin::Overflow => "state_overflow",
            Pin::NoTracking => "backend_without_session_track",
            Pin::Sequence => "sequence",
            Pin::NoBackslashEscapes => "no_backslash_escapes",
        }
    }

    pub fn bit(self) -> u16 {
        1 << (self as u16)
    }
}

/// Properties found anywhere in the statement.
pub mod flag {
    /// `FOR UPDATE`, `FOR SHARE`, `LOCK IN SHARE MODE`.
    pub const LOCKING: u32 = 1;
    /// GET_LOCK, LAST_INSERT_ID, NEXTVAL, FOUND_ROWS, ... : connection-bound.
    pub const CONN_FUNC: u32 = 1 << 1;
    /// `SELECT ... INTO`.
    pub const INTO: u32 = 1 << 2;
    /// Assigns a user variable (`:=` or SET @x).
    pub const USER_VAR_WRITE: u32 = 1 << 3;
    /// Reads a user variable.
    pub const USER_VAR: u32 = 1 << 4;
    /// CREATE/DROP TEMPORARY TABLE.
    pub const TEMP_TABLE: u32 = 1 << 5;
    /// More than one statement in the text.
    pub const MULTI: u32 = 1 << 6;
    /// Changes connection state concord does not replay (LOCK TABLES,
    /// PREPARE, XA, HANDLER, ...): pins the session to its connection.
    pub const PINS: u32 = 1 << 7;
    /// The text was cut (very large statement): decided conservatively.
    pub const TRUNCATED: u32 = 1 << 8;
    /// Reads the previous statement's diagnostics or counters (SHOW
    /// WARNINGS, FOUND_ROWS(), ROW_COUNT(), @@warning_count, ...): runs on
    /// the connection that ran the previous statement.
    pub const STMT_INFO: u32 = 1 << 9;
    /// Calls CONNECTION_ID() or IS_USED_LOCK(): rewritten so the ids are
    /// the session's (see `rewrite_ids`).
    pub const CONN_ID: u32 = 1 << 10;
    /// `SET STATEMENT ... FOR`: its variables revert after the statement.
    pub const SET_STATEMENT: u32 = 1 << 11;
    /// Only SET / USE statements: every state change the server reports
    /// for it is a tracked variable, the schema or a named user variable.
    pub const ONLY_SETS: u32 = 1 << 12;
    /// Calls FOUND_ROWS(): runs where the previous SELECT ran.
    pub const FOUND_ROWS: u32 = 1 << 13;
    /// Names a table (`FROM` somewhere, or a statement about tables):
    /// the server resets its diagnostics area for it.
    pub const USES_TABLE: u32 = 1 << 14;
    /// Reads the previous statements' warnings and errors (SHOW WARNINGS,
    /// @@warning_count, ...).
    pub const DIAG: u32 = 1 << 15;
    /// Runs a stored procedure (CALL): it may change session state that
    /// no reported value describes.
    pub const CALL: u32 = 1 << 16;
    /// Names a `@@concord_...` variable: answered by concord (causal
    /// tokens), never sent to a backend.
    pub const CONCORD_VAR: u32 = 1 << 17;
    /// Reads or sets the session's last generated id (LAST_INSERT_ID(),
    /// @@last_insert_id, @@identity).
    pub const INSERT_ID: u32 = 1 << 18;
    /// Calls ROW_COUNT().
    pub const ROW_COUNT: u32 = 1 << 19;
    /// `SELECT SQL_CALC_FOUND_ROWS`: FOUND_ROWS() then needs the server.
    pub const CALC_FOUND_ROWS: u32 = 1 << 20;
    /// Sets FOUND_ROWS() to what only the server knows: not a SELECT, but
    /// runs one (see [`super::sets_found_rows`]), or a SELECT with a LIMIT
    /// offset (the skipped rows count).
    pub const SETS_FOUND_ROWS: u32 = 1 << 21;
    /// A SHOW (CREATE, WARNINGS, ERRORS, GRANTS, MASTER/SLAVE STATUS) or
    /// HELP: unlike SELECTs and the SHOWs read from information_schema,
    /// it leaves FOUND_ROWS() as it was.
    pub const KEEPS_FOUND_ROWS: u32 = 1 << 22;
    /// `LIMIT offset, count` or the word OFFSET somewhere.
    pub const LIMIT_OFFSET: u32 = 1 << 23;
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Class {
    pub kind: Kind,
    pub flags: u32,
    /// With `flag::PINS`: why.
    pub pin: Option<Pin>,
    /// `/* concord:primary */`.
    pub hint_primary: bool,
    /// `/* concord:max_lag=200ms */`.
    pub hint_max_lag: Option<Duration>,
    /// `/* concord:after=TOKEN */`: byte range of TOKEN in the text.
    pub hint_after: Option<(u32, u32)>,
    /// `/* concord:timeout=2s */`.
    pub hint_timeout: Option<Duration>,
    /// A query rule's ROUTE REPLICA: a read may go to a replica even
    /// with `routing.split_reads` off.
    pub rule_replica: bool,
}

impl Class {
    pub fn has(&self, f: u32) -> bool {
        self.flags & f != 0
    }

    /// Whether the statement can run on a replica at all.
    pub fn replica_ok(&self) -> bool {
        matches!(self.kind, Kind::Read)
            && !self.hint_primary
            && self.flags
                & (flag::LOCKING
                    | flag::CONN_FUNC
                    | flag::STMT_INFO
                    | flag::INTO
                    | flag::USER_VAR_WRITE
                    | flag::MULTI
                    | flag::PINS
                    | flag::TRUNCATED
                    | flag::TEMP_TABLE)
                == 0
    }
}

/// A token: a word (keyword or identifier, uppercased lazily by compare),
/// or one punctuation byte.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Tok<'a> {
    Word(&'a [u8]),
    Punct(u8),
    /// `@name` or `@@name`.
    Var {
        system: bool,
    },
    /// A string or quoted name (content ignored).
    Quoted,
    Number,
}

/// Byte classes, one table load per byte on the lexer's hot loops.
const WORD: u8 = 1; // continues a word: letters, digits, `_`, `$`, non-ASCII
const WORD_START: u8 = 2; // starts one: the same but digits
const NUM: u8 = 4; // continues a number: letters, digits, `.`
const GAP: u8 = 8; // may start space or a comment: whitespace, `#`, `-`, `/`, `*`
static CLASS: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut i = 0;
    while i < 256 {
        let c = i as u8;
        let word = c.is_ascii_alphanumeric() || c == b'_' || c == b'$' || c >= 0x80;
        let mut v = 0;
        if word {
            v |= WORD;
        }
        if word && !c.is_ascii_digit() {
            v |= WORD_START;
        }
        if c.is_ascii_alphanumeric() || c == b'.' {
            v |= NUM;
        }
        if c.is_ascii_whitespace() || matches!(c, b'#' | b'-' | b'/' | b'*') {
            v |= GAP;
        }
        t[i] = v;
        i += 1;
    }
    t
};

/// How many bytes from `from` on are of class `class`.
#[inline]
fn run_of(s: &[u8], from: usize, class: u8) -> usize {
    s.get(from..)
        .unwrap_or_default()
        .iter()
        .position(|b| CLASS[usize::from(*b)] & class == 0)
        .unwrap_or(s.len().saturating_sub(from))
}

struct Lexer<'a> {
    s: &'a [u8],
    i: usize,
    hint_primary: bool,
    hint_max_lag: Option<Duration>,
    hint_after: Option<(u32, u32)>,
    hint_timeout: Option<Duration>,
    /// A `@@concord_...` variable was seen.
    concord_var: bool,
    /// Writes the digest text as tokens go by (see [`classify_digest`]).
    fp: Option<Fp>,
}

impl<'a> Lexer<'a> {
    fn new(s: &'a [u8]) -> Self {
        Lexer {
            s,
            i: 0,
            hint_primary: false,
            hint_max_lag: None,
            hint_after: None,
            hint_timeout: None,
            concord_var: false,
            fp: None,
        }
    }

    #[inline]
    fn skip_space_and_comments(&mut self) {
        // Most tokens follow one space or none: decide on one table load.
        let gap = |c: &u8| CLASS[usize::from(*c)] & GAP != 0;
        match self.s.get(self.i) {
            Some(c) if !gap(c) => {}
            Some(b' ') if !self.s.get(self.i + 1).is_some_and(gap) => self.i += 1,
            Some(_) => self.skip_gap(),
            None => {}
        }
    }

    fn skip_gap(&mut self) {
        let s = self.s;
        while self.i < s.len() {
            let c = s[self.i];
            if c.is_ascii_whitespace() {
                self.i += 1;
            } else if c == b'#'
                || (c == b'-'
                    && s.get(self.i + 1) == Some(&b'-')
                    && s.get(self.i + 2).is_none_or(|c| c.is_ascii_whitespace()))
            {
                while self.i < s.len() && s[self.i] != b'\n' {
                    self.i += 1;
                }
            } else if c == b'/' && s.get(self.i + 1) == Some(&b'*') {
                if matches!(s.get(self.i + 2), Some(b'!'))
                    || (s.get(self.i + 2) == Some(&b'M') && s.get(self.i + 3) == Some(&b'!'))
                {
                    // Executable comment: its body is SQL. Skip the marker
                    // and version digits; the closing */ is skipped as punct.
                    self.i += if s[self.i + 2] == b'M' { 4 } else { 3 };
                    while self.i < s.len() && s[self.i].is_ascii_digit() {
                        self.i += 1;
                    }
                    continue;
                }
                let start = self.i + 2;
                let closed = find(s, start, b"*/");
                let end = closed.unwrap_or(s.len());
                // An unclosed comment (a text cut at 64 KiB) is no hint.
                if closed.is_some() {
                    self.hint(start, end);
                }
                self.i = (end + 2).min(s.len());
            } else if c == b'*' && s.get(self.i + 1) == Some(&b'/') {
                self.i += 2; // end of an executable comment
            } else {
                break;
            }
        }
    }

    fn hint(&mut self, start: usize, end: usize) {
        let body = trim(&self.s[start..end]);
        let Some(rest) = strip_prefix_ci(body, b"concord:") else {
            return;
        };
        // after=TOKEN runs to the next space (a MariaDB token has commas).
        if let Some(at) = find_ci(rest, b"after=") {
            let from = rest.as_ptr() as usize - self.s.as_ptr() as usize + at + 6;
            let to = self.s[from..end]
                .iter()
                .position(|c| c.is_ascii_whitespace())
                .map_or(end, |n| from + n);
            self.hint_after = Some((from as u32, to as u32));
        }
        for part in rest.split(|&b| b == b',' || b == b' ') {
            if eq_ci(part, b"primary") {
                self.hint_primary = true;
            } else if let Some(v) = strip_prefix_ci(part, b"max_lag=") {
                if let Ok(d) = std::str::from_utf8(v)
                    .unwrap_or("")
                    .parse::<concord_config::Duration>()
                {
                    self.hint_max_lag = Some(d.get());
                }
            } else if let Some(v) = strip_prefix_ci(part, b"timeout=") {
                if let Ok(d) = std::str::from_utf8(v)
                    .unwrap_or("")
                    .parse::<concord_config::Duration>()
                {
                    self.hint_timeout = Some(d.get());
                }
            }
        }
    }

    /// The next token, also fed to the digest writer if there is one. A
    /// classifier that looks ahead and backs up reads some tokens twice:
    /// the writer takes each position once, in order.
    fn next(&mut self) -> Option<Tok<'a>> {
        self.skip_space_and_comments();
        let start = self.i;
        let t = self.token()?;
        if let Some(fp) = self.fp.as_mut() {
            if start >= fp.done {
                fp.push(&self.s[start..self.i], t);
                fp.done = self.i;
            }
        }
        Some(t)
    }

    /// The token at `i` (space and comments already skipped).
    fn token(&mut self) -> Option<Tok<'a>> {
        let s = self.s;
        let c = *s.get(self.i)?;
        let start = self.i;
        let class = CLASS[usize::from(c)];
        if class & WORD_START != 0 {
            self.i += run_of(s, self.i, WORD);
            return Some(Tok::Word(&s[start..self.i]));
        }
        if c.is_ascii_digit() {
            self.i += run_of(s, self.i, NUM);
            return Some(Tok::Number);
        }
        match c {
            b'\'' | b'"' | b'`' => {
                self.i += 1;
                while self.i < s.len() {
                    let d = s[self.i];
                    if d == b'\\' && c != b'`' {
                        self.i += 2;
                        continue;
                    }
                    self.i += 1;
                    if d == c {
                        if s.get(self.i) == Some(&c) {
                            self.i += 1; // doubled quote
                            continue;
                        }
                        break;
                    }
                }
                self.i = self.i.min(s.len());
                Some(Tok::Quoted)
            }
            b'@' => {
                self.i += 1;
                let system = s.get(self.i) == Some(&b'@');
                if system {
                    self.i += 1;
                }
                if matches!(s.get(self.i), Some(b'\'' | b'"' | b'`')) {
                    self.token();
                } else {
                    let name = self.i;
                    while self.i < s.len()
                        && (s[self.i].is_ascii_alphanumeric()
                            || matches!(s[self.i], b'_' | b'.' | b'$'))
                    {
                        self.i += 1;
                    }
                    if system && is_concord_var(&s[name..self.i]) {
                        self.concord_var = true;
                    }
                }
                Some(Tok::Var { system })
            }
            _ => {
                self.i += 1;
                Some(Tok::Punct(c))
            }
        }
    }
}

/// `concord_...`, `session.concord_...` or `local.concord_...`.
fn is_concord_var(name: &[u8]) -> bool {
    let name = strip_prefix_ci(name, b"session.")
        .or_else(|| strip_prefix_ci(name, b"local."))
        .unwrap_or(name);
    strip_prefix_ci(name, b"concord_").is_some()
}

/// Case-insensitive position of `pat` in `s`.
fn find_ci(s: &[u8], pat: &[u8]) -> Option<usize> {
    s.windows(pat.len()).position(|w| eq_ci(w, pat))
}

fn find(s: &[u8], from: usize, pat: &[u8]) -> Option<usize> {
    s.get(from..)?
        .windows(pat.len())
        .position(|w| w == pat)
        .map(|p| p + from)
}

fn trim(b: &[u8]) -> &[u8] {
    let start = b
        .iter()
        .position(|c| !c.is_ascii_whitespace())
        .unwrap_or(b.len());
    let end = b
        .iter()
        .rposition(|c| !c.is_ascii_whitespace())
        .map_or(start, |e| e + 1);
    &b[start..end]
}

#[inline]
fn eq_ci(a: &[u8], b: &[u8]) -> bool {
    a.eq_ignore_ascii_case(b)
}

fn strip_prefix_ci<'a>(s: &'a [u8], p: &[u8]) -> Option<&'a [u8]> {
    (s.len() >= p.len() && eq_ci(&s[..p.len()], p)).then(|| &s[p.len()..])
}

fn is_word(t: Option<Tok<'_>>, w: &[u8]) -> bool {
    matches!(t, Some(Tok::Word(x)) if eq_ci(x, w))
}

/// What the scan does on meeting a word of [`SCAN_WORDS`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Act {
    /// `FOR UPDATE`.
    Update,
    /// `FOR SHARE`, `LOCK IN SHARE MODE`.
    Share,
    From,
    /// `SELECT ... INTO @v / OUTFILE / DUMPFILE`.
    Into,
    Temporary,
    /// `NEXT VALUE FOR`.
    For,
    GetLock,
    ConnectionId,
    IsUsedLock,
    LastInsertId,
    /// A function whose result depends on state that lives on the
    /// session's primary connection: locks, LASTVAL, waits.
    ConnFunc,
    /// NEXTVAL / SETVAL: leaves the sequence's LASTVAL on the connection.
    Sequence,
    FoundRows,
    RowCount,
    CalcFoundRows,
    /// `LIMIT offset, count` / `OFFSET`: FOUND_ROWS() counts the skipped rows.
    Limit,
    Offset,
}

/// The words the scan acts on, upper case. The filter below and the
/// scan's `match` both come from this one list.
const SCAN_WORDS: &[(&[u8], Act)] = &[
    (b"UPDATE", Act::Update),
    (b"SHARE", Act::Share),
    (b"FROM", Act::From),
    (b"INTO", Act::Into),
    (b"TEMPORARY", Act::Temporary),
    (b"FOR", Act::For),
    (b"GET_LOCK", Act::GetLock),
    (b"CONNECTION_ID", Act::ConnectionId),
    (b"IS_USED_LOCK", Act::IsUsedLock),
    (b"LAST_INSERT_ID", Act::LastInsertId),
    (b"RELEASE_LOCK", Act::ConnFunc),
    (b"RELEASE_ALL_LOCKS", Act::ConnFunc),
    (b"IS_FREE_LOCK", Act::ConnFunc),
    (b"NEXTVAL", Act::Sequence),
    (b"LASTVAL", Act::ConnFunc),
    (b"SETVAL", Act::Sequence),
    (b"MASTER_POS_WAIT", Act::ConnFunc),
    (b"MASTER_GTID_WAIT", Act::ConnFunc),
    (b"WAIT_FOR_EXECUTED_GTID_SET", Act::ConnFunc),
    (b"FOUND_ROWS", Act::FoundRows),
    (b"ROW_COUNT", Act::RowCount),
    (b"SQL_CALC_FOUND_ROWS", Act::CalcFoundRows),
    (b"LIMIT", Act::Limit),
    (b"OFFSET", Act::Offset),
];

/// Per word length, the first letters of [`SCAN_WORDS`] (bit `c - 'A'`):
/// most words of a statement (names, WHERE, AND) are passed over on one
/// table load, without a copy or a compare.
static SCAN_FILTER: [u32; 27] = {
    let mut t = [0u32; 27];
    let mut i = 0;
    while i < SCAN_WORDS.len() {
        let w = SCAN_WORDS[i].0;
        assert!(w.len() < 27 && w[0].is_ascii_uppercase());
        t[w.len()] |= 1 << (w[0] - b'A');
        i += 1;
    }
    t
};

/// What the scan does with the word `w`, if anything.
#[inline]
fn scan_act(w: &[u8]) -> Option<Act> {
    let m = SCAN_FILTER.get(w.len())?;
    let c = w.first()?.to_ascii_uppercase();
    if !c.is_ascii_uppercase() || m & (1 << (c - b'A')) == 0 {
        return None;
    }
    SCAN_WORDS
        .iter()
        .find(|(k, _)| eq_ci(k, w))
        .map(|&(_, a)| a)
}

/// System variables whose value belongs to the session's primary
/// connection (the last generated id, the last GTID written).
const CONN_VARS: &[&[u8]] = &[b"LAST_INSERT_ID", b"IDENTITY", b"INSERT_ID", b"LAST_GTID"];

/// System variables that describe the server itself, which a client of
/// the primary reads there (`@@global.anything` too): "am I on the
/// writer?" checks, GTID positions.
const SERVER_VARS: &[&[u8]] = &[
    b"READ_ONLY",
    b"SUPER_READ_ONLY",
    b"GTID_BINLOG_POS",
    b"GTID_BINLOG_STATE",
    b"GTID_CURRENT_POS",
    b"GTID_SLAVE_POS",
    b"GTID_EXECUTED",
    b"GTID_PURGED",
];

/// `@@global.name`.
fn is_global_var(tok: &[u8]) -> bool {
    let Some(at) = tok.iter().position(|&c| c == b'@') else {
        return false;
    };
    let name = &tok[at..];
    let name = &name[name.iter().take_while(|&&c| c == b'@').count()..];
    strip_prefix_ci(name, b"global.").is_some()
}

/// GET DIAGNOSTICS assigns the user variables it names. (A CALL's OUT
/// parameters and LOAD DATA's `(@v)` columns are not followed this way:
/// the procedure body or a trigger may assign others, which only the
/// server's state-changed flag reveals, and that pins the session.)
fn assigns_named_vars(t: Option<Tok<'_>>) -> bool {
    matches!(t, Some(Tok::Word(w)) if eq_ci(w, b"GET"))
        && !concord_config::testhooks::on("diagnostics-vars-untracked")
}

/// System variables that report on the previous statements' conditions.
const STMT_VARS: &[&[u8]] = &[b"WARNING_COUNT", b"ERROR_COUNT"];

/// The bare name of `@@name`, `@@session.name` or `@@local.name`; `tok` is
/// the token's text, leading blanks included.
fn sysvar_name(tok: &[u8]) -> &[u8] {
    let Some(at) = tok.iter().position(|&c| c == b'@') else {
        return b"";
    };
    let name = &tok[at..];
    let name = &name[name.iter().take_while(|&&c| c == b'@').count()..];
    match name.iter().position(|&c| c == b'.') {
        Some(dot) => &name[dot + 1..],
        None => name,
    }
}

/// `SHOW` forms that describe the server rather than data: answered by
/// the primary, as on a direct connection.
const SHOW_SERVER: &[&[u8]] = &[
    b"MASTER",
    b"BINLOG",
    b"BINARY",
    b"SLAVE",
    b"REPLICA",
    b"REPLICAS",
    b"ALL",
    b"PROCESSLIST",
    b"ENGINE",
    b"GLOBAL",
];

/// Statements that must go to the primary and otherwise change nothing
/// concord tracks.
const WRITE_WORDS: &[&[u8]] = &[
    b"INSERT",
    b"UPDATE",
    b"DELETE",
    b"REPLACE",
    b"CREATE",
    b"ALTER",
    b"DROP",
    b"TRUNCATE",
    b"RENAME",
    b"GRANT",
    b"REVOKE",
    b"LOAD",
    b"CALL",
    b"DO",
    b"ANALYZE",
    b"OPTIMIZE",
    b"REPAIR",
    b"FLUSH",
    b"KILL",
    b"PURGE",
    b"RESET",
    b"INSTALL",
    b"UNINSTALL",
    b"CHECKSUM",
    b"CHECK",
    b"SAVEPOINT",
    b"RELEASE",
    b"BINLOG",
    b"CHANGE",
    b"START",
    b"STOP",
    b"SHUTDOWN",
];

/// Statements about tables (the server resets its diagnostics area).
const TABLE_WORDS: &[&[u8]] = &[
    b"INSERT",
    b"UPDATE",
    b"DELETE",
    b"REPLACE",
    b"CREATE",
    b"ALTER",
    b"DROP",
    b"TRUNCATE",
    b"RENAME",
    b"LOAD",
    b"ANALYZE",
    b"OPTIMIZE",
    b"REPAIR",
    b"CHECK",
    b"CHECKSUM",
    b"LOCK",
    b"HANDLER",
    b"TABLE",
    b"DESC",
    b"DESCRIBE",
];

/// Statements that change connection state concord cannot replay.
const PIN_WORDS: &[(&[u8], Pin)] = &[
    (b"LOCK", Pin::LockTables),
    (b"UNLOCK", Pin::LockTables),
    (b"PREPARE", Pin::SqlPrepare),
    (b"EXECUTE", Pin::SqlPrepare),
    (b"DEALLOCATE", Pin::SqlPrepare),
    (b"XA", Pin::Xa),
    (b"HANDLER", Pin::Handler),
    (b"DECLARE", Pin::Untracked),
];

/// Classifies a COM_QUERY text.
pub fn classify(sql: &[u8]) -> Class {
    classify_in(Lexer::new(sql)).0
}

/// [`classify`] and [`fingerprint`] in one pass over the statement.
pub fn classify_digest(sql: &[u8], out: &mut Vec<u8>) -> (Class, u64) {
    // The classifier's scan reads every statement to its end.
    with_digest(sql, out, classify_in)
}

fn classify_in(mut lx: Lexer<'_>) -> (Class, Lexer<'_>) {
    let sql = lx.s;
    let first = lx.next();
    let mut flags = 0;
    let mut pin = None;
    let kind = match first {
        Some(Tok::Word(w)) => first_word(w, &mut lx, &mut flags, &mut pin),
        Some(Tok::Punct(b'(')) => Kind::Read, // (SELECT ...) UNION ...
        _ => Kind::Write,
    };
    if matches!(kind, Kind::SetSession | Kind::SetAutocommit(_) | Kind::Use) {
        flags |= flag::ONLY_SETS;
    }
    if let Some(Tok::Word(w)) = first {
        if TABLE_WORDS.iter().any(|t| eq_ci(w, t)) {
            flags |= flag::USES_TABLE;
        }
    }
    // `SET a = 1, @b = 2`: a user variable later in a SET is assigned too.
    scan_rest(
        &mut lx,
        &mut flags,
        &mut pin,
        kind == Kind::SetSession || assigns_named_vars(first),
    );
    if flags & flag::MULTI != 0 && !only_sets(sql) {
        flags &= !flag::ONLY_SETS;
    }
    if lx.concord_var {
        flags |= flag::CONCORD_VAR;
    }
    if kind != Kind::Read && flags & flag::MULTI == 0 {
        if let Some(Tok::Word(w)) = first {
            if sets_found_rows(w, sql) {
                flags |= flag::SETS_FOUND_ROWS;
            }
        }
    }
    // A SELECT's LIMIT offset (or a column named `offset`: one round trip
    // more) makes FOUND_ROWS() the server's; in a write it means nothing.
    if kind == Kind::Read && flags & flag::LIMIT_OFFSET != 0 {
        flags |= flag::SETS_FOUND_ROWS;
    }
    if kind == Kind::Read && keeps_found_rows(sql) {
        flags = (flags | flag::KEEPS_FOUND_ROWS) & !flag::SETS_FOUND_ROWS;
    }
    let class = Class {
        kind,
        flags,
        pin,
        hint_primary: lx.hint_primary,
        hint_max_lag: lx.hint_max_lag,
        hint_timeout: lx.hint_timeout,
        hint_after: lx.hint_after,
        rule_replica: false,
    };
    (class, lx)
}

/// Whether a statement that is not a SELECT sets FOUND_ROWS(), as the
/// server does for a SELECT that feeds it: INSERT/REPLACE ... SELECT,
/// CREATE TABLE ... SELECT, and a SET that runs a subquery. A subquery
/// of VALUES, of ON DUPLICATE KEY UPDATE, of an UPDATE, DELETE, DO or a
/// view's definition leaves it as it was. `first`: the first word.
pub fn sets_found_rows(first: &[u8], sql: &[u8]) -> bool {
    let set = eq_ci(first, b"SET");
    let insert = eq_ci(first, b"INSERT") || eq_ci(first, b"REPLACE");
    let create = eq_ci(first, b"CREATE");
    if !(set || insert || create) {
        return false;
    }
    let mut lx = Lexer::new(sql);
    lx.next();
    if set && matches!(lx.clone_next(), Some(Tok::Word(w)) if eq_ci(w, b"STATEMENT")) {
        // SET STATEMENT ... FOR <statement>: left to the server's reading.
        return false;
    }
    let mut depth = 0i32;
    let mut table = !create;
    while let Some(t) = lx.next() {
        match t {
            Tok::Punct(b'(') => depth += 1,
            Tok::Punct(b')') => depth -= 1,
            Tok::Word(w) if eq_ci(w, b"SELECT") && (set || depth <= 1) => return table,
            // CREATE [OR REPLACE] [TEMPORARY] TABLE: anything else (a
            // view, a routine, a trigger) is only a definition.
            Tok::Word(w) if create && !table => {
                if eq_ci(w, b"TABLE") {
                    table = true;
                } else if !(eq_ci(w, b"OR") || eq_ci(w, b"REPLACE") || eq_ci(w, b"TEMPORARY")) {
                    return false;
                }
            }
            Tok::Word(w)
                if insert
                    && depth == 0
                    && (eq_ci(w, b"VALUES") || eq_ci(w, b"VALUE") || eq_ci(w, b"SET")) =>
            {
                return false
            }
            _ => {}
        }
    }
    false
}

/// A SHOW or HELP that leaves FOUND_ROWS() alone (see
/// [`flag::KEEPS_FOUND_ROWS`]).
fn keeps_found_rows(sql: &[u8]) -> bool {
    let mut lx = Lexer::new(sql);
    fn word(t: Option<Tok<'_>>) -> Option<&[u8]> {
        match t {
            Some(Tok::Word(w)) => Some(w),
            _ => None,
        }
    }
    let Some(first) = word(lx.next()) else {
        return false;
    };
    if eq_ci(first, b"HELP") {
        return true;
    }
    if !eq_ci(first, b"SHOW") {
        return false;
    }
    let Some(second) = word(lx.next()) else {
        return false;
    };
    if [&b"CREATE"[..], b"WARNINGS", b"ERRORS", b"GRANTS"]
        .iter()
        .any(|w| eq_ci(second, w))
    {
        return true;
    }
    [&b"MASTER"[..], b"SLAVE", b"REPLICA", b"BINLOG"]
        .iter()
        .any(|w| eq_ci(second, w))
        && word(lx.next()).is_some_and(|w| eq_ci(w, b"STATUS"))
}

/// Whether a SET in `sql` assigns a global (`SET GLOBAL x`, `@@global.x`,
/// PERSIST): in every statement of a multi-statement text (`multi`), else
/// in the first only (anything but a SET is answered at its first word).
pub fn sets_global(sql: &[u8], multi: bool) -> bool {
    let mut lx = Lexer::new(sql);
    // Only what an assignment sets (after SET or a comma at depth 0), not
    // a global read on the right (`SET @v = @@global.x`).
    let (mut depth, mut at_start, mut in_set, mut target) = (0i32, true, false, false);
    loop {
        lx.skip_space_and_comments();
        let start = lx.i;
        let Some(t) = lx.next() else { return false };
        if at_start {
            at_start = false;
            in_set = matches!(t, Tok::Word(w) if eq_ci(w, b"SET"));
            if !in_set && !multi {
                return false;
            }
            target = in_set;
            continue;
        }
        match t {
            Tok::Word(w) if target && (eq_ci(w, b"GLOBAL") || eq_ci(w, b"PERSIST")) => return true,
            Tok::Var { system: true } if target => {
                let name = sql.get(start + 2..lx.i).unwrap_or_default();
                let scope = name.split(|c| *c == b'.').next().unwrap_or_default();
                if name.contains(&b'.') && (eq_ci(scope, b"GLOBAL") || eq_ci(scope, b"PERSIST")) {
                    return true;
                }
            }
            Tok::Punct(b'(') => depth += 1,
            Tok::Punct(b')') => depth -= 1,
            Tok::Punct(b';') if depth == 0 => {
                if !multi {
                    return false;
                }
                at_start = true;
                continue;
            }
            _ => {}
        }
        target = in_set && depth == 0 && t == Tok::Punct(b',');
    }
}

/// Every statement of a multi-statement text is a SET or USE.
fn only_sets(sql: &[u8]) -> bool {
    let mut lx = Lexer::new(sql);
    let mut at_start = true;
    let mut depth = 0i32;
    while let Some(t) = lx.next() {
        match t {
            Tok::Word(w) if at_start && (eq_ci(w, b"SET") || eq_ci(w, b"USE")) => {}
            _ if at_start => return false,
            Tok::Punct(b'(') => depth += 1,
            Tok::Punct(b')') => depth -= 1,
            Tok::Punct(b';') if depth == 0 => {
                at_start = true;
                continue;
            }
            _ => {}
        }
        at_start = false;
    }
    true
}

/// `COMMIT`/`ROLLBACK` ending with `RELEASE` (`Some(true)`: the server
/// closes the connection after its OK) or `NO RELEASE` (`Some(false)`,
/// whatever `completion_type` says); `None` when neither is written.
pub fn releases(sql: &[u8]) -> Option<bool> {
    let mut lx = Lexer::new(sql);
    let mut no = false;
    while let Some(t) = lx.next() {
        match t {
            Tok::Word(w) if eq_ci(w, b"NO") => no = true,
            Tok::Word(w) if eq_ci(w, b"RELEASE") => return Some(!no),
            Tok::Word(w) if eq_ci(w, b"TO") || eq_ci(w, b"SAVEPOINT") => return None,
            Tok::Punct(b';') => return None,
            _ => no = false,
        }
    }
    None
}

/// Some statement of a multi-statement text is `SET TRANSACTION ...`
/// (characteristics for the next transaction only).
pub fn sets_transaction(sql: &[u8]) -> bool {
    let mut lx = Lexer::new(sql);
    let mut at_start = true;
    let mut after_set = false;
    let mut depth = 0i32;
    while let Some(t) = lx.next() {
        match t {
            Tok::Word(w) if after_set && eq_ci(w, b"TRANSACTION") => return true,
            Tok::Word(w) if at_start && eq_ci(w, b"SET") => {
                at_start = false;
                after_set = true;
                continue;
            }
            Tok::Punct(b'(') => depth += 1,
            Tok::Punct(b')') => depth -= 1,
            Tok::Punct(b';') if depth == 0 => {
                at_start = true;
                after_set = false;
                continue;
            }
            _ => {}
        }
        at_start = false;
        after_set = false;
    }
    false
}

/// The statement after `WITH` common table expressions: what the main
/// verb at parenthesis depth 0 is (MySQL 8 allows WITH before UPDATE and
/// DELETE).
fn with_kind(lx: &mut Lexer<'_>) -> Kind {
    let save = lx.i;
    let mut depth = 0i32;
    let mut kind = Kind::Write;
    while let Some(t) = lx.next() {
        match t {
            Tok::Punct(b'(') => depth += 1,
            Tok::Punct(b')') => depth -= 1,
            Tok::Punct(b';') if depth == 0 => break,
            Tok::Word(w) if depth == 0 => {
                if eq_ci(w, b"SELECT") || eq_ci(w, b"TABLE") || eq_ci(w, b"VALUES") {
                    kind = Kind::Read;
                    break;
                }
                if WRITE_WORDS.iter().any(|x| eq_ci(w, x)) {
                    break;
                }
            }
            _ => {}
        }
    }
    lx.i = save;
    kind
}

fn first_word(w: &[u8], lx: &mut Lexer<'_>, flags: &mut u32, pin: &mut Option<Pin>) -> Kind {
    let up = |x: &[u8]| eq_ci(w, x);
    if up(b"SELECT") || up(b"VALUES") || up(b"TABLE") {
        return Kind::Read;
    }
    if up(b"WITH") {
        return with_kind(lx);
    }
    if up(b"KILL") {
        return Kind::Kill;
    }
    if up(b"CALL") {
        *flags |= flag::CALL;
        return Kind::Write;
    }
    if up(b"GET") {
        // GET [CURRENT | STACKED] DIAGNOSTICS: the previous statement's
        // diagnostics, on the connection that ran it.
        let save = lx.i;
        let mut t = lx.next();
        if is_word(t, b"CURRENT") || is_word(t, b"STACKED") {
            t = lx.next();
        }
        lx.i = save;
        if is_word(t, b"DIAGNOSTICS") {
            *flags |= flag::STMT_INFO | flag::DIAG;
            return Kind::Read;
        }
        return Kind::Write;
    }
    if up(b"SHOW") {
        let save = lx.i;
        match lx.next() {
            Some(Tok::Word(w)) if eq_ci(w, b"CONCORD") => return Kind::ConcordStatus,
            // The previous statement's diagnostics and this connection's
            // counters exist only on the connection that ran it.
            Some(Tok::Word(w))
                if eq_ci(w, b"WARNINGS") || eq_ci(w, b"ERRORS") || eq_ci(w, b"COUNT") =>
            {
                *flags |= flag::STMT_INFO | flag::DIAG;
            }
            Some(Tok::Word(w)) if eq_ci(w, b"PROFILE") || eq_ci(w, b"PROFILES") => {
                *flags |= flag::STMT_INFO;
            }
            Some(Tok::Word(w))
                if (eq_ci(w, b"SESSION") || eq_ci(w, b"LOCAL"))
                    && is_word(lx.next(), b"STATUS") =>
            {
                *flags |= flag::CONN_FUNC;
            }
            Some(Tok::Word(w)) if eq_ci(w, b"STATUS") => *flags |= flag::CONN_FUNC,
            // The server's own state: what a client of the primary sees.
            Some(Tok::Word(w)) if SHOW_SERVER.iter().any(|x| eq_ci(w, x)) => {
                *flags |= flag::CONN_FUNC
            }
            Some(Tok::Word(w)) if eq_ci(w, b"FULL") && is_word(lx.next(), b"PROCESSLIST") => {
                *flags |= flag::CONN_FUNC
            }
            _ => {}
        }
        lx.i = save;
        return Kind::Read;
    }
    if up(b"DESC") || up(b"DESCRIBE") || up(b"EXPLAIN") || up(b"HELP") {
        return Kind::Read;
    }
    if up(b"BEGIN") {
        let save = lx.i;
        // BEGIN NOT ATOMIC starts a compound statement, not a transaction.
        if is_word(lx.next(), b"NOT") {
            *flags |= flag::PINS;
            *pin = Some(Pin::Untracked);
            return Kind::Write;
        }
        lx.i = save;
        return Kind::Begin { read_only: false };
    }
    if up(b"START") {
        let save = lx.i;
        if is_word(lx.next(), b"TRANSACTION") {
            let mut read_only = false;
            loop {
                let save2 = lx.i;
                match lx.next() {
                    Some(Tok::Word(x)) if eq_ci(x, b"READ") => {
                        read_only |= is_word(lx.next(), b"ONLY");
                    }
                    Some(Tok::Word(_)) | Some(Tok::Punct(b',')) => {}
                    _ => {
                        lx.i = save2;
                        break;
                    }
                }
            }
            return Kind::Begin { read_only };
        }
        lx.i = save;
        return Kind::Write;
    }
    if up(b"COMMIT") {
        return Kind::Commit;
    }
    if up(b"ROLLBACK") {
        let save = lx.i;
        let mut t = lx.next();
        if is_word(t, b"WORK") {
            t = lx.next();
        }
        if is_word(t, b"TO") {
            return Kind::Write; // ROLLBACK TO SAVEPOINT keeps the transaction
        }
        lx.i = save;
        return Kind::Rollback;
    }
    if up(b"SET") {
        return classify_set(lx, flags, pin);
    }
    if up(b"USE") {
        return Kind::Use;
    }
    if up(b"CREATE") || up(b"DROP") {
        let save = lx.i;
        let mut t = lx.next();
        if is_word(t, b"OR") {
            lx.next();
            t = lx.next();
        }
        if is_word(t, b"TEMPORARY") {
            *flags |= flag::TEMP_TABLE;
            *pin = Some(Pin::TempTable);
        }
        if is_word(t, b"PREPARE") {
            // DROP PREPARE s: DEALLOCATE PREPARE's other name.
            *flags |= flag::PINS;
            *pin = Some(Pin::SqlPrepare);
        }
        lx.i = save;
        return Kind::Write;
    }
    if up(b"FLUSH") {
        // FLUSH TABLES ... WITH READ LOCK / FOR EXPORT: a lock held by the
        // connection until UNLOCK TABLES.
        let save = lx.i;
        let mut prev: Option<Tok<'_>> = None;
        while let Some(t) = lx.next() {
            if (is_word(Some(t), b"LOCK") && is_word(prev, b"READ")) || is_word(Some(t), b"EXPORT")
            {
                *flags |= flag::PINS;
                *pin = Some(Pin::LockTables);
                break;
            }
            prev = Some(t);
        }
        lx.i = save;
        return Kind::Write;
    }
    if up(b"BACKUP") {
        // MariaDB's BACKUP STAGE / BACKUP LOCK: held by the connection.
        *flags |= flag::PINS;
        *pin = Some(Pin::LockTables);
        return Kind::Write;
    }
    if let Some((_, p)) = PIN_WORDS.iter().find(|(w, _)| up(w)) {
        *flags |= flag::PINS;
        *pin = Some(*p);
        return Kind::Write;
    }
    if WRITE_WORDS.iter().any(|p| up(p)) {
        return Kind::Write;
    }
    // Unknown: the primary is always a safe place.
    Kind::Write
}

fn classify_set(lx: &mut Lexer<'_>, flags: &mut u32, pin: &mut Option<Pin>) -> Kind {
    let save = lx.i;
    let t = lx.next();
    match t {
        Some(Tok::Word(w)) if eq_ci(w, b"TRANSACTION") => return Kind::SetTransaction,
        Some(Tok::Word(w))
            if eq_ci(w, b"GLOBAL") || eq_ci(w, b"PERSIST") || eq_ci(w, b"PERSIST_ONLY") =>
        {
            return Kind::Write
        }
        // Account changes: they go to the primary and change nothing in
        // the session.
        Some(Tok::Word(w)) if eq_ci(w, b"PASSWORD") || eq_ci(w, b"DEFAULT") => return Kind::Write,
        Some(Tok::Word(w)) if eq_ci(w, b"ROLE") => {
            *flags |= flag::PINS;
            *pin = Some(Pin::Role);
            return Kind::Write;
        }
        Some(Tok::Word(w)) if eq_ci(w, b"STATEMENT") => {
            // SET STATEMENT var = value [, ...] FOR <statement>: the
            // variables last for the statement only, which decides.
            *flags |= flag::SET_STATEMENT;
            let mut depth = 0i32;
            while let Some(t) = lx.next() {
                match t {
                    Tok::Punct(b'(') => depth += 1,
                    Tok::Punct(b')') => depth -= 1,
                    Tok::Word(w) if depth == 0 && eq_ci(w, b"FOR") => {
                        return match lx.next() {
                            Some(Tok::Word(w)) if !eq_ci(w, b"SET") => {
                                first_word(w, lx, flags, pin)
                            }
                            Some(Tok::Punct(b'(')) => Kind::Read,
                            _ => Kind::Write,
                        };
                    }
                    _ => {}
                }
            }
            return Kind::Write;
        }
        Some(Tok::Word(w)) if eq_ci(w, b"SESSION") || eq_ci(w, b"LOCAL") => {
            let save2 = lx.i;
            if is_word(lx.next(), b"TRANSACTION") {
                // SET SESSION TRANSACTION ... is session state.
                return Kind::SetSession;
            }
            lx.i = save2;
            if let Some(v) = autocommit_value(lx) {
                return Kind::SetAutocommit(v);
            }
        }
        Some(Tok::Var { system: true }) => {
            let raw = String::from_utf8_lossy(trim(&lx.s[save..lx.i])).to_ascii_lowercase();
            let name = raw.trim_start_matches('@');
            if name.starts_with("global.") || name.starts_with("persist") {
                return Kind::Write;
            }
            let name = name
                .strip_prefix("session.")
                .or_else(|| name.strip_prefix("local."))
                .unwrap_or(name);
            if name == "autocommit" {
                if let Some(v) = assigned_bool(lx) {
                    if is_single_assignment(lx) {
                        return Kind::SetAutocommit(v);
                    }
                }
            }
        }
        Some(Tok::Var { system: false }) => *flags |= flag::USER_VAR_WRITE,
        Some(Tok::Word(_)) => {
            lx.i = save;
            if let Some(v) = autocommit_value(lx) {
                return Kind::SetAutocommit(v);
            }
        }
        _ => {}
    }
    lx.i = save;
    Kind::SetSession
}

/// `autocommit = 1` at the lexer position, alone in the statement.
fn autocommit_value(lx: &mut Lexer<'_>) -> Option<bool> {
    let save = lx.i;
    if is_word(lx.next(), b"autocommit") {
        if let Some(v) = assigned_bool(lx) {
            if is_single_assignment(lx) {
                return Some(v);
            }
        }
    }
    lx.i = save;
    None
}

fn assigned_bool(lx: &mut Lexer<'_>) -> Option<bool> {
    match lx.next() {
        Some(Tok::Punct(b'=')) => {}
        Some(Tok::Punct(b':')) => {
            lx.next();
        }
        _ => return None,
    }
    let start = lx.i;
    match lx.next() {
        Some(Tok::Number) => {
            let txt = trim(&lx.s[start..lx.i]);
            Some(txt != b"0")
        }
        Some(Tok::Word(w)) if eq_ci(w, b"ON") || eq_ci(w, b"TRUE") => Some(true),
        Some(Tok::Word(w)) if eq_ci(w, b"OFF") || eq_ci(w, b"FALSE") => Some(false),
        _ => None,
    }
}

fn is_single_assignment(lx: &mut Lexer<'_>) -> bool {
    let save = lx.i;
    let t = lx.next();
    let alone = t.is_none() || (t == Some(Tok::Punct(b';')) && lx.next().is_none());
    lx.i = save;
    alone
}

fn scan_rest(lx: &mut Lexer<'_>, flags: &mut u32, pin: &mut Option<Pin>, in_set: bool) {
    let mut prev: Option<Tok<'_>> = None;
    let mut prev2: Option<Tok<'_>> = None;
    // The statement (or a later statement of a multi-statement text) is
    // a SET.
    let mut in_set = in_set;
    loop {
        let start = lx.i;
        let Some(t) = lx.next() else { break };
        if prev == Some(Tok::Punct(b';')) {
            in_set = is_word(Some(t), b"SET") || assigns_named_vars(Some(t));
        }
        match t {
            Tok::Var { system: true } => {
                let name = sysvar_name(&lx.s[start..lx.i]);
                if CONN_VARS.iter().any(|v| eq_ci(v, name)) {
                    *flags |= flag::CONN_FUNC;
                    if eq_ci(name, b"LAST_INSERT_ID") || eq_ci(name, b"IDENTITY") {
                        *flags |= flag::INSERT_ID;
                    }
                } else if STMT_VARS.iter().any(|v| eq_ci(v, name)) {
                    *flags |= flag::STMT_INFO | flag::DIAG
                } else if SERVER_VARS.iter().any(|v| eq_ci(v, name))
                    || is_global_var(&lx.s[start..lx.i])
                {
                    *flags |= flag::CONN_FUNC;
                }
            }
            Tok::Word(w) => match scan_act(w) {
                None => {}
                Some(Act::Update) if is_word(prev, b"FOR") => *flags |= flag::LOCKING,
                Some(Act::Share) if is_word(prev, b"FOR") || is_word(prev, b"IN") => {
                    *flags |= flag::LOCKING
                }
                Some(Act::From) => *flags |= flag::USES_TABLE,
                // SELECT ... INTO @v / OUTFILE / DUMPFILE (not INSERT INTO
                // t, LOAD DATA ... INTO TABLE t).
                Some(Act::Into) => {
                    let save = (lx.i, lx.hint_primary, lx.hint_max_lag);
                    let next = lx.next();
                    (lx.i, lx.hint_primary, lx.hint_max_lag) = save;
                    if matches!(next, Some(Tok::Var { system: false }))
                        || is_word(next, b"OUTFILE")
                        || is_word(next, b"DUMPFILE")
                    {
                        *flags |= flag::INTO;
                    }
                }
                // CREATE [OR REPLACE] / DROP TEMPORARY, not a column of
                // the name.
                Some(Act::Temporary)
                    if is_word(prev, b"CREATE")
                        || is_word(prev, b"DROP")
                        || is_word(prev, b"REPLACE") =>
                {
                    *flags |= flag::TEMP_TABLE;
                    pin.get_or_insert(Pin::TempTable);
                }
                Some(Act::Temporary) => {}
                Some(Act::For) if is_word(prev, b"VALUE") && is_word(prev2, b"NEXT") => {
                    *flags |= flag::CONN_FUNC | flag::PINS;
                    pin.get_or_insert(Pin::Sequence);
                }
                Some(Act::For) if is_word(prev, b"VALUE") && is_word(prev2, b"PREVIOUS") => {
                    *flags |= flag::CONN_FUNC
                }
                // NEXTVAL(s) / SETVAL(s, n): a call, not a column of the
                // name (`SET nextval = nextval + 1`).
                Some(Act::Sequence)
                    if lx
                        .s
                        .get(lx.i..)
                        .unwrap_or_default()
                        .iter()
                        .find(|c| !c.is_ascii_whitespace())
                        == Some(&b'(') =>
                {
                    *flags |= flag::CONN_FUNC | flag::PINS;
                    pin.get_or_insert(Pin::Sequence);
                }
                Some(Act::Sequence) => {}
                Some(Act::GetLock) => {
                    *flags |= flag::CONN_FUNC | flag::PINS;
                    pin.get_or_insert(Pin::UserLock);
                }
                Some(Act::ConnectionId) => *flags |= flag::CONN_ID,
                Some(Act::IsUsedLock) => *flags |= flag::CONN_FUNC | flag::CONN_ID,
                Some(Act::LastInsertId) => *flags |= flag::CONN_FUNC | flag::INSERT_ID,
                Some(Act::ConnFunc) => *flags |= flag::CONN_FUNC,
                Some(Act::FoundRows) => *flags |= flag::STMT_INFO | flag::FOUND_ROWS,
                Some(Act::RowCount) => *flags |= flag::STMT_INFO | flag::ROW_COUNT,
                Some(Act::CalcFoundRows) => *flags |= flag::CALC_FOUND_ROWS,
                Some(Act::Offset) => *flags |= flag::LIMIT_OFFSET,
                Some(Act::Limit) => {
                    let mut ahead = Lexer::new(lx.s.get(lx.i..).unwrap_or_default());
                    ahead.next();
                    if ahead.next() == Some(Tok::Punct(b',')) {
                        *flags |= flag::LIMIT_OFFSET;
                    }
                }
                Some(Act::Update | Act::Share | Act::For) => {}
            },
            Tok::Punct(b'=') if prev == Some(Tok::Punct(b':')) => *flags |= flag::USER_VAR_WRITE,
            Tok::Var { system: false } if in_set => *flags |= flag::USER_VAR | flag::USER_VAR_WRITE,
            Tok::Var { system: false } => *flags |= flag::USER_VAR,
            Tok::Punct(b';') if lx.clone_next().is_some() => *flags |= flag::MULTI,
            _ => {}
        }
        prev2 = prev;
        prev = Some(t);
    }
}

impl<'a> Lexer<'a> {
    fn clone_next(&mut self) -> Option<Tok<'a>> {
        let save = (self.i, self.hint_primary, self.hint_max_lag);
        let t = self.next();
        (self.i, self.hint_primary, self.hint_max_lag) = save;
        t
    }
}

/// The collation a lone `SET NAMES cs COLLATE x` names (quotes removed).
pub fn set_names_collation(sql: &[u8]) -> Option<String> {
    let mut lx = Lexer::new(sql);
    let mut words = Vec::with_capacity(5);
    loop {
        let start = lx.i;
        let Some(t) = lx.next() else { break };
        match t {
            Tok::Word(w) => words.push(w.to_vec()),
            Tok::Quoted => {
                let q = trim(&lx.s[start..lx.i]);
                words.push(
                    q.get(1..q.len().saturating_sub(1))
                        .unwrap_or_default()
                        .to_vec(),
                );
            }
            // Alone: what a later statement sets is not this one's.
            Tok::Punct(b';') if lx.next().is_none() => break,
            _ => return None,
        }
        if words.len() > 5 {
            return None;
        }
    }
    let is = |i: usize, w: &[u8]| words.get(i).is_some_and(|x| eq_ci(x, w));
    if words.len() == 5
        && is(0, b"SET")
        && is(1, b"NAMES")
        && is(3, b"COLLATE")
        && !is(4, b"DEFAULT")
    {
        return String::from_utf8(words[4].clone()).ok();
    }
    None
}

/// The user variables a statement text assigns, by name (quotes removed):
/// `SET @a = ..., @b := ...`, `... @c := expr ...` anywhere,
/// `... INTO @d, @e`, and every variable a GET DIAGNOSTICS names. Called only for texts the classifier flagged
/// (`USER_VAR_WRITE` or `INTO`), so the hot path never allocates here.
pub fn assigned_user_vars(sql: &[u8]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut lx = Lexer::new(sql);
    let mut depth = 0i32;
    // Statement starts with SET (each statement of a multi-statement).
    let mut in_set = false;
    let mut at_start = true;
    let mut after_into = false;
    // GET DIAGNOSTICS: every variable named.
    let mut assign_all = false;
    let mut pending: Option<String> = None;
    loop {
        let start = lx.i;
        let Some(t) = lx.next() else { break };
        let text = trim(&lx.s[start..lx.i]);
        if let Some(name) = pending.take() {
            // `@x` followed by `:=` or, as a SET target, `=`.
            let assigns = t == Tok::Punct(b':') && lx.s.get(lx.i) == Some(&b'=')
                || (t == Tok::Punct(b'=') && in_set && depth == 0);
            if assigns && !out.contains(&name) {
                out.push(name);
            }
        }
        match t {
            Tok::Word(w) if at_start => {
                in_set = eq_ci(w, b"SET");
                assign_all = assigns_named_vars(Some(t));
                after_into = false;
                at_start = false;
                continue;
            }
            Tok::Punct(b';') if depth == 0 => {
                at_start = true;
                in_set = false;
                assign_all = false;
                after_into = false;
                continue;
            }
            Tok::Punct(b'(') => depth += 1,
            Tok::Punct(b')') => depth -= 1,
            Tok::Punct(b',') if after_into => continue,
            Tok::Word(w) if eq_ci(w, b"INTO") => {
                after_into = true;
                continue;
            }
            Tok::Var { system: false } => {
                let name = user_var_name(text);
                if after_into || assign_all {
                    if !out.contains(&name) {
                        out.push(name);
                    }
                    continue;
                }
                pending = Some(name);
            }
            _ => {}
        }
        at_start = false;
        after_into = false;
    }
    out
}

/// The variables `SET STATEMENT a = 1, b = 2 FOR ...` sets for the
/// statement's duration (lower case).
pub fn set_statement_vars(sql: &[u8]) -> Vec<Vec<u8>> {
    let mut lx = Lexer::new(sql);
    let mut out = Vec::new();
    if !is_word(lx.next(), b"SET") || !is_word(lx.next(), b"STATEMENT") {
        return out;
    }
    let mut depth = 0i32;
    let mut expect_name = true;
    loop {
        let start = lx.i;
        let Some(t) = lx.next() else { break };
        match t {
            Tok::Punct(b'(') => depth += 1,
            Tok::Punct(b')') => depth -= 1,
            Tok::Punct(b',') if depth == 0 => expect_name = true,
            Tok::Word(w) if depth == 0 && eq_ci(w, b"FOR") => break,
            Tok::Word(_) | Tok::Var { system: true } if expect_name => {
                let name = sysvar_name(trim(&lx.s[start..lx.i]));
                let name = if name.is_empty() {
                    trim(&lx.s[start..lx.i])
                } else {
                    name
                };
                out.push(name.to_ascii_lowercase());
                expect_name = false;
            }
            _ => {}
        }
    }
    out
}

/// `@name`, `@'name'`, `` @`name` `` or `@"name"` to the bare name.
fn user_var_name(tok: &[u8]) -> String {
    let name = tok.strip_prefix(b"@").unwrap_or(tok);
    let unquoted = match name.first() {
        Some(&q @ (b'\'' | b'"' | b'`')) if name.len() >= 2 && name.last() == Some(&q) => {
            let inner = &name[1..name.len() - 1];
            let doubled = [q, q];
            let mut v = Vec::with_capacity(inner.len());
            let mut i = 0;
            while i < inner.len() {
                if inner[i..].starts_with(&doubled) {
                    v.push(q);
                    i += 2;
                } else if q != b'`' && inner[i] == b'\\' && i + 1 < inner.len() {
                    // A string-quoted name takes backslash escapes.
                    v.push(match inner[i + 1] {
                        b'n' => b'\n',
                        b't' => b'\t',
                        b'r' => b'\r',
                        b'0' => 0,
                        b'b' => 8,
                        b'Z' => 26,
                        c => c,
                    });
                    i += 2;
                } else {
                    v.push(inner[i]);
                    i += 1;
                }
            }
            v
        }
        _ => name.to_vec(),
    };
    String::from_utf8_lossy(&unquoted).into_owned()
}

/// What `KILL ...` asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KillTarget {
    /// A connection id, or the session itself (`KILL CONNECTION_ID()`).
    Id(u64),
    Myself,
    /// An expression the server evaluates to the id (`KILL @id`), as text:
    /// one balanced expression, its trailing `;` left out.
    Expr(String),
    /// A form concord does not carry out (`KILL USER u`, `KILL QUERY ID
    /// q`, more statements after it), with what to say.
    Unsupported(&'static str),
}

/// `KILL [HARD | SOFT] [CONNECTION | QUERY] target`: (query only?, target).
pub fn kill_target(sql: &[u8]) -> (bool, KillTarget) {
    const NOT_AN_ID: &str =
        "KILL takes one connection id (a number or an expression) through concord";
    // Each token with where its text starts (an expression's is kept).
    fn next_at<'a>(lx: &mut Lexer<'a>) -> (usize, Option<Tok<'a>>) {
        lx.skip_space_and_comments();
        let at = lx.i;
        (at, lx.next())
    }
    let mut lx = Lexer::new(sql);
    if !is_word(lx.next(), b"KILL") {
        return (false, KillTarget::Unsupported("not a KILL statement"));
    }
    let mut query = false;
    let (mut at, mut t) = next_at(&mut lx);
    if is_word(t, b"HARD") || is_word(t, b"SOFT") {
        (at, t) = next_at(&mut lx);
    }
    if is_word(t, b"QUERY") {
        query = true;
        (at, t) = next_at(&mut lx);
        if is_word(t, b"ID") {
            return (
                query,
                KillTarget::Unsupported(
                    "KILL QUERY ID is not supported through concord; use KILL QUERY <connection id>",
                ),
            );
        }
    } else if is_word(t, b"CONNECTION") {
        (at, t) = next_at(&mut lx);
    }
    if is_word(t, b"USER") {
        return (
            query,
            KillTarget::Unsupported(
                "KILL ... USER is not supported through concord; kill sessions by id, or use KILL SESSION on the admin port",
            ),
        );
    }
    let end_of_statement = |lx: &mut Lexer<'_>| match lx.next() {
        None => true,
        Some(Tok::Punct(b';')) => lx.next().is_none(),
        _ => false,
    };
    let target = match t {
        Some(Tok::Number) => {
            // The lexer stopped right after the number: take its text back.
            let end = lx.i;
            let n = std::str::from_utf8(&sql[at..end])
                .ok()
                .and_then(|d| d.parse::<u64>().ok());
            match n {
                Some(n) if end_of_statement(&mut lx) => KillTarget::Id(n),
                _ => kill_expr(sql, at),
            }
        }
        Some(Tok::Word(w)) if eq_ci(w, b"CONNECTION_ID") => {
            let ok = lx.next() == Some(Tok::Punct(b'('))
                && lx.next() == Some(Tok::Punct(b')'))
                && end_of_statement(&mut lx);
            if ok {
                KillTarget::Myself
            } else {
                kill_expr(sql, at)
            }
        }
        None | Some(Tok::Punct(b';')) => KillTarget::Unsupported(NOT_AN_ID),
        Some(_) => kill_expr(sql, at),
    };
    (query, target)
}

/// The KILL target from `at` on, as one expression: parentheses balanced
/// and nothing after a `;` (a second statement is refused, never run).
fn kill_expr(sql: &[u8], at: usize) -> KillTarget {
    const MORE: &str = "KILL takes one connection id; nothing may follow it through concord";
    let mut lx = Lexer::new(sql);
    lx.i = at;
    let (mut depth, mut end) = (0i32, sql.len());
    while let Some(t) = lx.next() {
        match t {
            Tok::Punct(b'(') => depth += 1,
            Tok::Punct(b')') if depth == 0 => return KillTarget::Unsupported(MORE),
            Tok::Punct(b')') => depth -= 1,
            Tok::Punct(b';') if depth == 0 => {
                end = lx.i - 1;
                if lx.next().is_some() {
                    return KillTarget::Unsupported(MORE);
                }
                break;
            }
            _ => {}
        }
    }
    match std::str::from_utf8(&sql[at..end]) {
        Ok(e) if depth == 0 && !e.trim().is_empty() => KillTarget::Expr(e.to_string()),
        _ => KillTarget::Unsupported(MORE),
    }
}

/// Words that end a select list at depth 0.
const SELECT_LIST_END: &[&[u8]] = &[
    b"FROM",
    b"INTO",
    b"WHERE",
    b"GROUP",
    b"HAVING",
    b"ORDER",
    b"LIMIT",
    b"UNION",
    b"FOR",
    b"WINDOW",
    b"PROCEDURE",
    b"LOCK",
    b"EXCEPT",
    b"INTERSECT",
];

/// The statement with the ids the server reports made the session's own:
/// every `CONNECTION_ID()` becomes the session's id, and `IS_USED_LOCK(x)`
/// reports the session's id for a lock this session holds (other
/// holders keep their server thread id). A select item changed this way
/// keeps the column name the server would give it (its text), through an
/// alias when it has none.
pub fn rewrite_ids(sql: &[u8], id: u64) -> Vec<u8> {
    rewrite_calls(sql, id, &Known::default())
}

/// Values of statement information concord knows while the connection
/// that ran the previous statement has gone back to the pool.
#[derive(Clone, Copy, Debug, Default)]
pub struct Known {
    pub row_count: Option<i64>,
    pub found_rows: Option<u64>,
}

/// [`rewrite_ids`], and every `ROW_COUNT()` / `FOUND_ROWS()` with a value
/// in `known` replaced by that value, typed as the function is
/// (`COALESCE(n, ROW_COUNT())`: a BIGINT of the same width, never NULL).
/// The session id in place of `CONNECTION_ID()`, typed as the server
/// types that call: INT UNSIGNED NOT NULL of display width 10 (a bare
/// literal is signed, as wide as its digits, and BIGINT past 2^31), so
/// column metadata, arithmetic (`CONNECTION_ID() - n` below zero is an
/// out-of-range error) and drivers' value types stay the same.
fn connection_id(id: u64) -> String {
    if concord_config::testhooks::on("connection-id-bare-literal") {
        return id.to_string();
    }
    format!("COALESCE(CAST({id} AS UNSIGNED), CAST(4294967295 AS UNSIGNED))")
}

pub fn rewrite_calls(sql: &[u8], id: u64, known: &Known) -> Vec<u8> {
    // Tokens with their byte ranges and parenthesis depth.
    let mut toks: Vec<(Tok<'_>, usize, usize, i32)> = Vec::new();
    let mut lx = Lexer::new(sql);
    let mut depth = 0i32;
    loop {
        lx.skip_space_and_comments();
        let start = lx.i;
        let Some(t) = lx.next() else { break };
        if t == Tok::Punct(b')') {
            depth -= 1;
        }
        toks.push((t, start, lx.i, depth));
        if t == Tok::Punct(b'(') {
            depth += 1;
        }
    }
    let word = |i: usize, w: &[u8]| matches!(toks.get(i), Some((Tok::Word(x), ..)) if eq_ci(x, w));
    let punct = |i: usize, c: u8| matches!(toks.get(i), Some((Tok::Punct(x), ..)) if *x == c);
    // (first token, last token, replacement)
    let mut edits: Vec<(usize, usize, String)> = Vec::new();
    let mut i = 0;
    while i < toks.len() {
        if word(i, b"CONNECTION_ID") && punct(i + 1, b'(') && punct(i + 2, b')') {
            edits.push((i, i + 2, connection_id(id)));
            i += 3;
            continue;
        }
        let value = match () {
            _ if word(i, b"ROW_COUNT") => known.row_count.map(|n| (n.to_string(), "ROW_COUNT")),
            _ if word(i, b"FOUND_ROWS") => known.found_rows.map(|n| (n.to_string(), "FOUND_ROWS")),
            _ => None,
        };
        if let Some((n, f)) = value.filter(|_| punct(i + 1, b'(') && punct(i + 2, b')')) {
            edits.push((i, i + 2, format!("COALESCE({n}, {f}())")));
            i += 3;
            continue;
        }
        // The argument is evaluated twice by the rewrite: only a single
        // plain token (a string, a number, a column, a user variable read)
        // is rewritten; anything else (a `?` placeholder, which would gain
        // a second parameter, or an expression with side effects) is left
        // to return the backend's thread id.
        if word(i, b"IS_USED_LOCK")
            && punct(i + 1, b'(')
            && punct(i + 3, b')')
            && matches!(
                toks.get(i + 2),
                Some((
                    Tok::Quoted | Tok::Word(_) | Tok::Number | Tok::Var { system: false },
                    ..
                ))
            )
        {
            let d = toks[i + 1].3;
            if let Some(j) = (i + 2..toks.len()).find(|&j| punct(j, b')') && toks[j].3 == d) {
                let args = String::from_utf8_lossy(&sql[toks[i + 1].2..toks[j].1]).into_owned();
                edits.push((
                    i,
                    j,
                    format!(
                        "IF(IS_USED_LOCK({args}) = @@pseudo_thread_id, {id}, IS_USED_LOCK({args}))"
                    ),
                ));
                i = j + 1;
                continue;
            }
        }
        i += 1;
    }
    if edits.is_empty() {
        return sql.to_vec();
    }
    // The select items of a leading SELECT, as token ranges.
    let mut items: Vec<(usize, usize)> = Vec::new();
    if word(0, b"SELECT") {
        let mut start = 1;
        let mut k = 1;
        while k < toks.len() {
            let (t, _, _, d) = toks[k];
            let ends = d == 0
                && (t == Tok::Punct(b';')
                    || matches!(t, Tok::Word(w) if SELECT_LIST_END.iter().any(|e| eq_ci(w, e))));
            if ends {
                break;
            }
            if d == 0 && t == Tok::Punct(b',') {
                items.push((start, k - 1));
                start = k + 1;
            }
            k += 1;
        }
        if start < k {
            items.push((start, k - 1));
        }
    }
    let aliased = |a: usize, b: usize| {
        (a..=b).any(|k| toks[k].3 == 0 && word(k, b"AS"))
            || (b > a
                && matches!(toks[b].0, Tok::Word(_) | Tok::Quoted)
                && matches!(
                    toks[b - 1].0,
                    Tok::Punct(b')') | Tok::Number | Tok::Quoted | Tok::Word(_)
                ))
    };
    let mut out = Vec::with_capacity(sql.len() + 64);
    let mut copied = 0;
    let mut e = 0;
    while e < edits.len() {
        let (first, _, _) = edits[e];
        let item = items
            .iter()
            .find(|(a, b)| *a <= first && first <= *b)
            .copied();
        match item {
            Some((a, b)) if !aliased(a, b) => {
                // Rewrite the whole item, then name it by its text.
                out.extend_from_slice(&sql[copied..toks[a].1]);
                let mut pos = toks[a].1;
                while e < edits.len() && edits[e].0 <= b {
                    let (f, l, ref rep) = edits[e];
                    out.extend_from_slice(&sql[pos..toks[f].1]);
                    out.extend_from_slice(rep.as_bytes());
                    pos = toks[l].2;
                    e += 1;
                }
                out.extend_from_slice(&sql[pos..toks[b].2]);
                let name = String::from_utf8_lossy(&sql[toks[a].1..toks[b].2]).replace('`', "``");
                out.extend_from_slice(format!(" AS `{name}`").as_bytes());
                copied = toks[b].2;
            }
            _ => {
                let (f, l, ref rep) = edits[e];
                out.extend_from_slice(&sql[copied..toks[f].1]);
                out.extend_from_slice(rep.as_bytes());
                copied = toks[l].2;
                e += 1;
            }
        }
    }
    out.extend_from_slice(&sql[copied..]);
    out
}

/// How a statement ends (or names) what pinned a session to its
/// connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PinChange {
    /// Everything of this kind is gone (UNLOCK TABLES, XA COMMIT /
    /// ROLLBACK, RELEASE_ALL_LOCKS()).
    Clear(Pin),
    /// A named thing of this kind now exists (PREPARE s FROM ..., HANDLER
    /// t OPEN [AS h]).
    Add(Pin, String),
    /// That named thing is gone (DEALLOCATE / DROP PREPARE s, HANDLER h
    /// CLOSE).
    Remove(Pin, String),
    /// Those named things are gone (DROP TABLE a, b).
    RemoveAll(Pin, Vec<String>),
    /// A thing of this kind exists whose name concord did not read (a
    /// form it does not parse): the pin stays until cleared.
    Unnamed(Pin),
}

/// What a single statement changes about the session's pins, if it
/// changes anything (looked at only while a session is pinned).
pub fn pin_change(sql: &[u8]) -> Option<PinChange> {
    let mut lx = Lexer::new(sql);
    // Lower case, to match keywords, and as written (table names are
    // case-sensitive where the server's files are).
    let mut words: Vec<Vec<u8>> = Vec::with_capacity(6);
    let mut written: Vec<Vec<u8>> = Vec::with_capacity(6);
    loop {
        lx.skip_space_and_comments();
        let start = lx.i;
        let Some(t) = lx.next() else { break };
        match t {
            Tok::Punct(b';') => {
                if lx.next().is_some() {
                    // A multi-statement: decided conservatively.
                    return None;
                }
                break;
            }
            Tok::Word(_) | Tok::Quoted => {
                let w = trim(&lx.s[start..lx.i]);
                let w = w
                    .strip_prefix(b"`")
                    .and_then(|w| w.strip_suffix(b"`"))
                    .unwrap_or(w);
                // `db.t`: one name.
                match (words.last_mut(), written.last_mut()) {
                    (Some(last), Some(as_written)) if last.ends_with(b".") => {
                        last.extend_from_slice(&w.to_ascii_lowercase());
                        as_written.extend_from_slice(w);
                    }
                    _ => {
                        words.push(w.to_ascii_lowercase());
                        written.push(w.to_vec());
                    }
                }
            }
            Tok::Punct(b'.') => match (words.last_mut(), written.last_mut()) {
                (Some(last), Some(as_written)) if !last.is_empty() => {
                    last.push(b'.');
                    as_written.push(b'.');
                }
                _ => {
                    words.push(Vec::new());
                    written.push(Vec::new());
                }
            },
            Tok::Punct(b'(') | Tok::Punct(b')') => {
                words.push(vec![b'(']);
                written.push(vec![b'(']);
            }
            _ => {
                words.push(Vec::new());
                written.push(Vec::new());
            }
        }
        if words.len() > 64 {
            // (A DROP of very many tables: decided conservatively.)
            return None;
        }
    }
    let w = |i: usize| words.get(i).map(Vec::as_slice).unwrap_or(b"");
    let name = |i: usize| String::from_utf8_lossy(w(i)).into_owned();
    let table = |i: usize| {
        String::from_utf8_lossy(written.get(i).map(Vec::as_slice).unwrap_or(b"")).into_owned()
    };
    // Connection-held locks, by what releases them: UNLOCK TABLES the
    // table locks (LOCK TABLES, FLUSH ... WITH READ LOCK / FOR EXPORT, and
    // any a multi-statement took), not a backup stage or lock.
    let lock = |n: &str| Some(PinChange::Add(Pin::LockTables, n.into()));
    let unlock = |n: &str| Some(PinChange::Remove(Pin::LockTables, n.into()));
    match w(0) {
        b"unlock" if matches!(w(1), b"tables" | b"table") && words.len() == 2 => Some(
            PinChange::RemoveAll(Pin::LockTables, vec!["tables".into(), "*".into()]),
        ),
        b"unlock" if w(1) == b"instance" && words.len() == 2 => unlock("instance"),
        b"lock" if matches!(w(1), b"tables" | b"table") => lock("tables"),
        b"lock" if w(1) == b"instance" => lock("instance"),
        b"flush"
            if words.iter().any(|x| x == b"export")
                || words.windows(2).any(|x| x[0] == b"read" && x[1] == b"lock") =>
        {
            lock("tables")
        }
        b"xa" if matches!(w(1), b"commit" | b"rollback") => Some(PinChange::Clear(Pin::Xa)),
        b"backup" if w(1) == b"stage" && w(2) == b"start" => lock("backup stage"),
        b"backup" if w(1) == b"stage" && w(2) == b"end" => unlock("backup stage"),
        b"backup" if w(1) == b"lock" => lock("backup lock"),
        b"backup" if w(1) == b"unlock" => unlock("backup lock"),
        b"prepare" if w(2) == b"from" => Some(PinChange::Add(Pin::SqlPrepare, name(1))),
        b"prepare" => Some(PinChange::Unnamed(Pin::SqlPrepare)),
        b"deallocate" | b"drop" if w(1) == b"prepare" && words.len() == 3 => {
            Some(PinChange::Remove(Pin::SqlPrepare, name(2)))
        }
        b"handler" if w(2) == b"open" => {
            let alias = if w(3) == b"as" {
                name(4)
            } else if words.len() > 3 {
                name(3)
            } else {
                name(1)
            };
            Some(PinChange::Add(Pin::Handler, alias))
        }
        b"handler" if w(2) == b"close" && words.len() == 3 => {
            Some(PinChange::Remove(Pin::Handler, name(1)))
        }
        b"handler" if words.iter().any(|x| x == b"open") => Some(PinChange::Unnamed(Pin::Handler)),
        b"select" if w(1) == b"release_all_locks" && words.len() == 4 => {
            Some(PinChange::Clear(Pin::UserLock))
        }
        b"create" if w(1) == b"temporary" && w(2) == b"table" => {
            let at = if w(3) == b"if" { 6 } else { 3 };
            (!w(at).is_empty()).then(|| PinChange::Add(Pin::TempTable, table(at)))
        }
        b"drop" if w(1) == b"table" || (w(1) == b"temporary" && w(2) == b"table") => {
            // DROP [TEMPORARY] TABLE [IF EXISTS] a, b: a temporary table
            // hides a base table of its name, so DROP TABLE drops it.
            let mut at = if w(1) == b"table" { 2 } else { 3 };
            if w(at) == b"if" && w(at + 1) == b"exists" {
                at += 2;
            }
            let names: Vec<String> = written[at.min(written.len())..]
                .iter()
                .filter(|x| !x.is_empty())
                .map(|x| String::from_utf8_lossy(x).into_owned())
                .collect();
            if names.iter().any(|n| {
                n.eq_ignore_ascii_case("restrict") || n.eq_ignore_ascii_case("cascade") || n == "("
            }) {
                return None;
            }
            Some(PinChange::RemoveAll(Pin::TempTable, names))
        }
        // A temporary table renamed: its new name is not followed.
        b"alter" | b"rename" => Some(PinChange::Unnamed(Pin::TempTable)),
        _ => None,
    }
}

#[cfg(test)]
mod tests;

/// Fuzz entry (property tests and `fuzz/`): every parser that sees client
/// SQL, on arbitrary bytes.
pub fn fuzz_entry(sql: &[u8]) {
    let _ = classify(sql);
    let _ = assigned_user_vars(sql);
    let _ = kill_target(sql);
    let _ = set_statement_vars(sql);
    let _ = rewrite_ids(sql, 7);
    let _ = rewrite_calls(
        sql,
        7,
        &Known {
            row_count: Some(-1),
            found_rows: Some(3),
        },
    );
}

/// The statement's digest text, written into `out` (cleared first; a
/// buffer reused per session, so nothing is allocated once it is warm),
/// with its hash ([`crate::digest::fnv`], the same on every node):
/// comments dropped, whitespace collapsed, words lowercased, quoted names
/// kept, string and number literals as `?`, a parenthesized list of only
/// literals as `(...)` (`IN (...)`, and a run of VALUES rows as one). The
/// classifier's own lexer does the work, over the whole statement.
pub fn fingerprint(sql: &[u8], out: &mut Vec<u8>) -> u64 {
    with_digest(sql, out, |mut lx| {
        while lx.next().is_some() {}
        ((), lx)
    })
    .1
}

/// Runs `pass` over `sql` with the digest writer on (into `out`'s
/// buffer); what `pass` returns, and the digest's hash. `pass` must read
/// the statement to its end.
fn with_digest<'a, T>(
    sql: &'a [u8],
    out: &mut Vec<u8>,
    pass: impl FnOnce(Lexer<'a>) -> (T, Lexer<'a>),
) -> (T, u64) {
    let mut lx = Lexer::new(sql);
    lx.fp = Some(Fp::new(std::mem::take(out)));
    let (v, mut lx) = pass(lx);
    debug_assert!(lx.next().is_none(), "the digest pass stopped early");
    let (text, hash) = lx.fp.take().map(Fp::finish).unwrap_or_default();
    *out = text;
    (v, hash)
}

/// Appends `w` in lower case (a copy, then in place: both vectorize).
fn lowercased(out: &mut Vec<u8>, w: &[u8]) {
    let n = out.len();
    out.extend_from_slice(w);
    out[n..].make_ascii_lowercase();
}

/// The digest text being written, token by token.
struct Fp {
    out: Vec<u8>,
    /// The open parenthesis of the innermost list, and whether it holds
    /// literals only so far.
    list: Option<(usize, bool)>,
    /// Where the last token written ended.
    done: usize,
}

impl Fp {
    fn new(mut out: Vec<u8>) -> Fp {
        out.clear();
        Fp {
            out,
            list: None,
            done: 0,
        }
    }

    fn push(&mut self, text: &[u8], tok: Tok<'_>) {
        let out = &mut self.out;
        let glued = matches!(tok, Tok::Punct(b')' | b',' | b'.' | b'(' | b';'))
            || matches!(out.last(), None | Some(b'(' | b'.'));
        if !glued {
            out.push(b' ');
        }
        let literal = match tok {
            Tok::Number => {
                out.push(b'?');
                true
            }
            Tok::Quoted if text.first() == Some(&b'`') => {
                out.extend_from_slice(text);
                false
            }
            Tok::Quoted => {
                out.push(b'?');
                true
            }
            Tok::Word(w) => {
                lowercased(out, w);
                eq_ci(w, b"null") || eq_ci(w, b"true") || eq_ci(w, b"false")
            }
            Tok::Var { .. } => {
                lowercased(out, text);
                false
            }
            Tok::Punct(b'(') => {
                // A list: after IN or VALUES, a row inside one, or the
                // next row after one (not a function's arguments).
                let listed = [&b" in"[..], b" values", b" value", b"(", b"...),"]
                    .iter()
                    .any(|w| out.ends_with(w));
                out.push(b'(');
                self.list = listed.then_some((out.len() - 1, true));
                return;
            }
            Tok::Punct(b')') => {
                if let Some((at, true)) = self.list {
                    if out.len() > at + 1 {
                        out.truncate(at + 1);
                        out.extend_from_slice(b"...)");
                        // VALUES (...), (...), ...: one row stands for all.
                        if out.ends_with(b"(...),(...)") {
                            out.truncate(out.len() - b",(...)".len());
                        }
                        self.list = None;
                        return;
                    }
                }
                out.push(b')');
                self.list = None;
                return;
            }
            Tok::Punct(c) => {
                out.push(c);
                matches!(c, b',' | b'-' | b'+' | b'?')
            }
        };
        if let Some((_, only)) = &mut self.list {
            *only &= literal;
        }
    }

    fn finish(mut self) -> (Vec<u8>, u64) {
        while matches!(self.out.last(), Some(b';' | b' ')) {
            self.out.pop();
        }
        let hash = crate::digest::fnv(crate::digest::FNV_SEED, &self.out);
        (self.out, hash)
    }
}
