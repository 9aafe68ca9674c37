//! Second opinions on OGC exceptions. A read answered with an exception document is held back (a
//! bounded peek: exception documents are small) and asked again of one other node, within the
//! retry budget: the master when the answer says "not known here" (a replica behind the master:
//! replication lag, never charged, unless it stays deaf), another healthy node for anything else
//! (a sick node is charged one failure when the other one answers). When both answers are
//! exceptions the request is at fault: nobody is charged.

use std::sync::Arc;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use http::{Response, StatusCode};
use http_body::Body as _;
use http_body_util::BodyExt;

use super::{respond, Addressed, Proxy, Sent};
use crate::body::{BoxError, ForwardBody, LentBody, Upload};
use crate::classify::{Class, Pool};
use crate::cluster::{Node, Snapshot};
use crate::config::ClassTimeouts;
use crate::control::Report;
use crate::error::ProxyError;
use crate::exception::{self, Exception, Format, Kind, Sniff};
use crate::metrics::{Extra, ExtraResult};
use crate::record::Record;
use crate::response::ResponseBody;

/// What a second attempt of the same read needs.
pub(super) struct Ask<'a> {
    pub snapshot: &'a Snapshot,
    pub parts: &'a http::request::Parts,
    /// The whole request body (reads are asked again only when it is held).
    pub copy: &'a [Bytes],
    pub timeouts: ClassTimeouts,
    pub client: Addressed<'a>,
    /// Nodes already tried (and failed) for this request.
    pub tried: &'a [u64],
}

/// Reads an answer's start until it is known not to be an exception document, or until it is a
/// whole one ([`exception::PEEK_LIMIT`] at most): the exception and the whole document, or `None`
/// with what was read put back into `body`. The body's idle timer bounds each wait.
pub(super) async fn peek(
    body: &mut ResponseBody,
    format: Format,
    status: StatusCode,
) -> Result<Option<(Exception, Bytes)>, BoxError> {
    let mut read: Vec<Bytes> = Vec::new();
    let mut joined = BytesMut::new();
    loop {
        let ended = match body.frame().await {
            None => true,
            Some(frame) => match frame?.into_data() {
                Ok(data) => {
                    read.push(data);
                    body.is_end_stream()
                }
                // Trailers: nothing more to read (and none that GeoServer sends).
                Err(_) => true,
            },
        };
        // One frame is looked at where it lies; more are joined (rare: documents are small).
        let bytes: &[u8] = match read.as_slice() {
            [] => &[],
            [only] => only,
            [.., last] => {
                if joined.is_empty() {
                    read[..read.len() - 1]
                        .iter()
                        .for_each(|b| joined.extend_from_slice(b));
                }
                joined.extend_from_slice(last);
                &joined
            }
        };
        match exception::sniff(format, status, bytes, ended) {
            Sniff::More if !ended => continue,
            Sniff::Exception(e) => return Ok(Some((e, Bytes::copy_from_slice(bytes)))),
            Sniff::More | Sniff::Not => {
                let held = match read.len() {
                    0 => Bytes::new(),
                    1 => read.swap_remove(0),
                    _ => joined.freeze(),
                };
                body.put_back(held);
                return Ok(None);
            }
        }
    }
}

/// Whom to ask again about an exception of `kind` (`from_master`: it came from the master in
/// force): `None` when no other node could answer better.
fn whom(kind: Kind, from_master: bool) -> Option<Pool> {
    match kind {
        Kind::Mistake => None,
        // The master knows what the cluster knows.
        Kind::Unknown if from_master => None,
        Kind::Unknown => Some(Pool::Master),
        Kind::Failure => Some(Pool::Reads),
    }
}

/// An answer to a client that has been read whole: the node's slot and connection are let go.
fn whole(head: http::response::Parts, doc: Bytes) -> Response<ResponseBody> {
    Response::from_parts(head, ResponseBody::text(doc))
}

impl Proxy {
    /// Looks at `answer` from `first`; when it is an exception document worth a second opinion,
    /// asks another node and answers with the better of the two.
    pub(super) async fn second_opinion(
        &self,
        ask: Ask<'_>,
        first: Arc<crate::cluster::Node>,
        answer: Response<ResponseBody>,
        format: Format,
        record: &mut Record,
    ) -> Result<Response<ResponseBody>, ProxyError> {
        let config = &ask.snapshot.config;
        let (head, mut body) = answer.into_parts();
        let (exception, doc) = match peek(&mut body, format, head.status).await {
            Ok(None) => {
                self.record(config, &first, true);
                return Ok(Response::from_parts(head, body));
            }
            Ok(Some(found)) => found,
            Err(e) => {
                self.record(config, &first, false);
                return Err(ProxyError::BrokenAnswer {
                    node: first.name().to_string(),
                    why: e.to_string(),
                });
            }
        };
        let first_answer = whole(head, doc);
        let from_master = ask.snapshot.master().is_some_and(|m| m.id == first.id);
        let count = |outcome: &str| {
            let labels = [first.name(), exception.metric_code(), outcome];
            self.metrics()
                .second_opinions
                .with_label_values(&labels)
                .inc();
        };
        let Some(pool) = whom(exception.kind, from_master) else {
            self.record(config, &first, true);
            return Ok(first_answer);
        };
        if ask.tried.len() >= config.retries.max as usize {
            // The request's extra attempts are spent (retries, a hedge).
            count("unanswered");
            return Ok(first_answer);
        }
        if !self.budget.withdraw(Instant::now(), &config.retries) {
            self.metrics().budget_exhausted.inc();
            self.metrics()
                .extra(Extra::Opinion, ExtraResult::Refused)
                .inc();
            count("refused");
            return Ok(first_answer);
        }
        self.metrics()
            .extra(Extra::Opinion, ExtraResult::Sent)
            .inc();
        let mut tried = ask.tried.to_vec();
        tried.push(first.id);
        let Ok((second, slot, waited)) = self.acquire(ask.snapshot, pool, &tried).await else {
            count("unanswered");
            return Ok(first_answer);
        };
        record.queued += waited;
        record.retries += 1;
        let sent = self.send_copy(&ask, &second, None).await;
        let (response, conn) = match sent {
            Ok(Ok(pair)) if !matches!(pair.0.status().as_u16(), 502..=504) => pair,
            _ => {
                drop(slot);
                self.record(config, &second, false);
                count("unanswered");
                return Ok(first_answer);
            }
        };
        let status = response.status();
        let format = exception::may_be_exception(status, response.headers());
        let answer = respond((response, conn), slot, ask.client, ask.timeouts);
        let (answer, again) = match format {
            None => (answer, false),
            Some(format) => {
                let (head, mut body) = answer.into_parts();
                match peek(&mut body, format, status).await {
                    Ok(None) => (Response::from_parts(head, body), false),
                    Ok(Some((_, doc))) => (whole(head, doc), true),
                    Err(_) => {
                        self.record(config, &second, false);
                        count("unanswered");
                        return Ok(first_answer);
                    }
                }
            }
        };
        self.record(config, &second, true);
        let (answer, outcome) = match (exception.kind, again) {
            // Both said so: the request is at fault, nobody is charged; the master's word stands.
            (Kind::Unknown, true) => (answer, "everywhere"),
            (_, true) => (first_answer, "everywhere"),
            (Kind::Unknown, false) => {
                let deaf = first.lagged(&exception.subject(), config.consistency.deaf_after.0);
                if let Some(behind) = deaf {
                    count("deaf");
                    self.report_deaf(&first, &exception, behind);
                }
                (answer, "lag")
            }
            (_, false) => {
                let cause = format!("OGC exception {} ({})", exception.code, exception.text);
                self.recorded(config, &first, false, Some(cause));
                (answer, "charged")
            }
        };
        count(outcome);
        if outcome != "everywhere" || exception.kind == Kind::Unknown {
            self.metrics().extra(Extra::Opinion, ExtraResult::Won).inc();
        }
        if !(again && exception.kind != Kind::Unknown) {
            record.node = Some(second.label.clone());
        }
        record.why = Some(match outcome {
            "lag" => "second opinion: replication lag",
            "charged" => "second opinion: node failing",
            _ => "second opinion: exception everywhere",
        });
        Ok(answer)
    }

    /// The held request sent again, to `node` (`class`: whose latency it is a sample of).
    pub(super) async fn send_copy(&self, ask: &Ask<'_>, node: &Node, class: Option<Class>) -> Sent {
        let config = &ask.snapshot.config;
        let frames = ask
            .copy
            .iter()
            .cloned()
            .map(http_body::Frame::data)
            .collect();
        let idle = ask.timeouts.idle.0;
        let mut body = ForwardBody::new(frames, None, idle, config.limits.max_body);
        let upload = (!body.is_end_stream()).then(Upload::new);
        if let Some(upload) = &upload {
            body = body.watched(upload.clone());
        }
        let body = LentBody::owned(body);
        self.send(
            ask.snapshot,
            node,
            ask.parts,
            body,
            upload.as_deref(),
            (ask.timeouts, class, false),
        )
        .await
    }

    /// A replica that still does not know what the master has known for long: ejected at once
    /// (health checks re-admit it; its unknown answers keep going to the master meanwhile).
    fn report_deaf(&self, node: &Node, exception: &Exception, behind: std::time::Duration) {
        tracing::warn!(node = node.name(), code = %exception.code, text = %exception.text, behind = ?behind, "replica still does not know what the master knows: deaf to the broker?");
        let cause = format!(
            "deaf to the broker? {} {:.0}s after the master knew it ({})",
            exception.code,
            behind.as_secs_f64(),
            exception.text
        );
        let _ = self.reports.try_send(Report::Failing {
            node: node.id,
            failures: 1,
            cause: Some(cause),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn who_is_asked_again() {
        assert_eq!(whom(Kind::Unknown, false), Some(Pool::Master));
        assert_eq!(whom(Kind::Unknown, true), None, "the master's word stands");
        assert_eq!(whom(Kind::Failure, false), Some(Pool::Reads));
        assert_eq!(whom(Kind::Failure, true), Some(Pool::Reads));
        assert_eq!(whom(Kind::Mistake, false), None);
    }
}
