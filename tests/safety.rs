//! One test per class of hole of issue 9, through a real geolb whose master serves no reads: each
//! request the node would read as a write reaches the master (or is refused with 400), never a
//! replica; its ordinary counterpart still reaches a replica.

mod support;

use http::{Method, StatusCode};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const XML: &str = "text/xml";
const FORM: &str = "application/x-www-form-urlencoded";
const TX: &str = "<wfs:Transaction xmlns:wfs=\"http://www.opengis.net/wfs\" service=\"WFS\" version=\"1.1.0\"><wfs:Delete typeName=\"topp:states\"/></wfs:Transaction>";
const GF: &str = "<wfs:GetFeature xmlns:wfs=\"http://www.opengis.net/wfs\" service=\"WFS\" version=\"1.1.0\"><wfs:Query typeName=\"topp:states\"/></wfs:GetFeature>";

async fn cluster() -> Harness {
    let defs = MASTER_WRITES_ONLY;
    Harness::start(defs).await
}

/// Sends the raw request; the node that answered ("" when geolb did) and the status.
async fn raw(h: &Harness, head: &str, body: &[u8]) -> (String, u16) {
    let mut s = TcpStream::connect(h.proxy()).await.unwrap();
    let head = format!(
        "{head}\r\nHost: maps.example.org\r\nConnection: close\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).await.unwrap();
    s.write_all(body).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(std::time::Duration::from_secs(10), s.read_to_end(&mut out))
        .await
        .expect("an answer")
        .unwrap();
    let text = String::from_utf8_lossy(&out);
    let status = text.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
    let node = text
        .lines()
        .find_map(|l| l.strip_prefix("x-node: "))
        .unwrap_or("")
        .to_string();
    (node, status)
}

/// The request reached the master, or geolb refused it.
fn kept_from_replicas((node, status): (String, u16), what: &str) {
    assert!(
        node == "gs-master" || (node.is_empty() && status == 400),
        "{what}: reached {node:?} with {status}"
    );
}

fn reached_a_replica((node, status): (String, u16), what: &str) {
    assert!(
        node.starts_with("gs-replica"),
        "{what}: reached {node:?} with {status}"
    );
}

async fn post(h: &Harness, target: &str, content_type: &str, body: &str) -> (String, u16) {
    let r = h
        .send(
            Method::POST,
            target,
            &[("content-type", content_type)],
            body.to_string(),
        )
        .await;
    (r.node().to_string(), r.status.as_u16())
}

async fn get(h: &Harness, target: &str) -> (String, u16) {
    let r = h.get(target).await;
    (r.node().to_string(), r.status.as_u16())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn class_1_the_body_names_the_operation_before_the_path() {
    let h = cluster().await;
    kept_from_replicas(
        post(&h, "/geoserver/wfs/GetFeature", XML, TX).await,
        "path GetFeature, body Transaction",
    );
    kept_from_replicas(
        post(&h, "/geoserver/wfs?request=GetFeature", XML, TX).await,
        "query GetFeature, body Transaction",
    );
    kept_from_replicas(
        post(
            &h,
            "/geoserver/wfs/GetFeature",
            FORM,
            "service=WFS&request=Transaction",
        )
        .await,
        "form Transaction",
    );
    kept_from_replicas(
        post(&h, "/geoserver/gwc/service/wms", XML, TX).await,
        "GeoWebCache path, Transaction body",
    );
    reached_a_replica(
        post(&h, "/geoserver/wfs/GetFeature", XML, GF).await,
        "GetFeature both ways",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn class_2_values_are_trimmed_as_java_trims_them() {
    let h = cluster().await;
    for v in [
        "Transaction%0B",
        "%00Transaction",
        "%1FTransaction%0C",
        "+Transaction+",
    ] {
        kept_from_replicas(get(&h, &format!("/geoserver/wfs?request={v}")).await, v);
        kept_from_replicas(
            post(&h, "/geoserver/wfs", FORM, &format!("request={v}")).await,
            v,
        );
    }
    reached_a_replica(
        get(&h, "/geoserver/wfs?request=GetFeature%0B").await,
        "a read, trimmed",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn class_3_keys_java_folds_onto_ours_are_played_safe() {
    let h = cluster().await;
    for q in [
        "reque%C5%BFt=Transaction",
        "request=GetFeature&lock%C4%B1d=L1",
        "request=GetFeature&LOC%E2%84%AAID=L1",
        "request=Tran%C5%BFaction",
        "request=GetFeature&service=wf%C5%BF",
    ] {
        kept_from_replicas(get(&h, &format!("/geoserver/wfs?{q}")).await, q);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn class_4_xml_prologues_a_parser_could_read_otherwise() {
    let h = cluster().await;
    for prologue in [
        "<!DOCTYPE x [<!-- > <wfs:GetFeature xmlns:wfs=\"http://www.opengis.net/wfs\"> -->]>",
        "<!DOCTYPE x [<!ENTITY e \"> <GetFeature>\">]>",
        "\u{feff}",
        "<?xml version=\"1.0\" encoding=\"UTF-16\"?>",
        "<!-- a -- b -->",
    ] {
        kept_from_replicas(
            post(&h, "/geoserver/wfs", XML, &format!("{prologue}{TX}")).await,
            prologue,
        );
        // The same prologue in front of a read: the master too (doubtful), never a replica.
        let (node, _) = post(&h, "/geoserver/wfs", XML, &format!("{prologue}{GF}")).await;
        assert_eq!(node, "gs-master", "{prologue}");
    }
    reached_a_replica(
        post(
            &h,
            "/geoserver/wfs",
            XML,
            &format!("<?xml version=\"1.0\"?>\n<!-- a < b --><?pi x?>{GF}"),
        )
        .await,
        "an ordinary prologue",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn class_5_soap_goes_to_the_master() {
    let h = cluster().await;
    let env = "<s:Envelope xmlns:s=\"http://www.w3.org/2003/05/soap-envelope\">";
    for body in [
        format!("{env}<s:Body>{GF}</s:Body></s:Envelope>"),
        format!(
            "{env}<s:Header><s:Body>{TX}</s:Body></s:Header><s:Body>{GF}</s:Body></s:Envelope>"
        ),
    ] {
        kept_from_replicas(
            post(&h, "/geoserver/wfs", "application/soap+xml", &body).await,
            &body,
        );
        kept_from_replicas(post(&h, "/geoserver/wfs", XML, &body).await, &body);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn class_6_content_types_and_charsets_read_two_ways() {
    let h = cluster().await;
    for ct in [
        "Application/X-WWW-Form-Urlencoded",
        "application/x-www-form-urlencodedX",
        "application/x-www-form-urlencoded; charset=UTF-16LE",
        "Application/SOAP+xml",
    ] {
        kept_from_replicas(
            post(&h, "/geoserver/wfs", ct, "request=GetFeature").await,
            ct,
        );
    }
    kept_from_replicas(
        raw(&h, "POST /geoserver/wfs HTTP/1.1\r\nContent-Type: text/xml\r\nContent-Type: application/x-www-form-urlencoded", GF.as_bytes()).await,
        "two Content-Types",
    );
    kept_from_replicas(
        raw(&h, "POST /geoserver/wfs HTTP/1.1\r\nContent-Type: text/xml\r\nContent-Encoding: identity\r\nContent-Encoding: identity", GF.as_bytes()).await,
        "two Content-Encodings",
    );
    reached_a_replica(
        post(
            &h,
            "/geoserver/wfs",
            "application/x-www-form-urlencoded; charset=UTF-8",
            "service=WFS&request=GetFeature",
        )
        .await,
        "an ordinary form",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn class_7_a_connection_header_nominating_a_routing_header_is_refused() {
    let h = cluster().await;
    for nominated in [
        "Content-Type",
        "content-encoding",
        "Host",
        "Content-Length",
        "keep-alive, Transfer-Encoding",
    ] {
        let answer = raw(
            &h,
            &format!(
                "POST /geoserver/wfs HTTP/1.1\r\nContent-Type: text/xml\r\nConnection: {nominated}"
            ),
            GF.as_bytes(),
        )
        .await;
        assert_eq!(answer, (String::new(), 400), "{nominated}");
    }
    assert!(h.nodes.iter().all(|n| n.hits() == 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn class_8_paths_are_read_as_the_container_reads_them() {
    let h = cluster().await;
    for target in [
        "/geoserver/ogc/../rest/workspaces",
        "/geoserver/ogc/%2e%2e/rest/workspaces",
        "/geoserver/styles/..;/rest/workspaces",
        "/geoserver/rest;/workspaces",
        "/geoserver/wms/..%2f/rest/workspaces",
        "/geoserver/gwc/service/%2e%2e/%2e%2e/web/",
        "/geoserver/%2e/web/",
        "/geoserver/ows/../../geoserver/rest/about/version",
    ] {
        kept_from_replicas(get(&h, target).await, target);
    }
    // Encodings every reader decodes alike are decoded: the REST API is still the REST API…
    kept_from_replicas(
        get(&h, "/geoserver/re%73t/workspaces").await,
        "encoded rest",
    );
    // …and an encoded read is still a read.
    reached_a_replica(
        get(&h, "/geoserver/%77ms?request=GetMap&layers=topp:states").await,
        "encoded wms",
    );
    reached_a_replica(
        get(&h, "/geoserver//wms?request=GetMap").await,
        "a double slash",
    );
    let r = h.get("/geoserver/rest%2Fworkspaces").await;
    assert_eq!(
        (r.status, r.node()),
        (StatusCode::BAD_REQUEST, ""),
        "Tomcat refuses %2F: so does geolb"
    );
}
