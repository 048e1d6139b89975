//! One request over one pooled upstream connection: send the head (and stream the body),
//! read the response head, relay the response to the client piece by piece.
//!
//! What a failure means depends on how far the exchange got:
//!
//! | failure | result |
//! |---|---|
//! | connect refused / timed out | [`Failure::Retry`]: nothing was sent, any request may go elsewhere |
//! | a reused idle connection turns out closed before any response byte | the same destination again on a new connection (not the destination's fault) |
//! | a reused connection answers with bytes that are no response head (left over from an earlier exchange, arrived after the pool's last look), request repeatable | the same, counted as an unsolicited retirement |
//! | connection lost before any response byte, request repeatable (GET/HEAD without a consumed body) | [`Failure::Retry`] |
//! | the same, request not repeatable | 502 to the client |
//! | a peer sends no byte within `peer-first-byte-timeout` (hung, not dead), request repeatable | [`Failure::Retry`] |
//! | the same, request not repeatable | 504 |
//! | no final response head within the response timeout, 1xx responses included | 504 (not retried: the destination may be busy, not dead) |
//! | interim (1xx) responses faster than a live server sends them (a flood) | 502 |
//! | malformed response head | 502 |
//! | bad request body from the client (framing, size, per-read or whole-body timeout) | 400 / 413 / 408, close |
//! | failure after the response head was sent | the client connection is closed (the only way to tell it) |
//!
//! Every failure that is the destination's is recorded by its outlier detection. A
//! connection goes back to its pool only after a complete, well-framed exchange, and the
//! pool checks that nothing follows the response ([`crate::pool`]).

use std::time::Duration;

use bytes::Buf;
use tokio::time::Instant;

use crate::client::{self, ClientIo, Outcome};
use crate::config::Config;
use crate::context::Ctx;
use crate::http::body::{BodyError, BodyReader, Framing};
use crate::http::chunked;
use crate::http::forward::{self, Length};
use crate::http::request::Method;
use crate::http::response::{self, ResponseHead};
use crate::http::wire;
use crate::metrics::Metrics;
use crate::pool::{Conn, ConnectError, Pool};

/// This proxy in `Via`.
pub const VIA: &[u8] = b"1.1 dl7";

/// Largest response head accepted from upstream.
const MAX_RESPONSE_HEAD: usize = 64 * 1024;
/// Interim responses accepted before any budget is earned by waiting.
const INTERIM_FREE: u32 = 32;
/// Waiting this long earns one more interim response (a live server beats a few times a
/// second at most; a flood sends thousands).
const INTERIM_EARNED_EVERY_MS: u128 = 100;

/// Why an exchange did not produce a response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// Nothing reached the client and the request can be sent elsewhere; `status` (502 or
    /// 504) is the answer if nothing else works.
    Retry(u16),
    /// The client has been answered (an error) or its connection must close.
    Done(Outcome),
    /// The requester went away while this server waited (a heartbeat could not be sent):
    /// nothing more can be sent, and the connection closes.
    Gone,
}

impl Failure {
    /// The outcome to count for a request that ended in [`Failure::Gone`].
    pub const GONE: Outcome = Outcome {
        status: 502,
        close: true,
    };
}

/// What went wrong before the response head, seen from the upstream connection.
enum Early {
    /// Lost before any response byte.
    Lost,
    /// No response head in time.
    Timeout,
    /// No byte within the first-byte timeout.
    Stalled,
    /// The requester went away while this server waited.
    Gone,
    /// A response head that cannot be relayed.
    Bad,
    /// Bytes that are not a response head at all.
    Garbled,
    /// The client side failed while its body was relayed; answer with this status.
    Client(u16, &'static str),
}

/// Sends the request and relays the response: the whole exchange with `pool`.
/// `first_byte`: the per-try first-byte timeout (forwards to peers that send heartbeats).
pub async fn exchange(
    cx: &Ctx<'_>,
    pool: &Pool,
    head: &[u8],
    io: &mut ClientIo,
    first_byte: Option<Duration>,
) -> Result<Outcome, Failure> {
    let conn = request(cx, pool, head, io, first_byte).await?;
    Ok(relay(cx, pool, conn, io).await)
}

/// Sends the request head (and body) over a pooled connection and reads the response head
/// into `io.resp`. The connection is returned with the response body still unread.
pub async fn request(
    cx: &Ctx<'_>,
    pool: &Pool,
    head: &[u8],
    io: &mut ClientIo,
    first_byte: Option<Duration>,
) -> Result<Conn, Failure> {
    let (config, metrics) = (cx.config, cx.metrics);
    pool.metrics.forwards.inc();
    // A request that cannot go elsewhere gains nothing from a first-byte timeout but an
    // earlier 504 (and its body may still be on its way to a slow origin at the owner).
    let first_byte = first_byte.filter(|_| io.retryable());
    let timeout = io.timeout;
    let checkout = client::beating(&mut io.stream, &mut io.heartbeat, timeout, pool.get()).await;
    let mut conn = match checkout {
        Some(Ok(conn)) => conn,
        Some(Err(e)) => {
            log::debug!("{}: {e}", pool.name());
            failed(pool);
            let status = if matches!(e, ConnectError::Timeout) {
                504
            } else {
                502
            };
            return Err(Failure::Retry(status));
        }
        None => return Err(gone(metrics)),
    };
    loop {
        let early = match send(&mut conn, head, io, config).await {
            Ok(()) => {
                let mut limits = HeadWait::new(config.timeouts.response, first_byte);
                loop {
                    let read = read_head(&mut conn, &mut io.resp, &mut limits);
                    match client::beating(&mut io.stream, &mut io.heartbeat, timeout, read).await {
                        Some(Ok(Head::Final)) => return Ok(conn),
                        Some(Ok(Head::EarlyHints)) => {
                            if early_hints(io, &conn.buf).await.is_err() {
                                break Early::Gone;
                            }
                            conn.buf.advance(io.resp.len);
                        }
                        Some(Err(e)) => break e,
                        None => break Early::Gone,
                    }
                }
            }
            Err(e) => e,
        };
        let garbled = matches!(early, Early::Garbled);
        let status = match early {
            Early::Lost | Early::Garbled if conn.reused && io.retryable() => {
                // A stale keep-alive connection, or bytes left over from an earlier exchange
                // that arrived after the pool's last look: the connection, not the
                // destination, is broken. Try a new one to the same destination.
                if garbled {
                    pool.metrics.retired_unsolicited.inc();
                }
                let connect = pool.connect();
                let Some(connected) =
                    client::beating(&mut io.stream, &mut io.heartbeat, timeout, connect).await
                else {
                    return Err(gone(metrics));
                };
                conn = connected.map_err(|e| {
                    log::debug!("{}: {e}", pool.name());
                    failed(pool);
                    Failure::Retry(502)
                })?;
                continue;
            }
            Early::Lost if io.retryable() => {
                failed(pool);
                return Err(Failure::Retry(502));
            }
            Early::Stalled => {
                log::debug!("{}: silent for the first-byte timeout", pool.name());
                pool.metrics.stalls.inc();
                failed(pool);
                if io.retryable() {
                    return Err(Failure::Retry(504));
                }
                504
            }
            Early::Lost | Early::Bad | Early::Garbled => {
                failed(pool);
                502
            }
            Early::Timeout => {
                failed(pool);
                504
            }
            Early::Client(status, reason) => {
                metrics.client_error(reason);
                return Err(Failure::Done(io.error(status, true).await));
            }
            Early::Gone => return Err(gone(metrics)),
        };
        return Err(Failure::Done(io.error(status, false).await));
    }
}

/// The requester went away while this server waited for it: nothing more can be sent.
fn gone(metrics: &Metrics) -> Failure {
    metrics.client_error("client_write");
    Failure::Gone
}

fn failed(pool: &Pool) {
    pool.metrics.errors.inc();
    if pool.outlier.failure() {
        pool.metrics.ejections.inc();
        log::warn!(
            "{} ({}) ejected after repeated failures",
            pool.name(),
            pool.addr()
        );
    }
}

/// Writes the head and streams the request body (re-framed as the head announced it).
async fn send(
    conn: &mut Conn,
    head: &[u8],
    io: &mut ClientIo,
    config: &Config,
) -> Result<(), Early> {
    let upstream = config.timeouts.response;
    wire::write_one(&mut conn.stream, head, upstream)
        .await
        .map_err(|_| Early::Lost)?;
    if io.body_framing() == Framing::Empty {
        return Ok(());
    }
    let chunked = io.body_framing() == Framing::Chunked;
    let mut body = io
        .body_reader()
        .await
        .map_err(|_| Early::Client(400, "client_write"))?;
    // The whole body within the body timeout, each read within the client timeout: a
    // client trickling a byte now and then cannot hold this connection and the upstream one.
    let deadline = Instant::now() + config.timeouts.body;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(Early::Client(408, "body_timeout"));
        }
        let n = body
            .next(
                &mut io.stream,
                &mut io.rbuf,
                left.min(config.timeouts.client),
            )
            .await
            .map_err(|e| match e {
                BodyError::Timeout => Early::Client(408, "body_timeout"),
                BodyError::TooLarge => Early::Client(413, "body_too_large"),
                BodyError::Chunked(_) => Early::Client(400, "bad_chunked_body"),
                BodyError::Read(_) | BodyError::Truncated => Early::Client(400, "body_truncated"),
            })?;
        if n == 0 {
            break;
        }
        let piece = &io.rbuf[..n];
        let sent = if chunked {
            let mut scratch = [0u8; 18];
            let mut parts = [
                std::io::IoSlice::new(chunked::size_line(n, &mut scratch)),
                std::io::IoSlice::new(piece),
                std::io::IoSlice::new(b"\r\n"),
            ];
            wire::write_all(&mut conn.stream, &mut parts, upstream).await
        } else {
            wire::write_one(&mut conn.stream, piece, upstream).await
        };
        sent.map_err(|_| Early::Bad)?;
        io.rbuf.advance(n);
    }
    io.body_finished();
    if chunked {
        wire::write_one(&mut conn.stream, chunked::LAST_CHUNK, upstream)
            .await
            .map_err(|_| Early::Bad)?;
    }
    Ok(())
}

/// Passes a `103 Early Hints` (RFC 8297) on to an HTTP/1.1 client, its end-to-end fields as
/// received (HTTP/1.0 clients get no interim responses, RFC 9110 15.2).
async fn early_hints(io: &mut ClientIo, buf: &[u8]) -> std::io::Result<()> {
    if io.minor == 0 {
        return Ok(());
    }
    io.out.clear();
    forward::interim(&mut io.out, &io.resp, buf);
    wire::write_one(&mut io.stream, &io.out, io.timeout).await
}

/// What [`read_head`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Head {
    /// The final response head, in `io.resp`.
    Final,
    /// A `103 Early Hints`, parsed into `io.resp` and still at the front of the buffer: pass it
    /// on, drop it, and read on.
    EarlyHints,
}

/// Bodies of known length with at least this much left once the head is relayed are spliced
/// (below it, the pipe's set-up costs more than the copy it saves).
const SPLICE_MIN: u64 = 64 * 1024;

/// How long a response head may take.
#[derive(Debug, Clone, Copy)]
struct HeadWait {
    start: Instant,
    /// Interim responses received so far.
    interim: u32,
    /// The final head must be complete by then (interim responses do not extend it).
    deadline: Instant,
    /// Each wait for the next bytes (the first ones and every later read), for peers that
    /// send heartbeats.
    first_byte: Option<Duration>,
}

impl HeadWait {
    fn new(response: Duration, first_byte: Option<Duration>) -> Self {
        let start = Instant::now();
        Self {
            start,
            interim: 0,
            deadline: start + response,
            first_byte,
        }
    }

    /// Interim responses allowed by now.
    fn interim_budget(&self) -> u32 {
        let earned = self.start.elapsed().as_millis() / INTERIM_EARNED_EVERY_MS;
        INTERIM_FREE.saturating_add(u32::try_from(earned).unwrap_or(u32::MAX))
    }
}

/// Reads the final response head, skipping interim 1xx responses but stopping at a
/// `103 Early Hints`, by the deadline of `wait`. With a first-byte timeout, a silence of that
/// long (before the first byte, or between any two reads) is [`Early::Stalled`].
async fn read_head(
    conn: &mut Conn,
    resp: &mut ResponseHead,
    wait: &mut HeadWait,
) -> Result<Head, Early> {
    let mut received = false;
    let mut progress = Instant::now();
    loop {
        if !conn.buf.is_empty() {
            match response::parse(&conn.buf, MAX_RESPONSE_HEAD, resp) {
                Ok(true) if resp.status == 101 => return Err(Early::Bad),
                Ok(true) if resp.status < 200 => {
                    wait.interim += 1;
                    if wait.interim > wait.interim_budget() {
                        log::debug!("interim response flood");
                        return Err(Early::Bad);
                    }
                    if resp.status == 103 {
                        return Ok(Head::EarlyHints);
                    }
                    conn.buf.advance(resp.len);
                    // Only bytes of the final response make a loss after this unrepeatable.
                    received = !conn.buf.is_empty();
                    continue;
                }
                Ok(true) => return Ok(Head::Final),
                Ok(false) => {}
                Err(e) => {
                    log::debug!("bad response head: {e}");
                    return Err(Early::Garbled);
                }
            }
        }
        // Checked here, not only by the read's timeout: a read that always finds bytes
        // would never time out.
        let now = Instant::now();
        if now >= wait.deadline {
            return Err(Early::Timeout);
        }
        let mut until = wait.deadline;
        if let Some(first_byte) = wait.first_byte {
            let stall = progress + first_byte;
            if now >= stall {
                return Err(Early::Stalled);
            }
            until = until.min(stall);
        }
        match wire::read(&mut conn.stream, &mut conn.buf, until - now).await {
            Ok(0) if !received => return Err(Early::Lost),
            Ok(0) => return Err(Early::Bad),
            Ok(_) => {
                received = true;
                progress = Instant::now();
            }
            // The loop decides which limit passed.
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(_) if !received => return Err(Early::Lost),
            Err(_) => return Err(Early::Bad),
        }
    }
}

/// How a response goes to the client, decided from its head.
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    status: u16,
    framing: Framing,
    chunked: bool,
    close: bool,
    reusable: bool,
}

impl Plan {
    /// The upstream connection may be reused once the body has been read.
    pub fn reusable(&self) -> bool {
        self.reusable
    }
}

/// Decides how the response whose head is in `io.resp` (parsed from `buf`) is framed for the
/// client and writes the client's head into `io.out`.
pub fn plan(io: &mut ClientIo, buf: &[u8]) -> Plan {
    let framing = io.resp.framing(io.method == Method::Head);
    let length = match framing {
        Framing::Empty => Length::AsReceived,
        Framing::Length(n) => Length::Exactly(n),
        Framing::Chunked | Framing::UntilClose if io.minor == 1 => Length::Chunked,
        Framing::Chunked | Framing::UntilClose => Length::Close,
    };
    let close = io.closing() || length == Length::Close;
    io.out.clear();
    forward::response(&mut io.out, &io.resp, buf, VIA, length);
    let connection = io.connection(close);
    forward::finish(&mut io.out, connection);
    Plan {
        status: io.resp.status,
        framing,
        chunked: length == Length::Chunked,
        close,
        reusable: !io.resp.close && framing != Framing::UntilClose,
    }
}

/// Relays the response whose head is in `io.resp` (at the start of `conn.buf`) and gives
/// the connection back to the pool when the exchange was complete.
pub async fn relay(cx: &Ctx<'_>, pool: &Pool, mut conn: Conn, io: &mut ClientIo) -> Outcome {
    let plan = plan(io, &conn.buf);
    conn.buf.advance(io.resp.len);
    let mut body = BodyReader::new(plan.framing, u64::MAX);
    let first = match body.buffered(&mut conn.buf) {
        Ok(n) => n,
        Err(e) => {
            log::debug!("{}: {e}", pool.name());
            failed(pool);
            return io.error(502, true).await;
        }
    };
    let rest = Rest {
        body,
        prefix: &[],
        first,
    };
    stream(cx, pool, conn, io, plan, rest).await
}

/// Where a response body stands when [`stream`] takes it over.
#[derive(Debug)]
pub struct Rest<'a> {
    /// The reader that has read the body so far (its decoder keeps its place).
    pub body: BodyReader,
    /// Body bytes already taken out of the framing, sent first (e.g. what an abandoned
    /// cache fill collected).
    pub prefix: &'a [u8],
    /// Body bytes the reader has handed out and that still sit at the start of `conn.buf`.
    pub first: usize,
}

/// Sends the head in `io.out`, then the body: `rest.prefix`, the `rest.first` bytes at the
/// start of `conn.buf`, then the rest of the body from `conn`, read by `rest.body`.
pub async fn stream(
    cx: &Ctx<'_>,
    pool: &Pool,
    mut conn: Conn,
    io: &mut ClientIo,
    plan: Plan,
    rest: Rest<'_>,
) -> Outcome {
    let (config, metrics) = (cx.config, cx.metrics);
    let Rest {
        mut body,
        prefix,
        first,
    } = rest;
    let broken = Outcome {
        status: plan.status,
        close: true,
    };
    let done = body.is_done();
    if io
        .write_head_and([prefix, &conn.buf[..first]], plan.chunked, done)
        .await
        .is_err()
    {
        metrics.client_error("client_write");
        return broken;
    }
    conn.buf.advance(first);
    // A long body of known length, relayed with the same framing and nothing of it buffered
    // here yet, between plain connections: the kernel moves it from socket to socket
    // (splice), not this process. TLS on either side takes the copy below (bytes are
    // decrypted or encrypted here).
    let splice = body
        .remaining_length()
        .filter(|&left| !done && !plan.chunked && left >= SPLICE_MIN && conn.buf.is_empty())
        .zip(conn.stream.plain_socket().zip(io.stream.plain_socket()));
    if let Some((left, (upstream, client))) = splice {
        let timeouts = (config.timeouts.response, io.timeout);
        let moved = wire::splice_exactly(upstream, client, left, timeouts.0, timeouts.1);
        match moved.await {
            Ok(()) => {}
            Err(wire::SpliceError::Source(e)) => {
                log::debug!("{}: response body: {e}", pool.name());
                failed(pool);
                return broken;
            }
            Err(wire::SpliceError::Destination(_)) => {
                metrics.client_error("client_write");
                return broken;
            }
        }
    } else if !done {
        loop {
            let n = match body
                .next(&mut conn.stream, &mut conn.buf, config.timeouts.response)
                .await
            {
                Ok(n) => n,
                Err(e) => {
                    log::debug!("{}: response body: {e}", pool.name());
                    failed(pool);
                    return broken;
                }
            };
            if n == 0 {
                break;
            }
            if io.write_piece(&conn.buf[..n], plan.chunked).await.is_err() {
                metrics.client_error("client_write");
                return broken;
            }
            conn.buf.advance(n);
        }
        if plan.chunked
            && wire::write_one(&mut io.stream, chunked::LAST_CHUNK, io.timeout)
                .await
                .is_err()
        {
            metrics.client_error("client_write");
            return broken;
        }
    }
    finished(pool, conn, plan.reusable);
    Outcome {
        status: plan.status,
        close: plan.close,
    }
}

/// A complete exchange: the destination is healthy and the connection may be reused.
pub fn finished(pool: &Pool, conn: Conn, reusable: bool) {
    pool.outlier.success();
    if reusable {
        pool.put(conn);
    }
}
