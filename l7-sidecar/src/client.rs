//! `ClientIo`: the client side of one connection (socket, read buffer, reused output
//! buffers) and what the request being answered allows: its HTTP version, whether the
//! connection stays open, how its body is framed and how much of it was read. Everything
//! that writes to the client goes through here, so that keep-alive and framing decisions are
//! made in one place.
//!
//! When the request came from a peer sidecar, the peer is waiting with a first-byte timeout
//! (`peer-first-byte-timeout`) to tell a hung server from a busy one. While this server
//! waits before it has a response head (connecting to the origin, waiting for its head or
//! for another request's fill, reading a body to cache it), [`beating`] sends the peer
//! `102 Processing` at a third of that timeout: proof that this server is alive, which the
//! peer reads and drops like any interim response.

use std::future::Future;
use std::io::IoSlice;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::BytesMut;

use crate::config::TlsHeaders;
use crate::http::body::{BodyReader, Framing};
use crate::http::canned;
use crate::http::chunked;
use crate::http::forward::{Connection, Fact, Vouched};
use crate::http::request::{BodyKind, Method, RequestHead};
use crate::http::response::ResponseHead;
use crate::http::wire;
use crate::stream::ClientStream;
use crate::tls::facts::TlsFacts;

/// Initial size of a client connection's read buffer.
const READ_BUFFER: usize = 8 * 1024;

/// The interim response that tells a waiting peer this server is alive.
pub const PROCESSING: &[u8] = b"HTTP/1.1 102 Processing\r\n\r\n";

/// When the next `102 Processing` is due for the request being answered.
#[derive(Debug, Clone, Copy)]
pub struct Heartbeat {
    every: Duration,
    next: tokio::time::Instant,
}

impl Heartbeat {
    /// Beats every `every`, the first one `every` from now.
    pub fn new(every: Duration) -> Self {
        Self {
            every,
            next: tokio::time::Instant::now() + every,
        }
    }
}

/// Runs `work` to its end, sending `102 Processing` on `stream` whenever `heartbeat` is due
/// meanwhile (nothing when it is `None`). `None` when the requester could not take a beat
/// within `timeout` (it went away: the work is abandoned).
pub async fn beating<F: Future>(
    stream: &mut ClientStream,
    heartbeat: &mut Option<Heartbeat>,
    timeout: Duration,
    work: F,
) -> Option<F::Output> {
    let Some(beat) = heartbeat else {
        return Some(work.await);
    };
    let mut work = std::pin::pin!(work);
    loop {
        tokio::select! {
            biased;
            out = &mut work => return Some(out),
            () = tokio::time::sleep_until(beat.next) => {
                wire::write_one(stream, PROCESSING, timeout).await.ok()?;
                beat.next = tokio::time::Instant::now() + beat.every;
            }
        }
    }
}

/// How a request ended, for metrics and for the connection loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    /// The status sent (or being sent when the exchange broke).
    pub status: u16,
    /// The connection must be closed now.
    pub close: bool,
}

/// The client side of a connection.
#[derive(Debug)]
pub struct ClientIo {
    /// The socket, plain or TLS.
    pub stream: ClientStream,
    /// Bytes read and not consumed: the current request's body, pipelined requests.
    pub rbuf: BytesMut,
    /// Scratch for heads written to the client.
    pub out: BytesMut,
    /// Scratch for upstream response heads.
    pub resp: ResponseHead,
    /// The client's address as text, for `X-Forwarded-For`.
    pub addr: Box<[u8]>,
    /// `X-Forwarded-Proto` for the requests sent on: `http` or `https` as the client
    /// connected (clients' own values are replaced); `None` on the peer listener, where the
    /// forwarding sidecar's value passes through (peers are trusted, clients are not).
    pub proto: Option<&'static [u8]>,
    /// What the TLS handshake settled (SNI, version), read once when the connection was
    /// taken on: sent on to the origin in `tls-sni-header` / `tls-protocol-header`. `None` for
    /// a plain connection.
    pub tls: Option<TlsFacts>,
    /// The current request's minor HTTP version.
    pub minor: u8,
    /// The current request's method.
    pub method: Method,
    /// The current request's body framing.
    pub body: BodyKind,
    /// Each write to the client and each read of its body (`client-timeout`).
    pub timeout: Duration,
    max_body: u64,
    close: bool,
    draining: Arc<AtomicBool>,
    expect_continue: bool,
    continue_sent: bool,
    /// Some of the current request's body has been consumed (it cannot be sent again).
    pub body_started: bool,
    /// `102 Processing` beats owed to a waiting peer until the response head goes out.
    pub heartbeat: Option<Heartbeat>,
    body_done: bool,
}

impl ClientIo {
    /// A new client connection from `addr`; `draining` is set when the server drains (the
    /// connection then closes after the current response). `timeout` bounds each write to
    /// the client and each read of a body; bodies above `max_body` bytes are refused.
    /// `proto`: see [`ClientIo::proto`]. The TLS facts of `stream` are read here, once.
    pub fn new(
        stream: ClientStream,
        addr: std::net::SocketAddr,
        proto: Option<&'static [u8]>,
        draining: Arc<AtomicBool>,
        timeout: Duration,
        max_body: u64,
    ) -> Self {
        Self {
            tls: stream.tls_facts(),
            stream,
            rbuf: BytesMut::with_capacity(READ_BUFFER),
            out: BytesMut::with_capacity(1024),
            resp: ResponseHead::default(),
            addr: addr.ip().to_string().into_bytes().into_boxed_slice(),
            proto,
            minor: 1,
            method: Method::Get,
            body: BodyKind::None,
            timeout,
            max_body,
            close: false,
            draining,
            expect_continue: false,
            continue_sent: false,
            body_started: false,
            heartbeat: None,
            body_done: true,
        }
    }

    /// What the sidecar says of this connection in the fields it writes itself
    /// (`X-Forwarded-Proto`, and the TLS facts in the fields `headers` configures), replacing
    /// the request's; `None` on the peer listener, where the forwarding sidecar's pass
    /// through. Built per request from what the connection captured: nothing is allocated.
    pub fn vouched<'a>(&'a self, headers: &'a TlsHeaders) -> Option<Vouched<'a>> {
        let proto = self.proto?;
        let tls = self.tls.as_ref();
        let fact = |name: &'a Option<Box<str>>, value: Option<&'a str>| {
            name.as_deref().map(|name| Fact {
                name: name.as_bytes(),
                value: value.map(str::as_bytes),
            })
        };
        Some(Vouched {
            proto,
            facts: [
                fact(&headers.sni, tls.and_then(|t| t.sni.as_deref())),
                fact(&headers.protocol, tls.and_then(|t| t.protocol)),
            ],
        })
    }

    /// Takes on a new request; `heartbeat`: beat this often while the response head is not
    /// ready (the request came from a peer that waits with a first-byte timeout).
    pub fn start(&mut self, head: &RequestHead, heartbeat: Option<Duration>) {
        self.minor = head.minor;
        self.method = head.method;
        self.body = head.body;
        self.close = head.close;
        self.expect_continue = head.expect_continue && head.minor == 1;
        self.continue_sent = false;
        self.body_started = false;
        self.body_done = head.body == BodyKind::None;
        self.heartbeat = heartbeat.map(Heartbeat::new);
    }

    /// The connection closes after the current response: the client asked, or the server
    /// is draining.
    pub fn closing(&self) -> bool {
        self.close || self.draining.load(Ordering::Relaxed)
    }

    /// The request may be sent again to another destination: nothing of it was consumed and
    /// the method is safe to repeat (RFC 9110 9.2.2).
    pub fn retryable(&self) -> bool {
        !self.body_started && matches!(self.method, Method::Get | Method::Head)
    }

    /// The framing the request body arrives in.
    pub fn body_framing(&self) -> Framing {
        match self.body {
            BodyKind::None => Framing::Empty,
            BodyKind::Length(n) => Framing::Length(n),
            BodyKind::Chunked => Framing::Chunked,
        }
    }

    /// A reader for the request body, after sending `100 Continue` when the client waits
    /// for it. Marks the body as started.
    pub async fn body_reader(&mut self) -> std::io::Result<BodyReader> {
        if self.expect_continue && !self.continue_sent {
            self.continue_sent = true;
            wire::write_one(&mut self.stream, canned::CONTINUE, self.timeout).await?;
        }
        self.body_started = true;
        Ok(BodyReader::new(self.body_framing(), self.max_body))
    }

    /// Records that the whole request body was read.
    pub fn body_finished(&mut self) {
        self.body_done = true;
    }

    /// The `Connection` field for a response after which the connection closes or not.
    pub fn connection(&self, close: bool) -> Connection {
        match (close, self.minor) {
            (true, _) => Connection::Close,
            (false, 0) => Connection::KeepAlive,
            (false, _) => Connection::Default,
        }
    }

    /// Sends a complete error response. The connection closes after it when the client asked,
    /// when the request body was not read to its end, or when `close` is set.
    pub async fn error(&mut self, status: u16, close: bool) -> Outcome {
        self.heartbeat = None;
        let close = close || self.closing() || !self.body_done;
        self.out.clear();
        canned::error(&mut self.out, status, close);
        let sent = wire::write_one(&mut self.stream, &self.out, self.timeout).await;
        Outcome {
            status,
            close: close || sent.is_err(),
        }
    }

    /// Writes `self.out` (a head) followed by body pieces, chunk-encoded when `chunked`, and
    /// the last chunk when `last`; one `writev` when the socket takes it all.
    pub async fn write_head_and(
        &mut self,
        pieces: [&[u8]; 2],
        chunked: bool,
        last: bool,
    ) -> std::io::Result<()> {
        // The final head goes out: no interim response may follow it.
        self.heartbeat = None;
        let mut scratch = [[0u8; 18]; 2];
        let [s0, s1] = &mut scratch;
        let lines = [
            chunked::size_line(pieces[0].len().max(1), s0),
            chunked::size_line(pieces[1].len().max(1), s1),
        ];
        let mut parts: [IoSlice<'_>; 8] = [IoSlice::new(&[]); 8];
        parts[0] = IoSlice::new(&self.out);
        let mut n = 1;
        for (piece, line) in pieces.iter().zip(lines) {
            if piece.is_empty() {
                continue;
            }
            if chunked {
                parts[n] = IoSlice::new(line);
                parts[n + 1] = IoSlice::new(piece);
                parts[n + 2] = IoSlice::new(b"\r\n");
                n += 3;
            } else {
                parts[n] = IoSlice::new(piece);
                n += 1;
            }
        }
        if chunked && last {
            parts[n] = IoSlice::new(chunked::LAST_CHUNK);
            n += 1;
        }
        wire::write_all(&mut self.stream, &mut parts[..n], self.timeout).await
    }

    /// Writes one body piece (no head).
    pub async fn write_piece(&mut self, piece: &[u8], chunked: bool) -> std::io::Result<()> {
        self.out.clear();
        self.write_head_and([piece, &[]], chunked, false).await
    }
}
