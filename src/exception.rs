//! OGC exception documents: whether a node's answer is one, and what it says. A node that cannot
//! answer a request sends one, often with HTTP 200 (WMS): `ServiceExceptionReport` (WMS, WFS 1.0),
//! `ows:ExceptionReport` (WFS 1.1/2.0, WCS, WPS, WMTS), WMS's JSON exceptions
//! (`EXCEPTIONS=application/json`), and OGC API's JSON problem documents. Pure functions: the
//! proxy peeks at a bounded prefix of a response and asks [`sniff`] after each frame.

use http::header::{HeaderMap, CONTENT_LENGTH, CONTENT_TYPE};
use http::StatusCode;
use quick_xml::events::{BytesStart, Event};
use quick_xml::{Reader, XmlVersion};

/// How much of an answer geolb holds back to read an exception: exception documents are small,
/// and anything longer passes through unread.
pub const PEEK_LIMIT: usize = 64 * 1024;

/// The longest exception text kept (for logs, metrics keys and lag tracking).
const TEXT_LIMIT: usize = 240;

/// What an exception says about the node that sent it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// The request names a layer, style, feature type, coverage or collection this node does not
    /// know: in a cluster, a replica that has not applied a change yet answers this.
    Unknown,
    /// The client's mistake: any node would answer the same.
    Mistake,
    /// Anything else (`NoApplicableCode`, GeoServer's catch-all for internal failures): the node
    /// may be sick, or the request may fail everywhere.
    Failure,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Unknown => "unknown",
            Kind::Mistake => "mistake",
            Kind::Failure => "failure",
        }
    }
}

/// An exception document, read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Exception {
    /// `code` / `exceptionCode` (`NoApplicableCode` when the document names none, as OGC says).
    pub code: String,
    pub locator: Option<String>,
    /// The exception's text, whitespace collapsed, at most [`TEXT_LIMIT`] bytes.
    pub text: String,
    pub kind: Kind,
}

/// The shape of document an answer may hold, told from its head.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Xml,
    Json,
}

/// What the bytes read so far say.
#[derive(Debug, PartialEq, Eq)]
pub enum Sniff {
    /// Not an exception document: pass it through.
    Not,
    /// Cannot tell yet: read on (up to [`PEEK_LIMIT`]).
    More,
    Exception(Exception),
}

/// Whether an answer of this status and these headers may be an exception document worth holding
/// back. XML: the types GeoServer sends exceptions as (`application/vnd.ogc.se_xml`, `text/xml`,
/// `application/xml`), any status. JSON only when it is short (a declared length within the peek)
/// or an error status: a GeoJSON answer cannot be told from an exception by its first bytes, and
/// a long one must not wait.
pub fn may_be_exception(status: StatusCode, headers: &HeaderMap) -> Option<Format> {
    let ctype = headers.get(CONTENT_TYPE)?.as_bytes();
    let essence = ctype.split(|&b| b == b';').next().unwrap_or_default();
    let essence = essence.trim_ascii();
    let is = |name: &str| essence.eq_ignore_ascii_case(name.as_bytes());
    if is("application/vnd.ogc.se_xml") || is("text/xml") || is("application/xml") {
        return Some(Format::Xml);
    }
    if is("application/json") || is("application/problem+json") {
        let short = headers
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<usize>().ok())
            .is_some_and(|len| len <= PEEK_LIMIT);
        if short || status.is_client_error() || status.is_server_error() {
            return Some(Format::Json);
        }
    }
    None
}

/// Reads `bytes`, the start of an answer (`ended`: all of it), as far as it can tell.
pub fn sniff(format: Format, status: StatusCode, bytes: &[u8], ended: bool) -> Sniff {
    let sniffed = match format {
        Format::Xml => sniff_xml(bytes, ended),
        Format::Json if ended => json(status, bytes).map_or(Sniff::Not, Sniff::Exception),
        Format::Json => Sniff::More,
    };
    match sniffed {
        Sniff::More if bytes.len() >= PEEK_LIMIT => Sniff::Not,
        other => other,
    }
}

/// XML: the root element decides whether it is an exception; the whole document, what it says
/// (its first `ServiceException` or `Exception` element).
fn sniff_xml(bytes: &[u8], ended: bool) -> Sniff {
    let mut reader = Reader::from_reader(bytes);
    let mut rooted = false;
    let mut first: Option<(String, Option<String>)> = None;
    let mut text = String::new();
    // Elements open inside the first exception element (0: not inside it).
    let mut depth = 0usize;
    loop {
        let event = match reader.read_event() {
            Ok(event) => event,
            // Cut short (read on), or not well-formed (not ours to read).
            Err(_) if !ended => return Sniff::More,
            Err(_) => return Sniff::Not,
        };
        match event {
            Event::Start(e) | Event::Empty(e) if !rooted => {
                let name = e.local_name();
                if !matches!(
                    name.as_ref(),
                    b"ServiceExceptionReport" | b"ExceptionReport"
                ) {
                    return Sniff::Not;
                }
                rooted = true;
            }
            Event::Start(_) if depth > 0 => depth += 1,
            Event::Start(e) if first.is_none() => {
                first = exception_attributes(&e);
                depth = usize::from(first.is_some());
            }
            Event::Empty(e) if first.is_none() => first = exception_attributes(&e),
            Event::End(_) if depth > 0 => depth -= 1,
            Event::Text(t) if depth > 0 => {
                if let Ok(t) = t.decode() {
                    push_collapsed(&mut text, &t);
                }
            }
            Event::CData(t) if depth > 0 => {
                if let Ok(t) = t.decode() {
                    push_collapsed(&mut text, &t);
                }
            }
            Event::Eof if !ended => return Sniff::More,
            Event::Eof if !rooted => return Sniff::Not,
            Event::Eof => {
                let (code, locator) = first.unwrap_or_default();
                return Sniff::Exception(Exception::new(code, locator, text));
            }
            _ => {}
        }
    }
}

/// The code and locator of an exception element (`ServiceException`, `ows:Exception`).
fn exception_attributes(e: &BytesStart<'_>) -> Option<(String, Option<String>)> {
    if !matches!(e.local_name().as_ref(), b"ServiceException" | b"Exception") {
        return None;
    }
    let (mut code, mut locator) = (String::new(), None);
    for attr in e.attributes().flatten() {
        let value = attr
            .normalized_value(XmlVersion::Implicit1_0)
            .map(|v| v.trim().to_string())
            .unwrap_or_default();
        match attr.key.local_name().as_ref() {
            b"code" | b"exceptionCode" => code = value,
            b"locator" => locator = Some(value).filter(|l| !l.is_empty()),
            _ => {}
        }
    }
    Some((code, locator))
}

/// Appends `piece` with runs of whitespace collapsed to one space, up to [`TEXT_LIMIT`] bytes.
fn push_collapsed(text: &mut String, piece: &str) {
    for word in piece.split_whitespace() {
        if text.len() + word.len() + 1 > TEXT_LIMIT {
            return;
        }
        if !text.is_empty() {
            text.push(' ');
        }
        text.push_str(word);
    }
}

/// JSON: WMS's JSON exceptions (`{"exceptions": [{"code", "locator", "text"}]}`) and OGC API
/// problem documents (an error status; `type`/`code`, `title`, `detail`).
fn json(status: StatusCode, bytes: &[u8]) -> Option<Exception> {
    let value: serde_json::Value = serde_json::from_slice(bytes).ok()?;
    let object = value.as_object()?;
    let str_of = |v: Option<&serde_json::Value>| v.and_then(|v| v.as_str()).map(str::to_string);
    if let Some(first) = object.get("exceptions").and_then(|e| e.as_array()?.first()) {
        let first = first.as_object()?;
        let code = str_of(first.get("code")).unwrap_or_default();
        let mut text = String::new();
        push_collapsed(&mut text, &str_of(first.get("text")).unwrap_or_default());
        return Some(Exception::new(code, str_of(first.get("locator")), text));
    }
    if !(status.is_client_error() || status.is_server_error()) {
        return None;
    }
    let code = str_of(object.get("code")).or_else(|| str_of(object.get("type")))?;
    let mut text = String::new();
    for key in ["title", "detail", "description"] {
        push_collapsed(&mut text, &str_of(object.get(key)).unwrap_or_default());
    }
    let mut exception = Exception::new(code, None, text);
    if status == StatusCode::NOT_FOUND {
        // OGC API: a collection (or item) this node does not have.
        exception.kind = Kind::Unknown;
    }
    Some(exception)
}

impl Exception {
    fn new(code: String, locator: Option<String>, text: String) -> Exception {
        let code = if code.is_empty() {
            "NoApplicableCode".to_string()
        } else {
            code
        };
        let kind = kind(&code, locator.as_deref());
        Exception {
            code,
            locator,
            text,
            kind,
        }
    }

    /// The code as a metric label: one of the codes geolb knows, else `other` (a node's text must
    /// not make series without bound).
    pub fn metric_code(&self) -> &'static str {
        const KNOWN: &[&str] = &[
            "NoApplicableCode",
            "LayerNotDefined",
            "StyleNotDefined",
            "NoSuchCoverage",
            "NotFound",
        ];
        KNOWN
            .iter()
            .chain(MISTAKES)
            .find(|c| c.eq_ignore_ascii_case(&self.code))
            .copied()
            .unwrap_or("other")
    }

    /// What the exception is about, for telling one "not known here" from another: the code,
    /// locator and text (which names the layer).
    pub fn subject(&self) -> String {
        format!(
            "{} {} {}",
            self.code,
            self.locator.as_deref().unwrap_or("-"),
            self.text
        )
    }
}

const MISTAKES: &[&str] = &[
    "MissingParameterValue",
    "InvalidParameterValue",
    "InvalidFormat",
    "InvalidCRS",
    "InvalidSRS",
    "InvalidPoint",
    "InvalidDimensionValue",
    "MissingDimensionValue",
    "OperationNotSupported",
    "OptionNotSupported",
    "VersionNegotiationFailed",
    "InvalidUpdateSequence",
    "CurrentUpdateSequence",
    "LayerNotQueryable",
    "InvalidSubsetting",
    "InvalidAxisLabel",
    "InvalidEncodingSyntax",
];

/// What a code (and its locator) says of the node: see [`Kind`]. GeoServer names an unknown layer
/// `LayerNotDefined` (WMS), `InvalidParameterValue` on `typeName(s)` (WFS) or `layer` (WMTS),
/// `NoSuchCoverage` (WCS).
fn kind(code: &str, locator: Option<&str>) -> Kind {
    const UNKNOWN: &[&str] = &["LayerNotDefined", "StyleNotDefined", "NoSuchCoverage"];
    const NAMING: &[&str] = &[
        "typeName",
        "typeNames",
        "layer",
        "layers",
        "query_layers",
        "styles",
        "coverage",
        "coverageId",
        "identifier",
    ];

    let any = |list: &[&str], word: &str| list.iter().any(|w| w.eq_ignore_ascii_case(word));
    if any(UNKNOWN, code)
        || (code.eq_ignore_ascii_case("InvalidParameterValue")
            && locator.is_some_and(|l| any(NAMING, l)))
    {
        Kind::Unknown
    } else if any(MISTAKES, code) {
        Kind::Mistake
    } else {
        Kind::Failure
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    const WMS_111: &str = "<?xml version=\"1.0\" encoding=\"UTF-8\" standalone=\"no\"?>\n\
        <!DOCTYPE ServiceExceptionReport SYSTEM \"http://localhost:8080/geoserver/schemas/wms/1.1.1/WMS_exception_1_1_1.dtd\"> \
        <ServiceExceptionReport version=\"1.1.1\" >   <ServiceException code=\"LayerNotDefined\" locator=\"layers\">\n\
        Could not find layer topp:roads\n</ServiceException></ServiceExceptionReport>";
    const WFS_20: &str = "<?xml version=\"1.0\" encoding=\"UTF-8\"?><ows:ExceptionReport xmlns:xs=\"http://www.w3.org/2001/XMLSchema\" \
        xmlns:ows=\"http://www.opengis.net/ows/1.1\" version=\"2.0.0\"><ows:Exception exceptionCode=\"InvalidParameterValue\" \
        locator=\"typeName\"><ows:ExceptionText>Feature type topp:roads unknown</ows:ExceptionText></ows:Exception></ows:ExceptionReport>";
    const OOM: &str = "<ServiceExceptionReport version=\"1.3.0\" xmlns=\"http://www.opengis.net/ogc\">\
        <ServiceException code=\"NoApplicableCode\">java.lang.OutOfMemoryError: Java heap space</ServiceException>\
        </ServiceExceptionReport>";

    fn whole(doc: &str) -> Sniff {
        sniff(Format::Xml, StatusCode::OK, doc.as_bytes(), true)
    }

    fn exception(sniffed: Sniff) -> Exception {
        match sniffed {
            Sniff::Exception(e) => e,
            other => panic!("not an exception: {other:?}"),
        }
    }

    #[test]
    fn reads_geoserver_documents() {
        let e = exception(whole(WMS_111));
        assert_eq!(e.code, "LayerNotDefined");
        assert_eq!(e.locator.as_deref(), Some("layers"));
        assert_eq!(e.text, "Could not find layer topp:roads");
        assert_eq!(e.kind, Kind::Unknown);
        let e = exception(whole(WFS_20));
        assert_eq!(
            (e.code.as_str(), e.kind),
            ("InvalidParameterValue", Kind::Unknown)
        );
        assert_eq!(e.text, "Feature type topp:roads unknown");
        let e = exception(whole(OOM));
        assert_eq!(
            (e.code.as_str(), e.kind),
            ("NoApplicableCode", Kind::Failure)
        );
        let e = exception(whole(
            "<ExceptionReport><Exception exceptionCode=\"InvalidCRS\"/></ExceptionReport>",
        ));
        assert_eq!(e.kind, Kind::Mistake);
        let wcs = "<ows:ExceptionReport xmlns:ows=\"http://www.opengis.net/ows/2.0\"><ows:Exception exceptionCode=\"NoSuchCoverage\" locator=\"coverageId\"/></ows:ExceptionReport>";
        assert_eq!(exception(whole(wcs)).kind, Kind::Unknown);
        // An other parameter's bad value is the client's mistake.
        let bbox = WFS_20.replace("typeName", "bbox");
        assert_eq!(exception(whole(&bbox)).kind, Kind::Mistake);
        // No code: OGC's default.
        let bare = "<ServiceExceptionReport><ServiceException>boom</ServiceException></ServiceExceptionReport>";
        let e = exception(whole(bare));
        assert_eq!(
            (e.code.as_str(), e.text.as_str()),
            ("NoApplicableCode", "boom")
        );
    }

    #[test]
    fn other_documents_pass_after_their_root() {
        let caps = "<?xml version=\"1.0\"?><WMS_Capabilities version=\"1.3.0\"><Service>";
        assert_eq!(
            sniff(Format::Xml, StatusCode::OK, caps.as_bytes(), false),
            Sniff::Not
        );
        // The root is not known yet: read on.
        let cut = &WMS_111.as_bytes()[..60];
        assert_eq!(sniff(Format::Xml, StatusCode::OK, cut, false), Sniff::More);
        // An exception root, but not the whole document yet.
        let cut = &WMS_111.as_bytes()[..WMS_111.len() - 20];
        assert_eq!(sniff(Format::Xml, StatusCode::OK, cut, false), Sniff::More);
        // Cut, and ended: not well-formed, passed through.
        assert_eq!(sniff(Format::Xml, StatusCode::OK, cut, true), Sniff::Not);
        // Too long to hold: passed through.
        let long = format!(
            "<ServiceExceptionReport><ServiceException>{}",
            "x".repeat(PEEK_LIMIT)
        );
        assert_eq!(
            sniff(Format::Xml, StatusCode::OK, long.as_bytes(), false),
            Sniff::Not
        );
        assert_eq!(sniff(Format::Xml, StatusCode::OK, b"", true), Sniff::Not);
        assert_eq!(whole("<wfs:FeatureCollection/>"), Sniff::Not);
    }

    #[test]
    fn json_exceptions_and_problems() {
        let wms = br#"{"version":"1.3.0","exceptions":[{"code":"LayerNotDefined","locator":"layers","text":"Could not find layer a:b"}]}"#;
        let e = exception(sniff(Format::Json, StatusCode::OK, wms, true));
        assert_eq!(
            (e.code.as_str(), e.kind),
            ("LayerNotDefined", Kind::Unknown)
        );
        assert_eq!(sniff(Format::Json, StatusCode::OK, wms, false), Sniff::More);
        let problem = br#"{"type":"NotFound","title":"Collection not found: a:b"}"#;
        let e = exception(sniff(Format::Json, StatusCode::NOT_FOUND, problem, true));
        assert_eq!(e.kind, Kind::Unknown);
        assert_eq!(e.metric_code(), "NotFound");
        let failed = sniff(
            Format::Json,
            StatusCode::INTERNAL_SERVER_ERROR,
            problem,
            true,
        );
        assert_eq!(exception(failed).kind, Kind::Failure);
        let geojson = br#"{"type":"FeatureCollection","features":[]}"#;
        assert_eq!(
            sniff(Format::Json, StatusCode::OK, geojson, true),
            Sniff::Not
        );
    }

    #[test]
    fn only_exception_types_are_held() {
        let mut h = HeaderMap::new();
        let ok = StatusCode::OK;
        assert_eq!(may_be_exception(ok, &h), None);
        h.insert(CONTENT_TYPE, HeaderValue::from_static("image/png"));
        assert_eq!(may_be_exception(ok, &h), None);
        for xml in [
            "application/vnd.ogc.se_xml",
            "text/xml; subtype=gml/3.1.1",
            "Application/XML",
        ] {
            h.insert(CONTENT_TYPE, HeaderValue::from_static(xml));
            assert_eq!(may_be_exception(ok, &h), Some(Format::Xml), "{xml}");
        }
        h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        assert_eq!(may_be_exception(ok, &h), None, "a long GeoJSON is not held");
        assert_eq!(
            may_be_exception(StatusCode::NOT_FOUND, &h),
            Some(Format::Json)
        );
        h.insert(CONTENT_LENGTH, HeaderValue::from_static("120"));
        assert_eq!(may_be_exception(ok, &h), Some(Format::Json));
    }
}
