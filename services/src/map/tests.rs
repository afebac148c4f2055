//! The Map's operations on one partition, through the archives (no member).

use corecast_engine::payload::decode;
use corecast_engine::testkit::PartitionHarness;

use super::*;

type H = PartitionHarness<MapService>;

fn harness(props: &[(&str, toml::Value)]) -> H {
    let mut p = Properties::default();
    for (k, v) in props {
        p.insert(*k, v.clone());
    }
    H::with_properties(&p, 5701).expect("harness")
}

fn put(h: &mut H, key: &str, value: &str, ttl_ms: i64) -> Option<Vec<u8>> {
    let op = Put {
        name: "m".into(),
        key: key.into(),
        value: value.into(),
        ttl_ms,
        return_old: true,
    };
    h.run(&op).expect("put").old
}

fn get(h: &mut H, key: &str) -> Option<Vec<u8>> {
    h.run(&Get {
        name: "m".into(),
        key: key.into(),
    })
    .expect("get")
}

fn events(rx: &flume::Receiver<corecast_engine::payload::Bytes>) -> Vec<EntryEvent> {
    rx.try_iter()
        .map(|b| decode::<EntryEvent>(&b).expect("event"))
        .collect()
}

#[test]
fn put_get_remove_and_conditional_writes() {
    let mut h = harness(&[]);
    assert_eq!(put(&mut h, "k", "1", -1), None);
    assert_eq!(put(&mut h, "k", "2", -1), Some(b"1".to_vec()));
    assert_eq!(get(&mut h, "k"), Some(b"2".to_vec()));
    let pia = |h: &mut H, v: &str| {
        h.run(&PutIfAbsent {
            name: "m".into(),
            key: b"k".to_vec(),
            value: v.into(),
            ttl_ms: -1,
        })
        .expect("put_if_absent")
        .old
    };
    assert_eq!(pia(&mut h, "3"), Some(b"2".to_vec()));
    let replace = |h: &mut H, key: &str, expect: Option<&str>, v: &str| {
        h.run(&Replace {
            name: "m".into(),
            key: key.into(),
            value: v.into(),
            expect: expect.map(Into::into),
        })
        .expect("replace")
    };
    assert!(!replace(&mut h, "absent", None, "x").changed);
    assert_eq!(get(&mut h, "absent"), None, "replace does not add");
    assert!(!replace(&mut h, "k", Some("nope"), "x").changed);
    assert!(replace(&mut h, "k", Some("2"), "4").changed);
    assert_eq!(replace(&mut h, "k", None, "5").old, Some(b"4".to_vec()));
    let contains = |h: &mut H, k: &str| {
        h.run(&ContainsKey {
            name: "m".into(),
            key: k.into(),
        })
        .expect("contains")
    };
    assert!(contains(&mut h, "k"));
    let removed = h
        .run(&Remove {
            name: "m".into(),
            key: b"k".to_vec(),
            return_old: true,
        })
        .expect("remove");
    assert_eq!(removed.old, Some(b"5".to_vec()));
    assert!(!contains(&mut h, "k"));
    assert_eq!(
        pia(&mut h, "6"),
        None,
        "absent again: put_if_absent sets it"
    );
    assert_eq!(get(&mut h, "k"), Some(b"6".to_vec()));
}

#[test]
fn get_all_put_all_size_entries_and_clear() {
    let mut h = harness(&[]);
    let entries: Vec<(Vec<u8>, Vec<u8>)> = (0..10u8).map(|i| (vec![i], vec![i, i])).collect();
    h.run(&PutAll {
        name: "m".into(),
        entries: entries.clone(),
    })
    .expect("put_all");
    let got = h
        .run(&GetAll {
            name: "m".into(),
            keys: vec![vec![1], vec![2], vec![99]],
        })
        .expect("get_all");
    assert_eq!(got, vec![(vec![1], vec![1, 1]), (vec![2], vec![2, 2])]);
    assert_eq!(h.run(&Size { name: "m".into() }).expect("size"), 10);
    let mut all = h
        .run(&Entries {
            name: "m".into(),
            keys: true,
            values: true,
        })
        .expect("entries");
    all.sort();
    assert_eq!(all, entries);
    assert_eq!(h.run(&Clear { name: "m".into() }).expect("clear"), 10);
    assert_eq!(h.run(&Size { name: "m".into() }).expect("size"), 0);
}

#[test]
fn entries_expire_by_their_ttl_or_the_map_default_with_events() {
    let mut h = harness(&[("ttl-secs", toml::Value::Integer(1))]);
    let rx = h.listen("m", true);
    put(&mut h, "short", "s", 50);
    put(&mut h, "default", "d", -1);
    put(&mut h, "forever", "f", 0);
    let ttl = |h: &mut H, k: &str| {
        h.run(&Ttl {
            name: "m".into(),
            key: k.into(),
        })
        .expect("ttl")
    };
    let now = now_millis();
    assert!(ttl(&mut h, "default").is_some_and(|at| at > now && at <= now + 1000));
    assert_eq!(ttl(&mut h, "forever"), Some(0));
    std::thread::sleep(Duration::from_millis(60));
    assert_eq!(
        get(&mut h, "short"),
        None,
        "expired entries read as absent at once"
    );
    h.tick(now_millis());
    h.tick(now_millis() + 2000);
    let evs = events(&rx);
    let kinds: Vec<(EventKind, Vec<u8>)> = evs.iter().map(|e| (e.kind, e.key.clone())).collect();
    assert_eq!(
        kinds,
        vec![
            (EventKind::Added, b"short".to_vec()),
            (EventKind::Added, b"default".to_vec()),
            (EventKind::Added, b"forever".to_vec()),
            (EventKind::Expired, b"short".to_vec()),
            (EventKind::Expired, b"default".to_vec()),
        ]
    );
    assert_eq!(evs[3].old_value, Some(b"s".to_vec()));
    assert_eq!(get(&mut h, "forever"), Some(b"f".to_vec()));
    assert_eq!(h.run(&Size { name: "m".into() }).expect("size"), 1);
}

#[test]
fn listeners_get_added_updated_removed_with_or_without_values() {
    let mut h = harness(&[]);
    let with = h.listen("m", true);
    let without = h.listen("m", false);
    let other = h.listen("other", true);
    put(&mut h, "k", "1", -1);
    put(&mut h, "k", "2", -1);
    h.run(&Remove {
        name: "m".into(),
        key: b"k".to_vec(),
        return_old: false,
    })
    .expect("remove");
    let evs = events(&with);
    assert_eq!(
        evs,
        vec![
            EntryEvent {
                kind: EventKind::Added,
                key: b"k".to_vec(),
                value: Some(b"1".to_vec()),
                old_value: None
            },
            EntryEvent {
                kind: EventKind::Updated,
                key: b"k".to_vec(),
                value: Some(b"2".to_vec()),
                old_value: Some(b"1".to_vec())
            },
            EntryEvent {
                kind: EventKind::Removed,
                key: b"k".to_vec(),
                value: None,
                old_value: Some(b"2".to_vec())
            },
        ]
    );
    let lean = events(&without);
    assert_eq!(lean.len(), 3);
    assert!(lean
        .iter()
        .all(|e| e.value.is_none() && e.old_value.is_none()));
    assert!(events(&other).is_empty());
}

#[test]
fn backups_hold_what_the_owner_holds_including_expiry_and_evictions() {
    let mut owner = harness(&[("max-entries", toml::Value::Integer(3))]);
    let mut backup = harness(&[("max-entries", toml::Value::Integer(3))]);
    for i in 0..5u8 {
        let op = Put {
            name: "m".into(),
            key: vec![i],
            value: vec![i],
            ttl_ms: if i == 4 { 60_000 } else { -1 },
            return_old: false,
        };
        owner
            .run_with_backups(&op, &mut [&mut backup])
            .expect("put");
    }
    // One partition of a 1-partition harness: the cap is 3 entries.
    let keys = |h: &mut H| {
        let mut e = h
            .run(&Entries {
                name: "m".into(),
                keys: true,
                values: false,
            })
            .expect("entries");
        e.sort();
        e
    };
    assert_eq!(keys(&mut owner).len(), 3);
    assert_eq!(keys(&mut owner), keys(&mut backup));
    let at = |h: &mut H| {
        h.run(&Ttl {
            name: "m".into(),
            key: vec![4],
        })
        .expect("ttl")
    };
    assert_eq!(at(&mut owner), at(&mut backup));
    owner
        .run_with_backups(&Clear { name: "m".into() }, &mut [&mut backup])
        .expect("clear");
    assert!(keys(&mut backup).is_empty());
}

#[test]
fn a_full_map_without_eviction_refuses_new_keys_but_updates_old_ones() {
    let mut h = harness(&[
        ("max-entries", toml::Value::Integer(2)),
        ("eviction", toml::Value::String("none".into())),
    ]);
    put(&mut h, "a", "1", -1);
    put(&mut h, "b", "1", -1);
    let full = h.run(&Put {
        name: "m".into(),
        key: b"c".to_vec(),
        value: b"1".to_vec(),
        ttl_ms: -1,
        return_old: false,
    });
    assert!(
        matches!(full, Err(OpError::Failed(ref m)) if m.contains("is full")),
        "{full:?}"
    );
    assert_eq!(put(&mut h, "a", "2", -1), Some(b"1".to_vec()));
}

#[test]
fn per_map_settings_and_bad_properties() {
    let mut maps = toml::Table::new();
    let mut one = toml::Table::new();
    one.insert("max-entries".into(), toml::Value::Integer(1));
    maps.insert("m".into(), toml::Value::Table(one));
    let mut h = harness(&[("maps", toml::Value::Table(maps))]);
    put(&mut h, "a", "1", -1);
    put(&mut h, "b", "1", -1);
    assert_eq!(h.run(&Size { name: "m".into() }).expect("size"), 1);
    let mut p = Properties::default();
    p.insert("eviction", "fifo");
    let err = H::with_properties(&p, 5701).err().map(|e| e.reason);
    assert!(err.is_some_and(|e| e.contains("eviction = `fifo`")));
    let mut p = Properties::default();
    p.insert("ttl", 5);
    assert!(H::with_properties(&p, 5701).is_err());
}

#[test]
fn updates_add_to_integers_and_append_keeping_the_expiry_and_backups_follow() {
    use update::{Change, Update, Updated};
    let mut owner = harness(&[]);
    let mut backup = harness(&[]);
    let run = |owner: &mut H, backup: &mut H, key: &str, change: Change| {
        let op = Update {
            name: "m".into(),
            key: key.into(),
            change,
        };
        owner
            .run_with_backups(&op, &mut [backup])
            .expect("update")
            .outcome
    };
    assert_eq!(
        run(&mut owner, &mut backup, "n", Change::Add(5)),
        Updated::Integer(5)
    );
    assert_eq!(
        run(&mut owner, &mut backup, "n", Change::Add(-7)),
        Updated::Integer(-2)
    );
    assert_eq!(get(&mut backup, "n"), Some(b"-2".to_vec()));
    put(&mut owner, "s", "abc", 60_000);
    put(&mut backup, "s", "abc", 60_000);
    assert_eq!(
        run(&mut owner, &mut backup, "s", Change::Add(1)),
        Updated::NotAnInteger
    );
    assert_eq!(
        get(&mut owner, "s"),
        Some(b"abc".to_vec()),
        "nothing changed"
    );
    assert_eq!(
        run(&mut owner, &mut backup, "s", Change::Append(b"de".to_vec())),
        Updated::Length(5)
    );
    assert_eq!(get(&mut backup, "s"), Some(b"abcde".to_vec()));
    let at = |h: &mut H| {
        h.run(&Ttl {
            name: "m".into(),
            key: b"s".to_vec(),
        })
        .expect("ttl")
    };
    assert!(
        at(&mut owner).is_some_and(|t| t > 0),
        "the append kept the expiry"
    );
    put(&mut owner, "big", &i64::MAX.to_string(), 0);
    assert_eq!(
        run(&mut owner, &mut backup, "big", Change::Add(1)),
        Updated::Overflow
    );
    assert_eq!(
        run(
            &mut owner,
            &mut backup,
            "new",
            Change::Append(b"x".to_vec())
        ),
        Updated::Length(1)
    );
    // Conditional sets (Redis' SET NX / XX / GET), with their own TTL.
    let set_get = |value: &str, if_exists, get| {
        Change::Set(update::SetTo {
            value: value.into(),
            ttl_ms: 0,
            if_exists,
            get,
        })
    };
    let set = |value: &str, if_exists| set_get(value, if_exists, true);
    assert_eq!(
        run(&mut owner, &mut backup, "c", set("1", Some(true))),
        Updated::Set(false, None),
        "XX over no key"
    );
    assert_eq!(
        run(&mut owner, &mut backup, "c", set("1", Some(false))),
        Updated::Set(true, None)
    );
    assert_eq!(
        run(&mut owner, &mut backup, "c", set("2", Some(false))),
        Updated::Set(false, Some(b"1".to_vec())),
        "NX over a live key"
    );
    assert_eq!(
        run(&mut owner, &mut backup, "s", set("plain", None)),
        Updated::Set(true, Some(b"abcde".to_vec()))
    );
    assert_eq!(get(&mut backup, "c"), Some(b"1".to_vec()));
    assert_eq!(
        run(
            &mut owner,
            &mut backup,
            "c",
            set_get("3", Some(false), false)
        ),
        Updated::Set(false, None),
        "without GET the old value is not answered"
    );
    assert_eq!(
        run(&mut owner, &mut backup, "c", set_get("4", None, false)),
        Updated::Set(true, None)
    );
    assert_eq!(get(&mut backup, "c"), Some(b"4".to_vec()));
    assert_eq!(
        at(&mut owner),
        Some(0),
        "a set without a TTL clears the expiry"
    );
}

/// What a replica holds of map `name`: every entry (live at the time) with everything the
/// store records, by key.
fn records(h: &H, name: &str) -> Vec<EntryData> {
    let now = now_millis();
    let mut all: Vec<EntryData> = h
        .container()
        .get(name)
        .map(|s| {
            s.iter()
                .filter(|e| store::live(e, now))
                .map(|e| EntryData::of(e))
                .collect()
        })
        .unwrap_or_default();
    all.sort_by(|a, b| a.key.cmp(&b.key));
    all
}

/// The live entry of `key` in map "m" as the store records it, without counting a hit.
fn record(h: &H, key: &str) -> Option<EntryData> {
    let now = now_millis();
    let s = h.container().get("m")?;
    s.get(key.as_bytes(), now).map(|e| EntryData::of(e))
}

fn entry(key: &str, value: &str, hits: u32, updated_millis: u64, expires_at: u64) -> EntryData {
    EntryData {
        key: key.into(),
        value: value.into(),
        expires_at,
        updated_millis,
        hits,
    }
}

/// Stores entries exactly as given (hits and update times included), as a backup would.
fn seed(h: &mut H, name: &str, entries: &[EntryData]) {
    let steps = entries.iter().cloned().map(Step::Put).collect();
    h.run(&Apply {
        name: name.into(),
        steps,
    })
    .expect("seed");
}

fn contains(h: &mut H, key: &str) -> bool {
    h.run(&ContainsKey {
        name: "m".into(),
        key: key.into(),
    })
    .expect("contains")
}

fn hits_of(h: &H, key: &str) -> u32 {
    record(h, key).map_or(0, |e| e.hits)
}

#[test]
fn owner_reads_count_hits_and_scans_backup_reads_and_writes_do_not() {
    let mut h = harness(&[]);
    put(&mut h, "k", "1", -1);
    assert_eq!(hits_of(&h, "k"), 0, "a new entry starts at 0");
    get(&mut h, "k");
    assert!(contains(&mut h, "k"));
    let all = h
        .run(&GetAll {
            name: "m".into(),
            keys: vec![b"k".to_vec(), b"absent".to_vec()],
        })
        .expect("get_all");
    assert_eq!(all.len(), 1);
    assert_eq!(hits_of(&h, "k"), 3, "get, contains_key and get_all count");
    h.run(&Size { name: "m".into() }).expect("size");
    h.run(&Entries {
        name: "m".into(),
        keys: true,
        values: true,
    })
    .expect("entries");
    h.run(&Ttl {
        name: "m".into(),
        key: b"k".to_vec(),
    })
    .expect("ttl");
    assert_eq!(hits_of(&h, "k"), 3, "scans and ttl count nothing");
    put(&mut h, "k", "2", -1);
    h.run(&update::Update {
        name: "m".into(),
        key: b"k".to_vec(),
        change: update::Change::Append(b"x".to_vec()),
    })
    .expect("append");
    assert_eq!(
        hits_of(&h, "k"),
        3,
        "writes over a live entry keep its hits"
    );
    assert_eq!(get(&mut h, "absent"), None);
    assert!(record(&h, "absent").is_none(), "a miss creates nothing");
}

#[test]
fn an_entry_written_over_an_expired_one_starts_again_from_no_hits() {
    let mut h = harness(&[]);
    seed(&mut h, "m", &[entry("k", "old", 40, 1, 1)]);
    put(&mut h, "k", "new", -1);
    assert_eq!(hits_of(&h, "k"), 0);
    seed(&mut h, "m", &[entry("s", "v", u32::MAX, 1, 0)]);
    get(&mut h, "s");
    assert_eq!(hits_of(&h, "s"), u32::MAX, "hits saturate");
}

#[test]
fn writes_stamp_the_update_time_reads_and_ttl_changes_keep_it() {
    let mut h = harness(&[]);
    let before = now_millis();
    put(&mut h, "k", "1", -1);
    let stamped = record(&h, "k").expect("k").updated_millis;
    assert!((before..=now_millis()).contains(&stamped), "{stamped}");
    std::thread::sleep(Duration::from_millis(3));
    get(&mut h, "k");
    h.run(&SetTtl {
        name: "m".into(),
        key: b"k".to_vec(),
        ttl_ms: 60_000,
    })
    .expect("set_ttl");
    assert_eq!(record(&h, "k").expect("k").updated_millis, stamped);
    let replaced = h
        .run(&Replace {
            name: "m".into(),
            key: b"k".to_vec(),
            value: b"2".to_vec(),
            expect: None,
        })
        .expect("replace");
    assert!(replaced.updated_millis > stamped, "a replace is a write");
    assert_eq!(
        record(&h, "k").expect("k").updated_millis,
        replaced.updated_millis
    );
}

#[test]
fn a_backup_keeps_the_owners_update_time_and_its_hits_at_the_write() {
    let mut owner = harness(&[]);
    let mut backup = harness(&[]);
    let op = |v: &str| Put {
        name: "m".into(),
        key: b"k".to_vec(),
        value: v.into(),
        ttl_ms: 60_000,
        return_old: false,
    };
    owner
        .run_with_backups(&op("1"), &mut [&mut backup])
        .expect("put");
    get(&mut owner, "k");
    get(&mut owner, "k");
    std::thread::sleep(Duration::from_millis(3));
    owner
        .run_with_backups(&op("2"), &mut [&mut backup])
        .expect("put");
    get(&mut owner, "k");
    let at_owner = record(&owner, "k").expect("owner");
    let at_backup = record(&backup, "k").expect("backup");
    assert_eq!(at_backup.updated_millis, at_owner.updated_millis);
    assert_eq!(at_backup.expires_at, at_owner.expires_at);
    assert_eq!(
        (at_owner.hits, at_backup.hits),
        (3, 2),
        "the backup has the hits of the last write; the read after it stays on the owner"
    );
    get(&mut backup, "k");
    assert_eq!(hits_of(&backup, "k"), 2, "reads on a backup count nothing");
}

#[test]
fn migration_carries_update_times_and_hits() {
    let mut source = harness(&[]);
    put(&mut source, "k", "1", 0);
    get(&mut source, "k");
    let carried = record(&source, "k");
    let mut destination = harness(&[]);
    source.migrate_to(&mut destination, ReplicaIndex::PRIMARY);
    assert_eq!(record(&destination, "k"), carried);
}

/// The losing side's and the winning side's map `name`: keys on both sides differ in hits and
/// update time (`hits`: the merging entry was read more but written earlier; `time`: the other
/// way round; `tie`: equal), each side has keys of its own, and the merging side's `gone` expired.
fn merge_sides(source: &mut H, targets: &mut [&mut H], name: &str) {
    seed(
        source,
        name,
        &[
            entry("hits", "s-hits", 10, 1_000, 0),
            entry("time", "s-time", 1, 3_000, 0),
            entry("tie", "s-tie", 4, 100, 0),
            entry("source-only", "s-only", 2, 100, 0),
            entry("gone", "s-gone", 99, 9_000, 1),
            entry("expired-new", "s-expired", 99, 9_000, 1),
        ],
    );
    for t in targets {
        seed(
            t,
            name,
            &[
                entry("hits", "t-hits", 5, 2_000, 0),
                entry("time", "t-time", 7, 500, 0),
                entry("tie", "t-tie", 4, 100, 0),
                entry("target-only", "t-only", 0, 100, 0),
                entry("gone", "t-gone", 0, 100, 0),
            ],
        );
    }
}

fn harness_with(toml: &str, port: u16) -> H {
    let config = corecast_engine::Config::from_toml_str(toml).expect("config");
    H::with_config(&config, &Properties::default(), port).expect("harness")
}

fn values_of(h: &H, name: &str) -> Vec<(String, String)> {
    records(h, name)
        .into_iter()
        .map(|e| {
            let s = |b: Vec<u8>| String::from_utf8(b).expect("utf-8");
            (s(e.key), s(e.value))
        })
        .collect()
}

fn pairs(ps: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut v: Vec<_> = ps
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    v.sort();
    v
}

#[test]
fn each_merge_policy_takes_exactly_the_entries_it_says_and_backups_follow() {
    let cases = [
        ("pass-through", ["s-hits", "s-time", "s-tie"], true),
        ("put-if-absent", ["t-hits", "t-time", "t-tie"], true),
        ("higher-hits", ["s-hits", "t-time", "t-tie"], true),
        ("latest-update", ["t-hits", "s-time", "t-tie"], true),
        ("discard", ["t-hits", "t-time", "t-tie"], false),
    ];
    for (policy, [hits, time, tie], arrives) in cases {
        let toml = format!("[split-brain]\nmerge-policy = \"{policy}\"");
        let (mut source, mut target, mut backup) = (
            harness_with(&toml, 5701),
            harness_with(&toml, 5702),
            harness_with(&toml, 5703),
        );
        merge_sides(&mut source, &mut [&mut target, &mut backup], "m");
        let events = target.listen("m", true);
        source
            .merge_into(&mut target, &mut [&mut backup])
            .expect("merge");
        let mut want = vec![
            ("hits", hits),
            ("time", time),
            ("tie", tie),
            ("target-only", "t-only"),
            ("gone", "t-gone"),
        ];
        if arrives {
            want.push(("source-only", "s-only"));
        }
        assert_eq!(values_of(&target, "m"), pairs(&want), "{policy}");
        assert_eq!(
            records(&backup, "m"),
            records(&target, "m"),
            "{policy}: backup"
        );
        // Every entry taken was announced as a put would announce it.
        let mut announced: Vec<(EventKind, Vec<u8>)> = events
            .try_iter()
            .map(|b| decode::<EntryEvent>(&b).expect("event"))
            .map(|e| (e.kind, e.key))
            .collect();
        announced.sort_by(|a, b| a.1.cmp(&b.1));
        let mut expected: Vec<(EventKind, Vec<u8>)> = want
            .iter()
            .filter(|(_, v)| v.starts_with("s-"))
            .map(|(k, _)| {
                let kind = if *k == "source-only" {
                    EventKind::Added
                } else {
                    EventKind::Updated
                };
                (kind, k.as_bytes().to_vec())
            })
            .collect();
        expected.sort_by(|a, b| a.1.cmp(&b.1));
        assert_eq!(announced, expected, "{policy}: events");
    }
}

#[test]
fn a_merged_entry_keeps_the_merging_sides_hits_update_time_and_expiry() {
    let toml = "[split-brain]\nmerge-policy = \"pass-through\"";
    let (mut source, mut target) = (harness_with(toml, 5701), harness_with(toml, 5702));
    let expires_at = now_millis() + 600_000;
    seed(&mut source, "m", &[entry("k", "v", 12, 3_456, expires_at)]);
    source.merge_into(&mut target, &mut []).expect("merge");
    assert_eq!(
        record(&target, "k"),
        Some(entry("k", "v", 12, 3_456, expires_at))
    );
}

#[test]
fn entries_expired_on_the_way_are_not_merged() {
    let toml = "[split-brain]\nmerge-policy = \"pass-through\"";
    let mut target = harness_with(toml, 5702);
    seed(&mut target, "m", &[entry("k", "kept", 0, 1, 0)]);
    // Built by hand: the merging side would have left these out, but they expired in flight.
    let op = merge::Merge {
        name: "m".into(),
        policy: MergePolicy::PassThrough.to_wire(),
        entries: vec![entry("k", "late", 9, 9, 1), entry("new", "late", 9, 9, 1)],
    };
    assert_eq!(target.run(&op).expect("merge").count(), 0);
    assert_eq!(values_of(&target, "m"), pairs(&[("k", "kept")]));
}

#[test]
fn per_map_merge_policies_override_the_services_and_the_clusters() {
    let toml = r#"
        [split-brain]
        merge-policy = "higher-hits"
        [[services]]
        name = "map"
        merge-policy = "latest-update"
        [[services.objects]]
        name = "a"
        merge-policy = "pass-through"
        [[services.objects]]
        name = "b"
        merge-policy = "discard"
    "#;
    let (mut source, mut target, mut backup) = (
        harness_with(toml, 5701),
        harness_with(toml, 5702),
        harness_with(toml, 5703),
    );
    for name in ["a", "b", "c"] {
        merge_sides(&mut source, &mut [&mut target, &mut backup], name);
    }
    let ops = source
        .merge_into(&mut target, &mut [&mut backup])
        .expect("merge");
    assert_eq!(ops, 3, "one operation per map");
    let a = [
        ("hits", "s-hits"),
        ("time", "s-time"),
        ("tie", "s-tie"),
        ("source-only", "s-only"),
        ("target-only", "t-only"),
        ("gone", "t-gone"),
    ];
    let b = [
        ("hits", "t-hits"),
        ("time", "t-time"),
        ("tie", "t-tie"),
        ("target-only", "t-only"),
        ("gone", "t-gone"),
    ];
    let c = [
        ("hits", "t-hits"),
        ("time", "s-time"),
        ("tie", "t-tie"),
        ("source-only", "s-only"),
        ("target-only", "t-only"),
        ("gone", "t-gone"),
    ];
    assert_eq!(
        values_of(&target, "a"),
        pairs(&a),
        "a: its own pass-through"
    );
    assert_eq!(values_of(&target, "b"), pairs(&b), "b: its own discard");
    assert_eq!(
        values_of(&target, "c"),
        pairs(&c),
        "c: the service's latest-update, not the cluster's higher-hits"
    );
    for name in ["a", "b", "c"] {
        assert_eq!(
            records(&backup, name),
            records(&target, name),
            "{name}: backup"
        );
    }
}

#[test]
fn a_merge_with_an_unknown_policy_byte_fails_and_changes_nothing() {
    let mut target = harness(&[]);
    put(&mut target, "k", "kept", 0);
    let op = merge::Merge {
        name: "m".into(),
        policy: 7,
        entries: vec![entry("k", "new", 0, u64::from(u32::MAX), 0)],
    };
    let err = target.run(&op).expect_err("a bad policy byte");
    assert_eq!(
        err,
        OpError::failed("merge of map `m`: policy byte 7 names no merge policy")
    );
    assert_eq!(values_of(&target, "m"), pairs(&[("k", "kept")]));
}

#[test]
fn a_merge_respects_max_entries_evicting_or_refusing_like_a_put() {
    let toml = "[split-brain]\nmerge-policy = \"pass-through\"";
    let config = corecast_engine::Config::from_toml_str(toml).expect("config");
    let new = |props: &[(&str, toml::Value)], port| {
        let mut p = Properties::default();
        for (k, v) in props {
            p.insert(*k, v.clone());
        }
        H::with_config(&config, &p, port).expect("harness")
    };
    let bounded = [("max-entries", toml::Value::Integer(3))];
    let mut source = new(&[], 5701);
    let entries: Vec<EntryData> = (0..5)
        .map(|i| entry(&format!("s{i}"), "v", 0, 1, 0))
        .collect();
    seed(&mut source, "m", &entries);
    let (mut target, mut backup) = (new(&bounded, 5702), new(&bounded, 5703));
    source
        .merge_into(&mut target, &mut [&mut backup])
        .expect("merge");
    assert_eq!(
        records(&target, "m").len(),
        3,
        "evicted down to max-entries"
    );
    assert_eq!(records(&backup, "m"), records(&target, "m"));
    let full = [
        ("max-entries", toml::Value::Integer(3)),
        ("eviction", toml::Value::String("none".into())),
    ];
    let mut target = new(&full, 5702);
    let op = merge::Merge {
        name: "m".into(),
        policy: MergePolicy::PassThrough.to_wire(),
        entries,
    };
    let merged = target.run(&op).expect("merge");
    assert_eq!(
        (merged.count(), merged.refused),
        (3, 2),
        "a full map refuses the rest"
    );
}

#[test]
fn a_large_map_merges_in_several_operations_under_the_size_bound() {
    let mut source = harness(&[]);
    let value = "x".repeat(1000);
    let entries: Vec<EntryData> = (0..3000)
        .map(|i| entry(&format!("key-{i}"), &value, 0, 1, 0))
        .collect();
    seed(&mut source, "m", &entries);
    let mut target = harness(&[]);
    let mut backup = harness(&[]);
    let ops = source
        .merge_into(&mut target, &mut [&mut backup])
        .expect("merge");
    // About 3 MiB of entries: three batches of at most 1 MiB, and part of a fourth.
    assert!((3..=4).contains(&ops), "{ops} operations");
    assert_eq!(records(&target, "m").len(), 3000);
    assert_eq!(records(&backup, "m"), records(&target, "m"));
}

#[test]
fn a_get_that_borrows_archives_as_the_get_it_stands_for() {
    for (name, key) in [
        ("m", &b""[..]),
        ("a map with a longer name than fits inline", b"key-17"),
    ] {
        let owned = Get {
            name: name.into(),
            key: key.to_vec(),
        };
        let a = corecast_engine::payload::encode(&owned).unwrap();
        let b = corecast_engine::payload::encode_as::<Get, _>(&GetRef { name, key }).unwrap();
        assert_eq!(a.as_slice(), b.as_slice(), "{name}");
        let read = corecast_engine::payload::access::<Get>(&b).unwrap();
        assert_eq!((read.name.as_str(), read.key.as_slice()), (name, key));
    }
}
