//! One client connection from accept to close.
//!
//! - [`Gate`]: the caps that admit it: `limits.max_connections` over every client listener (over it,
//!   geolb stops accepting until a connection closes, like haproxy's `maxconn`), and
//!   `limits.max_connections_per_client` per client address.
//! - [`drive`]: its watchdog. A connection with no request in progress for `timeouts.client_headers`
//!   is closed: a client that never sends a byte, or trickles one (during HTTP/1-vs-h2 detection
//!   too), an idle keep-alive or h2 connection. A response the client stops reading is cut after its
//!   class's idle timeout, which frees its node slot: the whole connection for HTTP/1, the stream
//!   alone for h2 ([`Executor`] watches each stream).
//!
//! Response bodies report to the connection (HTTP/1) or stream (h2) they are served on through a
//! task-local [`current`] activity: no lock, no registry.

use std::collections::HashMap;
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{watch, Notify};
use tokio::time::Instant;

use crate::metrics::Metrics;

tokio::task_local! {
    /// The connection (HTTP/1) or stream (h2) being served.
    static CURRENT: Arc<Activity>;
    /// The connection, for [`Executor`] to count its h2 streams.
    static CONNECTION: Arc<Activity>;
}

/// The activity of the connection or h2 stream the calling task serves, if any.
pub fn current() -> Option<Arc<Activity>> {
    CURRENT.try_with(Arc::clone).ok()
}

const NEVER: u64 = u64::MAX;

/// After an idle connection is asked to close gracefully, how long it may take.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// What a connection (or h2 stream) is doing, as its watchdog sees it.
#[derive(Debug)]
pub struct Activity {
    epoch: Instant,
    /// Requests (HTTP/1) or streams (h2) in progress.
    active: AtomicUsize,
    /// When the last one ended, or the connection opened: ms since `epoch`.
    quiet_since: AtomicU64,
    /// Since when a response body has waited for the client to take what it gave (ms since
    /// `epoch`), or [`NEVER`] while it is not waiting for the client.
    stalled_since: AtomicU64,
    /// How long a response may wait for the client (its class's idle timeout), ms.
    stall_limit: AtomicU64,
    /// The longest the watchdog waits between two looks while requests are in progress: at most
    /// the shortest stall limit, so that a stall is cut on time.
    look_every: Duration,
}

impl Activity {
    /// `look_every`: the shortest idle timeout a response may have.
    pub fn new(look_every: Duration) -> Arc<Activity> {
        Arc::new(Activity {
            epoch: Instant::now(),
            active: AtomicUsize::new(0),
            quiet_since: AtomicU64::new(0),
            stalled_since: AtomicU64::new(NEVER),
            stall_limit: AtomicU64::new(NEVER),
            look_every,
        })
    }

    fn ms(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.epoch).as_millis() as u64
    }

    fn at(&self, ms: u64) -> Instant {
        self.epoch + Duration::from_millis(ms)
    }

    /// A request starts; it is in progress until the guard drops (with its response body).
    pub fn begin(self: &Arc<Self>) -> InProgress {
        self.active.fetch_add(1, Ordering::Relaxed);
        InProgress(self.clone())
    }

    /// A response body streams from a node: it may wait for the client at most `limit`.
    pub fn streaming(&self, limit: Duration) {
        self.stall_limit
            .store(limit.as_millis() as u64, Ordering::Relaxed);
    }

    /// The response body gave a frame: from now on, it waits for the client to take it.
    pub fn gave(&self) {
        let now = self.ms(Instant::now());
        self.stalled_since.store(now, Ordering::Relaxed);
    }

    /// The node's data is ready for the response body: it waits for the client to ask for it
    /// (since the first such wake-up).
    pub fn ready(&self) {
        if self.stalled_since.load(Ordering::Relaxed) == NEVER {
            let now = self.ms(Instant::now());
            let _ = self.stalled_since.compare_exchange(
                NEVER,
                now,
                Ordering::Relaxed,
                Ordering::Relaxed,
            );
        }
    }

    /// The response body was asked for more: it does not wait for the client (any more).
    pub fn taken(&self) {
        if self.stalled_since.load(Ordering::Relaxed) != NEVER {
            self.stalled_since.store(NEVER, Ordering::Relaxed);
        }
    }

    /// When a response that waits for the client must be cut, if one does.
    fn stall_deadline(&self) -> Option<Instant> {
        let since = self.stalled_since.load(Ordering::Relaxed);
        let limit = self.stall_limit.load(Ordering::Relaxed);
        (since != NEVER && limit != NEVER).then(|| self.at(since.saturating_add(limit)))
    }

    /// When the watchdog should look next, and what it finds now.
    fn look(&self, now: Instant, idle: Duration) -> Look {
        if let Some(deadline) = self.stall_deadline() {
            if deadline <= now {
                return Look::Stalled;
            }
        }
        if self.active.load(Ordering::Relaxed) == 0 {
            let quiet = self.at(self.quiet_since.load(Ordering::Relaxed));
            if quiet + idle <= now {
                return Look::Idle;
            }
            return Look::Again(quiet + idle);
        }
        // Busy: look again when a stall would be due, or soon enough to see one start.
        Look::Again(self.stall_deadline().unwrap_or(now + self.look_every))
    }
}

enum Look {
    Again(Instant),
    Idle,
    Stalled,
}

/// A request in progress on a connection (or h2 stream).
#[derive(Debug)]
pub struct InProgress(Arc<Activity>);

impl Drop for InProgress {
    fn drop(&mut self) {
        let activity = &self.0;
        activity.taken();
        let now = activity.ms(Instant::now());
        activity.quiet_since.store(now, Ordering::Relaxed);
        activity.active.fetch_sub(1, Ordering::Relaxed);
    }
}

/// What a listener asks of its connections.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stop {
    Run,
    /// Finish what is in progress, take nothing new.
    Graceful,
    /// Close now.
    Now,
}

/// Serves `conn` until it ends, closing it when it idles or stalls, or when `stop` says so.
/// `graceful` asks the connection to finish what is in progress and close.
pub async fn drive<C: Future>(
    // Boxed by the caller: pinned here, it would be held twice by this future.
    mut conn: Pin<Box<C>>,
    graceful: impl Fn(Pin<&mut C>),
    activity: Arc<Activity>,
    idle: Duration,
    mut stop: watch::Receiver<Stop>,
    metrics: Arc<Metrics>,
) {
    let watched = async {
        // When a close asked of the connection must be done by.
        let mut closing: Option<Instant> = None;
        let sleep = tokio::time::sleep(idle.min(activity.look_every));
        tokio::pin!(sleep);
        if *stop.borrow() != Stop::Run {
            return;
        }
        loop {
            tokio::select! {
                _ = conn.as_mut() => return,
                changed = stop.changed() => match (changed, *stop.borrow()) {
                    (Ok(()), Stop::Run) => {}
                    (Ok(()), Stop::Graceful) => {
                        if closing.is_none() {
                            graceful(conn.as_mut());
                            // The listener's grace period says when to close for good.
                            closing = Some(Instant::now() + Duration::from_secs(24 * 3600));
                        }
                    }
                    _ => return,
                },
                _ = sleep.as_mut() => {
                    let now = Instant::now();
                    if closing.is_some_and(|by| by <= now) {
                        return;
                    }
                    match activity.look(now, idle) {
                        Look::Stalled => {
                            metrics.connections_cut("stalled").inc();
                            log_stall(activity.stall_limit.load(Ordering::Relaxed));
                            return;
                        }
                        Look::Idle if closing.is_none() => {
                            metrics.connections_cut("idle").inc();
                            graceful(conn.as_mut());
                            closing = Some(now + CLOSE_GRACE);
                            sleep.as_mut().reset(now + CLOSE_GRACE);
                        }
                        Look::Idle => sleep.as_mut().reset(now + CLOSE_GRACE),
                        Look::Again(at) => {
                            sleep.as_mut().reset(closing.map_or(at, |by| at.min(by)));
                        }
                    }
                }
            }
        }
    };
    CONNECTION
        .scope(activity.clone(), CURRENT.scope(activity.clone(), watched))
        .await;
}

fn log_stall(limit_ms: u64) {
    static CUT: crate::log::LogBudget = crate::log::LogBudget::new(crate::log::PER_REQUEST_LINES);
    if let Some(held_back) = CUT.allow() {
        tracing::info!(
            after_ms = limit_ms,
            held_back,
            "a client stopped reading its response: cut, its node slot freed"
        );
    }
}

/// Runs the h2 streams hyper spawns: each is counted on its connection, and cut (reset) when the
/// client stops reading its response for the response's idle timeout.
#[derive(Clone, Copy, Debug, Default)]
pub struct Executor;

impl<F> hyper::rt::Executor<F> for Executor
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    fn execute(&self, fut: F) {
        match CONNECTION.try_with(Arc::clone) {
            Ok(connection) => {
                tokio::spawn(stream(connection, fut));
            }
            Err(_) => {
                tokio::spawn(fut);
            }
        }
    }
}

/// An h2 stream's task: the stream is in progress on its connection, and cut when its response
/// waits too long for the client. The stream's future is boxed once here, so that the task holds
/// it once (pinning it inside an `async fn` would hold it twice).
fn stream<F: Future>(connection: Arc<Activity>, fut: F) -> impl Future<Output = ()> {
    let in_progress = connection.begin();
    let activity = Activity::new(connection.look_every);
    CURRENT.scope(
        activity.clone(),
        watch_stream(activity, Box::pin(fut), in_progress),
    )
}

async fn watch_stream<F: Future>(
    activity: Arc<Activity>,
    mut fut: Pin<Box<F>>,
    _in_progress: InProgress,
) {
    let sleep = tokio::time::sleep(activity.look_every);
    tokio::pin!(sleep);
    loop {
        tokio::select! {
            _ = fut.as_mut() => return,
            _ = sleep.as_mut() => {
                let now = Instant::now();
                match activity.stall_deadline() {
                    Some(deadline) if deadline <= now => {
                        log_stall(activity.stall_limit.load(Ordering::Relaxed));
                        // Dropping the stream resets it, and frees the response's node slot.
                        return;
                    }
                    Some(deadline) => sleep.as_mut().reset(deadline),
                    None => sleep.as_mut().reset(now + activity.look_every),
                }
            }
        }
    }
}

/// The connection caps, shared by every client listener.
#[derive(Debug)]
pub struct Gate {
    max: AtomicUsize,
    per_client: AtomicUsize,
    /// Connections open, plus the places listeners hold while they wait for the next one.
    places: AtomicUsize,
    /// Connections open.
    open: AtomicUsize,
    room: Notify,
    clients: Mutex<HashMap<IpAddr, usize>>,
    gauge: prometheus::IntGauge,
}

impl Gate {
    /// `gauge` follows the connections open.
    pub fn new(max: usize, per_client: usize, gauge: prometheus::IntGauge) -> Arc<Gate> {
        Arc::new(Gate {
            max: AtomicUsize::new(max.max(1)),
            per_client: AtomicUsize::new(per_client),
            places: AtomicUsize::new(0),
            open: AtomicUsize::new(0),
            room: Notify::new(),
            clients: Mutex::new(HashMap::new()),
            gauge,
        })
    }

    /// New caps (a reload); connections over a lowered cap finish, none is accepted meanwhile.
    pub fn set(&self, max: usize, per_client: usize) {
        self.max.store(max.max(1), Ordering::Relaxed);
        self.per_client.store(per_client, Ordering::Relaxed);
        self.room.notify_waiters();
    }

    /// Client connections open now (TLS handshakes included).
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    /// Waits until one more connection may be open, and holds its place (a listener does, before
    /// it accepts: so it never accepts over the cap).
    pub async fn reserve(self: &Arc<Self>) -> Ticket {
        loop {
            let notified = self.room.notified();
            tokio::pin!(notified);
            // Registered before looking, so a close in between is not missed.
            notified.as_mut().enable();
            let places = self.places.load(Ordering::Relaxed);
            if places < self.max.load(Ordering::Relaxed) {
                if self
                    .places
                    .compare_exchange(places, places + 1, Ordering::AcqRel, Ordering::Relaxed)
                    .is_ok()
                {
                    return Ticket {
                        gate: self.clone(),
                        admitted: false,
                        client: None,
                    };
                }
                continue; // lost a race with another listener: look again
            }
            notified.await;
        }
    }
}

/// A place among the open connections, given back when dropped.
#[derive(Debug)]
pub struct Ticket {
    gate: Arc<Gate>,
    /// A connection holds it (not a listener waiting for one).
    admitted: bool,
    /// Counted against this address's cap.
    client: Option<IpAddr>,
}

impl Ticket {
    /// Admits the connection of `client`, unless that address has its share open already.
    pub fn admit(mut self, client: IpAddr) -> Option<Ticket> {
        let cap = self.gate.per_client.load(Ordering::Relaxed);
        if cap > 0 {
            let mut clients = self.gate.clients.lock().unwrap_or_else(|p| p.into_inner());
            let open = clients.entry(client).or_insert(0);
            if *open >= cap {
                return None;
            }
            *open += 1;
            drop(clients);
            self.client = Some(client);
        }
        self.admitted = true;
        self.gate.open.fetch_add(1, Ordering::Relaxed);
        self.gate.gauge.inc();
        Some(self)
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if let Some(client) = self.client {
            let mut clients = self.gate.clients.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(open) = clients.get_mut(&client) {
                *open -= 1;
                if *open == 0 {
                    clients.remove(&client);
                }
            }
        }
        if self.admitted {
            self.gate.open.fetch_sub(1, Ordering::Relaxed);
            self.gate.gauge.dec();
        }
        self.gate.places.fetch_sub(1, Ordering::AcqRel);
        self.gate.room.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_gate_holds_the_cap_and_lets_the_next_in_when_one_closes() {
        let gate = Gate::new(2, 0, prometheus::IntGauge::new("g", "g").unwrap());
        let me: IpAddr = "192.0.2.1".parse().unwrap();
        let a = gate.reserve().await.admit(me).unwrap();
        let _b = gate.reserve().await.admit(me).unwrap();
        let third = tokio::spawn({
            let gate = gate.clone();
            async move { gate.reserve().await }
        });
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(!third.is_finished(), "the cap holds");
        assert_eq!(gate.open(), 2);
        drop(a);
        let _c = third.await.unwrap().admit(me).unwrap();
        assert_eq!(gate.open(), 2);
    }

    #[tokio::test]
    async fn one_address_gets_its_share_only() {
        let gate = Gate::new(100, 2, prometheus::IntGauge::new("g", "g").unwrap());
        let me: IpAddr = "192.0.2.1".parse().unwrap();
        let other: IpAddr = "192.0.2.2".parse().unwrap();
        let first = gate.reserve().await.admit(me).unwrap();
        let _second = gate.reserve().await.admit(me).unwrap();
        assert!(
            gate.reserve().await.admit(me).is_none(),
            "a third from one address"
        );
        assert_eq!(gate.open(), 2, "the refused one gave its place back");
        assert!(gate.reserve().await.admit(other).is_some());
        drop(first);
        assert!(gate.reserve().await.admit(me).is_some(), "room again");
    }

    #[tokio::test(start_paused = true)]
    async fn a_connection_is_idle_only_with_nothing_in_progress() {
        let a = Activity::new(Duration::from_secs(60));
        let idle = Duration::from_secs(10);
        let start = Instant::now();
        assert!(matches!(a.look(start, idle), Look::Again(t) if t == start + idle));
        assert!(matches!(a.look(start + idle, idle), Look::Idle));
        let request = a.begin();
        assert!(matches!(a.look(start + idle * 5, idle), Look::Again(_)));
        tokio::time::advance(idle * 5).await;
        drop(request);
        let now = Instant::now();
        assert!(matches!(a.look(now, idle), Look::Again(t) if t == now + idle));
    }

    #[tokio::test(start_paused = true)]
    async fn a_response_waiting_for_the_client_is_stalled_after_its_limit() {
        let a = Activity::new(Duration::from_secs(60));
        let idle = Duration::from_secs(10);
        let _request = a.begin();
        a.streaming(Duration::from_secs(3));
        a.gave();
        let at = Instant::now();
        assert!(matches!(a.look(at, idle), Look::Again(t) if t == at + Duration::from_secs(3)));
        assert!(matches!(
            a.look(at + Duration::from_secs(3), idle),
            Look::Stalled
        ));
        a.taken();
        assert!(matches!(
            a.look(at + Duration::from_secs(30), idle),
            Look::Again(_)
        ));
    }
}
