//! TLS termination with certificates made at test time: HTTPS over HTTP/1.1 and HTTP/2, SNI,
//! X-Forwarded-Proto, and a certificate swap by reload under an open connection.

mod support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use geolb::config::Config;
use geolb::control::Source;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Empty, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::{CertificateDer, ServerName};
use support::*;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

/// A self-signed certificate for `names`, written as PEM files in `dir`; returns (cert, key, DER).
fn certificate(
    dir: &Path,
    file: &str,
    names: &[&str],
) -> (PathBuf, PathBuf, CertificateDer<'static>) {
    let made =
        rcgen::generate_simple_self_signed(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
            .unwrap();
    let (cert, key) = (
        dir.join(format!("{file}.crt")),
        dir.join(format!("{file}.key")),
    );
    std::fs::write(&cert, made.cert.pem()).unwrap();
    std::fs::write(&key, made.signing_key.serialize_pem()).unwrap();
    (cert, key, made.cert.der().clone())
}

fn tempdir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "geolb-tls-{}-{}",
        std::process::id(),
        fastrand::u64(..)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Connects with SNI `name`, trusting `roots`, offering `alpn`; returns the stream and the
/// certificate the server chose.
async fn connect(
    addr: SocketAddr,
    name: &str,
    roots: &[CertificateDer<'static>],
    alpn: &[&[u8]],
) -> (TlsStream<TcpStream>, CertificateDer<'static>) {
    let mut store = rustls::RootCertStore::empty();
    for root in roots {
        store.add(root.clone()).unwrap();
    }
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(store)
    .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let tcp = TcpStream::connect(addr).await.unwrap();
    let stream = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from(name.to_string()).unwrap(), tcp)
        .await
        .unwrap_or_else(|e| panic!("TLS handshake with SNI {name}: {e}"));
    let chosen = stream.get_ref().1.peer_certificates().unwrap()[0].clone();
    (stream, chosen)
}

/// One GET over an HTTP/1.1 or HTTP/2 connection on `stream`.
async fn get(
    stream: TlsStream<TcpStream>,
    host: &str,
    path: &str,
) -> (StatusCode, http::HeaderMap) {
    request(stream, http::Method::GET, host, path).await
}

/// One bodiless request over an HTTP/1.1 or HTTP/2 connection on `stream`.
async fn request(
    stream: TlsStream<TcpStream>,
    method: http::Method,
    host: &str,
    path: &str,
) -> (StatusCode, http::HeaderMap) {
    let h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
    let req = |version| {
        Request::builder()
            .method(method.clone())
            .uri(format!("https://{host}{path}"))
            .version(version)
            .header("host", host)
            .body(Empty::<Bytes>::new())
            .unwrap()
    };
    let response = if h2 {
        let (mut send, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
                .await
                .unwrap();
        tokio::spawn(conn);
        send.send_request(req(http::Version::HTTP_2)).await.unwrap()
    } else {
        let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .unwrap();
        tokio::spawn(conn);
        send.send_request(req(http::Version::HTTP_11))
            .await
            .unwrap()
    };
    let (parts, body) = response.into_parts();
    let _ = body.collect().await;
    (parts.status, parts.headers)
}

fn tls_options(
    a: &(PathBuf, PathBuf, CertificateDer<'static>),
    b: &(PathBuf, PathBuf, CertificateDer<'static>),
) -> String {
    format!(
        "[[tls.certs]]\ncert = \"{}\"\nkey = \"{}\"\n[[tls.certs]]\ncert = \"{}\"\nkey = \"{}\"\n",
        a.0.display(),
        a.1.display(),
        b.0.display(),
        b.1.display()
    )
}

/// The three-node test config with `listen` lines replaced by `listen` (TLS listeners and such).
fn listeners_text(nodes: &[geolb::sim::SimNode], listen: &str) -> String {
    listeners_text_with(nodes, &Options::default(), listen)
}

fn listeners_text_with(nodes: &[geolb::sim::SimNode], opts: &Options, listen: &str) -> String {
    config_text(THREE, nodes, opts).replace("http = [\"127.0.0.1:0\"]", listen)
}

async fn start(extra: &str) -> (Harness, geolb::server::Running) {
    start_with(&Options::default(), extra).await
}

/// A second geolb, with a plain and a TLS listener, in front of a test cluster's nodes.
async fn start_with(opts: &Options, extra: &str) -> (Harness, geolb::server::Running) {
    let h = Harness::start(THREE).await;
    let text = listeners_text_with(
        &h.nodes,
        opts,
        "http = [\"127.0.0.1:0\"]\nhttps = [\"127.0.0.1:0\"]",
    ) + extra;
    let config = Config::parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    let running = geolb::server::start(config).await.unwrap();
    wait_for(
        "nodes up behind the TLS geolb",
        std::time::Duration::from_secs(5),
        || {
            running
                .snapshot()
                .states
                .iter()
                .all(|s| *s == geolb::cluster::health::State::Up)
        },
    )
    .await;
    (h, running)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_getmap_over_http1_and_http2_with_sni() {
    let dir = tempdir();
    let maps = certificate(&dir, "maps", &["maps.example.test"]);
    let tiles = certificate(&dir, "tiles", &["tiles.example.test"]);
    let (_h, geolb) = start(&tls_options(&maps, &tiles)).await;
    let addr = geolb.https[0];
    let roots = [maps.2.clone(), tiles.2.clone()];

    for alpn in [&b"http/1.1"[..], &b"h2"[..]] {
        let (stream, chosen) = connect(addr, "maps.example.test", &roots, &[alpn]).await;
        assert_eq!(chosen, maps.2, "SNI maps.example.test gets its certificate");
        assert_eq!(stream.get_ref().1.alpn_protocol(), Some(alpn));
        let (status, headers) =
            get(stream, "maps.example.test", "/geoserver/wms?request=GetMap").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(
            headers["x-seen-forwarded-proto"], "https",
            "the node learns the client used TLS"
        );
        assert!(headers.contains_key("x-node"));
    }
    let (_, chosen) = connect(addr, "tiles.example.test", &roots, &[b"h2"]).await;
    assert_eq!(
        chosen, tiles.2,
        "SNI tiles.example.test gets its own certificate"
    );
    // A name no certificate covers gets the default (first) one, which a careful client refuses
    // for that name (a handshake refused by geolb would fail otherwise: with an alert).
    let mut store = rustls::RootCertStore::empty();
    store.add(maps.2.clone()).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(store)
    .with_no_client_auth();
    let tcp = TcpStream::connect(addr).await.unwrap();
    let wrong = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("other.example.test").unwrap(), tcp)
        .await;
    let err = wrong
        .expect_err("the default certificate does not name other.example.test")
        .to_string();
    assert!(
        err.contains("not valid for name") || err.contains("NotValidForName"),
        "{err}"
    );
    geolb.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_read_your_writes_cookie_is_secure_and_cross_site_over_tls_only() {
    let dir = tempdir();
    let maps = certificate(&dir, "maps", &["maps.example.test"]);
    let tiles = certificate(&dir, "tiles", &["tiles.example.test"]);
    let pins = Options {
        consistency: "read_your_writes = \"5s\"\n",
        ..Options::default()
    };
    let (h, geolb) = start_with(&pins, &tls_options(&maps, &tiles)).await;
    let write = "/geoserver/rest/layers/topp:roads";
    let (stream, _) = connect(
        geolb.https[0],
        "maps.example.test",
        std::slice::from_ref(&maps.2),
        &[b"h2"],
    )
    .await;
    let (status, headers) = request(stream, http::Method::DELETE, "maps.example.test", write).await;
    assert_eq!(status, StatusCode::OK);
    let set = headers["set-cookie"].to_str().unwrap();
    assert!(
        set.starts_with("geolb_rw=")
            && set.contains("Path=/geoserver")
            && set.contains("; Secure; SameSite=None"),
        "over TLS, for map apps on other sites: {set}"
    );
    // The same write over plain HTTP: no Secure (the browser would drop the cookie), same-site.
    let req = Request::delete(format!("http://{}{write}", geolb.http[0]))
        .body(Full::new(Bytes::new()).boxed())
        .unwrap();
    let plain = send(&h.client, req).await;
    let set = plain.header("set-cookie");
    assert!(
        set.starts_with("geolb_rw=") && set.contains("SameSite=Lax") && !set.contains("Secure"),
        "{set}"
    );
    geolb.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_swaps_certificates_without_dropping_open_connections() {
    let dir = tempdir();
    let old = certificate(&dir, "old", &["maps.example.test"]);
    let spare = certificate(&dir, "spare", &["spare.example.test"]);
    let (h, geolb) = start(&tls_options(&old, &spare)).await;
    let addr = geolb.https[0];
    let roots = [old.2.clone(), spare.2.clone()];
    // An open HTTP/1.1 keep-alive connection made with the old certificate.
    let (stream, chosen) = connect(addr, "maps.example.test", &roots, &[b"http/1.1"]).await;
    assert_eq!(chosen, old.2);
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let request = || {
        Request::get("/geoserver/wms?request=GetMap")
            .header("host", "maps.example.test")
            .body(Empty::<Bytes>::new())
            .unwrap()
    };
    let first = send.send_request(request()).await.unwrap();
    assert_eq!(first.status(), StatusCode::OK);
    // Read whole, so that the connection can carry the next request.
    first.into_body().collect().await.unwrap();

    // The certificate file changes; a reload puts it in force for new handshakes.
    let new = certificate(&dir, "new", &["maps.example.test"]);
    let text = listeners_text(
        &h.nodes,
        "http = [\"127.0.0.1:0\"]\nhttps = [\"127.0.0.1:0\"]",
    ) + &tls_options(&new, &spare);
    geolb
        .reload(Source::Given(Box::new(Config::parse(&text).unwrap())))
        .await
        .unwrap();
    let (_, chosen) = connect(
        addr,
        "maps.example.test",
        &[new.2.clone(), spare.2.clone()],
        &[b"h2"],
    )
    .await;
    assert_eq!(chosen, new.2, "new handshakes see the new certificate");
    send.ready()
        .await
        .expect("the open connection is still ready");
    let response = send
        .send_request(request())
        .await
        .expect("the open connection still works");
    assert_eq!(response.status(), StatusCode::OK);

    // A bad certificate is refused; the current one stays.
    std::fs::write(&new.0, "not a certificate").unwrap();
    let loaded = Config::load(&{
        let path = dir.join("config.toml");
        std::fs::write(&path, &text).unwrap();
        path
    })
    .expect("the config itself is valid");
    let err = geolb::tls::check(&loaded).expect_err("geolb check refuses a bad certificate");
    assert_eq!(err.key.as_deref(), Some("tls.certs[0].cert"), "{err}");
    // A reload meeting it is refused, and handshakes keep the certificate in force.
    let refused = geolb
        .reload(Source::Given(Box::new(Config::parse(&text).unwrap())))
        .await;
    assert!(refused.expect_err("refused").contains("tls.certs[0].cert"));
    let (_, chosen) = connect(
        addr,
        "maps.example.test",
        &[new.2.clone(), spare.2.clone()],
        &[b"h2"],
    )
    .await;
    assert_eq!(
        chosen, new.2,
        "still the certificate of the last good reload"
    );
    geolb.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_listeners_can_redirect_to_https_while_the_admin_listener_stays() {
    let dir = tempdir();
    let maps = certificate(&dir, "maps", &["maps.example.test"]);
    let spare = certificate(&dir, "spare", &["spare.example.test"]);
    let extra = tls_options(&maps, &spare);
    let h = Harness::start(THREE).await;
    let text = listeners_text(
        &h.nodes,
        "http = [\"127.0.0.1:0\"]\nhttps = [\"127.0.0.1:0\"]\nredirect_https = true",
    ) + &extra;
    let geolb = geolb::server::start(Config::parse(&text).unwrap())
        .await
        .unwrap();
    let req = Request::get(format!(
        "http://{}/geoserver/wms?request=GetMap",
        geolb.http[0]
    ))
    .header("host", "maps.example.test:8080")
    .body(http_body_util::Full::new(Bytes::new()).boxed())
    .unwrap();
    let r = send(&client(), req).await;
    assert_eq!(r.status, StatusCode::PERMANENT_REDIRECT);
    assert_eq!(
        r.header("location"),
        "https://maps.example.test:0/geoserver/wms?request=GetMap",
        "the configured https port"
    );
    assert_eq!(
        h.nodes.iter().map(|n| n.hits()).sum::<u64>(),
        0,
        "redirects never reach a node"
    );
    let status = Request::get(format!("http://{}/status", geolb.admin))
        .body(http_body_util::Full::new(Bytes::new()).boxed())
        .unwrap();
    assert_eq!(
        send(&client(), status).await.status,
        StatusCode::OK,
        "the admin listener is not redirected"
    );
    geolb.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// geolb in front of an `https://` node: the node is another geolb terminating TLS for `localhost`.
async fn behind_tls(
    forwarding: &str,
) -> (
    Harness,
    geolb::server::Running,
    geolb::server::Running,
    PathBuf,
) {
    let dir = tempdir();
    let node_cert = certificate(&dir, "node", &["localhost"]);
    let spare = certificate(&dir, "spare", &["spare.test"]);
    let (h, tls_node) = start(&tls_options(&node_cert, &spare)).await;
    let front = geolb::server::start(front_config(forwarding, &tls_node, &dir))
        .await
        .unwrap();
    (h, tls_node, front, dir)
}

/// The front geolb's config: the https node of [`behind_tls`] (certificates in `dir`), with
/// `forwarding` (`@CA@`: the node's CA; `@OTHER@`: another one).
fn front_config(forwarding: &str, tls_node: &geolb::server::Running, dir: &Path) -> Config {
    let text = format!(
        "[listen]\nhttp = [\"127.0.0.1:0\"]\n[admin]\nlisten = \"127.0.0.1:0\"\n[log]\naccess = false\n\
         [health]\ninterval = \"100ms\"\ntimeout = \"500ms\"\n[forwarding]\n{forwarding}\n\
         [[nodes]]\nname = \"gs-tls\"\nurl = \"https://localhost:{}\"\nmaster = 1\n",
        tls_node.https[0].port()
    )
    .replace("@CA@", &dir.join("node.crt").display().to_string())
    .replace("@OTHER@", &dir.join("spare.crt").display().to_string());
    Config::parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"))
}

/// Waits until the front geolb's only node is up.
async fn first_node_up(front: &geolb::server::Running, what: &str) {
    wait_for(what, std::time::Duration::from_secs(5), || {
        front.snapshot().states.first() == Some(&geolb::cluster::health::State::Up)
    })
    .await;
}

/// A GetMap through the front geolb.
async fn getmap(front: &geolb::server::Running) -> Reply {
    let url = format!("http://{}/geoserver/wms?request=GetMap", front.http[0]);
    send(
        &client(),
        Request::get(url)
            .body(http_body_util::Full::new(Bytes::new()).boxed())
            .unwrap(),
    )
    .await
}

/// A GetMap through geolb reaches the https node set up with `forwarding`.
async fn served_through_the_https_node(forwarding: &str) {
    let (_h, tls_node, front, dir) = behind_tls(forwarding).await;
    first_node_up(&front, "the https node passes its check").await;
    let r = getmap(&front).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert!(
        r.header("x-node").starts_with("gs-"),
        "answered through the TLS node"
    );
    front.shutdown().await;
    tls_node.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_https_node_with_a_trusted_ca_is_used() {
    served_through_the_https_node("ca_bundle = \"@CA@\"").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn insecure_skip_verify_accepts_any_node_certificate() {
    served_through_the_https_node("insecure_skip_verify = true").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_https_node_with_an_unknown_ca_is_never_admitted_and_the_check_says_why() {
    let (_h, tls_node, front, dir) = behind_tls("ca_bundle = \"@OTHER@\"").await;
    // Its health check fails for the same reason, and says so.
    wait_for(
        "the check reports the certificate",
        std::time::Duration::from_secs(5),
        || {
            front.snapshot().nodes[0]
                .last_check()
                .is_some_and(|c| !c.ok && c.detail.contains("certificate"))
        },
    )
    .await;
    let detail = front.snapshot().nodes[0]
        .last_check()
        .unwrap()
        .detail
        .clone();
    assert!(
        detail.starts_with("TLS: invalid peer certificate"),
        "{detail}"
    );
    // Never admitted, the node gets no request: clients get 503, not a broken TLS hop.
    let req = Request::get(format!(
        "http://{}/geoserver/wms?request=GetMap",
        front.http[0]
    ))
    .body(http_body_util::Full::new(Bytes::new()).boxed())
    .unwrap();
    assert_eq!(
        send(&client(), req).await.status,
        StatusCode::SERVICE_UNAVAILABLE
    );
    front.shutdown().await;
    tls_node.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_puts_new_node_tls_settings_in_force() {
    let (_h, tls_node, front, dir) = behind_tls("ca_bundle = \"@OTHER@\"").await;
    // The node is not trusted: never admitted.
    wait_for(
        "the check reports the certificate",
        std::time::Duration::from_secs(5),
        || {
            front.snapshot().nodes[0]
                .last_check()
                .is_some_and(|c| !c.ok && c.detail.contains("certificate"))
        },
    )
    .await;
    let trusting = front_config("ca_bundle = \"@CA@\"", &tls_node, &dir);
    front
        .reload(Source::Given(Box::new(trusting)))
        .await
        .expect("a new CA bundle reloads");
    first_node_up(&front, "the node, trusted now, is admitted").await;
    assert_eq!(getmap(&front).await.status, StatusCode::OK);
    // And back: the pooled connections made under the old trust go; the node is ejected.
    let distrusting = front_config("ca_bundle = \"@OTHER@\"", &tls_node, &dir);
    front
        .reload(Source::Given(Box::new(distrusting)))
        .await
        .expect("reloads");
    wait_for(
        "the node to be ejected",
        std::time::Duration::from_secs(5),
        || front.snapshot().states.first() == Some(&geolb::cluster::health::State::Down),
    )
    .await;
    assert_ne!(getmap(&front).await.status, StatusCode::OK);
    front.shutdown().await;
    tls_node.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// A TLS node that demands a client certificate signed by `client_ca`, answering 200 with
/// `x-client-cert: yes` when one was shown.
async fn mtls_node(dir: &Path, client_ca: &CertificateDer<'static>) -> (SocketAddr, PathBuf) {
    use rustls::pki_types::pem::PemObject;
    let server = certificate(dir, "mtls-node", &["localhost"]);
    let mut roots = rustls::RootCertStore::empty();
    roots.add(client_ca.clone()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()
    .unwrap();
    let key = rustls::pki_types::PrivateKeyDer::from_pem_file(&server.1).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_client_cert_verifier(verifier)
        .with_single_cert(vec![server.2.clone()], key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let shown = tls
                    .get_ref()
                    .1
                    .peer_certificates()
                    .is_some_and(|c| !c.is_empty());
                let service = hyper::service::service_fn(move |_req| async move {
                    let mut r = http::Response::new(http_body_util::Full::new(Bytes::from_static(
                        b"<WMS_Capabilities/>",
                    )));
                    r.headers_mut().insert(
                        "x-client-cert",
                        if shown { "yes" } else { "no" }.parse().unwrap(),
                    );
                    r.headers_mut().insert("x-node", "gs-mtls".parse().unwrap());
                    Ok::<_, std::convert::Infallible>(r)
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    (addr, server.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_certificate_is_presented_to_nodes_that_ask_for_one() {
    let dir = tempdir();
    let client_cert = certificate(&dir, "geolb-client", &["geolb.test"]);
    let (addr, node_ca) = mtls_node(&dir, &client_cert.2).await;
    let text = format!(
        "[listen]\nhttp = [\"127.0.0.1:0\"]\n[admin]\nlisten = \"127.0.0.1:0\"\n[log]\naccess = false\n\
         [health]\ninterval = \"100ms\"\ntimeout = \"500ms\"\nexpect_body = \"WMS_Capabilities\"\n\
         [forwarding]\nca_bundle = \"{}\"\nclient_cert = \"{}\"\nclient_key = \"{}\"\n\
         [[nodes]]\nname = \"gs-mtls\"\nurl = \"https://localhost:{}\"\nmaster = 1\n",
        node_ca.display(),
        client_cert.0.display(),
        client_cert.1.display(),
        addr.port()
    );
    let front = geolb::server::start(Config::parse(&text).unwrap())
        .await
        .unwrap();
    first_node_up(&front, "the mTLS node passes its check").await;
    let r = getmap(&front).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        r.header("x-client-cert"),
        "yes",
        "geolb showed its client certificate"
    );
    front.shutdown().await;
    // Without a client certificate, the node refuses geolb: its check fails and says why.
    let without = text.replace(
        &format!(
            "client_cert = \"{}\"\nclient_key = \"{}\"\n",
            client_cert.0.display(),
            client_cert.1.display()
        ),
        "",
    );
    let front = geolb::server::start(Config::parse(&without).unwrap())
        .await
        .unwrap();
    wait_for(
        "the check fails without a client certificate",
        std::time::Duration::from_secs(5),
        || {
            front.snapshot().nodes[0]
                .last_check()
                .is_some_and(|c| !c.ok)
        },
    )
    .await;
    assert_eq!(
        front.snapshot().states[0],
        geolb::cluster::health::State::Down
    );
    front.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// Every key type and encoding the issue names loads (keys made by Debian's openssl).
#[test]
fn rsa_ecdsa_and_ed25519_keys_in_pkcs8_pkcs1_and_sec1_load() {
    let dir = tempdir();
    let openssl = |args: &[&str]| {
        let out = std::process::Command::new("openssl")
            .args(args)
            .output()
            .expect("openssl is installed");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let kinds: &[(&str, &[&str], &str)] = &[
        (
            "rsa-pkcs1",
            &["genrsa", "-traditional", "-out", "@KEY@", "2048"],
            "BEGIN RSA PRIVATE KEY",
        ),
        (
            "rsa-pkcs8",
            &[
                "genpkey",
                "-algorithm",
                "RSA",
                "-pkeyopt",
                "rsa_keygen_bits:2048",
                "-out",
                "@KEY@",
            ],
            "BEGIN PRIVATE KEY",
        ),
        (
            "ec-sec1",
            &[
                "ecparam",
                "-name",
                "prime256v1",
                "-genkey",
                "-noout",
                "-out",
                "@KEY@",
            ],
            "BEGIN EC PRIVATE KEY",
        ),
        (
            "ec-pkcs8",
            &[
                "genpkey",
                "-algorithm",
                "EC",
                "-pkeyopt",
                "ec_paramgen_curve:P-384",
                "-out",
                "@KEY@",
            ],
            "BEGIN PRIVATE KEY",
        ),
        (
            "ed25519",
            &["genpkey", "-algorithm", "ED25519", "-out", "@KEY@"],
            "BEGIN PRIVATE KEY",
        ),
    ];
    for (name, genkey, marker) in kinds {
        let key = dir.join(format!("{name}.key"));
        let cert = dir.join(format!("{name}.crt"));
        let key_s = key.display().to_string();
        openssl(
            &genkey
                .iter()
                .map(|a| if *a == "@KEY@" { key_s.as_str() } else { a })
                .collect::<Vec<_>>(),
        );
        assert!(
            std::fs::read_to_string(&key).unwrap().contains(marker),
            "{name} is {marker}"
        );
        openssl(&[
            "req",
            "-x509",
            "-new",
            "-key",
            &key_s,
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=DNS:localhost",
            "-days",
            "2",
            "-out",
            &cert.display().to_string(),
        ]);
        let certs = [geolb::config::TlsCert { cert, key }];
        geolb::tls::server_config(&certs).unwrap_or_else(|e| panic!("{name}: {e}"));
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_whose_certificate_turns_untrusted_gives_502_naming_the_reason() {
    let dir = tempdir();
    let trusted = certificate(&dir, "trusted", &["localhost"]);
    let untrusted = certificate(&dir, "untrusted", &["localhost"]);
    let (h, tls_node) = start(&tls_options(&trusted, &trusted)).await;
    // Checks far apart and no passive ejection: the node stays admitted while its certificate changes.
    let text = format!(
        "[listen]\nhttp = [\"127.0.0.1:0\"]\n[admin]\nlisten = \"127.0.0.1:0\"\n[log]\naccess = false\n\
         [health]\ninterval = \"30s\"\ntimeout = \"1s\"\n[passive]\nconsecutive_failures = 0\n\
         [forwarding]\nca_bundle = \"{}\"\n\
         [[nodes]]\nname = \"gs-tls\"\nurl = \"https://localhost:{}\"\nmaster = 1\n",
        trusted.0.display(),
        tls_node.https[0].port()
    );
    let front = geolb::server::start(Config::parse(&text).unwrap())
        .await
        .unwrap();
    first_node_up(&front, "the https node is up").await;
    let url = format!("http://{}/geoserver/wms?request=GetMap", front.http[0]);
    let get = || {
        Request::get(&url)
            .body(http_body_util::Full::new(Bytes::new()).boxed())
            .unwrap()
    };
    assert_eq!(send(&client(), get()).await.status, StatusCode::OK);

    // The node restarts on the same port with a certificate from an unknown CA.
    let port = tls_node.https[0].port();
    tls_node.shutdown().await;
    let node_text = listeners_text(
        &h.nodes,
        &format!("http = [\"127.0.0.1:0\"]\nhttps = [\"127.0.0.1:{port}\"]"),
    ) + &tls_options(&untrusted, &untrusted);
    let tls_node = geolb::server::start(Config::parse(&node_text).unwrap())
        .await
        .unwrap();
    let r = send(&client(), get()).await;
    assert_eq!(r.status, StatusCode::BAD_GATEWAY);
    assert!(
        r.text().starts_with("node gs-tls failed:")
            && r.text().contains("invalid peer certificate"),
        "{}",
        r.text()
    );
    front.shutdown().await;
    tls_node.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}
