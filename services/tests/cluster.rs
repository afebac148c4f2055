//! A cluster of real `corecast member` processes on free loopback ports, driven through
//! `corecast client` and `corecast cluster status`: join, balance, kill -9, master failover,
//! refusals, garbage on the wire, and the tutorial's two-member scenario with its backups.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use support::procs::{joined, member, run, settled, status, wait_for};

fn balanced(rows: &[(String, bool, bool, usize)]) -> bool {
    owned_within(rows, 1)
}

/// Every partition owned, owner counts at most `spread` apart (after a death, each partition's
/// first backup owns it, which leaves owners a few apart).
fn owned_within(rows: &[(String, bool, bool, usize)], spread: usize) -> bool {
    let owned: Vec<usize> = rows.iter().filter(|r| !r.2).map(|r| r.3).collect();
    let total: usize = owned.iter().sum();
    let (min, max) = (owned.iter().min(), owned.iter().max());
    total == 271 && matches!((min, max), (Some(a), Some(b)) if b - a <= spread)
}

#[test]
fn three_members_form_one_balanced_cluster_and_survive_kills() {
    let mut a = member(&[], &[]);
    wait_for("the first member", Duration::from_secs(20), || joined(&a));
    let mut b = member(&[&a], &[]);
    wait_for("the second member", Duration::from_secs(20), || joined(&b));
    let c = member(&[&a, &b], &[]);
    wait_for("the third member", Duration::from_secs(20), || joined(&c));

    wait_for(
        "three members, balanced by migrations",
        Duration::from_secs(20),
        || settled(&c, 3),
    );
    let rows = status(&c);
    assert_eq!(
        rows.iter().filter(|r| r.1).count(),
        1,
        "one master: {rows:?}"
    );
    assert_eq!(rows[0].0, a.addr, "the oldest member is the master");
    assert!(balanced(&rows), "balanced table: {rows:?}");

    // kill -9 a non-master: gone within the timeout (1.5 s) plus detection slack.
    b.kill9();
    let killed = Instant::now();
    wait_for(
        "the killed member's removal",
        Duration::from_secs(5),
        || status(&c).len() == 2,
    );
    let removal = killed.elapsed();
    assert!(
        removal < Duration::from_secs(4),
        "removed after {removal:?}"
    );
    let rows = status(&c);
    assert!(
        owned_within(&rows, 3),
        "republished, nothing ownerless: {rows:?}"
    );

    // kill -9 the master: the next oldest (c) takes over.
    a.kill9();
    wait_for("a new master", Duration::from_secs(6), || {
        let rows = status(&c);
        rows.len() == 1 && rows[0].0 == c.addr && rows[0].1
    });
    wait_for(
        "the survivor owns everything",
        Duration::from_secs(10),
        || settled(&c, 1),
    );
    assert!(c.log().contains("taking over as master"));
}

#[test]
fn a_member_with_the_wrong_secret_or_cluster_name_is_refused() {
    let a = member(&[], &["--secret", "s3cret"]);
    wait_for("the first member", Duration::from_secs(20), || joined(&a));

    for extra in [
        &["--secret", "wrong"][..],
        &["--secret", "s3cret", "--cluster-name", "other"][..],
    ] {
        let mut intruder = member(&[&a], extra);
        let status = intruder.child.wait().unwrap();
        let mut err = String::new();
        intruder
            .child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut err)
            .unwrap();
        assert!(!status.success(), "a refused member exits non-zero");
        assert!(err.contains("refused"), "says it was refused: {err}");
    }
    let log = a.log();
    assert!(log.contains("wrong cluster secret"), "{log}");
    assert!(log.contains("cluster name mismatch"), "{log}");

    let out = run(
        &["client", "--members", &a.addr, "--secret", "nope", "ping"],
        None,
    );
    assert!(!out.status.success());
    let out = run(
        &["client", "--members", &a.addr, "--secret", "s3cret", "ping"],
        None,
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "PONG");
}

/// The tutorial's scenario across two processes: four counters, two rounds, the operations
/// logged on both members.
#[test]
fn the_tutorials_two_member_scenario_runs_across_two_processes() {
    let a = member(&[], &[]);
    wait_for("the first member", Duration::from_secs(20), || joined(&a));
    let b = member(&[&a], &[]);
    wait_for("the second member", Duration::from_secs(20), || joined(&b));
    wait_for(
        "both in the table, migrations done",
        Duration::from_secs(20),
        || settled(&a, 2),
    );

    let script: String = (1..=2)
        .flat_map(|_| (0..4).map(|i| format!("counter inc {i}counter\n")))
        .collect();
    let out = run(&["client", "--members", &b.addr], Some(&script));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines, ["1", "1", "1", "1", "2", "2", "2", "2"], "{stdout}");

    let (la, lb) = (a.log(), b.log());
    for i in 0..4 {
        // The tutorial's backup scenario: the increment runs on the owner, its backup on the
        // other member (backup-count 1 by default).
        let line = format!("Executing {i}counter.inc() on: ");
        let backup = format!("Executing backup {i}counter.inc() on: ");
        let (owner, other) = if la.contains(&line) {
            (&la, &lb)
        } else {
            (&lb, &la)
        };
        assert!(owner.contains(&line), "{line} logged");
        assert!(
            other.contains(&backup),
            "{backup} logged on the member that is not the owner"
        );
        assert!(!owner.contains(&backup), "no backup on the owner itself");
    }
    assert!(
        la.contains(&format!("on: {}", a.addr)) && lb.contains(&format!("on: {}", b.addr)),
        "operations ran on both members"
    );
}

#[test]
fn garbage_on_the_wire_does_not_disturb_a_client_beside_it() {
    let a = member(&[], &[]);
    wait_for("the member", Duration::from_secs(20), || joined(&a));
    let addr: SocketAddr = a.addr.parse().unwrap();

    let garbage: [&[u8]; 4] = [
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        &[0xff; 4096],
        b"CCF1\xff\xff\xff\xff",
        b"CCF1",
    ];
    let mut sockets = Vec::new();
    for g in garbage {
        let mut s = TcpStream::connect(addr).unwrap();
        let _ = s.write_all(g);
        sockets.push(s);
    }
    let script = "counter inc c\ncounter inc c\nping\n";
    let out = run(&["client", "--members", &a.addr], Some(script));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "1\n2\nPONG\n");
    // The member closed the garbage connections and logged why.
    for mut s in sockets {
        s.set_read_timeout(Some(Duration::from_secs(8))).unwrap();
        let mut buf = [0u8; 64];
        assert!(matches!(s.read(&mut buf), Ok(0) | Err(_)), "closed");
    }
    assert!(a.log().contains("closing connection"));
}
