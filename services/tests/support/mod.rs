//! Starting members for the services' tests: one place, so every test starts them alike.
//! Member processes (for kill -9 and the CLI) are in [`procs`].
#![allow(dead_code)]

pub mod procs;
pub mod writes;

use corecast_engine::{BlockingMember, Config, Member};
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
    config.network.heartbeat_interval_millis = 100;
    config.network.member_timeout_millis = 1000;
    config.network.join_timeout_millis = 300;
    config
}
