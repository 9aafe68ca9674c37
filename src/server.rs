//! Accepting connections: the plain listeners (HTTP/1.1 and h2c) and the admin listener, the
//! cluster task, reloads (a supervisor task applies a new configuration: listeners added or
//! removed, the cluster reconfigured) and a graceful stop.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::{ArcSwap, ArcSwapOption};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use crate::admin::Admin;
use crate::cluster::{Cluster, Reconfigure, Snapshot};
use crate::config::Config;
use crate::discover::{Resolve, SystemResolver};
use crate::framing::{Verdicts, Watched};
use crate::metrics::Metrics;
use crate::proxy::{Proxy, ResponseBody};
use crate::queue::Queues;
use crate::record::Recorder;

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

/// Where a reload takes its configuration from.
#[derive(Debug)]
pub enum Source {
    /// Read the file again (with the `GEOLB_*` overrides), as `geolb check` would.
    File,
    /// This configuration, already parsed.
    Given(Box<Config>),
}

/// A reload asked of the supervisor, and where its outcome goes.
pub struct ReloadRequest {
    pub source: Source,
    pub reply: oneshot::Sender<Result<(), String>>,
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
        &config,
        shared.clone(),
        cluster.reporter(),
        queues.clone(),
        recorder.clone(),
        node_tls,
    ));
    let (reloads, reload_rx) = mpsc::channel(4);
    let admin_view = Arc::new(Admin::new(
        shared.clone(),
        metrics.clone(),
        cluster.commander(),
        reloads.clone(),
    ));
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
        reloads,
        stop,
        supervisor,
    })
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
}

impl Supervisor {
    /// Serves a client listener; `secure` ones speak TLS with the current certificates.
    fn serve_http(&mut self, addr: SocketAddr, listener: TcpListener, secure: bool) {
        let proxy = self.proxy.clone();
        let (stop, stopped) = watch::channel(false);
        let tls = secure.then(|| self.tls.clone());
        let task = tokio::spawn(serve(
            listener,
            self.connections.clone(),
            tls,
            stopped,
            move |peer, verdicts: Arc<Verdicts>| {
                let proxy = proxy.clone();
                move |req: Request<Incoming>| {
                    let proxy = proxy.clone();
                    // Called in request order, as the framing guard counted them.
                    let refused = verdicts.refuses_next();
                    async move { Ok::<_, Infallible>(proxy.handle(req, peer, refused, secure).await) }
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
        let task = tokio::spawn(serve(
            listener,
            self.connections.clone(),
            None,
            stopped,
            move |_peer, _verdicts| {
                let view = view.clone();
                move |req: Request<Incoming>| {
                    let view = view.clone();
                    async move { Ok::<_, Infallible>(view.handle(req).await) }
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
        let fixed = self.config.restart_only_changes(&config);
        if !fixed.is_empty() {
            return Err(format!(
                "{} changed: read once at start, a restart puts it in force",
                fixed.join(", ")
            ));
        }
        // Certificates first, then bind what is new, before changing anything: a bad certificate
        // or a busy port refuses the whole reload.
        let tls = match config.tls.certs.is_empty() {
            true => None,
            false => Some(crate::tls::server_config(&config.tls.certs).map_err(|e| e.to_string())?),
        };
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
        // New handshakes get the new certificates; open TLS connections keep theirs.
        self.tls.store(tls);
        self.recorder.set_settings(config.log.clone());
        let (done, applied) = oneshot::channel();
        self.reconfigure
            .send(Reconfigure {
                config: config.clone(),
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

/// How client connections are served: HTTP/1.1 and h2c with the configured limits and timeouts.
fn client_facing(config: &Config) -> auto::Builder<TokioExecutor> {
    let limits = &config.limits;
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        // Slowloris, and idle keep-alive connections: the head must come within this.
        .header_read_timeout(config.timeouts.client_headers.0)
        .max_buf_size(limits.max_header_bytes)
        .max_headers(limits.max_headers);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(limits.max_header_bytes.min(u32::MAX as usize) as u32);
    builder
}

/// The connection builder, the head size limit and the grace period of a stop: read at each
/// accept, so a reload applies to new connections.
struct Connections {
    builder: auto::Builder<TokioExecutor>,
    max_head: usize,
    handshake: Duration,
    grace: Duration,
}

impl Connections {
    fn of(config: &Config) -> Connections {
        Connections {
            builder: client_facing(config),
            max_head: config.limits.max_header_bytes,
            handshake: config.timeouts.client_headers.0,
            grace: config.listen.shutdown_grace.0,
        }
    }
}

/// Accepts until told to stop, then lets open connections finish within the grace period. With
/// `tls`, each connection's handshake runs on its own task (within `timeouts.client_headers`).
async fn serve<MakeSvc, Svc, Fut>(
    listener: TcpListener,
    connections: Arc<ArcSwap<Connections>>,
    tls: Option<Arc<ArcSwapOption<rustls::ServerConfig>>>,
    mut stopped: watch::Receiver<bool>,
    make_service: MakeSvc,
) where
    MakeSvc: Fn(SocketAddr, Arc<Verdicts>) -> Svc + Clone + Send + 'static,
    Svc: Fn(Request<Incoming>) -> Fut + Send + 'static,
    Fut: Future<Output = Result<Response<ResponseBody>, Infallible>> + Send + 'static,
{
    let graceful = GracefulShutdown::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(conn) => conn,
                    Err(e) => {
                        // Out of file descriptors and the like: back off instead of spinning.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let settings = connections.load_full();
                match tls.as_ref().and_then(|t| t.load_full()) {
                    None => {
                        let (io, verdicts) = Watched::new(stream, settings.max_head);
                        let conn = settings.builder.serve_connection(TokioIo::new(io), service_fn(make_service(peer, verdicts))).into_owned();
                        let conn = graceful.watch(conn);
                        tokio::spawn(async move {
                            if let Err(e) = conn.await {
                                tracing::debug!(%peer, error = %e, "connection closed with an error");
                            }
                        });
                    }
                    Some(config) => {
                        let (watcher, make_service) = (graceful.watcher(), make_service.clone());
                        tokio::spawn(async move {
                            let acceptor = tokio_rustls::TlsAcceptor::from(config);
                            let stream = match tokio::time::timeout(settings.handshake, acceptor.accept(stream)).await {
                                Ok(Ok(stream)) => stream,
                                Ok(Err(e)) => return tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                                Err(_) => return tracing::debug!(%peer, "TLS handshake timed out"),
                            };
                            let (io, verdicts) = Watched::new(stream, settings.max_head);
                            let conn = settings.builder.serve_connection(TokioIo::new(io), service_fn(make_service(peer, verdicts)));
                            if let Err(e) = watcher.watch(conn.into_owned()).await {
                                tracing::debug!(%peer, error = %e, "connection closed with an error");
                            }
                        });
                    }
                }
            }
            _ = stopped.changed() => break,
        }
    }
    drop(listener);
    let grace = connections.load().grace;
    if tokio::time::timeout(grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("grace period over: closing the remaining connections");
    }
}

impl Running {
    /// The routing snapshot in force now.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.cluster.load_full()
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
