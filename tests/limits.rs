//! Bad input never reaches a node: smuggling probes, oversized heads and bodies, slowloris clients.
//! These speak raw bytes over TCP.

mod support;

use std::time::{Duration, Instant};

use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn status_of(answer: &str) -> u16 {
    answer.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0)
}

fn nodes_saw_nothing(h: &Harness) -> bool {
    h.nodes.iter().all(|n| n.hits() == 0)
}

const OPTS: &str = "[limits]\nmax_header_bytes = 8192\nmax_headers = 20\nmax_body = 1000\n\
                    [timeouts]\nclient_headers = \"400ms\"\n";

async fn start() -> Harness {
    Harness::start_with(
        THREE,
        Options {
            extra: OPTS,
            ..Options::default()
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smuggling_probes_are_refused_and_never_forwarded() {
    let h = start().await;
    let probes: &[(&str, &[u8], &[u16])] = &[
        (
            "Content-Length with chunked",
            b"POST /geoserver/wfs HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            &[400],
        ),
        (
            "chunked, then Content-Length",
            b"POST /geoserver/rest/x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 30\r\n\r\n0\r\n\r\nGET /geoserver/rest/y HTTP/1.1\r\nHost: x\r\n\r\n",
            &[400],
        ),
        (
            "duplicate Content-Length",
            b"POST /geoserver/wfs HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\nabcde",
            &[400],
        ),
        ("unknown Transfer-Encoding", b"POST /geoserver/wfs HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\nabcd", &[400, 501]),
        ("space before colon", b"GET /geoserver/wms HTTP/1.1\r\nHost : x\r\n\r\n", &[400]),
        ("no Host on HTTP/1.1", b"GET /geoserver/wms?request=GetMap HTTP/1.1\r\n\r\n", &[400]),
        ("two Host headers", b"GET /geoserver/wms?request=GetMap HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n", &[400]),
        ("bare LF line ends", b"GET /geoserver/wms?request=GetMap HTTP/1.1\nHost: x\n\n", &[400]),
        ("equal Content-Lengths twice", b"POST /geoserver/wfs HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nContent-Length: 4\r\n\r\nabcd", &[400]),
        ("Connection nominating Content-Type", b"POST /geoserver/wfs HTTP/1.1\r\nHost: x\r\nConnection: Content-Type\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 15\r\n\r\nrequest=GetMap&", &[400]),
        ("Connection nominating Host", b"GET /geoserver/wms HTTP/1.1\r\nHost: x\r\nConnection: keep-alive, host\r\n\r\n", &[400]),
        ("whitespace after a chunk size", b"POST /geoserver/wfs HTTP/1.1\r\nHost: x\r\nContent-Type: text/xml\r\nTransfer-Encoding: chunked\r\n\r\n12 \r\n<wfs:GetFeature/>\r\n0\r\n\r\n", &[400]),
        ("chunk data longer than its size", b"POST /geoserver/wfs HTTP/1.1\r\nHost: x\r\nContent-Type: text/xml\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n<wfs:GetFeature/>\r\n0\r\n\r\n", &[400]),
    ];
    for (what, bytes, allowed) in probes {
        let answer = raw(h.proxy(), bytes).await;
        let status = status_of(&answer);
        assert!(
            allowed.contains(&status),
            "{what}: answered {status}:\n{answer}"
        );
        assert!(nodes_saw_nothing(&h), "{what}: a node saw the request");
    }
    // The same connection-level checks leave clean requests alone.
    let answer = raw(
        h.proxy(),
        b"GET /geoserver/wms?request=GetMap HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status_of(&answer), 200, "{answer}");
    let answer = raw(
        h.proxy(),
        b"POST /geoserver/wfs HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n<Get/\r\n0\r\n\r\nGET /geoserver/wms HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(
        answer.matches("HTTP/1.1 200").count(),
        2,
        "a chunked request, then another: {answer}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_framing_flaw_nothing_more_is_served_on_the_connection() {
    let h = start().await;
    // A flawed head, then a clean request pipelined behind it: neither is served.
    let answer = raw(
        h.proxy(),
        b"GET /geoserver/wms?request=GetMap HTTP/1.1\r\nHost: x\nX: y\r\n\r\nGET /geoserver/wms?request=GetMap HTTP/1.1\r\nHost: x\r\n\r\n",
    )
    .await;
    assert_eq!(status_of(&answer), 400, "{answer}");
    assert_eq!(answer.matches("HTTP/1.1").count(), 1, "{answer}");
    assert!(nodes_saw_nothing(&h));
    // A flaw in the body of a request already streaming to the master: 400, the connection
    // closes, and the node is not charged for it.
    let master = h.geolb.snapshot().master().cloned().unwrap();
    for _ in 0..8 {
        let mut s = TcpStream::connect(h.proxy()).await.unwrap();
        s.write_all(b"POST /geoserver/rest/imports HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nabcd\r\n")
            .await
            .unwrap();
        wait_for("streaming to the master", Duration::from_secs(5), || {
            master.in_flight() == 1
        })
        .await;
        s.write_all(b"4\r\nabcdefgh\r\n0\r\n\r\n").await.unwrap();
        let mut out = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(3), s.read_to_end(&mut out)).await;
        let answer = String::from_utf8_lossy(&out);
        assert_eq!(status_of(&answer), 400, "{answer}");
        assert!(
            answer.contains("could not read the request body"),
            "{answer}"
        );
        wait_for("the slot freed", Duration::from_secs(5), || {
            master.in_flight() == 0
        })
        .await;
    }
    assert_eq!(h.state("gs-master"), geolb::cluster::health::State::Up);
    assert_eq!(h.geolb.snapshot().master().map(|n| n.id), Some(master.id));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_heads_and_bodies_are_refused() {
    let h = start().await;
    let big = format!(
        "GET /geoserver/wms HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(10_000)
    );
    assert_eq!(status_of(&raw(h.proxy(), big.as_bytes()).await), 431);
    let many: String = (0..30).map(|i| format!("X-H{i}: v\r\n")).collect();
    let many = format!("GET /geoserver/wms HTTP/1.1\r\nHost: x\r\n{many}\r\n");
    assert_eq!(status_of(&raw(h.proxy(), many.as_bytes()).await), 431);
    let declared = format!(
        "POST /geoserver/rest/x HTTP/1.1\r\nHost: x\r\nContent-Length: 2000\r\n\r\n{}",
        "b".repeat(2000)
    );
    let answer = raw(h.proxy(), declared.as_bytes()).await;
    assert_eq!(status_of(&answer), 413, "{answer}");
    assert!(nodes_saw_nothing(&h));
    // A chunked body that grows past the limit is cut and answered 413.
    let chunk = format!("{:x}\r\n{}\r\n", 600, "c".repeat(600));
    let chunked = format!("POST /geoserver/rest/x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n{chunk}{chunk}0\r\n\r\n");
    let answer = raw(h.proxy(), chunked.as_bytes()).await;
    assert_eq!(status_of(&answer), 413, "{answer}");
    // Within the limits, all is well.
    let ok = format!("POST /geoserver/rest/x HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 900\r\n\r\n{}", "d".repeat(900));
    assert_eq!(status_of(&raw(h.proxy(), ok.as_bytes()).await), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slowloris_client_is_cut_while_others_are_served() {
    let h = start().await;
    let mut slow = TcpStream::connect(h.proxy()).await.unwrap();
    let started = Instant::now();
    slow.write_all(b"GET /geoserver/wms HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let trickle = async {
        // One header byte every 100 ms: never a whole head.
        for b in b"X-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa".iter() {
            if slow.write_all(&[*b]).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    let others = async {
        for _ in 0..10 {
            assert_eq!(
                h.get("/geoserver/wms?request=GetMap").await.status,
                http::StatusCode::OK
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    tokio::join!(trickle, others);
    let mut rest = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(3), slow.read_to_end(&mut rest)).await;
    assert!(read.is_ok(), "the slow connection was closed");
    assert!(started.elapsed() < Duration::from_secs(5));
    let text = String::from_utf8_lossy(&rest);
    assert!(
        text.is_empty() || text.starts_with("HTTP/1.1 408"),
        "{text}"
    );
    assert!(nodes_saw_nothing_but_reads(&h));
}

/// Only the ten GetMaps reached nodes.
fn nodes_saw_nothing_but_reads(h: &Harness) -> bool {
    h.nodes.iter().map(|n| n.hits()).sum::<u64>() == 10
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_body_that_stalls_gets_408() {
    let extra = "[timeouts.master]\nheaders = \"5s\"\nidle = \"300ms\"\n";
    let h = Harness::start_with(
        THREE,
        Options {
            extra,
            ..Options::default()
        },
    )
    .await;
    let mut s = TcpStream::connect(h.proxy()).await.unwrap();
    let started = Instant::now();
    s.write_all(b"POST /geoserver/rest/imports HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nonly ten b").await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(3), s.read_to_end(&mut out)).await;
    let answer = String::from_utf8_lossy(&out);
    assert_eq!(status_of(&answer), 408, "{answer}");
    assert!(answer.contains("stalled for 300ms"), "{answer}");
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_and_aborted_uploads_never_eject_the_master() {
    let h = Harness::start_with(
        &[node("gs-master", Some(1)), node("gs-replica", None)],
        Options {
            // Passive ejection at its default threshold (5): forty client faults in a row.
            extra: "[timeouts.master]\nheaders = \"5s\"\nidle = \"1s\"\n",
            ..Options::default()
        },
    )
    .await;
    let master = h.geolb.snapshot().master().cloned().unwrap();
    for i in 0..20 {
        // Malformed: chunk data longer than its size, once the upload streams to the master.
        let mut s = TcpStream::connect(h.proxy()).await.unwrap();
        s.write_all(b"POST /geoserver/rest/workspaces HTTP/1.1\r\nHost: x\r\nContent-Type: text/xml\r\nTransfer-Encoding: chunked\r\n\r\n6\r\n<works\r\n")
            .await
            .unwrap();
        wait_for("streaming", Duration::from_secs(5), || {
            master.in_flight() == 1
        })
        .await;
        s.write_all(b"3\r\npace>\r\n0\r\n\r\n").await.unwrap();
        let mut out = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(3), s.read_to_end(&mut out)).await;
        assert_eq!(
            status_of(&String::from_utf8_lossy(&out)),
            400,
            "malformed upload {i}"
        );
        // Aborted: the client goes away in the middle of its body.
        let mut s = TcpStream::connect(h.proxy()).await.unwrap();
        s.write_all(b"POST /geoserver/rest/workspaces HTTP/1.1\r\nHost: x\r\nContent-Type: text/xml\r\nContent-Length: 1000\r\n\r\n<workspace>")
            .await
            .unwrap();
        wait_for("streaming", Duration::from_secs(5), || {
            master.in_flight() == 1
        })
        .await;
        drop(s);
        wait_for("the slot freed", Duration::from_secs(5), || {
            master.in_flight() == 0
        })
        .await;
    }
    assert_eq!(h.state("gs-master"), geolb::cluster::health::State::Up);
    assert_eq!(h.master().as_deref(), Some("gs-master"));
    assert!(master.last_ejection().is_none(), "never ejected");
    // Malformed and aborted alike: 40 answers of geolb's own (counted by the recorder thread).
    let metrics = wait_for_async("40 refusals counted", Duration::from_secs(5), || async {
        let metrics = h.scrape().await;
        metrics
            .contains("code=\"4xx\",node=\"none\",pool=\"master\"} 40")
            .then_some(metrics)
    })
    .await;
    // geolb answered them itself: no node is named for them.
    assert!(
        !metrics.contains("code=\"4xx\",node=\"gs-master\""),
        "{metrics}"
    );
    let r = h.write().await;
    assert_eq!(
        (r.status, r.node()),
        (http::StatusCode::OK, "gs-master"),
        "writes keep working"
    );
}
