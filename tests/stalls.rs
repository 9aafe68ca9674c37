//! A frozen JVM, a killed node, a uniformly slow cluster and one slow node: stall detection,
//! hedged reads and latency-aware picking, on simulated nodes. The assertions are on outcomes
//! (who answered, how many attempts the nodes received, what the metrics counted), with bounds on
//! time far from what the mechanisms need (a 2 s freeze, answers well under a second).

mod support;

use std::time::Duration;

use geolb::cluster::health::State;
use http_body_util::BodyExt;
use support::*;

const GETMAP: &str = "/geoserver/wms?service=WMS&request=GetMap&layers=topp:states";
const FREEZE: Duration = Duration::from_secs(2);

/// Checks slow enough that a 2 s freeze is not an ejection: stall detection must do the work.
fn patient_checks() -> Options {
    Options {
        interval: "1s",
        timeout: "500ms",
        ..Options::default()
    }
}

/// The value of the sample whose name and labels are `series` (0 when absent).
fn sample(metrics: &str, series: &str) -> f64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0.0)
}

fn hits(h: &Harness) -> u64 {
    h.nodes.iter().map(|n| n.hits()).sum()
}

fn stalled(h: &Harness, name: &str) -> bool {
    let snapshot = h.geolb.snapshot();
    snapshot
        .nodes
        .iter()
        .any(|n| n.name() == name && n.is_stalled())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_node_under_load_is_found_stalled_and_its_reads_answered_by_others() {
    let h = Harness::start_with(THREE, patient_checks()).await;
    let load = Load::start(&h, GETMAP, 4, 1_000_000);
    wait_for("the load warms up", Duration::from_secs(10), || {
        load.count() > 300
    })
    .await;
    let frozen = h.sim("gs-replica-1");
    frozen.freeze(FREEZE);
    wait_for(
        "the frozen node found stalled",
        Duration::from_secs(2),
        || stalled(&h, "gs-replica-1"),
    )
    .await;
    let status = h.admin(http::Method::GET, "/status", None).await;
    let status: serde_json::Value = serde_json::from_slice(&status.body).unwrap();
    let node = &status["nodes"][1];
    assert_eq!(
        (&node["name"], &node["stalled"]),
        (&"gs-replica-1".into(), &true.into())
    );
    assert!(node["latency_ms"].as_f64().is_some() && node["pace"].as_f64().is_some());
    let during = load.count();
    wait_for("the freeze ends", Duration::from_secs(5), || {
        !frozen.is_frozen()
    })
    .await;
    assert!(load.count() > during + 100, "the others kept answering");
    wait_for(
        "the node answers again and takes reads",
        Duration::from_secs(5),
        || !stalled(&h, "gs-replica-1"),
    )
    .await;
    let resumed = frozen.hits();
    wait_for("reads reach it again", Duration::from_secs(5), || {
        frozen.hits() > resumed + 10
    })
    .await;
    let samples = load.stop().await;
    let failed = samples.iter().filter(|s| s.status != 200).count();
    assert_eq!(failed, 0, "of {}", samples.len());
    let slowest = samples.iter().map(|s| s.took).max().unwrap();
    assert!(
        slowest < FREEZE / 2,
        "no read waited for the freeze: the slowest took {slowest:?}"
    );
    assert_eq!(h.state("gs-replica-1"), State::Up, "stalled, not ejected");
    let metrics = h.scrape().await;
    assert!(sample(&metrics, "geolb_stalls_total{node=\"gs-replica-1\"}") >= 1.0);
    let won = sample(
        &metrics,
        "geolb_extra_attempts_total{kind=\"hedge\",result=\"won\"}",
    );
    assert!(won >= 1.0, "the reads waiting on it were hedged: {metrics}");
    assert_eq!(
        sample(&metrics, "geolb_node_stalled{node=\"gs-replica-1\"}"),
        0.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_killed_under_load_and_restarted_fails_no_read() {
    let h = Harness::start_with(THREE, patient_checks()).await;
    let load = Load::start(&h, GETMAP, 4, 1_000_000);
    wait_for("the load warms up", Duration::from_secs(10), || {
        load.count() > 200
    })
    .await;
    let killed = h.sim("gs-replica-2");
    killed.kill().await;
    h.wait_state("gs-replica-2", State::Down, Duration::from_secs(10))
        .await;
    killed.restart().await.unwrap();
    h.wait_state("gs-replica-2", State::Up, Duration::from_secs(10))
        .await;
    let back = killed.hits();
    wait_for("reads reach it again", Duration::from_secs(5), || {
        killed.hits() > back + 10
    })
    .await;
    let samples = load.stop().await;
    let failed = samples.iter().filter(|s| s.status != 200).count();
    assert_eq!(failed, 0, "of {}", samples.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_uniformly_slow_cluster_is_not_sent_extra_work() {
    let h = Harness::start_with(THREE, patient_checks()).await;
    for node in &h.nodes {
        node.set_delay(Duration::from_millis(300));
    }
    h.nodes.iter().for_each(|n| n.reset_counters());
    let load = Load::start(&h, GETMAP, 4, 40);
    wait_for("40 reads answered", Duration::from_secs(30), || {
        load.count() >= 40
    })
    .await;
    let samples = load.stop().await;
    assert!(samples.iter().all(|s| s.status == 200));
    let received = hits(&h);
    let sent = samples.len() as u64;
    assert!(
        received <= sent + sent / 10,
        "the nodes received {received} requests for {sent} reads"
    );
    let metrics = h.scrape().await;
    let hedges = sample(
        &metrics,
        "geolb_extra_attempts_total{kind=\"hedge\",result=\"sent\"}",
    );
    assert!(hedges <= (sent / 10) as f64, "{hedges} hedges");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_ten_times_slower_than_its_peers_is_avoided() {
    let h = Harness::start_with(THREE, patient_checks()).await;
    for node in &h.nodes {
        node.set_delay(Duration::from_millis(10));
    }
    let slow = h.sim("gs-replica-2");
    slow.set_delay(Duration::from_millis(100));
    let load = Load::start(&h, GETMAP, 4, 1_000_000);
    // Its pace is learnt from the first reads it is sent.
    wait_for("100 reads answered", Duration::from_secs(30), || {
        load.count() >= 100
    })
    .await;
    h.nodes.iter().for_each(|n| n.reset_counters());
    let learnt = load.count();
    wait_for("600 more reads answered", Duration::from_secs(60), || {
        load.count() >= learnt + 600
    })
    .await;
    let samples = load.stop().await;
    assert!(samples.iter().all(|s| s.status == 200));
    // What it is sent, not only what it answers: a read sent there and hedged away has waited
    // for the hedge delay, which is what would raise the pool's p99.
    let (to_slow, all) = (slow.hits(), hits(&h));
    assert!(
        to_slow * 100 < all,
        "the slow node was sent {to_slow} of the {all} reads the nodes received"
    );
    let late = &samples[learnt..];
    for fast in ["gs-master", "gs-replica-1"] {
        assert!(late.iter().filter(|s| s.node == fast).count() > late.len() / 4);
    }
    // Slow, not frozen: it answers the check its beaten reads trigger, so it is never stalled.
    let metrics = h.scrape().await;
    assert_eq!(
        sample(&metrics, "geolb_stalls_total{node=\"gs-replica-2\"}"),
        0.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_and_pinned_reads_wait_for_the_master_and_are_never_hedged() {
    let opts = Options {
        consistency: "read_your_writes = \"30s\"\n",
        ..patient_checks()
    };
    let h = Harness::start_with(THREE, opts).await;
    // A write, then the writer's read, each while the master is frozen: both wait for it.
    let master = h.sim("gs-master");
    master.freeze(Duration::from_millis(800));
    let w = h.write().await;
    assert_eq!((w.status.as_u16(), w.node()), (200, "gs-master"));
    master.freeze(Duration::from_millis(800));
    let r = h.get(GETMAP).await;
    assert_eq!((r.status.as_u16(), r.node()), (200, "gs-master"), "pinned");
    let metrics = h.scrape().await;
    assert_eq!(
        sample(
            &metrics,
            "geolb_extra_attempts_total{kind=\"hedge\",result=\"sent\"}"
        ),
        0.0
    );
    assert!(sample(&metrics, "geolb_pinned_reads_total{by=\"address\"}") >= 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_streaming_when_its_node_freezes_is_counted_not_hedged() {
    let h = Harness::start_with(THREE, patient_checks()).await;
    // A big answer whose head reached the client, its body left unread.
    let req = http::Request::get(h.url("/geoserver/www/__sim/blob?bytes=67108864&seed=1"))
        .body(http_body_util::Full::new(bytes::Bytes::new()).boxed())
        .unwrap();
    let streaming = h.client.request(req).await.unwrap();
    let node = streaming.headers()["x-node"].to_str().unwrap().to_string();
    let frozen = h.sim(&node);
    let load = Load::start(&h, GETMAP, 4, 1_000_000);
    wait_for("the load warms up", Duration::from_secs(10), || {
        load.count() > 200
    })
    .await;
    frozen.freeze(FREEZE);
    wait_for("the node found stalled", Duration::from_secs(2), || {
        stalled(&h, &node)
    })
    .await;
    let metrics = h.scrape().await;
    let series = format!("geolb_unhedgeable_answers_total{{node=\"{node}\"}}");
    assert!(sample(&metrics, &series) >= 1.0, "{metrics}");
    frozen.thaw();
    let samples = load.stop().await;
    assert!(samples.iter().all(|s| s.status == 200));
    // The streaming answer resumes after the thaw, whole.
    let body = streaming.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body.len(), 67_108_864);
}
