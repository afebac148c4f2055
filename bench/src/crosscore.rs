//! The floor for operations that cross cores: as many threads as the member has shards, each
//! holding in a bare map ([`Bare`]) the counters or keys its shard's partitions hold, each with
//! the same number of callers in flight, drawing among all of them as `--locality any` does. An
//! operation on another thread's counter travels there and its answer back, gathered per round
//! into one message per thread each way (as a shard's outbox sends them), over `std::sync::mpsc`.
//! No async runtime, no archives, no partition table: what handing work between cores costs on
//! this machine, the floor a multi-shard member at `--locality any` is compared with besides the
//! one-thread map.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::time::Instant;

use crate::baseline::Bare;
use crate::report::Measured;
use crate::workload::{Rng, Workload, WorkloadSpec};

/// One operation for another thread: the caller waiting for it, the counter or key, a read?
#[derive(Clone, Copy)]
struct Call {
    caller: u32,
    index: u32,
    read: bool,
}

enum Msg {
    /// Calls from thread `from`.
    Calls { from: usize, calls: Vec<Call> },
    /// The callers whose calls were run.
    Answers(Vec<u32>),
}

/// Runs `workload` on `threads` threads for the spec's warm-up and duration; `owner` names the
/// thread (shard) that holds a counter or key. The measurements of every thread, merged.
pub fn run(
    workload: Workload,
    spec: &WorkloadSpec,
    threads: usize,
    owner: impl Fn(&[u8]) -> usize + Sync,
) -> Measured {
    run_counted(workload, spec, threads, owner).0
}

/// [`run`], and every thread's data when it stopped.
fn run_counted(
    workload: Workload,
    spec: &WorkloadSpec,
    threads: usize,
    owner: impl Fn(&[u8]) -> usize + Sync,
) -> (Measured, Vec<Bare>) {
    let threads = threads.max(1);
    let (senders, inboxes): (Vec<Sender<Msg>>, Vec<Receiver<Msg>>) =
        (0..threads).map(|_| channel()).unzip();
    let start = Instant::now();
    let stopped = AtomicUsize::new(0);
    let owner = &owner;
    let (senders, stopped) = (&senders, &stopped);
    let ends: Vec<(Measured, Bare)> = std::thread::scope(|s| {
        let handles: Vec<_> = inboxes
            .into_iter()
            .enumerate()
            .map(|(me, inbox)| {
                s.spawn(move || {
                    let bare = Bare::new(workload, spec, |name| owner(name) == me);
                    let owners: Vec<usize> = (0..bare.len()).map(|i| owner(bare.name(i))).collect();
                    let lane = Lane {
                        me,
                        owners,
                        inbox,
                        senders: senders.clone(),
                        stopped,
                    };
                    lane.drive(bare, spec, start)
                })
            })
            .collect();
        handles.into_iter().filter_map(|h| h.join().ok()).collect()
    });
    let mut total = Measured::new();
    let mut data = Vec::with_capacity(ends.len());
    for (measured, bare) in ends {
        total.merge(&measured);
        data.push(bare);
    }
    total.elapsed = spec.duration;
    (total, data)
}

/// One thread of the floor.
struct Lane<'a> {
    me: usize,
    /// The thread holding each counter or key.
    owners: Vec<usize>,
    inbox: Receiver<Msg>,
    senders: Vec<Sender<Msg>>,
    /// Threads past the window's end: each keeps answering until all are.
    stopped: &'a AtomicUsize,
}

impl Lane<'_> {
    fn drive(self, mut bare: Bare, spec: &WorkloadSpec, start: Instant) -> (Measured, Bare) {
        let threads = self.senders.len();
        let measure_from = start + spec.warmup;
        let end = measure_from + spec.duration;
        let mut rng = Rng::new(self.me as u64 * 1_000_003 + 7);
        let mut measured = Measured::new();
        // When each caller's call to another thread was sent; `None`: it is free to go on.
        let mut waiting: Vec<Option<Instant>> = vec![None; spec.callers.max(1)];
        let mut calls: Vec<Vec<Call>> = vec![Vec::new(); threads];
        let mut answers: Vec<Vec<u32>> = vec![Vec::new(); threads];
        let mut done = false;
        loop {
            // Each free caller runs until its operation is another thread's (as a task does
            // until it waits).
            for (caller, wait) in waiting.iter_mut().enumerate() {
                if done || wait.is_some() {
                    continue;
                }
                loop {
                    let t0 = Instant::now();
                    if t0 >= end {
                        done = true;
                        self.stopped.fetch_add(1, Ordering::AcqRel);
                        break;
                    }
                    let (i, read) = bare.draw(&mut rng);
                    let to = self.owners.get(i).copied().unwrap_or(self.me);
                    // Another thread's: sent there, the caller waits. Else run here.
                    if let Some(out) = calls.get_mut(to).filter(|_| to != self.me) {
                        out.push(Call {
                            caller: caller as u32,
                            index: i as u32,
                            read,
                        });
                        *wait = Some(t0);
                        break;
                    }
                    let ok = bare.apply(i, read);
                    if t0 >= measure_from {
                        measured.record_result(t0.elapsed(), ok);
                    }
                }
            }
            let calls_sent = self.send(&mut calls, |calls| Msg::Calls {
                from: self.me,
                calls,
            });
            let mut idle = calls_sent == 0;
            while let Ok(msg) = self.inbox.try_recv() {
                idle = false;
                match msg {
                    Msg::Calls { from, calls } => {
                        for call in &calls {
                            bare.apply(call.index as usize, call.read);
                            if let Some(back) = answers.get_mut(from) {
                                back.push(call.caller);
                            }
                        }
                    }
                    Msg::Answers(callers) => {
                        let now = Instant::now();
                        let sent = callers
                            .iter()
                            .filter_map(|&c| waiting.get_mut(c as usize).and_then(Option::take));
                        for t0 in sent.filter(|t0| *t0 >= measure_from) {
                            measured.record(now - t0);
                        }
                    }
                }
            }
            self.send(&mut answers, Msg::Answers);
            if done && self.stopped.load(Ordering::Acquire) >= threads {
                break;
            }
            if idle {
                // Every caller waits and nothing came: let a thread sharing this core run.
                std::thread::yield_now();
            }
        }
        measured.elapsed = spec.duration;
        (measured, bare)
    }

    /// Sends what each thread is owed, one message per thread; how many messages.
    fn send<T>(&self, queued: &mut [Vec<T>], msg: impl Fn(Vec<T>) -> Msg) -> usize {
        let mut sent = 0;
        for (to, items) in queued.iter_mut().enumerate() {
            if items.is_empty() {
                continue;
            }
            sent += 1;
            let items = std::mem::replace(items, Vec::with_capacity(items.capacity()));
            if let Some(sender) = self.senders.get(to) {
                // A thread that ended no longer reads: its callers are done too.
                let _ = sender.send(msg(items));
            }
        }
        sent
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workload::{KeyDist, Locality};
    use std::time::Duration;

    fn spec(callers: usize) -> WorkloadSpec {
        WorkloadSpec {
            counters: 100,
            keys: 1_000,
            value_size: 16,
            callers,
            key_dist: KeyDist::Uniform,
            locality: Locality::Any,
            read_ratio: 0.5,
            rate: None,
            warmup: Duration::from_millis(50),
            duration: Duration::from_millis(200),
        }
    }

    fn by_last_digit(name: &[u8]) -> usize {
        usize::from(name.last().copied().unwrap_or(0) % 2)
    }

    #[test]
    fn every_increment_lands_once_on_the_thread_that_holds_its_counter() {
        let (measured, data) = run_counted(Workload::CounterInc, &spec(8), 2, by_last_digit);
        assert!(measured.count() > 100, "only {} ops", measured.count());
        assert_eq!(measured.errors, 0, "every counter is held somewhere");
        let counted: i64 = data.iter().map(Bare::counted).sum();
        // Operations before the window, and calls answered after a thread stopped counting, are
        // counted but not measured; never the other way round.
        assert!(
            counted >= measured.count() as i64,
            "{counted} increments for {} measured operations",
            measured.count()
        );
        assert!(
            data.iter().all(|d| d.counted() > 0),
            "both threads ran some"
        );
    }

    #[test]
    fn gets_find_every_key_where_it_is_held_and_read_it_whole() {
        let spec = spec(8);
        let (measured, _) = run_counted(Workload::MapGet, &spec, 2, by_last_digit);
        assert!(measured.count() > 100, "only {} ops", measured.count());
        assert_eq!(measured.errors, 0, "a get found no value");
        let mut one = Bare::new(Workload::MapGet, &spec, |_| true);
        assert!((0..one.len()).all(|i| one.apply(i, true)));
        assert_eq!(one.copied.len(), spec.value_size, "the value copied out");
        let mut none = Bare::new(Workload::MapGet, &spec, |_| false);
        assert!(!none.apply(0, true), "a key this thread does not hold");
    }

    #[test]
    fn a_thread_that_holds_nothing_has_every_operation_run_by_the_other() {
        let (measured, data) = run_counted(Workload::CounterInc, &spec(4), 2, |_| 1);
        assert!(measured.count() > 100 && measured.errors == 0);
        assert_eq!(data[0].counted(), 0, "thread 0 holds no counter");
        assert!(data[1].counted() >= measured.count() as i64);
    }
}
