//! Everything between Tomcat and GeoServer's handlers: the Spring Security firewall, and the
//! Spring MVC handler mappings of the single `DispatcherServlet` mapped to `/*`.
//!
//! web.xml (2.28.2, src/web/app/src/main/webapp/WEB-INF/web.xml): filters on `/*` in order
//! CharacterEncodingFilter(UTF-8) -> FlushSafe -> SessionDebugger -> GZIP -> securityHeaders ->
//! filterChainProxy (GeoServerSecurityFilterChainProxy) -> AdvancedDispatchFilter ->
//! SpringDelegatingFilter (HTTPMethodFilter, LoggingFilter, HTTPHeadersCollector) ->
//! ThreadLocalsCleanup; one servlet `dispatcher` (Spring DispatcherServlet) on `/*`.

use crate::node_model::geoserver::charset;
use crate::node_model::ServletView;

/// `GeoServerHttpFirewall.getFirewalledRequest` (gs-main, 2.28.2): unless
/// `GEOSERVER_USE_STRICT_FIREWALL=false`, Spring Security 5.8.16's `StrictHttpFirewall` is run on
/// a copy of the request whose requestURI/contextPath/servletPath/pathInfo have `//+` collapsed
/// (`NormalizedHttpServletRequest`), then `DefaultHttpFirewall` on the original.
/// A rejection is a `RequestRejectedException` before any handler: nothing is processed.
pub fn firewall_rejects(view: &ServletView) -> Option<String> {
    // StrictHttpFirewall.rejectForbiddenHttpMethod: exact, case-sensitive set
    // (HTTPMethodFilter, later in the chain, allows the same seven methods -> 405)
    const METHODS: [&str; 7] = ["DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT"];
    if !METHODS.contains(&view.method.as_str()) {
        return Some(format!(
            "StrictHttpFirewall.rejectForbiddenHttpMethod: method {:?}",
            view.method
        ));
    }
    let collapse = |s: &str| {
        let mut out = String::new();
        for c in s.chars() {
            if c == '/' && out.ends_with('/') {
                continue;
            }
            out.push(c);
        }
        out
    };
    let uri = collapse(&view.request_uri);
    let ctx = collapse(&view.context_path);
    // Tomcat with a "/*" servlet mapping: servletPath "" and pathInfo = decoded normalized path
    let path_info = collapse(&view.path_in_context);
    // StrictHttpFirewall.rejectedBlocklistedUrls: encoded blocklist on contextPath + requestURI
    const ENCODED: [&str; 19] = [
        ";", "%3b", "%3B", "%2f", "%2F", "\\", "%5c", "%5C", "\0", "%00", "\n", "%0a", "%0A", "\r",
        "%0d", "%0D", "%25", "%2e", "%2E",
    ];
    for f in ENCODED {
        if ctx.contains(f) || uri.contains(f) {
            return Some(format!("StrictHttpFirewall: requestURI contains {f:?}"));
        }
    }
    // decoded blocklist on servletPath + pathInfo
    const DECODED: [&str; 14] = [
        ";", "%3b", "%3B", "%2f", "%2F", "\\", "%5c", "%5C", "\0", "\n", "\r", "%", "\u{2028}",
        "\u{2029}",
    ];
    for f in DECODED {
        if path_info.contains(f) {
            return Some(format!("StrictHttpFirewall: decoded path contains {f:?}"));
        }
    }
    // StrictHttpFirewall.isNormalized on requestURI, contextPath, servletPath, pathInfo
    for p in [&uri, &ctx, &path_info] {
        if !is_normalized(p) {
            return Some(format!(
                "StrictHttpFirewall: the URL was not normalized ({p:?})"
            ));
        }
    }
    // rejectNonPrintableAsciiCharactersInFieldName(requestURI)
    if uri.chars().any(|c| !(' '..='~').contains(&c)) {
        return Some("StrictHttpFirewall: requestURI has non-printable-ASCII characters".into());
    }
    None
}

/// `StrictHttpFirewall.isNormalized(String)`: no "." or ".." path segment.
fn is_normalized(path: &str) -> bool {
    path.split('/').all(|seg| seg != "." && seg != "..")
}

/// `UrlPathHelper.getPathWithinApplication` (Spring 5.3.39). Every handler mapping uses the full
/// path within the application (`alwaysUseFullPath`, and `skipServletPathDetermination` for the
/// `/*` servlet mapping) computed from the RAW `getRequestURI()`: semicolon content removed,
/// %-decoded, `//` collapsed (`getSanitizedPath`) — dot segments are NOT resolved (the strict
/// firewall already refused them) — then the context path is stripped case-insensitively
/// (`getRemainingPath(.., ignoreCase=true)`).
/// `url_decoder=true`: RestConfiguration's `GeoServerUrlPathHelper` (`URLDecoder.decode(s,
/// "UTF-8")`, '+' -> ' '), used by the annotation mapping (REST, GWC controllers). Otherwise
/// `UriUtils.decode(s, request.getCharacterEncoding())`. `None` = garbage (path re-decoded in a
/// non-ASCII-compatible charset): matches nothing.
pub fn lookup_path(view: &ServletView, url_decoder: bool) -> Option<String> {
    let enc = view
        .character_encoding
        .clone()
        .unwrap_or_else(|| "UTF-8".to_string());
    let dec = |s: &str| -> Option<String> {
        let has_pct = s.contains('%');
        if !url_decoder && has_pct && charset::ascii_incompatible(&enc) {
            return None;
        }
        let mut bytes = Vec::new();
        let b = s.as_bytes();
        let mut i = 0;
        while i < b.len() {
            if b[i] == b'%' {
                // StringUtils.uriDecode / URLDecoder: "%" needs two hex digits, else
                // IllegalArgumentException (Tomcat has already refused such URIs with 400)
                if i + 2 >= b.len() {
                    return None;
                }
                let h = std::str::from_utf8(&b[i + 1..i + 3])
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                match h {
                    Some(v) => {
                        bytes.push(v);
                        i += 3;
                        continue;
                    }
                    None => return None,
                }
            }
            if url_decoder && b[i] == b'+' {
                bytes.push(b' ');
            } else {
                bytes.push(b[i]);
            }
            i += 1;
        }
        Some(String::from_utf8_lossy(&bytes).into_owned())
    };
    let uri = remove_semicolon_content(&view.request_uri);
    let mut uri = dec(&uri)?;
    // getSanitizedPath
    while uri.contains("//") {
        uri = uri.replace("//", "/");
    }
    let ctx = dec(&view.context_path)?;
    let ctx = if ctx == "/" { String::new() } else { ctx };
    let u: Vec<char> = uri.chars().collect();
    let c: Vec<char> = ctx.chars().collect();
    if u.len() >= c.len()
        && u[..c.len()]
            .iter()
            .zip(&c)
            .all(|(a, b)| a == b || a.to_lowercase().eq(b.to_lowercase()))
    {
        let rest: String = u[c.len()..].iter().collect();
        Some(if rest.is_empty() {
            "/".to_string()
        } else {
            rest
        })
    } else {
        Some(uri)
    }
}

/// `UrlPathHelper.removeSemicolonContentInternal`
fn remove_semicolon_content(uri: &str) -> String {
    let mut out = String::new();
    let mut skipping = false;
    for c in uri.chars() {
        if c == ';' {
            skipping = true;
        } else if c == '/' {
            skipping = false;
        }
        if !skipping {
            out.push(c);
        }
    }
    out
}

/// Spring 5.3 `AntPathMatcher.doMatch(pattern, path, fullMatch=true)` for patterns whose segments
/// are literals, `*` or `**` (all GeoServer mappings). Case-sensitive; empty segments ignored.
pub fn ant_match(pattern: &str, path: &str) -> bool {
    if path.starts_with('/') != pattern.starts_with('/') {
        return false;
    }
    let patt: Vec<&str> = pattern.split('/').filter(|s| !s.is_empty()).collect();
    let pth: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let seg = |p: &str, s: &str| p == "*" || p == s;
    let (mut ps, mut pe) = (0isize, patt.len() as isize - 1);
    let (mut ss, mut se) = (0isize, pth.len() as isize - 1);
    while ps <= pe && ss <= se {
        let pd = patt[ps as usize];
        if pd == "**" {
            break;
        }
        if !seg(pd, pth[ss as usize]) {
            return false;
        }
        ps += 1;
        ss += 1;
    }
    let all_dstar = |a: isize, b: isize| (a..=b).all(|i| patt[i as usize] == "**");
    if ss > se {
        if ps > pe {
            return pattern.ends_with('/') == path.ends_with('/');
        }
        if ps == pe && patt[ps as usize] == "*" && path.ends_with('/') {
            return true;
        }
        return all_dstar(ps, pe);
    } else if ps > pe {
        return false;
    }
    while ps <= pe && ss <= se {
        let pd = patt[pe as usize];
        if pd == "**" {
            break;
        }
        if !seg(pd, pth[se as usize]) {
            return false;
        }
        pe -= 1;
        se -= 1;
    }
    if ss > se {
        return all_dstar(ps, pe);
    }
    while ps != pe && ss <= se {
        let tmp = ((ps + 1)..=pe)
            .find(|&i| patt[i as usize] == "**")
            .unwrap_or(pe);
        if tmp == ps + 1 {
            ps += 1;
            continue;
        }
        let plen = tmp - ps - 1;
        let slen = se - ss + 1;
        let mut found = None;
        'outer: for i in 0..=(slen - plen).max(-1) {
            for j in 0..plen {
                if !seg(patt[(ps + j + 1) as usize], pth[(ss + i + j) as usize]) {
                    continue 'outer;
                }
            }
            found = Some(ss + i);
            break;
        }
        match found {
            None => return false,
            Some(f) => {
                ps = tmp;
                ss = f + plen;
            }
        }
    }
    all_dstar(ps, pe)
}

/// What a handler mapping hands the request to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Handler {
    /// REST API controllers (`RestBaseController.ROOT_PATH = "/rest"`)
    Rest,
    /// GWC's own controller (`GeoServerGWCDispatcherController`: "/gwc", "/gwc/home",
    /// "/gwc/demo/**", "/gwc/proxy/**") and GWC REST (`/gwc/rest/**`), incl. ws-prefixed
    Gwc,
    /// Wicket UI ("/web", "/web/**") — webDispatcherMapping
    WebUi,
    /// "/" root handler and "/index.html" (filePublisher -> index.html redirect into the UI)
    Index,
    /// form login/logout chains and `/j_spring*` (`GeoServerSecurityFilterChain`)
    Login,
    /// OGC API (ogcapi extension, `apiURLMapping` order 0)
    OgcApi,
    /// the OWS `Dispatcher`
    Ows,
    /// `/TestWfsPost` (servlet until 2.25; removed in 2.26 by GEOS-11390 -> 404 since)
    TestWfsPost,
    /// file/classpath/style publishers, kml icons
    Static,
    NotFound,
}

struct Mapping {
    /// (pattern, handler); "/" is the root handler of `AbstractUrlHandlerMapping`
    entries: &'static [(&'static str, Handler)],
    /// `OWSHandlerMapping.lookupHandler`: retry without a leading workspace / global layer group
    /// segment, and without workspace + layer/layer group
    ows_fallback: bool,
    trailing_slash: bool,
    /// documentation only: the verdicts of all candidates are OR-ed, so order does not matter
    #[allow(dead_code)]
    order: u8,
}

const H_OWS: Handler = Handler::Ows;
/// All `HandlerMapping` beans of a stock 2.28.2 WAR (+ wps, csw, ogcapi extensions), from the
/// applicationContext.xml files cited per entry. `order` 0/10/255(=LOWEST_PRECEDENCE); beans of
/// equal order are tried in bean registration order, which depends on jar order: unknown.
const MAPPINGS: &[Mapping] = &[
    // ogcapi-core applicationContext.xml apiURLMapping (OWSHandlerMapping, order 0, useTrailingSlashMatch)
    Mapping {
        entries: &[("/ogc", Handler::OgcApi), ("/ogc/**", Handler::OgcApi)],
        ows_fallback: true,
        trailing_slash: true,
        order: 0,
    },
    // gs-main applicationContext.xml dispatcherMapping
    Mapping {
        entries: &[("/ows", H_OWS), ("/ows/**", H_OWS)],
        ows_fallback: true,
        trailing_slash: false,
        order: 255,
    },
    // gs-wms applicationContext.xml wmsURLMapping
    Mapping {
        entries: &[
            ("/kml/icon/**/*", Handler::Static),
            ("/wms", H_OWS),
            ("/wms/*", H_OWS),
        ],
        ows_fallback: true,
        trailing_slash: false,
        order: 255,
    },
    // gs-wms animateURLMapping
    Mapping {
        entries: &[("/animate", H_OWS), ("/animate/*", H_OWS)],
        ows_fallback: true,
        trailing_slash: false,
        order: 255,
    },
    // gs-wfs applicationContext.xml wfsURLMapping ("/TestWfsPost" until 2.25)
    Mapping {
        entries: &[
            ("/wfs", H_OWS),
            ("/wfs/*", H_OWS),
            ("/TestWfsPost", Handler::TestWfsPost),
        ],
        ows_fallback: true,
        trailing_slash: false,
        order: 255,
    },
    // gs-wcs wcsURLMapping
    Mapping {
        entries: &[("/wcs", H_OWS), ("/wcs/*", H_OWS)],
        ows_fallback: true,
        trailing_slash: false,
        order: 255,
    },
    // wps-core wpsURLMapping, wpsTempDirDispatcherMapping
    Mapping {
        entries: &[("/wps", H_OWS), ("/wps/*", H_OWS)],
        ows_fallback: true,
        trailing_slash: false,
        order: 255,
    },
    Mapping {
        entries: &[("/temp/**", Handler::Static)],
        ows_fallback: true,
        trailing_slash: false,
        order: 255,
    },
    // csw-core cswURLMapping
    Mapping {
        entries: &[("/csw", H_OWS), ("/csw/*", H_OWS)],
        ows_fallback: true,
        trailing_slash: false,
        order: 255,
    },
    // gs-kml kmlURLMapping
    Mapping {
        entries: &[
            ("/kml/icon/**/*", Handler::Static),
            ("/kml", H_OWS),
            ("/kml/*", H_OWS),
        ],
        ows_fallback: true,
        trailing_slash: false,
        order: 255,
    },
    // gs-gwc geowebcache-geoserver-context.xml gwcServiceDispatcherMapping
    Mapping {
        entries: &[("/gwc/service/**", H_OWS)],
        ows_fallback: true,
        trailing_slash: false,
        order: 255,
    },
    // gs-main filePublisherMapping, stylePublisherMapping, classpathPublisherMapping
    Mapping {
        entries: &[
            ("/www/**", Handler::Static),
            ("/accessDenied.html", Handler::Static),
        ],
        ows_fallback: false,
        trailing_slash: false,
        order: 255,
    },
    Mapping {
        entries: &[("/styles/**", Handler::Static)],
        ows_fallback: false,
        trailing_slash: false,
        order: 255,
    },
    Mapping {
        entries: &[
            ("/schemas/**", Handler::Static),
            ("/webresources/**", Handler::Static),
            ("/j_acegi_security_check", Handler::Login),
            ("/j_spring_security_check", Handler::Login),
            ("/login", Handler::Login),
        ],
        ows_fallback: false,
        trailing_slash: false,
        order: 255,
    },
    // gs-wms wmsClasspathPublisherMapping
    Mapping {
        entries: &[
            ("/openlayers/**", Handler::Static),
            ("/openlayers3/**", Handler::Static),
            ("/options.png", Handler::Static),
        ],
        ows_fallback: false,
        trailing_slash: false,
        order: 255,
    },
    // gs-wcs1_1 "/temp/**" filePublisher
    Mapping {
        entries: &[("/temp/**", Handler::Static)],
        ows_fallback: false,
        trailing_slash: false,
        order: 255,
    },
    // ogcapi-core apiClasspathPublisherMapping
    Mapping {
        entries: &[
            ("/apicss/**", Handler::Static),
            ("/swagger-ui/**", Handler::Static),
        ],
        ows_fallback: false,
        trailing_slash: false,
        order: 255,
    },
    // gs-web-core webDispatcherMapping ("/" is the root handler)
    Mapping {
        entries: &[
            ("/web", Handler::WebUi),
            ("/web/**", Handler::WebUi),
            ("/web/resources/**", Handler::WebUi),
            ("/", Handler::Index),
            ("/index.html", Handler::Index),
        ],
        ows_fallback: false,
        trailing_slash: false,
        order: 255,
    },
];

/// `AbstractUrlHandlerMapping.lookupHandler`: direct match, then patterns (best match by the
/// pattern comparator: never needed here, no overlapping patterns within one mapping).
fn lookup(m: &Mapping, path: &str) -> Option<Handler> {
    for (p, h) in m.entries {
        if *p == "/" {
            continue;
        }
        if *p == path
            || ant_match(p, path)
            || (m.trailing_slash && !p.ends_with('/') && ant_match(&format!("{p}/"), path))
        {
            return Some(*h);
        }
    }
    None
}

/// A handler the request may reach, and whether it depends on the catalog (workspace/layer).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Candidate {
    pub handler: Handler,
    pub how: String,
}

pub enum Routing {
    Refused(String),
    Candidates(Vec<Candidate>),
}

/// The `DispatcherServlet`'s handler lookup (mappings sorted by order, first non-null wins),
/// preceded by the security filter chains that answer login/logout themselves.
/// Unknown catalog content (does workspace "x" exist?) and the unknown order of equal-order
/// mappings make some paths reach one of several handlers: all are returned.
pub fn route(view: &ServletView) -> Routing {
    // GeoServerSecurityFilterChain FORM_LOGIN_CHAIN / FORM_LOGOUT_CHAIN on the (Tomcat) path;
    // notes §1: every /j_spring_* is a session endpoint
    let tp = view.path_in_context.as_str();
    if tp.starts_with("/j_spring")
        || tp.starts_with("/j_acegi")
        || matches!(tp, "/login" | "/logout")
    {
        return Routing::Candidates(vec![Candidate {
            handler: Handler::Login,
            how: format!("security chain login/logout {tp}"),
        }]);
    }
    // 1. RestConfiguration's RequestMappingHandlerMapping (order 0) with GeoServerUrlPathHelper:
    //    REST (/rest, /rest/**, suffix pattern /rest.*) and GWC controllers
    //    (GeoServerGWCDispatcherController "gwc" + {"", "/home", "/demo/**", "/proxy/**"},
    //    geowebcache REST "/gwc/rest/**"); useSuffixPatternMatch + useTrailingSlashMatch.
    if let Some(l1) = lookup_path(view, true) {
        let under = |base: &str| {
            l1 == base || l1.starts_with(&format!("{base}/")) || l1.starts_with(&format!("{base}."))
        };
        if under("/rest") {
            return Routing::Candidates(vec![Candidate {
                handler: Handler::Rest,
                how: format!("REST controllers {l1}"),
            }]);
        }
        // GWC's RESTful WMTS binding (`WMTSService`: tiles, feature info and capabilities under
        // "/gwc/rest/wmts/") is read-only: GET and HEAD are reads (policy: tiles, as /gwc/service).
        if under("/gwc/rest/wmts") && matches!(view.method.as_str(), "GET" | "HEAD") {
            return Routing::Candidates(vec![Candidate {
                handler: Handler::Static,
                how: format!("GWC RESTful WMTS tiles {l1}"),
            }]);
        }
        if l1 == "/gwc"
            || l1 == "/gwc/"
            || (l1.starts_with("/gwc.") && !l1[1..].contains('/'))
            || under("/gwc/home")
            || under("/gwc/demo")
            || under("/gwc/proxy")
            || under("/gwc/rest")
        {
            return Routing::Candidates(vec![Candidate {
                handler: Handler::Gwc,
                how: format!("GWC controller {l1}"),
            }]);
        }
    }
    // 2. The other mappings decode with the request encoding: Charset.forName throws
    //    IllegalCharsetNameException (not caught by UrlPathHelper.decodeInternal) -> 500.
    if let Some(enc) = &view.character_encoding {
        if !charset::legal_name(enc) {
            return Routing::Refused(format!("UrlPathHelper.decodeInternal: Charset.forName({enc:?}) -> IllegalCharsetNameException (500)"));
        }
    }
    let l2 = match lookup_path(view, false) {
        Some(p) => p,
        None => {
            return Routing::Candidates(vec![Candidate {
                handler: Handler::NotFound,
                how: "path re-decoded in a non-ASCII-compatible request charset".into(),
            }])
        }
    };
    let mut out: Vec<Candidate> = Vec::new();
    // GwcUrlHandlerMapping x3 (order 10): "/{ws}/gwc/demo", "/{ws}/gwc/rest/web", "/{ws}/gwc/rest/wmts"
    for base in ["/gwc/demo", "/gwc/rest/web", "/gwc/rest/wmts"] {
        if let Some(idx) = l2.find(base) {
            let ws = l2.get(1..idx).unwrap_or("");
            if idx > 0
                && !ws.is_empty()
                && !ws.contains('/')
                && (l2[idx..].len() == base.len() || l2[idx + base.len()..].starts_with('/'))
            {
                // As above: RESTful WMTS GET/HEAD are tile reads.
                let handler =
                    if base == "/gwc/rest/wmts" && matches!(view.method.as_str(), "GET" | "HEAD") {
                        Handler::Static
                    } else {
                        Handler::Gwc
                    };
                out.push(Candidate {
                    handler,
                    how: format!("GwcUrlHandlerMapping {base} in workspace {ws}"),
                });
            }
        }
    }
    let mut definite = false;
    for m in MAPPINGS {
        if let Some(h) = lookup(m, &l2) {
            out.push(Candidate {
                handler: h,
                how: format!("mapping {l2}"),
            });
            definite = true;
            continue;
        }
        if m.ows_fallback {
            // OWSHandlerMapping.lookupHandler
            let segs: Vec<&str> = l2.get(1..).unwrap_or("").splitn(2, '/').collect();
            if segs.len() == 2 && !segs[0].is_empty() {
                let rest1 = format!("/{}", segs[1]);
                if let Some(h) = lookup(m, &rest1) {
                    out.push(Candidate { handler: h, how: format!("OWSHandlerMapping: if workspace/global layer group {:?} exists, {rest1}", segs[0]) });
                }
                let segs2: Vec<&str> = segs[1].splitn(2, '/').collect();
                if segs2.len() == 2 {
                    let rest2 = format!("/{}", segs2[1]);
                    if let Some(h) = lookup(m, &rest2) {
                        out.push(Candidate { handler: h, how: format!("OWSHandlerMapping: if layer {:?} exists in workspace {:?}, {rest2}", segs2[0], segs[0]) });
                    }
                }
            }
        }
    }
    if l2 == "/" {
        out.push(Candidate {
            handler: Handler::Index,
            how: "root handler /".into(),
        });
        definite = true;
    }
    if !definite {
        out.push(Candidate {
            handler: Handler::NotFound,
            how: format!("no handler for {l2} (404)"),
        });
    }
    // order 0 (ogc) before order 10 (gwc ws) before the rest: irrelevant for an OR of verdicts
    Routing::Candidates(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ant() {
        assert!(ant_match("/wfs/*", "/wfs/GetFeature"));
        assert!(ant_match("/wfs/*", "/wfs/"));
        assert!(!ant_match("/wfs/*", "/wfs/a/"));
        assert!(!ant_match("/wfs/*", "/wfs/a/b"));
        assert!(!ant_match("/wfs", "/wfs/"));
        assert!(ant_match("/ows/**", "/ows"));
        assert!(ant_match("/ows/**", "/ows/a/b/"));
        assert!(ant_match("/kml/icon/**/*", "/kml/icon/x"));
        assert!(ant_match("/kml/icon/**/*", "/kml/icon/a/b/c"));
        assert!(!ant_match("/kml/icon/**/*", "/kml/icon"));
        assert!(!ant_match("/wfs", "/WFS"));
    }
}
