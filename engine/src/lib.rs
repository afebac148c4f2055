//! corecast-engine: the partition engine of corecast, a thread-per-core in-memory data grid.
//!
//! A member runs one glommio executor per shard; partition `p` lives on shard `p % shards`, and
//! that shard alone touches the partition's containers. Everything else reaches a partition by
//! sending its shard a message.
//!
//! Module map:
//! - [`partition`]: partition and shard ids, the stable key hash (`partition_of`).
//! - [`config`]: the member's TOML configuration and its errors.
//! - [`fuzz`]: fuzz target bodies (the config parser), replayed over `fuzz/corpus` by a test.
//! - [`cpu`]: process-wide CPU tuning at start-up (glibc string functions without AVX-512).
//! - [`payload`]: the rkyv bounds of operations and responses; encode, access in place, decode.
//! - [`spi`]: the service provider interface: [`Service`], [`Operation`], containers, backup and
//!   migration awareness, distributed object proxies.
//! - [`registry`] (crate-private): type-erased service slots and the `(service, op)` dispatch table.
//! - [`replica`]: replica versions, remembered answers by call id, backup and snapshot types.
//! - [`reply`] (crate-private): answers back to callers: oneshots for threads, completion
//!   messages for callers on shards.
//! - `outbox` (crate-private): a shard's calls to other shards and the answers it owes them,
//!   sent as one message per destination each scheduling round.
//! - [`shard`] (crate-private): one shard's state and its message loop on a glommio executor.
//! - `doorbell` (crate-private): waking a sleeping shard from another thread, on glommio's main
//!   ring; the liveness word the ticker watches.
//! - `kick` (crate-private): signalling a shard thread glommio put to sleep with its tasks
//!   runnable, so its `io_uring_enter` returns.
//! - [`extension`]: hooks for the network layer: per-shard routing to partition owners, running
//!   operations that arrived by socket.
//! - [`events`]: listener registrations per shard, publishing events from operations and ticks,
//!   the subscriber's [`events::Listener`].
//! - [`invocation`]: routing an operation to its partition's shard and awaiting the response.
//! - [`object`]: distributed objects by name: handles, creation, destruction, listing.
//! - [`member`]: the embedded API: start a member, get objects, run work on shards, shut down.
//! - [`migration`]: the master's migration planner: target table, migrations in flight,
//!   progress.
//! - [`memlock`] (crate-private): the locked-memory check glommio needs before starting.
//! - [`stats`]: per-shard operation counts and sampled service times, for metrics.
//! - [`table`]: the partition table: owner and backups per partition, versioned; balanced
//!   assignment and promotion.
//! - [`testkit`]: run one service's operations, backups and migrations against plain
//!   containers, without a member, for services' unit tests.

pub mod config;
pub mod cpu;
mod doorbell;
pub mod events;
pub mod extension;
pub mod fuzz;
pub mod invocation;
mod kick;
pub mod member;
mod memlock;
pub mod migration;
pub mod object;
mod outbox;
pub mod partition;
pub mod payload;
mod registry;
pub mod replica;
mod reply;
mod shard;
pub mod spi;
pub mod stats;
pub mod table;
pub mod testkit;

pub use config::{Config, ConfigError, Properties};
pub use invocation::{InvocationError, Invoker};
pub use member::{BlockingMember, Member, MemberBuilder, StartError};
pub use object::ObjectHandle;
pub use partition::{partition_of, PartitionCount, PartitionId, ShardCount, ShardId};
pub use payload::Payload;
pub use spi::{
    Backup, DistributedObject, MemberInfo, MembershipEvent, MigrationEndpoint, MigrationEvent,
    OpContext, OpError, OpId, Operation, Operations, ReplicaIndex, ReplicationEvent, Service,
    ServiceContext, ServiceError, ServiceId,
};

/// What a service implementation needs in scope.
pub mod prelude {
    pub use crate::config::Properties;
    pub use crate::events::{Events, Listener, TickContext};
    pub use crate::invocation::InvocationError;
    pub use crate::object::ObjectHandle;
    pub use crate::partition::{PartitionId, ShardId};
    pub use crate::spi::{
        Backup, DistributedObject, EntryStats, MergeOps, MergePolicy, MigrationEndpoint,
        MigrationEvent, OpContext, OpError, OpId, Operation, Operations, ReplicaIndex,
        ReplicationEvent, Service, ServiceContext, ServiceError, ServiceId,
    };
    pub use rkyv::{Archive, Archived, Deserialize, Serialize};
}
