//! Distributed locks: reentrant for their owner, with a lease, a fencing token that grows with
//! every acquisition, and release when the owner's member dies or its client disconnects.
//!
//! A lock lives on the partition of its name. Its owner is a member or client id (the process)
//! plus a number the caller picks ([`Lock::with_owner`], 0 by default), as a thread id in Java.
//! Every acquisition from unlocked takes a new fencing token (the previous plus one); a reentrant
//! one keeps it. Pass the token to whatever the lock protects, which refuses smaller ones.
//!
//! Release on death: when a member leaves the member list every member's shard 0 runs
//! [`ReleaseEndpoint`] for it on every partition; when a client's connection to a member's
//! shard 0 closes (its control connection is one), that member does the same for the client. Waiters poll
//! (5 ms, backing off to 50 ms), so the next one takes the lock within the failure-detection time
//! plus one poll. A lease ends on its own: owner and backups drop the holder at the same time.

use std::time::Duration;

use ahash::AHashMap;
use corecast_engine::events::now_millis;
use corecast_engine::invocation::sleep;
use corecast_engine::prelude::*;
use corecast_engine::{Invoker, MembershipEvent};

/// The lock service.
pub struct LockService {
    invoker: Invoker,
    shard0: bool,
}

/// One lock's state.
#[derive(Archive, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LockState {
    /// The holder's process (member or client id); 0 when free.
    pub endpoint: u64,
    /// The holder's number within its process.
    pub thread: u64,
    /// Reentrant holds; 0 when free.
    pub count: u32,
    /// The last fencing token given out.
    pub fence: u64,
    /// When the lease ends (ms since the epoch); 0 for none.
    pub lease_until: u64,
}

impl LockState {
    fn held(&self, now: u64) -> bool {
        self.count > 0 && (self.lease_until == 0 || self.lease_until > now)
    }
}

/// One partition's locks.
pub type Container = AHashMap<String, LockState>;

impl Service for LockService {
    const NAME: &'static str = "lock";
    const ID: ServiceId = ServiceId(21);
    type Container = Container;
    type ReplicaData = Vec<(String, LockState)>;

    fn init(ctx: &ServiceContext, _: &Properties) -> Result<Self, ServiceError> {
        Ok(LockService {
            invoker: ctx.invoker.clone(),
            shard0: ctx.shard.0 == 0,
        })
    }

    fn operations(ops: &mut Operations<Self>) {
        ops.add::<Acquire>()
            .add::<Release>()
            .add::<Info>()
            .add::<ReleaseEndpoint>()
            .add::<SetState>();
    }

    fn destroy_object(&mut self, container: &mut Container, name: &str) {
        container.remove(name);
    }

    fn replica_data(container: &Container, _: &ReplicationEvent) -> Option<Self::ReplicaData> {
        crate::named_values(container)
    }

    fn apply_replica_data(container: &mut Container, data: &Archived<Self::ReplicaData>) {
        for e in data.iter() {
            container.insert(e.0.to_string(), native(&e.1));
        }
    }

    fn membership_changed(&mut self, event: &MembershipEvent) {
        let endpoint = match event {
            MembershipEvent::Removed(m) => m.id,
            MembershipEvent::ClientLeft { id } => *id,
            MembershipEvent::Added(_) => return,
        };
        if !self.shard0 || endpoint == 0 {
            return;
        }
        let invoker = self.invoker.clone();
        glommio::spawn_local(async move {
            release_endpoint(&invoker, endpoint).await;
        })
        .detach();
    }

    fn tick(&mut self, container: &mut Container, ctx: &TickContext<'_>) {
        let now = ctx.now_millis();
        for state in container.values_mut() {
            if state.count > 0 && state.lease_until != 0 && state.lease_until <= now {
                release_state(state);
            }
        }
    }
}

fn native(a: &ArchivedLockState) -> LockState {
    LockState {
        endpoint: a.endpoint.to_native(),
        thread: a.thread.to_native(),
        count: a.count.to_native(),
        fence: a.fence.to_native(),
        lease_until: a.lease_until.to_native(),
    }
}

fn release_state(state: &mut LockState) {
    state.endpoint = 0;
    state.thread = 0;
    state.count = 0;
    state.lease_until = 0;
}

/// Releases every lock `endpoint` holds, on every partition; retried until it went through.
async fn release_endpoint(invoker: &Invoker, endpoint: u64) {
    let op = ReleaseEndpoint { endpoint };
    for attempt in 0..100u32 {
        match invoker.invoke_all(&op).await {
            Ok(released) => {
                let n: u32 = released.iter().map(|(_, n)| n).sum();
                if n > 0 {
                    tracing::info!(
                        endpoint,
                        locks = n,
                        "released the locks of a departed owner"
                    );
                }
                return;
            }
            Err(e) => {
                tracing::debug!(endpoint, attempt, error = %e, "lock release retried");
                sleep(Duration::from_millis(100)).await;
            }
        }
    }
    tracing::warn!(endpoint, "locks of a departed owner not released");
}

/// Answer of [`Acquire`] and [`Info`].
#[derive(Archive, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub struct LockInfo {
    /// Whether the caller holds it now ([`Acquire`]) / whether anyone holds it ([`Info`]).
    pub held: bool,
    /// The fencing token of the current holder (the last one given out when free).
    pub fence: u64,
    /// Reentrant holds.
    pub count: u32,
    /// The whole state, for the backup.
    pub state: LockState,
}

/// Takes the lock if it is free or already the caller's.
#[derive(Archive, Serialize, Deserialize)]
pub struct Acquire {
    /// The lock.
    pub name: String,
    /// The caller's process.
    pub endpoint: u64,
    /// The caller's number within it.
    pub thread: u64,
    /// Lease in ms; 0: held until released.
    pub lease_ms: u64,
}

impl Operation for Acquire {
    type Service = LockService;
    type Response = LockInfo;
    const ID: OpId = OpId(1);
    fn object_name(op: &Archived<Self>) -> Option<&str> {
        Some(op.name.as_str())
    }
    fn run(op: &Archived<Self>, ctx: &mut OpContext<LockService>) -> Result<LockInfo, OpError> {
        let now = now_millis();
        let state = match ctx.container.get_mut(op.name.as_str()) {
            Some(s) => s,
            None => ctx.container.entry(op.name.to_string()).or_default(),
        };
        let (endpoint, thread) = (op.endpoint.to_native(), op.thread.to_native());
        let mine = state.endpoint == endpoint && state.thread == thread;
        let acquired = if !state.held(now) {
            *state = LockState {
                endpoint,
                thread,
                count: 1,
                fence: state.fence + 1,
                lease_until: 0,
            };
            true
        } else if mine {
            state.count = state.count.saturating_add(1);
            true
        } else {
            false
        };
        if acquired {
            let lease = op.lease_ms.to_native();
            state.lease_until = if lease == 0 {
                0
            } else {
                now.saturating_add(lease)
            };
        }
        Ok(LockInfo {
            held: acquired,
            fence: state.fence,
            count: state.count,
            state: *state,
        })
    }
    fn should_backup(_: &Archived<Self>, info: &LockInfo) -> bool {
        info.held
    }
    fn backup_operation(op: &Archived<Self>, info: &LockInfo) -> Option<Backup> {
        Some(Backup::of(&SetState {
            name: op.name.to_string(),
            state: info.state,
        }))
    }
}

/// Gives up one hold of the lock; the caller must hold it.
#[derive(Archive, Serialize, Deserialize)]
pub struct Release {
    /// The lock.
    pub name: String,
    /// The caller's process.
    pub endpoint: u64,
    /// The caller's number within it.
    pub thread: u64,
}

impl Operation for Release {
    type Service = LockService;
    type Response = LockInfo;
    const ID: OpId = OpId(2);
    fn object_name(op: &Archived<Self>) -> Option<&str> {
        Some(op.name.as_str())
    }
    fn run(op: &Archived<Self>, ctx: &mut OpContext<LockService>) -> Result<LockInfo, OpError> {
        let now = now_millis();
        let state = ctx.container.get_mut(op.name.as_str());
        let Some(state) = state.filter(|s| {
            s.held(now)
                && s.endpoint == op.endpoint.to_native()
                && s.thread == op.thread.to_native()
        }) else {
            return Err(OpError::failed(format!(
                "lock `{}` is not held by this owner",
                op.name
            )));
        };
        state.count -= 1;
        if state.count == 0 {
            release_state(state);
        }
        Ok(LockInfo {
            held: state.count > 0,
            fence: state.fence,
            count: state.count,
            state: *state,
        })
    }
    fn backup_operation(op: &Archived<Self>, info: &LockInfo) -> Option<Backup> {
        Some(Backup::of(&SetState {
            name: op.name.to_string(),
            state: info.state,
        }))
    }
}

/// Whether the lock is held, by whom it does not say; its fencing token.
#[derive(Archive, Serialize, Deserialize)]
pub struct Info {
    /// The lock.
    pub name: String,
}

impl Operation for Info {
    type Service = LockService;
    type Response = LockInfo;
    const ID: OpId = OpId(3);
    const READS_ONLY: bool = true;
    fn object_name(op: &Archived<Self>) -> Option<&str> {
        Some(op.name.as_str())
    }
    fn run(op: &Archived<Self>, ctx: &mut OpContext<LockService>) -> Result<LockInfo, OpError> {
        let state = ctx
            .container
            .get(op.name.as_str())
            .copied()
            .unwrap_or_default();
        Ok(LockInfo {
            held: state.held(now_millis()),
            fence: state.fence,
            count: state.count,
            state,
        })
    }
}

/// Releases every lock of one process in a partition (sent to every partition); answers how
/// many. Its own backup (idempotent).
#[derive(Archive, Serialize, Deserialize)]
pub struct ReleaseEndpoint {
    /// The departed member or client.
    pub endpoint: u64,
}

impl Operation for ReleaseEndpoint {
    type Service = LockService;
    type Response = u32;
    const ID: OpId = OpId(4);
    fn run(op: &Archived<Self>, ctx: &mut OpContext<LockService>) -> Result<u32, OpError> {
        let mut n = 0;
        for state in ctx.container.values_mut() {
            if state.count > 0 && state.endpoint == op.endpoint.to_native() {
                release_state(state);
                n += 1;
            }
        }
        Ok(n)
    }
    fn should_backup(_: &Archived<Self>, n: &u32) -> bool {
        *n > 0
    }
    fn backup_operation(op: &Archived<Self>, _: &u32) -> Option<Backup> {
        Some(Backup::of(&ReleaseEndpoint {
            endpoint: op.endpoint.to_native(),
        }))
    }
}

/// A lock's state as its owner left it (the backup of acquire and release).
#[derive(Archive, Serialize, Deserialize)]
pub struct SetState {
    /// The lock.
    pub name: String,
    /// Its state.
    pub state: LockState,
}

impl Operation for SetState {
    type Service = LockService;
    type Response = ();
    const ID: OpId = OpId(5);
    fn object_name(op: &Archived<Self>) -> Option<&str> {
        Some(op.name.as_str())
    }
    fn run(op: &Archived<Self>, ctx: &mut OpContext<LockService>) -> Result<(), OpError> {
        ctx.container.insert(op.name.to_string(), native(&op.state));
        Ok(())
    }
}

/// A distributed lock.
#[derive(Clone)]
pub struct Lock {
    handle: ObjectHandle,
    thread: u64,
}

impl DistributedObject for Lock {
    type Service = LockService;
    fn from_handle(handle: ObjectHandle) -> Self {
        Lock { handle, thread: 0 }
    }
}

/// The first wait between attempts of a waiting lock; doubled up to [`MAX_POLL`].
const FIRST_POLL: Duration = Duration::from_millis(5);
/// The longest wait between attempts.
const MAX_POLL: Duration = Duration::from_millis(50);

impl Lock {
    /// This lock as seen by owner number `thread` of this process (a different owner: it
    /// excludes the others, and reenters only its own holds).
    pub fn with_owner(&self, thread: u64) -> Lock {
        Lock {
            handle: self.handle.clone(),
            thread,
        }
    }

    /// The lock's name.
    pub fn name(&self) -> &str {
        self.handle.name()
    }

    async fn attempt(&self, lease: Option<Duration>) -> Result<LockInfo, InvocationError> {
        let op = Acquire {
            name: self.handle.name().to_owned(),
            endpoint: self.handle.invoker().member().id,
            thread: self.thread,
            lease_ms: lease.map_or(0, |d| (d.as_millis() as u64).max(1)),
        };
        self.handle.invoke(&op).await
    }

    /// Takes the lock, waiting as long as it takes; answers the fencing token.
    ///
    /// Errors: the invocation's.
    pub async fn lock(&self) -> Result<u64, InvocationError> {
        self.lock_with_lease(None).await
    }

    /// Takes the lock for at most `lease` (`None`: until released), waiting as long as it
    /// takes; answers the fencing token.
    ///
    /// Errors: the invocation's.
    pub async fn lock_with_lease(&self, lease: Option<Duration>) -> Result<u64, InvocationError> {
        let mut wait = FIRST_POLL;
        loop {
            let info = self.attempt(lease).await?;
            if info.held {
                return Ok(info.fence);
            }
            sleep(wait).await;
            wait = (wait * 2).min(MAX_POLL);
        }
    }

    /// Takes the lock if it gets it within `timeout` (zero: one attempt); the fencing token, or
    /// `None` if another owner kept it.
    ///
    /// Errors: the invocation's.
    pub async fn try_lock(&self, timeout: Duration) -> Result<Option<u64>, InvocationError> {
        self.try_lock_with_lease(timeout, None).await
    }

    /// As [`Lock::try_lock`], holding it for at most `lease`.
    ///
    /// Errors: the invocation's.
    pub async fn try_lock_with_lease(
        &self,
        timeout: Duration,
        lease: Option<Duration>,
    ) -> Result<Option<u64>, InvocationError> {
        let deadline = std::time::Instant::now() + timeout;
        let mut wait = FIRST_POLL;
        loop {
            let info = self.attempt(lease).await?;
            if info.held {
                return Ok(Some(info.fence));
            }
            let Some(left) = deadline.checked_duration_since(std::time::Instant::now()) else {
                return Ok(None);
            };
            sleep(wait.min(left)).await;
            wait = (wait * 2).min(MAX_POLL);
        }
    }

    /// Gives up one hold; the lock is free when every hold is given up.
    ///
    /// Errors: `Operation` when this owner does not hold the lock (never took it, or it was
    /// released because its lease ended or its process was declared dead).
    pub async fn unlock(&self) -> Result<(), InvocationError> {
        let op = Release {
            name: self.handle.name().to_owned(),
            endpoint: self.handle.invoker().member().id,
            thread: self.thread,
        };
        self.handle.invoke(&op).await.map(|_| ())
    }

    /// Whether anyone holds the lock, and its fencing token.
    ///
    /// Errors: the invocation's.
    pub async fn info(&self) -> Result<LockInfo, InvocationError> {
        let op = Info {
            name: self.handle.name().to_owned(),
        };
        self.handle.invoke(&op).await
    }

    /// Whether anyone holds the lock.
    ///
    /// Errors: the invocation's.
    pub async fn is_locked(&self) -> Result<bool, InvocationError> {
        Ok(self.info().await?.held)
    }
}

#[cfg(test)]
mod tests {
    use corecast_engine::testkit::PartitionHarness;

    use super::*;

    fn acquire(h: &mut PartitionHarness<LockService>, endpoint: u64, lease_ms: u64) -> LockInfo {
        h.run(&Acquire {
            name: "l".into(),
            endpoint,
            thread: 0,
            lease_ms,
        })
        .expect("acquire")
    }

    fn release(h: &mut PartitionHarness<LockService>, endpoint: u64) -> Result<LockInfo, OpError> {
        h.run(&Release {
            name: "l".into(),
            endpoint,
            thread: 0,
        })
    }

    #[test]
    fn reentrant_for_its_owner_exclusive_for_others_fence_grows_per_acquisition() {
        let mut h = PartitionHarness::<LockService>::new().expect("harness");
        let first = acquire(&mut h, 1, 0);
        assert!(first.held);
        assert_eq!(first.fence, 1);
        let again = acquire(&mut h, 1, 0);
        assert!(
            again.held && again.fence == 1 && again.count == 2,
            "{again:?}"
        );
        assert!(!acquire(&mut h, 2, 0).held);
        assert!(release(&mut h, 2).is_err(), "only the holder releases");
        assert!(release(&mut h, 1).expect("release").held, "one hold left");
        assert!(!release(&mut h, 1).expect("release").held);
        assert!(release(&mut h, 1).is_err(), "released already");
        let second = acquire(&mut h, 2, 0);
        assert!(second.held);
        assert_eq!(second.fence, 2);
    }

    #[test]
    fn a_lease_ends_the_hold_and_a_departed_owner_loses_its_locks() {
        let mut h = PartitionHarness::<LockService>::new().expect("harness");
        assert!(acquire(&mut h, 1, 30).held);
        assert!(!acquire(&mut h, 2, 0).held);
        std::thread::sleep(Duration::from_millis(40));
        let taken = acquire(&mut h, 2, 0);
        assert!(taken.held, "the lease ended");
        assert_eq!(taken.fence, 2);
        assert_eq!(h.run(&ReleaseEndpoint { endpoint: 2 }).expect("release"), 1);
        let third = acquire(&mut h, 3, 0);
        assert!(third.held && third.fence == 3);
    }

    #[test]
    fn backups_follow_the_owner() {
        let mut owner = PartitionHarness::<LockService>::new().expect("harness");
        let mut backup = PartitionHarness::<LockService>::new().expect("harness");
        let op = Acquire {
            name: "l".into(),
            endpoint: 9,
            thread: 1,
            lease_ms: 0,
        };
        owner
            .run_with_backups(&op, &mut [&mut backup])
            .expect("acquire");
        assert_eq!(owner.container().get("l"), backup.container().get("l"));
        owner
            .run_with_backups(&ReleaseEndpoint { endpoint: 9 }, &mut [&mut backup])
            .expect("release");
        assert_eq!(backup.container().get("l").map(|s| s.count), Some(0));
        assert_eq!(backup.container().get("l").map(|s| s.fence), Some(1));
    }
}
