//! `SHOW BACKENDS | CLUSTER | EVENTS [LIMIT n] | SESSIONS | RULES`: the
//! node's views (see `views`).

use crate::admin::command::{Command, Ctx, Entry};
use crate::admin::parse::P;
use crate::admin::{views, Output};
use futures::future::BoxFuture;

#[derive(Debug, PartialEq, Eq)]
pub enum Show {
    Backends,
    Cluster,
    Events { limit: usize },
    Sessions,
    Rules,
}

pub const BACKENDS: Entry = Entry {
    words: &["SHOW", "BACKENDS"],
    syntax: "SHOW BACKENDS",
    parse: |_| Ok(Box::new(Show::Backends)),
};
pub const CLUSTER: Entry = Entry {
    words: &["SHOW", "CLUSTER"],
    syntax: "SHOW CLUSTER",
    parse: |_| Ok(Box::new(Show::Cluster)),
};
pub const EVENTS: Entry = Entry {
    words: &["SHOW", "EVENTS"],
    syntax: "SHOW EVENTS [LIMIT n]",
    parse: |p| {
        let limit = if p.word("LIMIT") {
            p.num("LIMIT")? as usize
        } else {
            50
        };
        Ok(Box::new(Show::Events { limit }))
    },
};
pub const SESSIONS: Entry = Entry {
    words: &["SHOW", "SESSIONS"],
    syntax: "SHOW SESSIONS",
    parse: |_| Ok(Box::new(Show::Sessions)),
};
pub const RULES: Entry = Entry {
    words: &["SHOW", "RULES"],
    syntax: "SHOW RULES",
    parse: |_: &mut P| Ok(Box::new(Show::Rules)),
};

impl Command for Show {
    fn run<'a>(self: Box<Self>, cx: Ctx<'a>) -> BoxFuture<'a, Output> {
        Box::pin(async move {
            let s = cx.shared;
            Output::Table(match *self {
                Show::Backends => views::backends_table(s),
                Show::Cluster => views::cluster_table(s).await,
                Show::Events { limit } => views::events_table(s, limit),
                Show::Sessions => views::sessions_table(s),
                Show::Rules => views::rules_table(s),
            })
        })
    }
}
