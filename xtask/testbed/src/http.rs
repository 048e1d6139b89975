//! A blocking one-shot HTTP/1.1 GET for checks: that the testbed answers through its VIP, a
//! /metrics page, a benchmark tier's functional check.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, Result};

/// A response read by [`get`].
pub struct OneShot {
    pub status: u16,
    /// The head's field lines, as sent.
    pub head: String,
    pub body: Vec<u8>,
}

impl OneShot {
    /// The value of field `name` (case-insensitive), if present.
    pub fn field(&self, name: &str) -> Option<&str> {
        self.head.lines().skip(1).find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }
}

/// One GET over a fresh connection (`Connection: close`), read to the end. The request goes
/// in one write with TCP_NODELAY: in several small segments it would wait on delayed ACKs.
pub fn get(addr: SocketAddr, path: &str, host: &str) -> Result<OneShot> {
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.set_write_timeout(Some(Duration::from_secs(5)))?;
    s.set_nodelay(true)?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    s.write_all(request.as_bytes())?;
    let mut response = Vec::new();
    s.read_to_end(&mut response)?;
    let end = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .context("no end of the response head")?;
    let head = String::from_utf8_lossy(&response[..end]).into_owned();
    let status = head
        .lines()
        .next()
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .with_context(|| format!("bad status line in {head:?}"))?;
    let body = response.split_off(end + 4);
    Ok(OneShot { status, head, body })
}
