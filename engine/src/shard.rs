//! One shard: the services and containers of its partitions, and its message loop.
//!
//! Owns: [`ShardCore`] (the only thing that touches this shard's containers), [`ShardMsg`] (what
//! other threads may ask of it), the glommio executor that runs it, and the thread-local that
//! lets callers already on this shard run their own partitions' operations inline.
//!
//! Invariant: a `ShardCore` is created on its executor's thread and never leaves it. Other threads
//! reach it only through its bounded inbox; answers go back as [`Reply`]s.
//!
//! The loop polls the inbox and its completion queue every scheduling round while the shard has
//! other work (so a busy shard picks up cross-shard messages within one round, not on glommio's
//! preempt tick), and once it has been idle for [`IDLE_SPIN`] it blocks on both, with a timeout,
//! instead of letting glommio park the executor (see `Queues::wait` for why).

use std::cell::RefCell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use ahash::AHashSet;
use glommio::{ExecutorJoinHandle, LocalExecutorBuilder, Placement};

use crate::config::Config;
use crate::member::StartError;
use crate::object;
use crate::partition::{PartitionCount, PartitionId, ShardCount, ShardId};
use crate::payload::Bytes;
use crate::registry::{Dispatch, ErasedSlot, ServiceFactory, Target};
use crate::reply::{Answer, Completion, Pending, Reply};
use crate::spi::{MemberInfo, OpError, OpId, ReplicaIndex, ServiceContext, ServiceId};

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
    /// Run a closure on the shard's thread (it may spawn local tasks).
    Run(Box<dyn FnOnce() + Send>),
    /// Drop every service's state and every object record (a split-brain rejoin).
    Reset(oneshot::Sender<()>),
    /// Shut the services down and stop the executor.
    Shutdown { terminate: bool },
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
}

impl ShardCore {
    fn start(spec: &ShardSpec) -> Result<Self, StartError> {
        let ctx = ServiceContext {
            member: spec.member.clone(),
            shard: spec.shard,
            shards: spec.shards,
            partitions: spec.partitions,
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
            let slot = factory.start(&ctx, properties, local_slots).map_err(|e| {
                StartError::ServiceInit {
                    service: factory.name.to_owned(),
                    shard: spec.shard,
                    reason: e.reason,
                }
            })?;
            dispatch.add(slots.len(), factory);
            slots.push(slot);
        }
        Ok(Self {
            member: spec.member.clone(),
            shard: spec.shard,
            shards: spec.shards,
            partitions: spec.partitions,
            slots,
            dispatch,
            objects: (0..local_slots).map(|_| AHashSet::new()).collect(),
        })
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

    /// Runs one operation on one of this shard's partitions, archiving the response into `out`.
    pub fn execute(
        &mut self,
        partition: PartitionId,
        service: ServiceId,
        op: OpId,
        payload: &[u8],
        out: &mut Bytes,
    ) -> Result<(), OpError> {
        let local = self.local_index(partition)?;
        if service == object::ENGINE_SERVICE {
            return object::run_engine_op(self, local, op, payload, out);
        }
        let handler = self.dispatch.handler(service, op)?;
        let target = Target {
            partition,
            shard: self.shard,
            local,
            replica: ReplicaIndex::PRIMARY,
            member: &self.member,
        };
        let slot = self
            .slots
            .get_mut(handler.slot)
            .ok_or(OpError::UnknownService { service })?;
        (handler.run)(slot.as_mut(), &target, payload, out)
    }

    /// Runs one operation on every partition this shard holds, in partition order.
    pub fn execute_all(
        &mut self,
        service: ServiceId,
        op: OpId,
        payload: &[u8],
    ) -> PartitionReplies {
        self.shards
            .partitions_of(self.shard, self.partitions)
            .map(|p| {
                let mut out = Bytes::new();
                let result = self.execute(p, service, op, payload, &mut out);
                (p, result.map(|()| out))
            })
            .collect()
    }

    fn shutdown(&mut self, terminate: bool) {
        for slot in &mut self.slots {
            slot.shutdown(terminate);
        }
    }

    fn reset(&mut self) {
        for slot in &mut self.slots {
            slot.reset();
        }
        for records in &mut self.objects {
            records.clear();
        }
    }
}

struct Current {
    token: MemberToken,
    shard: ShardId,
    core: Rc<RefCell<ShardCore>>,
    pending: Rc<RefCell<Pending>>,
    /// Calls made by tasks on this shard (inline or routed); the loop reads it to tell a busy
    /// shard from an idle one, since glommio does not say whether other tasks are runnable.
    activity: Rc<std::cell::Cell<u64>>,
}

impl Current {
    fn touch(&self) {
        self.activity.set(self.activity.get().wrapping_add(1));
    }
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
        current.touch();
        Some(f(&mut core))
    })
}

/// If this thread is one of member `token`'s shards: a reply routed back through this shard's
/// completion queue, and what the caller awaits. `None` elsewhere (use [`Reply::thread`]).
pub(crate) fn shard_reply(token: MemberToken) -> Option<(Reply, oneshot::Receiver<Answer>)> {
    CURRENT.with(|current| {
        let current = current.try_borrow().ok()?;
        let current = current.as_ref().filter(|c| c.token == token)?;
        let mut pending = current.pending.try_borrow_mut().ok()?;
        current.touch();
        Some(pending.register())
    })
}

/// The shard this thread runs, if it is one of member `token`'s shards.
pub(crate) fn current_shard(token: MemberToken) -> Option<ShardId> {
    CURRENT.with(|current| {
        let current = current.try_borrow().ok()?;
        current
            .as_ref()
            .filter(|c| c.token == token)
            .map(|c| c.shard)
    })
}

/// A running shard's thread, and a receiver that resolves (with an error: its sender is dropped)
/// when the shard's future has ended, whichever way it ended.
pub(crate) struct ShardThread {
    pub join: ExecutorJoinHandle<()>,
    pub exited: flume::Receiver<()>,
}

/// Starts shard `spec.shard` on its own glommio executor. `ready` hears whether the services
/// started; the executor then serves `inbox` until told to shut down.
pub(crate) fn spawn(
    spec: ShardSpec,
    inbox: flume::Receiver<ShardMsg>,
    ready: oneshot::Sender<Result<(), StartError>>,
    placement: Placement,
) -> Result<ShardThread, StartError> {
    let shard = spec.shard;
    let mut builder = LocalExecutorBuilder::new(placement)
        .name(&format!("corecast-shard-{}", shard.0))
        .io_memory(spec.config.io_memory_bytes())
        .preempt_timer(spec.config.preempt_timer());
    if let Some(spin) = spec.config.spin_before_park() {
        builder = builder.spin_before_park(spin);
    }
    let (exited_tx, exited) = flume::bounded::<()>(1);
    let join = builder
        .spawn(move || async move {
            // Dropped when this future ends: `exited` resolves even if the shard never served.
            let _exited = exited_tx;
            let core = match ShardCore::start(&spec) {
                Ok(core) => Rc::new(RefCell::new(core)),
                Err(e) => {
                    let _ = ready.send(Err(e));
                    return;
                }
            };
            let (completions_tx, completions) = flume::unbounded();
            let pending = Rc::new(RefCell::new(Pending::new(completions_tx)));
            let activity = Rc::new(std::cell::Cell::new(0));
            CURRENT.with(|c| {
                *c.borrow_mut() = Some(Current {
                    token: spec.token,
                    shard,
                    core: core.clone(),
                    pending: pending.clone(),
                    activity: activity.clone(),
                })
            });
            tracing::debug!(%shard, partitions = core.borrow().objects.len(), "shard started");
            let _ = ready.send(Ok(()));
            let queues = Queues {
                inbox,
                completions,
                tick: spec.config.wake_tick(),
            };
            let terminate = serve(&core, &pending, &queues, &activity).await;
            core.borrow_mut().shutdown(terminate);
            CURRENT.with(|c| c.borrow_mut().take());
            tracing::debug!(%shard, "shard stopped");
        })
        .map_err(|e| StartError::Executor {
            shard,
            reason: e.to_string(),
        })?;
    Ok(ShardThread { join, exited })
}

/// How many messages a shard handles before it lets its other tasks run.
const BATCH: usize = 256;

/// How long an idle shard keeps polling its queues before it blocks. Blocking and waking cost a
/// futex each; a short spin keeps a shard in a steady exchange with another shard from paying
/// them on every message.
pub(crate) const IDLE_SPIN: Duration = Duration::from_micros(50);

/// What ended an idle shard's wait.
enum Arrival {
    Msg(ShardMsg),
    Done(Completion),
    /// Every sender of the inbox is gone.
    Closed,
    Tick,
}

/// What a shard's loop reads.
struct Queues {
    inbox: flume::Receiver<ShardMsg>,
    completions: flume::Receiver<Completion>,
    /// The longest an idle shard waits before it runs its other tasks again.
    tick: Duration,
}

impl Queues {
    /// Blocks this shard's thread until a message or a completion arrives, or the tick passes.
    ///
    /// An idle shard waits here, on a futex, instead of letting glommio park the executor in
    /// io_uring: glommio 0.9 parks on its main ring with a poll on the latency ring, and on this
    /// kernel a completion on the latency ring (the cross-thread wake-up eventfd, its own timers)
    /// sometimes never wakes it (glommio issues #326, #494, #547). Reproduced: `corecast-bench
    /// --shards 1` beside two busy processes hung with a put sitting in the inbox; with this wait
    /// it does not. A sender wakes this thread directly; the tick bounds how long a task woken
    /// through glommio (a oneshot from another thread, a timer) waits for the executor to notice.
    fn wait(&self) -> Arrival {
        flume::Selector::new()
            .recv(&self.inbox, |m| m.map_or(Arrival::Closed, Arrival::Msg))
            // This shard holds a sender of its own completion queue: it cannot disconnect.
            .recv(&self.completions, |c| {
                c.map_or(Arrival::Tick, Arrival::Done)
            })
            .wait_timeout(self.tick)
            .unwrap_or(Arrival::Tick)
    }
}

/// Serves the inbox and the completion queue until a shutdown message or until every sender is
/// gone; returns whether the stop is a hard one (`terminate`).
async fn serve(
    core: &Rc<RefCell<ShardCore>>,
    pending: &RefCell<Pending>,
    queues: &Queues,
    activity: &std::cell::Cell<u64>,
) -> bool {
    let (inbox, completions) = (&queues.inbox, &queues.completions);
    // When the shard went idle; read the clock only on idle rounds.
    let mut idle_since: Option<Instant> = None;
    let mut seen_activity = activity.get();
    loop {
        let mut handled = 0;
        if activity.get() != seen_activity {
            seen_activity = activity.get();
            handled += 1;
        }
        while let Ok(completion) = completions.try_recv() {
            pending.borrow_mut().complete(completion);
            handled += 1;
        }
        while handled < BATCH {
            match inbox.try_recv() {
                Ok(msg) => {
                    if let Some(terminate) = handle(core, msg) {
                        return terminate;
                    }
                    handled += 1;
                }
                Err(flume::TryRecvError::Empty) => break,
                Err(flume::TryRecvError::Disconnected) => return true,
            }
        }
        if handled > 0 {
            idle_since = None;
        } else if idle_since.get_or_insert_with(Instant::now).elapsed() >= IDLE_SPIN {
            match queues.wait() {
                Arrival::Msg(msg) => {
                    if let Some(terminate) = handle(core, msg) {
                        return terminate;
                    }
                }
                Arrival::Closed => return true,
                Arrival::Done(completion) => pending.borrow_mut().complete(completion),
                Arrival::Tick => {}
            }
            idle_since = None;
        }
        // Let this shard's other tasks run, then poll again.
        futures_lite::future::yield_now().await;
    }
}

/// Handles one message; `Some(terminate)` when it was the shutdown.
fn handle(core: &Rc<RefCell<ShardCore>>, msg: ShardMsg) -> Option<bool> {
    match msg {
        ShardMsg::Invoke {
            partition,
            service,
            op,
            payload,
            reply,
        } => {
            let mut out = Bytes::new();
            let result = core
                .borrow_mut()
                .execute(partition, service, op, &payload, &mut out);
            reply.send(result.map(|()| out));
        }
        ShardMsg::AllPartitions {
            service,
            op,
            payload,
            reply,
        } => {
            let _ = reply.send(core.borrow_mut().execute_all(service, op, &payload));
        }
        ShardMsg::Run(f) => f(),
        ShardMsg::Reset(done) => {
            core.borrow_mut().reset();
            let _ = done.send(());
        }
        ShardMsg::Shutdown { terminate } => return Some(terminate),
    }
    None
}

/// Where shard `shard` runs: pinned to its own CPU only when asked and when there are enough.
pub(crate) fn placement(config: &Config, shard: ShardId, shards: ShardCount) -> Placement {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    if config.pin_shards && shards.get() as usize <= cpus {
        Placement::Fixed(shard.0 as usize)
    } else {
        Placement::Unbound
    }
}
