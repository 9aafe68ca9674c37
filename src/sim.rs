//! A simulated GeoServer node for the demo, integration tests and benchmarks: an
//! HTTP/1.1 + h2c server that names itself in `X-Node` and can be told to fail, hang,
//! answer OGC exceptions, or be killed and restarted on the same port.

use std::convert::Infallible;
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
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
use tokio::net::TcpListener;
use tokio::sync::{watch, Mutex};
use tokio::task::{JoinHandle, JoinSet};

/// How a [`SimNode`] answers non-control requests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Answer like a working GeoServer.
    Healthy,
    /// Answer 503 to everything, health probes included.
    Fail,
    /// Never answer (until the node is killed).
    Hang,
    /// Answer 200 with an OGC `ServiceExceptionReport`.
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

const EXCEPTION_XML: &str = "<?xml version=\"1.0\"?><ServiceExceptionReport version=\"1.3.0\">\
    <ServiceException code=\"NoApplicableCode\">simulated exception</ServiceException>\
    </ServiceExceptionReport>";
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
}

impl Shared {
    fn mode(&self) -> Mode {
        Mode::ALL[usize::from(self.mode.load(Ordering::Relaxed)).min(3)]
    }

    fn set_mode(&self, mode: Mode) {
        self.mode.store(mode as u8, Ordering::Relaxed);
    }
}

/// A running accept loop: flipping `stop` makes it close the listener and every connection.
struct Running {
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

/// A simulated GeoServer node. Cloning shares the same node; dropping the last clone stops it.
#[derive(Clone)]
pub struct SimNode {
    shared: Arc<Shared>,
    running: Arc<Mutex<Option<Running>>>,
}

impl SimNode {
    /// Binds `addr` (e.g. 127.0.0.1:0) and starts serving on a spawned tokio task.
    pub async fn start(name: &str, addr: SocketAddr) -> io::Result<SimNode> {
        let listener = TcpListener::bind(addr).await?;
        let shared = Arc::new(Shared {
            name: name.to_owned(),
            addr: listener.local_addr()?,
            mode: AtomicU8::new(Mode::Healthy as u8),
            hits: AtomicU64::new(0),
            writes: AtomicU64::new(0),
            probes: AtomicU64::new(0),
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

    /// Requests received that are not health probes (a probe has a User-Agent starting
    /// with "geolb-health"). Control requests under /__sim/ (fail, hang, exception,
    /// recover) are not counted either; blob, slow and redirect requests are.
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

    /// Sets hits, writes and probes back to zero.
    pub fn reset_counters(&self) {
        for counter in [&self.shared.hits, &self.shared.writes, &self.shared.probes] {
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
/// every request races the stop signal (h2 runs requests on their own tasks).
fn spawn_server(listener: TcpListener, shared: Arc<Shared>) -> Running {
    let (stop, stop_rx) = watch::channel(false);
    let builder = Arc::new(Builder::new(TokioExecutor::new()));
    let mut loop_stop = stop_rx.clone();
    let task = tokio::spawn(async move {
        let mut conns = JoinSet::new();
        loop {
            let (stream, _) = tokio::select! {
                () = stopped(&mut loop_stop) => break,
                Some(_) = conns.join_next(), if !conns.is_empty() => continue,
                accepted = listener.accept() => match accepted {
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
            conns.spawn(async move {
                let conn = builder.serve_connection(TokioIo::new(stream), service);
                let _ = conn.await;
            });
        }
        drop(listener);
        conns.shutdown().await;
    });
    Running { stop, task }
}

/// Resolves once the node is told to stop (or its handle is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|&stop| stop).await;
}

/// Counts the request, then answers it according to the node's mode.
async fn handle(shared: &Shared, req: Request<Incoming>) -> Response<SimBody> {
    const CONTROL: [(&str, Mode); 4] = [
        ("/__sim/fail", Mode::Fail),
        ("/__sim/hang", Mode::Hang),
        ("/__sim/exception", Mode::Exception),
        ("/__sim/recover", Mode::Healthy),
    ];
    let path = req.uri().path();
    let mut resp = if let Some(&(_, mode)) = CONTROL.iter().find(|(s, _)| path.ends_with(s)) {
        shared.set_mode(mode);
        ok(TEXT, format!("mode: {mode}\n"))
    } else {
        let ua = req.headers().get(header::USER_AGENT);
        if ua.is_some_and(|ua| ua.as_bytes().starts_with(b"geolb-health")) {
            shared.probes.fetch_add(1, Ordering::Relaxed);
        } else {
            shared.hits.fetch_add(1, Ordering::Relaxed);
            if !matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS) {
                shared.writes.fetch_add(1, Ordering::Relaxed);
            }
        }
        match shared.mode() {
            Mode::Fail => simple(StatusCode::SERVICE_UNAVAILABLE, TEXT, "simulated failure\n"),
            Mode::Hang => std::future::pending().await,
            Mode::Exception => ok("text/xml", EXCEPTION_XML),
            Mode::Healthy => healthy(shared, req).await,
        }
    };
    if let Ok(name) = HeaderValue::from_str(&shared.name) {
        resp.headers_mut().insert(X_NODE, name);
    }
    resp
}

/// Answers like a working GeoServer, echoing the routing headers it saw.
async fn healthy(shared: &Shared, req: Request<Incoming>) -> Response<SimBody> {
    let (parts, body) = req.into_parts();
    let (uri, name) = (&parts.uri, shared.name.as_str());
    let path = uri.path();
    let mut resp = match parts.method {
        Method::POST | Method::PUT | Method::PATCH => digest(name, &parts, body).await,
        Method::DELETE => ok(TEXT, "deleted\n"),
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
        _ => {
            let request = query_param(uri, "request").unwrap_or_default();
            if request.eq_ignore_ascii_case("GetCapabilities") {
                let xml = format!(
                    "<?xml version=\"1.0\" encoding=\"UTF-8\"?><WMS_Capabilities version=\"1.3.0\">\
                     <Service><Name>WMS</Name><Title>simulated GeoServer {name}</Title></Service>\
                     </WMS_Capabilities>"
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

#[cfg(test)]
mod tests {
    use super::*;
    use hyper_util::client::legacy::{connect::HttpConnector, Client};
    use std::time::Instant;

    type Answer = (http::response::Parts, Bytes);

    /// A node plus a client that talks to it.
    struct Fixture {
        node: SimNode,
        client: Client<HttpConnector, Full<Bytes>>,
    }

    async fn setup() -> Fixture {
        let node = SimNode::start("node-a", SocketAddr::from(([127, 0, 0, 1], 0))).await;
        let client = Client::builder(TokioExecutor::new()).build_http();
        Fixture {
            node: node.expect("start sim node"),
            client,
        }
    }

    impl Fixture {
        async fn send(&self, req: http::request::Builder, body: Bytes) -> Answer {
            let req = req.body(Full::new(body)).expect("request");
            let resp = self.client.request(req).await.expect("response");
            let (parts, body) = resp.into_parts();
            (parts, body.collect().await.expect("body").to_bytes())
        }

        async fn call(&self, method: Method, path: &str) -> Answer {
            let url = format!("{}{path}", self.node.url());
            self.send(Request::builder().method(method).uri(url), Bytes::new())
                .await
        }

        async fn get(&self, path: &str) -> Answer {
            self.call(Method::GET, path).await
        }
    }

    fn header<'a>(parts: &'a http::response::Parts, name: &str) -> &'a str {
        let value = parts.headers.get(name).map(HeaderValue::to_str);
        value.and_then(Result::ok).unwrap_or("")
    }

    #[tokio::test]
    async fn capabilities_and_map_name_the_node() {
        let t = setup().await;
        let (parts, body) = t
            .get("/geoserver/wms?SERVICE=WMS&Request=getcapabilities")
            .await;
        assert_eq!(parts.status, StatusCode::OK);
        assert_eq!(header(&parts, "x-node"), "node-a");
        assert_eq!(header(&parts, "content-type"), "text/xml");
        assert_eq!(header(&parts, "x-seen-version"), "HTTP/1.1");
        assert_eq!(header(&parts, "x-seen-host"), t.node.addr().to_string());
        let body = String::from_utf8_lossy(&body);
        assert!(body.contains("<Title>simulated GeoServer node-a</Title>"));
        let (parts, body) = t.get("/wms?request=GetMap").await;
        assert_eq!(header(&parts, "content-type"), "image/png");
        assert_eq!(&body[..], PNG_1X1);
    }

    #[tokio::test]
    async fn post_body_digest_matches_what_was_sent() {
        let t = setup().await;
        let payload: Vec<u8> = (0..1_000_003u32).map(|i| (i % 251) as u8).collect();
        let expected = hex(&Sha256::digest(&payload));
        let req = Request::post(format!("{}/geoserver/rest/layers", t.node.url()));
        let (parts, body) = t.send(req, payload.into()).await;
        assert_eq!(header(&parts, "x-body-sha256"), expected);
        assert_eq!(header(&parts, "x-body-length"), "1000003");
        let json: serde_json::Value = serde_json::from_slice(&body).expect("json");
        assert_eq!(json["sha256"], expected.as_str());
        assert_eq!(json["bytes"], 1_000_003);
        assert_eq!(json["path"], "/geoserver/rest/layers");
    }

    #[tokio::test]
    async fn blob_stream_matches_blob_sha256() {
        let t = setup().await;
        let path = "/geoserver/__sim/blob?bytes=200005&seed=7";
        let (parts, body) = t.get(path).await;
        assert_eq!(header(&parts, "content-length"), "200005");
        assert_eq!(hex(&Sha256::digest(&body)), blob_sha256(200_005, 7));
        assert_ne!(blob_sha256(64, 1), blob_sha256(64, 2));
        assert_eq!(blob_sha256(0, 0), hex(&Sha256::digest(b"")));
        let (parts, body) = t.call(Method::HEAD, path).await;
        assert_eq!(header(&parts, "content-length"), "200005");
        assert!(body.is_empty());
    }

    #[tokio::test]
    async fn fail_exception_and_recover() {
        let t = setup().await;
        let (parts, body) = t.call(Method::POST, "/__sim/fail").await;
        assert_eq!(
            (parts.status, &body[..]),
            (StatusCode::OK, &b"mode: fail\n"[..])
        );
        assert_eq!(t.node.mode(), Mode::Fail);
        let (parts, _) = t.get("/geoserver/wms").await;
        assert_eq!(parts.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(header(&parts, "x-node"), "node-a");
        t.get("/geoserver/__sim/exception").await;
        let (parts, body) = t.get("/wms").await;
        assert_eq!(
            (parts.status, &body[..]),
            (StatusCode::OK, EXCEPTION_XML.as_bytes())
        );
        t.get("/geoserver/__sim/recover").await;
        let (parts, body) = t.get("/geoserver/wms").await;
        assert_eq!(
            (parts.status, &body[..]),
            (StatusCode::OK, &b"node-a\n"[..])
        );
    }

    #[tokio::test]
    async fn kill_drops_connections_and_restart_reopens_the_port() {
        let t = setup().await;
        t.node.set_mode(Mode::Hang);
        let req = Request::get(t.node.url()).body(Full::default());
        let hung = tokio::spawn(t.client.request(req.expect("request")));
        let deadline = Instant::now() + Duration::from_secs(5);
        while t.node.hits() == 0 {
            assert!(Instant::now() < deadline, "hung request never arrived");
            tokio::task::yield_now().await;
        }
        t.node.kill().await;
        let outcome = tokio::time::timeout(Duration::from_secs(5), hung).await;
        assert!(
            matches!(outcome, Ok(Ok(Err(_)))),
            "in-flight request must fail"
        );
        assert!(tokio::net::TcpStream::connect(t.node.addr()).await.is_err());
        t.node.restart().await.expect("restart");
        assert!(t.node.restart().await.is_err(), "already running");
        assert!(tokio::net::TcpStream::connect(t.node.addr()).await.is_ok());
        t.node.set_mode(Mode::Healthy);
        assert_eq!(header(&t.get("/wms").await.0, "x-node"), "node-a");
    }

    #[tokio::test]
    async fn probes_hits_and_writes_are_counted_apart() {
        let t = setup().await;
        let probe = Request::get(format!("{}/wms?request=GetCapabilities", t.node.url()));
        t.send(probe.header("user-agent", "geolb-health/0.1"), Bytes::new())
            .await;
        t.get("/geoserver/web/").await;
        t.call(Method::DELETE, "/geoserver/rest/x").await;
        t.get("/__sim/recover").await;
        assert_eq!((t.node.probes(), t.node.hits(), t.node.writes()), (1, 2, 1));
        t.node.reset_counters();
        assert_eq!((t.node.probes(), t.node.hits(), t.node.writes()), (0, 0, 0));
        let (parts, _) = t.get("/__sim/redirect").await;
        assert_eq!(parts.status, StatusCode::FOUND);
        let location = format!("http://{}/geoserver/web/", t.node.addr());
        assert_eq!(header(&parts, "location"), location);
    }
}
