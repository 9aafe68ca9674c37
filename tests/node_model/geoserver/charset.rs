//! How GeoServer turns the bytes of an XML request body into chars.
//!
//! Non-SOAP bodies: `Dispatcher.reader` -> `RequestUtils.getBufferedXMLReader(InputStream, 8192)`
//! -> `XmlCharsetDetector.getCharsetAwareReader` (gs-ows, 2.28.2). The declared/sniffed charset
//! never comes from the Content-Type header.
//! SOAP bodies: `Dispatcher.soapReader` hands the raw stream to a JAXP `DocumentBuilder`, i.e.
//! Xerces' own byte-level detection (`XMLEntityManager.setupCurrentEntity`).

/// Charsets the model can decode. Anything else Java may know is "unmodelled" (conservative).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cs {
    Utf8,
    Utf16Be,
    Utf16Le,
    /// Java's "UTF-16": BOM-sensing, BOM consumed, big-endian without BOM.
    Utf16,
    Latin1,
    Ascii,
    Win1252,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Lookup {
    /// `Charset.forName` would throw `IllegalCharsetNameException`.
    Illegal,
    Known(Cs),
    /// A legal name this model does not decode (Java may or may not support it).
    Other,
}

/// `Charset.checkName`: first char letter/digit; then letters, digits, '-', '+', ':', '_', '.'.
pub fn legal_name(n: &str) -> bool {
    if n.is_empty() {
        return false;
    }
    n.chars().enumerate().all(|(i, c)| {
        c.is_ascii_alphanumeric() || (i != 0 && matches!(c, '-' | '+' | ':' | '_' | '.'))
    })
}

/// `Charset.forName(name)` restricted to the charsets this model decodes (names and aliases
/// are matched ignoring ASCII case, as the JDK does).
pub fn lookup(name: &str) -> Lookup {
    if !legal_name(name) {
        return Lookup::Illegal;
    }
    let n = name.to_ascii_lowercase();
    let cs = match n.as_str() {
        "utf-8" | "utf8" | "unicode-1-1-utf-8" => Cs::Utf8,
        "utf-16" | "utf_16" | "utf16" | "unicode" | "unicodebig" => Cs::Utf16,
        "utf-16be" | "utf_16be" | "iso-10646-ucs-2" | "x-utf-16be" | "unicodebigunmarked" => {
            Cs::Utf16Be
        }
        "utf-16le" | "utf_16le" | "x-utf-16le" | "unicodelittleunmarked" => Cs::Utf16Le,
        "iso-8859-1" | "iso-ir-100" | "iso_8859-1" | "latin1" | "l1" | "ibm819" | "cp819"
        | "csisolatin1" | "819" | "ibm-819" | "iso8859_1" | "iso_8859-1:1987" | "iso_8859_1"
        | "8859_1" | "iso8859-1" => Cs::Latin1,
        "us-ascii" | "iso-ir-6" | "ansi_x3.4-1986" | "iso_646.irv:1991" | "ascii"
        | "iso_646.irv:1983" | "ansi_x3.4-1968" | "iso646-us" | "default" | "cp367" | "csascii"
        | "646" | "us" | "ibm367" | "ascii7" => Cs::Ascii,
        "windows-1252" | "cp1252" | "cp5348" | "ibm-1252" | "ibm1252" => Cs::Win1252,
        _ => return Lookup::Other,
    };
    Lookup::Known(cs)
}

/// Is this (legal) charset name one whose encoding of ASCII is not ASCII (UTF-16/32, EBCDIC)?
/// Used for Spring's `UriUtils.decode(path, requestEncoding)`: with such a charset every
/// `%`-containing path is re-decoded into garbage. Approximation by name.
pub fn ascii_incompatible(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    if n.contains("utf-8") || n.contains("utf8") {
        return false;
    }
    n.contains("utf-16")
        || n.contains("utf_16")
        || n.contains("utf16")
        || n.contains("utf-32")
        || n.contains("utf_32")
        || n.contains("utf32")
        || n.contains("ucs")
        || n.starts_with("unicode")
        || n.contains("ebcdic")
        || [
            "cp037", "ibm037", "ibm-037", "cp1047", "ibm1047", "ibm-1047", "cp500", "ibm500",
            "ibm-500", "cp273", "ibm273", "cp277", "ibm277", "cp278", "ibm278", "cp280", "ibm280",
            "cp284", "ibm284", "cp285", "ibm285", "cp297", "ibm297", "cp420", "ibm420", "cp424",
            "ibm424", "cp871", "ibm871", "cp875", "ibm875", "cp918", "ibm918", "cp1025", "cp1026",
            "ibm1026", "cp1140", "cp1141", "cp1142", "cp1143", "cp1144", "cp1145", "cp1146",
            "cp1147", "cp1148", "cp1149",
        ]
        .contains(&n.as_str())
}

/// Java decoders with `CodingErrorAction.REPLACE` (what `InputStreamReader` uses): malformed
/// input becomes U+FFFD; no BOM is stripped except by Java's BOM-sensing "UTF-16".
pub fn decode(bytes: &[u8], cs: Cs) -> Vec<char> {
    match cs {
        // Java's UTF-8 decoder replaces each maximal ill-formed subpart, as Rust does.
        Cs::Utf8 => String::from_utf8_lossy(bytes).chars().collect(),
        Cs::Latin1 => bytes.iter().map(|&b| b as char).collect(),
        Cs::Ascii => bytes
            .iter()
            .map(|&b| if b < 0x80 { b as char } else { '\u{FFFD}' })
            .collect(),
        Cs::Win1252 => bytes.iter().map(|&b| win1252(b)).collect(),
        Cs::Utf16Be => utf16(bytes, true),
        Cs::Utf16Le => utf16(bytes, false),
        Cs::Utf16 => {
            if bytes.len() >= 2 && bytes[0] == 0xFE && bytes[1] == 0xFF {
                utf16(&bytes[2..], true)
            } else if bytes.len() >= 2 && bytes[0] == 0xFF && bytes[1] == 0xFE {
                utf16(&bytes[2..], false)
            } else {
                utf16(bytes, true)
            }
        }
    }
}

fn utf16(bytes: &[u8], be: bool) -> Vec<char> {
    let units: Vec<u16> = bytes
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
    let mut out: Vec<char> = char::decode_utf16(units)
        .map(|r| r.unwrap_or('\u{FFFD}'))
        .collect();
    if bytes.len() % 2 == 1 {
        out.push('\u{FFFD}');
    }
    out
}

fn win1252(b: u8) -> char {
    const HI: [u32; 32] = [
        0x20AC, 0xFFFD, 0x201A, 0x0192, 0x201E, 0x2026, 0x2020, 0x2021, 0x02C6, 0x2030, 0x0160,
        0x2039, 0x0152, 0xFFFD, 0x017D, 0xFFFD, 0xFFFD, 0x2018, 0x2019, 0x201C, 0x201D, 0x2022,
        0x2013, 0x2014, 0x02DC, 0x2122, 0x0161, 0x203A, 0x0153, 0xFFFD, 0x017E, 0x0178,
    ];
    if (0x80..0xA0).contains(&b) {
        char::from_u32(HI[(b - 0x80) as usize]).unwrap_or('\u{FFFD}')
    } else {
        b as char
    }
}

/// Result of reading a body into chars.
#[derive(Debug, PartialEq, Eq)]
pub enum Read {
    Chars(Vec<char>),
    /// GeoServer throws (IOException/UnsupportedCharsetException/IllegalCharsetNameException).
    Error(String),
    /// A charset Java may handle but this model does not decode.
    Unmodelled(String),
}

/// `XmlCharsetDetector.getCharsetAwareReader` + `RequestUtils.getBufferedXMLReader` (2.28.2).
///
/// Phase 1 (`getEncodingName`): the first 4 bytes pick an encoding *scheme*.
/// Phase 2 (`getXmlEncoding`): the declaration is read in that scheme; only a declaration that
/// starts with exactly `<?xml ` (one space) counts, and only a double-quoted
/// `encoding\s*=\s*"..."` within its first 100 chars is found (regex `ENCODING_PATTERN`).
/// Phase 3: the stream is `reset()` to byte 0 (`RewindableInputStream.reset` -> mark 0), so a BOM
/// skipped in phase 1 is decoded again as U+FEFF unless the final charset is Java's "UTF-16".
pub fn geoserver_xml_chars(body: &[u8]) -> Read {
    let count = body.len().min(4);
    let b = |i: usize| body[i];
    // XmlCharsetDetector.getEncodingName(b4, count)
    let (enc, bom): (&str, bool) = if count < 2 {
        ("UTF-8", false)
    } else if b(0) == 0xFE && b(1) == 0xFF {
        ("UTF-16BE", true)
    } else if b(0) == 0xFF && b(1) == 0xFE {
        ("UTF-16LE", true)
    } else if count < 3 {
        ("UTF-8", false)
    } else if b(0) == 0xEF && b(1) == 0xBB && b(2) == 0xBF {
        ("UTF-8", true)
    } else if count < 4 {
        ("UTF-8", false)
    } else {
        match (b(0), b(1), b(2), b(3)) {
            (0x00, 0x00, 0x00, 0x3C) | (0x3C, 0x00, 0x00, 0x00) => {
                // UCSReader(UCS4BE/LE): not modelled
                return Read::Unmodelled("XmlCharsetDetector: ISO-10646-UCS-4 body".into());
            }
            (0x00, 0x00, 0x3C, 0x00) | (0x00, 0x3C, 0x00, 0x00) => {
                // EncodingInfo("ISO-10646-UCS-4", null): "Unsupported byte order" thrown
                return Read::Error("XmlCharsetDetector: UCS-4 with unusual octet order -> UnsupportedCharsetException".into());
            }
            (0x00, 0x3C, 0x00, 0x3F) => ("UTF-16BE", false),
            (0x3C, 0x00, 0x3F, 0x00) => ("UTF-16LE", false),
            (0x4C, 0x6F, 0xA7, 0x94) => {
                return Read::Unmodelled("XmlCharsetDetector: EBCDIC (CP037) body".into());
            }
            _ => ("UTF-8", false),
        }
    };
    let scheme = match enc {
        "UTF-8" => Cs::Utf8,
        "UTF-16BE" => Cs::Utf16Be,
        _ => Cs::Utf16Le,
    };
    // BOM skipping in phase 1 (only for reading the declaration)
    let skip = if bom {
        if enc == "UTF-8" {
            3
        } else {
            2
        }
    } else {
        0
    };
    let decl_chars = decode(&body[skip.min(body.len())..], scheme);
    let decl = xml_encoding(&decl_chars);
    // final reader: a new InputStreamReader only if the declared name differs (case-sensitive
    // String.equals) from the upper-cased scheme name and is not "ISO-10646-UCS-2"
    let cs = match decl {
        Some(d) if d != enc && d != "ISO-10646-UCS-2" => match lookup(&d) {
            Lookup::Known(cs) => cs,
            Lookup::Illegal => {
                return Read::Error(format!(
                    "XmlCharsetDetector: declared encoding \"{d}\" -> IllegalCharsetNameException"
                ))
            }
            Lookup::Other => {
                return Read::Unmodelled(format!(
                    "XmlCharsetDetector: declared encoding \"{d}\" (unknown names throw UnsupportedEncodingException)"
                ))
            }
        },
        _ => scheme,
    };
    Read::Chars(decode(body, cs))
}

/// `XmlCharsetDetector.getXmlEncoding`: read 6 chars, they must be `<?xml `; keep reading until
/// '>' or 100 chars in total; `Pattern.compile("encoding\\s*\\=\\s*\"([^\"]+)\"").find()`.
fn xml_encoding(chars: &[char]) -> Option<String> {
    if chars.len() < 6 || chars[..6].iter().collect::<String>() != "<?xml " {
        return None;
    }
    let mut sw: Vec<char> = chars[..6].to_vec();
    let mut count = 6;
    while count < 100 && count < chars.len() && chars[count] != '>' {
        sw.push(chars[count]);
        count += 1;
    }
    // find "encoding" \s* "=" \s* '"' [^"]+ '"'
    let java_space = |c: char| matches!(c, ' ' | '\t' | '\n' | '\u{b}' | '\u{c}' | '\r');
    let n = sw.len();
    for start in 0..n {
        let lit: Vec<char> = "encoding".chars().collect();
        if start + lit.len() > n || sw[start..start + lit.len()] != lit[..] {
            continue;
        }
        let mut i = start + lit.len();
        while i < n && java_space(sw[i]) {
            i += 1;
        }
        if i >= n || sw[i] != '=' {
            continue;
        }
        i += 1;
        while i < n && java_space(sw[i]) {
            i += 1;
        }
        if i >= n || sw[i] != '"' {
            continue;
        }
        i += 1;
        let vstart = i;
        while i < n && sw[i] != '"' {
            i += 1;
        }
        if i < n && i > vstart {
            return Some(sw[vstart..i].iter().collect());
        }
    }
    None
}

/// Xerces' byte-stream detection (`XMLEntityManager.setupCurrentEntity`, JDK 17) used by the
/// SOAP `DocumentBuilder`: BOMs are consumed, the declaration's encoding (either quote style)
/// is honoured. Only the charsets of [`Cs`] are modelled.
pub fn xerces_chars(body: &[u8]) -> Read {
    let (scheme, skip) = if body.starts_with(&[0xEF, 0xBB, 0xBF]) {
        (Cs::Utf8, 3)
    } else if body.starts_with(&[0xFE, 0xFF]) {
        (Cs::Utf16Be, 2)
    } else if body.starts_with(&[0xFF, 0xFE]) {
        (Cs::Utf16Le, 2)
    } else if body.starts_with(&[0x00, 0x3C, 0x00, 0x3F]) {
        (Cs::Utf16Be, 0)
    } else if body.starts_with(&[0x3C, 0x00, 0x3F, 0x00]) {
        (Cs::Utf16Le, 0)
    } else if body.len() >= 4
        && (body[..4] == [0, 0, 0, 0x3C]
            || body[..4] == [0x3C, 0, 0, 0]
            || body[..4] == [0x4C, 0x6F, 0xA7, 0x94])
    {
        return Read::Unmodelled("Xerces: UCS-4/EBCDIC SOAP body".into());
    } else {
        (Cs::Utf8, 0)
    };
    let chars = decode(&body[skip..], scheme);
    // declared encoding, either quote style
    let decl = declared_encoding_any_quote(&chars);
    match (scheme, decl) {
        (_, None) => Read::Chars(chars),
        (Cs::Utf8, Some(d)) => match lookup(&d) {
            Lookup::Known(Cs::Utf8) => Read::Chars(chars),
            Lookup::Known(cs @ (Cs::Latin1 | Cs::Ascii | Cs::Win1252)) => {
                Read::Chars(decode(&body[skip..], cs))
            }
            _ => Read::Unmodelled(format!("Xerces: SOAP body declares encoding \"{d}\"")),
        },
        (_, Some(d)) => match lookup(&d) {
            Lookup::Known(Cs::Utf16 | Cs::Utf16Be | Cs::Utf16Le) => Read::Chars(chars),
            _ => Read::Unmodelled(format!(
                "Xerces: UTF-16 SOAP body declares encoding \"{d}\""
            )),
        },
    }
}

fn declared_encoding_any_quote(chars: &[char]) -> Option<String> {
    let head: String = chars.iter().take(200).collect();
    if !head.starts_with("<?xml") {
        return None;
    }
    let end = head.find("?>")?;
    let decl = &head[..end];
    let p = decl.find("encoding")?;
    let rest = decl[p + 8..].trim_start_matches([' ', '\t', '\r', '\n']);
    let rest = rest
        .strip_prefix('=')?
        .trim_start_matches([' ', '\t', '\r', '\n']);
    let q = rest.chars().next()?;
    if q != '"' && q != '\'' {
        return None;
    }
    let inner = &rest[1..];
    let close = inner.find(q)?;
    Some(inner[..close].to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(r: Read) -> String {
        match r {
            Read::Chars(c) => c.into_iter().collect(),
            other => format!("{other:?}"),
        }
    }

    #[test]
    fn utf8_bom_is_replayed() {
        let body = b"\xEF\xBB\xBF<a/>";
        assert_eq!(s(geoserver_xml_chars(body)), "\u{FEFF}<a/>");
    }

    #[test]
    fn single_quoted_encoding_is_ignored() {
        let body = b"<?xml version='1.0' encoding='ISO-8859-1'?><a \xE9/>";
        assert_eq!(
            s(geoserver_xml_chars(body)),
            "<?xml version='1.0' encoding='ISO-8859-1'?><a \u{FFFD}/>"
        );
        let body = b"<?xml version=\"1.0\" encoding=\"ISO-8859-1\"?><a \xE9/>";
        assert!(s(geoserver_xml_chars(body)).ends_with("<a \u{e9}/>"));
    }

    #[test]
    fn utf16_without_bom() {
        let text = "<?xml version=\"1.0\"?><T/>";
        let body: Vec<u8> = text.encode_utf16().flat_map(|u| u.to_le_bytes()).collect();
        assert_eq!(s(geoserver_xml_chars(&body)), text);
    }

    #[test]
    fn utf16_bom_declared_utf16_is_clean() {
        let text = "<?xml version=\"1.0\" encoding=\"UTF-16\"?><T/>";
        let mut body = vec![0xFF, 0xFE];
        body.extend(text.encode_utf16().flat_map(|u| u.to_le_bytes()));
        assert_eq!(s(geoserver_xml_chars(&body)), text);
    }

    #[test]
    fn bad_declared_charset() {
        assert!(matches!(
            geoserver_xml_chars(b"<?xml version=\"1.0\" encoding=\"utf 8\"?><a/>"),
            Read::Error(_)
        ));
        assert!(matches!(
            geoserver_xml_chars(b"<?xml version=\"1.0\" encoding=\"Shift_JIS\"?><a/>"),
            Read::Unmodelled(_)
        ));
    }
}
