//! Every map of the program, in one place (their layouts and names live in `common`).
//!
//! All maps are pinned by name: `l4-ctl load` points aya at /sys/fs/bpf/dl7, so a new build of
//! the program reuses the existing maps and no established flow loses its real on an upgrade.

use aya_ebpf::{
    macros::map,
    maps::{Array, DevMap, HashMap, LruHashMap, PerCpuArray},
};
use common::{
    CONN_TABLE_SIZE, ConnValue, FlowKey, GlobalCounter, HealthSpec, MAX_REALS, MAX_TX_PORTS,
    MAX_VIPS, RING_SIZE, RealDef, TrafficCounters, VipAddrKey, VipKey, VipMeta,
};

/// `BPF_F_NO_COMMON_LRU`: one LRU list per CPU, so inserts on different CPUs never contend.
const BPF_F_NO_COMMON_LRU: u32 = 1 << 1;

/// One Maglev table: real id per slot.
pub type Ring = [u32; RING_SIZE as usize];

#[map(name = "DL7_VIPS")]
pub static VIPS: HashMap<VipKey, VipMeta> = HashMap::pinned(MAX_VIPS, 0);

#[map(name = "DL7_VIP_ADDRS")]
pub static VIP_ADDRS: HashMap<VipAddrKey, u32> = HashMap::pinned(MAX_VIPS, 0);

#[map(name = "DL7_RINGS")]
pub static RINGS: Array<Ring> = Array::pinned(MAX_VIPS * 2, 0);

#[map(name = "DL7_REALS")]
pub static REALS: Array<RealDef> = Array::pinned(MAX_REALS, 0);

#[map(name = "DL7_CONNS")]
pub static CONNS: LruHashMap<FlowKey, ConnValue> =
    LruHashMap::pinned(CONN_TABLE_SIZE, BPF_F_NO_COMMON_LRU);

#[map(name = "DL7_TX_PORTS")]
pub static TX_PORTS: DevMap = DevMap::pinned(MAX_TX_PORTS, 0);

#[map(name = "DL7_VIP_STATS")]
pub static VIP_STATS: PerCpuArray<TrafficCounters> = PerCpuArray::pinned(MAX_VIPS, 0);

#[map(name = "DL7_REAL_STATS")]
pub static REAL_STATS: PerCpuArray<TrafficCounters> = PerCpuArray::pinned(MAX_REALS, 0);

#[map(name = "DL7_GLOBALS")]
pub static GLOBALS: PerCpuArray<u64> = PerCpuArray::pinned(GlobalCounter::COUNT, 0);

/// Health-check settings per VIP. The program never reads this map; it lives in the object so
/// that it is created and pinned with the others and survives upgrades like them.
#[map(name = "DL7_HEALTH")]
pub static HEALTH: Array<HealthSpec> = Array::pinned(MAX_VIPS, 0);

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
