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
    assert!(!replica("SELECT a INTO @x FROM t"));
    assert!(!replica("SELECT @x := 1"));
    assert!(!replica("SELECT SQL_CALC_FOUND_ROWS * FROM t"));
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
    assert!(replica("SHOW GLOBAL STATUS"));
    assert!(replica("SHOW TABLES"));
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
    assert!(classify(b"LOCK TABLES t WRITE").has(flag::PINS));
    assert!(classify(b"CREATE TEMPORARY TABLE t (a int)").has(flag::TEMP_TABLE));
    assert!(classify(b"SET NAMES utf8; DROP TABLE t").has(flag::PINS));
}

#[test]
fn targets() {
    assert_eq!(use_target(b"USE test").as_deref(), Some("test"));
    assert_eq!(use_target(b"use `my``db`;").as_deref(), Some("my`db"));
    assert_eq!(set_target(b"SET NAMES utf8mb4").as_deref(), Some("names"));
    assert_eq!(
        set_target(b"SET SESSION sql_mode = 'A,B'").as_deref(),
        Some("sql_mode")
    );
    assert_eq!(
        set_target(b"SET @@session.time_zone='+00:00'").as_deref(),
        Some("time_zone")
    );
    assert_eq!(set_target(b"SET @x = 1").as_deref(), Some("@x"));
    assert_eq!(set_target(b"SET a=1, b=2"), None);
    assert_eq!(set_target(b"SET a=concat(1,2)").as_deref(), Some("a"));
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
