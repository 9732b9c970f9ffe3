//! A TCP relay to put on any link (client→concord, concord→backend,
//! replica→primary, Raft) and break it on demand: cut (refuse and reset),
//! black-hole (accept, forward nothing), delay.

use std::collections::HashSet;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Mode {
    Pass = 0,
    /// Close every connection and refuse new ones.
    Cut = 1,
    /// Keep connections open but move no bytes.
    BlackHole = 2,
}

pub struct Relay {
    pub port: u16,
    mode: Arc<AtomicU8>,
    /// Source IPs whose connections are refused and closed.
    blocked: Arc<Mutex<HashSet<IpAddr>>>,
    delay_ms: Arc<AtomicU64>,
    changed: watch::Sender<u8>,
    task: tokio::task::JoinHandle<()>,
}

impl Relay {
    /// Listens on a free port and forwards to `target` (host:port).
    pub async fn start(target: &str) -> Relay {
        Self::start_on("127.0.0.1", target).await
    }

    /// Like [`Relay::start`], listening on a given loopback IP.
    pub async fn start_on(ip: &str, target: &str) -> Relay {
        let listener = TcpListener::bind((ip, 0)).await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let mode = Arc::new(AtomicU8::new(Mode::Pass as u8));
        let delay_ms = Arc::new(AtomicU64::new(0));
        let (tx, rx) = watch::channel(0u8);
        let target = target.to_string();
        let blocked: Arc<Mutex<HashSet<IpAddr>>> = Arc::default();
        let (m, d, bl) = (mode.clone(), delay_ms.clone(), blocked.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((inbound, from)) = listener.accept().await else {
                    continue;
                };
                if m.load(Ordering::SeqCst) == Mode::Cut as u8
                    || bl.lock().unwrap().contains(&from.ip())
                {
                    drop(inbound);
                    continue;
                }
                let target = target.clone();
                let (m, d, rx) = (m.clone(), d.clone(), rx.clone());
                let bl = bl.clone();
                let src = from.ip();
                tokio::spawn(async move {
                    let Ok(outbound) = TcpStream::connect(&target).await else {
                        return;
                    };
                    let _ = inbound.set_nodelay(true);
                    let _ = outbound.set_nodelay(true);
                    let (ri, wi) = inbound.into_split();
                    let (ro, wo) = outbound.into_split();
                    let a = pipe(ri, wo, m.clone(), d.clone(), rx.clone(), (bl.clone(), src));
                    let b = pipe(ro, wi, m, d, rx, (bl, src));
                    tokio::select! { _ = a => {}, _ = b => {} }
                });
            }
        });
        Relay {
            port,
            mode,
            blocked,
            delay_ms,
            changed: tx,
            task,
        }
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn set(&self, mode: Mode) {
        self.mode.store(mode as u8, Ordering::SeqCst);
        let _ = self.changed.send(mode as u8);
    }

    pub fn cut(&self) {
        self.set(Mode::Cut);
    }

    pub fn black_hole(&self) {
        self.set(Mode::BlackHole);
    }

    pub fn heal(&self) {
        self.set(Mode::Pass);
    }

    /// Refuses and closes connections coming from `ip`.
    pub fn block_from(&self, ip: &str) {
        self.blocked.lock().unwrap().insert(ip.parse().unwrap());
        let _ = self.changed.send(self.mode.load(Ordering::SeqCst));
    }

    pub fn unblock_from(&self, ip: &str) {
        self.blocked
            .lock()
            .unwrap()
            .remove(&ip.parse::<IpAddr>().unwrap());
        let _ = self.changed.send(self.mode.load(Ordering::SeqCst));
    }

    pub fn delay(&self, d: Duration) {
        self.delay_ms.store(d.as_millis() as u64, Ordering::SeqCst);
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

type Source = (Arc<Mutex<HashSet<IpAddr>>>, IpAddr);

async fn pipe(
    mut r: tokio::net::tcp::OwnedReadHalf,
    mut w: tokio::net::tcp::OwnedWriteHalf,
    mode: Arc<AtomicU8>,
    delay: Arc<AtomicU64>,
    mut changed: watch::Receiver<u8>,
    (blocked, src): Source,
) {
    let mut buf = vec![0u8; 64 * 1024];
    let cut = |mode: &AtomicU8| {
        mode.load(Ordering::SeqCst) == Mode::Cut as u8 || blocked.lock().unwrap().contains(&src)
    };
    loop {
        let n = tokio::select! {
            r = r.read(&mut buf) => match r { Ok(0) | Err(_) => return, Ok(n) => n },
            _ = changed.changed() => {
                if cut(&mode) { return; }
                continue;
            }
        };
        if cut(&mode) {
            return;
        }
        loop {
            match mode.load(Ordering::SeqCst) {
                m if m == Mode::Cut as u8 => return,
                m if m == Mode::BlackHole as u8 => {
                    // Hold the bytes until healed or cut.
                    if changed.changed().await.is_err() {
                        return;
                    }
                    continue;
                }
                _ => break,
            }
        }
        let d = delay.load(Ordering::SeqCst);
        if d > 0 {
            tokio::time::sleep(Duration::from_millis(d)).await;
        }
        if w.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}
