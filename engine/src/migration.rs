//! Planning partition migrations, sans IO: the master's list of partition rows to move and the
//! migrations in flight.
//!
//! Owns: [`Migration`] (one partition's move from its current row of replicas to its target
//! row), [`Planner`] (the target table, the migrations in flight, the progress) and
//! [`MigrationProgress`].
//!
//! A migration moves a whole row at once, copy first: the partition's owner (the **source**)
//! streams the partition to every member that takes a replica slot it does not hold yet (the
//! **destinations**), and only when all of them installed it does the master publish the new
//! row; members that leave the row drop their data when they see it. So a partition never has
//! fewer live replicas than before its migration started. One migration per partition at a
//! time; at most `parallel` at once.
//!
//! The planner never touches the table: the master applies a finished migration's row (see
//! `corecast-net`'s membership machine) and feeds the planner members that left.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use crate::partition::PartitionId;
use crate::spi::ReplicaIndex;
use crate::table::{MemberId, PartitionTable};

/// How long a partition whose migration failed waits before it is tried again.
pub const RETRY_DELAY: Duration = Duration::from_millis(500);

/// One partition moving from its current row of replicas to its target row.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Migration {
    /// The master's number for it.
    pub id: u64,
    /// The partition.
    pub partition: PartitionId,
    /// The current owner, which streams the partition.
    pub source: MemberId,
    /// The row when the migration started (slot 0 the owner).
    pub from: Vec<Option<MemberId>>,
    /// The row once it is done.
    pub to: Vec<Option<MemberId>>,
    /// When it started.
    pub started: Instant,
}

impl Migration {
    /// The members that need a copy: each member of the target row at a slot it does not hold
    /// now, except the source (it keeps its data and versions when it steps down to a backup).
    pub fn destinations(&self) -> Vec<(MemberId, ReplicaIndex)> {
        destinations(self.source, &self.from, &self.to)
    }

    /// Every member taking part: the source and the destinations.
    pub fn participants(&self) -> Vec<MemberId> {
        let mut all = vec![self.source];
        all.extend(self.destinations().into_iter().map(|(m, _)| m));
        all
    }
}

fn destinations(
    source: MemberId,
    from: &[Option<MemberId>],
    to: &[Option<MemberId>],
) -> Vec<(MemberId, ReplicaIndex)> {
    to.iter()
        .enumerate()
        .filter_map(|(i, m)| m.map(|m| (i, m)))
        .filter(|(i, m)| *m != source && from.get(*i).copied().flatten() != Some(*m))
        .map(|(i, m)| (m, ReplicaIndex(i as u8)))
        .collect()
}

/// How far the current rebalance has come, as cluster status shows it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MigrationProgress {
    /// Partitions still to move (not started yet).
    pub planned: u64,
    /// Migrations running.
    pub in_flight: u64,
    /// Migrations committed since the cluster started.
    pub done: u64,
    /// Migrations rolled back since the cluster started.
    pub failed: u64,
}

/// What [`Planner::start`] decided.
#[derive(Debug, Default)]
pub struct Started {
    /// Migrations that copy data: send each to its source.
    pub copies: Vec<Migration>,
    /// Rows that change without any copy (no member takes a new slot): apply them at once.
    pub direct: Vec<(PartitionId, Vec<Option<MemberId>>)>,
}

/// A rebalance in progress: when it started and how much it moves.
#[derive(Clone, Copy, Debug)]
struct Round {
    started: Instant,
    planned: usize,
    done: usize,
    failed: usize,
}

/// The end of a rebalance, for the master's log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RoundDone {
    /// Rows that differed from the target when it was planned.
    pub planned: usize,
    /// Partitions it moved.
    pub moved: usize,
    /// Migrations rolled back on the way (and planned again).
    pub failed: usize,
    /// How long it took.
    pub took: Duration,
}

/// The master's migration planner.
#[derive(Debug, Default)]
pub struct Planner {
    target: Option<PartitionTable>,
    in_flight: BTreeMap<u32, Migration>,
    retry_after: BTreeMap<u32, Instant>,
    next_id: u64,
    done: u64,
    failed: u64,
    round: Option<Round>,
}

impl Planner {
    /// A planner with nothing to do.
    pub fn new() -> Self {
        Self::default()
    }

    /// Plans the table `data_members` (oldest first, lite and leaving members left out) should
    /// reach from `current`: balanced per slot, moving as little as it can. Returns how many rows
    /// differ from it.
    pub fn plan(
        &mut self,
        current: &PartitionTable,
        data_members: &[MemberId],
        now: Instant,
    ) -> usize {
        let target = current.rebalance(data_members);
        self.target = Some(target);
        self.retry_after.clear();
        let differ = self.remaining(current) + self.in_flight.len();
        self.round = (differ > 0).then_some(Round {
            started: now,
            planned: differ,
            done: 0,
            failed: 0,
        });
        differ
    }

    /// The target row of `partition`, if a plan exists.
    pub fn target_row(&self, partition: PartitionId) -> Option<&[Option<MemberId>]> {
        self.target
            .as_ref()
            .and_then(|t| t.rows.get(partition.0 as usize))
            .map(Vec::as_slice)
    }

    /// Rows of `current` that differ from the target and are not moving.
    pub fn remaining(&self, current: &PartitionTable) -> usize {
        let Some(target) = &self.target else {
            return 0;
        };
        current
            .rows
            .iter()
            .zip(&target.rows)
            .enumerate()
            .filter(|(p, (now, want))| now != want && !self.in_flight.contains_key(&(*p as u32)))
            .count()
    }

    /// The migration of `partition` in flight, if any.
    pub fn in_flight(&self, partition: PartitionId) -> Option<&Migration> {
        self.in_flight.get(&partition.0)
    }

    /// Starts migrations for rows that differ from the target, up to `parallel` in flight; rows
    /// that need no copy come back as `direct`.
    pub fn start(&mut self, current: &PartitionTable, parallel: usize, now: Instant) -> Started {
        let mut started = Started::default();
        let Some(target) = &self.target else {
            return started;
        };
        for (p, (row, want)) in current.rows.iter().zip(&target.rows).enumerate() {
            if self.in_flight.len() >= parallel.max(1) {
                break;
            }
            let key = p as u32;
            if row == want
                || self.in_flight.contains_key(&key)
                || self.retry_after.get(&key).is_some_and(|t| *t > now)
            {
                continue;
            }
            let partition = PartitionId(key);
            match row.first().copied().flatten() {
                Some(source) if !destinations(source, row, want).is_empty() => {
                    self.next_id += 1;
                    let m = Migration {
                        id: self.next_id,
                        partition,
                        source,
                        from: row.clone(),
                        to: want.clone(),
                        started: now,
                    };
                    self.in_flight.insert(key, m.clone());
                    started.copies.push(m);
                }
                _ => {
                    started.direct.push((partition, want.clone()));
                    if let Some(round) = &mut self.round {
                        round.done += 1;
                    }
                    self.done += 1;
                }
            }
        }
        started
    }

    /// Migration `id` of `partition` ends: committed (`ok`), or failed (its copy failed, or its
    /// row changed under it). Returns the migration if it was in flight; a failed one is tried
    /// again after [`RETRY_DELAY`].
    pub fn finish(
        &mut self,
        id: u64,
        partition: PartitionId,
        ok: bool,
        now: Instant,
    ) -> Option<Migration> {
        if self.in_flight.get(&partition.0).map(|m| m.id) != Some(id) {
            return None;
        }
        let m = self.in_flight.remove(&partition.0)?;
        if ok {
            self.done += 1;
            if let Some(round) = &mut self.round {
                round.done += 1;
            }
        } else {
            self.fail(partition, now);
        }
        Some(m)
    }

    fn fail(&mut self, partition: PartitionId, now: Instant) {
        self.failed += 1;
        if let Some(round) = &mut self.round {
            round.failed += 1;
        }
        self.retry_after.insert(partition.0, now + RETRY_DELAY);
    }

    /// Only `live` members remain: the migrations that involve any other member are dropped and
    /// returned (their participants roll back).
    pub fn members_left(&mut self, live: &[MemberId], now: Instant) -> Vec<Migration> {
        let live: BTreeSet<MemberId> = live.iter().copied().collect();
        let gone: Vec<u32> = self
            .in_flight
            .iter()
            .filter(|(_, m)| {
                m.participants().iter().any(|p| !live.contains(p))
                    || m.to.iter().flatten().any(|p| !live.contains(p))
            })
            .map(|(p, _)| *p)
            .collect();
        self.drop_all(&gone, now)
    }

    /// Migrations running longer than `timeout`: dropped and returned (to roll back).
    pub fn expired(&mut self, now: Instant, timeout: Duration) -> Vec<Migration> {
        let late: Vec<u32> = self
            .in_flight
            .iter()
            .filter(|(_, m)| now.duration_since(m.started) > timeout)
            .map(|(p, _)| *p)
            .collect();
        self.drop_all(&late, now)
    }

    fn drop_all(&mut self, partitions: &[u32], now: Instant) -> Vec<Migration> {
        let mut out = Vec::new();
        for p in partitions {
            if let Some(m) = self.in_flight.remove(p) {
                self.fail(m.partition, now);
                out.push(m);
            }
        }
        out
    }

    /// Every migration in flight is abandoned (this member stops being the master).
    pub fn clear(&mut self) -> Vec<Migration> {
        self.target = None;
        self.round = None;
        std::mem::take(&mut self.in_flight).into_values().collect()
    }

    /// The rebalance ended (nothing left to move or moving): its summary, once.
    pub fn round_done(&mut self, current: &PartitionTable, now: Instant) -> Option<RoundDone> {
        let round = self.round?;
        if !self.in_flight.is_empty() || self.remaining(current) > 0 {
            return None;
        }
        self.round = None;
        Some(RoundDone {
            planned: round.planned,
            moved: round.done,
            failed: round.failed,
            took: now.duration_since(round.started),
        })
    }

    /// Progress as status shows it.
    pub fn progress(&self, current: &PartitionTable) -> MigrationProgress {
        MigrationProgress {
            planned: self.remaining(current) as u64,
            in_flight: self.in_flight.len() as u64,
            done: self.done,
            failed: self.failed,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::partition::PartitionCount;

    fn ids(n: u64) -> Vec<MemberId> {
        (1..=n).map(MemberId).collect()
    }

    /// Runs every migration to completion in order, applying rows as the master would, and
    /// checks after each step that no row has fewer replicas than before it started moving.
    fn drive(planner: &mut Planner, table: &mut PartitionTable, parallel: usize) -> usize {
        let now = Instant::now();
        let mut moved = 0;
        for _ in 0..10_000 {
            let started = planner.start(table, parallel, now);
            if started.copies.is_empty() && started.direct.is_empty() {
                break;
            }
            for (p, row) in started.direct {
                table.rows[p.0 as usize] = row;
            }
            for m in started.copies {
                assert!(planner.in_flight(m.partition).is_some());
                let before = m.from.iter().flatten().count();
                let after = m.to.iter().flatten().count();
                assert!(after >= before.min(m.to.len()), "{m:?}");
                // No member holds two replicas of the row, before or after.
                let set: BTreeSet<_> = m.to.iter().flatten().collect();
                assert_eq!(set.len(), after);
                let done = planner.finish(m.id, m.partition, true, now).unwrap();
                table.rows[m.partition.0 as usize] = done.to;
                table.version += 1;
                moved += 1;
            }
        }
        moved
    }

    #[test]
    fn joins_are_planned_into_a_balanced_table_one_migration_per_partition() {
        for depth in 1..=3 {
            let p = PartitionCount::new(271).unwrap();
            let mut table = PartitionTable::empty(p, depth).promote(&ids(3));
            table = table.rebalance(&ids(3));
            assert!(table.is_balanced(&ids(3)));
            let mut planner = Planner::new();
            let now = Instant::now();
            let differ = planner.plan(&table, &ids(6), now);
            assert!(differ > 0);
            // At most `parallel` in flight, never two for one partition.
            let started = planner.start(&table, 4, now);
            assert_eq!(started.copies.len(), 4);
            let parts: BTreeSet<_> = started.copies.iter().map(|m| m.partition).collect();
            assert_eq!(parts.len(), 4);
            assert!(planner.start(&table, 4, now).copies.is_empty());
            for m in started.copies {
                let done = planner.finish(m.id, m.partition, true, now).unwrap();
                table.rows[m.partition.0 as usize] = done.to;
            }
            drive(&mut planner, &mut table, 4);
            assert!(table.is_balanced(&ids(6)), "depth {depth}");
            assert_eq!(planner.remaining(&table), 0);
            assert!(planner.round_done(&table, now).is_some());
            assert_eq!(planner.progress(&table).done as usize, differ);
        }
    }

    #[test]
    fn a_new_owner_is_a_destination_and_a_demoted_owner_keeps_its_data() {
        let (a, b, c) = (MemberId(1), MemberId(2), MemberId(3));
        let from = vec![Some(a), Some(b)];
        assert_eq!(
            destinations(a, &from, &[Some(c), Some(b)]),
            vec![(c, ReplicaIndex(0))]
        );
        // A backup taking over as owner gets a full copy; the old owner becomes its backup
        // without one.
        assert_eq!(
            destinations(a, &from, &[Some(b), Some(a)]),
            vec![(b, ReplicaIndex(0))]
        );
        assert_eq!(
            destinations(a, &from, &[Some(a), Some(c)]),
            vec![(c, ReplicaIndex(1))]
        );
    }

    #[test]
    fn a_failed_migration_is_retried_after_a_delay_and_counted() {
        let p = PartitionCount::new(16).unwrap();
        let table = PartitionTable::empty(p, 2).promote(&ids(1));
        let mut planner = Planner::new();
        let now = Instant::now();
        planner.plan(&table, &ids(2), now);
        let first = planner.start(&table, 1, now).copies.pop().unwrap();
        assert!(planner
            .finish(first.id + 100, first.partition, true, now)
            .is_none());
        planner
            .finish(first.id, first.partition, false, now)
            .unwrap();
        let next = planner.start(&table, 1, now).copies.pop().unwrap();
        assert_ne!(next.partition, first.partition, "the failed one waits");
        planner.finish(next.id, next.partition, true, now).unwrap();
        let later = now + RETRY_DELAY + Duration::from_millis(1);
        let again = planner.start(&table, 16, later);
        assert!(again.copies.iter().any(|m| m.partition == first.partition));
        assert_eq!(planner.progress(&table).failed, 1);
    }

    #[test]
    fn migrations_with_a_member_that_left_are_dropped() {
        let p = PartitionCount::new(64).unwrap();
        let table = PartitionTable::empty(p, 2)
            .promote(&ids(2))
            .rebalance(&ids(2));
        let mut planner = Planner::new();
        let now = Instant::now();
        planner.plan(&table, &ids(4), now);
        let started = planner.start(&table, 64, now).copies;
        let involving_3 = started
            .iter()
            .filter(|m| {
                m.participants().contains(&MemberId(3)) || m.to.contains(&Some(MemberId(3)))
            })
            .count();
        assert!(involving_3 > 0);
        let dropped = planner.members_left(&[MemberId(1), MemberId(2), MemberId(4)], now);
        assert_eq!(dropped.len(), involving_3);
        let late = planner.expired(now + Duration::from_secs(61), Duration::from_secs(60));
        assert_eq!(late.len(), started.len() - involving_3);
        assert_eq!(planner.progress(&table).in_flight, 0);
    }

    #[test]
    fn a_leaving_member_is_planned_out_of_every_row() {
        let p = PartitionCount::new(271).unwrap();
        let mut table = PartitionTable::empty(p, 2)
            .promote(&ids(3))
            .rebalance(&ids(3));
        let mut planner = Planner::new();
        planner.plan(&table, &ids(2), Instant::now());
        drive(&mut planner, &mut table, 3);
        assert_eq!(table.owned_by(MemberId(3)), 0);
        assert_eq!(table.backups_of(MemberId(3)), 0);
        assert!(table.is_balanced(&ids(2)));
    }
}
