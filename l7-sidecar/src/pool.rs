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
//! The idle list is behind a mutex held for a push or a pop, never across an await or a
//! system call: closing expired connections happens after the lock is released.

use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use bytes::BytesMut;
use prometheus::IntGauge;
use tokio::net::TcpStream;

use crate::config::{Config, OutlierSettings, PoolSettings};
use crate::metrics::{Metrics, PoolMetrics};
use crate::outlier::Outlier;

/// Initial read buffer of an upstream connection.
const CONN_BUFFER: usize = 16 * 1024;

/// Why no connection could be made.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The connect timeout passed.
    #[error("connect timed out")]
    Timeout,
    /// The connect failed (refused, unreachable, ...).
    #[error("connect failed: {0}")]
    Io(#[from] io::Error),
}

/// One upstream connection and its read buffer.
#[derive(Debug)]
pub struct Conn {
    /// The socket.
    pub stream: TcpStream,
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

#[derive(Debug)]
struct Idle {
    conn: Conn,
    since: Instant,
}

/// The connections, outlier record and metrics of one destination.
#[derive(Debug)]
pub struct Pool {
    name: Box<str>,
    addr: SocketAddr,
    settings: PoolSettings,
    idle: Mutex<Vec<Idle>>,
    /// Consecutive-failure ejection.
    pub outlier: Outlier,
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
            idle: Mutex::new(Vec::new()),
            outlier: Outlier::new(outlier),
            metrics,
        }
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

    /// The destination's name (member name, `origin` or `upstream`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The destination's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    fn idle(&self) -> MutexGuard<'_, Vec<Idle>> {
        self.idle.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A fresh idle connection, or a new one.
    pub async fn get(&self) -> Result<Conn, ConnectError> {
        let popped = self.idle().pop();
        if let Some(idle) = popped {
            if idle.since.elapsed() < self.settings.idle_timeout {
                let mut conn = idle.conn;
                conn.reused = true;
                return Ok(conn);
            }
            // The newest is expired, so all are: close them outside the lock.
            drop(std::mem::take(&mut *self.idle()));
        }
        self.connect().await
    }

    /// A new connection (within the connect timeout).
    pub async fn connect(&self) -> Result<Conn, ConnectError> {
        let stream =
            tokio::time::timeout(self.settings.connect_timeout, TcpStream::connect(self.addr))
                .await
                .map_err(|_| ConnectError::Timeout)??;
        stream.set_nodelay(true)?;
        self.metrics.connects.inc();
        self.metrics.open.inc();
        Ok(Conn {
            stream,
            buf: BytesMut::with_capacity(CONN_BUFFER),
            reused: false,
            open: self.metrics.open.clone(),
        })
    }

    /// Gives back a connection after a complete exchange (its buffer must be empty).
    pub fn put(&self, conn: Conn) {
        if !conn.buf.is_empty() || self.settings.max_idle == 0 {
            return;
        }
        let mut idle = self.idle();
        if idle.len() < self.settings.max_idle {
            idle.push(Idle {
                conn,
                since: Instant::now(),
            });
        }
    }

    /// Closes idle connections past the idle timeout and updates the idle gauge.
    pub fn reap(&self) {
        let expired: Vec<Idle> = {
            let mut idle = self.idle();
            let keep_from = idle
                .iter()
                .position(|i| i.since.elapsed() < self.settings.idle_timeout)
                .unwrap_or(idle.len());
            let expired = idle.drain(..keep_from).collect();
            self.metrics.idle.set(idle.len() as i64);
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
