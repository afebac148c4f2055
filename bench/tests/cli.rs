//! `corecast-bench` as a user runs it: bad arguments are refused with a clear one-line error,
//! and a short run leaves a JSON summary and `.hgrm` files that parse and hold its settings.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_corecast-bench");

fn run(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(BIN)
        .args(args)
        .args(["--set", "io-memory-kib=256"])
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A fresh output directory for one test, as a path and as an argument.
fn output_dir(tag: &str) -> (std::path::PathBuf, String) {
    let dir = std::env::temp_dir().join(format!("corecast-bench-{tag}-{}", std::process::id()));
    let arg = dir.to_string_lossy().to_string();
    (dir, arg)
}

/// The run's `summary.json`, parsed.
fn summary(dir: &std::path::Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join("summary.json")).unwrap()).unwrap()
}

#[test]
fn bad_arguments_get_a_clear_error() {
    for (args, says) in [
        (vec!["--rate", "0"], "--rate must be a positive number"),
        (vec!["--rate=-5"], "--rate must be a positive number"),
        (
            vec!["--duration", "0"],
            "--duration must be a positive number",
        ),
        (
            vec!["--workloads", "nope"],
            "invalid value 'nope' for '--workloads",
        ),
        (
            vec!["--read-ratio", "1.5"],
            "--read-ratio must be between 0 and 1",
        ),
        (
            vec!["--key-dist", "zipfian", "--zipf-theta", "1"],
            "--zipf-theta must be between 0 and 1",
        ),
        (
            vec![
                "--members",
                "127.0.0.1:1",
                "--threads",
                "2",
                "--connections",
                "3",
            ],
            "must be a multiple of --threads",
        ),
        (
            vec!["--connections", "2"],
            "--connections is for a running cluster",
        ),
        (
            vec!["--members", "127.0.0.1:1", "--locality", "shard"],
            "--locality shard is for the embedded cluster",
        ),
        (
            vec!["--locality", "shard", "--shards", "2", "--counters", "1"],
            "holds none of the 1 counters",
        ),
        (
            vec!["--server-pid", "1"],
            "--server-pid is for a running cluster",
        ),
        (
            vec!["--members", "127.0.0.1:1", "--server-pid", "4294967295"],
            "--server-pid 4294967295: cannot read /proc/4294967295/stat",
        ),
        (
            vec!["--compare", "/nonexistent/a.json", "/nonexistent/b.json"],
            "cannot read",
        ),
    ] {
        let (ok, _, err) = run(&args);
        assert!(!ok, "{args:?} was accepted");
        assert!(err.contains(says), "{args:?}: {err}");
        assert!(
            err.lines().count() <= 5,
            "{args:?}: a short error, got {err}"
        );
    }
}

#[test]
fn a_run_writes_a_summary_and_hgrm_files_that_hold_its_settings() {
    let (dir, d) = output_dir("cli");
    let (ok, table, err) = run(&[
        "--workloads",
        "map-mixed,atomic-add,map-incr",
        "--duration",
        "0.3",
        "--warmup",
        "0.1",
        "--keys",
        "1000",
        "--counters",
        "10",
        "--callers",
        "4",
        "--rate",
        "2000",
        "--key-dist",
        "zipfian",
        "--read-ratio",
        "0.75",
        "--locality",
        "shard",
        "--output",
        &d,
    ]);
    assert!(ok, "{err}");
    assert!(table.contains("open loop at 2000 ops/s"), "{table}");
    let summary = summary(&dir);
    let spec = &summary["config"]["spec"];
    assert_eq!(spec["rate"], 2000.0);
    assert_eq!(spec["read_ratio"], 0.75);
    assert_eq!(spec["key_dist"]["kind"], "zipfian");
    assert_eq!(spec["callers"], 4);
    assert_eq!(spec["locality"], "shard");
    assert_eq!(summary["config"]["workloads"][0], "map-mixed");
    assert!(summary["machine"]["cores"].as_u64().unwrap() >= 1);
    assert!(!summary["machine"]["kernel"].as_str().unwrap().is_empty());
    // This test's binary is a debug build: scripts/rustc-pgo leaves it without the profile.
    assert_eq!(summary["profile_guided"], false);
    let results = summary["results"].as_array().unwrap();
    assert_eq!(results.len(), 6, "corecast and the bare map, per workload");
    // INCRs on a map of their own: the other workloads' values are no integers.
    let incr = results
        .iter()
        .find(|r| r["workload"] == "map-incr" && r["target"] == "corecast")
        .unwrap();
    assert_eq!(incr["errors"], 0, "{incr}");
    assert!(incr["count"].as_u64().unwrap() >= 400, "{incr}");
    let corecast = &results[0];
    assert_eq!(corecast["target"], "corecast");
    // An open loop at 2000/s for 0.3 s measures about 600 operations.
    let count = corecast["count"].as_u64().unwrap();
    assert!((400..=800).contains(&count), "{count} operations");
    // … at about the rate: throughput is counted over the time they took, not over the time
    // the progress bar (stderr is not a terminal here: one line per 5 s) took to stop.
    let rate = corecast["ops_per_sec"].as_f64().unwrap();
    assert!((1300.0..=2700.0).contains(&rate), "{rate} ops/s");
    for name in [
        "map-mixed-corecast",
        "map-mixed-hashmap",
        "atomic-add-corecast",
    ] {
        let text = std::fs::read_to_string(dir.join(format!("{name}.hgrm"))).unwrap();
        let last = text
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty() && !l.starts_with('#') && !l.contains("Value"))
            .unwrap();
        let cols: Vec<f64> = last
            .split_whitespace()
            .map(|w| w.parse().unwrap())
            .collect();
        assert_eq!(cols[1], 1.0, "{name}: ends at the 100th percentile");
    }
    // Comparing the run with itself: every ratio is 1.
    let s = dir.join("summary.json").to_string_lossy().to_string();
    let (ok, text, err) = run(&["--compare", &s, &s]);
    assert!(ok, "{err}");
    assert!(
        text.contains("map-mixed") && text.contains("1.000x"),
        "{text}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn two_shards_at_any_locality_are_also_compared_with_bare_maps_handing_work_across_cores() {
    let (dir, d) = output_dir("xcore");
    let (ok, table, err) = run(&[
        "--workloads",
        "counter-inc",
        "--shards",
        "2",
        "--warmup",
        "0.1",
        "--duration",
        "0.3",
        "--callers",
        "4",
        "--output",
        &d,
    ]);
    assert!(ok, "{err}");
    assert!(table.contains("xcore-maps"), "{table}");
    let summary = summary(&dir);
    let results = summary["results"].as_array().unwrap();
    let targets: Vec<&str> = results
        .iter()
        .map(|r| r["target"].as_str().unwrap())
        .collect();
    assert_eq!(targets, ["corecast", "hashmap", "xcore-maps"]);
    let floor = &results[2];
    assert_eq!(floor["errors"], 0, "{floor}");
    assert!(floor["count"].as_u64().unwrap() > 0, "{floor}");
    // Per shard: the floor runs one thread per shard.
    let (all, per) = (
        floor["ops_per_sec"].as_f64().unwrap(),
        floor["ops_per_sec_per_shard"].as_f64().unwrap(),
    );
    assert!((all / 2.0 - per).abs() < 1.0, "{floor}");
    assert!(dir.join("counter-inc-xcore-maps.hgrm").exists());
    // One shard, or `--locality shard`: no operation crosses cores, no such floor.
    let (ok, table, err) = run(&[
        "--workloads",
        "counter-inc",
        "--shards",
        "2",
        "--locality",
        "shard",
        "--warmup",
        "0.1",
        "--duration",
        "0.2",
        "--output",
        &d,
    ]);
    assert!(ok, "{err}");
    assert!(!table.contains("xcore-maps"), "{table}");
    std::fs::remove_dir_all(&dir).unwrap();
}
