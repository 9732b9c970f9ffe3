//! Query digests and the slow log, through a real concord node: the
//! counts of a known workload come out exactly, on the admin port and as
//! JSON; the slow log carries fingerprints, not values; RESET empties it.

use harness::{Fleet, Topology};
use mysql_async::prelude::*;
use std::collections::BTreeMap;

type Row = BTreeMap<String, Option<String>>;

fn find<'a>(rows: &'a [Row], fingerprint: &str) -> &'a Row {
    rows.iter()
        .find(|r| r["fingerprint"].as_deref() == Some(fingerprint))
        .unwrap_or_else(|| panic!("no digest {fingerprint:?} in {rows:#?}"))
}

fn num(r: &Row, col: &str) -> u64 {
    r[col]
        .as_deref()
        .and_then(|v| v.parse().ok())
        .unwrap_or(u64::MAX)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn digests_count_a_known_workload_and_the_slow_log_hides_values() {
    let topo = Topology::start(1).await;
    topo.primary
        .exec("CREATE TABLE test.d (id INT PRIMARY KEY, v INT)")
        .await;
    topo.wait_replicated().await;
    let fleet = Fleet::start(1, topo.backends(), |_, c| {
        c.extra
            .push_str("[routing]\nmax_replica_lag = \"1h\"\n[log]\nslow_threshold = \"200ms\"\n[digests]\nprometheus_top = 3\n");
    })
    .await;
    let node = &fleet.nodes[0];
    node.wait_readable(&["db2"]).await;
    let mut c = mysql_async::Conn::new(node.opts().db_name(Some("test")))
        .await
        .unwrap();
    node.admin_query("RESET CONCORD DIGESTS").await.unwrap();
    for i in 0..40 {
        c.query_drop(format!("INSERT INTO test.d VALUES ({i}, {})", i * 10))
            .await
            .unwrap();
    }
    topo.wait_replicated().await;
    let mut sent = 0;
    for i in 0..40 {
        let got: Vec<i64> = c
            .query(format!(
                "select v from test.d where id IN ({i}, {}) /* {i} */",
                i + 1
            ))
            .await
            .unwrap();
        sent += got.len() as u64;
    }
    assert_eq!(sent, 79);
    for _ in 0..3 {
        c.query_drop("SELECT nope FROM test.d").await.unwrap_err();
    }
    c.query_drop("SELECT SLEEP(0.3) AS secret_7341, 'hush-4471-literal'")
        .await
        .unwrap();
    let rows = node
        .admin_query("SHOW CONCORD DIGESTS ORDER BY count DESC LIMIT 100")
        .await
        .unwrap();
    let ins = find(&rows, "insert into test.d values(...)");
    assert_eq!(num(ins, "count"), 40, "{ins:?}");
    assert_eq!(num(ins, "rows_affected"), 40, "{ins:?}");
    assert_eq!(num(ins, "errors"), 0, "{ins:?}");
    assert_eq!(ins["role"].as_deref(), Some("primary"));
    assert_eq!(ins["user"].as_deref(), Some("app"));
    assert_eq!(ins["schema"].as_deref(), Some("test"));
    let sel = find(&rows, "select v from test.d where id in(...)");
    assert_eq!(num(sel, "count"), 40, "{sel:?}");
    assert_eq!(num(sel, "rows_sent"), 79, "{sel:?}");
    assert_eq!(sel["role"].as_deref(), Some("replica"));
    assert!(num(sel, "max_us") >= num(sel, "p50_us"), "{sel:?}");
    let bad = find(&rows, "select nope from test.d");
    assert_eq!((num(bad, "count"), num(bad, "errors")), (3, 3), "{bad:?}");
    // The same through HTTP.
    let (code, body) = node.http_get("/api/v1/digests").await.unwrap();
    assert_eq!(code, 200);
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    let j = json
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["fingerprint"] == "insert into test.d values(...)")
        .expect("in the JSON");
    assert_eq!(j["count"], 40);
    // Prometheus: the top 3 by total time, each count as in the table.
    let m = node.http_get("/metrics").await.unwrap().1;
    let lines: Vec<&str> = m
        .lines()
        .filter(|l| l.starts_with("concord_digest_statements_total{"))
        .collect();
    assert_eq!(lines.len(), 3, "{lines:#?}");
    for l in &lines {
        let digest = l.split("digest=\"").nth(1).unwrap().get(..16).unwrap();
        let row = rows
            .iter()
            .find(|r| r["digest"].as_deref() == Some(digest))
            .unwrap_or_else(|| panic!("{l}"));
        let v: f64 = l.rsplit(' ').next().unwrap().parse().unwrap();
        assert_eq!(v as u64, num(row, "count"), "{l}");
    }
    assert!(
        lines
            .iter()
            .any(|l| l.contains("fingerprint=\"select sleep(?) as secret_7341, ?\"")),
        "the slowest statement leads: {lines:#?}"
    );
    // Slow log: the fingerprint, never the values.
    let logs = node.logs();
    let line = logs
        .lines()
        .find(|l| l.contains("slow statement") && l.contains("sleep"))
        .unwrap_or_else(|| panic!("no slow-log line:\n{logs}"));
    println!("{line}");
    assert!(line.contains("select sleep(?) as secret_7341, ?"), "{line}");
    assert!(line.contains("backend=\"db2\""), "{line}");
    assert!(
        !line.contains("hush-4471"),
        "a literal value in the slow log: {line}"
    );
    assert!(line.contains("user=app"), "{line}");
    // Errors in admin input are explained.
    let e = node
        .admin_query("SHOW CONCORD DIGESTS ORDER BY password")
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("ORDER BY one of"), "{e}");
    node.admin_query("RESET CONCORD DIGESTS").await.unwrap();
    let rows = node.admin_query("SHOW CONCORD DIGESTS").await.unwrap();
    assert!(rows.is_empty(), "{rows:?}");
}

/// `SHOW CONCORD FLEET DIGESTS` on any node: every node's rows merged,
/// each count the sum of that row's count on every node; a node that
/// cannot answer makes it an error naming the node, never a partial table.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fleet_view_merges_every_nodes_digests() {
    let topo = Topology::start(1).await;
    topo.primary
        .exec("CREATE TABLE test.f (id INT PRIMARY KEY, v INT); INSERT INTO test.f VALUES (1, 1)")
        .await;
    topo.wait_replicated().await;
    let mut fleet = Fleet::start(3, topo.backends(), |_, _| {}).await;
    for (i, node) in fleet.nodes.iter().enumerate() {
        node.wait_readable(&["db2"]).await;
        let mut c = node.conn().await;
        for n in 0..(i + 1) * 10 {
            let _: Vec<i64> = c
                .query(format!("SELECT v FROM test.f WHERE id = {n}"))
                .await
                .unwrap();
        }
        if i == 0 {
            for _ in 0..5 {
                c.query_drop("SELECT 1 AS only_on_node_0").await.unwrap();
            }
        }
    }
    let per_node: Vec<Vec<Row>> = futures::future::join_all(fleet.nodes.iter().map(|n| async {
        n.admin_query("SHOW CONCORD DIGESTS LIMIT 1000")
            .await
            .unwrap()
    }))
    .await;
    let merged = fleet.nodes[2]
        .admin_query("SHOW CONCORD FLEET DIGESTS ORDER BY count LIMIT 1000")
        .await
        .unwrap();
    let sel = find(&merged, "select v from test.f where id = ?");
    assert_eq!((num(sel, "count"), num(sel, "nodes")), (60, 3), "{sel:?}");
    let only = find(&merged, "select ? as only_on_node_0");
    assert_eq!((num(only, "count"), num(only, "nodes")), (5, 1), "{only:?}");
    // Differential: every merged row is the sum of the nodes' rows.
    let key = |r: &Row| ["digest", "user", "schema", "role"].map(|k| r[k].clone());
    for m in &merged {
        let parts: Vec<&Row> = per_node
            .iter()
            .flatten()
            .filter(|r| key(r) == key(m))
            .collect();
        for col in ["count", "errors", "rows_sent", "total_us"] {
            let sum: u64 = parts.iter().map(|r| num(r, col)).sum();
            assert_eq!(num(m, col), sum, "{col} of {m:?}");
        }
        assert_eq!(num(m, "nodes"), parts.len() as u64, "{m:?}");
    }
    println!("fleet view: {} merged rows; {sel:?}", merged.len());
    fleet.nodes[1].kill();
    let e = fleet.nodes[0]
        .admin_query("SHOW CONCORD FLEET DIGESTS")
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("not answered") && e.contains("node 2"), "{e}");
}
