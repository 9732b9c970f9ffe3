//! Query rules through real concord nodes: each action changes what the
//! same statement does (compared with the same statement before the rule),
//! a rule matches on digest, user, schema and pattern, hits are counted,
//! and every node holds the same rules, committed at the same log index,
//! after the Raft leader dies and rules change under the new one.

use harness::{Fleet, Topology};
use mysql_async::prelude::*;
use std::time::{Duration, Instant};

/// Which server answered.
async fn ran_on(c: &mut mysql_async::Conn, sql: &str) -> u32 {
    let v: Option<u32> = c.query_first(sql).await.unwrap();
    v.unwrap_or(0)
}

async fn admin(node: &harness::Concord, sql: &str) {
    node.admin_query(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_rule_action_changes_what_the_statement_does() {
    let topo = Topology::start(1).await;
    topo.primary
        .exec("CREATE TABLE test.q (id INT PRIMARY KEY, v INT); INSERT INTO test.q VALUES (1, 5), (2, 6)")
        .await;
    topo.wait_replicated().await;
    let (p, r) = (topo.primary.server_id, topo.replicas[0].server_id);
    // Reads stay on the primary unless a rule sends them to a replica.
    let fleet = Fleet::start(1, topo.backends(), |_, c| {
        c.extra
            .push_str("[routing]\nsplit_reads = false\nmax_replica_lag = \"30s\"\n");
    })
    .await;
    let node = &fleet.nodes[0];
    node.wait_readable(&["db2"]).await;
    let mut c = mysql_async::Conn::new(node.opts().db_name(Some("test")))
        .await
        .unwrap();
    let all = "SELECT @@server_id FROM test.q LIMIT 1";
    let one = "SELECT @@server_id FROM test.q WHERE id = 1";
    assert_eq!(ran_on(&mut c, all).await, p);

    // ROUTE REPLICA moves reads, never a write.
    admin(node, r"ADD RULE 20 MATCH 'from test\.q' ROUTE REPLICA").await;
    assert_eq!(ran_on(&mut c, all).await, r, "ROUTE REPLICA");
    c.query_drop("UPDATE test.q SET v = 7 WHERE id = 2")
        .await
        .unwrap();
    let v: Vec<i64> = topo
        .primary
        .query("SELECT v FROM test.q WHERE id = 2")
        .await;
    assert_eq!(
        v,
        [7],
        "the write matched the rule and still ran on the primary"
    );

    // ROUTE PRIMARY, lower-numbered, wins for what it matches.
    admin(node, r"ADD RULE 10 MATCH 'where id = \?' ROUTE PRIMARY").await;
    assert_eq!(ran_on(&mut c, one).await, p, "ROUTE PRIMARY");
    assert_eq!(ran_on(&mut c, all).await, r);

    // BLOCK by digest, read from SHOW CONCORD DIGESTS.
    let count = "SELECT COUNT(*) FROM test.q";
    let n: Option<i64> = c.query_first(count).await.unwrap();
    assert_eq!(n, Some(2));
    let digests = node
        .admin_query("SHOW CONCORD DIGESTS LIMIT 100")
        .await
        .unwrap();
    let digest = digests
        .iter()
        .find(|d| {
            d["fingerprint"]
                .as_deref()
                .is_some_and(|f| f.starts_with("select count"))
        })
        .and_then(|d| d["digest"].clone())
        .unwrap_or_else(|| panic!("{digests:?}"));
    admin(
        node,
        &format!("ADD RULE 30 DIGEST '{digest}' BLOCK 'reports are off until 6pm'"),
    )
    .await;
    let e = c.query_drop(count).await.expect_err("blocked").to_string();
    assert!(
        e.contains("1148") && e.contains("query rule 30") && e.contains("reports are off"),
        "{e}"
    );
    let mut other = node.conn().await;
    let e = other
        .query_drop(count)
        .await
        .expect_err("blocked for everyone")
        .to_string();
    assert!(e.contains("1148"), "{e}");

    // TIMEOUT for one user in one schema: killed on the server.
    admin(
        node,
        "ADD RULE 40 USER 'app' SCHEMA 'test' MATCH 'sleep' TIMEOUT '300ms'",
    )
    .await;
    let t = Instant::now();
    let e = c
        .query_drop("SELECT SLEEP(1)")
        .await
        .expect_err("cut off")
        .to_string();
    assert!(e.contains("1969"), "{e}");
    assert!(
        t.elapsed() < Duration::from_millis(900),
        "{:?}",
        t.elapsed()
    );
    // Another schema: the rule does not match.
    let v: Option<i64> = other.query_first("SELECT SLEEP(1)").await.unwrap();
    assert_eq!(v, Some(0), "no database chosen: rule 40 does not apply");

    // MAX_LAG: a replica 2 s behind serves reads under the global 30 s
    // bound, not those under the rule's 1 s.
    let delayed = &topo.replicas[0];
    delayed.exec("STOP SLAVE").await;
    delayed.exec("CHANGE MASTER TO MASTER_DELAY = 2").await;
    delayed.exec("START SLAVE").await;
    harness::wait_for("db2 to lag over 1.5 s", Duration::from_secs(20), || async {
        let b = node.admin_query("SHOW BACKENDS").await.ok()?;
        let lag: u64 = b.iter().find(|r| r["name"].as_deref() == Some("db2"))?["lag_ms"]
            .as_deref()?
            .parse()
            .ok()?;
        (lag > 1500).then_some(())
    })
    .await;
    assert_eq!(ran_on(&mut c, all).await, r, "2 s behind, within 30 s");
    admin(node, r"ADD RULE 50 MATCH 'limit \?' MAX_LAG '1s'").await;
    assert_eq!(
        ran_on(&mut c, all).await,
        p,
        "MAX_LAG '1s' keeps it off the lagging replica"
    );

    // Hits, and DROP RULE undoes.
    let rules = node.admin_query("SHOW RULES").await.unwrap();
    println!("{rules:#?}");
    let hits = |id: &str| -> u64 {
        rules
            .iter()
            .find(|r| r["id"].as_deref() == Some(id))
            .and_then(|r| r["hits"].as_deref()?.parse().ok())
            .unwrap_or(u64::MAX)
    };
    assert_eq!(hits("30"), 2, "two blocked statements");
    assert_eq!(hits("40"), 1);
    assert_eq!(hits("50"), 1);
    admin(node, "DROP RULE 30").await;
    let n: Option<i64> = c.query_first(count).await.unwrap();
    assert_eq!(n, Some(2), "unblocked");
    let e = node
        .admin_query("ADD RULE 40 ROUTE PRIMARY")
        .await
        .expect_err("the id is taken")
        .to_string();
    assert!(e.contains("rule 40 exists"), "{e}");
    let e = node
        .admin_query("ADD RULE 60 MATCH '(' ROUTE PRIMARY")
        .await
        .expect_err("a bad pattern")
        .to_string();
    assert!(e.contains("MATCH pattern"), "{e}");
}

/// What must be equal on every node: the rules and their log indexes.
async fn rules_of(node: &harness::Concord) -> Vec<Vec<Option<String>>> {
    node.admin_query("SHOW RULES")
        .await
        .unwrap()
        .into_iter()
        .map(|r| {
            [
                "id",
                "user",
                "schema",
                "digest",
                "match",
                "action",
                "log_index",
            ]
            .iter()
            .map(|k| r[*k].clone())
            .collect()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_node_holds_the_same_rules_after_a_leader_change() {
    let topo = Topology::start(1).await;
    let mut fleet = Fleet::start(3, topo.backends(), |_, _| {}).await;
    let leader = fleet.leader(Duration::from_secs(10)).await;
    let follower = (leader + 1) % 3;
    admin(
        &fleet.nodes[follower],
        "ADD RULE 1 MATCH 'forbidden' BLOCK 'no'",
    )
    .await;
    admin(&fleet.nodes[leader], "ADD RULE 2 USER 'app' TIMEOUT '10s'").await;
    fleet.nodes[leader].kill();
    let new = fleet.leader(Duration::from_secs(15)).await;
    assert_ne!(new, leader);
    let third = (0..3).find(|i| *i != leader && *i != new).unwrap();
    admin(&fleet.nodes[third], "ADD RULE 3 SCHEMA 'x' ROUTE PRIMARY").await;
    admin(&fleet.nodes[new], "DROP RULE 2").await;
    fleet.nodes[leader].restart().await;
    fleet.nodes[leader].wait_ready().await;
    let want = rules_of(&fleet.nodes[new]).await;
    assert_eq!(want.len(), 2, "{want:?}");
    harness::wait_for(
        "the restarted node to apply the rules",
        Duration::from_secs(20),
        || {
            let node = &fleet.nodes[leader];
            let want = want.clone();
            async move { (rules_of(node).await == want).then_some(()) }
        },
    )
    .await;
    for (i, node) in fleet.nodes.iter().enumerate() {
        assert_eq!(rules_of(node).await, want, "node {i}");
        let mut c = node.conn().await;
        let e = c
            .query_drop("SELECT 1 AS forbidden")
            .await
            .expect_err("blocked on every node")
            .to_string();
        assert!(e.contains("query rule 1"), "node {i}: {e}");
    }
    println!("rules on all 3 nodes: {want:?}");
}
