//! Split-brain merge of the Map: the entries of one partition of the cluster that lost (the
//! smaller side), carried to the partition's owner in the cluster it joins, and taken there where
//! the map's merge policy says the merging entry wins.
//!
//! [`merge_ops`] (the service's `merge`) cuts each map's live entries into [`Merge`] operations
//! of at most [`MAX_MERGE_BYTES`] of entries each (an entry bigger than that goes alone), so a
//! big partition does not become one frame near `network.max-frame-kib`. On the owner, a
//! [`Merge`] compares each entry with the key's live entry through
//! [`MergePolicy::merging_wins`] (hits and update times, the same rule for every service) and
//! stores each winner through the path a put takes: max-entries and eviction apply, listeners get
//! the `Added` or `Updated` event a put publishes, and the entry keeps the merging side's expiry,
//! update time and hits. Entries whose expiry passed on the way are skipped. Its backup is the
//! map's [`Apply`] with the steps it took.

use corecast_engine::events::now_millis;
use corecast_engine::prelude::*;

use super::{
    put_entry, store, write_steps, Apply, Container, EntryData, Hits, MapService, Written,
};

/// The most entry bytes (keys, values and their fixed fields) one [`Merge`] carries, unless a
/// single entry is bigger: 1 MiB keeps every merge frame far below the default 16 MiB
/// `max-frame-kib` and lets the target interleave other operations between batches.
pub const MAX_MERGE_BYTES: usize = 1 << 20;

/// What one entry adds to a [`Merge`]'s archive besides its key and value: two length-prefixed
/// vectors (8 bytes each), expiry and update time (8 each) and hits (4), rounded up for
/// alignment.
const ENTRY_OVERHEAD: usize = 48;

/// Merges one map's entries from the side that lost a split brain into the key's partition on
/// the side it joins.
#[derive(Archive, Serialize, Deserialize, Debug)]
pub struct Merge {
    /// The map.
    pub name: String,
    /// The map's merge policy, as [`MergePolicy::to_wire`] gives it.
    pub policy: u8,
    /// The merging entries, all of the partition the operation runs on.
    pub entries: Vec<EntryData>,
}

/// What a [`Merge`] took.
#[derive(Archive, Serialize, Deserialize, Debug, Default, PartialEq, Eq)]
pub struct Merged {
    /// The entries stored, as their index in [`Merge::entries`] with what storing each did (the
    /// backup's steps are built from it).
    pub taken: Vec<(u32, Written)>,
    /// Entries whose policy let them win but which the map refused (full, with eviction
    /// `none`; a key over the longest the map takes).
    pub refused: u32,
}

impl Merged {
    /// How many merging entries the map took.
    pub fn count(&self) -> usize {
        self.taken.len()
    }
}

impl Operation for Merge {
    type Service = MapService;
    type Response = Merged;
    const ID: OpId = OpId(15);

    fn object_name(op: &Archived<Self>) -> Option<&str> {
        Some(op.name.as_str())
    }

    /// Errors: a policy byte that names no [`MergePolicy`] (nothing is merged).
    fn run(op: &Archived<Self>, ctx: &mut OpContext<MapService>) -> Result<Merged, OpError> {
        let policy = MergePolicy::from_wire(op.policy).ok_or_else(|| {
            OpError::failed(format!(
                "merge of map `{}`: policy byte {} names no merge policy",
                op.name, op.policy
            ))
        })?;
        let now = now_millis();
        let mut merged = Merged::default();
        for (i, e) in op.entries.iter().enumerate() {
            let meta = e.meta();
            if meta.expires_at != 0 && meta.expires_at <= now {
                continue;
            }
            let merging = EntryStats {
                hits: meta.hits,
                updated_millis: meta.updated_millis,
            };
            if !policy.merging_wins(merging, existing(ctx.container, &op.name, &e.key, now)) {
                continue;
            }
            let entry = (e.key.as_slice(), e.value.as_slice());
            match put_entry(ctx, &op.name, entry, meta, Hits::Carried, false, now) {
                Ok(w) => merged.taken.push((i as u32, w)),
                Err(err) => {
                    // One entry the map cannot hold must not undo the others (already stored,
                    // and backed up by this operation's steps): it is counted and logged.
                    tracing::warn!(map = %op.name, error = %err, "merging entry refused");
                    merged.refused += 1;
                }
            }
        }
        Ok(merged)
    }

    fn should_backup(_: &Archived<Self>, merged: &Merged) -> bool {
        !merged.taken.is_empty()
    }

    fn backup_operation(op: &Archived<Self>, merged: &Merged) -> Option<Backup> {
        // In order: a later entry's eviction may remove an earlier one.
        let steps = merged
            .taken
            .iter()
            .filter_map(|(i, w)| {
                let e = op.entries.get(*i as usize)?;
                Some(write_steps(&e.key, &e.value, w))
            })
            .flatten()
            .collect();
        Some(Backup::of(&Apply {
            name: op.name.to_string(),
            steps,
        }))
    }
}

/// What the merge policy compares of `key`'s live entry, if it has one.
fn existing(container: &Container, name: &str, key: &[u8], now: u64) -> Option<EntryStats> {
    let e = container.get(name)?.get(key, now)?;
    Some(EntryStats {
        hits: store::hits(e),
        updated_millis: store::updated(e),
    })
}

/// Pushes to `out` the [`Merge`] operations carrying every map's entries live at `now`, each
/// under the policy configured for its map, in batches of at most [`MAX_MERGE_BYTES`].
pub fn merge_ops(container: &Container, out: &mut MergeOps<'_>, now: u64) {
    for (name, s) in container {
        let policy = out.policy(Some(name)).to_wire();
        let live = s.iter().filter(|e| store::live(e, now));
        for entries in batches(live) {
            let op = Merge {
                name: name.clone(),
                policy,
                entries,
            };
            if let Err(e) = out.push(&op) {
                // Nothing else can carry these entries over: say which map lost them.
                tracing::error!(map = %name, partition = %out.partition(), error = %e,
                    "map entries not merged");
            }
        }
    }
}

/// Cuts entries into batches of at most [`MAX_MERGE_BYTES`] (an entry bigger than that alone).
fn batches<'a>(entries: impl Iterator<Item = &'a store::Packed>) -> Vec<Vec<EntryData>> {
    let mut out = Vec::new();
    let mut batch = Vec::new();
    let mut bytes = 0;
    for e in entries {
        let size = e.len() + ENTRY_OVERHEAD;
        if !batch.is_empty() && bytes + size > MAX_MERGE_BYTES {
            out.push(std::mem::take(&mut batch));
            bytes = 0;
        }
        batch.push(EntryData::of(e));
        bytes += size;
    }
    if !batch.is_empty() {
        out.push(batch);
    }
    out
}

#[cfg(test)]
mod tests {
    use corecast_engine::payload::encode;

    use super::*;
    use crate::map::store::{pack_with, Eviction, Meta, Store};

    fn store_of(sizes: &[usize]) -> Store {
        let mut s = Store::default();
        for (i, &size) in sizes.iter().enumerate() {
            let e = pack_with(format!("k{i}").as_bytes(), &vec![1; size], Meta::default());
            s.insert(e, Eviction::Lru, 0);
        }
        s
    }

    fn archived_sizes(s: &Store) -> Vec<usize> {
        batches(s.iter())
            .into_iter()
            .map(|entries| {
                let op = Merge {
                    name: "m".into(),
                    policy: 0,
                    entries,
                };
                encode(&op).expect("archive").len()
            })
            .collect()
    }

    #[test]
    fn batches_stay_under_the_bound_and_an_entry_bigger_than_it_goes_alone() {
        let sizes = archived_sizes(&store_of(&[100_000; 25]));
        assert!(sizes.len() >= 3, "{sizes:?}");
        assert!(sizes.iter().all(|&n| n <= MAX_MERGE_BYTES), "{sizes:?}");
        let big = MAX_MERGE_BYTES + 1;
        let store = store_of(&[10, big, 10, 10]);
        let sizes = archived_sizes(&store);
        assert!(sizes.iter().filter(|&&n| n > big).count() == 1);
        // Whatever order the store keeps them in, the big entry is alone in its batch.
        let counts: Vec<(usize, bool)> = batches(store.iter())
            .iter()
            .map(|b| (b.len(), b.iter().any(|e| e.value.len() == big)))
            .collect();
        assert!(counts.contains(&(1, true)), "{counts:?}");
        assert_eq!(counts.iter().map(|c| c.0).sum::<usize>(), 4, "{counts:?}");
    }

    #[test]
    fn many_small_entries_share_one_operation() {
        assert_eq!(archived_sizes(&store_of(&[10; 1000])).len(), 1);
    }
}
