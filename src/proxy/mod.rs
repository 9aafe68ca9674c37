//! Forwarding one request: classify → pick → forward → record, retrying idempotent reads on
//! another node. Bodies stream both ways; only the classifier's bounded look-ahead is held, and it
//! is replayed to the node ahead of the rest.

mod budget;
mod headers;
mod hedge;
mod lookahead;
mod opinion;
mod pin;

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::uri::PathAndQuery;
use http::{Method, Request, Response, Version};
use http_body::{Body as _, Frame};
use hyper::body::Incoming;
use ipnet::IpNet;
use tokio::sync::mpsc;

use crate::classify::{Class, Pool, Verdict};
use crate::cluster::latency::{now_ns, ClassLatency};
use crate::cluster::{Acquire, InFlight, Node, Queues, Waiter};
use crate::config::{ClassTimeouts, Config};
use crate::consistency::Pins;
use crate::control::Report;
use crate::error::ProxyError;
use crate::exception;
use crate::metrics::{Extra, ExtraResult, Metrics};
use crate::record::{request_id, Record, Recorder};

use crate::body::{
    await_response, BodyError, ForwardBody, IdleTimer, Lent, LentBody, Received, Stall, Upload,
};
use crate::response::{Done, ResponseBody};
use crate::upstream::{self, Conn};
use budget::RetryBudget;
pub use headers::{forwarded_for, prepare_request_headers, rewrite_location, strip_hop_by_hop};
use lookahead::lookahead;

use crate::cluster::Snapshot;

/// A client, as each of its requests sees it.
pub struct Peer {
    pub addr: SocketAddr,
    /// Its address as `X-Forwarded-For` names it (made once per connection).
    pub forwarded_for: HeaderValue,
}

impl Peer {
    pub fn new(addr: SocketAddr) -> Peer {
        Peer {
            addr,
            forwarded_for: forwarded_for(addr.ip()),
        }
    }
}

/// The client-facing request handler, shared by every connection of the plain listeners.
pub struct Proxy {
    cluster: Arc<ArcSwap<Snapshot>>,
    reports: mpsc::Sender<Report>,
    queues: Arc<Queues>,
    queued: AtomicUsize,
    budget: RetryBudget,
    recorder: Arc<Recorder>,
    /// The clients that wrote a moment ago (read-your-writes).
    pins: Pins,
    /// Each request class's recent time to first byte (its reads' hedge delay).
    classes: ClassLatency,
}

static X_REQUEST_ID: http::HeaderName = http::HeaderName::from_static("x-request-id");

/// How one attempt on a node failed (always by the node's doing: the client's faults are errors).
enum Failure {
    /// The node answered 502, 503 or 504: worth another node.
    Status(Response<Incoming>, Conn, Arc<Node>, InFlight),
    /// The same, once its response, slot and connection were let go for a retry.
    Answered(Arc<Node>, http::StatusCode),
    Connect(Arc<Node>, upstream::Error),
    Io(Arc<Node>, upstream::Error),
    Timeout(Arc<Node>, Stall),
}

impl Proxy {
    pub fn new(
        cluster: Arc<ArcSwap<Snapshot>>,
        reports: mpsc::Sender<Report>,
        queues: Arc<Queues>,
        recorder: Arc<Recorder>,
    ) -> Proxy {
        Proxy {
            cluster,
            reports,
            queues,
            recorder,
            queued: AtomicUsize::new(0),
            budget: RetryBudget::default(),
            pins: Pins::new(),
            classes: ClassLatency::default(),
        }
    }

    /// Serves one client request; never fails (errors become 4xx/5xx responses).
    /// `refused`: why the framing guard refuses it (it, or a request before it on the connection,
    /// is outside what geolb accepts).
    pub async fn handle(
        &self,
        mut req: Request<Incoming>,
        peer: &Peer,
        refused: Option<&'static str>,
        secure: bool,
    ) -> Response<ResponseBody> {
        let started = Instant::now();
        let in_progress = crate::conn::current().map(|activity| activity.begin());
        let id = request_id(req.headers().get(&X_REQUEST_ID));
        req.headers_mut().insert(X_REQUEST_ID.clone(), id.clone());
        // Shares hyper's read buffer: fine while the request is served, not in a queued record.
        let target = req.uri().path_and_query().cloned();
        let logged = self
            .recorder
            .logs_access()
            .then(|| target.as_ref().and_then(owned_target))
            .flatten();
        let mut record = Record {
            at: SystemTime::now(),
            client: peer.addr.ip(),
            method: req.method().clone(),
            target: logged,
            pool: None,
            class: None,
            why: None,
            node: None,
            status: 0,
            received: 0,
            sent: 0,
            duration: Duration::ZERO,
            queued: Duration::ZERO,
            connect: None,
            first_byte: None,
            retries: 0,
            request_id: Some(id.clone()),
        };
        let mut received: Option<Arc<Received>> = None;
        let http1 = req.version() <= Version::HTTP_11;
        // The routing state and configuration in force when the request came, for all of it: a
        // reload or a health change applies to the next one (a wait for a slot and a retry look
        // again at the nodes).
        let snapshot = self.cluster.load_full();
        let config = &snapshot.config;
        let result = if let Some(why) = refused {
            Err(ProxyError::BadRequest(why))
        } else if !secure && config.listen.redirect_https {
            Ok(redirect_to_https(&req, config))
        } else {
            let at = (peer, secure, started);
            self.forward(req, &snapshot, at, &mut record, &mut received)
                .await
        };
        let mut response = result.unwrap_or_else(|err| {
            let path = target.as_ref().map_or("/", PathAndQuery::path);
            err.log(&record.method, path, peer.addr);
            // A client may try again after one health-check interval.
            let interval = config.health.interval.0;
            err.into_response(&HeaderValue::from(
                interval.as_secs_f64().ceil().max(1.0) as u64
            ))
        });
        response.headers_mut().insert(X_REQUEST_ID.clone(), id);
        if http1 && received.as_ref().is_some_and(|r| !r.ended()) {
            // The answer goes out before the client's body ended (geolb refused the request, or
            // the node answered early): hyper drops the rest, which it can only do by closing the
            // connection once the answer is out. Say so, lest the client send its next request
            // into a closed connection.
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        record.status = response.status().as_u16();
        let done = Done {
            record,
            started,
            received,
            recorder: self.recorder.clone(),
            in_progress,
        };
        response.map(|body| body.recorded(done))
    }

    async fn forward(
        &self,
        req: Request<Incoming>,
        snapshot: &Snapshot,
        (peer, secure, started): (&Peer, bool, Instant),
        record: &mut Record,
        received: &mut Option<Arc<Received>>,
    ) -> Result<Response<ResponseBody>, ProxyError> {
        let (mut parts, body) = req.into_parts();
        let config = &snapshot.config;
        check_request(&parts, config.limits.max_body)?;

        // classify
        let query = parts.uri.query();
        let (route, frames, rest) = match snapshot.classifier.classify_head(
            &parts.method,
            parts.uri.path(),
            query,
            &parts.headers,
        ) {
            Verdict::Done(route) => (route, VecDeque::new(), body),
            Verdict::Refuse(why) => return Err(ProxyError::BadRequest(why)),
            Verdict::NeedBody(plan) => {
                let classifier = &snapshot.classifier;
                let decide = |prefix: &[u8], complete| {
                    classifier.classify_body(&plan, query, prefix, complete)
                };
                // Before the pool is known: the reads' idle timeout (a client slow to send).
                let idle = config.timeouts.reads.idle.0;
                // Boxed: most requests need no look-ahead, and its future is large.
                let (route, frames) = Box::pin(lookahead(body, idle, decide)).await?;
                (route, frames.0, frames.1)
            }
        };
        let (route, pinned) = self.read_your_writes(route, &parts, peer, snapshot);
        record.pool = Some(route.pool);
        record.class = Some(route.class);
        record.why = Some(if pinned {
            "read-your-writes"
        } else {
            route.why()
        });
        tracing::debug!(method = %parts.method, path = parts.uri.path(), pool = ?route.pool, class = %route.class, "classified");
        let timeouts = *config.timeouts.of(route.pool);
        let max_body = config.limits.max_body;
        record.received = frames
            .iter()
            .filter_map(Frame::data_ref)
            .map(|d| d.len() as u64)
            .sum();
        let streaming = !rest.is_end_stream();
        let mut forward_body = ForwardBody::new(frames, Some(rest), timeouts.idle.0, max_body);
        if streaming {
            let counter = Arc::new(Received::default());
            *received = Some(counter.clone());
            forward_body = forward_body.counting(counter);
        }
        let body_ended = forward_body.is_end_stream();
        let mut body = Some(forward_body);
        // Idempotent reads whose whole body is held can go to another node.
        let replay = match (&body, route.pool, route.write) {
            (Some(b), Pool::Reads, false) => b.replayable_copy(),
            (Some(b), Pool::Master, false) if pinned => b.replayable_copy(),
            _ => None,
        };

        let client_host = headers::client_host(&parts);
        let trusted = is_trusted(config, peer.addr.ip());
        let proto = if secure { "https" } else { "http" };
        prepare_request_headers(
            &mut parts.headers,
            &peer.forwarded_for,
            client_host.as_ref(),
            trusted,
            proto,
        );
        parts.version = Version::HTTP_11;
        self.budget.deposit(started);

        let mut tried: Vec<u64> = Vec::new();
        let mut tried_extra: Vec<u64> = Vec::new();
        // Reads refused by a node (in `tried`, not counted as retries).
        let mut refusals = 0u32;
        // Failed attempts on the master (a master is in `tried` only once found gone).
        let mut master_failures = 0u32;
        let mut hedged = false;
        let mut won = None;
        let mut last: Option<Failure> = None;
        loop {
            // pick: a retry from the cluster as it is now, for the failed attempt may have had
            // its node ejected (a master that went away is not tried again and again).
            let granted = match last {
                None => self.acquire(snapshot, route.pool, &tried).await,
                Some(_) => {
                    let now = self.cluster.load_full();
                    self.acquire(&now, route.pool, &tried).await
                }
            };
            let (mut node, mut slot) = match granted {
                Ok((node, slot, waited)) => {
                    record.queued += waited;
                    (node, slot)
                }
                Err(err) => {
                    return match last {
                        // The master could not be reached and has left the pool since, or is
                        // gone: the request never reached it, and writes are unavailable.
                        Some(Failure::Connect(..)) if matches!(err, ProxyError::NoMaster) => {
                            Err(err)
                        }
                        Some(failure)
                            if matches!(err, ProxyError::NoReader | ProxyError::NoMaster) =>
                        {
                            self.give_up(failure, (client_host.as_ref(), proto), timeouts)
                        }
                        _ => Err(err),
                    };
                }
            };
            // The failed attempt let go of its node before this one started.
            debug_assert!(!matches!(last, Some(Failure::Status(..))));

            record.node = Some(node.label.clone());
            record.retries = match route.pool {
                Pool::Reads => tried.len() as u32,
                Pool::Master => master_failures,
            };

            // forward
            let upload = (!body_ended).then(Upload::new);
            let (attempt_body, lent) = match (&replay, body.take()) {
                (Some(copy), _) => {
                    let frames = copy.iter().cloned().map(Frame::data).collect();
                    let mut copy = ForwardBody::new(frames, None, timeouts.idle.0, max_body);
                    if let Some(upload) = &upload {
                        copy = copy.watched(upload.clone());
                    }
                    (LentBody::owned(copy), None)
                }
                (None, Some(mut b)) => {
                    if let Some(upload) = &upload {
                        b = b.watched(upload.clone());
                    }
                    let (lent_body, lent) = LentBody::lend(b);
                    (lent_body, Some(lent))
                }
                (None, None) => {
                    return Err(ProxyError::BadRequest("request body already consumed"))
                }
            };
            let class = (route.pool == Pool::Reads).then_some(route.class);
            // Reads held whole may be hedged once, within the request's extra attempts.
            let hedge = match &replay {
                Some(copy) if !hedged => self
                    .hedge_delay(snapshot, route.pool, &route.class, tried.len())
                    .map(|delay| (delay, copy)),
                _ => None,
            };
            let sent = {
                let first = self.send(
                    snapshot,
                    &node,
                    &parts,
                    attempt_body,
                    upload.as_deref(),
                    (timeouts, class, replay.is_none()),
                );
                match hedge {
                    None => first.await,
                    Some((delay, copy)) => {
                        hedged = true;
                        let ask = opinion::Ask {
                            snapshot,
                            parts: &parts,
                            copy,
                            timeouts,
                            client: (client_host.as_ref(), proto),
                            tried: &tried,
                        };
                        let first = std::pin::pin!(first);
                        let h = self.hedged(first, &node, delay, &ask, route.class).await;
                        if let Some(other) = h.other {
                            tried_extra.push(other);
                        }
                        won = h.winner;
                        h.sent
                    }
                }
            };
            // The first attempt was cancelled as the block ended, if the hedge won.
            if let Some((winner, winner_slot)) = won.take() {
                node = winner;
                slot = winner_slot;
                record.node = Some(node.label.clone());
            }
            tried.append(&mut tried_extra);
            // A body the attempt never read comes back for the next one.
            body = body.or_else(|| lent.and_then(Lent::take_back));

            // record
            let failure = match sent {
                Ok(Ok((response, conn))) => {
                    record.connect = conn.connect_time();
                    record.first_byte = Some(started.elapsed());
                    let status = response.status();
                    // Only gateway errors count against the node: GeoServer answers 500 to many
                    // client mistakes (a bad SLD, a duplicate layer…), and a client must not be
                    // able to eject a node.
                    let failed = matches!(status.as_u16(), 502..=504);
                    if !failed {
                        // A read answered with what may be an OGC exception: a second opinion.
                        let look = match &replay {
                            Some(copy)
                                if route.pool == Pool::Reads
                                    && config.consistency.second_opinions =>
                            {
                                exception::may_be_exception(status, response.headers())
                                    .map(|format| (format, copy))
                            }
                            _ => None,
                        };
                        let client = (client_host.as_ref(), proto);
                        let answer = respond((response, conn), slot, client, timeouts);
                        if last.is_some() {
                            self.metrics().extra(Extra::Retry, ExtraResult::Won).inc();
                        }
                        let Some((format, copy)) = look else {
                            self.record(config, &node, true);
                            if route.pool == Pool::Master && pin::is_write(&route, &parts.method) {
                                // Boxed, like the second opinion below: the rare paths keep
                                // their state off every request's future.
                                let pin = self.pin_writer(
                                    answer,
                                    &parts,
                                    peer,
                                    snapshot,
                                    secure,
                                    node.name(),
                                );
                                return Box::pin(pin).await;
                            }
                            return Ok(answer);
                        };
                        let ask = opinion::Ask {
                            snapshot,
                            parts: &parts,
                            copy,
                            timeouts,
                            client,
                            tried: &tried,
                        };
                        let opinion = self.second_opinion(ask, node, answer, format, record);
                        return Box::pin(opinion).await;
                    }
                    self.record(config, &node, false);
                    Failure::Status(response, conn, node, slot)
                }
                Ok(Err(e)) => {
                    drop(slot);
                    // The client's body broke, stalled or grew too large: its fault, not the
                    // node's. Nothing is recorded against the node, and nothing is retried.
                    if let Some(err) = body_error(&e) {
                        // geolb answers; the node is not named in the record (nor its metrics).
                        record.node = None;
                        return Err(err);
                    }
                    self.record(config, &node, false);
                    if e.is_connect() {
                        Failure::Connect(node, e)
                    } else {
                        Failure::Io(node, e)
                    }
                }
                Err(stall) => {
                    drop(slot);
                    self.record(config, &node, false);
                    Failure::Timeout(node, stall)
                }
            };

            // retry?
            let sendable =
                replay.is_some() || (matches!(failure, Failure::Connect(..)) && body.is_some());
            if !sendable {
                return self.give_up(failure, (client_host.as_ref(), proto), timeouts);
            }
            if route.pool == Pool::Reads
                && matches!(&failure, Failure::Connect(_, e) if e.is_refused())
            {
                // Nothing listens there (a replica scaled away, a node restarting): the node never
                // saw the request, so trying the next one uses up neither the request's retries
                // nor the budget. `tried` bounds these to the pool's size.
                refusals += 1;
                tracing::debug!(
                    node = failure.node().name(),
                    "connection refused: trying another node"
                );
                tried.push(failure.node().id);
                last = Some(failure.let_go());
                continue;
            }
            let attempts = match route.pool {
                Pool::Reads => tried.len() as u32 + 1 - refusals,
                Pool::Master => {
                    if matches!(&failure, Failure::Connect(_, e) if e.is_gone()) {
                        // Nothing is there (refused, or its name no longer resolves): the retry
                        // goes to another master if one is elected by then, else the write gets
                        // the empty master pool's 503, not the same refusal three times.
                        tried.push(failure.node().id);
                    }
                    master_failures += 1;
                    master_failures
                }
            };
            if attempts > config.retries.max {
                return self.give_up(failure, (client_host.as_ref(), proto), timeouts);
            }
            if !self.budget.withdraw(Instant::now(), &config.retries) {
                self.metrics().budget_exhausted.inc();
                self.metrics()
                    .extra(Extra::Retry, ExtraResult::Refused)
                    .inc();
                return self.give_up(failure, (client_host.as_ref(), proto), timeouts);
            }
            self.metrics().extra(Extra::Retry, ExtraResult::Sent).inc();
            match route.pool {
                Pool::Reads => self.metrics().retries_reads.inc(),
                Pool::Master => self.metrics().retries_master.inc(),
            }
            let node = failure.node();
            tracing::debug!(
                node = node.name(),
                attempt = attempts,
                "retrying on another node"
            );
            if route.pool == Pool::Reads {
                tried.push(node.id);
            }
            // Its node slot and connection are let go before the next attempt.
            last = Some(failure.let_go());
        }
    }

    /// One attempt: the request sent to `node`, until its response head, a failure, or a stall
    /// (`class`: the request class its time to first byte is a sample of, for reads; `once`: a
    /// request geolb cannot send again, see [`upstream::Dest::fresh`]).
    async fn send(
        &self,
        snapshot: &Snapshot,
        node: &Node,
        parts: &http::request::Parts,
        body: LentBody,
        upload: Option<&Upload>,
        (timeouts, class, once): (ClassTimeouts, Option<Class>, bool),
    ) -> Sent {
        let mut request = Request::new(body);
        *request.method_mut() = parts.method.clone();
        *request.uri_mut() = headers::node_target(parts.uri.path_and_query());
        *request.version_mut() = Version::HTTP_11;
        *request.headers_mut() = parts.headers.clone();
        if !request.headers().contains_key(header::HOST) {
            // An HTTP/1.0 client that named no host: the node's own name.
            if let Ok(host) = HeaderValue::from_str(node.authority().as_str()) {
                request.headers_mut().insert(header::HOST, host);
            }
        }
        let dest = upstream::Dest {
            authority: node.authority(),
            tls: node.spec.tls.then_some(&snapshot.node_tls),
            connect_timeout: snapshot.config.timeouts.connect.0,
            fresh: once && !parts.method.is_idempotent(),
        };
        let send = std::pin::pin!(node.upstream.send(&dest, request));
        let (headers, idle) = (timeouts.headers.0, timeouts.idle.0);
        let waiting = node.awaiting_guard();
        let sent_at = tokio::time::Instant::now();
        let sent = await_response(send, upload, headers, idle).await;
        drop(waiting);
        if let Ok(Err(e)) = &sent {
            if e.is_refused() {
                // Nothing listens there: the cluster task ejects it at once.
                let _ = self.reports.try_send(Report::Refused { node: node.id });
            }
        } else if let Ok(Ok(_)) = &sent {
            // Progress (stall detection) and a latency sample (picking, the class's hedge delay).
            let now = tokio::time::Instant::now();
            let ttfb = now - sent_at;
            let ratio = class.as_ref().map(|class| {
                let usual = self.classes.of(class).map(|(srtt, _)| srtt);
                self.classes.observe(class, ttfb);
                usual.map_or(1.0, |usual| {
                    ttfb.as_secs_f64() / usual.as_secs_f64().max(1e-6)
                })
            });
            node.answered(now_ns(now), ttfb, ratio, snapshot.config.routing.decay.0);
        }
        sent
    }

    /// Answers with the last failure: the node's own 502/503/504, or geolb's 502/504.
    fn give_up(
        &self,
        failure: Failure,
        client: Addressed<'_>,
        timeouts: ClassTimeouts,
    ) -> Result<Response<ResponseBody>, ProxyError> {
        match failure {
            Failure::Status(response, conn, _, slot) => {
                Ok(respond((response, conn), slot, client, timeouts))
            }
            Failure::Answered(node, status) => Err(ProxyError::Answered {
                node: node.name().to_string(),
                status,
            }),
            Failure::Connect(node, source) | Failure::Io(node, source) => {
                Err(ProxyError::Upstream {
                    node: node.name().to_string(),
                    source,
                })
            }
            Failure::Timeout(node, Stall::Headers) => Err(ProxyError::Timeout {
                node: node.name().to_string(),
                after: timeouts.headers.0,
            }),
            Failure::Timeout(node, Stall::Upload) => Err(ProxyError::UploadStalled {
                node: node.name().to_string(),
                after: timeouts.idle.0,
            }),
        }
    }

    /// A slot on a node of `pool` (not one of `tried`), waiting in the pool's queue when every
    /// eligible node is at `max_requests`.
    async fn acquire(
        &self,
        snapshot: &Snapshot,
        pool: Pool,
        tried: &[u64],
    ) -> Result<Granted, ProxyError> {
        let mut rng = fastrand::Rng::new();
        if let Some(done) = try_acquire(snapshot, pool, tried, &mut rng) {
            return done;
        }
        // Every eligible node is busy: wait (boxed, a rare and large future).
        Box::pin(self.wait_for_slot(snapshot, pool, tried, rng)).await
    }

    /// Waits in `pool`'s queue for a slot, within `limits.queue_timeout`.
    async fn wait_for_slot(
        &self,
        snapshot: &Snapshot,
        pool: Pool,
        tried: &[u64],
        mut rng: fastrand::Rng,
    ) -> Result<Granted, ProxyError> {
        let limits = &snapshot.config.limits;
        if self.queued.fetch_add(1, Ordering::AcqRel) >= limits.queue_size {
            self.queued.fetch_sub(1, Ordering::AcqRel);
            self.metrics().queue_full.inc();
            return Err(ProxyError::QueueFull);
        }
        let seat = Seat {
            queued: &self.queued,
            queues: &self.queues,
            pool,
            waiter: self.queues.join(pool, tried),
        };
        let queued_at = tokio::time::Instant::now();
        let deadline = queued_at + limits.queue_timeout.0;
        let waited = || {
            let waited = queued_at.elapsed();
            self.metrics().queue_wait.observe(waited.as_secs_f64());
            waited
        };
        loop {
            // Looked at once joined (a slot freed just before was released, not handed over), and
            // again after each wake.
            if let Some(slot) = seat.waiter.take_slot() {
                return Ok((slot.node().clone(), slot, waited()));
            }
            // The nodes' health may have changed while waiting.
            if let Some(done) = try_acquire(&self.cluster.load(), pool, tried, &mut rng) {
                let waited = waited();
                return done.map(|(node, slot, _)| (node, slot, waited));
            }
            tokio::select! {
                _ = seat.waiter.notify.notified() => {}
                _ = tokio::time::sleep_until(deadline) => {
                    self.metrics().queue_timeout.inc();
                    return Err(ProxyError::QueueTimeout(limits.queue_timeout.0));
                }
            }
        }
    }

    /// Passive health: counts live failures; enough in a row reports the node to the cluster task.
    fn record(&self, config: &Config, node: &Node, ok: bool) {
        self.recorded(config, node, ok, None);
    }

    /// [`record`](Self::record), saying what the failure was when it is more than a failed
    /// exchange (the ejection reason names it).
    fn recorded(&self, config: &Config, node: &Node, ok: bool, cause: Option<String>) {
        let threshold = config.passive.consecutive_failures;
        if node.record(ok, threshold) {
            let _ = self.reports.try_send(Report::Failing {
                node: node.id,
                failures: threshold,
                cause,
            });
        }
    }

    fn metrics(&self) -> &Metrics {
        self.recorder.metrics()
    }
}

/// What an attempt came to: the node's response head and the connection it came on, a failed
/// exchange, or a stall.
type Sent = Result<Result<(Response<Incoming>, Conn), upstream::Error>, Stall>;

/// A node, its in-flight slot, and how long the request waited for it.
type Granted = (Arc<Node>, InFlight, Duration);

/// A slot on a node of `pool` now: `None` when every eligible node is busy.
fn try_acquire(
    snapshot: &Snapshot,
    pool: Pool,
    tried: &[u64],
    rng: &mut fastrand::Rng,
) -> Option<Result<Granted, ProxyError>> {
    match snapshot.acquire(pool, tried, rng) {
        Acquire::Got(node, slot) => Some(Ok((node, slot, Duration::ZERO))),
        Acquire::Empty => Some(Err(match pool {
            Pool::Master => ProxyError::NoMaster,
            Pool::Reads => ProxyError::NoReader,
        })),
        Acquire::Busy => None,
    }
}

/// Whether the peer is a proxy trusted with `X-Forwarded-*` and `Forwarded`.
fn is_trusted(config: &Config, ip: IpAddr) -> bool {
    let trusted: &[IpNet] = &config.forwarding.trusted_proxies;
    !trusted.is_empty() && trusted.iter().any(|net| net.contains(&ip))
}

impl Failure {
    fn node(&self) -> &Arc<Node> {
        match self {
            Failure::Status(_, _, node, _)
            | Failure::Answered(node, _)
            | Failure::Connect(node, _)
            | Failure::Io(node, _)
            | Failure::Timeout(node, _) => node,
        }
    }

    /// Keeps what the answer to the client needs, and frees the node's slot and connection.
    fn let_go(self) -> Failure {
        match self {
            Failure::Status(response, _, node, _) => Failure::Answered(node, response.status()),
            other => other,
        }
    }
}

/// A place in a pool's queue, left when dropped (a slot handed over but not taken goes on).
struct Seat<'a> {
    queued: &'a AtomicUsize,
    queues: &'a Queues,
    pool: Pool,
    waiter: Arc<Waiter>,
}

impl Drop for Seat<'_> {
    fn drop(&mut self) {
        self.queues.leave(self.pool, &self.waiter);
        self.queued.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Refuses what must never reach a node: `CONNECT`, an HTTP/1.1 request without `Host` or with two
/// (RFC 9112 §3.2), a `Connection` header nominating a header geolb routes or frames by (it would
/// classify by a header it then strips), a declared body over `limits.max_body`.
fn check_request(parts: &http::request::Parts, max_body: u64) -> Result<(), ProxyError> {
    if parts.method == Method::CONNECT {
        return Err(ProxyError::BadRequest("CONNECT is not supported"));
    }
    let mut hosts = parts.headers.get_all(header::HOST).iter();
    match (hosts.next(), hosts.next()) {
        (None, _) if parts.version == Version::HTTP_11 => {
            return Err(ProxyError::BadRequest("HTTP/1.1 request without Host"))
        }
        (Some(_), Some(_)) => return Err(ProxyError::BadRequest("two Host headers")),
        _ => {}
    }
    if headers::nominates_routing_header(&parts.headers) {
        return Err(ProxyError::BadRequest(
            "a Connection header naming Host, Content-Length, Transfer-Encoding, Content-Type or Content-Encoding",
        ));
    }
    if max_body > 0 {
        let declared = parts
            .headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        if declared.is_some_and(|len| len > max_body) {
            return Err(ProxyError::BodyTooLarge(max_body));
        }
    }
    Ok(())
}

/// `308 Permanent Redirect` to the same path on the first https listener (the client's host name,
/// the listener's port; 443 left out).
fn redirect_to_https<B>(req: &Request<B>, config: &Config) -> Response<ResponseBody> {
    let host = req
        .headers()
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| req.uri().host())
        .unwrap_or("localhost");
    // Strip a port (keeping IPv6 brackets whole).
    let name = match host.rfind(':') {
        Some(i) if !host[i..].contains(']') => &host[..i],
        _ => host,
    };
    let port = config.listen.https.first().map_or(443, |a| a.port());
    let target = req.uri().path_and_query().map_or("/", |p| p.as_str());
    let location = if port == 443 {
        format!("https://{name}{target}")
    } else {
        format!("https://{name}:{port}{target}")
    };
    let mut response = Response::new(ResponseBody::text(format!("moved to {location}\n")));
    *response.status_mut() = http::StatusCode::PERMANENT_REDIRECT;
    if let Ok(value) = HeaderValue::from_str(&location) {
        response.headers_mut().insert(http::header::LOCATION, value);
    }
    response
}

/// A copy of a request target that does not keep the connection's read buffer alive.
fn owned_target(target: &PathAndQuery) -> Option<PathAndQuery> {
    PathAndQuery::from_maybe_shared(Bytes::copy_from_slice(target.as_str().as_bytes())).ok()
}

/// How the client addressed geolb: its `Host` (or `:authority`) and scheme.
type Addressed<'a> = (Option<&'a HeaderValue>, &'static str);

/// The response to the client: node headers cleaned, body streamed with the idle timeout, the
/// in-flight slot held until it ends.
fn respond(
    (response, conn): (Response<Incoming>, Conn),
    slot: InFlight,
    (client_host, proto): Addressed<'_>,
    timeouts: ClassTimeouts,
) -> Response<ResponseBody> {
    let (mut parts, body) = response.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    if let Some(host) = client_host {
        rewrite_location(&mut parts.headers, slot.node(), host, proto);
    }
    let body = ResponseBody::upstream(body, conn, IdleTimer::new(timeouts.idle.0), slot);
    Response::from_parts(parts, body)
}

/// The client's body errors (broken, idle, too large) inside an error of the exchange with a node.
fn body_error(err: &upstream::Error) -> Option<ProxyError> {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = source {
        if let Some(body) = e.downcast_ref::<BodyError>() {
            return Some(ProxyError::from(body.clone()));
        }
        source = e.source();
    }
    None
}

impl From<BodyError> for ProxyError {
    fn from(err: BodyError) -> ProxyError {
        match err {
            BodyError::TooLarge(max) => ProxyError::BodyTooLarge(max),
            BodyError::Idle(after) => ProxyError::ClientIdle(after),
            BodyError::Client(why) => ProxyError::ClientBody(why),
        }
    }
}
