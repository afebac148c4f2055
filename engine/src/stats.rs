//! Per-shard operation statistics for metrics: operations run as owner by service and outcome,
//! and the service time of one in [`SAMPLE_EVERY`] of them in a log₂ histogram. Plain counters in
//! the shard's own core: read by a message to the shard ([`crate::extension::shard_stats`]),
//! never shared.

use std::time::Instant;

/// One operation in this many is timed (two clock reads cost a cheap operation ~10%).
pub const SAMPLE_EVERY: u32 = 16;

/// Histogram buckets: upper bounds 2^i × 256 ns, i in 0..BUCKETS (256 ns … ~34 s), then +Inf.
pub const BUCKETS: usize = 28;

/// The upper bound of bucket `i` in seconds.
pub fn bucket_bound_secs(i: usize) -> f64 {
    (256u64 << i) as f64 / 1e9
}

/// One shard's operation statistics.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OpStats {
    /// Per namespace (the service slots, then the engine's own): operations that succeeded and
    /// that failed.
    pub ops: Vec<[u64; 2]>,
    /// Sampled service times: counts per bucket (the last is +Inf).
    pub latency: Vec<u64>,
    /// Sum of the sampled times, in nanoseconds.
    pub latency_sum_ns: u64,
    tick: u32,
}

impl OpStats {
    /// Empty, for `namespaces` services (plus the engine's).
    pub fn new(namespaces: usize) -> Self {
        Self {
            ops: vec![[0; 2]; namespaces + 1],
            latency: vec![0; BUCKETS + 1],
            latency_sum_ns: 0,
            tick: 0,
        }
    }

    /// Starts an operation: the clock, if this one is sampled.
    pub fn start(&mut self) -> Option<Instant> {
        self.tick = self.tick.wrapping_add(1);
        (self.tick % SAMPLE_EVERY == 0).then(Instant::now)
    }

    /// Ends an operation of namespace `ns`.
    pub fn finish(&mut self, ns: usize, ok: bool, started: Option<Instant>) {
        if let Some(counts) = self.ops.get_mut(ns) {
            counts[usize::from(!ok)] += 1;
        }
        if let Some(t) = started {
            let ns = t.elapsed().as_nanos() as u64;
            let bucket = (0..BUCKETS)
                .find(|&i| ns <= (256u64 << i))
                .unwrap_or(BUCKETS);
            self.latency[bucket] += 1;
            self.latency_sum_ns += ns;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn counts_by_outcome_and_samples_one_in_sixteen() {
        let mut s = OpStats::new(2);
        for i in 0..64 {
            let t = s.start();
            s.finish(i % 3, i % 4 != 0, t.map(|t| t - Duration::from_micros(3)));
        }
        let total: u64 = s.ops.iter().flatten().sum();
        assert_eq!(total, 64);
        assert_eq!(s.ops.iter().map(|c| c[1]).sum::<u64>(), 16);
        assert_eq!(s.latency.iter().sum::<u64>(), 4);
        // 3 µs lands in the bucket bounded by 4096 ns.
        assert_eq!(s.latency[4], 4, "{:?}", s.latency);
    }
}
