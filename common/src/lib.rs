//! Everything dl7's XDP program and its user-space tools must agree on: map names and sizes,
//! the layouts of map keys and values, counter indices and the flow hash.
//!
//! This crate is `#![no_std]` so that the eBPF program (`l4-ebpf`, built for
//! `bpfel-unknown-none`) and `l4-ctl` compile the very same definitions. With the `user` feature
//! the map types implement [`aya::Pod`] so that user space can read and write them.
//!
//! Conventions, kept by both sides:
//! - Addresses are stored as the raw network-order bytes of the packet, read as four native
//!   `u32` words (`[u32; 4]`); an IPv4 address uses word 0 and leaves words 1..3 zero.
//! - Ports are stored in network byte order, exactly as they appear in the packet.
//! - Every key is free of implicit padding (explicit `_pad` fields, always zero), because the
//!   kernel compares hash keys byte by byte.
#![no_std]

pub mod counters;
pub mod flow;
pub mod maps;

pub use counters::{DecapCounter, GlobalCounter, TrafficCounters};
pub use flow::{FlowKey, FlowKeyV4, flow_hash};
pub use maps::{
    ConnValue, DecapAddrKey, FrontSettings, HEALTH_PATH_MAX, HealthSpec, NewFlowWindow, RealDef,
    VipAddrKey, VipKey, VipMeta,
};

/// Size of every VIP's Maglev lookup table: a prime (Eisenbud et al. want M prime and
/// M > 100 x the number of reals), so each real's permutation visits every slot.
pub const RING_SIZE: u32 = 65537;

/// How many VIPs the program can serve. Each VIP owns two Maglev tables (see [`VipMeta`]).
pub const MAX_VIPS: u32 = 64;

/// How many reals (over all VIPs) the program can address. Real id 0 is reserved for
/// [`NO_REAL`], so ids run from 1 to `MAX_REALS - 1`.
pub const MAX_REALS: u32 = 4096;

/// Entries in the LRU connection table (5-tuple -> real). It is an LRU map: when full, the
/// least recently used flow is evicted and its next packet is treated as a new flow.
pub const CONN_TABLE_SIZE: u32 = 1 << 18;

/// Number of egress interfaces a real can be reached through by a devmap redirect.
pub const MAX_TX_PORTS: u32 = 64;

/// Table slot value meaning "no real": a VIP whose reals all have weight 0, or none at all.
pub const NO_REAL: u32 = 0;

/// `RealDef::tx_port` value meaning "bounce out of the receiving interface with XDP_TX".
pub const TX_PORT_SAME_IFACE: u32 = 0;

/// UDP destination port of GUE-encapsulated frames (Katran's default, so that a Katran front's
/// frames decapsulate on dl7's reals and dl7's on Katran's decapsulator).
pub const GUE_PORT: u16 = 6080;

/// The first two octets of the outer IPv4 source of an IPIP frame; the last two are the
/// client's last two octets XOR its port, so that the real's RSS spreads flows (Katran's
/// `172.16.0.0/16` scheme). The real never answers this address: its replies come from the VIP.
pub const IPIP_V4_SOURCE_PREFIX: [u8; 2] = [172, 16];

/// The first 12 octets of the outer IPv6 source of an IPIP frame (`100::/64`, the discard
/// prefix of RFC 6666, as Katran): the last four are the client's last four, the first two
/// of them XOR its port.
pub const IPIP_V6_SOURCE_PREFIX: [u8; 12] = [1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];

/// Hop limit (TTL) of outer headers.
pub const ENCAP_TTL: u8 = 64;

/// Entries of the VIP-port set (one per port number, so that the program can test a port
/// with one array read before any hash lookup).
pub const VIP_PORT_SLOTS: u32 = 65536;

/// How many addresses of its own a real's decapsulator recognises.
pub const MAX_DECAP_ADDRS: u32 = 64;

/// Address family tags used in keys (the values of `AF_INET` and `AF_INET6` on Linux).
pub const FAMILY_V4: u8 = 2;
/// See [`FAMILY_V4`].
pub const FAMILY_V6: u8 = 10;

/// IP protocol numbers dl7 balances.
pub const PROTO_TCP: u8 = 6;
/// See [`PROTO_TCP`].
pub const PROTO_UDP: u8 = 17;

/// The one list of the eBPF object's map names (the kernel keeps 15 characters of a map name,
/// so each is at most 15 long). `map_name!(VIPS)` is the name as a string literal, which
/// [`map_names`] gives user space as constants; `map_name!(VIPS => then!(args..))` expands to
/// `then! { "DL7_VIPS", args.. }`, which is how the eBPF program puts the same literal into
/// its `#[map(name = ..)]` attributes, where no constant may stand.
#[macro_export]
macro_rules! map_name {
    (VIPS => $($then:ident)::+ ! ($($args:tt)*)) => { $($then)::+! { "DL7_VIPS", $($args)* } };
    (VIP_ADDRS => $($then:ident)::+ ! ($($args:tt)*)) => { $($then)::+! { "DL7_VIP_ADDRS", $($args)* } };
    (RINGS => $($then:ident)::+ ! ($($args:tt)*)) => { $($then)::+! { "DL7_RINGS", $($args)* } };
    (REALS => $($then:ident)::+ ! ($($args:tt)*)) => { $($then)::+! { "DL7_REALS", $($args)* } };
    (CONN_TABLE => $($then:ident)::+ ! ($($args:tt)*)) => { $($then)::+! { "DL7_CONNS", $($args)* } };
    (CONN_TABLE_V4 => $($then:ident)::+ ! ($($args:tt)*)) => { $($then)::+! { "DL7_CONNS4", $($args)* } };
    (TX_PORTS => $($then:ident)::+ ! ($($args:tt)*)) => { $($then)::+! { "DL7_TX_PORTS", $($args)* } };
    (VIP_STATS => $($then:ident)::+ ! ($($args:tt)*)) => { $($then)::+! { "DL7_VIP_STATS", $($args)* } };
    (REAL_STATS => $($then:ident)::+ ! ($($args:tt)*)) => { $($then)::+! { "DL7_REAL_STATS", $($args)* } };
    (GLOBAL_STATS => $($then:ident)::+ ! ($($args:tt)*)) => { $($then)::+! { "DL7_GLOBALS", $($args)* } };
    (HEALTH => $($then:ident)::+ ! ($($args:tt)*)) => { $($then)::+! { "DL7_HEALTH", $($args)* } };
    (VIP_PORTS => $($then:ident)::+ ! ($($args:tt)*)) => { $($then)::+! { "DL7_VIP_PORTS", $($args)* } };
    (SETTINGS => $($then:ident)::+ ! ($($args:tt)*)) => { $($then)::+! { "DL7_SETTINGS", $($args)* } };
    (FLOW_GUARD => $($then:ident)::+ ! ($($args:tt)*)) => { $($then)::+! { "DL7_FLOW_GUARD", $($args)* } };
    (DECAP_ADDRS => $($then:ident)::+ ! ($($args:tt)*)) => { $($then)::+! { "DL7_DECAP_ADDRS", $($args)* } };
    (DECAP_STATS => $($then:ident)::+ ! ($($args:tt)*)) => { $($then)::+! { "DL7_DECAP_STATS", $($args)* } };
    ($id:ident) => {
        $crate::map_name!($id => $crate::__map_name_literal!())
    };
}

/// The literal that [`map_name!`] hands over (for its one-argument form).
#[doc(hidden)]
#[macro_export]
macro_rules! __map_name_literal {
    ($name:literal,) => {
        $name
    };
}

/// Names of the maps in the eBPF object, used by user space to find (and pin) them, from
/// [`map_name!`].
pub mod map_names {
    /// [`crate::VipKey`] -> [`crate::VipMeta`].
    pub const VIPS: &str = crate::map_name!(VIPS);
    /// [`crate::VipAddrKey`] -> number of VIPs on that address (for fragments).
    pub const VIP_ADDRS: &str = crate::map_name!(VIP_ADDRS);
    /// Array of Maglev tables: index `vip_id * 2 + flip` -> `[u32; RING_SIZE]` of real ids.
    pub const RINGS: &str = crate::map_name!(RINGS);
    /// Array indexed by real id -> [`crate::RealDef`].
    pub const REALS: &str = crate::map_name!(REALS);
    /// LRU hash [`crate::FlowKey`] -> [`crate::ConnValue`]: IPv6 flows (and IPv4 flows that
    /// a build before the IPv4 table recorded).
    pub const CONN_TABLE: &str = crate::map_name!(CONN_TABLE);
    /// LRU hash [`crate::FlowKeyV4`] -> [`crate::ConnValue`]: IPv4 flows.
    pub const CONN_TABLE_V4: &str = crate::map_name!(CONN_TABLE_V4);
    /// Devmap: `RealDef::tx_port` -> egress ifindex.
    pub const TX_PORTS: &str = crate::map_name!(TX_PORTS);
    /// Per-CPU array indexed by `vip_id` -> [`crate::TrafficCounters`].
    pub const VIP_STATS: &str = crate::map_name!(VIP_STATS);
    /// Per-CPU array indexed by real id -> [`crate::TrafficCounters`].
    pub const REAL_STATS: &str = crate::map_name!(REAL_STATS);
    /// Per-CPU array indexed by [`crate::GlobalCounter`] -> `u64`.
    pub const GLOBAL_STATS: &str = crate::map_name!(GLOBAL_STATS);
    /// Array indexed by `vip_id` -> [`crate::HealthSpec`] (l4-ctl's only; the program never
    /// reads it).
    pub const HEALTH: &str = crate::map_name!(HEALTH);
    /// Array indexed by port number (host order) -> how many VIPs use that port.
    pub const VIP_PORTS: &str = crate::map_name!(VIP_PORTS);
    /// Array with one [`crate::FrontSettings`] at index 0.
    pub const SETTINGS: &str = crate::map_name!(SETTINGS);
    /// Per-CPU array with one [`crate::NewFlowWindow`] at index 0.
    pub const FLOW_GUARD: &str = crate::map_name!(FLOW_GUARD);
    /// The decapsulator's: [`crate::DecapAddrKey`] -> 1 for each address of the real.
    pub const DECAP_ADDRS: &str = crate::map_name!(DECAP_ADDRS);
    /// The decapsulator's: per-CPU array indexed by [`crate::DecapCounter`] -> `u64`.
    pub const DECAP_STATS: &str = crate::map_name!(DECAP_STATS);
    /// The decapsulator's maps.
    pub const DECAP_ALL: [&str; 2] = [DECAP_ADDRS, DECAP_STATS];
    /// Every map of the balancer, in the order above.
    pub const ALL: [&str; 14] = [
        VIPS,
        VIP_ADDRS,
        RINGS,
        REALS,
        CONN_TABLE,
        CONN_TABLE_V4,
        TX_PORTS,
        VIP_STATS,
        REAL_STATS,
        GLOBAL_STATS,
        HEALTH,
        VIP_PORTS,
        SETTINGS,
        FLOW_GUARD,
    ];
    // The kernel truncates longer names.
    const _: () = {
        let mut i = 0;
        while i < ALL.len() {
            assert!(ALL[i].len() <= 15);
            i += 1;
        }
        let mut i = 0;
        while i < DECAP_ALL.len() {
            assert!(DECAP_ALL[i].len() <= 15);
            i += 1;
        }
    };
}

/// Name of the XDP program in the eBPF object.
pub const PROGRAM_NAME: &str = "dl7_xdp";

/// Name of the decapsulator's XDP program (in its own object, for the reals).
pub const DECAP_PROGRAM_NAME: &str = "dl7_decap";

/// Name of the decapsulator's tc program (the same work on an skb, for interfaces where XDP
/// cannot attach).
pub const DECAP_TC_PROGRAM_NAME: &str = "dl7_decap_tc";
