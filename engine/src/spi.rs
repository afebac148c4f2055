//! The service provider interface: how a custom distributed service plugs into corecast.
//!
//! Owns the traits a service implements and the types its code sees:
//! - [`Service`]: lifecycle (init with properties, shutdown, reset), the per-partition
//!   [`Service::Container`], distributed objects (create, destroy), migration awareness
//!   (replica data, before / commit / rollback, clear replica) and split-brain merging
//!   ([`Service::merge`] into [`MergeOps`], under a [`MergePolicy`]).
//! - [`Operation`]: an rkyv-archived request identified by `(ServiceId, OpId)`, run on the shard
//!   that owns its partition against that partition's container, read in place; with its backup
//!   awareness (sync and async counts, should-backup, the backup operation).
//! - [`DistributedObject`]: the typed proxy a caller holds; its methods become operations.
//!
//! It leaves to others: routing ([`crate::invocation`]), the shard loop ([`crate::shard`]) and
//! the cluster machinery that will call the backup and migration parts.
//!
//! A service is instantiated once **per shard**: `init` runs on every shard's thread, and the
//! shard owns that instance and the containers of its partitions. Nothing here is shared between
//! threads, so containers are plain structs.
//!
//! # Examples
//!
//! A tiny register service: one value per object name.
//!
//! ```
//! use corecast_engine::prelude::*;
//!
//! struct Registers;
//!
//! impl Service for Registers {
//!     const NAME: &'static str = "registers";
//!     const ID: ServiceId = ServiceId(200);
//!     type Container = ahash::AHashMap<String, u64>;
//!     type ReplicaData = Vec<(String, u64)>;
//!
//!     fn init(_: &ServiceContext, _: &Properties) -> Result<Self, ServiceError> {
//!         Ok(Registers)
//!     }
//!     fn operations(ops: &mut Operations<Self>) {
//!         ops.add::<Store>();
//!     }
//!     fn destroy_object(&mut self, c: &mut Self::Container, name: &str) {
//!         c.remove(name);
//!     }
//!     fn replica_data(c: &Self::Container, _: &ReplicationEvent) -> Option<Self::ReplicaData> {
//!         Some(c.iter().map(|(k, v)| (k.clone(), *v)).collect())
//!     }
//!     fn apply_replica_data(c: &mut Self::Container, data: &Archived<Self::ReplicaData>) {
//!         c.extend(data.iter().map(|e| (e.0.to_string(), e.1.to_native())));
//!     }
//! }
//!
//! /// Stores a value, answers the previous one.
//! #[derive(Archive, Serialize, Deserialize)]
//! struct Store { name: String, value: u64 }
//!
//! impl Operation for Store {
//!     type Service = Registers;
//!     type Response = Option<u64>;
//!     const ID: OpId = OpId(1);
//!     fn run(op: &Archived<Self>, ctx: &mut OpContext<Registers>) -> Result<Option<u64>, OpError> {
//!         Ok(ctx.container.insert(op.name.to_string(), op.value.to_native()))
//!     }
//! }
//!
//! let mut p = corecast_engine::testkit::PartitionHarness::<Registers>::new().unwrap();
//! assert_eq!(p.run(&Store { name: "r".into(), value: 7 }).unwrap(), None);
//! assert_eq!(p.run(&Store { name: "r".into(), value: 8 }).unwrap(), Some(7));
//! ```

use std::fmt;
use std::marker::PhantomData;
use std::net::SocketAddr;

use rkyv::Archived;

use crate::config::Properties;
pub use crate::config::{EntryStats, MergePolicy};
use crate::partition::{PartitionCount, PartitionId, ShardCount, ShardId};
use crate::payload::{encode, Bytes, Payload};
use crate::registry::OpFn;

/// A service's identity on the wire. Ids below 16 are the engine's own.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ServiceId(pub u16);

impl fmt::Display for ServiceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "service {}", self.0)
    }
}

/// An operation's identity within its service.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct OpId(pub u16);

impl fmt::Display for OpId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "operation {}", self.0)
    }
}

/// A replica slot of a partition: 0 is the owner (primary), 1..=6 are backups.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ReplicaIndex(pub u8);

impl fmt::Display for ReplicaIndex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "replica {}", self.0)
    }
}

impl ReplicaIndex {
    /// The owner's slot.
    pub const PRIMARY: ReplicaIndex = ReplicaIndex(0);
    /// The highest replica slot (six backups, as in Hazelcast).
    pub const MAX: ReplicaIndex = ReplicaIndex(6);

    /// Whether this slot is a backup.
    pub fn is_backup(self) -> bool {
        self.0 > 0
    }
}

/// Who a member is, as services see it: its cluster name and address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberInfo {
    /// The member's (or client's) id: unique in the cluster, random per process run. Services
    /// record it as the owner of what dies with the member (a lock).
    pub id: u64,
    /// The cluster this member belongs to.
    pub cluster_name: String,
    /// The member's address (its bind address; shard `i` listens on `port + i`).
    pub address: SocketAddr,
}

/// A change in the cluster's member list, as services and listeners see it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MembershipEvent {
    /// A member joined.
    Added(MemberInfo),
    /// A member left or was removed by the failure detector.
    Removed(MemberInfo),
    /// A smart client's connection to this member closed (it died, disconnected or shut down).
    /// Told on each member whose first shard the client was connected to (its control
    /// connection is one).
    ClientLeft {
        /// The client's id.
        id: u64,
    },
}

/// What a service's `init` learns about the shard it runs on.
#[derive(Clone, Debug)]
pub struct ServiceContext {
    /// The member the shard belongs to.
    pub member: MemberInfo,
    /// This shard.
    pub shard: ShardId,
    /// How many shards the member runs.
    pub shards: ShardCount,
    /// The cluster's partition count.
    pub partitions: PartitionCount,
    /// Invokes operations from the service's own tasks on this shard (a lock service releasing
    /// what a dead member held, say).
    pub invoker: crate::Invoker,
}

impl ServiceContext {
    /// The partitions this shard holds containers for.
    pub fn local_partitions(&self) -> impl Iterator<Item = PartitionId> {
        self.shards.partitions_of(self.shard, self.partitions)
    }
}

/// A service failed to start.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct ServiceError {
    /// What went wrong, for the log and the start error.
    pub reason: String,
}

impl ServiceError {
    /// A start failure with its reason.
    pub fn new(reason: impl Into<String>) -> Self {
        Self {
            reason: reason.into(),
        }
    }
}

impl From<crate::config::ConfigError> for ServiceError {
    fn from(e: crate::config::ConfigError) -> Self {
        Self::new(e.to_string())
    }
}

/// Why an operation did not produce a response. Crosses threads (and later sockets) by value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpError {
    /// No operation is registered under these ids on this member.
    #[error("no {op} registered for {service}")]
    UnknownOperation {
        /// The service id the caller named.
        service: ServiceId,
        /// The operation id the caller named.
        op: OpId,
    },
    /// The service is not running on this member (not compiled in, or disabled by config).
    #[error("{service} is not running on this member")]
    UnknownService {
        /// The service id the caller named.
        service: ServiceId,
    },
    /// The payload did not validate as the operation's archived type.
    #[error("malformed payload for {op} of {service}: {reason}")]
    MalformedPayload {
        /// The service id of the operation.
        service: ServiceId,
        /// The operation id.
        op: OpId,
        /// What validation found.
        reason: String,
    },
    /// The partition is not held by the shard the operation reached.
    #[error("{partition} is not held by {shard}")]
    WrongShard {
        /// The partition the operation named.
        partition: PartitionId,
        /// The shard it reached.
        shard: ShardId,
    },
    /// The partition id is not below the cluster's partition count.
    #[error("{partition} does not exist (partition count {count})")]
    NoSuchPartition {
        /// The partition the operation named.
        partition: PartitionId,
        /// The cluster's partition count.
        count: u32,
    },
    /// A value could not be archived.
    #[error("cannot encode {what}: {reason}")]
    Encode {
        /// What was being encoded.
        what: &'static str,
        /// rkyv's reason.
        reason: String,
    },
    /// The service refused or failed the operation; the text is the service's.
    #[error("{0}")]
    Failed(String),
    /// The member the operation reached does not own the partition under its partition table.
    #[error("{partition} is not owned by this member (partition table version {version})")]
    WrongTarget {
        /// The partition the operation named.
        partition: PartitionId,
        /// The table version of the member that refused it.
        version: u64,
    },
    /// The operation got no answer from the partition's owner within the invocation timeout.
    #[error("invocation on {partition} (owner {target}) gave up after {millis} ms: {reason}")]
    Timeout {
        /// The partition the operation named.
        partition: PartitionId,
        /// The owner it was last sent to (address, or "none" if the partition had no owner).
        target: String,
        /// The invocation timeout.
        millis: u64,
        /// The last failure seen.
        reason: String,
    },
    /// The partition is moving between members: the caller retries, against its new owner once
    /// the partition table names it.
    #[error("{partition} is migrating")]
    Migrating {
        /// The partition the operation named.
        partition: PartitionId,
    },
    /// The owner has as much in hand on the caller's connection as it takes
    /// (`network.max-pending-acks` requests waiting for their backups' acks): the caller backs
    /// off and retries, and meets this as the reason of its `Timeout` if the owner stays
    /// overloaded for the whole invocation timeout.
    #[error("{partition}: the owner is overloaded ({pending} requests on the connection wait for backup acks)")]
    Overloaded {
        /// The partition the operation named.
        partition: PartitionId,
        /// The requests that were waiting for acks on the caller's connection.
        pending: u32,
    },
    /// The operation cannot be sent: this member or client is not part of a cluster yet, or is
    /// leaving it.
    #[error("{partition} is unavailable: {reason}")]
    Unavailable {
        /// The partition the operation named.
        partition: PartitionId,
        /// Why.
        reason: String,
    },
}

impl OpError {
    /// A service-defined failure.
    pub fn failed(reason: impl Into<String>) -> Self {
        Self::Failed(reason.into())
    }
}

/// A partition-aware operation: an rkyv type that runs on the shard owning its partition.
///
/// `run` receives the archived request **in place** (validated, never copied) and the context
/// with the service instance and the partition's container. It returns the response, which is
/// archived back to the caller.
///
/// Backup awareness: after a successful `run` on the owner, if [`should_backup`](Self::should_backup)
/// and [`backup_operation`](Self::backup_operation) give a backup, it is sent to
/// `sync_backup_count` replicas that must ack before the caller is answered, and to
/// `async_backup_count` more, fire and forget. With fewer members than replicas, fewer backups
/// are sent. A backup operation is itself an `Operation` of the same service, registered like any
/// other, and runs with a backup [`ReplicaIndex`] in its context, on the backup replicas in the
/// order the owner ran the writes.
pub trait Operation: Payload {
    /// The service whose containers this operation runs against.
    type Service: Service;
    /// What the caller gets back.
    type Response: Payload;
    /// The operation's id within its service.
    const ID: OpId;

    /// Runs the operation against the partition's container.
    ///
    /// Errors: whatever the service decides ([`OpError::failed`]); the caller sees it as an
    /// [`crate::InvocationError::Operation`].
    fn run(
        op: &Archived<Self>,
        ctx: &mut OpContext<'_, Self::Service>,
    ) -> Result<Self::Response, OpError>;

    /// True for an operation that changes nothing: with `read-backup-data` on, a member holding
    /// a backup replica may run it there instead of asking the owner.
    const READS_ONLY: bool = false;

    /// The object the operation acts on, when its replica counts may be set per object
    /// (`[[services.objects]]`, a map by name); `None` uses the service's.
    fn object_name(_op: &Archived<Self>) -> Option<&str> {
        None
    }

    /// Sync backups this operation asks for; `None` takes the configured `backup-count`.
    fn sync_backup_count(_op: &Archived<Self>) -> Option<u8> {
        None
    }

    /// Async backups this operation asks for; `None` takes the configured `async-backup-count`.
    fn async_backup_count(_op: &Archived<Self>) -> Option<u8> {
        None
    }

    /// Whether this run changed anything that backups must see.
    fn should_backup(_op: &Archived<Self>, _response: &Self::Response) -> bool {
        true
    }

    /// The operation backups run; `None` (the default) means the operation changes nothing.
    fn backup_operation(_op: &Archived<Self>, _response: &Self::Response) -> Option<Backup> {
        None
    }
}

/// A backup operation, archived and ready to send to backup replicas.
#[derive(Debug)]
pub struct Backup {
    pub(crate) service: ServiceId,
    pub(crate) op: OpId,
    pub(crate) payload: Result<Bytes, OpError>,
}

impl Backup {
    /// Archives `op` as the backup of the operation being run.
    pub fn of<B: Operation>(op: &B) -> Backup {
        let payload = encode(op).map_err(|e| OpError::Encode {
            what: "backup operation",
            reason: e.to_string(),
        });
        Backup {
            service: <B::Service as Service>::ID,
            op: B::ID,
            payload,
        }
    }

    /// The backup operation's ids.
    pub fn ids(&self) -> (ServiceId, OpId) {
        (self.service, self.op)
    }
}

/// What an operation sees while it runs: its service instance, its partition's container, and
/// where it runs.
pub struct OpContext<'a, S: Service> {
    /// The service instance of this shard.
    pub service: &'a mut S,
    /// The container of the operation's partition, for this service.
    pub container: &'a mut S::Container,
    pub(crate) partition: PartitionId,
    pub(crate) replica: ReplicaIndex,
    pub(crate) member: &'a MemberInfo,
    pub(crate) events: crate::events::Events<'a>,
}

impl<'a, S: Service> OpContext<'a, S> {
    /// The partition the operation runs on.
    pub fn partition(&self) -> PartitionId {
        self.partition
    }

    /// The replica slot this member holds for the partition (0 when running as the owner).
    pub fn replica_index(&self) -> ReplicaIndex {
        self.replica
    }

    /// This member's address, as the tutorial's log lines print it.
    pub fn address(&self) -> SocketAddr {
        self.member.address
    }

    /// This member.
    pub fn member(&self) -> &MemberInfo {
        self.member
    }

    /// Where this run publishes events: the object's listeners when running as the partition's
    /// owner, nowhere on a backup.
    pub fn events(&self) -> &crate::events::Events<'a> {
        &self.events
    }
}

/// Asks a source replica for the data a destination needs (Hazelcast's `PartitionReplicationEvent`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReplicationEvent {
    /// The partition being copied.
    pub partition: PartitionId,
    /// The replica slot the destination will hold.
    pub replica_index: ReplicaIndex,
}

/// Which end of a migration a callback runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MigrationEndpoint {
    /// The member the partition replica moves away from.
    Source,
    /// The member the partition replica moves to.
    Destination,
}

/// A partition replica moving between members (Hazelcast's `PartitionMigrationEvent`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MigrationEvent {
    /// The partition that moves.
    pub partition: PartitionId,
    /// Which end this callback runs on.
    pub endpoint: MigrationEndpoint,
    /// The replica slot this member holds before the migration; `None` if it holds none.
    pub current_replica: Option<ReplicaIndex>,
    /// The replica slot this member holds after it; `None` if it holds none.
    pub new_replica: Option<ReplicaIndex>,
}

/// A service compiled into the member, registered by [`Service::NAME`] and enabled by config.
///
/// One instance per shard (see the module docs). Every method runs on that shard's thread.
/// Required: the names, the container type, `init`, the operations, how an object's state is
/// destroyed, and how a partition's container is copied to another replica. Everything else has
/// a default that does what most services want.
pub trait Service: Sized + 'static {
    /// The name the config and callers use (`[[services]] name = "…"`).
    const NAME: &'static str;
    /// The id frames carry. Ids below 16 are reserved for the engine.
    const ID: ServiceId;
    /// The state of one partition for this service. One per partition the shard holds.
    type Container: Default + 'static;
    /// What a replica of one partition carries when copied (migration, backup repair).
    type ReplicaData: Payload;

    /// Starts the service on a shard with its configured properties.
    ///
    /// Errors: a [`ServiceError`] (for example a property of the wrong type) stops the member
    /// from starting, and the start error names the service and the shard.
    fn init(ctx: &ServiceContext, properties: &Properties) -> Result<Self, ServiceError>;

    /// Registers the operations (and backup operations) this service answers.
    fn operations(ops: &mut Operations<Self>);

    /// Called on every shard when the member shuts down; `terminate` is true for a hard stop.
    fn shutdown(&mut self, _terminate: bool) {}

    /// Drops all state, as when a member rejoins a cluster after a split brain.
    fn reset(&mut self) {}

    /// A member joined or left the cluster (membership awareness). Called on every shard.
    fn membership_changed(&mut self, _event: &MembershipEvent) {}

    /// A distributed object was created by name; runs on the partition of the name.
    fn create_object(&mut self, _container: &mut Self::Container, _name: &str) {}

    /// A distributed object was destroyed; runs on **every** partition's container, which must
    /// drop whatever it holds for `name`.
    fn destroy_object(&mut self, container: &mut Self::Container, name: &str);

    /// The data a destination needs to hold `event.replica_index` of the partition; `None` when
    /// there is nothing to send.
    fn replica_data(
        container: &Self::Container,
        event: &ReplicationEvent,
    ) -> Option<Self::ReplicaData>;

    /// Applies replica data prepared by [`Service::replica_data`] on another member, read in place.
    fn apply_replica_data(container: &mut Self::Container, data: &Archived<Self::ReplicaData>);

    /// A migration of one of this shard's partitions is about to start.
    fn before_migration(&mut self, _event: &MigrationEvent) {}

    /// A migration finished. Default: the source drops the data if it keeps no replica.
    fn commit_migration(&mut self, container: &mut Self::Container, event: &MigrationEvent) {
        if event.endpoint == MigrationEndpoint::Source && event.new_replica.is_none() {
            Self::clear_replica(container);
        }
    }

    /// A migration failed. Default: the destination drops what it received if it held nothing.
    fn rollback_migration(&mut self, container: &mut Self::Container, event: &MigrationEvent) {
        if event.endpoint == MigrationEndpoint::Destination && event.current_replica.is_none() {
            Self::clear_replica(container);
        }
    }

    /// Called every `service-tick-millis` for each partition this shard holds a container for
    /// (owned, backed up, or empty): expiry and other timed work. Default: nothing.
    fn tick(&mut self, _container: &mut Self::Container, _ctx: &crate::events::TickContext<'_>) {}

    /// Drops a partition replica's data. Default: a fresh container.
    fn clear_replica(container: &mut Self::Container) {
        *container = Self::Container::default();
    }

    /// Split-brain merge, on the owner of a partition in the cluster that lost (the smaller
    /// side), just before its data is dropped to join the other cluster: pushes to `out` the
    /// operations of this service that carry `container`'s contents over. They run on the
    /// partition's owner in the cluster joined, once this member is in it, and are backed up
    /// like any write; each applies the policy [`MergeOps::policy`] gives its object, comparing
    /// what it carries with what is there (Hazelcast's `SplitBrainHandlerService` and merge
    /// policies). Default: nothing, so this service's data on the smaller side is dropped.
    fn merge(_container: &Self::Container, _out: &mut MergeOps<'_>) {}
}

/// What [`Service::merge`] hands over: archived operations for one partition, with the merge
/// policy of each object.
pub struct MergeOps<'a> {
    pub(crate) partition: PartitionId,
    pub(crate) policy: &'a dyn Fn(Option<&str>) -> MergePolicy,
    pub(crate) ops: Vec<PreparedOp>,
}

impl MergeOps<'_> {
    /// The partition being merged.
    pub fn partition(&self) -> PartitionId {
        self.partition
    }

    /// The merge policy of the object `name` (`None`: the service's own).
    pub fn policy(&self, name: Option<&str>) -> MergePolicy {
        (self.policy)(name)
    }

    /// Adds `op`, archived, to run on the partition's owner in the cluster joined.
    ///
    /// Errors: [`OpError::Encode`] if it does not archive (nothing is added).
    pub fn push<O: Operation>(&mut self, op: &O) -> Result<(), OpError> {
        let payload = encode(op).map_err(|e| OpError::Encode {
            what: "merge operation",
            reason: e.to_string(),
        })?;
        self.ops.push(PreparedOp {
            partition: self.partition,
            service: <O::Service as Service>::ID,
            op: O::ID,
            payload,
        });
        Ok(())
    }
}

/// An operation archived for a partition, to be invoked later
/// ([`crate::Invoker::invoke_prepared`]): a split-brain merge's.
#[derive(Debug, Clone)]
pub struct PreparedOp {
    /// Where it runs.
    pub partition: PartitionId,
    /// Its service.
    pub service: ServiceId,
    /// Its id within the service.
    pub op: OpId,
    /// The archived operation.
    pub payload: Bytes,
}

/// The operations a service registers; passed to [`Service::operations`].
pub struct Operations<S: Service> {
    pub(crate) entries: Vec<(OpId, &'static str, OpFn, bool)>,
    _service: PhantomData<fn() -> S>,
}

impl<S: Service> Operations<S> {
    pub(crate) fn new() -> Self {
        Self {
            entries: Vec::new(),
            _service: PhantomData,
        }
    }

    /// Registers operation `O` (a request or a backup operation) under `O::ID`.
    pub fn add<O: Operation<Service = S>>(&mut self) -> &mut Self {
        self.entries.push((
            O::ID,
            std::any::type_name::<O>(),
            crate::registry::run_op::<O>,
            O::READS_ONLY,
        ));
        self
    }
}

/// A typed proxy for a distributed object: what `member.object::<T>(name)` returns.
///
/// The proxy holds an [`crate::ObjectHandle`] (name, home partition, a way to invoke) and turns
/// its methods into operations. It holds no state of the object itself.
pub trait DistributedObject: Sized {
    /// The service the object belongs to.
    type Service: Service;

    /// Wraps a handle to an object of this service.
    fn from_handle(handle: crate::object::ObjectHandle) -> Self;
}
