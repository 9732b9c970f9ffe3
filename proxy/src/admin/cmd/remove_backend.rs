//! `REMOVE BACKEND 'x'` (not the primary: switch over first).

use crate::admin::command::{propose, Command, Ctx, Entry};
use crate::admin::Output;
use concord_consensus::Op;
use futures::future::BoxFuture;

#[derive(Debug, PartialEq, Eq)]
pub struct RemoveBackend {
    pub name: String,
}

pub const ENTRY: Entry = Entry {
    words: &["REMOVE", "BACKEND"],
    syntax: "REMOVE BACKEND 'x'",
    parse: |p| {
        Ok(Box::new(RemoveBackend {
            name: p.string("the backend name")?,
        }))
    },
};

impl Command for RemoveBackend {
    fn run<'a>(self: Box<Self>, cx: Ctx<'a>) -> BoxFuture<'a, Output> {
        Box::pin(propose(cx.shared, Op::RemoveBackend { name: self.name }))
    }
}
