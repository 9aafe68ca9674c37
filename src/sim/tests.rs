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
        (StatusCode::OK, sick_exception().as_bytes())
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
async fn a_graceful_stop_finishes_requests_in_progress_closes_idle_connections_and_stops_listening()
{
    let t = setup().await;
    // An idle kept-alive connection, and a request in progress (a slow read) on another.
    let mut idle = connection(t.node.addr()).await;
    let (parts, _) = get_on(&mut idle, "/geoserver/wms?request=GetMap", |r| r).await;
    assert_eq!(parts.status, StatusCode::OK);
    t.node.set_delay(Duration::from_millis(400));
    let slow = Request::get(format!("{}/wms?request=GetMap", t.node.url()));
    let slow = tokio::spawn(
        t.client
            .request(slow.body(Full::default()).expect("request")),
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    while t.node.hits() < 2 {
        assert!(Instant::now() < deadline, "the slow request never arrived");
        tokio::task::yield_now().await;
    }
    let began = Instant::now();
    t.node.stop(Duration::from_secs(5)).await;
    let answer = tokio::time::timeout(Duration::from_secs(5), slow).await;
    let answer = answer
        .expect("answered")
        .expect("task")
        .expect("a response");
    assert_eq!(
        answer.status(),
        StatusCode::OK,
        "the request in progress finished"
    );
    assert!(
        began.elapsed() < Duration::from_secs(3),
        "no waiting out the grace"
    );
    assert!(
        idle.ready().await.is_err(),
        "the idle connection was closed"
    );
    assert!(tokio::net::TcpStream::connect(t.node.addr()).await.is_err());
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

// ---- the simulated cluster ----

const LAG: Duration = Duration::from_millis(300);
const ROADS: &str = "/geoserver/wms?service=WMS&version=1.3.0&request=GetMap&layers=demo:roads\
    &styles=&crs=EPSG:4326&bbox=-90,-180,90,180&width=256&height=256&format=image/png";

/// A master (lag 0) and a replica (lag [`LAG`]) sharing a catalog with `topp:states`.
async fn cluster() -> (Fixture, Fixture) {
    let catalog = Catalog::with_layers(&["topp:states"]);
    let any = SocketAddr::from(([127, 0, 0, 1], 0));
    let master = SimNode::start_in("gs-master", any, catalog.clone(), Duration::ZERO).await;
    let replica = SimNode::start_in("gs-replica", any, catalog, LAG).await;
    let client = Client::builder(TokioExecutor::new()).build_http();
    let fixture = |node: io::Result<SimNode>| Fixture {
        node: node.expect("start sim node"),
        client: client.clone(),
    };
    (fixture(master), fixture(replica))
}

fn text(body: &Bytes) -> String {
    String::from_utf8_lossy(body).into_owned()
}

impl Fixture {
    async fn publish(&self, body: &'static str) -> Answer {
        let url = format!(
            "{}/geoserver/rest/workspaces/demo/datastores/demo/featuretypes",
            self.node.url()
        );
        let req = Request::post(url).header("content-type", "text/xml");
        self.send(req, Bytes::from_static(body.as_bytes())).await
    }
}

#[tokio::test]
async fn a_lagging_replica_answers_layer_not_defined_until_the_lag_has_passed() {
    let (master, replica) = cluster().await;
    let (parts, body) = master
        .publish("<featureType><name>roads</name><title>Roads</title></featureType>")
        .await;
    assert_eq!(parts.status, StatusCode::CREATED);
    assert_eq!(
        (header(&parts, "content-type"), &body[..]),
        (TEXT, &b"roads"[..])
    );
    let location = format!(
        "http://{}/geoserver/rest/workspaces/demo/datastores/demo/featuretypes/roads",
        master.node.addr()
    );
    assert_eq!(header(&parts, "location"), location);
    assert_eq!(
        master.node.catalog().published(),
        ["demo:roads", "topp:states"]
    );
    assert!(master.node.knows("demo:roads") && !replica.node.knows("demo:roads"));

    let (parts, body) = master.get(ROADS).await;
    assert_eq!(
        (header(&parts, "content-type"), &body[..]),
        ("image/png", PNG_1X1)
    );
    let (parts, body) = replica.get(ROADS).await;
    assert_eq!(
        parts.status,
        StatusCode::OK,
        "GeoServer answers exceptions with 200"
    );
    assert_eq!(header(&parts, "content-type"), "text/xml");
    let expected = "<?xml version=\"1.0\" encoding=\"UTF-8\"?><ServiceExceptionReport version=\"1.3.0\" \
        xmlns=\"http://www.opengis.net/ogc\" xmlns:xsi=\"http://www.w3.org/2001/XMLSchema-instance\" \
        xsi:schemaLocation=\"http://www.opengis.net/ogc http://schemas.opengis.net/wms/1.3.0/exceptions_1_3_0.xsd\">\
        <ServiceException code=\"LayerNotDefined\" locator=\"layers\">Could not find layer demo:roads\
        </ServiceException></ServiceExceptionReport>";
    assert_eq!(text(&body), expected);
    assert_eq!(
        (
            replica.node.exceptions_sent(),
            master.node.exceptions_sent()
        ),
        (1, 0)
    );
    // geolb's own reader takes it for "not known here".
    let read = crate::exception::sniff(crate::exception::Format::Xml, parts.status, &body, true);
    assert!(
        matches!(&read, crate::exception::Sniff::Exception(e) if e.kind == crate::exception::Kind::Unknown),
        "{read:?}"
    );

    tokio::time::sleep(LAG + Duration::from_millis(50)).await;
    assert!(replica.node.knows("demo:roads"));
    let (parts, body) = replica.get(ROADS).await;
    assert_eq!(
        (header(&parts, "content-type"), &body[..]),
        ("image/png", PNG_1X1)
    );
    let (_, body) = replica.get("/geoserver/wms?request=GetCapabilities").await;
    assert!(
        text(&body).contains("<Name>demo:roads</Name>"),
        "{}",
        text(&body)
    );

    // Removed on the master: gone there at once, on the replica after the lag.
    let (parts, _) = master
        .call(Method::DELETE, "/geoserver/rest/layers/demo:roads.xml")
        .await;
    assert_eq!(parts.status, StatusCode::OK);
    assert!(!master.node.knows("demo:roads") && replica.node.knows("demo:roads"));
}

#[tokio::test]
async fn wms_documents_follow_the_version_and_the_exceptions_format() {
    let (_master, replica) = cluster().await;
    let base = "/geoserver/wms?service=WMS&request=GetMap&LaYeRs=topp:states,demo:nowhere";
    let (parts, body) = replica.get(&format!("{base}&version=1.1.1")).await;
    assert_eq!(header(&parts, "content-type"), "application/vnd.ogc.se_xml");
    let body = text(&body);
    assert!(body.contains("<!DOCTYPE ServiceExceptionReport SYSTEM \"http://schemas.opengis.net/wms/1.1.1/WMS_exception_1_1_1.dtd\">"));
    assert!(body.contains("version=\"1.1.1\""));
    assert!(body.contains(
        "code=\"LayerNotDefined\" locator=\"layers\">Could not find layer demo:nowhere<"
    ));
    let (parts, body) = replica.get(base).await;
    assert_eq!(header(&parts, "content-type"), "text/xml");
    assert!(text(&body).contains("version=\"1.3.0\""));
    for format in ["INIMAGE", "blank", "application/vnd.ogc.se_inimage"] {
        let (parts, body) = replica.get(&format!("{base}&EXCEPTIONS={format}")).await;
        assert_eq!(
            (header(&parts, "content-type"), &body[..]),
            ("image/png", PNG_1X1)
        );
    }
    let info = "/geoserver/wms?request=GetFeatureInfo&QUERY_LAYERS=demo:nowhere&layers=topp:states";
    assert!(text(&replica.get(info).await.1).contains("LayerNotDefined"));
    let legend = "/geoserver/wms?request=GetLegendGraphic&layer=topp:states&format=image/png";
    assert_eq!(&replica.get(legend).await.1[..], PNG_1X1);
    let legend = "/geoserver/wms?request=GetLegendGraphic&layer=demo:nowhere";
    assert!(text(&replica.get(legend).await.1).contains("LayerNotDefined"));
    // Seven exceptions: the drawn ones count too.
    assert_eq!(replica.node.exceptions_sent(), 7);
    // Naming no layer: as ever.
    assert_eq!(
        &replica.get("/geoserver/wms?request=GetMap").await.1[..],
        PNG_1X1
    );
}

#[tokio::test]
async fn wfs_wmts_wcs_and_ogc_api_documents() {
    let (_master, replica) = cluster().await;
    let wfs = "/geoserver/wfs?service=WFS&request=GetFeature&typeNames=demo:nowhere";
    let (parts, body) = replica.get(wfs).await;
    assert_eq!(parts.status, StatusCode::BAD_REQUEST, "WFS 2.0 says 400");
    assert_eq!(header(&parts, "content-type"), "application/xml");
    let expected = "<?xml version=\"1.0\" encoding=\"UTF-8\"?><ows:ExceptionReport \
        xmlns:ows=\"http://www.opengis.net/ows/1.1\" version=\"2.0.0\"><ows:Exception \
        exceptionCode=\"InvalidParameterValue\" locator=\"typeName\"><ows:ExceptionText>Feature type \
        demo:nowhere unknown</ows:ExceptionText></ows:Exception></ows:ExceptionReport>";
    assert_eq!(text(&body), expected);
    let wfs11 = "/geoserver/wfs?request=GetFeature&version=1.1.0&typeName=demo:nowhere";
    let (parts, body) = replica.get(wfs11).await;
    assert_eq!(
        (parts.status, header(&parts, "content-type")),
        (StatusCode::OK, "text/xml")
    );
    assert!(text(&body).contains("xmlns:ows=\"http://www.opengis.net/ows\" version=\"1.0.0\""));
    let known = "/geoserver/wfs?request=GetFeature&typeNames=topp:states&outputFormat=json";
    let (parts, body) = replica.get(known).await;
    assert_eq!(header(&parts, "content-type"), "application/json");
    let json: serde_json::Value = serde_json::from_slice(&body).expect("json");
    assert_eq!(json["type"], "FeatureCollection");
    assert_eq!(json["features"][0]["properties"]["layer"], "topp:states");
    let dft = "/geoserver/wfs?request=DescribeFeatureType&typeName=topp:states";
    let (parts, body) = replica.get(dft).await;
    assert_eq!(header(&parts, "content-type"), "application/xml");
    assert!(text(&body).contains("xsd:schema"));

    let tile = "/geoserver/gwc/service/wmts?service=WMTS&request=GetTile&layer=demo:nowhere";
    let (parts, body) = replica.get(tile).await;
    assert_eq!(
        (parts.status, header(&parts, "content-type")),
        (StatusCode::BAD_REQUEST, "text/xml")
    );
    let body = text(&body);
    assert!(
        body.contains("exceptionCode=\"InvalidParameterValue\" locator=\"layer\""),
        "{body}"
    );
    assert!(body.contains("Unknown layer: demo:nowhere"));
    let tile = "/geoserver/gwc/service/wmts?request=GetTile&layer=topp:states&tilematrix=0";
    assert_eq!(&replica.get(tile).await.1[..], PNG_1X1);

    let wcs = "/geoserver/wcs?service=WCS&version=2.0.1&request=GetCoverage&coverageId=demo__dem";
    let (parts, body) = replica.get(wcs).await;
    assert_eq!(
        (parts.status, header(&parts, "content-type")),
        (StatusCode::OK, "application/xml")
    );
    assert!(text(&body).contains("exceptionCode=\"NoSuchCoverage\" locator=\"coverageId\""));
    let wcs = "/geoserver/wcs?request=GetCoverage&coverageId=topp__states";
    assert_eq!(
        header(&replica.get(wcs).await.0, "content-type"),
        "image/tiff"
    );

    let api = "/geoserver/ogc/features/v1/collections/demo%3Anowhere/items?f=json";
    let (parts, body) = replica.get(api).await;
    assert_eq!(parts.status, StatusCode::NOT_FOUND);
    assert_eq!(header(&parts, "content-type"), "application/json");
    let json: serde_json::Value = serde_json::from_slice(&body).expect("json");
    assert_eq!(
        json,
        serde_json::json!({"code": "NotFound", "description": "Collection not found: demo:nowhere"})
    );
    let api = "/geoserver/ogc/features/v1/collections/topp:states/items";
    let (parts, body) = replica.get(api).await;
    assert_eq!(header(&parts, "content-type"), "application/geo+json");
    assert_eq!(
        text(&body),
        "{\"type\":\"FeatureCollection\",\"features\":[]}"
    );
    assert_eq!(replica.node.exceptions_sent(), 5);
}

#[tokio::test]
async fn a_deaf_replica_never_learns_and_control_paths_drive_the_cluster() {
    let (master, replica) = cluster().await;
    replica.get("/__sim/deaf").await;
    assert!(replica.node.is_deaf());
    let (parts, body) = master
        .get("/geoserver/__sim/publish?layer=demo:rivers")
        .await;
    assert_eq!(
        (parts.status, text(&body).as_str()),
        (StatusCode::OK, "published demo:rivers\n")
    );
    tokio::time::sleep(LAG + Duration::from_millis(50)).await;
    assert!(master.node.knows("demo:rivers"));
    assert!(!replica.node.knows("demo:rivers"));
    replica.get("/__sim/hear").await;
    tokio::time::sleep(LAG + Duration::from_millis(50)).await;
    assert!(
        !replica.node.knows("demo:rivers"),
        "lost while deaf, for good"
    );
    assert!(text(
        &replica
            .get("/geoserver/wms?request=GetMap&layers=rivers")
            .await
            .1
    )
    .contains("LayerNotDefined"));
    let (_, body) = replica.get("/__sim/lag?ms=0").await;
    assert_eq!(text(&body), "lag: 0 ms\n");
    assert_eq!(replica.node.lag(), Duration::ZERO);
    master.get("/__sim/publish?layer=demo:lakes").await;
    assert!(
        replica.node.knows("demo:lakes"),
        "hears again, with no lag now"
    );
    assert_eq!(
        master.node.hits() + replica.node.hits(),
        1,
        "control paths are not hits"
    );
}

#[tokio::test]
async fn publishing_takes_json_refuses_big_bodies_and_leaves_other_writes_alone() {
    let (master, replica) = cluster().await;
    let url = format!(
        "{}/geoserver/rest/workspaces/demo/coveragestores/dem/coverages.json",
        replica.node.url()
    );
    let body = Bytes::from_static(br#"{"coverage":{"name":"dem","nativeName":"dem"}}"#);
    let (parts, body) = replica.send(Request::post(url.clone()), body).await;
    assert_eq!(
        (parts.status, &body[..]),
        (StatusCode::CREATED, &b"dem"[..])
    );
    assert!(
        master.node.knows("demo:dem"),
        "any node publishes into the shared catalog"
    );
    assert!(
        replica.node.knows("demo:dem"),
        "the node that published knows at once"
    );
    let big = Bytes::from(vec![b' '; PUBLISH_LIMIT + 1]);
    let (parts, _) = replica.send(Request::post(url), big).await;
    assert_eq!(parts.status, StatusCode::PAYLOAD_TOO_LARGE);
    let (parts, _) = master
        .publish("<featureType><title>no name</title></featureType>")
        .await;
    assert_eq!(parts.status, StatusCode::BAD_REQUEST);
    let req = Request::post(format!("{}/geoserver/rest/workspaces", master.node.url()));
    let (parts, _) = master
        .send(
            req,
            Bytes::from_static(b"<workspace><name>w</name></workspace>"),
        )
        .await;
    assert_eq!(parts.status, StatusCode::OK);
    assert_eq!(header(&parts, "x-body-length"), "37");
}

#[tokio::test]
async fn a_reload_needs_credentials_and_keeps_the_node_busy_until_it_answers() {
    let (master, _replica) = cluster().await;
    master.node.set_reload_time(Duration::from_millis(300));
    let reload = format!("{}/geoserver/rest/reload", master.node.url());
    let (parts, _) = master
        .send(Request::post(reload.clone()), Bytes::new())
        .await;
    assert_eq!(parts.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        header(&parts, "www-authenticate"),
        "Basic realm=\"GeoServer Realm\""
    );
    let wrong = Request::post(reload.clone()).header("authorization", "Basic YWRtaW46bm9wZQ==");
    assert_eq!(
        master.send(wrong, Bytes::new()).await.0.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        (master.node.reloads(), master.node.reload_rejections()),
        (0, 2)
    );
    assert_eq!(
        master.node.last_reload_auth().as_deref(),
        Some("Basic YWRtaW46bm9wZQ==")
    );

    master.node.set_credentials("root", "s3cret");
    let basic = "Basic cm9vdDpzM2NyZXQ="; // root:s3cret
    let started = Instant::now();
    let right = Request::put(reload).header("authorization", basic);
    let client = master.client.clone();
    let req = right.body(Full::new(Bytes::new())).expect("request");
    let pending = tokio::spawn(client.request(req));
    while master.node.reloads() == 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let probe = Request::get(format!(
        "{}/geoserver/wms?request=GetCapabilities",
        master.node.url()
    ));
    let (parts, body) = master
        .send(probe.header("user-agent", "geolb-health/0"), Bytes::new())
        .await;
    assert_eq!(
        (parts.status, &body[..]),
        (StatusCode::SERVICE_UNAVAILABLE, &b"Server Busy\n"[..])
    );
    let resp = pending.await.expect("task").expect("reload answered");
    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "answered once done"
    );
    assert_eq!(resp.status(), StatusCode::OK);
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    assert_eq!(&body[..], b"reloaded\n");
    assert_eq!(master.node.last_reload_auth().as_deref(), Some(basic));
    assert_eq!(
        master.get(ROADS).await.0.status,
        StatusCode::OK,
        "no longer busy"
    );
}

#[tokio::test]
async fn a_sick_node_runs_out_of_memory_on_everything_but_its_probes_are_not_counted() {
    let t = setup().await;
    t.node.set_mode(Mode::Exception);
    let (parts, body) = t.get(ROADS).await;
    assert_eq!(
        (parts.status, header(&parts, "content-type")),
        (StatusCode::OK, "text/xml")
    );
    let body = text(&body);
    assert!(
        body.contains("code=\"NoApplicableCode\">java.lang.OutOfMemoryError: Java heap space<"),
        "{body}"
    );
    let probe = Request::get(format!(
        "{}/geoserver/wms?request=GetCapabilities",
        t.node.url()
    ));
    let (_, body) = t
        .send(probe.header("user-agent", "geolb-health/0"), Bytes::new())
        .await;
    assert!(
        text(&body).contains("NoApplicableCode"),
        "probes see the sickness"
    );
    assert_eq!((t.node.exceptions_sent(), t.node.probes()), (1, 1));
    // A node of its own knows every layer.
    t.node.set_mode(Mode::Healthy);
    assert_eq!(&t.get(ROADS).await.1[..], PNG_1X1);
    assert_eq!(t.node.exceptions_sent(), 1);
}

// ---- frozen and slow nodes ----

type Sender = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

/// An HTTP/1.1 connection of the test's own to `addr`: requests on it go where the test says
/// (a pooled client would open another connection behind a request a freeze holds).
async fn connection(addr: SocketAddr) -> Sender {
    let connect = tokio::net::TcpStream::connect(addr);
    let stream = tokio::time::timeout(Duration::from_secs(10), connect)
        .await
        .expect("the kernel accepts, frozen or not")
        .expect("connect");
    let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("handshake");
    tokio::spawn(conn);
    send
}

/// A GET of `path` on `conn`, with headers from `with`, collected.
async fn get_on(
    conn: &mut Sender,
    path: &str,
    with: impl FnOnce(http::request::Builder) -> http::request::Builder,
) -> Answer {
    let req = with(Request::get(path).header(header::HOST, "sim"));
    let resp = conn
        .send_request(req.body(Full::default()).expect("request"))
        .await
        .expect("response");
    let (parts, body) = resp.into_parts();
    (parts, body.collect().await.expect("body").to_bytes())
}

const FOREVER: Duration = Duration::from_secs(3600);
/// Long enough for a misbehaving node to answer: only ever waited for what must NOT happen.
const GRACE: Duration = Duration::from_millis(300);
/// How long what must happen may take, at worst.
const DEADLINE: Duration = Duration::from_secs(30);

/// Spawns a GET of `path` on `conn` that reports whether `thawed` was already set when the
/// answer's head arrived.
fn spawn_get(
    mut conn: Sender,
    path: &'static str,
    thawed: &Arc<std::sync::atomic::AtomicBool>,
) -> JoinHandle<(StatusCode, bool, Bytes)> {
    let thawed = thawed.clone();
    tokio::spawn(async move {
        let req = Request::get(path).header(header::HOST, "sim");
        let resp = conn.send_request(req.body(Full::default()).expect("request"));
        let resp = resp.await.expect("answered, not failed");
        let after_thaw = thawed.load(Ordering::SeqCst);
        let status = resp.status();
        let body = resp.into_body().collect().await.expect("body").to_bytes();
        (status, after_thaw, body)
    })
}

/// Thaws `node` after setting `thawed` (so answers can tell they came after).
fn thaw(node: &SimNode, thawed: &std::sync::atomic::AtomicBool) {
    thawed.store(true, Ordering::SeqCst);
    node.thaw();
}

#[tokio::test]
async fn a_request_sent_while_frozen_is_answered_only_after_the_thaw() {
    let t = setup().await;
    let mut conn = connection(t.node.addr()).await;
    // Answered once: the node has taken this connection before it freezes.
    assert_eq!(
        get_on(&mut conn, "/wms", |r| r).await.0.status,
        StatusCode::OK
    );
    t.node.freeze(FOREVER);
    assert!(t.node.is_frozen());
    assert_eq!(t.node.freezes(), 1);
    let thawed = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let pending = spawn_get(conn, "/wms", &thawed);
    tokio::time::sleep(GRACE).await;
    assert!(!pending.is_finished(), "no head while frozen");
    assert_eq!(t.node.hits(), 1, "a stopped JVM has not seen the request");
    thaw(&t.node, &thawed);
    assert!(!t.node.is_frozen());
    let answer = tokio::time::timeout(DEADLINE, pending).await;
    let (status, after_thaw, body) = answer.expect("answered after the thaw").expect("task");
    assert_eq!((status, &body[..]), (StatusCode::OK, &b"node-a\n"[..]));
    assert!(after_thaw, "the head came after the thaw");
    assert_eq!((t.node.hits(), t.node.freezes()), (2, 1));
}

/// How many connections wait in the kernel's accept queue of the IPv4 listener on `addr`:
/// Linux shows it as the `rx_queue` of a listening socket in /proc/net/tcp.
#[cfg(target_os = "linux")]
fn backlog(addr: SocketAddr) -> usize {
    let std::net::IpAddr::V4(ip) = addr.ip() else {
        panic!("an IPv4 listener");
    };
    // The address as the kernel prints it: its network-order bytes read as a native u32.
    let local = format!(
        "{:08X}:{:04X}",
        u32::from_ne_bytes(ip.octets()),
        addr.port()
    );
    let table = std::fs::read_to_string("/proc/net/tcp").expect("/proc/net/tcp");
    let line = table
        .lines()
        .map(|line| line.split_whitespace().collect::<Vec<_>>())
        .find(|fields| fields.get(1) == Some(&local.as_str()) && fields.get(3) == Some(&"0A"))
        .expect("the listener is listed");
    let queues = line.get(4).and_then(|q| q.split_once(':')).expect("queues");
    usize::from_str_radix(queues.1, 16).expect("rx_queue")
}

/// Waits (up to [`DEADLINE`]) for the accept queue on `addr` to hold `n` connections.
#[cfg(target_os = "linux")]
async fn backlog_reaches(addr: SocketAddr, n: usize) {
    let deadline = Instant::now() + DEADLINE;
    while backlog(addr) != n {
        assert!(
            Instant::now() < deadline,
            "backlog {} never {n}",
            backlog(addr)
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn a_connection_opened_while_frozen_waits_in_the_backlog_and_is_served_after_the_thaw() {
    let t = setup().await;
    t.node.freeze(FOREVER);
    // connect() succeeding is the kernel's doing: the node accepts nothing while frozen.
    let conn = connection(t.node.addr()).await;
    let thawed = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let pending = spawn_get(conn, "/geoserver/wms?request=GetMap", &thawed);
    #[cfg(target_os = "linux")]
    backlog_reaches(t.node.addr(), 1).await;
    tokio::time::sleep(GRACE).await;
    assert!(!pending.is_finished(), "no answer while frozen");
    assert_eq!(t.node.hits(), 0);
    #[cfg(target_os = "linux")]
    assert_eq!(
        backlog(t.node.addr()),
        1,
        "still not taken from the backlog"
    );
    thaw(&t.node, &thawed);
    let answer = tokio::time::timeout(DEADLINE, pending).await;
    let (status, after_thaw, body) = answer.expect("answered after the thaw").expect("task");
    assert_eq!((status, &body[..]), (StatusCode::OK, PNG_1X1));
    assert!(after_thaw);
    #[cfg(target_os = "linux")]
    assert_eq!(backlog(t.node.addr()), 0, "taken at the thaw");
    // The listener was never closed: new connections are served as ever.
    assert_eq!(header(&t.get("/wms").await.0, "x-node"), "node-a");
}

#[tokio::test]
async fn a_streaming_response_stops_mid_body_while_frozen_and_completes_intact_after() {
    // Far more than the socket buffers between node and client can hold.
    const BYTES: u64 = 32 * 1024 * 1024;
    let t = setup().await;
    let mut conn = connection(t.node.addr()).await;
    let path = format!("/geoserver/__sim/blob?bytes={BYTES}&seed=11");
    let req = Request::get(path).header(header::HOST, "sim");
    let resp = conn.send_request(req.body(Full::default()).expect("request"));
    let mut body = resp.await.expect("response").into_body();
    let mut hasher = Sha256::new();
    let mut received = 0u64;
    let mut take = |frame: Frame<Bytes>| {
        let data = frame.into_data().unwrap_or_default();
        hasher.update(&data);
        received += data.len() as u64;
        received
    };
    let mut seen = take(body.frame().await.expect("a first frame").expect("frame"));
    t.node.freeze(FOREVER);
    // Drain what was already on its way; then nothing more comes while frozen.
    loop {
        match tokio::time::timeout(GRACE, body.frame()).await {
            Ok(Some(frame)) => seen = take(frame.expect("frame")),
            Ok(None) => panic!("the body ended while frozen"),
            Err(_) => break,
        }
    }
    let stopped_at = seen;
    assert!(stopped_at < BYTES, "stopped mid-body at {stopped_at}");
    t.node.thaw();
    let rest = async {
        while let Some(frame) = body.frame().await {
            seen = take(frame.expect("no error after the thaw"));
        }
    };
    tokio::time::timeout(DEADLINE, rest)
        .await
        .expect("the rest after the thaw");
    assert_eq!(seen, BYTES, "went on after the thaw, to the end");
    assert_eq!(hex(&hasher.finalize()), blob_sha256(BYTES, 11));
}

#[tokio::test(start_paused = true)]
async fn the_freeze_control_path_answers_then_freezes_and_thaws_by_itself() {
    let t = setup().await;
    let mut conn = connection(t.node.addr()).await;
    let (parts, body) = get_on(&mut conn, "/geoserver/__sim/freeze", |r| r).await;
    assert_eq!(
        (parts.status, text(&body).as_str()),
        (StatusCode::BAD_REQUEST, "bad ms\n"),
        "ms is required"
    );
    assert!(!t.node.is_frozen());
    let started = tokio::time::Instant::now();
    let (parts, body) = get_on(&mut conn, "/__sim/freeze?ms=60000", |r| r).await;
    assert_eq!(
        (parts.status, text(&body).as_str()),
        (StatusCode::OK, "frozen: 60000 ms\n")
    );
    assert_eq!(header(&parts, "x-node"), "node-a");
    assert!(t.node.is_frozen(), "frozen once answered");
    assert_eq!(t.node.freezes(), 1);
    // Held until the freeze ends by itself (paused time jumps to it), then answered.
    let (parts, body) = get_on(&mut conn, "/wms", |r| r).await;
    assert_eq!(
        (parts.status, &body[..]),
        (StatusCode::OK, &b"node-a\n"[..])
    );
    assert!(started.elapsed() >= Duration::from_secs(60));
    assert!(!t.node.is_frozen());
    assert_eq!(t.node.hits(), 1, "control paths are not hits");

    // Recovering thaws at once: the side door is open on a connection already taken.
    t.node.freeze(FOREVER);
    t.node.set_delay(FOREVER);
    let started = tokio::time::Instant::now();
    let (parts, body) = get_on(&mut conn, "/__sim/recover", |r| r).await;
    assert_eq!(
        (parts.status, text(&body).as_str()),
        (StatusCode::OK, "mode: healthy\n")
    );
    assert!(!t.node.is_frozen());
    assert_eq!(t.node.delay(), Duration::ZERO);
    assert_eq!(
        get_on(&mut conn, "/wms", |r| r).await.0.status,
        StatusCode::OK
    );
    assert!(started.elapsed() < FOREVER);
    assert_eq!(t.node.freezes(), 2);
    t.node.reset_counters();
    assert_eq!(t.node.freezes(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_slow_node_delays_reads_but_neither_probes_nor_control_paths() {
    let t = setup().await;
    let mut conn = connection(t.node.addr()).await;
    let (_, body) = get_on(&mut conn, "/__sim/delay?ms=3600000", |r| r).await;
    assert_eq!(text(&body), "delay: 3600000 ms\n");
    assert_eq!(t.node.delay(), FOREVER);
    let probe = |r: http::request::Builder| r.header(header::USER_AGENT, "geolb-health/0.1");
    let started = tokio::time::Instant::now();
    let (parts, _) = get_on(&mut conn, "/geoserver/wms?request=GetCapabilities", probe).await;
    assert_eq!(parts.status, StatusCode::OK);
    get_on(&mut conn, "/__sim/lag?ms=0", |r| r).await;
    assert!(
        started.elapsed() < FOREVER,
        "probes and control paths are not delayed"
    );
    let (parts, body) = get_on(&mut conn, ROADS, |r| r).await;
    assert_eq!((parts.status, &body[..]), (StatusCode::OK, PNG_1X1));
    assert!(
        started.elapsed() >= FOREVER,
        "the read waited for the delay"
    );
    assert_eq!((t.node.hits(), t.node.probes()), (1, 1));
    let (_, body) = get_on(&mut conn, "/__sim/delay", |r| r).await;
    assert_eq!(text(&body), "delay: 0 ms\n");
    let started = tokio::time::Instant::now();
    get_on(&mut conn, ROADS, |r| r).await;
    assert!(started.elapsed() < FOREVER, "no delay any more");
}

#[tokio::test]
async fn a_frozen_node_can_still_be_killed() {
    let t = setup().await;
    let mut conn = connection(t.node.addr()).await;
    t.node.freeze(FOREVER);
    let req = Request::get("/wms").header(header::HOST, "sim");
    let pending = tokio::spawn(conn.send_request(req.body(Full::default()).expect("request")));
    tokio::time::sleep(GRACE).await;
    tokio::time::timeout(DEADLINE, t.node.kill())
        .await
        .expect("killed while frozen");
    let outcome = tokio::time::timeout(DEADLINE, pending).await;
    assert!(
        matches!(outcome, Ok(Ok(Err(_)))),
        "the held request fails with the node"
    );
    assert!(t.node.is_frozen(), "killed, not thawed");
}
