//! Events from partitions to listeners: a map's entry events, a topic's messages.
//!
//! Owns: the per-shard [`EventHub`] (crate-private) of listener registrations by object, the
//! [`Events`] handle an operation or a tick publishes through, the [`EventSink`] trait a
//! registration delivers into (a local bounded channel, [`ChannelSink`], or — in the network
//! layer — the connection the subscriber registered on), and [`Listener`], the subscriber's end.
//!
//! A listener registers on every shard of every member (the network layer does the remote part
//! through [`crate::extension::Router::listen`]); a partition's owner publishes the events of its
//! operations to the registrations for the object on its shard. One shard writes one
//! registration's events in the order its operations ran, so a key's events arrive in order
//! while its partition stays put. Backups publish nothing.
//!
//! Delivery never blocks the shard: a subscriber that falls `EVENT_QUEUE` events behind loses
//! the newest (counted, and logged).

use std::cell::Cell;
use std::rc::Rc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ahash::AHashMap;

use crate::invocation::{InvocationError, Invoker};
use crate::partition::{PartitionId, ShardId};
use crate::payload::{encode, Bytes, Payload};
use crate::spi::ServiceId;

/// How many undelivered events a listener's channel holds before new ones are dropped.
pub const EVENT_QUEUE: usize = 1 << 16;

/// Milliseconds since the Unix epoch by this machine's clock: the time base of expiry times that
/// travel between members. Inside [`BatchClock::run`], the batch's reading of it.
pub fn now_millis() -> u64 {
    match BATCH_MILLIS.with(Cell::get) {
        0 => clock_millis(),
        at => at,
    }
}

fn clock_millis() -> u64 {
    // Seconds and milliseconds in u64: `Duration::as_millis` divides a u128, a third of this
    // call's cost on the 2-vCPU VM (50 ns → 34 ns), and every write reads the clock once.
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() * 1000 + u64::from(d.subsec_millis()))
}

thread_local! {
    /// The time [`now_millis`] answers while a [`BatchClock`] polls its future; 0 outside.
    static BATCH_MILLIS: Cell<u64> = const { Cell::new(0) };
}

/// One reading of the clock shared by a batch of operations that run back to back (a
/// connection's pipelined requests), as Redis snapshots its clock for a command so that all its
/// expiry checks see one time: each write stamps its entry with the time and each read checks
/// expiry against it, and a clock read per operation was 2-4 % of a pipelined INCR's or GET's
/// CPU in the member's profile (0.7 % with this). The time is only seen by what
/// [`BatchClock::apply`] and [`BatchClock::run`] run, while they run it; a future that had to
/// wait reads the clock again when it is polled anew, and the batches refresh it every
/// [`BATCH_CLOCK_OPS`] operations and after any wait of their own, so it lags the clock by at
/// most what a batch ran without waiting.
#[derive(Debug)]
pub struct BatchClock(Cell<u64>);

/// Operations a batch runs at one reading of the clock before it reads it again.
pub const BATCH_CLOCK_OPS: usize = 64;

impl BatchClock {
    /// The clock, read now.
    pub fn read() -> Self {
        Self(Cell::new(clock_millis()))
    }

    /// Reads the clock again (after the batch waited for something else).
    pub fn refresh(&self) {
        self.0.set(clock_millis());
    }

    /// Runs `f` with [`now_millis`] answering this clock's time.
    pub fn apply<R>(&self, f: impl FnOnce() -> R) -> R {
        let before = BATCH_MILLIS.with(|c| c.replace(self.0.get()));
        let r = f();
        BATCH_MILLIS.with(|c| c.set(before));
        r
    }

    /// Runs `fut` with [`now_millis`] answering this clock's time in its polls (a poll after one
    /// that returned pending reads the clock again first).
    pub async fn run<F: std::future::Future>(&self, fut: F) -> F::Output {
        let mut fut = std::pin::pin!(fut);
        let mut waited = false;
        std::future::poll_fn(|cx| {
            if waited {
                self.refresh();
            }
            let polled = self.apply(|| fut.as_mut().poll(cx));
            waited = polled.is_pending();
            polled
        })
        .await
    }
}

/// What a listener subscribes to, as sent to every shard.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListenSpec {
    /// Unique per listener (random).
    pub id: u64,
    /// The object's service.
    pub service: ServiceId,
    /// The object.
    pub name: String,
    /// Whether events carry values (keys only otherwise).
    pub values: bool,
}

/// Where a registration's events go. Runs on the publishing shard's thread.
pub trait EventSink {
    /// Delivers one archived event of `service` for `listener`; false when the subscriber is gone
    /// for good (the registration may be dropped).
    fn deliver(&self, listener: u64, service: ServiceId, event: &[u8]) -> bool;
}

/// Events a sink dropped because its subscriber is behind: counted, logged at each power of two.
#[derive(Default)]
pub struct Dropped(Cell<u64>);

impl Dropped {
    /// One more event for `listener` dropped.
    pub fn note(&self, listener: u64) {
        let n = self.0.get() + 1;
        self.0.set(n);
        if n.is_power_of_two() {
            tracing::warn!(
                listener,
                dropped = n,
                "a listener is behind: events dropped"
            );
        }
    }
}

/// A sink into a bounded channel on this machine: full drops the event (counted, logged).
pub struct ChannelSink {
    tx: flume::Sender<Bytes>,
    dropped: Dropped,
}

impl ChannelSink {
    /// A sink sending into `tx`.
    pub fn new(tx: flume::Sender<Bytes>) -> Self {
        Self {
            tx,
            dropped: Dropped::default(),
        }
    }
}

impl EventSink for ChannelSink {
    fn deliver(&self, listener: u64, _service: ServiceId, event: &[u8]) -> bool {
        let mut bytes = Bytes::with_capacity(event.len());
        bytes.extend_from_slice(event);
        match self.tx.try_send(bytes) {
            Ok(()) => true,
            Err(flume::TrySendError::Full(_)) => {
                self.dropped.note(listener);
                true
            }
            Err(flume::TrySendError::Disconnected(_)) => false,
        }
    }
}

struct Registration {
    id: u64,
    values: bool,
    sink: Rc<dyn EventSink>,
}

/// One shard's listener registrations, by object.
#[derive(Default)]
pub(crate) struct EventHub {
    /// Service → object name → registrations (nested, so a lookup borrows the name).
    objects: AHashMap<ServiceId, AHashMap<String, Vec<Registration>>>,
    names: AHashMap<u64, (ServiceId, String)>,
}

impl EventHub {
    /// Registers (or re-registers) a listener.
    pub fn add(&mut self, spec: &ListenSpec, sink: Rc<dyn EventSink>) {
        self.remove(spec.id);
        self.objects
            .entry(spec.service)
            .or_default()
            .entry(spec.name.clone())
            .or_default()
            .push(Registration {
                id: spec.id,
                values: spec.values,
                sink,
            });
        self.names
            .insert(spec.id, (spec.service, spec.name.clone()));
    }

    /// Drops a listener's registration if it delivers into `sink` (a connection that closed
    /// must not drop the registration its subscriber made anew on another).
    pub fn remove_from(&mut self, id: u64, sink: &Rc<dyn EventSink>) -> bool {
        let Some((service, name)) = self.names.get(&id) else {
            return false;
        };
        let same = |r: &Registration| {
            r.id == id && std::ptr::addr_eq(Rc::as_ptr(&r.sink), Rc::as_ptr(sink))
        };
        let registered_here = self
            .objects
            .get(service)
            .and_then(|names| names.get(name))
            .is_some_and(|list| list.iter().any(same));
        registered_here && self.remove(id)
    }

    /// Drops a listener's registration; false if there was none.
    pub fn remove(&mut self, id: u64) -> bool {
        let Some((service, name)) = self.names.remove(&id) else {
            return false;
        };
        if let Some(names) = self.objects.get_mut(&service) {
            if let Some(list) = names.get_mut(&name) {
                list.retain(|r| r.id != id);
                if list.is_empty() {
                    names.remove(&name);
                }
            }
            if names.is_empty() {
                self.objects.remove(&service);
            }
        }
        true
    }
}

/// The way an operation (as its partition's owner) or a tick publishes events. On a backup
/// replica it publishes nothing.
#[derive(Clone, Copy)]
pub struct Events<'a> {
    hub: Option<&'a EventHub>,
    service: ServiceId,
}

impl<'a> Events<'a> {
    pub(crate) fn new(hub: Option<&'a EventHub>, service: ServiceId) -> Self {
        Self { hub, service }
    }

    /// Publishes nowhere (backups, tests).
    pub fn none(service: ServiceId) -> Self {
        Self { hub: None, service }
    }

    fn registrations(&self, name: &str) -> Option<&'a [Registration]> {
        let hub = self.hub?;
        if hub.objects.is_empty() {
            return None;
        }
        hub.objects.get(&self.service)?.get(name).map(Vec::as_slice)
    }

    /// Whether anyone listens to object `name` here (skip building events otherwise).
    pub fn listening(&self, name: &str) -> bool {
        self.registrations(name).is_some_and(|r| !r.is_empty())
    }

    /// How many listeners object `name` has (each registration once, wherever it lives).
    pub fn listeners(&self, name: &str) -> usize {
        self.registrations(name).map_or(0, |r| r.len())
    }

    /// Publishes an event of object `name` to its listeners: `make(true)` for those that asked
    /// for values, `make(false)` for the others; each is built and archived at most once.
    pub fn publish<E: Payload>(&self, name: &str, make: impl Fn(bool) -> E) {
        let Some(list) = self.registrations(name) else {
            return;
        };
        let mut built: [Option<Bytes>; 2] = [None, None];
        for r in list {
            let slot = &mut built[usize::from(r.values)];
            if slot.is_none() {
                match encode(&make(r.values)) {
                    Ok(bytes) => *slot = Some(bytes),
                    Err(e) => {
                        tracing::error!(service = %self.service, error = %e, "event not encoded");
                        return;
                    }
                }
            }
            if let Some(bytes) = slot {
                r.sink.deliver(r.id, self.service, bytes);
            }
        }
    }
}

/// What a service's periodic [`crate::Service::tick`] sees for one partition.
pub struct TickContext<'a> {
    pub(crate) partition: PartitionId,
    pub(crate) owner: bool,
    pub(crate) now: u64,
    pub(crate) events: Events<'a>,
}

impl TickContext<'_> {
    /// The partition.
    pub fn partition(&self) -> PartitionId {
        self.partition
    }

    /// Whether this member owns the partition (else it holds a backup, or nothing yet).
    pub fn is_owner(&self) -> bool {
        self.owner
    }

    /// Milliseconds since the Unix epoch ([`now_millis`]), read once per tick.
    pub fn now_millis(&self) -> u64 {
        self.now
    }

    /// Publishes events (on the owner only).
    pub fn events(&self) -> &Events<'_> {
        &self.events
    }
}

/// A listener's end: archived events of one object, from every partition, as they come.
///
/// Dropping it unregisters the listener everywhere.
pub struct Listener {
    spec: ListenSpec,
    rx: flume::Receiver<Bytes>,
    invoker: Invoker,
}

impl Listener {
    /// Registers `spec` on every shard of this member, and through the network on every member
    /// of the cluster (awaited, so events of operations that start after this returns reach it).
    ///
    /// Errors: `MemberStopped` if the member stops meanwhile.
    pub async fn register(invoker: Invoker, spec: ListenSpec) -> Result<Self, InvocationError> {
        let (tx, rx) = flume::bounded(EVENT_QUEUE);
        for s in 0..invoker.shard_count().get() {
            let (spec, tx) = (spec.clone(), tx.clone());
            let remote = invoker
                .run_on(ShardId(s), move || {
                    let router = crate::shard::with_current(|core, router| {
                        core.events
                            .add(&spec, Rc::new(ChannelSink::new(tx.clone())));
                        router
                    })
                    .flatten();
                    async move {
                        if s == 0 {
                            if let Some(router) = router {
                                router.listen(spec, tx).await;
                            }
                        }
                    }
                })
                .await;
            remote?;
        }
        Ok(Self { spec, rx, invoker })
    }

    /// The listener's id.
    pub fn id(&self) -> u64 {
        self.spec.id
    }

    /// The next event, waiting for it; `None` once the member stopped.
    pub async fn next(&self) -> Option<Bytes> {
        self.rx.recv_async().await.ok()
    }

    /// The next event if one is there.
    pub fn try_next(&self) -> Option<Bytes> {
        self.rx.try_recv().ok()
    }

    /// The next event, waiting at most `timeout` (blocking the thread).
    pub fn next_timeout(&self, timeout: Duration) -> Option<Bytes> {
        self.rx.recv_timeout(timeout).ok()
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        let id = self.spec.id;
        for s in 0..self.invoker.shard_count().get() {
            let job = move || {
                let router = crate::shard::with_current(|core, router| {
                    core.events.remove(id);
                    router
                })
                .flatten();
                if s == 0 {
                    if let Some(router) = router {
                        router.unlisten(id);
                    }
                }
            };
            self.invoker.run_detached(ShardId(s), job);
        }
    }
}

/// A fresh random listener id.
pub fn random_id() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.finish() | 1
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::cell::RefCell;

    use super::*;

    #[test]
    fn a_batch_clock_holds_its_time_in_its_polls_only_and_reads_again_after_a_wait() {
        let clock = BatchClock::read();
        let at = clock.0.get();
        // Within the batch the time stands, however long the batch runs without waiting.
        let seen = futures_lite::future::block_on(clock.run(async {
            std::thread::sleep(Duration::from_millis(20));
            now_millis()
        }));
        assert_eq!(seen, at);
        // Outside it, the clock.
        assert!(now_millis() >= at + 20);
        // A future that had to wait reads the clock again when it is polled anew.
        let seen = futures_lite::future::block_on(clock.run(async {
            let before = now_millis();
            futures_lite::future::yield_now().await;
            (before, now_millis())
        }));
        assert_eq!(seen.0, at);
        assert!(seen.1 >= at + 20, "{seen:?} after {at}");
        assert_eq!(
            BATCH_MILLIS.with(Cell::get),
            0,
            "the time stays inside the polls"
        );
    }

    struct Collect(RefCell<Vec<(u64, Vec<u8>)>>);

    impl EventSink for Collect {
        fn deliver(&self, listener: u64, _: ServiceId, event: &[u8]) -> bool {
            self.0.borrow_mut().push((listener, event.to_vec()));
            true
        }
    }

    fn spec(id: u64, name: &str, values: bool) -> ListenSpec {
        ListenSpec {
            id,
            service: ServiceId(30),
            name: name.into(),
            values,
        }
    }

    #[test]
    fn publish_reaches_the_objects_registrations_building_each_form_once() {
        let mut hub = EventHub::default();
        let sink = Rc::new(Collect(RefCell::new(Vec::new())));
        hub.add(&spec(1, "a", true), sink.clone());
        hub.add(&spec(2, "a", false), sink.clone());
        hub.add(&spec(3, "a", true), sink.clone());
        hub.add(&spec(4, "b", true), sink.clone());
        let built = std::cell::Cell::new(0);
        let events = Events::new(Some(&hub), ServiceId(30));
        assert!(events.listening("a") && !events.listening("c"));
        events.publish("a", |values| {
            built.set(built.get() + 1);
            u32::from(values)
        });
        assert_eq!(built.get(), 2, "one archive per form");
        let got: Vec<u64> = sink.0.borrow().iter().map(|e| e.0).collect();
        assert_eq!(got, vec![1, 2, 3]);
        // Another service's events do not reach them; backups publish nothing.
        Events::new(Some(&hub), ServiceId(31)).publish("a", |_| 0u32);
        Events::new(None, ServiceId(30)).publish("a", |_| 0u32);
        assert_eq!(sink.0.borrow().len(), 3);
        assert!(hub.remove(1) && !hub.remove(1));
        hub.add(&spec(2, "b", true), sink.clone());
        sink.0.borrow_mut().clear();
        Events::new(Some(&hub), ServiceId(30)).publish("a", |_| 0u32);
        let got: Vec<u64> = sink.0.borrow().iter().map(|e| e.0).collect();
        assert_eq!(got, vec![3], "re-registering moves a listener");
        let other: Rc<dyn EventSink> = Rc::new(Collect(RefCell::new(Vec::new())));
        let same: Rc<dyn EventSink> = sink.clone();
        assert!(
            !hub.remove_from(3, &other),
            "only the sink it delivers into drops it"
        );
        assert!(hub.remove_from(3, &same));
        assert!(!Events::new(Some(&hub), ServiceId(30)).listening("a"));
    }
}
