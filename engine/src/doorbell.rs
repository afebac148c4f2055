//! Waking a shard from another thread: a doorbell on the shard's main io_uring ring.
//!
//! Owns: [`Doorbell`] (the sender side, shared by every thread that sends to the shard) and
//! [`Bell`] (the shard's side, a glommio Unix socket it awaits).
//!
//! Why not glommio's own cross-thread wake: glommio wakes a parked executor through an eventfd
//! read on its *latency* ring, and sleeps on its *main* ring with a poll on the latency ring's fd.
//! On this kernel that link sometimes never fires, and the executor sleeps with work pending
//! (glommio issues #326, #494, #547; reproduced here). Socket readiness, on the other hand, is a
//! poll on the main ring, which does wake it. So a shard awaits a read on one end of a Unix socket
//! pair, and a sender writes one byte to the other end, only when the shard said it is waiting
//! (`armed`), so a busy shard costs its senders no syscall. A ticker thread rings every armed bell
//! each `wake-tick`, which bounds how long a glommio timer or a foreign task wake can be missed
//! by a sleeping shard.
//!
//! The protocol is Dekker's: the sender publishes the message, then (SeqCst fence) reads
//! `armed`; the shard sets `armed`, then (SeqCst fence) looks at its queues once more before it
//! sleeps. One of the two always sees the other.

use std::io::{self, Write};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{fence, AtomicBool, AtomicI32, AtomicU32, Ordering};

use futures_lite::AsyncReadExt;

/// The sender side of a shard's doorbell.
#[derive(Debug)]
pub(crate) struct Doorbell {
    armed: AtomicBool,
    tx: UnixStream,
    /// The shard loop's round count (wrapping), stored by the shard each round: the ticker's
    /// sign that the shard's tasks run ([`crate::kick`]).
    rounds: AtomicU32,
    /// The shard thread's kernel id while it runs (0: not started or ended).
    thread: AtomicI32,
}

/// What the ticker last saw of one shard: its rounds, and for how many ticks they stood still.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Watch {
    rounds: u32,
    still: u32,
}

impl Doorbell {
    /// A doorbell and the shard's end of it (to move into the shard's thread).
    pub fn pair() -> io::Result<(Doorbell, UnixStream)> {
        let (tx, rx) = UnixStream::pair()?;
        tx.set_nonblocking(true)?;
        rx.set_nonblocking(true)?;
        Ok((
            Doorbell {
                armed: AtomicBool::new(false),
                tx,
                rounds: AtomicU32::new(0),
                thread: AtomicI32::new(0),
            },
            rx,
        ))
    }

    /// Wakes the shard if it is waiting. Call after the message is in the shard's queue.
    pub fn ring(&self) {
        fence(Ordering::SeqCst);
        if self.armed.load(Ordering::Relaxed) && self.armed.swap(false, Ordering::AcqRel) {
            // A full socket buffer means the shard has wake-ups waiting already.
            let _ = (&self.tx).write(&[1]);
        }
    }

    /// The shard's thread: `tid` from its start, 0 when it ends.
    pub fn set_thread(&self, tid: i32) {
        self.thread.store(tid, Ordering::Relaxed);
    }

    /// The shard's loop ran round `n` (a plain store: only the shard writes it).
    pub fn round(&self, n: u32) {
        self.rounds.store(n, Ordering::Relaxed);
    }

    /// The ticker's visit: rings the shard if it waits; otherwise, if its loop has not gone
    /// round for [`crate::kick::STALLED_TICKS`] ticks (glommio asleep with its tasks
    /// runnable, or one long task), signals its thread. Whether it signalled.
    pub fn tick(&self, seen: &mut Watch) -> bool {
        let rounds = self.rounds.load(Ordering::Relaxed);
        if self.armed.load(Ordering::Relaxed) || rounds != seen.rounds {
            *seen = Watch { rounds, still: 0 };
            self.ring();
            return false;
        }
        seen.still += 1;
        if seen.still % crate::kick::STALLED_TICKS != 0 {
            return false;
        }
        match self.thread.load(Ordering::Relaxed) {
            0 => false,
            tid => {
                crate::kick::kick(tid);
                true
            }
        }
    }
}

/// The shard's end of its doorbell.
pub(crate) struct Bell {
    rx: glommio::net::UnixStream,
    /// `rx`'s descriptor (glommio's stream does not tell it).
    fd: std::os::fd::RawFd,
    buf: [u8; 64],
}

impl Bell {
    /// Wraps the shard's end; call on the shard's thread.
    pub fn new(rx: UnixStream) -> Self {
        let fd = std::os::fd::AsRawFd::as_raw_fd(&rx);
        Self {
            rx: into_glommio(rx),
            fd,
            buf: [0; 64],
        }
    }

    /// Waits until `doorbell` is rung, unless `has_work` says there is work once armed.
    pub async fn wait(&mut self, doorbell: &Doorbell, has_work: impl Fn() -> bool) {
        doorbell.armed.store(true, Ordering::SeqCst);
        fence(Ordering::SeqCst);
        if has_work() {
            doorbell.armed.store(false, Ordering::Relaxed);
            return;
        }
        // One read takes up to 64 rings; more left over only make the next wait return at once.
        let _idle = Idle::set(self.fd);
        match self.rx.read(&mut self.buf).await {
            Ok(_) => {}
            Err(e) => {
                // Only possible if the socket pair broke: fall back to polling on a timer.
                tracing::warn!(error = %e, "shard doorbell failed");
                glommio::timer::sleep(std::time::Duration::from_millis(1)).await;
            }
        }
        doorbell.armed.store(false, Ordering::Relaxed);
    }
}

thread_local! {
    /// The doorbell's descriptor while this shard's loop waits on it.
    static IDLE: std::cell::Cell<Option<std::os::fd::RawFd>> = const { std::cell::Cell::new(None) };
}

/// This shard's loop waits on its doorbell (the guard's life).
struct Idle;

impl Idle {
    fn set(fd: std::os::fd::RawFd) -> Idle {
        IDLE.with(|i| i.set(Some(fd)));
        Idle
    }
}

impl Drop for Idle {
    fn drop(&mut self) {
        IDLE.with(|i| i.set(None));
    }
}

/// The doorbell's descriptor if this thread is a shard whose loop waits on it: the shard has no
/// message to handle, and a ring makes the descriptor readable.
pub(crate) fn idle_bell() -> Option<std::os::fd::RawFd> {
    IDLE.with(|i| i.get())
}

#[allow(unsafe_code)]
fn into_glommio(rx: UnixStream) -> glommio::net::UnixStream {
    use std::os::fd::{FromRawFd, IntoRawFd};
    // SAFETY: `into_raw_fd` hands over sole ownership of an open Unix stream socket, which the
    // glommio stream takes and closes on drop.
    unsafe { glommio::net::UnixStream::from_raw_fd(rx.into_raw_fd()) }
}
