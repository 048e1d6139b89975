//! Network-namespace testbeds (root, `ip`, `sysctl`): namespaces named `dl7t-PID-N-ROLE`, so
//! that `cargo xtask test` removes what a killed run left behind, host namespaces plugged into
//! a bridge that has a namespace of its own, HTTP servers inside them, and commands with a
//! bounded run time. [`Netns`] deletes its namespaces on drop and [`HttpServer`] stops its
//! thread on drop, also when an assertion fails half-way through a setup.

use std::{
    io::{self, Read, Write},
    net::{Ipv4Addr, SocketAddrV4, TcpListener, TcpStream},
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

impl HttpServer {
    /// Starts listening on `addr` inside `ns`; returns once it listens.
    pub fn start(ns: &str, addr: SocketAddrV4, name: &'static str) -> Self {
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
            serve(&listener, name, &stop2)
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

    /// Stops the server (its listening socket is closed when this returns) and returns the
    /// number of requests it answered.
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

/// Accepts connections until `stop` (or `SERVER_LIFETIME`), answering each with `name`.
/// Returns the number of requests answered.
fn serve(listener: &TcpListener, name: &str, stop: &AtomicBool) -> io::Result<u32> {
    listener.set_nonblocking(true)?;
    let deadline = Instant::now() + SERVER_LIFETIME;
    let mut served = 0;
    while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
        match listener.accept() {
            Ok((stream, _)) => {
                if answer(stream, name).is_ok() {
                    served += 1;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                thread::sleep(Duration::from_millis(5));
            }
            Err(e) => return Err(e),
        }
    }
    Ok(served)
}

fn answer(mut stream: TcpStream, name: &str) -> io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    let mut request = Vec::new();
    let mut buf = [0u8; 1024];
    while !request.windows(4).any(|w| w == b"\r\n\r\n") && request.len() < 8192 {
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
