//! Migration with real member processes: the SPI tutorial's scenario (counters keep their
//! values as members join and move them), members joining and dying under continuous writes for
//! several (backups, members) pairs, and a graceful shutdown without backups that loses nothing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::thread;
use std::time::Duration;

use support::procs::{joined, member, run, settled, status, wait_for, Proc};
use support::writes::{Rng, Writes};

/// One shard per member: up to eight members share this machine's two cores.
const ONE_SHARD: &[&str] = &["--shards", "1"];

fn start(seeds: &[&Proc], extra: &[&str]) -> Proc {
    let flags: Vec<&str> = ONE_SHARD.iter().chain(extra).copied().collect();
    let p = member(seeds, &flags);
    wait_for("a member to join", Duration::from_secs(20), || joined(&p));
    p
}

fn counter_script(n: usize) -> String {
    (0..n)
        .map(|i| format!("counter inc {i}counter\n"))
        .collect()
}

#[test]
fn the_tutorials_migration_scenario_moves_counters_to_members_that_join() {
    let first = start(&[], &[]);
    let mut members = vec![first];
    for _ in 0..2 {
        let next = start(&[&members[0]], &[]);
        members.push(next);
    }
    wait_for("three members, balanced", Duration::from_secs(30), || {
        settled(&members[0], 3)
    });
    let out = run(
        &["client", "--members", &members[0].addr],
        Some(&counter_script(4)),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(stdout.lines().collect::<Vec<_>>(), ["1"; 4], "{stdout}");

    // "Creating new members": three more join, and the partitions rebalance over six.
    for _ in 0..3 {
        let next = start(&[&members[0]], &[]);
        members.push(next);
    }
    wait_for("six members, rebalanced", Duration::from_secs(30), || {
        settled(&members[0], 6)
    });
    let before: Vec<usize> = members[3..]
        .iter()
        .map(|m| m.log().matches("Executing ").count())
        .collect();
    let out = run(
        &["client", "--members", &members[0].addr],
        Some(&counter_script(4)),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        stdout.lines().collect::<Vec<_>>(),
        ["2"; 4],
        "every counter kept its value through the migration: {stdout}"
    );
    // At least one counter now runs on a member that joined (its log shows the increment).
    let moved: Vec<String> = (0..4)
        .filter_map(|i| {
            let line = format!("Executing {i}counter.inc() on: ");
            members[3..]
                .iter()
                .zip(&before)
                .find(|(m, n)| {
                    m.log().matches("Executing ").count() > **n && m.log().contains(&line)
                })
                .map(|(m, _)| format!("{i}counter on {}", m.addr))
        })
        .collect();
    assert!(!moved.is_empty(), "no counter moved to a new member");
    eprintln!("moved: {moved:?}");
    let rebalances = members[0].log().matches("rebalance done").count();
    assert!(rebalances >= 2, "the master logged its rebalances");
}

/// `backups` sync backups, `n` members under writes; two members join, then `backups` members
/// (never the first) are killed, while the migrations run; one more joins. Every acknowledged
/// write is there at the end and no counter is past what was attempted.
fn joins_and_deaths_under_writes(seed: u64, backups: usize, n: usize) {
    let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
    let count = format!("backups.backup-count={backups}");
    let flags = ["--set", count.as_str()];
    let mut members = vec![start(&[], &flags)];
    for _ in 1..n {
        let next = start(&[&members[0]], &flags);
        members.push(next);
    }
    wait_for(
        "the first members, balanced",
        Duration::from_secs(30),
        || settled(&members[0], n),
    );
    let writes = Writes::start(&members[0], 4, 8);
    thread::sleep(Duration::from_millis(300));
    for _ in 0..2 {
        let next = start(&[&members[0]], &flags);
        members.push(next);
    }
    // Kill while the joins' migrations may still run.
    thread::sleep(Duration::from_millis(rng.next() % 400));
    let mut victims: Vec<usize> = (1..members.len()).collect();
    while victims.len() > backups {
        victims.remove((rng.next() % victims.len() as u64) as usize);
    }
    for v in &victims {
        members[*v].kill9();
    }
    let alive = members.len() - backups;
    wait_for("the dead members removed", Duration::from_secs(10), || {
        status(&members[0]).len() == alive
    });
    let next = start(&[&members[0]], &flags);
    members.push(next);
    wait_for(
        "rebalanced after the last join",
        Duration::from_secs(60),
        || settled(&members[0], alive + 1),
    );
    thread::sleep(Duration::from_millis(200));
    let what = format!("seed {seed}: backups {backups}, {n} members, +2, -{backups}, +1");
    let (keys, counters, errors, longest) = writes.finish(&what);
    eprintln!(
        "{what}: {keys} keys, {counters} counters, {errors} errors, longest call {longest:?}"
    );
}

#[test]
fn joins_and_deaths_under_writes_lose_nothing_1_backup_2_and_5_members() {
    joins_and_deaths_under_writes(1, 1, 2);
    joins_and_deaths_under_writes(2, 1, 5);
}

#[test]
fn joins_and_deaths_under_writes_lose_nothing_2_backups_3_and_5_members() {
    joins_and_deaths_under_writes(3, 2, 3);
    joins_and_deaths_under_writes(4, 2, 5);
}

#[test]
fn joins_and_deaths_under_writes_lose_nothing_3_backups_4_members() {
    joins_and_deaths_under_writes(5, 3, 4);
}

#[test]
fn a_graceful_shutdown_without_backups_loses_nothing() {
    let flags = ["--set", "backups.backup-count=0"];
    let mut members = vec![start(&[], &flags)];
    for _ in 0..2 {
        let next = start(&[&members[0]], &flags);
        members.push(next);
    }
    wait_for("three members, balanced", Duration::from_secs(30), || {
        settled(&members[0], 3)
    });
    let writes = Writes::start(&members[0], 4, 8);
    thread::sleep(Duration::from_millis(500));
    // A member (not the one the writers' client came through), then the master itself.
    let exit = members[1].sigterm(Duration::from_secs(30));
    assert!(exit.success(), "the member exits cleanly: {exit}");
    let log = members[1].log();
    assert!(log.contains("left the cluster"), "{log}");
    wait_for("two members, rebalanced", Duration::from_secs(20), || {
        settled(&members[0], 2)
    });
    thread::sleep(Duration::from_millis(300));
    let exit = members[0].sigterm(Duration::from_secs(30));
    assert!(exit.success(), "the master exits cleanly: {exit}");
    wait_for(
        "one member with everything",
        Duration::from_secs(20),
        || settled(&members[2], 1),
    );
    thread::sleep(Duration::from_millis(300));
    let (keys, counters, errors, _) =
        writes.finish("backup-count 0, two members shut down gracefully");
    eprintln!("{keys} keys, {counters} counters, {errors} errors");
}
