//! HTTP/1.0 and 1.1 on the wire, as a proxy needs it, without a framework: heads are parsed
//! with `httparse` into byte ranges of the connection's own buffers (no per-request
//! allocation), bodies are relayed piece by piece through bounded buffers, and every way a
//! request can be malformed or ambiguous maps to one typed error with its status code.
//!
//! - [`request`]: the request-head reader with its limits and the RFC 9112 smuggling checks.
//! - [`response`]: the response-head reader for what peers, origins and upstreams send.
//! - [`fields`]: which header fields a proxy consumes, rewrites or drops (RFC 9110 7.6.1).
//! - [`chunked`]: the chunked transfer-coding decoder and encoder.
//! - [`body`]: reading a body of any framing, piece by piece.
//! - [`forward`]: building the heads a proxy sends on (request upstream, response downstream).
//! - [`canned`]: the sidecar's own small responses (errors, `100 Continue`).
//! - [`wire`]: vectored writes and reads with deadlines.

pub mod body;
pub mod canned;
pub mod chunked;
pub mod fields;
pub mod forward;
pub mod request;
pub mod response;
pub mod wire;

/// A byte range of a head inside the buffer it was parsed from; heads keep ranges instead of
/// slices so that the buffer can be reused without borrowing trouble.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Span {
    start: u32,
    end: u32,
}

impl Span {
    /// The range that `part` (a subslice of `base`) occupies in `base`.
    fn within(base: &[u8], part: &[u8]) -> Self {
        let start = (part.as_ptr() as usize).saturating_sub(base.as_ptr() as usize);
        let end = start + part.len();
        debug_assert!(end <= base.len());
        // Heads are bounded far below 4 GiB by the limits.
        Self {
            start: start as u32,
            end: end as u32,
        }
    }

    /// The bytes of this range in `buf` (the buffer the head was parsed from).
    pub fn of<'a>(&self, buf: &'a [u8]) -> &'a [u8] {
        buf.get(self.start as usize..self.end as usize)
            .unwrap_or_default()
    }
}

/// One header field of a parsed head: where its name and value are, and what it means to us.
#[derive(Debug, Clone, Copy)]
pub struct Field {
    /// The field name's range.
    pub name: Span,
    /// The field value's range (without surrounding whitespace).
    pub value: Span,
    /// What the sidecar does with it.
    pub kind: fields::Kind,
}
