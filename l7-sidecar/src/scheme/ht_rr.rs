//! `ht-rr`: hash-table round robin (Kwak & Chung, 2006; the paper's AS-HT_RR). A key hashes
//! to one of `SLOTS` slots; an empty slot is given to the next member in (smooth weighted)
//! round robin order the first time a key lands in it, and keeps that owner afterwards.
//! Balance comes from round robin, affinity from the table.
//!
//! Interpretation (the paper leaves these open):
//! * 65,536 slots, indexed by the top 16 bits of xxh3-64(key): with 16 members each gets
//!   about 4,096 slots, so each owns close to its weighted share of the keys seen so far.
//! * Slots are claimed lock-free: read the slot; if empty, take a round-robin turn and
//!   compare-and-swap it in; if another thread won the race, use its member (the lost turn
//!   only nudges the rotation).
//! * A membership change builds a new, empty table: ownership is not carried over, so every
//!   key may move (the paper does not say what its table did).
//! * The mapping depends on the order in which slots are first used, so two sidecars only
//!   agree if they saw the same first uses: the only dl7 scheme that is not a pure function
//!   of the member list. Given the same sequence of keys, two instances agree exactly.
//!
//! Failover: the owner, then the shared HRW order.

use std::sync::atomic::{AtomicU32, Ordering};

use super::contract::{BuildError, Member, Scheme, key_hash, validate};
use super::failover::Failover;
use super::weighted_turns::WeightedTurns;

/// log2 of the table size.
const SLOT_BITS: u32 = 16;
/// Number of table slots.
pub const SLOTS: usize = 1 << SLOT_BITS;
/// Marks a slot nobody has claimed yet (slots hold member index + 1).
const EMPTY: u32 = 0;

/// Hash table with slots assigned round robin on first use.
#[derive(Debug)]
pub struct HtRr {
    slots: Box<[AtomicU32]>,
    turns: WeightedTurns,
    failover: Failover,
}

impl HtRr {
    /// An empty table for `members`.
    pub fn new(members: &[Member]) -> Result<Self, BuildError> {
        validate(members)?;
        Ok(Self {
            slots: (0..SLOTS).map(|_| AtomicU32::new(EMPTY)).collect(),
            turns: WeightedTurns::new("ht-rr", members)?,
            failover: Failover::new(members),
        })
    }
}

impl Scheme for HtRr {
    fn pick(&self, key: &[u8]) -> usize {
        let slot = &self.slots[(key_hash(key) >> (64 - SLOT_BITS)) as usize];
        match slot.load(Ordering::Acquire) {
            EMPTY => {
                let turn = self.turns.take() as u32 + 1;
                match slot.compare_exchange(EMPTY, turn, Ordering::AcqRel, Ordering::Acquire) {
                    Ok(_) => (turn - 1) as usize,
                    Err(winner) => (winner - 1) as usize,
                }
            }
            owner => (owner - 1) as usize,
        }
    }

    fn candidates(&self, key: &[u8], out: &mut Vec<usize>) {
        self.failover.fill(key, self.pick(key), out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slot_keeps_its_first_owner() {
        let s = HtRr::new(&[Member::new("a", 1), Member::new("b", 1)]).unwrap();
        let first = s.pick(b"/x");
        for _ in 0..10 {
            s.pick(b"/other");
            assert_eq!(s.pick(b"/x"), first);
        }
    }

    #[test]
    fn concurrent_first_use_agrees() {
        let s = std::sync::Arc::new(
            HtRr::new(&[
                Member::new("a", 1),
                Member::new("b", 1),
                Member::new("c", 1),
            ])
            .unwrap(),
        );
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let s = s.clone();
                std::thread::spawn(move || {
                    (0..2000)
                        .map(|i| s.pick(format!("/k{i}").as_bytes()))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let results: Vec<Vec<usize>> = threads.into_iter().map(|t| t.join().unwrap()).collect();
        assert!(results.windows(2).all(|w| w[0] == w[1]));
    }
}
