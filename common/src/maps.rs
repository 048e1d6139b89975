//! Keys and values of the program's maps. The map names are in [`crate::map_names`].

/// Key of the VIP table: a service the front balances.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct VipKey {
    /// Network-order address bytes as native words (IPv4 in word 0).
    pub addr: [u32; 4],
    /// Destination port, network byte order.
    pub port: u16,
    /// [`crate::PROTO_TCP`] or [`crate::PROTO_UDP`].
    pub proto: u8,
    /// [`crate::FAMILY_V4`] or [`crate::FAMILY_V6`].
    pub family: u8,
}

/// Value of the VIP table.
///
/// The Maglev tables live in one array map, two per VIP (`vip_id * 2` and `vip_id * 2 + 1`).
/// User space fills the table that is not in use and then replaces this value with one whose
/// `ring` names the new table: a single map update, so the program reads either the old or the
/// new table, never one half-written.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VipMeta {
    /// Index of the VIP in the per-VIP counters, 0..MAX_VIPS.
    pub vip_id: u32,
    /// Index of the active Maglev table in the rings array: `vip_id * 2 + (0 or 1)`.
    pub ring: u32,
}

/// Key of the VIP-address set: every address that carries at least one VIP. The program
/// uses it for packets it cannot match on ports (fragments): those aimed at a VIP address are
/// dropped and counted, all others are passed to the kernel.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct VipAddrKey {
    /// Network-order address bytes as native words (IPv4 in word 0).
    pub addr: [u32; 4],
    /// [`crate::FAMILY_V4`] or [`crate::FAMILY_V6`].
    pub family: u8,
    /// Always zero.
    pub _pad: [u8; 3],
}

/// A real server of one VIP, indexed by real id in the reals array. The reals array is also
/// where l4-ctl keeps its view of the configuration, so that every l4-ctl process (and a
/// restarted one) sees the same state as the program.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RealDef {
    /// The real's address (informational for the program; l4-ctl lists it).
    pub addr: [u32; 4],
    /// Destination MAC written into forwarded frames.
    pub mac: [u8; 6],
    /// Source MAC written into forwarded frames: the front's MAC on the egress interface.
    pub src_mac: [u8; 6],
    /// [`crate::TX_PORT_SAME_IFACE`] for XDP_TX, else the devmap slot to redirect to.
    pub tx_port: u32,
    /// Bumped whenever the slot is (re)assigned; a connection-table entry that carries another
    /// generation belongs to a real that was deleted and is treated as a miss.
    pub generation: u32,
    /// [`RealDef::FLAG_ACTIVE`] when the slot holds a real, plus [`RealDef::FLAG_DOWN`] while
    /// its health check fails. Control-plane state apart from `FLAG_ACTIVE`.
    pub flags: u32,
    /// The VIP this real serves (a server in two VIPs has two slots, so that deleting it from
    /// one VIP ends exactly that VIP's flows to it). Control-plane state; the program ignores it.
    pub vip_id: u32,
    /// Relative Maglev weight; 0 = drained (keeps its flows, gets no new ones).
    /// Control-plane state; the program ignores it.
    pub weight: u32,
    /// [`crate::FAMILY_V4`] or [`crate::FAMILY_V6`].
    pub family: u8,
    /// How frames reach the real: [`RealDef::ENCAP_L2`] (this byte was padding before
    /// encapsulation existed, so reals written by older builds read as L2),
    /// [`RealDef::ENCAP_IPIP`] or [`RealDef::ENCAP_GUE`].
    pub encap: u8,
    /// Always zero.
    pub _pad: [u8; 2],
}

impl RealDef {
    /// Only the MAC addresses are rewritten (L2 direct server return): `mac`, `src_mac` and
    /// `tx_port` say where the frame goes.
    pub const ENCAP_L2: u8 = 0;
    /// An outer IP header addressed to the real (IPv4 in IPv4, IPv6 in IPv6), its source
    /// derived from the flow; the next hop comes from the kernel's FIB.
    pub const ENCAP_IPIP: u8 = 1;
    /// An outer IP and UDP header (GUE variant 1: the inner IP packet follows the UDP header
    /// directly) to [`crate::GUE_PORT`], the source port derived from the flow.
    pub const ENCAP_GUE: u8 = 2;

    /// The slot holds a real that may receive packets.
    pub const FLAG_ACTIVE: u32 = 1;
    /// The real failed its health check: like weight 0 it keeps its flows and is left out of
    /// the Maglev table, but its configured weight is kept for when it recovers.
    pub const FLAG_DOWN: u32 = 2;
}

/// How l4-ctl's daemon health-checks the reals of one VIP, indexed by `vip_id` in the health
/// map. The program never reads it: it is kept in a pinned map so that every l4-ctl process
/// (`dump`, the daemon, a restarted daemon) sees the configuration `apply` wrote.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HealthSpec {
    /// [`HealthSpec::KIND_NONE`], [`HealthSpec::KIND_TCP`] or [`HealthSpec::KIND_HTTP`].
    pub kind: u8,
    /// Consecutive successes that bring a down real back.
    pub rise: u8,
    /// Consecutive failures that take a real down.
    pub fall: u8,
    /// Length of `path` in use.
    pub path_len: u8,
    /// Port to check, host byte order; 0 means the VIP's port.
    pub port: u16,
    /// Always zero.
    pub _pad: u16,
    /// Time between checks of one real.
    pub interval_ms: u32,
    /// Time a check may take before it counts as failed.
    pub timeout_ms: u32,
    /// HTTP checks: the path to GET (a 2xx or 3xx answer is healthy).
    pub path: [u8; HEALTH_PATH_MAX],
}

/// Longest HTTP health-check path [`HealthSpec`] holds.
pub const HEALTH_PATH_MAX: usize = 112;

impl HealthSpec {
    /// No health check: reals are always considered up.
    pub const KIND_NONE: u8 = 0;
    /// A TCP connect to the real's address.
    pub const KIND_TCP: u8 = 1;
    /// An HTTP/1.1 GET to the real's address.
    pub const KIND_HTTP: u8 = 2;
}

impl Default for HealthSpec {
    fn default() -> Self {
        Self {
            kind: Self::KIND_NONE,
            rise: 0,
            fall: 0,
            path_len: 0,
            port: 0,
            _pad: 0,
            interval_ms: 0,
            timeout_ms: 0,
            path: [0; HEALTH_PATH_MAX],
        }
    }
}

/// The front's settings that the program reads (one entry, index 0, of the settings array).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FrontSettings {
    /// New flows per second and CPU that are recorded in the connection table; beyond it a
    /// new flow is still forwarded by the Maglev table but not recorded, so a SYN flood
    /// cannot evict established flows. 0 records every new flow.
    pub new_flow_limit: u32,
    /// [`FrontSettings::DRAINED`] or 0. The program does not read it: it is the front's
    /// operator state, kept in the maps (the only state) so that it survives daemon restarts.
    pub flags: u32,
}

impl FrontSettings {
    /// `l4-ctl front drain`: the daemon withdraws this front's VIP announcements (the program
    /// keeps forwarding what still arrives).
    pub const DRAINED: u32 = 1;
}

/// The per-CPU state of the new-flow guard: the current one-second window and how many
/// flows it recorded.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NewFlowWindow {
    /// Start of the window, `bpf_ktime_get_ns` time.
    pub start_ns: u64,
    /// Flows recorded in the connection table during the window.
    pub recorded: u64,
}

/// Key of the decapsulator's address set: an address of the real itself (outer packets to
/// any other address are passed untouched).
pub type DecapAddrKey = VipAddrKey;

/// Value of the connection table: which real a flow was given.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ConnValue {
    /// Real id.
    pub real: u32,
    /// `RealDef::generation` at the time the flow was assigned.
    pub generation: u32,
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: all of these are #[repr(C)], made only of integers and byte arrays, with no
    // implicit padding, so every bit pattern is valid and they can be copied as bytes.
    unsafe impl aya::Pod for crate::maps::VipKey {}
    unsafe impl aya::Pod for crate::maps::VipMeta {}
    unsafe impl aya::Pod for crate::maps::VipAddrKey {}
    unsafe impl aya::Pod for crate::maps::RealDef {}
    unsafe impl aya::Pod for crate::maps::ConnValue {}
    unsafe impl aya::Pod for crate::maps::HealthSpec {}
    unsafe impl aya::Pod for crate::maps::FrontSettings {}
    unsafe impl aya::Pod for crate::maps::NewFlowWindow {}
    unsafe impl aya::Pod for crate::flow::FlowKey {}
    unsafe impl aya::Pod for crate::flow::FlowKeyV4 {}
    unsafe impl aya::Pod for crate::counters::TrafficCounters {}
}

/// Compile-time checks that the layouts have no implicit padding.
const _: () = {
    assert!(core::mem::size_of::<VipKey>() == 20);
    assert!(core::mem::size_of::<VipMeta>() == 8);
    assert!(core::mem::size_of::<VipAddrKey>() == 20);
    assert!(core::mem::size_of::<RealDef>() == 52);
    assert!(core::mem::size_of::<ConnValue>() == 8);
    assert!(core::mem::size_of::<FrontSettings>() == 8);
    assert!(core::mem::size_of::<NewFlowWindow>() == 16);
    assert!(core::mem::size_of::<HealthSpec>() == 16 + HEALTH_PATH_MAX);
};
