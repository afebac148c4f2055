//! Waiting for sockets without glommio's io_uring: the shard's own `epoll` set, the short wait
//! of serial connections (`network.poll-wait-micros`, `network.poll-spin-micros`) and the pump
//! of busy ones (`network.poll-busy-micros`).
//!
//! A glommio executor waits for a socket through io_uring: a poll request, then on wake-up a
//! round of ring flushes, timer re-arming and a `membarrier`. On a VM that costs a serial round
//! trip 5–10 µs at each end (a raw glommio ping-pong here: 37 µs p50 against 19 µs for blocking
//! threads). So a connection that finds nothing to read, on a shard that has nothing else to do,
//! waits in `epoll_wait` instead (as redis-server does) for up to the configured time, on every
//! socket of the shard and its doorbell, and reads directly when its own socket is ready; only
//! then does its read go to glommio.
//!
//! Before it sleeps in `epoll_wait` it may spin: ask epoll without sleeping, again and again, for
//! up to `poll-spin-micros`. A thread asleep costs whoever wakes it (here the peer's `send`,
//! which runs the loopback receive) an inter-processor interrupt and the woken CPU its way out
//! of idle: about 5 µs a side on this VM, where a C ping-pong on loopback answers in 18 µs with
//! both ends sleeping, 14 µs with one spinning and 9 µs with both. The spin only pays while
//! answers come that soon, so a shard spins only while one of its last 8 waits ended inside
//! the spin (and tries once in 64 waits otherwise): over a network with longer round trips it
//! stops spinning after 8 waits and sleeps as before.
//!
//! **The pump.** A busier connection (more than [`SERIAL`] requests in its last batch), or a
//! serial one while others are parked or when its short wait was cut short by another socket,
//! parks in the same set instead of glommio's io_uring: the shard's pump task asks epoll once a
//! scheduling round without sleeping and wakes the parked connections whose sockets are ready,
//! as redis-server's event loop does. An io_uring poll per read costs the peer's `send` an
//! inter-processor interrupt whenever this shard is running (its completion is task work, which
//! the kernel signals), and a connection woken alone answers alone, so a load generator faster
//! than the shard sleeps and is woken once per batch; parked in epoll, a request costs nothing
//! until the round asks, and the connections a round wakes answer together (the Redis front
//! door's yield once before they send). Pipelined INCR through the Redis front door, 50
//! connections of 16 (per CPU-second of the member): 0.45–0.52 M through glommio, 0.58–0.62 M
//! pumped. When no parked socket was ready for `poll-busy-micros` (and that keeps happening),
//! the pump hands them back to glommio and sleeps until one parks again.
//!
//! Sockets are watched edge-triggered, and each one's readiness is cached here: set by any
//! `epoll_wait` of the shard that reports it, cleared by a read that finds the socket empty or
//! reads less than it asked (the kernel queue was drained then; more data makes a new edge). So
//! a socket whose reader is paused (a peer over its queue bound) does not keep every wait awake,
//! and a busy connection parks right after it answered without a `recv` that would mostly find
//! nothing (half the reads of a pipelined load did).
//!
//! Owns: the shard's [`Poller`] (a thread-local epoll set and readiness cache), [`Watch`] (a
//! socket's place in it), the pump, and [`read`] (read now, after a short wait, or once the pump
//! finds the socket ready). "Nothing else to do": the shard's loop waits on its doorbell
//! ([`corecast_engine::extension::idle_bell`]), and the shard's other tasks had their turn (one
//! yield) and every connection's queued frames went out first ([`Writer::flush`]): a wait never
//! holds back an answer or a request of this shard. What it can hold back is glommio's own work
//! (timers, file I/O) by at most `poll-wait-micros`.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::pin::Pin;
use std::rc::{Rc, Weak};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use ahash::AHashMap;

use crate::conn::Writer;

thread_local! {
    static POLLER: RefCell<Option<Poller>> = const { RefCell::new(None) };
    /// Reads this shard made the short way.
    static SHORT_READS: Cell<u64> = const { Cell::new(0) };
    /// Of those, the reads whose socket became ready while the shard spun.
    static SPUN_READS: Cell<u64> = const { Cell::new(0) };
    /// Reads of busy connections through the pump.
    static PUMPED_READS: Cell<u64> = const { Cell::new(0) };
}

/// Reads this shard made the short way so far (for metrics).
pub fn short_reads() -> u64 {
    SHORT_READS.with(|c| c.get())
}

/// Short reads whose socket became ready while the shard spun (for metrics).
pub fn spun_reads() -> u64 {
    SPUN_READS.with(|c| c.get())
}

/// Reads of busy connections through the pump (for metrics).
pub fn pumped_reads() -> u64 {
    PUMPED_READS.with(|c| c.get())
}

/// One shard's epoll set, its sockets' readiness, and the writers to flush before it waits.
struct Poller {
    epoll: OwnedFd,
    /// The longest wait (zero: none).
    wait: Duration,
    /// The doorbell descriptor registered, once seen.
    bell: Option<RawFd>,
    writers: Vec<Weak<Writer>>,
    spin: Spin,
    /// Watched sockets, by descriptor.
    sockets: AHashMap<RawFd, Socket>,
    /// Sockets with a connection parked on them.
    parked: usize,
    pump: Pump,
}

/// A watched socket's readiness and the connection parked on it.
struct Socket {
    /// An edge came since a read last found it drained.
    ready: bool,
    /// The connection waiting for it in the pump.
    parked: Option<Waker>,
    /// The pump handed the parked connection back to glommio.
    quiet: bool,
}

/// Why a parked connection was woken.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Woke {
    /// Its socket is ready.
    Ready,
    /// The shard's busy sockets went quiet, or the socket is not watched: read through glommio.
    Quiet,
}

/// The shard's pump: how long it keeps asking for parked sockets, and its waker.
struct Pump {
    /// Windows of rounds with nothing ready: at most `poll-busy-micros` long, opened while
    /// they pay (zero limit: no pump).
    windows: Spin,
    /// The pump task's waker while it sleeps (nothing parked).
    waker: Option<Waker>,
}

impl Poller {
    /// Records what epoll reported in `events`: the sockets ready, their parked connections
    /// into `woken`; whether `fd` was among them.
    fn record(
        &mut self,
        events: &[libc::epoll_event],
        fd: Option<RawFd>,
        woken: &mut Vec<Waker>,
    ) -> bool {
        let mut hit = false;
        for e in events {
            let ready = e.u64 as RawFd;
            let Some(socket) = self.sockets.get_mut(&ready) else {
                continue;
            };
            socket.ready = true;
            hit |= Some(ready) == fd;
            if let Some(w) = socket.parked.take() {
                self.parked -= 1;
                woken.push(w);
            }
        }
        hit
    }

    /// Flushes every writer's queued frames and says how to wait: the epoll set, the longest
    /// wait, and whether to spin first.
    fn before_wait(&mut self, bell: RawFd) -> (RawFd, Duration, Option<Duration>) {
        if self.bell != Some(bell) {
            ctl(
                self.epoll.as_raw_fd(),
                libc::EPOLL_CTL_ADD,
                bell,
                libc::EPOLLIN as u32,
            );
            self.bell = Some(bell);
        }
        self.writers
            .retain(|w| w.upgrade().map(|w| w.flush()).is_some());
        let spin = self.spin.next().then_some(self.spin.limit);
        (self.epoll.as_raw_fd(), self.wait, spin)
    }
}

/// When a wait spins first, and for how long.
#[derive(Debug)]
struct Spin {
    /// At most this long (zero: never).
    limit: Duration,
    /// One bit per recent wait, newest lowest: set if it ended inside the spin.
    recent: u8,
    /// Waits so far, for the occasional try while the recent ones all slept.
    waits: u32,
}

/// While none of its last 8 waits ended inside the spin, a shard spins in one wait of this many.
const SPIN_PROBE_EVERY: u32 = 64;

impl Spin {
    fn new(limit: Duration) -> Self {
        Self {
            limit,
            // Spins from the start, and stops after 8 waits that all outlast it.
            recent: 1,
            waits: 0,
        }
    }

    /// Whether the next wait spins.
    fn next(&mut self) -> bool {
        self.waits = self.waits.wrapping_add(1);
        !self.limit.is_zero() && (self.recent != 0 || self.waits % SPIN_PROBE_EVERY == 0)
    }

    /// What the wait that spun (or not) found: `hit` if it ended inside the spin.
    fn record(&mut self, hit: bool) {
        self.recent = self.recent << 1 | u8::from(hit);
    }
}

/// How a shard waits for its sockets (`network.poll-*-micros`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PollTimes {
    /// The longest wait in epoll (0: serial reads go to glommio, the pump never sleeps).
    pub wait_micros: u64,
    /// The spin before a wait sleeps.
    pub spin_micros: u64,
    /// How long the pump keeps sockets after a parked one was last ready (0: no pump).
    pub busy_micros: u64,
}

/// Installs the short wait and the pump on this thread (a shard's, inside its executor): waits
/// `wait_micros` long at most (cut short at the first readiness), spinning first for up to
/// `spin_micros` while that pays; the pump keeps busy connections while a parked socket was
/// ready within `busy_micros`. Both 0 leave reads to glommio.
///
/// Errors: the epoll descriptor could not be made.
#[allow(unsafe_code)]
pub fn install(times: PollTimes) -> io::Result<()> {
    if times.wait_micros == 0 && times.busy_micros == 0 {
        return Ok(());
    }
    // SAFETY: a plain syscall with no pointers.
    let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh descriptor nobody else owns.
    let epoll = unsafe { OwnedFd::from_raw_fd(fd) };
    let wait = Duration::from_micros(times.wait_micros);
    POLLER.with(|p| {
        *p.borrow_mut() = Some(Poller {
            epoll,
            wait,
            bell: None,
            writers: Vec::new(),
            spin: Spin::new(Duration::from_micros(times.spin_micros).min(wait)),
            sockets: AHashMap::new(),
            parked: 0,
            pump: Pump {
                windows: Spin::new(Duration::from_micros(times.busy_micros)),
                waker: None,
            },
        })
    });
    if times.busy_micros > 0 {
        glommio::spawn_local(pump()).detach();
    }
    Ok(())
}

#[allow(unsafe_code)]
fn ctl(epoll: RawFd, op: libc::c_int, fd: RawFd, events: u32) {
    let mut ev = libc::epoll_event {
        events,
        u64: fd as u64,
    };
    // SAFETY: `ev` is a valid event for the call's duration; a failure (a closed descriptor)
    // only leaves the set without it.
    unsafe { libc::epoll_ctl(epoll, op, fd, &mut ev) };
}

/// A socket's place in the shard's epoll set, removed on drop.
pub struct Watch(Option<RawFd>);

/// No place: reads of this socket go to glommio.
pub fn watch_none() -> Watch {
    Watch(None)
}

/// Adds the reading descriptor of a connection to this shard's epoll set (nothing if the shard
/// has none), taken as ready until a read finds it empty.
pub fn watch(fd: RawFd) -> Watch {
    POLLER.with(|p| match p.borrow_mut().as_mut() {
        Some(p) => {
            let edge = (libc::EPOLLIN | libc::EPOLLET) as u32;
            ctl(p.epoll.as_raw_fd(), libc::EPOLL_CTL_ADD, fd, edge);
            p.sockets.insert(
                fd,
                Socket {
                    ready: true,
                    parked: None,
                    quiet: false,
                },
            );
            Watch(Some(fd))
        }
        None => Watch(None),
    })
}

impl Drop for Watch {
    fn drop(&mut self) {
        let Some(fd) = self.0 else {
            return;
        };
        POLLER.with(|p| {
            let Ok(mut p) = p.try_borrow_mut() else {
                return;
            };
            let Some(p) = p.as_mut() else {
                return;
            };
            ctl(p.epoll.as_raw_fd(), libc::EPOLL_CTL_DEL, fd, 0);
            if p.sockets.remove(&fd).is_some_and(|s| s.parked.is_some()) {
                p.parked -= 1;
            }
        });
    }
}

/// Remembers a writer of this shard, so a short wait first sends what it has queued.
pub fn track(writer: &Rc<Writer>) {
    POLLER.with(|p| {
        if let Some(p) = p.borrow_mut().as_mut() {
            p.writers.retain(|w| w.strong_count() > 0);
            p.writers.push(Rc::downgrade(writer));
        }
    });
}

/// One non-blocking `recv` into `buf`: `Some(n)` read (0 at end of stream), `None` if nothing
/// is there.
#[allow(unsafe_code)]
fn recv_now(fd: RawFd, buf: &mut [u8]) -> io::Result<Option<usize>> {
    // SAFETY: `buf` is writable memory of `buf.len()` bytes for the call's duration.
    let n = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), libc::MSG_DONTWAIT) };
    if n >= 0 {
        return Ok(Some(n as usize));
    }
    let e = io::Error::last_os_error();
    match e.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted => Ok(None),
        _ => Err(e),
    }
}

/// Reads watched `fd` if its cached readiness says it may have something: `Some(n)` read, `None`
/// if not ready or empty. A read that finds it empty, or reads less than `buf` holds, clears the
/// readiness (the kernel queue was drained; more data makes a new edge).
fn read_ready(fd: RawFd, buf: &mut [u8]) -> io::Result<Option<usize>> {
    let ready = POLLER.with(|p| {
        p.borrow()
            .as_ref()
            .and_then(|p| p.sockets.get(&fd))
            .is_some_and(|s| s.ready)
    });
    if !ready {
        return Ok(None);
    }
    let read = recv_now(fd, buf);
    let drained = match &read {
        Ok(Some(n)) => *n > 0 && *n < buf.len(),
        Ok(None) => true,
        Err(_) => false,
    };
    if drained {
        POLLER.with(|p| {
            if let Some(s) = p.borrow_mut().as_mut().and_then(|p| p.sockets.get_mut(&fd)) {
                s.ready = false;
            }
        });
    }
    read
}

/// Waits in epoll, the shard having nothing else to do, for up to the configured time: spins
/// first while that pays, records what became ready and wakes those parked on it. `None` when
/// the shard's loop is not idle (or there is no epoll set, or no wait configured); else
/// `Some((hit, spun))`: whether `fd` became ready, and whether while spinning.
fn wait(fd: Option<RawFd>) -> Option<(bool, bool)> {
    let bell = corecast_engine::extension::idle_bell()?;
    // Every writer's queued frames go out first: none waits behind the wait.
    let (epoll, limit, spin) = POLLER.with(|p| {
        let mut p = p.borrow_mut();
        let p = p.as_mut()?;
        (!p.wait.is_zero()).then(|| p.before_wait(bell))
    })?;
    let mut events = [libc::epoll_event { events: 0, u64: 0 }; EVENTS];
    let mut n = 0;
    let mut spun = false;
    if let Some(spin) = spin {
        let started = Instant::now();
        loop {
            n = epoll_wait(epoll, &mut events, Duration::ZERO);
            if n != 0 || started.elapsed() >= spin {
                break;
            }
            std::hint::spin_loop();
        }
        spun = n > 0;
        POLLER.with(|p| {
            if let Some(p) = p.borrow_mut().as_mut() {
                p.spin.record(spun);
            }
        });
    }
    if n == 0 {
        n = epoll_wait(epoll, &mut events, limit);
    }
    if n < 0 && io::Error::last_os_error().raw_os_error() == Some(libc::ENOSYS) {
        // A kernel before 5.11: reads go to glommio from now on.
        tracing::info!("epoll_pwait2 not supported: network.poll-wait-micros has no effect");
        POLLER.with(|p| {
            if let Some(p) = p.borrow_mut().as_mut() {
                p.wait = Duration::ZERO;
            }
        });
        return None;
    }
    let n = n.max(0) as usize;
    let mut woken = Vec::new();
    let hit = POLLER.with(|p| {
        p.borrow_mut()
            .as_mut()
            .is_some_and(|p| p.record(&events[..n], fd, &mut woken))
    });
    for w in woken {
        w.wake();
    }
    Some((hit, spun))
}

/// Events taken from epoll per call (more stay queued for the next).
const EVENTS: usize = 64;

/// One `epoll_pwait2` on `epoll` for up to `wait` (zero: only asks): how many events it wrote.
#[allow(unsafe_code)]
fn epoll_wait(epoll: RawFd, events: &mut [libc::epoll_event; EVENTS], wait: Duration) -> i32 {
    let wait = libc::timespec {
        tv_sec: wait.as_secs() as libc::time_t,
        tv_nsec: wait.subsec_nanos() as libc::c_long,
    };
    // SAFETY: `events` is writable for `EVENTS` entries and `wait` readable for the call's
    // duration; no signal mask is passed.
    unsafe {
        libc::epoll_pwait2(
            epoll,
            events.as_mut_ptr(),
            EVENTS as i32,
            &wait,
            std::ptr::null(),
        )
    }
}

/// Asks `epoll` without sleeping (plain `epoll_wait`, on every kernel): how many events it
/// wrote.
#[allow(unsafe_code)]
fn ask(epoll: RawFd, events: &mut [libc::epoll_event; EVENTS]) -> usize {
    // SAFETY: `events` is writable for `EVENTS` entries for the call's duration.
    let n = unsafe { libc::epoll_wait(epoll, events.as_mut_ptr(), EVENTS as i32, 0) };
    n.max(0) as usize
}

/// At most this many requests (or calls) at a time make a connection serial: one that waits for
/// each answer before it sends more, where the round trip is the latency. Busier connections
/// park in the pump (or read through glommio without one).
pub const SERIAL: usize = 4;

/// Reads the watched socket into `buf`: `Some(n)` bytes read (0 at end of stream), `None` to
/// read through glommio instead. A `serial` connection (at most [`SERIAL`] requests in its
/// last batch or calls in flight) reads now or after a short wait while the shard has nothing
/// else to do; `expect` says, after the shard's other tasks ran, whether anything is expected
/// on it (an outbound connection with no call in flight waits the long way). A busier one
/// parks until the pump finds its socket ready, while the shard's sockets are busy.
///
/// Errors: the socket's error.
pub async fn read(
    watch: &Watch,
    buf: &mut [u8],
    serial: bool,
    expect: impl Fn() -> bool,
) -> io::Result<Option<usize>> {
    let Some(fd) = watch.0 else {
        return Ok(None);
    };
    // A busy connection, or a serial one while others are parked in the pump (the shard is
    // busy: a wait would only be cut short by their sockets).
    if !serial || pumping() {
        return pumped_read(fd, buf).await;
    }
    // No short wait configured (`poll-wait-micros` 0, the pump's set only): glommio reads it.
    if !POLLER.with(|p| p.borrow().as_ref().is_some_and(|p| !p.wait.is_zero())) {
        return Ok(None);
    }
    // The shard's runnable tasks first: the caller woken by the last answer sends its next call.
    futures_lite::future::yield_now().await;
    if !expect() {
        return Ok(None);
    }
    // Ready already (an edge recorded by an earlier wait): no wait.
    if let Some(n) = read_ready(fd, buf)? {
        SHORT_READS.with(|c| c.set(c.get() + 1));
        return Ok(Some(n));
    }
    let spun = match wait(Some(fd)) {
        Some((true, spun)) => spun,
        // Another of the shard's sockets is ready: many connections are active, each with
        // few requests (50 clients of one request each): the pump serves them together.
        Some((false, _)) => return pumped_read(fd, buf).await,
        None if pumping() => return pumped_read(fd, buf).await,
        None => return Ok(None),
    };
    let read = read_ready(fd, buf)?;
    if read.is_some() {
        SHORT_READS.with(|c| c.set(c.get() + 1));
        if spun {
            SPUN_READS.with(|c| c.set(c.get() + 1));
        }
    }
    Ok(read)
}

/// Whether connections are parked in this shard's pump.
fn pumping() -> bool {
    POLLER.with(|p| p.borrow().as_ref().is_some_and(|p| p.parked > 0))
}

/// Reads `fd` if it is ready, else parks it until the pump finds it ready; `None` when the shard
/// has no pump or its busy sockets went quiet (read through glommio).
async fn pumped_read(fd: RawFd, buf: &mut [u8]) -> io::Result<Option<usize>> {
    if !POLLER.with(|p| {
        p.borrow()
            .as_ref()
            .is_some_and(|p| !p.pump.windows.limit.is_zero())
    }) {
        return Ok(None);
    }
    loop {
        if let Some(n) = read_ready(fd, buf)? {
            PUMPED_READS.with(|c| c.set(c.get() + 1));
            return Ok(Some(n));
        }
        if (Park { fd, parked: false }).await == Woke::Quiet {
            return Ok(None);
        }
    }
}

/// A connection's wait in the pump: resolves to why the pump woke it. Dropped early (the
/// connection closed while it waited), it leaves the pump.
struct Park {
    fd: RawFd,
    parked: bool,
}

impl Future for Park {
    type Output = Woke;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Woke> {
        let fd = self.fd;
        let (woke, pump) = POLLER.with(|p| {
            let mut p = p.borrow_mut();
            let Some(p) = p.as_mut() else {
                return (Some(Woke::Quiet), None);
            };
            let Some(socket) = p.sockets.get_mut(&fd) else {
                return (Some(Woke::Quiet), None);
            };
            let woke = if socket.ready {
                Some(Woke::Ready)
            } else if std::mem::take(&mut socket.quiet) {
                Some(Woke::Quiet)
            } else {
                None
            };
            if woke.is_some() {
                if socket.parked.take().is_some() {
                    p.parked -= 1;
                }
                return (woke, None);
            }
            match &mut socket.parked {
                Some(w) => w.clone_from(cx.waker()),
                None => {
                    socket.parked = Some(cx.waker().clone());
                    p.parked += 1;
                }
            }
            (None, p.pump.waker.take())
        });
        if let Some(pump) = pump {
            pump.wake();
        }
        self.parked = woke.is_none();
        woke.map_or(Poll::Pending, Poll::Ready)
    }
}

impl Drop for Park {
    fn drop(&mut self) {
        if !self.parked {
            return;
        }
        POLLER.with(|p| {
            let Ok(mut p) = p.try_borrow_mut() else {
                return;
            };
            let Some(p) = p.as_mut() else {
                return;
            };
            if let Some(socket) = p.sockets.get_mut(&self.fd) {
                if socket.parked.take().is_some() {
                    p.parked -= 1;
                }
            }
        });
    }
}

/// Rounds between the pump's yields that let glommio poll its rings (see the shard loop's).
const PUMP_REACTOR_EVERY: u32 = 8;

/// What one round of the pump found.
enum Round {
    /// Nothing parked any more: sleep until a connection parks.
    Idle,
    /// It woke parked connections, or keeps waiting for one.
    Again,
}

/// The shard's pump: while connections are parked, asks epoll once a scheduling round without
/// sleeping and wakes those whose sockets are ready; asleep (no syscall) while none is parked.
///
/// A round that finds none ready starts a window: the pump keeps asking, round after round,
/// for up to `poll-busy-micros`, then hands every parked connection back to glommio. It never
/// sleeps in epoll itself: glommio's main ring (the doorbell, timers, completions) is polled only
/// when no task is runnable, so the shard must go idle in glommio. Like the short wait's spin,
/// the window only opens while it pays: while one of the last 8 windows ended with a ready
/// socket (and in one window of 64 otherwise). A load that answers within the window (a
/// pipelined client faster than the shard) keeps its connections here; one that leaves longer
/// gaps (a client slower than the shard) sends them back to glommio at once.
async fn pump() {
    let mut events = [libc::epoll_event { events: 0, u64: 0 }; EVENTS];
    let mut woken: Vec<Waker> = Vec::new();
    let mut rounds: u32 = 0;
    // When the current window (rounds with nothing ready) opened, and how long it lasts.
    let mut window: Option<(Instant, Duration)> = None;
    loop {
        let awake = std::future::poll_fn(|cx| {
            POLLER.with(|p| match p.borrow_mut().as_mut() {
                None => Poll::Ready(false),
                Some(p) if p.parked == 0 => {
                    p.pump.waker = Some(cx.waker().clone());
                    Poll::Pending
                }
                Some(_) => Poll::Ready(true),
            })
        });
        if !awake.await {
            return;
        }
        let round = POLLER.with(|p| {
            let mut p = p.borrow_mut();
            let Some(p) = p.as_mut() else {
                return Round::Idle;
            };
            let n = ask(p.epoll.as_raw_fd(), &mut events);
            p.record(&events[..n], None, &mut woken);
            let pump = &mut p.pump;
            if !woken.is_empty() {
                if window.take().is_some_and(|(_, limit)| !limit.is_zero()) {
                    pump.windows.record(true);
                }
                return Round::Again;
            }
            let now = Instant::now();
            let (opened, limit) = *window.get_or_insert_with(|| {
                let limit = if pump.windows.next() {
                    pump.windows.limit
                } else {
                    Duration::ZERO
                };
                (now, limit)
            });
            if now.duration_since(opened) < limit {
                return Round::Again;
            }
            // Nothing ready for the window: every parked connection reads through glommio.
            if !limit.is_zero() {
                pump.windows.record(false);
            }
            window = None;
            for socket in p.sockets.values_mut() {
                if let Some(w) = socket.parked.take() {
                    socket.quiet = true;
                    woken.push(w);
                }
            }
            p.parked = 0;
            Round::Idle
        });
        for w in woken.drain(..) {
            w.wake();
        }
        if let Round::Again = round {
            rounds = rounds.wrapping_add(1);
            if rounds % PUMP_REACTOR_EVERY == 0 {
                yield_to_reactor().await;
            } else {
                futures_lite::future::yield_now().await;
            }
        }
    }
}

/// Lets the shard's other tasks run and then glommio poll its rings before this task runs
/// again. A plain yield keeps glommio's task queue runnable, and it polls its rings only when
/// none is or at the preempt tick (`preempt-timer-micros`, 10 ms): connections the pump handed
/// back to glommio waited that long for their reads under a steady load (p99 8–10 ms for 50
/// clients of one request each, 0.8 ms with this). A timer already due when first polled
/// completes without yielding (glommio compares the clock at the first poll), so a nanosecond
/// would not do: [`REACTOR_YIELD`] is due only after the tasks ready now ran and glommio made
/// its pass.
async fn yield_to_reactor() {
    glommio::timer::sleep(REACTOR_YIELD).await;
}

/// See [`yield_to_reactor`]: longer than a first poll takes, short enough not to hold an idle
/// shard back.
const REACTOR_YIELD: Duration = Duration::from_micros(2);

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};
    use std::time::Duration;

    use super::*;

    /// Runs `f` on an executor of its own, as a shard with the pump (and no short wait).
    fn on_shard<F, Fut>(busy_micros: u64, f: F)
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = ()> + 'static,
    {
        glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
            .io_memory(512 << 10)
            .spawn(move || async move {
                install(PollTimes {
                    wait_micros: 0,
                    spin_micros: 0,
                    busy_micros,
                })
                .unwrap();
                f().await;
            })
            .unwrap()
            .join()
            .unwrap();
    }

    /// A connected pair on loopback: the reading end (non-blocking) and the writing end.
    fn pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        server.set_nonblocking(true).unwrap();
        client.set_nodelay(true).unwrap();
        (server, client)
    }

    fn parked() -> usize {
        POLLER.with(|p| p.borrow().as_ref().map_or(0, |p| p.parked))
    }

    #[test]
    fn a_busy_read_parks_until_the_pump_finds_its_socket_ready() {
        on_shard(1000, || async {
            let (server, mut client) = pair();
            let watch = watch(server.as_raw_fd());
            let mut buf = [0u8; 64];
            // The byte is written by another task once the read parked; the pump's next round
            // finds it. A window that closed before that (this thread descheduled for 1 ms)
            // hands the read to glommio instead: then the byte is read here and it tries again.
            let mut woken = false;
            for attempt in 0..10u8 {
                let before = pumped_reads();
                let writer = glommio::spawn_local(async move {
                    futures_lite::future::yield_now().await;
                    client.write_all(&[attempt]).unwrap();
                    client
                });
                let read = read(&watch, &mut buf, false, || true).await.unwrap();
                client = writer.await;
                assert_eq!(parked(), 0, "nothing stays parked after a read");
                match read {
                    Some(1) => {
                        assert_eq!(buf[0], attempt);
                        assert_eq!(pumped_reads(), before + 1);
                        woken = true;
                        break;
                    }
                    None => {
                        let mut byte = [0u8; 1];
                        let mut s = &server;
                        s.set_nonblocking(false).unwrap();
                        s.read_exact(&mut byte).unwrap();
                        s.set_nonblocking(true).unwrap();
                        assert_eq!(byte[0], attempt);
                    }
                    other => panic!("read {other:?}"),
                }
            }
            assert!(woken, "the pump never woke the parked read");
        });
    }

    /// With the pump and no short wait (`poll-wait-micros` 0), a serial read is glommio's even
    /// when its socket has data: no short-wait read is made or counted.
    #[test]
    fn without_the_short_wait_a_serial_read_goes_to_glommio() {
        on_shard(100, || async {
            let (server, mut client) = pair();
            let watch = watch(server.as_raw_fd());
            client.write_all(b"x").unwrap();
            std::thread::sleep(Duration::from_millis(10));
            let before = short_reads();
            let mut buf = [0u8; 64];
            let read = read(&watch, &mut buf, true, || true).await.unwrap();
            assert_eq!(read, None, "read through glommio");
            assert_eq!(short_reads(), before);
        });
    }

    #[test]
    fn a_busy_read_with_nothing_coming_goes_back_to_glommio_after_the_window() {
        on_shard(300, || async {
            let (server, _client) = pair();
            let watch = watch(server.as_raw_fd());
            let mut buf = [0u8; 64];
            let started = Instant::now();
            let read = futures_lite::future::or(
                async { Some(read(&watch, &mut buf, false, || true).await.unwrap()) },
                async {
                    glommio::timer::sleep(Duration::from_secs(10)).await;
                    None
                },
            )
            .await;
            assert_eq!(
                read,
                Some(None),
                "the read neither went back to glommio nor read"
            );
            assert!(started.elapsed() >= Duration::from_micros(300));
            assert_eq!(parked(), 0);
            assert_eq!(pumped_reads(), 0);
        });
    }

    #[test]
    fn a_parked_read_that_is_dropped_leaves_the_pump() {
        on_shard(1000, || async {
            let (server, _client) = pair();
            let watch = watch(server.as_raw_fd());
            let mut buf = [0u8; 64];
            // The read parks; the other side of the race resolves first and drops it.
            let raced = futures_lite::future::or(
                async {
                    read(&watch, &mut buf, false, || true).await.unwrap();
                    false
                },
                async {
                    futures_lite::future::yield_now().await;
                    true
                },
            )
            .await;
            assert!(raced);
            assert_eq!(parked(), 0);
        });
    }

    #[test]
    fn a_shard_spins_while_recent_waits_end_inside_the_spin_and_then_only_tries_now_and_then() {
        let mut spin = Spin::new(Duration::from_micros(50));
        // Answers that come within the spin keep it spinning.
        for _ in 0..100 {
            assert!(spin.next());
            spin.record(true);
        }
        // Eight waits in a row that outlast it, and it sleeps at once from then on...
        for _ in 0..8 {
            assert!(spin.next());
            spin.record(false);
        }
        let spun: Vec<bool> = (0..2 * SPIN_PROBE_EVERY)
            .map(|_| {
                let s = spin.next();
                if s {
                    spin.record(false);
                }
                s
            })
            .collect();
        // ... but for one try in every 64 waits.
        assert_eq!(spun.iter().filter(|&&s| s).count(), 2, "{spun:?}");
        // A try that ends inside the spin starts it again.
        while !spin.next() {}
        spin.record(true);
        assert!(spin.next());
        // A limit of zero never spins.
        let mut never = Spin::new(Duration::ZERO);
        assert!((0..200).all(|_| !never.next()));
    }
}
