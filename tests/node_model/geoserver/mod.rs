use super::*;

// GeoServer half of the node model: given what the servlet container hands to the webapp
// ([`ServletView`]), which handler runs and, for OGC service requests, which service and
// operation GeoServer's `Dispatcher` settles on — and whether that writes or holds state on the
// node (the cluster master) or is a stateless read.
//
// Modelled version: GeoServer 2.28.2 (branch 2.28.x at 2abcae0038, Spring 5.3.39, Spring
// Security 5.8.16, Tomcat 9 as in the official images). Differences with 2.26 and the
// workshop's 2.15 are noted in comments and in ../geoserver-report.md.
//
// `NodeVerdict.why` starts with one of:
// - `state:`   GeoServer dispatches an operation that writes or holds node-local state;
// - `policy:`  master because the routing policy (notes §1) says so: a master path area, a
//              lockId, or one of the "anything ambiguous" cases (GeoServer itself may refuse);
// - `unmodelled:` the model cannot tell what GeoServer does: master to be safe;
// - `read:`    a stateless read;
// - `refused:` GeoServer (or the Spring Security firewall) answers with an error and does
//              nothing — any node answers the same, so `master` is false.

mod charset;
mod dispatcher;
pub mod java;
mod spring;
mod xml;

use spring::{Candidate, Handler, Routing};

/// `context` is GeoServer's context path, e.g. "/geoserver" (taken from `view.context_path`).
pub fn geoserver_read(view: &ServletView) -> NodeVerdict {
    geoserver_read_with(view, true)
}

/// `strict_firewall`: GeoServer 2.25+ (GEOS-11289) runs Spring Security's `StrictHttpFirewall`
/// unless `GEOSERVER_USE_STRICT_FIREWALL=false`; releases before 2.25 (the workshop's 2.15) only ran
/// `DefaultHttpFirewall`, which checks the container-normalised servlet path and so refuses nothing
/// modelled here.
pub fn geoserver_read_with(view: &ServletView, strict_firewall: bool) -> NodeVerdict {
    // GeoServerSecurityFilterChainProxy -> FilterChainProxy.doFilterInternal ->
    // GeoServerHttpFirewall (StrictHttpFirewall + DefaultHttpFirewall): before any handler
    if let Some(why) = spring::firewall_rejects(view).filter(|_| strict_firewall) {
        return NodeVerdict {
            master: false,
            why: format!("refused: {why}"),
        };
    }
    match spring::route(view) {
        Routing::Refused(why) => NodeVerdict {
            master: false,
            why: format!("refused: {why}"),
        },
        Routing::Candidates(all) => {
            // the Dispatcher reads the raw request, not the mapping that chose it: one evaluation
            // per handler kind is enough
            let mut cands: Vec<Candidate> = Vec::new();
            for c in all {
                if !cands.iter().any(|x| x.handler == c.handler) {
                    cands.push(c);
                }
            }
            let mut master = false;
            let mut whys: Vec<String> = Vec::new();
            let many = cands.len() > 1;
            for c in &cands {
                let (m, w) = judge(view, c);
                master |= m;
                let w = if many { format!("[{}] {w}", c.how) } else { w };
                if !whys.contains(&w) {
                    whys.push(w);
                }
            }
            if many {
                // several handlers are possible (catalog content, order of equal-order mappings):
                // master if any of them needs it; lead with the deciding reason
                whys.sort_by_key(|w| {
                    !(w.contains("] state:")
                        || w.contains("] policy:")
                        || w.contains("] unmodelled:"))
                        == master
                });
            }
            NodeVerdict {
                master,
                why: whys.join(" | "),
            }
        }
    }
}

fn judge(view: &ServletView, c: &Candidate) -> (bool, String) {
    let m = view.method.as_str();
    match c.handler {
        Handler::Rest => (true, format!("policy: REST API (RestConfiguration RequestMappingHandlerMapping, {})", c.how)),
        Handler::Gwc => (true, format!("policy: GWC home/demo/proxy/REST ({})", c.how)),
        Handler::WebUi => (true, "policy: Wicket UI /web (webDispatcherMapping)".into()),
        Handler::Index => (true, "policy: / and /index.html redirect into the UI (webDispatcherMapping -> filePublisher)".into()),
        Handler::Login => (true, format!("policy: login/logout session endpoint ({})", c.how)),
        Handler::TestWfsPost => (
            true,
            "policy: /TestWfsPost (wfsTestServlet relays any WFS request up to 2.25; removed in 2.26 by GEOS-11390, 404 since)".into(),
        ),
        Handler::OgcApi => {
            if matches!(m, "GET" | "HEAD" | "OPTIONS") {
                (false, format!("read: OGC API {m} ({})", c.how))
            } else {
                (true, format!("policy: OGC API {m} may write (Styles API) ({})", c.how))
            }
        }
        Handler::Static => (false, format!("read: static resource publisher ({})", c.how)),
        Handler::NotFound => (false, format!("refused: {}", c.how)),
        Handler::Ows => judge_ows(view),
    }
}

fn judge_ows(view: &ServletView) -> (bool, String) {
    use dispatcher::Outcome::*;
    let m = view.method.as_str();
    let rep = dispatcher::run(view);
    let mut master = false;
    let mut why: Vec<String> = Vec::new();
    if matches!(m, "GET" | "HEAD" | "POST") {
        // notes §1: "any request carrying lockId" (KVP key normalized like KvpUtils.normalize)
        if view
            .parameters
            .iter()
            .any(|(k, _)| dispatcher::kvp_key(k) == "LOCKID")
        {
            master = true;
            why.push("policy: carries lockId (KVP key normalizing to LOCKID)".to_string());
        }
        // notes §1: "duplicate request keys with different values or case"
        let mut reqs: Vec<&str> = Vec::new();
        for (k, vs) in &view.parameters {
            if dispatcher::kvp_key(k) == "REQUEST" {
                for v in vs {
                    let t = java::trim(v);
                    if !reqs.contains(&t) {
                        reqs.push(t);
                    }
                }
            }
        }
        if reqs.len() > 1 {
            // KvpUtils.getSingleValue throws: GeoServer refuses it (an exception report).
            why.push(format!(
                "refused: several different request values {reqs:?}"
            ));
        }
    }
    if rep.body_lock_id {
        master = true;
        why.push("policy: XML body carries lockId/LockId".to_string());
    }
    match rep.outcome {
        Options => why.push(
            "read: OPTIONS answered by AbstractController.handleRequest with an Allow header"
                .into(),
        ),
        MethodNotAllowed => why.push(format!(
            "refused: {m} -> 405 (WebContentGenerator.checkRequest: GET, HEAD, POST only)"
        )),
        Refused { why: w } => {
            let release = rep
                .request
                .as_deref()
                .map_or(false, |r| java::equals_ignore_case(r, "ReleaseLock"));
            // A request GeoServer refuses writes nothing and holds no state, on any node: what
            // the oracle checks. (geolb's policy sends a POST naming no known operation to the
            // master all the same.)
            if release {
                master = true;
                why.push(format!(
                    "policy: ReleaseLock (not a registered WFS operation, GeoServer answers: {w})"
                ));
            } else {
                why.push(format!("refused: {w}"));
            }
        }
        Ambiguous { why: w } => {
            why.push(format!("refused: a body GeoServer cannot read: {w}"));
        }
        Unmodelled { why: w } => {
            master = true;
            why.push(format!("unmodelled: {w}"));
        }
        Dispatched {
            service,
            version,
            op,
            how,
        } => {
            let svc = service.to_ascii_lowercase();
            match dispatcher::writes(&svc, op) {
                Some(w) => {
                    master = true;
                    why.insert(
                        0,
                        format!("state: Dispatcher -> {svc} {version} {op} ({how}): {w}"),
                    );
                }
                None => {
                    let note = match (svc.as_str(), op) {
                        ("csw", "Transaction" | "Harvest") => " (DefaultWebCatalogService throws 'not supported')",
                        ("gwc", _) => " (GwcServiceProxy -> GeoWebCacheDispatcher: tiles; WMS-C proxying is forced to WMS)",
                        _ => "",
                    };
                    why.push(format!(
                        "read: Dispatcher -> {svc} {version} {op} ({how}){note}"
                    ));
                }
            }
        }
    }
    if master {
        why.sort_by_key(|w| w.starts_with("read:") || w.starts_with("refused:"));
    }
    (master, why.join("; "))
}

#[cfg(test)]
mod tests;
