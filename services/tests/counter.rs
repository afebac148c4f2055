//! The Counter of the SPI tutorial, on real members and through the testkit.

#![allow(clippy::unwrap_used)]

mod support;

use std::path::PathBuf;
use std::process::Command;

use corecast_engine::testkit::PartitionHarness;
use corecast_engine::ReplicaIndex;
use corecast_services::counter::{Counter, CounterService, Inc};

#[test]
fn the_tutorial_example_prints_two_rounds_of_four_counters() {
    let example = example_binary("counter");
    let output = Command::new(&example)
        .env("RUST_LOG", "info")
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", example.display()));
    assert!(output.status.success(), "the example failed: {output:?}");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let results: Vec<&str> = stdout
        .lines()
        .filter(|l| !l.starts_with("Executing") && !l.contains("member st"))
        .collect();
    assert_eq!(
        results,
        ["Round 1", "1", "1", "1", "1", "Round 2", "2", "2", "2", "2", "Finished"],
        "stdout was:\n{stdout}"
    );
    let executing: Vec<&str> = stdout
        .lines()
        .filter(|l| l.starts_with("Executing"))
        .collect();
    assert_eq!(
        executing.len(),
        8,
        "one Executing line per inc; stdout was:\n{stdout}"
    );
    for (i, line) in executing.iter().enumerate() {
        let expected = format!("Executing {}counter.inc() on: 127.0.0.1:5701", i % 4);
        assert_eq!(*line, expected);
    }
}

/// The example binary cargo built next to this test's own executable (`cargo test` builds
/// examples before running tests).
fn example_binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_else(|e| panic!("no current exe: {e}"));
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .unwrap_or_else(|| panic!("unexpected test binary location {}", exe.display()));
    profile_dir.join("examples").join(name)
}

#[test]
fn the_counter_fits_in_a_hundred_lines() {
    let source = include_str!("../src/counter.rs");
    let code_lines = source
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("//"))
        .count();
    assert!(
        code_lines <= 100,
        "counter.rs has {code_lines} lines of code"
    );
}

#[test]
fn an_increment_is_a_small_future_that_does_nothing_until_polled() {
    let member = support::member(1);
    let counter = member.object::<Counter>("lazy").unwrap();
    let pending = counter.inc(5);
    let bytes = std::mem::size_of_val(&pending);
    // The paths that wait are stages of the invocation entered when taken, not states of one
    // machine built for every call: 264 bytes, where it was 624 when they were.
    assert!(bytes <= 320, "Counter::inc's future is {bytes} bytes");
    drop(pending);
    let value = member.block_on(counter.inc(0)).unwrap();
    assert_eq!(value, 0, "an increment dropped before its first poll ran");
    member.shutdown();
}

#[test]
fn eight_threads_of_ten_thousand_increments_give_exact_totals() {
    let member = support::member(2);
    let names = ["a", "b", "c", "d", "e"];
    std::thread::scope(|scope| {
        for t in 0..8 {
            let member = &member;
            scope.spawn(move || {
                let counters: Vec<Counter> = names
                    .iter()
                    .map(|n| member.object::<Counter>(n).unwrap())
                    .collect();
                for i in 0..10_000 {
                    member
                        .block_on(counters[(i + t) % names.len()].inc(1))
                        .unwrap();
                }
            });
        }
    });
    let total: i64 = names
        .iter()
        .map(|n| {
            member
                .block_on(member.object::<Counter>(n).unwrap().inc(0))
                .unwrap()
        })
        .sum();
    assert_eq!(total, 80_000);
    for n in names {
        let value = member
            .block_on(member.object::<Counter>(n).unwrap().inc(0))
            .unwrap();
        assert_eq!(value, 16_000, "counter {n}");
    }
    member.shutdown();
}

#[test]
fn increments_from_async_tasks_on_the_shards_are_exact() {
    let member = support::member(2);
    let invoker = member.member().invoker().clone();
    let counter = member.object::<Counter>("on-shards").unwrap();
    let mut runs = Vec::new();
    for shard in 0..2 {
        let counter = counter.clone();
        runs.push(
            invoker.run_on(corecast_engine::ShardId(shard), move || async move {
                for _ in 0..5_000 {
                    counter.inc(2).await.unwrap();
                }
            }),
        );
    }
    for run in runs {
        member.block_on(run).unwrap();
    }
    assert_eq!(member.block_on(counter.inc(0)).unwrap(), 20_000);
    member.shutdown();
}

#[test]
fn destroying_a_counter_drops_its_value_and_its_name() {
    let member = support::member(2);
    let m = member.member();
    let counter = member.object::<Counter>("doomed").unwrap();
    member.object::<Counter>("kept").unwrap();
    assert_eq!(member.block_on(counter.inc(41)).unwrap(), 41);
    let names = member.block_on(m.objects::<CounterService>()).unwrap();
    assert_eq!(names, ["doomed", "kept"]);
    member
        .block_on(m.destroy_object::<CounterService>("doomed"))
        .unwrap();
    assert_eq!(
        member.block_on(m.objects::<CounterService>()).unwrap(),
        ["kept"]
    );
    let again = member.object::<Counter>("doomed").unwrap();
    assert_eq!(
        member.block_on(again.inc(1)).unwrap(),
        1,
        "state survived destroy"
    );
    member.shutdown();
}

#[test]
fn an_increment_is_applied_on_its_backups_through_the_backup_operation() {
    let mut owner = PartitionHarness::<CounterService>::new().unwrap();
    let mut backup =
        PartitionHarness::<CounterService>::with_properties(&Default::default(), 5702).unwrap();
    let inc = Inc {
        name: "counter".into(),
        amount: 3,
    };
    assert_eq!(owner.run_with_backups(&inc, &mut [&mut backup]).unwrap(), 3);
    assert_eq!(owner.run_with_backups(&inc, &mut [&mut backup]).unwrap(), 6);
    assert_eq!(backup.container().get("counter"), Some(&6));
    let zero = Inc {
        name: "counter".into(),
        amount: 0,
    };
    owner.run_with_backups(&zero, &mut [&mut backup]).unwrap();
    assert_eq!(
        backup.container().get("counter"),
        Some(&6),
        "inc(0) needs no backup"
    );
}

#[test]
fn a_migrated_counter_keeps_its_value_and_leaves_the_source() {
    let mut source = PartitionHarness::<CounterService>::new().unwrap();
    let mut destination =
        PartitionHarness::<CounterService>::with_properties(&Default::default(), 5705).unwrap();
    source
        .run(&Inc {
            name: "0counter".into(),
            amount: 1,
        })
        .unwrap();
    source.migrate_to(&mut destination, ReplicaIndex::PRIMARY);
    assert!(
        source.container().is_empty(),
        "the source keeps no replica after commit"
    );
    assert_eq!(
        destination
            .run(&Inc {
                name: "0counter".into(),
                amount: 1
            })
            .unwrap(),
        2
    );
}

#[test]
fn a_rolled_back_migration_leaves_the_data_on_the_source_only() {
    let mut source = PartitionHarness::<CounterService>::new().unwrap();
    let mut destination = PartitionHarness::<CounterService>::new().unwrap();
    source
        .run(&Inc {
            name: "c".into(),
            amount: 5,
        })
        .unwrap();
    source.migrate_and_roll_back(&mut destination, ReplicaIndex::PRIMARY);
    assert_eq!(source.container().get("c"), Some(&5));
    assert!(destination.container().is_empty());
}

#[test]
fn reset_drops_every_counter_and_every_name() {
    let member = support::member(2);
    let m = member.member();
    for name in ["a", "b", "c"] {
        let counter = member.object::<Counter>(name).unwrap();
        member.block_on(counter.inc(5)).unwrap();
    }
    member.block_on(m.reset()).unwrap();
    assert!(member
        .block_on(m.objects::<CounterService>())
        .unwrap()
        .is_empty());
    let a = member.object::<Counter>("a").unwrap();
    assert_eq!(
        member.block_on(a.inc(0)).unwrap(),
        0,
        "a counter survived reset"
    );
    member.shutdown();
}
