//! Requests waiting for a node slot when every eligible node is at `limits.max_requests`: one FIFO
//! queue per pool. A slot freed on a node is handed straight to the longest-waiting request that may
//! use it (it is never released and taken again), so a freed slot wakes one waiter, not all of them,
//! and a newcomer cannot overtake the queue. Only saturated pools ever touch the queue's lock.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::Notify;

use crate::classify::Pool;
use crate::cluster::{InFlight, Node};

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
