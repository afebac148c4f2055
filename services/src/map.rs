//! The distributed Map: bytes to bytes (plus typed access), spread over every partition by key,
//! with per-entry and per-map TTL, a bounded size with sampled eviction, entry listeners and
//! `read-backup-data`.
//!
//! Owns: [`MapService`] (containers: map name → [`store::Store`] per partition), the operations,
//! the [`Map`] proxy, [`TypedMap`], [`MapListener`] and [`EntryEvent`].
//!
//! Writes run on the key's owner and send their backup as one idempotent [`Apply`] carrying the
//! owner's decisions (the expiry time it computed, the entries it evicted, the update time and
//! hits it gave the entry), so backups hold what the owner holds. Expiry times are absolute (ms
//! since the Unix epoch): owner and backups drop an entry at the same moment (each on its own
//! tick); the owner publishes the `Expired` event.
//!
//! Every entry knows when it was last written and how often it was read, for the split-brain
//! merge policies `latest-update` and `higher-hits` ([`merge`]):
//! - **Update time**: the owner's clock (ms since the epoch) when a put, set, put-if-absent,
//!   replace, put-all or update stored the value. Changing only the TTL (`SetTtl`) keeps it. A
//!   merged entry keeps the merging side's.
//! - **Hits**: reads on the owner that found the entry live: `get`, each key `get_all` found,
//!   and `contains_key` (the operations Hazelcast counts as accesses). Scans (size, entries,
//!   keys, values), `ttl` and reads that a backup serves under `read-backup-data` count nothing.
//!   A write over a live entry keeps its hits (unlike Hazelcast, whose put also counts as an
//!   access: hits here are reads only, as for every service's [`EntryStats`]); a new entry, or one
//!   replacing an expired entry, starts at 0. Saturating at `u32::MAX`.
//! - **On backups**: each write's backup carries the owner's update time and hits, so a promoted
//!   backup has the entry's update time, and its hits as they were at the last write (reads are
//!   not replicated). Replica data (migration, repair) carries both as the source holds them.
//!
//! Config (`[[services]] name = "map"`, `[services.properties]`): `ttl-secs` (default TTL, 0 =
//! none), `max-entries` (per map, cluster-wide, enforced per partition as
//! ⌈max-entries / partition-count⌉; 0 = unbounded), `eviction` (`lru`, `lfu`, `random`, or
//! `none`: a full map refuses new keys); the same three keys under `maps.NAME` for one map.

pub mod merge;
pub mod store;
pub mod update;

use std::time::Duration;

use ahash::AHashMap;
use corecast_engine::events::{now_millis, ListenSpec, Listener};
use corecast_engine::payload::{decode, encode, Payload};
use corecast_engine::prelude::*;
use corecast_engine::PartitionCount;

use store::{pack_with, Eviction, Meta, Packed, Spot, Store};

/// The map service.
pub struct MapService {
    settings: Settings,
    partitions: PartitionCount,
    rng: u64,
}

/// One partition's maps.
pub type Container = AHashMap<String, Store>;

/// One entry as it travels to another replica (replica data, a backup's put) or cluster (a
/// merge): everything the store records of it.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct EntryData {
    /// The key.
    pub key: Vec<u8>,
    /// The value.
    pub value: Vec<u8>,
    /// When it expires, in ms since the epoch; 0 for never.
    pub expires_at: u64,
    /// When the owner last wrote its value, in ms since the epoch.
    pub updated_millis: u64,
    /// Reads of it on the owner (see the module doc).
    pub hits: u32,
}

impl EntryData {
    /// A packed entry's data.
    pub fn of(e: &[u8]) -> Self {
        let meta = store::meta(e);
        Self {
            key: store::key(e).to_vec(),
            value: store::value(e).to_vec(),
            expires_at: meta.expires_at,
            updated_millis: meta.updated_millis,
            hits: meta.hits,
        }
    }
}

impl ArchivedEntryData {
    /// What the store records besides key and value.
    pub fn meta(&self) -> Meta {
        Meta {
            expires_at: self.expires_at.to_native(),
            updated_millis: self.updated_millis.to_native(),
            hits: self.hits.to_native(),
        }
    }

    /// The entry, packed for a store. A key or value over the store's bounds (only from a peer
    /// that sent garbage: owners check entries before storing them) is cut by
    /// [`store::pack_with`], so the packed layout stays sound.
    pub fn pack(&self) -> Packed {
        pack_with(&self.key, &self.value, self.meta())
    }
}

/// One map's limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct MapSettings {
    ttl_ms: u64,
    max_entries: u64,
    /// `None`: a full map refuses new keys.
    eviction: Option<Eviction>,
}

impl Default for MapSettings {
    fn default() -> Self {
        Self {
            ttl_ms: 0,
            max_entries: 0,
            eviction: Some(Eviction::Lru),
        }
    }
}

#[derive(Clone, Debug, Default)]
struct Settings {
    base: MapSettings,
    maps: AHashMap<String, MapSettings>,
}

impl Settings {
    fn of(&self, name: &str) -> MapSettings {
        self.maps.get(name).copied().unwrap_or(self.base)
    }

    fn parse(p: &Properties) -> Result<Self, ServiceError> {
        let base = parse_one(p, "", MapSettings::default())?;
        let mut maps = AHashMap::new();
        if let Some(toml::Value::Table(t)) = p.iter().find(|(k, _)| *k == "maps").map(|(_, v)| v) {
            for (name, v) in t {
                let toml::Value::Table(inner) = v else {
                    return Err(ServiceError::new(format!(
                        "maps.{name}: expected a table of ttl-secs, max-entries, eviction"
                    )));
                };
                let mut props = Properties::default();
                for (k, v) in inner {
                    props.insert(k.clone(), v.clone());
                }
                maps.insert(
                    name.clone(),
                    parse_one(&props, &format!("maps.{name}."), base)?,
                );
            }
        }
        for (k, _) in p.iter() {
            if !matches!(k, "ttl-secs" | "max-entries" | "eviction" | "maps") {
                return Err(ServiceError::new(format!(
                    "unknown map property `{k}` (known: ttl-secs, max-entries, eviction, maps)"
                )));
            }
        }
        Ok(Self { base, maps })
    }
}

fn parse_one(p: &Properties, prefix: &str, base: MapSettings) -> Result<MapSettings, ServiceError> {
    let mut s = base;
    for (k, _) in p.iter() {
        if !prefix.is_empty() && !matches!(k, "ttl-secs" | "max-entries" | "eviction") {
            return Err(ServiceError::new(format!(
                "unknown map property `{prefix}{k}` (known: ttl-secs, max-entries, eviction)"
            )));
        }
    }
    if let Some(ttl) = p.get::<u64>("ttl-secs")? {
        s.ttl_ms = ttl.saturating_mul(1000);
    }
    if let Some(max) = p.get::<u64>("max-entries")? {
        s.max_entries = max;
    }
    if let Some(e) = p.get_str("eviction") {
        s.eviction = match e {
            "lru" => Some(Eviction::Lru),
            "lfu" => Some(Eviction::Lfu),
            "random" => Some(Eviction::Random),
            "none" => None,
            other => {
                return Err(ServiceError::new(format!(
                    "{prefix}eviction = `{other}`: expected lru, lfu, random or none"
                )))
            }
        };
    }
    Ok(s)
}

/// Entries sampled per eviction.
const EVICTION_SAMPLES: usize = 15;
/// Entries a tick expires per map and partition at most (the rest on the next tick).
const EXPIRE_PER_TICK: usize = 10_000;

impl Service for MapService {
    const NAME: &'static str = "map";
    const ID: ServiceId = ServiceId(18);
    type Container = Container;
    type ReplicaData = Vec<(String, Vec<EntryData>)>;

    fn init(ctx: &ServiceContext, properties: &Properties) -> Result<Self, ServiceError> {
        Ok(MapService {
            settings: Settings::parse(properties)?,
            partitions: ctx.partitions,
            rng: corecast_engine::events::random_id(),
        })
    }

    fn operations(ops: &mut Operations<Self>) {
        ops.add::<Put>()
            .add::<Get>()
            .add::<Remove>()
            .add::<ContainsKey>()
            .add::<PutIfAbsent>()
            .add::<Replace>()
            .add::<GetAll>()
            .add::<PutAll>()
            .add::<Size>()
            .add::<Clear>()
            .add::<Entries>()
            .add::<SetTtl>()
            .add::<Ttl>()
            .add::<update::Update>()
            .add::<merge::Merge>()
            .add::<Apply>();
    }

    fn destroy_object(&mut self, container: &mut Container, name: &str) {
        container.remove(name);
    }

    fn replica_data(container: &Container, _: &ReplicationEvent) -> Option<Self::ReplicaData> {
        let data: Self::ReplicaData = container
            .iter()
            .filter(|(_, s)| !s.is_empty())
            .map(|(name, s)| (name.clone(), s.iter().map(|e| EntryData::of(e)).collect()))
            .collect();
        (!data.is_empty()).then_some(data)
    }

    fn apply_replica_data(container: &mut Container, data: &Archived<Self::ReplicaData>) {
        let now = now_millis();
        for map in data.iter() {
            let s = container.entry(map.0.to_string()).or_default();
            for e in map.1.iter() {
                s.insert(e.pack(), Eviction::Lru, now);
            }
        }
    }

    /// Every map's live entries, as [`merge::Merge`] operations under the map's merge policy.
    fn merge(container: &Container, out: &mut MergeOps<'_>) {
        merge::merge_ops(container, out, now_millis());
    }

    fn tick(&mut self, container: &mut Container, ctx: &TickContext<'_>) {
        let now = ctx.now_millis();
        for (name, s) in container.iter_mut() {
            let gone = s.expire(now, EXPIRE_PER_TICK);
            for e in &gone {
                publish(ctx.events(), name, EventKind::Expired, e, None);
            }
        }
    }
}

impl MapService {
    /// The most entries one partition of map `name` holds (0: unbounded).
    fn cap(&self, settings: &MapSettings) -> usize {
        if settings.max_entries == 0 {
            return 0;
        }
        settings
            .max_entries
            .div_ceil(u64::from(self.partitions.get()))
            .max(1) as usize
    }
}

/// What kind of change an [`EntryEvent`] reports.
#[derive(Archive, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// A key got its first value.
    Added,
    /// A key's value changed.
    Updated,
    /// A key was removed.
    Removed,
    /// A key's TTL passed.
    Expired,
    /// A key was evicted to keep the map under `max-entries`.
    Evicted,
}

impl std::fmt::Display for EventKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            EventKind::Added => "added",
            EventKind::Updated => "updated",
            EventKind::Removed => "removed",
            EventKind::Expired => "expired",
            EventKind::Evicted => "evicted",
        })
    }
}

/// One change to one key, as a listener receives it. Values are present for listeners that
/// asked for them.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct EntryEvent {
    /// What happened.
    pub kind: EventKind,
    /// The key.
    pub key: Vec<u8>,
    /// The new value (added, updated).
    pub value: Option<Vec<u8>>,
    /// The value before (updated, removed, expired, evicted).
    pub old_value: Option<Vec<u8>>,
}

fn publish(events: &Events<'_>, name: &str, kind: EventKind, entry: &[u8], value: Option<&[u8]>) {
    if !events.listening(name) {
        return;
    }
    let (old, new) = match kind {
        EventKind::Added => (None, value),
        EventKind::Updated => (Some(store::value(entry)), value),
        _ => (Some(store::value(entry)), None),
    };
    events.publish(name, |values| EntryEvent {
        kind,
        key: store::key(entry).to_vec(),
        value: if values {
            new.map(<[u8]>::to_vec)
        } else {
            None
        },
        old_value: if values {
            old.map(<[u8]>::to_vec)
        } else {
            None
        },
    });
}

fn added(events: &Events<'_>, name: &str, key: &[u8], value: &[u8]) {
    if events.listening(name) {
        events.publish(name, |values| EntryEvent {
            kind: EventKind::Added,
            key: key.to_vec(),
            value: values.then(|| value.to_vec()),
            old_value: None,
        });
    }
}

/// `-1`: the map's default TTL; `0`: none; else milliseconds.
fn expiry_of(ttl_ms: i64, settings: &MapSettings, now: u64) -> u64 {
    let ttl = match ttl_ms {
        t if t < 0 => settings.ttl_ms,
        t => t as u64,
    };
    if ttl == 0 {
        0
    } else {
        now.saturating_add(ttl)
    }
}

fn check_entry(key: &[u8], value: &[u8]) -> Result<(), OpError> {
    if key.len() > store::MAX_KEY {
        return Err(OpError::failed(format!(
            "key of {} bytes is longer than {} bytes",
            key.len(),
            store::MAX_KEY
        )));
    }
    if value.len() > store::MAX_VALUE {
        return Err(OpError::failed(format!(
            "value of {} bytes is longer than {} bytes",
            value.len(),
            store::MAX_VALUE
        )));
    }
    Ok(())
}

/// What a write did: the value it replaced (live), whether it changed anything, the expiry,
/// update time and hits it gave the entry and the keys it evicted. Backups are built from it.
#[derive(Archive, Serialize, Deserialize, Debug, Default, Clone, PartialEq, Eq)]
pub struct Written {
    /// The live value before, if any.
    pub old: Option<Vec<u8>>,
    /// Whether the map changed.
    pub changed: bool,
    /// The entry's expiry (ms since the epoch, 0 = none).
    pub expires_at: u64,
    /// Keys evicted to make room.
    pub evicted: Vec<Vec<u8>>,
    /// The entry's update time (ms since the epoch).
    pub updated_millis: u64,
    /// The entry's hits after the write.
    pub hits: u32,
}

/// Whose hits an entry stored by [`put_entry`] has.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Hits {
    /// Those of the live entry it replaces (0 for a new key): a caller's write keeps what reads
    /// counted. With the spot the caller found the key at, if it looked it up before.
    Kept(Option<Spot>),
    /// Those it carries: a merging entry's.
    Carried,
}

/// Stores `key` → `value` as the owner, written by a caller at `now`: eviction, events, the
/// answer. `spot`: where the caller found the key in the map's store (a read-modify-write).
fn write(
    ctx: &mut OpContext<'_, MapService>,
    name: &str,
    spot: Option<Spot>,
    (key, value): (&[u8], &[u8]),
    ttl_ms: i64,
    want_old: bool,
    now: u64,
) -> Result<Written, OpError> {
    let settings = ctx.service.settings.of(name);
    let meta = Meta {
        expires_at: expiry_of(ttl_ms, &settings, now),
        updated_millis: now,
        hits: 0,
    };
    put_entry(
        ctx,
        name,
        (key, value),
        meta,
        Hits::Kept(spot),
        want_old,
        now,
    )
}

/// Stores `key` → `value` with `meta` as the owner at `now`: the map's bound (expired entries
/// first, then the eviction policy's picks; a full map without eviction refuses a new key),
/// the `Added` or `Updated` event, the record backups are built from.
///
/// Errors: a key over [`store::MAX_KEY`], a value over [`store::MAX_VALUE`], a full map with
/// eviction `none`.
fn put_entry(
    ctx: &mut OpContext<'_, MapService>,
    name: &str,
    (key, value): (&[u8], &[u8]),
    meta: Meta,
    hits: Hits,
    want_old: bool,
    now: u64,
) -> Result<Written, OpError> {
    check_entry(key, value)?;
    let settings = ctx.service.settings.of(name);
    let cap = ctx.service.cap(&settings);
    let events = *ctx.events();
    let policy = settings.eviction.unwrap_or(Eviction::Lru);
    let s = match ctx.container.get_mut(name) {
        Some(s) => s,
        None => ctx.container.entry(name.to_owned()).or_default(),
    };
    let mut evicted = Vec::new();
    // Only a bounded map needs to know before storing whether the key is new.
    if cap > 0 && s.get(key, now).is_none() {
        // Expired entries go first; then the policy's pick.
        for e in s.expire(now, EXPIRE_PER_TICK) {
            publish(&events, name, EventKind::Expired, &e, None);
            evicted.push(store::key(&e).to_vec());
        }
        while s.len() >= cap {
            if settings.eviction.is_none() {
                return Err(OpError::failed(format!(
                    "map `{name}` is full (max-entries {})",
                    settings.max_entries
                )));
            }
            let Some(e) = s.evict(policy, &mut ctx.service.rng, EVICTION_SAMPLES) else {
                break;
            };
            publish(&events, name, EventKind::Evicted, &e, None);
            evicted.push(store::key(&e).to_vec());
        }
    }
    let mut old = None;
    let mut replaced = |o: &[u8]| {
        publish(&events, name, EventKind::Updated, o, Some(value));
        if want_old {
            old = Some(store::value(o).to_vec());
        }
    };
    let (was_live, hits) = match hits {
        Hits::Kept(spot) => s.write(spot, (key, value), meta, policy, now, replaced),
        Hits::Carried => {
            let before = s.insert(pack_with(key, value, meta), policy, now);
            let live = before.filter(|o| store::live(o, now));
            if let Some(o) = &live {
                replaced(o);
            }
            (live.is_some(), meta.hits)
        }
    };
    if !was_live {
        added(&events, name, key, value);
    }
    Ok(Written {
        old,
        changed: true,
        expires_at: meta.expires_at,
        evicted,
        updated_millis: meta.updated_millis,
        hits,
    })
}

/// How a read operation reads an entry: on the owner it counts a hit and notes the access for
/// eviction; a backup serving the read (`read-backup-data`) changes nothing, so backups stay as
/// the owner's writes left them.
struct Reader {
    now: u64,
    eviction: Option<Eviction>,
    owner: bool,
}

impl Reader {
    fn of(ctx: &OpContext<'_, MapService>, name: &str) -> Self {
        Self {
            now: now_millis(),
            eviction: ctx.service.settings.of(name).eviction,
            owner: !ctx.replica_index().is_backup(),
        }
    }

    /// The live entry of `key`.
    fn read<'s>(&self, s: &'s mut Store, key: &[u8]) -> Option<&'s Packed> {
        if self.owner {
            s.read(key, self.now, self.eviction)
        } else {
            s.get(key, self.now)
        }
    }
}

/// Removes `key` as the owner; the live value it had.
fn remove(ctx: &mut OpContext<'_, MapService>, name: &str, key: &[u8]) -> Option<Packed> {
    let now = now_millis();
    let events = *ctx.events();
    let e = ctx.container.get_mut(name)?.remove(key)?;
    if !store::live(&e, now) {
        publish(&events, name, EventKind::Expired, &e, None);
        return None;
    }
    publish(&events, name, EventKind::Removed, &e, None);
    Some(e)
}

/// The steps a backup takes for one write: drop what the owner evicted, store the entry as the
/// owner stored it.
fn write_steps(key: &[u8], value: &[u8], w: &Written) -> [Step; 2] {
    [
        Step::Remove(w.evicted.clone()),
        Step::Put(EntryData {
            key: key.to_vec(),
            value: value.to_vec(),
            expires_at: w.expires_at,
            updated_millis: w.updated_millis,
            hits: w.hits,
        }),
    ]
}

fn backup_of_write(name: &str, key: &[u8], value: &[u8], w: &Written) -> Backup {
    Backup::of(&Apply {
        name: name.to_owned(),
        steps: write_steps(key, value, w).into(),
    })
}

macro_rules! map_object {
    () => {
        fn object_name(op: &Archived<Self>) -> Option<&str> {
            Some(op.name.as_str())
        }
    };
}

/// Sets a key (`put` answers the old value, `set` does not ask for it).
#[derive(Archive, Serialize, Deserialize)]
pub struct Put {
    /// The map.
    pub name: String,
    /// The key.
    pub key: Vec<u8>,
    /// The value.
    pub value: Vec<u8>,
    /// `-1`: the map's default TTL; `0`: none; else milliseconds.
    pub ttl_ms: i64,
    /// Whether to answer the old value.
    pub return_old: bool,
}

impl Operation for Put {
    type Service = MapService;
    type Response = Written;
    const ID: OpId = OpId(1);
    map_object!();
    fn run(op: &Archived<Self>, ctx: &mut OpContext<MapService>) -> Result<Written, OpError> {
        write(
            ctx,
            &op.name,
            None,
            (&op.key, &op.value),
            op.ttl_ms.to_native(),
            op.return_old,
            now_millis(),
        )
    }
    fn backup_operation(op: &Archived<Self>, w: &Written) -> Option<Backup> {
        Some(backup_of_write(&op.name, &op.key, &op.value, w))
    }
}

/// Reads a key (on the owner, a hit).
#[derive(Archive, Serialize, Deserialize)]
pub struct Get {
    /// The map.
    pub name: String,
    /// The key.
    pub key: Vec<u8>,
}

/// A [`Get`] that borrows its map name and key, archived as one without copying them into a
/// `Get` first (two allocations less a read).
pub struct GetRef<'a> {
    /// The map.
    pub name: &'a str,
    /// The key.
    pub key: &'a [u8],
}

impl Archive for GetRef<'_> {
    type Archived = ArchivedGet;
    type Resolver = (rkyv::string::StringResolver, rkyv::vec::VecResolver);

    fn resolve(&self, (name, key): Self::Resolver, out: rkyv::Place<ArchivedGet>) {
        rkyv::munge::munge!(let ArchivedGet { name: name_out, key: key_out } = out);
        rkyv::string::ArchivedString::resolve_from_str(self.name, name, name_out);
        rkyv::vec::ArchivedVec::resolve_from_slice(self.key, key, key_out);
    }
}

impl<S> Serialize<S> for GetRef<'_>
where
    S: rkyv::rancor::Fallible + rkyv::ser::Allocator + rkyv::ser::Writer + ?Sized,
    S::Error: rkyv::rancor::Source,
{
    fn serialize(&self, s: &mut S) -> Result<Self::Resolver, S::Error> {
        Ok((
            rkyv::string::ArchivedString::serialize_from_str(self.name, s)?,
            rkyv::vec::ArchivedVec::serialize_from_slice(self.key, s)?,
        ))
    }
}

impl Operation for Get {
    type Service = MapService;
    type Response = Option<Vec<u8>>;
    const ID: OpId = OpId(2);
    const READS_ONLY: bool = true;
    map_object!();
    fn run(
        op: &Archived<Self>,
        ctx: &mut OpContext<MapService>,
    ) -> Result<Option<Vec<u8>>, OpError> {
        let reader = Reader::of(ctx, &op.name);
        let Some(s) = ctx.container.get_mut(op.name.as_str()) else {
            return Ok(None);
        };
        Ok(reader.read(s, &op.key).map(|e| store::value(e).to_vec()))
    }
}

/// Removes a key (`remove` answers the old value; `delete` whether there was one).
#[derive(Archive, Serialize, Deserialize)]
pub struct Remove {
    /// The map.
    pub name: String,
    /// The key.
    pub key: Vec<u8>,
    /// Whether to answer the old value.
    pub return_old: bool,
}

impl Operation for Remove {
    type Service = MapService;
    type Response = Written;
    const ID: OpId = OpId(3);
    map_object!();
    fn run(op: &Archived<Self>, ctx: &mut OpContext<MapService>) -> Result<Written, OpError> {
        let e = remove(ctx, &op.name, &op.key);
        Ok(Written {
            changed: e.is_some(),
            old: e
                .filter(|_| op.return_old)
                .map(|e| store::value(&e).to_vec()),
            ..Written::default()
        })
    }
    fn should_backup(_: &Archived<Self>, w: &Written) -> bool {
        w.changed
    }
    fn backup_operation(op: &Archived<Self>, _: &Written) -> Option<Backup> {
        Some(Backup::of(&Apply {
            name: op.name.to_string(),
            steps: vec![Step::Remove(vec![op.key.to_vec()])],
        }))
    }
}

/// Whether a key has a live value (on the owner, a hit when it has).
#[derive(Archive, Serialize, Deserialize)]
pub struct ContainsKey {
    /// The map.
    pub name: String,
    /// The key.
    pub key: Vec<u8>,
}

impl Operation for ContainsKey {
    type Service = MapService;
    type Response = bool;
    const ID: OpId = OpId(4);
    const READS_ONLY: bool = true;
    map_object!();
    fn run(op: &Archived<Self>, ctx: &mut OpContext<MapService>) -> Result<bool, OpError> {
        let reader = Reader::of(ctx, &op.name);
        let Some(s) = ctx.container.get_mut(op.name.as_str()) else {
            return Ok(false);
        };
        Ok(reader.read(s, &op.key).is_some())
    }
}

/// Sets a key only if it has no live value; answers the value it has.
#[derive(Archive, Serialize, Deserialize)]
pub struct PutIfAbsent {
    /// The map.
    pub name: String,
    /// The key.
    pub key: Vec<u8>,
    /// The value.
    pub value: Vec<u8>,
    /// As [`Put::ttl_ms`].
    pub ttl_ms: i64,
}

impl Operation for PutIfAbsent {
    type Service = MapService;
    type Response = Written;
    const ID: OpId = OpId(5);
    map_object!();
    fn run(op: &Archived<Self>, ctx: &mut OpContext<MapService>) -> Result<Written, OpError> {
        let now = now_millis();
        if let Some(e) = ctx
            .container
            .get(op.name.as_str())
            .and_then(|s| s.get(&op.key, now))
        {
            return Ok(Written {
                old: Some(store::value(e).to_vec()),
                ..Written::default()
            });
        }
        write(
            ctx,
            &op.name,
            None,
            (&op.key, &op.value),
            op.ttl_ms.to_native(),
            false,
            now,
        )
    }
    fn should_backup(_: &Archived<Self>, w: &Written) -> bool {
        w.changed
    }
    fn backup_operation(op: &Archived<Self>, w: &Written) -> Option<Backup> {
        Some(backup_of_write(&op.name, &op.key, &op.value, w))
    }
}

/// Replaces a key's live value (only if it has one, and with `expect` only if it equals it).
#[derive(Archive, Serialize, Deserialize)]
pub struct Replace {
    /// The map.
    pub name: String,
    /// The key.
    pub key: Vec<u8>,
    /// The new value.
    pub value: Vec<u8>,
    /// Replace only if the current value equals this.
    pub expect: Option<Vec<u8>>,
}

impl Operation for Replace {
    type Service = MapService;
    type Response = Written;
    const ID: OpId = OpId(6);
    map_object!();
    fn run(op: &Archived<Self>, ctx: &mut OpContext<MapService>) -> Result<Written, OpError> {
        let now = now_millis();
        let current = ctx
            .container
            .get(op.name.as_str())
            .and_then(|s| s.get(&op.key, now))
            .map(|e| (store::value(e).to_vec(), store::expires(e)));
        let Some((value, expires_at)) = current else {
            return Ok(Written::default());
        };
        if op
            .expect
            .as_ref()
            .is_some_and(|x| x.as_slice() != value.as_slice())
        {
            return Ok(Written {
                old: Some(value),
                ..Written::default()
            });
        }
        // A replace keeps the entry's expiry.
        let ttl = if expires_at == 0 {
            0
        } else {
            expires_at.saturating_sub(now).max(1) as i64
        };
        write(ctx, &op.name, None, (&op.key, &op.value), ttl, true, now)
    }
    fn should_backup(_: &Archived<Self>, w: &Written) -> bool {
        w.changed
    }
    fn backup_operation(op: &Archived<Self>, w: &Written) -> Option<Backup> {
        Some(backup_of_write(&op.name, &op.key, &op.value, w))
    }
}

/// Replaces only if the current value equals `expect`: the kept name of Hazelcast's
/// `replace(key, old, new)`; runs as [`Replace`].
pub type ReplaceIfEqual = Replace;

/// The live values of some keys of one partition (on the owner, a hit for each found).
#[derive(Archive, Serialize, Deserialize)]
pub struct GetAll {
    /// The map.
    pub name: String,
    /// Keys of one partition.
    pub keys: Vec<Vec<u8>>,
}

impl Operation for GetAll {
    type Service = MapService;
    type Response = Vec<(Vec<u8>, Vec<u8>)>;
    const ID: OpId = OpId(7);
    const READS_ONLY: bool = true;
    map_object!();
    fn run(
        op: &Archived<Self>,
        ctx: &mut OpContext<MapService>,
    ) -> Result<Self::Response, OpError> {
        let reader = Reader::of(ctx, &op.name);
        let Some(s) = ctx.container.get_mut(op.name.as_str()) else {
            return Ok(Vec::new());
        };
        Ok(op
            .keys
            .iter()
            .filter_map(|k| {
                let e = reader.read(s, k)?;
                Some((k.to_vec(), store::value(e).to_vec()))
            })
            .collect())
    }
}

/// Sets some keys of one partition.
#[derive(Archive, Serialize, Deserialize)]
pub struct PutAll {
    /// The map.
    pub name: String,
    /// Entries of one partition.
    pub entries: Vec<(Vec<u8>, Vec<u8>)>,
}

impl Operation for PutAll {
    type Service = MapService;
    type Response = Vec<Written>;
    const ID: OpId = OpId(8);
    map_object!();
    fn run(op: &Archived<Self>, ctx: &mut OpContext<MapService>) -> Result<Vec<Written>, OpError> {
        let now = now_millis();
        op.entries
            .iter()
            .map(|e| write(ctx, &op.name, None, (&e.0, &e.1), -1, false, now))
            .collect()
    }
    fn backup_operation(op: &Archived<Self>, ws: &Vec<Written>) -> Option<Backup> {
        // In order: a later entry's eviction may remove an earlier one.
        let steps = op
            .entries
            .iter()
            .zip(ws)
            .flat_map(|(e, w)| write_steps(&e.0, &e.1, w))
            .collect();
        Some(Backup::of(&Apply {
            name: op.name.to_string(),
            steps,
        }))
    }
}

/// A partition's live entry count of a map (sent to every partition).
#[derive(Archive, Serialize, Deserialize)]
pub struct Size {
    /// The map.
    pub name: String,
}

impl Operation for Size {
    type Service = MapService;
    type Response = u64;
    const ID: OpId = OpId(9);
    const READS_ONLY: bool = true;
    map_object!();
    fn run(op: &Archived<Self>, ctx: &mut OpContext<MapService>) -> Result<u64, OpError> {
        let now = now_millis();
        Ok(ctx
            .container
            .get(op.name.as_str())
            .map_or(0, |s| s.live_len(now) as u64))
    }
}

/// Drops a partition's entries of a map (sent to every partition); answers how many.
#[derive(Archive, Serialize, Deserialize)]
pub struct Clear {
    /// The map.
    pub name: String,
}

impl Operation for Clear {
    type Service = MapService;
    type Response = u64;
    const ID: OpId = OpId(10);
    map_object!();
    fn run(op: &Archived<Self>, ctx: &mut OpContext<MapService>) -> Result<u64, OpError> {
        let events = *ctx.events();
        let Some(s) = ctx.container.get_mut(op.name.as_str()) else {
            return Ok(0);
        };
        let gone = s.clear();
        for e in &gone {
            publish(&events, &op.name, EventKind::Removed, e, None);
        }
        Ok(gone.len() as u64)
    }
    fn should_backup(_: &Archived<Self>, n: &u64) -> bool {
        *n > 0
    }
    fn backup_operation(op: &Archived<Self>, _: &u64) -> Option<Backup> {
        Some(Backup::of(&Apply {
            name: op.name.to_string(),
            steps: vec![Step::Clear],
        }))
    }
}

/// A partition's live entries of a map (sent to every partition): keys, values or both.
#[derive(Archive, Serialize, Deserialize)]
pub struct Entries {
    /// The map.
    pub name: String,
    /// Whether to send keys.
    pub keys: bool,
    /// Whether to send values.
    pub values: bool,
}

impl Operation for Entries {
    type Service = MapService;
    type Response = Vec<(Vec<u8>, Vec<u8>)>;
    const ID: OpId = OpId(11);
    const READS_ONLY: bool = true;
    map_object!();
    fn run(
        op: &Archived<Self>,
        ctx: &mut OpContext<MapService>,
    ) -> Result<Self::Response, OpError> {
        let now = now_millis();
        let Some(s) = ctx.container.get(op.name.as_str()) else {
            return Ok(Vec::new());
        };
        Ok(s.iter()
            .filter(|e| store::live(e, now))
            .map(|e| {
                let k = if op.keys {
                    store::key(e).to_vec()
                } else {
                    Vec::new()
                };
                let v = if op.values {
                    store::value(e).to_vec()
                } else {
                    Vec::new()
                };
                (k, v)
            })
            .collect())
    }
}

/// Sets (or with `ttl_ms` 0 removes) a live key's TTL.
#[derive(Archive, Serialize, Deserialize)]
pub struct SetTtl {
    /// The map.
    pub name: String,
    /// The key.
    pub key: Vec<u8>,
    /// Milliseconds from now; 0: no expiry.
    pub ttl_ms: u64,
}

impl Operation for SetTtl {
    type Service = MapService;
    type Response = Written;
    const ID: OpId = OpId(12);
    map_object!();
    fn run(op: &Archived<Self>, ctx: &mut OpContext<MapService>) -> Result<Written, OpError> {
        let now = now_millis();
        let Some(s) = ctx.container.get_mut(op.name.as_str()) else {
            return Ok(Written::default());
        };
        if s.get(&op.key, now).is_none() {
            return Ok(Written::default());
        }
        let ttl = op.ttl_ms.to_native();
        let at = if ttl == 0 { 0 } else { now.saturating_add(ttl) };
        s.set_expiry(&op.key, at);
        Ok(Written {
            changed: true,
            expires_at: at,
            ..Written::default()
        })
    }
    fn should_backup(_: &Archived<Self>, w: &Written) -> bool {
        w.changed
    }
    fn backup_operation(op: &Archived<Self>, w: &Written) -> Option<Backup> {
        Some(Backup::of(&Apply {
            name: op.name.to_string(),
            steps: vec![Step::Expire(op.key.to_vec(), w.expires_at)],
        }))
    }
}

/// A live key's expiry time (ms since the epoch; 0 for none), `None` if it has no live value.
#[derive(Archive, Serialize, Deserialize)]
pub struct Ttl {
    /// The map.
    pub name: String,
    /// The key.
    pub key: Vec<u8>,
}

impl Operation for Ttl {
    type Service = MapService;
    type Response = Option<u64>;
    const ID: OpId = OpId(13);
    const READS_ONLY: bool = true;
    map_object!();
    fn run(op: &Archived<Self>, ctx: &mut OpContext<MapService>) -> Result<Option<u64>, OpError> {
        let now = now_millis();
        Ok(ctx
            .container
            .get(op.name.as_str())
            .and_then(|s| s.get(&op.key, now))
            .map(|e| store::expires(e)))
    }
}

/// One change a backup applies.
#[derive(Archive, Serialize, Deserialize, Debug)]
pub enum Step {
    /// Drop every entry.
    Clear,
    /// Remove these keys.
    Remove(Vec<Vec<u8>>),
    /// Store an entry with the owner's expiry, update time and hits.
    Put(EntryData),
    /// Give an existing key a new expiry.
    Expire(Vec<u8>, u64),
}

/// The backup of every map write: the owner's decisions, applied in order. Idempotent.
#[derive(Archive, Serialize, Deserialize, Debug, Default)]
pub struct Apply {
    /// The map.
    pub name: String,
    /// The changes, in the order the owner made them.
    pub steps: Vec<Step>,
}

impl Operation for Apply {
    type Service = MapService;
    type Response = ();
    const ID: OpId = OpId(20);
    map_object!();
    fn run(op: &Archived<Self>, ctx: &mut OpContext<MapService>) -> Result<(), OpError> {
        let now = now_millis();
        let s = match ctx.container.get_mut(op.name.as_str()) {
            Some(s) => s,
            None => ctx.container.entry(op.name.to_string()).or_default(),
        };
        for step in op.steps.iter() {
            match step {
                ArchivedStep::Clear => {
                    s.clear();
                }
                ArchivedStep::Expire(k, at) => {
                    s.set_expiry(k, at.to_native());
                }
                ArchivedStep::Remove(keys) => {
                    for k in keys.iter() {
                        s.remove(k);
                    }
                }
                ArchivedStep::Put(e) => {
                    s.insert(e.pack(), Eviction::Lru, now);
                }
            }
        }
        Ok(())
    }
}

/// A distributed map of bytes to bytes.
#[derive(Clone)]
pub struct Map(ObjectHandle);

impl DistributedObject for Map {
    type Service = MapService;
    fn from_handle(handle: ObjectHandle) -> Self {
        Map(handle)
    }
}

fn ttl_ms(ttl: Option<Duration>) -> i64 {
    match ttl {
        None => -1,
        // Zero means "no expiry" on the wire: a TTL that rounds to 0 ms still expires.
        Some(d) if d.is_zero() => 0,
        Some(d) => (d.as_millis().min(i64::MAX as u128) as i64).max(1),
    }
}

impl Map {
    /// The map's name.
    pub fn name(&self) -> &str {
        self.0.name()
    }

    async fn put_op(
        &self,
        key: &[u8],
        value: &[u8],
        ttl: Option<Duration>,
        return_old: bool,
    ) -> Result<Written, InvocationError> {
        let op = Put {
            name: self.0.name().to_owned(),
            key: key.to_vec(),
            value: value.to_vec(),
            ttl_ms: ttl_ms(ttl),
            return_old,
        };
        self.0.invoke_key(key, &op).await
    }

    /// Sets `key` (with the map's default TTL) and answers its previous value.
    ///
    /// Errors: the invocation's; `Operation` for a key over 64 KiB or a full map with eviction
    /// `none`.
    pub async fn put(&self, key: &[u8], value: &[u8]) -> Result<Option<Vec<u8>>, InvocationError> {
        Ok(self.put_op(key, value, None, true).await?.old)
    }

    /// Sets `key` with its own TTL (zero: never expires) and answers its previous value.
    ///
    /// Errors: as [`Map::put`].
    pub async fn put_with_ttl(
        &self,
        key: &[u8],
        value: &[u8],
        ttl: Duration,
    ) -> Result<Option<Vec<u8>>, InvocationError> {
        Ok(self.put_op(key, value, Some(ttl), true).await?.old)
    }

    /// Sets `key`, without reading the previous value back.
    ///
    /// Errors: as [`Map::put`].
    pub async fn set(&self, key: &[u8], value: &[u8]) -> Result<(), InvocationError> {
        self.put_op(key, value, None, false).await.map(|_| ())
    }

    /// Sets `key` with its own TTL, without reading the previous value back.
    ///
    /// Errors: as [`Map::put`].
    pub async fn set_with_ttl(
        &self,
        key: &[u8],
        value: &[u8],
        ttl: Duration,
    ) -> Result<(), InvocationError> {
        self.put_op(key, value, Some(ttl), false).await.map(|_| ())
    }

    /// The live value of `key`.
    ///
    /// Errors: the invocation's.
    pub async fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, InvocationError> {
        self.get_with(key, |v| v.map(<[u8]>::to_vec)).await
    }

    /// `key`'s live value, read in place by `read` (`None`: no live value): no copy of it is
    /// made on the way.
    ///
    /// Errors: the invocation's.
    pub async fn get_with<R>(
        &self,
        key: &[u8],
        read: impl FnOnce(Option<&[u8]>) -> R,
    ) -> Result<R, InvocationError> {
        let op = GetRef {
            name: self.0.name(),
            key,
        };
        self.0
            .invoke_key_with::<Get, _, _>(key, &op, |v| read(v.as_ref().map(|v| v.as_slice())))
            .await
    }

    async fn remove_op(&self, key: &[u8], return_old: bool) -> Result<Written, InvocationError> {
        let op = Remove {
            name: self.0.name().to_owned(),
            key: key.to_vec(),
            return_old,
        };
        self.0.invoke_key(key, &op).await
    }

    /// Removes `key`; answers the value it had.
    ///
    /// Errors: the invocation's.
    pub async fn remove(&self, key: &[u8]) -> Result<Option<Vec<u8>>, InvocationError> {
        Ok(self.remove_op(key, true).await?.old)
    }

    /// Removes `key`; answers whether it had a value.
    ///
    /// Errors: the invocation's.
    pub async fn delete(&self, key: &[u8]) -> Result<bool, InvocationError> {
        Ok(self.remove_op(key, false).await?.changed)
    }

    /// Whether `key` has a live value.
    ///
    /// Errors: the invocation's.
    pub async fn contains_key(&self, key: &[u8]) -> Result<bool, InvocationError> {
        let op = ContainsKey {
            name: self.0.name().to_owned(),
            key: key.to_vec(),
        };
        self.0.invoke_key(key, &op).await
    }

    /// Sets `key` if it has no live value; answers the value it has (`None`: this call set it).
    ///
    /// Errors: as [`Map::put`].
    pub async fn put_if_absent(
        &self,
        key: &[u8],
        value: &[u8],
    ) -> Result<Option<Vec<u8>>, InvocationError> {
        let op = PutIfAbsent {
            name: self.0.name().to_owned(),
            key: key.to_vec(),
            value: value.to_vec(),
            ttl_ms: -1,
        };
        Ok(self.0.invoke_key(key, &op).await?.old)
    }

    /// Replaces `key`'s value if it has one; answers the value replaced.
    ///
    /// Errors: the invocation's.
    pub async fn replace(
        &self,
        key: &[u8],
        value: &[u8],
    ) -> Result<Option<Vec<u8>>, InvocationError> {
        let op = Replace {
            name: self.0.name().to_owned(),
            key: key.to_vec(),
            value: value.to_vec(),
            expect: None,
        };
        Ok(self.0.invoke_key(key, &op).await?.old)
    }

    /// Replaces `key`'s value with `value` only if it is `expect`; answers whether it did.
    ///
    /// Errors: the invocation's.
    pub async fn replace_if_equal(
        &self,
        key: &[u8],
        expect: &[u8],
        value: &[u8],
    ) -> Result<bool, InvocationError> {
        let op = Replace {
            name: self.0.name().to_owned(),
            key: key.to_vec(),
            value: value.to_vec(),
            expect: Some(expect.to_vec()),
        };
        Ok(self.0.invoke_key(key, &op).await?.changed)
    }

    /// The live values of `keys` (those that have one): one operation per partition, sent as
    /// one request per owning shard.
    ///
    /// Errors: the first failed partition's.
    pub async fn get_all(&self, keys: &[Vec<u8>]) -> Result<Vec<Pair>, InvocationError> {
        let invoker = self.0.invoker();
        let mut groups: AHashMap<u32, Vec<Vec<u8>>> = AHashMap::new();
        for k in keys {
            groups
                .entry(invoker.partition_of(k).0)
                .or_default()
                .push(k.clone());
        }
        let ops: Vec<(PartitionId, GetAll)> = groups
            .into_iter()
            .map(|(p, keys)| {
                let name = self.0.name().to_owned();
                (PartitionId(p), GetAll { name, keys })
            })
            .collect();
        Ok(invoker
            .invoke_many(&ops)
            .await?
            .into_iter()
            .flatten()
            .collect())
    }

    /// Sets every entry (with the map's default TTL): one operation per partition, sent as one
    /// request per owning shard.
    ///
    /// Errors: the first failed partition's.
    pub async fn put_all(&self, entries: &[Pair]) -> Result<(), InvocationError> {
        let invoker = self.0.invoker();
        let mut groups: AHashMap<u32, Vec<Pair>> = AHashMap::new();
        for (k, v) in entries {
            groups
                .entry(invoker.partition_of(k).0)
                .or_default()
                .push((k.clone(), v.clone()));
        }
        let ops: Vec<(PartitionId, PutAll)> = groups
            .into_iter()
            .map(|(p, entries)| {
                let name = self.0.name().to_owned();
                (PartitionId(p), PutAll { name, entries })
            })
            .collect();
        invoker.invoke_many(&ops).await.map(|_| ())
    }

    /// The number of live entries.
    ///
    /// Errors: the invocation's.
    pub async fn size(&self) -> Result<u64, InvocationError> {
        let op = Size {
            name: self.0.name().to_owned(),
        };
        Ok(self
            .0
            .invoke_all(&op)
            .await?
            .into_iter()
            .map(|(_, n)| n)
            .sum())
    }

    /// Removes every entry (listeners get a `Removed` event per entry).
    ///
    /// Errors: the invocation's.
    pub async fn clear(&self) -> Result<(), InvocationError> {
        let op = Clear {
            name: self.0.name().to_owned(),
        };
        self.0.invoke_all(&op).await.map(|_| ())
    }

    async fn scan(
        &self,
        keys: bool,
        values: bool,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>, InvocationError> {
        let op = Entries {
            name: self.0.name().to_owned(),
            keys,
            values,
        };
        Ok(self
            .0
            .invoke_all(&op)
            .await?
            .into_iter()
            .flat_map(|(_, e)| e)
            .collect())
    }

    /// Every live entry, partition by partition.
    ///
    /// Errors: the invocation's.
    pub async fn entries(&self) -> Result<Vec<(Vec<u8>, Vec<u8>)>, InvocationError> {
        self.scan(true, true).await
    }

    /// Every live key.
    ///
    /// Errors: the invocation's.
    pub async fn keys(&self) -> Result<Vec<Vec<u8>>, InvocationError> {
        Ok(self
            .scan(true, false)
            .await?
            .into_iter()
            .map(|(k, _)| k)
            .collect())
    }

    /// Every live value.
    ///
    /// Errors: the invocation's.
    pub async fn values(&self) -> Result<Vec<Vec<u8>>, InvocationError> {
        Ok(self
            .scan(false, true)
            .await?
            .into_iter()
            .map(|(_, v)| v)
            .collect())
    }

    /// Gives `key` a TTL from now (`None`: never expires); false if it has no live value.
    ///
    /// Errors: the invocation's.
    pub async fn set_ttl(
        &self,
        key: &[u8],
        ttl: Option<Duration>,
    ) -> Result<bool, InvocationError> {
        let op = SetTtl {
            name: self.0.name().to_owned(),
            key: key.to_vec(),
            ttl_ms: ttl.map_or(0, |d| (d.as_millis().min(u64::MAX as u128) as u64).max(1)),
        };
        Ok(self.0.invoke_key(key, &op).await?.changed)
    }

    /// Adds `delta` to the decimal integer `key` holds (a missing key counts as 0), keeping its
    /// expiry, as Redis' INCRBY does: the new value, or `NotAnInteger` / `Overflow` (nothing
    /// changed).
    ///
    /// Errors: the invocation's.
    pub async fn add_integer(
        &self,
        key: &[u8],
        delta: i64,
    ) -> Result<update::Updated, InvocationError> {
        self.update(key, update::Change::Add(delta)).await
    }

    /// Appends `tail` to `key`'s value (a missing key counts as empty), keeping its expiry: the
    /// value's new length (`Updated::Length`).
    ///
    /// Errors: the invocation's.
    pub async fn append(
        &self,
        key: &[u8],
        tail: &[u8],
    ) -> Result<update::Updated, InvocationError> {
        self.update(key, update::Change::Append(tail.to_vec()))
            .await
    }

    /// Redis' SET: stores `value` with `ttl` (`None`: the map's default) if `if_exists` allows
    /// (`None`: always; `Some(true)`: only over a live value; `Some(false)`: only when there is
    /// none), in one operation; answers `Updated::Set` with whether it stored and, if `get`, the
    /// value before.
    ///
    /// Errors: the invocation's.
    pub async fn set_if(
        &self,
        key: &[u8],
        value: &[u8],
        ttl: Option<Duration>,
        if_exists: Option<bool>,
        get: bool,
    ) -> Result<update::Updated, InvocationError> {
        let change = update::Change::Set(update::SetTo {
            value: value.to_vec(),
            ttl_ms: ttl_ms(ttl),
            if_exists,
            get,
        });
        self.update(key, change).await
    }

    /// The live keys of one partition (for cursors that walk the map partition by partition).
    ///
    /// Errors: the invocation's; `NoSuchPartition` past the last one.
    pub async fn keys_in(&self, partition: PartitionId) -> Result<Vec<Vec<u8>>, InvocationError> {
        let op = Entries {
            name: self.0.name().to_owned(),
            keys: true,
            values: false,
        };
        let entries = self.0.invoker().invoke(partition, &op).await?;
        Ok(entries.into_iter().map(|(k, _)| k).collect())
    }

    async fn update(
        &self,
        key: &[u8],
        change: update::Change,
    ) -> Result<update::Updated, InvocationError> {
        let op = update::UpdateRef {
            name: self.0.name(),
            key,
            change: &change,
        };
        let done = self.0.invoke_key_as::<update::Update, _>(key, &op).await?;
        Ok(done.outcome)
    }

    /// The time `key` has left: `None` if it has no live value, `Some(None)` if it never
    /// expires.
    ///
    /// Errors: the invocation's.
    pub async fn ttl(&self, key: &[u8]) -> Result<Option<Option<Duration>>, InvocationError> {
        let op = Ttl {
            name: self.0.name().to_owned(),
            key: key.to_vec(),
        };
        let at = self.0.invoke_key(key, &op).await?;
        Ok(at.map(|at| (at != 0).then(|| Duration::from_millis(at.saturating_sub(now_millis())))))
    }

    /// Listens to every change of every key, from every partition and member; `values`: events
    /// carry the values. Dropping the listener stops it.
    ///
    /// Errors: `MemberStopped` if the member stops meanwhile.
    pub async fn listen(&self, values: bool) -> Result<MapListener, InvocationError> {
        let spec = ListenSpec {
            id: corecast_engine::events::random_id(),
            service: MapService::ID,
            name: self.0.name().to_owned(),
            values,
        };
        Ok(MapListener(
            Listener::register(self.0.invoker().clone(), spec).await?,
        ))
    }

    /// This map with keys and values of rkyv types.
    pub fn typed<K: Payload, V: Payload>(&self) -> TypedMap<K, V> {
        TypedMap {
            map: self.clone(),
            _types: std::marker::PhantomData,
        }
    }
}

/// A map's entry events.
pub struct MapListener(Listener);

impl MapListener {
    /// The next event; `None` once the member stopped.
    pub async fn next(&self) -> Option<EntryEvent> {
        loop {
            let bytes = self.0.next().await?;
            if let Some(e) = decode_event(&bytes) {
                return Some(e);
            }
        }
    }

    /// The next event, waiting at most `timeout` (blocking the thread).
    pub fn next_timeout(&self, timeout: Duration) -> Option<EntryEvent> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let left = deadline.checked_duration_since(std::time::Instant::now())?;
            let bytes = self.0.next_timeout(left)?;
            if let Some(e) = decode_event(&bytes) {
                return Some(e);
            }
        }
    }
}

fn decode_event(bytes: &[u8]) -> Option<EntryEvent> {
    match decode::<EntryEvent>(bytes) {
        Ok(e) => Some(e),
        Err(e) => {
            tracing::warn!(error = %e, "malformed entry event dropped");
            None
        }
    }
}

/// A map whose keys and values are rkyv types (archived bytes on the wire).
pub struct TypedMap<K, V> {
    map: Map,
    _types: std::marker::PhantomData<fn() -> (K, V)>,
}

fn bytes_of<T: Payload>(v: &T) -> Result<Vec<u8>, InvocationError> {
    encode(v)
        .map(|b| b.to_vec())
        .map_err(|e| InvocationError::Operation {
            partition: PartitionId(0),
            source: OpError::Encode {
                what: "map key or value",
                reason: e.to_string(),
            },
        })
}

fn value_of<V: Payload>(bytes: Option<Vec<u8>>) -> Result<Option<V>, InvocationError> {
    let Some(bytes) = bytes else { return Ok(None) };
    let mut aligned = corecast_engine::payload::Bytes::with_capacity(bytes.len());
    aligned.extend_from_slice(&bytes);
    decode::<V>(&aligned)
        .map(Some)
        .map_err(|e| InvocationError::Operation {
            partition: PartitionId(0),
            source: OpError::failed(format!("value does not decode: {e}")),
        })
}

impl<K: Payload, V: Payload> TypedMap<K, V> {
    /// Sets `key`; answers its previous value.
    ///
    /// Errors: as [`Map::put`], or a value that does not decode as `V`.
    pub async fn put(&self, key: &K, value: &V) -> Result<Option<V>, InvocationError> {
        value_of(self.map.put(&bytes_of(key)?, &bytes_of(value)?).await?)
    }

    /// The value of `key`.
    ///
    /// Errors: as [`Map::get`], or a value that does not decode as `V`.
    pub async fn get(&self, key: &K) -> Result<Option<V>, InvocationError> {
        value_of(self.map.get(&bytes_of(key)?).await?)
    }

    /// Removes `key`; answers its value.
    ///
    /// Errors: as [`Map::remove`], or a value that does not decode as `V`.
    pub async fn remove(&self, key: &K) -> Result<Option<V>, InvocationError> {
        value_of(self.map.remove(&bytes_of(key)?).await?)
    }

    /// Whether `key` has a live value.
    ///
    /// Errors: as [`Map::contains_key`].
    pub async fn contains_key(&self, key: &K) -> Result<bool, InvocationError> {
        self.map.contains_key(&bytes_of(key)?).await
    }

    /// The untyped map.
    pub fn untyped(&self) -> &Map {
        &self.map
    }
}

/// A key and its value.
pub type Pair = (Vec<u8>, Vec<u8>);

#[cfg(test)]
mod tests;
