//! One table row per line of `shared/notes/geoserver.md` §1, then property tests.

use super::*;
use http::header::{HeaderValue, CONTENT_ENCODING, CONTENT_TYPE};
use proptest::prelude::*;

const R: Pool = Pool::Reads;
const M: Pool = Pool::Master;

fn classifier() -> Classifier {
    Classifier::new("/geoserver", Vec::new(), 64 * 1024)
}

fn headers(content_type: Option<&str>) -> HeaderMap {
    let mut h = HeaderMap::new();
    if let Some(ct) = content_type {
        h.insert(CONTENT_TYPE, HeaderValue::from_str(ct).unwrap());
    }
    h
}

fn route_of(
    c: &Classifier,
    method: &str,
    target: &str,
    content_type: Option<&str>,
    body: &str,
) -> Route {
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (target, None),
    };
    let method = Method::from_bytes(method.as_bytes()).unwrap();
    // A refusal (400) is at least as safe as the master: tests that only care about safety see it
    // as the master; `refused` tells them apart.
    c.classify(
        &method,
        path,
        query,
        &headers(content_type),
        body.as_bytes(),
    )
    .unwrap_or_else(|why| Route {
        pool: Pool::Master,
        class: Class::Ambiguous(why),
        write: true,
        rule: None,
    })
}

fn pool(method: &str, target: &str, content_type: Option<&str>, body: &str) -> Pool {
    route_of(&classifier(), method, target, content_type, body).pool
}

const XML: Option<&str> = Some("text/xml");
const FORM: Option<&str> = Some("application/x-www-form-urlencoded");

/// (method, target, content type, body, expected pool) — one block per row of the notes' table.
const TABLE: &[(&str, &str, Option<&str>, &str, Pool)] = &[
    // /web, /web/** (Wicket UI): all methods → MASTER
    ("GET", "/geoserver/web", None, "", M),
    ("GET", "/geoserver/web/", None, "", M),
    ("GET", "/geoserver/web/wicket/bookmarkable/org.geoserver.web.demo.MapPreviewPage?1", None, "", M),
    ("POST", "/geoserver/web/wicket/page?3-1.IFormSubmitListener-form", FORM, "a=b", M),
    // / and /index.html → MASTER
    ("GET", "/geoserver", None, "", M),
    ("GET", "/geoserver/", None, "", M),
    ("GET", "/geoserver/index.html", None, "", M),
    // /j_spring_* → MASTER
    ("POST", "/geoserver/j_spring_security_check", FORM, "username=admin&password=x", M),
    ("GET", "/geoserver/j_spring_security_logout", None, "", M),
    ("GET", "/geoserver/j_spring_cas_security_check", None, "", M),
    // /rest, /rest/** (GET too) → MASTER
    ("GET", "/geoserver/rest", None, "", M),
    ("GET", "/geoserver/rest/workspaces.json", None, "", M),
    ("POST", "/geoserver/rest/workspaces", Some("application/json"), "{}", M),
    ("PUT", "/geoserver/rest/layers/topp:states", XML, "<layer/>", M),
    ("DELETE", "/geoserver/rest/workspaces/topp?recurse=true", None, "", M),
    ("PATCH", "/geoserver/rest/settings", None, "", M),
    ("POST", "/geoserver/rest/reload", None, "", M),
    // /gwc/rest/** → MASTER
    ("GET", "/geoserver/gwc/rest/seed/topp:states.json", None, "", M),
    ("POST", "/geoserver/gwc/rest/seed/topp:states.xml", XML, "<seedRequest/>", M),
    ("PUT", "/geoserver/gwc/rest/layers/topp:states.xml", XML, "<GeoServerLayer/>", M),
    // /gwc, /gwc/demo/** → MASTER
    ("GET", "/geoserver/gwc", None, "", M),
    ("GET", "/geoserver/gwc/", None, "", M),
    ("GET", "/geoserver/gwc/demo/topp:states?gridSet=EPSG:4326&format=image/png", None, "", M),
    // /gwc/service/**, /{ws}/gwc/service/** GET/HEAD → ANY
    ("GET", "/geoserver/gwc/service/wmts?SERVICE=WMTS&REQUEST=GetTile&LAYER=topp:states&TILEMATRIX=EPSG:4326:3", None, "", R),
    ("HEAD", "/geoserver/gwc/service/tms/1.0.0/topp:states@EPSG:4326@png/3/1/2.png", None, "", R),
    ("GET", "/geoserver/gwc/service/wms?SERVICE=WMS&REQUEST=GetMap&TILED=true", None, "", R),
    ("GET", "/geoserver/gwc/service/kml/topp:states.png.kml", None, "", R),
    ("GET", "/geoserver/topp/gwc/service/wmts?request=GetCapabilities", None, "", R),
    ("POST", "/geoserver/gwc/service/wmts", XML, "<GetTile/>", M),
    // OWS endpoints: reads → ANY
    ("GET", "/geoserver/ows?service=WMS&version=1.3.0&request=GetCapabilities", None, "", R),
    ("GET", "/geoserver/wms?service=WMS&version=1.1.1&request=GetMap&layers=topp:states&bbox=-180,-90,180,90&width=256&height=256&srs=EPSG:4326&format=image/png", None, "", R),
    ("GET", "/geoserver/wms?request=GetFeatureInfo&query_layers=topp:states", None, "", R),
    ("GET", "/geoserver/wms?request=GetLegendGraphic&layer=topp:states", None, "", R),
    ("GET", "/geoserver/wfs?service=WFS&version=2.0.0&request=GetFeature&typeNames=topp:states", None, "", R),
    ("GET", "/geoserver/wfs?request=DescribeFeatureType&typeName=topp:states", None, "", R),
    ("GET", "/geoserver/wcs?service=WCS&request=GetCoverage&coverageId=nurc__Arc_Sample", None, "", R),
    ("GET", "/geoserver/wps?service=WPS&request=DescribeProcess&identifier=JTS:buffer", None, "", R),
    ("GET", "/geoserver/csw?service=CSW&request=GetRecords", None, "", R),
    ("GET", "/geoserver/wmts?service=WMTS&request=GetTile", None, "", R),
    ("GET", "/geoserver/topp/wms?request=GetMap", None, "", R),
    ("GET", "/geoserver/topp/states/wms?request=GetMap", None, "", R),
    ("GET", "/geoserver/wms/reflect?layers=topp:states", None, "", R),
    ("GET", "/geoserver/wms/kml?layers=topp:states", None, "", R),
    ("GET", "/geoserver/wms/animate?layers=topp:states&aparam=time", None, "", R),
    ("GET", "/geoserver/wms", None, "", R),
    ("POST", "/geoserver/wfs", XML, "<?xml version=\"1.0\"?><wfs:GetFeature service=\"WFS\" xmlns:wfs=\"http://www.opengis.net/wfs\"><wfs:Query typeName=\"topp:states\"/></wfs:GetFeature>", R),
    ("POST", "/geoserver/wms", XML, "<GetMap><StyledLayerDescriptor/></GetMap>", R),
    ("POST", "/geoserver/ows", FORM, "service=WMS&request=GetMap&layers=topp:states", R),
    ("POST", "/geoserver/wfs?request=GetFeature", XML, "", R),
    // WFS writes, locks, stored queries → MASTER, GET or POST
    ("POST", "/geoserver/wfs", XML, "<wfs:Transaction service=\"WFS\" version=\"1.1.0\" xmlns:wfs=\"http://www.opengis.net/wfs\"><wfs:Insert/></wfs:Transaction>", M),
    ("POST", "/geoserver/ows", XML, "\u{feff}<?xml version=\"1.0\"?>\n<!-- edit --><!DOCTYPE x><?pi x?>\n  <Transaction/>", M),
    ("GET", "/geoserver/wfs?service=WFS&version=1.1.0&request=Transaction&operation=delete&typeName=topp:states&featureId=states.1", None, "", M),
    ("GET", "/geoserver/wfs/Transaction", None, "", M),
    ("POST", "/geoserver/wfs/Transaction", XML, "<Transaction/>", M),
    ("GET", "/geoserver/topp/wfs/Transaction", None, "", M),
    ("GET", "/geoserver/wfs?request=LockFeature&typeName=topp:states", None, "", M),
    ("POST", "/geoserver/wfs", XML, "<wfs:LockFeature xmlns:wfs=\"http://www.opengis.net/wfs\"/>", M),
    ("GET", "/geoserver/wfs?request=GetFeatureWithLock&typeName=topp:states", None, "", M),
    ("POST", "/geoserver/wfs", XML, "<GetFeatureWithLock/>", M),
    ("GET", "/geoserver/wfs?request=ReleaseLock&lockId=abc", None, "", M),
    ("GET", "/geoserver/wfs?request=CreateStoredQuery", None, "", M),
    ("POST", "/geoserver/wfs", XML, "<wfs:DropStoredQuery xmlns:wfs=\"http://www.opengis.net/wfs/2.0\" id=\"q\"/>", M),
    ("GET", "/geoserver/wfs?request=GetFeature&typeName=topp:states&lockId=L1", None, "", M),
    ("POST", "/geoserver/wfs", XML, "<wfs:GetFeature lockId=\"L1\"/>", M),
    ("POST", "/geoserver/wfs", FORM, "request=GetFeature&LOCKID=L1", M),
    ("POST", "/geoserver/wfs", FORM, "service=WFS&request=Transaction", M),
    ("POST", "/geoserver/wfs?request=Transaction", XML, "<GetFeature/>", M),
    // WPS state → MASTER
    ("GET", "/geoserver/wps?service=WPS&request=Execute&identifier=JTS:buffer", None, "", M),
    ("POST", "/geoserver/wps", XML, "<wps:Execute xmlns:wps=\"http://www.opengis.net/wps/1.0.0\"><ows:Identifier>JTS:buffer</ows:Identifier></wps:Execute>", M),
    ("GET", "/geoserver/ows?service=WPS&request=GetExecutionStatus&executionId=1", None, "", M),
    ("GET", "/geoserver/ows?service=WPS&request=GetExecutionResult&executionId=1", None, "", M),
    ("GET", "/geoserver/ows?service=WPS&request=Dismiss&executionId=1", None, "", M),
    ("GET", "/geoserver/ows?service=WPS&request=GetExecutions", None, "", M),
    ("POST", "/geoserver/wps", Some("application/soap+xml"), "<soap:Envelope xmlns:soap=\"http://www.w3.org/2003/05/soap-envelope\"><soap:Header><x/></soap:Header><soap:Body><wps:Execute/></soap:Body></soap:Envelope>", M),
    // SOAP: GeoServer takes the SOAP Body wherever it is in the whole envelope: always the master.
    ("POST", "/geoserver/wfs", Some("application/soap+xml"), "<soap:Envelope xmlns:soap=\"http://www.w3.org/2003/05/soap-envelope\"><soap:Body><wfs:GetFeature/></soap:Body></soap:Envelope>", M),
    ("POST", "/geoserver/wfs", Some("application/soap+xml"), "<soap:Envelope><soap:Body><wfs:GetFeature/></soap:Body></soap:Envelope>", M),
    ("POST", "/geoserver/wfs", Some("application/soap+xml"), "<s:Envelope xmlns:s=\"http://www.w3.org/2003/05/soap-envelope\"><s:Header><s:Body><wfs:Transaction/></s:Body></s:Header><s:Body><wfs:GetFeature/></s:Body></s:Envelope>", M),
    ("POST", "/geoserver/wfs", XML, "<s:Envelope xmlns:s=\"http://www.w3.org/2003/05/soap-envelope\"><s:Body><wfs:GetFeature/></s:Body></s:Envelope>", M),
    // OGC API: reads → ANY, writes → MASTER
    ("GET", "/geoserver/ogc/features/v1/collections/topp:states/items", None, "", R),
    ("HEAD", "/geoserver/ogc/maps/v1/collections", None, "", R),
    ("OPTIONS", "/geoserver/topp/ogc/features/v1/collections", None, "", R),
    ("POST", "/geoserver/ogc/styles/v1/styles", Some("application/vnd.ogc.sld+xml"), "<StyledLayerDescriptor/>", M),
    ("PUT", "/geoserver/ogc/styles/v1/styles/s1", None, "", M),
    ("PATCH", "/geoserver/topp/ogc/styles/v1/styles/s1/metadata", None, "", M),
    ("DELETE", "/geoserver/ogc/styles/v1/styles/s1", None, "", M),
    // /TestWfsPost → MASTER
    ("GET", "/geoserver/TestWfsPost", None, "", M),
    ("POST", "/geoserver/TestWfsPost", FORM, "url=x&body=y", M),
    // static files GET → ANY
    ("GET", "/geoserver/schemas/wfs/1.1.0/wfs.xsd", None, "", R),
    ("GET", "/geoserver/www/index.html", None, "", R),
    ("GET", "/geoserver/openlayers3/ol.js", None, "", R),
    ("GET", "/geoserver/styles/default_point.png", None, "", R),
    ("POST", "/geoserver/www/upload", None, "", M),
    // ambiguous → MASTER
    ("GET", "/geoserver/wms?request=GetMap&request=Transaction", None, "", M),
    ("GET", "/geoserver/wms?request=GetMap&REQUEST=GetFeatureInfo", None, "", M),
    ("POST", "/geoserver/wfs", XML, "this is not xml", M),
    ("POST", "/geoserver/wfs", XML, "<?xml version=\"1.0\"?><!-- nothing else -->", M),
    ("POST", "/geoserver/wfs", Some("multipart/form-data; boundary=x"), "--x\r\n", M),
    ("POST", "/geoserver/wps", XML, "<MakeCoffee/>", M),
    ("POST", "/geoserver/wfs", None, "", M),
    ("GET", "/geoserver/wms?request=MakeCoffee", None, "", M),
    ("PUT", "/geoserver/wms", XML, "<GetMap/>", M),
    ("GET", "/geoserver/something/else/entirely/here", None, "", M),
    ("GET", "/favicon.ico", None, "", M),
    ("GET", "/geoserverx/wms?request=GetMap", None, "", M),
];

#[test]
fn notes_table() {
    let c = classifier();
    for (i, &(method, target, ct, body, want)) in TABLE.iter().enumerate() {
        let route = route_of(&c, method, target, ct, body);
        assert_eq!(
            route.pool, want,
            "row {i}: {method} {target} {body:?} → {route:?}"
        );
        if want == R {
            assert!(
                !route.write,
                "row {i}: a read must not be flagged as a write"
            );
        }
    }
}

#[test]
fn case_variants_of_keys_and_values() {
    assert_eq!(
        pool(
            "GET",
            "/geoserver/wfs?REQUEST=transaction&SERVICE=wfs",
            None,
            ""
        ),
        M
    );
    assert_eq!(
        pool("GET", "/geoserver/wfs?ReQuEsT=TRANSACTION", None, ""),
        M
    );
    assert_eq!(
        pool(
            "GET",
            "/geoserver/wfs?request=GETFEATURE&Lockid=x",
            None,
            ""
        ),
        M
    );
    assert_eq!(pool("GET", "/geoserver/wms?REQUEST=getmap", None, ""), R);
    assert_eq!(
        pool(
            "GET",
            "/geoserver/wms?request=GetMap&REQUEST=getmap",
            None,
            ""
        ),
        R
    );
    assert_eq!(
        pool("POST", "/geoserver/wfs", FORM, "REQUEST=TRANSACTION"),
        M
    );
    assert_eq!(
        pool("POST", "/geoserver/wfs", FORM, "Request=%20getfeature%20"),
        R
    );
    assert_eq!(
        pool("GET", "/geoserver/wfs?request=%20Transaction%20", None, ""),
        M
    );
    assert_eq!(
        pool("GET", "/geoserver/wfs?requ%65st=Transaction", None, ""),
        M
    );
}

#[test]
fn context_path_is_configurable() {
    let root = Classifier::new("", Vec::new(), 1024);
    assert_eq!(
        route_of(&root, "GET", "/wms?request=GetMap", None, "").pool,
        R
    );
    assert_eq!(route_of(&root, "GET", "/web/", None, "").pool, M);
    assert_eq!(
        route_of(&root, "GET", "/geoserver/wms?request=GetMap", None, "").pool,
        R,
        "/geoserver/wms = ws geoserver"
    );
    let other = Classifier::new("/maps", Vec::new(), 1024);
    assert_eq!(
        route_of(&other, "GET", "/maps/wms?request=GetMap", None, "").pool,
        R
    );
    assert_eq!(
        route_of(&other, "GET", "/geoserver/wms?request=GetMap", None, "").pool,
        M
    );
}

#[test]
fn classes_name_the_operation() {
    let c = classifier();
    let r = route_of(
        &c,
        "GET",
        "/geoserver/ows?service=wms&request=getmap",
        None,
        "",
    );
    assert_eq!(r.class.to_string(), "wms:GetMap");
    let r = route_of(&c, "POST", "/geoserver/wfs", XML, "<wfs:Transaction/>");
    assert_eq!(r.class.to_string(), "wfs:Transaction");
    assert!(r.write);
    assert_eq!(
        route_of(&c, "GET", "/geoserver/rest/about", None, "").class,
        Class::Rest
    );
    assert!(!route_of(&c, "GET", "/geoserver/rest/about", None, "").write);
}

fn rule(prefix: Option<&str>, methods: &[&str], pool: Pool) -> RouteRule {
    RouteRule {
        prefix: prefix.map(String::from),
        methods: methods.iter().map(|m| m.to_string()).collect(),
        pool,
    }
}

#[test]
fn user_rules_come_first_but_never_send_writes_to_reads() {
    let c = Classifier::new(
        "/geoserver",
        vec![
            rule(Some("/geoserver/rest/about"), &["GET"], Pool::Reads),
            rule(Some("/geoserver/topp/"), &[], Pool::Master),
            rule(Some("/geoserver/wfs"), &[], Pool::Reads),
        ],
        1024,
    );
    let r = route_of(&c, "GET", "/geoserver/rest/about/version.json", None, "");
    assert_eq!((r.pool, r.rule), (R, Some(0)));
    assert_eq!(
        route_of(&c, "DELETE", "/geoserver/rest/about/x", None, "").pool,
        M,
        "method filter"
    );
    let r = route_of(&c, "GET", "/geoserver/topp/wms?request=GetMap", None, "");
    assert_eq!((r.pool, r.rule), (M, Some(1)));
    assert_eq!(
        route_of(&c, "GET", "/geoserver/wfs?request=Transaction", None, "").pool,
        M
    );
    assert_eq!(
        route_of(&c, "POST", "/geoserver/wfs", XML, "<Transaction/>").pool,
        M
    );
    assert_eq!(
        route_of(&c, "POST", "/geoserver/wfs", XML, "<GetFeature/>").pool,
        R
    );
    assert_eq!(
        route_of(&c, "POST", "/geoserver/wfs", XML, "not xml").pool,
        M
    );
}

#[test]
fn lookahead_is_bounded_and_incremental() {
    let c = Classifier::new("/geoserver", Vec::new(), 64);
    let method = Method::POST;
    let h = headers(XML);
    let Verdict::NeedBody(plan) = c.classify_head(&method, "/geoserver/wfs", None, &h) else {
        panic!("needs body")
    };
    assert_eq!(
        c.classify_body(&plan, None, b"<?xml version=\"1.0\"?><wfs:Ge", false),
        None,
        "needs more"
    );
    let r = c
        .classify_body(
            &plan,
            None,
            b"<?xml version=\"1.0\"?><wfs:GetFeature xmlns:wfs=\"http://www.opengis.net/wfs\">",
            false,
        )
        .unwrap();
    assert_eq!(r.pool, R, "decided before the body ends");
    let long_comment = format!("<!--{}-->", "x".repeat(100));
    let r = c
        .classify_body(&plan, None, &long_comment.as_bytes()[..64], false)
        .unwrap();
    assert_eq!(
        (r.pool, r.class),
        (M, Class::Ambiguous("unparsed-body")),
        "look-ahead exhausted"
    );
    let Verdict::NeedBody(form) = c.classify_head(&method, "/geoserver/wms", None, &headers(FORM))
    else {
        panic!()
    };
    assert_eq!(
        c.classify_body(&form, None, b"request=GetMap", false),
        None,
        "a form is read whole"
    );
    assert_eq!(
        c.classify_body(&form, None, &[b'a'; 64], false)
            .unwrap()
            .pool,
        M
    );
    let mut gz = headers(XML);
    gz.insert(CONTENT_ENCODING, HeaderValue::from_static("gzip"));
    assert!(
        matches!(c.classify_head(&method, "/geoserver/wfs", None, &gz), Verdict::Done(r) if r.pool == M)
    );
}

// ---- property tests ----

const KEYS: &[&str] = &[
    "request", "service", "version", "layers", "typeName", "bbox", "lockId", "format",
];
const VALUES: &[&str] = &[
    "GetMap",
    "GetFeature",
    "Transaction",
    "LockFeature",
    "WMS",
    "WFS",
    "1.3.0",
    "x",
    "",
    "Execute",
];

fn arb_pairs() -> impl Strategy<Value = Vec<(String, String)>> {
    prop::collection::vec(
        (
            prop::sample::select(KEYS),
            prop_oneof![
                prop::sample::select(VALUES).prop_map(String::from),
                "[a-zA-Z0-9 %&=]{0,8}"
            ],
        ),
        0..6,
    )
    .prop_map(|v| v.into_iter().map(|(k, val)| (k.to_string(), val)).collect())
}

fn encode(pairs: &[(String, String)]) -> String {
    form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs)
        .finish()
}

fn recase(s: &str, mask: u64) -> String {
    s.chars()
        .enumerate()
        .map(|(i, ch)| {
            if mask >> (i % 64) & 1 == 1 {
                ch.to_ascii_uppercase()
            } else {
                ch.to_ascii_lowercase()
            }
        })
        .collect()
}

fn arb_path() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(
            &[
                "/geoserver/wms",
                "/geoserver/wfs",
                "/geoserver/ows",
                "/geoserver/topp/wfs",
                "/geoserver/topp/states/wms",
                "/geoserver/wfs/Transaction",
                "/geoserver/gwc/service/wmts",
                "/geoserver/rest/layers",
                "/geoserver/web/",
                "/geoserver/ogc/features/v1",
                "/geoserver/schemas/x.xsd",
            ][..]
        )
        .prop_map(String::from),
        "/geoserver(/[a-zA-Z_.]{0,6}){0,5}",
        "[^?#]{0,40}",
    ]
}

const WRITE_SAMPLES: &[&str] = &[
    "Transaction",
    "LockFeature",
    "GetFeatureWithLock",
    "ReleaseLock",
    "CreateStoredQuery",
    "DropStoredQuery",
    "Execute",
    "GetExecutionStatus",
    "Dismiss",
];

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn never_panics(
        method in prop::sample::select(&["GET", "POST", "PUT", "HEAD", "DELETE", "OPTIONS", "PATCH"][..]),
        path in arb_path(),
        query in prop::option::of(".{0,60}"),
        ct in prop::option::of(prop::sample::select(&["text/xml", "application/x-www-form-urlencoded", "application/soap+xml", "multipart/form-data", "application/json"][..])),
        body in prop::collection::vec(any::<u8>(), 0..200),
        xmlish in "(<[?!]?[a-zA-Z:]{0,8}( [a-zA-Z]{1,4}=\"[a-z]{0,3}\")?/?>|[ \n]|</[a-zA-Z:]{0,8}>){0,8}",
    ) {
        let c = Classifier::new("/geoserver", vec![rule(Some("/geoserver/w"), &[], Pool::Reads)], 64);
        let m = Method::from_bytes(method.as_bytes()).unwrap();
        let h = headers(ct);
        let _ = c.classify(&m, &path, query.as_deref(), &h, &body);
        let _ = c.classify(&m, &path, query.as_deref(), &h, xmlish.as_bytes());
    }

    #[test]
    fn case_of_keys_and_values_never_changes_the_pool(
        path in arb_path(),
        pairs in arb_pairs(),
        masks in prop::collection::vec(any::<u64>(), 12),
        as_form in any::<bool>(),
    ) {
        let c = classifier();
        let recased: Vec<(String, String)> = pairs.iter().enumerate().map(|(i, (k, v))| {
            let v = if k.eq_ignore_ascii_case("request") || k.eq_ignore_ascii_case("service") { recase(v, masks[i * 2 + 1]) } else { v.clone() };
            (recase(k, masks[i * 2]), v)
        }).collect();
        let (a, b) = (encode(&pairs), encode(&recased));
        let (pa, pb) = if as_form {
            (route_of(&c, "POST", &path, FORM, &a).pool, route_of(&c, "POST", &path, FORM, &b).pool)
        } else {
            (route_of(&c, "GET", &format!("{path}?{a}"), None, "").pool, route_of(&c, "GET", &format!("{path}?{b}"), None, "").pool)
        };
        prop_assert_eq!(pa, pb, "{} vs {}", a, b);
    }

    #[test]
    fn a_write_is_never_a_read(
        path in arb_path(),
        pairs in arb_pairs(),
        op in prop::sample::select(WRITE_SAMPLES),
        mask in any::<u64>(),
        at in 0usize..6,
        place in 0u8..5,
        with_rule in any::<bool>(),
    ) {
        let rules = if with_rule { vec![rule(Some("/"), &[], Pool::Reads)] } else { Vec::new() };
        let c = Classifier::new("/geoserver", rules, 64 * 1024);
        let op = recase(op, mask);
        let mut pairs = pairs;
        let route = match place {
            0 | 1 => {
                let key = if place == 0 { "request".to_string() } else { recase("request", mask.rotate_left(7)) };
                pairs.insert(at.min(pairs.len()), (key, op.clone()));
                if place == 0 {
                    route_of(&c, "GET", &format!("{path}?{}", encode(&pairs)), None, "")
                } else {
                    route_of(&c, "POST", &path, FORM, &encode(&pairs))
                }
            }
            2 => route_of(&c, "POST", &format!("{path}?{}", encode(&pairs)), XML, &format!("<?xml version=\"1.0\"?>\n<!-- c --><wfs:{op} xmlns:wfs=\"x\"><a/></wfs:{op}>")),
            3 => route_of(&c, "GET", &format!("/geoserver/wfs/{op}?{}", encode(&pairs)), None, ""),
            _ => route_of(&c, "POST", &path, Some("application/soap+xml"), &format!("<s:Envelope><s:Body><{op}/></s:Body></s:Envelope>")),
        };
        prop_assert_eq!(route.pool, Pool::Master, "{:?}", route);
        prop_assert!(route.write);
    }
}

#[test]
fn every_class_has_its_own_slot() {
    let mut classes = vec![
        Class::Ui,
        Class::Login,
        Class::Rest,
        Class::GwcRest,
        Class::GwcUi,
        Class::Tiles,
        Class::OgcApi,
        Class::TestWfsPost,
        Class::Static,
        Class::Ambiguous("x"),
        Class::Other,
    ];
    let services = SERVICES.iter().map(|s| Some(*s)).chain([None]);
    for service in services {
        let ops = READ_OPS.iter().map(|o| Some(*o)).chain([None]);
        classes.extend(ops.map(|op| Class::Ows { service, op }));
    }
    let slots: std::collections::HashSet<usize> = classes.iter().map(Class::slot).collect();
    assert_eq!(slots.len(), classes.len());
    assert!(slots.iter().all(|&s| s < Class::SLOTS));
    assert_eq!(classes.len(), Class::SLOTS);
    let write = Class::Ows {
        service: Some("wfs"),
        op: Some("Transaction"),
    };
    let other = Class::Ows {
        service: Some("wfs"),
        op: None,
    };
    assert_eq!(write.slot(), other.slot());
}
