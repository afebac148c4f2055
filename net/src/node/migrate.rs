//! Migrations on one shard: streaming a partition as its source, taking it in as a destination,
//! and committing or rolling back.
//!
//! The master sends `MigrationStart` to the partition's owner (shard 0, which hands it to the
//! partition's shard). The source **holds** the partition (its operations wait and retry:
//! `is_local` is false while it moves, inbound requests get `Migrating`), runs the services'
//! `before_migration`, takes a snapshot per destination (the partition is held, so they agree)
//! and streams each in chunks of `migration.chunk-kib`, `migration.window` unacknowledged at
//! once, to the destination's shard for the partition. The destination runs `before_migration`
//! on the first chunk, installs the snapshot after the last one and acks it; then the source
//! tells the master, which publishes the new row.
//!
//! A migration commits on each member when its table shows the migration's row: the source lets
//! the partition go (its operations now go to the new owner) and drops the data if it keeps no
//! replica; the destination keeps what it installed. A destination that becomes the owner took
//! the owner's versions of every slot, so it starts no new epoch and its backups stay in step.
//! A migration rolls back on the master's `MigrationRollback`, on a failed stream (source), when
//! the master that ran it is no longer the master, or after twice `migration.timeout-millis`.

use std::collections::VecDeque;

use corecast_engine::extension::MigrationPhase;
use corecast_engine::migration::Migration;
use corecast_engine::spi::{MigrationEndpoint, MigrationEvent};

use super::*;
use crate::membership::{row_from_wire, row_to_wire};
use crate::replica::{decode_chunk, encode_chunk, ChunkHead, MIGRATION};

/// Bytes queued on one connection past which a stream waits for its oldest ack before it
/// queues more (several streams may share a connection).
const STREAM_QUEUE: usize = 16 << 20;

/// This member streams the partition away: it is held until the migration ends.
pub(super) struct Outgoing {
    id: u64,
    master: MemberId,
    to: Vec<Option<MemberId>>,
    started: Instant,
}

/// This member takes the partition in.
pub(super) struct Incoming {
    id: u64,
    master: MemberId,
    to: Vec<Option<MemberId>>,
    current: Option<ReplicaIndex>,
    new: ReplicaIndex,
    buf: Bytes,
    total: usize,
    next: u32,
    installed: bool,
    started: Instant,
}

impl Incoming {
    /// The destination's view of this migration, for its callbacks.
    fn event(&self, partition: PartitionId) -> MigrationEvent {
        MigrationEvent {
            partition,
            endpoint: MigrationEndpoint::Destination,
            current_replica: self.current,
            new_replica: Some(self.new),
        }
    }
}

/// The migrations of one shard's partitions, by partition.
#[derive(Default)]
pub(super) struct Migrations {
    outgoing: AHashMap<u32, Outgoing>,
    incoming: AHashMap<u32, Incoming>,
}

impl Migrations {
    /// Whether a migration is bringing `partition` to this shard.
    pub(super) fn has_incoming(&self, partition: PartitionId) -> bool {
        self.incoming.contains_key(&partition.0)
    }

    /// Whether a migration brought `partition` to this shard and waits for its commit.
    pub(super) fn has_installed(&self, partition: PartitionId) -> bool {
        self.incoming.get(&partition.0).is_some_and(|i| i.installed)
    }
}

impl ShardNet {
    /// Whether `partition` is being streamed away from this member (its operations wait).
    pub(super) fn is_migrating(&self, partition: PartitionId) -> bool {
        self.migrations.borrow().outgoing.contains_key(&partition.0)
    }

    /// Whether `master` is the master of this shard's member list.
    fn is_my_master(&self, master: MemberId) -> bool {
        self.view.borrow().members.first().map(|m| m.id) == Some(master)
    }

    /// Shard 0: a migration message from the master, run on the partition's shard.
    pub(super) fn on_migration_control(self: &Rc<Self>, msg: Control) {
        let partition = match &msg {
            Control::MigrationStart { partition, .. }
            | Control::MigrationRollback { partition, .. } => *partition,
            _ => return,
        };
        if partition >= self.partitions.get() {
            tracing::warn!(
                partition,
                "migration message for a partition that does not exist"
            );
            return;
        }
        let shard = self.shards.shard_of(PartitionId(partition));
        self.on_shards(std::iter::once(shard.0), move || {
            let sn = SHARD.with(|s| s.borrow().clone());
            if let Some(sn) = sn {
                sn.migration_message(msg.clone());
            }
        });
    }

    fn migration_message(self: &Rc<Self>, msg: Control) {
        match msg {
            Control::MigrationStart {
                id,
                master,
                partition,
                from,
                to,
            } => {
                let (Some(from), Some(to)) = (row_from_wire(&from), row_from_wire(&to)) else {
                    tracing::warn!(partition, id, "migration with a malformed row");
                    return;
                };
                if !self.is_my_master(MemberId(master)) {
                    // Two masters can reach a member at once (a joiner whose seeds are on both
                    // sides of a split not merged yet): only its own master's migrations run,
                    // or it would stream for, and commit copies of, a cluster it does not
                    // follow (found by the simulation's data model, seed 4). The other master
                    // times the migration out.
                    tracing::warn!(
                        partition,
                        id,
                        "migration of a master this member does not follow; ignored"
                    );
                    return;
                }
                let partition = PartitionId(partition);
                let running = self
                    .migrations
                    .borrow()
                    .outgoing
                    .get(&partition.0)
                    .map(|o| o.id);
                if running == Some(id) {
                    return;
                }
                if running.is_some() {
                    // A migration a previous master started: it is off.
                    self.roll_back(partition, None);
                }
                let task = self
                    .clone()
                    .run_source(id, MemberId(master), partition, from, to);
                glommio::spawn_local(task).detach();
            }
            Control::MigrationRollback { id, partition, .. } => {
                self.roll_back(PartitionId(partition), Some(id));
            }
            _ => {}
        }
    }

    /// Streams `partition` to the destinations of row `to`, then tells the master.
    async fn run_source(
        self: Rc<Self>,
        id: u64,
        master: MemberId,
        partition: PartitionId,
        from: Vec<Option<MemberId>>,
        to: Vec<Option<MemberId>>,
    ) {
        let started = Instant::now();
        let result = self.copy_out(id, master, partition, &from, &to).await;
        let (ok, reason) = match result {
            Ok(bytes) => {
                let secs = started.elapsed().as_secs_f64().max(1e-9);
                tracing::debug!(
                    %partition,
                    id,
                    bytes,
                    micros = started.elapsed().as_micros() as u64,
                    mb_per_s = (bytes as f64 / secs / 1e6).round() as u64,
                    "partition streamed"
                );
                (true, String::new())
            }
            Err(reason) => {
                tracing::warn!(%partition, id, %reason, "migration failed at its source");
                self.end_outgoing(partition, id, MigrationPhase::Rollback);
                (false, reason)
            }
        };
        let addr = self
            .view
            .borrow()
            .members
            .iter()
            .find(|m| m.id == master)
            .map(|m| m.addr);
        if let Some(addr) = addr {
            let msg = Control::MigrationReady {
                id,
                partition: partition.0,
                ok,
                reason,
            };
            self.send_control(addr, msg);
        }
    }

    /// Holds the partition and streams it; the bytes sent.
    async fn copy_out(
        self: &Rc<Self>,
        id: u64,
        master: MemberId,
        partition: PartitionId,
        from: &[Option<MemberId>],
        to: &[Option<MemberId>],
    ) -> Result<usize, String> {
        let me = self.net.id;
        if self.view.borrow().table.owner(partition) != Some(me) {
            return Err("this member does not own the partition (yet)".into());
        }
        self.migrations.borrow_mut().outgoing.insert(
            partition.0,
            Outgoing {
                id,
                master,
                to: to.to_vec(),
                started: Instant::now(),
            },
        );
        extension::migration_event(&source_event(partition, to, me), MigrationPhase::Before);
        let plan = Migration {
            id,
            partition,
            source: me,
            from: from.to_vec(),
            to: to.to_vec(),
            started: Instant::now(),
        };
        let mut sent = 0;
        for (dest, index) in plan.destinations() {
            let member = self
                .view
                .borrow()
                .members
                .iter()
                .find(|m| m.id == dest)
                .cloned()
                .ok_or_else(|| format!("destination {dest} is not a member"))?;
            let bytes =
                extension::migration_snapshot(partition, index).map_err(|e| e.to_string())?;
            let streaming = Instant::now();
            let head = ChunkHead {
                id,
                master: master.0,
                total: bytes.len() as u64,
                index: 0,
                count: 0,
                current: index_in(from, dest).map(|r| r.0),
                new: index.0,
                to: row_to_wire(to),
            };
            self.stream(&member, partition, &bytes, head).await?;
            self.net
                .stream_sent(bytes.len() as u64, streaming.elapsed());
            sent += bytes.len();
        }
        Ok(sent)
    }

    /// Sends a snapshot to `to`'s shard for `partition` in chunks, a window of them unacked.
    async fn stream(
        self: &Rc<Self>,
        to: &MemberEntry,
        partition: PartitionId,
        bytes: &[u8],
        head: ChunkHead,
    ) -> Result<(), String> {
        let addr = to.shard_addr(to.shard_of(partition));
        let c = self.connection(addr).await.map_err(|e| e.to_string())?;
        let chunk = self.net.migration.chunk_bytes().max(1);
        let count = bytes.len().div_ceil(chunk).max(1);
        let mut window = VecDeque::new();
        for index in 0..count {
            let piece =
                &bytes[(index * chunk).min(bytes.len())..((index + 1) * chunk).min(bytes.len())];
            let head = ChunkHead {
                index: index as u32,
                count: count as u32,
                ..head.clone()
            };
            let header = Header {
                flags: MIGRATION,
                partition: partition.0,
                correlation: self.next_call(),
                table_version: self.view.borrow().table.version,
                ..Header::new(FrameKind::Replica)
            };
            let slot = c
                .start_call(header, &encode_chunk(&head, piece))
                .map_err(|e| e.to_string())?;
            window.push_back(slot);
            // A full window, or a connection that other streams already filled, waits for the
            // oldest ack: the writer's queue stays bounded.
            while window.len() >= self.net.migration.window as usize
                || (!window.is_empty() && c.queued() > STREAM_QUEUE)
            {
                let Some(slot) = window.pop_front() else {
                    break;
                };
                self.acked(slot).await?;
            }
        }
        while let Some(slot) = window.pop_front() {
            self.acked(slot).await?;
        }
        Ok(())
    }

    /// Waits for one chunk's ack (up to the migration timeout).
    async fn acked(&self, slot: Rc<conn::Slot<conn::Response>>) -> Result<(), String> {
        let answer = glommio::timer::timeout(self.net.migration.timeout(), async {
            Ok(slot.take().await)
        })
        .await
        .map_err(|_| "the destination did not ack in time".to_string())?;
        match answer {
            Ok((h, _)) if h.status == Status::Ok as u16 => Ok(()),
            Ok((_, body)) => Err(payload::decode::<WireError>(&body)
                .map(|w| w.to_op_error().to_string())
                .unwrap_or_else(|e| format!("malformed error from the destination: {e}"))),
            Err(e) => Err(e.to_string()),
        }
    }

    /// A migration chunk from a partition's owner: taken in, and acked (with the reason when it
    /// is refused). `Err` only for a chunk that does not parse: the connection closes.
    pub(super) fn on_chunk(
        self: &Rc<Self>,
        h: &Header,
        payload: &[u8],
        writer: &Rc<Writer>,
    ) -> Result<(), String> {
        let (head, piece) = decode_chunk(payload)?;
        let partition = PartitionId(h.partition);
        let result = self.take_chunk(partition, &head, piece);
        if let Err(reason) = &result {
            tracing::warn!(%partition, id = head.id, %reason, "migration chunk refused");
        }
        ack(writer, h, result.map_err(OpError::Failed));
        Ok(())
    }

    fn take_chunk(
        self: &Rc<Self>,
        partition: PartitionId,
        head: &ChunkHead,
        piece: &[u8],
    ) -> Result<(), String> {
        let max = u64::from(self.net.migration.max_partition_mib) * 1024 * 1024;
        if head.total > max {
            return Err(format!(
                "a partition replica of {} bytes is over migration.max-partition-mib ({})",
                head.total, self.net.migration.max_partition_mib
            ));
        }
        let to = row_from_wire(&head.to).ok_or("a malformed row")?;
        if head.index == 0 && !self.is_my_master(MemberId(head.master)) {
            return Err("a migration of a master this member does not follow".into());
        }
        if head.index == 0 {
            // A new stream: an older one of this partition is undone first.
            if self.migrations.borrow().incoming.contains_key(&partition.0) {
                self.roll_back(partition, None);
            }
            let current = self.replica_of(partition);
            let new = ReplicaIndex(head.new);
            let event = MigrationEvent {
                partition,
                endpoint: MigrationEndpoint::Destination,
                current_replica: current,
                new_replica: Some(new),
            };
            extension::migration_event(&event, MigrationPhase::Before);
            let total = head.total as usize;
            self.migrations.borrow_mut().incoming.insert(
                partition.0,
                Incoming {
                    id: head.id,
                    master: MemberId(head.master),
                    to,
                    current,
                    new,
                    buf: Bytes::with_capacity(total),
                    total,
                    next: 0,
                    installed: false,
                    started: Instant::now(),
                },
            );
        }
        let (bytes, new) = {
            let mut migrations = self.migrations.borrow_mut();
            let inc = migrations
                .incoming
                .get_mut(&partition.0)
                .filter(|i| i.id == head.id && !i.installed)
                .ok_or("a chunk of a migration this member is not taking in")?;
            if head.index != inc.next || inc.buf.len() + piece.len() > inc.total {
                return Err(format!(
                    "chunk {} out of order or past the total (expected chunk {})",
                    head.index, inc.next
                ));
            }
            inc.buf.extend_from_slice(piece);
            inc.next += 1;
            if head.index + 1 < head.count {
                return Ok(());
            }
            if inc.buf.len() != inc.total {
                return Err(format!("{} of {} bytes arrived", inc.buf.len(), inc.total));
            }
            (std::mem::take(&mut inc.buf), inc.new)
        };
        extension::install_snapshot(partition, new, &bytes).map_err(|e| e.to_string())?;
        if let Some(inc) = self.migrations.borrow_mut().incoming.get_mut(&partition.0) {
            inc.installed = true;
        }
        Ok(())
    }

    /// The table changed: commits this shard's migrations whose row it shows. Returns the
    /// partitions that arrived as their new owner with the old owner's versions (they start no
    /// new epoch).
    pub(super) fn commit_migrations(&self, table: &PartitionTable) -> Vec<u32> {
        let me = self.net.id;
        let row = |p: u32| table.rows.get(p as usize);
        let (outs, ins) = {
            let mut m = self.migrations.borrow_mut();
            let outs: Vec<u32> = m
                .outgoing
                .iter()
                .filter(|(p, o)| row(**p) == Some(&o.to))
                .map(|(p, _)| *p)
                .collect();
            let ins: Vec<u32> = m
                .incoming
                .iter()
                .filter(|(p, i)| i.installed && row(**p) == Some(&i.to))
                .map(|(p, _)| *p)
                .collect();
            let outs: Vec<(u32, Outgoing)> = outs
                .into_iter()
                .filter_map(|p| m.outgoing.remove(&p).map(|o| (p, o)))
                .collect();
            let ins: Vec<(u32, Incoming)> = ins
                .into_iter()
                .filter_map(|p| m.incoming.remove(&p).map(|i| (p, i)))
                .collect();
            (outs, ins)
        };
        for (p, o) in outs {
            let event = source_event(PartitionId(p), &o.to, me);
            extension::migration_event(&event, MigrationPhase::Commit);
        }
        let mut adopted = Vec::new();
        for (p, i) in ins {
            extension::migration_event(&i.event(PartitionId(p)), MigrationPhase::Commit);
            if i.new == ReplicaIndex::PRIMARY {
                adopted.push(p);
            }
        }
        adopted
    }

    /// Rolls back this shard's migration of `partition` (only migration `id`, when given), at
    /// either end.
    fn roll_back(&self, partition: PartitionId, id: Option<u64>) {
        self.roll_back_keeping(partition, id, false);
    }

    /// [`ShardNet::roll_back`]; with `keep_installed`, a destination that installed the
    /// partition keeps it until the next table says whether it holds it: the master that ran
    /// the migration is gone and may have committed it in a table this member has not seen,
    /// which the new master's table then carries on (the simulation's data model, seed 538).
    fn roll_back_keeping(&self, partition: PartitionId, id: Option<u64>, keep_installed: bool) {
        let matches = |other: u64| id.is_none_or(|id| id == other);
        let out = self
            .migrations
            .borrow()
            .outgoing
            .get(&partition.0)
            .map(|o| o.id)
            .filter(|o| matches(*o));
        if let Some(out) = out {
            self.end_outgoing(partition, out, MigrationPhase::Rollback);
        }
        let inc = {
            let mut m = self.migrations.borrow_mut();
            match m.incoming.get(&partition.0) {
                Some(i) if matches(i.id) => m.incoming.remove(&partition.0),
                _ => None,
            }
        };
        if let Some(i) = inc {
            tracing::debug!(%partition, id = i.id, "migration rolled back at its destination");
            let mut event = i.event(partition);
            let keep = keep_installed && i.installed;
            if keep {
                // As if it held the replica already: the callbacks keep what it installed.
                event.current_replica = Some(i.new);
                self.orphans.borrow_mut().insert(partition.0);
            }
            extension::migration_event(&event, MigrationPhase::Rollback);
            if !keep && self.replica_of(partition).is_none() {
                // It kept a replica the table no longer names (a table that came while the
                // copy waited for its commit left it out): drop it now.
                extension::drop_replica(partition);
            }
        }
    }

    /// After a table change: partitions kept from abandoned migrations stay if the table
    /// names this member a replica of them, and are dropped if not.
    pub(super) fn settle_orphans(&self) {
        let orphans = std::mem::take(&mut *self.orphans.borrow_mut());
        for p in orphans {
            let partition = PartitionId(p);
            if self.replica_of(partition).is_none()
                && !self.migrations.borrow().has_installed(partition)
            {
                extension::drop_replica(partition);
            }
        }
    }

    /// Ends the source's side of migration `id`: the partition is released.
    fn end_outgoing(&self, partition: PartitionId, id: u64, phase: MigrationPhase) {
        let removed = {
            let mut m = self.migrations.borrow_mut();
            match m.outgoing.get(&partition.0) {
                Some(o) if o.id == id => m.outgoing.remove(&partition.0),
                _ => None,
            }
        };
        if let Some(o) = removed {
            extension::migration_event(&source_event(partition, &o.to, self.net.id), phase);
        }
    }

    /// Rolls back the migrations a master that is no longer the master started, and those
    /// older than twice the migration timeout.
    pub(super) fn expire_migrations(&self) {
        let master = self.view.borrow().members.first().map(|m| m.id);
        let limit = self.net.migration.timeout() * 2;
        let stale = |m: MemberId, started: Instant| {
            master.is_some_and(|master| master != m) || started.elapsed() > limit
        };
        let dead: Vec<u32> = {
            let m = self.migrations.borrow();
            m.outgoing
                .iter()
                .filter(|(_, o)| stale(o.master, o.started))
                .map(|(p, _)| *p)
                .chain(
                    m.incoming
                        .iter()
                        .filter(|(_, i)| stale(i.master, i.started))
                        .map(|(p, _)| *p),
                )
                .collect()
        };
        for p in dead {
            tracing::info!(
                partition = p,
                "migration abandoned (its master left, or it took too long); rolling back"
            );
            self.roll_back_keeping(PartitionId(p), None, true);
        }
    }
}

/// The source's view of a migration to row `to`: it owns the partition now.
fn source_event(partition: PartitionId, to: &[Option<MemberId>], me: MemberId) -> MigrationEvent {
    MigrationEvent {
        partition,
        endpoint: MigrationEndpoint::Source,
        current_replica: Some(ReplicaIndex::PRIMARY),
        new_replica: index_in(to, me),
    }
}

/// Which slot of `row` `member` holds.
fn index_in(row: &[Option<MemberId>], member: MemberId) -> Option<ReplicaIndex> {
    row.iter()
        .position(|m| *m == Some(member))
        .map(|i| ReplicaIndex(i as u8))
}

/// Every member shard: rolls back abandoned migrations once a second.
pub(super) async fn migration_watchdog(sn: Rc<ShardNet>) {
    while !sn.stopped.get() {
        glommio::timer::sleep(Duration::from_secs(1)).await;
        sn.expire_migrations();
    }
}
