//! GeoServer's REST API as far as the simulated cluster needs it: publishing and removing layers,
//! and the catalog reload's credentials.

use base64::Engine as _;
use quick_xml::events::Event;
use quick_xml::Reader;

use super::ogc::percent_decode;

/// The path's segments after its `rest` segment, decoded, a trailing `.xml`/`.json` dropped.
fn rest_segments(path: &str) -> Option<Vec<String>> {
    let mut segments = path.split('/').filter(|s| !s.is_empty());
    segments.by_ref().find(|s| *s == "rest")?;
    let mut segments: Vec<String> = segments.map(percent_decode).collect();
    if let Some(last) = segments.last_mut() {
        for suffix in [".xml", ".json"] {
            if let Some(stem) = last.strip_suffix(suffix) {
                *last = stem.to_string();
            }
        }
    }
    Some(segments)
}

/// The workspace a `POST` to this path publishes into:
/// `.../rest/workspaces/{ws}/datastores/{ds}/featuretypes` or
/// `.../rest/workspaces/{ws}/coveragestores/{cs}/coverages`.
pub(super) fn publish_workspace(path: &str) -> Option<String> {
    let segments = rest_segments(path)?;
    match segments.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        ["workspaces", ws, "datastores", _, "featuretypes"]
        | ["workspaces", ws, "coveragestores", _, "coverages"] => Some(ws.to_string()),
        _ => None,
    }
}

/// The layer a `DELETE` to this path removes: `.../rest/layers/{ws:N}`,
/// `.../rest/workspaces/{ws}/layers/{N}`, or the feature type or coverage itself.
pub(super) fn removed_layer(path: &str) -> Option<String> {
    let segments = rest_segments(path)?;
    match segments.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        ["layers", layer] => Some(layer.to_string()),
        ["workspaces", ws, "layers", name]
        | ["workspaces", ws, "datastores", _, "featuretypes", name]
        | ["workspaces", ws, "coveragestores", _, "coverages", name] => {
            Some(format!("{ws}:{name}"))
        }
        _ => None,
    }
}

/// `.../rest/reload`.
pub(super) fn is_reload(path: &str) -> bool {
    rest_segments(path).is_some_and(|s| s == ["reload"])
}

/// The name a publish body gives: JSON `{"featureType": {"name": N}}` (or `coverage`), or XML
/// `<featureType><name>N</name>...` (or `<coverage>`): the root's `name` child.
pub(super) fn published_name(body: &[u8]) -> Option<String> {
    let name = if body.trim_ascii_start().starts_with(b"{") {
        let value: serde_json::Value = serde_json::from_slice(body).ok()?;
        let object = value.get("featureType").or_else(|| value.get("coverage"))?;
        object.get("name")?.as_str()?.trim().to_string()
    } else {
        xml_name(body)?
    };
    (!name.is_empty()).then_some(name)
}

fn xml_name(body: &[u8]) -> Option<String> {
    let mut reader = Reader::from_reader(body);
    let mut depth = 0usize;
    let mut in_name = false;
    let mut name = String::new();
    loop {
        match reader.read_event().ok()? {
            Event::Start(e) => {
                depth += 1;
                let local = e.local_name();
                if depth == 1 && !matches!(local.as_ref(), b"featureType" | b"coverage") {
                    return None;
                }
                in_name = depth == 2 && local.as_ref() == b"name";
            }
            Event::Text(t) if in_name => name.push_str(&t.decode().ok()?),
            Event::GeneralRef(r) if in_name => {
                let entity = r.decode().ok()?;
                name.push_str(match entity.as_ref() {
                    "amp" => "&",
                    "lt" => "<",
                    "gt" => ">",
                    "quot" => "\"",
                    "apos" => "'",
                    _ => "",
                });
            }
            Event::End(_) if in_name => return Some(name.trim().to_string()),
            Event::End(_) => depth = depth.saturating_sub(1),
            Event::Eof => return None,
            _ => {}
        }
    }
}

/// Whether an `Authorization` header carries these Basic credentials.
pub(super) fn basic_matches(header: Option<&str>, user: &str, password: &str) -> bool {
    let Some((scheme, token)) = header.and_then(|h| h.trim().split_once(' ')) else {
        return false;
    };
    if !scheme.eq_ignore_ascii_case("basic") {
        return false;
    }
    let decoded = base64::engine::general_purpose::STANDARD.decode(token.trim());
    decoded.is_ok_and(|d| d == format!("{user}:{password}").as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_and_names() {
        let p = "/geoserver/rest/workspaces/demo/datastores/ds/featuretypes";
        assert_eq!(publish_workspace(p).as_deref(), Some("demo"));
        let p = "/rest/workspaces/demo/coveragestores/cs/coverages.xml";
        assert_eq!(publish_workspace(p).as_deref(), Some("demo"));
        assert_eq!(publish_workspace("/geoserver/rest/layers"), None);
        let removed = removed_layer("/geoserver/rest/layers/demo%3Aroads.xml");
        assert_eq!(removed.as_deref(), Some("demo:roads"));
        let removed = removed_layer("/geoserver/rest/workspaces/demo/layers/roads");
        assert_eq!(removed.as_deref(), Some("demo:roads"));
        assert_eq!(removed_layer("/geoserver/rest/x"), None);
        assert!(is_reload("/geoserver/rest/reload"));
        assert!(!is_reload("/geoserver/rest/reload/more"));
        let xml = b"<featureType><name>roads</name><nativeName>x</nativeName></featureType>";
        assert_eq!(published_name(xml).as_deref(), Some("roads"));
        let xml = b"<?xml version=\"1.0\"?><coverage><store><name>s</name></store><name> dem </name></coverage>";
        assert_eq!(published_name(xml).as_deref(), Some("dem"));
        assert_eq!(
            published_name(b"<workspace><name>w</name></workspace>"),
            None
        );
        let json = br#" {"featureType":{"name":"rivers"}}"#;
        assert_eq!(published_name(json).as_deref(), Some("rivers"));
        let basic = "Basic YWRtaW46Z2Vvc2VydmVy"; // admin:geoserver
        assert!(basic_matches(Some(basic), "admin", "geoserver"));
        assert!(!basic_matches(Some(basic), "admin", "other"));
        assert!(!basic_matches(None, "admin", "geoserver"));
    }
}
