//! Hot reload under load: nodes come and go, routing changes, listeners move; nothing fails.

mod support;

use std::time::Duration;

use geolb::config::Config;
use geolb::control::Source;
use http::StatusCode;
use support::*;

const GETMAP: &str = "/geoserver/wms?request=GetMap";
const ALL: &[NodeDef] = &[
    node("gs-a", Some(1)),
    node("gs-b", None),
    node("gs-c", None),
    node("gs-d", None),
];

fn pick(h: &Harness, names: &[&str]) -> (Vec<NodeDef>, Vec<geolb::sim::SimNode>) {
    let defs = ALL
        .iter()
        .filter(|d| names.contains(&d.name))
        .map(|d| NodeDef { ..*d })
        .collect();
    let sims = names.iter().map(|n| h.sim(n).clone()).collect();
    (defs, sims)
}

/// The test config of the nodes `names`, with `extra` TOML.
fn config_of(h: &Harness, names: &[&str], extra: &'static str) -> Config {
    let (defs, sims) = pick(h, names);
    let text = config_text(
        &defs,
        &sims,
        &Options {
            extra,
            ..Options::default()
        },
    );
    Config::parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"))
}

async fn reload(h: &Harness, names: &[&str], extra: &'static str) {
    h.geolb
        .reload(Source::Given(Box::new(config_of(h, names, extra))))
        .await
        .expect("a valid config reloads");
}

fn names(h: &Harness) -> Vec<String> {
    h.geolb
        .snapshot()
        .nodes
        .iter()
        .map(|n| n.name().to_string())
        .collect()
}

const TO_MASTER: &str = "[[routes]]\nprefix = \"/geoserver/wms\"\npool = \"master\"\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_reloads_under_load_lose_no_request() {
    let h = Harness::start(ALL).await;
    let a_id = h.geolb.snapshot().nodes[0].id;
    let load = Load::start(&h, GETMAP, 4, 500_000);
    for i in 0..50 {
        let set: &[&str] = if i % 2 == 0 {
            &["gs-a", "gs-b", "gs-c"]
        } else {
            &["gs-a", "gs-b", "gs-d"]
        };
        let extra = if i % 5 == 4 { TO_MASTER } else { "" };
        let before = load.count();
        reload(&h, set, extra).await;
        assert_eq!(names(&h), set, "reload {i} put the new node set in force");
        wait_for(
            "traffic flows after the reload",
            Duration::from_secs(5),
            || load.count() >= before + 5,
        )
        .await;
    }
    let snapshot = h.geolb.snapshot();
    assert_eq!(
        snapshot.nodes[0].id, a_id,
        "a node that stays is the same node (state and counters kept)"
    );
    assert!(snapshot.nodes[0].served() > 0);

    // The new routing takes effect: every GetMap to the master.
    reload(&h, &["gs-a", "gs-b", "gs-c"], TO_MASTER).await;
    for _ in 0..20 {
        assert_eq!(h.get(GETMAP).await.node(), "gs-a");
    }
    let samples = load.stop().await;
    let failed: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.status != StatusCode::OK)
        .collect();
    assert!(
        failed.is_empty(),
        "{} of {} requests failed across 51 reloads, e.g. {:?}",
        failed.len(),
        samples.len(),
        failed.first()
    );
    assert!(samples.len() > 250);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_config_is_refused_and_traffic_goes_on() {
    let h = Harness::start(&ALL[..2]).await;
    let bad = Config::parse("[[nodes]]\nname = \"x\"\nurl = \"ftp://x\"\n");
    assert!(bad.is_err(), "the parser refuses it first");
    // From a file: the same message `geolb check` gives, naming the key.
    let dir = std::env::temp_dir().join(format!(
        "geolb-reload-{}-{}",
        std::process::id(),
        fastrand::u64(..)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("config.toml");
    let (defs, sims) = pick(&h, &["gs-a", "gs-b"]);
    std::fs::write(&path, config_text(&defs, &sims, &Options::default())).unwrap();
    let running = geolb::server::start_with_file(Config::load(&path).unwrap(), Some(path.clone()))
        .await
        .unwrap();
    std::fs::write(&path, "[[nodes]]\nname = \"x\"\nurl = \"ftp://x\"\n").unwrap();
    let err = running.reload(Source::File).await.expect_err("refused");
    assert!(err.contains("config.toml:3: key `nodes[0].url`"), "{err}");
    assert_eq!(running.snapshot().nodes.len(), 2, "the old config stays");
    let url = format!("http://{}{GETMAP}", running.http[0]);
    wait_for_async("still serving", Duration::from_secs(5), || async {
        let req = http::Request::get(&url)
            .body(http_body_util::BodyExt::boxed(http_body_util::Full::new(
                bytes::Bytes::new(),
            )))
            .unwrap();
        (send(&h.client, req).await.status == StatusCode::OK).then_some(())
    })
    .await;
    running.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listeners_move_with_a_reload() {
    let h = Harness::start(&ALL[..2]).await;
    let old = h.proxy();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let (defs, sims) = pick(&h, &["gs-a", "gs-b"]);
    let text = config_text(&defs, &sims, &Options::default()).replace(
        "http = [\"127.0.0.1:0\"]",
        &format!("http = [\"127.0.0.1:{port}\"]"),
    );
    h.geolb
        .reload(Source::Given(Box::new(Config::parse(&text).unwrap())))
        .await
        .unwrap();
    let new_url = format!("http://127.0.0.1:{port}{GETMAP}");
    let req = http::Request::get(&new_url)
        .body(http_body_util::BodyExt::boxed(http_body_util::Full::new(
            bytes::Bytes::new(),
        )))
        .unwrap();
    assert_eq!(
        send(&client(), req).await.status,
        StatusCode::OK,
        "the new listener serves"
    );
    wait_for("the old listener is closed", Duration::from_secs(5), || {
        std::net::TcpStream::connect(old).is_err()
    })
    .await;
    // A port already taken refuses the whole reload.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let text2 = text.replace(
        &format!("127.0.0.1:{port}"),
        &taken.local_addr().unwrap().to_string(),
    );
    let err = h
        .geolb
        .reload(Source::Given(Box::new(Config::parse(&text2).unwrap())))
        .await
        .expect_err("busy port");
    assert!(err.contains("cannot listen on"), "{err}");
    let req = http::Request::get(&new_url)
        .body(http_body_util::BodyExt::boxed(http_body_util::Full::new(
            bytes::Bytes::new(),
        )))
        .unwrap();
    assert_eq!(
        send(&client(), req).await.status,
        StatusCode::OK,
        "the refused reload changed nothing"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_changes_the_node_connection_settings() {
    let h = Harness::start(&ALL[..2]).await;
    let node = h.geolb.snapshot().nodes[0].clone();
    assert_eq!(node.upstream.max_idle(), Duration::from_secs(15));
    let extra = "[forwarding]\ninsecure_skip_verify = true\npool_idle_timeout = \"5s\"\n\
                 [timeouts]\nconnect = \"2s\"\n[retries]\nbudget_percent = 50\n";
    reload(&h, &["gs-a", "gs-b"], extra).await;
    assert_eq!(node.upstream.max_idle(), Duration::from_secs(5));
    let config = h.geolb.snapshot().config.clone();
    assert_eq!(config.timeouts.connect.0, Duration::from_secs(2));
    assert_eq!(config.retries.budget_percent, 50);
    assert_eq!(h.get(GETMAP).await.status, StatusCode::OK);
    // Node TLS files are read at the reload: one that cannot be read refuses it, naming the key.
    let err = h
        .geolb
        .reload(Source::Given(Box::new(config_of(
            &h,
            &["gs-a", "gs-b"],
            "[forwarding]\nca_bundle = \"/nonexistent/ca.pem\"\n",
        ))))
        .await
        .expect_err("no such CA bundle");
    assert!(err.contains("forwarding.ca_bundle"), "{err}");
    assert_eq!(
        node.upstream.max_idle(),
        Duration::from_secs(5),
        "nothing changed"
    );
}
