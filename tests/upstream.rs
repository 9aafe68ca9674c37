//! geolb's connections to the nodes: kept alive and reused, sent requests in origin-form with the
//! client's `Host`, never reused once the node closed them, closed after
//! `forwarding.pool_idle_timeout`.

mod support;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use geolb::config::Config;
use geolb::server;
use support::{raw, wait_for};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// A node written by hand, to see the bytes geolb sends and to close connections at will: answers
/// every request `200 ok` with keep-alive, then closes the connection after `close_after` (never,
/// when `None`).
struct RawNode {
    addr: std::net::SocketAddr,
    /// Connections accepted; of those that carried traffic (not only health probes), closed by
    /// geolb (EOF seen); closed by the node itself; and the request heads received.
    accepted: Arc<AtomicU64>,
    closed_by_peer: Arc<AtomicU64>,
    closed_by_node: Arc<AtomicU64>,
    heads: Arc<Mutex<Vec<String>>>,
}

impl RawNode {
    async fn start(close_after: Option<Duration>) -> RawNode {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let node = RawNode {
            addr: listener.local_addr().unwrap(),
            accepted: Arc::default(),
            closed_by_peer: Arc::default(),
            closed_by_node: Arc::default(),
            heads: Arc::default(),
        };
        let (accepted, closed, closed_here, heads) = (
            node.accepted.clone(),
            node.closed_by_peer.clone(),
            node.closed_by_node.clone(),
            node.heads.clone(),
        );
        tokio::spawn(async move {
            loop {
                let Ok((mut stream, _)) = listener.accept().await else {
                    return;
                };
                accepted.fetch_add(1, Ordering::Relaxed);
                let (closed, closed_here, heads) =
                    (closed.clone(), closed_here.clone(), heads.clone());
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut answered = false;
                    let mut traffic = false;
                    loop {
                        let mut chunk = [0u8; 4096];
                        let read = match close_after {
                            Some(after) if answered => {
                                match tokio::time::timeout(after, stream.read(&mut chunk)).await {
                                    Ok(read) => read,
                                    // Idle for `after`: the node closes it, without a word.
                                    Err(_) => {
                                        closed_here.fetch_add(1, Ordering::Relaxed);
                                        return;
                                    }
                                }
                            }
                            _ => stream.read(&mut chunk).await,
                        };
                        let n = match read {
                            Ok(0) | Err(_) => {
                                if traffic {
                                    closed.fetch_add(1, Ordering::Relaxed);
                                }
                                return;
                            }
                            Ok(n) => n,
                        };
                        buf.extend_from_slice(&chunk[..n]);
                        while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            let head: Vec<u8> = buf.drain(..end + 4).collect();
                            let head = String::from_utf8_lossy(&head).into_owned();
                            traffic |= !head.contains("geolb-health");
                            heads.lock().unwrap().push(head);
                            let answer =
                                "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-Node: raw\r\n\r\nok";
                            if stream.write_all(answer.as_bytes()).await.is_err() {
                                return;
                            }
                            answered = true;
                        }
                    }
                });
            }
        });
        node
    }

    /// Connections that carried traffic (health probes each make their own, and close it).
    fn traffic_heads(&self) -> Vec<String> {
        self.heads
            .lock()
            .unwrap()
            .iter()
            .filter(|h| !h.contains("geolb-health"))
            .cloned()
            .collect()
    }
}

/// geolb with `node` as its one node, checked every `interval`.
async fn geolb_in_front_of(node: &RawNode, interval: &str, extra: &str) -> server::Running {
    let text = format!(
        "[listen]\nhttp = [\"127.0.0.1:0\"]\n[admin]\nlisten = \"127.0.0.1:0\"\n\
         [health]\npath = \"/health\"\nexpect_body = \"\"\ninterval = \"{interval}\"\ntimeout = \"500ms\"\nrise = 1\n\
         [[nodes]]\nname = \"raw\"\nurl = \"http://{}\"\nmaster = 1\n[log]\naccess = false\n{extra}",
        node.addr
    );
    let config = Config::parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    let running = server::start(config).await.expect("geolb starts");
    wait_for("the node is up", Duration::from_secs(5), || {
        running.snapshot().master().is_some()
    })
    .await;
    running
}

const GET_MAP: &str = "/geoserver/wms?SERVICE=WMS&REQUEST=GetMap&LAYERS=a";

async fn get(proxy: std::net::SocketAddr, host: &str) -> String {
    raw(
        proxy,
        format!("GET {GET_MAP} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
}

#[tokio::test]
async fn requests_go_in_origin_form_with_the_clients_host_over_one_kept_alive_connection() {
    let node = RawNode::start(None).await;
    let geolb = geolb_in_front_of(&node, "100ms", "").await;
    let accepted_before = node.accepted.load(Ordering::Relaxed);
    let all_before = node.heads.lock().unwrap().len();
    let probes_before = all_before - node.traffic_heads().len();
    for _ in 0..20 {
        let answer = get(geolb.http[0], "maps.example.org").await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    }
    let heads = node.traffic_heads();
    assert_eq!(heads.len(), 20);
    for head in &heads {
        assert!(
            head.starts_with(&format!("GET {GET_MAP} HTTP/1.1\r\n")),
            "origin-form target: {head}"
        );
        assert!(
            head.to_ascii_lowercase()
                .contains("\r\nhost: maps.example.org\r\n"),
            "the client's Host: {head}"
        );
    }
    let all = node.heads.lock().unwrap().len();
    let probes = all - heads.len() - probes_before;
    let traffic_connections =
        node.accepted.load(Ordering::Relaxed) - accepted_before - probes as u64;
    assert!(
        traffic_connections <= 1,
        "20 requests one after the other took {traffic_connections} connections to the node"
    );
}

#[tokio::test]
async fn a_connection_the_node_closed_while_idle_is_not_reused() {
    // The node closes a connection 50 ms after answering on it (well within geolb's pool idle
    // time), without `Connection: close`. Checks are rare here: no sweep runs in between.
    let node = RawNode::start(Some(Duration::from_millis(50))).await;
    let geolb = geolb_in_front_of(&node, "60s", "").await;
    let proxy = geolb.http[0];
    for round in 1..=5 {
        let answer = get(proxy, "maps.example.org").await;
        assert!(
            answer.starts_with("HTTP/1.1 200"),
            "round {round}: {answer}"
        );
        let closed = node.closed_by_node.clone();
        wait_for(
            "the node to close the idle connection",
            Duration::from_secs(5),
            || closed.load(Ordering::Relaxed) >= round,
        )
        .await;
    }
    assert_eq!(
        node.traffic_heads().len(),
        5,
        "each request reached the node once"
    );
}

#[tokio::test]
async fn idle_connections_are_closed_after_the_pool_idle_timeout() {
    let node = RawNode::start(None).await;
    let geolb = geolb_in_front_of(
        &node,
        "100ms",
        "[forwarding]\npool_idle_timeout = \"300ms\"\n",
    )
    .await;
    let before = node.closed_by_peer.load(Ordering::Relaxed);
    let answer = get(geolb.http[0], "maps.example.org").await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    // No further request: the node's watchdog sweeps the idle connection away.
    let closed = node.closed_by_peer.clone();
    wait_for(
        "geolb to close the idle connection",
        Duration::from_secs(5),
        || closed.load(Ordering::Relaxed) > before,
    )
    .await;
}

#[tokio::test]
async fn a_write_goes_on_a_new_connection_reads_on_kept_alive_ones() {
    // A pooled connection may be the one the node is closing as idle just as a write goes out
    // on it: lost unanswered, and never sent twice. Writes open their own connection, which
    // then joins the pool for reads. Checks are rare here: none opens a connection meanwhile.
    let node = RawNode::start(None).await;
    let geolb = geolb_in_front_of(&node, "60s", "").await;
    let proxy = geolb.http[0];
    let accepted = || node.accepted.load(Ordering::Relaxed);
    let before = accepted();
    for _ in 0..5 {
        let answer = get(proxy, "maps.example.org").await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    }
    let after_reads = accepted();
    assert!(
        after_reads - before <= 1,
        "5 reads, {} connections",
        after_reads - before
    );
    let body = "<workspace><name>w</name></workspace>";
    for _ in 0..5 {
        let write = format!(
            "POST /geoserver/rest/workspaces HTTP/1.1\r\nHost: maps.example.org\r\n\
             Content-Type: text/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        let answer = raw(proxy, write.as_bytes()).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    }
    let after_writes = accepted();
    assert_eq!(
        after_writes - after_reads,
        5,
        "each write on a connection of its own"
    );
    for _ in 0..5 {
        let answer = get(proxy, "maps.example.org").await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    }
    assert_eq!(
        accepted(),
        after_writes,
        "reads reuse the pooled connections"
    );
}
