//! Invocation: getting an operation to the shard that owns its partition and its answer back.
//!
//! Owns: [`Invoker`] (cheap to clone, usable from any thread) and [`InvocationError`].
//! A caller on one of the member's own shards runs operations on that shard's partitions inline,
//! with no channel hop. A caller on another shard queues its call in its shard's outbox, sent
//! with the round's other calls to that owner as one message, its answer coming back into the
//! calling shard's own queue (see [`crate::outbox`]). A thread that is no shard sends a
//! [`ShardMsg`] on the owning shard's bounded channel (a full channel makes the caller wait:
//! backpressure, not memory growth) with a oneshot [`Reply`]. Operations to all partitions go to every shard at once and are gathered per partition.
//!
//! Leaves to others: what runs on the shard ([`crate::shard`]), objects ([`crate::object`]).

use rkyv::Archived;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use crate::extension::{Acks, RemoteAnswer, Router};
use crate::partition::{PartitionCount, PartitionId, ShardCount, ShardId};
use crate::payload::{access, decode, encode_as, ArchivesAs, Bytes, Payload};
use crate::reply::{Answer, Reply};
use crate::shard::{self, MemberToken, PartitionReplies, ShardLink, ShardMsg};
use crate::spi::{MemberInfo, OpError, OpId, Operation, Service, ServiceId};

/// Why an invocation produced no response.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvocationError {
    /// The member (or the shard) has shut down.
    #[error("the member has shut down")]
    MemberStopped,
    /// The operation ran, or was refused, on its partition.
    #[error("{partition}: {source}")]
    Operation {
        /// The partition the operation was sent to.
        partition: PartitionId,
        /// What the shard answered.
        #[source]
        source: OpError,
    },
    /// The partition id is not below the partition count.
    #[error("{partition} does not exist (partition count {count})")]
    NoSuchPartition {
        /// The partition asked for.
        partition: PartitionId,
        /// The cluster's partition count.
        count: u32,
    },
    /// The request could not be archived.
    #[error("cannot encode {service}/{op}: {reason}")]
    Encode {
        /// The operation's service.
        service: ServiceId,
        /// The operation's id.
        op: OpId,
        /// rkyv's reason.
        reason: String,
    },
    /// The response did not validate as the operation's response type.
    #[error("malformed response from {partition}: {reason}")]
    MalformedResponse {
        /// The partition that answered.
        partition: PartitionId,
        /// What validation found.
        reason: String,
    },
    /// The shard index is not below the member's shard count.
    #[error("{shard} does not exist (the member runs {count} shards)")]
    NoSuchShard {
        /// The shard asked for.
        shard: ShardId,
        /// The member's shard count.
        count: u32,
    },
}

/// Sends operations to the shards of one member. Cloning shares the channels, not partition data.
#[derive(Clone)]
pub struct Invoker {
    inner: Arc<Routes>,
}

struct Routes {
    links: Vec<Arc<ShardLink>>,
    shards: ShardCount,
    partitions: PartitionCount,
    member: MemberInfo,
}

impl std::fmt::Debug for Invoker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Invoker")
            .field("member", &self.inner.member.address)
            .field("shards", &self.inner.shards.get())
            .finish()
    }
}

impl Invoker {
    pub(crate) fn new(
        links: Vec<Arc<ShardLink>>,
        shards: ShardCount,
        partitions: PartitionCount,
        member: MemberInfo,
    ) -> Self {
        Self {
            inner: Arc::new(Routes {
                links,
                shards,
                partitions,
                member,
            }),
        }
    }

    /// Every shard's link, by shard index.
    pub(crate) fn links(&self) -> Vec<Arc<ShardLink>> {
        self.inner.links.clone()
    }

    pub(crate) fn token(&self) -> MemberToken {
        MemberToken(Arc::as_ptr(&self.inner) as usize)
    }

    /// The cluster's partition count.
    pub fn partition_count(&self) -> PartitionCount {
        self.inner.partitions
    }

    /// How many shards this member runs.
    pub fn shard_count(&self) -> ShardCount {
        self.inner.shards
    }

    /// The member this invoker sends to.
    pub fn member(&self) -> &MemberInfo {
        &self.inner.member
    }

    /// The partition of `key`.
    pub fn partition_of(&self, key: &[u8]) -> PartitionId {
        self.inner.partitions.partition_of(key)
    }

    /// The shard this thread runs, if it is one of this member's shards.
    pub fn current_shard(&self) -> Option<ShardId> {
        shard::current_shard(self.token())
    }

    /// Runs `op` on `partition` and returns its response.
    ///
    /// Errors: [`InvocationError::Operation`] with what the service or the shard answered,
    /// [`InvocationError::MemberStopped`] after shutdown, `NoSuchPartition`, and encode / decode
    /// failures (never a panic).
    pub async fn invoke<O: Operation>(
        &self,
        partition: PartitionId,
        op: &O,
    ) -> Result<O::Response, InvocationError> {
        self.invoke_as::<O, O>(partition, op).await
    }

    /// [`Invoker::invoke`] of operation `O`, given as any value that archives as one (a twin
    /// of `O` that borrows its fields: no copy of them before they are archived).
    ///
    /// Errors: as [`Invoker::invoke`].
    pub async fn invoke_as<O: Operation, V: ArchivesAs<O>>(
        &self,
        partition: PartitionId,
        op: &V,
    ) -> Result<O::Response, InvocationError> {
        let (service, op_id) = (<O::Service as Service>::ID, O::ID);
        let payload = encode_request_as::<O, V>(service, op_id, op)?;
        let invocation = match self.run_here::<O>(partition, payload) {
            Here::Answer(answer) => return answer,
            Here::Acks(acks) => acks,
            // Read where it landed, in the caller's slot: no copy of its own.
            Here::Queued(mut answer) => {
                let decoded = std::future::poll_fn(|cx| {
                    answer.poll_with(cx, |answer| match answer {
                        Ok(bytes) => decode_response::<O::Response>(partition, &bytes),
                        Err(source) => Err(InvocationError::Operation { partition, source }),
                    })
                })
                .await;
                return decoded.unwrap_or(Err(InvocationError::MemberStopped));
            }
            Here::Not(payload) => self.invoke_raw(partition, service, op_id, payload),
        };
        decode_response::<O::Response>(partition, &invocation.await?)
    }

    /// Runs `O` here if this shard owns `partition` and is free, with its response as it is,
    /// not archived and read back (a quarter of a local counter increment); a write whose sync
    /// backups must acknowledge it waits for them as any other. A partition of another shard of
    /// this member, called from one of its shards, is queued in this shard's outbox (as
    /// [`Invocation`] would queue it, without building one). Anything else is sent as
    /// [`Invoker::invoke_raw`] sends it.
    fn run_here<O: Operation>(
        &self,
        partition: PartitionId,
        payload: Bytes,
    ) -> Here<'_, O::Response> {
        let routes = &self.inner;
        if partition.0 >= routes.partitions.get() {
            return Here::Not(payload);
        }
        let shard = routes.shards.shard_of(partition);
        let token = self.token();
        let router = shard::current_router(token, shard);
        if router.as_ref().is_some_and(|r| !r.is_local(partition)) {
            return Here::Not(payload);
        }
        let (service, op) = (<O::Service as Service>::ID, O::ID);
        let ran = shard::with_local(token, shard, |core| {
            core.execute_typed::<O>(partition, &payload)
        });
        let failed = |source| Here::Answer(Err(InvocationError::Operation { partition, source }));
        let (response, replication) = match ran {
            None => {
                return match shard::queue_call(token, shard, partition, service, op, payload) {
                    Ok(answer) => Here::Queued(answer),
                    Err(payload) => Here::Not(payload),
                }
            }
            Some(Err(e)) => return failed(e),
            Some(Ok(ran)) => ran,
        };
        let acks = router
            .as_ref()
            .zip(replication)
            .and_then(|(r, replication)| r.replicate(replication));
        let (Some(acks), Some(router)) = (acks, router) else {
            return Here::Answer(Ok(response));
        };
        let out = match crate::payload::encode(&response) {
            Ok(out) => out,
            Err(e) => return failed(crate::object::encode_error(e)),
        };
        let stage = Stage::Acks {
            out,
            acks,
            router,
            payload,
        };
        Here::Acks(Invocation {
            invoker: self,
            partition,
            service,
            op,
            stage,
        })
    }

    /// [`Invoker::invoke_as`], with the response read in place: `read` gets it archived
    /// (validated), not deserialized, so a value in it is not copied out before the caller uses
    /// it (the Redis front door writes a GET's value from there into its reply).
    ///
    /// Errors: as [`Invoker::invoke`].
    pub async fn invoke_with<O: Operation, V: ArchivesAs<O>, R>(
        &self,
        partition: PartitionId,
        op: &V,
        read: impl FnOnce(&Archived<O::Response>) -> R,
    ) -> Result<R, InvocationError> {
        let bytes = self.invoke_archived::<O, V>(partition, op).await?;
        let response =
            access::<O::Response>(&bytes).map_err(|e| InvocationError::MalformedResponse {
                partition,
                reason: e.to_string(),
            })?;
        Ok(read(response))
    }

    /// Archives `op` as an `O`, runs it on `partition` and returns the archived response.
    async fn invoke_archived<O: Operation, V: ArchivesAs<O>>(
        &self,
        partition: PartitionId,
        op: &V,
    ) -> Result<Bytes, InvocationError> {
        let (service, op_id) = (<O::Service as Service>::ID, O::ID);
        let payload = encode_request_as::<O, V>(service, op_id, op)?;
        self.invoke_raw(partition, service, op_id, payload).await
    }

    /// Runs `op` on every partition and returns each partition's response, in partition order.
    ///
    /// Errors: the first partition (in id order) whose operation failed, as
    /// [`InvocationError::Operation`]; `MemberStopped` after shutdown.
    pub async fn invoke_all<O: Operation>(
        &self,
        op: &O,
    ) -> Result<Vec<(PartitionId, O::Response)>, InvocationError> {
        let (service, op_id) = (<O::Service as Service>::ID, O::ID);
        let payload = encode_request(service, op_id, op)?;
        self.invoke_all_raw(service, op_id, payload)
            .await?
            .into_iter()
            .map(|(p, bytes)| Ok((p, decode_response::<O::Response>(p, &bytes)?)))
            .collect()
    }

    /// Runs one operation on each of several partitions (a map's `get_all`, one operation per
    /// partition's keys), sent as one message per shard of this member and, in a cluster, one
    /// request per owner shard. Answers in the order of `ops`; each partition at most once.
    ///
    /// Errors: the first failed operation (in `ops` order), as [`InvocationError::Operation`]
    /// (a partition named twice is one); `MemberStopped`, `NoSuchPartition`, encode / decode
    /// failures.
    pub async fn invoke_many<O: Operation>(
        &self,
        ops: &[(PartitionId, O)],
    ) -> Result<Vec<O::Response>, InvocationError> {
        let (service, op_id) = (<O::Service as Service>::ID, O::ID);
        let count = self.inner.partitions.get();
        let mut by_shard: Vec<Vec<(PartitionId, Bytes)>> =
            (0..self.inner.shards.get()).map(|_| Vec::new()).collect();
        let mut seen = ahash::AHashSet::with_capacity(ops.len());
        for (partition, op) in ops {
            if !seen.insert(partition.0) {
                return Err(InvocationError::Operation {
                    partition: *partition,
                    source: OpError::failed("the partition is named twice in one invoke_many"),
                });
            }
            if partition.0 >= count {
                return Err(InvocationError::NoSuchPartition {
                    partition: *partition,
                    count,
                });
            }
            let payload = encode_request(service, op_id, op)?;
            by_shard[self.inner.shards.shard_of(*partition).0 as usize].push((*partition, payload));
        }
        let mut pending = Vec::new();
        for (index, parts) in by_shard.into_iter().enumerate() {
            if parts.is_empty() {
                continue;
            }
            let (reply, answer) = oneshot::channel();
            let msg = ShardMsg::Many {
                service,
                op: op_id,
                parts,
                reply,
            };
            self.send(ShardId(index as u32), msg).await?;
            pending.push(answer);
        }
        let mut answers = ahash::AHashMap::with_capacity(ops.len());
        for answer in pending {
            for (p, a) in answer.await.map_err(|_| InvocationError::MemberStopped)? {
                answers.insert(p.0, a);
            }
        }
        ops.iter()
            .map(|(partition, _)| {
                let answer = answers
                    .remove(&partition.0)
                    .ok_or(InvocationError::MemberStopped)?;
                let bytes = answer.map_err(|source| InvocationError::Operation {
                    partition: *partition,
                    source,
                })?;
                decode_response::<O::Response>(*partition, &bytes)
            })
            .collect()
    }

    /// Runs an operation archived earlier (a split-brain merge's) on its partition and returns
    /// its archived response.
    ///
    /// Errors: as [`Invoker::invoke`].
    pub async fn invoke_prepared(
        &self,
        op: &crate::spi::PreparedOp,
    ) -> Result<Bytes, InvocationError> {
        self.invoke_raw(op.partition, op.service, op.op, op.payload.clone())
            .await
    }

    /// Runs an archived operation on `partition` and returns its archived response. The returned
    /// future does everything that needs no waiting in its first poll, without building the
    /// states of the paths that wait (see [`Invocation`]).
    pub(crate) fn invoke_raw(
        &self,
        partition: PartitionId,
        service: ServiceId,
        op: OpId,
        payload: Bytes,
    ) -> Invocation<'_> {
        Invocation {
            invoker: self,
            partition,
            service,
            op,
            stage: Stage::Start(payload),
        }
    }

    /// Runs an operation on shard `shard` from a thread that is not one of this member's
    /// shards: a message to its inbox, and the answer through a oneshot.
    async fn invoke_by_message(
        &self,
        shard: ShardId,
        partition: PartitionId,
        service: ServiceId,
        op: OpId,
        payload: Bytes,
    ) -> Result<Answer, InvocationError> {
        let (reply, answer) = Reply::thread();
        let msg = ShardMsg::Invoke {
            partition,
            service,
            op,
            payload,
            reply,
        };
        self.send(shard, msg).await?;
        answer.await.map_err(|_| InvocationError::MemberStopped)
    }

    pub(crate) async fn invoke_all_raw(
        &self,
        service: ServiceId,
        op: OpId,
        payload: Bytes,
    ) -> Result<Vec<(PartitionId, Bytes)>, InvocationError> {
        let token = self.token();
        let mut pending = Vec::new();
        let mut replies: PartitionReplies =
            Vec::with_capacity(self.inner.partitions.get() as usize);
        for index in 0..self.inner.shards.get() {
            let shard = ShardId(index);
            // Inline only for a member on its own: in a cluster some partitions are elsewhere,
            // and the shard's loop forwards those.
            if shard::current_router(token, shard).is_none() {
                if let Some(done) =
                    shard::with_local(token, shard, |core| core.execute_all(service, op, &payload))
                {
                    // A member on its own has no backups to send.
                    replies.extend(done.into_iter().map(|(p, answer, _)| (p, answer)));
                    continue;
                }
            }
            let (reply, answer) = oneshot::channel();
            let msg = ShardMsg::AllPartitions {
                service,
                op,
                payload: payload.clone(),
                reply,
            };
            self.send(shard, msg).await?;
            pending.push(answer);
        }
        for answer in pending {
            replies.extend(answer.await.map_err(|_| InvocationError::MemberStopped)?);
        }
        replies.sort_by_key(|(p, _)| *p);
        replies
            .into_iter()
            .map(|(partition, r)| {
                r.map(|bytes| (partition, bytes))
                    .map_err(|source| InvocationError::Operation { partition, source })
            })
            .collect()
    }

    /// Runs `f` on shard `shard`'s thread and returns what its future produces. Operations the
    /// future invokes on that shard's own partitions run inline, without a channel hop.
    ///
    /// Errors: `NoSuchShard`, or `MemberStopped` if the member stops before the future completes.
    pub fn run_on<F, Fut, T>(
        &self,
        shard: ShardId,
        f: F,
    ) -> impl Future<Output = Result<T, InvocationError>> + Send + 'static
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = T> + 'static,
        T: Send + 'static,
    {
        let this = self.clone();
        async move {
            let (reply, answer) = oneshot::channel();
            let job = move || {
                glommio::spawn_local(async move {
                    let _ = reply.send(f().await);
                })
                .detach();
            };
            this.send(shard, ShardMsg::Run(Box::new(job))).await?;
            answer.await.map_err(|_| InvocationError::MemberStopped)
        }
    }

    pub(crate) async fn send(&self, shard: ShardId, msg: ShardMsg) -> Result<(), InvocationError> {
        let link = self
            .inner
            .links
            .get(shard.0 as usize)
            .ok_or(InvocationError::NoSuchShard {
                shard,
                count: self.inner.shards.get(),
            })?;
        link.send(msg)
            .await
            .map_err(|()| InvocationError::MemberStopped)
    }

    /// Runs `f` on shard `shard`'s thread without waiting for it (from `Drop`): sent from a
    /// thread that is not a shard, or spawned when called on one (a full inbox must not block
    /// a shard).
    pub(crate) fn run_detached(&self, shard: ShardId, f: impl FnOnce() + Send + 'static) {
        let msg = ShardMsg::Run(Box::new(f));
        if crate::shard::current_shard(self.token()).is_some() {
            let this = self.clone();
            glommio::spawn_local(async move {
                let _ = this.send(shard, msg).await;
            })
            .detach();
        } else {
            self.send_blocking(shard, msg);
        }
    }

    /// Sends without waiting; used by shutdown from `Drop`, where no executor is around.
    pub(crate) fn send_blocking(&self, shard: ShardId, msg: ShardMsg) -> bool {
        self.inner
            .links
            .get(shard.0 as usize)
            .is_some_and(|link| link.send_blocking(msg))
    }

    /// The member's ticker: wakes every waiting shard and signals stalled ones; `seen` holds
    /// what it saw of each shard last time. How many it signalled.
    pub(crate) fn tick(&self, seen: &mut Vec<crate::doorbell::Watch>) -> usize {
        seen.resize(self.inner.links.len(), Default::default());
        self.inner
            .links
            .iter()
            .zip(seen.iter_mut())
            .map(|(link, seen)| link.tick(seen))
            .filter(|&kicked| kicked)
            .count()
    }
}

/// An invocation under way: [`Invoker::invoke_raw`]'s future.
///
/// Written out instead of an `async fn` because most invocations finish in their first poll (an
/// operation on this shard's partition, with nothing to wait for): as an `async fn` with every
/// path's awaits in one state machine, the future of a local counter increment was 624 bytes,
/// built, moved and dropped around a call that never waits. Here the waiting paths are stages
/// entered only when taken: a sync backup's acknowledgement, a forward to another member, the
/// answer from another shard of this member, or a message from a thread that is no shard.
pub(crate) struct Invocation<'a> {
    invoker: &'a Invoker,
    partition: PartitionId,
    service: ServiceId,
    op: OpId,
    stage: Stage<'a>,
}

/// Where an [`Invocation`] is.
enum Stage<'a> {
    /// Not polled yet: the archived request.
    Start(Bytes),
    /// Ran here as the owner; the answer stands once its sync backups acknowledge the write.
    Acks {
        out: Bytes,
        acks: Acks,
        router: Rc<dyn Router>,
        payload: Bytes,
    },
    /// Sent to the partition's owner on another member.
    Remote(RemoteAnswer),
    /// Queued for another shard of this member, in this shard's outbox.
    Queued(shard::Awaiting),
    /// Sent to the owning shard's inbox from a thread that is no shard.
    Message(Pin<Box<dyn Future<Output = Result<Answer, InvocationError>> + 'a>>),
    /// Answered.
    Done,
}

/// What [`Invoker::run_here`] came to.
enum Here<'a, R> {
    /// The operation ran here: its response, or its error.
    Answer(Result<R, InvocationError>),
    /// It ran here, and its answer (archived) stands once its sync backups acknowledge it.
    Acks(Invocation<'a>),
    /// It was queued for another shard of this member: its answer, `None` if there will be none.
    Queued(shard::Awaiting),
    /// It did not run here: the request, to send where it runs.
    Not(Bytes),
}

/// What the first poll of an [`Invocation`] came to.
enum Step<'a> {
    /// The operation's answer, with nothing to wait for.
    Answer(Answer),
    /// No answer: the invocation failed before the operation ran.
    Fail(InvocationError),
    /// The answer comes from a stage that waits.
    Wait(Stage<'a>),
}

impl<'a> Invocation<'a> {
    /// Runs what needs no waiting: the operation itself when this shard holds the partition (or
    /// a read of a backup here), else the send to where it runs.
    fn start(&self, payload: Bytes) -> Step<'a> {
        let (partition, service, op) = (self.partition, self.service, self.op);
        let routes = &self.invoker.inner;
        let count = routes.partitions.get();
        if partition.0 >= count {
            return Step::Fail(InvocationError::NoSuchPartition { partition, count });
        }
        let shard = routes.shards.shard_of(partition);
        let token = self.invoker.token();
        match shard::current_router(token, shard) {
            // On the partition's shard, but another member owns it: read a backup here if the
            // operation and its service allow it, else forward from here.
            Some(router) if !router.is_local(partition) => {
                let here = shard::with_local(token, shard, |core| {
                    core.read_from_backup(router.as_ref(), partition, service, op, &payload)
                })
                .flatten();
                match here {
                    Some(out) => Step::Answer(Ok(out)),
                    None => Step::Wait(Stage::Remote(
                        router.forward(partition, service, op, payload),
                    )),
                }
            }
            router => {
                let local = shard::with_local(token, shard, |core| {
                    let mut out = Bytes::new();
                    core.execute(partition, service, op, &payload, &mut out, None)
                        .map(|replication| (out, replication))
                });
                match local {
                    Some(Ok((out, Some(replication)))) => {
                        let acks = router.as_ref().and_then(|r| r.replicate(replication));
                        match (acks, router) {
                            (Some(acks), Some(router)) => Step::Wait(Stage::Acks {
                                out,
                                acks,
                                router,
                                payload,
                            }),
                            _ => Step::Answer(Ok(out)),
                        }
                    }
                    Some(Ok((out, None))) => Step::Answer(Ok(out)),
                    Some(Err(e)) => Step::Answer(Err(e)),
                    None => {
                        match shard::queue_call(token, shard, partition, service, op, payload) {
                            Ok(answer) => Step::Wait(Stage::Queued(answer)),
                            Err(payload) => Step::Wait(Stage::Message(Box::pin(
                                self.invoker
                                    .invoke_by_message(shard, partition, service, op, payload),
                            ))),
                        }
                    }
                }
            }
        }
    }
}

impl Future for Invocation<'_> {
    type Output = Result<Bytes, InvocationError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let answer = loop {
            match &mut this.stage {
                Stage::Start(_) => {
                    let Stage::Start(payload) = std::mem::replace(&mut this.stage, Stage::Done)
                    else {
                        unreachable!("matched Start")
                    };
                    match this.start(payload) {
                        Step::Answer(answer) => break answer,
                        Step::Fail(e) => return Poll::Ready(Err(e)),
                        Step::Wait(stage) => this.stage = stage,
                    }
                }
                Stage::Acks { acks, .. } => {
                    let acked = ready!(acks.as_mut().poll(cx));
                    let Stage::Acks {
                        out,
                        router,
                        payload,
                        ..
                    } = std::mem::replace(&mut this.stage, Stage::Done)
                    else {
                        unreachable!("matched Acks")
                    };
                    match acked {
                        Ok(()) => break Ok(out),
                        // A backup deposed this member as owner (it holds a newer table): the
                        // write counts for nothing here; the router waits for that table and
                        // sends it to the new owner.
                        Err(_) => {
                            let (p, s, o) = (this.partition, this.service, this.op);
                            this.stage = Stage::Remote(router.forward(p, s, o, payload));
                        }
                    }
                }
                Stage::Remote(answer) => break ready!(answer.as_mut().poll(cx)),
                Stage::Queued(answer) => match ready!(Pin::new(answer).poll(cx)) {
                    Some(answer) => break answer,
                    None => {
                        this.stage = Stage::Done;
                        return Poll::Ready(Err(InvocationError::MemberStopped));
                    }
                },
                Stage::Message(answer) => match ready!(answer.as_mut().poll(cx)) {
                    Ok(answer) => break answer,
                    Err(e) => {
                        this.stage = Stage::Done;
                        return Poll::Ready(Err(e));
                    }
                },
                // Polled again after its answer: there is none left to give.
                Stage::Done => return Poll::Ready(Err(InvocationError::MemberStopped)),
            }
        };
        this.stage = Stage::Done;
        let partition = this.partition;
        Poll::Ready(answer.map_err(|source| InvocationError::Operation { partition, source }))
    }
}

pub(crate) fn encode_request<T: Payload>(
    service: ServiceId,
    op: OpId,
    value: &T,
) -> Result<Bytes, InvocationError> {
    encode_request_as::<T, T>(service, op, value)
}

/// [`encode_request`] of a value that archives as a `T` (see [`ArchivesAs`]).
fn encode_request_as<T: Payload, V: ArchivesAs<T>>(
    service: ServiceId,
    op: OpId,
    value: &V,
) -> Result<Bytes, InvocationError> {
    encode_as::<T, V>(value).map_err(|e| InvocationError::Encode {
        service,
        op,
        reason: e.to_string(),
    })
}

pub(crate) fn decode_response<T: Payload>(
    partition: PartitionId,
    bytes: &[u8],
) -> Result<T, InvocationError> {
    decode::<T>(bytes).map_err(|e| InvocationError::MalformedResponse {
        partition,
        reason: e.to_string(),
    })
}

/// Waits `d`: on a shard's timer when called on a shard, else on a helper thread (so other
/// futures of the caller's executor keep running).
pub async fn sleep(d: Duration) {
    if crate::shard::on_shard() {
        glommio::timer::sleep(d).await;
        return;
    }
    let (tx, rx) = flume::bounded::<()>(1);
    let spawned = std::thread::Builder::new()
        .name("corecast-sleep".into())
        .spawn(move || {
            std::thread::sleep(d);
            let _ = tx.send(());
        });
    match spawned {
        Ok(_) => {
            let _ = rx.recv_async().await;
        }
        Err(_) => std::thread::sleep(d),
    }
}
