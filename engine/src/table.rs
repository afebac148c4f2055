//! The partition table: which member owns each partition, with a version the master raises on
//! every change.
//!
//! Owns: [`MemberId`], [`PartitionTable`] and its balanced assignment ([`PartitionTable::rebalance`]):
//! owner counts differ by at most one, and as few partitions as possible change owner.

use std::collections::BTreeMap;
use std::fmt;

use crate::partition::{PartitionCount, PartitionId};

/// A member's identity in the cluster: random at start, never reused.
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    rkyv::Archive,
    rkyv::Serialize,
    rkyv::Deserialize,
)]
pub struct MemberId(pub u64);

impl fmt::Display for MemberId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// The owner of every partition (index = partition id), with a version.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartitionTable {
    /// Grows with every change the master publishes.
    pub version: u64,
    /// The owner of each partition; `None` while no data member holds it.
    pub owners: Vec<Option<MemberId>>,
}

impl PartitionTable {
    /// Version 0, no owners.
    pub fn empty(partitions: PartitionCount) -> Self {
        Self {
            version: 0,
            owners: vec![None; partitions.get() as usize],
        }
    }

    /// The owner of `partition`.
    pub fn owner(&self, partition: PartitionId) -> Option<MemberId> {
        self.owners.get(partition.0 as usize).copied().flatten()
    }

    /// How many partitions `member` owns.
    pub fn owned_by(&self, member: MemberId) -> usize {
        self.owners.iter().filter(|o| **o == Some(member)).count()
    }

    /// Owned partitions per member.
    pub fn counts(&self) -> BTreeMap<MemberId, usize> {
        let mut counts = BTreeMap::new();
        for owner in self.owners.iter().flatten() {
            *counts.entry(*owner).or_insert(0) += 1;
        }
        counts
    }

    /// Every partition is owned by one of `data_members`, and their counts differ by at most 1.
    pub fn is_balanced(&self, data_members: &[MemberId]) -> bool {
        if data_members.is_empty() {
            return self.owners.iter().all(Option::is_none);
        }
        if !self
            .owners
            .iter()
            .all(|o| o.is_some_and(|m| data_members.contains(&m)))
        {
            return false;
        }
        let counts: Vec<usize> = data_members.iter().map(|m| self.owned_by(*m)).collect();
        let (min, max) = (counts.iter().min(), counts.iter().max());
        matches!((min, max), (Some(min), Some(max)) if max - min <= 1)
    }

    /// The table after a membership change: `data_members` (oldest first; lite members left
    /// out) own every partition, balanced, with as few partitions as possible changing owner.
    /// Deterministic; the version is one more than this table's.
    pub fn rebalance(&self, data_members: &[MemberId]) -> PartitionTable {
        let version = self.version + 1;
        let n = data_members.len();
        if n == 0 {
            return PartitionTable {
                version,
                owners: vec![None; self.owners.len()],
            };
        }
        let p = self.owners.len();
        let (base, extra) = (p / n, p % n);
        // Members already holding the most get the `extra` ceilings: fewer moves.
        let mut by_holding: Vec<(usize, usize)> = data_members
            .iter()
            .enumerate()
            .map(|(i, m)| (i, self.owned_by(*m)))
            .collect();
        by_holding.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        let mut quota = vec![base; n];
        for (i, _) in by_holding.iter().take(extra) {
            quota[*i] += 1;
        }
        let index: BTreeMap<MemberId, usize> = data_members
            .iter()
            .enumerate()
            .map(|(i, m)| (*m, i))
            .collect();
        let mut held = vec![0usize; n];
        let mut owners: Vec<Option<MemberId>> = vec![None; p];
        // Keep owners that are still data members, up to their quota (in partition order).
        for (partition, owner) in self.owners.iter().enumerate() {
            if let Some(i) = owner.and_then(|m| index.get(&m).copied()) {
                if held[i] < quota[i] {
                    held[i] += 1;
                    owners[partition] = Some(data_members[i]);
                }
            }
        }
        // The rest go to whoever is furthest below quota (oldest first on ties).
        for owner in owners.iter_mut().filter(|o| o.is_none()) {
            let next = (0..n).filter(|i| held[*i] < quota[*i]).max_by(|a, b| {
                (quota[*a] - held[*a])
                    .cmp(&(quota[*b] - held[*b]))
                    .then(b.cmp(a))
            });
            if let Some(i) = next {
                held[i] += 1;
                *owner = Some(data_members[i]);
            }
        }
        PartitionTable { version, owners }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn ids(n: u64) -> Vec<MemberId> {
        (1..=n).map(MemberId).collect()
    }

    fn table(p: u32) -> PartitionTable {
        PartitionTable::empty(PartitionCount::new(p).unwrap())
    }

    fn moved(a: &PartitionTable, b: &PartitionTable) -> usize {
        a.owners
            .iter()
            .zip(&b.owners)
            .filter(|(x, y)| x != y)
            .count()
    }

    #[test]
    fn owners_are_spread_evenly() {
        let t = table(271).rebalance(&ids(1));
        assert_eq!(t.owned_by(MemberId(1)), 271);
        let t = table(271).rebalance(&ids(2));
        let mut c: Vec<usize> = t.counts().into_values().collect();
        c.sort_unstable();
        assert_eq!(c, vec![135, 136]);
        let t = table(271).rebalance(&ids(3));
        let mut c: Vec<usize> = t.counts().into_values().collect();
        c.sort_unstable();
        assert_eq!(c, vec![90, 90, 91]);
        assert!(table(271).rebalance(&ids(7)).is_balanced(&ids(7)));
    }

    #[test]
    fn a_join_moves_only_the_newcomers_share() {
        let two = table(271).rebalance(&ids(2));
        let three = two.rebalance(&ids(3));
        assert!(three.is_balanced(&ids(3)));
        assert_eq!(moved(&two, &three), three.owned_by(MemberId(3)));
        assert_eq!(three.owned_by(MemberId(3)), 90);
        assert_eq!(three.version, two.version + 1);
    }

    #[test]
    fn a_leave_moves_only_the_leavers_partitions() {
        let three = table(271).rebalance(&ids(3));
        let left = [MemberId(1), MemberId(3)];
        let two = three.rebalance(&left);
        assert!(two.is_balanced(&left));
        for (before, after) in three.owners.iter().zip(&two.owners) {
            if *before != Some(MemberId(2)) {
                assert_eq!(before, after);
            }
        }
    }

    #[test]
    fn rebalancing_is_deterministic() {
        let t = table(271).rebalance(&ids(3));
        assert_eq!(t.rebalance(&ids(4)), t.rebalance(&ids(4)));
        let none = PartitionTable {
            version: 0,
            owners: Vec::new(),
        };
        assert!(none.rebalance(&ids(2)).owners.is_empty());
        assert!(table(5).rebalance(&[]).owners.iter().all(Option::is_none));
    }

    #[test]
    fn random_joins_and_leaves_stay_balanced() {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut rand = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for p in [1u32, 7, 271] {
            let mut t = table(p);
            let mut members: Vec<MemberId> = Vec::new();
            let mut next = 1;
            for _ in 0..500 {
                if members.len() < 8 && (members.is_empty() || rand() % 2 == 0) {
                    members.push(MemberId(next));
                    next += 1;
                } else {
                    let i = (rand() % members.len() as u64) as usize;
                    members.remove(i);
                }
                let before = t.clone();
                t = before.rebalance(&members);
                assert!(t.is_balanced(&members), "{members:?} {t:?}");
                let share = (p as usize).div_ceil(members.len().max(1));
                for (b, a) in before.owners.iter().zip(&t.owners) {
                    if let Some(m) = b {
                        if members.contains(m) && before.owned_by(*m) < share {
                            assert_eq!(a, b, "an owner below its share kept its partition");
                        }
                    }
                }
            }
        }
    }
}
