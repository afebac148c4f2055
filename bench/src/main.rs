//! `corecast-bench`: the bundled latency benchmark.
//!
//! With no arguments it starts an embedded member (one shard per core), runs each workload
//! (counter increments, key-value puts, key-value gets) from pipelined callers on every shard
//! for a few seconds, then runs the same workload on a bare `ahash` map in one thread, and prints
//! ops/s and HDR latency percentiles for both, with their ratio. Progress goes to stderr, the
//! table to stdout.
//!
//! With `--members HOST:PORT,...` it benchmarks a running cluster through a smart client instead,
//! against a raw TCP ping-pong of the same frame size on loopback.
//!
//! Module map: [`workload`] (what an operation is, keys), [`embedded`] (driving the member or
//! client), [`baseline`] (the bare map), [`pingpong`] (the raw TCP floor), [`report`] (results
//! and the table).

mod baseline;
mod embedded;
mod memory;
mod migration;
mod pingpong;
mod report;
mod workload;

use std::time::Duration;

use clap::Parser;
use corecast_services::config_args::ConfigArgs;

use crate::workload::{Workload, WorkloadSpec};

// Shards free buffers that other shards allocated (requests, replies); glibc's malloc serializes
// those frees on the owning arena's lock (measured: 12% of a two-shard kv-put run in futex wakes
// from that lock). mimalloc frees cross-thread without a lock.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Command-line options.
#[derive(Parser, Debug)]
#[command(
    name = "corecast-bench",
    version,
    about = "Latency benchmark: an embedded corecast member against a bare hash map"
)]
struct Args {
    /// Workloads to run, in order.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "counter-inc,map-put,map-get"
    )]
    workloads: Vec<Workload>,
    /// Measured seconds per workload.
    #[arg(long, default_value_t = 3.0)]
    duration: f64,
    /// Warm-up seconds per workload (not measured).
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// Concurrent callers per shard (each keeps one operation in flight).
    #[arg(long, default_value_t = 64)]
    callers: usize,
    /// Distinct counters for counter-inc.
    #[arg(long, default_value_t = 1_000)]
    counters: usize,
    /// Distinct keys for kv-put and kv-get.
    #[arg(long, default_value_t = 100_000)]
    keys: usize,
    /// Value size in bytes for kv-put.
    #[arg(long, default_value_t = 100)]
    value_size: usize,
    /// Skip the baseline (a bare hash map embedded; a raw TCP ping-pong networked).
    #[arg(long)]
    no_baseline: bool,
    /// The migration benchmark instead: load this many MiB into one member, let a second join,
    /// report the rebalance's time, stream throughput and client latency meanwhile.
    #[arg(long, value_name = "MIB")]
    migration_mib: Option<usize>,
    /// Value size of the migration benchmark's data, in KiB.
    #[arg(long, default_value_t = 64)]
    migration_value_kib: usize,
    /// The map memory benchmark instead: store this many entries of `--value-size` bytes and
    /// report the bytes each costs beyond its key and value.
    #[arg(long, value_name = "ENTRIES")]
    map_memory: Option<usize>,
    /// Benchmark a running cluster through the smart client instead of an embedded member.
    #[arg(long, value_name = "HOST:PORT,...", value_delimiter = ',')]
    members: Vec<String>,
    #[command(flatten)]
    config: ConfigArgs,
}

fn main() {
    corecast_services::logging::init(
        "warn",
        std::io::stderr,
        std::io::IsTerminal::is_terminal(&std::io::stderr()),
    );
    if let Err(e) = run(Args::parse()) {
        eprintln!("corecast-bench: {e:#}");
        std::process::exit(1);
    }
}

fn run(args: Args) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.duration > 0.0,
        "--duration must be positive, got {}",
        args.duration
    );
    anyhow::ensure!(
        args.warmup >= 0.0,
        "--warmup must not be negative, got {}",
        args.warmup
    );
    anyhow::ensure!(args.callers > 0, "--callers must be at least 1");
    anyhow::ensure!(
        args.counters > 0 && args.keys > 0,
        "--counters and --keys must be at least 1"
    );
    let config = args.config.load()?;
    if let Some(mib) = args.migration_mib {
        anyhow::ensure!(
            mib > 0 && args.migration_value_kib > 0,
            "--migration-mib and --migration-value-kib must be at least 1"
        );
        let spec = migration::MigrationSpec {
            mib,
            value_kib: args.migration_value_kib,
        };
        print!("{}", migration::run(config, &spec)?);
        return Ok(());
    }
    if let Some(entries) = args.map_memory {
        anyhow::ensure!(entries > 0, "--map-memory must be at least 1");
        let report = memory::run(config, entries, args.value_size)?;
        print!("{}", memory::table(&report));
        return Ok(());
    }
    let spec = WorkloadSpec {
        counters: args.counters,
        keys: args.keys,
        value_size: args.value_size,
        callers: args.callers,
        warmup: Duration::from_secs_f64(args.warmup),
        duration: Duration::from_secs_f64(args.duration),
    };
    let networked = !args.members.is_empty();
    let bench = embedded::Bench::start(config, &spec, &args.members)?;
    let mut rows = Vec::new();
    for workload in &args.workloads {
        eprintln!(
            "{workload}: corecast, {} shards × {} callers, {:.1} s warm-up + {:.1} s …",
            bench.shards(),
            spec.callers,
            args.warmup,
            args.duration
        );
        let corecast = bench.run(*workload, &spec)?;
        let baseline = if args.no_baseline {
            None
        } else if networked {
            eprintln!(
                "{workload}: raw TCP ping-pong, {} B request / {} B response, 1 in flight …",
                pingpong::REQUEST,
                pingpong::RESPONSE
            );
            Some(pingpong::run(&spec)?)
        } else {
            eprintln!("{workload}: bare ahash map, 1 thread …");
            Some(baseline::run(*workload, &spec))
        };
        rows.push(report::Row {
            workload: *workload,
            corecast,
            baseline,
        });
    }
    let setup = report::Setup {
        target: if networked {
            format!(
                "cluster at {} through the smart client (client shards)",
                args.members.join(",")
            )
        } else {
            "embedded member".to_owned()
        },
        baseline: if networked { "tcp-pingpong" } else { "hashmap" },
        shards: bench.shards(),
        partitions: bench.partitions(),
        callers: spec.callers,
        duration: spec.duration,
    };
    bench.shutdown();
    print!("{}", report::table(&setup, &rows));
    Ok(())
}
