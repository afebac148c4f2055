//! Driving the load: callers run as glommio tasks on every shard of the load's members (an
//! embedded cluster of `--cluster-size` members, or smart clients of a running cluster). Each
//! caller keeps one operation in flight (closed loop) or sends on its share of `--rate` (open
//! loop). On an embedded member a caller's own-shard operations run inline and the others take
//! one channel hop; through a client every operation crosses the network, pipelined on the
//! client shard's one connection per member shard.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use corecast_engine::{BlockingMember, Config, Member, ShardId};
use corecast_services::atomic::AtomicLong;
use corecast_services::builtin::with_builtin_services;
use corecast_services::counter::Counter;
use corecast_services::kv::KvStore;
use corecast_services::map::update::Updated;
use corecast_services::map::Map;

use crate::load::{caller, Pace, Window};
use crate::report::Measured;
use crate::workload::{counter_names, keys, Locality, Picker, Rng, Workload, WorkloadSpec};

/// Where the load runs.
#[derive(Clone, Debug, serde::Serialize)]
#[serde(rename_all = "kebab-case", tag = "mode")]
pub enum Target {
    /// An in-process cluster of this many members.
    Embedded {
        /// Members.
        cluster_size: usize,
    },
    /// A running cluster, through smart clients.
    Networked {
        /// Any of its members.
        members: Vec<String>,
        /// Load threads (shards) per client.
        threads: u32,
        /// Connections per member shard: clients × threads.
        connections: u32,
    },
}

/// The members (or clients) the load runs on, with the benchmark's objects opened.
pub struct Bench {
    load: Vec<BlockingMember>,
    objects: Vec<Objects>,
    keys: Arc<Vec<Vec<u8>>>,
}

/// One member's proxies.
#[derive(Clone)]
struct Objects {
    counters: Vec<Counter>,
    atomics: Vec<AtomicLong>,
    store: KvStore,
    map: Map,
    /// map-incr's map: its values stay decimal integers whatever the other workloads write.
    sums: Map,
}

impl Objects {
    fn open(m: &BlockingMember, spec: &WorkloadSpec) -> anyhow::Result<Self> {
        let names = counter_names(spec.counters);
        Ok(Self {
            counters: names
                .iter()
                .map(|n| m.object::<Counter>(n))
                .collect::<Result<_, _>>()?,
            atomics: names
                .iter()
                .map(|n| m.object::<AtomicLong>(n))
                .collect::<Result<_, _>>()?,
            store: m.object::<KvStore>("bench")?,
            map: m.object::<Map>("bench")?,
            sums: m.object::<Map>("bench-incr")?,
        })
    }
}

impl Bench {
    /// Starts the embedded cluster, or connects the clients, and opens the objects.
    ///
    /// Errors: a member's start error, a cluster that cannot be reached, or an invocation error
    /// while opening objects.
    pub fn start(config: Config, spec: &WorkloadSpec, target: &Target) -> anyhow::Result<Self> {
        let load: Vec<BlockingMember> = match target {
            Target::Embedded { cluster_size: 1 } => {
                vec![with_builtin_services(Member::builder(config))
                    .start_blocking()
                    .context("cannot start the embedded member")?]
            }
            Target::Embedded { cluster_size } => {
                let first = crate::migration::start(&config, &[])?;
                let seed = first.member().invoker().member().address;
                let mut all = vec![first];
                for _ in 1..*cluster_size {
                    all.push(crate::migration::start(&config, &[seed])?);
                }
                wait_balanced(&all)?;
                all
            }
            Target::Networked {
                members,
                threads,
                connections,
            } => {
                let clients = (connections / threads).max(1);
                (0..clients)
                    .map(|_| {
                        let mut config = config.clone();
                        config.shards = Some(*threads);
                        let builder = with_builtin_services(Member::builder(config));
                        let client = futures_lite::future::block_on(corecast_net::start_client(
                            builder,
                            members,
                            Duration::from_secs(10),
                        ))
                        .context("cannot connect to the cluster")?;
                        Ok(BlockingMember::from(client))
                    })
                    .collect::<anyhow::Result<_>>()?
            }
        };
        let objects = load
            .iter()
            .map(|m| Objects::open(m, spec))
            .collect::<anyhow::Result<_>>()?;
        Ok(Self {
            load,
            objects,
            keys: Arc::new(keys(spec.keys)),
        })
    }

    /// Load threads (shards) in all.
    pub fn shards(&self) -> u32 {
        self.load
            .iter()
            .map(|m| m.member().invoker().shard_count().get())
            .sum()
    }

    /// The shard that holds a counter or key, for a run on one member (`None` for a cluster or
    /// through clients, whose operations also cross members).
    pub fn owner(&self) -> Option<impl Fn(&[u8]) -> usize + Sync> {
        let [member] = self.load.as_slice() else {
            return None;
        };
        Some(owner_shard(member.member().invoker()))
    }

    /// The partition count.
    pub fn partitions(&self) -> u32 {
        self.load
            .first()
            .map_or(0, |m| m.member().invoker().partition_count().get())
    }

    /// Runs `workload` on every load shard and merges the shards' measurements.
    ///
    /// Errors: a shard stopped before the run finished, or filling the keys failed.
    pub fn run(
        &self,
        workload: Workload,
        spec: &WorkloadSpec,
        server: Option<u32>,
    ) -> anyhow::Result<Measured> {
        if workload.reads_keys() {
            self.fill(workload, spec)?;
        }
        let start = Instant::now() + Duration::from_millis(20);
        let window = Window {
            measure_from: start + spec.warmup,
            end: start + spec.warmup + spec.duration,
        };
        let total_callers = self.shards() as usize * spec.callers;
        let progress = crate::progress::Progress::start(&workload.to_string(), start, window.end);
        // The server's CPU time when measuring starts, read on a thread of its own.
        let measure_from = window.measure_from;
        let cpu_from = server.map(|pid| {
            std::thread::spawn(move || {
                std::thread::sleep(measure_from.saturating_duration_since(Instant::now()));
                crate::cpu::used(pid)
            })
        });
        let mut runs = Vec::new();
        let mut first_caller = 0;
        for (m, objects) in self.load.iter().zip(&self.objects) {
            let invoker = m.member().invoker();
            for shard in 0..invoker.shard_count().get() {
                let (objects, keys) = match spec.locality {
                    Locality::Any => (objects.clone(), self.keys.clone()),
                    Locality::Shard => self.local_to(invoker, ShardId(shard), objects, spec)?,
                };
                let load = ShardLoad {
                    workload,
                    key_picker: Picker::new(keys.len(), spec.key_dist),
                    counter_picker: Picker::new(objects.counters.len(), spec.key_dist),
                    objects,
                    keys,
                    read_ratio: spec.read_ratio,
                    value: vec![7u8; spec.value_size],
                    window,
                    seed: first_caller as u64 + 1,
                };
                let paces: Vec<Pace> = (0..spec.callers)
                    .map(|i| match spec.rate {
                        Some(rate) => Pace::share(rate, first_caller + i, total_callers, start),
                        None => Pace::closed(),
                    })
                    .collect();
                first_caller += spec.callers;
                runs.push(Box::pin(
                    invoker.run_on(ShardId(shard), move || load.drive(paces)),
                ));
            }
        }
        // Every shard's job is sent before any is awaited: a shard started late would run
        // behind its schedule (or, closed loop, after the window).
        let mut total = Measured::new();
        let results = futures_lite::future::block_on(join_all(runs));
        // The measured operations took until the last one answered: in an open loop offered
        // more than the cluster serves that is long after the window (every scheduled operation
        // is still sent, late), and throughput is what was served in that time, not the rate.
        let elapsed = window.measure_from.elapsed().max(spec.duration);
        let cpu_to = server.map(crate::cpu::used);
        progress.finish();
        if let (Some(from), Some(to)) = (cpu_from, cpu_to) {
            let from = from
                .join()
                .map_err(|_| anyhow::anyhow!("the CPU sampling thread panicked"))??;
            total.server_cpu = Some(to?.saturating_sub(from));
        }
        for run in results {
            total.merge(&run?);
        }
        total.elapsed = elapsed;
        Ok(total)
    }

    /// The counters and keys whose partitions shard `shard` holds (`--locality shard`).
    ///
    /// Errors: none of them hashes to the shard (too few counters or keys).
    fn local_to(
        &self,
        invoker: &corecast_engine::Invoker,
        shard: ShardId,
        objects: &Objects,
        spec: &WorkloadSpec,
    ) -> anyhow::Result<(Objects, Arc<Vec<Vec<u8>>>)> {
        let owner = owner_shard(invoker);
        let here = |bytes: &[u8]| owner(bytes) == shard.0 as usize;
        let names = counter_names(spec.counters);
        let mine: Vec<bool> = names.iter().map(|n| here(n.as_bytes())).collect();
        fn pick<T: Clone>(all: &[T], mine: &[bool]) -> Vec<T> {
            all.iter()
                .zip(mine)
                .filter(|(_, &m)| m)
                .map(|(o, _)| o.clone())
                .collect()
        }
        let objects = Objects {
            counters: pick(&objects.counters, &mine),
            atomics: pick(&objects.atomics, &mine),
            store: objects.store.clone(),
            map: objects.map.clone(),
            sums: objects.sums.clone(),
        };
        let keys: Vec<Vec<u8>> = self.keys.iter().filter(|k| here(k)).cloned().collect();
        anyhow::ensure!(
            !keys.is_empty() && !objects.counters.is_empty(),
            "--locality shard: shard {} holds none of the {} counters or {} keys; use more",
            shard.0,
            spec.counters,
            spec.keys
        );
        Ok((objects, Arc::new(keys)))
    }

    /// Puts every key once, so that gets hit.
    fn fill(&self, workload: Workload, spec: &WorkloadSpec) -> anyhow::Result<()> {
        let (Some(m), Some(objects)) = (self.load.first(), self.objects.first()) else {
            return Ok(());
        };
        let value = vec![7u8; spec.value_size];
        if workload == Workload::KvGet {
            for key in self.keys.iter() {
                m.block_on(objects.store.put(key, &value))?;
            }
            return Ok(());
        }
        for batch in self.keys.chunks(10_000) {
            let entries: Vec<(Vec<u8>, Vec<u8>)> =
                batch.iter().map(|k| (k.clone(), value.clone())).collect();
            m.block_on(objects.map.put_all(&entries))?;
        }
        Ok(())
    }

    /// Shuts the members (or clients) down.
    pub fn shutdown(self) {
        for m in self.load.into_iter().rev() {
            m.shutdown();
        }
    }
}

/// The index of the shard of `invoker`'s member that holds a counter or key.
fn owner_shard(invoker: &corecast_engine::Invoker) -> impl Fn(&[u8]) -> usize + Sync {
    let (partitions, shards) = (invoker.partition_count(), invoker.shard_count());
    move |name: &[u8]| shards.shard_of(partitions.partition_of(name)).0 as usize
}

/// Polls every future until all are done; their outputs in order.
async fn join_all<T>(
    mut futures: Vec<std::pin::Pin<Box<impl std::future::Future<Output = T>>>>,
) -> Vec<T> {
    let mut outputs: Vec<Option<T>> = futures.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (f, out) in futures.iter_mut().zip(outputs.iter_mut()) {
            if out.is_none() {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => *out = Some(v),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    outputs.into_iter().flatten().collect()
}

/// Waits until an embedded cluster's partitions are balanced and nothing migrates.
fn wait_balanced(members: &[BlockingMember]) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let settled = members.iter().all(|m| {
            m.member()
                .extension::<corecast_net::Network>()
                .is_some_and(|n| {
                    let s = n.status();
                    s.members.len() == members.len()
                        && s.migrations.planned + s.migrations.in_flight == 0
                        && s.members.iter().all(|x| x.owned > 0)
                })
        });
        if settled {
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "the embedded cluster did not settle in 60 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// One shard's share of a run: what every caller on the shard needs.
struct ShardLoad {
    workload: Workload,
    objects: Objects,
    keys: Arc<Vec<Vec<u8>>>,
    key_picker: Picker,
    counter_picker: Picker,
    read_ratio: f64,
    value: Vec<u8>,
    window: Window,
    seed: u64,
}

impl ShardLoad {
    /// Runs one caller task per pace on this shard until the window ends.
    async fn drive(self, paces: Vec<Pace>) -> Measured {
        let load = Rc::new(self);
        let measured = Rc::new(RefCell::new(Measured::new()));
        let tasks: Vec<_> = paces
            .into_iter()
            .enumerate()
            .map(|(i, pace)| {
                let (load, measured) = (load.clone(), measured.clone());
                glommio::spawn_local(async move {
                    let rng = RefCell::new(Rng::new(load.seed * 1_000_003 + i as u64));
                    caller(pace, load.window, &measured, || load.one(&rng)).await;
                })
            })
            .collect();
        for task in tasks {
            task.await;
        }
        let result = measured.borrow().clone();
        result
    }

    async fn one(&self, rng: &RefCell<Rng>) -> bool {
        let o = &self.objects;
        // Draw only what the workload uses: the draws are part of every measured operation.
        if self.workload.uses_counters() {
            let c = self.counter_picker.pick(&mut rng.borrow_mut());
            return match self.workload {
                Workload::AtomicAdd => o.atomics[c].add_and_get(1).await.is_ok(),
                _ => o.counters[c].inc(1).await.is_ok(),
            };
        }
        let (key, read) = {
            let mut rng = rng.borrow_mut();
            let key = &self.keys[self.key_picker.pick(&mut rng)];
            let read = self.workload == Workload::MapMixed && rng.unit() < self.read_ratio;
            (key, read)
        };
        match self.workload {
            Workload::KvPut => o.store.put(key, &self.value).await.is_ok(),
            Workload::KvGet => matches!(o.store.get(key).await, Ok(Some(_))),
            Workload::MapGet => matches!(o.map.get(key).await, Ok(Some(_))),
            Workload::MapMixed if read => matches!(o.map.get(key).await, Ok(Some(_))),
            Workload::MapIncr => {
                matches!(o.sums.add_integer(key, 1).await, Ok(Updated::Integer(_)))
            }
            _ => o.map.set(key, &self.value).await.is_ok(),
        }
    }
}
