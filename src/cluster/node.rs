//! A node: its identity and counters, its in-flight slots, and the queues of requests waiting for
//! a slot when every eligible node is at `limits.max_requests` (one FIFO queue per pool; a freed slot
//! is handed straight to the longest-waiting request that may use it, so a freed slot wakes one
//! waiter, not all, and a newcomer cannot overtake the queue; only saturated pools take the lock).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwapOption;
use http::uri::Authority;
use tokio::sync::Notify;

use super::health::CheckResult;
use super::latency::{Pace, PeakEwma, OUTPACED};
use crate::classify::Pool;
use crate::config::NodeSpec;
use crate::upstream;

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
    pub(super) failures: AtomicU32,
    pub(super) last_check: ArcSwapOption<CheckResult>,
    /// Why and when the node was last ejected.
    last_ejection: ArcSwapOption<Ejection>,
    /// When its health state last changed (unix milliseconds; 0 = never).
    pub(super) state_since: AtomicU64,
    /// Requests answered by it, for rates on the status page.
    served: AtomicU64,
    /// Wakes its watchdog for an immediate check.
    pub(super) recheck: Arc<Notify>,
    /// Where requests wait for a slot at `max_requests`; a freed slot is handed over there.
    queues: Arc<Queues>,
    /// Whether `limits.max_requests` is set (only then is anyone waiting for a slot).
    pub(super) capped: AtomicBool,
    /// The pools the node serves in the snapshot in force ([`SERVES_READS`], [`SERVES_MASTER`]).
    pub(super) serving: AtomicU8,
    /// Its idle keep-alive connections.
    pub upstream: upstream::Pool,
    /// What it did not know while the master did (replication lag), and since when.
    lagging: Mutex<Lagging>,
    /// Reads it answered "not known here" that the master answered.
    lagged: AtomicU64,
    /// Attempts sent to it that wait for their response head.
    awaiting: AtomicUsize,
    /// Response heads it sent (progress, for stall detection).
    heads: AtomicU64,
    /// Quiet past what its recent behaviour explains while its peers answer: no new requests.
    stalled: AtomicBool,
    /// An attempt of it was beaten by a hedge and cancelled, and it has not answered since (a
    /// response head, a passing check): it still owes that answer, for stall detection.
    owes: AtomicBool,
    /// Its recent time to first byte (peak-EWMA): what explains a quiet (stall detection).
    pub latency: PeakEwma,
    /// How many times its classes' usual time its recent answers took: what picking weighs.
    pub pace: Pace,
}

/// An attempt waiting for its response head on a node (counted until dropped).
#[derive(Debug)]
pub struct Awaiting<'a>(&'a Node);

impl Drop for Awaiting<'_> {
    fn drop(&mut self) {
        self.0.awaiting.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A replica's lag, by what its exception was about: when it first did not know it.
#[derive(Debug, Default)]
struct Lagging(std::collections::HashMap<String, Instant>);

/// At most this many names are followed per node (a flood of publishes cannot grow it further).
const LAGGING_MAX: usize = 256;

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
            upstream: upstream::Pool::default(),
            lagging: Mutex::new(Lagging::default()),
            lagged: AtomicU64::new(0),
            awaiting: AtomicUsize::new(0),
            heads: AtomicU64::new(0),
            stalled: AtomicBool::new(false),
            owes: AtomicBool::new(false),
            latency: PeakEwma::default(),
            pace: Pace::default(),
        }
    }

    /// Counts an attempt as waiting for its response head until the guard drops.
    pub fn awaiting_guard(&self) -> Awaiting<'_> {
        self.awaiting.fetch_add(1, Ordering::Relaxed);
        Awaiting(self)
    }

    /// Attempts waiting for their response head.
    pub fn awaiting(&self) -> usize {
        self.awaiting.load(Ordering::Relaxed)
    }

    /// A response head came `ttfb` after its attempt was sent, at `now` ([`now_ns`]), `ratio`
    /// times its class's usual time when known: progress, and latency samples (`decay`: the
    /// estimates' time constant). A stalled node that answers takes new requests again at once.
    pub fn answered(&self, now: u64, ttfb: Duration, ratio: Option<f64>, decay: Duration) {
        self.heads.fetch_add(1, Ordering::Relaxed);
        if self.owes.load(Ordering::Relaxed) {
            self.owes.store(false, Ordering::Relaxed);
        }
        if self.stalled.load(Ordering::Relaxed) {
            self.stalled.store(false, Ordering::Relaxed);
            self.pace.reset(now);
        }
        self.latency.observe(now, ttfb, decay);
        if let Some(ratio) = ratio {
            self.pace.observe(now, ratio, decay);
        }
    }

    /// An attempt that had sent it nothing back was beaten by a hedge on another node, at `now`
    /// ([`now_ns`]), and cancelled. How long it would have taken is never known: its pace counts
    /// [`OUTPACED`] times the class's usual time (or a slow node keeps being sent reads that all
    /// wait for the hedge delay). Not progress: it now owes an answer (stall detection), and its
    /// watchdog checks it at once: a slow node answers the check, a frozen one does not. A
    /// stalled node's beaten attempts are the stall, not its pace.
    pub fn outpaced(&self, now: u64, decay: Duration) {
        if self.is_stalled() {
            return;
        }
        self.pace.observe(now, OUTPACED, decay);
        if !self.owes.swap(true, Ordering::Relaxed) {
            self.recheck.notify_one();
        }
    }

    /// Whether it owes the answer of an attempt beaten by a hedge (see [`Node::outpaced`]).
    pub fn owes(&self) -> bool {
        self.owes.load(Ordering::Relaxed)
    }

    /// Its checks pass: it owes nothing. When it was stalled, it takes new requests again, at the
    /// usual pace (its beaten attempts were the stall); returns whether it was stalled.
    pub(super) fn check_passed(&self, now: u64) -> bool {
        self.owes.store(false, Ordering::Relaxed);
        let was = self.set_stalled(false);
        if was {
            self.pace.reset(now);
        }
        was
    }

    /// Response heads it sent.
    pub fn heads(&self) -> u64 {
        self.heads.load(Ordering::Relaxed)
    }

    /// Whether it is stalled (see [`stall`](super::stall)).
    pub fn is_stalled(&self) -> bool {
        self.stalled.load(Ordering::Relaxed)
    }

    /// Sets the stall flag; returns what it was.
    pub(super) fn set_stalled(&self, stalled: bool) -> bool {
        if self.stalled.load(Ordering::Relaxed) == stalled {
            return stalled;
        }
        self.stalled.swap(stalled, Ordering::Relaxed)
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

    pub(super) fn eject_reason(&self, reason: String) {
        self.last_ejection.store(Some(Arc::new(Ejection {
            at: SystemTime::now(),
            reason,
        })));
    }

    /// Requests this node answered (any status).
    pub fn served(&self) -> u64 {
        self.served.load(Ordering::Relaxed)
    }

    /// Notes that this node did not know `subject` while the master did. Returns how long it has
    /// not known it when that is past `deaf_after` (the node is up but deaf to the broker), once
    /// per `deaf_after`. What was first seen more than three times `deaf_after` ago counts anew
    /// (a name removed and published again).
    pub fn lagged(&self, subject: &str, deaf_after: Duration) -> Option<Duration> {
        self.lagged.fetch_add(1, Ordering::Relaxed);
        let now = Instant::now();
        let mut lagging = self.lagging.lock().unwrap_or_else(|p| p.into_inner());
        let table = &mut lagging.0;
        if table.len() >= LAGGING_MAX {
            table.retain(|_, since| now.duration_since(*since) <= deaf_after * 3);
            if table.len() >= LAGGING_MAX {
                return None;
            }
        }
        let since = *table.entry(subject.to_string()).or_insert(now);
        let behind = now.duration_since(since);
        if behind > deaf_after * 3 {
            table.insert(subject.to_string(), now);
            None
        } else if behind > deaf_after {
            table.insert(subject.to_string(), now);
            Some(behind)
        } else {
            None
        }
    }

    /// Reads it answered "not known here" that the master answered (replication lag).
    pub fn lag_count(&self) -> u64 {
        self.lagged.load(Ordering::Relaxed)
    }

    /// Which pools it serves in the snapshot being published (a freed slot goes to their queues).
    pub(super) fn set_serving(&self, reads: bool, master: bool) {
        let bits = if reads { SERVES_READS } else { 0 } | if master { SERVES_MASTER } else { 0 };
        self.serving.store(bits, Ordering::Relaxed);
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

pub(super) fn unix_ms(t: SystemTime) -> u64 {
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

/// The wait queues of both pools.
#[derive(Debug, Default)]
pub struct Queues {
    reads: Queue,
    master: Queue,
    /// Orders waiters across both queues (the oldest eligible one gets a slot).
    next_seq: AtomicU64,
}

#[derive(Debug, Default)]
struct Queue {
    /// Waiters in the list, read without the lock.
    len: AtomicUsize,
    list: Mutex<VecDeque<Arc<Waiter>>>,
}

impl Queue {
    fn lock(&self) -> MutexGuard<'_, VecDeque<Arc<Waiter>>> {
        // A panic while holding this lock cannot leave the list inconsistent: use it anyway.
        self.list
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// One request waiting for a slot.
#[derive(Debug)]
pub struct Waiter {
    seq: u64,
    /// Nodes (by id) this request must not go to: those it already tried.
    tried: Vec<u64>,
    /// A slot handed over by [`Queues::hand_over`].
    slot: Mutex<Option<InFlight>>,
    /// Woken when a slot is handed over, or when the waiter should look again ([`Queues::wake_all`]).
    pub notify: Notify,
}

impl Waiter {
    /// The slot handed to this waiter, if any.
    pub fn take_slot(&self) -> Option<InFlight> {
        self.slot
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take()
    }
}

impl Queues {
    fn queue(&self, pool: Pool) -> &Queue {
        match pool {
            Pool::Reads => &self.reads,
            Pool::Master => &self.master,
        }
    }

    /// Requests waiting in `pool`'s queue now.
    pub fn waiting(&self, pool: Pool) -> usize {
        self.queue(pool).len.load(Ordering::Acquire)
    }

    /// Joins the back of `pool`'s queue. Leave with [`Queues::leave`] (also after a slot came).
    pub fn join(&self, pool: Pool, tried: &[u64]) -> Arc<Waiter> {
        let waiter = Arc::new(Waiter {
            seq: self.next_seq.fetch_add(1, Ordering::Relaxed),
            tried: tried.to_vec(),
            slot: Mutex::new(None),
            notify: Notify::new(),
        });
        let queue = self.queue(pool);
        queue.lock().push_back(waiter.clone());
        queue.len.fetch_add(1, Ordering::Release);
        waiter
    }

    /// Leaves the queue (if still in it) and gives back a slot handed over but not used.
    pub fn leave(&self, pool: Pool, waiter: &Arc<Waiter>) {
        let queue = self.queue(pool);
        {
            let mut list = queue.lock();
            if let Some(i) = list.iter().position(|w| Arc::ptr_eq(w, waiter)) {
                list.remove(i);
                queue.len.fetch_sub(1, Ordering::Release);
            }
        }
        // Dropped outside the lock: it may be handed on to the next waiter.
        drop(waiter.take_slot());
    }

    /// Wakes every waiter to look again (a reload lifted or raised the limit).
    pub fn wake_all(&self) {
        for queue in [&self.reads, &self.master] {
            for waiter in queue.lock().iter() {
                waiter.notify.notify_one();
            }
        }
    }

    /// A slot on `node` is being freed: hands it to the longest-waiting request (of the pools the
    /// node serves now) that may use it. Returns false when nobody can, and the slot must be freed.
    pub(crate) fn hand_over(&self, node: &Arc<Node>) -> bool {
        let pools = [
            (Pool::Reads, node.serves(Pool::Reads)),
            (Pool::Master, node.serves(Pool::Master)),
        ];
        let mut lists: Vec<(&Queue, MutexGuard<'_, VecDeque<Arc<Waiter>>>)> = pools
            .iter()
            .filter(|(pool, serves)| *serves && self.queue(*pool).len.load(Ordering::Acquire) > 0)
            .map(|(pool, _)| {
                let queue = self.queue(*pool);
                (queue, queue.lock())
            })
            .collect();
        // The oldest waiter, over both queues, that has not tried this node.
        let best = lists
            .iter()
            .enumerate()
            .filter_map(|(q, (_, list))| {
                list.iter()
                    .position(|w| !w.tried.contains(&node.id))
                    .map(|i| (list[i].seq, q, i))
            })
            .min();
        let Some((_, q, i)) = best else {
            return false;
        };
        let (queue, list) = &mut lists[q];
        let Some(waiter) = list.remove(i) else {
            return false;
        };
        queue.len.fetch_sub(1, Ordering::Release);
        // Under the queue lock: a waiter leaving at the same time either is still in the list or
        // finds its slot.
        *waiter.slot.lock().unwrap_or_else(|p| p.into_inner()) = Some(InFlight::handed(node));
        waiter.notify.notify_one();
        drop(lists);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        node.set_serving(reads, master);
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
}
