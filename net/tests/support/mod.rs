//! Starting networked members in one process for the net crate's tests.
#![allow(dead_code, clippy::unwrap_used)]

use std::net::TcpListener;

use corecast_engine::Config;

/// A port whose next port is free too (shard i of a 2-shard member listens on port + i).
pub fn free_base() -> u16 {
    loop {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        if port < 65_000 && TcpListener::bind(("127.0.0.1", port + 1)).is_ok() {
            return port;
        }
    }
}

/// A 2-shard member on `port` joining through `seeds`, with fast heartbeats and join. Its
/// cluster name is its first seed's (else its own) address and this process: tests run side by
/// side and a stopped member's port goes to another test's member, which a master probing its
/// old members' addresses for a split brain would otherwise merge with under the default name.
pub fn config(port: u16, seeds: &[String]) -> Config {
    let first = seeds
        .first()
        .cloned()
        .unwrap_or_else(|| format!("127.0.0.1:{port}"));
    let mut c = Config {
        cluster_name: format!("net-test-{}-{first}", std::process::id()),
        shards: Some(2),
        io_memory_kib: 256,
        ..Config::default()
    };
    c.network.bind = ([127, 0, 0, 1], port).into();
    c.network.seeds = seeds.to_vec();
    c.network.heartbeat_interval_millis = 100;
    c.network.member_timeout_millis = 1_000;
    c.network.join_timeout_millis = 300;
    c
}
