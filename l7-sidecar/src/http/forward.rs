//! The heads a proxy sends on, built in one pass into a reused buffer.
//!
//! Upstream (to a peer, backend, origin or local upstream): the request line with the target
//! as received (in origin-form when it goes to an origin server, RFC 9112 3.2.1) and
//! `HTTP/1.1`; `Host` first, naming the authority of an absolute-form target rather than the
//! `Host` received with it (RFC 9112 3.2.2), or a default when an HTTP/1.0 request had none
//! (the peer's view of the request must be the same as this server's); every end-to-end field; `Via` with `1.1 <name>` appended,
//! `X-Forwarded-For` with the client address appended, `X-Forwarded-Proto` with the scheme the
//! client connected with and, when configured, the client's TLS facts (both replacing the
//! client's own, [`Vouched`]; a peer's pass through), dl7's hop field with the new hop count;
//! the body's framing written anew. Hop-by-hop fields (RFC 9110 7.6.1), `Expect`
//! (the sidecar answers it) and the old framing fields are not sent; cache fills also drop
//! `If-*` and `Range`, since what they fetch must be the whole object.
//!
//! Downstream (to the client): `HTTP/1.1`, status and reason as received; end-to-end fields;
//! `Via` appended; framing and `Connection` as the client connection needs them.

use bytes::{BufMut, BytesMut};

use super::date;
use super::fields::Field;
use super::fields::{self, Kind};
use super::request::{BodyKind, RequestHead};
use super::response::ResponseHead;

/// What the sidecar adds to a request it forwards.
#[derive(Debug, Clone, Copy)]
pub struct Stamp<'a> {
    /// This proxy in `Via`, e.g. `1.1 dl7`.
    pub via: &'a [u8],
    /// The client's address for `X-Forwarded-For`.
    pub client: &'a [u8],
    /// What the sidecar says of the client's connection, replacing what the request says;
    /// `None`: the received fields pass through (the request came from a trusted peer
    /// sidecar).
    pub vouched: Option<Vouched<'a>>,
    /// Hop count to send in dl7's hop field.
    pub hops: u8,
    /// The `Host` value sent when the request has no authority (HTTP/1.0 without `Host`):
    /// empty to a peer (RFC 9112 3.2: an empty `Host` for a target without authority), the
    /// origin's own authority to an origin.
    pub default_host: &'a [u8],
    /// Write an absolute-form target in origin-form (the destination is an origin server).
    pub origin_form: bool,
    /// A `Surrogate-Capability` value to announce (the embedded cache to its origin), or
    /// empty.
    pub capability: &'a [u8],
}

/// What the sidecar writes about the client's connection in fields of its own, in place of
/// every field of those names the request carries, so that clients cannot forge them: the
/// scheme in `X-Forwarded-Proto`, and the TLS facts in the fields `tls-sni-header` and
/// `tls-protocol-header` name. Only for requests from clients: a request from a peer sidecar
/// keeps the forwarding sidecar's fields (peers are trusted, clients are not).
#[derive(Debug, Clone, Copy)]
pub struct Vouched<'a> {
    /// `X-Forwarded-Proto`: `http` or `https`, as the client connected.
    pub proto: &'a [u8],
    /// The TLS facts' fields, those configured (SNI, then protocol).
    pub facts: [Option<Fact<'a>>; 2],
}

/// A field that carries one TLS fact of the client's connection.
#[derive(Debug, Clone, Copy)]
pub struct Fact<'a> {
    /// The field's name, as configured.
    pub name: &'a [u8],
    /// The fact; `None` when the connection has none (plain HTTP, a TLS client that sent no
    /// SNI): the field is not sent.
    pub value: Option<&'a [u8]>,
}

impl<'a> Vouched<'a> {
    /// Whether a received field named `name` is a TLS fact's and is dropped; `_` counts as
    /// `-` ([`fields::same_name`]), since back ends that read it so would take
    /// `X_TLS_SNI` for `X-TLS-SNI`.
    fn replaces(&self, name: &[u8]) -> bool {
        self.facts
            .iter()
            .flatten()
            .any(|f| fields::same_name(f.name, name))
    }

    /// What is sent upstream in the field `name` when the sidecar writes that field itself:
    /// its value, or `Some(None)` when the request's is dropped and none is sent. `None`: the
    /// request's values of `name` are sent.
    pub fn sent(&self, name: &[u8]) -> Option<Option<&'a [u8]>> {
        if name.eq_ignore_ascii_case(b"X-Forwarded-Proto") {
            return Some(Some(self.proto));
        }
        self.facts
            .iter()
            .flatten()
            .find(|f| fields::same_name(f.name, name))
            .map(|f| f.value)
    }
}

/// How the body of a response to the client is framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Length {
    /// A response without a body: `Content-Length` passes through as received (after
    /// `HEAD` it describes the body a `GET` would get).
    AsReceived,
    /// `Content-Length: n`.
    Exactly(u64),
    /// `Transfer-Encoding: chunked` (HTTP/1.1 clients, length unknown in advance).
    Chunked,
    /// Delimited by closing the connection (HTTP/1.0 clients, length unknown in advance).
    Close,
}

/// The `Connection` field of a response to the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Connection {
    /// Nothing (HTTP/1.1 keeps the connection by default).
    Default,
    /// `Connection: close`.
    Close,
    /// `Connection: keep-alive` (an HTTP/1.0 client asked for it).
    KeepAlive,
}

/// Appends the request head to send upstream. `fill`: this is a cache fill (drop `If-*`,
/// `Range`).
pub fn request(out: &mut BytesMut, head: &RequestHead, buf: &[u8], stamp: &Stamp<'_>, fill: bool) {
    out.put_slice(head.method_bytes(buf));
    out.put_u8(b' ');
    if stamp.origin_form && head.is_absolute() {
        let path = head.path_and_query(buf);
        if !path.starts_with(b"/") {
            out.put_u8(b'/');
        }
        out.put_slice(path);
    } else {
        out.put_slice(head.target(buf));
    }
    out.put_slice(b" HTTP/1.1\r\nHost: ");
    let authority = head.authority(buf).filter(|a| !a.is_empty());
    out.put_slice(authority.unwrap_or(stamp.default_host));
    out.put_slice(b"\r\n");
    for f in head.fields() {
        let skip = match f.kind {
            Kind::ContentLength
            | Kind::Expect
            | Kind::Hop
            | Kind::Via
            | Kind::ForwardedFor
            | Kind::Host => true,
            Kind::ForwardedProto => stamp.vouched.is_some(),
            Kind::Other => stamp.vouched.is_some_and(|v| v.replaces(f.name.of(buf))),
            Kind::Conditional => fill,
            kind => kind.is_hop_by_hop(),
        };
        if !skip {
            field(out, f, buf);
        }
    }
    appended(out, b"Via: ", head.fields(), Kind::Via, buf, stamp.via);
    if !stamp.capability.is_empty() {
        out.put_slice(b"Surrogate-Capability: ");
        out.put_slice(stamp.capability);
        out.put_slice(b"\r\n");
    }
    appended(
        out,
        b"X-Forwarded-For: ",
        head.fields(),
        Kind::ForwardedFor,
        buf,
        stamp.client,
    );
    if let Some(vouched) = &stamp.vouched {
        out.put_slice(b"X-Forwarded-Proto: ");
        out.put_slice(vouched.proto);
        out.put_slice(b"\r\n");
        for fact in vouched.facts.iter().flatten() {
            if let Some(value) = fact.value {
                out.put_slice(fact.name);
                out.put_slice(b": ");
                out.put_slice(value);
                out.put_slice(b"\r\n");
            }
        }
    }
    let mut n = itoa::Buffer::new();
    out.put_slice(fields::HOP.as_bytes());
    out.put_slice(b": ");
    out.put_slice(n.format(stamp.hops).as_bytes());
    out.put_slice(b"\r\n");
    match head.body {
        BodyKind::None => {}
        BodyKind::Length(len) => {
            out.put_slice(b"Content-Length: ");
            out.put_slice(n.format(len).as_bytes());
            out.put_slice(b"\r\n");
        }
        BodyKind::Chunked => out.put_slice(b"Transfer-Encoding: chunked\r\n"),
    }
    out.put_slice(b"\r\n");
}

/// Appends `HTTP/1.1`, the status and reason as received, and the line's end.
fn status_line(out: &mut BytesMut, head: &ResponseHead, buf: &[u8]) {
    let mut n = itoa::Buffer::new();
    out.put_slice(b"HTTP/1.1 ");
    out.put_slice(n.format(head.status).as_bytes());
    out.put_u8(b' ');
    out.put_slice(head.reason(buf));
    out.put_slice(b"\r\n");
}

/// Appends an interim response for the client (`103 Early Hints`), whole: its status line and
/// end-to-end fields, and the empty line.
pub fn interim(out: &mut BytesMut, head: &ResponseHead, buf: &[u8]) {
    status_line(out, head, buf);
    for f in head.fields() {
        if !f.kind.is_hop_by_hop() && f.kind != Kind::ContentLength {
            field(out, f, buf);
        }
    }
    out.put_slice(b"\r\n");
}

/// Appends the response head for the client, without `Connection` and the final empty line
/// (see [`finish`]): cached heads are stored in this form.
pub fn response(out: &mut BytesMut, head: &ResponseHead, buf: &[u8], via: &[u8], length: Length) {
    response_with(out, head, buf, via, length, |_| false);
}

/// The head a cache stores: as [`response`] without a length (the cache writes the stored
/// body's), without `Age` (the cache writes the current one whenever it serves the entry), and
/// with a `Date` of `arrived` when the origin sent none (RFC 9110 6.6.1).
pub fn stored(out: &mut BytesMut, head: &ResponseHead, buf: &[u8], via: &[u8], arrived: u64) {
    response_with(out, head, buf, via, Length::Close, |kind| kind == Kind::Age);
    if !head.fields().iter().any(|f| f.kind == Kind::Date) {
        out.put_slice(b"Date: ");
        out.put_slice(&date::format(arrived));
        out.put_slice(b"\r\n");
    }
}

/// [`response`], also leaving out the fields for which `drop` holds.
fn response_with(
    out: &mut BytesMut,
    head: &ResponseHead,
    buf: &[u8],
    via: &[u8],
    length: Length,
    drop: impl Fn(Kind) -> bool,
) {
    status_line(out, head, buf);
    let mut n = itoa::Buffer::new();
    for f in head.fields() {
        let skip = match f.kind {
            // RFC 9110 8.6: never in a 204.
            Kind::ContentLength => length != Length::AsReceived || head.status == 204,
            Kind::Via => true,
            kind => kind.is_hop_by_hop() || drop(kind),
        };
        if !skip {
            field(out, f, buf);
        }
    }
    appended(out, b"Via: ", head.fields(), Kind::Via, buf, via);
    match length {
        Length::AsReceived | Length::Close => {}
        Length::Exactly(len) => {
            out.put_slice(b"Content-Length: ");
            out.put_slice(n.format(len).as_bytes());
            out.put_slice(b"\r\n");
        }
        Length::Chunked => out.put_slice(b"Transfer-Encoding: chunked\r\n"),
    }
}

/// Appends `Connection` as needed and the empty line that ends a head.
pub fn finish(out: &mut BytesMut, connection: Connection) {
    out.put_slice(match connection {
        Connection::Default => &b"\r\n"[..],
        Connection::Close => b"Connection: close\r\n\r\n",
        Connection::KeepAlive => b"Connection: keep-alive\r\n\r\n",
    });
}

fn field(out: &mut BytesMut, f: &Field, buf: &[u8]) {
    out.put_slice(f.name.of(buf));
    out.put_slice(b": ");
    out.put_slice(f.value.of(buf));
    out.put_slice(b"\r\n");
}

/// Writes `name` with the values of every field of `kind` and then `ours`, comma separated.
fn appended(out: &mut BytesMut, name: &[u8], all: &[Field], kind: Kind, buf: &[u8], ours: &[u8]) {
    out.put_slice(name);
    for f in all.iter().filter(|f| f.kind == kind) {
        let value = f.value.of(buf);
        if !value.is_empty() {
            out.put_slice(value);
            out.put_slice(b", ");
        }
    }
    out.put_slice(ours);
    out.put_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::request::{self, Limits};
    use crate::http::response as resp;

    const STAMP: Stamp<'static> = Stamp {
        via: b"1.1 dl7",
        client: b"192.0.2.7",
        vouched: None,
        hops: 1,
        default_host: b"",
        origin_form: false,
        capability: b"",
    };

    fn forwarded(buf: &[u8], stamp: &Stamp<'_>) -> String {
        let mut head = RequestHead::default();
        assert!(request::parse(buf, &Limits::default(), &mut head).unwrap());
        let mut out = BytesMut::new();
        request(&mut out, &head, buf, stamp, false);
        String::from_utf8(out.to_vec()).unwrap()
    }

    #[test]
    fn host_follows_the_target_and_defaults() {
        let abs = b"GET http://good/x?y HTTP/1.1\r\nHost: evil\r\nX: 1\r\n\r\n";
        let to_peer = forwarded(abs, &STAMP);
        assert!(
            to_peer.starts_with("GET http://good/x?y HTTP/1.1\r\nHost: good\r\nX: 1\r\n"),
            "{to_peer}"
        );
        assert!(!to_peer.contains("evil"));
        let origin = Stamp {
            default_host: b"origin:8080",
            origin_form: true,
            ..STAMP
        };
        let to_origin = forwarded(abs, &origin);
        assert!(to_origin.starts_with("GET /x?y HTTP/1.1\r\nHost: good\r\n"));
        let bare = forwarded(b"GET http://good?q HTTP/1.1\r\nHost: good\r\n\r\n", &origin);
        assert!(bare.starts_with("GET /?q HTTP/1.1\r\n"), "{bare}");
        let http10 = b"GET /x HTTP/1.0\r\n\r\n";
        assert!(forwarded(http10, &STAMP).starts_with("GET /x HTTP/1.1\r\nHost: \r\n"));
        assert!(forwarded(http10, &origin).starts_with("GET /x HTTP/1.1\r\nHost: origin:8080\r\n"));
        // The same request after a peer forwarded it with an empty Host.
        let empty = b"GET /x HTTP/1.1\r\nHost: \r\n\r\n";
        assert!(forwarded(empty, &origin).starts_with("GET /x HTTP/1.1\r\nHost: origin:8080\r\n"));
    }

    #[test]
    fn request_drops_hop_by_hop_and_appends() {
        let buf = b"POST /x HTTP/1.1\r\nHost: h\r\nConnection: keep-alive, X-Secret\r\nX-Secret: s\r\nKeep-Alive: 5\r\nTE: trailers\r\nUpgrade: h2c\r\nExpect: 100-continue\r\nVia: 1.0 a\r\nX-Forwarded-For: 10.0.0.1\r\nIf-None-Match: \"e\"\r\nTransfer-Encoding: chunked\r\n\r\n";
        let mut head = RequestHead::default();
        assert!(request::parse(buf, &Limits::default(), &mut head).unwrap());
        let mut out = BytesMut::new();
        request(&mut out, &head, buf, &STAMP, false);
        assert_eq!(
            std::str::from_utf8(&out).unwrap(),
            "POST /x HTTP/1.1\r\nHost: h\r\nIf-None-Match: \"e\"\r\nVia: 1.0 a, 1.1 dl7\r\n\
             X-Forwarded-For: 10.0.0.1, 192.0.2.7\r\nX-Dl7-Hop: 1\r\nTransfer-Encoding: chunked\r\n\r\n"
        );
        out.clear();
        request(&mut out, &head, buf, &STAMP, true);
        assert!(!out.windows(7).any(|w| w == b"If-None"));
    }

    #[test]
    fn forwarded_proto_is_replaced_for_clients_and_kept_from_peers() {
        let buf = b"GET /x HTTP/1.1\r\nHost: h\r\nX-Forwarded-Proto: https\r\nx-forwarded-proto: ftp\r\n\r\n";
        let from_client = Stamp {
            vouched: Some(Vouched {
                proto: b"http",
                facts: [None, None],
            }),
            ..STAMP
        };
        let sent = forwarded(buf, &from_client);
        assert_eq!(
            sent.matches("X-Forwarded-Proto: http\r\n").count(),
            1,
            "{sent}"
        );
        assert!(!sent.contains("https") && !sent.contains("ftp"), "{sent}");
        let over_tls = Stamp {
            vouched: Some(Vouched {
                proto: b"https",
                facts: [None, None],
            }),
            ..STAMP
        };
        let sent = forwarded(b"GET /x HTTP/1.1\r\nHost: h\r\n\r\n", &over_tls);
        assert!(sent.contains("\r\nX-Forwarded-Proto: https\r\n"), "{sent}");
        // From a peer (proto None): what the forwarding sidecar wrote passes through.
        let sent = forwarded(
            b"GET /x HTTP/1.1\r\nHost: h\r\nX-Forwarded-Proto: https\r\n\r\n",
            &STAMP,
        );
        assert_eq!(sent.matches("X-Forwarded-Proto").count(), 1, "{sent}");
        assert!(sent.contains("X-Forwarded-Proto: https\r\n"), "{sent}");
    }

    /// The TLS facts' fields as configured (`X-TLS-SNI`, `X-TLS-Protocol`) with `sni` and
    /// `protocol`, for a request from a client that connected with `proto`.
    fn vouched<'a>(
        proto: &'a [u8],
        sni: Option<&'a [u8]>,
        protocol: Option<&'a [u8]>,
    ) -> Vouched<'a> {
        Vouched {
            proto,
            facts: [
                Some(Fact {
                    name: b"X-TLS-SNI",
                    value: sni,
                }),
                Some(Fact {
                    name: b"X-TLS-Protocol",
                    value: protocol,
                }),
            ],
        }
    }

    /// A request whose client tries to forge the facts, in several spellings.
    const FORGED: &[u8] = b"GET /x HTTP/1.1\r\nHost: h\r\nx-tls-sni: evil.test\r\nX-Other: 1\r\n\
        X_TLS_SNI: evil2.test\r\nX-TLS-Protocol: SSLv3\r\nX-TLS-SNIX: kept\r\n\r\n";

    #[test]
    fn tls_facts_replace_what_a_tls_client_sent() {
        let stamp = Stamp {
            vouched: Some(vouched(b"https", Some(b"a.test"), Some(b"TLSv1.3"))),
            ..STAMP
        };
        let sent = forwarded(FORGED, &stamp);
        assert_eq!(
            sent,
            "GET /x HTTP/1.1\r\nHost: h\r\nX-Other: 1\r\nX-TLS-SNIX: kept\r\nVia: 1.1 dl7\r\n\
             X-Forwarded-For: 192.0.2.7\r\nX-Forwarded-Proto: https\r\nX-TLS-SNI: a.test\r\n\
             X-TLS-Protocol: TLSv1.3\r\nX-Dl7-Hop: 1\r\n\r\n"
        );
        // No SNI (the client connected to an IP address): that field is left out.
        let no_sni = Stamp {
            vouched: Some(vouched(b"https", None, Some(b"TLSv1.2"))),
            ..STAMP
        };
        let sent = forwarded(FORGED, &no_sni);
        assert!(!sent.to_ascii_lowercase().contains("sni:"), "{sent}");
        assert!(sent.contains("\r\nX-TLS-Protocol: TLSv1.2\r\n"), "{sent}");
        assert!(!sent.contains("evil") && !sent.contains("SSLv3"), "{sent}");
    }

    #[test]
    fn tls_facts_are_removed_from_plain_clients_and_kept_from_peers() {
        let plain = Stamp {
            vouched: Some(vouched(b"http", None, None)),
            ..STAMP
        };
        let sent = forwarded(FORGED, &plain);
        assert!(!sent.to_ascii_lowercase().contains("x-tls-sni:"), "{sent}");
        assert!(
            !sent.contains("X_TLS_SNI") && !sent.contains("Protocol"),
            "{sent}"
        );
        assert!(sent.contains("X-TLS-SNIX: kept\r\n"), "{sent}");
        // From a peer: what the forwarding sidecar wrote passes through, nothing is added.
        let sent = forwarded(FORGED, &STAMP);
        for line in [
            "x-tls-sni: evil.test",
            "X_TLS_SNI: evil2.test",
            "X-TLS-Protocol: SSLv3",
        ] {
            assert_eq!(sent.matches(line).count(), 1, "{line}: {sent}");
        }
        // Not configured: a client's fields of those names are just fields.
        let unconfigured = Stamp {
            vouched: Some(Vouched {
                proto: b"https",
                facts: [None, None],
            }),
            ..STAMP
        };
        assert!(forwarded(FORGED, &unconfigured).contains("x-tls-sni: evil.test\r\n"));
    }

    #[test]
    fn vouched_fields_say_what_is_sent() {
        let v = vouched(b"https", None, Some(b"TLSv1.3"));
        assert_eq!(v.sent(b"x-forwarded-proto"), Some(Some(&b"https"[..])));
        assert_eq!(v.sent(b"x-tls-protocol"), Some(Some(&b"TLSv1.3"[..])));
        assert_eq!(v.sent(b"x-tls-sni"), Some(None));
        assert_eq!(v.sent(b"accept"), None);
    }

    #[test]
    fn response_reframes() {
        let buf = b"HTTP/1.0 200 Fine\r\nContent-Length: 3\r\nConnection: close, X-A\r\nX-A: 1\r\nETag: \"1\"\r\n\r\n";
        let mut head = resp::ResponseHead::default();
        assert!(resp::parse(buf, 1024, &mut head).unwrap());
        let mut out = BytesMut::new();
        response(&mut out, &head, buf, b"1.1 dl7", Length::Chunked);
        finish(&mut out, Connection::Default);
        assert_eq!(
            std::str::from_utf8(&out).unwrap(),
            "HTTP/1.1 200 Fine\r\nETag: \"1\"\r\nVia: 1.1 dl7\r\nTransfer-Encoding: chunked\r\n\r\n"
        );
    }
}
