//! The headers of a forwarded request and of its response: hop-by-hop removal, `X-Forwarded-*`,
//! `Location` rewriting.

use std::net::IpAddr;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::PathAndQuery;
use http::Uri;

use crate::cluster::Node;

/// The host and port the client addressed: `Host`, or the HTTP/2 `:authority`.
pub fn client_host(parts: &http::request::Parts) -> Option<HeaderValue> {
    match parts.headers.get(header::HOST) {
        Some(host) => Some(host.clone()),
        None => parts
            .uri
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok()),
    }
}

/// The request target sent to a node: origin-form (`/path?query`), as a server expects it from a
/// client (an absolute-form target makes Tomcat ignore `Host`).
pub fn node_target(path_and_query: Option<&PathAndQuery>) -> Uri {
    Uri::from(
        path_and_query
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/")),
    )
}

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
/// Headers that steer the URLs GeoServer writes: only a trusted peer may send them.
static UNTRUSTED_DROPPED: [HeaderName; 3] = [
    HeaderName::from_static("forwarded"),
    HeaderName::from_static("x-forwarded-path"),
    HeaderName::from_static("x-forwarded-port"),
];

/// Connection-scoped headers (RFC 9110 §7.6.1) never passed on.
static HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
];

/// Headers geolb frames or routes a request by: a `Connection` header may not nominate them for
/// removal (geolb would read one that the node never sees).
static ROUTING_HEADERS: [HeaderName; 5] = [
    header::HOST,
    header::CONTENT_LENGTH,
    header::TRANSFER_ENCODING,
    header::CONTENT_TYPE,
    header::CONTENT_ENCODING,
];

/// The names a `Connection` header lists (tokens, case-insensitive; unparsable ones are skipped:
/// they name no header).
fn nominated(headers: &HeaderMap) -> impl Iterator<Item = HeaderName> + '_ {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .flat_map(|v| v.as_bytes().split(|&b| b == b','))
        .filter_map(|name| HeaderName::from_bytes(name.trim_ascii()).ok())
}

/// Whether a `Connection` header nominates one of [`ROUTING_HEADERS`].
pub fn nominates_routing_header(headers: &HeaderMap) -> bool {
    headers.contains_key(header::CONNECTION)
        && nominated(headers).any(|name| ROUTING_HEADERS.contains(&name))
}

/// One of [`HOP_BY_HOP`], or `Upgrade` (a match on the lower-case name: cheaper than comparing
/// `HeaderName`s one by one).
fn is_hop_by_hop(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "proxy-authenticate"
            | "proxy-authorization"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
    )
}

/// Removes hop-by-hop headers, those the `Connection` header names included, and `Upgrade`.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // Most messages carry none, or only `Connection: keep-alive`: a pass over the names finds
    // them (and a second one, if `Connection` is there, the names it nominates); only what is
    // there is removed.
    let mut doomed = Doomed::default();
    let (mut connection, mut close) = (false, false);
    for name in headers.keys() {
        if is_hop_by_hop(name) {
            connection |= name == header::CONNECTION;
            doomed.push(name);
        } else {
            close |= name.as_str() == "close";
        }
    }
    let tokens = headers.get_all(header::CONNECTION);
    // `keep-alive` is hop-by-hop already, and `close` names a header only if there is one.
    let usual = |token: &[u8]| {
        let token = token.trim_ascii();
        token.eq_ignore_ascii_case(b"keep-alive")
            || (!close && token.eq_ignore_ascii_case(b"close"))
    };
    if connection
        && !tokens
            .iter()
            .flat_map(|v| v.as_bytes().split(|&b| b == b','))
            .all(usual)
    {
        let nominated = |name: &HeaderName| {
            tokens
                .iter()
                .flat_map(|v| v.as_bytes().split(|&b| b == b','))
                .any(|token| {
                    token
                        .trim_ascii()
                        .eq_ignore_ascii_case(name.as_str().as_bytes())
                })
        };
        for name in headers.keys() {
            if !is_hop_by_hop(name) && nominated(name) {
                doomed.push(name);
            }
        }
    }
    if doomed.overflow {
        let named: Vec<HeaderName> = nominated(headers).collect();
        for name in named.iter().chain(&HOP_BY_HOP).chain([&header::UPGRADE]) {
            headers.remove(name);
        }
    } else {
        for name in doomed.names.iter().flatten() {
            headers.remove(name);
        }
    }
}

/// The names to remove from a head: a few, kept without allocating.
#[derive(Default)]
struct Doomed {
    names: [Option<HeaderName>; 6],
    len: usize,
    overflow: bool,
}

impl Doomed {
    fn push(&mut self, name: &HeaderName) {
        match self.names.get_mut(self.len) {
            Some(slot) => {
                *slot = Some(name.clone());
                self.len += 1;
            }
            None => self.overflow = true,
        }
    }
}

/// The headers [`prepare_request_headers`] looks at, found in one pass over the names.
#[derive(Default)]
struct Present {
    expect: bool,
    untrusted: bool,
    host: bool,
    proto: bool,
    forwarded_host: bool,
    forwarded_for: bool,
}

impl Present {
    fn survey(headers: &HeaderMap) -> Present {
        let mut present = Present::default();
        for name in headers.keys() {
            match name.as_str() {
                "expect" => present.expect = true,
                "host" => present.host = true,
                "x-forwarded-for" => present.forwarded_for = true,
                "x-forwarded-proto" => present.proto = true,
                "x-forwarded-host" => present.forwarded_host = true,
                "forwarded" | "x-forwarded-path" | "x-forwarded-port" => present.untrusted = true,
                _ => {}
            }
        }
        present
    }
}

/// The client's address as `X-Forwarded-For` names it, made once per connection.
pub fn forwarded_for(peer: IpAddr) -> HeaderValue {
    // Visible ASCII: always a valid header value.
    HeaderValue::try_from(peer.to_string()).unwrap_or(HeaderValue::from_static("unknown"))
}

/// Sets what the node must know about the client: keeps `Host`, sets `X-Forwarded-Proto/Host`
/// (unless a trusted peer sent them), appends the peer (`peer`, from [`forwarded_for`]) to
/// `X-Forwarded-For`.
pub fn prepare_request_headers(
    headers: &mut HeaderMap,
    peer: &HeaderValue,
    client_host: Option<&HeaderValue>,
    trusted: bool,
    proto: &'static str,
) {
    strip_hop_by_hop(headers);
    let present = Present::survey(headers);
    // geolb has already answered `100-continue` by reading the body; the node gets it at once.
    if present.expect {
        headers.remove(header::EXPECT);
    }
    if let Some(host) = client_host {
        if !present.host {
            headers.insert(header::HOST, host.clone());
        }
    }
    if !trusted && present.untrusted {
        for name in &UNTRUSTED_DROPPED {
            headers.remove(name);
        }
    }
    if !(trusted && present.proto) {
        headers.insert(X_FORWARDED_PROTO.clone(), HeaderValue::from_static(proto));
    }
    if !(trusted && present.forwarded_host) {
        match client_host {
            Some(host) => {
                headers.insert(X_FORWARDED_HOST.clone(), host.clone());
            }
            None if present.forwarded_host => {
                headers.remove(&X_FORWARDED_HOST);
            }
            None => {}
        }
    }
    if !present.forwarded_for {
        headers.insert(X_FORWARDED_FOR.clone(), peer.clone());
        return;
    }
    let mut chain = String::new();
    for earlier in headers
        .get_all(&X_FORWARDED_FOR)
        .iter()
        .filter_map(|v| v.to_str().ok())
    {
        chain.push_str(earlier);
        chain.push_str(", ");
    }
    chain.push_str(peer.to_str().unwrap_or("unknown"));
    // Visible ASCII and an IP address: always a valid header value.
    if let Ok(value) = HeaderValue::try_from(chain) {
        headers.insert(X_FORWARDED_FOR.clone(), value);
    }
}

/// Points a `Location` that names the node's own origin at the address the client used.
pub fn rewrite_location(
    headers: &mut HeaderMap,
    node: &Node,
    client_host: &HeaderValue,
    proto: &str,
) {
    let Some(location) = headers.get(header::LOCATION).and_then(|v| v.to_str().ok()) else {
        return;
    };
    let rest = location.strip_prefix(node.origin.as_str()).or_else(|| {
        // A node on port 80 may leave the port out.
        (node.authority().port_u16() == Some(80))
            .then(|| {
                location
                    .strip_prefix("http://")?
                    .strip_prefix(node.authority().host())
            })
            .flatten()
    });
    let Some(rest) = rest.filter(|r| r.is_empty() || r.starts_with(['/', '?', '#'])) else {
        return;
    };
    let Ok(host) = client_host.to_str() else {
        return;
    };
    if let Ok(value) = HeaderValue::from_str(&format!("{proto}://{host}{rest}")) {
        headers.insert(header::LOCATION, value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::NodeSpec;
    use http::uri::Authority;

    fn node() -> Node {
        Node::new(
            NodeSpec {
                name: "n".into(),
                authority: Authority::from_static("10.0.0.5:8080"),
                tls: false,
                master: None,
                reads: true,
            },
            std::sync::Arc::default(),
        )
    }

    #[test]
    fn forwarded_headers_are_set_and_appended() {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("maps.example.org"));
        h.insert("x-forwarded-host", HeaderValue::from_static("evil.example"));
        h.insert("x-forwarded-proto", HeaderValue::from_static("https"));
        h.append("x-forwarded-for", HeaderValue::from_static("1.1.1.1"));
        h.append("x-forwarded-for", HeaderValue::from_static("2.2.2.2"));
        h.insert("forwarded", HeaderValue::from_static("host=evil"));
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, x-secret"),
        );
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        let host = h.get(header::HOST).cloned();
        prepare_request_headers(
            &mut h,
            &forwarded_for("192.0.2.7".parse().unwrap()),
            host.as_ref(),
            false,
            "http",
        );
        assert_eq!(h["host"], "maps.example.org");
        assert_eq!(h["x-forwarded-host"], "maps.example.org");
        assert_eq!(h["x-forwarded-proto"], "http");
        assert_eq!(h["x-forwarded-for"], "1.1.1.1, 2.2.2.2, 192.0.2.7");
        for gone in ["forwarded", "connection", "x-secret", "transfer-encoding"] {
            assert!(!h.contains_key(gone), "{gone} must be dropped");
        }
    }

    #[test]
    fn the_quick_name_matches_agree_with_the_lists() {
        for name in HOP_BY_HOP.iter().chain([&header::UPGRADE]) {
            assert!(is_hop_by_hop(name), "{name}");
        }
        assert!(!is_hop_by_hop(&header::HOST));
        for name in &UNTRUSTED_DROPPED {
            let mut h = HeaderMap::new();
            h.insert(name.clone(), HeaderValue::from_static("x"));
            assert!(Present::survey(&h).untrusted, "{name}");
        }
        // `Connection: close` names a header only when there is one by that name.
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, HeaderValue::from_static("Close"));
        h.insert("close", HeaderValue::from_static("1"));
        h.insert("keep", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut h);
        assert_eq!(
            h.keys().map(HeaderName::as_str).collect::<Vec<_>>(),
            ["keep"]
        );
    }

    #[test]
    fn every_hop_by_hop_header_goes_however_many_there_are() {
        let mut h = HeaderMap::new();
        for name in [
            "connection",
            "keep-alive",
            "proxy-connection",
            "proxy-authenticate",
            "proxy-authorization",
            "te",
            "trailer",
            "transfer-encoding",
            "upgrade",
            "expect",
            "x-forwarded-host",
        ] {
            h.insert(name, HeaderValue::from_static("x"));
        }
        h.insert("accept", HeaderValue::from_static("image/png"));
        prepare_request_headers(
            &mut h,
            &forwarded_for("::1".parse().unwrap()),
            None,
            false,
            "https",
        );
        let left: Vec<&str> = h.keys().map(HeaderName::as_str).collect();
        assert_eq!(
            left,
            ["accept", "x-forwarded-proto", "x-forwarded-for"],
            "an HTTP/1.0 client without Host: no X-Forwarded-Host either"
        );
        assert_eq!(h["x-forwarded-for"], "::1");
        assert_eq!(h["x-forwarded-proto"], "https");
    }

    #[test]
    fn a_trusted_peer_keeps_its_forwarded_headers() {
        let mut h = HeaderMap::new();
        h.insert(
            "x-forwarded-host",
            HeaderValue::from_static("public.example"),
        );
        h.insert("x-forwarded-proto", HeaderValue::from_static("https"));
        h.insert("forwarded", HeaderValue::from_static("proto=https"));
        let host = HeaderValue::from_static("internal:8080");
        prepare_request_headers(
            &mut h,
            &forwarded_for("10.1.1.1".parse().unwrap()),
            Some(&host),
            true,
            "http",
        );
        assert_eq!(h["x-forwarded-host"], "public.example");
        assert_eq!(h["x-forwarded-proto"], "https");
        assert_eq!(h["forwarded"], "proto=https");
        assert_eq!(
            h["host"], "internal:8080",
            "an HTTP/2 :authority becomes Host"
        );
    }

    #[test]
    fn location_pointing_at_the_node_is_rewritten() {
        let n = node();
        let client = HeaderValue::from_static("maps.example.org:8000");
        let mut h = HeaderMap::new();
        h.insert(
            header::LOCATION,
            HeaderValue::from_static("http://10.0.0.5:8080/geoserver/web/?0"),
        );
        rewrite_location(&mut h, &n, &client, "http");
        assert_eq!(
            h["location"],
            "http://maps.example.org:8000/geoserver/web/?0"
        );
        for untouched in [
            "http://10.0.0.5:80801/x",
            "http://other:8080/geoserver",
            "/geoserver/web/",
        ] {
            h.insert(header::LOCATION, HeaderValue::from_static(untouched));
            rewrite_location(&mut h, &n, &client, "http");
            assert_eq!(h["location"], untouched);
        }
    }
}
