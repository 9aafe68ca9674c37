//! The rolling catalog reload: the nodes one at a time drained, `POST {context_path}/rest/reload`
//! on each (GeoServer reloads its catalog synchronously, and answers wrongly meanwhile), then
//! re-admitted after `health.rise` passing checks. It stops at the first node that does not come
//! back, leaving that one drained and the rest untouched. Master candidates are skipped by default:
//! in a JMS cluster a node that broadcasts passes its reload on to every node at once.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use base64::Engine as _;
use bytes::Bytes;
use http::header::{AUTHORIZATION, CONNECTION, CONTENT_LENGTH, HOST, USER_AGENT};
use http::Request;
use http_body_util::Empty;
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::sync::{mpsc, oneshot};

use super::health::State;
use super::{Mode, Node, Snapshot};
use crate::config::{CatalogReload, MastersPolicy};
use crate::control::{Action, Command};
use crate::metrics::Metrics;
use crate::upstream;

/// Where one node stands in a rolling reload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Step {
    pub node: String,
    /// `pending`, `draining`, `reloading`, `checking`, `done`, `failed` or `skipped`.
    pub step: &'static str,
    pub detail: String,
}

/// A rolling reload's progress, as the status page and `GET /cluster/reload` show it.
#[derive(Clone, Debug, Default)]
pub struct Progress {
    /// `idle` (none yet), `running`, `done` or `failed`.
    pub state: &'static str,
    pub started: Option<SystemTime>,
    pub finished: Option<SystemTime>,
    pub steps: Vec<Step>,
    pub error: Option<String>,
}

impl Progress {
    pub fn to_json(&self) -> Value {
        let secs = |t: Option<SystemTime>| {
            t.and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
                .map(|d| d.as_secs())
        };
        let steps: Vec<Value> = self
            .steps
            .iter()
            .map(|s| json!({ "node": s.node, "step": s.step, "detail": s.detail }))
            .collect();
        json!({
            "state": if self.state.is_empty() { "idle" } else { self.state },
            "started_unix": secs(self.started),
            "finished_unix": secs(self.finished),
            "nodes": steps,
            "error": self.error,
        })
    }
}

/// A node as a rolling reload's plan sees it.
#[derive(Clone, Copy, Debug)]
pub struct Member<'a> {
    pub name: &'a str,
    /// The operator has not drained or disabled it.
    pub active: bool,
    pub up: bool,
    pub candidate: bool,
    /// The master in force.
    pub master: bool,
}

/// The snapshot's nodes as [`plan`] takes them.
pub fn members(snapshot: &Snapshot) -> Vec<Member<'_>> {
    let nodes = snapshot.nodes.iter().enumerate();
    nodes
        .map(|(i, node)| Member {
            name: node.name(),
            active: snapshot.modes[i] == Mode::Active,
            up: snapshot.states[i] == State::Up,
            candidate: node.spec.master.is_some(),
            master: snapshot.master == Some(i),
        })
        .collect()
}

/// Which nodes a rolling reload takes, in order, and why the others are left out: nodes that are
/// not master candidates in configuration order, then (with `masters = "last"`) the candidates,
/// the master in force last. Nodes that are down or that the operator took out are skipped.
pub fn plan(members: &[Member<'_>], masters: MastersPolicy) -> Vec<Step> {
    let step = |m: &Member<'_>, step: &'static str, detail: &str| Step {
        node: m.name.to_string(),
        step,
        detail: detail.to_string(),
    };
    let mut taken = Vec::new();
    let mut skipped = Vec::new();
    let mut candidates = Vec::new();
    for m in members {
        if !m.active {
            skipped.push(step(m, "skipped", "taken out by the operator"));
        } else if !m.up {
            skipped.push(step(m, "skipped", "not up"));
        } else if m.candidate {
            candidates.push(m);
        } else {
            taken.push(step(m, "pending", ""));
        }
    }
    match masters {
        MastersPolicy::Skip => {
            for m in candidates {
                let why = "a master candidate: its reload would be broadcast to every node";
                skipped.push(step(m, "skipped", why));
            }
        }
        MastersPolicy::Last => {
            // The master in force last: writes move once, to a candidate already reloaded.
            candidates.sort_by_key(|m| m.master);
            taken.extend(candidates.into_iter().map(|m| step(m, "pending", "")));
        }
    }
    taken.extend(skipped);
    taken
}

/// The rolling reload's state: at most one runs at a time.
#[derive(Default)]
pub struct Rolling {
    progress: ArcSwap<Progress>,
    running: AtomicBool,
}

/// What a run needs from the rest of geolb.
pub struct Handles {
    pub cluster: Arc<ArcSwap<Snapshot>>,
    pub commands: mpsc::Sender<Command>,
    pub metrics: Arc<Metrics>,
}

impl Rolling {
    pub fn progress(&self) -> Arc<Progress> {
        self.progress.load_full()
    }

    /// Starts a rolling reload on its own task; refused while one runs, or without credentials.
    pub fn start(self: &Arc<Self>, handles: Handles) -> Result<Arc<Progress>, String> {
        let snapshot = handles.cluster.load_full();
        let settings = snapshot.config.catalog_reload.clone();
        if settings.password.is_none() {
            return Err("no GeoServer credentials: set catalog_reload.password_file (or GEOLB_RELOAD_PASSWORD) and catalog_reload.user".into());
        }
        if self.running.swap(true, Ordering::AcqRel) {
            return Err("a rolling reload is running already".into());
        }
        let progress = Progress {
            state: "running",
            started: Some(SystemTime::now()),
            finished: None,
            steps: plan(&members(&snapshot), settings.masters),
            error: None,
        };
        let skipped = progress
            .steps
            .iter()
            .filter(|s| s.step == "skipped")
            .count();
        handles
            .metrics
            .catalog_reloads
            .with_label_values(&["skipped"])
            .inc_by(skipped as u64);
        handles.metrics.catalog_reload_running.set(1);
        self.progress.store(Arc::new(progress));
        let this = self.clone();
        tokio::spawn(async move {
            let outcome = this.run(&handles, &settings).await;
            let mut progress = (*this.progress.load_full()).clone();
            progress.finished = Some(SystemTime::now());
            match outcome {
                Ok(()) => {
                    progress.state = "done";
                    tracing::info!("rolling catalog reload done");
                }
                Err(error) => {
                    tracing::warn!(%error, "rolling catalog reload stopped");
                    progress.state = "failed";
                    progress.error = Some(error);
                }
            }
            this.progress.store(Arc::new(progress));
            handles.metrics.catalog_reload_running.set(0);
            this.running.store(false, Ordering::Release);
        });
        Ok(self.progress())
    }

    /// Marks a node's step.
    fn mark(&self, node: &str, step: &'static str, detail: impl Into<String>) {
        let mut progress = (*self.progress.load_full()).clone();
        if let Some(s) = progress.steps.iter_mut().find(|s| s.node == node) {
            s.step = step;
            s.detail = detail.into();
        }
        self.progress.store(Arc::new(progress));
    }

    async fn run(&self, handles: &Handles, settings: &CatalogReload) -> Result<(), String> {
        let pending: Vec<String> = self
            .progress()
            .steps
            .iter()
            .filter(|s| s.step == "pending")
            .map(|s| s.node.clone())
            .collect();
        for name in pending {
            let count = |result| {
                let counter = handles.metrics.catalog_reloads.with_label_values(&[result]);
                counter.inc();
            };
            if let Err(why) = self.one(handles, settings, &name).await {
                count("failed");
                self.mark(&name, "failed", why.clone());
                return Err(format!(
                    "{name}: {why} (left drained; the nodes after it untouched)"
                ));
            }
            count("reloaded");
            self.mark(&name, "done", "reloaded and re-admitted");
        }
        Ok(())
    }

    /// Drain, reload, wait for `rise` passing checks, re-admit.
    async fn one(
        &self,
        handles: &Handles,
        settings: &CatalogReload,
        name: &str,
    ) -> Result<(), String> {
        let node = find(&handles.cluster.load(), name).ok_or("left the cluster")?;
        self.mark(name, "draining", "");
        command(&handles.commands, name, Action::Drain).await?;
        let drained = wait_until(settings.drain_timeout.0, || node.in_flight() == 0).await;
        let detail = if drained {
            String::new()
        } else {
            format!(
                "{} requests still in flight after {:?}",
                node.in_flight(),
                settings.drain_timeout.0
            )
        };
        self.mark(name, "reloading", detail);
        let snapshot = handles.cluster.load_full();
        let reloaded_at = SystemTime::now();
        let timeout = settings.timeout.0;
        match tokio::time::timeout(timeout, reload(&node, &snapshot, settings)).await {
            Ok(Ok(())) => {}
            Ok(Err(why)) => return Err(why),
            Err(_) => return Err(format!("no answer to the reload within {timeout:?}")),
        }
        let rise = snapshot.config.health.rise.max(1);
        self.mark(
            name,
            "checking",
            format!("waiting for {rise} passing checks"),
        );
        command(&handles.commands, name, Action::Check).await?;
        let back = come_back(&handles.cluster, &node, reloaded_at, rise, timeout).await;
        if !back {
            return Err(format!(
                "did not pass {rise} checks in a row within {timeout:?} of its reload"
            ));
        }
        command(&handles.commands, name, Action::Enable).await
    }
}

fn find(snapshot: &Snapshot, name: &str) -> Option<Arc<Node>> {
    snapshot.nodes.iter().find(|n| n.name() == name).cloned()
}

async fn command(
    commands: &mpsc::Sender<Command>,
    node: &str,
    action: Action,
) -> Result<(), String> {
    let (reply, answer) = oneshot::channel();
    let command = Command {
        node: node.to_string(),
        action,
        reply,
    };
    commands
        .send(command)
        .await
        .map_err(|_| "geolb is stopping".to_string())?;
    match answer.await {
        Ok(result) => result.map_err(|e| e.to_string()),
        Err(_) => Err("geolb is stopping".into()),
    }
}

/// Polls `done` every 20 ms until it holds (true) or `within` passes (false).
async fn wait_until(within: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if done() {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Whether the node passes `rise` checks in a row (made after `since`) and is up, within `within`.
async fn come_back(
    cluster: &ArcSwap<Snapshot>,
    node: &Node,
    since: SystemTime,
    rise: u32,
    within: Duration,
) -> bool {
    let (mut passes, mut last_seen) = (0u32, since);
    wait_until(within, || {
        if let Some(check) = node.last_check() {
            if check.at > last_seen {
                last_seen = check.at;
                passes = if check.ok { passes + 1 } else { 0 };
            }
        }
        let snapshot = cluster.load();
        let up = snapshot
            .nodes
            .iter()
            .position(|n| n.id == node.id)
            .is_some_and(|i| snapshot.states[i] == State::Up);
        passes >= rise && up
    })
    .await
}

/// `POST {context_path}/rest/reload` on the node, with the configured credentials.
async fn reload(node: &Node, snapshot: &Snapshot, settings: &CatalogReload) -> Result<(), String> {
    let config = &snapshot.config;
    let tls = node.spec.tls.then_some(&snapshot.node_tls);
    let stream = upstream::connect(node.authority(), tls, config.timeouts.connect.0)
        .await
        .map_err(|e| format!("reload: {e}"))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("reload: handshake: {e}"))?;
    let conn = tokio::spawn(conn);
    let password = settings.password.as_ref().map_or("", |p| p.0.as_str());
    let basic =
        base64::engine::general_purpose::STANDARD.encode(format!("{}:{password}", settings.user));
    let path = format!(
        "{}/rest/reload",
        config.routing.context_path.trim_end_matches('/')
    );
    let request = Request::post(path)
        .header(HOST, node.authority().as_str())
        .header(AUTHORIZATION, format!("Basic {basic}"))
        .header(USER_AGENT, "geolb-reload")
        .header(CONTENT_LENGTH, "0")
        .header(CONNECTION, "close")
        .body(Empty::<Bytes>::new())
        .map_err(|e| format!("reload: {e}"))?;
    let response = sender.send_request(request).await;
    conn.abort();
    let status = response.map_err(|e| format!("reload: {e}"))?.status();
    if status.is_success() {
        Ok(())
    } else {
        Err(format!("the reload was answered {status}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(name: &str, candidate: bool, master: bool) -> Member<'_> {
        Member {
            name,
            active: true,
            up: true,
            candidate,
            master,
        }
    }

    fn order(steps: &[Step]) -> Vec<(&str, &str)> {
        steps.iter().map(|s| (s.node.as_str(), s.step)).collect()
    }

    #[test]
    fn replicas_first_candidates_skipped_or_last_with_the_master_at_the_end() {
        let members = [
            member("m", true, true),
            member("a", false, false),
            member("c", true, false),
            member("b", false, false),
        ];
        assert_eq!(
            order(&plan(&members, MastersPolicy::Skip)),
            [
                ("a", "pending"),
                ("b", "pending"),
                ("m", "skipped"),
                ("c", "skipped")
            ]
        );
        assert_eq!(
            order(&plan(&members, MastersPolicy::Last)),
            [
                ("a", "pending"),
                ("b", "pending"),
                ("c", "pending"),
                ("m", "pending")
            ]
        );
        let mut out = members;
        out[1].up = false;
        out[3].active = false;
        let steps = plan(&out, MastersPolicy::Skip);
        assert_eq!(
            order(&steps),
            [
                ("a", "skipped"),
                ("b", "skipped"),
                ("m", "skipped"),
                ("c", "skipped")
            ]
        );
        assert_eq!(steps[0].detail, "not up");
    }
}
