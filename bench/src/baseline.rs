//! The floor: the same workload on a bare `ahash` map in one thread, timed per operation the
//! same way as the member, so the ratio shows what partitioning, shards and archives cost.

use std::hint::black_box;
use std::time::Instant;

use ahash::AHashMap;

use crate::report::Measured;
use crate::workload::{counter_names, keys, Rng, Workload, WorkloadSpec};

/// Runs `workload` on a bare map for the spec's warm-up and duration.
pub fn run(workload: Workload, spec: &WorkloadSpec) -> Measured {
    match workload {
        Workload::CounterInc => {
            let names = counter_names(spec.counters);
            let mut map: AHashMap<String, i64> = names.iter().map(|n| (n.clone(), 0)).collect();
            drive(spec, |rng| {
                let name = &names[rng.below(names.len())];
                if let Some(v) = map.get_mut(name.as_str()) {
                    *v += 1;
                }
            })
        }
        _ => {
            let keys = keys(spec.keys);
            let value = vec![7u8; spec.value_size];
            let mut map: AHashMap<Vec<u8>, Vec<u8>> =
                keys.iter().map(|k| (k.clone(), value.clone())).collect();
            if !workload.reads_keys() {
                drive(spec, |rng| {
                    let key = &keys[rng.below(keys.len())];
                    black_box(map.insert(key.clone(), value.clone()));
                })
            } else {
                drive(spec, |rng| {
                    let key = &keys[rng.below(keys.len())];
                    black_box(map.get(key.as_slice()).cloned());
                })
            }
        }
    }
}

fn drive(spec: &WorkloadSpec, mut op: impl FnMut(&mut Rng)) -> Measured {
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
        op(&mut rng);
        if t0 >= measure_from {
            measured.record(t0.elapsed());
        }
    }
    measured.elapsed = spec.duration;
    measured
}
