//! Configuration: `config.toml` → serde file types (`deny_unknown_fields`) → [`Config`], validated.
//!
//! Every error names the key (`nodes[1].url`) and, where the parser knows it, the line. Defaults are
//! stated on each field and in the commented `config.toml` at the top of the repository.

use std::fmt;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use http::uri::{Authority, Scheme};
use http::Uri;
use ipnet::IpNet;
use serde::{Deserialize, Deserializer};

use crate::classify::{Pool, RouteRule};

pub mod env;

/// The configuration geolb runs with when none is given: used by `geolb demo` as a template.
pub const EXAMPLE: &str = include_str!("../config.toml");

/// A configuration that parsed and passed validation.
#[derive(Clone, Debug)]
pub struct Config {
    pub listen: Listen,
    pub admin: Admin,
    pub routing: Routing,
    pub routes: Vec<RouteRule>,
    pub health: Health,
    pub passive: Passive,
    pub retries: Retries,
    pub stalls: Stalls,
    pub hedging: Hedging,
    pub consistency: Consistency,
    pub catalog_reload: CatalogReload,
    pub limits: Limits,
    pub timeouts: Timeouts,
    pub forwarding: Forwarding,
    pub log: LogSettings,
    pub tls: Tls,
    pub nodes: Vec<NodeSpec>,
    /// `[[nodes]]` entries discovered through DNS.
    pub discover: Vec<DiscoverSpec>,
}

/// `[log]`: the access log (operational logs go to stderr, filtered by `RUST_LOG`).
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogSettings {
    /// One line per request on stdout. Default true.
    pub access: bool,
    /// `text` (default) or `json`.
    pub format: LogFormat,
    /// Log the query string with the path. Default false (queries can be long, or carry secrets).
    pub query: bool,
}

impl Default for LogSettings {
    fn default() -> Self {
        LogSettings {
            access: true,
            format: LogFormat::Text,
            query: false,
        }
    }
}

/// How access-log lines are written.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// `[listen]`: the client-facing listeners.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Listen {
    /// Plain listeners serving HTTP/1.1 and h2c. Default `["0.0.0.0:8080"]`.
    pub http: Vec<SocketAddr>,
    /// TLS listeners (HTTP/1.1 and HTTP/2 by ALPN), with the certificates of `[[tls.certs]]`.
    /// Default `[]`.
    pub https: Vec<SocketAddr>,
    /// Plain listeners answer every request with a permanent redirect (308) to the first https
    /// listener. Default false.
    pub redirect_https: bool,
    /// On SIGTERM/SIGINT, how long in-flight requests may take to finish. Default `8s` (under
    /// docker's 10 s).
    pub shutdown_grace: Dur,
}

impl Default for Listen {
    fn default() -> Self {
        Listen {
            http: vec![SocketAddr::from(([0, 0, 0, 0], 8080))],
            https: Vec::new(),
            redirect_https: false,
            shutdown_grace: Dur::secs(8),
        }
    }
}

/// `[tls]`: the certificates of the https listeners.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct Tls {
    /// `[[tls.certs]]`: chosen by SNI; the first one for clients without a (matching) name.
    pub certs: Vec<TlsCert>,
}

/// One certificate: a PEM chain (leaf first) and its PEM private key.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct TlsCert {
    pub cert: std::path::PathBuf,
    pub key: std::path::PathBuf,
}

/// `[admin]`: the operator's listener (`GET /status`).
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Admin {
    /// Default `127.0.0.1:9090`.
    pub listen: SocketAddr,
    /// When set, the mutating endpoints (drain, disable, enable, promote, check) require
    /// `Authorization: Bearer <token>`. Required when `listen` is not a loopback address.
    pub token: Option<String>,
}

impl Default for Admin {
    fn default() -> Self {
        Admin {
            listen: SocketAddr::from(([127, 0, 0, 1], 9090)),
            token: None,
        }
    }
}

/// What happens when a better master candidate comes back.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Failback {
    /// A promoted master keeps the role until it fails (default).
    #[default]
    Sticky,
    /// The best-priority healthy candidate always wins.
    Priority,
}

/// How reads are spread over the healthy readers.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Balance {
    /// Of two random nodes, the one whose pace (how many times its request classes' usual time
    /// its recent answers took, returning to 1 over `routing.decay` unused) times its requests in
    /// flight plus one is lower. Default.
    #[default]
    Latency,
    /// Least outstanding requests between two random nodes (classic power of two choices).
    LeastOutstanding,
    /// Each reader in turn.
    RoundRobin,
}

/// `[routing]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Routing {
    /// GeoServer's context path; `""` for a server mounted at `/`. Default `/geoserver`.
    pub context_path: String,
    /// Default `sticky`.
    pub failback: Failback,
    /// Default `latency`.
    pub balance: Balance,
    /// How fast a node's pace and latency forget old answers without new ones (their time
    /// constant), so a node avoided for being slow is tried again. Default `10s`.
    pub decay: Dur,
    /// Bytes of a POST body the classifier may read to find the operation. Default 65536.
    pub lookahead: usize,
    /// A node re-admitted after being down gets a share of reads that grows linearly over this
    /// long. Default `30s`; `0s` disables.
    pub slow_start: Dur,
}

impl Default for Routing {
    fn default() -> Self {
        Routing {
            context_path: "/geoserver".into(),
            failback: Failback::default(),
            balance: Balance::default(),
            decay: Dur::secs(10),
            lookahead: 64 * 1024,
            slow_start: Dur::secs(30),
        }
    }
}

/// `[health]`: the active watchdog, one per node.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct Health {
    /// Path and query probed on every node. Default: a WMS 1.3.0 GetCapabilities under the context.
    pub path: String,
    /// Default `2s`.
    pub interval: Dur,
    /// Default `1s`.
    pub timeout: Dur,
    /// Consecutive passes that re-admit an ejected node. Default 2.
    pub rise: u32,
    /// Consecutive failures that eject a node. Default 3.
    pub fall: u32,
    /// Statuses that count as a pass. Default `[200]`.
    pub expect_status: Vec<u16>,
    /// A substring the body must contain. Default `WMS_Capabilities` (GeoServer reports OGC errors with
    /// HTTP 200); `""` disables the body check.
    pub expect_body: String,
}

impl Default for Health {
    fn default() -> Self {
        Health {
            path: "/geoserver/ows?service=WMS&version=1.3.0&request=GetCapabilities".into(),
            interval: Dur::secs(2),
            timeout: Dur::secs(1),
            rise: 2,
            fall: 3,
            expect_status: vec![200],
            expect_body: "WMS_Capabilities".into(),
        }
    }
}

/// `[passive]`: outlier detection from live traffic.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Passive {
    /// Consecutive live failures (connect errors, timeouts, 5xx) that eject a node at once, before its
    /// next check; active checks re-admit it. Default 5; 0 disables.
    pub consecutive_failures: u32,
    /// At most this share of the nodes may be ejected passively at once. Default 50.
    pub max_ejected_percent: u32,
}

impl Default for Passive {
    fn default() -> Self {
        Passive {
            consecutive_failures: 5,
            max_ejected_percent: 50,
        }
    }
}

/// `[retries]`: the extra attempts of one request (retries of idempotent reads on another node,
/// hedges, second opinions): one per-request cap and one budget.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Retries {
    /// Extra attempts per request, of all kinds together, each on a node not tried yet. Default
    /// 2; 0 disables.
    pub max: u32,
    /// Extra attempts (retries, hedges, second opinions) may add at most this share of load
    /// (percent of requests over `budget_window`). Default 10.
    pub budget_percent: u32,
    /// Retries always allowed per second, whatever the share. Default 10.
    pub budget_min_per_second: u32,
    /// The sliding window of the budget. Default `10s`.
    pub budget_window: Dur,
}

impl Default for Retries {
    fn default() -> Self {
        Retries {
            max: 2,
            budget_percent: 10,
            budget_min_per_second: 10,
            budget_window: Dur::secs(10),
        }
    }
}

/// `[stalls]`: a node with requests waiting that has sent no response head for longer than its
/// recent behaviour explains, while its peers answer, gets no new requests until it answers.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Stalls {
    /// Default true.
    pub enabled: bool,
    /// A quiet is explained up to this many times the node's recent time to first byte. Default 8.
    pub multiple: f64,
    /// And at least this long. Default `200ms`.
    pub min: Dur,
}

impl Default for Stalls {
    fn default() -> Self {
        Stalls {
            enabled: true,
            multiple: 8.0,
            min: Dur::millis(200),
        }
    }
}

/// `[hedging]`: an idempotent read waiting longer than its class usually does (or on a stalled
/// node) is sent once more to another node; the first answer wins.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Hedging {
    /// Default true.
    pub enabled: bool,
    /// The hedge delay of a class (twice its smoothed time to first byte, or that plus four
    /// times its variation) is at least this. Default `50ms`.
    pub min_delay: Dur,
    /// And at most this (also the delay of a class not seen yet). Default `2s`.
    pub max_delay: Dur,
}

impl Default for Hedging {
    fn default() -> Self {
        Hedging {
            enabled: true,
            min_delay: Dur::millis(50),
            max_delay: Dur::secs(2),
        }
    }
}

/// `[consistency]`: hiding the cluster's seams (replication lag, a sick node answering 200 with an
/// OGC exception).
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Consistency {
    /// A read answered with an OGC exception document is asked again of one other node (the master
    /// for "not known here"), within the retry budget. Default true.
    pub second_opinions: bool,
    /// A replica that still does not know a name the master knows this long after it first did
    /// not is deaf to the broker: ejected. Default `30s`.
    pub deaf_after: Dur,
    /// After a client's successful write, its reads go to the master for this long. Default `5s`;
    /// `0s` disables.
    pub read_your_writes: Dur,
    /// Recognise a writing client by its address too, not only by geolb's cookie (for clients that
    /// keep no cookies: scripts). Default true.
    pub by_address: bool,
    /// A file holding the key that signs the cookie: geolb instances sharing it honour each
    /// other's cookies. Default: a random key per process.
    pub key_file: Option<std::path::PathBuf>,
    /// The key read from `key_file`.
    #[serde(skip)]
    pub key: Option<std::sync::Arc<[u8]>>,
}

impl Default for Consistency {
    fn default() -> Self {
        Consistency {
            second_opinions: true,
            deaf_after: Dur::secs(30),
            read_your_writes: Dur::secs(5),
            by_address: true,
            key_file: None,
            key: None,
        }
    }
}

/// `[catalog_reload]`: the rolling catalog reload (`POST /cluster/reload` on the admin listener):
/// one node at a time drained, `POST {context_path}/rest/reload` on it, re-admitted after `rise`
/// passing checks.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CatalogReload {
    /// GeoServer's admin user. Default `admin`.
    pub user: String,
    /// A file holding its password (else the `GEOLB_RELOAD_PASSWORD` environment variable).
    pub password_file: Option<std::path::PathBuf>,
    /// The password read from `password_file` or the environment; never printed.
    #[serde(skip)]
    pub password: Option<Secret>,
    /// Master candidates: `skip` (default: in a JMS cluster a node that broadcasts passes its
    /// reload on to every node) or `last` (one at a time after the others).
    pub masters: MastersPolicy,
    /// How long a node may take to finish its requests in flight once drained. Default `30s`.
    pub drain_timeout: Dur,
    /// How long the reload itself may take, and then coming back (`rise` passing checks).
    /// Default `120s`.
    pub timeout: Dur,
}

impl Default for CatalogReload {
    fn default() -> Self {
        CatalogReload {
            user: "admin".to_string(),
            password_file: None,
            password: None,
            masters: MastersPolicy::Skip,
            drain_timeout: Dur::secs(30),
            timeout: Dur::secs(120),
        }
    }
}

/// What a rolling reload does with master candidates.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum MastersPolicy {
    Skip,
    Last,
}

/// A password: its `Debug` prints nothing of it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// `[limits]`: what geolb accepts from clients and sends to each node.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Requests in flight per node; 0 = unlimited (default). Like haproxy's `maxconn` per server.
    pub max_requests: usize,
    /// Requests that may wait for a free slot when every eligible node is at `max_requests`.
    /// Default 1000.
    pub queue_size: usize,
    /// How long a request may wait for a slot before it gets 503. Default `5s`.
    pub queue_timeout: Dur,
    /// Largest request head (request line and headers), bytes. Default 65536.
    pub max_header_bytes: usize,
    /// Most request headers. Default 100.
    pub max_headers: usize,
    /// Largest request body, bytes; 0 = unlimited (default).
    pub max_body: u64,
    /// Client connections open at once on every client listener (TLS handshakes included, the
    /// admin listener excluded); over it geolb stops accepting until some close, like haproxy's
    /// `maxconn`. 0 (default): derived from the open-file limit at start ([`derived_max_connections`]).
    pub max_connections: usize,
    /// Client connections open at once from one client address; 0 = no per-client cap (default).
    pub max_connections_per_client: usize,
}

/// The default `limits.max_connections` for an open-file limit: half of it (each client connection
/// may need one to a node), less a reserve for listeners, health checks and logs; at least 256.
pub fn derived_max_connections(open_files: u64) -> usize {
    let half = open_files.saturating_sub(512) / 2;
    half.clamp(256, 1_000_000) as usize
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_requests: 0,
            queue_size: 1000,
            queue_timeout: Dur::secs(5),
            max_header_bytes: 64 * 1024,
            max_headers: 100,
            max_body: 0,
            max_connections: 0,
            max_connections_per_client: 0,
        }
    }
}

/// `[timeouts]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Timeouts {
    /// Connecting to a node. Default `5s`.
    pub connect: Dur,
    /// A client must send a whole request head within this, counted from when its connection is
    /// idle (new, or after the previous response): it is also the keep-alive idle timeout, like
    /// haproxy's `timeout http-request`. Default `10s`.
    pub client_headers: Dur,
    /// OGC reads.
    pub reads: ClassTimeouts,
    /// Master traffic: UI, REST, WFS-T, WPS (which can legitimately take minutes).
    pub master: ClassTimeouts,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect: Dur::secs(5),
            client_headers: Dur::secs(10),
            reads: ClassTimeouts {
                headers: Dur::secs(60),
                idle: Dur::secs(60),
            },
            master: ClassTimeouts {
                headers: Dur::secs(300),
                idle: Dur::secs(300),
            },
        }
    }
}

/// Timeouts of one traffic class.
#[derive(Clone, Copy, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClassTimeouts {
    /// Waiting for the node's response headers once the request is sent.
    pub headers: Dur,
    /// The longest silence while a body streams, either way.
    pub idle: Dur,
}

impl Timeouts {
    pub fn of(&self, pool: Pool) -> &ClassTimeouts {
        match pool {
            Pool::Reads => &self.reads,
            Pool::Master => &self.master,
        }
    }
}

/// `[forwarding]`: how requests are passed to the nodes.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Forwarding {
    /// Peers (addresses or CIDR blocks) whose `X-Forwarded-Proto/Host`, `Forwarded` and
    /// `X-Forwarded-Path` are kept; from anyone else they are replaced or removed. Default `[]`.
    pub trusted_proxies: Vec<IpNet>,
    /// How long an idle pooled connection to a node is kept. Default `15s`: under the keep-alive
    /// timeout of Tomcat (20 s) and Jetty (30 s), so geolb never reuses a connection the node is
    /// closing.
    pub pool_idle_timeout: Dur,
    /// For `https://` nodes: the PEM certificates to trust instead of the system's roots.
    pub ca_bundle: Option<std::path::PathBuf>,
    /// For `https://` nodes that want a client certificate (mTLS): a PEM chain and its key.
    pub client_cert: Option<std::path::PathBuf>,
    pub client_key: Option<std::path::PathBuf>,
    /// Accept any certificate from `https://` nodes. Dangerous; logged loudly at start.
    pub insecure_skip_verify: bool,
}

impl Default for Forwarding {
    fn default() -> Self {
        Forwarding {
            trusted_proxies: Vec::new(),
            pool_idle_timeout: Dur::secs(15),
            ca_bundle: None,
            client_cert: None,
            client_key: None,
            insecure_skip_verify: false,
        }
    }
}

/// `[[nodes]]` after validation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeSpec {
    pub name: String,
    /// The node's `host:port` (from `url = "http://host:port"`; the port defaults to 80, 443).
    pub authority: Authority,
    /// `https://`: geolb speaks TLS to the node (see `[forwarding]` for its verification).
    pub tls: bool,
    /// Master-candidate priority, 1 = first choice; `None` for a node that never takes writes.
    pub master: Option<u32>,
    /// Whether the node serves OGC reads. Default true.
    pub reads: bool,
}

impl NodeSpec {
    /// `http(s)://host:port`, the node's own origin (as it may appear in its `Location` headers).
    pub fn origin(&self) -> String {
        format!(
            "{}://{}",
            if self.tls { "https" } else { "http" },
            self.authority
        )
    }
}

/// A duration written as `500ms`, `2s`, `1m`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Dur(pub Duration);

impl Dur {
    pub const fn millis(ms: u64) -> Dur {
        Dur(Duration::from_millis(ms))
    }

    pub const fn secs(s: u64) -> Dur {
        Dur(Duration::from_secs(s))
    }
}

/// The longest duration any key accepts: far longer than any sane timeout, and far from the
/// overflow of `Instant` arithmetic.
pub const MAX_DURATION: Duration = Duration::from_secs(24 * 3600);

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        let parsed = humantime::parse_duration(text.trim()).map_err(|_| {
            serde::de::Error::custom(format!(
                "invalid duration `{text}`: expected a number and a unit, like 500ms, 2s or 1m"
            ))
        })?;
        if parsed > MAX_DURATION {
            return Err(serde::de::Error::custom(format!(
                "duration `{text}` is too long: at most 24h"
            )));
        }
        Ok(Dur(parsed))
    }
}

/// Why a configuration was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    /// The file, when the config came from one.
    pub file: Option<String>,
    /// The key at fault, e.g. `nodes[1].url`.
    pub key: Option<String>,
    /// 1-based line, when the parser gives one.
    pub line: Option<usize>,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.file.as_deref().unwrap_or("config"))?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        f.write_str(": ")?;
        if let Some(key) = &self.key {
            write!(f, "key `{key}`: ")?;
        }
        f.write_str(&self.message)
    }
}

impl ConfigError {
    pub fn at(key: impl Into<String>, line: Option<usize>, message: impl Into<String>) -> Self {
        ConfigError {
            file: None,
            key: Some(key.into()),
            line,
            message: message.into(),
        }
    }
}

#[derive(Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct FileConfig {
    listen: Listen,
    admin: Admin,
    routing: Routing,
    routes: Vec<RouteRule>,
    health: Health,
    passive: Passive,
    retries: Retries,
    stalls: Stalls,
    hedging: Hedging,
    consistency: Consistency,
    catalog_reload: CatalogReload,
    limits: Limits,
    timeouts: Timeouts,
    forwarding: Forwarding,
    log: LogSettings,
    tls: Tls,
    nodes: Vec<FileNode>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileNode {
    name: toml::Spanned<String>,
    url: toml::Spanned<String>,
    #[serde(default)]
    master: Option<u32>,
    #[serde(default = "yes")]
    reads: bool,
    #[serde(default)]
    discover: Option<Discover>,
    #[serde(default)]
    resolve_interval: Option<Dur>,
}

/// How a `[[nodes]]` entry stands for several nodes.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Discover {
    /// Every address the URL's host resolves to is a node (Docker's DNS for a scaled compose
    /// service, a Kubernetes headless service).
    Dns,
}

/// A `[[nodes]]` entry with `discover = "dns"`: a template for the nodes its host resolves to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DiscoverSpec {
    /// Nodes are named `<name>-<ip>:<port>`.
    pub name: String,
    pub host: String,
    pub port: u16,
    pub master: Option<u32>,
    pub reads: bool,
    /// How often the name is resolved again. Default `5s`.
    pub interval: Duration,
    /// The nodes speak https.
    pub tls: bool,
}

impl DiscoverSpec {
    /// The node standing for one resolved address.
    pub fn node(&self, addr: SocketAddr) -> NodeSpec {
        let authority = Authority::try_from(addr.to_string())
            .unwrap_or_else(|_| Authority::from_static("0.0.0.0:0"));
        NodeSpec {
            name: format!("{}-{addr}", self.name),
            authority,
            tls: self.tls,
            master: self.master,
            reads: self.reads,
        }
    }
}

impl Config {
    /// Reads and validates a config file, with the `GEOLB_*` environment overrides ([`env`]);
    /// errors carry the file name.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        Config::load_with(path, &|name| std::env::var(name).ok())
    }

    /// [`Config::load`] with the environment given.
    pub fn load_with(
        path: &Path,
        vars: &impl Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let file = Some(path.display().to_string());
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            // Nodes from the environment: a file is not needed.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && vars("GEOLB_NODES").is_some() => {
                String::new()
            }
            Err(e) => {
                let message = format!("cannot read the config file: {e}");
                return Err(ConfigError {
                    file,
                    key: None,
                    line: None,
                    message,
                });
            }
        };
        let overridden = env::any(vars);
        let text = env::apply(&text, vars).map_err(|e| ConfigError {
            file: file.clone(),
            ..e
        })?;
        Config::parse(&text).map_err(|e| ConfigError {
            file: file.clone(),
            // Lines of a rewritten config do not match the file's.
            line: if overridden { None } else { e.line },
            ..e
        })
    }

    /// Parses and validates config text.
    pub fn parse(text: &str) -> Result<Config, ConfigError> {
        let line_of = |span: std::ops::Range<usize>| {
            let before = &text.as_bytes()[..span.start.min(text.len())];
            Some(before.iter().filter(|&&b| b == b'\n').count() + 1)
        };
        let file: FileConfig = serde_path_to_error::deserialize(toml::Deserializer::new(text))
            .map_err(|e| {
                let path = e.path().to_string();
                let inner = e.into_inner();
                ConfigError {
                    file: None,
                    key: (path != ".").then_some(path),
                    line: inner.span().and_then(line_of),
                    message: inner.message().trim().to_string(),
                }
            })?;
        file.validate(line_of)
    }

    /// Whether the health checks differ (their watchdogs must restart).
    pub fn health_differs(&self, other: &Config) -> bool {
        self.health != other.health
    }

    /// The nodes that may become master, best first (priority, then config order).
    pub fn master_order(&self) -> Vec<&NodeSpec> {
        let mut candidates: Vec<&NodeSpec> =
            self.nodes.iter().filter(|n| n.master.is_some()).collect();
        candidates.sort_by_key(|n| n.master);
        candidates
    }

    /// A short human summary, printed by `geolb check`.
    pub fn summary(&self) -> String {
        let mut out = String::new();
        let list = |addrs: &[SocketAddr]| {
            addrs
                .iter()
                .map(|a| a.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        };
        out.push_str(&format!(
            "listeners: http {}; admin {}\n",
            list(&self.listen.http),
            self.admin.listen
        ));
        if !self.listen.https.is_empty() {
            out.push_str(&format!(
                "TLS listeners: https {} with {} certificate(s)\n",
                list(&self.listen.https),
                self.tls.certs.len()
            ));
        }
        out.push_str(&format!(
            "nodes ({}):\n",
            self.nodes.len() + self.discover.len()
        ));
        for n in &self.nodes {
            let master = n
                .master
                .map(|p| format!("master candidate #{p}"))
                .unwrap_or_else(|| "replica".into());
            let reads = if n.reads { "serves reads" } else { "no reads" };
            out.push_str(&format!(
                "  {:<20} {:<28} {master}, {reads}\n",
                n.name,
                n.origin()
            ));
        }
        for d in &self.discover {
            let master = d
                .master
                .map(|p| format!("master candidates #{p}"))
                .unwrap_or_else(|| "replicas".into());
            let reads = if d.reads { "serve reads" } else { "no reads" };
            let every = d.interval.as_secs_f64();
            out.push_str(&format!(
                "  {:<20} {:<28} every address it resolves to (every {every}s): {master}, {reads}\n",
                d.name,
                format!("dns {}:{}", d.host, d.port)
            ));
        }
        let order: Vec<&str> = self
            .master_order()
            .iter()
            .map(|n| n.name.as_str())
            .collect();
        if order.is_empty() {
            out.push_str("master order: none — writes will be answered 503\n");
        } else {
            out.push_str(&format!(
                "master order: {} (failback: {:?})\n",
                order.join(" > "),
                self.routing.failback
            ));
        }
        out.push_str(&format!(
            "routes: {} user rule(s) before the built-in table\n",
            self.routes.len()
        ));
        let per_client = match self.limits.max_connections_per_client {
            0 => String::new(),
            n => format!(", {n} per client address"),
        };
        match self.limits.max_connections {
            0 => out.push_str(&format!(
                "client connections: at most half the open-file limit (set at start){per_client}\n"
            )),
            n => out.push_str(&format!("client connections: at most {n}{per_client}\n")),
        }
        out
    }
}

impl FileConfig {
    fn validate(
        self,
        line_of: impl Fn(std::ops::Range<usize>) -> Option<usize>,
    ) -> Result<Config, ConfigError> {
        if self.listen.http.is_empty() {
            return Err(ConfigError::at(
                "listen.http",
                None,
                "at least one listener address is required",
            ));
        }
        if self.forwarding.client_cert.is_some() != self.forwarding.client_key.is_some() {
            return Err(ConfigError::at(
                "forwarding.client_key",
                None,
                "client_cert and client_key go together",
            ));
        }
        if self.listen.redirect_https && self.listen.https.is_empty() {
            return Err(ConfigError::at(
                "listen.redirect_https",
                None,
                "needs an https listener to redirect to",
            ));
        }
        if !self.listen.https.is_empty() && self.tls.certs.is_empty() {
            return Err(ConfigError::at(
                "tls.certs",
                None,
                "listen.https needs at least one [[tls.certs]] entry (cert and key)",
            ));
        }
        match &self.admin.token {
            Some(t)
                if t.trim().is_empty()
                    || t.chars().any(|c| c.is_whitespace() || c.is_control()) =>
            {
                return Err(ConfigError::at(
                    "admin.token",
                    None,
                    "must be a non-empty word without spaces",
                ));
            }
            None if !self.admin.listen.ip().is_loopback() => {
                return Err(ConfigError::at(
                    "admin.token",
                    None,
                    format!(
                        "required: admin.listen {} is not a loopback address, and the admin API can drain and promote nodes",
                        self.admin.listen
                    ),
                ));
            }
            _ => {}
        }
        let cp = &self.routing.context_path;
        if !cp.is_empty() && (!cp.starts_with('/') || cp.ends_with('/') || cp.contains(['?', '#']))
        {
            return Err(ConfigError::at(
                "routing.context_path",
                None,
                format!("`{cp}` must be \"\" or start with `/` and not end with `/` (e.g. \"/geoserver\")"),
            ));
        }
        if self.routing.lookahead == 0 || self.routing.lookahead > 16 << 20 {
            return Err(ConfigError::at(
                "routing.lookahead",
                None,
                "must be between 1 and 16777216 bytes",
            ));
        }
        for (i, rule) in self.routes.iter().enumerate() {
            if let Some(p) = &rule.prefix {
                if !p.starts_with('/') {
                    return Err(ConfigError::at(
                        format!("routes[{i}].prefix"),
                        None,
                        format!("`{p}` must start with `/`"),
                    ));
                }
            }
            for m in &rule.methods {
                if http::Method::from_bytes(m.as_bytes()).is_err() || m.to_ascii_uppercase() != *m {
                    return Err(ConfigError::at(
                        format!("routes[{i}].methods"),
                        None,
                        format!("`{m}` is not an upper-case HTTP method"),
                    ));
                }
            }
        }
        let h = &self.health;
        if !h.path.starts_with('/') {
            return Err(ConfigError::at(
                "health.path",
                None,
                format!("`{}` must start with `/`", h.path),
            ));
        }
        if h.rise == 0 || h.fall == 0 {
            let key = if h.rise == 0 {
                "health.rise"
            } else {
                "health.fall"
            };
            return Err(ConfigError::at(key, None, "must be at least 1"));
        }
        if h.expect_status.is_empty() || h.expect_status.iter().any(|s| !(100..=599).contains(s)) {
            return Err(ConfigError::at(
                "health.expect_status",
                None,
                "must list HTTP statuses between 100 and 599",
            ));
        }
        let t = &self.timeouts;
        let must_be_positive = [
            ("health.interval", h.interval),
            ("health.timeout", h.timeout),
            ("timeouts.connect", t.connect),
            ("timeouts.client_headers", t.client_headers),
            ("timeouts.reads.headers", t.reads.headers),
            ("timeouts.reads.idle", t.reads.idle),
            ("timeouts.master.headers", t.master.headers),
            ("timeouts.master.idle", t.master.idle),
            ("limits.queue_timeout", self.limits.queue_timeout),
            ("retries.budget_window", self.retries.budget_window),
            ("routing.decay", self.routing.decay),
            ("stalls.min", self.stalls.min),
            ("hedging.min_delay", self.hedging.min_delay),
            ("hedging.max_delay", self.hedging.max_delay),
            ("consistency.deaf_after", self.consistency.deaf_after),
            (
                "catalog_reload.drain_timeout",
                self.catalog_reload.drain_timeout,
            ),
            ("catalog_reload.timeout", self.catalog_reload.timeout),
            (
                "forwarding.pool_idle_timeout",
                self.forwarding.pool_idle_timeout,
            ),
        ];
        if let Some((key, _)) = must_be_positive.iter().find(|(_, d)| d.0.is_zero()) {
            return Err(ConfigError::at(*key, None, "must be more than zero"));
        }
        let r = &self.retries;
        // The budget keeps a minute of one-second slots.
        if !(Duration::from_secs(1)..=Duration::from_secs(60)).contains(&r.budget_window.0) {
            return Err(ConfigError::at(
                "retries.budget_window",
                None,
                "must be between 1s and 60s",
            ));
        }
        if r.budget_percent > 1000 {
            return Err(ConfigError::at(
                "retries.budget_percent",
                None,
                "a percentage: 0 to 1000",
            ));
        }
        if r.budget_min_per_second > 1_000_000 {
            return Err(ConfigError::at(
                "retries.budget_min_per_second",
                None,
                "at most 1000000",
            ));
        }
        if !(1.0..=1000.0).contains(&self.stalls.multiple) {
            return Err(ConfigError::at(
                "stalls.multiple",
                None,
                "a factor between 1 and 1000",
            ));
        }
        if self.hedging.min_delay.0 > self.hedging.max_delay.0 {
            return Err(ConfigError::at(
                "hedging.min_delay",
                None,
                "must not be more than hedging.max_delay",
            ));
        }
        if self.passive.max_ejected_percent > 100 {
            return Err(ConfigError::at(
                "passive.max_ejected_percent",
                None,
                "a percentage: 0 to 100",
            ));
        }
        if self.limits.max_header_bytes < 8192 {
            return Err(ConfigError::at(
                "limits.max_header_bytes",
                None,
                "must be at least 8192",
            ));
        }
        if self.limits.max_headers == 0 {
            return Err(ConfigError::at(
                "limits.max_headers",
                None,
                "must be at least 1",
            ));
        }
        let mut consistency = self.consistency;
        if let Some(path) = &consistency.key_file {
            let key = std::fs::read(path).map_err(|e| {
                let why = format!("cannot read {}: {e}", path.display());
                ConfigError::at("consistency.key_file", None, why)
            })?;
            let key = key.trim_ascii();
            if key.len() < 16 {
                return Err(ConfigError::at(
                    "consistency.key_file",
                    None,
                    "the key must be at least 16 bytes",
                ));
            }
            consistency.key = Some(std::sync::Arc::from(key));
        }
        let mut catalog_reload = self.catalog_reload;
        catalog_reload.password = match &catalog_reload.password_file {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|e| {
                    let why = format!("cannot read {}: {e}", path.display());
                    ConfigError::at("catalog_reload.password_file", None, why)
                })?;
                Some(Secret(text.trim_end_matches(['\r', '\n']).to_string()))
            }
            None => std::env::var("GEOLB_RELOAD_PASSWORD").ok().map(Secret),
        };
        if self.nodes.is_empty() {
            return Err(ConfigError::at(
                "nodes",
                None,
                "no nodes: add at least one [[nodes]] entry with a name and a url",
            ));
        }
        let mut nodes: Vec<NodeSpec> = Vec::with_capacity(self.nodes.len());
        let mut discover: Vec<DiscoverSpec> = Vec::new();
        for (i, n) in self.nodes.into_iter().enumerate() {
            let name = n.name.get_ref().trim();
            if name.is_empty() {
                return Err(ConfigError::at(
                    format!("nodes[{i}].name"),
                    line_of(n.name.span()),
                    "must not be empty",
                ));
            }
            if nodes.iter().any(|other| other.name == name)
                || discover.iter().any(|d| d.name == name)
            {
                return Err(ConfigError::at(
                    format!("nodes[{i}].name"),
                    line_of(n.name.span()),
                    format!("duplicate node name `{name}`: node names must be unique"),
                ));
            }
            let (authority, tls) = parse_node_url(n.url.get_ref()).map_err(|m| {
                ConfigError::at(format!("nodes[{i}].url"), line_of(n.url.span()), m)
            })?;
            if n.master == Some(0) {
                return Err(ConfigError::at(
                    format!("nodes[{i}].master"),
                    None,
                    "priority starts at 1 (1 = first choice)",
                ));
            }
            if n.master.is_none() && !n.reads {
                return Err(ConfigError::at(
                    format!("nodes[{i}].reads"),
                    None,
                    format!("node `{name}` is neither a master candidate nor a reader: it would get no traffic"),
                ));
            }
            if n.resolve_interval.is_some() && n.discover.is_none() {
                return Err(ConfigError::at(
                    format!("nodes[{i}].resolve_interval"),
                    None,
                    "goes with discover = \"dns\"",
                ));
            }
            if n.discover == Some(Discover::Dns) {
                let interval = n.resolve_interval.unwrap_or(Dur::secs(5)).0;
                if interval.is_zero() {
                    return Err(ConfigError::at(
                        format!("nodes[{i}].resolve_interval"),
                        None,
                        "must be more than zero",
                    ));
                }
                let host = authority
                    .host()
                    .trim_start_matches('[')
                    .trim_end_matches(']')
                    .to_string();
                let port = authority.port_u16().unwrap_or(80);
                discover.push(DiscoverSpec {
                    name: name.to_string(),
                    host,
                    port,
                    tls,
                    master: n.master,
                    reads: n.reads,
                    interval,
                });
                continue;
            }
            nodes.push(NodeSpec {
                name: name.to_string(),
                authority,
                tls,
                master: n.master,
                reads: n.reads,
            });
        }
        Ok(Config {
            listen: self.listen,
            admin: self.admin,
            routing: self.routing,
            routes: self.routes,
            health: self.health,
            passive: self.passive,
            retries: self.retries,
            stalls: self.stalls,
            hedging: self.hedging,
            consistency,
            catalog_reload,
            limits: self.limits,
            timeouts: self.timeouts,
            forwarding: self.forwarding,
            log: self.log,
            tls: self.tls,
            nodes,
            discover,
        })
    }
}

fn parse_node_url(text: &str) -> Result<(Authority, bool), String> {
    let bad = |why: &str| {
        format!("invalid node URL `{text}`: {why} (expected http://host:port or https://host:port)")
    };
    let uri: Uri = text.parse().map_err(|_| bad("not a URL"))?;
    let tls = match uri.scheme() {
        Some(s) if *s == Scheme::HTTP => false,
        Some(s) if *s == Scheme::HTTPS => true,
        _ => return Err(bad("the scheme must be http or https")),
    };
    let authority = uri.authority().ok_or_else(|| bad("no host"))?;
    if authority.host().is_empty() || authority.as_str().contains('@') {
        return Err(bad("no host, or user info in it"));
    }
    if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
        return Err(bad(
            "give no path: geolb forwards the client's path unchanged",
        ));
    }
    let port = authority.port_u16().unwrap_or(if tls { 443 } else { 80 });
    let authority = Authority::try_from(format!("{}:{port}", authority.host()))
        .map_err(|_| bad("not a URL"))?;
    Ok((authority, tls))
}

fn yes() -> bool {
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = "[[nodes]]\nname = \"a\"\nurl = \"http://127.0.0.1:8081\"\nmaster = 1\n";

    fn err(text: &str) -> ConfigError {
        Config::parse(text).expect_err("config should be refused")
    }

    #[test]
    fn example_config_is_valid() {
        let c = Config::parse(EXAMPLE).expect("the shipped config.toml must be valid");
        assert!(c.nodes.len() >= 2);
        assert_eq!(c.master_order()[0].name, "gs-master");
    }

    #[test]
    fn defaults_apply() {
        let c = Config::parse(MINIMAL).unwrap();
        assert_eq!(c.listen.http, vec!["0.0.0.0:8080".parse().unwrap()]);
        assert_eq!(c.admin.listen, "127.0.0.1:9090".parse().unwrap());
        assert_eq!(c.timeouts.master.headers, Dur::secs(300));
        assert_eq!(c.routing.slow_start, Dur::secs(30));
        assert_eq!(c.retries.max, 2);
        assert_eq!(c.limits.max_requests, 0);
        assert_eq!(c.routing.context_path, "/geoserver");
        assert_eq!(c.health.interval.0, Duration::from_secs(2));
        assert_eq!((c.health.rise, c.health.fall), (2, 3));
        assert_eq!(c.nodes[0].origin(), "http://127.0.0.1:8081");
        assert!(c.nodes[0].reads);
        // Under Tomcat's keep-alive (20 s): geolb never reuses a connection the node is closing.
        assert_eq!(c.forwarding.pool_idle_timeout, Dur::secs(15));
        assert_eq!(
            (
                c.limits.max_connections,
                c.limits.max_connections_per_client
            ),
            (0, 0)
        );
    }

    #[test]
    fn unknown_key_is_named_with_its_line() {
        let e = err(&format!("{MINIMAL}colour = \"red\"\n"));
        assert_eq!(e.key.as_deref(), Some("nodes[0].colour"));
        assert_eq!(e.line, Some(5));
        assert!(e.to_string().contains("unknown field `colour`"), "{e}");
    }

    #[test]
    fn bad_url_is_named() {
        let e = err("[[nodes]]\nname = \"a\"\nurl = \"ftp://x\"\n");
        assert_eq!(e.key.as_deref(), Some("nodes[0].url"));
        assert_eq!(e.line, Some(3));
        let e = err("[[nodes]]\nname = \"a\"\nurl = \"http://x:1/geoserver\"\n");
        assert!(e.message.contains("no path"), "{e}");
    }

    #[test]
    fn bad_duration_is_named() {
        let e = err(&format!(
            "[health]\ninterval = \"2 fortnights please\"\n{MINIMAL}"
        ));
        assert_eq!(e.key.as_deref(), Some("health.interval"));
        assert_eq!(e.line, Some(2));
        assert!(e.message.contains("invalid duration"), "{e}");
        let e = err(&format!("[health]\ntimeout = \"0s\"\n{MINIMAL}"));
        assert_eq!(e.key.as_deref(), Some("health.timeout"));
    }

    #[test]
    fn duplicate_names_and_no_nodes() {
        let e = err(&format!("{MINIMAL}\n{MINIMAL}"));
        assert_eq!(e.key.as_deref(), Some("nodes[1].name"));
        assert_eq!(e.line, Some(7));
        assert!(e.message.contains("duplicate"));
        let e = err("[listen]\nhttp = [\"127.0.0.1:1\"]\n");
        assert_eq!(e.key.as_deref(), Some("nodes"));
    }

    #[test]
    fn other_checks() {
        assert_eq!(
            err(&format!(
                "[routing]\ncontext_path = \"geoserver\"\n{MINIMAL}"
            ))
            .key
            .as_deref(),
            Some("routing.context_path")
        );
        assert_eq!(
            err(&format!("[routing]\nfailback = \"never\"\n{MINIMAL}"))
                .key
                .as_deref(),
            Some("routing.failback")
        );
        assert_eq!(
            err(&format!(
                "[[routes]]\nprefix = \"/x\"\npool = \"all\"\n{MINIMAL}"
            ))
            .key
            .as_deref(),
            Some("routes[0].pool")
        );
        assert_eq!(
            err(&format!(
                "[[routes]]\nmethods = [\"get\"]\npool = \"reads\"\n{MINIMAL}"
            ))
            .key
            .as_deref(),
            Some("routes[0].methods")
        );
        assert_eq!(
            err(&format!("[health]\nfall = 0\n{MINIMAL}"))
                .key
                .as_deref(),
            Some("health.fall")
        );
        assert_eq!(
            err("[[nodes]]\nname = \"a\"\nurl = \"http://h:1\"\nmaster = 0\n")
                .key
                .as_deref(),
            Some("nodes[0].master")
        );
        let e = err("[[nodes]]\nname = \"a\"\nurl = \"http://h:1\"\nreads = false\n");
        assert_eq!(e.key.as_deref(), Some("nodes[0].reads"));
    }

    #[test]
    fn what_would_panic_at_start_is_refused_here() {
        for (text, key) in [
            (
                "[retries]\nbudget_window = \"500ms\"\n",
                "retries.budget_window",
            ),
            (
                "[consistency]\nkey_file = \"/nonexistent/geolb.key\"\n",
                "consistency.key_file",
            ),
            (
                "[consistency]\ndeaf_after = \"0s\"\n",
                "consistency.deaf_after",
            ),
            (
                "[retries]\nbudget_window = \"61s\"\n",
                "retries.budget_window",
            ),
            (
                "[retries]\nbudget_percent = 1001\n",
                "retries.budget_percent",
            ),
            (
                "[retries]\nbudget_min_per_second = 4294967295\n",
                "retries.budget_min_per_second",
            ),
        ] {
            assert_eq!(
                err(&format!("{text}{MINIMAL}")).key.as_deref(),
                Some(key),
                "{text}"
            );
        }
        // A duration that would overflow `Instant` arithmetic is named with its line.
        let e = err(&format!(
            "[timeouts.reads]\nheaders = \"5000000000y\"\nidle = \"1s\"\n{MINIMAL}"
        ));
        assert_eq!(e.key.as_deref(), Some("timeouts.reads.headers"));
        assert_eq!(e.line, Some(2));
        let e = err(&format!("[listen]\nshutdown_grace = \"25h\"\n{MINIMAL}"));
        assert!(e.message.contains("at most 24h"), "{e}");
        // The edges are accepted.
        for text in [
            "[retries]\nbudget_window = \"1s\"\nbudget_percent = 0\nbudget_min_per_second = 0\n",
            "[retries]\nbudget_window = \"60s\"\nbudget_percent = 1000\nbudget_min_per_second = 1000000\n",
        ] {
            Config::parse(&format!("{text}{MINIMAL}")).unwrap();
        }
    }

    #[test]
    fn the_connection_cap_follows_the_open_file_limit() {
        assert_eq!(derived_max_connections(1024), 256);
        assert_eq!(derived_max_connections(65_536), 32_512);
        assert!(derived_max_connections(1 << 20) > 10_000);
        assert_eq!(derived_max_connections(u64::MAX), 1_000_000);
    }

    #[test]
    fn display_names_file_line_and_key() {
        let mut e = err("[[nodes]]\nname = \"a\"\nurl = \"nope\"\n");
        e.file = Some("geolb.toml".into());
        assert!(
            e.to_string()
                .starts_with("geolb.toml:3: key `nodes[0].url`: invalid node URL `nope`"),
            "{e}"
        );
    }
}
