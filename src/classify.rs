//! Which pool a request belongs to: GeoServer's URL space (`shared/notes/geoserver.md` §1–2) as a pure
//! function. The head decides most requests; a POST to an OGC endpoint may need a bounded look at its
//! body ([`Verdict::NeedBody`]), after which [`Classifier::classify_body`] decides.
//!
//! The safe default is the master: a wrong `Master` costs capacity, a wrong `Reads` can split config
//! or break a WFS lock. Anything this module does not recognise goes to the master.

use std::borrow::Cow;
use std::fmt;

use http::header::{CONTENT_ENCODING, CONTENT_TYPE};
use http::{HeaderMap, Method};
use quick_xml::events::Event;

use crate::config::{Pool, RouteRule};

/// Where a request goes and why.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Route {
    pub pool: Pool,
    pub class: Class,
    /// The request may change state: it must reach a master candidate whatever a user rule says.
    pub write: bool,
    /// The `[[routes]]` rule that decided, if any (index in config order).
    pub rule: Option<usize>,
}

/// What kind of request it is, for logs and metrics (`wms:GetMap`, `rest`, …).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Class {
    /// The Wicket web UI, `/` and `/index.html`.
    Ui,
    /// `/j_spring_*`: login and logout.
    Login,
    /// The REST config API.
    Rest,
    /// GeoWebCache's REST API.
    GwcRest,
    /// GeoWebCache's admin and demo pages.
    GwcUi,
    /// GeoWebCache tile services (WMTS, TMS, WMS-C, KML).
    Tiles,
    /// An OGC service request: service (from the path or `service=`) and operation, when known.
    Ows {
        service: Option<&'static str>,
        op: Option<&'static str>,
    },
    /// OGC API (`/ogc/**`).
    OgcApi,
    /// The `/TestWfsPost` demo relay.
    TestWfsPost,
    /// Static files.
    Static,
    /// Could be several things; sent to the master to be safe.
    Ambiguous(&'static str),
    /// Outside GeoServer's known URL space.
    Other,
}

impl fmt::Display for Class {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Class::Ui => f.write_str("ui"),
            Class::Login => f.write_str("login"),
            Class::Rest => f.write_str("rest"),
            Class::GwcRest => f.write_str("gwc-rest"),
            Class::GwcUi => f.write_str("gwc-ui"),
            Class::Tiles => f.write_str("tiles"),
            Class::Ows { service, op } => {
                write!(f, "{}:{}", service.unwrap_or("ows"), op.unwrap_or("-"))
            }
            Class::OgcApi => f.write_str("ogc-api"),
            Class::TestWfsPost => f.write_str("test-wfs-post"),
            Class::Static => f.write_str("static"),
            Class::Ambiguous(why) => write!(f, "ambiguous:{why}"),
            Class::Other => f.write_str("other"),
        }
    }
}

/// The outcome of looking at a request's head.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    Done(Route),
    /// Read up to [`Classifier::lookahead`] bytes of the body and call [`Classifier::classify_body`].
    NeedBody(BodyPlan),
}

/// What to look for in a POST body, and what the head already told.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BodyPlan {
    form: bool,
    service: Option<&'static str>,
    /// The operation the query string named (used when the body is empty).
    query_op: Option<&'static str>,
    rule: Option<usize>,
}

/// The routing table: built-in GeoServer knowledge plus the user's `[[routes]]`.
#[derive(Clone, Debug)]
pub struct Classifier {
    context_path: String,
    rules: Vec<RouteRule>,
    lookahead: usize,
}

const SERVICES: &[&str] = &["ows", "wms", "wfs", "wcs", "wps", "csw", "wmts"];

/// Operations that change or hold state on one node.
const WRITE_OPS: &[&str] = &[
    "Transaction",
    "LockFeature",
    "GetFeatureWithLock",
    "ReleaseLock",
    "CreateStoredQuery",
    "DropStoredQuery",
    "Execute",
    "GetExecutionStatus",
    "GetExecutionResult",
    "Dismiss",
    "GetExecutions",
    "GetStatus",
    "GetResult",
    "PutStyles",
    "Harvest",
];

/// Stateless read operations (WMS 1.0 names included).
const READ_OPS: &[&str] = &[
    "GetCapabilities",
    "GetMap",
    "GetFeatureInfo",
    "GetLegendGraphic",
    "DescribeLayer",
    "GetStyles",
    "reflect",
    "kml",
    "animate",
    "DescribeFeatureType",
    "GetFeature",
    "GetPropertyValue",
    "ListStoredQueries",
    "DescribeStoredQueries",
    "GetGmlObject",
    "DescribeCoverage",
    "GetCoverage",
    "DescribeEOCoverageSet",
    "GetTile",
    "DescribeProcess",
    "DescribeRecord",
    "GetRecords",
    "GetRecordById",
    "GetDomain",
    "capabilities",
    "map",
    "feature_info",
];

/// An operation name, matched case-insensitively against the tables.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    Read(&'static str),
    Write(&'static str),
    Unknown,
}

impl Op {
    fn parse(name: &[u8]) -> Op {
        let name = name.trim_ascii();
        let find = |table: &[&'static str]| {
            table
                .iter()
                .copied()
                .find(|op| op.as_bytes().eq_ignore_ascii_case(name))
        };
        if let Some(op) = find(WRITE_OPS) {
            Op::Write(op)
        } else if let Some(op) = find(READ_OPS) {
            Op::Read(op)
        } else {
            Op::Unknown
        }
    }
    fn name(self) -> Option<&'static str> {
        match self {
            Op::Read(n) | Op::Write(n) => Some(n),
            Op::Unknown => None,
        }
    }
}

/// What a stream of KVP pairs says: the operation(s), service, and whether a lock is involved.
#[derive(Default)]
struct Kvp<'a> {
    /// The first `request` value, trimmed.
    request: Option<Cow<'a, str>>,
    /// Two `request` values that differ (case-insensitively).
    conflict: bool,
    /// Some `request` value names a write operation.
    any_write: bool,
    lock: bool,
    service: Option<&'static str>,
}

impl<'a> Kvp<'a> {
    fn scan(mut self, input: &'a [u8]) -> Self {
        for (key, value) in form_urlencoded::parse(input) {
            if key.eq_ignore_ascii_case("request") {
                if matches!(Op::parse(value.as_bytes()), Op::Write(_)) {
                    self.any_write = true;
                }
                match &self.request {
                    None => {
                        self.request = Some(match value {
                            Cow::Borrowed(v) => Cow::Borrowed(v.trim()),
                            Cow::Owned(v) => Cow::Owned(v.trim().to_string()),
                        })
                    }
                    Some(first) => self.conflict |= !first.eq_ignore_ascii_case(value.trim()),
                }
            } else if key.eq_ignore_ascii_case("lockid") {
                self.lock = true;
            } else if key.eq_ignore_ascii_case("service") {
                self.service = SERVICES
                    .iter()
                    .copied()
                    .find(|s| s.eq_ignore_ascii_case(value.trim()))
                    .or(self.service);
            }
        }
        self
    }

    fn op(&self) -> Option<Op> {
        self.request.as_deref().map(|r| Op::parse(r.as_bytes()))
    }
}

fn is_safe(method: &Method) -> bool {
    matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

impl Classifier {
    pub fn new(context_path: &str, rules: Vec<RouteRule>, lookahead: usize) -> Self {
        Classifier {
            context_path: context_path.to_string(),
            rules,
            lookahead: lookahead.max(1),
        }
    }

    /// The most body bytes [`classify_body`](Self::classify_body) wants.
    pub fn lookahead(&self) -> usize {
        self.lookahead
    }

    /// Classifies from the request head. `path` and `query` are the raw request-target parts.
    pub fn classify_head(
        &self,
        method: &Method,
        path: &str,
        query: Option<&str>,
        headers: &HeaderMap,
    ) -> Verdict {
        let rule = self.rules.iter().position(|r| {
            r.prefix.as_deref().is_none_or(|p| path.starts_with(p))
                && (r.methods.is_empty() || r.methods.iter().any(|m| m == method.as_str()))
        });
        if let Some(i) = rule {
            if self.rules[i].pool == Pool::Master {
                let write = !is_safe(method);
                return Verdict::Done(Route {
                    pool: Pool::Master,
                    class: Class::Other,
                    write,
                    rule: Some(i),
                });
            }
        }
        match self.builtin_head(method, path, query, headers) {
            Verdict::Done(route) => Verdict::Done(apply_reads_rule(route, rule)),
            Verdict::NeedBody(plan) => Verdict::NeedBody(BodyPlan { rule, ..plan }),
        }
    }

    /// Classifies a POST from a prefix of its body. `complete` says the prefix is the whole body.
    /// Returns `None` when more body is needed (never once `prefix` holds `lookahead` bytes).
    pub fn classify_body(
        &self,
        plan: &BodyPlan,
        query: Option<&str>,
        prefix: &[u8],
        complete: bool,
    ) -> Option<Route> {
        let exhausted = complete || prefix.len() >= self.lookahead;
        let route = if plan.form {
            if !complete {
                if !exhausted {
                    return None;
                }
                master(Class::Ambiguous("form-too-long"), true)
            } else {
                let kvp = Kvp::default()
                    .scan(query.unwrap_or("").as_bytes())
                    .scan(prefix);
                ows_route(&kvp, plan.service, None, true)
            }
        } else if prefix.is_empty() && complete {
            // No body: GeoServer falls back to the query string's KVP.
            match plan.query_op {
                Some(op) => read(Class::Ows {
                    service: plan.service,
                    op: Some(op),
                }),
                None => master(Class::Ambiguous("post-without-operation"), true),
            }
        } else {
            match xml_operation(prefix, complete) {
                XmlOp::NeedMore if !exhausted => return None,
                XmlOp::NeedMore | XmlOp::Invalid => master(Class::Ambiguous("unparsed-body"), true),
                XmlOp::Found { op, lock } => {
                    let class = Class::Ows {
                        service: plan.service,
                        op: op.name(),
                    };
                    match op {
                        Op::Read(_) if !lock => read(class),
                        Op::Unknown => master(Class::Ambiguous("unknown-operation"), true),
                        _ => master(class, true),
                    }
                }
            }
        };
        Some(apply_reads_rule(route, plan.rule))
    }

    /// Classifies a request whose body (possibly empty) is wholly known: for tests and benchmarks.
    pub fn classify(
        &self,
        method: &Method,
        path: &str,
        query: Option<&str>,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Route {
        match self.classify_head(method, path, query, headers) {
            Verdict::Done(route) => route,
            Verdict::NeedBody(plan) => {
                let cut = body.len().min(self.lookahead);
                let complete = cut == body.len();
                self.classify_body(&plan, query, &body[..cut], complete)
                    .unwrap_or_else(|| master(Class::Ambiguous("unparsed-body"), true))
            }
        }
    }

    fn builtin_head(
        &self,
        method: &Method,
        path: &str,
        query: Option<&str>,
        headers: &HeaderMap,
    ) -> Verdict {
        let safe = is_safe(method);
        // A write operation or a lock in the query makes any request a write, wherever it goes.
        let kvp = Kvp::default().scan(query.unwrap_or("").as_bytes());
        let kvp_write = kvp.any_write || kvp.lock;
        let changes = !safe || kvp_write;
        let Some(rel) = strip_context(path, &self.context_path) else {
            return done_master(Class::Other, changes);
        };
        let segs = Segments::parse(rel);
        let at = |i: usize| segs.at(i);
        let first = at(0);

        if segs.len == 0 || rel == "/index.html" || first == "web" {
            return done_master(Class::Ui, changes);
        }
        if segs.len == 1 && first.starts_with("j_spring_") {
            return done_master(Class::Login, changes);
        }
        if first == "rest" {
            return done_master(Class::Rest, changes);
        }
        if first == "gwc" && at(1) == "rest" {
            return done_master(Class::GwcRest, changes);
        }
        if (first == "gwc" && at(1) == "service") || (at(1) == "gwc" && at(2) == "service") {
            if changes {
                return done_master(Class::Tiles, true);
            }
            return Verdict::Done(read(Class::Tiles));
        }
        if first == "gwc" {
            return done_master(Class::GwcUi, changes);
        }
        if first == "ogc" || at(1) == "ogc" {
            return if changes {
                done_master(Class::OgcApi, true)
            } else {
                Verdict::Done(read(Class::OgcApi))
            };
        }
        if first == "TestWfsPost" {
            return done_master(Class::TestWfsPost, changes);
        }
        if matches!(first, "schemas" | "www" | "styles") || first.starts_with("openlayers") {
            return if matches!(*method, Method::GET | Method::HEAD) && !kvp_write {
                Verdict::Done(read(Class::Static))
            } else {
                done_master(Class::Static, changes)
            };
        }
        let Some((service, path_op)) = segs.all().and_then(ows_endpoint) else {
            return done_master(Class::Other, changes);
        };
        if safe {
            return Verdict::Done(ows_route(&kvp, Some(service), path_op, false));
        }
        if *method != Method::POST {
            return done_master(Class::Ambiguous("method"), true);
        }
        // A POST: the query alone can prove a write; otherwise the body names the operation.
        let service = kvp.service.or(Some(service));
        if kvp_write || kvp.conflict || path_op.is_some_and(|op| !matches!(op, Op::Read(_))) {
            let op = path_op.and_then(Op::name).or(kvp.op().and_then(Op::name));
            return done_master(Class::Ows { service, op }, true);
        }
        if let Some(op) = path_op {
            return Verdict::Done(read(Class::Ows {
                service,
                op: op.name(),
            }));
        }
        let content_type = header_str(headers, &CONTENT_TYPE).unwrap_or("");
        let content_type = content_type.split(';').next().unwrap_or("").trim();
        let encoded = header_str(headers, &CONTENT_ENCODING)
            .is_some_and(|e| !e.trim().eq_ignore_ascii_case("identity"));
        if encoded
            || headers
                .get_all(CONTENT_ENCODING)
                .iter()
                .any(|v| v.to_str().is_err())
        {
            return done_master(Class::Ambiguous("encoded-body"), true);
        }
        if content_type.len() >= 10 && content_type[..10].eq_ignore_ascii_case("multipart/") {
            return done_master(Class::Ambiguous("multipart"), true);
        }
        let query_op = match kvp.op() {
            Some(Op::Read(op)) => Some(op),
            _ => None,
        };
        Verdict::NeedBody(BodyPlan {
            form: content_type.eq_ignore_ascii_case("application/x-www-form-urlencoded"),
            service,
            query_op,
            rule: None,
        })
    }
}

/// The route for an OGC request whose KVP is known; `path_op` is a legacy `/{svc}/{Request}` operation.
fn ows_route(
    kvp: &Kvp<'_>,
    path_service: Option<&'static str>,
    path_op: Option<Op>,
    post: bool,
) -> Route {
    let service = kvp.service.or(path_service);
    let op = kvp.op();
    let name = path_op.and_then(Op::name).or(op.and_then(Op::name));
    let class = Class::Ows { service, op: name };
    if kvp.conflict {
        return master(Class::Ambiguous("conflicting-request"), true);
    }
    if kvp.any_write || kvp.lock || matches!(path_op, Some(Op::Write(_))) {
        return master(class, true);
    }
    match (path_op, op) {
        // An unknown operation is ambiguous; so is a POST that names none.
        (Some(Op::Unknown), _) | (_, Some(Op::Unknown)) => {
            master(Class::Ambiguous("unknown-operation"), true)
        }
        (None, None) if post => master(Class::Ambiguous("post-without-operation"), true),
        _ => read(class),
    }
}

/// Finds the OGC service in `/{svc}`, `/{ws}/{svc}`, `/{ws}/{layer}/{svc}`, or a legacy
/// `/{svc}/{Request}` (also under a workspace), returning the service and the path's operation.
fn ows_endpoint(segs: &[&str]) -> Option<(&'static str, Option<Op>)> {
    let service = |s: &str| SERVICES.iter().copied().find(|svc| *svc == s);
    let n = segs.len();
    if (1..=3).contains(&n) {
        if let Some(svc) = service(segs[n - 1]) {
            return Some((svc, None));
        }
    }
    if (2..=4).contains(&n) {
        if let Some(svc) = service(segs[n - 2]) {
            return Some((svc, Some(Op::parse(segs[n - 1].as_bytes()))));
        }
    }
    None
}

/// A path's first four segments (all an OGC endpoint can have) and how many there are in all,
/// without allocating. A trailing `/` adds no segment.
struct Segments<'p> {
    head: [&'p str; 4],
    len: usize,
}

impl<'p> Segments<'p> {
    fn parse(rel: &'p str) -> Self {
        let trimmed = rel.trim_start_matches('/');
        let trimmed = trimmed.strip_suffix('/').unwrap_or(trimmed);
        let mut segs = Segments {
            head: [""; 4],
            len: 0,
        };
        if !trimmed.is_empty() {
            for seg in trimmed.split('/') {
                if let Some(slot) = segs.head.get_mut(segs.len) {
                    *slot = seg;
                }
                segs.len += 1;
            }
        }
        segs
    }

    fn at(&self, i: usize) -> &'p str {
        self.head.get(i).copied().unwrap_or("")
    }

    /// Every segment, when there are at most four.
    fn all(&self) -> Option<&[&'p str]> {
        self.head.get(..self.len)
    }
}

fn strip_context<'p>(path: &'p str, context: &str) -> Option<&'p str> {
    let rest = path.strip_prefix(context)?;
    if rest.is_empty() || rest.starts_with('/') {
        Some(rest)
    } else {
        None
    }
}

fn header_str<'h>(headers: &'h HeaderMap, name: &http::header::HeaderName) -> Option<&'h str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

fn read(class: Class) -> Route {
    Route {
        pool: Pool::Reads,
        class,
        write: false,
        rule: None,
    }
}

fn master(class: Class, write: bool) -> Route {
    Route {
        pool: Pool::Master,
        class,
        write,
        rule: None,
    }
}

fn done_master(class: Class, write: bool) -> Verdict {
    Verdict::Done(master(class, write))
}

/// A user rule may send to `reads` anything that is not a write.
fn apply_reads_rule(route: Route, rule: Option<usize>) -> Route {
    match rule {
        Some(i) if !route.write => Route {
            pool: Pool::Reads,
            rule: Some(i),
            ..route
        },
        _ => route,
    }
}

/// What the start of an XML body says.
#[derive(Debug, PartialEq, Eq)]
enum XmlOp {
    /// The operation element, and whether it carries a `lockId` attribute.
    Found {
        op: Op,
        lock: bool,
    },
    NeedMore,
    Invalid,
}

/// The operation named by the root element's local name (SOAP: the first child of `Body`), skipping
/// the BOM, the XML declaration, comments, processing instructions, DOCTYPE and whitespace.
fn xml_operation(prefix: &[u8], complete: bool) -> XmlOp {
    let body = prefix.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(prefix);
    let mut reader = quick_xml::Reader::from_reader(body);
    let mut depth = 0usize;
    let mut soap = false;
    let mut in_body = false;
    loop {
        let (element, opens) = match reader.read_event() {
            Ok(Event::Start(e)) => (e, true),
            Ok(Event::Empty(e)) => (e, false),
            Ok(Event::End(_)) => {
                depth = depth.saturating_sub(1);
                // The root, or a SOAP Body, closed before an operation element.
                if depth == 0 || (in_body && depth == 1) {
                    return XmlOp::Invalid;
                }
                continue;
            }
            Ok(Event::Text(t)) if depth == 0 && !t.iter().all(u8::is_ascii_whitespace) => {
                return XmlOp::Invalid
            }
            Ok(Event::Eof) | Err(_) if complete => return XmlOp::Invalid,
            Ok(Event::Eof) | Err(_) => return XmlOp::NeedMore,
            Ok(_) => continue,
        };
        // quick-xml yields an element only once its tag is whole, so a cut prefix never shows a
        // shortened name.
        let local = local_name(element.name().into_inner());
        let operation = match (soap, depth) {
            (false, 0) if local == b"Envelope" => {
                soap = true;
                false
            }
            (false, 0) => true,
            (true, 1) if local == b"Body" => {
                in_body = true;
                false
            }
            (true, 2) => in_body,
            _ => false,
        };
        if operation {
            let lock = element
                .attributes()
                .flatten()
                .any(|a| local_name(a.key.into_inner()).eq_ignore_ascii_case(b"lockId"));
            return XmlOp::Found {
                op: Op::parse(local),
                lock,
            };
        }
        if opens {
            depth += 1;
        } else if (soap && depth == 0) || (in_body && depth == 1) {
            // `<Envelope/>` or `<Body/>`: nothing inside.
            return XmlOp::Invalid;
        }
    }
}

fn local_name(qname: &[u8]) -> &[u8] {
    match qname.iter().rposition(|&b| b == b':') {
        Some(i) => &qname[i + 1..],
        None => qname,
    }
}

#[cfg(test)]
mod tests;
