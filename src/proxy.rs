//! Forwarding one request: classify → pick → forward → record. Bodies stream both ways; only the
//! classifier's bounded look-ahead is held, and it is replayed to the node ahead of the rest.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use arc_swap::ArcSwap;
use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{Method, Request, Response, Uri, Version};
use http_body::{Body, Frame, SizeHint};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use ipnet::IpNet;

use crate::classify::{Route, Verdict};
use crate::cluster::{InFlight, Node, Snapshot};
use crate::config::{Config, Pool};
use crate::error::ProxyError;

/// The client-facing request handler, shared by every connection of the plain listeners.
pub struct Proxy {
    cluster: Arc<ArcSwap<Snapshot>>,
    client: Client<HttpConnector, ForwardBody>,
    trusted: Vec<IpNet>,
    /// Seconds a client is told to wait on a 503.
    retry_after: HeaderValue,
}

impl Proxy {
    pub fn new(config: &Config, cluster: Arc<ArcSwap<Snapshot>>) -> Proxy {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(config.timeouts.connect.0));
        connector.enforce_http(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(config.forwarding.pool_idle_timeout.0)
            .pool_timer(hyper_util::rt::TokioTimer::new())
            .build(connector);
        let retry_after = config.health.interval.0.as_secs_f64().ceil().max(1.0) as u64;
        Proxy {
            cluster,
            client,
            trusted: config.forwarding.trusted_proxies.clone(),
            retry_after: HeaderValue::from(retry_after),
        }
    }

    /// Serves one client request; never fails (errors become 4xx/5xx responses).
    pub async fn handle(&self, req: Request<Incoming>, peer: SocketAddr) -> Response<ResponseBody> {
        // Kept for the log line: cheap clones (a standard method, a reference-counted target).
        let method = req.method().clone();
        let target = req.uri().path_and_query().cloned();
        match self.forward(req, peer).await {
            Ok(response) => response,
            Err(err) => {
                err.log(
                    &method,
                    target.as_ref().map_or("/", PathAndQuery::path),
                    peer,
                );
                err.into_response(&self.retry_after)
            }
        }
    }

    async fn forward(
        &self,
        req: Request<Incoming>,
        peer: SocketAddr,
    ) -> Result<Response<ResponseBody>, ProxyError> {
        let snapshot = self.cluster.load_full();
        let (mut parts, body) = req.into_parts();
        if parts.method == Method::CONNECT {
            return Err(ProxyError::BadRequest("CONNECT is not supported"));
        }

        // classify
        let query = parts.uri.query();
        let (route, body) = match snapshot.classifier.classify_head(
            &parts.method,
            parts.uri.path(),
            query,
            &parts.headers,
        ) {
            Verdict::Done(route) => (route, ForwardBody::new(VecDeque::new(), body)),
            Verdict::NeedBody(plan) => {
                let classifier = &snapshot.classifier;
                lookahead(body, |prefix, complete| {
                    classifier.classify_body(&plan, query, prefix, complete)
                })
                .await?
            }
        };
        tracing::debug!(method = %parts.method, path = parts.uri.path(), pool = ?route.pool, class = %route.class, "classified");

        // pick
        let node = pick(&snapshot, &route)?;
        let in_flight = node.start_request();

        // forward
        let client_host = client_host(&parts);
        let trusted = self.is_trusted(peer.ip());
        prepare_request_headers(&mut parts.headers, peer.ip(), client_host.as_ref(), trusted);
        parts.uri = node_uri(node.authority(), parts.uri.path_and_query())?;
        parts.version = Version::HTTP_11;
        let upstream = self
            .client
            .request(Request::from_parts(parts, body))
            .await
            .map_err(|source| ProxyError::Upstream {
                node: node.name().to_string(),
                source,
            })?;

        // record: the in-flight slot is held until the response body ends
        let (mut parts, body) = upstream.into_parts();
        strip_hop_by_hop(&mut parts.headers);
        if let Some(host) = &client_host {
            rewrite_location(&mut parts.headers, node, host);
        }
        Ok(Response::from_parts(
            parts,
            ResponseBody::Upstream {
                body,
                _in_flight: in_flight,
            },
        ))
    }

    fn is_trusted(&self, ip: IpAddr) -> bool {
        !self.trusted.is_empty() && self.trusted.iter().any(|net| net.contains(&ip))
    }
}

fn pick<'s>(snapshot: &'s Snapshot, route: &Route) -> Result<&'s Arc<Node>, ProxyError> {
    match route.pool {
        Pool::Reads => {
            let mut rng = fastrand::Rng::new();
            snapshot.pick_reader(&mut rng).ok_or(ProxyError::NoReader)
        }
        Pool::Master => snapshot.master().ok_or(ProxyError::NoMaster),
    }
}

/// Reads body frames until `decide` returns a route (it must once `lookahead` bytes are seen, or at
/// the end), then hands back a body that replays those frames before the rest.
async fn lookahead(
    mut body: Incoming,
    mut decide: impl FnMut(&[u8], bool) -> Option<Route>,
) -> Result<(Route, ForwardBody), ProxyError> {
    let mut frames = VecDeque::new();
    let mut scratch = BytesMut::new();
    loop {
        let frame = match body.frame().await {
            Some(Ok(frame)) => Some(frame),
            Some(Err(e)) => return Err(ProxyError::ClientBody(e)),
            None => None,
        };
        let complete = frame.is_none() || body.is_end_stream();
        let data = frame
            .as_ref()
            .and_then(Frame::data_ref)
            .cloned()
            .unwrap_or_default();
        // The common case, a body whose first frame decides, is classified without a copy.
        let decided = if scratch.is_empty() {
            decide(&data, complete)
        } else {
            scratch.extend_from_slice(&data);
            decide(&scratch, complete)
        };
        if let Some(frame) = frame {
            frames.push_back(frame);
        }
        if let Some(route) = decided {
            return Ok((route, ForwardBody::new(frames, body)));
        }
        if scratch.is_empty() {
            scratch.extend_from_slice(&data);
        }
        if complete {
            // `decide` always answers for a complete body; this is only a guard.
            return Err(ProxyError::BadRequest(
                "request body could not be classified",
            ));
        }
    }
}

/// The host and port the client addressed: `Host`, or the HTTP/2 `:authority`.
fn client_host(parts: &http::request::Parts) -> Option<HeaderValue> {
    match parts.headers.get(header::HOST) {
        Some(host) => Some(host.clone()),
        None => parts
            .uri
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok()),
    }
}

fn node_uri(
    authority: &Authority,
    path_and_query: Option<&PathAndQuery>,
) -> Result<Uri, ProxyError> {
    Uri::builder()
        .scheme(Scheme::HTTP)
        .authority(authority.clone())
        .path_and_query(
            path_and_query
                .cloned()
                .unwrap_or_else(|| PathAndQuery::from_static("/")),
        )
        .build()
        .map_err(|_| ProxyError::BadRequest("invalid request target"))
}

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
/// Headers that steer the URLs GeoServer writes: only a trusted peer may send them.
static UNTRUSTED_DROPPED: [HeaderName; 3] = [
    HeaderName::from_static("forwarded"),
    HeaderName::from_static("x-forwarded-path"),
    HeaderName::from_static("x-forwarded-port"),
];

/// Connection-scoped headers (RFC 9110 §7.6.1) never passed on.
static HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
];

/// Removes hop-by-hop headers, those the `Connection` header names included, and `Upgrade`.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named.iter().chain(HOP_BY_HOP.iter()) {
        headers.remove(name);
    }
    headers.remove(header::UPGRADE);
}

/// Sets what the node must know about the client: keeps `Host`, sets `X-Forwarded-Proto/Host`
/// (unless a trusted peer sent them), appends the peer to `X-Forwarded-For`.
pub fn prepare_request_headers(
    headers: &mut HeaderMap,
    peer: IpAddr,
    client_host: Option<&HeaderValue>,
    trusted: bool,
) {
    strip_hop_by_hop(headers);
    // geolb has already answered `100-continue` by reading the body; the node gets it at once.
    headers.remove(header::EXPECT);
    if let Some(host) = client_host {
        if !headers.contains_key(header::HOST) {
            headers.insert(header::HOST, host.clone());
        }
    }
    if !trusted {
        for name in &UNTRUSTED_DROPPED {
            headers.remove(name);
        }
    }
    if !(trusted && headers.contains_key(&X_FORWARDED_PROTO)) {
        headers.insert(X_FORWARDED_PROTO.clone(), HeaderValue::from_static("http"));
    }
    if !(trusted && headers.contains_key(&X_FORWARDED_HOST)) {
        match client_host {
            Some(host) => headers.insert(X_FORWARDED_HOST.clone(), host.clone()),
            None => headers.remove(&X_FORWARDED_HOST),
        };
    }
    let mut chain = String::new();
    for earlier in headers
        .get_all(&X_FORWARDED_FOR)
        .iter()
        .filter_map(|v| v.to_str().ok())
    {
        chain.push_str(earlier);
        chain.push_str(", ");
    }
    let _ = write!(chain, "{peer}");
    // Visible ASCII and an IP address: always a valid header value.
    if let Ok(value) = HeaderValue::try_from(chain) {
        headers.insert(X_FORWARDED_FOR.clone(), value);
    }
}

/// Points a `Location` that names the node's own origin at the address the client used.
pub fn rewrite_location(headers: &mut HeaderMap, node: &Node, client_host: &HeaderValue) {
    let Some(location) = headers.get(header::LOCATION).and_then(|v| v.to_str().ok()) else {
        return;
    };
    let rest = location.strip_prefix(node.origin.as_str()).or_else(|| {
        // A node on port 80 may leave the port out.
        (node.authority().port_u16() == Some(80))
            .then(|| {
                location
                    .strip_prefix("http://")?
                    .strip_prefix(node.authority().host())
            })
            .flatten()
    });
    let Some(rest) = rest.filter(|r| r.is_empty() || r.starts_with(['/', '?', '#'])) else {
        return;
    };
    let Ok(host) = client_host.to_str() else {
        return;
    };
    if let Ok(value) = HeaderValue::from_str(&format!("http://{host}{rest}")) {
        headers.insert(header::LOCATION, value);
    }
}

/// A request body on its way to a node: the frames the classifier looked at, then the rest.
pub struct ForwardBody {
    replay: VecDeque<Frame<Bytes>>,
    replay_len: u64,
    rest: Incoming,
}

impl ForwardBody {
    fn new(replay: VecDeque<Frame<Bytes>>, rest: Incoming) -> Self {
        let replay_len = replay
            .iter()
            .filter_map(Frame::data_ref)
            .map(|d| d.len() as u64)
            .sum();
        ForwardBody {
            replay,
            replay_len,
            rest,
        }
    }
}

impl Body for ForwardBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        if let Some(frame) = this.replay.pop_front() {
            if let Some(data) = frame.data_ref() {
                this.replay_len -= data.len() as u64;
            }
            return Poll::Ready(Some(Ok(frame)));
        }
        Pin::new(&mut this.rest).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.replay.is_empty() && self.rest.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        let rest = self.rest.size_hint();
        let mut hint = SizeHint::new();
        hint.set_lower(rest.lower() + self.replay_len);
        if let Some(upper) = rest.upper() {
            hint.set_upper(upper + self.replay_len);
        }
        hint
    }
}

/// A response body to a client: streamed from a node (holding its in-flight slot), or made here.
pub enum ResponseBody {
    Upstream {
        body: Incoming,
        _in_flight: InFlight,
    },
    Local(Full<Bytes>),
}

impl ResponseBody {
    pub fn text(text: impl Into<Bytes>) -> Self {
        ResponseBody::Local(Full::new(text.into()))
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.get_mut() {
            ResponseBody::Upstream { body, .. } => Pin::new(body).poll_frame(cx),
            ResponseBody::Local(full) => Pin::new(full)
                .poll_frame(cx)
                .map_err(|never| match never {}),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ResponseBody::Upstream { body, .. } => body.is_end_stream(),
            ResponseBody::Local(full) => full.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ResponseBody::Upstream { body, .. } => body.size_hint(),
            ResponseBody::Local(full) => full.size_hint(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::NodeSpec;

    fn node() -> Node {
        Node::new(NodeSpec {
            name: "n".into(),
            authority: Authority::from_static("10.0.0.5:8080"),
            master: None,
            reads: true,
        })
    }

    #[test]
    fn forwarded_headers_are_set_and_appended() {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("maps.example.org"));
        h.insert("x-forwarded-host", HeaderValue::from_static("evil.example"));
        h.insert("x-forwarded-proto", HeaderValue::from_static("https"));
        h.append("x-forwarded-for", HeaderValue::from_static("1.1.1.1"));
        h.append("x-forwarded-for", HeaderValue::from_static("2.2.2.2"));
        h.insert("forwarded", HeaderValue::from_static("host=evil"));
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, x-secret"),
        );
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        let host = h.get(header::HOST).cloned();
        prepare_request_headers(&mut h, "192.0.2.7".parse().unwrap(), host.as_ref(), false);
        assert_eq!(h["host"], "maps.example.org");
        assert_eq!(h["x-forwarded-host"], "maps.example.org");
        assert_eq!(h["x-forwarded-proto"], "http");
        assert_eq!(h["x-forwarded-for"], "1.1.1.1, 2.2.2.2, 192.0.2.7");
        for gone in ["forwarded", "connection", "x-secret", "transfer-encoding"] {
            assert!(!h.contains_key(gone), "{gone} must be dropped");
        }
    }

    #[test]
    fn a_trusted_peer_keeps_its_forwarded_headers() {
        let mut h = HeaderMap::new();
        h.insert(
            "x-forwarded-host",
            HeaderValue::from_static("public.example"),
        );
        h.insert("x-forwarded-proto", HeaderValue::from_static("https"));
        h.insert("forwarded", HeaderValue::from_static("proto=https"));
        let host = HeaderValue::from_static("internal:8080");
        prepare_request_headers(&mut h, "10.1.1.1".parse().unwrap(), Some(&host), true);
        assert_eq!(h["x-forwarded-host"], "public.example");
        assert_eq!(h["x-forwarded-proto"], "https");
        assert_eq!(h["forwarded"], "proto=https");
        assert_eq!(
            h["host"], "internal:8080",
            "an HTTP/2 :authority becomes Host"
        );
    }

    #[test]
    fn location_pointing_at_the_node_is_rewritten() {
        let n = node();
        let client = HeaderValue::from_static("maps.example.org:8000");
        let mut h = HeaderMap::new();
        h.insert(
            header::LOCATION,
            HeaderValue::from_static("http://10.0.0.5:8080/geoserver/web/?0"),
        );
        rewrite_location(&mut h, &n, &client);
        assert_eq!(
            h["location"],
            "http://maps.example.org:8000/geoserver/web/?0"
        );
        for untouched in [
            "http://10.0.0.5:80801/x",
            "http://other:8080/geoserver",
            "/geoserver/web/",
        ] {
            h.insert(header::LOCATION, HeaderValue::from_static(untouched));
            rewrite_location(&mut h, &n, &client);
            assert_eq!(h["location"], untouched);
        }
    }
}
