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
    let set = |value: &str, if_exists| {
        Change::Set(update::SetTo {
            value: value.into(),
            ttl_ms: 0,
            if_exists,
        })
    };
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
        at(&mut owner),
        Some(0),
        "a set without a TTL clears the expiry"
    );
}
