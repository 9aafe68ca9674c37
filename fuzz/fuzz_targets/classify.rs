//! The classifier never panics, whatever the head and body, and a body cut anywhere is read the
//! same way, or less surely (never a read where the whole body says master).
#![no_main]

use geolb::classify::{Classifier, Verdict};
use geolb::classify::Pool;
use http::{HeaderMap, HeaderName, HeaderValue, Method};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // method \n path \n query \n header: value … \n\n body
    let mut parts = data.splitn(4, |&b| b == b'\n');
    let (Some(method), Some(path), Some(query), rest) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return;
    };
    let (Ok(method), Ok(path), Ok(query)) = (
        Method::from_bytes(method),
        std::str::from_utf8(path),
        std::str::from_utf8(query),
    ) else {
        return;
    };
    let rest = rest.unwrap_or_default();
    let split = rest
        .windows(2)
        .position(|w| w == b"\n\n")
        .unwrap_or(rest.len());
    let (head, body) = (&rest[..split], rest.get(split + 2..).unwrap_or_default());
    let mut headers = HeaderMap::new();
    for line in head.split(|&b| b == b'\n') {
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(&line[..colon]),
            HeaderValue::from_bytes(line[colon + 1..].trim_ascii()),
        ) {
            headers.append(name, value);
        }
    }
    let query = (!query.is_empty()).then_some(query);
    let c = Classifier::new("/geoserver", Vec::new(), 256);
    let whole = c.classify(&method, path, query, &headers, body);
    // Fed in pieces, as the proxy reads bodies, the answer is the same.
    if let Verdict::NeedBody(plan) = c.classify_head(&method, path, query, &headers) {
        for cut in 0..=body.len().min(256) {
            let complete = cut == body.len();
            if let Some(route) = c.classify_body(&plan, query, &body[..cut], complete) {
                if whole.as_ref().is_ok_and(|w| w.pool == Pool::Master) {
                    assert_eq!(route.pool, Pool::Master, "a prefix read as a read");
                }
                break;
            }
        }
    }
});
