//! Steering the cluster through the admin API: drain, disable, enable, promote, check, the token.

mod support;

use std::time::Duration;

use bytes::Bytes;
use geolb::cluster::health::State;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use support::*;

const GETMAP: &str = "/geoserver/wms?request=GetMap";
const CANDIDATES: &[NodeDef] = &[
    node("gs-master", Some(1)),
    node("gs-backup", Some(2)),
    node("gs-replica", None),
];

async fn admin(h: &Harness, method: Method, path: &str, token: Option<&str>) -> Reply {
    h.admin(method, path, token).await
}

async fn act(h: &Harness, node: &str, action: &str) -> Reply {
    admin(h, Method::POST, &format!("/nodes/{node}/{action}"), None).await
}

fn no_slow_start() -> Options {
    Options {
        routing: "slow_start = \"0s\"",
        ..Options::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_lets_in_flight_finish_and_sends_nothing_new_until_enabled() {
    let h = Harness::start_with(
        &[node("gs-a", Some(1)), node("gs-b", Some(2))],
        no_slow_start(),
    )
    .await;
    // A slow read in flight on gs-a (round robin would not guarantee it: retry until it lands there).
    let a = h.geolb.snapshot().nodes[0].clone();
    let slow = loop {
        let (client, url) = (h.client.clone(), h.url("/geoserver/www/__sim/slow?ms=800"));
        let task = tokio::spawn(async move {
            let req = Request::get(url)
                .body(Full::new(Bytes::new()).boxed())
                .unwrap();
            send(&client, req).await
        });
        wait_for("the slow read is in flight", Duration::from_secs(5), || {
            h.geolb.snapshot().nodes.iter().any(|n| n.in_flight() == 1)
        })
        .await;
        if a.in_flight() == 1 {
            break task;
        }
        task.await.unwrap();
    };
    let r = act(&h, "gs-a", "drain").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(v["mode"], "draining");
    h.sim("gs-a").reset_counters();
    for _ in 0..20 {
        assert_eq!(h.get(GETMAP).await.node(), "gs-b");
    }
    assert_eq!(
        h.write().await.node(),
        "gs-b",
        "a drained master hands the writes over"
    );
    let done = slow.await.unwrap();
    assert_eq!(
        (done.status, done.node()),
        (StatusCode::OK, "gs-a"),
        "the in-flight request completed"
    );
    assert_eq!(
        h.sim("gs-a").hits(),
        0,
        "no new request reached the drained node"
    );
    let status: serde_json::Value =
        serde_json::from_slice(&admin(&h, Method::GET, "/status", None).await.body).unwrap();
    assert_eq!(status["nodes"][0]["mode"], "draining");
    assert_eq!(status["nodes"][0]["drained"], true);

    assert_eq!(act(&h, "gs-a", "enable").await.status, StatusCode::OK);
    wait_for_async("gs-a serves again", Duration::from_secs(5), || async {
        (h.get(GETMAP).await.node() == "gs-a").then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disabled_candidate_gets_no_traffic_and_no_failover() {
    let h = Harness::start_with(CANDIDATES, no_slow_start()).await;
    assert_eq!(act(&h, "gs-backup", "disable").await.status, StatusCode::OK);
    for _ in 0..30 {
        assert_ne!(h.get(GETMAP).await.node(), "gs-backup");
    }
    h.sim("gs-master").kill().await;
    h.wait_state("gs-master", State::Down, Duration::from_secs(5))
        .await;
    assert_eq!(h.master(), None, "no failover to a node in maintenance");
    assert_eq!(h.write().await.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(act(&h, "gs-backup", "enable").await.status, StatusCode::OK);
    assert_eq!(
        h.master().as_deref(),
        Some("gs-backup"),
        "enabled: it takes over at once"
    );
    assert_eq!(h.write().await.node(), "gs-backup");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promote_moves_writes_at_once_and_holds_the_role() {
    let opts = Options {
        routing: "failback = \"priority\"",
        ..Options::default()
    };
    let h = Harness::start_with(CANDIDATES, opts).await;
    assert_eq!(h.write().await.node(), "gs-master");
    let r = act(&h, "gs-backup", "promote").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(v["master"], "gs-backup");
    for _ in 0..10 {
        assert_eq!(
            h.write().await.node(),
            "gs-backup",
            "even with failback = priority"
        );
    }
    let r = act(&h, "gs-replica", "promote").await;
    assert_eq!(
        r.status,
        StatusCode::CONFLICT,
        "not a candidate: {}",
        r.text()
    );
    assert_eq!(
        act(&h, "gs-nobody", "promote").await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        act(&h, "gs-master", "dance").await.status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_probes_at_once() {
    let h = Harness::start_with(
        THREE,
        Options {
            interval: "30s",
            timeout: "1s",
            ..Options::default()
        },
    )
    .await;
    let node = h.sim("gs-replica-1");
    let before = node.probes();
    assert_eq!(
        act(&h, "gs-replica-1", "check").await.status,
        StatusCode::OK
    );
    wait_for("an immediate probe", Duration::from_secs(3), || {
        node.probes() > before
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutating_calls_need_the_token() {
    let h = Harness::start_with(
        THREE,
        Options {
            admin_token: Some("s3cret-token"),
            ..Options::default()
        },
    )
    .await;
    let r = admin(&h, Method::POST, "/nodes/gs-replica-1/drain", None).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(r.header("www-authenticate"), "Bearer");
    let r = admin(&h, Method::POST, "/nodes/gs-replica-1/drain", Some("wrong")).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        h.geolb.snapshot().modes[1],
        geolb::cluster::Mode::Active,
        "nothing changed"
    );
    let r = admin(
        &h,
        Method::POST,
        "/nodes/gs-replica-1/drain",
        Some("s3cret-token"),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(h.geolb.snapshot().modes[1], geolb::cluster::Mode::Draining);
    // Reading needs no token.
    assert_eq!(
        admin(&h, Method::GET, "/status", None).await.status,
        StatusCode::OK
    );
    assert_eq!(
        admin(&h, Method::GET, "/metrics", None).await.status,
        StatusCode::OK
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_page_is_served_self_contained() {
    let h = Harness::start(THREE).await;
    let r = admin(&h, Method::GET, "/", None).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.header("content-type").starts_with("text/html"));
    let page = r.text();
    assert!(page.contains("fetch(\"/status\""));
    for external in ["http://", "https://", "src=\"//"] {
        assert!(
            !page.contains(external),
            "no external assets: found {external}"
        );
    }
}
