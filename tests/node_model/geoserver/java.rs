//! java.lang semantics that GeoServer's request reading depends on, re-implemented in Rust.
//!
//! GeoServer runs with an English default locale in the official images (the docker image sets
//! no `user.language`, the JVM default is `en`), so `toUpperCase()`/`toLowerCase()` behave like
//! `Locale.ROOT`/`Locale.ENGLISH`: no Turkish dotted/dotless-i rules, full Unicode SpecialCasing
//! mappings ("ß" -> "SS", "ﬆ" -> "ST", "İ" -> "i̇"). Rust's `str::to_uppercase` /
//! `str::to_lowercase` implement the same unconditional SpecialCasing mappings plus the
//! final-sigma rule that Java's `toLowerCase` also applies. (Java 17 ships Unicode 13 tables,
//! Rust a newer Unicode; the difference only concerns characters assigned after Unicode 13.)

/// `String.trim()`: strips every char <= U+0020 (NUL, VT, FF, all C0 controls, space) at both
/// ends, and nothing else (not NBSP, not U+3000).
pub fn trim(s: &str) -> &str {
    s.trim_matches(|c: char| c <= '\u{20}')
}

/// `String.toUpperCase()` (English/ROOT locale): full Unicode mapping, may change the length.
pub fn to_upper(s: &str) -> String {
    s.to_uppercase()
}

/// `String.toLowerCase()` (English/ROOT locale): full Unicode mapping incl. final sigma.
pub fn to_lower(s: &str) -> String {
    s.to_lowercase()
}

/// `Character.toUpperCase(int)`: the *simple* (1:1) case mapping of UnicodeData.txt.
/// Rust only exposes the full mapping; where the full mapping has several chars the simple
/// mapping is the char itself except for the Greek iota-subscript letters listed below.
pub fn char_upper(c: char) -> char {
    let mut it = c.to_uppercase();
    let first = it.next().unwrap_or(c);
    if it.next().is_none() {
        return first;
    }
    match c as u32 {
        // U+1F80..U+1F87, U+1F90..U+1F97, U+1FA0..U+1FA7 -> titlecase forms +8
        0x1F80..=0x1F87 | 0x1F90..=0x1F97 | 0x1FA0..=0x1FA7 => {
            char::from_u32(c as u32 + 8).unwrap_or(c)
        }
        0x1FB3 => '\u{1FBC}',
        0x1FC3 => '\u{1FCC}',
        0x1FF3 => '\u{1FFC}',
        _ => c,
    }
}

/// `Character.toLowerCase(int)`: simple mapping. Only U+0130 has a multi-char full lowercase
/// mapping whose simple mapping differs from the char itself (U+0130 -> 'i').
pub fn char_lower(c: char) -> char {
    let mut it = c.to_lowercase();
    let first = it.next().unwrap_or(c);
    if it.next().is_none() {
        return first;
    }
    if c == '\u{130}' {
        'i'
    } else {
        c
    }
}

/// `String.equalsIgnoreCase`: same UTF-16 length, then char by char: equal, or equal after
/// `Character.toUpperCase`, or equal after `Character.toLowerCase` of those upper-cased chars
/// (`String.regionMatches(true, ...)` / `StringUTF16.regionMatchesCI`). So U+212A KELVIN SIGN
/// equalsIgnoreCase "k", U+017F LONG S equalsIgnoreCase "s", U+0131 DOTLESS I equalsIgnoreCase "i".
pub fn equals_ignore_case(a: &str, b: &str) -> bool {
    if a.encode_utf16().count() != b.encode_utf16().count() {
        return false;
    }
    let mut ia = a.chars();
    let mut ib = b.chars();
    loop {
        match (ia.next(), ib.next()) {
            (None, None) => return true,
            (Some(x), Some(y)) => {
                if x == y {
                    continue;
                }
                let (ux, uy) = (char_upper(x), char_upper(y));
                if ux == uy || char_lower(ux) == char_lower(uy) {
                    continue;
                }
                return false;
            }
            _ => return false,
        }
    }
}

/// `Integer.valueOf(String)`: optional sign, then decimal digits of any script
/// (`Character.digit(c, 10)` accepts every Unicode Nd digit), int32 range.
pub fn parse_int(s: &str) -> Option<i64> {
    let mut chars = s.chars().peekable();
    let mut neg = false;
    match chars.peek() {
        Some('+') => {
            chars.next();
        }
        Some('-') => {
            neg = true;
            chars.next();
        }
        _ => {}
    }
    let mut any = false;
    let mut v: i64 = 0;
    for c in chars {
        let d = decimal_digit(c)? as i64;
        any = true;
        v = v * 10 + d;
        if v > 2_147_483_648 {
            return None;
        }
    }
    if !any {
        return None;
    }
    let v = if neg { -v } else { v };
    if v > i32::MAX as i64 || v < i32::MIN as i64 {
        return None;
    }
    Some(v)
}

/// `Character.digit(c, 10)` for Unicode general category Nd (blocks of ten consecutive digits).
/// Table of the zero digit of every Nd block in Unicode 13 (Java 17).
pub fn decimal_digit(c: char) -> Option<u32> {
    const ZEROS: &[u32] = &[
        0x30, 0x660, 0x6F0, 0x7C0, 0x966, 0x9E6, 0xA66, 0xAE6, 0xB66, 0xBE6, 0xC66, 0xCE6, 0xD66,
        0xDE6, 0xE50, 0xED0, 0xF20, 0x1040, 0x1090, 0x17E0, 0x1810, 0x1946, 0x19D0, 0x1A80, 0x1A90,
        0x1B50, 0x1BB0, 0x1C40, 0x1C50, 0xA620, 0xA8D0, 0xA900, 0xA9D0, 0xA9F0, 0xAA50, 0xABF0,
        0xFF10, 0x104A0, 0x10D30, 0x11066, 0x110F0, 0x11136, 0x111D0, 0x112F0, 0x11450, 0x114D0,
        0x11650, 0x116C0, 0x11730, 0x118E0, 0x11950, 0x11C50, 0x11D50, 0x11DA0, 0x16A60, 0x16B50,
        0x1D7CE, 0x1D7D8, 0x1D7E2, 0x1D7EC, 0x1D7F6, 0x1E140, 0x1E2F0, 0x1E950, 0x1FBF0,
    ];
    let u = c as u32;
    ZEROS.iter().find(|&&z| u >= z && u < z + 10).map(|z| u - z)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trim_strips_controls_only() {
        assert_eq!(trim("\u{0}\u{b} GetMap\t\u{1f}"), "GetMap");
        assert_eq!(trim("\u{a0}GetMap"), "\u{a0}GetMap");
    }

    #[test]
    fn case_mappings() {
        assert_eq!(to_upper("ſ"), "S");
        assert_eq!(to_upper("ı"), "I");
        assert_eq!(to_upper("ﬆ"), "ST");
        assert_eq!(to_upper("reque\u{fb06}"), "REQUEST");
        assert_eq!(to_lower("İ"), "i\u{307}");
    }

    #[test]
    fn equals_ignore_case_java() {
        assert!(equals_ignore_case("\u{212a}", "k"));
        assert!(equals_ignore_case("Loc\u{212a}Feature", "LockFeature"));
        assert!(equals_ignore_case("tran\u{17f}action", "Transaction"));
        assert!(equals_ignore_case(
            "GetFeatureW\u{131}thLock",
            "GetFeatureWithLock"
        ));
        assert!(equals_ignore_case(
            "GetFeatureW\u{130}thLock",
            "GetFeatureWithLock"
        ));
        assert!(!equals_ignore_case("reque\u{fb06}", "request"));
        assert!(!equals_ignore_case("wfs ", "wfs"));
        assert!(equals_ignore_case("\u{1f80}", "\u{1f88}"));
    }

    #[test]
    fn integers() {
        assert_eq!(parse_int("+1"), Some(1));
        assert_eq!(parse_int("\u{ff12}"), Some(2));
        assert_eq!(parse_int(""), None);
        assert_eq!(parse_int("x"), None);
        assert_eq!(parse_int("2147483648"), None);
    }
}
