//! The partition table: which member holds each replica of each partition, with a version the
//! master raises on every change.
//!
//! Owns: [`MemberId`], [`PartitionTable`] and its balanced assignment
//! ([`PartitionTable::rebalance`]). Replica 0 of a partition is its owner, replicas 1.. its
//! backups, always on distinct members. Per replica slot, the members' counts differ by at most
//! one; a member that leaves is replaced in each row by the next replica (the first live backup
//! becomes the owner), and a slot that must change hands goes, when it can, to a member that
//! already holds the partition, so as little data as possible has to be copied.

use std::collections::BTreeMap;
use std::fmt;

use crate::partition::{PartitionCount, PartitionId};
use crate::spi::ReplicaIndex;

/// The most replicas a partition has: the owner and six backups, as in Hazelcast.
pub const MAX_REPLICAS: usize = 7;

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

/// The replicas of every partition (row index = partition id), with a version.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartitionTable {
    /// Grows with every change the master publishes.
    pub version: u64,
    /// `rows[p][i]`: the member holding replica `i` of partition `p` (0 the owner); `None`
    /// while no member can hold it. Every row has the same length, the table's depth.
    pub rows: Vec<Vec<Option<MemberId>>>,
}

impl PartitionTable {
    /// Version 0, no replicas, `depth` slots per partition (1..=7: owner plus backups).
    pub fn empty(partitions: PartitionCount, depth: usize) -> Self {
        let depth = depth.clamp(1, MAX_REPLICAS);
        Self {
            version: 0,
            rows: vec![vec![None; depth]; partitions.get() as usize],
        }
    }

    /// Replica slots per partition.
    pub fn depth(&self) -> usize {
        self.rows.first().map_or(1, Vec::len)
    }

    /// The owner of `partition`.
    pub fn owner(&self, partition: PartitionId) -> Option<MemberId> {
        self.replica(partition, ReplicaIndex::PRIMARY)
    }

    /// The member holding replica `index` of `partition`.
    pub fn replica(&self, partition: PartitionId, index: ReplicaIndex) -> Option<MemberId> {
        self.rows
            .get(partition.0 as usize)
            .and_then(|row| row.get(index.0 as usize))
            .copied()
            .flatten()
    }

    /// The backups of `partition`, in replica order: `(index, member)`.
    pub fn backups(
        &self,
        partition: PartitionId,
    ) -> impl Iterator<Item = (ReplicaIndex, MemberId)> + '_ {
        self.rows
            .get(partition.0 as usize)
            .into_iter()
            .flat_map(|row| row.iter().enumerate().skip(1))
            .filter_map(|(i, m)| m.map(|m| (ReplicaIndex(i as u8), m)))
    }

    /// Which replica of `partition` `member` holds, if any.
    pub fn replica_index(&self, partition: PartitionId, member: MemberId) -> Option<ReplicaIndex> {
        self.rows
            .get(partition.0 as usize)?
            .iter()
            .position(|m| *m == Some(member))
            .map(|i| ReplicaIndex(i as u8))
    }

    /// How many partitions `member` owns.
    pub fn owned_by(&self, member: MemberId) -> usize {
        self.rows
            .iter()
            .filter(|row| row.first() == Some(&Some(member)))
            .count()
    }

    /// How many backup replicas `member` holds.
    pub fn backups_of(&self, member: MemberId) -> usize {
        self.rows
            .iter()
            .flat_map(|row| row.iter().skip(1))
            .filter(|m| **m == Some(member))
            .count()
    }

    /// Partitions without an owner.
    pub fn unowned(&self) -> usize {
        self.rows
            .iter()
            .filter(|row| row.first().is_none_or(Option::is_none))
            .count()
    }

    /// Owned partitions per member.
    pub fn counts(&self) -> BTreeMap<MemberId, usize> {
        let mut counts = BTreeMap::new();
        for owner in self
            .rows
            .iter()
            .filter_map(|row| row.first().copied().flatten())
        {
            *counts.entry(owner).or_insert(0) += 1;
        }
        counts
    }

    /// Whether every member the table names is one of `members`.
    pub fn names_only(&self, members: &[MemberId]) -> bool {
        self.rows
            .iter()
            .flatten()
            .flatten()
            .all(|m| members.contains(m))
    }

    /// Every slot a member can hold is held by one of `data_members`, and no member holds two
    /// replicas of a partition.
    pub fn is_complete(&self, data_members: &[MemberId]) -> bool {
        let filled = self.depth().min(data_members.len());
        self.rows.iter().all(|row| {
            row.iter().enumerate().all(|(i, m)| match m {
                Some(m) => i < filled && data_members.contains(m) && !row[..i].contains(&Some(*m)),
                None => i >= filled,
            })
        })
    }

    /// Complete, and per slot the members' counts differ by at most 1.
    pub fn is_balanced(&self, data_members: &[MemberId]) -> bool {
        if !self.is_complete(data_members) {
            return false;
        }
        let filled = self.depth().min(data_members.len());
        // When every member holds every partition the last slot is forced by the others: only
        // slots with a choice are checked.
        let free = if self.depth() >= data_members.len() {
            filled.saturating_sub(1).max(1)
        } else {
            filled
        };
        (0..free.min(filled)).all(|slot| {
            let counts: Vec<usize> = data_members
                .iter()
                .map(|m| self.rows.iter().filter(|row| row[slot] == Some(*m)).count())
                .collect();
            let (min, max) = (counts.iter().min(), counts.iter().max());
            matches!((min, max), (Some(min), Some(max)) if max - min <= 1)
        })
    }

    /// The table after a membership change: `data_members` (oldest first; lite members left
    /// out) hold every replica slot they can, balanced per slot. In each row the members that
    /// left are dropped and the rest move up (the first live backup becomes the owner); a slot
    /// that must change hands goes first to a member already in the row (it holds the data),
    /// then to the member furthest below its share. Deterministic; the version is one more than
    /// this table's.
    pub fn rebalance(&self, data_members: &[MemberId]) -> PartitionTable {
        self.assign(data_members, false)
    }

    /// The table after members left (none joined): in each row the first live replica becomes
    /// the owner (so no acknowledged write is lost, even where that leaves owner counts apart),
    /// and the backup slots are refilled, balanced, as in [`PartitionTable::rebalance`].
    pub fn promote(&self, data_members: &[MemberId]) -> PartitionTable {
        self.assign(data_members, true)
    }

    fn assign(&self, data_members: &[MemberId], keep_data: bool) -> PartitionTable {
        let depth = self.depth();
        let mut rows: Vec<Vec<Option<MemberId>>> = self
            .rows
            .iter()
            .map(|row| {
                let mut live: Vec<Option<MemberId>> = row
                    .iter()
                    .flatten()
                    .filter(|m| data_members.contains(m))
                    .map(|m| Some(*m))
                    .collect();
                live.resize(depth, None);
                live
            })
            .collect();
        if !keep_data {
            for slot in 0..depth.min(data_members.len()) {
                assign_slot(&mut rows, slot, data_members);
            }
        } else {
            // Promoting, the owner is the first live replica: an async backup further down may
            // lag.
            // A row that lost every replica gets the member owning the fewest.
            let mut owned: BTreeMap<MemberId, usize> =
                data_members.iter().map(|m| (*m, 0)).collect();
            for owner in rows.iter().filter_map(|row| row[0]) {
                *owned.entry(owner).or_insert(0) += 1;
            }
            for row in rows.iter_mut().filter(|row| row[0].is_none()) {
                if let Some((m, n)) = owned.iter_mut().min_by_key(|(m, n)| (**n, **m)) {
                    *n += 1;
                    row[0] = Some(*m);
                }
            }
            // Members that hold the data keep their order ahead of the refills: a refill copies
            // the partition afterwards (anti-entropy) and must never be promoted before a
            // replica that has it. Balance comes back through migrations (copy first).
            for slot in 1..depth.min(data_members.len()) {
                fill_empty(&mut rows, slot, data_members);
            }
        }
        for row in &mut rows {
            for m in row.iter_mut().skip(data_members.len()) {
                *m = None;
            }
        }
        PartitionTable {
            version: self.version + 1,
            rows,
        }
    }
}

/// Fills slot `slot` of the rows that have none with a member not in the row, the one holding
/// that slot least often first.
fn fill_empty(rows: &mut [Vec<Option<MemberId>>], slot: usize, members: &[MemberId]) {
    let n = members.len().max(1);
    let mut count: BTreeMap<MemberId, usize> = members.iter().map(|m| (*m, 0)).collect();
    for m in rows.iter().filter_map(|row| row[slot]) {
        if let Some(c) = count.get_mut(&m) {
            *c += 1;
        }
    }
    for (p, row) in rows.iter_mut().enumerate() {
        if row[slot].is_some() {
            continue;
        }
        let pick = members
            .iter()
            .enumerate()
            .filter(|(_, m)| !row.contains(&Some(**m)))
            .min_by_key(|(i, m)| (count.get(*m).copied().unwrap_or(0), (i + n - p % n) % n))
            .map(|(_, m)| *m);
        if let Some(m) = pick {
            row[slot] = Some(m);
            if let Some(c) = count.get_mut(&m) {
                *c += 1;
            }
        }
    }
}

/// Gives slot `slot` of every row to one of `members`, balanced: members keep what they hold up
/// to their share (releasing first the rows where another member already holds the data); the
/// rest goes to a member already further down the row, else to the member furthest below its
/// share, with augmenting paths where the rows' constraints leave no member below its share. A
/// member placed here leaves the lower slots of its row; the members it displaces slide down.
fn assign_slot(rows: &mut [Vec<Option<MemberId>>], slot: usize, members: &[MemberId]) {
    let n = members.len();
    let index: BTreeMap<MemberId, usize> =
        members.iter().enumerate().map(|(i, m)| (*m, i)).collect();
    let (base, extra) = (rows.len() / n, rows.len() % n);
    // Members already holding the most at this slot get the `extra` ceilings: fewer moves.
    let mut by_holding: Vec<(usize, usize)> = (0..n)
        .map(|i| {
            let held = rows
                .iter()
                .filter(|row| row[slot] == Some(members[i]))
                .count();
            (i, held)
        })
        .collect();
    by_holding.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    let mut quota = vec![base; n];
    for (i, _) in by_holding.iter().take(extra) {
        quota[*i] += 1;
    }
    let member_at =
        |row: &[Option<MemberId>], at: usize| row[at].and_then(|m| index.get(&m).copied());
    // Keep holders up to their share; rows with no other holder of the data are kept first.
    let mut keep_order: Vec<usize> = (0..rows.len()).collect();
    keep_order.sort_by_key(|p| (rows[*p][slot + 1..].iter().any(Option::is_some), *p));
    let mut held = vec![0usize; n];
    // Every row's member for this slot; rows keep their holder unless an augmenting path moves
    // them.
    let mut choice: Vec<Option<usize>> = vec![None; rows.len()];
    // The first backups of each owner's partitions are spread over the other members (at most
    // an even share per pair), so that the partitions of a member that dies are promoted on
    // all the others alike.
    let mut owned = vec![0usize; n];
    for row in rows.iter() {
        if let Some(o) = member_at(row, 0) {
            owned[o] += 1;
        }
    }
    let pair_quota = |o: usize| owned[o].div_ceil(n.saturating_sub(1).max(1));
    let mut pairs = vec![0usize; n * n];
    for p in keep_order {
        let owner = if slot == 1 {
            member_at(&rows[p], 0)
        } else {
            None
        };
        let kept = member_at(&rows[p], slot).filter(|i| {
            held[*i] < quota[*i] && owner.is_none_or(|o| pairs[o * n + *i] < pair_quota(o))
        });
        if let Some(i) = kept {
            held[i] += 1;
            choice[p] = Some(i);
            if let Some(o) = owner {
                pairs[o * n + i] += 1;
            }
        }
    }
    let eligible = |p: usize, i: usize| !rows[p][..slot].contains(&Some(members[i]));
    for p in 0..rows.len() {
        if choice[p].is_some() {
            continue;
        }
        // Already in the row further down (it has the data), below its share.
        let in_row = (slot..rows[p].len())
            .filter_map(|at| member_at(&rows[p], at))
            .find(|i| eligible(p, *i) && held[*i] < quota[*i]);
        // Backups: spread each owner's partitions over the others (fewest pairs with this
        // row's owner first), so that promotion after a death keeps owners balanced.
        let owner = if slot > 0 {
            member_at(&rows[p], 0)
        } else {
            None
        };
        let pair = |i: usize| owner.map_or(0, |o| pairs[o * n + i]);
        choice[p] = in_row.or_else(|| {
            (0..n)
                .filter(|i| eligible(p, *i) && held[*i] < quota[*i])
                .max_by(|a, b| {
                    pair(*b)
                        .cmp(&pair(*a))
                        .then((quota[*a] - held[*a]).cmp(&(quota[*b] - held[*b])))
                        .then(rotated(*b, p, n).cmp(&rotated(*a, p, n)))
                })
        });
        if let Some(i) = choice[p] {
            held[i] += 1;
            if let Some(o) = owner {
                pairs[o * n + i] += 1;
            }
        }
    }
    for p in 0..rows.len() {
        if choice[p].is_none() && !augment(p, &mut choice, &mut held, &quota, &eligible) {
            // No way to stay within the shares: the least loaded eligible member.
            choice[p] = (0..n)
                .filter(|i| eligible(p, *i))
                .min_by_key(|i| (held[*i], *i));
            if let Some(i) = choice[p] {
                held[i] += 1;
            }
        }
    }
    for (p, row) in rows.iter_mut().enumerate() {
        let Some(i) = choice[p] else { continue };
        let chosen = Some(members[i]);
        if row[slot] == chosen {
            continue;
        }
        let mut rest: Vec<Option<MemberId>> = row[slot..]
            .iter()
            .copied()
            .filter(|m| m.is_some() && *m != chosen)
            .collect();
        rest.insert(0, chosen);
        rest.resize(row.len() - slot, None);
        row[slot..].copy_from_slice(&rest);
    }
}

/// Finds a member for row `start` by moving other rows to other eligible members (an augmenting
/// path ending at a member below its share). True when it found one.
fn augment(
    start: usize,
    choice: &mut [Option<usize>],
    held: &mut [usize],
    quota: &[usize],
    eligible: &dyn Fn(usize, usize) -> bool,
) -> bool {
    let n = quota.len();
    let mut parent: Vec<Option<(usize, usize)>> = vec![None; choice.len()];
    let mut seen = vec![false; choice.len()];
    seen[start] = true;
    let mut queue = std::collections::VecDeque::from([start]);
    while let Some(k) = queue.pop_front() {
        for i in (0..n).filter(|i| eligible(k, *i) && choice[k] != Some(*i)) {
            if held[i] < quota[i] {
                // Walk back: row k takes i, its old member goes to the row before it, ...
                held[i] += 1;
                let (mut row, mut member) = (k, i);
                loop {
                    let previous = choice[row];
                    choice[row] = Some(member);
                    match parent[row] {
                        Some((before, m)) => {
                            debug_assert_eq!(previous, Some(m));
                            row = before;
                            member = m;
                        }
                        None => return true,
                    }
                }
            }
            for j in 0..choice.len() {
                if !seen[j] && choice[j] == Some(i) {
                    seen[j] = true;
                    parent[j] = Some((k, i));
                    queue.push_back(j);
                }
            }
        }
    }
    false
}

/// Member `i`'s place in a rotation that starts at `partition`: spreads ties over members.
fn rotated(i: usize, partition: usize, n: usize) -> usize {
    (i + n - partition % n) % n
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn ids(n: u64) -> Vec<MemberId> {
        (1..=n).map(MemberId).collect()
    }

    fn table(p: u32, depth: usize) -> PartitionTable {
        PartitionTable::empty(PartitionCount::new(p).unwrap(), depth)
    }

    fn moved_owners(a: &PartitionTable, b: &PartitionTable) -> usize {
        a.rows
            .iter()
            .zip(&b.rows)
            .filter(|(x, y)| x[0] != y[0])
            .count()
    }

    fn sorted_counts(t: &PartitionTable) -> Vec<usize> {
        let mut c: Vec<usize> = t.counts().into_values().collect();
        c.sort_unstable();
        c
    }

    #[test]
    fn owners_are_spread_evenly() {
        let t = table(271, 1).rebalance(&ids(1));
        assert_eq!(t.owned_by(MemberId(1)), 271);
        assert_eq!(
            sorted_counts(&table(271, 1).rebalance(&ids(2))),
            vec![135, 136]
        );
        assert_eq!(
            sorted_counts(&table(271, 2).rebalance(&ids(3))),
            vec![90, 90, 91]
        );
        assert!(table(271, 3).rebalance(&ids(7)).is_balanced(&ids(7)));
    }

    #[test]
    fn backups_sit_on_other_members_balanced() {
        for depth in 1..=MAX_REPLICAS {
            for n in 1..=8u64 {
                let t = table(271, depth).rebalance(&ids(n));
                assert!(t.is_balanced(&ids(n)), "depth {depth}, {n} members");
                for row in &t.rows {
                    let held: Vec<_> = row.iter().flatten().collect();
                    assert_eq!(held.len(), depth.min(n as usize));
                }
            }
        }
        let t = table(271, 2).rebalance(&ids(3));
        let backups: Vec<usize> = ids(3).iter().map(|m| t.backups_of(*m)).collect();
        assert!(backups.iter().all(|b| (90..=91).contains(b)), "{backups:?}");
    }

    #[test]
    fn the_first_live_backup_becomes_the_owner() {
        let three = table(271, 3).rebalance(&ids(3));
        let left = [MemberId(1), MemberId(3)];
        let two = three.promote(&left);
        assert!(two.is_balanced(&left));
        for (before, after) in three.rows.iter().zip(&two.rows) {
            // Every new owner already held the partition: nothing acknowledged is lost.
            assert!(before.contains(&after[0]), "{before:?} -> {after:?}");
            if before[0] == Some(MemberId(2)) {
                assert_eq!(before[1], after[0], "the first backup is promoted");
            }
        }
    }

    #[test]
    fn a_kill_moves_owners_only_to_members_holding_the_data() {
        for n in 2..=6u64 {
            let t = table(271, 2).rebalance(&ids(n));
            let rest: Vec<MemberId> = ids(n).into_iter().filter(|m| m.0 != 2).collect();
            let after = t.promote(&rest);
            let counts = sorted_counts(&after);
            assert!(
                counts[counts.len() - 1] - counts[0] <= 2,
                "{n} members: {counts:?}"
            );
            assert!(after.rebalance(&rest).is_balanced(&rest));
            for (before, row) in t.rows.iter().zip(&after.rows) {
                assert!(before.contains(&row[0]), "{n}: {before:?} -> {row:?}");
            }
        }
    }

    #[test]
    fn after_joins_one_at_a_time_a_kill_leaves_owners_a_few_apart() {
        for depth in [2usize, 3] {
            let mut t = table(271, depth);
            for n in 1..=5u64 {
                t = t.rebalance(&ids(n));
                if n < 2 {
                    continue;
                }
                for dead in 1..=n {
                    let rest: Vec<MemberId> = ids(n).into_iter().filter(|m| m.0 != dead).collect();
                    let c = sorted_counts(&t.promote(&rest));
                    assert!(
                        c[c.len() - 1] - c[0] <= 2 * n as usize,
                        "depth {depth}, {n} members, {dead} dies: {c:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn a_join_moves_only_the_newcomers_share_of_owners() {
        let two = table(271, 2).rebalance(&ids(2));
        let three = two.rebalance(&ids(3));
        assert!(three.is_balanced(&ids(3)));
        assert_eq!(moved_owners(&two, &three), three.owned_by(MemberId(3)));
        assert_eq!(three.owned_by(MemberId(3)), 90);
        assert_eq!(three.version, two.version + 1);
    }

    #[test]
    fn rebalancing_is_deterministic() {
        let t = table(271, 3).rebalance(&ids(3));
        assert_eq!(t.rebalance(&ids(4)), t.rebalance(&ids(4)));
        let none = PartitionTable {
            version: 0,
            rows: Vec::new(),
        };
        assert!(none.rebalance(&ids(2)).rows.is_empty());
        assert_eq!(table(5, 2).rebalance(&[]).unowned(), 5);
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
        for (p, depth) in [(1u32, 1), (7, 2), (271, 1), (271, 2), (271, 4)] {
            let mut t = table(p, depth);
            let mut members: Vec<MemberId> = Vec::new();
            let mut next = 1;
            for _ in 0..300 {
                let leaving = !members.is_empty() && (members.len() >= 8 || rand() % 2 == 1);
                if leaving {
                    let i = (rand() % members.len() as u64) as usize;
                    members.remove(i);
                } else {
                    members.push(MemberId(next));
                    next += 1;
                }
                let before = t.clone();
                t = if leaving {
                    before.promote(&members)
                } else {
                    before.rebalance(&members)
                };
                if leaving {
                    // Promotion keeps the data; balance comes back with the next rebalance.
                    t = t.rebalance(&members);
                }
                assert!(t.is_balanced(&members), "{members:?} {before:?} -> {t:?}");
                if leaving && depth > 1 && members.len() > 1 {
                    let promoted = before.promote(&members);
                    for (b, a) in before.rows.iter().zip(&promoted.rows) {
                        let had_live_replica = b.iter().flatten().any(|m| members.contains(m));
                        if had_live_replica {
                            assert!(b.contains(&a[0]), "owner without the data: {b:?} -> {a:?}");
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn promotion_keeps_the_replicas_that_hold_data_ahead_of_refills() {
        // Deaths noticed one after the other: a member refilled after the first must never be
        // promoted ahead of an older replica after the second.
        let t = table(271, 4).rebalance(&ids(6));
        let first: Vec<MemberId> = ids(6)
            .into_iter()
            .filter(|m| m.0 != 2 && m.0 != 4)
            .collect();
        let once = t.promote(&first);
        let rest: Vec<MemberId> = first.iter().copied().filter(|m| m.0 != 5).collect();
        let twice = once.promote(&rest);
        for (before, after) in t.rows.iter().zip(&twice.rows) {
            let kept: Vec<MemberId> = before
                .iter()
                .flatten()
                .copied()
                .filter(|m| rest.contains(m))
                .collect();
            let front: Vec<MemberId> = after.iter().flatten().copied().take(kept.len()).collect();
            assert_eq!(front, kept, "{before:?} -> {after:?}");
        }
        assert!(twice.is_complete(&rest));
    }
}
