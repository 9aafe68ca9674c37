//! Nodes, pools and master election. The routing state is one immutable [`Snapshot`] published
//! through `arc-swap`: a request does one `load`, and only the cluster task ([`Cluster::run`]), fed by
//! the watchdogs and by passive failure reports from the data path, builds and stores new ones.

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use arc_swap::{ArcSwap, ArcSwapOption};
use http::uri::Authority;
use tokio::sync::{mpsc, Notify};

use crate::balance::{pick_p2c, pick_round_robin, slow_start_weight};
use crate::classify::{Classifier, Pool};
use crate::config::{Balance, Config, DiscoverSpec, Failback, NodeSpec};
use crate::control::{Action, Command, CommandError, Reconfigure, Report};
use crate::discover::{self, Discovered, Resolve};
use crate::health::{self, CheckResult, HealthState, Observation, State};
use crate::metrics::Metrics;
use crate::queue::Queues;

/// One configured GeoServer node. Shared by every snapshot; its counters live as long as it does.
#[derive(Debug)]
pub struct Node {
    pub spec: NodeSpec,
    /// The name, shared with request records.
    pub label: Arc<str>,
    /// Unique for the life of the process: a node that leaves and comes back is a new node.
    pub id: u64,
    /// `http://host:port`.
    pub origin: String,
    in_flight: AtomicUsize,
    /// Consecutive failures seen on live traffic (passive health).
    failures: AtomicU32,
    last_check: ArcSwapOption<CheckResult>,
    /// Why and when the node was last ejected.
    last_ejection: ArcSwapOption<Ejection>,
    /// When its health state last changed (unix milliseconds; 0 = never).
    state_since: AtomicU64,
    /// Requests answered by it, for rates on the status page.
    served: AtomicU64,
    /// Wakes its watchdog for an immediate check.
    recheck: Arc<Notify>,
    /// Where requests wait for a slot at `max_requests`; a freed slot is handed over there.
    queues: Arc<Queues>,
    /// Whether `limits.max_requests` is set (only then is anyone waiting for a slot).
    capped: AtomicBool,
    /// The pools the node serves in the snapshot in force ([`SERVES_READS`], [`SERVES_MASTER`]).
    serving: AtomicU8,
}

const SERVES_READS: u8 = 1;
const SERVES_MASTER: u8 = 2;

impl Node {
    pub fn new(spec: NodeSpec, queues: Arc<Queues>) -> Node {
        static NEXT_ID: AtomicU64 = AtomicU64::new(1);
        Node {
            label: Arc::from(spec.name.as_str()),
            origin: spec.origin(),
            spec,
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            in_flight: AtomicUsize::new(0),
            failures: AtomicU32::new(0),
            last_check: ArcSwapOption::empty(),
            last_ejection: ArcSwapOption::empty(),
            state_since: AtomicU64::new(0),
            served: AtomicU64::new(0),
            recheck: Arc::new(Notify::new()),
            queues,
            capped: AtomicBool::new(false),
            serving: AtomicU8::new(0),
        }
    }

    pub fn name(&self) -> &str {
        &self.spec.name
    }

    pub fn authority(&self) -> &Authority {
        &self.spec.authority
    }

    /// Requests forwarded to the node whose response has not ended yet.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Takes an in-flight slot unless `max` (0 = unlimited) are taken; held until the guard drops.
    pub fn try_start_request(self: &Arc<Self>, max: usize) -> Option<InFlight> {
        if max == 0 {
            self.in_flight.fetch_add(1, Ordering::Relaxed);
        } else {
            self.in_flight
                .fetch_update(Ordering::AcqRel, Ordering::Relaxed, |n| {
                    (n < max).then_some(n + 1)
                })
                .ok()?;
        }
        Some(InFlight(self.clone()))
    }

    pub fn last_check(&self) -> Option<Arc<CheckResult>> {
        self.last_check.load_full()
    }

    pub fn last_ejection(&self) -> Option<Arc<Ejection>> {
        self.last_ejection.load_full()
    }

    /// When the health state last changed, unix milliseconds (0: never).
    pub fn state_since_ms(&self) -> u64 {
        self.state_since.load(Ordering::Relaxed)
    }

    fn eject_reason(&self, reason: String) {
        self.last_ejection.store(Some(Arc::new(Ejection {
            at: SystemTime::now(),
            reason,
        })));
    }

    /// Requests this node answered (any status).
    pub fn served(&self) -> u64 {
        self.served.load(Ordering::Relaxed)
    }

    /// Whether the node serves `pool` in the snapshot in force.
    pub fn serves(&self, pool: Pool) -> bool {
        let bit = match pool {
            Pool::Reads => SERVES_READS,
            Pool::Master => SERVES_MASTER,
        };
        self.serving.load(Ordering::Relaxed) & bit != 0
    }

    /// Records a live-traffic outcome; returns true each time `threshold` failures in a row have
    /// been seen since the last report (so a refused report is made again, not lost for good).
    pub fn record(&self, ok: bool, threshold: u32) -> bool {
        self.served.fetch_add(1, Ordering::Relaxed);
        if ok {
            if self.failures.load(Ordering::Relaxed) != 0 {
                self.failures.store(0, Ordering::Relaxed);
            }
            false
        } else {
            threshold > 0
                && self.failures.fetch_add(1, Ordering::Relaxed) + 1 >= threshold
                // Of concurrent failures past the threshold, only the one that resets reports.
                && self.failures.swap(0, Ordering::Relaxed) >= threshold
        }
    }
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Why a node was ejected.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ejection {
    pub at: SystemTime,
    /// `active: unexpected status 503`, `passive: 5 consecutive failures…`, `operator: disable`.
    pub reason: String,
}

/// What the operator said of a node (admin API).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Mode {
    /// Takes traffic when healthy.
    #[default]
    Active,
    /// Gets no new requests; those in flight finish.
    Draining,
    /// Maintenance: no traffic, never master.
    Disabled,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Active => "active",
            Mode::Draining => "draining",
            Mode::Disabled => "disabled",
        }
    }
}

/// Holds one in-flight slot on a node. When dropped at `max_requests`, the slot goes to the
/// longest-waiting request that may use it, if any (`Queues::hand_over`).
#[derive(Debug)]
pub struct InFlight(Arc<Node>);

impl InFlight {
    /// A slot passed on from a finished request: counted already.
    pub(crate) fn handed(node: &Arc<Node>) -> InFlight {
        InFlight(node.clone())
    }

    /// The node the slot is on.
    pub fn node(&self) -> &Arc<Node> {
        &self.0
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let node = &self.0;
        if node.capped.load(Ordering::Relaxed) && node.queues.hand_over(node) {
            return;
        }
        node.in_flight.fetch_sub(1, Ordering::Release);
    }
}

/// The outcome of asking a pool for a node.
#[derive(Debug)]
pub enum Acquire {
    Got(Arc<Node>, InFlight),
    /// Every eligible node is at `max_requests`: wait for a slot.
    Busy,
    /// No node can take it: the pool is empty, or every node in it was tried already.
    Empty,
}

/// Everything a request needs to be routed, immutable once published.
#[derive(Debug)]
pub struct Snapshot {
    /// The configuration in force (limits, timeouts, retries… for the request path).
    pub config: Arc<Config>,
    pub nodes: Arc<[Arc<Node>]>,
    /// Each node's health, by index.
    pub states: Box<[State]>,
    /// What the operator said of each node, by index.
    pub modes: Box<[Mode]>,
    /// Indices of the healthy nodes that serve reads.
    pub readers: Box<[usize]>,
    /// Index of the current master.
    pub master: Option<usize>,
    pub classifier: Arc<Classifier>,
    pub balance: Balance,
    /// When each node was re-admitted after being down, while its slow start may still run.
    admitted: Box<[Option<Instant>]>,
    slow_start: Duration,
    /// Round-robin position, shared by every snapshot (a publish does not restart the turn).
    ticket: Arc<AtomicUsize>,
}

impl Snapshot {
    /// Takes a slot on a node of `pool`: a reader not in `tried` (node ids) and under
    /// `limits.max_requests`, or the master.
    pub fn acquire(&self, pool: Pool, tried: &[u64], rng: &mut fastrand::Rng) -> Acquire {
        let max = self.config.limits.max_requests;
        let position = match pool {
            Pool::Master => match self.master {
                Some(i) => i,
                None => return Acquire::Empty,
            },
            Pool::Reads => {
                let readers = &self.readers;
                if readers.iter().all(|&i| tried.contains(&self.nodes[i].id)) {
                    return Acquire::Empty;
                }
                let now = self.admitted.iter().any(Option::is_some).then(Instant::now);
                let cand = |r: usize| {
                    let i = readers[r];
                    let node = &self.nodes[i];
                    let load = node.in_flight();
                    if tried.contains(&node.id) || (max > 0 && load >= max) {
                        return None;
                    }
                    let weight = match (now, self.admitted[i]) {
                        (Some(now), Some(at)) => {
                            slow_start_weight(now.saturating_duration_since(at), self.slow_start)
                        }
                        _ => 1.0,
                    };
                    Some((load, weight))
                };
                let picked = match self.balance {
                    Balance::LeastOutstanding => pick_p2c(readers.len(), rng, cand),
                    Balance::RoundRobin => {
                        let ticket = self.ticket.fetch_add(1, Ordering::Relaxed);
                        pick_round_robin(readers.len(), ticket, rng, cand)
                    }
                };
                match picked {
                    Some(r) => readers[r],
                    None => return Acquire::Busy,
                }
            }
        };
        debug_assert_eq!(self.states[position], State::Up);
        let node = &self.nodes[position];
        match node.try_start_request(max) {
            Some(slot) => Acquire::Got(node.clone(), slot),
            None => Acquire::Busy,
        }
    }

    /// Sets the node gauges (on publish, and at scrape time for the requests in flight).
    pub fn export(&self, metrics: &Metrics) {
        metrics.keep_nodes(self.nodes.iter().map(|n| n.name().to_string()).collect());
        for (i, node) in self.nodes.iter().enumerate() {
            metrics.set_node(
                node.name(),
                self.role(i),
                self.states[i] == State::Up,
                self.master == Some(i),
                node.in_flight(),
            );
        }
    }

    /// The role of the node at `position`: `master`, `candidate` or `replica`.
    pub fn role(&self, position: usize) -> &'static str {
        if self.master == Some(position) {
            "master"
        } else if self.nodes[position].spec.master.is_some() {
            "candidate"
        } else {
            "replica"
        }
    }

    /// The position of the node with this id.
    pub fn position(&self, id: u64) -> Option<usize> {
        self.nodes.iter().position(|n| n.id == id)
    }

    pub fn master(&self) -> Option<&Arc<Node>> {
        self.master.map(|i| &self.nodes[i])
    }
}

/// A master candidate, as election sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Candidate {
    /// The node's id.
    pub node: u64,
    pub priority: u32,
    pub state: State,
}

/// Chooses the master among `candidates` (in priority order, best first).
///
/// - `Sticky`: a current master that is up keeps the role.
/// - Otherwise, the first candidate that is up. A better candidate not checked yet (`Unknown`, only at
///   startup) holds the election back, so that start order never decides who is master.
pub fn elect(candidates: &[Candidate], current: Option<u64>, failback: Failback) -> Option<u64> {
    if failback == Failback::Sticky {
        if let Some(c) = candidates.iter().find(|c| Some(c.node) == current) {
            if c.state == State::Up {
                return current;
            }
        }
    }
    for c in candidates {
        match c.state {
            State::Up => return Some(c.node),
            State::Unknown => return None,
            State::Down => {}
        }
    }
    None
}

/// May one more node be ejected passively? At most `percent` % of `total` nodes, and never the last.
pub fn passive_ejection_allowed(already: usize, total: usize, percent: u32) -> bool {
    let cap = total * percent as usize / 100;
    already < cap && already + 1 < total
}

/// A node of the cluster as the cluster task keeps it.
struct Member {
    node: Arc<Node>,
    health: HealthState,
    /// Ejected passively and not re-admitted since.
    passive: bool,
    /// Re-admitted at, while its slow start may still run.
    admitted: Option<Instant>,
    mode: Mode,
    watchdog: tokio::task::AbortHandle,
}

impl Drop for Member {
    fn drop(&mut self) {
        self.watchdog.abort();
    }
}

/// The live cluster: the published snapshot and what builds it. One task owns it; watchdogs,
/// the data path (passive reports), the admin API (commands) and reloads talk to it by channel.
pub struct Cluster {
    shared: Arc<ArcSwap<Snapshot>>,
    config: Arc<Config>,
    members: Vec<Member>,
    /// A candidate the operator promoted (by id): master while it is up and active.
    promoted: Option<u64>,
    queues: Arc<Queues>,
    observations: mpsc::Receiver<Observation>,
    observation_tx: mpsc::Sender<Observation>,
    reports: mpsc::Receiver<Report>,
    report_tx: mpsc::Sender<Report>,
    commands: mpsc::Receiver<Command>,
    command_tx: mpsc::Sender<Command>,
    reconfigures: mpsc::Receiver<Reconfigure>,
    reconfigure_tx: mpsc::Sender<Reconfigure>,
    resolver: Arc<dyn Resolve>,
    /// How watchdogs speak to `https://` nodes.
    node_tls: tokio_rustls::TlsConnector,
    /// One resolver task per `discover = "dns"` entry, by entry name.
    resolvers: HashMap<String, (DiscoverSpec, tokio::task::AbortHandle)>,
    /// The last non-empty answer of each entry.
    discovered: HashMap<String, BTreeSet<SocketAddr>>,
    discoveries: mpsc::Receiver<Discovered>,
    discovery_tx: mpsc::Sender<Discovered>,
    metrics: Arc<Metrics>,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for (_, task) in self.resolvers.values() {
            task.abort();
        }
    }
}

impl Cluster {
    /// Builds the first snapshot (every node unknown, so no traffic until checks pass). Must be
    /// called within the runtime: it starts a watchdog per node.
    pub fn new(
        config: Arc<Config>,
        queues: Arc<Queues>,
        metrics: Arc<Metrics>,
        resolver: Arc<dyn Resolve>,
        node_tls: Arc<rustls::ClientConfig>,
    ) -> Cluster {
        let (discovery_tx, discoveries) = mpsc::channel(16);
        let (observation_tx, observations) = mpsc::channel(256);
        let (report_tx, reports) = mpsc::channel(64);
        let (command_tx, commands) = mpsc::channel(16);
        let (reconfigure_tx, reconfigures) = mpsc::channel(4);
        let snapshot = Snapshot {
            config: config.clone(),
            states: Box::new([]),
            modes: Box::new([]),
            nodes: Arc::new([]),
            readers: Box::new([]),
            master: None,
            classifier: Arc::new(classifier(&config)),
            balance: config.routing.balance,
            admitted: Box::new([]),
            slow_start: config.routing.slow_start.0,
            ticket: Arc::new(AtomicUsize::new(0)),
        };
        let mut cluster = Cluster {
            shared: Arc::new(ArcSwap::from_pointee(snapshot)),
            config: config.clone(),
            members: Vec::new(),
            promoted: None,
            queues,
            observations,
            observation_tx,
            reports,
            report_tx,
            commands,
            command_tx,
            reconfigures,
            reconfigure_tx,
            resolver,
            node_tls: tokio_rustls::TlsConnector::from(node_tls),
            resolvers: HashMap::new(),
            discovered: HashMap::new(),
            discoveries,
            discovery_tx,
            metrics,
        };
        cluster.reconfigure(config);
        cluster
    }

    /// The handle the data path and the admin listener read.
    pub fn shared(&self) -> Arc<ArcSwap<Snapshot>> {
        self.shared.clone()
    }

    /// Where the admin API sends operator commands.
    pub fn commander(&self) -> mpsc::Sender<Command> {
        self.command_tx.clone()
    }

    /// Where reloads send a new configuration.
    pub fn reconfigurer(&self) -> mpsc::Sender<Reconfigure> {
        self.reconfigure_tx.clone()
    }

    /// Where the data path reports failing nodes (never blocks: a full channel drops the report).
    pub fn reporter(&self) -> mpsc::Sender<Report> {
        self.report_tx.clone()
    }

    /// Applies what the watchdogs, the data path, the operator and reloads say, until aborted
    /// (which drops the members, and so stops their watchdogs).
    pub fn run(mut self) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    Some(obs) = self.observations.recv() => self.observe(obs),
                    Some(report) = self.reports.recv() => self.report(report),
                    Some(command) = self.commands.recv() => {
                        let result = self.command(&command.node, command.action);
                        let _ = command.reply.send(result);
                    }
                    Some(found) = self.discoveries.recv() => self.discovered(found),
                    Some(change) = self.reconfigures.recv() => {
                        self.reconfigure(change.config);
                        let _ = change.done.send(());
                    }
                    else => return,
                }
            }
        })
    }

    /// Puts a configuration in force: nodes that stay (same name and spec) keep their health,
    /// mode and counters; new ones start unknown; removed ones get no new requests (those in flight
    /// finish, holding the node). Routing, health and limits change for the next request.
    pub fn reconfigure(&mut self, config: Arc<Config>) {
        let health_changed = config.health_differs(&self.config);
        // Discovery: keep the resolvers (and last answers) of entries that stay as they were.
        self.resolvers.retain(|name, (spec, task)| {
            let keep = config.discover.iter().any(|d| d.name == *name && d == spec);
            if !keep {
                task.abort();
            }
            keep
        });
        let resolvers = &self.resolvers;
        self.discovered
            .retain(|name, _| resolvers.contains_key(name));
        for spec in &config.discover {
            if !self.resolvers.contains_key(&spec.name) {
                let task = tokio::spawn(discover::resolve_forever(
                    spec.clone(),
                    self.resolver.clone(),
                    self.discovery_tx.clone(),
                ));
                self.resolvers
                    .insert(spec.name.clone(), (spec.clone(), task.abort_handle()));
            }
        }
        self.config = config;
        self.apply_nodes(health_changed);
        let snapshot = self.shared.load_full();
        self.publish(&snapshot, Some(Arc::new(classifier(&self.config))));
    }

    /// The nodes the configuration and the last DNS answers call for.
    fn desired(&self) -> Vec<NodeSpec> {
        let mut nodes = self.config.nodes.clone();
        for spec in &self.config.discover {
            if let Some(addrs) = self.discovered.get(&spec.name) {
                nodes.extend(addrs.iter().map(|&addr| spec.node(addr)));
            }
        }
        nodes
    }

    /// Makes the members match [`desired`](Self::desired).
    fn apply_nodes(&mut self, restart_watchdogs: bool) {
        let desired = self.desired();
        let config = self.config.clone();
        let mut old: Vec<Member> = std::mem::take(&mut self.members);
        let starting = self.shared.load().nodes.is_empty() && old.is_empty();
        for spec in &desired {
            let kept = old
                .iter()
                .position(|m| m.node.spec == *spec)
                .map(|i| old.swap_remove(i));
            let member = match kept {
                Some(mut m) if restart_watchdogs => {
                    m.watchdog.abort();
                    m.watchdog = self.watch(&m.node, &config);
                    m
                }
                Some(m) => m,
                None => {
                    let node = Arc::new(Node::new(spec.clone(), self.queues.clone()));
                    if !starting {
                        tracing::info!(node = node.name(), url = %node.origin, "node added: it joins once its health check passes");
                    }
                    let watchdog = self.watch(&node, &config);
                    Member {
                        node,
                        health: HealthState::default(),
                        passive: false,
                        admitted: None,
                        mode: Mode::Active,
                        watchdog,
                    }
                }
            };
            // A reload may set or lift `max_requests` for every node.
            member
                .node
                .capped
                .store(config.limits.max_requests > 0, Ordering::Relaxed);
            self.members.push(member);
        }
        for gone in &old {
            // Its slots, when they free, go to nobody's queue.
            gone.node.serving.store(0, Ordering::Relaxed);
            tracing::info!(
                node = gone.node.name(),
                in_flight = gone.node.in_flight(),
                "node removed: in-flight requests finish"
            );
        }
    }

    /// Applies a DNS answer: addresses that appeared become nodes (joining after a passing check),
    /// those that disappeared are removed (their in-flight requests finish).
    pub fn discovered(&mut self, found: Discovered) {
        if !self.resolvers.contains_key(&found.entry)
            || self.discovered.get(&found.entry) == Some(&found.addrs)
        {
            return;
        }
        tracing::info!(
            entry = found.entry,
            addresses = found.addrs.len(),
            "DNS answer changed"
        );
        self.discovered.insert(found.entry, found.addrs);
        self.apply_nodes(false);
        let snapshot = self.shared.load_full();
        self.publish(&snapshot, None);
    }

    fn watch(&self, node: &Arc<Node>, config: &Config) -> tokio::task::AbortHandle {
        tokio::spawn(health::watchdog(
            node.id,
            node.authority().clone(),
            config.health.clone(),
            self.observation_tx.clone(),
            node.recheck.clone(),
            node.spec.tls.then(|| self.node_tls.clone()),
        ))
        .abort_handle()
    }

    fn member(&mut self, id: u64) -> Option<&mut Member> {
        self.members.iter_mut().find(|m| m.node.id == id)
    }

    /// Applies one check result; publishes a new snapshot when a node changes state.
    pub fn observe(&mut self, obs: Observation) {
        let (rise, fall) = (self.config.health.rise, self.config.health.fall);
        let metrics = self.metrics.clone();
        let Some(m) = self.member(obs.node) else {
            return;
        };
        let node = m.node.clone();
        let ok = obs.result.ok;
        metrics
            .checks
            .with_label_values(&[node.name(), if ok { "pass" } else { "fail" }])
            .inc();
        let detail = obs.result.detail.clone();
        node.last_check.store(Some(Arc::new(obs.result)));
        let Some(t) = m.health.observe(ok, rise, fall) else {
            return;
        };
        node.state_since
            .store(unix_ms(SystemTime::now()), Ordering::Relaxed);
        if t.to == State::Up {
            tracing::info!(node = node.name(), from = %t.from, to = %t.to, reason = %detail, "node admitted");
            node.failures.store(0, Ordering::Relaxed);
            m.passive = false;
            if t.from == State::Down {
                m.admitted = Some(Instant::now());
            }
        } else {
            tracing::warn!(node = node.name(), from = %t.from, to = %t.to, reason = %detail, "node ejected");
            if t.from == State::Up {
                metrics
                    .ejections
                    .with_label_values(&[node.name(), "active"])
                    .inc();
                node.eject_reason(format!("active: {detail}"));
            }
        }
        let snapshot = self.shared.load_full();
        self.publish(&snapshot, None);
    }

    /// Applies a passive failure report: ejects the node at once, within the passive share.
    pub fn report(&mut self, report: Report) {
        let Report::Failing { node: id, failures } = report;
        let already = self.members.iter().filter(|m| m.passive).count();
        let total = self.members.len();
        let percent = self.config.passive.max_ejected_percent;
        let metrics = self.metrics.clone();
        let Some(m) = self.member(id) else { return };
        if m.health.state() != State::Up {
            return;
        }
        let node = m.node.clone();
        if !passive_ejection_allowed(already, total, percent) {
            static KEPT: crate::log::LogBudget = crate::log::LogBudget::new(1);
            let Some(held_back) = KEPT.allow() else {
                return;
            };
            tracing::warn!(
                held_back,
                node = node.name(),
                failures,
                already,
                "node failing on live traffic, but the passive ejection cap is reached: kept"
            );
            return;
        }
        if let Some(t) = m.health.eject() {
            let reason = format!("{failures} consecutive failures on live traffic");
            tracing::warn!(node = node.name(), from = %t.from, to = %t.to, reason = %reason, "node ejected (passive)");
            m.passive = true;
            node.failures.store(0, Ordering::Relaxed);
            node.state_since
                .store(unix_ms(SystemTime::now()), Ordering::Relaxed);
            node.eject_reason(format!("passive: {reason}"));
            metrics
                .ejections
                .with_label_values(&[node.name(), "passive"])
                .inc();
            let snapshot = self.shared.load_full();
            self.publish(&snapshot, None);
        }
    }

    /// Applies an operator command; publishes the change.
    pub fn command(&mut self, name: &str, action: Action) -> Result<(), CommandError> {
        let Some(m) = self.members.iter_mut().find(|m| m.node.name() == name) else {
            return Err(CommandError::UnknownNode(name.to_string()));
        };
        let node = m.node.clone();
        match action {
            Action::Check => {
                node.recheck.notify_one();
                tracing::info!(node = name, "operator: health re-check");
                return Ok(());
            }
            Action::Promote => {
                if node.spec.master.is_none() {
                    return Err(CommandError::NotCandidate(name.to_string()));
                }
                if m.health.state() != State::Up || m.mode != Mode::Active {
                    return Err(CommandError::NotReady(name.to_string()));
                }
                self.promoted = Some(node.id);
            }
            Action::Drain => m.mode = Mode::Draining,
            Action::Disable => {
                m.mode = Mode::Disabled;
                node.eject_reason("operator: disabled".to_string());
            }
            Action::Enable => m.mode = Mode::Active,
        }
        let mode = self
            .members
            .iter()
            .find(|m| m.node.id == node.id)
            .map_or(Mode::Active, |m| m.mode);
        tracing::warn!(node = name, action = ?action, mode = mode.as_str(), "operator command");
        let snapshot = self.shared.load_full();
        self.publish(&snapshot, None);
        Ok(())
    }

    /// Builds and stores the snapshot for the members as they are now.
    fn publish(&mut self, old: &Snapshot, classifier: Option<Arc<Classifier>>) {
        // A node the operator drains or disables is, for routing, down.
        let usable = |m: &Member| {
            if m.mode == Mode::Active {
                m.health.state()
            } else {
                State::Down
            }
        };
        let mut candidates: Vec<(usize, Candidate)> = self
            .members
            .iter()
            .enumerate()
            .filter_map(|(i, m)| {
                m.node.spec.master.map(|priority| {
                    (
                        i,
                        Candidate {
                            node: m.node.id,
                            priority,
                            state: usable(m),
                        },
                    )
                })
            })
            .collect();
        candidates.sort_by_key(|(i, c)| (c.priority, *i));
        let candidates: Vec<Candidate> = candidates.into_iter().map(|(_, c)| c).collect();
        if let Some(p) = self.promoted {
            if !candidates
                .iter()
                .any(|c| c.node == p && c.state == State::Up)
            {
                self.promoted = None;
            }
        }
        let old_master = old.master().map(|n| n.id);
        let elected = match self.promoted {
            // A promoted candidate holds the role like a sticky master, until it fails.
            Some(p) => elect(&candidates, Some(p), Failback::Sticky),
            None => elect(&candidates, old_master, self.config.routing.failback),
        };
        let master = elected.and_then(|id| self.members.iter().position(|m| m.node.id == id));
        let states: Box<[State]> = self.members.iter().map(|m| m.health.state()).collect();
        let readers: Box<[usize]> = (0..self.members.len())
            .filter(|&i| usable(&self.members[i]) == State::Up && self.members[i].node.spec.reads)
            .collect();
        let all_checked = states.iter().all(|s| *s != State::Unknown);
        if elected != old_master {
            let name = |id: Option<u64>| {
                id.and_then(|id| {
                    old.nodes
                        .iter()
                        .chain(self.members.iter().map(|m| &m.node))
                        .find(|n| n.id == id)
                })
                .map_or("none".to_string(), |n| n.name().to_string())
            };
            if old_master.is_none() && elected.is_some() {
                tracing::info!(master = name(elected), "master elected");
            } else if elected.is_some() {
                tracing::warn!(
                    from = name(old_master),
                    to = name(elected),
                    "master changed"
                );
                self.metrics.failovers.inc();
            } else if !candidates.is_empty() && all_checked {
                tracing::error!(
                    from = name(old_master),
                    "no healthy master: writes are unavailable"
                );
            }
        }
        if readers.is_empty() && all_checked && !self.members.is_empty() {
            tracing::error!("no healthy node serves reads: reads are unavailable");
        }
        // Slow start only matters while it runs; later snapshots forget finished ramps.
        let ramp = self.config.routing.slow_start.0;
        for m in &mut self.members {
            if m.admitted.is_some_and(|t| t.elapsed() >= ramp) {
                m.admitted = None;
            }
        }
        let snapshot = Arc::new(Snapshot {
            config: self.config.clone(),
            nodes: self.members.iter().map(|m| m.node.clone()).collect(),
            modes: self.members.iter().map(|m| m.mode).collect(),
            states,
            readers,
            master,
            classifier: classifier.unwrap_or_else(|| old.classifier.clone()),
            balance: self.config.routing.balance,
            admitted: self.members.iter().map(|m| m.admitted).collect(),
            slow_start: ramp,
            ticket: old.ticket.clone(),
        });
        for (i, node) in snapshot.nodes.iter().enumerate() {
            let reads = if snapshot.readers.contains(&i) {
                SERVES_READS
            } else {
                0
            };
            let master = if snapshot.master == Some(i) {
                SERVES_MASTER
            } else {
                0
            };
            node.serving.store(reads | master, Ordering::Relaxed);
        }
        snapshot.export(&self.metrics);
        self.shared.store(snapshot);
        // A reload may have lifted or raised `max_requests`: queued requests look again.
        self.queues.wake_all();
    }
}

fn classifier(config: &Config) -> Classifier {
    Classifier::new(
        &config.routing.context_path,
        config.routes.clone(),
        config.routing.lookahead,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::Waiter;
    use State::{Down, Unknown, Up};

    /// A node capped at `max_requests`, serving the given pools.
    fn capped_node(name: &str, queues: &Arc<Queues>, reads: bool, master: bool) -> Arc<Node> {
        let node = Node::new(
            NodeSpec {
                name: name.into(),
                authority: Authority::from_static("127.0.0.1:1"),
                tls: false,
                master: master.then_some(1),
                reads,
            },
            queues.clone(),
        );
        node.capped.store(true, Ordering::Relaxed);
        let bits = if reads { SERVES_READS } else { 0 } | if master { SERVES_MASTER } else { 0 };
        node.serving.store(bits, Ordering::Relaxed);
        Arc::new(node)
    }

    fn holds(waiter: &Waiter, node: &Arc<Node>) -> bool {
        waiter.take_slot().is_some_and(|slot| {
            let same = Arc::ptr_eq(slot.node(), node);
            std::mem::forget(slot); // keep it counted: the test hands slots around by hand
            same
        })
    }

    #[test]
    fn a_freed_slot_goes_to_the_oldest_waiter_that_may_use_it() {
        let queues = Arc::new(Queues::default());
        let a = capped_node("a", &queues, true, false);
        let slots: Vec<InFlight> = (0..3).map(|_| a.try_start_request(3).unwrap()).collect();
        let first = queues.join(Pool::Reads, &[a.id]); // a retry that already tried `a`
        let second = queues.join(Pool::Reads, &[]);
        let third = queues.join(Pool::Reads, &[]);
        let mut slots = slots.into_iter();
        drop(slots.next());
        assert!(!holds(&first, &a), "it tried `a` already");
        assert!(holds(&second, &a), "the oldest that may use it");
        assert_eq!(a.in_flight(), 3, "handed over, not freed");
        drop(slots.next());
        assert!(holds(&third, &a));
        // Nobody else may use it: the slot is freed.
        drop(slots.next());
        assert_eq!(a.in_flight(), 2);
        queues.leave(Pool::Reads, &first);
    }

    #[test]
    fn each_pool_has_its_own_queue() {
        let queues = Arc::new(Queues::default());
        let reader = capped_node("r", &queues, true, false);
        let master = capped_node("m", &queues, false, true);
        let wants_master = queues.join(Pool::Master, &[]);
        let wants_reads = queues.join(Pool::Reads, &[]);
        drop(reader.try_start_request(1).unwrap());
        assert!(
            !holds(&wants_master, &reader),
            "a reader's slot is no master slot"
        );
        assert!(holds(&wants_reads, &reader));
        drop(master.try_start_request(1).unwrap());
        assert!(holds(&wants_master, &master));
    }

    #[test]
    fn a_slot_handed_to_a_waiter_that_left_goes_on() {
        let queues = Arc::new(Queues::default());
        let a = capped_node("a", &queues, true, false);
        let gone = queues.join(Pool::Reads, &[]);
        let next = queues.join(Pool::Reads, &[]);
        drop(a.try_start_request(1).unwrap());
        // `gone` got the slot but left (its client hung up) without using it.
        queues.leave(Pool::Reads, &gone);
        assert!(holds(&next, &a));
        assert_eq!(a.in_flight(), 1);
        queues.leave(Pool::Reads, &next);
    }

    #[test]
    fn passive_reports_keep_coming_after_a_refused_one() {
        let queues = Arc::new(Queues::default());
        let node = capped_node("n", &queues, true, false);
        let failures: Vec<bool> = (0..7).map(|_| node.record(false, 3)).collect();
        assert_eq!(
            failures,
            [false, false, true, false, false, true, false],
            "every third failure in a row reports, whatever became of the last report"
        );
        assert!(!node.record(true, 3));
        assert!(!node.record(false, 3), "a success starts the count again");
        assert!(!node.record(false, 0), "0 disables");
    }

    fn cands(states: &[State]) -> Vec<Candidate> {
        states
            .iter()
            .enumerate()
            .map(|(i, &state)| Candidate {
                node: i as u64,
                priority: i as u32 + 1,
                state,
            })
            .collect()
    }

    #[test]
    fn first_up_candidate_wins() {
        assert_eq!(elect(&cands(&[Up, Up]), None, Failback::Sticky), Some(0));
        assert_eq!(
            elect(&cands(&[Down, Up]), None, Failback::Priority),
            Some(1)
        );
        assert_eq!(
            elect(&cands(&[Down, Down]), Some(0), Failback::Sticky),
            None
        );
        assert_eq!(elect(&[], None, Failback::Sticky), None);
    }

    #[test]
    fn an_unchecked_better_candidate_holds_the_election() {
        assert_eq!(elect(&cands(&[Unknown, Up]), None, Failback::Sticky), None);
        assert_eq!(
            elect(&cands(&[Down, Unknown, Up]), None, Failback::Priority),
            None
        );
        assert_eq!(
            elect(&cands(&[Up, Unknown]), None, Failback::Priority),
            Some(0)
        );
    }

    #[test]
    fn sticky_keeps_a_promoted_master_priority_moves_back() {
        // Node 0 died, node 1 was promoted; node 0 is back.
        assert_eq!(elect(&cands(&[Up, Up]), Some(1), Failback::Sticky), Some(1));
        assert_eq!(
            elect(&cands(&[Up, Up]), Some(1), Failback::Priority),
            Some(0)
        );
        // The promoted one dies: the best up candidate takes over.
        assert_eq!(
            elect(&cands(&[Up, Down, Up]), Some(1), Failback::Sticky),
            Some(0)
        );
    }

    #[test]
    fn passive_ejection_keeps_most_of_the_pool() {
        assert!(passive_ejection_allowed(0, 3, 50), "one of three");
        assert!(!passive_ejection_allowed(1, 3, 50), "not two of three");
        assert!(passive_ejection_allowed(1, 4, 50));
        assert!(!passive_ejection_allowed(0, 1, 100), "never the last node");
        assert!(!passive_ejection_allowed(0, 2, 0), "0 % disables");
    }

    #[test]
    fn election_follows_priority_not_config_order() {
        let c = vec![
            Candidate {
                node: 2,
                priority: 1,
                state: Up,
            },
            Candidate {
                node: 0,
                priority: 2,
                state: Up,
            },
        ];
        assert_eq!(elect(&c, None, Failback::Priority), Some(2));
    }
}
