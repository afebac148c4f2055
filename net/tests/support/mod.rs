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

/// A 2-shard member on `port` joining through `seeds`, with fast heartbeats and join.
pub fn config(port: u16, seeds: &[String]) -> Config {
    let mut c = Config {
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
