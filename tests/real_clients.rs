//! Reads stay reads: playing safe must not turn ordinary reads into master traffic. A corpus of real
//! client requests (`tests/corpus/real_clients.txt`: GDAL, OWSLib, OpenLayers, Leaflet, QGIS,
//! GeoServer's layer preview and GeoWebCache, each record naming the client source it comes from)
//! is sent byte for byte through a real geolb, whose master serves no reads: each must reach a
//! replica, and `geolb_reads_to_master_total` stays at what the corpus's known exceptions explain.

mod support;

use std::time::Duration;

use bytes::Bytes;
use geolb::classify::Classifier;
use geolb::classify::Pool;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const CORPUS: &str = include_str!("corpus/real_clients.txt");

/// One recorded request.
struct Record {
    title: String,
    method: String,
    target: String,
    headers: Vec<(String, String)>,
    body: String,
}

fn corpus() -> Vec<Record> {
    CORPUS
        .split("\n### ")
        .map(|r| r.trim_start_matches("### "))
        .filter(|r| !r.trim().is_empty())
        .map(|record| {
            let mut lines = record.lines();
            let title = lines.next().unwrap_or("").to_string();
            let request_line = lines.next().expect("a request line");
            let (method, target) = request_line.split_once(' ').expect("METHOD target");
            let mut headers = Vec::new();
            for line in lines.by_ref() {
                if line.is_empty() {
                    break;
                }
                let (k, v) = line.split_once(':').expect("Header: value");
                headers.push((k.trim().to_string(), v.trim().to_string()));
            }
            let body = lines.collect::<Vec<_>>().join("\n").trim_end().to_string();
            Record {
                title,
                method: method.to_string(),
                target: target.to_string(),
                headers,
                body,
            }
        })
        .collect()
}

/// Records that go to the master, and why (the notes' policy, or GeoServer itself cannot read them).
fn expected_on_the_master(r: &Record) -> Option<&'static str> {
    if r.target.starts_with("/geoserver/gwc/demo") {
        return Some("notes §1: GeoWebCache's demo pages go to the master");
    }
    if r.method == "POST" && r.headers.is_empty() && !r.body.starts_with('<') {
        // OWSLib posts KVP without a Content-Type: GeoServer reads the body as XML and refuses it.
        return Some("a body GeoServer reads as XML, which is not XML");
    }
    None
}

#[test]
fn the_classifier_reads_every_real_read_as_a_read() {
    let c = Classifier::new("/geoserver", Vec::new(), 64 * 1024);
    let records = corpus();
    assert!(records.len() >= 100, "{} records", records.len());
    for r in &records {
        let mut headers = HeaderMap::new();
        for (k, v) in &r.headers {
            headers.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        let (path, query) = match r.target.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (r.target.as_str(), None),
        };
        let method = Method::from_bytes(r.method.as_bytes()).unwrap();
        let route = c.classify(&method, path, query, &headers, r.body.as_bytes());
        let want = if expected_on_the_master(r).is_some() {
            Pool::Master
        } else {
            Pool::Reads
        };
        assert_eq!(
            route.map(|r| r.pool),
            Ok(want),
            "{}\n{} {}",
            r.title,
            r.method,
            r.target
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_real_read_reaches_a_replica_through_geolb() {
    let defs = MASTER_WRITES_ONLY;
    let h = Harness::start(defs).await;
    let records = corpus();
    let mut played_safe = 0;
    for r in &records {
        let mut head = format!(
            "{} {} HTTP/1.1\r\nHost: maps.example.org\r\n",
            r.method, r.target
        );
        for (k, v) in &r.headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        head.push_str(&format!(
            "Connection: close\r\nContent-Length: {}\r\n\r\n{}",
            r.body.len(),
            r.body
        ));
        let mut s = TcpStream::connect(h.proxy()).await.unwrap();
        s.write_all(head.as_bytes()).await.unwrap();
        let mut answer = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut answer))
            .await
            .expect("an answer")
            .unwrap();
        let answer = String::from_utf8_lossy(&answer);
        let node = answer
            .lines()
            .find_map(|l| l.strip_prefix("x-node: "))
            .unwrap_or("none");
        match expected_on_the_master(r) {
            Some(why) => {
                assert_eq!(node, "gs-master", "{}: {why}", r.title);
                played_safe += u64::from(r.method == "POST");
            }
            None => assert!(
                node.starts_with("gs-replica"),
                "{} went to {node}:\n{} {}\n{answer}",
                r.title,
                r.method,
                r.target
            ),
        }
    }
    // The metric of reads sent to the master counts the known exceptions, and nothing else.
    let url = format!("http://{}/metrics", h.geolb.admin);
    let metrics = wait_for_async("the records counted", Duration::from_secs(5), || {
        let req = Request::get(&url)
            .body(Full::new(Bytes::new()).boxed())
            .unwrap();
        let client = h.client.clone();
        async move {
            let text = send(&client, req).await.text();
            let total: u64 = text
                .lines()
                .filter(|l| l.starts_with("geolb_reads_to_master_total{"))
                .filter_map(|l| l.rsplit_once(' ')?.1.parse::<u64>().ok())
                .sum();
            (total == played_safe).then_some(text)
        }
    })
    .await;
    assert!(
        metrics.contains("geolb_reads_to_master_total{reason=\"text-before-root\"}"),
        "{metrics}"
    );
    // A read a client spells oddly (a non-ASCII key) is played safe, and counted by reason.
    let r = h
        .get("/geoserver/wms?service=WMS&request=GetMap&layers=topp:states&%C3%A9t%C3%A9=1")
        .await;
    assert_eq!((r.status, r.node()), (StatusCode::OK, "gs-master"));
}
