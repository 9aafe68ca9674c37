//! The classifier's look-ahead: the first bytes of a POST body, read (within the idle timeout)
//! until the classifier can decide, then replayed to the node ahead of the rest.

use std::collections::VecDeque;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http_body::{Body as _, Frame};
use hyper::body::Incoming;

use crate::body::{BodyError, IdleTimer};
use crate::classify::Route;
use crate::error::ProxyError;

/// The frames read for classification, and the rest of the body.
pub type Peeked = (VecDeque<Frame<Bytes>>, Incoming);

/// Reads body frames until `decide` returns a route (it must once `lookahead` bytes are seen, or at
/// the end), then hands back those frames and the rest. A client silent for `idle` gets 408.
pub async fn lookahead(
    mut body: Incoming,
    idle: Duration,
    mut decide: impl FnMut(&[u8], bool) -> Option<Route>,
) -> Result<(Route, Peeked), ProxyError> {
    let mut frames = VecDeque::new();
    let mut scratch = BytesMut::new();
    let mut timer = IdleTimer::new(idle);
    loop {
        let frame = match std::future::poll_fn(|cx| timer.poll(&mut body, cx)).await {
            Some(Ok(frame)) => Some(frame),
            Some(Err(e)) => {
                return Err(match e.downcast::<BodyError>() {
                    Ok(err) => ProxyError::from(*err),
                    Err(e) => ProxyError::ClientBody(crate::log::chain(&*e)),
                })
            }
            None => None,
        };
        let complete = frame.is_none() || body.is_end_stream();
        let data = frame
            .as_ref()
            .and_then(Frame::data_ref)
            .cloned()
            .unwrap_or_default();
        // The common case, a body whose first frame decides, is classified without a copy.
        let decided = if scratch.is_empty() {
            decide(&data, complete)
        } else {
            scratch.extend_from_slice(&data);
            decide(&scratch, complete)
        };
        if let Some(frame) = frame {
            frames.push_back(frame);
        }
        if let Some(route) = decided {
            return Ok((route, (frames, body)));
        }
        if scratch.is_empty() {
            scratch.extend_from_slice(&data);
        }
        if complete {
            // `decide` always answers for a complete body; this is only a guard.
            return Err(ProxyError::BadRequest(
                "request body could not be classified",
            ));
        }
    }
}
