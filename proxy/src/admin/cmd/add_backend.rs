//! `ADD BACKEND 'x' ADDRESS 'host:port' [WEIGHT n]`: a new replica.

use crate::admin::command::{err, propose, Command, Ctx, Entry};
use crate::admin::Output;
use concord_consensus::Op;
use futures::future::BoxFuture;

#[derive(Debug, PartialEq, Eq)]
pub struct AddBackend {
    pub name: String,
    pub addr: String,
    pub weight: u32,
}

pub const ENTRY: Entry = Entry {
    words: &["ADD", "BACKEND"],
    syntax: "ADD BACKEND 'x' ADDRESS 'host:port' [WEIGHT n]",
    parse: |p| {
        let name = p.string("the backend name")?;
        p.expect("ADDRESS")?;
        let addr = p.string("the address")?;
        let weight = if p.word("WEIGHT") {
            u32::try_from(p.num("WEIGHT")?).map_err(|_| "weight too large".to_string())?
        } else {
            100
        };
        Ok(Box::new(AddBackend { name, addr, weight }))
    },
};

impl Command for AddBackend {
    fn run<'a>(self: Box<Self>, cx: Ctx<'a>) -> BoxFuture<'a, Output> {
        Box::pin(async move {
            let AddBackend { name, addr, weight } = *self;
            if let Err(e) = concord_config::check_backend_addr(&addr) {
                return err(e);
            }
            propose(cx.shared, Op::AddBackend { name, addr, weight }).await
        })
    }
}
