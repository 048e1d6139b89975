//! The end-to-end tests' L2 direct-server-return testbed: the front holds the VIP on its veth
//! (so it answers ARP for it) and runs the balancer in native (driver) mode; each server holds
//! the VIP on lo without answering ARP for it and answers clients directly; clients and
//! servers are hosts on one bridge (see [`super::netns`]).
//!
//! ```text
//!   client ──┐
//!   front  ──┼── br0 (own namespace)        client -> front (ARP for the VIP) -> XDP_TX -> srvN
//!   srv1   ──┤                              srvN -> client (from the VIP, not via the front)
//!   srv2   ──┘
//! ```
//!
//! Native XDP on veth needs two things from a testbed (TOOLCHAIN.md): an XDP program on the
//! peer of the veth the front sends into (`dl7_pass` on the front's bridge port), and TX
//! checksum offload off on the clients' veths. [`DsrTestbed`] removes its servers, programs,
//! pins and namespaces on drop, in that order, also when a test fails half-way.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};

use aya::{
    Ebpf,
    programs::{Xdp, XdpMode},
};
use l4_ctl::{AttachMode, Mac, RealSpec, Vip};

use super::{
    TestBalancer,
    netns::{HttpServer, IFACE, Netns, in_netns, require_tools, run, sysctl},
    objects,
};

/// Starts a server: [`HttpServer::start`] or [`HttpServer::start_keep_alive`].
pub type StartServer = fn(&str, SocketAddrV4, &'static str) -> HttpServer;

/// One testbed. Fields drop in declaration order: the servers stop, the programs are detached
/// (closing their links) before their interfaces go away, and the namespaces go last.
pub struct DsrTestbed {
    /// The HTTP servers on the VIP, by name, in the order they were added.
    pub servers: Vec<(&'static str, HttpServer)>,
    /// The front's balancer, attached natively to the front's `IFACE`.
    pub front: TestBalancer,
    peer_pass: Ebpf,
    pub net: Netns,
    pub vip: Vip,
    front_mac: Mac,
    /// Every server's name and address, also of servers whose real was removed since.
    addrs: Vec<(&'static str, Ipv4Addr)>,
    start_server: StartServer,
}

impl DsrTestbed {
    /// The bridge and the front with `front_ip`, holding `vip` (TCP) without reals yet; its
    /// servers will be started with `start_server`. Needs root, `ip`, `sysctl` and `ethtool`.
    pub fn new(front_ip: Ipv4Addr, vip: SocketAddrV4, start_server: StartServer) -> Self {
        require_tools(&[
            ("ip", "-V", "iproute2"),
            ("sysctl", "--version", "procps"),
            ("ethtool", "--version", "ethtool"),
        ]);
        // Locals drop in reverse order, so a failed step still removes what came before it.
        let mut net = Netns::new();
        let br = net.add_bridge();
        let (front, front_mac) = net.add_host("front", front_ip);
        // The front answers ARP for the VIP: clients send VIP traffic to the front's MAC.
        run(&format!(
            "ip -n {front} addr add {}/32 dev {IFACE}",
            vip.ip()
        ));

        // Native XDP_TX into a veth needs an XDP program on its peer: the front's bridge port.
        let mut peer_pass = Ebpf::load(objects::PASS).expect("load dl7_pass");
        let program: &mut Xdp = peer_pass
            .program_mut(objects::PASS_PROGRAM)
            .expect("dl7_pass in its object")
            .try_into()
            .expect("an XDP program");
        program.load().expect("load dl7_pass into the kernel");
        in_netns(&br, || program.attach("vfront", XdpMode::Driver))
            .expect("attach dl7_pass natively to the front's bridge port");

        let vip: Vip = format!("{vip}/tcp").parse().expect("a VIP");
        let mut tb = TestBalancer::new();
        tb.bal.add_vip(&vip).expect("add the VIP");
        let bal = &mut tb.bal;
        in_netns(&front, move || bal.attach(IFACE, AttachMode::Native))
            .expect("attach the balancer natively to the front's veth");
        let link = run(&format!("ip -n {front} -d link show {IFACE}"));
        assert!(
            link.contains(" xdp ") && link.contains("prog/xdp id"),
            "the front's {IFACE} should run XDP in driver mode: {link}"
        );
        DsrTestbed {
            servers: Vec::new(),
            front: tb,
            peer_pass,
            net,
            vip,
            front_mac,
            addrs: Vec::new(),
            start_server,
        }
    }

    /// The namespace of the front.
    pub fn front_ns(&self) -> String {
        self.net.ns("front")
    }

    /// The MAC of the front's `IFACE`: where frames to the VIP go.
    pub fn front_mac(&self) -> Mac {
        self.front_mac
    }

    /// A client host `role` with address `ip`; returns its namespace.
    pub fn add_client(&mut self, role: &str, ip: Ipv4Addr) -> String {
        let (ns, _) = self.net.add_host(role, ip);
        // The front's XDP_TX does not finish checksums left to offload (see TOOLCHAIN.md).
        run(&format!("ip netns exec {ns} ethtool -K {IFACE} tx off"));
        ns
    }

    /// A server host `name` with address `ip`, holding the VIP on lo with an HTTP server on it
    /// that answers with `name`, added to the VIP as a real of weight 1 (which changes the
    /// VIP's Maglev table). Returns its namespace.
    pub fn add_server(&mut self, name: &'static str, ip: Ipv4Addr) -> String {
        let (ns, mac) = self.net.add_host(name, ip);
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
        let SocketAddr::V4(vip) = self.vip.addr else {
            unreachable!("the VIP was made from an IPv4 address")
        };
        run(&format!("ip -n {ns} addr add {}/32 dev lo", vip.ip()));
        let server = (self.start_server)(&ns, vip, name);
        self.servers.push((name, server));
        self.addrs.push((name, ip));
        self.front
            .bal
            .add_real(
                &self.vip,
                &RealSpec {
                    addr: ip.into(),
                    mac,
                    src_mac: self.front_mac,
                    egress_ifindex: None,
                    weight: 1,
                    encap: l4_ctl::Encap::L2,
                },
            )
            .expect("add a real");
        ns
    }

    /// The server that the VIP's Maglev table gives a new flow from `src` (as `l4-ctl lookup`
    /// predicts it).
    pub fn server_for(&self, src: SocketAddrV4) -> &'static str {
        let real = self
            .front
            .bal
            .lookup(&self.vip, SocketAddr::V4(src))
            .expect("lookup")
            .expect("the VIP has reals");
        self.addrs
            .iter()
            .find(|(_, ip)| real.addr() == *ip)
            .map(|(name, _)| *name)
            .expect("lookup names one of the servers")
    }
}
