//! Stall detection. A node with requests waiting for their answer (or owing the answer of one
//! that a hedge beat and cancelled) that has sent no response head
//! for longer than its own recent behaviour explains (`stalls.multiple` times its recent time to
//! first byte, at least `stalls.min`), while its peers keep answering, is *stalled*: a JVM frozen
//! in a full GC, which the kernel still accepts connections for. It gets no new requests until it
//! answers again; it is not ejected (the health checks decide that), and the requests waiting on
//! it are hedged to other nodes (`proxy::hedge`). The mark holds until the node answers: a
//! response head, or a passing health check (the requests waiting on it may all have been hedged
//! away, and it gets no new ones), or until it leaves the readers.
//!
//! [`stalled`] is the pure decision; [`Stalls`] follows each node between ticks of the cluster
//! task, which reads only atomics the data path keeps (heads received, attempts waiting).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::latency::now_ns;
use super::node::Node;
use crate::config::Config;

/// How often the cluster task looks for stalls.
pub const TICK: Duration = Duration::from_millis(20);

/// What a tick sees of one node of the reads pool.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Seen {
    /// Attempts waiting for their response head.
    pub awaiting: usize,
    /// It owes the answer of an attempt beaten by a hedge (and cancelled) since its last head.
    pub owes: bool,
    /// How long it has sent no response head while some were waiting (zero when none wait).
    pub quiet: Duration,
    /// How long a quiet is explained by its recent behaviour.
    pub after: Duration,
}

/// Which nodes are stalled: quiet past what explains it, while at least one peer is not (when
/// every node is quiet, the cause is elsewhere: a shared database, the network; nobody is stalled,
/// or no node would be left).
pub fn stalled(seen: &[Seen]) -> Vec<bool> {
    let over = |s: &Seen| (s.awaiting > 0 || s.owes) && s.quiet > s.after;
    let answering = seen.iter().filter(|s| !over(s)).count();
    seen.iter().map(|s| over(s) && answering > 0).collect()
}

/// How long a node whose recent time to first byte is `ttfb_ns` may stay quiet.
pub fn quiet_allowed(ttfb_ns: f64, multiple: f64, min: Duration) -> Duration {
    let explained = Duration::from_nanos((ttfb_ns * multiple).clamp(0.0, 1e15) as u64);
    explained.max(min)
}

/// A node as the last ticks saw it.
#[derive(Clone, Copy, Debug)]
struct Followed {
    heads: u64,
    /// Since when it has had requests waiting and sent no head.
    quiet_since: Option<Instant>,
}

/// Each node's progress between ticks.
#[derive(Debug, Default)]
pub struct Stalls {
    followed: HashMap<u64, Followed>,
}

/// A node found stalled at a tick.
#[derive(Debug)]
pub struct Change {
    pub node: Arc<Node>,
    /// Its answers that were streaming to clients when it stalled (they cannot be hedged).
    pub streaming: usize,
}

impl Stalls {
    /// A node whose checks pass again: its quiet counts from `now` (it answers; what it has not
    /// answered yet is slow, not frozen).
    pub fn forgive(&mut self, node: u64, now: Instant) {
        if let Some(f) = self.followed.get_mut(&node) {
            f.quiet_since = f.quiet_since.map(|_| now);
        }
    }

    /// Looks at the reads pool's `nodes` at `now`; marks those that stalled and returns them.
    pub fn tick(&mut self, now: Instant, nodes: &[&Arc<Node>], config: &Config) -> Vec<Change> {
        let settings = &config.stalls;
        let tau = config.routing.decay.0;
        let at = now_ns(now);
        let seen: Vec<Seen> = nodes
            .iter()
            .map(|node| {
                let (heads, awaiting, owes) = (node.heads(), node.awaiting(), node.owes());
                let f = self.followed.entry(node.id).or_insert(Followed {
                    heads,
                    quiet_since: None,
                });
                // Attempts hedged away and cancelled leave nothing waiting, yet the node has not
                // answered them: a frozen node avoided after its first beaten reads is still
                // found stalled (a slow one answers the check its beaten read triggered).
                if heads != f.heads || (awaiting == 0 && !owes) {
                    f.quiet_since = None;
                } else if f.quiet_since.is_none() {
                    f.quiet_since = Some(now);
                }
                f.heads = heads;
                Seen {
                    awaiting,
                    owes,
                    quiet: f.quiet_since.map_or(Duration::ZERO, |t| now - t),
                    after: quiet_allowed(
                        node.latency.estimate(at, tau),
                        settings.multiple,
                        settings.min.0,
                    ),
                }
            })
            .collect();
        let verdicts = if settings.enabled {
            stalled(&seen)
        } else {
            vec![false; seen.len()]
        };
        let ids: Vec<u64> = nodes.iter().map(|n| n.id).collect();
        self.followed.retain(|id, _| ids.contains(id));
        nodes
            .iter()
            .zip(verdicts)
            .zip(&seen)
            // Set here, cleared when the node answers (a response head, a passing check).
            .filter(|((node, stalled), _)| *stalled && !node.set_stalled(true))
            .map(|((node, _), seen)| Change {
                node: Arc::clone(node),
                streaming: node.in_flight().saturating_sub(seen.awaiting),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn seen(awaiting: usize, quiet: u64) -> Seen {
        Seen {
            awaiting,
            owes: false,
            quiet: ms(quiet),
            after: ms(200),
        }
    }

    #[test]
    fn a_quiet_node_is_stalled_while_a_peer_answers() {
        let v = stalled(&[seen(3, 250), seen(1, 0), seen(0, 0)]);
        assert_eq!(v, [true, false, false]);
    }

    #[test]
    fn within_what_its_behaviour_explains_it_is_not() {
        assert_eq!(stalled(&[seen(3, 150), seen(1, 0)]), [false, false]);
    }

    #[test]
    fn nothing_waiting_is_no_stall() {
        assert_eq!(stalled(&[seen(0, 900), seen(1, 0)]), [false, false]);
    }

    #[test]
    fn an_answer_owed_for_a_cancelled_attempt_is_waiting() {
        let owing = Seen {
            owes: true,
            ..seen(0, 250)
        };
        assert_eq!(stalled(&[owing, seen(1, 0)]), [true, false]);
        let recent = Seen {
            owes: true,
            ..seen(0, 150)
        };
        assert_eq!(stalled(&[recent, seen(1, 0)]), [false, false]);
    }

    #[test]
    fn when_every_node_is_quiet_nobody_is_stalled() {
        assert_eq!(stalled(&[seen(3, 900), seen(2, 900)]), [false, false]);
        assert_eq!(stalled(&[seen(3, 900)]), [false], "a lone node");
    }

    #[test]
    fn the_quiet_allowed_grows_with_the_nodes_usual_time() {
        assert_eq!(quiet_allowed(1e6, 8.0, ms(200)), ms(200), "floor");
        assert_eq!(quiet_allowed(100e6, 8.0, ms(200)), ms(800));
        assert_eq!(quiet_allowed(0.0, 8.0, ms(200)), ms(200), "no sample yet");
    }
}
