//! OGC requests that name layers, answered like GeoServer: the layer's data when the node knows
//! it, else GeoServer's own exception document for that service and version.

use bytes::Bytes;
use http::{StatusCode, Uri};

use super::{query_param, PNG_1X1};

/// What a node answers, before it is made a response.
#[derive(Debug)]
pub(super) struct Answer {
    pub(super) status: StatusCode,
    pub(super) ctype: &'static str,
    pub(super) body: Bytes,
    /// An exception document (or an exception drawn as an image).
    pub(super) exception: bool,
}

impl Answer {
    fn data(ctype: &'static str, body: impl Into<Bytes>) -> Answer {
        Answer {
            status: StatusCode::OK,
            ctype,
            body: body.into(),
            exception: false,
        }
    }

    fn exception(status: StatusCode, ctype: &'static str, body: impl Into<Bytes>) -> Answer {
        Answer {
            status,
            ctype,
            body: body.into(),
            exception: true,
        }
    }
}

/// WMS 1.3.0's exception report, as a sick node sends it.
pub(super) fn wms_exception_1_3_0(code: &str, locator: Option<&str>, text: &str) -> String {
    let locator = locator.map_or(String::new(), |l| format!(" locator=\"{}\"", escape(l)));
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><ServiceExceptionReport version=\"1.3.0\" \
         xmlns=\"http://www.opengis.net/ogc\" xmlns:xsi=\"http://www.w3.org/2001/XMLSchema-instance\" \
         xsi:schemaLocation=\"http://www.opengis.net/ogc \
         http://schemas.opengis.net/wms/1.3.0/exceptions_1_3_0.xsd\">\
         <ServiceException code=\"{}\"{locator}>{}</ServiceException></ServiceExceptionReport>",
        escape(code),
        escape(text)
    )
}

fn wms_exception_1_1_1(code: &str, locator: &str, text: &str) -> String {
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><!DOCTYPE ServiceExceptionReport SYSTEM \
         \"http://schemas.opengis.net/wms/1.1.1/WMS_exception_1_1_1.dtd\">\
         <ServiceExceptionReport version=\"1.1.1\"><ServiceException code=\"{}\" locator=\"{}\">{}\
         </ServiceException></ServiceExceptionReport>",
        escape(code),
        escape(locator),
        escape(text)
    )
}

/// An OWS exception report: `ows` 1.1 (`version` 2.0.0), 1.0 (`version` 1.0.0) or 2.0.
fn ows_exception(ows: &str, version: &str, code: &str, locator: &str, text: &str) -> String {
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><ows:ExceptionReport \
         xmlns:ows=\"{ows}\" version=\"{version}\"><ows:Exception exceptionCode=\"{}\" \
         locator=\"{}\"><ows:ExceptionText>{}</ows:ExceptionText></ows:Exception>\
         </ows:ExceptionReport>",
        escape(code),
        escape(locator),
        escape(text)
    )
}

const OWS_1_1: &str = "http://www.opengis.net/ows/1.1";
const OWS_1_0: &str = "http://www.opengis.net/ows";
const OWS_2_0: &str = "http://www.opengis.net/ows/2.0";
/// A tiny little-endian TIFF header: enough for a client to see a GeoTIFF came back.
const TIFF: &[u8] = b"II*\x00\x08\x00\x00\x00\x00\x00\x00\x00\x00\x00";

/// The answer to a request that names layers, or `None` when it names none (the caller answers
/// it as any other request). `knows` tells whether the node knows a layer now.
pub(super) fn answer(uri: &Uri, knows: &dyn Fn(&str) -> bool) -> Option<Answer> {
    if let Some(answer) = ogc_api(uri.path(), knows) {
        return Some(answer);
    }
    let request = query_param(uri, "request").unwrap_or_default();
    let is = |name: &str| request.eq_ignore_ascii_case(name);
    let service = query_param(uri, "service").unwrap_or_default();
    let path = uri.path().to_ascii_lowercase();
    let wmts = service.eq_ignore_ascii_case("WMTS") || path.contains("/gwc/service/wmts");
    if wmts || is("GetTile") {
        return wmts_answer(uri, &request, knows);
    }
    if is("GetMap") || is("GetFeatureInfo") || is("GetLegendGraphic") {
        return wms_answer(uri, &request, knows);
    }
    if is("GetFeature") || is("DescribeFeatureType") || is("GetPropertyValue") {
        return wfs_answer(uri, &request, knows);
    }
    if is("GetCoverage") || is("DescribeCoverage") {
        return wcs_answer(uri, &request, knows);
    }
    None
}

/// The layers a parameter names (comma-separated), or `None` when it is absent or empty.
fn names(uri: &Uri, keys: &[&str]) -> Option<Vec<String>> {
    let value = keys.iter().find_map(|key| query_param(uri, key))?;
    let names: Vec<String> = value
        .split(',')
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .map(String::from)
        .collect();
    (!names.is_empty()).then_some(names)
}

fn wms_answer(uri: &Uri, request: &str, knows: &dyn Fn(&str) -> bool) -> Option<Answer> {
    let legend = request.eq_ignore_ascii_case("GetLegendGraphic");
    let info = request.eq_ignore_ascii_case("GetFeatureInfo");
    let keys: &[&str] = match () {
        () if legend => &["layer"],
        () if info => &["query_layers", "layers"],
        () => &["layers"],
    };
    let layers = names(uri, keys)?;
    let Some(unknown) = layers.iter().find(|l| !knows(l)) else {
        return Some(if info {
            let text = format!(
                "Results for FeatureType '{}':\n--------------------------------------------\n",
                layers.join(",")
            );
            Answer::data("text/plain", text)
        } else {
            Answer::data("image/png", PNG_1X1)
        });
    };
    let text = format!("Could not find layer {unknown}");
    let exceptions = query_param(uri, "exceptions").unwrap_or_default();
    let drawn = [
        "INIMAGE",
        "BLANK",
        "application/vnd.ogc.se_inimage",
        "application/vnd.ogc.se_blank",
    ];
    if !info && drawn.iter().any(|d| exceptions.eq_ignore_ascii_case(d)) {
        return Some(Answer::exception(StatusCode::OK, "image/png", PNG_1X1));
    }
    if exceptions.eq_ignore_ascii_case("application/json") {
        let json = serde_json::json!({
            "version": "1.3.0",
            "exceptions": [{ "code": "LayerNotDefined", "locator": "layers", "text": text }]
        });
        let json = json.to_string();
        return Some(Answer::exception(StatusCode::OK, "application/json", json));
    }
    let version = query_param(uri, "version").unwrap_or_default();
    Some(
        if version.starts_with("1.1") || version.starts_with("1.0") {
            let xml = wms_exception_1_1_1("LayerNotDefined", "layers", &text);
            Answer::exception(StatusCode::OK, "application/vnd.ogc.se_xml", xml)
        } else {
            let xml = wms_exception_1_3_0("LayerNotDefined", Some("layers"), &text);
            Answer::exception(StatusCode::OK, "text/xml", xml)
        },
    )
}

fn wfs_answer(uri: &Uri, request: &str, knows: &dyn Fn(&str) -> bool) -> Option<Answer> {
    let layers = names(uri, &["typenames", "typename"])?;
    let Some(unknown) = layers.iter().find(|l| !knows(l)) else {
        return Some(if request.eq_ignore_ascii_case("DescribeFeatureType") {
            let elements: String = layers
                .iter()
                .map(|l| {
                    let local = l.rsplit(':').next().unwrap_or(l);
                    format!(
                        "<xsd:element name=\"{}\" type=\"{}Type\" substitutionGroup=\"gml:_Feature\"/>",
                        escape(local),
                        escape(l)
                    )
                })
                .collect();
            let xsd = format!(
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?><xsd:schema \
                 xmlns:xsd=\"http://www.w3.org/2001/XMLSchema\" xmlns:gml=\"http://www.opengis.net/gml\" \
                 elementFormDefault=\"qualified\">{elements}</xsd:schema>"
            );
            Answer::data("application/xml", xsd)
        } else {
            let features: Vec<serde_json::Value> = layers
                .iter()
                .map(|l| {
                    let local = l.rsplit(':').next().unwrap_or(l);
                    serde_json::json!({
                        "type": "Feature", "id": format!("{local}.1"), "geometry": null,
                        "properties": { "layer": l }
                    })
                })
                .collect();
            let json = serde_json::json!({
                "type": "FeatureCollection", "features": features,
                "numberMatched": layers.len(), "numberReturned": layers.len()
            });
            Answer::data("application/json", json.to_string())
        });
    };
    let text = format!("Feature type {unknown} unknown");
    let version = query_param(uri, "version").unwrap_or_default();
    Some(if version.starts_with("1.") {
        let xml = ows_exception(OWS_1_0, "1.0.0", "InvalidParameterValue", "typeName", &text);
        Answer::exception(StatusCode::OK, "text/xml", xml)
    } else {
        let xml = ows_exception(OWS_1_1, "2.0.0", "InvalidParameterValue", "typeName", &text);
        Answer::exception(StatusCode::BAD_REQUEST, "application/xml", xml)
    })
}

fn wmts_answer(uri: &Uri, request: &str, knows: &dyn Fn(&str) -> bool) -> Option<Answer> {
    let layers = names(uri, &["layer"])?;
    let Some(unknown) = layers.iter().find(|l| !knows(l)) else {
        return Some(if request.eq_ignore_ascii_case("GetFeatureInfo") {
            Answer::data("text/plain", format!("Results for layer '{}'\n", layers[0]))
        } else {
            Answer::data("image/png", PNG_1X1)
        });
    };
    let text = format!("Unknown layer: {unknown}");
    let xml = ows_exception(OWS_1_1, "1.1.0", "InvalidParameterValue", "layer", &text);
    Some(Answer::exception(StatusCode::BAD_REQUEST, "text/xml", xml))
}

fn wcs_answer(uri: &Uri, request: &str, knows: &dyn Fn(&str) -> bool) -> Option<Answer> {
    let ids = names(uri, &["coverageid", "coverage", "identifier"])?;
    // WCS 2.0 writes `ws:name` as `ws__name`.
    let layer = |id: &str| match id.split_once("__") {
        Some((ws, name)) if !id.contains(':') => format!("{ws}:{name}"),
        _ => id.to_string(),
    };
    let Some(unknown) = ids.iter().find(|id| !knows(&layer(id))) else {
        return Some(if request.eq_ignore_ascii_case("DescribeCoverage") {
            let ids: String = ids
                .iter()
                .map(|id| format!("<wcs:CoverageDescription><wcs:CoverageId>{}</wcs:CoverageId></wcs:CoverageDescription>", escape(id)))
                .collect();
            let xml = format!(
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?><wcs:CoverageDescriptions \
                 xmlns:wcs=\"http://www.opengis.net/wcs/2.0\">{ids}</wcs:CoverageDescriptions>"
            );
            Answer::data("application/xml", xml)
        } else {
            Answer::data("image/tiff", TIFF)
        });
    };
    let text = format!("Could not find coverage {unknown}");
    let xml = ows_exception(OWS_2_0, "2.0.1", "NoSuchCoverage", "coverageId", &text);
    Some(Answer::exception(StatusCode::OK, "application/xml", xml))
}

/// OGC API: `.../ogc/{api}/v1/collections/{id}[/items[/...]]`.
fn ogc_api(path: &str, knows: &dyn Fn(&str) -> bool) -> Option<Answer> {
    let (_, after) = path.split_once("/ogc/")?;
    let mut segments = after.split('/').skip_while(|s| *s != "collections").skip(1);
    let id = percent_decode(segments.next().filter(|s| !s.is_empty())?);
    let rest: Vec<&str> = segments.filter(|s| !s.is_empty()).collect();
    if !knows(&id) {
        let json = serde_json::json!({
            "code": "NotFound", "description": format!("Collection not found: {id}")
        });
        let json = json.to_string();
        return Some(Answer::exception(
            StatusCode::NOT_FOUND,
            "application/json",
            json,
        ));
    }
    Some(match rest.as_slice() {
        [] => {
            let json = serde_json::json!({ "id": id, "title": id, "links": [] });
            Answer::data("application/json", json.to_string())
        }
        ["items", ..] => Answer::data(
            "application/geo+json",
            "{\"type\":\"FeatureCollection\",\"features\":[]}",
        ),
        _ => return None,
    })
}

/// `%XX` escapes decoded (a path's, so `+` stays); invalid ones are kept as they are.
pub(super) fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes.get(i + 1..i + 3).and_then(|h| {
            let digits = h.iter().all(u8::is_ascii_hexdigit);
            u8::from_str_radix(std::str::from_utf8(h).ok()?, 16)
                .ok()
                .filter(|_| digits)
        });
        match (bytes[i], hex) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Text made safe for XML content and attribute values.
pub(super) fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}
