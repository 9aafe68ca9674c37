//! Hedged reads. An idempotent read whose whole body is held, waiting for its answer longer than
//! its request class usually does (`cluster::latency::hedge_delay`), or on a node found stalled,
//! is sent once more to another reader; the first good answer wins and the other attempt is
//! cancelled (its node slot released, its connection closed). Never for writes or anything that
//! goes to the master (a read pinned there by read-your-writes included), never once a byte went
//! to the client (hedging happens before the response head is passed on), never twice for one
//! request; a hedge is an extra attempt like a retry: the same per-request cap and budget.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::opinion::Ask;
use super::{Proxy, Sent};
use crate::classify::{Class, Pool};
use crate::cluster::latency::{hedge_delay, now_ns};
use crate::cluster::{InFlight, Node, Snapshot};
use crate::metrics::{Extra, ExtraResult};

/// How often a read waiting for its hedge delay looks whether its node was found stalled (a
/// heavy class's delay can be longer than a stall takes to see).
const STALL_LOOK: Duration = Duration::from_millis(50);

/// When a read of a class may be hedged.
#[derive(Clone, Copy, Debug)]
pub(super) struct Delay {
    /// Hedge after this long in any case.
    pub hedge: Duration,
    /// Hedge after this long (the class's usual time) if its node is found stalled.
    pub usual: Duration,
}

/// What a hedged wait came to: the answer to go on with, and the other node tried.
pub(super) struct Hedged {
    pub sent: Sent,
    /// The hedge's node and slot, when its answer won.
    pub winner: Option<(Arc<Node>, InFlight)>,
    /// The node of the attempt that did not win (for the per-request cap and later attempts).
    pub other: Option<u64>,
}

/// Whether an attempt's outcome is an answer worth passing on (not a failure another node could
/// do better than).
fn good(sent: &Sent) -> bool {
    matches!(sent, Ok(Ok((response, _))) if !matches!(response.status().as_u16(), 502..=504))
}

impl Proxy {
    /// The hedge delay of a read of `class` now; `None` when it may not be hedged at all.
    pub(super) fn hedge_delay(
        &self,
        snapshot: &Snapshot,
        pool: Pool,
        class: &Class,
        extras: usize,
    ) -> Option<Delay> {
        let config = &snapshot.config;
        let h = &config.hedging;
        let possible = h.enabled
            && pool == Pool::Reads
            && snapshot.readers.len() > 1
            && extras < config.retries.max as usize;
        if !possible {
            return None;
        }
        let (min, max) = (h.min_delay.0, h.max_delay.0);
        Some(match self.classes.of(class) {
            Some((srtt, var)) => Delay {
                hedge: hedge_delay(srtt, var, min, max),
                usual: srtt,
            },
            None => Delay {
                hedge: max,
                usual: max,
            },
        })
    }

    /// Waits for `first` (on `node`) until the hedge delay, or until its node is found stalled
    /// once it has waited its class's usual time (a heavy request on a node that only looks
    /// stalled is not doubled), then sends the request once more to another reader and takes the
    /// first good answer.
    pub(super) async fn hedged<F: Future<Output = Sent>>(
        &self,
        mut first: Pin<&mut F>,
        node: &Node,
        delay: Delay,
        ask: &Ask<'_>,
        class: Class,
    ) -> Hedged {
        let alone = |sent| Hedged {
            sent,
            winner: None,
            other: None,
        };
        let start = tokio::time::Instant::now();
        let (deadline, usual) = (start + delay.hedge, start + delay.usual);
        loop {
            let step = deadline.min(tokio::time::Instant::now() + STALL_LOOK);
            if let Ok(sent) = tokio::time::timeout_at(step, first.as_mut()).await {
                return alone(sent);
            }
            let now = tokio::time::Instant::now();
            if now >= deadline || (node.is_stalled() && now >= usual) {
                break;
            }
        }
        // Boxed: the race's state is large and only hedged requests need it.
        Box::pin(self.race(first, node, ask, class)).await
    }

    /// Sends the hedge (within the budget, to a reader with a free slot) and races the two.
    async fn race<F: Future<Output = Sent>>(
        &self,
        mut first: Pin<&mut F>,
        node: &Node,
        ask: &Ask<'_>,
        class: Class,
    ) -> Hedged {
        let config = &ask.snapshot.config;
        let metrics = self.metrics();
        if !self.budget.withdraw(Instant::now(), &config.retries) {
            metrics.budget_exhausted.inc();
            metrics.extra(Extra::Hedge, ExtraResult::Refused).inc();
            return Hedged {
                sent: first.await,
                winner: None,
                other: None,
            };
        }
        let mut tried = ask.tried.to_vec();
        tried.push(node.id);
        let mut rng = fastrand::Rng::new();
        let Some(Ok((second, slot, _))) =
            super::try_acquire(ask.snapshot, Pool::Reads, &tried, &mut rng)
        else {
            // Nobody free to ask: the first attempt it is.
            return Hedged {
                sent: first.await,
                winner: None,
                other: None,
            };
        };
        metrics.extra(Extra::Hedge, ExtraResult::Sent).inc();
        tracing::debug!(
            node = node.name(),
            hedge = second.name(),
            stalled = node.is_stalled(),
            "hedging a read"
        );
        let hedge_node = second.clone();
        let hedge = self.send_copy(ask, &hedge_node, Some(class));
        tokio::pin!(hedge);
        // The first failure, while the other attempt may still answer.
        let (mut first_failed, mut hedge_failed) = (None, false);
        let sent = loop {
            tokio::select! {
                sent = first.as_mut(), if first_failed.is_none() => {
                    if good(&sent) {
                        return Hedged { sent, winner: None, other: Some(second.id) };
                    }
                    if hedge_failed {
                        break sent;
                    }
                    first_failed = Some(sent);
                }
                sent = hedge.as_mut(), if !hedge_failed => {
                    if good(&sent) {
                        if first_failed.is_some() {
                            self.record(config, node, false);
                        } else {
                            // Its answer, cancelled, will never tell its pace how slow it was.
                            let now = now_ns(tokio::time::Instant::now());
                            node.outpaced(now, config.routing.decay.0);
                        }
                        metrics.extra(Extra::Hedge, ExtraResult::Won).inc();
                        return Hedged { sent, winner: Some((second, slot)), other: Some(node.id) };
                    }
                    hedge_failed = true;
                    if let Some(failed) = first_failed.take() {
                        break failed;
                    }
                }
            }
        };
        // Both failed: the hedge's failure counts against its node; the first one's goes on.
        self.record(config, &second, false);
        drop(slot);
        Hedged {
            sent,
            winner: None,
            other: Some(second.id),
        }
    }
}
