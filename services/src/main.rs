//! `corecast`: run a member, or check a config.
//!
//! `corecast member [--config FILE] [--set KEY=VALUE]… [flags]` starts a member with the built-in
//! services and serves until SIGINT or SIGTERM, then shuts its services down. `corecast config
//! check …` loads and validates a config and says what it would start. Errors print one line and
//! exit non-zero.

use anyhow::Context;
use clap::{Parser, Subcommand};
use corecast_engine::Member;
use corecast_services::builtin::with_builtin_services;
use corecast_services::config_args::ConfigArgs;
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

// Shards free buffers that other shards allocated; glibc's malloc serializes those frees on the
// owning arena's lock, mimalloc does not (see corecast-bench for the measurement).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "corecast",
    version,
    about = "corecast: a thread-per-core in-memory data grid"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start a member and serve until SIGINT or SIGTERM.
    Member(ConfigArgs),
    /// Configuration tools.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Load and validate a config, then print what a member would start with.
    Check(ConfigArgs),
}

fn main() {
    corecast_services::logging::init("info", std::io::stdout);
    if let Err(e) = run(Cli::parse()) {
        eprintln!("corecast: {e:#}");
        std::process::exit(1);
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Member(args) => member(&args),
        Command::Config {
            command: ConfigCommand::Check(args),
        } => {
            let config = args.load()?;
            println!(
                "ok: cluster {} at {}, {} shards, {} partitions, backups {}+{} async, services: {}",
                config.cluster_name,
                config.network.bind,
                config.shard_count(),
                config.partition_count,
                config.backups.backup_count,
                config.backups.async_backup_count,
                config
                    .services
                    .iter()
                    .map(|s| format!("{}{}", s.name, if s.enabled { "" } else { " (disabled)" }))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            Ok(())
        }
    }
}

fn member(args: &ConfigArgs) -> anyhow::Result<()> {
    let config = args.load()?;
    let mut signals = Signals::new([SIGINT, SIGTERM]).context("cannot install signal handlers")?;
    let member = with_builtin_services(Member::builder(config)).start_blocking()?;
    if let Some(signal) = signals.forever().next() {
        tracing::info!(signal, "shutting down");
    }
    member.shutdown();
    Ok(())
}
