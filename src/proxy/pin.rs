//! Read-your-writes on the request path: a read of a client that wrote a moment ago goes to the
//! master; a successful write pins its client (a cookie on the answer, and its address).

use http::header::SET_COOKIE;
use http::{Method, Response};

use super::opinion::peek;
use super::{Peer, Proxy};
use crate::classify::{Pool, Route};
use crate::cluster::Snapshot;
use crate::consistency;
use crate::error::ProxyError;
use crate::exception;
use crate::response::ResponseBody;

/// Whether a request to the master is a write that pins its client: it may change state (a
/// non-safe method, or a read-looking request the classifier calls a write, such as a lock).
pub(super) fn is_write(route: &Route, method: &Method) -> bool {
    route.write || !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

impl Proxy {
    /// The route of a read whose client wrote within `consistency.read_your_writes`: the master
    /// (when there is one: with the master pool empty the read stays a read and goes to the
    /// replicas, rather than failing like a write). Returns whether it was pinned so.
    pub(super) fn read_your_writes(
        &self,
        mut route: Route,
        parts: &http::request::Parts,
        peer: &Peer,
        snapshot: &Snapshot,
    ) -> (Route, bool) {
        let config = &snapshot.config;
        let c = &config.consistency;
        if route.pool != Pool::Reads
            || c.read_your_writes.0.is_zero()
            || snapshot.master().is_none()
        {
            return (route, false);
        }
        let trusted = &config.forwarding.trusted_proxies;
        let client = || consistency::client_address(&parts.headers, peer.addr.ip(), trusted);
        let Some(by) = self
            .pins
            .pinned(&parts.headers, client, c.by_address, c.key.as_deref())
        else {
            return (route, false);
        };
        self.metrics()
            .pinned_reads
            .with_label_values(&[by.as_str()])
            .inc();
        route.pool = Pool::Master;
        (route, true)
    }

    /// A write's answer: when it succeeded (a 2xx that is no OGC exception document), its client
    /// is pinned to the master for `consistency.read_your_writes` and the answer sets the cookie.
    pub(super) async fn pin_writer(
        &self,
        answer: Response<ResponseBody>,
        parts: &http::request::Parts,
        peer: &Peer,
        snapshot: &Snapshot,
        secure: bool,
        node: &str,
    ) -> Result<Response<ResponseBody>, ProxyError> {
        let config = &snapshot.config;
        let c = &config.consistency;
        let status = answer.status();
        if c.read_your_writes.0.is_zero() || !status.is_success() {
            return Ok(answer);
        }
        let (mut head, mut body) = answer.into_parts();
        if let Some(format) = exception::may_be_exception(status, &head.headers) {
            // A WFS Transaction refused with 200 changed nothing.
            match peek(&mut body, format, status).await {
                Ok(None) => {}
                Ok(Some((_, doc))) => {
                    return Ok(Response::from_parts(head, ResponseBody::text(doc)))
                }
                Err(e) => {
                    return Err(ProxyError::BrokenAnswer {
                        node: node.to_string(),
                        why: e.to_string(),
                    })
                }
            }
        }
        let trusted = &config.forwarding.trusted_proxies;
        let client = consistency::client_address(&parts.headers, peer.addr.ip(), trusted);
        let path = config.routing.context_path.as_str();
        let cookie = (c.key.as_deref(), path, secure);
        if let Some(cookie) = self
            .pins
            .pin(client, c.read_your_writes.0, c.by_address, cookie)
        {
            head.headers.append(SET_COOKIE, cookie);
        }
        Ok(Response::from_parts(head, body))
    }
}
