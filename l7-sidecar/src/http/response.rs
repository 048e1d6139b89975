//! The response-head reader for what peers, origins and upstreams send back. Malformed or
//! ambiguous responses are refused (the client gets a 502) rather than guessed at:
//! `Transfer-Encoding` other than `chunked`, `Transfer-Encoding` with `Content-Length`,
//! `Content-Length` values that differ, a status outside 100-599 (RFC 9110 15).

use std::mem::MaybeUninit;

use super::body::Framing;
use super::fields::{self, Kind};
use super::fields::{Field, Span};

/// Most header fields accepted in a response.
pub const MAX_FIELDS: usize = 256;

/// Why a response head was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ResponseError {
    /// Larger than the response head limit.
    #[error("response head larger than {0} bytes")]
    TooLarge(usize),
    /// `httparse` refused it.
    #[error("malformed response head: {0}")]
    Malformed(httparse::Error),
    /// Framing fields that contradict each other or that the sidecar does not relay.
    #[error("ambiguous response framing")]
    Framing,
}

/// A parsed response head, as ranges into the buffer it was parsed from. Reused.
#[derive(Debug, Default)]
pub struct ResponseHead {
    /// Length of the head in the buffer.
    pub len: usize,
    /// Status code.
    pub status: u16,
    /// The server closes the connection after this response.
    pub close: bool,
    /// `Content-Length`, when given.
    pub length: Option<u64>,
    /// `Transfer-Encoding: chunked`.
    pub chunked: bool,
    reason: Span,
    fields: Vec<Field>,
}

impl ResponseHead {
    /// The reason phrase (may be empty).
    pub fn reason<'a>(&self, buf: &'a [u8]) -> &'a [u8] {
        self.reason.of(buf)
    }

    /// All header fields in order.
    pub fn fields(&self) -> &[Field] {
        &self.fields
    }

    /// How the body is framed (RFC 9112 6.3), given whether the request was `HEAD`.
    pub fn framing(&self, head_request: bool) -> Framing {
        if head_request || self.status < 200 || self.status == 204 || self.status == 304 {
            Framing::Empty
        } else if self.chunked {
            Framing::Chunked
        } else if let Some(n) = self.length {
            Framing::Length(n)
        } else {
            Framing::UntilClose
        }
    }
}

/// Parses the response head at the start of `buf`: `Ok(false)` when incomplete.
pub fn parse(buf: &[u8], max_bytes: usize, head: &mut ResponseHead) -> Result<bool, ResponseError> {
    let mut storage = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_FIELDS];
    let mut resp = httparse::Response::new(&mut []);
    let parsed = httparse::ParserConfig::default().parse_response_with_uninit_headers(
        &mut resp,
        buf,
        &mut storage,
    );
    let len = match parsed {
        Ok(httparse::Status::Complete(len)) if len <= max_bytes => len,
        Ok(httparse::Status::Partial) if buf.len() < max_bytes => return Ok(false),
        Ok(_) => return Err(ResponseError::TooLarge(max_bytes)),
        Err(e) => return Err(ResponseError::Malformed(e)),
    };
    let (Some(minor), Some(status), Some(reason)) = (resp.version, resp.code, resp.reason) else {
        return Err(ResponseError::Malformed(httparse::Error::Status));
    };
    if !(100..=599).contains(&status) {
        return Err(ResponseError::Malformed(httparse::Error::Status));
    }
    head.len = len;
    head.status = status;
    head.reason = Span::within(buf, reason.as_bytes());
    head.length = None;
    head.chunked = false;
    head.fields.clear();
    let mut connection = fields::ConnectionOptions::default();
    for h in resp.headers.iter() {
        let (name, value) = (h.name.as_bytes(), fields::trim(h.value));
        let kind = fields::classify(name);
        match kind {
            Kind::ContentLength => {
                let n = fields::decimal(value).ok_or(ResponseError::Framing)?;
                if head.length.is_some_and(|m| m != n) {
                    return Err(ResponseError::Framing);
                }
                head.length = Some(n);
            }
            Kind::TransferEncoding => {
                if head.chunked || !value.eq_ignore_ascii_case(b"chunked") {
                    return Err(ResponseError::Framing);
                }
                head.chunked = true;
            }
            Kind::Connection => connection.read(value),
            _ => {}
        }
        head.fields.push(Field {
            name: Span::within(buf, name),
            value: Span::within(buf, value),
            kind,
        });
    }
    if head.chunked && head.length.is_some() {
        return Err(ResponseError::Framing);
    }
    if connection.names_fields {
        fields::mark_named(buf, &mut head.fields, Kind::is_plain);
    }
    head.close = connection.closes(minor);
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(buf: &[u8]) -> Result<ResponseHead, ResponseError> {
        let mut head = ResponseHead::default();
        assert!(parse(buf, 1024, &mut head)?);
        Ok(head)
    }

    #[test]
    fn framing_per_rfc_9112() {
        let h = parsed(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n").unwrap();
        assert_eq!(h.framing(false), Framing::Length(5));
        assert_eq!(h.framing(true), Framing::Empty);
        let h = parsed(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n").unwrap();
        assert_eq!(h.framing(false), Framing::Chunked);
        let h = parsed(b"HTTP/1.0 200 OK\r\n\r\n").unwrap();
        assert_eq!(h.framing(false), Framing::UntilClose);
        assert!(h.close);
        let h = parsed(b"HTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\n\r\n").unwrap();
        assert_eq!(h.framing(false), Framing::Empty);
        assert_eq!(h.reason(b"HTTP/1.1 304 Not Modified\r\n"), b"Not Modified");
    }

    #[test]
    fn ambiguous_framing_is_refused() {
        for bad in [
            &b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n"[..],
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
        ] {
            assert_eq!(parsed(bad).unwrap_err(), ResponseError::Framing);
        }
        assert!(
            parsed(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n").is_ok()
        );
        let mut head = ResponseHead::default();
        for status in ["096", "000", "600", "999"] {
            let bad = format!("HTTP/1.1 {status} X\r\n\r\n");
            assert_eq!(
                parse(bad.as_bytes(), 1024, &mut head),
                Err(ResponseError::Malformed(httparse::Error::Status)),
                "{status}"
            );
        }
        assert_eq!(
            parse(&[b'x'; 2000], 1024, &mut head),
            Err(ResponseError::Malformed(httparse::Error::Version))
        );
        let long = [&b"HTTP/1.1 200 OK\r\nX: "[..], &[b'a'; 2000]].concat();
        assert_eq!(
            parse(&long, 1024, &mut head),
            Err(ResponseError::TooLarge(1024))
        );
    }
}
