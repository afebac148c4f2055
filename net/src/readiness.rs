//! Waiting for a socket the short way (`network.poll-wait-micros`, `network.poll-spin-micros`).
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
//! Owns: the shard's [`Poller`] (a thread-local epoll set), [`Watch`] (a socket's place in it)
//! and [`read`] (read now, or after a short wait). "Nothing else to do": the shard's loop waits
//! on its doorbell ([`corecast_engine::extension::idle_bell`]), and the shard's other tasks had
//! their turn (one yield) and every connection's queued frames went out first
//! ([`Writer::flush`]): a wait never holds back an answer or a request of this shard. What it
//! can hold back is glommio's own work (timers, file I/O) by at most the configured time.

use std::cell::RefCell;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::rc::{Rc, Weak};

use crate::conn::Writer;

thread_local! {
    static POLLER: RefCell<Option<Poller>> = const { RefCell::new(None) };
    /// Reads this shard made the short way.
    static SHORT_READS: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
    /// Of those, the reads whose socket became ready while the shard spun.
    static SPUN_READS: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// Reads this shard made the short way so far (for metrics).
pub fn short_reads() -> u64 {
    SHORT_READS.with(|c| c.get())
}

/// Short reads whose socket became ready while the shard spun (for metrics).
pub fn spun_reads() -> u64 {
    SPUN_READS.with(|c| c.get())
}

/// One shard's epoll set and the writers to flush before it waits.
struct Poller {
    epoll: OwnedFd,
    wait: libc::timespec,
    /// The doorbell descriptor registered, once seen.
    bell: Option<RawFd>,
    writers: Vec<Weak<Writer>>,
    spin: Spin,
}

/// When a wait spins first, and for how long.
#[derive(Debug)]
struct Spin {
    /// At most this long (zero: never).
    limit: std::time::Duration,
    /// One bit per recent wait, newest lowest: set if it ended inside the spin.
    recent: u8,
    /// Waits so far, for the occasional try while the recent ones all slept.
    waits: u32,
}

/// While none of its last 8 waits ended inside the spin, a shard spins in one wait of this many.
const SPIN_PROBE_EVERY: u32 = 64;

impl Spin {
    fn new(limit: std::time::Duration) -> Self {
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

/// Installs the short wait on this thread (a shard's), `micros` long at most (cut short at the
/// first readiness), spinning first for up to `spin_micros` while that pays; `micros` 0 leaves
/// reads to glommio.
///
/// Errors: the epoll descriptor could not be made.
#[allow(unsafe_code)]
pub fn install(micros: u64, spin_micros: u64) -> io::Result<()> {
    if micros == 0 {
        return Ok(());
    }
    // SAFETY: a plain syscall with no pointers.
    let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh descriptor nobody else owns.
    let epoll = unsafe { OwnedFd::from_raw_fd(fd) };
    let wait = libc::timespec {
        tv_sec: (micros / 1_000_000) as libc::time_t,
        tv_nsec: ((micros % 1_000_000) * 1000) as libc::c_long,
    };
    POLLER.with(|p| {
        *p.borrow_mut() = Some(Poller {
            epoll,
            wait,
            bell: None,
            writers: Vec::new(),
            spin: Spin::new(std::time::Duration::from_micros(spin_micros.min(micros))),
        })
    });
    Ok(())
}

#[allow(unsafe_code)]
fn ctl(epoll: RawFd, op: libc::c_int, fd: RawFd) {
    let mut ev = libc::epoll_event {
        events: libc::EPOLLIN as u32,
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

/// Adds the reading descriptor of a connection to this shard's epoll set (nothing if the short
/// wait is off).
pub fn watch(fd: RawFd) -> Watch {
    POLLER.with(|p| match p.borrow().as_ref() {
        Some(p) => {
            ctl(p.epoll.as_raw_fd(), libc::EPOLL_CTL_ADD, fd);
            Watch(Some(fd))
        }
        None => Watch(None),
    })
}

impl Drop for Watch {
    fn drop(&mut self) {
        if let Some(fd) = self.0 {
            POLLER.with(|p| {
                if let Ok(p) = p.try_borrow() {
                    if let Some(p) = p.as_ref() {
                        ctl(p.epoll.as_raw_fd(), libc::EPOLL_CTL_DEL, fd);
                    }
                }
            });
        }
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

/// Waits in epoll for up to the configured time: `Some(spun)` if `fd` became readable, `spun`
/// if while spinning.
fn wait_for(fd: RawFd) -> Option<bool> {
    let bell = corecast_engine::extension::idle_bell()?;
    // Every writer's queued frames go out first: none waits behind the wait.
    let ready = POLLER.with(|p| {
        let mut p = p.borrow_mut();
        let p = p.as_mut()?;
        if p.bell != Some(bell) {
            ctl(p.epoll.as_raw_fd(), libc::EPOLL_CTL_ADD, bell);
            p.bell = Some(bell);
        }
        p.writers
            .retain(|w| w.upgrade().map(|w| w.flush()).is_some());
        let spin = p.spin.next().then_some(p.spin.limit);
        Some((p.epoll.as_raw_fd(), p.wait, spin))
    });
    let (epoll, wait, spin) = ready?;
    let mut events = [libc::epoll_event { events: 0, u64: 0 }; 16];
    let mut n = 0;
    if let Some(limit) = spin {
        let now = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        let started = std::time::Instant::now();
        loop {
            n = epoll_wait(epoll, &mut events, &now);
            if n != 0 || started.elapsed() >= limit {
                break;
            }
            std::hint::spin_loop();
        }
        let hit = n > 0;
        POLLER.with(|p| {
            if let Some(p) = p.borrow_mut().as_mut() {
                p.spin.record(hit);
            }
        });
        if hit {
            return is_readable(&events[..n as usize], fd).then_some(true);
        }
    }
    if n == 0 {
        n = epoll_wait(epoll, &mut events, &wait);
    }
    if n < 0 && io::Error::last_os_error().raw_os_error() == Some(libc::ENOSYS) {
        // A kernel before 5.11: reads go to glommio from now on.
        tracing::info!("epoll_pwait2 not supported: network.poll-wait-micros has no effect");
        POLLER.with(|p| p.borrow_mut().take());
        return None;
    }
    (n > 0 && is_readable(&events[..n as usize], fd)).then_some(false)
}

/// One `epoll_pwait2` on `epoll` for up to `wait` (zero: only asks): how many events it wrote.
#[allow(unsafe_code)]
fn epoll_wait(epoll: RawFd, events: &mut [libc::epoll_event; 16], wait: &libc::timespec) -> i32 {
    // SAFETY: `events` is writable for 16 entries and `wait` readable for the call's duration;
    // no signal mask is passed.
    unsafe { libc::epoll_pwait2(epoll, events.as_mut_ptr(), 16, wait, std::ptr::null()) }
}

/// Whether `events` say `fd` is readable.
fn is_readable(events: &[libc::epoll_event], fd: RawFd) -> bool {
    events
        .iter()
        .any(|e| e.u64 == fd as u64 && e.events & libc::EPOLLIN as u32 != 0)
}

/// At most this many requests (or calls) at a time make a connection serial: one that waits for
/// each answer before it sends more, where the round trip is the latency. Busier connections
/// read through glommio, which batches them well.
pub const SERIAL: usize = 4;

/// Reads the watched socket into `buf` now, or after a short wait while the shard has nothing
/// else to do: `Some(n)` bytes read (0 at end of stream), `None` to read through glommio
/// instead. Only for a `serial` connection (at most [`SERIAL`] requests in its last batch or
/// calls in flight); `expect` says, after the shard's other tasks ran, whether anything is
/// expected on it (an outbound connection with no call in flight waits the long way).
///
/// Errors: the socket's error.
pub async fn read(
    watch: &Watch,
    buf: &mut [u8],
    serial: bool,
    expect: impl Fn() -> bool,
) -> io::Result<Option<usize>> {
    let Some(fd) = watch.0.filter(|_| serial) else {
        return Ok(None);
    };
    // The shard's runnable tasks first: the caller woken by the last answer sends its next call.
    futures_lite::future::yield_now().await;
    // No `recv` first: epoll answers at once for a socket that is ready already.
    if !expect() {
        return Ok(None);
    }
    let Some(spun) = wait_for(fd) else {
        return Ok(None);
    };
    let read = recv_now(fd, buf)?;
    if read.is_some() {
        SHORT_READS.with(|c| c.set(c.get() + 1));
        if spun {
            SPUN_READS.with(|c| c.set(c.get() + 1));
        }
    }
    Ok(read)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

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
