//! The network runtime of a member or a smart client, installed as the engine's [`Extension`].
//!
//! Owns: [`Network`] (the extension: settings, and the control-plane state the embedded API
//! reads: status, membership listeners), and per shard a `ShardNet`: its copy of the member list
//! and partition table, its outbound connections to remote shards, its listener on
//! `port + shard`, and the router that runs a partition's operations here or forwards them to the
//! owner. Shard 0 also runs the control plane: the [`Membership`] machine, fed by control frames
//! and a timer, whose changes it fans out to the other shards as messages.
//!
//! Invariant: everything here except [`Network`]'s `Mutex`-guarded control-plane state lives on
//! one shard's thread; shards exchange views by message, never by sharing.

use std::borrow::Cow;
use std::cell::RefCell;
use std::net::{SocketAddr, ToSocketAddrs};
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ahash::AHashMap;
use corecast_engine::config::MigrationConfig;
use corecast_engine::events::{BatchClock, BATCH_CLOCK_OPS};
use corecast_engine::extension::{self, Acks, Extension, RemoteAnswer, Router, ShardContext};
use corecast_engine::invocation::Invoker;
use corecast_engine::migration::MigrationProgress;
use corecast_engine::partition::{PartitionCount, PartitionId, ShardCount, ShardId};
use corecast_engine::payload::{self, Bytes};
use corecast_engine::replica::{
    BackupApplied, Call, CallId, PartitionVersions, Replication, SyncRequest,
};
use corecast_engine::spi::{MemberInfo, MembershipEvent, OpError, OpId, ReplicaIndex, ServiceId};
use corecast_engine::table::{MemberId, PartitionTable};
use corecast_engine::Config;
use glommio::net::TcpStream;

use crate::conn::{self, ConnError, Notify, Outbound, Writer};
use crate::frame::{self, FrameKind, Header, ReadBuf};
use crate::membership::{table_from_wire, Action, Membership, Timing};
use crate::replica::{decode_backup, encode_backup, BACKUP, MIGRATION, VERSIONS};
use crate::wire::{Control, MemberEntry, Role, Status, WireError};

mod events;
mod many;
mod merge;
pub use merge::MergeStats;

pub use many::{batch_stats, BatchStats};

/// The network numbers of the shard this thread runs (zeros off a shard), for metrics.
pub fn shard_net_stats() -> crate::metrics::ShardNetStats {
    SHARD.with(|s| {
        let Some(sn) = s.borrow().clone() else {
            return crate::metrics::ShardNetStats::default();
        };
        let (mut owned, mut backups) = (0, 0);
        for p in sn.shards.partitions_of(sn.shard, sn.partitions) {
            match sn.replica_of(p) {
                Some(r) if r.is_backup() => backups += 1,
                Some(_) => owned += 1,
                None => {}
            }
        }
        let (outbound, queued_bytes) = {
            let conns = sn.conns.borrow();
            let open: Vec<_> = conns.values().filter(|c| !c.is_closed()).collect();
            (
                open.len() as u32,
                open.iter().map(|c| c.queued() as u64).sum(),
            )
        };
        let (inbound, inbound_queued_bytes) = {
            let inbound = sn.inbound.borrow();
            let open: Vec<_> = inbound
                .iter()
                .filter_map(|w| w.upgrade().filter(|w| !w.is_closed()))
                .collect();
            (
                open.len() as u32,
                open.iter().map(|w| w.queued() as u64).sum(),
            )
        };
        let backup_replay_queue = sn.syncing.borrow().values().map(|q| q.len() as u32).sum();
        crate::metrics::ShardNetStats {
            owned,
            backups,
            inbound,
            outbound,
            queued_bytes,
            backup_replay_queue,
            rejected: sn.rejected.get(),
            inbound_queued_bytes,
            paused: sn.paused.get(),
            overloaded: sn.overloaded.get(),
            short_reads: crate::readiness::short_reads(),
            spun_reads: crate::readiness::spun_reads(),
            pumped_reads: crate::readiness::pumped_reads(),
        }
    })
}
mod migrate;

/// Why the network could not start.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NetError {
    /// A seed or member address does not resolve.
    #[error("`{key}` = `{value}`: {reason}")]
    Address {
        /// The config key or flag.
        key: &'static str,
        /// The value.
        value: String,
        /// Why.
        reason: String,
    },
    /// A shard could not listen on its port.
    #[error("{shard} cannot listen on {addr}: {reason}")]
    Listen {
        /// The shard.
        shard: ShardId,
        /// Its address.
        addr: SocketAddr,
        /// The system's reason.
        reason: String,
    },
    /// No master answered and none could be formed in time.
    #[error("not joined after {0:?}")]
    JoinTimeout(Duration),
    /// A member refused this one (cluster name or secret mismatch).
    #[error("{addr} refused to let this member in: {reason}")]
    Refused {
        /// The member that refused.
        addr: SocketAddr,
        /// Its reason.
        reason: String,
    },
}

/// A member as cluster status reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberStatus {
    /// The member.
    pub entry: MemberEntry,
    /// Partitions it owns.
    pub owned: usize,
    /// Backup replicas it holds.
    pub backups: usize,
    /// Whether it is the master.
    pub master: bool,
}

/// A snapshot of the cluster as this member or client sees it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClusterStatus {
    /// Members, oldest (the master) first.
    pub members: Vec<MemberStatus>,
    /// Member list version.
    pub list_version: u64,
    /// Partition table version.
    pub table_version: u64,
    /// Partitions without an owner.
    pub unowned: usize,
    /// The rebalance: partitions planned to move, migrations in flight, done and failed.
    pub migrations: MigrationProgress,
}

/// A member's headline numbers (`cluster status`): summed over its shards since it started.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MemberStats {
    /// Operations it ran as owner that succeeded.
    pub ops: u64,
    /// Operations it ran as owner that failed.
    pub errors: u64,
    /// Inbound connections open.
    pub connections: u32,
    /// Inbound connections closed for a protocol violation.
    pub rejected: u64,
}

/// The partition streams this member sent as a migration source.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StreamStats {
    /// Streams finished (one per destination of each migration).
    pub streams: u64,
    /// Snapshot bytes sent.
    pub bytes: u64,
    /// The streams' durations added up, in microseconds.
    pub micros: u64,
}

impl StreamStats {
    /// The mean throughput of one stream, in MB/s.
    pub fn mb_per_sec(&self) -> f64 {
        self.bytes as f64 / (self.micros.max(1) as f64 / 1e6) / 1e6
    }
}

#[derive(Default)]
struct Shared {
    streams: StreamStats,
    status: ClusterStatus,
    table: Option<PartitionTable>,
    joined: bool,
    refused: Option<NetError>,
    /// This member handed its partitions over and left the cluster.
    left: bool,
    listeners: Vec<flume::Sender<MembershipEvent>>,
    joined_waiters: Vec<flume::Sender<()>>,
    /// The metrics endpoint, stopped with the member.
    metrics: Option<crate::metrics::MetricsServer>,
    /// Clients: the members' headline numbers, by member id, as last answered.
    member_stats: AHashMap<u64, MemberStats>,
    start_errors: Vec<NetError>,
    /// Split-brain merges this member made.
    merge: MergeStats,
}

/// The network layer of one member or client: an [`Extension`] for the engine.
pub struct Network {
    role: Role,
    id: MemberId,
    cluster: String,
    secret: String,
    bind: SocketAddr,
    seeds: Vec<SocketAddr>,
    lite: bool,
    timing: Timing,
    invocation_timeout: Duration,
    max_payload: usize,
    socket_buffer: usize,
    /// Bytes queued on a connection past which its reader stops and its callers wait.
    max_queued: usize,
    /// Requests per inbound connection that may wait for sync backup acks at once.
    max_pending_acks: u32,
    /// `network.poll-wait-micros`.
    poll_wait_micros: u64,
    /// `network.poll-spin-micros`.
    poll_spin_micros: u64,
    /// `network.poll-busy-micros`.
    poll_busy_micros: u64,
    /// Replica slots per partition in the tables this member publishes as master.
    replica_slots: usize,
    /// How long an owner waits for sync backups' acks.
    ack_timeout: Duration,
    /// How often owners send their versions to backups; `None`: never.
    anti_entropy: Option<Duration>,
    /// Bytes queued to a backup member past which async backups are dropped.
    async_queue: usize,
    /// Testing: the share (0..=100) of backup frames dropped instead of sent.
    drop_backups_percent: u8,
    /// `[migration]`: parallelism, chunks, timeouts.
    migration: MigrationConfig,
    /// How often a master looks for another cluster of its name (`None`: never).
    split_brain_probe: Option<Duration>,
    /// Control-plane state read by the embedded API (never on the operation path).
    shared: Mutex<Shared>,
}

fn resolve(key: &'static str, value: &str) -> Result<SocketAddr, NetError> {
    value
        .to_socket_addrs()
        .map_err(|e| NetError::Address {
            key,
            value: value.to_owned(),
            reason: e.to_string(),
        })?
        .next()
        .ok_or_else(|| NetError::Address {
            key,
            value: value.to_owned(),
            reason: "resolves to no address".into(),
        })
}

fn random_id() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.write_u32(std::process::id());
    h.finish().max(1)
}

impl Network {
    fn new(config: &Config, role: Role, seeds: Vec<SocketAddr>) -> Arc<Network> {
        let n = &config.network;
        Arc::new(Network {
            role,
            id: MemberId(random_id()),
            cluster: config.cluster_name.clone(),
            secret: n.secret.clone().unwrap_or_default(),
            bind: n.bind,
            seeds,
            lite: n.lite,
            timing: Timing {
                heartbeat: n.heartbeat_interval(),
                member_timeout: n.member_timeout(),
                join_timeout: n.join_timeout(),
            },
            invocation_timeout: n.invocation_timeout(),
            max_payload: n.max_frame_bytes(),
            socket_buffer: n.socket_buffer_kib as usize * 1024,
            max_queued: n.max_queued_bytes(),
            max_pending_acks: n.max_pending_acks,
            poll_wait_micros: n.poll_wait_micros,
            poll_spin_micros: n.poll_spin_micros,
            poll_busy_micros: n.poll_busy_micros,
            replica_slots: config.replica_slots(),
            ack_timeout: config.backup_ack_timeout(),
            anti_entropy: (config.backups.anti_entropy_interval_millis > 0)
                .then(|| Duration::from_millis(config.backups.anti_entropy_interval_millis)),
            async_queue: config.backups.async_queue_kib as usize * 1024,
            drop_backups_percent: config.backups.failpoint_drop_backups_percent,
            migration: config.migration.clone(),
            split_brain_probe: config.split_brain.probe_interval(),
            shared: Mutex::new(Shared::default()),
        })
    }

    /// The network of a member configured by `config` (`[network]`: bind, seeds, secret, lite,
    /// timing).
    ///
    /// Errors: a seed that does not resolve.
    pub fn member(config: &Config) -> Result<Arc<Network>, NetError> {
        let seeds = config
            .network
            .seeds
            .iter()
            .map(|s| resolve("network.seeds", s))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self::new(config, Role::Member, seeds))
    }

    /// The network of a smart client that connects to any of `members`.
    ///
    /// Errors: an address that does not resolve, or none given.
    pub fn client(config: &Config, members: &[String]) -> Result<Arc<Network>, NetError> {
        if members.is_empty() {
            return Err(NetError::Address {
                key: "--members",
                value: String::new(),
                reason: "give at least one member address".into(),
            });
        }
        let seeds = members
            .iter()
            .map(|s| resolve("--members", s))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self::new(config, Role::Client, seeds))
    }

    /// Serves Prometheus metrics of this member at `addr` until it stops.
    ///
    /// Errors: the port cannot be bound.
    pub fn serve_metrics(
        self: &Arc<Self>,
        addr: SocketAddr,
        invoker: Invoker,
    ) -> std::io::Result<SocketAddr> {
        let server = crate::metrics::MetricsServer::start(addr, invoker, self.clone())?;
        let bound = server.addr();
        self.lock().metrics = Some(server);
        Ok(bound)
    }

    /// A client's view of every member's headline numbers: asks each member and waits up to
    /// `timeout` for the answers; the members that answered, by id.
    pub async fn member_stats(
        &self,
        invoker: &Invoker,
        timeout: Duration,
    ) -> AHashMap<u64, MemberStats> {
        let members: Vec<(u64, SocketAddr)> = self
            .status()
            .members
            .iter()
            .map(|m| (m.entry.id.0, m.entry.addr))
            .collect();
        self.lock().member_stats.clear();
        let ask = members.iter().map(|m| m.1).collect::<Vec<_>>();
        let sent = invoker.run_on(ShardId(0), move || async move {
            let sn = SHARD.with(|s| s.borrow().clone());
            if let Some(sn) = sn {
                for addr in ask {
                    sn.send_control(addr, Control::StatsRequest);
                }
            }
        });
        if sent.await.is_err() {
            return AHashMap::new();
        }
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.lock().member_stats.len() >= members.len() {
                break;
            }
            sleep_anywhere(Duration::from_millis(10)).await;
        }
        self.lock().member_stats.clone()
    }

    /// This member's (or client's) id.
    pub fn id(&self) -> MemberId {
        self.id
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Shared> {
        self.shared
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The cluster as last seen.
    pub fn status(&self) -> ClusterStatus {
        self.lock().status.clone()
    }

    /// The migration streams this member sent so far.
    pub fn stream_stats(&self) -> StreamStats {
        self.lock().streams
    }

    /// The split-brain merges this member made into another cluster, and their operations.
    pub fn merge_stats(&self) -> MergeStats {
        self.lock().merge
    }

    fn stream_sent(&self, bytes: u64, took: Duration) {
        let mut shared = self.lock();
        shared.streams.streams += 1;
        shared.streams.bytes += bytes;
        shared.streams.micros += took.as_micros() as u64;
    }

    /// The partition table as last seen (`None` before the first).
    pub fn table(&self) -> Option<PartitionTable> {
        self.lock().table.clone()
    }

    /// Membership events from now on (added, removed), in order.
    pub fn subscribe(&self) -> flume::Receiver<MembershipEvent> {
        let (tx, rx) = flume::unbounded();
        self.lock().listeners.push(tx);
        rx
    }

    /// Errors the shards hit while starting (a port in use).
    pub fn start_errors(&self) -> Vec<NetError> {
        self.lock().start_errors.clone()
    }

    /// Waits until this member joined a cluster (or this client has the member list and a
    /// table).
    ///
    /// Errors: `JoinTimeout`.
    pub async fn wait_joined(&self, timeout: Duration) -> Result<(), NetError> {
        let rx = {
            let mut shared = self.lock();
            if shared.joined {
                return Ok(());
            }
            if let Some(refused) = shared.refused.clone() {
                return Err(refused);
            }
            let (tx, rx) = flume::bounded(1);
            shared.joined_waiters.push(tx);
            rx
        };
        let deadline = futures_lite::future::or(
            async {
                let _ = rx.recv_async().await;
                true
            },
            async {
                sleep_anywhere(timeout).await;
                false
            },
        );
        let woken = deadline.await;
        if let Some(refused) = self.lock().refused.clone() {
            return Err(refused);
        }
        if woken {
            Ok(())
        } else {
            Err(NetError::JoinTimeout(timeout))
        }
    }

    /// A peer refused this member before it joined: starting fails with `error`.
    fn set_refused(&self, error: NetError) {
        let mut shared = self.lock();
        if shared.joined {
            return;
        }
        shared.refused = Some(error);
        for w in shared.joined_waiters.drain(..) {
            let _ = w.send(());
        }
    }

    fn set_joined(&self) {
        let mut shared = self.lock();
        shared.joined = true;
        for w in shared.joined_waiters.drain(..) {
            let _ = w.send(());
        }
    }

    fn publish_status(
        &self,
        members: &[MemberEntry],
        list_version: u64,
        table: &PartitionTable,
        migrations: MigrationProgress,
    ) {
        let master = members.first().map(|m| m.id);
        let status = ClusterStatus {
            members: members
                .iter()
                .map(|m| MemberStatus {
                    entry: m.clone(),
                    owned: table.owned_by(m.id),
                    backups: table.backups_of(m.id),
                    master: Some(m.id) == master,
                })
                .collect(),
            list_version,
            table_version: table.version,
            unowned: table.unowned(),
            migrations,
        };
        let mut shared = self.lock();
        shared.status = status;
        shared.table = Some(table.clone());
    }

    fn emit(&self, event: &MembershipEvent) {
        self.lock()
            .listeners
            .retain(|tx| tx.send(event.clone()).is_ok());
    }

    fn hello(&self) -> Control {
        conn::hello(&self.cluster, &self.secret, self.role, self.id.0)
    }

    fn me(&self, shards: u32) -> MemberEntry {
        MemberEntry {
            id: self.id,
            addr: self.bind,
            shards,
            lite: self.lite,
            order: 0,
            incarnation: 0,
        }
    }
}

/// Sleeps `d` without an executor's timer (for callers outside the shards): a helper thread.
async fn sleep_anywhere(d: Duration) {
    let (tx, rx) = flume::bounded::<()>(1);
    let spawned = std::thread::Builder::new()
        .name("corecast-wait".into())
        .spawn(move || {
            std::thread::sleep(d);
            let _ = tx.send(());
        });
    if spawned.is_ok() {
        let _ = rx.recv_async().await;
    }
}

impl Extension for Network {
    fn start_shard(self: Arc<Self>, ctx: ShardContext) -> Rc<dyn Router> {
        Rc::new(ShardRouter(ShardNet::start(self, ctx)))
    }

    /// Leaves the cluster gracefully: the master migrates this member's partitions to the
    /// others (so nothing is lost even without backups), then removes it; waits for that up to
    /// `migration.shutdown-timeout-millis`.
    fn before_stop(
        &self,
        invoker: &Invoker,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + '_>> {
        let limit = self.migration.shutdown_timeout();
        let leave = invoker.run_on(ShardId(0), move || async move {
            let sn = SHARD.with(|s| s.borrow().clone());
            let Some(sn) = sn else { return };
            let Some(machine) = sn.control.as_ref().and_then(|c| c.machine.as_ref()) else {
                return;
            };
            let started = Instant::now();
            machine.borrow_mut().leave(started);
            sn.process();
            tracing::info!("leaving the cluster: handing partitions over");
            while !sn.net.lock().left {
                if started.elapsed() > limit {
                    tracing::warn!(
                        ?limit,
                        "partitions not handed over in time (migration.shutdown-timeout-millis); stopping anyway"
                    );
                    break;
                }
                glommio::timer::sleep(Duration::from_millis(10)).await;
            }
            tracing::info!(millis = started.elapsed().as_millis() as u64, "left the cluster");
            // Let the writer put the last messages on the wire.
            glommio::timer::sleep(Duration::from_millis(20)).await;
        });
        Box::pin(async move {
            let _ = leave.await;
        })
    }

    fn stopped(&self) {
        // The metrics thread asks the shards; they are gone.
        let server = self.lock().metrics.take();
        drop(server);
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

thread_local! {
    /// This shard's network state, for the view updates other shards send as messages.
    static SHARD: RefCell<Option<Rc<ShardNet>>> = const { RefCell::new(None) };
}

/// Fault injection on the calling shard (see [`crate::faults`]); nothing off a shard.
pub(crate) fn set_blocked_here(addrs: ahash::AHashSet<SocketAddr>) {
    if let Some(sn) = SHARD.with(|s| s.borrow().clone()) {
        sn.set_blocked(addrs);
    }
}

/// The member list and table one shard routes with.
#[derive(Clone)]
struct View {
    members: Vec<MemberEntry>,
    list_version: u64,
    table: PartitionTable,
}

/// A task waiting for a connection another task is making.
type ConnWaiter = Rc<conn::Slot<Result<Rc<Outbound>, ConnError>>>;

/// One shard's network state.
struct ShardNet {
    net: Arc<Network>,
    shard: ShardId,
    shards: ShardCount,
    partitions: PartitionCount,
    invoker: Invoker,
    view: RefCell<View>,
    /// Per partition, whether `view.table` names this member its owner: the check every
    /// operation makes reads one byte here instead of the table's row (a cache miss per
    /// operation under a spread of keys).
    owned: RefCell<Vec<bool>>,
    conns: RefCell<AHashMap<SocketAddr, Rc<Outbound>>>,
    connecting: RefCell<AHashMap<SocketAddr, Vec<ConnWaiter>>>,
    /// Shard 0 only: the membership machine (members) and the clients subscribed to views.
    control: Option<Control0>,
    /// This shard's listener and inbound connections, closed when the shard stops.
    listener: RefCell<Option<socket2::Socket>>,
    inbound: RefCell<Vec<std::rc::Weak<Writer>>>,
    stopped: std::cell::Cell<bool>,
    /// The next call number of this shard's calls (shard index in the top 16 bits): unique
    /// per caller, the same on every retry of a call.
    next_call: std::cell::Cell<u64>,
    /// Partitions whose backup replica on this shard is fetching the owner's state, with the
    /// backup frames that arrived meanwhile (replayed, then acked, once it is in).
    syncing: RefCell<AHashMap<u32, Vec<QueuedBackup>>>,
    /// Partitions a sync backup refused this shard's writes for, because it holds a newer
    /// partition table (the version) that no longer names this member owner: a deposed owner
    /// (paused, or cut off, past the member timeout) runs nothing on them until its own table
    /// is at least that new.
    fenced: RefCell<AHashMap<u32, u64>>,
    /// Rung when the table changed: the anti-entropy round runs at once.
    entropy: Notify,
    /// The failpoint's random state.
    rng: std::cell::Cell<u64>,
    /// Migrations of this shard's partitions.
    migrations: RefCell<migrate::Migrations>,
    /// Shard 0: the rebalance as last heard.
    progress: std::cell::Cell<MigrationProgress>,
    /// Shard 0: this member's or client's listeners and where they are registered.
    subs: RefCell<events::Subscriptions>,
    /// Batches this shard sent, parts they carried, parts sent again one by one.
    batches: std::cell::Cell<many::BatchStats>,
    /// Inbound connections closed for a protocol violation.
    rejected: std::cell::Cell<u64>,
    /// Times an inbound connection stopped reading until its peer read its answers.
    paused: std::cell::Cell<u64>,
    /// Requests refused as overloaded.
    overloaded: std::cell::Cell<u64>,
    /// Fault injection ([`crate::faults`]): peers this shard neither connects to nor keeps a
    /// connection with.
    blocked: RefCell<ahash::AHashSet<SocketAddr>>,
    /// Until when this member may answer as an owner (the membership machine's lease, sent
    /// from shard 0 every control step), and whether it could at the last check.
    lease_until: std::cell::Cell<Option<Instant>>,
    leased: std::cell::Cell<bool>,
    /// Partitions a migration installed here whose master left before this member saw its
    /// commit: kept until the next table says whether this member holds them.
    orphans: RefCell<ahash::AHashSet<u32>>,
}

/// What a sync backup's answer means for the write.
enum BackupAnswer {
    /// Done: applied or gone (`Ok`), or this owner was deposed (`Err`).
    Settled(Result<(), OpError>),
    /// Refused by a backup whose table is older than the frame's, or that is out of step and
    /// fetching the partition: send it again.
    Behind,
}

/// A backup frame kept while its replica fetches the partition.
struct QueuedBackup {
    header: Header,
    payload: Bytes,
    /// Where its ack goes.
    writer: Rc<Writer>,
    /// The member that sent it (its hello's id).
    sender: Option<MemberId>,
}

struct Control0 {
    machine: Option<RefCell<Membership>>,
    subscribers: RefCell<Vec<Rc<Writer>>>,
    /// Clients: the member whose control connection is up.
    upstream: RefCell<Option<Rc<Outbound>>>,
}

impl ShardNet {
    fn start(net: Arc<Network>, ctx: ShardContext) -> Rc<ShardNet> {
        let control = (ctx.shard.0 == 0).then(|| Control0 {
            machine: (net.role == Role::Member).then(|| {
                RefCell::new(
                    Membership::new(
                        net.me(ctx.shards.get()),
                        net.seeds.iter().copied(),
                        ctx.partitions,
                        net.replica_slots,
                        net.timing,
                        Instant::now(),
                    )
                    .with_migration(net.migration.parallel as usize, net.migration.timeout())
                    .with_split_brain_probe(net.split_brain_probe),
                )
            }),
            subscribers: RefCell::new(Vec::new()),
            upstream: RefCell::new(None),
        });
        let sn = Rc::new(ShardNet {
            net: net.clone(),
            shard: ctx.shard,
            shards: ctx.shards,
            partitions: ctx.partitions,
            invoker: ctx.invoker,
            view: RefCell::new(View {
                members: Vec::new(),
                list_version: 0,
                table: PartitionTable::empty(ctx.partitions, 1),
            }),
            owned: RefCell::new(vec![false; ctx.partitions.get() as usize]),
            conns: RefCell::new(AHashMap::new()),
            connecting: RefCell::new(AHashMap::new()),
            control,
            listener: RefCell::new(None),
            inbound: RefCell::new(Vec::new()),
            stopped: std::cell::Cell::new(false),
            next_call: std::cell::Cell::new(u64::from(ctx.shard.0) << 48),
            syncing: RefCell::new(AHashMap::new()),
            fenced: RefCell::new(AHashMap::new()),
            entropy: Notify::default(),
            rng: std::cell::Cell::new(random_id() | 1),
            migrations: RefCell::new(migrate::Migrations::default()),
            progress: std::cell::Cell::new(MigrationProgress::default()),
            subs: RefCell::new(events::Subscriptions::default()),
            batches: std::cell::Cell::new(many::BatchStats::default()),
            rejected: std::cell::Cell::new(0),
            paused: std::cell::Cell::new(0),
            overloaded: std::cell::Cell::new(0),
            blocked: RefCell::new(ahash::AHashSet::new()),
            lease_until: std::cell::Cell::new(None),
            leased: std::cell::Cell::new(false),
            orphans: RefCell::new(ahash::AHashSet::new()),
        });
        SHARD.with(|s| *s.borrow_mut() = Some(sn.clone()));
        let times = crate::readiness::PollTimes {
            wait_micros: net.poll_wait_micros,
            spin_micros: net.poll_spin_micros,
            busy_micros: net.poll_busy_micros,
        };
        if let Err(e) = crate::readiness::install(times) {
            tracing::warn!(error = %e, "no epoll set: sockets wait through glommio only");
        }
        if net.role == Role::Member {
            let mut addr = net.bind;
            addr.set_port(addr.port().wrapping_add(ctx.shard.0 as u16));
            match crate::sys::listen(addr) {
                Ok((listener, handle)) => {
                    *sn.listener.borrow_mut() = Some(handle);
                    glommio::spawn_local(accept_loop(sn.clone(), listener)).detach();
                }
                Err(e) => net.lock().start_errors.push(NetError::Listen {
                    shard: ctx.shard,
                    addr,
                    reason: e.to_string(),
                }),
            }
        }
        if sn.control.is_some() {
            glommio::spawn_local(control_loop(sn.clone())).detach();
        }
        if net.role == Role::Member {
            glommio::spawn_local(anti_entropy_loop(sn.clone())).detach();
            glommio::spawn_local(migrate::migration_watchdog(sn.clone())).detach();
        }
        sn
    }

    /// Closes the listener and every connection of this shard.
    fn stop(&self) {
        self.stopped.set(true);
        if let Some(listener) = self.listener.borrow_mut().take() {
            // Wakes the accept loop with an error; it sees `stopped` and ends.
            let _ = listener.shutdown(std::net::Shutdown::Both);
        }
        for c in self.conns.borrow_mut().drain() {
            c.1.close();
        }
        for w in self.inbound.borrow_mut().drain(..) {
            if let Some(w) = w.upgrade() {
                w.close();
            }
        }
    }

    /// Whether this member owns `partition` and it is not being streamed away.
    fn is_local(&self, partition: PartitionId) -> bool {
        self.owns(partition) && !self.is_migrating(partition)
    }

    fn owns(&self, partition: PartitionId) -> bool {
        self.net.role == Role::Member
            && self.leased.get()
            && self
                .owned
                .borrow()
                .get(partition.0 as usize)
                .copied()
                .unwrap_or(false)
            && !self.is_fenced(partition)
    }

    /// Checks the owner's lease against the clock (once per batch of requests read, not per
    /// request): a member that heard from no one in its cluster for most of a member timeout
    /// answers nothing as owner, so a member resuming from a pause serves none of the requests
    /// queued meanwhile from its stale data (they are refused and retried at the new owner).
    fn check_lease(&self, now: Instant) {
        self.leased
            .set(self.lease_until.get().is_some_and(|until| now <= until));
    }

    /// Whether a backup's newer table deposed this member as `partition`'s owner (and this
    /// shard's table is not that new yet).
    fn is_fenced(&self, partition: PartitionId) -> bool {
        let mut fenced = self.fenced.borrow_mut();
        if fenced.is_empty() {
            return false;
        }
        let version = self.view.borrow().table.version;
        fenced.retain(|_, newer| *newer > version);
        fenced.contains_key(&partition.0)
    }

    /// A sync backup answered `answer` to a backup of `partition` sent with table `sent_with`:
    /// `Err` (and the partition fenced) when it refused it as not a backup under a newer table
    /// than this shard's; [`BackupAnswer::Behind`] when it refused it under an older one (it is
    /// about to be a backup: the frame goes again once its table catches up).
    fn backup_answer(
        &self,
        partition: PartitionId,
        sent_with: u64,
        answer: conn::Response,
    ) -> BackupAnswer {
        let Ok((h, body)) = answer else {
            // The backup is gone: it does not count as a live one.
            return BackupAnswer::Settled(Ok(()));
        };
        if h.status == Status::Ok as u16 {
            return BackupAnswer::Settled(Ok(()));
        }
        let refused = payload::decode::<WireError>(&body).map(|w| w.to_op_error());
        match refused {
            Ok(OpError::WrongTarget { version, .. }) if version < sent_with => BackupAnswer::Behind,
            Ok(OpError::WrongTarget { version, .. })
                if version > self.view.borrow().table.version =>
            {
                tracing::warn!(
                    %partition,
                    newer = version,
                    "a backup knows a newer partition table without this member as owner; \
                     not answering the write and running nothing on the partition until that \
                     table arrives"
                );
                self.fenced.borrow_mut().insert(partition.0, version);
                BackupAnswer::Settled(Err(OpError::WrongTarget { partition, version }))
            }
            // A table of the same version (or between the frame's and this shard's) that does
            // not name this member owner: another cluster's, across a split that healed and has
            // not merged yet. The write is on this member alone: not done (seed 1422).
            Ok(OpError::WrongTarget { version, .. }) => {
                BackupAnswer::Settled(Err(OpError::WrongTarget { partition, version }))
            }
            // Out of step and not fetched into step yet: it may be in a moment; meanwhile the
            // write is on this member alone (the simulation's data model took this as an ack).
            Ok(OpError::Unavailable { .. }) => BackupAnswer::Behind,
            // A backup operation that failed there fails the same way every time: the replica
            // is repaired by anti-entropy, and the write stands on the live replicas that took it.
            Ok(e) => {
                tracing::warn!(%partition, error = %e, "a backup operation failed on the backup");
                BackupAnswer::Settled(Ok(()))
            }
            Err(e) => {
                tracing::warn!(%partition, error = %e, "a backup's refusal did not decode");
                BackupAnswer::Settled(Ok(()))
            }
        }
    }

    /// Waits for a sync backup's answer to the frame already sent (`first`) and, while the
    /// backup's table is older than the one the frame was routed with (a member that installed
    /// the partition and has not heard of the table naming it backup yet), sends the frame again
    /// with a growing pause: an ack is what makes the write survive this owner's death. The
    /// caller's ack timeout bounds the whole wait. Found by reasoning over the seeded
    /// simulation's data model: acknowledging on such a refusal left the write on the owner
    /// alone.
    async fn await_backup(
        self: Rc<Self>,
        addr: SocketAddr,
        mut header: Header,
        payload: Bytes,
        first: conn::Response,
    ) -> Result<(), OpError> {
        let partition = PartitionId(header.partition);
        let mut answer = first;
        let mut pause = Duration::from_millis(1);
        loop {
            if let Err(e) = &answer {
                tracing::debug!(%addr, error = %e, "sync backup lost");
            }
            match self.backup_answer(partition, header.table_version, answer) {
                BackupAnswer::Settled(result) => return result,
                BackupAnswer::Behind => {}
            }
            glommio::timer::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(50));
            header.correlation = self.next_call();
            answer = match self.connection(addr).await {
                Ok(c) => c.call(header, &payload).await,
                Err(e) => {
                    tracing::debug!(%addr, error = %e, "backup member not reachable");
                    return Ok(());
                }
            };
        }
    }

    /// A welcomed connection to `addr`, made once however many tasks ask at the same time.
    async fn connection(self: &Rc<Self>, addr: SocketAddr) -> Result<Rc<Outbound>, ConnError> {
        if let Some(c) = self.conns.borrow().get(&addr).filter(|c| !c.is_closed()) {
            return Ok(c.clone());
        }
        let waiter = {
            let mut connecting = self.connecting.borrow_mut();
            match connecting.get_mut(&addr) {
                Some(waiters) => {
                    let slot = conn::Slot::new();
                    waiters.push(slot.clone());
                    Some(slot)
                }
                None => {
                    connecting.insert(addr, Vec::new());
                    None
                }
            }
        };
        if let Some(slot) = waiter {
            return slot.take().await;
        }
        let result = self.connect(addr).await;
        if let Ok(c) = &result {
            self.conns.borrow_mut().insert(addr, c.clone());
        }
        let waiters = self
            .connecting
            .borrow_mut()
            .remove(&addr)
            .unwrap_or_default();
        for w in waiters {
            w.put(result.clone());
        }
        result
    }

    async fn connect(self: &Rc<Self>, addr: SocketAddr) -> Result<Rc<Outbound>, ConnError> {
        if self.blocked.borrow().contains(&addr) {
            return Err(ConnError::Io {
                addr,
                reason: "cut off by fault injection".into(),
            });
        }
        let timeout = self.net.timing.member_timeout.min(Duration::from_secs(2));
        let (stream, rb) = conn::connect(
            addr,
            &self.net.hello(),
            self.net.socket_buffer,
            self.net.max_payload,
            timeout,
        )
        .await?;
        let (this, events) = (Rc::downgrade(self), Rc::downgrade(self));
        Outbound::start(
            stream,
            rb,
            addr,
            self.net.max_payload,
            self.net.max_queued,
            move |msg| {
                if let Some(sn) = this.upgrade() {
                    sn.on_control(msg, None);
                }
            },
            move |h, payload| {
                if let Some(sn) = events.upgrade() {
                    sn.on_event(h, payload);
                }
            },
        )
    }

    /// Shard 0: the owner's lease, here and on every other shard.
    fn spread_lease(&self, until: Option<Instant>, now: Instant) {
        self.lease_until.set(until);
        self.check_lease(now);
        self.on_shards(1..self.shards.get(), move || {
            if let Some(sn) = SHARD.with(|s| s.borrow().clone()) {
                sn.lease_until.set(until);
                sn.check_lease(Instant::now());
            }
        });
    }

    /// Fault injection: from now on this shard makes no connection to `addrs` and closes the
    /// ones it has (the peers' connections to it close when they block this member in turn).
    pub(crate) fn set_blocked(&self, addrs: ahash::AHashSet<SocketAddr>) {
        self.conns.borrow_mut().retain(|addr, c| {
            let cut = addrs.contains(addr);
            if cut {
                c.abort();
            }
            !cut
        });
        *self.blocked.borrow_mut() = addrs;
    }

    /// Sends a control message to the member at base address `addr` (in the background); to
    /// this member's own shard 0 by message.
    fn send_control(self: &Rc<Self>, addr: SocketAddr, msg: Control) {
        if addr == self.net.bind && self.net.role == Role::Member {
            self.on_shards(std::iter::once(0), move || {
                let sn = SHARD.with(|s| s.borrow().clone());
                if let Some(sn) = sn {
                    sn.on_control(msg.clone(), None);
                }
            });
            return;
        }
        if let Some(c) = self.conns.borrow().get(&addr).filter(|c| !c.is_closed()) {
            c.send_control(&msg);
            return;
        }
        let this = self.clone();
        glommio::spawn_local(async move {
            match this.connection(addr).await {
                Ok(c) => c.send_control(&msg),
                Err(ConnError::Refused { addr, reason }) => {
                    tracing::warn!(%addr, %reason, "refused by a member");
                    this.net.set_refused(NetError::Refused { addr, reason });
                }
                Err(e) => tracing::debug!(%addr, error = %e, "control message not delivered"),
            }
        })
        .detach();
    }

    /// Shard 0 of a member: sums every shard's numbers and answers a `StatsRequest` on `w`.
    fn send_stats(self: &Rc<Self>, w: Rc<Writer>) {
        let this = self.clone();
        glommio::spawn_local(async move {
            let mut answer = MemberStats::default();
            for s in 0..this.shards.get() {
                let job = this.invoker.run_on(ShardId(s), || async {
                    let ops = extension::shard_stats()
                        .map(|(_, ops)| ops)
                        .unwrap_or_default();
                    (ops, shard_net_stats())
                });
                if let Ok((ops, net)) = job.await {
                    answer.ops += ops.ops.iter().map(|c| c[0]).sum::<u64>();
                    answer.errors += ops.ops.iter().map(|c| c[1]).sum::<u64>();
                    answer.connections += net.inbound;
                    answer.rejected += net.rejected;
                }
            }
            w.push_control(&Control::Stats {
                id: this.net.id.0,
                ops: answer.ops,
                errors: answer.errors,
                connections: answer.connections,
                rejected: answer.rejected,
            });
        })
        .detach();
    }

    /// A control message from a peer (on shard 0). `reply` is the connection it came on, for
    /// clients that subscribe.
    fn on_control(self: &Rc<Self>, msg: Control, reply: Option<&Rc<Writer>>) {
        let Some(control) = &self.control else {
            return;
        };
        match (&control.machine, msg) {
            (Some(_), Control::StatsRequest) => {
                if let Some(w) = reply {
                    self.send_stats(w.clone());
                }
            }
            (
                None,
                Control::Stats {
                    id,
                    ops,
                    errors,
                    connections,
                    rejected,
                },
            ) => {
                self.net.lock().member_stats.insert(
                    id,
                    MemberStats {
                        ops,
                        errors,
                        connections,
                        rejected,
                    },
                );
            }
            (Some(_), Control::Subscribe) => {
                if let Some(w) = reply {
                    if let Some(machine) = &control.machine {
                        let m = machine.borrow();
                        w.push_control(&m.list_message());
                        w.push_control(&m.table_message());
                    }
                    control.subscribers.borrow_mut().push(w.clone());
                }
            }
            (
                Some(_),
                msg @ (Control::MigrationStart { .. } | Control::MigrationRollback { .. }),
            ) => self.on_migration_control(msg),
            (Some(machine), msg) => {
                machine.borrow_mut().receive(msg, Instant::now());
                self.process();
            }
            // A client: views pushed by its member.
            (
                None,
                Control::MemberList {
                    version, members, ..
                },
            ) => {
                let members: Vec<MemberEntry> =
                    members.iter().filter_map(MemberEntry::from_wire).collect();
                let (added, removed) = {
                    let view = self.view.borrow();
                    if version <= view.list_version {
                        return;
                    }
                    let known =
                        |list: &[MemberEntry], m: &MemberEntry| list.iter().any(|o| o.id == m.id);
                    let added: Vec<MemberEntry> = members
                        .iter()
                        .filter(|m| !known(&view.members, m))
                        .cloned()
                        .collect();
                    let removed: Vec<MemberEntry> = view
                        .members
                        .iter()
                        .filter(|m| !known(&members, m))
                        .cloned()
                        .collect();
                    (added, removed)
                };
                self.apply_everywhere(Some((members, version)), None);
                // The client's membership listeners (and services) hear of joins and leaves.
                self.membership_events(&added, &removed);
            }
            (
                None,
                Control::Table {
                    version,
                    depth,
                    replicas,
                    migrations,
                    ..
                },
            ) => {
                let partitions = self.partitions.get() as usize;
                if version > self.view.borrow().table.version {
                    if let Some(table) = table_from_wire(version, depth, &replicas, partitions) {
                        self.progress
                            .set(crate::membership::progress_from_wire(migrations));
                        self.apply_everywhere(None, Some(table));
                        self.net.set_joined();
                    }
                }
            }
            (None, _) => {}
        }
    }

    /// Carries out what the membership machine decided.
    fn process(self: &Rc<Self>) {
        let Some(machine) = self.control.as_ref().and_then(|c| c.machine.as_ref()) else {
            return;
        };
        let actions = machine.borrow_mut().drain();
        for action in actions {
            match action {
                Action::Send(addr, msg) => self.send_control(addr, msg),
                Action::ListChanged {
                    members,
                    version,
                    added,
                    removed,
                } => {
                    self.notify_subscribers(&machine.borrow().list_message());
                    for m in &added {
                        tracing::info!(member = %m.addr, id = %m.id, lite = m.lite, version, "member added");
                    }
                    for m in &removed {
                        tracing::warn!(member = %m.addr, id = %m.id, version, "member removed");
                        self.conns.borrow_mut().remove(&m.addr);
                    }
                    self.apply_everywhere(Some((members, version)), None);
                    self.membership_events(&added, &removed);
                }
                Action::TableChanged(table) => {
                    tracing::debug!(version = table.version, "partition table published");
                    self.progress.set(machine.borrow().progress());
                    self.notify_subscribers(&machine.borrow().table_message());
                    self.apply_everywhere(None, Some(table));
                }
                Action::Joined { master } => {
                    let ports: Vec<u16> = (0..self.shards.get())
                        .map(|s| self.net.bind.port().wrapping_add(s as u16))
                        .collect();
                    tracing::info!(
                        address = %self.net.bind,
                        id = %self.net.id,
                        shard_ports = ?ports,
                        master = %master.addr,
                        lite = self.net.lite,
                        "joined the cluster"
                    );
                    self.net.set_joined();
                }
                Action::BecameMaster => {
                    tracing::info!(address = %self.net.bind, "this member is the master");
                }
                Action::Left => {
                    tracing::info!(address = %self.net.bind, "handed over; out of the member list");
                    self.net.lock().left = true;
                }
                Action::Merge { target } => self.start_merge(target),
                Action::Reset => self.start_reset(),
            }
        }
    }

    fn notify_subscribers(&self, msg: &Control) {
        if let Some(control) = &self.control {
            control.subscribers.borrow_mut().retain(|w| {
                w.push_control(msg);
                !w.is_closed()
            });
        }
    }

    /// Installs a new member list and/or table here, then on every other shard of this member
    /// (by message).
    fn apply_everywhere(
        self: &Rc<Self>,
        list: Option<(Vec<MemberEntry>, u64)>,
        table: Option<PartitionTable>,
    ) {
        self.apply(list.clone(), table.clone());
        {
            let view = self.view.borrow();
            self.net.publish_status(
                &view.members,
                view.list_version,
                &view.table,
                self.progress.get(),
            );
        }
        let others = (0..self.shards.get()).filter(|i| *i != self.shard.0);
        self.on_shards(others, move || {
            SHARD.with(|s| {
                if let Some(sn) = s.borrow().as_ref() {
                    sn.apply(list.clone(), table.clone());
                }
            });
        });
    }

    /// Runs `job` on each of `shards` of this member, as messages, in the background.
    fn on_shards(
        &self,
        shards: impl Iterator<Item = u32>,
        job: impl Fn() + Clone + Send + 'static,
    ) {
        for index in shards {
            let job = job.clone();
            let sent = self
                .invoker
                .run_on(ShardId(index), move || async move { job() });
            glommio::spawn_local(async move {
                let _ = sent.await;
            })
            .detach();
        }
    }

    fn apply(&self, list: Option<(Vec<MemberEntry>, u64)>, table: Option<PartitionTable>) {
        let mut view = self.view.borrow_mut();
        let mut list_changed = false;
        if let Some((members, version)) = list {
            if version >= view.list_version {
                view.members = members;
                view.list_version = version;
                list_changed = true;
            }
        }
        let table = table.filter(|t| t.version > view.table.version);
        drop(view);
        if list_changed && self.net.role == Role::Member {
            // Migrations of a master that is gone are off.
            self.expire_migrations();
        }
        let Some(table) = table else {
            return;
        };
        let old = std::mem::replace(&mut self.view.borrow_mut().table, table);
        {
            let view = self.view.borrow();
            let me = self.net.id;
            for (p, owned) in self.owned.borrow_mut().iter_mut().enumerate() {
                *owned = view.table.owner(PartitionId(p as u32)) == Some(me);
            }
        }
        if self.net.role != Role::Member {
            return;
        }
        // This shard's partitions: migrations the table shows are committed; a new owner starts
        // a version epoch (unless a migration gave it the old owner's versions); a member that
        // holds no replica any more drops the data.
        let adopted = {
            let view = self.view.borrow();
            self.commit_migrations(&view.table)
        };
        let me = self.net.id;
        let view = self.view.borrow();
        for p in self.shards.partitions_of(self.shard, self.partitions) {
            let (was, now) = (old.replica_index(p, me), view.table.replica_index(p, me));
            if now == Some(ReplicaIndex::PRIMARY) && was != now {
                if !adopted.contains(&p.0) {
                    extension::became_owner(p);
                }
            } else if now.is_none() && was.is_some() && !self.migrations.borrow().has_installed(p) {
                // A partition a migration installed here is left to its commit or rollback: a
                // table published before the commit can arrive after the copy, and the commit
                // then names this member (the simulation's data model, seed 173).
                extension::drop_replica(p);
            }
        }
        drop(view);
        self.settle_orphans();
        self.entropy.notify();
    }

    /// Tells every shard's services and the embedded listeners who joined and who left.
    fn membership_events(self: &Rc<Self>, added: &[MemberEntry], removed: &[MemberEntry]) {
        let info = |m: &MemberEntry| MemberInfo {
            id: m.id.0,
            cluster_name: self.net.cluster.clone(),
            address: m.addr,
        };
        let events: Vec<MembershipEvent> = added
            .iter()
            .map(|m| MembershipEvent::Added(info(m)))
            .chain(removed.iter().map(|m| MembershipEvent::Removed(info(m))))
            .collect();
        if events.is_empty() {
            return;
        }
        for e in &events {
            self.net.emit(e);
        }
        if self.net.role == Role::Client {
            // A client's listeners hear of it; its services do not act on the cluster's
            // membership (every member already does: a lock's release, say).
            return;
        }
        self.on_shards(0..self.shards.get(), move || {
            for e in &events {
                extension::membership_changed(e);
            }
        });
    }

    /// Sends an operation to `partition`'s owner and waits for the answer, retrying while the
    /// table is stale or the owner unreachable, up to the invocation timeout.
    async fn forward(
        self: Rc<Self>,
        partition: PartitionId,
        service: ServiceId,
        op: OpId,
        payload: Bytes,
    ) -> Result<Bytes, OpError> {
        let call = self.next_call();
        self.forward_call(partition, service, op, payload, call, false)
            .await
    }

    /// [`Self::forward`] under call number `call`; `sent` if it was sent before (by a batch
    /// that got no answer for it).
    async fn forward_call(
        self: Rc<Self>,
        partition: PartitionId,
        service: ServiceId,
        op: OpId,
        payload: Bytes,
        call: u64,
        mut sent: bool,
    ) -> Result<Bytes, OpError> {
        let started = Instant::now();
        let mut backoff = Duration::from_millis(1);
        // Why the last attempt failed and where it went: formatted only if the call fails.
        let mut last: Cow<'static, str> = Cow::Borrowed("the partition has no owner yet");
        let mut target: Option<SocketAddr> = None;
        // One call id for every attempt: an owner (or the backup promoted in its place) that
        // already ran the call answers it again instead of running it twice.
        loop {
            let mut held = false;
            let (owner, version) = {
                let view = self.view.borrow();
                let owner = view
                    .table
                    .owner(partition)
                    .and_then(|id| view.members.iter().find(|m| m.id == id).cloned());
                (owner, view.table.version)
            };
            match owner {
                Some(m) if m.id == self.net.id && self.is_migrating(partition) => {
                    // Held while it streams away: asked again shortly, then of the new owner.
                    last = OpError::Migrating { partition }.to_string().into();
                    held = true;
                }
                Some(m) if m.id == self.net.id && self.is_fenced(partition) => {
                    // Deposed by a newer table this shard has not seen yet: wait for it.
                    last = format!("{partition} is fenced until a newer partition table").into();
                    held = true;
                }
                Some(m) if m.id == self.net.id && !self.leased.get() => {
                    // Heard from no one for too long: perhaps removed; wait for the cluster.
                    last = format!("{partition}: this member's owner lease ran out").into();
                    held = true;
                }
                Some(m) if m.id == self.net.id && self.net.role == Role::Member => {
                    let mut out = Bytes::new();
                    let id = CallId {
                        caller: self.net.id.0,
                        call,
                    };
                    let again = std::mem::replace(&mut sent, true);
                    let acks = extension::execute_here(
                        partition,
                        service,
                        op,
                        &payload,
                        &mut out,
                        Some(Call { id, again }),
                    )?;
                    match acks {
                        Some(acks) => match acks.await {
                            Ok(()) => return Ok(out),
                            // Deposed: fenced now; asked again of the newer table's owner.
                            Err(e) => {
                                last = e.to_string().into();
                                held = true;
                            }
                        },
                        None => return Ok(out),
                    }
                }
                Some(m) => {
                    let addr = m.shard_addr(m.shard_of(partition));
                    target = Some(addr);
                    let header = Header {
                        flags: if sent { frame::RETRY } else { 0 },
                        partition: partition.0,
                        correlation: call,
                        table_version: version,
                        service: service.0,
                        op: op.0,
                        caller: self.net.id.0,
                        ..Header::new(FrameKind::Request)
                    };
                    let remaining = self
                        .net
                        .invocation_timeout
                        .saturating_sub(started.elapsed())
                        .max(Duration::from_millis(1));
                    // From here it may reach the owner: later attempts are flagged.
                    sent = true;
                    match self.connection(addr).await {
                        Ok(c) => match call_within(&c, header, &payload, remaining).await {
                            // Sent, never answered: it may have run, so it is not retried.
                            None => {
                                return Err(OpError::Timeout {
                                    partition,
                                    target: addr.to_string(),
                                    millis: self.net.invocation_timeout.as_millis() as u64,
                                    reason: "no answer from the owner".into(),
                                })
                            }
                            Some(Ok((h, body))) if h.status == Status::Ok as u16 => {
                                return Ok(body)
                            }
                            Some(Ok((_, body))) => {
                                let e = payload::decode::<WireError>(&body)
                                    .map(|w| w.to_op_error())
                                    .unwrap_or_else(|e| {
                                        OpError::Failed(format!("malformed error from {addr}: {e}"))
                                    });
                                match e {
                                    // Overloaded: asked again after the backoff, which grows.
                                    OpError::WrongTarget { .. } | OpError::Overloaded { .. } => {
                                        last = e.to_string().into()
                                    }
                                    OpError::Migrating { .. } => {
                                        last = e.to_string().into();
                                        held = true;
                                    }
                                    other => return Err(other),
                                }
                            }
                            // In flight when the connection died: it may have run. Retried with
                            // the same call id, so the owner (or the backup that takes over)
                            // answers it from what it remembers instead of running it again.
                            Some(Err(e)) => last = e.to_string().into(),
                        },
                        Err(e) => last = e.to_string().into(),
                    }
                }
                None => {}
            }
            let elapsed = started.elapsed();
            if elapsed + backoff > self.net.invocation_timeout {
                return Err(OpError::Timeout {
                    partition,
                    target: target.map_or_else(|| "none".to_owned(), |a| a.to_string()),
                    millis: self.net.invocation_timeout.as_millis() as u64,
                    reason: last.into_owned(),
                });
            }
            if held {
                // A migrating partition is free again within milliseconds: ask again soon.
                glommio::timer::sleep(Duration::from_millis(1)).await;
                continue;
            }
            glommio::timer::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_millis(200));
        }
    }
}

/// A call that gives up after `limit`: a member that stopped answering (paused, or its process
/// gone while its socket stays open) must not hold the caller forever.
async fn call_within(
    c: &Outbound,
    header: Header,
    payload: &[u8],
    limit: Duration,
) -> Option<conn::Response> {
    let call = async { Ok(c.call(header, payload).await) };
    glommio::timer::timeout(limit, call).await.ok()
}

struct ShardRouter(Rc<ShardNet>);

impl Router for ShardRouter {
    fn listen(
        &self,
        spec: corecast_engine::events::ListenSpec,
        tx: flume::Sender<Bytes>,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()>>> {
        Box::pin(self.0.clone().listen(spec, tx))
    }

    fn unlisten(&self, id: u64) {
        self.0.unlisten(id);
    }

    fn is_local(&self, partition: PartitionId) -> bool {
        self.0.is_local(partition)
    }

    fn replica_index(&self, partition: PartitionId) -> Option<ReplicaIndex> {
        if self.0.net.role != Role::Member {
            return None;
        }
        self.0
            .view
            .borrow()
            .table
            .replica_index(partition, self.0.net.id)
    }

    fn replicate(&self, replication: Replication) -> Option<Acks> {
        self.0.replicate(replication)
    }

    fn forward(
        &self,
        partition: PartitionId,
        service: ServiceId,
        op: OpId,
        payload: Bytes,
    ) -> RemoteAnswer {
        Box::pin(self.0.clone().forward(partition, service, op, payload))
    }

    fn forward_many(
        &self,
        service: ServiceId,
        op: OpId,
        parts: Vec<(PartitionId, Bytes)>,
    ) -> extension::ManyAnswers {
        Box::pin(self.0.clone().forward_many(service, op, parts))
    }

    fn shutdown(&self) {
        self.0.stop();
        SHARD.with(|s| s.borrow_mut().take());
    }
}

/// Shard 0: ticks the membership machine (members) or keeps the upstream connection and
/// subscription (clients).
async fn control_loop(sn: Rc<ShardNet>) {
    let step =
        (sn.net.timing.heartbeat / 5).clamp(Duration::from_millis(5), Duration::from_millis(100));
    let Some(control) = &sn.control else {
        return;
    };
    if let Some(machine) = &control.machine {
        loop {
            let now = Instant::now();
            machine.borrow_mut().tick(now);
            sn.process();
            sn.spread_lease(machine.borrow().lease_until(now), now);
            glommio::timer::sleep(step).await;
        }
    }
    // A client: stay connected to one of the members, subscribed.
    let mut next = 0usize;
    loop {
        let up = control
            .upstream
            .borrow()
            .as_ref()
            .is_some_and(|c| !c.is_closed());
        if !up {
            let candidates: Vec<SocketAddr> = {
                let view = sn.view.borrow();
                let mut c: Vec<SocketAddr> = view.members.iter().map(|m| m.addr).collect();
                c.extend(sn.net.seeds.iter().copied());
                c
            };
            if let Some(addr) = candidates.get(next % candidates.len().max(1)).copied() {
                next += 1;
                match sn.connection(addr).await {
                    Ok(c) => {
                        c.send_control(&Control::Subscribe);
                        *control.upstream.borrow_mut() = Some(c);
                    }
                    Err(ConnError::Refused { addr, reason }) => {
                        tracing::warn!(%addr, %reason, "refused by a member");
                        sn.net.set_refused(NetError::Refused { addr, reason });
                    }
                    Err(e) => tracing::debug!(%addr, error = %e, "member not reachable"),
                }
            }
        }
        glommio::timer::sleep(step).await;
    }
}

async fn accept_loop(sn: Rc<ShardNet>, listener: glommio::net::TcpListener) {
    while !sn.stopped.get() {
        match listener.accept().await {
            Ok(stream) => {
                glommio::spawn_local(serve_inbound(sn.clone(), stream)).detach();
            }
            Err(_) if sn.stopped.get() => break,
            Err(e) => {
                tracing::warn!(shard = %sn.shard, error = %e, "accept failed");
                glommio::timer::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

/// One inbound connection: the handshake, then requests run here with responses batched back.
async fn serve_inbound(sn: Rc<ShardNet>, stream: TcpStream) {
    let peer = stream
        .peer_addr()
        .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
    conn::configure(&stream, sn.net.socket_buffer);
    if let Err(e) = serve_connection(&sn, stream, peer).await {
        if matches!(e, ConnError::Protocol { .. } | ConnError::Frame { .. }) {
            sn.rejected.set(sn.rejected.get() + 1);
        }
        tracing::warn!(%peer, shard = %sn.shard, error = %e, "closing connection");
    }
}

async fn serve_connection(
    sn: &Rc<ShardNet>,
    mut stream: TcpStream,
    peer: SocketAddr,
) -> Result<(), ConnError> {
    let max = sn.net.max_payload;
    let mut rb = ReadBuf::new(max);
    // The handshake: the first frame must be a hello with our cluster name and secret.
    let first = glommio::timer::timeout(Duration::from_secs(5), async {
        Ok(conn::read_frame(&mut stream, &mut rb, peer).await)
    })
    .await
    .map_err(|_| ConnError::Protocol {
        addr: peer,
        reason: "no hello within 5 s".into(),
    })??;
    let Some((h, payload)) = first else {
        return Ok(());
    };
    let (client, member);
    let refusal = match (h.kind, conn::decode_control(&payload, peer)) {
        (
            FrameKind::Control,
            Ok(Control::Hello {
                cluster,
                secret,
                role,
                id,
            }),
        ) => {
            client = (role == Role::Client).then_some(id);
            member = (role == Role::Member).then_some(MemberId(id));
            if cluster != sn.net.cluster {
                Some(format!(
                    "cluster name mismatch: this member is in `{}`, the peer in `{cluster}`",
                    sn.net.cluster
                ))
            } else if secret != sn.net.secret {
                Some("wrong cluster secret".to_owned())
            } else {
                None
            }
        }
        (_, Err(e)) => return Err(e),
        _ => {
            return Err(ConnError::Protocol {
                addr: peer,
                reason: "the first frame is not a hello".into(),
            })
        }
    };
    let (reader, writer_stream) =
        crate::sys::split(stream).map_err(|e| conn::io_error(peer, &e))?;
    let writer = Writer::new(max, sn.net.max_queued);
    glommio::spawn_local(writer.clone().run(writer_stream)).detach();
    if let Some(reason) = refusal {
        tracing::warn!(%peer, %reason, "refused a connection");
        writer.push_control(&Control::Refused { reason });
        // Let the refusal go out, then close.
        glommio::timer::sleep(Duration::from_millis(50)).await;
        writer.close();
        return Ok(());
    }
    writer.push_control(&Control::Welcome { id: sn.net.id.0 });
    {
        let mut inbound = sn.inbound.borrow_mut();
        inbound.retain(|w| w.strong_count() > 0);
        inbound.push(Rc::downgrade(&writer));
    }
    let result = serve_frames(sn, reader, rb, &writer, peer, member).await;
    writer.close();
    if let (Some(id), Role::Member, 0) = (client, sn.net.role, sn.shard.0) {
        // What the client held (a lock) is released by the services on this member.
        tracing::debug!(client = id, %peer, "client disconnected");
        let event = MembershipEvent::ClientLeft { id };
        sn.net.emit(&event);
        sn.on_shards(0..sn.shards.get(), move || {
            extension::membership_changed(&event);
        });
    }
    result
}

async fn serve_frames(
    sn: &Rc<ShardNet>,
    stream: TcpStream,
    rb: ReadBuf,
    writer: &Rc<Writer>,
    peer: SocketAddr,
    member: Option<MemberId>,
) -> Result<(), ConnError> {
    let mut held = events::Held::default();
    let result = serve_requests(sn, stream, rb, writer, peer, member, &mut held).await;
    held.release();
    result
}

/// Requests on one inbound connection whose answers wait for their sync backups' acks. Bounded
/// by `network.max-pending-acks`: past it requests are refused as overloaded rather than held,
/// since the acks they would wait for may travel on a connection whose reader waits on this one.
#[derive(Clone, Default)]
struct PendingAcks(Rc<std::cell::Cell<u32>>);

impl PendingAcks {
    fn count(&self) -> u32 {
        self.0.get()
    }

    /// Counts `n` waits until the returned guard drops.
    fn hold(&self, n: u32) -> AckHold {
        self.0.set(self.0.get() + n);
        AckHold(self.0.clone(), n)
    }
}

/// Waits counted in a [`PendingAcks`], uncounted when dropped.
struct AckHold(Rc<std::cell::Cell<u32>>, u32);

impl Drop for AckHold {
    fn drop(&mut self) {
        self.0.set(self.0.get().saturating_sub(self.1));
    }
}

async fn serve_requests(
    sn: &Rc<ShardNet>,
    mut stream: TcpStream,
    mut rb: ReadBuf,
    writer: &Rc<Writer>,
    peer: SocketAddr,
    member: Option<MemberId>,
    held: &mut events::Held,
) -> Result<(), ConnError> {
    let mut out = Bytes::new();
    let pending = PendingAcks::default();
    let watch = crate::readiness::watch(std::os::fd::AsRawFd::as_raw_fd(&stream));
    loop {
        // Every whole frame in the buffer, then one read: responses to a pipelined batch go out
        // in one write. The batch's operations share one reading of the clock.
        let mut batch = 0;
        let clock = BatchClock::read();
        loop {
            // A peer that sends faster than it reads its answers: stop taking its frames until
            // it has read them, so they wait in its socket, not in this member's memory.
            if !writer.has_room() {
                sn.paused.set(sn.paused.get() + 1);
                writer.flush();
                writer.room().await;
                if writer.is_closed() {
                    return Ok(());
                }
                clock.refresh();
            }
            let next = rb
                .next_frame()
                .map_err(|source| ConnError::Frame { addr: peer, source })?;
            let Some((h, payload)) = next else { break };
            batch += 1;
            if batch % BATCH_CLOCK_OPS == 0 {
                clock.refresh();
            }
            match h.kind {
                FrameKind::Request if ShardNet::is_many_request(&h) => {
                    if let Err(reason) = sn.serve_many(&h, payload, writer, &pending) {
                        return Err(ConnError::Protocol { addr: peer, reason });
                    }
                }
                FrameKind::Request if ShardNet::is_listener_request(&h) => {
                    if let Err(reason) = sn.serve_listener(&h, payload, writer, held) {
                        return Err(ConnError::Protocol { addr: peer, reason });
                    }
                }
                FrameKind::Request => {
                    out.clear();
                    let (status, close, acks) = if pending.count() >= sn.net.max_pending_acks {
                        sn.refuse_overloaded(&h, &pending, &mut out);
                        (Status::Error, None, None)
                    } else {
                        clock.apply(|| sn.run_request(&h, payload, &mut out))
                    };
                    let reply = sn.response_header(&h, status);
                    match acks {
                        None => writer
                            .push(&reply, &out)
                            .map_err(|source| ConnError::Frame { addr: peer, source })?,
                        // Answered once the sync backups acked; meanwhile the next requests run.
                        Some(acks) => {
                            let (writer, mut body) = (writer.clone(), std::mem::take(&mut out));
                            let hold = pending.hold(1);
                            let sn = sn.clone();
                            glommio::spawn_local(async move {
                                let mut reply = reply;
                                if let Err(e) = acks.await {
                                    error_response(&e, &mut body);
                                    reply = sn.response_header(&h, Status::Error);
                                }
                                drop(hold);
                                if let Err(e) = writer.push(&reply, &body) {
                                    tracing::warn!(error = %e, "response not sent");
                                }
                            })
                            .detach();
                        }
                    }
                    if let Some(reason) = close {
                        return Err(ConnError::Protocol { addr: peer, reason });
                    }
                }
                FrameKind::Control => {
                    let msg = conn::decode_control(payload, peer)?;
                    sn.on_control(msg, Some(writer));
                }
                FrameKind::Replica => {
                    if let Err(reason) = sn.on_replica(&h, payload, writer, member) {
                        return Err(ConnError::Protocol { addr: peer, reason });
                    }
                }
                FrameKind::Response | FrameKind::Event => {
                    return Err(ConnError::Protocol {
                        addr: peer,
                        reason: format!("a {:?} frame on an inbound connection", h.kind),
                    })
                }
            }
        }
        if writer.is_closed() {
            return Ok(());
        }
        // The batch's answers go now, in one send, rather than after the writer task's wake-up.
        writer.flush();
        let serial = batch <= crate::readiness::SERIAL;
        if !conn::fill_watched(&mut stream, &mut rb, peer, &watch, serial, || true).await? {
            return rb
                .finish()
                .map_err(|source| ConnError::Frame { addr: peer, source });
        }
        // What was read may have waited in the socket through a pause of this process.
        if sn.net.role == Role::Member {
            sn.check_lease(Instant::now());
        }
    }
}

impl ShardNet {
    /// Runs a request that arrived on this shard's port; returns the response status, for
    /// requests that break the protocol why the connection must close, and the sync backups'
    /// acks to await before answering.
    fn run_request(
        &self,
        h: &Header,
        payload: &[u8],
        out: &mut Bytes,
    ) -> (Status, Option<String>, Option<Acks>) {
        let partition = PartitionId(h.partition);
        let result = if h.partition >= self.partitions.get() {
            Err(OpError::NoSuchPartition {
                partition,
                count: self.partitions.get(),
            })
        } else if self.shards.shard_of(partition) != self.shard {
            Err(OpError::WrongShard {
                partition,
                shard: self.shard,
            })
        } else if !self.owns(partition) {
            Err(OpError::WrongTarget {
                partition,
                version: self.view.borrow().table.version,
            })
        } else if self.is_migrating(partition) {
            Err(OpError::Migrating { partition })
        } else {
            let call = (h.caller != 0).then_some(Call {
                id: CallId {
                    caller: h.caller,
                    call: h.correlation,
                },
                again: h.flags & frame::RETRY != 0,
            });
            extension::execute_here(
                partition,
                ServiceId(h.service),
                OpId(h.op),
                payload,
                out,
                call,
            )
        };
        match result {
            Ok(acks) => (Status::Ok, None, acks),
            Err(e) => {
                let close = matches!(
                    e,
                    OpError::UnknownOperation { .. }
                        | OpError::MalformedPayload { .. }
                        | OpError::NoSuchPartition { .. }
                )
                .then(|| e.to_string());
                error_response(&e, out);
                (Status::Error, close, None)
            }
        }
    }

    /// Answers request `h` as overloaded, into `out`.
    fn refuse_overloaded(&self, h: &Header, pending: &PendingAcks, out: &mut Bytes) {
        self.overloaded.set(self.overloaded.get() + 1);
        let e = OpError::Overloaded {
            partition: PartitionId(h.partition),
            pending: pending.count(),
        };
        error_response(&e, out);
    }

    /// The header answering request `h` with `status`.
    fn response_header(&self, h: &Header, status: Status) -> Header {
        Header {
            status: status as u16,
            correlation: h.correlation,
            partition: h.partition,
            table_version: self.view.borrow().table.version,
            service: h.service,
            op: h.op,
            ..Header::new(FrameKind::Response)
        }
    }
}

/// `e` on the wire, in place of whatever `out` held.
fn error_response(e: &OpError, out: &mut Bytes) {
    out.clear();
    match payload::encode(&WireError::from_op_error(e)) {
        Ok(bytes) => out.extend_from_slice(&bytes),
        Err(err) => tracing::warn!(error = %err, "error response not encoded"),
    }
}

impl ShardNet {
    /// A call number unique to this caller, kept across a call's retries.
    fn next_call(&self) -> u64 {
        let call = self.next_call.get().wrapping_add(1);
        self.next_call.set(call);
        call
    }

    /// The failpoint: whether to drop this backup frame.
    fn drop_backup(&self) -> bool {
        let percent = self.net.drop_backups_percent;
        if percent == 0 {
            return false;
        }
        let mut x = self.rng.get();
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.rng.set(x);
        x % 100 < u64::from(percent)
    }

    /// Sends a write's backup to the partition's backup replicas: sync ones first (their acks
    /// awaited, up to the ack timeout), then async ones (dropped when their connection has more
    /// than `async-queue-kib` queued). Frames go out now, in the order the writes ran; a backup
    /// member not connected yet is connected in the background.
    fn replicate(self: &Rc<Self>, r: Replication) -> Option<Acks> {
        let partition = r.partition;
        let wanted = usize::from(r.sync) + usize::from(r.async_);
        let (targets, table_version): (Vec<(ReplicaIndex, SocketAddr)>, u64) = {
            let view = self.view.borrow();
            let targets = view
                .table
                .backups(r.partition)
                .filter(|(index, _)| usize::from(index.0) <= wanted)
                .filter_map(|(index, id)| {
                    let m = view.members.iter().find(|m| m.id == id)?;
                    Some((index, m.shard_addr(m.shard_of(r.partition))))
                })
                .collect();
            (targets, view.table.version)
        };
        // Each sync backup's ack (or the connection to it, made in the background, then its ack).
        let mut waits: Vec<Acks> = Vec::new();
        for (index, addr) in targets {
            if self.drop_backup() {
                continue;
            }
            let sync = index.0 <= r.sync;
            let version = r.versions.get(usize::from(index.0)).copied().unwrap_or(0);
            let call = r.call.map_or(0, |c| c.call);
            let payload = encode_backup(version, call, &r.response, &r.payload);
            let header = Header {
                flags: BACKUP,
                partition: r.partition.0,
                correlation: if sync { self.next_call() } else { 0 },
                table_version,
                service: r.service.0,
                op: r.op.0,
                caller: r.call.map_or(0, |c| c.caller),
                ..Header::new(FrameKind::Replica)
            };
            let open = self
                .conns
                .borrow()
                .get(&addr)
                .filter(|c| !c.is_closed())
                .cloned();
            match open {
                Some(c) if sync => match c.start_call(header, &payload) {
                    Ok(slot) => {
                        let this = self.clone();
                        waits.push(Box::pin(async move {
                            let answer = slot.take().await;
                            this.await_backup(addr, header, payload, answer).await
                        }))
                    }
                    Err(e) => tracing::debug!(%addr, error = %e, "sync backup not sent"),
                },
                Some(c) => {
                    if c.queued() > self.net.async_queue {
                        tracing::debug!(%addr, queued = c.queued(), "async backup dropped: the backup is behind");
                    } else if let Err(e) = c.send(&header, &payload) {
                        tracing::debug!(%addr, error = %e, "async backup not sent");
                    }
                }
                None => {
                    let this = self.clone();
                    let send = async move {
                        match this.connection(addr).await {
                            Ok(c) if sync => {
                                let answer = c.call(header, &payload).await;
                                this.await_backup(addr, header, payload, answer).await
                            }
                            Ok(c) => {
                                let _ = c.send(&header, &payload);
                                Ok(())
                            }
                            Err(e) => {
                                tracing::debug!(%addr, error = %e, "backup member not reachable");
                                Ok(())
                            }
                        }
                    };
                    if sync {
                        waits.push(Box::pin(send));
                    } else {
                        glommio::spawn_local(send).detach();
                    }
                }
            }
        }
        if waits.is_empty() {
            return None;
        }
        let timeout = self.net.ack_timeout;
        Some(Box::pin(async move {
            let all = async {
                let mut answer = Ok(());
                for w in waits {
                    if let Err(e) = w.await {
                        answer = Err(e);
                    }
                }
                Ok(answer)
            };
            match glommio::timer::timeout(timeout, all).await {
                Ok(answer) => answer,
                Err(_) => {
                    tracing::warn!(%partition, ?timeout, "a sync backup did not ack in time; answering the caller anyway");
                    Ok(())
                }
            }
        }))
    }

    /// A replica frame from a partition's owner: a backup operation, or its versions. `Err`
    /// names why the connection must close.
    fn on_replica(
        self: &Rc<Self>,
        h: &Header,
        payload: &[u8],
        writer: &Rc<Writer>,
        sender: Option<MemberId>,
    ) -> Result<(), String> {
        if h.partition >= self.partitions.get()
            || self.shards.shard_of(PartitionId(h.partition)) != self.shard
        {
            return Err(format!(
                "replica frame for partition {} on {}",
                h.partition, self.shard
            ));
        }
        let mine = |p: u32| {
            p < self.partitions.get() && self.shards.shard_of(PartitionId(p)) == self.shard
        };
        match h.flags {
            BACKUP => {
                decode_backup(payload)?;
                let partition = h.partition;
                if let Some(queue) = self.syncing.borrow_mut().get_mut(&partition) {
                    queue.push(QueuedBackup {
                        header: *h,
                        payload: conn::copy(payload),
                        writer: writer.clone(),
                        sender,
                    });
                    return Ok(());
                }
                let gap = self.apply_backup(h, payload, writer, sender);
                if gap {
                    self.syncing.borrow_mut().insert(
                        partition,
                        vec![QueuedBackup {
                            header: *h,
                            payload: conn::copy(payload),
                            writer: writer.clone(),
                            sender,
                        }],
                    );
                    self.start_sync(PartitionId(partition));
                }
                Ok(())
            }
            VERSIONS => {
                let list = payload::access::<Vec<PartitionVersions>>(payload)
                    .map_err(|e| format!("malformed versions: {e}"))?;
                for pv in list.iter().filter(|pv| mine(pv.partition.to_native())) {
                    let partition = PartitionId(pv.partition.to_native());
                    let Some(replica) = self.replica_of(partition).filter(|r| r.is_backup()) else {
                        continue;
                    };
                    let mine = extension::versions(partition, replica).unwrap_or_default();
                    let differs = pv.versions.iter().any(|e| {
                        let (service, version) = (e.0.to_native(), e.1.to_native());
                        mine.iter()
                            .find(|m| m.0 == service)
                            .is_none_or(|m| m.1 != version)
                    });
                    if differs && !self.syncing.borrow().contains_key(&partition.0) {
                        tracing::debug!(%partition, %replica, "replica out of step with its owner; fetching it");
                        self.syncing.borrow_mut().insert(partition.0, Vec::new());
                        self.start_sync(partition);
                    }
                }
                Ok(())
            }
            MIGRATION => self.on_chunk(h, payload, writer),
            flags => Err(format!("unknown replica frame flags {flags}")),
        }
    }

    /// Which replica of `partition` this member holds.
    fn replica_of(&self, partition: PartitionId) -> Option<ReplicaIndex> {
        self.view
            .borrow()
            .table
            .replica_index(partition, self.net.id)
    }

    /// Applies one backup frame (validated) from member `sender` and acks it; true when it
    /// leaves a gap (not acked: the caller fetches the partition and replays it).
    ///
    /// Only the owner's backups are applied: a member that this shard's table does not name the
    /// partition's owner is refused as `WrongTarget` with this table's version (a deposed owner
    /// then fences the partition; one that is newer than this backup sends it again). Without
    /// it a backup in both the old table and the new took a deposed owner's write, which was
    /// then answered as done (the chaos run, seed 11: a put after a pause read back by nobody).
    fn apply_backup(
        &self,
        h: &Header,
        payload: &[u8],
        writer: &Rc<Writer>,
        sender: Option<MemberId>,
    ) -> bool {
        let partition = PartitionId(h.partition);
        let Ok(parts) = decode_backup(payload) else {
            return false;
        };
        let from_owner = sender.is_some() && self.view.borrow().table.owner(partition) == sender;
        let replica = self
            .replica_of(partition)
            .filter(|r| r.is_backup() && from_owner);
        let result = match replica {
            Some(replica) => {
                let call = (h.caller != 0).then_some(CallId {
                    caller: h.caller,
                    call: parts.call,
                });
                extension::apply_backup(
                    partition,
                    ServiceId(h.service),
                    OpId(h.op),
                    parts.op,
                    parts.version,
                    call,
                    parts.response,
                    replica,
                )
            }
            // Not a backup of it (yet, or any more): the owner's table and ours differ.
            None => Err(OpError::WrongTarget {
                partition,
                version: self.view.borrow().table.version,
            }),
        };
        match result {
            Ok(BackupApplied::Gap { .. }) => true,
            Ok(_) => {
                ack(writer, h, Ok(()));
                false
            }
            Err(e) => {
                tracing::debug!(%partition, error = %e, "backup not applied");
                ack(writer, h, Err(e));
                false
            }
        }
    }

    /// Fetches `partition`'s state from its owner onto this backup replica, then replays and
    /// acks the backup frames that arrived meanwhile; again while frames are still missing.
    fn start_sync(self: &Rc<Self>, partition: PartitionId) {
        self.syncing.borrow_mut().entry(partition.0).or_default();
        let this = self.clone();
        glommio::spawn_local(async move {
            for _ in 0..3 {
                match this.clone().fetch(partition).await {
                    Ok(()) => {}
                    Err(e) => tracing::debug!(%partition, error = %e, "replica not fetched"),
                }
                let queued = this
                    .syncing
                    .borrow_mut()
                    .get_mut(&partition.0)
                    .map(std::mem::take)
                    .unwrap_or_default();
                let mut missing = Vec::new();
                for q in queued {
                    if this.apply_backup(&q.header, &q.payload, &q.writer, q.sender) {
                        missing.push(q);
                    }
                }
                if missing.is_empty() {
                    this.finish_sync(partition);
                    return;
                }
                if let Some(queue) = this.syncing.borrow_mut().get_mut(&partition.0) {
                    missing.append(queue);
                    *queue = missing;
                }
            }
            // Still out of step: what still finds a gap is refused; the next anti-entropy round
            // tries again.
            this.finish_sync(partition);
        })
        .detach();
    }

    /// Ends `partition`'s sync: applies (and acks) the backup frames still queued; those that
    /// still find a gap are refused.
    fn finish_sync(&self, partition: PartitionId) {
        let rest = self
            .syncing
            .borrow_mut()
            .remove(&partition.0)
            .unwrap_or_default();
        for q in rest {
            if self.apply_backup(&q.header, &q.payload, &q.writer, q.sender) {
                ack(&q.writer, &q.header, Err(out_of_step(partition)));
            }
        }
    }

    /// Asks `partition`'s owner for its state for this member's replica slot and installs it.
    async fn fetch(self: Rc<Self>, partition: PartitionId) -> Result<(), OpError> {
        let Some(replica) = self.replica_of(partition).filter(|r| r.is_backup()) else {
            return Ok(());
        };
        let request = SyncRequest {
            partition: partition.0,
            replica: replica.0,
            namespaces: Vec::new(),
        };
        let bytes = payload::encode(&request).map_err(|e| OpError::Encode {
            what: "sync request",
            reason: e.to_string(),
        })?;
        let (service, op) = extension::sync_operation();
        let snapshot = self.clone().forward(partition, service, op, bytes).await?;
        if self.replica_of(partition) != Some(replica)
            || self.migrations.borrow().has_incoming(partition)
        {
            // The replica moved meanwhile (or a migration is installing a newer copy): this
            // answer is stale.
            return Ok(());
        }
        extension::install_snapshot(partition, replica, &snapshot)?;
        tracing::debug!(%partition, %replica, bytes = snapshot.len(), "replica fetched from the owner");
        Ok(())
    }

    /// One anti-entropy round: this shard's owned partitions' versions, to each backup replica.
    async fn send_versions(self: &Rc<Self>) {
        let mut by_addr: AHashMap<SocketAddr, Vec<PartitionVersions>> = AHashMap::new();
        {
            let view = self.view.borrow();
            for p in self.shards.partitions_of(self.shard, self.partitions) {
                if view.table.owner(p) != Some(self.net.id) {
                    continue;
                }
                for (index, id) in view.table.backups(p) {
                    let Some(m) = view.members.iter().find(|m| m.id == id) else {
                        continue;
                    };
                    let Ok(versions) = extension::versions(p, index) else {
                        continue;
                    };
                    by_addr
                        .entry(m.shard_addr(m.shard_of(p)))
                        .or_default()
                        .push(PartitionVersions {
                            partition: p.0,
                            versions,
                        });
                }
            }
        }
        for (addr, list) in by_addr {
            let Ok(bytes) = payload::encode(&list) else {
                continue;
            };
            // The header names one of the partitions: the frame is for their shard.
            let header = Header {
                flags: VERSIONS,
                partition: list.first().map_or(0, |pv| pv.partition),
                ..Header::new(FrameKind::Replica)
            };
            match self.connection(addr).await {
                Ok(c) => {
                    let _ = c.send(&header, &bytes);
                }
                Err(e) => tracing::debug!(%addr, error = %e, "versions not sent"),
            }
        }
    }
}

fn out_of_step(partition: PartitionId) -> OpError {
    OpError::Unavailable {
        partition,
        reason: "the backup replica is out of step with its owner".into(),
    }
}

/// Acks a sync backup frame (async ones, correlation 0, get none).
fn ack(writer: &Writer, h: &Header, result: Result<(), OpError>) {
    if h.correlation == 0 {
        return;
    }
    let (status, body) = match result {
        Ok(()) => (Status::Ok, Bytes::new()),
        Err(e) => (
            Status::Error,
            payload::encode(&WireError::from_op_error(&e)).unwrap_or_default(),
        ),
    };
    let reply = Header {
        status: status as u16,
        correlation: h.correlation,
        partition: h.partition,
        ..Header::new(FrameKind::Response)
    };
    if let Err(e) = writer.push(&reply, &body) {
        tracing::warn!(error = %e, "backup ack not sent");
    }
}

/// Every member shard: sends its owned partitions' versions to their backups every
/// `anti-entropy-interval-millis`, and at once after a table change.
async fn anti_entropy_loop(sn: Rc<ShardNet>) {
    let Some(interval) = sn.net.anti_entropy else {
        return;
    };
    while !sn.stopped.get() {
        let woken = glommio::timer::timeout(interval, async {
            sn.entropy.wait().await;
            Ok(())
        })
        .await
        .is_ok();
        if sn.stopped.get() {
            break;
        }
        if woken {
            // Let a burst of table changes settle into one round.
            glommio::timer::sleep(Duration::from_millis(50)).await;
        }
        sn.send_versions().await;
    }
}
