//! `Stream`: a socket that carries HTTP, plain TCP or TLS over TCP, as one type, so that
//! everything above it reads and writes without knowing which: [`ClientStream`] for the
//! connections the sidecar accepts (`listen`, `listen-tls`, `peer-listen` with or without
//! `peer-tls`), [`UpstreamStream`] for those it opens (to peers over `peer-tls`, or plain).
//!
//! Reads and writes delegate to the variant. The plain variant stays a bare `TcpStream` (no
//! box, no indirection beyond the match) and also gives the socket itself to
//! [`wire::splice_exactly`](crate::http::wire::splice_exactly): a TLS stream's bytes must
//! pass through user space to be encrypted or decrypted, so bodies to or from a TLS peer
//! take the buffered copy.

use std::io::{self, IoSlice};
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_rustls::{client, server};

use crate::tls::facts::TlsFacts;
use crate::tls::peer::PeerTls;

/// A connection's socket; `T` is the TLS stream (server or client side).
#[derive(Debug)]
pub enum Stream<T> {
    /// Plain TCP.
    Plain(TcpStream),
    /// TLS, handshake done (boxed: the TLS state is large, and rarer than plain TCP here).
    Tls(Box<T>),
}

/// A connection the sidecar accepted.
pub type ClientStream = Stream<server::TlsStream<TcpStream>>;

/// A connection the sidecar opened (a pooled upstream connection, a health check).
pub type UpstreamStream = Stream<client::TlsStream<TcpStream>>;

impl<T> Stream<T> {
    /// The TCP socket when the bytes travel on it as they are (plain connections): either
    /// end of a splice.
    pub fn plain_socket(&self) -> Option<&TcpStream> {
        match self {
            Stream::Plain(s) => Some(s),
            Stream::Tls(_) => None,
        }
    }

    /// True for a TLS connection.
    pub fn is_tls(&self) -> bool {
        matches!(self, Stream::Tls(_))
    }
}

impl ClientStream {
    /// What the TLS handshake settled (SNI, version); `None` for a plain connection.
    pub fn tls_facts(&self) -> Option<TlsFacts> {
        match self {
            Stream::Plain(_) => None,
            Stream::Tls(s) => Some(TlsFacts::of(s.get_ref().1)),
        }
    }
}

impl UpstreamStream {
    /// The TCP socket under the connection (to wait for read readiness on it).
    pub fn tcp(&self) -> &TcpStream {
        match self {
            Stream::Plain(s) => s,
            Stream::Tls(s) => s.get_ref().0,
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Stream<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Stream<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Stream::Plain(s) => s.is_write_vectored(),
            Stream::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// Why no connection could be made.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The connect timeout passed.
    #[error("connect timed out")]
    Timeout,
    /// The connect failed (refused, unreachable, ...).
    #[error("connect failed: {0}")]
    Io(#[from] io::Error),
    /// The TLS handshake with a peer failed (its certificate refused, or ours).
    #[error("peer TLS handshake failed: {0}")]
    Tls(io::Error),
}

/// A connection to `addr`, with no delay, over peer TLS when `tls` is given, within
/// `timeout` (the TLS handshake included).
pub async fn connect(
    addr: SocketAddr,
    tls: Option<&PeerTls>,
    timeout: Duration,
) -> Result<UpstreamStream, ConnectError> {
    let deadline = Instant::now() + timeout;
    let tcp = tokio::time::timeout_at(deadline, TcpStream::connect(addr))
        .await
        .map_err(|_| ConnectError::Timeout)??;
    tcp.set_nodelay(true)?;
    let Some(tls) = tls else {
        return Ok(Stream::Plain(tcp));
    };
    match tokio::time::timeout_at(deadline, tls.connect(tcp, addr)).await {
        Ok(Ok(stream)) => {
            tls.counted("ok");
            Ok(Stream::Tls(Box::new(stream)))
        }
        Ok(Err(e)) => {
            tls.counted("error");
            tls.failed(addr, &e, false);
            Err(ConnectError::Tls(e))
        }
        Err(_) => {
            tls.counted("timeout");
            Err(ConnectError::Timeout)
        }
    }
}
