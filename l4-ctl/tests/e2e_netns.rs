//! End to end through network namespaces with the balancer attached in native (driver) mode:
//! real TCP connections from a client to a VIP are answered by the servers directly (L2 direct
//! server return), and the front only ever sees the client -> VIP direction. Needs root, `ip`,
//! `sysctl` and `ethtool`.
//!
//! ```text
//!   client ──┐
//!   front  ──┼── br0 (own namespace)        client -> front (ARP for the VIP) -> XDP_TX -> srvN
//!   srv1   ──┤                              srvN -> client (from the VIP, not via the front)
//!   srv2   ──┘
//! ```
//!
//! Every namespace, veth, thread and pin the test creates is removed by [`Testbed`]'s `Drop`,
//! also when an assertion fails half-way through the setup.

mod support;

use std::{
    fs::File,
    io::{self, Read, Write},
    net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream},
    os::fd::{AsRawFd, FromRawFd},
    process::Command,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU32, Ordering},
        mpsc,
    },
    thread::{self, JoinHandle},
    time::{Duration, Instant},
};

use aya::{
    Ebpf,
    programs::{Xdp, XdpMode},
};
use common::GlobalCounter as C;
use l4_ctl::{AttachMode, Mac, RealSpec, Vip, objects};
use support::TestBalancer;

/// The test subnet. It exists only inside the test's namespaces (each run has its own), so
/// parallel runs cannot collide.
const CLIENT_IP: Ipv4Addr = Ipv4Addr::new(10, 213, 0, 1);
const FRONT_IP: Ipv4Addr = Ipv4Addr::new(10, 213, 0, 2);
const VIP_IP: Ipv4Addr = Ipv4Addr::new(10, 213, 0, 100);
const SERVERS: [(&str, Ipv4Addr); 2] = [
    ("srv1", Ipv4Addr::new(10, 213, 0, 11)),
    ("srv2", Ipv4Addr::new(10, 213, 0, 12)),
];
const PORT: u16 = 80;
/// The interface every host namespace has towards the bridge.
const IFACE: &str = "eth0";
/// Client connections, from source ports `FIRST_PORT..FIRST_PORT + CONNECTIONS`.
const CONNECTIONS: u16 = 20;
const FIRST_PORT: u16 = 42_000;
/// Bound on each connect and each read.
const IO_TIMEOUT: Duration = Duration::from_secs(5);
/// A server thread gives up after this long even if nobody stops it.
const SERVER_LIFETIME: Duration = Duration::from_secs(120);

/// Runs `command` (words separated by spaces; no word contains one) and returns its stdout;
/// panics with the command and its stderr on failure.
fn run(command: &str) -> String {
    let mut words = command.split_whitespace();
    let program = words.next().expect("a command");
    let out = Command::new(program)
        .args(words)
        .output()
        .unwrap_or_else(|e| panic!("cannot run `{program}` ({e}): this test needs it installed"));
    assert!(
        out.status.success(),
        "`{command}` failed: {}",
        String::from_utf8_lossy(&out.stderr).trim()
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Fails the test (never skips it) when a tool it needs is missing.
fn require_tools() {
    for (tool, version_flag, package) in [
        ("ip", "-V", "iproute2"),
        ("sysctl", "--version", "procps"),
        ("ethtool", "--version", "ethtool"),
    ] {
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

/// Moves the calling thread into network namespace `ns` (only this thread: sockets it opens
/// and interface names it resolves are then those of `ns`).
fn enter_netns(ns: &str) {
    let path = format!("/run/netns/{ns}");
    let file = File::open(&path).unwrap_or_else(|e| panic!("open {path}: {e}"));
    // SAFETY: a valid namespace fd; setns changes only this thread's network namespace.
    let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(rc, 0, "setns({path}): {}", io::Error::last_os_error());
}

/// Runs `f` on a thread inside namespace `ns` and returns its result (re-raising its panic).
fn in_netns<T: Send>(ns: &str, f: impl FnOnce() -> T + Send) -> T {
    thread::scope(|s| {
        s.spawn(|| {
            enter_netns(ns);
            f()
        })
        .join()
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

/// The namespaces, programs and server threads of one run; dropping it removes them all.
struct Testbed {
    prefix: String,
    /// Namespaces created so far, in creation order.
    namespaces: Vec<String>,
    stop: Arc<AtomicBool>,
    servers: Vec<JoinHandle<io::Result<u32>>>,
    front: Option<TestBalancer>,
    peer_pass: Option<Ebpf>,
}

impl Testbed {
    fn new() -> Self {
        static RUN: AtomicU32 = AtomicU32::new(0);
        Testbed {
            prefix: format!(
                "dl7t-{}-{}",
                std::process::id(),
                RUN.fetch_add(1, Ordering::Relaxed)
            ),
            namespaces: Vec::new(),
            stop: Arc::new(AtomicBool::new(false)),
            servers: Vec::new(),
            front: None,
            peer_pass: None,
        }
    }

    /// The full name of this run's namespace for `role`.
    fn ns(&self, role: &str) -> String {
        format!("{}-{role}", self.prefix)
    }

    fn add_ns(&mut self, role: &str) -> String {
        let ns = self.ns(role);
        run(&format!("ip netns add {ns}"));
        self.namespaces.push(ns.clone());
        run(&format!("ip -n {ns} link set lo up"));
        // No IPv6: the front's counters then see nothing but the test's traffic and ARP.
        sysctl(
            &ns,
            &[
                "net.ipv6.conf.all.disable_ipv6=1",
                "net.ipv6.conf.default.disable_ipv6=1",
            ],
        );
        ns
    }

    /// A host namespace `role` with `IFACE` (address `ip`/24) plugged into the bridge as
    /// port `v<role>`. Returns the namespace and the MAC of its `IFACE`.
    fn add_host(&mut self, role: &str, ip: Ipv4Addr) -> (String, Mac) {
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

    /// Starts an HTTP responder on VIP:PORT in `ns` that answers every request with `name`;
    /// returns once it listens.
    fn start_server(&mut self, ns: &str, name: &'static str) {
        let (ready_tx, ready_rx) = mpsc::channel();
        let stop = Arc::clone(&self.stop);
        let ns_name = ns.to_owned();
        self.servers.push(thread::spawn(move || {
            enter_netns(&ns_name);
            let listener = TcpListener::bind((VIP_IP, PORT));
            let listener = match listener {
                Ok(l) => {
                    let _ = ready_tx.send(Ok(()));
                    l
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(e.to_string()));
                    return Err(e);
                }
            };
            serve(&listener, name, &stop)
        }));
        match ready_rx.recv_timeout(IO_TIMEOUT) {
            Ok(Ok(())) => {}
            Ok(Err(e)) => panic!("server {name} cannot listen on {VIP_IP}:{PORT}: {e}"),
            Err(e) => panic!("server {name} did not start: {e}"),
        }
    }
}

impl Drop for Testbed {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for server in self.servers.drain(..) {
            let _ = server.join();
        }
        // Detach the programs (closing their links) before their interfaces go away.
        self.front.take();
        self.peer_pass.take();
        for ns in self.namespaces.drain(..).rev() {
            let result = Command::new("ip").args(["netns", "del", &ns]).output();
            if !result.is_ok_and(|o| o.status.success()) {
                eprintln!("could not delete network namespace {ns}");
            }
        }
    }
}

fn sysctl(ns: &str, settings: &[&str]) {
    run(&format!(
        "ip netns exec {ns} sysctl -qw {}",
        settings.join(" ")
    ));
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

/// A TCP connection from the fixed source address `src` (so that the test knows the flow's
/// 5-tuple in advance), with a bounded connect.
fn connect_from(src: SocketAddrV4, dst: SocketAddrV4) -> io::Result<TcpStream> {
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
    unsafe {
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
        if let Some(e) = stream.take_error()? {
            return Err(e);
        }
        stream.set_nonblocking(false)?;
        Ok(stream)
    }
}

/// One HTTP request from `src` to the VIP; returns the response body.
fn request(src: SocketAddrV4) -> io::Result<String> {
    let mut stream = connect_from(src, SocketAddrV4::new(VIP_IP, PORT))?;
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    stream.write_all(format!("GET / HTTP/1.0\r\nHost: {VIP_IP}\r\n\r\n").as_bytes())?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response)?;
    let response = String::from_utf8_lossy(&response).into_owned();
    match response.split_once("\r\n\r\n") {
        Some((head, body)) if head.starts_with("HTTP/1.0 200") => Ok(body.to_owned()),
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("not an HTTP 200 response: {response:?}"),
        )),
    }
}

#[test]
fn tcp_to_the_vip_is_answered_by_the_servers_directly() {
    require_tools();
    let mut bed = Testbed::new();
    let br = bed.add_ns("br");
    run(&format!("ip -n {br} link add br0 type bridge"));
    run(&format!("ip -n {br} link set br0 up"));

    let (front, front_mac) = bed.add_host("front", FRONT_IP);
    // The front answers ARP for the VIP: clients send VIP traffic to the front's MAC.
    run(&format!("ip -n {front} addr add {VIP_IP}/32 dev {IFACE}"));

    let (client, _) = bed.add_host("client", CLIENT_IP);
    // The front's XDP_TX does not finish checksums left to offload (see TOOLCHAIN.md).
    run(&format!("ip netns exec {client} ethtool -K {IFACE} tx off"));

    let mut reals = Vec::new();
    for (name, ip) in SERVERS {
        let (ns, mac) = bed.add_host(name, ip);
        // Hold the VIP on lo without answering ARP for it (only the front may).
        sysctl(
            &ns,
            &[
                "net.ipv4.conf.all.arp_ignore=1",
                "net.ipv4.conf.all.arp_announce=2",
                &format!("net.ipv4.conf.{IFACE}.arp_ignore=1"),
                &format!("net.ipv4.conf.{IFACE}.arp_announce=2"),
                "net.ipv4.conf.all.rp_filter=0",
                &format!("net.ipv4.conf.{IFACE}.rp_filter=0"),
            ],
        );
        run(&format!("ip -n {ns} addr add {VIP_IP}/32 dev lo"));
        bed.start_server(&ns, name);
        reals.push((name, ip, mac));
    }

    // Native XDP_TX into a veth needs an XDP program on its peer: the front's bridge port.
    let mut pass = Ebpf::load(objects::PASS).expect("load dl7_pass");
    let program: &mut Xdp = pass
        .program_mut(objects::PASS_PROGRAM)
        .expect("dl7_pass in its object")
        .try_into()
        .expect("an XDP program");
    program.load().expect("load dl7_pass into the kernel");
    in_netns(&br, || program.attach("vfront", XdpMode::Driver))
        .expect("attach dl7_pass natively to the front's bridge port");
    bed.peer_pass = Some(pass);

    // The front: VIP and reals through the Balancer API, attached natively to its veth.
    let vip: Vip = format!("{VIP_IP}:{PORT}/tcp").parse().unwrap();
    let mut tb = TestBalancer::new();
    tb.bal.add_vip(&vip).expect("add the VIP");
    for &(_, ip, mac) in &reals {
        tb.bal
            .add_real(
                &vip,
                &RealSpec {
                    addr: ip.into(),
                    mac,
                    src_mac: front_mac,
                    egress_ifindex: None,
                    weight: 1,
                },
            )
            .expect("add a real");
    }
    let bal = &mut tb.bal;
    in_netns(&front, move || bal.attach(IFACE, AttachMode::Native))
        .expect("attach the balancer natively to the front's veth");
    let tb = bed.front.insert(tb);
    let link = run(&format!("ip -n {front} -d link show {IFACE}"));
    assert!(
        link.contains(" xdp ") && link.contains("prog/xdp id"),
        "the front's {IFACE} should run XDP in driver mode: {link}"
    );

    // Which server each connection should reach, as `l4-ctl lookup` predicts it.
    let expected: Vec<(SocketAddrV4, &str)> = (FIRST_PORT..FIRST_PORT + CONNECTIONS)
        .map(|port| {
            let src = SocketAddrV4::new(CLIENT_IP, port);
            let real = tb
                .bal
                .lookup(&vip, SocketAddr::V4(src))
                .expect("lookup")
                .expect("the VIP has reals");
            let name = reals
                .iter()
                .find(|(_, ip, _)| real.addr() == *ip)
                .map(|(name, _, _)| *name)
                .expect("lookup names one of the servers");
            (src, name)
        })
        .collect();
    for (name, _) in SERVERS {
        assert!(
            expected.iter().any(|(_, n)| *n == name),
            "the chosen source ports never hash to {name}: pick other ports"
        );
    }

    // Stops at the first failed request, so that a broken path fails in seconds.
    let answers: Result<Vec<String>, String> = in_netns(&client, || {
        expected
            .iter()
            .map(|(src, _)| {
                request(*src).map_err(|e| format!("request from {src} to {VIP_IP}:{PORT}: {e}"))
            })
            .collect()
    });
    let answers = answers.unwrap_or_else(|e| panic!("{e}"));
    for ((src, name), body) in expected.iter().zip(&answers) {
        assert_eq!(
            body, name,
            "the connection from {src} was answered by the wrong server"
        );
    }

    // The front saw the client -> VIP direction only, and forwarded all of it.
    let meta = tb.bal.vip(&vip).unwrap();
    let deadline = Instant::now() + Duration::from_secs(2);
    let (vip_packets, counters) = loop {
        let vip_packets = tb.bal.vip_traffic(meta.vip_id).unwrap().packets;
        let counters = tb.bal.global_counters().unwrap();
        if vip_packets == counters[C::Tx as usize] || Instant::now() > deadline {
            break (vip_packets, counters);
        }
        thread::sleep(Duration::from_millis(10));
    };
    println!("front: {vip_packets} VIP packets; counters {counters:?}");
    assert!(
        vip_packets >= 3 * u64::from(CONNECTIONS),
        "the front saw only {vip_packets} VIP packets for {CONNECTIONS} connections"
    );
    assert_eq!(
        counters[C::Tx as usize],
        vip_packets,
        "every VIP packet is sent on with XDP_TX"
    );
    assert_eq!(
        counters[C::PassNotVip as usize],
        0,
        "a packet not aimed at the VIP (a server's reply?) reached the front"
    );
    for c in [
        C::DropTruncated,
        C::DropMalformed,
        C::DropFragment,
        C::DropNoReal,
        C::DropRedirectFailed,
        C::Redirect,
        C::ConnInsertFailed,
    ] {
        assert_eq!(counters[c as usize], 0, "{c:?}");
    }
    // (A retransmitted SYN is placed again, so there may be more new flows than connections.)
    assert!(
        counters[C::NewFlows as usize] >= u64::from(CONNECTIONS),
        "one new flow per connection at least"
    );
    assert_eq!(
        counters[C::ConnMisses as usize],
        0,
        "every packet after a SYN found its flow in the connection table"
    );
    for real in tb.bal.reals(&vip).unwrap() {
        assert!(
            tb.bal.real_traffic(real.id).unwrap().packets > 0,
            "real {} got no packets",
            real.addr()
        );
    }

    // Each server answered exactly the connections the front sent it.
    bed.stop.store(true, Ordering::Relaxed);
    for (server, (name, _)) in bed.servers.drain(..).zip(SERVERS) {
        let served = server
            .join()
            .expect("server thread")
            .unwrap_or_else(|e| panic!("server {name}: {e}"));
        let expected_count = expected.iter().filter(|(_, n)| *n == name).count();
        assert_eq!(
            served as usize, expected_count,
            "requests answered by {name}"
        );
    }
}
