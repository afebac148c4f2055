//! Driving an embedded member: callers run as glommio tasks on every shard (thread-per-core: a
//! caller's own-shard operations run inline, the others take one channel hop), each keeping one
//! operation in flight, so a shard has `callers` operations in flight.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Instant;

use anyhow::Context;
use corecast_engine::{BlockingMember, Config, Member, ShardId};
use corecast_services::builtin::with_builtin_services;
use corecast_services::counter::Counter;
use corecast_services::kv::KvStore;
use corecast_services::map::Map;

use crate::report::Measured;
use crate::workload::{counter_names, keys, Rng, Workload, WorkloadSpec};

/// A caller lets the shard's other tasks run after this many operations, since operations on
/// its own shard complete inline and would otherwise never yield.
const YIELD_EVERY: u32 = 16;

/// An embedded member with the benchmark's objects opened.
pub struct Bench {
    member: BlockingMember,
    counters: Vec<Counter>,
    store: KvStore,
    map: Map,
    keys: Vec<Vec<u8>>,
}

impl Bench {
    /// Starts the member and opens `spec.counters` counters and the `bench` store.
    ///
    /// Errors: the member's start error, or an invocation error while opening objects.
    /// With `members`, a smart client connected to that cluster instead of an embedded member:
    /// the callers run on the client's shards and every operation crosses the network.
    pub fn start(config: Config, spec: &WorkloadSpec, members: &[String]) -> anyhow::Result<Self> {
        let builder = with_builtin_services(Member::builder(config));
        let member: BlockingMember = if members.is_empty() {
            builder
                .start_blocking()
                .context("cannot start the embedded member")?
        } else {
            let client = futures_lite::future::block_on(corecast_net::start_client(
                builder,
                members,
                std::time::Duration::from_secs(10),
            ))
            .context("cannot connect to the cluster")?;
            client.into()
        };
        let counters = counter_names(spec.counters)
            .iter()
            .map(|name| member.object::<Counter>(name))
            .collect::<Result<Vec<_>, _>>()?;
        let store = member.object::<KvStore>("bench")?;
        let map = member.object::<Map>("bench")?;
        Ok(Self {
            member,
            counters,
            store,
            map,
            keys: keys(spec.keys),
        })
    }

    /// The member's shard count.
    pub fn shards(&self) -> u32 {
        self.member.member().invoker().shard_count().get()
    }

    /// The member's partition count.
    pub fn partitions(&self) -> u32 {
        self.member.member().invoker().partition_count().get()
    }

    /// Runs `workload` on every shard and merges the shards' measurements.
    ///
    /// Errors: a shard stopped before the run finished.
    pub fn run(&self, workload: Workload, spec: &WorkloadSpec) -> anyhow::Result<Measured> {
        if workload.reads_keys() {
            self.fill(workload, spec)?;
        }
        let invoker = self.member.member().invoker();
        let start = Instant::now();
        let window = Window {
            measure_from: start + spec.warmup,
            end: start + spec.warmup + spec.duration,
        };
        let runs: Vec<_> = (0..self.shards())
            .map(|shard| {
                let load = ShardLoad {
                    workload,
                    counters: self.counters.clone(),
                    store: self.store.clone(),
                    map: self.map.clone(),
                    keys: self.keys.clone(),
                    value: vec![7u8; spec.value_size],
                    window,
                    seed: u64::from(shard) + 1,
                };
                let callers = spec.callers;
                invoker.run_on(ShardId(shard), move || load.drive(callers))
            })
            .collect();
        let mut total = Measured::new();
        for run in runs {
            total.merge(&self.member.block_on(run)?);
        }
        total.elapsed = spec.duration;
        Ok(total)
    }

    /// Puts every key once, so that gets hit.
    fn fill(&self, workload: Workload, spec: &WorkloadSpec) -> anyhow::Result<()> {
        let value = vec![7u8; spec.value_size];
        if workload == Workload::MapGet {
            for batch in self.keys.chunks(10_000) {
                let entries: Vec<(Vec<u8>, Vec<u8>)> =
                    batch.iter().map(|k| (k.clone(), value.clone())).collect();
                self.member.block_on(self.map.put_all(&entries))?;
            }
            return Ok(());
        }
        for key in &self.keys {
            self.member.block_on(self.store.put(key, &value))?;
        }
        Ok(())
    }

    /// Shuts the member down.
    pub fn shutdown(self) {
        self.member.shutdown();
    }
}

/// When measurement starts and when the run ends (the same instants on every shard).
#[derive(Clone, Copy)]
struct Window {
    measure_from: Instant,
    end: Instant,
}

/// One shard's share of a run: what every caller on the shard needs.
struct ShardLoad {
    workload: Workload,
    counters: Vec<Counter>,
    store: KvStore,
    map: Map,
    keys: Vec<Vec<u8>>,
    value: Vec<u8>,
    window: Window,
    seed: u64,
}

impl ShardLoad {
    /// Runs `callers` caller tasks on this shard until the window ends.
    async fn drive(self, callers: usize) -> Measured {
        let load = Rc::new(self);
        let measured = Rc::new(RefCell::new(Measured::new()));
        let tasks: Vec<_> = (0..callers)
            .map(|caller| {
                let (load, measured) = (load.clone(), measured.clone());
                glommio::spawn_local(async move { load.call(caller as u64, &measured).await })
            })
            .collect();
        for task in tasks {
            task.await;
        }
        let result = measured.borrow().clone();
        result
    }

    async fn call(&self, caller: u64, measured: &RefCell<Measured>) {
        let mut rng = Rng::new(self.seed * 1_000_003 + caller);
        let mut done = 0u32;
        loop {
            let t0 = Instant::now();
            if t0 >= self.window.end {
                return;
            }
            let ok = self.one(&mut rng).await;
            if t0 >= self.window.measure_from {
                measured.borrow_mut().record_result(t0.elapsed(), ok);
            }
            done += 1;
            if done % YIELD_EVERY == 0 {
                futures_lite::future::yield_now().await;
            }
        }
    }

    async fn one(&self, rng: &mut Rng) -> bool {
        match self.workload {
            Workload::CounterInc => {
                let counter = &self.counters[rng.below(self.counters.len())];
                counter.inc(1).await.is_ok()
            }
            Workload::KvPut => {
                let key = &self.keys[rng.below(self.keys.len())];
                self.store.put(key, &self.value).await.is_ok()
            }
            Workload::KvGet => {
                let key = &self.keys[rng.below(self.keys.len())];
                matches!(self.store.get(key).await, Ok(Some(_)))
            }
            Workload::MapPut => {
                let key = &self.keys[rng.below(self.keys.len())];
                self.map.set(key, &self.value).await.is_ok()
            }
            Workload::MapGet => {
                let key = &self.keys[rng.below(self.keys.len())];
                matches!(self.map.get(key).await, Ok(Some(_)))
            }
        }
    }
}
