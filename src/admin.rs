//! The operator's listener: the status page (`GET /`), the snapshot as JSON (`GET /status`),
//! Prometheus metrics (`GET /metrics`), runtime control (`POST /nodes/{name}/{action}`: drain,
//! disable, enable, promote, check), `POST /reload`, and the rolling catalog reload
//! (`POST /cluster/reload`, progress at `GET /cluster/reload`). Control needs the bearer token when
//! one is set; the rolling reload needs one set.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use http::header::{HeaderValue, AUTHORIZATION, CACHE_CONTROL, CONTENT_TYPE, WWW_AUTHENTICATE};
use http::{Method, Request, Response, StatusCode};
use serde_json::{json, Value};
use tokio::sync::{mpsc, oneshot};

use crate::cluster::rolling::{Handles, Rolling};
use crate::cluster::Snapshot;
use crate::control::{Action, Command, CommandError, ReloadRequest, Source};
use crate::metrics::Metrics;
use crate::response::ResponseBody;

/// The status page: one self-contained file (no external assets), refreshing itself from `/status`.
const STATUS_PAGE: &str = include_str!("status.html");

fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// The snapshot as JSON: each node (name, url, state, role, mode, in-flight, requests, last check,
/// time in state, last ejection) and the routing (master, readers).
pub fn status(snapshot: &Snapshot) -> Value {
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let at = crate::cluster::latency::now_ns(tokio::time::Instant::now());
    let decay = snapshot.config.routing.decay.0;
    let nodes: Vec<Value> = snapshot
        .nodes
        .iter()
        .enumerate()
        .map(|(i, node)| {
            let last_check = node.last_check().map(|c| {
                json!({
                    "ok": c.ok,
                    "detail": c.detail,
                    "latency_ms": (c.latency.as_secs_f64() * 1e6).round() / 1e3,
                    "at_unix": unix_secs(c.at),
                })
            });
            let last_ejection = node
                .last_ejection()
                .map(|e| json!({ "reason": e.reason, "at_unix": unix_secs(e.at) }));
            let role = snapshot.role(i);
            let since = node.state_since_ms();
            let mode = snapshot.modes[i];
            json!({
                "name": node.name(),
                "url": node.origin,
                "state": snapshot.states[i].to_string(),
                "mode": mode.as_str(),
                "drained": mode != crate::cluster::Mode::Active && node.in_flight() == 0,
                "role": role,
                "master": snapshot.master == Some(i),
                "master_priority": node.spec.master,
                "reads": node.spec.reads,
                "in_flight": node.in_flight(),
                "requests_total": node.served(),
                "seconds_in_state": (since > 0).then(|| now_ms.saturating_sub(since) / 1000),
                "last_check": last_check,
                "last_ejection": last_ejection,
                "lagged_reads": node.lag_count(),
                "stalled": node.is_stalled(),
                "waiting": node.awaiting(),
                "latency_ms": (node.latency.estimate(at, decay) / 1e3).round() / 1e3,
                "pace": (node.pace.at(at, decay) * 100.0).round() / 100.0,
            })
        })
        .collect();
    json!({
        "master": snapshot.master().map(|n| n.name()),
        "readers": snapshot.readers.iter().map(|&i| snapshot.nodes[i].name()).collect::<Vec<_>>(),
        "nodes": nodes,
    })
}

/// The admin listener's state.
pub struct Admin {
    cluster: Arc<ArcSwap<Snapshot>>,
    metrics: Arc<Metrics>,
    commands: mpsc::Sender<Command>,
    reloads: mpsc::Sender<ReloadRequest>,
    rolling: Arc<Rolling>,
}

impl Admin {
    pub fn new(
        cluster: Arc<ArcSwap<Snapshot>>,
        metrics: Arc<Metrics>,
        commands: mpsc::Sender<Command>,
        reloads: mpsc::Sender<ReloadRequest>,
    ) -> Admin {
        Admin {
            cluster,
            metrics,
            commands,
            reloads,
            rolling: Arc::new(Rolling::default()),
        }
    }

    /// Serves one admin request.
    pub async fn handle<B>(&self, req: Request<B>) -> Response<ResponseBody> {
        let path = req.uri().path();
        match (req.method(), path) {
            (&Method::GET | &Method::HEAD, "/") => {
                reply(StatusCode::OK, "text/html; charset=utf-8", STATUS_PAGE)
            }
            (&Method::GET | &Method::HEAD, "/status") => {
                let snapshot = self.cluster.load();
                let mut value = status(&snapshot);
                value["catalog_reload"] = self.rolling.progress().to_json();
                json_reply(StatusCode::OK, &value)
            }
            (&Method::GET | &Method::HEAD, "/metrics") => {
                self.cluster.load().export(&self.metrics);
                let text = self.metrics.render();
                reply(
                    StatusCode::OK,
                    "text/plain; version=0.0.4; charset=utf-8",
                    text,
                )
            }
            (&Method::POST, _) if path.starts_with("/nodes/") => self.control(&req).await,
            (&Method::POST, "/reload") => self.reload(&req).await,
            (&Method::GET | &Method::HEAD, "/cluster/reload") => {
                json_reply(StatusCode::OK, &self.rolling.progress().to_json())
            }
            (&Method::POST, "/cluster/reload") => self.rolling_reload(&req),
            (_, "/" | "/status" | "/metrics") => {
                reply(StatusCode::METHOD_NOT_ALLOWED, TEXT, "use GET\n")
            }
            _ => reply(
                StatusCode::NOT_FOUND,
                TEXT,
                "not found: GET /, /status, /metrics, /cluster/reload; POST /nodes/{name}/{action}, /reload, /cluster/reload\n",
            ),
        }
    }

    /// `POST /nodes/{name}/{drain|disable|enable|promote|check}`.
    async fn control<B>(&self, req: &Request<B>) -> Response<ResponseBody> {
        if !self.authorized(req) {
            return unauthorized();
        }
        let mut parts = req
            .uri()
            .path()
            .trim_start_matches("/nodes/")
            .splitn(2, '/');
        let (name, action) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
        let Some(act) = Action::parse(action) else {
            let error =
                format!("unknown action `{action}`: drain, disable, enable, promote or check");
            return json_reply(StatusCode::NOT_FOUND, &json!({ "error": error }));
        };
        let (tx, rx) = oneshot::channel();
        let sent = self
            .commands
            .send(Command {
                node: name.to_string(),
                action: act,
                reply: tx,
            })
            .await;
        let result = match sent {
            Ok(()) => rx.await.unwrap_or(Err(CommandError::Stopped)),
            Err(_) => Err(CommandError::Stopped),
        };
        match result {
            Ok(()) => {
                let snapshot = self.cluster.load();
                let position = snapshot.nodes.iter().position(|n| n.name() == name);
                let mode = position.map_or("unknown", |i| snapshot.modes[i].as_str());
                json_reply(
                    StatusCode::OK,
                    &json!({ "node": name, "action": action, "mode": mode, "master": snapshot.master().map(|n| n.name()) }),
                )
            }
            Err(e) => {
                let status = match e {
                    CommandError::UnknownNode(_) => StatusCode::NOT_FOUND,
                    CommandError::NotCandidate(_) | CommandError::NotReady(_) => {
                        StatusCode::CONFLICT
                    }
                    CommandError::Stopped => StatusCode::SERVICE_UNAVAILABLE,
                };
                json_reply(
                    status,
                    &json!({ "node": name, "action": action, "error": e.to_string() }),
                )
            }
        }
    }

    /// `POST /reload`: re-reads the config file, as SIGHUP does.
    async fn reload<B>(&self, req: &Request<B>) -> Response<ResponseBody> {
        if !self.authorized(req) {
            return unauthorized();
        }
        let (reply, answer) = oneshot::channel();
        let sent = self
            .reloads
            .send(ReloadRequest {
                source: Source::File,
                reply,
            })
            .await;
        let outcome = match sent {
            Ok(()) => answer
                .await
                .unwrap_or_else(|_| Err("geolb is stopping".into())),
            Err(_) => Err("geolb is stopping".into()),
        };
        match outcome {
            Ok(()) => json_reply(StatusCode::OK, &json!({ "reloaded": true })),
            Err(e) => json_reply(
                StatusCode::UNPROCESSABLE_ENTITY,
                &json!({ "reloaded": false, "error": e }),
            ),
        }
    }

    /// `POST /cluster/reload`: starts a rolling catalog reload (202 and its plan), or says why not.
    fn rolling_reload<B>(&self, req: &Request<B>) -> Response<ResponseBody> {
        if self.cluster.load().config.admin.token.is_none() {
            let error = "the rolling reload acts on GeoServer with its admin credentials: set admin.token first";
            return json_reply(StatusCode::FORBIDDEN, &json!({ "error": error }));
        }
        if !self.authorized(req) {
            return unauthorized();
        }
        let handles = Handles {
            cluster: self.cluster.clone(),
            commands: self.commands.clone(),
            metrics: self.metrics.clone(),
        };
        match self.rolling.start(handles) {
            Ok(progress) => json_reply(StatusCode::ACCEPTED, &progress.to_json()),
            Err(error) => json_reply(StatusCode::CONFLICT, &json!({ "error": error })),
        }
    }

    fn authorized<B>(&self, req: &Request<B>) -> bool {
        let snapshot = self.cluster.load();
        let Some(token) = &snapshot.config.admin.token else {
            return true;
        };
        let given = req
            .headers()
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        // Compared in full whatever the first difference, so timing says nothing of the token.
        given.is_some_and(|g| {
            g.len() == token.len()
                && g.bytes()
                    .zip(token.bytes())
                    .fold(0, |acc, (a, b)| acc | (a ^ b))
                    == 0
        })
    }
}

const TEXT: &str = "text/plain; charset=utf-8";

fn unauthorized() -> Response<ResponseBody> {
    let mut r = json_reply(
        StatusCode::UNAUTHORIZED,
        &json!({ "error": "a valid bearer token is required" }),
    );
    r.headers_mut()
        .insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    r
}

fn reply(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<bytes::Bytes>,
) -> Response<ResponseBody> {
    let mut response = Response::new(ResponseBody::text(body));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
        .headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

fn json_reply(status: StatusCode, value: &Value) -> Response<ResponseBody> {
    let mut text = serde_json::to_string_pretty(value).unwrap_or_default();
    text.push('\n');
    reply(status, "application/json", text)
}
