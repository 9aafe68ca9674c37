//! Shared test support: simulated GeoServer nodes on 127.0.0.1:0, geolb in front of them, an HTTP
//! client, and waiting on conditions with deadlines (never bare sleeps).
#![allow(dead_code)]

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use geolb::cluster::health::State;
use geolb::config::Config;
use geolb::server::{self, Running};
use geolb::sim::{Catalog, SimNode};
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

pub type TestBody = BoxBody<Bytes, Infallible>;

/// One node of a test cluster: its name, master priority, whether it serves reads.
#[derive(Clone, Copy)]
pub struct NodeDef {
    pub name: &'static str,
    pub master: Option<u32>,
    pub reads: bool,
}

pub const fn node(name: &'static str, master: Option<u32>) -> NodeDef {
    NodeDef {
        name,
        master,
        reads: true,
    }
}

/// The seed's topology: one master, two replicas.
pub const THREE: &[NodeDef] = &[
    node("gs-master", Some(1)),
    node("gs-replica-1", None),
    node("gs-replica-2", None),
];

/// A master candidate that serves no reads, and two replicas: whatever a replica receives, geolb
/// read as a read.
pub const MASTER_WRITES_ONLY: &[NodeDef] = &[
    NodeDef {
        name: "gs-master",
        master: Some(1),
        reads: false,
    },
    node("gs-replica-1", None),
    node("gs-replica-2", None),
];

/// Sends raw `bytes` over a new connection; what came back until the server closed (or 5 s).
pub async fn raw(addr: SocketAddr, bytes: &[u8]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(bytes).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

/// geolb and its simulated nodes.
pub struct Harness {
    pub nodes: Vec<SimNode>,
    pub geolb: Running,
    pub client: Client<HttpConnector, TestBody>,
    pub interval: Duration,
    pub timeout: Duration,
    pub rise: u32,
    pub fall: u32,
}

pub struct Options {
    pub interval: &'static str,
    pub timeout: &'static str,
    pub rise: u32,
    pub fall: u32,
    /// Extra TOML appended to the `[routing]` table.
    pub routing: &'static str,
    /// Extra TOML put at the end.
    pub extra: &'static str,
    /// Write the access log to stdout (off by default: it would flood the test output).
    pub access_log: bool,
    /// `admin.token`.
    pub admin_token: Option<&'static str>,
    /// The `[consistency]` table. Read-your-writes is off by default here: most tests write, then
    /// look at where reads go as the classifier sends them.
    pub consistency: &'static str,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            interval: "200ms",
            timeout: "100ms",
            rise: 2,
            fall: 3,
            routing: "",
            extra: "",
            access_log: false,
            admin_token: None,
            consistency: "read_your_writes = \"0s\"\n",
        }
    }
}

/// The TOML of a test cluster: `defs` on the simulated `nodes` (paired in order).
pub fn config_text(defs: &[NodeDef], nodes: &[SimNode], opts: &Options) -> String {
    let mut text = format!(
        "[listen]\nhttp = [\"127.0.0.1:0\"]\n[admin]\nlisten = \"127.0.0.1:0\"\n[routing]\n{}\n\
         [health]\ninterval = \"{}\"\ntimeout = \"{}\"\nrise = {}\nfall = {}\n",
        opts.routing, opts.interval, opts.timeout, opts.rise, opts.fall
    );
    for (def, sim) in defs.iter().zip(nodes) {
        text.push_str(&format!(
            "[[nodes]]\nname = \"{}\"\nurl = \"{}\"\nreads = {}\n",
            def.name,
            sim.url(),
            def.reads
        ));
        if let Some(p) = def.master {
            text.push_str(&format!("master = {p}\n"));
        }
    }
    text.push_str(&format!("[log]\naccess = {}\n", opts.access_log));
    text.push_str(&format!("[consistency]\n{}", opts.consistency));
    if let Some(token) = opts.admin_token {
        text = text.replace("[admin]\n", &format!("[admin]\ntoken = \"{token}\"\n"));
    }
    text.push_str(opts.extra);
    text
}

impl Harness {
    pub async fn start(defs: &[NodeDef]) -> Harness {
        Harness::start_with(defs, Options::default()).await
    }

    pub async fn start_with(defs: &[NodeDef], opts: Options) -> Harness {
        let mut nodes = Vec::new();
        for def in defs {
            nodes.push(
                SimNode::start(def.name, "127.0.0.1:0".parse().unwrap())
                    .await
                    .expect("sim node starts"),
            );
        }
        Harness::on(defs, nodes, opts).await
    }

    /// A cluster sharing `catalog`: node `i` learns what is published `lags[i]` after it is.
    pub async fn start_cluster(
        defs: &[NodeDef],
        opts: Options,
        catalog: &Catalog,
        lags: &[Duration],
    ) -> Harness {
        let mut nodes = Vec::new();
        for (def, lag) in defs.iter().zip(lags) {
            let addr = "127.0.0.1:0".parse().unwrap();
            let node = SimNode::start_in(def.name, addr, catalog.clone(), *lag).await;
            nodes.push(node.expect("sim node starts"));
        }
        Harness::on(defs, nodes, opts).await
    }

    /// geolb in front of `nodes` (paired with `defs` in order), once every node is up.
    pub async fn on(defs: &[NodeDef], nodes: Vec<SimNode>, opts: Options) -> Harness {
        let text = config_text(defs, &nodes, &opts);
        let config =
            Config::parse(&text).unwrap_or_else(|e| panic!("test config invalid: {e}\n{text}"));
        let (interval, timeout) = (config.health.interval.0, config.health.timeout.0);
        let geolb = server::start(config).await.expect("geolb starts");
        let harness = Harness {
            nodes,
            geolb,
            client: client(),
            interval,
            timeout,
            rise: opts.rise,
            fall: opts.fall,
        };
        harness.wait_all_up().await;
        harness
    }

    pub fn sim(&self, name: &str) -> &SimNode {
        self.nodes
            .iter()
            .find(|n| n.name() == name)
            .expect("known node")
    }

    pub fn proxy(&self) -> SocketAddr {
        self.geolb.http[0]
    }

    pub fn url(&self, target: &str) -> String {
        format!("http://{}{target}", self.proxy())
    }

    pub fn state(&self, name: &str) -> State {
        let snap = self.geolb.snapshot();
        let i = snap
            .nodes
            .iter()
            .position(|n| n.name() == name)
            .expect("known node");
        snap.states[i]
    }

    /// Why `name` was last ejected (panics when it never was).
    pub fn ejection_reason(&self, name: &str) -> String {
        let snap = self.geolb.snapshot();
        let node = snap
            .nodes
            .iter()
            .find(|n| n.name() == name)
            .expect("known node");
        node.last_ejection().expect("an ejection").reason.clone()
    }

    pub fn master(&self) -> Option<String> {
        self.geolb.snapshot().master().map(|n| n.name().to_string())
    }

    pub async fn wait_all_up(&self) {
        let names: Vec<String> = self.nodes.iter().map(|n| n.name().to_string()).collect();
        wait_for("every node up", Duration::from_secs(10), || {
            names.iter().all(|n| self.state(n) == State::Up)
        })
        .await;
    }

    pub async fn wait_state(&self, name: &str, state: State, within: Duration) {
        wait_for(&format!("{name} {state}"), within, || {
            self.state(name) == state
        })
        .await;
    }

    pub async fn send(
        &self,
        method: Method,
        target: &str,
        headers: &[(&str, &str)],
        body: impl Into<Bytes>,
    ) -> Reply {
        let mut req = Request::builder().method(method).uri(self.url(target));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let req = req.body(Full::new(body.into()).boxed()).unwrap();
        send(&self.client, req).await
    }

    pub async fn get(&self, target: &str) -> Reply {
        self.send(Method::GET, target, &[], Bytes::new()).await
    }

    /// A write that goes to the master: a WFS Transaction.
    pub async fn write(&self) -> Reply {
        self.send(
            Method::POST,
            "/geoserver/wfs",
            &[("content-type", "text/xml")],
            "<wfs:Transaction/>",
        )
        .await
    }
}

impl Harness {
    /// A request to the admin listener, with `Authorization: Bearer {token}` when given.
    pub async fn admin(&self, method: Method, path: &str, token: Option<&str>) -> Reply {
        let mut req = Request::builder()
            .method(method)
            .uri(format!("http://{}{path}", self.geolb.admin));
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        let req = req.body(Full::new(Bytes::new()).boxed()).unwrap();
        send(&self.client, req).await
    }

    /// A `/metrics` scrape (text format).
    pub async fn scrape(&self) -> String {
        let req = Request::get(format!("http://{}/metrics", self.geolb.admin))
            .body(Full::new(Bytes::new()).boxed())
            .unwrap();
        let r = send(&self.client, req).await;
        assert_eq!(r.status, StatusCode::OK);
        assert!(r
            .header("content-type")
            .starts_with("text/plain; version=0.0.4"));
        r.text()
    }
}

/// What came back.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    /// The node that answered (`X-Node`), or "" when geolb answered itself.
    pub fn node(&self) -> &str {
        self.headers
            .get("x-node")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

pub fn client() -> Client<HttpConnector, TestBody> {
    Client::builder(TokioExecutor::new()).build_http()
}

pub async fn send(client: &Client<HttpConnector, TestBody>, req: Request<TestBody>) -> Reply {
    let response = tokio::time::timeout(Duration::from_secs(30), client.request(req))
        .await
        .expect("response within 30s")
        .expect("request sent");
    let (parts, body) = response.into_parts();
    let body = body.collect().await.expect("body read").to_bytes();
    Reply {
        status: parts.status,
        headers: parts.headers,
        body,
    }
}

/// Polls `cond` every 5 ms until it holds; panics naming `what` after `within`.
pub async fn wait_for(what: &str, within: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !cond() {
        assert!(
            Instant::now() < deadline,
            "timed out after {within:?} waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Like [`wait_for`] with an async probe that yields a value once the condition holds.
pub async fn wait_for_async<T, F: Future<Output = Option<T>>>(
    what: &str,
    within: Duration,
    mut probe: impl FnMut() -> F,
) -> T {
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = probe().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {within:?} waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// One request of a [`Load`]: when it ended, which node answered, its status.
#[derive(Clone, Debug)]
pub struct Sample {
    pub at: Instant,
    pub node: String,
    pub status: StatusCode,
    /// How long the request took, sent to answer read whole.
    pub took: Duration,
}

/// Steady read load: `clients` concurrent clients sending `target` in a loop until stopped (or
/// `max` requests in all, so the loop is bounded whatever happens).
pub struct Load {
    samples: std::sync::Arc<std::sync::Mutex<Vec<Sample>>>,
    stop: tokio::sync::watch::Sender<bool>,
    tasks: tokio::task::JoinSet<()>,
}

impl Load {
    pub fn start(h: &Harness, target: &str, clients: usize, max: usize) -> Load {
        let samples = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let mut tasks = tokio::task::JoinSet::new();
        let sent = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        for _ in 0..clients {
            let (client, url, samples, stopped, sent) = (
                h.client.clone(),
                h.url(target),
                samples.clone(),
                stopped.clone(),
                sent.clone(),
            );
            tasks.spawn(async move {
                while !*stopped.borrow()
                    && sent.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < max
                {
                    let req = Request::get(&url)
                        .body(Full::new(Bytes::new()).boxed())
                        .unwrap();
                    let sent_at = Instant::now();
                    let r = send(&client, req).await;
                    let sample = Sample {
                        at: Instant::now(),
                        node: r.node().to_string(),
                        status: r.status,
                        took: sent_at.elapsed(),
                    };
                    samples.lock().unwrap().push(sample);
                }
            });
        }
        Load {
            samples,
            stop,
            tasks,
        }
    }

    /// How many requests have ended so far.
    pub fn count(&self) -> usize {
        self.samples.lock().unwrap().len()
    }

    pub async fn stop(mut self) -> Vec<Sample> {
        let _ = self.stop.send(true);
        while self.tasks.join_next().await.is_some() {}
        std::mem::take(&mut *self.samples.lock().unwrap())
    }
}
