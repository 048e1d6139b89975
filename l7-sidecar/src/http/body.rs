//! Reading a message body of any framing piece by piece, straight out of the connection's
//! read buffer: nothing is copied or collected here, so a body of any size passes through a
//! buffer of bounded size. The caller writes each piece on (re-framed as it needs) and then
//! drops it from the buffer.
//!
//! ```no_run
//! # async fn relay(src: &mut tokio::net::TcpStream, buf: &mut bytes::BytesMut) -> Result<(), l7_sidecar::http::body::BodyError> {
//! use bytes::Buf;
//! use l7_sidecar::http::body::{BodyReader, Framing};
//!
//! let mut body = BodyReader::new(Framing::Chunked, u64::MAX);
//! loop {
//!     let n = body.next(src, buf, std::time::Duration::from_secs(30)).await?;
//!     if n == 0 {
//!         break;
//!     }
//!     // use &buf[..n]
//!     buf.advance(n);
//! }
//! # Ok(()) }
//! ```

use std::io;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use tokio::io::AsyncRead;

use super::chunked::{self, ChunkError, Step};
use super::wire;

/// How a body is delimited on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body.
    Empty,
    /// Exactly this many bytes.
    Length(u64),
    /// Chunked transfer coding.
    Chunked,
    /// Until the sender closes the connection (responses only).
    UntilClose,
}

/// Why a body could not be read to its end.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    /// Reading failed.
    #[error("reading the body: {0}")]
    Read(#[source] io::Error),
    /// No bytes within the read timeout.
    #[error("timed out reading the body")]
    Timeout,
    /// The connection closed before the body was complete.
    #[error("connection closed in the middle of the body")]
    Truncated,
    /// Bad chunked framing.
    #[error("bad chunked body: {0}")]
    Chunked(#[from] ChunkError),
    /// More bytes than the limit.
    #[error("body larger than the limit")]
    TooLarge,
}

/// Reads one body out of a connection's buffer, piece by piece.
#[derive(Debug)]
pub struct BodyReader {
    framing: Framing,
    remaining: u64,
    decoder: chunked::Decoder,
    done: bool,
    total: u64,
    limit: u64,
}

impl BodyReader {
    /// A reader for a body with this framing that refuses more than `limit` bytes of data.
    pub fn new(framing: Framing, limit: u64) -> Self {
        Self {
            framing,
            remaining: match framing {
                Framing::Length(n) => n,
                _ => 0,
            },
            decoder: chunked::Decoder::default(),
            done: matches!(framing, Framing::Empty | Framing::Length(0)),
            total: 0,
            limit,
        }
    }

    /// True once the whole body has been handed out.
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// The body bytes still to come when its length is known (`Content-Length`), else `None`.
    pub fn remaining_length(&self) -> Option<u64> {
        matches!(self.framing, Framing::Length(_)).then_some(self.remaining)
    }

    /// Data bytes handed out so far.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// The next piece of data from what `buf` already holds, without reading: the piece is
    /// `buf[..n]`; the caller uses it, then calls `buf.advance(n)`. 0 when nothing is
    /// buffered or the body is complete ([`is_done`](Self::is_done) tells which).
    pub fn buffered(&mut self, buf: &mut BytesMut) -> Result<usize, BodyError> {
        if self.done {
            return Ok(0);
        }
        let n = match self.framing {
            Framing::Empty => 0,
            Framing::Length(_) => {
                let n = usize::try_from(self.remaining).map_or(buf.len(), |r| r.min(buf.len()));
                self.remaining -= n as u64;
                self.done = self.remaining == 0;
                n
            }
            Framing::Chunked => match self.decoder.step(buf)? {
                Step::Data { skip, len } => {
                    buf.advance(skip);
                    len
                }
                Step::NeedMore { skip } => {
                    buf.advance(skip);
                    0
                }
                Step::Done { skip } => {
                    buf.advance(skip);
                    self.done = true;
                    0
                }
            },
            Framing::UntilClose => buf.len(),
        };
        self.total += n as u64;
        if self.total > self.limit {
            return Err(BodyError::TooLarge);
        }
        Ok(n)
    }

    /// The next piece of data, reading from `src` into `buf` when needed (each read within
    /// `timeout`): the piece is `buf[..n]`, 0 means the body is complete.
    pub async fn next<R: AsyncRead + Unpin>(
        &mut self,
        src: &mut R,
        buf: &mut BytesMut,
        timeout: Duration,
    ) -> Result<usize, BodyError> {
        loop {
            let n = self.buffered(buf)?;
            if n > 0 || self.done {
                return Ok(n);
            }
            match wire::read(src, buf, timeout).await {
                Ok(0) if self.framing == Framing::UntilClose => self.done = true,
                Ok(0) => return Err(BodyError::Truncated),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::TimedOut => return Err(BodyError::Timeout),
                Err(e) => return Err(BodyError::Read(e)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn read_all(
        framing: Framing,
        wire: &[u8],
        limit: u64,
    ) -> Result<(Vec<u8>, usize), BodyError> {
        let mut src = wire;
        let mut buf = BytesMut::new();
        let mut body = BodyReader::new(framing, limit);
        let mut out = Vec::new();
        loop {
            let n = body
                .next(&mut src, &mut buf, Duration::from_secs(1))
                .await?;
            if n == 0 {
                return Ok((out, buf.len() + src.len()));
            }
            out.extend_from_slice(&buf[..n]);
            buf.advance(n);
        }
    }

    #[tokio::test]
    async fn every_framing() {
        let (b, rest) = read_all(Framing::Length(3), b"abcdef", 10).await.unwrap();
        assert_eq!((b.as_slice(), rest), (&b"abc"[..], 3));
        let (b, rest) = read_all(Framing::Chunked, b"2\r\nab\r\n1\r\nc\r\n0\r\n\r\nX", 10)
            .await
            .unwrap();
        assert_eq!((b.as_slice(), rest), (&b"abc"[..], 1));
        let (b, _) = read_all(Framing::UntilClose, b"abc", 10).await.unwrap();
        assert_eq!(b, b"abc");
        let (b, _) = read_all(Framing::Empty, b"abc", 10).await.unwrap();
        assert!(b.is_empty());
    }

    #[tokio::test]
    async fn errors() {
        assert!(matches!(
            read_all(Framing::Length(5), b"abc", 10).await,
            Err(BodyError::Truncated)
        ));
        assert!(matches!(
            read_all(Framing::Chunked, b"3\r\nabc\r\n", 10).await,
            Err(BodyError::Truncated)
        ));
        assert!(matches!(
            read_all(Framing::Chunked, b"3\r\nabcd\r\n", 10).await,
            Err(BodyError::Chunked(_))
        ));
        assert!(matches!(
            read_all(
                Framing::Chunked,
                b"8\r\nabcdefgh\r\n8\r\nabcdefgh\r\n0\r\n\r\n",
                10
            )
            .await,
            Err(BodyError::TooLarge)
        ));
    }
}
