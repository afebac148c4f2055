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
