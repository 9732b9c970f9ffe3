//! Seeded generator of application-like sessions: what ORMs and
//! hand-written data layers send (insert then select by id, user variables
//! from functions and subqueries, `SELECT ... INTO`, temporary tables,
//! transactions with savepoints, prepared statements with cursors,
//! warnings, FOUND_ROWS, multi-statements, CHANGE USER, RESET CONNECTION,
//! KILL). The same seed always gives the same session.

/// SplitMix64: tiny, fast, and the same sequence on every platform.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    pub fn pick<'a, T>(&mut self, xs: &'a [T]) -> &'a T {
        &xs[self.below(xs.len() as u64) as usize]
    }

    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

/// One thing a session does.
#[derive(Clone, Debug)]
pub enum Step {
    /// A COM_QUERY; `{CID}` in the text becomes the session's own id.
    Query(String),
    /// A COM_QUERY whose values differ between runs (NOW(), RAND(), ...)
    /// but must stay the same within a run: compared by shape, and each
    /// distinct value within a run is numbered.
    QueryNondet(String),
    /// COM_STMT_PREPARE into slot `n`.
    Prepare(usize, String),
    /// COM_STMT_EXECUTE of slot `n` with these integer parameters;
    /// `cursor`: open a read-only cursor.
    Execute {
        slot: usize,
        params: Vec<i64>,
        cursor: bool,
    },
    /// COM_STMT_FETCH of `rows` rows from slot `n`'s cursor.
    Fetch(usize, u32),
    /// COM_STMT_RESET of slot `n`.
    ResetStmt(usize),
    /// COM_STMT_CLOSE of slot `n` (no reply).
    Close(usize),
    /// COM_RESET_CONNECTION.
    ResetConnection,
    /// COM_CHANGE_USER back to the same user, with a database.
    ChangeUser,
    /// COM_PING.
    Ping,
    /// KILL QUERY, then KILL, of a helper session of the same user; the
    /// helper's next statements show the effect.
    KillHelper,
}

impl Step {
    /// The statement text, for reports.
    pub fn describe(&self) -> String {
        match self {
            Step::Query(q) | Step::QueryNondet(q) => q.clone(),
            Step::Prepare(n, q) => format!("PREPARE[{n}] {q}"),
            other => format!("{other:?}"),
        }
    }
}

/// Words and values the generator draws from.
const WORDS: &[&str] = &["alpha", "beta", "gamma", "delta", "12abc", "", "x'y", "é"];
const MODES: &[&str] = &[
    "",
    "ANSI_QUOTES",
    "STRICT_TRANS_TABLES",
    "NO_ZERO_DATE,STRICT_ALL_TABLES",
    "ANSI",
];
const VARS: &[&str] = &["a", "b", "c", "Id", "n"];

/// What a session did that keeps it on its primary connection (the
/// checker expects a pin exactly then).
#[derive(Default, Debug, Clone, Copy)]
pub struct Expect {
    pub pins: bool,
}

/// A generated session and what it expects.
pub struct Session {
    pub steps: Vec<Step>,
    pub expect: Expect,
}

/// Generator state: what exists, so statements make sense.
struct G {
    r: Rng,
    steps: Vec<Step>,
    expect: Expect,
    in_txn: bool,
    read_only_txn: bool,
    savepoint: bool,
    temp: Option<u32>,
    /// Slot: (prepared?, is it a cursor-able select, params).
    slots: Vec<Option<(bool, usize)>>,
    cursor_open: Option<usize>,
    rows: u64,
}

pub fn session(seed: u64, statements: usize) -> Session {
    let mut g = G {
        r: Rng::new(seed),
        steps: Vec::new(),
        expect: Expect::default(),
        in_txn: false,
        read_only_txn: false,
        savepoint: false,
        temp: None,
        slots: vec![None; 3],
        cursor_open: None,
        rows: 6,
    };
    while g.steps.len() < statements {
        g.one();
    }
    if g.in_txn {
        g.q("COMMIT");
    }
    Session {
        steps: g.steps,
        expect: g.expect,
    }
}

impl G {
    fn q(&mut self, s: &str) {
        self.steps.push(Step::Query(s.to_string()));
    }

    fn word(&mut self) -> String {
        self.r.pick(WORDS).replace('\'', "''")
    }

    fn var(&mut self) -> &'static str {
        VARS[self.r.below(VARS.len() as u64) as usize]
    }

    fn id(&mut self) -> u64 {
        1 + self.r.below(self.rows + 2)
    }

    /// A deterministic expression to assign to a user variable.
    fn expr(&mut self) -> String {
        let n = self.r.below(1000);
        let v = self.var();
        let w = self.word();
        match self.r.below(12) {
            0 => "LAST_INSERT_ID()".into(),
            1 => "(SELECT COUNT(*) FROM t)".into(),
            2 => "(SELECT MAX(v) FROM t)".into(),
            3 => format!("'{w}'"),
            4 => format!("{n}"),
            5 => format!("{n}.{}", self.r.below(100)),
            6 => "NULL".into(),
            7 => format!("CONCAT('{w}', @{v})"),
            8 => format!("@{v} + 1"),
            9 => format!("_latin1 '{w}' COLLATE latin1_bin"),
            10 => format!("{n}e0 / 7"),
            _ => format!("(SELECT s FROM t WHERE id = {})", self.id()),
        }
    }

    fn one(&mut self) {
        let roll = self.r.below(100);
        match roll {
            0..=11 => self.insert(),
            12..=21 => self.read(),
            22..=27 => self.write(),
            28..=39 => self.user_var(),
            40..=45 => self.diagnostics(),
            46..=51 => self.sysvar(),
            52..=59 => self.txn(),
            60..=67 => self.prepared(),
            68..=70 => self.temp_table(),
            71..=73 => self.multi(),
            74..=76 => self.errors(),
            77..=79 => self.ids_and_kill(),
            80..=81 if !self.in_txn => self.reset_or_change_user(),
            82..=84 => self.locks_and_programs(),
            _ => self.read(),
        }
    }

    fn insert(&mut self) {
        if self.read_only_txn {
            return self.read();
        }
        let n = self.r.below(1000);
        let w = self.word();
        self.q(&format!("INSERT INTO t (v, s) VALUES ({n}, '{w}')"));
        self.rows += 1;
        match self.r.below(3) {
            0 => self.q("SELECT id, v, s FROM t WHERE id = LAST_INSERT_ID()"),
            1 => self.q("SELECT LAST_INSERT_ID(), ROW_COUNT()"),
            _ => {
                self.q("SET @Id = LAST_INSERT_ID()");
                self.q("SELECT v, s FROM t WHERE id = @Id");
            }
        }
    }

    fn read(&mut self) {
        let id = self.id();
        let n = self.r.below(1000);
        let m = 1 + self.r.below(5);
        let s = match self.r.below(7) {
            0 => format!("SELECT * FROM t WHERE id = {id}"),
            1 => format!("SELECT id, v FROM t WHERE v > {n} ORDER BY id LIMIT {m}"),
            2 => "SELECT COUNT(*), SUM(v), MAX(id) FROM t".into(),
            3 => "SELECT s, COUNT(*) FROM t GROUP BY s ORDER BY s".into(),
            4 => format!("SELECT * FROM t WHERE id IN ({id}, {}) ORDER BY id", id + 1),
            5 => "WITH c AS (SELECT v FROM t) SELECT COUNT(*) FROM c".into(),
            _ => format!("SET STATEMENT max_statement_time=10 FOR SELECT v FROM t WHERE id = {id}"),
        };
        self.q(&s);
    }

    fn write(&mut self) {
        if self.read_only_txn {
            return self.read();
        }
        let m = 2 + self.r.below(4);
        let id = self.id();
        match self.r.below(3) {
            0 => {
                self.q(&format!("UPDATE t SET v = v + 1 WHERE id % {m} = 0"));
                self.q("SELECT ROW_COUNT()");
            }
            1 => {
                self.q(&format!("DELETE FROM t WHERE id = {id}"));
                self.q("SELECT ROW_COUNT()");
            }
            _ => self.q(&format!(
                "INSERT INTO t (id, v, s) VALUES ({}, 1, 'u') ON DUPLICATE KEY UPDATE v = v + 10",
                id
            )),
        }
    }

    fn user_var(&mut self) {
        let v = self.var();
        let v2 = self.var();
        match self.r.below(9) {
            0 | 1 => {
                let e = self.expr();
                self.q(&format!("SET @{v} = {e}"));
            }
            2 => {
                let e = self.expr();
                self.q(&format!("SELECT {e} INTO @{v}"));
            }
            3 => self.q(&format!(
                "SELECT v, s INTO @{v}, @{v2} FROM t ORDER BY id LIMIT 1"
            )),
            4 => self.q(&format!("SELECT @{v} := v FROM t ORDER BY id DESC LIMIT 1")),
            5 => {
                // Values a re-evaluation would change.
                let f = self.r.pick(&["RAND()", "NOW(6)", "UUID()", "SYSDATE(6)"]);
                self.q(&format!("SET @nd = {f}"));
                for _ in 0..2 {
                    self.steps.push(Step::QueryNondet("SELECT @nd".into()));
                    if self.r.chance(50) {
                        self.read();
                    }
                }
            }
            6 => self.q(&format!("SELECT * FROM t WHERE id = @{v}")),
            7 => self.q(&format!("SELECT @{v}, @{v2} + 1, COLLATION(@{v})")),
            _ => self.q(&format!("SELECT @{v} IS NULL, CHARSET(@{v}), @{v2}")),
        }
    }

    fn diagnostics(&mut self) {
        let w = self.word();
        if self.r.chance(25) {
            // What pagination code does.
            let n = 1 + self.r.below(4);
            self.q(&format!(
                "SELECT SQL_CALC_FOUND_ROWS id FROM t ORDER BY id LIMIT {n}"
            ));
            self.q("SELECT FOUND_ROWS()");
            return;
        }
        match self.r.below(4) {
            0 => self.q(&format!("SELECT CAST('{w}' AS SIGNED) FROM t LIMIT 1")),
            1 => self.q("SELECT 1/0"),
            2 => self.q(&format!("SELECT CAST('{w}' AS DATE)")),
            _ => self.q("DO 1/0"),
        }
        let after = match self.r.below(5) {
            0 => "SHOW WARNINGS",
            1 => "SELECT @@warning_count, @@error_count",
            2 => "SHOW COUNT(*) WARNINGS",
            3 => "SHOW ERRORS",
            _ => "SELECT ROW_COUNT()",
        };
        self.q(after);
    }

    fn sysvar(&mut self) {
        let mode = self.r.pick(MODES).to_string();
        let h = self.r.below(10);
        match self.r.below(8) {
            0 => self.q(&format!("SET SESSION sql_mode = '{mode}'")),
            1 => self.q(&format!("SET time_zone = '+0{h}:00'")),
            2 => self.q("SELECT @@sql_mode, @@time_zone, CONVERT_TZ('2020-01-01 00:00:00', '+00:00', @@time_zone)"),
            3 => {
                let cs = self.r.pick(&["latin1", "utf8mb4", "utf8mb3"]);
                self.q(&format!("SET NAMES {cs}"));
                self.q("SELECT @@character_set_client, @@collation_connection, CHARSET('x')");
            }
            4 if !self.in_txn => {
                let on = self.r.below(2);
                self.q(&format!("SET autocommit = {on}"));
                self.q("SELECT @@autocommit");
                if on == 0 {
                    self.in_txn = true;
                    self.read_only_txn = false;
                }
            }
            5 => {
                let lvl = self.r.pick(&["READ COMMITTED", "REPEATABLE READ", "SERIALIZABLE"]);
                self.q(&format!("SET SESSION TRANSACTION ISOLATION LEVEL {lvl}"));
                self.q("SELECT @@tx_isolation");
            }
            6 => self.q(&format!("SET @@session.max_statement_time = {h}")),
            _ => self.q("SELECT @@max_statement_time, @@autocommit, DATABASE()"),
        }
    }

    fn txn(&mut self) {
        if !self.in_txn {
            let ro = self.r.chance(25);
            let begin = if ro {
                "START TRANSACTION READ ONLY"
            } else if self.r.chance(50) {
                "BEGIN"
            } else {
                "START TRANSACTION"
            };
            self.q(begin);
            self.in_txn = true;
            self.read_only_txn = ro;
            self.savepoint = false;
            return;
        }
        match self.r.below(5) {
            0 if !self.read_only_txn => {
                self.q("SAVEPOINT sp");
                self.savepoint = true;
            }
            1 if self.savepoint => self.q("ROLLBACK TO SAVEPOINT sp"),
            2 => self.q("SELECT * FROM t WHERE id = 1 FOR UPDATE"),
            _ => {
                let end = if self.r.chance(60) {
                    "COMMIT"
                } else {
                    "ROLLBACK"
                };
                self.q(end);
                // autocommit = 0 stays in a transaction after it.
                self.in_txn = false;
                self.read_only_txn = false;
                self.q("SELECT @@autocommit");
            }
        }
    }

    fn prepared(&mut self) {
        let slot = self.r.below(3) as usize;
        match self.slots[slot] {
            None => {
                let (sql, cursor, params) = match self.r.below(6) {
                    0 => ("SELECT id, v, s FROM t WHERE id = ?", false, 1),
                    1 if !self.read_only_txn => ("INSERT INTO t (v, s) VALUES (?, 'p')", false, 1),
                    2 => ("SELECT id, v FROM t WHERE id > ? ORDER BY id", true, 1),
                    3 => ("SET @p = ?", false, 1),
                    4 => ("SELECT IS_USED_LOCK(?) IS NULL", false, 1),
                    _ => ("SELECT ? + 1, @p", false, 1),
                };
                self.steps.push(Step::Prepare(slot, sql.into()));
                self.slots[slot] = Some((cursor, params));
            }
            Some((cursor, params)) => match self.r.below(6) {
                0 => {
                    self.steps.push(Step::Close(slot));
                    self.slots[slot] = None;
                    if self.cursor_open == Some(slot) {
                        self.cursor_open = None;
                    }
                }
                1 => self.steps.push(Step::ResetStmt(slot)),
                2 if self.cursor_open == Some(slot) => {
                    let n = 1 + self.r.below(3) as u32;
                    self.steps.push(Step::Fetch(slot, n));
                }
                _ => {
                    let p: Vec<i64> = (0..params).map(|_| self.r.below(12) as i64).collect();
                    let use_cursor = cursor && self.r.chance(60);
                    self.steps.push(Step::Execute {
                        slot,
                        params: p,
                        cursor: use_cursor,
                    });
                    if use_cursor {
                        self.cursor_open = Some(slot);
                        self.steps.push(Step::Fetch(slot, 2));
                    }
                }
            },
        }
    }

    fn temp_table(&mut self) {
        if self.read_only_txn {
            return self.read();
        }
        self.expect.pins = true;
        match self.temp {
            None => {
                let n = self.r.below(3) as u32;
                self.q(&format!(
                    "CREATE TEMPORARY TABLE tmp{n} (a INT PRIMARY KEY, b VARCHAR(10))"
                ));
                self.q(&format!("INSERT INTO tmp{n} VALUES (1, 'x'), (2, 'y')"));
                self.temp = Some(n);
            }
            Some(n) => match self.r.below(3) {
                0 => {
                    self.q(&format!("DROP TEMPORARY TABLE tmp{n}"));
                    self.temp = None;
                }
                1 => self.q(&format!("SELECT * FROM tmp{n} ORDER BY a")),
                _ => self.q(&format!(
                    "INSERT INTO t (v, s) SELECT a, b FROM tmp{n} ORDER BY a"
                )),
            },
        }
    }

    fn multi(&mut self) {
        if self.read_only_txn {
            return self.read();
        }
        let v = self.var();
        let n = self.r.below(100);
        self.q(&format!(
            "INSERT INTO t (v, s) VALUES ({n}, 'm'); SELECT LAST_INSERT_ID(); SET @{v} = {n}; SELECT @{v}"
        ));
        self.rows += 1;
    }

    fn errors(&mut self) {
        match self.r.below(4) {
            0 => self.q("SELECT nosuchcolumn FROM t"),
            1 if !self.read_only_txn => self.q("INSERT INTO t (id, v) VALUES (1, 1)"),
            2 => self.q("SELEC 1"),
            _ => self.q("SELECT * FROM nosuchtable"),
        }
        if self.r.chance(50) {
            self.q("SHOW ERRORS");
        }
    }

    fn ids_and_kill(&mut self) {
        match self.r.below(5) {
            0 => self.q("SELECT CONNECTION_ID() = {CID} AS own_id, CONNECTION_ID() > 0"),
            1 | 2 => {
                let kill = if self.r.chance(50) {
                    "KILL QUERY CONNECTION_ID()"
                } else {
                    "KILL QUERY 4294967295"
                };
                self.q(kill);
                // concord answers these itself: the error is not in the
                // server's diagnostics area (known.rs); a statement that
                // uses a table clears it on both sides.
                self.q("SELECT COUNT(*) FROM t");
            }
            3 if !self.in_txn => self.steps.push(Step::KillHelper),
            _ => self.steps.push(Step::Ping),
        }
    }

    fn reset_or_change_user(&mut self) {
        if self.r.chance(50) {
            self.steps.push(Step::ResetConnection);
        } else {
            self.steps.push(Step::ChangeUser);
        }
        // Both end temporary tables, prepared statements, cursors,
        // variables and any transaction.
        self.temp = None;
        self.slots = vec![None; 3];
        self.cursor_open = None;
        self.in_txn = false;
        self.read_only_txn = false;
        self.q("SELECT @a, @@sql_mode, DATABASE()");
    }

    fn locks_and_programs(&mut self) {
        self.expect.pins = true;
        match self.r.below(6) {
            0 => {
                self.q("SELECT GET_LOCK('diff_lock', 0)");
                self.q("SELECT IS_USED_LOCK('diff_lock') = CONNECTION_ID()");
                self.q("SELECT RELEASE_LOCK('diff_lock')");
            }
            1 if !self.read_only_txn => {
                self.q("CALL p_sets(@out)");
                self.q("SELECT @out, @pv");
            }
            2 if !self.read_only_txn => {
                // The statement's own setting reverts; what the procedure
                // set stays.
                self.q("SET STATEMENT max_statement_time=10 FOR CALL p_sets(@out)");
                self.q("SELECT @out, @pv, @@max_statement_time");
            }
            3 => {
                // A frozen clock, then the real one again.
                self.q("SET timestamp = 1000000000");
                self.q("SELECT NOW(), UNIX_TIMESTAMP(), @@timestamp");
                self.q("SET timestamp = DEFAULT");
                self.q("SELECT NOW() > '2020-01-01', @@timestamp > 1600000000");
                self.read();
                self.q("SELECT YEAR(NOW()) > 2020");
            }
            _ if !self.read_only_txn => {
                self.q("CALL p_mode()");
                self.q("SELECT @@time_zone, @@sql_mode");
            }
            _ => self.read(),
        }
    }
}
