//! Socket reads and writes with deadlines. Writes are vectored (`writev`): a response head
//! built in one buffer and a body piece still sitting in another leave in one system call.
//! Every write ends with a flush: a no-op on a TCP socket, and what sends the last records
//! a TLS stream holds back.

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
        dst.flush().await
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
    let write = async {
        dst.write_all(bytes).await?;
        dst.flush().await
    };
    match tokio::time::timeout(timeout, write).await {
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

/// Which side of a [`splice_exactly`] failed.
#[derive(Debug)]
pub enum SpliceError {
    /// Reading the source: it failed, closed early or sent nothing in time.
    Source(io::Error),
    /// Writing the destination: it failed or took nothing in time.
    Destination(io::Error),
}

/// The pipe [`splice_exactly`] asks for (the kernel may grant less; 64 KiB is the default).
const SPLICE_PIPE_BYTES: libc::c_int = 1 << 18;

/// Moves exactly `len` bytes from `from` to `to` through a pipe with splice(2), so that the
/// bytes never enter user space: a large body of known length relayed as it is. Each round
/// fills the pipe from `from` once (`read_timeout` bounds the wait for bytes), then empties it
/// into `to` (`write_timeout` bounds each wait for room); the pipe is empty whenever `from` is
/// read, so "would block" there always means that `from` has nothing yet.
pub async fn splice_exactly(
    from: &tokio::net::TcpStream,
    to: &tokio::net::TcpStream,
    len: u64,
    read_timeout: Duration,
    write_timeout: Duration,
) -> Result<(), SpliceError> {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    use tokio::io::Interest;

    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: `fds` has room for the two descriptors pipe2 writes.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) } != 0 {
        return Err(SpliceError::Destination(io::Error::last_os_error()));
    }
    // SAFETY: pipe2 succeeded: both descriptors are new and owned only here.
    let (pipe_out, pipe_in) =
        unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    // SAFETY: F_SETPIPE_SZ on a pipe this function owns; failure leaves the default size.
    let granted =
        unsafe { libc::fcntl(pipe_in.as_raw_fd(), libc::F_SETPIPE_SZ, SPLICE_PIPE_BYTES) };
    let capacity = if granted > 0 { granted as u64 } else { 65_536 };
    let splice = |from: libc::c_int, to: libc::c_int, n: u64| {
        let n = usize::try_from(n).unwrap_or(usize::MAX);
        let flags = libc::SPLICE_F_MOVE | libc::SPLICE_F_NONBLOCK;
        // SAFETY: plain descriptors, no memory is passed; null offsets splice at the current
        // position of the socket and the pipe.
        let moved = unsafe {
            libc::splice(
                from,
                std::ptr::null_mut(),
                to,
                std::ptr::null_mut(),
                n,
                flags,
            )
        };
        if moved < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(moved as u64)
        }
    };
    let (source, sink) = (from.as_raw_fd(), to.as_raw_fd());
    let mut left = len;
    while left > 0 {
        let mut in_pipe = loop {
            match from.try_io(Interest::READABLE, || {
                splice(source, pipe_in.as_raw_fd(), left.min(capacity))
            }) {
                Ok(0) => {
                    let early = io::Error::new(io::ErrorKind::UnexpectedEof, "closed in the body");
                    return Err(SpliceError::Source(early));
                }
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    match tokio::time::timeout(read_timeout, from.readable()).await {
                        Ok(Ok(())) => {}
                        Ok(Err(e)) => return Err(SpliceError::Source(e)),
                        Err(_) => return Err(SpliceError::Source(io::ErrorKind::TimedOut.into())),
                    }
                }
                Err(e) => return Err(SpliceError::Source(e)),
            }
        };
        left -= in_pipe;
        while in_pipe > 0 {
            match to.try_io(Interest::WRITABLE, || {
                splice(pipe_out.as_raw_fd(), sink, in_pipe)
            }) {
                Ok(0) => return Err(SpliceError::Destination(io::ErrorKind::WriteZero.into())),
                Ok(n) => in_pipe -= n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    match tokio::time::timeout(write_timeout, to.writable()).await {
                        Ok(Ok(())) => {}
                        Ok(Err(e)) => return Err(SpliceError::Destination(e)),
                        Err(_) => {
                            return Err(SpliceError::Destination(io::ErrorKind::TimedOut.into()));
                        }
                    }
                }
                Err(e) => return Err(SpliceError::Destination(e)),
            }
        }
    }
    Ok(())
}
