//! GTID positions in both dialects, and the one question routing asks of
//! them: has this server applied that transaction?
//!
//! MariaDB: `domain-server-seq` lists, one entry per domain; sequence
//! numbers grow per domain. MySQL: `uuid:1-5:7,uuid2:1-3` interval sets.

/// The statement that waits up to `secs` until a server has applied `pos`
/// (it answers 0 when it has), in MariaDB's or MySQL's dialect.
pub fn wait_sql(mariadb: bool, pos: &str, secs: f64) -> String {
    if mariadb {
        format!("SELECT MASTER_GTID_WAIT('{pos}', {secs})")
    } else {
        format!("SELECT WAIT_FOR_EXECUTED_GTID_SET('{pos}', {secs})")
    }
}

/// True when position `pos` includes transaction `gtid` (a single GTID
/// or a whole position/set, e.g. a primary's position).
pub fn covers(pos: &str, gtid: &str) -> bool {
    let gtid = gtid.trim();
    if gtid.is_empty() {
        return true;
    }
    if is_mysql(gtid) || is_mysql(pos) {
        return mysql_covers(pos, gtid);
    }
    let have = mariadb_parse(pos);
    mariadb_parse(gtid)
        .iter()
        .all(|(d, seq)| have.iter().any(|(hd, hs)| hd == d && hs >= seq))
}

/// The transactions in `want` that `have` lacks, as text, and how many;
/// `None` when `have` covers `want`. Used to report what a promotion could
/// not carry over.
pub fn missing(have: &str, want: &str) -> Option<(String, u64)> {
    if covers(have, want) {
        return None;
    }
    if is_mysql(want) || is_mysql(have) {
        let have = mysql_parse(have);
        let mut parts = Vec::new();
        let mut count = 0u64;
        for (uuid, ivs) in mysql_parse(want) {
            let held: Vec<(u64, u64)> = have
                .iter()
                .find(|(u, _)| *u == uuid)
                .map(|(_, h)| h.clone())
                .unwrap_or_default();
            for (a, b) in ivs {
                for n in a..=b.min(a.saturating_add(1_000_000)) {
                    if !held.iter().any(|(ha, hb)| *ha <= n && n <= *hb) {
                        count += 1;
                        if parts.len() < 20 {
                            parts.push(format!("{uuid}:{n}"));
                        }
                    }
                }
            }
        }
        return Some((parts.join(","), count));
    }
    Some(mariadb_missing(have, want, false))
}

/// MariaDB: the ranges of `want` beyond what `have` holds, per domain, or
/// per (domain, server id) when `same_server`; and their count.
fn mariadb_missing(have: &str, want: &str, same_server: bool) -> (String, u64) {
    let have = mariadb_parse_full(have);
    let mut parts = Vec::new();
    let mut count = 0u64;
    for (d, s, seq) in mariadb_parse_full(want) {
        let got = have
            .iter()
            .filter(|(hd, hs, _)| *hd == d && (!same_server || *hs == s))
            .map(|(_, _, q)| *q)
            .max()
            .unwrap_or(0);
        if seq > got {
            count += seq - got;
            parts.push(if seq == got + 1 {
                format!("{d}-{s}-{seq}")
            } else {
                format!("{d}-{s}-{}..{d}-{s}-{seq}", got + 1)
            });
        }
    }
    (parts.join(","), count)
}

/// Like [`missing`], matching (domain, server id) exactly: the
/// transactions of `want` (a `gtid_binlog_state`) that `have` (another
/// server's state) lacks.
pub fn missing_exact(have: &str, want: &str) -> Option<(String, u64)> {
    if is_mysql(want) || is_mysql(have) {
        return missing(have, want);
    }
    let (parts, count) = mariadb_missing(have, want, true);
    (count > 0).then_some((parts, count))
}

/// MariaDB: whether the GTID state `have` holds every (domain, server,
/// sequence) of `want` exactly, server id included (`covers` compares
/// sequence numbers per domain only, so an errant `0-1-101` would pass as
/// covered by `0-2-500`). Both are `gtid_binlog_state`-like lists with one
/// entry per (domain, server). MySQL sets are exact already.
pub fn covers_exact(have: &str, want: &str) -> bool {
    if is_mysql(want) || is_mysql(have) {
        return mysql_covers(have, want);
    }
    let have = mariadb_parse_full(have);
    mariadb_parse_full(want).iter().all(|(d, s, seq)| {
        have.iter()
            .any(|(hd, hs, hseq)| hd == d && hs == s && hseq >= seq)
    })
}

/// (domain, server, seq) per entry.
fn mariadb_parse_full(s: &str) -> Vec<(u32, u64, u64)> {
    s.split(',')
        .filter_map(|g| {
            let mut it = g.trim().split('-');
            let d = it.next()?.parse().ok()?;
            let server = it.next()?.parse().ok()?;
            let seq = it.next()?.parse().ok()?;
            Some((d, server, seq))
        })
        .collect()
}

fn is_mysql(s: &str) -> bool {
    s.contains(':')
}

/// (domain, seq) per domain.
fn mariadb_parse(s: &str) -> Vec<(u32, u64)> {
    s.split(',')
        .filter_map(|g| {
            let mut it = g.trim().split('-');
            let d = it.next()?.parse().ok()?;
            let _server: u64 = it.next()?.parse().ok()?;
            let seq = it.next()?.parse().ok()?;
            Some((d, seq))
        })
        .collect()
}

/// uuid -> intervals.
fn mysql_parse(s: &str) -> Vec<(String, Vec<(u64, u64)>)> {
    s.split(',')
        .filter_map(|part| {
            let mut it = part.trim().split(':');
            let uuid = it.next()?.trim().to_ascii_lowercase();
            if uuid.is_empty() {
                return None;
            }
            let ivs = it
                .filter_map(|iv| {
                    let (a, b) = match iv.split_once('-') {
                        Some((a, b)) => (a.parse().ok()?, b.parse().ok()?),
                        None => {
                            let n = iv.parse().ok()?;
                            (n, n)
                        }
                    };
                    Some((a, b))
                })
                .collect();
            Some((uuid, ivs))
        })
        .collect()
}

fn mysql_covers(pos: &str, want: &str) -> bool {
    let have = mysql_parse(pos);
    mysql_parse(want).iter().all(|(uuid, ivs)| {
        let Some((_, h)) = have.iter().find(|(u, _)| u == uuid) else {
            return false;
        };
        ivs.iter().all(|(a, b)| {
            // every number in [a, b] must be inside some held interval
            let mut next = *a;
            let mut held = h.clone();
            held.sort();
            for (ha, hb) in held {
                if ha <= next && hb >= next {
                    next = hb.saturating_add(1);
                }
                if next > *b {
                    return true;
                }
            }
            next > *b
        })
    })
}

#[cfg(test)]
mod tests {
    use super::covers;

    #[test]
    fn mariadb_positions() {
        assert!(covers("0-1-100", "0-1-99"));
        assert!(
            covers("0-1-100", "0-2-100"),
            "seq grows per domain, whatever the server"
        );
        assert!(!covers("0-1-100", "0-1-101"));
        assert!(covers("0-1-5,1-3-7", "1-3-7"));
        assert!(!covers("0-1-5", "1-3-1"), "unknown domain");
        assert!(covers("0-1-5", ""));
        assert!(covers("0-1-10,1-1-4", "0-1-9,1-1-4"));
        assert!(!covers("", "0-1-1"));
    }

    #[test]
    fn exact_tuples_and_what_is_missing() {
        use super::{covers_exact, missing, missing_exact};
        // Errant 0-1-101 on the old primary: the new primary has server
        // 1's transactions up to 100 and its own up to 500.
        assert!(
            covers("0-2-500", "0-1-101"),
            "per-domain comparison misses it"
        );
        assert!(!covers_exact("0-1-100,0-2-500", "0-1-101"));
        assert!(covers_exact("0-1-100,0-2-500", "0-1-100"));
        assert!(!covers_exact("0-2-500", "0-1-1"), "a server never seen");
        assert_eq!(missing("0-1-100", "0-1-100"), None);
        assert_eq!(
            missing("0-1-97", "0-1-100"),
            Some(("0-1-98..0-1-100".into(), 3))
        );
        assert_eq!(missing("", "0-1-1"), Some(("0-1-1".into(), 1)));
        // Per domain, 0-2-500 covers 0-1-101; per server it does not.
        assert_eq!(missing("0-2-500", "0-1-101"), None);
        assert_eq!(
            missing_exact("0-1-99,0-2-500", "0-1-101"),
            Some(("0-1-100..0-1-101".into(), 2))
        );
        assert_eq!(missing_exact("0-1-101,0-2-500", "0-1-101"), None);
        assert_eq!(
            missing("aaaa:1-3", "aaaa:1-5"),
            Some(("aaaa:4,aaaa:5".into(), 2))
        );
        // The old primary wrote 0-1-101..103; the new one replicated up to
        // 0-1-100 and wrote its own past them.
        assert_eq!(
            super::missing_exact("0-1-100,0-2-500", "0-1-103"),
            Some(("0-1-101..0-1-103".into(), 3))
        );
        assert_eq!(super::missing_exact("0-1-103,0-2-500", "0-1-103"), None);
    }

    #[test]
    fn mysql_sets() {
        let pos = "3E11FA47-71CA-11E1-9E33-C80AA9429562:1-5:7-9,aaaa:1-3";
        assert!(covers(pos, "3e11fa47-71ca-11e1-9e33-c80aa9429562:4"));
        assert!(covers(pos, "3E11FA47-71CA-11E1-9E33-C80AA9429562:8-9"));
        assert!(!covers(pos, "3E11FA47-71CA-11E1-9E33-C80AA9429562:6"));
        assert!(!covers(pos, "bbbb:1"));
        assert!(covers(pos, "aaaa:1-3"));
    }
}
