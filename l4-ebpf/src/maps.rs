//! Every map of the program, in one place (their layouts and names live in `common`; each
//! name is written once, in `common::map_name!`).
//!
//! All maps are pinned by name: `l4-ctl load` points aya at /sys/fs/bpf/dl7, so a new build of
//! the program reuses the existing maps and no established flow loses its real on an upgrade.

use aya_ebpf::{
    macros::map,
    maps::{Array, DevMap, HashMap, LruHashMap, PerCpuArray},
};
use common::{
    CONN_TABLE_SIZE, ConnValue, FlowKey, FlowKeyV4, FrontSettings, GlobalCounter, HealthSpec,
    MAX_REALS, MAX_TX_PORTS, MAX_VIPS, NewFlowWindow, RING_SIZE, RealDef, TrafficCounters,
    VIP_PORT_SLOTS, VipAddrKey, VipKey, VipMeta, map_name,
};

/// `BPF_F_NO_COMMON_LRU`: one LRU list per CPU, so inserts on different CPUs never contend.
const BPF_F_NO_COMMON_LRU: u32 = 1 << 1;

/// One Maglev table: real id per slot.
pub type Ring = [u32; RING_SIZE as usize];

/// Declares a pinned map under the name `common::map_name!` hands over (its first token):
/// the names are written once, in `common`, for the program and user space alike.
macro_rules! pinned {
    ($name:literal, $(#[$doc:meta])* $vis:vis static $id:ident : $ty:ty = $init:expr) => {
        $(#[$doc])*
        #[map(name = $name)]
        $vis static $id: $ty = $init;
    };
}

map_name!(VIPS => pinned!(
    /// The VIPs: (address, port, protocol) -> id, flags and the Maglev table in use.
    pub static VIPS: HashMap<VipKey, VipMeta> = HashMap::pinned(MAX_VIPS, 0)
));

map_name!(VIP_ADDRS => pinned!(
    /// VIP addresses -> how many VIPs use them: an IP fragment (which carries no ports) to
    /// one of these is dropped rather than passed.
    pub static VIP_ADDRS: HashMap<VipAddrKey, u32> = HashMap::pinned(MAX_VIPS, 0)
));

map_name!(RINGS => pinned!(
    /// Two Maglev tables per VIP (index `vip_id * 2 + flip`): user space fills the one not in
    /// use, then flips the VIP's entry, so the program never sees a half-written table.
    pub static RINGS: Array<Ring> = Array::pinned(MAX_VIPS * 2, 0)
));

map_name!(REALS => pinned!(
    /// The reals by id: address, MAC, egress port, weight state.
    pub static REALS: Array<RealDef> = Array::pinned(MAX_REALS, 0)
));

map_name!(CONN_TABLE => pinned!(
    /// The connection table: flow -> real, one LRU list per CPU, so that a change of a
    /// VIP's reals never moves an established flow. IPv6 flows; IPv4 flows go to [`CONNS4`]
    /// (this table still holds the IPv4 flows a build before it recorded).
    pub static CONNS: LruHashMap<FlowKey, ConnValue> =
        LruHashMap::pinned(CONN_TABLE_SIZE, BPF_F_NO_COMMON_LRU)
));

map_name!(CONN_TABLE_V4 => pinned!(
    /// The IPv4 flows' connection table: as [`CONNS`], with 16-byte keys.
    pub static CONNS4: LruHashMap<FlowKeyV4, ConnValue> =
        LruHashMap::pinned(CONN_TABLE_SIZE, BPF_F_NO_COMMON_LRU)
));

map_name!(TX_PORTS => pinned!(
    /// Egress interfaces for reals behind another interface of the front (devmap redirect).
    pub static TX_PORTS: DevMap = DevMap::pinned(MAX_TX_PORTS, 0)
));

map_name!(VIP_STATS => pinned!(
    /// Packets and bytes per VIP, per CPU.
    pub static VIP_STATS: PerCpuArray<TrafficCounters> = PerCpuArray::pinned(MAX_VIPS, 0)
));

map_name!(REAL_STATS => pinned!(
    /// Packets and bytes per real, per CPU.
    pub static REAL_STATS: PerCpuArray<TrafficCounters> = PerCpuArray::pinned(MAX_REALS, 0)
));

map_name!(GLOBAL_STATS => pinned!(
    /// The global counters (every frame ends in exactly one outcome), per CPU.
    pub static GLOBALS: PerCpuArray<u64> = PerCpuArray::pinned(GlobalCounter::COUNT, 0)
));

map_name!(HEALTH => pinned!(
    /// Health-check settings per VIP. The program never reads this map; it lives in the
    /// object so that it is created and pinned with the others and survives upgrades like
    /// them.
    pub static HEALTH: Array<HealthSpec> = Array::pinned(MAX_VIPS, 0)
));

map_name!(VIP_PORTS => pinned!(
    /// Port number (host order) -> how many VIPs use it. One array read tells a packet to a
    /// port no VIP uses from one that needs the flow and VIP lookups.
    pub static VIP_PORTS: Array<u32> = Array::pinned(VIP_PORT_SLOTS, 0)
));

map_name!(SETTINGS => pinned!(
    /// The front's settings (index 0), written by l4-ctl.
    pub static SETTINGS: Array<FrontSettings> = Array::pinned(1, 0)
));

map_name!(FLOW_GUARD => pinned!(
    /// The new-flow guard's window on this CPU (index 0).
    pub static FLOW_GUARD: PerCpuArray<NewFlowWindow> = PerCpuArray::pinned(1, 0)
));

/// A real's next hop as the FIB gave it (encapsulated reals), kept per CPU: see
/// `encap::next_hop`. Program-private, so not pinned: a new load starts with none.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct NextHop {
    /// When this CPU asks the FIB again (`bpf_ktime_get_ns` time).
    pub expires_ns: u64,
    /// The real's generation it was made for (a reused slot asks anew).
    pub generation: u32,
    pub ifindex: u32,
    /// The front's address toward the real (GUE's outer source), network-order words.
    pub src: [u32; 4],
    /// The egress MTU toward the real.
    pub mtu: u16,
    pub dmac: [u8; 6],
    pub smac: [u8; 6],
    /// The real's encapsulation it was made for: only a GUE lookup asks the FIB for the
    /// outer source, so a real switched from IPIP to GUE must ask anew.
    pub encap: u8,
    /// 1 when the FIB gave a next hop; 0 keeps its "no route" answer for the same time, so
    /// that an unroutable real does not cost a FIB lookup per packet.
    pub found: u8,
}

#[map]
pub static NEXT_HOPS: PerCpuArray<NextHop> = PerCpuArray::with_max_entries(MAX_REALS, 0);

/// Adds one to a global counter (this CPU's copy: no atomics needed).
#[inline(always)]
pub fn count(counter: GlobalCounter) {
    if let Some(c) = GLOBALS.get_ptr_mut(counter as u32) {
        // SAFETY: per-CPU value, only this program on this CPU writes it.
        unsafe { *c += 1 };
    }
}

/// Adds a frame to a VIP's or a real's traffic counters.
#[inline(always)]
pub fn account(stats: &PerCpuArray<TrafficCounters>, index: u32, bytes: u64) {
    if let Some(c) = stats.get_ptr_mut(index) {
        // SAFETY: per-CPU value, only this program on this CPU writes it.
        unsafe {
            (*c).packets += 1;
            (*c).bytes += bytes;
        }
    }
}
