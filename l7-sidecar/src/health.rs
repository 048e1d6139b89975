//! Active health checks of the members (peers in distributed mode, backends in central
//! mode), next to the passive outlier detection of [`crate::outlier`]: one member's state
//! ([`Health`], kept in its pool) and one check ([`check`]); the loop that checks every
//! member is [`crate::sidecar::Sidecar::check_members`].
//!
//! Passive detection only learns from requests, and a hung member (alive, accepting
//! connections, never answering: a stopped process, a wedged event loop) costs every
//! request that tries it a timeout. So every `health-interval` each member other than this
//! server gets a `GET health-path` on a new connection; an answer with a status below 500
//! within `health-timeout` passes. After `health-fall` failures in a row the member is
//! down: routing skips it as it skips an ejected one, without spending an attempt. After
//! `health-rise` passes in a row it is up again. Every transition is logged and exported
//! (`dl7_l7_peer_up`, `dl7_l7_peer_checks_total`).
//!
//! A sidecar answers `GET` and `HEAD` of the health path itself on its peer port (for
//! requests without dl7's hop field, which forwarded requests always carry), as its admin
//! endpoint answers `/healthz`; once it drains it accepts no new connection, so checks fail
//! at once. A central-mode backend that is not a sidecar
//! passes with any status below 500 for that path, a 404 included: what is checked is that
//! it answers HTTP, not what.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering::Relaxed};
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::AsyncWriteExt;

use crate::config::HealthSettings;
use crate::http::response::{self, ResponseHead};
use crate::http::wire;
use crate::stream;
use crate::tls::peer::PeerTls;

/// Largest response head read from a health check.
const MAX_HEAD: usize = 16 * 1024;

/// The active health state of one member.
#[derive(Debug)]
pub struct Health {
    up: AtomicBool,
    /// Results in a row that disagree with the current state.
    streak: AtomicU32,
}

impl Default for Health {
    fn default() -> Self {
        Self {
            up: AtomicBool::new(true),
            streak: AtomicU32::new(0),
        }
    }
}

impl Health {
    /// False while the member is down (up until checks say otherwise).
    pub fn is_up(&self) -> bool {
        self.up.load(Relaxed)
    }

    /// Records one check; `Some(new state)` when it changed the state. Only the checker
    /// task writes, so plain loads and stores are enough.
    pub fn record(&self, passed: bool, settings: &HealthSettings) -> Option<bool> {
        let up = self.is_up();
        if passed == up {
            self.streak.store(0, Relaxed);
            return None;
        }
        let streak = self.streak.load(Relaxed) + 1;
        let needed = if up { settings.fall } else { settings.rise };
        if streak < needed {
            self.streak.store(streak, Relaxed);
            return None;
        }
        self.streak.store(0, Relaxed);
        self.up.store(passed, Relaxed);
        Some(passed)
    }
}

/// One check: true when the member at `addr` answers the health path with a status below
/// 500 in time.
/// With `tls` (`peer-tls`) the check is made over mutual TLS, as requests are: a member
/// whose certificate is refused fails its checks.
pub async fn check(addr: SocketAddr, settings: &HealthSettings, tls: Option<&PeerTls>) -> bool {
    let probe = async {
        let mut stream = stream::connect(addr, tls, settings.timeout).await.ok()?;
        let request = format!(
            "GET {} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: dl7-health\r\nConnection: close\r\n\r\n",
            settings.path,
        );
        stream.write_all(request.as_bytes()).await.ok()?;
        let mut buf = BytesMut::with_capacity(1024);
        let mut head = ResponseHead::default();
        loop {
            match response::parse(&buf, MAX_HEAD, &mut head) {
                Ok(true) if head.status >= 200 => return Some(head.status),
                Ok(true) => {
                    let len = head.len;
                    let _ = buf.split_to(len);
                    continue;
                }
                Ok(false) => {}
                Err(_) => return None,
            }
            match wire::read_up_to(&mut stream, &mut buf, 1024, Duration::MAX).await {
                Ok(n) if n > 0 => {}
                _ => return None,
            }
        }
    };
    matches!(
        tokio::time::timeout(settings.timeout, probe).await,
        Ok(Some(status)) if status < 500
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(fall: u32, rise: u32) -> HealthSettings {
        HealthSettings {
            interval: Some(Duration::from_secs(1)),
            timeout: Duration::from_millis(200),
            fall,
            rise,
            path: "/healthz".into(),
        }
    }

    #[test]
    fn falls_and_rises_only_in_a_row() {
        let s = settings(2, 3);
        let h = Health::default();
        assert_eq!(h.record(false, &s), None);
        assert_eq!(h.record(true, &s), None, "a pass resets the streak");
        assert_eq!(h.record(false, &s), None);
        assert_eq!(h.record(false, &s), Some(false));
        assert!(!h.is_up());
        assert_eq!(h.record(true, &s), None);
        assert_eq!(h.record(true, &s), None);
        assert_eq!(h.record(false, &s), None);
        for _ in 0..2 {
            assert_eq!(h.record(true, &s), None);
        }
        assert_eq!(h.record(true, &s), Some(true));
        assert!(h.is_up());
    }

    #[tokio::test]
    async fn a_silent_listener_fails_and_an_http_answer_passes() {
        use tokio::io::AsyncReadExt;
        // Accepts (the kernel does) but never answers: a hung server.
        let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        assert!(!check(silent.local_addr().unwrap(), &settings(1, 1), None).await);
        for (answer, passes) in [
            (
                &b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"[..],
                true,
            ),
            (
                b"HTTP/1.1 102 Processing\r\n\r\nHTTP/1.1 200 OK\r\n\r\n",
                true,
            ),
            (b"HTTP/1.1 503 Draining\r\nContent-Length: 0\r\n\r\n", false),
            (b"garbage\r\n\r\n", false),
        ] {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            tokio::spawn(async move {
                let (mut s, _) = listener.accept().await.unwrap();
                let mut req = [0u8; 512];
                let _ = s.read(&mut req).await;
                let _ = s.write_all(answer).await;
            });
            assert_eq!(
                check(addr, &settings(1, 1), None).await,
                passes,
                "{:?}",
                String::from_utf8_lossy(answer)
            );
        }
    }
}
