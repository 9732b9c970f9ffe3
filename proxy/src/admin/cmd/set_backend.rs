//! `SET BACKEND 'x' WEIGHT n` and `SET BACKEND 'x' MAINTENANCE ON|OFF`.

use crate::admin::command::{propose, Command, Ctx, Entry};
use crate::admin::Output;
use concord_consensus::{BackendState, Op};
use futures::future::BoxFuture;

#[derive(Debug, PartialEq, Eq)]
pub enum SetBackend {
    Weight { name: String, weight: u32 },
    Maintenance { name: String, on: bool },
}

pub const ENTRY: Entry = Entry {
    words: &["SET", "BACKEND"],
    syntax: "SET BACKEND 'x' WEIGHT n | SET BACKEND 'x' MAINTENANCE ON|OFF",
    parse: |p| {
        let name = p.string("the backend name")?;
        if p.word("WEIGHT") {
            let w = p.num("WEIGHT")?;
            let weight = u32::try_from(w).map_err(|_| "weight too large".to_string())?;
            Ok(Box::new(SetBackend::Weight { name, weight }))
        } else if p.word("MAINTENANCE") {
            let on = if p.word("ON") {
                true
            } else if p.word("OFF") {
                false
            } else {
                return Err("MAINTENANCE ON or OFF".into());
            };
            Ok(Box::new(SetBackend::Maintenance { name, on }))
        } else {
            Err("SET BACKEND 'x' WEIGHT n or MAINTENANCE ON|OFF".into())
        }
    },
};

impl Command for SetBackend {
    fn run<'a>(self: Box<Self>, cx: Ctx<'a>) -> BoxFuture<'a, Output> {
        let op = match *self {
            SetBackend::Weight { name, weight } => Op::SetWeight { name, weight },
            SetBackend::Maintenance { name, on } => Op::SetState {
                name,
                state: if on {
                    BackendState::Maintenance
                } else {
                    BackendState::Active
                },
            },
        };
        Box::pin(propose(cx.shared, op))
    }
}
