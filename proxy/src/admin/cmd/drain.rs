//! `DRAIN BACKEND 'x' [TIMEOUT '30s']`: no new work for the backend, then
//! wait (on the leader, which hears every node's connection counts) until
//! no node holds a connection to it; sessions move at their next
//! transaction boundary.

use crate::admin::command::{err, propose, Command, Ctx, Entry};
use crate::admin::Output;
use concord_consensus::{BackendState, Op, Workflow};
use futures::future::BoxFuture;
use std::time::Duration;

#[derive(Debug, PartialEq, Eq)]
pub struct Drain {
    pub name: String,
    pub timeout: Duration,
}

pub const ENTRY: Entry = Entry {
    words: &["DRAIN", "BACKEND"],
    syntax: "DRAIN BACKEND 'x' [TIMEOUT '30s']",
    parse: |p| {
        let name = p.string("the backend name")?;
        let timeout = if p.word("TIMEOUT") {
            let t = p.string("the timeout")?;
            t.parse::<concord_config::Duration>()?.get()
        } else {
            Duration::from_secs(30)
        };
        Ok(Box::new(Drain { name, timeout }))
    },
};

impl Command for Drain {
    fn run<'a>(self: Box<Self>, cx: Ctx<'a>) -> BoxFuture<'a, Output> {
        Box::pin(async move {
            let Drain { name, timeout } = *self;
            let shared = cx.shared;
            if shared.routing.load().pool(&name).is_none() {
                return err(format!(
                    "unknown backend '{name}' (SHOW BACKENDS lists them)"
                ));
            }
            let state = BackendState::Draining;
            if let Output::Err(e) = propose(
                shared,
                Op::SetState {
                    name: name.clone(),
                    state,
                },
            )
            .await
            {
                return Output::Err(e);
            }
            let w = Workflow::Drain {
                name,
                timeout_ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
            };
            crate::admin::command::workflow(shared, w).await
        })
    }
}
