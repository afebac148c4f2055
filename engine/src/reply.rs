//! Getting an answer back to whoever invoked: a thread outside the shards, or a task on a shard.
//!
//! Owns: [`Reply`] (where a shard sends an operation's answer), [`Pending`] (a shard's table of
//! its own callers waiting on other shards) and [`Completion`] (an answer travelling back to the
//! caller's shard). A caller outside the shards gets a oneshot, woken across threads. A caller on
//! a shard gets its answer as a message into its own shard's completion queue, which that shard's
//! loop polls every scheduling round and completes with a same-thread wake: glommio only notices
//! cross-thread wakes of a busy executor on its preempt tick, which made every cross-shard call
//! wait for one (measured: ~100 µs at 16 callers per shard).

use std::sync::Arc;

use ahash::AHashMap;

use crate::payload::Bytes;
use crate::shard::ShardLink;
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

/// An answer on its way back to the caller's shard.
pub(crate) struct Completion {
    correlation: u64,
    /// `None` when the operation was dropped unanswered (its shard stopped).
    answer: Option<Answer>,
}

/// The route back to a caller on a shard. Always delivers exactly once: dropped unanswered (the
/// message died in a stopped shard's queue), it tells the caller so instead of leaving it waiting.
pub(crate) struct ShardReply {
    to: Arc<ShardLink>,
    correlation: u64,
    delivered: bool,
}

impl ShardReply {
    fn deliver(&mut self, answer: Option<Answer>) {
        if !self.delivered {
            self.delivered = true;
            // The completion queue is unbounded: it holds at most one answer per call its shard
            // has in flight. A caller shard that stopped does not read it, which is fine.
            self.to.complete(Completion {
                correlation: self.correlation,
                answer,
            });
        }
    }
}

impl Drop for ShardReply {
    fn drop(&mut self) {
        self.deliver(None);
    }
}

/// A shard's callers waiting on other shards, by correlation id.
pub(crate) struct Pending {
    next: u64,
    waiting: AHashMap<u64, oneshot::Sender<Answer>>,
    /// This shard's own queues: answers to its callers come back through them.
    own: Arc<ShardLink>,
}

impl Pending {
    /// A table whose answers arrive through `own`, the shard's own queues.
    pub fn new(own: Arc<ShardLink>) -> Self {
        Self {
            next: 0,
            waiting: AHashMap::new(),
            own,
        }
    }

    /// Registers a caller: the reply to send with its request, and what it awaits.
    pub fn register(&mut self) -> (Reply, oneshot::Receiver<Answer>) {
        let (tx, rx) = oneshot::channel();
        let correlation = self.next;
        self.next = self.next.wrapping_add(1);
        self.waiting.insert(correlation, tx);
        let reply = ShardReply {
            to: self.own.clone(),
            correlation,
            delivered: false,
        };
        (Reply::Shard(reply), rx)
    }

    /// Wakes the caller a completion belongs to (same thread). An answer-less completion drops
    /// the caller's sender, so it sees the member as stopped.
    pub fn complete(&mut self, completion: Completion) {
        let Some(tx) = self.waiting.remove(&completion.correlation) else {
            return;
        };
        if let Some(answer) = completion.answer {
            let _ = tx.send(answer);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_reaches_the_caller_through_its_shards_queue() {
        let (link, queues) = ShardLink::new(4).unwrap();
        let rx = queues.completions;
        let mut pending = Pending::new(link);
        let (reply, answer) = pending.register();
        reply.send(Ok(Bytes::new()));
        pending.complete(rx.try_recv().unwrap());
        assert!(matches!(answer.try_recv(), Ok(Ok(_))));
    }

    #[test]
    fn a_reply_dropped_unanswered_tells_the_caller() {
        let (link, queues) = ShardLink::new(4).unwrap();
        let rx = queues.completions;
        let mut pending = Pending::new(link);
        let (reply, answer) = pending.register();
        drop(reply);
        pending.complete(rx.try_recv().unwrap());
        assert!(
            answer.try_recv().is_err(),
            "the caller must not wait forever"
        );
        assert!(pending.waiting.is_empty());
    }
}
