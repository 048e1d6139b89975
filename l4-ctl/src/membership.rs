//! The membership a front serves on its metrics listener (`GET /members`): every VIP's reals
//! with their weights, health and forwarding method, and a generation that increases whenever
//! any of it changes, so that a follower (the sidecars, which route by the same member list)
//! can tell a new membership from one it has seen.
//!
//! ```json
//! {"generation":1764644123456,"vips":[{"vip":"10.0.0.100:80/tcp","reals":[
//!   {"address":"10.0.0.11","weight":1,"state":"active","encap":"l2"}]}]}
//! ```
//!
//! The generation is the time of the change in milliseconds since the Unix epoch, or the
//! previous generation plus one when that is larger: it increases across daemon restarts too
//! (unless the clock steps back by more than the restart took).

use std::net::IpAddr;

use serde::Serialize;

use crate::{Balancer, BalancerError, stats::RealState};

/// One VIP's reals.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct VipMembers {
    /// The VIP as l4-ctl writes it (`ADDR:PORT/tcp`).
    pub vip: String,
    pub reals: Vec<Member>,
}

/// One real of a VIP.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Member {
    pub address: IpAddr,
    /// The configured weight (kept while the real is down).
    pub weight: u32,
    /// `active`, `drained` (weight 0) or `down` (failing its health check).
    pub state: RealState,
    /// `l2`, `ipip` or `gue`.
    pub encap: String,
}

/// The membership as served.
#[derive(Debug, Serialize)]
pub struct Membership<'a> {
    pub generation: u64,
    pub vips: &'a [VipMembers],
}

/// Every VIP's reals as the maps hold them now, in address order.
pub fn read(balancer: &Balancer) -> Result<Vec<VipMembers>, BalancerError> {
    let mut vips = Vec::new();
    for (vip, _) in balancer.vips()? {
        let reals = balancer
            .reals(&vip)?
            .iter()
            .map(|r| Member {
                address: r.addr(),
                weight: r.def.weight,
                state: RealState::of(r),
                encap: r.encap().to_string(),
            })
            .collect();
        vips.push(VipMembers {
            vip: vip.to_string(),
            reals,
        });
    }
    Ok(vips)
}

/// Numbers the memberships a daemon observes: the same membership keeps its generation, a
/// different one gets a larger one.
#[derive(Debug, Default)]
pub struct Generations {
    current: Option<(u64, Vec<VipMembers>)>,
}

impl Generations {
    /// The generation of `vips`, observed at `now_ms` (milliseconds since the Unix epoch).
    pub fn observe(&mut self, vips: Vec<VipMembers>, now_ms: u64) -> u64 {
        match &self.current {
            Some((generation, seen)) if *seen == vips => *generation,
            previous => {
                let next = previous
                    .as_ref()
                    .map_or(0, |(g, _)| g.saturating_add(1))
                    .max(now_ms);
                self.current = Some((next, vips));
                next
            }
        }
    }

    /// The membership last observed and its generation.
    pub fn current(&self) -> Option<(u64, &[VipMembers])> {
        self.current.as_ref().map(|(g, v)| (*g, v.as_slice()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(weight: u32) -> Vec<VipMembers> {
        vec![VipMembers {
            vip: "10.0.0.100:80/tcp".to_owned(),
            reals: vec![Member {
                address: "10.0.0.11".parse().unwrap(),
                weight,
                state: RealState::Active,
                encap: "l2".to_owned(),
            }],
        }]
    }

    #[test]
    fn a_generation_changes_only_with_the_membership_and_only_upwards() {
        let mut g = Generations::default();
        let first = g.observe(one(1), 1000);
        assert_eq!(first, 1000);
        assert_eq!(g.observe(one(1), 5000), 1000, "unchanged: same generation");
        assert_eq!(g.observe(one(2), 6000), 6000);
        // A clock that steps back still gives a larger generation.
        assert_eq!(g.observe(one(3), 10), 6001);
        assert_eq!(g.current().map(|(generation, _)| generation), Some(6001));
    }
}
