//! The floor: the same workload on a bare `ahash` map in one thread, timed per operation the
//! same way as the member (closed loop), so the ratio shows what partitioning, shards and
//! archives cost.

use std::hint::black_box;
use std::io::Write as _;
use std::time::Instant;

use ahash::AHashMap;

use crate::report::Measured;
use crate::workload::{counter_names, keys, Picker, Rng, Workload, WorkloadSpec};

/// Runs `workload` on a bare map for the spec's warm-up and duration.
pub fn run(workload: Workload, spec: &WorkloadSpec) -> Measured {
    if workload.uses_counters() {
        let names = counter_names(spec.counters);
        let picker = Picker::new(names.len(), spec.key_dist);
        let mut map: AHashMap<String, i64> = names.iter().map(|n| (n.clone(), 0)).collect();
        return drive(spec, |rng| {
            let name = &names[picker.pick(rng)];
            if let Some(v) = map.get_mut(name.as_str()) {
                *v += 1;
            }
        });
    }
    let keys = keys(spec.keys);
    let picker = Picker::new(keys.len(), spec.key_dist);
    if workload == Workload::MapIncr {
        // As the map does it: the decimal value read, added to and written back.
        let mut map: AHashMap<Vec<u8>, Vec<u8>> = AHashMap::new();
        return drive(spec, |rng| {
            let key = &keys[picker.pick(rng)];
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
        });
    }
    let value = vec![7u8; spec.value_size];
    let mut map: AHashMap<Vec<u8>, Vec<u8>> =
        keys.iter().map(|k| (k.clone(), value.clone())).collect();
    let read_ratio = match workload {
        Workload::MapMixed => spec.read_ratio,
        w if w.reads_keys() => 1.0,
        _ => 0.0,
    };
    drive(spec, |rng| {
        let key = &keys[picker.pick(rng)];
        if rng.unit() < read_ratio {
            black_box(map.get(key.as_slice()).cloned());
        } else {
            black_box(map.insert(key.clone(), value.clone()));
        }
    })
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
