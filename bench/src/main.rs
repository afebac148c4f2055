//! `corecast-bench`: the bundled latency benchmark.
//!
//! With no arguments it starts an embedded member (one shard per core), runs each workload
//! (counter increments, map puts, map gets) from pipelined callers on every shard for a few
//! seconds, then runs the same workload on a bare `ahash` map in one thread (and, when most
//! operations cross cores, on bare maps handing them across one thread per shard), and prints
//! ops/s and HDR latency percentiles for each, with their ratios. Progress goes to stderr, the
//! table to stdout; a JSON summary and `.hgrm` percentile files go to `--output`.
//!
//! `--cluster-size N` runs an in-process cluster of N members instead; `--members HOST:PORT,...`
//! benchmarks a running cluster through smart clients, against a raw TCP ping-pong of the same
//! frame size on loopback. `--rate` switches to an open loop with latency measured from each
//! operation's intended send time. `--compare A.json B.json` prints the ratios of two runs.
//!
//! Module map: [`workload`] (what an operation is, keys and their distribution), [`load`]
//! (closed and open loops), [`embedded`] (driving members or clients), [`baseline`] (the bare
//! map), [`crosscore`] (bare maps on as many threads as shards, handing operations across
//! cores), [`pingpong`] (the raw TCP floor), [`report`] (measurements and the table), [`output`]
//! (JSON, `.hgrm`, compare), [`plot`] (latency curves as SVG), [`progress`], [`memory`] and
//! [`migration`] (the other benchmarks).

mod baseline;
mod cpu;
mod crosscore;
mod embedded;
mod load;
mod memory;
mod migration;
mod output;
mod pingpong;
mod plot;
mod progress;
mod report;
mod workload;

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use corecast_services::config_args::ConfigArgs;

use crate::embedded::Target;
use crate::workload::{KeyDist, Locality, Workload, WorkloadSpec};

// Shards free buffers that other shards allocated (requests, replies); glibc's malloc serializes
// those frees on the owning arena's lock (measured: 12% of a two-shard kv-put run in futex wakes
// from that lock). mimalloc frees cross-thread without a lock.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// How keys are chosen, on the command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum Dist {
    Uniform,
    Zipfian,
}

/// Command-line options.
#[derive(Parser, Debug)]
#[command(
    name = "corecast-bench",
    version,
    about = "Latency benchmark: corecast against a bare hash map (embedded) or a raw TCP ping-pong (networked)"
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
    /// Operations in flight per load thread (closed loop): callers per shard embedded, pipeline
    /// depth per connection networked.
    #[arg(long, alias = "pipeline", default_value_t = 64)]
    callers: usize,
    /// Open loop: operations per second in all, each sent on schedule, latency measured from
    /// when it was meant to be sent. Without it: closed loop (maximum throughput).
    #[arg(long)]
    rate: Option<f64>,
    /// Distinct counters (and AtomicLongs) for counter-inc and atomic-add.
    #[arg(long, default_value_t = 1_000)]
    counters: usize,
    /// Distinct keys for the map and kv workloads.
    #[arg(long, default_value_t = 100_000)]
    keys: usize,
    /// How keys and counters are chosen.
    #[arg(long, value_enum, default_value_t = Dist::Uniform)]
    key_dist: Dist,
    /// Embedded: the keys and counters each shard's callers use: `any` (most operations of a
    /// multi-shard member take a channel hop to their owner shard) or `shard` (only those its
    /// own partitions hold, as a smart client routes every operation to its owner's core).
    #[arg(long, value_enum, default_value_t = Locality::Any)]
    locality: Locality,
    /// The zipfian skew (0 < theta < 1).
    #[arg(long, default_value_t = 0.99)]
    zipf_theta: f64,
    /// map-mixed: the share of gets (0..=1).
    #[arg(long, default_value_t = 0.9)]
    read_ratio: f64,
    /// Value size in bytes.
    #[arg(long, default_value_t = 100)]
    value_size: usize,
    /// Embedded: members of the in-process cluster (their shards all run load).
    #[arg(long, default_value_t = 1)]
    cluster_size: usize,
    /// Benchmark a running cluster through smart clients instead of an embedded one.
    #[arg(long, value_name = "HOST:PORT,...", value_delimiter = ',')]
    members: Vec<String>,
    /// Networked: load-generator threads per client (each a client shard).
    #[arg(long, default_value_t = 1)]
    threads: u32,
    /// Networked: connections per member shard in all (clients × threads; a multiple of
    /// `--threads`).
    #[arg(long)]
    connections: Option<u32>,
    /// Skip the baselines (a bare hash map embedded, and with several shards at `--locality any`
    /// bare maps handing operations across as many threads; a raw TCP ping-pong networked).
    #[arg(long)]
    no_baseline: bool,
    /// Networked, on the server's machine: the member process whose CPU time each measured
    /// window is charged to, for throughput per CPU-second (per core) beside ops/s (Linux).
    #[arg(long, value_name = "PID")]
    server_pid: Option<u32>,
    /// Where the JSON summary and the `.hgrm` files go.
    #[arg(long, default_value = "target/corecast-bench")]
    output: PathBuf,
    /// Print the ratios of run B to run A (two `summary.json` files) and exit.
    #[arg(long, num_args = 2, value_names = ["A.json", "B.json"])]
    compare: Option<Vec<PathBuf>>,
    /// Draw the latency-by-percentile curves of one or more runs into an SVG file and exit:
    /// `--plot OUT.svg A.json B.json …`.
    #[arg(long, num_args = 2.., value_names = ["OUT.svg", "RUN.json"])]
    plot: Option<Vec<PathBuf>>,
    /// The map memory benchmark instead: store this many entries of `--value-size` bytes and
    /// report the bytes each costs beyond its key and value.
    #[arg(long, value_name = "ENTRIES")]
    map_memory: Option<usize>,
    /// The migration benchmark instead: load this many MiB into one member, let a second join,
    /// report the rebalance's time, stream throughput and client latency meanwhile.
    #[arg(long, value_name = "MIB")]
    migration_mib: Option<usize>,
    /// Value size of the migration benchmark's data, in KiB.
    #[arg(long, default_value_t = 64)]
    migration_value_kib: usize,
    #[command(flatten)]
    config: ConfigArgs,
}

fn main() {
    corecast_engine::cpu::prefer_avx2_string_functions();
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

/// The checked workload parameters and target of `args`.
fn validate(args: &Args) -> anyhow::Result<(WorkloadSpec, Target)> {
    anyhow::ensure!(
        args.duration.is_finite() && args.duration > 0.0,
        "--duration must be a positive number of seconds, got {}",
        args.duration
    );
    anyhow::ensure!(
        args.warmup.is_finite() && args.warmup >= 0.0,
        "--warmup must not be negative, got {}",
        args.warmup
    );
    anyhow::ensure!(
        args.callers > 0,
        "--callers (--pipeline) must be at least 1"
    );
    anyhow::ensure!(
        args.counters > 0 && args.keys > 0,
        "--counters and --keys must be at least 1"
    );
    if let Some(rate) = args.rate {
        anyhow::ensure!(
            rate.is_finite() && rate > 0.0,
            "--rate must be a positive number of operations per second, got {rate}"
        );
    }
    anyhow::ensure!(
        (0.0..=1.0).contains(&args.read_ratio),
        "--read-ratio must be between 0 and 1, got {}",
        args.read_ratio
    );
    let key_dist = match args.key_dist {
        Dist::Uniform => KeyDist::Uniform,
        Dist::Zipfian => {
            anyhow::ensure!(
                args.zipf_theta > 0.0 && args.zipf_theta < 1.0,
                "--zipf-theta must be between 0 and 1 (exclusive), got {}",
                args.zipf_theta
            );
            KeyDist::Zipfian {
                theta: args.zipf_theta,
            }
        }
    };
    anyhow::ensure!(args.cluster_size >= 1, "--cluster-size must be at least 1");
    anyhow::ensure!(args.threads >= 1, "--threads must be at least 1");
    let target = if args.members.is_empty() {
        anyhow::ensure!(
            args.connections.is_none(),
            "--connections is for a running cluster (--members)"
        );
        anyhow::ensure!(
            args.server_pid.is_none(),
            "--server-pid is for a running cluster (--members): an embedded member shares this \
             process"
        );
        Target::Embedded {
            cluster_size: args.cluster_size,
        }
    } else {
        anyhow::ensure!(
            args.cluster_size == 1,
            "--cluster-size is for the embedded cluster, not with --members"
        );
        anyhow::ensure!(
            args.locality == Locality::Any,
            "--locality shard is for the embedded cluster: a smart client already sends every \
             operation to the shard that owns it"
        );
        let connections = args.connections.unwrap_or(args.threads);
        anyhow::ensure!(
            connections >= args.threads && connections % args.threads == 0,
            "--connections ({connections}) must be a multiple of --threads ({}): each client \
             thread holds one connection per member shard",
            args.threads
        );
        if let Some(pid) = args.server_pid {
            cpu::used(pid).map_err(|e| anyhow::anyhow!("--server-pid {pid}: {e:#}"))?;
        }
        Target::Networked {
            members: args.members.clone(),
            threads: args.threads,
            connections,
        }
    };
    let spec = WorkloadSpec {
        counters: args.counters,
        keys: args.keys,
        value_size: args.value_size,
        callers: args.callers,
        key_dist,
        locality: args.locality,
        read_ratio: args.read_ratio,
        rate: args.rate,
        warmup: Duration::from_secs_f64(args.warmup),
        duration: Duration::from_secs_f64(args.duration),
    };
    Ok((spec, target))
}

fn run(args: Args) -> anyhow::Result<()> {
    if let Some(files) = &args.compare {
        let (a, b) = (&files[0], &files[1]);
        let text = output::compare(
            &output::read(a)?,
            &output::read(b)?,
            &a.display().to_string(),
            &b.display().to_string(),
        );
        print!("{text}");
        return Ok(());
    }
    if let Some(files) = &args.plot {
        let (out, inputs) = files
            .split_first()
            .ok_or_else(|| anyhow::anyhow!("--plot needs OUT.svg and at least one summary"))?;
        let runs = inputs
            .iter()
            .map(|p| Ok((p.display().to_string(), output::read(p)?)))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let n = plot::plot(out, &runs)?;
        eprintln!("wrote {} curves to {}", n, out.display());
        return Ok(());
    }
    let (spec, target) = validate(&args)?;
    let config = args.config.load()?;
    if let Some(entries) = args.map_memory {
        anyhow::ensure!(entries > 0, "--map-memory must be at least 1");
        let report = memory::run(config, entries, args.value_size)?;
        print!("{}", memory::table(&report));
        return Ok(());
    }
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
    let started_unix_ms = corecast_engine::events::now_millis();
    let networked = matches!(target, Target::Networked { .. });
    let bench = embedded::Bench::start(config.clone(), &spec, &target)?;
    let mut rows = Vec::new();
    for workload in &args.workloads {
        eprintln!(
            "{workload}: corecast, {} load shards × {} callers, {:.1} s warm-up + {:.1} s",
            bench.shards(),
            spec.callers,
            args.warmup,
            args.duration
        );
        let corecast = bench.run(*workload, &spec, args.server_pid)?;
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
        // A member of several shards at `--locality any` hands most operations to another
        // core: the floor for that is bare maps handing them across as many threads.
        let cross_core = match bench.owner() {
            Some(owner)
                if !args.no_baseline
                    && bench.shards() > 1
                    && spec.locality == Locality::Any
                    && spec.rate.is_none() =>
            {
                eprintln!(
                    "{workload}: bare ahash maps, {} threads handing operations across cores …",
                    bench.shards()
                );
                Some(crosscore::run(
                    *workload,
                    &spec,
                    bench.shards() as usize,
                    owner,
                ))
            }
            _ => None,
        };
        rows.push(report::Row {
            workload: *workload,
            corecast,
            baseline,
            cross_core,
        });
    }
    let load = match spec.rate {
        Some(rate) => format!("open loop at {rate} ops/s"),
        None => "closed loop".to_owned(),
    };
    let setup = report::Setup {
        target: match &target {
            Target::Networked { members, .. } => format!(
                "cluster at {} through smart clients (client shards)",
                members.join(",")
            ),
            Target::Embedded { cluster_size: 1 } => "embedded member".to_owned(),
            Target::Embedded { cluster_size } => format!("embedded cluster of {cluster_size}"),
        },
        baseline: if networked { "tcp-pingpong" } else { "hashmap" },
        shards: bench.shards(),
        partitions: bench.partitions(),
        callers: spec.callers,
        load,
        duration: spec.duration,
    };
    bench.shutdown();
    print!("{}", report::table(&setup, &rows));
    let summary = summary(
        &args,
        &spec,
        &target,
        &setup,
        &rows,
        started_unix_ms,
        &config,
    );
    let histograms: Vec<(String, String, &report::Measured)> = rows
        .iter()
        .flat_map(|r| {
            r.targets(&setup)
                .into_iter()
                .map(|(name, m, _)| (r.workload.to_string(), name.to_owned(), m))
        })
        .collect();
    output::write(&args.output, &summary, &histograms)?;
    eprintln!(
        "wrote {}/summary.json and {} .hgrm files",
        args.output.display(),
        histograms.len()
    );
    Ok(())
}

fn summary(
    args: &Args,
    spec: &WorkloadSpec,
    target: &Target,
    setup: &report::Setup,
    rows: &[report::Row],
    started_unix_ms: u64,
    config: &corecast_engine::Config,
) -> output::Summary {
    let results = rows
        .iter()
        .flat_map(|r| {
            let w = r.workload.to_string();
            r.targets(setup)
                .into_iter()
                .map(move |(name, m, threads)| output::Result::of(&w, name, m, threads))
        })
        .collect();
    output::Summary {
        version: env!("CARGO_PKG_VERSION").to_owned(),
        profile_guided: report::PROFILE_GUIDED,
        machine: output::Machine::here(),
        started_unix_ms,
        config: serde_json::json!({
            "workloads": args.workloads,
            "spec": spec,
            "target": target,
            "load_shards": setup.shards,
            "partitions": setup.partitions,
            "baseline": if args.no_baseline { None } else { Some(setup.baseline) },
            "member": {
                "shards": config.shard_count(),
                "backup_count": config.backups.backup_count,
                "async_backup_count": config.backups.async_backup_count,
            },
        }),
        results,
    }
}
