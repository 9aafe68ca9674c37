//! The cluster's seams hidden: a sick node answering 200 with an OGC exception, replication lag
//! after a publish, read-your-writes, rolling reloads. Simulated GeoServer nodes behind a real
//! geolb.

mod support;

use std::time::Duration;

use geolb::cluster::health::State;
use geolb::sim::{Catalog, Mode};
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
    let reason = h.ejection_reason("gs-replica-1");
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
async fn a_pinned_client_reads_from_the_replicas_while_there_is_no_master() {
    let h = Harness::start_with(THREE, consistency("read_your_writes = \"30s\"\n", "")).await;
    let w = h.write().await;
    assert_eq!((w.status.as_u16(), w.node()), (200, "gs-master"));
    assert!(readers(&h, 6, &[]).await.iter().all(|n| n == "gs-master"));
    // The master goes away (its port closed: the first refusal ejects it; checks are 30 s apart).
    h.sim("gs-master").kill().await;
    let _ = h.get(GETMAP).await;
    h.wait_state("gs-master", State::Down, Duration::from_secs(5))
        .await;
    assert_eq!(h.master(), None, "the master pool is empty");
    // Still pinned, but no master to read the write back from: its reads are served, not 503.
    let nodes = readers(&h, 12, &[]).await;
    assert!(nodes.iter().all(|n| n != "gs-master"), "{nodes:?}");
    let writes = h.write().await;
    assert_eq!(writes.status, 503, "writes still wait for a master");
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

// --- A simulated cluster sharing one catalog: the master knows a layer at once, the replicas
// after their lag.

/// Long enough that no replica learns anything while a test runs.
const LAG: Duration = Duration::from_secs(30);

fn getmap(layer: &str) -> String {
    GETMAP.replace("topp:states", layer)
}

fn getfeature(layer: &str) -> String {
    format!(
        "/geoserver/wfs?service=WFS&version=2.0.0&request=GetFeature&typeNames={layer}\
         &outputFormat=application/json&count=10"
    )
}

/// Publishes `topp:{name}` through geolb, as a publishing script would (REST, to the master).
async fn publish(h: &Harness, name: &str) {
    let body = format!("<featureType><name>{name}</name></featureType>");
    let path = "/geoserver/rest/workspaces/topp/datastores/shapes/featuretypes";
    let r = h
        .send(
            http::Method::POST,
            path,
            &[("content-type", "text/xml")],
            body,
        )
        .await;
    assert_eq!(
        (r.status.as_u16(), r.node()),
        (201, "gs-master"),
        "{}",
        r.text()
    );
}

/// A master and two replicas sharing a catalog that holds `topp:states`.
async fn lagging_cluster(opts: Options, lag: Duration) -> Harness {
    let catalog = Catalog::with_layers(&["topp:states"]);
    let lags = [Duration::ZERO, lag, lag];
    Harness::start_cluster(THREE, opts, &catalog, &lags).await
}

fn no_pins() -> Options {
    consistency("read_your_writes = \"0s\"\n", "")
}

#[tokio::test]
async fn publish_then_read_at_once_on_lagging_replicas_reaches_no_exception() {
    let h = lagging_cluster(no_pins(), LAG).await;
    let mut answered = std::collections::BTreeMap::<String, usize>::new();
    for i in 0..15 {
        let layer = format!("roads_{i}");
        publish(&h, &layer).await;
        let name = format!("topp:{layer}");
        for target in [
            getmap(&name),
            getmap(&name),
            getmap(&name),
            getfeature(&name),
        ] {
            let r = h.get(&target).await;
            assert_eq!(r.status, 200, "{target}: {}", r.text());
            assert!(!is_exception(&r), "{target}: {}", r.text());
            *answered.entry(r.node().to_string()).or_default() += 1;
        }
    }
    // The replicas do not know the new layers: the master answered every read of them.
    assert_eq!(answered.get("gs-master"), Some(&60), "{answered:?}");
    for replica in ["gs-replica-1", "gs-replica-2"] {
        assert!(!h.sim(replica).knows("topp:roads_0"));
        assert!(
            h.sim(replica).exceptions_sent() > 0,
            "{replica} never asked"
        );
    }
    // Replication lag is nobody's fault: every node is still up, and known layers still spread.
    for node in ["gs-master", "gs-replica-1", "gs-replica-2"] {
        assert_eq!(h.state(node), State::Up, "{node} charged for lag");
    }
    let spread = readers(&h, 30, &[]).await;
    for node in ["gs-master", "gs-replica-1", "gs-replica-2"] {
        assert!(spread.iter().any(|n| n == node), "{node} idle: {spread:?}");
    }
    let metrics = h.scrape().await;
    assert!(metrics.contains("outcome=\"lag\""), "{metrics}");
    assert!(!metrics.contains("outcome=\"charged\""), "{metrics}");
    let status = h.geolb.snapshot();
    let lagged: u64 = status.nodes.iter().map(|n| n.lag_count()).sum();
    let asked: u64 = ["gs-replica-1", "gs-replica-2"]
        .iter()
        .map(|r| h.sim(r).exceptions_sent())
        .sum();
    assert_eq!(lagged, asked, "every replica's 'not known' counted as lag");
}

#[tokio::test]
async fn publish_then_read_with_read_your_writes_reads_the_master() {
    // The defaults: the publisher's reads (known by its address) go to the master for 5 s.
    let h = lagging_cluster(consistency("", ""), LAG).await;
    for i in 0..5 {
        let layer = format!("rivers_{i}");
        publish(&h, &layer).await;
        for target in [
            getmap(&format!("topp:{layer}")),
            getfeature(&format!("topp:{layer}")),
        ] {
            let r = h.get(&target).await;
            assert_eq!(
                (r.status.as_u16(), r.node()),
                (200, "gs-master"),
                "{}",
                r.text()
            );
            assert!(!is_exception(&r), "{}", r.text());
        }
    }
    // Pinned, not second opinions: the replicas were never asked.
    for replica in ["gs-replica-1", "gs-replica-2"] {
        assert_eq!(h.sim(replica).exceptions_sent(), 0);
    }
    let metrics = h.scrape().await;
    assert!(
        metrics.contains("geolb_pinned_reads_total{by=\"address\"} 10"),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_replica_deaf_to_the_broker_is_ejected_naming_why() {
    let h = lagging_cluster(
        consistency("read_your_writes = \"0s\"\ndeaf_after = \"300ms\"\n", ""),
        Duration::ZERO,
    )
    .await;
    h.sim("gs-replica-1").set_deaf(true);
    publish(&h, "lakes").await;
    assert!(h.sim("gs-replica-2").knows("topp:lakes"));
    let target = getmap("topp:lakes");
    wait_for_async(
        "the deaf replica ejected",
        Duration::from_secs(15),
        || async {
            let r = h.get(&target).await;
            assert_eq!(r.status, 200);
            assert!(!is_exception(&r), "{}", r.text());
            (h.state("gs-replica-1") == State::Down).then_some(())
        },
    )
    .await;
    let reason = h.ejection_reason("gs-replica-1");
    assert!(
        reason.contains("deaf to the broker") && reason.contains("LayerNotDefined"),
        "{reason}"
    );
    assert_eq!(
        h.state("gs-replica-2"),
        State::Up,
        "a listening replica charged"
    );
    let metrics = h.scrape().await;
    assert!(
        metrics.contains(
            "geolb_second_opinions_total{code=\"LayerNotDefined\",node=\"gs-replica-1\",outcome=\"deaf\"}"
        ),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_layer_known_nowhere_still_returns_its_exception_and_ejects_nobody() {
    let h = lagging_cluster(no_pins(), LAG).await;
    for i in 0..60 {
        let (target, expect) = if i % 2 == 0 {
            (getmap("topp:nowhere"), "LayerNotDefined")
        } else {
            (getfeature("topp:nowhere"), "InvalidParameterValue")
        };
        let r = h.get(&target).await;
        assert!(is_exception(&r), "{}", r.text());
        assert!(r.text().contains(expect), "{}", r.text());
        // The master was asked, and its answer stands (WFS 2.0 says 400, like GeoServer).
        assert_eq!(r.node(), "gs-master");
        let status = if i % 2 == 0 { 200 } else { 400 };
        assert_eq!(r.status, status);
    }
    for node in ["gs-master", "gs-replica-1", "gs-replica-2"] {
        assert_eq!(h.state(node), State::Up, "{node} charged");
    }
    let metrics = h.scrape().await;
    assert!(!metrics.contains("outcome=\"charged\""), "{metrics}");
    assert!(!metrics.contains("outcome=\"deaf\""), "{metrics}");
}

// --- Rolling catalog reload.

const TOKEN: &str = "s3cret-token";

/// Options with an admin token and GeoServer credentials in a password file.
fn reloadable(test: &str, extra: &str) -> Options {
    let file = std::env::temp_dir().join(format!("geolb-{test}-{}.pw", std::process::id()));
    std::fs::write(&file, "geoserver-pw\n").unwrap();
    let extra = format!(
        "[catalog_reload]\nuser = \"admin\"\npassword_file = \"{}\"\n{extra}",
        file.display()
    );
    Options {
        admin_token: Some(TOKEN),
        extra: Box::leak(extra.into_boxed_str()),
        ..Options::default()
    }
}

/// The rolling reload's progress once it is over (`done` or `failed`).
async fn reload_outcome(h: &Harness) -> serde_json::Value {
    wait_for_async(
        "the rolling reload ends",
        Duration::from_secs(30),
        || async {
            let r = h.admin(http::Method::GET, "/cluster/reload", None).await;
            let progress: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
            (progress["state"] != "running").then_some(progress)
        },
    )
    .await
}

fn step<'a>(progress: &'a serde_json::Value, node: &str) -> &'a str {
    let nodes = progress["nodes"].as_array().unwrap();
    let step = nodes.iter().find(|s| s["node"] == node).unwrap();
    step["step"].as_str().unwrap()
}

#[tokio::test]
async fn a_rolling_reload_needs_a_token() {
    let h = Harness::start(THREE).await;
    let r = h.admin(http::Method::POST, "/cluster/reload", None).await;
    assert_eq!(r.status, 403, "{}", r.text());
    assert!(r.text().contains("admin.token"), "{}", r.text());
    let h = Harness::start_with(THREE, reloadable("token", "")).await;
    let r = h
        .admin(http::Method::POST, "/cluster/reload", Some("wrong"))
        .await;
    assert_eq!(r.status, 401);
    assert!(h
        .nodes
        .iter()
        .all(|n| n.reloads() == 0 && n.last_reload_auth().is_none()));
    // The right token, but GeoServer refuses geolb's credentials (the simulated nodes keep
    // their default admin/geoserver): the first node's step fails naming the 401, and the
    // reload stops there.
    let r = h
        .admin(http::Method::POST, "/cluster/reload", Some(TOKEN))
        .await;
    assert_eq!(r.status, 202, "{}", r.text());
    let progress = reload_outcome(&h).await;
    assert_eq!(progress["state"], "failed", "{progress}");
    assert!(
        progress["error"].as_str().unwrap().contains("401"),
        "{progress}"
    );
    assert_eq!(h.sim("gs-replica-1").reload_rejections(), 1);
    assert_eq!(
        h.sim("gs-replica-2").reload_rejections(),
        0,
        "the rest untouched"
    );
    assert!(h.nodes.iter().all(|n| n.reloads() == 0));
}

#[tokio::test]
async fn a_rolling_reload_under_read_load_fails_no_request() {
    let h = Harness::start_with(THREE, reloadable("rolling", "")).await;
    for node in &h.nodes {
        node.set_credentials("admin", "geoserver-pw");
        node.set_reload_time(Duration::from_millis(500));
    }
    let load = Load::start(&h, GETMAP, 4, 200_000);
    wait_for("reads flow", Duration::from_secs(5), || load.count() > 50).await;
    let r = h
        .admin(http::Method::POST, "/cluster/reload", Some(TOKEN))
        .await;
    assert_eq!(r.status, 202, "{}", r.text());
    let r = h
        .admin(http::Method::POST, "/cluster/reload", Some(TOKEN))
        .await;
    assert_eq!(r.status, 409, "one at a time: {}", r.text());
    let progress = reload_outcome(&h).await;
    let during = load.count();
    wait_for("reads after the reload", Duration::from_secs(5), || {
        load.count() > during + 50
    })
    .await;
    let samples = load.stop().await;
    assert_eq!(progress["state"], "done", "{progress}");
    assert_eq!(step(&progress, "gs-replica-1"), "done");
    assert_eq!(step(&progress, "gs-replica-2"), "done");
    assert_eq!(
        step(&progress, "gs-master"),
        "skipped",
        "a master candidate"
    );
    let failed: Vec<_> = samples.iter().filter(|s| s.status != 200).collect();
    assert!(
        failed.is_empty(),
        "{} of {} failed: {:?}",
        failed.len(),
        samples.len(),
        &failed[..failed.len().min(5)]
    );
    // Each replica reloaded once, with the configured credentials; the master not at all.
    let basic = "Basic YWRtaW46Z2Vvc2VydmVyLXB3"; // admin:geoserver-pw
    for replica in ["gs-replica-1", "gs-replica-2"] {
        assert_eq!(h.sim(replica).reloads(), 1, "{replica}");
        assert_eq!(h.sim(replica).last_reload_auth().as_deref(), Some(basic));
    }
    assert_eq!(h.sim("gs-master").reloads(), 0);
    // Both replicas are back in the pool, and serve reads again.
    let tail = &samples[samples.len() - 40..];
    for replica in ["gs-replica-1", "gs-replica-2"] {
        assert_eq!(h.state(replica), State::Up);
        assert!(
            tail.iter().any(|s| s.node == replica),
            "{replica} not re-admitted"
        );
    }
    let metrics = h.scrape().await;
    assert!(
        metrics.contains("geolb_catalog_reload_nodes_total{result=\"reloaded\"} 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains("geolb_catalog_reload_running 0"),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_node_that_does_not_come_back_stops_the_rolling_reload() {
    let h = Harness::start_with(THREE, reloadable("stuck", "timeout = \"2s\"\n")).await;
    for node in &h.nodes {
        node.set_credentials("admin", "geoserver-pw");
    }
    let load = Load::start(&h, GETMAP, 4, 200_000);
    // gs-replica-1 (the first in the plan) breaks in its reload.
    let sick = h.sim("gs-replica-1").clone();
    let breaker = tokio::spawn(async move {
        wait_for(
            "the reload reaches gs-replica-1",
            Duration::from_secs(20),
            || sick.reloads() > 0,
        )
        .await;
        sick.set_mode(Mode::Fail);
    });
    let r = h
        .admin(http::Method::POST, "/cluster/reload", Some(TOKEN))
        .await;
    assert_eq!(r.status, 202, "{}", r.text());
    let progress = reload_outcome(&h).await;
    breaker.await.unwrap();
    let samples = load.stop().await;
    assert_eq!(progress["state"], "failed", "{progress}");
    assert_eq!(step(&progress, "gs-replica-1"), "failed");
    assert_eq!(
        step(&progress, "gs-replica-2"),
        "pending",
        "the rest untouched"
    );
    let error = progress["error"].as_str().unwrap();
    assert!(
        error.contains("gs-replica-1") && error.contains("left drained"),
        "{error}"
    );
    assert_eq!(h.sim("gs-replica-2").reloads(), 0);
    let snapshot = h.geolb.snapshot();
    let i = snapshot
        .nodes
        .iter()
        .position(|n| n.name() == "gs-replica-1")
        .unwrap();
    assert_eq!(
        snapshot.modes[i],
        geolb::cluster::Mode::Draining,
        "left drained"
    );
    let failed = samples.iter().filter(|s| s.status != 200).count();
    assert_eq!(failed, 0, "of {}", samples.len());
    let status = h.admin(http::Method::GET, "/status", None).await;
    assert!(
        status.text().contains("\"catalog_reload\""),
        "{}",
        status.text()
    );
    let metrics = h.scrape().await;
    assert!(
        metrics.contains("geolb_catalog_reload_nodes_total{result=\"failed\"} 1"),
        "{metrics}"
    );
}
