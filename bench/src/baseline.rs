//! The floor: the same workload on a bare `ahash` map in one thread, timed per operation the
//! same way as the member (closed loop), so the ratio shows what partitioning, shards and
//! archives cost. [`Bare`] is one thread's map; [`crate::crosscore`] runs one per shard.

use std::hint::black_box;
use std::io::Write as _;
use std::time::Instant;

use ahash::AHashMap;

use crate::report::Measured;
use crate::workload::{counter_names, keys, Picker, Rng, Workload, WorkloadSpec};

/// A workload's data in a bare map, and one operation on its counter or key number `i`.
pub struct Bare {
    data: Data,
    picker: Picker,
    read_ratio: f64,
    /// Where a get copies the value out, reused: a copy allocated per get and freed at once
    /// made mimalloc take a fresh page and give it back on every get whenever the pages of the
    /// values' size class were exactly full (a map of 50,309 values of 100 B: 0.8 M gets/s in one
    /// thread, 2.0 M at 50,000), so one thread of the cross-core floor ran its gets 2.5 times
    /// slower than the other and the floor's map-get came out at 0.45 times the one-thread map.
    pub(crate) copied: Vec<u8>,
}

enum Data {
    /// Counters by name, incremented in place.
    Counters {
        names: Vec<String>,
        map: AHashMap<String, i64>,
    },
    /// Decimal values read, added to and written back (as the map's `add_integer` does).
    Incr {
        keys: Vec<Vec<u8>>,
        map: AHashMap<Vec<u8>, Vec<u8>>,
    },
    /// Values put or read (and copied out, into [`Bare`]'s reused buffer).
    Values {
        keys: Vec<Vec<u8>>,
        map: AHashMap<Vec<u8>, Vec<u8>>,
        value: Vec<u8>,
    },
}

impl Bare {
    /// The data of `workload`, holding only the counters or keys `mine` picks (each thread of
    /// the cross-core floor holds its shards'); operations are drawn among all of them.
    pub fn new(workload: Workload, spec: &WorkloadSpec, mine: impl Fn(&[u8]) -> bool) -> Self {
        let read_ratio = match workload {
            Workload::MapMixed => spec.read_ratio,
            w if w.reads_keys() => 1.0,
            _ => 0.0,
        };
        let (data, picker) = if workload.uses_counters() {
            let names = counter_names(spec.counters);
            let map = names
                .iter()
                .filter(|n| mine(n.as_bytes()))
                .map(|n| (n.clone(), 0))
                .collect();
            let picker = Picker::new(names.len(), spec.key_dist);
            (Data::Counters { names, map }, picker)
        } else {
            let keys = keys(spec.keys);
            let picker = Picker::new(keys.len(), spec.key_dist);
            let data = if workload == Workload::MapIncr {
                Data::Incr {
                    keys,
                    map: AHashMap::new(),
                }
            } else {
                let value = vec![7u8; spec.value_size];
                let map = keys
                    .iter()
                    .filter(|k| mine(k))
                    .map(|k| (k.clone(), value.clone()))
                    .collect();
                Data::Values { keys, map, value }
            };
            (data, picker)
        };
        Self {
            data,
            picker,
            read_ratio,
            copied: Vec::new(),
        }
    }

    /// How many counters or keys operations are drawn among.
    pub fn len(&self) -> usize {
        match &self.data {
            Data::Counters { names, .. } => names.len(),
            Data::Incr { keys, .. } | Data::Values { keys, .. } => keys.len(),
        }
    }

    /// The name of counter or key `i`.
    pub fn name(&self, i: usize) -> &[u8] {
        match &self.data {
            Data::Counters { names, .. } => names.get(i).map_or(&[], |n| n.as_bytes()),
            Data::Incr { keys, .. } | Data::Values { keys, .. } => {
                keys.get(i).map_or(&[], |k| k.as_slice())
            }
        }
    }

    /// The next operation: which counter or key, and whether it reads.
    pub fn draw(&self, rng: &mut Rng) -> (usize, bool) {
        let i = self.picker.pick(rng);
        let read = self.read_ratio > 0.0 && rng.unit() < self.read_ratio;
        (i, read)
    }

    /// Runs one operation on counter or key `i`: whether it found it.
    pub fn apply(&mut self, i: usize, read: bool) -> bool {
        let Self { data, copied, .. } = self;
        match data {
            Data::Counters { names, map } => {
                let Some(v) = names.get(i).and_then(|n| map.get_mut(n.as_str())) else {
                    return false;
                };
                *v += 1;
                true
            }
            Data::Incr { keys, map } => {
                let Some(key) = keys.get(i) else { return false };
                let sum = match map.get_mut(key.as_slice()) {
                    Some(v) => {
                        let n = std::str::from_utf8(v)
                            .ok()
                            .and_then(|t| t.parse::<i64>().ok())
                            .unwrap_or(0)
                            + 1;
                        v.clear();
                        let _ = write!(v, "{n}");
                        n
                    }
                    None => {
                        map.insert(key.clone(), b"1".to_vec());
                        1
                    }
                };
                black_box(sum);
                true
            }
            Data::Values { keys, map, value } => {
                let Some(key) = keys.get(i) else { return false };
                if read {
                    let Some(value) = map.get(key.as_slice()) else {
                        return false;
                    };
                    copied.clear();
                    copied.extend_from_slice(value);
                    black_box(copied.as_slice());
                    true
                } else {
                    black_box(map.insert(key.clone(), value.clone()));
                    true
                }
            }
        }
    }

    /// The sum of every counter (the cross-core floor's test counts its increments with it).
    #[cfg(test)]
    pub fn counted(&self) -> i64 {
        match &self.data {
            Data::Counters { map, .. } => map.values().sum(),
            _ => 0,
        }
    }
}

/// Runs `workload` on a bare map for the spec's warm-up and duration.
pub fn run(workload: Workload, spec: &WorkloadSpec) -> Measured {
    let mut bare = Bare::new(workload, spec, |_| true);
    let mut rng = Rng::new(42);
    let mut measured = Measured::new();
    let start = Instant::now();
    let measure_from = start + spec.warmup;
    let end = measure_from + spec.duration;
    loop {
        let t0 = Instant::now();
        if t0 >= end {
            break;
        }
        let (i, read) = bare.draw(&mut rng);
        bare.apply(i, read);
        if t0 >= measure_from {
            measured.record(t0.elapsed());
        }
    }
    measured.elapsed = spec.duration;
    measured
}
