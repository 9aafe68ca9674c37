//! What a request's `Content-Type` and `Content-Encoding` make of its body, for each reader.
//!
//! - Tomcat (`Request.parseParameters`) reads a POST body as form parameters when the media type
//!   (before `;`, trimmed, lower-cased) is `application/x-www-form-urlencoded`, decoding it with the
//!   `charset` parameter; the first `Content-Type` header counts.
//! - GeoServer (`Dispatcher.init`) takes the body as a form when the value *starts with*
//!   `application/x-www-form-urlencoded` (case-sensitive), as SOAP when it starts with
//!   `application/soap+xml` (case-sensitive), as multipart when it starts with `multipart/` (any
//!   case), and as XML otherwise.
//! - Spring decodes the request path with the request's character encoding.
//!
//! Where these readings could differ (a case variant, two headers, a charset that does not read
//! ASCII as ASCII, an encoded body), the request goes to the master.

use http::header::{CONTENT_ENCODING, CONTENT_TYPE};
use http::HeaderMap;

/// How GeoServer's Dispatcher will read a POST body.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyKind {
    /// Form parameters (GeoServer and Tomcat agree).
    Form,
    /// An XML document: its root element names the operation.
    Xml,
    /// A SOAP envelope (`application/soap+xml`).
    Soap,
    Multipart,
}

const FORM: &str = "application/x-www-form-urlencoded";
const SOAP: &str = "application/soap+xml";

/// Charsets under which the ASCII bytes of keys, operation names and paths read the same.
const SAFE_CHARSETS: &[&str] = &["utf-8", "us-ascii", "iso-8859-1"];

/// Checks made on every request: one `Content-Type` at most, with a safe charset (Spring decodes
/// the path with it). `Err` is the reason to play safe.
pub fn check(headers: &HeaderMap) -> Result<(), &'static str> {
    let mut types = headers.get_all(CONTENT_TYPE).iter();
    let Some(first) = types.next() else {
        return Ok(());
    };
    if types.next().is_some() {
        return Err("content-type-twice");
    }
    let value = first.to_str().map_err(|_| "content-type")?;
    match charset(value)? {
        Some(cs)
            if !SAFE_CHARSETS
                .iter()
                .any(|safe| safe.eq_ignore_ascii_case(cs)) =>
        {
            Err("charset")
        }
        _ => Ok(()),
    }
}

/// The `charset` parameter, unquoted; `Err` when there are two, or a quoted one with escapes.
fn charset(value: &str) -> Result<Option<&str>, &'static str> {
    let mut found = None;
    for param in value.split(';').skip(1) {
        let Some((name, v)) = param.split_once('=') else {
            continue;
        };
        if !name.trim().eq_ignore_ascii_case("charset") {
            continue;
        }
        if found.is_some() {
            return Err("charset");
        }
        let v = v.trim();
        let v = match v.strip_prefix('"') {
            Some(quoted) => quoted
                .strip_suffix('"')
                .filter(|q| !q.contains(['"', '\\']))
                .ok_or("charset")?,
            None => v,
        };
        found = Some(v);
    }
    Ok(found)
}

/// How GeoServer reads the body of a POST to an OGC endpoint; `Err` is the reason to play safe.
pub fn body_kind(headers: &HeaderMap) -> Result<BodyKind, &'static str> {
    let mut encodings = headers.get_all(CONTENT_ENCODING).iter();
    match (encodings.next(), encodings.next()) {
        (_, Some(_)) => return Err("content-encoding-twice"),
        (Some(e), None) if !e.as_bytes().trim_ascii().eq_ignore_ascii_case(b"identity") => {
            return Err("encoded-body")
        }
        _ => {}
    }
    // `check` has made sure there is at most one, and that it is text.
    let Some(value) = headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok()) else {
        return Ok(BodyKind::Xml);
    };
    let media = value.split(';').next().unwrap_or("").trim();
    let lower = media.to_ascii_lowercase();
    let tomcat_form = lower == FORM;
    let geoserver_form = value.starts_with(FORM);
    if tomcat_form || geoserver_form {
        // `Application/X-WWW-…` is a form to Tomcat, XML to GeoServer; `…urlencodedX` the reverse.
        return if tomcat_form && geoserver_form {
            Ok(BodyKind::Form)
        } else {
            Err("content-type")
        };
    }
    if value.to_ascii_lowercase().starts_with(SOAP) {
        return if value.starts_with(SOAP) {
            Ok(BodyKind::Soap)
        } else {
            Err("content-type")
        };
    }
    if lower.starts_with("multipart/") {
        return Ok(BodyKind::Multipart);
    }
    Ok(BodyKind::Xml)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn form_xml_soap_and_the_doubtful_ones() {
        let kind = |ct: &'static str| body_kind(&headers(&[("content-type", ct)]));
        assert_eq!(
            kind("application/x-www-form-urlencoded"),
            Ok(BodyKind::Form)
        );
        assert_eq!(
            kind("application/x-www-form-urlencoded; charset=UTF-8"),
            Ok(BodyKind::Form)
        );
        assert_eq!(
            kind("application/x-www-form-urlencoded ;charset=utf-8"),
            Ok(BodyKind::Form)
        );
        assert_eq!(
            kind("Application/X-WWW-Form-Urlencoded"),
            Err("content-type")
        );
        assert_eq!(
            kind("application/x-www-form-urlencodedX"),
            Err("content-type")
        );
        assert_eq!(kind("text/xml"), Ok(BodyKind::Xml));
        assert_eq!(kind("text/plain;charset=UTF-8"), Ok(BodyKind::Xml));
        assert_eq!(
            kind("application/soap+xml; charset=utf-8"),
            Ok(BodyKind::Soap)
        );
        assert_eq!(kind("Application/SOAP+xml"), Err("content-type"));
        assert_eq!(
            kind("Multipart/form-data; boundary=x"),
            Ok(BodyKind::Multipart)
        );
        assert_eq!(body_kind(&HeaderMap::new()), Ok(BodyKind::Xml));
        assert_eq!(
            body_kind(&headers(&[
                ("content-type", "text/xml"),
                ("content-encoding", "gzip")
            ])),
            Err("encoded-body")
        );
        assert_eq!(
            body_kind(&headers(&[
                ("content-encoding", "identity"),
                ("content-encoding", "identity")
            ])),
            Err("content-encoding-twice")
        );
        assert_eq!(
            body_kind(&headers(&[
                ("content-type", "text/xml"),
                ("content-encoding", " Identity")
            ])),
            Ok(BodyKind::Xml)
        );
    }

    #[test]
    fn charsets_that_read_ascii_differently_are_doubtful() {
        let check_ct = |ct: &'static str| check(&headers(&[("content-type", ct)]));
        for ok in [
            "text/xml",
            "application/x-www-form-urlencoded; charset=UTF-8",
            "text/xml; charset=\"iso-8859-1\"",
            "text/xml;charset=US-ASCII",
        ] {
            assert_eq!(check_ct(ok), Ok(()), "{ok}");
        }
        for doubtful in [
            "application/x-www-form-urlencoded; charset=UTF-16LE",
            "text/xml; charset=IBM037",
            "text/xml; charset=utf-8; charset=utf-16",
            "text/xml; charset=\"utf-8",
            "text/xml; charset=",
        ] {
            assert!(check_ct(doubtful).is_err(), "{doubtful}");
        }
        assert_eq!(
            check(&headers(&[
                ("content-type", "text/xml"),
                ("content-type", "text/xml")
            ])),
            Err("content-type-twice")
        );
    }
}
