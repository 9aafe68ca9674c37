//! Nodes, pools and master election. The routing state is one immutable [`Snapshot`] published
//! through `arc-swap`: a request does one `load`, and only the cluster task ([`Cluster::run`]), fed by
//! the watchdogs, builds and stores new ones.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use arc_swap::{ArcSwap, ArcSwapOption};
use http::uri::Authority;
use tokio::sync::mpsc;

use crate::classify::Classifier;
use crate::config::{Balance, Config, Failback, NodeSpec};
use crate::health::{self, CheckResult, HealthState, Observation, State};

/// One configured GeoServer node. Shared by every snapshot; its counters live as long as it does.
#[derive(Debug)]
pub struct Node {
    pub spec: NodeSpec,
    /// `http://host:port`.
    pub origin: String,
    in_flight: AtomicUsize,
    last_check: ArcSwapOption<CheckResult>,
}

impl Node {
    pub fn new(spec: NodeSpec) -> Node {
        Node {
            origin: spec.origin(),
            spec,
            in_flight: AtomicUsize::new(0),
            last_check: ArcSwapOption::empty(),
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

    /// Counts a request as in flight until the guard drops.
    pub fn start_request(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(self.clone())
    }

    pub fn last_check(&self) -> Option<Arc<CheckResult>> {
        self.last_check.load_full()
    }
}

/// Holds one in-flight slot on a node.
#[derive(Debug)]
pub struct InFlight(Arc<Node>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Everything a request needs to be routed, immutable once published.
#[derive(Debug)]
pub struct Snapshot {
    pub nodes: Arc<[Arc<Node>]>,
    /// Each node's health, by index.
    pub states: Box<[State]>,
    /// Indices of the healthy nodes that serve reads.
    pub readers: Box<[usize]>,
    /// Index of the current master.
    pub master: Option<usize>,
    pub classifier: Arc<Classifier>,
    pub balance: Balance,
    /// Round-robin position.
    ticket: AtomicUsize,
}

impl Snapshot {
    /// Picks a reader, or `None` when no node can serve reads.
    pub fn pick_reader(&self, rng: &mut fastrand::Rng) -> Option<&Arc<Node>> {
        let readers = &self.readers;
        let i = match self.balance {
            Balance::LeastOutstanding => {
                crate::balance::pick_p2c(readers.len(), |i| self.nodes[readers[i]].in_flight(), rng)
            }
            Balance::RoundRobin => crate::balance::pick_round_robin(
                readers.len(),
                self.ticket.fetch_add(1, Ordering::Relaxed),
            ),
        }?;
        debug_assert_eq!(self.states[readers[i]], State::Up);
        Some(&self.nodes[readers[i]])
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

/// The live cluster: the published snapshot and what builds it.
pub struct Cluster {
    shared: Arc<ArcSwap<Snapshot>>,
    config: Arc<Config>,
    health: Vec<HealthState>,
    candidates: Vec<Candidate>,
}

impl Cluster {
    /// Builds the first snapshot (every node unknown, so no traffic until checks pass).
    pub fn new(config: Arc<Config>) -> Cluster {
        let nodes: Arc<[Arc<Node>]> = config
            .nodes
            .iter()
            .cloned()
            .map(|s| Arc::new(Node::new(s)))
            .collect();
        let mut candidates: Vec<Candidate> = nodes
            .iter()
            .enumerate()
            .filter_map(|(i, n)| {
                n.spec.master.map(|priority| Candidate {
                    node: i,
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
        let health = vec![HealthState::default(); nodes.len()];
        let snapshot = Snapshot {
            states: vec![State::Unknown; nodes.len()].into(),
            nodes,
            readers: Box::new([]),
            master: None,
            classifier,
            balance: config.routing.balance,
            ticket: AtomicUsize::new(0),
        };
        Cluster {
            shared: Arc::new(ArcSwap::from_pointee(snapshot)),
            config,
            health,
            candidates,
        }
    }

    /// The handle the data path and the admin listener read.
    pub fn shared(&self) -> Arc<ArcSwap<Snapshot>> {
        self.shared.clone()
    }

    /// Starts a watchdog per node and applies their reports until the returned task is aborted.
    pub fn run(mut self) -> tokio::task::JoinHandle<()> {
        let (tx, mut rx) = mpsc::channel::<Observation>(64);
        let snapshot = self.shared.load_full();
        let watchdogs: Vec<_> = snapshot
            .nodes
            .iter()
            .enumerate()
            .map(|(i, node)| {
                tokio::spawn(health::watchdog(
                    i,
                    node.authority().clone(),
                    self.config.health.clone(),
                    tx.clone(),
                ))
            })
            .collect();
        drop(tx);
        tokio::spawn(async move {
            // Aborting this task drops the guard, which stops the watchdogs.
            let _watchdogs = AbortOnDrop(watchdogs);
            while let Some(obs) = rx.recv().await {
                self.observe(obs);
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
        let detail = obs.result.detail.clone();
        node.last_check.store(Some(Arc::new(obs.result)));
        let (rise, fall) = (self.config.health.rise, self.config.health.fall);
        let Some(t) = self.health[obs.node].observe(ok, rise, fall) else {
            return;
        };
        if t.to == State::Up {
            tracing::info!(node = node.name(), from = %t.from, to = %t.to, reason = %detail, "node admitted");
        } else {
            tracing::warn!(node = node.name(), from = %t.from, to = %t.to, reason = %detail, "node ejected");
        }
        self.publish(&snapshot);
    }

    fn publish(&mut self, old: &Snapshot) {
        let states: Box<[State]> = self.health.iter().map(HealthState::state).collect();
        for c in &mut self.candidates {
            c.state = states[c.node];
        }
        let master = elect(&self.candidates, old.master, self.config.routing.failback);
        let readers: Box<[usize]> = (0..states.len())
            .filter(|&i| states[i] == State::Up && old.nodes[i].spec.reads)
            .collect();
        if master != old.master {
            let name = |m: Option<usize>| m.map_or("none", |i| old.nodes[i].name());
            if old.master.is_none() && master.is_some() {
                tracing::info!(master = name(master), "master elected");
            } else if master.is_some() {
                tracing::warn!(from = name(old.master), to = name(master), "master changed");
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
        self.shared.store(Arc::new(Snapshot {
            nodes: old.nodes.clone(),
            states,
            readers,
            master,
            classifier: old.classifier.clone(),
            balance: old.balance,
            ticket: AtomicUsize::new(0),
        }));
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
