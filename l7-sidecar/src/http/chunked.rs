//! The chunked transfer coding (RFC 9112 7.1): an incremental decoder that validates every
//! byte of framing and hands out the data in place, and the two pieces an encoder needs.
//!
//! The decoder is strict where leniency has been used for smuggling: chunk sizes are 1 to 16
//! hex digits, the size line ends in CRLF (a bare LF is an error), whitespace after the size
//! is only allowed before a `;` extension, extensions and trailers are bounded and may not
//! contain control characters, each trailer line must be a field (`token ":" value`, no
//! obs-fold), and the data of each chunk must be followed by exactly CRLF. Extensions and
//! trailer fields are validated and dropped.
//!
//! ```
//! use l7_sidecar::http::chunked::{Decoder, Step};
//!
//! let mut d = Decoder::default();
//! let input = b"5\r\nhello\r\n0\r\n\r\n";
//! assert_eq!(d.step(input), Ok(Step::Data { skip: 3, len: 5 }));
//! assert_eq!(d.step(&input[8..]), Ok(Step::Done { skip: 7 }));
//! ```

/// Longest chunk-size line tail (extensions) accepted, in bytes.
const MAX_EXTENSION: u32 = 4096;
/// Largest trailer section accepted, in bytes.
const MAX_TRAILERS: u32 = 16 * 1024;

/// What the bytes given to [`Decoder::step`] held.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// `skip` bytes of framing, then `len` bytes of data (`input[skip..skip + len]`).
    Data {
        /// Framing bytes before the data.
        skip: usize,
        /// Data bytes.
        len: usize,
    },
    /// All `skip` bytes were framing; more input is needed.
    NeedMore {
        /// Bytes consumed (all of the input).
        skip: usize,
    },
    /// The body ended after `skip` bytes (last chunk and trailers included).
    Done {
        /// Bytes consumed; what follows belongs to the next message.
        skip: usize,
    },
}

/// Why chunked framing was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ChunkError {
    /// A chunk size that is not 1 to 16 hex digits, or junk after it.
    #[error("invalid chunk size line")]
    BadSize,
    /// A line that does not end in CRLF where one must.
    #[error("chunked framing without CRLF")]
    BadLineEnding,
    /// Chunk extensions longer than the limit.
    #[error("chunk extension too long")]
    ExtensionTooLong,
    /// A trailer section larger than the limit, or with control characters.
    #[error("invalid or too large trailer section")]
    BadTrailers,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
enum State {
    #[default]
    Size,
    SizeSpace,
    Extension,
    SizeLf,
    Data,
    DataCr,
    DataLf,
    TrailerStart,
    TrailerName,
    TrailerValue,
    TrailerLf,
    EndLf,
    Done,
}

/// Incremental chunked decoder. Feed it the unconsumed input again and again; it keeps its
/// position in the framing between calls.
#[derive(Debug, Clone, Default)]
pub struct Decoder {
    state: State,
    size: u64,
    digits: u8,
    line: u32,
    trailers: u32,
}

impl Decoder {
    /// True once the last chunk and the trailer section have been read.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Consumes framing at the start of `input` and reports the next data, the end, or that
    /// more input is needed. Data reported is taken as consumed by the decoder; the caller
    /// must skip exactly `skip + len` bytes before the next call.
    pub fn step(&mut self, input: &[u8]) -> Result<Step, ChunkError> {
        for (i, &b) in input.iter().enumerate() {
            match self.state {
                State::Data => {
                    let len =
                        (input.len() - i).min(usize::try_from(self.size).unwrap_or(usize::MAX));
                    self.size -= len as u64;
                    if self.size == 0 {
                        self.state = State::DataCr;
                    }
                    return Ok(Step::Data { skip: i, len });
                }
                State::Size => match hex(b) {
                    Some(v) if self.digits < 16 => {
                        self.size = self.size << 4 | u64::from(v);
                        self.digits += 1;
                    }
                    _ if self.digits == 0 => return Err(ChunkError::BadSize),
                    None if b == b'\r' => self.state = State::SizeLf,
                    None if b == b' ' || b == b'\t' => self.state = State::SizeSpace,
                    None if b == b';' => self.state = State::Extension,
                    _ => return Err(ChunkError::BadSize),
                },
                State::SizeSpace => match b {
                    b' ' | b'\t' => {}
                    b';' => self.state = State::Extension,
                    _ => return Err(ChunkError::BadSize),
                },
                State::Extension => match b {
                    b'\r' => self.state = State::SizeLf,
                    b'\t' => self.count_extension()?,
                    0..=0x1f | 0x7f => return Err(ChunkError::BadSize),
                    _ => self.count_extension()?,
                },
                State::SizeLf => {
                    if b != b'\n' {
                        return Err(ChunkError::BadLineEnding);
                    }
                    self.state = if self.size == 0 {
                        State::TrailerStart
                    } else {
                        State::Data
                    };
                    self.digits = 0;
                    self.line = 0;
                }
                State::DataCr => {
                    if b != b'\r' {
                        return Err(ChunkError::BadLineEnding);
                    }
                    self.state = State::DataLf;
                }
                State::DataLf => {
                    if b != b'\n' {
                        return Err(ChunkError::BadLineEnding);
                    }
                    self.state = State::Size;
                }
                State::TrailerStart => match b {
                    b'\r' => self.state = State::EndLf,
                    b if is_tchar(b) => {
                        self.count_trailer()?;
                        self.state = State::TrailerName;
                    }
                    b'\n' => return Err(ChunkError::BadLineEnding),
                    _ => return Err(ChunkError::BadTrailers),
                },
                State::TrailerName => match b {
                    b':' => {
                        self.count_trailer()?;
                        self.state = State::TrailerValue;
                    }
                    b if is_tchar(b) => self.count_trailer()?,
                    _ => return Err(ChunkError::BadTrailers),
                },
                State::TrailerValue => match b {
                    b'\r' => self.state = State::TrailerLf,
                    b'\t' | 0x20..=0x7e | 0x80..=0xff => self.count_trailer()?,
                    b'\n' => return Err(ChunkError::BadLineEnding),
                    _ => return Err(ChunkError::BadTrailers),
                },
                State::TrailerLf => {
                    if b != b'\n' {
                        return Err(ChunkError::BadLineEnding);
                    }
                    self.state = State::TrailerStart;
                }
                State::EndLf => {
                    if b != b'\n' {
                        return Err(ChunkError::BadLineEnding);
                    }
                    self.state = State::Done;
                    return Ok(Step::Done { skip: i + 1 });
                }
                State::Done => return Ok(Step::Done { skip: i }),
            }
        }
        if self.state == State::Done {
            return Ok(Step::Done { skip: 0 });
        }
        Ok(Step::NeedMore { skip: input.len() })
    }

    fn count_trailer(&mut self) -> Result<(), ChunkError> {
        self.trailers += 1;
        if self.trailers > MAX_TRAILERS {
            return Err(ChunkError::BadTrailers);
        }
        Ok(())
    }

    fn count_extension(&mut self) -> Result<(), ChunkError> {
        self.line += 1;
        if self.line > MAX_EXTENSION {
            return Err(ChunkError::ExtensionTooLong);
        }
        Ok(())
    }
}

/// A field-name character (RFC 9110 5.6.2 `tchar`).
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// The last chunk with an empty trailer section.
pub const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

/// The size line of a chunk of `len` bytes (`len > 0`), written into `scratch`.
pub fn size_line(len: usize, scratch: &mut [u8; 18]) -> &[u8] {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut digits = [0u8; 16];
    let mut n = len;
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = HEX[n & 0xf];
        n >>= 4;
        if n == 0 {
            break;
        }
    }
    let count = digits.len() - i;
    scratch[..count].copy_from_slice(&digits[i..]);
    scratch[count..count + 2].copy_from_slice(b"\r\n");
    &scratch[..count + 2]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Decodes all of `input` fed in pieces of `piece` bytes; returns the data and the rest.
    fn decode(input: &[u8], piece: usize) -> Result<(Vec<u8>, usize), ChunkError> {
        let mut d = Decoder::default();
        let mut data = Vec::new();
        let mut pos = 0;
        let mut avail = piece.min(input.len());
        loop {
            match d.step(&input[pos..avail])? {
                Step::Data { skip, len } => {
                    data.extend_from_slice(&input[pos + skip..pos + skip + len]);
                    pos += skip + len;
                }
                Step::NeedMore { skip } => {
                    pos += skip;
                    if avail == input.len() {
                        return Err(ChunkError::BadLineEnding);
                    }
                    avail = (avail + piece).min(input.len());
                }
                Step::Done { skip } => return Ok((data, pos + skip)),
            }
        }
    }

    #[test]
    fn decodes_in_any_split() {
        let input =
            b"4;a=b\r\nWiki\r\n5\r\npedia\r\nE\r\n in\r\n\r\nchunks.\r\n0\r\nX-T: 1\r\n\r\nNEXT";
        for piece in 1..input.len() {
            let (data, end) = decode(input, piece).unwrap();
            assert_eq!(data, b"Wikipedia in\r\n\r\nchunks.", "piece {piece}");
            assert_eq!(&input[end..], b"NEXT");
        }
    }

    #[test]
    fn refuses_lenient_framing() {
        for bad in [
            &b"5\nhello\r\n0\r\n\r\n"[..],
            b"5\r\nhello\n0\r\n\r\n",
            b"5\r\nhelloXX0\r\n\r\n",
            b"5 \r\nhello\r\n0\r\n\r\n",
            b"x\r\n",
            b"\r\n",
            b"-1\r\n",
            b"0x5\r\nhello\r\n0\r\n\r\n",
            b"11111111111111111\r\n",
            b"0\r\n\r\r\n",
            b"0\r\nX: a\nb\r\n\r\n",
            b"1;\x00\r\n",
            // Trailer lines that are not fields.
            b"0\r\nno colon\r\n\r\n",
            b"0\r\n: empty name\r\n\r\n",
            b"0\r\nX : space before colon\r\n\r\n",
            b"0\r\nX: a\r\n folded\r\n\r\n",
            b"0\r\nX: a\x01\r\n\r\n",
            b"0\r\nX\x7f: a\r\n\r\n",
        ] {
            assert!(
                decode(bad, bad.len()).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn bounds_extensions_and_trailers() {
        let mut long = b"1;".to_vec();
        long.extend(std::iter::repeat_n(b'a', 5000));
        assert_eq!(
            Decoder::default().step(&long),
            Err(ChunkError::ExtensionTooLong)
        );
        let mut trailers = b"0\r\n".to_vec();
        for _ in 0..2000 {
            trailers.extend_from_slice(b"X-Trailer: 1234\r\n");
        }
        assert_eq!(
            Decoder::default().step(&trailers),
            Err(ChunkError::BadTrailers)
        );
    }

    #[test]
    fn size_lines() {
        let mut s = [0; 18];
        assert_eq!(size_line(1, &mut s), b"1\r\n");
        assert_eq!(size_line(0x1a2b, &mut s), b"1a2b\r\n");
        assert_eq!(size_line(usize::MAX, &mut s).len(), 18);
    }
}
