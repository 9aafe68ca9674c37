//! An independent model of how a GeoServer node reads a request: the oracle of the classifier's
//! property tests. It shares no code with `src/classify`, and was written from the sources of the
//! node's readers, each rule citing the file and method it comes from:
//!
//! - [`tomcat`]: the servlet container (Apache Tomcat 9.0.x as in the official GeoServer images):
//!   request line and header checks, path parameters, percent-decoding and normalisation, context
//!   mapping, query and form parameters, `Content-Type` and charset.
//! - [`geoserver`]: GeoServer 2.28 behind it: the Spring Security firewall, Spring's handler
//!   mappings (on the raw request URI), the OWS `Dispatcher` (KVP normalisation, body reading,
//!   XML root, SOAP, service and operation precedence, the fall back to the KVP `request`), and the
//!   routing policy of `shared/notes/geoserver.md` §1.
//!
//! [`node_verdict`] reads each request the ways a node could read it (GeoServer 2.28 with its
//! strict firewall; releases before 2.25 without it; a container or framework that maps the
//! normalised path), and says "master" when any reading does. It is one-sided: when it says
//! master, geolb must send the request to the master or refuse it.
#![allow(dead_code, clippy::all)]

mod types;
pub use types::*;

pub mod geoserver;
pub mod tomcat;

/// What the node makes of a request, over every reading.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reading {
    /// Some reading needs the master.
    pub master: bool,
    /// Why, reading by reading.
    pub why: String,
}

/// Reads `req` as a node deployed at `context` would.
pub fn node_verdict(req: &NodeRequest, context: &str) -> Reading {
    let view = match tomcat::container_read(req, context) {
        Container::Rejected { status, why } => {
            return Reading {
                master: false,
                why: format!("tomcat refuses: {status} {why}"),
            }
        }
        Container::OtherContext => {
            return Reading {
                master: false,
                why: "not under the GeoServer context".into(),
            }
        }
        Container::Servlet(view) => view,
    };
    let strict = geoserver::geoserver_read_with(&view, true);
    let lenient = geoserver::geoserver_read_with(&view, false);
    // A container or framework that maps the container's normalised path rather than the raw URI.
    let mut normalised = view.clone();
    normalised.request_uri = format!("{}{}", context, view.path_in_context.replace('%', "%25"));
    normalised.context_path = context.to_string();
    let mapped = geoserver::geoserver_read_with(&normalised, false);
    Reading {
        master: strict.master || lenient.master || mapped.master,
        why: format!(
            "2.28: {} || pre-2.25: {} || normalised mapping: {}",
            strict.why, lenient.why, mapped.why
        ),
    }
}
