//! Shared by the fuzz targets: decoding a chunked body that follows a head.

use l7_sidecar::http::chunked::{Decoder, Step};

/// Runs the chunked decoder over `rest` to its end or its first error, checking that no
/// step claims more bytes than it was given.
pub fn chunked_body(mut rest: &[u8]) {
    let mut decoder = Decoder::default();
    while let Ok(step) = decoder.step(rest) {
        let used = match step {
            Step::Data { skip, len } => skip + len,
            Step::NeedMore { skip } | Step::Done { skip } => skip,
        };
        assert!(used <= rest.len());
        rest = &rest[used..];
        if !matches!(step, Step::Data { .. }) {
            break;
        }
    }
}
