//! The built-in objects across an in-process cluster (members on loopback ports, 1 shard each,
//! a smart client): listeners see every member's keys, topics keep each publisher's order,
//! locks are released when their member dies and survive migration, membership listeners.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use corecast_engine::{BlockingMember, Member, MembershipEvent};
use corecast_services::builtin::with_builtin_services;
use corecast_services::lock::Lock;
use corecast_services::map::{EventKind, Map};
use corecast_services::topic::Topic;
use support::{network, quiet};

fn start(seeds: &[&BlockingMember]) -> BlockingMember {
    let mut config = support::networked_config(seeds, 1);
    config.backups.backup_count = 1;
    config.service_tick_millis = 20;
    let builder = with_builtin_services(Member::builder(config));
    BlockingMember::from(
        futures_lite::future::block_on(corecast_net::start_member(builder)).unwrap(),
    )
}

fn client(via: &BlockingMember) -> BlockingMember {
    support::client_of(&via.member().invoker().member().address.to_string())
}

/// Keys whose partitions are owned by each member: at least one per member.
fn keys_on_every_member(m: &BlockingMember, n: usize) -> Vec<String> {
    let table = network(m).table().unwrap();
    let invoker = m.member().invoker();
    let mut owners = BTreeSet::new();
    let mut keys = Vec::new();
    for i in 0..n {
        let key = format!("key-{i}");
        owners.insert(table.owner(invoker.partition_of(key.as_bytes())));
        keys.push(key);
    }
    assert_eq!(
        owners.len(),
        network(m).status().members.len(),
        "keys on every member"
    );
    keys
}

#[test]
fn listeners_on_a_member_and_a_client_get_every_members_events_in_order() {
    let a = start(&[]);
    let b = start(&[&a]);
    let c = start(&[&a]);
    quiet(&[&a, &b, &c]);
    let cl = client(&b);
    let on_a = a.object::<Map>("watched").unwrap();
    let listener = a.block_on(on_a.listen(true)).unwrap();
    let lean = cl
        .block_on(cl.object::<Map>("watched").unwrap().listen(false))
        .unwrap();
    let from_c = c.object::<Map>("watched").unwrap();
    let keys = keys_on_every_member(&a, 40);
    for k in &keys {
        c.block_on(from_c.put(k.as_bytes(), b"1")).unwrap();
        c.block_on(from_c.put(k.as_bytes(), b"2")).unwrap();
        c.block_on(from_c.remove(k.as_bytes())).unwrap();
    }
    c.block_on(from_c.set_with_ttl(b"short-lived", b"x", Duration::from_millis(100)))
        .unwrap();
    for (name, values, next) in [
        (
            "member",
            true,
            Box::new(|t| listener.next_timeout(t)) as Box<dyn Fn(Duration) -> _>,
        ),
        ("client", false, Box::new(|t| lean.next_timeout(t))),
    ] {
        let mut per_key: std::collections::BTreeMap<Vec<u8>, Vec<EventKind>> = Default::default();
        let want = keys.len() * 3 + 2;
        let mut got = 0;
        while got < want {
            let e = next(Duration::from_secs(10))
                .unwrap_or_else(|| panic!("{name}: {got} of {want} events"));
            if values && e.kind == EventKind::Updated {
                assert_eq!(e.value.as_deref(), Some(&b"2"[..]));
                assert_eq!(e.old_value.as_deref(), Some(&b"1"[..]));
            }
            if !values {
                assert!(e.value.is_none() && e.old_value.is_none());
            }
            per_key.entry(e.key).or_default().push(e.kind);
            got += 1;
        }
        for k in &keys {
            assert_eq!(
                per_key.get(k.as_bytes()),
                Some(&vec![
                    EventKind::Added,
                    EventKind::Updated,
                    EventKind::Removed
                ]),
                "{name}: events of {k} in order"
            );
        }
        assert_eq!(
            per_key.get(&b"short-lived"[..]),
            Some(&vec![EventKind::Added, EventKind::Expired]),
            "{name}: the TTL's expiry is an event"
        );
    }
    drop(listener);
    drop(lean);
    cl.shutdown();
    for m in [c, b, a] {
        m.shutdown();
    }
}

#[test]
fn topic_messages_reach_every_subscriber_in_each_publishers_order() {
    let a = start(&[]);
    let b = start(&[&a]);
    let c = start(&[&a]);
    quiet(&[&a, &b, &c]);
    let cl = client(&a);
    let subs: Vec<_> = [&a, &b, &cl]
        .iter()
        .map(|m| {
            m.block_on(m.object::<Topic>("news").unwrap().subscribe())
                .unwrap()
        })
        .collect();
    const N: u32 = 200;
    let publishers: Vec<_> = [&a, &c]
        .iter()
        .map(|m| {
            let topic = m.object::<Topic>("news").unwrap();
            let id = m.member().invoker().member().id;
            let m = m.member().invoker().clone();
            let _ = m;
            (topic, id)
        })
        .collect();
    std::thread::scope(|s| {
        for ((topic, _), m) in publishers.iter().zip([&a, &c]) {
            s.spawn(move || {
                for i in 0..N {
                    m.block_on(topic.publish(&i.to_le_bytes())).unwrap();
                }
            });
        }
    });
    for (i, sub) in subs.iter().enumerate() {
        let mut next_of: std::collections::BTreeMap<u64, u32> = Default::default();
        for _ in 0..2 * N {
            let m = sub
                .next_timeout(Duration::from_secs(10))
                .unwrap_or_else(|| panic!("subscriber {i}: a message is missing"));
            let n = u32::from_le_bytes(m.payload.as_slice().try_into().unwrap());
            let expect = next_of.entry(m.publisher).or_default();
            assert_eq!(
                n, *expect,
                "subscriber {i}: publisher {} out of order",
                m.publisher
            );
            *expect += 1;
        }
        let ids: BTreeSet<u64> = publishers.iter().map(|p| p.1).collect();
        assert_eq!(next_of.keys().copied().collect::<BTreeSet<_>>(), ids);
    }
    drop(subs);
    cl.shutdown();
    for m in [c, b, a] {
        m.shutdown();
    }
}

#[test]
fn a_dead_members_lock_goes_to_a_waiter_with_a_larger_fence() {
    let a = start(&[]);
    let b = start(&[&a]);
    let c = start(&[&a]);
    quiet(&[&a, &b, &c]);
    let held = c
        .block_on(c.object::<Lock>("leader").unwrap().lock())
        .unwrap();
    let on_a = a.object::<Lock>("leader").unwrap();
    assert_eq!(a.block_on(on_a.try_lock(Duration::ZERO)).unwrap(), None);
    assert!(a.block_on(on_a.is_locked()).unwrap());
    let start_at = Instant::now();
    c.terminate();
    let fence = a
        .block_on(on_a.try_lock(Duration::from_secs(15)))
        .unwrap()
        .expect("the waiter gets the lock after its holder died");
    let took = start_at.elapsed();
    assert!(fence > held, "fence {fence} after {held}");
    println!("lock released {took:?} after its member died (member timeout 1 s)");
    assert!(took < Duration::from_secs(10), "{took:?}");
    // Reentrant for its owner, exclusive for another owner of the same process.
    assert_eq!(a.block_on(on_a.lock()).unwrap(), fence);
    assert_eq!(
        a.block_on(on_a.with_owner(1).try_lock(Duration::ZERO))
            .unwrap(),
        None
    );
    a.block_on(on_a.unlock()).unwrap();
    a.block_on(on_a.unlock()).unwrap();
    assert!(a.block_on(on_a.unlock()).is_err(), "not held any more");
    for m in [b, a] {
        m.shutdown();
    }
}

#[test]
fn a_held_lock_and_map_entries_survive_migration_and_membership_listeners_see_joins() {
    let a = start(&[]);
    let b = start(&[&a]);
    quiet(&[&a, &b]);
    let cl = client(&a);
    let joins = network(&cl).subscribe();
    let member_joins = network(&a).subscribe();
    let lock = a.object::<Lock>("resource").unwrap();
    let fence = a.block_on(lock.lock()).unwrap();
    let map = cl.object::<Map>("kept").unwrap();
    let listener = a
        .block_on(a.object::<Map>("kept").unwrap().listen(false))
        .unwrap();
    for i in 0..300u32 {
        cl.block_on(map.set(&i.to_le_bytes(), &i.to_be_bytes()))
            .unwrap();
    }
    let c = start(&[&a]);
    let d = start(&[&a]);
    quiet(&[&a, &b, &c, &d]);
    for (who, rx) in [("client", &joins), ("member", &member_joins)] {
        let mut added = 0;
        while let Ok(e) = rx.recv_timeout(Duration::from_secs(5)) {
            if matches!(e, MembershipEvent::Added(_)) {
                added += 1;
            }
            if added == 2 {
                break;
            }
        }
        assert_eq!(added, 2, "{who} membership listener saw both joins");
    }
    // The listener registered before the joins hears of keys the new members own now.
    while listener.next_timeout(Duration::from_millis(200)).is_some() {}
    let late = keys_on_every_member(&a, 200);
    for k in &late {
        cl.block_on(map.set(k.as_bytes(), b"late")).unwrap();
    }
    let mut heard = BTreeSet::new();
    while heard.len() < late.len() {
        let e = listener
            .next_timeout(Duration::from_secs(10))
            .unwrap_or_else(|| panic!("{} of {} late events", heard.len(), late.len()));
        heard.insert(e.key);
    }
    let other = d.object::<Lock>("resource").unwrap();
    assert_eq!(
        d.block_on(other.try_lock(Duration::ZERO)).unwrap(),
        None,
        "still held"
    );
    assert_eq!(d.block_on(other.info()).unwrap().fence, fence);
    a.block_on(lock.unlock()).unwrap();
    assert_eq!(
        d.block_on(other.try_lock(Duration::ZERO)).unwrap(),
        Some(fence + 1)
    );
    assert_eq!(cl.block_on(map.size()).unwrap(), 300 + late.len() as u64);
    for i in 0..300u32 {
        let v = cl.block_on(map.get(&i.to_le_bytes())).unwrap();
        assert_eq!(v, Some(i.to_be_bytes().to_vec()));
    }
    cl.shutdown();
    for m in [d, c, b, a] {
        m.shutdown();
    }
}
