//! Backup replicas with in-process networked members: reads from backups (`read-backup-data`)
//! anti-entropy repairing backups whose frames were dropped by the failpoint, and the answers an
//! owner remembers for calls sent again.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use corecast_engine::config::{ObjectConfig, ServiceConfig};
use corecast_engine::spi::{Operation, Service};
use corecast_engine::{BlockingMember, Config};
use corecast_net::frame::{self, FrameKind, Header, ReadBuf};
use corecast_net::wire::{Control, Role, Status};
use corecast_net::Network;
use corecast_services::counter::{Counter, CounterService};
use corecast_services::kv::{KvService, KvStore};
use corecast_services::map::{Map, MapService};

/// A one-shard member on a free port joining `seeds`, with `tune` applied to its config.
fn start(seeds: &[&BlockingMember], tune: impl Fn(&mut Config)) -> BlockingMember {
    let mut config = support::networked_config(seeds, 1);
    tune(&mut config);
    let builder = BlockingMember::builder(config)
        .service::<CounterService>()
        .service::<KvService>()
        .service::<MapService>();
    let member = futures_lite::future::block_on(corecast_net::start_member(builder)).unwrap();
    BlockingMember::from(member)
}

fn two_members(tune: impl Fn(&mut Config) + Copy) -> (BlockingMember, BlockingMember) {
    let a = start(&[], tune);
    let b = start(&[&a], tune);
    support::procs::wait_for(
        "both members own partitions, migrations done",
        Duration::from_secs(20),
        || {
            let status = b.member().extension::<Network>().unwrap().status();
            status.members.len() == 2
                && status.migrations.planned + status.migrations.in_flight == 0
                && status.members.iter().all(|m| m.owned > 0 && m.backups > 0)
        },
    );
    (a, b)
}

/// Keys whose partition `member` does not own (it holds their backup, with two members).
fn keys_backed_up_by(member: &BlockingMember, n: usize) -> Vec<String> {
    let network = member.member().extension::<Network>().unwrap();
    let table = network.table().unwrap();
    let invoker = member.member().invoker();
    (0..n)
        .map(|i| format!("key-{i}"))
        .filter(|k| {
            let p = invoker.partition_of(k.as_bytes());
            table.owner(p) != Some(network.id())
        })
        .collect()
}

/// Writes 60 keys through `a` whose partitions `b` backs up; the keys, and the store on `b`.
fn write_backed_up_keys(a: &BlockingMember, b: &BlockingMember) -> (Vec<String>, KvStore) {
    let keys = keys_backed_up_by(b, 60);
    let on_a: KvStore = a.object("m").unwrap();
    for k in &keys {
        a.block_on(on_a.put(k.as_bytes(), b"v")).unwrap();
    }
    (keys, b.object("m").unwrap())
}

fn kv_read_backup(config: &mut Config) {
    config.services.push(ServiceConfig {
        name: "kv".into(),
        read_backup_data: Some(true),
        ..ServiceConfig::default()
    });
}

#[test]
fn read_backup_data_serves_reads_from_the_local_backup_and_is_off_by_default() {
    // Backups never arrive (the failpoint drops them all) and are never repaired: a read the
    // member serves from its own backup finds nothing, a read sent to the owner finds the value.
    let no_backups = |c: &mut Config| {
        c.backups.failpoint_drop_backups_percent = 100;
        c.backups.anti_entropy_interval_millis = 0;
    };
    let (a, b) = two_members(|c| {
        no_backups(c);
        kv_read_backup(c);
    });
    let (keys, on_b) = write_backed_up_keys(&a, &b);
    for k in &keys {
        let local = b.block_on(on_b.get(k.as_bytes())).unwrap();
        assert_eq!(local, None, "{k} read from b's own (empty) backup");
    }
    a.shutdown();
    b.shutdown();

    let (a, b) = two_members(no_backups);
    let (keys, on_b) = write_backed_up_keys(&a, &b);
    for k in &keys {
        let read = b.block_on(on_b.get(k.as_bytes())).unwrap();
        assert_eq!(
            read.as_deref(),
            Some(&b"v"[..]),
            "{k}: off by default, read at the owner"
        );
    }
    a.shutdown();
    b.shutdown();
}

#[test]
fn read_backup_data_is_set_per_map() {
    let (a, b) = two_members(|c| {
        c.backups.failpoint_drop_backups_percent = 100;
        c.backups.anti_entropy_interval_millis = 0;
        c.services.push(ServiceConfig {
            name: "map".into(),
            objects: vec![ObjectConfig {
                name: "catalog".into(),
                read_backup_data: Some(true),
                ..ObjectConfig::default()
            }],
            ..ServiceConfig::default()
        });
    });
    let keys = keys_backed_up_by(&b, 60);
    for name in ["catalog", "orders"] {
        let on_a: Map = a.object(name).unwrap();
        for k in &keys {
            a.block_on(on_a.set(k.as_bytes(), b"v")).unwrap();
        }
    }
    let (catalog, orders): (Map, Map) = (b.object("catalog").unwrap(), b.object("orders").unwrap());
    for k in &keys {
        let local = b.block_on(catalog.get(k.as_bytes())).unwrap();
        assert_eq!(local, None, "{k}: catalog reads b's own (empty) backup");
        let owner = b.block_on(orders.get(k.as_bytes())).unwrap();
        assert_eq!(
            owner.as_deref(),
            Some(&b"v"[..]),
            "{k}: orders reads at the owner"
        );
    }
    a.shutdown();
    b.shutdown();
}

#[test]
fn anti_entropy_repairs_backups_when_half_the_backup_frames_are_dropped() {
    let (a, b) = two_members(|c| {
        c.backups.failpoint_drop_backups_percent = 50;
        c.backups.anti_entropy_interval_millis = 200;
        kv_read_backup(c);
    });
    let on_a: KvStore = a.object("m").unwrap();
    let counters: Vec<Counter> = (0..8)
        .map(|i| a.object(&format!("c{i}")).unwrap())
        .collect();
    for i in 0..400 {
        let k = format!("key-{i}");
        a.block_on(on_a.put(k.as_bytes(), k.as_bytes())).unwrap();
        a.block_on(counters[i % 8].inc(1)).unwrap();
    }
    // Every key b holds a backup of reads back from b's own replica once repaired.
    let written = keys_backed_up_by(&b, 400);
    let on_b: KvStore = b.object("m").unwrap();
    assert!(written.len() > 50, "b backs up some of the keys");
    support::procs::wait_for(
        "b's backups equal the owners'",
        Duration::from_secs(10),
        || {
            written.iter().all(|k| {
                b.block_on(on_b.get(k.as_bytes())).unwrap().as_deref() == Some(k.as_bytes())
            })
        },
    );
    // The counters' backups cannot be read on b; their repairs come in the same anti-entropy
    // rounds as the keys', but may be one round later: let three more rounds pass (a counter
    // was 49 of 50 1 in 10 runs without, with and without the short wait).
    std::thread::sleep(Duration::from_millis(600));
    // And the owner's copies are not needed any more: a dies, b has every key and count.
    a.terminate();
    support::procs::wait_for("a removed", Duration::from_secs(10), || {
        support::network(&b).status().members.len() == 1
    });
    for i in 0..400 {
        let k = format!("key-{i}");
        assert_eq!(
            b.block_on(on_b.get(k.as_bytes())).unwrap().as_deref(),
            Some(k.as_bytes()),
            "{k} survived"
        );
    }
    for i in 0..8 {
        let c: Counter = b.object(&format!("c{i}")).unwrap();
        assert_eq!(b.block_on(c.inc(0)).unwrap(), 50, "counter c{i}");
    }
    b.shutdown();
}

/// Sends `frames` on one fresh connection to `member`'s shard 0 (after a client's hello) and
/// reads that many answers: each one's status and body.
fn raw_calls(member: &BlockingMember, frames: &[(Header, Vec<u8>)]) -> Vec<(u16, Vec<u8>)> {
    use std::io::{Read, Write};
    let addr = member.member().invoker().member().address;
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    let mut out = rkyv::util::AlignedVec::<16>::new();
    let hello = Control::Hello {
        cluster: member.member().invoker().member().cluster_name.clone(),
        secret: String::new(),
        role: Role::Client,
        id: 77,
    };
    let hello = corecast_engine::payload::encode(&hello).unwrap();
    frame::encode(&mut out, &Header::new(FrameKind::Control), &hello, 1 << 20).unwrap();
    for (h, body) in frames {
        frame::encode(&mut out, h, body, 1 << 20).unwrap();
    }
    s.write_all(&out).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut rb = ReadBuf::new(1 << 20);
    let mut answers = Vec::new();
    while answers.len() < frames.len() {
        let n = s.read(rb.spare()).unwrap();
        assert!(n > 0, "the member answered");
        rb.filled(n);
        while let Some((h, payload)) = rb.next_frame().unwrap() {
            if h.kind == FrameKind::Response {
                answers.push((h.status, payload.to_vec()));
            }
        }
    }
    answers
}

#[test]
fn a_call_sent_again_is_answered_from_memory_and_a_first_send_always_runs() {
    let a = start(&[], |_| {});
    support::procs::wait_for("the member", Duration::from_secs(20), || {
        support::network(&a).status().members.len() == 1
    });
    let partitions = a.member().invoker().partition_count();
    let inc = corecast_engine::payload::encode(&corecast_services::counter::Inc {
        name: "retried".into(),
        amount: 1,
    })
    .unwrap();
    let request = |call: u64, flags: u8| {
        let h = Header {
            flags,
            partition: partitions.partition_of(b"retried").0,
            correlation: call,
            service: CounterService::ID.0,
            op: <corecast_services::counter::Inc as Operation>::ID.0,
            caller: 77,
            ..Header::new(FrameKind::Request)
        };
        (h, inc.to_vec())
    };
    let answers = raw_calls(
        &a,
        &[
            request(5, 0),
            // The same call sent again: answered with its first answer, not run.
            request(5, frame::RETRY),
            request(6, 0),
            // A call sent again whose first send never arrived: it runs.
            request(7, frame::RETRY),
            request(6, frame::RETRY),
            // Without the flag a call is a first send, which cannot have run: it is not looked
            // for (a client that reuses a call id without it gets it run).
            request(5, 0),
        ],
    );
    let values: Vec<i64> = answers
        .iter()
        .map(|(status, body)| {
            assert_eq!(*status, Status::Ok as u16);
            let mut aligned = rkyv::util::AlignedVec::<16>::new();
            aligned.extend_from_slice(body);
            corecast_engine::payload::decode::<i64>(&aligned).unwrap()
        })
        .collect();
    assert_eq!(values, vec![1, 1, 2, 3, 2, 4]);
    let counter = a.object::<Counter>("retried").unwrap();
    assert_eq!(a.block_on(counter.inc(0)).unwrap(), 4, "ran four times");
    a.shutdown();
}
