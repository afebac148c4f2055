//! Starting members for the services' tests: one place, so every test starts them alike.
//! Member processes (for kill -9 and the CLI) are in [`procs`].
#![allow(dead_code)]

pub mod procs;
pub mod writes;

use std::time::Duration;

use corecast_engine::{BlockingMember, Config, Member};
use corecast_net::Network;
use corecast_services::builtin::with_builtin_services;

/// A config for an embedded test member: `shards` shards, the default 271 partitions.
pub fn config(shards: u32) -> Config {
    Config {
        shards: Some(shards),
        ..Config::default()
    }
}

/// A started member with every built-in service; panics with the start error if it fails.
pub fn member(shards: u32) -> BlockingMember {
    match with_builtin_services(Member::builder(config(shards))).start_blocking() {
        Ok(member) => member,
        Err(e) => panic!("the test member did not start: {e}"),
    }
}

/// The config of an in-process networked test member: `shards` shards on free loopback ports,
/// joining `seeds`, with fast heartbeats and failure detection.
pub fn networked_config(seeds: &[&BlockingMember], shards: u32) -> Config {
    let port = procs::free_ports(shards as u16);
    let mut config = Config {
        shards: Some(shards),
        io_memory_kib: 256,
        ..Config::default()
    };
    config.network.bind = ([127, 0, 0, 1], port).into();
    config.network.seeds = seeds
        .iter()
        .map(|m| m.member().invoker().member().address.to_string())
        .collect();
    config.cluster_name = match seeds.first() {
        Some(seed) => seed.member().invoker().member().cluster_name.clone(),
        None => procs::cluster_name(None, port),
    };
    procs::register(&config.network.bind.to_string(), &config.cluster_name);
    config.network.heartbeat_interval_millis = 100;
    config.network.member_timeout_millis = 1000;
    config.network.join_timeout_millis = 300;
    config
}

/// The network extension of an in-process member.
pub fn network(m: &BlockingMember) -> &Network {
    match m.member().extension::<Network>() {
        Some(n) => n,
        None => panic!("the member has no network"),
    }
}

/// Waits until every live member agrees on the list and table and nothing migrates.
pub fn quiet(live: &[&BlockingMember]) {
    procs::wait_for("a quiet cluster", Duration::from_secs(60), || {
        let statuses: Vec<_> = live.iter().map(|m| network(m).status()).collect();
        statuses.iter().all(|s| {
            s.members.len() == live.len()
                && s.table_version == statuses[0].table_version
                && s.migrations.planned + s.migrations.in_flight == 0
        })
    });
}

/// A smart client with every built-in service, connected through the member at `addr`.
pub fn client_of(addr: &str) -> BlockingMember {
    let mut config = Config {
        shards: Some(1),
        io_memory_kib: 256,
        ..Config::default()
    };
    if let Some(name) = procs::cluster_of(addr) {
        config.cluster_name = name;
    }
    let builder = with_builtin_services(Member::builder(config));
    let started = futures_lite::future::block_on(corecast_net::start_client(
        builder,
        &[addr.to_owned()],
        Duration::from_secs(10),
    ));
    match started {
        Ok(client) => BlockingMember::from(client),
        Err(e) => panic!("the test client did not connect: {e}"),
    }
}
