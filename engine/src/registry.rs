//! Type erasure between typed services and the shard: service slots and the dispatch table.
//!
//! Owns: [`ServiceFactory`] (how to start a service on a shard, and its operations),
//! [`ErasedSlot`] (a started service with its containers, behind a trait object), and
//! [`Dispatch`] (`(service id, op id)` → the slot and the monomorphized runner). A shard builds
//! its own slots and its own table from the factories: nothing here is shared across threads.

use std::any::Any;

use ahash::AHashMap;

use crate::config::Properties;
use crate::partition::{PartitionId, ShardId};
use crate::payload::{access, encode_into, Bytes};
use crate::spi::{
    MemberInfo, OpContext, OpError, OpId, Operation, Operations, ReplicaIndex, Service,
    ServiceContext, ServiceError, ServiceId,
};

/// Where an operation runs on a shard.
pub(crate) struct Target<'a> {
    pub partition: PartitionId,
    pub shard: ShardId,
    /// The partition's index in the shard's dense container array.
    pub local: usize,
    pub replica: ReplicaIndex,
    pub member: &'a MemberInfo,
}

/// Runs one operation type against an erased slot: validate the payload in place, run, archive
/// the response into `out`.
pub(crate) type OpFn =
    fn(&mut dyn ErasedSlot, &Target<'_>, &[u8], &mut Bytes) -> Result<(), OpError>;

/// A started service and its containers, one per partition the shard holds.
pub(crate) struct ServiceSlot<S: Service> {
    pub service: S,
    pub containers: Vec<S::Container>,
}

/// What the shard does to a service without knowing its type.
pub(crate) trait ErasedSlot {
    fn as_any_mut(&mut self) -> &mut dyn Any;
    fn create_object(&mut self, local: usize, name: &str);
    fn destroy_object(&mut self, local: usize, name: &str);
    fn shutdown(&mut self, terminate: bool);
    /// The service's `reset`, then every container cleared.
    fn reset(&mut self);
    fn membership_changed(&mut self, event: &crate::spi::MembershipEvent);
}

impl<S: Service> ErasedSlot for ServiceSlot<S> {
    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }

    fn create_object(&mut self, local: usize, name: &str) {
        if let Some(container) = self.containers.get_mut(local) {
            self.service.create_object(container, name);
        }
    }

    fn destroy_object(&mut self, local: usize, name: &str) {
        if let Some(container) = self.containers.get_mut(local) {
            self.service.destroy_object(container, name);
        }
    }

    fn shutdown(&mut self, terminate: bool) {
        self.service.shutdown(terminate);
    }

    fn membership_changed(&mut self, event: &crate::spi::MembershipEvent) {
        self.service.membership_changed(event);
    }

    fn reset(&mut self) {
        self.service.reset();
        self.containers.iter_mut().for_each(S::clear_replica);
    }
}

pub(crate) fn run_op<O: Operation>(
    slot: &mut dyn ErasedSlot,
    target: &Target<'_>,
    payload: &[u8],
    out: &mut Bytes,
) -> Result<(), OpError> {
    let service_id = <O::Service as Service>::ID;
    let slot = slot
        .as_any_mut()
        .downcast_mut::<ServiceSlot<O::Service>>()
        .ok_or(OpError::UnknownOperation {
            service: service_id,
            op: O::ID,
        })?;
    let op = access::<O>(payload).map_err(|e| OpError::MalformedPayload {
        service: service_id,
        op: O::ID,
        reason: e.to_string(),
    })?;
    let container = slot
        .containers
        .get_mut(target.local)
        .ok_or(OpError::WrongShard {
            partition: target.partition,
            shard: target.shard,
        })?;
    let mut ctx = OpContext {
        service: &mut slot.service,
        container,
        partition: target.partition,
        replica: target.replica,
        member: target.member,
    };
    let response = O::run(op, &mut ctx)?;
    encode_into(&response, out).map_err(|e| OpError::Encode {
        what: "response",
        reason: e.to_string(),
    })
}

/// Starts a service on a shard: `init`, then one default container per partition slot.
type StartFn = fn(&ServiceContext, &Properties, usize) -> Result<Box<dyn ErasedSlot>, ServiceError>;

/// How to start one service on a shard; cloned into every shard thread.
#[derive(Clone)]
pub(crate) struct ServiceFactory {
    pub name: &'static str,
    pub id: ServiceId,
    start: StartFn,
    ops: Vec<(OpId, &'static str, OpFn)>,
}

impl ServiceFactory {
    pub fn of<S: Service>() -> Self {
        let mut ops = Operations::<S>::new();
        S::operations(&mut ops);
        Self {
            name: S::NAME,
            id: S::ID,
            start: start_slot::<S>,
            ops: ops.entries,
        }
    }

    /// Whether two operations of this service share an id; names both when they do.
    pub fn duplicate_op(&self) -> Option<(OpId, &'static str, &'static str)> {
        self.ops.iter().enumerate().find_map(|(i, (id, name, _))| {
            self.ops[..i]
                .iter()
                .find(|(other, _, _)| other == id)
                .map(|(_, first, _)| (*id, *first, *name))
        })
    }

    pub fn start(
        &self,
        ctx: &ServiceContext,
        properties: &Properties,
        slots: usize,
    ) -> Result<Box<dyn ErasedSlot>, ServiceError> {
        (self.start)(ctx, properties, slots)
    }
}

fn start_slot<S: Service>(
    ctx: &ServiceContext,
    properties: &Properties,
    slots: usize,
) -> Result<Box<dyn ErasedSlot>, ServiceError> {
    let service = S::init(ctx, properties)?;
    let containers = (0..slots).map(|_| S::Container::default()).collect();
    Ok(Box::new(ServiceSlot {
        service,
        containers,
    }))
}

/// A registered operation: which slot it runs against, and how.
#[derive(Clone, Copy)]
pub(crate) struct Handler {
    pub slot: usize,
    pub run: OpFn,
}

/// `(service, op)` → handler, for the services started on one shard.
#[derive(Default)]
pub(crate) struct Dispatch {
    handlers: AHashMap<(ServiceId, OpId), Handler>,
    slots_by_service: AHashMap<ServiceId, usize>,
}

impl Dispatch {
    pub fn add(&mut self, slot: usize, factory: &ServiceFactory) {
        self.slots_by_service.insert(factory.id, slot);
        for (op, _, run) in &factory.ops {
            self.handlers
                .insert((factory.id, *op), Handler { slot, run: *run });
        }
    }

    pub fn handler(&self, service: ServiceId, op: OpId) -> Result<Handler, OpError> {
        self.handlers
            .get(&(service, op))
            .copied()
            .ok_or(OpError::UnknownOperation { service, op })
    }

    pub fn slot_of(&self, service: ServiceId) -> Option<usize> {
        self.slots_by_service.get(&service).copied()
    }
}
