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
    let child = cmd.spawn().unwrap();
    Proc { child, addr, log }
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

pub fn run(args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(BIN)
        .args(args)
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
    child.wait_with_output().unwrap()
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
