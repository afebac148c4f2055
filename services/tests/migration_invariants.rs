//! The invariants of migration, checked after every membership change of an in-process cluster
//! with data in it: members join (with 1 or 2 shards), one shuts down gracefully, one is
//! terminated as a crash would, one more joins. After each change, once the cluster is quiet:
//! every partition has exactly min(backups + 1, data members) replicas on distinct members; no
//! member keeps data for a partition it holds no replica of; each backup's versions equal its
//! owner's; every `before_migration` a live member saw has its commit or rollback; and every
//! acknowledged write reads back.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use support::{network, quiet};

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::Duration;

use corecast_engine::extension;
use corecast_engine::prelude::*;
use corecast_engine::table::MemberId;
use corecast_engine::BlockingMember;
use corecast_services::counter::{Counter, CounterService};
use corecast_services::kv::{KvService, KvStore};

/// Migration callbacks seen per member: before, commit, rollback.
static EVENTS: Mutex<BTreeMap<SocketAddr, [u64; 3]>> = Mutex::new(BTreeMap::new());

/// A service that holds nothing and counts its migration callbacks.
struct Probe {
    addr: SocketAddr,
}

impl Probe {
    fn count(&self, i: usize) {
        EVENTS.lock().unwrap().entry(self.addr).or_default()[i] += 1;
    }
}

impl Service for Probe {
    const NAME: &'static str = "probe";
    const ID: ServiceId = ServiceId(250);
    type Container = ();
    type ReplicaData = Vec<u8>;

    fn init(ctx: &ServiceContext, _: &Properties) -> Result<Self, ServiceError> {
        Ok(Probe {
            addr: ctx.member.address,
        })
    }
    fn operations(_: &mut Operations<Self>) {}
    fn destroy_object(&mut self, _: &mut (), _: &str) {}
    fn replica_data(_: &(), _: &ReplicationEvent) -> Option<Vec<u8>> {
        None
    }
    fn apply_replica_data(_: &mut (), _: &Archived<Vec<u8>>) {}
    fn before_migration(&mut self, _: &MigrationEvent) {
        self.count(0);
    }
    fn commit_migration(&mut self, _: &mut (), _: &MigrationEvent) {
        self.count(1);
    }
    fn rollback_migration(&mut self, _: &mut (), _: &MigrationEvent) {
        self.count(2);
    }
}

fn start(seeds: &[&BlockingMember], shards: u32, backups: u8) -> BlockingMember {
    let mut config = support::networked_config(seeds, shards);
    config.backups.backup_count = backups;
    config.backups.anti_entropy_interval_millis = 200;
    let builder = BlockingMember::builder(config)
        .service::<CounterService>()
        .service::<KvService>()
        .service::<Probe>();
    let member = futures_lite::future::block_on(corecast_net::start_member(builder)).unwrap();
    BlockingMember::from(member)
}

/// Runs `f` on every shard of `m`; the results by shard.
fn on_shards<T: Send + 'static>(
    m: &BlockingMember,
    f: impl Fn() -> T + Clone + Send + 'static,
) -> Vec<T> {
    let invoker = m.member().invoker();
    (0..invoker.shard_count().get())
        .map(|s| {
            let f = f.clone();
            m.block_on(invoker.run_on(ShardId(s), move || async move { f() }))
                .unwrap()
        })
        .collect()
}

/// `partition`'s versions on `m` for replica slot `slot`.
fn versions(m: &BlockingMember, partition: PartitionId, slot: u8) -> Vec<(u16, u64)> {
    let invoker = m.member().invoker();
    let shard = ShardId(partition.0 % invoker.shard_count().get());
    m.block_on(invoker.run_on(shard, move || async move {
        extension::versions(partition, ReplicaIndex(slot)).unwrap()
    }))
    .unwrap()
}

fn check_invariants(live: &[&BlockingMember], backups: u8, what: &str) {
    quiet(live);
    let table = network(live[0]).table().unwrap();
    let ids: Vec<MemberId> = live.iter().map(|m| network(m).id()).collect();
    let want = (usize::from(backups) + 1).min(live.len());
    for (p, row) in table.rows.iter().enumerate() {
        let held: Vec<MemberId> = row.iter().flatten().copied().collect();
        assert_eq!(
            held.len(),
            want,
            "{what}: partition {p} has replicas {row:?}"
        );
        let mut distinct = held.clone();
        distinct.sort_unstable();
        distinct.dedup();
        assert_eq!(distinct.len(), held.len(), "{what}: partition {p}: {row:?}");
        assert!(held.iter().all(|m| ids.contains(m)), "{what}: {row:?}");
    }
    assert!(table.is_balanced(&ids), "{what}: unbalanced table");
    for m in live {
        let id = network(m).id();
        for data in on_shards(m, extension::partitions_with_data) {
            for p in data {
                assert!(
                    table.replica_index(p, id).is_some(),
                    "{what}: {} keeps data of {p} without a replica",
                    m.member().invoker().member().address
                );
            }
        }
    }
    // Backups reach their owners' versions (anti-entropy repairs what a promotion left).
    support::procs::wait_for("backups in step", Duration::from_secs(60), || {
        table.rows.iter().enumerate().all(|(p, row)| {
            let p = PartitionId(p as u32);
            let Some(owner) = row[0].and_then(|o| ids.iter().position(|m| *m == o)) else {
                return false;
            };
            row.iter().enumerate().skip(1).all(|(slot, b)| {
                let Some(b) = b.and_then(|b| ids.iter().position(|m| *m == b)) else {
                    return true;
                };
                versions(live[owner], p, slot as u8) == versions(live[b], p, slot as u8)
            })
        })
    });
    let events = EVENTS.lock().unwrap();
    for m in live {
        let addr = m.member().invoker().member().address;
        let [before, commit, rollback] = events.get(&addr).copied().unwrap_or_default();
        assert_eq!(
            before,
            commit + rollback,
            "{what}: {addr} saw {before} before_migration, {commit} commits, {rollback} rollbacks"
        );
    }
}

/// Writes through `via`: counters c0..c15 incremented once more, 50 new keys. Returns nothing;
/// `expect` holds what must read back.
fn write(via: &BlockingMember, round: usize, expect: &mut (BTreeMap<String, i64>, Vec<String>)) {
    for c in 0..16 {
        let name = format!("c{c}");
        let counter: Counter = via.object(&name).unwrap();
        via.block_on(counter.inc(1)).unwrap();
        *expect.0.entry(name).or_default() += 1;
    }
    let store: KvStore = via.object("inv").unwrap();
    for k in 0..50 {
        let key = format!("r{round}-k{k}");
        via.block_on(store.put(key.as_bytes(), key.as_bytes()))
            .unwrap();
        expect.1.push(key);
    }
}

fn read_back(via: &BlockingMember, expect: &(BTreeMap<String, i64>, Vec<String>), what: &str) {
    for (name, value) in &expect.0 {
        let counter: Counter = via.object(name).unwrap();
        assert_eq!(
            via.block_on(counter.inc(0)).unwrap(),
            *value,
            "{what}: {name}"
        );
    }
    let store: KvStore = via.object("inv").unwrap();
    for key in &expect.1 {
        let got = via.block_on(store.get(key.as_bytes())).unwrap();
        assert_eq!(got.as_deref(), Some(key.as_bytes()), "{what}: {key}");
    }
}

fn changes_keep_the_invariants(backups: u8) {
    let mut expect = (BTreeMap::new(), Vec::new());
    let a = start(&[], 2, backups);
    write(&a, 0, &mut expect);
    check_invariants(&[&a], backups, "one member");

    let b = start(&[&a], 1, backups);
    check_invariants(&[&a, &b], backups, "b joined");
    write(&a, 1, &mut expect);
    let c = start(&[&a], 2, backups);
    check_invariants(&[&a, &b, &c], backups, "c joined");
    let d = start(&[&a], 1, backups);
    check_invariants(&[&a, &b, &c, &d], backups, "d joined");
    write(&d, 2, &mut expect);
    read_back(&a, &expect, "four members");

    b.shutdown();
    check_invariants(&[&a, &c, &d], backups, "b shut down");
    read_back(&d, &expect, "b shut down");
    c.terminate();
    check_invariants(&[&a, &d], backups, "c terminated");
    read_back(&a, &expect, "c terminated");
    let e = start(&[&a], 2, backups);
    check_invariants(&[&a, &d, &e], backups, "e joined");
    write(&e, 3, &mut expect);
    read_back(&a, &expect, "e joined");
    for m in [a, d, e] {
        m.shutdown();
    }
}

#[test]
fn every_change_keeps_the_invariants_with_one_backup() {
    changes_keep_the_invariants(1);
}

#[test]
fn every_change_keeps_the_invariants_with_two_backups() {
    changes_keep_the_invariants(2);
}
