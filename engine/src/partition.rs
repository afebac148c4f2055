//! Partition and shard identities, and the stable hash that maps key bytes to a partition.
//!
//! Owns: [`PartitionId`], [`PartitionCount`], [`ShardId`], [`ShardCount`], [`partition_of`].
//! The hash is MurmurHash3 x86_32 with Hazelcast's seed, written out here so that its value is
//! fixed by this file alone: the same key lands on the same partition on every build, platform
//! and version (the fixed vectors in the tests pin it). `ahash` is for in-memory maps only.

use std::fmt;

/// Hazelcast's murmur seed (`HashUtil.MURMUR3_32_SEED`); kept so partition ids are familiar.
const PARTITION_SEED: u32 = 0x0100_0193;

/// A partition of the cluster's key space, `0..partition_count`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PartitionId(pub u32);

impl fmt::Display for PartitionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "partition {}", self.0)
    }
}

/// The number of partitions, fixed for the life of a cluster (default 271).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PartitionCount(u32);

impl PartitionCount {
    /// A partition count; `None` for zero, which would leave keys nowhere to go.
    pub fn new(count: u32) -> Option<Self> {
        (count > 0).then_some(Self(count))
    }

    /// The count as a number.
    pub fn get(self) -> u32 {
        self.0
    }

    /// Every partition id, in order.
    pub fn all(self) -> impl Iterator<Item = PartitionId> {
        (0..self.0).map(PartitionId)
    }

    /// The partition that owns `key`.
    pub fn partition_of(self, key: &[u8]) -> PartitionId {
        partition_of(key, self)
    }
}

/// One shard (core) of a member, `0..shard_count`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ShardId(pub u32);

impl fmt::Display for ShardId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "shard {}", self.0)
    }
}

/// The number of shards a member runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ShardCount(u32);

impl ShardCount {
    /// A shard count; `None` for zero.
    pub fn new(count: u32) -> Option<Self> {
        (count > 0).then_some(Self(count))
    }

    /// The count as a number.
    pub fn get(self) -> u32 {
        self.0
    }

    /// The shard that holds partition `p` on this member: `p % shards`.
    pub fn shard_of(self, partition: PartitionId) -> ShardId {
        ShardId(partition.0 % self.0)
    }

    /// Where partition `p` sits in its shard's dense container array: `p / shards`.
    pub fn local_index(self, partition: PartitionId) -> usize {
        (partition.0 / self.0) as usize
    }

    /// The partitions shard `shard` holds, in order.
    pub fn partitions_of(
        self,
        shard: ShardId,
        count: PartitionCount,
    ) -> impl Iterator<Item = PartitionId> {
        (shard.0..count.get())
            .step_by(self.0 as usize)
            .map(PartitionId)
    }

    /// How many partitions shard `shard` holds.
    pub fn partition_slots(self, shard: ShardId, count: PartitionCount) -> usize {
        self.partitions_of(shard, count).count()
    }
}

/// The partition that owns `key`: `|murmur3_x86_32(key, seed)| % count`, as Hazelcast computes it.
pub fn partition_of(key: &[u8], count: PartitionCount) -> PartitionId {
    let hash = murmur3_x86_32(key, PARTITION_SEED) as i32;
    // Hazelcast's hashToIndex: |i32::MIN| does not fit, it maps to 0.
    let positive = if hash == i32::MIN {
        0
    } else {
        hash.unsigned_abs()
    };
    PartitionId(positive % count.get())
}

/// MurmurHash3, x86 32-bit variant (Austin Appleby's reference algorithm).
pub fn murmur3_x86_32(data: &[u8], seed: u32) -> u32 {
    const C1: u32 = 0xcc9e_2d51;
    const C2: u32 = 0x1b87_3593;
    let mut h = seed;
    let mut blocks = data.chunks_exact(4);
    for block in &mut blocks {
        let k = u32::from_le_bytes([block[0], block[1], block[2], block[3]]);
        h ^= mix_k(k, C1, C2);
        h = h.rotate_left(13).wrapping_mul(5).wrapping_add(0xe654_6b64);
    }
    let tail = blocks.remainder();
    if !tail.is_empty() {
        let k = tail
            .iter()
            .enumerate()
            .fold(0u32, |k, (i, b)| k | (u32::from(*b) << (8 * i)));
        h ^= mix_k(k, C1, C2);
    }
    h ^= data.len() as u32;
    fmix32(h)
}

fn mix_k(k: u32, c1: u32, c2: u32) -> u32 {
    k.wrapping_mul(c1).rotate_left(15).wrapping_mul(c2)
}

fn fmix32(mut h: u32) -> u32 {
    h ^= h >> 16;
    h = h.wrapping_mul(0x85eb_ca6b);
    h ^= h >> 13;
    h = h.wrapping_mul(0xc2b2_ae35);
    h ^ (h >> 16)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p271() -> PartitionCount {
        PartitionCount(271)
    }

    #[test]
    fn murmur3_matches_the_reference_vectors() {
        assert_eq!(murmur3_x86_32(b"", 0), 0);
        assert_eq!(murmur3_x86_32(b"", 1), 0x514e_28b7);
        assert_eq!(murmur3_x86_32(b"hello", 0), 0x248b_fa47);
        assert_eq!(
            murmur3_x86_32(b"The quick brown fox jumps over the lazy dog", 0),
            0x2e4f_f723
        );
        assert_eq!(murmur3_x86_32(&[0xff, 0xff, 0xff, 0xff], 0), 0x7629_3b50);
    }

    #[test]
    fn partition_ids_of_fixed_keys_never_change() {
        // Pinned values: changing them moves every key of every existing cluster.
        let got: Vec<u32> = ["0counter", "1counter", "2counter", "3counter", "", "key-42"]
            .iter()
            .map(|k| partition_of(k.as_bytes(), p271()).0)
            .collect();
        assert_eq!(got, PINNED_271);
    }

    // Cross-checked with Python's mmh3 (seed 0x01000193, |signed hash| % 271).
    const PINNED_271: [u32; 6] = [163, 245, 69, 115, 238, 5];

    #[test]
    fn every_partition_sits_on_exactly_one_shard_and_one_slot() {
        for shards in 1..=7 {
            let shard_count = ShardCount(shards);
            let mut seen = vec![0u32; 271];
            for s in 0..shards {
                for (slot, p) in shard_count.partitions_of(ShardId(s), p271()).enumerate() {
                    assert_eq!(shard_count.shard_of(p), ShardId(s));
                    assert_eq!(shard_count.local_index(p), slot);
                    seen[p.0 as usize] += 1;
                }
            }
            assert!(seen.iter().all(|n| *n == 1), "shards={shards}: {seen:?}");
        }
    }

    #[test]
    fn keys_spread_over_all_partitions() {
        let mut hit = vec![false; 271];
        for i in 0..20_000 {
            hit[partition_of(format!("k{i}").as_bytes(), p271()).0 as usize] = true;
        }
        assert!(hit.iter().all(|h| *h));
    }

    #[test]
    fn zero_counts_are_refused() {
        assert!(PartitionCount::new(0).is_none());
        assert!(ShardCount::new(0).is_none());
    }
}
