//! Connections to the nodes: each node keeps its idle keep-alive connections in a lock-free queue,
//! and a request drives its connection itself, in its own task (no task per connection, no
//! wake-up crossing tasks or threads on the way to the node and back).
//!
//! What a general-purpose client did for geolb is done here on purpose:
//! - the request target goes out in origin-form (`/geoserver/wms?…`): an absolute-form target makes
//!   Tomcat ignore the client's `Host`;
//! - a request that a reused connection never sent (the node closed it in between) goes again on
//!   another connection;
//! - an idle connection the node closed is found out before reuse (polled once, and asked whether
//!   it can take a request), and swept by the node's watchdog every health interval.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use crossbeam_queue::ArrayQueue;
use http::uri::Authority;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, Connection, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use crate::body::LentBody;

/// Idle connections kept per node; more are closed when they come back.
const IDLE_PER_NODE: usize = 512;

/// The most a node connection's read buffer grows to (hyper grows it while reads fill it): a
/// bound on the memory of each connection that carries large answers. Response heads must fit.
pub const MAX_READ_BUFFER: usize = 64 * 1024;

/// Why a node could not be reached, or failed the exchange.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("connect: {0}")]
    Connect(#[source] io::Error),
    #[error("connect: no connection within {0:?}")]
    ConnectTimeout(Duration),
    #[error("TLS: {0}")]
    Tls(#[source] io::Error),
    /// The exchange failed once connected (reset, closed early, a malformed response, or the
    /// request body failing: see [`crate::body::BodyError`] in its sources).
    #[error(transparent)]
    Http(#[from] hyper::Error),
}

impl Error {
    /// No connection was made: the request never reached the node.
    pub fn is_connect(&self) -> bool {
        !matches!(self, Error::Http(_))
    }

    /// The node's host answered that nothing listens on its port (`ECONNREFUSED`): a definite
    /// answer, unlike a timeout (a stopped container, a GeoServer that exited, a scaled-down
    /// replica whose address is still in DNS).
    pub fn is_refused(&self) -> bool {
        matches!(self, Error::Connect(e) if e.kind() == io::ErrorKind::ConnectionRefused)
    }

    /// Nothing is there: the host refused the port, or the node's name does not resolve (a
    /// stopped container leaves Docker's DNS at once). A definite answer, unlike a timeout or a
    /// resolver that could not be asked (`Temporary failure in name resolution`).
    pub fn is_gone(&self) -> bool {
        self.is_refused() || matches!(self, Error::Connect(e) if is_unknown_name(e))
    }
}

/// A lookup that found no such name (`EAI_NONAME`, `EAI_NODATA`): the standard library gives
/// only the resolver's message, glibc's or musl's.
fn is_unknown_name(e: &io::Error) -> bool {
    let text = e.to_string();
    text.starts_with("failed to lookup address information")
        && [
            "Name or service not known",
            "No address associated with hostname",
            "Name does not resolve",
        ]
        .iter()
        .any(|why| text.contains(why))
}

/// How geolb speaks TLS to `https://` nodes (`forwarding.ca_bundle`, `client_cert`…).
#[derive(Clone)]
pub struct NodeTls(TlsConnector);

impl NodeTls {
    pub fn new(config: Arc<rustls::ClientConfig>) -> NodeTls {
        NodeTls(TlsConnector::from(config))
    }
}

impl std::fmt::Debug for NodeTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NodeTls")
    }
}

/// A connection to a node: plain TCP or TLS.
pub enum NodeStream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

/// Connects to `authority` (TLS when `tls` is given), within `timeout` in all.
pub async fn connect(
    authority: &Authority,
    tls: Option<&NodeTls>,
    timeout: Duration,
) -> Result<NodeStream, Error> {
    let deadline = tokio::time::Instant::now() + timeout;
    let tcp = tokio::time::timeout_at(deadline, TcpStream::connect(authority.as_str()))
        .await
        .map_err(|_| Error::ConnectTimeout(timeout))?
        .map_err(Error::Connect)?;
    let _ = tcp.set_nodelay(true);
    let Some(NodeTls(connector)) = tls else {
        return Ok(NodeStream::Plain(tcp));
    };
    let host = authority.host();
    let name = rustls::pki_types::ServerName::try_from(
        host.trim_start_matches('[')
            .trim_end_matches(']')
            .to_string(),
    )
    .map_err(|e| Error::Tls(io::Error::new(io::ErrorKind::InvalidInput, e)))?;
    let stream = tokio::time::timeout_at(deadline, connector.connect(name, tcp))
        .await
        .map_err(|_| Error::ConnectTimeout(timeout))?
        .map_err(Error::Tls)?;
    Ok(NodeStream::Tls(Box::new(stream)))
}

impl AsyncRead for NodeStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            NodeStream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            NodeStream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for NodeStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            NodeStream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            NodeStream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            NodeStream::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            NodeStream::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            NodeStream::Plain(s) => s.is_write_vectored(),
            NodeStream::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            NodeStream::Plain(s) => Pin::new(s).poll_flush(cx),
            NodeStream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            NodeStream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            NodeStream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

type Driver = Connection<TokioIo<NodeStream>, LentBody>;

/// One HTTP/1.1 connection to a node: where requests are sent, and the state machine that moves
/// its bytes, polled by whoever uses the connection (the request, then its response body).
pub struct Conn {
    send: SendRequest<LentBody>,
    /// Gone once the connection is closed (dropping it fails what it had not answered).
    driver: Option<Pin<Box<Driver>>>,
    /// It carried a request before (a request it could not send may go on another one).
    reused: bool,
    /// How long it took to open, for its first exchange.
    opened_in: Option<Duration>,
}

impl Conn {
    async fn open(stream: NodeStream) -> Result<Conn, Error> {
        let (send, driver) = http1::Builder::new()
            .max_buf_size(MAX_READ_BUFFER)
            .handshake(TokioIo::new(stream))
            .await?;
        Ok(Conn {
            send,
            driver: Some(Box::pin(driver)),
            reused: false,
            opened_in: None,
        })
    }

    /// A new connection to `dest`.
    async fn connect(dest: &Dest<'_>) -> Result<Conn, Error> {
        let began = Instant::now();
        let stream = connect(dest.authority, dest.tls, dest.connect_timeout).await?;
        let mut conn = Conn::open(stream).await?;
        conn.opened_in = Some(began.elapsed());
        Ok(conn)
    }

    /// How long connecting took, when this exchange opened the connection.
    pub fn connect_time(&self) -> Option<Duration> {
        self.opened_in
    }

    /// Moves the connection's bytes (request body out, response in): the response body's data
    /// comes from here. Ready once the connection is closed.
    pub fn drive(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if let Some(driver) = &mut self.driver {
            if driver.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            self.driver = None;
        }
        Poll::Ready(())
    }

    /// Whether the connection can take another request now. Polls it once without a waker, which
    /// also unhooks the last task that polled it (an idle connection wakes nobody).
    fn reusable(&mut self) -> bool {
        self.drive(&mut Context::from_waker(Waker::noop()))
            .is_pending()
            && self.send.is_ready()
    }
}

/// A node's idle connections.
#[derive(Debug)]
pub struct Pool {
    idle: ArrayQueue<Idle>,
    /// How long an idle connection is kept (`forwarding.pool_idle_timeout`), in ms.
    max_idle_ms: AtomicU64,
}

struct Idle {
    conn: Conn,
    since: Instant,
}

impl std::fmt::Debug for Idle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Idle").field("since", &self.since).finish()
    }
}

/// Where and how to reach a node.
pub struct Dest<'a> {
    pub authority: &'a Authority,
    /// Set for `https://` nodes.
    pub tls: Option<&'a NodeTls>,
    pub connect_timeout: Duration,
    /// On a new connection, never a pooled one: for a write, which geolb never sends twice. A
    /// pooled connection may be the one the node is closing as idle (a keep-alive timeout, a
    /// graceful stop) just as the request goes out: the request is lost unanswered and cannot
    /// be sent again (RFC 9112 §9.3.1). A new connection is not one the node closes as idle.
    pub fresh: bool,
}

impl Default for Pool {
    fn default() -> Self {
        Pool::new(Duration::from_secs(15))
    }
}

impl Pool {
    pub fn new(max_idle: Duration) -> Pool {
        Pool {
            idle: ArrayQueue::new(IDLE_PER_NODE),
            max_idle_ms: AtomicU64::new(max_idle.as_millis() as u64),
        }
    }

    /// Sets how long idle connections are kept (a reload may change it).
    pub fn set_max_idle(&self, max_idle: Duration) {
        self.max_idle_ms
            .store(max_idle.as_millis() as u64, Ordering::Relaxed);
    }

    /// How long idle connections are kept.
    pub fn max_idle(&self) -> Duration {
        Duration::from_millis(self.max_idle_ms.load(Ordering::Relaxed))
    }

    /// Idle connections held now.
    pub fn idle(&self) -> usize {
        self.idle.len()
    }

    /// An idle connection that is still open and ready, if any.
    fn checkout(&self) -> Option<Conn> {
        let max_idle = self.max_idle();
        while let Some(Idle { mut conn, since }) = self.idle.pop() {
            if since.elapsed() < max_idle && conn.reusable() {
                conn.reused = true;
                conn.opened_in = None;
                return Some(conn);
            }
        }
        None
    }

    /// Takes back a connection whose exchange is over; one that cannot take another request
    /// (closed, or its exchange cut short) is closed.
    pub fn put(&self, mut conn: Conn) {
        if conn.reusable() {
            let _ = self.idle.push(Idle {
                conn,
                since: Instant::now(),
            });
        }
    }

    /// Closes the connections idle for too long, or closed by the node.
    pub fn sweep(&self) {
        let max_idle = self.max_idle();
        for _ in 0..self.idle.len() {
            let Some(mut idle) = self.idle.pop() else {
                return;
            };
            if idle.since.elapsed() < max_idle && idle.conn.reusable() {
                let _ = self.idle.push(idle);
            }
        }
    }

    /// Closes every idle connection (the way to reach the node changed).
    pub fn clear(&self) {
        while self.idle.pop().is_some() {}
    }

    /// Sends `request` to the node on an idle connection, or a new one, and waits for the response
    /// head, driving the connection in this task. The connection comes back with the response: its
    /// body is read through it.
    pub async fn send(
        &self,
        dest: &Dest<'_>,
        mut request: Request<LentBody>,
    ) -> Result<(Response<Incoming>, Conn), Error> {
        loop {
            let pooled = if dest.fresh { None } else { self.checkout() };
            let mut conn = match pooled {
                Some(conn) => conn,
                // Boxed: the connect and TLS handshake futures are large, and rarely needed.
                None => Box::pin(Conn::connect(dest)).await?,
            };
            let mut response = std::pin::pin!(conn.send.try_send_request(request));
            let answered = std::future::poll_fn(|cx| {
                let driving = conn.drive(cx).is_pending();
                // Only the driver, polled just above in this task, completes the response: this
                // task's waker need not be left with it.
                let noop = &mut Context::from_waker(Waker::noop());
                match response.as_mut().poll(noop) {
                    Poll::Pending if !driving => response.as_mut().poll(cx),
                    polled => polled,
                }
            })
            .await;
            match answered {
                Ok(response) => return Ok((response, conn)),
                Err(mut e) => match e.take_message() {
                    // The node closed the idle connection just as it was taken: the request
                    // never left, and goes on another connection.
                    Some(back) if conn.reused => request = back,
                    _ => return Err(Error::Http(e.into_error())),
                },
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lookup(why: &str) -> Error {
        Error::Connect(io::Error::other(format!(
            "failed to lookup address information: {why}"
        )))
    }

    // The lookup failure's text as the standard library words it (as seen in geolb's log when
    // Docker dropped a stopped container's name).
    #[test]
    fn a_refusal_or_an_unknown_name_is_gone_a_timeout_or_a_resolver_outage_is_not() {
        let refused = Error::Connect(io::Error::from(io::ErrorKind::ConnectionRefused));
        assert!(refused.is_gone());
        assert!(lookup("Name or service not known").is_gone());
        assert!(lookup("Name does not resolve").is_gone());
        assert!(!lookup("Temporary failure in name resolution").is_gone());
        assert!(!Error::ConnectTimeout(Duration::from_secs(5)).is_gone());
        let reset = Error::Connect(io::Error::from(io::ErrorKind::ConnectionReset));
        assert!(!reset.is_gone());
    }
}
