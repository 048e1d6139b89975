//! Where a real sits on the front's network: the interface the front reaches it through, the
//! front's MAC there, and the real's MAC from the kernel's neighbour table (asking the kernel to
//! resolve it when the table has no usable entry).
//!
//! A real forwarded at layer 2 (MAC rewrite) must be on a segment the front is attached to, so
//! for it an address reached through a gateway is refused with a clear message. A real with
//! an encapsulation may be anywhere the front's routes reach ([`resolve_routed`]): the program
//! asks the FIB for every frame's next hop, and this module only checks that the kernel will
//! answer (a route, IP forwarding on) and warms the next hop's neighbour entry.
//! The kernel is asked through `ip -j` (iproute2), which answers for the network namespace
//! l4-ctl runs in.

use std::{
    net::{IpAddr, SocketAddr, UdpSocket},
    process::Command,
    thread,
    time::{Duration, Instant},
};

use serde::Deserialize;

use crate::Mac;

/// How long to wait for an ARP or neighbour-discovery answer.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(3);
const RESOLVE_POLL: Duration = Duration::from_millis(50);
/// Where the probe datagram goes: the discard port. Any datagram makes the kernel resolve
/// the neighbour; the datagram itself is of no interest to the real.
const PROBE_PORT: u16 = 9;

/// Why a real's place on the network could not be found.
#[derive(Debug, thiserror::Error)]
pub enum NeighbourError {
    #[error("running `ip {args}` failed: {detail}")]
    Ip { args: String, detail: String },
    #[error("no route to {0}")]
    NoRoute(IpAddr),
    #[error("{0} is an address of this host, not a real server")]
    Local(IpAddr),
    #[error(
        "{addr} is reached through the gateway {gateway}: forwarded at layer 2, a real must share a segment with the front (use --encap ipip or gue for a routed real)"
    )]
    Gateway { addr: IpAddr, gateway: String },
    #[error(
        "IP forwarding is off ({sysctl} = 0): the kernel's FIB answers the program's next-hop lookups for encapsulated reals only when it is on (sysctl -w {sysctl}=1)"
    )]
    ForwardingOff { sysctl: String },
    #[error(
        "--encap gue needs Linux 6.7 on the front: the program asks the kernel's FIB for the outer source address (BPF_FIB_LOOKUP_SRC); use --encap ipip"
    )]
    GueNeedsKernel,
    #[error(
        "cannot resolve the MAC of {addr} on {dev}: no ARP/neighbour answer within {}s; is the real up? (or give --mac)",
        RESOLVE_TIMEOUT.as_secs()
    )]
    Unresolved { addr: IpAddr, dev: String },
    #[error("interface {dev} has no usable MAC address ({found:?})")]
    NoMac { dev: String, found: String },
}

/// The front's way to a real.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Path {
    /// The interface the front reaches the real through.
    pub dev: String,
    /// The front's MAC on `dev` (the source of forwarded frames).
    pub src_mac: Mac,
    /// The real's MAC.
    pub mac: Mac,
}

#[derive(Deserialize)]
struct RouteEntry {
    #[serde(rename = "type")]
    kind: Option<String>,
    dev: Option<String>,
    gateway: Option<String>,
}

#[derive(Deserialize)]
struct LinkEntry {
    address: Option<String>,
}

#[derive(Deserialize)]
struct NeighEntry {
    lladdr: Option<String>,
    #[serde(default)]
    state: Vec<String>,
}

/// Finds the way to `addr`; `mac` skips the neighbour lookup.
pub fn resolve(addr: IpAddr, mac: Option<Mac>) -> Result<Path, NeighbourError> {
    let dev = route_dev(addr)?;
    let src_mac = dev_mac(&dev)?;
    let mac = match mac {
        Some(mac) => mac,
        None => neighbour_mac(addr, &dev)?,
    };
    Ok(Path { dev, src_mac, mac })
}

/// The front's way to a real behind routers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoutedPath {
    /// The interface the outer packets leave through.
    pub dev: String,
    /// The next hop: the gateway, or the real itself when it is on a connected subnet.
    pub next_hop: IpAddr,
    /// The next hop's MAC, as the neighbour table has it now.
    pub next_hop_mac: Mac,
}

/// Checks that the program's FIB lookups for `addr` will succeed from `ingress` (the
/// interface the program runs on): a route, IP forwarding on, and a neighbour entry for the
/// next hop, resolved now if missing (the program cannot resolve one itself).
pub fn resolve_routed(addr: IpAddr, ingress: &str) -> Result<RoutedPath, NeighbourError> {
    // The path is built, not derived from the sysctl name: an interface name may hold dots.
    let (sysctl, path) = match addr {
        IpAddr::V4(_) => (
            format!("net.ipv4.conf.{ingress}.forwarding"),
            format!("/proc/sys/net/ipv4/conf/{ingress}/forwarding"),
        ),
        IpAddr::V6(_) => (
            "net.ipv6.conf.all.forwarding".to_owned(),
            "/proc/sys/net/ipv6/conf/all/forwarding".to_owned(),
        ),
    };
    let on = std::fs::read_to_string(&path).is_ok_and(|v| v.trim() != "0");
    if !on {
        return Err(NeighbourError::ForwardingOff { sysctl });
    }
    let route = route_entry(addr)?;
    let dev = route.dev.ok_or(NeighbourError::NoRoute(addr))?;
    let next_hop = match route.gateway {
        Some(gateway) => gateway.parse().map_err(|_| NeighbourError::Ip {
            args: format!("-j route get {addr}"),
            detail: format!("unexpected gateway {gateway:?}"),
        })?,
        None => addr,
    };
    let next_hop_mac = neighbour_mac(next_hop, &dev)?;
    Ok(RoutedPath {
        dev,
        next_hop,
        next_hop_mac,
    })
}

/// Runs `ip -j ARGS` and parses its JSON array.
pub(crate) fn ip_json<T: for<'de> Deserialize<'de>>(
    args: &[&str],
) -> Result<Vec<T>, NeighbourError> {
    let err = |detail: String| NeighbourError::Ip {
        args: format!("-j {}", args.join(" ")),
        detail,
    };
    let out = Command::new("ip")
        .arg("-j")
        .args(args)
        .output()
        .map_err(|e| err(e.to_string()))?;
    if !out.status.success() {
        return Err(err(String::from_utf8_lossy(&out.stderr).trim().to_owned()));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    if text.trim().is_empty() {
        return Ok(Vec::new());
    }
    serde_json::from_str(&text).map_err(|e| err(format!("unexpected output: {e}")))
}

fn route_dev(addr: IpAddr) -> Result<String, NeighbourError> {
    let route = route_entry(addr)?;
    if let Some(gateway) = route.gateway {
        return Err(NeighbourError::Gateway { addr, gateway });
    }
    route.dev.ok_or(NeighbourError::NoRoute(addr))
}

/// The kernel's route to `addr` (not a local address).
fn route_entry(addr: IpAddr) -> Result<RouteEntry, NeighbourError> {
    let addr_s = addr.to_string();
    let routes: Vec<RouteEntry> = match ip_json(&["route", "get", &addr_s]) {
        Ok(routes) => routes,
        // `ip route get` fails with "unreachable" / "Network is unreachable".
        Err(NeighbourError::Ip { .. }) => return Err(NeighbourError::NoRoute(addr)),
        Err(e) => return Err(e),
    };
    let route = routes
        .into_iter()
        .next()
        .ok_or(NeighbourError::NoRoute(addr))?;
    if route.kind.as_deref() == Some("local") {
        return Err(NeighbourError::Local(addr));
    }
    Ok(route)
}

fn dev_mac(dev: &str) -> Result<Mac, NeighbourError> {
    let links: Vec<LinkEntry> = ip_json(&["link", "show", "dev", dev])?;
    let found = links
        .into_iter()
        .next()
        .and_then(|l| l.address)
        .unwrap_or_default();
    match found.parse::<Mac>() {
        Ok(mac) if mac.0 != [0; 6] => Ok(mac),
        _ => Err(NeighbourError::NoMac {
            dev: dev.to_owned(),
            found,
        }),
    }
}

/// A neighbour entry the kernel would use to send to the real right now.
fn usable_entry(addr: IpAddr, dev: &str) -> Result<Option<Mac>, NeighbourError> {
    let addr_s = addr.to_string();
    let entries: Vec<NeighEntry> = ip_json(&["neigh", "show", "to", &addr_s, "dev", dev])?;
    Ok(entries.into_iter().find_map(|e| {
        let bad = e
            .state
            .iter()
            .any(|s| s == "FAILED" || s == "INCOMPLETE" || s == "NONE");
        if bad {
            return None;
        }
        e.lladdr?.parse::<Mac>().ok()
    }))
}

fn neighbour_mac(addr: IpAddr, dev: &str) -> Result<Mac, NeighbourError> {
    if let Some(mac) = usable_entry(addr, dev)? {
        return Ok(mac);
    }
    // Make the kernel resolve it: sending any datagram to the address starts ARP or ND.
    let bind: SocketAddr = match addr {
        IpAddr::V4(_) => "0.0.0.0:0".parse().expect("literal"),
        IpAddr::V6(_) => "[::]:0".parse().expect("literal"),
    };
    if let Ok(socket) = UdpSocket::bind(bind) {
        let _ = socket.send_to(b"", SocketAddr::new(addr, PROBE_PORT));
    }
    let deadline = Instant::now() + RESOLVE_TIMEOUT;
    while Instant::now() < deadline {
        thread::sleep(RESOLVE_POLL);
        if let Some(mac) = usable_entry(addr, dev)? {
            return Ok(mac);
        }
    }
    Err(NeighbourError::Unresolved {
        addr,
        dev: dev.to_owned(),
    })
}
