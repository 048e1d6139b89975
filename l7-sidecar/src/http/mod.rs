//! HTTP/1.0 and 1.1 on the wire, as a proxy needs it, without a framework: heads are parsed
//! with `httparse` into byte ranges of the connection's own buffers (no per-request
//! allocation), bodies are relayed piece by piece through bounded buffers, and every way a
//! request can be malformed or ambiguous maps to one typed error with its status code.
//!
//! - [`request`]: the request-head reader with its limits and the RFC 9112 smuggling checks.
//! - [`response`]: the response-head reader for what peers, origins and upstreams send.
//! - [`fields`]: which header fields a proxy consumes, rewrites or drops (RFC 9110 7.6.1).
//! - [`chunked`]: the chunked transfer-coding decoder and encoder.
//! - [`date`]: HTTP dates, read in the three formats and written as IMF-fixdate.
//! - [`body`]: reading a body of any framing, piece by piece.
//! - [`forward`]: building the heads a proxy sends on (request upstream, response downstream).
//! - [`canned`]: the sidecar's own small responses (errors, `100 Continue`).
//! - [`wire`]: vectored writes and reads with deadlines.

pub mod body;
pub mod canned;
pub mod chunked;
pub mod date;
pub mod fields;
pub mod forward;
pub mod request;
pub mod response;
pub mod wire;

pub use fields::{Field, Span};
