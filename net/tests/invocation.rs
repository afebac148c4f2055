//! Routing between members in one process: each operation runs on its partition's owner, a
//! member that is not the owner answers WrongTarget, and an owner that is gone ends in a timeout
//! error naming the partition and the target.
#![allow(clippy::unwrap_used)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use corecast_engine::prelude::*;
use corecast_engine::{Config, Member, PartitionId};
use corecast_net::frame::{self, FrameKind, Header, ReadBuf};
use corecast_net::wire::{Control, Role, Status, WireError};
use corecast_net::{start_client, start_member, Network};

/// Answers the address of the member that ran it.
struct Where;

impl Service for Where {
    const NAME: &'static str = "where";
    const ID: ServiceId = ServiceId(901);
    type Container = ();
    type ReplicaData = ();

    fn init(_: &ServiceContext, _: &Properties) -> Result<Self, ServiceError> {
        Ok(Where)
    }

    fn operations(ops: &mut Operations<Self>) {
        ops.add::<Ask>();
    }

    fn destroy_object(&mut self, _: &mut (), _: &str) {}

    fn replica_data(_: &(), _: &ReplicationEvent) -> Option<()> {
        None
    }

    fn apply_replica_data(_: &mut (), _: &Archived<()>) {}
}

#[derive(Archive, Serialize, Deserialize)]
struct Ask;

impl Operation for Ask {
    type Service = Where;
    type Response = String;
    const ID: OpId = OpId(1);

    fn run(_: &Archived<Self>, ctx: &mut OpContext<'_, Where>) -> Result<String, OpError> {
        Ok(ctx.address().to_string())
    }
}

mod support;

fn config(port: u16, seeds: &[String]) -> Config {
    let mut c = support::config(port, seeds);
    c.network.invocation_timeout_millis = 600;
    c
}

fn block<T>(f: impl std::future::Future<Output = T>) -> T {
    futures_lite::future::block_on(f)
}

#[test]
fn operations_run_on_the_owner_and_strangers_get_wrong_target() {
    let (pa, pb) = (support::free_base(), support::free_base());
    let a = block(start_member(
        Member::builder(config(pa, &[])).service::<Where>(),
    ))
    .unwrap();
    let seeds = [format!("127.0.0.1:{pa}")];
    let b = block(start_member(
        Member::builder(config(pb, &seeds)).service::<Where>(),
    ))
    .unwrap();
    let net_b = b.extension::<Network>().unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    let settled = |s: corecast_net::ClusterStatus| {
        s.members.iter().filter(|m| m.owned > 0).count() == 2
            && s.migrations.planned + s.migrations.in_flight == 0
    };
    while !settled(net_b.status()) {
        assert!(
            Instant::now() < deadline,
            "both members own partitions, migrations done"
        );
        std::thread::sleep(Duration::from_millis(20));
    }

    // From member a, every partition's operation runs on its owner, local or not.
    let status = net_b.status();
    let owners: Vec<(SocketAddr, usize)> = status
        .members
        .iter()
        .map(|m| (m.entry.addr, m.owned))
        .collect();
    let mut ran_on = std::collections::BTreeMap::<String, usize>::new();
    for p in 0..271 {
        let here = block(a.invoker().invoke(PartitionId(p), &Ask)).unwrap();
        *ran_on.entry(here).or_default() += 1;
    }
    for (addr, owned) in owners {
        assert_eq!(ran_on.get(&addr.to_string()), Some(&owned), "{ran_on:?}");
    }

    // A raw request to b's shard 0 for a partition a owns: WrongTarget.
    let mut s = TcpStream::connect(("127.0.0.1", pb)).unwrap();
    let mut out = rkyv::util::AlignedVec::<16>::new();
    let hello = Control::Hello {
        cluster: config(pa, &[]).cluster_name,
        secret: String::new(),
        role: Role::Client,
        id: 7,
    };
    let hello = corecast_engine::payload::encode(&hello).unwrap();
    frame::encode(&mut out, &Header::new(FrameKind::Control), &hello, 1 << 20).unwrap();
    let ask = corecast_engine::payload::encode(&Ask).unwrap();
    let owned_by_a = |p: &u32| {
        block(a.invoker().invoke(PartitionId(*p), &Ask)).unwrap() == format!("127.0.0.1:{pa}")
    };
    let p = (0..271u32).step_by(2).find(owned_by_a).unwrap();
    let req = Header {
        partition: p,
        correlation: 42,
        service: 901,
        op: 1,
        ..Header::new(FrameKind::Request)
    };
    frame::encode(&mut out, &req, &ask, 1 << 20).unwrap();
    s.write_all(&out).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut rb = ReadBuf::new(1 << 20);
    let mut frames = Vec::new();
    while frames.len() < 2 {
        let n = s.read(rb.spare()).unwrap();
        assert!(n > 0, "the member answered");
        rb.filled(n);
        while let Some((h, payload)) = rb.next_frame().unwrap() {
            frames.push((h, payload.to_vec()));
        }
    }
    let (h, payload) = &frames[1];
    assert_eq!((h.kind, h.correlation), (FrameKind::Response, 42));
    assert_eq!(h.status, Status::Error as u16);
    let mut aligned = rkyv::util::AlignedVec::<16>::new();
    aligned.extend_from_slice(payload);
    let e = corecast_engine::payload::decode::<WireError>(&aligned)
        .unwrap()
        .to_op_error();
    assert!(
        matches!(e, OpError::WrongTarget { partition, .. } if partition == PartitionId(p)),
        "{e}"
    );

    block(b.shutdown());
    block(a.shutdown());
}

#[test]
fn an_unreachable_owner_ends_in_a_timeout_naming_partition_and_target() {
    let pa = support::free_base();
    let a = block(start_member(
        Member::builder(config(pa, &[])).service::<Where>(),
    ))
    .unwrap();
    let members = [format!("127.0.0.1:{pa}")];
    // Seeded with the member only for its cluster name (a client joins no cluster).
    let client_config = config(support::free_base(), &members);
    let client = block(start_client(
        Member::builder(client_config).service::<Where>(),
        &members,
        Duration::from_secs(5),
    ))
    .unwrap();
    assert_eq!(
        block(client.invoker().invoke(PartitionId(3), &Ask)).unwrap(),
        members[0]
    );
    // The owner goes away without a goodbye: the client's calls time out, naming what failed.
    drop(a);
    // Once the client has seen the connections close, calls retry until the timeout.
    std::thread::sleep(Duration::from_millis(300));
    let started = Instant::now();
    let err = block(client.invoker().invoke(PartitionId(4), &Ask)).unwrap_err();
    let text = err.to_string();
    assert!(text.contains("partition 4"), "{text}");
    assert!(
        text.contains(&format!("127.0.0.1:{pa}")),
        "names the target: {text}"
    );
    assert!(text.contains("600 ms"), "{text}");
    assert!(started.elapsed() < Duration::from_secs(3));
    block(client.shutdown());
}
