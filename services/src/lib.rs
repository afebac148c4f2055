//! corecast-services: the services compiled into the `corecast` binary, and its command line.
//!
//! Module map:
//! - [`counter`]: the Counter of Hazelcast's SPI tutorial (inc with backup and migration).
//! - [`map`]: the distributed Map: TTL, eviction, entry listeners, typed access.
//! - [`topic`]: publish/subscribe topics, ordered per publisher.
//! - [`resp`]: the Redis protocol (RESP2/RESP3) codec and glob patterns, for the Redis front door.
//! - [`lock`]: reentrant locks with leases and fencing tokens, released on owner death.
//! - [`atomic`]: AtomicLong (get, set, add, compare-and-set).
//! - [`chaos`]: recorded client histories and the linearizability checker that judges them.
//! - [`kv`]: a minimal key-value service, for the benchmark until the full Map lands.
//! - [`config_args`]: the command-line flags every binary shares to load a config.
//! - [`logging`]: the binaries' tracing subscriber.
//! - [`builtin`]: registering every built-in service on a member builder.

pub mod atomic;
pub mod chaos;
pub mod config_args;
pub mod counter;
mod decimal;
pub mod kv;
pub mod lock;
pub mod logging;
pub mod map;
pub mod resp;
pub mod topic;

/// A container of named `Copy` values (atomics, locks) as replica data: `None` when empty.
pub(crate) fn named_values<V: Copy>(
    container: &ahash::AHashMap<String, V>,
) -> Option<Vec<(String, V)>> {
    let data: Vec<_> = container.iter().map(|(k, v)| (k.clone(), *v)).collect();
    (!data.is_empty()).then_some(data)
}

/// Registering the built-in services.
pub mod builtin {
    use corecast_engine::MemberBuilder;

    /// `builder` with every built-in service compiled in (each may be disabled by config).
    pub fn with_builtin_services(builder: MemberBuilder) -> MemberBuilder {
        builder
            .service::<crate::counter::CounterService>()
            .service::<crate::kv::KvService>()
            .service::<crate::map::MapService>()
            .service::<crate::topic::TopicService>()
            .service::<crate::lock::LockService>()
            .service::<crate::atomic::AtomicService>()
    }
}
