//! Two networked members in one process: membership events reach the embedded listeners and
//! every shard's services (the membership-aware SPI), and a member that shuts down leaves at once.
#![allow(clippy::unwrap_used)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use corecast_engine::prelude::*;
use corecast_engine::spi::MembershipEvent;
use corecast_engine::{Config, Member};
use corecast_net::{start_member, Network};

static ADDED: AtomicUsize = AtomicUsize::new(0);
static REMOVED: AtomicUsize = AtomicUsize::new(0);

/// A service that only counts the membership events it is told about.
struct Watcher;

impl Service for Watcher {
    const NAME: &'static str = "watcher";
    const ID: ServiceId = ServiceId(900);
    type Container = ();
    type ReplicaData = ();

    fn init(_: &ServiceContext, _: &Properties) -> Result<Self, ServiceError> {
        Ok(Watcher)
    }

    fn operations(_: &mut Operations<Self>) {}

    fn destroy_object(&mut self, _: &mut (), _: &str) {}

    fn replica_data(_: &(), _: &ReplicationEvent) -> Option<()> {
        None
    }

    fn apply_replica_data(_: &mut (), _: &Archived<()>) {}

    fn membership_changed(&mut self, event: &MembershipEvent) {
        match event {
            MembershipEvent::Added(_) => ADDED.fetch_add(1, Ordering::SeqCst),
            MembershipEvent::Removed(_) => REMOVED.fetch_add(1, Ordering::SeqCst),
            MembershipEvent::ClientLeft { .. } => 0,
        };
    }
}

mod support;

fn config(port: u16, seeds: &[String]) -> Config {
    let mut c = support::config(port, seeds);
    c.network.member_timeout_millis = 5_000;
    c
}

fn start(config: Config) -> Member {
    futures_lite::future::block_on(start_member(Member::builder(config).service::<Watcher>()))
        .unwrap()
}

#[test]
fn listeners_and_services_hear_joins_and_leaves() {
    let a_port = support::free_base();
    let a = start(config(a_port, &[]));
    let events = a.extension::<Network>().unwrap().subscribe();

    let b_port = support::free_base();
    let b = start(config(b_port, &[format!("127.0.0.1:{a_port}")]));
    let b_addr = std::net::SocketAddr::from(([127, 0, 0, 1], b_port));

    let added = events.recv_timeout(Duration::from_secs(5)).unwrap();
    assert!(
        matches!(added, MembershipEvent::Added(ref m) if m.address == b_addr),
        "{added:?}"
    );
    // Each member's two shards heard about the other member.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while ADDED.load(Ordering::SeqCst) < 4 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(ADDED.load(Ordering::SeqCst), 4);
    assert_eq!(a.extension::<Network>().unwrap().status().members.len(), 2);

    // A graceful shutdown leaves at once: well inside the 5 s failure-detector timeout.
    let left = std::time::Instant::now();
    futures_lite::future::block_on(b.shutdown());
    let removed = events.recv_timeout(Duration::from_secs(3)).unwrap();
    assert!(matches!(removed, MembershipEvent::Removed(ref m) if m.address == b_addr));
    assert!(left.elapsed() < Duration::from_secs(3));
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while REMOVED.load(Ordering::SeqCst) < 2 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(REMOVED.load(Ordering::SeqCst), 2, "both of a's shards");
    futures_lite::future::block_on(a.shutdown());
}
