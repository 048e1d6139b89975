//! Failover order for the schemes that have no natural second choice (`md5`, `ht-rr`,
//! `jump`, `maglev`, `rr`): the owner first, then the other members ranked by unweighted
//! highest random weight of (key, member). A failed member's keys therefore spread evenly
//! over the survivors instead of all landing on one neighbour, and every host computes the
//! same order.

use std::cmp::Reverse;

use super::contract::{Member, key_hash, mix64};

/// Per-member seeds for ranking the non-owners.
#[derive(Debug, Clone)]
pub(crate) struct Failover {
    seeds: Vec<u64>,
}

impl Failover {
    pub(crate) fn new(members: &[Member]) -> Self {
        Self {
            seeds: members
                .iter()
                .map(|m| key_hash(m.name.as_bytes()))
                .collect(),
        }
    }

    /// `out` := `owner`, then every other member by descending score for `key`.
    pub(crate) fn fill(&self, key: &[u8], owner: usize, out: &mut Vec<usize>) {
        let h = key_hash(key);
        out.clear();
        out.push(owner);
        out.extend((0..self.seeds.len()).filter(|&m| m != owner));
        out[1..].sort_unstable_by_key(|&m| (Reverse(mix64(h ^ self.seeds[m])), m));
    }
}
