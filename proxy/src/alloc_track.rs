//! Which heap allocations a session makes: a thread-local flag is set
//! while a session's future is polled, so a counting global allocator (in
//! a test binary, `proxy/tests/allocations.rs`) can count exactly the
//! allocations client sessions cause and nothing of the rest of the
//! process. The production binary keeps the system allocator; what is left
//! here costs two thread-local writes per poll.

use std::cell::Cell;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

thread_local! {
    static IN_SESSION: Cell<bool> = const { Cell::new(false) };
}

/// A session's future is being polled on this thread.
pub fn in_session() -> bool {
    IN_SESSION.with(Cell::get)
}

/// Marks the polls of `F` as a session's (boxed once, at spawn, as
/// `tokio::spawn` would anyway).
pub struct Tracked<F>(Pin<Box<F>>);

impl<F: Future> Tracked<F> {
    pub fn new(f: F) -> Self {
        Tracked(Box::pin(f))
    }
}

impl<F: Future> Future for Tracked<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let was = IN_SESSION.with(|f| f.replace(true));
        let r = self.0.as_mut().poll(cx);
        IN_SESSION.with(|f| f.set(was));
        r
    }
}
