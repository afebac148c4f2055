//! Hooks for the layer above the engine (the network): per-shard routing, and running operations
//! that arrived from elsewhere on the current shard.
//!
//! Owns: [`Extension`] (installed on a [`crate::MemberBuilder`], started on every shard),
//! [`Router`] (one per shard: is a partition's owner this member, and if not, how to forward an
//! operation to it), [`ShardContext`], and [`execute_here`] / [`membership_changed`] (what a
//! network task on a shard may ask of the shard it runs on).
//!
//! Without an extension a member owns every partition (a single embedded member).

use std::any::Any;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;

use crate::config::Config;
use crate::invocation::Invoker;
use crate::partition::{PartitionCount, PartitionId, ShardCount, ShardId};
use crate::payload::{access, Bytes};
use crate::replica::{BackupApplied, Call, CallId, PartitionSnapshot, Replication};
use crate::shard;
use crate::spi::{MemberInfo, OpError, OpId, ReplicaIndex, ServiceId};

/// A forwarded operation's answer: the archived response, or why there is none.
pub type RemoteAnswer = Pin<Box<dyn Future<Output = Result<Bytes, OpError>>>>;

/// The answers of [`Router::forward_many`]: per partition, its response or error.
pub type ManyAnswers = Pin<Box<dyn Future<Output = Vec<(PartitionId, Result<Bytes, OpError>)>>>>;

/// Resolves when every live sync backup acknowledged a write (or the ack timeout passed);
/// `Err` when a backup refused it because it knows a newer partition table in which this member
/// no longer owns the partition (a deposed owner: the write must not be answered as done).
pub type Acks = Pin<Box<dyn Future<Output = Result<(), OpError>>>>;

/// Decides, on one shard, where each of its partitions' operations run.
pub trait Router {
    /// True when this member owns `partition` now (run its operations here).
    fn is_local(&self, partition: PartitionId) -> bool;

    /// Sends an operation to `partition`'s owner and resolves to its answer (retrying, with a
    /// timeout, as the router sees fit).
    fn forward(
        &self,
        partition: PartitionId,
        service: ServiceId,
        op: OpId,
        payload: Bytes,
    ) -> RemoteAnswer;

    /// Sends one operation to each of several partitions' owners; the network batches those with
    /// the same owner shard into one request. Default: one [`Router::forward`] each, in
    /// turn.
    fn forward_many(
        &self,
        service: ServiceId,
        op: OpId,
        parts: Vec<(PartitionId, Bytes)>,
    ) -> ManyAnswers {
        let calls: Vec<_> = parts
            .into_iter()
            .map(|(p, payload)| (p, self.forward(p, service, op, payload)))
            .collect();
        Box::pin(async move {
            let mut out = Vec::with_capacity(calls.len());
            for (p, call) in calls {
                out.push((p, call.await));
            }
            out
        })
    }

    /// Which replica of `partition` this member holds, if any.
    fn replica_index(&self, _partition: PartitionId) -> Option<ReplicaIndex> {
        None
    }

    /// Sends an owner's backup to the partition's backup replicas, now (so backups leave in the
    /// order the writes ran); `Some` resolves when the live sync backups acked.
    fn replicate(&self, _replication: Replication) -> Option<Acks> {
        None
    }

    /// The shard is stopping: close listeners and connections (called on the shard's thread).
    fn shutdown(&self) {}

    /// Shard 0: registers a listener on every other member's shards (and on members that join
    /// later), delivering their events into `tx`; resolves once the members known now have it.
    fn listen(
        &self,
        _spec: crate::events::ListenSpec,
        _tx: flume::Sender<Bytes>,
    ) -> Pin<Box<dyn Future<Output = ()>>> {
        Box::pin(async {})
    }

    /// Shard 0: drops a listener everywhere.
    fn unlisten(&self, _id: u64) {}
}

/// What an extension learns about a shard it starts on.
#[derive(Clone)]
pub struct ShardContext {
    /// The shard.
    pub shard: ShardId,
    /// How many shards this member runs.
    pub shards: ShardCount,
    /// The cluster's partition count.
    pub partitions: PartitionCount,
    /// The member's configuration.
    pub config: Config,
    /// The member itself.
    pub member: MemberInfo,
    /// Sends work to this member's shards.
    pub invoker: Invoker,
}

/// When this thread is a shard whose loop has no message to handle and waits on its doorbell:
/// the doorbell's descriptor, readable once another thread sends the shard a message (for a
/// layer that waits for its sockets in its own `epoll` while the shard is idle).
pub fn idle_bell() -> Option<std::os::fd::RawFd> {
    crate::doorbell::idle_bell()
}

/// A layer installed on a member: started on each shard's thread after the shard's services.
pub trait Extension: Send + Sync + 'static {
    /// Starts the extension on one shard (spawn its tasks there) and returns the shard's router.
    fn start_shard(self: std::sync::Arc<Self>, shard: ShardContext) -> Rc<dyn Router>;

    /// The member is about to stop (its shards still run): say goodbye to the cluster.
    fn before_stop(&self, _invoker: &Invoker) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        Box::pin(async {})
    }

    /// The member stopped (after every shard ended).
    fn stopped(&self) {}

    /// The extension as `Any`, so callers can reach its concrete type through
    /// [`crate::Member::extension`].
    fn as_any(&self) -> &dyn Any;
}

/// The statistics of the shard this thread runs: the namespaces' names (the services in slot
/// order, then `engine`) and the operations and sampled service times by namespace. `None` off a
/// shard.
pub fn shard_stats() -> Option<(Vec<&'static str>, crate::stats::OpStats)> {
    shard::with_current_core(|core| {
        let names = core
            .names
            .iter()
            .copied()
            .chain(std::iter::once("engine"))
            .collect();
        (names, core.stats.clone())
    })
}

/// Registers a listener on this shard, delivering into `sink` (for the network layer: the
/// connection the subscriber registered on).
pub fn add_listener(spec: &crate::events::ListenSpec, sink: Rc<dyn crate::events::EventSink>) {
    shard::with_current_core(|core| core.events.add(spec, sink));
}

/// Drops a listener's registration on this shard if it still delivers into `sink`.
pub fn remove_listener_from(id: u64, sink: &Rc<dyn crate::events::EventSink>) {
    shard::with_current_core(|core| core.events.remove_from(id, sink));
}

/// Runs an operation that reached this shard from elsewhere (a socket) on `partition`, which this
/// member must own and this shard hold, archiving the response into `out`, and sends its backup
/// to the replicas. Does not consult the router for ownership: the caller checked. `call`
/// identifies the call across retries (a call sent again is answered from what the partition
/// remembers, not run again).
///
/// Returns what to await (the sync backups' acks) before answering.
///
/// Errors: `Unavailable` when called outside a shard's thread, and whatever the operation answers.
pub fn execute_here(
    partition: PartitionId,
    service: ServiceId,
    op: OpId,
    payload: &[u8],
    out: &mut Bytes,
    call: Option<Call>,
) -> Result<Option<Acks>, OpError> {
    let (result, acks) = shard::run_owned_here(partition, service, op, payload, call);
    let bytes = result?;
    *out = bytes;
    Ok(acks)
}

fn outside(partition: PartitionId) -> OpError {
    OpError::Unavailable {
        partition,
        reason: "not called on a shard".into(),
    }
}

/// Applies the owner's backup operation on this shard's backup replica of `partition` (see
/// [`crate::replica`] for versions and gaps).
///
/// Errors: `Unavailable` outside a shard, and what the backup operation answers.
#[allow(clippy::too_many_arguments)]
pub fn apply_backup(
    partition: PartitionId,
    service: ServiceId,
    op: OpId,
    payload: &[u8],
    version: u64,
    call: Option<CallId>,
    response: &[u8],
    replica: ReplicaIndex,
) -> Result<BackupApplied, OpError> {
    shard::with_current_core(|core| {
        core.apply_backup(
            partition, service, op, payload, version, call, response, replica,
        )
    })
    .unwrap_or_else(|| Err(outside(partition)))
}

/// `(service id, version)` of every namespace of `partition` on this shard, for replica slot
/// `replica` (an owner's for that backup, or a backup's own).
///
/// Errors: `Unavailable` outside a shard; `WrongShard` / `NoSuchPartition`.
pub fn versions(partition: PartitionId, replica: ReplicaIndex) -> Result<Vec<(u16, u64)>, OpError> {
    shard::with_current_core(|core| core.versions(partition, replica))
        .unwrap_or_else(|| Err(outside(partition)))
}

/// Installs an archived [`PartitionSnapshot`] (from the owner, for replica slot `replica`) on
/// this shard's replica.
///
/// Errors: a snapshot that does not validate or does not fit this member's services.
pub fn install_snapshot(
    partition: PartitionId,
    replica: ReplicaIndex,
    bytes: &[u8],
) -> Result<(), OpError> {
    let snapshot = access::<PartitionSnapshot>(bytes).map_err(|e| OpError::MalformedPayload {
        service: crate::object::ENGINE_SERVICE,
        op: crate::object::SYNC,
        reason: e.to_string(),
    })?;
    if snapshot.partition.to_native() != partition.0 {
        return Err(OpError::failed(format!(
            "snapshot of partition {} where {partition} was asked for",
            snapshot.partition
        )));
    }
    shard::with_current_core(|core| core.install(snapshot, replica))
        .unwrap_or_else(|| Err(outside(partition)))
}

/// This member holds no replica of `partition` any more: its data on this shard is dropped.
pub fn drop_replica(partition: PartitionId) {
    let _ = shard::with_current_core(|core| core.drop_replica(partition));
}

/// This member became the owner of `partition`: its writes start a new version epoch.
pub fn became_owner(partition: PartitionId) {
    let _ = shard::with_current_core(|core| core.became_owner(partition));
}

/// Which migration callback to run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MigrationPhase {
    /// Before the data moves (source and destination).
    Before,
    /// The new partition table took effect.
    Commit,
    /// The migration failed; the table stays as it was.
    Rollback,
}

/// Runs every service's migration callback of `phase` for `event.partition` on this shard; a
/// commit leaving this member without a replica and a rollback on a destination that held none
/// drop the partition's data (see [`crate::spi::Service::commit_migration`]).
pub fn migration_event(event: &crate::spi::MigrationEvent, phase: MigrationPhase) {
    let _ = shard::with_current_core(|core| core.migration(event, phase));
}

/// The archived [`PartitionSnapshot`] a migration destination taking replica slot `replica` of
/// `partition` installs: every namespace, the owner's versions, the remembered answers.
///
/// Errors: `Unavailable` outside a shard, `WrongShard` / `NoSuchPartition`, and encoding.
pub fn migration_snapshot(partition: PartitionId, replica: ReplicaIndex) -> Result<Bytes, OpError> {
    let snapshot = shard::with_current_core(|core| core.snapshot(partition, &[], replica))
        .unwrap_or_else(|| Err(outside(partition)))?;
    crate::payload::encode(&snapshot).map_err(|e| OpError::Encode {
        what: "partition snapshot",
        reason: e.to_string(),
    })
}

/// This shard's partitions that hold any data (a service's container or object records): what
/// tests check against the replicas the table gives this member.
pub fn partitions_with_data() -> Vec<PartitionId> {
    shard::with_current_core(|core| core.partitions_with_data()).unwrap_or_default()
}

/// The engine's operation a backup sends its owner for a partition's state; its payload is a
/// [`crate::replica::SyncRequest`], its answer a [`PartitionSnapshot`].
pub fn sync_operation() -> (ServiceId, OpId) {
    (crate::object::ENGINE_SERVICE, crate::object::SYNC)
}

/// Split-brain merge, on this shard: the operations that carry the data of the partitions
/// `owned` says this member owns into the cluster it joins, then every service reset and every
/// container, object record and replica version dropped.
pub fn merge_and_reset(owned: &dyn Fn(PartitionId) -> bool) -> Vec<crate::spi::PreparedOp> {
    shard::with_current_core(|core| {
        let ops = core.merge_ops(owned);
        core.reset();
        ops
    })
    .unwrap_or_default()
}

/// A member joined or left the cluster: tells every service on this shard.
pub fn membership_changed(event: &crate::spi::MembershipEvent) {
    let _ = shard::with_current_core(|core| core.membership_changed(event));
}
