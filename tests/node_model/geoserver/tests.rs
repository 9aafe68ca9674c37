//! Unit tests of the whole GeoServer half, on hand-built `ServletView`s.

use super::*;

/// Minimal stand-in for the container half: `uri` is the raw request-target, context
/// "/geoserver"; parameters from the query (and, for an exact form POST, from the body) with
/// UTF-8 form decoding, grouped by name in first-seen order.
fn view(method: &str, uri: &str, ct: Option<&str>, body: &[u8]) -> ServletView {
    let (path, query) = match uri.find('?') {
        Some(i) => (&uri[..i], Some(&uri[i + 1..])),
        None => (uri, None),
    };
    let mut params: Vec<(String, Vec<String>)> = Vec::new();
    let mut add = |s: &str| {
        for pair in s.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = match pair.find('=') {
                Some(i) => (&pair[..i], &pair[i + 1..]),
                None => (pair, ""),
            };
            let (k, v) = (pct(k, true), pct(v, true));
            match params.iter_mut().find(|(n, _)| *n == k) {
                Some(e) => e.1.push(v),
                None => params.push((k, vec![v])),
            }
        }
    };
    if let Some(q) = query {
        add(q);
    }
    let mut body = body.to_vec();
    if method == "POST" && ct == Some("application/x-www-form-urlencoded") {
        add(&String::from_utf8_lossy(&body));
        body.clear();
    }
    let no_params: String = path
        .split('/')
        .map(|seg| seg.split(';').next().unwrap())
        .collect::<Vec<_>>()
        .join("/");
    let decoded = pct(&no_params, false);
    ServletView {
        method: method.into(),
        request_uri: path.into(),
        context_path: "/geoserver".into(),
        path_in_context: decoded.get("/geoserver".len()..).unwrap_or("").to_string(),
        query_string: query.map(str::to_string),
        parameters: params,
        content_type: ct.map(str::to_string),
        character_encoding: Some("UTF-8".into()),
        headers: vec![],
        body,
    }
}

fn pct(s: &str, plus: bool) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            match std::str::from_utf8(&b[i + 1..i + 3])
                .ok()
                .and_then(|h| u8::from_str_radix(h, 16).ok())
            {
                Some(x) => {
                    out.push(x);
                    i += 3;
                }
                None => {
                    out.push(b'%');
                    i += 1;
                }
            }
        } else {
            out.push(if plus && b[i] == b'+' { b' ' } else { b[i] });
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn get(uri: &str) -> NodeVerdict {
    geoserver_read(&view("GET", uri, None, b""))
}

fn post_xml(uri: &str, body: &str) -> NodeVerdict {
    geoserver_read(&view("POST", uri, Some("text/xml"), body.as_bytes()))
}

#[track_caller]
fn master(v: NodeVerdict) {
    assert!(v.master, "expected master, got: {}", v.why);
}

#[track_caller]
fn any(v: NodeVerdict) {
    assert!(!v.master, "expected a read, got: {}", v.why);
}

const TX: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<wfs:Transaction service="WFS" version="1.1.0" xmlns:wfs="http://www.opengis.net/wfs"><wfs:Delete typeName="a:b"/></wfs:Transaction>"#;
const GF: &str = r#"<wfs:GetFeature service="WFS" version="1.1.0" xmlns:wfs="http://www.opengis.net/wfs"><wfs:Query typeName="a:b"/></wfs:GetFeature>"#;

#[test]
fn kvp_operations() {
    any(get("/geoserver/wfs?request=GetFeature&typeName=a:b"));
    master(get("/geoserver/wfs?request=Transaction"));
    master(get("/geoserver/ows?service=WFS&request=transaction"));
    // KVP service beats the path
    master(get("/geoserver/wms?service=WFS&request=Transaction"));
    master(get("/geoserver/kml?service=wfs&request=LockFeature"));
    // KvpUtils.normalize: key lower->upper-cased, Java trim of values, equalsIgnoreCase ops
    master(get("/geoserver/wfs?reque%C5%BFt=Transaction"));
    master(get("/geoserver/wfs?reque%EF%AC%86=Transaction"));
    master(get("/geoserver/wfs?request=%0BTransaction%00"));
    master(get("/geoserver/wfs?request=Tran%C5%BFaction"));
    master(get("/geoserver/wfs?request=LOC%E2%84%AAFEATURE"));
    master(get("/geoserver/wfs?service=x/WFS&request=Transaction"));
    any(get(
        "/geoserver/wfs?service=WFS&version=abc&request=Transaction",
    ));
    any(get(
        "/geoserver/wfs?request=CreateStoredQuery&version=1.1.0",
    ));
    master(get(
        "/geoserver/wfs?request=CreateStoredQuery&version=2.0.0",
    ));
    master(get("/geoserver/wfs?request=DropStoredQuery"));
    any(get("/geoserver/wfs?request=GetPropertyValue"));
    any(get("/geoserver/wfs?request=ReleaseLoc"));
}

#[test]
fn kvp_duplicates_and_lock_id() {
    // the last raw name wins in KvpMap; differing values of one name: getSingleValue throws
    master(get("/geoserver/wfs?request=GetFeature&REQUEST=Transaction"));
    any(get("/geoserver/wfs?request=Transaction&REQUEST=GetFeature"));
    any(get("/geoserver/wfs?request=GetFeature&request=getfeature"));
    any(get("/geoserver/wfs?request=Transaction&request=GetFeature"));
    any(get(
        "/geoserver/wfs?request=GetFeature&request=GetFeature%20",
    ));
    any(get(
        "/geoserver/wfs?service=WFS&service=WMS&request=Transaction",
    ));
    master(get("/geoserver/wms?request=GetMap&lockId=1"));
    master(get("/geoserver/wfs?request=GetFeature&LOC%E2%84%AAID=1"));
    master(get("/geoserver/wfs?request=ReleaseLock&lockId=x"));
    master(get("/geoserver/wfs?request=ReleaseLock"));
}

#[test]
fn paths() {
    // legacy /{svc}/{Request}: only when neither KVP nor body name a request
    master(get("/geoserver/wfs/Transaction"));
    any(get("/geoserver/wfs/Transaction?service=WFS"));
    any(get("/geoserver/wfs/Transaction?request=GetFeature"));
    master(get("/geoserver/wfs/GetFeature?request=Transaction"));
    master(get("/geoserver/wfs/?request=Transaction"));
    any(get("/geoserver/wfs/x/?request=Transaction"));
    master(get("/geoserver/ows/wfs?request=Transaction"));
    master(get("/geoserver/ows/a/b/wfs?request=Transaction"));
    // servlet paths are case-sensitive; the Dispatcher reads the RAW URI
    any(get("/geoserver/WFS?request=Transaction"));
    any(get("/geoserver/%77fs?request=Transaction"));
    master(get("/geoserver/%77fs?service=WFS&request=Transaction"));
    // virtual services
    master(get("/geoserver/topp/wfs?request=Transaction"));
    master(get(
        "/geoserver/topp/states/wms?service=WFS&request=Transaction",
    ));
    master(get("/geoserver/topp/wfs/Transaction"));
    any(get("/geoserver/topp/states/wfs/Transaction"));
    // path areas
    master(get("/geoserver/rest/workspaces.json"));
    master(get("/geoserver/rest"));
    master(get("/geoserver/web/"));
    master(get(
        "/geoserver/web/wicket/bookmarkable/org.geoserver.web.GeoServerLoginPage",
    ));
    master(get("/geoserver/"));
    master(get("/geoserver/index.html"));
    master(geoserver_read(&view(
        "POST",
        "/geoserver/j_spring_security_check",
        Some("application/x-www-form-urlencoded"),
        b"username=a&password=b",
    )));
    master(get("/geoserver/j_spring_security_logout"));
    master(get("/geoserver/TestWfsPost"));
    master(get("/geoserver/gwc"));
    master(get("/geoserver/gwc/demo/topp:states"));
    master(get("/geoserver/gwc/rest/seed/topp:states.json"));
    master(get("/geoserver/topp/gwc/rest/web/x"));
    // RESTful WMTS tiles are reads (policy, as /gwc/service).
    any(get("/geoserver/topp/gwc/rest/wmts/x"));
    any(get(
        "/geoserver/gwc/rest/wmts/topp:states/default/EPSG:4326/EPSG:4326:0/0/0?format=image/png",
    ));
    any(get("/geoserver/schemas/wfs/1.1.0/wfs.xsd"));
    any(get("/geoserver/www/x.html"));
    any(get("/geoserver/openlayers3/ol.js"));
    any(get("/geoserver/styles/x.png"));
    any(get("/geoserver/wmts?request=GetTile"));
    any(get("/geoserver/nothing"));
    any(get("/geoserver/ogc/features/v1/collections"));
    master(geoserver_read(&view(
        "POST",
        "/geoserver/ogc/styles/v1/styles",
        Some("application/vnd.ogc.sld+xml"),
        b"<a/>",
    )));
    master(geoserver_read(&view(
        "DELETE",
        "/geoserver/topp/ogc/styles/v1/styles/x",
        None,
        b"",
    )));
}

#[test]
fn firewall_and_methods() {
    any(get("/geoserver/wfs;jsessionid=1?request=Transaction"));
    any(get("/geoserver/wfs%3b?request=Transaction"));
    any(get("/geoserver/ows/%2e%2e/wfs?request=Transaction"));
    any(get("/geoserver/wfs/%2E?request=Transaction"));
    any(geoserver_read(&view(
        "get",
        "/geoserver/wfs?request=Transaction",
        None,
        b"",
    )));
    any(geoserver_read(&view("TRACE", "/geoserver/rest", None, b"")));
    any(geoserver_read(&view(
        "PUT",
        "/geoserver/wfs?request=Transaction",
        Some("text/xml"),
        TX.as_bytes(),
    )));
    any(geoserver_read(&view(
        "OPTIONS",
        "/geoserver/wfs?request=Transaction",
        None,
        b"",
    )));
    master(geoserver_read(&view(
        "HEAD",
        "/geoserver/wfs?request=Transaction",
        None,
        b"",
    )));
    master(geoserver_read(&view(
        "OPTIONS",
        "/geoserver/rest/layers",
        None,
        b"",
    )));
    master(geoserver_read(&view(
        "PUT",
        "/geoserver/rest/layers/x",
        Some("text/xml"),
        b"<layer/>",
    )));
    let mut v = view("GET", "/geoserver/wfs?request=Transaction", None, b"");
    v.character_encoding = Some("utf 8".into());
    any(geoserver_read(&v));
}

#[test]
fn xml_bodies() {
    master(post_xml("/geoserver/wfs", TX));
    any(post_xml("/geoserver/wfs", GF));
    // body wins over KVP and path
    master(post_xml("/geoserver/wfs?request=GetFeature", TX));
    any(post_xml("/geoserver/wfs?request=Transaction", GF));
    master(post_xml("/geoserver/wfs/GetFeature", TX));
    master(post_xml("/geoserver/wms", TX));
    master(post_xml("/geoserver/ows", TX));
    // no service attribute: path/KVP service; namespace picks the version
    master(post_xml(
        "/geoserver/wfs",
        r#"<Transaction xmlns="http://www.opengis.net/wfs/2.0"/>"#,
    ));
    master(post_xml("/geoserver/ows?service=WFS", "<Transaction/>"));
    any(post_xml("/geoserver/ows", "<Transaction/>")); // refused ("No service: ows")
                                                       // body operation unknown in the service -> KVP request
    master(post_xml(
        "/geoserver/wfs?request=Transaction&service=WFS",
        "<StyledLayerDescriptor/>",
    ));
    any(post_xml(
        "/geoserver/wms?request=GetMap",
        "<StyledLayerDescriptor/>",
    ));
    any(post_xml("/geoserver/wms", "<StyledLayerDescriptor/>")); // OperationNotSupported
                                                                 // service attribute of the wrong service: OperationNotSupported
    any(post_xml(
        "/geoserver/wfs",
        r#"<Transaction service="WMS"/>"#,
    ));
    // prolog skipping like Xerces
    master(post_xml(
        "/geoserver/wfs?request=GetFeature",
        "<?xml version='1.0'?><!-- <GetFeature> --><?pi x?><!DOCTYPE t [<!ENTITY e \"a>b\"><!-- ]> -->]>\n<Transaction service='WFS'/>",
    ));
    // malformed before the root: GeoServer refuses it
    any(post_xml(
        "/geoserver/wfs?request=GetFeature",
        "<wfs:GetFeature service='WFS'/>",
    ));
    any(post_xml(
        "/geoserver/wfs?request=GetFeature",
        " <?xml version='1.0'?><GetFeature/>",
    ));
    any(post_xml("/geoserver/wfs?request=GetFeature", "garbage"));
    any(post_xml(
        "/geoserver/wfs?request=GetFeature",
        "<GetFeature version=''/>",
    ));
    any(geoserver_read(&view(
        "POST",
        "/geoserver/wfs?request=GetFeature",
        Some("text/xml"),
        b"\xEF\xBB\xBF<GetFeature service='WFS'/>",
    )));
    any(geoserver_read(&view(
        "POST",
        "/geoserver/wfs?request=Transaction",
        Some("text/xml"),
        b"\xEF\xBB\xBF<GetFeature service='WFS'/>",
    )));
    // lockId in the body (policy)
    master(post_xml(
        "/geoserver/wfs",
        r#"<GetFeature service="WFS" lockId="x"/>"#,
    ));
    // WPS
    master(post_xml(
        "/geoserver/wps",
        r#"<wps:Execute service="WPS" version="1.0.0" xmlns:wps="http://www.opengis.net/wps/1.0.0"/>"#,
    ));
    master(get(
        "/geoserver/wps?request=GetExecutionStatus&executionId=1",
    ));
    master(get("/geoserver/ows?service=wps&request=GetExecutions"));
    any(get(
        "/geoserver/wps?request=DescribeProcess&identifier=JTS:buffer",
    ));
    // CSW Transaction is dispatched but refused by DefaultWebCatalogService
    any(get("/geoserver/csw?request=Transaction"));
    // empty POST body: KVP only
    master(geoserver_read(&view(
        "POST",
        "/geoserver/wfs?request=Transaction",
        Some("text/xml"),
        b"",
    )));
    any(geoserver_read(&view(
        "POST",
        "/geoserver/wfs?request=GetFeature",
        Some("text/xml"),
        b"",
    )));
    // GET bodies are never read
    any(geoserver_read(&view(
        "GET",
        "/geoserver/wfs?request=GetFeature",
        Some("text/xml"),
        TX.as_bytes(),
    )));
    // HEAD bodies are read (charset) but not used for the operation
    any(geoserver_read(&view(
        "HEAD",
        "/geoserver/wfs?request=GetFeature",
        Some("text/xml"),
        TX.as_bytes(),
    )));
    // UTF-16 body without BOM
    let utf16: Vec<u8> = "<?xml version=\"1.0\"?><Transaction service=\"WFS\"/>"
        .encode_utf16()
        .flat_map(|u| u.to_le_bytes())
        .collect();
    master(geoserver_read(&view(
        "POST",
        "/geoserver/wfs?request=GetFeature",
        Some("text/xml"),
        &utf16,
    )));
}

#[test]
fn forms_soap_multipart() {
    master(geoserver_read(&view(
        "POST",
        "/geoserver/wfs",
        Some("application/x-www-form-urlencoded"),
        b"request=Transaction",
    )));
    any(geoserver_read(&view(
        "POST",
        "/geoserver/wfs",
        Some("application/x-www-form-urlencoded"),
        b"request=GetFeature",
    )));
    // form detection is startsWith: body ignored entirely, KVP from the query only
    any(geoserver_read(&view(
        "POST",
        "/geoserver/wfs?request=GetFeature",
        Some("application/x-www-form-urlencodedX"),
        TX.as_bytes(),
    )));
    let soap = r#"<soap:Envelope xmlns:soap="http://www.w3.org/2003/05/soap-envelope"><soap:Body><wfs:Transaction service="WFS" xmlns:wfs="http://www.opengis.net/wfs"/></soap:Body></soap:Envelope>"#;
    master(geoserver_read(&view(
        "POST",
        "/geoserver/wfs?request=GetFeature",
        Some("application/soap+xml; charset=utf-8"),
        soap.as_bytes(),
    )));
    // SOAP content type test is case-sensitive: then the root is "Envelope" -> KVP fallback
    any(geoserver_read(&view(
        "POST",
        "/geoserver/wfs?request=GetFeature",
        Some("Application/soap+xml"),
        soap.as_bytes(),
    )));
    any(geoserver_read(&view(
        "POST",
        "/geoserver/wfs?request=GetFeature",
        Some("text/xml"),
        soap.as_bytes(),
    )));
    master(geoserver_read(&view(
        "POST",
        "/geoserver/wfs?request=GetFeature",
        Some("multipart/form-data; boundary=x"),
        b"--x--",
    )));
}

#[test]
fn gwc() {
    any(get("/geoserver/gwc/service/wmts?request=GetTile&layer=a"));
    any(get("/geoserver/gwc/service/wmts/rest/a/b/c/d/e"));
    // the GWC callback replaces the KVP: this is a GWC request, not a WFS Transaction
    any(get(
        "/geoserver/gwc/service/wms?service=WFS&request=Transaction",
    ));
    any(get(
        "/geoserver/topp/gwc/service/wms?service=WFS&request=Transaction",
    ));
    // ...but a POSTed root element with service="WFS" still wins
    master(post_xml("/geoserver/gwc/service/wms", TX));
    master(post_xml("/geoserver/topp/gwc/service/wmts", TX));
    any(post_xml("/geoserver/gwc/service/wms", "<Transaction/>"));
    // /gwc/service itself is not GWC-targeted: ordinary dispatch with KVP
    master(get(
        "/geoserver/gwc/service?service=WFS&request=Transaction",
    ));
}

/// No input may make the model panic (small deterministic fuzz over odd pieces).
#[test]
fn never_panics() {
    let methods = ["GET", "POST", "HEAD", "PUT", "OPTIONS", "get", ""];
    let uris = [
        "",
        "/",
        "/geoserver",
        "/geoserver/",
        "/geoserver//wfs//",
        "/g",
        "/geoserver/%",
        "/geoserver/%4",
        "/geoserver/w%C3%A9fs/x",
        "/geoserver/ows/gwc/service/x",
        "/geoserver/a/b/gwc/service/wmts/rest/a/b/c/d/e",
        "/geoserver/gwc/service/",
        "/geoserver/rest.",
        "/geoserver/ogc/",
        "/geoserver/x/ogc",
        "\u{e9}/gwc/demo",
        "/geoserver/\u{e9}x/gwc/demo",
    ];
    let cts = [
        None,
        Some("text/xml"),
        Some("application/soap+xml"),
        Some("multipart/x"),
        Some("application/x-www-form-urlencoded"),
        Some(""),
    ];
    let bodies: [&[u8]; 9] = [
        b"",
        b"\xFF\xFE",
        b"\xFE\xFF\x00<",
        b"\xEF\xBB",
        b"<",
        b"<a",
        b"<?xml ",
        b"<!DOCTYPE",
        b"<a:b xmlns:a='x' service=' '/>",
    ];
    for m in methods {
        for u in uris {
            for ct in cts {
                for b in bodies {
                    let mut v = view(
                        if m.is_empty() { "GET" } else { m },
                        if u.is_empty() { "/geoserver/wfs" } else { u },
                        ct,
                        b,
                    );
                    v.method = m.to_string();
                    v.request_uri = u.to_string();
                    v.path_in_context = u.chars().skip(10).collect();
                    let _ = geoserver_read(&v);
                    v.character_encoding = None;
                    v.context_path = String::new();
                    let _ = geoserver_read(&v);
                    v.character_encoding = Some("UTF-16".into());
                    let _ = geoserver_read(&v);
                }
            }
        }
    }
}
