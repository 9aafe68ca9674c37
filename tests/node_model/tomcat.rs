use super::*;

// Reference model of how Apache Tomcat 9.0.x turns one HTTP/1.1 request into what a servlet sees.
//
// Source read: apache/tomcat branch `9.0.x` at 2d575916b0 (9.0.122-dev, Aug 2026); the files cited
// below did not change in any way that matters here since tag 9.0.108 (the Tomcat of the official
// geoserver/docker Dockerfile read). Every rule carries a comment naming the Tomcat file/method.
// Path notation: `CoyoteAdapter.x` = java/org/apache/catalina/connector/CoyoteAdapter.java, etc.
//
// Deployment modelled by `container_read` (= `Config::geoserver_docker()`):
//  * geoserver/docker config/server.xml: one HTTP/1.1 Connector with maxParameterCount="1000"
//    (Tomcat's own default is 10000) and allowTrace="false"; every other Connector attribute at
//    its Tomcat 9 default; one <Context path="${WEBAPP_CONTEXT}"> (default "geoserver", fixed to
//    "/geoserver" by StandardContext.setPath); webapps/ROOT deleted by the Dockerfile, so any
//    request outside the context is a Tomcat 404 (`Container::OtherContext`).
//  * GeoServer WEB-INF/web.xml: DispatcherServlet mapped to "/*" (so no context-root redirect and
//    servletPath is always ""), <tracking-mode>COOKIE</tracking-mode>, no <multipart-config>, no
//    <request-character-encoding>, and, mapped first to "/*", Spring's CharacterEncodingFilter with
//    encoding=UTF-8 and forceEncoding=false: it calls request.setCharacterEncoding("UTF-8") when
//    getCharacterEncoding() is null, before any filter/servlet reads a parameter.
//  * Assumption: the application asks for the parameters before it reads the body (Tomcat parses
//    parameters lazily, on the first getParameter*() call; had the body been read first through
//    getInputStream(), no body parameters would be parsed).
//
// Tomcat 10.1 / 11 and Jetty differences are noted as `DIFF:` comments (not modelled).
// DIFF (Tomcat 10.1.x / 11.0.x, read from branches 10.1.x / 11.0.x): Connector
//   rejectSuspiciousURIs (default false) exists only there; Connector allowBackslash replaces the
//   ALLOW_BACKSLASH system property; checkNormalize is gone; conf/web.xml sets
//   <request-character-encoding>UTF-8 (so getCharacterEncoding() is "UTF-8" and unknown charsets
//   fall back to UTF-8 even without a filter); Tomcat 11 maxParameterCount default 1000; Tomcat 12
//   (main) getContextPath() returns the canonical path, not the raw prefix.
// DIFF (Jetty 9.4 / 10, from general knowledge, NOT verified against Jetty source here): form
//   bodies default to UTF-8, limited by maxFormContentSize (200000 bytes) and maxFormKeys (1000)
//   with an error instead of Tomcat's silent truncation; Jetty 10's default UriCompliance rejects
//   ambiguous URIs (encoded '/', encoded dot segments, empty segments...) with 400 where Tomcat
//   decodes/normalises; getContextPath() is the canonical context path.

// ------------------------------------------------------------------------------------------------
// Configuration
// ------------------------------------------------------------------------------------------------

/// The knobs of the model. Every value is named after the Tomcat attribute it mirrors.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// Connector `maxParameterCount` (Tomcat 9 default 10000, Connector.java; docker server.xml 1000;
    /// DIFF: Tomcat 11 default 1000).
    pub max_parameter_count: i64,
    /// Connector `maxPostSize` (default 2097152 = 2 MiB, Connector.java).
    pub max_post_size: i64,
    /// Protocol `maxHeaderCount` (default 100, AbstractProtocol.java).
    pub max_header_count: i64,
    /// Protocol `maxHttpHeaderSize` (default 8192, AbstractHttp11Protocol.java): request line +
    /// headers.
    pub max_http_header_size: usize,
    /// Connector `maxCookieCount` (default 200, Connector.java).
    pub max_cookie_count: i64,
    /// What the webapp's first filter passes to setCharacterEncoding() when getCharacterEncoding()
    /// is null: Some("UTF-8") for GeoServer's CharacterEncodingFilter, None for a bare webapp.
    pub app_request_encoding_filter: Option<&'static str>,
}

impl Config {
    /// Stock Tomcat 9.0.x defaults, a webapp without any encoding filter.
    pub fn tomcat9_defaults() -> Config {
        Config {
            max_parameter_count: 10000,
            max_post_size: 2 * 1024 * 1024,
            max_header_count: 100,
            max_http_header_size: 8192,
            max_cookie_count: 200,
            app_request_encoding_filter: None,
        }
    }

    /// The official GeoServer Docker image (geoserver/docker): server.xml sets
    /// maxParameterCount="1000"; GeoServer's web.xml installs CharacterEncodingFilter(UTF-8).
    pub fn geoserver_docker() -> Config {
        Config {
            max_parameter_count: 1000,
            app_request_encoding_filter: Some("UTF-8"),
            ..Config::tomcat9_defaults()
        }
    }
}

/// `context` is GeoServer's context path, e.g. "/geoserver" (or "" for ROOT).
pub fn container_read(req: &NodeRequest, context: &str) -> Container {
    container_read_with(req, context, &Config::geoserver_docker())
}

fn reject(status: u16, why: impl Into<String>) -> Container {
    Container::Rejected {
        status,
        why: why.into(),
    }
}

/// The same, with explicit configuration.
pub fn container_read_with(req: &NodeRequest, context: &str, cfg: &Config) -> Container {
    let context = canonical_context_path(context);

    // ---- 1. request line -----------------------------------------------------------------------
    let (raw_uri, query) = match parse_request_line(req) {
        Ok(v) => v,
        Err((s, w)) => return reject(s, w),
    };

    // ---- 2. header block -----------------------------------------------------------------------
    let mut headers = match parse_headers(req, cfg) {
        Ok(h) => h,
        Err((s, w)) => return reject(s, w),
    };

    // ---- 3. Http11Processor.prepareRequest -----------------------------------------------------
    let prep = prepare_request(&raw_uri, &mut headers);
    if let Some((s, w)) = prep.error {
        return reject(s, w);
    }
    let request_uri = prep.request_uri;

    // ---- 4. CoyoteAdapter.postParseRequest -----------------------------------------------------
    // CoyoteAdapter.postParseRequest: `undecodedURI.equals("*")`: OPTIONS * is answered by Tomcat
    // itself (200 + Allow header); any other method with "*" -> sendError(400).
    if request_uri == "*" {
        if req.method == "OPTIONS" {
            return reject(
                200,
                "CoyoteAdapter.postParseRequest: OPTIONS * answered by Tomcat (200, Allow)",
            );
        }
        return reject(
            400,
            "CoyoteAdapter.postParseRequest: request-target \"*\" with a method other than OPTIONS",
        );
    }
    // CoyoteAdapter.postParseRequest: Method.CONNECT -> sendError(501).
    if req.method == "CONNECT" {
        return reject(501, "CoyoteAdapter.postParseRequest: CONNECT -> 501");
    }
    let decoded = match decode_and_normalize(request_uri.as_bytes()) {
        Ok(d) => d,
        Err(w) => return reject(400, w),
    };

    // Mapper.internalMap: context chosen on the decoded, normalised URI, case-sensitively
    // (`uri.startsWith(context.name)` then end-of-URI or '/').
    if !context_matches(&decoded, &context) {
        // No ROOT webapp in the docker image: StandardHostValve answers 404. (With a ROOT context
        // deployed the request would go there instead; either way it is not GeoServer.)
        return Container::OtherContext;
    }

    // CoyoteAdapter.postParseRequest -> parseSessionCookiesId: GeoServer's tracking mode includes
    // COOKIE, so the Cookie headers are parsed now; ServerCookies.addCookie throws past
    // maxCookieCount and postParseRequest answers 400.
    let cookies = count_cookies(&headers);
    if cfg.max_cookie_count > -1 && cookies > cfg.max_cookie_count {
        return reject(400, format!(
            "CoyoteAdapter.postParseRequest/ServerCookies.addCookie: {} cookies > maxCookieCount {}",
            cookies, cfg.max_cookie_count));
    }

    // CoyoteAdapter.postParseRequest: `!connector.getAllowTrace() && TRACE` -> 405 (allowTrace
    // defaults to false and the docker server.xml sets false explicitly). Case-sensitive.
    if req.method == "TRACE" {
        return reject(
            405,
            "CoyoteAdapter.postParseRequest: TRACE with allowTrace=false -> 405",
        );
    }

    // Mapper.internalMapWrapper: "/*" (wildcard "") matches everything including the empty path,
    // so servletPath = "" and pathInfo = the rest of the decoded URI (null when empty).
    let path_in_context: String = decoded[context.len()..].to_string();

    // StandardContextValve.invoke: requestPath starting (ignoring case) with "/META-INF/" or
    // "/WEB-INF/", or equal to "/META-INF" / "/WEB-INF" -> 404.
    {
        let lower = path_in_context.to_ascii_lowercase();
        if lower.starts_with("/meta-inf/")
            || lower == "/meta-inf"
            || lower.starts_with("/web-inf/")
            || lower == "/web-inf"
        {
            return reject(
                404,
                "StandardContextValve.invoke: direct access to WEB-INF/META-INF -> 404",
            );
        }
    }

    // Request.getContextPath: the *undecoded* prefix of getRequestURI() that decodes/normalises to
    // the context path.
    let context_path = match get_context_path(&request_uri, &context) {
        Some(c) => c,
        None => {
            // Not a Tomcat refusal as such: every getContextPath() call throws. Reported as 500 on
            // the assumption that GeoServer (Spring UrlPathHelper, URL building) calls it.
            return reject(
                500,
                "Request.getContextPath throws IllegalStateException (no prefix of the \
                raw URI normalises to the context path, e.g. >=11 leading '/' with \
                allowMultipleLeadingForwardSlashInPath=false); assumed fatal (500) for GeoServer",
            );
        }
    };

    // ---- 5. what the application reads ---------------------------------------------------------
    let header_view: Vec<(String, String)> = headers
        .iter()
        .map(|h| (h.name.clone(), latin1(&h.value)))
        .collect();

    // coyote Request.getContentType: MimeHeaders.getValue("content-type") = the FIRST such header,
    // its value as an ISO-8859-1 String (ByteChunk.DEFAULT_CHARSET), already trimmed of SP/HT.
    let content_type: Option<String> = headers
        .iter()
        .find(|h| h.name == "content-type")
        .map(|h| latin1(&h.value));

    // coyote Request.getCharacterEncoding -> getCharsetFromContentType -> MediaType.parseMediaType
    // (strict parser; null when the value is not a valid media type); catalina
    // Request.getCharacterEncoding falls back to context.getRequestCharacterEncoding() (none in
    // GeoServer's web.xml nor in Tomcat 9's conf/web.xml; DIFF: Tomcat 10.1/11 conf/web.xml set
    // <request-character-encoding>UTF-8</request-character-encoding>).
    let ct_charset: Option<String> = content_type.as_deref().and_then(media_type_charset);
    // Spring CharacterEncodingFilter (GeoServer web.xml, first filter):
    // `if (forceEncoding || request.getCharacterEncoding() == null) request.setCharacterEncoding(enc)`;
    // catalina Request.setCharacterEncoding -> coyote Request.setCharset, after which
    // getCharacterEncoding() returns Charset.name() ("UTF-8").
    let (character_encoding, body_charset) = match (&ct_charset, cfg.app_request_encoding_filter) {
        (None, Some(enc)) => {
            let cs = lookup_charset(enc).unwrap_or(Cs::Latin1);
            (Some(cs.java_name().to_string()), cs)
        }
        (None, None) => (None, Cs::Latin1),
        // catalina Request.getCharset: coyote getCharset() -> B2CConverter.getCharset(name), an
        // UnsupportedEncodingException is swallowed and the body falls back to
        // org.apache.coyote.Constants.DEFAULT_BODY_CHARSET = ISO-8859-1.
        (Some(name), _) => (
            Some(name.clone()),
            lookup_charset(name).unwrap_or(Cs::Latin1),
        ),
    };

    // The request body as getInputStream() would deliver it before anyone reads it.
    let mut stream: Vec<u8> = if prep.chunked {
        // ChunkedInputFilter: the de-chunked body.
        req.body.clone()
    } else if let Some(cl) = prep.content_length {
        // IdentityInputFilter: exactly Content-Length bytes.
        if (cl as u128) > req.body.len() as u128 {
            return reject(
                400,
                "MODEL-DOMAIN: body shorter than Content-Length; Tomcat would block \
                reading the rest until the socket timeout; not modelled",
            );
        }
        req.body[..cl as usize].to_vec()
    } else {
        // Http11Processor.prepareInputFilters: no Content-Length and no chunked coding -> the
        // VoidInputFilter: the request has no body (any bytes would be read as the next request).
        Vec::new()
    };

    // Request.parseParameters (runs on the first getParameter*() call).
    let mut params = Params::new(cfg.max_parameter_count);
    // Parameters.handleQueryParameters: the query string is always parsed first, with
    // queryStringCharset = Connector URIEncoding (UTF-8; useBodyEncodingForURI=false by default).
    if let Some(q) = &query {
        params.process(q.as_bytes(), Cs::Utf8);
    }
    // Request.parseParameters: MediaType.parseMediaTypeOnly(getContentType()): text before the
    // first ';', String.trim(), lower-cased (Locale.ENGLISH).
    let media = content_type.as_deref().map(media_type_only);
    if media.as_deref() == Some("multipart/form-data") {
        // Request.parseParts(false): no MultipartConfigElement on GeoServer's DispatcherServlet and
        // Context allowCasualMultipartParsing=false -> parts = empty list, body untouched.
    } else if req.method != "POST" {
        // Connector.isParseBodyMethod: parseBodyMethods default "POST" (exact, case-sensitive).
    } else if media.as_deref() != Some("application/x-www-form-urlencoded") {
        // Globals.CONTENT_TYPE_FORM_URL_ENCODING compared with equals().
    } else {
        // coyote Request.getContentLength: -1 when absent or >= Integer.MAX_VALUE.
        let len: i64 = match prep.content_length {
            Some(cl) if cl < i32::MAX as i64 => cl,
            _ => -1,
        };
        if len > 0 {
            if cfg.max_post_size >= 0 && len > cfg.max_post_size {
                // Request.parseParameters: POST_TOO_LARGE, parameters from the body are silently
                // absent, the body is NOT read (still available to getInputStream()).
            } else {
                // Request.readPostBodyFully: consumes exactly len bytes.
                let form: Vec<u8> = stream.drain(..len as usize).collect();
                params.process(&form, body_charset);
            }
        } else if first_header(&headers, "transfer-encoding")
            .map(|v| latin1(v).eq_ignore_ascii_case("chunked"))
            .unwrap_or(false)
        {
            // Request.parseParameters: `"chunked".equalsIgnoreCase(getHeader("transfer-encoding"))`
            // (first TE header only) -> Request.readChunkedPostBody: reads CACHED_POST_LEN (8192)
            // byte buffers; if the running total would exceed maxPostSize it throws
            // (POST_TOO_LARGE) having consumed the buffer that crossed the limit. The model
            // assumes every read returns a full 8 KiB buffer.
            let mut body: Vec<u8> = Vec::new();
            let mut too_large = false;
            let mut pos = 0usize;
            loop {
                if pos >= stream.len() {
                    break; // read() == -1
                }
                let n = std::cmp::min(8192, stream.len() - pos);
                if cfg.max_post_size >= 0 && (body.len() + n) as i64 > cfg.max_post_size {
                    pos += n;
                    too_large = true;
                    break;
                }
                body.extend_from_slice(&stream[pos..pos + n]);
                pos += n;
            }
            stream.drain(..pos);
            if !too_large && !body.is_empty() {
                params.process(&body, body_charset);
            }
        }
    }

    Container::Servlet(ServletView {
        method: req.method.clone(),
        request_uri,
        context_path,
        path_in_context,
        query_string: query,
        parameters: params.map,
        content_type,
        character_encoding,
        headers: header_view,
        body: stream,
    })
}

// ------------------------------------------------------------------------------------------------
// Character classes: org/apache/tomcat/util/http/parser/HttpParser.java (static initialiser).
// Java bytes are signed: every lookup of a byte >= 0x80 indexes the tables with a negative value,
// so isToken/isAbsolutePathRelaxed/isQueryRelaxed are false and isNotRequestTarget is true
// (ArrayIndexOutOfBoundsException branches); isControl is false.
// ------------------------------------------------------------------------------------------------

fn is_control(b: u8) -> bool {
    // HttpParser IS_CONTROL: 0-31 and 127 (only for 0..=127 because of the signed byte).
    b < 32 || b == 127
}

fn is_separator(b: u8) -> bool {
    // HttpParser IS_SEPARATOR.
    matches!(
        b,
        b'(' | b')'
            | b'<'
            | b'>'
            | b'@'
            | b','
            | b';'
            | b':'
            | b'\\'
            | b'"'
            | b'/'
            | b'['
            | b']'
            | b'?'
            | b'='
            | b'{'
            | b'}'
            | b' '
            | b'\t'
    )
}

fn is_token(b: u8) -> bool {
    // HttpParser IS_TOKEN: 0-127, not a control, not a separator.
    b < 128 && !is_control(b) && !is_separator(b)
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

fn is_subdelim(b: u8) -> bool {
    matches!(
        b,
        b'!' | b'$' | b'&' | b'\'' | b'(' | b')' | b'*' | b'+' | b',' | b';' | b'='
    )
}

fn is_userinfo(b: u8) -> bool {
    // HttpParser IS_USERINFO: unreserved / '%' / sub-delims / ':'.
    is_unreserved(b) || b == b'%' || is_subdelim(b) || b == b':'
}

fn is_absolute_path_relaxed(b: u8) -> bool {
    // HttpParser IS_ABSOLUTEPATH_RELAXED: userinfo chars + '@' + '/' (relaxedPathChars default
    // empty).
    is_userinfo(b) || b == b'@' || b == b'/'
}

fn is_query_relaxed(b: u8) -> bool {
    // HttpParser IS_QUERY_RELAXED: absolute-path chars + '?' (relaxedQueryChars default empty).
    is_absolute_path_relaxed(b) || b == b'?'
}

fn is_not_request_target(b: u8) -> bool {
    // HttpParser IS_NOT_REQUEST_TARGET: controls, SP, '"', '#', '<', '>', '\', '^', '`', '{', '|',
    // '}', and (signed byte) everything >= 0x80.
    b >= 128
        || is_control(b)
        || matches!(
            b,
            b' ' | b'"' | b'#' | b'<' | b'>' | b'\\' | b'^' | b'`' | b'{' | b'|' | b'}'
        )
}

/// Header bytes -> Java String: MessageBytes/ByteChunk.toString with ByteChunk.DEFAULT_CHARSET =
/// ISO-8859-1 (one char per byte).
fn latin1(b: &[u8]) -> String {
    b.iter().map(|&c| c as char).collect()
}

/// java.lang.String.trim(): strips chars <= U+0020 at both ends.
fn java_trim(s: &str) -> &str {
    s.trim_matches(|c: char| c <= ' ')
}

/// StandardContext.setPath: null or "/" -> ""; a missing leading '/' is added; a trailing '/' is
/// removed.
fn canonical_context_path(p: &str) -> String {
    let mut s = if p.is_empty() || p == "/" {
        String::new()
    } else if p.starts_with('/') {
        p.to_string()
    } else {
        format!("/{}", p)
    };
    if s.ends_with('/') {
        s.pop();
    }
    s
}

// ------------------------------------------------------------------------------------------------
// 1. Request line: Http11InputBuffer.parseRequestLine
// ------------------------------------------------------------------------------------------------

fn parse_request_line(req: &NodeRequest) -> Result<(String, Option<String>), (u16, String)> {
    // Http11InputBuffer.parseRequestLine phase 2: the method is read up to SP/HT; any non-token
    // byte -> IllegalArgumentException -> Http11Processor.service answers 400. (A method containing
    // SP/HT would re-split the request line, which ends in a 400 as well.)
    if let Some(b) = req.method.bytes().find(|&b| !is_token(b)) {
        return Err((
            400,
            format!(
                "Http11InputBuffer.parseRequestLine: method byte 0x{:02x} is not a token",
                b
            ),
        ));
    }
    let t = &req.target;
    if t.is_empty() {
        // An empty target makes "HTTP/1.1" the target and leaves no protocol: the parser throws
        // (iib.invalidPhase) -> 400.
        return Err((
            400,
            "Http11InputBuffer.parseRequestLine: empty request-target".into(),
        ));
    }
    let mut qpos: Option<usize> = None;
    for (i, &b) in t.iter().enumerate() {
        if b == b' ' || b == b'\t' {
            // Phase 4 ends the target at SP/HT; the remainder is then parsed as the protocol,
            // where ' ' (and anything not in "HTTP/." + digits) -> iib.invalidHttpProtocol -> 400.
            return Err((
                400,
                "Http11InputBuffer.parseRequestLine: SP/HT inside the request-target".into(),
            ));
        }
        if b == b'?' && qpos.is_none() {
            // parseRequestLine: the first '?' splits path and query.
            qpos = Some(i);
        } else if qpos.is_some() && !is_query_relaxed(b) {
            // parseRequestLine: `parsingRequestLineQPos != -1 && !httpParser.isQueryRelaxed(chr)`:
            // in the query only pchar / '/' / '?' are allowed (relaxedQueryChars default empty).
            return Err((
                400,
                format!(
                    "Http11InputBuffer.parseRequestLine: byte 0x{:02x} not allowed in the query",
                    b
                ),
            ));
        } else if qpos.is_none() && is_not_request_target(b) {
            // parseRequestLine: `httpParser.isNotRequestTargetRelaxed(chr)`.
            return Err((400, format!("Http11InputBuffer.parseRequestLine: byte 0x{:02x} not allowed in the request-target", b)));
        }
    }
    // All bytes are ASCII here, so the Latin-1 conversion is exact.
    match qpos {
        Some(q) => Ok((latin1(&t[..q]), Some(latin1(&t[q + 1..])))),
        None => Ok((latin1(t), None)),
    }
}

// ------------------------------------------------------------------------------------------------
// 2. Headers: Http11InputBuffer.parseHeaders / parseHeader / skipLine
// ------------------------------------------------------------------------------------------------

#[derive(Clone, Debug)]
struct Header {
    name: String,
    /// The value bytes as Tomcat stores them: leading and trailing SP/HT removed.
    value: Vec<u8>,
}

fn parse_headers(req: &NodeRequest, cfg: &Config) -> Result<Vec<Header>, (u16, String)> {
    // Http11InputBuffer.parseHeaders: `byteBuffer.position() > headerBufferSize` ->
    // "Request header is too large" -> 400. The model counts the request line and header block as
    // the re-framing proxy writes them ("M SP target SP HTTP/1.1 CRLF", "name: value CRLF", CRLF).
    // Exact when the whole head arrives in one read; the real check runs per header, same result.
    let mut size = req.method.len() + 1 + req.target.len() + 1 + 8 + 2;
    for (n, v) in &req.headers {
        size += n.len() + 2 + v.len() + 2;
    }
    size += 2;
    if size > cfg.max_http_header_size {
        return Err((
            400,
            format!(
                "Http11InputBuffer.parseHeaders: request head {} bytes > maxHttpHeaderSize {}",
                size, cfg.max_http_header_size
            ),
        ));
    }
    // MimeHeaders.createHeader: `limit > -1 && count >= limit` -> IllegalStateException -> 400.
    if cfg.max_header_count > -1 && req.headers.len() as i64 > cfg.max_header_count {
        return Err((
            400,
            format!(
                "MimeHeaders.createHeader: {} headers > maxHeaderCount {}",
                req.headers.len(),
                cfg.max_header_count
            ),
        ));
    }
    let mut out = Vec::with_capacity(req.headers.len());
    for (name, value) in &req.headers {
        // parseHeader HEADER_NAME: ':' on an empty name, or a non-token byte -> skipLine(false);
        // rejectIllegalHeader (default true, AbstractHttp11Protocol) -> IllegalArgumentException
        // -> 400. (Since 9.0.35; before that only names were checked, as rejectIllegalHeaderName.
        // DIFF: Tomcat 11 hard-codes rejectIllegalHeader = true.)
        if name.is_empty() {
            return Err((
                400,
                "Http11InputBuffer.parseHeader: empty header name".into(),
            ));
        }
        if let Some(b) = name.bytes().find(|&b| !is_token(b)) {
            return Err((
                400,
                format!(
                    "Http11InputBuffer.parseHeader: header name byte 0x{:02x} is not a token",
                    b
                ),
            ));
        }
        // parseHeader: A-Z in names are lower-cased in place.
        let lname = name.to_ascii_lowercase();
        // parseHeader HEADER_VALUE_START: leading SP/HT skipped.
        let start = value
            .iter()
            .position(|&b| b != b' ' && b != b'\t')
            .unwrap_or(value.len());
        let v = &value[start..];
        // parseHeader HEADER_VALUE: `HttpParser.isControl(chr) && chr != HT` -> skipLine(true) ->
        // rejectIllegalHeader -> 400. Bytes 0x80-0xFF are allowed (signed byte, isControl false).
        if let Some(b) = v.iter().copied().find(|&b| is_control(b) && b != b'\t') {
            return Err((
                400,
                format!(
                    "Http11InputBuffer.parseHeader: control byte 0x{:02x} in the value of {}",
                    b, lname
                ),
            ));
        }
        // parseHeader: `headerData.realPos = headerData.lastSignificantChar`: trailing SP/HT cut.
        let end = v
            .iter()
            .rposition(|&b| b != b' ' && b != b'\t')
            .map(|p| p + 1)
            .unwrap_or(0);
        out.push(Header {
            name: lname,
            value: v[..end].to_vec(),
        });
    }
    Ok(out)
}

fn first_header<'a>(headers: &'a [Header], name: &str) -> Option<&'a [u8]> {
    // MimeHeaders.getValue: first match, names compared ignoring case.
    headers
        .iter()
        .find(|h| h.name == name)
        .map(|h| h.value.as_slice())
}

// ------------------------------------------------------------------------------------------------
// 3. Http11Processor.prepareRequest / prepareInputFilters / AbstractProcessor.parseHost
// ------------------------------------------------------------------------------------------------

struct Prepared {
    /// Last status set by prepareRequest (each check calls response.setStatus, so the last wins).
    error: Option<(u16, String)>,
    /// getRequestURI() after absolute-form handling.
    request_uri: String,
    chunked: bool,
    /// Content-Length after validation (None when absent or removed because of chunked).
    content_length: Option<i64>,
}

fn prepare_request(raw_uri: &str, headers: &mut Vec<Header>) -> Prepared {
    let mut error: Option<(u16, String)> = None;
    let mut set = |s: u16, w: String| error = Some((s, w));

    // Http11Processor.prepareExpectation (HTTP/1.1): first "expect" value, trim(),
    // equalsIgnoreCase("100-continue"); anything else -> 417.
    if let Some(v) = first_header(headers, "expect") {
        if !java_trim(&latin1(v)).eq_ignore_ascii_case("100-continue") {
            set(
                417,
                "Http11Processor.prepareExpectation: Expect other than 100-continue -> 417".into(),
            );
        }
    }

    // Http11Processor.prepareRequest: MimeHeaders.getUniqueValue("host") throws on a second Host
    // -> 400; HTTP/1.1 without Host -> 400.
    let hosts: Vec<&Header> = headers.iter().filter(|h| h.name == "host").collect();
    let host_value: Option<Vec<u8>> = if hosts.len() == 1 {
        Some(hosts[0].value.clone())
    } else {
        None
    };
    if hosts.len() > 1 {
        set(
            400,
            "Http11Processor.prepareRequest: multiple Host headers -> 400".into(),
        );
    }
    if host_value.is_none() {
        set(
            400,
            "Http11Processor.prepareRequest: no (unique) Host header in HTTP/1.1 -> 400".into(),
        );
    }

    // Http11Processor.prepareRequest: absolute-form. `uriBC.startsWithIgnoreCase("http", 0)`.
    let ub = raw_uri.as_bytes();
    let mut path: Vec<u8> = ub.to_vec();
    if ub.len() >= 4 && ub[..4].eq_ignore_ascii_case(b"http") {
        let mut pos = 4;
        if ub.len() > pos && ub[pos].eq_ignore_ascii_case(&b's') {
            pos += 1;
        }
        if ub.len() >= pos + 3 && &ub[pos..pos + 3] == b"://" {
            pos += 3;
            let slash = ub[pos..].iter().position(|&b| b == b'/').map(|p| p + pos);
            let mut at = ub[pos..].iter().position(|&b| b == b'@').map(|p| p + pos);
            if let (Some(s), Some(a)) = (slash, at) {
                if a > s {
                    at = None; // the first '@' is in the path
                }
            }
            let slash_pos = match slash {
                None => {
                    // No path: getRequestURI() becomes "/".
                    path = b"/".to_vec();
                    ub.len()
                }
                Some(s) => {
                    path = ub[s..].to_vec();
                    s
                }
            };
            if let Some(a) = at {
                // Userinfo must be HttpParser.isUserInfo chars, else 400.
                if ub[pos..a].iter().any(|&b| !is_userinfo(b)) {
                    set(
                        400,
                        "Http11Processor.prepareRequest: invalid userinfo in absolute-form -> 400"
                            .into(),
                    );
                }
                pos = a + 1;
            }
            if let Some(hv) = &host_value {
                // The Host header must equal (ignoring ASCII case) the authority; mismatch -> 400
                // (allowHostHeaderMismatch default false; DIFF: hard-coded in Tomcat 11).
                let auth = if pos <= slash_pos {
                    &ub[pos..slash_pos]
                } else {
                    &ub[0..0]
                };
                if !hv.eq_ignore_ascii_case(auth) {
                    set(400, "Http11Processor.prepareRequest: Host header differs from the absolute-form authority -> 400".into());
                }
            }
        } else {
            set(400, "Http11Processor.prepareRequest: request-target starts with \"http\" but is not http(s):// -> 400".into());
        }
    }

    // Http11Processor.prepareRequest: every byte of the (path part of the) URI must be
    // HttpParser.isAbsolutePathRelaxed (pchar or '/'; '%' allowed, validated later) else 400.
    if let Some(b) = path.iter().copied().find(|&b| !is_absolute_path_relaxed(b)) {
        set(
            400,
            format!(
                "Http11Processor.prepareRequest: byte 0x{:02x} not allowed in the path -> 400",
                b
            ),
        );
    }

    // Http11Processor.prepareInputFilters: Transfer-Encoding, all headers, TokenList.parseTokenList
    // (lower-cased tokens); invalid list -> 400; addInputFilter: after "chunked" anything -> 400,
    // "chunked" -> ChunkedInputFilter, any other coding (incl. "identity") -> 501.
    let mut chunked = false;
    let te_values: Vec<Vec<u8>> = headers
        .iter()
        .filter(|h| h.name == "transfer-encoding")
        .map(|h| h.value.clone())
        .collect();
    if !te_values.is_empty() {
        let mut codings = Vec::new();
        let mut ok = true;
        for v in &te_values {
            if !parse_token_list(&latin1(v), &mut codings) {
                ok = false;
            }
        }
        if ok {
            for c in codings {
                if chunked {
                    set(
                        400,
                        "Http11Processor.addInputFilter: coding after chunked -> 400".into(),
                    );
                    break;
                }
                if c == "chunked" {
                    chunked = true;
                } else {
                    set(501, format!("Http11Processor.addInputFilter: unsupported transfer-coding {:?} -> 501", c));
                }
            }
        } else {
            set(
                400,
                "Http11Processor.prepareInputFilters: invalid Transfer-Encoding -> 400".into(),
            );
        }
    }

    // Http11Processor.prepareInputFilters: coyote Request.getContentLengthLong ->
    // MimeHeaders.getUniqueValue("content-length") (a second header, even identical -> 400) ->
    // Ascii.parseLong (1+ ASCII digits, no sign, no overflow past Long.MAX_VALUE, else 400).
    let mut content_length: Option<i64> = None;
    let cls: Vec<&Header> = headers
        .iter()
        .filter(|h| h.name == "content-length")
        .collect();
    if cls.len() > 1 {
        set(
            400,
            "Http11Processor.prepareInputFilters: multiple Content-Length headers -> 400".into(),
        );
    } else if cls.len() == 1 {
        match parse_ascii_long(&cls[0].value) {
            Some(n) => content_length = Some(n),
            None => set(
                400,
                "Http11Processor.prepareInputFilters: non-numeric Content-Length -> 400".into(),
            ),
        }
    }
    if chunked && content_length.is_some() {
        // prepareInputFilters: chunked wins; headers.removeHeader("content-length").
        headers.retain(|h| h.name != "content-length");
        content_length = None;
    }

    // AbstractProcessor.parseHost: Host.parse (HttpParser.readHostDomainName / readHostIPv4 /
    // readHostIPv6) and the port digits; IllegalArgumentException -> 400. Empty Host is allowed.
    if let Some(hv) = &host_value {
        if !hv.is_empty() && !host_is_valid(hv) {
            set(
                400,
                format!(
                    "AbstractProcessor.parseHost: invalid Host {:?} -> 400",
                    latin1(hv)
                ),
            );
        }
    }

    Prepared {
        error,
        request_uri: latin1(&path),
        chunked,
        content_length,
    }
}

/// Ascii.parseLong.
fn parse_ascii_long(b: &[u8]) -> Option<i64> {
    if b.is_empty() || !b[0].is_ascii_digit() {
        return None;
    }
    let mut n: i64 = 0;
    for &c in b {
        if !c.is_ascii_digit() {
            return None;
        }
        n = n.checked_mul(10)?.checked_add((c - b'0') as i64)?;
    }
    Some(n)
}

/// A tiny reader over chars with the operations of HttpParser (skipWhitespace, readToken, ...).
struct Rd<'a> {
    s: &'a [char],
    p: usize,
}

impl<'a> Rd<'a> {
    fn peek(&self) -> Option<char> {
        self.s.get(self.p).copied()
    }
    /// HttpParser.skipWhitespace: SP and HT.
    fn skip_ws(&mut self) {
        while matches!(self.peek(), Some(' ') | Some('\t')) {
            self.p += 1;
        }
    }
    /// HttpParser.readToken: Some("") at EOF, None when a non-token char follows directly.
    fn read_token(&mut self) -> Option<String> {
        self.skip_ws();
        let st = self.p;
        while let Some(c) = self.peek() {
            if (c as u32) < 128 && is_token(c as u8) {
                self.p += 1;
            } else {
                break;
            }
        }
        if self.p == st && self.peek().is_some() {
            None
        } else {
            Some(self.s[st..self.p].iter().collect())
        }
    }
    /// HttpParser.skipConstant for a one-char constant: 0 = FOUND, 1 = NOT_FOUND, 2 = EOF.
    fn skip_const(&mut self, c: char) -> u8 {
        self.skip_ws();
        match self.peek() {
            None => 2,
            Some(x) if x == c => {
                self.p += 1;
                0
            }
            _ => 1,
        }
    }
    /// HttpParser.readQuotedString(returnQuoted = true).
    fn read_quoted(&mut self) -> Option<String> {
        self.skip_ws();
        if self.peek() != Some('"') {
            return None;
        }
        self.p += 1;
        let mut out = String::from("\"");
        loop {
            match self.peek() {
                None => return None,
                Some('"') => {
                    self.p += 1;
                    break;
                }
                Some('\\') => {
                    self.p += 1;
                    let c = self.peek()?;
                    self.p += 1;
                    out.push('\\');
                    out.push(c);
                }
                Some(c) => {
                    self.p += 1;
                    out.push(c);
                }
            }
        }
        out.push('"');
        Some(out)
    }
}

/// TokenList.parseTokenList(Reader, Collection): adds lower-cased tokens; true only if at least one
/// valid token and no invalid element.
fn parse_token_list(v: &str, out: &mut Vec<String>) -> bool {
    let chars: Vec<char> = v.chars().collect();
    let mut r = Rd { s: &chars, p: 0 };
    let mut invalid = false;
    let mut valid = false;
    loop {
        match r.read_token() {
            None => {
                if r.skip_const(',') != 0 {
                    invalid = true;
                    // HttpParser.skipUntil(input, 0, ','): consume through the next ','.
                    while let Some(c) = r.peek() {
                        r.p += 1;
                        if c == ',' {
                            break;
                        }
                    }
                }
                continue;
            }
            Some(e) if e.is_empty() => break,
            Some(e) => match r.skip_const(',') {
                2 => {
                    valid = true;
                    out.push(e.to_ascii_lowercase());
                    break;
                }
                0 => {
                    valid = true;
                    out.push(e.to_ascii_lowercase());
                }
                _ => {
                    invalid = true;
                    while let Some(c) = r.peek() {
                        r.p += 1;
                        if c == ',' {
                            break;
                        }
                    }
                }
            },
        }
    }
    valid && !invalid
}

/// AbstractProcessor.parseHost + Host.parse. Returns false where Tomcat answers 400.
fn host_is_valid(v: &[u8]) -> bool {
    // Host.parse: first char alpha -> readHostDomainName; digit -> readHostIPv4 (which falls back
    // to readHostDomainName on every non-IPv4 shape and rejects exactly what the domain parser
    // rejects, so the domain parser alone decides); '[' -> readHostIPv6; anything else -> invalid.
    let port: &[u8] = match v[0] {
        b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' => match domain_name(v) {
            Some(rest) => rest,
            None => return false,
        },
        b'[' => match ipv6(v) {
            Some(rest) => rest,
            None => return false,
        },
        _ => return false,
    };
    // HttpParser.validatePort + AbstractProcessor.parseHost: after ':' only ASCII digits (possibly
    // none), value <= Integer.MAX_VALUE (HttpParser.readInteger -> Integer.parseInt).
    if port.iter().any(|b| !b.is_ascii_digit()) {
        return false;
    }
    let mut n: u64 = 0;
    for &d in port {
        n = n * 10 + (d - b'0') as u64;
        if n > i32::MAX as u64 {
            return false;
        }
    }
    true
}

/// HttpParser.readHostDomainName (DomainParseState): returns the bytes after ':' (empty slice
/// when there is no port), None when invalid.
fn domain_name(v: &[u8]) -> Option<&[u8]> {
    #[derive(PartialEq, Clone, Copy)]
    enum St {
        New,
        Alpha,
        Numeric,
        Period,
        Hyphen,
    }
    // (allowsHyphen, allowsPeriod, allowsEnd) per DomainParseState.
    fn allows(s: St) -> (bool, bool, bool) {
        match s {
            St::New => (false, false, false),
            St::Alpha | St::Numeric => (true, true, true),
            St::Period => (false, false, true),
            St::Hyphen => (true, false, false),
        }
    }
    let mut st = St::New;
    for (i, &c) in v.iter().enumerate() {
        let (hy, pe, en) = allows(st);
        st = if c.is_ascii_alphabetic() {
            St::Alpha
        } else if c.is_ascii_digit() {
            St::Numeric
        } else if c == b'.' && pe {
            St::Period
        } else if c == b':' && en {
            return Some(&v[i + 1..]);
        } else if c == b'-' && hy {
            St::Hyphen
        } else {
            return None;
        };
    }
    if allows(st).2 {
        Some(&v[v.len()..])
    } else {
        None
    }
}

/// HttpParser.readHostIPv6 (+ readHostIPv4 with inIPv6 = true for an embedded IPv4 tail).
fn ipv6(v: &[u8]) -> Option<&[u8]> {
    let mut i = 1; // v[0] == '['
    let mut h16_count = 0;
    let mut h16_size = 0;
    let mut double_colon = false;
    let mut preceding_colons = 0;
    let mut mark = 1usize;
    loop {
        let c = v.get(i).copied();
        i += 1;
        if h16_count == 0 && preceding_colons == 1 && c != Some(b':') {
            return None; // http.singleColonStart
        }
        match c {
            Some(h) if h.is_ascii_hexdigit() => {
                if h16_size == 0 {
                    preceding_colons = 0;
                    h16_count += 1;
                }
                h16_size += 1;
                if h16_size > 4 {
                    return None;
                }
            }
            Some(b':') => {
                if preceding_colons >= 2 {
                    return None;
                }
                if preceding_colons == 1 {
                    if double_colon {
                        return None;
                    }
                    double_colon = true;
                    h16_count += 1;
                }
                preceding_colons += 1;
                mark = i;
                h16_size = 0;
            }
            Some(b']') => {
                if preceding_colons == 1 {
                    return None;
                }
                break;
            }
            Some(b'.') => {
                if h16_count == 7 || (h16_count < 7 && double_colon) {
                    // reader.reset() to the mark taken after the last ':'; readHostIPv4(inIPv6).
                    let mut j = mark;
                    let mut octet: i32 = -1;
                    let mut octets = 1;
                    let mut colon_end = false;
                    loop {
                        let d = v.get(j).copied();
                        j += 1;
                        match d {
                            Some(b'.') => {
                                if octet > -1 && octet < 256 {
                                    octets += 1;
                                    octet = -1;
                                } else {
                                    return None;
                                }
                            }
                            Some(n) if n.is_ascii_digit() => {
                                if octet == -1 {
                                    octet = (n - b'0') as i32;
                                } else if octet == 0 {
                                    return None; // leading zero
                                } else {
                                    octet = octet * 10 + (n - b'0') as i32;
                                    if octet > 255 {
                                        return None; // falls back to the domain parser, which rejects ']'
                                    }
                                }
                            }
                            Some(b']') => break,
                            Some(b':') => {
                                colon_end = true;
                                break;
                            }
                            // EOF -> noClosingBracket; anything else illegalCharacterIpv4.
                            _ => return None,
                        }
                    }
                    if octets != 4 || octet < 0 || octet > 255 {
                        return None;
                    }
                    if colon_end {
                        // Quirk: readHostIPv4 stops at ':' without the ']' and readHostIPv6 then
                        // reads the next char: EOF -> accepted without port ("[::1.2.3.4:" is a
                        // valid Host); anything else -> illegalAfterIpv6, or a port whose colon
                        // position is off so parseHost's digit check fails -> 400.
                        return if j == v.len() {
                            Some(&v[v.len()..])
                        } else {
                            None
                        };
                    }
                    i = j;
                    h16_count += 1;
                    break;
                } else {
                    return None;
                }
            }
            _ => return None,
        }
    }
    if h16_count > 8 || (h16_count != 8 && !double_colon) {
        return None;
    }
    match v.get(i) {
        None => Some(&v[v.len()..]),
        Some(b':') => Some(&v[i + 1..]),
        _ => None,
    }
}

// ------------------------------------------------------------------------------------------------
// 4. CoyoteAdapter.postParseRequest: path parameters, %-decoding, normalisation, URI charset
// ------------------------------------------------------------------------------------------------

/// CoyoteAdapter.parsePathParameters on the *undecoded* URI: from byte 1 on, every ';' starts a
/// path parameter that runs to the next ';' or '/' (exclusive) and is cut out; repeated until no
/// ';' is left. Works per segment because '/' ends a parameter. (;jsessionid is only *used* when
/// the tracking modes include URL: GeoServer's web.xml says COOKIE only, but the bytes are still
/// removed.) An encoded %3B is not a separator.
pub fn strip_path_parameters(uri: &[u8]) -> Vec<u8> {
    let mut b = uri.to_vec();
    let mut from = 1;
    loop {
        let semi = match b.iter().skip(from).position(|&c| c == b';') {
            Some(p) => p + from,
            None => break,
        };
        let end = b[semi + 1..]
            .iter()
            .position(|&c| c == b';' || c == b'/')
            .map(|p| p + semi + 1);
        match end {
            Some(e) => {
                b.drain(semi..e);
            }
            None => b.truncate(semi),
        }
        from = semi;
    }
    b
}

/// UDecoder.convert(ByteChunk, encodedSolidusHandling, encodedReverseSolidusHandling) for the
/// path: "%xx" -> byte; '+' is NOT special; a '%' without two following hex digits -> exception
/// (400); %2F with encodedSolidusHandling = reject (Connector default: UDecoder.ALLOW_ENCODED_SLASH
/// system property false) -> 400; %5C with encodedReverseSolidusHandling = decode (default) ->
/// '\' (then rejected by normalize); %25 -> '%' (no pass-through mode active).
pub fn url_decode_path(b: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(b.len());
    let mut j = 0;
    while j < b.len() {
        if b[j] != b'%' {
            out.push(b[j]);
            j += 1;
            continue;
        }
        // UDecoder.convert: `if (j + 2 >= end) throw EXCEPTION_EOF`.
        if j + 2 >= b.len() {
            return Err("UDecoder.convert: '%' at end of path (uDecoder.eof) -> 400".into());
        }
        let (h1, h2) = (b[j + 1], b[j + 2]);
        if !h1.is_ascii_hexdigit() || !h2.is_ascii_hexdigit() {
            return Err("UDecoder.convert: '%' not followed by two hex digits -> 400".into());
        }
        let v = hex(h1) * 16 + hex(h2);
        if v == b'/' {
            return Err("UDecoder.convert: %2F with encodedSolidusHandling=reject -> 400".into());
        }
        out.push(v);
        j += 3;
    }
    Ok(out)
}

fn hex(c: u8) -> u8 {
    match c {
        b'0'..=b'9' => c - b'0',
        b'a'..=b'f' => c - b'a' + 10,
        _ => c - b'A' + 10,
    }
}

/// CoyoteAdapter.normalize (on the %-decoded bytes). Returns None where Tomcat answers 400.
pub fn normalize_coyote(input: &[u8]) -> Option<Vec<u8>> {
    let mut b = input.to_vec();
    // "An empty URL is not acceptable"; must start with '/' (or '\').
    if b.is_empty() || (b[0] != b'/' && b[0] != b'\\') {
        return None;
    }
    // '\' -> '/' only if org.apache.catalina.connector.CoyoteAdapter.ALLOW_BACKSLASH (default
    // false) else reject; a NUL byte -> reject.
    // DIFF: Tomcat 10.1+/11: Connector attribute allowBackslash (default false), same effect.
    if b.iter().any(|&c| c == b'\\' || c == 0) {
        return None;
    }
    // Replace "//" with "/" (before any dot-segment handling).
    let mut c = Vec::with_capacity(b.len());
    for &x in &b {
        if x == b'/' && c.last() == Some(&b'/') {
            continue;
        }
        c.push(x);
    }
    b = c;
    // A trailing "/." or "/.." gets an extra '/' appended (and keeps it).
    let n = b.len();
    if n >= 2
        && b[n - 1] == b'.'
        && (b[n - 2] == b'/' || (n >= 3 && b[n - 2] == b'.' && b[n - 3] == b'/'))
    {
        b.push(b'/');
    }
    // Resolve every "/./" (searching again from the same index).
    let mut idx = 0;
    while let Some(p) = find(&b, b"/./", idx) {
        b.drain(p..p + 2);
        idx = p;
    }
    // Resolve every "/../"; one at index 0 would leave the root -> reject.
    let mut idx = 0;
    while let Some(p) = find(&b, b"/../", idx) {
        if p == 0 {
            return None;
        }
        let p2 = b[..p].iter().rposition(|&x| x == b'/').unwrap_or(0);
        b.drain(p2..p + 3);
        idx = p2;
    }
    Some(b)
}

fn find(h: &[u8], n: &[u8], from: usize) -> Option<usize> {
    if h.len() < n.len() {
        return None;
    }
    (from..=h.len() - n.len()).find(|&i| &h[i..i + n.len()] == n)
}

/// CoyoteAdapter.checkNormalize (deprecated, still called in 9.0.x; DIFF: removed in 10.1+):
/// after charset conversion no '\', NUL, "//", trailing "/." or "/..", "/./", "/../".
fn check_normalize(s: &str) -> bool {
    let c: Vec<char> = s.chars().collect();
    if c.iter().any(|&x| x == '\\' || x == '\0') {
        return false;
    }
    if c.windows(2).any(|w| w == ['/', '/']) {
        return false;
    }
    let n = c.len();
    if n >= 2
        && c[n - 1] == '.'
        && (c[n - 2] == '/' || (n >= 3 && c[n - 2] == '.' && c[n - 3] == '/'))
    {
        return false;
    }
    !(s.contains("/./") || s.contains("/../"))
}

/// The decoded, normalised URI the Mapper sees (CoyoteAdapter.postParseRequest order:
/// parsePathParameters -> UDecoder.convert -> normalize -> convertURI -> checkNormalize).
/// Err = the 400 reason.
pub fn decode_and_normalize(raw_uri: &[u8]) -> Result<String, String> {
    let stripped = strip_path_parameters(raw_uri);
    let decoded = url_decode_path(&stripped)?;
    let norm = normalize_coyote(&decoded).ok_or_else(|| {
        "CoyoteAdapter.normalize: empty/relative path, '\\' or %5C (ALLOW_BACKSLASH=false), NUL/%00, \
         or '..' above the root -> 400".to_string()
    })?;
    // CoyoteAdapter.convertURI: B2CConverter(URIEncoding = UTF-8, replaceOnError = true), which
    // for UTF-8 uses Tomcat's own Utf8Decoder: invalid sequences -> U+FFFD per maximal subpart
    // (Unicode table 3-7 checks), exactly what from_utf8_lossy does; never a 400.
    let s = String::from_utf8_lossy(&norm).into_owned();
    if !check_normalize(&s) {
        return Err("CoyoteAdapter.checkNormalize -> 400".into());
    }
    Ok(s)
}

/// Mapper.internalMap for a host holding the one context: `uri.startsWith(context.name)` and then
/// either the end of the URI or '/'. Case-sensitive. "" (ROOT) matches everything.
fn context_matches(decoded: &str, context: &str) -> bool {
    context.is_empty()
        || (decoded.starts_with(context)
            && (decoded.len() == context.len() || decoded.as_bytes()[context.len()] == b'/'))
}

/// Request.getContextPath (Tomcat 8.5.x-10.1.x/11.0.x; DIFF: Tomcat 12 returns the canonical
/// path): walk the raw getRequestURI() slash by slash until the prefix, with path parameters
/// removed, URL-decoded and RequestUtil.normalize()d, equals the canonical context path; return
/// that raw prefix. None = IllegalStateException.
pub fn get_context_path(request_uri: &str, canonical: &str) -> Option<String> {
    // mappingData.contextSlashCount: number of '/' in the context path; 0 -> "".
    let mut last_slash = canonical.matches('/').count();
    if last_slash == 0 {
        return Some(String::new());
    }
    let full: Vec<char> = request_uri.chars().collect();
    // Context allowMultipleLeadingForwardSlashInPath default false: keep only the last of the
    // leading '/'s. NOTE: Tomcat does not reset `pos` after the substring, so the slash search
    // below starts (number of removed slashes + 1) chars into the shortened URI.
    let mut pos: isize = 0;
    loop {
        pos += 1;
        if !((pos as usize) < full.len() && full[pos as usize] == '/') {
            break;
        }
    }
    pos -= 1;
    let uri: Vec<char> = full[(pos as usize).min(full.len())..].to_vec();
    let next_slash = |from: isize| -> isize {
        // Request.nextSlash: '/' only (the %2F branch needs encodedSolidusHandling=decode).
        let mut p = from.max(0) as usize;
        while p < uri.len() {
            if uri[p] == '/' {
                return p as isize;
            }
            p += 1;
        }
        -1
    };
    while last_slash > 0 {
        pos = next_slash(pos + 1);
        if pos == -1 {
            break;
        }
        last_slash -= 1;
    }
    let candidate_of = |pos: isize| -> String {
        if pos == -1 {
            uri.iter().collect()
        } else {
            uri[..pos as usize].iter().collect()
        }
    };
    let matches = |cand: &str| -> bool {
        let c = remove_path_parameters(cand);
        match url_decode_string(&c) {
            Some(d) => request_util_normalize(&d).as_deref() == Some(canonical),
            None => false,
        }
    };
    let mut m = matches(&candidate_of(pos));
    while !m && pos != -1 {
        pos = next_slash(pos + 1);
        m = matches(&candidate_of(pos));
    }
    if m {
        Some(candidate_of(pos))
    } else {
        None
    }
}

/// Request.removePathParameters: each ';' up to the next '/' is removed.
fn remove_path_parameters(s: &str) -> String {
    let mut out = String::new();
    let mut in_param = false;
    for c in s.chars() {
        if c == ';' {
            in_param = true;
        } else if c == '/' {
            in_param = false;
        }
        if !in_param {
            out.push(c);
        }
    }
    out
}

/// UDecoder.URLDecode(String, UTF-8) (decode both %2F and %5C): %xx -> bytes, then UTF-8 with
/// replacement. None = IllegalArgumentException.
fn url_decode_string(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            // `if (ix + 2 > len) throw` with ix just after the '%'.
            if i + 3 > b.len() {
                return None;
            }
            let (h1, h2) = (b[i + 1], b[i + 2]);
            if !h1.is_ascii_hexdigit() || !h2.is_ascii_hexdigit() {
                return None;
            }
            out.push(hex(h1) * 16 + hex(h2));
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    Some(java_utf8_decode(&out))
}

/// RequestUtil.normalize(path, replaceBackSlash = true). None = "escapes the root" or NUL.
fn request_util_normalize(path: &str) -> Option<String> {
    if path.contains('\0') {
        return None;
    }
    let mut n = path.replace('\\', "/");
    if !n.starts_with('/') {
        n = format!("/{}", n);
    }
    let mut added = false;
    if n.ends_with("/.") || n.ends_with("/..") {
        n.push('/');
        added = true;
    }
    while let Some(i) = n.find("//") {
        n.replace_range(i..i + 1, "");
    }
    while let Some(i) = n.find("/./") {
        n.replace_range(i..i + 2, "");
    }
    while let Some(i) = n.find("/../") {
        if i == 0 {
            return None;
        }
        let i2 = n[..i].rfind('/').unwrap_or(0);
        n.replace_range(i2..i + 3, "");
    }
    if n.len() > 1 && added {
        n.pop();
    }
    Some(n)
}

/// Rfc6265CookieProcessor.parseCookieHeader -> Cookie.parseCookieRfc6265: the number of
/// ServerCookies.addCookie() calls (cookiesWithoutEquals default "name": a bare name counts).
/// Approximation: a header starting with "$Version" (RFC 2109 parsing) is counted with the same
/// rules, minus names starting with '$'.
fn count_cookies(headers: &[Header]) -> i64 {
    let mut total = 0;
    for h in headers.iter().filter(|h| h.name == "cookie") {
        let b = &h.value;
        let rfc2109 = {
            let s = b
                .iter()
                .position(|&c| c != b' ' && c != b'\t')
                .unwrap_or(b.len());
            b[s..].starts_with(b"$Version")
        };
        let mut p = 0;
        let skip_lws = |p: &mut usize| {
            while *p < b.len() && (b[*p] == b' ' || b[*p] == b'\t') {
                *p += 1;
            }
        };
        let skip_until_semi = |p: &mut usize| {
            while *p < b.len() {
                *p += 1;
                if b[*p - 1] == b';' {
                    break;
                }
            }
        };
        let mut more = true;
        while more {
            skip_lws(&mut p);
            let ns = p;
            while p < b.len() && is_token(b[p]) {
                p += 1;
            }
            let name = &b[ns..p];
            skip_lws(&mut p);
            if p < b.len() && b[p] == b'=' {
                p += 1;
                skip_lws(&mut p);
                // Cookie.readCookieValueRfc6265.
                let mut quoted = false;
                if p < b.len() && b[p] == b'"' {
                    quoted = true;
                    p += 1;
                }
                let mut bad = false;
                while p < b.len() {
                    let c = b[p];
                    let octet = !(c < 0x21
                        || c == b'"'
                        || c == b','
                        || c == b';'
                        || c == b'\\'
                        || c == 0x7f);
                    if octet {
                        p += 1;
                    } else if c == b';' || c == b' ' || c == b'\t' {
                        break;
                    } else if quoted && c == b'"' {
                        p += 1;
                        break;
                    } else {
                        bad = true;
                        break;
                    }
                }
                if bad {
                    skip_until_semi(&mut p);
                    continue;
                }
                skip_lws(&mut p);
            }
            if p >= b.len() {
                more = false;
            } else if b[p] == b';' {
                p += 1;
            } else {
                skip_until_semi(&mut p);
                continue;
            }
            if !name.is_empty() && !(rfc2109 && name[0] == b'$') {
                total += 1;
            }
        }
    }
    total
}

// ------------------------------------------------------------------------------------------------
// Parameters: org/apache/tomcat/util/http/Parameters.java
// ------------------------------------------------------------------------------------------------

struct Params {
    /// LinkedHashMap<String, ArrayList<String>>: names in first-insertion order.
    map: Vec<(String, Vec<String>)>,
    count: i64,
    limit: i64,
}

impl Params {
    fn new(limit: i64) -> Params {
        Params {
            map: Vec::new(),
            count: 0,
            limit,
        }
    }

    /// Parameters.addParameter; Err when the limit is reached.
    fn add(&mut self, name: String, value: String) -> Result<(), ()> {
        // `limit > -1 && parameterCount >= limit` -> IllegalStateException (TOO_MANY_PARAMETERS).
        if self.limit > -1 && self.count >= self.limit {
            return Err(());
        }
        self.count += 1;
        match self.map.iter_mut().find(|(n, _)| *n == name) {
            Some((_, vs)) => vs.push(value),
            None => self.map.push((name, vec![value])),
        }
        Ok(())
    }

    /// Parameters.processParameters(byte[], start, len, charset).
    fn process(&mut self, bytes: &[u8], cs: Cs) {
        let end = bytes.len();
        let mut pos = 0;
        while pos < end {
            let name_start = pos;
            let mut name_end: Option<usize> = None;
            let mut value_start: Option<usize> = None;
            let mut value_end: Option<usize> = None;
            let mut parsing_name = true;
            let mut decode_name = false;
            let mut decode_value = false;
            let mut complete = false;
            loop {
                match bytes[pos] {
                    b'=' => {
                        if parsing_name {
                            // The first '=' ends the name; later '=' belong to the value.
                            name_end = Some(pos);
                            parsing_name = false;
                            pos += 1;
                            value_start = Some(pos);
                        } else {
                            pos += 1;
                        }
                    }
                    b'&' => {
                        if parsing_name {
                            name_end = Some(pos);
                        } else {
                            value_end = Some(pos);
                        }
                        complete = true;
                        pos += 1;
                    }
                    b'%' | b'+' => {
                        // Only chunks containing '%' or '+' are URL-decoded.
                        if parsing_name {
                            decode_name = true;
                        } else {
                            decode_value = true;
                        }
                        pos += 1;
                    }
                    _ => pos += 1,
                }
                if complete || pos >= end {
                    break;
                }
            }
            if pos == end {
                if name_end.is_none() {
                    name_end = Some(pos);
                } else if value_start.is_some() && value_end.is_none() {
                    value_end = Some(pos);
                }
            }
            let ne = name_end.unwrap_or(pos);
            if ne <= name_start {
                // "&&" (no '='): silently skipped. "=x" (empty name): skipped with
                // parseFailedReason NO_NAME (no effect: no FailedRequestFilter in GeoServer).
                continue;
            }
            let raw_name = &bytes[name_start..ne];
            let raw_value: &[u8] = match value_start {
                Some(vs) => &bytes[vs..value_end.unwrap_or(vs)],
                None => &[],
            };
            // UDecoder.convert(bc, query = true): '+' -> ' ', %xx -> byte, %2F/%5C decoded;
            // a bad '%' throws -> this name/value pair is dropped (URL_DECODING), parsing goes on.
            let name = if decode_name {
                url_decode_query(raw_name)
            } else {
                Some(raw_name.to_vec())
            };
            let value = if value_start.is_some() {
                if decode_value {
                    url_decode_query(raw_value)
                } else {
                    Some(raw_value.to_vec())
                }
            } else {
                Some(Vec::new()) // "name" without '=' -> value ""
            };
            let (name, value) = match (name, value) {
                (Some(n), Some(v)) => (n, v),
                _ => continue,
            };
            // ByteChunk.toString (charset.decode, REPLACE) after %-decoding.
            if self.add(cs.decode(&name), cs.decode(&value)).is_err() {
                // "Hitting limit stops processing further params but does not cause request to
                // fail": the rest of this string (and every later source) is ignored.
                break;
            }
        }
    }
}

/// UDecoder.convert(ByteChunk, query = true). None = IOException (EOF / not hex).
fn url_decode_query(b: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(b.len());
    let mut j = 0;
    while j < b.len() {
        match b[j] {
            b'+' => {
                out.push(b' ');
                j += 1;
            }
            b'%' => {
                if j + 2 >= b.len() {
                    return None;
                }
                let (h1, h2) = (b[j + 1], b[j + 2]);
                if !h1.is_ascii_hexdigit() || !h2.is_ascii_hexdigit() {
                    return None;
                }
                out.push(hex(h1) * 16 + hex(h2));
                j += 3;
            }
            c => {
                out.push(c);
                j += 1;
            }
        }
    }
    Some(out)
}

// ------------------------------------------------------------------------------------------------
// Media types: org/apache/tomcat/util/http/parser/MediaType.java
// ------------------------------------------------------------------------------------------------

/// MediaType.parseMediaTypeOnly: before the first ';', String.trim(), toLowerCase(ENGLISH).
fn media_type_only(ct: &str) -> String {
    let head = match ct.find(';') {
        Some(i) => &ct[..i],
        None => ct,
    };
    // Latin-1 letters lower-case to non-ASCII letters, so ASCII lower-casing decides equality.
    java_trim(head).to_ascii_lowercase()
}

/// coyote Request.getCharsetFromContentType -> MediaType.parseMediaType(...).getCharset().
/// None when the header is not a valid media type or has no usable charset parameter.
pub fn media_type_charset(ct: &str) -> Option<String> {
    let chars: Vec<char> = ct.chars().collect();
    let mut r = Rd { s: &chars, p: 0 };
    // type "/" subtype, both non-empty tokens.
    let t = r.read_token()?;
    if t.is_empty() {
        return None;
    }
    if r.skip_const('/') == 1 {
        return None;
    }
    let st = r.read_token()?;
    if st.is_empty() {
        return None;
    }
    // LinkedHashMap.put: a repeated parameter keeps the LAST value.
    let mut charset: Option<Option<String>> = None;
    let mut look = r.skip_const(';');
    if look == 1 {
        return None; // anything but ';' after the subtype -> the whole media type is invalid
    }
    while look == 0 {
        let attr = r.read_token();
        let value: Option<String> = if r.skip_const('=') == 0 {
            // HttpParser.readTokenOrQuotedString(input, returnQuoted = true)
            r.skip_ws();
            if r.peek() == Some('"') {
                r.read_quoted()
            } else {
                r.read_token()
            }
        } else {
            Some(String::new())
        };
        if let Some(a) = attr {
            if a.to_ascii_lowercase() == "charset" {
                charset = Some(value);
            }
        }
        look = r.skip_const(';');
        if look == 1 {
            return None;
        }
    }
    // MediaType(...): a value starting with '"' goes through HttpParser.unquote; "" stays "".
    let cs = charset??;
    if cs.starts_with('"') {
        unquote(&cs)
    } else {
        Some(cs)
    }
}

/// HttpParser.unquote.
fn unquote(input: &str) -> Option<String> {
    let c: Vec<char> = input.chars().collect();
    if c.len() < 2 {
        return Some(input.to_string());
    }
    let (start, end) = if c[0] == '"' {
        (1, c.len() - 1)
    } else {
        (0, c.len())
    };
    let mut out = String::new();
    let mut i = start;
    while i < end {
        if c[i] == '\\' {
            i += 1;
            if i == end {
                return None;
            }
            out.push(c[i]);
        } else {
            out.push(c[i]);
        }
        i += 1;
    }
    Some(out)
}

// ------------------------------------------------------------------------------------------------
// Charsets (B2CConverter.getCharset: lower-cased lookup among the JVM's names and aliases) and
// the JVM decoders with CodingErrorAction.REPLACE (ByteChunk.toStringInternal: charset.decode()).
// Only the charsets below are modelled; any other name is treated as unknown (fallback
// ISO-8859-1), which is wrong for the other charsets a JVM knows (e.g. Shift_JIS, KOI8-R).
// ------------------------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cs {
    Utf8,
    Latin1,
    Ascii,
    Cp1252,
    Utf16Be,
    Utf16Le,
    Utf16,
}

impl Cs {
    fn java_name(self) -> &'static str {
        match self {
            Cs::Utf8 => "UTF-8",
            Cs::Latin1 => "ISO-8859-1",
            Cs::Ascii => "US-ASCII",
            Cs::Cp1252 => "windows-1252",
            Cs::Utf16Be => "UTF-16BE",
            Cs::Utf16Le => "UTF-16LE",
            Cs::Utf16 => "UTF-16",
        }
    }

    pub fn decode(self, b: &[u8]) -> String {
        match self {
            Cs::Utf8 => java_utf8_decode(b),
            Cs::Latin1 => latin1(b),
            Cs::Ascii => b
                .iter()
                .map(|&c| if c < 0x80 { c as char } else { '\u{FFFD}' })
                .collect(),
            Cs::Cp1252 => b.iter().map(|&c| cp1252(c)).collect(),
            Cs::Utf16Be => utf16_decode(b, true),
            Cs::Utf16Le => utf16_decode(b, false),
            Cs::Utf16 => {
                if b.len() >= 2 && b[0] == 0xFE && b[1] == 0xFF {
                    utf16_decode(&b[2..], true)
                } else if b.len() >= 2 && b[0] == 0xFF && b[1] == 0xFE {
                    utf16_decode(&b[2..], false)
                } else {
                    utf16_decode(b, true)
                }
            }
        }
    }
}

pub fn lookup_charset(name: &str) -> Option<Cs> {
    let n = name.to_ascii_lowercase();
    Some(match n.as_str() {
        "utf-8" | "utf8" | "unicode-1-1-utf-8" => Cs::Utf8,
        "iso-8859-1" | "iso8859_1" | "iso_8859_1" | "iso_8859-1" | "iso8859-1" | "8859_1"
        | "latin1" | "l1" | "cp819" | "ibm819" | "ibm-819" | "819" | "iso-ir-100"
        | "csisolatin1" | "iso_8859-1:1987" => Cs::Latin1,
        "us-ascii" | "ascii" | "iso646-us" | "iso_646.irv:1983" | "ansi_x3.4-1968"
        | "ansi_x3.4-1986" | "cp367" | "ibm367" | "csascii" | "646" | "us" | "iso_646.irv:1991"
        | "default" | "ascii7" | "iso-ir-6" => Cs::Ascii,
        "windows-1252" | "cp1252" | "cp5348" | "ibm-1252" | "ibm1252" => Cs::Cp1252,
        "utf-16be" | "utf_16be" | "iso-10646-ucs-2" | "x-utf-16be" | "unicodebigunmarked" => {
            Cs::Utf16Be
        }
        "utf-16le" | "utf_16le" | "x-utf-16le" | "unicodelittleunmarked" => Cs::Utf16Le,
        "utf-16" | "utf16" | "utf_16" | "unicode" => Cs::Utf16,
        _ => return None,
    })
}

fn cp1252(c: u8) -> char {
    const HI: [u32; 32] = [
        0x20AC, 0xFFFD, 0x201A, 0x0192, 0x201E, 0x2026, 0x2020, 0x2021, 0x02C6, 0x2030, 0x0160,
        0x2039, 0x0152, 0xFFFD, 0x017D, 0xFFFD, 0xFFFD, 0x2018, 0x2019, 0x201C, 0x201D, 0x2022,
        0x2013, 0x2014, 0x02DC, 0x2122, 0x0161, 0x203A, 0x0153, 0xFFFD, 0x017E, 0x0178,
    ];
    if (0x80..0xA0).contains(&c) {
        char::from_u32(HI[(c - 0x80) as usize]).unwrap()
    } else {
        c as char
    }
}

fn utf16_decode(b: &[u8], be: bool) -> String {
    let units: Vec<u16> = b
        .chunks(2)
        .filter(|c| c.len() == 2)
        .map(|c| {
            if be {
                u16::from_be_bytes([c[0], c[1]])
            } else {
                u16::from_le_bytes([c[0], c[1]])
            }
        })
        .collect();
    let mut s: String = char::decode_utf16(units)
        .map(|r| r.unwrap_or('\u{FFFD}'))
        .collect();
    if b.len() % 2 == 1 {
        s.push('\u{FFFD}'); // a trailing odd byte is malformed input
    }
    s
}

/// The JDK's sun.nio.cs.UTF_8.Decoder (decodeArrayLoop) with CodingErrorAction.REPLACE and
/// endOfInput = true: what charset.decode() gives for parameter names/values. Differs from the
/// Unicode "maximal subpart" rule (and from Rust's from_utf8_lossy) for encoded surrogates:
/// ED A0 80 -> one U+FFFD (not three); a truncated tail is always one U+FFFD.
pub fn java_utf8_decode(b: &[u8]) -> String {
    let cont = |x: u8| (x & 0xC0) == 0x80;
    let mut out = String::with_capacity(b.len());
    let n = b.len();
    let mut i = 0;
    const R: char = '\u{FFFD}';
    while i < n {
        let b1 = b[i];
        if b1 < 0x80 {
            out.push(b1 as char);
            i += 1;
        } else if (b1 >> 5) == 0b110 && (b1 & 0x1e) != 0 {
            // C2..DF
            if n - i < 2 {
                out.push(R);
                i = n;
                continue;
            }
            let b2 = b[i + 1];
            if !cont(b2) {
                out.push(R);
                i += 1;
                continue;
            }
            let c = (((b1 & 0x1F) as u32) << 6) | (b2 & 0x3F) as u32;
            out.push(char::from_u32(c).unwrap());
            i += 2;
        } else if (b1 >> 4) == 0b1110 {
            // E0..EF
            let rem = n - i;
            if rem < 3 {
                // isMalformed3_2, else underflow -> the remaining bytes are one malformed unit.
                if rem > 1 && ((b1 == 0xE0 && (b[i + 1] & 0xE0) == 0x80) || !cont(b[i + 1])) {
                    out.push(R);
                    i += 1;
                } else {
                    out.push(R);
                    i = n;
                }
                continue;
            }
            let (b2, b3) = (b[i + 1], b[i + 2]);
            if (b1 == 0xE0 && (b2 & 0xE0) == 0x80) || !cont(b2) || !cont(b3) {
                // malformedN(3)
                let l = if (b1 == 0xE0 && (b2 & 0xE0) == 0x80) || !cont(b2) {
                    1
                } else {
                    2
                };
                out.push(R);
                i += l;
                continue;
            }
            let c = (((b1 & 0x0F) as u32) << 12) | (((b2 & 0x3F) as u32) << 6) | (b3 & 0x3F) as u32;
            match char::from_u32(c) {
                Some(ch) => out.push(ch),
                None => out.push(R), // surrogate: malformedForLength(3)
            }
            i += 3;
        } else if (b1 >> 3) == 0b11110 {
            // F0..F7
            let rem = n - i;
            if rem < 4 {
                let m42 = |x: u8| {
                    (b1 == 0xF0 && !(0x90..=0xBF).contains(&x))
                        || (b1 == 0xF4 && (x & 0xF0) != 0x80)
                        || !cont(x)
                };
                if b1 > 0xF4 || (rem > 1 && m42(b[i + 1])) {
                    out.push(R);
                    i += 1;
                } else if rem > 2 && !cont(b[i + 2]) {
                    out.push(R);
                    i += 2;
                } else {
                    out.push(R);
                    i = n;
                }
                continue;
            }
            let (b2, b3, b4) = (b[i + 1], b[i + 2], b[i + 3]);
            let uc = (((b1 & 0x07) as u32) << 18)
                | (((b2 & 0x3F) as u32) << 12)
                | (((b3 & 0x3F) as u32) << 6)
                | (b4 & 0x3F) as u32;
            if !cont(b2) || !cont(b3) || !cont(b4) || !(0x10000..=0x10FFFF).contains(&uc) {
                // malformedN(4)
                let l = if b1 > 0xF4
                    || (b1 == 0xF0 && !(0x90..=0xBF).contains(&b2))
                    || (b1 == 0xF4 && (b2 & 0xF0) != 0x80)
                    || !cont(b2)
                {
                    1
                } else if !cont(b3) {
                    2
                } else {
                    3
                };
                out.push(R);
                i += l;
                continue;
            }
            out.push(char::from_u32(uc).unwrap());
            i += 4;
        } else {
            out.push(R);
            i += 1;
        }
    }
    out
}

// ------------------------------------------------------------------------------------------------
// Tests
// ------------------------------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    use super::*;

    fn req(method: &str, target: &str, headers: &[(&str, &[u8])], body: &[u8]) -> NodeRequest {
        let mut h: Vec<(String, Vec<u8>)> = vec![("host".into(), b"gs.example:8080".to_vec())];
        for (n, v) in headers {
            h.push((n.to_string(), v.to_vec()));
        }
        NodeRequest {
            method: method.into(),
            target: target.as_bytes().to_vec(),
            headers: h,
            body: body.to_vec(),
        }
    }

    fn get(target: &str) -> Container {
        container_read(&req("GET", target, &[], b""), "/geoserver")
    }

    fn view(c: Container) -> ServletView {
        match c {
            Container::Servlet(v) => v,
            other => panic!("expected Servlet, got {:?}", other),
        }
    }

    fn status(c: Container) -> u16 {
        match c {
            Container::Rejected { status, .. } => status,
            other => panic!("expected Rejected, got {:?}", other),
        }
    }

    fn params(v: &ServletView) -> Vec<(String, Vec<String>)> {
        v.parameters.clone()
    }

    fn p(list: &[(&str, &[&str])]) -> Vec<(String, Vec<String>)> {
        list.iter()
            .map(|(n, vs)| (n.to_string(), vs.iter().map(|s| s.to_string()).collect()))
            .collect()
    }

    #[test]
    fn plain_request() {
        let v = view(get("/geoserver/wfs?service=WFS&request=GetCapabilities"));
        assert_eq!(v.request_uri, "/geoserver/wfs");
        assert_eq!(v.context_path, "/geoserver");
        assert_eq!(v.path_in_context, "/wfs");
        assert_eq!(
            v.query_string.as_deref(),
            Some("service=WFS&request=GetCapabilities")
        );
        assert_eq!(
            params(&v),
            p(&[("service", &["WFS"]), ("request", &["GetCapabilities"])])
        );
        assert_eq!(v.character_encoding.as_deref(), Some("UTF-8")); // CharacterEncodingFilter
    }

    #[test]
    fn context_root_and_other_contexts() {
        assert_eq!(view(get("/geoserver")).path_in_context, "");
        assert_eq!(view(get("/geoserver/")).path_in_context, "/");
        assert_eq!(get("/geoserverx/wfs"), Container::OtherContext);
        assert_eq!(get("/GeoServer/wfs"), Container::OtherContext); // case-sensitive
        assert_eq!(get("/"), Container::OtherContext);
        // ROOT deployment: everything is GeoServer, context path "".
        let v = view(container_read(&req("GET", "/wfs", &[], b""), ""));
        assert_eq!(
            (v.context_path.as_str(), v.path_in_context.as_str()),
            ("", "/wfs")
        );
        // "geoserver" without '/' is fixed like StandardContext.setPath does.
        assert_eq!(
            view(container_read(
                &req("GET", "/geoserver/x", &[], b""),
                "geoserver"
            ))
            .path_in_context,
            "/x"
        );
    }

    #[test]
    fn path_parameters() {
        let v = view(get("/geoserver;jsessionid=ABC/wfs;x=1;y/ows;z?a=1"));
        assert_eq!(v.request_uri, "/geoserver;jsessionid=ABC/wfs;x=1;y/ows;z");
        assert_eq!(v.context_path, "/geoserver;jsessionid=ABC");
        assert_eq!(v.path_in_context, "/wfs/ows");
        // "..;" is a dot-segment once the parameter is gone.
        assert_eq!(get("/geoserver/..;/manager/html"), Container::OtherContext);
        let v = view(get("/x/..;/geoserver/rest"));
        assert_eq!(
            (v.context_path.as_str(), v.path_in_context.as_str()),
            ("/x/..;/geoserver", "/rest")
        );
        // Encoded ';' is not a parameter separator.
        assert_eq!(
            view(get("/geoserver/wfs%3Bjsessionid=1")).path_in_context,
            "/wfs;jsessionid=1"
        );
        // A path parameter is removed before %-decoding: bad escapes or %2F inside it are harmless.
        assert_eq!(view(get("/geoserver/wfs;a=%zz%2F")).path_in_context, "/wfs");
        // ';' right after the leading '/' is not looked at, and the URI then fails normalize.
        assert_eq!(strip_path_parameters(b"/a;b;c/d;e"), b"/a/d".to_vec());
        // Tomcat's TestRequest vectors (context "/path/abc").
        assert_eq!(
            get_context_path("/path;a=b/abc/xxx", "/path/abc").as_deref(),
            Some("/path;a=b/abc")
        );
        assert_eq!(
            get_context_path("/path/abc;a=b/xxx", "/path/abc").as_deref(),
            Some("/path/abc;a=b")
        );
        assert_eq!(
            get_context_path("/.;a=b/path/abc/xxx", "/path/abc").as_deref(),
            Some("/.;a=b/path/abc")
        );
        assert_eq!(
            get_context_path("/pa%5Fth/abc/xxx", "/pa_th/abc").as_deref(),
            Some("/pa%5Fth/abc")
        );
        assert_eq!(
            get_context_path("/foo/../path", "/path").as_deref(),
            Some("/foo/../path")
        );
    }

    #[test]
    fn decoding_and_normalisation() {
        assert_eq!(view(get("/geoserver//wfs///x")).path_in_context, "/wfs/x");
        assert_eq!(view(get("/geoserver/./wfs/.")).path_in_context, "/wfs/");
        assert_eq!(view(get("/geoserver/a/b/..")).path_in_context, "/a/");
        assert_eq!(
            view(get("/geoserver/%2e%2e/geoserver/wfs")).path_in_context,
            "/wfs"
        );
        assert_eq!(get("/geoserver/%2e%2e/x"), Container::OtherContext);
        assert_eq!(get("/geoserver/.."), Container::OtherContext);
        assert_eq!(status(get("/..")), 400);
        assert_eq!(status(get("/geoserver/../../x")), 400);
        assert_eq!(status(get("/geoserver/a%2Fb")), 400);
        assert_eq!(status(get("/geoserver/a%5Cb")), 400);
        assert_eq!(status(get("/geoserver/a%00b")), 400);
        assert_eq!(status(get("/geoserver/a%zz")), 400);
        assert_eq!(status(get("/geoserver/a%4")), 400);
        assert_eq!(status(get("/geoserver/a%")), 400);
        assert_eq!(view(get("/geoserver/a%01b")).path_in_context, "/a\u{1}b");
        assert_eq!(view(get("/geoserver/a%25b")).path_in_context, "/a%b");
        assert_eq!(view(get("/geoserver/a+b")).path_in_context, "/a+b");
        assert_eq!(view(get("/geo%73erver/wfs")).context_path, "/geo%73erver");
        // "//" collapses before "..": /a//../b -> /a/../b -> /b.
        assert_eq!(view(get("/geoserver/a//../b")).path_in_context, "/b");
        // URI charset UTF-8, Tomcat Utf8Decoder (TestCoyoteAdapter vectors).
        assert_eq!(
            view(get("/geoserver/foo%c4%87")).path_in_context,
            "/foo\u{107}"
        );
        assert_eq!(
            view(get("/geoserver/foo%c4")).path_in_context,
            "/foo\u{FFFD}"
        );
        assert_eq!(
            view(get("/geoserver/foo%ff")).path_in_context,
            "/foo\u{FFFD}"
        );
        assert_eq!(
            view(get("/geoserver/foo%ed%a0%80")).path_in_context,
            "/foo\u{FFFD}\u{FFFD}\u{FFFD}"
        );
        assert_eq!(status(get("geoserver/wfs")), 400);
        assert_eq!(normalize_coyote(b"/foo/../bar"), Some(b"/bar".to_vec()));
    }

    #[test]
    fn leading_slashes_and_context_path_quirk() {
        let v = view(get("//geoserver/wfs"));
        assert_eq!(
            (v.context_path.as_str(), v.path_in_context.as_str()),
            ("/geoserver", "/wfs")
        );
        let ten = format!("{}geoserver/wfs", "/".repeat(10));
        assert_eq!(view(get(&ten)).context_path, "/geoserver");
        // Request.getContextPath does not reset `pos` after stripping leading slashes.
        let eleven = format!("{}geoserver/wfs", "/".repeat(11));
        assert_eq!(status(get(&eleven)), 500);
    }

    #[test]
    fn request_line_characters() {
        for t in [
            "/geoserver/a b",
            "/geoserver/a\"b",
            "/geoserver/a<b",
            "/geoserver/a{b",
            "/geoserver/a|b",
            "/geoserver/a\\b",
            "/geoserver/a^b",
            "/geoserver/a`b",
            "/geoserver/a#b",
            "/geoserver/a[b",
            "/geoserver/a]b",
            "/geoserver/wfs?a=[1]",
            "/geoserver/wfs?a=|",
            "/geoserver/wfs?a=\"",
            "/geoserver/wfs?a=b#frag",
            "/geoserver/wfs?a={}",
            "/geoserver/wfs?a=^",
            "/geoserver/wfs?a=\\",
        ] {
            assert_eq!(status(get(t)), 400, "{}", t);
        }
        let mut r = req("GET", "/geoserver/wfs", &[], b"");
        r.target = b"/geoserver/\xc3\xa9".to_vec();
        assert_eq!(status(container_read(&r, "/geoserver")), 400);
        r.target = b"/geoserver/wfs?a=\xc3\xa9".to_vec();
        assert_eq!(status(container_read(&r, "/geoserver")), 400);
        // Allowed: sub-delims, ':', '@', and '/' '?' in the query.
        let v = view(get("/geoserver/a:b@c!$'()*,=?x=/?y:@!$'()*+,;"));
        assert_eq!(v.query_string.as_deref(), Some("x=/?y:@!$'()*+,;"));
        assert_eq!(
            view(get("/geoserver/wfs?")).query_string.as_deref(),
            Some("")
        );
        assert_eq!(view(get("/geoserver/wfs")).query_string, None);
        assert_eq!(
            status(container_read(
                &req("G(T", "/geoserver/", &[], b""),
                "/geoserver"
            )),
            400
        );
    }

    #[test]
    fn methods() {
        assert_eq!(
            status(container_read(
                &req("TRACE", "/geoserver/wfs", &[], b""),
                "/geoserver"
            )),
            405
        );
        assert_eq!(
            container_read(&req("TRACE", "/other", &[], b""), "/geoserver"),
            Container::OtherContext
        );
        assert_eq!(
            status(container_read(
                &req("CONNECT", "gs.example:443", &[], b""),
                "/geoserver"
            )),
            501
        );
        assert_eq!(
            status(container_read(&req("OPTIONS", "*", &[], b""), "/geoserver")),
            200
        );
        assert_eq!(
            status(container_read(&req("GET", "*", &[], b""), "/geoserver")),
            400
        );
        // Lower-case "trace" is just an unknown method for Tomcat.
        assert!(matches!(
            container_read(&req("trace", "/geoserver/wfs", &[], b""), "/geoserver"),
            Container::Servlet(_)
        ));
    }

    #[test]
    fn absolute_form() {
        let v = view(get("http://gs.example:8080/geoserver/wfs?x=1"));
        assert_eq!(v.request_uri, "/geoserver/wfs");
        assert_eq!(v.context_path, "/geoserver");
        assert_eq!(v.query_string.as_deref(), Some("x=1"));
        assert_eq!(status(get("http://other:8080/geoserver/wfs")), 400);
        assert_eq!(status(get("https://gs.example/geoserver/wfs")), 400); // port differs from Host
        assert_eq!(
            view(get("HtTpS://GS.example:8080/geoserver/wfs")).path_in_context,
            "/wfs"
        );
        assert_eq!(
            view(get("http://u:p@gs.example:8080/geoserver/")).request_uri,
            "/geoserver/"
        );
        assert_eq!(status(get("http://u[x@gs.example:8080/geoserver/")), 400);
        assert_eq!(status(get("httpx://gs.example:8080/geoserver/")), 400);
        assert_eq!(get("http://gs.example:8080"), Container::OtherContext); // URI becomes "/"
    }

    #[test]
    fn host_header() {
        let mk = |hs: Vec<(&str, &[u8])>| {
            let r = NodeRequest {
                method: "GET".into(),
                target: b"/geoserver/wfs".to_vec(),
                headers: hs
                    .into_iter()
                    .map(|(n, v)| (n.to_string(), v.to_vec()))
                    .collect(),
                body: vec![],
            };
            container_read(&r, "/geoserver")
        };
        assert_eq!(status(mk(vec![])), 400);
        assert_eq!(status(mk(vec![("host", b"a"), ("host", b"a")])), 400);
        assert!(matches!(mk(vec![("host", b"")]), Container::Servlet(_)));
        for ok in [
            &b"a"[..],
            b"a.b-c.d",
            b"a.",
            b"1.2.3.4",
            b"1.2.3.4:80",
            b"999.1",
            b"host:",
            b"[::1]",
            b"[::1]:8080",
            b"[2001:db8::1.2.3.4]",
            b"[1:2:3:4:5:6:7:8]",
            b"[::1.2.3.4:",
        ] {
            assert!(
                matches!(mk(vec![("host", ok)]), Container::Servlet(_)),
                "{:?}",
                latin1(ok)
            );
        }
        for bad in [
            &b"my_host"[..],
            b"-a",
            b".a",
            b"a..b",
            b"a-",
            b"a-.b",
            b"a:8o",
            b"a: 80",
            b"a:99999999999",
            b"[::1",
            b"[1:2]",
            b"[:::1]",
            b"[::1]x",
            b"[::1.2.3.4::80",
            b"[::01.2.3.4]",
            b"a b",
            b"\xe9t\xe9",
            b"a@b",
            b"1..2",
        ] {
            assert_eq!(status(mk(vec![("host", bad)])), 400, "{:?}", latin1(bad));
        }
    }

    #[test]
    fn header_rules() {
        let v = view(container_read(
            &req(
                "GET",
                "/geoserver/wfs",
                &[("x-a", b" \t v a l \t "), ("x-b", b"caf\xe9")],
                b"",
            ),
            "/geoserver",
        ));
        assert!(v.headers.contains(&("x-a".into(), "v a l".into())));
        assert!(v.headers.contains(&("x-b".into(), "caf\u{e9}".into())));
        assert_eq!(
            status(container_read(
                &req("GET", "/geoserver/wfs", &[("x-a", b"a\x01b")], b""),
                "/geoserver"
            )),
            400
        );
        assert_eq!(
            status(container_read(
                &req("GET", "/geoserver/wfs", &[("x-a", b"a\x7fb")], b""),
                "/geoserver"
            )),
            400
        );
        assert_eq!(
            status(container_read(
                &req("GET", "/geoserver/wfs", &[("x a", b"1")], b""),
                "/geoserver"
            )),
            400
        );
        assert_eq!(
            status(container_read(
                &req("GET", "/geoserver/wfs", &[("", b"1")], b""),
                "/geoserver"
            )),
            400
        );
        let many: Vec<(String, Vec<u8>)> = (0..100)
            .map(|i| (format!("x-{}", i), b"1".to_vec()))
            .collect();
        let mut r = req("GET", "/geoserver/wfs", &[], b"");
        r.headers.extend(many);
        assert_eq!(status(container_read(&r, "/geoserver")), 400); // 101 headers
        let big = vec![b'a'; 8200];
        assert_eq!(
            status(container_read(
                &req("GET", "/geoserver/wfs", &[("x-big", &big)], b""),
                "/geoserver"
            )),
            400
        );
        assert_eq!(
            status(container_read(
                &req("GET", "/geoserver/wfs", &[("expect", b"foo")], b""),
                "/geoserver"
            )),
            417
        );
        assert!(matches!(
            container_read(
                &req("GET", "/geoserver/wfs", &[("expect", b"100-Continue")], b""),
                "/geoserver"
            ),
            Container::Servlet(_)
        ));
        assert_eq!(
            status(container_read(
                &req("GET", "/geoserver/WEB-INF/web.xml", &[], b""),
                "/geoserver"
            )),
            404
        );
        assert_eq!(
            status(container_read(
                &req("GET", "/geoserver/%77eb-inf", &[], b""),
                "/geoserver"
            )),
            404
        );
    }

    #[test]
    fn framing_headers() {
        let form: &[(&str, &[u8])] = &[("content-type", b"application/x-www-form-urlencoded")];
        let with = |extra: &[(&str, &[u8])], body: &[u8]| {
            let mut hs: Vec<(&str, &[u8])> = form.to_vec();
            hs.extend_from_slice(extra);
            container_read(&req("POST", "/geoserver/wfs", &hs, body), "/geoserver")
        };
        assert_eq!(
            status(with(
                &[("content-length", b"3"), ("content-length", b"3")],
                b"a=1"
            )),
            400
        );
        assert_eq!(status(with(&[("content-length", b"+3")], b"a=1")), 400);
        assert_eq!(status(with(&[("content-length", b"")], b"a=1")), 400);
        assert_eq!(status(with(&[("transfer-encoding", b"gzip")], b"a=1")), 501);
        assert_eq!(
            status(with(&[("transfer-encoding", b"chunked, gzip")], b"a=1")),
            400
        );
        assert_eq!(status(with(&[("transfer-encoding", b"")], b"a=1")), 400);
        // Chunked: the de-chunked body is parsed, Content-Length is dropped from the headers.
        let v = view(with(
            &[("transfer-encoding", b"Chunked"), ("content-length", b"99")],
            b"a=1",
        ));
        assert_eq!(params(&v), p(&[("a", &["1"])]));
        assert!(v.headers.iter().all(|(n, _)| n != "content-length"));
        assert!(v.body.is_empty());
        // No Content-Length and no chunked coding: no body at all.
        let v = view(with(&[], b"a=1"));
        assert!(params(&v).is_empty() && v.body.is_empty());
    }

    #[test]
    fn form_parameters() {
        let post = |ct: &[u8], body: &[u8], target: &str| {
            let cl = body.len().to_string();
            container_read(
                &req(
                    "POST",
                    target,
                    &[("content-type", ct), ("content-length", cl.as_bytes())],
                    body,
                ),
                "/geoserver",
            )
        };
        let v = view(post(
            b"application/x-www-form-urlencoded",
            b"b=2&a=3&b=4",
            "/geoserver/wfs?b=1&c",
        ));
        // Query first, then body; names keep their first-seen order.
        assert_eq!(
            params(&v),
            p(&[("b", &["1", "2", "4"]), ("c", &[""]), ("a", &["3"])])
        );
        assert!(v.body.is_empty()); // consumed by the form parser
                                    // Content type test: parameters stripped, trimmed, case-insensitive.
        let v = view(post(
            b"Application/X-WWW-Form-URLEncoded ; charset=UTF-8",
            b"a=1",
            "/geoserver/wfs",
        ));
        assert_eq!(params(&v), p(&[("a", &["1"])]));
        let v = view(post(
            b"application/x-www-form-urlencoded;garbage",
            b"a=1",
            "/geoserver/wfs",
        ));
        assert_eq!(params(&v), p(&[("a", &["1"])]));
        assert_eq!(v.character_encoding.as_deref(), Some("UTF-8")); // no charset parameter -> filter
        let v = view(post(b"text/xml", b"a=1", "/geoserver/wfs"));
        assert!(params(&v).is_empty());
        assert_eq!(v.body, b"a=1".to_vec());
        let v = view(post(
            b"multipart/form-data; boundary=x",
            b"--x--",
            "/geoserver/wfs",
        ));
        assert!(params(&v).is_empty());
        assert_eq!(v.body, b"--x--".to_vec());
        // PUT bodies are not parsed (parseBodyMethods = POST).
        let v = view(container_read(
            &req(
                "PUT",
                "/geoserver/rest/x",
                &[
                    ("content-type", b"application/x-www-form-urlencoded"),
                    ("content-length", b"3"),
                ],
                b"a=1",
            ),
            "/geoserver",
        ));
        assert!(params(&v).is_empty() && v.body == b"a=1".to_vec());
    }

    #[test]
    fn parameter_syntax() {
        let v = view(get(
            "/geoserver/wfs?&&=x&a&b=&c=1=2&d=%zz&e=%41+%2f&f%3d=+&g=%4",
        ));
        assert_eq!(
            params(&v),
            p(&[
                ("a", &[""]),
                ("b", &[""]),
                ("c", &["1=2"]),
                ("e", &["A /"]),
                ("f=", &[" "])
            ])
        );
        // Query strings decode as UTF-8 with the JDK decoder.
        let v = view(get("/geoserver/wfs?n=%C3%A9&s=%ED%A0%80&t=%ED%A0&u=%FF"));
        assert_eq!(
            params(&v),
            p(&[
                ("n", &["\u{e9}"]),
                ("s", &["\u{FFFD}"]),
                ("t", &["\u{FFFD}"]),
                ("u", &["\u{FFFD}"])
            ])
        );
    }

    #[test]
    fn body_charsets() {
        let post = |ct: &[u8], body: &[u8]| {
            let cl = body.len().to_string();
            view(container_read(
                &req(
                    "POST",
                    "/geoserver/wfs",
                    &[("content-type", ct), ("content-length", cl.as_bytes())],
                    body,
                ),
                "/geoserver",
            ))
        };
        // No charset: GeoServer's CharacterEncodingFilter makes it UTF-8.
        let v = post(b"application/x-www-form-urlencoded", b"a=%C3%A9&b=\xc3\xa9");
        assert_eq!(params(&v), p(&[("a", &["\u{e9}"]), ("b", &["\u{e9}"])]));
        assert_eq!(v.character_encoding.as_deref(), Some("UTF-8"));
        // Explicit ISO-8859-1.
        let v = post(
            b"application/x-www-form-urlencoded; charset=\"ISO-8859-1\"",
            b"a=%C3%A9",
        );
        assert_eq!(params(&v), p(&[("a", &["\u{c3}\u{a9}"])]));
        assert_eq!(v.character_encoding.as_deref(), Some("ISO-8859-1"));
        // Unknown charset: reported as is, body decoded as ISO-8859-1.
        let v = post(
            b"application/x-www-form-urlencoded; charset=nope",
            b"a=%C3%A9",
        );
        assert_eq!(params(&v), p(&[("a", &["\u{c3}\u{a9}"])]));
        assert_eq!(v.character_encoding.as_deref(), Some("nope"));
        // Last charset parameter wins; empty charset is "" (and ISO-8859-1).
        assert_eq!(
            post(b"text/plain; charset=utf-8; charset=latin1", b"")
                .character_encoding
                .as_deref(),
            Some("latin1")
        );
        assert_eq!(
            post(b"text/plain; charset=", b"")
                .character_encoding
                .as_deref(),
            Some("")
        );
        // Without the filter (bare Tomcat) there is no encoding and the body is ISO-8859-1.
        let r = req(
            "POST",
            "/geoserver/wfs",
            &[
                ("content-type", b"application/x-www-form-urlencoded"),
                ("content-length", b"8"),
            ],
            b"a=%C3%A9",
        );
        let v = view(container_read_with(
            &r,
            "/geoserver",
            &Config::tomcat9_defaults(),
        ));
        assert_eq!(v.character_encoding, None);
        assert_eq!(params(&v), p(&[("a", &["\u{c3}\u{a9}"])]));
        // Repeated Content-Type: the first one counts.
        let v = view(container_read(
            &req(
                "POST",
                "/geoserver/wfs",
                &[
                    ("content-type", b"text/xml"),
                    ("content-type", b"application/x-www-form-urlencoded"),
                    ("content-length", b"3"),
                ],
                b"a=1",
            ),
            "/geoserver",
        ));
        assert_eq!(v.content_type.as_deref(), Some("text/xml"));
        assert!(params(&v).is_empty());
    }

    #[test]
    fn limits() {
        // maxParameterCount = 1000 in the docker image: query fills it, body ignored but consumed.
        let q: Vec<String> = (0..1001).map(|i| format!("p{}=1", i)).collect();
        let target = format!("/geoserver/wfs?{}", q.join("&"));
        let r = req(
            "POST",
            &target,
            &[
                ("content-type", b"application/x-www-form-urlencoded"),
                ("content-length", b"3"),
            ],
            b"z=1",
        );
        let v = view(container_read(&r, "/geoserver"));
        assert_eq!(v.parameters.len(), 1000);
        assert_eq!(v.parameters.last().unwrap().0, "p999");
        assert!(v.body.is_empty());
        // maxPostSize: above 2 MiB the form is not parsed and the body stays readable.
        let body = vec![b'a'; 2 * 1024 * 1024 + 1];
        let cl = body.len().to_string();
        let r = req(
            "POST",
            "/geoserver/wfs?x=1",
            &[
                ("content-type", b"application/x-www-form-urlencoded"),
                ("content-length", cl.as_bytes()),
            ],
            &body,
        );
        let v = view(container_read(&r, "/geoserver"));
        assert_eq!(params(&v), p(&[("x", &["1"])]));
        assert_eq!(v.body.len(), body.len());
        // Cookies: 201 -> 400.
        let c: Vec<String> = (0..201).map(|i| format!("c{}=v", i)).collect();
        let cookie = c.join("; ");
        assert_eq!(
            status(container_read(
                &req(
                    "GET",
                    "/geoserver/wfs",
                    &[("cookie", cookie.as_bytes())],
                    b""
                ),
                "/geoserver"
            )),
            400
        );
        let cookie200 = c[..200].join("; ");
        assert!(matches!(
            container_read(
                &req(
                    "GET",
                    "/geoserver/wfs",
                    &[("cookie", cookie200.as_bytes())],
                    b""
                ),
                "/geoserver"
            ),
            Container::Servlet(_)
        ));
    }

    #[test]
    fn media_type_parser() {
        assert_eq!(
            media_type_charset("text/xml; charset=UTF-8").as_deref(),
            Some("UTF-8")
        );
        assert_eq!(
            media_type_charset("text/xml;CHARSET=\"a\\\"b\"").as_deref(),
            Some("a\"b")
        );
        assert_eq!(media_type_charset("text/xml; charset=UTF-8 x"), None);
        assert_eq!(media_type_charset("text/xml charset=UTF-8"), None);
        assert_eq!(media_type_charset("text"), None);
        assert_eq!(media_type_charset("text/xml;charset=utf-8,text/html"), None);
        assert_eq!(
            media_type_charset("text/xml; charset=UTF-8;").as_deref(),
            Some("UTF-8")
        );
        assert_eq!(media_type_charset("text/xml; charset=;x=y"), None);
        assert_eq!(
            media_type_charset("text/xml; foo; charset = utf-8 ;"),
            Some("utf-8".into())
        );
        assert_eq!(
            media_type_only(" Application/X-Www-Form-Urlencoded \t;x"),
            "application/x-www-form-urlencoded"
        );
    }

    #[test]
    fn java_utf8() {
        assert_eq!(java_utf8_decode(b"\xed\xa0\x80"), "\u{FFFD}");
        assert_eq!(java_utf8_decode(b"\xed\xa0"), "\u{FFFD}");
        assert_eq!(java_utf8_decode(b"\xed\xa0A"), "\u{FFFD}A");
        assert_eq!(
            java_utf8_decode(b"\xe0\x80\x80"),
            "\u{FFFD}\u{FFFD}\u{FFFD}"
        );
        assert_eq!(java_utf8_decode(b"\xf0\x90\x80A"), "\u{FFFD}A");
        assert_eq!(
            java_utf8_decode(b"\xf4\x90\x80\x80"),
            "\u{FFFD}\u{FFFD}\u{FFFD}\u{FFFD}"
        );
        assert_eq!(java_utf8_decode(b"\xc0\x80"), "\u{FFFD}\u{FFFD}");
        assert_eq!(
            java_utf8_decode("h\u{e9}\u{20ac}\u{1F600}".as_bytes()),
            "h\u{e9}\u{20ac}\u{1F600}"
        );
        assert_eq!(
            String::from_utf8_lossy(b"\xed\xa0\x80"),
            "\u{FFFD}\u{FFFD}\u{FFFD}"
        );
    }
}
