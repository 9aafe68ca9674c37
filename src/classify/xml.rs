//! The operation an XML body names, read the way GeoServer's `Dispatcher.readOpPost` does: the local
//! name of the root element, found after the XML declaration, whitespace, comments and processing
//! instructions.
//!
//! This reader is strict on purpose: it accepts only what every conforming XML parser reads the
//! same way, and is unsure of the rest, which then goes to the master: a DOCTYPE (its internal
//! subset can hide or make elements), a byte-order mark (GeoServer's charset detector replays it and
//! the parser refuses it), a non-ASCII-compatible encoding, XML 1.1, `--` in a comment, text before
//! the root, a non-ASCII element or attribute name, an unbound prefix, a repeated attribute, an
//! entity reference. SOAP bodies are not read here: GeoServer parses the whole envelope and takes
//! the SOAP-namespace `Body` wherever it is, so every SOAP request goes to the master.

use super::Op;

/// What a body prefix says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Root<'a> {
    /// The operation element: its local name, and whether it carries a `lockId` attribute.
    Found { name: &'a [u8], lock: bool },
    /// The prefix ends before the answer.
    NeedMore,
    /// A reader could see it otherwise: the master.
    Unsure(&'static str),
}

impl Root<'_> {
    pub fn op(&self) -> Option<Op> {
        match self {
            Root::Found { name, .. } => Some(Op::parse(name)),
            _ => None,
        }
    }
}

/// Encodings under which an ASCII element name reads the same.
const SAFE_ENCODINGS: &[&[u8]] = &[b"utf-8", b"us-ascii", b"iso-8859-1"];

/// The root element of a plain XML body.
pub fn root(body: &[u8], complete: bool) -> Root<'_> {
    let mut r = Reader {
        body,
        at: 0,
        complete,
    };
    match r.prologue() {
        Ok(()) => {}
        Err(stop) => return stop.into(),
    }
    match r.start_tag() {
        Ok(tag) => {
            // The root is the first element: every prefix it uses must be declared on it, or a
            // namespace-aware parser (GeoServer's) refuses the document (a write goes to the
            // master either way, and keeps its name).
            if !tag.bound() && !matches!(Op::parse(tag.local), Op::Write(_)) {
                return Root::Unsure("unbound-prefix");
            }
            if tag.local == b"Envelope" {
                // Not SOAP to GeoServer (not its content type): the operation `Envelope`, unknown.
                return Root::Unsure("soap-shape");
            }
            Root::Found {
                name: tag.local,
                lock: tag.lock,
            }
        }
        Err(stop) => stop.into(),
    }
}

/// Why reading stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stop {
    NeedMore,
    Unsure(&'static str),
}

impl From<Stop> for Root<'_> {
    fn from(stop: Stop) -> Self {
        match stop {
            Stop::NeedMore => Root::NeedMore,
            Stop::Unsure(why) => Root::Unsure(why),
        }
    }
}

/// A start tag.
struct Tag<'a> {
    prefix: Option<&'a [u8]>,
    local: &'a [u8],
    /// `<x/>`.
    empty: bool,
    /// A `lockId` attribute (any namespace, any case).
    lock: bool,
    /// `xmlns` declarations: (prefix or empty for the default, namespace).
    xmlns: [Option<(&'a [u8], &'a [u8])>; MAX_DECLARATIONS],
    /// The prefixes of its attributes (but `xmlns`), to check they are bound.
    attr_prefixes: [Option<&'a [u8]>; MAX_DECLARATIONS],
}

/// Namespace declarations (and prefixed attributes) an element may have here: more is unusual
/// enough to play safe.
const MAX_DECLARATIONS: usize = 16;

impl<'a> Tag<'a> {
    /// Whether the prefixes of its name and attributes are declared on it.
    fn bound(&self) -> bool {
        let declared = |p: &[u8]| p == b"xml" || self.xmlns.iter().flatten().any(|(d, _)| *d == p);
        self.prefix.is_none_or(declared) && self.attr_prefixes.iter().flatten().all(|p| declared(p))
    }
}

struct Reader<'a> {
    body: &'a [u8],
    at: usize,
    complete: bool,
}

fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\n')
}

fn is_name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b':')
}

impl<'a> Reader<'a> {
    fn rest(&self) -> &'a [u8] {
        &self.body[self.at..]
    }

    /// The prefix ended: more is needed, or (the body is whole) it is not what it should be.
    fn short(&self) -> Stop {
        if self.complete {
            Stop::Unsure("unparsed-body")
        } else {
            Stop::NeedMore
        }
    }

    /// `rest` starts with `what`: `Ok(true)`; it cannot: `Ok(false)`; too short to tell: `Err`.
    fn starts_with(&self, what: &[u8]) -> Result<bool, Stop> {
        let rest = self.rest();
        let n = rest.len().min(what.len());
        if rest[..n] != what[..n] {
            return Ok(false);
        }
        if n < what.len() {
            return Err(self.short());
        }
        Ok(true)
    }

    /// Position of `what` from `at`, or not yet.
    /// Where `what` starts, `skip` bytes or more past the cursor (past an opening `<?` or `<!--`:
    /// in `<?>` the `?>` overlapping the opening does not close it).
    fn find_after(&self, skip: usize, what: &[u8]) -> Result<usize, Stop> {
        self.rest()
            .get(skip..)
            .and_then(|rest| rest.windows(what.len()).position(|w| w == what))
            .map(|i| self.at + skip + i)
            .ok_or_else(|| self.short())
    }

    /// The XML declaration (only at offset 0), then misc.
    fn prologue(&mut self) -> Result<(), Stop> {
        match self.body {
            [] => return Err(self.short()),
            [0xEF, 0xBB, 0xBF, ..] | [0xFE, 0xFF, ..] | [0xFF, 0xFE, ..] => {
                return Err(Stop::Unsure("byte-order-mark"))
            }
            [0, ..] | [_, 0, ..] => return Err(Stop::Unsure("xml-encoding")),
            _ => {}
        }
        if self.starts_with(b"<?xml")? {
            let end = self.find_after(5, b"?>")?;
            let decl = &self.body[5..end];
            if !decl.first().is_some_and(|&b| is_space(b)) {
                // `<?xml-stylesheet …?>` is a processing instruction: misc handles it.
            } else {
                declaration(decl)?;
                self.at = end + 2;
            }
        }
        self.misc()
    }

    /// Whitespace, comments and processing instructions, up to the next element.
    fn misc(&mut self) -> Result<(), Stop> {
        loop {
            while self.rest().first().is_some_and(|&b| is_space(b)) {
                self.at += 1;
            }
            let rest = self.rest();
            match rest {
                [] | [b'<'] => return Err(self.short()),
                [b'<', b'!', ..] => {
                    if !self.starts_with(b"<!--")? {
                        // DOCTYPE, CDATA, or anything else.
                        return Err(Stop::Unsure("doctype"));
                    }
                    let end = self.find_after(4, b"-->")?;
                    let text = &self.body[self.at + 4..end];
                    if text.windows(2).any(|w| w == b"--") || text.last() == Some(&b'-') {
                        return Err(Stop::Unsure("xml-comment"));
                    }
                    self.at = end + 3;
                }
                [b'<', b'?', ..] => {
                    let end = self.find_after(2, b"?>")?;
                    let target: Vec<u8> = self.body[self.at + 2..end]
                        .iter()
                        .take_while(|&&b| !is_space(b))
                        .copied()
                        .collect();
                    if target.eq_ignore_ascii_case(b"xml") || target.is_empty() {
                        return Err(Stop::Unsure("xml-declaration"));
                    }
                    self.at = end + 2;
                }
                [b'<', ..] => return Ok(()),
                _ => return Err(Stop::Unsure("text-before-root")),
            }
        }
    }

    /// A start tag: its name, its attributes.
    fn start_tag(&mut self) -> Result<Tag<'a>, Stop> {
        let body = self.body;
        let mut i = self.at + 1;
        let name_start = i;
        while body.get(i).is_some_and(|&b| is_name_byte(b)) {
            i += 1;
        }
        let Some(&after) = body.get(i) else {
            return Err(self.short());
        };
        let qname = &body[name_start..i];
        if !(is_space(after) || after == b'>' || after == b'/') {
            // A non-ASCII name (or a stray byte): Xerces' name tables, not ours.
            return Err(Stop::Unsure("element-name"));
        }
        let (prefix, local) = split_qname(qname)?;
        let mut tag = Tag {
            prefix,
            local,
            empty: false,
            lock: false,
            xmlns: [None; MAX_DECLARATIONS],
            attr_prefixes: [None; MAX_DECLARATIONS],
        };
        let (mut declared, mut prefixed) = (0, 0);
        // Local names of the attributes so far.
        let mut seen: [Option<&[u8]>; 2 * MAX_DECLARATIONS] = [None; 2 * MAX_DECLARATIONS];
        let mut attrs = 0;
        loop {
            while body.get(i).is_some_and(|&b| is_space(b)) {
                i += 1;
            }
            match body.get(i) {
                None => return Err(self.short()),
                Some(b'>') => {
                    self.at = i + 1;
                    return Ok(tag);
                }
                Some(b'/') => match body.get(i + 1) {
                    None => return Err(self.short()),
                    Some(b'>') => {
                        tag.empty = true;
                        self.at = i + 2;
                        return Ok(tag);
                    }
                    Some(_) => return Err(Stop::Unsure("unparsed-body")),
                },
                Some(_) => {}
            }
            // An attribute: name = "value".
            let name_start = i;
            while body.get(i).is_some_and(|&b| is_name_byte(b)) {
                i += 1;
            }
            let attr = &body[name_start..i];
            while body.get(i).is_some_and(|&b| is_space(b)) {
                i += 1;
            }
            match body.get(i) {
                None => return Err(self.short()),
                Some(b'=') if !attr.is_empty() => i += 1,
                Some(_) => return Err(Stop::Unsure("attribute")),
            }
            while body.get(i).is_some_and(|&b| is_space(b)) {
                i += 1;
            }
            let quote = match body.get(i) {
                None => return Err(self.short()),
                Some(&q @ (b'"' | b'\'')) => q,
                Some(_) => return Err(Stop::Unsure("attribute")),
            };
            let value_start = i + 1;
            let Some(len) = body[value_start..].iter().position(|&b| b == quote) else {
                return Err(self.short());
            };
            let value = &body[value_start..value_start + len];
            if value.contains(&b'<') || !plain_references(value) {
                return Err(Stop::Unsure("attribute"));
            }
            i = value_start + len + 1;
            let (attr_prefix, attr_local) = split_qname(attr)?;
            // A repeated attribute (or one local name in two namespaces) is a well-formedness
            // error to a namespace-aware parser: only an unusual body has one.
            if seen.iter().flatten().any(|l: &&[u8]| *l == attr_local) {
                return Err(Stop::Unsure("attribute"));
            }
            let slot = seen.get_mut(attrs).ok_or(Stop::Unsure("attribute"))?;
            *slot = Some(attr_local);
            attrs += 1;
            if attr_local.eq_ignore_ascii_case(b"lockId") {
                tag.lock = true;
            }
            let declares = match (attr_prefix, attr_local) {
                (None, b"xmlns") => Some(&b""[..]),
                (Some(b"xmlns"), p) => Some(p),
                _ => None,
            };
            if let Some(p) = declares {
                if value.contains(&b'&') {
                    // An entity in a namespace name: not compared here.
                    return Err(Stop::Unsure("attribute"));
                }
                let slot = tag
                    .xmlns
                    .get_mut(declared)
                    .ok_or(Stop::Unsure("attribute"))?;
                *slot = Some((p, value));
                declared += 1;
            } else if let Some(p) = attr_prefix {
                let slot = tag
                    .attr_prefixes
                    .get_mut(prefixed)
                    .ok_or(Stop::Unsure("attribute"))?;
                *slot = Some(p);
                prefixed += 1;
            }
        }
    }
}

/// Only the predefined entities and character references (anything else needs a DTD).
fn plain_references(value: &[u8]) -> bool {
    let mut rest = value;
    while let Some(i) = rest.iter().position(|&b| b == b'&') {
        let Some(end) = rest[i..].iter().position(|&b| b == b';') else {
            return false;
        };
        let name = &rest[i + 1..i + end];
        let known = matches!(name, b"lt" | b"gt" | b"amp" | b"quot" | b"apos")
            || name
                .strip_prefix(b"#x")
                .is_some_and(|h| !h.is_empty() && h.iter().all(u8::is_ascii_hexdigit))
            || name
                .strip_prefix(b"#")
                .is_some_and(|d| !d.is_empty() && d.iter().all(u8::is_ascii_digit));
        if !known {
            return false;
        }
        rest = &rest[i + end + 1..];
    }
    true
}

/// `prefix:local`, both non-empty ASCII names.
fn split_qname(qname: &[u8]) -> Result<(Option<&[u8]>, &[u8]), Stop> {
    let starts_well = |n: &[u8]| {
        n.first()
            .is_some_and(|&b| b.is_ascii_alphabetic() || b == b'_')
    };
    let (prefix, local) = match qname.iter().position(|&b| b == b':') {
        Some(i) => (Some(&qname[..i]), &qname[i + 1..]),
        None => (None, qname),
    };
    if !starts_well(local) || local.contains(&b':') || prefix.is_some_and(|p| !starts_well(p)) {
        return Err(Stop::Unsure("element-name"));
    }
    Ok((prefix, local))
}

/// The pseudo-attributes of `<?xml …?>`: version 1.0, an ASCII-compatible encoding.
fn declaration(decl: &[u8]) -> Result<(), Stop> {
    let text = std::str::from_utf8(decl).map_err(|_| Stop::Unsure("xml-declaration"))?;
    let mut rest = text.trim_start();
    while !rest.is_empty() {
        let (name, after) = rest
            .split_once('=')
            .ok_or(Stop::Unsure("xml-declaration"))?;
        let after = after.trim_start();
        let quote = after.chars().next().filter(|&q| q == '"' || q == '\'');
        let quote = quote.ok_or(Stop::Unsure("xml-declaration"))?;
        let (value, tail) = after[1..]
            .split_once(quote)
            .ok_or(Stop::Unsure("xml-declaration"))?;
        match name.trim() {
            "version" if value == "1.0" => {}
            "encoding"
                if SAFE_ENCODINGS
                    .iter()
                    .any(|e| e.eq_ignore_ascii_case(value.as_bytes())) => {}
            "standalone" if value == "yes" || value == "no" => {}
            "encoding" => return Err(Stop::Unsure("xml-encoding")),
            _ => return Err(Stop::Unsure("xml-declaration")),
        }
        rest = tail.trim_start();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(body: &str) -> Root<'_> {
        root(body.as_bytes(), true)
    }

    fn found(name: &str) -> Root<'_> {
        Root::Found {
            name: name.as_bytes(),
            lock: false,
        }
    }

    #[test]
    fn the_root_after_an_ordinary_prologue() {
        assert_eq!(op("<wfs:GetFeature xmlns:wfs=\"x\"/>"), found("GetFeature"));
        assert_eq!(
            op("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<!-- a < b -->\n<?pi data?>\n  <wfs:Transaction>"),
            found("Transaction")
        );
        assert_eq!(
            op("<?xml version='1.0' encoding='ISO-8859-1' standalone='yes'?><GetMap>"),
            found("GetMap")
        );
        assert_eq!(
            op("<?xml-stylesheet href=\"a\"?><GetMap/>"),
            found("GetMap")
        );
        assert_eq!(
            op("<wfs:GetFeature xmlns:wfs='x' service='WFS' lockId=\"L1\"/>"),
            Root::Found {
                name: b"GetFeature",
                lock: true
            }
        );
    }

    #[test]
    fn what_a_parser_could_read_otherwise_is_doubtful() {
        for (body, why) in [
            (
                "<!DOCTYPE x [<!-- <wfs:GetFeature> -->]><wfs:Transaction/>",
                "doctype",
            ),
            ("<!DOCTYPE GetFeature><Transaction/>", "doctype"),
            ("\u{feff}<Transaction/>", "byte-order-mark"),
            (
                "<?xml version=\"1.0\" encoding=\"UTF-16\"?><GetFeature/>",
                "xml-encoding",
            ),
            ("<?xml version=\"1.1\"?><GetFeature/>", "xml-declaration"),
            ("<!-- a -- b --><GetFeature/>", "xml-comment"),
            ("text<GetFeature/>", "text-before-root"),
            ("<![CDATA[x]]><GetFeature/>", "doctype"),
            ("<Get\u{e9}Feature/>", "element-name"),
            (" <?xml version=\"1.0\"?><GetFeature/>", "xml-declaration"),
            (
                "<Envelope><Body><GetFeature/></Body></Envelope>",
                "soap-shape",
            ),
            ("<GetFeature a=\"<\"/>", "attribute"),
            ("<GetFeature a=\"1\" a=\"2\"/>", "attribute"),
            (
                "<GetFeature x:a=\"1\" y:a=\"2\" xmlns:x=\"u\" xmlns:y=\"v\"/>",
                "attribute",
            ),
            ("<GetFeature a=\"&e;\"/>", "attribute"),
            ("<wfs:GetFeature/>", "unbound-prefix"),
            ("<GetFeature x:service=\"WFS\"/>", "unbound-prefix"),
            ("<GetFeature", "unparsed-body"),
            ("", "unparsed-body"),
            // A closing delimiter overlapping the opening one closes nothing (and must not panic).
            ("<?>", "unparsed-body"),
            ("<!-->", "unparsed-body"),
            ("<!--->", "unparsed-body"),
        ] {
            assert_eq!(op(body), Root::Unsure(why), "{body}");
        }
        assert_eq!(
            root(b"<?xml version=\"1.0\"?><!-- long", false),
            Root::NeedMore
        );
        assert_eq!(root(b"<wfs:Transa", false), Root::NeedMore);
        assert_eq!(root(b"<", false), Root::NeedMore);
    }
}
