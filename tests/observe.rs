//! What an operator sees: exact counters in a `/metrics` scrape after known traffic, request ids.

mod support;

use std::time::Duration;

use bytes::Bytes;
use geolb::cluster::health::State;
use geolb::sim::Mode;
use http::{Method, StatusCode};
use support::*;

async fn scrape(h: &Harness) -> String {
    h.scrape().await
}

/// The value of the sample whose name and labels are exactly `series` (`name{a="b",…}`), or the
/// sum over every sample of that name when `series` has no braces and labels vary.
fn value(scrape: &str, series: &str) -> f64 {
    scrape
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.rsplit_once(' '))
        .filter(|(name, _)| {
            *name == series || (!series.contains('{') && name.split('{').next() == Some(series))
        })
        .filter_map(|(_, v)| v.parse::<f64>().ok())
        .sum()
}

async fn value_reaches(h: &Harness, series: &str, want: f64) -> String {
    wait_for_async(
        &format!("{series} = {want}"),
        Duration::from_secs(5),
        || async {
            let s = scrape(h).await;
            (value(&s, series) == want).then_some(s)
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn known_traffic_gives_exact_counters() {
    let defs = &[
        node("gs-master", Some(1)),
        node("gs-backup", Some(2)),
        node("gs-replica", None),
    ];
    let h = Harness::start_with(
        defs,
        Options {
            extra: "[passive]\nconsecutive_failures = 0\n",
            ..Options::default()
        },
    )
    .await;
    for _ in 0..10 {
        assert_eq!(
            h.get("/geoserver/wms?request=GetMap").await.status,
            StatusCode::OK
        );
    }
    for _ in 0..3 {
        assert_eq!(h.write().await.node(), "gs-master");
    }
    let upload = vec![b'x'; 1000];
    h.send(Method::POST, "/geoserver/rest/imports", &[], upload)
        .await;
    let s = value_reaches(&h, "geolb_requests_total", 14.0).await;

    assert_eq!(
        value(
            &s,
            r#"geolb_requests_total{class="wms:GetMap",code="2xx",node="gs-master",pool="reads"}"#
        ) + value(
            &s,
            r#"geolb_requests_total{class="wms:GetMap",code="2xx",node="gs-backup",pool="reads"}"#
        ) + value(
            &s,
            r#"geolb_requests_total{class="wms:GetMap",code="2xx",node="gs-replica",pool="reads"}"#
        ),
        10.0
    );
    assert_eq!(
        value(
            &s,
            r#"geolb_requests_total{class="wfs:Transaction",code="2xx",node="gs-master",pool="master"}"#
        ),
        3.0
    );
    assert_eq!(
        value(
            &s,
            r#"geolb_requests_total{class="rest",code="2xx",node="gs-master",pool="master"}"#
        ),
        1.0
    );
    assert_eq!(
        value(&s, r#"geolb_request_duration_seconds_count{pool="reads"}"#),
        10.0
    );
    assert_eq!(
        value(&s, r#"geolb_request_duration_seconds_count{pool="master"}"#),
        4.0
    );
    let transaction = "<wfs:Transaction/>".len() as f64;
    assert_eq!(
        value(&s, "geolb_received_bytes_total"),
        1000.0 + 3.0 * transaction
    );
    assert!(value(&s, "geolb_sent_bytes_total") > 0.0);
    assert_eq!(value(&s, r#"geolb_master_info{node="gs-master"}"#), 1.0);
    assert_eq!(
        value(&s, r#"geolb_node_up{node="gs-master",role="master"}"#),
        1.0
    );
    assert_eq!(
        value(&s, r#"geolb_node_up{node="gs-backup",role="candidate"}"#),
        1.0
    );
    assert_eq!(
        value(&s, r#"geolb_node_up{node="gs-replica",role="replica"}"#),
        1.0
    );
    assert_eq!(value(&s, "geolb_node_in_flight_requests"), 0.0);
    assert!(
        value(
            &s,
            r#"geolb_health_checks_total{node="gs-replica",result="pass"}"#
        ) >= 1.0
    );
    assert_eq!(value(&s, "geolb_failovers_total"), 0.0);

    // No master candidate answers: writes get 503 from geolb itself (node "none").
    for n in ["gs-master", "gs-backup"] {
        h.sim(n).set_mode(Mode::Fail);
    }
    h.wait_state("gs-master", State::Down, Duration::from_secs(5))
        .await;
    h.wait_state("gs-backup", State::Down, Duration::from_secs(5))
        .await;
    assert_eq!(h.write().await.status, StatusCode::SERVICE_UNAVAILABLE);
    let s = value_reaches(
        &h,
        r#"geolb_requests_total{class="wfs:Transaction",code="5xx",node="none",pool="master"}"#,
        1.0,
    )
    .await;
    assert_eq!(
        value(
            &s,
            r#"geolb_ejections_total{node="gs-master",reason="active"}"#
        ),
        1.0
    );
    assert_eq!(
        value(
            &s,
            r#"geolb_ejections_total{node="gs-backup",reason="active"}"#
        ),
        1.0
    );
    assert!(
        value(
            &s,
            r#"geolb_health_checks_total{node="gs-master",result="fail"}"#
        ) >= 3.0
    );
    assert_eq!(value(&s, r#"geolb_master_info{node="gs-master"}"#), 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failovers_and_retries_are_counted() {
    let defs = &[
        node("gs-master", Some(1)),
        node("gs-backup", Some(2)),
        node("gs-replica", None),
    ];
    let h = Harness::start_with(
        defs,
        Options {
            extra: "[passive]\nconsecutive_failures = 0\n",
            ..Options::default()
        },
    )
    .await;
    h.sim("gs-master").kill().await;
    wait_for("failover", Duration::from_secs(5), || {
        h.master().as_deref() == Some("gs-backup")
    })
    .await;
    let s = value_reaches(&h, "geolb_failovers_total", 1.0).await;
    assert_eq!(value(&s, r#"geolb_master_info{node="gs-backup"}"#), 1.0);

    // A replica answering 503: reads landing on it are retried elsewhere, each one counted.
    h.sim("gs-replica").set_mode(Mode::Fail);
    for n in &h.nodes {
        n.reset_counters();
    }
    for _ in 0..40 {
        assert_eq!(
            h.get("/geoserver/wms?request=GetMap").await.status,
            StatusCode::OK
        );
    }
    let retried = h.sim("gs-replica").hits() as f64;
    assert!(
        retried > 0.0,
        "some reads went to the failing replica first"
    );
    value_reaches(&h, r#"geolb_retries_total{pool="reads"}"#, retried).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_ids_are_kept_or_made_and_reach_the_node() {
    let h = Harness::start(THREE).await;
    let r = h
        .send(
            Method::GET,
            "/geoserver/wms?request=GetMap",
            &[("x-request-id", "trace-42")],
            Bytes::new(),
        )
        .await;
    assert_eq!(r.header("x-request-id"), "trace-42");
    assert_eq!(r.header("x-seen-request-id"), "trace-42", "the node got it");
    let r = h.get("/geoserver/wms?request=GetMap").await;
    let made = r.header("x-request-id").to_string();
    assert_eq!(made.len(), 32, "a fresh id: {made:?}");
    assert_eq!(r.header("x-seen-request-id"), made, "the node got the same");
    let r2 = h.get("/geoserver/wms?request=GetMap").await;
    assert_ne!(r2.header("x-request-id"), made);
    let r = h
        .send(
            Method::GET,
            "/geoserver/wms",
            &[("x-request-id", "not ok!")],
            Bytes::new(),
        )
        .await;
    assert_eq!(
        r.header("x-request-id").len(),
        32,
        "an unsafe id is replaced"
    );
    // geolb's own answers carry one too.
    h.sim("gs-master").set_mode(Mode::Fail);
    h.wait_state("gs-master", State::Down, Duration::from_secs(5))
        .await;
    let r = h.write().await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(r.header("x-request-id").len(), 32);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_leaves_takes_its_series_with_it() {
    let defs = [node("gs-a", Some(1)), node("gs-b", Some(2))];
    let h = Harness::start(&defs).await;
    for _ in 0..6 {
        assert_eq!(h.write().await.status, StatusCode::OK);
    }
    let s = value_reaches(
        &h,
        "geolb_requests_total{class=\"wfs:Transaction\",code=\"2xx\",node=\"gs-a\",pool=\"master\"}",
        6.0,
    )
    .await;
    assert_eq!(value(&s, "geolb_master_info{node=\"gs-a\"}"), 1.0);
    let reads_on_a = async || {
        let mut on_a = 0;
        for _ in 0..20 {
            let r = h.get("/geoserver/wms?request=GetMap").await;
            on_a += u32::from(r.node() == "gs-a");
        }
        assert!(on_a > 0, "reads are spread over both nodes");
        on_a
    };
    const READS_ON_A: &str =
        r#"geolb_requests_total{class="wms:GetMap",code="2xx",node="gs-a",pool="reads"}"#;
    let on_a = reads_on_a().await;
    value_reaches(&h, READS_ON_A, f64::from(on_a)).await;
    // gs-a leaves the configuration: gs-b becomes master.
    let text = config_text(&defs[1..], &h.nodes[1..], &Options::default());
    h.geolb
        .reload(geolb::control::Source::Given(Box::new(
            geolb::config::Config::parse(&text).unwrap(),
        )))
        .await
        .unwrap();
    wait_for("gs-b master", Duration::from_secs(5), || {
        h.master().as_deref() == Some("gs-b")
    })
    .await;
    let s = scrape(&h).await;
    let masters: Vec<&str> = s
        .lines()
        .filter(|l| l.starts_with("geolb_master_info{") && l.ends_with(" 1"))
        .collect();
    assert_eq!(
        masters,
        ["geolb_master_info{node=\"gs-b\"} 1"],
        "one master"
    );
    let left: Vec<&str> = s
        .lines()
        .filter(|l| !l.starts_with('#') && l.contains("node=\"gs-a\""))
        .collect();
    assert!(left.is_empty(), "series of a node that left: {left:?}");
    // It comes back: its requests are counted afresh.
    let text = config_text(&defs, &h.nodes, &Options::default());
    h.geolb
        .reload(geolb::control::Source::Given(Box::new(
            geolb::config::Config::parse(&text).unwrap(),
        )))
        .await
        .unwrap();
    h.wait_state("gs-a", State::Up, Duration::from_secs(5))
        .await;
    // The same series as before it left: made again from zero, not kept from before.
    let on_a = reads_on_a().await;
    value_reaches(&h, READS_ON_A, f64::from(on_a)).await;
}
