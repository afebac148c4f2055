//! A minimal key-value service (bytes to bytes, per named store): what the benchmark's get/put
//! workload runs on until the full Map lands. Keys are routed by their own partition, so one
//! store spreads over every partition and shard. Replica counts and `read-backup-data` can be
//! set per store (`[[services.objects]]`); gets may then be served by a backup replica.

use ahash::AHashMap;
use corecast_engine::prelude::*;

/// The key-value service.
pub struct KvService;

/// One partition's entries: store name → key → value.
pub type Container = AHashMap<String, AHashMap<Vec<u8>, Vec<u8>>>;

impl Service for KvService {
    const NAME: &'static str = "kv";
    const ID: ServiceId = ServiceId(17);
    type Container = Container;
    type ReplicaData = Vec<(String, Vec<(Vec<u8>, Vec<u8>)>)>;

    fn init(_: &ServiceContext, _: &Properties) -> Result<Self, ServiceError> {
        Ok(KvService)
    }

    fn operations(ops: &mut Operations<Self>) {
        ops.add::<Put>()
            .add::<Get>()
            .add::<Remove>()
            .add::<Size>()
            .add::<Clear>();
    }

    fn destroy_object(&mut self, container: &mut Container, name: &str) {
        container.remove(name);
    }

    fn replica_data(container: &Container, _: &ReplicationEvent) -> Option<Self::ReplicaData> {
        let data: Self::ReplicaData = container
            .iter()
            .map(|(name, entries)| {
                let entries = entries
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                (name.clone(), entries)
            })
            .collect();
        (!data.is_empty()).then_some(data)
    }

    fn apply_replica_data(container: &mut Container, data: &Archived<Self::ReplicaData>) {
        for store in data.iter() {
            let entries = container.entry(store.0.to_string()).or_default();
            entries.extend(store.1.iter().map(|e| (e.0.to_vec(), e.1.to_vec())));
        }
    }
}

/// A named key-value store spread over all partitions.
#[derive(Clone)]
pub struct KvStore(ObjectHandle);

impl DistributedObject for KvStore {
    type Service = KvService;
    fn from_handle(handle: ObjectHandle) -> Self {
        KvStore(handle)
    }
}

impl KvStore {
    /// Sets `key` to `value`.
    ///
    /// Errors: the invocation's, when the member has stopped.
    pub async fn put(&self, key: &[u8], value: &[u8]) -> Result<(), InvocationError> {
        let op = Put {
            name: self.0.name().to_owned(),
            key: key.to_vec(),
            value: value.to_vec(),
        };
        self.0.invoke_key(key, &op).await
    }

    /// The value of `key`, if any.
    ///
    /// Errors: the invocation's, when the member has stopped.
    pub async fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, InvocationError> {
        let op = Get {
            name: self.0.name().to_owned(),
            key: key.to_vec(),
        };
        self.0.invoke_key(key, &op).await
    }

    /// Removes `key`; true if it was there.
    ///
    /// Errors: the invocation's, when the member has stopped.
    pub async fn remove(&self, key: &[u8]) -> Result<bool, InvocationError> {
        let op = Remove {
            name: self.0.name().to_owned(),
            key: key.to_vec(),
        };
        self.0.invoke_key(key, &op).await
    }

    /// The number of entries, summed over all partitions.
    ///
    /// Errors: the invocation's, when the member has stopped.
    pub async fn size(&self) -> Result<u64, InvocationError> {
        let sizes = self
            .0
            .invoke_all(&Size {
                name: self.0.name().to_owned(),
            })
            .await?;
        Ok(sizes.into_iter().map(|(_, n)| n).sum())
    }

    /// Removes every entry, in every partition.
    ///
    /// Errors: the invocation's, when the member has stopped.
    pub async fn clear(&self) -> Result<(), InvocationError> {
        self.0
            .invoke_all(&Clear {
                name: self.0.name().to_owned(),
            })
            .await?;
        Ok(())
    }
}

/// Sets a key. Idempotent, so its backup is itself.
#[derive(Archive, Serialize, Deserialize)]
pub struct Put {
    /// The store.
    pub name: String,
    /// The key.
    pub key: Vec<u8>,
    /// The value.
    pub value: Vec<u8>,
}

impl Operation for Put {
    type Service = KvService;
    type Response = ();
    const ID: OpId = OpId(1);
    fn object_name(op: &Archived<Self>) -> Option<&str> {
        Some(op.name.as_str())
    }
    fn run(op: &Archived<Self>, ctx: &mut OpContext<KvService>) -> Result<(), OpError> {
        let entries = match ctx.container.get_mut(op.name.as_str()) {
            Some(entries) => entries,
            None => ctx.container.entry(op.name.to_string()).or_default(),
        };
        entries.insert(op.key.to_vec(), op.value.to_vec());
        Ok(())
    }
    fn backup_operation(op: &Archived<Self>, _: &()) -> Option<Backup> {
        let (name, key, value) = (op.name.to_string(), op.key.to_vec(), op.value.to_vec());
        Some(Backup::of(&Put { name, key, value }))
    }
}

/// Reads a key.
#[derive(Archive, Serialize, Deserialize)]
pub struct Get {
    /// The store.
    pub name: String,
    /// The key.
    pub key: Vec<u8>,
}

impl Operation for Get {
    type Service = KvService;
    type Response = Option<Vec<u8>>;
    const ID: OpId = OpId(2);
    const READS_ONLY: bool = true;
    fn object_name(op: &Archived<Self>) -> Option<&str> {
        Some(op.name.as_str())
    }
    fn run(
        op: &Archived<Self>,
        ctx: &mut OpContext<KvService>,
    ) -> Result<Option<Vec<u8>>, OpError> {
        let entries = ctx.container.get(op.name.as_str());
        Ok(entries.and_then(|e| e.get(op.key.as_slice())).cloned())
    }
}

/// Removes a key. Idempotent, so its backup is itself.
#[derive(Archive, Serialize, Deserialize)]
pub struct Remove {
    /// The store.
    pub name: String,
    /// The key.
    pub key: Vec<u8>,
}

impl Operation for Remove {
    type Service = KvService;
    type Response = bool;
    const ID: OpId = OpId(3);
    fn object_name(op: &Archived<Self>) -> Option<&str> {
        Some(op.name.as_str())
    }
    fn run(op: &Archived<Self>, ctx: &mut OpContext<KvService>) -> Result<bool, OpError> {
        let entries = ctx.container.get_mut(op.name.as_str());
        Ok(entries.is_some_and(|e| e.remove(op.key.as_slice()).is_some()))
    }
    fn should_backup(_: &Archived<Self>, removed: &bool) -> bool {
        *removed
    }
    fn backup_operation(op: &Archived<Self>, _: &bool) -> Option<Backup> {
        Some(Backup::of(&Remove {
            name: op.name.to_string(),
            key: op.key.to_vec(),
        }))
    }
}

/// A partition's entry count for a store (sent to all partitions).
#[derive(Archive, Serialize, Deserialize)]
pub struct Size {
    /// The store.
    pub name: String,
}

impl Operation for Size {
    type Service = KvService;
    type Response = u64;
    const ID: OpId = OpId(4);
    fn object_name(op: &Archived<Self>) -> Option<&str> {
        Some(op.name.as_str())
    }
    fn run(op: &Archived<Self>, ctx: &mut OpContext<KvService>) -> Result<u64, OpError> {
        Ok(ctx
            .container
            .get(op.name.as_str())
            .map_or(0, |e| e.len() as u64))
    }
}

/// Drops a partition's entries of a store (sent to all partitions).
#[derive(Archive, Serialize, Deserialize)]
pub struct Clear {
    /// The store.
    pub name: String,
}

impl Operation for Clear {
    type Service = KvService;
    type Response = ();
    const ID: OpId = OpId(5);
    fn object_name(op: &Archived<Self>) -> Option<&str> {
        Some(op.name.as_str())
    }
    fn run(op: &Archived<Self>, ctx: &mut OpContext<KvService>) -> Result<(), OpError> {
        ctx.container.remove(op.name.as_str());
        Ok(())
    }
    fn backup_operation(op: &Archived<Self>, _: &()) -> Option<Backup> {
        Some(Backup::of(&Clear {
            name: op.name.to_string(),
        }))
    }
}
