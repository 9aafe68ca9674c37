//! 100 MiB bodies pass through byte-identical, both ways, and memory stays flat: bodies stream.

mod support;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use geolb::sim::{blob_sha256, BlobBody};
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use sha2::{Digest, Sha256};
use support::*;

const SIZE: u64 = 100 * 1024 * 1024;

/// Resident memory of this process (test client, geolb and the nodes all live in it), in bytes.
fn rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// Samples RSS until dropped; reports the peak.
struct PeakRss {
    peak: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl PeakRss {
    fn start() -> Self {
        let peak = Arc::new(AtomicU64::new(rss()));
        let p = peak.clone();
        let task = tokio::spawn(async move {
            loop {
                p.fetch_max(rss(), Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        });
        PeakRss { peak, task }
    }
    fn stop(self) -> u64 {
        self.task.abort();
        self.peak.load(Ordering::Relaxed).max(rss())
    }
}

async fn upload(h: &Harness, target: &str, content_type: &str) {
    let before = rss();
    let peak = PeakRss::start();
    let req = Request::post(h.url(target))
        .header("content-type", content_type)
        .body(
            BlobBody::new(SIZE, 42)
                .map_err(|never| match never {})
                .boxed(),
        )
        .unwrap();
    let r = send(&h.client, req).await;
    let grew = peak.stop().saturating_sub(before);
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.node(), "gs-master");
    assert_eq!(r.header("x-body-length"), SIZE.to_string());
    assert_eq!(
        r.header("x-body-sha256"),
        blob_sha256(SIZE, 42),
        "the upload arrived altered"
    );
    assert!(
        grew < 32 << 20,
        "memory grew by {} MiB during a 100 MiB upload",
        grew >> 20
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_100_mib_upload_arrives_byte_identical() {
    let h = Harness::start(THREE).await;
    upload(&h, "/geoserver/rest/imports/1/tasks", "application/zip").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_100_mib_ogc_post_is_replayed_after_the_lookahead() {
    // An OGC endpoint: geolb peeks at the first 64 KiB to find the operation, then replays them.
    let h = Harness::start(THREE).await;
    upload(&h, "/geoserver/wfs", "text/xml").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_100_mib_download_arrives_byte_identical() {
    let h = Harness::start(THREE).await;
    let before = rss();
    let peak = PeakRss::start();
    let req = Request::get(h.url(&format!("/geoserver/www/__sim/blob?bytes={SIZE}&seed=9")))
        .body(http_body_util::Full::new(bytes::Bytes::new()).boxed())
        .unwrap();
    let response = h.client.request(req).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers()["content-length"],
        SIZE.to_string().as_str()
    );
    let mut body = response.into_body();
    let (mut hasher, mut len) = (Sha256::new(), 0u64);
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame.unwrap().into_data() {
            len += data.len() as u64;
            hasher.update(&data);
        }
    }
    let grew = peak.stop().saturating_sub(before);
    assert_eq!(len, SIZE);
    let digest: String = hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(digest, blob_sha256(SIZE, 9), "the download arrived altered");
    assert!(
        grew < 32 << 20,
        "memory grew by {} MiB during a 100 MiB download",
        grew >> 20
    );
}
