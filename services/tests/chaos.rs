//! `corecast chaos`, short: three member processes with backup-count 1 under load from six
//! client threads while members are killed (`kill -9`, then replaced) and paused (SIGSTOP,
//! SIGCONT) one at a time; the history of AtomicLong, Map and Lock operations must check as
//! linearizable and no acknowledged write may be lost.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::process::Command;

use support::procs::BIN;

#[test]
fn a_short_run_with_kills_and_pauses_is_linearizable_and_loses_no_acknowledged_write() {
    let out = std::env::temp_dir().join(format!("corecast-chaos-{}", std::process::id()));
    let run = Command::new(BIN)
        .args(["chaos", "--members", "3", "--duration-secs", "24"])
        .args([
            "--fault-interval-millis",
            "1500",
            "--max-pause-millis",
            "3000",
        ])
        .args(["--seed", "11", "--out"])
        .arg(&out)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&run.stdout);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(
        run.status.success(),
        "chaos run failed ({}):\n{stdout}\n{stderr}",
        run.status
    );
    assert!(
        stdout.contains("acknowledged writes lost: 0 of"),
        "{stdout}"
    );
    assert!(stdout.contains("linearizability: linearizable"), "{stdout}");
    // Both kinds of fault were injected, and the history holds operations on every object.
    assert!(stdout.contains(" kill "), "no kill:\n{stdout}");
    assert!(stdout.contains(" pause "), "no pause:\n{stdout}");
    let history = std::fs::read_to_string(out.join("history.jsonl")).unwrap();
    for object in ["Atomic", "MapKey", "Lock"] {
        assert!(
            history.contains(object),
            "no {object} operation in the history"
        );
    }
    let _ = std::fs::remove_dir_all(&out);
}
