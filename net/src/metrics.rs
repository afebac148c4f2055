//! Prometheus metrics over HTTP: `network.metrics-port` (or `corecast member --metrics-port`).
//!
//! A plain thread accepts scrapes on the bind host. Each scrape asks every shard for its numbers
//! by message (`Invoker::run_on`): the engine's operation counts and sampled service times
//! ([`corecast_engine::stats`]), and the network's partitions, connections, queues and rejected
//! connections. Nothing is shared with the shards; rendering ([`render`]) is plain code.

use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use corecast_engine::extension;
use corecast_engine::stats::{bucket_bound_secs, OpStats, SAMPLE_EVERY};
use corecast_engine::{Invoker, ShardId};

use crate::node::{ClusterStatus, Network};

/// One shard's network numbers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ShardNetStats {
    /// Partitions of this shard this member owns.
    pub owned: u32,
    /// Partitions of this shard this member holds a backup of.
    pub backups: u32,
    /// Inbound connections open.
    pub inbound: u32,
    /// Outbound connections open.
    pub outbound: u32,
    /// Bytes queued on outbound connections, not yet written (backups, forwards, events).
    pub queued_bytes: u64,
    /// Backup frames waiting for their partition's fetch to finish.
    pub backup_replay_queue: u32,
    /// Inbound connections closed for a protocol violation (bad frame, handshake, payload).
    pub rejected: u64,
    /// Bytes queued on inbound connections, not yet written (answers, acks, events).
    pub inbound_queued_bytes: u64,
    /// Times an inbound connection stopped reading until its peer read its answers
    /// (`network.max-queued-kib`).
    pub paused: u64,
    /// Requests refused as overloaded (`network.max-pending-acks`).
    pub overloaded: u64,
    /// Reads a serial connection made after a short wait in epoll instead of through io_uring
    /// (`network.poll-wait-micros`).
    pub short_reads: u64,
    /// Of those, reads whose socket became ready while the shard spun before sleeping
    /// (`network.poll-spin-micros`).
    pub spun_reads: u64,
    /// Reads of busy (pipelined) connections that the shard's pump found ready in its epoll
    /// set instead of through io_uring (`network.poll-busy-micros`).
    pub pumped_reads: u64,
}

/// One shard's numbers.
#[derive(Clone, Debug, Default)]
pub struct ShardSnapshot {
    /// The shard.
    pub shard: u32,
    /// Namespace names (services, then `engine`), in the order of `ops.ops`.
    pub names: Vec<&'static str>,
    /// Operations and service times.
    pub ops: OpStats,
    /// Network numbers.
    pub net: ShardNetStats,
}

/// Everything one scrape reports.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    /// This member's address.
    pub member: String,
    /// Per shard.
    pub shards: Vec<ShardSnapshot>,
    /// The cluster as this member sees it.
    pub status: ClusterStatus,
}

/// Asks every shard of the member for its numbers.
pub fn gather(invoker: &Invoker, network: &Network) -> Snapshot {
    let shards = (0..invoker.shard_count().get())
        .filter_map(|s| {
            let job = invoker.run_on(ShardId(s), move || async move {
                let (names, ops) = extension::shard_stats().unwrap_or_default();
                let net = crate::node::shard_net_stats();
                ShardSnapshot {
                    shard: s,
                    names,
                    ops,
                    net,
                }
            });
            futures_lite::future::block_on(job).ok()
        })
        .collect();
    Snapshot {
        member: invoker.member().address.to_string(),
        shards,
        status: network.status(),
    }
}

/// A per-shard number: name, type, help, how to read it.
type PerShard = (
    &'static str,
    &'static str,
    &'static str,
    fn(&ShardNetStats) -> u64,
);

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The snapshot in Prometheus text exposition format (0.0.4).
pub fn render(s: &Snapshot) -> String {
    let mut out = String::new();
    let m = escape(&s.member);
    let family = |out: &mut String, name: &str, kind: &str, help: &str| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
    };
    family(
        &mut out,
        "corecast_operations_total",
        "counter",
        "Operations run on this member as their partition's owner, by service and result.",
    );
    for sh in &s.shards {
        for (i, counts) in sh.ops.ops.iter().enumerate() {
            let service = escape(sh.names.get(i).copied().unwrap_or("unknown"));
            for (result, n) in [("ok", counts[0]), ("error", counts[1])] {
                let _ = writeln!(
                    out,
                    "corecast_operations_total{{member=\"{m}\",shard=\"{}\",service=\"{service}\",result=\"{result}\"}} {n}",
                    sh.shard
                );
            }
        }
    }
    family(
        &mut out,
        "corecast_operation_seconds",
        "histogram",
        &format!("Service time of one in {SAMPLE_EVERY} operations run as owner, per shard."),
    );
    for sh in &s.shards {
        let mut cumulative = 0u64;
        for (i, n) in sh.ops.latency.iter().enumerate() {
            cumulative += n;
            let le = if i + 1 == sh.ops.latency.len() {
                "+Inf".to_owned()
            } else {
                format!("{}", bucket_bound_secs(i))
            };
            let _ = writeln!(
                out,
                "corecast_operation_seconds_bucket{{member=\"{m}\",shard=\"{}\",le=\"{le}\"}} {cumulative}",
                sh.shard
            );
        }
        let _ = writeln!(
            out,
            "corecast_operation_seconds_sum{{member=\"{m}\",shard=\"{}\"}} {}",
            sh.shard,
            sh.ops.latency_sum_ns as f64 / 1e9
        );
        let _ = writeln!(
            out,
            "corecast_operation_seconds_count{{member=\"{m}\",shard=\"{}\"}} {cumulative}",
            sh.shard
        );
    }
    let per_shard: [PerShard; 13] = [
        (
            "corecast_partitions_owned",
            "gauge",
            "Partitions of the shard this member owns.",
            |n| u64::from(n.owned),
        ),
        (
            "corecast_partitions_backed_up",
            "gauge",
            "Partitions of the shard this member holds a backup of.",
            |n| u64::from(n.backups),
        ),
        (
            "corecast_connections_inbound",
            "gauge",
            "Inbound connections open on the shard.",
            |n| u64::from(n.inbound),
        ),
        (
            "corecast_connections_outbound",
            "gauge",
            "Outbound connections open from the shard.",
            |n| u64::from(n.outbound),
        ),
        (
            "corecast_outbound_queued_bytes",
            "gauge",
            "Bytes queued on the shard's outbound connections (backups, forwards, events).",
            |n| n.queued_bytes,
        ),
        (
            "corecast_backup_replay_queue",
            "gauge",
            "Backup frames waiting for their partition's fetch.",
            |n| u64::from(n.backup_replay_queue),
        ),
        (
            "corecast_frames_rejected_total",
            "counter",
            "Inbound connections closed for a protocol violation.",
            |n| n.rejected,
        ),
        (
            "corecast_inbound_queued_bytes",
            "gauge",
            "Bytes queued on the shard's inbound connections (answers, acks, events).",
            |n| n.inbound_queued_bytes,
        ),
        (
            "corecast_reads_paused_total",
            "counter",
            "Times an inbound connection stopped reading until its peer read its answers.",
            |n| n.paused,
        ),
        (
            "corecast_short_wait_reads_total",
            "counter",
            "Reads of serial connections served by a short wait in epoll (network.poll-wait-micros).",
            |n| n.short_reads,
        ),
        (
            "corecast_spun_wait_reads_total",
            "counter",
            "Short-wait reads whose socket became ready while the shard spun (network.poll-spin-micros).",
            |n| n.spun_reads,
        ),
        (
            "corecast_pumped_reads_total",
            "counter",
            "Reads of pipelined connections found ready by the shard's epoll pump (network.poll-busy-micros).",
            |n| n.pumped_reads,
        ),
        (
            "corecast_requests_overloaded_total",
            "counter",
            "Requests refused as overloaded: too many on their connection awaited backup acks.",
            |n| n.overloaded,
        ),
    ];
    for (name, kind, help, get) in per_shard {
        family(&mut out, name, kind, help);
        for sh in &s.shards {
            let _ = writeln!(
                out,
                "{name}{{member=\"{m}\",shard=\"{}\"}} {}",
                sh.shard,
                get(&sh.net)
            );
        }
    }
    let st = &s.status;
    let mg = &st.migrations;
    let cluster: [(&str, &str, &str, u64); 8] = [
        (
            "corecast_cluster_members",
            "gauge",
            "Members in the member list.",
            st.members.len() as u64,
        ),
        (
            "corecast_member_list_version",
            "gauge",
            "The member list's version.",
            st.list_version,
        ),
        (
            "corecast_partition_table_version",
            "gauge",
            "The partition table's version.",
            st.table_version,
        ),
        (
            "corecast_partitions_unowned",
            "gauge",
            "Partitions without an owner.",
            st.unowned as u64,
        ),
        (
            "corecast_migrations_planned",
            "gauge",
            "Partitions the rebalance still has to move.",
            mg.planned,
        ),
        (
            "corecast_migrations_in_flight",
            "gauge",
            "Migrations running.",
            mg.in_flight,
        ),
        (
            "corecast_migrations_done_total",
            "counter",
            "Migrations committed (as the master counts them).",
            mg.done,
        ),
        (
            "corecast_migrations_failed_total",
            "counter",
            "Migrations rolled back (as the master counts them).",
            mg.failed,
        ),
    ];
    for (name, kind, help, v) in cluster {
        family(&mut out, name, kind, help);
        let _ = writeln!(out, "{name}{{member=\"{m}\"}} {v}");
    }
    out
}

/// The HTTP endpoint; stops when dropped.
pub struct MetricsServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl MetricsServer {
    /// Serves the member's metrics on `addr` (any path; `GET /metrics` by convention).
    ///
    /// Errors: the port cannot be bound.
    pub fn start(
        addr: SocketAddr,
        invoker: Invoker,
        network: Arc<Network>,
    ) -> std::io::Result<MetricsServer> {
        let listener = TcpListener::bind(addr)?;
        let addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("corecast-metrics".into())
            .spawn(move || {
                for stream in listener.incoming() {
                    if flag.load(Ordering::Relaxed) {
                        break;
                    }
                    if let Ok(stream) = stream {
                        if let Err(e) = answer(stream, &invoker, &network) {
                            tracing::debug!(error = %e, "metrics scrape failed");
                        }
                    }
                }
            })?;
        tracing::info!(%addr, "serving metrics");
        Ok(Self {
            addr,
            stop,
            thread: Some(thread),
        })
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Wake the accept.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_millis(200));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn answer(mut stream: TcpStream, invoker: &Invoker, network: &Network) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    let mut buf = [0u8; 4096];
    let mut read = 0;
    // The request head; its contents do not matter beyond the method.
    while read < buf.len() {
        let n = stream.read(&mut buf[read..])?;
        if n == 0 {
            break;
        }
        read += n;
        if buf[..read].windows(4).any(|w| w == b"\r\n\r\n") {
            break;
        }
    }
    if !buf[..read].starts_with(b"GET ") {
        let body = "only GET is served\n";
        write!(
            stream,
            "HTTP/1.1 405 Method Not Allowed\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )?;
        return Ok(());
    }
    let body = render(&gather(invoker, network));
    write!(
        stream,
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

/// One sample of a scrape: its name, labels and value.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    /// The series name.
    pub name: String,
    /// `key="value"` labels, in order.
    pub labels: Vec<(String, String)>,
    /// The value.
    pub value: f64,
}

/// Parses Prometheus text exposition: every line a comment or `name{labels} value`, every
/// sample's family declared by a `# TYPE` line before it.
///
/// Errors: the first line that breaks the format, quoted.
pub fn parse(text: &str) -> Result<Vec<Sample>, String> {
    let mut declared = std::collections::HashSet::new();
    let mut samples = Vec::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut words = rest.split_whitespace();
            let (Some(name), Some(kind)) = (words.next(), words.next()) else {
                return Err(format!("bad TYPE line `{line}`"));
            };
            if !matches!(
                kind,
                "counter" | "gauge" | "histogram" | "summary" | "untyped"
            ) {
                return Err(format!("unknown type in `{line}`"));
            }
            declared.insert(name.to_owned());
            continue;
        }
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let (series, value) = line
            .rsplit_once(' ')
            .ok_or_else(|| format!("no value in `{line}`"))?;
        let value: f64 = value
            .parse()
            .map_err(|_| format!("value is not a number in `{line}`"))?;
        let (name, labels) = match series.split_once('{') {
            None => (series, Vec::new()),
            Some((name, rest)) => {
                let body = rest
                    .strip_suffix('}')
                    .ok_or_else(|| format!("unclosed labels in `{line}`"))?;
                let mut labels = Vec::new();
                for pair in body.split("\",").filter(|p| !p.is_empty()) {
                    let (k, v) = pair
                        .split_once("=\"")
                        .ok_or_else(|| format!("bad label in `{line}`"))?;
                    labels.push((k.to_owned(), v.trim_end_matches('"').to_owned()));
                }
                (name, labels)
            }
        };
        let valid = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
        if name.is_empty() || !name.chars().all(valid) {
            return Err(format!("bad metric name in `{line}`"));
        }
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s))
            .filter(|f| declared.contains(*f))
            .unwrap_or(name);
        if !declared.contains(family) {
            return Err(format!("no TYPE for the family of `{line}`"));
        }
        samples.push(Sample {
            name: name.to_owned(),
            labels,
            value,
        });
    }
    Ok(samples)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rendered_metrics_are_prometheus_text() {
        let mut ops = OpStats::new(1);
        for _ in 0..32 {
            let t = ops.start();
            ops.finish(0, true, t);
        }
        let s = Snapshot {
            member: "127.0.0.1:5701".into(),
            shards: vec![ShardSnapshot {
                shard: 0,
                names: vec!["map", "engine"],
                ops,
                net: ShardNetStats {
                    owned: 3,
                    ..ShardNetStats::default()
                },
            }],
            status: ClusterStatus::default(),
        };
        let text = render(&s);
        let samples = parse(&text).unwrap_or_else(|e| panic!("{e}"));
        let ok = samples
            .iter()
            .find(|x| x.name == "corecast_operations_total" && x.labels.iter().any(|l| l.1 == "ok"))
            .map(|x| x.value);
        assert_eq!(ok, Some(32.0));
        assert!(parse("corecast_x 1").is_err(), "a sample without TYPE");
        assert!(
            parse("# TYPE a gauge\na{b=\"c\"} x").is_err(),
            "a value that is no number"
        );
        assert!(text.contains(
            "corecast_operations_total{member=\"127.0.0.1:5701\",shard=\"0\",service=\"map\",result=\"ok\"} 32"
        ));
        assert!(text.contains("corecast_partitions_owned{member=\"127.0.0.1:5701\",shard=\"0\"} 3"));
        assert!(text
            .contains("corecast_operation_seconds_count{member=\"127.0.0.1:5701\",shard=\"0\"} 2"));
    }
}
