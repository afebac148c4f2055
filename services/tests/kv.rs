//! The minimal key-value service on a real member: routing by key, all-partitions size and
//! clear, and destroy reaching every partition.

#![allow(clippy::unwrap_used)]

mod support;

use corecast_services::kv::{KvService, KvStore};

#[test]
fn values_put_are_read_back_from_their_partitions() {
    let member = support::member(2);
    let store = member.object::<KvStore>("users").unwrap();
    for i in 0..500u32 {
        member
            .block_on(store.put(&i.to_le_bytes(), format!("v{i}").as_bytes()))
            .unwrap();
    }
    for i in 0..500u32 {
        let value = member.block_on(store.get(&i.to_le_bytes())).unwrap();
        assert_eq!(value.as_deref(), Some(format!("v{i}").as_bytes()));
    }
    assert_eq!(member.block_on(store.get(b"absent")).unwrap(), None);
    assert!(member.block_on(store.remove(&7u32.to_le_bytes())).unwrap());
    assert!(!member.block_on(store.remove(&7u32.to_le_bytes())).unwrap());
    assert_eq!(member.block_on(store.size()).unwrap(), 499);
    member.block_on(store.clear()).unwrap();
    assert_eq!(member.block_on(store.size()).unwrap(), 0);
    member.shutdown();
}

#[test]
fn destroying_a_store_removes_its_entries_from_every_partition() {
    let member = support::member(2);
    let m = member.member();
    let doomed = member.object::<KvStore>("doomed").unwrap();
    let kept = member.object::<KvStore>("kept").unwrap();
    // 2,000 keys reach every one of the 271 partitions.
    for i in 0..2_000u32 {
        member.block_on(doomed.put(&i.to_le_bytes(), b"x")).unwrap();
        member.block_on(kept.put(&i.to_le_bytes(), b"y")).unwrap();
    }
    member
        .block_on(m.destroy_object::<KvService>("doomed"))
        .unwrap();
    let reopened = member.object::<KvStore>("doomed").unwrap();
    assert_eq!(member.block_on(reopened.size()).unwrap(), 0);
    for i in 0..2_000u32 {
        assert_eq!(
            member.block_on(reopened.get(&i.to_le_bytes())).unwrap(),
            None
        );
    }
    assert_eq!(
        member.block_on(kept.size()).unwrap(),
        2_000,
        "another store was touched"
    );
    member.shutdown();
}
