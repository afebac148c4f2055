//! Batches: one operation on each of several partitions, sent as one request per owner shard.
//!
//! The caller's shard groups the partitions it must forward by their owner's shard and sends
//! each group as one `MANY` request (engine service, op `0xFF02`): per part the partition, its
//! call number and the archived operation. The owner's shard runs each part as `run_request`
//! would (ownership, migration hold, the call's remembered answer), and answers once the sync
//! backups of every part acked: per part, ok and the response, or the error. Parts the owner
//! refuses because the table moved on (`WrongTarget`, `Migrating`), and every part of a batch
//! whose connection failed, go through [`ShardNet::forward_call`] one by one under the same call
//! number, so a part that ran is answered from memory, never run twice.

use rkyv::{Archive, Deserialize, Serialize};

use super::*;

/// The engine's service id, under which batches travel.
const MANY_SERVICE: u16 = 0;
/// A batch of operations of one service and op, on partitions of the receiving shard.
const MANY: u16 = 0xFF02;

#[derive(Archive, Serialize, Deserialize)]
struct ManyRequest {
    service: u16,
    op: u16,
    /// Partition, call number, archived operation.
    parts: Vec<(u32, u64, Vec<u8>)>,
}

#[derive(Archive, Serialize, Deserialize)]
struct ManyResponse {
    /// Partition, whether it ran, and its response (or its `WireError`).
    parts: Vec<(u32, bool, Vec<u8>)>,
}

/// What one shard's batches did (for tests and diagnostics).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BatchStats {
    /// Batch requests sent.
    pub batches: u64,
    /// Parts they carried.
    pub parts: u64,
    /// Parts sent again one by one (refused as moved, or their batch failed).
    pub retried: u64,
}

/// The batch counts of the shard this thread runs (zero off a shard); call through
/// `Invoker::run_on`.
pub fn batch_stats() -> BatchStats {
    SHARD.with(|s| {
        s.borrow()
            .as_ref()
            .map(|sn| sn.batches.get())
            .unwrap_or_default()
    })
}

/// One part's outcome.
type PartAnswer = (PartitionId, Result<Bytes, OpError>);

impl ShardNet {
    /// Whether a request frame is a batch (handled by [`Self::serve_many`]).
    pub(super) fn is_many_request(h: &Header) -> bool {
        h.service == MANY_SERVICE && h.op == MANY
    }

    /// Runs a batch that arrived on this shard and answers it once every part's sync backups
    /// acked.
    ///
    /// Errors: the reason to close the connection (a malformed batch, or one naming the
    /// engine's own operations).
    pub(super) fn serve_many(
        &self,
        h: &Header,
        payload: &[u8],
        writer: &Rc<Writer>,
        pending: &PendingAcks,
    ) -> Result<(), String> {
        if pending.count() >= self.net.max_pending_acks {
            // The whole batch refused: the caller sends each part on its own, backing off.
            let mut out = Bytes::new();
            self.refuse_overloaded(h, pending, &mut out);
            let reply = self.response_header(h, Status::Error);
            return writer.push(&reply, &out).map_err(|e| e.to_string());
        }
        let req =
            payload::access::<ManyRequest>(payload).map_err(|e| format!("malformed batch: {e}"))?;
        let service = req.service.to_native();
        if service == MANY_SERVICE {
            return Err("a batch of the engine's own operations".into());
        }
        let mut parts = Vec::with_capacity(req.parts.len());
        let mut waits = Vec::new();
        let mut aligned = Bytes::new();
        for part in req.parts.iter() {
            let partition = part.0.to_native();
            // The part's own header, as `run_request` checks a single request.
            let sub = Header {
                partition,
                correlation: part.1.to_native(),
                service,
                op: req.op.to_native(),
                caller: h.caller,
                ..Header::new(FrameKind::Request)
            };
            aligned.clear();
            aligned.extend_from_slice(&part.2);
            let mut out = Bytes::new();
            let (status, close, acks) = self.run_request(&sub, &aligned, &mut out);
            if let Some(reason) = close {
                return Err(reason);
            }
            if let Some(acks) = acks {
                waits.push((parts.len(), acks));
            }
            parts.push((partition, status == Status::Ok, out.to_vec()));
        }
        let reply = self.response_header(h, Status::Ok);
        if waits.is_empty() {
            let body = payload::encode(&ManyResponse { parts }).map_err(|e| e.to_string())?;
            return writer.push(&reply, &body).map_err(|e| e.to_string());
        }
        let writer = writer.clone();
        let hold = pending.hold(u32::try_from(waits.len()).unwrap_or(u32::MAX));
        glommio::spawn_local(async move {
            let mut parts = parts;
            for (i, acks) in waits {
                // A part a backup refused (a deposed owner) is answered with that error.
                if let Err(e) = acks.await {
                    let mut out = Bytes::new();
                    error_response(&e, &mut out);
                    parts[i] = (parts[i].0, false, out.to_vec());
                }
            }
            drop(hold);
            let body = match payload::encode(&ManyResponse { parts }) {
                Ok(body) => body,
                Err(e) => {
                    tracing::warn!(error = %e, "batch response not encoded");
                    return;
                }
            };
            if let Err(e) = writer.push(&reply, &body) {
                tracing::warn!(error = %e, "batch response not sent");
            }
        })
        .detach();
        Ok(())
    }

    /// Sends one operation to each partition's owner: one batch per owner shard, the leftovers
    /// one by one.
    pub(super) async fn forward_many(
        self: Rc<Self>,
        service: ServiceId,
        op: OpId,
        parts: Vec<(PartitionId, Bytes)>,
    ) -> Vec<PartAnswer> {
        let mut groups: AHashMap<SocketAddr, Vec<(PartitionId, u64, Bytes)>> = AHashMap::new();
        let mut single = Vec::new();
        {
            let view = self.view.borrow();
            for (p, payload) in parts {
                let call = self.next_call();
                let owner = view
                    .table
                    .owner(p)
                    .and_then(|id| view.members.iter().find(|m| m.id == id));
                match owner {
                    Some(m) if m.id != self.net.id => groups
                        .entry(m.shard_addr(m.shard_of(p)))
                        .or_default()
                        .push((p, call, payload)),
                    _ => single.push((p, call, payload)),
                }
            }
        }
        let mut answers = Vec::new();
        let mut sent_before = Vec::new();
        // Every batch in flight at once (tasks on this shard), then every single.
        let batches: Vec<_> = groups
            .into_iter()
            .map(|(addr, group)| {
                glommio::spawn_local(self.clone().send_batch(addr, service, op, group))
            })
            .collect();
        for batch in batches {
            let (done, retry) = batch.await;
            let mut stats = self.batches.get();
            stats.batches += 1;
            stats.parts += (done.len() + retry.len()) as u64;
            stats.retried += retry.len() as u64;
            self.batches.set(stats);
            answers.extend(done);
            sent_before.extend(retry);
        }
        // The batches' leftovers were sent once: their owners look for a remembered answer.
        let unsent = single.into_iter().map(|part| (part, false));
        let singles: Vec<_> = unsent
            .chain(sent_before.into_iter().map(|part| (part, true)))
            .map(|((p, call, payload), sent)| {
                let answer = self
                    .clone()
                    .forward_call(p, service, op, payload, call, sent);
                glommio::spawn_local(async move { (p, answer.await) })
            })
            .collect();
        for s in singles {
            answers.push(s.await);
        }
        answers
    }

    /// One batch to the shard at `addr`: the parts answered, and those to send one by one.
    async fn send_batch(
        self: Rc<Self>,
        addr: SocketAddr,
        service: ServiceId,
        op: OpId,
        group: Vec<(PartitionId, u64, Bytes)>,
    ) -> (Vec<PartAnswer>, Vec<(PartitionId, u64, Bytes)>) {
        let req = ManyRequest {
            service: service.0,
            op: op.0,
            parts: group
                .iter()
                .map(|(p, call, payload)| (p.0, *call, payload.to_vec()))
                .collect(),
        };
        let Ok(body) = payload::encode(&req) else {
            return (Vec::new(), group);
        };
        let header = Header {
            partition: group.first().map_or(0, |g| g.0 .0),
            correlation: self.next_call(),
            table_version: self.view.borrow().table.version,
            service: MANY_SERVICE,
            op: MANY,
            caller: self.net.id.0,
            ..Header::new(FrameKind::Request)
        };
        let response = match self.connection(addr).await {
            Ok(c) => call_within(&c, header, &body, self.net.invocation_timeout).await,
            Err(_) => return (Vec::new(), group),
        };
        let body = match response {
            Some(Ok((h, body))) if h.status == Status::Ok as u16 => body,
            // Lost, refused or not answered in time: each part again on its own, under its call
            // number (answered from memory where it ran).
            _ => return (Vec::new(), group),
        };
        let Ok(res) = payload::access::<ManyResponse>(&body) else {
            tracing::warn!(%addr, "malformed batch response");
            return (Vec::new(), group);
        };
        let mut done = Vec::new();
        let mut retry = Vec::new();
        let mut by_partition: AHashMap<u32, (bool, &[u8])> = AHashMap::new();
        for part in res.parts.iter() {
            by_partition.insert(part.0.to_native(), (part.1, part.2.as_slice()));
        }
        for (p, call, payload) in group {
            match by_partition.get(&p.0) {
                Some((true, bytes)) => done.push((p, Ok(crate::conn::copy(bytes)))),
                Some((false, bytes)) => {
                    let e = payload::decode::<WireError>(&crate::conn::copy(bytes))
                        .map(|w| w.to_op_error())
                        .unwrap_or_else(|e| OpError::Failed(format!("malformed error: {e}")));
                    match e {
                        OpError::WrongTarget { .. }
                        | OpError::Migrating { .. }
                        | OpError::Overloaded { .. } => retry.push((p, call, payload)),
                        other => done.push((p, Err(other))),
                    }
                }
                None => retry.push((p, call, payload)),
            }
        }
        (done, retry)
    }
}
