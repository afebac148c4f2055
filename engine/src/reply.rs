//! Getting an answer back to whoever invoked: a thread outside the shards, or a task on a shard.
//!
//! Owns: [`Reply`] (where a shard sends an operation's answer), [`Pending`] (a shard's table of
//! its own callers waiting on other shards); answers travel back to a caller's shard as
//! [`Completions`]. A caller outside the shards gets a oneshot, woken across threads. A caller on
//! a shard gets its answer as a message into its own shard's completion queue, which that shard's
//! loop polls every scheduling round and completes with a same-thread wake: glommio only notices
//! cross-thread wakes of a busy executor on its preempt tick, which made every cross-shard call
//! wait for one (measured: ~100 µs at 16 callers per shard).

use std::sync::Arc;

use ahash::AHashMap;

use crate::outbox::Completions;
use crate::partition::ShardId;
use crate::payload::Bytes;
use crate::shard::{MemberToken, ShardLink};
use crate::spi::OpError;

/// An operation's answer: the archived response, or why there is none.
pub(crate) type Answer = Result<Bytes, OpError>;

/// Where a shard sends the answer of an operation.
pub(crate) enum Reply {
    /// A caller outside the shards, waiting on a oneshot.
    Thread(oneshot::Sender<Answer>),
    /// A caller on a shard, waiting for its shard to complete it.
    Shard(ShardReply),
}

impl Reply {
    /// A reply to a caller outside the shards, and what it awaits.
    pub fn thread() -> (Reply, oneshot::Receiver<Answer>) {
        let (tx, rx) = oneshot::channel();
        (Reply::Thread(tx), rx)
    }

    /// Delivers the answer. A caller that has gone away is not an error.
    pub fn send(self, answer: Answer) {
        match self {
            Reply::Thread(tx) => {
                let _ = tx.send(answer);
            }
            Reply::Shard(mut reply) => reply.deliver(Some(answer)),
        }
    }
}

/// The route back to a caller on a shard. Always delivers exactly once: dropped unanswered (the
/// message died in a stopped shard's queue), it tells the caller so instead of leaving it waiting.
pub(crate) struct ShardReply {
    to: Arc<ShardLink>,
    /// The caller's shard and member: delivered on another shard of that member, the answer
    /// joins that shard's outbox and goes back with the round's other answers.
    shard: ShardId,
    token: MemberToken,
    correlation: u64,
    delivered: bool,
}

impl ShardReply {
    /// The route to call `correlation` of shard `shard` (of member `token`), whose link is `to`.
    pub fn new(to: Arc<ShardLink>, shard: ShardId, token: MemberToken, correlation: u64) -> Self {
        Self {
            to,
            shard,
            token,
            correlation,
            delivered: false,
        }
    }

    fn deliver(&mut self, answer: Option<Answer>) {
        if !self.delivered {
            self.delivered = true;
            // The completion queue is unbounded: it holds at most one answer per call its shard
            // has in flight. A caller shard that stopped does not read it, which is fine.
            if let Err(answer) =
                crate::shard::complete_from_here(self.token, self.shard, self.correlation, answer)
            {
                self.to.complete(Completions::one(self.correlation, answer));
            }
        }
    }
}

impl Drop for ShardReply {
    fn drop(&mut self) {
        self.deliver(None);
    }
}

/// A shard's callers waiting on other shards, by correlation id.
#[derive(Default)]
pub(crate) struct Pending {
    next: u64,
    waiting: AHashMap<u64, oneshot::Sender<Answer>>,
}

impl Pending {
    /// Registers a caller: the correlation id to send with its call, and what it awaits.
    pub fn register(&mut self) -> (u64, oneshot::Receiver<Answer>) {
        let (tx, rx) = oneshot::channel();
        let correlation = self.next;
        self.next = self.next.wrapping_add(1);
        self.waiting.insert(correlation, tx);
        (correlation, rx)
    }

    /// Drops a registration whose call was never sent.
    pub fn forget(&mut self, correlation: u64) {
        self.waiting.remove(&correlation);
    }

    /// Wakes the caller of call `correlation` (same thread). No answer drops the caller's
    /// sender, so it sees the member as stopped.
    pub fn complete(&mut self, correlation: u64, answer: Option<Answer>) {
        let Some(tx) = self.waiting.remove(&correlation) else {
            return;
        };
        if let Some(answer) = answer {
            let _ = tx.send(answer);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A registered caller and the reply its call carries (answered off any shard, so straight
    /// into the caller's completion queue).
    fn call(pending: &mut Pending, link: &Arc<ShardLink>) -> (Reply, oneshot::Receiver<Answer>) {
        let (correlation, answer) = pending.register();
        let reply = ShardReply::new(link.clone(), ShardId(0), MemberToken(0), correlation);
        (Reply::Shard(reply), answer)
    }

    fn complete(pending: &mut Pending, rx: &flume::Receiver<Completions>) {
        rx.try_recv().unwrap().deliver(pending);
    }

    #[test]
    fn an_answer_reaches_the_caller_through_its_shards_queue() {
        let (link, queues) = ShardLink::new(4).unwrap();
        let mut pending = Pending::default();
        let (reply, answer) = call(&mut pending, &link);
        reply.send(Ok(Bytes::new()));
        complete(&mut pending, &queues.completions);
        assert!(matches!(answer.try_recv(), Ok(Ok(_))));
    }

    #[test]
    fn a_reply_dropped_unanswered_tells_the_caller() {
        let (link, queues) = ShardLink::new(4).unwrap();
        let mut pending = Pending::default();
        let (reply, answer) = call(&mut pending, &link);
        drop(reply);
        complete(&mut pending, &queues.completions);
        assert!(
            answer.try_recv().is_err(),
            "the caller must not wait forever"
        );
        assert!(pending.waiting.is_empty());
    }
}
