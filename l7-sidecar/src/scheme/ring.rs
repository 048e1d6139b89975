//! A sorted hash ring (a "continuum"): the data structure behind `mit-ch`, `mod-ch`,
//! `bounded`, `ketama` and `nginx`. Each scheme decides where its points go and how keys are
//! hashed; the ring only sorts the points and finds the first point at or after a hash.

/// Points sorted by position, each owned by a member index.
#[derive(Debug, Clone)]
pub(crate) struct Ring {
    points: Vec<u64>,
    owners: Vec<u32>,
    members: usize,
}

impl Ring {
    /// Sorts `points` (position, member) by position; points at the same position are ordered
    /// by `rank[member]`. With `dedup`, only the first point of each position is kept (what
    /// nginx does); otherwise equal points stay and the first one wins lookups (libketama).
    /// `points` must not be empty and every member index must be below `rank.len()`.
    pub(crate) fn new(mut points: Vec<(u64, u32)>, rank: &[u32], dedup: bool) -> Self {
        debug_assert!(!points.is_empty(), "a ring needs at least one point");
        points.sort_unstable_by_key(|&(pos, m)| (pos, rank[m as usize]));
        if dedup {
            points.dedup_by_key(|p| p.0);
        }
        let (points, owners) = points.into_iter().unzip();
        Self {
            points,
            owners,
            members: rank.len(),
        }
    }

    /// Number of points after deduplication.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.points.len()
    }

    /// Index of the first point at or after `hash`, wrapping to the first point.
    pub(crate) fn position(&self, hash: u64) -> usize {
        let i = self.points.partition_point(|&p| p < hash);
        if i == self.points.len() { 0 } else { i }
    }

    /// The position of the point at index `i`.
    #[cfg(test)]
    pub(crate) fn point(&self, i: usize) -> u64 {
        self.points[i]
    }

    /// The member owning the point at index `i`.
    pub(crate) fn owner(&self, i: usize) -> usize {
        self.owners[i] as usize
    }

    /// The member owning `hash`.
    pub(crate) fn pick(&self, hash: u64) -> usize {
        self.owner(self.position(hash))
    }

    /// Owners of every point once around the ring starting at `hash` (members repeat).
    pub(crate) fn walk(&self, hash: u64) -> impl Iterator<Item = usize> + '_ {
        let start = self.position(hash);
        self.owners[start..]
            .iter()
            .chain(&self.owners[..start])
            .map(|&m| m as usize)
    }

    /// Members in the order they are met walking the ring from `hash`; members that own no
    /// point at all (possible with libketama's rounding) come last, in index order.
    pub(crate) fn candidates(&self, hash: u64, out: &mut Vec<usize>) {
        out.clear();
        let mut seen = vec![false; self.members];
        for m in self.walk(hash) {
            if !seen[m] {
                seen[m] = true;
                out.push(m);
                if out.len() == self.members {
                    return;
                }
            }
        }
        out.extend((0..self.members).filter(|&m| !seen[m]));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring() -> Ring {
        // Member 1 ranks before member 0, so it wins the tie at 20.
        Ring::new(vec![(30, 0), (10, 0), (20, 0), (20, 1)], &[1, 0, 2], false)
    }

    #[test]
    fn first_point_at_or_after_with_wrap() {
        let r = ring();
        assert_eq!(r.position(0), 0);
        assert_eq!(r.position(10), 0);
        assert_eq!(r.position(11), 1);
        assert_eq!(r.pick(15), 1, "tie at 20 goes to the lower rank");
        assert_eq!(r.position(31), 0, "past the last point wraps");
    }

    #[test]
    fn dedup_keeps_the_first_of_equal_points() {
        let r = Ring::new(vec![(20, 0), (20, 1)], &[0, 1], true);
        assert_eq!(r.len(), 1);
        assert_eq!(r.pick(5), 0);
    }

    #[test]
    fn candidates_walk_then_append_pointless_members() {
        let r = ring();
        let mut out = Vec::new();
        r.candidates(25, &mut out);
        assert_eq!(out, vec![0, 1, 2]);
        r.candidates(15, &mut out);
        assert_eq!(out, vec![1, 0, 2]);
    }
}
