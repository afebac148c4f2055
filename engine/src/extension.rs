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
use crate::payload::Bytes;
use crate::shard;
use crate::spi::{MemberInfo, OpError, OpId, ServiceId};

/// A forwarded operation's answer: the archived response, or why there is none.
pub type RemoteAnswer = Pin<Box<dyn Future<Output = Result<Bytes, OpError>>>>;

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

    /// The shard is stopping: close listeners and connections (called on the shard's thread).
    fn shutdown(&self) {}
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

/// Runs an operation that reached this shard from elsewhere (a socket) on `partition`, which this
/// shard must hold, archiving the response into `out`. Does not consult the router: the caller
/// checked ownership.
///
/// Errors: `Unavailable` when called outside a shard's thread, and whatever the operation answers.
pub fn execute_here(
    partition: PartitionId,
    service: ServiceId,
    op: OpId,
    payload: &[u8],
    out: &mut Bytes,
) -> Result<(), OpError> {
    shard::with_current_core(|core| core.execute(partition, service, op, payload, out)).unwrap_or(
        Err(OpError::Unavailable {
            partition,
            reason: "not called on a shard".into(),
        }),
    )
}

/// A member joined or left the cluster: tells every service on this shard.
pub fn membership_changed(event: &crate::spi::MembershipEvent) {
    let _ = shard::with_current_core(|core| core.membership_changed(event));
}
