//! AtomicLong: a 64-bit integer by name, on the partition of its name, with backups.
//!
//! Every write's backup is the value after it ([`SetBackup`]), so a resent backup cannot add
//! twice. Arithmetic wraps.

use ahash::AHashMap;
use corecast_engine::prelude::*;

/// The AtomicLong service.
pub struct AtomicService;

/// One partition's values, by name.
pub type Container = AHashMap<String, i64>;

impl Service for AtomicService {
    const NAME: &'static str = "atomic";
    const ID: ServiceId = ServiceId(19);
    type Container = Container;
    type ReplicaData = Vec<(String, i64)>;

    fn init(_: &ServiceContext, _: &Properties) -> Result<Self, ServiceError> {
        Ok(AtomicService)
    }

    fn operations(ops: &mut Operations<Self>) {
        ops.add::<Get>().add::<Update>().add::<SetBackup>();
    }

    fn destroy_object(&mut self, container: &mut Container, name: &str) {
        container.remove(name);
    }

    fn replica_data(container: &Container, _: &ReplicationEvent) -> Option<Self::ReplicaData> {
        let data: Vec<_> = container.iter().map(|(k, v)| (k.clone(), *v)).collect();
        (!data.is_empty()).then_some(data)
    }

    fn apply_replica_data(container: &mut Container, data: &Archived<Self::ReplicaData>) {
        for e in data.iter() {
            container.insert(e.0.to_string(), e.1.to_native());
        }
    }
}

/// Reads the value (0 until set).
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

/// How an [`Update`] changes the value.
#[derive(Archive, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Change {
    /// Set it.
    Set(i64),
    /// Add to it.
    Add(i64),
    /// Set it to the second if it is the first.
    CompareAndSet(i64, i64),
}

/// The value before and after an [`Update`].
#[derive(Archive, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub struct Updated {
    /// Before.
    pub old: i64,
    /// After (equal to `old` when a compare-and-set failed).
    pub new: i64,
    /// Whether the value was written.
    pub written: bool,
}

/// Changes the value; answers it before and after.
#[derive(Archive, Serialize, Deserialize)]
pub struct Update {
    /// The AtomicLong.
    pub name: String,
    /// The change.
    pub change: Change,
}

impl Operation for Update {
    type Service = AtomicService;
    type Response = Updated;
    const ID: OpId = OpId(2);
    fn object_name(op: &Archived<Self>) -> Option<&str> {
        Some(op.name.as_str())
    }
    fn run(op: &Archived<Self>, ctx: &mut OpContext<AtomicService>) -> Result<Updated, OpError> {
        let value = match ctx.container.get_mut(op.name.as_str()) {
            Some(v) => v,
            None => ctx.container.entry(op.name.to_string()).or_insert(0),
        };
        let old = *value;
        let new = match op.change {
            ArchivedChange::Set(v) => Some(v.to_native()),
            ArchivedChange::Add(d) => Some(old.wrapping_add(d.to_native())),
            ArchivedChange::CompareAndSet(expect, update) => {
                (old == expect.to_native()).then(|| update.to_native())
            }
        };
        if let Some(new) = new {
            *value = new;
        }
        Ok(Updated {
            old,
            new: new.unwrap_or(old),
            written: new.is_some(),
        })
    }
    fn should_backup(_: &Archived<Self>, u: &Updated) -> bool {
        u.written
    }
    fn backup_operation(op: &Archived<Self>, u: &Updated) -> Option<Backup> {
        Some(Backup::of(&SetBackup {
            name: op.name.to_string(),
            value: u.new,
        }))
    }
}

/// The value after a write, as backups apply it.
#[derive(Archive, Serialize, Deserialize)]
pub struct SetBackup {
    /// The AtomicLong.
    pub name: String,
    /// Its value.
    pub value: i64,
}

impl Operation for SetBackup {
    type Service = AtomicService;
    type Response = ();
    const ID: OpId = OpId(3);
    fn object_name(op: &Archived<Self>) -> Option<&str> {
        Some(op.name.as_str())
    }
    fn run(op: &Archived<Self>, ctx: &mut OpContext<AtomicService>) -> Result<(), OpError> {
        ctx.container
            .insert(op.name.to_string(), op.value.to_native());
        Ok(())
    }
}

/// A distributed AtomicLong.
#[derive(Clone)]
pub struct AtomicLong(ObjectHandle);

impl DistributedObject for AtomicLong {
    type Service = AtomicService;
    fn from_handle(handle: ObjectHandle) -> Self {
        AtomicLong(handle)
    }
}

impl AtomicLong {
    async fn update(&self, change: Change) -> Result<Updated, InvocationError> {
        let op = Update {
            name: self.0.name().to_owned(),
            change,
        };
        self.0.invoke(&op).await
    }

    /// The value.
    ///
    /// Errors: the invocation's.
    pub async fn get(&self) -> Result<i64, InvocationError> {
        let op = Get {
            name: self.0.name().to_owned(),
        };
        self.0.invoke(&op).await
    }

    /// Sets the value.
    ///
    /// Errors: the invocation's.
    pub async fn set(&self, value: i64) -> Result<(), InvocationError> {
        self.update(Change::Set(value)).await.map(|_| ())
    }

    /// Sets the value; answers the one before.
    ///
    /// Errors: the invocation's.
    pub async fn get_and_set(&self, value: i64) -> Result<i64, InvocationError> {
        Ok(self.update(Change::Set(value)).await?.old)
    }

    /// Adds `delta`; answers the new value.
    ///
    /// Errors: the invocation's.
    pub async fn add_and_get(&self, delta: i64) -> Result<i64, InvocationError> {
        Ok(self.update(Change::Add(delta)).await?.new)
    }

    /// Adds `delta`; answers the value before.
    ///
    /// Errors: the invocation's.
    pub async fn get_and_add(&self, delta: i64) -> Result<i64, InvocationError> {
        Ok(self.update(Change::Add(delta)).await?.old)
    }

    /// Adds one; answers the new value.
    ///
    /// Errors: the invocation's.
    pub async fn increment_and_get(&self) -> Result<i64, InvocationError> {
        self.add_and_get(1).await
    }

    /// Subtracts one; answers the new value.
    ///
    /// Errors: the invocation's.
    pub async fn decrement_and_get(&self) -> Result<i64, InvocationError> {
        self.add_and_get(-1).await
    }

    /// Sets `update` if the value is `expect`; answers whether it did.
    ///
    /// Errors: the invocation's.
    pub async fn compare_and_set(&self, expect: i64, update: i64) -> Result<bool, InvocationError> {
        Ok(self
            .update(Change::CompareAndSet(expect, update))
            .await?
            .written)
    }
}

#[cfg(test)]
mod tests {
    use corecast_engine::testkit::PartitionHarness;

    use super::*;

    fn update(h: &mut PartitionHarness<AtomicService>, change: Change) -> Updated {
        h.run(&Update {
            name: "a".into(),
            change,
        })
        .expect("update")
    }

    #[test]
    fn every_operation_reads_and_writes_as_documented() {
        let mut h = PartitionHarness::<AtomicService>::new().expect("harness");
        let get = |h: &mut PartitionHarness<AtomicService>| {
            h.run(&Get { name: "a".into() }).expect("get")
        };
        assert_eq!(get(&mut h), 0);
        assert_eq!(update(&mut h, Change::Set(5)).old, 0);
        assert_eq!(
            update(&mut h, Change::Add(3)),
            Updated {
                old: 5,
                new: 8,
                written: true
            }
        );
        assert_eq!(update(&mut h, Change::Add(-10)).new, -2);
        let failed = update(&mut h, Change::CompareAndSet(7, 1));
        assert_eq!(
            failed,
            Updated {
                old: -2,
                new: -2,
                written: false
            }
        );
        assert!(update(&mut h, Change::CompareAndSet(-2, 1)).written);
        assert_eq!(get(&mut h), 1);
        update(&mut h, Change::Set(i64::MAX));
        assert_eq!(update(&mut h, Change::Add(1)).new, i64::MIN, "wraps");
    }

    #[test]
    fn backups_take_the_value_after_each_write_and_failed_cas_sends_none() {
        let mut owner = PartitionHarness::<AtomicService>::new().expect("harness");
        let mut backup = PartitionHarness::<AtomicService>::new().expect("harness");
        for change in [
            Change::Set(10),
            Change::Add(5),
            Change::CompareAndSet(15, 20),
        ] {
            let op = Update {
                name: "a".into(),
                change,
            };
            owner
                .run_with_backups(&op, &mut [&mut backup])
                .expect("write");
            assert_eq!(owner.container(), backup.container());
        }
        // A failed compare-and-set sends no backup: a backup told otherwise would differ.
        backup.service_mut();
        let op = Update {
            name: "a".into(),
            change: Change::CompareAndSet(0, 99),
        };
        owner
            .run_with_backups(&op, &mut [&mut backup])
            .expect("cas");
        assert_eq!(backup.container().get("a"), Some(&20));
    }
}
