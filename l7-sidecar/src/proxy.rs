//! One request over one pooled upstream connection: send the head (and stream the body),
//! read the response head, relay the response to the client piece by piece.
//!
//! What a failure means depends on how far the exchange got:
//!
//! | failure | result |
//! |---|---|
//! | connect refused / timed out | [`Failure::Retry`]: nothing was sent, any request may go elsewhere |
//! | a reused idle connection turns out closed before any response byte | the same destination again on a new connection (not the destination's fault) |
//! | connection lost before any response byte, request repeatable (GET/HEAD without a consumed body) | [`Failure::Retry`] |
//! | the same, request not repeatable | 502 to the client |
//! | no response head within the response timeout | 504 (not retried: the destination may be busy, not dead) |
//! | malformed response head | 502 |
//! | bad request body from the client (framing, size, timeout) | 400 / 413 / 408, close |
//! | failure after the response head was sent | the client connection is closed (the only way to tell it) |
//!
//! Every failure that is the destination's is recorded by its outlier detection. A
//! connection goes back to its pool only after a complete, well-framed exchange.

use bytes::Buf;

use crate::client::{ClientIo, Outcome};
use crate::config::Config;
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

/// Why an exchange did not produce a response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// Nothing reached the client and the request can be sent elsewhere; `status` (502 or
    /// 504) is the answer if nothing else works.
    Retry(u16),
    /// The client has been answered (an error) or its connection must close.
    Done(Outcome),
}

/// What went wrong before the response head, seen from the upstream connection.
enum Early {
    /// Lost before any response byte.
    Lost,
    /// No response head in time.
    Timeout,
    /// A response head that cannot be relayed.
    Bad,
    /// The client side failed while its body was relayed; answer with this status.
    Client(u16, &'static str),
}

/// Sends the request and relays the response: the whole exchange with `pool`.
pub async fn exchange(
    pool: &Pool,
    head: &[u8],
    io: &mut ClientIo,
    config: &Config,
    metrics: &Metrics,
) -> Result<Outcome, Failure> {
    let conn = request(pool, head, io, config, metrics).await?;
    Ok(relay(pool, conn, io, config, metrics).await)
}

/// Sends the request head (and body) over a pooled connection and reads the response head
/// into `io.resp`. The connection is returned with the response body still unread.
pub async fn request(
    pool: &Pool,
    head: &[u8],
    io: &mut ClientIo,
    config: &Config,
    metrics: &Metrics,
) -> Result<Conn, Failure> {
    pool.metrics.forwards.inc();
    let mut conn = match checkout(pool, io.retryable()).await {
        Ok(conn) => conn,
        Err(e) => {
            log::debug!("{}: {e}", pool.name());
            failed(pool);
            let status = if matches!(e, ConnectError::Timeout) {
                504
            } else {
                502
            };
            return Err(Failure::Retry(status));
        }
    };
    loop {
        let early = match send(&mut conn, head, io, config).await {
            Ok(()) => match read_head(&mut conn, &mut io.resp, config).await {
                Ok(()) => return Ok(conn),
                Err(e) => e,
            },
            Err(e) => e,
        };
        let status = match early {
            Early::Lost if conn.reused && io.retryable() => {
                // A stale keep-alive connection: try a new one to the same destination.
                conn = pool.connect().await.map_err(|e| {
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
            Early::Lost | Early::Bad => {
                failed(pool);
                502
            }
            Early::Timeout => {
                failed(pool);
                504
            }
            Early::Client(status, reason) => {
                metrics.client_error(reason);
                return Err(Failure::Done(io.error(status, true, config).await));
            }
        };
        return Err(Failure::Done(io.error(status, false, config).await));
    }
}

/// A connection for a request; requests that cannot be repeated only get an idle
/// connection that is verifiably still open.
async fn checkout(pool: &Pool, repeatable: bool) -> Result<Conn, ConnectError> {
    let mut conn = pool.get().await?;
    while !repeatable && conn.reused && !still_open(&conn) {
        conn = pool.get().await?;
    }
    Ok(conn)
}

/// An idle connection with nothing to read is open; end of stream or unexpected bytes mean
/// it must not be used.
fn still_open(conn: &Conn) -> bool {
    let mut probe = [0u8; 1];
    matches!(conn.stream.try_read(&mut probe), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
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
        .body_reader(config)
        .await
        .map_err(|_| Early::Client(400, "client_write"))?;
    loop {
        let n = body
            .next(&mut io.stream, &mut io.rbuf, config.timeouts.client)
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

/// Reads the final response head (skipping interim 1xx responses) within the response
/// timeout.
async fn read_head(conn: &mut Conn, resp: &mut ResponseHead, config: &Config) -> Result<(), Early> {
    let deadline = tokio::time::Instant::now() + config.timeouts.response;
    let mut received = false;
    loop {
        if !conn.buf.is_empty() {
            match response::parse(&conn.buf, MAX_RESPONSE_HEAD, resp) {
                Ok(true) if resp.status == 101 => return Err(Early::Bad),
                Ok(true) if resp.status < 200 => {
                    conn.buf.advance(resp.len);
                    continue;
                }
                Ok(true) => return Ok(()),
                Ok(false) => {}
                Err(e) => {
                    log::debug!("bad response head: {e}");
                    return Err(Early::Bad);
                }
            }
        }
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match wire::read(&mut conn.stream, &mut conn.buf, left).await {
            Ok(0) if !received => return Err(Early::Lost),
            Ok(0) => return Err(Early::Bad),
            Ok(_) => received = true,
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => return Err(Early::Timeout),
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
pub async fn relay(
    pool: &Pool,
    mut conn: Conn,
    io: &mut ClientIo,
    config: &Config,
    metrics: &Metrics,
) -> Outcome {
    let plan = plan(io, &conn.buf);
    conn.buf.advance(io.resp.len);
    stream(pool, conn, io, plan, &[], config, metrics).await
}

/// Sends the head in `io.out`, then `prefix` (body bytes already taken out of the framing,
/// e.g. by an abandoned cache fill), then the rest of the body from `conn`.
pub async fn stream(
    pool: &Pool,
    mut conn: Conn,
    io: &mut ClientIo,
    plan: Plan,
    prefix: &[u8],
    config: &Config,
    metrics: &Metrics,
) -> Outcome {
    let mut body = BodyReader::new(plan.framing, u64::MAX);
    let broken = Outcome {
        status: plan.status,
        close: true,
    };
    let first = match body.buffered(&mut conn.buf) {
        Ok(n) => n,
        Err(e) => {
            log::debug!("{}: {e}", pool.name());
            failed(pool);
            return io.error(502, true, config).await;
        }
    };
    let done = body.is_done();
    if io
        .write_head_and([prefix, &conn.buf[..first]], plan.chunked, done, config)
        .await
        .is_err()
    {
        metrics.client_error("client_write");
        return broken;
    }
    conn.buf.advance(first);
    if !done {
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
            if io
                .write_piece(&conn.buf[..n], plan.chunked, config)
                .await
                .is_err()
            {
                metrics.client_error("client_write");
                return broken;
            }
            conn.buf.advance(n);
        }
        if plan.chunked
            && wire::write_one(&mut io.stream, chunked::LAST_CHUNK, config.timeouts.client)
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
