//! The hot pure functions of the request path: classifying a request, picking a node, following
//! the framing of a request head.
//! Run: `cargo bench --bench hot_paths`.

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use geolb::classify::Classifier;
use geolb::cluster::balance::{pick_p2c, pick_round_robin};
use http::header::{HeaderValue, CONTENT_TYPE};
use http::{HeaderMap, Method};

const GETMAP: &str = "service=WMS&version=1.3.0&request=GetMap&layers=topp:states&styles=&crs=EPSG:4326&bbox=-90,-180,90,180&width=768&height=384&format=image/png";
const WFS_POST: &str = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<wfs:GetFeature service=\"WFS\" version=\"1.1.0\" xmlns:wfs=\"http://www.opengis.net/wfs\" xmlns:ogc=\"http://www.opengis.net/ogc\"><wfs:Query typeName=\"topp:states\"><ogc:Filter><ogc:PropertyIsEqualTo><ogc:PropertyName>STATE_NAME</ogc:PropertyName><ogc:Literal>Utah</ogc:Literal></ogc:PropertyIsEqualTo></ogc:Filter></wfs:Query></wfs:GetFeature>";

fn classify(c: &mut Criterion) {
    let classifier = Classifier::new("/geoserver", Vec::new(), 64 * 1024);
    let none = HeaderMap::new();
    let mut xml = HeaderMap::new();
    xml.insert(CONTENT_TYPE, HeaderValue::from_static("text/xml"));
    let mut group = c.benchmark_group("classify");
    group.bench_function("wms_getmap_kvp", |b| {
        b.iter(|| {
            classifier.classify(
                &Method::GET,
                black_box("/geoserver/wms"),
                Some(black_box(GETMAP)),
                &none,
                b"",
            )
        })
    });
    group.bench_function("gwc_tile", |b| {
        b.iter(|| {
            classifier.classify(
                &Method::GET,
                black_box("/geoserver/gwc/service/tms/1.0.0/topp:states@EPSG:4326@png/3/1/2.png"),
                None,
                &none,
                b"",
            )
        })
    });
    group.bench_function("rest_get", |b| {
        b.iter(|| {
            classifier.classify(
                &Method::GET,
                black_box("/geoserver/rest/workspaces.json"),
                None,
                &none,
                b"",
            )
        })
    });
    group.bench_function("wfs_post_xml", |b| {
        b.iter(|| {
            classifier.classify(
                &Method::POST,
                black_box("/geoserver/wfs"),
                None,
                &xml,
                black_box(WFS_POST.as_bytes()),
            )
        })
    });
    group.finish();
}

fn pick(c: &mut Criterion) {
    let loads = [3.0, 0.0, 7.0, 1.0, 2.0, 5.0, 0.0, 4.0];
    let paces = [2.0, 1.0, 9.0, 1.5, 1.0, 3.0, 0.5, 2.0];
    let mut rng = fastrand::Rng::with_seed(1);
    let mut group = c.benchmark_group("pick");
    group.bench_function("p2c_8_nodes", |b| {
        b.iter(|| pick_p2c(black_box(loads.len()), &mut rng, |i| Some((loads[i], 1.0))))
    });
    group.bench_function("p2c_8_nodes_one_warming", |b| {
        b.iter(|| {
            pick_p2c(black_box(loads.len()), &mut rng, |i| {
                Some((loads[i], if i == 2 { 0.3 } else { 1.0 }))
            })
        })
    });
    group.bench_function("p2c_paced_8_nodes", |b| {
        b.iter(|| {
            pick_p2c(black_box(loads.len()), &mut rng, |i| {
                let cost = geolb::cluster::balance::paced_cost(paces[i], loads[i] as usize);
                Some((cost, 1.0))
            })
        })
    });
    group.bench_function("stall_verdict_8_nodes", |b| {
        let seen: Vec<geolb::cluster::stall::Seen> = (0..8)
            .map(|i| geolb::cluster::stall::Seen {
                awaiting: i % 3,
                owes: i == 4,
                quiet: std::time::Duration::from_millis(i as u64 * 40),
                after: std::time::Duration::from_millis(200),
            })
            .collect();
        b.iter(|| geolb::cluster::stall::stalled(black_box(&seen)))
    });
    let mut ticket = 0usize;
    group.bench_function("round_robin_8_nodes", |b| {
        b.iter(|| {
            ticket += 1;
            pick_round_robin(black_box(loads.len()), ticket, &mut rng, |i| {
                Some((loads[i], 1.0))
            })
        })
    });
    group.finish();
}

/// The framing guard following a keep-alive stream of GetMap heads (as a browser sends them).
fn framing(c: &mut Criterion) {
    let head = format!(
        "GET /geoserver/wms?{GETMAP} HTTP/1.1\r\nHost: maps.example.org\r\nUser-Agent: Mozilla/5.0 (X11; Linux x86_64) Firefox/128.0\r\nAccept: image/avif,image/webp,*/*\r\nAccept-Language: en-US,en;q=0.5\r\nAccept-Encoding: gzip, deflate, br\r\nReferer: https://maps.example.org/\r\nConnection: keep-alive\r\n\r\n"
    );
    let mut scanner = geolb::framing::Scanner::new(64 * 1024);
    let mut group = c.benchmark_group("framing");
    group.bench_function("getmap_head", |b| {
        b.iter(|| scanner.feed(black_box(head.as_bytes())))
    });
    group.finish();
}

criterion_group!(benches, classify, pick, framing);
criterion_main!(benches);
