//! The response to a client: a node's body streamed through (read from the node's connection,
//! which this body drives, and given back to the node's pool once the body has ended), or an
//! answer geolb made. The request's record is finished when the body is done.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Instant;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::Full;
use hyper::body::Incoming;

use crate::body::{BodyError, BoxError, IdleTimer, Received};
use crate::cluster::InFlight;
use crate::conn::{Activity, InProgress};
use crate::record::{Record, Recorder};
use crate::upstream::Conn;

/// A response body to a client, and the record of its request, sent to the recorder when the
/// body is done (sent, or dropped on a broken connection).
pub struct ResponseBody {
    inner: Inner,
    /// Read from the node already (to look at it) and not sent yet: goes out first.
    held: Option<Bytes>,
    done: Option<Done>,
}

enum Inner {
    /// Streamed from a node.
    Upstream(FromNode),
    /// Made by geolb.
    Local(Full<Bytes>),
}

/// A node's response body, and what it holds while it streams.
struct FromNode {
    body: Incoming,
    /// The connection the body comes through: polled here, pooled again at the end.
    conn: Option<Conn>,
    idle: IdleTimer,
    /// The node's in-flight slot, held until the body is done.
    in_flight: InFlight,
    /// Tells the connection or stream it is sent on when the body waits for the client.
    watch: Option<(Arc<Activity>, Arc<BodyWaker>, Waker)>,
}

/// The waker a node's response body wakes: marks the data as waiting for the client, then wakes
/// whoever sends the response.
pub struct BodyWaker {
    activity: Arc<Activity>,
    consumer: atomic_waker::AtomicWaker,
}

impl std::task::Wake for BodyWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.activity.ready();
        self.consumer.wake();
    }
}

/// What finishes a request's record.
pub struct Done {
    pub record: Record,
    pub started: Instant,
    /// Request body bytes, counted as they stream (only for requests that have a body).
    pub received: Option<Arc<Received>>,
    pub recorder: Arc<Recorder>,
    /// The request is in progress on its connection until then.
    pub in_progress: Option<InProgress>,
}

type Polled = Poll<Option<Result<Frame<Bytes>, BoxError>>>;

impl ResponseBody {
    pub fn text(text: impl Into<Bytes>) -> Self {
        ResponseBody {
            inner: Inner::Local(Full::new(text.into())),
            held: None,
            done: None,
        }
    }

    /// A node's response body, read through `conn`. The client must take each frame within the
    /// idle timeout, or the connection's watchdog cuts it ([`crate::conn`]).
    pub fn upstream(body: Incoming, conn: Conn, idle: IdleTimer, in_flight: InFlight) -> Self {
        let watch = crate::conn::current().map(|activity| {
            activity.streaming(idle.after);
            let body_waker = Arc::new(BodyWaker {
                activity: activity.clone(),
                consumer: atomic_waker::AtomicWaker::new(),
            });
            let waker = Waker::from(body_waker.clone());
            (activity, body_waker, waker)
        });
        let mut from_node = FromNode {
            body,
            conn: Some(conn),
            idle,
            in_flight,
            watch,
        };
        // No body at all (HEAD, 204, 304): the connection is free now.
        from_node.release_if(from_node.body.is_end_stream());
        ResponseBody {
            inner: Inner::Upstream(from_node),
            held: None,
            done: None,
        }
    }

    /// Puts back what was read from this body before it is sent: it goes out first.
    pub fn put_back(&mut self, bytes: Bytes) {
        if !bytes.is_empty() {
            self.held = Some(bytes);
        }
    }

    /// Records the request when this body is done.
    pub fn recorded(mut self, done: Done) -> Self {
        self.done = Some(done);
        self
    }
}

impl FromNode {
    fn poll(&mut self, cx: &mut Context<'_>) -> Polled {
        let FromNode {
            body,
            conn,
            idle,
            watch,
            ..
        } = self;
        let polled = match watch {
            // The node's connection wakes `BodyWaker`, which marks the stream as waiting for the
            // client until it polls again: a client that stops reading leaves it marked.
            Some((activity, body_waker, waker)) => {
                activity.taken();
                body_waker.consumer.register(cx.waker());
                let polled = pull(body, conn, idle, &mut Context::from_waker(waker));
                if let Poll::Ready(Some(Ok(_))) = &polled {
                    activity.gave();
                }
                polled
            }
            None => pull(body, conn, idle, cx),
        };
        match &polled {
            Poll::Ready(Some(Err(e))) if e.is::<BodyError>() => {
                static CUT: crate::log::LogBudget =
                    crate::log::LogBudget::new(crate::log::PER_REQUEST_LINES);
                if let Some(held_back) = CUT.allow() {
                    tracing::warn!(after = ?self.idle.after, held_back, "response body idle: cut");
                }
            }
            Poll::Ready(Some(Ok(_))) => self.release_if(self.body.is_end_stream()),
            Poll::Ready(None) => self.release_if(true),
            _ => {}
        }
        polled
    }

    /// Gives the connection back to the node's pool once the whole body came through it.
    fn release_if(&mut self, ended: bool) {
        if ended {
            if let Some(conn) = self.conn.take() {
                self.in_flight.node().upstream.put(conn);
            }
        }
    }
}

/// The next frame of a node's body: what its connection handed over already, else what driving
/// the connection brings. Only the connection, driven here in this task, fills the body: the body
/// is polled without a waker, and `cx` goes to the connection's I/O and the idle timer.
fn pull(
    body: &mut Incoming,
    conn: &mut Option<Conn>,
    idle: &mut IdleTimer,
    cx: &mut Context<'_>,
) -> Polled {
    let noop = &mut Context::from_waker(Waker::noop());
    let mut body = Pin::new(body);
    if let Poll::Ready(frame) = body.as_mut().poll_frame(noop) {
        return idle.took(frame);
    }
    if let Some(conn) = conn {
        let _ = conn.drive(cx);
    }
    match body.poll_frame(noop) {
        Poll::Ready(frame) => idle.took(frame),
        Poll::Pending if idle.expired(cx) => {
            Poll::Ready(Some(Err(BodyError::Idle(idle.after).into())))
        }
        Poll::Pending => Poll::Pending,
    }
}

impl Drop for FromNode {
    fn drop(&mut self) {
        // A body dropped once whole (HEAD, or the client's stack stopped at `is_end_stream`).
        self.release_if(self.body.is_end_stream());
    }
}

impl Drop for ResponseBody {
    fn drop(&mut self) {
        if let Some(mut done) = self.done.take() {
            done.record.duration = done.started.elapsed();
            done.record.received += done.received.map_or(0, |r| r.bytes());
            done.recorder.record(done.record);
        }
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Polled {
        let this = self.get_mut();
        let polled = if let Some(held) = this.held.take() {
            Poll::Ready(Some(Ok(Frame::data(held))))
        } else {
            match &mut this.inner {
                Inner::Upstream(from_node) => from_node.poll(cx),
                Inner::Local(full) => Pin::new(full)
                    .poll_frame(cx)
                    .map_err(|never| match never {}),
            }
        };
        if let (Poll::Ready(Some(Ok(frame))), Some(done)) = (&polled, &mut this.done) {
            done.record.sent += frame.data_ref().map_or(0, |d| d.len() as u64);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        if self.held.is_some() {
            return false;
        }
        match &self.inner {
            Inner::Upstream(from_node) => from_node.body.is_end_stream(),
            Inner::Local(full) => full.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        let rest = match &self.inner {
            Inner::Upstream(from_node) => from_node.body.size_hint(),
            Inner::Local(full) => full.size_hint(),
        };
        let held = self.held.as_ref().map_or(0, |b| b.len() as u64);
        let mut hint = SizeHint::new();
        hint.set_lower(rest.lower() + held);
        if let Some(upper) = rest.upper() {
            hint.set_upper(upper + held);
        }
        hint
    }
}
