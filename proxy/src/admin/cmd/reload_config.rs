//! `RELOAD CONFIG`: the file again, swapped in place (or refused whole).

use crate::admin::command::{err, Command, Ctx, Entry};
use crate::admin::Output;
use futures::future::BoxFuture;

#[derive(Debug, PartialEq, Eq)]
pub struct ReloadConfig;

pub const ENTRY: Entry = Entry {
    words: &["RELOAD", "CONFIG"],
    syntax: "RELOAD CONFIG",
    parse: |_| Ok(Box::new(ReloadConfig)),
};

impl Command for ReloadConfig {
    fn run<'a>(self: Box<Self>, cx: Ctx<'a>) -> BoxFuture<'a, Output> {
        Box::pin(async move {
            match crate::reload::reload(cx.shared, cx.config_path).await {
                Ok(msg) => Output::Ok(msg),
                Err(e) => err(format!(
                    "RELOAD CONFIG refused, the running config stays: {e}"
                )),
            }
        })
    }
}
