//! What clients send on their own at connect (`SET NAMES`, `SELECT
//! DATABASE()`, `SELECT @@version_comment`, ...): answered so that any
//! `mysql`/`mariadb` client and driver can use the admin port.

use crate::admin::command::{Command, Ctx};
use crate::admin::views::Table;
use crate::admin::Output;
use concord_protocol::column::Column;
use futures::future::BoxFuture;

#[derive(Debug, PartialEq, Eq)]
pub enum Noise {
    /// An empty OK.
    Ok,
    /// One row of named values (NULL for unknown variables).
    Row(Vec<(String, Option<String>)>),
}

impl Command for Noise {
    fn run<'a>(self: Box<Self>, _: Ctx<'a>) -> BoxFuture<'a, Output> {
        Box::pin(async move {
            match *self {
                Noise::Ok => Output::Ok(String::new()),
                Noise::Row(vals) => Output::Table(Table {
                    columns: vals.iter().map(|(n, _)| Column::str(n)).collect(),
                    rows: vec![vals.into_iter().map(|(_, v)| v).collect()],
                }),
            }
        })
    }
}
