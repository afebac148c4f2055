//! Real `corecast member` processes on free loopback ports for the services' tests: start,
//! kill -9, logs, `corecast client` and `corecast cluster status`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::net::TcpListener;
use std::process::{Child, Command, Output, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use corecast_net::metrics::Sample;

pub const BIN: &str = env!("CARGO_BIN_EXE_corecast");

/// A base port with `n` free ports after it (shard i listens on base + i).
pub fn free_ports(n: u16) -> u16 {
    for _ in 0..200 {
        let probe = TcpListener::bind("127.0.0.1:0").unwrap();
        let base = probe.local_addr().unwrap().port();
        drop(probe);
        if base.checked_add(n).is_none() {
            continue;
        }
        let all_free = (0..n).all(|i| TcpListener::bind(("127.0.0.1", base + i)).is_ok());
        if all_free {
            return base;
        }
    }
    panic!("no {n} consecutive free ports");
}

pub struct Proc {
    pub child: Child,
    pub addr: String,
    pub log: std::path::PathBuf,
    /// Its cluster's name, its own to the test that started it.
    pub cluster: String,
}

/// Test members' cluster names by address, for the clients and `cluster status` runs that
/// reach them (see [`cluster_name`]).
static CLUSTERS: std::sync::Mutex<Vec<(String, String)>> = std::sync::Mutex::new(Vec::new());

/// The name for a new test cluster, or the cluster of `seed` when joining one. Every test
/// cluster has its own: tests run side by side, a killed member's port is handed to another
/// test's member, and a master probing its old members' addresses for a split brain would
/// otherwise find that other test's cluster under the same default name and merge with it
/// (seen: a counter read 38 after 21 increments, the other test's counter).
pub fn cluster_name(seed: Option<&str>, port: u16) -> String {
    seed.and_then(cluster_of)
        .unwrap_or_else(|| format!("test-{}-{port}", std::process::id()))
}

/// Records that the member at `addr` is in cluster `name`.
pub fn register(addr: &str, name: &str) {
    let mut clusters = CLUSTERS.lock().unwrap();
    clusters.retain(|(a, _)| a != addr);
    clusters.push((addr.to_owned(), name.to_owned()));
}

/// The cluster of the test member at `addr`, if a test started one there.
pub fn cluster_of(addr: &str) -> Option<String> {
    let clusters = CLUSTERS.lock().unwrap();
    clusters
        .iter()
        .find(|(a, _)| a == addr)
        .map(|(_, n)| n.clone())
}

impl Proc {
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM (a graceful shutdown), then waits up to `limit` for the exit; its status.
    pub fn sigterm(&mut self, limit: Duration) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        assert!(sent.success(), "kill -TERM {pid}");
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(start.elapsed() < limit, "no exit {limit:?} after SIGTERM");
            sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Starts a member process; its stdout (the log) goes to a file.
pub fn member(seeds: &[&Proc], extra: &[&str]) -> Proc {
    let base = free_ports(2);
    let addr = format!("127.0.0.1:{base}");
    let dir = std::env::temp_dir().join(format!("corecast-test-{}-{base}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let log = dir.join("member.log");
    let file = std::fs::File::create(&log).unwrap();
    let mut cmd = Command::new(BIN);
    cmd.args(["member", "--bind", &addr]);
    if !extra.contains(&"--shards") {
        cmd.args(["--shards", "2"]);
    }
    cmd.args([
        "--set",
        "network.heartbeat-interval-millis=200",
        "--set",
        "network.member-timeout-millis=1500",
        "--set",
        "network.join-timeout-millis=1000",
        "--set",
        "io-memory-kib=256",
    ])
    .args(extra)
    .env("RUST_LOG", "info")
    .stdout(file)
    .stderr(Stdio::piped());
    if !seeds.is_empty() {
        let list: Vec<&str> = seeds.iter().map(|s| s.addr.as_str()).collect();
        cmd.arg("--seeds").arg(list.join(","));
    }
    let cluster = match extra.iter().position(|a| *a == "--cluster-name") {
        Some(i) => extra[i + 1].to_owned(),
        None => {
            let name = cluster_name(seeds.first().map(|s| s.addr.as_str()), base);
            cmd.args(["--cluster-name", &name]);
            name
        }
    };
    register(&addr, &cluster);
    let child = cmd.spawn().unwrap();
    Proc {
        child,
        addr,
        log,
        cluster,
    }
}

/// The Prometheus text a member serves on `port` (`--metrics-port`).
pub fn scrape(port: u16) -> String {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut text = String::new();
    std::io::Read::read_to_string(&mut s, &mut text).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.contains("text/plain; version=0.0.4"), "{head}");
    body.to_owned()
}

/// The sum of the samples named `name` (with `label`, if given).
pub fn sum(samples: &[Sample], name: &str, label: Option<(&str, &str)>) -> f64 {
    samples
        .iter()
        .filter(|s| s.name == name)
        .filter(|s| label.is_none_or(|(k, v)| s.labels.iter().any(|l| l.0 == k && l.1 == v)))
        .map(|s| s.value)
        .sum()
}

pub fn wait_for(what: &str, timeout: Duration, mut check: impl FnMut() -> bool) {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if check() {
            return;
        }
        sleep(Duration::from_millis(100));
    }
    panic!("timed out after {timeout:?} waiting for {what}");
}

pub fn joined(p: &Proc) -> bool {
    p.log().contains("joined the cluster")
}

/// How long a `corecast client` or `cluster status` process may take: a hung one fails the test
/// with its log instead of holding the suite until CI's limit.
const RUN_LIMIT: Duration = Duration::from_secs(60);

/// Runs the binary with `args` (and `stdin`, if given) to its exit; panics with its stderr if it
/// is still running after [`RUN_LIMIT`].
pub fn run(args: &[&str], stdin: Option<&str>) -> Output {
    // The cluster of the member it reaches, unless the test names one.
    let named = args
        .iter()
        .position(|a| *a == "--members")
        .and_then(|i| args.get(i + 1))
        .and_then(|m| cluster_of(m.split(',').next().unwrap_or(m)))
        .filter(|_| !args.contains(&"--cluster-name"));
    let mut cmd = Command::new(BIN);
    cmd.args(args);
    if let Some(name) = &named {
        cmd.args(["--cluster-name", name]);
    }
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
    } else {
        drop(child.stdin.take());
    }
    let out = drain(child.stdout.take().unwrap());
    let err = drain(child.stderr.take().unwrap());
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if start.elapsed() > RUN_LIMIT {
            let _ = child.kill();
            let _ = child.wait();
            let stderr = String::from_utf8_lossy(&err.join().unwrap()).into_owned();
            panic!(
                "`corecast {}` still running after {RUN_LIMIT:?}; its stderr:\n{stderr}",
                args.join(" ")
            );
        }
        sleep(Duration::from_millis(10));
    };
    Output {
        status,
        stdout: out.join().unwrap(),
        stderr: err.join().unwrap(),
    }
}

/// Reads `r` to its end on a thread of its own (a child's pipe, so it never fills).
fn drain(mut r: impl std::io::Read + Send + 'static) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = r.read_to_end(&mut bytes);
        bytes
    })
}

/// Parsed `cluster status`: (address, master, lite, owned) per member.
pub fn status(via: &Proc) -> Vec<(String, bool, bool, usize)> {
    let out = run(&["cluster", "status", "--members", &via.addr], None);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "status failed: {text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    text.lines()
        .skip(3)
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (
                f[0].to_owned(),
                f[4] == "yes",
                f[5] == "yes",
                f[6].parse().unwrap(),
            )
        })
        .collect()
}

/// Backup replicas per member, from `cluster status`, in its order.
pub fn backup_counts(via: &Proc) -> Vec<usize> {
    let out = run(&["cluster", "status", "--members", &via.addr], None);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .skip(3)
        .filter_map(|l| l.split_whitespace().nth(7).and_then(|n| n.parse().ok()))
        .collect()
}

/// The rebalance's progress from `cluster status`: (planned, in flight, done, failed).
pub fn migrations(via: &Proc) -> (u64, u64, u64, u64) {
    let out = run(&["cluster", "status", "--members", &via.addr], None);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let line = text
        .lines()
        .find(|l| l.starts_with("migrations:"))
        .unwrap_or_else(|| panic!("no migrations line in {text}"));
    let n: Vec<u64> = line
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    (n[0], n[1], n[2], n[3])
}

/// Whether the cluster seen through `via` has `n` members, nothing left to migrate, and owners
/// balanced (at most one apart).
pub fn settled(via: &Proc, n: usize) -> bool {
    let (planned, in_flight, _, _) = migrations(via);
    let rows = status(via);
    let owned: Vec<usize> = rows.iter().filter(|r| !r.2).map(|r| r.3).collect();
    let (min, max) = (owned.iter().min(), owned.iter().max());
    rows.len() == n
        && planned == 0
        && in_flight == 0
        && owned.iter().sum::<usize>() == 271
        && matches!((min, max), (Some(a), Some(b)) if b - a <= 1)
}
