//! Header fields the sidecar looks at. Everything else passes through untouched.
//!
//! A proxy must not forward hop-by-hop fields (RFC 9110 7.6.1: `Connection` and every field
//! it names, `Proxy-Connection`, `Keep-Alive`, `TE`, `Transfer-Encoding`, `Upgrade`); it
//! re-frames bodies itself (`Content-Length` / `Transfer-Encoding` are written anew), answers
//! `Expect: 100-continue` itself, and appends itself to `Via` and the client to
//! `X-Forwarded-For`. [`HOP`] is dl7's own marking field: a request carrying it came from a
//! peer sidecar, its value counts the hops so far.

/// A byte range of a head inside the buffer it was parsed from; heads keep ranges instead of
/// slices so that the buffer can be reused without borrowing trouble.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Span {
    start: u32,
    end: u32,
}

impl Span {
    /// The range that `part` (a subslice of `base`) occupies in `base`.
    pub(super) fn within(base: &[u8], part: &[u8]) -> Self {
        let start = (part.as_ptr() as usize).saturating_sub(base.as_ptr() as usize);
        let end = start + part.len();
        debug_assert!(end <= base.len());
        // Heads are bounded far below 4 GiB by the limits.
        Self {
            start: start as u32,
            end: end as u32,
        }
    }

    /// The bytes of this range in `buf` (the buffer the head was parsed from).
    pub fn of<'a>(&self, buf: &'a [u8]) -> &'a [u8] {
        buf.get(self.start as usize..self.end as usize)
            .unwrap_or_default()
    }
}

/// One header field of a parsed head: where its name and value are, and what it means to us.
#[derive(Debug, Clone, Copy)]
pub struct Field {
    /// The field name's range.
    pub name: Span,
    /// The field value's range (without surrounding whitespace).
    pub value: Span,
    /// What the sidecar does with it.
    pub kind: Kind,
}

/// dl7's marking field, sent on every forwarded request with the hop count.
pub const HOP: &str = "X-Dl7-Hop";

/// What a header field means to the sidecar.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Passed through.
    Other,
    /// `Content-Length`: framing, rewritten.
    ContentLength,
    /// `Transfer-Encoding`: framing, hop-by-hop.
    TransferEncoding,
    /// `Host`.
    Host,
    /// `Connection`: hop-by-hop, names more hop-by-hop fields.
    Connection,
    /// `Keep-Alive`, `Proxy-Connection`, `TE`, `Upgrade`: hop-by-hop.
    HopByHop,
    /// A field named in `Connection`: hop-by-hop.
    Named,
    /// `Expect`: answered by the sidecar.
    Expect,
    /// [`HOP`].
    Hop,
    /// `Via`: appended to.
    Via,
    /// `X-Forwarded-For`: appended to.
    ForwardedFor,
    /// `X-Forwarded-Proto`: replaced on requests from clients, passed on from peers.
    ForwardedProto,
    /// `If-*` and `Range`: dropped from cache fills, whose response must be the full object.
    Conditional,
    /// `Authorization`: requests carrying it are not served from or stored in the cache.
    Authorization,
    /// `Cache-Control`.
    CacheControl,
    /// `CDN-Cache-Control` (RFC 9213): a shared cache's directives, ahead of `Cache-Control`.
    CdnCacheControl,
    /// `Surrogate-Control` (Edge Architecture 1.0): directives for surrogates, after
    /// `CDN-Cache-Control` and ahead of `Cache-Control`.
    SurrogateControl,
    /// `Pragma`: `no-cache` in a request without `Cache-Control` (RFC 9111 5.4).
    Pragma,
    /// `Set-Cookie` in responses: such responses are not cached.
    Uncacheable,
    /// `Vary`: the request fields a response varies on (the cache keeps variants).
    Vary,
    /// `Date`: read by the cache (age, freshness).
    Date,
    /// `Expires`: read by the cache (freshness).
    Expires,
    /// `Age`: read by the cache, replaced on what it serves.
    Age,
    /// `Last-Modified`: a validator, and the base of heuristic freshness.
    LastModified,
    /// `ETag`: a validator.
    ETag,
}

impl Kind {
    /// True for end-to-end fields the sidecar passes on unchanged (it may read them): those
    /// that a `Connection` field may name as hop-by-hop.
    pub fn is_plain(self) -> bool {
        matches!(
            self,
            Kind::Other
                | Kind::Date
                | Kind::Expires
                | Kind::Age
                | Kind::LastModified
                | Kind::ETag
                | Kind::Vary
                | Kind::CdnCacheControl
                | Kind::SurrogateControl
                | Kind::Pragma
        )
    }

    /// True for the fields a proxy must not forward as they are.
    pub fn is_hop_by_hop(self) -> bool {
        matches!(
            self,
            Kind::TransferEncoding | Kind::Connection | Kind::HopByHop | Kind::Named
        )
    }
}

/// Classifies a field name (case-insensitively).
pub fn classify(name: &[u8]) -> Kind {
    let is = |s: &str| name.eq_ignore_ascii_case(s.as_bytes());
    match name.len() {
        2 if is("TE") => Kind::HopByHop,
        3 if is("Via") => Kind::Via,
        3 if is("Age") => Kind::Age,
        4 if is("Host") => Kind::Host,
        4 if is("Date") => Kind::Date,
        4 if is("ETag") => Kind::ETag,
        4 if is("Vary") => Kind::Vary,
        5 if is("Range") => Kind::Conditional,
        6 if is("Expect") => Kind::Expect,
        6 if is("Pragma") => Kind::Pragma,
        7 if is("Upgrade") => Kind::HopByHop,
        7 if is("Expires") => Kind::Expires,
        8 if is("If-Match") || is("If-Range") => Kind::Conditional,
        9 if is(HOP) => Kind::Hop,
        10 if is("Connection") => Kind::Connection,
        10 if is("Keep-Alive") => Kind::HopByHop,
        10 if is("Set-Cookie") => Kind::Uncacheable,
        13 if is("If-None-Match") => Kind::Conditional,
        13 if is("Authorization") => Kind::Authorization,
        13 if is("Cache-Control") => Kind::CacheControl,
        13 if is("Last-Modified") => Kind::LastModified,
        14 if is("Content-Length") => Kind::ContentLength,
        15 if is("X-Forwarded-For") => Kind::ForwardedFor,
        16 if is("Proxy-Connection") => Kind::HopByHop,
        17 if is("X-Forwarded-Proto") => Kind::ForwardedProto,
        17 if is("Transfer-Encoding") => Kind::TransferEncoding,
        17 if is("If-Modified-Since") => Kind::Conditional,
        17 if is("CDN-Cache-Control") => Kind::CdnCacheControl,
        17 if is("Surrogate-Control") => Kind::SurrogateControl,
        19 if is("If-Unmodified-Since") => Kind::Conditional,
        _ => Kind::Other,
    }
}

/// Whether field names `a` and `b` name the same field to a back end that reads `_` as `-`
/// (CGI-style, as `HTTP_X_TLS_SNI`): compared ignoring case, with `_` and `-` alike. Used for
/// the fields the sidecar writes itself from configured names, so that a client cannot slip
/// one past it under another spelling.
pub fn same_name(a: &[u8], b: &[u8]) -> bool {
    let fold = |c: u8| {
        if c == b'_' {
            b'-'
        } else {
            c.to_ascii_lowercase()
        }
    };
    a.len() == b.len() && a.iter().zip(b).all(|(&x, &y)| fold(x) == fold(y))
}

/// What the `Connection` fields of a head say.
#[derive(Debug, Clone, Copy, Default)]
pub struct ConnectionOptions {
    /// `close`.
    pub close: bool,
    /// `keep-alive`.
    pub keep_alive: bool,
    /// Other tokens: names of fields that are hop-by-hop for this message.
    pub names_fields: bool,
}

impl ConnectionOptions {
    /// Takes in the value of one `Connection` field.
    pub fn read(&mut self, value: &[u8]) {
        for token in list(value) {
            if token.eq_ignore_ascii_case(b"close") {
                self.close = true;
            } else if token.eq_ignore_ascii_case(b"keep-alive") {
                self.keep_alive = true;
            } else {
                self.names_fields = true;
            }
        }
    }

    /// The connection ends after this message (HTTP/1.0 closes unless asked to keep alive).
    pub fn closes(&self, minor: u8) -> bool {
        if minor == 0 {
            !self.keep_alive
        } else {
            self.close
        }
    }
}

/// Marks the fields that `Connection` names as [`Kind::Named`] (hop-by-hop), among those
/// for which `droppable` holds. Framing fields, `Host` and the fields the sidecar writes
/// itself keep their meaning: naming them in `Connection` must not make the sidecar drop
/// them (a known way to strip `X-Forwarded-For` or to confuse framing).
pub fn mark_named(buf: &[u8], fields: &mut [Field], droppable: impl Fn(Kind) -> bool) {
    let named: Vec<&[u8]> = fields
        .iter()
        .filter(|f| f.kind == Kind::Connection)
        .flat_map(|f| list(f.value.of(buf)))
        .collect();
    for f in fields.iter_mut() {
        if droppable(f.kind) && named.iter().any(|n| n.eq_ignore_ascii_case(f.name.of(buf))) {
            f.kind = Kind::Named;
        }
    }
}

/// The elements of a comma-separated field value, trimmed of spaces and tabs, empty ones
/// skipped (RFC 9110 5.6.1).
pub fn list(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value
        .split(|&b| b == b',')
        .map(trim)
        .filter(|e| !e.is_empty())
}

/// `value` without leading and trailing spaces and tabs.
pub fn trim(value: &[u8]) -> &[u8] {
    let is_ows = |b: &u8| *b == b' ' || *b == b'\t';
    let start = value.iter().position(|b| !is_ows(b)).unwrap_or(value.len());
    let end = value
        .iter()
        .rposition(|b| !is_ows(b))
        .map_or(start, |i| i + 1);
    &value[start..end]
}

/// Parses a decimal number of at most 19 digits and nothing else (no sign, no spaces).
pub fn decimal(value: &[u8]) -> Option<u64> {
    if value.is_empty() || value.len() > 19 || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(value.iter().fold(0u64, |n, d| n * 10 + u64::from(d - b'0')))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classification_ignores_case() {
        assert_eq!(classify(b"content-LENGTH"), Kind::ContentLength);
        assert_eq!(classify(b"x-dl7-hop"), Kind::Hop);
        assert_eq!(classify(b"Accept"), Kind::Other);
        assert!(classify(b"keep-alive").is_hop_by_hop());
        assert!(!classify(b"Host").is_hop_by_hop());
    }

    #[test]
    fn same_name_folds_case_and_underscores() {
        assert!(same_name(b"X-TLS-SNI", b"x_tls_sni"));
        assert!(same_name(b"x_tls_sni", b"X-Tls-Sni"));
        assert!(!same_name(b"X-TLS-SNI", b"X-TLS-SN"));
        assert!(!same_name(b"X-TLS-SNI", b"X-TLS-SNJ"));
    }

    #[test]
    fn lists_and_numbers() {
        let v: Vec<&[u8]> = list(b" close ,, Foo\t").collect();
        assert_eq!(v, [&b"close"[..], b"Foo"]);
        assert_eq!(decimal(b"0042"), Some(42));
        assert_eq!(
            decimal(b"9999999999999999999"),
            Some(9_999_999_999_999_999_999)
        );
        assert_eq!(decimal(b"99999999999999999999"), None);
        assert_eq!(decimal(b"+1"), None);
        assert_eq!(decimal(b""), None);
        assert_eq!(trim(b"  "), b"");
    }
}
