//! `KILL SESSION n`: any session of the fleet, through the node holding it.

use crate::admin::command::{err, Command, Ctx, Entry};
use crate::admin::Output;
use futures::future::BoxFuture;

#[derive(Debug, PartialEq, Eq)]
pub struct KillSession {
    pub id: u64,
}

pub const ENTRY: Entry = Entry {
    words: &["KILL", "SESSION"],
    syntax: "KILL SESSION n",
    parse: |p| {
        Ok(Box::new(KillSession {
            id: p.num("the session id")?,
        }))
    },
};

impl Command for KillSession {
    fn run<'a>(self: Box<Self>, cx: Ctx<'a>) -> BoxFuture<'a, Output> {
        Box::pin(async move {
            let id = self.id;
            let admin = crate::session::kill::Killer {
                user: "the admin port".into(),
                admin: true,
            };
            match crate::session::kill::kill(cx.shared, id, false, &admin).await {
                Ok(()) => Output::Ok(format!("session {id} killed")),
                Err(_) => err(format!(
                    "no session {id} in the fleet (SHOW SESSIONS lists a node's sessions)"
                )),
            }
        })
    }
}
