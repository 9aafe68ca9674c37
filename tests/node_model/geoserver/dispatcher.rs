//! `org.geoserver.ows.Dispatcher` (gs-ows, GeoServer 2.28.2 = 2.28.x at 2abcae0038), the
//! `DispatcherCallback`s that change routing (`GwcServiceDispatcherCallback`), and the service
//! descriptors registered in the service modules' applicationContext.xml files.

use crate::node_model::geoserver::charset::{self, Read};
use crate::node_model::geoserver::java;
use crate::node_model::geoserver::xml::{self, RootInfo, XmlErr};
use crate::node_model::ServletView;

/// A `org.geoserver.platform.Service` bean: id, namespace, version, operation names.
pub struct Svc {
    pub id: &'static str,
    pub ns: Option<&'static str>,
    pub version: &'static str,
    pub ops: &'static [&'static str],
}

const WFS10: &[&str] = &[
    "GetCapabilities",
    "DescribeFeatureType",
    "GetFeature",
    "GetFeatureWithLock",
    "LockFeature",
    "Transaction",
];
const WFS11: &[&str] = &[
    "GetCapabilities",
    "DescribeFeatureType",
    "GetGmlObject",
    "GetFeature",
    "GetFeatureWithLock",
    "LockFeature",
    "Transaction",
];
const WFS20: &[&str] = &[
    "GetCapabilities",
    "DescribeFeatureType",
    "GetFeature",
    "GetFeatureWithLock",
    "GetPropertyValue",
    "LockFeature",
    "Transaction",
    "ListStoredQueries",
    "DescribeStoredQueries",
    "CreateStoredQuery",
    "DropStoredQuery",
];
const WMS111: &[&str] = &[
    "Capabilities",
    "GetCapabilities",
    "DescribeLayer",
    "GetFeatureInfo",
    "GetLegendGraphic",
    "GetMap",
    "Map",
    "reflect",
    "kml",
    "animate",
    "GetStyles",
];
const WMS130: &[&str] = &[
    "GetCapabilities",
    "Capabilities",
    "GetMap",
    "Map",
    "DescribeLayer",
    "GetFeatureInfo",
    "GetLegendGraphic",
    "reflect",
    "kml",
    "animate",
];
const WCS1: &[&str] = &["GetCapabilities", "DescribeCoverage", "GetCoverage"];
const WCS20: &[&str] = &[
    "GetCapabilities",
    "DescribeCoverage",
    "DescribeEOCoverageSet",
    "GetCoverage",
];
const WPS: &[&str] = &[
    "GetCapabilities",
    "DescribeProcess",
    "Execute",
    "Dismiss",
    "GetExecutionStatus",
    "GetExecutionResult",
    "GetExecutions",
];
const CSW: &[&str] = &[
    "GetCapabilities",
    "DescribeRecord",
    "GetRecords",
    "GetRecordById",
    "GetDomain",
    "GetRepositoryItem",
    "Harvest",
    "Transaction",
    "DirectDownload",
];

/// Service descriptors of a 2.28.2 WAR with the wps and csw extensions:
/// gs-wfs applicationContext.xml wfsService-1.0.0/1.1.0/2.0; gs-wms wms-1_1_1/1_3_0-ServiceDescriptor
/// (no namespace); gs-wcs1_0/1_1/2_0 wcsService-*; wps-core wpsService-1.0.0; csw-core
/// cswService-2.0.2; gs-gwc gwcServiceProxyDescriptor ("gwc", operation "dispatch").
/// There is no "wmts" descriptor (WMTS is served by GWC under /gwc/service/wmts).
pub const SERVICES: &[Svc] = &[
    Svc {
        id: "wfs",
        ns: Some("http://www.opengis.net/wfs"),
        version: "1.0.0",
        ops: WFS10,
    },
    Svc {
        id: "wfs",
        ns: Some("http://www.opengis.net/wfs"),
        version: "1.1.0",
        ops: WFS11,
    },
    Svc {
        id: "wfs",
        ns: Some("http://www.opengis.net/wfs/2.0"),
        version: "2.0.0",
        ops: WFS20,
    },
    Svc {
        id: "wms",
        ns: None,
        version: "1.1.1",
        ops: WMS111,
    },
    Svc {
        id: "wms",
        ns: None,
        version: "1.3.0",
        ops: WMS130,
    },
    Svc {
        id: "wcs",
        ns: Some("http://www.opengis.net/wcs"),
        version: "1.0.0",
        ops: WCS1,
    },
    Svc {
        id: "wcs",
        ns: Some("http://www.opengis.net/wcs/1.1.0"),
        version: "1.1.0",
        ops: WCS1,
    },
    Svc {
        id: "wcs",
        ns: Some("http://www.opengis.net/wcs/1.1.1"),
        version: "1.1.1",
        ops: WCS1,
    },
    Svc {
        id: "wcs",
        ns: Some("http://www.opengis.net/wcs/1.1"),
        version: "1.1",
        ops: WCS1,
    },
    Svc {
        id: "WCS",
        ns: Some("http://www.opengis.net/wcs/2.0"),
        version: "2.0.1",
        ops: WCS20,
    },
    Svc {
        id: "wps",
        ns: None,
        version: "1.0.0",
        ops: WPS,
    },
    Svc {
        id: "csw",
        ns: None,
        version: "2.0.2",
        ops: CSW,
    },
    Svc {
        id: "gwc",
        ns: None,
        version: "1.0.0",
        ops: &["dispatch"],
    },
];

impl Svc {
    /// `Dispatcher.operationExists`: `op.equalsIgnoreCase(req.getRequest())`; the method is then
    /// found in a `TreeMap(String.CASE_INSENSITIVE_ORDER)` (`ClassProperties.method`), same notion.
    fn op(&self, request: &str) -> Option<&'static str> {
        self.ops
            .iter()
            .copied()
            .find(|o| java::equals_ignore_case(o, request))
    }
}

// ---------------------------------------------------------------------------------------------
// org.geotools.util.Version and Dispatcher.normalizeVersion

#[derive(Clone, Debug, PartialEq, Eq)]
enum Comp {
    Num(i64),
    Str(String),
}

/// `org.geotools.util.Version`: trimmed string split by `(\.|\-)` (Java `String.split`: trailing
/// empty strings dropped), each component `Integer.valueOf(trim)` or the string.
struct Version(Vec<Comp>);

impl Version {
    fn new(v: &str) -> Version {
        // Version(String): `version.trim()` (Java trim)
        let t = java::trim(v);
        let mut parts: Vec<&str> = if t.contains(['.', '-']) {
            t.split(['.', '-']).collect()
        } else {
            vec![t]
        };
        if t.contains(['.', '-']) {
            while parts.last() == Some(&"") {
                parts.pop();
            }
        }
        Version(
            parts
                .into_iter()
                .map(|p| match java::parse_int(java::trim(p)) {
                    Some(n) => Comp::Num(n),
                    None => Comp::Str(java::trim(p).to_string()),
                })
                .collect(),
        )
    }

    /// `Version.compareTo`: component by component; null < anything; String < Integer.
    fn cmp(&self, o: &Version) -> std::cmp::Ordering {
        use std::cmp::Ordering::*;
        let mut i = 0;
        loop {
            match (self.0.get(i), o.0.get(i)) {
                (None, None) => return Equal,
                (None, Some(_)) => return Less,
                (Some(_), None) => return Greater,
                (Some(a), Some(b)) => {
                    let c = match (a, b) {
                        (Comp::Num(x), Comp::Num(y)) => x.cmp(y),
                        (Comp::Str(x), Comp::Str(y)) => {
                            let ux: Vec<u16> = x.encode_utf16().collect();
                            let uy: Vec<u16> = y.encode_utf16().collect();
                            ux.cmp(&uy)
                        }
                        (Comp::Str(_), Comp::Num(_)) => Less,
                        (Comp::Num(_), Comp::Str(_)) => Greater,
                    };
                    if c != Equal {
                        return c;
                    }
                }
            }
            i += 1;
        }
    }
}

/// `Dispatcher.normalizeVersion`: "x" -> "x.0.0", "x.y" -> "x.y.0", else unchanged; a missing
/// component after a non-numeric one is a `ClassCastException` (`(Number) v.getMajor()`).
fn normalize_version(v: &str) -> Result<Option<String>, String> {
    let ver = Version::new(v);
    let num = |c: Option<&Comp>| match c {
        Some(Comp::Num(n)) => Ok(*n),
        _ => Err(format!(
            "Dispatcher.normalizeVersion({v:?}): ClassCastException"
        )),
    };
    match (ver.0.first(), ver.0.get(1), ver.0.get(2)) {
        (None, _, _) => Ok(None),
        (Some(_), None, _) => Ok(Some(format!("{}.0.0", num(ver.0.first())?))),
        (Some(_), Some(_), None) => Ok(Some(format!(
            "{}.{}.0",
            num(ver.0.first())?,
            num(ver.0.get(1))?
        ))),
        _ => Ok(Some(v.to_string())),
    }
}

/// `Dispatcher.normalize`: Java trim, "" -> null.
fn normalize(v: Option<&str>) -> Option<String> {
    v.map(java::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

/// `Dispatcher.findService(id, ver, namespace)`.
fn find_service(id: &str, ver: Option<&str>, ns: Option<&str>) -> Option<&'static Svc> {
    // "the id is actually the pathinfo ...": keep what follows the FIRST '/'
    let id = match id.find('/') {
        Some(p) => &id[p + 1..],
        None => id,
    };
    let matches: Vec<&Svc> = SERVICES
        .iter()
        .filter(|s| java::equals_ignore_case(s.id, id))
        .collect();
    if matches.is_empty() {
        return None;
    }
    if matches.len() == 1 {
        return Some(matches[0]);
    }
    let mut v: Vec<&Svc> = matches.clone();
    if let Some(ver) = ver {
        let want = Version::new(ver);
        v.retain(|s| Version::new(s.version).cmp(&want) == std::cmp::Ordering::Equal);
        if v.is_empty() {
            v = matches.clone();
        }
    }
    if let Some(ns) = ns {
        if v.len() > 1 {
            let n: Vec<&Svc> = v
                .iter()
                .copied()
                .filter(|s| s.ns.map_or(true, |x| x == ns))
                .collect();
            if !n.is_empty() {
                v = n;
            }
        }
    }
    v.into_iter()
        .max_by(|a, b| Version::new(a.version).cmp(&Version::new(b.version)))
}

// ---------------------------------------------------------------------------------------------
// KVP: Dispatcher.preParseKVP -> KvpUtils.normalize -> KvpMap

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KVal {
    One(String),
    Many(Vec<String>),
}

/// `KvpMap` (a HashMap whose `put/get/containsKey` upper-case the key).
#[derive(Clone, Debug, Default)]
pub struct Kvp(Vec<(String, KVal)>);

/// `KvpUtils.normalize`: the map key is `key.toLowerCase()` then `KvpMap.put` upper-cases it.
pub fn kvp_key(raw: &str) -> String {
    java::to_upper(&java::to_lower(raw))
}

impl Kvp {
    /// `KvpUtils.normalize(request.getParameterMap())`: per raw name (Tomcat order) the values
    /// are Java-trimmed and de-duplicated in a LinkedHashSet; one left -> String, several ->
    /// String[]. Raw names that normalize to the same key overwrite each other: the LAST raw
    /// name (by first appearance) wins, without any duplicate check.
    pub fn normalize(params: &[(String, Vec<String>)]) -> Kvp {
        let mut out: Vec<(String, KVal)> = Vec::new();
        for (name, vals) in params {
            let mut set: Vec<String> = Vec::new();
            for v in vals {
                let t = java::trim(v).to_string();
                if !set.contains(&t) {
                    set.push(t);
                }
            }
            if set.is_empty() {
                continue;
            }
            let val = if set.len() == 1 {
                KVal::One(set.remove(0))
            } else {
                KVal::Many(set)
            };
            let key = kvp_key(name);
            match out.iter_mut().find(|(k, _)| *k == key) {
                Some(e) => e.1 = val,
                None => out.push((key, val)),
            }
        }
        Kvp(out)
    }

    /// `KvpMap.get(key)`: looks up `key.toUpperCase()`.
    pub fn get(&self, key: &str) -> Option<&KVal> {
        let k = java::to_upper(key);
        self.0.iter().find(|(x, _)| *x == k).map(|(_, v)| v)
    }

    /// `KvpUtils.getSingleValue`: String[] with differing values -> ServiceException.
    fn single(&self, key: &str) -> Result<Option<String>, String> {
        match self.get(key) {
            None => Ok(None),
            Some(KVal::One(v)) => Ok(Some(v.clone())),
            Some(KVal::Many(vs)) => Err(format!(
                "KvpUtils.getSingleValue: single value expected for request parameter {key} but found {vs:?} (InvalidParameterValue)"
            )),
        }
    }
}

// ---------------------------------------------------------------------------------------------

/// What the Dispatcher ends up doing with a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// OPTIONS: `AbstractController.handleRequest` answers with an Allow header.
    Options,
    /// PUT/DELETE/PATCH: `WebContentGenerator.checkRequest` -> 405.
    MethodNotAllowed,
    /// GeoServer answers with a service exception; `determining` = before a service/operation
    /// could be dispatched (policy "unknown operation on a POST").
    Refused { why: String },
    /// The body could not be read up to its root element, or is multipart (policy row
    /// "anything ambiguous").
    Ambiguous { why: String },
    /// The model cannot tell (charset/DTD/XML 1.1/non-ASCII names): treat as master.
    Unmodelled { why: String },
    Dispatched {
        service: &'static str,
        version: &'static str,
        op: &'static str,
        how: String,
    },
}

/// Everything the Dispatcher model found out.
pub struct Report {
    pub outcome: Outcome,
    /// the operation name GeoServer last held (for the ReleaseLock policy)
    pub request: Option<String>,
    /// a `lockId` attribute / `LockId` element in the XML body (policy)
    pub body_lock_id: bool,
}

/// `Dispatcher.handleRequest` -> `handleRequestInternal` for a request the handler mapping gave
/// to the `dispatcher` bean.
pub fn run(view: &ServletView) -> Report {
    let mut rep = Report {
        outcome: Outcome::Options,
        request: None,
        body_lock_id: false,
    };
    rep.outcome = run_inner(view, &mut rep);
    rep
}

fn refused(why: impl Into<String>) -> Outcome {
    Outcome::Refused { why: why.into() }
}

fn run_inner(view: &ServletView, rep: &mut Report) -> Outcome {
    let m = view.method.as_str();
    // AbstractController.handleRequest (Spring 5.3.39): OPTIONS -> Allow header, nothing else
    if m == "OPTIONS" {
        return Outcome::Options;
    }
    // WebContentGenerator(restrictDefaultSupportedMethods=true): GET, HEAD, POST only
    if !matches!(m, "GET" | "HEAD" | "POST") {
        return Outcome::MethodNotAllowed;
    }
    let ct = view.content_type.as_deref();
    // Dispatcher.init: "GET".equalsIgnoreCase(method) || isForm(contentType), where isForm is
    // contentType.startsWith("application/x-www-form-urlencoded") (case-sensitive, no trim)
    let is_get = m.eq_ignore_ascii_case("GET")
        || ct.map_or(false, |c| {
            c.starts_with("application/x-www-form-urlencoded")
        });
    // Dispatcher.preParseKVP: request.getParameterMap() -> KvpUtils.normalize
    let mut kvp = Kvp::normalize(&view.parameters);
    // Dispatcher.negotiateServiceAndVersionKvp + KvpUtils.parse: getSingleValue of service,
    // request, version (and wmtver unless the AdvancedDispatchFilter servlet path is "/gwc")
    // throws out of init() -> handleRequestInternal's catch -> service exception
    let servlet_path_gwc =
        view.path_in_context == "/gwc" || view.path_in_context.starts_with("/gwc/");
    for k in ["service", "request", "version"] {
        if let Err(e) = kvp.single(k) {
            return refused(e);
        }
    }
    if !servlet_path_gwc {
        if let Err(e) = kvp.single("wmtver") {
            return refused(e);
        }
    }
    // (negotiateServiceAndVersionKvp also copies the service derived from the raw URI's last
    // segment, upper-cased, into the kvp when there is none: same result as readOpContext below.)
    // (KvpParser failures are kept in request.error and thrown after service(): not modelled,
    // i.e. assumed absent — conservative.)

    // Body: Dispatcher.init, only when !isGet (so HEAD bodies are read too, GET bodies never)
    enum Body {
        None,
        Xml(Vec<char>),
        Soap(RootInfo),
    }
    let mut body = Body::None;
    // Only a POST body names the operation (getServiceFromRequest checks
    // "POST".equalsIgnoreCase); a HEAD body is read by Dispatcher.init, and one it cannot read makes
    // init throw (an exception report, nothing dispatched). Either way no operation comes from it:
    // for a HEAD the verdict is the KVP's, so its body is not looked at here.
    let post = m.eq_ignore_ascii_case("POST");
    if !is_get && post {
        if ct.map_or(false, |c| c.starts_with("application/soap+xml")) {
            // Dispatcher.soapReader: DocumentBuilder over the whole stream; any failure is an
            // IOException out of init()
            match charset::xerces_chars(&view.body) {
                Read::Chars(c) => match xml::soap_payload(&c) {
                    Ok(r) => body = Body::Soap(r),
                    Err(XmlErr::Malformed(e)) => {
                        return Outcome::Ambiguous {
                            why: format!("Dispatcher.soapReader: {e}"),
                        }
                    }
                    Err(XmlErr::Unmodelled(e)) => {
                        return Outcome::Unmodelled {
                            why: format!("Dispatcher.soapReader: {e}"),
                        }
                    }
                },
                Read::Error(e) => return Outcome::Ambiguous { why: e },
                Read::Unmodelled(e) => return Outcome::Unmodelled { why: e },
            }
        } else if m.eq_ignore_ascii_case("POST")
            && ct.map_or(false, |c| c.to_ascii_lowercase().starts_with("multipart/"))
        {
            // ServletFileUpload.isMultipartContent (POST + "multipart/" ignoring case): last file
            // item (or field "body") is the XML, other fields are appended to the KVP
            return Outcome::Unmodelled {
                why: "Dispatcher.init: multipart/form-data body (not modelled)".into(),
            };
        } else {
            // Dispatcher.reader -> RequestUtils.getBufferedXMLReader -> XmlCharsetDetector
            match charset::geoserver_xml_chars(&view.body) {
                // `if (-1 == request.getInput().read()) request.setInput(null)`
                Read::Chars(c) if c.is_empty() => {}
                Read::Chars(c) => body = Body::Xml(c),
                Read::Error(e) => return Outcome::Ambiguous { why: e },
                Read::Unmodelled(e) => return Outcome::Unmodelled { why: e },
            }
        }
    }

    // Dispatcher.initRequestContext: on the RAW getRequestURI() minus getContextPath().length()
    let raw: String = view
        .request_uri
        .chars()
        .skip(view.context_path.chars().count())
        .collect();
    let mut p = raw.as_str();
    if let Some(x) = p.strip_prefix('/') {
        p = x;
    }
    if let Some(x) = p.strip_suffix('/') {
        p = x;
    }
    let (context, path): (Option<String>, String) = match p.rfind('/') {
        Some(i) => (Some(p[..i].to_string()), p[i + 1..].to_string()),
        None => (None, p.to_string()),
    };

    // GwcServiceDispatcherCallback.init: context starting with "gwc/service", or
    // "([^/]+)/gwc/service.*", "([^/]+)/([^/]+)/gwc/service.*" (workspace/layer assumed to
    // exist) -> the KVP is REPLACED by service=gwc, version=1.0.0, request=dispatch
    let mut gwc = false;
    if let Some(c) = &context {
        if gwc_targeted(c) {
            kvp = Kvp(vec![
                ("SERVICE".into(), KVal::One("gwc".into())),
                ("VERSION".into(), KVal::One("1.0.0".into())),
                ("REQUEST".into(), KVal::One("dispatch".into())),
            ]);
            gwc = true;
        }
    }

    // Dispatcher.service -> getServiceFromRequest
    // 1. KVP
    let mut service = normalize(kvp.single("service").ok().flatten().as_deref());
    let mut version = match normalize(kvp.single("version").ok().flatten().as_deref()) {
        Some(v) => match normalize_version(&v) {
            Ok(v) => v,
            Err(e) => return refused(e),
        },
        None => None,
    };
    let mut request = normalize(kvp.single("request").ok().flatten().as_deref());
    rep.request = request.clone();
    if let Err(e) = kvp.single("outputFormat") {
        return refused(e);
    }
    let mut namespace: Option<String> = None;
    // 2. body: only `if (req.getInput() != null && "POST".equalsIgnoreCase(method))`
    if m.eq_ignore_ascii_case("POST") {
        let root = match body {
            Body::None => None,
            Body::Soap(r) => Some(r),
            Body::Xml(c) => match xml::read_op_post(&c) {
                Ok(r) => Some(r),
                Err(XmlErr::Malformed(e)) => {
                    return Outcome::Ambiguous {
                        why: format!("Dispatcher.readOpPost: {e}"),
                    }
                }
                Err(XmlErr::Unmodelled(e)) => {
                    return Outcome::Unmodelled {
                        why: format!("Dispatcher.readOpPost: {e}"),
                    }
                }
            },
        };
        if let Some(r) = root {
            rep.body_lock_id = r.carries_lock_id;
            // the root's local name always replaces the KVP request
            request = normalize(Some(&r.local));
            rep.request = request.clone();
            // attribute service: replaces the KVP service even when blank (normalize -> null)
            if let Some(s) = &r.service {
                service = normalize(Some(s));
            }
            // attribute version: normalizeVersion(v) (may throw), then the RAW value is kept
            if let Some(v) = &r.version {
                if let Err(e) = normalize_version(v) {
                    return refused(e);
                }
                version = Some(v.clone());
            }
            namespace = normalize(r.ns.as_deref());
        }
    }
    // 3. Dispatcher.readOpContext: service = path (last raw segment); never the request
    if service.is_none() {
        service = normalize(Some(&path));
    }
    let service = match service {
        Some(s) => s,
        None => return refused(
            "Dispatcher.getServiceFromRequest: Could not determine service (MissingParameterValue)",
        ),
    };
    // Dispatcher.service: findService, then the "<service>/<request>" compatibility hack
    let mut how = format!("service {service:?}");
    let sd = match find_service(&service, version.as_deref(), namespace.as_deref()) {
        Some(sd) => sd,
        None => {
            let via_ctx = context
                .as_deref()
                .and_then(|c| find_service(c, version.as_deref(), namespace.as_deref()));
            match via_ctx {
                Some(sd) => {
                    if request.is_none() {
                        request = Some(service.clone());
                        rep.request = request.clone();
                        how = format!(
                            "legacy path: service from context {:?}, request from path {service:?}",
                            context.as_deref().unwrap_or("")
                        );
                    } else {
                        how = format!(
                            "service from context {:?}",
                            context.as_deref().unwrap_or("")
                        );
                    }
                    sd
                }
                None => {
                    return refused(format!(
                        "Dispatcher.service: No service: ( {service} ) (InvalidParameterValue)"
                    ))
                }
            }
        }
    };
    // Dispatcher.dispatch
    let req = match request {
        Some(r) => r,
        None => return refused(
            "Dispatcher.dispatch: Could not determine geoserver request (MissingParameterValue)",
        ),
    };
    let mut op = sd.op(&req);
    let mut shown = req.clone();
    if op.is_none() {
        // "did we have a mixed kvp + post request and trusted the body for the request?"
        match kvp.get("request") {
            None => {}
            Some(KVal::Many(_)) => {
                return refused("KvpUtils.getSingleValue(request) in Dispatcher.dispatch")
            }
            Some(KVal::One(v)) => {
                let r2 = normalize(Some(v));
                rep.request = r2.clone();
                match r2 {
                    None => {
                        return refused(
                            "Dispatcher.dispatch: null request (NPE in OwsUtils.method)",
                        )
                    }
                    Some(r2) => {
                        op = sd.op(&r2);
                        how = format!(
                            "{how}; body operation {req:?} not in {} {} -> KVP request {r2:?}",
                            sd.id, sd.version
                        );
                        shown = r2;
                    }
                }
            }
        }
    }
    match op {
        Some(o) => Outcome::Dispatched {
            service: sd.id,
            version: sd.version,
            op: o,
            how: if gwc {
                format!("GwcServiceDispatcherCallback; {how}")
            } else {
                how
            },
        },
        None => refused(format!(
            "Dispatcher.dispatch: No such operation {shown:?} in {} {} (OperationNotSupported)",
            sd.id, sd.version
        )),
    }
}

fn gwc_targeted(context: &str) -> bool {
    if context.starts_with("gwc/service") {
        return true;
    }
    let segs: Vec<&str> = context.splitn(3, '/').collect();
    // ([^/]+)/gwc/service.*
    if let Some(i) = context.find('/') {
        if i > 0 && context[i + 1..].starts_with("gwc/service") {
            return true;
        }
    }
    // ([^/]+)/([^/]+)/gwc/service.*
    segs.len() == 3
        && !segs[0].is_empty()
        && !segs[1].is_empty()
        && segs[2].starts_with("gwc/service")
}

/// Which dispatched operations write or hold node-local state (notes §1 MASTER rows).
pub fn writes(service: &str, op: &str) -> Option<&'static str> {
    match (service, op) {
        ("wfs", "Transaction") => Some("WFS Transaction writes data"),
        ("wfs", "LockFeature") => Some("WFS LockFeature holds an in-memory lock"),
        ("wfs", "GetFeatureWithLock") => Some("WFS GetFeatureWithLock holds an in-memory lock"),
        ("wfs", "CreateStoredQuery") => Some("WFS CreateStoredQuery persists config"),
        ("wfs", "DropStoredQuery") => Some("WFS DropStoredQuery persists config"),
        ("wps", "Execute") => Some("WPS Execute (async status/results, process side effects)"),
        ("wps", "GetExecutionStatus") => {
            Some("WPS GetExecutionStatus reads node-local execution state")
        }
        ("wps", "GetExecutionResult") => Some("WPS GetExecutionResult reads node-local results"),
        ("wps", "Dismiss") => Some("WPS Dismiss cancels a node-local execution"),
        ("wps", "GetExecutions") => Some("WPS GetExecutions lists node-local executions"),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions() {
        assert_eq!(normalize_version("2").unwrap().as_deref(), Some("2.0.0"));
        assert_eq!(normalize_version("1.1").unwrap().as_deref(), Some("1.1.0"));
        assert!(normalize_version("abc").is_err());
        assert!(normalize_version("").is_err());
        assert_eq!(normalize_version(".").unwrap(), None);
        assert_eq!(
            normalize_version("\u{ff12}").unwrap().as_deref(),
            Some("2.0.0")
        );
        assert_eq!(
            find_service("wfs", Some("1.1.0"), None).unwrap().version,
            "1.1.0"
        );
        assert_eq!(find_service("WFS", None, None).unwrap().version, "2.0.0");
        assert_eq!(
            find_service("wfs", Some("2.0"), Some("http://www.opengis.net/wfs"))
                .unwrap()
                .version,
            "1.1.0"
        );
        assert_eq!(find_service("topp/wfs", None, None).unwrap().id, "wfs");
        assert!(find_service("a/b/wfs", None, None).is_none());
        assert_eq!(
            find_service("wc\u{17f}", None, None).unwrap().version,
            "2.0.1"
        );
    }

    #[test]
    fn kvp_keys() {
        let k = Kvp::normalize(&[
            ("reque\u{17f}t".into(), vec![" Transaction\u{b}".into()]),
            ("loc\u{212a}id".into(), vec!["x".into()]),
        ]);
        assert_eq!(k.get("request"), Some(&KVal::One("Transaction".into())));
        assert!(k.get("lockId").is_some());
        let k = Kvp::normalize(&[
            ("REQUEST".into(), vec!["GetMap".into(), "x".into()]),
            ("request".into(), vec!["Transaction".into()]),
        ]);
        assert_eq!(k.get("request"), Some(&KVal::One("Transaction".into())));
        assert!(gwc_targeted("gwc/service"));
        assert!(gwc_targeted("topp/gwc/service"));
        assert!(gwc_targeted("topp/roads/gwc/service/wmts/rest"));
        assert!(!gwc_targeted("gwc"));
    }
}
