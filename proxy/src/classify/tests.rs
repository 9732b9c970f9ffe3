use super::*;
use proptest::prelude::*;

fn k(sql: &str) -> Kind {
    classify(sql.as_bytes()).kind
}

fn replica(sql: &str) -> bool {
    classify(sql.as_bytes()).replica_ok()
}

#[test]
fn reads_and_writes() {
    assert!(replica("SELECT c FROM sbtest1 WHERE id=5"));
    assert!(replica("  /* app */ select 1"));
    assert!(replica("WITH x AS (SELECT 1) SELECT * FROM x"));
    assert!(replica("(SELECT 1) UNION (SELECT 2)"));
    assert!(replica("SHOW TABLES"));
    assert!(replica("SELECT 'FOR UPDATE' FROM t"));
    assert!(replica("SELECT `into` FROM t"));
    assert_eq!(k("INSERT INTO t VALUES (1)"), Kind::Write);
    assert_eq!(k("update t set a=1"), Kind::Write);
    assert_eq!(k("CALL p()"), Kind::Write);
    assert_eq!(k("garbage words"), Kind::Write);
    assert_eq!(k(""), Kind::Write);
}

#[test]
fn locking_and_connection_bound_reads_go_to_primary() {
    assert!(!replica("SELECT * FROM t WHERE id=1 FOR UPDATE"));
    assert!(!replica("SELECT * FROM t FOR SHARE"));
    assert!(!replica("SELECT * FROM t LOCK IN SHARE MODE"));
    assert!(!replica("SELECT GET_LOCK('a', 1)"));
    assert!(!replica("SELECT last_insert_id()"));
    assert!(!replica("SELECT NEXTVAL(s)"));
    assert!(!replica("SELECT NEXT VALUE FOR s"));
    assert!(!replica("SELECT PREVIOUS VALUE FOR s"));
    assert!(!replica("SELECT LASTVAL(s)"));
    // NEXTVAL leaves LASTVAL on the connection: the session keeps it.
    for sql in [
        "SELECT NEXTVAL(s)",
        "SELECT SETVAL(s, 5)",
        "INSERT INTO t VALUES (NEXT VALUE FOR s)",
    ] {
        assert_eq!(classify(sql.as_bytes()).pin, Some(Pin::Sequence), "{sql}");
    }
    assert_eq!(classify(b"SELECT LASTVAL(s)").pin, None);
    assert_eq!(
        classify(b"UPDATE counters SET nextval = nextval + 1").pin,
        None
    );
    assert!(!replica("SELECT a INTO @x FROM t"));
    assert!(!replica("SELECT a FROM t INTO OUTFILE '/tmp/x'"));
    assert!(!classify(b"INSERT INTO t VALUES (1)").has(flag::INTO));
    assert!(!classify(b"INSERT IGNORE INTO t VALUES (1)").has(flag::INTO));
    assert!(!replica("SELECT @x := 1"));
    // FOUND_ROWS() follows it to whichever connection ran it.
    assert!(replica("SELECT SQL_CALC_FOUND_ROWS * FROM t"));
    assert!(classify(b"SELECT FOUND_ROWS()").has(flag::STMT_INFO));
    assert!(classify(b"SELECT ROW_COUNT()").has(flag::STMT_INFO));
    assert!(classify(b"SHOW WARNINGS").has(flag::STMT_INFO));
    assert!(classify(b"SELECT @@warning_count").has(flag::STMT_INFO));
    assert!(classify(b"SELECT LAST_INSERT_ID()").has(flag::CONN_FUNC));
    assert!(replica("SELECT CONNECTION_ID()"), "rewritten to a literal");
    assert!(replica("SELECT SLEEP(1)"));
    assert!(!replica("SELECT 1; DELETE FROM t"));
    assert!(!replica("/* concord:primary */ SELECT 1"));
    assert!(replica("SELECT 1;"));
    assert!(replica("SELECT @x"));
    for bound in [
        "SHOW WARNINGS",
        "show errors limit 1",
        "SHOW COUNT(*) WARNINGS",
        "SHOW STATUS LIKE 'Handler%'",
        "SHOW SESSION STATUS",
        "SELECT @@last_insert_id",
        "SELECT @@IDENTITY",
        "SELECT @@session.warning_count, 1",
        "SELECT 1, @@error_count",
        "SELECT @@last_gtid",
    ] {
        assert!(!replica(bound), "{bound}");
    }
    // The server's own state is the primary's, as on a direct connection.
    for server in [
        "SHOW GLOBAL STATUS",
        "SHOW MASTER STATUS",
        "SHOW SLAVE STATUS",
        "SHOW FULL PROCESSLIST",
        "SELECT @@global.read_only",
        "SELECT @@read_only",
        "SELECT @@gtid_binlog_pos",
    ] {
        assert!(!replica(server), "{server}");
    }
    assert!(replica("SHOW TABLES"));
    assert!(replica("SHOW FULL TABLES"));
    assert!(replica("SELECT @@version, @@server_id"));
}

#[test]
fn transactions() {
    assert_eq!(k("BEGIN"), Kind::Begin { read_only: false });
    assert_eq!(k("START TRANSACTION"), Kind::Begin { read_only: false });
    assert_eq!(
        k("start transaction read only"),
        Kind::Begin { read_only: true }
    );
    assert_eq!(
        k("START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY"),
        Kind::Begin { read_only: true }
    );
    assert_eq!(k("COMMIT"), Kind::Commit);
    assert_eq!(k("ROLLBACK"), Kind::Rollback);
    assert_eq!(k("ROLLBACK WORK"), Kind::Rollback);
    assert_eq!(k("ROLLBACK TO SAVEPOINT a"), Kind::Write);
    assert_eq!(k("BEGIN NOT ATOMIC SELECT 1; END"), Kind::Write);
}

#[test]
fn session_state() {
    assert_eq!(k("SET NAMES utf8mb4"), Kind::SetSession);
    assert_eq!(k("SET autocommit=0"), Kind::SetAutocommit(false));
    assert_eq!(
        k("set @@session.autocommit = ON"),
        Kind::SetAutocommit(true)
    );
    assert_eq!(k("SET SESSION autocommit = 1"), Kind::SetAutocommit(true));
    assert_eq!(k("SET autocommit=0, sql_mode=''"), Kind::SetSession);
    assert_eq!(k("SET GLOBAL max_connections=10"), Kind::Write);
    assert_eq!(k("SET @@global.x=1"), Kind::Write);
    assert_eq!(
        k("SET TRANSACTION ISOLATION LEVEL READ COMMITTED"),
        Kind::SetTransaction
    );
    assert_eq!(
        k("SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED"),
        Kind::SetSession
    );
    assert_eq!(k("SET time_zone = '+00:00'"), Kind::SetSession);
    assert_eq!(k("USE test"), Kind::Use);
    assert_eq!(k("SHOW CONCORD STATUS"), Kind::ConcordStatus);
    assert!(classify(b"SET @a = 1").has(flag::USER_VAR_WRITE));
    assert!(classify(b"INSERT INTO t VALUES (1); SET @a = 1").has(flag::USER_VAR_WRITE));
    assert!(classify(b"LOCK TABLES t WRITE").has(flag::PINS));
    assert!(classify(b"CREATE TEMPORARY TABLE t (a int)").has(flag::TEMP_TABLE));
    assert!(!classify(b"SET NAMES utf8; DROP TABLE t").has(flag::ONLY_SETS));
    assert!(classify(b"SET NAMES utf8; SET @a = 1; USE x").has(flag::ONLY_SETS));
    assert!(classify(b"SET sql_mode = (SELECT 'a;b')").has(flag::ONLY_SETS));
    assert!(!classify(b"CALL p()").has(flag::ONLY_SETS));
}

#[test]
fn review_findings() {
    // A leading WITH decides by the statement after the CTEs.
    assert_eq!(k("WITH x AS (SELECT 1) UPDATE t SET a = 1"), Kind::Write);
    assert_eq!(
        k("WITH RECURSIVE x (n) AS (SELECT 1 UNION SELECT n+1 FROM x WHERE n < 3) DELETE FROM t WHERE id IN (SELECT n FROM x)"),
        Kind::Write
    );
    assert_eq!(
        k("with x as (select 1) insert into t select * from x"),
        Kind::Write
    );
    assert!(replica(
        "WITH x AS (SELECT 1), y AS (SELECT 2) SELECT * FROM x, y"
    ));
    assert!(!replica("WITH x AS (SELECT 1 FOR UPDATE) SELECT * FROM x"));
    // SET STATEMENT ... FOR: the inner statement decides, nothing pins.
    let c = classify(b"SET STATEMENT max_statement_time=1 FOR SELECT * FROM t");
    assert_eq!(c.kind, Kind::Read);
    assert!(c.has(flag::SET_STATEMENT) && !c.has(flag::PINS) && c.replica_ok());
    assert_eq!(
        k("SET STATEMENT sql_mode='', foreign_key_checks=0 FOR INSERT INTO t VALUES (1)"),
        Kind::Write
    );
    // Account statements change no session state.
    for sql in [
        "SET PASSWORD = PASSWORD('x')",
        "SET PASSWORD FOR u = 'x'",
        "SET DEFAULT ROLE r FOR u",
    ] {
        let c = classify(sql.as_bytes());
        assert_eq!(c.kind, Kind::Write, "{sql}");
        assert!(!c.has(flag::PINS), "{sql}");
    }
    assert_eq!(
        set_statement_vars(b"SET STATEMENT max_statement_time=1, @@sql_mode='' FOR SELECT 1"),
        vec![b"max_statement_time".to_vec(), b"sql_mode".to_vec()]
    );
    assert_eq!(classify(b"SET ROLE r").pin, Some(Pin::Role));
    assert_eq!(
        classify(b"SELECT GET_LOCK('a', 1)").pin,
        Some(Pin::UserLock)
    );
    assert_eq!(classify(b"LOCK TABLES t READ").pin, Some(Pin::LockTables));
    assert_eq!(k("KILL QUERY 5"), Kind::Kill);
}

#[test]
fn assigned_user_variables() {
    let v = |s: &str| assigned_user_vars(s.as_bytes());
    assert_eq!(v("SET @a = 1, @B := 2, sql_mode = ''"), ["a", "B"]);
    assert_eq!(v("SELECT 42 INTO @v"), ["v"]);
    assert_eq!(v("SELECT a, b INTO @x, @`y z` FROM t"), ["x", "y z"]);
    assert_eq!(v("SELECT @x := MAX(id) FROM t WHERE a = @y"), ["x"]);
    assert_eq!(v("SET @n = (SELECT COUNT(*) FROM t WHERE c = @m)"), ["n"]);
    assert_eq!(v("INSERT INTO t VALUES (@a)"), Vec::<String>::new());
    assert_eq!(v("SELECT @a = 1"), Vec::<String>::new(), "a comparison");
    assert_eq!(v("SET @a = 1; SELECT @a; SET @'b' = 2"), ["a", "b"]);
    assert_eq!(v("DO @y := 3"), ["y"]);
    // Quoted names: doubled quotes, and backslash escapes in string quotes.
    assert_eq!(
        v("SET @'a''b' = 1, @\"c\\\"d\" = 2, @`e\\f` = 3"),
        ["a'b", "c\"d", "e\\f"]
    );
}

#[test]
fn is_used_lock_is_rewritten_only_when_its_argument_is_one_plain_token() {
    let r = |s: &str| String::from_utf8(rewrite_ids(s.as_bytes(), 7)).unwrap();
    assert!(r("SELECT IS_USED_LOCK('x')").contains("@@pseudo_thread_id"));
    assert!(r("SELECT IS_USED_LOCK(@l)").contains("@@pseudo_thread_id"));
    // A placeholder would become two; an expression would run twice.
    assert_eq!(r("SELECT IS_USED_LOCK(?)"), "SELECT IS_USED_LOCK(?)");
    assert_eq!(
        r("SELECT IS_USED_LOCK(CONCAT('a', RAND()))"),
        "SELECT IS_USED_LOCK(CONCAT('a', RAND()))"
    );
}

#[test]
fn kill_statements() {
    assert_eq!(kill_target(b"KILL 42"), (false, KillTarget::Id(42)));
    assert_eq!(kill_target(b"kill query 42;"), (true, KillTarget::Id(42)));
    assert_eq!(
        kill_target(b"KILL CONNECTION 7"),
        (false, KillTarget::Id(7))
    );
    assert_eq!(kill_target(b"KILL HARD QUERY 7"), (true, KillTarget::Id(7)));
    assert_eq!(
        kill_target(b"KILL CONNECTION_ID()"),
        (false, KillTarget::Myself)
    );
    assert!(matches!(
        kill_target(b"KILL QUERY ID 7").1,
        KillTarget::Unsupported(_)
    ));
    assert!(matches!(
        kill_target(b"KILL USER app").1,
        KillTarget::Unsupported(_)
    ));
    // A second statement is refused, never evaluated.
    for q in [
        "KILL 7; DROP TABLE t",
        "KILL @x; DROP TABLE t",
        "KILL 1); DROP TABLE t; SELECT (1",
        "KILL (1",
        "KILL",
        "KILL QUERY ;",
    ] {
        assert!(
            matches!(kill_target(q.as_bytes()).1, KillTarget::Unsupported(_)),
            "{q}"
        );
    }
    // Anything else is an expression the server evaluates.
    for (q, e) in [
        ("KILL 1+1", "1+1"),
        ("KILL 99999999999999999999999", "99999999999999999999999"),
        ("KILL @id;", "@id"),
        ("KILL QUERY @id -- why", "@id -- why"),
        (
            "KILL  (('x' IN ( SELECT 1)) MOD 44)",
            "(('x' IN ( SELECT 1)) MOD 44)",
        ),
        ("KILL CONNECTION_ID() + 1", "CONNECTION_ID() + 1"),
        ("KILL ';' ", "';' "),
    ] {
        assert_eq!(
            kill_target(q.as_bytes()).1,
            KillTarget::Expr(e.into()),
            "{q}"
        );
    }
}

#[test]
fn connection_ids_are_rewritten_with_the_server_s_column_names() {
    let r = |s: &str| String::from_utf8(rewrite_ids(s.as_bytes(), 77)).unwrap();
    let c = "COALESCE(CAST(77 AS UNSIGNED), CAST(4294967295 AS UNSIGNED))";
    assert_eq!(
        r("SELECT CONNECTION_ID()"),
        format!("SELECT {c} AS `CONNECTION_ID()`")
    );
    assert_eq!(
        r("select connection_id() , 1"),
        format!("select {c} AS `connection_id()` , 1")
    );
    assert_eq!(
        r("SELECT CONNECTION_ID() AS id"),
        format!("SELECT {c} AS id")
    );
    assert_eq!(r("SELECT CONNECTION_ID() id"), format!("SELECT {c} id"));
    assert_eq!(
        r("SELECT * FROM t WHERE c = CONNECTION_ID()"),
        format!("SELECT * FROM t WHERE c = {c}")
    );
    assert_eq!(
        r("SELECT 'CONNECTION_ID()', `CONNECTION_ID`"),
        "SELECT 'CONNECTION_ID()', `CONNECTION_ID`"
    );
    assert_eq!(
        r("SELECT CONNECTION_ID()+1 FROM t"),
        format!("SELECT {c}+1 AS `CONNECTION_ID()+1` FROM t")
    );
    assert_eq!(
        r("SELECT IS_USED_LOCK('l') = CONNECTION_ID()"),
        format!("SELECT IF(IS_USED_LOCK('l') = @@pseudo_thread_id, 77, IS_USED_LOCK('l')) = {c} AS `IS_USED_LOCK('l') = CONNECTION_ID()`")
    );
    assert_eq!(
        r("INSERT INTO t VALUES (CONNECTION_ID())"),
        format!("INSERT INTO t VALUES ({c})")
    );
    assert_eq!(r("SELECT 1"), "SELECT 1");
}

#[test]
fn hints() {
    let c = classify(b"/* concord:max_lag=200ms */ SELECT 1");
    assert_eq!(c.hint_max_lag, Some(Duration::from_millis(200)));
    assert!(c.replica_ok());
    assert!(classify(b"SELECT /* concord:primary */ 1").hint_primary);
}

#[test]
fn comments_and_executable_comments() {
    assert!(replica("-- note\nSELECT 1"));
    assert!(replica("# note\nSELECT 1"));
    assert_eq!(k("/*!40101 SET NAMES utf8 */"), Kind::SetSession);
    assert!(!replica("SELECT 1 /*!50000 FOR UPDATE */"));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]
    #[test]
    fn never_panics(s in proptest::collection::vec(any::<u8>(), 0..300)) {
        fuzz_entry(&s);
    }

    #[test]
    fn sql_like_never_panics(s in "[a-zA-Z '\"`@;:=()/*#\\-\\\\0-9\n]{0,120}") {
        fuzz_entry(s.as_bytes());
    }
}

#[test]
fn causal_hints_and_concord_variables() {
    let sql = b"/* concord:after=0-1-5,1-2-9 max_lag=1s */ SELECT 1";
    let c = classify(sql);
    let (a, b) = c.hint_after.expect("after= hint");
    assert_eq!(&sql[a as usize..b as usize], b"0-1-5,1-2-9");
    assert_eq!(c.hint_max_lag, Some(Duration::from_secs(1)));
    assert!(c.replica_ok());
    let sql = b"/*concord:primary,after=u:1-5*/ SELECT 1";
    let c = classify(sql);
    let (a, b) = c.hint_after.expect("after= hint");
    assert_eq!(&sql[a as usize..b as usize], b"u:1-5");
    assert!(c.hint_primary);
    assert!(classify(b"/* app */ SELECT 1").hint_after.is_none());
    for s in [
        "SELECT @@concord_token",
        "SET @@session.concord_after = '0-1-1'",
        "select @@CONCORD_AFTER",
    ] {
        assert!(classify(s.as_bytes()).has(flag::CONCORD_VAR), "{s}");
    }
    for s in [
        "SELECT @@concord",
        "SELECT @concord_token",
        "SELECT 'concord_token'",
    ] {
        assert!(!classify(s.as_bytes()).has(flag::CONCORD_VAR), "{s}");
    }
}

#[test]
fn row_count_and_found_rows_become_the_values_concord_kept() {
    let k = Known {
        row_count: Some(-1),
        found_rows: Some(4),
    };
    let r = |s: &str| String::from_utf8(rewrite_calls(s.as_bytes(), 7, &k)).unwrap();
    assert_eq!(
        r("SELECT ROW_COUNT()"),
        "SELECT COALESCE(-1, ROW_COUNT()) AS `ROW_COUNT()`"
    );
    assert_eq!(
        r("SELECT found_rows() AS n, 1"),
        "SELECT COALESCE(4, FOUND_ROWS()) AS n, 1"
    );
    let none =
        |s: &str| String::from_utf8(rewrite_calls(s.as_bytes(), 7, &Known::default())).unwrap();
    assert_eq!(none("SELECT ROW_COUNT()"), "SELECT ROW_COUNT()");
    let c = classify(b"SELECT SQL_CALC_FOUND_ROWS * FROM t LIMIT 1");
    assert!(c.has(flag::CALC_FOUND_ROWS));
    assert!(classify(b"SELECT LAST_INSERT_ID()").has(flag::INSERT_ID));
    assert!(classify(b"SELECT @@identity").has(flag::INSERT_ID));
    assert!(classify(b"SELECT ROW_COUNT()").has(flag::ROW_COUNT | flag::STMT_INFO));
}

#[test]
fn a_user_variable_later_in_a_set_is_assigned() {
    let sql = b"SET time_zone = '+00:00', @me = 0";
    assert!(classify(sql).has(flag::USER_VAR_WRITE));
    assert_eq!(assigned_user_vars(sql), ["me"]);
}

#[test]
fn statements_that_end_a_pin_are_recognized() {
    use PinChange::*;
    assert_eq!(
        pin_change(b"UNLOCK TABLES"),
        Some(RemoveAll(
            Pin::LockTables,
            vec!["tables".into(), "*".into()]
        ))
    );
    assert_eq!(
        pin_change(b"lock tables t read"),
        Some(Add(Pin::LockTables, "tables".into()))
    );
    assert_eq!(pin_change(b"xa rollback 'x'"), Some(Clear(Pin::Xa)));
    assert_eq!(
        pin_change(b"PREPARE `S1` FROM 'SELECT 1'"),
        Some(Add(Pin::SqlPrepare, "s1".into()))
    );
    assert_eq!(
        pin_change(b"DEALLOCATE PREPARE s1"),
        Some(Remove(Pin::SqlPrepare, "s1".into()))
    );
    assert_eq!(
        pin_change(b"HANDLER t OPEN AS h"),
        Some(Add(Pin::Handler, "h".into()))
    );
    assert_eq!(
        pin_change(b"HANDLER t OPEN"),
        Some(Add(Pin::Handler, "t".into()))
    );
    assert_eq!(
        pin_change(b"HANDLER test.t OPEN"),
        Some(Add(Pin::Handler, "test.t".into()))
    );
    assert_eq!(
        pin_change(b"HANDLER `test`.`t` OPEN AS h"),
        Some(Add(Pin::Handler, "h".into()))
    );
    assert_eq!(
        pin_change(b"HANDLER h CLOSE"),
        Some(Remove(Pin::Handler, "h".into()))
    );
    assert_eq!(
        pin_change(b"SELECT RELEASE_ALL_LOCKS()"),
        Some(Clear(Pin::UserLock))
    );
    assert_eq!(
        pin_change(b"SELECT RELEASE_ALL_LOCKS(), GET_LOCK('a', 0)"),
        None
    );
    assert_eq!(pin_change(b"UNLOCK TABLES; LOCK TABLES t READ"), None);
    assert_eq!(pin_change(b"SELECT 1"), None);
}

#[test]
fn global_locks_pin() {
    for sql in [
        "FLUSH TABLES WITH READ LOCK",
        "flush tables t1 for export",
        "BACKUP STAGE START",
        "BACKUP LOCK t",
    ] {
        assert_eq!(classify(sql.as_bytes()).pin, Some(Pin::LockTables), "{sql}");
    }
    assert_eq!(classify(b"FLUSH TABLES").pin, None);
    use PinChange::*;
    // Each released by its own statement: UNLOCK TABLES leaves a backup
    // stage or lock.
    for (sql, want) in [
        (
            "BACKUP UNLOCK",
            Remove(Pin::LockTables, "backup lock".into()),
        ),
        ("BACKUP LOCK t", Add(Pin::LockTables, "backup lock".into())),
        (
            "BACKUP STAGE START",
            Add(Pin::LockTables, "backup stage".into()),
        ),
        (
            "backup stage end",
            Remove(Pin::LockTables, "backup stage".into()),
        ),
        (
            "FLUSH TABLES WITH READ LOCK",
            Add(Pin::LockTables, "tables".into()),
        ),
        (
            "flush tables t1 for export",
            Add(Pin::LockTables, "tables".into()),
        ),
        (
            "LOCK INSTANCE FOR BACKUP",
            Add(Pin::LockTables, "instance".into()),
        ),
        (
            "UNLOCK INSTANCE",
            Remove(Pin::LockTables, "instance".into()),
        ),
    ] {
        assert_eq!(pin_change(sql.as_bytes()), Some(want), "{sql}");
    }
    assert_eq!(pin_change(b"BACKUP STAGE BLOCK_COMMIT"), None);
}

#[test]
fn temporary_tables_are_followed_by_name() {
    use PinChange::*;
    assert_eq!(
        pin_change(b"CREATE TEMPORARY TABLE IF NOT EXISTS `Tmp` (a INT)"),
        Some(Add(Pin::TempTable, "Tmp".into()))
    );
    assert_eq!(
        pin_change(b"create temporary table test.t2 select 1"),
        Some(Add(Pin::TempTable, "test.t2".into()))
    );
    assert_eq!(
        pin_change(b"DROP TEMPORARY TABLE IF EXISTS tmp, test.t2"),
        Some(RemoveAll(
            Pin::TempTable,
            vec!["tmp".into(), "test.t2".into()]
        ))
    );
    assert_eq!(
        pin_change(b"DROP TABLE tmp"),
        Some(RemoveAll(Pin::TempTable, vec!["tmp".into()]))
    );
    assert_eq!(
        pin_change(b"ALTER TABLE tmp RENAME TO t3"),
        Some(Unnamed(Pin::TempTable))
    );
}

#[test]
fn fingerprints_normalize_literals_lists_comments_and_case() {
    let fp = |s: &str| {
        let mut out = Vec::new();
        let h = fingerprint(s.as_bytes(), &mut out);
        (String::from_utf8(out).unwrap(), h)
    };
    let cases = [
        (
            "SELECT c FROM sbtest1 WHERE id = 42",
            "select c from sbtest1 where id = ?",
        ),
        (
            "select  c\n\tfrom sbtest1 where id=7 ;",
            "select c from sbtest1 where id = ?",
        ),
        (
            "SELECT /* a comment */ 'x', \"y\", 1.5e3, 0x1F FROM t -- tail\n",
            "select ?, ?, ?, ? from t",
        ),
        (
            "SELECT * FROM t WHERE id IN (1, 2, 3, 4)",
            "select * from t where id in(...)",
        ),
        (
            "SELECT * FROM t WHERE id IN (9)",
            "select * from t where id in(...)",
        ),
        (
            "SELECT * FROM t WHERE (a, b) IN ((1,2),(3,4))",
            "select * from t where(a, b) in((...))",
        ),
        (
            "INSERT INTO t (a, b) VALUES (1, 'x'), (2, 'y'), (3, NULL)",
            "insert into t(a, b) values(...)",
        ),
        (
            "SELECT `Weird Name`.c FROM `Weird Name`",
            "select `Weird Name`.c from `Weird Name`",
        ),
        (
            "SELECT @x, @@session.sql_mode, COUNT(*) FROM t WHERE a = -5",
            "select @x, @@session.sql_mode, count(*) from t where a = - ?",
        ),
        (
            "SELECT c FROM t WHERE id = ?",
            "select c from t where id = ?",
        ),
        (
            "SELECT SLEEP(0.3), CONCAT('a', 'b') FROM t WHERE x IN (SELECT 1)",
            "select sleep(?), concat(?, ?) from t where x in(select ?)",
        ),
        ("INSERT INTO t VALUES (1), (2)", "insert into t values(...)"),
        ("SELECT 'it''s', 'a\\'b' FROM dual", "select ?, ? from dual"),
    ];
    for (sql, want) in cases {
        assert_eq!(fp(sql).0, want, "{sql}");
    }
    assert_eq!(
        fp("select 1").1,
        fp("SELECT   2").1,
        "same shape, same hash"
    );
    assert_ne!(fp("select a from t").1, fp("select b from t").1);
    // Hostile input neither panics nor grows beyond the text.
    for s in ["'", "(((", ")))", "/*", "`", "@", "IN (", "x'"] {
        let (t, _) = fp(s);
        assert!(t.len() <= s.len() + 4, "{s:?} -> {t:?}");
    }
}

/// Statement-like texts built from fragments that steer the classifier
/// into its look-ahead paths (WITH, SET, LOCK, SELECT ... FOR, INTO).
const FRAGMENTS: &[&str] = &[
    "SELECT",
    "select",
    "WITH",
    "x AS",
    "(",
    ")",
    ",",
    ";",
    "FROM t",
    "WHERE id =",
    "IN (1, 2, 3)",
    "VALUES (1,'a'),(2,'b')",
    "INSERT INTO t",
    "UPDATE t SET a = 1",
    "FOR UPDATE",
    "FOR SHARE",
    "LOCK IN SHARE MODE",
    "INTO @v",
    "SET",
    "@x := 1",
    "@@session.autocommit",
    "@'q'",
    "LOCK TABLES t WRITE",
    "GET_LOCK('a', 1)",
    "/* concord:primary */",
    "/*!40101 SET */",
    "# c\n",
    "-- c\n",
    "'s''q'",
    "`q`",
    "1.5e3",
    "NULL",
    "true",
    "START TRANSACTION",
    "READ ONLY",
    "SHOW",
    "DO",
    "CALL p()",
    "LAST_INSERT_ID()",
    "FOUND_ROWS()",
    "TEMPORARY",
    "CREATE",
    "TABLE",
    "DROP",
];

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4000))]
    /// One pass (the session's) gives exactly what the two separate
    /// passes give: the same class, digest text and hash.
    #[test]
    fn one_pass_equals_classify_and_fingerprint(
        parts in proptest::collection::vec(proptest::sample::select(FRAGMENTS), 0..24),
        glue in proptest::collection::vec(any::<bool>(), 24),
    ) {
        let mut sql = String::new();
        for (i, p) in parts.iter().enumerate() {
            if glue[i] { sql.push(' '); }
            sql.push_str(p);
        }
        let mut a = Vec::new();
        let ha = fingerprint(sql.as_bytes(), &mut a);
        let mut b = b"left over".to_vec();
        let (class, hb) = classify_digest(sql.as_bytes(), &mut b);
        prop_assert_eq!(&a, &b, "{}", sql);
        prop_assert_eq!(ha, hb);
        prop_assert_eq!(format!("{:?}", class), format!("{:?}", classify(sql.as_bytes())));
    }
}

/// Every word of the scan's list passes its filter in either case and
/// changes what some statement is classified as; common names are
/// passed over. (The scan's `match` is over the list's actions, so a word
/// it acts on cannot be missing from the filter.)
#[test]
fn every_scan_word_passes_the_filter_and_takes_effect() {
    for &(w, act) in SCAN_WORDS {
        let word = std::str::from_utf8(w).unwrap();
        let sql = match act {
            Act::Update => "SELECT a FROM t FOR UPDATE".to_string(),
            Act::Share => "SELECT a FROM t LOCK IN SHARE MODE".to_string(),
            Act::From => "SELECT a FROM t".to_string(),
            Act::Into => "SELECT a INTO @v".to_string(),
            Act::Temporary => "CREATE TEMPORARY TABLE t (a INT)".to_string(),
            Act::For => "SELECT NEXT VALUE FOR s".to_string(),
            Act::CalcFoundRows => "SELECT SQL_CALC_FOUND_ROWS a FROM t".to_string(),
            Act::Limit => "SELECT a FROM t LIMIT 2, 1".to_string(),
            Act::Offset => "SELECT a FROM t LIMIT 1 OFFSET 2".to_string(),
            _ => format!("SELECT {word}(1)"),
        };
        assert_eq!(scan_act(w), Some(act));
        assert_eq!(scan_act(word.to_lowercase().as_bytes()), Some(act));
        // The same statement with the word swapped for a neutral one of
        // the same length and first letter (it passes the filter).
        let neutral = format!("{}{}", &word[..1], "Q".repeat(word.len() - 1));
        let other = sql.replacen(word, &neutral, 1);
        assert_ne!(
            classify(sql.as_bytes()),
            classify(other.as_bytes()),
            "{sql} classifies as {other}"
        );
        assert_ne!(
            classify(sql.to_lowercase().as_bytes()),
            classify(other.to_lowercase().as_bytes()),
            "{sql} in lower case"
        );
    }
    for w in ["c", "id", "WHERE", "AND", "sbtest1", "k", "ÿ", ""] {
        assert_eq!(scan_act(w.as_bytes()), None, "{w}");
    }
}

#[test]
fn set_names_collate_names_its_collation() {
    assert_eq!(
        set_names_collation(b"SET NAMES utf8mb4 COLLATE utf8mb4_bin").as_deref(),
        Some("utf8mb4_bin")
    );
    assert_eq!(
        set_names_collation(b"set names 'utf8mb4' collate 'utf8mb4_unicode_ci'").as_deref(),
        Some("utf8mb4_unicode_ci")
    );
    assert_eq!(set_names_collation(b"SET NAMES utf8mb4"), None);
    assert_eq!(
        set_names_collation(b"SET NAMES utf8mb4 COLLATE x, @a = 1"),
        None
    );
    assert_eq!(
        set_names_collation(b"SET NAMES utf8mb4 COLLATE DEFAULT"),
        None
    );
    assert_eq!(
        set_names_collation(b"SET NAMES a COLLATE x; SET NAMES b"),
        None
    );
    assert_eq!(
        set_names_collation(b"SET NAMES a COLLATE x;").as_deref(),
        Some("x")
    );
}

#[test]
fn temporary_pins_only_after_create_or_drop() {
    for sql in [
        "CREATE TEMPORARY TABLE t (a INT)",
        "create or replace temporary table t (a INT)",
        "DROP TEMPORARY TABLE t",
        "SELECT 1; CREATE TEMPORARY TABLE t (a INT)",
    ] {
        assert_eq!(classify(sql.as_bytes()).pin, Some(Pin::TempTable), "{sql}");
    }
    assert_eq!(classify(b"SELECT temporary FROM t").pin, None);
}

#[test]
fn finds_set_transaction_in_a_multi_statement() {
    assert!(sets_transaction(b"SET @a = 1; SET TRANSACTION READ ONLY"));
    assert!(sets_transaction(
        b"select 1;set transaction isolation level serializable"
    ));
    assert!(!sets_transaction(
        b"SET SESSION TRANSACTION READ ONLY; SELECT 1"
    ));
    assert!(!sets_transaction(b"SELECT 'SET TRANSACTION'; SET @t = 1"));
    assert!(!sets_transaction(b"SET @transaction = 1"));
}

#[test]
fn reads_release_after_commit_and_rollback() {
    assert_eq!(releases(b"COMMIT RELEASE"), Some(true));
    assert_eq!(releases(b"rollback work and no chain release"), Some(true));
    assert_eq!(releases(b"COMMIT AND CHAIN NO RELEASE"), Some(false));
    assert_eq!(releases(b"COMMIT"), None);
    assert_eq!(releases(b"ROLLBACK TO SAVEPOINT release"), None);
}

#[test]
fn statements_that_set_found_rows_without_a_result() {
    let sets = |q: &str| classify(q.as_bytes()).has(flag::SETS_FOUND_ROWS);
    for q in [
        "INSERT INTO t SELECT a FROM u",
        "insert into t (a, b) select 1, 2",
        "INSERT INTO t (SELECT a FROM u)",
        "REPLACE INTO t SELECT * FROM u",
        "INSERT INTO t SELECT a FROM u ON DUPLICATE KEY UPDATE a = (SELECT 1)",
        "CREATE TABLE t AS SELECT 1",
        "CREATE OR REPLACE TABLE t (a INT) SELECT a FROM u",
        "CREATE TEMPORARY TABLE t SELECT a FROM u",
        "SET @a = (SELECT COUNT(*) FROM t)",
        "SET @a = 1, @b = (SELECT 2)",
    ] {
        assert!(sets(q), "{q}");
    }
    for q in [
        "SELECT a FROM t",
        "INSERT INTO t VALUES ((SELECT 7))",
        "INSERT INTO t VALUES (1) ON DUPLICATE KEY UPDATE a = (SELECT 1)",
        "INSERT INTO t SET a = (SELECT 1)",
        "UPDATE t SET a = (SELECT 1)",
        "DELETE FROM t WHERE a IN (SELECT 1)",
        "DO (SELECT 1)",
        "CREATE VIEW v AS SELECT 1",
        "CREATE PROCEDURE p() SELECT 1",
        "CREATE TABLE t (a INT)",
        "SET @a = 1",
        "SET STATEMENT max_statement_time = 1 FOR SELECT 1",
        "INSERT INTO t SELECT 1; SELECT 2",
    ] {
        assert!(!sets(q), "{q}");
    }
}

#[test]
fn sets_of_global_variables() {
    for q in [
        "SET GLOBAL max_allowed_packet = 17825792",
        "set global sql_mode = ''",
        "SET @@global.sql_mode = ''",
        "SET @@GLOBAL.wait_timeout = 10, @x = 1",
        "SET PERSIST max_connections = 10",
        "SET sql_mode = '', GLOBAL wait_timeout = 5",
    ] {
        assert!(sets_global(q.as_bytes(), false), "{q}");
    }
    for q in [
        "SET sql_mode = ''",
        "SET @@session.sql_mode = 'global'",
        "SET @global = 1",
        "SET @@sql_mode = ''",
        "SELECT @@global.sql_mode",
        "SET @save = @@global.max_allowed_packet",
        "SET @a = GREATEST(1, @@global.wait_timeout), sql_mode = ''",
    ] {
        assert!(!sets_global(q.as_bytes(), false), "{q}");
    }
    // In any statement of a multi-statement text.
    for q in [
        "SELECT 1; SET GLOBAL wait_timeout = 5",
        "SET @a = (SELECT 1); SET @@global.sql_mode = ''",
        "USE test; set persist max_connections = 9;",
    ] {
        assert!(sets_global(q.as_bytes(), true), "{q}");
        assert!(!sets_global(q.as_bytes(), false), "{q}: the first only");
    }
    for q in [
        "SELECT ';'; SET @g = @@global.wait_timeout",
        "INSERT INTO t VALUES ('SET GLOBAL x = 1'); SELECT 1",
        "SET @a = 1; SELECT GLOBAL",
    ] {
        assert!(!sets_global(q.as_bytes(), true), "{q}");
    }
}

#[test]
fn what_leaves_found_rows_and_what_only_the_server_knows() {
    let has = |q: &str, f: u32| classify(q.as_bytes()).has(f);
    for q in [
        "SHOW CREATE TABLE t",
        "show warnings",
        "SHOW ERRORS",
        "SHOW GRANTS",
        "SHOW SLAVE STATUS",
        "HELP 'x'",
    ] {
        assert!(has(q, flag::KEEPS_FOUND_ROWS), "{q}");
    }
    for q in [
        "SHOW TABLES",
        "SHOW VARIABLES LIKE 'x'",
        "SELECT 1",
        "SHOW MASTER LOGS",
    ] {
        assert!(!has(q, flag::KEEPS_FOUND_ROWS), "{q}");
    }
    for q in [
        "SELECT a FROM t LIMIT 2, 1",
        "SELECT a FROM t LIMIT 1 OFFSET 3",
        "SELECT a FROM t LIMIT ?, ?",
    ] {
        assert!(has(q, flag::SETS_FOUND_ROWS), "{q}");
    }
    for q in [
        "SELECT a FROM t LIMIT 1",
        "SELECT a FROM t",
        "UPDATE t SET offset = 0 WHERE id = 1",
        "DELETE FROM t WHERE id IN (SELECT id FROM (SELECT id FROM u LIMIT 1, 2) x)",
        "SHOW WARNINGS LIMIT 0, 10",
    ] {
        assert!(!has(q, flag::SETS_FOUND_ROWS), "{q}");
    }
    assert!(has("SHOW WARNINGS LIMIT 0, 10", flag::KEEPS_FOUND_ROWS));
}
