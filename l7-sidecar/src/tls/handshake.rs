//! From an accepted connection on `listen-tls` to a TLS stream, or to a closed socket and a
//! count of why (`dl7_l7_tls_handshakes_total`):
//!
//! | what arrives | what happens | result |
//! |---|---|---|
//! | a ClientHello, a handshake that completes | the stream is served | `ok` (protocol `TLSv1.2`/`TLSv1.3`; a resumed session also counts in `dl7_l7_tls_resumptions_total`) |
//! | nothing complete within `tls-handshake-timeout` | closed | `timeout` |
//! | plain HTTP (the first byte is an upper-case letter, as in `GET `) | `400 Bad Request` "plain HTTP sent to the HTTPS port", `Connection: close`, closed (as nginx does) | `plain_http` |
//! | a first record that is not a handshake record, or a malformed ClientHello | closed | `bad_client_hello` |
//! | a handshake that fails later (no common version, cipher or ALPN protocol) | closed (after rustls' alert) | `error` |
//!
//! The whole wait, from accept to the handshake's end, is bounded by the timeout, so a client
//! that sends a few bytes and then nothing holds its place for that long at most.
//!
//! `peer-listen` with `peer-tls` goes the same way, counted in
//! `dl7_l7_peer_tls_handshakes_total{side="accepted"}`; a client certificate that is missing
//! or not signed by the cluster CA fails the handshake (`error`). Plain HTTP there (a
//! sidecar without `peer-tls`) is closed without an answer: a 400 would pass its health
//! checks and be relayed to its clients, while a close makes it fail over.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::ServerConfig;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::LazyConfigAcceptor;
use tokio_rustls::server::TlsStream;

use crate::metrics::Metrics;
use crate::tls::peer::PeerTls;

/// The first byte of a TLS handshake record.
const HANDSHAKE_RECORD: u8 = 0x16;

/// The answer to plain HTTP on the HTTPS port.
const PLAIN_HTTP_ANSWER: &[u8] = b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\n\
Content-Length: 35\r\nConnection: close\r\n\r\nplain HTTP sent to the HTTPS port\r\n";

/// How long, and how much, the request of a plain-HTTP client is read and dropped around the
/// 400 (so that unread bytes do not turn the close into a reset that destroys the answer).
const PLAIN_HTTP_LINGER: Duration = Duration::from_millis(500);
const PLAIN_HTTP_LINGER_BYTES: usize = 64 * 1024;

/// Why a handshake did not give a stream (the `result` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// Not done within the timeout.
    Timeout,
    /// Plain HTTP: answered 400.
    PlainHttp,
    /// The first record is not a ClientHello.
    BadClientHello,
    /// The handshake failed.
    Error,
}

impl Refused {
    /// The `result` label.
    pub fn label(self) -> &'static str {
        match self {
            Refused::Timeout => "timeout",
            Refused::PlainHttp => "plain_http",
            Refused::BadClientHello => "bad_client_hello",
            Refused::Error => "error",
        }
    }
}

/// Which listener a handshake is on, for its metrics.
#[derive(Debug, Clone, Copy)]
pub enum Side<'a> {
    /// `listen-tls`: clients.
    Clients,
    /// `peer-listen` with `peer-tls`: other sidecars (failed handshakes are logged there).
    Peers(&'a PeerTls),
}

/// Runs the server side of the handshake on `stream` within `timeout` (counted from
/// `accepted`) and counts how it ended in `metrics`.
pub async fn accept(
    stream: TcpStream,
    config: Arc<ServerConfig>,
    accepted: Instant,
    timeout: Duration,
    metrics: &Metrics,
    side: Side<'_>,
) -> Option<TlsStream<TcpStream>> {
    let left = timeout.saturating_sub(accepted.elapsed());
    let result = match tokio::time::timeout(left, handshake(stream, config, side)).await {
        Ok(result) => result,
        Err(_) => Err(Refused::Timeout),
    };
    if matches!(side, Side::Peers(_)) {
        let label = result.as_ref().map_or_else(|r| r.label(), |_| "ok");
        metrics.peer_tls_handshake("accepted", label);
        return result.ok();
    }
    match result {
        Ok(tls) => {
            let protocol =
                super::facts::protocol_name(tls.get_ref().1.protocol_version()).unwrap_or("none");
            metrics.tls_handshake("ok", protocol);
            if tls.get_ref().1.handshake_kind() == Some(rustls::HandshakeKind::Resumed) {
                metrics.tls_resumption(protocol);
            }
            metrics
                .tls_handshake_seconds
                .observe(accepted.elapsed().as_secs_f64());
            Some(tls)
        }
        Err(refused) => {
            metrics.tls_handshake(refused.label(), "none");
            None
        }
    }
}

/// The handshake, without the timeout.
async fn handshake(
    mut stream: TcpStream,
    config: Arc<ServerConfig>,
    side: Side<'_>,
) -> Result<TlsStream<TcpStream>, Refused> {
    let mut first = [0u8; 1];
    match stream.peek(&mut first).await {
        Ok(1) => {}
        // Closed before a byte, or failed: nothing was asked.
        _ => return Err(Refused::BadClientHello),
    }
    match first[0] {
        HANDSHAKE_RECORD => {}
        b'A'..=b'Z' => {
            if matches!(side, Side::Clients) {
                answer_plain_http(&mut stream).await;
            }
            return Err(Refused::PlainHttp);
        }
        _ => return Err(Refused::BadClientHello),
    }
    let from = stream.peer_addr();
    let start = LazyConfigAcceptor::new(rustls::server::Acceptor::default(), stream)
        .await
        .map_err(|e| {
            log::debug!("TLS: bad ClientHello: {e}");
            Refused::BadClientHello
        })?;
    start.into_stream(config).await.map_err(|e| {
        match (side, from) {
            (Side::Peers(tls), Ok(from)) => tls.failed(from, &e, true),
            _ => log::debug!("TLS handshake: {e}"),
        }
        Refused::Error
    })
}

/// Reads what the plain-HTTP client sent, answers 400 and closes, reading what follows for a
/// moment (the caller's timeout bounds all of it).
async fn answer_plain_http(stream: &mut TcpStream) {
    let mut sink = [0u8; 4096];
    let _ = stream.read(&mut sink).await;
    if stream.write_all(PLAIN_HTTP_ANSWER).await.is_err() {
        return;
    }
    let _ = stream.shutdown().await;
    let deadline = tokio::time::Instant::now() + PLAIN_HTTP_LINGER;
    let mut drained = 0;
    while drained < PLAIN_HTTP_LINGER_BYTES {
        match tokio::time::timeout_at(deadline, stream.read(&mut sink)).await {
            Ok(Ok(n)) if n > 0 => drained += n,
            _ => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_plain_http_answer_is_well_framed() {
        let (head, body) = std::str::from_utf8(PLAIN_HTTP_ANSWER)
            .unwrap()
            .split_once("\r\n\r\n")
            .unwrap();
        assert!(head.contains(&format!("Content-Length: {}", body.len())));
        assert!(body.contains("plain HTTP sent to the HTTPS port"));
    }
}
