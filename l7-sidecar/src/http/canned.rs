//! The responses the sidecar makes itself: errors (always complete, well-formed messages with
//! a length, so a client never has to guess where they end), `100 Continue`, and the heads
//! of the admin endpoint's answers.
//!
//! ```
//! use bytes::BytesMut;
//! use l7_sidecar::http::canned;
//!
//! let mut out = BytesMut::new();
//! canned::error(&mut out, 431, true);
//! assert!(out.starts_with(b"HTTP/1.1 431 Request Header Fields Too Large\r\n"));
//! assert!(out.ends_with(b"Connection: close\r\n\r\n431 Request Header Fields Too Large\n"));
//! ```

use bytes::{BufMut, BytesMut};

/// The interim response to `Expect: 100-continue`.
pub const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

/// The reason phrase of the status codes the sidecar produces.
pub fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        304 => "Not Modified",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        412 => "Precondition Failed",
        413 => "Content Too Large",
        414 => "URI Too Long",
        417 => "Expectation Failed",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        508 => "Loop Detected",
        _ => "",
    }
}

/// Appends a head: status line, `Content-Type`, `Content-Length`, and `Connection: close`
/// when `close`, then the empty line.
pub fn head(out: &mut BytesMut, status: u16, content_type: &str, length: usize, close: bool) {
    let mut n = itoa::Buffer::new();
    out.put_slice(b"HTTP/1.1 ");
    out.put_slice(n.format(status).as_bytes());
    out.put_u8(b' ');
    out.put_slice(reason(status).as_bytes());
    out.put_slice(b"\r\nContent-Type: ");
    out.put_slice(content_type.as_bytes());
    out.put_slice(b"\r\nContent-Length: ");
    out.put_slice(n.format(length).as_bytes());
    out.put_slice(if close {
        &b"\r\nConnection: close\r\n\r\n"[..]
    } else {
        b"\r\n\r\n"
    });
}

/// Appends a complete error response whose body is the status line's text.
pub fn error(out: &mut BytesMut, status: u16, close: bool) {
    let mut n = itoa::Buffer::new();
    let code = n.format(status);
    let text = reason(status);
    head(
        out,
        status,
        "text/plain",
        code.len() + 1 + text.len() + 1,
        close,
    );
    out.put_slice(code.as_bytes());
    out.put_u8(b' ');
    out.put_slice(text.as_bytes());
    out.put_u8(b'\n');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_length_matches_body() {
        for status in [400, 408, 413, 414, 417, 431, 501, 502, 503, 504, 505, 508] {
            let mut out = BytesMut::new();
            error(&mut out, status, false);
            let text = String::from_utf8(out.to_vec()).unwrap();
            let (head, body) = text.split_once("\r\n\r\n").unwrap();
            let length: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("Content-Length: "))
                .unwrap()
                .parse()
                .unwrap();
            assert_eq!(length, body.len(), "{status}");
            assert!(!reason(status).is_empty());
        }
    }
}
