//! One shard: the services and containers of its partitions, and its message loop.
//!
//! Owns: [`ShardCore`] (the only thing that touches this shard's containers), [`ShardMsg`] (what
//! other threads may ask of it), the glommio executor that runs it, and the thread-local that
//! lets callers already on this shard run their own partitions' operations inline.
//!
//! Invariant: a `ShardCore` is created on its executor's thread and never leaves it. Other threads
//! reach it only through its bounded inbox; answers go back as [`Reply`]s.
//!
//! The loop sends its outbox (the calls its tasks queued for other shards), drains the inbox and
//! its completion queue, sends the answers it owes, then yields to the shard's other tasks, and
//! after [`IDLE_SPIN`] without a message awaits the shard's doorbell (see [`crate::doorbell`]
//! for why not glommio's own wake-up).

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ahash::AHashSet;
use glommio::{LocalExecutorBuilder, Placement};

use crate::config::Config;
use crate::doorbell::{Bell, Doorbell};
use crate::extension::{Acks, Extension, MigrationPhase, Router, ShardContext};
use crate::invocation::Invoker;
use crate::member::StartError;
use crate::object;
use crate::outbox::{CallBatch, CallRef, Completions, Outbox};
use crate::partition::{PartitionCount, PartitionId, ShardCount, ShardId};
use crate::payload::Bytes;
use crate::registry::{
    BackupWork, Dispatch, ErasedSlot, Handler, Mode, Policies, ServiceFactory, Target,
};
use crate::replica::{
    classify, ArchivedPartitionSnapshot, BackupApplied, Call, CallId, NamespaceSnapshot,
    PartitionSnapshot, ReplicaState, Replication,
};
use crate::reply::{Answer, Held, Pending, Reply};
use crate::spi::{
    MemberInfo, MembershipEvent, MigrationEndpoint, MigrationEvent, OpError, OpId, Operation,
    ReplicaIndex, ReplicationEvent, ServiceContext, ServiceId,
};
use crate::table::MAX_REPLICAS;

/// Identifies one running member inside this process (the address of its shared invoker state),
/// so a thread-local shard is only used by callers of its own member.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct MemberToken(pub usize);

/// Per-partition results of an all-partitions operation on one shard.
pub(crate) type PartitionReplies = Vec<(PartitionId, Result<Bytes, OpError>)>;

/// What other threads may ask of a shard.
pub(crate) enum ShardMsg {
    /// Run one operation on one partition.
    Invoke {
        partition: PartitionId,
        service: ServiceId,
        op: OpId,
        payload: Bytes,
        reply: Reply,
    },
    /// Run one operation on every partition this shard holds.
    AllPartitions {
        service: ServiceId,
        op: OpId,
        payload: Bytes,
        reply: oneshot::Sender<PartitionReplies>,
    },
    /// Run one operation on each of several partitions of this shard (their owners may be
    /// other members: those are forwarded, grouped by owner shard).
    Many {
        service: ServiceId,
        op: OpId,
        parts: Vec<(PartitionId, Bytes)>,
        reply: oneshot::Sender<PartitionReplies>,
    },
    /// Calls from another shard of this member, gathered in one of its rounds.
    Calls(CallBatch),
    /// Run a closure on the shard's thread (it may spawn local tasks).
    Run(Box<dyn FnOnce() + Send>),
    /// Drop every service's state and every object record (a split-brain rejoin).
    Reset(oneshot::Sender<()>),
    /// Shut the services down and stop the executor.
    Shutdown { terminate: bool },
}

/// The way into one shard from any thread: its inbox, its completion queue and its doorbell.
/// Every send rings the doorbell, which costs a syscall only when the shard is waiting.
pub(crate) struct ShardLink {
    inbox: flume::Sender<ShardMsg>,
    completions: flume::Sender<Completions>,
    bell: Doorbell,
}

/// The shard's side of its [`ShardLink`]: the queues it reads and its end of the doorbell.
pub(crate) struct ShardQueues {
    pub inbox: flume::Receiver<ShardMsg>,
    pub completions: flume::Receiver<Completions>,
    pub bell: std::os::unix::net::UnixStream,
}

impl ShardLink {
    /// A link whose inbox holds `capacity` messages, and the shard's side of it.
    pub fn new(capacity: usize) -> std::io::Result<(Arc<ShardLink>, ShardQueues)> {
        let (inbox, inbox_rx) = flume::bounded(capacity);
        // Unbounded: it holds at most one answer per call its shard has in flight.
        let (completions, completions_rx) = flume::unbounded();
        let (bell, bell_rx) = Doorbell::pair()?;
        let link = Arc::new(ShardLink {
            inbox,
            completions,
            bell,
        });
        let queues = ShardQueues {
            inbox: inbox_rx,
            completions: completions_rx,
            bell: bell_rx,
        };
        Ok((link, queues))
    }

    /// Sends `msg`, waiting while the inbox is full (backpressure). `Err` if the shard stopped.
    pub async fn send(&self, msg: ShardMsg) -> Result<(), ()> {
        self.inbox.send_async(msg).await.map_err(|_| ())?;
        self.bell.ring();
        Ok(())
    }

    /// Sends `msg` if the inbox has room, and rings; gives it back if not. (A message is as large
    /// as a batch of calls with the buffers it brings back, 168 bytes: boxing it would allocate
    /// on one core per message and free on the other, which the batches exist to avoid.)
    #[allow(clippy::result_large_err)]
    pub fn try_send(&self, msg: ShardMsg) -> Result<(), flume::TrySendError<ShardMsg>> {
        self.inbox.try_send(msg)?;
        self.bell.ring();
        Ok(())
    }

    /// Sends from a thread with no executor; `false` if the shard stopped.
    pub fn send_blocking(&self, msg: ShardMsg) -> bool {
        let sent = self.inbox.send(msg).is_ok();
        self.bell.ring();
        sent
    }

    /// Delivers an answer to a caller on this shard. A stopped shard does not read it: fine.
    pub fn complete(&self, completions: Completions) {
        let _ = self.completions.send(completions);
        self.bell.ring();
    }

    /// The ticker's visit (see [`Doorbell::tick`]): whether it signalled a stalled shard.
    pub fn tick(&self, seen: &mut crate::doorbell::Watch) -> bool {
        self.bell.tick(seen)
    }
}

/// Everything a shard needs to start, moved into its thread.
pub(crate) struct ShardSpec {
    pub token: MemberToken,
    pub shard: ShardId,
    pub shards: ShardCount,
    pub partitions: PartitionCount,
    pub member: MemberInfo,
    pub factories: Vec<ServiceFactory>,
    pub config: Config,
    pub link: Arc<ShardLink>,
    pub invoker: Invoker,
    pub extension: Option<Arc<dyn Extension>>,
}

/// The state of one shard. Lives on its executor's thread only.
pub(crate) struct ShardCore {
    pub member: MemberInfo,
    pub shard: ShardId,
    pub shards: ShardCount,
    pub partitions: PartitionCount,
    pub slots: Vec<Box<dyn ErasedSlot>>,
    pub dispatch: Dispatch,
    /// Per local partition: the objects whose name hashes there (their home partition).
    pub objects: Vec<AHashSet<(ServiceId, String)>>,
    /// Per local partition: namespace versions and remembered answers.
    pub replicas: Vec<ReplicaState>,
    /// Listeners registered on this shard.
    pub events: crate::events::EventHub,
    /// Operations run here as owner, by outcome, and their sampled service times.
    pub stats: crate::stats::OpStats,
    /// The services' names, by slot.
    pub names: Vec<&'static str>,
    /// A member without a network: no replicas, no retries, so writes build no backup and
    /// leave no answer to remember.
    pub standalone: bool,
}

impl ShardCore {
    fn start(spec: &ShardSpec) -> Result<Self, StartError> {
        let ctx = ServiceContext {
            member: spec.member.clone(),
            shard: spec.shard,
            shards: spec.shards,
            partitions: spec.partitions,
            invoker: spec.invoker.clone(),
        };
        let local_slots = spec.shards.partition_slots(spec.shard, spec.partitions);
        let mut slots = Vec::with_capacity(spec.factories.len());
        let mut dispatch = Dispatch::default();
        let empty = crate::config::Properties::default();
        for factory in &spec.factories {
            let properties = spec
                .config
                .service(factory.name)
                .map_or(&empty, |s| &s.properties);
            let policies = Policies::of(&spec.config, factory.name);
            let slot = factory
                .start(&ctx, properties, local_slots, policies)
                .map_err(|e| StartError::ServiceInit {
                    service: factory.name.to_owned(),
                    shard: spec.shard,
                    reason: e.reason,
                })?;
            dispatch.add(slots.len(), factory);
            slots.push(slot);
        }
        let slots_len = slots.len();
        Ok(Self {
            member: spec.member.clone(),
            shard: spec.shard,
            shards: spec.shards,
            partitions: spec.partitions,
            objects: (0..local_slots).map(|_| AHashSet::new()).collect(),
            replicas: (0..local_slots)
                .map(|_| {
                    ReplicaState::new(slots.len() + 1, spec.config.backups.dedup_window as usize)
                })
                .collect(),
            slots,
            dispatch,
            events: crate::events::EventHub::default(),
            stats: crate::stats::OpStats::new(slots_len),
            names: spec.factories.iter().map(|f| f.name).collect(),
            standalone: spec.extension.is_none(),
        })
    }

    /// Runs every service's tick on every partition of this shard; `owner` says which this
    /// member owns (events are published for those only).
    pub fn tick(&mut self, owner: &dyn Fn(PartitionId) -> bool) {
        let now = crate::events::now_millis();
        let partitions: Vec<PartitionId> = self
            .shards
            .partitions_of(self.shard, self.partitions)
            .collect();
        for (slot_index, slot) in self.slots.iter_mut().enumerate() {
            let Some(service) = self.dispatch.service_of(slot_index) else {
                continue;
            };
            for (local, &p) in partitions.iter().enumerate() {
                let owns = owner(p);
                let ctx = crate::events::TickContext {
                    partition: p,
                    owner: owns,
                    now,
                    events: crate::events::Events::new(owns.then_some(&self.events), service),
                };
                slot.tick(local, &ctx);
            }
        }
    }

    /// The dense index of `partition` on this shard, if this shard holds it.
    pub fn local_index(&self, partition: PartitionId) -> Result<usize, OpError> {
        if partition.0 >= self.partitions.get() {
            return Err(OpError::NoSuchPartition {
                partition,
                count: self.partitions.get(),
            });
        }
        if self.shards.shard_of(partition) != self.shard {
            return Err(OpError::WrongShard {
                partition,
                shard: self.shard,
            });
        }
        Ok(self.shards.local_index(partition))
    }

    /// Runs one operation on one of this shard's partitions as its owner, archiving the response
    /// into `out`; returns the backup its replicas must apply, if it wrote. A call already
    /// answered (`call` remembered) is answered again, not run.
    pub fn execute(
        &mut self,
        partition: PartitionId,
        service: ServiceId,
        op: OpId,
        payload: &[u8],
        out: &mut Bytes,
        call: Option<Call>,
    ) -> Result<Option<Replication>, OpError> {
        let local = self.local_index(partition)?;
        let again = call.filter(|c| c.again);
        if let Some(answer) = again.and_then(|c| self.replicas[local].dedup.get(&c.id)) {
            out.clear();
            out.extend_from_slice(answer);
            return Ok(None);
        }
        let work = self.run(
            partition,
            local,
            service,
            op,
            payload,
            out,
            Mode::Owner,
            ReplicaIndex::PRIMARY,
        )?;
        match work {
            Some(work) => self.replication(partition, local, work, call, out),
            None => Ok(None),
        }
    }

    /// [`ShardCore::execute`] of operation `O`, called on this shard by a caller that knows its
    /// type: the response as it is, not archived and read back. No call id (a retried call
    /// comes from another member, through `execute`).
    pub(crate) fn execute_typed<O: Operation>(
        &mut self,
        partition: PartitionId,
        payload: &[u8],
    ) -> Result<(O::Response, Option<Replication>), OpError> {
        let local = self.local_index(partition)?;
        let at = (partition, local, Mode::Owner, ReplicaIndex::PRIMARY);
        let (service, op) = (<O::Service as crate::spi::Service>::ID, O::ID);
        let (response, work) = self.run_in(at, service, op, |_, slot, target| {
            crate::registry::run_typed::<O>(slot, target, payload)
        })?;
        let replication = match work {
            Some(work) => self.replication(partition, local, work, None, &mut Bytes::new())?,
            None => None,
        };
        Ok((response, replication))
    }

    /// What backs up a write that ran as the owner and asked for `work`: the versions it moves,
    /// and the answer `out` remembered for a retry of `call`.
    fn replication(
        &mut self,
        partition: PartitionId,
        local: usize,
        work: BackupWork,
        call: Option<Call>,
        out: &mut Bytes,
    ) -> Result<Option<Replication>, OpError> {
        let slots = (usize::from(work.sync) + usize::from(work.async_)).min(MAX_REPLICAS - 1);
        if slots == 0 {
            // No replica takes it (backup-count 0): no version moves and nothing is sent; the
            // answer is remembered for a retry of the call, if it has an id.
            if let Some(call) = call {
                self.replicas[local].dedup.remember(call.id, out);
            }
            return Ok(None);
        }
        let ns = self.namespace(work.service)?;
        let state = &mut self.replicas[local];
        for v in &mut state.versions[ns][1..=slots] {
            *v += 1;
        }
        let versions = state.versions[ns];
        // The backups remember the answer too; with none, nothing else reads it.
        let response = match call {
            Some(call) => {
                state.dedup.remember(call.id, out);
                if slots > 0 {
                    out.clone()
                } else {
                    Bytes::new()
                }
            }
            None => Bytes::new(),
        };
        Ok(Some(Replication {
            partition,
            service: work.service,
            op: work.op,
            payload: work.payload,
            sync: work.sync,
            async_: work.async_,
            versions,
            call: call.map(|c| c.id),
            response,
        }))
    }

    /// Answers a read-only operation from this member's backup replica of `partition`
    /// (`read-backup-data`), if the operation only reads, its service or object allows it and
    /// this member holds a backup; `None` sends it to the owner. Checks the operation first: a
    /// write forwarded to its owner pays one lookup here, not the router's.
    pub fn read_from_backup(
        &mut self,
        router: &dyn Router,
        partition: PartitionId,
        service: ServiceId,
        op: OpId,
        payload: &[u8],
    ) -> Option<Bytes> {
        if service == object::ENGINE_SERVICE || !self.dispatch.reads_only(service, op) {
            return None;
        }
        let replica = router.replica_index(partition).filter(|r| r.is_backup())?;
        let local = self.local_index(partition).ok()?;
        let mut out = Bytes::new();
        self.run(
            partition,
            local,
            service,
            op,
            payload,
            &mut out,
            Mode::BackupRead,
            replica,
        )
        .ok()
        .map(|_| out)
    }

    /// Applies the owner's backup operation `version` of namespace `service` on this backup
    /// replica, if it follows the replica's version; remembers the call's answer.
    #[allow(clippy::too_many_arguments)]
    pub fn apply_backup(
        &mut self,
        partition: PartitionId,
        service: ServiceId,
        op: OpId,
        payload: &[u8],
        version: u64,
        call: Option<CallId>,
        response: &[u8],
        replica: ReplicaIndex,
    ) -> Result<BackupApplied, OpError> {
        let local = self.local_index(partition)?;
        let ns = self.namespace(service)?;
        let slot = usize::from(replica.0).min(MAX_REPLICAS - 1);
        let have = self.replicas[local].versions[ns][slot];
        let outcome = classify(have, version);
        if outcome == BackupApplied::Applied {
            let mut out = Bytes::new();
            self.run(
                partition,
                local,
                service,
                op,
                payload,
                &mut out,
                Mode::Backup,
                replica,
            )?;
            let state = &mut self.replicas[local];
            state.versions[ns][slot] = version;
            if let Some(call) = call {
                state.dedup.remember(call, response);
            }
        }
        Ok(outcome)
    }

    #[allow(clippy::too_many_arguments)]
    fn run(
        &mut self,
        partition: PartitionId,
        local: usize,
        service: ServiceId,
        op: OpId,
        payload: &[u8],
        out: &mut Bytes,
        mode: Mode,
        replica: ReplicaIndex,
    ) -> Result<Option<BackupWork>, OpError> {
        if service == object::ENGINE_SERVICE {
            let result = object::run_engine_op(self, partition, local, op, payload, out, mode);
            if mode == Mode::Owner {
                self.stats.finish(self.slots.len(), result.is_ok(), None);
            }
            return result;
        }
        let at = (partition, local, mode, replica);
        self.run_in(at, service, op, |handler, slot, target| {
            (handler.run)(slot, target, payload, out)
        })
    }

    /// Runs `f` with operation `(service, op)`'s handler, its service's slot and its target at
    /// `(partition, local index, mode, replica)`; counted in the statistics as the owner's.
    fn run_in<R>(
        &mut self,
        (partition, local, mode, replica): (PartitionId, usize, Mode, ReplicaIndex),
        service: ServiceId,
        op: OpId,
        f: impl FnOnce(Handler, &mut dyn ErasedSlot, &Target<'_>) -> Result<R, OpError>,
    ) -> Result<R, OpError> {
        let handler = self.dispatch.handler(service, op)?;
        let timer = if mode == Mode::Owner {
            self.stats.start()
        } else {
            None
        };
        let target = Target {
            partition,
            shard: self.shard,
            local,
            replica,
            mode,
            member: &self.member,
            events: &self.events,
            replicated: !self.standalone,
        };
        let slot = self
            .slots
            .get_mut(handler.slot)
            .ok_or(OpError::UnknownService { service })?;
        let result = f(handler, slot.as_mut(), &target);
        if mode == Mode::Owner {
            self.stats.finish(handler.slot, result.is_ok(), timer);
        }
        result
    }

    /// The index of `service`'s namespace in a partition's versions: its slot, or the object
    /// registry's (after the slots).
    fn namespace(&self, service: ServiceId) -> Result<usize, OpError> {
        if service == object::ENGINE_SERVICE {
            return Ok(self.slots.len());
        }
        self.dispatch
            .slot_of(service)
            .ok_or(OpError::UnknownService { service })
    }

    fn namespace_id(&self, ns: usize) -> ServiceId {
        self.dispatch
            .service_of(ns)
            .unwrap_or(object::ENGINE_SERVICE)
    }

    /// `(service id, version)` of every namespace of `partition`, for replica slot `replica`.
    pub fn versions(
        &self,
        partition: PartitionId,
        replica: ReplicaIndex,
    ) -> Result<Vec<(u16, u64)>, OpError> {
        let local = self.local_index(partition)?;
        let slot = usize::from(replica.0).min(MAX_REPLICAS - 1);
        Ok(self.replicas[local]
            .versions
            .iter()
            .enumerate()
            .map(|(ns, v)| (self.namespace_id(ns).0, v[slot]))
            .collect())
    }

    /// The namespaces `namespaces` (every one when empty) of `partition`, with their versions
    /// for replica slot `replica` and the remembered answers, for that backup replica.
    pub fn snapshot(
        &self,
        partition: PartitionId,
        namespaces: &[u16],
        replica: ReplicaIndex,
    ) -> Result<PartitionSnapshot, OpError> {
        let local = self.local_index(partition)?;
        let event = ReplicationEvent {
            partition,
            replica_index: replica,
        };
        let slot = usize::from(replica.0).min(MAX_REPLICAS - 1);
        let mut out = Vec::new();
        for (ns, versions) in self.replicas[local].versions.iter().enumerate() {
            let version = &versions[slot];
            let id = self.namespace_id(ns);
            if !namespaces.is_empty() && !namespaces.contains(&id.0) {
                continue;
            }
            let data = match self.slots.get(ns) {
                Some(slot) => slot.snapshot(local, &event)?,
                None => Some(object::records_snapshot(self, local)?),
            };
            out.push(NamespaceSnapshot {
                service: id.0,
                version: *version,
                slots: versions.to_vec(),
                data: data.map(|d| d.to_vec()),
            });
        }
        Ok(PartitionSnapshot {
            partition: partition.0,
            namespaces: out,
            dedup: self.replicas[local].dedup.entries(),
        })
    }

    /// Replaces this replica's namespaces with a snapshot's (taken for replica slot `replica`),
    /// and adopts its remembered answers. As the owner's slot (a migration to a new owner), the
    /// replica takes the owner's versions of every slot, so its backups stay in step.
    ///
    /// Errors: a namespace or replica data that does not fit this member's services.
    pub fn install(
        &mut self,
        snapshot: &ArchivedPartitionSnapshot,
        replica: ReplicaIndex,
    ) -> Result<(), OpError> {
        let slot = usize::from(replica.0).min(MAX_REPLICAS - 1);
        let partition = PartitionId(snapshot.partition.to_native());
        let local = self.local_index(partition)?;
        for ns in snapshot.namespaces.iter() {
            let service = ServiceId(ns.service.to_native());
            let index = self.namespace(service)?;
            let data = ns.data.as_ref().map(|d| d.as_slice());
            match self.slots.get_mut(index) {
                Some(slot) => slot.install(local, data)?,
                None => object::install_records(self, local, data)?,
            }
            let versions = &mut self.replicas[local].versions[index];
            if replica == ReplicaIndex::PRIMARY && ns.slots.len() == MAX_REPLICAS {
                for (have, owner) in versions.iter_mut().zip(ns.slots.iter()) {
                    *have = owner.to_native();
                }
            } else {
                versions[slot] = ns.version.to_native();
            }
        }
        for e in snapshot.dedup.iter() {
            let call = CallId {
                caller: e.0.to_native(),
                call: e.1.to_native(),
            };
            self.replicas[local].dedup.remember(call, e.2.as_slice());
        }
        Ok(())
    }

    /// This member holds no replica of `partition` any more: drop its data.
    pub fn drop_replica(&mut self, partition: PartitionId) {
        let Ok(local) = self.local_index(partition) else {
            return;
        };
        for slot in &mut self.slots {
            slot.clear(local);
        }
        if let Some(records) = self.objects.get_mut(local) {
            records.clear();
        }
        self.replicas[local].clear();
    }

    /// Runs every service's migration callback of `phase` for `partition`. A committed
    /// migration that leaves this member without a replica, and a rolled-back one on a
    /// destination that held none, then drop the partition's data.
    pub fn migration(&mut self, event: &MigrationEvent, phase: MigrationPhase) {
        let Ok(local) = self.local_index(event.partition) else {
            return;
        };
        for slot in &mut self.slots {
            slot.migration(local, event, phase);
        }
        let dropped = match phase {
            MigrationPhase::Before => false,
            MigrationPhase::Commit => event.new_replica.is_none(),
            MigrationPhase::Rollback => {
                event.endpoint == MigrationEndpoint::Destination && event.current_replica.is_none()
            }
        };
        if dropped {
            self.drop_replica(event.partition);
        }
    }

    /// This shard's partitions that hold any data: a service's container, or object records.
    pub fn partitions_with_data(&self) -> Vec<PartitionId> {
        self.shards
            .partitions_of(self.shard, self.partitions)
            .enumerate()
            .filter(|(local, p)| {
                let event = ReplicationEvent {
                    partition: *p,
                    replica_index: ReplicaIndex::PRIMARY,
                };
                !self.objects[*local].is_empty()
                    || self.slots.iter().any(|s| s.holds_data(*local, &event))
            })
            .map(|(_, p)| p)
            .collect()
    }

    /// This member became the owner of `partition`: its writes start a new epoch.
    pub fn became_owner(&mut self, partition: PartitionId) {
        if let Ok(local) = self.local_index(partition) {
            self.replicas[local].next_epoch();
        }
    }

    /// Runs one operation on every partition this shard holds, in partition order, as owner.
    pub fn execute_all(
        &mut self,
        service: ServiceId,
        op: OpId,
        payload: &[u8],
    ) -> Vec<(PartitionId, Result<Bytes, OpError>, Option<Replication>)> {
        self.shards
            .partitions_of(self.shard, self.partitions)
            .map(|p| {
                let mut out = Bytes::new();
                match self.execute(p, service, op, payload, &mut out, None) {
                    Ok(r) => (p, Ok(out), r),
                    Err(e) => (p, Err(e), None),
                }
            })
            .collect()
    }

    pub fn membership_changed(&mut self, event: &MembershipEvent) {
        for slot in &mut self.slots {
            slot.membership_changed(event);
        }
    }

    fn shutdown(&mut self, terminate: bool) {
        for slot in &mut self.slots {
            slot.shutdown(terminate);
        }
    }

    /// Split-brain merge: the operations that carry every service's data of the partitions
    /// `owned` says this member owns (on this shard) into another cluster.
    pub fn merge_ops(&self, owned: &dyn Fn(PartitionId) -> bool) -> Vec<crate::spi::PreparedOp> {
        let mut ops = Vec::new();
        for (local, p) in self
            .shards
            .partitions_of(self.shard, self.partitions)
            .enumerate()
        {
            if !owned(p) {
                continue;
            }
            for slot in &self.slots {
                ops.extend(slot.merge(local, p));
            }
        }
        ops
    }

    /// Drops all state: every service's `reset`, every container, object record and replica
    /// version (a member leaving its cluster to merge into another).
    pub fn reset(&mut self) {
        for slot in &mut self.slots {
            slot.reset();
        }
        for records in &mut self.objects {
            records.clear();
        }
        for state in &mut self.replicas {
            state.clear();
        }
    }
}

struct Current {
    token: MemberToken,
    shard: ShardId,
    core: Rc<RefCell<ShardCore>>,
    pending: Rc<RefCell<Pending>>,
    /// Calls to other shards and answers owed to them, sent once per round.
    outbox: Rc<RefCell<Outbox>>,
    /// Where this shard's partitions are owned, when the member is part of a cluster.
    router: Option<Rc<dyn Router>>,
}

thread_local! {
    static CURRENT: RefCell<Option<Current>> = const { RefCell::new(None) };
}

/// Runs `f` inline if this thread is `shard` of the member `token` and its core is free;
/// `None` means the caller must send a message instead.
pub(crate) fn with_local<R>(
    token: MemberToken,
    shard: ShardId,
    f: impl FnOnce(&mut ShardCore) -> R,
) -> Option<R> {
    CURRENT.with(|current| {
        let current = current.try_borrow().ok()?;
        let current = current.as_ref()?;
        if current.token != token || current.shard != shard {
            return None;
        }
        let mut core = current.core.try_borrow_mut().ok()?;
        Some(f(&mut core))
    })
}

/// Runs `f` on the core and router of the shard this thread runs, whichever member it belongs
/// to.
pub(crate) fn with_current<R>(
    f: impl FnOnce(&mut ShardCore, Option<Rc<dyn Router>>) -> R,
) -> Option<R> {
    CURRENT.with(|current| {
        let current = current.try_borrow().ok()?;
        let current = current.as_ref()?;
        let mut core = current.core.try_borrow_mut().ok()?;
        Some(f(&mut core, current.router.clone()))
    })
}

/// Whether this thread runs a shard (of any member).
pub(crate) fn on_shard() -> bool {
    CURRENT.with(|current| current.try_borrow().map_or(true, |c| c.is_some()))
}

/// Runs `f` on the core of the shard this thread runs, whichever member it belongs to.
pub(crate) fn with_current_core<R>(f: impl FnOnce(&mut ShardCore) -> R) -> Option<R> {
    CURRENT.with(|current| {
        let current = current.try_borrow().ok()?;
        let mut core = current.as_ref()?.core.try_borrow_mut().ok()?;
        Some(f(&mut core))
    })
}

/// Runs an operation this member owns on the shard this thread runs (whichever member), and
/// sends its backup through the shard's router: the answer, and the acks to await before giving
/// it.
pub(crate) fn run_owned_here(
    partition: PartitionId,
    service: ServiceId,
    op: OpId,
    payload: &[u8],
    call: Option<Call>,
) -> (Answer, Option<Acks>) {
    let found = CURRENT.with(|current| {
        let current = current.try_borrow().ok()?;
        let current = current.as_ref()?;
        Some((current.core.clone(), current.router.clone()))
    });
    match found {
        Some((core, router)) => run_owned(
            &core,
            router.as_ref(),
            partition,
            service,
            op,
            payload,
            call,
        ),
        None => (
            Err(OpError::Unavailable {
                partition,
                reason: "not called on a shard".into(),
            }),
            None,
        ),
    }
}

/// Runs an operation as the partition's owner on `core` and hands its backup to `router`.
pub(crate) fn run_owned(
    core: &RefCell<ShardCore>,
    router: Option<&Rc<dyn Router>>,
    partition: PartitionId,
    service: ServiceId,
    op: OpId,
    payload: &[u8],
    call: Option<Call>,
) -> (Answer, Option<Acks>) {
    let mut out = Bytes::new();
    let (result, acks) = run_owned_into(
        core, router, partition, service, op, payload, &mut out, call,
    );
    (result.map(|()| out), acks)
}

/// [`run_owned`], archiving the response into `out` (a buffer reused between calls).
#[allow(clippy::too_many_arguments)]
fn run_owned_into(
    core: &RefCell<ShardCore>,
    router: Option<&Rc<dyn Router>>,
    partition: PartitionId,
    service: ServiceId,
    op: OpId,
    payload: &[u8],
    out: &mut Bytes,
    call: Option<Call>,
) -> (Result<(), OpError>, Option<Acks>) {
    let result = match core.try_borrow_mut() {
        Ok(mut core) => core.execute(partition, service, op, payload, out, call),
        Err(_) => Err(OpError::Unavailable {
            partition,
            reason: "the shard is busy with another operation".into(),
        }),
    };
    match result {
        Ok(replication) => {
            let acks = replication.and_then(|r| router.and_then(|router| router.replicate(r)));
            (Ok(()), acks)
        }
        Err(e) => (Err(e), None),
    }
}

/// Answers `reply` now, or once `acks` resolve.
fn answer_after(reply: Reply, answer: Answer, acks: Option<Acks>) {
    match acks {
        None => reply.send(answer),
        Some(acks) => {
            glommio::spawn_local(async move {
                match acks.await {
                    Ok(()) => reply.send(answer),
                    Err(e) => reply.send(Err(e)),
                }
            })
            .detach();
        }
    }
}

/// The router of shard `shard` of member `token` when this thread is that shard and it is part
/// of a cluster; `None` otherwise.
pub(crate) fn current_router(token: MemberToken, shard: ShardId) -> Option<Rc<dyn Router>> {
    CURRENT.with(|current| {
        let current = current.try_borrow().ok()?;
        let current = current.as_ref()?;
        if current.token != token || current.shard != shard {
            return None;
        }
        current.router.clone()
    })
}

/// If this thread is one of member `token`'s shards: queues the call for shard `to` in this
/// shard's outbox and gives what the caller awaits (its answer comes back through this shard's
/// completion queue). `Err` gives the payload back elsewhere (send it with [`Reply::thread`]).
pub(crate) fn queue_call(
    token: MemberToken,
    to: ShardId,
    partition: PartitionId,
    service: ServiceId,
    op: OpId,
    payload: Bytes,
) -> Result<Awaiting, Bytes> {
    on_member(token, payload, |current, payload| {
        let (Ok(mut pending), Ok(mut outbox)) = (
            current.pending.try_borrow_mut(),
            current.outbox.try_borrow_mut(),
        ) else {
            return Err(payload);
        };
        let correlation = pending.register();
        match outbox.call(to, partition, service, op, payload, correlation) {
            Ok(()) => Ok(Awaiting {
                token,
                shard: current.shard,
                correlation,
                done: false,
            }),
            Err(payload) => {
                pending.forget(correlation);
                Err(payload)
            }
        }
    })
}

/// A caller's wait for the answer to a call it queued with [`queue_call`]: `None` if there will
/// be none (the owner or this shard stopped). Polled on the shard that made the call; dropped
/// unanswered (a timeout), it frees its slot and the late answer is dropped.
pub(crate) struct Awaiting {
    token: MemberToken,
    shard: ShardId,
    correlation: u64,
    done: bool,
}

impl Awaiting {
    fn with_pending<R>(&self, f: impl FnOnce(&mut Pending) -> R) -> Option<R> {
        on_member(self.token, f, |current, f| {
            match current.pending.try_borrow_mut() {
                Ok(mut pending) if current.shard == self.shard => Ok(f(&mut pending)),
                _ => Err(f),
            }
        })
        .ok()
    }

    /// The answer once there is one, handed to `read` where it is (`None` if there will be
    /// none): a caller that reads it in place (a typed call decoding its response) needs no
    /// copy of it of its own.
    pub(crate) fn poll_with<T>(
        &mut self,
        cx: &mut std::task::Context<'_>,
        read: impl FnOnce(Result<Held<'_>, OpError>) -> T,
    ) -> std::task::Poll<Option<T>> {
        let correlation = self.correlation;
        match self.with_pending(|p| p.poll_with(correlation, cx.waker(), read)) {
            Some(std::task::Poll::Pending) => std::task::Poll::Pending,
            // Off its shard (which stopped), or answered.
            Some(std::task::Poll::Ready(answer)) => {
                self.done = true;
                std::task::Poll::Ready(answer)
            }
            None => {
                self.done = true;
                std::task::Poll::Ready(None)
            }
        }
    }
}

impl std::future::Future for Awaiting {
    type Output = Option<Answer>;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Answer>> {
        self.poll_with(cx, |answer| answer.map(Held::into_bytes))
    }
}

impl Drop for Awaiting {
    fn drop(&mut self) {
        if !self.done {
            let correlation = self.correlation;
            self.with_pending(|p| p.forget(correlation));
        }
    }
}

/// Queues an answer for a caller on shard `to` of member `token` in this thread's outbox, if
/// this thread is another shard of that member; gives it back otherwise.
pub(crate) fn complete_from_here(
    token: MemberToken,
    to: ShardId,
    correlation: u64,
    answer: Option<Answer>,
) -> Result<(), Option<Answer>> {
    on_member(token, answer, |current, answer| {
        match current.outbox.try_borrow_mut() {
            Ok(mut outbox) => outbox.complete_owned(to, correlation, answer),
            Err(_) => Err(answer),
        }
    })
}

/// Runs `f` with `value` on this thread's shard if it is one of member `token`'s shards; gives
/// `value` back otherwise (or whatever `f` gives back).
fn on_member<T, R>(
    token: MemberToken,
    value: T,
    f: impl FnOnce(&Current, T) -> Result<R, T>,
) -> Result<R, T> {
    CURRENT.with(|current| match current.try_borrow() {
        Ok(current) => match current.as_ref().filter(|c| c.token == token) {
            Some(current) => f(current, value),
            None => Err(value),
        },
        Err(_) => Err(value),
    })
}

/// The shard this thread runs, if it is one of member `token`'s shards.
pub(crate) fn current_shard(token: MemberToken) -> Option<ShardId> {
    on_member(token, (), |current, ()| Ok(current.shard)).ok()
}

/// A running shard's thread, and a receiver that resolves (with an error: its sender is dropped)
/// when the shard's future has ended, whichever way it ended.
pub(crate) struct ShardThread {
    pub join: std::thread::JoinHandle<()>,
    pub exited: flume::Receiver<()>,
}

/// Starts shard `spec.shard` on its own glommio executor. `ready` hears whether the services
/// started; the executor then serves `queues` until told to shut down.
pub(crate) fn spawn(
    spec: ShardSpec,
    queues: ShardQueues,
    ready: oneshot::Sender<Result<(), StartError>>,
    placement: Placement,
) -> Result<ShardThread, StartError> {
    let shard = spec.shard;
    let mut builder = LocalExecutorBuilder::new(placement)
        .io_memory(spec.config.io_memory_bytes())
        .preempt_timer(spec.config.preempt_timer());
    if let Some(spin) = spec.config.spin_before_park() {
        builder = builder.spin_before_park(spin);
    }
    let (exited_tx, exited) = flume::bounded::<()>(1);
    let link = spec.link.clone();
    // The thread is ours, not glommio's `spawn`: it tells the doorbell its id before the
    // executor exists, so the ticker can signal it even if glommio never runs its first task
    // (see `crate::kick`).
    let join = std::thread::Builder::new()
        .name(format!("corecast-shard-{}", shard.0))
        .spawn(move || {
            link.bell.set_thread(crate::kick::current_thread());
            match builder.make() {
                Ok(executor) => executor.run(serve_shard(spec, queues, ready, exited_tx)),
                Err(e) => {
                    let _ = ready.send(Err(StartError::Executor {
                        shard,
                        reason: e.to_string(),
                    }));
                }
            }
            link.bell.set_thread(0);
        })
        .map_err(|e| StartError::Executor {
            shard,
            reason: e.to_string(),
        })?;
    Ok(ShardThread { join, exited })
}

/// The shard's life on its executor: its core and the extension's router, `ready` told, then
/// its loop until shutdown. `exited` is dropped when it ends, whichever way.
async fn serve_shard(
    spec: ShardSpec,
    queues: ShardQueues,
    ready: oneshot::Sender<Result<(), StartError>>,
    exited_tx: flume::Sender<()>,
) {
    let shard = spec.shard;
    // Dropped when this future ends: `exited` resolves even if the shard never served.
    let _exited = exited_tx;
    let core = match ShardCore::start(&spec) {
        Ok(core) => Rc::new(RefCell::new(core)),
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    let pending = Rc::new(RefCell::new(Pending::default()));
    let outbox = Rc::new(RefCell::new(Outbox::new(
        spec.token,
        shard,
        spec.invoker.links(),
    )));
    CURRENT.with(|c| {
        *c.borrow_mut() = Some(Current {
            token: spec.token,
            shard,
            core: core.clone(),
            pending: pending.clone(),
            outbox: outbox.clone(),
            router: None,
        })
    });
    let router = spec.extension.clone().map(|ext| {
        ext.start_shard(ShardContext {
            shard,
            shards: spec.shards,
            partitions: spec.partitions,
            config: spec.config.clone(),
            member: spec.member.clone(),
            invoker: spec.invoker.clone(),
        })
    });
    CURRENT.with(|c| {
        if let Some(current) = c.borrow_mut().as_mut() {
            current.router = router.clone();
        }
    });
    tracing::debug!(%shard, partitions = core.borrow().objects.len(), "shard started");
    glommio::spawn_local(tick_loop(
        Rc::downgrade(&core),
        router.clone(),
        spec.config.service_tick(),
    ))
    .detach();
    let _ = ready.send(Ok(()));
    let mut queues = Served {
        inbox: queues.inbox,
        completions: queues.completions,
        bell: Bell::new(queues.bell),
        link: spec.link.clone(),
    };
    let terminate = serve(&core, &pending, &outbox, &mut queues, router.as_ref()).await;
    outbox.borrow_mut().set_batching(false);
    if let Some(router) = &router {
        router.shutdown();
    }
    core.borrow_mut().shutdown(terminate);
    CURRENT.with(|c| c.borrow_mut().take());
    tracing::debug!(%shard, "shard stopped");
}

/// Runs the services' ticks every `every` until the shard's core is gone.
async fn tick_loop(
    core: std::rc::Weak<RefCell<ShardCore>>,
    router: Option<Rc<dyn Router>>,
    every: Duration,
) {
    loop {
        glommio::timer::sleep(every).await;
        let Some(core) = core.upgrade() else { return };
        let Ok(mut core) = core.try_borrow_mut() else {
            continue;
        };
        match &router {
            Some(router) => core.tick(&|p| router.is_local(p)),
            None => core.tick(&|_| true),
        }
    }
}

/// How many messages a shard handles before it lets its other tasks and the reactor run.
const BATCH: usize = 256;

/// How long a shard keeps polling its queues after its last message before it arms its doorbell
/// and waits. A wake-up costs the sender a syscall and the shard a trip through io_uring; a shard
/// in a steady exchange with others should not pay that on every message.
const IDLE_SPIN: Duration = Duration::from_micros(50);

/// What a shard's loop reads.
struct Served {
    inbox: flume::Receiver<ShardMsg>,
    completions: flume::Receiver<Completions>,
    bell: Bell,
    link: Arc<ShardLink>,
}

/// Serves the inbox and the completion queue until a shutdown message or until every sender is
/// gone; returns whether the stop is a hard one (`terminate`).
async fn serve(
    core: &Rc<RefCell<ShardCore>>,
    pending: &RefCell<Pending>,
    outbox: &RefCell<Outbox>,
    queues: &mut Served,
    router: Option<&Rc<dyn Router>>,
) -> bool {
    // When the queues were last found empty after some work; read the clock only then.
    let mut idle_since: Option<Instant> = None;
    let mut rounds: u32 = 0;
    loop {
        // The ticker's sign that this loop runs (see `crate::kick`).
        rounds = rounds.wrapping_add(1);
        queues.link.bell.round(rounds);
        // What this shard's tasks queued since the last round.
        {
            let mut outbox = outbox.borrow_mut();
            outbox.set_batching(true);
            outbox.flush();
        }
        let mut handled = 0;
        while let Ok(completions) = queues.completions.try_recv() {
            handled += completions.len();
            let emptied = completions.deliver(pending);
            outbox.borrow_mut().recycle_completions(emptied);
        }
        while handled < BATCH {
            match queues.inbox.try_recv() {
                Ok(msg) => {
                    handled += match &msg {
                        ShardMsg::Calls(batch) => batch.len(),
                        _ => 1,
                    };
                    if let Some(terminate) = handle(core, msg, router, outbox) {
                        return terminate;
                    }
                }
                Err(flume::TryRecvError::Empty) => break,
                Err(flume::TryRecvError::Disconnected) => return true,
            }
        }
        // The answers this round owes, and calls a full inbox held back.
        outbox.borrow_mut().flush();
        let busy = if handled > 0 || !outbox.borrow().is_empty() {
            idle_since = None;
            true
        } else {
            idle_since.get_or_insert_with(Instant::now).elapsed() < IDLE_SPIN
        };
        if busy {
            // A plain yield: the shard's own tasks run, then this loop again. glommio polls its
            // rings (sockets, timers) only when no task is runnable or at the preempt tick
            // (`preempt-timer-micros`), so while messages never run dry, io_uring completions
            // wait for that tick. A real yield to glommio's pass every 8 rounds (a timer 2 µs
            // out) cost two-shard counter-inc at `--locality any` a fifth of its throughput
            // (2.7-2.8 M/s -> 2.1-2.2 M/s); the 1 ns timer this loop used to park on was due by
            // its first poll and never yielded at all.
            futures_lite::future::yield_now().await;
        } else {
            // `idle_since` stays: a wake-up that brings nothing (the ticker's ring, which only
            // lets glommio run its timers) goes back to waiting at once instead of spinning
            // again; one that brings work starts a new spin after it.
            // Asleep, the loop flushes nothing: tasks woken meanwhile send at once.
            outbox.borrow_mut().set_batching(false);
            let (inbox, completions) = (&queues.inbox, &queues.completions);
            queues
                .bell
                .wait(&queues.link.bell, || {
                    !inbox.is_empty() || !completions.is_empty() || inbox.is_disconnected()
                })
                .await;
        }
    }
}

/// Handles one message; `Some(terminate)` when it was the shutdown.
fn handle(
    core: &Rc<RefCell<ShardCore>>,
    msg: ShardMsg,
    router: Option<&Rc<dyn Router>>,
    outbox: &RefCell<Outbox>,
) -> Option<bool> {
    match msg {
        ShardMsg::Invoke {
            partition,
            service,
            op,
            payload,
            reply,
        } => match router.filter(|r| !r.is_local(partition)) {
            Some(router) => {
                let here = core.try_borrow_mut().ok().and_then(|mut core| {
                    core.read_from_backup(router.as_ref(), partition, service, op, &payload)
                });
                if let Some(out) = here {
                    reply.send(Ok(out));
                } else {
                    let answer = router.forward(partition, service, op, payload);
                    glommio::spawn_local(async move { reply.send(answer.await) }).detach();
                }
            }
            None => {
                let (answer, acks) =
                    run_owned(core, router, partition, service, op, &payload, None);
                answer_after(reply, answer, acks);
            }
        },
        ShardMsg::AllPartitions {
            service,
            op,
            payload,
            reply,
        } => all_partitions(core, service, op, payload, reply, router),
        ShardMsg::Many {
            service,
            op,
            parts,
            reply,
        } => many(core, service, op, parts, reply, router),
        ShardMsg::Calls(batch) => calls(core, batch, router, outbox),
        ShardMsg::Run(f) => f(),
        ShardMsg::Reset(done) => {
            core.borrow_mut().reset();
            let _ = done.send(());
        }
        ShardMsg::Shutdown { terminate } => return Some(terminate),
    }
    None
}

/// Runs another shard's calls: answers that are ready join the outbox for the calling shard;
/// those that wait on backups' acks or on the partition's owner elsewhere answer when they can.
fn calls(
    core: &Rc<RefCell<ShardCore>>,
    mut batch: CallBatch,
    router: Option<&Rc<dyn Router>>,
    outbox: &RefCell<Outbox>,
) {
    let (from, token) = (batch.from(), outbox.borrow().token());
    // One response buffer for the batch: each answer is copied into the answers' pack.
    let mut out = Bytes::new();
    batch.run(|batch, call| {
        let CallRef {
            partition,
            service,
            op,
            payload,
            correlation,
        } = call;
        let ready = |answer: Result<&[u8], OpError>| {
            if let Err(answer) = outbox
                .borrow_mut()
                .complete(from, correlation, Some(answer))
            {
                let mut completions = Completions::default();
                completions.push(correlation, answer);
                batch.answer_now(completions);
            }
        };
        match router.filter(|r| !r.is_local(partition)) {
            Some(router) => {
                let here = core.try_borrow_mut().ok().and_then(|mut core| {
                    core.read_from_backup(router.as_ref(), partition, service, op, payload)
                });
                if let Some(out) = here {
                    ready(Ok(&out));
                } else {
                    let reply = batch.reply(token, correlation);
                    let answer =
                        router.forward(partition, service, op, crate::payload::copy(payload));
                    glommio::spawn_local(async move { reply.send(answer.await) }).detach();
                }
            }
            None => match run_owned_into(
                core, router, partition, service, op, payload, &mut out, None,
            ) {
                (Ok(()), None) => ready(Ok(&out)),
                (Err(e), None) => ready(Err(e)),
                (result, acks) => {
                    let answer = result.map(|()| std::mem::take(&mut out));
                    answer_after(batch.reply(token, correlation), answer, acks);
                }
            },
        }
    });
    outbox.borrow_mut().recycle_batch(&mut batch);
}

/// Runs an all-partitions operation on this shard's partitions: here for those this member owns
/// (answered once their backups acked), forwarded to their owners for the rest.
fn all_partitions(
    core: &Rc<RefCell<ShardCore>>,
    service: ServiceId,
    op: OpId,
    payload: Bytes,
    reply: oneshot::Sender<PartitionReplies>,
    router: Option<&Rc<dyn Router>>,
) {
    let (shard, shards, count) = {
        let core = core.borrow();
        (core.shard, core.shards, core.partitions)
    };
    let mut replies = PartitionReplies::new();
    let mut waits: Vec<RemoteAnswer> = Vec::new();
    for p in shards.partitions_of(shard, count) {
        match router {
            Some(router) if !router.is_local(p) => {
                let answer = router.forward(p, service, op, payload.clone());
                waits.push(Box::pin(async move { (p, answer.await) }));
            }
            _ => {
                let (answer, acks) = run_owned(core, router, p, service, op, &payload, None);
                match acks {
                    None => replies.push((p, answer)),
                    Some(acks) => waits.push(Box::pin(async move {
                        match acks.await {
                            Ok(()) => (p, answer),
                            Err(e) => (p, Err(e)),
                        }
                    })),
                }
            }
        }
    }
    if waits.is_empty() {
        let _ = reply.send(replies);
        return;
    }
    glommio::spawn_local(async move {
        for wait in waits {
            replies.push(wait.await);
        }
        replies.sort_by_key(|(p, _)| *p);
        let _ = reply.send(replies);
    })
    .detach();
}

/// Runs one operation on each of several of this shard's partitions: here for those this
/// member owns (answered once their backups acked); the rest go to the router in one batch, which
/// sends one request per owner shard.
fn many(
    core: &Rc<RefCell<ShardCore>>,
    service: ServiceId,
    op: OpId,
    parts: Vec<(PartitionId, Bytes)>,
    reply: oneshot::Sender<PartitionReplies>,
    router: Option<&Rc<dyn Router>>,
) {
    let mut replies = PartitionReplies::new();
    let mut waits: Vec<RemoteAnswer> = Vec::new();
    let mut remote = Vec::new();
    for (p, payload) in parts {
        match router {
            Some(router) if !router.is_local(p) => remote.push((p, payload)),
            _ => {
                let (answer, acks) = run_owned(core, router, p, service, op, &payload, None);
                match acks {
                    None => replies.push((p, answer)),
                    Some(acks) => waits.push(Box::pin(async move {
                        match acks.await {
                            Ok(()) => (p, answer),
                            Err(e) => (p, Err(e)),
                        }
                    })),
                }
            }
        }
    }
    let forwarded = match router {
        Some(router) if !remote.is_empty() => Some(router.forward_many(service, op, remote)),
        _ => None,
    };
    if waits.is_empty() && forwarded.is_none() {
        let _ = reply.send(replies);
        return;
    }
    glommio::spawn_local(async move {
        for wait in waits {
            replies.push(wait.await);
        }
        if let Some(forwarded) = forwarded {
            replies.extend(forwarded.await);
        }
        let _ = reply.send(replies);
    })
    .detach();
}

/// A partition's answer, once its backups acked or its owner answered.
type RemoteAnswer = std::pin::Pin<Box<dyn std::future::Future<Output = (PartitionId, Answer)>>>;

/// Where shard `shard` runs: pinned to its own CPU only when asked and when there are enough.
pub(crate) fn placement(config: &Config, shard: ShardId, shards: ShardCount) -> Placement {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    if config.pin_shards && shards.get() as usize <= cpus {
        Placement::Fixed(shard.0 as usize)
    } else {
        Placement::Unbound
    }
}
