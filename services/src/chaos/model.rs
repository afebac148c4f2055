//! The sequential specification of each object kind: a deterministic state machine the checker
//! replays operations against, in the order it is trying.
//!
//! A model owns what one call does to one object and what it answers; which orders to try and
//! when an answer may be missing are the checker's business (`check.rs`).

use std::fmt::Debug;
use std::hash::Hash;

use super::history::{Call, Ret};

/// One object kind's sequential behaviour.
pub(crate) trait Model {
    /// The object's state; small, because the checker stores one per visited configuration.
    type State: Clone + Eq + Hash + Debug;

    /// The object kind, as a failure names it ("an atomic").
    const KIND: &'static str;

    /// The state of an object nobody has touched.
    fn init() -> Self::State;

    /// `call` applied to `state`: the new state and the answer, or `None` when the call is not
    /// one this object kind understands (whatever the state).
    fn apply(state: &Self::State, call: &Call) -> Option<(Self::State, Ret)>;

    /// Whether `ret` is an answer of the right shape for `call` (it may still be the wrong
    /// value); the checker rejects a history with a misshapen answer before searching it.
    fn answer_fits(call: &Call, ret: &Ret) -> bool;

    /// `call` applied to `state` when it answered `ret` (`None`: the answer is unknown, any
    /// answer goes): the new state, or `None` when the call cannot have answered `ret` here.
    fn step(state: &Self::State, call: &Call, ret: Option<&Ret>) -> Option<Self::State> {
        let (next, answer) = Self::apply(state, call)?;
        match ret {
            Some(ret) if *ret != answer => None,
            _ => Some(next),
        }
    }
}

/// An AtomicLong: an `i64` starting at 0.
pub(crate) struct AtomicModel;

impl Model for AtomicModel {
    type State = i64;
    const KIND: &'static str = "an atomic";

    fn init() -> i64 {
        0
    }

    fn apply(value: &i64, call: &Call) -> Option<(i64, Ret)> {
        let value = *value;
        match *call {
            Call::Add { delta } => {
                let new = value.wrapping_add(delta);
                Some((new, Ret::Value(new)))
            }
            Call::Read => Some((value, Ret::Value(value))),
            Call::Cas { expect, update } if value == expect => Some((update, Ret::Swapped(true))),
            Call::Cas { .. } => Some((value, Ret::Swapped(false))),
            _ => None,
        }
    }

    fn answer_fits(call: &Call, ret: &Ret) -> bool {
        matches!(
            (call, ret),
            (Call::Add { .. } | Call::Read, Ret::Value(_)) | (Call::Cas { .. }, Ret::Swapped(_))
        )
    }
}

/// One key of a map: absent, or the value last put.
pub(crate) struct MapKeyModel;

impl Model for MapKeyModel {
    type State = Option<u64>;
    const KIND: &'static str = "a map key";

    fn init() -> Option<u64> {
        None
    }

    fn apply(entry: &Option<u64>, call: &Call) -> Option<(Option<u64>, Ret)> {
        let entry = *entry;
        match *call {
            Call::Put { value } => Some((Some(value), Ret::Entry(entry))),
            Call::Read => Some((entry, Ret::Entry(entry))),
            Call::Remove => Some((None, Ret::Entry(entry))),
            _ => None,
        }
    }

    fn answer_fits(call: &Call, ret: &Ret) -> bool {
        matches!(
            (call, ret),
            (Call::Put { .. } | Call::Read | Call::Remove, Ret::Entry(_))
        )
    }
}

/// A reentrant lock with fencing tokens.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct LockState {
    /// The owner holding the lock and how many times it holds it (never 0); `None` when free.
    pub(crate) holder: Option<(u32, u32)>,
    /// The token of the last acquisition (0: never taken); kept when the lock is released.
    pub(crate) fence: u64,
}

/// A reentrant lock: a free lock goes to the first owner asking, with the next fencing token; the
/// holder may take it again (same token) and must give it up as many times.
pub(crate) struct LockModel;

impl Model for LockModel {
    type State = LockState;
    const KIND: &'static str = "a lock";

    fn init() -> LockState {
        LockState {
            holder: None,
            fence: 0,
        }
    }

    fn apply(state: &LockState, call: &Call) -> Option<(LockState, Ret)> {
        let state = *state;
        match *call {
            Call::TryLock { owner } => Some(try_lock(state, owner)),
            Call::Unlock { owner } => Some(unlock(state, owner)),
            Call::Read => Some((
                state,
                Ret::Info {
                    held: state.holder.is_some(),
                    fence: state.fence,
                },
            )),
            _ => None,
        }
    }

    fn answer_fits(call: &Call, ret: &Ret) -> bool {
        matches!(
            (call, ret),
            (Call::TryLock { .. }, Ret::Fence(_))
                | (Call::Unlock { .. }, Ret::Unlocked | Ret::NotOwner)
                | (Call::Read, Ret::Info { .. })
        )
    }
}

fn try_lock(state: LockState, owner: u32) -> (LockState, Ret) {
    match state.holder {
        None => {
            let fence = state.fence.wrapping_add(1);
            let next = LockState {
                holder: Some((owner, 1)),
                fence,
            };
            (next, Ret::Fence(Some(fence)))
        }
        Some((holder, count)) if holder == owner => {
            let next = LockState {
                holder: Some((owner, count.saturating_add(1))),
                ..state
            };
            (next, Ret::Fence(Some(state.fence)))
        }
        Some(_) => (state, Ret::Fence(None)),
    }
}

fn unlock(state: LockState, owner: u32) -> (LockState, Ret) {
    match state.holder {
        Some((holder, count)) if holder == owner => {
            let holder = (count > 1).then(|| (owner, count - 1));
            (LockState { holder, ..state }, Ret::Unlocked)
        }
        _ => (state, Ret::NotOwner),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `calls` from the initial state, returning each answer.
    fn run<M: Model>(calls: &[Call]) -> Vec<Ret> {
        let mut state = M::init();
        calls
            .iter()
            .map(|call| {
                let (next, ret) = M::apply(&state, call).expect("call fits the model");
                state = next;
                ret
            })
            .collect()
    }

    #[test]
    fn atomic_adds_reads_and_swaps_only_on_the_expected_value() {
        let answers = run::<AtomicModel>(&[
            Call::Add { delta: 5 },
            Call::Cas {
                expect: 4,
                update: 9,
            },
            Call::Cas {
                expect: 5,
                update: -1,
            },
            Call::Read,
            Call::Add { delta: i64::MIN },
        ]);
        assert_eq!(
            answers,
            [
                Ret::Value(5),
                Ret::Swapped(false),
                Ret::Swapped(true),
                Ret::Value(-1),
                Ret::Value(i64::MAX),
            ]
        );
    }

    #[test]
    fn map_key_answers_the_previous_entry_on_put_and_remove() {
        let answers = run::<MapKeyModel>(&[
            Call::Read,
            Call::Put { value: 1 },
            Call::Put { value: 2 },
            Call::Read,
            Call::Remove,
            Call::Remove,
        ]);
        assert_eq!(
            answers,
            [
                Ret::Entry(None),
                Ret::Entry(None),
                Ret::Entry(Some(1)),
                Ret::Entry(Some(2)),
                Ret::Entry(Some(2)),
                Ret::Entry(None),
            ]
        );
    }

    #[test]
    fn lock_is_reentrant_refuses_others_and_fences_each_acquisition() {
        let answers = run::<LockModel>(&[
            Call::TryLock { owner: 1 },
            Call::TryLock { owner: 1 },
            Call::TryLock { owner: 2 },
            Call::Unlock { owner: 2 },
            Call::Unlock { owner: 1 },
            Call::Read,
            Call::Unlock { owner: 1 },
            Call::Read,
            Call::Unlock { owner: 1 },
            Call::TryLock { owner: 2 },
        ]);
        assert_eq!(
            answers,
            [
                Ret::Fence(Some(1)),
                Ret::Fence(Some(1)),
                Ret::Fence(None),
                Ret::NotOwner,
                Ret::Unlocked,
                Ret::Info {
                    held: true,
                    fence: 1
                },
                Ret::Unlocked,
                Ret::Info {
                    held: false,
                    fence: 1
                },
                Ret::NotOwner,
                Ret::Fence(Some(2)),
            ]
        );
    }

    #[test]
    fn step_accepts_any_answer_when_unknown_and_only_the_right_one_otherwise() {
        let put = Call::Put { value: 3 };
        assert_eq!(MapKeyModel::step(&Some(1), &put, None), Some(Some(3)));
        assert_eq!(
            MapKeyModel::step(&Some(1), &put, Some(&Ret::Entry(Some(1)))),
            Some(Some(3))
        );
        assert_eq!(
            MapKeyModel::step(&Some(1), &put, Some(&Ret::Entry(None))),
            None
        );
    }

    #[test]
    fn calls_of_another_object_kind_do_not_apply() {
        assert!(AtomicModel::apply(&0, &Call::Put { value: 1 }).is_none());
        assert!(MapKeyModel::apply(&None, &Call::Add { delta: 1 }).is_none());
        assert!(LockModel::apply(&LockModel::init(), &Call::Remove).is_none());
        assert!(!AtomicModel::answer_fits(&Call::Read, &Ret::Entry(None)));
        assert!(!LockModel::answer_fits(
            &Call::Unlock { owner: 1 },
            &Ret::Fence(None)
        ));
        assert!(MapKeyModel::answer_fits(&Call::Remove, &Ret::Entry(None)));
    }
}
