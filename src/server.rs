//! Accepting connections: the plain listeners (HTTP/1.1 and h2c) and the admin listener, the
//! cluster task, reloads (a supervisor task applies a new configuration: listeners added or
//! removed, the cluster reconfigured) and a graceful stop.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::{ArcSwap, ArcSwapOption};
use hyper::body::Incoming;
use hyper::server::conn::{http1, http2};
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use crate::admin::Admin;
use crate::cluster::discover::{Resolve, SystemResolver};
use crate::cluster::{Cluster, Queues, Snapshot};
use crate::config::Config;
use crate::conn::{Activity, Executor, Gate, Stop};
use crate::control::{Reconfigure, ReloadRequest, Source};
use crate::framing::{Verdicts, Watched};
use crate::metrics::Metrics;
use crate::proxy::{Peer, Proxy};
use crate::record::Recorder;
use crate::response::ResponseBody;

/// Why geolb could not start, or a reload could not bind a listener.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot listen on {addr} ({what}): {source}")]
    Bind {
        addr: SocketAddr,
        what: &'static str,
        source: std::io::Error,
    },
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
    #[error("{0}")]
    NodeTls(String),
}

/// A running geolb: its bound addresses and what steers it.
pub struct Running {
    /// The plain listeners' bound addresses at start (ports resolved when `:0` was asked).
    pub http: Vec<SocketAddr>,
    /// The TLS listeners' bound addresses at start.
    pub https: Vec<SocketAddr>,
    pub admin: SocketAddr,
    cluster: Arc<ArcSwap<Snapshot>>,
    queues: Arc<Queues>,
    gate: Arc<Gate>,
    reloads: mpsc::Sender<ReloadRequest>,
    stop: watch::Sender<bool>,
    supervisor: JoinHandle<()>,
}

/// A listener being served, and what stops it.
struct Served {
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

/// Binds every listener, starts the watchdogs and serves. Nodes start unknown: traffic flows once
/// their first checks pass. `file` is what [`Source::File`] reloads read.
pub async fn start(config: Config) -> Result<Running, StartError> {
    start_with_file(config, None).await
}

/// [`start`], remembering the config file for reloads (SIGHUP, `POST /reload`).
pub async fn start_with_file(config: Config, file: Option<PathBuf>) -> Result<Running, StartError> {
    start_with(config, file, Arc::new(SystemResolver)).await
}

/// [`start_with_file`] with the resolver DNS discovery uses (tests bring their own).
pub async fn start_with(
    config: Config,
    file: Option<PathBuf>,
    resolver: Arc<dyn Resolve>,
) -> Result<Running, StartError> {
    let config = Arc::new(config);
    let mut http_listeners = Vec::new();
    for &addr in &config.listen.http {
        http_listeners.push((addr, bind(addr, "listen.http").await?));
    }
    let mut https_listeners = Vec::new();
    for &addr in &config.listen.https {
        https_listeners.push((addr, bind(addr, "listen.https").await?));
    }
    let admin_listener = bind(config.admin.listen, "admin.listen").await?;
    let tls = match config.tls.certs.is_empty() {
        true => None,
        false => Some(crate::tls::server_config(&config.tls.certs)?),
    };
    let node_tls = crate::tls::client_config(&config.forwarding).map_err(StartError::NodeTls)?;

    let queues = Arc::new(Queues::default());
    let metrics = Arc::new(Metrics::new());
    let cluster = Cluster::new(
        config.clone(),
        queues.clone(),
        metrics.clone(),
        resolver,
        node_tls.clone(),
    );
    let shared = cluster.shared();
    let recorder = Arc::new(Recorder::start(config.log.clone(), metrics.clone()));
    let proxy = Arc::new(Proxy::new(
        shared.clone(),
        cluster.reporter(),
        queues.clone(),
        recorder.clone(),
    ));
    let (reloads, reload_rx) = mpsc::channel(4);
    let admin_view = Arc::new(Admin::new(
        shared.clone(),
        metrics.clone(),
        cluster.commander(),
        reloads.clone(),
    ));
    let (max, per_client) = connection_caps(&config);
    tracing::info!(max_connections = max, per_client, "client connection caps");
    let gate = Gate::new(max, per_client, metrics.client_connections.clone());
    let running_gate = gate.clone();
    let mut supervisor = Supervisor {
        connections: Arc::new(ArcSwap::from_pointee(Connections::of(&config))),
        proxy,
        admin_view,
        http: HashMap::new(),
        https: HashMap::new(),
        tls: Arc::new(ArcSwapOption::new(tls)),
        admin: None,
        config: config.clone(),
        file,
        reconfigure: cluster.reconfigurer(),
        recorder,
        metrics,
        gate,
    };
    let mut http = Vec::new();
    for (addr, listener) in http_listeners {
        http.push(local_addr(&listener));
        tracing::info!(addr = %local_addr(&listener), "listening (HTTP/1.1, h2c)");
        supervisor.serve_http(addr, listener, false);
    }
    let mut https = Vec::new();
    for (addr, listener) in https_listeners {
        https.push(local_addr(&listener));
        tracing::info!(addr = %local_addr(&listener), "listening (TLS: HTTP/1.1, HTTP/2)");
        supervisor.serve_http(addr, listener, true);
    }
    let admin = local_addr(&admin_listener);
    tracing::info!(%admin, "admin listening (status page, /status, /metrics, control)");
    supervisor.serve_admin(config.admin.listen, admin_listener);
    let cluster_task = cluster.run();
    let (stop, stopped) = watch::channel(false);
    let supervisor = tokio::spawn(supervisor.run(reload_rx, stopped, cluster_task));
    Ok(Running {
        http,
        https,
        admin,
        cluster: shared,
        queues,
        gate: running_gate,
        reloads,
        stop,
        supervisor,
    })
}

/// `limits.max_connections` (or the default the open-file limit allows) and the per-client cap.
fn connection_caps(config: &Config) -> (usize, usize) {
    let limits = &config.limits;
    let max = match limits.max_connections {
        0 => crate::config::derived_max_connections(open_file_limit()),
        n => n,
    };
    (max, limits.max_connections_per_client)
}

/// The soft limit of open files now.
pub fn open_file_limit() -> u64 {
    rlimit::getrlimit(rlimit::Resource::NOFILE).map_or(1024, |(soft, _)| soft)
}

/// Raises the soft limit of open files to the hard limit (as far as the system allows), so that
/// the default connection cap can be high; returns the new soft limit.
pub fn raise_open_file_limit() -> u64 {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => limit,
        Err(e) => {
            tracing::warn!(error = %e, "cannot raise the open-file limit");
            open_file_limit()
        }
    }
}

async fn bind(addr: SocketAddr, what: &'static str) -> Result<TcpListener, StartError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| StartError::Bind { addr, what, source })
}

fn local_addr(listener: &TcpListener) -> SocketAddr {
    listener
        .local_addr()
        .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)))
}

/// Owns the listeners and applies reloads, one at a time.
struct Supervisor {
    connections: Arc<ArcSwap<Connections>>,
    proxy: Arc<Proxy>,
    admin_view: Arc<Admin>,
    /// By configured address (what a reload compares).
    http: HashMap<SocketAddr, Served>,
    https: HashMap<SocketAddr, Served>,
    /// The https listeners' certificates (swapped by reloads; handshakes read it).
    tls: Arc<ArcSwapOption<rustls::ServerConfig>>,
    admin: Option<(SocketAddr, Served)>,
    config: Arc<Config>,
    file: Option<PathBuf>,
    reconfigure: mpsc::Sender<Reconfigure>,
    recorder: Arc<Recorder>,
    metrics: Arc<Metrics>,
    /// The client connection caps.
    gate: Arc<Gate>,
}

impl Supervisor {
    /// Serves a client listener; `secure` ones speak TLS with the current certificates.
    fn serve_http(&mut self, addr: SocketAddr, listener: TcpListener, secure: bool) {
        let proxy = self.proxy.clone();
        let (stop, stopped) = watch::channel(false);
        let tls = secure.then(|| self.tls.clone());
        let serving = Serving {
            connections: self.connections.clone(),
            tls,
            gate: Some(self.gate.clone()),
            metrics: self.metrics.clone(),
        };
        let task = tokio::spawn(serve(
            listener,
            serving,
            stopped,
            move |addr, verdicts: Arc<Verdicts>| {
                let proxy = proxy.clone();
                let peer = Arc::new(Peer::new(addr));
                move |req: Request<Incoming>| {
                    let (proxy, peer) = (proxy.clone(), peer.clone());
                    // Called in request order, as the framing guard counted them.
                    let refused = verdicts.refuses_next();
                    // Boxed: an idle keep-alive connection then holds no room for a request in
                    // flight (the request's future is a few KiB).
                    Box::pin(async move {
                        Ok::<_, Infallible>(proxy.handle(req, &peer, refused, secure).await)
                    })
                }
            },
        ));
        let served = if secure {
            &mut self.https
        } else {
            &mut self.http
        };
        served.insert(addr, Served { stop, task });
    }

    fn serve_admin(&mut self, addr: SocketAddr, listener: TcpListener) {
        let view = self.admin_view.clone();
        let (stop, stopped) = watch::channel(false);
        let serving = Serving {
            connections: self.connections.clone(),
            tls: None,
            gate: None,
            metrics: self.metrics.clone(),
        };
        let task = tokio::spawn(serve(
            listener,
            serving,
            stopped,
            move |_peer, _verdicts| {
                let view = view.clone();
                move |req: Request<Incoming>| {
                    let view = view.clone();
                    async move {
                        // In progress on its connection (the watchdog closes idle ones).
                        let _in_progress = crate::conn::current().map(|a| a.begin());
                        Ok::<_, Infallible>(view.handle(req).await)
                    }
                }
            },
        ));
        self.admin = Some((addr, Served { stop, task }));
    }

    async fn run(
        mut self,
        mut reloads: mpsc::Receiver<ReloadRequest>,
        mut stopped: watch::Receiver<bool>,
        cluster_task: JoinHandle<()>,
    ) {
        loop {
            tokio::select! {
                Some(request) = reloads.recv() => {
                    let outcome = self.reload(request.source).await;
                    let result = if outcome.is_ok() { "ok" } else { "error" };
                    self.metrics.reloads.with_label_values(&[result]).inc();
                    match &outcome {
                        Ok(()) => tracing::info!("configuration reloaded"),
                        Err(e) => tracing::error!(error = %e, "reload refused: the previous configuration stays in force"),
                    }
                    let _ = request.reply.send(outcome);
                }
                _ = stopped.changed() => break,
            }
        }
        // Stop: no new connections anywhere, then every open one finishes within the grace.
        let served: Vec<Served> = self
            .http
            .into_values()
            .chain(self.https.into_values())
            .chain(self.admin.map(|(_, s)| s))
            .collect();
        for s in &served {
            let _ = s.stop.send(true);
        }
        for s in served {
            let _ = s.task.await;
        }
        cluster_task.abort();
    }

    /// Validates the new configuration, binds new listeners, then swaps: removed listeners stop
    /// accepting and drain; the cluster takes the new nodes, routing and health settings.
    async fn reload(&mut self, source: Source) -> Result<(), String> {
        let config = match source {
            Source::Given(config) => *config,
            Source::File => match &self.file {
                Some(path) => Config::load(path).map_err(|e| e.to_string())?,
                None => return Err("geolb was not started from a config file".into()),
            },
        };
        // Certificates first, then bind what is new, before changing anything: a bad certificate
        // or a busy port refuses the whole reload.
        let tls = match config.tls.certs.is_empty() {
            true => None,
            false => Some(crate::tls::server_config(&config.tls.certs).map_err(|e| e.to_string())?),
        };
        let node_tls = crate::tls::client_config(&config.forwarding)?;
        let mut new_listeners = Vec::new();
        for (addrs, secure) in [(&config.listen.http, false), (&config.listen.https, true)] {
            let served = if secure { &self.https } else { &self.http };
            for &addr in addrs {
                if !served.contains_key(&addr) {
                    let what = if secure {
                        "listen.https"
                    } else {
                        "listen.http"
                    };
                    new_listeners.push((
                        addr,
                        secure,
                        bind(addr, what).await.map_err(|e| e.to_string())?,
                    ));
                }
            }
        }
        let new_admin = match &self.admin {
            Some((addr, _)) if *addr == config.admin.listen => None,
            _ => Some(
                bind(config.admin.listen, "admin.listen")
                    .await
                    .map_err(|e| e.to_string())?,
            ),
        };
        let config = Arc::new(config);
        self.connections.store(Arc::new(Connections::of(&config)));
        let (max, per_client) = connection_caps(&config);
        self.gate.set(max, per_client);
        // New handshakes get the new certificates; open TLS connections keep theirs.
        self.tls.store(tls);
        self.recorder.set_settings(config.log.clone());
        let (done, applied) = oneshot::channel();
        self.reconfigure
            .send(Reconfigure {
                config: config.clone(),
                node_tls,
                done,
            })
            .await
            .map_err(|_| "the cluster task is not running".to_string())?;
        let _ = applied.await;
        for (addr, secure, listener) in new_listeners {
            tracing::info!(addr = %local_addr(&listener), secure, "listening");
            self.serve_http(addr, listener, secure);
        }
        for (served, wanted) in [
            (&mut self.http, &config.listen.http),
            (&mut self.https, &config.listen.https),
        ] {
            let gone: Vec<SocketAddr> = served
                .keys()
                .filter(|a| !wanted.contains(a))
                .copied()
                .collect();
            for addr in gone {
                if let Some(s) = served.remove(&addr) {
                    tracing::info!(%addr, "listener removed: its connections finish");
                    let _ = s.stop.send(true);
                }
            }
        }
        if let Some(listener) = new_admin {
            if let Some((addr, old)) = self.admin.take() {
                tracing::info!(%addr, "admin listener moved");
                let _ = old.stop.send(true);
            }
            self.serve_admin(config.admin.listen, listener);
        }
        self.config = config;
        Ok(())
    }
}

/// How client connections are served: HTTP/1.1 and h2 (h2c with prior knowledge, or h2 agreed
/// by ALPN) with the configured limits and timeouts.
fn client_facing(config: &Config) -> (http1::Builder, http2::Builder<Executor>) {
    let limits = &config.limits;
    let idle = config.timeouts.client_headers.0;
    let mut h1 = http1::Builder::new();
    h1.timer(TokioTimer::new())
        // Slowloris, and idle keep-alive connections: the head must come within this.
        .header_read_timeout(idle)
        .max_buf_size(limits.max_header_bytes)
        .max_headers(limits.max_headers);
    let mut h2 = http2::Builder::new(Executor);
    h2.timer(TokioTimer::new())
        .max_header_list_size(limits.max_header_bytes.min(u32::MAX as usize) as u32)
        // A peer that vanished while its streams wait (a long GetMap) is found out.
        .keep_alive_interval(Some(idle))
        .keep_alive_timeout(idle);
    (h1, h2)
}

/// What a new connection speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Protocol {
    Http1,
    Http2,
}

/// The HTTP/2 connection preface a client with prior knowledge starts with (RFC 9113 §3.4).
const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// What a plain connection speaks, from its first bytes, peeked (left for the server to read: a
/// server reading them first would have to hand them back, and then grows its read buffer).
/// Anything but the h2 preface is HTTP/1 (the framing guard and hyper judge it). `Err(true)`:
/// nothing, or only part of the preface (a trickle), within `within`; `Err(false)`: the client
/// closed or the connection broke.
async fn sniff(stream: &tokio::net::TcpStream, within: Duration) -> Result<Protocol, bool> {
    let deadline = tokio::time::Instant::now() + within;
    let mut first = [0u8; H2_PREFACE.len()];
    let mut pause = Duration::from_millis(2);
    loop {
        let peeked = tokio::time::timeout_at(deadline, stream.peek(&mut first)).await;
        let n = match peeked {
            Ok(Ok(n)) if n > 0 => n,
            Ok(_) => return Err(false),
            Err(_) => return Err(true),
        };
        if first[..n] != H2_PREFACE[..n] {
            return Ok(Protocol::Http1);
        }
        if n == H2_PREFACE.len() {
            return Ok(Protocol::Http2);
        }
        // Part of the preface so far (rare): look again, less and less often, by the deadline.
        if tokio::time::Instant::now() >= deadline {
            return Err(true);
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(100));
    }
}

/// The connection builders, the head size limit, the idle limit and the grace period of a stop:
/// read at each accept, so a reload applies to new connections.
struct Connections {
    http1: http1::Builder,
    http2: http2::Builder<Executor>,
    max_head: usize,
    /// `timeouts.client_headers`: a TLS handshake, and a connection with no request in progress.
    idle: Duration,
    /// The shortest idle timeout of a response: how often a busy connection is looked at.
    stall_look: Duration,
    grace: Duration,
}

impl Connections {
    fn of(config: &Config) -> Connections {
        let (http1, http2) = client_facing(config);
        Connections {
            http1,
            http2,
            max_head: config.limits.max_header_bytes,
            idle: config.timeouts.client_headers.0,
            stall_look: config
                .timeouts
                .reads
                .idle
                .0
                .min(config.timeouts.master.idle.0),
            grace: config.listen.shutdown_grace.0,
        }
    }
}

/// The connections open on one listener, to wait for at a stop.
#[derive(Default)]
struct Live {
    open: std::sync::atomic::AtomicUsize,
    gone: tokio::sync::Notify,
}

struct LiveGuard(Arc<Live>);

impl Drop for LiveGuard {
    fn drop(&mut self) {
        use std::sync::atomic::Ordering;
        if self.0.open.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.gone.notify_waiters();
        }
    }
}

impl Live {
    async fn all_gone(&self) {
        use std::sync::atomic::Ordering;
        loop {
            let gone = self.gone.notified();
            tokio::pin!(gone);
            gone.as_mut().enable();
            if self.open.load(Ordering::Acquire) == 0 {
                return;
            }
            gone.await;
        }
    }
}

/// What a listener serves its connections with.
struct Serving {
    connections: Arc<ArcSwap<Connections>>,
    /// TLS listeners: the certificates in force.
    tls: Option<Arc<ArcSwapOption<rustls::ServerConfig>>>,
    /// Client listeners: the connection caps (the admin listener has none).
    gate: Option<Arc<Gate>>,
    metrics: Arc<Metrics>,
}

/// Accepts (within the connection caps) until told to stop, then lets open connections finish
/// within the grace period, and closes what is left. With TLS, each connection's handshake runs on
/// its own task (within `timeouts.client_headers`).
async fn serve<MakeSvc, Svc, Fut>(
    listener: TcpListener,
    serving: Serving,
    mut stopped: watch::Receiver<bool>,
    make_service: MakeSvc,
) where
    MakeSvc: Fn(SocketAddr, Arc<Verdicts>) -> Svc + Clone + Send + Sync + 'static,
    Svc: Fn(Request<Incoming>) -> Fut + Send + 'static,
    Fut: Future<Output = Result<Response<ResponseBody>, Infallible>> + Send + 'static,
{
    let (stop, conns_stop) = watch::channel(Stop::Run);
    let live = Arc::new(Live::default());
    loop {
        // Over `limits.max_connections`, stop accepting: the kernel's backlog holds the rest.
        let ticket = match &serving.gate {
            Some(gate) => tokio::select! {
                ticket = gate.reserve() => Some(ticket),
                _ = stopped.changed() => break,
            },
            None => None,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    static FAILED: crate::log::LogBudget = crate::log::LogBudget::new(1);
                    if let Some(held_back) = FAILED.allow() {
                        tracing::warn!(error = %e, held_back, "accept failed");
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stopped.changed() => break,
        };
        let ticket = match ticket.map(|t| t.admit(peer.ip())) {
            Some(None) => {
                serving.metrics.connections_cut("client-cap").inc();
                continue;
            }
            admitted => admitted.flatten(),
        };
        let _ = stream.set_nodelay(true);
        let settings = serving.connections.load_full();
        let tls = serving.tls.as_ref().and_then(|t| t.load_full());
        let (stop, metrics, make_service) = (
            conns_stop.clone(),
            serving.metrics.clone(),
            make_service.clone(),
        );
        live.open.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        let guard = LiveGuard(live.clone());
        tokio::spawn(async move {
            let (_ticket, _guard) = (ticket, guard);
            let conn = Conn {
                peer,
                settings: &settings,
                stop,
                metrics,
            };
            // Boxed, each its own size: the task does not hold room for the largest of them
            // (a TLS handshake, or serving TLS) on every plain connection.
            match tls {
                None => match sniff(&stream, settings.idle).await {
                    Ok(protocol) => Box::pin(conn.serve(stream, protocol, make_service)).await,
                    Err(true) => {
                        tracing::debug!(%peer, "no request head or h2 preface in time");
                        conn.metrics.connections_cut("idle").inc();
                    }
                    Err(false) => {}
                },
                Some(config) => {
                    let acceptor = tokio_rustls::TlsAcceptor::from(config);
                    let handshake = Box::pin(acceptor.accept(stream));
                    match tokio::time::timeout(settings.idle, handshake).await {
                        Ok(Ok(stream)) => {
                            // h2 over TLS is agreed by ALPN (RFC 9113 §3.2).
                            let protocol = match stream.get_ref().1.alpn_protocol() {
                                Some(b"h2") => Protocol::Http2,
                                _ => Protocol::Http1,
                            };
                            Box::pin(conn.serve(stream, protocol, make_service)).await
                        }
                        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                }
            }
        });
    }
    drop(listener);
    let grace = serving.connections.load().grace;
    let _ = stop.send(Stop::Graceful);
    if tokio::time::timeout(grace, live.all_gone()).await.is_err() {
        tracing::warn!("grace period over: closing the remaining connections");
        let _ = stop.send(Stop::Now);
        live.all_gone().await;
    }
}

/// One accepted connection, before its protocol is known.
struct Conn<'a> {
    peer: SocketAddr,
    settings: &'a Connections,
    stop: watch::Receiver<Stop>,
    metrics: Arc<Metrics>,
}

impl Conn<'_> {
    /// Serves HTTP/1.1 or h2 on `io` (behind the framing guard) until the connection ends.
    async fn serve<IO, MakeSvc, Svc, Fut>(self, io: IO, protocol: Protocol, make_service: MakeSvc)
    where
        IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
        MakeSvc: Fn(SocketAddr, Arc<Verdicts>) -> Svc,
        Svc: Fn(Request<Incoming>) -> Fut + Send + 'static,
        Fut: Future<Output = Result<Response<ResponseBody>, Infallible>> + Send + 'static,
    {
        let (io, verdicts) = Watched::new(io, self.settings.max_head);
        let (io, service) = (
            TokioIo::new(io),
            service_fn(make_service(self.peer, verdicts)),
        );
        let activity = Activity::new(self.settings.stall_look);
        let (idle, stop, metrics) = (self.settings.idle, self.stop, self.metrics);
        match protocol {
            Protocol::Http1 => {
                let conn = Box::pin(self.settings.http1.serve_connection(io, service));
                let graceful = |conn: Pin<&mut _>| http1::Connection::graceful_shutdown(conn);
                crate::conn::drive(conn, graceful, activity, idle, stop, metrics).await;
            }
            Protocol::Http2 => {
                let conn = Box::pin(self.settings.http2.serve_connection(io, service));
                let graceful = |conn: Pin<&mut _>| http2::Connection::graceful_shutdown(conn);
                crate::conn::drive(conn, graceful, activity, idle, stop, metrics).await;
            }
        }
    }
}

impl Running {
    /// The routing snapshot in force now.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.cluster.load_full()
    }

    /// Client connections open now (TLS handshakes included).
    pub fn open_connections(&self) -> usize {
        self.gate.open()
    }

    /// The queues of requests waiting for a node slot.
    pub fn queues(&self) -> &Queues {
        &self.queues
    }

    /// Reloads: validates, then puts the new configuration in force without dropping a
    /// connection; an invalid one is refused with the message `geolb check` gives, and the old
    /// one stays.
    pub async fn reload(&self, source: Source) -> Result<(), String> {
        let (reply, answer) = oneshot::channel();
        self.reloads
            .send(ReloadRequest { source, reply })
            .await
            .map_err(|_| "geolb is stopping".to_string())?;
        answer
            .await
            .unwrap_or_else(|_| Err("geolb is stopping".into()))
    }

    /// Stops accepting, lets in-flight requests finish (within the grace period), stops the
    /// watchdogs.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let _ = self.supervisor.await;
    }
}

/// What a signal asks of geolb.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Signal {
    /// SIGINT or SIGTERM.
    Stop,
    /// SIGHUP.
    Reload,
}

/// SIGINT, SIGTERM and SIGHUP, registered when made (so a signal sent from then on is not missed).
pub struct Signals {
    interrupt: tokio::signal::unix::Signal,
    terminate: tokio::signal::unix::Signal,
    hangup: tokio::signal::unix::Signal,
}

impl Signals {
    pub fn new() -> std::io::Result<Signals> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Signals {
            interrupt: signal(SignalKind::interrupt())?,
            terminate: signal(SignalKind::terminate())?,
            hangup: signal(SignalKind::hangup())?,
        })
    }

    /// The next signal.
    pub async fn recv(&mut self) -> Signal {
        tokio::select! {
            _ = self.interrupt.recv() => Signal::Stop,
            _ = self.terminate.recv() => Signal::Stop,
            _ = self.hangup.recv() => Signal::Reload,
        }
    }

    /// The next SIGINT or SIGTERM (SIGHUPs in between are ignored).
    pub async fn stop(&mut self) {
        while self.recv().await != Signal::Stop {}
    }
}
