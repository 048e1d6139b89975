//! A test origin (plain threads, keep-alive, HTTP/1.1) that counts every request by target.
//!
//! | path | answer |
//! |---|---|
//! | `/obj/..?size=N[&cc=V]` | `N` bytes of [`body_for`] with `Content-Length`; `Cache-Control: max-age=60` or `V` |
//! | `/chunked/..?size=N[&cc=V]` | the same, chunked in pieces of 1000 bytes |
//! | `/slow/..?ms=M&size=N` | like `/obj` after `M` ms |
//! | `/big/..?size=N` | like `/obj`, written in 64 KiB pieces (never held whole) |
//! | `/close/..?size=N` | no length: the body ends when the origin closes the connection |
//! | `/echo` | the request body, chunked (`no-store`) |
//! | `/headers` | the request head as received (`no-store`) |
//! | `/status/S` | status `S` |
//! | `/script/NAME/..` | the byte script registered as `NAME` with [`Origin::script`] (a hostile origin) |

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// The body the origin sends for `target`: the target's bytes repeated to `size` bytes.
pub fn body_for(target: &str, size: usize) -> Vec<u8> {
    target.bytes().cycle().take(size).collect()
}

/// One step of a scripted answer: what a hostile or broken origin does on the wire.
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

#[derive(Default)]
struct State {
    scripts: Mutex<HashMap<String, Vec<Step>>>,
    fetches: Mutex<HashMap<String, usize>>,
    connections: AtomicUsize,
    stop: AtomicBool,
}

/// A running test origin; stopped when dropped.
pub struct Origin {
    pub addr: SocketAddr,
    state: Arc<State>,
    accept: Option<JoinHandle<()>>,
}

impl Origin {
    pub fn start(ip: Ipv4Addr) -> Origin {
        let listener = TcpListener::bind((ip, 0)).expect("bind origin");
        let addr = listener.local_addr().expect("origin address");
        let state = Arc::new(State::default());
        let st = state.clone();
        let accept = std::thread::spawn(move || {
            for stream in listener.incoming() {
                if st.stop.load(Ordering::Relaxed) {
                    return;
                }
                let Ok(stream) = stream else { continue };
                st.connections.fetch_add(1, Ordering::Relaxed);
                let st = st.clone();
                std::thread::spawn(move || serve(stream, &st));
            }
        });
        Origin {
            addr,
            state,
            accept: Some(accept),
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Registers a script: a request for `/script/NAME/..` (any rest) is answered by
    /// playing `steps`; the connection then goes on serving unless a step closed it.
    pub fn script(&self, name: &str, steps: Vec<Step>) {
        self.state
            .scripts
            .lock()
            .expect("lock")
            .insert(name.to_owned(), steps);
    }

    /// Requests received for `target`.
    pub fn fetches(&self, target: &str) -> usize {
        self.state
            .fetches
            .lock()
            .expect("lock")
            .get(target)
            .copied()
            .unwrap_or(0)
    }

    /// Requests received in all.
    pub fn total(&self) -> usize {
        self.state.fetches.lock().expect("lock").values().sum()
    }

    /// Connections accepted.
    pub fn connections(&self) -> usize {
        self.state.connections.load(Ordering::Relaxed)
    }
}

impl Drop for Origin {
    fn drop(&mut self) {
        self.state.stop.store(true, Ordering::Relaxed);
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
    }
}

fn param(target: &str, name: &str) -> Option<String> {
    let query = target.split_once('?')?.1;
    query
        .split('&')
        .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
        .map(str::to_owned)
}

/// Serves one connection until it closes, idles past 1 s after `stop`, or breaks.
fn serve(mut stream: TcpStream, state: &State) {
    let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
    let _ = stream.set_nodelay(true);
    let mut buf = Vec::new();
    loop {
        let Some((head, target, method, chunked, length)) = read_head(&mut stream, &mut buf, state)
        else {
            return;
        };
        // A stopped origin answers nothing more, also on connections it had open.
        if state.stop.load(Ordering::Relaxed) {
            return;
        }
        let body = if chunked {
            read_chunked(&mut stream, &mut buf, state)
        } else {
            read_exact(&mut stream, &mut buf, length, state)
        };
        let Some(body) = body else { return };
        *state
            .fetches
            .lock()
            .expect("lock")
            .entry(target.clone())
            .or_default() += 1;
        if respond(&mut stream, &method, &target, &head, &body, state).is_err() {
            return;
        }
    }
}

type Head = (Vec<u8>, String, String, bool, usize);

fn read_head(stream: &mut TcpStream, buf: &mut Vec<u8>, state: &State) -> Option<Head> {
    loop {
        let mut slots = [httparse::EMPTY_HEADER; 64];
        let mut req = httparse::Request::new(&mut slots);
        if let Ok(httparse::Status::Complete(len)) = req.parse(buf) {
            let find = |name: &str| {
                req.headers
                    .iter()
                    .find(|h| h.name.eq_ignore_ascii_case(name))
                    .map(|h| String::from_utf8_lossy(h.value).into_owned())
            };
            let chunked = find("transfer-encoding").is_some();
            let length = find("content-length")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            let target = req.path.unwrap_or("/").to_owned();
            let method = req.method.unwrap_or("GET").to_owned();
            let head = buf.drain(..len).collect();
            return Some((head, target, method, chunked, length));
        }
        if fill(stream, buf, state)? == 0 {
            return None;
        }
    }
}

/// Reads more; `None` on error, EOF as `Some(0)`; a read timeout retries unless stopping.
fn fill(stream: &mut TcpStream, buf: &mut Vec<u8>, state: &State) -> Option<usize> {
    let mut chunk = [0u8; 65536];
    for _ in 0..120 {
        match stream.read(&mut chunk) {
            Ok(n) => {
                buf.extend_from_slice(&chunk[..n]);
                return Some(n);
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                if state.stop.load(Ordering::Relaxed) {
                    return None;
                }
            }
            Err(_) => return None,
        }
    }
    None
}

fn read_exact(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
    n: usize,
    state: &State,
) -> Option<Vec<u8>> {
    while buf.len() < n {
        if fill(stream, buf, state)? == 0 {
            return None;
        }
    }
    Some(buf.drain(..n).collect())
}

fn read_line(stream: &mut TcpStream, buf: &mut Vec<u8>, state: &State) -> Option<String> {
    loop {
        if let Some(i) = buf.windows(2).position(|w| w == b"\r\n") {
            let line = String::from_utf8_lossy(&buf[..i]).into_owned();
            buf.drain(..i + 2);
            return Some(line);
        }
        if fill(stream, buf, state)? == 0 {
            return None;
        }
    }
}

fn read_chunked(stream: &mut TcpStream, buf: &mut Vec<u8>, state: &State) -> Option<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let line = read_line(stream, buf, state)?;
        let size = usize::from_str_radix(line.split(';').next()?.trim(), 16).ok()?;
        if size == 0 {
            while !read_line(stream, buf, state)?.is_empty() {}
            return Some(body);
        }
        let data = read_exact(stream, buf, size + 2, state)?;
        body.extend_from_slice(&data[..size]);
    }
}

/// Plays a script; an error ends the connection.
fn play(stream: &mut TcpStream, steps: &[Step]) -> io::Result<()> {
    for step in steps {
        match step {
            Step::Send(bytes) => stream.write_all(bytes)?,
            Step::Sleep(ms) => std::thread::sleep(Duration::from_millis(*ms)),
            Step::Drip(bytes, ms) => {
                for b in bytes {
                    stream.write_all(std::slice::from_ref(b))?;
                    std::thread::sleep(Duration::from_millis(*ms));
                }
            }
            Step::Flood(bytes, ms) => {
                let until = std::time::Instant::now() + Duration::from_millis(*ms);
                while std::time::Instant::now() < until {
                    stream.write_all(bytes)?;
                }
            }
            Step::Close => return Err(io::Error::other("script closes")),
        }
    }
    Ok(())
}

fn respond(
    stream: &mut TcpStream,
    method: &str,
    target: &str,
    head: &[u8],
    body: &[u8],
    state: &State,
) -> io::Result<()> {
    let path = target.split('?').next().unwrap_or("/");
    if let Some(rest) = path.strip_prefix("/script/") {
        let name = rest.split('/').next().unwrap_or_default();
        let steps = state.scripts.lock().expect("lock").get(name).cloned();
        return match steps {
            Some(steps) => play(stream, &steps),
            None => stream.write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"),
        };
    }
    let size: usize = param(target, "size")
        .and_then(|s| s.parse().ok())
        .unwrap_or(100);
    let cc = param(target, "cc").unwrap_or_else(|| "max-age=60".to_owned());
    let send_body = method != "HEAD";
    if let Some(ms) = param(target, "ms").and_then(|s| s.parse().ok()) {
        std::thread::sleep(Duration::from_millis(ms));
    }
    if path == "/echo" {
        let mut out =
            b"HTTP/1.1 200 OK\r\nCache-Control: no-store\r\nTransfer-Encoding: chunked\r\n\r\n"
                .to_vec();
        for piece in body.chunks(body.len().div_ceil(3).max(1)) {
            out.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
            out.extend_from_slice(piece);
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"0\r\n\r\n");
        return stream.write_all(&out);
    }
    if path == "/headers" {
        let out = [
            format!(
                "HTTP/1.1 200 OK\r\nCache-Control: no-store\r\nContent-Length: {}\r\n\r\n",
                head.len()
            )
            .as_bytes(),
            head,
        ]
        .concat();
        return stream.write_all(&out);
    }
    if let Some(status) = path.strip_prefix("/status/") {
        return stream.write_all(
            format!("HTTP/1.1 {status} Test\r\nContent-Length: 2\r\n\r\nxx").as_bytes(),
        );
    }
    let data = body_for(target, size);
    if path.starts_with("/chunked/") {
        let mut out =
            format!("HTTP/1.1 200 OK\r\nCache-Control: {cc}\r\nTransfer-Encoding: chunked\r\n\r\n")
                .into_bytes();
        if send_body {
            for piece in data.chunks(1000) {
                out.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
                out.extend_from_slice(piece);
                out.extend_from_slice(b"\r\n");
            }
            out.extend_from_slice(b"0\r\n\r\n");
        }
        return stream.write_all(&out);
    }
    if path.starts_with("/close/") {
        stream.write_all(
            b"HTTP/1.1 200 OK\r\nConnection: close\r\nCache-Control: no-store\r\n\r\n",
        )?;
        stream.write_all(&data)?;
        return Err(io::Error::other("closing"));
    }
    if path.starts_with("/obj/") || path.starts_with("/slow/") || path.starts_with("/big/") {
        stream.write_all(
            format!("HTTP/1.1 200 OK\r\nCache-Control: {cc}\r\nContent-Length: {size}\r\n\r\n")
                .as_bytes(),
        )?;
        if send_body {
            let pattern = target.as_bytes();
            let mut piece = Vec::with_capacity(65536);
            let mut sent = 0;
            while sent < size {
                piece.clear();
                let n = (size - sent).min(65536);
                piece.extend((sent..sent + n).map(|i| pattern[i % pattern.len()]));
                stream.write_all(&piece)?;
                sent += n;
            }
        }
        return Ok(());
    }
    stream.write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
}
