//! `corecast`: run a member, talk to a cluster, or check a config.
//!
//! - `corecast member [--config FILE] [--set KEY=VALUE]… [--bind HOST:PORT] [--seeds …] [flags]`
//!   starts a member with the built-in services, joins (or forms) a cluster, logs one line when it
//!   joined, and serves until SIGINT or SIGTERM.
//! - `corecast client --members HOST:PORT[,…] [COMMAND…]` runs one command (or, with none, one
//!   per stdin line) through a smart client and prints one result line per command.
//! - `corecast cluster status --members HOST:PORT` prints the members and their partitions.
//! - `corecast config check …` validates a config and says what it would start.
//!
//! Errors print one line and exit non-zero.

use std::io::BufRead;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use corecast_engine::{Config, Member};
use corecast_net::Network;
use corecast_services::builtin::with_builtin_services;
use corecast_services::config_args::ConfigArgs;
use corecast_services::counter::Counter;
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
    /// Run commands against a cluster through a smart client.
    Client(ClientArgs),
    /// Cluster tools.
    Cluster {
        #[command(subcommand)]
        command: ClusterCommand,
    },
    /// Configuration tools.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
}

#[derive(Subcommand)]
enum ClusterCommand {
    /// Print the members (address, id, shards, ports, master, lite), their owned partitions and
    /// backup replicas.
    Status(Connect),
}

/// Where the cluster is and how to be let in.
#[derive(Args)]
struct Connect {
    /// Members to connect to (any one is enough).
    #[arg(
        long,
        value_name = "HOST:PORT,...",
        value_delimiter = ',',
        required = true
    )]
    members: Vec<String>,
    /// The cluster's name (the config default when omitted).
    #[arg(long)]
    cluster_name: Option<String>,
    /// The cluster's shared secret.
    #[arg(long)]
    secret: Option<String>,
    /// Give up connecting after this many milliseconds.
    #[arg(long, default_value_t = 5000)]
    connect_timeout_millis: u64,
}

#[derive(Args)]
struct ClientArgs {
    #[command(flatten)]
    connect: Connect,
    /// `counter inc NAME [AMOUNT]`, `counter get NAME`, `ping`; none: read commands from stdin.
    command: Vec<String>,
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Load and validate a config, then print what a member would start with.
    Check(ConfigArgs),
}

fn main() {
    let cli = Cli::parse();
    match cli.command {
        // A member's log is its output; a client's stdout is for results only.
        Command::Member(_) => {
            use std::io::IsTerminal;
            corecast_services::logging::init(
                "info",
                std::io::stdout,
                std::io::stdout().is_terminal(),
            )
        }
        _ => {
            use std::io::IsTerminal;
            corecast_services::logging::init(
                "warn",
                std::io::stderr,
                std::io::stderr().is_terminal(),
            )
        }
    }
    if let Err(e) = run(cli) {
        eprintln!("corecast: {e:#}");
        std::process::exit(1);
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Member(args) => member(&args),
        Command::Client(args) => client(&args),
        Command::Cluster {
            command: ClusterCommand::Status(connect),
        } => status(&connect),
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
    let builder = with_builtin_services(Member::builder(config));
    let member = futures_lite::future::block_on(corecast_net::start_member(builder))?;
    if let Some(signal) = signals.forever().next() {
        tracing::info!(signal, "shutting down");
    }
    futures_lite::future::block_on(member.shutdown());
    Ok(())
}

/// A smart client: one shard, no partitions, the built-in services' proxies.
fn connect(connect: &Connect) -> anyhow::Result<Member> {
    let mut config = Config {
        shards: Some(1),
        ..Config::default()
    };
    if let Some(name) = &connect.cluster_name {
        config.cluster_name.clone_from(name);
    }
    config.network.secret.clone_from(&connect.secret);
    let builder = with_builtin_services(Member::builder(config));
    let timeout = Duration::from_millis(connect.connect_timeout_millis);
    let client = futures_lite::future::block_on(corecast_net::start_client(
        builder,
        &connect.members,
        timeout,
    ))?;
    Ok(client)
}

fn client(args: &ClientArgs) -> anyhow::Result<()> {
    let client = connect(&args.connect)?;
    let outcome = if args.command.is_empty() {
        let stdin = std::io::stdin();
        for line in stdin.lock().lines() {
            let line = line.context("cannot read stdin")?;
            let words: Vec<String> = line.split_whitespace().map(str::to_owned).collect();
            if words.is_empty() {
                continue;
            }
            print_result(futures_lite::future::block_on(run_command(&client, &words)));
        }
        Ok(())
    } else {
        let result = futures_lite::future::block_on(run_command(&client, &args.command));
        let failed = result.is_err();
        print_result(result);
        if failed {
            Err(anyhow::anyhow!("the command failed"))
        } else {
            Ok(())
        }
    };
    futures_lite::future::block_on(client.shutdown());
    outcome.or_else(|_| std::process::exit(1))
}

fn print_result(result: anyhow::Result<String>) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = match result {
        Ok(line) => writeln!(out, "{line}"),
        Err(e) => writeln!(out, "ERR {e:#}"),
    };
    let _ = out.flush();
}

async fn run_command(client: &Member, words: &[String]) -> anyhow::Result<String> {
    let word = |i: usize| words.get(i).map(String::as_str);
    match (word(0), word(1)) {
        (Some("ping"), None) => Ok("PONG".to_owned()),
        (Some("counter"), Some(verb @ ("inc" | "get"))) => {
            let name = word(2).context("usage: counter inc|get NAME [AMOUNT]")?;
            let amount = match (verb, word(3)) {
                ("get", None) => 0,
                ("inc", None) => 1,
                ("inc", Some(a)) => a
                    .parse::<i64>()
                    .with_context(|| format!("AMOUNT `{a}` is not an integer"))?,
                _ => anyhow::bail!("usage: counter inc NAME [AMOUNT] | counter get NAME"),
            };
            let counter = client.object::<Counter>(name).await?;
            Ok(counter.inc(amount).await?.to_string())
        }
        _ => anyhow::bail!(
            "unknown command `{}` (commands: counter inc NAME [AMOUNT], counter get NAME, ping)",
            words.join(" ")
        ),
    }
}

fn status(connect_args: &Connect) -> anyhow::Result<()> {
    let client = connect(connect_args)?;
    let network = client
        .extension::<Network>()
        .context("the client has no network")?;
    let status = network.status();
    println!(
        "members: {}  member list version {}  partition table version {}  unowned partitions {}",
        status.members.len(),
        status.list_version,
        status.table_version,
        status.unowned
    );
    let m = status.migrations;
    println!(
        "migrations: planned {}  in flight {}  done {}  failed {}",
        m.planned, m.in_flight, m.done, m.failed
    );
    println!(
        "{:<22} {:<17} {:>6} {:<13} {:>6} {:>4} {:>5} {:>7}",
        "ADDRESS", "ID", "SHARDS", "PORTS", "MASTER", "LITE", "OWNED", "BACKUPS"
    );
    for m in &status.members {
        let e = &m.entry;
        let last = e
            .addr
            .port()
            .saturating_add(e.shards.saturating_sub(1) as u16);
        println!(
            "{:<22} {:<17} {:>6} {:<13} {:>6} {:>4} {:>5} {:>7}",
            e.addr.to_string(),
            e.id.to_string(),
            e.shards,
            format!("{}-{}", e.addr.port(), last),
            if m.master { "yes" } else { "no" },
            if e.lite { "yes" } else { "no" },
            m.owned,
            m.backups
        );
    }
    futures_lite::future::block_on(client.shutdown());
    Ok(())
}
