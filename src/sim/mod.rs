//! A simulated GeoServer node for the demo, integration tests and benchmarks: an
//! HTTP/1.1 + h2c server that names itself in `X-Node` and can be told to fail, hang,
//! answer OGC exceptions, or be killed and restarted on the same port.
//!
//! For stall detection and hedged reads a node can also be frozen ([`SimNode::freeze`]), like a
//! JVM stopped by SIGSTOP or a full GC: the kernel still accepts its connections (they queue in
//! the backlog), but no request is read or answered and responses already streaming stop
//! mid-body; at the thaw everything goes on and nothing fails. Unlike [`Mode::Hang`], which
//! never answers, a freeze only delays. A slow node ([`SimNode::set_delay`]) answers everything
//! but its health probes late.
//!
//! Control paths (any method, under any prefix; not counted as hits, never delayed):
//! `/__sim/fail`, `/__sim/hang`, `/__sim/exception`, `/__sim/recover` (healthy, no delay,
//! thawed), `/__sim/lag?ms=N`, `/__sim/deaf`, `/__sim/hear`, `/__sim/publish?layer=L`,
//! `/__sim/remove?layer=L`, `/__sim/delay?ms=N` (0: none) and `/__sim/freeze?ms=N` (answered,
//! then frozen for N ms). They are the sim's side door, like `kill -CONT` reaching a stopped
//! process: a frozen node answers them on a connection it had already accepted (a new
//! connection waits in the backlog like any other). Test endpoints that are counted:
//! `/__sim/blob?bytes=N&seed=S`, `/__sim/slow?ms=N`, `/__sim/stall`, `/__sim/redirect`.
//!
//! Nodes started with [`SimNode::start_in`] form a cluster sharing a [`Catalog`], like a
//! GeoServer JMS cluster: a layer published on one (a REST `POST` of a feature type or coverage)
//! reaches the others their `lag` later, and until then they answer requests naming it with
//! GeoServer's own exception documents (`LayerNotDefined` and the like). A catalog reload
//! (`POST .../rest/reload`, Basic credentials) keeps the node busy (503) while it lasts.

mod catalog;
mod freeze;
mod ogc;
mod rest;
#[cfg(test)]
mod tests;

use std::convert::Infallible;
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex as StdMutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body::{Body, Frame, SizeHint};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder;
use sha2::{Digest, Sha256};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Mutex};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;

pub use catalog::Catalog;
use catalog::Hearing;
use freeze::Freeze;

/// How a [`SimNode`] answers non-control requests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Answer like a working GeoServer.
    Healthy,
    /// Answer 503 to everything, health probes included.
    Fail,
    /// Never answer (until the node is killed).
    Hang,
    /// Answer 200 with an OGC `ServiceExceptionReport` (`NoApplicableCode`, out of memory).
    Exception,
}

impl Mode {
    const ALL: [Mode; 4] = [Mode::Healthy, Mode::Fail, Mode::Hang, Mode::Exception];
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Mode::Healthy => "healthy",
            Mode::Fail => "fail",
            Mode::Hang => "hang",
            Mode::Exception => "exception",
        })
    }
}

/// The text of the exception a sick node ([`Mode::Exception`]) answers everything with.
pub const SICK_TEXT: &str = "java.lang.OutOfMemoryError: Java heap space";
/// A valid 1x1 transparent RGBA PNG.
const PNG_1X1: &[u8] = &[
    0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0x00, 0x00, 0x00, 0x0d, 0x49, 0x48, 0x44, 0x52,
    0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x01, 0x08, 0x06, 0x00, 0x00, 0x00, 0x1f, 0x15, 0xc4,
    0x89, 0x00, 0x00, 0x00, 0x0b, 0x49, 0x44, 0x41, 0x54, 0x78, 0xda, 0x63, 0x60, 0x00, 0x02, 0x00,
    0x00, 0x05, 0x00, 0x01, 0xe9, 0xfa, 0xdc, 0xd8, 0x00, 0x00, 0x00, 0x00, 0x49, 0x45, 0x4e, 0x44,
    0xae, 0x42, 0x60, 0x82,
];
const TEXT: &str = "text/plain";
const BLOB_CHUNK: usize = 64 * 1024;
/// The most of a publish body a node reads.
const PUBLISH_LIMIT: usize = 1024 * 1024;
const X_NODE: HeaderName = HeaderName::from_static("x-node");

type SimBody = BoxBody<Bytes, Infallible>;

/// State shared by the handle and the serving tasks (no back-reference to the tasks,
/// so dropping the last [`SimNode`] stops the node).
struct Shared {
    name: String,
    addr: SocketAddr,
    mode: AtomicU8,
    hits: AtomicU64,
    writes: AtomicU64,
    probes: AtomicU64,
    exceptions_sent: AtomicU64,
    catalog: Catalog,
    hearing: StdMutex<Hearing>,
    /// REST user and password (for the catalog reload).
    credentials: StdMutex<(String, String)>,
    reload_time: StdMutex<Duration>,
    /// Reloading until then: every request answered 503.
    busy_until: StdMutex<Option<Instant>>,
    reloads: AtomicU64,
    reload_rejections: AtomicU64,
    last_reload_auth: StdMutex<Option<String>>,
    /// Frozen like a stopped JVM: see [`freeze`].
    freeze: Freeze,
    /// How late a slow node answers what is not a probe or a control path.
    delay: StdMutex<Duration>,
}

/// A std mutex's guard, even if a panic elsewhere poisoned it (a test tool: the data stays usable).
fn lock<T>(mutex: &StdMutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Shared {
    fn mode(&self) -> Mode {
        Mode::ALL[usize::from(self.mode.load(Ordering::Relaxed)).min(3)]
    }

    fn set_mode(&self, mode: Mode) {
        self.mode.store(mode as u8, Ordering::Relaxed);
    }

    fn knows(&self, layer: &str) -> bool {
        lock(&self.hearing).knows(&self.catalog, layer)
    }

    /// Publishes (`present`) or removes a layer through this node: it knows at once, the others
    /// after their lag.
    fn change(&self, layer: &str, present: bool) {
        let hearing = lock(&self.hearing);
        self.catalog.change(layer, present, Some(&hearing));
    }

    fn busy(&self) -> bool {
        lock(&self.busy_until).is_some_and(|until| Instant::now() < until)
    }

    fn delay(&self) -> Duration {
        *lock(&self.delay)
    }

    fn set_delay(&self, delay: Duration) {
        *lock(&self.delay) = delay;
    }
}

/// A running accept loop: flipping `stop` makes it close the listener and every connection.
struct Running {
    stop: watch::Sender<bool>,
    /// Set for a graceful stop: listening ends, connections close once their request is done.
    drain: watch::Sender<bool>,
    task: JoinHandle<()>,
}

/// A simulated GeoServer node. Cloning shares the same node; dropping the last clone stops it.
#[derive(Clone)]
pub struct SimNode {
    shared: Arc<Shared>,
    running: Arc<Mutex<Option<Running>>>,
}

impl SimNode {
    /// Binds `addr` (e.g. 127.0.0.1:0) and starts serving on a spawned tokio task. The node has
    /// a catalog of its own that knows every layer name.
    pub async fn start(name: &str, addr: SocketAddr) -> io::Result<SimNode> {
        SimNode::start_in(name, addr, Catalog::open(), Duration::ZERO).await
    }

    /// Like [`start`](Self::start), as a member of a cluster sharing `catalog`: the node sees a
    /// layer `lag` after it was published (or removed); lag zero is the master.
    pub async fn start_in(
        name: &str,
        addr: SocketAddr,
        catalog: Catalog,
        lag: Duration,
    ) -> io::Result<SimNode> {
        let listener = TcpListener::bind(addr).await?;
        let shared = Arc::new(Shared {
            name: name.to_owned(),
            addr: listener.local_addr()?,
            mode: AtomicU8::new(Mode::Healthy as u8),
            hits: AtomicU64::new(0),
            writes: AtomicU64::new(0),
            probes: AtomicU64::new(0),
            exceptions_sent: AtomicU64::new(0),
            catalog,
            hearing: StdMutex::new(Hearing::new(lag)),
            credentials: StdMutex::new(("admin".to_string(), "geoserver".to_string())),
            reload_time: StdMutex::new(Duration::from_millis(300)),
            busy_until: StdMutex::new(None),
            reloads: AtomicU64::new(0),
            reload_rejections: AtomicU64::new(0),
            last_reload_auth: StdMutex::new(None),
            freeze: Freeze::new(),
            delay: StdMutex::new(Duration::ZERO),
        });
        let running = Some(spawn_server(listener, shared.clone()));
        Ok(SimNode {
            shared,
            running: Arc::new(Mutex::new(running)),
        })
    }

    /// The node's name, as sent in `X-Node`.
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// The actual bound address.
    pub fn addr(&self) -> SocketAddr {
        self.shared.addr
    }

    /// Base URL of the node, e.g. `http://127.0.0.1:8081`.
    pub fn url(&self) -> String {
        format!("http://{}", self.shared.addr)
    }

    /// Switches how the node answers from now on.
    pub fn set_mode(&self, mode: Mode) {
        self.shared.set_mode(mode);
    }

    /// The current mode.
    pub fn mode(&self) -> Mode {
        self.shared.mode()
    }

    /// The catalog the node reads (shared with its cluster).
    pub fn catalog(&self) -> Catalog {
        self.shared.catalog.clone()
    }

    /// How far behind the catalog's changes the node is from now on (also for the changes made
    /// before).
    pub fn set_lag(&self, lag: Duration) {
        lock(&self.shared.hearing).lag = lag;
    }

    /// The node's replication lag.
    pub fn lag(&self) -> Duration {
        lock(&self.shared.hearing).lag
    }

    /// A deaf node (a replica cut off from the JMS broker) never learns the changes made while
    /// it is deaf, even once it hears again.
    pub fn set_deaf(&self, deaf: bool) {
        lock(&self.shared.hearing).set_deaf(deaf);
    }

    /// Whether the node is deaf now.
    pub fn is_deaf(&self) -> bool {
        lock(&self.shared.hearing).is_deaf()
    }

    /// Whether the node knows `layer` (`ws:name`; a bare name matches any workspace) now.
    pub fn knows(&self, layer: &str) -> bool {
        self.shared.knows(layer)
    }

    /// The REST credentials the catalog reload must carry (default `admin` / `geoserver`).
    pub fn set_credentials(&self, user: &str, password: &str) {
        *lock(&self.shared.credentials) = (user.to_string(), password.to_string());
    }

    /// How long a catalog reload keeps the node busy (default 300 ms).
    pub fn set_reload_time(&self, time: Duration) {
        *lock(&self.shared.reload_time) = time;
    }

    /// Catalog reloads accepted (right credentials).
    pub fn reloads(&self) -> u64 {
        self.shared.reloads.load(Ordering::Relaxed)
    }

    /// Catalog reloads refused for want of the right credentials.
    pub fn reload_rejections(&self) -> u64 {
        self.shared.reload_rejections.load(Ordering::Relaxed)
    }

    /// The raw `Authorization` header of the last reload attempt (`None`: it had none, or
    /// there was none).
    pub fn last_reload_auth(&self) -> Option<String> {
        lock(&self.shared.last_reload_auth).clone()
    }

    /// Freezes the node now, like a JVM stopped by SIGSTOP or a full GC, and thaws it by itself
    /// `for_` later (on tokio's clock, so paused time thaws it too). While frozen the kernel
    /// still accepts connections but the node takes none from the backlog, reads no request,
    /// sends no response head, and responses already streaming stop between two chunks; at the
    /// thaw all of it goes on and nothing fails. A freeze under way is replaced, its end too.
    /// Control paths still pass on connections already accepted (see the
    /// [module docs](crate::sim)).
    pub fn freeze(&self, for_: Duration) {
        self.shared.freeze.start(for_);
    }

    /// Ends a freeze now (nothing if the node is not frozen).
    pub fn thaw(&self) {
        self.shared.freeze.end();
    }

    /// Whether the node is frozen now.
    pub fn is_frozen(&self) -> bool {
        self.shared.freeze.is_on()
    }

    /// Freezes started, by [`freeze`](Self::freeze) or `/__sim/freeze`.
    pub fn freezes(&self) -> u64 {
        self.shared.freeze.count()
    }

    /// Makes the node slow: from now on every answer but a control path's or a health probe's
    /// waits `delay` (on tokio's clock) before its head. Zero: no delay.
    pub fn set_delay(&self, delay: Duration) {
        self.shared.set_delay(delay);
    }

    /// How late the node answers (zero unless [`set_delay`](Self::set_delay)).
    pub fn delay(&self) -> Duration {
        self.shared.delay()
    }

    /// Exception documents sent to requests that are not health probes: unknown layers (an
    /// exception drawn as an image for `EXCEPTIONS=INIMAGE` included) and a sick node's.
    pub fn exceptions_sent(&self) -> u64 {
        self.shared.exceptions_sent.load(Ordering::Relaxed)
    }

    /// Requests received that are not health probes (a probe has a User-Agent starting
    /// with "geolb-health"). Control requests under /__sim/ (fail, hang, exception,
    /// recover, lag, deaf, hear, publish, remove, delay, freeze) are not counted either; blob,
    /// slow, stall and redirect requests are. A request that arrives while the node is frozen
    /// counts once the node thaws (a stopped JVM sees nothing).
    pub fn hits(&self) -> u64 {
        self.shared.hits.load(Ordering::Relaxed)
    }

    /// Of the [`hits`](Self::hits), the ones whose method is not GET/HEAD/OPTIONS.
    pub fn writes(&self) -> u64 {
        self.shared.writes.load(Ordering::Relaxed)
    }

    /// Health probes received (User-Agent starts with "geolb-health").
    pub fn probes(&self) -> u64 {
        self.shared.probes.load(Ordering::Relaxed)
    }

    /// Sets every counter (hits, writes, probes, exceptions, reloads, rejections and freezes)
    /// back to zero.
    pub fn reset_counters(&self) {
        let s = &self.shared;
        s.freeze.reset_count();
        for counter in [
            &s.hits,
            &s.writes,
            &s.probes,
            &s.exceptions_sent,
            &s.reloads,
            &s.reload_rejections,
        ] {
            counter.store(0, Ordering::Relaxed);
        }
    }

    /// Stops listening AND abruptly closes every open connection (a crashed node): after
    /// it returns, connecting to addr is refused and any in-flight request's connection
    /// is dropped. Does nothing if the node is not running.
    pub async fn kill(&self) {
        if let Some(run) = self.running.lock().await.take() {
            let _ = run.stop.send(true);
            let _ = run.task.await;
        }
    }

    /// Stops as a servlet container asked to (SIGTERM, `docker stop`): stops listening, closes
    /// idle connections, lets requests in progress finish, each connection closing after its
    /// answer; after `grace`, closes what is left like [`kill`](Self::kill).
    pub async fn stop(&self, grace: Duration) {
        if let Some(mut run) = self.running.lock().await.take() {
            let _ = run.drain.send(true);
            if tokio::time::timeout(grace, &mut run.task).await.is_err() {
                let _ = run.stop.send(true);
                let _ = run.task.await;
            }
        }
    }

    /// Binds the same address again and serves (mode is left as it was). Errors if still
    /// running; retries for about a second while the port is still in use.
    pub async fn restart(&self) -> io::Result<()> {
        let mut running = self.running.lock().await;
        if running.is_some() {
            return Err(io::Error::other("sim node is still running"));
        }
        let mut tries = 0;
        let listener = loop {
            match TcpListener::bind(self.shared.addr).await {
                Err(e) if e.kind() == io::ErrorKind::AddrInUse && tries < 50 => tries += 1,
                bound => break bound?,
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        *running = Some(spawn_server(listener, self.shared.clone()));
        Ok(())
    }
}

/// Spawns the accept loop; every connection runs in a `JoinSet` owned by that loop, and
/// every request races the stop signal (h2 runs requests on their own tasks), frozen or not:
/// killing a frozen node works, like SIGKILL on a stopped process. The drain signal (a graceful
/// stop) lets them finish.
fn spawn_server(listener: TcpListener, shared: Arc<Shared>) -> Running {
    let (stop, stop_rx) = watch::channel(false);
    let (drain, drain_rx) = watch::channel(false);
    let builder = Arc::new(Builder::new(TokioExecutor::new()));
    let (mut loop_stop, mut loop_drain) = (stop_rx.clone(), drain_rx.clone());
    let task = tokio::spawn(async move {
        let mut conns = JoinSet::new();
        let draining = loop {
            let (stream, _) = tokio::select! {
                () = stopped(&mut loop_stop) => break false,
                () = stopped(&mut loop_drain) => break true,
                Some(_) = conns.join_next(), if !conns.is_empty() => continue,
                accepted = accept_thawed(&listener, &shared.freeze) => match accepted {
                    Ok(accepted) => accepted,
                    Err(_) => {
                        // e.g. out of file descriptors: back off instead of spinning.
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    }
                },
            };
            let (shared, builder, stop) = (shared.clone(), builder.clone(), stop_rx.clone());
            let service = service_fn(move |req| {
                let (shared, mut stop) = (shared.clone(), stop.clone());
                async move {
                    tokio::select! {
                        resp = handle(&shared, req) => Ok(resp),
                        () = stopped(&mut stop) => Err(io::Error::other("sim node killed")),
                    }
                }
            });
            let mut drain = drain_rx.clone();
            conns.spawn(async move {
                let conn = builder.serve_connection(TokioIo::new(stream), service);
                let mut conn = std::pin::pin!(conn);
                tokio::select! {
                    _ = conn.as_mut() => {}
                    () = stopped(&mut drain) => {
                        // Closed at once if idle, else once the answer in progress is out.
                        conn.as_mut().graceful_shutdown();
                        let _ = conn.await;
                    }
                }
            });
        };
        drop(listener);
        if draining {
            // Until the last connection closes, or a kill.
            loop {
                tokio::select! {
                    next = conns.join_next() => if next.is_none() { break },
                    () = stopped(&mut loop_stop) => break,
                }
            }
        }
        conns.shutdown().await;
    });
    Running { stop, drain, task }
}

/// The next connection from the backlog, taken only while the node is not frozen: a frozen node
/// leaves them queued in the kernel, connected but unanswered. Accepting is cancel-safe, so a
/// freeze that begins while waiting drops the accept and loses nothing.
async fn accept_thawed(
    listener: &TcpListener,
    freeze: &Freeze,
) -> io::Result<(TcpStream, SocketAddr)> {
    loop {
        freeze.thawed().await;
        tokio::select! {
            accepted = listener.accept() => return accepted,
            () = freeze.begun() => {}
        }
    }
}

/// Resolves once the node is told to stop (or its handle is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|&stop| stop).await;
}

/// The sick node's answer: WMS 1.3.0's `NoApplicableCode`, out of memory.
fn sick_exception() -> String {
    ogc::wms_exception_1_3_0("NoApplicableCode", None, SICK_TEXT)
}

/// Applies a control path at once (frozen or not: the sim's side door), or answers like the
/// node would; either way naming the node.
async fn handle(shared: &Shared, req: Request<Incoming>) -> Response<SimBody> {
    let mut resp = match control(shared, req.uri()) {
        Some(resp) => resp,
        None => answer(shared, req).await,
    };
    if let Ok(name) = HeaderValue::from_str(&shared.name) {
        resp.headers_mut().insert(X_NODE, name);
    }
    resp
}

/// Answers a request that is not a control path as a node that may be frozen or slow would:
/// nothing before the thaw (the request, body included, is not even read), then counted,
/// delayed if the node is slow and it is not a probe, answered according to the mode, and held
/// again before its head if a freeze began meanwhile; its body stops during later freezes.
async fn answer(shared: &Shared, req: Request<Incoming>) -> Response<SimBody> {
    shared.freeze.thawed().await;
    let ua = req.headers().get(header::USER_AGENT);
    let probe = ua.is_some_and(|ua| ua.as_bytes().starts_with(b"geolb-health"));
    if probe {
        shared.probes.fetch_add(1, Ordering::Relaxed);
    } else {
        shared.hits.fetch_add(1, Ordering::Relaxed);
        if !matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS) {
            shared.writes.fetch_add(1, Ordering::Relaxed);
        }
        let delay = shared.delay();
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
    }
    let resp = match shared.mode() {
        Mode::Fail => simple(StatusCode::SERVICE_UNAVAILABLE, TEXT, "simulated failure\n"),
        Mode::Hang => std::future::pending().await,
        _ if shared.busy() => simple(StatusCode::SERVICE_UNAVAILABLE, TEXT, "Server Busy\n"),
        Mode::Exception => {
            if !probe {
                shared.exceptions_sent.fetch_add(1, Ordering::Relaxed);
            }
            ok("text/xml", sick_exception())
        }
        Mode::Healthy => healthy(shared, req, probe).await,
    };
    shared.freeze.thawed().await;
    resp.map(|body| shared.freeze.gate(body).boxed())
}

/// The control paths under `/__sim/` that change the node (not counted as hits).
fn control(shared: &Shared, uri: &http::Uri) -> Option<Response<SimBody>> {
    const MODES: [(&str, Mode); 4] = [
        ("/__sim/fail", Mode::Fail),
        ("/__sim/hang", Mode::Hang),
        ("/__sim/exception", Mode::Exception),
        ("/__sim/recover", Mode::Healthy),
    ];
    let path = uri.path();
    if let Some(&(_, mode)) = MODES.iter().find(|(s, _)| path.ends_with(s)) {
        shared.set_mode(mode);
        if mode == Mode::Healthy {
            // Recovering ends every trouble: slowness and a freeze too.
            shared.set_delay(Duration::ZERO);
            shared.freeze.end();
        }
        return Some(ok(TEXT, format!("mode: {mode}\n")));
    }
    let layer = || query_param(uri, "layer").filter(|l| !l.trim().is_empty());
    let missing = || simple(StatusCode::BAD_REQUEST, TEXT, "missing layer\n");
    Some(if path.ends_with("/__sim/lag") {
        match query_u64(uri, "ms") {
            Some(ms) => {
                lock(&shared.hearing).lag = Duration::from_millis(ms);
                ok(TEXT, format!("lag: {ms} ms\n"))
            }
            None => simple(StatusCode::BAD_REQUEST, TEXT, "bad ms\n"),
        }
    } else if path.ends_with("/__sim/delay") {
        match query_u64(uri, "ms") {
            Some(ms) => {
                shared.set_delay(Duration::from_millis(ms));
                ok(TEXT, format!("delay: {ms} ms\n"))
            }
            None => simple(StatusCode::BAD_REQUEST, TEXT, "bad ms\n"),
        }
    } else if path.ends_with("/__sim/freeze") {
        // Required: a freeze of no stated length is a mistake, not "none".
        match query_param(uri, "ms").and_then(|ms| ms.trim().parse::<u64>().ok()) {
            Some(ms) => {
                // Control answers pass a freeze, so this one still goes out after it begins.
                shared.freeze.start(Duration::from_millis(ms));
                ok(TEXT, format!("frozen: {ms} ms\n"))
            }
            None => simple(StatusCode::BAD_REQUEST, TEXT, "bad ms\n"),
        }
    } else if path.ends_with("/__sim/deaf") || path.ends_with("/__sim/hear") {
        let deaf = path.ends_with("/__sim/deaf");
        lock(&shared.hearing).set_deaf(deaf);
        ok(TEXT, if deaf { "deaf\n" } else { "hearing\n" })
    } else if path.ends_with("/__sim/publish") {
        let Some(layer) = layer() else {
            return Some(missing());
        };
        shared.change(layer.trim(), true);
        ok(TEXT, format!("published {}\n", layer.trim()))
    } else if path.ends_with("/__sim/remove") {
        let Some(layer) = layer() else {
            return Some(missing());
        };
        shared.change(layer.trim(), false);
        ok(TEXT, format!("removed {}\n", layer.trim()))
    } else {
        return None;
    })
}

/// Answers like a working GeoServer, echoing the routing headers it saw.
async fn healthy(shared: &Shared, req: Request<Incoming>, probe: bool) -> Response<SimBody> {
    let (parts, body) = req.into_parts();
    let (uri, name) = (&parts.uri, shared.name.as_str());
    let path = uri.path();
    let writing = matches!(parts.method, Method::POST | Method::PUT | Method::PATCH);
    let mut resp = match parts.method {
        Method::POST | Method::PUT if rest::is_reload(path) => reload(shared, &parts).await,
        Method::POST if rest::publish_workspace(path).is_some() => {
            publish(shared, &parts, body).await
        }
        _ if writing => digest(name, &parts, body).await,
        Method::DELETE => {
            if let Some(layer) = rest::removed_layer(path) {
                shared.change(&layer, false);
            }
            ok(TEXT, "deleted\n")
        }
        _ if path.ends_with("/__sim/blob") => {
            match (query_u64(uri, "bytes"), query_u64(uri, "seed")) {
                (Some(bytes), Some(seed)) => {
                    let body = BlobBody(Pattern::new(bytes, seed)).boxed();
                    let mut resp = reply(StatusCode::OK, "application/octet-stream", body);
                    resp.headers_mut()
                        .insert(header::CONTENT_LENGTH, bytes.into());
                    resp
                }
                _ => simple(StatusCode::BAD_REQUEST, TEXT, "bad bytes or seed\n"),
            }
        }
        _ if path.ends_with("/__sim/slow") => match query_u64(uri, "ms") {
            Some(ms) => {
                tokio::time::sleep(Duration::from_millis(ms)).await;
                ok(TEXT, "slow\n")
            }
            None => simple(StatusCode::BAD_REQUEST, TEXT, "bad ms\n"),
        },
        _ if path.ends_with("/__sim/stall") => {
            // A first chunk, then silence: a node that stops sending mid-body.
            let body = StallBody(Some(Bytes::from_static(b"partial"))).boxed();
            reply(StatusCode::OK, TEXT, body)
        }
        _ if path.ends_with("/__sim/redirect") => {
            let mut resp = simple(StatusCode::FOUND, TEXT, Bytes::new());
            let location = format!("http://{}/geoserver/web/", shared.addr);
            if let Ok(location) = HeaderValue::from_str(&location) {
                resp.headers_mut().insert(header::LOCATION, location);
            }
            resp
        }
        _ => match ogc::answer(uri, &|layer| shared.knows(layer)) {
            Some(answer) => {
                if answer.exception && !probe {
                    shared.exceptions_sent.fetch_add(1, Ordering::Relaxed);
                }
                simple(answer.status, answer.ctype, answer.body)
            }
            None => unnamed(shared, uri),
        },
    };
    let headers = resp.headers_mut();
    let authority = || HeaderValue::from_str(uri.authority()?.as_str()).ok();
    if let Some(host) = parts.headers.get(header::HOST).cloned().or_else(authority) {
        headers.insert("x-seen-host", host);
    }
    for (seen, orig) in [
        ("x-seen-forwarded-for", "x-forwarded-for"),
        ("x-seen-forwarded-host", "x-forwarded-host"),
        ("x-seen-forwarded-proto", "x-forwarded-proto"),
        ("x-seen-request-id", "x-request-id"),
    ] {
        if let Some(value) = parts.headers.get(orig) {
            headers.insert(seen, value.clone());
        }
    }
    if let Ok(version) = HeaderValue::from_str(&format!("{:?}", parts.version)) {
        headers.insert("x-seen-version", version);
    }
    if parts.method == Method::HEAD {
        let len = HeaderValue::from(resp.body().size_hint().exact().unwrap_or(0));
        resp.headers_mut()
            .entry(header::CONTENT_LENGTH)
            .or_insert(len);
        resp = resp.map(|_| Empty::new().boxed());
    }
    resp
}

/// A read that names no layer: capabilities (listing the layers the node knows), a map with no
/// layers, REST reads, the web UI, anything else.
fn unnamed(shared: &Shared, uri: &http::Uri) -> Response<SimBody> {
    let (path, name) = (uri.path(), shared.name.as_str());
    let request = query_param(uri, "request").unwrap_or_default();
    if request.eq_ignore_ascii_case("GetCapabilities") {
        let known = lock(&shared.hearing).known(&shared.catalog);
        let layers: String = known
            .iter()
            .map(|l| {
                let l = ogc::escape(l);
                format!("<Layer queryable=\"1\"><Name>{l}</Name><Title>{l}</Title></Layer>")
            })
            .collect();
        let xml = format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?><WMS_Capabilities version=\"1.3.0\">\
             <Service><Name>WMS</Name><Title>simulated GeoServer {}</Title></Service>\
             <Capability><Layer><Title>simulated GeoServer</Title>{layers}</Layer></Capability>\
             </WMS_Capabilities>",
            ogc::escape(name)
        );
        ok("text/xml", xml)
    } else if request.eq_ignore_ascii_case("GetMap") {
        ok("image/png", PNG_1X1)
    } else if path.contains("/rest") {
        let json = serde_json::json!({ "node": name }).to_string();
        ok("application/json", json)
    } else if path.contains("/web") {
        let html = format!(
            "<!DOCTYPE html><html><head><title>GeoServer {name}</title></head>\
             <body><h1>simulated GeoServer {name}</h1></body></html>\n"
        );
        ok("text/html", html)
    } else {
        ok(TEXT, format!("{name}\n"))
    }
}

/// `POST .../rest/reload`: Basic credentials checked; then busy for the reload time, and the
/// answer once done (GeoServer reloads synchronously).
async fn reload(shared: &Shared, parts: &http::request::Parts) -> Response<SimBody> {
    let auth = parts
        .headers
        .get(header::AUTHORIZATION)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
    *lock(&shared.last_reload_auth) = auth.clone();
    let (user, password) = lock(&shared.credentials).clone();
    if !rest::basic_matches(auth.as_deref(), &user, &password) {
        shared.reload_rejections.fetch_add(1, Ordering::Relaxed);
        let mut resp = simple(StatusCode::UNAUTHORIZED, TEXT, "HTTP 401: Unauthorized\n");
        let realm = HeaderValue::from_static("Basic realm=\"GeoServer Realm\"");
        resp.headers_mut().insert(header::WWW_AUTHENTICATE, realm);
        return resp;
    }
    shared.reloads.fetch_add(1, Ordering::Relaxed);
    let time = *lock(&shared.reload_time);
    *lock(&shared.busy_until) = Some(Instant::now() + time);
    tokio::time::sleep(time).await;
    ok(TEXT, "reloaded\n")
}

/// `POST .../featuretypes` or `.../coverages`: publishes the body's `name` into the catalog.
async fn publish(
    shared: &Shared,
    parts: &http::request::Parts,
    mut body: Incoming,
) -> Response<SimBody> {
    let too_large = || simple(StatusCode::PAYLOAD_TOO_LARGE, TEXT, "body too large\n");
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.trim().parse::<u64>().ok());
    if declared.is_some_and(|len| len > PUBLISH_LIMIT as u64) {
        return too_large();
    }
    let mut buf = BytesMut::new();
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else {
            return simple(StatusCode::BAD_REQUEST, TEXT, "body read error\n");
        };
        if let Ok(data) = frame.into_data() {
            if buf.len() + data.len() > PUBLISH_LIMIT {
                return too_large();
            }
            buf.extend_from_slice(&data);
        }
    }
    let path = parts.uri.path();
    let (Some(ws), Some(name)) = (rest::publish_workspace(path), rest::published_name(&buf)) else {
        return simple(StatusCode::BAD_REQUEST, TEXT, "no name in the body\n");
    };
    shared.change(&format!("{ws}:{name}"), true);
    let host = parts
        .headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok());
    let host = host.map_or_else(|| shared.addr.to_string(), str::to_string);
    let base = path.trim_end_matches(".xml").trim_end_matches(".json");
    let location = format!("http://{host}{}/{name}", base.trim_end_matches('/'));
    let mut resp = simple(StatusCode::CREATED, TEXT, name);
    if let Ok(location) = HeaderValue::from_str(&location) {
        resp.headers_mut().insert(header::LOCATION, location);
    }
    resp
}

/// Hashes a request body frame by frame (never buffering it) and reports digest and length.
async fn digest(name: &str, req: &http::request::Parts, mut body: Incoming) -> Response<SimBody> {
    let (mut hasher, mut len) = (Sha256::new(), 0u64);
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else {
            return simple(StatusCode::BAD_REQUEST, TEXT, "body read error\n");
        };
        if let Ok(data) = frame.into_data() {
            hasher.update(&data);
            len += data.len() as u64;
        }
    }
    let sha = hex(&hasher.finalize());
    let (method, path) = (req.method.as_str(), req.uri.path());
    let json = serde_json::json!({
        "node": name, "method": method, "path": path, "bytes": len, "sha256": sha
    });
    let mut resp = ok("application/json", json.to_string());
    if let Ok(value) = HeaderValue::from_str(&sha) {
        resp.headers_mut().insert("x-body-sha256", value);
    }
    resp.headers_mut().insert("x-body-length", len.into());
    resp
}

/// A response with a status, a content type and a body.
fn reply(status: StatusCode, ctype: &'static str, body: SimBody) -> Response<SimBody> {
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    let ctype = HeaderValue::from_static(ctype);
    resp.headers_mut().insert(header::CONTENT_TYPE, ctype);
    resp
}

/// A response with an in-memory body.
fn simple(status: StatusCode, ctype: &'static str, body: impl Into<Bytes>) -> Response<SimBody> {
    reply(status, ctype, Full::new(body.into()).boxed())
}

/// A 200 response with an in-memory body.
fn ok(ctype: &'static str, body: impl Into<Bytes>) -> Response<SimBody> {
    simple(StatusCode::OK, ctype, body)
}

/// The first query value whose key matches `key` case-insensitively.
fn query_param(uri: &http::Uri, key: &str) -> Option<String> {
    form_urlencoded::parse(uri.query()?.as_bytes())
        .find(|(k, _)| k.eq_ignore_ascii_case(key))
        .map(|(_, v)| v.into_owned())
}

/// A numeric query value: `Some(0)` when absent, `None` when present but not a number.
fn query_u64(uri: &http::Uri, key: &str) -> Option<u64> {
    query_param(uri, key).map_or(Some(0), |v| v.trim().parse().ok())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The deterministic blob pattern: a splitmix64 stream, little-endian, cut into chunks.
struct Pattern {
    state: u64,
    remaining: u64,
}

impl Pattern {
    fn new(remaining: u64, state: u64) -> Self {
        Pattern { state, remaining }
    }

    /// The next chunk of at most 64 KiB (a multiple of 8 bytes except the last one).
    fn next_chunk(&mut self) -> Option<Bytes> {
        if self.remaining == 0 {
            return None;
        }
        let len = usize::try_from(self.remaining).map_or(BLOB_CHUNK, |r| r.min(BLOB_CHUNK));
        let mut buf = BytesMut::with_capacity(len);
        while buf.len() < len {
            self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = self.state;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            let word = (z ^ (z >> 31)).to_le_bytes();
            buf.extend_from_slice(&word[..(len - buf.len()).min(8)]);
        }
        self.remaining -= len as u64;
        Some(buf.freeze())
    }
}

/// The deterministic blob pattern as a body with an exact size hint: what `/__sim/blob` streams, and
/// what tests upload. Its SHA-256 is [`blob_sha256`].
pub struct BlobBody(Pattern);

impl BlobBody {
    /// `bytes` bytes of the pattern seeded by `seed`, generated 64 KiB at a time.
    pub fn new(bytes: u64, seed: u64) -> Self {
        BlobBody(Pattern::new(bytes, seed))
    }
}

impl Body for BlobBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Poll::Ready(self.0.next_chunk().map(|chunk| Ok(Frame::data(chunk))))
    }

    fn is_end_stream(&self) -> bool {
        self.0.remaining == 0
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.0.remaining)
    }
}

/// Yields its one chunk, then never anything again.
struct StallBody(Option<Bytes>);

impl Body for StallBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match self.0.take() {
            Some(chunk) => Poll::Ready(Some(Ok(Frame::data(chunk)))),
            None => Poll::Pending,
        }
    }
}

/// SHA-256 (lowercase hex) of the `bytes`-long deterministic pattern that
/// `GET /__sim/blob?bytes=N&seed=S` streams.
pub fn blob_sha256(bytes: u64, seed: u64) -> String {
    let mut pattern = Pattern::new(bytes, seed);
    let mut hasher = Sha256::new();
    while let Some(chunk) = pattern.next_chunk() {
        hasher.update(&chunk);
    }
    hex(&hasher.finalize())
}
