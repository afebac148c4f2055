//! The member's configuration: `corecast.toml`, command-line overrides, validation.
//!
//! Owns: [`Config`] and its sections, [`Properties`] (a service's `[services.properties]`), and
//! [`ConfigError`], whose every variant names the key and the value at fault. Parsing is serde +
//! toml with unknown keys refused; overrides (`--set KEY=VALUE`) are applied to the TOML table
//! before deserializing, so a flag and a file line fail alike.
//!
//! ```toml
//! cluster-name = "dev"
//! partition-count = 271
//! shards = 2
//! [network]
//! bind = "127.0.0.1:5701"
//! [backups]
//! backup-count = 1
//! [[services]]
//! name = "counter"
//! properties = { someproperty = 10 }
//! ```

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Deserialize;

/// The default partition count, as Hazelcast's.
pub const DEFAULT_PARTITION_COUNT: u32 = 271;

/// Why a configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The config file could not be read.
    #[error("cannot read config file {path}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The TOML did not parse or did not fit the schema (unknown key, wrong type).
    #[error("{origin}: {message}")]
    Parse {
        /// The file, or "command line".
        origin: String,
        /// toml's message, which names the key and shows the value.
        message: String,
    },
    /// A value parsed but is out of range.
    #[error("invalid value {value} for `{key}`: {reason}")]
    Invalid {
        /// The key, dotted (`backups.backup-count`).
        key: String,
        /// The value as given.
        value: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A `--set` argument is not `KEY=VALUE`, or its key cannot be set.
    #[error("bad override `{arg}`: {reason}")]
    Override {
        /// The argument as given.
        arg: String,
        /// What is wrong with it.
        reason: String,
    },
}

/// A member's whole configuration. Every field has a default, so an empty file is valid.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct Config {
    /// Members only form a cluster with members of the same name.
    pub cluster_name: String,
    /// Partitions of the key space, fixed for the cluster's life (1..=65535).
    pub partition_count: u32,
    /// Shards (glommio executors) per member; absent means one per available core.
    pub shards: Option<u32>,
    /// Pin shard `i` to CPU `i` (ignored when the shards outnumber the CPUs).
    pub pin_shards: bool,
    /// io_uring registered memory per shard, in KiB (locked memory: see `ulimit -l`).
    pub io_memory_kib: u32,
    /// Capacity of each shard's inbound queue; a full queue makes callers wait.
    pub shard_queue_capacity: u32,
    /// How long an idle shard spins before it parks, in microseconds (0: park at once).
    pub spin_before_park_micros: u64,
    /// How often a busy shard stops running tasks to poll io_uring and pick up wake-ups sent from
    /// other threads, in microseconds. Shard messages and replies do not wait for it (the shard
    /// loop polls its queues every round). Measured: at 250 us glommio 0.9 sometimes parks an
    /// executor that has a runnable task when the machine is oversubscribed (1 hang in 12 runs of
    /// the benchmark beside two busy processes); at 10 ms, none in 40.
    pub preempt_timer_micros: u64,
    /// The longest an idle shard blocks before it runs its other tasks again, in microseconds
    /// (50..=100000): bounds how long a task woken from another thread waits (see `shard.rs`).
    pub wake_tick_micros: u64,
    /// How often services' timed work (a map's expiry) runs on every shard.
    pub service_tick_millis: u64,
    /// Addresses and join.
    pub network: NetworkConfig,
    /// Default replica counts.
    pub backups: BackupConfig,
    /// How partitions move between members.
    pub migration: MigrationConfig,
    /// How a cluster finds another of the same name after a network split, and merges.
    pub split_brain: SplitBrainConfig,
    /// Compiled-in services to enable, disable or give properties to.
    pub services: Vec<ServiceConfig>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            cluster_name: "dev".into(),
            partition_count: DEFAULT_PARTITION_COUNT,
            shards: None,
            pin_shards: false,
            io_memory_kib: 512,
            shard_queue_capacity: 4096,
            spin_before_park_micros: 0,
            preempt_timer_micros: 10_000,
            wake_tick_micros: 1000,
            service_tick_millis: 100,
            network: NetworkConfig::default(),
            backups: BackupConfig::default(),
            migration: MigrationConfig::default(),
            split_brain: SplitBrainConfig::default(),
            services: Vec::new(),
        }
    }
}

/// `[network]`: where the member listens and whom it joins.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct NetworkConfig {
    /// The member's address; shard `i` listens on `port + i`.
    pub bind: SocketAddr,
    /// Members to join through (`host:port`).
    pub seeds: Vec<String>,
    /// A shared secret every member must present to join (none by default).
    pub secret: Option<String>,
    /// A lite member joins and routes but holds no partitions.
    pub lite: bool,
    /// How often a member sends heartbeats to the others.
    pub heartbeat_interval_millis: u64,
    /// A member silent this long is removed from the cluster (the failure detector).
    pub member_timeout_millis: u64,
    /// How long a starting member looks for a master among its seeds before it becomes one.
    pub join_timeout_millis: u64,
    /// How long an operation is retried (owner unreachable, wrong target) before it fails.
    pub invocation_timeout_millis: u64,
    /// The largest frame payload accepted or sent.
    pub max_frame_kib: u32,
    /// TCP send and receive buffer sizes (0 keeps the system's default).
    pub socket_buffer_kib: u32,
    /// Bytes queued for writing on one connection past which the member stops reading that
    /// connection's requests (TCP then holds the peer back) and a caller waits before sending
    /// more on it.
    pub max_queued_kib: u32,
    /// Requests on one inbound connection whose answers may wait for sync backup acks at once;
    /// past it, requests are refused as overloaded (a caller backs off and retries until its
    /// invocation timeout).
    pub max_pending_acks: u32,
    /// Serve Prometheus metrics over HTTP on this port of the bind host (0: off).
    pub metrics_port: u16,
    /// Serve the Redis protocol (RESP) on this port of the bind host, shard `i` on
    /// `resp-port + i` (0: off).
    pub resp_port: u16,
    /// The map Redis commands read and write.
    pub resp_map: String,
    /// A connection with nothing to read, on a shard with nothing else to do, waits up to this
    /// long in `epoll` on the shard's sockets before its read goes to glommio's io_uring
    /// (0: always glommio). Shortens a serial round trip; glommio's timers may run this late.
    pub poll_wait_micros: u64,
    /// Before that wait sleeps, it spins (asks epoll without sleeping) for up to this long while
    /// recent answers came that soon: no wake-up to pay, at the cost of a busy core while it
    /// spins (0: never spin). Part of that wait: at most `poll_wait_micros` of it counts.
    pub poll_spin_micros: u64,
    /// A busier connection (more than 4 requests a batch) that finds nothing to read parks in
    /// the shard's `epoll` set, which the shard asks once a scheduling round without sleeping,
    /// while one of its parked sockets was ready within this long; then its reads go to
    /// glommio's io_uring again (0: always glommio). Spares the peers' sends the interrupt an
    /// io_uring completion costs a running shard; a busy core for this long after the load ends.
    pub poll_busy_micros: u64,
}

impl Default for NetworkConfig {
    fn default() -> Self {
        Self {
            bind: SocketAddr::from((Ipv4Addr::LOCALHOST, 5701)),
            seeds: Vec::new(),
            secret: None,
            lite: false,
            heartbeat_interval_millis: 500,
            member_timeout_millis: 2500,
            join_timeout_millis: 2000,
            invocation_timeout_millis: 10_000,
            max_frame_kib: 16 * 1024,
            socket_buffer_kib: 0,
            max_queued_kib: 1024,
            max_pending_acks: 1024,
            metrics_port: 0,
            resp_port: 0,
            resp_map: "default".to_owned(),
            poll_wait_micros: 200,
            poll_spin_micros: 50,
            poll_busy_micros: 100,
        }
    }
}

impl NetworkConfig {
    /// The heartbeat interval.
    pub fn heartbeat_interval(&self) -> Duration {
        Duration::from_millis(self.heartbeat_interval_millis)
    }

    /// The failure detector's timeout.
    pub fn member_timeout(&self) -> Duration {
        Duration::from_millis(self.member_timeout_millis)
    }

    /// How long to look for a master before becoming one.
    pub fn join_timeout(&self) -> Duration {
        Duration::from_millis(self.join_timeout_millis)
    }

    /// How long an operation is retried.
    pub fn invocation_timeout(&self) -> Duration {
        Duration::from_millis(self.invocation_timeout_millis)
    }

    /// The largest frame payload, in bytes.
    pub fn max_frame_bytes(&self) -> usize {
        self.max_frame_kib as usize * 1024
    }

    /// Bytes queued on one connection past which its requests wait, in bytes.
    pub fn max_queued_bytes(&self) -> usize {
        self.max_queued_kib as usize * 1024
    }
}

/// `[backups]`: replicas per partition beyond the owner, and how replicas are kept in step.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct BackupConfig {
    /// Sync backups: the caller waits for their acks (0..=6).
    pub backup_count: u8,
    /// Async backups: fire and forget (0..=6, sum with `backup-count` ≤ 6).
    pub async_backup_count: u8,
    /// A member holding a backup replica may answer reads from it (default off: reads go to
    /// the owner and see every acknowledged write).
    pub read_backup_data: bool,
    /// How long an owner waits for a live sync backup's ack before it answers the caller anyway
    /// (the backup is then repaired by anti-entropy), in milliseconds.
    pub backup_ack_timeout_millis: u64,
    /// How often an owner sends its partitions' versions to their backups, which fetch the
    /// partition when theirs differ (anti-entropy), in milliseconds; 0 turns the check off.
    pub anti_entropy_interval_millis: u64,
    /// An owner drops an async backup (left to anti-entropy) rather than queue more than this
    /// many KiB for a backup member that does not keep up.
    pub async_queue_kib: u32,
    /// Per partition, how many recent writes' caller ids and answers replicas remember, so a
    /// write retried after its owner died is answered, not applied twice.
    pub dedup_window: u32,
    /// Testing only: the share of backup frames an owner drops instead of sending (0..=100),
    /// to exercise anti-entropy.
    pub failpoint_drop_backups_percent: u8,
}

impl Default for BackupConfig {
    fn default() -> Self {
        Self {
            backup_count: 1,
            async_backup_count: 0,
            read_backup_data: false,
            backup_ack_timeout_millis: 5000,
            anti_entropy_interval_millis: 2000,
            async_queue_kib: 4096,
            dedup_window: 1024,
            failpoint_drop_backups_percent: 0,
        }
    }
}

/// `[migration]`: how the master moves partition replicas when members join and leave.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct MigrationConfig {
    /// How many partitions migrate at once across the cluster; 0 (the default) means one per
    /// shard of the data members.
    pub parallel: u32,
    /// The size of one chunk of a partition's stream, in KiB (at most `network.max-frame-kib`
    /// less 1).
    pub chunk_kib: u32,
    /// How many chunks of a stream are unacknowledged at once.
    pub window: u32,
    /// A migration not finished this long after it started is rolled back and planned again, in
    /// milliseconds.
    pub timeout_millis: u64,
    /// How long a member shutting down gracefully waits for its partitions to be handed over
    /// before it stops anyway, in milliseconds.
    pub shutdown_timeout_millis: u64,
    /// The largest partition replica a destination accepts, in MiB.
    pub max_partition_mib: u32,
}

impl Default for MigrationConfig {
    fn default() -> Self {
        Self {
            parallel: 0,
            chunk_kib: 4096,
            window: 4,
            timeout_millis: 60_000,
            shutdown_timeout_millis: 60_000,
            max_partition_mib: 4096,
        }
    }
}

impl MigrationConfig {
    /// The chunk size in bytes.
    pub fn chunk_bytes(&self) -> usize {
        self.chunk_kib as usize * 1024
    }

    /// The migration timeout.
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_millis)
    }

    /// The graceful shutdown's handover timeout.
    pub fn shutdown_timeout(&self) -> Duration {
        Duration::from_millis(self.shutdown_timeout_millis)
    }
}

/// How an entry of a cluster that lost a split brain (the smaller side) merges into the
/// cluster it joins: Hazelcast's merge policies. "Merging" is the smaller side's entry,
/// "existing" the larger side's; an entry only one side has is the merging one when it is on the
/// smaller side (every policy but `discard` keeps it) and stays when it is on the larger.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum MergePolicy {
    /// The merging entry replaces the existing one.
    PassThrough,
    /// The merging entry is taken only where the key has none.
    #[default]
    PutIfAbsent,
    /// The entry read more often wins (the existing one on a tie).
    HigherHits,
    /// The entry written last wins (the existing one on a tie).
    LatestUpdate,
    /// The merging entries are dropped.
    Discard,
}

impl MergePolicy {
    /// The policy's name in the config.
    pub fn name(self) -> &'static str {
        match self {
            MergePolicy::PassThrough => "pass-through",
            MergePolicy::PutIfAbsent => "put-if-absent",
            MergePolicy::HigherHits => "higher-hits",
            MergePolicy::LatestUpdate => "latest-update",
            MergePolicy::Discard => "discard",
        }
    }

    /// The policy as one byte on the wire, and back ([`MergePolicy::from_wire`]).
    pub fn to_wire(self) -> u8 {
        self as u8
    }

    /// The policy a byte names; `None` for a byte no policy has.
    pub fn from_wire(b: u8) -> Option<MergePolicy> {
        [
            MergePolicy::PassThrough,
            MergePolicy::PutIfAbsent,
            MergePolicy::HigherHits,
            MergePolicy::LatestUpdate,
            MergePolicy::Discard,
        ]
        .into_iter()
        .find(|p| p.to_wire() == b)
    }

    /// Whether the merging entry wins over `existing` (`None`: the key has none), given the
    /// hits and last-update times (ms since the epoch) of both.
    pub fn merging_wins(self, merging: EntryStats, existing: Option<EntryStats>) -> bool {
        let Some(existing) = existing else {
            return self != MergePolicy::Discard;
        };
        match self {
            MergePolicy::PassThrough => true,
            MergePolicy::PutIfAbsent | MergePolicy::Discard => false,
            MergePolicy::HigherHits => merging.hits > existing.hits,
            MergePolicy::LatestUpdate => merging.updated_millis > existing.updated_millis,
        }
    }
}

/// What a merge policy compares of an entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct EntryStats {
    /// Reads of the entry on its owner since it was written there.
    pub hits: u32,
    /// When it was last written, in milliseconds since the Unix epoch.
    pub updated_millis: u64,
}

/// `[split-brain]`: finding and merging another cluster of the same name.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct SplitBrainConfig {
    /// How often a master asks the addresses it knows of (seeds, members it once had) that are
    /// not in its member list whether they are in another cluster of the same name, in
    /// milliseconds; 0 turns the search, and so merging, off.
    pub probe_interval_millis: u64,
    /// The merge policy of every service and object that does not set its own
    /// (`[[services]] merge-policy`, `[[services.objects]] merge-policy`).
    pub merge_policy: MergePolicy,
}

impl Default for SplitBrainConfig {
    fn default() -> Self {
        Self {
            probe_interval_millis: 2000,
            merge_policy: MergePolicy::PutIfAbsent,
        }
    }
}

impl SplitBrainConfig {
    /// The probe interval; `None` when merging is off.
    pub fn probe_interval(&self) -> Option<Duration> {
        (self.probe_interval_millis > 0).then(|| Duration::from_millis(self.probe_interval_millis))
    }
}

/// The replica policy an operation runs under: resolved from `[backups]`, a `[[services]]`
/// entry and its `[[services.objects]]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackupPolicy {
    /// Sync backups.
    pub sync: u8,
    /// Async backups.
    pub async_: u8,
    /// Whether backups answer reads.
    pub read_backup_data: bool,
}

/// Replica counts set for one service or one object (a map by name); unset keys inherit.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct ReplicaOverrides {
    /// Sync backups (0..=6).
    pub backup_count: Option<u8>,
    /// Async backups (0..=6, sum with the sync count ≤ 6).
    pub async_backup_count: Option<u8>,
    /// Whether backups answer reads.
    pub read_backup_data: Option<bool>,
}

impl ReplicaOverrides {
    fn apply(&self, policy: BackupPolicy) -> BackupPolicy {
        BackupPolicy {
            sync: self.backup_count.unwrap_or(policy.sync),
            async_: self.async_backup_count.unwrap_or(policy.async_),
            read_backup_data: self.read_backup_data.unwrap_or(policy.read_backup_data),
        }
    }
}

/// `[[services.objects]]`: replica counts for one object of a service (a map, say).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct ObjectConfig {
    /// The object's name.
    pub name: String,
    /// Sync backups (0..=6).
    pub backup_count: Option<u8>,
    /// Async backups (0..=6, sum with the sync count ≤ 6).
    pub async_backup_count: Option<u8>,
    /// Whether backups answer reads.
    pub read_backup_data: Option<bool>,
    /// How the object's entries merge after a split brain; unset inherits the service's.
    pub merge_policy: Option<MergePolicy>,
}

impl ObjectConfig {
    /// The replica counts it sets.
    pub fn replicas(&self) -> ReplicaOverrides {
        ReplicaOverrides {
            backup_count: self.backup_count,
            async_backup_count: self.async_backup_count,
            read_backup_data: self.read_backup_data,
        }
    }
}

/// `[[services]]`: one compiled-in service, the Rust form of Hazelcast's `<service>` element.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct ServiceConfig {
    /// The service's `Service::NAME`.
    pub name: String,
    /// Whether the member starts it (default true).
    pub enabled: bool,
    /// Passed to the service's `init`.
    pub properties: Properties,
    /// The service's sync backups (0..=6); unset inherits `[backups]`.
    pub backup_count: Option<u8>,
    /// The service's async backups; unset inherits `[backups]`.
    pub async_backup_count: Option<u8>,
    /// Whether the service's backups answer reads; unset inherits `[backups]`.
    pub read_backup_data: Option<bool>,
    /// How the service's entries merge after a split brain; unset inherits `[split-brain]`.
    pub merge_policy: Option<MergePolicy>,
    /// Replica counts and merge policies per object of the service.
    pub objects: Vec<ObjectConfig>,
}

impl ServiceConfig {
    /// The replica counts it sets.
    pub fn replicas(&self) -> ReplicaOverrides {
        ReplicaOverrides {
            backup_count: self.backup_count,
            async_backup_count: self.async_backup_count,
            read_backup_data: self.read_backup_data,
        }
    }
}

impl Default for ServiceConfig {
    fn default() -> Self {
        Self {
            name: String::new(),
            enabled: true,
            properties: Properties::default(),
            backup_count: None,
            async_backup_count: None,
            read_backup_data: None,
            merge_policy: None,
            objects: Vec::new(),
        }
    }
}

/// A service's properties: any TOML values by key.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(transparent)]
pub struct Properties(BTreeMap<String, toml::Value>);

impl Properties {
    /// No properties.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Sets `key` to `value`.
    pub fn insert(&mut self, key: impl Into<String>, value: impl Into<toml::Value>) {
        self.0.insert(key.into(), value.into());
    }

    /// The string value of `key`, if it is a string.
    pub fn get_str(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(toml::Value::as_str)
    }

    /// The value of `key` as a `T`; `Ok(None)` when absent.
    ///
    /// Errors: [`ConfigError::Invalid`] naming `properties.<key>` when the value is not a `T`.
    pub fn get<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, ConfigError> {
        let Some(value) = self.0.get(key) else {
            return Ok(None);
        };
        value
            .clone()
            .try_into()
            .map(Some)
            .map_err(|e: toml::de::Error| ConfigError::Invalid {
                key: format!("properties.{key}"),
                value: value.to_string(),
                reason: e.message().to_owned(),
            })
    }

    /// Every property, by key.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &toml::Value)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v))
    }
}

impl Config {
    /// Parses and validates a TOML document.
    ///
    /// Errors: `Parse` for bad TOML, unknown keys and wrong types; `Invalid` for bad values.
    pub fn from_toml_str(text: &str) -> Result<Config, ConfigError> {
        let table = parse_table(text, "config")?;
        Self::from_table(table, "config")
    }

    /// Reads `path` (if given), applies `overrides` (`(dotted key, value)`), parses and validates.
    ///
    /// Errors: `Io` when the file cannot be read, `Override` for a key that cannot be set, and
    /// as [`Config::from_toml_str`].
    pub fn load(
        path: Option<&Path>,
        overrides: &[(String, String)],
    ) -> Result<Config, ConfigError> {
        let (mut table, origin) = match path {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
                    path: path.to_owned(),
                    source,
                })?;
                (
                    parse_table(&text, &path.display().to_string())?,
                    path.display().to_string(),
                )
            }
            None => (toml::Table::new(), "command line".to_owned()),
        };
        for (key, value) in overrides {
            apply_override(&mut table, key, value)?;
        }
        let origin = if overrides.is_empty() {
            origin
        } else {
            format!("{origin} with command-line overrides")
        };
        Self::from_table(table, &origin)
    }

    /// Splits a `KEY=VALUE` argument.
    ///
    /// Errors: [`ConfigError::Override`] without `=` or with an empty key.
    pub fn parse_override(arg: &str) -> Result<(String, String), ConfigError> {
        match arg.split_once('=') {
            Some((key, value)) if !key.trim().is_empty() => {
                Ok((key.trim().to_owned(), value.to_owned()))
            }
            _ => Err(ConfigError::Override {
                arg: arg.to_owned(),
                reason: "expected KEY=VALUE, for example partition-count=271".into(),
            }),
        }
    }

    fn from_table(table: toml::Table, origin: &str) -> Result<Config, ConfigError> {
        // Deserialize from text, not from the table, so errors carry a span: the message then
        // quotes the offending line, which names the key and shows the value.
        let text = toml::to_string(&table).map_err(|e| ConfigError::Parse {
            origin: origin.to_owned(),
            message: e.to_string(),
        })?;
        let config: Config = toml::from_str(&text).map_err(|e| ConfigError::Parse {
            origin: origin.to_owned(),
            message: one_line(&text, &e),
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Checks every value's range.
    ///
    /// Errors: [`ConfigError::Invalid`] naming the first bad key and its value.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid =
            |key: &str, value: &dyn std::fmt::Display, reason: &str| ConfigError::Invalid {
                key: key.into(),
                value: value.to_string(),
                reason: reason.into(),
            };
        if self.cluster_name.trim().is_empty() {
            return Err(invalid("cluster-name", &"\"\"", "must not be empty"));
        }
        if !(1..=65_535).contains(&self.partition_count) {
            return Err(invalid(
                "partition-count",
                &self.partition_count,
                "must be 1..=65535",
            ));
        }
        if let Some(shards) = self.shards.filter(|s| !(1..=256).contains(s)) {
            return Err(invalid(
                "shards",
                &shards,
                "must be 1..=256 (omit it for one per core)",
            ));
        }
        if self.io_memory_kib < 64 {
            return Err(invalid(
                "io-memory-kib",
                &self.io_memory_kib,
                "must be at least 64",
            ));
        }
        if !(10..=1_000_000).contains(&self.preempt_timer_micros) {
            return Err(invalid(
                "preempt-timer-micros",
                &self.preempt_timer_micros,
                "must be 10..=1000000",
            ));
        }
        if !(1..=60_000).contains(&self.service_tick_millis) {
            return Err(invalid(
                "service-tick-millis",
                &self.service_tick_millis,
                "must be 1..=60000",
            ));
        }
        if !(50..=100_000).contains(&self.wake_tick_micros) {
            return Err(invalid(
                "wake-tick-micros",
                &self.wake_tick_micros,
                "must be 50..=100000",
            ));
        }
        let n = &self.network;
        if n.resp_port != 0 && u32::from(n.resp_port) + self.shard_count() - 1 > 65_535 {
            return Err(invalid(
                "network.resp-port",
                &n.resp_port,
                "resp-port + shards - 1 must be at most 65535",
            ));
        }
        if n.resp_map.trim().is_empty() {
            return Err(invalid("network.resp-map", &"\"\"", "must not be empty"));
        }
        if !(10..=60_000).contains(&n.heartbeat_interval_millis) {
            return Err(invalid(
                "network.heartbeat-interval-millis",
                &n.heartbeat_interval_millis,
                "must be 10..=60000",
            ));
        }
        if n.member_timeout_millis < 2 * n.heartbeat_interval_millis {
            return Err(invalid(
                "network.member-timeout-millis",
                &n.member_timeout_millis,
                "must be at least twice network.heartbeat-interval-millis",
            ));
        }
        if !(1..=600_000).contains(&n.join_timeout_millis) {
            return Err(invalid(
                "network.join-timeout-millis",
                &n.join_timeout_millis,
                "must be 1..=600000",
            ));
        }
        if !(1..=3_600_000).contains(&n.invocation_timeout_millis) {
            return Err(invalid(
                "network.invocation-timeout-millis",
                &n.invocation_timeout_millis,
                "must be 1..=3600000",
            ));
        }
        if !(1..=1024 * 1024).contains(&n.max_frame_kib) {
            return Err(invalid(
                "network.max-frame-kib",
                &n.max_frame_kib,
                "must be 1..=1048576",
            ));
        }
        // Below the 64 MiB at which a connection that does not read is closed, with room for
        // what is queued without waiting (events, answers that waited for backup acks).
        if !(1..=32 * 1024).contains(&n.max_queued_kib) {
            return Err(invalid(
                "network.max-queued-kib",
                &n.max_queued_kib,
                "must be 1..=32768",
            ));
        }
        let probe = self.split_brain.probe_interval_millis;
        if probe != 0 && !(100..=3_600_000).contains(&probe) {
            return Err(invalid(
                "split-brain.probe-interval-millis",
                &probe,
                "must be 0 (off) or 100..=3600000",
            ));
        }
        if n.poll_wait_micros > 1000 {
            return Err(invalid(
                "network.poll-wait-micros",
                &n.poll_wait_micros,
                "must be 0..=1000 (glommio's timers may run this late)",
            ));
        }
        if n.poll_spin_micros > 1000 {
            return Err(invalid(
                "network.poll-spin-micros",
                &n.poll_spin_micros,
                "must be 0..=1000 (a busy core for each wait that long)",
            ));
        }
        if n.poll_busy_micros > 1000 {
            return Err(invalid(
                "network.poll-busy-micros",
                &n.poll_busy_micros,
                "must be 0..=1000 (a busy core for that long after each burst)",
            ));
        }
        if !(1..=1_000_000).contains(&n.max_pending_acks) {
            return Err(invalid(
                "network.max-pending-acks",
                &n.max_pending_acks,
                "must be 1..=1000000",
            ));
        }
        if n.bind.port() == 0 {
            return Err(invalid(
                "network.bind",
                &n.bind,
                "needs a port (shard i listens on port + i)",
            ));
        }
        if self.shard_queue_capacity == 0 {
            return Err(invalid("shard-queue-capacity", &0, "must be at least 1"));
        }
        let b = &self.backups;
        check_counts(
            "backups",
            Some(b.backup_count),
            Some(b.async_backup_count),
            b.backup_count,
        )?;
        if b.backup_ack_timeout_millis == 0 {
            return Err(invalid(
                "backups.backup-ack-timeout-millis",
                &0,
                "must be at least 1",
            ));
        }
        if b.failpoint_drop_backups_percent > 100 {
            return Err(invalid(
                "backups.failpoint-drop-backups-percent",
                &b.failpoint_drop_backups_percent,
                "must be 0..=100",
            ));
        }
        let m = &self.migration;
        if m.chunk_kib == 0 || m.chunk_kib >= n.max_frame_kib {
            return Err(invalid(
                "migration.chunk-kib",
                &m.chunk_kib,
                &format!(
                    "must be 1..{} (below network.max-frame-kib)",
                    n.max_frame_kib
                ),
            ));
        }
        for (key, value) in [
            ("migration.window", u64::from(m.window)),
            ("migration.timeout-millis", m.timeout_millis),
            (
                "migration.shutdown-timeout-millis",
                m.shutdown_timeout_millis,
            ),
            (
                "migration.max-partition-mib",
                u64::from(m.max_partition_mib),
            ),
        ] {
            if value == 0 {
                return Err(invalid(key, &0, "must be at least 1"));
            }
        }
        for (i, service) in self.services.iter().enumerate() {
            let base = service.replicas().apply(self.default_policy());
            let at = format!("services[{i}]");
            check_counts(
                &at,
                service.replicas().backup_count,
                service.replicas().async_backup_count,
                base.sync,
            )?;
            check_counts(&at, Some(base.sync), Some(base.async_), base.sync)?;
            for (j, object) in service.objects.iter().enumerate() {
                let at = format!("services[{i}].objects[{j}]");
                if object.name.trim().is_empty() {
                    return Err(invalid(&format!("{at}.name"), &"\"\"", "must not be empty"));
                }
                let p = object.replicas().apply(base);
                check_counts(
                    &at,
                    object.replicas().backup_count,
                    object.replicas().async_backup_count,
                    p.sync,
                )?;
                check_counts(&at, Some(p.sync), Some(p.async_), p.sync)?;
            }
        }
        for (i, service) in self.services.iter().enumerate() {
            if service.name.trim().is_empty() {
                return Err(invalid(
                    &format!("services[{i}].name"),
                    &"\"\"",
                    "must not be empty",
                ));
            }
            if self.services[..i].iter().any(|s| s.name == service.name) {
                return Err(invalid(
                    &format!("services[{i}].name"),
                    &service.name,
                    "is declared twice",
                ));
            }
        }
        Ok(())
    }

    /// The number of shards to run: `shards`, or one per available core.
    pub fn shard_count(&self) -> u32 {
        self.shards
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get() as u32))
    }

    /// How long an idle shard spins before parking; `None` to park at once.
    pub fn spin_before_park(&self) -> Option<Duration> {
        (self.spin_before_park_micros > 0)
            .then(|| Duration::from_micros(self.spin_before_park_micros))
    }

    /// How often a busy shard polls for I/O and wake-ups from other threads.
    pub fn preempt_timer(&self) -> Duration {
        Duration::from_micros(self.preempt_timer_micros)
    }

    /// How often services' timed work runs.
    pub fn service_tick(&self) -> Duration {
        Duration::from_millis(self.service_tick_millis)
    }

    /// How often a shard's ticker rings sleeping shards.
    pub fn wake_tick(&self) -> Duration {
        Duration::from_micros(self.wake_tick_micros)
    }

    /// io_uring registered memory per shard, in bytes.
    pub fn io_memory_bytes(&self) -> usize {
        self.io_memory_kib as usize * 1024
    }

    /// The `[[services]]` entry for `name`, if any.
    pub fn service(&self, name: &str) -> Option<&ServiceConfig> {
        self.services.iter().find(|s| s.name == name)
    }

    /// The replica policy of `[backups]` alone.
    pub fn default_policy(&self) -> BackupPolicy {
        BackupPolicy {
            sync: self.backups.backup_count,
            async_: self.backups.async_backup_count,
            read_backup_data: self.backups.read_backup_data,
        }
    }

    /// The replica policy of service `service`, or of its object `object` when given.
    pub fn policy(&self, service: &str, object: Option<&str>) -> BackupPolicy {
        let base = self.default_policy();
        let Some(s) = self.service(service) else {
            return base;
        };
        let base = s.replicas().apply(base);
        object
            .and_then(|name| s.objects.iter().find(|o| o.name == name))
            .map_or(base, |o| o.replicas().apply(base))
    }

    /// The merge policy of `service`, or of its object `object`: the object's own, else the
    /// service's, else `[split-brain] merge-policy`.
    pub fn merge_policy(&self, service: &str, object: Option<&str>) -> MergePolicy {
        let base = self.split_brain.merge_policy;
        let Some(s) = self.service(service) else {
            return base;
        };
        object
            .and_then(|name| s.objects.iter().find(|o| o.name == name))
            .and_then(|o| o.merge_policy)
            .or(s.merge_policy)
            .unwrap_or(base)
    }

    /// Replica slots the partition table keeps per partition: the owner plus the most backups
    /// (sync and async) any service or object asks for.
    pub fn replica_slots(&self) -> usize {
        let total = |p: BackupPolicy| usize::from(p.sync) + usize::from(p.async_);
        let mut most = total(self.default_policy());
        for s in &self.services {
            let base = s.replicas().apply(self.default_policy());
            most = most.max(total(base));
            for o in &s.objects {
                most = most.max(total(o.replicas().apply(base)));
            }
        }
        (1 + most).min(crate::table::MAX_REPLICAS)
    }

    /// How long an owner waits for a sync backup's ack.
    pub fn backup_ack_timeout(&self) -> Duration {
        Duration::from_millis(self.backups.backup_ack_timeout_millis)
    }
}

/// Checks a pair of replica counts set at `at` (each 0..=6, sum ≤ 6); `sync` is the sync count
/// in effect, for the sum.
fn check_counts(
    at: &str,
    backup_count: Option<u8>,
    async_backup_count: Option<u8>,
    sync: u8,
) -> Result<(), ConfigError> {
    let invalid = |key: &str, value: u8, reason: String| ConfigError::Invalid {
        key: format!("{at}.{key}"),
        value: value.to_string(),
        reason,
    };
    if let Some(n) = backup_count.filter(|n| *n > 6) {
        return Err(invalid("backup-count", n, "must be 0..=6".into()));
    }
    if let Some(n) = async_backup_count {
        if n > 6 {
            return Err(invalid("async-backup-count", n, "must be 0..=6".into()));
        }
        if u16::from(sync) + u16::from(n) > 6 {
            let reason = format!("backup-count {sync} + async-backup-count must be at most 6");
            return Err(invalid("async-backup-count", n, reason));
        }
    }
    Ok(())
}

fn parse_table(text: &str, origin: &str) -> Result<toml::Table, ConfigError> {
    text.parse::<toml::Table>().map_err(|e| ConfigError::Parse {
        origin: origin.to_owned(),
        message: e.to_string().trim().to_owned(),
    })
}

/// toml's message prefixed with the line it points at (`partition-count = "many": invalid type…`).
fn one_line(text: &str, e: &toml::de::Error) -> String {
    let message = e.message().trim();
    let Some(span) = e.span() else {
        return message.to_owned();
    };
    let start = text[..span.start.min(text.len())]
        .rfind('\n')
        .map_or(0, |i| i + 1);
    let end = text[start..].find('\n').map_or(text.len(), |i| start + i);
    format!("`{}`: {message}", text[start..end].trim())
}

/// Sets dotted `key` in `table` to `raw`, read as a TOML value when it is one, else a string.
fn apply_override(table: &mut toml::Table, key: &str, raw: &str) -> Result<(), ConfigError> {
    let bad = |reason: &str| ConfigError::Override {
        arg: format!("{key}={raw}"),
        reason: reason.to_owned(),
    };
    let value = format!("v = {raw}")
        .parse::<toml::Table>()
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(raw.to_owned()));
    let mut parts: Vec<&str> = key.split('.').map(str::trim).collect();
    let last = parts
        .pop()
        .filter(|p| !p.is_empty())
        .ok_or_else(|| bad("empty key"))?;
    let mut current = table;
    for part in parts {
        let entry = current
            .entry(part.to_owned())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        current = entry
            .as_table_mut()
            .ok_or_else(|| bad(&format!("`{part}` is not a table")))?;
    }
    current.insert(last.to_owned(), value);
    Ok(())
}
