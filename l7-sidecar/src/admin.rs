//! The admin endpoint on `--metrics ADDR:PORT`: `GET /metrics` (Prometheus text format),
//! `GET /healthz` (`200 ok`, or `503 draining` once SIGTERM was received, so that health
//! checkers take the server out before it stops) and `GET /hot` (with a relay cache: the
//! hottest keys this server forwards lately, JSON, see [`crate::cache::topk`]; 404 without).
//! One request per connection.

use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

use crate::cache::topk;
use crate::http::canned;
use crate::http::request::{self, Limits, Method, RequestHead};
use crate::http::wire;
use crate::sidecar::Sidecar;

/// Time allowed for a whole admin exchange.
const TIMEOUT: Duration = Duration::from_secs(5);
/// Concurrent admin connections.
const MAX_CONNECTIONS: usize = 16;

/// Serves the admin endpoint until aborted.
pub async fn serve(listener: TcpListener, sidecar: Arc<Sidecar>) {
    let cap = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let Ok(permit) = cap.clone().try_acquire_owned() else {
            continue;
        };
        let sidecar = sidecar.clone();
        tokio::spawn(async move {
            let _ = tokio::time::timeout(TIMEOUT, answer(stream, &sidecar)).await;
            drop(permit);
        });
    }
}

async fn answer(mut stream: TcpStream, sidecar: &Sidecar) {
    let mut buf = BytesMut::with_capacity(1024);
    let mut head = RequestHead::default();
    let limits = Limits::default();
    let mut out = BytesMut::new();
    loop {
        match request::parse(&buf, &limits, &mut head) {
            Ok(true) => break,
            Ok(false) => {}
            Err(e) => {
                canned::error(&mut out, e.status(), true);
                let _ = wire::write_one(&mut stream, &out, TIMEOUT).await;
                return;
            }
        }
        match wire::read_up_to(&mut stream, &mut buf, 1024, TIMEOUT).await {
            Ok(n) if n > 0 => {}
            _ => return,
        }
    }
    let path = head.target(&buf);
    let path = path.split(|&b| b == b'?').next().unwrap_or_default();
    match path {
        b"/metrics" => {
            sidecar.refresh_gauges();
            let body = sidecar.metrics.render();
            canned::head(&mut out, 200, "text/plain; version=0.0.4", body.len(), true);
            out.extend_from_slice(&body);
        }
        b"/healthz" => {
            sidecar.health(&mut out, true, head.method == Method::Head);
        }
        b"/hot" => match &sidecar.relay {
            Some(relay) => {
                let body = topk::to_json(&relay.hottest());
                canned::head(&mut out, 200, "application/json", body.len(), true);
                out.extend_from_slice(body.as_bytes());
            }
            None => canned::error(&mut out, 404, true),
        },
        _ => canned::error(&mut out, 404, true),
    }
    let _ = wire::write_one(&mut stream, &out, TIMEOUT).await;
}
