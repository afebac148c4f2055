//! The locked-memory check: glommio registers `io-memory` bytes per executor with io_uring, and
//! the kernel charges them to `RLIMIT_MEMLOCK` unless the process has `CAP_IPC_LOCK`. Checking
//! before the executors start turns an opaque failure deep in glommio into an error that says
//! what to raise.

use std::fs;

use crate::member::StartError;

/// Bit of `CAP_IPC_LOCK` in `/proc/self/status` `CapEff`.
const CAP_IPC_LOCK: u32 = 14;

/// Fails with [`StartError::LockedMemory`] when `needed` bytes cannot be locked.
pub(crate) fn check(needed: u64) -> Result<(), StartError> {
    if has_ipc_lock() {
        return Ok(());
    }
    match soft_limit() {
        Some(limit) if limit < needed => Err(StartError::LockedMemory { needed, limit }),
        _ => Ok(()),
    }
}

/// The soft `RLIMIT_MEMLOCK` in bytes; `None` when unlimited or unknown.
fn soft_limit() -> Option<u64> {
    let limits = fs::read_to_string("/proc/self/limits").ok()?;
    parse_limit(&limits)
}

fn parse_limit(limits: &str) -> Option<u64> {
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max locked memory"))?;
    let soft = line
        .trim_start_matches("Max locked memory")
        .split_whitespace()
        .next()?;
    soft.parse().ok()
}

fn has_ipc_lock() -> bool {
    fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| parse_cap_eff(&s))
        .is_some_and(|caps| caps & (1 << CAP_IPC_LOCK) != 0)
}

fn parse_cap_eff(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("CapEff:"))?;
    u64::from_str_radix(line.trim_start_matches("CapEff:").trim(), 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_soft_limit_and_the_capability() {
        let limits = "Limit                     Soft Limit           Hard Limit           Units\n\
                      Max locked memory         8388608              8388608              bytes\n";
        assert_eq!(parse_limit(limits), Some(8_388_608));
        let unlimited =
            "Max locked memory         unlimited            unlimited            bytes\n";
        assert_eq!(parse_limit(unlimited), None);
        assert_eq!(
            parse_cap_eff("Name:\tx\nCapEff:\t000001ffffffffff\n"),
            Some(0x1ff_ffff_ffff)
        );
        assert_eq!(
            parse_cap_eff("CapEff:\t0000000000000000\n").map(|c| c & (1 << 14)),
            Some(0)
        );
    }
}
