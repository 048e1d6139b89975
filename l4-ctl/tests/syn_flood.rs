//! A SYN flood against the front while established connections sit idle: with the new-flow
//! guard on, none of them breaks; without it, the flood pushes them out of the connection
//! table, and those the next Maglev table places elsewhere break. Needs root, `ip`, `sysctl`
//! and `ethtool`.
//!
//! ```text
//!   client ──┐                 K keep-alive connections to the VIP, then idle
//!   flood  ──┤                 SYNs from random sources, raw frames on an AF_PACKET socket
//!   front  ──┼── br0           XDP (native), connection table, new-flow guard
//!   srv1   ──┤
//!   srv2   ──┤
//!   srv3   ──┘                 added after the flood: the VIP's Maglev table changes
//! ```
//!
//! One run: the client opens K connections and makes one request on each (so the test knows
//! each connection's server), the flood host sends more new flows than one CPU's share of the
//! connection table, srv3 joins the VIP, and each connection makes one more request. A
//! connection whose entry is still in the table reaches its server; one whose entry was
//! evicted is placed by the new Maglev table, and if that names another server, the request
//! arrives there and is reset.
//!
//! The test runs twice, with a low guard limit and with the guard off (the control, which
//! shows that the flood is big enough to evict established flows, so that the first run tests
//! something).
//!
//! Why the flood looks the way it does:
//! - The connection table keeps one LRU list per CPU, each with its CPU's share of the
//!   entries, and a flow's entry sits on the list of the CPU that recorded it. The client and
//!   the flood are pinned to one CPU: a veth hands a frame to the receiving side on the
//!   sending CPU, so the program records both on that CPU's list.
//! - The kernel's LRU evicts unreferenced entries first: an entry that a lookup hit since it
//!   was written moves to an "active" list, which is only aged while it is longer than the
//!   inactive one. A flood of one SYN per flow (entries never looked up again) keeps the
//!   inactive list the longer one, so it evicts only the established entries that happen to
//!   be on the inactive list when it starts (half of them, in this test). So each flood
//!   source sends its SYN twice, as a client's stack retransmits an unanswered SYN: the
//!   flood's entries are then referenced too, the active list is aged as well, and every idle
//!   entry goes.
//! - The sources are in 198.18.0.0/16 (RFC 2544's benchmarking range), to which no host of
//!   the testbed has a route: the servers' SYN-ACKs go nowhere and nobody else sees the flood.

mod support;

use std::{
    ffi::CString,
    fmt, io, mem,
    net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream},
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    thread,
    time::{Duration, Instant},
};

use common::{CONN_TABLE_SIZE, FrontSettings, GlobalCounter as C};
use l4_ctl::{Mac, balancer::flow_key};
use support::{
    dsr::DsrTestbed,
    frames::{self, ETH_P_IPV4, TCP_SYN},
    netns::{HttpServer, IFACE, connect_from, get_keep_alive, in_netns},
};

/// The test subnet. It exists only inside the test's namespaces (each run has its own).
const CLIENT_IP: Ipv4Addr = Ipv4Addr::new(10, 213, 0, 1);
const FRONT_IP: Ipv4Addr = Ipv4Addr::new(10, 213, 0, 2);
const FLOOD_IP: Ipv4Addr = Ipv4Addr::new(10, 213, 0, 3);
const VIP: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(10, 213, 0, 100), 80);
const SERVERS: [(&str, Ipv4Addr); 2] = [
    ("srv1", Ipv4Addr::new(10, 213, 0, 11)),
    ("srv2", Ipv4Addr::new(10, 213, 0, 12)),
];
/// The server that joins the VIP after the flood.
const NEW_SERVER: (&str, Ipv4Addr) = ("srv3", Ipv4Addr::new(10, 213, 0, 13));

/// Established connections, from source ports `FIRST_PORT..FIRST_PORT + CONNECTIONS`.
const CONNECTIONS: u16 = 20;
const FIRST_PORT: u16 = 42_000;

/// New flows the flood sends: more than the whole table, so more than any one CPU's share.
const FLOOD_FLOWS: u32 = 300_000;
/// Frames per flood flow: its SYN and one retransmission of it.
const SYNS_PER_FLOW: u32 = 2;
/// Flows per `sendmmsg` batch (each batch sends all its SYNs, then all their retransmissions).
const BATCH_FLOWS: usize = 256;
/// Bounds on the flood, whatever the machine's speed.
const FLOOD_FRAMES_MAX: u64 = 600_000;
const FLOOD_TIME_MAX: Duration = Duration::from_secs(20);
const _: () = assert!(FLOOD_FLOWS as u64 * SYNS_PER_FLOW as u64 <= FLOOD_FRAMES_MAX);
/// How long the front may take to finish the frames of the flood after the last was sent.
const SETTLE_TIME_MAX: Duration = Duration::from_secs(5);

/// The guard's limit in the guarded run: new flows recorded per second and CPU. Over the
/// longest flood it records far fewer flows than one CPU's share of the table.
const GUARD_LIMIT: u32 = 1_000;

/// What one run saw.
#[derive(Debug)]
struct Outcome {
    /// The new-flow guard's limit (0: off).
    limit: u32,
    /// One CPU's share of the connection table.
    share: u64,
    /// Flood frames sent, and how long that took.
    frames: u64,
    flood_time: Duration,
    /// Counters after the flood.
    new_flows: u64,
    unrecorded: u64,
    /// Established connections whose flow was no longer in the connection table after the
    /// flood.
    evicted: Vec<SocketAddrV4>,
    /// Established connections whose server the new Maglev table (with srv3) changes.
    moved: Vec<SocketAddrV4>,
    /// Established connections whose request after the flood did not reach their server,
    /// with what happened instead.
    broken: Vec<(SocketAddrV4, String)>,
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.limit {
            0 => write!(f, "guard off: ")?,
            limit => write!(f, "guard at {limit} new flows/s per CPU: ")?,
        }
        write!(
            f,
            "{} flood frames in {:.1?}, {} new flows ({} unrecorded; a CPU's share of the \
             table is {}); of {CONNECTIONS} established flows {} evicted, {} moved by {}, {} \
             broken {:?}",
            self.frames,
            self.flood_time,
            self.new_flows,
            self.unrecorded,
            self.share,
            self.evicted.len(),
            self.moved.len(),
            NEW_SERVER.0,
            self.broken.len(),
            self.broken,
        )
    }
}

#[test]
fn a_syn_flood_evicts_established_flows_only_without_the_new_flow_guard() {
    let guarded = flood_run(GUARD_LIMIT);
    println!("{guarded}");
    assert!(
        guarded.unrecorded > 0,
        "the guard recorded every flood flow: {guarded}"
    );
    assert!(
        !guarded.moved.is_empty(),
        "adding {} moves none of the established flows: pick other ports",
        NEW_SERVER.0
    );
    assert!(
        guarded.evicted.is_empty(),
        "the flood evicted established flows despite the guard: {:?}",
        guarded.evicted
    );
    assert!(
        guarded.broken.is_empty(),
        "established connections broke despite the guard: {:?}",
        guarded.broken
    );

    let control = flood_run(0);
    println!("{control}");
    assert_eq!(control.unrecorded, 0, "the guard is off");
    assert!(
        control.new_flows > control.share,
        "the flood recorded {} new flows, not more than one CPU's share of the table ({})",
        control.new_flows,
        control.share
    );
    assert!(
        !control.evicted.is_empty(),
        "without the guard the flood evicted no established flow: it is too small to show \
         what the guard protects against"
    );
    let lost: Vec<SocketAddrV4> = control
        .evicted
        .iter()
        .filter(|src| control.moved.contains(src))
        .copied()
        .collect();
    let broken: Vec<SocketAddrV4> = control.broken.iter().map(|(src, _)| *src).collect();
    assert_eq!(
        broken, lost,
        "without the guard exactly the evicted flows that the new table moves should break"
    );
    assert!(
        !broken.is_empty(),
        "without the guard no established connection broke: the first run proves nothing"
    );
}

/// One run on a testbed of its own, with the guard's limit set to `limit` (0: off).
fn flood_run(limit: u32) -> Outcome {
    let mut bed = DsrTestbed::new(FRONT_IP, VIP, HttpServer::start_keep_alive);
    let client = bed.add_client("client", CLIENT_IP);
    for (name, ip) in SERVERS {
        bed.add_server(name, ip);
    }
    let (flood_ns, flood_mac) = bed.net.add_host("flood", FLOOD_IP);
    let vip = bed.vip;
    let share = u64::from(CONN_TABLE_SIZE) / bed.front.bal.nr_cpus() as u64;
    assert!(
        u64::from(GUARD_LIMIT) * (FLOOD_TIME_MAX.as_secs() + 1) < share / 2,
        "GUARD_LIMIT lets the flood fill half of a CPU's share of the table ({share})"
    );
    bed.front
        .bal
        .set_settings(FrontSettings {
            new_flow_limit: limit,
            flags: 0,
        })
        .expect("set the new-flow guard's limit");
    let cpu = first_allowed_cpu();

    // The established connections, each with its first answer from the server the Maglev
    // table gives it.
    let expected: Vec<(SocketAddrV4, &str)> = (FIRST_PORT..FIRST_PORT + CONNECTIONS)
        .map(|port| {
            let src = SocketAddrV4::new(CLIENT_IP, port);
            (src, bed.server_for(src))
        })
        .collect();
    let host = VIP.ip().to_string();
    let mut connections: Vec<TcpStream> = in_netns(&client, || {
        pin_to_cpu(cpu).expect("pin the client to one CPU");
        expected
            .iter()
            .map(|&(src, name)| {
                let mut stream = connect_from(src, VIP)
                    .unwrap_or_else(|e| panic!("connect from {src} to {VIP}: {e}"));
                let body = get_keep_alive(&mut stream, &host)
                    .unwrap_or_else(|e| panic!("first request from {src}: {e}"));
                assert_eq!(body, name, "the first answer to {src}");
                stream
            })
            .collect()
    });
    let in_table = |src: SocketAddrV4| {
        bed.front
            .bal
            .conn(&flow_key(SocketAddr::V4(src), &vip))
            .expect("read the connection table")
            .is_some()
    };
    for &(src, _) in &expected {
        assert!(in_table(src), "the flow from {src} was not recorded");
    }

    let front_mac = bed.front_mac();
    let (frames, flood_time) = in_netns(&flood_ns, || {
        pin_to_cpu(cpu).expect("pin the flood to the client's CPU");
        flood(front_mac, flood_mac)
    })
    .expect("send the flood");
    let counters = settled_counters(&bed);
    let evicted: Vec<SocketAddrV4> = expected
        .iter()
        .map(|&(src, _)| src)
        .filter(|&src| !in_table(src))
        .collect();

    bed.add_server(NEW_SERVER.0, NEW_SERVER.1);
    let moved: Vec<SocketAddrV4> = expected
        .iter()
        .filter(|&&(src, name)| bed.server_for(src) != name)
        .map(|&(src, _)| src)
        .collect();
    let broken = expected
        .iter()
        .zip(&mut connections)
        .filter_map(
            |(&(src, name), stream)| match get_keep_alive(stream, &host) {
                Ok(body) if body == name => None,
                Ok(body) => Some((src, format!("answered by {body}, not {name}"))),
                Err(e) => Some((src, e.to_string())),
            },
        )
        .collect();
    Outcome {
        limit,
        share,
        frames,
        flood_time,
        new_flows: counters[C::NewFlows as usize],
        unrecorded: counters[C::NewFlowsUnrecorded as usize],
        evicted,
        moved,
        broken,
    }
}

/// The front's counters once they stop changing (the flood's last frames may still be on
/// their way when the sender returns).
fn settled_counters(bed: &DsrTestbed) -> [u64; C::COUNT as usize] {
    let read = || bed.front.bal.global_counters().expect("read the counters");
    let deadline = Instant::now() + SETTLE_TIME_MAX;
    let mut last = read();
    loop {
        thread::sleep(Duration::from_millis(100));
        let now = read();
        if now == last || Instant::now() > deadline {
            return now;
        }
        last = now;
    }
}

/// Sends the flood from the calling thread's namespace: `FLOOD_FLOWS` flows of
/// `SYNS_PER_FLOW` SYNs each to the VIP, from distinct random sources, as frames from
/// `src_mac` to `front_mac` on `IFACE`; stops early at `FLOOD_TIME_MAX`. Returns the frames
/// sent and the time it took.
fn flood(front_mac: Mac, src_mac: Mac) -> io::Result<(u64, Duration)> {
    let socket = PacketSocket::open(IFACE)?;
    let start = Instant::now();
    let deadline = start + FLOOD_TIME_MAX;
    let mut sources = flood_sources().take(FLOOD_FLOWS as usize);
    let mut sent = 0u64;
    while Instant::now() < deadline {
        let syns: Vec<Vec<u8>> = sources
            .by_ref()
            .take(BATCH_FLOWS)
            .map(|src| syn_frame(front_mac, src_mac, src))
            .collect();
        if syns.is_empty() {
            break;
        }
        let batch: Vec<&[u8]> = (0..SYNS_PER_FLOW)
            .flat_map(|_| syns.iter().map(Vec::as_slice))
            .collect();
        let n = socket.send(&batch, deadline)?;
        sent += n as u64;
        if n < batch.len() {
            break;
        }
    }
    Ok((sent, start.elapsed()))
}

/// Distinct sources in 198.18.0.0/16 with ports from 1024, in a random-looking order: the
/// index times an odd constant is a permutation of the 32-bit numbers, whose high half is
/// the address and low half the port.
fn flood_sources() -> impl Iterator<Item = SocketAddrV4> {
    (0u32..)
        .map(|i| i.wrapping_mul(0x9e37_79b1))
        .map(|v| {
            let [a, b, _, _] = v.to_be_bytes();
            SocketAddrV4::new(Ipv4Addr::new(198, 18, a, b), v as u16)
        })
        .filter(|src| src.port() >= 1024)
}

/// A SYN from `src` to the VIP with valid checksums, so that the servers' stacks take it.
fn syn_frame(front_mac: Mac, src_mac: Mac, src: SocketAddrV4) -> Vec<u8> {
    let mut segment = frames::tcp(src.port(), VIP.port(), TCP_SYN, &[]);
    frames::set_tcp_checksum_v4(*src.ip(), *VIP.ip(), &mut segment);
    let packet = frames::ipv4(*src.ip(), *VIP.ip(), 6, &[], 0, &segment);
    frames::ethernet(front_mac, src_mac, ETH_P_IPV4, &packet)
}

/// An AF_PACKET socket that sends whole Ethernet frames out of one interface (and, bound to
/// no protocol, receives nothing).
struct PacketSocket(OwnedFd);

impl PacketSocket {
    fn open(iface: &str) -> io::Result<Self> {
        let name = CString::new(iface).map_err(io::Error::other)?;
        // SAFETY: plain syscalls with correctly sized arguments; the fd is owned at once.
        unsafe {
            let ifindex = libc::if_nametoindex(name.as_ptr());
            if ifindex == 0 {
                return Err(io::Error::last_os_error());
            }
            let fd = libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0);
            if fd < 0 {
                return Err(io::Error::last_os_error());
            }
            let socket = PacketSocket(OwnedFd::from_raw_fd(fd));
            let mut addr: libc::sockaddr_ll = mem::zeroed();
            addr.sll_family = libc::AF_PACKET as u16;
            addr.sll_ifindex = ifindex as i32;
            if libc::bind(
                fd,
                (&addr as *const libc::sockaddr_ll).cast(),
                mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            ) != 0
            {
                return Err(io::Error::last_os_error());
            }
            // Straight to the driver: a veth has no queue to fill anyway.
            let one: libc::c_int = 1;
            if libc::setsockopt(
                fd,
                libc::SOL_PACKET,
                libc::PACKET_QDISC_BYPASS,
                (&one as *const libc::c_int).cast(),
                mem::size_of::<libc::c_int>() as libc::socklen_t,
            ) != 0
            {
                return Err(io::Error::last_os_error());
            }
            Ok(socket)
        }
    }

    /// Sends `frames` with `sendmmsg`, waiting a moment whenever the kernel is out of buffers,
    /// until `deadline`. Returns how many were sent.
    fn send(&self, frames: &[&[u8]], deadline: Instant) -> io::Result<usize> {
        let mut iovecs: Vec<libc::iovec> = frames
            .iter()
            .map(|f| libc::iovec {
                iov_base: f.as_ptr() as *mut libc::c_void,
                iov_len: f.len(),
            })
            .collect();
        let mut messages: Vec<libc::mmsghdr> = iovecs
            .iter_mut()
            .map(|iov| {
                // SAFETY: an all-zero msghdr is valid (no name, no control data).
                let mut m: libc::mmsghdr = unsafe { mem::zeroed() };
                m.msg_hdr.msg_iov = iov;
                m.msg_hdr.msg_iovlen = 1;
                m
            })
            .collect();
        let mut sent = 0;
        while sent < messages.len() && Instant::now() < deadline {
            let rest = &mut messages[sent..];
            // SAFETY: `rest` points at initialised headers whose iovecs point into `frames`,
            // all alive for the call; the kernel only reads them (and writes `msg_len`).
            let n = unsafe {
                libc::sendmmsg(
                    self.0.as_raw_fd(),
                    rest.as_mut_ptr(),
                    rest.len() as libc::c_uint,
                    0,
                )
            };
            if n < 0 {
                let e = io::Error::last_os_error();
                match e.raw_os_error() {
                    Some(libc::ENOBUFS | libc::EAGAIN | libc::EINTR) => {
                        thread::sleep(Duration::from_millis(1));
                    }
                    _ => return Err(e),
                }
            } else {
                sent += n as usize;
            }
        }
        Ok(sent)
    }
}

/// The first CPU the test may run on.
fn first_allowed_cpu() -> usize {
    // SAFETY: sched_getaffinity fills a cpu_set_t of the size given.
    let set = unsafe {
        let mut set: libc::cpu_set_t = mem::zeroed();
        let rc = libc::sched_getaffinity(0, mem::size_of::<libc::cpu_set_t>(), &mut set);
        assert_eq!(rc, 0, "sched_getaffinity: {}", io::Error::last_os_error());
        set
    };
    (0..libc::CPU_SETSIZE as usize)
        // SAFETY: the index is within the set's size.
        .find(|&cpu| unsafe { libc::CPU_ISSET(cpu, &set) })
        .expect("the test runs on some CPU")
}

/// Keeps the calling thread on `cpu`.
fn pin_to_cpu(cpu: usize) -> io::Result<()> {
    // SAFETY: sched_setaffinity on the calling thread with a cpu_set_t of the size given.
    unsafe {
        let mut set: libc::cpu_set_t = mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        if libc::sched_setaffinity(0, mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}
