//! The built-in objects against real member processes: contents survive `kill -9` of a member
//! (backup-count 1), a lock held by a killed client process goes to the next waiter, and the
//! `corecast client` commands print values, `(nil)` and `ERR ` lines.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use corecast_services::atomic::AtomicLong;
use corecast_services::lock::Lock;
use corecast_services::map::Map;
use support::procs::{self, joined, member, run, settled, wait_for, Proc, BIN};
use support::writes::client;

fn cluster(n: usize) -> Vec<Proc> {
    let first = member(&[], &[]);
    wait_for("the first member", Duration::from_secs(20), || {
        joined(&first)
    });
    let mut all = vec![first];
    for _ in 1..n {
        let m = member(&[&all[0]], &[]);
        wait_for("a join", Duration::from_secs(20), || joined(&m));
        all.push(m);
    }
    wait_for("a settled cluster", Duration::from_secs(60), || {
        settled(&all[0], n)
    });
    all
}

#[test]
fn map_and_atomic_contents_survive_a_killed_member() {
    let mut members = cluster(3);
    let c = client(&members[0]);
    let map = c.object::<Map>("survivor").unwrap();
    let entries: Vec<(Vec<u8>, Vec<u8>)> = (0..2000u32)
        .map(|i| (format!("k{i}").into_bytes(), format!("v{i}").into_bytes()))
        .collect();
    c.block_on(map.put_all(&entries[..1000])).unwrap();
    // One request per owner shard (3 members × 2 shards), each carrying its partitions' parts.
    let partitions: std::collections::BTreeSet<u32> = entries[..1000]
        .iter()
        .map(|(k, _)| c.member().invoker().partition_of(k).0)
        .collect();
    let stats = c
        .block_on(
            c.member()
                .invoker()
                .run_on(corecast_engine::ShardId(0), || async {
                    corecast_net::batch_stats()
                }),
        )
        .unwrap();
    assert_eq!(
        (stats.batches, stats.parts, stats.retried),
        (6, partitions.len() as u64, 0),
        "put_all went as one batch per owner shard"
    );
    for (k, v) in &entries[1000..] {
        c.block_on(map.set(k, v)).unwrap();
    }
    let atomics: Vec<AtomicLong> = (0..20)
        .map(|i| c.object::<AtomicLong>(&format!("a{i}")).unwrap())
        .collect();
    for (i, a) in atomics.iter().enumerate() {
        c.block_on(a.add_and_get(i as i64 * 10)).unwrap();
        assert!(c
            .block_on(a.compare_and_set(i as i64 * 10, i as i64 * 10 + 1))
            .unwrap());
    }
    members[2].kill9();
    wait_for("the kill noticed", Duration::from_secs(30), || {
        procs::status(&members[0]).len() == 2
    });
    assert_eq!(c.block_on(map.size()).unwrap(), 2000);
    let got = c
        .block_on(map.get_all(&entries.iter().map(|e| e.0.clone()).collect::<Vec<_>>()))
        .unwrap();
    let mut got = got;
    got.sort();
    let mut want = entries.clone();
    want.sort();
    assert_eq!(got, want, "every entry after the kill");
    for (i, a) in atomics.iter().enumerate() {
        assert_eq!(
            c.block_on(a.get()).unwrap(),
            i as i64 * 10 + 1,
            "atomic a{i}"
        );
    }
    c.shutdown();
}

/// A `corecast client` reading commands from a pipe; its output lines as they come.
struct Interactive {
    child: std::process::Child,
    lines: std::sync::mpsc::Receiver<String>,
}

impl Interactive {
    fn start(via: &Proc, command: &[&str]) -> Interactive {
        let mut child = Command::new(BIN)
            .args([
                "client",
                "--members",
                &via.addr,
                "--cluster-name",
                &via.cluster,
            ])
            .args(command)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let out = child.stdout.take().unwrap();
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Interactive { child, lines }
    }

    fn send(&mut self, line: &str) {
        let stdin = self.child.stdin.as_mut().unwrap();
        writeln!(stdin, "{line}").unwrap();
        stdin.flush().unwrap();
    }

    fn line(&self) -> String {
        self.lines
            .recv_timeout(Duration::from_secs(20))
            .expect("a line from the client")
    }
}

impl Drop for Interactive {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn a_killed_clients_lock_goes_to_the_next_waiter_with_a_larger_fence() {
    let members = cluster(2);
    let mut holder = Interactive::start(&members[1], &[]);
    holder.send("lock acquire leader");
    let fence: u64 = holder.line().parse().expect("a fencing token");
    holder.send("lock try leader");
    assert_eq!(holder.line(), fence.to_string(), "reentrant for its holder");
    let waiter = client(&members[0]);
    let lock = waiter.object::<Lock>("leader").unwrap();
    assert_eq!(
        waiter.block_on(lock.try_lock(Duration::ZERO)).unwrap(),
        None
    );
    let killed = Instant::now();
    let _ = holder.child.kill();
    let _ = holder.child.wait();
    let next = waiter
        .block_on(lock.try_lock(Duration::from_secs(15)))
        .unwrap()
        .expect("the lock after its client died");
    println!(
        "lock released {:?} after its client was killed",
        killed.elapsed()
    );
    assert!(next > fence, "fence {next} after {fence}");
    waiter.shutdown();
}

#[test]
fn cli_commands_print_values_nil_and_errors() {
    let members = cluster(2);
    let addr = members[0].addr.as_str();
    let script = "map put m k1 v1\nmap put m k1 v2\nmap get m k1\nmap get m nothing\n\
map put m k2 x --ttl 2\nmap size m\nmap entries m\nmap remove m k1\nmap remove m k1\n\
atomic set a 5\natomic add a 3\natomic cas a 8 10\natomic cas a 8 11\natomic get a\n\
lock try l\nlock try l\nlock release l\nlock release l\nlock release l\nmap get\nfrobnicate\n";
    let out = run(&["client", "--members", addr], Some(script));
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let lines: Vec<&str> = text.lines().collect();
    let expect_start = [
        "(nil)", "v1", "v2", "(nil)", "(nil)", "2", "k1 v2", "k2 x", "v2", "(nil)", "5", "8",
        "true", "false", "10", "1", "1", "OK", "OK",
    ];
    assert_eq!(&lines[..expect_start.len()], &expect_start, "{text}");
    let rest = &lines[expect_start.len()..];
    assert_eq!(rest.len(), 3, "{text}");
    assert!(rest.iter().all(|l| l.starts_with("ERR ")), "{text}");
    assert!(rest[0].contains("not held"), "{text}");
    std::thread::sleep(Duration::from_millis(2_100));
    let after = run(
        &["client", "--members", addr, "map", "get", "m", "k2"],
        None,
    );
    assert_eq!(
        String::from_utf8_lossy(&after.stdout).trim(),
        "(nil)",
        "expired"
    );
    let bad = run(
        &["client", "--members", addr, "atomic", "add", "a", "x"],
        None,
    );
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stdout).starts_with("ERR "));

    // Streams: one line per message or event, after `(subscribed)`.
    let topic = Interactive::start(&members[1], &["topic", "subscribe", "t"]);
    let listen = Interactive::start(&members[0], &["map", "listen", "m"]);
    assert_eq!(topic.line(), "(subscribed)");
    assert_eq!(listen.line(), "(subscribed)");
    let out = run(
        &["client", "--members", addr],
        Some("topic publish t hello world\ntopic publish t second\nmap put m k3 v3\nmap put m k3 v4\nmap remove m k3\n"),
    );
    assert!(out.status.success());
    assert_eq!(topic.line(), "hello world");
    assert_eq!(topic.line(), "second");
    assert_eq!(listen.line(), "added k3 v3");
    assert_eq!(listen.line(), "updated k3 v4 (was v3)");
    assert_eq!(listen.line(), "removed k3 (was v4)");
}
