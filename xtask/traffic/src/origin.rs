//! The synthetic origin: an HTTP/1.1 content server (tokio, keep-alive, pipelining) that
//! serves a deterministic body of the size the URL asks for at any URL, and counts requests
//! per URL and per client address so that tests can prove where fetches came from. It is
//! also the origin of the sidecar's own tests, with the routes they need to reach every
//! framing and misbehaviour a real origin has.
//!
//! - **Size**: the query parameter `size=N` (decimal bytes), e.g. `/obj/17?size=12345`; 4096
//!   bytes when absent; 0 to 256 MiB, anything else (or unparsable) is answered 400.
//! - **Body**: deterministic from the request target (path and query; an absolute-form target
//!   is reduced to them) and the size: bytes of SplitMix64 words seeded by the target's
//!   FNV-1a 64 hash, repeating every 64 KiB, streamed (never held whole). [`body`] builds it
//!   for checks.
//! - **Headers**: `Content-Length`, `Content-Type: application/octet-stream`,
//!   `Cache-Control: max-age=3600` (so caches store it; `cc=VALUE` in the query sends VALUE
//!   instead), `ETag: "<hash, 16 hex digits>"`; `If-None-Match` with that ETag (or `*`) gets
//!   304.
//! - **Methods**: GET and HEAD; others 405 with `Allow: GET, HEAD` (but see `/echo`). Request
//!   bodies (Content-Length or chunked) are read.
//! - **Variants**: `vary=NAME` in the query sends `Vary: NAME`, and the body and ETag depend
//!   on the request's values of field NAME as well ([`varied`]).
//! - **Delay**: `ms=M` in the query (at most 60,000) and `--delay-ms` (or
//!   [`Options::delay`]) delay the response, to emulate a slow origin.
//! - **Routes for tests** (by path):
//!
//!   | path | answer |
//!   |---|---|
//!   | `/chunked/..` | the content, chunked in pieces of 1,000 bytes |
//!   | `/close/..` | the content without a length, ended by closing the connection (`no-store`) |
//!   | `/echo` | the request body, chunked, for any method (`no-store`) |
//!   | `/headers` | the request head as received, for any method (`no-store`) |
//!   | `/script/NAME/..` | the [`Step`]s registered as NAME with [`Origin::script`], played on the wire: a hostile or broken origin (404 when none is registered) |
//!
//! - **Counts**: every request but the control paths counts once for its target (the map key
//!   is the target as a string, e.g. `/obj/17?size=12345`), whatever its method and status,
//!   and once for the client's IP address; [`Origin::connections`] counts connections.
//! - **Control paths** (not counted): `GET /_origin/counts` answers JSON `{"<target>": count,
//!   ...}`, `GET /_origin/peers` answers JSON `{"<client IP>": count, ...}`, `POST
//!   /_origin/reset` clears both maps (204). [`Remote`] is their client.
//!
//! In-process: [`Origin::start`] binds, serves on its own thread (its own tokio runtime, so it
//! works from sync and async callers alike) and returns a handle with [`Origin::local_addr`],
//! [`Origin::counts`], [`Origin::fetches`], [`Origin::peers`], [`Origin::total`],
//! [`Origin::reset`], [`Origin::script`] and [`Origin::stop`] (dropping the handle stops it
//! too: it then answers nothing more, also on connections it had open). As a process:
//! `dl7-traffic origin --listen ADDR:PORT [--delay-ms N]` serves until killed; it prints
//! `origin: listening on ADDR:PORT` on stderr once the socket is bound.

use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

use crate::http1::{self, Framing, Reader};

/// The size served when the URL names none.
pub const DEFAULT_SIZE: u64 = 4096;
/// The largest size served.
pub const MAX_SIZE: u64 = 256 << 20;
/// The body repeats with this period (and is written in pieces of this size).
const PERIOD: usize = 64 * 1024;
/// Idle keep-alive connections are closed after this long.
const IDLE: Duration = Duration::from_secs(300);
/// Prefix of the control paths.
const CONTROL: &str = "/_origin/";
/// The longest delay `ms=M` asks for.
const MAX_DELAY_MS: u64 = 60_000;
/// The largest request body `/echo` sends back.
const MAX_ECHO: usize = 16 << 20;

/// One step of a scripted answer (`/script/NAME/..`): what a hostile or broken origin does on
/// the wire.
#[derive(Debug, Clone)]
pub enum Step {
    /// Write these bytes.
    Send(Vec<u8>),
    /// Wait this many milliseconds.
    Sleep(u64),
    /// Write the bytes one at a time, `ms` apart.
    Drip(Vec<u8>, u64),
    /// Write the bytes again and again for `ms` milliseconds (or until the peer goes).
    Flood(Vec<u8>, u64),
    /// Close the connection.
    Close,
}

/// Options of `cargo xtask origin`.
#[derive(Debug, Clone, clap::Args)]
pub struct OriginArgs {
    /// Address and port to listen on.
    #[arg(long, default_value = "127.0.0.1:8000")]
    pub listen: SocketAddr,
    /// Delay every content response by this many milliseconds (a slow origin).
    #[arg(long, default_value_t = 0)]
    pub delay_ms: u64,
}

/// How the origin behaves.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Delay before every content response.
    pub delay: Duration,
}

/// Runs `cargo xtask origin`: serves until the process is killed.
pub fn run(args: OriginArgs) -> Result<()> {
    let origin = Origin::start_with(
        args.listen,
        Options {
            delay: Duration::from_millis(args.delay_ms),
        },
    )?;
    eprintln!("origin: listening on {}", origin.local_addr());
    origin.wait()
}

#[derive(Default)]
struct Counts {
    urls: BTreeMap<String, u64>,
    peers: BTreeMap<IpAddr, u64>,
}

struct State {
    counts: Mutex<Counts>,
    scripts: Mutex<HashMap<String, Arc<[Step]>>>,
    connections: AtomicU64,
    options: Options,
}

impl State {
    fn counts(&self) -> std::sync::MutexGuard<'_, Counts> {
        self.counts.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn script(&self, name: &str) -> Option<Arc<[Step]>> {
        let scripts = self.scripts.lock().unwrap_or_else(PoisonError::into_inner);
        scripts.get(name).cloned()
    }
}

/// A running origin; stops when dropped.
#[allow(
    dead_code,
    reason = "the in-process handle's and control client's full API; the load tests use every part"
)]
pub struct Origin {
    addr: SocketAddr,
    state: Arc<State>,
    shutdown: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

#[allow(
    dead_code,
    reason = "the in-process handle's and control client's full API; the load tests use every part"
)]
impl Origin {
    /// Binds `addr` (port 0 picks a free port) and serves with default options.
    pub fn start(addr: SocketAddr) -> Result<Self> {
        Self::start_with(addr, Options::default())
    }

    /// Binds `addr` and serves with `options`.
    pub fn start_with(addr: SocketAddr, options: Options) -> Result<Self> {
        let listener =
            std::net::TcpListener::bind(addr).with_context(|| format!("origin: binding {addr}"))?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let state = Arc::new(State {
            counts: Mutex::default(),
            scripts: Mutex::default(),
            connections: AtomicU64::new(0),
            options,
        });
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("origin")
            .enable_all()
            .build()
            .context("origin: starting tokio")?;
        let (shutdown, stopped) = oneshot::channel();
        let serving = Arc::clone(&state);
        let thread = std::thread::Builder::new()
            .name("origin".into())
            .spawn(move || {
                runtime.block_on(async move {
                    match TcpListener::from_std(listener) {
                        Ok(listener) => accept(listener, serving, stopped).await,
                        Err(e) => eprintln!("origin: {e}"),
                    }
                });
                // Ends the connections still open.
                runtime.shutdown_timeout(Duration::from_secs(1));
            })
            .context("origin: starting its thread")?;
        Ok(Self {
            addr,
            state,
            shutdown: Some(shutdown),
            thread: Some(thread),
        })
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://ADDR`, as configs name an origin.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Requests per URL (request target) so far.
    pub fn counts(&self) -> BTreeMap<String, u64> {
        self.state.counts().urls.clone()
    }

    /// Requests for `target` so far.
    pub fn fetches(&self, target: &str) -> u64 {
        self.state.counts().urls.get(target).copied().unwrap_or(0)
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> u64 {
        self.state.connections.load(Ordering::Relaxed)
    }

    /// Registers a script: a request for `/script/NAME/..` (any rest) is answered by playing
    /// `steps`; the connection then goes on serving unless a step closed it.
    pub fn script(&self, name: &str, steps: Vec<Step>) {
        let mut scripts = self
            .state
            .scripts
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        scripts.insert(name.to_owned(), steps.into());
    }

    /// Requests per client IP address so far.
    pub fn peers(&self) -> BTreeMap<IpAddr, u64> {
        self.state.counts().peers.clone()
    }

    /// All requests counted so far.
    pub fn total(&self) -> u64 {
        self.state.counts().urls.values().sum()
    }

    /// Forgets every count.
    pub fn reset(&self) {
        *self.state.counts() = Counts::default();
    }

    /// Stops serving and closes every connection.
    pub fn stop(mut self) {
        self.halt();
    }

    /// Serves until the serving thread ends (it does not, unless it fails).
    fn wait(mut self) -> Result<()> {
        if let Some(thread) = self.thread.take() {
            thread
                .join()
                .map_err(|_| anyhow::anyhow!("origin: its thread panicked"))?;
        }
        bail!("origin: stopped serving")
    }

    fn halt(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Origin {
    fn drop(&mut self) {
        self.halt();
    }
}

async fn accept(listener: TcpListener, state: Arc<State>, mut stopped: oneshot::Receiver<()>) {
    loop {
        tokio::select! {
            _ = &mut stopped => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    state.connections.fetch_add(1, Ordering::Relaxed);
                    let _ = stream.set_nodelay(true);
                    tokio::spawn(serve(stream, peer.ip(), Arc::clone(&state)));
                }
                Err(e) => {
                    // Out of descriptors, usually: wait for connections to end.
                    eprintln!("origin: accept: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
        }
    }
}

/// A parsed request head.
struct Request {
    method: String,
    /// Origin-form: path and query.
    target: String,
    framing: Framing,
    close: bool,
    if_none_match: Option<String>,
    /// The head as received, kept for `/headers` only.
    head: Vec<u8>,
    /// With `vary=NAME` in the query: the request's values of field NAME (joined by commas),
    /// `None` when it has none.
    varies_with: Option<String>,
}

fn parse_request(buf: &[u8]) -> Result<Option<(usize, Request)>, String> {
    let mut headers = [httparse::EMPTY_HEADER; http1::MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let n = match req.parse(buf).map_err(|e| e.to_string())? {
        httparse::Status::Complete(n) => n,
        httparse::Status::Partial => return Ok(None),
    };
    let target = req.path.unwrap_or("/");
    let target = match target.split_once("://") {
        Some((_, rest)) => rest.find('/').map_or("/", |i| &rest[i..]),
        None => target,
    };
    let head = if path_of(target) == "/headers" {
        buf[..n].to_vec()
    } else {
        Vec::new()
    };
    let varies_with = param(target, "vary").and_then(|name| {
        let values: Vec<&str> = req
            .headers
            .iter()
            .filter(|h| h.name.eq_ignore_ascii_case(name))
            .filter_map(|h| std::str::from_utf8(h.value).ok())
            .map(str::trim)
            .collect();
        (!values.is_empty()).then(|| values.join(","))
    });
    Ok(Some((
        n,
        Request {
            method: req.method.unwrap_or_default().to_owned(),
            target: target.to_owned(),
            framing: http1::declared_framing(req.headers)?.unwrap_or(Framing::Empty),
            close: http1::closes(req.version.unwrap_or(1), req.headers),
            if_none_match: http1::header(req.headers, "if-none-match").map(str::to_owned),
            head,
            varies_with,
        },
    )))
}

async fn serve(stream: TcpStream, peer: IpAddr, state: Arc<State>) {
    let mut conn = Reader::new(stream);
    loop {
        let req = match tokio::time::timeout(IDLE, conn.head(parse_request)).await {
            Ok(Ok(Some(req))) => req,
            Ok(Err(http1::WireError::Malformed(_))) => {
                let _ = reply(&mut conn, 400, "Bad Request", "", b"", true).await;
                return;
            }
            // Closed, failed or idle for too long.
            _ => return,
        };
        let mut body = Vec::new();
        let keep = (path_of(&req.target) == "/echo").then_some(&mut body);
        if conn.body(req.framing, keep).await.is_err() || body.len() > MAX_ECHO {
            return;
        }
        if respond(&mut conn, &req, &body, peer, &state).await.is_err() || req.close {
            return;
        }
    }
}

/// Answers one request.
async fn respond(
    conn: &mut Reader<TcpStream>,
    req: &Request,
    body: &[u8],
    peer: IpAddr,
    state: &State,
) -> std::io::Result<()> {
    let close = req.close;
    let head = req.method == "HEAD";
    if let Some(control) = req.target.strip_prefix(CONTROL) {
        let json = |v: serde_json::Value| v.to_string().into_bytes();
        return match (req.method.as_str(), control) {
            ("GET", "counts") => {
                let body = json(serde_json::json!(state.counts().urls));
                reply(conn, 200, "OK", JSON, &body, close).await
            }
            ("GET", "peers") => {
                let body = json(serde_json::json!(state.counts().peers));
                reply(conn, 200, "OK", JSON, &body, close).await
            }
            ("POST", "reset") => {
                *state.counts() = Counts::default();
                reply(conn, 204, "No Content", "", b"", close).await
            }
            _ => reply(conn, 404, "Not Found", "", b"", close).await,
        };
    }
    {
        let mut counts = state.counts();
        *counts.urls.entry(req.target.clone()).or_default() += 1;
        *counts.peers.entry(peer).or_default() += 1;
    }
    let path = path_of(&req.target);
    if let Some(rest) = path.strip_prefix("/script/") {
        let name = rest.split('/').next().unwrap_or_default();
        return match state.script(name) {
            Some(steps) => play(conn.get_mut(), &steps).await,
            None => reply(conn, 404, "Not Found", "", b"", close).await,
        };
    }
    let asked = param(&req.target, "ms")
        .and_then(|ms| ms.parse::<u64>().ok())
        .unwrap_or(0)
        .min(MAX_DELAY_MS);
    let delay = state.options.delay + Duration::from_millis(asked);
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    match path {
        "/echo" => {
            let mut out = head_bytes(200, "OK", NO_STORE_CHUNKED, None, close);
            chunk(&mut out, body.chunks(body.len().div_ceil(3).max(1)));
            return conn.get_mut().write_all(&out).await;
        }
        "/headers" => return reply(conn, 200, "OK", NO_STORE, &req.head, close).await,
        _ => {}
    }
    if req.method != "GET" && !head {
        return reply(conn, 405, "Method Not Allowed", ALLOW, b"", close).await;
    }
    let Some(size) = requested_size(&req.target) else {
        let msg = format!("size must be 0 to {MAX_SIZE} bytes\n");
        return reply(conn, 400, "Bad Request", TEXT, msg.as_bytes(), close).await;
    };
    // With `vary=NAME`, the body (and its ETag) depend on the request's field NAME too.
    let vary = param(&req.target, "vary");
    let seeded = match vary {
        Some(_) => varied(&req.target, req.varies_with.as_deref()),
        None => req.target.clone(),
    };
    let seed = fnv1a(seeded.as_bytes());
    let etag = format!("\"{seed:016x}\"");
    let cache_control = param(&req.target, "cc").unwrap_or("max-age=3600");
    let mut cache = format!("{CONTENT_TYPE}Cache-Control: {cache_control}\r\nETag: {etag}\r\n");
    if let Some(name) = vary {
        cache.push_str(&format!("Vary: {name}\r\n"));
    }
    if req
        .if_none_match
        .as_deref()
        .is_some_and(|v| v.trim() == "*" || v.split(',').any(|t| t.trim() == etag))
    {
        let out = head_bytes(304, "Not Modified", &cache, None, close);
        return conn.get_mut().write_all(&out).await;
    }
    let pattern = pattern(seed, (size as usize).min(PERIOD));
    if path.starts_with("/chunked/") {
        let mut out = head_bytes(200, "OK", &format!("{cache}{CHUNKED}"), None, close);
        if !head {
            let data = self::body(&seeded, size);
            chunk(&mut out, data.chunks(1000));
        }
        return conn.get_mut().write_all(&out).await;
    }
    let until_close = path.starts_with("/close/");
    let mut out = if until_close {
        head_bytes(200, "OK", NO_STORE, None, true)
    } else {
        head_bytes(200, "OK", &cache, Some(size), close)
    };
    let stream = conn.get_mut();
    if head {
        stream.write_all(&out).await?;
    } else if size as usize <= PERIOD {
        out.extend_from_slice(&pattern);
        stream.write_all(&out).await?;
    } else {
        stream.write_all(&out).await?;
        let mut left = size;
        while left > 0 {
            let n = left.min(PERIOD as u64) as usize;
            stream.write_all(&pattern[..n]).await?;
            left -= n as u64;
        }
    }
    if until_close {
        return Err(std::io::Error::other("a body delimited by the close"));
    }
    Ok(())
}

/// What the body of a `vary=NAME` target is seeded with: the target and the request's
/// values of field NAME (`-` when it had none). [`body`] of this is what such a request gets.
pub fn varied(target: &str, value: Option<&str>) -> String {
    format!("{target}|{}", value.unwrap_or("-"))
}

/// The path of a target (without the query).
fn path_of(target: &str) -> &str {
    target.split('?').next().unwrap_or("/")
}

/// The value of query parameter `name`, if present.
fn param<'t>(target: &'t str, name: &str) -> Option<&'t str> {
    let (_, query) = target.split_once('?')?;
    query
        .split('&')
        .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
}

/// Appends `pieces` to `out` as chunks, then the last chunk.
fn chunk<'a>(out: &mut Vec<u8>, pieces: impl Iterator<Item = &'a [u8]>) {
    for piece in pieces {
        out.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
        out.extend_from_slice(piece);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"0\r\n\r\n");
}

/// Plays a script; an error (or a `Close` step) ends the connection.
async fn play(stream: &mut TcpStream, steps: &[Step]) -> std::io::Result<()> {
    for step in steps {
        match step {
            Step::Send(bytes) => stream.write_all(bytes).await?,
            Step::Sleep(ms) => tokio::time::sleep(Duration::from_millis(*ms)).await,
            Step::Drip(bytes, ms) => {
                for b in bytes {
                    stream.write_all(std::slice::from_ref(b)).await?;
                    tokio::time::sleep(Duration::from_millis(*ms)).await;
                }
            }
            Step::Flood(bytes, ms) => {
                let until = tokio::time::Instant::now() + Duration::from_millis(*ms);
                while tokio::time::Instant::now() < until {
                    stream.write_all(bytes).await?;
                }
            }
            Step::Close => return Err(std::io::Error::other("the script closes")),
        }
    }
    Ok(())
}

const JSON: &str = "Content-Type: application/json\r\nCache-Control: no-store\r\n";
const TEXT: &str = "Content-Type: text/plain\r\n";
const ALLOW: &str = "Allow: GET, HEAD\r\n";
const CONTENT_TYPE: &str = "Content-Type: application/octet-stream\r\n";
const CHUNKED: &str = "Transfer-Encoding: chunked\r\n";
const NO_STORE: &str = "Cache-Control: no-store\r\n";
const NO_STORE_CHUNKED: &str = "Cache-Control: no-store\r\nTransfer-Encoding: chunked\r\n";

/// A response head; `headers` are complete lines.
fn head_bytes(
    status: u16,
    reason: &str,
    headers: &str,
    length: Option<u64>,
    close: bool,
) -> Vec<u8> {
    let mut head = format!("HTTP/1.1 {status} {reason}\r\nServer: dl7-origin\r\n{headers}");
    if let Some(n) = length {
        head.push_str(&format!("Content-Length: {n}\r\n"));
    }
    if close {
        head.push_str("Connection: close\r\n");
    }
    head.push_str("\r\n");
    head.into_bytes()
}

/// Writes a whole small response.
async fn reply(
    conn: &mut Reader<TcpStream>,
    status: u16,
    reason: &str,
    headers: &str,
    body: &[u8],
    close: bool,
) -> std::io::Result<()> {
    let length = (status != 204).then_some(body.len() as u64);
    let mut out = head_bytes(status, reason, headers, length, close);
    out.extend_from_slice(body);
    conn.get_mut().write_all(&out).await
}

/// The body size a target asks for; `None` when invalid or too large.
pub fn requested_size(target: &str) -> Option<u64> {
    let Some((_, query)) = target.split_once('?') else {
        return Some(DEFAULT_SIZE);
    };
    match query.split('&').find_map(|kv| kv.strip_prefix("size=")) {
        None => Some(DEFAULT_SIZE),
        Some(v) => v.parse::<u64>().ok().filter(|&n| n <= MAX_SIZE),
    }
}

/// FNV-1a, 64 bits: stable across Rust releases, unlike `DefaultHasher`.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// The first `len` bytes (at most one period) of the body seeded by `seed`.
fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len.next_multiple_of(8));
    let mut state = seed;
    while out.len() < len {
        // SplitMix64.
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        out.extend_from_slice(&(z ^ (z >> 31)).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// The whole body served for `target` (origin-form) at `size` bytes, to check responses.
pub fn body(target: &str, size: u64) -> Vec<u8> {
    let period = pattern(fnv1a(target.as_bytes()), (size as usize).min(PERIOD));
    period.iter().copied().cycle().take(size as usize).collect()
}

/// The control paths of an origin running elsewhere (another process, another namespace).
pub struct Remote(pub SocketAddr);

#[allow(
    dead_code,
    reason = "the in-process handle's and control client's full API; the load tests use every part"
)]
impl Remote {
    /// Requests per URL (`GET /_origin/counts`).
    pub fn counts(&self) -> Result<BTreeMap<String, u64>> {
        let body = control(self.0, "GET", "counts")?;
        serde_json::from_slice(&body).context("origin: parsing the counts")
    }

    /// Requests per client IP (`GET /_origin/peers`).
    pub fn peers(&self) -> Result<BTreeMap<IpAddr, u64>> {
        let body = control(self.0, "GET", "peers")?;
        serde_json::from_slice(&body).context("origin: parsing the peers")
    }

    /// Clears the counts (`POST /_origin/reset`).
    pub fn reset(&self) -> Result<()> {
        control(self.0, "POST", "reset").map(drop)
    }
}

/// One request to a control path, on its own connection; returns the body.
fn control(addr: SocketAddr, method: &str, what: &str) -> Result<Vec<u8>> {
    let limit = Duration::from_secs(5);
    let mut s = std::net::TcpStream::connect_timeout(&addr, limit)
        .with_context(|| format!("origin: connecting to {addr}"))?;
    s.set_read_timeout(Some(limit))?;
    s.set_write_timeout(Some(limit))?;
    write!(
        s,
        "{method} {CONTROL}{what} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = Vec::new();
    s.read_to_end(&mut response)
        .with_context(|| format!("origin: reading from {addr}"))?;
    let mut headers = [httparse::EMPTY_HEADER; http1::MAX_HEADERS];
    let mut parsed = httparse::Response::new(&mut headers);
    let Ok(httparse::Status::Complete(n)) = parsed.parse(&response) else {
        bail!("origin at {addr}: malformed answer to {method} {CONTROL}{what}");
    };
    let status = parsed.code.unwrap_or(0);
    ensure!(
        (200..300).contains(&status),
        "origin at {addr}: {method} {CONTROL}{what} answered {status}"
    );
    Ok(response[n..].to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOCAL: &str = "127.0.0.1:0";

    /// Sends `requests` on one connection and reads until the origin closes it (every batch
    /// ends with a `Connection: close` request) or 5 s pass.
    fn exchange(addr: SocketAddr, requests: &str) -> Vec<u8> {
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(requests.as_bytes()).unwrap();
        let mut out = Vec::new();
        s.read_to_end(&mut out).unwrap();
        out
    }

    /// Status, headers (names in lower case) and body.
    type Response = (u16, Vec<(String, String)>, Vec<u8>);

    /// Splits a byte stream of responses to `methods` into responses.
    fn responses(mut wire: &[u8], methods: &[&str]) -> Vec<Response> {
        let mut out = Vec::new();
        for method in methods {
            let mut headers = [httparse::EMPTY_HEADER; 32];
            let mut r = httparse::Response::new(&mut headers);
            let httparse::Status::Complete(n) = r.parse(wire).unwrap() else {
                panic!("partial response")
            };
            let headers: Vec<(String, String)> = r
                .headers
                .iter()
                .map(|h| {
                    let value = String::from_utf8_lossy(h.value).into_owned();
                    (h.name.to_ascii_lowercase(), value)
                })
                .collect();
            let length = headers
                .iter()
                .find(|(k, _)| k == "content-length")
                .map_or(0, |(_, v)| v.parse::<usize>().unwrap());
            let body_len = if *method == "HEAD" { 0 } else { length };
            out.push((r.code.unwrap(), headers, wire[n..n + body_len].to_vec()));
            wire = &wire[n + body_len..];
        }
        assert!(wire.is_empty(), "{} bytes left over", wire.len());
        out
    }

    fn get(target: &str, last: bool) -> String {
        let close = if last { "Connection: close\r\n" } else { "" };
        format!("GET {target} HTTP/1.1\r\nHost: origin\r\n{close}\r\n")
    }

    #[test]
    fn keep_alive_sizes_bodies_and_counts() {
        let origin = Origin::start(LOCAL.parse().unwrap()).unwrap();
        let targets = [
            "/obj/1?size=0",
            "/obj/2?size=1",
            "/a/b",
            "/obj/3?size=200000",
            "/obj/1?size=0",
        ];
        let mut batch = String::new();
        for (i, t) in targets.iter().enumerate() {
            batch.push_str(&get(t, i == targets.len() - 1));
        }
        let wire = exchange(origin.local_addr(), &batch);
        let got = responses(&wire, &["GET"; 5]);
        for ((status, headers, body), target) in got.iter().zip(targets) {
            assert_eq!(*status, 200);
            let size = requested_size(target).unwrap();
            assert_eq!(body.len() as u64, size, "{target}");
            assert_eq!(*body, super::body(target, size), "{target}");
            let h = |k: &str| {
                headers
                    .iter()
                    .find(|(n, _)| n == k)
                    .map(|(_, v)| v.as_str())
            };
            assert_eq!(h("cache-control"), Some("max-age=3600"));
            assert_eq!(h("content-type"), Some("application/octet-stream"));
            assert!(h("etag").is_some_and(|e| e.starts_with('"')));
        }
        assert_eq!(got[2].2.len(), 4096, "default size");
        let etag = |i: usize| {
            got[i]
                .1
                .iter()
                .find(|(k, _)| k == "etag")
                .unwrap()
                .1
                .clone()
        };
        assert_ne!(etag(0), etag(1), "different targets, different ETags");
        assert_eq!(etag(0), etag(4), "same target, same ETag");
        // The 64 KiB period repeats.
        assert_eq!(got[3].2[..1000], got[3].2[PERIOD..PERIOD + 1000]);
        let counts = origin.counts();
        assert_eq!(counts["/obj/1?size=0"], 2);
        assert_eq!(counts["/a/b"], 1);
        assert_eq!(origin.total(), 5);
        assert_eq!(origin.peers()[&"127.0.0.1".parse::<IpAddr>().unwrap()], 5);
        origin.stop();
    }

    #[test]
    fn head_errors_revalidation_and_request_bodies() {
        let origin = Origin::start(LOCAL.parse().unwrap()).unwrap();
        let etag = format!("\"{:016x}\"", fnv1a(b"/x?size=10"));
        let batch = format!(
            "HEAD /x?size=10 HTTP/1.1\r\nHost: o\r\n\r\n\
             GET /x?size=10 HTTP/1.1\r\nHost: o\r\nIf-None-Match: {etag}\r\n\r\n\
             GET /x?size={} HTTP/1.1\r\nHost: o\r\n\r\n\
             GET /x?size=abc HTTP/1.1\r\nHost: o\r\n\r\n\
             POST /x HTTP/1.1\r\nHost: o\r\nContent-Length: 3\r\n\r\nabc\
             PUT /x HTTP/1.1\r\nHost: o\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nab\r\n0\r\n\r\n\
             GET http://o/y?size=3 HTTP/1.1\r\nHost: o\r\nConnection: close\r\n\r\n",
            MAX_SIZE + 1
        );
        let wire = exchange(origin.local_addr(), &batch);
        let got = responses(&wire, &["HEAD", "GET", "GET", "GET", "POST", "PUT", "GET"]);
        let statuses: Vec<u16> = got.iter().map(|r| r.0).collect();
        assert_eq!(statuses, [200, 304, 400, 400, 405, 405, 200]);
        assert!(got[0].1.contains(&("content-length".into(), "10".into())));
        assert!(got[0].2.is_empty());
        assert_eq!(
            got[6].2,
            super::body("/y?size=3", 3),
            "absolute-form target"
        );
        let counts = origin.counts();
        assert_eq!(counts["/x?size=10"], 2, "HEAD and the conditional GET");
        assert_eq!(counts["/y?size=3"], 1);
        assert_eq!(origin.total(), 7, "every request counts, POST and PUT too");
    }

    #[test]
    fn http10_closes_and_control_paths_work() {
        let origin = Origin::start(LOCAL.parse().unwrap()).unwrap();
        let addr = origin.local_addr();
        let wire = exchange(addr, "GET /z?size=5 HTTP/1.0\r\n\r\n");
        assert_eq!(responses(&wire, &["GET"])[0].2.len(), 5);
        assert_eq!(
            Remote(addr).counts().unwrap(),
            BTreeMap::from([("/z?size=5".into(), 1)])
        );
        let peers = Remote(addr).peers().unwrap();
        assert_eq!(peers.values().sum::<u64>(), 1);
        Remote(addr).reset().unwrap();
        assert!(Remote(addr).counts().unwrap().is_empty());
        assert_eq!(origin.total(), 0);
        let wire = exchange(addr, "garbage\r\n\r\n");
        assert!(wire.starts_with(b"HTTP/1.1 400 "));
        origin.stop();
        assert!(
            std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_err(),
            "stopped"
        );
    }

    #[test]
    fn delay_slows_responses() {
        let origin = Origin::start_with(
            LOCAL.parse().unwrap(),
            Options {
                delay: Duration::from_millis(200),
            },
        )
        .unwrap();
        let start = std::time::Instant::now();
        exchange(origin.local_addr(), &get("/slow", true));
        assert!(start.elapsed() >= Duration::from_millis(200));
    }

    #[test]
    fn test_routes_frame_echo_and_misbehave() {
        let origin = Origin::start(LOCAL.parse().unwrap()).unwrap();
        origin.script(
            "garbage",
            vec![
                Step::Send(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nxy".to_vec()),
                Step::Close,
            ],
        );
        let addr = origin.local_addr();
        let wire = exchange(
            addr,
            "GET /chunked/c?size=2500&cc=no-store HTTP/1.1\r\nHost: o\r\n\r\n\
             POST /echo HTTP/1.1\r\nHost: o\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n\
             GET /headers HTTP/1.1\r\nHost: o\r\nX-Test: 1\r\n\r\n\
             GET /close/c?size=70000 HTTP/1.1\r\nHost: o\r\n\r\n",
        );
        let text = String::from_utf8_lossy(&wire);
        let chunked = "HTTP/1.1 200 OK\r\nServer: dl7-origin\r\nContent-Type: \
            application/octet-stream\r\nCache-Control: no-store\r\n";
        assert!(text.starts_with(chunked), "{text:.300}");
        let body = super::body("/chunked/c?size=2500&cc=no-store", 2500);
        let first = [b"3e8\r\n".as_slice(), &body[..1000], b"\r\n"].concat();
        assert!(
            wire.windows(first.len()).any(|w| w == first),
            "1000-byte chunks"
        );
        assert!(text.contains("\r\n1f4\r\n"), "the last 500 bytes");
        // In three chunks, so that a relay that joins them is seen doing so.
        assert!(
            text.contains("\r\n1\r\na\r\n1\r\nb\r\n1\r\nc\r\n0\r\n\r\n"),
            "the echo"
        );
        assert!(text.contains("GET /headers HTTP/1.1\r\nHost: o\r\nX-Test: 1\r\n\r\n"));
        let close = text.rfind("HTTP/1.1 200 OK").unwrap();
        assert!(text[close..].contains("Connection: close\r\n"));
        assert!(!text[close..].contains("Content-Length"));
        let end = wire.len() - 70000;
        assert_eq!(wire[end..], super::body("/close/c?size=70000", 70000));

        let start = std::time::Instant::now();
        let wire = exchange(addr, &get("/x?size=1&ms=300", true));
        assert!(start.elapsed() >= Duration::from_millis(300));
        assert!(wire.starts_with(b"HTTP/1.1 200 "));
        let wire = exchange(addr, &get("/script/garbage/1", false));
        assert_eq!(wire, b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nxy");
        let wire = exchange(addr, &get("/script/none/1", true));
        assert!(wire.starts_with(b"HTTP/1.1 404 "));
        origin.script("close", vec![Step::Sleep(10), Step::Close]);
        assert!(exchange(addr, &get("/script/close/1", false)).is_empty());
        assert_eq!(origin.fetches("/echo"), 1);
        assert_eq!(origin.fetches("/script/garbage/1"), 1);
        assert_eq!(origin.connections(), 5);
    }
}
