//! Every wait has a timeout and the connection caps hold: silent and trickling clients are closed,
//! a client that stops reading its response is cut and its node slot freed (HTTP/1 and one h2
//! stream on a busy connection), the response-headers timer starts once the body is sent.

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

async fn start(extra: &'static str) -> Harness {
    Harness::start_with(
        THREE,
        Options {
            extra,
            ..Options::default()
        },
    )
    .await
}

/// Reads until the peer closes; true when it did within `within`.
async fn closed_within(s: &mut TcpStream, within: Duration) -> bool {
    let mut sink = Vec::new();
    tokio::time::timeout(within, s.read_to_end(&mut sink))
        .await
        .is_ok()
}

/// A connection from another loopback address (another client, to the per-client cap).
async fn connect_from(from: &str, to: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(format!("{from}:0").parse().unwrap())?;
    socket.connect(to).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_thousand_silent_connections_are_closed_and_the_cap_holds() {
    geolb::server::raise_open_file_limit();
    let h =
        start("[limits]\nmax_connections = 500\n[timeouts]\nclient_headers = \"500ms\"\n").await;
    let started = Instant::now();
    let connect_all = async {
        let mut silent = Vec::new();
        for _ in 0..2000 {
            silent.push(TcpStream::connect(h.proxy()).await.unwrap());
        }
        let mut closed = 0;
        for s in &mut silent {
            if closed_within(s, Duration::from_secs(20)).await {
                closed += 1;
            }
        }
        closed
    };
    // The cap holds while they are served batch after batch.
    let watch = async {
        let mut most = 0;
        while started.elapsed() < Duration::from_secs(20) {
            let open = h.geolb.open_connections();
            most = most.max(open);
            if open == 0 && most > 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        most
    };
    let (most, closed) = tokio::join!(watch, connect_all);
    assert_eq!(closed, 2000, "every silent connection was closed");
    assert!(most <= 500, "at most 500 open at once, saw {most}");
    assert!(most >= 400, "the cap was used: {most}");
    // Four batches of client_headers, not one per connection.
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(
        h.get("/geoserver/wms?request=GetMap").await.status,
        StatusCode::OK
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_client_cannot_take_every_connection() {
    let h = start("[limits]\nmax_connections_per_client = 5\n").await;
    let mut mine = Vec::new();
    for _ in 0..5 {
        mine.push(connect_from("127.0.0.2", h.proxy()).await.unwrap());
    }
    wait_for("five open", Duration::from_secs(5), || {
        h.geolb.open_connections() == 5
    })
    .await;
    // A sixth from the same address is closed at once; another address is served.
    let mut sixth = connect_from("127.0.0.2", h.proxy()).await.unwrap();
    assert!(closed_within(&mut sixth, Duration::from_secs(2)).await);
    let mut other = connect_from("127.0.0.3", h.proxy()).await.unwrap();
    other
        .write_all(
            b"GET /geoserver/wms?request=GetMap HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        )
        .await
        .unwrap();
    let mut answer = Vec::new();
    other.read_to_end(&mut answer).await.unwrap();
    assert!(
        answer.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&answer)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_h2_preface_trickled_byte_by_byte_is_cut() {
    let h = start("[timeouts]\nclient_headers = \"500ms\"\n").await;
    let mut s = TcpStream::connect(h.proxy()).await.unwrap();
    let started = Instant::now();
    let preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    let mut cut = false;
    for b in preface {
        if s.write_all(&[*b]).await.is_err() {
            cut = true;
            break;
        }
        let mut one = [0u8; 1];
        match tokio::time::timeout(Duration::from_millis(100), s.read(&mut one)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {
                cut = true;
                break;
            }
            _ => {}
        }
    }
    assert!(
        cut || closed_within(&mut s, Duration::from_secs(2)).await,
        "the trickle was cut"
    );
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
}

const BLOB: &str = "/geoserver/www/__sim/blob?bytes=52428800&seed=7";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_is_cut_and_its_slot_freed() {
    let h = start("[timeouts.reads]\nheaders = \"5s\"\nidle = \"500ms\"\n").await;
    let mut s = TcpStream::connect(h.proxy()).await.unwrap();
    s.write_all(format!("GET {BLOB} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let node = wait_for_async("a node streams it", Duration::from_secs(5), || async {
        h.geolb
            .snapshot()
            .nodes
            .iter()
            .find(|n| n.in_flight() == 1)
            .cloned()
    })
    .await;
    // The client reads nothing more.
    wait_for("its slot freed", Duration::from_secs(5), || {
        node.in_flight() == 0
    })
    .await;
    assert!(
        closed_within(&mut s, Duration::from_secs(5)).await,
        "the connection was cut"
    );
    let metrics = h.scrape().await;
    assert!(
        metrics.contains("geolb_client_connections_closed_total{reason=\"stalled\"} 1"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_stalled_h2_stream_is_cut_while_the_connection_goes_on() {
    let h = start("[timeouts.reads]\nheaders = \"5s\"\nidle = \"500ms\"\n").await;
    let client: Client<_, TestBody> = Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http();
    let get = |target: &str| {
        Request::get(h.url(target))
            .body(Full::new(Bytes::new()).boxed())
            .unwrap()
    };
    // The stalled stream: its headers come, its body is never read.
    let stalled = client.request(get(BLOB)).await.unwrap();
    assert_eq!(stalled.status(), StatusCode::OK);
    let node = h
        .geolb
        .snapshot()
        .nodes
        .iter()
        .find(|n| n.in_flight() == 1)
        .cloned()
        .expect("a node streams it");
    // Other streams on the same connection keep being served while it stalls, and after.
    let busy = async {
        for _ in 0..20 {
            let r = send(&client, get("/geoserver/wms?request=GetMap")).await;
            assert_eq!(r.status, StatusCode::OK);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    let freed = wait_for("its slot freed", Duration::from_secs(5), || {
        node.in_flight() == 0
    });
    tokio::join!(busy, freed);
    // The stalled stream was reset: reading it now fails before 50 MiB.
    let read = tokio::time::timeout(Duration::from_secs(5), stalled.into_body().collect()).await;
    assert!(matches!(read, Ok(Err(_))), "the stream was reset");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_response_headers_timer_starts_once_the_body_is_sent() {
    let h = start("[timeouts.master]\nheaders = \"300ms\"\nidle = \"2s\"\n").await;
    // A slow upload to the master: 1 s in all, more than the headers timeout.
    let mut s = TcpStream::connect(h.proxy()).await.unwrap();
    s.write_all(b"POST /geoserver/rest/imports HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 50\r\n\r\n")
        .await
        .unwrap();
    for _ in 0..5 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        s.write_all(b"0123456789").await.unwrap();
    }
    let mut answer = Vec::new();
    s.read_to_end(&mut answer).await.unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("\"bytes\":50"), "{answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_silent_during_the_look_ahead_gets_408() {
    let h = start("[timeouts.reads]\nheaders = \"5s\"\nidle = \"300ms\"\n").await;
    let started = Instant::now();
    let r = raw(
        h.proxy(),
        b"POST /geoserver/wfs HTTP/1.1\r\nHost: x\r\nContent-Type: text/xml\r\nContent-Length: 100\r\n\r\n<wfs:GetFeat",
    )
    .await;
    assert!(r.starts_with("HTTP/1.1 408"), "{r}");
    assert!(started.elapsed() < Duration::from_secs(2));
    assert!(h.nodes.iter().all(|n| n.hits() == 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_h2_connection_is_closed_after_client_headers() {
    let h = start("[timeouts]\nclient_headers = \"500ms\"\n").await;
    let client: Client<_, TestBody> = Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http();
    let req = Request::get(h.url("/geoserver/wms?request=GetMap"))
        .body(Full::new(Bytes::new()).boxed())
        .unwrap();
    assert_eq!(send(&client, req).await.status, StatusCode::OK);
    assert_eq!(
        h.geolb.open_connections(),
        1,
        "the h2 connection stays open"
    );
    wait_for(
        "the idle h2 connection closed",
        Duration::from_secs(5),
        || h.geolb.open_connections() == 0,
    )
    .await;
    let metrics = h.scrape().await;
    assert!(
        metrics.contains("geolb_client_connections_closed_total{reason=\"idle\"} 1"),
        "{metrics}"
    );
}
