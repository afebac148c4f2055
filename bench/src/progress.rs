//! A progress bar on stderr while a workload runs (a line every few seconds when stderr is not
//! a terminal).

use std::io::{IsTerminal, Write};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The bar's thread; [`Progress::finish`] ends it at once (it waits on a channel between
/// updates, not in a sleep, so finishing does not wait out the interval).
pub struct Progress {
    done: Option<mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Progress {
    /// Shows `what` progressing from `start` to `end`.
    pub fn start(what: &str, start: Instant, end: Instant) -> Self {
        let (done, finished) = mpsc::channel::<()>();
        let what = what.to_owned();
        let thread = std::thread::Builder::new()
            .name("bench-progress".into())
            .spawn(move || {
                let terminal = std::io::stderr().is_terminal();
                let total = end.saturating_duration_since(start).as_secs_f64().max(1e-3);
                let every = if terminal {
                    Duration::from_millis(200)
                } else {
                    Duration::from_secs(5)
                };
                // Ends when `finish` sends or drops the sender.
                while let Err(mpsc::RecvTimeoutError::Timeout) = finished.recv_timeout(every) {
                    let elapsed = Instant::now()
                        .saturating_duration_since(start)
                        .as_secs_f64();
                    let part = (elapsed / total).clamp(0.0, 1.0);
                    let filled = (part * 30.0) as usize;
                    let mut err = std::io::stderr().lock();
                    let bar = format!(
                        "{what}: [{}{}] {:>5.1} / {:.1} s",
                        "#".repeat(filled),
                        ".".repeat(30 - filled),
                        elapsed.min(total),
                        total
                    );
                    let _ = if terminal {
                        write!(err, "\r{bar}")
                    } else {
                        writeln!(err, "{bar}")
                    };
                    let _ = err.flush();
                }
                if terminal {
                    let _ = writeln!(std::io::stderr());
                }
            })
            .ok();
        Self {
            done: Some(done),
            thread,
        }
    }

    /// Ends the bar.
    pub fn finish(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        self.done.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.stop();
    }
}
