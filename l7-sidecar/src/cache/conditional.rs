//! Conditional requests answered from a stored response (RFC 9110 13): the preconditions
//! `If-Match`, `If-Unmodified-Since`, `If-None-Match` and `If-Modified-Since`, evaluated in the
//! order of 13.2.2 against the stored response's validators (`ETag`, `Last-Modified`).

use crate::http::Field;
use crate::http::date;
use crate::http::fields::{self, Kind};

/// A stored response's validators.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Validators {
    /// The entity tag as sent, quotes and `W/` included.
    pub etag: Option<Box<[u8]>>,
    pub last_modified: Option<u64>,
}

impl Validators {
    /// Reads the validators of a response head.
    pub fn of(fields: &[Field], buf: &[u8]) -> Self {
        let mut v = Validators::default();
        for f in fields {
            match f.kind {
                Kind::ETag if v.etag.is_none() => v.etag = Some(f.value.of(buf).into()),
                Kind::LastModified if v.last_modified.is_none() => {
                    v.last_modified = date::parse(f.value.of(buf));
                }
                _ => {}
            }
        }
        v
    }
}

/// What to answer to a request for a stored response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// The stored response.
    Full,
    /// 304 Not Modified (a `GET` or `HEAD` whose `If-None-Match`/`If-Modified-Since` holds).
    NotModified,
    /// 412 Precondition Failed.
    PreconditionFailed,
}

/// Evaluates the preconditions of a `GET` or `HEAD` (fields of kind [`Kind::Conditional`] in
/// `fields`, parsed from `buf`) against the stored response's validators (RFC 9110 13.2.2).
/// `status` is the stored response's: preconditions apply to a 2xx only (13.2.1).
pub fn evaluate(fields: &[Field], buf: &[u8], status: u16, stored: &Validators) -> Answer {
    if !(200..300).contains(&status) {
        return Answer::Full;
    }
    let field = |name| conditional_field(fields, buf, name);
    // 1. If-Match (strong comparison), else 2. If-Unmodified-Since.
    if let Some(value) = field("If-Match") {
        if !matches_any(value, stored.etag.as_deref(), true) {
            return Answer::PreconditionFailed;
        }
    } else if let Some(since) = field("If-Unmodified-Since").and_then(date::parse) {
        // Without Last-Modified the condition cannot be shown to hold (13.1.4).
        if stored.last_modified.is_none_or(|modified| modified > since) {
            return Answer::PreconditionFailed;
        }
    }
    // 3. If-None-Match (weak comparison), else 4. If-Modified-Since.
    if let Some(value) = field("If-None-Match") {
        if matches_any(value, stored.etag.as_deref(), false) {
            return Answer::NotModified;
        }
    } else if let Some(since) = field("If-Modified-Since").and_then(date::parse)
        && stored
            .last_modified
            .is_some_and(|modified| modified <= since)
    {
        return Answer::NotModified;
    }
    Answer::Full
}

/// The value of the first conditional field (`If-*`, `Range`) called `name`.
pub fn conditional_field<'b>(fields: &[Field], buf: &'b [u8], name: &str) -> Option<&'b [u8]> {
    fields
        .iter()
        .find(|f| {
            f.kind == Kind::Conditional && f.name.of(buf).eq_ignore_ascii_case(name.as_bytes())
        })
        .map(|f| f.value.of(buf))
}

/// True when the list `value` (`*` or entity tags) matches `etag`; `strong`: the strong
/// comparison (weak tags never match), else the weak one (13.1.1, 8.8.3.2).
fn matches_any(value: &[u8], etag: Option<&[u8]>, strong: bool) -> bool {
    let Some(etag) = etag else {
        // No current representation with a tag: only `*` could match, and a stored response
        // is a current representation.
        return fields::trim(value) == b"*";
    };
    if fields::trim(value) == b"*" {
        return true;
    }
    let (weak, opaque) = split_tag(etag);
    if strong && weak {
        return false;
    }
    fields::list(value).any(|tag| {
        let (tag_weak, tag_opaque) = split_tag(tag);
        tag_opaque == opaque && !(strong && tag_weak)
    })
}

/// (weak, the opaque tag with its quotes).
fn split_tag(tag: &[u8]) -> (bool, &[u8]) {
    match tag.strip_prefix(b"W/") {
        Some(rest) => (true, rest),
        None => (false, tag),
    }
}

/// The fields a 304 carries from the stored response (RFC 9110 15.4.5): those that would have
/// been sent in a 200 and describe the representation or its caching.
pub fn kept_in_304(name: &[u8]) -> bool {
    [
        "Cache-Control",
        "Content-Location",
        "Date",
        "ETag",
        "Expires",
        "Vary",
        "Last-Modified",
    ]
    .iter()
    .any(|n| name.eq_ignore_ascii_case(n.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::request::{self, RequestHead};

    const T: u64 = 784_111_777;

    fn answer(lines: &str, status: u16, stored: &Validators) -> Answer {
        let text = format!("GET / HTTP/1.1\r\nHost: h\r\n{lines}\r\n");
        let mut head = RequestHead::default();
        request::parse(text.as_bytes(), &request::Limits::default(), &mut head)
            .expect("a request head");
        evaluate(head.fields(), text.as_bytes(), status, stored)
    }

    fn stored(etag: Option<&str>, modified: Option<u64>) -> Validators {
        Validators {
            etag: etag.map(|e| e.as_bytes().into()),
            last_modified: modified,
        }
    }

    fn http_date(t: u64) -> String {
        String::from_utf8_lossy(&date::format(t)).into_owned()
    }

    #[test]
    fn if_none_match_and_if_modified_since() {
        let s = stored(Some("\"v1\""), Some(T));
        assert_eq!(
            answer("If-None-Match: \"v1\"\r\n", 200, &s),
            Answer::NotModified
        );
        assert_eq!(
            answer("If-None-Match: W/\"v1\"\r\n", 200, &s),
            Answer::NotModified,
            "weak"
        );
        assert_eq!(
            answer("If-None-Match: \"x\", \"v1\"\r\n", 200, &s),
            Answer::NotModified
        );
        assert_eq!(answer("If-None-Match: *\r\n", 200, &s), Answer::NotModified);
        assert_eq!(answer("If-None-Match: \"v2\"\r\n", 200, &s), Answer::Full);
        let at = http_date(T);
        let before = http_date(T - 1);
        assert_eq!(
            answer(&format!("If-Modified-Since: {at}\r\n"), 200, &s),
            Answer::NotModified
        );
        assert_eq!(
            answer(&format!("If-Modified-Since: {before}\r\n"), 200, &s),
            Answer::Full
        );
        assert_eq!(
            answer("If-Modified-Since: yesterday\r\n", 200, &s),
            Answer::Full
        );
        // If-None-Match wins over If-Modified-Since.
        let both = format!("If-None-Match: \"v2\"\r\nIf-Modified-Since: {at}\r\n");
        assert_eq!(answer(&both, 200, &s), Answer::Full);
        // Not for a stored 404.
        assert_eq!(answer("If-None-Match: \"v1\"\r\n", 404, &s), Answer::Full);
        assert_eq!(
            answer("If-None-Match: \"v1\"\r\n", 200, &stored(None, None)),
            Answer::Full
        );
    }

    #[test]
    fn if_match_and_if_unmodified_since() {
        let s = stored(Some("\"v1\""), Some(T));
        assert_eq!(answer("If-Match: \"v1\"\r\n", 200, &s), Answer::Full);
        assert_eq!(
            answer("If-Match: \"v2\"\r\n", 200, &s),
            Answer::PreconditionFailed
        );
        assert_eq!(
            answer("If-Match: W/\"v1\"\r\n", 200, &s),
            Answer::PreconditionFailed
        );
        assert_eq!(answer("If-Match: *\r\n", 200, &s), Answer::Full);
        let weak = stored(Some("W/\"v1\""), None);
        assert_eq!(
            answer("If-Match: W/\"v1\"\r\n", 200, &weak),
            Answer::PreconditionFailed
        );
        let at = http_date(T);
        let before = http_date(T - 1);
        assert_eq!(
            answer(&format!("If-Unmodified-Since: {at}\r\n"), 200, &s),
            Answer::Full
        );
        assert_eq!(
            answer(&format!("If-Unmodified-Since: {before}\r\n"), 200, &s),
            Answer::PreconditionFailed
        );
        // If-Match wins over If-Unmodified-Since; a failed precondition wins over 304.
        let both = format!("If-Match: \"v1\"\r\nIf-Unmodified-Since: {before}\r\n");
        assert_eq!(answer(&both, 200, &s), Answer::Full);
        let both = "If-Match: \"v2\"\r\nIf-None-Match: \"v1\"\r\n";
        assert_eq!(answer(both, 200, &s), Answer::PreconditionFailed);
    }
}
