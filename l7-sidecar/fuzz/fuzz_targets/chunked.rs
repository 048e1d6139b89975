//! Fuzzes the chunked decoder (`l7_sidecar::http::chunked::Decoder`) the way a socket feeds
//! it: the input (after two bytes that choose the split sizes) is decoded once whole and once
//! in pieces of varying size; both must agree on the data, on where the body ends and on
//! whether it is refused, and no step may claim more bytes than it was given.
//!
//! ```text
//! cd l7-sidecar && cargo +nightly fuzz run chunked -- -max_total_time=600
//! ```
#![no_main]

use l7_sidecar::http::chunked::{ChunkError, Decoder, Step};
use libfuzzer_sys::fuzz_target;

/// What a decode found: the data, and where the body ended (or that it needs more, or the
/// error).
#[derive(Debug, PartialEq, Eq)]
struct Decoded {
    data: Vec<u8>,
    end: Result<Option<usize>, ChunkError>,
}

/// Decodes `input` handing the decoder at most `piece(i)` new bytes at the `i`th call.
fn decode(input: &[u8], piece: impl Fn(usize) -> usize) -> Decoded {
    let mut decoder = Decoder::default();
    let mut data = Vec::new();
    let (mut pos, mut avail, mut call) = (0, 0, 0);
    loop {
        avail = (avail + piece(call).max(1)).min(input.len()).max(pos);
        call += 1;
        loop {
            let window = &input[pos..avail];
            let step = match decoder.step(window) {
                Ok(step) => step,
                Err(e) => return Decoded { data, end: Err(e) },
            };
            match step {
                Step::Data { skip, len } => {
                    assert!(skip + len <= window.len());
                    data.extend_from_slice(&window[skip..skip + len]);
                    pos += skip + len;
                }
                Step::NeedMore { skip } => {
                    assert_eq!(skip, window.len());
                    pos += skip;
                    break;
                }
                Step::Done { skip } => {
                    assert!(skip <= window.len());
                    return Decoded {
                        data,
                        end: Ok(Some(pos + skip)),
                    };
                }
            }
        }
        if avail == input.len() {
            return Decoded {
                data,
                end: Ok(None),
            };
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let [a, b, input @ ..] = data else { return };
    let (a, b) = (usize::from(*a), usize::from(*b));
    let whole = decode(input, |_| input.len());
    let split = decode(input, |i| if i % 2 == 0 { a } else { b });
    assert_eq!(whole, split);
});
