//! The XML reading GeoServer does to find the operation of a POST.
//!
//! 2.28.2 `Dispatcher.readOpPost` / `createParserForRootElement`: a StAX `XMLStreamReader` from
//! `XMLInputFactory.newFactory()` with `SUPPORT_DTD=false` and
//! `IS_SUPPORTING_EXTERNAL_ENTITIES=false`, namespace aware (StAX default), fed the decoded chars
//! (a `Reader`, so the declared encoding is not used by the parser), advanced with `next()` until
//! the first `START_ELEMENT`. In a stock WAR this is the JDK's built-in SJSXP (Xerces scanner);
//! woodstox only comes with extensions such as ogcapi (then BOM/DTD edge cases may differ).
//! `SOAP`: `Dispatcher.soapReader` parses the whole document with a namespace-aware JAXP
//! `DocumentBuilder` (Xerces DOM) -> [`parse_document`].
//!
//! The scanner below is strict where Xerces is strict (XML declaration only at offset 0, reserved
//! PI targets, `--` in comments, one DOCTYPE, no text before the root, bound prefixes, unique
//! attributes, no `<` in attribute values, only predefined/char entity references). Where the
//! model is unsure how Xerces behaves it reports `Unmodelled` so the caller can be conservative.

pub const XML_NS: &str = "http://www.w3.org/XML/1998/namespace";
pub const XMLNS_NS: &str = "http://www.w3.org/2000/xmlns/";

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum XmlErr {
    /// Xerces reports a fatal error (XMLStreamException / SAXParseException).
    Malformed(String),
    /// The model cannot tell what Xerces does (DTD attribute defaults, entity expansion,
    /// XML 1.1, non-ASCII names): callers treat it conservatively.
    Unmodelled(String),
}

type R<T> = Result<T, XmlErr>;

fn bad<T>(m: impl Into<String>) -> R<T> {
    Err(XmlErr::Malformed(m.into()))
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attr {
    pub qname: String,
    pub local: String,
    pub ns: Option<String>,
    pub value: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Element {
    pub qname: String,
    pub local: String,
    pub ns: Option<String>,
    /// Attributes in document order, namespace declarations excluded (StAX does not report them).
    pub attrs: Vec<Attr>,
    pub empty: bool,
    pub parent: Option<usize>,
}

impl Element {
    /// SJSXP `XMLStreamReaderImpl.getAttributeValue(null, local)` ("sjsxp issue 70"): the first
    /// attribute, in order, whose *local* name matches, whatever its namespace.
    pub fn attr_by_local(&self, local: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|a| a.local == local)
            .map(|a| a.value.as_str())
    }
}

pub fn is_s(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\r' | '\n')
}

pub fn is_xml_char(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..='\u{10FFFF}')
}

fn is_name_start(c: char) -> bool {
    matches!(c, ':' | 'A'..='Z' | '_' | 'a'..='z' | '\u{C0}'..='\u{D6}' | '\u{D8}'..='\u{F6}'
        | '\u{F8}'..='\u{2FF}' | '\u{370}'..='\u{37D}' | '\u{37F}'..='\u{1FFF}' | '\u{200C}'..='\u{200D}'
        | '\u{2070}'..='\u{218F}' | '\u{2C00}'..='\u{2FEF}' | '\u{3001}'..='\u{D7FF}'
        | '\u{F900}'..='\u{FDCF}' | '\u{FDF0}'..='\u{FFFD}' | '\u{10000}'..='\u{EFFFF}')
}

fn is_name_char(c: char) -> bool {
    is_name_start(c)
        || matches!(c, '-' | '.' | '0'..='9' | '\u{B7}' | '\u{300}'..='\u{36F}' | '\u{203F}'..='\u{2040}')
}

pub struct Parser<'a> {
    s: &'a [char],
    i: usize,
    seen_doctype: bool,
    /// namespace scopes: (prefix, uri); "" = default namespace
    scopes: Vec<Vec<(String, String)>>,
    /// DOM mode (SOAP): DTDs are processed by the DocumentBuilder
    dom: bool,
}

impl<'a> Parser<'a> {
    pub fn new(s: &'a [char]) -> Self {
        Parser {
            s,
            i: 0,
            seen_doctype: false,
            scopes: Vec::new(),
            dom: false,
        }
    }

    pub fn position(&self) -> usize {
        self.i
    }

    fn peek(&self) -> Option<char> {
        self.s.get(self.i).copied()
    }

    fn at(&self, k: usize) -> Option<char> {
        self.s.get(self.i + k).copied()
    }

    fn starts_with(&self, lit: &str) -> bool {
        let mut k = 0;
        for c in lit.chars() {
            if self.s.get(self.i + k) != Some(&c) {
                return false;
            }
            k += 1;
        }
        true
    }

    fn eat(&mut self, lit: &str) -> bool {
        if self.starts_with(lit) {
            self.i += lit.chars().count();
            true
        } else {
            false
        }
    }

    fn skip_s(&mut self) -> usize {
        let st = self.i;
        while self.peek().map_or(false, is_s) {
            self.i += 1;
        }
        self.i - st
    }

    fn char_ok(&self, c: char) -> R<()> {
        if is_xml_char(c) {
            Ok(())
        } else {
            bad(format!("invalid XML character U+{:04X}", c as u32))
        }
    }

    fn name(&mut self) -> R<String> {
        match self.peek() {
            Some(c) if is_name_start(c) => {}
            Some(c) => return bad(format!("name expected, found {c:?}")),
            None => return bad("premature end of file in a name"),
        }
        let st = self.i;
        while self.peek().map_or(false, is_name_char) {
            self.i += 1;
        }
        Ok(self.s[st..self.i].iter().collect())
    }

    /// Prolog, then the root start tag (StAX `next()` until START_ELEMENT).
    /// Xerces `XMLDocumentScannerImpl`: `XMLDeclDriver` (declaration only at offset 0),
    /// `PrologDriver` (S, comments, PIs, one DOCTYPE; anything else -> "Content is not allowed
    /// in prolog"; end of input -> "Premature end of file").
    pub fn root(&mut self) -> R<Element> {
        if self.starts_with("<?xml") && self.at(5).map_or(false, is_s) {
            self.xml_decl()?;
        }
        loop {
            self.skip_s();
            match self.peek() {
                None => return bad("premature end of file before the root element"),
                Some('<') => {
                    if self.starts_with("<!--") {
                        self.comment()?;
                    } else if self.starts_with("<?") {
                        self.pi()?;
                    } else if self.starts_with("<!DOCTYPE") {
                        if self.seen_doctype {
                            return bad("second DOCTYPE");
                        }
                        self.doctype()?;
                    } else if self.at(1).map_or(false, is_name_start) {
                        return self.start_tag(None);
                    } else {
                        return bad("markup not allowed in prolog");
                    }
                }
                Some('\u{FEFF}') => {
                    return bad("U+FEFF before the root: 'Content is not allowed in prolog' (BOM replayed by XmlCharsetDetector)")
                }
                Some(c) => return bad(format!("content is not allowed in prolog ({c:?})")),
            }
        }
    }

    /// `scanXMLDeclOrTextDecl`: version (required, "1.0"; "1.1" switches Xerces to XML 1.1 rules,
    /// not modelled), optional encoding (EncName), optional standalone (yes|no), in this order.
    fn xml_decl(&mut self) -> R<()> {
        self.i += 5;
        self.skip_s();
        if !self.eat("version") {
            return bad("XML declaration without version");
        }
        let v = self.pseudo_value()?;
        if v != "1.0" {
            if v == "1.1" {
                return Err(XmlErr::Unmodelled("XML 1.1 document".into()));
            }
            return bad(format!("XML version {v:?} not supported"));
        }
        let mut sp = self.skip_s() > 0;
        if sp && self.eat("encoding") {
            let e = self.pseudo_value()?;
            let mut ch = e.chars();
            let ok = ch.next().map_or(false, |c| c.is_ascii_alphabetic())
                && ch.all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
            if !ok {
                return bad(format!("invalid encoding name {e:?}"));
            }
            sp = self.skip_s() > 0;
        }
        if sp && self.eat("standalone") {
            let v = self.pseudo_value()?;
            if v != "yes" && v != "no" {
                return bad("standalone must be yes or no");
            }
            self.skip_s();
        }
        if !self.eat("?>") {
            return bad("malformed XML declaration");
        }
        Ok(())
    }

    fn pseudo_value(&mut self) -> R<String> {
        self.skip_s();
        if !self.eat("=") {
            return bad("'=' expected in XML declaration");
        }
        self.skip_s();
        let q = match self.peek() {
            Some(q @ ('"' | '\'')) => q,
            _ => return bad("quote expected in XML declaration"),
        };
        self.i += 1;
        let st = self.i;
        loop {
            match self.peek() {
                None => return bad("unterminated literal"),
                Some(c) if c == q => break,
                Some(c) => {
                    self.char_ok(c)?;
                    self.i += 1;
                }
            }
        }
        let v = self.s[st..self.i].iter().collect();
        self.i += 1;
        Ok(v)
    }

    /// Comment ::= '<!--' ((Char - '-') | ('-' (Char - '-')))* '-->'
    fn comment(&mut self) -> R<()> {
        self.i += 4;
        loop {
            match self.peek() {
                None => return bad("unterminated comment"),
                Some('-') if self.at(1) == Some('-') => {
                    if self.at(2) == Some('>') {
                        self.i += 3;
                        return Ok(());
                    }
                    return bad("'--' inside a comment");
                }
                Some(c) => {
                    self.char_ok(c)?;
                    self.i += 1;
                }
            }
        }
    }

    /// PI ::= '<?' PITarget (S (Char* - (Char* '?>' Char*)))? '?>' ; target [Xx][Mm][Ll] reserved
    fn pi(&mut self) -> R<()> {
        self.i += 2;
        let target = self.name()?;
        if target.eq_ignore_ascii_case("xml") {
            return bad("processing instruction target matching [xX][mM][lL] is not allowed");
        }
        if self.eat("?>") {
            return Ok(());
        }
        if self.skip_s() == 0 {
            return bad("space required after PI target");
        }
        loop {
            match self.peek() {
                None => return bad("unterminated processing instruction"),
                Some('?') if self.at(1) == Some('>') => {
                    self.i += 2;
                    return Ok(());
                }
                Some(c) => {
                    self.char_ok(c)?;
                    self.i += 1;
                }
            }
        }
    }

    fn literal(&mut self) -> R<()> {
        let q = match self.peek() {
            Some(q @ ('"' | '\'')) => q,
            _ => return bad("quoted literal expected"),
        };
        self.i += 1;
        loop {
            match self.peek() {
                None => return bad("unterminated literal"),
                Some(c) if c == q => {
                    self.i += 1;
                    return Ok(());
                }
                Some(c) => {
                    self.char_ok(c)?;
                    self.i += 1;
                }
            }
        }
    }

    /// doctypedecl ::= '<!DOCTYPE' S Name (S ExternalID)? S? ('[' intSubset ']' S?)? '>'
    /// With SUPPORT_DTD=false SJSXP still scans the internal subset declaration by declaration
    /// (`XMLDocumentScannerImpl.DTDDriver`), so a '>' inside a quoted literal or a comment does
    /// not end it. ATTLIST defaults, PE references and (DOM mode) any DTD are not modelled.
    fn doctype(&mut self) -> R<()> {
        self.i += 9;
        if self.skip_s() == 0 {
            return bad("space required after <!DOCTYPE");
        }
        self.name()?;
        let sp = self.skip_s() > 0;
        if sp && (self.starts_with("SYSTEM") || self.starts_with("PUBLIC")) {
            let public = self.starts_with("PUBLIC");
            self.i += 6;
            if self.skip_s() == 0 {
                return bad("space required in external id");
            }
            self.literal()?;
            if public {
                if self.skip_s() == 0 {
                    return bad("space required in external id");
                }
                self.literal()?;
            }
            self.skip_s();
        }
        if self.eat("[") {
            self.int_subset()?;
            self.skip_s();
        }
        if !self.eat(">") {
            return bad("DOCTYPE not terminated");
        }
        self.seen_doctype = true;
        if self.dom {
            // DocumentBuilder processes the DTD (entities, attribute defaults, external subset
            // through the entity resolver): not modelled.
            return Err(XmlErr::Unmodelled(
                "DOCTYPE in a SOAP document (DOM processes the DTD)".into(),
            ));
        }
        Ok(())
    }

    fn int_subset(&mut self) -> R<()> {
        loop {
            self.skip_s();
            match self.peek() {
                None => return bad("unterminated internal subset"),
                Some(']') => {
                    self.i += 1;
                    return Ok(());
                }
                Some('%') => {
                    return Err(XmlErr::Unmodelled(
                        "parameter entity reference in the internal subset".into(),
                    ))
                }
                Some('<') => {
                    if self.starts_with("<!--") {
                        self.comment()?;
                    } else if self.starts_with("<?") {
                        self.pi()?;
                    } else if self.starts_with("<!ATTLIST") {
                        // attribute defaults could add e.g. service="WFS" to the root
                        return Err(XmlErr::Unmodelled(
                            "ATTLIST in the internal subset (attribute defaults)".into(),
                        ));
                    } else if self.eat("<!ELEMENT")
                        || self.eat("<!ENTITY")
                        || self.eat("<!NOTATION")
                    {
                        if self.skip_s() == 0 {
                            return bad("space required in markup declaration");
                        }
                        loop {
                            match self.peek() {
                                None => return bad("unterminated markup declaration"),
                                Some('>') => {
                                    self.i += 1;
                                    break;
                                }
                                Some('"' | '\'') => self.literal()?,
                                Some('<') => return bad("'<' inside a markup declaration"),
                                Some(c) => {
                                    self.char_ok(c)?;
                                    self.i += 1;
                                }
                            }
                        }
                    } else {
                        return bad("invalid markup in the internal subset");
                    }
                }
                Some(c) => return bad(format!("invalid content in the internal subset ({c:?})")),
            }
        }
    }

    /// Reference in an attribute value or content, after '&'. Char refs and the five predefined
    /// entities are expanded; any other entity is undeclared for SJSXP (SUPPORT_DTD=false ->
    /// fatal) unless a DOCTYPE could have declared it (then: not modelled).
    fn reference(&mut self) -> R<char> {
        self.i += 1;
        if self.eat("#x") {
            let st = self.i;
            while self.peek().map_or(false, |c| c.is_ascii_hexdigit()) {
                self.i += 1;
            }
            let digits: String = self.s[st..self.i].iter().collect();
            if digits.is_empty() || !self.eat(";") {
                return bad("malformed character reference");
            }
            let v = u32::from_str_radix(&digits, 16)
                .ok()
                .and_then(char::from_u32);
            return match v {
                Some(c) if is_xml_char(c) => Ok(c),
                _ => bad("character reference to an invalid XML character"),
            };
        }
        if self.eat("#") {
            let st = self.i;
            while self.peek().map_or(false, |c| c.is_ascii_digit()) {
                self.i += 1;
            }
            let digits: String = self.s[st..self.i].iter().collect();
            if digits.is_empty() || !self.eat(";") {
                return bad("malformed character reference");
            }
            let v = digits.parse::<u32>().ok().and_then(char::from_u32);
            return match v {
                Some(c) if is_xml_char(c) => Ok(c),
                _ => bad("character reference to an invalid XML character"),
            };
        }
        let n = self.name()?;
        if !self.eat(";") {
            return bad("entity reference not terminated by ';'");
        }
        match n.as_str() {
            "lt" => Ok('<'),
            "gt" => Ok('>'),
            "amp" => Ok('&'),
            "apos" => Ok('\''),
            "quot" => Ok('"'),
            _ if self.seen_doctype => Err(XmlErr::Unmodelled(format!(
                "entity reference &{n}; with a DOCTYPE"
            ))),
            _ => bad(format!("entity \"{n}\" was referenced, but not declared")),
        }
    }

    /// AttValue with attribute-value normalization (literal TAB/LF/CR -> space, CRLF -> one).
    fn att_value(&mut self) -> R<String> {
        let q = match self.peek() {
            Some(q @ ('"' | '\'')) => q,
            _ => return bad("quoted attribute value expected"),
        };
        self.i += 1;
        let mut v = String::new();
        loop {
            match self.peek() {
                None => return bad("unterminated attribute value"),
                Some(c) if c == q => {
                    self.i += 1;
                    return Ok(v);
                }
                Some('<') => return bad("'<' in an attribute value"),
                Some('&') => v.push(self.reference()?),
                Some('\r') => {
                    self.i += 1;
                    if self.peek() == Some('\n') {
                        self.i += 1;
                    }
                    v.push(' ');
                }
                Some('\n' | '\t') => {
                    self.i += 1;
                    v.push(' ');
                }
                Some(c) => {
                    self.char_ok(c)?;
                    self.i += 1;
                    v.push(c);
                }
            }
        }
    }

    /// STag/EmptyElemTag at '<', then namespace processing (`XMLNSDocumentScannerImpl`).
    fn start_tag(&mut self, parent: Option<usize>) -> R<Element> {
        self.i += 1;
        let qname = self.name()?;
        let mut raw: Vec<(String, String)> = Vec::new();
        let empty;
        loop {
            let sp = self.skip_s() > 0;
            match self.peek() {
                None => return bad("premature end of file in a start tag"),
                Some('>') => {
                    self.i += 1;
                    empty = false;
                    break;
                }
                Some('/') => {
                    if self.eat("/>") {
                        empty = true;
                        break;
                    }
                    return bad("'/' not followed by '>' in a start tag");
                }
                Some(_) => {
                    if !sp {
                        return bad("whitespace required between attributes");
                    }
                    let an = self.name()?;
                    self.skip_s();
                    if !self.eat("=") {
                        return bad(format!("'=' expected after attribute {an}"));
                    }
                    self.skip_s();
                    let v = self.att_value()?;
                    if raw.iter().any(|(n, _)| *n == an) {
                        return bad(format!("attribute {an} specified twice"));
                    }
                    raw.push((an, v));
                }
            }
        }
        if !qname.is_ascii() || raw.iter().any(|(n, _)| !n.is_ascii()) {
            // Xerces' name tables (XMLChar) predate XML 1.0 5th edition: not modelled.
            return Err(XmlErr::Unmodelled(format!(
                "non-ASCII element/attribute name in <{qname}>"
            )));
        }
        // namespace declarations
        let mut scope: Vec<(String, String)> = Vec::new();
        for (n, v) in &raw {
            if n == "xmlns" {
                if v == XML_NS || v == XMLNS_NS {
                    return bad("cannot bind the default namespace to the xml/xmlns namespace");
                }
                scope.push((String::new(), v.clone()));
            } else if let Some(p) = n.strip_prefix("xmlns:") {
                ncname(p)?;
                if p == "xmlns" {
                    return bad("the xmlns prefix cannot be declared");
                }
                if p == "xml" && v != XML_NS || p != "xml" && (v == XML_NS || v == XMLNS_NS) {
                    return bad("illegal binding of the xml namespace");
                }
                if v.is_empty() {
                    return bad(format!("empty namespace for prefix {p} (XML 1.0)"));
                }
                scope.push((p.to_string(), v.clone()));
            }
        }
        self.scopes.push(scope);
        let (prefix, local) = split_qname(&qname)?;
        let ns = match prefix {
            Some("xmlns") => return bad("element name with the xmlns prefix"),
            Some(p) => Some(self.resolve(p).ok_or_else(|| {
                XmlErr::Malformed(format!(
                    "the prefix \"{p}\" for element \"{qname}\" is not bound"
                ))
            })?),
            None => self.resolve("").filter(|u| !u.is_empty()),
        };
        let mut attrs = Vec::new();
        for (n, v) in raw {
            if n == "xmlns" || n.starts_with("xmlns:") {
                continue;
            }
            let (p, l) = split_qname(&n)?;
            let ans = match p {
                Some(p) => Some(self.resolve(p).ok_or_else(|| {
                    XmlErr::Malformed(format!(
                        "the prefix \"{p}\" for attribute \"{n}\" is not bound"
                    ))
                })?),
                None => None,
            };
            if ans.is_some() && attrs.iter().any(|a: &Attr| a.ns == ans && a.local == l) {
                return bad(format!(
                    "attribute {{{}}}{l} specified twice",
                    ans.unwrap_or_default()
                ));
            }
            attrs.push(Attr {
                local: l.to_string(),
                qname: n.clone(),
                ns: ans,
                value: v,
            });
        }
        let local = local.to_string();
        if empty {
            self.scopes.pop();
        }
        Ok(Element {
            qname,
            local,
            ns,
            attrs,
            empty,
            parent,
        })
    }

    fn resolve(&self, prefix: &str) -> Option<String> {
        if prefix == "xml" {
            return Some(XML_NS.to_string());
        }
        for scope in self.scopes.iter().rev() {
            if let Some((_, u)) = scope.iter().rev().find(|(p, _)| p == prefix) {
                return Some(u.clone());
            }
        }
        None
    }

    /// Whole document (DOM mode): content, end tags, trailing misc. Returns every element in
    /// document order (what `getElementsByTagNameNS` walks).
    fn document(&mut self) -> R<Vec<Element>> {
        self.dom = true;
        let root = self.root()?;
        let mut elems = vec![root];
        let mut stack: Vec<usize> = Vec::new();
        if !elems[0].empty {
            stack.push(0);
        }
        while let Some(&top) = stack.last() {
            match self.peek() {
                None => return bad("premature end of file: unclosed element"),
                Some('<') => {
                    if self.starts_with("</") {
                        self.i += 2;
                        let n = self.name()?;
                        self.skip_s();
                        if !self.eat(">") {
                            return bad("end tag not terminated");
                        }
                        if n != elems[top].qname {
                            return bad(format!(
                                "end tag </{n}> does not match <{}>",
                                elems[top].qname
                            ));
                        }
                        stack.pop();
                        self.scopes.pop();
                    } else if self.starts_with("<!--") {
                        self.comment()?;
                    } else if self.starts_with("<![CDATA[") {
                        self.i += 9;
                        loop {
                            match self.peek() {
                                None => return bad("unterminated CDATA section"),
                                Some(']') if self.starts_with("]]>") => {
                                    self.i += 3;
                                    break;
                                }
                                Some(c) => {
                                    self.char_ok(c)?;
                                    self.i += 1;
                                }
                            }
                        }
                    } else if self.starts_with("<?") {
                        self.pi()?;
                    } else if self.at(1).map_or(false, is_name_start) {
                        let e = self.start_tag(Some(top))?;
                        let empty = e.empty;
                        elems.push(e);
                        if !empty {
                            stack.push(elems.len() - 1);
                        }
                    } else {
                        return bad("invalid markup in content");
                    }
                }
                Some('&') => {
                    self.reference()?;
                }
                Some(']') if self.starts_with("]]>") => return bad("']]>' in content"),
                Some(c) => {
                    self.char_ok(c)?;
                    self.i += 1;
                }
            }
        }
        loop {
            self.skip_s();
            match self.peek() {
                None => return Ok(elems),
                Some('<') if self.starts_with("<!--") => self.comment()?,
                Some('<') if self.starts_with("<?") => self.pi()?,
                _ => return bad("content is not allowed in trailing section"),
            }
        }
    }
}

/// QName ::= (NCName ':')? NCName ; anything else is a namespace error for Xerces.
fn split_qname(q: &str) -> R<(Option<&str>, &str)> {
    match q.find(':') {
        None => Ok((None, q)),
        Some(i) => {
            let (p, l) = (&q[..i], &q[i + 1..]);
            ncname(p)?;
            ncname(l)?;
            Ok((Some(p), l))
        }
    }
}

fn ncname(n: &str) -> R<()> {
    let mut it = n.chars();
    match it.next() {
        Some(c) if is_name_start(c) && c != ':' => {}
        _ => return bad(format!("{n:?} is not a valid NCName")),
    }
    if it.all(|c| is_name_char(c) && c != ':') {
        Ok(())
    } else {
        bad(format!("{n:?} is not a valid NCName"))
    }
}

/// What `Dispatcher.readOpPost` (2.28.2) takes from the first START_ELEMENT.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RootInfo {
    pub local: String,
    pub ns: Option<String>,
    pub service: Option<String>,
    pub version: Option<String>,
    /// policy only: a `lockId` attribute on the root
    pub carries_lock_id: bool,
}

fn root_info(e: &Element, lock_scan: bool) -> RootInfo {
    RootInfo {
        local: e.local.clone(),
        ns: e.ns.clone(),
        service: e.attr_by_local("service").map(str::to_string),
        version: e.attr_by_local("version").map(str::to_string),
        carries_lock_id: lock_scan,
    }
}

/// `readOpPost`: prolog + root start tag of the decoded body.
pub fn read_op_post(chars: &[char]) -> R<RootInfo> {
    let mut p = Parser::new(chars);
    let root = p.root()?;
    // Policy (notes §1, "any request carrying lockId"): a `lockId` attribute on the root. A
    // `LockId` element is read only by Transaction (WFS 1.0/1.1, `Transaction.java`) and LockFeature
    // (WFS 2.0 renewal, `DefaultWebFeatureService20.lockFeature`), which are writes anyway.
    let lock = root
        .attrs
        .iter()
        .any(|a| a.local.eq_ignore_ascii_case("lockId"));
    Ok(root_info(&root, lock))
}

/// `Dispatcher.soapReader` (2.28.2): whole document parsed by a namespace-aware DOM;
/// `getElementsByTagNameNS(SOAP_12_NS, "Body")` (any depth, document order) must give exactly one
/// element, else the same with SOAP 1.1's namespace, else IOException; its first element child is
/// the payload, serialized by an identity Transformer and parsed again by `readOpPost`.
/// Xerces' DOM keeps attributes sorted by qualified name (`NamedNodeMapImpl`), which is the order
/// the serializer writes them in and hence the order `getAttributeValue(null, ..)` sees.
pub fn soap_payload(chars: &[char]) -> R<RootInfo> {
    const SOAP_12_NS: &str = "http://www.w3.org/2003/05/soap-envelope";
    const SOAP_11_NS: &str = "http://schemas.xmlsoap.org/soap/envelope/";
    let mut p = Parser::new(chars);
    let elems = p.document()?;
    let bodies = |ns: &str| -> Vec<usize> {
        (0..elems.len())
            .filter(|&i| elems[i].local == "Body" && elems[i].ns.as_deref() == Some(ns))
            .collect()
    };
    let b12 = bodies(SOAP_12_NS);
    let body = if b12.len() == 1 {
        b12[0]
    } else {
        let b11 = bodies(SOAP_11_NS);
        if b11.len() != 1 {
            return bad("SOAP requests should specify a single Body element");
        }
        b11[0]
    };
    let payload = (0..elems.len())
        .find(|&i| elems[i].parent == Some(body))
        .ok_or_else(|| XmlErr::Malformed("Could not find payload in SOAP request".into()))?;
    let mut e = elems[payload].clone();
    e.attrs.sort_by(|a, b| {
        let ua: Vec<u16> = a.qname.encode_utf16().collect();
        let ub: Vec<u16> = b.qname.encode_utf16().collect();
        ua.cmp(&ub)
    });
    // As in `read_op_post`: the payload root's `lockId` attribute.
    let lock = e
        .attrs
        .iter()
        .any(|a| a.local.eq_ignore_ascii_case("lockId"));
    Ok(root_info(&e, lock))
}

/// Policy helper (not GeoServer behaviour): does any start tag from `from` on have the local
/// name `local`? Skips comments, CDATA and PIs; stops at anything it cannot read.
pub fn lenient_has_element(s: &[char], from: usize, local: &str) -> bool {
    let mut i = from;
    let starts = |i: usize, lit: &str| {
        lit.chars()
            .enumerate()
            .all(|(k, c)| s.get(i + k) == Some(&c))
    };
    while i < s.len() {
        if s[i] != '<' {
            i += 1;
            continue;
        }
        if starts(i, "<!--") {
            match (i + 4..s.len()).find(|&k| starts(k, "-->")) {
                Some(k) => i = k + 3,
                None => return false,
            }
        } else if starts(i, "<![CDATA[") {
            match (i + 9..s.len()).find(|&k| starts(k, "]]>")) {
                Some(k) => i = k + 3,
                None => return false,
            }
        } else if starts(i, "<?") {
            match (i + 2..s.len()).find(|&k| starts(k, "?>")) {
                Some(k) => i = k + 2,
                None => return false,
            }
        } else {
            let mut k = i + 1;
            while k < s.len() && is_name_char(s[k]) {
                k += 1;
            }
            let name: String = s[i + 1..k].iter().collect();
            let l = name.rsplit(':').next().unwrap_or("");
            if l == local {
                return true;
            }
            i = k.max(i + 1);
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root(s: &str) -> R<RootInfo> {
        let c: Vec<char> = s.chars().collect();
        read_op_post(&c)
    }

    #[test]
    fn prolog_skipping() {
        let r = root("<?xml version=\"1.0\"?>\n<!-- c -->\n<?pi data?>\n<!DOCTYPE x [<!ENTITY a \"<>\"> <!-- ] > -->]>\n<wfs:Transaction xmlns:wfs=\"http://www.opengis.net/wfs\" service=\"WFS\"/>").unwrap();
        assert_eq!(r.local, "Transaction");
        assert_eq!(r.ns.as_deref(), Some("http://www.opengis.net/wfs"));
        assert_eq!(r.service.as_deref(), Some("WFS"));
    }

    #[test]
    fn strict_prolog() {
        assert!(matches!(
            root(" <?xml version=\"1.0\"?><a/>"),
            Err(XmlErr::Malformed(_))
        ));
        assert!(matches!(
            root("<!-- a -- b --><a/>"),
            Err(XmlErr::Malformed(_))
        ));
        assert!(matches!(root("x<a/>"), Err(XmlErr::Malformed(_))));
        assert!(matches!(root("\u{feff}<a/>"), Err(XmlErr::Malformed(_))));
        assert!(matches!(
            root("<wfs:Transaction/>"),
            Err(XmlErr::Malformed(_))
        ));
        assert!(matches!(
            root("<a b='1' b='2'/>"),
            Err(XmlErr::Malformed(_))
        ));
        assert!(matches!(root("<a b='<'/>"), Err(XmlErr::Malformed(_))));
        assert!(matches!(
            root("<?XML version='1.0'?><a/>"),
            Err(XmlErr::Malformed(_))
        ));
        assert!(matches!(root("<a b='&foo;'/>"), Err(XmlErr::Malformed(_))));
        assert!(matches!(
            root("<!DOCTYPE a [<!ATTLIST a service CDATA 'WFS'>]><a/>"),
            Err(XmlErr::Unmodelled(_))
        ));
    }

    #[test]
    fn attributes() {
        let r =
            root("<GetFeature x:service=' W&#70;S ' xmlns:x='urn:x' version='2.0.0' lockId='1'/>")
                .unwrap();
        assert_eq!(r.service.as_deref(), Some(" WFS "));
        assert!(r.carries_lock_id);
        let r = root("<wfs:Transaction xmlns:wfs='u'><wfs:LockId>1</wfs:LockId></wfs:Transaction>")
            .unwrap();
        assert!(
            !r.carries_lock_id,
            "only the root's attribute: Transaction is a write anyway"
        );
    }

    #[test]
    fn soap() {
        let d: Vec<char> = "<s:Envelope xmlns:s='http://www.w3.org/2003/05/soap-envelope'><s:Header/><s:Body><!--x--><wfs:Transaction xmlns:wfs='http://www.opengis.net/wfs' service='WFS'/></s:Body></s:Envelope>".chars().collect();
        let r = soap_payload(&d).unwrap();
        assert_eq!(r.local, "Transaction");
        let d: Vec<char> = "<Foo><b:Body xmlns:b='http://schemas.xmlsoap.org/soap/envelope/'><GetMap/></b:Body></Foo>".chars().collect();
        assert_eq!(soap_payload(&d).unwrap().local, "GetMap");
        let d: Vec<char> = "<s:Envelope xmlns:s='http://www.w3.org/2003/05/soap-envelope'><s:Body><a/></s:Body><s:Body><b/></s:Body></s:Envelope>".chars().collect();
        assert!(soap_payload(&d).is_err());
    }
}
