//! The `corecast` binary as a user runs it: config checks, one-line errors, and a member process
//! that starts, serves and stops cleanly on SIGTERM.

#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

fn corecast(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_corecast"))
        .args(args)
        .output()
        .unwrap()
}

/// Asserts the run failed with exactly one stderr line `corecast: …` containing `needle`.
fn assert_one_line_error(output: &Output, needle: &str) {
    assert!(!output.status.success(), "must fail: {output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "one line expected, got:\n{stderr}");
    assert!(lines[0].starts_with("corecast: "), "{stderr}");
    assert!(
        lines[0].contains(needle),
        "`{needle}` missing from: {stderr}"
    );
}

#[test]
fn config_check_reports_what_a_member_would_start() {
    let output = corecast(&[
        "config",
        "check",
        "--shards",
        "2",
        "--partition-count",
        "13",
    ]);
    assert!(output.status.success(), "{output:?}");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains("2 shards") && stdout.contains("13 partitions"),
        "{stdout}"
    );
}

#[test]
fn a_bad_value_on_the_command_line_is_one_line_naming_the_key() {
    let output = corecast(&["config", "check", "--set", "partition-count=0"]);
    assert_one_line_error(&output, "partition-count");
}

#[test]
fn an_unknown_key_in_a_file_is_one_line_naming_the_key() {
    let path = std::env::temp_dir().join(format!("corecast-cli-{}.toml", std::process::id()));
    std::fs::write(&path, "partitions = 7\n").unwrap();
    let output = corecast(&["config", "check", "--config", path.to_str().unwrap()]);
    std::fs::remove_file(&path).unwrap();
    assert_one_line_error(&output, "partitions");
}

#[test]
fn a_missing_config_file_is_one_line_naming_the_path() {
    let output = corecast(&["config", "check", "--config", "/nonexistent/corecast.toml"]);
    assert_one_line_error(&output, "/nonexistent/corecast.toml");
}

#[test]
fn a_member_process_starts_and_stops_cleanly_on_sigterm() {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let bind = format!("127.0.0.1:{port}");
    let mut child = Command::new(env!("CARGO_BIN_EXE_corecast"))
        .args([
            "member",
            "--shards",
            "1",
            "--partition-count",
            "7",
            "--bind",
            &bind,
        ])
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (lines_tx, lines) = mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = lines_tx.send(line);
        }
    });
    let wait_for = |needle: &str, within: Duration| {
        let deadline = std::time::Instant::now() + within;
        while let Some(left) = deadline.checked_duration_since(std::time::Instant::now()) {
            match lines.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return line,
                Ok(_) => {}
                Err(_) => break,
            }
        }
        panic!("the member did not log `{needle}` within {within:?}");
    };
    let started = wait_for("member started", Duration::from_secs(20));
    assert!(started.contains(&bind), "{started}");
    let pid = child.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    wait_for("member stopped", Duration::from_secs(10));
    let status = child.wait().unwrap();
    assert!(
        status.success(),
        "a member stopped by SIGTERM exits 0, got {status}"
    );
}
