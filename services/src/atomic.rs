//! AtomicLong: a 64-bit integer by name, kept on the partition of its name, with backups.
//!
//! Modelled on [`crate::counter`]: one operation per kind of access ([`Get`], [`Set`], [`Add`],
//! [`CompareAndSet`], [`GetAndSet`]), run on the object's home partition. Every write is backed
//! up by one idempotent [`SetBackup`] carrying the AtomicLong after the write, so a backup that
//! is resent (or replayed) sets the same value again instead of adding twice. Arithmetic wraps.
//! A name never written reads 0; reads and failed writes leave the value as it was.
//!
//! Each AtomicLong also keeps what split-brain merge policies compare ([`Atomic`]): its **update
//! time**, the owner's clock when a write last changed it (set, add, a compare-and-set that set,
//! get-and-set), and its **hits**, the reads on the owner ([`Get`], and [`Add`] of 0, which is a
//! read) of a name that exists (saturating; writes keep them, a new name starts at 0; reads a
//! backup serves under `read-backup-data` count nothing). Backups get both from the owner with
//! each write, so a promoted backup keeps the update time and the hits as of the last write.
//!
//! Split-brain merge: [`Service::merge`] sends a partition's AtomicLongs as [`Merge`] operations
//! (name, value, hits, update time and each one's merge policy); on the owner in the cluster
//! joined, each replaces or creates the AtomicLong where [`MergePolicy::merging_wins`] says so
//! (an AtomicLong exists when its name is in the container, that is once written), backed up by
//! one [`SetBackup`] with those taken.

use ahash::AHashMap;
use corecast_engine::events::now_millis;
use corecast_engine::prelude::*;

/// The AtomicLong service: one instance per shard, containers per partition.
pub struct AtomicService;

/// One AtomicLong: its value, and what merge policies compare.
#[derive(Archive, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Atomic {
    /// The value.
    pub value: i64,
    /// When a write last changed it on the owner, in ms since the epoch.
    pub updated_millis: u64,
    /// Reads of it on the owner (see the module doc).
    pub hits: u32,
}

impl Atomic {
    /// What a merge policy compares.
    pub fn stats(&self) -> EntryStats {
        EntryStats {
            hits: self.hits,
            updated_millis: self.updated_millis,
        }
    }
}

impl ArchivedAtomic {
    /// The AtomicLong, off its archive.
    pub fn to_native(&self) -> Atomic {
        Atomic {
            value: self.value.to_native(),
            updated_millis: self.updated_millis.to_native(),
            hits: self.hits.to_native(),
        }
    }
}

/// One partition's AtomicLongs, by object name.
pub type Container = AHashMap<String, Atomic>;

impl Service for AtomicService {
    const NAME: &'static str = "atomic";
    const ID: ServiceId = ServiceId(19);
    type Container = Container;
    type ReplicaData = Vec<(String, Atomic)>;

    fn init(ctx: &ServiceContext, _properties: &Properties) -> Result<Self, ServiceError> {
        tracing::debug!(shard = %ctx.shard, "AtomicService.init()");
        Ok(AtomicService)
    }

    fn operations(ops: &mut Operations<Self>) {
        ops.add::<Get>()
            .add::<Set>()
            .add::<Add>()
            .add::<CompareAndSet>()
            .add::<GetAndSet>()
            .add::<SetBackup>()
            .add::<Merge>();
    }

    fn destroy_object(&mut self, container: &mut Container, name: &str) {
        container.remove(name);
    }

    fn replica_data(container: &Container, _: &ReplicationEvent) -> Option<Self::ReplicaData> {
        crate::named_values(container)
    }

    /// Replaces the AtomicLongs the data carries; other names are left as they are.
    fn apply_replica_data(container: &mut Container, data: &Archived<Self::ReplicaData>) {
        for e in data.iter() {
            container.insert(e.0.to_string(), e.1.to_native());
        }
    }

    /// Every AtomicLong of the partition, as [`Merge`] operations under each one's policy.
    fn merge(container: &Container, out: &mut MergeOps<'_>) {
        let mut batch = Vec::new();
        let mut bytes = 0;
        for (name, atomic) in container {
            let size = name.len() + MERGE_ENTRY_OVERHEAD;
            if !batch.is_empty() && bytes + size > MAX_MERGE_BYTES {
                push_merge(out, std::mem::take(&mut batch));
                bytes = 0;
            }
            batch.push(MergingAtomic {
                name: name.clone(),
                atomic: *atomic,
                policy: out.policy(Some(name)).to_wire(),
            });
            bytes += size;
        }
        if !batch.is_empty() {
            push_merge(out, batch);
        }
    }

    // Migration: the SPI's defaults (the source drops what it keeps no replica of, a rolled-back
    // destination what it received).
}

/// The most bytes of names one [`Merge`] carries (besides a first name longer than that): as
/// the Map's batches, far below a frame's bound.
const MAX_MERGE_BYTES: usize = 1 << 20;

/// What one [`MergingAtomic`] adds to the archive besides its name's bytes: the name's length
/// prefix, value, update time, hits and policy, rounded up for alignment.
const MERGE_ENTRY_OVERHEAD: usize = 40;

fn push_merge(out: &mut MergeOps<'_>, atomics: Vec<MergingAtomic>) {
    let count = atomics.len();
    if let Err(e) = out.push(&Merge { atomics }) {
        // Nothing else carries these over: say how many were lost, and where.
        tracing::error!(partition = %out.partition(), count, error = %e, "AtomicLongs not merged");
    }
}

/// The distributed AtomicLong proxy: every method is one operation on the partition of its name.
#[derive(Clone)]
pub struct AtomicLong(ObjectHandle);

impl DistributedObject for AtomicLong {
    type Service = AtomicService;
    fn from_handle(handle: ObjectHandle) -> Self {
        AtomicLong(handle)
    }
}

impl AtomicLong {
    fn name(&self) -> String {
        self.0.name().to_owned()
    }

    async fn add(&self, delta: i64, return_old: bool) -> Result<i64, InvocationError> {
        let name = self.name();
        let op = Add {
            name,
            delta,
            return_old,
        };
        Ok(self.0.invoke(&op).await?.answer)
    }

    /// The value (0 until written).
    ///
    /// Errors: the invocation's, when the member has stopped.
    pub async fn get(&self) -> Result<i64, InvocationError> {
        self.0.invoke(&Get { name: self.name() }).await
    }

    /// Sets the value to `value`.
    ///
    /// Errors: the invocation's, when the member has stopped.
    pub async fn set(&self, value: i64) -> Result<(), InvocationError> {
        let name = self.name();
        self.0.invoke(&Set { name, value }).await.map(|_| ())
    }

    /// Adds `delta` (wrapping) and returns the new value.
    ///
    /// Errors: the invocation's, when the member has stopped.
    pub async fn add_and_get(&self, delta: i64) -> Result<i64, InvocationError> {
        self.add(delta, false).await
    }

    /// Adds `delta` (wrapping) and returns the value before.
    ///
    /// Errors: the invocation's, when the member has stopped.
    pub async fn get_and_add(&self, delta: i64) -> Result<i64, InvocationError> {
        self.add(delta, true).await
    }

    /// Adds one (wrapping) and returns the new value.
    ///
    /// Errors: the invocation's, when the member has stopped.
    pub async fn increment_and_get(&self) -> Result<i64, InvocationError> {
        self.add_and_get(1).await
    }

    /// Subtracts one (wrapping) and returns the new value.
    ///
    /// Errors: the invocation's, when the member has stopped.
    pub async fn decrement_and_get(&self) -> Result<i64, InvocationError> {
        self.add_and_get(-1).await
    }

    /// Sets the value to `update` if it is `expect`; returns whether it did.
    ///
    /// Errors: the invocation's, when the member has stopped.
    pub async fn compare_and_set(&self, expect: i64, update: i64) -> Result<bool, InvocationError> {
        let name = self.name();
        let op = CompareAndSet {
            name,
            expect,
            update,
        };
        Ok(self.0.invoke(&op).await?.is_some())
    }

    /// Sets the value to `value` and returns the value before.
    ///
    /// Errors: the invocation's, when the member has stopped.
    pub async fn get_and_set(&self, value: i64) -> Result<i64, InvocationError> {
        let name = self.name();
        Ok(self.0.invoke(&GetAndSet { name, value }).await?.answer)
    }
}

/// A write's response: what the caller gets, and the AtomicLong after the write (what the
/// write's [`SetBackup`] sets on the backups, update time and hits included).
#[derive(Archive, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub struct Written {
    /// The value the caller asked for (the new one, or the one before).
    pub answer: i64,
    /// The AtomicLong after the write.
    pub after: Atomic,
}

/// Reads the value (0 for a name never written) and counts a hit on the owner; changes nothing
/// else, so a backup may serve it when `read-backup-data` is on.
#[derive(Archive, Serialize, Deserialize)]
pub struct Get {
    /// The AtomicLong.
    pub name: String,
}

impl Operation for Get {
    type Service = AtomicService;
    type Response = i64;
    const ID: OpId = OpId(1);
    const READS_ONLY: bool = true;
    fn object_name(op: &Archived<Self>) -> Option<&str> {
        Some(op.name.as_str())
    }
    fn run(op: &Archived<Self>, ctx: &mut OpContext<AtomicService>) -> Result<i64, OpError> {
        Ok(read(ctx, &op.name))
    }
}

/// The value of `name` (0 when absent); on the owner, a hit for an AtomicLong that exists.
fn read(ctx: &mut OpContext<'_, AtomicService>, name: &str) -> i64 {
    let backup = ctx.replica_index().is_backup();
    let Some(atomic) = ctx.container.get_mut(name) else {
        return 0;
    };
    if !backup {
        atomic.hits = atomic.hits.saturating_add(1);
    }
    atomic.value
}

/// Sets the value; backed up by [`SetBackup`].
#[derive(Archive, Serialize, Deserialize)]
pub struct Set {
    /// The AtomicLong.
    pub name: String,
    /// The new value.
    pub value: i64,
}

impl Operation for Set {
    type Service = AtomicService;
    type Response = Written;
    const ID: OpId = OpId(2);
    fn object_name(op: &Archived<Self>) -> Option<&str> {
        Some(op.name.as_str())
    }
    fn run(op: &Archived<Self>, ctx: &mut OpContext<AtomicService>) -> Result<Written, OpError> {
        let value = op.value.to_native();
        let after = write(ctx.container, &op.name, |_| value);
        Ok(Written {
            answer: value,
            after,
        })
    }
    fn backup_operation(op: &Archived<Self>, w: &Written) -> Option<Backup> {
        Some(set_backup(&op.name, w.after))
    }
}

/// Adds `delta` (wrapping) and answers the value before (`return_old`) or after; backed up by
/// [`SetBackup`] with the AtomicLong after. Adding 0 is a read: it counts a hit on the owner,
/// and writes and backs up nothing.
#[derive(Archive, Serialize, Deserialize)]
pub struct Add {
    /// The AtomicLong.
    pub name: String,
    /// What to add.
    pub delta: i64,
    /// Answer the value before the addition instead of the value after it.
    pub return_old: bool,
}

impl Operation for Add {
    type Service = AtomicService;
    type Response = Written;
    const ID: OpId = OpId(3);
    fn object_name(op: &Archived<Self>) -> Option<&str> {
        Some(op.name.as_str())
    }
    fn run(op: &Archived<Self>, ctx: &mut OpContext<AtomicService>) -> Result<Written, OpError> {
        let delta = op.delta.to_native();
        if delta == 0 {
            let value = read(ctx, &op.name);
            let after = ctx.container.get(op.name.as_str()).copied();
            return Ok(Written {
                answer: value,
                after: after.unwrap_or_default(),
            });
        }
        let mut old = 0;
        let after = write(ctx.container, &op.name, |v| {
            old = v;
            v.wrapping_add(delta)
        });
        let answer = if op.return_old { old } else { after.value };
        Ok(Written { answer, after })
    }
    fn should_backup(op: &Archived<Self>, _: &Written) -> bool {
        op.delta != 0
    }
    fn backup_operation(op: &Archived<Self>, w: &Written) -> Option<Backup> {
        Some(set_backup(&op.name, w.after))
    }
}

/// Sets the value to `update` if it is `expect`; answers the AtomicLong after when it did.
/// Backed up by [`SetBackup`] only when it did.
#[derive(Archive, Serialize, Deserialize)]
pub struct CompareAndSet {
    /// The AtomicLong.
    pub name: String,
    /// The value the AtomicLong must have (0 for a name never written).
    pub expect: i64,
    /// The value to set.
    pub update: i64,
}

impl Operation for CompareAndSet {
    type Service = AtomicService;
    type Response = Option<Atomic>;
    const ID: OpId = OpId(4);
    fn object_name(op: &Archived<Self>) -> Option<&str> {
        Some(op.name.as_str())
    }
    fn run(
        op: &Archived<Self>,
        ctx: &mut OpContext<AtomicService>,
    ) -> Result<Option<Atomic>, OpError> {
        let current = ctx.container.get(op.name.as_str()).map_or(0, |a| a.value);
        if current != op.expect.to_native() {
            return Ok(None);
        }
        let update = op.update.to_native();
        Ok(Some(write(ctx.container, &op.name, |_| update)))
    }
    fn should_backup(_: &Archived<Self>, after: &Option<Atomic>) -> bool {
        after.is_some()
    }
    fn backup_operation(op: &Archived<Self>, after: &Option<Atomic>) -> Option<Backup> {
        after.map(|after| set_backup(&op.name, after))
    }
}

/// Sets the value and answers the one before; backed up by [`SetBackup`].
#[derive(Archive, Serialize, Deserialize)]
pub struct GetAndSet {
    /// The AtomicLong.
    pub name: String,
    /// The new value.
    pub value: i64,
}

impl Operation for GetAndSet {
    type Service = AtomicService;
    type Response = Written;
    const ID: OpId = OpId(5);
    fn object_name(op: &Archived<Self>) -> Option<&str> {
        Some(op.name.as_str())
    }
    fn run(op: &Archived<Self>, ctx: &mut OpContext<AtomicService>) -> Result<Written, OpError> {
        let value = op.value.to_native();
        let mut old = 0;
        let after = write(ctx.container, &op.name, |v| {
            old = v;
            value
        });
        Ok(Written { answer: old, after })
    }
    fn backup_operation(op: &Archived<Self>, w: &Written) -> Option<Backup> {
        Some(set_backup(&op.name, w.after))
    }
}

/// The backup of every write and merge: AtomicLongs as the owner has them after it (value,
/// update time, hits), set as they are (idempotent, so a replay is harmless).
#[derive(Archive, Serialize, Deserialize)]
pub struct SetBackup {
    /// The AtomicLongs written, by name.
    pub atomics: Vec<(String, Atomic)>,
}

impl Operation for SetBackup {
    type Service = AtomicService;
    type Response = ();
    const ID: OpId = OpId(6);
    fn run(op: &Archived<Self>, ctx: &mut OpContext<AtomicService>) -> Result<(), OpError> {
        for (name, atomic) in op.atomics.iter().map(|e| (&e.0, &e.1)) {
            let atomic = atomic.to_native();
            match ctx.container.get_mut(name.as_str()) {
                Some(a) => *a = atomic,
                None => {
                    ctx.container.insert(name.to_string(), atomic);
                }
            }
        }
        Ok(())
    }
}

fn set_backup(name: &str, after: Atomic) -> Backup {
    Backup::of(&SetBackup {
        atomics: vec![(name.to_owned(), after)],
    })
}

/// One AtomicLong of the side that lost a split brain, with its merge policy.
#[derive(Archive, Serialize, Deserialize, Debug)]
pub struct MergingAtomic {
    /// The AtomicLong's name.
    pub name: String,
    /// Its value, update time and hits there.
    pub atomic: Atomic,
    /// Its merge policy, as [`MergePolicy::to_wire`] gives it.
    pub policy: u8,
}

/// Merges AtomicLongs of one partition from the side that lost a split brain into the side it
/// joins: each where its policy says the merging one wins ([`MergePolicy::merging_wins`]; an
/// AtomicLong exists once written). Answers the indices of those taken; backed up by one
/// [`SetBackup`] with them, under the service's replica counts (it carries several objects, so
/// `[[services.objects]]` counts do not apply to it).
#[derive(Archive, Serialize, Deserialize, Debug)]
pub struct Merge {
    /// The merging AtomicLongs, all of the partition the operation runs on.
    pub atomics: Vec<MergingAtomic>,
}

impl Operation for Merge {
    type Service = AtomicService;
    type Response = Vec<u32>;
    const ID: OpId = OpId(7);

    /// Errors: a policy byte that names no [`MergePolicy`] (nothing is merged).
    fn run(op: &Archived<Self>, ctx: &mut OpContext<AtomicService>) -> Result<Vec<u32>, OpError> {
        // Every byte checked before anything changes: a bad one fails the whole operation.
        let mut policies = Vec::with_capacity(op.atomics.len());
        for m in op.atomics.iter() {
            let policy = MergePolicy::from_wire(m.policy).ok_or_else(|| {
                OpError::failed(format!(
                    "merge of AtomicLong `{}`: policy byte {} names no merge policy",
                    m.name, m.policy
                ))
            })?;
            policies.push(policy);
        }
        let mut taken = Vec::new();
        for (i, (m, policy)) in op.atomics.iter().zip(policies).enumerate() {
            let merging = m.atomic.to_native();
            let existing = ctx.container.get(m.name.as_str()).map(Atomic::stats);
            if policy.merging_wins(merging.stats(), existing) {
                ctx.container.insert(m.name.to_string(), merging);
                taken.push(i as u32);
            }
        }
        Ok(taken)
    }

    fn should_backup(_: &Archived<Self>, taken: &Vec<u32>) -> bool {
        !taken.is_empty()
    }

    fn backup_operation(op: &Archived<Self>, taken: &Vec<u32>) -> Option<Backup> {
        let atomics = taken
            .iter()
            .filter_map(|&i| op.atomics.get(i as usize))
            .map(|m| (m.name.to_string(), m.atomic.to_native()))
            .collect();
        Some(Backup::of(&SetBackup { atomics }))
    }
}

/// Writes `name` as the owner at the present time: its value becomes `f(value)` (an absent
/// name starting from 0, with no hits), its update time now. Returns the AtomicLong after.
fn write(container: &mut Container, name: &str, f: impl FnOnce(i64) -> i64) -> Atomic {
    let now = now_millis();
    let atomic = match container.get_mut(name) {
        Some(atomic) => atomic,
        // The key is allocated only for a new name.
        None => container.entry(name.to_owned()).or_default(),
    };
    atomic.value = f(atomic.value);
    atomic.updated_millis = now;
    *atomic
}

#[cfg(test)]
mod tests {
    use corecast_engine::payload::{access, encode};
    use corecast_engine::testkit::PartitionHarness;
    use corecast_engine::Config;

    use super::*;

    type Harness = PartitionHarness<AtomicService>;

    fn harness() -> Harness {
        Harness::new().unwrap()
    }

    fn get(h: &mut Harness, name: &str) -> i64 {
        h.run(&Get { name: name.into() }).unwrap()
    }

    fn set(name: &str, value: i64) -> Set {
        Set {
            name: name.into(),
            value,
        }
    }

    fn add(name: &str, delta: i64, return_old: bool) -> Add {
        Add {
            name: name.into(),
            delta,
            return_old,
        }
    }

    fn answer(h: &mut Harness, op: &Add) -> i64 {
        h.run(op).unwrap().answer
    }

    fn cas(name: &str, expect: i64, update: i64) -> CompareAndSet {
        CompareAndSet {
            name: name.into(),
            expect,
            update,
        }
    }

    fn get_and_set(name: &str, value: i64) -> GetAndSet {
        GetAndSet {
            name: name.into(),
            value,
        }
    }

    fn atomic(value: i64, hits: u32, updated_millis: u64) -> Atomic {
        Atomic {
            value,
            updated_millis,
            hits,
        }
    }

    fn backup_of(name: &str, value: i64) -> SetBackup {
        SetBackup {
            atomics: vec![(name.into(), atomic(value, 0, 0))],
        }
    }

    /// A name's value as the container holds it (no hit counted).
    fn value_in(h: &Harness, name: &str) -> Option<i64> {
        h.container().get(name).map(|a| a.value)
    }

    /// Any write response, for the backup checks (they read only its `after`).
    fn written(answer: i64) -> Written {
        Written {
            answer,
            after: atomic(answer, 0, 0),
        }
    }

    /// The backup an operation asks for after answering `response`, through its archived form:
    /// `None` when `should_backup` says no.
    fn backup_ids<O: Operation>(op: &O, response: &O::Response) -> Option<(ServiceId, OpId)> {
        let bytes = encode(op).unwrap();
        let archived = access::<O>(&bytes).unwrap();
        if !O::should_backup(archived, response) {
            return None;
        }
        O::backup_operation(archived, response).map(|b| b.ids())
    }

    #[test]
    fn get_reads_zero_for_an_unwritten_name_and_creates_nothing() {
        let mut h = harness();
        assert_eq!(get(&mut h, "a"), 0);
        assert!(h.container().is_empty());
    }

    #[test]
    fn set_then_get() {
        let mut h = harness();
        h.run(&set("a", 42)).unwrap();
        assert_eq!(get(&mut h, "a"), 42);
        h.run(&set("a", -7)).unwrap();
        assert_eq!(get(&mut h, "a"), -7);
        assert_eq!(get(&mut h, "b"), 0, "names are independent");
    }

    #[test]
    fn add_answers_the_new_or_the_old_value() {
        let mut h = harness();
        assert_eq!(answer(&mut h, &add("a", 5, false)), 5, "add_and_get");
        assert_eq!(answer(&mut h, &add("a", 3, true)), 5, "get_and_add");
        assert_eq!(get(&mut h, "a"), 8);
        assert_eq!(answer(&mut h, &add("a", 1, false)), 9, "increment_and_get");
        assert_eq!(answer(&mut h, &add("a", -1, false)), 8, "decrement_and_get");
        assert_eq!(answer(&mut h, &add("a", -10, true)), 8);
        assert_eq!(get(&mut h, "a"), -2);
    }

    #[test]
    fn add_of_zero_is_a_read() {
        let mut h = harness();
        assert_eq!(answer(&mut h, &add("a", 0, true)), 0);
        assert_eq!(answer(&mut h, &add("a", 0, false)), 0);
        assert!(h.container().is_empty(), "no entry created");
        h.run(&set("a", 4)).unwrap();
        assert_eq!(answer(&mut h, &add("a", 0, false)), 4);
        assert_eq!(backup_ids(&add("a", 0, false), &written(4)), None);
    }

    #[test]
    fn add_wraps() {
        let mut h = harness();
        h.run(&set("a", i64::MAX)).unwrap();
        assert_eq!(answer(&mut h, &add("a", 1, false)), i64::MIN);
        assert_eq!(answer(&mut h, &add("a", -1, true)), i64::MIN);
        assert_eq!(get(&mut h, "a"), i64::MAX);
    }

    #[test]
    fn compare_and_set_writes_only_on_a_match() {
        let mut h = harness();
        assert!(
            h.run(&cas("a", 1, 2)).unwrap().is_none(),
            "unwritten reads 0"
        );
        assert!(h.container().is_empty(), "a failed CAS creates nothing");
        assert!(h.run(&cas("a", 0, 10)).unwrap().is_some());
        assert_eq!(get(&mut h, "a"), 10);
        assert!(h.run(&cas("a", 0, 20)).unwrap().is_none());
        assert_eq!(get(&mut h, "a"), 10);
        assert!(h.run(&cas("a", 10, 11)).unwrap().is_some());
        assert_eq!(get(&mut h, "a"), 11);
    }

    #[test]
    fn get_and_set_answers_the_previous_value() {
        let mut h = harness();
        assert_eq!(h.run(&get_and_set("a", 3)).unwrap().answer, 0);
        assert_eq!(h.run(&get_and_set("a", 9)).unwrap().answer, 3);
        assert_eq!(get(&mut h, "a"), 9);
    }

    #[test]
    fn every_write_is_backed_up_by_set_backup_and_reads_are_not() {
        let set_backup = Some((AtomicService::ID, SetBackup::ID));
        let after = Some(atomic(1, 0, 0));
        assert_eq!(backup_ids(&Get { name: "a".into() }, &0), None);
        assert_eq!(backup_ids(&set("a", 1), &written(1)), set_backup);
        assert_eq!(backup_ids(&add("a", 1, false), &written(1)), set_backup);
        assert_eq!(backup_ids(&add("a", 1, true), &written(0)), set_backup);
        assert_eq!(backup_ids(&cas("a", 0, 1), &after), set_backup);
        assert_eq!(backup_ids(&cas("a", 0, 1), &None), None);
        assert_eq!(backup_ids(&get_and_set("a", 1), &written(0)), set_backup);
        assert_eq!(backup_ids(&backup_of("a", 1), &()), None);
    }

    #[test]
    fn backups_reproduce_the_owners_value_after_every_write() {
        let mut owner = harness();
        let mut b1 = harness();
        let mut b2 = harness();
        macro_rules! write {
            ($op:expr) => {
                owner
                    .run_with_backups(&$op, &mut [&mut b1, &mut b2])
                    .unwrap()
            };
        }
        write!(set("a", 10));
        assert_eq!(write!(add("a", 5, false)).answer, 15);
        assert_eq!(write!(add("a", -20, true)).answer, 15);
        assert!(write!(cas("a", -5, 100)).is_some());
        assert_eq!(write!(get_and_set("a", 7)).answer, 100);
        write!(set("b", i64::MAX));
        assert_eq!(write!(add("b", 2, false)).answer, i64::MIN + 1);
        assert_eq!(write!(add("c", 3, true)).answer, 0);
        assert_eq!(value_in(&owner, "a"), Some(7));
        for backup in [&mut b1, &mut b2] {
            assert_eq!(backup.container(), owner.container());
            assert_eq!(get(backup, "a"), 7);
            assert_eq!(get(backup, "b"), i64::MIN + 1);
            assert_eq!(get(backup, "c"), 3);
        }
    }

    #[test]
    fn a_replayed_backup_does_not_add_twice() {
        let mut owner = harness();
        let mut backup = harness();
        let after = owner
            .run_with_backups(&add("a", 5, false), &mut [&mut backup])
            .unwrap()
            .after;
        // The same backup again (a resend): it carries the value, not the delta.
        let resend = SetBackup {
            atomics: vec![("a".into(), after)],
        };
        backup.run(&resend).unwrap();
        backup.run(&resend).unwrap();
        assert_eq!(backup.container(), owner.container());
        assert_eq!(get(&mut backup, "a"), 5);
    }

    #[test]
    fn a_failed_compare_and_set_sends_no_backup() {
        let mut owner = harness();
        let mut backup = harness();
        owner
            .run_with_backups(&set("a", 20), &mut [&mut backup])
            .unwrap();
        // Mark the backup so any backup operation reaching it would show.
        backup.run(&backup_of("a", 77)).unwrap();
        let written = owner
            .run_with_backups(&cas("a", 0, 99), &mut [&mut backup])
            .unwrap();
        assert!(written.is_none());
        assert_eq!(value_in(&owner, "a"), Some(20));
        assert_eq!(value_in(&backup, "a"), Some(77), "no backup ran");
        let written = owner
            .run_with_backups(&cas("a", 20, 21), &mut [&mut backup])
            .unwrap();
        assert!(written.is_some());
        assert_eq!(backup.container(), owner.container());
    }

    #[test]
    fn an_add_of_zero_sends_no_backup() {
        let mut owner = harness();
        let mut backup = harness();
        owner
            .run_with_backups(&set("a", 1), &mut [&mut backup])
            .unwrap();
        backup.run(&backup_of("a", 77)).unwrap();
        let value = owner
            .run_with_backups(&add("a", 0, false), &mut [&mut backup])
            .unwrap();
        assert_eq!(value.answer, 1);
        assert_eq!(value_in(&backup, "a"), Some(77), "no backup ran");
    }

    #[test]
    fn migration_copies_values_replacing_the_destinations_and_clears_the_source() {
        let mut source = harness();
        source.run(&set("a", 3)).unwrap();
        source.run(&set("b", -4)).unwrap();
        get(&mut source, "a");
        let mut destination = harness();
        destination.run(&set("a", 1000)).unwrap();
        destination.run(&set("z", 9)).unwrap();
        let carried = *source.container().get("a").unwrap();
        source.migrate_to(&mut destination, ReplicaIndex::PRIMARY);
        assert!(source.container().is_empty(), "source keeps no replica");
        assert_eq!(
            destination.container().get("a"),
            Some(&carried),
            "replaced, not added, with its update time and hits"
        );
        assert_eq!(get(&mut destination, "b"), -4);
        assert_eq!(get(&mut destination, "z"), 9, "names not carried are kept");
    }

    #[test]
    fn a_rolled_back_migration_leaves_the_source_and_clears_the_destination() {
        let mut source = harness();
        source.run(&set("a", 3)).unwrap();
        let mut destination = harness();
        source.migrate_and_roll_back(&mut destination, ReplicaIndex(1));
        assert_eq!(get(&mut source, "a"), 3);
        assert!(destination.container().is_empty());
    }

    #[test]
    fn an_empty_partition_has_no_replica_data() {
        let event = ReplicationEvent {
            partition: PartitionId(0),
            replica_index: ReplicaIndex(1),
        };
        assert!(AtomicService::replica_data(&Container::default(), &event).is_none());
    }

    #[test]
    fn reads_on_the_owner_count_hits_and_writes_keep_them() {
        let mut h = harness();
        get(&mut h, "a");
        assert!(
            h.container().is_empty(),
            "a read of no AtomicLong counts nothing"
        );
        h.run(&set("a", 1)).unwrap();
        assert_eq!(h.container()["a"].hits, 0, "a new AtomicLong starts at 0");
        get(&mut h, "a");
        get(&mut h, "a");
        answer(&mut h, &add("a", 0, false));
        assert_eq!(h.container()["a"].hits, 3, "get and add of 0 are reads");
        h.run(&set("a", 2)).unwrap();
        answer(&mut h, &add("a", 5, false));
        assert!(h.run(&cas("a", 7, 8)).unwrap().is_some());
        h.run(&get_and_set("a", 9)).unwrap();
        assert_eq!(
            h.container()["a"].hits,
            3,
            "writes neither count nor reset hits"
        );
        h.run(&SetBackup {
            atomics: vec![("a".into(), atomic(9, u32::MAX, 1))],
        })
        .unwrap();
        get(&mut h, "a");
        assert_eq!(h.container()["a"].hits, u32::MAX, "hits saturate");
    }

    #[test]
    fn a_write_stamps_the_update_time_and_its_backup_keeps_it_and_the_hits() {
        let mut owner = harness();
        let mut backup = harness();
        let before = now_millis();
        owner
            .run_with_backups(&set("a", 1), &mut [&mut backup])
            .unwrap();
        let stamped = owner.container()["a"].updated_millis;
        assert!(stamped >= before && stamped <= now_millis());
        get(&mut owner, "a");
        get(&mut owner, "a");
        get(&mut backup, "a");
        assert_eq!(
            backup.container()["a"].hits,
            0,
            "reads on a backup count nothing"
        );
        std::thread::sleep(std::time::Duration::from_millis(3));
        get(&mut owner, "a");
        assert_eq!(
            owner.container()["a"].updated_millis,
            stamped,
            "a read does not move the update time"
        );
        let after = owner
            .run_with_backups(&add("a", 1, false), &mut [&mut backup])
            .unwrap()
            .after;
        assert!(after.updated_millis > stamped, "a write moves it");
        assert_eq!(after.hits, 3);
        assert_eq!(backup.container()["a"], after, "the owner's time and hits");
    }

    /// The losing side's and the winning side's AtomicLongs of the merge tests: names on both
    /// sides differ in hits and update time (`hits_*`: the merging side read more, written
    /// earlier; `time_*`: the other way round; `tie`: equal), and each side has names of its own.
    fn sides(config: &Config) -> (Harness, Harness, Harness) {
        let h = || Harness::with_config(config, &Properties::default(), 5701).unwrap();
        let (mut source, mut target, mut backup) = (h(), h(), h());
        let seed = |h: &mut Harness, atomics: &[(&str, Atomic)]| {
            let atomics = atomics.iter().map(|(n, a)| (n.to_string(), *a)).collect();
            h.run(&SetBackup { atomics }).unwrap();
        };
        seed(
            &mut source,
            &[
                ("hits", atomic(1, 10, 1_000)),
                ("time", atomic(3, 1, 3_000)),
                ("tie", atomic(5, 4, 100)),
                ("source-only", atomic(7, 0, 100)),
            ],
        );
        for h in [&mut target, &mut backup] {
            seed(
                h,
                &[
                    ("hits", atomic(2, 5, 2_000)),
                    ("time", atomic(4, 7, 500)),
                    ("tie", atomic(6, 4, 100)),
                    ("target-only", atomic(8, 0, 100)),
                ],
            );
        }
        (source, target, backup)
    }

    fn config(toml: &str) -> Config {
        Config::from_toml_str(toml).unwrap()
    }

    fn values(h: &Harness) -> Vec<(String, i64)> {
        let mut v: Vec<_> = h
            .container()
            .iter()
            .map(|(k, a)| (k.clone(), a.value))
            .collect();
        v.sort();
        v
    }

    #[test]
    fn each_merge_policy_picks_the_atomics_it_says_and_backups_follow() {
        let cases = [
            ("pass-through", [1, 3, 5], true),
            ("put-if-absent", [2, 4, 6], true),
            ("higher-hits", [1, 4, 6], true),
            ("latest-update", [2, 3, 6], true),
            ("discard", [2, 4, 6], false),
        ];
        for (policy, [hits, time, tie], arrives) in cases {
            let (source, mut target, mut backup) = sides(&config(&format!(
                "[split-brain]\nmerge-policy = \"{policy}\""
            )));
            let ops = source.merge_into(&mut target, &mut [&mut backup]).unwrap();
            assert_eq!(ops, 1, "{policy}: four AtomicLongs make one operation");
            let mut want = vec![
                ("hits".to_string(), hits),
                ("target-only".to_string(), 8),
                ("tie".to_string(), tie),
                ("time".to_string(), time),
            ];
            if arrives {
                want.push(("source-only".to_string(), 7));
            }
            want.sort();
            assert_eq!(values(&target), want, "{policy}");
            assert_eq!(backup.container(), target.container(), "{policy}: backup");
        }
    }

    #[test]
    fn a_merged_atomic_keeps_the_merging_sides_hits_and_update_time() {
        let (source, mut target, mut backup) =
            sides(&config("[split-brain]\nmerge-policy = \"pass-through\""));
        source.merge_into(&mut target, &mut [&mut backup]).unwrap();
        assert_eq!(target.container()["hits"], atomic(1, 10, 1_000));
        assert_eq!(backup.container()["source-only"], atomic(7, 0, 100));
    }

    #[test]
    fn per_object_merge_policies_override_the_services() {
        let toml = r#"
            [split-brain]
            merge-policy = "discard"
            [[services]]
            name = "atomic"
            merge-policy = "put-if-absent"
            [[services.objects]]
            name = "hits"
            merge-policy = "higher-hits"
            [[services.objects]]
            name = "time"
            merge-policy = "latest-update"
        "#;
        let (source, mut target, mut backup) = sides(&config(toml));
        source.merge_into(&mut target, &mut [&mut backup]).unwrap();
        assert_eq!(
            values(&target),
            vec![
                ("hits".to_string(), 1),
                ("source-only".to_string(), 7),
                ("target-only".to_string(), 8),
                ("tie".to_string(), 6),
                ("time".to_string(), 3),
            ],
            "the service's put-if-absent beats the cluster's discard; the objects' own win"
        );
        assert_eq!(backup.container(), target.container());
    }

    #[test]
    fn a_merge_with_an_unknown_policy_byte_fails_and_changes_nothing() {
        let (_, mut target, _) = sides(&Config::default());
        let before = target.container().clone();
        let op = Merge {
            atomics: vec![
                MergingAtomic {
                    name: "new".into(),
                    atomic: atomic(1, 0, 1),
                    policy: MergePolicy::PassThrough.to_wire(),
                },
                MergingAtomic {
                    name: "hits".into(),
                    atomic: atomic(1, 0, 1),
                    policy: 9,
                },
            ],
        };
        let err = target.run(&op).unwrap_err();
        assert_eq!(
            err,
            OpError::failed("merge of AtomicLong `hits`: policy byte 9 names no merge policy")
        );
        assert_eq!(target.container(), &before);
    }

    #[test]
    fn an_empty_partition_merges_nothing_and_many_atomics_split_into_bounded_operations() {
        let mut target = harness();
        assert_eq!(harness().merge_into(&mut target, &mut []).unwrap(), 0);
        let mut source = harness();
        // 3,000 names of 1,000 bytes: about 3 MiB of names, so at least three operations.
        let atomics = (0..3000)
            .map(|i| (format!("{i:01000}"), atomic(i, 0, 1)))
            .collect();
        source.run(&SetBackup { atomics }).unwrap();
        let ops = source.merge_into(&mut target, &mut []).unwrap();
        assert!((3..=4).contains(&ops), "{ops} operations");
        assert_eq!(target.container(), source.container());
    }
}
