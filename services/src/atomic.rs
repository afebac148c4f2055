//! AtomicLong: a 64-bit integer by name, kept on the partition of its name, with backups.
//!
//! Modelled on [`crate::counter`]: one operation per kind of access ([`Get`], [`Set`], [`Add`],
//! [`CompareAndSet`], [`GetAndSet`]), run on the object's home partition. Every write is backed
//! up by one idempotent [`SetBackup`] carrying the value after the write, so a backup that is
//! resent (or replayed) sets the same value again instead of adding twice. Arithmetic wraps.
//! A name never written reads 0; reads and failed writes leave the container as it was.

use ahash::AHashMap;
use corecast_engine::prelude::*;

/// The AtomicLong service: one instance per shard, containers per partition.
pub struct AtomicService;

/// One partition's values, by object name.
pub type Container = AHashMap<String, i64>;

impl Service for AtomicService {
    const NAME: &'static str = "atomic";
    const ID: ServiceId = ServiceId(19);
    type Container = Container;
    type ReplicaData = Vec<(String, i64)>;

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
            .add::<SetBackup>();
    }

    fn destroy_object(&mut self, container: &mut Container, name: &str) {
        container.remove(name);
    }

    fn replica_data(container: &Container, _: &ReplicationEvent) -> Option<Self::ReplicaData> {
        crate::named_values(container)
    }

    /// Replaces the values of the names the data carries; other names are left as they are.
    fn apply_replica_data(container: &mut Container, data: &Archived<Self::ReplicaData>) {
        for e in data.iter() {
            container.insert(e.0.to_string(), e.1.to_native());
        }
    }

    // Migration: the SPI's defaults (the source drops what it keeps no replica of, a rolled-back
    // destination what it received).
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
        self.0
            .invoke(&Add {
                name,
                delta,
                return_old,
            })
            .await
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
        self.0.invoke(&Set { name, value }).await
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
        self.0
            .invoke(&CompareAndSet {
                name,
                expect,
                update,
            })
            .await
    }

    /// Sets the value to `value` and returns the value before.
    ///
    /// Errors: the invocation's, when the member has stopped.
    pub async fn get_and_set(&self, value: i64) -> Result<i64, InvocationError> {
        let name = self.name();
        self.0.invoke(&GetAndSet { name, value }).await
    }
}

/// Reads the value (0 for a name never written); changes nothing, so a backup may serve it when
/// `read-backup-data` is on.
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
        Ok(ctx.container.get(op.name.as_str()).copied().unwrap_or(0))
    }
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
    type Response = ();
    const ID: OpId = OpId(2);
    fn object_name(op: &Archived<Self>) -> Option<&str> {
        Some(op.name.as_str())
    }
    fn run(op: &Archived<Self>, ctx: &mut OpContext<AtomicService>) -> Result<(), OpError> {
        with_value(ctx.container, &op.name, |v| *v = op.value.to_native());
        Ok(())
    }
    fn backup_operation(op: &Archived<Self>, _: &()) -> Option<Backup> {
        Some(set_backup(&op.name, op.value.to_native()))
    }
}

/// Adds `delta` (wrapping) and answers the value before (`return_old`) or after; backed up by
/// [`SetBackup`] with the value after. Adding 0 is a read: it writes and backs up nothing.
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
    type Response = i64;
    const ID: OpId = OpId(3);
    fn object_name(op: &Archived<Self>) -> Option<&str> {
        Some(op.name.as_str())
    }
    fn run(op: &Archived<Self>, ctx: &mut OpContext<AtomicService>) -> Result<i64, OpError> {
        let delta = op.delta.to_native();
        if delta == 0 {
            return Ok(ctx.container.get(op.name.as_str()).copied().unwrap_or(0));
        }
        let (old, new) = with_value(ctx.container, &op.name, |v| {
            let old = *v;
            *v = old.wrapping_add(delta);
            (old, *v)
        });
        Ok(if op.return_old { old } else { new })
    }
    fn should_backup(op: &Archived<Self>, _: &i64) -> bool {
        op.delta != 0
    }
    fn backup_operation(op: &Archived<Self>, response: &i64) -> Option<Backup> {
        let delta = op.delta.to_native();
        let new = if op.return_old {
            response.wrapping_add(delta)
        } else {
            *response
        };
        Some(set_backup(&op.name, new))
    }
}

/// Sets the value to `update` if it is `expect`; answers whether it did. Backed up by
/// [`SetBackup`] only when it did.
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
    type Response = bool;
    const ID: OpId = OpId(4);
    fn object_name(op: &Archived<Self>) -> Option<&str> {
        Some(op.name.as_str())
    }
    fn run(op: &Archived<Self>, ctx: &mut OpContext<AtomicService>) -> Result<bool, OpError> {
        let current = ctx.container.get(op.name.as_str()).copied().unwrap_or(0);
        if current != op.expect.to_native() {
            return Ok(false);
        }
        with_value(ctx.container, &op.name, |v| *v = op.update.to_native());
        Ok(true)
    }
    fn should_backup(_: &Archived<Self>, written: &bool) -> bool {
        *written
    }
    fn backup_operation(op: &Archived<Self>, _: &bool) -> Option<Backup> {
        Some(set_backup(&op.name, op.update.to_native()))
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
    type Response = i64;
    const ID: OpId = OpId(5);
    fn object_name(op: &Archived<Self>) -> Option<&str> {
        Some(op.name.as_str())
    }
    fn run(op: &Archived<Self>, ctx: &mut OpContext<AtomicService>) -> Result<i64, OpError> {
        let value = op.value.to_native();
        Ok(with_value(ctx.container, &op.name, |v| {
            std::mem::replace(v, value)
        }))
    }
    fn backup_operation(op: &Archived<Self>, _: &i64) -> Option<Backup> {
        Some(set_backup(&op.name, op.value.to_native()))
    }
}

/// The backup of every write: the value after it, set as is (idempotent, so a replay is harmless).
#[derive(Archive, Serialize, Deserialize)]
pub struct SetBackup {
    /// The AtomicLong.
    pub name: String,
    /// Its value after the write.
    pub value: i64,
}

impl Operation for SetBackup {
    type Service = AtomicService;
    type Response = ();
    const ID: OpId = OpId(6);
    fn object_name(op: &Archived<Self>) -> Option<&str> {
        Some(op.name.as_str())
    }
    fn run(op: &Archived<Self>, ctx: &mut OpContext<AtomicService>) -> Result<(), OpError> {
        with_value(ctx.container, &op.name, |v| *v = op.value.to_native());
        Ok(())
    }
}

fn set_backup(name: &str, value: i64) -> Backup {
    Backup::of(&SetBackup {
        name: name.to_owned(),
        value,
    })
}

/// Runs `write` on the value of `name`, inserted as 0 if absent (allocating the key only then).
fn with_value<R>(container: &mut Container, name: &str, write: impl FnOnce(&mut i64) -> R) -> R {
    match container.get_mut(name) {
        Some(value) => write(value),
        None => write(container.entry(name.to_owned()).or_insert(0)),
    }
}

#[cfg(test)]
mod tests {
    use corecast_engine::payload::{access, encode};
    use corecast_engine::testkit::PartitionHarness;

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

    fn backup_of(name: &str, value: i64) -> SetBackup {
        SetBackup {
            name: name.into(),
            value,
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
        assert_eq!(h.run(&add("a", 5, false)).unwrap(), 5, "add_and_get");
        assert_eq!(h.run(&add("a", 3, true)).unwrap(), 5, "get_and_add");
        assert_eq!(get(&mut h, "a"), 8);
        assert_eq!(h.run(&add("a", 1, false)).unwrap(), 9, "increment_and_get");
        assert_eq!(h.run(&add("a", -1, false)).unwrap(), 8, "decrement_and_get");
        assert_eq!(h.run(&add("a", -10, true)).unwrap(), 8);
        assert_eq!(get(&mut h, "a"), -2);
    }

    #[test]
    fn add_of_zero_is_a_read() {
        let mut h = harness();
        assert_eq!(h.run(&add("a", 0, true)).unwrap(), 0);
        assert_eq!(h.run(&add("a", 0, false)).unwrap(), 0);
        assert!(h.container().is_empty(), "no entry created");
        h.run(&set("a", 4)).unwrap();
        assert_eq!(h.run(&add("a", 0, false)).unwrap(), 4);
        assert_eq!(backup_ids(&add("a", 0, false), &4), None);
    }

    #[test]
    fn add_wraps() {
        let mut h = harness();
        h.run(&set("a", i64::MAX)).unwrap();
        assert_eq!(h.run(&add("a", 1, false)).unwrap(), i64::MIN);
        assert_eq!(h.run(&add("a", -1, true)).unwrap(), i64::MIN);
        assert_eq!(get(&mut h, "a"), i64::MAX);
    }

    #[test]
    fn compare_and_set_writes_only_on_a_match() {
        let mut h = harness();
        assert!(!h.run(&cas("a", 1, 2)).unwrap(), "unwritten reads 0");
        assert!(h.container().is_empty(), "a failed CAS creates nothing");
        assert!(h.run(&cas("a", 0, 10)).unwrap());
        assert_eq!(get(&mut h, "a"), 10);
        assert!(!h.run(&cas("a", 0, 20)).unwrap());
        assert_eq!(get(&mut h, "a"), 10);
        assert!(h.run(&cas("a", 10, 11)).unwrap());
        assert_eq!(get(&mut h, "a"), 11);
    }

    #[test]
    fn get_and_set_answers_the_previous_value() {
        let mut h = harness();
        assert_eq!(h.run(&get_and_set("a", 3)).unwrap(), 0);
        assert_eq!(h.run(&get_and_set("a", 9)).unwrap(), 3);
        assert_eq!(get(&mut h, "a"), 9);
    }

    #[test]
    fn every_write_is_backed_up_by_set_backup_and_reads_are_not() {
        let set_backup = Some((AtomicService::ID, SetBackup::ID));
        assert_eq!(backup_ids(&Get { name: "a".into() }, &0), None);
        assert_eq!(backup_ids(&set("a", 1), &()), set_backup);
        assert_eq!(backup_ids(&add("a", 1, false), &1), set_backup);
        assert_eq!(backup_ids(&add("a", 1, true), &0), set_backup);
        assert_eq!(backup_ids(&cas("a", 0, 1), &true), set_backup);
        assert_eq!(backup_ids(&cas("a", 0, 1), &false), None);
        assert_eq!(backup_ids(&get_and_set("a", 1), &0), set_backup);
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
        assert_eq!(write!(add("a", 5, false)), 15);
        assert_eq!(write!(add("a", -20, true)), 15);
        assert!(write!(cas("a", -5, 100)));
        assert_eq!(write!(get_and_set("a", 7)), 100);
        write!(set("b", i64::MAX));
        assert_eq!(write!(add("b", 2, false)), i64::MIN + 1);
        assert_eq!(write!(add("c", 3, true)), 0);
        assert_eq!(owner.container().get("a"), Some(&7));
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
        owner
            .run_with_backups(&add("a", 5, false), &mut [&mut backup])
            .unwrap();
        // The same backup again (a resend): it carries the value, not the delta.
        backup.run(&backup_of("a", 5)).unwrap();
        backup.run(&backup_of("a", 5)).unwrap();
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
        assert!(!written);
        assert_eq!(owner.container().get("a"), Some(&20));
        assert_eq!(backup.container().get("a"), Some(&77), "no backup ran");
        let written = owner
            .run_with_backups(&cas("a", 20, 21), &mut [&mut backup])
            .unwrap();
        assert!(written);
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
        assert_eq!(value, 1);
        assert_eq!(backup.container().get("a"), Some(&77), "no backup ran");
    }

    #[test]
    fn migration_copies_values_replacing_the_destinations_and_clears_the_source() {
        let mut source = harness();
        source.run(&set("a", 3)).unwrap();
        source.run(&set("b", -4)).unwrap();
        let mut destination = harness();
        destination.run(&set("a", 1000)).unwrap();
        destination.run(&set("z", 9)).unwrap();
        source.migrate_to(&mut destination, ReplicaIndex::PRIMARY);
        assert!(source.container().is_empty(), "source keeps no replica");
        assert_eq!(get(&mut destination, "a"), 3, "replaced, not added");
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
}
