//! Split brain, in process over loopback: three members are cut into a side of two and a side
//! of one (fault injection on every member: each stops connecting to the other side and tears
//! down its connections there), each side goes on as a cluster and takes writes, and when the
//! network heals the single member's cluster merges into the pair's: its entries go through each
//! map's merge policy, its atomics through theirs.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::net::SocketAddr;
use std::thread::sleep;
use std::time::{Duration, Instant};

use corecast_engine::config::{MergePolicy, ObjectConfig, ServiceConfig};
use corecast_engine::{BlockingMember, Member};
use corecast_net::faults::{cut_off, shard_addrs};
use corecast_services::atomic::AtomicLong;
use corecast_services::builtin::with_builtin_services;
use corecast_services::map::Map;
use support::procs::wait_for;
use support::{network, quiet};

/// The maps of the test, each with its merge policy.
const MAPS: [(&str, MergePolicy); 5] = [
    ("pass", MergePolicy::PassThrough),
    ("absent", MergePolicy::PutIfAbsent),
    ("hits", MergePolicy::HigherHits),
    ("latest", MergePolicy::LatestUpdate),
    ("discard", MergePolicy::Discard),
];

fn start(seeds: &[&BlockingMember]) -> BlockingMember {
    let mut config = support::networked_config(seeds, 1);
    config.backups.backup_count = 1;
    config.split_brain.probe_interval_millis = 200;
    config.services.push(ServiceConfig {
        name: "map".into(),
        objects: MAPS
            .iter()
            .map(|(name, policy)| ObjectConfig {
                name: (*name).into(),
                merge_policy: Some(*policy),
                ..ObjectConfig::default()
            })
            .collect(),
        ..ServiceConfig::default()
    });
    config.services.push(ServiceConfig {
        name: "atomic".into(),
        merge_policy: Some(MergePolicy::LatestUpdate),
        ..ServiceConfig::default()
    });
    let builder = with_builtin_services(Member::builder(config));
    BlockingMember::from(
        futures_lite::future::block_on(corecast_net::start_member(builder)).unwrap(),
    )
}

fn addr(m: &BlockingMember) -> SocketAddr {
    m.member().invoker().member().address
}

/// Cuts each member off from the addresses of the members not on its side; `&[]` heals.
fn split(sides: &[(&BlockingMember, &[&BlockingMember])]) {
    for (m, others) in sides {
        let bases: Vec<SocketAddr> = others.iter().map(|o| addr(o)).collect();
        m.block_on(cut_off(m.member(), &shard_addrs(&bases, 1)))
            .unwrap();
    }
}

fn get(m: &BlockingMember, map: &str, key: &str) -> Option<String> {
    let map = m.object::<Map>(map).unwrap();
    m.block_on(map.get(key.as_bytes()))
        .unwrap()
        .map(|v| String::from_utf8(v).unwrap())
}

fn put(m: &BlockingMember, map: &str, key: &str, value: &str) {
    let map = m.object::<Map>(map).unwrap();
    m.block_on(map.set(key.as_bytes(), value.as_bytes()))
        .unwrap();
}

fn read_times(m: &BlockingMember, map: &str, key: &str, times: usize) {
    for _ in 0..times {
        assert!(get(m, map, key).is_some(), "{map}/{key} readable");
    }
}

#[test]
fn after_a_split_heals_the_smaller_side_merges_by_each_objects_policy() {
    let a = start(&[]);
    let b = start(&[&a]);
    let c = start(&[&a]);
    quiet(&[&a, &b, &c]);
    for (map, _) in MAPS {
        for i in 0..20 {
            put(&a, map, &format!("before-{i}"), "before");
        }
    }

    // {a, b} | {c}: each side removes the other after the member timeout and promotes its
    // backups, so both own every partition again.
    let cut = Instant::now();
    split(&[(&a, &[&c]), (&b, &[&c]), (&c, &[&a, &b])]);
    wait_for("two clusters", Duration::from_secs(20), || {
        let (big, small) = (network(&a).status(), network(&c).status());
        big.members.len() == 2 && small.members.len() == 1 && big.unowned == 0 && small.unowned == 0
    });
    eprintln!("split: two whole clusters after {:?}", cut.elapsed());
    for (map, _) in MAPS {
        for i in 0..20 {
            put(&a, map, &format!("both-{i}"), "major");
            put(&a, map, &format!("major-{i}"), "major");
        }
        put(&a, map, "before-0", "major-updated");
    }
    // Written on the small side later than on the big one: later for latest-update.
    sleep(Duration::from_millis(20));
    for (map, _) in MAPS {
        for i in 0..20 {
            put(&c, map, &format!("both-{i}"), "minor");
            put(&c, map, &format!("minor-{i}"), "minor");
        }
    }
    // "late-0" last written on the big side, "late-1" on the small one.
    put(&c, "latest", "late-0", "minor");
    put(&a, "latest", "late-1", "major");
    sleep(Duration::from_millis(20));
    put(&a, "latest", "late-0", "major");
    put(&c, "latest", "late-1", "minor");
    // "hit-0" read more on the big side, "hit-1" on the small one.
    put(&a, "hits", "hit-0", "major");
    put(&a, "hits", "hit-1", "major");
    put(&c, "hits", "hit-0", "minor");
    put(&c, "hits", "hit-1", "minor");
    read_times(&a, "hits", "hit-0", 6);
    read_times(&c, "hits", "hit-0", 2);
    read_times(&a, "hits", "hit-1", 2);
    read_times(&c, "hits", "hit-1", 6);
    // An atomic changed on both sides (the small side later), one only on the small side.
    let on_a = a.object::<AtomicLong>("shared-count").unwrap();
    let on_c = c.object::<AtomicLong>("shared-count").unwrap();
    a.block_on(on_a.set(10)).unwrap();
    sleep(Duration::from_millis(20));
    c.block_on(on_c.set(20)).unwrap();
    let only_c = c.object::<AtomicLong>("minor-count").unwrap();
    c.block_on(only_c.set(7)).unwrap();

    let healed = Instant::now();
    split(&[(&a, &[]), (&b, &[]), (&c, &[])]);
    wait_for("one cluster again", Duration::from_secs(30), || {
        let merge = network(&c).merge_stats();
        merge.merges == 1
            && !merge.in_progress
            && [&a, &b, &c]
                .iter()
                .all(|m| network(m).status().members.len() == 3)
    });
    let merged_after = healed.elapsed();
    quiet(&[&a, &b, &c]);
    eprintln!(
        "healed: merged after {merged_after:?}, quiet after {:?}; {:?}",
        healed.elapsed(),
        network(&c).merge_stats()
    );
    assert_eq!(
        network(&a).merge_stats().merges,
        0,
        "the big side did not merge"
    );
    assert_eq!(
        network(&b).merge_stats().merges,
        0,
        "the big side did not merge"
    );
    let merged = network(&c).merge_stats();
    assert!(merged.ops_ok > 0 && merged.ops_failed == 0, "{merged:?}");
    let master = &network(&a).status().members[0];
    assert_eq!(master.entry.addr, addr(&a), "the big side's master leads");

    let expect = |map: &str, key: &str, value: Option<&str>| {
        for m in [&a, &b, &c] {
            assert_eq!(
                get(m, map, key).as_deref(),
                value,
                "{map}/{key} read through {}",
                addr(m)
            );
        }
    };
    for i in 0..20 {
        let (both, major, minor) = (
            format!("both-{i}"),
            format!("major-{i}"),
            format!("minor-{i}"),
        );
        expect("pass", &both, Some("minor"));
        expect("absent", &both, Some("major"));
        expect("discard", &both, Some("major"));
        expect("latest", &both, Some("minor"));
        for (map, _) in MAPS {
            // Only the big side had it: every policy keeps it.
            expect(map, &major, Some("major"));
            let merged = (map != "discard").then_some("minor");
            expect(map, &minor, merged);
        }
    }
    // The big side's update of an entry both had before the split: the small side's stale copy
    // wins only under pass-through.
    expect("pass", "before-0", Some("before"));
    expect("absent", "before-0", Some("major-updated"));
    expect("latest", "before-0", Some("major-updated"));
    expect("discard", "before-0", Some("major-updated"));
    expect("latest", "late-0", Some("major"));
    expect("latest", "late-1", Some("minor"));
    expect("hits", "hit-0", Some("major"));
    expect("hits", "hit-1", Some("minor"));
    for i in 1..20 {
        expect("pass", &format!("before-{i}"), Some("before"));
    }

    let on_b = b.object::<AtomicLong>("shared-count").unwrap();
    assert_eq!(b.block_on(on_b.get()).unwrap(), 20, "latest update wins");
    let only_c = b.object::<AtomicLong>("minor-count").unwrap();
    assert_eq!(
        b.block_on(only_c.get()).unwrap(),
        7,
        "absent on the big side"
    );
}
