//! The freeze gate: a node frozen like a JVM stopped by SIGSTOP or a full GC. The kernel still
//! takes its connections, but nothing in the process moves: no accept, no request read, no
//! response head, no further body bytes. Everything goes on where it stopped once it thaws.
//!
//! The gate is a `watch` channel holding the instant the freeze ends. Waiters sleep until that
//! instant on tokio's clock (so a timed thaw happens under paused time too) or until the value
//! changes (a new freeze, an early thaw): nobody polls, and no task is spawned to thaw.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::sync::watch;
use tokio::time::Instant;

use super::SimBody;

/// Whether the node is frozen, and until when.
pub(super) struct Freeze {
    /// Frozen until then (`None`, or an instant passed: thawed).
    until: watch::Sender<Option<Instant>>,
    count: AtomicU64,
}

/// Frozen while `until` is ahead of tokio's clock.
fn frozen_at(until: Option<Instant>) -> bool {
    until.is_some_and(|until| Instant::now() < until)
}

impl Freeze {
    pub(super) fn new() -> Self {
        Freeze {
            until: watch::Sender::new(None),
            count: AtomicU64::new(0),
        }
    }

    /// Freezes from now for `for_`, replacing any freeze under way (its end included).
    pub(super) fn start(&self, for_: Duration) {
        let now = Instant::now();
        // As tokio::time::sleep does for a duration too long to add: about 30 years.
        let far = || now + Duration::from_secs(86_400 * 365 * 30);
        let until = now.checked_add(for_).unwrap_or_else(far);
        self.count.fetch_add(1, Ordering::Relaxed);
        self.until.send_replace(Some(until));
    }

    /// Ends the freeze now (nothing if the node is not frozen).
    pub(super) fn end(&self) {
        self.until.send_if_modified(|until| until.take().is_some());
    }

    pub(super) fn is_on(&self) -> bool {
        frozen_at(*self.until.borrow())
    }

    /// Freezes started so far.
    pub(super) fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    pub(super) fn reset_count(&self) {
        self.count.store(0, Ordering::Relaxed);
    }

    /// Resolves once the node is not frozen: at once if it is not.
    pub(super) fn thawed(&self) -> impl Future<Output = ()> + Send + Sync + 'static {
        thawed(self.until.subscribe())
    }

    /// Resolves once a freeze begins: at once if one is under way.
    pub(super) fn begun(&self) -> impl Future<Output = ()> + Send + Sync + 'static {
        let mut until = self.until.subscribe();
        async move {
            // A frozen instant that passes changes nothing in the channel: only a new value
            // can start a freeze, so waiting for changes misses none.
            if until.wait_for(|until| frozen_at(*until)).await.is_err() {
                // The node is gone: no freeze will ever begin.
                std::future::pending::<()>().await;
            }
        }
    }

    /// `body`, made to wait for the thaw before each of its frames.
    pub(super) fn gate(&self, body: SimBody) -> Gated {
        Gated {
            inner: body,
            until: self.until.subscribe(),
            waiting: None,
        }
    }
}

/// Waits out every freeze seen on `until`: sleeping to its end, or to a change of it.
async fn thawed(mut until: watch::Receiver<Option<Instant>>) {
    loop {
        let end = match *until.borrow_and_update() {
            Some(end) if Instant::now() < end => end,
            _ => return,
        };
        tokio::select! {
            changed = until.changed() => {
                if changed.is_err() {
                    // The node is gone: nothing will ever freeze it again.
                    return;
                }
            }
            () = tokio::time::sleep_until(end) => {}
        }
    }
}

/// A response body that produces nothing while the node is frozen: a response already
/// streaming stops mid-way (between two frames) and goes on after the thaw.
pub(super) struct Gated {
    inner: SimBody,
    until: watch::Receiver<Option<Instant>>,
    /// The thaw being waited for, if a freeze caught the body.
    waiting: Option<Pin<Box<dyn Future<Output = ()> + Send + Sync>>>,
}

impl Body for Gated {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        loop {
            if let Some(waiting) = this.waiting.as_mut() {
                ready!(waiting.as_mut().poll(cx));
                this.waiting = None;
            }
            if !frozen_at(*this.until.borrow()) {
                break;
            }
            this.waiting = Some(Box::pin(thawed(this.until.clone())));
        }
        Pin::new(&mut this.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
