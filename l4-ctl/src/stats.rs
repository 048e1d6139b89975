//! One reading of everything the front counts, with the configuration it belongs to: what
//! `l4-ctl stats`, `real list` and the daemon's `/metrics` all print.

use std::collections::BTreeMap;

use common::{GlobalCounter, RING_SIZE};
use serde::Serialize;

use crate::{Balancer, BalancerError, Encap, Mac, Real, Vip};

/// The counters and configuration of the front at one moment.
#[derive(Clone, Debug, Serialize)]
pub struct Snapshot {
    pub vips: Vec<VipStats>,
    /// Every global counter by its name ([`GlobalCounter::name`]).
    pub global: BTreeMap<&'static str, u64>,
}

/// One VIP.
#[derive(Clone, Debug, Serialize)]
pub struct VipStats {
    #[serde(serialize_with = "as_string")]
    pub vip: Vip,
    pub packets: u64,
    pub bytes: u64,
    pub reals: Vec<RealStats>,
}

/// One real of a VIP.
#[derive(Clone, Debug, Serialize)]
pub struct RealStats {
    pub address: std::net::IpAddr,
    #[serde(serialize_with = "as_string")]
    pub mac: Mac,
    /// How frames reach the real (`l2`, `ipip`, `gue`); `mac` is unused unless `l2`.
    #[serde(serialize_with = "as_string")]
    pub encap: Encap,
    pub weight: u32,
    pub state: RealState,
    /// Fraction of the VIP's active Maglev table that names this real (new flows' share).
    pub table_share: f64,
    pub packets: u64,
    pub bytes: u64,
}

/// Whether a real gets new flows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RealState {
    /// Weight > 0 and healthy: gets new flows.
    Active,
    /// Weight 0 (by the operator): keeps its flows, gets no new ones.
    Drained,
    /// Failed its health check: keeps its flows, gets no new ones, weight kept.
    Down,
}

impl RealState {
    pub fn of(real: &Real) -> Self {
        if real.is_down() {
            RealState::Down
        } else if real.def.weight == 0 {
            RealState::Drained
        } else {
            RealState::Active
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            RealState::Active => "active",
            RealState::Drained => "drained",
            RealState::Down => "down",
        }
    }
}

fn as_string<T: std::fmt::Display, S: serde::Serializer>(v: &T, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(v)
}

/// The reals of one VIP with their counters and table shares.
pub fn real_stats(balancer: &Balancer, vip: &Vip) -> Result<Vec<RealStats>, BalancerError> {
    let table = balancer.active_table(vip)?;
    let mut slots: BTreeMap<u32, u32> = BTreeMap::new();
    for id in table {
        *slots.entry(id).or_default() += 1;
    }
    balancer
        .reals(vip)?
        .iter()
        .map(|r| {
            let traffic = balancer.real_traffic(r.id)?;
            Ok(RealStats {
                address: r.addr(),
                mac: Mac(r.def.mac),
                encap: r.encap(),
                weight: r.def.weight,
                state: RealState::of(r),
                table_share: f64::from(slots.get(&r.id).copied().unwrap_or(0))
                    / f64::from(RING_SIZE),
                packets: traffic.packets,
                bytes: traffic.bytes,
            })
        })
        .collect()
}

/// Reads every counter.
pub fn snapshot(balancer: &Balancer) -> Result<Snapshot, BalancerError> {
    let mut vips = Vec::new();
    for (vip, meta) in balancer.vips()? {
        let traffic = balancer.vip_traffic(meta.vip_id)?;
        vips.push(VipStats {
            vip,
            packets: traffic.packets,
            bytes: traffic.bytes,
            reals: real_stats(balancer, &vip)?,
        });
    }
    let global = GlobalCounter::ALL
        .iter()
        .zip(balancer.global_counters()?)
        .map(|(c, v)| (c.name(), v))
        .collect();
    Ok(Snapshot { vips, global })
}
