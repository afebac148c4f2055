//! Process-wide CPU tuning that must happen before anything else runs: which of glibc's string
//! functions (`memcpy`, `memset`, `memcmp` …) the process uses.
//!
//! glibc picks those implementations once, when the dynamic loader starts the process. On a CPU
//! with AVX-512 it picks the AVX-512 (EVEX) ones. A shard calls them sporadically and with small
//! sizes (rkyv's padding and small archives, frame copies, map values), and on the AMD Zen 5 VMs
//! we measure on that made an inline counter increment 1.6× slower (3.8 M → 6.1 M ops/s on one
//! shard) and a networked map put 1.2× slower; the AVX2 versions do not have that cost. The only
//! way to choose is `GLIBC_TUNABLES` in the environment before the loader runs, so
//! [`prefer_avx2_string_functions`] executes the program again, once, with
//! `glibc.cpu.hwcaps=-AVX512F,…` added: same process id, same arguments.
//!
//! Set `CORECAST_AVX512=1` to keep glibc's own choice; a `GLIBC_TUNABLES` that already sets
//! `glibc.cpu.hwcaps` is left as it is.

/// The environment variable that keeps glibc's own choice of string functions.
pub const KEEP_AVX512: &str = "CORECAST_AVX512";

/// The tunable added to `GLIBC_TUNABLES`.
pub const HWCAPS: &str = "glibc.cpu.hwcaps=-AVX512F,-AVX512VL,-AVX512BW,-AVX512DQ,-AVX512CD";

/// What `GLIBC_TUNABLES` should be for a process that has `current` (unset: `None`), or `None`
/// when it should stay as it is.
pub fn tunables(current: Option<&str>, keep_avx512: bool, has_avx512: bool) -> Option<String> {
    if keep_avx512 || !has_avx512 {
        return None;
    }
    match current {
        Some(c) if c.contains("glibc.cpu.hwcaps") => None,
        Some(c) if !c.is_empty() => Some(format!("{c}:{HWCAPS}")),
        _ => Some(HWCAPS.to_owned()),
    }
}

/// Re-executes the running program with glibc's AVX2 string functions when the CPU has AVX-512
/// and nothing says otherwise (see the module docs). Call it first thing in `main`, before any
/// thread starts. Returns only when it does not re-execute, or when the exec fails (the program
/// then runs on with glibc's choice).
pub fn prefer_avx2_string_functions() {
    #[cfg(all(target_os = "linux", target_env = "gnu", target_arch = "x86_64"))]
    {
        use std::os::unix::process::CommandExt;

        let current = std::env::var("GLIBC_TUNABLES").ok();
        let keep = std::env::var_os(KEEP_AVX512).is_some_and(|v| v != "0");
        let has_avx512 = std::arch::is_x86_feature_detected!("avx512f");
        let Some(value) = tunables(current.as_deref(), keep, has_avx512) else {
            return;
        };
        let Ok(exe) = std::env::current_exe() else {
            return;
        };
        let mut args = std::env::args_os();
        let mut command = std::process::Command::new(exe);
        if let Some(arg0) = args.next() {
            command.arg0(arg0);
        }
        // Only returns on failure: carry on as we are.
        let _failed = command.args(args).env("GLIBC_TUNABLES", value).exec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tunable_is_added_once_and_never_over_the_users() {
        assert_eq!(tunables(None, false, true).as_deref(), Some(HWCAPS));
        assert_eq!(tunables(Some(""), false, true).as_deref(), Some(HWCAPS));
        assert_eq!(
            tunables(Some("glibc.malloc.check=0"), false, true),
            Some(format!("glibc.malloc.check=0:{HWCAPS}"))
        );
        // Already set (by the user, or by the first run): no second exec.
        assert_eq!(tunables(Some(HWCAPS), false, true), None);
        assert_eq!(tunables(Some("glibc.cpu.hwcaps=-AVX2"), false, true), None);
        assert_eq!(
            tunables(None, true, true),
            None,
            "CORECAST_AVX512 keeps glibc's choice"
        );
        assert_eq!(
            tunables(None, false, false),
            None,
            "no AVX-512, nothing to avoid"
        );
    }
}
