//! Fuzzes the request-head reader (`l7_sidecar::http::request::parse`) and, after a complete
//! head, the chunked decoder on what follows: no input may panic, a complete head's ranges
//! stay inside the input, and the decoder never claims more bytes than it was given.
//!
//! ```text
//! cd l7-sidecar && cargo +nightly fuzz run head_reader
//! ```
#![no_main]

use l7_sidecar::http::request::{self, Limits, RequestHead};
use libfuzzer_sys::fuzz_target;

mod walk;

fuzz_target!(|data: &[u8]| {
    // Small limits so that the limit paths are reached too.
    let limits = Limits {
        head_bytes: 1024,
        headers: 16,
        uri_bytes: 256,
    };
    let mut head = RequestHead::default();
    let Ok(true) = request::parse(data, &limits, &mut head) else {
        return;
    };
    assert!(head.len <= data.len());
    let _ = (head.target(data), head.host(data), head.method_bytes(data));
    for f in head.fields() {
        let _ = (f.name.of(data), f.value.of(data));
    }
    walk::chunked_body(&data[head.len..]);
});
