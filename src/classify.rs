//! Which pool a request belongs to: GeoServer's URL space (`shared/notes/geoserver.md` §1–2) as a pure
//! function. The head decides most requests; a POST to an OGC endpoint may need a bounded look at its
//! body ([`Verdict::NeedBody`]), after which [`Classifier::classify_body`] decides.
//!
//! The node is the reference reader: the container (Tomcat) and then GeoServer's `Dispatcher`. For
//! each request geolb reaches the verdict the node would reach, or, wherever it cannot be sure it
//! reads the bytes as the node will, sends the request to the master ([`Class::Ambiguous`], with the
//! reason), or refuses it ([`Verdict::Refuse`]) when the container would. Each reader lives in its
//! own module: [`path`] (the container's path), [`media`] (`Content-Type`), [`kvp`] (query and form
//! parameters), [`xml`] (the operation an XML body names). SOAP requests go to the master.
//!
//! GeoServer takes the operation from the body first (the XML root, or form parameters), then the
//! `request` parameter, then the legacy `/{service}/{Request}` path, falling back to `request`
//! when the body's operation does not exist. geolb does not pick one: a request is a read only when
//! every operation it names anywhere is a known read, and goes to the master when any one is a
//! write, unknown, or carries a lock.

use std::fmt;

use http::{HeaderMap, Method};

use serde::Deserialize;

pub mod kvp;
pub mod media;
pub mod path;
pub mod xml;

use kvp::{Kvp, Ops};
use media::BodyKind;
use path::PathReading;

/// Which pool a request goes to.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "lowercase")]
pub enum Pool {
    /// Any healthy node that serves reads, active/active.
    Reads,
    /// The current master, in failover order.
    Master,
}

/// `[[routes]]`: a user rule, evaluated in order before the built-in table.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteRule {
    /// Matches when the request path starts with this (the full path, context included).
    #[serde(default)]
    pub prefix: Option<String>,
    /// Matches when the method is one of these (upper case). Empty: any method.
    #[serde(default)]
    pub methods: Vec<String>,
    pub pool: Pool,
}

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

impl Route {
    /// Why the request goes to its pool, in a word for the access log: `rule` (a `[[routes]]`
    /// rule), `played-safe` (geolb could not be sure the node reads it as a read), `write`,
    /// `stateful` (UI, REST, sessions: the master's), or `read`.
    pub fn why(&self) -> &'static str {
        match (self.rule, self.pool, self.class) {
            (Some(_), _, _) => "rule",
            (_, _, Class::Ambiguous(_)) => "played-safe",
            (_, Pool::Master, _) if self.write => "write",
            (_, Pool::Master, _) => "stateful",
            (_, Pool::Reads, _) => "read",
        }
    }
}

/// What kind of request it is, for logs and metrics (`wms:GetMap`, `rest`, …).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
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
    /// Could be several things, or could be read otherwise by the node: sent to the master to be
    /// safe. The reason is a short fixed word (a metric label).
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

impl Class {
    /// How many distinct [`slot`](Self::slot)s there are.
    pub const SLOTS: usize = 11 + (SERVICES.len() + 1) * (READ_OPS.len() + 1);

    /// A dense index, one per class (for per-class tables): OGC requests by service and read
    /// operation (an unknown service, or a write, shares its service's "other" slot).
    pub fn slot(&self) -> usize {
        let position = |table: &[&str], name: Option<&str>| {
            name.and_then(|n| table.iter().position(|t| *t == n))
                .unwrap_or(table.len())
        };
        match self {
            Class::Ui => 0,
            Class::Login => 1,
            Class::Rest => 2,
            Class::GwcRest => 3,
            Class::GwcUi => 4,
            Class::Tiles => 5,
            Class::OgcApi => 6,
            Class::TestWfsPost => 7,
            Class::Static => 8,
            Class::Ambiguous(_) => 9,
            Class::Other => 10,
            Class::Ows { service, op } => {
                11 + position(SERVICES, *service) * (READ_OPS.len() + 1) + position(READ_OPS, *op)
            }
        }
    }
}

/// The outcome of looking at a request's head.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    Done(Route),
    /// Read up to [`Classifier::lookahead`] bytes of the body and call [`Classifier::classify_body`].
    NeedBody(BodyPlan),
    /// The node's container would refuse it: answer 400 with this reason.
    Refuse(&'static str),
}

/// What to look for in a POST body, and what the head already told.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BodyPlan {
    kind: BodyKind,
    service: Option<&'static str>,
    /// What the query and the path named (reads only, or nothing: anything else was decided).
    named: Ops,
    rule: Option<usize>,
}

/// The routing table: built-in GeoServer knowledge plus the user's `[[routes]]`.
#[derive(Clone, Debug)]
pub struct Classifier {
    context_path: String,
    rules: Vec<RouteRule>,
    lookahead: usize,
}

/// Service path segments (and `service=` values) GeoServer's Dispatcher serves.
pub(crate) const SERVICES: &[&str] = &["ows", "wms", "wfs", "wcs", "wps", "csw", "wmts"];

/// Operations that change or hold state on one node (and `ReleaseLock`, unregistered in GeoServer
/// but a lock operation by name; WPS 2.0 and CSW writes, by name).
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

/// Stateless read operations of GeoServer's services (WMS 1.0 names included).
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
    "GetRepositoryItem",
    "capabilities",
    "map",
    "feature_info",
];

/// An operation name, matched ASCII-case-insensitively against the tables (the caller has made sure
/// it is ASCII and trimmed as Java trims).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Read(&'static str),
    Write(&'static str),
    Unknown,
}

impl Op {
    pub fn parse(name: &[u8]) -> Op {
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
        let path = match path::read_path(path) {
            PathReading::Clear(path) => path,
            PathReading::Unsure(why) => return done_master(Class::Ambiguous(why), true),
            PathReading::Refused(why) => return Verdict::Refuse(why),
        };
        if let Err(why) = media::check(headers) {
            return done_master(Class::Ambiguous(why), true);
        }
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
        match self.builtin_head(method, &path, query, headers) {
            Verdict::Done(route) => Verdict::Done(apply_reads_rule(route, rule)),
            Verdict::NeedBody(plan) => Verdict::NeedBody(BodyPlan { rule, ..plan }),
            refused @ Verdict::Refuse(_) => refused,
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
        let route = match plan.kind {
            // Form parameters join the query's (Tomcat's parameter map holds both).
            BodyKind::Form if complete => {
                let kvp = Kvp::default()
                    .scan(query.unwrap_or("").as_bytes())
                    .scan(prefix);
                if let Some(why) = kvp.unsure {
                    return Some(master(Class::Ambiguous(why), true));
                }
                let mut named = plan.named;
                named.merge(kvp.operations());
                ows_route(Kvp { ops: named, ..kvp }, plan.service, true)
            }
            BodyKind::Form if exhausted => master(Class::Ambiguous("form-too-long"), true),
            BodyKind::Form => return None,
            // No body: GeoServer falls back to the query's `request`, then the path.
            BodyKind::Xml if prefix.is_empty() && complete => ows_route(
                Kvp {
                    ops: plan.named,
                    ..Kvp::default()
                },
                plan.service,
                true,
            ),
            BodyKind::Xml => match xml::root(prefix, complete) {
                xml::Root::NeedMore if !exhausted => return None,
                xml::Root::NeedMore => master(Class::Ambiguous("unparsed-body"), true),
                xml::Root::Unsure(why) => master(Class::Ambiguous(why), true),
                xml::Root::Found { name, lock } => {
                    let mut named = plan.named;
                    named.add(Op::parse(name));
                    ows_route(
                        Kvp {
                            ops: named,
                            lock,
                            ..Kvp::default()
                        },
                        plan.service,
                        true,
                    )
                }
            },
            BodyKind::Multipart => master(Class::Ambiguous("multipart"), true),
            BodyKind::Soap => master(Class::Ambiguous("soap"), true),
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
    ) -> Result<Route, &'static str> {
        match self.classify_head(method, path, query, headers) {
            Verdict::Done(route) => Ok(route),
            Verdict::Refuse(why) => Err(why),
            Verdict::NeedBody(plan) => {
                let cut = body.len().min(self.lookahead);
                let complete = cut == body.len();
                Ok(self
                    .classify_body(&plan, query, &body[..cut], complete)
                    .unwrap_or_else(|| master(Class::Ambiguous("unparsed-body"), true)))
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
        if let Some(why) = kvp.unsure {
            return done_master(Class::Ambiguous(why), true);
        }
        let kvp_write = kvp.ops.write || kvp.lock;
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
        // GeoWebCache's RESTful WMTS (tiles, their feature info and capabilities) is read-only;
        // the rest of its REST API is not.
        let wmts_rest = (first == "gwc" && at(1) == "rest" && at(2) == "wmts")
            || (at(1) == "gwc" && at(2) == "rest" && at(3) == "wmts");
        if wmts_rest && matches!(*method, Method::GET | Method::HEAD) && !kvp_write {
            return Verdict::Done(read(Class::Tiles));
        }
        if (first == "gwc" || at(1) == "gwc") && (at(1) == "rest" || at(2) == "rest") {
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
        // Every operation named so far: the query's `request` values and the legacy path's.
        let mut named = kvp.operations();
        if let Some(op) = path_op {
            named.add(op);
        }
        let service = kvp.service.or(Some(service));
        if safe {
            return Verdict::Done(ows_route(Kvp { ops: named, ..kvp }, service, false));
        }
        if *method != Method::POST {
            return done_master(Class::Ambiguous("method"), true);
        }
        // A POST: what the head names can prove a write; otherwise the body names the operation.
        if kvp_write || named.conflict || named.unknown {
            return Verdict::Done(ows_route(Kvp { ops: named, ..kvp }, service, true));
        }
        match media::body_kind(headers) {
            Ok(BodyKind::Multipart) => done_master(Class::Ambiguous("multipart"), true),
            // GeoServer parses the whole envelope and takes the SOAP `Body` wherever it is.
            Ok(BodyKind::Soap) => done_master(Class::Ambiguous("soap"), true),
            Ok(kind) => Verdict::NeedBody(BodyPlan {
                kind,
                service,
                named,
                rule: None,
            }),
            Err(why) => done_master(Class::Ambiguous(why), true),
        }
    }
}

/// The route of an OGC request once every operation it names is known: a read only when each is a
/// known read; a POST must name one.
fn ows_route(kvp: Kvp, service: Option<&'static str>, post: bool) -> Route {
    let ops = kvp.ops;
    let class = Class::Ows {
        service: kvp.service.or(service),
        op: ops.first.and_then(Op::name),
    };
    if ops.write || kvp.lock {
        return master(class, true);
    }
    if ops.conflict {
        return master(Class::Ambiguous("conflicting-request"), true);
    }
    if ops.unknown {
        return master(Class::Ambiguous("unknown-operation"), true);
    }
    if post && ops.first.is_none() {
        return master(Class::Ambiguous("post-without-operation"), true);
    }
    read(class)
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
            let name = segs[n - 1].as_bytes();
            let op = if name.is_ascii() {
                Op::parse(name)
            } else {
                Op::Unknown
            };
            return Some((svc, Some(op)));
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

#[cfg(test)]
mod tests;
