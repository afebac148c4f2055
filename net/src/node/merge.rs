//! The runtime's half of a split-brain merge (the membership machine decides it; see
//! `membership.rs`): on [`Action::Merge`], every shard of this member hands over the merge
//! operations of the partitions its table says this member owns (`Service::merge`), drops all
//! its data and forgets its view of the cluster; once the member has joined the other cluster
//! and that cluster's table names an owner for every partition, shard 0 invokes the operations
//! there, where they are routed, run and backed up like any write.
//!
//! A shard collects and resets in one step on its own thread, before the view updates that
//! follow (messages to a shard run in order), so no operation runs between the collection and
//! the reset. Operations invoked into the new cluster are retried by the router up to the
//! invocation timeout like any call; one that still fails is counted and logged, not retried
//! again (the merging side's entry is lost, as Hazelcast loses it).

use corecast_engine::spi::PreparedOp;
use corecast_engine::InvocationError;

use super::*;

/// What merges this member took part in (for tests, logs and `cluster status`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MergeStats {
    /// Merges this member made into another cluster (its cluster lost a split brain).
    pub merges: u64,
    /// Whether one is under way (collected, not all invoked yet).
    pub in_progress: bool,
    /// Merge operations that ran in the cluster joined.
    pub ops_ok: u64,
    /// Merge operations that failed there.
    pub ops_failed: u64,
}

/// How many merge operations are in flight at once.
const IN_FLIGHT: usize = 64;

impl ShardNet {
    /// Shard 0, on [`Action::Merge`]: collects every shard's merge operations, resets the
    /// shards, and merges into the cluster at `target` once joined.
    pub(super) fn start_merge(self: &Rc<Self>, target: SocketAddr) {
        {
            let mut shared = self.net.lock();
            shared.merge.merges += 1;
            shared.merge.in_progress = true;
            shared.joined = false;
        }
        let mut ops = self.merge_and_forget(true);
        let others = self.forget_on_other_shards(true);
        let this = self.clone();
        glommio::spawn_local(async move {
            for shard in others {
                match shard.await {
                    Ok(more) => ops.extend(more),
                    Err(e) => tracing::warn!(error = %e, "a shard's merge data was not collected"),
                }
            }
            tracing::info!(
                operations = ops.len(),
                %target,
                "merge data collected and dropped here; joining the other cluster"
            );
            this.wait_for_whole_table().await;
            this.invoke_merge(ops).await;
        })
        .detach();
    }

    /// Shard 0, on [`Action::Reset`] (the cluster removed this member): every shard drops its
    /// data and view, collecting nothing; the member joins again as a new one would.
    pub(super) fn start_reset(self: &Rc<Self>) {
        self.net.lock().joined = false;
        self.merge_and_forget(false);
        for shard in self.forget_on_other_shards(false) {
            glommio::spawn_local(async move {
                let _ = shard.await;
            })
            .detach();
        }
    }

    /// Runs [`ShardNet::merge_and_forget`] on every shard but this one (shard 0), by message:
    /// each shard's merge operations (with `collect`), in shard order.
    fn forget_on_other_shards(
        &self,
        collect: bool,
    ) -> Vec<impl std::future::Future<Output = Result<Vec<PreparedOp>, InvocationError>>> {
        (1..self.shards.get())
            .map(|s| {
                self.invoker.run_on(ShardId(s), move || async move {
                    let sn = SHARD.with(|s| s.borrow().clone());
                    sn.map(|sn| sn.merge_and_forget(collect))
                        .unwrap_or_default()
                })
            })
            .collect()
    }

    /// On this shard: with `collect`, the merge operations of the partitions this member owns;
    /// then every container, replica version, migration and view dropped.
    fn merge_and_forget(&self, collect: bool) -> Vec<PreparedOp> {
        let me = self.net.id;
        let ops = {
            let view = self.view.borrow();
            let owned = |p: PartitionId| collect && view.table.owner(p) == Some(me);
            extension::merge_and_reset(&owned)
        };
        self.syncing.borrow_mut().clear();
        self.fenced.borrow_mut().clear();
        *self.view.borrow_mut() = View {
            members: Vec::new(),
            list_version: 0,
            table: PartitionTable::empty(self.partitions, 1),
        };
        self.expire_migrations();
        // Nothing installed here stays for a table to decide on: it was all dropped.
        self.orphans.borrow_mut().clear();
        ops
    }

    /// Waits until this member is in a cluster whose table names an owner for every partition.
    async fn wait_for_whole_table(&self) {
        loop {
            let whole = {
                let view = self.view.borrow();
                view.list_version > 0 && view.table.version > 0 && view.table.unowned() == 0
            };
            let joined = self
                .control
                .as_ref()
                .and_then(|c| c.machine.as_ref())
                .is_some_and(|m| m.borrow().is_joined());
            if whole && joined {
                return;
            }
            glommio::timer::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Invokes the merge operations, [`IN_FLIGHT`] at a time, counting what ran.
    async fn invoke_merge(self: &Rc<Self>, ops: Vec<PreparedOp>) {
        let started = Instant::now();
        let total = ops.len();
        let (mut ok, mut failed) = (0u64, 0u64);
        let mut rest = ops.into_iter();
        loop {
            let batch: Vec<_> = rest
                .by_ref()
                .take(IN_FLIGHT)
                .map(|op| {
                    let invoker = self.invoker.clone();
                    glommio::spawn_local(async move {
                        let result = invoker.invoke_prepared(&op).await;
                        (op.partition, result)
                    })
                })
                .collect();
            if batch.is_empty() {
                break;
            }
            for task in batch {
                match task.await {
                    (_, Ok(_)) => ok += 1,
                    (partition, Err(e)) => {
                        failed += 1;
                        tracing::warn!(%partition, error = %e, "a merge operation failed; its entries are lost");
                    }
                }
            }
        }
        {
            let mut shared = self.net.lock();
            shared.merge.ops_ok += ok;
            shared.merge.ops_failed += failed;
            shared.merge.in_progress = false;
        }
        tracing::info!(
            operations = total,
            ok,
            failed,
            millis = started.elapsed().as_millis() as u64,
            "merged into the cluster"
        );
    }
}
