//! The last step of the request path: each answered request leaves a [`Record`] that a recorder
//! task turns into request metrics and an access-log line (text or JSON, on stdout). The request
//! path only sends the record into a bounded channel; formatting and writing happen off it.

use std::fmt::Write as _;
use std::io::Write as _;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use http::uri::PathAndQuery;
use http::{HeaderValue, Method};
use tokio::sync::mpsc;

use crate::classify::{Class, Pool};
use crate::config::{LogFormat, LogSettings};
use crate::metrics::{code_class, Metrics};

/// One answered request.
#[derive(Debug)]
pub struct Record {
    pub at: SystemTime,
    pub client: IpAddr,
    pub method: Method,
    pub target: Option<PathAndQuery>,
    /// `None` when geolb refused the request before classifying it.
    pub pool: Option<Pool>,
    pub class: Option<Class>,
    /// The node that answered; `None` when geolb answered itself.
    pub node: Option<Arc<str>>,
    pub status: u16,
    pub received: u64,
    pub sent: u64,
    pub duration: Duration,
    pub retries: u32,
    pub request_id: Option<HeaderValue>,
}

/// Where records go: cheap to clone, never blocks.
#[derive(Clone)]
pub struct Recorder {
    tx: mpsc::Sender<Record>,
    metrics: Arc<Metrics>,
    settings: Arc<ArcSwap<LogSettings>>,
}

impl Recorder {
    /// Starts the recorder task.
    pub fn start(settings: LogSettings, metrics: Arc<Metrics>) -> Recorder {
        let (tx, rx) = mpsc::channel(64 * 1024);
        let settings = Arc::new(ArcSwap::from_pointee(settings));
        tokio::spawn(run(rx, settings.clone(), metrics.clone()));
        Recorder {
            tx,
            metrics,
            settings,
        }
    }

    /// New access-log settings (a reload), for the next records.
    pub fn set_settings(&self, settings: LogSettings) {
        self.settings.store(Arc::new(settings));
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Whether access-log lines are written now (the record's target is kept only then).
    pub fn logs_access(&self) -> bool {
        self.settings.load().access
    }

    /// Hands a record over; if the recorder is far behind, it is dropped and counted.
    pub fn record(&self, record: Record) {
        if self.tx.try_send(record).is_err() {
            self.metrics.records_dropped.inc();
        }
    }
}

async fn run(
    mut rx: mpsc::Receiver<Record>,
    settings: Arc<ArcSwap<LogSettings>>,
    metrics: Arc<Metrics>,
) {
    let mut out = std::io::BufWriter::with_capacity(64 * 1024, std::io::stdout());
    let mut line = String::with_capacity(512);
    while let Some(record) = rx.recv().await {
        count(&metrics, &record);
        let settings = settings.load();
        if settings.access {
            line.clear();
            format_line(&mut line, &record, &settings);
            let _ = out.write_all(line.as_bytes());
            // Flush when the burst is over, so lines are neither lost nor written one syscall each.
            if rx.is_empty() {
                let _ = out.flush();
            }
        }
    }
    let _ = out.flush();
}

fn count(metrics: &Metrics, r: &Record) {
    let pool = r.pool.map_or("none", pool_name);
    let mut class = String::new();
    match &r.class {
        Some(c) => {
            let _ = write!(class, "{c}");
        }
        None => class.push_str("none"),
    }
    let node = r.node.as_deref().unwrap_or("none");
    metrics
        .requests
        .with_label_values(&[pool, &class, node, code_class(r.status)])
        .inc();
    if let Some(Class::Ambiguous(reason)) = r.class {
        metrics.played_safe.with_label_values(&[reason]).inc();
    }
    metrics
        .duration
        .with_label_values(&[pool])
        .observe(r.duration.as_secs_f64());
    metrics.received.inc_by(r.received);
    metrics.sent.inc_by(r.sent);
}

fn pool_name(pool: Pool) -> &'static str {
    match pool {
        Pool::Reads => "reads",
        Pool::Master => "master",
    }
}

/// One access-log line, with its newline.
pub fn format_line(line: &mut String, r: &Record, settings: &LogSettings) {
    let path = r
        .target
        .as_ref()
        .map_or("/", |t| if settings.query { t.as_str() } else { t.path() });
    let pool = r.pool.map_or("-", pool_name);
    let node = r.node.as_deref().unwrap_or("-");
    let id = r
        .request_id
        .as_ref()
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-");
    let ms = r.duration.as_secs_f64() * 1000.0;
    let time = humantime::format_rfc3339_millis(r.at);
    match settings.format {
        LogFormat::Text => {
            let _ = write!(
                line,
                "{time} {} \"{} {}\" {pool} ",
                r.client, r.method, path
            );
            match &r.class {
                Some(c) => {
                    let _ = write!(line, "{c}");
                }
                None => line.push('-'),
            }
            let _ = writeln!(
                line,
                " {node} {} in={} out={} {ms:.1}ms retries={} id={id}",
                r.status, r.received, r.sent, r.retries
            );
        }
        LogFormat::Json => {
            let class = r.class.map(|c| c.to_string());
            let value = serde_json::json!({
                "time": time.to_string(),
                "client": r.client.to_string(),
                "method": r.method.as_str(),
                "path": path,
                "pool": r.pool.map(pool_name),
                "class": class,
                "node": r.node.as_deref(),
                "status": r.status,
                "bytes_in": r.received,
                "bytes_out": r.sent,
                "duration_ms": (ms * 1000.0).round() / 1000.0,
                "retries": r.retries,
                "request_id": r.request_id.as_ref().and_then(|v| v.to_str().ok()),
            });
            let _ = writeln!(line, "{value}");
        }
    }
}

/// The request id: the client's `X-Request-Id` when it is sane (1–128 of `[A-Za-z0-9._:-]`),
/// else a new random one.
pub fn request_id(incoming: Option<&HeaderValue>) -> HeaderValue {
    if let Some(v) = incoming {
        let b = v.as_bytes();
        if !b.is_empty()
            && b.len() <= 128
            && b.iter()
                .all(|&c| c.is_ascii_alphanumeric() || b"._:-".contains(&c))
        {
            // A copy: a slice of the client's header would pin hyper's whole read buffer for as
            // long as the record waits for the recorder.
            return HeaderValue::from_bytes(b).unwrap_or_else(|_| v.clone());
        }
    }
    let id = format!("{:032x}", fastrand::u128(..));
    HeaderValue::from_str(&id).unwrap_or(HeaderValue::from_static("-"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> Record {
        Record {
            at: SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000),
            client: "192.0.2.7".parse().unwrap(),
            method: Method::GET,
            target: Some(PathAndQuery::from_static("/geoserver/wms?request=GetMap")),
            pool: Some(Pool::Reads),
            class: Some(Class::Ows {
                service: Some("wms"),
                op: Some("GetMap"),
            }),
            node: Some(Arc::from("gs-replica-1")),
            status: 200,
            received: 0,
            sent: 1234,
            duration: Duration::from_micros(3250),
            retries: 1,
            request_id: Some(HeaderValue::from_static("abc-123")),
        }
    }

    fn settings(format: LogFormat, query: bool) -> LogSettings {
        LogSettings {
            access: true,
            format,
            query,
        }
    }

    #[test]
    fn text_lines_read_at_a_glance() {
        let mut line = String::new();
        format_line(&mut line, &record(), &settings(LogFormat::Text, false));
        assert_eq!(
            line,
            "2027-01-15T08:00:00.000Z 192.0.2.7 \"GET /geoserver/wms\" reads wms:GetMap gs-replica-1 200 in=0 out=1234 3.2ms retries=1 id=abc-123\n"
        );
        line.clear();
        format_line(&mut line, &record(), &settings(LogFormat::Text, true));
        assert!(
            line.contains("\"GET /geoserver/wms?request=GetMap\""),
            "{line}"
        );
    }

    #[test]
    fn json_lines_carry_every_field() {
        let mut line = String::new();
        format_line(&mut line, &record(), &settings(LogFormat::Json, false));
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["class"], "wms:GetMap");
        assert_eq!(v["node"], "gs-replica-1");
        assert_eq!(v["status"], 200);
        assert_eq!(v["bytes_out"], 1234);
        assert_eq!(v["duration_ms"], 3.25);
        assert_eq!(v["retries"], 1);
        assert_eq!(v["request_id"], "abc-123");
        assert_eq!(v["path"], "/geoserver/wms");
    }

    #[test]
    fn request_ids_are_kept_when_sane() {
        let sane = HeaderValue::from_static("f00d-42");
        assert_eq!(request_id(Some(&sane)), sane);
        assert_ne!(
            request_id(Some(&sane)).as_bytes().as_ptr(),
            sane.as_bytes().as_ptr(),
            "a copy, not a slice of the client's buffer"
        );
        for bad in ["", "has space", "quote\"", &"x".repeat(200)] {
            let v = HeaderValue::from_str(bad).unwrap();
            let id = request_id(Some(&v));
            assert_eq!(id.len(), 32, "{bad:?} replaced");
        }
        assert_ne!(request_id(None), request_id(None));
    }
}
