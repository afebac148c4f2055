//! Type erasure between typed services and the shard: service slots and the dispatch table.
//!
//! Owns: [`ServiceFactory`] (how to start a service on a shard, and its operations),
//! [`ErasedSlot`] (a started service with its containers, behind a trait object), and
//! [`Dispatch`] (`(service id, op id)` → the slot and the monomorphized runner). A shard builds
//! its own slots and its own table from the factories: nothing here is shared across threads.

use std::any::Any;

use ahash::AHashMap;

use crate::config::{BackupPolicy, Config, MergePolicy, Properties};
use crate::extension::MigrationPhase;
use crate::partition::{PartitionId, ShardId};
use crate::payload::{access, encode, encode_into, Bytes};
use crate::spi::{
    MemberInfo, MergeOps, MigrationEvent, OpContext, OpError, OpId, Operation, Operations,
    PreparedOp, ReplicaIndex, ReplicationEvent, Service, ServiceContext, ServiceError, ServiceId,
};

/// Why an operation runs on this shard.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Mode {
    /// As the partition's owner: a write produces its backup.
    Owner,
    /// As a backup replica applying the owner's backup operation.
    Backup,
    /// As a backup replica answering a read (`read-backup-data`).
    BackupRead,
}

/// Where an operation runs on a shard.
pub(crate) struct Target<'a> {
    pub partition: PartitionId,
    pub shard: ShardId,
    /// The partition's index in the shard's dense container array.
    pub local: usize,
    pub replica: ReplicaIndex,
    pub mode: Mode,
    pub member: &'a MemberInfo,
    /// The shard's listeners; operations publish to them as the owner only.
    pub events: &'a crate::events::EventHub,
    /// Whether a write may have replicas to back it up (false on a member without a network).
    pub replicated: bool,
}

/// The backup an operation asked for, with the replica counts in effect for it.
pub(crate) struct BackupWork {
    pub service: ServiceId,
    pub op: OpId,
    pub payload: Bytes,
    pub sync: u8,
    pub async_: u8,
}

/// Runs one operation type against an erased slot: validate the payload in place, run, archive
/// the response into `out`; as the owner, the backup it asks for.
pub(crate) type OpFn =
    fn(&mut dyn ErasedSlot, &Target<'_>, &[u8], &mut Bytes) -> Result<Option<BackupWork>, OpError>;

/// A service's replica and merge policies: its own, and per object.
#[derive(Clone, Debug)]
pub(crate) struct Policies {
    base: BackupPolicy,
    merge: MergePolicy,
    objects: AHashMap<String, (BackupPolicy, MergePolicy)>,
}

impl Policies {
    pub fn of(config: &Config, service: &str) -> Self {
        let objects = config
            .service(service)
            .map(|s| {
                s.objects
                    .iter()
                    .map(|o| {
                        let name = Some(o.name.as_str());
                        let policies = (
                            config.policy(service, name),
                            config.merge_policy(service, name),
                        );
                        (o.name.clone(), policies)
                    })
                    .collect()
            })
            .unwrap_or_default();
        Self {
            base: config.policy(service, None),
            merge: config.merge_policy(service, None),
            objects,
        }
    }

    /// The merge policy of the service, or of its object `object`.
    pub fn merge(&self, object: Option<&str>) -> MergePolicy {
        object
            .and_then(|name| self.objects.get(name))
            .map_or(self.merge, |p| p.1)
    }

    pub fn get(&self, object: Option<&str>) -> BackupPolicy {
        object
            .and_then(|name| self.objects.get(name))
            .map_or(self.base, |p| p.0)
    }
}

/// A started service and its containers, one per partition the shard holds.
pub(crate) struct ServiceSlot<S: Service> {
    pub service: S,
    pub containers: Vec<S::Container>,
    pub policies: Policies,
}

/// What the shard does to a service without knowing its type.
pub(crate) trait ErasedSlot {
    fn as_any_mut(&mut self) -> &mut dyn Any;
    fn create_object(&mut self, local: usize, name: &str);
    fn destroy_object(&mut self, local: usize, name: &str);
    fn shutdown(&mut self, terminate: bool);
    /// The service's `reset`, then every container cleared.
    fn reset(&mut self);
    fn membership_changed(&mut self, event: &crate::spi::MembershipEvent);
    /// The archived replica data of one partition (`None`: nothing to hold).
    fn snapshot(&self, local: usize, event: &ReplicationEvent) -> Result<Option<Bytes>, OpError>;
    /// Replaces one partition's container with archived replica data (`None`: empty).
    fn install(&mut self, local: usize, data: Option<&[u8]>) -> Result<(), OpError>;
    /// Empties one partition's container.
    fn clear(&mut self, local: usize);
    /// The replica policy of the service, or of its object `object`.
    fn policy(&self, object: Option<&str>) -> BackupPolicy;
    /// Calls the service's migration callback of `phase` for one partition.
    fn migration(&mut self, local: usize, event: &MigrationEvent, phase: MigrationPhase);
    /// Whether one partition's container holds anything a replica would copy.
    fn holds_data(&self, local: usize, event: &ReplicationEvent) -> bool;
    /// The service's periodic tick for one partition.
    fn tick(&mut self, local: usize, ctx: &crate::events::TickContext<'_>);
    /// The operations that merge one partition's container into another cluster.
    fn merge(&self, local: usize, partition: PartitionId) -> Vec<PreparedOp>;
}

impl<S: Service> ErasedSlot for ServiceSlot<S> {
    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }

    fn create_object(&mut self, local: usize, name: &str) {
        if let Some(container) = self.containers.get_mut(local) {
            self.service.create_object(container, name);
        }
    }

    fn destroy_object(&mut self, local: usize, name: &str) {
        if let Some(container) = self.containers.get_mut(local) {
            self.service.destroy_object(container, name);
        }
    }

    fn shutdown(&mut self, terminate: bool) {
        self.service.shutdown(terminate);
    }

    fn membership_changed(&mut self, event: &crate::spi::MembershipEvent) {
        self.service.membership_changed(event);
    }

    fn reset(&mut self) {
        self.service.reset();
        self.containers.iter_mut().for_each(S::clear_replica);
    }

    fn snapshot(&self, local: usize, event: &ReplicationEvent) -> Result<Option<Bytes>, OpError> {
        let Some(container) = self.containers.get(local) else {
            return Ok(None);
        };
        S::replica_data(container, event)
            .map(|data| {
                encode(&data).map_err(|e| OpError::Encode {
                    what: "replica data",
                    reason: e.to_string(),
                })
            })
            .transpose()
    }

    fn install(&mut self, local: usize, data: Option<&[u8]>) -> Result<(), OpError> {
        let Some(container) = self.containers.get_mut(local) else {
            return Ok(());
        };
        S::clear_replica(container);
        if let Some(data) = data {
            // Nested in a snapshot, the bytes need not be aligned: copy them to read in place.
            let mut aligned = Bytes::with_capacity(data.len());
            aligned.extend_from_slice(data);
            let archived =
                access::<S::ReplicaData>(&aligned).map_err(|e| OpError::MalformedPayload {
                    service: S::ID,
                    op: OpId(0),
                    reason: format!("replica data: {e}"),
                })?;
            S::apply_replica_data(container, archived);
        }
        Ok(())
    }

    fn clear(&mut self, local: usize) {
        if let Some(container) = self.containers.get_mut(local) {
            S::clear_replica(container);
        }
    }

    fn policy(&self, object: Option<&str>) -> BackupPolicy {
        self.policies.get(object)
    }

    fn migration(&mut self, local: usize, event: &MigrationEvent, phase: MigrationPhase) {
        let Some(container) = self.containers.get_mut(local) else {
            return;
        };
        match phase {
            MigrationPhase::Before => self.service.before_migration(event),
            MigrationPhase::Commit => self.service.commit_migration(container, event),
            MigrationPhase::Rollback => self.service.rollback_migration(container, event),
        }
    }

    fn tick(&mut self, local: usize, ctx: &crate::events::TickContext<'_>) {
        if let Some(container) = self.containers.get_mut(local) {
            self.service.tick(container, ctx);
        }
    }

    fn holds_data(&self, local: usize, event: &ReplicationEvent) -> bool {
        self.containers
            .get(local)
            .is_some_and(|c| S::replica_data(c, event).is_some())
    }

    fn merge(&self, local: usize, partition: PartitionId) -> Vec<PreparedOp> {
        let Some(container) = self.containers.get(local) else {
            return Vec::new();
        };
        let policy = |object: Option<&str>| self.policies.merge(object);
        let mut out = MergeOps {
            partition,
            policy: &policy,
            ops: Vec::new(),
        };
        S::merge(container, &mut out);
        out.ops
    }
}

pub(crate) fn run_op<O: Operation>(
    slot: &mut dyn ErasedSlot,
    target: &Target<'_>,
    payload: &[u8],
    out: &mut Bytes,
) -> Result<Option<BackupWork>, OpError> {
    let (response, work) = run_typed::<O>(slot, target, payload)?;
    encode_into(&response, out).map_err(crate::object::encode_error)?;
    Ok(work)
}

/// [`run_op`] with the response as it is, not archived: for a caller on the same shard that
/// knows the operation's type (see `Invoker::invoke_as`).
pub(crate) fn run_typed<O: Operation>(
    slot: &mut dyn ErasedSlot,
    target: &Target<'_>,
    payload: &[u8],
) -> Result<(O::Response, Option<BackupWork>), OpError> {
    let service_id = <O::Service as Service>::ID;
    let slot = slot
        .as_any_mut()
        .downcast_mut::<ServiceSlot<O::Service>>()
        .ok_or(OpError::UnknownOperation {
            service: service_id,
            op: O::ID,
        })?;
    let op = access::<O>(payload).map_err(|e| OpError::MalformedPayload {
        service: service_id,
        op: O::ID,
        reason: e.to_string(),
    })?;
    let policy = slot.policies.get(O::object_name(op));
    if target.mode == Mode::BackupRead && !(O::READS_ONLY && policy.read_backup_data) {
        // Not readable here: the caller asks the owner.
        return Err(OpError::WrongTarget {
            partition: target.partition,
            version: 0,
        });
    }
    let container = slot
        .containers
        .get_mut(target.local)
        .ok_or(OpError::WrongShard {
            partition: target.partition,
            shard: target.shard,
        })?;
    let mut ctx = OpContext {
        service: &mut slot.service,
        container,
        partition: target.partition,
        replica: target.replica,
        member: target.member,
        events: crate::events::Events::new(
            (target.mode == Mode::Owner).then_some(target.events),
            service_id,
        ),
    };
    let response = O::run(op, &mut ctx)?;
    if target.mode != Mode::Owner
        || !target.replicated
        || O::READS_ONLY
        || !O::should_backup(op, &response)
    {
        return Ok((response, None));
    }
    let sync = O::sync_backup_count(op).unwrap_or(policy.sync);
    let async_ = O::async_backup_count(op).unwrap_or(policy.async_);
    if sync == 0 && async_ == 0 {
        // No replica takes it: the write is remembered for retries without building a backup.
        let work = BackupWork {
            service: service_id,
            op: O::ID,
            payload: Bytes::new(),
            sync,
            async_,
        };
        return Ok((response, Some(work)));
    }
    let Some(backup) = O::backup_operation(op, &response) else {
        return Ok((response, None));
    };
    let payload = match backup.payload {
        Ok(payload) => payload,
        Err(e) => {
            // The write happened; its backups will be repaired by anti-entropy.
            tracing::error!(service = %service_id, op = %O::ID, error = %e, "backup operation not sent");
            return Ok((response, None));
        }
    };
    let work = BackupWork {
        service: backup.service,
        op: backup.op,
        payload,
        sync,
        async_,
    };
    Ok((response, Some(work)))
}

/// Starts a service on a shard: `init`, then one default container per partition slot.
type StartFn =
    fn(&ServiceContext, &Properties, usize, Policies) -> Result<Box<dyn ErasedSlot>, ServiceError>;

/// A registered operation's entry: id, type name, how to run it, whether it only reads.
type OpEntry = (OpId, &'static str, OpFn, bool);

/// How to start one service on a shard; cloned into every shard thread.
#[derive(Clone)]
pub(crate) struct ServiceFactory {
    pub name: &'static str,
    pub id: ServiceId,
    start: StartFn,
    ops: Vec<OpEntry>,
}

impl ServiceFactory {
    pub fn of<S: Service>() -> Self {
        let mut ops = Operations::<S>::new();
        S::operations(&mut ops);
        Self {
            name: S::NAME,
            id: S::ID,
            start: start_slot::<S>,
            ops: ops.entries,
        }
    }

    /// Whether two operations of this service share an id; names both when they do.
    pub fn duplicate_op(&self) -> Option<(OpId, &'static str, &'static str)> {
        self.ops
            .iter()
            .enumerate()
            .find_map(|(i, (id, name, _, _))| {
                self.ops[..i]
                    .iter()
                    .find(|(other, _, _, _)| other == id)
                    .map(|(_, first, _, _)| (*id, *first, *name))
            })
    }

    pub fn start(
        &self,
        ctx: &ServiceContext,
        properties: &Properties,
        slots: usize,
        policies: Policies,
    ) -> Result<Box<dyn ErasedSlot>, ServiceError> {
        (self.start)(ctx, properties, slots, policies)
    }
}

fn start_slot<S: Service>(
    ctx: &ServiceContext,
    properties: &Properties,
    slots: usize,
    policies: Policies,
) -> Result<Box<dyn ErasedSlot>, ServiceError> {
    let service = S::init(ctx, properties)?;
    let containers = (0..slots).map(|_| S::Container::default()).collect();
    Ok(Box::new(ServiceSlot {
        service,
        containers,
        policies,
    }))
}

/// A registered operation: which slot it runs against, and how.
#[derive(Clone, Copy)]
pub(crate) struct Handler {
    pub slot: usize,
    pub run: OpFn,
    pub reads_only: bool,
}

/// `(service, op)` → handler, for the services started on one shard: ids under [`DENSE`] (every
/// built-in service's) in a table indexed by them, looked up on every operation without hashing;
/// others in a hash map.
#[derive(Default)]
pub(crate) struct Dispatch {
    /// By service id, then operation id.
    dense: Vec<Vec<Option<Handler>>>,
    handlers: AHashMap<(ServiceId, OpId), Handler>,
    slots_by_service: AHashMap<ServiceId, usize>,
}

/// Service and operation ids below this are looked up by index.
const DENSE: u16 = 256;

/// Where `(service, op)` sits in [`Dispatch`]'s table, if both ids are under [`DENSE`].
fn dense_index(service: ServiceId, op: OpId) -> Option<(usize, usize)> {
    (service.0 < DENSE && op.0 < DENSE).then(|| (usize::from(service.0), usize::from(op.0)))
}

impl Dispatch {
    pub fn add(&mut self, slot: usize, factory: &ServiceFactory) {
        self.slots_by_service.insert(factory.id, slot);
        for (op, _, run, reads_only) in &factory.ops {
            let handler = Handler {
                slot,
                run: *run,
                reads_only: *reads_only,
            };
            let Some((s, o)) = dense_index(factory.id, *op) else {
                self.handlers.insert((factory.id, *op), handler);
                continue;
            };
            if self.dense.len() <= s {
                self.dense.resize_with(s + 1, Vec::new);
            }
            let ops = &mut self.dense[s];
            if ops.len() <= o {
                ops.resize(o + 1, None);
            }
            ops[o] = Some(handler);
        }
    }

    fn find(&self, service: ServiceId, op: OpId) -> Option<&Handler> {
        match dense_index(service, op) {
            Some((s, o)) => self.dense.get(s)?.get(o)?.as_ref(),
            None => self.handlers.get(&(service, op)),
        }
    }

    pub fn handler(&self, service: ServiceId, op: OpId) -> Result<Handler, OpError> {
        self.find(service, op)
            .copied()
            .ok_or(OpError::UnknownOperation { service, op })
    }

    pub fn slot_of(&self, service: ServiceId) -> Option<usize> {
        self.slots_by_service.get(&service).copied()
    }

    /// The service whose slot is `slot`.
    pub fn service_of(&self, slot: usize) -> Option<ServiceId> {
        self.slots_by_service
            .iter()
            .find(|(_, s)| **s == slot)
            .map(|(id, _)| *id)
    }

    /// Whether `(service, op)` is registered as an operation that only reads.
    pub fn reads_only(&self, service: ServiceId, op: OpId) -> bool {
        self.find(service, op).is_some_and(|h| h.reads_only)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(
        _: &mut dyn ErasedSlot,
        _: &Target<'_>,
        _: &[u8],
        _: &mut Bytes,
    ) -> Result<Option<BackupWork>, OpError> {
        Ok(None)
    }

    fn start(
        _: &ServiceContext,
        _: &Properties,
        _: usize,
        _: Policies,
    ) -> Result<Box<dyn ErasedSlot>, ServiceError> {
        Err(ServiceError::new("not started in this test"))
    }

    fn factory(id: u16, ops: &[(u16, bool)]) -> ServiceFactory {
        ServiceFactory {
            name: "test",
            id: ServiceId(id),
            start,
            ops: ops
                .iter()
                .map(|&(op, reads)| (OpId(op), "op", run as OpFn, reads))
                .collect(),
        }
    }

    #[test]
    fn operations_are_found_by_index_below_the_dense_bound_and_by_hash_above_it() {
        let mut dispatch = Dispatch::default();
        dispatch.add(0, &factory(16, &[(1, false), (3, true)]));
        dispatch.add(1, &factory(300, &[(2, true)]));
        dispatch.add(2, &factory(17, &[(1000, true)]));
        let found = |s: u16, o: u16| {
            dispatch
                .handler(ServiceId(s), OpId(o))
                .map(|h| (h.slot, h.reads_only))
        };
        assert_eq!(found(16, 1).ok(), Some((0, false)));
        assert_eq!(found(16, 3).ok(), Some((0, true)));
        assert_eq!(found(300, 2).ok(), Some((1, true)));
        assert_eq!(found(17, 1000).ok(), Some((2, true)));
        assert!(dispatch.reads_only(ServiceId(16), OpId(3)));
        assert!(!dispatch.reads_only(ServiceId(16), OpId(1)));
        // Unknown: a gap in the table, past its end, a service never added, either side.
        for (s, o) in [
            (16, 2),
            (16, 4),
            (16, 255),
            (15, 1),
            (17, 1),
            (200, 1),
            (300, 1),
        ] {
            assert!(
                matches!(
                    dispatch.handler(ServiceId(s), OpId(o)),
                    Err(OpError::UnknownOperation { service, op })
                        if service == ServiceId(s) && op == OpId(o)
                ),
                "({s}, {o})"
            );
            assert!(!dispatch.reads_only(ServiceId(s), OpId(o)));
        }
    }
}
