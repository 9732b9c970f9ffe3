//! `SHOW CONCORD [FLEET] DIGESTS [ORDER BY col [ASC|DESC]] [LIMIT n]` and
//! `RESET CONCORD DIGESTS`.

use crate::admin::command::{err, Command, Ctx, Entry};
use crate::admin::parse::P;
use crate::admin::{fleet_digests, views, Output};
use futures::future::BoxFuture;

#[derive(Debug, PartialEq, Eq)]
pub struct ShowDigests {
    pub order: String,
    pub desc: bool,
    pub limit: usize,
    /// Every node's table, merged.
    pub fleet: bool,
}

pub const SHOW: Entry = Entry {
    words: &["SHOW", "CONCORD"],
    syntax: "SHOW CONCORD [FLEET] DIGESTS [ORDER BY col [ASC|DESC]] [LIMIT n]",
    parse: parse_show,
};

fn parse_show(p: &mut P) -> Result<Box<dyn Command>, String> {
    let fleet = p.word("FLEET");
    p.expect("DIGESTS")?;
    let (order, desc) = if p.word("ORDER") {
        p.expect("BY")?;
        let col = p.string("a column")?;
        if !views::DIGEST_ORDER.contains(&col.as_str()) {
            return Err(format!(
                "ORDER BY one of {}",
                views::DIGEST_ORDER.join(", ")
            ));
        }
        let desc = !p.word("ASC");
        if desc {
            p.word("DESC");
        }
        (col, desc)
    } else {
        ("total_us".to_string(), true)
    };
    let limit = if p.word("LIMIT") {
        p.num("LIMIT")? as usize
    } else {
        20
    };
    Ok(Box::new(ShowDigests {
        order,
        desc,
        limit,
        fleet,
    }))
}

impl Command for ShowDigests {
    fn run<'a>(self: Box<Self>, cx: Ctx<'a>) -> BoxFuture<'a, Output> {
        Box::pin(async move {
            let (order, desc, limit) = (self.order.as_str(), self.desc, self.limit);
            if !self.fleet {
                return Output::Table(views::digests_table(cx.shared, order, desc, limit));
            }
            match fleet_digests::merged(cx.shared, order, desc, limit).await {
                Ok(rows) => Output::Table(views::digest_rows(
                    rows.iter().map(|m| (&m.row, Some(m.nodes))),
                )),
                Err(e) => err(e),
            }
        })
    }
}

#[derive(Debug, PartialEq, Eq)]
pub struct ResetDigests;

pub const RESET: Entry = Entry {
    words: &["RESET", "CONCORD", "DIGESTS"],
    syntax: "RESET CONCORD DIGESTS",
    parse: |_| Ok(Box::new(ResetDigests)),
};

impl Command for ResetDigests {
    fn run<'a>(self: Box<Self>, cx: Ctx<'a>) -> BoxFuture<'a, Output> {
        Box::pin(async move {
            let s = cx.shared;
            let cfg = s.config.load();
            s.digests
                .reset(cfg.digests.max_memory.get(), cfg.digests.max_text as usize);
            Output::Ok(format!(
                "digests reset ({} rows at most)",
                s.digests.capacity()
            ))
        })
    }
}
