//! A network namespace whose routing tables an encapsulating front's FIB lookups can be
//! tested against: the front's interface `f0` (10.99.0.1/24, fd99::1/64, MTU 1500), a router
//! behind it with a permanent neighbour entry, the reals' subnets routed through that router,
//! and a subnet routed through a gateway that has no neighbour entry. Frames are test-run as
//! if they arrived on `f0`, from a thread inside the namespace.

use std::net::{Ipv4Addr, Ipv6Addr};

use l4_ctl::Mac;

use super::netns::{Netns, run, sysctl};

/// The router's MAC (a permanent neighbour entry: the FIB's answer for the next hop).
pub const ROUTER_MAC: Mac = Mac([0x02, 0, 0, 0, 0x0a, 0x01]);
/// The front's addresses on `f0` (GUE's outer source).
pub const FRONT4: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 1);
/// See [`FRONT4`].
pub const FRONT6: Ipv6Addr = Ipv6Addr::new(0xfd99, 0, 0, 0, 0, 0, 0, 1);
/// Reals routed through the router: any address in 10.200.0.0/24 and fd20::/64.
pub const REAL_NET4: &str = "10.200.0.0/24";
/// See [`REAL_NET4`].
pub const REAL_NET6: &str = "fd20::/64";
/// Routed through a gateway with no neighbour entry: 10.201.0.0/24 and fd21::/64.
pub const UNRESOLVED_NET4: &str = "10.201.0.0/24";
/// See [`UNRESOLVED_NET4`].
pub const UNRESOLVED_NET6: &str = "fd21::/64";
/// The MTU of `f0`.
pub const MTU: usize = 1500;

/// The namespace; dropping it deletes it.
pub struct Fib {
    _net: Netns,
    pub ns: String,
    /// `f0`'s index: the ingress interface of every test run.
    pub ifindex: u32,
    /// `f0`'s MAC: the source of every encapsulated frame.
    pub front_mac: Mac,
}

impl Fib {
    pub fn new() -> Self {
        let mut net = Netns::new();
        let ns = net.add_ns("fib");
        sysctl(
            &ns,
            &[
                "net.ipv6.conf.all.disable_ipv6=0",
                "net.ipv6.conf.default.disable_ipv6=0",
            ],
        );
        let ip = |args: &str| run(&format!("ip -n {ns} {args}"));
        ip("link add f0 type veth peer name f1");
        ip(&format!("link set f0 mtu {MTU} up"));
        ip("link set f1 up");
        ip(&format!("addr add {FRONT4}/24 dev f0"));
        ip(&format!("-6 addr add {FRONT6}/64 dev f0 nodad"));
        ip(&format!("route add {REAL_NET4} via 10.99.0.254"));
        ip(&format!("route add {UNRESOLVED_NET4} via 10.99.0.253"));
        ip(&format!("-6 route add {REAL_NET6} via fd99::fe"));
        ip(&format!("-6 route add {UNRESOLVED_NET6} via fd99::fd"));
        ip(&format!(
            "neigh add 10.99.0.254 lladdr {ROUTER_MAC} dev f0 nud permanent"
        ));
        ip(&format!(
            "-6 neigh add fd99::fe lladdr {ROUTER_MAC} dev f0 nud permanent"
        ));
        sysctl(
            &ns,
            &[
                "net.ipv4.conf.f0.forwarding=1",
                "net.ipv6.conf.all.forwarding=1",
            ],
        );
        let read = |file: &str| run(&format!("ip netns exec {ns} cat /sys/class/net/f0/{file}"));
        let ifindex = read("ifindex").trim().parse().expect("an ifindex in sysfs");
        let front_mac = read("address").trim().parse().expect("a MAC in sysfs");
        Fib {
            _net: net,
            ns,
            ifindex,
            front_mac,
        }
    }
}
