//! Nodes, pools and master election. The routing state is one immutable [`Snapshot`] published
//! through `arc-swap`: a request does one `load`, and only the cluster task ([`Cluster::run`]), fed by
//! the watchdogs and by passive failure reports from the data path, builds and stores new ones.

use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use arc_swap::{ArcSwap, ArcSwapOption};
use http::uri::Authority;
use tokio::sync::{mpsc, Notify};

use crate::balance::{pick_p2c, pick_round_robin, slow_start_weight};
use crate::classify::Classifier;
use crate::config::{Balance, Config, Failback, NodeSpec, Pool};
use crate::health::{self, CheckResult, HealthState, Observation, State};
use crate::metrics::Metrics;

/// One configured GeoServer node. Shared by every snapshot; its counters live as long as it does.
#[derive(Debug)]
pub struct Node {
    pub spec: NodeSpec,
    /// The name, shared with request records.
    pub label: Arc<str>,
    /// Position in [`Snapshot::nodes`].
    pub index: usize,
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
    /// Woken when a slot frees up, for requests queued at `max_requests`; `None` when uncapped.
    slot_freed: Option<Arc<Notify>>,
}

impl Node {
    pub fn new(spec: NodeSpec, index: usize, slot_freed: Option<Arc<Notify>>) -> Node {
        Node {
            label: Arc::from(spec.name.as_str()),
            origin: spec.origin(),
            spec,
            index,
            in_flight: AtomicUsize::new(0),
            failures: AtomicU32::new(0),
            last_check: ArcSwapOption::empty(),
            last_ejection: ArcSwapOption::empty(),
            state_since: AtomicU64::new(0),
            served: AtomicU64::new(0),
            recheck: Arc::new(Notify::new()),
            slot_freed,
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

    /// Records a live-traffic outcome; returns true when this failure reaches `threshold` in a row.
    pub fn record(&self, ok: bool, threshold: u32) -> bool {
        self.served.fetch_add(1, Ordering::Relaxed);
        if ok {
            if self.failures.load(Ordering::Relaxed) != 0 {
                self.failures.store(0, Ordering::Relaxed);
            }
            false
        } else {
            threshold > 0 && self.failures.fetch_add(1, Ordering::Relaxed) + 1 == threshold
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

/// An operator's command to the cluster task.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Drain,
    Disable,
    Enable,
    Promote,
    Check,
}

impl Action {
    pub fn parse(word: &str) -> Option<Action> {
        Some(match word {
            "drain" => Action::Drain,
            "disable" => Action::Disable,
            "enable" => Action::Enable,
            "promote" => Action::Promote,
            "check" => Action::Check,
            _ => return None,
        })
    }
}

/// Why a command was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    #[error("no node named `{0}`")]
    UnknownNode(String),
    #[error("`{0}` is not a master candidate")]
    NotCandidate(String),
    #[error("`{0}` is not up and active: it cannot be master now")]
    NotReady(String),
    #[error("the cluster task is not running")]
    Stopped,
}

/// A command and where its answer goes.
pub struct Command {
    pub node: String,
    pub action: Action,
    pub reply: tokio::sync::oneshot::Sender<Result<(), CommandError>>,
}

/// Holds one in-flight slot on a node.
#[derive(Debug)]
pub struct InFlight(Arc<Node>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Release);
        if let Some(notify) = &self.0.slot_freed {
            notify.notify_waiters();
        }
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
    /// Round-robin position.
    ticket: AtomicUsize,
}

impl Snapshot {
    /// Takes a slot on a node of `pool`: a reader not in `tried` (by index) and under `max` (0 =
    /// unlimited) requests, or the master.
    pub fn acquire(
        &self,
        pool: Pool,
        tried: &[usize],
        max: usize,
        rng: &mut fastrand::Rng,
    ) -> Acquire {
        let node = match pool {
            Pool::Master => match self.master() {
                Some(node) => node,
                None => return Acquire::Empty,
            },
            Pool::Reads => {
                let readers = &self.readers;
                if readers.iter().all(|i| tried.contains(i)) {
                    return Acquire::Empty;
                }
                let now = self.admitted.iter().any(Option::is_some).then(Instant::now);
                let cand = |i: usize| {
                    let node = &self.nodes[readers[i]];
                    let load = node.in_flight();
                    if tried.contains(&node.index) || (max > 0 && load >= max) {
                        return None;
                    }
                    let weight = match (now, self.admitted[node.index]) {
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
                    Some(i) => &self.nodes[readers[i]],
                    None => return Acquire::Busy,
                }
            }
        };
        debug_assert_eq!(self.states[node.index], State::Up);
        match node.try_start_request(max) {
            Some(slot) => Acquire::Got(node.clone(), slot),
            None => Acquire::Busy,
        }
    }

    pub fn master(&self) -> Option<&Arc<Node>> {
        self.master.map(|i| &self.nodes[i])
    }
}

/// A master candidate, as election sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Candidate {
    pub node: usize,
    pub priority: u32,
    pub state: State,
}

/// Chooses the master among `candidates` (in priority order, best first).
///
/// - `Sticky`: a current master that is up keeps the role.
/// - Otherwise, the first candidate that is up. A better candidate not checked yet (`Unknown`, only at
///   startup) holds the election back, so that start order never decides who is master.
pub fn elect(
    candidates: &[Candidate],
    current: Option<usize>,
    failback: Failback,
) -> Option<usize> {
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

/// A report from the data path to the cluster task.
#[derive(Debug)]
pub enum Report {
    /// `consecutive_failures` live failures in a row on this node.
    Failing { node: usize, failures: u32 },
}

/// The live cluster: the published snapshot and what builds it.
pub struct Cluster {
    shared: Arc<ArcSwap<Snapshot>>,
    config: Arc<Config>,
    health: Vec<HealthState>,
    /// Ejected passively and not re-admitted since.
    passive: Vec<bool>,
    admitted: Vec<Option<Instant>>,
    candidates: Vec<Candidate>,
    reports: mpsc::Receiver<Report>,
    report_tx: mpsc::Sender<Report>,
    commands: mpsc::Receiver<Command>,
    command_tx: mpsc::Sender<Command>,
    modes: Vec<Mode>,
    /// A candidate the operator promoted: master while it is up and active.
    promoted: Option<usize>,
    metrics: Arc<Metrics>,
}

impl Cluster {
    /// Builds the first snapshot (every node unknown, so no traffic until checks pass).
    pub fn new(config: Arc<Config>, slot_freed: Arc<Notify>, metrics: Arc<Metrics>) -> Cluster {
        let capped = (config.limits.max_requests > 0).then_some(slot_freed);
        let nodes: Arc<[Arc<Node>]> = config
            .nodes
            .iter()
            .cloned()
            .enumerate()
            .map(|(i, s)| Arc::new(Node::new(s, i, capped.clone())))
            .collect();
        let mut candidates: Vec<Candidate> = nodes
            .iter()
            .filter_map(|n| {
                n.spec.master.map(|priority| Candidate {
                    node: n.index,
                    priority,
                    state: State::Unknown,
                })
            })
            .collect();
        candidates.sort_by_key(|c| (c.priority, c.node));
        let classifier = Arc::new(Classifier::new(
            &config.routing.context_path,
            config.routes.clone(),
            config.routing.lookahead,
        ));
        let n = nodes.len();
        let snapshot = Snapshot {
            states: vec![State::Unknown; n].into(),
            modes: vec![Mode::Active; n].into(),
            nodes,
            readers: Box::new([]),
            master: None,
            classifier,
            balance: config.routing.balance,
            admitted: vec![None; n].into(),
            slow_start: config.routing.slow_start.0,
            ticket: AtomicUsize::new(0),
        };
        let (report_tx, reports) = mpsc::channel(64);
        let (command_tx, commands) = mpsc::channel(16);
        Cluster {
            shared: Arc::new(ArcSwap::from_pointee(snapshot)),
            config,
            health: vec![HealthState::default(); n],
            passive: vec![false; n],
            admitted: vec![None; n],
            candidates,
            reports,
            report_tx,
            commands,
            command_tx,
            modes: vec![Mode::Active; n],
            promoted: None,
            metrics,
        }
    }

    /// The handle the data path and the admin listener read.
    pub fn shared(&self) -> Arc<ArcSwap<Snapshot>> {
        self.shared.clone()
    }

    /// Where the admin API sends operator commands.
    pub fn commander(&self) -> mpsc::Sender<Command> {
        self.command_tx.clone()
    }

    /// Where the data path reports failing nodes (never blocks: a full channel drops the report).
    pub fn reporter(&self) -> mpsc::Sender<Report> {
        self.report_tx.clone()
    }

    /// Starts a watchdog per node and applies their reports until the returned task is aborted.
    pub fn run(mut self) -> tokio::task::JoinHandle<()> {
        let (tx, mut rx) = mpsc::channel::<Observation>(64);
        let snapshot = self.shared.load_full();
        let watchdogs: Vec<_> = snapshot
            .nodes
            .iter()
            .map(|node| {
                let health = self.config.health.clone();
                tokio::spawn(health::watchdog(
                    node.index,
                    node.authority().clone(),
                    health,
                    tx.clone(),
                    node.recheck.clone(),
                ))
            })
            .collect();
        drop(tx);
        tokio::spawn(async move {
            // Aborting this task drops the guard, which stops the watchdogs.
            let _watchdogs = AbortOnDrop(watchdogs);
            loop {
                tokio::select! {
                    Some(obs) = rx.recv() => self.observe(obs),
                    Some(report) = self.reports.recv() => self.report(report),
                    Some(command) = self.commands.recv() => {
                        let result = self.command(&command.node, command.action);
                        let _ = command.reply.send(result);
                    }
                    else => return,
                }
            }
        })
    }

    /// Applies one check result; publishes a new snapshot when a node changes state.
    pub fn observe(&mut self, obs: Observation) {
        let snapshot = self.shared.load_full();
        let Some(node) = snapshot.nodes.get(obs.node) else {
            return;
        };
        let ok = obs.result.ok;
        let result = if ok { "pass" } else { "fail" };
        self.metrics
            .checks
            .with_label_values(&[node.name(), result])
            .inc();
        let detail = obs.result.detail.clone();
        node.last_check.store(Some(Arc::new(obs.result)));
        let (rise, fall) = (self.config.health.rise, self.config.health.fall);
        let Some(t) = self.health[obs.node].observe(ok, rise, fall) else {
            return;
        };
        node.state_since
            .store(unix_ms(SystemTime::now()), Ordering::Relaxed);
        if t.to == State::Up {
            tracing::info!(node = node.name(), from = %t.from, to = %t.to, reason = %detail, "node admitted");
            node.failures.store(0, Ordering::Relaxed);
            self.passive[obs.node] = false;
            if t.from == State::Down {
                self.admitted[obs.node] = Some(Instant::now());
            }
        } else {
            tracing::warn!(node = node.name(), from = %t.from, to = %t.to, reason = %detail, "node ejected");
            if t.from == State::Up {
                self.metrics
                    .ejections
                    .with_label_values(&[node.name(), "active"])
                    .inc();
                node.eject_reason(format!("active: {detail}"));
            }
        }
        self.publish(&snapshot);
    }

    /// Applies a passive failure report: ejects the node at once, within the passive share.
    pub fn report(&mut self, report: Report) {
        let Report::Failing { node: i, failures } = report;
        let snapshot = self.shared.load_full();
        let Some(node) = snapshot.nodes.get(i) else {
            return;
        };
        if self.health[i].state() != State::Up {
            return;
        }
        let already = self.passive.iter().filter(|&&p| p).count();
        if !passive_ejection_allowed(
            already,
            self.health.len(),
            self.config.passive.max_ejected_percent,
        ) {
            tracing::warn!(
                node = node.name(),
                failures,
                already,
                "node failing on live traffic, but the passive ejection cap is reached: kept"
            );
            return;
        }
        if let Some(t) = self.health[i].eject() {
            tracing::warn!(node = node.name(), from = %t.from, to = %t.to, reason = %format!("{failures} consecutive failures on live traffic"), "node ejected (passive)");
            node.state_since
                .store(unix_ms(SystemTime::now()), Ordering::Relaxed);
            node.eject_reason(format!(
                "passive: {failures} consecutive failures on live traffic"
            ));
            self.metrics
                .ejections
                .with_label_values(&[node.name(), "passive"])
                .inc();
            self.passive[i] = true;
            node.failures.store(0, Ordering::Relaxed);
            self.publish(&snapshot);
        }
    }

    /// Applies an operator command; publishes the change.
    pub fn command(&mut self, name: &str, action: Action) -> Result<(), CommandError> {
        let snapshot = self.shared.load_full();
        let Some(node) = snapshot.nodes.iter().find(|n| n.name() == name) else {
            return Err(CommandError::UnknownNode(name.to_string()));
        };
        let i = node.index;
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
                if self.health[i].state() != State::Up || self.modes[i] != Mode::Active {
                    return Err(CommandError::NotReady(name.to_string()));
                }
                self.promoted = Some(i);
            }
            Action::Drain => self.modes[i] = Mode::Draining,
            Action::Disable => {
                self.modes[i] = Mode::Disabled;
                node.eject_reason("operator: disabled".to_string());
            }
            Action::Enable => self.modes[i] = Mode::Active,
        }
        tracing::warn!(node = name, action = ?action, mode = self.modes[i].as_str(), "operator command");
        self.publish(&snapshot);
        Ok(())
    }

    fn publish(&mut self, old: &Snapshot) {
        let states: Box<[State]> = self.health.iter().map(HealthState::state).collect();
        // A node the operator drains or disables is, for routing, down.
        let usable = |i: usize| {
            if self.modes[i] == Mode::Active {
                states[i]
            } else {
                State::Down
            }
        };
        for c in &mut self.candidates {
            c.state = usable(c.node);
        }
        if self.promoted.is_some_and(|p| usable(p) != State::Up) {
            self.promoted = None;
        }
        let master = match self.promoted {
            // A promoted candidate holds the role like a sticky master, until it fails.
            Some(p) => elect(&self.candidates, Some(p), Failback::Sticky),
            None => elect(&self.candidates, old.master, self.config.routing.failback),
        };
        let readers: Box<[usize]> = (0..states.len())
            .filter(|&i| usable(i) == State::Up && old.nodes[i].spec.reads)
            .collect();
        if master != old.master {
            let name = |m: Option<usize>| m.map_or("none", |i| old.nodes[i].name());
            if old.master.is_none() && master.is_some() {
                tracing::info!(master = name(master), "master elected");
            } else if master.is_some() {
                tracing::warn!(from = name(old.master), to = name(master), "master changed");
                self.metrics.failovers.inc();
            } else if !self.candidates.is_empty() && states.iter().all(|s| *s != State::Unknown) {
                tracing::error!(
                    from = name(old.master),
                    "no healthy master: writes are unavailable"
                );
            }
        }
        if readers.is_empty() && states.iter().all(|s| *s != State::Unknown) {
            tracing::error!("no healthy node serves reads: reads are unavailable");
        }
        // Slow start only matters while it runs; later snapshots forget finished ramps.
        let ramp = self.config.routing.slow_start.0;
        for at in &mut self.admitted {
            if at.is_some_and(|t| t.elapsed() >= ramp) {
                *at = None;
            }
        }
        let snapshot = Arc::new(Snapshot {
            nodes: old.nodes.clone(),
            modes: self.modes.clone().into(),
            states,
            readers,
            master,
            classifier: old.classifier.clone(),
            balance: old.balance,
            admitted: self.admitted.clone().into(),
            slow_start: ramp,
            ticket: AtomicUsize::new(0),
        });
        self.metrics.observe_snapshot(&snapshot);
        self.shared.store(snapshot);
    }
}

struct AbortOnDrop(Vec<tokio::task::JoinHandle<()>>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        for task in &self.0 {
            task.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use State::{Down, Unknown, Up};

    fn cands(states: &[State]) -> Vec<Candidate> {
        states
            .iter()
            .enumerate()
            .map(|(i, &state)| Candidate {
                node: i,
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
