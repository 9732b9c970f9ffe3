//! `UNDRAIN BACKEND 'x'`: back into rotation.

use crate::admin::command::{propose, Command, Ctx, Entry};
use crate::admin::Output;
use concord_consensus::{BackendState, Op};
use futures::future::BoxFuture;

#[derive(Debug, PartialEq, Eq)]
pub struct Undrain {
    pub name: String,
}

pub const ENTRY: Entry = Entry {
    words: &["UNDRAIN", "BACKEND"],
    syntax: "UNDRAIN BACKEND 'x'",
    parse: |p| {
        Ok(Box::new(Undrain {
            name: p.string("the backend name")?,
        }))
    },
};

impl Command for Undrain {
    fn run<'a>(self: Box<Self>, cx: Ctx<'a>) -> BoxFuture<'a, Output> {
        let op = Op::SetState {
            name: self.name,
            state: BackendState::Active,
        };
        Box::pin(propose(cx.shared, op))
    }
}
