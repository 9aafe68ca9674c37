//! Nodes, pools and master election. The routing state is one immutable [`Snapshot`] published
//! through `arc-swap`: a request does one `load`, and only the cluster task ([`Cluster::run`]), fed by
//! the watchdogs and by passive failure reports from the data path, builds and stores new ones.
//!
//! [`node`] (a node, its slots and the wait queues), [`snapshot`] (what a request reads),
//! [`elect`] (master election), [`balance`] (picking a reader), [`health`] (the watchdogs),
//! [`discover`] (DNS discovery); the cluster task is here.

pub mod balance;
pub mod discover;
pub mod elect;
pub mod health;
pub mod latency;
pub mod node;
pub mod rolling;
pub mod snapshot;
pub mod stall;

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use arc_swap::ArcSwap;
use tokio::sync::mpsc;

use crate::classify::Classifier;
use crate::config::{Config, DiscoverSpec, Failback, NodeSpec};
use crate::control::{Action, Command, CommandError, Reconfigure, Report};
use crate::metrics::Metrics;
use crate::upstream::NodeTls;
use discover::{Discovered, Resolve};
use elect::{elect, passive_ejection_allowed, Candidate};
use health::{HealthState, Observation, State};
use node::unix_ms;
pub use node::{InFlight, Mode, Node, Queues, Waiter};
pub use snapshot::{Acquire, Snapshot};

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
    node_tls: NodeTls,
    /// One resolver task per `discover = "dns"` entry, by entry name.
    resolvers: HashMap<String, (DiscoverSpec, tokio::task::AbortHandle)>,
    /// The last non-empty answer of each entry.
    discovered: HashMap<String, BTreeSet<SocketAddr>>,
    discoveries: mpsc::Receiver<Discovered>,
    discovery_tx: mpsc::Sender<Discovered>,
    metrics: Arc<Metrics>,
    /// Each reader's progress between stall ticks.
    stalls: stall::Stalls,
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
            node_tls: NodeTls::new(node_tls.clone()),
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
            node_tls: NodeTls::new(node_tls),
            resolvers: HashMap::new(),
            discovered: HashMap::new(),
            discoveries,
            discovery_tx,
            metrics,
            stalls: stall::Stalls::default(),
        };
        cluster.reconfigure(config, None);
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
            let mut stall_tick = tokio::time::interval(stall::TICK);
            stall_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    now = stall_tick.tick() => self.look_for_stalls(now),
                    Some(obs) = self.observations.recv() => self.observe(obs),
                    Some(report) = self.reports.recv() => self.report(report),
                    Some(command) = self.commands.recv() => {
                        let result = self.command(&command.node, command.action);
                        let _ = command.reply.send(result);
                    }
                    Some(found) = self.discoveries.recv() => self.discovered(found),
                    Some(change) = self.reconfigures.recv() => {
                        self.reconfigure(change.config, Some(change.node_tls));
                        let _ = change.done.send(());
                    }
                    else => return,
                }
            }
        })
    }

    /// Marks the readers that stalled (and clears those that left the readers), logs and counts it.
    fn look_for_stalls(&mut self, now: tokio::time::Instant) {
        let snapshot = self.shared.load();
        let readers: Vec<&Arc<Node>> = snapshot
            .readers
            .iter()
            .map(|&i| &snapshot.nodes[i])
            .collect();
        // A node out of the readers (ejected, drained) is no longer stalled: when it is back, it
        // takes requests.
        for (i, node) in snapshot.nodes.iter().enumerate() {
            if !snapshot.readers.contains(&i) && node.set_stalled(false) {
                self.metrics
                    .stalled
                    .with_label_values(&[node.name()])
                    .set(0);
            }
        }
        for change in self.stalls.tick(now, &readers, &snapshot.config) {
            let name = change.node.name();
            tracing::warn!(
                node = name,
                waiting = change.node.awaiting(),
                streaming = change.streaming,
                "node stalled: no answer for longer than its recent behaviour explains; no new requests until it answers"
            );
            self.metrics.stalls.with_label_values(&[name]).inc();
            self.metrics
                .unhedgeable
                .with_label_values(&[name])
                .inc_by(change.streaming as u64);
            self.metrics.stalled.with_label_values(&[name]).set(1);
        }
    }

    /// Puts a configuration in force: nodes that stay (same name and spec) keep their health,
    /// mode and counters; new ones start unknown; removed ones get no new requests (those in flight
    /// finish, holding the node). Routing, health, limits, timeouts and the node TLS change for
    /// the next request; with new node TLS, `https://` nodes' idle connections are closed.
    pub fn reconfigure(
        &mut self,
        config: Arc<Config>,
        node_tls: Option<Arc<rustls::ClientConfig>>,
    ) {
        let health_changed = config.health_differs(&self.config);
        let tls_changed = node_tls.is_some();
        if let Some(node_tls) = node_tls {
            self.node_tls = NodeTls::new(node_tls);
        }
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
        self.apply_nodes(health_changed, tls_changed);
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
    /// `health_changed`: every watchdog restarts; `tls_changed`: those of `https://` nodes do,
    /// and their idle connections (made with the old settings) are closed.
    fn apply_nodes(&mut self, health_changed: bool, tls_changed: bool) {
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
                Some(mut m) if health_changed || (tls_changed && m.node.spec.tls) => {
                    if m.node.spec.tls {
                        m.node.upstream.clear();
                    }
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
            // A reload may set or lift `max_requests` for every node, or change the idle time.
            member
                .node
                .capped
                .store(config.limits.max_requests > 0, Ordering::Relaxed);
            member
                .node
                .upstream
                .set_max_idle(config.forwarding.pool_idle_timeout.0);
            self.members.push(member);
        }
        for gone in &old {
            // Its slots, when they free, go to nobody's queue.
            gone.node.set_serving(false, false);
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
        self.apply_nodes(false, false);
        let snapshot = self.shared.load_full();
        self.publish(&snapshot, None);
    }

    fn watch(&self, node: &Arc<Node>, config: &Config) -> tokio::task::AbortHandle {
        tokio::spawn(health::watchdog(
            node.clone(),
            config.health.clone(),
            self.observation_tx.clone(),
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
        if obs.result.ok {
            self.stalls.forgive(obs.node, tokio::time::Instant::now());
        }
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
        if ok && node.check_passed(latency::now_ns(tokio::time::Instant::now())) {
            // Its checks pass again (the requests that were waiting on it were hedged away, so
            // no data-path answer would have told).
            tracing::info!(
                node = node.name(),
                "node answers its checks again: no longer stalled"
            );
            metrics.stalled.with_label_values(&[node.name()]).set(0);
        }
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
        let (id, failures, cause) = match report {
            Report::Failing {
                node,
                failures,
                cause,
            } => (node, failures, cause),
            Report::Refused { node } => return self.refused(node),
        };
        let already = self.members.iter().filter(|m| m.passive).count();
        let total = self.members.len();
        let percent = self.config.passive.max_ejected_percent;
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
        let reason = match cause {
            Some(cause) => {
                format!("{failures} consecutive failures on live traffic, the last: {cause}")
            }
            None => format!("{failures} consecutive failures on live traffic"),
        };
        self.eject_passively(id, reason);
    }

    /// A refused connection: nothing listens on the node's port, so it is ejected at once, past
    /// the passive share (the cap guards against failures that may not be the node's; a refusal
    /// is the node's host saying so). Its active checks re-admit it. Not when passive ejection is
    /// off (`passive.consecutive_failures = 0`).
    fn refused(&mut self, id: u64) {
        if self.config.passive.consecutive_failures == 0 {
            return;
        }
        self.eject_passively(id, "connection refused: nothing listens on its port".into());
    }

    /// Takes an up node out of the pool on what live traffic showed; publishes the change.
    fn eject_passively(&mut self, id: u64, reason: String) {
        let metrics = self.metrics.clone();
        let Some(m) = self.member(id) else { return };
        let node = m.node.clone();
        if let Some(t) = m.health.eject() {
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
            node_tls: self.node_tls.clone(),
        });
        for (i, node) in snapshot.nodes.iter().enumerate() {
            node.set_serving(snapshot.readers.contains(&i), snapshot.master == Some(i));
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
