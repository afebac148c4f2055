//! Unit-testing a service without a member: one partition's container, driven through the same
//! paths a shard uses (archived request read in place, archived response, backup operations run
//! as backups, replica data archived and applied on another replica).
//!
//! Owns: [`PartitionHarness`]. Leaves the real shards and cluster to the rest of the engine.
//!
//! # Examples
//!
//! See [`crate::spi`] for a service driven through a harness.

use std::net::{Ipv4Addr, SocketAddr};

use crate::config::Properties;
use crate::partition::{PartitionCount, PartitionId, ShardCount, ShardId};
use crate::payload::{access, decode, encode, Bytes};
use crate::registry::{ErasedSlot, Mode, OpFn, Policies, ServiceSlot, Target};
use crate::spi::{
    MemberInfo, MigrationEndpoint, MigrationEvent, OpError, OpId, Operation, Operations,
    ReplicaIndex, ReplicationEvent, Service, ServiceContext, ServiceError,
};

/// One partition replica of service `S`: a service instance and the partition's container.
pub struct PartitionHarness<S: Service> {
    slot: ServiceSlot<S>,
    ops: Vec<(OpId, &'static str, OpFn, bool)>,
    member: MemberInfo,
    partition: PartitionId,
    replica: ReplicaIndex,
    events: crate::events::EventHub,
}

impl<S: Service> PartitionHarness<S> {
    /// A harness for partition 0 as its owner, with no properties, at `127.0.0.1:5701`.
    ///
    /// Errors: whatever the service's `init` returns.
    pub fn new() -> Result<Self, ServiceError> {
        Self::with_properties(&Properties::default(), 5701)
    }

    /// A harness whose member listens on `port` (so log lines tell replicas apart), with
    /// `properties` for the service's `init`.
    ///
    /// Errors: whatever the service's `init` returns.
    pub fn with_properties(properties: &Properties, port: u16) -> Result<Self, ServiceError> {
        Self::with_config(&crate::Config::default(), properties, port)
    }

    /// Like [`PartitionHarness::with_properties`], with the replica and merge policies `config`
    /// gives the service and its objects.
    ///
    /// Errors: whatever the service's `init` returns.
    pub fn with_config(
        config: &crate::Config,
        properties: &Properties,
        port: u16,
    ) -> Result<Self, ServiceError> {
        let member = MemberInfo {
            id: u64::from(port),
            cluster_name: "testkit".into(),
            address: SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
        };
        let shards = ShardCount::new(1).ok_or_else(|| ServiceError::new("no shard"))?;
        let partitions = PartitionCount::new(1).ok_or_else(|| ServiceError::new("no partition"))?;
        let ctx = ServiceContext {
            member: member.clone(),
            shard: ShardId(0),
            shards,
            partitions,
            // Reaches no shard: operations a service invokes from a harness fail.
            invoker: crate::Invoker::new(Vec::new(), shards, partitions, member.clone()),
        };
        let mut ops = Operations::<S>::new();
        S::operations(&mut ops);
        Ok(Self {
            slot: ServiceSlot {
                service: S::init(&ctx, properties)?,
                containers: vec![S::Container::default()],
                policies: Policies::of(config, S::NAME),
            },
            ops: ops.entries,
            member,
            partition: PartitionId(0),
            replica: ReplicaIndex::PRIMARY,
            events: crate::events::EventHub::default(),
        })
    }

    /// Listens to object `name`'s events on this replica (published while it runs as the owner):
    /// the archived events, as a listener would receive them.
    pub fn listen(&mut self, name: &str, values: bool) -> flume::Receiver<Bytes> {
        let (tx, rx) = flume::unbounded();
        let spec = crate::events::ListenSpec {
            id: crate::events::random_id(),
            service: S::ID,
            name: name.to_owned(),
            values,
        };
        self.events
            .add(&spec, std::rc::Rc::new(crate::events::ChannelSink::new(tx)));
        rx
    }

    /// Runs the service's tick on the partition at time `now_millis`, as its owner (publishing
    /// events) or as a backup.
    pub fn tick(&mut self, now_millis: u64) {
        let owner = !self.replica.is_backup();
        let ctx = crate::events::TickContext {
            partition: self.partition,
            owner,
            now: now_millis,
            events: crate::events::Events::new(owner.then_some(&self.events), S::ID),
        };
        ErasedSlot::tick(&mut self.slot, 0, &ctx);
    }

    /// The partition's container.
    pub fn container(&self) -> &S::Container {
        &self.slot.containers[0]
    }

    /// The service instance.
    pub fn service_mut(&mut self) -> &mut S {
        &mut self.slot.service
    }

    /// Runs `op` as the partition's owner, through its archived form.
    ///
    /// Errors: the operation's own, or `UnknownOperation` when `S::operations` did not add it.
    pub fn run<O: Operation<Service = S>>(&mut self, op: &O) -> Result<O::Response, OpError> {
        let payload = encode(op).map_err(|e| encode_error("request", e))?;
        let out = self.run_archived(O::ID, &payload)?;
        decode::<O::Response>(&out).map_err(|e| OpError::MalformedPayload {
            service: S::ID,
            op: O::ID,
            reason: e.to_string(),
        })
    }

    /// Runs `op` as the owner, then its backup operation (if it asks for one) on each of
    /// `backups`, as replica 1, 2, …, the way an owner with that many backups would: the backup
    /// is built as the member builds it, from the response `run` returned (not from its archive,
    /// so fields a response does not archive still reach the backup).
    ///
    /// Errors: the first error of the operation or of a backup.
    pub fn run_with_backups<O: Operation<Service = S>>(
        &mut self,
        op: &O,
        backups: &mut [&mut PartitionHarness<S>],
    ) -> Result<O::Response, OpError> {
        let payload = encode(op).map_err(|e| encode_error("request", e))?;
        let (out, backup) = self.run_archived_with_backup(O::ID, &payload)?;
        let response = decode::<O::Response>(&out).map_err(|e| encode_error("response", e))?;
        run_backup(backup, backups)?;
        Ok(response)
    }

    /// Split-brain merge: the operations [`Service::merge`] makes of this replica's container
    /// (as the owner on the side that lost), run on `target` as the owner in the cluster joined,
    /// through their archives, with their backup operations on each of `backups`. Returns how
    /// many operations ran.
    ///
    /// Errors: the first error of a merge operation or of its backup.
    pub fn merge_into(
        &self,
        target: &mut PartitionHarness<S>,
        backups: &mut [&mut PartitionHarness<S>],
    ) -> Result<usize, OpError> {
        let ops = ErasedSlot::merge(&self.slot, 0, target.partition);
        for op in &ops {
            let (_, backup) = target.run_archived_with_backup(op.op, &op.payload)?;
            run_backup(backup, backups)?;
        }
        Ok(ops.len())
    }

    /// Moves this replica's data to `destination`, which becomes `replica` of the partition,
    /// through the migration-aware SPI: before-migration on both ends, replica data archived here
    /// and applied there, then commit on both (this end keeps no replica).
    pub fn migrate_to(&mut self, destination: &mut PartitionHarness<S>, replica: ReplicaIndex) {
        let (source_event, destination_event) = self.copy_replica(destination, replica);
        self.commit(&source_event);
        destination.commit(&destination_event);
    }

    /// Like [`PartitionHarness::migrate_to`], but the migration fails after the data arrived:
    /// rollback runs on both ends, and the destination must drop what it received.
    pub fn migrate_and_roll_back(
        &mut self,
        destination: &mut PartitionHarness<S>,
        replica: ReplicaIndex,
    ) {
        let (source_event, destination_event) = self.copy_replica(destination, replica);
        self.roll_back(&source_event);
        destination.roll_back(&destination_event);
    }

    /// The first half of a migration: before-migration on both ends, then the replica data
    /// copied over. Returns the source's and the destination's events.
    fn copy_replica(
        &mut self,
        destination: &mut PartitionHarness<S>,
        replica: ReplicaIndex,
    ) -> (MigrationEvent, MigrationEvent) {
        let (source_event, destination_event) = self.migration_events(replica);
        self.slot.service.before_migration(&source_event);
        destination
            .slot
            .service
            .before_migration(&destination_event);
        destination.receive_replica(self, replica);
        (source_event, destination_event)
    }

    fn migration_events(&self, replica: ReplicaIndex) -> (MigrationEvent, MigrationEvent) {
        let source = MigrationEvent {
            partition: self.partition,
            endpoint: MigrationEndpoint::Source,
            current_replica: Some(self.replica),
            new_replica: None,
        };
        let destination = MigrationEvent {
            endpoint: MigrationEndpoint::Destination,
            current_replica: None,
            new_replica: Some(replica),
            ..source
        };
        (source, destination)
    }

    fn receive_replica(&mut self, source: &PartitionHarness<S>, replica: ReplicaIndex) {
        let event = ReplicationEvent {
            partition: source.partition,
            replica_index: replica,
        };
        let Some(data) = S::replica_data(source.container(), &event) else {
            return;
        };
        // Through the archive, as it will cross the network: a service whose data does not
        // round-trip fails here rather than in a cluster.
        match encode(&data) {
            Ok(bytes) => match access::<S::ReplicaData>(&bytes) {
                Ok(archived) => S::apply_replica_data(&mut self.slot.containers[0], archived),
                Err(e) => panic!("replica data of {} does not validate: {e}", S::NAME),
            },
            Err(e) => panic!("replica data of {} does not archive: {e}", S::NAME),
        }
        self.replica = replica;
    }

    fn commit(&mut self, event: &MigrationEvent) {
        let (service, container) = (&mut self.slot.service, &mut self.slot.containers[0]);
        service.commit_migration(container, event);
    }

    fn roll_back(&mut self, event: &MigrationEvent) {
        let (service, container) = (&mut self.slot.service, &mut self.slot.containers[0]);
        service.rollback_migration(container, event);
    }

    fn run_archived(&mut self, op: OpId, payload: &[u8]) -> Result<Bytes, OpError> {
        self.run_archived_with_backup(op, payload)
            .map(|(out, _)| out)
    }

    fn run_archived_with_backup(
        &mut self,
        op: OpId,
        payload: &[u8],
    ) -> Result<(Bytes, Option<crate::registry::BackupWork>), OpError> {
        let run = self
            .ops
            .iter()
            .find(|(id, _, _, _)| *id == op)
            .map(|(_, _, run, _)| *run)
            .ok_or(OpError::UnknownOperation { service: S::ID, op })?;
        let target = Target {
            partition: self.partition,
            shard: ShardId(0),
            local: 0,
            replica: self.replica,
            mode: if self.replica.is_backup() {
                Mode::Backup
            } else {
                Mode::Owner
            },
            member: &self.member,
            events: &self.events,
            replicated: true,
        };
        let mut out = Bytes::new();
        let slot: &mut dyn ErasedSlot = &mut self.slot;
        let backup = run(slot, &target, payload, &mut out)?;
        Ok((out, backup))
    }
}

/// Runs an owner's backup (none, or one with no payload: nothing to send) on each of `backups`,
/// as replica 1, 2, ….
///
/// Errors: the first backup's error.
fn run_backup<S: Service>(
    backup: Option<crate::registry::BackupWork>,
    backups: &mut [&mut PartitionHarness<S>],
) -> Result<(), OpError> {
    let Some(backup) = backup.filter(|b| !b.payload.is_empty()) else {
        return Ok(());
    };
    for (i, replica) in backups.iter_mut().enumerate() {
        replica.replica = ReplicaIndex(i as u8 + 1);
        replica.run_archived(backup.op, &backup.payload)?;
    }
    Ok(())
}

fn encode_error(what: &'static str, e: rkyv::rancor::Error) -> OpError {
    OpError::Encode {
        what,
        reason: e.to_string(),
    }
}
