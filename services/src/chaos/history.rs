//! A history: what concurrent clients asked, when, and what they heard back.
//!
//! Every operation is one [`Event`] with its invocation and completion times (nanoseconds on
//! one clock, the recording process's). An operation whose outcome is [`Outcome::Unknown`]
//! (a timeout, a connection lost in flight) may have taken effect at any time after it was
//! invoked, or never; one that [`Outcome::Failed`] definitely did not.

use serde::{Deserialize, Serialize};

/// The object an operation acts on; objects are independent, so each is checked on its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Object {
    /// AtomicLong number `n` (starts at 0).
    Atomic(u32),
    /// Key number `n` of the map (starts absent).
    MapKey(u32),
    /// Lock number `n` (starts free, fencing token 0).
    Lock(u32),
}

/// What was asked.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Call {
    /// Atomic: add `delta`, answer the new value ([`Ret::Value`]).
    Add {
        /// The amount added.
        delta: i64,
    },
    /// Atomic: the value ([`Ret::Value`]). Map key: the value ([`Ret::Entry`]). Lock: whether it
    /// is held and its fencing token ([`Ret::Info`]).
    Read,
    /// Atomic: set to `update` if it is `expect` ([`Ret::Swapped`]).
    Cas {
        /// The value expected.
        expect: i64,
        /// The value set.
        update: i64,
    },
    /// Map key: put `value`, answer the previous one ([`Ret::Entry`]).
    Put {
        /// The value put (unique in a history).
        value: u64,
    },
    /// Map key: remove, answer the previous value ([`Ret::Entry`]).
    Remove,
    /// Lock: one attempt by `owner` ([`Ret::Fence`]: the token when it holds the lock after
    /// the call, `None` when another owner holds it). Reentrant: an owner that holds the lock
    /// holds it once more, with the same token.
    TryLock {
        /// The owner (one per client process of the history).
        owner: u32,
    },
    /// Lock: give up one hold by `owner` ([`Ret::Unlocked`], or [`Ret::NotOwner`] when
    /// `owner` does not hold it).
    Unlock {
        /// The owner.
        owner: u32,
    },
}

/// What came back from a call that completed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Ret {
    /// An atomic's value.
    Value(i64),
    /// Whether a compare-and-set swapped.
    Swapped(bool),
    /// A map key's value (the previous one for put and remove).
    Entry(Option<u64>),
    /// A lock attempt: the fencing token if held, `None` if another owner holds it.
    Fence(Option<u64>),
    /// A lock read: held, and the fencing token (the last acquisition's).
    Info {
        /// Whether anyone holds the lock.
        held: bool,
        /// The token of the last acquisition (0: never taken).
        fence: u64,
    },
    /// An unlock that gave up a hold.
    Unlocked,
    /// An unlock refused: the owner does not hold the lock.
    NotOwner,
}

/// How an operation ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Outcome {
    /// Answered.
    Ok(Ret),
    /// Definitely not applied (refused before it was sent, or by the owner without effect).
    Failed,
    /// May or may not have been applied, at any time after the invocation.
    Unknown,
}

/// One operation of one client process.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// The client process (one operation at a time per process).
    pub process: u32,
    /// The object.
    pub object: Object,
    /// What was asked.
    pub call: Call,
    /// When it was invoked (ns since the history's start).
    pub invoked_ns: u64,
    /// When its outcome was known (ns since the history's start; for `Unknown`, when the
    /// client gave up).
    pub completed_ns: u64,
    /// How it ended.
    pub outcome: Outcome,
}
