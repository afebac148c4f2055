//! One map's entries in one partition, packed for memory: the store a map's container holds.
//!
//! Each entry is one heap allocation: a 26-byte header, then the key, then the value. The header
//! holds, little-endian: the expiry time in milliseconds since the Unix epoch (48 bits, 0 for
//! none), the key length (16 bits), an access stamp for eviction (32 bits), the time the entry was
//! last written on its owner in milliseconds since the epoch (48 bits: good until the year 10889),
//! its hits (32 bits, saturating) and the entry's whole length (32 bits). That length makes the
//! entry's owner a thin pointer ([`Packed`], 8 bytes), and the entries sit in the slots of one
//! `HashTable` by key hash, so the fixed cost of an entry is its 8-byte slot with hashbrown's
//! control byte (at the table's load factor) and the header. A lookup touches the control group,
//! the slot and the entry.
//!
//! Measured against the two layouts before it (2026-12-07): a `HashTable<u32>` of indexes into
//! a `Vec` of `Box<[u8]>` took one dependent cache miss more per lookup (the vector's box: a
//! third of the key comparison's samples in a front-door INCR profile); boxes in the table's
//! slots took that miss away (INCR per member CPU-second +5.7 %, SET +4 %) but their 16-byte
//! slots cost 23 B more resident per entry at 1 M entries, half empty after the table doubled.
//! Thin pointers keep the first's speed at less memory than either.
//!
//! The update time and the hits are what split-brain merge policies compare (`latest-update`,
//! `higher-hits`); the store keeps them and leaves their meaning to the operations: the owner
//! stamps a write with its clock and counts a read as a hit ([`Store::read`]), a backup stores
//! what the owner sent.
//!
//! Measured (`corecast-bench --map-memory 1000000`, keys `key-<i>`): the 10 bytes they take
//! raised the accounted overhead from 39.3 to 49.3 B per entry; the resident overhead depends on
//! where an entry falls among mimalloc's size classes: with 100-byte values it went from 62–68 to
//! 98 B (a 122-byte entry fitted the 128-byte class, a 132-byte one takes 160), with 80-byte
//! values it stayed at 72 B (102 and 112 bytes both take 112), with 200-byte values 65 → 96 B.
//!
//! Entries with an expiry are also queued by deadline (`expiring`, deadline and key hash); stale
//! queue items (the entry changed or went) are skipped when they come up.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::ptr::NonNull;

use hashbrown::HashTable;

/// Bytes of an entry's header.
const HEADER: usize = 26;

/// Where the header holds the entry's whole length (32 bits, its last field).
const LEN_AT: usize = 22;

/// The longest value an entry holds, its length in 32 bits with the header and the longest key.
pub const MAX_VALUE: usize = u32::MAX as usize - HEADER - MAX_KEY;

/// The largest time the 48-bit header fields hold (ms since the epoch).
const MAX_MILLIS: u64 = (1 << 48) - 1;

/// The longest key a map takes.
pub const MAX_KEY: usize = u16::MAX as usize;

/// Fixed seeds: the same key hashes the same in every store (deterministic tests and sizes).
fn hasher() -> ahash::RandomState {
    ahash::RandomState::with_seeds(
        0x243f_6a88_85a3_08d3,
        0x1319_8a2e_0370_7344,
        0xa409_3822_299f_31d0,
        0x082e_fa98_ec4e_6c89,
    )
}

/// One packed entry, owned through a thin pointer: its length is in its header ([`LEN_AT`]).
/// It derefs to the entry's bytes, header first. The unsafe code here (taking over the box,
/// the slices, the drop) ran clean under Miri, stacked and tree borrows, on 2026-12-07: entries
/// of 0 to 300 value bytes packed, rewritten through `DerefMut`, sent to another thread, dropped.
pub struct Packed(NonNull<u8>);

// SAFETY: a `Packed` owns its allocation alone, as the `Box<[u8]>` it was made from did.
#[allow(unsafe_code)]
unsafe impl Send for Packed {}
// SAFETY: as above; `&Packed` only reads.
#[allow(unsafe_code)]
unsafe impl Sync for Packed {}

impl Packed {
    /// Takes over `bytes`, a whole entry whose header holds its length.
    fn from_box(bytes: Box<[u8]>) -> Self {
        debug_assert!(bytes.len() >= HEADER && entry_len(&bytes) == bytes.len());
        let raw = Box::into_raw(bytes).cast::<u8>();
        match NonNull::new(raw) {
            Some(p) => Packed(p),
            None => unreachable!("Box::into_raw never returns null"),
        }
    }

    /// The entry's length, read from its header.
    fn len_in_header(&self) -> usize {
        // SAFETY: every entry starts with a full header (`from_box`), owned by `self`.
        #[allow(unsafe_code)]
        let header = unsafe { std::slice::from_raw_parts(self.0.as_ptr(), HEADER) };
        entry_len(header)
    }
}

impl std::ops::Deref for Packed {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        // SAFETY: the allocation holds the header's length of initialised bytes, owned by `self`.
        #[allow(unsafe_code)]
        unsafe {
            std::slice::from_raw_parts(self.0.as_ptr(), self.len_in_header())
        }
    }
}

impl std::ops::DerefMut for Packed {
    fn deref_mut(&mut self) -> &mut [u8] {
        let len = self.len_in_header();
        // SAFETY: as for `deref`, borrowed mutably through `&mut self`. Callers rewrite the
        // length bytes only with the same length (`header` of the same entry size).
        #[allow(unsafe_code)]
        unsafe {
            std::slice::from_raw_parts_mut(self.0.as_ptr(), len)
        }
    }
}

impl Drop for Packed {
    fn drop(&mut self) {
        let len = self.len_in_header();
        let slice = std::ptr::slice_from_raw_parts_mut(self.0.as_ptr(), len);
        // SAFETY: the pointer and length are the `Box<[u8]>`'s that `from_box` took over.
        #[allow(unsafe_code)]
        drop(unsafe { Box::from_raw(slice) });
    }
}

impl std::fmt::Debug for Packed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Packed")
            .field("key", &key(self))
            .field("value_len", &value(self).len())
            .finish()
    }
}

/// The whole length of an entry, from its header.
fn entry_len(e: &[u8]) -> usize {
    u32::from_le_bytes([e[LEN_AT], e[LEN_AT + 1], e[LEN_AT + 2], e[LEN_AT + 3]]) as usize
}

/// What an entry records besides its key and value.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Meta {
    /// When it expires, in ms since the epoch; 0 for never.
    pub expires_at: u64,
    /// When its value was last written on the owner, in ms since the epoch (0: unknown).
    pub updated_millis: u64,
    /// Reads of it on the owner (see the map's module doc for which operations count).
    pub hits: u32,
}

fn key_len(e: &[u8]) -> usize {
    u16::from_le_bytes([e[6], e[7]]) as usize
}

fn millis_at(e: &[u8], at: usize) -> u64 {
    let mut b = [0u8; 8];
    b[..6].copy_from_slice(&e[at..at + 6]);
    u64::from_le_bytes(b)
}

fn set_millis_at(e: &mut [u8], at: usize, v: u64) {
    e[at..at + 6].copy_from_slice(&v.min(MAX_MILLIS).to_le_bytes()[..6]);
}

/// The key of a packed entry.
pub fn key(e: &[u8]) -> &[u8] {
    &e[HEADER..HEADER + key_len(e)]
}

/// The value of a packed entry.
pub fn value(e: &[u8]) -> &[u8] {
    &e[HEADER + key_len(e)..]
}

/// The expiry time of a packed entry (ms since the epoch), 0 for none.
pub fn expires(e: &[u8]) -> u64 {
    millis_at(e, 0)
}

/// When a packed entry's value was last written on the owner (ms since the epoch).
pub fn updated(e: &[u8]) -> u64 {
    millis_at(e, 12)
}

/// A packed entry's hits.
pub fn hits(e: &[u8]) -> u32 {
    u32::from_le_bytes([e[18], e[19], e[20], e[21]])
}

/// Everything a packed entry records besides key and value.
pub fn meta(e: &[u8]) -> Meta {
    Meta {
        expires_at: expires(e),
        updated_millis: updated(e),
        hits: hits(e),
    }
}

fn stamp(e: &[u8]) -> u32 {
    u32::from_le_bytes([e[8], e[9], e[10], e[11]])
}

fn set_stamp(e: &mut [u8], v: u32) {
    e[8..12].copy_from_slice(&v.to_le_bytes());
}

fn set_expires(e: &mut [u8], at: u64) {
    set_millis_at(e, 0, at);
}

fn set_hits(e: &mut [u8], v: u32) {
    e[18..22].copy_from_slice(&v.to_le_bytes());
}

/// Packs an entry with no update time and no hits (as for an entry whose history is unknown).
/// `key` must be at most [`MAX_KEY`] bytes (the caller checks).
pub fn pack(key: &[u8], value: &[u8], expires_at: u64) -> Packed {
    pack_with(
        key,
        value,
        Meta {
            expires_at,
            ..Meta::default()
        },
    )
}

/// Packs an entry with its expiry, update time and hits. `key` must be at most [`MAX_KEY`]
/// bytes and `value` at most [`MAX_VALUE`] (the caller checks; longer ones are cut here, so the
/// layout stays sound whatever a peer sent).
pub fn pack_with(key: &[u8], value: &[u8], meta: Meta) -> Packed {
    packed(key, value, meta, 0)
}

/// [`pack_with`], with access stamp `stamp`.
fn packed(key: &[u8], value: &[u8], meta: Meta, stamp: u32) -> Packed {
    let key = &key[..key.len().min(MAX_KEY)];
    let value = &value[..value.len().min(MAX_VALUE)];
    // Built by appending (no zero-fill first): the exact capacity makes the box free to take.
    let mut e = Vec::with_capacity(HEADER + key.len() + value.len());
    e.extend_from_slice(&header(key.len(), value.len(), meta, stamp));
    e.extend_from_slice(key);
    e.extend_from_slice(value);
    Packed::from_box(e.into_boxed_slice())
}

/// The header of an entry with a key of `key_len` bytes and a value of `value_len` (at most
/// [`MAX_KEY`] and [`MAX_VALUE`]), `meta` and access stamp `stamp`.
fn header(key_len: usize, value_len: usize, meta: Meta, stamp: u32) -> [u8; HEADER] {
    let mut h = [0u8; HEADER];
    h[..6].copy_from_slice(&meta.expires_at.min(MAX_MILLIS).to_le_bytes()[..6]);
    h[6..8].copy_from_slice(&(key_len.min(MAX_KEY) as u16).to_le_bytes());
    h[8..12].copy_from_slice(&stamp.to_le_bytes());
    h[12..18].copy_from_slice(&meta.updated_millis.min(MAX_MILLIS).to_le_bytes()[..6]);
    h[18..22].copy_from_slice(&meta.hits.to_le_bytes());
    let len = (HEADER + key_len + value_len).min(u32::MAX as usize) as u32;
    h[LEN_AT..HEADER].copy_from_slice(&len.to_le_bytes());
    h
}

/// How the access stamp is kept, and which entry eviction picks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Eviction {
    /// Least recently used (stamp: seconds of the last access).
    Lru,
    /// Least frequently used (stamp: accesses, saturating).
    Lfu,
    /// Any entry.
    Random,
}

/// One map's entries in one partition.
pub struct Store {
    entries: HashTable<Packed>,
    expiring: BinaryHeap<Reverse<(u64, u64)>>,
    hasher: ahash::RandomState,
}

/// Where a key's entry sits in a [`Store`], found once for a read-modify-write: the key's hash
/// and the entry's slot (`None`: absent). A write given a spot checks that the entry there
/// still has the key before it trusts it (an insert in between may have grown the table and
/// moved every entry, an eviction emptied the slot), else looks the key up again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Spot {
    hash: u64,
    index: Option<u32>,
}

impl Default for Store {
    fn default() -> Self {
        Self {
            entries: HashTable::new(),
            expiring: BinaryHeap::new(),
            hasher: hasher(),
        }
    }
}

impl Store {
    fn hash(&self, key: &[u8]) -> u64 {
        self.hasher.hash_one(key)
    }

    /// The slot of `k`'s entry.
    fn find(&self, hash: u64, k: &[u8]) -> Option<usize> {
        self.entries.find_bucket_index(hash, |e| key(e) == k)
    }

    /// The entry in slot `i`, found with nothing stored or removed since.
    fn slot(&mut self, i: usize) -> &mut Packed {
        match self.entries.get_bucket_mut(i) {
            Some(e) => e,
            None => unreachable!("slot {i} was found full with nothing stored or removed since"),
        }
    }

    /// Where `key`'s entry is, expired or not.
    pub fn locate(&self, k: &[u8]) -> Spot {
        let hash = self.hash(k);
        let index = self.find(hash, k).map(|i| i as u32);
        Spot { hash, index }
    }

    /// The entry at `spot` (found by [`Store::locate`] with nothing stored or removed since),
    /// expired or not.
    pub fn at(&self, spot: Spot) -> Option<&Packed> {
        spot.index.and_then(|i| self.entries.get_bucket(i as usize))
    }

    /// `spot`'s index if the entry there still has key `k`, else a fresh look-up by its hash.
    fn index_at(&self, spot: Spot, k: &[u8]) -> Option<usize> {
        match spot.index {
            Some(i) if self.at(spot).is_some_and(|e| key(e) == k) => Some(i as usize),
            _ => self.find(spot.hash, k),
        }
    }

    /// Entries, expired ones included until they are swept.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Live entries at `now` (all of them when none has an expiry).
    pub fn live_len(&self, now: u64) -> usize {
        if self.expiring.is_empty() {
            return self.entries.len();
        }
        self.entries.iter().filter(|e| live(e, now)).count()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The live entry of `key` at `now`.
    pub fn get(&self, k: &[u8], now: u64) -> Option<&Packed> {
        let e = self.entries.find(self.hash(k), |e| key(e) == k)?;
        live(e, now).then_some(e)
    }

    /// The live entry of `key` at `now`, read by a caller on the owner: counts a hit (saturating)
    /// and, with an eviction policy, notes the access for it. One lookup for both.
    pub fn read(&mut self, k: &[u8], now: u64, eviction: Option<Eviction>) -> Option<&Packed> {
        let hash = self.hash(k);
        let e = self.entries.find_mut(hash, |e| key(e) == k)?;
        if !live(e, now) {
            return None;
        }
        let seen = hits(e);
        set_hits(e, seen.saturating_add(1));
        let stamp = match eviction {
            Some(Eviction::Lru) => Some((now / 1000) as u32),
            Some(Eviction::Lfu) => Some(stamp(e).saturating_add(1)),
            Some(Eviction::Random) | None => None,
        };
        if let Some(v) = stamp {
            set_stamp(e, v);
        }
        Some(e)
    }

    /// Stores `entry` (packed) as it is, hits and update time included; returns the entry it
    /// replaced, expired or not.
    pub fn insert(&mut self, entry: Packed, policy: Eviction, now: u64) -> Option<Packed> {
        let mut entry = entry;
        let hash = self.hash(key(&entry));
        self.queue(expires(&entry), hash);
        set_stamp(&mut entry, stamp_of(policy, now));
        if let Some(i) = self.find(hash, key(&entry)) {
            return Some(std::mem::replace(self.slot(i), entry));
        }
        self.push(hash, entry);
        None
    }

    /// Stores `key` → `value` with `meta` as a caller's write at `now`: an entry live at `now`
    /// that it replaces passes its hits on (a write does not reset what reads counted) and is
    /// shown to `replaced` before it goes. An entry of the same size is overwritten in place,
    /// without an allocation. Returns whether a live entry was replaced, and the hits the stored
    /// entry has. `key` must be at most [`MAX_KEY`] bytes (the caller checks). `spot`: where
    /// [`Store::locate`] found the key (checked, see [`Spot`]), for the write of a
    /// read-modify-write without a second look-up; `None` looks it up.
    pub fn write(
        &mut self,
        spot: Option<Spot>,
        (key, value): (&[u8], &[u8]),
        meta: Meta,
        policy: Eviction,
        now: u64,
        replaced: impl FnOnce(&[u8]),
    ) -> (bool, u32) {
        let spot = spot.unwrap_or_else(|| self.locate(key));
        let hash = spot.hash;
        self.queue(meta.expires_at.min(MAX_MILLIS), hash);
        let stamp = stamp_of(policy, now);
        let Some(i) = self.index_at(spot, key) else {
            self.push(hash, packed(key, value, meta, stamp));
            return (false, meta.hits);
        };
        let old = self.slot(i);
        let was_live = live(old, now);
        let meta = if was_live {
            replaced(old);
            Meta {
                hits: hits(old),
                ..meta
            }
        } else {
            meta
        };
        if old.len() == HEADER + key.len() + value.len() {
            old[..HEADER].copy_from_slice(&header(key.len(), value.len(), meta, stamp));
            old[HEADER + key.len()..].copy_from_slice(value);
        } else {
            *old = packed(key, value, meta, stamp);
        }
        (was_live, meta.hits)
    }

    /// Queues deadline `at` (0: none) of the entry with key hash `hash`.
    fn queue(&mut self, at: u64, hash: u64) {
        if at != 0 {
            self.expiring.push(Reverse((at, hash)));
        }
    }

    fn push(&mut self, hash: u64, entry: Packed) {
        let hasher = &self.hasher;
        self.entries
            .insert_unique(hash, entry, |e| hasher.hash_one(key(e)));
    }

    /// Changes the expiry of `key`'s entry; false if there is none.
    pub fn set_expiry(&mut self, k: &[u8], at: u64) -> bool {
        let hash = self.hash(k);
        let Some(i) = self.find(hash, k) else {
            return false;
        };
        set_expires(self.slot(i), at);
        self.queue(at, hash);
        true
    }

    /// Removes `key`'s entry, expired or not.
    pub fn remove(&mut self, k: &[u8]) -> Option<Packed> {
        let hash = self.hash(k);
        let i = self.find(hash, k)?;
        self.remove_at(i)
    }

    fn remove_at(&mut self, i: usize) -> Option<Packed> {
        self.entries
            .get_bucket_entry(i)
            .ok()
            .map(|slot| slot.remove().0)
    }

    /// Drops every entry.
    pub fn clear(&mut self) -> Vec<Packed> {
        self.expiring.clear();
        self.entries.drain().collect()
    }

    /// Every entry (expired ones included until swept).
    pub fn iter(&self) -> impl Iterator<Item = &Packed> {
        self.entries.iter()
    }

    /// Removes entries whose expiry passed by `now`, at most `max`; returns them.
    pub fn expire(&mut self, now: u64, max: usize) -> Vec<Packed> {
        let mut gone = Vec::new();
        while gone.len() < max {
            match self.expiring.peek() {
                Some(Reverse((at, _))) if *at <= now => {}
                _ => break,
            }
            let Some(Reverse((at, hash))) = self.expiring.pop() else {
                break;
            };
            if let Ok(slot) = self.entries.find_entry(hash, |e| expires(e) == at) {
                gone.push(slot.remove().0);
            }
        }
        if self.expiring.len() > 64 && self.expiring.len() > 4 * self.entries.len() {
            // Mostly stale items (entries rewritten with new deadlines): rebuild.
            let mut fresh = BinaryHeap::with_capacity(self.entries.len());
            for e in &self.entries {
                let at = expires(e);
                if at != 0 {
                    fresh.push(Reverse((at, self.hasher.hash_one(key(e)))));
                }
            }
            self.expiring = fresh;
        }
        gone
    }

    /// Removes one entry chosen by `policy` among `samples` picked with `rng` (Hazelcast's and
    /// Redis's sampled eviction); returns it.
    pub fn evict(&mut self, policy: Eviction, rng: &mut u64, samples: usize) -> Option<Packed> {
        let n = self.entries.len();
        if n == 0 {
            return None;
        }
        let stamp_at = |i: usize| self.entries.get_bucket(i).map(|e| stamp(e));
        let best = if policy == Eviction::Random {
            self.sample(rng)
        } else if samples >= n {
            // Fewer entries than samples: look at them all.
            self.entries.iter_buckets().min_by_key(|&i| stamp_at(i))
        } else {
            (0..samples)
                .filter_map(|_| self.sample(rng))
                .min_by_key(|&i| stamp_at(i))
        };
        best.and_then(|i| self.remove_at(i))
    }

    /// A full slot picked with `rng`: random slots until one is full (the table is at least
    /// 7/16 full once it has grown, so a few tries), else the first full one after the last try.
    fn sample(&self, rng: &mut u64) -> Option<usize> {
        if self.entries.is_empty() {
            return None;
        }
        let buckets = self.entries.num_buckets();
        let mut start = 0;
        for _ in 0..8 {
            start = next(rng) as usize % buckets;
            if self.entries.get_bucket(start).is_some() {
                return Some(start);
            }
        }
        (start..buckets)
            .chain(0..start)
            .find(|&i| self.entries.get_bucket(i).is_some())
    }

    /// Heap bytes this store holds: the table (slots and control bytes), the entries (as
    /// allocated sizes, without the allocator's rounding) and the expiry queue.
    pub fn heap_bytes(&self) -> usize {
        let table = self.entries.allocation_size();
        let entries: usize = self.entries.iter().map(|e| e.len()).sum();
        let queue = self.expiring.capacity() * std::mem::size_of::<Reverse<(u64, u64)>>();
        table + entries + queue
    }
}

/// The access stamp a write under `policy` at `now` gives an entry.
fn stamp_of(policy: Eviction, now: u64) -> u32 {
    match policy {
        Eviction::Lru => (now / 1000) as u32,
        Eviction::Lfu | Eviction::Random => 0,
    }
}

/// Whether a packed entry is live at `now`.
pub fn live(e: &[u8], now: u64) -> bool {
    let at = expires(e);
    at == 0 || at > now
}

/// xorshift64*.
fn next(state: &mut u64) -> u64 {
    let mut x = *state | 1;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *state = x;
    x.wrapping_mul(0x2545_f491_4f6c_dd1d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insert_get_remove_keep_the_index_in_step() {
        let mut s = Store::default();
        for i in 0..1000u32 {
            let k = i.to_le_bytes();
            assert!(s
                .insert(pack(&k, &[i as u8; 3], 0), Eviction::Lru, 0)
                .is_none());
        }
        for i in (0..1000u32).step_by(3) {
            let removed = s.remove(&i.to_le_bytes()).map(|e| value(&e).to_vec());
            assert_eq!(removed, Some(vec![i as u8; 3]));
        }
        for i in 0..1000u32 {
            let got = s.get(&i.to_le_bytes(), 0).map(|e| value(e).to_vec());
            assert_eq!(got.is_some(), i % 3 != 0, "key {i}");
        }
        assert_eq!(s.len(), 666);
        let old = s.insert(pack(&1u32.to_le_bytes(), b"new", 0), Eviction::Lru, 0);
        assert_eq!(old.map(|e| value(&e).to_vec()), Some(vec![1; 3]));
        assert_eq!(s.len(), 666);
    }

    #[test]
    fn a_packed_entry_is_a_thin_pointer_to_bytes_that_know_their_length() {
        assert_eq!(std::mem::size_of::<Packed>(), 8);
        assert_eq!(std::mem::size_of::<Option<Packed>>(), 8);
        let mut kept = Vec::new();
        for n in [0usize, 1, 7, 8, 100, 4096, 70_000] {
            let v: Vec<u8> = (0..n).map(|i| i as u8).collect();
            let mut e = pack(b"key", &v, 9);
            assert_eq!(
                (e.len(), key(&e), value(&e)),
                (HEADER + 3 + n, &b"key"[..], &v[..])
            );
            // Rewriting the header's other fields through the entry keeps its length.
            set_hits(&mut e, 5);
            set_stamp(&mut e, 6);
            assert_eq!((e.len(), hits(&e), expires(&e)), (HEADER + 3 + n, 5, 9));
            kept.push(e);
        }
        let longest = (0..MAX_KEY + 10).map(|_| b'k').collect::<Vec<_>>();
        assert_eq!(
            key(&pack(&longest, b"v", 0)).len(),
            MAX_KEY,
            "a key is cut, not wrapped"
        );
        drop(kept);
    }

    #[test]
    fn expiry_removes_due_entries_only_and_skips_rewritten_ones() {
        let mut s = Store::default();
        s.insert(pack(b"a", b"1", 100), Eviction::Lru, 0);
        s.insert(pack(b"b", b"2", 200), Eviction::Lru, 0);
        s.insert(pack(b"c", b"3", 0), Eviction::Lru, 0);
        // Rewritten without expiry: its old deadline must not remove it.
        s.insert(pack(b"b", b"2'", 0), Eviction::Lru, 0);
        assert!(s.get(b"a", 100).is_none(), "expired entries read as absent");
        assert!(s.get(b"a", 99).is_some());
        let gone: Vec<Vec<u8>> = s.expire(1000, 10).iter().map(|e| key(e).to_vec()).collect();
        assert_eq!(gone, vec![b"a".to_vec()]);
        assert_eq!(s.len(), 2);
        assert!(s.set_expiry(b"c", 50));
        assert_eq!(s.expire(1000, 10).len(), 1);
        assert!(s.get(b"b", u64::MAX - 1).is_some());
    }

    #[test]
    fn eviction_prefers_the_least_recently_used() {
        let mut s = Store::default();
        for i in 0..10u8 {
            s.insert(
                pack(&[i], b"v", 0),
                Eviction::Lru,
                1000 * u64::from(i) + 5000,
            );
        }
        assert!(s.read(&[0], 100_000, Some(Eviction::Lru)).is_some());
        let mut rng = 7;
        // With as many samples as entries, the oldest stamp goes first.
        let out = s
            .evict(Eviction::Lru, &mut rng, 64)
            .map(|e| key(&e).to_vec());
        assert_eq!(out, Some(vec![1]));
        assert_eq!(s.len(), 9);
    }

    #[test]
    fn the_header_keeps_expiry_update_time_and_hits_beside_key_and_value() {
        let meta = Meta {
            expires_at: 1_700_000_000_123,
            updated_millis: 1_700_000_000_456,
            hits: 0xdead_beef,
        };
        let e = pack_with(b"key", b"value", meta);
        assert_eq!(e.len(), HEADER + 3 + 5);
        assert_eq!((key(&e), value(&e)), (&b"key"[..], &b"value"[..]));
        assert_eq!(super::meta(&e), meta);
        let clamped = pack_with(
            b"k",
            b"",
            Meta {
                expires_at: u64::MAX,
                updated_millis: u64::MAX,
                hits: 0,
            },
        );
        assert_eq!(
            (expires(&clamped), updated(&clamped)),
            (MAX_MILLIS, MAX_MILLIS)
        );
        assert_eq!(
            super::meta(&pack(b"k", b"v", 5)),
            Meta {
                expires_at: 5,
                ..Meta::default()
            }
        );
    }

    #[test]
    fn reads_count_hits_and_writes_pass_them_on_while_inserts_store_what_they_get() {
        let mut s = Store::default();
        let with_hits = |hits| Meta {
            hits,
            ..Meta::default()
        };
        s.insert(pack_with(b"k", b"1", with_hits(0)), Eviction::Lru, 0);
        assert!(s.read(b"k", 0, None).is_some());
        assert!(s.read(b"k", 0, Some(Eviction::Lfu)).is_some());
        assert!(s.read(b"absent", 0, None).is_none());
        assert_eq!(
            s.get(b"k", 0).map(|e| hits(e)),
            Some(2),
            "get counts nothing"
        );
        let mut seen = None;
        let (was_live, kept) = s.write(None, (b"k", b"2"), with_hits(0), Eviction::Lru, 0, |o| {
            seen = Some(hits(o))
        });
        assert_eq!((seen, was_live, kept), (Some(2), true, 2));
        assert_eq!(s.get(b"k", 0).map(|e| hits(e)), Some(2));
        s.insert(pack_with(b"k", b"3", with_hits(7)), Eviction::Lru, 0);
        assert_eq!(s.get(b"k", 0).map(|e| hits(e)), Some(7));
        // An expired entry passes nothing on, and reads of it count nothing.
        s.insert(
            pack_with(
                b"x",
                b"1",
                Meta {
                    expires_at: 10,
                    hits: 5,
                    ..Meta::default()
                },
            ),
            Eviction::Lru,
            0,
        );
        assert!(s.read(b"x", 10, None).is_none());
        let (was_live, kept) = s.write(None, (b"x", b"2"), with_hits(0), Eviction::Lru, 10, |_| {
            panic!("an expired entry is not shown as replaced")
        });
        assert_eq!((was_live, kept), (false, 0));
    }

    #[test]
    fn a_write_at_a_spot_that_went_stale_looks_the_key_up_again() {
        let mut s = Store::default();
        for k in [b"a", b"b", b"c"] {
            s.insert(pack(k, b"1", 0), Eviction::Lru, 0);
        }
        let spot = s.locate(b"c");
        assert_eq!(s.at(spot).map(|e| key(e)), Some(&b"c"[..]));
        // `c` leaves the slot `spot` names as the table grows, and another key takes it.
        s.remove(b"b");
        s.insert(pack(b"d", b"1", 0), Eviction::Lru, 0);
        let mut n = 0u32;
        while s.at(spot).is_none_or(|e| key(e) == b"c") {
            s.insert(pack(&n.to_le_bytes(), b"1", 0), Eviction::Lru, 0);
            n += 1;
            assert!(n < 100_000, "no key took the slot");
        }
        let (was_live, _) = s.write(
            Some(spot),
            (b"c", b"2"),
            Meta::default(),
            Eviction::Lru,
            0,
            |_| {},
        );
        assert!(was_live);
        let value_of = |k: &[u8]| s.get(k, 0).map(|e| value(e).to_vec());
        assert_eq!(value_of(b"c"), Some(b"2".to_vec()));
        assert_eq!(value_of(b"d"), Some(b"1".to_vec()));
        for i in 0..n {
            assert_eq!(value_of(&i.to_le_bytes()), Some(b"1".to_vec()), "key {i}");
        }
        assert_eq!(value_of(b"a"), Some(b"1".to_vec()));
        assert_eq!(s.len(), 3 + n as usize);
        // A spot of an absent key stays good for its insert.
        let spot = s.locate(b"e");
        assert!(s.at(spot).is_none());
        s.write(
            Some(spot),
            (b"e", b"3"),
            Meta::default(),
            Eviction::Lru,
            0,
            |_| {},
        );
        assert_eq!(
            s.get(b"e", 0).map(|e| value(e).to_vec()),
            Some(b"3".to_vec())
        );
    }

    #[test]
    fn a_write_overwrites_an_entry_of_its_size_in_place_and_reallocates_any_other() {
        let mut s = Store::default();
        let meta = |expires_at, updated_millis| Meta {
            expires_at,
            updated_millis,
            hits: 0,
        };
        s.write(
            None,
            (b"k", b"abc"),
            meta(0, 1),
            Eviction::Lru,
            5_000,
            |_| {},
        );
        let before = s.get(b"k", 0).map(|e| e.as_ptr());
        let mut old = Vec::new();
        s.write(
            None,
            (b"k", b"xyz"),
            meta(90_000, 2),
            Eviction::Lru,
            7_000,
            |o| old = value(o).to_vec(),
        );
        let e = s
            .get(b"k", 0)
            .map(|e| (e.as_ptr(), value(e).to_vec(), meta_of(e)));
        assert_eq!(old, b"abc");
        assert_eq!(e, Some((before.unwrap(), b"xyz".to_vec(), (90_000, 2, 7))));
        s.write(
            None,
            (b"k", b"longer"),
            meta(0, 3),
            Eviction::Lru,
            9_000,
            |_| {},
        );
        let e = s.get(b"k", 0).map(|e| (value(e).to_vec(), meta_of(e)));
        assert_eq!(e, Some((b"longer".to_vec(), (0, 3, 9))));
        assert_eq!(s.len(), 1);
        // The deadline of the in-place write is queued: it expires.
        s.write(
            None,
            (b"k", b"abcdef"),
            meta(20_000, 4),
            Eviction::Lru,
            9_000,
            |_| {},
        );
        assert_eq!(s.expire(20_000, 10).len(), 1);
        assert!(s.is_empty());
    }

    fn meta_of(e: &[u8]) -> (u64, u64, u32) {
        (expires(e), updated(e), stamp(e))
    }
}
