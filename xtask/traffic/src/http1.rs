//! HTTP/1.1 on the wire, shared by the synthetic origin (`crate::origin`) and the load
//! generator (`crate::load`): a buffered reader that reads message heads (parsed by the caller
//! with httparse) and reads past bodies framed by Content-Length, chunked coding or the end of
//! the connection, counting every byte read.

use std::io;

use tokio::io::{AsyncRead, AsyncReadExt};

/// The largest message head accepted.
pub const MAX_HEAD: usize = 64 * 1024;
/// The read buffer; at least `MAX_HEAD`.
const BUFFER: usize = 64 * 1024;
/// The longest chunk-size or trailer line accepted.
const MAX_LINE: usize = 4096;
/// Headers parsed per message.
pub const MAX_HEADERS: usize = 64;

/// Why a message could not be read.
#[derive(Debug)]
pub enum WireError {
    /// The peer closed the connection in the middle of a message.
    Eof,
    /// The socket failed.
    Io(io::Error),
    /// The bytes are not HTTP/1.1.
    Malformed(String),
}

impl From<io::Error> for WireError {
    fn from(e: io::Error) -> Self {
        Self::Io(e)
    }
}

impl std::fmt::Display for WireError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Eof => f.write_str("connection closed in the middle of a message"),
            Self::Io(e) => write!(f, "{e}"),
            Self::Malformed(m) => write!(f, "malformed message: {m}"),
        }
    }
}

/// How a message's body is delimited: the sidecar's own type, so that the tools and the
/// product agree on the four cases.
pub use l7_sidecar::http::body::Framing;

/// The framing that `headers` declare: chunked when Transfer-Encoding is present (it must end
/// with `chunked`), else Content-Length, else `None` (the caller knows the default).
pub fn declared_framing(headers: &[httparse::Header]) -> Result<Option<Framing>, String> {
    let mut length = None;
    let mut chunked = None;
    for h in headers {
        if h.name.eq_ignore_ascii_case("transfer-encoding") {
            let last = h.value.rsplit(|&b| b == b',').next().unwrap_or_default();
            chunked = Some(last.trim_ascii().eq_ignore_ascii_case(b"chunked"));
        } else if h.name.eq_ignore_ascii_case("content-length") {
            let n = std::str::from_utf8(h.value)
                .ok()
                .and_then(|v| v.trim().parse::<u64>().ok())
                .ok_or("invalid Content-Length")?;
            if length.is_some_and(|l| l != n) {
                return Err("conflicting Content-Length headers".into());
            }
            length = Some(n);
        }
    }
    match chunked {
        Some(true) => Ok(Some(Framing::Chunked)),
        Some(false) => Err("Transfer-Encoding without chunked last".into()),
        None => Ok(length.map(Framing::Length)),
    }
}

/// True when the Connection header lists `token`.
fn connection_has(headers: &[httparse::Header], token: &str) -> bool {
    headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("connection"))
        .flat_map(|h| h.value.split(|&b| b == b','))
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
}

/// True when the connection ends after this message: `Connection: close`, or HTTP/1.0
/// (`version` 0) without `Connection: keep-alive`.
pub fn closes(version: u8, headers: &[httparse::Header]) -> bool {
    connection_has(headers, "close") || (version == 0 && !connection_has(headers, "keep-alive"))
}

/// The value of header `name` as UTF-8, if present.
pub fn header<'h>(headers: &'h [httparse::Header], name: &str) -> Option<&'h str> {
    headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case(name))
        .and_then(|h| std::str::from_utf8(h.value).ok())
}

/// A connection's read side with its buffer.
pub struct Reader<S> {
    io: S,
    buf: Box<[u8]>,
    start: usize,
    end: usize,
    /// Bytes read from the connection so far.
    pub read: u64,
}

impl<S: AsyncRead + Unpin> Reader<S> {
    pub fn new(io: S) -> Self {
        Self {
            io,
            buf: vec![0; BUFFER].into_boxed_slice(),
            start: 0,
            end: 0,
            read: 0,
        }
    }

    /// The connection, to write to.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.io
    }

    fn buffered(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }

    fn consume(&mut self, n: usize) {
        self.start += n;
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
    }

    /// Reads more bytes into the buffer; 0 at the end of the connection.
    async fn fill(&mut self) -> io::Result<usize> {
        if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if self.end == self.buf.len() {
            // Callers bound what they buffer below the buffer's size; never read into nothing.
            return Err(io::Error::other("read buffer full"));
        }
        let n = self.io.read(&mut self.buf[self.end..]).await?;
        self.end += n;
        self.read += n as u64;
        Ok(n)
    }

    /// Reads one message head. `parse` gets the buffered bytes and returns the head's length
    /// and its parsed value once it is complete. `Ok(None)` when the connection ended before
    /// any byte of a message (a keep-alive connection closed between messages).
    pub async fn head<T>(
        &mut self,
        mut parse: impl FnMut(&[u8]) -> Result<Option<(usize, T)>, String>,
    ) -> Result<Option<T>, WireError> {
        loop {
            if self.start != self.end {
                if let Some((n, v)) = parse(self.buffered()).map_err(WireError::Malformed)? {
                    self.consume(n);
                    return Ok(Some(v));
                }
                if self.end - self.start >= MAX_HEAD {
                    return Err(WireError::Malformed(format!(
                        "head longer than {MAX_HEAD} bytes"
                    )));
                }
            }
            if self.fill().await? == 0 {
                return if self.start == self.end {
                    Ok(None)
                } else {
                    Err(WireError::Eof)
                };
            }
        }
    }

    /// Reads past a body framed by `framing`; returns its length (the payload's, for chunked).
    pub async fn skip_body(&mut self, framing: Framing) -> Result<u64, WireError> {
        self.body(framing, None).await
    }

    /// Reads a body framed by `framing`, appending its payload to `out` when given; returns
    /// its length (the payload's, for chunked).
    pub async fn body(
        &mut self,
        framing: Framing,
        mut out: Option<&mut Vec<u8>>,
    ) -> Result<u64, WireError> {
        match framing {
            Framing::Empty => Ok(0),
            Framing::Length(n) => self.take(n, &mut out).await.map(|()| n),
            Framing::Chunked => self.chunked(&mut out).await,
            Framing::UntilClose => {
                let mut total = 0;
                loop {
                    let n = (self.end - self.start) as u64;
                    self.take(n, &mut out).await?;
                    total += n;
                    if self.fill().await? == 0 {
                        return Ok(total);
                    }
                }
            }
        }
    }

    /// Consumes `n` bytes of the connection, appending them to `out` when given.
    async fn take(&mut self, mut n: u64, out: &mut Option<&mut Vec<u8>>) -> Result<(), WireError> {
        loop {
            let take = n.min((self.end - self.start) as u64) as usize;
            if let Some(out) = out.as_deref_mut() {
                out.extend_from_slice(&self.buffered()[..take]);
            }
            self.consume(take);
            n -= take as u64;
            if n == 0 {
                return Ok(());
            }
            if self.fill().await? == 0 {
                return Err(WireError::Eof);
            }
        }
    }

    /// One line without its CRLF (or bare LF).
    async fn line(&mut self) -> Result<Vec<u8>, WireError> {
        loop {
            if let Some(lf) = self.buffered().iter().position(|&b| b == b'\n') {
                let mut line = self.buffered()[..lf].to_vec();
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                self.consume(lf + 1);
                return Ok(line);
            }
            if self.end - self.start > MAX_LINE {
                return Err(WireError::Malformed("chunk line too long".into()));
            }
            if self.fill().await? == 0 {
                return Err(WireError::Eof);
            }
        }
    }

    async fn chunked(&mut self, out: &mut Option<&mut Vec<u8>>) -> Result<u64, WireError> {
        let mut total = 0u64;
        loop {
            let line = self.line().await?;
            let size = line.split(|&b| b == b';').next().unwrap_or_default();
            let size = std::str::from_utf8(size.trim_ascii())
                .ok()
                .and_then(|s| u64::from_str_radix(s, 16).ok())
                .ok_or_else(|| WireError::Malformed("invalid chunk size".into()))?;
            if size == 0 {
                // Trailers, up to an empty line.
                while !self.line().await?.is_empty() {}
                return Ok(total);
            }
            self.take(size, out).await?;
            total += size;
            if !self.line().await?.is_empty() {
                return Err(WireError::Malformed("chunk not followed by CRLF".into()));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run<T>(f: impl Future<Output = T>) -> T {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(f)
    }

    fn status_head(buf: &[u8]) -> Result<Option<(usize, u16)>, String> {
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut r = httparse::Response::new(&mut headers);
        match r.parse(buf).map_err(|e| e.to_string())? {
            httparse::Status::Complete(n) => Ok(Some((n, r.code.unwrap_or(0)))),
            httparse::Status::Partial => Ok(None),
        }
    }

    #[test]
    fn reads_heads_and_every_body_framing() {
        let wire: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello\
            HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\
            3;ext=1\r\nabc\r\nA\r\n0123456789\r\n0\r\nTrailer: x\r\n\r\n\
            HTTP/1.1 404 Not Found\r\n\r\nrest until close";
        run(async {
            let mut r = Reader::new(wire);
            assert_eq!(r.head(status_head).await.unwrap(), Some(200));
            assert_eq!(r.skip_body(Framing::Length(5)).await.unwrap(), 5);
            assert_eq!(r.head(status_head).await.unwrap(), Some(200));
            assert_eq!(r.skip_body(Framing::Chunked).await.unwrap(), 13);
            assert_eq!(r.head(status_head).await.unwrap(), Some(404));
            assert_eq!(r.skip_body(Framing::UntilClose).await.unwrap(), 16);
            assert_eq!(r.head(status_head).await.unwrap(), None);
            assert_eq!(r.read, wire.len() as u64);
        });
    }

    #[test]
    fn truncated_and_garbled_messages_are_errors() {
        run(async {
            let mut r = Reader::new(&b"HTTP/1.1 200 OK\r\nContent-Le"[..]);
            assert!(matches!(r.head(status_head).await, Err(WireError::Eof)));
            let mut r = Reader::new(&b"HTTP/1.1 200 OK\r\n\r\nabc"[..]);
            r.head(status_head).await.unwrap();
            assert!(matches!(
                r.skip_body(Framing::Length(10)).await,
                Err(WireError::Eof)
            ));
            let mut r = Reader::new(&b"garbage\r\n\r\n"[..]);
            assert!(matches!(
                r.head(status_head).await,
                Err(WireError::Malformed(_))
            ));
            let mut r = Reader::new(&b"zz\r\n"[..]);
            assert!(matches!(
                r.skip_body(Framing::Chunked).await,
                Err(WireError::Malformed(_))
            ));
        });
    }

    #[test]
    fn framing_and_connection_headers() {
        let h = |name, value: &'static str| httparse::Header {
            name,
            value: value.as_bytes(),
        };
        assert_eq!(
            declared_framing(&[h("Content-Length", " 12 ")]),
            Ok(Some(Framing::Length(12)))
        );
        assert_eq!(
            declared_framing(&[
                h("transfer-encoding", "gzip, chunked"),
                h("content-length", "3")
            ]),
            Ok(Some(Framing::Chunked))
        );
        assert_eq!(declared_framing(&[]), Ok(None));
        assert!(declared_framing(&[h("Transfer-Encoding", "gzip")]).is_err());
        assert!(declared_framing(&[h("Content-Length", "1"), h("Content-Length", "2")]).is_err());
        assert!(closes(1, &[h("Connection", "keep-alive, Close")]));
        assert!(!closes(1, &[]));
        assert!(closes(0, &[]));
        assert!(!closes(0, &[h("connection", "keep-alive")]));
        assert_eq!(header(&[h("ETag", "\"x\"")], "etag"), Some("\"x\""));
    }
}
