//! Distributed objects by name: handles, creation on first use, destruction, listing.
//!
//! Owns: [`ObjectHandle`] (what a typed proxy wraps) and the engine's own operations on the
//! object registry. An object's *home* is the partition of its name: the home partition's shard
//! records that the object exists (so the record moves with the partition) and runs the service's
//! `create_object` there. Destruction runs on every partition, because an object's state (a
//! map's entries, say) may sit in all of them.

use rkyv::{Archive, Archived, Deserialize, Serialize};

use crate::config::BackupPolicy;
use crate::invocation::{decode_response, encode_request, InvocationError, Invoker};
use crate::partition::PartitionId;
use crate::payload::{access, encode_into, ArchivesAs, Bytes};
use crate::registry::{BackupWork, Mode};
use crate::replica::SyncRequest;
use crate::shard::ShardCore;
use crate::spi::{OpError, OpId, Operation, Service, ServiceId};

/// The engine's own service id, for the object registry's operations.
pub(crate) const ENGINE_SERVICE: ServiceId = ServiceId(0);

const CREATE: OpId = OpId(1);
const DESTROY: OpId = OpId(2);
const LIST: OpId = OpId(3);
/// A backup replica asks the owner for a partition's state ([`crate::replica::SyncRequest`]).
pub(crate) const SYNC: OpId = OpId(4);

/// Records an object on its home partition and lets its service create its state there.
#[derive(Archive, Serialize, Deserialize)]
struct CreateObject {
    service: u16,
    name: String,
}

/// Drops an object's record (on its home) and its state (on every partition).
#[derive(Archive, Serialize, Deserialize)]
struct DestroyObject {
    service: u16,
    name: String,
}

/// The names of a service's objects whose home is the partition.
#[derive(Archive, Serialize, Deserialize)]
struct ListObjects {
    service: u16,
}

/// Runs one of the engine's operations on one of the shard's partitions: the object registry's
/// (as owner, creating and destroying ask for backups; as a backup, they are applied), and the
/// partition snapshot a backup replica asks for.
pub(crate) fn run_engine_op(
    core: &mut ShardCore,
    partition: PartitionId,
    local: usize,
    op: OpId,
    payload: &[u8],
    out: &mut Bytes,
    mode: Mode,
) -> Result<Option<BackupWork>, OpError> {
    let malformed = |e: rkyv::rancor::Error| OpError::MalformedPayload {
        service: ENGINE_SERVICE,
        op,
        reason: e.to_string(),
    };
    let response = match op {
        CREATE => {
            let req = access::<CreateObject>(payload).map_err(malformed)?;
            let service = ServiceId(req.service.to_native());
            let slot = core
                .dispatch
                .slot_of(service)
                .ok_or(OpError::UnknownService { service })?;
            let record = (service, req.name.to_string());
            let created = core
                .objects
                .get_mut(local)
                .is_some_and(|set| set.insert(record));
            if created {
                core.slots[slot].create_object(local, req.name.as_str());
            }
            let policy = core.slots[slot].policy(Some(req.name.as_str()));
            encode_into(&Vec::<String>::new(), out).map_err(encode_error)?;
            return Ok(
                (created && mode == Mode::Owner).then(|| registry_backup(CREATE, payload, policy))
            );
        }
        DESTROY => {
            let req = access::<DestroyObject>(payload).map_err(malformed)?;
            let service = ServiceId(req.service.to_native());
            let slot = core
                .dispatch
                .slot_of(service)
                .ok_or(OpError::UnknownService { service })?;
            if let Some(set) = core.objects.get_mut(local) {
                set.remove(&(service, req.name.to_string()));
            }
            core.slots[slot].destroy_object(local, req.name.as_str());
            let policy = core.slots[slot].policy(Some(req.name.as_str()));
            encode_into(&Vec::<String>::new(), out).map_err(encode_error)?;
            return Ok((mode == Mode::Owner).then(|| registry_backup(DESTROY, payload, policy)));
        }
        LIST => {
            let req = access::<ListObjects>(payload).map_err(malformed)?;
            let service = ServiceId(req.service.to_native());
            let mut names: Vec<String> = core
                .objects
                .get(local)
                .into_iter()
                .flatten()
                .filter(|(s, _)| *s == service)
                .map(|(_, n)| n.clone())
                .collect();
            names.sort();
            names
        }
        SYNC if mode == Mode::Owner => {
            let req = access::<SyncRequest>(payload).map_err(malformed)?;
            let namespaces: Vec<u16> = req.namespaces.iter().map(|n| n.to_native()).collect();
            let replica = crate::spi::ReplicaIndex(req.replica);
            let snapshot = core.snapshot(partition, &namespaces, replica)?;
            encode_into(&snapshot, out).map_err(encode_error)?;
            return Ok(None);
        }
        _ => {
            return Err(OpError::UnknownOperation {
                service: ENGINE_SERVICE,
                op,
            })
        }
    };
    encode_into(&response, out).map_err(encode_error)?;
    Ok(None)
}

pub(crate) fn encode_error(e: rkyv::rancor::Error) -> OpError {
    OpError::Encode {
        what: "response",
        reason: e.to_string(),
    }
}

/// A registry change's backup: the same request, idempotent on the backup.
fn registry_backup(op: OpId, payload: &[u8], policy: BackupPolicy) -> BackupWork {
    let mut copy = Bytes::with_capacity(payload.len());
    copy.extend_from_slice(payload);
    BackupWork {
        service: ENGINE_SERVICE,
        op,
        payload: copy,
        sync: policy.sync,
        async_: policy.async_,
    }
}

/// The object records of one partition, archived for a snapshot.
pub(crate) fn records_snapshot(core: &ShardCore, local: usize) -> Result<Bytes, OpError> {
    let mut records: Vec<(u16, String)> = core
        .objects
        .get(local)
        .into_iter()
        .flatten()
        .map(|(s, n)| (s.0, n.clone()))
        .collect();
    records.sort();
    crate::payload::encode(&records).map_err(encode_error)
}

/// Replaces one partition's object records with a snapshot's.
pub(crate) fn install_records(
    core: &mut ShardCore,
    local: usize,
    data: Option<&[u8]>,
) -> Result<(), OpError> {
    let Some(set) = core.objects.get_mut(local) else {
        return Ok(());
    };
    set.clear();
    if let Some(data) = data {
        let mut aligned = Bytes::with_capacity(data.len());
        aligned.extend_from_slice(data);
        let records = crate::payload::decode::<Vec<(u16, String)>>(&aligned).map_err(|e| {
            OpError::MalformedPayload {
                service: ENGINE_SERVICE,
                op: SYNC,
                reason: format!("object records: {e}"),
            }
        })?;
        set.extend(records.into_iter().map(|(s, n)| (ServiceId(s), n)));
    }
    Ok(())
}

/// A handle to one distributed object: its name, its service, its home partition, and the
/// invoker to reach the member's shards. Typed proxies wrap one and turn methods into operations.
#[derive(Clone)]
pub struct ObjectHandle {
    name: String,
    service: ServiceId,
    home: PartitionId,
    invoker: Invoker,
}

impl ObjectHandle {
    /// Creates the object of service `S` named `name` if it does not exist yet, and returns a
    /// handle to it.
    ///
    /// Errors: `Operation` with [`OpError::UnknownService`] when `S` is not running on the member.
    pub async fn open<S: Service>(invoker: Invoker, name: &str) -> Result<Self, InvocationError> {
        let home = invoker.partition_of(name.as_bytes());
        let request = CreateObject {
            service: S::ID.0,
            name: name.to_owned(),
        };
        let payload = encode_request(ENGINE_SERVICE, CREATE, &request)?;
        invoker
            .invoke_raw(home, ENGINE_SERVICE, CREATE, payload)
            .await?;
        Ok(Self {
            name: name.to_owned(),
            service: S::ID,
            home,
            invoker,
        })
    }

    /// The object's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The service the object belongs to.
    pub fn service(&self) -> ServiceId {
        self.service
    }

    /// The partition of the object's name, where single-partition objects (a counter) live.
    pub fn partition(&self) -> PartitionId {
        self.home
    }

    /// The invoker this handle sends through.
    pub fn invoker(&self) -> &Invoker {
        &self.invoker
    }

    /// Runs `op` on the object's home partition.
    ///
    /// Errors: as [`Invoker::invoke`].
    pub async fn invoke<O: Operation>(&self, op: &O) -> Result<O::Response, InvocationError> {
        self.invoker.invoke(self.home, op).await
    }

    /// Runs `op` on the partition of `key` (for objects spread over partitions, like maps).
    ///
    /// Errors: as [`Invoker::invoke`].
    pub async fn invoke_key<O: Operation>(
        &self,
        key: &[u8],
        op: &O,
    ) -> Result<O::Response, InvocationError> {
        self.invoke_key_as::<O, O>(key, op).await
    }

    /// [`ObjectHandle::invoke_key`] of operation `O`, given as any value that archives as one
    /// (see [`Invoker::invoke_as`]).
    ///
    /// Errors: as [`Invoker::invoke`].
    pub async fn invoke_key_as<O: Operation, V: ArchivesAs<O>>(
        &self,
        key: &[u8],
        op: &V,
    ) -> Result<O::Response, InvocationError> {
        self.invoker
            .invoke_as::<O, V>(self.invoker.partition_of(key), op)
            .await
    }

    /// [`ObjectHandle::invoke_key_as`], with the response read in place by `read` (see
    /// [`Invoker::invoke_with`]).
    ///
    /// Errors: as [`Invoker::invoke`].
    pub async fn invoke_key_with<O: Operation, V: ArchivesAs<O>, R>(
        &self,
        key: &[u8],
        op: &V,
        read: impl FnOnce(&Archived<O::Response>) -> R,
    ) -> Result<R, InvocationError> {
        self.invoker
            .invoke_with::<O, V, R>(self.invoker.partition_of(key), op, read)
            .await
    }

    /// Runs `op` on every partition and gathers the responses, in partition order.
    ///
    /// Errors: as [`Invoker::invoke_all`].
    pub async fn invoke_all<O: Operation>(
        &self,
        op: &O,
    ) -> Result<Vec<(PartitionId, O::Response)>, InvocationError> {
        self.invoker.invoke_all(op).await
    }

    /// Destroys the object: its record and its state in every partition's container.
    ///
    /// Errors: as [`Invoker::invoke_all`].
    pub async fn destroy(self) -> Result<(), InvocationError> {
        destroy(&self.invoker, self.service, &self.name).await
    }
}

/// Destroys object `name` of `service` everywhere.
pub(crate) async fn destroy(
    invoker: &Invoker,
    service: ServiceId,
    name: &str,
) -> Result<(), InvocationError> {
    let request = DestroyObject {
        service: service.0,
        name: name.to_owned(),
    };
    let payload = encode_request(ENGINE_SERVICE, DESTROY, &request)?;
    invoker
        .invoke_all_raw(ENGINE_SERVICE, DESTROY, payload)
        .await?;
    Ok(())
}

/// The names of `service`'s objects, sorted.
pub(crate) async fn list(
    invoker: &Invoker,
    service: ServiceId,
) -> Result<Vec<String>, InvocationError> {
    let payload = encode_request(ENGINE_SERVICE, LIST, &ListObjects { service: service.0 })?;
    let mut names = Vec::new();
    for (partition, bytes) in invoker
        .invoke_all_raw(ENGINE_SERVICE, LIST, payload)
        .await?
    {
        names.extend(decode_response::<Vec<String>>(partition, &bytes)?);
    }
    names.sort();
    Ok(names)
}
