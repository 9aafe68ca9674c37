//! The routing state a request reads: one immutable [`Snapshot`] published through `arc-swap`.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::balance::{paced_cost, pick_p2c, pick_round_robin, slow_start_weight};
use super::health::State;
use super::latency::now_ns;
use super::node::{InFlight, Mode, Node};
use crate::classify::{Classifier, Pool};
use crate::config::{Balance, Config};
use crate::metrics::{Metrics, NodeGauges};

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
    pub(super) admitted: Box<[Option<Instant>]>,
    pub(super) slow_start: Duration,
    /// Round-robin position, shared by every snapshot (a publish does not restart the turn).
    pub(super) ticket: Arc<AtomicUsize>,
    /// How `https://` nodes are spoken to (`forwarding.ca_bundle`, `client_cert`…).
    pub node_tls: crate::upstream::NodeTls,
}

impl Snapshot {
    /// Takes a slot on a node of `pool`: a reader not in `tried` (node ids) and under
    /// `limits.max_requests`, or the master.
    pub fn acquire(&self, pool: Pool, tried: &[u64], rng: &mut fastrand::Rng) -> Acquire {
        let max = self.config.limits.max_requests;
        let position = match pool {
            // A master this request found gone is not tried again: only another one elected since.
            Pool::Master => match self.master {
                Some(i) if !tried.contains(&self.nodes[i].id) => i,
                _ => return Acquire::Empty,
            },
            Pool::Reads => {
                let readers = &self.readers;
                if readers.iter().all(|&i| tried.contains(&self.nodes[i].id)) {
                    return Acquire::Empty;
                }
                let now = self.admitted.iter().any(Option::is_some).then(Instant::now);
                let at =
                    (self.balance == Balance::Latency).then(|| now_ns(tokio::time::Instant::now()));
                let decay = self.config.routing.decay.0;
                // Stalled nodes are passed over, unless every node left is stalled.
                let cand = |r: usize, skip_stalled: bool| {
                    let i = readers[r];
                    let node = &self.nodes[i];
                    let load = node.in_flight();
                    if tried.contains(&node.id)
                        || (max > 0 && load >= max)
                        || (skip_stalled && node.is_stalled())
                    {
                        return None;
                    }
                    let weight = match (now, self.admitted[i]) {
                        (Some(now), Some(at)) => {
                            slow_start_weight(now.saturating_duration_since(at), self.slow_start)
                        }
                        _ => 1.0,
                    };
                    let cost = match at {
                        Some(at) => paced_cost(node.pace.at(at, decay), load),
                        None => load as f64,
                    };
                    Some((cost, weight))
                };
                let pick = |skip_stalled: bool, rng: &mut fastrand::Rng| {
                    let cand = |r| cand(r, skip_stalled);
                    match self.balance {
                        Balance::Latency | Balance::LeastOutstanding => {
                            pick_p2c(readers.len(), rng, cand)
                        }
                        Balance::RoundRobin => {
                            let ticket = self.ticket.fetch_add(1, Ordering::Relaxed);
                            pick_round_robin(readers.len(), ticket, rng, cand)
                        }
                    }
                };
                match pick(true, rng).or_else(|| pick(false, rng)) {
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
        let at = now_ns(tokio::time::Instant::now());
        metrics.keep_nodes(self.nodes.iter().map(|n| n.name().to_string()).collect());
        for (i, node) in self.nodes.iter().enumerate() {
            metrics.set_node(
                node.name(),
                self.role(i),
                self.states[i] == State::Up,
                self.master == Some(i),
                NodeGauges {
                    in_flight: node.in_flight(),
                    stalled: node.is_stalled(),
                    latency: Duration::from_nanos(
                        node.latency.estimate(at, self.config.routing.decay.0) as u64,
                    ),
                },
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
