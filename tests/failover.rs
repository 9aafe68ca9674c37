//! Health watchdogs and master failover against simulated nodes that die, hang or answer OGC
//! exceptions.

mod support;

use std::time::{Duration, Instant};

use geolb::cluster::health::State;
use geolb::sim::Mode;
use http::StatusCode;
use support::*;

/// Master candidates 1 and 2, and a plain replica.
const CANDIDATES: &[NodeDef] = &[
    node("gs-master", Some(1)),
    node("gs-backup", Some(2)),
    node("gs-replica", None),
];

/// The bound: writes move within `fall × interval + timeout` plus one interval.
fn failover_bound(h: &Harness) -> Duration {
    h.interval * h.fall + h.timeout + h.interval
}

/// Sends writes until one is served by `want`; returns how long that took from `since`.
async fn writes_reach(h: &Harness, want: &str, since: Instant, within: Duration) -> Duration {
    wait_for_async(&format!("writes served by {want}"), within, || async {
        (h.write().await.node() == want).then(|| since.elapsed())
    })
    .await
}

async fn master_fails_over(failback: &'static str) -> Harness {
    let routing = if failback == "sticky" {
        "failback = \"sticky\""
    } else {
        "failback = \"priority\""
    };
    let h = Harness::start_with(
        CANDIDATES,
        Options {
            routing,
            ..Options::default()
        },
    )
    .await;
    assert_eq!(h.master().as_deref(), Some("gs-master"));
    assert_eq!(h.write().await.node(), "gs-master");

    let killed = Instant::now();
    h.sim("gs-master").kill().await;
    let took = writes_reach(&h, "gs-backup", killed, Duration::from_secs(5)).await;
    let bound = failover_bound(&h);
    assert!(took <= bound, "failover took {took:?}, more than {bound:?}");
    assert_eq!(h.master().as_deref(), Some("gs-backup"));
    h
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sticky_master_keeps_the_role_after_the_old_master_returns() {
    let h = master_fails_over("sticky").await;
    h.sim("gs-master").restart().await.unwrap();
    h.wait_state("gs-master", State::Up, Duration::from_secs(5))
        .await;
    // It is back and healthy (it serves reads again), yet writes stay on the promoted master.
    wait_for_async(
        "gs-master serves reads again",
        Duration::from_secs(5),
        || async {
            (h.get("/geoserver/wms?request=GetMap").await.node() == "gs-master").then_some(())
        },
    )
    .await;
    for _ in 0..20 {
        assert_eq!(h.write().await.node(), "gs-backup");
    }
    assert_eq!(h.master().as_deref(), Some("gs-backup"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn priority_master_moves_back_after_rise_passes() {
    let h = master_fails_over("priority").await;
    let restarted = Instant::now();
    h.sim("gs-master").restart().await.unwrap();
    let took = writes_reach(&h, "gs-master", restarted, Duration::from_secs(5)).await;
    // Re-admission needs `rise` passes: never before (rise - 1) intervals, and within rise + 1.
    assert!(
        took >= h.interval * (h.rise - 1),
        "moved back after {took:?}, before {} passes",
        h.rise
    );
    assert!(
        took <= h.interval * (h.rise + 1) + h.timeout,
        "moved back only after {took:?}"
    );
    assert_eq!(h.master().as_deref(), Some("gs-master"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_replica_is_ejected_and_readmitted_after_rise_passes() {
    // No slow start here: a re-admitted replica gets its full share at once.
    let h = Harness::start_with(
        THREE,
        Options {
            routing: "slow_start = \"0s\"",
            ..Options::default()
        },
    )
    .await;
    let replica = h.sim("gs-replica-1");
    replica.kill().await;
    h.wait_state(
        "gs-replica-1",
        State::Down,
        failover_bound(&h) + Duration::from_secs(1),
    )
    .await;
    for _ in 0..60 {
        let r = h.get("/geoserver/wms?request=GetMap").await;
        assert_eq!(r.status, StatusCode::OK, "reads keep working");
        assert_ne!(r.node(), "gs-replica-1");
    }
    replica.restart().await.unwrap();
    let probes_before = replica.probes();
    h.wait_state("gs-replica-1", State::Up, Duration::from_secs(5))
        .await;
    assert!(
        replica.probes() - probes_before >= u64::from(h.rise),
        "re-admitted only after {} passes",
        h.rise
    );
    replica.reset_counters();
    for _ in 0..60 {
        h.get("/geoserver/wms?request=GetMap").await;
    }
    assert!(replica.hits() > 0, "a re-admitted replica gets reads again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_master_means_503_for_writes_while_reads_go_on() {
    let h = Harness::start(THREE).await;
    h.sim("gs-master").set_mode(Mode::Fail);
    h.wait_state("gs-master", State::Down, Duration::from_secs(5))
        .await;
    let r = h.write().await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(r.text(), "no healthy master: writes are unavailable\n");
    assert!(
        r.header("retry-after").parse::<u64>().is_ok_and(|s| s >= 1),
        "Retry-After: {:?}",
        r.header("retry-after")
    );
    let r = h.get("/geoserver/rest/workspaces").await;
    assert_eq!(
        r.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "REST needs the master too"
    );
    for _ in 0..10 {
        let r = h.get("/geoserver/wms?request=GetMap").await;
        assert_eq!(r.status, StatusCode::OK);
        assert_ne!(r.node(), "gs-master");
    }

    for name in ["gs-replica-1", "gs-replica-2"] {
        h.sim(name).kill().await;
    }
    for name in ["gs-replica-1", "gs-replica-2"] {
        h.wait_state(name, State::Down, Duration::from_secs(5))
            .await;
    }
    let r = h.get("/geoserver/wms?request=GetMap").await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(r.text(), "no healthy node: reads are unavailable\n");
    assert!(!r.header("retry-after").is_empty());
    assert_eq!(h.write().await.status, StatusCode::SERVICE_UNAVAILABLE);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ogc_exception_with_status_200_fails_the_health_check() {
    let h = Harness::start(THREE).await;
    h.sim("gs-replica-2").set_mode(Mode::Exception);
    h.wait_state("gs-replica-2", State::Down, Duration::from_secs(5))
        .await;
    let status = h.geolb.snapshot();
    let i = status
        .nodes
        .iter()
        .position(|n| n.name() == "gs-replica-2")
        .unwrap();
    let detail = status.nodes[i].last_check().unwrap().detail.clone();
    assert!(
        detail.contains("WMS_Capabilities"),
        "the reason names the missing body: {detail}"
    );
    for _ in 0..30 {
        assert_ne!(
            h.get("/geoserver/wms?request=GetMap").await.node(),
            "gs-replica-2"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_node_is_ejected_by_the_check_timeout() {
    let h = Harness::start(THREE).await;
    h.sim("gs-replica-1").set_mode(Mode::Hang);
    h.wait_state(
        "gs-replica-1",
        State::Down,
        failover_bound(&h) + Duration::from_secs(1),
    )
    .await;
    let snap = h.geolb.snapshot();
    let node = snap
        .nodes
        .iter()
        .find(|n| n.name() == "gs-replica-1")
        .unwrap();
    assert!(node.last_check().unwrap().detail.starts_with("timeout"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_dying_mid_request_gives_502() {
    let h = Harness::start(&[node("gs-master", Some(1))]).await;
    let slow = {
        let (client, url) = (
            h.client.clone(),
            h.url("/geoserver/rest/__sim/slow?ms=5000"),
        );
        tokio::spawn(async move {
            let req = http::Request::get(url)
                .body(http_body_util::BodyExt::boxed(http_body_util::Full::new(
                    bytes::Bytes::new(),
                )))
                .unwrap();
            send(&client, req).await
        })
    };
    wait_for(
        "the slow request is in flight",
        Duration::from_secs(5),
        || h.geolb.snapshot().nodes[0].in_flight() == 1,
    )
    .await;
    h.sim("gs-master").kill().await;
    let r = slow.await.unwrap();
    assert_eq!(r.status, StatusCode::BAD_GATEWAY);
    assert!(
        r.text().starts_with("node gs-master failed:"),
        "{}",
        r.text()
    );
    wait_for("in-flight released", Duration::from_secs(5), || {
        h.geolb.snapshot().nodes[0].in_flight() == 0
    })
    .await;
}

/// Reads one response (head and a `content-length` body) from `s`; `None` when the connection
/// closed or stayed silent for 5 s before a whole response came.
async fn read_response(s: &mut tokio::net::TcpStream) -> Option<String> {
    use tokio::io::AsyncReadExt;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        if let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&got[..end]).to_ascii_lowercase();
            let length = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok())
                .unwrap_or(0);
            if got.len() >= end + 4 + length {
                return Some(head);
            }
        }
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
            .await
            .ok()?
            .ok()?;
        if n == 0 {
            return None;
        }
        got.extend_from_slice(&buf[..n]);
    }
}

/// A client reusing its connection after a 503 to a write whose body geolb did not read (REST,
/// routed by its head) must not find it closed under it: either the answer says
/// `Connection: close`, or the next request on the connection is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_503_to_an_unread_body_says_whether_the_connection_stays() {
    use tokio::io::AsyncWriteExt;
    let h = Harness::start(THREE).await;
    h.sim("gs-master").set_mode(Mode::Fail);
    h.wait_state("gs-master", State::Down, Duration::from_secs(5))
        .await;
    for size in [20, 100_000] {
        let body = "x".repeat(size);
        let post = format!(
            "POST /geoserver/rest/workspaces HTTP/1.1\r\nhost: lb\r\ncontent-type: text/xml\r\n\
             content-length: {size}\r\n\r\n{body}"
        );
        let mut s = tokio::net::TcpStream::connect(h.proxy()).await.unwrap();
        // Written from another task: the client may still be sending when the answer comes.
        let (rd, mut wr) = s.into_split();
        let first = post.clone();
        let writer = tokio::spawn(async move {
            let _ = wr.write_all(first.as_bytes()).await;
            wr
        });
        s = {
            let wr = writer.await.unwrap();
            rd.reunite(wr).unwrap()
        };
        let head = read_response(&mut s)
            .await
            .expect("an answer to the first write");
        assert!(head.starts_with("http/1.1 503"), "{size} B: {head}");
        if head.contains("connection: close") {
            continue;
        }
        let second = match s.write_all(post.as_bytes()).await {
            Ok(()) => read_response(&mut s).await,
            Err(e) => Some(format!("a failed write: {e}")),
        };
        assert!(
            second
                .as_deref()
                .is_some_and(|h| h.starts_with("http/1.1 503")),
            "{size} B body: the connection was kept open after the first 503 ({head:?}, no \
             `Connection: close`), but the second write got {second:?}"
        );
    }
    // A write the master reads and answers keeps its connection: the close above is only for
    // bodies that did not end.
    h.sim("gs-master").set_mode(Mode::Healthy);
    h.wait_state("gs-master", State::Up, Duration::from_secs(10))
        .await;
    let body = "x".repeat(100_000);
    let post = format!(
        "POST /geoserver/rest/workspaces HTTP/1.1\r\nhost: lb\r\ncontent-type: text/xml\r\n\
         content-length: 100000\r\n\r\n{body}"
    );
    let mut s = tokio::net::TcpStream::connect(h.proxy()).await.unwrap();
    for round in 0..2 {
        s.write_all(post.as_bytes()).await.unwrap();
        let head = read_response(&mut s).await;
        let head = head.unwrap_or_else(|| panic!("write {round}: no answer"));
        assert!(head.starts_with("http/1.1 2"), "write {round}: {head}");
        assert!(!head.contains("connection: close"), "write {round}: {head}");
    }
}

/// Takes `addr` over (its node killed first) with a listener whose accept queue is full and
/// never drained: the kernel drops every further SYN, so a connection to it can no longer be
/// opened and each try lasts the whole connect timeout, like a stopped container's address
/// that nothing answers any more. Keep what it returns for as long as the address must stay
/// silent.
async fn silence(
    addr: std::net::SocketAddr,
) -> (tokio::net::TcpListener, Vec<tokio::net::TcpStream>) {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_reuseaddr(true).unwrap();
    socket.bind(addr).unwrap();
    let listener = socket.listen(0).unwrap();
    let mut fillers = Vec::new();
    loop {
        let connect = tokio::net::TcpStream::connect(addr);
        match tokio::time::timeout(Duration::from_millis(300), connect).await {
            Ok(Ok(filler)) => fillers.push(filler),
            Ok(Err(e)) => panic!("filling {addr}'s accept queue: {e}"),
            Err(_) => return (listener, fillers),
        }
        assert!(fillers.len() < 16, "{addr}'s accept queue never filled");
    }
}

/// A cluster of [`THREE`] with `opts`, its master's address then [`silence`]d: a write, its
/// answer and how long it took (the cluster is kept for a look at its state, the address silent).
async fn write_to_a_silent_master(opts: Options) -> (Harness, Reply, Duration, impl Sized) {
    let h = Harness::start_with(THREE, opts).await;
    let master = h.sim("gs-master");
    let addr = master.addr();
    master.kill().await;
    let silent = silence(addr).await;
    let began = Instant::now();
    let r = tokio::time::timeout(Duration::from_secs(10), h.write())
        .await
        .expect("the write is answered, not retried for ever");
    let took = began.elapsed();
    (h, r, took, silent)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_to_a_master_gone_silent_gets_the_empty_master_pool_503_once_it_is_ejected() {
    // The compose suite's `docker stop` of the master: the write in flight found no connection
    // to open, and its retry went on picking the master the request had started with, again
    // and again, long after the checks had ejected it.
    let opts = Options {
        extra: "[timeouts]\nconnect = \"1s\"\n",
        ..Options::default()
    };
    let (h, r, took, _silent) = write_to_a_silent_master(opts).await;
    assert_eq!(h.state("gs-master"), State::Down, "the checks ejected it");
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(r.text(), "no healthy master: writes are unavailable\n");
    // A connect timeout or two, then a retry sees the master pool as it is now (three attempts
    // would have ended in a 502).
    assert!(
        took < Duration::from_millis(3500),
        "answered after {took:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_to_an_unreachable_master_is_retried_at_most_retries_max_times() {
    // The master stays elected (no check runs in the test's time, passive ejection is off): each
    // attempt is one connect timeout, and there are `retries.max` retries, not more.
    let opts = Options {
        interval: "60s",
        extra: "[timeouts]\nconnect = \"300ms\"\n[passive]\nconsecutive_failures = 0\n\
                [retries]\nmax = 2\n",
        ..Options::default()
    };
    let (h, r, took, _silent) = write_to_a_silent_master(opts).await;
    assert_eq!(h.state("gs-master"), State::Up, "still elected");
    assert_eq!(r.status, StatusCode::BAD_GATEWAY, "{}", r.text());
    assert!(r.text().contains("gs-master"), "{}", r.text());
    let scrape = h.scrape().await;
    let retries = scrape
        .lines()
        .find(|l| l.starts_with("geolb_retries_total{pool=\"master\"}"))
        .unwrap_or_else(|| panic!("no master retries counter in\n{scrape}"));
    assert!(retries.ends_with(" 2"), "2 retries: {retries}");
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_millis(2000),
        "3 attempts of 300 ms, answered after {took:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_to_a_master_that_refuses_gets_the_empty_master_pool_503_not_the_refusal() {
    // Nothing listens on the master's port any more, and nothing ejects it in the test's time
    // (checks 60 s apart, passive ejection off): the write is not sent to the same refusal
    // again and again, and gets the 503 a write gets once the master has left the pool.
    let h = Harness::start_with(
        THREE,
        Options {
            interval: "60s",
            extra: "[passive]\nconsecutive_failures = 0\n",
            ..Options::default()
        },
    )
    .await;
    h.sim("gs-master").kill().await;
    let r = h.write().await;
    assert_eq!(h.state("gs-master"), State::Up, "still elected");
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{}", r.text());
    assert_eq!(r.text(), "no healthy master: writes are unavailable\n");
}
