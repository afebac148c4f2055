//! A shard's cross-shard traffic, gathered per scheduling round and packed.
//!
//! Owns: [`Outbox`] (the calls this shard's tasks make to other shards of its member, and the
//! answers it owes their callers, one list per destination shard), [`CallBatch`] (a round's calls
//! to one shard, sent as one message) and [`Completions`] (a round's answers to one shard).
//!
//! Why: a call that crossed cores one message at a time took a lock on the owner's inbox, a
//! doorbell check and an answer message back, and its request and response were allocations
//! freed on the other core (the allocator's cross-thread free list, a cache miss per block when
//! its owner collects them). While the shard's loop runs rounds it sends everything a round
//! queued for one shard as one message, the requests' bytes packed in one buffer, and the answers
//! it owes one shard likewise; while its loop sleeps (or before it runs), a push is sent at once.
//! A batch the owner's inbox cannot take stays queued and is offered again the next round, so a
//! full inbox still holds callers back (each waits for its answer) without blocking the shard.
//! A message's buffers, emptied, go back to its sender with the next messages the other way, of
//! either kind (a message carries at most one buffer of each kind back, and each side keeps a
//! few per shard), so in steady state neither side allocates for them and neither frees the
//! other's. With one spare per kind and one slot per list, a third of the batches of calls and a
//! quarter of the messages of answers allocated their buffers (two-shard counter-inc, counted): a
//! shard sends more batches of calls than of answers, and batches overtake their buffers' way
//! back.

use std::cell::RefCell;
use std::sync::Arc;

use crate::partition::{PartitionId, ShardId};
use crate::payload::{copy, Bytes};
use crate::reply::{Answer, Pending, Reply, ShardReply};
use crate::shard::{MemberToken, ShardLink, ShardMsg};
use crate::spi::{OpError, OpId, ServiceId};

/// Packed byte strings start at multiples of this, so each reads in place as an archive (rkyv's
/// buffers are aligned to 16).
const ALIGN: usize = 16;

/// Byte strings larger than this keep their own allocation instead of being copied into a pack.
const PACK_LIMIT: usize = 4096;

/// A message's buffers go back to its sender for reuse (with the next message the other way)
/// unless they grew past this.
const KEEP: usize = 256 << 10;

/// Byte strings in one aligned buffer, each at an [`ALIGN`] boundary.
#[derive(Default)]
struct Pack {
    bytes: Bytes,
}

/// Where a byte string of a [`Pack`] is.
enum Packed {
    At { start: usize, len: usize },
    Own(Bytes),
}

impl Pack {
    fn with_capacity(capacity: usize) -> Self {
        Self {
            bytes: Bytes::with_capacity(capacity),
        }
    }

    fn capacity(&self) -> usize {
        self.bytes.capacity()
    }

    fn clear(&mut self) {
        self.bytes.clear();
    }

    /// Packs an allocated byte string: a large one keeps its allocation.
    fn add_owned(&mut self, bytes: Bytes) -> Packed {
        match bytes.len() > PACK_LIMIT {
            true => Packed::Own(bytes),
            false => self.add(&bytes),
        }
    }

    /// Copies `bytes` in (a large one into an allocation of its own).
    fn add(&mut self, bytes: &[u8]) -> Packed {
        if bytes.len() > PACK_LIMIT {
            return Packed::Own(copy(bytes));
        }
        let start = self.bytes.len().next_multiple_of(ALIGN);
        self.bytes.resize(start, 0);
        self.bytes.extend_from_slice(bytes);
        Packed::At {
            start,
            len: bytes.len(),
        }
    }

    fn get<'a>(&'a self, at: &'a Packed) -> &'a [u8] {
        match at {
            Packed::At { start, len } => self.bytes.get(*start..start + len).unwrap_or(&[]),
            Packed::Own(bytes) => bytes,
        }
    }

    /// The byte string in an allocation of its own.
    fn take(&self, at: Packed) -> Bytes {
        match at {
            Packed::Own(bytes) => bytes,
            at => copy(self.get(&at)),
        }
    }
}

/// One operation for a partition of another shard, answered by correlation id.
struct Call {
    partition: PartitionId,
    service: ServiceId,
    op: OpId,
    payload: Packed,
    correlation: u64,
}

/// A call of a [`CallBatch`], its payload read in place from the batch.
pub(crate) struct CallRef<'a> {
    pub partition: PartitionId,
    pub service: ServiceId,
    pub op: OpId,
    pub payload: &'a [u8],
    pub correlation: u64,
}

/// Calls from one shard to another. Dropped with calls still in it (the owner stopped before it
/// ran them), it tells their callers there will be no answer.
pub(crate) struct CallBatch {
    /// The calling shard, and the way back to it.
    from: ShardId,
    back: Arc<ShardLink>,
    calls: Vec<Call>,
    payloads: Pack,
    /// Emptied buffers of the caller's earlier messages to the owner, given back.
    spares: Spares,
}

impl CallBatch {
    /// The calling shard.
    pub fn from(&self) -> ShardId {
        self.from
    }

    /// How many calls it holds.
    pub fn len(&self) -> usize {
        self.calls.len()
    }

    /// Runs `f` on each call in order; the batch then answers nothing on drop.
    pub fn run(&mut self, mut f: impl FnMut(&Self, CallRef<'_>)) {
        let mut calls = std::mem::take(&mut self.calls);
        for call in &calls {
            let call = CallRef {
                partition: call.partition,
                service: call.service,
                op: call.op,
                payload: self.payloads.get(&call.payload),
                correlation: call.correlation,
            };
            f(self, call);
        }
        // Emptied, for the outbox to give back.
        calls.clear();
        self.calls = calls;
    }

    /// A reply for a call of this batch answered later (after its backups acked, or by the
    /// partition's owner elsewhere).
    pub fn reply(&self, token: MemberToken, correlation: u64) -> Reply {
        Reply::Shard(ShardReply::new(
            self.back.clone(),
            self.from,
            token,
            correlation,
        ))
    }

    /// Sends answers straight back to the calling shard.
    pub fn answer_now(&self, completions: Completions) {
        self.back.complete(completions);
    }
}

impl Drop for CallBatch {
    fn drop(&mut self) {
        if !self.calls.is_empty() {
            let mut unanswered = Completions::default();
            for call in &self.calls {
                unanswered.push(call.correlation, None);
            }
            self.back.complete(unanswered);
        }
    }
}

/// Answers on their way back to the caller's shard, their bytes packed in one buffer.
#[derive(Default)]
pub(crate) struct Completions {
    /// By correlation id: the answer, or `None` if the call will get none (its shard stopped).
    items: Vec<(u64, Option<Result<Packed, OpError>>)>,
    answers: Pack,
    /// The answering shard, when it sent these from its outbox.
    from: Option<ShardId>,
    /// Emptied buffers of the caller's earlier messages to the answering shard, given back.
    spares: Spares,
}

impl Completions {
    fn with_capacity(items: usize, bytes: usize) -> Self {
        Self {
            items: Vec::with_capacity(items),
            answers: Pack::with_capacity(bytes),
            ..Self::default()
        }
    }

    /// Its buffers emptied for reuse, unless they grew too large to keep.
    fn emptied(self) -> Option<AnswerBuffers> {
        let Completions {
            mut items,
            mut answers,
            ..
        } = self;
        items.clear();
        answers.clear();
        (answers.capacity() <= KEEP).then_some(AnswerBuffers { items, answers })
    }

    /// One answer.
    pub fn one(correlation: u64, answer: Option<Answer>) -> Self {
        let mut one = Self::default();
        one.push_owned(correlation, answer);
        one
    }

    /// How many answers it holds.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Adds the answer to call `correlation`, copying its bytes.
    pub fn push(&mut self, correlation: u64, answer: Option<Result<&[u8], OpError>>) {
        let answer = answer.map(|a| a.map(|bytes| self.answers.add(bytes)));
        self.items.push((correlation, answer));
    }

    /// Adds an answer already in an allocation of its own (kept whole if large).
    pub fn push_owned(&mut self, correlation: u64, answer: Option<Answer>) {
        let answer = answer.map(|a| a.map(|bytes| self.answers.add_owned(bytes)));
        self.items.push((correlation, answer));
    }

    /// Hands each caller its answer and wakes it (on the callers' shard; a wake only schedules
    /// the caller's task, whose poll comes after the table is released). Gives the emptied
    /// message back, for [`Outbox::recycle_completions`].
    pub fn deliver(mut self, pending: &RefCell<Pending>) -> Self {
        let mut pending = pending.borrow_mut();
        for (correlation, answer) in self.items.drain(..) {
            match answer {
                Some(Ok(at @ Packed::At { .. })) => {
                    pending.complete_with(correlation, self.answers.get(&at))
                }
                answer => {
                    let answer = answer.map(|a| a.map(|packed| self.answers.take(packed)));
                    pending.complete(correlation, answer)
                }
            };
        }
        self
    }
}

/// Emptied buffers riding back to the shard that sent them, with any message to it: at most one
/// of each kind, so a shard that sends more batches of calls than of answers (or the other way)
/// still gets each back.
#[derive(Default)]
struct Spares {
    calls: Option<Queued>,
    answers: Option<AnswerBuffers>,
}

/// Per other shard: buffers it gave back, for the next messages to it, and buffers of its
/// messages, to give back with the next messages to it. Each list is kept short ([`POOL`]);
/// in steady state no message allocates and no buffer is freed on the other core.
#[derive(Default)]
struct Pool {
    free_calls: Vec<Queued>,
    free_answers: Vec<AnswerBuffers>,
    give_calls: Vec<Queued>,
    give_answers: Vec<AnswerBuffers>,
}

/// Buffers a [`Pool`] keeps per list: messages of one kind in flight to one shard at once.
const POOL: usize = 4;

/// Pushes `item` unless `list` is full (then it is dropped).
fn keep<T>(list: &mut Vec<T>, item: Option<T>) {
    if let Some(item) = item.filter(|_| list.len() < POOL) {
        list.push(item);
    }
}

impl Pool {
    /// One buffer of each kind to give back, for a message to this shard.
    fn spares(&mut self) -> Spares {
        Spares {
            calls: self.give_calls.pop(),
            answers: self.give_answers.pop(),
        }
    }

    /// Spares a message from this shard brought back.
    fn take_back(&mut self, spares: &mut Spares) {
        keep(&mut self.free_calls, spares.calls.take());
        keep(&mut self.free_answers, spares.answers.take());
    }

    /// Spares of a message that was not sent, to give back with the next.
    fn unsent(&mut self, spares: &mut Spares) {
        keep(&mut self.give_calls, spares.calls.take());
        keep(&mut self.give_answers, spares.answers.take());
    }
}

/// The buffers of a [`Completions`], emptied.
struct AnswerBuffers {
    items: Vec<(u64, Option<Result<Packed, OpError>>)>,
    answers: Pack,
}

/// Calls queued for one shard.
#[derive(Default)]
struct Queued {
    calls: Vec<Call>,
    payloads: Pack,
}

impl Queued {
    /// Emptied for reuse, unless its buffers grew too large to keep.
    fn emptied(mut self) -> Option<Self> {
        self.calls.clear();
        self.payloads.clear();
        (self.payloads.capacity() <= KEEP).then_some(self)
    }
}

/// What one shard owes the other shards of its member: calls to send and answers to return.
pub(crate) struct Outbox {
    token: MemberToken,
    me: ShardId,
    /// Every shard's link, by shard index (this one's included).
    links: Vec<Arc<ShardLink>>,
    calls: Vec<Queued>,
    completions: Vec<Completions>,
    /// Per shard, the buffers going back and forth with it.
    pools: Vec<Pool>,
    /// Calls and answers queued and not sent yet.
    queued: usize,
    /// The shard's loop is running rounds and flushes at each: pushes wait for it.
    batching: bool,
}

impl Outbox {
    /// The outbox of shard `me` of member `token`, whose shards' links are `links`.
    pub fn new(token: MemberToken, me: ShardId, links: Vec<Arc<ShardLink>>) -> Self {
        let n = links.len();
        Self {
            token,
            me,
            links,
            calls: (0..n).map(|_| Queued::default()).collect(),
            completions: (0..n).map(|_| Completions::default()).collect(),
            pools: (0..n).map(|_| Pool::default()).collect(),
            queued: 0,
            batching: false,
        }
    }

    /// The member this outbox belongs to.
    pub fn token(&self) -> MemberToken {
        self.token
    }

    /// Whether anything waits to be sent.
    pub fn is_empty(&self) -> bool {
        self.queued == 0
    }

    /// Queues call `correlation` to shard `to`; `Err` gives the payload back if there is no such
    /// shard.
    #[allow(clippy::too_many_arguments)]
    pub fn call(
        &mut self,
        to: ShardId,
        partition: PartitionId,
        service: ServiceId,
        op: OpId,
        payload: Bytes,
        correlation: u64,
    ) -> Result<(), Bytes> {
        let Some(queued) = self.calls.get_mut(to.0 as usize) else {
            return Err(payload);
        };
        let payload = queued.payloads.add_owned(payload);
        queued.calls.push(Call {
            partition,
            service,
            op,
            payload,
            correlation,
        });
        self.pushed();
        Ok(())
    }

    /// Queues the answer to call `correlation` of shard `to`, copying its bytes; `Err` gives it
    /// back if there is no such shard.
    pub fn complete<'a>(
        &mut self,
        to: ShardId,
        correlation: u64,
        answer: Option<Result<&'a [u8], OpError>>,
    ) -> Result<(), Option<Result<&'a [u8], OpError>>> {
        let Some(completions) = self.completions.get_mut(to.0 as usize) else {
            return Err(answer);
        };
        completions.push(correlation, answer);
        self.pushed();
        Ok(())
    }

    /// Queues an answer in an allocation of its own; `Err` gives it back if there is no such
    /// shard.
    pub fn complete_owned(
        &mut self,
        to: ShardId,
        correlation: u64,
        answer: Option<Answer>,
    ) -> Result<(), Option<Answer>> {
        let Some(completions) = self.completions.get_mut(to.0 as usize) else {
            return Err(answer);
        };
        completions.push_owned(correlation, answer);
        self.pushed();
        Ok(())
    }

    /// Keeps the buffers of a batch of calls from another shard, run and emptied, to give back
    /// with the next messages to it, and the buffers it gave back.
    pub fn recycle_batch(&mut self, batch: &mut CallBatch) {
        let Some(pool) = self.pools.get_mut(batch.from.0 as usize) else {
            return;
        };
        let queued = Queued {
            calls: std::mem::take(&mut batch.calls),
            payloads: std::mem::take(&mut batch.payloads),
        };
        keep(&mut pool.give_calls, queued.emptied());
        pool.take_back(&mut batch.spares);
    }

    /// Keeps the buffers of delivered answers from another shard to give back with the next
    /// messages to it, and the buffers it gave back.
    pub fn recycle_completions(&mut self, mut completions: Completions) {
        let Some(pool) = completions
            .from
            .and_then(|f| self.pools.get_mut(f.0 as usize))
        else {
            return;
        };
        pool.take_back(&mut completions.spares);
        keep(&mut pool.give_answers, completions.emptied());
    }

    fn pushed(&mut self) {
        self.queued += 1;
        if !self.batching {
            self.flush();
        }
    }

    /// Whether the shard's loop flushes each round (`true` while it runs rounds, `false` before
    /// it sleeps or stops: then everything queued is sent now, and later pushes at once).
    pub fn set_batching(&mut self, on: bool) {
        self.batching = on;
        if !on {
            self.flush();
        }
    }

    /// Sends everything queued: per shard one message of calls and one of answers. Calls a full
    /// inbox does not take stay queued for the next flush.
    pub fn flush(&mut self) {
        if self.queued == 0 {
            return;
        }
        let mut left = 0;
        for (index, link) in self.links.iter().enumerate() {
            let pool = &mut self.pools[index];
            let completions = &mut self.completions[index];
            if !completions.is_empty() {
                let next = match pool.free_answers.pop() {
                    Some(AnswerBuffers { items, answers }) => Completions {
                        items,
                        answers,
                        ..Completions::default()
                    },
                    None => Completions::with_capacity(
                        completions.items.capacity(),
                        completions.answers.capacity(),
                    ),
                };
                let mut out = std::mem::replace(completions, next);
                out.from = Some(self.me);
                out.spares = pool.spares();
                link.complete(out);
            }
            let queued = &mut self.calls[index];
            if queued.calls.is_empty() {
                continue;
            }
            let next = pool.free_calls.pop().unwrap_or_else(|| Queued {
                calls: Vec::with_capacity(queued.calls.capacity()),
                payloads: Pack::with_capacity(queued.payloads.capacity()),
            });
            let Queued { calls, payloads } = std::mem::replace(queued, next);
            let batch = CallBatch {
                from: self.me,
                back: self.links[self.me.0 as usize].clone(),
                calls,
                payloads,
                spares: pool.spares(),
            };
            match link.try_send(ShardMsg::Calls(batch)) {
                Ok(()) => {}
                Err(flume::TrySendError::Full(ShardMsg::Calls(mut batch))) => {
                    queued.calls = std::mem::take(&mut batch.calls);
                    queued.payloads = std::mem::take(&mut batch.payloads);
                    pool.unsent(&mut batch.spares);
                    left += queued.calls.len();
                }
                // A stopped shard: the batch's drop answers its calls as unanswered.
                Err(_) => {}
            }
        }
        self.queued = left;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shard::ShardQueues;

    fn bytes(b: &[u8]) -> Bytes {
        copy(b)
    }

    #[test]
    fn packed_strings_start_aligned_and_read_back() {
        let mut pack = Pack::default();
        let a = pack.add(b"abc");
        let b = pack.add(&[7; 40]);
        let big = pack.add(&[9; PACK_LIMIT + 1]);
        assert_eq!(pack.get(&a), b"abc");
        assert_eq!(pack.get(&b), &[7; 40]);
        assert!(matches!(b, Packed::At { start: 16, .. }));
        assert!(matches!(big, Packed::Own(_)));
        assert_eq!(pack.take(big).len(), PACK_LIMIT + 1);
        assert_eq!(pack.get(&b).as_ptr() as usize % ALIGN, 0);
    }

    fn answer(pending: &RefCell<Pending>, correlation: u64) -> Option<Answer> {
        match pending
            .borrow_mut()
            .poll(correlation, std::task::Waker::noop())
        {
            std::task::Poll::Ready(answer) => answer,
            std::task::Poll::Pending => panic!("no answer yet"),
        }
    }

    #[test]
    fn answers_reach_their_callers_in_one_message() {
        let (link, queues) = ShardLink::new(4).unwrap();
        let mut outbox = Outbox::new(MemberToken(1), ShardId(1), vec![link.clone(), link]);
        let pending = RefCell::new(Pending::default());
        let (a, b, c) = {
            let mut p = pending.borrow_mut();
            (p.register(), p.register(), p.register())
        };
        outbox.set_batching(true);
        assert!(outbox.complete(ShardId(0), a, Some(Ok(b"one"))).is_ok());
        let failed = OpError::failed("no");
        assert!(outbox
            .complete(ShardId(0), b, Some(Err(failed.clone())))
            .is_ok());
        assert!(outbox
            .complete_owned(ShardId(0), c, Some(Ok(bytes(&[3; PACK_LIMIT + 5]))))
            .is_ok());
        assert!(
            outbox.complete(ShardId(5), a, None).is_err(),
            "no such shard"
        );
        assert!(
            queues.completions.is_empty(),
            "held until the round's flush"
        );
        outbox.flush();
        let completions = queues.completions.try_recv().unwrap();
        assert_eq!(completions.len(), 3);
        assert!(queues.completions.is_empty());
        completions.deliver(&pending);
        assert_eq!(answer(&pending, a).unwrap().unwrap().as_slice(), b"one");
        assert_eq!(answer(&pending, b).unwrap().err(), Some(failed));
        assert_eq!(answer(&pending, c).unwrap().unwrap().len(), PACK_LIMIT + 5);
    }

    #[test]
    fn a_batch_a_full_inbox_refuses_waits_for_the_next_flush() {
        let (to, queues) = ShardLink::new(1).unwrap();
        let (me, _mine) = ShardLink::new(4).unwrap();
        let mut outbox = Outbox::new(MemberToken(1), ShardId(1), vec![to.clone(), me]);
        assert!(to.try_send(ShardMsg::Run(Box::new(|| {}))).is_ok());
        outbox.set_batching(true);
        let (p, s, o) = (PartitionId(0), ServiceId(1), OpId(2));
        assert!(outbox.call(ShardId(0), p, s, o, bytes(b"x"), 7).is_ok());
        assert!(outbox.call(ShardId(0), p, s, o, bytes(b"yz"), 8).is_ok());
        outbox.flush();
        assert!(!outbox.is_empty(), "the full inbox took nothing");
        assert!(matches!(queues.inbox.try_recv(), Ok(ShardMsg::Run(_))));
        outbox.flush();
        assert!(outbox.is_empty());
        let Ok(ShardMsg::Calls(mut batch)) = queues.inbox.try_recv() else {
            panic!("expected the calls");
        };
        let mut seen = Vec::new();
        batch.run(|_, call| seen.push((call.correlation, call.payload.to_vec())));
        assert_eq!(seen, vec![(7, b"x".to_vec()), (8, b"yz".to_vec())]);
    }

    #[test]
    fn calls_dropped_unrun_tell_their_callers() {
        let (to, queues) = ShardLink::new(4).unwrap();
        let (me, mine) = ShardLink::new(4).unwrap();
        let mut outbox = Outbox::new(MemberToken(1), ShardId(1), vec![to, me]);
        let pending = RefCell::new(Pending::default());
        let correlation = pending.borrow_mut().register();
        let payload = bytes(b"x");
        assert!(outbox
            .call(
                ShardId(0),
                PartitionId(0),
                ServiceId(1),
                OpId(2),
                payload,
                correlation
            )
            .is_ok());
        // Not batching: sent at once.
        drop(queues.inbox.try_recv());
        mine.completions.try_recv().unwrap().deliver(&pending);
        assert!(
            answer(&pending, correlation).is_none(),
            "the caller must not wait forever"
        );
    }

    /// Shards 0 and 1 of one member: their outboxes, and the queues each reads.
    fn two_shards() -> (Outbox, ShardQueues, Outbox, ShardQueues) {
        let (a_link, a_queues) = ShardLink::new(8).unwrap();
        let (b_link, b_queues) = ShardLink::new(8).unwrap();
        let links = vec![a_link, b_link];
        let a = Outbox::new(MemberToken(1), ShardId(0), links.clone());
        let b = Outbox::new(MemberToken(1), ShardId(1), links);
        (a, a_queues, b, b_queues)
    }

    #[test]
    fn a_round_trip_gives_each_side_its_buffers_back() {
        let (mut a, a_queues, mut b, b_queues) = two_shards();
        let pending = RefCell::new(Pending::default());
        let (p, s, o) = (PartitionId(1), ServiceId(1), OpId(2));
        for round in 0..4 {
            let correlation = pending.borrow_mut().register();
            a.call(ShardId(1), p, s, o, bytes(b"ping"), correlation)
                .unwrap();
            let Ok(ShardMsg::Calls(mut batch)) = b_queues.inbox.try_recv() else {
                panic!("expected the calls");
            };
            assert_eq!(
                batch.spares.answers.is_some(),
                round > 0,
                "answer buffers ride back"
            );
            batch.run(|_, call| {
                assert_eq!(call.payload, b"ping");
                assert!(b
                    .complete(ShardId(0), call.correlation, Some(Ok(b"pong")))
                    .is_ok());
            });
            b.recycle_batch(&mut batch);
            drop(batch);
            let completions = a_queues.completions.try_recv().unwrap();
            assert_eq!(
                completions.spares.calls.is_some(),
                round > 0,
                "call buffers ride back"
            );
            a.recycle_completions(completions.deliver(&pending));
            assert_eq!(
                answer(&pending, correlation).unwrap().unwrap().as_slice(),
                b"pong"
            );
            // Each side holds buffers for its next message, and the other's to give back.
            assert_eq!(a.pools[1].give_answers.len(), 1);
            assert_eq!(b.pools[0].give_calls.len(), 1);
            if round > 0 {
                assert_eq!(a.pools[1].free_calls.len(), 1);
                assert_eq!(b.pools[0].free_answers.len(), 1);
            }
        }
    }

    #[test]
    fn buffers_ride_back_on_messages_of_either_kind() {
        let (mut a, a_queues, mut b, b_queues) = two_shards();
        let (p, s, o) = (PartitionId(1), ServiceId(1), OpId(2));
        // Two rounds of A's calls reach B before B answers any.
        a.set_batching(true);
        for correlation in [1, 2] {
            a.call(ShardId(1), p, s, o, bytes(b"ping"), correlation)
                .unwrap();
            a.flush();
        }
        b.set_batching(true);
        for _ in 0..2 {
            let Ok(ShardMsg::Calls(mut batch)) = b_queues.inbox.try_recv() else {
                panic!("expected the calls");
            };
            batch.run(|_, call| {
                assert!(b
                    .complete(ShardId(0), call.correlation, Some(Ok(b"pong")))
                    .is_ok());
            });
            b.recycle_batch(&mut batch);
        }
        assert_eq!(b.pools[0].give_calls.len(), 2, "both of A's buffers kept");
        // B sends one message of answers and one of its own calls: each takes one back.
        b.call(ShardId(0), p, s, o, bytes(b"ping"), 9).unwrap();
        b.flush();
        assert!(b.pools[0].give_calls.is_empty());
        let completions = a_queues.completions.try_recv().unwrap();
        a.recycle_completions(completions);
        let Ok(ShardMsg::Calls(mut batch)) = a_queues.inbox.try_recv() else {
            panic!("expected B's calls");
        };
        batch.run(|_, _| {});
        a.recycle_batch(&mut batch);
        assert_eq!(
            a.pools[1].free_calls.len(),
            2,
            "A's next two batches to B allocate nothing"
        );
    }
}
