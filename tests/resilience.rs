//! Never lose a request: retries on another node, passive ejection, the retry budget, per-node caps
//! and the queue, timeouts, slow start.

mod support;

use std::time::{Duration, Instant};

use bytes::Bytes;
use geolb::cluster::health::State;
use geolb::sim::Mode;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use support::*;

const GETMAP: &str = "/geoserver/wms?service=WMS&request=GetMap&layers=topp:states";

fn share(samples: &[Sample], node: &str) -> f64 {
    samples.iter().filter(|s| s.node == node).count() as f64 / samples.len().max(1) as f64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_read_fails_while_a_node_dies_and_comes_back_slowly() {
    let opts = Options {
        routing: "slow_start = \"3s\"",
        ..Options::default()
    };
    let h = Harness::start_with(THREE, opts).await;
    let victim = h.sim("gs-replica-1");
    let load = Load::start(&h, GETMAP, 4, 200_000);
    wait_for("some traffic", Duration::from_secs(5), || {
        load.count() > 200
    })
    .await;

    victim.kill().await;
    h.wait_state("gs-replica-1", State::Down, Duration::from_secs(5))
        .await;
    victim.restart().await.unwrap();
    victim.reset_counters();
    // Alive again but not re-admitted yet (it needs `rise` passes): it gets no reads. Hits read
    // before a look that still finds it down all came while it was down.
    let mut hits_while_down = 0;
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let hits = victim.hits();
        if h.state("gs-replica-1") != State::Down {
            break;
        }
        hits_while_down = hits;
        assert!(Instant::now() < deadline, "never re-admitted");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let admitted = Instant::now();
    let ramp_checked = admitted + Duration::from_secs(4);
    wait_for("the slow start ran", Duration::from_secs(10), || {
        Instant::now() > ramp_checked
    })
    .await;
    let samples = load.stop().await;

    let failed: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.status != StatusCode::OK)
        .collect();
    assert!(
        failed.is_empty(),
        "{} of {} reads failed, e.g. {:?}",
        failed.len(),
        samples.len(),
        failed.first()
    );
    assert_eq!(hits_while_down, 0, "a node that is down gets no reads");
    // Slow start: its share right after re-admission is well below its share once warm.
    let window = |from: Duration, to: Duration| -> Vec<Sample> {
        samples
            .iter()
            .filter(|s| s.at >= admitted + from && s.at < admitted + to)
            .cloned()
            .collect()
    };
    let early = share(
        &window(Duration::ZERO, Duration::from_millis(600)),
        "gs-replica-1",
    );
    let warm = share(
        &window(Duration::from_millis(3200), Duration::from_secs(4)),
        "gs-replica-1",
    );
    assert!(warm > 0.2, "warm share {warm:.2}");
    assert!(
        early < warm / 2.0,
        "share ramps up: early {early:.3}, warm {warm:.3}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_answering_503_is_ejected_passively_before_its_next_check() {
    let opts = Options {
        interval: "20s",
        timeout: "1s",
        extra: "[passive]\nconsecutive_failures = 3\n",
        ..Options::default()
    };
    let h = Harness::start_with(THREE, opts).await;
    let started = Instant::now();
    h.sim("gs-replica-2").set_mode(Mode::Fail);
    let mut statuses = Vec::new();
    while h.state("gs-replica-2") == State::Up {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "not ejected passively"
        );
        statuses.push(h.get(GETMAP).await.status);
    }
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "ejected before the next active check"
    );
    assert!(
        statuses.iter().all(|s| *s == StatusCode::OK),
        "503s were retried on other nodes: {statuses:?}"
    );
    let last_check = h.geolb.snapshot().nodes[2].last_check().unwrap();
    assert!(
        last_check.ok,
        "the active check did not see it: the passive path did"
    );
    for _ in 0..20 {
        assert_ne!(h.get(GETMAP).await.node(), "gs-replica-2");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passive_ejection_never_empties_the_pool() {
    let opts = Options {
        interval: "20s",
        timeout: "1s",
        extra: "[passive]\nconsecutive_failures = 2\nmax_ejected_percent = 50\n",
        ..Options::default()
    };
    let h = Harness::start_with(THREE, opts).await;
    for n in &h.nodes {
        n.set_mode(Mode::Fail);
    }
    for _ in 0..60 {
        h.get(GETMAP).await;
    }
    let down = h
        .nodes
        .iter()
        .filter(|n| h.state(n.name()) == State::Down)
        .count();
    assert_eq!(down, 1, "at most 50 % of three nodes is one node");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_storm_is_capped_by_the_budget() {
    let opts = Options {
        interval: "20s",
        timeout: "1s",
        extra: "[passive]\nconsecutive_failures = 0\n[retries]\nmax = 2\nbudget_percent = 20\nbudget_min_per_second = 1\nbudget_window = \"10s\"\n",
        ..Options::default()
    };
    let h = Harness::start_with(THREE, opts).await;
    for n in &h.nodes {
        n.set_mode(Mode::Fail);
        n.reset_counters();
    }
    const N: u64 = 200;
    for _ in 0..N {
        let r = h.get(GETMAP).await;
        assert_eq!(
            r.status,
            StatusCode::SERVICE_UNAVAILABLE,
            "the node's own 503 comes through"
        );
    }
    let attempts: u64 = h.nodes.iter().map(|n| n.hits()).sum();
    let retries = attempts - N;
    // Without a budget: 2 retries each, 400. With it: 20 % of 200 plus the 1/s reserve of 10 s.
    assert!(retries > 0, "some reads were retried");
    assert!(
        retries <= N / 5 + 10 + 2,
        "{retries} retries for {N} requests exceed the budget"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_third_request_waits_for_a_slot_and_one_waiting_too_long_gets_503() {
    let opts = Options {
        extra: "[limits]\nmax_requests = 2\nqueue_timeout = \"400ms\"\n",
        ..Options::default()
    };
    let h = Harness::start_with(&[node("gs-master", Some(1))], opts).await;
    let node = h.geolb.snapshot().nodes[0].clone();
    let slow = |ms: u64| {
        let (client, url) = (
            h.client.clone(),
            h.url(&format!("/geoserver/www/__sim/slow?ms={ms}")),
        );
        tokio::spawn(async move {
            let started = Instant::now();
            let req = Request::get(url)
                .body(Full::new(Bytes::new()).boxed())
                .unwrap();
            let r = send(&client, req).await;
            (r, started.elapsed())
        })
    };

    // Two slow requests hold both slots; a third waits and gives up after queue_timeout.
    let (a, b) = (slow(1500), slow(1500));
    wait_for("two in flight", Duration::from_secs(5), || {
        node.in_flight() == 2
    })
    .await;
    let (r, took) = slow(0).await.unwrap();
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        r.text().contains("no free slot within 400ms"),
        "{}",
        r.text()
    );
    assert!(!r.header("retry-after").is_empty());
    assert!(
        took >= Duration::from_millis(380),
        "it waited the queue timeout: {took:?}"
    );
    assert_eq!(node.in_flight(), 2, "never more than max_requests");
    assert_eq!(a.await.unwrap().0.status, StatusCode::OK);
    assert_eq!(b.await.unwrap().0.status, StatusCode::OK);

    // Two short requests: the third waits in the queue for one of them, then is served.
    let (a, b) = (slow(250), slow(250));
    wait_for("two in flight", Duration::from_secs(5), || {
        node.in_flight() == 2
    })
    .await;
    let (r, took) = slow(0).await.unwrap();
    assert_eq!(r.status, StatusCode::OK);
    assert!(
        took >= Duration::from_millis(100),
        "the third request waited for a slot: {took:?}"
    );
    a.await.unwrap();
    b.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_node_times_out_and_the_read_goes_elsewhere() {
    let opts = Options {
        interval: "20s",
        timeout: "1s",
        extra: "[timeouts.reads]\nheaders = \"300ms\"\nidle = \"300ms\"\n",
        ..Options::default()
    };
    let h = Harness::start_with(THREE, opts).await;
    h.sim("gs-replica-1").set_mode(Mode::Hang);
    for _ in 0..20 {
        let r = h.get(GETMAP).await;
        assert_eq!(r.status, StatusCode::OK);
        assert_ne!(r.node(), "gs-replica-1");
    }
    // With nowhere else to go, the client gets 504 naming the node.
    for n in ["gs-master", "gs-replica-2"] {
        h.sim(n).set_mode(Mode::Hang);
    }
    let started = Instant::now();
    let r = h.get(GETMAP).await;
    assert_eq!(r.status, StatusCode::GATEWAY_TIMEOUT, "{}", r.text());
    assert!(
        r.text().contains("did not answer within 300ms"),
        "{}",
        r.text()
    );
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "three attempts of 300 ms"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_response_body_that_stalls_is_cut_after_the_idle_timeout() {
    let opts = Options {
        extra: "[timeouts.reads]\nheaders = \"5s\"\nidle = \"300ms\"\n",
        ..Options::default()
    };
    let h = Harness::start_with(THREE, opts).await;
    let req = Request::get(h.url("/geoserver/www/__sim/stall"))
        .body(Full::new(Bytes::new()).boxed())
        .unwrap();
    let started = Instant::now();
    let response = h.client.request(req).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body = tokio::time::timeout(Duration::from_secs(5), response.into_body().collect()).await;
    assert!(
        body.expect("cut, not hung").is_err(),
        "the stalled body ends in an error"
    );
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_secs(3),
        "{took:?}"
    );
    wait_for("slot released", Duration::from_secs(2), || {
        h.geolb.snapshot().nodes.iter().all(|n| n.in_flight() == 0)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_is_retried_only_when_the_connection_failed() {
    let opts = Options {
        interval: "20s",
        timeout: "1s",
        ..Options::default()
    };
    let h = Harness::start_with(
        &[node("gs-master", Some(1)), node("gs-replica-1", None)],
        opts,
    )
    .await;
    // The master answers 503 to a write: a write is never retried on a status.
    h.sim("gs-master").set_mode(Mode::Fail);
    h.sim("gs-master").reset_counters();
    let r = h.write().await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(h.sim("gs-master").writes(), 1, "sent once");
    assert_eq!(h.sim("gs-replica-1").writes(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_requests_are_served_first_come_first_served() {
    let opts = Options {
        extra: "[limits]\nmax_requests = 1\nqueue_timeout = \"10s\"\n",
        ..Options::default()
    };
    let h = Harness::start_with(&[node("gs-master", Some(1))], opts).await;
    let node = h.geolb.snapshot().nodes[0].clone();
    let order = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let slow = |ms: u64, tag: usize| {
        let (client, url, order) = (
            h.client.clone(),
            h.url(&format!("/geoserver/www/__sim/slow?ms={ms}")),
            order.clone(),
        );
        tokio::spawn(async move {
            let req = Request::get(url)
                .body(Full::new(Bytes::new()).boxed())
                .unwrap();
            let r = send(&client, req).await;
            order.lock().unwrap().push(tag);
            r.status
        })
    };
    let holder = slow(300, 0);
    wait_for("the slot taken", Duration::from_secs(5), || {
        node.in_flight() == 1
    })
    .await;
    let mut waiting = Vec::new();
    for tag in 1..=5 {
        waiting.push(slow(20, tag));
        // Each joins the queue before the next one comes.
        wait_for("queued", Duration::from_secs(5), || {
            h.geolb.queues().waiting(geolb::classify::Pool::Reads) == tag
        })
        .await;
    }
    assert_eq!(holder.await.unwrap(), StatusCode::OK);
    for w in waiting {
        assert_eq!(w.await.unwrap(), StatusCode::OK);
    }
    assert_eq!(
        *order.lock().unwrap(),
        [0, 1, 2, 3, 4, 5],
        "served in arrival order"
    );
    assert_eq!(node.in_flight(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_attempt_lets_go_of_its_node_while_the_retry_runs() {
    let opts = Options {
        interval: "20s",
        timeout: "1s",
        routing: "balance = \"round-robin\"",
        extra: "[limits]\nmax_requests = 1\n",
        ..Options::default()
    };
    let h = Harness::start_with(&[node("gs-a", Some(1)), node("gs-b", None)], opts).await;
    let snap = h.geolb.snapshot();
    let (a, b) = (snap.nodes[0].clone(), snap.nodes[1].clone());
    h.sim("gs-a").set_mode(Mode::Fail);
    // Round robin: within two requests, one tries gs-a first, fails, and is retried on gs-b.
    let mut seen = false;
    for _ in 0..2 {
        let before = h.sim("gs-a").hits();
        let (client, url) = (h.client.clone(), h.url("/geoserver/www/__sim/slow?ms=600"));
        let req = tokio::spawn(async move {
            let req = Request::get(url)
                .body(Full::new(Bytes::new()).boxed())
                .unwrap();
            send(&client, req).await
        });
        wait_for("on gs-b", Duration::from_secs(5), || b.in_flight() == 1).await;
        if h.sim("gs-a").hits() > before {
            assert_eq!(a.in_flight(), 0, "the failed attempt's slot was let go");
            seen = true;
        }
        let r = req.await.unwrap();
        assert_eq!((r.status, r.node()), (StatusCode::OK, "gs-b"));
    }
    assert!(seen, "one request was retried");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_connection_costs_a_read_none_of_its_retries() {
    // No retry allowed at all, and no ejection on live traffic: only a free second try on a
    // refusal lets a read that first picked a dead replica succeed (2 of 3 picks are dead).
    let opts = Options {
        interval: "20s",
        timeout: "1s",
        extra: "[passive]\nconsecutive_failures = 0\n[retries]\nmax = 0\n",
        ..Options::default()
    };
    let h = Harness::start_with(THREE, opts).await;
    h.sim("gs-replica-1").kill().await;
    h.sim("gs-replica-2").kill().await;
    for i in 0..30 {
        let r = h.get(GETMAP).await;
        assert_eq!(r.status, StatusCode::OK, "read {i}: {}", r.text());
        assert_eq!(r.node(), "gs-master");
    }
    assert_eq!(
        h.state("gs-replica-1"),
        State::Up,
        "passive ejection is off"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_connection_ejects_the_node_at_once_past_the_passive_cap() {
    // Checks 20 s apart: only live traffic can take the nodes out, and the passive cap (34 % of
    // three: one node) would keep one of the two dead replicas.
    let opts = Options {
        interval: "20s",
        timeout: "1s",
        extra: "[passive]\nconsecutive_failures = 3\nmax_ejected_percent = 34\n",
        ..Options::default()
    };
    let h = Harness::start_with(THREE, opts).await;
    h.sim("gs-replica-1").kill().await;
    h.sim("gs-replica-2").kill().await;
    let started = Instant::now();
    let mut reads = 0;
    while h.state("gs-replica-1") == State::Up || h.state("gs-replica-2") == State::Up {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "still up after {reads} reads"
        );
        let r = h.get(GETMAP).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text());
        reads += 1;
    }
    for name in ["gs-replica-1", "gs-replica-2"] {
        let reason = h.ejection_reason(name);
        assert!(reason.contains("connection refused"), "{name}: {reason}");
    }
}
