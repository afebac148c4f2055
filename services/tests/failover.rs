//! No acknowledged write lost: real member processes, concurrent clients recording what was
//! acknowledged, `kill -9` of members in the middle, then every acknowledged increment and put
//! checked. Seeded cycles; `CORECAST_FAILOVER_CYCLES` runs more of them.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use support::procs::{backup_counts, joined, member, settled, status, wait_for, Proc};
use support::writes::{check, client, start_writers, Ledger, Rng};

/// The member flags of these tests: one shard each (several members share two cores), fast
/// failure detection.
const FLAGS: &[&str] = &["--shards", "1"];

fn cluster(n: usize, extra: &[&str]) -> Vec<Proc> {
    let flags: Vec<&str> = FLAGS.iter().chain(extra).copied().collect();
    let first = member(&[], &flags);
    wait_for("the first member", Duration::from_secs(20), || {
        joined(&first)
    });
    let mut members = vec![first];
    for _ in 1..n {
        let next = member(&[&members[0]], &flags);
        wait_for("a member to join", Duration::from_secs(20), || {
            joined(&next)
        });
        members.push(next);
    }
    wait_for(
        "every member in the table, balanced",
        Duration::from_secs(30),
        || settled(&members[0], n),
    );
    members
}

/// One cycle: `n` members with `extra` flags, writers through the first, `kill` members (never
/// the first) killed at once after a seeded delay, then the check.
fn cycle(seed: u64, n: usize, kill: usize, extra: &[&str]) {
    let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
    let mut members = cluster(n, extra);
    let client = Arc::new(client(&members[0]));
    let stop = Arc::new(AtomicBool::new(false));
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let writers = start_writers(&client, 4, 8, &stop, &ledger);

    thread::sleep(Duration::from_millis(300 + rng.next() % 700));
    let mut victims: Vec<usize> = (1..n).collect();
    while victims.len() > kill {
        victims.remove((rng.next() % victims.len() as u64) as usize);
    }
    let killed_at = Instant::now();
    for v in &victims {
        members[*v].kill9();
    }
    // Keep writing through the failover.
    thread::sleep(Duration::from_millis(4000));
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.join().unwrap();
    }
    wait_for(
        "the killed members' removal",
        Duration::from_secs(10),
        || status(&members[0]).len() == n - kill,
    );
    let ledger = ledger.lock().unwrap();
    let what = format!(
        "seed {seed}, {n} members, {kill} killed {:?} ago",
        killed_at.elapsed()
    );
    assert!(!ledger.keys.is_empty(), "{what}: nothing was written");
    check(&client, &ledger, &what);
    // The empty backup slots were filled again on the survivors.
    if n - kill > 1 {
        wait_for("backups refilled", Duration::from_secs(10), || {
            backup_counts(&members[0]).iter().all(|b| *b > 0)
        });
    }
    eprintln!(
        "{what}: {} keys, {} counters checked, {} errors during failover, longest call {:?}",
        ledger.keys.len(),
        ledger.attempted.len(),
        ledger.errors,
        ledger.longest
    );
}

/// `CORECAST_FAILOVER_DEFAULT_TIMING=1` runs with the default heartbeat and failure detector
/// (for measuring failover time as users get it) instead of the tests' faster ones.
fn timing() -> Vec<&'static str> {
    if std::env::var("CORECAST_FAILOVER_DEFAULT_TIMING").is_ok_and(|v| v == "1") {
        vec![
            "--set",
            "network.heartbeat-interval-millis=500",
            "--set",
            "network.member-timeout-millis=2500",
        ]
    } else {
        Vec::new()
    }
}

fn cycles() -> u64 {
    std::env::var("CORECAST_FAILOVER_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2)
}

#[test]
fn backup_count_1_loses_no_acknowledged_write_when_a_member_is_killed() {
    for seed in 1..=cycles() {
        cycle(seed, 3, 1, &timing());
    }
}

#[test]
fn backup_count_2_survives_two_members_killed_at_once() {
    for seed in 1..=cycles().div_ceil(2) {
        let mut flags = vec!["--set", "backups.backup-count=2"];
        flags.extend(timing());
        cycle(100 + seed, 4, 2, &flags);
    }
}
