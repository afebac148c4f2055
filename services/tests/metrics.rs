//! `corecast member --metrics-port`: a real member process answers a scrape with Prometheus text
//! that parses and counts the operations it ran, and `cluster status` shows the headline numbers.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use corecast_net::metrics::parse;
use corecast_services::map::Map;
use support::procs::{self, joined, member, scrape, sum, wait_for};

/// A member process serving metrics on a free port, backup-count 0, joined; and that port.
fn metered_member(extra: &[&str]) -> (procs::Proc, u16) {
    let port = procs::free_ports(1);
    let p = port.to_string();
    let mut args = vec!["--metrics-port", &p, "--backup-count", "0"];
    args.extend_from_slice(extra);
    let m = member(&[], &args);
    wait_for("the member", Duration::from_secs(20), || joined(&m));
    (m, port)
}

#[test]
fn a_scrape_parses_and_counts_the_members_operations() {
    // One shard, and a wait long enough for a debug client's next call.
    let (m, port) = metered_member(&["--shards", "1", "--set", "network.poll-wait-micros=1000"]);
    let client = support::writes::client(&m);
    let map = client.object::<Map>("scraped").unwrap();
    for i in 0..500u32 {
        client.block_on(map.set(&i.to_le_bytes(), b"v")).unwrap();
    }
    assert!(client.block_on(map.get(b"missing")).unwrap().is_none());
    let samples = parse(&scrape(port)).unwrap_or_else(|e| panic!("{e}"));
    let map_ok = sum(
        &samples,
        "corecast_operations_total",
        Some(("service", "map")),
    );
    assert!(map_ok >= 501.0, "map operations {map_ok}");
    assert_eq!(sum(&samples, "corecast_partitions_owned", None), 271.0);
    assert_eq!(sum(&samples, "corecast_cluster_members", None), 1.0);
    assert!(sum(&samples, "corecast_connections_inbound", None) >= 1.0);
    assert!(sum(&samples, "corecast_operation_seconds_count", None) >= 30.0);
    // One call at a time: the member read some of them after a short wait in epoll (0 with
    // the wait off, below). How many is the machine's: in a debug build the ticker's 1 ms ring
    // of the doorbell ends a wait as often as not, and under CI load a debug client's next call
    // comes after the wait too (72 of 501 seen there, 238-311 on a quiet machine).
    let short = sum(&samples, "corecast_short_wait_reads_total", None);
    let spun = sum(&samples, "corecast_spun_wait_reads_total", None);
    eprintln!("{short} of 501 serial calls read after the short wait, {spun} while it spun");
    assert!(
        spun <= short,
        "{spun} spun reads of {short} short-wait reads"
    );
    assert!(
        short >= 25.0,
        "{short} short-wait reads of 501 serial calls"
    );
    // Garbage on a member port is a rejected connection, counted.
    let mut g = TcpStream::connect(m.addr.as_str()).unwrap();
    g.write_all(&[0xAB; 64]).unwrap();
    let mut sink = Vec::new();
    let _ = g.read_to_end(&mut sink);
    wait_for("the rejection counted", Duration::from_secs(5), || {
        let samples = parse(&scrape(port)).unwrap();
        sum(&samples, "corecast_frames_rejected_total", None) >= 1.0
    });
    // `cluster status` shows the member's operations, connections and rejections.
    let out = procs::run(&["cluster", "status", "--members", &m.addr], None);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let header = text.lines().nth(2).unwrap();
    assert!(header.ends_with("OPS   ERRORS CONNS REJECTED"), "{text}");
    let row: Vec<&str> = text.lines().nth(3).unwrap().split_whitespace().collect();
    let ops: u64 = row[8].parse().unwrap();
    assert!(ops >= 501, "{text}");
    assert!(row[10].parse::<u32>().unwrap() >= 1, "{text}");
    assert!(row[11].parse::<u64>().unwrap() >= 1, "{text}");
    client.shutdown();
}

#[test]
fn without_the_short_wait_every_read_goes_through_io_uring() {
    let (m, port) = metered_member(&["--set", "network.poll-wait-micros=0"]);
    let client = support::writes::client(&m);
    let map = client.object::<Map>("unwaited").unwrap();
    for i in 0..200u32 {
        client.block_on(map.set(&i.to_le_bytes(), b"v")).unwrap();
        assert_eq!(
            client.block_on(map.get(&i.to_le_bytes())).unwrap(),
            Some(b"v".to_vec())
        );
    }
    let samples = parse(&scrape(port)).unwrap_or_else(|e| panic!("{e}"));
    assert!(
        sum(
            &samples,
            "corecast_operations_total",
            Some(("service", "map"))
        ) >= 400.0
    );
    assert_eq!(sum(&samples, "corecast_short_wait_reads_total", None), 0.0);
    // Nor a spin: it is part of the short wait.
    assert_eq!(sum(&samples, "corecast_spun_wait_reads_total", None), 0.0);
    client.shutdown();
}

/// Sends `n` pipelined `INCR pumped` to the front door at `port` from a writer thread while
/// this one reads the replies; returns the last one.
fn pipelined_incrs(port: u16, n: usize) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut w = s.try_clone().unwrap();
    let writer = std::thread::spawn(move || {
        let batch = b"*2\r\n$4\r\nINCR\r\n$6\r\npumped\r\n".repeat(100);
        for _ in 0..n / 100 {
            w.write_all(&batch).unwrap();
        }
    });
    let (mut replies, mut last, mut line) = (0, String::new(), Vec::new());
    let mut chunk = [0u8; 64 * 1024];
    while replies < n {
        let got = s.read(&mut chunk).unwrap();
        assert!(
            got > 0,
            "the member closed the connection after {replies} replies"
        );
        for &b in &chunk[..got] {
            line.push(b);
            if b == b'\n' {
                replies += 1;
                last = String::from_utf8_lossy(&line).trim_end().to_owned();
                line.clear();
            }
        }
    }
    writer.join().unwrap();
    last
}

#[test]
fn pipelined_connections_are_read_through_the_pump_unless_it_is_off() {
    for (busy, pumped) in [("100", true), ("0", false)] {
        let resp = procs::free_ports(1);
        let r = resp.to_string();
        let set = format!("network.poll-busy-micros={busy}");
        let (_m, port) = metered_member(&["--shards", "1", "--resp-port", &r, "--set", &set]);
        // 20,000 increments in one stream: the member reads them in batches of many, each
        // batch a busy connection's read (the first, with no batch before it, a serial one's).
        assert_eq!(pipelined_incrs(resp, 20_000), ":20000");
        let samples = parse(&scrape(port)).unwrap_or_else(|e| panic!("{e}"));
        let reads = sum(&samples, "corecast_pumped_reads_total", None);
        eprintln!("poll-busy-micros {busy}: {reads} pumped reads");
        if pumped {
            assert!(reads >= 1.0, "{reads} pumped reads of a pipelined stream");
        } else {
            assert_eq!(reads, 0.0, "pumped reads with the pump off");
        }
    }
}
