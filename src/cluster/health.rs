//! Health watchdogs: the pure state machine ([`HealthState::observe`]) that decides ejection and
//! re-admission, and the probe task (one per node) that checks the node directly and reports.

use std::fmt;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http::header::{CONNECTION, HOST, USER_AGENT};
use http::uri::Authority;
use http::Request;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use tokio::sync::mpsc;

use super::node::Node;
use crate::config::Health;
use crate::upstream::{self, NodeTls};

/// The `User-Agent` of every probe, so nodes (and their logs) can tell probes from traffic.
pub const PROBE_USER_AGENT: &str = concat!("geolb-health/", env!("CARGO_PKG_VERSION"));

/// A node's health as routing sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum State {
    /// Not checked yet: gets no traffic, and holds back master election until its first check.
    Unknown,
    Down,
    Up,
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            State::Unknown => "unknown",
            State::Down => "down",
            State::Up => "up",
        })
    }
}

/// The rise/fall state machine of one node.
#[derive(Clone, Debug)]
pub struct HealthState {
    state: State,
    ever_up: bool,
    /// Consecutive results agreeing with the pending direction.
    streak: u32,
}

/// A change of state, to log and publish.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Transition {
    pub from: State,
    pub to: State,
}

impl Default for HealthState {
    fn default() -> Self {
        HealthState {
            state: State::Unknown,
            ever_up: false,
            streak: 0,
        }
    }
}

impl HealthState {
    pub fn state(&self) -> State {
        self.state
    }

    /// Records one check. A node that was never up is admitted by one pass; after an ejection it
    /// needs `rise` consecutive passes. `fall` consecutive failures eject an up node; a first failed
    /// check marks an unknown node down at once.
    pub fn observe(&mut self, ok: bool, rise: u32, fall: u32) -> Option<Transition> {
        let from = self.state;
        let to = match (from, ok) {
            (State::Up, true) | (State::Down, false) => {
                self.streak = 0;
                return None;
            }
            (State::Unknown, false) => State::Down,
            (State::Unknown, true) => State::Up,
            (State::Up, false) => {
                self.streak += 1;
                if self.streak < fall {
                    return None;
                }
                State::Down
            }
            (State::Down, true) => {
                self.streak += 1;
                if self.ever_up && self.streak < rise {
                    return None;
                }
                State::Up
            }
        };
        self.streak = 0;
        self.state = to;
        self.ever_up |= to == State::Up;
        Some(Transition { from, to })
    }
}

impl HealthState {
    /// Ejects an up node at once (passive health): it then needs `rise` passes like any ejected node.
    pub fn eject(&mut self) -> Option<Transition> {
        (self.state == State::Up).then(|| {
            self.state = State::Down;
            self.streak = 0;
            Transition {
                from: State::Up,
                to: State::Down,
            }
        })
    }
}

/// What one probe found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckResult {
    pub ok: bool,
    /// `200 in 3ms`, `connect: Connection refused`, `timeout after 1s`, …
    pub detail: String,
    pub latency: Duration,
    pub at: SystemTime,
}

/// Probes `authority` once: a fresh connection, `GET path`, status and body checked, all within
/// `health.timeout`. A failure is a connect error, a timeout, an unexpected status, or a body without
/// `expect_body`.
pub async fn probe(authority: &Authority, health: &Health, tls: Option<&NodeTls>) -> CheckResult {
    let started = Instant::now();
    let outcome = tokio::time::timeout(health.timeout.0, probe_inner(authority, health, tls)).await;
    let latency = started.elapsed();
    let (ok, detail) = match outcome {
        Ok(Ok(status)) => (true, format!("{status} in {}ms", latency.as_millis())),
        Ok(Err(why)) => (false, why),
        Err(_) => (
            false,
            format!("timeout after {}ms", health.timeout.0.as_millis()),
        ),
    };
    CheckResult {
        ok,
        detail,
        latency,
        at: SystemTime::now(),
    }
}

async fn probe_inner(
    authority: &Authority,
    health: &Health,
    tls: Option<&NodeTls>,
) -> Result<u16, String> {
    // The probe's own timeout bounds the whole check, the connection included.
    let stream = upstream::connect(authority, tls, health.timeout.0)
        .await
        .map_err(|e| e.to_string())?;
    probe_over(stream, authority, health).await
}

/// The check itself, over a connection (plain or TLS).
async fn probe_over<T>(stream: T, authority: &Authority, health: &Health) -> Result<u16, String>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    let conn = tokio::spawn(conn);
    let request = Request::get(health.path.as_str())
        .header(HOST, authority.as_str())
        .header(USER_AGENT, PROBE_USER_AGENT)
        .header(CONNECTION, "close")
        .body(Empty::<Bytes>::new())
        .map_err(|e| format!("bad health.path: {e}"))?;
    let result = async {
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| format!("request: {e}"))?;
        let status = response.status().as_u16();
        if !health.expect_status.contains(&status) {
            return Err(format!("unexpected status {status}"));
        }
        if health.expect_body.is_empty() {
            return Ok(status);
        }
        let mut finder = Finder::new(health.expect_body.as_bytes());
        let mut body = response.into_body();
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| format!("reading body: {e}"))?;
            if frame.data_ref().is_some_and(|data| finder.feed(data)) {
                return Ok(status);
            }
        }
        Err(format!(
            "status {status} but the body lacks `{}` (an OGC exception?)",
            health.expect_body
        ))
    }
    .await;
    conn.abort();
    result
}

/// Streams chunks looking for `needle`, keeping only `needle.len() - 1` bytes between chunks.
struct Finder<'n> {
    needle: &'n [u8],
    carry: Vec<u8>,
}

impl<'n> Finder<'n> {
    fn new(needle: &'n [u8]) -> Self {
        Finder {
            needle,
            carry: Vec::with_capacity(needle.len() * 2),
        }
    }

    fn feed(&mut self, chunk: &[u8]) -> bool {
        let keep = self.needle.len().saturating_sub(1);
        // The seam: the tail of what came before, then the start of this chunk.
        self.carry
            .extend_from_slice(&chunk[..chunk.len().min(keep)]);
        if contains(&self.carry, self.needle) || contains(chunk, self.needle) {
            return true;
        }
        if chunk.len() >= keep {
            self.carry.clear();
            self.carry.extend_from_slice(&chunk[chunk.len() - keep..]);
        } else {
            let excess = self.carry.len().saturating_sub(keep);
            self.carry.drain(..excess);
        }
        false
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || haystack.windows(needle.len()).any(|w| w == needle)
}

/// One probe's result for the node at `node` (its index in the snapshot it was started for).
#[derive(Debug)]
pub struct Observation {
    /// The node's id.
    pub node: u64,
    pub result: CheckResult,
}

/// Probes one node every `interval`, and at once when its `recheck` is notified, reporting each
/// result; closes the node's idle connections that expired or that the node closed. Ends when the
/// receiver is gone.
pub async fn watchdog(
    node: std::sync::Arc<Node>,
    health: Health,
    report: mpsc::Sender<Observation>,
    tls: Option<NodeTls>,
) {
    let mut ticker = tokio::time::interval(health.interval.0);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = node.recheck.notified() => ticker.reset(),
        }
        node.upstream.sweep();
        let result = probe(node.authority(), &health, tls.as_ref()).await;
        let observation = Observation {
            node: node.id,
            result,
        };
        if report.send(observation).await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn startup_admits_on_one_pass() {
        let mut h = HealthState::default();
        assert_eq!(h.state(), State::Unknown);
        assert_eq!(
            h.observe(true, 2, 3),
            Some(Transition {
                from: State::Unknown,
                to: State::Up
            })
        );
    }

    #[test]
    fn startup_failure_marks_down_and_one_pass_still_admits() {
        let mut h = HealthState::default();
        assert_eq!(h.observe(false, 2, 3).map(|t| t.to), Some(State::Down));
        assert_eq!(
            h.observe(true, 2, 3).map(|t| t.to),
            Some(State::Up),
            "never up yet: one pass"
        );
    }

    #[test]
    fn fall_ejects_and_rise_readmits() {
        let mut h = HealthState::default();
        h.observe(true, 2, 3);
        assert_eq!(h.observe(false, 2, 3), None);
        assert_eq!(h.observe(false, 2, 3), None);
        assert_eq!(
            h.observe(false, 2, 3),
            Some(Transition {
                from: State::Up,
                to: State::Down
            })
        );
        assert_eq!(
            h.observe(true, 2, 3),
            None,
            "after an ejection one pass is not enough"
        );
        assert_eq!(
            h.observe(true, 2, 3),
            Some(Transition {
                from: State::Down,
                to: State::Up
            })
        );
    }

    #[test]
    fn passive_ejection_then_rise_passes() {
        let mut h = HealthState::default();
        assert_eq!(h.eject(), None, "only an up node can be ejected");
        h.observe(true, 2, 3);
        assert_eq!(
            h.eject(),
            Some(Transition {
                from: State::Up,
                to: State::Down
            })
        );
        assert_eq!(h.observe(true, 2, 3), None);
        assert_eq!(h.observe(true, 2, 3).map(|t| t.to), Some(State::Up));
    }

    #[test]
    fn streaks_must_be_consecutive() {
        let mut h = HealthState::default();
        h.observe(true, 2, 3);
        for _ in 0..10 {
            assert_eq!(h.observe(false, 2, 3), None);
            assert_eq!(h.observe(false, 2, 3), None);
            assert_eq!(
                h.observe(true, 2, 3),
                None,
                "a pass resets the failure streak"
            );
        }
        for _ in 0..3 {
            h.observe(false, 2, 3);
        }
        assert_eq!(h.state(), State::Down);
        assert_eq!(h.observe(true, 2, 3), None);
        assert_eq!(
            h.observe(false, 2, 3),
            None,
            "a failure resets the pass streak"
        );
        assert_eq!(h.observe(true, 2, 3), None);
        assert_eq!(h.observe(true, 2, 3).map(|t| t.to), Some(State::Up));
    }

    #[test]
    fn finder_sees_needles_across_chunks() {
        let needle = b"WMS_Capabilities";
        let text = b"<?xml version=\"1.0\"?><WMS_Capabilities version=\"1.3.0\">";
        for cut in 0..text.len() {
            for cut2 in cut..text.len() {
                let mut f = Finder::new(needle);
                let found = f.feed(&text[..cut]) | f.feed(&text[cut..cut2]) | f.feed(&text[cut2..]);
                assert!(found, "cuts {cut} {cut2}");
            }
        }
        let mut f = Finder::new(needle);
        assert!(
            !f.feed(b"<ServiceExceptionReport>WMS_Capab") && !f.feed(b"ilitie") && !f.feed(b"</x>")
        );
        let mut f = Finder::new(needle);
        for b in text.iter() {
            if f.feed(std::slice::from_ref(b)) {
                return;
            }
        }
        panic!("byte-by-byte feeding must find the needle");
    }
}
