//! Waking a shard thread that glommio put to sleep with work to do: a signal that interrupts its
//! `io_uring_enter`.
//!
//! glommio's loop polls its rings, arming the preempt timer (`preempt-timer-micros`), then runs
//! its task queues; if the timer has already fired when it looks (the thread was descheduled
//! for longer than the timer between the two, which happens on an overloaded machine), it runs
//! nothing, finds no I/O, and sleeps on its main ring with no timeout while its tasks stay
//! runnable. Nothing then wakes it: the doorbell only rings a shard whose loop said it waits,
//! and a shard whose first task never ran never says so. Reproduced in isolation with glommio
//! 0.9 (with a preempt timer of 8–15 µs one executor start in 20 to 160 never runs its future);
//! here it held a `corecast cluster status` process before its shard's first poll,
//! and a test with it, until CI's time limit.
//!
//! The member's ticker watches each shard's loop: one whose rounds have not moved for
//! [`STALLED_TICKS`] ticks while it is not waiting on its doorbell gets `SIGURG`, sent to its
//! thread alone. The signal has a no-op handler installed without `SA_RESTART`, so a sleeping
//! `io_uring_enter` returns `EINTR`, glommio goes round its loop and runs the tasks. A shard that
//! is merely busy in one long task gets the signal too; it costs that task an interrupted
//! syscall, which glommio, the epoll wait and the standard library's I/O all retry or treat as a
//! timeout. `SIGURG` is ignored by default (and is Go's preemption signal for the same reason):
//! a process that never installed the handler is not harmed by one. A handler the application
//! installed for it is left alone.
//!
//! Owns: installing the handler, naming a thread ([`current_thread`]) and signalling it
//! ([`kick`]). The liveness word the ticker reads is the doorbell's ([`crate::doorbell`]).

use std::sync::Once;

/// Ticks without a round of a shard's loop, while it is not waiting on its doorbell, before the
/// ticker signals its thread (and again each as many ticks after): 8 ms at the default 1 ms
/// tick, so a shard busy in an ordinary task is not interrupted.
pub(crate) const STALLED_TICKS: u32 = 8;

static HANDLER: Once = Once::new();

extern "C" fn interrupt(_: libc::c_int) {}

/// Installs the no-op `SIGURG` handler, once per process, unless the application has its own.
#[allow(unsafe_code)]
pub(crate) fn install() {
    HANDLER.call_once(|| {
        // SAFETY: `sigaction` with a null new action only reads the current one into `old`;
        // the new action is a zeroed struct with a valid handler and an empty mask, and the
        // handler does nothing (async-signal-safe).
        unsafe {
            let mut old: libc::sigaction = std::mem::zeroed();
            if libc::sigaction(libc::SIGURG, std::ptr::null(), &mut old) != 0 {
                return;
            }
            if old.sa_sigaction != libc::SIG_DFL && old.sa_sigaction != libc::SIG_IGN {
                tracing::debug!(
                    "SIGURG has a handler already: stalled shards are signalled through it"
                );
                return;
            }
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = interrupt as extern "C" fn(libc::c_int) as libc::sighandler_t;
            // No SA_RESTART: an interrupted wait returns EINTR instead of resuming.
            action.sa_flags = 0;
            libc::sigemptyset(&mut action.sa_mask);
            if libc::sigaction(libc::SIGURG, &action, std::ptr::null_mut()) != 0 {
                tracing::warn!(
                    error = %std::io::Error::last_os_error(),
                    "cannot install the SIGURG handler: a stalled shard waits for its next I/O"
                );
            }
        }
    });
}

/// The calling thread's kernel id (for [`kick`]).
#[allow(unsafe_code)]
pub(crate) fn current_thread() -> i32 {
    // SAFETY: gettid has no arguments and cannot fail.
    unsafe { libc::gettid() }
}

/// Sends `SIGURG` to thread `tid` of this process. A thread that has ended (its id unused, or
/// reused by another thread of this process, which the no-op handler does not disturb) is
/// harmless: the kernel checks the id belongs to this process.
#[allow(unsafe_code)]
pub(crate) fn kick(tid: i32) {
    // SAFETY: plain syscalls with integer arguments.
    unsafe {
        libc::syscall(
            libc::SYS_tgkill,
            libc::getpid() as libc::c_long,
            tid as libc::c_long,
            libc::SIGURG as libc::c_long,
        );
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use std::time::{Duration, Instant};

    /// A thread asleep in a syscall returns from it with EINTR when kicked: what wakes a glommio
    /// executor asleep in `io_uring_enter`.
    #[test]
    #[allow(unsafe_code)]
    fn a_kick_interrupts_a_thread_asleep_in_a_syscall() {
        install();
        let (tx, rx) = std::sync::mpsc::channel();
        let sleeper = std::thread::spawn(move || {
            tx.send(current_thread()).unwrap();
            let mut fds = [0; 2];
            // SAFETY: a fresh pipe; the read blocks on its empty read end.
            unsafe { libc::pipe(fds.as_mut_ptr()) };
            let mut byte = 0u8;
            // SAFETY: `byte` is one writable byte.
            let n = unsafe { libc::read(fds[0], (&mut byte as *mut u8).cast(), 1) };
            (n, std::io::Error::last_os_error().raw_os_error())
        });
        let tid = rx.recv().unwrap();
        // Kick until it returns (the first may come before it reaches the read).
        let started = Instant::now();
        while !sleeper.is_finished() {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "never interrupted"
            );
            std::thread::sleep(Duration::from_millis(20));
            kick(tid);
        }
        let (n, errno) = sleeper.join().unwrap();
        assert_eq!((n, errno), (-1, Some(libc::EINTR)));
    }
}
