//! DNS discovery with answers the test controls: nodes join after their health check, leave with
//! their in-flight requests finishing, and a failed lookup keeps the last set.

mod support;

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use geolb::cluster::discover::{Lookup, Resolve};
use geolb::cluster::health::State;
use geolb::config::Config;
use geolb::sim::SimNode;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use support::*;

/// A resolver whose answer for `geoserver.test` the test sets (`None`: the lookup fails).
#[derive(Default)]
struct Answers(Mutex<Option<Vec<IpAddr>>>, AtomicUsize);

impl Answers {
    fn set(&self, ips: Option<&[&str]>) {
        *self.0.lock().unwrap() = ips.map(|ips| ips.iter().map(|ip| ip.parse().unwrap()).collect());
    }

    /// Waits until geolb has asked `n` more times.
    async fn asked(&self, n: usize) {
        let target = self.1.load(Ordering::SeqCst) + n;
        wait_for("more lookups", Duration::from_secs(5), || {
            self.1.load(Ordering::SeqCst) >= target
        })
        .await;
    }
}

impl Resolve for Answers {
    fn resolve<'a>(&'a self, host: &'a str, port: u16) -> Lookup<'a> {
        self.1.fetch_add(1, Ordering::SeqCst);
        let answer = match (host, self.0.lock().unwrap().clone()) {
            ("geoserver.test", Some(ips)) => Ok(ips
                .into_iter()
                .map(|ip| SocketAddr::new(ip, port))
                .collect()),
            _ => Err(io::Error::new(io::ErrorKind::NotFound, "no such host")),
        };
        Box::pin(async move { answer })
    }
}

/// Simulated replicas on 127.0.0.2, .3, .4, one port for all (as a scaled compose service).
async fn replicas() -> (u16, Vec<SimNode>) {
    for _ in 0..20 {
        let first = SimNode::start("replica-2", "127.0.0.2:0".parse().unwrap())
            .await
            .unwrap();
        let port = first.addr().port();
        let mut nodes = vec![first];
        for (i, ip) in ["127.0.0.3", "127.0.0.4"].iter().enumerate() {
            match SimNode::start(
                &format!("replica-{}", i + 3),
                format!("{ip}:{port}").parse().unwrap(),
            )
            .await
            {
                Ok(n) => nodes.push(n),
                Err(_) => break,
            }
        }
        if nodes.len() == 3 {
            return (port, nodes);
        }
    }
    panic!("no port free on 127.0.0.2-4");
}

fn node_names(h: &geolb::server::Running) -> Vec<String> {
    h.snapshot()
        .nodes
        .iter()
        .map(|n| n.name().to_string())
        .collect()
}

fn state_of(h: &geolb::server::Running, name: &str) -> Option<State> {
    let s = h.snapshot();
    s.nodes
        .iter()
        .position(|n| n.name() == name)
        .map(|i| s.states[i])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_follow_the_dns_answer() {
    let (port, replicas) = replicas().await;
    let master = SimNode::start("gs-master", "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let answers = Arc::new(Answers::default());
    // At startup the name does not resolve yet: geolb starts anyway.
    answers.set(None);
    let text = format!(
        "[listen]\nhttp = [\"127.0.0.1:0\"]\n[admin]\nlisten = \"127.0.0.1:0\"\n[log]\naccess = false\n\
         [health]\ninterval = \"100ms\"\ntimeout = \"100ms\"\n[routing]\nslow_start = \"0s\"\n\
         [[nodes]]\nname = \"gs-master\"\nurl = \"{}\"\nmaster = 1\nreads = false\n\
         [[nodes]]\nname = \"geoserver\"\nurl = \"http://geoserver.test:{port}\"\ndiscover = \"dns\"\nresolve_interval = \"100ms\"\n",
        master.url()
    );
    let geolb = geolb::server::start_with(Config::parse(&text).unwrap(), None, answers.clone())
        .await
        .unwrap();
    assert_eq!(node_names(&geolb), ["gs-master"]);

    let n2 = format!("geoserver-127.0.0.2:{port}");
    let n3 = format!("geoserver-127.0.0.3:{port}");
    let n4 = format!("geoserver-127.0.0.4:{port}");
    answers.set(Some(&["127.0.0.2", "127.0.0.3"]));
    wait_for(
        "two replicas discovered and up",
        Duration::from_secs(5),
        || state_of(&geolb, &n2) == Some(State::Up) && state_of(&geolb, &n3) == Some(State::Up),
    )
    .await;

    let client = client();
    let get = |path: &str| {
        Request::get(format!("http://{}{path}", geolb.http[0]))
            .body(Full::new(Bytes::new()).boxed())
            .unwrap()
    };
    // A slow read in flight on .2, which is about to leave (a bounded number of tries to land there).
    let mut tries = 0;
    let slow = loop {
        tries += 1;
        assert!(tries < 50, "no slow read ever landed on .2");
        let client = client.clone();
        let req = get("/geoserver/www/__sim/slow?ms=600");
        let r = tokio::spawn(async move { send(&client, req).await });
        wait_for(
            "the slow read reached a replica",
            Duration::from_secs(5),
            || replicas[0].hits() + replicas[1].hits() > 0,
        )
        .await;
        if replicas[0].hits() > 0 {
            break r;
        }
        r.await.unwrap();
        replicas[1].reset_counters();
    };
    // .2 leaves the answer, .4 enters it, but fails its check: it does not join.
    replicas[2].set_mode(geolb::sim::Mode::Fail);
    answers.set(Some(&["127.0.0.3", "127.0.0.4"]));
    wait_for(".2 removed, .4 listed", Duration::from_secs(5), || {
        let names = node_names(&geolb);
        !names.contains(&n2) && names.contains(&n4)
    })
    .await;
    let done = slow.await.unwrap();
    assert_eq!(
        (done.status, done.node()),
        (StatusCode::OK, "replica-2"),
        "the leaving node finished its request"
    );
    wait_for(".4 checked", Duration::from_secs(5), || {
        state_of(&geolb, &n4) == Some(State::Down)
    })
    .await;
    for _ in 0..20 {
        let r = send(&client, get("/geoserver/wms?request=GetMap")).await;
        assert_eq!(
            (r.status, r.node()),
            (StatusCode::OK, "replica-3"),
            "only the healthy discovered replica reads"
        );
    }

    // DNS fails, then answers nothing: the last known set stays.
    answers.set(None);
    answers.asked(3).await;
    assert!(
        node_names(&geolb).contains(&n3),
        "a failed lookup keeps the nodes"
    );
    answers.set(Some(&[]));
    answers.asked(3).await;
    assert!(
        node_names(&geolb).contains(&n3),
        "an empty answer keeps the nodes"
    );
    assert_eq!(
        send(&client, get("/geoserver/wms?request=GetMap"))
            .await
            .status,
        StatusCode::OK
    );
    geolb.shutdown().await;
}
