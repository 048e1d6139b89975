//! Variants (RFC 9111 4.1): a response with `Vary` is stored under a secondary key made of the
//! URL's key and the request's values of the fields it names, and a small marker under the
//! URL's key remembers those names, so that the next request finds its own variant.

use std::sync::Arc;

use crate::http::Field;
use crate::http::fields::{self, Kind};
use crate::http::forward::Vouched;

/// Field names a response varies on: lower case, sorted, each once.
pub type Names = Arc<[Box<[u8]>]>;

/// The names a response's `Vary` fields nominate; `None` without `Vary` (a `*` makes the
/// response unstorable before this is asked).
pub fn names(fields: &[Field], buf: &[u8]) -> Option<Names> {
    let mut names: Vec<Box<[u8]>> = fields
        .iter()
        .filter(|f| f.kind == Kind::Vary)
        .flat_map(|f| fields::list(f.value.of(buf)))
        .map(|name| name.to_ascii_lowercase().into_boxed_slice())
        .collect();
    if names.is_empty() {
        return None;
    }
    names.sort_unstable();
    names.dedup();
    Some(names.into())
}

/// What the marker under a URL's key holds: the names its variants vary on, and the epoch of
/// the marker, part of every variant's key, so that variants stored before the URL was
/// invalidated (its marker dropped) are never found again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Variants {
    pub names: Names,
    pub epoch: u64,
}

/// The secondary key: `primary`, the marker's epoch, then for each name the request's values
/// of that field (field lines joined by commas, each trimmed; an absent field differs from an
/// empty one). A field the sidecar writes itself for a request from a client (`vouched`:
/// `X-Forwarded-Proto`, the TLS facts) counts with the value the origin got, not the client's:
/// the response varied on that one.
pub fn key(
    primary: &[u8],
    variants: &Variants,
    fields: &[Field],
    buf: &[u8],
    vouched: Option<&Vouched<'_>>,
) -> Vec<u8> {
    let names = &variants.names;
    let mut out = Vec::with_capacity(primary.len() + 8 + 32 * names.len());
    out.extend_from_slice(primary);
    out.push(0);
    out.extend_from_slice(&variants.epoch.to_le_bytes());
    for name in names.iter() {
        out.push(0);
        out.extend_from_slice(name);
        if let Some(sent) = vouched.and_then(|v| v.sent(name)) {
            match sent {
                Some(value) => {
                    out.push(b'=');
                    out.extend_from_slice(value);
                }
                None => out.push(1),
            }
            continue;
        }
        let mut values = fields
            .iter()
            .filter(|f| f.name.of(buf).eq_ignore_ascii_case(name))
            .map(|f| fields::trim(f.value.of(buf)))
            .peekable();
        if values.peek().is_none() {
            out.push(1);
            continue;
        }
        out.push(b'=');
        for (i, value) in values.enumerate() {
            if i > 0 {
                out.push(b',');
            }
            out.extend_from_slice(value);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::request::{self, RequestHead};
    use crate::http::response::{self, ResponseHead};

    fn vary(lines: &str) -> Option<Names> {
        let text = format!("HTTP/1.1 200 OK\r\n{lines}\r\n");
        let mut head = ResponseHead::default();
        assert!(response::parse(text.as_bytes(), 4096, &mut head).unwrap());
        names(head.fields(), text.as_bytes())
    }

    fn key_of(names: &Names, lines: &str) -> Vec<u8> {
        let text = format!("GET / HTTP/1.1\r\nHost: h\r\n{lines}\r\n");
        let mut head = RequestHead::default();
        request::parse(text.as_bytes(), &request::Limits::default(), &mut head).unwrap();
        let variants = Variants {
            names: names.clone(),
            epoch: 7,
        };
        key(b"/k", &variants, head.fields(), text.as_bytes(), None)
    }

    #[test]
    fn names_and_keys() {
        assert!(vary("").is_none());
        let n = vary("Vary: Accept-Encoding, accept\r\nVary: ACCEPT\r\n").unwrap();
        assert_eq!(&*n, &[b"accept"[..].into(), b"accept-encoding"[..].into()]);
        let gzip = key_of(&n, "Accept-Encoding: gzip\r\n");
        assert_eq!(
            gzip,
            key_of(&n, "accept-encoding:  gzip \r\n"),
            "names and spaces"
        );
        assert_ne!(gzip, key_of(&n, "Accept-Encoding: br\r\n"));
        assert_ne!(
            key_of(&n, ""),
            key_of(&n, "Accept:\r\n"),
            "absent is not empty"
        );
        assert_ne!(
            key_of(&n, "Accept: a\r\nAccept: b\r\n"),
            key_of(&n, "Accept: a\r\n"),
            "every line counts"
        );
        assert!(gzip.starts_with(b"/k\0"));
    }

    /// A variant chosen by a field the sidecar writes itself is the one of the value the
    /// origin got: a client's forged one does not choose it.
    #[test]
    fn vouched_fields_count_as_sent() {
        use crate::http::forward::Fact;
        let n = vary("Vary: X-Forwarded-Proto, X-TLS-SNI\r\n").unwrap();
        let text = "GET / HTTP/1.1\r\nHost: h\r\nX-Forwarded-Proto: https\r\nX-TLS-SNI: a\r\n\r\n";
        let mut head = RequestHead::default();
        request::parse(text.as_bytes(), &request::Limits::default(), &mut head).unwrap();
        let variants = Variants {
            names: n.clone(),
            epoch: 7,
        };
        let of = |vouched: Option<&Vouched<'_>>| {
            key(b"/k", &variants, head.fields(), text.as_bytes(), vouched)
        };
        let plain = Vouched {
            proto: b"http",
            facts: [
                Some(Fact {
                    name: b"X-TLS-SNI",
                    value: None,
                }),
                None,
            ],
        };
        let tls = Vouched {
            proto: b"https",
            facts: [
                Some(Fact {
                    name: b"X-TLS-SNI",
                    value: Some(b"a"),
                }),
                None,
            ],
        };
        assert_eq!(
            of(None),
            key_of(&n, "X-Forwarded-Proto: https\r\nX-TLS-SNI: a\r\n")
        );
        assert_eq!(of(Some(&tls)), of(None), "as a peer forwarded it");
        assert_eq!(of(Some(&plain)), key_of(&n, "X-Forwarded-Proto: http\r\n"));
    }
}
