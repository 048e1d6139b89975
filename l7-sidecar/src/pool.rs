//! `Pool`: the persistent keep-alive connections to one destination (a peer sidecar, a
//! central-mode backend, the origin, the local upstream), plus that destination's outlier
//! record and metric handles.
//!
//! - Bounded: at most `max_idle` idle connections are kept; open connections are bounded by
//!   the requests in flight to the destination, themselves bounded by the connection cap.
//! - Idle connections older than the idle timeout are not reused and are closed by
//!   [`Pool::reap`] (the server runs it every second).
//! - Connecting has a timeout. A connection is only given back with [`Pool::put`] after a
//!   complete, well-framed exchange; after any error it is dropped, never reused.
//! - The newest idle connection is reused first, so a quiet period lets the rest expire.
//!
//! A connection must hold no byte we have not asked for. Whatever a destination sends after
//! the end of a response (a second response nobody requested, a body after a `HEAD` or
//! `204`, more bytes than `Content-Length` said) would otherwise be read as the answer to
//! the next request on that connection, and stored in the cache under that request's key.
//! So a connection is checked three times, and retired at the first sign of either unread
//! bytes or a close from the other side:
//! - [`Pool::put`]: its buffer must be empty and a non-blocking read must find nothing;
//! - while idle, [`Pool::watch`] (driven by one background task) keeps the task's waker
//!   registered for read readiness on every idle socket, so a byte or a FIN that arrives
//!   retires the connection at once, without a system call per connection;
//! - [`Pool::get`]: a non-blocking read must find nothing again.
//!
//! The non-blocking reads go through tokio's readiness: they reach the kernel only when the
//! reactor has seen the socket readable since a read last found nothing. Bytes that the
//! reactor has not dispatched yet, or that arrive after a connection was handed out, cannot
//! be told from the response to the request just sent (HTTP/1.1 has no request ids); the
//! checks close that window down to the moment between the last check and the request's
//! write.
//!
//! With `peer-tls`, a member's pool opens its connections with a TLS handshake
//! ([`crate::tls::peer`]) within the same connect timeout; the checks above then look at
//! what the TLS layer decrypts (a session ticket or key update that arrives is no byte of
//! a response, a `close_notify` is a close).
//!
//! The idle list is behind a mutex held for a push, a pop or a readiness scan, never across
//! an await or a system call: closing connections happens after the lock is released.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Waker};
use std::time::Instant;

use bytes::BytesMut;
use prometheus::IntGauge;
use tokio::net::TcpStream;

use crate::config::{Config, OutlierSettings, PoolSettings};
use crate::health::Health;
use crate::metrics::{Metrics, PoolMetrics};
use crate::outlier::Outlier;
pub use crate::stream::ConnectError;
use crate::stream::{self, Stream, UpstreamStream};
use crate::tls::peer::PeerTls;

/// Initial read buffer of an upstream connection.
const CONN_BUFFER: usize = 16 * 1024;

/// One upstream connection and its read buffer.
#[derive(Debug)]
pub struct Conn {
    /// The socket.
    pub stream: UpstreamStream,
    /// Bytes read and not yet consumed; must be empty when the connection is given back.
    pub buf: BytesMut,
    /// Taken from the idle list rather than newly connected (a stale reused connection
    /// failing is not the destination's fault).
    pub reused: bool,
    open: IntGauge,
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.open.dec();
    }
}

/// What a non-blocking look at a connection found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Probe {
    /// Nothing to read: the connection may carry a request.
    Clean,
    /// The other side closed (or reset) it.
    Closed,
    /// Bytes nobody asked for.
    Unsolicited,
}

impl Conn {
    /// Reads at most one byte without blocking. A byte read is lost, so a connection found
    /// anything but [`Probe::Clean`] must be dropped. (tokio makes the system call only when
    /// the reactor has seen the socket readable since a read last found nothing, so the
    /// usual clean case costs none.)
    ///
    /// Over TLS the look goes through rustls directly: the records waiting in the socket are
    /// read (`try_read`, outside tokio's cooperative budget, which would otherwise answer "not
    /// ready" without looking) and decrypted; records that carry no data (a session ticket, a
    /// key update) leave the connection clean, data retire it, and so does a `close_notify`,
    /// a FIN or a TLS error. (Part of a record, the rest still on its way, counts as clean
    /// until the rest arrives: rustls cannot tell what it will hold.)
    fn probe(&mut self) -> Probe {
        let mut byte = [0u8; 1];
        match &mut self.stream {
            Stream::Plain(tcp) => match tcp.try_read(&mut byte) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => Probe::Clean,
                Ok(0) | Err(_) => Probe::Closed,
                Ok(_) => Probe::Unsolicited,
            },
            Stream::Tls(tls) => {
                let (tcp, session) = tls.get_mut();
                let mut eof = false;
                // Bounded: more than this many reads of records means data anyway.
                for _ in 0..PROBE_TLS_READS {
                    match session.read_tls(&mut TryRead(tcp)) {
                        Ok(0) => {
                            eof = true;
                            break;
                        }
                        Ok(_) => {}
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(_) => return Probe::Closed,
                    }
                }
                if session.process_new_packets().is_err() {
                    return Probe::Closed;
                }
                match io::Read::read(&mut session.reader(), &mut byte) {
                    Ok(0) => Probe::Closed,
                    Ok(_) => Probe::Unsolicited,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock && !eof => Probe::Clean,
                    Err(_) => Probe::Closed,
                }
            }
        }
    }
}

/// Reads of TLS records a [`Conn::probe`] makes at most.
const PROBE_TLS_READS: usize = 8;

/// A socket read without waiting, for rustls's `read_tls`.
struct TryRead<'a>(&'a TcpStream);

impl io::Read for TryRead<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.try_read(buf)
    }
}

#[derive(Debug)]
struct Idle {
    conn: Conn,
    since: Instant,
}

/// The idle connections (oldest first) and the waker of the task that watches them.
#[derive(Debug, Default)]
struct IdleList {
    conns: Vec<Idle>,
    watcher: Option<Waker>,
}

/// The connections, outlier record and metrics of one destination.
#[derive(Debug)]
pub struct Pool {
    name: Box<str>,
    addr: SocketAddr,
    settings: PoolSettings,
    idle: Mutex<IdleList>,
    /// Consecutive-failure ejection.
    pub outlier: Outlier,
    /// Active health state.
    pub health: Health,
    /// The front reports this member down (`members-from`, [`crate::follow`]).
    down_by_front: AtomicBool,
    /// Connections are TLS with these settings (a peer's pool, with `peer-tls`).
    tls: Option<Arc<PeerTls>>,
    /// Metric handles.
    pub metrics: PoolMetrics,
}

impl Pool {
    /// An empty pool for the destination `name` at `addr`.
    pub fn new(
        name: &str,
        addr: SocketAddr,
        settings: PoolSettings,
        outlier: OutlierSettings,
        metrics: PoolMetrics,
    ) -> Self {
        Self {
            name: name.into(),
            addr,
            settings,
            idle: Mutex::new(IdleList::default()),
            outlier: Outlier::new(outlier),
            health: Health::default(),
            down_by_front: AtomicBool::new(false),
            tls: None,
            metrics,
        }
    }

    /// This pool with its connections over peer TLS (`peer-tls`).
    pub fn with_tls(mut self, tls: Option<Arc<PeerTls>>) -> Self {
        self.tls = tls;
        self
    }

    /// A pool for `name` at `addr` with the configured pool and outlier settings.
    pub fn configured(
        config: &Config,
        metrics: &Metrics,
        name: &str,
        addr: SocketAddr,
    ) -> Arc<Self> {
        Arc::new(Self::new(
            name,
            addr,
            config.pool,
            config.outlier,
            metrics.pool(name),
        ))
    }

    /// A member's pool: [`configured`](Self::configured), over `tls` when given.
    pub fn member(
        config: &Config,
        metrics: &Metrics,
        tls: Option<&Arc<PeerTls>>,
        name: &str,
        addr: SocketAddr,
    ) -> Arc<Self> {
        Arc::new(
            Self::new(name, addr, config.pool, config.outlier, metrics.pool(name))
                .with_tls(tls.cloned()),
        )
    }

    /// The destination's name (member name, `origin` or `upstream`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The destination's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Routing may send requests here: not ejected by outlier detection, not down by
    /// active health checks, not reported down by the front.
    pub fn is_available(&self) -> bool {
        self.health.is_up() && !self.is_down_by_front() && !self.outlier.is_ejected()
    }

    /// True while the front reports this member down.
    pub fn is_down_by_front(&self) -> bool {
        self.down_by_front.load(Ordering::Relaxed)
    }

    /// Records what the front reports (only the membership's writer calls this); true when
    /// it changed.
    pub fn set_down_by_front(&self, down: bool) -> bool {
        self.down_by_front.swap(down, Ordering::Relaxed) != down
    }

    fn idle(&self) -> MutexGuard<'_, IdleList> {
        self.idle.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A fresh, clean idle connection, or a new one.
    pub async fn get(&self) -> Result<Conn, ConnectError> {
        loop {
            let popped = self.idle().conns.pop();
            let Some(idle) = popped else { break };
            if idle.since.elapsed() >= self.settings.idle_timeout {
                // The newest is expired, so all are: close them outside the lock.
                let expired = std::mem::take(&mut self.idle().conns);
                drop(expired);
                break;
            }
            let mut conn = idle.conn;
            match conn.probe() {
                Probe::Clean => {
                    conn.reused = true;
                    return Ok(conn);
                }
                found => self.retired(found),
            }
        }
        self.connect().await
    }

    fn retired(&self, found: Probe) {
        match found {
            Probe::Clean => {}
            Probe::Closed => self.metrics.retired_closed.inc(),
            Probe::Unsolicited => {
                log::debug!("{}: unsolicited bytes on a pooled connection", self.name);
                self.metrics.retired_unsolicited.inc();
            }
        }
    }

    /// A new connection (within the connect timeout, the TLS handshake included).
    pub async fn connect(&self) -> Result<Conn, ConnectError> {
        let timeout = self.settings.connect_timeout;
        let stream = stream::connect(self.addr, self.tls.as_deref(), timeout).await?;
        self.metrics.connects.inc();
        self.metrics.open.inc();
        Ok(Conn {
            stream,
            buf: BytesMut::with_capacity(CONN_BUFFER),
            reused: false,
            open: self.metrics.open.clone(),
        })
    }

    /// Gives back a connection after a complete exchange. It is kept only when nothing is
    /// left to read: an unread byte in its buffer or in the socket, or a close from the
    /// other side, retires it.
    pub fn put(&self, mut conn: Conn) {
        if self.settings.max_idle == 0 {
            return;
        }
        if !conn.buf.is_empty() {
            self.retired(Probe::Unsolicited);
            return;
        }
        match conn.probe() {
            Probe::Clean => {}
            found => return self.retired(found),
        }
        let mut idle = self.idle();
        if idle.conns.len() >= self.settings.max_idle {
            return;
        }
        if let Some(watcher) = &idle.watcher {
            // Register the watcher's interest; the probe above cleared the readiness, so
            // a Ready here is something that arrived since.
            let mut cx = Context::from_waker(watcher);
            if conn.stream.tcp().poll_read_ready(&mut cx).is_ready() {
                drop(idle);
                // Dropped also when the probe finds nothing (a rare race, not counted).
                return self.retired(conn.probe());
            }
        }
        idle.conns.push(Idle {
            conn,
            since: Instant::now(),
        });
    }

    /// Retires every idle connection that became readable (bytes, a close) and registers
    /// `cx`'s waker for read readiness on the rest: the caller is woken as soon as anything
    /// arrives on an idle connection, and calls this again.
    pub fn watch(&self, cx: &mut Context<'_>) {
        let readable: Vec<Idle> = {
            let mut idle = self.idle();
            if !idle
                .watcher
                .as_ref()
                .is_some_and(|w| w.will_wake(cx.waker()))
            {
                idle.watcher = Some(cx.waker().clone());
            }
            idle.conns
                .extract_if(.., |i| i.conn.stream.tcp().poll_read_ready(cx).is_ready())
                .collect()
        };
        for mut idle in readable {
            match idle.conn.probe() {
                // Readiness without data (a spurious wake-up): keep it, watched again.
                Probe::Clean => self.put_back(idle, cx),
                found => self.retired(found),
            }
        }
    }

    fn put_back(&self, idle: Idle, cx: &mut Context<'_>) {
        if idle.conn.stream.tcp().poll_read_ready(cx).is_pending() {
            let mut list = self.idle();
            let at = list.conns.partition_point(|i| i.since <= idle.since);
            list.conns.insert(at, idle);
        }
    }

    /// Closes idle connections past the idle timeout and updates the idle gauge.
    pub fn reap(&self) {
        let expired: Vec<Idle> = {
            let mut idle = self.idle();
            let keep_from = idle
                .conns
                .iter()
                .position(|i| i.since.elapsed() < self.settings.idle_timeout)
                .unwrap_or(idle.conns.len());
            let expired = idle.conns.drain(..keep_from).collect();
            self.metrics.idle.set(idle.conns.len() as i64);
            expired
        };
        drop(expired);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::metrics::Metrics;

    fn pool(addr: SocketAddr, idle_ms: u64) -> Pool {
        let metrics = Metrics::new().unwrap();
        Pool::new(
            "p",
            addr,
            PoolSettings {
                max_idle: 2,
                idle_timeout: Duration::from_millis(idle_ms),
                connect_timeout: Duration::from_secs(1),
            },
            OutlierSettings {
                failures: 3,
                base: Duration::from_secs(1),
                max: Duration::from_secs(2),
            },
            metrics.pool("p"),
        )
    }

    #[tokio::test]
    async fn reuses_bounded_and_expires() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((s, _)) = listener.accept().await {
                held.push(s);
            }
        });
        let p = pool(addr, 200);
        let a = p.get().await.unwrap();
        let b = p.get().await.unwrap();
        let c = p.get().await.unwrap();
        assert_eq!(p.metrics.connects.get(), 3);
        assert_eq!(p.metrics.open.get(), 3);
        p.put(a);
        p.put(b);
        p.put(c);
        assert_eq!(p.metrics.open.get(), 2, "only max_idle are kept");
        let again = p.get().await.unwrap();
        assert!(again.reused);
        assert_eq!(p.metrics.connects.get(), 3);
        p.put(again);
        tokio::time::sleep(Duration::from_millis(250)).await;
        p.reap();
        assert_eq!(p.metrics.open.get(), 0);
        assert!(!p.get().await.unwrap().reused);
    }

    /// A server whose accepted connections are handed to the test.
    async fn server() -> (
        SocketAddr,
        tokio::sync::mpsc::UnboundedReceiver<tokio::net::TcpStream>,
    ) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok((s, _)) = listener.accept().await {
                let _ = tx.send(s);
            }
        });
        (addr, rx)
    }

    /// Bytes or a close that arrive after a response, found when the connection comes back
    /// or when it is taken again, retire it: it is never handed out.
    #[tokio::test]
    async fn unsolicited_bytes_and_closes_retire_connections() {
        use tokio::io::AsyncWriteExt;
        let (addr, mut accepted) = server().await;
        let p = pool(addr, 10_000);
        // Found when the connection is given back.
        let conn = p.get().await.unwrap();
        let mut far = accepted.recv().await.unwrap();
        far.write_all(b"HTTP/1.1 200 OK\r\n\r\n").await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        p.put(conn);
        assert_eq!(p.metrics.retired_unsolicited.get(), 1);
        assert_eq!(p.metrics.open.get(), 0);
        // Found when it is taken again (nobody watches this pool).
        let conn = p.get().await.unwrap();
        assert!(!conn.reused);
        let mut far = accepted.recv().await.unwrap();
        p.put(conn);
        far.write_all(b"X").await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        let fresh = p.get().await.unwrap();
        assert!(
            !fresh.reused,
            "the dirty idle connection was not handed out"
        );
        assert_eq!(p.metrics.retired_unsolicited.get(), 2);
        let _far = accepted.recv().await.unwrap();
        p.put(fresh);
        drop(far);
        // A connection closed by the other side while idle.
        let other = p.get().await.unwrap();
        assert!(other.reused);
        p.put(other);
        drop(_far);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!p.get().await.unwrap().reused);
        assert_eq!(p.metrics.retired_closed.get(), 1);
    }

    /// With a watcher, an idle connection that becomes readable is retired at once, and the
    /// watcher is woken for it.
    #[tokio::test]
    async fn watched_idle_connections_retire_at_once() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        use tokio::io::AsyncWriteExt;
        let (addr, mut accepted) = server().await;
        let p = Arc::new(pool(addr, 10_000));
        let wakes = Arc::new(AtomicUsize::new(0));
        let watcher = {
            let (p, wakes) = (p.clone(), wakes.clone());
            tokio::spawn(std::future::poll_fn(move |cx| {
                wakes.fetch_add(1, Ordering::Relaxed);
                p.watch(cx);
                std::task::Poll::<()>::Pending
            }))
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        let (a, b) = (p.get().await.unwrap(), p.get().await.unwrap());
        let mut far_a = accepted.recv().await.unwrap();
        let _far_b = accepted.recv().await.unwrap();
        p.put(a);
        p.put(b);
        assert_eq!(p.idle().conns.len(), 2);
        let before = wakes.load(Ordering::Relaxed);
        far_a
            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\nPOISONED")
            .await
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(2);
        while p.idle().conns.len() == 2 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert!(
            wakes.load(Ordering::Relaxed) > before,
            "the watcher was woken"
        );
        assert_eq!(p.idle().conns.len(), 1);
        assert_eq!(p.metrics.retired_unsolicited.get(), 1);
        assert!(
            p.get().await.unwrap().reused,
            "the clean one is still there"
        );
        watcher.abort();
    }

    /// A CA-signed certificate for 127.0.0.1 and the CA, as peer TLS credentials.
    fn peer_credentials(dir: &std::path::Path) -> crate::tls::peer::PeerCredentials {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca = rcgen::CertificateParams::new(Vec::new()).unwrap();
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca = ca.self_signed(&ca_key).unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()])
            .unwrap()
            .signed_by(&key, &ca, &ca_key)
            .unwrap();
        let (c, k, a) = (dir.join("c.pem"), dir.join("k.pem"), dir.join("ca.pem"));
        std::fs::write(&c, cert.pem()).unwrap();
        std::fs::write(&k, key.serialize_pem()).unwrap();
        std::fs::write(&a, ca.pem()).unwrap();
        let own = Some(std::net::Ipv4Addr::LOCALHOST.into());
        crate::tls::peer::PeerCredentials::load(&c, &k, &a, own).unwrap()
    }

    /// Over peer TLS the pool looks through the TLS layer: the session tickets a server
    /// sends after the handshake and a key update leave a connection clean, application
    /// bytes nobody asked for retire it, and so does a `close_notify` (the TCP connection
    /// still open).
    #[tokio::test]
    async fn tls_connections_are_checked_through_the_tls_layer() {
        use tokio::io::AsyncWriteExt;
        let dir = tempfile::tempdir().unwrap();
        let metrics = Metrics::new().unwrap();
        let tls = Arc::new(PeerTls::new(&peer_credentials(dir.path()), &metrics).unwrap());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, mut accepted) = tokio::sync::mpsc::unbounded_channel();
        let acceptor = tokio_rustls::TlsAcceptor::from(tls.server_config());
        tokio::spawn(async move {
            while let Ok((s, _)) = listener.accept().await {
                if let Ok(s) = acceptor.accept(s).await {
                    let _ = tx.send(s);
                }
            }
        });
        let p = pool(addr, 10_000).with_tls(Some(tls));
        let conn = p.get().await.unwrap();
        assert!(conn.stream.is_tls());
        let mut far = accepted.recv().await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        p.put(conn);
        let again = p.get().await.unwrap();
        assert!(again.reused, "tickets are no unsolicited bytes");
        p.put(again);
        far.write_all(b"X").await.unwrap();
        far.flush().await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        let conn = p.get().await.unwrap();
        assert!(!conn.reused);
        assert_eq!(p.metrics.retired_unsolicited.get(), 1);
        let mut far = accepted.recv().await.unwrap();
        p.put(conn);
        far.get_mut().1.refresh_traffic_keys().unwrap();
        far.flush().await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        let again = p.get().await.unwrap();
        assert!(again.reused, "a key update is no unsolicited byte");
        p.put(again);
        far.get_mut().1.send_close_notify();
        far.flush().await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!p.get().await.unwrap().reused);
        assert_eq!(p.metrics.retired_closed.get(), 1);
        assert_eq!(p.metrics.retired_unsolicited.get(), 1);
        drop(far);
        let handshakes = metrics.peer_tls_connected()[0].get();
        assert!(handshakes >= 3, "{handshakes}");
    }

    #[tokio::test]
    async fn connect_errors() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        assert!(matches!(
            pool(addr, 100).get().await,
            Err(ConnectError::Io(_))
        ));
    }
}
