//! The heads a proxy sends on, built in one pass into a reused buffer.
//!
//! Upstream (to a peer, backend, origin or local upstream): the request line with the target
//! as received (in origin-form when it goes to an origin server, RFC 9112 3.2.1) and
//! `HTTP/1.1`; `Host` first, naming the authority of an absolute-form target rather than the
//! `Host` received with it (RFC 9112 3.2.2), or a default when an HTTP/1.0 request had none
//! (the peer's view of the request must be the same as this server's); every end-to-end field; `Via` with `1.1 <name>` appended,
//! `X-Forwarded-For` with the client address appended, `X-Forwarded-Proto` with the scheme the
//! client connected with (replacing the client's own; a peer's passes through), dl7's hop
//! field with the new hop count; the body's framing written anew. Hop-by-hop fields (RFC 9110 7.6.1), `Expect`
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
    /// `X-Forwarded-Proto` (`http`, `https`), replacing any received; `None`: the received
    /// ones pass through (the request came from a trusted peer sidecar).
    pub proto: Option<&'a [u8]>,
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
            Kind::ForwardedProto => stamp.proto.is_some(),
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
    if let Some(proto) = stamp.proto {
        out.put_slice(b"X-Forwarded-Proto: ");
        out.put_slice(proto);
        out.put_slice(b"\r\n");
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
        proto: None,
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
            proto: Some(b"http"),
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
            proto: Some(b"https"),
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
