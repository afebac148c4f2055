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

use std::task::{Poll, Waker};

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

/// An answer's bytes as [`Pending::poll_with`] hands them over.
pub(crate) enum Held<'a> {
    /// In an allocation of its own (a large answer, or one that came alone).
    Own(Bytes),
    /// In the caller's slot.
    Slot(&'a [u8]),
}

impl Held<'_> {
    /// The bytes in an allocation of their own.
    pub fn into_bytes(self) -> Bytes {
        match self {
            Held::Own(bytes) => bytes,
            Held::Slot(bytes) => crate::payload::copy(bytes),
        }
    }
}

impl std::ops::Deref for Held<'_> {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match self {
            Held::Own(bytes) => bytes,
            Held::Slot(bytes) => bytes,
        }
    }
}

/// A shard's callers waiting on other shards, by correlation id: a slab of slots, the id being a
/// slot's index and its generation (so an answer to a call its caller gave up on, whose slot was
/// reused since, finds a newer generation there and is dropped).
#[derive(Default)]
pub(crate) struct Pending {
    slots: Vec<Slot>,
    free: Vec<u32>,
}

struct Slot {
    generation: u32,
    state: State,
    /// The waker of the task that last waited here, kept when the slot is freed: a task's next
    /// call usually takes the slot it just freed (the free list is last in, first out), and then
    /// needs no clone of its waker (glommio counts a waker's references atomically). A task
    /// that has ended stays allocated until its slot's next caller or the shard's end.
    waker: Option<Waker>,
    /// A small answer's bytes ([`State::Held`]), copied in from its message and read in place
    /// by the caller: kept with the slot, so a slot's next answers reuse it.
    held: Bytes,
}

enum State {
    Free,
    /// The caller; `true` once it has polled (its waker is then the slot's).
    Waiting(bool),
    /// The answer (`None`: there will be none), until the caller polls.
    Done(Option<Answer>),
    /// The answer, in the slot's `held` bytes, until the caller polls.
    Held,
}

/// Answers up to this size are copied into their slot's own buffer ([`Pending::complete_with`]);
/// a larger one gets an allocation of its own, so no slot keeps a large buffer.
const HELD: usize = 256;

impl Slot {
    /// Wakes the task waiting here, if it has polled; `true` if it did.
    fn wake(&self, polled: bool) -> bool {
        match self.waker.as_ref().filter(|_| polled) {
            Some(waker) => {
                waker.wake_by_ref();
                true
            }
            None => false,
        }
    }
}

impl Pending {
    /// Registers a caller: the correlation id to send with its call and to await with
    /// [`Pending::poll_with`].
    pub fn register(&mut self) -> u64 {
        let index = match self.free.pop() {
            Some(index) => index,
            None => {
                self.slots.push(Slot {
                    generation: 0,
                    state: State::Free,
                    waker: None,
                    held: Bytes::new(),
                });
                // A shard has far fewer than 2^32 calls in flight.
                (self.slots.len() - 1) as u32
            }
        };
        let slot = &mut self.slots[index as usize];
        slot.state = State::Waiting(false);
        u64::from(slot.generation) << 32 | u64::from(index)
    }

    fn slot(&mut self, correlation: u64) -> Option<(u32, &mut Slot)> {
        let index = correlation as u32;
        let generation = (correlation >> 32) as u32;
        self.slots
            .get_mut(index as usize)
            .filter(|s| s.generation == generation && !matches!(s.state, State::Free))
            .map(|s| (index, s))
    }

    fn release(&mut self, index: u32) {
        if let Some(slot) = self.slots.get_mut(index as usize) {
            slot.generation = slot.generation.wrapping_add(1);
            slot.state = State::Free;
            self.free.push(index);
        }
    }

    /// Drops a registration whose call was never sent, or whose caller gave up.
    pub fn forget(&mut self, correlation: u64) {
        if let Some((index, slot)) = self.slot(correlation) {
            slot.waker = None;
            self.release(index);
        }
    }

    /// Stores the answer to call `correlation` (`None`: there will be none, the caller sees the
    /// member as stopped) and wakes the caller if it has polled; `true` if it did. The wake only
    /// schedules the caller's task: its poll comes after this table is released.
    pub fn complete(&mut self, correlation: u64, answer: Option<Answer>) -> bool {
        self.answer(correlation, |slot| slot.state = State::Done(answer))
    }

    /// Stores the answer to call `correlation`, read from a message of answers: a small one is
    /// copied into the slot's own buffer (no allocation once the slot has had an answer as
    /// large), a larger one into an allocation of its own. Wakes the caller as
    /// [`Pending::complete`] does.
    pub fn complete_with(&mut self, correlation: u64, answer: &[u8]) -> bool {
        self.answer(correlation, |slot| {
            slot.state = if answer.len() > HELD {
                State::Done(Some(Ok(crate::payload::copy(answer))))
            } else {
                slot.held.clear();
                slot.held.extend_from_slice(answer);
                State::Held
            };
        })
    }

    /// Has `store` put the answer into call `correlation`'s slot if it still waits for one, and
    /// wakes the caller if it has polled; `true` if it did. Answered twice: the first answer
    /// stands.
    fn answer(&mut self, correlation: u64, store: impl FnOnce(&mut Slot)) -> bool {
        let Some((_, slot)) = self.slot(correlation) else {
            return false;
        };
        let State::Waiting(polled) = slot.state else {
            return false;
        };
        store(slot);
        slot.wake(polled)
    }

    /// The answer to call `correlation` once there is one (`None`: there will be none), else
    /// remembers `waker`.
    #[cfg(test)]
    pub fn poll(&mut self, correlation: u64, waker: &Waker) -> Poll<Option<Answer>> {
        self.poll_with(correlation, waker, |answer| answer.map(Held::into_bytes))
    }

    /// The answer to call `correlation` once there is one, handed to `read` where it is (in the
    /// slot, or in an allocation of its own), and the slot freed; `None` if there will be none.
    /// Until then remembers `waker`.
    pub fn poll_with<T>(
        &mut self,
        correlation: u64,
        waker: &Waker,
        read: impl FnOnce(Result<Held<'_>, OpError>) -> T,
    ) -> Poll<Option<T>> {
        let Some((index, slot)) = self.slot(correlation) else {
            return Poll::Ready(None);
        };
        let read = match &mut slot.state {
            State::Waiting(polled) => {
                if !slot.waker.as_ref().is_some_and(|w| w.will_wake(waker)) {
                    slot.waker = Some(waker.clone());
                }
                *polled = true;
                return Poll::Pending;
            }
            State::Done(answer) => answer.take().map(|answer| read(answer.map(Held::Own))),
            State::Held => Some(read(Ok(Held::Slot(&slot.held)))),
            State::Free => None,
        };
        self.release(index);
        Poll::Ready(read)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A registered caller and the reply its call carries (answered off any shard, so straight
    /// into the caller's completion queue).
    fn call(pending: &mut Pending, link: &Arc<ShardLink>) -> (Reply, u64) {
        let correlation = pending.register();
        let reply = ShardReply::new(link.clone(), ShardId(0), MemberToken(0), correlation);
        (Reply::Shard(reply), correlation)
    }

    fn poll(pending: &mut Pending, correlation: u64) -> Poll<Option<Answer>> {
        pending.poll(correlation, Waker::noop())
    }

    #[test]
    fn an_answer_reaches_the_caller_through_its_shards_queue() {
        let (link, queues) = ShardLink::new(4).unwrap();
        let pending = std::cell::RefCell::new(Pending::default());
        let (reply, correlation) = call(&mut pending.borrow_mut(), &link);
        assert!(poll(&mut pending.borrow_mut(), correlation).is_pending());
        reply.send(Ok(Bytes::new()));
        queues.completions.try_recv().unwrap().deliver(&pending);
        let answer = poll(&mut pending.borrow_mut(), correlation);
        assert!(matches!(answer, Poll::Ready(Some(Ok(_)))));
        assert_eq!(pending.borrow().free, vec![0], "the slot is free again");
    }

    #[test]
    fn a_reply_dropped_unanswered_tells_the_caller() {
        let (link, queues) = ShardLink::new(4).unwrap();
        let pending = std::cell::RefCell::new(Pending::default());
        let (reply, correlation) = call(&mut pending.borrow_mut(), &link);
        drop(reply);
        queues.completions.try_recv().unwrap().deliver(&pending);
        assert!(
            matches!(
                poll(&mut pending.borrow_mut(), correlation),
                Poll::Ready(None)
            ),
            "the caller must not wait forever"
        );
    }

    #[test]
    fn an_answer_for_a_caller_that_gave_up_does_not_reach_the_slots_next_caller() {
        let mut pending = Pending::default();
        let first = pending.register();
        pending.forget(first);
        let second = pending.register();
        assert_ne!(first, second, "same slot, next generation");
        assert!(!pending.complete(first, Some(Ok(Bytes::new()))));
        assert!(poll(&mut pending, second).is_pending());
        assert!(pending.complete(second, None), "it polled: its waker");
        assert!(matches!(poll(&mut pending, second), Poll::Ready(None)));
    }

    #[test]
    fn the_first_answer_stands_and_wakes_the_caller_once() {
        let mut pending = Pending::default();
        let correlation = pending.register();
        assert!(poll(&mut pending, correlation).is_pending());
        assert!(pending.complete(correlation, Some(Ok(Bytes::new()))));
        assert!(!pending.complete(correlation, None));
        assert!(matches!(
            poll(&mut pending, correlation),
            Poll::Ready(Some(Ok(_)))
        ));
    }

    #[test]
    fn small_answers_are_read_in_their_slot_whose_buffer_the_next_call_reuses() {
        let mut pending = Pending::default();
        let read = |pending: &mut Pending, c| {
            pending.poll_with(c, Waker::noop(), |answer| {
                let bytes = answer.unwrap();
                (
                    matches!(bytes, Held::Slot(_)),
                    bytes.to_vec(),
                    bytes.as_ptr(),
                )
            })
        };
        let first = pending.register();
        assert!(read(&mut pending, first).is_pending());
        assert!(pending.complete_with(first, b"first"));
        assert!(
            !pending.complete_with(first, b"again"),
            "the first answer stands"
        );
        let Poll::Ready(Some((true, bytes, at))) = read(&mut pending, first) else {
            panic!("the answer, in the slot");
        };
        assert_eq!(bytes, b"first");
        // The same slot, its buffer kept: the next answer lands where the last one did.
        let second = pending.register();
        assert_eq!(second as u32, first as u32);
        assert!(
            !pending.complete_with(second, b"second"),
            "no poll yet: no waker"
        );
        let Poll::Ready(Some((true, bytes, again))) = read(&mut pending, second) else {
            panic!("the answer, in the slot");
        };
        assert_eq!((bytes.as_slice(), again), (&b"second"[..], at));
        // A large answer gets an allocation of its own: no slot keeps a large buffer.
        let third = pending.register();
        let large = vec![7u8; HELD + 1];
        let _ = pending.complete_with(third, &large);
        let Poll::Ready(Some((false, bytes, _))) = read(&mut pending, third) else {
            panic!("the answer, in its own allocation");
        };
        assert_eq!(bytes, large);
        assert!(pending.slots.iter().all(|s| s.held.capacity() <= HELD));
    }

    #[test]
    fn an_error_or_no_answer_reaches_a_caller_that_reads_in_place() {
        let mut pending = Pending::default();
        let failed = pending.register();
        let error = OpError::Unavailable {
            partition: crate::partition::PartitionId(3),
            reason: "gone".into(),
        };
        let _ = pending.complete(failed, Some(Err(error.clone())));
        let answer = pending.poll_with(failed, Waker::noop(), |a| a.map(|b| b.to_vec()));
        assert!(matches!(answer, Poll::Ready(Some(Err(e))) if e == error));
        let none = pending.register();
        let _ = pending.complete(none, None);
        let answer = pending.poll_with(none, Waker::noop(), |a| a.map(|b| b.to_vec()));
        assert!(matches!(answer, Poll::Ready(None)));
        assert_eq!(pending.free.len(), 1, "both slots freed (one reused)");
    }

    /// A waker that counts its wakes; its `Arc`'s count tells how many clones are alive.
    struct Wakes(std::sync::atomic::AtomicUsize);

    impl std::task::Wake for Wakes {
        fn wake(self: Arc<Self>) {
            self.wake_by_ref();
        }

        fn wake_by_ref(self: &Arc<Self>) {
            self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }

    #[test]
    fn a_task_calling_again_from_the_slot_it_freed_needs_no_new_clone_of_its_waker() {
        let mut pending = Pending::default();
        let wakes = Arc::new(Wakes(0.into()));
        let waker = Waker::from(wakes.clone());
        let woken = || wakes.0.load(std::sync::atomic::Ordering::Relaxed);
        let first = pending.register();
        assert!(pending.poll(first, &waker).is_pending());
        assert_eq!(Arc::strong_count(&wakes), 3, "the slot holds a clone");
        assert!(pending.complete_with(first, b"one"));
        assert_eq!(woken(), 1);
        assert!(pending.poll(first, &waker).is_ready());
        // The next call takes the slot just freed, and its waker is the one kept there.
        let second = pending.register();
        assert_eq!(second as u32, first as u32);
        assert!(pending.poll(second, &waker).is_pending());
        assert_eq!(Arc::strong_count(&wakes), 3, "no second clone");
        assert!(pending.complete(second, Some(Ok(Bytes::new()))));
        assert_eq!(woken(), 2, "woken once per answer");
        assert!(pending.poll(second, &waker).is_ready());
        // Another task in that slot: its waker replaces the kept one, which is dropped.
        let third = pending.register();
        assert!(pending.poll(third, Waker::noop()).is_pending());
        assert_eq!(Arc::strong_count(&wakes), 2);
        // A caller that gives up leaves no waker behind.
        let fourth = pending.register();
        let other = Arc::new(Wakes(0.into()));
        assert!(pending
            .poll(fourth, &Waker::from(other.clone()))
            .is_pending());
        pending.forget(fourth);
        assert_eq!(Arc::strong_count(&other), 1);
    }
}
