//! `SWITCHOVER TO 'x'`, `FAILOVER`, `REJOIN BACKEND 'x'`: the workflows
//! that move the primary, run on the Raft leader.

use crate::admin::command::{workflow, Command, Ctx, Entry};
use crate::admin::Output;
use concord_consensus::Workflow;
use futures::future::BoxFuture;

#[derive(Debug)]
pub struct Run(pub Workflow);

pub const SWITCHOVER: Entry = Entry {
    words: &["SWITCHOVER", "TO"],
    syntax: "SWITCHOVER TO 'x'",
    parse: |p| {
        Ok(Box::new(Run(Workflow::Switchover {
            to: p.string("the target backend")?,
        })))
    },
};

pub const FAILOVER: Entry = Entry {
    words: &["FAILOVER"],
    syntax: "FAILOVER",
    parse: |_| Ok(Box::new(Run(Workflow::Failover))),
};

pub const REJOIN: Entry = Entry {
    words: &["REJOIN", "BACKEND"],
    syntax: "REJOIN BACKEND 'x'",
    parse: |p| {
        Ok(Box::new(Run(Workflow::Rejoin {
            name: p.string("the backend name")?,
        })))
    },
};

impl Command for Run {
    fn run<'a>(self: Box<Self>, cx: Ctx<'a>) -> BoxFuture<'a, Output> {
        Box::pin(workflow(cx.shared, self.0))
    }
}
