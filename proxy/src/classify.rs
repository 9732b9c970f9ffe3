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
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Class {
    pub kind: Kind,
    pub flags: u32,
    /// `/* concord:primary */`.
    pub hint_primary: bool,
    /// `/* concord:max_lag=200ms */`.
    pub hint_max_lag: Option<Duration>,
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

struct Lexer<'a> {
    s: &'a [u8],
    i: usize,
    hint_primary: bool,
    hint_max_lag: Option<Duration>,
}

impl<'a> Lexer<'a> {
    fn new(s: &'a [u8]) -> Self {
        Lexer {
            s,
            i: 0,
            hint_primary: false,
            hint_max_lag: None,
        }
    }

    fn skip_space_and_comments(&mut self) {
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
                let end = find(s, start, b"*/").unwrap_or(s.len());
                self.hint(&s[start..end]);
                self.i = (end + 2).min(s.len());
            } else if c == b'*' && s.get(self.i + 1) == Some(&b'/') {
                self.i += 2; // end of an executable comment
            } else {
                break;
            }
        }
    }

    fn hint(&mut self, body: &[u8]) {
        let body = trim(body);
        let Some(rest) = strip_prefix_ci(body, b"concord:") else {
            return;
        };
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
            }
        }
    }

    fn next(&mut self) -> Option<Tok<'a>> {
        self.skip_space_and_comments();
        let s = self.s;
        let c = *s.get(self.i)?;
        let start = self.i;
        if c.is_ascii_alphabetic() || c == b'_' || c >= 0x80 || c == b'$' {
            while self.i < s.len()
                && (s[self.i].is_ascii_alphanumeric()
                    || s[self.i] == b'_'
                    || s[self.i] == b'$'
                    || s[self.i] >= 0x80)
            {
                self.i += 1;
            }
            return Some(Tok::Word(&s[start..self.i]));
        }
        if c.is_ascii_digit() {
            while self.i < s.len() && (s[self.i].is_ascii_alphanumeric() || s[self.i] == b'.') {
                self.i += 1;
            }
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
                    self.next();
                } else {
                    while self.i < s.len()
                        && (s[self.i].is_ascii_alphanumeric()
                            || matches!(s[self.i], b'_' | b'.' | b'$'))
                    {
                        self.i += 1;
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

/// Functions whose result depends on the connection they run on.
const CONN_FUNCS: &[&[u8]] = &[
    b"GET_LOCK",
    b"RELEASE_LOCK",
    b"RELEASE_ALL_LOCKS",
    b"IS_USED_LOCK",
    b"IS_FREE_LOCK",
    b"LAST_INSERT_ID",
    b"NEXTVAL",
    b"LASTVAL",
    b"SETVAL",
    b"FOUND_ROWS",
    b"ROW_COUNT",
    b"SQL_CALC_FOUND_ROWS",
    b"MASTER_POS_WAIT",
    b"MASTER_GTID_WAIT",
    b"WAIT_FOR_EXECUTED_GTID_SET",
    b"CONNECTION_ID",
    b"SLEEP",
];

/// System variables whose value belongs to the connection that ran the
/// previous statement (`@@last_insert_id`, `@@warning_count`, ...): read
/// elsewhere they answer for another connection.
const CONN_VARS: &[&[u8]] = &[
    b"LAST_INSERT_ID",
    b"IDENTITY",
    b"INSERT_ID",
    b"WARNING_COUNT",
    b"ERROR_COUNT",
    b"LAST_GTID",
    b"ROWCOUNT",
];

/// `@@name`, `@@session.name` or `@@local.name` names a connection-bound
/// variable. `tok` is the token's text, leading blanks included.
fn is_conn_var(tok: &[u8]) -> bool {
    let Some(at) = tok.iter().position(|&c| c == b'@') else {
        return false;
    };
    let name = &tok[at..];
    let name = &name[name.iter().take_while(|&&c| c == b'@').count()..];
    let name = match name.iter().position(|&c| c == b'.') {
        Some(dot) => &name[dot + 1..],
        None => name,
    };
    CONN_VARS.iter().any(|v| eq_ci(v, name))
}

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

/// Statements that change connection state concord cannot replay.
const PIN_WORDS: &[&[u8]] = &[
    b"LOCK",
    b"UNLOCK",
    b"PREPARE",
    b"EXECUTE",
    b"DEALLOCATE",
    b"XA",
    b"HANDLER",
    b"DECLARE",
];

/// Classifies a COM_QUERY text.
pub fn classify(sql: &[u8]) -> Class {
    let mut lx = Lexer::new(sql);
    let first = lx.next();
    let mut flags = 0;
    let kind = match first {
        Some(Tok::Word(w)) => first_word(w, &mut lx, &mut flags),
        Some(Tok::Punct(b'(')) => Kind::Read, // (SELECT ...) UNION ...
        _ => Kind::Write,
    };
    scan_rest(&mut lx, &mut flags);
    let mut kind = kind;
    if matches!(kind, Kind::SetSession | Kind::SetAutocommit(_) | Kind::Use)
        && flags & flag::MULTI != 0
    {
        // Several statements, one of them a SET: tracking needs the
        // statement alone; run it and pin the session to be safe.
        flags |= flag::PINS;
        kind = Kind::Write;
    }
    Class {
        kind,
        flags,
        hint_primary: lx.hint_primary,
        hint_max_lag: lx.hint_max_lag,
    }
}

fn first_word(w: &[u8], lx: &mut Lexer<'_>, flags: &mut u32) -> Kind {
    let up = |x: &[u8]| eq_ci(w, x);
    if up(b"SELECT") || up(b"WITH") || up(b"VALUES") || up(b"TABLE") {
        return Kind::Read;
    }
    if up(b"SHOW") {
        let save = lx.i;
        match lx.next() {
            Some(Tok::Word(w)) if eq_ci(w, b"CONCORD") => return Kind::ConcordStatus,
            // The previous statement's diagnostics and this connection's
            // counters exist only on the connection that ran it.
            Some(Tok::Word(w))
                if eq_ci(w, b"WARNINGS")
                    || eq_ci(w, b"ERRORS")
                    || eq_ci(w, b"COUNT")
                    || eq_ci(w, b"PROFILE")
                    || eq_ci(w, b"PROFILES") =>
            {
                *flags |= flag::CONN_FUNC;
            }
            Some(Tok::Word(w))
                if (eq_ci(w, b"SESSION") || eq_ci(w, b"LOCAL"))
                    && is_word(lx.next(), b"STATUS") =>
            {
                *flags |= flag::CONN_FUNC;
            }
            Some(Tok::Word(w)) if eq_ci(w, b"STATUS") => *flags |= flag::CONN_FUNC,
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
        return classify_set(lx, flags);
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
        }
        lx.i = save;
        return Kind::Write;
    }
    if PIN_WORDS.iter().any(|p| up(p)) {
        *flags |= flag::PINS;
        return Kind::Write;
    }
    if WRITE_WORDS.iter().any(|p| up(p)) {
        return Kind::Write;
    }
    // Unknown: the primary is always a safe place.
    Kind::Write
}

fn classify_set(lx: &mut Lexer<'_>, flags: &mut u32) -> Kind {
    let save = lx.i;
    let t = lx.next();
    match t {
        Some(Tok::Word(w)) if eq_ci(w, b"TRANSACTION") => return Kind::SetTransaction,
        Some(Tok::Word(w))
            if eq_ci(w, b"GLOBAL") || eq_ci(w, b"PERSIST") || eq_ci(w, b"PERSIST_ONLY") =>
        {
            return Kind::Write
        }
        Some(Tok::Word(w))
            if eq_ci(w, b"PASSWORD")
                || eq_ci(w, b"ROLE")
                || eq_ci(w, b"DEFAULT")
                || eq_ci(w, b"STATEMENT") =>
        {
            *flags |= flag::PINS;
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

fn scan_rest(lx: &mut Lexer<'_>, flags: &mut u32) {
    let mut prev: Option<Tok<'_>> = None;
    let mut prev2: Option<Tok<'_>> = None;
    loop {
        let start = lx.i;
        let Some(t) = lx.next() else { break };
        match t {
            Tok::Var { system: true } if is_conn_var(&lx.s[start..lx.i]) => {
                *flags |= flag::CONN_FUNC
            }
            Tok::Word(w) => {
                // One upper-cased copy and one match per word (the words
                // worth noticing are at most 26 bytes long).
                let mut up = [0u8; 26];
                let Some(u) = up.get_mut(..w.len()) else {
                    prev2 = prev;
                    prev = Some(t);
                    continue;
                };
                u.copy_from_slice(w);
                u.make_ascii_uppercase();
                match &*u {
                    b"UPDATE" if is_word(prev, b"FOR") => *flags |= flag::LOCKING,
                    b"SHARE" if is_word(prev, b"FOR") || is_word(prev, b"IN") => {
                        *flags |= flag::LOCKING
                    }
                    b"INTO" => *flags |= flag::INTO,
                    b"TEMPORARY" => *flags |= flag::TEMP_TABLE,
                    b"FOR" if is_word(prev, b"VALUE") && is_word(prev2, b"NEXT") => {
                        *flags |= flag::CONN_FUNC
                    }
                    u if CONN_FUNCS.contains(&u) => *flags |= flag::CONN_FUNC,
                    _ => {}
                }
            }
            Tok::Punct(b'=') if prev == Some(Tok::Punct(b':')) => *flags |= flag::USER_VAR_WRITE,
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

/// The database named by `USE db` (quotes removed).
pub fn use_target(sql: &[u8]) -> Option<String> {
    let mut lx = Lexer::new(sql);
    if !is_word(lx.next(), b"USE") {
        return None;
    }
    lx.skip_space_and_comments();
    let rest = trim(&sql[lx.i..]);
    let rest = rest.strip_suffix(b";").map(trim).unwrap_or(rest);
    let name = if let Some(q) = rest.strip_prefix(b"`") {
        let inner = q.strip_suffix(b"`")?;
        String::from_utf8_lossy(inner).replace("``", "`")
    } else {
        String::from_utf8_lossy(rest).into_owned()
    };
    (!name.is_empty()).then_some(name)
}

/// The variable a simple `SET [SESSION] name = ...` assigns, lowercased,
/// used to keep only the newest assignment per variable in the replay log.
pub fn set_target(sql: &[u8]) -> Option<String> {
    let mut lx = Lexer::new(sql);
    if !is_word(lx.next(), b"SET") {
        return None;
    }
    let start = {
        lx.skip_space_and_comments();
        lx.i
    };
    let mut t = lx.next();
    let mut name_start = start;
    if is_word(t, b"SESSION") || is_word(t, b"LOCAL") {
        lx.skip_space_and_comments();
        name_start = lx.i;
        t = lx.next();
    }
    let name = match t {
        Some(Tok::Word(w))
            if eq_ci(w, b"NAMES") || eq_ci(w, b"CHARACTER") || eq_ci(w, b"CHARSET") =>
        {
            return Some("names".into())
        }
        Some(Tok::Word(_)) | Some(Tok::Var { .. }) => &sql[name_start..lx.i],
        _ => return None,
    };
    // Only a single assignment can be keyed by its variable.
    let mut depth = 0i32;
    while let Some(t) = lx.next() {
        match t {
            Tok::Punct(b'(') => depth += 1,
            Tok::Punct(b')') => depth -= 1,
            Tok::Punct(b',') if depth == 0 => return None,
            _ => {}
        }
    }
    let mut n = String::from_utf8_lossy(trim(name)).to_ascii_lowercase();
    for p in ["@@session.", "@@local.", "@@"] {
        if let Some(r) = n.strip_prefix(p) {
            n = r.to_string();
        }
    }
    Some(n)
}

#[cfg(test)]
mod tests;

/// Fuzz entry (property tests and `fuzz/`): every parser that sees client
/// SQL, on arbitrary bytes.
pub fn fuzz_entry(sql: &[u8]) {
    let _ = classify(sql);
    let _ = use_target(sql);
    let _ = set_target(sql);
}
