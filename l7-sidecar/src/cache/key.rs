//! The cache key: which stored object answers a request, in the embedded cache and in the
//! relay cache.
//!
//! It is the host-path form of the URL ([`crate::router::host_path`]: the lower-cased
//! authority, then the path and query), whatever `--key` routes by, so that two sites behind
//! one origin never share an object. With `cache-key-scheme` it starts with the scheme the
//! client used, `http://` or `https://`: an object fetched over http and one fetched over
//! https are two entries (an origin that redirects http to https, or writes the scheme into
//! its pages, answers them differently). The routing key does not change, so both schemes of
//! a URL live on its one owner, which is what lets a `PURGE` or an invalidation there drop
//! both ([`crate::cache::Cache::invalidate_resource`]).
//!
//! The scheme is the connection's, never the request target's: the listener's for a request
//! from a client (`https` on `listen-tls`, `http` on `listen`, as the `X-Forwarded-Proto` sent
//! on), and for a request from a peer the scheme the forwarding sidecar wrote in
//! `X-Forwarded-Proto` ([`Scheme::of`]).
//!
//! ```
//! use l7_sidecar::cache::key::{self, Scheme};
//! use l7_sidecar::http::request::{self, Limits, RequestHead};
//!
//! let buf = b"GET /a?b HTTP/1.1\r\nHost: Shop.example\r\nX-Forwarded-Proto: https\r\n\r\n";
//! let mut head = RequestHead::default();
//! assert!(request::parse(buf, &Limits::default(), &mut head).unwrap());
//! let mut scratch = Vec::new();
//! // On the peer listener: the forwarding sidecar's X-Forwarded-Proto.
//! let scheme = Scheme::of(None, &head, buf);
//! assert_eq!(key::build(&head, buf, Some(scheme), &mut scratch), b"https://shop.example/a?b");
//! // On `listen`: the listener's, whatever the client wrote.
//! let scheme = Scheme::of(Some(b"http"), &head, buf);
//! assert_eq!(key::build(&head, buf, Some(scheme), &mut scratch), b"http://shop.example/a?b");
//! // Without `cache-key-scheme`.
//! assert_eq!(key::build(&head, buf, None, &mut scratch), b"shop.example/a?b");
//! ```

use crate::http::fields::{self, Kind};
use crate::http::request::RequestHead;
use crate::router;

/// The scheme a client used, as a cache key with `cache-key-scheme` starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// Plain HTTP.
    Http,
    /// HTTPS.
    Https,
}

impl Scheme {
    /// The scheme of a request: `proto` when it came from a client (the `X-Forwarded-Proto`
    /// the listener sends on, [`crate::client::ClientIo::proto`]), else (from a peer) the
    /// request's `X-Forwarded-Proto`. A sidecar sends exactly one value; of several (a list,
    /// or several fields) the first counts, the leftmost, nearest the client, as in
    /// `X-Forwarded-For`. `https` in any case is HTTPS; anything else, or none, is HTTP.
    pub fn of(proto: Option<&[u8]>, head: &RequestHead, buf: &[u8]) -> Self {
        let value = match proto {
            Some(proto) => proto,
            None => head
                .fields()
                .iter()
                .find(|f| f.kind == Kind::ForwardedProto)
                .and_then(|f| fields::list(f.value.of(buf)).next())
                .unwrap_or_default(),
        };
        if value.eq_ignore_ascii_case(b"https") {
            Scheme::Https
        } else {
            Scheme::Http
        }
    }

    /// Its name, as in a URI.
    pub fn name(self) -> &'static [u8] {
        match self {
            Scheme::Http => b"http",
            Scheme::Https => b"https",
        }
    }

    /// What a cache key with this scheme starts with.
    fn prefix(self) -> &'static [u8] {
        match self {
            Scheme::Http => b"http://",
            Scheme::Https => b"https://",
        }
    }

    /// The other one.
    fn other(self) -> Self {
        match self {
            Scheme::Http => Scheme::Https,
            Scheme::Https => Scheme::Http,
        }
    }
}

/// The cache key of the request `head` (parsed from `buf`), built in `scratch` (reused: no
/// allocation once it has grown): the host-path form, after `scheme://` when a scheme is
/// given (`cache-key-scheme`).
pub fn build<'a>(
    head: &RequestHead,
    buf: &[u8],
    scheme: Option<Scheme>,
    scratch: &'a mut Vec<u8>,
) -> &'a [u8] {
    scratch.clear();
    if let Some(scheme) = scheme {
        scratch.extend_from_slice(scheme.prefix());
    }
    router::append_host_path(head, buf, scratch);
    scratch
}

/// A cache key split into its scheme and its host-path form. `schemed`: the keys carry a
/// scheme (`cache-key-scheme`); without it, a key is all host-path, even one that happens to
/// start with `http://` (a `Host: http:` with the target `//x`).
pub fn split(key: &[u8], schemed: bool) -> (Option<Scheme>, &[u8]) {
    if schemed {
        for scheme in [Scheme::Https, Scheme::Http] {
            if let Some(rest) = key.strip_prefix(scheme.prefix()) {
                return (Some(scheme), rest);
            }
        }
    }
    (None, key)
}

/// `key` under the other scheme (`https://h/p` for `http://h/p`, and back): the same resource
/// at the origin. `None` for a key without a scheme.
pub fn twin(key: &[u8], schemed: bool) -> Option<Vec<u8>> {
    let (scheme, host_path) = split(key, schemed);
    let other = scheme?.other().prefix();
    let mut twin = Vec::with_capacity(other.len() + host_path.len());
    twin.extend_from_slice(other);
    twin.extend_from_slice(host_path);
    Some(twin)
}

/// `host_path` (a host-path form) after `scheme://`, or as it is without a scheme.
pub fn join(scheme: Option<Scheme>, host_path: &[u8]) -> Vec<u8> {
    let prefix = scheme.map_or(&b""[..], Scheme::prefix);
    let mut key = Vec::with_capacity(prefix.len() + host_path.len());
    key.extend_from_slice(prefix);
    key.extend_from_slice(host_path);
    key
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::request::{self, Limits};

    fn scheme(proto: Option<&[u8]>, fields: &str) -> Scheme {
        let text = format!("GET / HTTP/1.1\r\nHost: h\r\n{fields}\r\n");
        let mut head = RequestHead::default();
        assert!(request::parse(text.as_bytes(), &Limits::default(), &mut head).unwrap());
        Scheme::of(proto, &head, text.as_bytes())
    }

    #[test]
    fn the_listener_decides_for_clients_and_x_forwarded_proto_for_peers() {
        let https = "X-Forwarded-Proto: https\r\n";
        assert_eq!(scheme(Some(b"http"), https), Scheme::Http, "clients lie");
        assert_eq!(scheme(Some(b"https"), ""), Scheme::Https);
        assert_eq!(scheme(None, https), Scheme::Https);
        assert_eq!(
            scheme(None, "x-forwarded-proto:  HTTPS \r\n"),
            Scheme::Https
        );
        assert_eq!(scheme(None, ""), Scheme::Http, "none is http");
        for other in ["ftp", "", "https2", "wss"] {
            let field = format!("X-Forwarded-Proto: {other}\r\n");
            assert_eq!(scheme(None, &field), Scheme::Http, "{other}");
        }
        // Several: the first value of the first field.
        assert_eq!(
            scheme(None, "X-Forwarded-Proto: https, http\r\n"),
            Scheme::Https
        );
        assert_eq!(
            scheme(
                None,
                "X-Forwarded-Proto: http\r\nX-Forwarded-Proto: https\r\n"
            ),
            Scheme::Http
        );
        assert_eq!(
            scheme(None, "X-Forwarded-Proto: , https\r\n"),
            Scheme::Https,
            "empty elements are skipped"
        );
    }

    #[test]
    fn keys_split_and_twin_only_with_schemes() {
        assert_eq!(
            split(b"https://h/p", true),
            (Some(Scheme::Https), &b"h/p"[..])
        );
        assert_eq!(
            split(b"http://h/p", true),
            (Some(Scheme::Http), &b"h/p"[..])
        );
        assert_eq!(split(b"http://h/p", false), (None, &b"http://h/p"[..]));
        assert_eq!(split(b"h/p", true), (None, &b"h/p"[..]));
        assert_eq!(
            twin(b"http://h/p?q", true).as_deref(),
            Some(&b"https://h/p?q"[..])
        );
        assert_eq!(
            twin(b"https://h/p", true).as_deref(),
            Some(&b"http://h/p"[..])
        );
        assert_eq!(twin(b"h/p", false), None);
        assert_eq!(join(Some(Scheme::Https), b"h/"), b"https://h/");
        assert_eq!(join(None, b"h/"), b"h/");
    }

    /// The two schemes' keys of one URL never meet, nor meet another URL's.
    #[test]
    fn schemes_keep_keys_apart() {
        let buf = b"GET /p HTTP/1.1\r\nHost: h\r\n\r\n";
        let mut head = RequestHead::default();
        assert!(request::parse(buf, &Limits::default(), &mut head).unwrap());
        let (mut a, mut b) = (Vec::new(), Vec::new());
        let http = build(&head, buf, Some(Scheme::Http), &mut a);
        let https = build(&head, buf, Some(Scheme::Https), &mut b);
        assert_ne!(http, https);
        assert_eq!(split(http, true).1, split(https, true).1);
        // `Host: s:` with the target `//h/p` over http is not https://h/p.
        let odd = b"GET //h/p HTTP/1.1\r\nHost: s:\r\n\r\n";
        if request::parse(odd, &Limits::default(), &mut head).unwrap_or(false) {
            assert_ne!(build(&head, odd, Some(Scheme::Http), &mut a), https);
        }
    }
}
