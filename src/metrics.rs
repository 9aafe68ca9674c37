//! Prometheus metrics, `geolb_` prefixed, in base units. A leaf: it knows no other module (the
//! cluster snapshot sets its own gauges through [`Metrics::keep_nodes`] and [`Metrics::set_node`]).
//! The request path never looks a metric up by label: it increments handles resolved here once, or
//! leaves the work to the recorder task and the cluster task.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

/// Every metric geolb exports.
pub struct Metrics {
    registry: Registry,
    /// Requests answered, by pool, class (`wms:GetMap`, `rest`…), node (`none` when geolb answered
    /// itself) and status class (`2xx`…).
    pub requests: IntCounterVec,
    /// Request duration, from the head read to the last body byte sent, by pool.
    pub duration: HistogramVec,
    /// Request body bytes received from clients.
    pub received: IntCounter,
    /// Response body bytes sent to clients.
    pub sent: IntCounter,
    pub node_up: IntGaugeVec,
    pub in_flight: IntGaugeVec,
    pub master: IntGaugeVec,
    pub checks: IntCounterVec,
    pub ejections: IntCounterVec,
    pub failovers: IntCounter,
    pub retries_reads: IntCounter,
    pub retries_master: IntCounter,
    pub budget_exhausted: IntCounter,
    pub queue_wait: Histogram,
    pub queue_full: IntCounter,
    pub queue_timeout: IntCounter,
    pub reloads: IntCounterVec,
    pub records_dropped: IntCounter,
    /// Requests sent to the master only because geolb could not be sure it reads them as the node
    /// will (`Class::Ambiguous`), by reason: reads, perhaps, that cost the master capacity.
    pub played_safe: IntCounterVec,
    /// Reads answered with an OGC exception and asked again of another node, by the first node,
    /// the exception code and the outcome (`lag`, `deaf`, `charged`, `everywhere`, `unanswered`,
    /// `refused`).
    pub second_opinions: IntCounterVec,
    /// Reads sent to the master because their client wrote a moment ago, by how it was known
    /// (`cookie`, `address`).
    pub pinned_reads: IntCounterVec,
    /// Nodes a rolling catalog reload took, by result (`reloaded`, `failed`, `skipped`).
    pub catalog_reloads: IntCounterVec,
    /// 1 while a rolling catalog reload runs.
    pub catalog_reload_running: IntGauge,
    /// Times a node was found stalled, by node.
    pub stalls: IntCounterVec,
    /// 1 while a node is stalled.
    pub stalled: IntGaugeVec,
    /// Answers that were streaming to their clients when their node stalled (not hedgeable).
    pub unhedgeable: IntCounterVec,
    /// Each node's recent time to first byte (peak-EWMA), seconds.
    pub latency: prometheus::GaugeVec,
    /// Extra attempts of a request, by kind and result (handles resolved once).
    extra: [[IntCounter; 3]; 3],
    /// Client connections open (TLS handshakes included, admin excluded).
    pub client_connections: IntGauge,
    /// Client connections geolb closed, by reason.
    closed: IntCounterVec,
    /// The nodes of the snapshot in force: series of any other node are removed (DNS-discovered
    /// nodes come and go: their series must not pile up).
    live: Mutex<HashSet<String>>,
    /// Changes whenever the set of nodes does (series handles kept elsewhere are then stale).
    nodes_changed: std::sync::atomic::AtomicU64,
}

fn counter(registry: &Registry, name: &str, help: &str) -> IntCounter {
    let c = IntCounter::new(name, help).expect("a valid static metric name");
    registry
        .register(Box::new(c.clone()))
        .expect("metric names are unique");
    c
}

fn counters(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels).expect("a valid static metric name");
    registry
        .register(Box::new(c.clone()))
        .expect("metric names are unique");
    c
}

fn gauge(registry: &Registry, name: &str, help: &str) -> IntGauge {
    let g = IntGauge::new(name, help).expect("a valid static metric name");
    registry
        .register(Box::new(g.clone()))
        .expect("metric names are unique");
    g
}

fn gauges(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    let g = IntGaugeVec::new(Opts::new(name, help), labels).expect("a valid static metric name");
    registry
        .register(Box::new(g.clone()))
        .expect("metric names are unique");
    g
}

/// Latency buckets for map traffic: tiles in milliseconds, WFS and WPS in minutes.
const BUCKETS: &[f64] = &[
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
];

impl Metrics {
    /// Builds the registry. The names and labels are static: this cannot fail at run time.
    pub fn new() -> Metrics {
        let r = Registry::new();
        let requests = counters(
            &r,
            "geolb_requests_total",
            "Requests answered, by pool, request class, node and status class.",
            &["pool", "class", "node", "code"],
        );
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "geolb_request_duration_seconds",
                "Time to answer a request, by pool.",
            )
            .buckets(BUCKETS.to_vec()),
            &["pool"],
        )
        .expect("valid histogram");
        r.register(Box::new(duration.clone()))
            .expect("metric names are unique");
        let queue_wait = Histogram::with_opts(
            HistogramOpts::new(
                "geolb_queue_wait_seconds",
                "Time requests waited for a slot at limits.max_requests.",
            )
            .buckets(BUCKETS.to_vec()),
        )
        .expect("valid histogram");
        r.register(Box::new(queue_wait.clone()))
            .expect("metric names are unique");
        let retries = counters(
            &r,
            "geolb_retries_total",
            "Requests sent again to another node, by pool.",
            &["pool"],
        );
        let queue_rejected = counters(
            &r,
            "geolb_queue_rejected_total",
            "Requests answered 503 because no slot freed up, by reason (full, timeout).",
            &["reason"],
        );
        Metrics {
            requests,
            duration,
            received: counter(&r, "geolb_received_bytes_total", "Request body bytes received from clients."),
            sent: counter(&r, "geolb_sent_bytes_total", "Response body bytes sent to clients."),
            node_up: gauges(&r, "geolb_node_up", "1 when the node is up (admitted), by node and role.", &["node", "role"]),
            in_flight: gauges(&r, "geolb_node_in_flight_requests", "Requests in flight on each node.", &["node"]),
            master: gauges(&r, "geolb_master_info", "1 for the current master.", &["node"]),
            checks: counters(&r, "geolb_health_checks_total", "Health checks, by node and result.", &["node", "result"]),
            ejections: counters(&r, "geolb_ejections_total", "Nodes ejected, by node and reason (active, passive).", &["node", "reason"]),
            failovers: counter(&r, "geolb_failovers_total", "Times the master role moved from one node to another."),
            retries_reads: retries.with_label_values(&["reads"]),
            retries_master: retries.with_label_values(&["master"]),
            budget_exhausted: counter(&r, "geolb_retry_budget_exhausted_total", "Retries refused by the retry budget."),
            queue_wait,
            queue_full: queue_rejected.with_label_values(&["full"]),
            queue_timeout: queue_rejected.with_label_values(&["timeout"]),
            reloads: counters(&r, "geolb_config_reloads_total", "Configuration reloads, by result.", &["result"]),
            records_dropped: counter(
                &r,
                "geolb_records_dropped_total",
                "Request records (access log, request metrics) dropped because the recorder fell behind.",
            ),
            played_safe: counters(
                &r,
                "geolb_reads_to_master_total",
                "Requests sent to the master because geolb could not be sure how the node reads them, by reason (non-canonical path, doubtful key, XML prologue...).",
                &["reason"],
            ),
            second_opinions: counters(
                &r,
                "geolb_second_opinions_total",
                "Reads answered with an OGC exception document and asked again of another node, by the node that sent it, its exception code, and the outcome: lag (a replica did not know what the master knew), deaf (lagging past consistency.deaf_after: ejected), charged (another node answered: a failure counted), everywhere (the other node answered an exception too), unanswered (no other node answered), refused (the retry budget).",
                &["node", "code", "outcome"],
            ),
            pinned_reads: counters(
                &r,
                "geolb_pinned_reads_total",
                "Reads sent to the master because their client wrote within consistency.read_your_writes, by how the client was known (cookie, address).",
                &["by"],
            ),
            catalog_reloads: counters(
                &r,
                "geolb_catalog_reload_nodes_total",
                "Nodes a rolling catalog reload took, by result: reloaded (drained, reloaded, re-admitted), failed (did not come back: the reload stopped there), skipped.",
                &["result"],
            ),
            catalog_reload_running: gauge(&r, "geolb_catalog_reload_running", "1 while a rolling catalog reload runs."),
            stalls: counters(
                &r,
                "geolb_stalls_total",
                "Times a node was found stalled: requests waiting on it, no response head for longer than its recent behaviour explains (stalls.multiple, stalls.min), while its peers answered. A stalled node gets no new requests until it answers; it is not ejected.",
                &["node"],
            ),
            stalled: gauges(&r, "geolb_node_stalled", "1 while a node is stalled.", &["node"]),
            unhedgeable: counters(
                &r,
                "geolb_unhedgeable_answers_total",
                "Answers already streaming to their clients when their node stalled: a byte reached the client, so they could not be hedged.",
                &["node"],
            ),
            latency: {
                let g = prometheus::GaugeVec::new(
                    Opts::new("geolb_node_latency_seconds", "Each node's recent time to first byte (peak-EWMA, decaying over routing.decay): what picking compares."),
                    &["node"],
                )
                .expect("a valid static metric name");
                r.register(Box::new(g.clone())).expect("metric names are unique");
                g
            },
            extra: {
                let c = counters(
                    &r,
                    "geolb_extra_attempts_total",
                    "Extra attempts of one request (at most retries.max in all, within one budget), by kind (retry: after a failure; opinion: a second opinion on an OGC exception; hedge: a read waiting longer than its class usually does, or on a stalled node) and result (sent; won: its answer went to the client; refused: by the budget).",
                    &["kind", "result"],
                );
                let kinds = ["retry", "opinion", "hedge"];
                let results = ["sent", "won", "refused"];
                kinds.map(|k| results.map(|res| c.with_label_values(&[k, res])))
            },
            client_connections: gauge(&r, "geolb_client_connections", "Client connections open (TLS handshakes included, admin excluded)."),
            closed: counters(
                &r,
                "geolb_client_connections_closed_total",
                "Client connections geolb closed, by reason: idle (no request within timeouts.client_headers), stalled (the client stopped reading a response), client-cap (limits.max_connections_per_client).",
                &["reason"],
            ),
            live: Mutex::default(),
            nodes_changed: std::sync::atomic::AtomicU64::new(0),
            registry: r,
        }
    }

    /// The counter of extra attempts of `kind` with `result`.
    pub fn extra(&self, kind: Extra, result: ExtraResult) -> &IntCounter {
        &self.extra[kind as usize][result as usize]
    }

    /// The counter of connections closed for `reason` (`idle`, `stalled`, `client-cap`).
    pub fn connections_cut(&self, reason: &str) -> IntCounter {
        self.closed.with_label_values(&[reason])
    }

    /// Removes every series of a node that is not in `live` (`none` stands for geolb itself).
    fn sweep(&self, live: &HashSet<String>) {
        use prometheus::core::Collector;
        let gone = |node: &str| node != "none" && !live.contains(node);
        for vec in [&self.requests, &self.second_opinions] {
            for family in vec.collect() {
                for metric in family.get_metric() {
                    let labels: HashMap<&str, &str> = metric
                        .get_label()
                        .iter()
                        .map(|l| (l.name(), l.value()))
                        .collect();
                    if labels.get("node").is_some_and(|n| gone(n)) {
                        let _ = vec.remove(&labels);
                    }
                }
            }
        }
    }

    /// Removes every series labelled with `node`.
    fn forget(&self, node: &str) {
        for role in ["master", "candidate", "replica"] {
            let _ = self.node_up.remove_label_values(&[node, role]);
        }
        let _ = self.master.remove_label_values(&[node]);
        let _ = self.in_flight.remove_label_values(&[node]);
        let _ = self.stalls.remove_label_values(&[node]);
        let _ = self.stalled.remove_label_values(&[node]);
        let _ = self.unhedgeable.remove_label_values(&[node]);
        let _ = self.latency.remove_label_values(&[node]);
        for result in ["pass", "fail"] {
            let _ = self.checks.remove_label_values(&[node, result]);
        }
        for reason in ["active", "passive"] {
            let _ = self.ejections.remove_label_values(&[node, reason]);
        }
    }

    /// The nodes in the cluster now: the series of any other node are removed (also those a
    /// request finishing after its node left made again).
    pub fn keep_nodes(&self, live: HashSet<String>) {
        let mut known = self.live.lock().unwrap_or_else(|p| p.into_inner());
        for node in known.difference(&live) {
            self.forget(node);
        }
        self.sweep(&live);
        if *known != live {
            self.nodes_changed
                .fetch_add(1, std::sync::atomic::Ordering::Release);
        }
        *known = live;
    }

    /// A number that changes whenever the set of nodes does: handles to per-node series taken
    /// before a change may point at removed series.
    pub fn nodes_generation(&self) -> u64 {
        self.nodes_changed
            .load(std::sync::atomic::Ordering::Acquire)
    }

    /// Sets a node's gauges: its role (`master`, `candidate`, `replica`), whether it is up and the
    /// master, its requests in flight, whether it is stalled, its recent time to first byte.
    pub fn set_node(&self, name: &str, role: &str, up: bool, master: bool, node: NodeGauges) {
        let in_flight = node.in_flight;
        self.stalled
            .with_label_values(&[name])
            .set(i64::from(node.stalled));
        self.latency
            .with_label_values(&[name])
            .set(node.latency.as_secs_f64());
        for other in ["master", "candidate", "replica"] {
            if other != role {
                let _ = self.node_up.remove_label_values(&[name, other]);
            }
        }
        self.node_up
            .with_label_values(&[name, role])
            .set(i64::from(up));
        self.master
            .with_label_values(&[name])
            .set(i64::from(master));
        self.in_flight
            .with_label_values(&[name])
            .set(in_flight as i64);
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        if TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .is_err()
        {
            return String::new();
        }
        String::from_utf8(out).unwrap_or_default()
    }
}

/// A node's gauges that change with traffic.
pub struct NodeGauges {
    pub in_flight: usize,
    pub stalled: bool,
    pub latency: std::time::Duration,
}

/// What an extra attempt of a request was for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Extra {
    Retry,
    Opinion,
    Hedge,
}

/// What became of an extra attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExtraResult {
    Sent,
    Won,
    Refused,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

/// The status class label of a status code.
pub fn code_class(status: u16) -> &'static str {
    match status {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}
