//! Range requests answered from a stored complete response (RFC 9110 14): which byte ranges a
//! `GET` asks for, whether `If-Range` lets it have them, and the `multipart/byteranges` body
//! for more than one.

use super::conditional::{Validators, conditional_field};
use crate::http::Field;
use crate::http::date;
use crate::http::fields;

/// Ranges asked for in one request at most; more are answered with the whole object (RFC 9110
/// 14.2 lets a server ignore a request with many ranges).
pub const MAX_RANGES: usize = 16;
/// The boundary of `multipart/byteranges` bodies.
pub const BOUNDARY: &str = "dl7-byteranges-7d1f0c";

/// What to do with a request's `Range`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ranges {
    /// No usable `Range` (absent, not `bytes`, malformed, too many, overlapping, or
    /// `If-Range` does not hold): the whole response.
    Whole,
    /// No range can be satisfied: 416 with `Content-Range: bytes */LENGTH`.
    Unsatisfiable,
    /// These inclusive byte ranges, in the order asked.
    Parts(Vec<(u64, u64)>),
}

/// The ranges a request (its fields, parsed from `buf`) asks of a stored response of `len`
/// bytes with these validators.
pub fn select(fields: &[Field], buf: &[u8], len: u64, stored: &Validators) -> Ranges {
    let field = |name| conditional_field(fields, buf, name);
    let Some(range) = field("Range") else {
        return Ranges::Whole;
    };
    if let Some(condition) = field("If-Range")
        && !if_range_holds(condition, stored)
    {
        return Ranges::Whole;
    }
    parse(range, len)
}

/// RFC 9110 13.1.5: an entity tag must match strongly, a date must equal `Last-Modified`.
fn if_range_holds(condition: &[u8], stored: &Validators) -> bool {
    let condition = fields::trim(condition);
    if condition.starts_with(b"\"") || condition.starts_with(b"W/") {
        return !condition.starts_with(b"W/")
            && stored
                .etag
                .as_deref()
                .is_some_and(|etag| !etag.starts_with(b"W/") && etag == condition);
    }
    date::parse(condition).is_some_and(|d| stored.last_modified == Some(d))
}

/// Parses `bytes=...` against a representation of `len` bytes.
fn parse(value: &[u8], len: u64) -> Ranges {
    let value = fields::trim(value);
    let Some(eq) = value.iter().position(|&b| b == b'=') else {
        return Ranges::Whole;
    };
    if !fields::trim(&value[..eq]).eq_ignore_ascii_case(b"bytes") {
        return Ranges::Whole;
    }
    let mut parts = Vec::new();
    let mut asked = 0;
    for spec in fields::list(&value[eq + 1..]) {
        asked += 1;
        if asked > MAX_RANGES {
            return Ranges::Whole;
        }
        let Some(dash) = spec.iter().position(|&b| b == b'-') else {
            return Ranges::Whole;
        };
        let (first, last) = (fields::trim(&spec[..dash]), fields::trim(&spec[dash + 1..]));
        let range = if first.is_empty() {
            // A suffix: the last N bytes ("-" alone is malformed, "-0" unsatisfiable).
            let Some(n) = fields::decimal(last) else {
                return Ranges::Whole;
            };
            (n > 0 && len > 0).then(|| (len - n.min(len), len - 1))
        } else {
            let Some(first) = fields::decimal(first) else {
                return Ranges::Whole;
            };
            let last = if last.is_empty() {
                None
            } else {
                match fields::decimal(last) {
                    Some(l) if l >= first => Some(l),
                    _ => return Ranges::Whole,
                }
            };
            (first < len).then(|| (first, last.map_or(len - 1, |l| l.min(len - 1))))
        };
        parts.extend(range);
    }
    if asked == 0 {
        return Ranges::Whole;
    }
    if parts.is_empty() {
        return Ranges::Unsatisfiable;
    }
    // Overlapping ranges would send bytes twice: the whole object instead (14.3).
    let total: u64 = parts.iter().map(|(a, b)| b - a + 1).sum();
    let mut sorted = parts.clone();
    sorted.sort_unstable();
    if total > len || sorted.windows(2).any(|w| w[1].0 <= w[0].1) {
        return Ranges::Whole;
    }
    Ranges::Parts(parts)
}

/// The `multipart/byteranges` body of `parts` of `body`, each part with the representation's
/// `content_type` (when known) and its `Content-Range`.
pub fn multipart(body: &[u8], parts: &[(u64, u64)], content_type: Option<&[u8]>) -> Vec<u8> {
    let mut out = Vec::new();
    let total = body.len();
    for &(first, last) in parts {
        out.extend_from_slice(b"\r\n--");
        out.extend_from_slice(BOUNDARY.as_bytes());
        out.extend_from_slice(b"\r\n");
        if let Some(ct) = content_type {
            out.extend_from_slice(b"Content-Type: ");
            out.extend_from_slice(ct);
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(
            format!("Content-Range: bytes {first}-{last}/{total}\r\n\r\n").as_bytes(),
        );
        out.extend_from_slice(&body[first as usize..=last as usize]);
    }
    out.extend_from_slice(b"\r\n--");
    out.extend_from_slice(BOUNDARY.as_bytes());
    out.extend_from_slice(b"--\r\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_ranges() {
        let p = |v: &str| parse(v.as_bytes(), 1000);
        assert_eq!(p("bytes=0-99"), Ranges::Parts(vec![(0, 99)]));
        assert_eq!(p("bytes=900-"), Ranges::Parts(vec![(900, 999)]));
        assert_eq!(p("bytes=-100"), Ranges::Parts(vec![(900, 999)]));
        assert_eq!(p("bytes=-5000"), Ranges::Parts(vec![(0, 999)]));
        assert_eq!(p("bytes=990-5000"), Ranges::Parts(vec![(990, 999)]));
        assert_eq!(
            p("Bytes = 0-0, 10-19"),
            Ranges::Parts(vec![(0, 0), (10, 19)])
        );
        // Unsatisfiable ones are left out; none left is 416.
        assert_eq!(p("bytes=1000-, 5-5"), Ranges::Parts(vec![(5, 5)]));
        assert_eq!(p("bytes=1000-1100"), Ranges::Unsatisfiable);
        assert_eq!(p("bytes=-0"), Ranges::Unsatisfiable);
        assert_eq!(parse(b"bytes=-10", 0), Ranges::Unsatisfiable);
        // Malformed, another unit, overlapping or too many: the whole object.
        for whole in [
            "bytes=5-1",
            "bytes=a-b",
            "bytes=",
            "bytes=1",
            "items=0-1",
            "0-1",
            "bytes=0-10,5-20",
            "bytes=0-999,0-999",
        ] {
            assert_eq!(p(whole), Ranges::Whole, "{whole}");
        }
        let many = (0..=MAX_RANGES)
            .map(|i| format!("{i}-{i}"))
            .collect::<Vec<_>>()
            .join(",");
        assert_eq!(p(&format!("bytes={many}")), Ranges::Whole);
    }

    #[test]
    fn if_range_needs_a_strong_match() {
        let v = Validators {
            etag: Some(b"\"v1\""[..].into()),
            last_modified: Some(784_111_777),
        };
        assert!(if_range_holds(b"\"v1\"", &v));
        assert!(!if_range_holds(b"\"v2\"", &v));
        assert!(!if_range_holds(b"W/\"v1\"", &v));
        assert!(if_range_holds(b"Sun, 06 Nov 1994 08:49:37 GMT", &v));
        assert!(!if_range_holds(b"Sun, 06 Nov 1994 08:49:38 GMT", &v));
        assert!(!if_range_holds(b"garbage", &v));
    }

    #[test]
    fn multipart_bodies_name_each_part() {
        let body = b"0123456789";
        let out = multipart(body, &[(0, 1), (8, 9)], Some(b"text/plain"));
        let text = String::from_utf8(out).unwrap();
        let want = format!(
            "\r\n--{BOUNDARY}\r\nContent-Type: text/plain\r\nContent-Range: bytes 0-1/10\r\n\r\n01\
             \r\n--{BOUNDARY}\r\nContent-Type: text/plain\r\nContent-Range: bytes 8-9/10\r\n\r\n89\
             \r\n--{BOUNDARY}--\r\n"
        );
        assert_eq!(text, want);
    }
}
