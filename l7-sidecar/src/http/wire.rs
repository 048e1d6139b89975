//! Socket reads and writes with deadlines. Writes are vectored (`writev`): a response head
//! built in one buffer and a body piece still sitting in another leave in one system call.

use std::io::{self, IoSlice};
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Free space made in a buffer before a read: big enough that a large body moves in few
/// system calls, small enough that buffers stay bounded.
pub const READ_CHUNK: usize = 32 * 1024;

/// Reads once into `buf` (after making room for [`READ_CHUNK`] bytes), within `timeout`.
/// Ok(0) is end of stream; a timeout is an error of kind `TimedOut`.
pub async fn read<R: AsyncRead + Unpin>(
    src: &mut R,
    buf: &mut BytesMut,
    timeout: Duration,
) -> io::Result<usize> {
    read_up_to(src, buf, READ_CHUNK, timeout).await
}

/// Like [`read`], making room for only `room` bytes (for heads, whose size is limited).
pub async fn read_up_to<R: AsyncRead + Unpin>(
    src: &mut R,
    buf: &mut BytesMut,
    room: usize,
    timeout: Duration,
) -> io::Result<usize> {
    buf.reserve(room);
    match tokio::time::timeout(timeout, src.read_buf(buf)).await {
        Ok(result) => result,
        Err(_) => Err(io::ErrorKind::TimedOut.into()),
    }
}

/// Writes all of `parts`, in as few `writev` calls as the socket takes, within `timeout`
/// overall. A timeout is an error of kind `TimedOut`.
pub async fn write_all<W: AsyncWrite + Unpin>(
    dst: &mut W,
    parts: &mut [IoSlice<'_>],
    timeout: Duration,
) -> io::Result<()> {
    let write = async {
        let mut parts = parts;
        IoSlice::advance_slices(&mut parts, 0);
        while !parts.is_empty() {
            let n = dst.write_vectored(parts).await?;
            if n == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            IoSlice::advance_slices(&mut parts, n);
        }
        Ok(())
    };
    match tokio::time::timeout(timeout, write).await {
        Ok(result) => result,
        Err(_) => Err(io::ErrorKind::TimedOut.into()),
    }
}

/// [`write_all`] for one buffer.
pub async fn write_one<W: AsyncWrite + Unpin>(
    dst: &mut W,
    bytes: &[u8],
    timeout: Duration,
) -> io::Result<()> {
    match tokio::time::timeout(timeout, dst.write_all(bytes)).await {
        Ok(result) => result,
        Err(_) => Err(io::ErrorKind::TimedOut.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn writes_every_part_in_order() {
        let (mut a, mut b) = tokio::io::duplex(7);
        let writer = tokio::spawn(async move {
            let big = vec![b'x'; 100];
            let mut parts = [
                IoSlice::new(b"head "),
                IoSlice::new(b""),
                IoSlice::new(&big),
            ];
            write_all(&mut a, &mut parts, Duration::from_secs(5)).await
        });
        let mut got = Vec::new();
        b.read_to_end(&mut got).await.unwrap();
        writer.await.unwrap().unwrap();
        assert_eq!(got.len(), 105);
        assert!(got.starts_with(b"head x"));
    }

    #[tokio::test]
    async fn reads_time_out() {
        let (_a, mut b) = tokio::io::duplex(7);
        let mut buf = BytesMut::new();
        let e = read(&mut b, &mut buf, Duration::from_millis(10))
            .await
            .unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
    }
}
