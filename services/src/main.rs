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
use corecast_services::atomic::AtomicLong;
use corecast_services::builtin::with_builtin_services;
use corecast_services::chaos::run::ChaosArgs;
use corecast_services::config_args::ConfigArgs;
use corecast_services::counter::Counter;
use corecast_services::lock::Lock;
use corecast_services::map::Map;
use corecast_services::topic::Topic;
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
    /// Run member processes under load while killing and pausing them; check the history.
    Chaos(ChaosArgs),
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
    /// `ping`, `counter …`, `map …`, `atomic …`, `topic …`, `lock …` (run `corecast client
    /// --members … help` for the list); none: read commands from stdin, one per line.
    command: Vec<String>,
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Load and validate a config, then print what a member would start with.
    Check(ConfigArgs),
}

fn main() {
    corecast_engine::cpu::prefer_avx2_string_functions();
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
        // The chaos run's progress goes to stderr, its summary to stdout.
        Command::Chaos(_) => {
            use std::io::IsTerminal;
            corecast_services::logging::init(
                "warn,corecast_services::chaos=info",
                std::io::stderr,
                std::io::stderr().is_terminal(),
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
        Command::Chaos(args) => {
            let summary = corecast_services::chaos::run::run(&args)?;
            println!("{summary}");
            anyhow::ensure!(
                summary.passed(),
                "the run failed its checks (history in {})",
                summary.history.display()
            );
            Ok(())
        }
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
    let builder = with_builtin_services(Member::builder(config.clone()));
    let member = futures_lite::future::block_on(corecast_net::start_member(builder))?;
    let resp =
        futures_lite::future::block_on(corecast_services::resp::start(member.invoker(), &config));
    if let Err(e) = resp {
        futures_lite::future::block_on(member.shutdown());
        return Err(e.into());
    }
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
    if let Some(result) = stream_command(&client, &args.command) {
        futures_lite::future::block_on(client.shutdown());
        return result;
    }
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

/// The marker printed for a missing value.
const NIL: &str = "(nil)";

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn or_nil(value: Option<Vec<u8>>) -> String {
    value.map_or_else(|| NIL.to_owned(), |v| text(&v))
}

/// Positional words, and `(flag, value)` pairs.
type Words<'a> = (Vec<&'a str>, Vec<(&'a str, &'a str)>);

/// Splits `--name VALUE` flags out of `words`: the positional words, and the flags' values.
fn flags<'a>(words: &'a [String], known: &[&str]) -> anyhow::Result<Words<'a>> {
    let mut positional = Vec::new();
    let mut found = Vec::new();
    let mut it = words.iter();
    while let Some(w) = it.next() {
        if let Some(name) = w.strip_prefix("--") {
            anyhow::ensure!(known.contains(&name), "unknown flag `{w}`");
            let value = it
                .next()
                .with_context(|| format!("flag `{w}` needs a value"))?;
            found.push((name, value.as_str()));
        } else {
            positional.push(w.as_str());
        }
    }
    Ok((positional, found))
}

fn number<T: std::str::FromStr>(what: &str, value: &str) -> anyhow::Result<T> {
    value
        .parse::<T>()
        .map_err(|_| anyhow::anyhow!("{what} `{value}` is not a valid number"))
}

fn secs(flags: &[(&str, &str)], name: &str) -> anyhow::Result<Option<Duration>> {
    flags
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, v)| number::<f64>(&format!("--{name}"), v))
        .transpose()?
        .map(|s| {
            anyhow::ensure!(
                s.is_finite() && s >= 0.0,
                "--{name} must be a number of seconds ≥ 0"
            );
            Ok(Duration::from_secs_f64(s))
        })
        .transpose()
}

const USAGE: &str = "commands: ping | counter inc NAME [AMOUNT] | counter get NAME | \
map put NAME KEY VALUE [--ttl SECS] | map get NAME KEY | map remove NAME KEY | map size NAME | \
map entries NAME | map listen NAME | atomic get NAME | atomic set NAME VALUE | \
atomic add NAME DELTA | atomic cas NAME EXPECT NEW | topic publish NAME MESSAGE | \
topic subscribe NAME | lock acquire NAME [--lease SECS] | lock try NAME [--timeout SECS] [--lease SECS] | \
lock release NAME";

async fn run_command(client: &Member, words: &[String]) -> anyhow::Result<String> {
    let (pos, flags) = flags(words, &["ttl", "lease", "timeout"])?;
    let arg = |i: usize| pos.get(i).copied();
    let usage = || anyhow::anyhow!("usage: {}", USAGE);
    match (arg(0), arg(1)) {
        (Some("ping"), None) => Ok("PONG".to_owned()),
        (Some("counter"), Some(verb @ ("inc" | "get"))) => {
            let name = arg(2).context("usage: counter inc|get NAME [AMOUNT]")?;
            let amount = match (verb, arg(3)) {
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
        (Some("map"), Some(verb)) => {
            let map = client.object::<Map>(arg(2).ok_or_else(usage)?).await?;
            let key = || arg(3).map(str::as_bytes).ok_or_else(usage);
            match (verb, pos.len()) {
                ("put", 5) => {
                    let value = arg(4).ok_or_else(usage)?.as_bytes();
                    let old = match secs(&flags, "ttl")? {
                        Some(ttl) => map.put_with_ttl(key()?, value, ttl).await?,
                        None => map.put(key()?, value).await?,
                    };
                    Ok(or_nil(old))
                }
                ("get", 4) => Ok(or_nil(map.get(key()?).await?)),
                ("remove", 4) => Ok(or_nil(map.remove(key()?).await?)),
                ("size", 3) => Ok(map.size().await?.to_string()),
                ("entries", 3) => {
                    let mut entries = map.entries().await?;
                    if entries.is_empty() {
                        return Ok("(empty)".to_owned());
                    }
                    entries.sort();
                    let lines: Vec<String> = entries
                        .iter()
                        .map(|(k, v)| format!("{} {}", text(k), text(v)))
                        .collect();
                    Ok(lines.join("\n"))
                }
                _ => Err(usage()),
            }
        }
        (Some("atomic"), Some(verb)) => {
            let atomic = client
                .object::<AtomicLong>(arg(2).ok_or_else(usage)?)
                .await?;
            let n =
                |i: usize| -> anyhow::Result<i64> { number("value", arg(i).ok_or_else(usage)?) };
            match (verb, pos.len()) {
                ("get", 3) => Ok(atomic.get().await?.to_string()),
                ("set", 4) => {
                    let v = n(3)?;
                    atomic.set(v).await?;
                    Ok(v.to_string())
                }
                ("add", 4) => Ok(atomic.add_and_get(n(3)?).await?.to_string()),
                ("cas", 5) => Ok(atomic.compare_and_set(n(3)?, n(4)?).await?.to_string()),
                _ => Err(usage()),
            }
        }
        (Some("topic"), Some("publish")) if pos.len() >= 4 => {
            let topic = client.object::<Topic>(arg(2).ok_or_else(usage)?).await?;
            topic.publish(pos[3..].join(" ").as_bytes()).await?;
            Ok("OK".to_owned())
        }
        (Some("lock"), Some(verb)) if pos.len() == 3 => {
            let lock = client.object::<Lock>(arg(2).ok_or_else(usage)?).await?;
            let lease = secs(&flags, "lease")?;
            match verb {
                "acquire" => Ok(lock.lock_with_lease(lease).await?.to_string()),
                "try" => {
                    let timeout = secs(&flags, "timeout")?.unwrap_or_default();
                    let fence = lock.try_lock_with_lease(timeout, lease).await?;
                    Ok(fence.map_or_else(|| NIL.to_owned(), |f| f.to_string()))
                }
                "release" => {
                    lock.unlock().await?;
                    Ok("OK".to_owned())
                }
                _ => Err(usage()),
            }
        }
        _ => anyhow::bail!("unknown command `{}` ({USAGE})", words.join(" ")),
    }
}

/// `topic subscribe NAME` and `map listen NAME`: print `(subscribed)` once registered, then one
/// line per message or event until interrupted. `None` for other commands.
fn stream_command(client: &Member, words: &[String]) -> Option<anyhow::Result<()>> {
    use std::io::Write;
    let word = |i: usize| words.get(i).map(String::as_str);
    let print = |line: String| {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{line}");
        let _ = out.flush();
    };
    match (word(0), word(1), word(2), words.len()) {
        (Some("topic"), Some("subscribe"), Some(name), 3) => {
            Some(futures_lite::future::block_on(async {
                let topic = client.object::<Topic>(name).await?;
                let sub = topic.subscribe().await?;
                print("(subscribed)".to_owned());
                while let Some(m) = sub.next().await {
                    print(text(&m.payload));
                }
                Ok(())
            }))
        }
        (Some("map"), Some("listen"), Some(name), 3) => {
            Some(futures_lite::future::block_on(async {
                let map = client.object::<Map>(name).await?;
                let listener = map.listen(true).await?;
                print("(subscribed)".to_owned());
                while let Some(e) = listener.next().await {
                    let mut line = format!("{} {}", e.kind, text(&e.key));
                    if let Some(v) = &e.value {
                        line.push(' ');
                        line.push_str(&text(v));
                    }
                    if let Some(old) = &e.old_value {
                        line.push_str(&format!(" (was {})", text(old)));
                    }
                    print(line);
                }
                Ok(())
            }))
        }
        _ => None,
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
    let stats = futures_lite::future::block_on(
        network.member_stats(client.invoker(), Duration::from_secs(2)),
    );
    println!(
        "{:<22} {:<17} {:>6} {:<13} {:>6} {:>4} {:>5} {:>7} {:>12} {:>8} {:>5} {:>8}",
        "ADDRESS",
        "ID",
        "SHARDS",
        "PORTS",
        "MASTER",
        "LITE",
        "OWNED",
        "BACKUPS",
        "OPS",
        "ERRORS",
        "CONNS",
        "REJECTED"
    );
    for m in &status.members {
        let e = &m.entry;
        let last = e
            .addr
            .port()
            .saturating_add(e.shards.saturating_sub(1) as u16);
        let numbers = stats.get(&e.id.0).map_or_else(
            || format!("{:>12} {:>8} {:>5} {:>8}", "-", "-", "-", "-"),
            |n| {
                format!(
                    "{:>12} {:>8} {:>5} {:>8}",
                    n.ops, n.errors, n.connections, n.rejected
                )
            },
        );
        println!(
            "{:<22} {:<17} {:>6} {:<13} {:>6} {:>4} {:>5} {:>7} {numbers}",
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
