//! `ADD NODE n ADDRESS 'host:port'` and `REMOVE NODE n`: Raft membership.

use crate::admin::command::{err, Command, Ctx, Entry};
use crate::admin::Output;
use futures::future::BoxFuture;

#[derive(Debug, PartialEq, Eq)]
pub enum Membership {
    Add { id: u64, addr: String },
    Remove { id: u64 },
}

pub const ADD: Entry = Entry {
    words: &["ADD", "NODE"],
    syntax: "ADD NODE n ADDRESS 'host:port'",
    parse: |p| {
        let id = p.num("the node id")?;
        p.expect("ADDRESS")?;
        Ok(Box::new(Membership::Add {
            id,
            addr: p.string("the Raft address")?,
        }))
    },
};

pub const REMOVE: Entry = Entry {
    words: &["REMOVE", "NODE"],
    syntax: "REMOVE NODE n",
    parse: |p| {
        Ok(Box::new(Membership::Remove {
            id: p.num("the node id")?,
        }))
    },
};

impl Command for Membership {
    fn run<'a>(self: Box<Self>, cx: Ctx<'a>) -> BoxFuture<'a, Output> {
        Box::pin(async move {
            let c = &cx.shared.consensus;
            let (r, what) = match *self {
                Membership::Add { id, addr } => (c.add_node(id, addr).await, "ADD NODE"),
                Membership::Remove { id } => (c.remove_node(id).await, "REMOVE NODE"),
            };
            match r {
                Ok(m) => Output::Ok(m),
                Err(e) => err(format!("{what} failed: {e}")),
            }
        })
    }
}
