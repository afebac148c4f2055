//! What a run leaves behind: a JSON summary (the run's full configuration, the machine, the
//! version, and per workload and target its throughput, percentiles and latency curve), one
//! HdrHistogram percentile file (`.hgrm`) per workload and target, and `--compare` of two
//! summaries.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context;
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::report::Measured;

/// The machine a run ran on.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Machine {
    /// Cores the process may use.
    pub cores: usize,
    /// The kernel release.
    pub kernel: String,
    /// The CPU model.
    pub cpu: String,
}

impl Machine {
    /// This machine.
    pub fn here() -> Self {
        let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
        let cpu = read("/proc/cpuinfo")
            .lines()
            .find(|l| l.starts_with("model name"))
            .and_then(|l| l.split(':').nth(1))
            .map_or_else(|| "unknown".to_owned(), |s| s.trim().to_owned());
        Self {
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            kernel: read("/proc/sys/kernel/osrelease").trim().to_owned(),
            cpu,
        }
    }
}

/// One workload on one target.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Result {
    /// The workload.
    pub workload: String,
    /// `corecast`, `hashmap` or `tcp-pingpong`.
    pub target: String,
    /// Operations per second.
    pub ops_per_sec: f64,
    /// Per load shard (corecast only).
    pub ops_per_sec_per_shard: Option<f64>,
    /// Operations measured.
    pub count: u64,
    /// Operations that failed (or, for gets, missed).
    pub errors: u64,
    /// p50, p90, p99, p99.9, p99.99 in nanoseconds.
    pub percentiles: Vec<(String, u64)>,
    /// The largest latency in nanoseconds.
    pub max_ns: u64,
    /// (percentile, nanoseconds) along the distribution, for plots.
    pub curve: Vec<(f64, u64)>,
    /// CPU seconds the server process (`--server-pid`) used while this was measured.
    #[serde(default)]
    pub server_cpu_secs: Option<f64>,
    /// Operations per second of that CPU time: throughput per core.
    #[serde(default)]
    pub ops_per_server_cpu_sec: Option<f64>,
}

/// A run.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Summary {
    /// corecast's version.
    pub version: String,
    /// Whether the binary was built with the checked-in PGO profile (bench/README.md).
    #[serde(default)]
    pub profile_guided: bool,
    /// The machine.
    pub machine: Machine,
    /// When the run started (ms since the Unix epoch).
    pub started_unix_ms: u64,
    /// Every setting of the run.
    pub config: serde_json::Value,
    /// The results.
    pub results: Vec<Result>,
}

/// The percentiles every report shows.
pub const QUANTILES: [(&str, f64); 5] = [
    ("p50", 0.50),
    ("p90", 0.90),
    ("p99", 0.99),
    ("p99.9", 0.999),
    ("p99.99", 0.9999),
];

impl Result {
    /// The result of `m` for `workload` on `target`.
    pub fn of(workload: &str, target: &str, m: &Measured, shards: Option<u32>) -> Self {
        Self {
            workload: workload.to_owned(),
            target: target.to_owned(),
            ops_per_sec: m.ops_per_sec(),
            ops_per_sec_per_shard: shards.map(|s| m.ops_per_sec() / f64::from(s.max(1))),
            count: m.count(),
            errors: m.errors,
            percentiles: QUANTILES
                .iter()
                .map(|(l, q)| ((*l).to_owned(), m.at(*q)))
                .collect(),
            max_ns: m.max(),
            curve: curve(m.histogram()),
            server_cpu_secs: m.server_cpu.map(|d| d.as_secs_f64()),
            ops_per_server_cpu_sec: m.ops_per_server_cpu_sec(),
        }
    }

    /// The latency at percentile label `label` (`p50` …).
    pub fn at(&self, label: &str) -> Option<u64> {
        self.percentiles
            .iter()
            .find(|(l, _)| l == label)
            .map(|(_, v)| *v)
    }
}

fn curve(h: &Histogram<u64>) -> Vec<(f64, u64)> {
    if h.is_empty() {
        return Vec::new();
    }
    h.iter_quantiles(2)
        .map(|v| (v.quantile_iterated_to(), v.value_iterated_to()))
        .collect()
}

/// The HdrHistogram percentile distribution of `h` (values in microseconds), as
/// `HdrHistogram.outputPercentileDistribution` writes it.
pub fn hgrm(h: &Histogram<u64>) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:>12} {:>14} {:>10} {:>14}\n",
        "Value", "Percentile", "TotalCount", "1/(1-Percentile)"
    );
    let mut total = 0u64;
    if !h.is_empty() {
        for v in h.iter_quantiles(5) {
            total += v.count_since_last_iteration();
            let q = v.quantile_iterated_to();
            let value = v.value_iterated_to() as f64 / 1000.0;
            if q < 1.0 {
                let _ = writeln!(
                    out,
                    "{value:>12.3} {q:>14.12} {total:>10} {:>14.2}",
                    1.0 / (1.0 - q)
                );
            } else {
                let _ = writeln!(out, "{value:>12.3} {q:>14.12} {total:>10}");
            }
        }
    }
    let _ = writeln!(
        out,
        "#[Mean    = {:>12.3}, StdDeviation   = {:>12.3}]",
        h.mean() / 1000.0,
        h.stdev() / 1000.0
    );
    let _ = writeln!(
        out,
        "#[Max     = {:>12.3}, Total count    = {:>12}]",
        h.max() as f64 / 1000.0,
        h.len()
    );
    let _ = writeln!(
        out,
        "#[Buckets = {:>12}, SubBuckets     = {:>12}]",
        h.buckets(),
        h.distinct_values()
    );
    out
}

/// Writes the summary as `summary.json` and one `WORKLOAD-TARGET.hgrm` per result into `dir`.
///
/// Errors: the directory or a file cannot be written.
pub fn write(
    dir: &Path,
    summary: &Summary,
    histograms: &[(String, String, &Measured)],
) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let json = serde_json::to_string_pretty(summary).context("cannot encode the summary")?;
    let path = dir.join("summary.json");
    std::fs::write(&path, json).with_context(|| format!("cannot write {}", path.display()))?;
    for (workload, target, m) in histograms {
        let path = dir.join(format!("{workload}-{target}.hgrm"));
        std::fs::write(&path, hgrm(m.histogram()))
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(())
}

/// Reads a summary written by [`write`].
///
/// Errors: the file cannot be read or is not a summary.
pub fn read(path: &Path) -> anyhow::Result<Summary> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    serde_json::from_str(&text)
        .with_context(|| format!("{} is not a corecast-bench summary", path.display()))
}

/// B against A: per workload and target both ran, the ratios of ops/s and latencies.
pub fn compare(a: &Summary, b: &Summary, a_name: &str, b_name: &str) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "B ({b_name}) ÷ A ({a_name})");
    let _ = write!(out, "{:<12} {:<13} {:>9}", "workload", "target", "ops/s");
    for (l, _) in QUANTILES {
        let _ = write!(out, " {l:>8}");
    }
    let _ = writeln!(out, " {:>8}", "max");
    for ra in &a.results {
        let Some(rb) = b
            .results
            .iter()
            .find(|r| r.workload == ra.workload && r.target == ra.target)
        else {
            continue;
        };
        let ratio = |x: f64, y: f64| {
            if y > 0.0 {
                format!("{:.3}x", x / y)
            } else {
                "-".into()
            }
        };
        let _ = write!(
            out,
            "{:<12} {:<13} {:>9}",
            ra.workload,
            ra.target,
            ratio(rb.ops_per_sec, ra.ops_per_sec)
        );
        for (l, _) in QUANTILES {
            let (x, y) = (rb.at(l).unwrap_or(0), ra.at(l).unwrap_or(0));
            let _ = write!(out, " {:>8}", ratio(x as f64, y as f64));
        }
        let _ = writeln!(out, " {:>8}", ratio(rb.max_ns as f64, ra.max_ns as f64));
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn measured() -> Measured {
        let mut m = Measured::new();
        for i in 1..=10_000u64 {
            m.record_result(Duration::from_nanos(1_000 + i * 10), i % 100 != 0);
        }
        m.elapsed = Duration::from_secs(1);
        m
    }

    #[test]
    fn the_hgrm_file_parses_and_ends_at_every_operation() {
        let m = measured();
        let text = hgrm(m.histogram());
        let rows: Vec<Vec<f64>> = text
            .lines()
            .filter(|l| !l.trim().is_empty() && !l.starts_with('#') && !l.contains("Value"))
            .map(|l| {
                l.split_whitespace()
                    .map(|w| w.parse::<f64>().unwrap())
                    .collect()
            })
            .collect();
        assert!(rows.len() > 20);
        assert!(rows
            .windows(2)
            .all(|w| w[0][1] <= w[1][1] && w[0][0] <= w[1][0]));
        let last = rows.last().unwrap();
        assert_eq!(last[1], 1.0);
        assert_eq!(last[2] as u64, 10_000);
        assert!((last[0] - 101.0).abs() < 0.5, "max {} us", last[0]);
        assert!(text.contains("Total count    =        10000"));
    }

    #[test]
    fn the_summary_round_trips_and_compares() {
        let m = measured();
        let a = Summary {
            version: "0.1.0".into(),
            profile_guided: true,
            machine: Machine::here(),
            started_unix_ms: 1,
            config: serde_json::json!({"workloads": ["map-get"], "rate": 1000.0}),
            results: vec![Result::of("map-get", "corecast", &m, Some(2))],
        };
        let dir = std::env::temp_dir().join(format!("corecast-bench-out-{}", std::process::id()));
        write(&dir, &a, &[("map-get".into(), "corecast".into(), &m)]).unwrap();
        let back = read(&dir.join("summary.json")).unwrap();
        assert_eq!(back, a);
        assert_eq!(back.config["rate"], 1000.0);
        assert_eq!(back.results[0].errors, 100);
        assert!(dir.join("map-get-corecast.hgrm").exists());
        let mut b = a.clone();
        b.results[0].ops_per_sec *= 2.0;
        let text = compare(&a, &b, "a", "b");
        assert!(
            text.contains("map-get") && text.contains("2.000x"),
            "{text}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
