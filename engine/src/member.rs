//! The embedded API: start a member from a config, get distributed objects by name, run work on
//! its shards, shut it down.
//!
//! Owns: [`MemberBuilder`] (config + compiled-in services), [`Member`] (async handle),
//! [`BlockingMember`] (the same for callers without an async runtime) and [`StartError`].
//! Starting spawns one glommio executor per shard and waits until every shard has started its
//! services; shutting down asks every shard to shut its services down and joins the threads.
//!
//! # Examples
//!
//! ```
//! use corecast_engine::{BlockingMember, Config};
//!
//! let config = Config { shards: Some(2), ..Config::default() };
//! let member = BlockingMember::builder(config).start_blocking()?;
//! assert_eq!(member.member().invoker().shard_count().get(), 2);
//! member.shutdown();
//! # Ok::<(), corecast_engine::StartError>(())
//! ```

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use crate::config::{Config, ConfigError};
use crate::extension::Extension;
use crate::invocation::{InvocationError, Invoker};
use crate::object::{self, ObjectHandle};
use crate::partition::{PartitionCount, ShardCount, ShardId};
use crate::registry::ServiceFactory;
use crate::shard::{self, ShardLink, ShardMsg, ShardSpec, ShardThread};
use crate::spi::{DistributedObject, MemberInfo, Service};

/// Why a member did not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The config enables a service that is not compiled into this binary.
    #[error("config names service `{name}`, which is not compiled in (known: {known})")]
    UnknownService {
        /// The name in `[[services]]`.
        name: String,
        /// The registered services.
        known: String,
    },
    /// Two registered services share a name or an id.
    #[error("services `{first}` and `{second}` share the name or id {id}")]
    DuplicateService {
        /// The service registered first.
        first: &'static str,
        /// The service registered second.
        second: &'static str,
        /// The shared id.
        id: u16,
    },
    /// Two operations of one service share an id.
    #[error("service `{service}`: operations {first} and {second} share op id {id}")]
    DuplicateOperation {
        /// The service.
        service: &'static str,
        /// The operation registered first.
        first: &'static str,
        /// The operation registered second.
        second: &'static str,
        /// The shared id.
        id: u16,
    },
    /// A service's `init` failed on a shard.
    #[error("service `{service}` failed to start on {shard}: {reason}")]
    ServiceInit {
        /// The service.
        service: String,
        /// The shard it failed on.
        shard: ShardId,
        /// The service's reason.
        reason: String,
    },
    /// The shards would lock more memory than `ulimit -l` allows.
    #[error(
        "the shards need {needed} bytes of locked memory for io_uring (io-memory-kib × shards) \
         but `ulimit -l` allows {limit}: raise it (ulimit -l, or memlock in limits.conf) or \
         lower io-memory-kib / shards"
    )]
    LockedMemory {
        /// Bytes the shards would lock.
        needed: u64,
        /// The soft RLIMIT_MEMLOCK in bytes.
        limit: u64,
    },
    /// The operating system refused a resource the member needs (a socket pair, a thread).
    #[error("cannot start the member: {what}: {reason}")]
    Resource {
        /// What could not be created.
        what: &'static str,
        /// The system's reason.
        reason: String,
    },
    /// The network layer could not start (its reason names the address or setting).
    #[error("cannot start the network: {0}")]
    Network(String),
    /// glommio could not create a shard's executor.
    #[error("cannot start the executor of {shard}: {reason}")]
    Executor {
        /// The shard.
        shard: ShardId,
        /// glommio's reason.
        reason: String,
    },
}

/// Collects the config and the compiled-in services, then starts a member.
pub struct MemberBuilder {
    config: Config,
    factories: Vec<ServiceFactory>,
    extension: Option<Arc<dyn Extension>>,
    id: u64,
}

impl MemberBuilder {
    /// Sets the member's id (the network layer gives its own; random by default).
    pub fn id(mut self, id: u64) -> Self {
        self.id = id;
        self
    }

    /// Installs a layer above the engine (the network), started on every shard.
    pub fn extension(mut self, extension: Arc<dyn Extension>) -> Self {
        self.extension = Some(extension);
        self
    }

    /// The config the member will start with.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Compiles service `S` in. The config may disable it or give it properties by `S::NAME`.
    pub fn service<S: Service>(mut self) -> Self {
        self.factories.push(ServiceFactory::of::<S>());
        self
    }

    /// Starts the member: validates the config, checks locked memory, starts every shard and
    /// every enabled service on it, and returns once all shards serve.
    ///
    /// Errors: a [`StartError`] naming the config key, service or shard at fault. Shards already
    /// started are stopped again.
    pub async fn start(self) -> Result<Member, StartError> {
        let extension = self.extension.clone();
        let id = self.id;
        let (config, factories) = self.checked()?;
        let shards = ShardCount::new(config.shard_count()).ok_or_else(|| invalid("shards", "0"))?;
        let partitions = PartitionCount::new(config.partition_count)
            .ok_or_else(|| invalid("partition-count", "0"))?;
        crate::memlock::check(config.io_memory_bytes() as u64 * u64::from(shards.get()))?;
        let member = MemberInfo {
            id,
            cluster_name: config.cluster_name.clone(),
            address: config.network.bind,
        };
        let mut links = Vec::new();
        let mut receivers = Vec::new();
        for _ in 0..shards.get() {
            let (link, queues) =
                ShardLink::new(config.shard_queue_capacity as usize).map_err(|e| {
                    StartError::Resource {
                        what: "a shard's doorbell socket pair",
                        reason: e.to_string(),
                    }
                })?;
            links.push(link);
            receivers.push(queues);
        }
        let invoker = Invoker::new(links.clone(), shards, partitions, member.clone());
        crate::kick::install();
        let ticker = Ticker::start(invoker.clone(), config.wake_tick())?;
        let mut started = Member {
            invoker,
            threads: Vec::new(),
            stopped: false,
            extension: extension.clone(),
            ticker: Some(ticker),
        };
        let mut ready = Vec::new();
        for ((index, queues), link) in receivers.into_iter().enumerate().zip(links) {
            let shard = ShardId(index as u32);
            let spec = ShardSpec {
                token: started.invoker.token(),
                shard,
                shards,
                partitions,
                member: member.clone(),
                factories: factories.clone(),
                config: config.clone(),
                link,
                invoker: started.invoker.clone(),
                extension: extension.clone(),
            };
            let (tx, rx) = oneshot::channel();
            let placement = shard::placement(&config, shard, shards);
            started
                .threads
                .push(shard::spawn(spec, queues, tx, placement)?);
            ready.push((shard, rx));
        }
        for (shard, rx) in ready {
            let outcome = rx.await.unwrap_or_else(|_| {
                Err(StartError::Executor {
                    shard,
                    reason: "the shard's thread ended while starting".into(),
                })
            });
            if let Err(e) = outcome {
                started.stop(true).await;
                return Err(e);
            }
        }
        tracing::info!(
            cluster = %member.cluster_name,
            address = %member.address,
            shards = shards.get(),
            partitions = partitions.get(),
            services = %factories.iter().map(|f| f.name).collect::<Vec<_>>().join(","),
            "member started"
        );
        Ok(started)
    }

    /// Starts the member from a thread without an async runtime.
    ///
    /// Errors: as [`MemberBuilder::start`].
    pub fn start_blocking(self) -> Result<BlockingMember, StartError> {
        futures_lite::future::block_on(self.start()).map(|member| BlockingMember { member })
    }

    /// The validated config and the factories of the enabled services.
    fn checked(self) -> Result<(Config, Vec<ServiceFactory>), StartError> {
        self.config.validate()?;
        for (i, f) in self.factories.iter().enumerate() {
            if let Some(first) = self.factories[..i]
                .iter()
                .find(|g| g.name == f.name || g.id == f.id)
            {
                return Err(StartError::DuplicateService {
                    first: first.name,
                    second: f.name,
                    id: f.id.0,
                });
            }
            if let Some((id, first, second)) = f.duplicate_op() {
                return Err(StartError::DuplicateOperation {
                    service: f.name,
                    first,
                    second,
                    id: id.0,
                });
            }
        }
        for declared in &self.config.services {
            if !self.factories.iter().any(|f| f.name == declared.name) {
                return Err(StartError::UnknownService {
                    name: declared.name.clone(),
                    known: self
                        .factories
                        .iter()
                        .map(|f| f.name)
                        .collect::<Vec<_>>()
                        .join(", "),
                });
            }
        }
        let config = self.config;
        let enabled = self
            .factories
            .into_iter()
            .filter(|f| config.service(f.name).is_none_or(|s| s.enabled))
            .collect();
        Ok((config, enabled))
    }
}

fn invalid(key: &str, value: &str) -> StartError {
    StartError::Config(ConfigError::Invalid {
        key: key.into(),
        value: value.into(),
        reason: "must be at least 1".into(),
    })
}

/// A running member, for async callers (any runtime: the futures only await channels).
pub struct Member {
    invoker: Invoker,
    threads: Vec<ShardThread>,
    stopped: bool,
    extension: Option<Arc<dyn Extension>>,
    ticker: Option<Ticker>,
}

impl Member {
    /// A builder for a member with `config`; add services with [`MemberBuilder::service`].
    pub fn builder(config: Config) -> MemberBuilder {
        MemberBuilder {
            config,
            factories: Vec::new(),
            extension: None,
            id: crate::events::random_id(),
        }
    }

    /// The distributed object `name` of `T`'s service, created on first use.
    ///
    /// Errors: `Operation` with `UnknownService` when the service is not running here;
    /// `MemberStopped` after shutdown.
    pub async fn object<T: DistributedObject>(&self, name: &str) -> Result<T, InvocationError> {
        let handle = ObjectHandle::open::<T::Service>(self.invoker.clone(), name).await?;
        Ok(T::from_handle(handle))
    }

    /// Destroys object `name` of service `S`: its record and its state in every partition.
    ///
    /// Errors: as [`Member::object`].
    pub async fn destroy_object<S: Service>(&self, name: &str) -> Result<(), InvocationError> {
        object::destroy(&self.invoker, S::ID, name).await
    }

    /// The names of service `S`'s objects, sorted.
    ///
    /// Errors: as [`Member::object`].
    pub async fn objects<S: Service>(&self) -> Result<Vec<String>, InvocationError> {
        object::list(&self.invoker, S::ID).await
    }

    /// The invoker, to send operations directly (and to clone into other threads).
    pub fn invoker(&self) -> &Invoker {
        &self.invoker
    }

    /// The installed extension (the network layer), as its concrete type.
    pub fn extension<T: Extension>(&self) -> Option<&T> {
        self.extension.as_deref()?.as_any().downcast_ref::<T>()
    }

    /// Drops all state: calls every service's `reset` on every shard, clears every container and
    /// forgets every object, as Hazelcast does to a member that rejoins after a split brain.
    ///
    /// Errors: `MemberStopped` after shutdown.
    pub async fn reset(&self) -> Result<(), InvocationError> {
        let mut acks = Vec::new();
        for index in 0..self.threads.len() {
            let (done, ack) = oneshot::channel();
            self.invoker
                .send(ShardId(index as u32), ShardMsg::Reset(done))
                .await?;
            acks.push(ack);
        }
        for ack in acks {
            ack.await.map_err(|_| InvocationError::MemberStopped)?;
        }
        Ok(())
    }

    /// Shuts every service down on every shard, then stops the shards' threads.
    pub async fn shutdown(mut self) {
        self.stop(false).await;
    }

    /// Stops at once, as a crash would: no goodbye to the cluster (the others notice through
    /// their failure detector), services told `terminate`.
    pub async fn terminate(mut self) {
        self.stop(true).await;
    }

    async fn stop(&mut self, terminate: bool) {
        if let Some(extension) = self.extension.clone() {
            if !terminate {
                extension.before_stop(&self.invoker).await;
            }
        }
        for index in 0..self.threads.len() {
            let msg = ShardMsg::Shutdown { terminate };
            // A shard that already ended (its init failed) has no one to read this.
            let _ = self.invoker.send(ShardId(index as u32), msg).await;
        }
        for thread in &self.threads {
            let _ = thread.exited.recv_async().await;
        }
        self.join();
    }

    fn join(&mut self) {
        self.stopped = true;
        for thread in self.threads.drain(..) {
            if thread.join.join().is_err() {
                tracing::warn!("a shard's thread panicked");
            }
        }
        if let Some(ticker) = self.ticker.take() {
            ticker.stop();
        }
        if let Some(extension) = &self.extension {
            extension.stopped();
        }
        tracing::info!(address = %self.invoker.member().address, "member stopped");
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        if self.stopped {
            return;
        }
        for index in 0..self.threads.len() {
            let msg = ShardMsg::Shutdown { terminate: true };
            self.invoker.send_blocking(ShardId(index as u32), msg);
        }
        self.join();
    }
}

/// A running member for callers without an async runtime: every call blocks the calling thread.
pub struct BlockingMember {
    member: Member,
}

impl From<Member> for BlockingMember {
    fn from(member: Member) -> Self {
        BlockingMember { member }
    }
}

impl BlockingMember {
    /// A builder for a member with `config`; finish it with [`MemberBuilder::start_blocking`].
    pub fn builder(config: Config) -> MemberBuilder {
        Member::builder(config)
    }

    /// The distributed object `name` of `T`'s service, created on first use.
    ///
    /// Errors: as [`Member::object`].
    pub fn object<T: DistributedObject>(&self, name: &str) -> Result<T, InvocationError> {
        self.block_on(self.member.object::<T>(name))
    }

    /// Waits for `future` on this thread, for example a proxy call: `m.block_on(counter.inc(1))`.
    pub fn block_on<F: Future>(&self, future: F) -> F::Output {
        futures_lite::future::block_on(future)
    }

    /// The async member underneath.
    pub fn member(&self) -> &Member {
        &self.member
    }

    /// Shuts the member down and waits for its shards to stop.
    pub fn shutdown(self) {
        futures_lite::future::block_on(self.member.shutdown());
    }

    /// Stops at once, as a crash would (see [`Member::terminate`]).
    pub fn terminate(self) {
        futures_lite::future::block_on(self.member.terminate());
    }
}

/// Rings every waiting shard's doorbell each `wake-tick`, so a shard asleep in io_uring runs its
/// glommio timers and foreign task wake-ups (which this kernel may not deliver to a sleeping
/// executor, see [`crate::doorbell`]) at most one tick late; signals a shard whose loop stood
/// still for several ticks without waiting (glommio asleep with runnable tasks, see
/// [`crate::kick`]).
struct Ticker {
    stop: flume::Sender<()>,
    thread: std::thread::JoinHandle<()>,
}

impl Ticker {
    fn start(invoker: Invoker, tick: Duration) -> Result<Ticker, StartError> {
        let (stop, stopped) = flume::bounded::<()>(1);
        let thread = std::thread::Builder::new()
            .name("corecast-ticker".into())
            .spawn(move || {
                let mut seen = Vec::new();
                while let Err(flume::RecvTimeoutError::Timeout) = stopped.recv_timeout(tick) {
                    let kicked = invoker.tick(&mut seen);
                    if kicked > 0 {
                        tracing::debug!(shards = kicked, "signalled stalled shards");
                    }
                }
            })
            .map_err(|e| StartError::Resource {
                what: "the ticker thread",
                reason: e.to_string(),
            })?;
        Ok(Ticker { stop, thread })
    }

    fn stop(self) {
        drop(self.stop);
        if self.thread.join().is_err() {
            tracing::warn!("the ticker thread panicked");
        }
    }
}
