//! The HTTP endpoint: `/healthz`, `/readyz`, `/metrics` and JSON mirrors of
//! the admin SHOW commands under `/api/v1/`. A deliberately small
//! HTTP/1.1 responder (GET only, one request per connection, bounded
//! request size and time): enough for load balancers, Prometheus and curl.

use crate::shared::Shared;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const MAX_REQUEST: usize = 8192;

pub async fn serve(shared: Arc<Shared>, listener: TcpListener) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            let _ = tokio::time::timeout(Duration::from_secs(10), handle(shared, stream)).await;
        });
    }
}

async fn handle(shared: Arc<Shared>, mut s: TcpStream) -> std::io::Result<()> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = s.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
        if buf.len() > MAX_REQUEST {
            return respond(&mut s, 431, "text/plain", "request header too large\n").await;
        }
    }
    let line = buf.split(|&b| b == b'\r').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let mut parts = line.split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    if method != "GET" && method != "HEAD" {
        return respond(&mut s, 405, "text/plain", "only GET\n").await;
    }
    let path = target.split('?').next().unwrap_or("");
    let (code, ctype, body) = route(&shared, path).await;
    respond(&mut s, code, ctype, &body).await
}

async fn route(shared: &Arc<Shared>, path: &str) -> (u16, &'static str, String) {
    match path {
        "/healthz" => (200, "text/plain", "ok\n".into()),
        "/readyz" => {
            // What the backends' replication settings put at risk: detail,
            // not a reason to stop routing.
            let mut detail = String::new();
            for (name, h) in shared.routing.load().health.backends.iter() {
                for f in &h.preflight {
                    detail.push_str(&format!("preflight {name}: {f}\n"));
                }
            }
            match shared.write_block_reason() {
                None => (200, "text/plain", format!("ready\n{detail}")),
                Some(why) => (503, "text/plain", format!("not ready: {why}\n{detail}")),
            }
        }
        "/metrics" => (
            200,
            "text/plain; version=0.0.4",
            crate::metrics::render(shared),
        ),
        "/api/v1/cluster" => json(crate::admin::views::cluster(shared).await),
        "/api/v1/backends" => json(crate::admin::views::backends(shared)),
        "/api/v1/events" => json(crate::admin::views::events(shared, 100)),
        "/api/v1/sessions" => json(crate::admin::views::sessions(shared)),
        "/api/v1/digests" => {
            json(crate::admin::views::digests_table(shared, "total_us", true, 100).to_json())
        }
        _ => (404, "text/plain", "not found\n".into()),
    }
}

fn json(v: serde_json::Value) -> (u16, &'static str, String) {
    (200, "application/json", format!("{v:#}\n"))
}

async fn respond(s: &mut TcpStream, code: u16, ctype: &str, body: &str) -> std::io::Result<()> {
    let reason = match code {
        200 => "OK",
        404 => "Not Found",
        405 => "Method Not Allowed",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        _ => "Error",
    };
    let head = format!(
        "HTTP/1.1 {code} {reason}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).await?;
    s.write_all(body.as_bytes()).await?;
    s.shutdown().await
}
