//! `--map-memory N`: what a map entry costs beyond its key and value.
//!
//! Two measurements of N entries (the member first, so memory the allocator keeps after the
//! second does not hide the first's growth) with `--value-size`-byte values under `key-<i>` keys:
//! - **accounted**: the map's own stores (one per partition, filled as the member would) sum
//!   their heap bytes — the table's slots and control bytes, the packed entries — minus the keys' and
//!   values' bytes. Exact, without the allocator's rounding.
//! - **resident**: an embedded member (1 shard, backup-count 0) is filled through `Map::put_all`;
//!   the process's resident memory grows by this much per entry, minus key and value: what the
//!   allocator really hands out, and everything the member keeps per entry.

use std::time::Instant;

use anyhow::Context;
use corecast_engine::{partition_of, BlockingMember, Config, Member, PartitionCount};
use corecast_services::builtin::with_builtin_services;
use corecast_services::map::store::{pack, Eviction, Store};
use corecast_services::map::Map;

/// The measured costs.
pub struct MemoryReport {
    /// Entries stored.
    pub entries: usize,
    /// Key plus value bytes per entry, on average.
    pub payload: f64,
    /// Accounted bytes per entry beyond key and value.
    pub accounted: f64,
    /// Resident bytes per entry beyond key and value.
    pub resident: f64,
    /// Seconds the member took to take the entries.
    pub fill_secs: f64,
}

fn rss_bytes() -> anyhow::Result<u64> {
    let statm =
        std::fs::read_to_string("/proc/self/statm").context("cannot read /proc/self/statm")?;
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .context("unexpected /proc/self/statm")?;
    Ok(pages * 4096)
}

/// Measures `entries` entries of `value_size`-byte values.
///
/// Errors: the member does not start, or a put fails.
pub fn run(config: Config, entries: usize, value_size: usize) -> anyhow::Result<MemoryReport> {
    let partitions = PartitionCount::new(config.partition_count).context("partition-count 0")?;
    let value = vec![7u8; value_size];
    let key = |i: usize| format!("key-{i}").into_bytes();
    let payload: usize = (0..entries).map(|i| key(i).len() + value_size).sum();

    eprintln!("map memory: {entries} entries into an embedded member …");
    let mut config = config;
    config.shards = Some(1);
    config.backups.backup_count = 0;
    let member: BlockingMember = with_builtin_services(Member::builder(config))
        .start_blocking()
        .context("cannot start the embedded member")?;
    let map = member.object::<Map>("memory")?;
    // Warm the member's other allocations (connections, buffers) before the baseline.
    member.block_on(map.set(b"warm", b"up"))?;
    member.block_on(map.delete(b"warm"))?;
    let before = rss_bytes()?;
    let start = Instant::now();
    let batch = 10_000;
    for from in (0..entries).step_by(batch) {
        let chunk: Vec<(Vec<u8>, Vec<u8>)> = (from..(from + batch).min(entries))
            .map(|i| (key(i), value.clone()))
            .collect();
        member.block_on(map.put_all(&chunk))?;
    }
    let fill_secs = start.elapsed().as_secs_f64();
    let after = rss_bytes()?;
    anyhow::ensure!(
        member.block_on(map.size())? == entries as u64,
        "entries went missing"
    );
    member.shutdown();
    eprintln!("map memory: {entries} entries in per-partition stores …");
    let mut stores: Vec<Store> = (0..partitions.get()).map(|_| Store::default()).collect();
    for i in 0..entries {
        let k = key(i);
        let p = partition_of(&k, partitions);
        stores[p.0 as usize].insert(pack(&k, &value, 0), Eviction::Lru, 0);
    }
    let heap: usize = stores.iter().map(Store::heap_bytes).sum();
    drop(stores);

    let n = entries as f64;
    Ok(MemoryReport {
        entries,
        payload: payload as f64 / n,
        accounted: (heap as f64 - payload as f64) / n,
        resident: (after.saturating_sub(before) as f64 - payload as f64) / n,
        fill_secs,
    })
}

/// The report as a table.
pub fn table(r: &MemoryReport) -> String {
    format!(
        "map memory: {} entries, {:.1} B key+value each (filled in {:.2} s)\n\
         {:<44} {:>8.1} B/entry\n{:<44} {:>8.1} B/entry\n",
        r.entries,
        r.payload,
        r.fill_secs,
        "overhead, accounted (table slots, headers)",
        r.accounted,
        "overhead, resident (process RSS growth)",
        r.resident
    )
}
