//! The last step of the request path: each answered request leaves a [`Record`] that the
//! recorder turns into request metrics and an access-log line (text or JSON, on stdout). The
//! request path only pushes the record into a bounded lock-free queue (a full queue drops it,
//! counted in `geolb_records_dropped_total`, rather than slowing requests); a writer thread drains
//! the queue every [`DRAIN_EVERY`], counts, formats and writes each batch with one write.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::hash::{BuildHasherDefault, Hasher};
use std::io::Write as _;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use crossbeam_queue::ArrayQueue;
use http::uri::PathAndQuery;
use http::{HeaderValue, Method};
use prometheus::{Histogram, IntCounter};

use crate::classify::{Class, Pool};
use crate::config::{LogFormat, LogSettings};
use crate::metrics::{code_class, Metrics};

/// Records waiting for the writer; more are dropped (and counted).
const QUEUE: usize = 4096;
/// How often the writer thread drains the queue (sooner when it is half full).
pub const DRAIN_EVERY: Duration = Duration::from_millis(50);

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
    /// Why it went to its pool: `read`, `write`, `stateful`, `played-safe`, `rule:N`.
    pub why: Option<&'static str>,
    /// The node that answered; `None` when geolb answered itself.
    pub node: Option<Arc<str>>,
    pub status: u16,
    pub received: u64,
    pub sent: u64,
    /// From the head read to the last body byte sent.
    pub duration: Duration,
    /// Waiting for a free slot (`limits.max_requests`).
    pub queued: Duration,
    /// Connecting to the node, when the request needed a new connection.
    pub connect: Option<Duration>,
    /// From the head read to the node's response head.
    pub first_byte: Option<Duration>,
    pub retries: u32,
    pub request_id: Option<HeaderValue>,
}

/// Where records go: never blocks. Dropping it stops the writer thread once it has written what
/// was queued.
pub struct Recorder {
    shared: Arc<Shared>,
    writer: std::thread::Thread,
}

struct Shared {
    queue: ArrayQueue<Record>,
    metrics: Arc<Metrics>,
    settings: ArcSwap<LogSettings>,
    /// `settings.access`, read by each request.
    access: AtomicBool,
    stop: AtomicBool,
}

impl Recorder {
    /// Starts the writer thread.
    pub fn start(settings: LogSettings, metrics: Arc<Metrics>) -> Recorder {
        let shared = Arc::new(Shared {
            queue: ArrayQueue::new(QUEUE),
            metrics,
            access: AtomicBool::new(settings.access),
            settings: ArcSwap::from_pointee(settings),
            stop: AtomicBool::new(false),
        });
        let theirs = shared.clone();
        let writer = std::thread::Builder::new()
            .name("geolb-recorder".into())
            .spawn(move || write_forever(&theirs))
            .map(|handle| handle.thread().clone())
            // No thread (the process is out of them): records queue up, then are dropped.
            .unwrap_or_else(|_| std::thread::current());
        Recorder { shared, writer }
    }

    /// New access-log settings (a reload), for the next records.
    pub fn set_settings(&self, settings: LogSettings) {
        self.shared.access.store(settings.access, Ordering::Relaxed);
        self.shared.settings.store(Arc::new(settings));
    }

    pub fn metrics(&self) -> &Metrics {
        &self.shared.metrics
    }

    /// Whether access-log lines are written now (the record's target is kept only then).
    pub fn logs_access(&self) -> bool {
        self.shared.access.load(Ordering::Relaxed)
    }

    /// Hands a record over; if the writer is far behind, it is dropped and counted.
    pub fn record(&self, record: Record) {
        if self.shared.queue.push(record).is_err() {
            self.shared.metrics.records_dropped.inc();
        }
        if self.shared.queue.len() > QUEUE / 2 {
            self.writer.unpark();
        }
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        self.writer.unpark();
    }
}

fn write_forever(shared: &Shared) {
    let mut counters = Counters::default();
    let mut batch = String::with_capacity(64 * 1024);
    loop {
        let stopping = shared.stop.load(Ordering::Acquire);
        let settings = shared.settings.load();
        counters.follow_nodes(&shared.metrics);
        while let Some(record) = shared.queue.pop() {
            counters.count(&shared.metrics, &record);
            if settings.access {
                format_line(&mut batch, &record, &settings);
                if batch.len() >= 60 * 1024 {
                    write_out(&mut batch);
                }
            }
        }
        write_out(&mut batch);
        if stopping {
            return;
        }
        std::thread::park_timeout(DRAIN_EVERY);
    }
}

fn write_out(batch: &mut String) {
    if !batch.is_empty() {
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(batch.as_bytes());
        let _ = out.flush();
        batch.clear();
    }
}

/// A `geolb_requests_total` series: pool, class, node, status class.
type SeriesKey = (Option<Pool>, Option<Class>, Option<Arc<str>>, &'static str);

/// The request metrics' series, looked up once per label set (the writer thread's own).
#[derive(Default)]
struct Counters {
    requests: HashMap<SeriesKey, IntCounter, BuildHasherDefault<Fx>>,
    /// By pool: reads, master, none.
    durations: [Option<Histogram>; 3],
    nodes_generation: u64,
}

impl Counters {
    /// Forgets the series handles once nodes came or went (a node's series are removed when it
    /// leaves; one that comes back gets new ones).
    fn follow_nodes(&mut self, metrics: &Metrics) {
        let generation = metrics.nodes_generation();
        if generation != self.nodes_generation {
            self.requests.clear();
            self.nodes_generation = generation;
        }
    }

    fn count(&mut self, metrics: &Metrics, r: &Record) {
        let code = code_class(r.status);
        // Nodes come and go (DNS discovery): start over rather than grow for ever.
        if self.requests.len() >= 4096 {
            self.requests.clear();
        }
        self.requests
            .entry((r.pool, r.class, r.node.clone(), code))
            .or_insert_with(|| {
                let class = r
                    .class
                    .map_or_else(|| "none".to_string(), |c| c.to_string());
                metrics.requests.with_label_values(&[
                    r.pool.map_or("none", pool_name),
                    &class,
                    r.node.as_deref().unwrap_or("none"),
                    code,
                ])
            })
            .inc();
        if let Some(Class::Ambiguous(reason)) = r.class {
            metrics.played_safe.with_label_values(&[reason]).inc();
        }
        let by_pool = match r.pool {
            Some(Pool::Reads) => 0,
            Some(Pool::Master) => 1,
            None => 2,
        };
        self.durations[by_pool]
            .get_or_insert_with(|| {
                metrics
                    .duration
                    .with_label_values(&[r.pool.map_or("none", pool_name)])
            })
            .observe(r.duration.as_secs_f64());
        metrics.received.inc_by(r.received);
        metrics.sent.inc_by(r.sent);
    }
}

/// A fast hash for the few, short, trusted keys of [`Counters`] (the multiply-rotate hash of
/// rustc's `FxHasher`).
#[derive(Default)]
struct Fx(u64);

impl Hasher for Fx {
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.write_u64(u64::from_le_bytes(word));
        }
    }

    fn write_u64(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }

    fn write_u8(&mut self, b: u8) {
        self.write_u64(u64::from(b));
    }

    fn write_usize(&mut self, n: usize) {
        self.write_u64(n as u64);
    }

    fn finish(&self) -> u64 {
        self.0
    }
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
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let total = ms(r.duration);
    let why = r.why.unwrap_or("-");
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
            let _ = write!(
                line,
                " {node} {} in={} out={} {total:.1}ms retries={} why={why} queued={:.1}ms",
                r.status,
                r.received,
                r.sent,
                r.retries,
                ms(r.queued)
            );
            match r.connect {
                Some(d) => {
                    let _ = write!(line, " connect={:.1}ms", ms(d));
                }
                None => line.push_str(" connect=-"),
            }
            match r.first_byte {
                Some(d) => {
                    let _ = write!(line, " first_byte={:.1}ms", ms(d));
                }
                None => line.push_str(" first_byte=-"),
            }
            let _ = writeln!(line, " id={id}");
        }
        LogFormat::Json => {
            let class = r.class.map(|c| c.to_string());
            let round = |d: Duration| (ms(d) * 1000.0).round() / 1000.0;
            let value = serde_json::json!({
                "time": time.to_string(),
                "client": r.client.to_string(),
                "method": r.method.as_str(),
                "path": path,
                "pool": r.pool.map(pool_name),
                "class": class,
                "why": r.why,
                "node": r.node.as_deref(),
                "status": r.status,
                "bytes_in": r.received,
                "bytes_out": r.sent,
                "duration_ms": round(r.duration),
                "queued_ms": round(r.queued),
                "connect_ms": r.connect.map(round),
                "first_byte_ms": r.first_byte.map(round),
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
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut id = [0u8; 32];
    let mut n = fastrand::u128(..);
    for b in id.iter_mut().rev() {
        *b = HEX[(n & 0xf) as usize];
        n >>= 4;
    }
    HeaderValue::from_bytes(&id).unwrap_or(HeaderValue::from_static("-"))
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
            why: Some("read"),
            node: Some(Arc::from("gs-replica-1")),
            status: 200,
            received: 0,
            sent: 1234,
            duration: Duration::from_micros(3250),
            queued: Duration::ZERO,
            connect: Some(Duration::from_micros(400)),
            first_byte: Some(Duration::from_micros(2100)),
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
            "2027-01-15T08:00:00.000Z 192.0.2.7 \"GET /geoserver/wms\" reads wms:GetMap gs-replica-1 200 in=0 out=1234 3.2ms retries=1 why=read queued=0.0ms connect=0.4ms first_byte=2.1ms id=abc-123\n"
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
        assert_eq!(v["why"], "read");
        assert_eq!(v["connect_ms"], 0.4);
        assert_eq!(v["first_byte_ms"], 2.1);
        assert_eq!(v["queued_ms"], 0.0);
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
