//! An experiment, not part of concord: the least CPU a proxy built on
//! io_uring could spend per query on this machine. A plain TCP relay (no
//! MySQL parsing at all) on one thread: every completion is handled, then
//! all the sends and receives it led to go to the kernel in one
//! `io_uring_enter`, which also waits for the next completions.
//! `bench/sysbench-compare.sh` measures it beside concord and HAProxy
//! (`URING=1`): if even this relay does not spend less kernel time per
//! query than HAProxy, no user-space saving can bring a proxy below it.
//!
//!   uring_relay LISTEN_ADDR BACKEND_ADDR
#![allow(unsafe_code)] // submission entries point into buffers we own

#[cfg(target_os = "linux")]
fn main() -> std::io::Result<()> {
    relay::run()
}

#[cfg(not(target_os = "linux"))]
fn main() {
    eprintln!("uring_relay needs Linux (io_uring)");
    std::process::exit(2);
}

#[cfg(target_os = "linux")]
mod relay {
    use io_uring::{opcode, types, IoUring};
    use std::net::{Shutdown, TcpListener, TcpStream};
    use std::os::fd::{AsRawFd, FromRawFd};

    const BUF: usize = 64 * 1024;
    const ACCEPT: u64 = u64::MAX;
    const RECV: u64 = 0;
    const SEND: u64 = 1;

    /// One side of a relayed connection: its socket and the bytes last read
    /// from it, being written to the other side.
    struct Side {
        sock: TcpStream,
        buf: Box<[u8]>,
        len: usize,
        sent: usize,
    }

    struct Pair {
        sides: [Side; 2],
        open: bool,
        /// Operations submitted and not completed: the sockets and buffers
        /// live until this is 0.
        inflight: u32,
    }

    fn ud(idx: usize, op: u64, side: usize) -> u64 {
        ((idx as u64) << 2) | (op << 1) | side as u64
    }

    pub fn run() -> std::io::Result<()> {
        let args: Vec<String> = std::env::args().collect();
        let (Some(listen), Some(backend)) = (args.get(1), args.get(2)) else {
            eprintln!("usage: uring_relay LISTEN_ADDR BACKEND_ADDR");
            std::process::exit(2);
        };
        let listener = TcpListener::bind(listen)?;
        let mut ring = IoUring::new(4096)?;
        let mut pairs: Vec<Option<Pair>> = Vec::new();
        let mut todo: Vec<io_uring::squeue::Entry> = Vec::new();
        let mut done: Vec<(u64, i32)> = Vec::new();
        todo.push(accept(&listener));
        loop {
            for e in todo.drain(..) {
                // SAFETY: every entry points into a `Pair`'s boxed buffer and
                // socket, which are kept until its completion arrives.
                while unsafe { ring.submission().push(&e) }.is_err() {
                    ring.submit()?;
                }
            }
            ring.submit_and_wait(1)?;
            done.extend(ring.completion().map(|c| (c.user_data(), c.result())));
            for (u, res) in done.drain(..) {
                if u == ACCEPT {
                    if res >= 0 {
                        // SAFETY: a descriptor the kernel just gave us.
                        let client = unsafe { TcpStream::from_raw_fd(res) };
                        if let Ok(server) = TcpStream::connect(backend) {
                            let _ = client.set_nodelay(true);
                            let _ = server.set_nodelay(true);
                            let side = |sock| Side {
                                sock,
                                buf: vec![0u8; BUF].into_boxed_slice(),
                                len: 0,
                                sent: 0,
                            };
                            let idx = pairs.len();
                            let mut p = Pair {
                                sides: [side(client), side(server)],
                                open: true,
                                inflight: 2,
                            };
                            for s in 0..2 {
                                todo.push(recv(&mut p.sides[s], ud(idx, RECV, s)));
                            }
                            pairs.push(Some(p));
                        }
                    } else {
                        // Out of descriptors, say: do not spin on it.
                        eprintln!("accept: {}", std::io::Error::from_raw_os_error(-res));
                        std::thread::sleep(std::time::Duration::from_millis(100));
                    }
                    todo.push(accept(&listener));
                    continue;
                }
                let (idx, op, side) = ((u >> 2) as usize, (u >> 1) & 1, (u & 1) as usize);
                let Some(Some(p)) = pairs.get_mut(idx) else {
                    continue;
                };
                p.inflight -= 1;
                if p.open && res <= 0 {
                    p.open = false;
                    for s in &p.sides {
                        let _ = s.sock.shutdown(Shutdown::Both);
                    }
                }
                if !p.open {
                    if p.inflight == 0 {
                        pairs[idx] = None; // closes both sockets
                    }
                    continue;
                }
                let n = res as usize;
                let e = if op == RECV {
                    let from = &mut p.sides[side];
                    (from.len, from.sent) = (n, 0);
                    send(p, side, ud(idx, SEND, side))
                } else {
                    p.sides[side].sent += n;
                    if p.sides[side].sent < p.sides[side].len {
                        send(p, side, ud(idx, SEND, side))
                    } else {
                        recv(&mut p.sides[side], ud(idx, RECV, side))
                    }
                };
                p.inflight += 1;
                todo.push(e);
            }
        }
    }

    /// Takes the next connection.
    fn accept(l: &TcpListener) -> io_uring::squeue::Entry {
        opcode::Accept::new(
            types::Fd(l.as_raw_fd()),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
        )
        .build()
        .user_data(ACCEPT)
    }

    /// Reads into `s`'s buffer.
    fn recv(s: &mut Side, u: u64) -> io_uring::squeue::Entry {
        opcode::Recv::new(
            types::Fd(s.sock.as_raw_fd()),
            s.buf.as_mut_ptr(),
            BUF as u32,
        )
        .build()
        .user_data(u)
    }

    /// Writes what is left of side `from`'s bytes to the other side.
    fn send(p: &Pair, from: usize, u: u64) -> io_uring::squeue::Entry {
        let (src, dst) = (&p.sides[from], &p.sides[1 - from]);
        let rest = &src.buf[src.sent..src.len];
        opcode::Send::new(
            types::Fd(dst.sock.as_raw_fd()),
            rest.as_ptr(),
            rest.len() as u32,
        )
        .build()
        .user_data(u)
    }
}
