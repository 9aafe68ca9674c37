//! KVP (query string, form body) as GeoServer reads it, with one normalisation used everywhere.
//!
//! Tomcat (`Parameters.processParameters`) splits pairs on `&` and at the first `=`, decodes `%XX`
//! and `+`, drops a pair with a malformed escape or an empty name. GeoServer (`KvpUtils.normalize`)
//! upper-cases keys with Java's Unicode-aware `toLowerCase().toUpperCase()` (so `reque%C5%BFt` is
//! `REQUEST`, `lock%C4%B1d` is `LOCKID`) and trims values with Java's `String.trim()` (every char up
//! to U+0020, `%0B` and `%00` included); operations and services match with `equalsIgnoreCase`.
//!
//! geolb matches keys and values in ASCII only: a non-ASCII key, or a non-ASCII `service`,
//! `request` or `lockId` value, is a reason to play safe (Java could fold it onto an ASCII name).
//! Only the keys, and the values of those three keys, are ever decoded: other values (BBOX,
//! CQL_FILTER…) are not looked at.

use std::borrow::Cow;

use super::{Op, SERVICES};

/// Which operations a set of `request` values names.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Ops {
    /// The first one named.
    pub first: Option<Op>,
    /// Two values name different operations.
    pub conflict: bool,
    pub write: bool,
    pub unknown: bool,
}

impl Ops {
    pub fn add(&mut self, op: Op) {
        match op {
            Op::Write(_) => self.write = true,
            Op::Unknown => self.unknown = true,
            Op::Read(_) => {}
        }
        match self.first {
            None => self.first = Some(op),
            Some(first) => self.conflict |= first != op,
        }
    }

    pub fn merge(&mut self, other: Ops) {
        if let Some(op) = other.first {
            self.add(op);
        }
        self.conflict |= other.conflict;
        self.write |= other.write;
        self.unknown |= other.unknown;
    }
}

/// What some KVP says, as far as routing cares.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Kvp {
    /// The operations of the `request` values.
    pub ops: Ops,
    /// A `lockId` key is present.
    pub lock: bool,
    /// The last known `service` value.
    pub service: Option<&'static str>,
    /// What `service` values that name no service would name as operations: GeoServer's
    /// `Dispatcher.service` takes such a value as the operation when the path's context names a
    /// service and no `request` is given (`/wfs/GetFeature?service=Transaction` is a Transaction).
    pub service_ops: Ops,
    /// A reason to play safe: a key or value Java could read otherwise.
    pub unsure: Option<&'static str>,
}

impl Kvp {
    /// The operations named: `request` values, or, when there is none, `service` values that
    /// name no service.
    pub fn operations(&self) -> Ops {
        match self.ops.first {
            Some(_) => self.ops,
            None => self.service_ops,
        }
    }
}

/// The keys routing looks at.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Key {
    Request,
    Service,
    LockId,
}

impl Kvp {
    /// Reads `application/x-www-form-urlencoded` pairs, adding to what is known.
    pub fn scan(mut self, input: &[u8]) -> Kvp {
        let mut i = 0;
        while i < input.len() {
            // The name, up to the first `=` (or the pair's end), noting whether it needs decoding
            // (short: a byte loop beats a search here).
            let start = i;
            let mut plain = true;
            while let Some(&b) = input.get(i) {
                if b == b'=' || b == b'&' {
                    break;
                }
                plain &= b != b'%' && b != b'+' && b.is_ascii();
                i += 1;
            }
            let name = &input[start..i];
            // The value, up to the next `&` (values can be long: searched).
            let value_start = if input.get(i) == Some(&b'=') {
                i + 1
            } else {
                i
            };
            let value_end = memchr::memchr(b'&', &input[value_start..])
                .map_or(input.len(), |j| value_start + j);
            let value = &input[value_start..value_end];
            i = value_end + 1;
            // Parameters.processParameters: an empty name is dropped.
            if name.is_empty() {
                continue;
            }
            let key = match if plain {
                Ok(plain_key(name))
            } else {
                key(name)
            } {
                Ok(Some(key)) => key,
                Ok(None) => continue,
                Err(Decoded::NonAscii) => {
                    self.unsure.get_or_insert("non-ascii-key");
                    continue;
                }
                // A malformed escape: Tomcat drops the pair.
                Err(Decoded::Malformed) => continue,
            };
            let value = match decode(value) {
                Ok(v) => v,
                Err(_) => continue,
            };
            let value = java_trim(&value);
            if !value.is_ascii() {
                self.unsure.get_or_insert("non-ascii-value");
                continue;
            }
            match key {
                Key::Request => self.ops.add(Op::parse(value)),
                Key::LockId => self.lock = true,
                Key::Service => match DISPATCHER_SERVICES
                    .iter()
                    .find(|s| s.as_bytes().eq_ignore_ascii_case(value))
                {
                    Some(s) => {
                        self.service = SERVICES.iter().copied().find(|known| known == s);
                    }
                    None => self.service_ops.add(Op::parse(value)),
                },
            }
        }
        self
    }
}

/// The services GeoServer's Dispatcher knows by id (`ows` and `wmts` are not among them).
const DISPATCHER_SERVICES: &[&str] = &["wms", "wfs", "wcs", "wps", "csw", "gwc"];

/// Java's `String.trim()`: every char up to U+0020 at both ends.
pub fn java_trim(value: &[u8]) -> &[u8] {
    let start = value.iter().position(|&b| b > b' ').unwrap_or(value.len());
    let end = value
        .iter()
        .rposition(|&b| b > b' ')
        .map_or(start, |i| i + 1);
    &value[start..end]
}

#[derive(Debug, PartialEq, Eq)]
enum Decoded {
    Malformed,
    NonAscii,
}

/// The key an ASCII name without escapes stands for, if routing cares about it.
fn plain_key(raw: &[u8]) -> Option<Key> {
    match raw.len() {
        7 if raw.eq_ignore_ascii_case(b"request") => Some(Key::Request),
        7 if raw.eq_ignore_ascii_case(b"service") => Some(Key::Service),
        6 if raw.eq_ignore_ascii_case(b"lockid") => Some(Key::LockId),
        _ => None,
    }
}

/// The key a raw name stands for, if routing cares about it.
fn key(raw: &[u8]) -> Result<Option<Key>, Decoded> {
    // Most names need no decoding: compare them as they are.
    if memchr::memchr2(b'%', b'+', raw).is_none() {
        if !raw.is_ascii() {
            return Err(Decoded::NonAscii);
        }
        return Ok(plain_key(raw));
    }
    // Decoded into a small buffer: the keys looked for are at most 7 bytes long.
    let mut buf = [0u8; 7];
    let mut len = 0usize;
    let mut long = false;
    decode_each(raw, |b| {
        if !b.is_ascii() {
            return Err(Decoded::NonAscii);
        }
        match buf.get_mut(len) {
            Some(slot) => *slot = b.to_ascii_uppercase(),
            None => long = true,
        }
        len += 1;
        Ok(())
    })?;
    if long {
        return Ok(None);
    }
    Ok(match &buf[..len] {
        b"REQUEST" => Some(Key::Request),
        b"SERVICE" => Some(Key::Service),
        b"LOCKID" => Some(Key::LockId),
        _ => None,
    })
}

/// `%XX` and `+` decoded, as Tomcat's `UDecoder` does for parameters.
fn decode(raw: &[u8]) -> Result<Cow<'_, [u8]>, Decoded> {
    if memchr::memchr2(b'%', b'+', raw).is_none() {
        return Ok(Cow::Borrowed(raw));
    }
    let mut out = Vec::with_capacity(raw.len());
    decode_each(raw, |b| {
        out.push(b);
        Ok(())
    })?;
    Ok(Cow::Owned(out))
}

fn decode_each(raw: &[u8], mut emit: impl FnMut(u8) -> Result<(), Decoded>) -> Result<(), Decoded> {
    let mut i = 0;
    while i < raw.len() {
        let b = match raw[i] {
            b'+' => b' ',
            b'%' => {
                let hex = |j: usize| raw.get(j).and_then(|&c| (c as char).to_digit(16));
                let (Some(hi), Some(lo)) = (hex(i + 1), hex(i + 2)) else {
                    return Err(Decoded::Malformed);
                };
                i += 2;
                (hi * 16 + lo) as u8
            }
            b => b,
        };
        emit(b)?;
        i += 1;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan(q: &str) -> Kvp {
        Kvp::default().scan(q.as_bytes())
    }

    #[test]
    fn values_are_trimmed_as_java_trims_them() {
        assert_eq!(java_trim(b"\x0b Transaction\x00\x1f"), b"Transaction");
        assert_eq!(java_trim(b"\x00\x01"), b"");
        for q in [
            "request=Transaction%0B",
            "request=%00Transaction",
            "request=+Transaction+",
            "request=%09Transaction%0D%0A",
            "REQUEST=transaction%1F",
        ] {
            assert!(scan(q).ops.write, "{q}");
        }
    }

    #[test]
    fn keys_java_could_fold_onto_ours_are_doubtful() {
        assert_eq!(
            scan("reque%C5%BFt=Transaction").unsure,
            Some("non-ascii-key")
        );
        assert_eq!(scan("lock%C4%B1d=x").unsure, Some("non-ascii-key"));
        assert_eq!(scan("LOC%E2%84%AAID=x").unsure, Some("non-ascii-key"));
        assert_eq!(
            scan("request=Tran%C5%BFaction").unsure,
            Some("non-ascii-value")
        );
        assert_eq!(scan("service=wf%C5%BF").unsure, Some("non-ascii-value"));
        // Other values are not looked at.
        assert_eq!(
            scan("cql_filter=name%3D%27%C3%A9t%C3%A9%27&request=GetMap").unsure,
            None
        );
    }

    #[test]
    fn pairs_split_and_decode_as_tomcat_does() {
        let k = scan("SERVICE=WMS&&service=WMS&request=GetMap&lockId&=Transaction&request%zz=Transaction&request=%zz");
        assert_eq!(k.ops.first, Some(Op::Read("GetMap")));
        assert!(
            !k.ops.write,
            "an empty name and malformed escapes are dropped"
        );
        assert!(k.lock, "a key without a value is there");
        assert_eq!(k.service, Some("wms"));
        let k = scan("request=GetMap&REQUEST=getmap&ReQuEsT=GetFeatureInfo");
        assert!(k.ops.conflict);
        assert!(scan("re%71uest=LockFeature").ops.write, "keys are decoded");
        assert!(
            !scan("request+=Transaction").ops.write,
            "`request ` is another key to GeoServer too"
        );
        let k = scan("service=Transaction%0B");
        assert_eq!(k.service, None);
        assert!(
            k.operations().write,
            "a service value may act as the operation"
        );
        assert!(
            !scan("service=Transaction&request=GetMap")
                .operations()
                .write
        );
        assert_eq!(scan("SERVICE=wms").service_ops, Ops::default());
    }
}
