//! The request-head reader: `httparse` plus the limits and the checks that keep a proxy from
//! being used for request smuggling (RFC 9112 6.1, 6.3, 11.2).
//!
//! [`parse`] is called on the connection's read buffer every time bytes arrive. It answers
//! "not complete yet" (and then also enforces the size limits on the partial head, so a
//! client cannot make the buffer grow), a complete [`RequestHead`], or a [`HeadError`] that
//! carries its status code. What is refused, beyond what `httparse` refuses:
//!
//! | input | status |
//! |---|---|
//! | request line longer than the URI limit | 414 |
//! | head larger than the head limit, more fields than the field limit | 431 |
//! | any bare LF line ending (`httparse` accepts them; smuggling vector) | 400 |
//! | `Transfer-Encoding` together with `Content-Length` | 400 |
//! | `Transfer-Encoding` other than exactly `chunked` (e.g. `chunked, identity`), or twice | 400 |
//! | `Transfer-Encoding` in an HTTP/1.0 request | 400 |
//! | `Content-Length` twice (even with equal values), or not a plain decimal | 400 |
//! | obs-fold (a field line starting with whitespace), whitespace before the colon | 400 |
//! | no `Host` in HTTP/1.1, `Host` twice | 400 |
//! | a `Host` (or absolute-form authority) that is not `host[:port]`: `/`, `?`, `#`, `@`, whitespace, controls, non-ASCII (cache-key collisions) | 400 |
//! | an underscore variant of a field the proxy frames or writes (`Content_Length`, `Transfer_Encoding`, `X_Forwarded_For`): CGI-style back ends read `_` as `-` | 400 |
//! | a target that is neither origin-form, absolute-form nor `OPTIONS *` | 400 |
//! | `CONNECT` (no tunnels) | 501 |
//! | a version other than HTTP/1.0 and 1.1 | 505 |
//! | `Expect` other than `100-continue` | 417 |
//! | head not complete within the header timeout (checked by the connection) | 408 |
//!
//! Every error closes the connection after its response: after a framing error the position
//! of the next request in the stream is unknown.
//!
//! ```
//! use l7_sidecar::http::request::{self, BodyKind, Limits, RequestHead};
//!
//! let mut head = RequestHead::default();
//! let buf = b"POST /up HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello";
//! assert!(request::parse(buf, &Limits::default(), &mut head).unwrap());
//! assert_eq!(head.target(buf), b"/up");
//! assert_eq!(head.body, BodyKind::Length(5));
//!
//! let smuggle = b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n";
//! let err = request::parse(smuggle, &Limits::default(), &mut head).unwrap_err();
//! assert_eq!(err.status(), 400);
//! ```

use std::mem::MaybeUninit;

use super::fields::{self, Kind};
use super::fields::{Field, Span};

/// The most header fields [`Limits::headers`] may allow (the parser's array size).
pub const MAX_HEADERS_CAP: usize = 512;

/// Bytes a request line may have beyond its target (method, spaces, version, CRLF).
const REQUEST_LINE_SLACK: usize = 32;

/// Size limits of a request head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Whole head, request line to the empty line (HAProxy's default buffer: 16 KiB).
    pub head_bytes: usize,
    /// Header fields (HAProxy: 101).
    pub headers: usize,
    /// Request target (nginx: 8 KiB request lines).
    pub uri_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            head_bytes: 16 * 1024,
            headers: 100,
            uri_bytes: 8 * 1024,
        }
    }
}

/// How the request body is framed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum BodyKind {
    /// No body.
    #[default]
    None,
    /// `Content-Length: n`, n > 0.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
}

/// Why a request head was refused. [`status`](Self::status) is the response to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HeadError {
    /// The request line (or the target) is longer than allowed.
    #[error("request target longer than the limit")]
    UriTooLong,
    /// The head is larger than allowed.
    #[error("request head larger than the limit")]
    HeadTooLarge,
    /// More header fields than allowed.
    #[error("more header fields than the limit")]
    TooManyHeaders,
    /// A line ends in LF without CR.
    #[error("bare LF line ending")]
    BareLf,
    /// `httparse` refused the syntax (this includes obs-fold and whitespace before a colon).
    #[error("malformed request head: {0}")]
    Malformed(httparse::Error),
    /// Not HTTP/1.0 or HTTP/1.1.
    #[error("unsupported HTTP version")]
    Version,
    /// `Content-Length` is not a plain decimal number.
    #[error("invalid Content-Length")]
    BadContentLength,
    /// `Content-Length` appears more than once.
    #[error("more than one Content-Length")]
    DuplicateContentLength,
    /// `Transfer-Encoding` together with `Content-Length`.
    #[error("Transfer-Encoding together with Content-Length")]
    LengthAndChunked,
    /// `Transfer-Encoding` other than exactly `chunked`, or more than once.
    #[error("Transfer-Encoding other than chunked")]
    BadTransferEncoding,
    /// `Transfer-Encoding` in an HTTP/1.0 request.
    #[error("Transfer-Encoding in an HTTP/1.0 request")]
    TransferEncodingInHttp10,
    /// HTTP/1.1 without `Host`.
    #[error("no Host in an HTTP/1.1 request")]
    MissingHost,
    /// A `Host` value or absolute-form authority that is not `host[:port]`.
    #[error("invalid Host or target authority")]
    BadHost,
    /// A field name that is a framing field (or `X-Forwarded-For`) with `_` for `-`.
    #[error("underscore variant of a framing field")]
    UnderscoreField,
    /// `Host` more than once.
    #[error("more than one Host")]
    DuplicateHost,
    /// Neither origin-form, absolute-form nor `OPTIONS *`.
    #[error("unsupported request target form")]
    BadTarget,
    /// `CONNECT`: the sidecar does not tunnel.
    #[error("CONNECT is not supported")]
    Connect,
    /// `Expect` with anything but `100-continue`.
    #[error("unsupported Expect")]
    Expectation,
    /// The head did not arrive within the header timeout (slowloris); detected by the
    /// connection, not by [`parse`].
    #[error("request head not received in time")]
    Timeout,
    /// dl7's hop field is not a small number, or appears twice.
    #[error("invalid {} field", fields::HOP)]
    BadHop,
}

impl HeadError {
    /// The status code of the response to send before closing.
    pub fn status(self) -> u16 {
        match self {
            HeadError::UriTooLong => 414,
            HeadError::HeadTooLarge | HeadError::TooManyHeaders => 431,
            HeadError::Connect => 501,
            HeadError::Version => 505,
            HeadError::Expectation => 417,
            HeadError::Timeout => 408,
            _ => 400,
        }
    }

    /// A short fixed name for metrics (`reason` label).
    pub fn reason(self) -> &'static str {
        match self {
            HeadError::UriTooLong => "uri_too_long",
            HeadError::HeadTooLarge => "head_too_large",
            HeadError::TooManyHeaders => "too_many_headers",
            HeadError::BareLf => "bare_lf",
            HeadError::Malformed(_) => "malformed",
            HeadError::Version => "version",
            HeadError::BadContentLength | HeadError::DuplicateContentLength => "content_length",
            HeadError::LengthAndChunked => "length_and_chunked",
            HeadError::BadTransferEncoding | HeadError::TransferEncodingInHttp10 => {
                "transfer_encoding"
            }
            HeadError::MissingHost | HeadError::DuplicateHost | HeadError::BadHost => "host",
            HeadError::UnderscoreField => "underscore_field",
            HeadError::BadTarget => "target",
            HeadError::Connect => "connect",
            HeadError::Expectation => "expect",
            HeadError::BadHop => "hop",
            HeadError::Timeout => "header_timeout",
        }
    }
}

impl From<httparse::Error> for HeadError {
    fn from(e: httparse::Error) -> Self {
        match e {
            httparse::Error::TooManyHeaders => HeadError::TooManyHeaders,
            httparse::Error::Version => HeadError::Version,
            other => HeadError::Malformed(other),
        }
    }
}

/// The methods the sidecar treats specially.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Method {
    /// `GET`: cacheable.
    #[default]
    Get,
    /// `HEAD`: the response has no body.
    Head,
    /// Anything else.
    Other,
}

/// A parsed request head: ranges into the buffer it was parsed from, and what the checks
/// found. Reused across requests (its field list keeps its capacity).
#[derive(Debug, Default)]
pub struct RequestHead {
    /// Length of the head in the buffer, including leading empty lines and the final CRLF.
    pub len: usize,
    /// HTTP/1.`minor`.
    pub minor: u8,
    /// GET, HEAD or other.
    pub method: Method,
    /// How the body is framed.
    pub body: BodyKind,
    /// The connection ends after this request (`Connection: close`, or HTTP/1.0 without
    /// `keep-alive`).
    pub close: bool,
    /// `Expect: 100-continue`.
    pub expect_continue: bool,
    /// The value of dl7's hop field, when present.
    pub hop: Option<u8>,
    /// The request carries `Authorization`.
    pub authorization: bool,
    method_span: Span,
    target: Span,
    host: Option<Span>,
    /// The authority of an absolute-form target.
    absolute: Option<Span>,
    /// Where the path and query start in the target (0 for origin-form).
    path_at: u32,
    fields: Vec<Field>,
}

impl RequestHead {
    /// The method, e.g. `GET`.
    pub fn method_bytes<'a>(&self, buf: &'a [u8]) -> &'a [u8] {
        self.method_span.of(buf)
    }

    /// The request target as sent (origin-form path and query, or absolute-form URL).
    pub fn target<'a>(&self, buf: &'a [u8]) -> &'a [u8] {
        self.target.of(buf)
    }

    /// The `Host` value, when present.
    pub fn host<'a>(&self, buf: &'a [u8]) -> Option<&'a [u8]> {
        self.host.map(|h| h.of(buf))
    }

    /// Who the request is for (RFC 9112 3.2.2): the authority of an absolute-form target,
    /// which overrides `Host`, else the `Host` value; `None` for an HTTP/1.0 request without
    /// `Host`. Both were checked to be `host[:port]`.
    pub fn authority<'a>(&self, buf: &'a [u8]) -> Option<&'a [u8]> {
        self.absolute.or(self.host).map(|h| h.of(buf))
    }

    /// True when the target is in absolute-form (`http://host/path`).
    pub fn is_absolute(&self) -> bool {
        self.absolute.is_some()
    }

    /// The path and query of an absolute-form target, the target itself otherwise. An
    /// absolute-form target without a path gives an empty slice or one starting with `?`:
    /// the origin-form of `http://h?q` is `/` followed by this.
    pub fn path_and_query<'a>(&self, buf: &'a [u8]) -> &'a [u8] {
        let target = self.target(buf);
        target.get(self.path_at as usize..).unwrap_or_default()
    }

    /// All header fields in order.
    pub fn fields(&self) -> &[Field] {
        &self.fields
    }
}

/// Parses the request head at the start of `buf` into `head`.
///
/// `Ok(false)`: not complete yet, read more (the partial head is within the limits).
/// `Ok(true)`: complete; `head.len` bytes of `buf` are the head, the body (if any) follows.
pub fn parse(buf: &[u8], limits: &Limits, head: &mut RequestHead) -> Result<bool, HeadError> {
    let mut storage = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS_CAP];
    let slots = &mut storage[..limits.headers.clamp(1, MAX_HEADERS_CAP)];
    let mut req = httparse::Request::new(&mut []);
    let len = match req.parse_with_uninit_headers(buf, slots) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return check_partial(buf, limits).map(|()| false),
        Err(e) => {
            check_partial(buf, limits)?;
            return Err(e.into());
        }
    };
    let (Some(method), Some(target), Some(minor)) = (req.method, req.path, req.version) else {
        return Err(HeadError::Malformed(httparse::Error::Token));
    };
    if target.len() > limits.uri_bytes {
        return Err(HeadError::UriTooLong);
    }
    if len > limits.head_bytes {
        return Err(HeadError::HeadTooLarge);
    }
    if memchr::memchr_iter(b'\n', &buf[..len]).any(|i| i == 0 || buf[i - 1] != b'\r') {
        return Err(HeadError::BareLf);
    }
    let absolute = check_target(method, target.as_bytes())?;

    head.len = len;
    head.minor = minor;
    head.method = match method {
        "GET" => Method::Get,
        "HEAD" => Method::Head,
        _ => Method::Other,
    };
    head.method_span = Span::within(buf, method.as_bytes());
    head.target = Span::within(buf, target.as_bytes());
    head.absolute = absolute.map(|(authority, _)| Span::within(buf, authority));
    head.path_at = absolute.map_or(0, |(_, path_at)| path_at as u32);
    head.fields.clear();
    head.host = None;
    head.hop = None;
    head.expect_continue = false;
    head.authorization = false;

    let mut length = None;
    let mut chunked = false;
    let mut connection = fields::ConnectionOptions::default();
    for h in req.headers.iter() {
        let (name, value) = (h.name.as_bytes(), fields::trim(h.value));
        let kind = fields::classify(name);
        match kind {
            Kind::ContentLength => {
                if length.is_some() {
                    return Err(HeadError::DuplicateContentLength);
                }
                length = Some(fields::decimal(value).ok_or(HeadError::BadContentLength)?);
            }
            Kind::TransferEncoding => {
                if chunked || !value.eq_ignore_ascii_case(b"chunked") {
                    return Err(HeadError::BadTransferEncoding);
                }
                chunked = true;
            }
            Kind::Host => {
                if head.host.is_some() {
                    return Err(HeadError::DuplicateHost);
                }
                if !valid_host(value, true) {
                    return Err(HeadError::BadHost);
                }
                head.host = Some(Span::within(buf, value));
            }
            Kind::Other if memchr::memchr(b'_', name).is_some() && underscore_framing(name) => {
                return Err(HeadError::UnderscoreField);
            }
            Kind::Connection => connection.read(value),
            Kind::Expect => {
                if !value.eq_ignore_ascii_case(b"100-continue") {
                    return Err(HeadError::Expectation);
                }
                head.expect_continue = true;
            }
            Kind::Hop => {
                let hops = fields::decimal(value).and_then(|n| u8::try_from(n).ok());
                if head.hop.is_some() || hops.is_none() {
                    return Err(HeadError::BadHop);
                }
                head.hop = hops;
            }
            Kind::Authorization => head.authorization = true,
            _ => {}
        }
        head.fields.push(Field {
            name: Span::within(buf, name),
            value: Span::within(buf, value),
            kind,
        });
    }
    if chunked && length.is_some() {
        return Err(HeadError::LengthAndChunked);
    }
    if chunked && minor == 0 {
        return Err(HeadError::TransferEncodingInHttp10);
    }
    if minor == 1 && head.host.is_none() {
        return Err(HeadError::MissingHost);
    }
    if connection.names_fields {
        fields::mark_named(buf, &mut head.fields, |kind| {
            kind.is_plain()
                || matches!(
                    kind,
                    Kind::Conditional | Kind::Authorization | Kind::CacheControl
                )
        });
    }
    head.body = match (chunked, length) {
        (true, _) => BodyKind::Chunked,
        (false, Some(n)) if n > 0 => BodyKind::Length(n),
        _ => BodyKind::None,
    };
    head.close = connection.closes(minor);
    Ok(true)
}

/// Limits on a head that is not complete: a request line that is already too long is 414,
/// a head that already fills the head limit is 431.
fn check_partial(buf: &[u8], limits: &Limits) -> Result<(), HeadError> {
    let line = memchr::memchr(b'\n', buf).unwrap_or(buf.len());
    if line > limits.uri_bytes + REQUEST_LINE_SLACK {
        return Err(HeadError::UriTooLong);
    }
    if buf.len() >= limits.head_bytes {
        return Err(HeadError::HeadTooLarge);
    }
    Ok(())
}

/// Origin-form (`/path`), absolute-form (`http://host/path`), or `OPTIONS *`. For
/// absolute-form: its authority and where the path starts (the target's length when it has
/// no path: `http://h?q` is `/?q`).
fn check_target<'a>(
    method: &str,
    target: &'a [u8],
) -> Result<Option<(&'a [u8], usize)>, HeadError> {
    if method == "CONNECT" {
        return Err(HeadError::Connect);
    }
    if target.starts_with(b"/") || (target == b"*" && method == "OPTIONS") {
        return Ok(None);
    }
    let scheme = [&b"http://"[..], b"https://"]
        .into_iter()
        .find(|s| target.len() > s.len() && target[..s.len()].eq_ignore_ascii_case(s))
        .ok_or(HeadError::BadTarget)?;
    let rest = &target[scheme.len()..];
    let end = rest
        .iter()
        .position(|&b| b == b'/' || b == b'?' || b == b'#')
        .unwrap_or(rest.len());
    let authority = &rest[..end];
    if !valid_host(authority, false) {
        return Err(HeadError::BadHost);
    }
    Ok(Some((authority, scheme.len() + end)))
}

/// `host[:port]` (RFC 9110 7.2, RFC 3986 3.2.2): a reg-name or IPv4 address of unreserved,
/// percent-encoded and sub-delim characters, or a bracketed IP literal, then an optional
/// decimal port. No userinfo, no path characters, nothing that would let two different
/// requests build the same cache key. `empty`: an empty value is allowed (RFC 9112 3.2: a
/// request whose target has no authority sends an empty `Host`).
pub fn valid_host(value: &[u8], empty: bool) -> bool {
    if value.is_empty() {
        return empty;
    }
    let (host, port) = if value.starts_with(b"[") {
        let Some(close) = memchr::memchr(b']', value) else {
            return false;
        };
        let literal = &value[1..close];
        if literal.is_empty()
            || !literal
                .iter()
                .all(|&b| b.is_ascii_hexdigit() || matches!(b, b':' | b'.' | b'v' | b'V'))
        {
            return false;
        }
        match &value[close + 1..] {
            [] => (&value[..=close], None),
            [b':', port @ ..] => (&value[..=close], Some(port)),
            _ => return false,
        }
    } else {
        match memchr::memrchr(b':', value) {
            Some(i) => (&value[..i], Some(&value[i + 1..])),
            None => (value, None),
        }
    };
    let reg_name = |b: &u8| {
        b.is_ascii_alphanumeric()
            || matches!(
                b,
                b'-' | b'.'
                    | b'_'
                    | b'~'
                    | b'%'
                    | b'!'
                    | b'$'
                    | b'&'
                    | b'\''
                    | b'('
                    | b')'
                    | b'*'
                    | b'+'
                    | b','
                    | b';'
                    | b'='
            )
    };
    !host.is_empty()
        && (host.starts_with(b"[") || host.iter().all(reg_name))
        && port.is_none_or(|p| p.len() <= 5 && p.iter().all(u8::is_ascii_digit))
}

/// True when `name` (which contains `_`) reads as a field the proxy frames or writes itself
/// once `_` is taken for `-`, as CGI-style back ends do (`Transfer_Encoding` becomes
/// `HTTP_TRANSFER_ENCODING`, the same as `Transfer-Encoding`; `X_Forwarded_For` would
/// smuggle a client address past the one the proxy appends).
fn underscore_framing(name: &[u8]) -> bool {
    const FRAMING: [&[u8]; 3] = [b"content-length", b"transfer-encoding", b"x-forwarded-for"];
    FRAMING.iter().any(|f| {
        f.len() == name.len()
            && f.iter().zip(name).all(|(&f, &n)| {
                let n = if n == b'_' {
                    b'-'
                } else {
                    n.to_ascii_lowercase()
                };
                f == n
            })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_all(buf: &[u8]) -> Result<RequestHead, HeadError> {
        let mut head = RequestHead::default();
        match parse(buf, &Limits::default(), &mut head)? {
            true => Ok(head),
            false => panic!("incomplete: {:?}", String::from_utf8_lossy(buf)),
        }
    }

    fn status(buf: &[u8]) -> u16 {
        parse_all(buf).map_or_else(|e| e.status(), |_| 200)
    }

    #[test]
    fn simple_get_with_pipelined_rest() {
        let buf = b"GET /a?b=c HTTP/1.1\r\nHost: h\r\nX-Y: z\r\n\r\nGET /next";
        let head = parse_all(buf).unwrap();
        assert_eq!(head.len, buf.len() - 9);
        assert_eq!(head.target(buf), b"/a?b=c");
        assert_eq!(head.host(buf), Some(&b"h"[..]));
        assert_eq!(head.method, Method::Get);
        assert_eq!(head.body, BodyKind::None);
        assert!(!head.close);
        assert_eq!(head.fields().len(), 2);
    }

    #[test]
    fn keep_alive_rules_by_version() {
        assert!(parse_all(b"GET / HTTP/1.0\r\n\r\n").unwrap().close);
        assert!(
            !parse_all(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
                .unwrap()
                .close
        );
        assert!(
            parse_all(b"GET / HTTP/1.1\r\nHost: h\r\nConnection: Foo, close\r\n\r\n")
                .unwrap()
                .close
        );
    }

    #[test]
    fn incomplete_heads_are_bounded() {
        let limits = Limits {
            head_bytes: 64,
            headers: 4,
            uri_bytes: 16,
        };
        let mut head = RequestHead::default();
        assert_eq!(
            parse(b"GET / HTTP/1.1\r\nHo", &limits, &mut head),
            Ok(false)
        );
        let long_line = [b'a'; 60];
        let mut buf = b"GET /".to_vec();
        buf.extend_from_slice(&long_line);
        assert_eq!(parse(&buf, &limits, &mut head), Err(HeadError::UriTooLong));
        let mut buf = b"GET / HTTP/1.1\r\nHost: h\r\nX: ".to_vec();
        buf.extend_from_slice(&long_line);
        assert_eq!(
            parse(&buf, &limits, &mut head),
            Err(HeadError::HeadTooLarge)
        );
        let many = b"GET / HTTP/1.1\r\nA: 1\r\nB: 1\r\nC: 1\r\nD: 1\r\nE: 1\r\n\r\n";
        assert_eq!(
            parse(many, &limits, &mut head),
            Err(HeadError::TooManyHeaders)
        );
    }

    #[test]
    fn smuggling_vectors_are_refused() {
        let cases: &[(&[u8], u16)] = &[
            (b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
            (b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n", 400),
            (b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 4\r\nContent-Length: 4\r\n\r\n", 400),
            (b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\n", 400),
            (b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 4, 4\r\n\r\n", 400),
            (b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: +4\r\n\r\n", 400),
            (b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked, identity\r\n\r\n", 400),
            (b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: identity\r\n\r\n", 400),
            (b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
            (b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding:\r\n chunked\r\n\r\n", 400),
            (b"POST / HTTP/1.1\r\nHost: h\r\nX: a\r\n chunked\r\n\r\n", 400),
            (b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding : chunked\r\n\r\n", 400),
            (b"POST / HTTP/1.1\nHost: h\nContent-Length: 4\n\n", 400),
            (b"POST / HTTP/1.1\r\nHost: h\nContent-Length: 4\r\n\r\n", 400),
            (b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
            (b"GET / HTTP/1.1\r\n\r\n", 400),
            (b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
            (b"GET foo HTTP/1.1\r\nHost: a\r\n\r\n", 400),
            (b"CONNECT a:443 HTTP/1.1\r\nHost: a\r\n\r\n", 501),
            (b"GET / HTTP/2.0\r\nHost: a\r\n\r\n", 505),
            (b"PUT / HTTP/1.1\r\nHost: a\r\nExpect: 200-ok\r\n\r\n", 417),
            (b"GET / HTTP/1.1\r\nHost: a\r\nX-Dl7-Hop: 300\r\n\r\n", 400),
            (b"GET / HTTP/1.1\r\nHost: a\r\nX: \x01\r\n\r\n", 400),
            // Obfuscated framing fields.
            (b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding\t: chunked\r\n\r\n", 400),
            (b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: \x0bchunked\r\n\r\n", 400),
            (b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: \"chunked\"\r\n\r\n", 400),
            (b"POST / HTTP/1.1\r\nHost: h\r\nTransfer_Encoding: chunked\r\n\r\n", 400),
            (b"POST / HTTP/1.1\r\nHost: h\r\nContent_Length: 4\r\n\r\n", 400),
            (b"GET / HTTP/1.1\r\nHost: h\r\nhost_: x\r\n\r\n", 200),
            (b"GET / HTTP/1.1\r\nHost: h\r\nHOST: x\r\n\r\n", 400),
            (b"GET / HTTP/1.1\r\nHost: h\r\nHo_st: x\r\n\r\n", 200),
            (b"GET / HTTP/1.1\r\nHost: h\r\nConnection_: x\r\n\r\n", 200),
            (b"GET / HTTP/1.1\r\nHost: h\r\nX_Forwarded_For: 10.0.0.1\r\n\r\n", 400),
            (b"GET / HTTP/1.1\r\nHost: h\r\nContent-Length_: 1\r\n\r\n", 200),
            (b"GET / HTTP/1.1\r\nhost: h\r\nCONNECTION_x: x\r\n\r\n", 200),
            (b"GET / HTTP/1.1\r\nHost: h\r\nconnection: close\r\nCONNECTION: x\r\n\r\n", 200),
            (b"POST / HTTP/1.1\r\nHost: h\r\n\x20Transfer-Encoding: chunked\r\n\r\n", 400),
            // Host values that would make two requests share a cache key.
            (b"GET /T/page HTTP/1.1\r\nHost: good/p/slash\r\n\r\n", 400),
            (b"GET / HTTP/1.1\r\nHost: good?x\r\n\r\n", 400),
            (b"GET / HTTP/1.1\r\nHost: good#x\r\n\r\n", 400),
            (b"GET / HTTP/1.1\r\nHost: user@good\r\n\r\n", 400),
            (b"GET / HTTP/1.1\r\nHost: good bad\r\n\r\n", 400),
            (b"GET / HTTP/1.1\r\nHost: good:80x\r\n\r\n", 400),
            (b"GET / HTTP/1.1\r\nHost: [::1\r\n\r\n", 400),
            (b"GET / HTTP/1.1\r\nHost: \xc3\xa9\r\n\r\n", 400),
            (b"GET http://user@good/x HTTP/1.1\r\nHost: good\r\n\r\n", 400),
            (b"GET http:///x HTTP/1.1\r\nHost: good\r\n\r\n", 400),
            (b"GET http://go%2fod/x HTTP/1.1\r\nHost: h\r\n\r\n", 200),
        ];
        for (req, want) in cases {
            assert_eq!(status(req), *want, "{:?}", String::from_utf8_lossy(req));
        }
    }

    #[test]
    fn accepted_forms() {
        let head = parse_all(b"POST http://h/x HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: Chunked\r\nExpect: 100-continue\r\nX-Dl7-Hop: 1\r\n\r\n").unwrap();
        assert_eq!(head.body, BodyKind::Chunked);
        assert!(head.expect_continue);
        assert_eq!(head.hop, Some(1));
        assert_eq!(status(b"OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n"), 200);
        assert_eq!(status(b"\r\nGET / HTTP/1.1\r\nHost: h\r\n\r\n"), 200);
        let zero = parse_all(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n").unwrap();
        assert_eq!(zero.body, BodyKind::None);
        // Tabs are optional whitespace around a value; a value that merely mentions a framing
        // field is just a value.
        let tab = parse_all(b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding:\tchunked\t\r\n\r\n")
            .unwrap();
        assert_eq!(tab.body, BodyKind::Chunked);
        let inner = parse_all(b"POST / HTTP/1.1\r\nHost: h\r\nX: X\tTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n").unwrap();
        assert_eq!(inner.body, BodyKind::Length(3));
        for host in [
            "a.b-c_d~e",
            "127.0.0.1:8080",
            "[::1]:80",
            "[fe80::1]",
            "x%41y",
            "",
        ] {
            let req = format!("GET / HTTP/1.1\r\nHost: {host}\r\n\r\n");
            assert_eq!(status(req.as_bytes()), 200, "{host:?}");
        }
    }

    #[test]
    fn authority_and_origin_form() {
        let buf = b"GET http://Good:81?q HTTP/1.1\r\nHost: evil\r\n\r\n";
        let head = parse_all(buf).unwrap();
        assert!(head.is_absolute());
        assert_eq!(head.authority(buf), Some(&b"Good:81"[..]));
        assert_eq!(head.path_and_query(buf), b"?q");
        let buf = b"GET https://g/x/y HTTP/1.1\r\nHost: g\r\n\r\n";
        let head = parse_all(buf).unwrap();
        assert_eq!(head.path_and_query(buf), b"/x/y");
        let buf = b"GET /x HTTP/1.1\r\nHost: h\r\n\r\n";
        let head = parse_all(buf).unwrap();
        assert!(!head.is_absolute());
        assert_eq!(head.authority(buf), Some(&b"h"[..]));
        assert_eq!(head.path_and_query(buf), b"/x");
        let buf = b"GET /x HTTP/1.0\r\n\r\n";
        assert_eq!(parse_all(buf).unwrap().authority(buf), None);
    }

    #[test]
    fn connection_names_fields_but_not_framing_or_host() {
        let buf = b"GET / HTTP/1.1\r\nHost: h\r\nConnection: X-A, Host, X-Forwarded-For\r\nX-A: 1\r\nX-Forwarded-For: 1.2.3.4\r\n\r\n";
        let head = parse_all(buf).unwrap();
        let kinds: Vec<Kind> = head.fields().iter().map(|f| f.kind).collect();
        assert_eq!(
            kinds,
            [
                Kind::Host,
                Kind::Connection,
                Kind::Named,
                Kind::ForwardedFor
            ]
        );
    }

    /// Random bytes and random mutations of valid heads never panic, and a complete head's
    /// ranges stay inside the buffer (the same property the fuzz target checks).
    #[test]
    fn random_input_never_panics() {
        let seeds: [&[u8]; 3] = [
            b"GET /a HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabc",
            b"POST http://x/y HTTP/1.0\r\nConnection: keep-alive\r\nX-Dl7-Hop: 2\r\n\r\n",
            b"PUT / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nExpect: 100-continue\r\n\r\n",
        ];
        let mut rng = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = move || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        let limits = Limits {
            head_bytes: 256,
            headers: 8,
            uri_bytes: 64,
        };
        let mut head = RequestHead::default();
        for i in 0..20_000 {
            let mut buf = seeds[i % seeds.len()].to_vec();
            for _ in 0..(next() % 6) {
                let pos = (next() as usize) % (buf.len() + 1);
                match next() % 3 {
                    0 if pos < buf.len() => buf[pos] = next() as u8,
                    1 => buf.insert(pos, b"\r\n: ,\t\x00"[(next() % 7) as usize]),
                    _ if pos < buf.len() => {
                        buf.remove(pos);
                    }
                    _ => {}
                }
            }
            if i % 10 == 0 {
                buf = (0..next() % 300).map(|_| next() as u8).collect();
            }
            if let Ok(true) = parse(&buf, &limits, &mut head) {
                assert!(head.len <= buf.len());
                let _ = (head.target(&buf), head.host(&buf), head.method_bytes(&buf));
                for f in head.fields() {
                    let _ = (f.name.of(&buf), f.value.of(&buf));
                }
            }
        }
    }
}
