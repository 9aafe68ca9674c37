//! The request path as GeoServer's container reads it, for classification only (the forwarded target
//! is never touched). Tomcat (`CoyoteAdapter.postParseRequest`) removes `;` path parameters, decodes
//! `%XX`, collapses `//`, and resolves dot segments; Spring's handler mapping reads the raw URI with
//! `;` content removed, decoded and `//` collapsed, but dot segments left as they are; GeoServer's
//! strict firewall (2.25+) refuses `;`, encoded dots and dot segments, older releases do not. So:
//!
//! - what Tomcat refuses with 400 (a malformed escape, `%2F`, `%5C`, `%00`, `\`, `..` above the
//!   root) geolb refuses too;
//! - where the readers disagree (path parameters, dot segments, encoded or not) the request goes to
//!   the master;
//! - anything else is decoded and `//` collapsed, which every reader agrees on.

use std::borrow::Cow;

/// What geolb makes of a request path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PathReading<'a> {
    /// The decoded path with `//` collapsed: what Tomcat and Spring both map.
    Clear(Cow<'a, str>),
    /// The readers could map it differently: the master.
    Unsure(&'static str),
    /// Tomcat answers 400: so does geolb.
    Refused(&'static str),
}

/// Reads the path part of a request target (no query).
pub fn read_path(raw: &str) -> PathReading<'_> {
    let bytes = raw.as_bytes();
    if bytes.first() != Some(&b'/') {
        // `*` (OPTIONS *), or nothing GeoServer maps.
        return PathReading::Unsure("request-target");
    }
    let plain = !bytes.iter().any(|b| matches!(b, b'%' | b';' | b'\\'))
        && !raw.contains("//")
        && !has_dot_segment(raw);
    if plain {
        return PathReading::Clear(Cow::Borrowed(raw));
    }
    if bytes.contains(&b'\\') {
        // CoyoteAdapter.normalize: a backslash (ALLOW_BACKSLASH false) is a 400.
        return PathReading::Refused("a backslash in the path");
    }
    if bytes.contains(&b';') {
        // CoyoteAdapter.parsePathParameters strips them; the strict firewall refuses them.
        return PathReading::Unsure("path-parameters");
    }
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b != b'%' {
            decoded.push(b);
            i += 1;
            continue;
        }
        // UDecoder.convert: `%` and two hex digits, else 400.
        let hex = |j: usize| bytes.get(j).and_then(|&c| (c as char).to_digit(16));
        let (Some(hi), Some(lo)) = (hex(i + 1), hex(i + 2)) else {
            return PathReading::Refused("a malformed percent-escape in the path");
        };
        let byte = (hi * 16 + lo) as u8;
        match byte {
            // encodedSolidusHandling and encodedReverseSolidusHandling (then normalize): 400.
            b'/' => return PathReading::Refused("an encoded slash in the path"),
            b'\\' => return PathReading::Refused("an encoded backslash in the path"),
            0 => return PathReading::Refused("an encoded NUL in the path"),
            _ => decoded.push(byte),
        }
        i += 3;
    }
    // normalize: `//` collapses before dot segments are looked at.
    let mut collapsed: Vec<u8> = Vec::with_capacity(decoded.len());
    for &b in &decoded {
        if !(b == b'/' && collapsed.last() == Some(&b'/')) {
            collapsed.push(b);
        }
    }
    // Invalid UTF-8 becomes U+FFFD in Tomcat's converter, as here.
    let path = String::from_utf8_lossy(&collapsed).into_owned();
    if has_dot_segment(&path) {
        // Tomcat resolves them (and refuses `..` above the root); Spring's mapping does not.
        return if above_root(&path) {
            PathReading::Refused("a dot segment above the root")
        } else {
            PathReading::Unsure("dot-segments")
        };
    }
    PathReading::Clear(Cow::Owned(path))
}

/// A `.` or `..` segment, anywhere.
fn has_dot_segment(path: &str) -> bool {
    path.split('/').any(|s| s == "." || s == "..")
}

/// Whether resolving the dot segments would climb above the root (Tomcat: 400).
fn above_root(path: &str) -> bool {
    let mut depth = 0i64;
    for seg in path.split('/').skip(1) {
        match seg {
            ".." if depth == 0 => return true,
            ".." => depth -= 1,
            "." => {}
            _ => depth += 1,
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use PathReading::*;

    #[test]
    fn paths_read_as_tomcat_and_spring_agree() {
        let clear =
            |raw: &str, want: &str| assert_eq!(read_path(raw), Clear(Cow::Borrowed(want)), "{raw}");
        clear("/geoserver/wms", "/geoserver/wms");
        clear("/geoserver/%77fs", "/geoserver/wfs");
        clear("/geoserver//rest//workspaces", "/geoserver/rest/workspaces");
        clear(
            "/geoserver/gwc/rest/wmts/topp:states//EPSG:900913/EPSG%3A900913%3A5/3/4",
            "/geoserver/gwc/rest/wmts/topp:states/EPSG:900913/EPSG:900913:5/3/4",
        );
        clear("/geoserver/a+b", "/geoserver/a+b");
        clear("/geoserver/%2e%2ehidden", "/geoserver/..hidden");
        assert!(
            matches!(read_path("/geoserver/%C3%A9t%C3%A9/wms"), Clear(p) if p == "/geoserver/été/wms")
        );
        assert!(
            matches!(read_path("/geoserver/%FF/wms"), Clear(p) if p == "/geoserver/\u{FFFD}/wms")
        );
    }

    #[test]
    fn where_readers_disagree_it_is_unsure() {
        for raw in [
            "/geoserver/ogc/../rest/workspaces",
            "/geoserver/ogc/%2e%2e/rest/workspaces",
            "/geoserver/ogc/%2E./rest",
            "/geoserver/./rest",
            "/geoserver/rest/.",
            "/geoserver/rest/x/..",
            "/geoserver/a//../rest",
            "/geoserver/styles/..;/rest/workspaces",
            "/geoserver/rest;/workspaces",
            "/geoserver;jsessionid=1/wms",
        ] {
            assert!(
                matches!(read_path(raw), Unsure(_)),
                "{raw}: {:?}",
                read_path(raw)
            );
        }
    }

    #[test]
    fn what_tomcat_refuses_is_refused() {
        for raw in [
            "/geoserver/rest%2Fworkspaces",
            "/geoserver/rest%5cworkspaces",
            "/geoserver\\rest",
            "/geoserver/%00",
            "/geoserver/%zz",
            "/geoserver/%4",
            "/..",
            "/geoserver/../../x",
        ] {
            assert!(
                matches!(read_path(raw), Refused(_)),
                "{raw}: {:?}",
                read_path(raw)
            );
        }
        assert!(matches!(read_path("*"), Unsure(_)));
    }
}
