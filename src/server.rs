//! Accepting connections: the plain listeners (HTTP/1.1 and h2c) and the admin listener, the
//! cluster task, and a graceful stop.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::cluster::{Cluster, Snapshot};
use crate::config::Config;
use crate::framing::{Verdicts, Watched};
use crate::metrics::Metrics;
use crate::proxy::{Proxy, ResponseBody};
use crate::record::Recorder;

/// Why geolb could not start.
#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {addr} ({what}): {source}")]
pub struct StartError {
    pub addr: SocketAddr,
    pub what: &'static str,
    pub source: std::io::Error,
}

/// A running geolb: its bound addresses and what stops it.
pub struct Running {
    /// The plain listeners' bound addresses (ports resolved when `:0` was asked).
    pub http: Vec<SocketAddr>,
    pub admin: SocketAddr,
    cluster: Arc<ArcSwap<Snapshot>>,
    stop: watch::Sender<bool>,
    listeners: Vec<JoinHandle<()>>,
    cluster_task: JoinHandle<()>,
}

/// Binds every listener, starts the watchdogs and serves. Nodes start unknown: traffic flows once
/// their first checks pass.
pub async fn start(config: Config) -> Result<Running, StartError> {
    let config = Arc::new(config);
    let bind = |addr: SocketAddr, what: &'static str| async move {
        TcpListener::bind(addr)
            .await
            .map_err(|source| StartError { addr, what, source })
    };
    let mut http_listeners = Vec::new();
    for &addr in &config.listen.http {
        http_listeners.push(bind(addr, "listen.http").await?);
    }
    let admin_listener = bind(config.admin.listen, "admin.listen").await?;

    let slot_freed = Arc::new(tokio::sync::Notify::new());
    let metrics = Arc::new(Metrics::new());
    let cluster = Cluster::new(config.clone(), slot_freed.clone(), metrics.clone());
    let shared = cluster.shared();
    let recorder = Arc::new(Recorder::start(config.log.clone(), metrics.clone()));
    let proxy = Arc::new(Proxy::new(
        &config,
        shared.clone(),
        cluster.reporter(),
        slot_freed,
        recorder,
    ));
    let commander = cluster.commander();
    let cluster_task = cluster.run();
    let (stop, stopped) = watch::channel(false);
    let connections = Connections {
        builder: client_facing(&config),
        max_head: config.limits.max_header_bytes,
        grace: config.listen.shutdown_grace.0,
    };

    let mut http = Vec::new();
    let mut listeners = Vec::new();
    for listener in http_listeners {
        http.push(local_addr(&listener));
        let proxy = proxy.clone();
        listeners.push(tokio::spawn(serve(
            listener,
            connections.clone(),
            stopped.clone(),
            move |peer, verdicts: Arc<Verdicts>| {
                let proxy = proxy.clone();
                move |req: Request<Incoming>| {
                    let proxy = proxy.clone();
                    // Called in request order, as the framing guard counted them.
                    let smuggled = verdicts.next_is_flagged();
                    async move { Ok::<_, Infallible>(proxy.handle(req, peer, smuggled).await) }
                }
            },
        )));
    }
    let admin = local_addr(&admin_listener);
    let admin_view = Arc::new(crate::admin::Admin::new(
        shared.clone(),
        metrics,
        commander,
        config.admin.token.clone(),
    ));
    listeners.push(tokio::spawn(serve(
        admin_listener,
        connections,
        stopped,
        move |_peer, _verdicts| {
            let view = admin_view.clone();
            move |req: Request<Incoming>| {
                let view = view.clone();
                async move { Ok::<_, Infallible>(view.handle(req).await) }
            }
        },
    )));
    for addr in &http {
        tracing::info!(%addr, "listening (HTTP/1.1, h2c)");
    }
    tracing::info!(%admin, "admin listening (GET /status)");
    Ok(Running {
        http,
        admin,
        cluster: shared,
        stop,
        listeners,
        cluster_task,
    })
}

fn local_addr(listener: &TcpListener) -> SocketAddr {
    listener
        .local_addr()
        .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)))
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

/// The connection builder, the head size limit and the grace period of a stop.
#[derive(Clone)]
struct Connections {
    builder: auto::Builder<TokioExecutor>,
    max_head: usize,
    grace: Duration,
}

/// Accepts until told to stop, then lets open connections finish within the grace period.
async fn serve<MakeSvc, Svc, Fut>(
    listener: TcpListener,
    connections: Connections,
    mut stopped: watch::Receiver<bool>,
    make_service: MakeSvc,
) where
    MakeSvc: Fn(SocketAddr, Arc<Verdicts>) -> Svc,
    Svc: Fn(Request<Incoming>) -> Fut + Send + 'static,
    Fut: Future<Output = Result<Response<ResponseBody>, Infallible>> + Send + 'static,
{
    let builder = connections.builder;
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
                let (io, verdicts) = Watched::new(stream, connections.max_head);
                let conn = builder.serve_connection(TokioIo::new(io), service_fn(make_service(peer, verdicts))).into_owned();
                let conn = graceful.watch(conn);
                tokio::spawn(async move {
                    if let Err(e) = conn.await {
                        tracing::debug!(%peer, error = %e, "connection closed with an error");
                    }
                });
            }
            _ = stopped.changed() => break,
        }
    }
    drop(listener);
    if tokio::time::timeout(connections.grace, graceful.shutdown())
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

    /// Stops accepting, lets in-flight requests finish (within the grace period), stops the
    /// watchdogs.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        for task in self.listeners {
            let _ = task.await;
        }
        self.cluster_task.abort();
    }
}

/// SIGINT and SIGTERM, registered when made (so a signal sent from then on is not missed).
pub struct StopSignals {
    interrupt: tokio::signal::unix::Signal,
    terminate: tokio::signal::unix::Signal,
}

impl StopSignals {
    pub fn new() -> std::io::Result<StopSignals> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(StopSignals {
            interrupt: signal(SignalKind::interrupt())?,
            terminate: signal(SignalKind::terminate())?,
        })
    }

    /// Resolves on the next SIGINT or SIGTERM.
    pub async fn recv(&mut self) {
        tokio::select! {
            _ = self.interrupt.recv() => {}
            _ = self.terminate.recv() => {}
        }
    }
}
