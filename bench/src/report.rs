//! Measurements and the printed table: ops/s and HDR percentiles, corecast beside the baseline,
//! with ratios.

use std::fmt::Write;
use std::time::Duration;

use hdrhistogram::Histogram;

use crate::output::QUANTILES;
use crate::workload::Workload;

/// Latencies (nanoseconds) and counts of one target running one workload.
#[derive(Clone)]
pub struct Measured {
    histogram: Histogram<u64>,
    /// Operations that failed (or, for gets, missed).
    pub errors: u64,
    /// The measured wall time.
    pub elapsed: Duration,
    /// CPU time the server process (`--server-pid`) used in that time.
    pub server_cpu: Option<Duration>,
}

impl Measured {
    /// Empty: 1 ns to 60 s at 3 significant digits.
    pub fn new() -> Self {
        Self {
            histogram: Histogram::new_with_bounds(1, 60_000_000_000, 3)
                .unwrap_or_else(|e| unreachable!("fixed histogram bounds are valid: {e}")),
            errors: 0,
            elapsed: Duration::ZERO,
            server_cpu: None,
        }
    }

    /// Records one operation's latency.
    pub fn record(&mut self, latency: Duration) {
        self.histogram
            .saturating_record(latency.as_nanos().max(1) as u64);
    }

    /// Records one operation's latency and whether it succeeded.
    pub fn record_result(&mut self, latency: Duration, ok: bool) {
        self.record(latency);
        self.errors += u64::from(!ok);
    }

    /// Adds another target's (or shard's) measurements.
    pub fn merge(&mut self, other: &Measured) {
        // Both histograms share bounds, so adding cannot fail.
        let _ = self.histogram.add(&other.histogram);
        self.errors += other.errors;
    }

    /// Operations per second over the measured time.
    pub fn ops_per_sec(&self) -> f64 {
        self.histogram.len() as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// Operations per second of the server's CPU time (`--server-pid`): throughput per core.
    pub fn ops_per_server_cpu_sec(&self) -> Option<f64> {
        self.server_cpu
            .map(|cpu| self.histogram.len() as f64 / cpu.as_secs_f64().max(1e-9))
    }

    /// The latency at `quantile` (0..=1), in nanoseconds.
    pub fn at(&self, quantile: f64) -> u64 {
        self.histogram.value_at_quantile(quantile)
    }

    /// The largest latency, in nanoseconds.
    pub fn max(&self) -> u64 {
        self.histogram.max()
    }

    /// Operations recorded.
    pub fn count(&self) -> u64 {
        self.histogram.len()
    }

    /// Operations slower than `limit`.
    #[cfg(test)]
    pub fn count_above(&self, limit: Duration) -> u64 {
        let limit = limit.as_nanos() as u64;
        self.histogram.len() - self.histogram.count_between(0, limit)
    }

    /// The histogram.
    pub fn histogram(&self) -> &Histogram<u64> {
        &self.histogram
    }
}

/// One workload's results.
pub struct Row {
    /// The workload.
    pub workload: Workload,
    /// On the embedded member.
    pub corecast: Measured,
    /// On the bare map, unless skipped.
    pub baseline: Option<Measured>,
    /// On bare maps handing operations across as many threads as shards (a member of several
    /// shards at `--locality any`).
    pub cross_core: Option<Measured>,
}

/// The cross-core floor's name in the table and the JSON.
pub const CROSS_CORE: &str = "xcore-maps";

/// One target's results in a row: its name, its measurements, and the threads (shards) it ran
/// on, `None` for one.
pub type Target<'a> = (&'a str, &'a Measured, Option<u32>);

impl Row {
    /// corecast, then each baseline that ran.
    pub fn targets<'a>(&'a self, setup: &'a Setup) -> Vec<Target<'a>> {
        let mut targets = vec![("corecast", &self.corecast, Some(setup.shards))];
        if let Some(base) = &self.baseline {
            targets.push((setup.baseline, base, None));
        }
        if let Some(floor) = &self.cross_core {
            targets.push((CROSS_CORE, floor, Some(setup.shards)));
        }
        targets
    }
}

/// Whether this binary was built with the checked-in PGO profile (scripts/rustc-pgo sets
/// `corecast_pgo` when it adds the profile to an optimised build).
pub const PROFILE_GUIDED: bool = cfg!(corecast_pgo);

/// What the run was, for the table's heading.
pub struct Setup {
    /// What was measured: "embedded member" or "cluster at …, through the smart client".
    pub target: String,
    /// What the baseline is: "hashmap" or "tcp-pingpong".
    pub baseline: &'static str,
    /// Shards of the member (or of the client, networked).
    pub shards: u32,
    /// Partitions.
    pub partitions: u32,
    /// Callers per shard.
    pub callers: usize,
    /// The load model: "closed loop" or "open loop at N ops/s".
    pub load: String,
    /// Measured time per workload.
    pub duration: Duration,
}

/// The results table.
pub fn table(setup: &Setup, rows: &[Row]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "corecast-bench: {}, {} shards, {} partitions, {} callers per shard, {}, {:.1} s per workload, {}",
        setup.target,
        setup.shards,
        setup.partitions,
        setup.callers,
        setup.load,
        setup.duration.as_secs_f64(),
        match PROFILE_GUIDED {
            true => "profile-guided build",
            false => "built without the PGO profile",
        }
    );
    let _ = writeln!(
        out,
        "{:<12} {:<10} {:>12} {:>12} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>7}",
        "workload",
        "target",
        "ops/s",
        "ops/s/shard",
        "p50",
        "p90",
        "p99",
        "p99.9",
        "p99.99",
        "max",
        "errors"
    );
    for row in rows {
        line(
            &mut out,
            row.workload,
            "corecast",
            &row.corecast,
            Some(setup.shards),
        );
        if let (Some(cpu), Some(per_cpu)) = (
            row.corecast.server_cpu,
            row.corecast.ops_per_server_cpu_sec(),
        ) {
            let _ = writeln!(
                out,
                "{:<12} server process: {:.2} cores busy, {} ops per CPU-second",
                "",
                cpu.as_secs_f64() / row.corecast.elapsed.as_secs_f64().max(1e-9),
                thousands(per_cpu)
            );
        }
        for (name, base, threads) in row.targets(setup).into_iter().skip(1) {
            line(&mut out, row.workload, name, base, threads);
            ratio(
                &mut out,
                &row.corecast,
                base,
                setup.shards,
                threads.unwrap_or(1),
            );
        }
    }
    out
}

fn line(out: &mut String, workload: Workload, target: &str, m: &Measured, shards: Option<u32>) {
    let per_shard = shards.map_or("-".to_owned(), |s| {
        thousands(m.ops_per_sec() / f64::from(s))
    });
    let _ = write!(
        out,
        "{:<12} {:<10} {:>12} {:>12}",
        workload.to_string(),
        target,
        thousands(m.ops_per_sec()),
        per_shard
    );
    for (_, q) in QUANTILES {
        let _ = write!(out, " {:>9}", nanos(m.at(q)));
    }
    let _ = writeln!(out, " {:>9} {:>7}", nanos(m.max()), m.errors);
}

/// corecast ÷ baseline: throughput per shard against one of the baseline's `threads`, and
/// latency multiples.
fn ratio(out: &mut String, corecast: &Measured, base: &Measured, shards: u32, threads: u32) {
    let per_thread = base.ops_per_sec() / f64::from(threads.max(1));
    let per_shard = corecast.ops_per_sec() / f64::from(shards) / per_thread.max(1e-9);
    let _ = write!(
        out,
        "{:<12} {:<10} {:>12} {:>12}",
        "",
        "ratio",
        "",
        format!("{per_shard:.3}x")
    );
    for (_, q) in QUANTILES {
        let r = corecast.at(q) as f64 / base.at(q).max(1) as f64;
        let _ = write!(out, " {:>9}", format!("{r:.1}x"));
    }
    let r = corecast.max() as f64 / base.max().max(1) as f64;
    let _ = writeln!(out, " {:>9} {:>7}", format!("{r:.1}x"), "");
}

fn nanos(ns: u64) -> String {
    match ns {
        0..=9_999 => format!("{ns}ns"),
        10_000..=9_999_999 => format!("{:.1}us", ns as f64 / 1e3),
        _ => format!("{:.1}ms", ns as f64 / 1e6),
    }
}

fn thousands(x: f64) -> String {
    let n = x.round() as u64;
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_printed_for_people() {
        assert_eq!(thousands(1_234_567.4), "1,234,567");
        assert_eq!(thousands(999.0), "999");
        assert_eq!(nanos(850), "850ns");
        assert_eq!(nanos(12_500), "12.5us");
        assert_eq!(nanos(3_200_000_000), "3200.0ms");
    }

    #[test]
    fn merged_measurements_add_up() {
        let mut a = Measured::new();
        let mut b = Measured::new();
        a.record_result(Duration::from_micros(1), true);
        b.record_result(Duration::from_micros(3), false);
        a.merge(&b);
        a.elapsed = Duration::from_secs(1);
        assert_eq!(a.ops_per_sec().round(), 2.0);
        assert_eq!(a.errors, 1);
        assert!(a.max() >= 3_000);
    }
}
