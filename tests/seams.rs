//! The cluster's seams hidden: a sick node answering 200 with an OGC exception, replication lag
//! after a publish, read-your-writes, rolling reloads. Simulated GeoServer nodes behind a real
//! geolb.

mod support;

use std::time::Duration;

use geolb::cluster::health::State;
use geolb::sim::Mode;
use support::*;

const GETMAP: &str = "/geoserver/wms?service=WMS&version=1.3.0&request=GetMap&layers=topp:states\
    &styles=&crs=EPSG:4326&bbox=-90,-180,90,180&width=256&height=256&format=image/png";

/// Health checks far apart: what happens here is the data path's doing, not the watchdogs'.
fn quiet_checks() -> Options {
    Options {
        consistency: "",
        interval: "30s",
        timeout: "1s",
        rise: 1,
        fall: 3,
        ..Options::default()
    }
}

fn is_exception(r: &Reply) -> bool {
    let text = r.text();
    text.contains("ExceptionReport") || text.contains("\"exceptions\"")
}

#[tokio::test]
async fn a_sick_nodes_exceptions_never_reach_clients_and_it_is_ejected_naming_them() {
    let h = Harness::start_with(THREE, quiet_checks()).await;
    h.sim("gs-replica-1").set_mode(Mode::Exception);
    let mut exceptions = 0;
    for _ in 0..90 {
        let r = h.get(GETMAP).await;
        assert_eq!(r.status, 200);
        if is_exception(&r) {
            exceptions += 1;
        }
        assert_ne!(
            r.node(),
            "gs-replica-1",
            "the sick node's answer reached the client"
        );
    }
    assert_eq!(exceptions, 0);
    assert_eq!(
        h.state("gs-replica-1"),
        State::Down,
        "ejected by live traffic"
    );
    let status = h.geolb.snapshot();
    let sick = status
        .nodes
        .iter()
        .find(|n| n.name() == "gs-replica-1")
        .unwrap();
    let reason = sick.last_ejection().expect("an ejection").reason.clone();
    assert!(
        reason.starts_with("passive:") && reason.contains("NoApplicableCode"),
        "{reason}"
    );
    let metrics = h.scrape().await;
    assert!(
        metrics.contains(
            "geolb_second_opinions_total{code=\"NoApplicableCode\",node=\"gs-replica-1\",outcome=\"charged\"}"
        ),
        "{metrics}"
    );
    // The healthy nodes were never charged.
    for healthy in ["gs-master", "gs-replica-2"] {
        assert_eq!(h.state(healthy), State::Up);
    }
}

#[tokio::test]
async fn an_exception_from_every_node_is_the_requests_fault_and_ejects_nobody() {
    let h = Harness::start_with(THREE, quiet_checks()).await;
    for node in &h.nodes {
        node.set_mode(Mode::Exception);
    }
    for _ in 0..30 {
        let r = h.get(GETMAP).await;
        assert_eq!(r.status, 200);
        assert!(is_exception(&r), "the exception still reaches the client");
    }
    for node in ["gs-master", "gs-replica-1", "gs-replica-2"] {
        assert_eq!(h.state(node), State::Up, "{node} charged");
    }
    let metrics = h.scrape().await;
    assert!(metrics.contains("outcome=\"everywhere\""), "{metrics}");
    assert!(!metrics.contains("outcome=\"charged\""), "{metrics}");
}

/// Which nodes answered `n` GetMaps sent with `headers`.
async fn readers(h: &Harness, n: usize, headers: &[(&str, &str)]) -> Vec<String> {
    let mut nodes = Vec::new();
    for _ in 0..n {
        let r = h.send(http::Method::GET, GETMAP, headers, "").await;
        assert_eq!(r.status, 200);
        nodes.push(r.node().to_string());
    }
    nodes
}

fn consistency(consistency: &'static str, extra: &'static str) -> Options {
    Options {
        consistency,
        extra,
        ..quiet_checks()
    }
}

#[tokio::test]
async fn after_a_write_its_client_reads_from_the_master_by_cookie_until_it_expires() {
    let h = Harness::start_with(
        THREE,
        consistency("by_address = false\nread_your_writes = \"1s\"\n", ""),
    )
    .await;
    let w = h.write().await;
    assert_eq!((w.status.as_u16(), w.node()), (200, "gs-master"));
    let set = w.header("set-cookie");
    assert!(
        set.starts_with("geolb_rw=")
            && set.contains("Path=/geoserver")
            && set.contains("Max-Age=1"),
        "{set}"
    );
    let cookie = set.split(';').next().unwrap().to_string();
    let pinned = readers(&h, 12, &[("cookie", &cookie)]).await;
    assert!(pinned.iter().all(|n| n == "gs-master"), "{pinned:?}");
    // Everyone else (no cookie; addresses are not looked at here) keeps spreading.
    let others = readers(&h, 30, &[]).await;
    assert!(others.iter().any(|n| n != "gs-master"), "{others:?}");
    let metrics = h.scrape().await;
    assert!(
        metrics.contains("geolb_pinned_reads_total{by=\"cookie\"} 12"),
        "{metrics}"
    );
    // The pin expires: the same cookie's reads spread again.
    wait_for_async("the pin expires", Duration::from_secs(5), || async {
        let r = readers(&h, 6, &[("cookie", &cookie)]).await;
        r.iter().any(|n| n != "gs-master").then_some(())
    })
    .await;
}

#[tokio::test]
async fn after_a_write_its_client_reads_from_the_master_by_address() {
    let h = Harness::start_with(
        THREE,
        consistency(
            "read_your_writes = \"1s\"\n",
            "[forwarding]\ntrusted_proxies = [\"127.0.0.0/8\"]\n",
        ),
    )
    .await;
    let writer = [("x-forwarded-for", "198.51.100.1")];
    let w = h
        .send(
            http::Method::DELETE,
            "/geoserver/rest/layers/topp:roads",
            &writer,
            "",
        )
        .await;
    assert_eq!((w.status.as_u16(), w.node()), (200, "gs-master"));
    // No cookie sent back: known by its address.
    let pinned = readers(&h, 12, &writer).await;
    assert!(pinned.iter().all(|n| n == "gs-master"), "{pinned:?}");
    let others = readers(&h, 30, &[("x-forwarded-for", "198.51.100.2")]).await;
    assert!(others.iter().any(|n| n != "gs-master"), "{others:?}");
    let metrics = h.scrape().await;
    assert!(
        metrics.contains("geolb_pinned_reads_total{by=\"address\"} 12"),
        "{metrics}"
    );
    wait_for_async("the pin expires", Duration::from_secs(5), || async {
        let r = readers(&h, 6, &writer).await;
        r.iter().any(|n| n != "gs-master").then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_failed_write_pins_nobody() {
    let h = Harness::start_with(THREE, quiet_checks()).await;
    h.sim("gs-master").set_mode(Mode::Exception);
    let w = h.write().await;
    assert!(is_exception(&w));
    assert_eq!(w.header("set-cookie"), "");
    h.sim("gs-master").set_mode(Mode::Healthy);
    let after = readers(&h, 30, &[]).await;
    assert!(after.iter().any(|n| n != "gs-master"), "{after:?}");
}
