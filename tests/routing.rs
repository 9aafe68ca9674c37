//! Routing through a real geolb: reads spread over every node, the notes' MASTER rows reach the
//! master only, forwarded headers, h2c.

mod support;

use std::collections::HashMap;

use bytes::Bytes;
use http::{Method, Request, StatusCode, Version};
use http_body_util::{BodyExt, Full};
use sha2::{Digest, Sha256};
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn getmap_spreads_over_every_healthy_node() {
    let h = Harness::start(THREE).await;
    let url = h.url("/geoserver/wms?service=WMS&version=1.3.0&request=GetMap&layers=topp:states&crs=EPSG:4326&bbox=-90,-180,90,180&width=256&height=256&format=image/png");
    // 10 concurrent clients, 30 requests each.
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..10 {
        let (client, url) = (h.client.clone(), url.clone());
        tasks.spawn(async move {
            let mut names = Vec::new();
            for _ in 0..30 {
                let req = Request::get(&url)
                    .body(Full::new(Bytes::new()).boxed())
                    .unwrap();
                let r = send(&client, req).await;
                assert_eq!(r.status, StatusCode::OK);
                assert_eq!(r.header("content-type"), "image/png");
                names.push(r.node().to_string());
            }
            names
        });
    }
    let mut counts: HashMap<String, usize> = HashMap::new();
    while let Some(names) = tasks.join_next().await {
        for n in names.unwrap() {
            *counts.entry(n).or_default() += 1;
        }
    }
    assert_eq!(counts.values().sum::<usize>(), 300);
    for name in ["gs-master", "gs-replica-1", "gs-replica-2"] {
        let share = counts.get(name).copied().unwrap_or(0);
        assert!(
            share >= 60,
            "{name} served {share} of 300 (< 20 %): {counts:?}"
        );
    }
}

const XML: &str = "text/xml";
const FORM: &str = "application/x-www-form-urlencoded";

/// Every MASTER row of the notes' table, with case variants: (method, target, content type, body).
const MASTER_ROWS: &[(&str, &str, &str, &str)] = &[
    ("GET", "/geoserver/web/", "", ""),
    ("GET", "/geoserver/web/wicket/bookmarkable/org.geoserver.web.demo.MapPreviewPage?1", "", ""),
    ("POST", "/geoserver/web/wicket/page?2-1.IFormSubmitListener-form", FORM, "name=x"),
    ("GET", "/geoserver/", "", ""),
    ("GET", "/geoserver/index.html", "", ""),
    ("POST", "/geoserver/j_spring_security_check", FORM, "username=admin&password=geoserver"),
    ("GET", "/geoserver/j_spring_security_logout", "", ""),
    ("GET", "/geoserver/rest/workspaces.json", "", ""),
    ("HEAD", "/geoserver/rest/workspaces.json", "", ""),
    ("POST", "/geoserver/rest/workspaces", XML, "<workspace><name>w</name></workspace>"),
    ("PUT", "/geoserver/rest/workspaces/w", XML, "<workspace><name>w2</name></workspace>"),
    ("PATCH", "/geoserver/rest/settings", "application/json", "{}"),
    ("DELETE", "/geoserver/rest/workspaces/w2?recurse=true", "", ""),
    ("GET", "/geoserver/gwc/rest/seed/topp:states.json", "", ""),
    ("POST", "/geoserver/gwc/rest/seed/topp:states.xml", XML, "<seedRequest><name>topp:states</name></seedRequest>"),
    ("GET", "/geoserver/gwc", "", ""),
    ("GET", "/geoserver/gwc/demo/topp:states?gridSet=EPSG:4326", "", ""),
    ("POST", "/geoserver/wfs", XML, "<?xml version=\"1.0\"?><wfs:Transaction service=\"WFS\" version=\"1.1.0\" xmlns:wfs=\"http://www.opengis.net/wfs\"><wfs:Delete typeName=\"topp:states\"/></wfs:Transaction>"),
    ("POST", "/geoserver/ows", XML, "<TRANSACTION/>"),
    ("GET", "/geoserver/wfs?service=WFS&version=1.1.0&request=Transaction&typeName=topp:states&featureId=states.1", "", ""),
    ("GET", "/geoserver/wfs?SERVICE=wfs&REQUEST=transaction", "", ""),
    ("GET", "/geoserver/topp/wfs?ReQuEsT=TrAnSaCtIoN", "", ""),
    ("GET", "/geoserver/wfs/Transaction", "", ""),
    ("POST", "/geoserver/wfs", FORM, "service=WFS&REQUEST=TRANSACTION"),
    ("GET", "/geoserver/wfs?request=LockFeature&typeName=topp:states", "", ""),
    ("POST", "/geoserver/wfs", XML, "<wfs:LockFeature xmlns:wfs=\"http://www.opengis.net/wfs\"><wfs:Lock typeName=\"topp:states\"/></wfs:LockFeature>"),
    ("GET", "/geoserver/wfs?request=getfeaturewithlock&typeName=topp:states", "", ""),
    ("GET", "/geoserver/wfs?request=ReleaseLock&lockId=L1", "", ""),
    ("GET", "/geoserver/wfs?request=GetFeature&typeName=topp:states&LOCKID=L1", "", ""),
    ("GET", "/geoserver/wfs?request=CreateStoredQuery", "", ""),
    ("POST", "/geoserver/wfs", XML, "<DropStoredQuery id=\"q\"/>"),
    ("GET", "/geoserver/wps?service=WPS&request=Execute&identifier=JTS:buffer", "", ""),
    ("POST", "/geoserver/wps", XML, "<wps:Execute xmlns:wps=\"http://www.opengis.net/wps/1.0.0\"><ows:Identifier>JTS:buffer</ows:Identifier></wps:Execute>"),
    ("POST", "/geoserver/wps", "application/soap+xml", "<soap:Envelope><soap:Body><wps:Execute/></soap:Body></soap:Envelope>"),
    ("GET", "/geoserver/ows?service=WPS&request=GetExecutionStatus&executionId=1", "", ""),
    ("GET", "/geoserver/ows?service=wps&request=getexecutionresult&executionId=1", "", ""),
    ("GET", "/geoserver/ows?service=WPS&request=Dismiss&executionId=1", "", ""),
    ("GET", "/geoserver/ows?service=WPS&request=GetExecutions", "", ""),
    ("POST", "/geoserver/ogc/styles/v1/styles", "application/vnd.ogc.sld+xml", "<StyledLayerDescriptor/>"),
    ("PUT", "/geoserver/ogc/styles/v1/styles/s1", "application/vnd.ogc.sld+xml", "<StyledLayerDescriptor/>"),
    ("PATCH", "/geoserver/topp/ogc/styles/v1/styles/s1/metadata", "application/json", "{}"),
    ("DELETE", "/geoserver/ogc/styles/v1/styles/s1", "", ""),
    ("GET", "/geoserver/TestWfsPost", "", ""),
    ("POST", "/geoserver/TestWfsPost", FORM, "url=http://x/wfs&body=<Transaction/>"),
    ("GET", "/geoserver/wms?request=GetMap&request=Transaction", "", ""),
    ("GET", "/geoserver/wms?request=GetMap&REQUEST=GetFeatureInfo", "", ""),
    ("POST", "/geoserver/wfs", XML, "not xml at all"),
    ("POST", "/geoserver/wps", XML, "<MakeCoffee/>"),
    ("POST", "/geoserver/wfs", "multipart/form-data; boundary=b", "--b\r\nContent-Disposition: form-data; name=\"f\"\r\n\r\nx\r\n--b--\r\n"),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn master_rows_reach_the_master_only() {
    let h = Harness::start(THREE).await;
    for n in &h.nodes {
        n.reset_counters();
    }
    for &(method, target, ct, body) in MASTER_ROWS {
        let method = Method::from_bytes(method.as_bytes()).unwrap();
        let headers: Vec<(&str, &str)> = if ct.is_empty() {
            vec![]
        } else {
            vec![("content-type", ct)]
        };
        let r = h.send(method.clone(), target, &headers, body).await;
        assert_eq!(r.status, StatusCode::OK, "{method} {target}: {}", r.text());
        assert_eq!(
            r.node(),
            "gs-master",
            "{method} {target} went to {}",
            r.node()
        );
        if matches!(method, Method::POST | Method::PUT | Method::PATCH) {
            // The body (and so any look-ahead) reached the node unchanged.
            let want = hex(&Sha256::digest(body.as_bytes()));
            assert_eq!(
                r.header("x-body-sha256"),
                want,
                "{method} {target}: body altered"
            );
        }
    }
    let master = h.sim("gs-master");
    assert_eq!(master.hits() as usize, MASTER_ROWS.len());
    for replica in ["gs-replica-1", "gs-replica-2"] {
        assert_eq!(
            h.sim(replica).hits(),
            0,
            "{replica} saw traffic it must not"
        );
        assert_eq!(h.sim(replica).writes(), 0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_never_reaches_a_node_that_is_not_a_candidate() {
    // The only candidate serves no reads; the replicas must never see a write, even via a user rule.
    let defs = MASTER_WRITES_ONLY;
    let opts = Options {
        extra: "[[routes]]\nprefix = \"/geoserver/wfs\"\npool = \"reads\"\n",
        ..Options::default()
    };
    let h = Harness::start_with(defs, opts).await;
    for _ in 0..20 {
        assert_eq!(h.write().await.node(), "gs-master");
        let read = h
            .send(
                Method::POST,
                "/geoserver/wfs",
                &[("content-type", XML)],
                "<wfs:GetFeature xmlns:wfs=\"http://www.opengis.net/wfs\"/>",
            )
            .await;
        assert_ne!(
            read.node(),
            "gs-master",
            "the user rule sends WFS reads to the readers"
        );
        assert_ne!(
            h.get("/geoserver/wms?request=GetMap").await.node(),
            "gs-master",
            "reads = false"
        );
    }
    assert_eq!(
        h.sim("gs-replica-1").writes() + h.sim("gs-replica-2").writes(),
        20,
        "only the POST reads"
    );
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_headers_replace_spoofs_and_keep_host() {
    let h = Harness::start(THREE).await;
    let r = h
        .send(
            Method::GET,
            "/geoserver/wms?request=GetCapabilities",
            &[
                ("host", "maps.example.org:8000"),
                ("x-forwarded-host", "evil.example"),
                ("x-forwarded-proto", "https"),
                ("x-forwarded-for", "203.0.113.9"),
            ],
            Bytes::new(),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        r.header("x-seen-host"),
        "maps.example.org:8000",
        "Host is kept"
    );
    assert_eq!(
        r.header("x-seen-forwarded-host"),
        "maps.example.org:8000",
        "X-Forwarded-Host replaced"
    );
    assert_eq!(
        r.header("x-seen-forwarded-proto"),
        "http",
        "X-Forwarded-Proto replaced"
    );
    assert_eq!(
        r.header("x-seen-forwarded-for"),
        "203.0.113.9, 127.0.0.1",
        "X-Forwarded-For appended"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn location_pointing_at_a_node_is_rewritten() {
    let h = Harness::start(THREE).await;
    let r = h
        .send(
            Method::GET,
            "/geoserver/__sim/redirect",
            &[("host", "maps.example.org")],
            Bytes::new(),
        )
        .await;
    assert_eq!(r.status, StatusCode::FOUND);
    assert_eq!(
        r.header("location"),
        "http://maps.example.org/geoserver/web/"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_clients_are_served_over_http1_pools() {
    let h = Harness::start(THREE).await;
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .http2_only(true)
        .build_http::<TestBody>();
    let req = Request::get(h.url("/geoserver/wms?request=GetMap"))
        .body(Full::new(Bytes::new()).boxed())
        .unwrap();
    let r = send(&client, req).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(!r.node().is_empty());
    assert_eq!(
        r.header("x-seen-version"),
        "HTTP/1.1",
        "nodes are spoken to over HTTP/1.1"
    );
    assert_eq!(
        r.header("x-seen-host"),
        h.proxy().to_string(),
        ":authority becomes Host"
    );
    let req = Request::post(h.url("/geoserver/wfs"))
        .version(Version::HTTP_2)
        .header("content-type", "text/xml")
        .body(Full::new(Bytes::from_static(b"<wfs:Transaction/>")).boxed())
        .unwrap();
    assert_eq!(send(&client, req).await.node(), "gs-master");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_reports_nodes_and_master() {
    let h = Harness::start(THREE).await;
    let req = Request::get(format!("http://{}/status", h.geolb.admin))
        .body(Full::new(Bytes::new()).boxed())
        .unwrap();
    let r = send(&h.client, req).await;
    assert_eq!(r.status, StatusCode::OK);
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(v["master"], "gs-master");
    let nodes = v["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 3);
    for n in nodes {
        assert_eq!(n["state"], "up");
        assert_eq!(n["in_flight"], 0);
        assert_eq!(n["last_check"]["ok"], true);
        assert!(n["url"].as_str().unwrap().starts_with("http://127.0.0.1:"));
    }
    assert_eq!(nodes[0]["master"], true);
    assert_eq!(nodes[1]["master"], false);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_robin_keeps_its_turn_across_snapshots() {
    let opts = Options {
        routing: "balance = \"round-robin\"",
        ..Options::default()
    };
    let h = Harness::start_with(THREE, opts).await;
    let text = config_text(
        THREE,
        &h.nodes,
        &Options {
            routing: "balance = \"round-robin\"",
            ..Options::default()
        },
    );
    let mut counts: HashMap<String, usize> = HashMap::new();
    for _ in 0..12 {
        let r = h.get("/geoserver/wms?request=GetMap").await;
        *counts.entry(r.node().to_string()).or_default() += 1;
        // A reload publishes a new snapshot between two requests.
        let config = geolb::config::Config::parse(&text).unwrap();
        h.geolb
            .reload(geolb::control::Source::Given(Box::new(config)))
            .await
            .unwrap();
    }
    assert!(
        counts.len() == 3 && counts.values().all(|&c| c == 4),
        "the turn goes on: {counts:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_robin_takes_each_reader_in_turn() {
    let opts = Options {
        routing: "balance = \"round-robin\"",
        ..Options::default()
    };
    let h = Harness::start_with(THREE, opts).await;
    let mut counts: HashMap<String, usize> = HashMap::new();
    for _ in 0..30 {
        *counts
            .entry(
                h.get("/geoserver/wms?request=GetMap")
                    .await
                    .node()
                    .to_string(),
            )
            .or_default() += 1;
    }
    assert_eq!(counts.len(), 3, "{counts:?}");
    assert!(
        counts.values().all(|&c| c == 10),
        "exactly one in three each: {counts:?}"
    );
}
