//! What the benchmark runs: the workloads, their parameters, key choice (uniform or zipfian) and
//! a cheap random generator.

use std::fmt;
use std::time::Duration;

/// One benchmark workload.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Workload {
    /// `Counter::inc(1)` on a chosen counter.
    CounterInc,
    /// `KvStore::put` of a fixed-size value under a chosen key.
    KvPut,
    /// `KvStore::get` of a chosen key (all keys present).
    KvGet,
    /// `Map::set` of a fixed-size value under a chosen key.
    MapPut,
    /// `Map::get` of a chosen key (all keys present).
    MapGet,
    /// `Map::get` with probability `--read-ratio`, else `Map::set`.
    MapMixed,
    /// `AtomicLong::add_and_get(1)` on a chosen AtomicLong.
    AtomicAdd,
    /// `Map::add_integer(key, 1)` on a chosen key of a map of its own (Redis' INCR; a missing
    /// key counts as 0).
    MapIncr,
}

impl Workload {
    /// Whether it reads keys that must be there first.
    pub fn reads_keys(self) -> bool {
        matches!(
            self,
            Workload::KvGet | Workload::MapGet | Workload::MapMixed
        )
    }

    /// Whether it picks among counters (or AtomicLongs) rather than keys.
    pub fn uses_counters(self) -> bool {
        matches!(self, Workload::CounterInc | Workload::AtomicAdd)
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
            Workload::MapMixed => "map-mixed",
            Workload::AtomicAdd => "atomic-add",
            Workload::MapIncr => "map-incr",
        })
    }
}

/// How keys (and counters) are chosen.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum KeyDist {
    /// Every key equally likely.
    Uniform,
    /// Key `i` with probability ∝ 1 / (i + 1)^theta (YCSB's zipfian), 0 < theta < 1.
    Zipfian {
        /// The skew.
        theta: f64,
    },
}

/// Which keys (and counters) an embedded shard's callers use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Locality {
    /// All of them: on a member of N shards, N-1 in N operations take a channel hop to the
    /// shard that owns their partition.
    Any,
    /// Those whose partition the caller's own shard holds, as the smart client sends every
    /// operation to the core that owns it: the run measures a shard's own work, no hop.
    Shard,
}

/// The parameters every target runs a workload with.
#[derive(Clone, Debug, serde::Serialize)]
pub struct WorkloadSpec {
    /// Distinct counters (and AtomicLongs).
    pub counters: usize,
    /// Distinct keys.
    pub keys: usize,
    /// Bytes per value.
    pub value_size: usize,
    /// Operations in flight per load thread (closed loop), per connection networked.
    pub callers: usize,
    /// How keys are chosen.
    pub key_dist: KeyDist,
    /// Embedded: which keys a shard's callers use.
    pub locality: Locality,
    /// map-mixed: the share of reads.
    pub read_ratio: f64,
    /// Open loop: total operations per second, sent on a fixed schedule; `None`: closed loop.
    pub rate: Option<f64>,
    /// Unmeasured time before measuring.
    #[serde(serialize_with = "secs")]
    pub warmup: Duration,
    /// Measured time.
    #[serde(serialize_with = "secs")]
    pub duration: Duration,
}

fn secs<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
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

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A uniform index below `n`.
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() >> 32) as usize % n.max(1)
    }

    /// A uniform number in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Picks indexes below `n` by a [`KeyDist`]; the zipfian constants are computed once.
#[derive(Clone, Debug)]
pub struct Picker {
    n: usize,
    zipf: Option<Zipf>,
}

#[derive(Clone, Debug)]
struct Zipf {
    theta: f64,
    zetan: f64,
    alpha: f64,
    eta: f64,
}

fn zeta(n: usize, theta: f64) -> f64 {
    (1..=n).map(|i| 1.0 / (i as f64).powf(theta)).sum()
}

impl Picker {
    /// A picker over `n` items.
    pub fn new(n: usize, dist: KeyDist) -> Self {
        let n = n.max(1);
        let zipf = match dist {
            KeyDist::Uniform => None,
            KeyDist::Zipfian { theta } => {
                let zetan = zeta(n, theta);
                let zeta2 = zeta(2.min(n), theta);
                let alpha = 1.0 / (1.0 - theta);
                let eta = (1.0 - (2.0 / n as f64).powf(1.0 - theta)) / (1.0 - zeta2 / zetan);
                Some(Zipf {
                    theta,
                    zetan,
                    alpha,
                    eta,
                })
            }
        };
        Self { n, zipf }
    }

    /// The next index.
    pub fn pick(&self, rng: &mut Rng) -> usize {
        let Some(z) = &self.zipf else {
            return rng.below(self.n);
        };
        let u = rng.unit();
        let uz = u * z.zetan;
        if uz < 1.0 {
            return 0;
        }
        if uz < 1.0 + 0.5f64.powf(z.theta) {
            return 1.min(self.n - 1);
        }
        let i = (self.n as f64 * (z.eta * u - z.eta + 1.0).powf(z.alpha)) as usize;
        i.min(self.n - 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uniform_covers_the_keys_evenly_and_zipfian_favours_the_first() {
        let mut rng = Rng::new(1);
        let uniform = Picker::new(10, KeyDist::Uniform);
        let mut counts = [0u32; 10];
        for _ in 0..100_000 {
            counts[uniform.pick(&mut rng)] += 1;
        }
        assert!(
            counts.iter().all(|&c| (9_000..11_000).contains(&c)),
            "{counts:?}"
        );

        let zipf = Picker::new(1000, KeyDist::Zipfian { theta: 0.99 });
        let mut counts = vec![0u32; 1000];
        for _ in 0..200_000 {
            counts[zipf.pick(&mut rng)] += 1;
        }
        // Under theta 0.99 over 1000 keys, key 0 takes about 1/zeta(1000) ≈ 13%.
        let first = f64::from(counts[0]) / 200_000.0;
        assert!((0.10..0.17).contains(&first), "key 0 share {first}");
        assert!(counts[0] > counts[1] && counts[1] > counts[10] && counts[10] > counts[500]);
    }
}
