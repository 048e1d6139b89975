//! Network-namespace testbeds (root, `ip`, `sysctl`): namespaces named `dl7t-PID-N-ROLE`, so
//! that `cargo xtask test` removes what a killed run left behind, host namespaces plugged into
//! a bridge that has a namespace of its own, HTTP servers inside them, TCP clients with a
//! chosen source address, and commands with a bounded run time. [`Netns`] deletes its
//! namespaces on drop and [`HttpServer`] stops its threads on drop, also when an assertion
//! fails half-way through a setup.

use std::{
    io::{self, Read, Write},
    net::{Ipv4Addr, SocketAddrV4, TcpListener, TcpStream},
    os::fd::FromRawFd,
    process::{Command, Output, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU32, Ordering},
        mpsc,
    },
    thread::{self, JoinHandle},
    time::{Duration, Instant},
};

use l4_ctl::Mac;

/// The interface every host namespace has towards the bridge.
pub const IFACE: &str = "eth0";
/// Bound on each connect, read and write of the test's own sockets.
pub const IO_TIMEOUT: Duration = Duration::from_secs(5);
/// Bound on a setup command (`ip`, `sysctl`, ...).
const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);
/// A server thread gives up after this long even if nobody stops it.
const SERVER_LIFETIME: Duration = Duration::from_secs(120);
/// A keep-alive server holds at most this many connections at once and closes further ones.
const MAX_KEPT_CONNECTIONS: usize = 64;
/// How often a kept connection's thread looks whether its server was stopped.
const STOP_POLL: Duration = Duration::from_millis(50);
/// The longest request head or response head the test's HTTP code reads.
const MAX_HEAD: usize = 8192;

/// Runs `cmd` with its stdout and stderr captured; kills it and panics if it has not finished
/// within `limit`.
pub fn output_within(cmd: &mut Command, limit: Duration) -> Output {
    let shown = format!("{cmd:?}");
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {shown}: {e}"));
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(limit) {
        Ok(out) => out.unwrap_or_else(|e| panic!("waiting for {shown}: {e}")),
        Err(_) => {
            // Not reaped yet (the waiting thread still holds it), so the pid is still ours.
            // SAFETY: kill(2) on a child process of ours.
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
            let _ = rx.recv_timeout(IO_TIMEOUT);
            panic!("{shown} did not finish within {limit:?}");
        }
    }
}

/// Runs `command` (words separated by spaces; no word contains one) and returns its stdout;
/// panics with the command and its stderr on failure.
pub fn run(command: &str) -> String {
    let mut words = command.split_whitespace();
    let program = words.next().expect("a command");
    let out = output_within(Command::new(program).args(words), COMMAND_TIMEOUT);
    assert!(
        out.status.success(),
        "`{command}` failed: {}",
        String::from_utf8_lossy(&out.stderr).trim()
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Fails the test (never skips it) when a tool it needs is missing: each entry is the tool,
/// a flag that makes it print its version, and the Debian package it comes with.
pub fn require_tools(tools: &[(&str, &str, &str)]) {
    for &(tool, version_flag, package) in tools {
        let found = Command::new(tool)
            .arg(version_flag)
            .output()
            .is_ok_and(|o| o.status.success());
        assert!(
            found,
            "this test needs `{tool}` (Debian package {package}); `cargo xtask test` installs it"
        );
    }
}

/// Moves the calling thread into network namespace `ns` (the project's helper; a failure
/// fails the test).
pub fn enter_netns(ns: &str) {
    dl7_testbed::enter_netns(ns).unwrap_or_else(|e| panic!("{e:#}"));
}

/// Runs `f` on a thread inside namespace `ns` and returns its result (the project's helper;
/// a failure to enter fails the test, a panic in `f` is raised again).
pub fn in_netns<T: Send>(ns: &str, f: impl FnOnce() -> T + Send) -> T {
    dl7_testbed::in_netns(ns, f).unwrap_or_else(|e| panic!("{e:#}"))
}

/// Sets sysctls inside namespace `ns`.
pub fn sysctl(ns: &str, settings: &[&str]) {
    run(&format!(
        "ip netns exec {ns} sysctl -qw {}",
        settings.join(" ")
    ));
}

/// The namespaces of one testbed; dropping it deletes them.
pub struct Netns {
    prefix: String,
    /// Namespaces created so far, in creation order.
    namespaces: Vec<String>,
}

impl Netns {
    pub fn new() -> Self {
        static RUN: AtomicU32 = AtomicU32::new(0);
        super::require_root("these tests create network namespaces");
        Netns {
            prefix: format!(
                "dl7t-{}-{}",
                std::process::id(),
                RUN.fetch_add(1, Ordering::Relaxed)
            ),
            namespaces: Vec::new(),
        }
    }

    /// `dl7t-PID-N`: unique to this testbed, and removed by `cargo xtask test` if left over.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The full name of this testbed's namespace for `role`.
    pub fn ns(&self, role: &str) -> String {
        format!("{}-{role}", self.prefix)
    }

    /// A namespace with lo up and IPv6 off (so that the front's counters see nothing but the
    /// test's traffic and ARP).
    pub fn add_ns(&mut self, role: &str) -> String {
        let ns = self.ns(role);
        run(&format!("ip netns add {ns}"));
        self.namespaces.push(ns.clone());
        run(&format!("ip -n {ns} link set lo up"));
        sysctl(
            &ns,
            &[
                "net.ipv6.conf.all.disable_ipv6=1",
                "net.ipv6.conf.default.disable_ipv6=1",
            ],
        );
        ns
    }

    /// The namespace `br` with the bridge `br0` that [`Netns::add_host`] plugs hosts into.
    pub fn add_bridge(&mut self) -> String {
        let br = self.add_ns("br");
        run(&format!("ip -n {br} link add br0 type bridge"));
        run(&format!("ip -n {br} link set br0 up"));
        br
    }

    /// A host namespace `role` with `IFACE` (address `ip`/24) plugged into the bridge as
    /// port `v<role>`. Returns the namespace and the MAC of its `IFACE`.
    pub fn add_host(&mut self, role: &str, ip: Ipv4Addr) -> (String, Mac) {
        let br = self.ns("br");
        let ns = self.add_ns(role);
        let port = format!("v{role}");
        run(&format!(
            "ip -n {br} link add {port} type veth peer name {IFACE} netns {ns}"
        ));
        run(&format!("ip -n {br} link set {port} master br0 up"));
        run(&format!("ip -n {ns} link set {IFACE} up"));
        run(&format!("ip -n {ns} addr add {ip}/24 dev {IFACE}"));
        let mac = run(&format!(
            "ip netns exec {ns} cat /sys/class/net/{IFACE}/address"
        ));
        let mac = mac.trim().parse().expect("a MAC in sysfs");
        (ns, mac)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        for ns in self.namespaces.drain(..).rev() {
            let result = Command::new("ip").args(["netns", "del", &ns]).output();
            if !result.is_ok_and(|o| o.status.success()) {
                eprintln!("could not delete network namespace {ns}");
            }
        }
    }
}

/// An HTTP responder on a thread inside a namespace that answers every request with 200 and
/// its name; dropping it (or [`HttpServer::stop`]) closes its listening socket.
pub struct HttpServer {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<io::Result<u32>>>,
}

/// What a server does with a connection after its answer.
#[derive(Clone, Copy)]
enum AfterAnswer {
    /// Closes it (`Connection: close`).
    Close,
    /// Keeps it open for the next request (HTTP/1.1 keep-alive).
    KeepOpen,
}

impl HttpServer {
    /// Starts listening on `addr` inside `ns`; returns once it listens. Each connection gets
    /// one answer and is closed.
    pub fn start(ns: &str, addr: SocketAddrV4, name: &'static str) -> Self {
        Self::spawn(ns, addr, name, AfterAnswer::Close)
    }

    /// Like [`HttpServer::start`], but each connection is served on a thread of its own and
    /// stays open for further requests until the client closes it or the server stops (at
    /// most `MAX_KEPT_CONNECTIONS` at once): for tests of long-lived, idle connections.
    pub fn start_keep_alive(ns: &str, addr: SocketAddrV4, name: &'static str) -> Self {
        Self::spawn(ns, addr, name, AfterAnswer::KeepOpen)
    }

    fn spawn(ns: &str, addr: SocketAddrV4, name: &'static str, after: AfterAnswer) -> Self {
        let (ready_tx, ready_rx) = mpsc::channel();
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = Arc::clone(&stop);
        let ns_name = ns.to_owned();
        let thread = thread::spawn(move || {
            enter_netns(&ns_name);
            let listener = match TcpListener::bind(addr) {
                Ok(l) => {
                    let _ = ready_tx.send(Ok(()));
                    l
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(e.to_string()));
                    return Err(e);
                }
            };
            serve(&listener, name, &stop2, after)
        });
        let server = HttpServer {
            stop,
            thread: Some(thread),
        };
        match ready_rx.recv_timeout(IO_TIMEOUT) {
            Ok(Ok(())) => server,
            Ok(Err(e)) => panic!("server {name} cannot listen on {addr}: {e}"),
            Err(e) => panic!("server {name} did not start: {e}"),
        }
    }

    /// Stops the server (its listening socket and every kept connection are closed when this
    /// returns) and returns the number of requests it answered.
    pub fn stop(mut self) -> io::Result<u32> {
        self.stop.store(true, Ordering::Relaxed);
        let thread = self.thread.take().expect("joined only here and on drop");
        thread
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Accepts connections until `stop` (or `SERVER_LIFETIME`), answering each request with
/// `name`. Returns the number of requests answered.
fn serve(
    listener: &TcpListener,
    name: &str,
    stop: &AtomicBool,
    after: AfterAnswer,
) -> io::Result<u32> {
    listener.set_nonblocking(true)?;
    let deadline = Instant::now() + SERVER_LIFETIME;
    let mut served = 0;
    let kept_served = AtomicU32::new(0);
    // Kept connections' threads borrow `stop` and the count; the scope joins them all.
    let accepted = thread::scope(|scope| {
        let mut kept: Vec<thread::ScopedJoinHandle<'_, ()>> = Vec::new();
        while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
            match listener.accept() {
                Ok((stream, _)) => match after {
                    AfterAnswer::Close => {
                        if answer(stream, name).is_ok() {
                            served += 1;
                        }
                    }
                    AfterAnswer::KeepOpen => {
                        kept.retain(|t| !t.is_finished());
                        if kept.len() < MAX_KEPT_CONNECTIONS {
                            let kept_served = &kept_served;
                            kept.push(scope.spawn(move || {
                                let _ = keep_answering(stream, name, stop, deadline, kept_served);
                            }));
                        }
                    }
                },
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    thread::sleep(Duration::from_millis(5));
                }
                Err(e) => {
                    stop.store(true, Ordering::Relaxed);
                    return Err(e);
                }
            }
        }
        stop.store(true, Ordering::Relaxed);
        Ok(())
    });
    accepted.map(|()| served + kept_served.load(Ordering::Relaxed))
}

fn answer(mut stream: TcpStream, name: &str) -> io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    let mut request = Vec::new();
    let mut buf = [0u8; 1024];
    while !request.windows(4).any(|w| w == b"\r\n\r\n") && request.len() < MAX_HEAD {
        let n = stream.read(&mut buf)?;
        if n == 0 {
            break;
        }
        request.extend_from_slice(&buf[..n]);
    }
    write!(
        stream,
        "HTTP/1.0 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{name}",
        name.len()
    )?;
    stream.flush()
}

/// Answers every request (a head without a body) on `stream` with `name`, until the client
/// closes it, `stop`, or `deadline`; counts the answers in `served`.
fn keep_answering(
    mut stream: TcpStream,
    name: &str,
    stop: &AtomicBool,
    deadline: Instant,
    served: &AtomicU32,
) -> io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(STOP_POLL))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    let mut pending = Vec::new();
    let mut buf = [0u8; 1024];
    while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
        if let Some(end) = head_end(&pending) {
            pending.drain(..end);
            write!(
                stream,
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{name}",
                name.len()
            )?;
            stream.flush()?;
            served.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        if pending.len() >= MAX_HEAD {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "request head too long",
            ));
        }
        match stream.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => pending.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// The length of the HTTP head at the start of `bytes` (up to and including its empty line),
/// once it is complete.
fn head_end(bytes: &[u8]) -> Option<usize> {
    bytes
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| i + 4)
}

/// A TCP connection from the fixed source address `src` (so that a test knows the flow's
/// 5-tuple in advance), with a connect bounded by `IO_TIMEOUT`, and reads and writes bounded
/// by it too. Connects from the calling thread's namespace.
pub fn connect_from(src: SocketAddrV4, dst: SocketAddrV4) -> io::Result<TcpStream> {
    let sockaddr = |a: SocketAddrV4| libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: a.port().to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from_ne_bytes(a.ip().octets()),
        },
        sin_zero: [0; 8],
    };
    let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    // SAFETY: plain socket syscalls on a fd this function owns (through `stream`, which
    // closes it on every return path), with correctly sized arguments.
    let stream = unsafe {
        let fd = libc::socket(
            libc::AF_INET,
            libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        );
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        let stream = TcpStream::from_raw_fd(fd);
        let one: libc::c_int = 1;
        if libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_REUSEADDR,
            (&one as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        ) != 0
        {
            return Err(io::Error::last_os_error());
        }
        let local = sockaddr(src);
        if libc::bind(fd, (&local as *const libc::sockaddr_in).cast(), len) != 0 {
            return Err(io::Error::last_os_error());
        }
        let remote = sockaddr(dst);
        if libc::connect(fd, (&remote as *const libc::sockaddr_in).cast(), len) != 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::EINPROGRESS) {
                return Err(e);
            }
        }
        let mut pollfd = libc::pollfd {
            fd,
            events: libc::POLLOUT,
            revents: 0,
        };
        match libc::poll(&mut pollfd, 1, IO_TIMEOUT.as_millis() as libc::c_int) {
            0 => return Err(io::Error::new(io::ErrorKind::TimedOut, "connect timed out")),
            n if n < 0 => return Err(io::Error::last_os_error()),
            _ => {}
        }
        stream
    };
    if let Some(e) = stream.take_error()? {
        return Err(e);
    }
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    Ok(stream)
}

/// One HTTP/1.1 `GET /` on an open connection, which stays open for the next one (for a
/// server started with [`HttpServer::start_keep_alive`]); returns the body of a 200 answer.
pub fn get_keep_alive(stream: &mut TcpStream, host: &str) -> io::Result<String> {
    stream.write_all(format!("GET / HTTP/1.1\r\nHost: {host}\r\n\r\n").as_bytes())?;
    let mut response = Vec::new();
    let mut buf = [0u8; 1024];
    let invalid = |what: String| io::Error::new(io::ErrorKind::InvalidData, what);
    let head_len = loop {
        if let Some(end) = head_end(&response) {
            break end;
        }
        if response.len() >= MAX_HEAD {
            return Err(invalid("response head too long".to_owned()));
        }
        let n = stream.read(&mut buf)?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "connection closed before a response",
            ));
        }
        response.extend_from_slice(&buf[..n]);
    };
    let head = String::from_utf8_lossy(&response[..head_len]).into_owned();
    if !head.starts_with("HTTP/1.1 200 ") {
        return Err(invalid(format!("not an HTTP 200 response: {head:?}")));
    }
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("Content-Length: "))
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| invalid(format!("no Content-Length: {head:?}")))?;
    if length > MAX_HEAD {
        return Err(invalid(format!("body of {length} bytes")));
    }
    let mut body = response.split_off(head_len);
    while body.len() < length {
        let n = stream.read(&mut buf)?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "connection closed within the body",
            ));
        }
        body.extend_from_slice(&buf[..n]);
    }
    if body.len() != length {
        return Err(invalid(format!(
            "{} body bytes, announced {length}",
            body.len()
        )));
    }
    Ok(String::from_utf8_lossy(&body).into_owned())
}
