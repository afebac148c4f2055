//! The built-in objects' proxies on an embedded member with two shards: every Map, AtomicLong,
//! Topic and Lock method a user calls, through the engine's routing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use corecast_services::atomic::AtomicLong;
use corecast_services::lock::Lock;
use corecast_services::map::{EventKind, Map};
use corecast_services::topic::Topic;
use rkyv::{Archive, Deserialize, Serialize};

#[derive(Archive, Serialize, Deserialize, Debug, PartialEq, Clone)]
struct User {
    name: String,
    age: u32,
}

#[test]
fn map_methods_across_partitions_and_shards() {
    let m = support::member(2);
    let map = m.object::<Map>("users").unwrap();
    let entries: Vec<(Vec<u8>, Vec<u8>)> = (0..500u32)
        .map(|i| (format!("k{i}").into_bytes(), format!("v{i}").into_bytes()))
        .collect();
    m.block_on(map.put_all(&entries)).unwrap();
    assert_eq!(m.block_on(map.size()).unwrap(), 500);
    let mut keys = m.block_on(map.keys()).unwrap();
    keys.sort();
    let mut want: Vec<Vec<u8>> = entries.iter().map(|e| e.0.clone()).collect();
    want.sort();
    assert_eq!(keys, want);
    let mut values = m.block_on(map.values()).unwrap();
    values.sort();
    assert_eq!(values.len(), 500);
    let some: Vec<Vec<u8>> = vec![b"k1".to_vec(), b"k499".to_vec(), b"missing".to_vec()];
    let mut got = m.block_on(map.get_all(&some)).unwrap();
    got.sort();
    assert_eq!(
        got,
        vec![
            (b"k1".to_vec(), b"v1".to_vec()),
            (b"k499".to_vec(), b"v499".to_vec())
        ]
    );
    assert!(m.block_on(map.delete(b"k1")).unwrap());
    assert!(!m.block_on(map.delete(b"k1")).unwrap());
    assert_eq!(m.block_on(map.remove(b"k2")).unwrap(), Some(b"v2".to_vec()));
    assert!(m
        .block_on(map.replace_if_equal(b"k3", b"v3", b"new"))
        .unwrap());
    assert_eq!(
        m.block_on(map.replace(b"k3", b"newer")).unwrap(),
        Some(b"new".to_vec())
    );
    assert_eq!(
        m.block_on(map.put_if_absent(b"k3", b"x")).unwrap(),
        Some(b"newer".to_vec())
    );
    // TTLs: set, read, cleared, and an entry that expires.
    assert!(m
        .block_on(map.set_ttl(b"k4", Some(Duration::from_secs(60))))
        .unwrap());
    let left = m.block_on(map.ttl(b"k4")).unwrap().flatten().unwrap();
    assert!(left > Duration::from_secs(55) && left <= Duration::from_secs(60));
    assert!(m.block_on(map.set_ttl(b"k4", None)).unwrap());
    assert_eq!(m.block_on(map.ttl(b"k4")).unwrap(), Some(None));
    assert_eq!(m.block_on(map.ttl(b"missing")).unwrap(), None);
    let listener = m.block_on(map.listen(false)).unwrap();
    m.block_on(map.set_with_ttl(b"brief", b"1", Duration::from_millis(50)))
        .unwrap();
    let added = listener.next_timeout(Duration::from_secs(5)).unwrap();
    assert_eq!(
        (added.kind, added.key.as_slice()),
        (EventKind::Added, &b"brief"[..])
    );
    let expired = listener.next_timeout(Duration::from_secs(5)).unwrap();
    assert_eq!(
        (expired.kind, expired.key.as_slice()),
        (EventKind::Expired, &b"brief"[..])
    );
    assert!(!m.block_on(map.contains_key(b"brief")).unwrap());
    m.block_on(map.clear()).unwrap();
    assert_eq!(m.block_on(map.size()).unwrap(), 0);

    let typed = map.typed::<u64, User>();
    let ann = User {
        name: "Ann".into(),
        age: 41,
    };
    assert_eq!(m.block_on(typed.put(&7, &ann)).unwrap(), None);
    assert_eq!(m.block_on(typed.get(&7)).unwrap(), Some(ann.clone()));
    assert!(m.block_on(typed.contains_key(&7)).unwrap());
    assert_eq!(m.block_on(typed.remove(&7)).unwrap(), Some(ann));
    m.shutdown();
}

#[test]
fn atomic_long_topic_and_lock_methods() {
    let m = support::member(2);
    let a = m.object::<AtomicLong>("seq").unwrap();
    assert_eq!(m.block_on(a.get()).unwrap(), 0);
    assert_eq!(m.block_on(a.increment_and_get()).unwrap(), 1);
    assert_eq!(m.block_on(a.get_and_add(5)).unwrap(), 1);
    assert_eq!(m.block_on(a.add_and_get(-2)).unwrap(), 4);
    assert_eq!(m.block_on(a.decrement_and_get()).unwrap(), 3);
    assert_eq!(m.block_on(a.get_and_set(10)).unwrap(), 3);
    assert!(!m.block_on(a.compare_and_set(3, 4)).unwrap());
    assert!(m.block_on(a.compare_and_set(10, 11)).unwrap());
    m.block_on(a.set(-1)).unwrap();
    assert_eq!(m.block_on(a.get()).unwrap(), -1);

    let t = m.object::<Topic>("t").unwrap();
    let sub = m.block_on(t.subscribe()).unwrap();
    m.block_on(t.publish(b"one")).unwrap();
    let msg = sub.next_timeout(Duration::from_secs(5)).unwrap();
    assert_eq!(msg.payload, b"one");
    drop(sub);
    m.block_on(t.publish(b"nobody listens")).unwrap();

    let l = m.object::<Lock>("l").unwrap();
    assert!(!m.block_on(l.is_locked()).unwrap());
    let f1 = m
        .block_on(l.try_lock_with_lease(Duration::ZERO, Some(Duration::from_millis(200))))
        .unwrap()
        .unwrap();
    assert!(m.block_on(l.is_locked()).unwrap());
    let other = l.with_owner(2);
    // The lease ends on its own; the waiter gets a larger fence.
    let f2 = m
        .block_on(other.try_lock(Duration::from_secs(5)))
        .unwrap()
        .unwrap();
    assert!(f2 > f1);
    assert!(m.block_on(l.unlock()).is_err(), "the lease ended: not held");
    m.block_on(other.unlock()).unwrap();
    assert!(!m.block_on(l.is_locked()).unwrap());
    m.shutdown();
}
