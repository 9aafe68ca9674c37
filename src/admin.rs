//! The operator's listener: `GET /status`, the routing snapshot as JSON.

use std::sync::Arc;
use std::time::UNIX_EPOCH;

use arc_swap::ArcSwap;
use http::header::{HeaderValue, CONTENT_TYPE};
use http::{Method, Request, Response, StatusCode};
use serde_json::{json, Value};

use crate::cluster::Snapshot;
use crate::metrics::Metrics;
use crate::proxy::ResponseBody;

/// The snapshot as JSON: each node (name, url, state, master, in-flight, last check) and the master.
pub fn status(snapshot: &Snapshot) -> Value {
    let nodes: Vec<Value> = snapshot
        .nodes
        .iter()
        .enumerate()
        .map(|(i, node)| {
            let last_check = node.last_check().map(|c| {
                json!({
                    "ok": c.ok,
                    "detail": c.detail,
                    "latency_ms": c.latency.as_secs_f64() * 1000.0,
                    "at_unix": c.at.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0),
                })
            });
            json!({
                "name": node.name(),
                "url": node.origin,
                "state": snapshot.states[i].to_string(),
                "master": snapshot.master == Some(i),
                "master_priority": node.spec.master,
                "reads": node.spec.reads,
                "in_flight": node.in_flight(),
                "last_check": last_check,
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
}

impl Admin {
    pub fn new(cluster: Arc<ArcSwap<Snapshot>>, metrics: Arc<Metrics>) -> Admin {
        Admin { cluster, metrics }
    }

    /// Serves one admin request.
    pub fn handle<B>(&self, req: &Request<B>) -> Response<ResponseBody> {
        let (status, content_type, body) = match (req.method(), req.uri().path()) {
            (&Method::GET | &Method::HEAD, "/status") => {
                let snapshot = self.cluster.load();
                let mut text = serde_json::to_string_pretty(&status(&snapshot)).unwrap_or_default();
                text.push('\n');
                (StatusCode::OK, "application/json", text)
            }
            (&Method::GET | &Method::HEAD, "/metrics") => {
                let text = self.metrics.render(&self.cluster.load());
                (
                    StatusCode::OK,
                    "text/plain; version=0.0.4; charset=utf-8",
                    text,
                )
            }
            (_, "/status" | "/metrics") => (
                StatusCode::METHOD_NOT_ALLOWED,
                "text/plain; charset=utf-8",
                "use GET\n".into(),
            ),
            _ => (
                StatusCode::NOT_FOUND,
                "text/plain; charset=utf-8",
                "not found: try GET /status or /metrics\n".into(),
            ),
        };
        let mut response = Response::new(ResponseBody::text(body));
        *response.status_mut() = status;
        response
            .headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
        response
    }
}
