//! Health checks of the reals, as `l4-ctl daemon` runs them.
//!
//! Each real of a VIP with a check configured ([`common::HealthSpec`], set by `apply`) is
//! probed every `interval_ms` with a TCP connect or an HTTP/1.1 GET to the real's own address,
//! each probe bounded by `timeout_ms`. `fall` consecutive failures take an up real down;
//! `rise` consecutive successes bring a down real back. Going down sets the real's
//! `FLAG_DOWN`, which takes it out of the Maglev table like a drain: its established flows
//! stay, new flows go to the others, its configured weight is kept for when it recovers.

use std::{
    net::{IpAddr, SocketAddr},
    time::Duration,
};

use common::HealthSpec;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    time::timeout,
};

use crate::{Vip, config::health_path};

/// What one real is checked with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Target {
    pub vip: Vip,
    pub addr: IpAddr,
    pub spec: HealthSpec,
}

impl Target {
    /// The address probes go to: the real's address and the check's port (the VIP's port
    /// when the check names none).
    pub fn probe_addr(&self) -> SocketAddr {
        let port = if self.spec.port == 0 {
            self.vip.addr.port()
        } else {
            self.spec.port
        };
        SocketAddr::new(self.addr, port)
    }

    pub fn interval(&self) -> Duration {
        Duration::from_millis(u64::from(self.spec.interval_ms.max(1)))
    }
}

/// Probes a real once. `Err` carries why it failed, for the log.
pub async fn probe(target: &Target) -> Result<(), String> {
    let limit = Duration::from_millis(u64::from(target.spec.timeout_ms.max(1)));
    match timeout(limit, probe_unbounded(target)).await {
        Ok(result) => result,
        Err(_) => Err(format!("no answer within {} ms", target.spec.timeout_ms)),
    }
}

async fn probe_unbounded(target: &Target) -> Result<(), String> {
    let addr = target.probe_addr();
    let mut stream = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect to {addr}: {e}"))?;
    if target.spec.kind != HealthSpec::KIND_HTTP {
        return Ok(());
    }
    let host = match target.addr {
        IpAddr::V4(a) => a.to_string(),
        IpAddr::V6(a) => format!("[{a}]"),
    };
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: dl7-health\r\nConnection: close\r\n\r\n",
        health_path(&target.spec)
    );
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| format!("sending the request to {addr}: {e}"))?;
    // The status line is all we need; a well-behaved server sends it in the first segment,
    // but read until the head is complete or 4 KiB have come.
    let mut buf = [0u8; 4096];
    let mut len = 0;
    loop {
        let n = stream
            .read(&mut buf[len..])
            .await
            .map_err(|e| format!("reading the answer from {addr}: {e}"))?;
        if n == 0 {
            return Err(format!("{addr} closed the connection before answering"));
        }
        len += n;
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut response = httparse::Response::new(&mut headers);
        match response.parse(&buf[..len]) {
            Ok(_) if response.code.is_some() => {
                let code = response.code.unwrap_or(0);
                return if (200..400).contains(&code) {
                    Ok(())
                } else {
                    Err(format!("{addr} answered {code}"))
                };
            }
            Ok(_) if len < buf.len() => continue,
            Ok(_) => return Err(format!("{addr} sent a status line over 4 KiB")),
            // Too many headers: the status line parsed, which is all that matters.
            Err(httparse::Error::TooManyHeaders) => {
                return Err(format!("{addr} sent an answer with too many headers"));
            }
            Err(e) => return Err(format!("{addr} sent a malformed answer: {e}")),
        }
    }
}

/// The rise/fall state of one real.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct State {
    pub up: bool,
    successes: u32,
    failures: u32,
}

impl State {
    /// A real starting in the given state (from its `FLAG_DOWN`).
    pub fn new(up: bool) -> Self {
        State {
            up,
            successes: 0,
            failures: 0,
        }
    }

    /// Records a probe; returns the new state when this probe changed it.
    pub fn record(&mut self, ok: bool, spec: &HealthSpec) -> Option<bool> {
        if ok {
            self.successes += 1;
            self.failures = 0;
            if !self.up && self.successes >= u32::from(spec.rise.max(1)) {
                self.up = true;
                return Some(true);
            }
        } else {
            self.failures += 1;
            self.successes = 0;
            if self.up && self.failures >= u32::from(spec.fall.max(1)) {
                self.up = false;
                return Some(false);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(rise: u8, fall: u8) -> HealthSpec {
        HealthSpec {
            kind: HealthSpec::KIND_TCP,
            rise,
            fall,
            ..HealthSpec::default()
        }
    }

    #[test]
    fn fall_failures_in_a_row_take_it_down_and_rise_successes_bring_it_back() {
        let s = spec(2, 3);
        let mut st = State::new(true);
        assert_eq!(st.record(false, &s), None);
        assert_eq!(st.record(false, &s), None);
        // A success in between resets the count.
        assert_eq!(st.record(true, &s), None);
        assert_eq!(st.record(false, &s), None);
        assert_eq!(st.record(false, &s), None);
        assert_eq!(st.record(false, &s), Some(false));
        assert_eq!(st.record(false, &s), None);
        assert_eq!(st.record(true, &s), None);
        assert_eq!(st.record(false, &s), None);
        assert_eq!(st.record(true, &s), None);
        assert_eq!(st.record(true, &s), Some(true));
        assert!(st.up);
    }

    #[tokio::test]
    async fn tcp_and_http_probes() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = tokio::spawn(async move {
            for status in ["200 OK", "503 Service Unavailable"] {
                let (mut s, _) = listener.accept().await.unwrap();
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf).await.unwrap();
                let answer = format!("HTTP/1.1 {status}\r\nContent-Length: 0\r\n\r\n");
                s.write_all(answer.as_bytes()).await.unwrap();
            }
        });
        let vip: Vip = "10.0.0.1:80/tcp".parse().unwrap();
        let mut target = Target {
            vip,
            addr: "127.0.0.1".parse().unwrap(),
            spec: HealthSpec {
                kind: HealthSpec::KIND_HTTP,
                port,
                timeout_ms: 2000,
                ..HealthSpec::default()
            },
        };
        assert_eq!(probe(&target).await, Ok(()));
        let err = probe(&target).await.unwrap_err();
        assert!(err.contains("answered 503"), "{err}");
        server.await.unwrap();
        // Nothing listens there any more.
        target.spec.kind = HealthSpec::KIND_TCP;
        assert!(probe(&target).await.is_err());
    }
}
