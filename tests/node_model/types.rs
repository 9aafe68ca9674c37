/// A request exactly as the GeoServer node receives it over HTTP/1.1 (from a proxy that re-frames
/// every request: clean CRLF framing, a de-chunked body).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeRequest {
    /// The method token as sent, e.g. "POST".
    pub method: String,
    /// The raw request-target bytes as they appear on the request line, e.g.
    /// b"/geoserver/wfs;jsessionid=1?request=GetFeature". Origin-form in practice.
    pub target: Vec<u8>,
    /// Header fields in order; names lower-cased ASCII; values raw bytes (may hold obs-text
    /// 0x80-0xFF, tabs; never CR/LF). Repeated names are kept as separate entries.
    pub headers: Vec<(String, Vec<u8>)>,
    /// The whole request body, de-chunked.
    pub body: Vec<u8>,
}

/// What the servlet container (Tomcat 9, as in the official GeoServer images) makes of a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Container {
    /// Tomcat refuses it before any application code runs (e.g. 400 for an invalid URI).
    Rejected { status: u16, why: String },
    /// The request reaches the webapp deployed at the given context path.
    Servlet(ServletView),
    /// The request is not under the GeoServer context path (another webapp / 404).
    OtherContext,
}

/// What GeoServer's code can read from HttpServletRequest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServletView {
    pub method: String,
    /// HttpServletRequest.getRequestURI(): raw, not decoded, path parameters kept.
    pub request_uri: String,
    /// getContextPath() as Tomcat returns it.
    pub context_path: String,
    /// getServletPath() + getPathInfo() concatenated, i.e. the decoded, normalised path inside the
    /// context that servlet/filter mapping uses (starts with "/", or "" for the context root).
    pub path_in_context: String,
    /// getQueryString(): raw, or None.
    pub query_string: Option<String>,
    /// getParameterMap() in Tomcat's order: names and values decoded; from the query string and,
    /// when Tomcat parses a form body, from the body.
    pub parameters: Vec<(String, Vec<String>)>,
    /// getContentType() (the header's value as a Java String), or None.
    pub content_type: Option<String>,
    /// getCharacterEncoding(), or None.
    pub character_encoding: Option<String>,
    /// All headers as getHeaders(name) would give them (names lower-cased).
    pub headers: Vec<(String, String)>,
    /// What getInputStream() still yields (empty when Tomcat consumed it parsing a form).
    pub body: Vec<u8>,
}

/// Where GeoServer's handling of the request lands, and whether it writes or holds state on the
/// node that serves it (the notes' MASTER rows) or is a stateless read (ANY rows).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeVerdict {
    /// true: must reach the master (UI, REST, login, GWC REST/UI, TestWfsPost, OGC API writes, a
    /// WFS/WPS writing or stateful operation, anything carrying a lockId, ...).
    /// false: a stateless read any node may serve (or a request every node refuses identically).
    pub master: bool,
    /// Short human explanation with the source it comes from, e.g.
    /// "Dispatcher.readOpPost: root element Transaction (WFS) -> write".
    pub why: String,
}
