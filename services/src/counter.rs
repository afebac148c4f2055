//! The Counter of Hazelcast's SPI tutorial: service, container, proxy and operation, with its
//! backup operation and migration methods. Kept under 100 lines of code (a test counts them).

use ahash::AHashMap;
use corecast_engine::prelude::*;

/// The counter service: one instance per shard, containers per partition.
pub struct CounterService;

/// One partition's counters, by object name.
pub type Container = AHashMap<String, i64>;

impl Service for CounterService {
    const NAME: &'static str = "counter";
    const ID: ServiceId = ServiceId(16);
    type Container = Container;
    type ReplicaData = Vec<(String, i64)>;

    fn init(ctx: &ServiceContext, _properties: &Properties) -> Result<Self, ServiceError> {
        tracing::debug!(shard = %ctx.shard, "CounterService.init()");
        Ok(CounterService)
    }

    fn operations(ops: &mut Operations<Self>) {
        ops.add::<Inc>().add::<IncBackup>();
    }

    fn create_object(&mut self, container: &mut Container, name: &str) {
        container.entry(name.to_owned()).or_insert(0);
    }

    fn destroy_object(&mut self, container: &mut Container, name: &str) {
        container.remove(name);
    }

    fn replica_data(container: &Container, _: &ReplicationEvent) -> Option<Self::ReplicaData> {
        let data: Vec<_> = container.iter().map(|(k, v)| (k.clone(), *v)).collect();
        (!data.is_empty()).then_some(data)
    }

    fn apply_replica_data(container: &mut Container, data: &Archived<Self::ReplicaData>) {
        container.extend(data.iter().map(|e| (e.0.to_string(), e.1.to_native())));
    }

    fn commit_migration(&mut self, container: &mut Container, e: &MigrationEvent) {
        if e.endpoint == MigrationEndpoint::Source && e.new_replica.is_none() {
            container.clear();
        }
    }

    fn rollback_migration(&mut self, container: &mut Container, e: &MigrationEvent) {
        if e.endpoint == MigrationEndpoint::Destination && e.current_replica.is_none() {
            container.clear();
        }
    }
}

/// The distributed counter proxy: `inc` becomes an operation on the partition of its name.
#[derive(Clone)]
pub struct Counter(ObjectHandle);

impl DistributedObject for Counter {
    type Service = CounterService;
    fn from_handle(handle: ObjectHandle) -> Self {
        Counter(handle)
    }
}

impl Counter {
    /// Adds `amount` and returns the new value (`inc(0)` reads it).
    ///
    /// Errors: the invocation's, when the member has stopped.
    pub async fn inc(&self, amount: i64) -> Result<i64, InvocationError> {
        let name = self.0.name().to_owned();
        self.0.invoke(&Inc { name, amount }).await
    }
}

/// Increments a counter and answers the new value; backed up by [`IncBackup`].
#[derive(Archive, Serialize, Deserialize)]
pub struct Inc {
    /// The counter.
    pub name: String,
    /// What to add.
    pub amount: i64,
}

impl Operation for Inc {
    type Service = CounterService;
    type Response = i64;
    const ID: OpId = OpId(1);
    fn run(op: &Archived<Self>, ctx: &mut OpContext<CounterService>) -> Result<i64, OpError> {
        tracing::info!("Executing {}.inc() on: {}", op.name, ctx.address());
        Ok(add(ctx.container, &op.name, op.amount.to_native()))
    }
    fn should_backup(op: &Archived<Self>, _: &i64) -> bool {
        op.amount != 0
    }
    fn backup_operation(op: &Archived<Self>, _: &i64) -> Option<Backup> {
        Some(Backup::of(&IncBackup {
            name: op.name.to_string(),
            amount: op.amount.to_native(),
        }))
    }
}

/// The increment as a backup replica applies it.
#[derive(Archive, Serialize, Deserialize)]
pub struct IncBackup {
    /// The counter.
    pub name: String,
    /// What to add.
    pub amount: i64,
}

impl Operation for IncBackup {
    type Service = CounterService;
    type Response = ();
    const ID: OpId = OpId(2);
    fn run(op: &Archived<Self>, ctx: &mut OpContext<CounterService>) -> Result<(), OpError> {
        tracing::info!("Executing backup {}.inc() on: {}", op.name, ctx.address());
        add(ctx.container, &op.name, op.amount.to_native());
        Ok(())
    }
}

fn add(container: &mut Container, name: &str, amount: i64) -> i64 {
    let value = match container.get_mut(name) {
        Some(value) => value,
        None => container.entry(name.to_owned()).or_insert(0),
    };
    *value = value.wrapping_add(amount);
    *value
}
