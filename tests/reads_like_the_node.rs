//! The classifier against an independent model of the node (`tests/node_model`): requests that mix
//! the tricks a node could read differently from a proxy (encodings, dot segments and path
//! parameters, Unicode keys, control characters, XML prologues and SOAP wrappers, Content-Type
//! spellings and charsets, Connection nominations). Whenever the model says the request writes or
//! holds state, geolb must send it to the master or refuse it.
//!
//! Two levels: the classifier alone (many cases, fast), and a real geolb over HTTP/1.1 and h2 in
//! front of recording nodes, where the model reads the request each replica actually received.
//! `PROPTEST_CASES` raises the number of cases.

mod node_model;
mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use geolb::classify::Classifier;
use geolb::classify::Pool;
use http::{HeaderMap, HeaderName, HeaderValue, Method};
use http_body_util::{BodyExt, Full};
use node_model::{node_verdict, NodeRequest};
use proptest::prelude::*;
use proptest::test_runner::{Config as ProptestConfig, TestRunner};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

// ---- generated requests ----

/// A request as a client sends it.
#[derive(Clone, Debug)]
struct Sent {
    method: String,
    path: String,
    query: Option<String>,
    headers: Vec<(String, String)>,
    /// `Connection` tokens (HTTP/1.1 only: h2 forbids the header).
    connection: Option<String>,
    body: Vec<u8>,
}

impl Sent {
    fn target(&self) -> String {
        match &self.query {
            Some(q) => format!("{}?{q}", self.path),
            None => self.path.clone(),
        }
    }

    /// What the node receives when geolb forwards it: the same method, target, body, and the
    /// end-to-end headers (the model does not look at the ones geolb adds).
    fn forwarded(&self) -> NodeRequest {
        let mut headers = vec![("host".to_string(), b"maps.example.org".to_vec())];
        for (k, v) in &self.headers {
            headers.push((k.to_ascii_lowercase(), v.as_bytes().to_vec()));
        }
        headers.push((
            "content-length".to_string(),
            self.body.len().to_string().into_bytes(),
        ));
        NodeRequest {
            method: self.method.clone(),
            target: self.target().into_bytes(),
            headers,
            body: self.body.clone(),
        }
    }
}

const OPS: &[&str] = &[
    "GetMap",
    "GetFeature",
    "getfeature",
    "DescribeFeatureType",
    "GetCapabilities",
    "Transaction",
    "transaction",
    "LockFeature",
    "GetFeatureWithLock",
    "Execute",
    "GetExecutionStatus",
    "DropStoredQuery",
    "ReleaseLock",
    "MakeCoffee",
];

/// An operation name, spelled as a client (or an attacker) might.
fn op_value() -> impl Strategy<Value = String> {
    (prop::sample::select(OPS), 0u8..12).prop_map(|(op, trick)| match trick {
        0 => format!("{op}%0B"),
        1 => format!("%00{op}"),
        2 => format!("+{op}+"),
        3 => format!("%09{op}%0D%0A"),
        4 => op.replacen('s', "%C5%BF", 1),
        5 => op
            .replacen('k', "%E2%84%AA", 1)
            .replacen('K', "%E2%84%AA", 1),
        6 => op.to_ascii_uppercase(),
        7 => format!("{op}%zz"),
        8 => op.replacen('a', "%61", 1),
        _ => op.to_string(),
    })
}

/// A KVP key routing may care about, spelled many ways.
fn key() -> impl Strategy<Value = String> {
    prop::sample::select(
        &[
            "request",
            "REQUEST",
            "ReQuEsT",
            "requ%65st",
            "reque%C5%BFt",
            "request+",
            "%20request",
            "request%00",
            "service",
            "SERVICE",
            "lockId",
            "LOCKID",
            "lock%C4%B1d",
            "LOC%E2%84%AAID",
            "typeName",
            "layers",
            "version",
            "",
        ][..],
    )
    .prop_map(String::from)
}

fn pairs() -> impl Strategy<Value = String> {
    prop::collection::vec(
        (
            key(),
            prop_oneof![
                op_value(),
                prop::sample::select(
                    &[
                        "WMS",
                        "WFS",
                        "wfs",
                        "WPS",
                        "wf%C5%BF",
                        "gwc",
                        "1.1.0",
                        "topp:states",
                        ""
                    ][..]
                )
                .prop_map(String::from),
            ],
            any::<bool>(),
        ),
        0..5,
    )
    .prop_map(|v| {
        v.into_iter()
            .map(|(k, val, bare)| if bare { k } else { format!("{k}={val}") })
            .collect::<Vec<_>>()
            .join("&")
    })
}

const AREAS: &[&str] = &[
    "/wfs",
    "/wfs",
    "/wfs",
    "/wms",
    "/ows",
    "/ows",
    "/wps",
    "/topp/wfs",
    "/topp/states/wms",
    "/wfs/Transaction",
    "/wfs/GetFeature",
    "/ows/wfs",
    "/gwc/service/wms",
    "/gwc/service/tms/1.0.0/topp:states@EPSG:900913@png/1/0/0.png",
    "/gwc/rest/wmts/topp:states/default/EPSG:4326/EPSG:4326:0/0/0",
    "/gwc/rest/seed/topp:states.json",
    "/rest/workspaces",
    "/web/",
    "/ogc/features/v1/collections",
    "/styles/x.png",
    "/TestWfsPost",
    "/",
    "/index.html",
    "/j_spring_security_check",
];

/// A path under the context, with detours a proxy and a node could read differently.
fn path() -> impl Strategy<Value = String> {
    (
        prop::sample::select(AREAS),
        prop::sample::select(
            &[
                "",
                "",
                "",
                "",
                "",
                "",
                "/ogc/..",
                "/styles/..;",
                "/x/%2e%2e",
                "/.",
                "/wfs/..",
                "/",
                "/x/%2E.",
                "/ows/..%2f",
                "/%2e",
            ][..],
        ),
        0u8..16,
        any::<u8>(),
    )
        .prop_map(|(area, detour, trick, at)| {
            let mut p = format!("/geoserver{detour}{area}");
            match trick {
                0 => p.push_str(";jsessionid=1"),
                1 => {
                    // Percent-encode one letter.
                    let letters: Vec<usize> = p
                        .char_indices()
                        .filter(|(_, c)| c.is_ascii_alphabetic())
                        .map(|(i, _)| i)
                        .collect();
                    if !letters.is_empty() {
                        let i = letters[at as usize % letters.len()];
                        let c = p.as_bytes()[i];
                        p.replace_range(i..i + 1, &format!("%{c:02X}"));
                    }
                }
                2 => p = p.replacen("/geoserver/", "/geoserver//", 1),
                3 => {
                    p = p
                        .to_ascii_uppercase()
                        .replacen("/GEOSERVER", "/geoserver", 1)
                }
                4 => p.push('/'),
                5 => p = p.replacen("/geoserver", "/geo%73erver", 1),
                _ => {}
            }
            p
        })
}

const CONTENT_TYPES: &[&str] = &[
    "text/xml",
    "application/xml",
    "text/plain;charset=UTF-8",
    "application/x-www-form-urlencoded",
    "application/x-www-form-urlencoded; charset=UTF-8",
    "Application/X-WWW-Form-Urlencoded",
    "application/x-www-form-urlencodedX",
    "application/x-www-form-urlencoded; charset=UTF-16LE",
    "application/soap+xml",
    "application/soap+xml; charset=utf-8",
    "Application/SOAP+XML",
    "multipart/form-data; boundary=b",
    "text/xml; charset=IBM037",
];

const SOAP12: &str = "http://www.w3.org/2003/05/soap-envelope";

/// A body: empty, a form, XML with a prologue, a SOAP envelope, or garbage.
fn body() -> impl Strategy<Value = Vec<u8>> {
    let xml = (
        prop::sample::select(
            &[
                "",
                "<?xml version=\"1.0\"?>",
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n",
                "<?xml version=\"1.0\" encoding=\"UTF-16\"?>",
                "<?xml version='1.0' encoding='ISO-8859-1'?>",
                "\u{feff}",
                "<!-- a < b -->",
                "<?pi data?>",
                "<!DOCTYPE x [<!-- <wfs:GetFeature> -->]>",
                "<!DOCTYPE x [<!ENTITY e \"<Transaction/>\">]>",
                // Readers that end a construct at the first `>` see a fake root.
                "<!DOCTYPE x [<!-- > <GetFeature> -->]>",
                "<!DOCTYPE x [<!ENTITY e \"> <GetFeature>\">]>",
                "<!-- > <GetFeature> -->",
                "<?pi > <GetFeature> ?>",
                "  \n",
                "<!-- a -- b -->",
            ][..],
        ),
        prop::sample::select(OPS),
        0u8..5,
    )
        .prop_map(|(prologue, op, shape)| {
            let root = match shape {
                0 => format!("<wfs:{op} xmlns:wfs=\"http://www.opengis.net/wfs\" service=\"WFS\"><wfs:Query typeName=\"topp:states\"/></wfs:{op}>"),
                1 => format!("<{op} lockId=\"L1\"/>"),
                2 => format!("<wfs:{op}/>"),
                3 => format!("<{op} service=\"WMS\"><x/></{op}>"),
                _ => format!("<{op}/>"),
            };
            format!("{prologue}{root}").into_bytes()
        });
    let soap = (prop::sample::select(OPS), prop::sample::select(OPS), 0u8..6).prop_map(
        |(op, other, shape)| {
            let env = format!("<s:Envelope xmlns:s=\"{SOAP12}\">");
            match shape {
                0 => format!("{env}<s:Body><{op}/></s:Body></s:Envelope>"),
                1 => format!("{env}<s:Header><s:Body><{other}/></s:Body></s:Header><s:Body><{op}/></s:Body></s:Envelope>"),
                2 => format!("{env}<s:Body><{op}/></s:Body><s:Body><{other}/></s:Body></s:Envelope>"),
                3 => format!("<s:Envelope xmlns:s=\"http://schemas.xmlsoap.org/soap/envelope/\"><s:Body><{op}/></s:Body></s:Envelope>"),
                4 => format!("<s:Envelope><s:Body><{op}/></s:Body></s:Envelope>"),
                _ => format!("{env}<x:Wrap xmlns:x=\"urn:x\"><s:Body><{op}/></s:Body></x:Wrap></s:Envelope>"),
            }
            .into_bytes()
        },
    );
    prop_oneof![
        1 => Just(Vec::new()),
        2 => pairs().prop_map(String::into_bytes),
        5 => xml,
        1 => soap,
        1 => prop::collection::vec(any::<u8>(), 0..40),
    ]
}

fn sent() -> impl Strategy<Value = Sent> {
    (
        prop::sample::select(
            &["GET", "GET", "GET", "POST", "POST", "POST", "POST", "POST", "HEAD", "OPTIONS", "PUT"][..],
        ),
        path(),
        prop::option::of(pairs()),
        prop_oneof![
            2 => Just(None),
            2 => prop::sample::select(&["text/xml", "application/xml", "text/plain;charset=UTF-8"][..]).prop_map(Some),
            3 => prop::sample::select(CONTENT_TYPES).prop_map(Some),
        ],
        prop::option::of(prop::sample::select(CONTENT_TYPES)),
        prop::sample::select(&[None, None, None, Some("identity"), Some("gzip")][..]),
        prop::sample::select(
            &[
                None,
                None,
                Some("close"),
                Some("Content-Type"),
                Some("keep-alive, content-length"),
                Some("Host"),
                Some("x-foo"),
                Some("Content-Encoding"),
            ][..],
        ),
        body(),
    )
        .prop_map(|(method, path, query, ct, ct2, ce, connection, body)| {
            let mut headers = Vec::new();
            if let Some(ct) = ct {
                headers.push(("content-type".to_string(), ct.to_string()));
                if let (Some(ct2), true) = (ct2, body.len() % 5 == 0) {
                    headers.push(("content-type".to_string(), ct2.to_string()));
                }
            }
            if let Some(ce) = ce {
                headers.push(("content-encoding".to_string(), ce.to_string()));
            }
            Sent {
                method: method.to_string(),
                path,
                query,
                headers,
                connection: connection.map(String::from),
                body,
            }
        })
}

/// Ordinary reads with one trick at most: the requests that should reach replicas.
fn plain_sent() -> impl Strategy<Value = Sent> {
    (
        prop::sample::select(&["/geoserver/wfs", "/geoserver/wms", "/geoserver/topp/wfs", "/geoserver/ows"][..]),
        prop::sample::select(&["GetFeature", "GetMap", "DescribeFeatureType", "GetCapabilities"][..]),
        any::<bool>(),
        sent(),
        0u8..4,
    )
        .prop_map(|(path, op, post, tricky, borrow)| {
            let service = if path.contains("wms") { "WMS" } else { "WFS" };
            let mut s = if post {
                Sent {
                    method: "POST".into(),
                    path: path.into(),
                    query: None,
                    headers: vec![("content-type".into(), "text/xml".into())],
                    connection: None,
                    body: format!("<?xml version=\"1.0\"?><wfs:{op} xmlns:wfs=\"http://www.opengis.net/wfs\" service=\"{service}\"/>").into_bytes(),
                }
            } else {
                Sent {
                    method: "GET".into(),
                    path: path.into(),
                    query: Some(format!("service={service}&request={op}&typeName=topp:states")),
                    headers: Vec::new(),
                    connection: None,
                    body: Vec::new(),
                }
            };
            // One ingredient of a tricky request.
            match borrow {
                0 => s.headers.extend(tricky.headers),
                1 => s.connection = tricky.connection,
                2 if !post => s.query = Some(format!("{}&{}", s.query.unwrap_or_default(), tricky.query.unwrap_or_default())),
                2 => s.body = tricky.body,
                _ => s.path = tricky.path,
            }
            s
        })
}

fn requests() -> impl Strategy<Value = Sent> {
    prop_oneof![2 => sent(), 1 => plain_sent()]
}

fn cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(default)
}

// ---- the classifier alone ----

fn classify(c: &Classifier, s: &Sent) -> Result<Pool, &'static str> {
    let mut headers = HeaderMap::new();
    for (k, v) in &s.headers {
        headers.append(
            HeaderName::from_bytes(k.as_bytes()).unwrap(),
            HeaderValue::from_str(v).unwrap(),
        );
    }
    let method = Method::from_bytes(s.method.as_bytes()).unwrap();
    c.classify(&method, &s.path, s.query.as_deref(), &headers, &s.body)
        .map(|route| route.pool)
}

#[test]
fn whenever_the_node_would_write_the_classifier_says_master() {
    let c = Classifier::new("/geoserver", Vec::new(), 64 * 1024);
    let mut runner = TestRunner::new(ProptestConfig {
        cases: cases(20_000),
        failure_persistence: None,
        ..ProptestConfig::default()
    });
    let (writes, reads) = (
        std::sync::atomic::AtomicUsize::new(0),
        std::sync::atomic::AtomicUsize::new(0),
    );
    runner
        .run(&requests(), |s| {
            let node = node_verdict(&s.forwarded(), "/geoserver");
            let geolb = classify(&c, &s);
            let tally = if node.master { &writes } else { &reads };
            if node.master || geolb == Ok(Pool::Reads) {
                tally.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            prop_assert!(
                !(node.master && geolb == Ok(Pool::Reads)),
                "the node reads a write, geolb a read:\n{} {}\n{:?}\n{}\nnode: {}",
                s.method,
                s.target(),
                s.headers,
                String::from_utf8_lossy(&s.body),
                node.why
            );
            Ok(())
        })
        .unwrap();
    // Both kinds are generated in numbers: this test can fail.
    let (writes, reads) = (writes.into_inner(), reads.into_inner());
    let total = cases(20_000) as usize;
    assert!(
        writes * 10 > total && reads * 10 > total,
        "writes {writes}, agreed reads {reads}"
    );
}

// ---- through a real geolb, HTTP/1.1 and h2 ----

/// A node that records each request exactly as it arrives (head and de-chunked body) and names
/// itself in `X-Node`. Health probes are answered and not recorded.
struct Recorder {
    name: &'static str,
    url: String,
    seen: Arc<Mutex<Vec<NodeRequest>>>,
}

impl Recorder {
    async fn start(name: &'static str) -> Recorder {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let recorded = seen.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(record(stream, name, recorded.clone()));
            }
        });
        Recorder { name, url, seen }
    }

    fn count(&self) -> usize {
        self.seen.lock().unwrap().len()
    }

    fn last(&self) -> Option<NodeRequest> {
        self.seen.lock().unwrap().last().cloned()
    }
}

/// Serves one keep-alive connection.
async fn record(mut stream: TcpStream, name: &str, seen: Arc<Mutex<Vec<NodeRequest>>>) {
    let mut buf = Vec::new();
    loop {
        let Some(end) = read_until(&mut stream, &mut buf, b"\r\n\r\n").await else {
            return;
        };
        let head: Vec<u8> = buf.drain(..end).collect();
        let mut slots = [httparse::EMPTY_HEADER; 128];
        let mut req = httparse::Request::new(&mut slots);
        if !matches!(req.parse(&head), Ok(httparse::Status::Complete(_))) {
            return;
        }
        let headers: Vec<(String, Vec<u8>)> = req
            .headers
            .iter()
            .map(|h| (h.name.to_ascii_lowercase(), h.value.to_vec()))
            .collect();
        let header = |n: &str| headers.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
        let chunked =
            header("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case(b"chunked"));
        let body = if chunked {
            let mut body = Vec::new();
            loop {
                let Some(line_end) = read_until(&mut stream, &mut buf, b"\r\n").await else {
                    return;
                };
                let line: Vec<u8> = buf.drain(..line_end).collect();
                let size = std::str::from_utf8(&line[..line.len() - 2])
                    .ok()
                    .and_then(|l| usize::from_str_radix(l.split(';').next()?.trim(), 16).ok());
                let Some(size) = size else { return };
                if size == 0 {
                    // Trailers (none from geolb), then the final CRLF.
                    if read_until(&mut stream, &mut buf, b"\r\n").await.is_none() {
                        return;
                    }
                    buf.drain(..2);
                    break;
                }
                if !fill(&mut stream, &mut buf, size + 2).await {
                    return;
                }
                body.extend(buf.drain(..size));
                buf.drain(..2);
            }
            body
        } else {
            let len = header("content-length")
                .and_then(|v| std::str::from_utf8(&v).ok()?.trim().parse::<usize>().ok())
                .unwrap_or(0);
            if !fill(&mut stream, &mut buf, len).await {
                return;
            }
            buf.drain(..len).collect()
        };
        let probe = header("user-agent").is_some_and(|ua| ua.starts_with(b"geolb-health"));
        if !probe {
            seen.lock().unwrap().push(NodeRequest {
                method: req.method.unwrap_or("").to_string(),
                target: req.path.unwrap_or("").as_bytes().to_vec(),
                headers,
                body,
            });
        }
        let reply = format!("HTTP/1.1 200 OK\r\nX-Node: {name}\r\nContent-Length: 0\r\n\r\n");
        if stream.write_all(reply.as_bytes()).await.is_err() {
            return;
        }
    }
}

/// Reads until `buf` holds `needle`; the index just past it.
async fn read_until(stream: &mut TcpStream, buf: &mut Vec<u8>, needle: &[u8]) -> Option<usize> {
    loop {
        if let Some(i) = buf.windows(needle.len()).position(|w| w == needle) {
            return Some(i + needle.len());
        }
        let mut chunk = [0u8; 8192];
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

async fn fill(stream: &mut TcpStream, buf: &mut Vec<u8>, len: usize) -> bool {
    while buf.len() < len {
        let mut chunk = [0u8; 8192];
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return false,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    true
}

/// Which node answered (from `X-Node`), or `None` when geolb answered itself.
async fn send_h1(geolb: std::net::SocketAddr, s: &Sent) -> Option<String> {
    let mut head = format!(
        "{} {} HTTP/1.1\r\nHost: maps.example.org\r\n",
        s.method,
        s.target()
    );
    for (k, v) in &s.headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    let connection = match &s.connection {
        Some(c) => format!("close, {c}"),
        None => "close".to_string(),
    };
    head.push_str(&format!(
        "Connection: {connection}\r\nContent-Length: {}\r\n\r\n",
        s.body.len()
    ));
    let mut stream = TcpStream::connect(geolb).await.unwrap();
    stream.write_all(head.as_bytes()).await.unwrap();
    let _ = stream.write_all(&s.body).await;
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer)).await;
    node_of(&answer)
}

fn node_of(answer: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(answer);
    text.lines()
        .take_while(|l| !l.is_empty())
        .find_map(|l| {
            l.strip_prefix("x-node: ")
                .or_else(|| l.strip_prefix("X-Node: "))
        })
        .map(String::from)
}

async fn send_h2(
    client: &hyper_util::client::legacy::Client<
        hyper_util::client::legacy::connect::HttpConnector,
        support::TestBody,
    >,
    geolb: std::net::SocketAddr,
    s: &Sent,
) -> Option<String> {
    let mut req = http::Request::builder()
        .method(Method::from_bytes(s.method.as_bytes()).unwrap())
        .uri(format!("http://{geolb}{}", s.target()));
    for (k, v) in &s.headers {
        req = req.header(k.as_str(), v.as_str());
    }
    let req = req
        .body(Full::new(Bytes::from(s.body.clone())).boxed())
        .unwrap();
    let response = tokio::time::timeout(Duration::from_secs(10), client.request(req))
        .await
        .ok()?
        .ok()?;
    response
        .headers()
        .get("x-node")
        .and_then(|v| v.to_str().ok())
        .map(String::from)
}

#[test]
fn whenever_the_node_would_write_a_replica_never_receives_it() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (geolb, nodes) = rt.block_on(async {
        let nodes = vec![
            Recorder::start("gs-master").await,
            Recorder::start("gs-replica-1").await,
            Recorder::start("gs-replica-2").await,
        ];
        // The master serves no reads: whatever a replica receives, geolb read as a read.
        let config = format!(
            "[listen]\nhttp = [\"127.0.0.1:0\"]\n[admin]\nlisten = \"127.0.0.1:0\"\n\
             [health]\ninterval = \"200ms\"\ntimeout = \"1s\"\nexpect_body = \"\"\n[log]\naccess = false\n\
             [consistency]\nread_your_writes = \"0s\"\n\
             [[nodes]]\nname = \"gs-master\"\nurl = \"{}\"\nmaster = 1\nreads = false\n\
             [[nodes]]\nname = \"gs-replica-1\"\nurl = \"{}\"\n\
             [[nodes]]\nname = \"gs-replica-2\"\nurl = \"{}\"\n",
            nodes[0].url, nodes[1].url, nodes[2].url
        );
        let geolb = geolb::server::start(geolb::config::Config::parse(&config).unwrap())
            .await
            .unwrap();
        support::wait_for("all nodes up", Duration::from_secs(10), || {
            let snap = geolb.snapshot();
            snap.master.is_some() && snap.readers.len() == 2
        })
        .await;
        (geolb, nodes)
    });
    let addr = geolb.http[0];
    let h2 = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .http2_only(true)
        .build_http();
    let mut runner = TestRunner::new(ProptestConfig {
        cases: cases(400),
        failure_persistence: None,
        ..ProptestConfig::default()
    });
    let (reached_replica, reached_master, replica_over_h2) = (
        std::sync::atomic::AtomicUsize::new(0),
        std::sync::atomic::AtomicUsize::new(0),
        std::sync::atomic::AtomicUsize::new(0),
    );
    runner
        .run(&(requests(), any::<bool>()), |(s, over_h2)| {
            let answered = rt.block_on(async {
                if over_h2 {
                    send_h2(&h2, addr, &s).await
                } else {
                    send_h1(addr, &s).await
                }
            });
            let Some(name) = answered else {
                return Ok(()); // geolb refused it, or could not serve it
            };
            let node = nodes.iter().find(|n| n.name == name).expect("a known node");
            if name == "gs-master" {
                reached_master.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                return Ok(());
            }
            reached_replica.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            if over_h2 {
                replica_over_h2.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            let received = node.last().expect("the replica recorded it");
            let reading = node_verdict(&received, "/geoserver");
            prop_assert!(
                !reading.master,
                "{name} received, over {}, a request the node reads as a write:\n{} {}\n{:?}\n{}\nnode: {}",
                if over_h2 { "h2" } else { "HTTP/1.1" },
                received.method,
                String::from_utf8_lossy(&received.target),
                received.headers.iter().map(|(k, v)| format!("{k}: {}", String::from_utf8_lossy(v))).collect::<Vec<_>>(),
                String::from_utf8_lossy(&received.body),
                reading.why
            );
            Ok(())
        })
        .unwrap();
    // The generator reaches both pools: this test can fail.
    let (replica, master) = (reached_replica.into_inner(), reached_master.into_inner());
    assert!(
        replica > 20 && master > 20,
        "replicas {replica}, master {master}"
    );
    let h2 = replica_over_h2.into_inner();
    assert!(h2 > 5 && replica - h2 > 5, "over h2: {h2} of {replica}");
    assert!(nodes[1].count() + nodes[2].count() >= replica);
    rt.block_on(geolb.shutdown());
}
