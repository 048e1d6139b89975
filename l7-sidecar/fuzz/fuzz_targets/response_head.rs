//! Fuzzes the response-head reader (`l7_sidecar::http::response::parse`), what the sidecar
//! decides from a head (body framing for GET and HEAD, the head re-written for the client)
//! and the chunked decoder on what follows: no input may panic, a complete head's ranges stay
//! inside the input, the head written for the client is itself a head the reader accepts
//! with the same status (when it fits the reader's field array), and the decoder never claims more bytes than it was given.
//!
//! ```text
//! cd l7-sidecar && cargo +nightly fuzz run response_head -- -max_total_time=600
//! ```
#![no_main]

use bytes::BytesMut;
use l7_sidecar::http::body::Framing;
use l7_sidecar::http::forward::{self, Connection, Length};
use l7_sidecar::http::response::{self, ResponseHead};
use libfuzzer_sys::fuzz_target;

mod walk;

fuzz_target!(|data: &[u8]| {
    let mut head = ResponseHead::default();
    let Ok(true) = response::parse(data, 2048, &mut head) else {
        return;
    };
    assert!(head.len <= data.len());
    let _ = head.reason(data);
    for f in head.fields() {
        let _ = (f.name.of(data), f.value.of(data));
    }
    let framing = head.framing(false);
    assert_eq!(head.framing(true), Framing::Empty);
    if head.status == 204 || head.status == 304 || head.status < 200 {
        assert_eq!(framing, Framing::Empty);
    }
    let length = match framing {
        Framing::Empty => Length::AsReceived,
        Framing::Length(n) => Length::Exactly(n),
        Framing::Chunked => Length::Chunked,
        Framing::UntilClose => Length::Close,
    };
    let mut out = BytesMut::new();
    forward::response(&mut out, &head, data, b"1.1 dl7", length);
    forward::finish(&mut out, Connection::Default);
    // (The rewritten head has up to two more fields than the reader's array may hold.)
    if head.fields().len() + 2 < response::MAX_FIELDS {
        let mut again = ResponseHead::default();
        assert_eq!(response::parse(&out, 1 << 20, &mut again), Ok(true));
        assert_eq!(again.status, head.status);
        assert_eq!(again.len, out.len());
    }
    if framing == Framing::Chunked {
        walk::chunked_body(&data[head.len..]);
    }
});
