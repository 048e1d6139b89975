//! The load generator's HTTP/1.1 client: one keep-alive connection, one request at a time,
//! the response's body read and discarded while its bytes are counted.

use std::io;
use std::net::{IpAddr, SocketAddr};

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpSocket, TcpStream};

use crate::http1::{self, Framing, Reader, WireError};

/// Why a request failed before a complete response arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The connection could not be opened.
    Connect,
    /// The connection was reset or closed before the response was complete, or the socket
    /// failed otherwise.
    Reset,
    /// The response is not HTTP/1.1.
    Malformed,
}

/// A complete response.
#[derive(Debug, Clone, Copy)]
pub struct Answer {
    pub status: u16,
    /// Bytes read from the connection for it (head and body as sent).
    pub bytes: u64,
    /// The body's length (the payload's, for chunked coding).
    pub body: u64,
}

/// Where connections go and come from.
#[derive(Debug, Clone, Copy)]
pub struct Endpoint {
    pub target: SocketAddr,
    /// The local address to bind (port chosen by the kernel).
    pub source: Option<IpAddr>,
}

/// An open connection.
pub struct Conn(Reader<TcpStream>);

/// What a response head says.
struct Head {
    status: u16,
    close: bool,
    framing: Option<Framing>,
}

fn parse_head(buf: &[u8]) -> Result<Option<(usize, Head)>, String> {
    let mut headers = [httparse::EMPTY_HEADER; http1::MAX_HEADERS];
    let mut r = httparse::Response::new(&mut headers);
    match r.parse(buf).map_err(|e| e.to_string())? {
        httparse::Status::Partial => Ok(None),
        httparse::Status::Complete(n) => {
            let version = r.version.unwrap_or(1);
            Ok(Some((
                n,
                Head {
                    status: r.code.unwrap_or(0),
                    close: http1::closes(version, r.headers),
                    framing: http1::declared_framing(r.headers)?,
                },
            )))
        }
    }
}

async fn connect(to: Endpoint) -> io::Result<Conn> {
    let socket = if to.target.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    if let Some(ip) = to.source {
        socket.bind(SocketAddr::new(ip, 0))?;
    }
    let stream = socket.connect(to.target).await?;
    stream.set_nodelay(true)?;
    Ok(Conn(Reader::new(stream)))
}

/// How one attempt on a connection failed.
enum Attempt {
    /// Nothing came back on a connection that was open: it was closed while idle, and the
    /// request can be sent again on a new one.
    Stale,
    Failed(Failure),
}

fn failure(e: WireError) -> Failure {
    match e {
        WireError::Malformed(_) => Failure::Malformed,
        WireError::Eof | WireError::Io(_) => Failure::Reset,
    }
}

impl Conn {
    /// Sends `request` and reads its response; also returns whether the connection can carry
    /// the next request.
    async fn send(&mut self, request: &[u8], head_only: bool) -> Result<(Answer, bool), Attempt> {
        let before = self.0.read;
        if self.0.get_mut().write_all(request).await.is_err() {
            return Err(Attempt::Stale);
        }
        let head = loop {
            let head = match self.0.head(parse_head).await {
                Ok(Some(head)) => head,
                Ok(None) => return Err(Attempt::Stale),
                Err(WireError::Io(_)) if self.0.read == before => return Err(Attempt::Stale),
                Err(e) => return Err(Attempt::Failed(failure(e))),
            };
            match head.status {
                // Interim responses (100 Continue, 103 Early Hints): the answer follows.
                100 | 102..=199 => continue,
                101 => return Err(Attempt::Failed(Failure::Malformed)),
                _ => break head,
            }
        };
        let framing = if head_only || matches!(head.status, 204 | 304) {
            Framing::Empty
        } else {
            head.framing.unwrap_or(Framing::UntilClose)
        };
        let body = self
            .0
            .skip_body(framing)
            .await
            .map_err(|e| Attempt::Failed(failure(e)))?;
        let answer = Answer {
            status: head.status,
            bytes: self.0.read - before,
            body,
        };
        let reusable = !head.close && framing != Framing::UntilClose;
        Ok((answer, reusable))
    }
}

/// Sends one request on `conn`, opening a connection first when there is none, and reads the
/// whole response. A request that finds a kept-alive connection closed is sent once more on a
/// new one. `conn` is left empty when the connection cannot carry another request.
pub async fn exchange(
    conn: &mut Option<Conn>,
    to: Endpoint,
    request: &[u8],
    head_only: bool,
) -> Result<Answer, Failure> {
    let mut reused = conn.is_some();
    loop {
        let c = match conn {
            Some(c) => c,
            None => conn.insert(connect(to).await.map_err(|_| Failure::Connect)?),
        };
        match c.send(request, head_only).await {
            Ok((answer, reusable)) => {
                if !reusable {
                    *conn = None;
                }
                return Ok(answer);
            }
            Err(Attempt::Stale) if reused => {
                *conn = None;
                reused = false;
            }
            Err(Attempt::Stale) => {
                *conn = None;
                return Err(Failure::Reset);
            }
            Err(Attempt::Failed(f)) => {
                *conn = None;
                return Err(f);
            }
        }
    }
}
