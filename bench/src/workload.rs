//! Workloads, sysbench-shaped tables (`concord_bench.sbtestN`: id, k, c,
//! pad) and their setup.

use crate::client::Client;
use crate::BenchError;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

pub const SCHEMA: &str = "concord_bench";

/// Sent to agents by name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum Workload {
    /// `SELECT c FROM sbtestN WHERE id = ?` as text.
    PointSelect,
    /// The same, prepared once per connection.
    PointSelectPs,
    /// Point selects and small range scans.
    ReadOnly,
    /// Reads, updates by id and inserts, autocommit (20% writes).
    ReadWrite,
    /// Reads with an update by id every 20 statements (5% writes).
    ReadMostly,
    /// Unique inserts only.
    Insert,
    /// `read-mostly`, each read carrying the causal token of the
    /// connection's last write (`/* concord:after=T */`, the token taken
    /// from the write's OK packet: no extra round trip).
    ReadMostlyToken,
    /// `read-write`, reads carrying tokens the same way.
    ReadWriteToken,
}

impl Workload {
    /// Whether reads carry the last write's causal token.
    pub fn carries_token(self) -> bool {
        matches!(self, Workload::ReadMostlyToken | Workload::ReadWriteToken)
    }

    /// The name `--workload` takes (the inverse of `from_str`).
    pub fn name(self) -> &'static str {
        match self {
            Workload::PointSelect => "point-select",
            Workload::PointSelectPs => "point-select-ps",
            Workload::ReadOnly => "read-only",
            Workload::ReadWrite => "read-write",
            Workload::ReadMostly => "read-mostly",
            Workload::Insert => "insert",
            Workload::ReadMostlyToken => "read-mostly-token",
            Workload::ReadWriteToken => "read-write-token",
        }
    }

    /// The statement mix, tokens aside.
    fn mix(self) -> Workload {
        match self {
            Workload::ReadMostlyToken => Workload::ReadMostly,
            Workload::ReadWriteToken => Workload::ReadWrite,
            w => w,
        }
    }
}

impl From<Workload> for String {
    fn from(w: Workload) -> String {
        w.name().to_string()
    }
}

impl TryFrom<String> for Workload {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

impl std::str::FromStr for Workload {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "point-select" => Workload::PointSelect,
            "point-select-ps" => Workload::PointSelectPs,
            "read-only" => Workload::ReadOnly,
            "read-write" => Workload::ReadWrite,
            "read-mostly" => Workload::ReadMostly,
            "insert" => Workload::Insert,
            "read-mostly-token" => Workload::ReadMostlyToken,
            "read-write-token" => Workload::ReadWriteToken,
            other => {
                return Err(format!(
                    "unknown workload {other:?}: point-select, point-select-ps, read-only, read-mostly, read-write, insert, read-mostly-token, read-write-token"
                ))
            }
        })
    }
}

#[derive(Clone, Copy, Debug, serde::Serialize, serde::Deserialize)]
pub struct Shape {
    pub workload: Workload,
    pub tables: u32,
    pub table_size: u32,
}

/// One connection running a workload.
pub struct Worker {
    pub client: Client,
    shape: Shape,
    rng: SmallRng,
    /// Prepared point-select per table.
    stmts: Vec<u32>,
    sql: String,
}

impl Worker {
    pub async fn new(mut client: Client, shape: Shape, seed: u64) -> Result<Worker, BenchError> {
        let mut stmts = Vec::new();
        if shape.workload == Workload::PointSelectPs {
            for t in 1..=shape.tables {
                let (id, _) = client
                    .prepare(&format!("SELECT c FROM {SCHEMA}.sbtest{t} WHERE id = ?"))
                    .await?;
                stmts.push(id);
            }
        }
        Ok(Worker {
            client,
            shape,
            rng: SmallRng::seed_from_u64(seed),
            stmts,
            sql: String::with_capacity(256),
        })
    }

    fn table(&mut self) -> u32 {
        self.rng.random_range(1..=self.shape.tables.max(1))
    }

    fn id(&mut self) -> u32 {
        self.rng.random_range(1..=self.shape.table_size.max(1))
    }

    /// One statement of the workload.
    pub async fn step(&mut self) -> Result<(), BenchError> {
        use std::fmt::Write;
        let t = self.table();
        let id = self.id();
        self.sql.clear();
        // The hint goes first; it is dropped again below for a write.
        let hinted = match &self.client.gtid {
            Some(t) if self.shape.workload.carries_token() => {
                let _ = write!(self.sql, "/* concord:after={t} */ ");
                self.sql.len()
            }
            _ => 0,
        };
        match self.shape.workload.mix() {
            Workload::PointSelectPs => {
                let s = self.stmts[(t as usize - 1) % self.stmts.len().max(1)];
                self.client.execute(s, &[i64::from(id)]).await?;
                return Ok(());
            }
            Workload::PointSelect => {
                let _ = write!(self.sql, "SELECT c FROM {SCHEMA}.sbtest{t} WHERE id = {id}");
            }
            Workload::ReadOnly => {
                let r: u32 = self.rng.random_range(0..10);
                if r < 7 {
                    let _ = write!(self.sql, "SELECT c FROM {SCHEMA}.sbtest{t} WHERE id = {id}");
                } else if r < 9 {
                    let _ = write!(
                        self.sql,
                        "SELECT c FROM {SCHEMA}.sbtest{t} WHERE id BETWEEN {id} AND {}",
                        id + 99
                    );
                } else {
                    let _ = write!(
                        self.sql,
                        "SELECT SUM(k) FROM {SCHEMA}.sbtest{t} WHERE id BETWEEN {id} AND {}",
                        id + 99
                    );
                }
            }
            Workload::ReadWrite => {
                let r: u32 = self.rng.random_range(0..20);
                if r < 14 {
                    let _ = write!(self.sql, "SELECT c FROM {SCHEMA}.sbtest{t} WHERE id = {id}");
                } else if r < 16 {
                    let _ = write!(
                        self.sql,
                        "SELECT c FROM {SCHEMA}.sbtest{t} WHERE id BETWEEN {id} AND {}",
                        id + 99
                    );
                } else if r < 19 {
                    let _ = write!(
                        self.sql,
                        "UPDATE {SCHEMA}.sbtest{t} SET k = k + 1 WHERE id = {id}"
                    );
                } else {
                    let _ = write!(
                        self.sql,
                        "INSERT INTO {SCHEMA}.sbtest{t} (k, c, pad) VALUES ({id}, 'rw', 'bench')"
                    );
                }
            }
            Workload::ReadMostly => {
                if self.rng.random_range(0..20u32) == 0 {
                    let _ = write!(
                        self.sql,
                        "UPDATE {SCHEMA}.sbtest{t} SET k = k + 1 WHERE id = {id}"
                    );
                } else {
                    let _ = write!(self.sql, "SELECT c FROM {SCHEMA}.sbtest{t} WHERE id = {id}");
                }
            }
            Workload::Insert => {
                let _ = write!(
                    self.sql,
                    "INSERT INTO {SCHEMA}.sbtest{t} (k, c, pad) VALUES ({id}, 'insert', 'bench')"
                );
            }
            Workload::ReadMostlyToken | Workload::ReadWriteToken => {}
        }
        if hinted > 0 && !self.sql[hinted..].starts_with("SELECT") {
            self.sql.drain(..hinted);
        }
        self.client.query(&self.sql).await.map(|_| ())
    }
}

/// Creates the schema and tables and fills them (batched inserts).
pub async fn setup(client: &mut Client, shape: &Shape) -> Result<(), BenchError> {
    client
        .query(&format!("CREATE DATABASE IF NOT EXISTS {SCHEMA}"))
        .await?;
    for t in 1..=shape.tables {
        client
            .query(&format!("DROP TABLE IF EXISTS {SCHEMA}.sbtest{t}"))
            .await?;
        client
            .query(&format!(
                "CREATE TABLE {SCHEMA}.sbtest{t} (id INT NOT NULL AUTO_INCREMENT PRIMARY KEY, k INT NOT NULL DEFAULT 0, \
                 c CHAR(120) NOT NULL DEFAULT '', pad CHAR(60) NOT NULL DEFAULT '', KEY k_{t} (k)) ENGINE=InnoDB"
            ))
            .await?;
        let mut id = 1u32;
        while id <= shape.table_size {
            let end = (id + 999).min(shape.table_size);
            let mut sql = format!("INSERT INTO {SCHEMA}.sbtest{t} (id, k, c, pad) VALUES ");
            for i in id..=end {
                if i > id {
                    sql.push(',');
                }
                sql.push_str(&format!("({i},{},'{:0>119}','{:0>59}')", i % 1000, i, i));
            }
            client.query(&sql).await?;
            id = end + 1;
        }
    }
    Ok(())
}
