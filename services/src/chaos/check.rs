//! Linearizability checking: could the operations of a history have taken effect one at a time,
//! each at some instant between its invocation and its completion, and given every answer the
//! clients heard?
//!
//! Objects are independent (linearizability is P-compositional), so [`check`] splits the
//! history by [`Object`] and searches each object's operations on its own with the algorithm of
//! Wing & Gong, memoized as Lowe describes (the one Knossos and Porcupine use):
//!
//! - Every answered operation is a call entry at its invocation and a return entry at its
//!   completion, in one list ordered by time. At equal times calls come first, so two
//!   operations that touch at an instant count as concurrent.
//! - The search walks the list: at a call entry it tries to take that operation next (the model
//!   must accept its answer in the current state); taking it removes both its entries and
//!   restarts the walk. At the first return entry, the operations invoked before it are all the
//!   candidates there are: it tries the unknown operations invoked by then, and when none helps
//!   either, the operation returning there cannot take effect in time, so the search undoes its
//!   last choice and tries the next candidate. The choices live on an explicit stack, since a
//!   history holds tens of thousands of operations.
//! - Configurations already explored, (set of operations taken, model state), are remembered
//!   and never explored twice; the set is stored whole, so a hash collision costs time, never
//!   a wrong answer.
//!
//! Outcomes: an [`Outcome::Ok`] operation took effect within its interval and answered what it
//! answered; a [`Outcome::Failed`] one had no effect and is dropped; an [`Outcome::Unknown`] one
//! may take effect at any time after its invocation, or never, answering anything: its return
//! entry is at infinity, and an object is linearizable as soon as every answered operation is
//! taken. An unknown read has no effect at all and is dropped.
//!
//! Unknown operations are what makes a search expensive: one that never took effect stays a
//! candidate forever. The checker is meant for histories where they are rare (tens per object);
//! the budget turns a search that grows out of hand into an inconclusive object.

use std::collections::BTreeMap;
use std::fmt;
use std::marker::PhantomData;

use ahash::AHashSet;

use super::history::{Call, Event, Object, Outcome};
use super::model::{AtomicModel, LockModel, MapKeyModel, Model};

/// How many of the last operations of the longest linearizable prefix a failure keeps.
const RECENT: usize = 8;

/// How many operations of each list a failure's text shows (the report keeps them all).
const SHOWN: usize = 12;

/// Checks `history` for linearizability, each object on its own, exploring at most `budget`
/// search steps per object (`u64::MAX`: no bound).
///
/// A linearizable object takes a few steps per operation; a failing one must exhaust every
/// order first, and with unknown outcomes that can grow fast (a 1,600-operation map key with 30
/// unknown operations and one impossible read took 7.5 million steps). Each step may remember
/// one configuration, about 200 bytes: the budget bounds memory as well as time.
///
/// Never panics: an operation that does not fit its object (a put on an atomic, an answer of the
/// wrong kind, an answer before the call) makes that object's result
/// [`ObjectResult::InvalidHistory`]; an object whose search runs out of budget is
/// [`ObjectResult::Inconclusive`], which the [`Verdict`] counts but does not hold as a failure.
///
/// # Examples
///
/// ```
/// use corecast_services::chaos::check::check;
/// use corecast_services::chaos::history::{Call, Event, Object, Outcome, Ret};
///
/// let put = Event {
///     process: 0,
///     object: Object::MapKey(0),
///     call: Call::Put { value: 1 },
///     invoked_ns: 0,
///     completed_ns: 10,
///     outcome: Outcome::Ok(Ret::Entry(None)),
/// };
/// // Invoked after the put was acknowledged, and still sees the key absent.
/// let stale = Event { process: 1, call: Call::Read, invoked_ns: 20, completed_ns: 30, ..put };
/// let verdict = check(&[put, stale], 1_000_000);
/// assert!(!verdict.linearizable());
/// assert!(check(&[put], 1_000_000).linearizable());
/// ```
pub fn check(history: &[Event], budget: u64) -> Verdict {
    let mut by_object: BTreeMap<Object, Vec<Event>> = BTreeMap::new();
    for event in history {
        by_object.entry(event.object).or_default().push(*event);
    }
    let objects = by_object
        .into_iter()
        .map(|(object, events)| match object {
            Object::Atomic(_) => check_object::<AtomicModel>(object, &events, budget),
            Object::MapKey(_) => check_object::<MapKeyModel>(object, &events, budget),
            Object::Lock(_) => check_object::<LockModel>(object, &events, budget),
        })
        .collect();
    Verdict { objects }
}

/// What the checker found, object by object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verdict {
    /// One report per object of the history, in [`Object`] order.
    pub objects: Vec<ObjectReport>,
}

impl Verdict {
    /// Whether no object failed: each was linearizable or inconclusive (see
    /// [`Verdict::inconclusive`]).
    pub fn linearizable(&self) -> bool {
        self.failures().next().is_none()
    }

    /// The objects that failed: not linearizable, or an invalid history.
    pub fn failures(&self) -> impl Iterator<Item = &ObjectReport> {
        self.objects.iter().filter(|report| report.is_failure())
    }

    /// How many objects the history touched.
    pub fn object_count(&self) -> usize {
        self.objects.len()
    }

    /// How many operations were checked (answered or unknown; failed ones are not counted).
    pub fn operations(&self) -> usize {
        self.objects.iter().map(|report| report.operations).sum()
    }

    /// How many of the checked operations had an unknown outcome.
    pub fn unknown(&self) -> usize {
        self.objects.iter().map(|report| report.unknown).sum()
    }

    /// How many objects ran out of search budget before an answer.
    pub fn inconclusive(&self) -> usize {
        let inconclusive = |report: &&ObjectReport| report.result == ObjectResult::Inconclusive;
        self.objects.iter().filter(inconclusive).count()
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let failed = self.failures().count();
        if failed == 0 {
            return write!(
                f,
                "linearizable: {} objects, {} operations ({} unknown), {} inconclusive",
                self.object_count(),
                self.operations(),
                self.unknown(),
                self.inconclusive()
            );
        }
        write!(
            f,
            "NOT linearizable: {failed} of {} objects failed ({} operations, {} unknown, {} \
             inconclusive)",
            self.object_count(),
            self.operations(),
            self.unknown(),
            self.inconclusive()
        )?;
        self.failures()
            .try_for_each(|report| write!(f, "\n{report}"))
    }
}

/// The result for one object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectReport {
    /// The object.
    pub object: Object,
    /// Its operations checked: answered or unknown (unknown reads included, though they cannot
    /// matter).
    pub operations: usize,
    /// How many of them had an unknown outcome.
    pub unknown: usize,
    /// Its failed operations, dropped before the search.
    pub failed: usize,
    /// The search steps spent on it.
    pub steps: u64,
    /// What the search found.
    pub result: ObjectResult,
}

impl ObjectReport {
    /// Whether this object shows the history wrong: not linearizable, or invalid.
    pub fn is_failure(&self) -> bool {
        matches!(
            self.result,
            ObjectResult::InvalidHistory { .. } | ObjectResult::NotLinearizable(_)
        )
    }
}

impl fmt::Display for ObjectReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let object = self.object;
        match &self.result {
            ObjectResult::Linearizable => write!(
                f,
                "{object:?}: linearizable ({} operations, {} steps)",
                self.operations, self.steps
            ),
            ObjectResult::Inconclusive => write!(
                f,
                "{object:?}: inconclusive, out of budget after {} steps ({} operations)",
                self.steps, self.operations
            ),
            ObjectResult::InvalidHistory { event, reason } => {
                write!(f, "{object:?}: invalid history: {reason}: {}", Shown(event))
            }
            ObjectResult::NotLinearizable(stuck) => {
                write!(
                    f,
                    "{object:?}: not linearizable: at most {} of {} answered operations \
                     linearize ({} unknown besides); the object is then {}",
                    stuck.linearized,
                    self.operations - self.unknown,
                    self.unknown,
                    stuck.state
                )?;
                write_list(f, "last operations of that prefix", &stuck.recent)?;
                write_list(f, "could not linearize", &[stuck.blocked])?;
                write_list(
                    f,
                    "pending with it (no order of them gets it through)",
                    &stuck.concurrent,
                )
            }
        }
    }
}

/// What the search found for one object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ObjectResult {
    /// Some order of its operations explains every answer.
    Linearizable,
    /// The search ran out of budget before an answer; not a failure.
    Inconclusive,
    /// An operation makes no sense for the object; nothing was searched.
    InvalidHistory {
        /// The first such operation.
        event: Event,
        /// What is wrong with it.
        reason: String,
    },
    /// No order explains every answer; where the deepest attempt got stuck.
    NotLinearizable(Box<Stuck>),
}

/// Where the search for a linearization got furthest before failing: the evidence a human
/// needs to see the bug.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stuck {
    /// How many answered operations the longest linearizable prefix found holds (the unknown
    /// operations it took are not counted).
    pub linearized: usize,
    /// The object's state after that prefix, as the model writes it.
    pub state: String,
    /// The last operations of that prefix, in the order taken (at most eight).
    pub recent: Vec<Event>,
    /// The operation that had to take effect next (its completion came first) and could not.
    pub blocked: Event,
    /// The other operations invoked before `blocked` completed and not in the prefix: the
    /// candidates tried there, none of which let it through (answered ones first, then
    /// unknown ones).
    pub concurrent: Vec<Event>,
}

/// One event as a line: process, call, outcome, times (an unknown one's interval is open).
struct Shown<'a>(&'a Event);

impl fmt::Display for Shown<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let event = self.0;
        let (invoked, completed) = (event.invoked_ns, event.completed_ns);
        write!(f, "p{} {:?} -> ", event.process, event.call)?;
        match event.outcome {
            Outcome::Ok(ret) => write!(f, "{ret:?}, {invoked}..{completed} ns"),
            Outcome::Failed => write!(f, "failed, {invoked}..{completed} ns"),
            Outcome::Unknown => write!(f, "unknown, {invoked}.. ns (gave up at {completed})"),
        }
    }
}

fn write_list(f: &mut fmt::Formatter<'_>, title: &str, events: &[Event]) -> fmt::Result {
    if events.is_empty() {
        return Ok(());
    }
    write!(f, "\n  {title}:")?;
    for event in events.iter().take(SHOWN) {
        write!(f, "\n    {}", Shown(event))?;
    }
    if events.len() > SHOWN {
        write!(f, "\n    … and {} more", events.len() - SHOWN)?;
    }
    Ok(())
}

/// Checks one object's events against model `M`.
fn check_object<M: Model>(object: Object, events: &[Event], budget: u64) -> ObjectReport {
    let mut report = ObjectReport {
        object,
        operations: 0,
        unknown: 0,
        failed: 0,
        steps: 0,
        result: ObjectResult::Linearizable,
    };
    let mut ops = Vec::with_capacity(events.len());
    for event in events {
        match event.outcome {
            Outcome::Failed => report.failed += 1,
            Outcome::Unknown => {
                report.operations += 1;
                report.unknown += 1;
                if event.call != Call::Read {
                    ops.push(*event);
                }
            }
            Outcome::Ok(_) => {
                report.operations += 1;
                ops.push(*event);
            }
        }
    }
    if let Some((event, reason)) = events
        .iter()
        .find_map(|event| invalid::<M>(event).map(|reason| (*event, reason)))
    {
        report.result = ObjectResult::InvalidHistory { event, reason };
        return report;
    }
    let (result, steps) = Search::<M>::new(ops).run(budget);
    report.result = result;
    report.steps = steps;
    report
}

/// Why `event` cannot be an operation on an `M` object, if it cannot.
fn invalid<M: Model>(event: &Event) -> Option<String> {
    // Whether a call applies depends on the object's kind only, never on its state.
    if M::apply(&M::init(), &event.call).is_none() {
        return Some(format!(
            "{:?} is not an operation on {}",
            event.call,
            M::KIND
        ));
    }
    let Outcome::Ok(ret) = event.outcome else {
        return None;
    };
    if !M::answer_fits(&event.call, &ret) {
        return Some(format!(
            "{ret:?} is not an answer to {:?} on {}",
            event.call,
            M::KIND
        ));
    }
    (event.completed_ns < event.invoked_ns).then(|| "answered before it was invoked".to_owned())
}

/// The set of operations taken so far, one bit per operation.
struct Bitset {
    words: Vec<u64>,
}

/// A [`Bitset`] in canonical compact form: the count of leading all-ones words, then the other
/// non-zero words with their index. The search takes operations roughly in invocation order, so
/// the set is mostly a run of ones and a few stragglers, and this stays a few words long where
/// the whole set would be hundreds; two sets have equal keys exactly when they are equal.
#[derive(Clone, PartialEq, Eq, Hash)]
struct SetKey {
    full_words: usize,
    rest: Box<[(usize, u64)]>,
}

impl Bitset {
    fn new(bits: usize) -> Self {
        Self {
            words: vec![0; bits.div_ceil(64)],
        }
    }

    fn set(&mut self, bit: usize) {
        self.words[bit / 64] |= 1 << (bit % 64);
    }

    fn clear(&mut self, bit: usize) {
        self.words[bit / 64] &= !(1 << (bit % 64));
    }

    fn key(&self) -> SetKey {
        let full_words = self.words.iter().take_while(|w| **w == u64::MAX).count();
        let rest = (full_words..self.words.len())
            .filter(|i| self.words[*i] != 0)
            .map(|i| (i, self.words[i]))
            .collect();
        SetKey { full_words, rest }
    }
}

/// An entry of the answered operations' list, in time order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Slot {
    /// The invocation of operation `n`.
    Call(usize),
    /// The completion of operation `n`.
    Return(usize),
    /// The list's ends (one sentinel, the list is circular).
    Sentinel,
}

/// A circular doubly linked list over `0..=sentinel`, the sentinel being the last index, whose
/// removals are undone in the reverse order (Knuth's dancing links): taking an operation out
/// and putting it back costs O(1).
struct Links {
    next: Vec<usize>,
    prev: Vec<usize>,
}

impl Links {
    /// `0..items` linked in order, with the sentinel `items`.
    fn new(items: usize) -> Self {
        let len = items + 1;
        Self {
            next: (0..len).map(|i| (i + 1) % len).collect(),
            prev: (0..len).map(|i| (i + len - 1) % len).collect(),
        }
    }

    fn sentinel(&self) -> usize {
        self.next.len() - 1
    }

    fn first(&self) -> usize {
        self.next[self.sentinel()]
    }

    fn unlink(&mut self, i: usize) {
        let (prev, next) = (self.prev[i], self.next[i]);
        self.next[prev] = next;
        self.prev[next] = prev;
    }

    /// Puts back the item unlinked last (its own links still point at its old neighbours).
    fn relink(&mut self, i: usize) {
        let (prev, next) = (self.prev[i], self.next[i]);
        self.next[prev] = i;
        self.prev[next] = i;
    }
}

/// Where the walk over the candidates for the next operation stands. Answered operations are
/// tried first, in invocation order; then the unknown ones invoked before the first answered
/// operation still to take completed. Any linearization must take that one before anything
/// invoked later, so these are all the candidates; trying unknown operations last means they
/// are taken only where an answer needs them.
#[derive(Clone, Copy, Debug)]
enum Cursor {
    /// At this slot of the answered operations' list.
    Answered(usize),
    /// Past the first return in that list, operation `blocked`'s: at this node of the unknown
    /// operations' list.
    Unknown { node: usize, blocked: usize },
}

/// One operation taken, with what it takes to undo it and try the next candidate instead.
struct Frame<S> {
    op: usize,
    before: S,
    resume: Cursor,
}

/// The deepest dead end seen so far.
struct DeadEnd<S> {
    /// Answered operations taken.
    depth: usize,
    state: S,
    recent: Vec<usize>,
    blocked: usize,
    concurrent: Vec<usize>,
}

/// The search over one object's operations.
struct Search<M: Model> {
    /// The operations by number: the answered ones (`0..answered`, in invocation order), then
    /// the unknown ones (in invocation order), so the set of operations taken is mostly a run
    /// of ones.
    ops: Vec<Event>,
    /// How many operations were answered: those that must all be taken.
    answered: usize,
    /// The answered operations' calls and returns, in time order; the last is the sentinel.
    slots: Vec<Slot>,
    slot_links: Links,
    /// For each answered operation, the slots of its call and its return.
    slots_of: Vec<(usize, usize)>,
    /// The unknown operations not taken: node `i` is operation `answered + i`.
    unknown_links: Links,
    model: PhantomData<M>,
}

impl<M: Model> Search<M> {
    fn new(mut ops: Vec<Event>) -> Self {
        ops.sort_by_key(|event| {
            (
                event.outcome == Outcome::Unknown,
                event.invoked_ns,
                event.completed_ns,
            )
        });
        let answered = ops
            .iter()
            .filter(|event| event.outcome != Outcome::Unknown)
            .count();
        let mut timed: Vec<(u64, bool, usize)> = Vec::with_capacity(2 * answered);
        for (n, event) in ops[..answered].iter().enumerate() {
            timed.push((event.invoked_ns, false, n));
            timed.push((event.completed_ns, true, n));
        }
        // Calls before returns at equal times: operations that touch count as concurrent.
        timed.sort_unstable();
        let mut slots: Vec<Slot> = Vec::with_capacity(timed.len() + 1);
        let mut slots_of = vec![(0, 0); answered];
        for (_, is_return, n) in timed {
            if is_return {
                slots_of[n].1 = slots.len();
                slots.push(Slot::Return(n));
            } else {
                slots_of[n].0 = slots.len();
                slots.push(Slot::Call(n));
            }
        }
        let slot_links = Links::new(slots.len());
        slots.push(Slot::Sentinel);
        Self {
            unknown_links: Links::new(ops.len() - answered),
            ops,
            answered,
            slots,
            slot_links,
            slots_of,
            model: PhantomData,
        }
    }

    fn take(&mut self, op: usize) {
        match self.slots_of.get(op) {
            Some(&(call, ret)) => {
                self.slot_links.unlink(call);
                self.slot_links.unlink(ret);
            }
            None => self.unknown_links.unlink(op - self.answered),
        }
    }

    fn untake(&mut self, op: usize) {
        match self.slots_of.get(op) {
            Some(&(call, ret)) => {
                self.slot_links.relink(ret);
                self.slot_links.relink(call);
            }
            None => self.unknown_links.relink(op - self.answered),
        }
    }

    /// Runs the search for at most `budget` steps: the result and the steps spent.
    fn run(mut self, budget: u64) -> (ObjectResult, u64) {
        let mut taken = Bitset::new(self.ops.len());
        let mut seen: AHashSet<(SetKey, M::State)> = AHashSet::new();
        let mut stack: Vec<Frame<M::State>> = Vec::new();
        let mut state = M::init();
        let mut answered_taken = 0;
        let mut deepest: Option<DeadEnd<M::State>> = None;
        let mut steps = 0;
        let mut cursor = Cursor::Answered(self.slot_links.first());
        while answered_taken < self.answered {
            if steps >= budget {
                return (ObjectResult::Inconclusive, steps);
            }
            steps += 1;
            let Some((op, resume)) = self.candidate(cursor) else {
                if let Some(blocked) = self.blocked(cursor) {
                    if deepest
                        .as_ref()
                        .is_none_or(|dead| answered_taken > dead.depth)
                    {
                        deepest = Some(self.dead_end(&stack, &state, answered_taken, blocked));
                    }
                }
                let Some(frame) = stack.pop() else {
                    return (self.not_linearizable(deepest), steps);
                };
                taken.clear(frame.op);
                self.untake(frame.op);
                state = frame.before;
                answered_taken -= usize::from(frame.op < self.answered);
                cursor = frame.resume;
                continue;
            };
            cursor = resume;
            let Some(after) = self.after(op, &state) else {
                continue;
            };
            taken.set(op);
            if !seen.insert((taken.key(), after.clone())) {
                taken.clear(op);
                continue;
            }
            let before = std::mem::replace(&mut state, after);
            stack.push(Frame { op, before, resume });
            self.take(op);
            answered_taken += usize::from(op < self.answered);
            cursor = Cursor::Answered(self.slot_links.first());
        }
        (ObjectResult::Linearizable, steps)
    }

    /// The candidate at `cursor` and where the walk goes after it; `None` when no candidate is
    /// left.
    fn candidate(&self, cursor: Cursor) -> Option<(usize, Cursor)> {
        let (node, blocked) = match cursor {
            Cursor::Answered(slot) => match self.slots[slot] {
                Slot::Call(op) => {
                    return Some((op, Cursor::Answered(self.slot_links.next[slot])));
                }
                Slot::Return(blocked) => (self.unknown_links.first(), blocked),
                Slot::Sentinel => return None,
            },
            Cursor::Unknown { node, blocked } => (node, blocked),
        };
        let op = self.answered + node;
        let deadline = self.ops[blocked].completed_ns;
        let in_time = node != self.unknown_links.sentinel() && self.ops[op].invoked_ns <= deadline;
        let next = self.unknown_links.next[node];
        in_time.then_some((
            op,
            Cursor::Unknown {
                node: next,
                blocked,
            },
        ))
    }

    /// The operation whose completion bounds the candidates at `cursor`.
    fn blocked(&self, cursor: Cursor) -> Option<usize> {
        match cursor {
            Cursor::Answered(slot) => match self.slots[slot] {
                Slot::Return(blocked) => Some(blocked),
                Slot::Call(_) | Slot::Sentinel => None,
            },
            Cursor::Unknown { blocked, .. } => Some(blocked),
        }
    }

    /// The state after operation `op` taken in `state`, if it can go next and is worth
    /// taking. An unknown operation that would change nothing is not: a linearization that
    /// takes it there works as well without it, and it stays available for later. Skipping it
    /// keeps each such operation (a refused unlock, a failing swap) from doubling the
    /// configurations a failing search must exhaust.
    fn after(&self, op: usize, state: &M::State) -> Option<M::State> {
        let event = &self.ops[op];
        let ret = match &event.outcome {
            Outcome::Ok(ret) => Some(ret),
            _ => None,
        };
        let after = M::step(state, &event.call, ret)?;
        (ret.is_some() || after != *state).then_some(after)
    }

    /// The dead end where no candidate lets operation `blocked` through.
    fn dead_end(
        &self,
        stack: &[Frame<M::State>],
        state: &M::State,
        depth: usize,
        blocked: usize,
    ) -> DeadEnd<M::State> {
        let mut concurrent = Vec::new();
        let mut slot = self.slot_links.first();
        while let Slot::Call(op) = self.slots[slot] {
            if op != blocked {
                concurrent.push(op);
            }
            slot = self.slot_links.next[slot];
        }
        let deadline = self.ops[blocked].completed_ns;
        let mut node = self.unknown_links.first();
        while node != self.unknown_links.sentinel()
            && self.ops[self.answered + node].invoked_ns <= deadline
        {
            concurrent.push(self.answered + node);
            node = self.unknown_links.next[node];
        }
        let recent_from = stack.len().saturating_sub(RECENT);
        DeadEnd {
            depth,
            state: state.clone(),
            recent: stack[recent_from..].iter().map(|frame| frame.op).collect(),
            blocked,
            concurrent,
        }
    }

    fn not_linearizable(&self, deepest: Option<DeadEnd<M::State>>) -> ObjectResult {
        // The search fails only after walking into the return of an answered operation it
        // could not take, so there is a dead end; the first operation stands in should that
        // ever not hold.
        let dead = deepest.unwrap_or_else(|| DeadEnd {
            depth: 0,
            state: M::init(),
            recent: Vec::new(),
            blocked: 0,
            concurrent: Vec::new(),
        });
        let events = |ops: &[usize]| ops.iter().map(|op| self.ops[*op]).collect();
        ObjectResult::NotLinearizable(Box::new(Stuck {
            linearized: dead.depth,
            state: format!("{:?}", dead.state),
            recent: events(&dead.recent),
            blocked: self.ops[dead.blocked],
            concurrent: events(&dead.concurrent),
        }))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::time::Instant;

    use super::*;
    use crate::chaos::history::Ret;

    const UNBOUNDED: u64 = u64::MAX;
    const ATOMIC: Object = Object::Atomic(0);
    const KEY: Object = Object::MapKey(0);
    const LOCK: Object = Object::Lock(0);

    fn event(process: u32, object: Object, call: Call, outcome: Outcome, at: (u64, u64)) -> Event {
        Event {
            process,
            object,
            call,
            invoked_ns: at.0,
            completed_ns: at.1,
            outcome,
        }
    }

    fn ok(process: u32, object: Object, call: Call, ret: Ret, at: (u64, u64)) -> Event {
        event(process, object, call, Outcome::Ok(ret), at)
    }

    fn unknown(process: u32, object: Object, call: Call, at: (u64, u64)) -> Event {
        event(process, object, call, Outcome::Unknown, at)
    }

    fn failed(process: u32, object: Object, call: Call, at: (u64, u64)) -> Event {
        event(process, object, call, Outcome::Failed, at)
    }

    fn add(delta: i64) -> Call {
        Call::Add { delta }
    }

    fn put(value: u64) -> Call {
        Call::Put { value }
    }

    fn lock(owner: u32) -> Call {
        Call::TryLock { owner }
    }

    fn unlock(owner: u32) -> Call {
        Call::Unlock { owner }
    }

    fn assert_linearizable(history: &[Event]) -> Verdict {
        let verdict = check(history, UNBOUNDED);
        assert!(
            verdict.linearizable(),
            "expected linearizable, got: {verdict}"
        );
        assert_eq!(verdict.inconclusive(), 0, "unbounded search: {verdict}");
        verdict
    }

    /// The one failure of `history`, which must be a failed search.
    fn stuck(history: &[Event]) -> Stuck {
        let verdict = check(history, UNBOUNDED);
        let failures: Vec<&ObjectReport> = verdict.failures().collect();
        assert_eq!(
            failures.len(),
            1,
            "expected one failed object, got: {verdict}"
        );
        match &failures[0].result {
            ObjectResult::NotLinearizable(stuck) => (**stuck).clone(),
            other => panic!("expected a failed search, got {other:?}"),
        }
    }

    #[test]
    fn empty_history_is_linearizable() {
        let verdict = assert_linearizable(&[]);
        assert_eq!(verdict.object_count(), 0);
        assert_eq!(verdict.operations(), 0);
    }

    #[test]
    fn read_missing_an_acknowledged_put_is_stale() {
        let put = ok(1, KEY, put(1), Ret::Entry(None), (0, 10));
        let read = ok(2, KEY, Call::Read, Ret::Entry(None), (20, 30));
        let stuck = stuck(&[put, read]);
        assert_eq!(stuck.blocked, read);
        assert_eq!(stuck.linearized, 1, "the put alone linearizes");
        assert_eq!(stuck.state, "Some(1)");
        assert_eq!(stuck.recent, [put]);
    }

    #[test]
    fn read_concurrent_with_a_put_may_see_either_value() {
        let put = ok(1, KEY, put(1), Ret::Entry(None), (0, 10));
        assert_linearizable(&[put, ok(2, KEY, Call::Read, Ret::Entry(None), (5, 30))]);
        assert_linearizable(&[put, ok(2, KEY, Call::Read, Ret::Entry(Some(1)), (5, 30))]);
    }

    #[test]
    fn operations_that_touch_at_an_instant_count_as_concurrent() {
        let put = ok(1, KEY, put(1), Ret::Entry(None), (0, 10));
        assert_linearizable(&[put, ok(2, KEY, Call::Read, Ret::Entry(None), (10, 20))]);
        stuck(&[put, ok(2, KEY, Call::Read, Ret::Entry(None), (11, 20))]);
    }

    #[test]
    fn two_owners_holding_a_lock_at_once_is_not_linearizable() {
        let first = ok(1, LOCK, lock(1), Ret::Fence(Some(1)), (0, 10));
        let second = ok(2, LOCK, lock(2), Ret::Fence(Some(2)), (20, 30));
        let stuck = stuck(&[first, second]);
        assert_eq!(stuck.blocked, second);
        assert_eq!(stuck.linearized, 1);

        let release = ok(1, LOCK, unlock(1), Ret::Unlocked, (12, 15));
        assert_linearizable(&[first, release, second]);
    }

    #[test]
    fn a_fencing_token_handed_out_twice_is_not_linearizable() {
        let first = ok(1, LOCK, lock(1), Ret::Fence(Some(1)), (0, 10));
        let release = ok(1, LOCK, unlock(1), Ret::Unlocked, (12, 15));
        let reused = ok(2, LOCK, lock(2), Ret::Fence(Some(1)), (20, 30));
        assert_eq!(stuck(&[first, release, reused]).blocked, reused);

        let next = ok(2, LOCK, lock(2), Ret::Fence(Some(2)), (20, 30));
        assert_linearizable(&[first, release, next]);
    }

    #[test]
    fn reentrant_holds_keep_the_token_and_need_as_many_unlocks() {
        let history = [
            ok(1, LOCK, lock(1), Ret::Fence(Some(1)), (0, 1)),
            ok(1, LOCK, lock(1), Ret::Fence(Some(1)), (2, 3)),
            ok(1, LOCK, unlock(1), Ret::Unlocked, (4, 5)),
            ok(2, LOCK, lock(2), Ret::Fence(None), (6, 7)),
            ok(2, LOCK, unlock(2), Ret::NotOwner, (8, 9)),
            ok(1, LOCK, unlock(1), Ret::Unlocked, (10, 11)),
            ok(
                3,
                LOCK,
                Call::Read,
                Ret::Info {
                    held: false,
                    fence: 1,
                },
                (12, 13),
            ),
            ok(2, LOCK, lock(2), Ret::Fence(Some(2)), (14, 15)),
        ];
        assert_linearizable(&history);

        let mut one_unlock_too_few = history;
        one_unlock_too_few[2].call = Call::Read;
        one_unlock_too_few[2].outcome = Outcome::Ok(Ret::Info {
            held: true,
            fence: 1,
        });
        assert_eq!(stuck(&one_unlock_too_few).blocked, history[6]);
    }

    #[test]
    fn an_acknowledged_add_lost_by_a_later_read_is_not_linearizable() {
        let added = ok(1, ATOMIC, add(5), Ret::Value(5), (0, 10));
        let lost = ok(2, ATOMIC, Call::Read, Ret::Value(0), (20, 30));
        let stuck = stuck(&[added, lost]);
        assert_eq!(stuck.blocked, lost);
        assert_eq!(stuck.state, "5");
    }

    #[test]
    fn concurrent_adds_linearize_in_the_only_order_their_answers_allow() {
        // The add invoked first is tried first and must be put back: only 2 then 1 gives 2, 3.
        let one = ok(1, ATOMIC, add(1), Ret::Value(3), (0, 100));
        let two = ok(2, ATOMIC, add(2), Ret::Value(2), (10, 90));
        let read = ok(3, ATOMIC, Call::Read, Ret::Value(3), (200, 210));
        assert_linearizable(&[one, two, read]);

        // The same answers when the add of 2 starts after the add of 1 ended: no order works.
        let late_two = ok(2, ATOMIC, add(2), Ret::Value(2), (110, 190));
        assert_eq!(stuck(&[one, late_two, read]).blocked, one);
    }

    #[test]
    fn concurrent_swaps_chain_in_the_one_order_that_works() {
        let swap = |expect, update| Call::Cas { expect, update };
        let second = ok(1, ATOMIC, swap(1, 2), Ret::Swapped(true), (0, 50));
        let first = ok(2, ATOMIC, swap(0, 1), Ret::Swapped(true), (10, 40));
        let read = ok(3, ATOMIC, Call::Read, Ret::Value(2), (60, 70));
        assert_linearizable(&[second, first, read]);
        let read_one = ok(3, ATOMIC, Call::Read, Ret::Value(1), (60, 70));
        assert_eq!(stuck(&[second, first, read_one]).blocked, read_one);
    }

    #[test]
    fn an_unknown_add_explains_a_later_read_that_needs_it() {
        let maybe = unknown(1, ATOMIC, add(5), (0, 10));
        assert_linearizable(&[maybe, ok(2, ATOMIC, Call::Read, Ret::Value(5), (20, 30))]);
        // It may take effect after the client gave up, and at most once.
        assert_linearizable(&[
            maybe,
            ok(2, ATOMIC, Call::Read, Ret::Value(0), (20, 30)),
            ok(2, ATOMIC, Call::Read, Ret::Value(5), (40, 50)),
        ]);
        let too_much = ok(2, ATOMIC, Call::Read, Ret::Value(10), (20, 30));
        assert_eq!(stuck(&[maybe, too_much]).blocked, too_much);
    }

    #[test]
    fn an_unknown_add_cannot_take_effect_before_it_was_invoked() {
        let early = ok(2, ATOMIC, Call::Read, Ret::Value(5), (0, 5));
        let stuck = stuck(&[early, unknown(1, ATOMIC, add(5), (10, 20))]);
        assert_eq!(stuck.blocked, early);
        assert_eq!(stuck.linearized, 0);
    }

    #[test]
    fn an_unknown_put_may_never_have_happened() {
        assert_linearizable(&[
            unknown(1, KEY, put(1), (0, 10)),
            ok(2, KEY, Call::Read, Ret::Entry(None), (20, 30)),
            ok(2, KEY, put(2), Ret::Entry(None), (40, 50)),
            ok(3, KEY, Call::Read, Ret::Entry(Some(2)), (60, 70)),
        ]);
    }

    #[test]
    fn an_unknown_put_takes_effect_at_most_once() {
        let seen_again = ok(2, KEY, Call::Read, Ret::Entry(Some(1)), (60, 70));
        let stuck = stuck(&[
            unknown(1, KEY, put(1), (0, 10)),
            ok(2, KEY, Call::Read, Ret::Entry(Some(1)), (20, 30)),
            ok(3, KEY, Call::Remove, Ret::Entry(Some(1)), (40, 50)),
            seen_again,
        ]);
        assert_eq!(stuck.blocked, seen_again);
        assert_eq!(stuck.linearized, 2, "the read and the remove");
        assert_eq!(stuck.state, "None");
    }

    #[test]
    fn an_unknown_try_lock_that_must_have_taken_the_lock_explains_a_refusal() {
        assert_linearizable(&[
            unknown(1, LOCK, lock(1), (0, 10)),
            ok(2, LOCK, lock(2), Ret::Fence(None), (20, 30)),
            ok(
                3,
                LOCK,
                Call::Read,
                Ret::Info {
                    held: true,
                    fence: 1,
                },
                (40, 50),
            ),
        ]);
    }

    #[test]
    fn an_unknown_unlock_that_changes_nothing_when_invoked_may_take_effect_later() {
        assert_linearizable(&[
            unknown(1, LOCK, unlock(1), (0, 10)),
            ok(1, LOCK, lock(1), Ret::Fence(Some(1)), (20, 30)),
            ok(2, LOCK, lock(2), Ret::Fence(Some(2)), (40, 50)),
        ]);
    }

    #[test]
    fn failed_operations_are_ignored() {
        let history = [
            failed(1, ATOMIC, add(5), (0, 10)),
            ok(2, ATOMIC, Call::Read, Ret::Value(0), (20, 30)),
            // Failed before it was sent: its times and call need not make sense as an answer.
            failed(1, ATOMIC, add(7), (40, 35)),
            ok(2, ATOMIC, add(1), Ret::Value(1), (50, 60)),
        ];
        let verdict = assert_linearizable(&history);
        assert_eq!(verdict.operations(), 2);
        assert_eq!(verdict.objects[0].failed, 2);

        let mut applied = history;
        applied[0].outcome = Outcome::Ok(Ret::Value(5));
        stuck(&applied);

        // Unlike an unknown add, a failed one cannot explain a read that needs it.
        let needs_it = ok(2, ATOMIC, Call::Read, Ret::Value(5), (20, 30));
        assert_eq!(stuck(&[history[0], needs_it]).blocked, needs_it);
        assert_linearizable(&[unknown(1, ATOMIC, add(5), (0, 10)), needs_it]);
    }

    #[test]
    fn a_call_of_another_object_kind_is_an_invalid_history() {
        let stray = ok(1, ATOMIC, put(1), Ret::Entry(None), (20, 30));
        let verdict = check(
            &[ok(1, ATOMIC, add(1), Ret::Value(1), (0, 10)), stray],
            UNBOUNDED,
        );
        assert!(!verdict.linearizable());
        let ObjectResult::InvalidHistory { event, reason } = &verdict.objects[0].result else {
            panic!("expected an invalid history, got {verdict}");
        };
        assert_eq!(*event, stray);
        assert!(reason.contains("an atomic"), "{reason}");
        assert!(verdict.to_string().contains("invalid history"), "{verdict}");
    }

    #[test]
    fn an_answer_of_the_wrong_kind_or_time_is_an_invalid_history() {
        let cases = [
            ok(1, LOCK, Call::Read, Ret::Value(0), (0, 10)),
            ok(1, KEY, Call::Remove, Ret::Swapped(true), (0, 10)),
            ok(1, LOCK, unlock(1), Ret::Fence(None), (0, 10)),
            ok(1, KEY, Call::Read, Ret::Entry(None), (10, 5)),
            unknown(1, LOCK, add(1), (0, 10)),
        ];
        for case in cases {
            let verdict = check(&[case], UNBOUNDED);
            assert!(
                matches!(
                    verdict.objects[0].result,
                    ObjectResult::InvalidHistory { .. }
                ),
                "{case:?}: {verdict}"
            );
        }
    }

    #[test]
    fn search_out_of_budget_is_inconclusive_not_a_failure() {
        let history = [
            ok(1, ATOMIC, add(1), Ret::Value(3), (0, 100)),
            ok(2, ATOMIC, add(2), Ret::Value(2), (10, 90)),
            ok(3, ATOMIC, Call::Read, Ret::Value(3), (200, 210)),
        ];
        let enough = check(&history, UNBOUNDED);
        assert_eq!(enough.objects[0].result, ObjectResult::Linearizable);
        let steps = enough.objects[0].steps;
        assert!(steps > 3, "the search backtracks here ({steps} steps)");

        let verdict = check(&history, steps - 1);
        assert_eq!(verdict.objects[0].result, ObjectResult::Inconclusive);
        assert!(verdict.linearizable(), "inconclusive is not a failure");
        assert_eq!(verdict.inconclusive(), 1);
        assert_eq!(
            verdict.to_string(),
            "linearizable: 1 objects, 3 operations (0 unknown), 1 inconclusive"
        );
    }

    #[test]
    fn objects_are_checked_independently() {
        let other_key = Object::MapKey(1);
        let history = [
            ok(1, KEY, put(1), Ret::Entry(None), (0, 10)),
            ok(2, other_key, Call::Read, Ret::Entry(None), (20, 30)),
            ok(3, LOCK, lock(3), Ret::Fence(Some(1)), (0, 10)),
            ok(4, Object::Lock(1), lock(4), Ret::Fence(Some(1)), (20, 30)),
        ];
        assert_eq!(assert_linearizable(&history).object_count(), 4);

        let mut broken = history.to_vec();
        broken.push(ok(2, other_key, Call::Read, Ret::Entry(Some(1)), (40, 50)));
        let verdict = check(&broken, UNBOUNDED);
        let failed: Vec<Object> = verdict.failures().map(|report| report.object).collect();
        assert_eq!(failed, [other_key], "{verdict}");
    }

    #[test]
    fn display_summarises_a_linearizable_history() {
        let verdict = assert_linearizable(&[
            ok(1, ATOMIC, add(1), Ret::Value(1), (0, 10)),
            unknown(2, ATOMIC, add(1), (5, 20)),
            ok(1, KEY, put(1), Ret::Entry(None), (0, 10)),
            failed(3, KEY, Call::Remove, (0, 10)),
        ]);
        assert_eq!(
            verdict.to_string(),
            "linearizable: 2 objects, 3 operations (1 unknown), 0 inconclusive"
        );
    }

    #[test]
    fn display_of_a_failure_names_the_object_the_prefix_and_the_blocked_operation() {
        let verdict = check(
            &[
                ok(1, ATOMIC, add(5), Ret::Value(5), (0, 10)),
                ok(2, ATOMIC, Call::Read, Ret::Value(0), (20, 30)),
                // Pending with the read, and fits nowhere once the add of 5 is in.
                ok(3, ATOMIC, add(1), Ret::Value(1), (25, 40)),
                ok(1, KEY, put(1), Ret::Entry(None), (0, 10)),
            ],
            UNBOUNDED,
        );
        let text = verdict.to_string();
        assert!(
            text.starts_with("NOT linearizable: 1 of 2 objects failed"),
            "{text}"
        );
        for part in [
            "Atomic(0): not linearizable: at most 1 of 3 answered operations",
            "the object is then 5",
            "could not linearize:\n    p2 Read -> Value(0), 20..30 ns",
            concat!(
                "pending with it (no order of them gets it through):\n",
                "    p3 Add { delta: 1 } -> Value(1), 25..40 ns",
            ),
        ] {
            assert!(text.contains(part), "missing {part:?} in:\n{text}");
        }
    }

    /// A seeded xorshift64 generator: deterministic histories without a rand dependency.
    struct XorShift(u64);

    impl XorShift {
        fn new(seed: u64) -> Self {
            Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
        }

        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }

        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }

        fn chance(&mut self, per_mille: u64) -> bool {
            self.below(1000) < per_mille
        }

        fn pick<T: Copy>(&mut self, items: &[T]) -> T {
            items[self.below(items.len() as u64) as usize]
        }
    }

    /// The objects as written out by hand, independently of the checker's models: the oracle
    /// the random executions run against.
    #[derive(Default)]
    struct Reference {
        value: i64,
        entry: Option<u64>,
        holder: Option<(u32, u32)>,
        fence: u64,
    }

    impl Reference {
        fn answer(&mut self, object: Object, call: Call) -> Ret {
            match (object, call) {
                (Object::Atomic(_), Call::Read) => Ret::Value(self.value),
                (Object::MapKey(_), Call::Read) => Ret::Entry(self.entry),
                (_, Call::Read) => Ret::Info {
                    held: self.holder.is_some(),
                    fence: self.fence,
                },
                (_, Call::Add { delta }) => {
                    self.value = self.value.wrapping_add(delta);
                    Ret::Value(self.value)
                }
                (_, Call::Cas { expect, update }) => {
                    let swapped = self.value == expect;
                    if swapped {
                        self.value = update;
                    }
                    Ret::Swapped(swapped)
                }
                (_, Call::Put { value }) => Ret::Entry(self.entry.replace(value)),
                (_, Call::Remove) => Ret::Entry(self.entry.take()),
                (_, Call::TryLock { owner }) => match self.holder {
                    None => {
                        self.fence += 1;
                        self.holder = Some((owner, 1));
                        Ret::Fence(Some(self.fence))
                    }
                    Some((holder, count)) if holder == owner => {
                        self.holder = Some((owner, count + 1));
                        Ret::Fence(Some(self.fence))
                    }
                    Some(_) => Ret::Fence(None),
                },
                (_, Call::Unlock { owner }) => match self.holder {
                    Some((holder, count)) if holder == owner => {
                        self.holder = (count > 1).then_some((owner, count - 1));
                        Ret::Unlocked
                    }
                    _ => Ret::NotOwner,
                },
            }
        }
    }

    /// What a random history looks like.
    struct Shape {
        objects: Vec<Object>,
        processes: u32,
        ops: usize,
        /// The most time between two linearization points.
        gap: u64,
        /// The most time an operation spends on either side of its linearization point.
        spread: u64,
        unknown_per_mille: u64,
        failed_per_mille: u64,
        /// Atomics only add positive amounts and read (no swaps): their value only grows.
        growing: bool,
    }

    fn random_call(
        rng: &mut XorShift,
        object: Object,
        process: u32,
        now: &Reference,
        shape: &Shape,
        next_value: &mut u64,
    ) -> Call {
        let roll = rng.below(10);
        match object {
            Object::Atomic(_) if shape.growing => match roll {
                0..5 => add(1 + rng.below(9) as i64),
                _ => Call::Read,
            },
            Object::Atomic(_) => match roll {
                0..4 => add(rng.below(19) as i64 - 9),
                4..7 => Call::Read,
                _ => Call::Cas {
                    expect: now.value + i64::from(rng.chance(300)),
                    update: rng.below(100) as i64,
                },
            },
            Object::MapKey(_) => match roll {
                0..4 => {
                    *next_value += 1;
                    put(*next_value)
                }
                4..8 => Call::Read,
                _ => Call::Remove,
            },
            Object::Lock(_) => match roll {
                0..4 => lock(process),
                4..7 => unlock(process),
                _ => Call::Read,
            },
        }
    }

    /// A history of a real sequential execution: each operation takes effect at its own
    /// instant, strictly after the previous one, and is invoked and completes around it (its
    /// process running one operation at a time), so it is linearizable by construction.
    fn random_history(seed: u64, shape: &Shape) -> Vec<Event> {
        let mut rng = XorShift::new(seed);
        let mut objects: HashMap<Object, Reference> = HashMap::new();
        let mut free_at = vec![0; shape.processes as usize];
        let mut now = 0;
        let mut next_value = 0;
        let mut history = Vec::with_capacity(shape.ops);
        for _ in 0..shape.ops {
            let process = rng.below(u64::from(shape.processes)) as u32;
            let free = free_at[process as usize];
            now = (now + 1 + rng.below(shape.gap)).max(free);
            let object = rng.pick(&shape.objects);
            let reference = objects.entry(object).or_default();
            let call = random_call(&mut rng, object, process, reference, shape, &mut next_value);
            let invoked = now - rng.below((now - free).min(shape.spread) + 1);
            let completed = now + rng.below(shape.spread + 1);
            free_at[process as usize] = completed + 1;
            let outcome = if rng.chance(shape.failed_per_mille) {
                Outcome::Failed
            } else if rng.chance(shape.unknown_per_mille) {
                if rng.chance(500) {
                    reference.answer(object, call);
                }
                Outcome::Unknown
            } else {
                Outcome::Ok(reference.answer(object, call))
            };
            history.push(event(process, object, call, outcome, (invoked, completed)));
        }
        history
    }

    /// A result no state of the object ever has (values stay far below 2^40, puts are numbered
    /// from 1, tokens stay below a million).
    fn impossible(ret: Ret) -> Ret {
        match ret {
            Ret::Value(value) => Ret::Value(value + (1 << 40)),
            Ret::Entry(_) => Ret::Entry(Some(u64::MAX)),
            Ret::Info { held, fence } => Ret::Info {
                held,
                fence: fence + 1_000_000,
            },
            other => other,
        }
    }

    fn answered_reads(history: &[Event]) -> Vec<usize> {
        (0..history.len())
            .filter(|i| history[*i].call == Call::Read)
            .filter(|i| matches!(history[*i].outcome, Outcome::Ok(_)))
            .collect()
    }

    /// Checks that the corrupted read at `at` fails its object, and is named in the failure.
    fn assert_caught(history: &[Event], at: usize, seed: u64) {
        let verdict = check(history, 10_000_000);
        let failures: Vec<&ObjectReport> = verdict.failures().collect();
        assert_eq!(failures.len(), 1, "seed {seed}: {verdict}");
        assert_eq!(failures[0].object, history[at].object, "seed {seed}");
        let ObjectResult::NotLinearizable(stuck) = &failures[0].result else {
            panic!("seed {seed}: expected a failed search, got {verdict}");
        };
        let named = stuck.blocked == history[at] || stuck.concurrent.contains(&history[at]);
        assert!(
            named,
            "seed {seed}: the corrupted read is not named in {verdict}"
        );
    }

    #[test]
    fn random_executions_check_and_one_impossible_read_fails_them() {
        let kinds: [fn(u32) -> Object; 3] = [Object::Atomic, Object::MapKey, Object::Lock];
        for (k, kind) in kinds.into_iter().enumerate() {
            for seed in 0..20 {
                let seed = seed + 100 * k as u64;
                let shape = Shape {
                    objects: vec![kind(0), kind(1)],
                    processes: 5,
                    ops: 300,
                    gap: 10,
                    spread: 30,
                    unknown_per_mille: 30,
                    failed_per_mille: 20,
                    growing: false,
                };
                let mut history = random_history(seed, &shape);
                let verdict = check(&history, 10_000_000);
                assert!(verdict.linearizable(), "seed {seed}: {verdict}");
                assert_eq!(verdict.inconclusive(), 0, "seed {seed}: {verdict}");

                let mut rng = XorShift::new(seed);
                let at = rng.pick(&answered_reads(&history));
                if let Outcome::Ok(ret) = history[at].outcome {
                    history[at].outcome = Outcome::Ok(impossible(ret));
                }
                assert_caught(&history, at, seed);
            }
        }
    }

    #[test]
    fn random_growing_counter_with_one_stale_read_fails() {
        let shape = Shape {
            objects: vec![Object::Atomic(0)],
            processes: 6,
            ops: 400,
            gap: 5,
            spread: 40,
            unknown_per_mille: 30,
            failed_per_mille: 20,
            growing: true,
        };
        let mut caught = 0;
        for seed in 0..20 {
            let mut history = random_history(seed, &shape);
            assert!(check(&history, 10_000_000).linearizable(), "seed {seed}");

            // A read below the sum of the adds acknowledged before it was invoked is stale
            // whatever the order: amounts are positive, unknown adds only raise the value.
            let mut rng = XorShift::new(seed);
            let at = rng.pick(&answered_reads(&history));
            let floor: i64 = history
                .iter()
                .filter(|e| e.completed_ns < history[at].invoked_ns)
                .filter_map(|e| match (e.call, e.outcome) {
                    (Call::Add { delta }, Outcome::Ok(_)) => Some(delta),
                    _ => None,
                })
                .sum();
            if floor == 0 {
                continue;
            }
            history[at].outcome = Outcome::Ok(Ret::Value(rng.below(floor as u64) as i64));
            assert_caught(&history, at, seed);
            caught += 1;
        }
        assert!(caught >= 15, "only {caught} seeds had a read to make stale");
    }

    #[test]
    fn fifty_thousand_operations_over_thirty_objects_check_quickly() {
        let objects = (0..10)
            .flat_map(|n| [Object::Atomic(n), Object::MapKey(n), Object::Lock(n)])
            .collect();
        let shape = Shape {
            objects,
            processes: 8,
            ops: 50_000,
            gap: 4,
            spread: 60,
            unknown_per_mille: 5,
            failed_per_mille: 5,
            growing: false,
        };
        let history = random_history(7, &shape);
        let started = Instant::now();
        let verdict = check(&history, 10_000_000);
        let took = started.elapsed();
        eprintln!("{verdict} in {took:?}");
        assert!(verdict.linearizable(), "{verdict}");
        assert_eq!(verdict.inconclusive(), 0, "{verdict}");
        assert_eq!(verdict.object_count(), 30);
        // Well under a second in a debug build on a laptop; the bound catches a blow-up (a
        // search going exponential), not a slow machine.
        assert!(took.as_secs() < 30, "took {took:?}");
    }
}
