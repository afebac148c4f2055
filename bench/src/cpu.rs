//! A server process's CPU time, for throughput per CPU-second: on a machine the load generator
//! shares, the server gets what the load leaves it, so ops/s alone under-states a server whose
//! load generator is the heavier of the two. Linux only (`/proc`).

use std::time::Duration;

use anyhow::Context;

/// The kernel reports a process's times in USER_HZ ticks, 100 per second on Linux's ABIs.
const TICKS_PER_SEC: f64 = 100.0;

/// User plus system time of process `pid` (all its threads) so far.
///
/// Errors: no such process, or `/proc/PID/stat` not in the expected form.
pub fn used(pid: u32) -> anyhow::Result<Duration> {
    let path = format!("/proc/{pid}/stat");
    let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read {path}"))?;
    parse_stat(&text).with_context(|| format!("{path}: unexpected contents"))
}

/// utime + stime from a `/proc/PID/stat` line. The command name (field 2) is in parentheses and
/// may hold spaces, so fields are counted after its closing one.
fn parse_stat(text: &str) -> Option<Duration> {
    let rest = &text[text.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    // After the name: state is field 3, utime field 14, stime field 15.
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(Duration::from_secs_f64(
        (utime + stime) as f64 / TICKS_PER_SEC,
    ))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn reads_user_and_system_time_past_a_name_with_spaces() {
        let line = "4242 (corecast shard) S 1 4242 4242 0 -1 4194560 1234 0 0 0 250 75 0 0 20 0 \
                    4 0 123456 1397996 8425 18446744073709551615";
        assert_eq!(parse_stat(line), Some(Duration::from_millis(3250)));
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn this_process_has_used_some_time() {
        // Busy for 50 ms of wall time: at least a few 10 ms ticks of CPU.
        let until = std::time::Instant::now() + Duration::from_millis(50);
        let mut x = 0u64;
        while std::time::Instant::now() < until {
            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(1));
        }
        assert!(used(std::process::id()).unwrap() > Duration::ZERO);
    }
}
