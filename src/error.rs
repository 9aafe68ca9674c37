//! What can go wrong while serving a request, where it came from, and the one place that turns it
//! into an HTTP answer (status, one-line body, log line).

use std::net::SocketAddr;
use std::time::Duration;

use http::header::{HeaderValue, CONNECTION, CONTENT_TYPE, RETRY_AFTER};
use http::{Method, Response, StatusCode};

use crate::log::{chain, LogBudget, PER_REQUEST_LINES};
use crate::response::ResponseBody;

/// A request that could not be served.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// No healthy master candidate: the master pool is empty.
    #[error("no healthy master: writes are unavailable")]
    NoMaster,
    /// No healthy node serves reads.
    #[error("no healthy node: reads are unavailable")]
    NoReader,
    /// The node failed before answering (connect error, reset, bad response).
    #[error("node {node} failed: {}", chain(source))]
    Upstream {
        node: String,
        source: crate::upstream::Error,
    },
    /// The node sent no response headers in time.
    #[error("node {node} did not answer within {after:?}")]
    Timeout { node: String, after: Duration },
    /// The node stopped reading the request body.
    #[error("node {node} stopped reading the request body for {after:?}")]
    UploadStalled { node: String, after: Duration },
    /// The node answered this gateway error, and the retries on other nodes found none to take it.
    #[error("node {node} answered {status}")]
    Answered { node: String, status: StatusCode },
    /// The node's answer broke while geolb read its start (nothing was sent to the client yet).
    #[error("node {node}'s answer broke: {why}")]
    BrokenAnswer { node: String, why: String },
    /// Every eligible node is at `limits.max_requests` and the queue is full.
    #[error("every node is busy and the queue is full")]
    QueueFull,
    /// Waited in the queue for `limits.queue_timeout` without a free slot.
    #[error("every node is busy: no free slot within {0:?}")]
    QueueTimeout(Duration),
    #[error("request body larger than {0} bytes")]
    BodyTooLarge(u64),
    /// The client stopped sending its body.
    #[error("the request body stalled for {0:?}")]
    ClientIdle(Duration),
    /// The client's body broke (aborted, malformed framing) while geolb read or forwarded it.
    #[error("could not read the request body: {0}")]
    ClientBody(String),
    #[error("bad request: {0}")]
    BadRequest(&'static str),
}

impl ProxyError {
    pub fn status(&self) -> StatusCode {
        match self {
            ProxyError::NoMaster
            | ProxyError::NoReader
            | ProxyError::QueueFull
            | ProxyError::QueueTimeout(_) => StatusCode::SERVICE_UNAVAILABLE,
            ProxyError::Upstream { .. } | ProxyError::BrokenAnswer { .. } => {
                StatusCode::BAD_GATEWAY
            }
            ProxyError::Timeout { .. } | ProxyError::UploadStalled { .. } => {
                StatusCode::GATEWAY_TIMEOUT
            }
            ProxyError::Answered { status, .. } => *status,
            ProxyError::BodyTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ProxyError::ClientIdle(_) => StatusCode::REQUEST_TIMEOUT,
            ProxyError::ClientBody(_) | ProxyError::BadRequest(_) => StatusCode::BAD_REQUEST,
        }
    }

    /// One log line per failed or refused request, at most [`PER_REQUEST_LINES`] a second of
    /// each kind: a client sending bad requests cannot flood the log.
    pub fn log(&self, method: &Method, path: &str, peer: SocketAddr) {
        static FAILED: LogBudget = LogBudget::new(PER_REQUEST_LINES);
        static REFUSED: LogBudget = LogBudget::new(PER_REQUEST_LINES);
        let status = self.status().as_u16();
        if self.status().is_server_error() {
            if let Some(held_back) = FAILED.allow() {
                tracing::warn!(%method, path, %peer, status, error = %self, held_back, "request failed");
            }
        } else if let Some(held_back) = REFUSED.allow() {
            tracing::info!(%method, path, %peer, status, error = %self, held_back, "request refused");
        }
    }

    /// The answer to the client: the status, and the error as one line of text.
    pub fn into_response(self, retry_after: &HeaderValue) -> Response<ResponseBody> {
        let status = self.status();
        let mut response = Response::new(ResponseBody::text(format!("{self}\n")));
        *response.status_mut() = status;
        let headers = response.headers_mut();
        headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        if status == StatusCode::SERVICE_UNAVAILABLE {
            headers.insert(RETRY_AFTER, retry_after.clone());
        }
        if status.is_client_error() {
            // The rest of a refused request (an unread body, a smuggling attempt) must not be read as
            // the next one: close the connection after this answer.
            headers.insert(CONNECTION, HeaderValue::from_static("close"));
        }
        response
    }
}
