//! Request bodies on their way to a node: the look-ahead replayed first, then the rest streamed,
//! with an idle timeout and a size limit; lent to one attempt and given back if the attempt never
//! read it. (The response side is [`crate::response`].)

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use tokio::sync::oneshot;
use tokio::time::Sleep;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Why a request body did not reach the node whole, by the client's doing: never the node's fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BodyError {
    #[error("no body data for {0:?}")]
    Idle(Duration),
    #[error("the request body is larger than limits.max_body ({0} bytes)")]
    TooLarge(u64),
    /// The client's body broke: the client went away, or its framing was invalid.
    #[error("the request body broke: {0}")]
    Client(String),
}

/// How a request body's upload goes, watched by [`await_response`]: the node must keep reading it,
/// and the response-headers timer starts only once it is sent whole.
#[derive(Debug)]
pub struct Upload {
    started: tokio::time::Instant,
    /// Sent whole (or there was none).
    done: AtomicBool,
    /// Waiting for the client to send more (the body's own idle timer runs).
    waiting: AtomicBool,
    /// When the body last moved (or was sent whole), in ms since `started`.
    moved_ms: AtomicU64,
    notify: tokio::sync::Notify,
}

impl Upload {
    pub fn new() -> Arc<Upload> {
        Arc::new(Upload {
            started: tokio::time::Instant::now(),
            done: AtomicBool::new(false),
            waiting: AtomicBool::new(false),
            moved_ms: AtomicU64::new(0),
            notify: tokio::sync::Notify::new(),
        })
    }

    fn moved(&self) {
        let ms = self.started.elapsed().as_millis() as u64;
        self.moved_ms.store(ms, Ordering::Relaxed);
    }

    fn finished(&self) {
        self.moved();
        self.done.store(true, Ordering::Release);
        self.notify.notify_one();
    }

    fn moved_at(&self) -> tokio::time::Instant {
        self.started + Duration::from_millis(self.moved_ms.load(Ordering::Relaxed))
    }
}

/// Why the node did not answer in time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stall {
    /// No response headers within the headers timeout once the body was sent.
    Headers,
    /// The node stopped reading the request body for the idle timeout.
    Upload,
}

/// Waits for the node's response: while the body is sent, the node must take some of it at least
/// every `idle` (a client that is slow to send is the body's own idle timer's business); once it is
/// sent whole (or when there is none: `upload` is `None`), the headers must come within `headers`.
pub async fn await_response<F: Future>(
    mut response: Pin<&mut F>,
    upload: Option<&Upload>,
    headers: Duration,
    idle: Duration,
) -> Result<F::Output, Stall> {
    let started = tokio::time::Instant::now();
    // The response pinned by the caller (held once), and one timer re-armed as the upload moves.
    let timer = tokio::time::sleep_until(started + headers);
    tokio::pin!(timer);
    loop {
        let deadline = match upload {
            None => started + headers,
            Some(u) if u.done.load(Ordering::Acquire) => u.moved_at() + headers,
            Some(u) => {
                let deadline = u.moved_at() + idle;
                let now = tokio::time::Instant::now();
                // Waiting for the client: look again later rather than spin.
                if deadline <= now && u.waiting.load(Ordering::Relaxed) {
                    now + idle
                } else {
                    deadline
                }
            }
        };
        if timer.deadline() != deadline {
            timer.as_mut().reset(deadline);
        }
        let moved = async {
            match upload {
                Some(u) if !u.done.load(Ordering::Acquire) => u.notify.notified().await,
                _ => std::future::pending().await,
            }
        };
        tokio::select! {
            biased;
            out = response.as_mut() => return Ok(out),
            () = moved => {}
            () = &mut timer => {
                let stall = match upload {
                    None => Some(Stall::Headers),
                    Some(u) if u.done.load(Ordering::Acquire) => {
                        (u.moved_at() + headers <= tokio::time::Instant::now())
                            .then_some(Stall::Headers)
                    }
                    // A client slow to send is the body's own idle timer's business.
                    Some(u) => (!u.waiting.load(Ordering::Relaxed)
                        && u.moved_at() + idle <= tokio::time::Instant::now())
                    .then_some(Stall::Upload),
                };
                if let Some(stall) = stall {
                    return Err(stall);
                }
            }
        }
    }
}

/// Fails a body that makes no progress for `after`. The timer is armed only when the body waits,
/// so a body that is ready at once never touches the clock.
pub struct IdleTimer {
    pub after: Duration,
    sleep: Option<Pin<Box<Sleep>>>,
    progressed: bool,
}

impl IdleTimer {
    pub fn new(after: Duration) -> Self {
        IdleTimer {
            after,
            sleep: None,
            progressed: false,
        }
    }

    fn progress(&mut self) {
        self.progressed = true;
    }

    /// Passes on what a body gave, noting progress.
    pub fn took(
        &mut self,
        frame: Option<Result<Frame<Bytes>, hyper::Error>>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match frame {
            Some(Ok(frame)) => {
                self.progress();
                Poll::Ready(Some(Ok(frame)))
            }
            Some(Err(e)) => Poll::Ready(Some(Err(e.into()))),
            None => Poll::Ready(None),
        }
    }

    /// Polls `body`, failing it with [`BodyError::Idle`] once it has been silent for `after`.
    pub fn poll(
        &mut self,
        body: &mut Incoming,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match Pin::new(body).poll_frame(cx) {
            Poll::Ready(frame) => self.took(frame),
            Poll::Pending if self.expired(cx) => {
                Poll::Ready(Some(Err(BodyError::Idle(self.after).into())))
            }
            Poll::Pending => Poll::Pending,
        }
    }

    /// Called when the body is pending: true once it has been silent for `after`.
    pub fn expired(&mut self, cx: &mut Context<'_>) -> bool {
        let deadline = tokio::time::Instant::now() + self.after;
        match &mut self.sleep {
            None => self.sleep = Some(Box::pin(tokio::time::sleep_until(deadline))),
            Some(sleep) if self.progressed => sleep.as_mut().reset(deadline),
            Some(_) => {}
        }
        self.progressed = false;
        self.sleep
            .as_mut()
            .is_some_and(|s| s.as_mut().poll(cx).is_ready())
    }
}

/// A request body streaming in from the client, as seen from outside: the bytes read so far, and
/// whether its end came (if not when the answer goes out, the connection cannot carry another
/// request: see [`crate::proxy`]).
#[derive(Debug, Default)]
pub struct Received {
    bytes: AtomicU64,
    ended: AtomicBool,
}

impl Received {
    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    /// The client's body was read to its end.
    pub fn ended(&self) -> bool {
        self.ended.load(Ordering::Relaxed)
    }
}

/// A request body on its way to a node: the frames the classifier looked at, then the rest. Errors
/// of the client's stream come out as [`BodyError`]s.
pub struct ForwardBody {
    replay: VecDeque<Frame<Bytes>>,
    replay_len: u64,
    rest: Option<Incoming>,
    idle: IdleTimer,
    /// Bytes allowed in all (0 = unlimited), and sent so far.
    max: u64,
    sent: u64,
    /// Counts the bytes read from the client (the look-ahead is counted by whoever read it).
    received: Option<Arc<Received>>,
    upload: Option<Arc<Upload>>,
}

impl ForwardBody {
    pub fn new(
        replay: VecDeque<Frame<Bytes>>,
        rest: Option<Incoming>,
        idle: Duration,
        max: u64,
    ) -> Self {
        let replay_len = replay
            .iter()
            .filter_map(Frame::data_ref)
            .map(|d| d.len() as u64)
            .sum();
        ForwardBody {
            replay,
            replay_len,
            rest,
            idle: IdleTimer::new(idle),
            max,
            sent: 0,
            received: None,
            upload: None,
        }
    }

    /// Reports the upload's progress to `upload`.
    pub fn watched(mut self, upload: Arc<Upload>) -> Self {
        if self.is_end_stream() {
            upload.finished();
        }
        self.upload = Some(upload);
        self
    }

    /// Counts the bytes that stream in from the client into `counter`, and tells when they end.
    pub fn counting(mut self, counter: Arc<Received>) -> Self {
        self.received = Some(counter);
        self
    }

    /// The whole body is in the replayed frames (and they are data only): it can be sent again.
    pub fn replayable_copy(&self) -> Option<Vec<Bytes>> {
        if self.rest.as_ref().is_some_and(|r| !r.is_end_stream()) {
            return None;
        }
        self.replay.iter().map(|f| f.data_ref().cloned()).collect()
    }

    fn next_frame(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if let Some(frame) = self.replay.pop_front() {
            if let Some(data) = frame.data_ref() {
                self.replay_len -= data.len() as u64;
            }
            self.count(&frame)?;
            return Poll::Ready(Some(Ok(frame)));
        }
        let Some(rest) = self.rest.as_mut() else {
            return Poll::Ready(None);
        };
        match self.idle.poll(rest, cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(counter) = &self.received {
                    if let Some(data) = frame.data_ref() {
                        counter
                            .bytes
                            .fetch_add(data.len() as u64, Ordering::Relaxed);
                    }
                    if rest.is_end_stream() {
                        counter.ended.store(true, Ordering::Relaxed);
                    }
                }
                self.count(&frame)?;
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(None) => {
                if let Some(counter) = &self.received {
                    counter.ended.store(true, Ordering::Relaxed);
                }
                Poll::Ready(None)
            }
            // hyper's own errors on the client's stream: aborted, or malformed chunked framing.
            Poll::Ready(Some(Err(e))) if !e.is::<BodyError>() => {
                Poll::Ready(Some(Err(BodyError::Client(crate::log::chain(&*e)).into())))
            }
            other => other,
        }
    }

    fn count(&mut self, frame: &Frame<Bytes>) -> Result<(), BodyError> {
        if let Some(data) = frame.data_ref() {
            self.sent += data.len() as u64;
            if self.max > 0 && self.sent > self.max {
                return Err(BodyError::TooLarge(self.max));
            }
        }
        Ok(())
    }
}

impl Body for ForwardBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        let polled = this.next_frame(cx);
        if let Some(upload) = &this.upload {
            match &polled {
                Poll::Pending => upload.waiting.store(true, Ordering::Relaxed),
                // The sender may stop polling once the body says it has ended.
                Poll::Ready(Some(Ok(_))) if this.is_end_stream() => upload.finished(),
                Poll::Ready(Some(Ok(_))) => {
                    upload.waiting.store(false, Ordering::Relaxed);
                    upload.moved();
                }
                Poll::Ready(None) => upload.finished(),
                Poll::Ready(Some(Err(_))) => {}
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.replay.is_empty() && self.rest.as_ref().is_none_or(Body::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        let mut hint = SizeHint::new();
        let rest = self
            .rest
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), Body::size_hint);
        hint.set_lower(rest.lower() + self.replay_len);
        if let Some(upper) = rest.upper() {
            hint.set_upper(upper + self.replay_len);
        }
        hint
    }
}

/// A body lent to one attempt: if the attempt ends without reading a byte of it (the connection to
/// the node failed), it comes back through [`Lent::take_back`] for another attempt.
pub struct LentBody {
    inner: Option<ForwardBody>,
    back: Option<oneshot::Sender<ForwardBody>>,
}

/// The lender's side of a [`LentBody`].
pub struct Lent(oneshot::Receiver<ForwardBody>);

impl LentBody {
    pub fn lend(body: ForwardBody) -> (LentBody, Lent) {
        let (tx, rx) = oneshot::channel();
        (
            LentBody {
                inner: Some(body),
                back: Some(tx),
            },
            Lent(rx),
        )
    }

    /// A body that is not lent (a replayed copy).
    pub fn owned(body: ForwardBody) -> LentBody {
        LentBody {
            inner: Some(body),
            back: None,
        }
    }
}

impl Lent {
    /// The body, if the attempt dropped it unread.
    pub fn take_back(mut self) -> Option<ForwardBody> {
        self.0.try_recv().ok()
    }
}

impl Drop for LentBody {
    fn drop(&mut self) {
        if let (Some(back), Some(body)) = (self.back.take(), self.inner.take()) {
            let _ = back.send(body);
        }
    }
}

impl Body for LentBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        // Once read, the body belongs to this attempt.
        this.back = None;
        match this.inner.as_mut() {
            Some(inner) => Pin::new(inner).poll_frame(cx),
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(Body::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        self.inner
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), Body::size_hint)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    fn replayed(chunks: &[&'static str]) -> ForwardBody {
        let frames = chunks
            .iter()
            .map(|c| Frame::data(Bytes::from_static(c.as_bytes())))
            .collect();
        ForwardBody::new(frames, None, Duration::from_secs(1), 0)
    }

    #[tokio::test]
    async fn an_unread_lent_body_comes_back_whole() {
        let (lent_body, lent) = LentBody::lend(replayed(&["<wfs:", "Transaction/>"]));
        drop(lent_body); // the connection failed before a byte was sent
        let back = lent.take_back().expect("given back");
        let bytes = back.collect().await.unwrap().to_bytes();
        assert_eq!(&bytes[..], b"<wfs:Transaction/>");
    }

    #[tokio::test]
    async fn a_read_lent_body_stays_with_its_attempt() {
        let (mut lent_body, lent) = LentBody::lend(replayed(&["a", "b"]));
        let _ = lent_body.frame().await;
        drop(lent_body);
        assert!(
            lent.take_back().is_none(),
            "part of it was sent: it cannot be sent again"
        );
    }

    #[tokio::test]
    async fn the_size_limit_counts_replayed_and_streamed_bytes() {
        let body = ForwardBody::new(
            ["12345", "67890"]
                .iter()
                .map(|c| Frame::data(Bytes::from_static(c.as_bytes())))
                .collect(),
            None,
            Duration::from_secs(1),
            8,
        );
        let err = body.collect().await.expect_err("over 8 bytes");
        assert_eq!(
            err.downcast_ref::<BodyError>(),
            Some(&BodyError::TooLarge(8))
        );
        assert_eq!(
            replayed(&["abc"]).replayable_copy(),
            Some(vec![Bytes::from_static(b"abc")])
        );
    }
}
