//! `corecast chaos`: a cluster of real member processes under load while members are killed
//! (`kill -9`, then restarted) and paused (SIGSTOP … SIGCONT), one fault at a time. Client
//! threads record a [`History`](super::history) of AtomicLong, Map and Lock operations through
//! a smart client; the checker judges it, and a ledger of unique keys counts acknowledged writes
//! that were lost.

use std::collections::BTreeMap;
use std::fmt;
use std::fs::File;
use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use corecast_engine::spi::OpError;
use corecast_engine::{Config, InvocationError, Member};
use corecast_net::Network;
use futures_lite::future::block_on;

use super::check::{self, Verdict};
use super::history::{Call, Event, Object, Outcome, Ret};
use crate::atomic::AtomicLong;
use crate::builtin::with_builtin_services;
use crate::lock::Lock;
use crate::map::Map;

/// A fault the run may inject.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum FaultKind {
    /// `kill -9` a member, wait until the cluster removed it, start a new one in its place.
    Kill,
    /// SIGSTOP a member for a while, then SIGCONT (past the member timeout it is removed and
    /// rejoins).
    Pause,
}

/// The run's settings (`corecast chaos --help`).
#[derive(Clone, Debug, clap::Args)]
pub struct ChaosArgs {
    /// Member processes.
    #[arg(long, default_value_t = 3)]
    pub members: usize,
    /// Shards per member.
    #[arg(long, default_value_t = 1)]
    pub shards: u32,
    /// Sync backups per partition.
    #[arg(long, default_value_t = 1)]
    pub backup_count: u32,
    /// How long the load runs, in seconds.
    #[arg(long, default_value_t = 30.0)]
    pub duration_secs: f64,
    /// Client threads, each one process of the history.
    #[arg(long, default_value_t = 6)]
    pub clients: u32,
    /// AtomicLongs in the history.
    #[arg(long, default_value_t = 3)]
    pub atomics: u32,
    /// Map keys in the history.
    #[arg(long, default_value_t = 12)]
    pub keys: u32,
    /// Locks in the history.
    #[arg(long, default_value_t = 2)]
    pub locks: u32,
    /// Faults to inject, in turn.
    #[arg(long, value_delimiter = ',', default_value = "kill,pause")]
    pub faults: Vec<FaultKind>,
    /// Quiet time between one fault's recovery and the next fault, in milliseconds (±50 %).
    #[arg(long, default_value_t = 2000)]
    pub fault_interval_millis: u64,
    /// The longest pause, in milliseconds (a pause lasts 100 ms up to this).
    #[arg(long, default_value_t = 4000)]
    pub max_pause_millis: u64,
    /// The members' heartbeat interval.
    #[arg(long, default_value_t = 200)]
    pub heartbeat_interval_millis: u64,
    /// The members' failure-detection timeout.
    #[arg(long, default_value_t = 1500)]
    pub member_timeout_millis: u64,
    /// How long a client call waits before its outcome is unknown.
    #[arg(long, default_value_t = 5000)]
    pub invocation_timeout_millis: u64,
    /// The seed of the workload and the fault schedule (default: from the clock).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Search steps the checker may take per object before calling it inconclusive.
    #[arg(long, default_value_t = 20_000_000)]
    pub check_budget: u64,
    /// Where the member logs, `history.jsonl` and `summary.txt` go.
    #[arg(long, default_value = "target/chaos")]
    pub out: PathBuf,
    /// More member settings, `KEY=VALUE` as for `corecast member --set`.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// The `corecast` binary to start members with (default: this program).
    #[arg(long)]
    pub binary: Option<PathBuf>,
}

/// Why a run could not be made (a failed verdict is not an error: it is in the [`Summary`]).
#[derive(Debug, thiserror::Error)]
pub enum ChaosError {
    /// A setting is out of range.
    #[error("--{key} {value}: {why}")]
    Setting {
        /// The flag.
        key: &'static str,
        /// Its value.
        value: String,
        /// What is wrong.
        why: &'static str,
    },
    /// A file or process could not be created.
    #[error("{what}: {source}")]
    Io {
        /// What was attempted.
        what: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The cluster did not form or recover in time.
    #[error("{0}")]
    Cluster(String),
    /// The smart client could not start or reach the objects.
    #[error("client: {0}")]
    Client(String),
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> ChaosError {
    let what = what.into();
    move |source| ChaosError::Io { what, source }
}

impl ChaosArgs {
    fn validate(&self) -> Result<(), ChaosError> {
        let bad = |key, value: String, why| Err(ChaosError::Setting { key, value, why });
        if self.members < 2 {
            return bad("members", self.members.to_string(), "needs at least 2");
        }
        if !(self.duration_secs.is_finite() && self.duration_secs > 0.0) {
            return bad(
                "duration-secs",
                self.duration_secs.to_string(),
                "must be > 0",
            );
        }
        if self.clients == 0 {
            return bad("clients", "0".into(), "must be ≥ 1");
        }
        if self.atomics + self.keys + self.locks == 0 {
            return bad("keys", "0".into(), "no objects to operate on");
        }
        if self.shards == 0 {
            return bad("shards", "0".into(), "must be ≥ 1");
        }
        Ok(())
    }
}

/// One fault as injected.
#[derive(Clone, Debug)]
pub struct FaultRecord {
    /// When, since the start of the load.
    pub at: Duration,
    /// Kill or pause.
    pub kind: FaultKind,
    /// The member's address.
    pub member: String,
    /// How long it was down (paused, or until the cluster removed it).
    pub down: Duration,
    /// From the fault until the cluster was whole and balanced again.
    pub recovered: Duration,
}

/// What a run did and found.
#[derive(Debug)]
pub struct Summary {
    /// The seed that drove the workload and the faults.
    pub seed: u64,
    /// Load time.
    pub elapsed: Duration,
    /// Operations of the history (final reads included).
    pub operations: usize,
    /// Answered.
    pub ok: usize,
    /// Definitely not applied.
    pub failed: usize,
    /// Outcome unknown.
    pub unknown: usize,
    /// Errors by text (the first line of each), most frequent first.
    pub errors: Vec<(String, usize)>,
    /// The faults injected.
    pub faults: Vec<FaultRecord>,
    /// Ledger keys whose put was acknowledged.
    pub acked_writes: usize,
    /// Of those, missing at the end.
    pub lost_writes: usize,
    /// The checker's verdict.
    pub verdict: Verdict,
    /// Where the history was written.
    pub history: PathBuf,
}

impl Summary {
    /// No acknowledged write lost and the history linearizable.
    pub fn passed(&self) -> bool {
        self.lost_writes == 0 && self.verdict.linearizable()
    }
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "chaos run, seed {}: {:.1} s, {} operations ({:.0}/s): {} ok, {} failed, {} unknown",
            self.seed,
            self.elapsed.as_secs_f64(),
            self.operations,
            self.operations as f64 / self.elapsed.as_secs_f64().max(1e-9),
            self.ok,
            self.failed,
            self.unknown
        )?;
        for (text, n) in self.errors.iter().take(5) {
            writeln!(f, "  {n:>6} × {text}")?;
        }
        writeln!(f, "faults: {}", self.faults.len())?;
        for x in &self.faults {
            writeln!(
                f,
                "  {:>7.1} s  {:<5} {:<16} down {:>5} ms, whole again after {:>5} ms",
                x.at.as_secs_f64(),
                format!("{:?}", x.kind).to_lowercase(),
                x.member,
                x.down.as_millis(),
                x.recovered.as_millis()
            )?;
        }
        writeln!(
            f,
            "acknowledged writes lost: {} of {}",
            self.lost_writes, self.acked_writes
        )?;
        writeln!(f, "linearizability: {}", self.verdict)?;
        write!(f, "history: {}", self.history.display())
    }
}

/// A base port with `n` free ports after it (shard i listens on base + i).
pub fn free_ports(n: u16) -> Option<u16> {
    for _ in 0..200 {
        let base = TcpListener::bind("127.0.0.1:0")
            .and_then(|probe| probe.local_addr())
            .ok()?
            .port();
        if base.checked_add(n).is_none() {
            continue;
        }
        if (0..n).all(|i| TcpListener::bind(("127.0.0.1", base + i)).is_ok()) {
            return Some(base);
        }
    }
    None
}

/// A small deterministic generator (xorshift64*).
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// One member process slot: the running process (if any) and where it logs.
struct Slot {
    child: Option<Child>,
    addr: String,
}

/// The member processes.
struct Procs<'a> {
    args: &'a ChaosArgs,
    binary: PathBuf,
    slots: Vec<Slot>,
    started: usize,
}

impl Procs<'_> {
    fn start(&mut self, slot: Option<usize>) -> Result<usize, ChaosError> {
        let base = free_ports(self.args.shards as u16)
            .ok_or_else(|| ChaosError::Cluster("no free ports on 127.0.0.1".into()))?;
        let addr = format!("127.0.0.1:{base}");
        let log_path = self.args.out.join(format!("member-{}.log", self.started));
        self.started += 1;
        let log = File::create(&log_path).map_err(io(format!("{}", log_path.display())))?;
        let err = log
            .try_clone()
            .map_err(io(format!("{}", log_path.display())))?;
        let a = self.args;
        let mut cmd = Command::new(&self.binary);
        cmd.args(["member", "--bind", &addr, "--shards", &a.shards.to_string()])
            .args(["--set", "io-memory-kib=256"])
            .args(["--set", "network.join-timeout-millis=1000"])
            .args([
                "--set",
                &format!(
                    "network.heartbeat-interval-millis={}",
                    a.heartbeat_interval_millis
                ),
            ])
            .args([
                "--set",
                &format!("network.member-timeout-millis={}", a.member_timeout_millis),
            ])
            .args(["--set", &format!("backups.backup-count={}", a.backup_count)]);
        for s in &a.set {
            cmd.args(["--set", s]);
        }
        let seeds: Vec<&str> = self
            .slots
            .iter()
            .filter(|s| s.child.is_some())
            .map(|s| s.addr.as_str())
            .collect();
        if !seeds.is_empty() {
            cmd.arg("--seeds").arg(seeds.join(","));
        }
        cmd.env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err);
        let child = cmd
            .spawn()
            .map_err(io(format!("start {}", self.binary.display())))?;
        let fresh = Slot {
            child: Some(child),
            addr: addr.clone(),
        };
        let index = match slot {
            Some(i) => {
                self.slots[i] = fresh;
                i
            }
            None => {
                self.slots.push(fresh);
                self.slots.len() - 1
            }
        };
        // Members join one at a time: wait for the log line.
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let text = std::fs::read_to_string(&log_path).unwrap_or_default();
            if text.contains("joined the cluster") {
                return Ok(index);
            }
            if let Some(Ok(Some(status))) = self.slots[index].child.as_mut().map(Child::try_wait) {
                return Err(ChaosError::Cluster(format!(
                    "member {addr} exited ({status}) before joining; log {}",
                    log_path.display()
                )));
            }
            if Instant::now() > deadline {
                return Err(ChaosError::Cluster(format!(
                    "member {addr} did not join within 20 s; log {}",
                    log_path.display()
                )));
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    fn signal(&self, i: usize, signal: &str) -> Result<(), ChaosError> {
        let Some(child) = &self.slots[i].child else {
            return Ok(());
        };
        let pid = child.id().to_string();
        let status = Command::new("kill")
            .args([signal, &pid])
            .status()
            .map_err(io(format!("kill {signal} {pid}")))?;
        if status.success() {
            Ok(())
        } else {
            Err(ChaosError::Cluster(format!(
                "kill {signal} {pid}: {status}"
            )))
        }
    }

    fn kill9(&mut self, i: usize) {
        if let Some(mut child) = self.slots[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn addrs(&self) -> Vec<String> {
        self.slots
            .iter()
            .filter(|s| s.child.is_some())
            .map(|s| s.addr.clone())
            .collect()
    }
}

impl Drop for Procs<'_> {
    fn drop(&mut self) {
        for i in 0..self.slots.len() {
            self.kill9(i);
        }
    }
}

/// The cluster as the client sees it: `members` data members, every partition owned with its
/// backups, owners balanced.
fn whole(network: &Network, members: usize, backups: u32) -> bool {
    let s = network.status();
    if s.members.len() != members || s.unowned != 0 {
        return false;
    }
    let partitions: usize = s.members.iter().map(|m| m.owned).sum();
    let copies: usize = s.members.iter().map(|m| m.backups).sum();
    let max = s.members.iter().map(|m| m.owned).max().unwrap_or(0);
    let min = s.members.iter().map(|m| m.owned).min().unwrap_or(0);
    let want = (backups as usize).min(members.saturating_sub(1));
    copies == partitions * want && max - min <= 2
}

fn wait_whole(
    network: &Network,
    members: usize,
    backups: u32,
    limit: Duration,
) -> Result<(), ChaosError> {
    let start = Instant::now();
    while !whole(network, members, backups) {
        if start.elapsed() > limit {
            let s = network.status();
            return Err(ChaosError::Cluster(format!(
                "the cluster was not whole {} s after a fault: {} members, {} unowned partitions",
                limit.as_secs(),
                s.members.len(),
                s.unowned
            )));
        }
        thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

/// The objects' names.
const MAP: &str = "chaos";
const LEDGER: &str = "chaos-ledger";
fn atomic_name(i: u32) -> String {
    format!("chaos-{i}")
}
fn lock_name(i: u32) -> String {
    format!("chaos-{i}")
}
fn key_name(i: u32) -> Vec<u8> {
    format!("k{i}").into_bytes()
}

/// What one client thread recorded.
#[derive(Default)]
struct Record {
    events: Vec<Event>,
    errors: BTreeMap<String, usize>,
    acked: Vec<(Vec<u8>, Vec<u8>)>,
}

/// The handles a client thread works with.
struct Objects {
    atomics: Vec<AtomicLong>,
    map: Map,
    ledger: Map,
    locks: Vec<Lock>,
}

impl Objects {
    fn get(client: &Member, args: &ChaosArgs, owner: u32) -> Result<Self, InvocationError> {
        block_on(async {
            let mut atomics = Vec::new();
            for i in 0..args.atomics {
                atomics.push(client.object::<AtomicLong>(&atomic_name(i)).await?);
            }
            let mut locks = Vec::new();
            for i in 0..args.locks {
                let lock = client.object::<Lock>(&lock_name(i)).await?;
                locks.push(lock.with_owner(u64::from(owner)));
            }
            Ok(Objects {
                atomics,
                map: client.object::<Map>(MAP).await?,
                ledger: client.object::<Map>(LEDGER).await?,
                locks,
            })
        })
    }
}

fn error_text(e: &InvocationError) -> String {
    // The partition number and owner address make every text different; keep the kind.
    let text = match e {
        InvocationError::Operation { source, .. } => match source {
            OpError::Timeout { reason, .. } => format!("timeout: {reason}"),
            other => other.to_string(),
        },
        other => other.to_string(),
    };
    let text: String = text.chars().filter(|c| !c.is_ascii_digit()).collect();
    text.lines().next().unwrap_or_default().to_owned()
}

/// A map value as the history's number (the first 8 bytes, little-endian).
fn decode(value: Option<Vec<u8>>) -> Option<u64> {
    value.map(|b| {
        let mut raw = [0u8; 8];
        let n = b.len().min(8);
        raw[..n].copy_from_slice(&b[..n]);
        u64::from_le_bytes(raw)
    })
}

/// A value that fits the map: unique per process and sequence number.
fn unique(process: u32, seq: u64) -> u64 {
    (u64::from(process) << 40) | seq
}

/// Runs the operations of process `process` until `stop`.
fn client_thread(
    process: u32,
    objects: &Objects,
    args: &ChaosArgs,
    seed: u64,
    start: Instant,
    stop: &AtomicBool,
) -> Record {
    let mut rng = Rng::new(seed ^ u64::from(process).wrapping_mul(0x5851_F42D_4C95_7F2D));
    let mut record = Record::default();
    let mut holds = vec![false; objects.locks.len()];
    let mut last_seen = vec![0i64; objects.atomics.len()];
    let mut seq = 0u64;
    let now = || start.elapsed().as_nanos() as u64;
    let kinds = [
        (objects.atomics.len() as u64, 0u8),
        (u64::from(args.keys), 1),
        (objects.locks.len() as u64, 2),
    ];
    let total: u64 = kinds.iter().map(|k| k.0).sum();
    while !stop.load(Ordering::Relaxed) {
        seq += 1;
        if seq % 8 == 0 {
            let key = format!("l-{process}-{seq}").into_bytes();
            let value = seq.to_le_bytes().to_vec();
            match block_on(objects.ledger.set(&key, &value)) {
                Ok(()) => record.acked.push((key, value)),
                Err(e) => *record.errors.entry(error_text(&e)).or_default() += 1,
            }
            continue;
        }
        let mut pick = rng.below(total);
        let mut kind = 0;
        for (n, k) in kinds {
            if pick < n {
                kind = k;
                break;
            }
            pick -= n;
        }
        let i = pick as usize;
        let roll = rng.below(100);
        let invoked_ns = now();
        let (object, call, result): (Object, Call, Result<Ret, InvocationError>) = match kind {
            0 => {
                let a = &objects.atomics[i];
                let object = Object::Atomic(i as u32);
                if roll < 40 {
                    (object, Call::Read, block_on(a.get()).map(Ret::Value))
                } else if roll < 80 {
                    let delta = 1 + rng.below(5) as i64;
                    let r = block_on(a.add_and_get(delta)).map(Ret::Value);
                    (object, Call::Add { delta }, r)
                } else {
                    let (expect, update) = (last_seen[i], rng.below(1000) as i64);
                    let r = block_on(a.compare_and_set(expect, update)).map(Ret::Swapped);
                    (object, Call::Cas { expect, update }, r)
                }
            }
            1 => {
                let key = key_name(i as u32);
                let object = Object::MapKey(i as u32);
                if roll < 45 {
                    let r = block_on(objects.map.get(&key)).map(|v| Ret::Entry(decode(v)));
                    (object, Call::Read, r)
                } else if roll < 85 {
                    let value = unique(process, seq);
                    let r = block_on(objects.map.put(&key, &value.to_le_bytes()))
                        .map(|v| Ret::Entry(decode(v)));
                    (object, Call::Put { value }, r)
                } else {
                    let r = block_on(objects.map.remove(&key)).map(|v| Ret::Entry(decode(v)));
                    (object, Call::Remove, r)
                }
            }
            _ => {
                let lock = &objects.locks[i];
                let object = Object::Lock(i as u32);
                if roll < 15 {
                    let r = block_on(lock.info()).map(|info| Ret::Info {
                        held: info.held,
                        fence: info.fence,
                    });
                    (object, Call::Read, r)
                } else if holds[i] {
                    let r = match block_on(lock.unlock()) {
                        Ok(()) => Ok(Ret::Unlocked),
                        Err(InvocationError::Operation {
                            source: OpError::Failed(_),
                            ..
                        }) => Ok(Ret::NotOwner),
                        Err(e) => Err(e),
                    };
                    (object, Call::Unlock { owner: process }, r)
                } else {
                    let r = block_on(lock.try_lock(Duration::ZERO)).map(Ret::Fence);
                    (object, Call::TryLock { owner: process }, r)
                }
            }
        };
        let completed_ns = now();
        let outcome = match result {
            Ok(ret) => {
                match ret {
                    Ret::Value(v) => last_seen[i] = v,
                    Ret::Fence(f) => holds[i] = f.is_some(),
                    // An unlock that gave up the last hold, or one refused: either way this
                    // owner holds it no longer (it never takes a lock twice).
                    Ret::Unlocked | Ret::NotOwner => holds[i] = false,
                    Ret::Swapped(true) => {
                        if let Call::Cas { update, .. } = call {
                            last_seen[i] = update;
                        }
                    }
                    _ => {}
                }
                Outcome::Ok(ret)
            }
            Err(e) => {
                *record.errors.entry(error_text(&e)).or_default() += 1;
                if matches!(object, Object::Lock(_)) {
                    // It may hold the lock now: give it up next time (NotOwner if not).
                    holds[i] = true;
                }
                Outcome::Unknown
            }
        };
        record.events.push(Event {
            process,
            object,
            call,
            invoked_ns,
            completed_ns,
            outcome,
        });
    }
    record
}

/// Runs the chaos test described by `args` and returns what it found.
///
/// Errors: bad settings, processes that cannot start, a cluster that does not form or does not
/// recover from a fault within a minute.
pub fn run(args: &ChaosArgs) -> Result<Summary, ChaosError> {
    args.validate()?;
    let seed = args.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
    });
    std::fs::create_dir_all(&args.out).map_err(io(format!("{}", args.out.display())))?;
    let binary = match &args.binary {
        Some(b) => b.clone(),
        None => std::env::current_exe().map_err(io("the path of this program"))?,
    };
    let mut procs = Procs {
        args,
        binary,
        slots: Vec::new(),
        started: 0,
    };
    for _ in 0..args.members {
        procs.start(None)?;
    }
    tracing::info!(members = args.members, seed, "cluster up");

    let mut config = Config {
        shards: Some(1),
        ..Config::default()
    };
    config.network.invocation_timeout_millis = args.invocation_timeout_millis;
    let builder = with_builtin_services(Member::builder(config));
    let client = block_on(corecast_net::start_client(
        builder,
        &procs.addrs(),
        Duration::from_secs(10),
    ))
    .map_err(|e| ChaosError::Client(e.to_string()))?;
    let client = Arc::new(client);
    let result = drive(args, seed, &mut procs, &client);
    if let Ok(c) = Arc::try_unwrap(client) {
        block_on(c.shutdown());
    }
    result
}

fn network(client: &Member) -> Result<&Network, ChaosError> {
    client
        .extension::<Network>()
        .ok_or_else(|| ChaosError::Client("the client has no network".into()))
}

fn drive(
    args: &ChaosArgs,
    seed: u64,
    procs: &mut Procs<'_>,
    client: &Arc<Member>,
) -> Result<Summary, ChaosError> {
    let recover_limit = Duration::from_secs(60);
    wait_whole(
        network(client)?,
        args.members,
        args.backup_count,
        recover_limit,
    )?;
    let start = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let mut threads = Vec::new();
    for process in 0..args.clients {
        let objects = Objects::get(client, args, process)
            .map_err(|e| ChaosError::Client(format!("cannot reach the objects: {e}")))?;
        let (args, stop) = (args.clone(), stop.clone());
        threads.push(thread::spawn(move || {
            client_thread(process, &objects, &args, seed, start, &stop)
        }));
    }

    let faults = inject_faults(args, seed, procs, client, start);
    stop.store(true, Ordering::Relaxed);
    let records: Vec<Record> = threads
        .into_iter()
        .map(|t| t.join().unwrap_or_default())
        .collect();
    let faults = faults?;
    let elapsed = start.elapsed();
    wait_whole(
        network(client)?,
        args.members,
        args.backup_count,
        recover_limit,
    )?;
    tracing::info!("load stopped; final reads");

    let mut events: Vec<Event> = Vec::new();
    let mut errors: BTreeMap<String, usize> = BTreeMap::new();
    let mut acked = Vec::new();
    for r in records {
        events.extend(r.events);
        for (text, n) in r.errors {
            *errors.entry(text).or_default() += n;
        }
        acked.extend(r.acked);
    }
    // Final reads, after every write, by a process of their own: a lost write shows.
    let last = Objects::get(client, args, args.clients)
        .map_err(|e| ChaosError::Client(format!("final reads: {e}")))?;
    let reader = args.clients;
    for i in 0..args.atomics {
        let invoked_ns = start.elapsed().as_nanos() as u64;
        if let Ok(v) = block_on(last.atomics[i as usize].get()) {
            events.push(final_read(
                reader,
                Object::Atomic(i),
                invoked_ns,
                start,
                Ret::Value(v),
            ));
        }
    }
    for i in 0..args.keys {
        let invoked_ns = start.elapsed().as_nanos() as u64;
        if let Ok(v) = block_on(last.map.get(&key_name(i))) {
            let ret = Ret::Entry(decode(v));
            events.push(final_read(
                reader,
                Object::MapKey(i),
                invoked_ns,
                start,
                ret,
            ));
        }
    }
    let mut lost_writes = 0;
    for (key, value) in &acked {
        match block_on(last.ledger.get(key)) {
            Ok(Some(v)) if &v == value => {}
            Ok(_) => lost_writes += 1,
            Err(e) => {
                return Err(ChaosError::Client(format!(
                    "reading back the ledger after the run: {e}"
                )))
            }
        }
    }

    let history = args.out.join("history.jsonl");
    write_history(&history, &events)?;
    tracing::info!(operations = events.len(), "checking the history");
    let verdict = check::check(&events, args.check_budget);
    let count = |f: fn(&Outcome) -> bool| events.iter().filter(|e| f(&e.outcome)).count();
    let mut errors: Vec<(String, usize)> = errors.into_iter().collect();
    errors.sort_by_key(|e| std::cmp::Reverse(e.1));
    let summary = Summary {
        seed,
        elapsed,
        operations: events.len(),
        ok: count(|o| matches!(o, Outcome::Ok(_))),
        failed: count(|o| matches!(o, Outcome::Failed)),
        unknown: count(|o| matches!(o, Outcome::Unknown)),
        errors,
        faults,
        acked_writes: acked.len(),
        lost_writes,
        verdict,
        history,
    };
    let text = args.out.join("summary.txt");
    std::fs::write(&text, format!("{summary}\n")).map_err(io(format!("{}", text.display())))?;
    Ok(summary)
}

fn final_read(process: u32, object: Object, invoked_ns: u64, start: Instant, ret: Ret) -> Event {
    Event {
        process,
        object,
        call: Call::Read,
        invoked_ns,
        completed_ns: start.elapsed().as_nanos() as u64,
        outcome: Outcome::Ok(ret),
    }
}

fn write_history(path: &Path, events: &[Event]) -> Result<(), ChaosError> {
    let what = || format!("{}", path.display());
    let file = File::create(path).map_err(io(what()))?;
    let mut out = std::io::BufWriter::new(file);
    for e in events {
        let line = serde_json::to_string(e).map_err(|e| ChaosError::Io {
            what: what(),
            source: std::io::Error::other(e),
        })?;
        writeln!(out, "{line}").map_err(io(what()))?;
    }
    out.flush().map_err(io(what()))
}

/// Injects one fault at a time until the duration is up; each ends with the cluster whole again.
fn inject_faults(
    args: &ChaosArgs,
    seed: u64,
    procs: &mut Procs<'_>,
    client: &Member,
    start: Instant,
) -> Result<Vec<FaultRecord>, ChaosError> {
    let mut rng = Rng::new(seed);
    let network = network(client)?;
    let end = start + Duration::from_secs_f64(args.duration_secs);
    let timeout = Duration::from_millis(args.member_timeout_millis);
    let mut faults = Vec::new();
    loop {
        let quiet = Duration::from_millis(
            args.fault_interval_millis / 2 + rng.below(args.fault_interval_millis + 1),
        );
        thread::sleep(quiet.min(end.saturating_duration_since(Instant::now())));
        // A fault needs time to be seen and recovered from before the end.
        if Instant::now() + timeout * 2 > end || args.faults.is_empty() {
            break;
        }
        // The kinds in turn, so a short run has each of them.
        let kind = args.faults[faults.len() % args.faults.len()];
        let i = rng.below(procs.slots.len() as u64) as usize;
        let member = procs.slots[i].addr.clone();
        let at = start.elapsed();
        let began = Instant::now();
        let down = match kind {
            FaultKind::Kill => {
                tracing::info!(%member, "kill -9");
                procs.kill9(i);
                let limit = timeout * 4;
                while network.status().members.len() >= args.members && began.elapsed() < limit {
                    thread::sleep(Duration::from_millis(20));
                }
                let down = began.elapsed();
                procs.start(Some(i))?;
                down
            }
            FaultKind::Pause => {
                let length =
                    Duration::from_millis(100 + rng.below(args.max_pause_millis.max(100) - 99));
                tracing::info!(%member, millis = length.as_millis() as u64, "SIGSTOP");
                procs.signal(i, "-STOP")?;
                thread::sleep(length);
                procs.signal(i, "-CONT")?;
                length
            }
        };
        wait_whole(
            network,
            args.members,
            args.backup_count,
            Duration::from_secs(60),
        )?;
        let recovered = began.elapsed();
        tracing::info!(%member, ?kind, millis = recovered.as_millis() as u64, "whole again");
        faults.push(FaultRecord {
            at,
            kind,
            member,
            down,
            recovered,
        });
    }
    Ok(faults)
}
