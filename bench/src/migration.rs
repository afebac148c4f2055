//! The migration benchmark (`--migration-mib N`): one member holds N MiB in the kv store, a
//! second member joins, and the partitions stream to it. Reports the rebalance's total time, the
//! source's stream throughput (aggregate and per stream), and the latency of a serial client's
//! counter increments before and during the rebalance. Both members and the client run in this
//! process, over loopback.

use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use corecast_engine::{BlockingMember, Config, Member};
use corecast_net::{Network, StreamStats};
use corecast_services::builtin::with_builtin_services;
use corecast_services::counter::Counter;
use corecast_services::kv::KvStore;

use crate::report::Measured;

/// What to load and how.
pub struct MigrationSpec {
    /// MiB of values to load.
    pub mib: usize,
    /// The size of one value, in KiB.
    pub value_kib: usize,
}

/// A base port with `n` free ports after it.
fn free_ports(n: u16) -> anyhow::Result<u16> {
    for _ in 0..200 {
        let base = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        if base.checked_add(n).is_some()
            && (0..n).all(|i| TcpListener::bind(("127.0.0.1", base + i)).is_ok())
        {
            return Ok(base);
        }
    }
    anyhow::bail!("no {n} consecutive free ports on 127.0.0.1")
}

/// Starts a networked member on free loopback ports joining `seeds`.
pub(crate) fn start(config: &Config, seeds: &[SocketAddr]) -> anyhow::Result<BlockingMember> {
    let mut config = config.clone();
    let shards = config.shards.unwrap_or(1);
    config.shards = Some(shards);
    config.network.bind = SocketAddr::from(([127, 0, 0, 1], free_ports(shards as u16)?));
    config.network.seeds = seeds.iter().map(ToString::to_string).collect();
    let builder = with_builtin_services(Member::builder(config));
    let member = futures_lite::future::block_on(corecast_net::start_member(builder))
        .context("cannot start a member")?;
    Ok(member.into())
}

fn network(m: &BlockingMember) -> anyhow::Result<&Network> {
    m.member()
        .extension::<Network>()
        .context("the member has no network")
}

/// Runs the benchmark; returns the report.
///
/// Errors: a member or the client that does not start, or a write that fails.
pub fn run(config: Config, spec: &MigrationSpec) -> anyhow::Result<String> {
    let a = start(&config, &[])?;
    let a_addr = a.member().invoker().member().address;
    let store: KvStore = a.object("migration")?;
    let value_len = spec.value_kib * 1024;
    let count = (spec.mib * 1024).div_ceil(spec.value_kib).max(1);
    eprintln!(
        "loading {} MiB ({count} values of {} KiB) into one member …",
        spec.mib, spec.value_kib
    );
    let loading = Instant::now();
    for i in 0..count {
        let mut value = vec![(i % 251) as u8; value_len];
        value[..8].copy_from_slice(&(i as u64).to_le_bytes());
        a.block_on(store.put(format!("k{i}").as_bytes(), &value))?;
        if (i + 1) % (count / 10).max(1) == 0 {
            eprintln!("  {} %", (i + 1) * 100 / count);
        }
    }
    eprintln!("loaded in {:.1} s", loading.elapsed().as_secs_f64());

    // A serial client incrementing counters, measured before and during the rebalance.
    let client: BlockingMember = futures_lite::future::block_on(corecast_net::start_client(
        with_builtin_services(Member::builder(Config {
            shards: Some(1),
            io_memory_kib: config.io_memory_kib,
            ..Config::default()
        })),
        &[a_addr.to_string()],
        Duration::from_secs(10),
    ))
    .context("cannot start the client")?
    .into();
    let client = Arc::new(client);
    let phase = Arc::new(AtomicU8::new(0));
    let probe = {
        let (client, phase) = (client.clone(), phase.clone());
        std::thread::spawn(move || -> anyhow::Result<[Measured; 2]> {
            let counters = (0..64)
                .map(|i| client.object::<Counter>(&format!("probe-{i}")))
                .collect::<Result<Vec<_>, _>>()?;
            let mut measured = [Measured::new(), Measured::new()];
            let mut started = [Instant::now(), Instant::now()];
            let mut last = 0;
            let mut i = 0usize;
            loop {
                let now = phase.load(Ordering::Relaxed);
                if now == 2 {
                    measured[last].elapsed = started[last].elapsed();
                    return Ok(measured);
                }
                if now != last as u8 {
                    measured[last].elapsed = started[last].elapsed();
                    last = usize::from(now);
                    started[last] = Instant::now();
                }
                let t = Instant::now();
                let ok = client.block_on(counters[i % 64].inc(1)).is_ok();
                measured[last].record_result(t.elapsed(), ok);
                i += 1;
            }
        })
    };
    std::thread::sleep(Duration::from_secs(1));

    let before = network(&a)?.stream_stats();
    eprintln!("a second member joins; rebalancing …");
    let rebalance = Instant::now();
    phase.store(1, Ordering::Relaxed);
    let b = start(&config, &[a_addr])?;
    let mut last_report = Instant::now();
    loop {
        let status = network(&a)?.status();
        let m = status.migrations;
        if status.members.len() == 2
            && m.planned + m.in_flight == 0
            && status.members.iter().all(|s| s.owned > 0)
        {
            break;
        }
        if last_report.elapsed() > Duration::from_secs(1) {
            eprintln!(
                "  planned {}  in flight {}  done {}",
                m.planned, m.in_flight, m.done
            );
            last_report = Instant::now();
        }
        anyhow::ensure!(
            rebalance.elapsed() < Duration::from_secs(600),
            "the rebalance did not finish in 10 minutes"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let took = rebalance.elapsed();
    let failed = network(&a)?.status().migrations.failed;
    phase.store(2, Ordering::Relaxed);
    let [idle, busy] = probe
        .join()
        .map_err(|_| anyhow::anyhow!("the probe thread panicked"))??;
    let after = network(&a)?.stream_stats();
    let streams = StreamStats {
        streams: after.streams - before.streams,
        bytes: after.bytes - before.bytes,
        micros: after.micros - before.micros,
    };

    // Every value is still there, read through the client from wherever it lives now.
    let check: KvStore = client.object("migration")?;
    for i in (0..count).step_by((count / 64).max(1)) {
        let got = client
            .block_on(check.get(format!("k{i}").as_bytes()))?
            .with_context(|| format!("value k{i} is missing after the rebalance"))?;
        anyhow::ensure!(
            got.len() == value_len && got[..8] == (i as u64).to_le_bytes(),
            "value k{i} changed in the migration"
        );
    }
    let table = network(&a)?.table().context("no partition table")?;
    let moved_owners = table.owned_by(network(&b)?.id());

    let mut out = String::new();
    use std::fmt::Write;
    let shards = config.shards.unwrap_or(1);
    let _ = writeln!(
        out,
        "migration: {} MiB ({count} values of {} KiB) on one member, a second joins; {shards} shard(s) per member, loopback, one process",
        spec.mib, spec.value_kib
    );
    let _ = writeln!(
        out,
        "rebalance: {:.2} s; {moved_owners} partitions now owned by the new member; {} streams, {:.0} MiB sent, {failed} migrations retried",
        took.as_secs_f64(),
        streams.streams,
        streams.bytes as f64 / 1048576.0
    );
    let _ = writeln!(
        out,
        "throughput: {:.0} MB/s per stream (mean over streams), {:.0} MB/s aggregate over the rebalance",
        streams.mb_per_sec(),
        streams.bytes as f64 / took.as_secs_f64().max(1e-9) / 1e6
    );
    let _ = writeln!(
        out,
        "{:<28} {:>9} {:>9} {:>9} {:>9} {:>9} {:>7}",
        "counter-inc, serial client", "ops/s", "p50 µs", "p99 µs", "p99.9 µs", "max µs", "errors"
    );
    for (name, m) in [("before the join", &idle), ("during the rebalance", &busy)] {
        let us = |ns: u64| ns as f64 / 1000.0;
        let _ = writeln!(
            out,
            "{:<28} {:>9.0} {:>9.1} {:>9.1} {:>9.1} {:>9.1} {:>7}",
            name,
            m.ops_per_sec(),
            us(m.at(0.5)),
            us(m.at(0.99)),
            us(m.at(0.999)),
            us(m.max()),
            m.errors
        );
    }
    match Arc::try_unwrap(client) {
        Ok(client) => client.shutdown(),
        Err(_) => anyhow::bail!("the client is still in use"),
    }
    b.shutdown();
    a.shutdown();
    Ok(out)
}
