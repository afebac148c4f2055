//! What the benchmark runs: the workloads, their parameters, and a cheap key generator.

use std::fmt;
use std::time::Duration;

/// One benchmark workload.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Workload {
    /// `Counter::inc(1)` on a uniformly chosen counter.
    CounterInc,
    /// `KvStore::put` of a fixed-size value under a uniformly chosen key.
    KvPut,
    /// `KvStore::get` of a uniformly chosen key (all keys present).
    KvGet,
    /// `Map::set` of a fixed-size value under a uniformly chosen key.
    MapPut,
    /// `Map::get` of a uniformly chosen key (all keys present).
    MapGet,
}

impl Workload {
    /// Whether it reads keys that must be there first.
    pub fn reads_keys(self) -> bool {
        matches!(self, Workload::KvGet | Workload::MapGet)
    }
}

impl fmt::Display for Workload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Workload::CounterInc => "counter-inc",
            Workload::KvPut => "kv-put",
            Workload::KvGet => "kv-get",
            Workload::MapPut => "map-put",
            Workload::MapGet => "map-get",
        })
    }
}

/// The parameters every target runs a workload with.
#[derive(Clone, Debug)]
pub struct WorkloadSpec {
    /// Distinct counters.
    pub counters: usize,
    /// Distinct keys.
    pub keys: usize,
    /// Bytes per value.
    pub value_size: usize,
    /// Concurrent callers per shard.
    pub callers: usize,
    /// Unmeasured time before measuring.
    pub warmup: Duration,
    /// Measured time.
    pub duration: Duration,
}

/// The counter names, `c0`, `c1`, …
pub fn counter_names(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("c{i}")).collect()
}

/// The keys, `key-0`, `key-1`, … as bytes.
pub fn keys(n: usize) -> Vec<Vec<u8>> {
    (0..n).map(|i| format!("key-{i}").into_bytes()).collect()
}

/// xorshift64*: a few cycles per draw, so key choice does not show in the latencies.
pub struct Rng(u64);

impl Rng {
    /// A generator seeded with `seed` (any value; zero is remapped).
    pub fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }

    /// A uniform index below `n`.
    pub fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 32) as usize % n
    }
}
