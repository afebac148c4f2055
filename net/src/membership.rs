//! The cluster's membership and partition table logic, sans IO: a state machine fed control
//! messages and the clock, returning what to send and what changed.
//!
//! Owns: [`Membership`] and [`Action`]. The oldest member (the first of the list) is the master:
//! it admits joiners, removes members its failure detector finds silent past the timeout,
//! versions the member list and the partition table and sends both to everyone. When the master
//! goes silent, the oldest member still heard from takes over. The runtime (`node`) carries the
//! actions over sockets; the tests here drive several machines against each other in process.
//!
//! Split brain: a network split leaves two clusters of the same name, each whole on its own
//! side. Every probe interval each member sends a [`Control::SplitProbe`] naming its master to
//! the addresses it knows of (seeds, members it once had) that are not in its list; a member
//! passes a probe from another cluster to its master. The master that hears one decides for both sides by the same
//! rule: the cluster with fewer data members merges into the other (on a tie, the one whose
//! master's address is higher). The smaller side's master tells its members
//! ([`Control::MergeInto`]) and each member, itself included, hands its owned partitions' data
//! to the runtime ([`Action::Merge`]), forgets its cluster and joins the other one.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use corecast_engine::migration::{Migration, MigrationProgress, Planner};
use corecast_engine::partition::{PartitionCount, PartitionId};
use corecast_engine::table::{MemberId, PartitionTable};

use crate::wire::{Control, MemberEntry};

/// The failure detector's and the join's timing.
#[derive(Clone, Copy, Debug)]
pub struct Timing {
    /// How often heartbeats go out (and join requests are resent).
    pub heartbeat: Duration,
    /// Silence after which a member is removed.
    pub member_timeout: Duration,
    /// How long to look for a master before becoming one.
    pub join_timeout: Duration,
}

/// What the runtime must do after feeding the machine.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    /// Send a control message to the member at this base address.
    Send(SocketAddr, Control),
    /// The member list changed (this member is in it).
    ListChanged {
        /// The members, oldest first.
        members: Vec<MemberEntry>,
        /// The list version.
        version: u64,
        /// Members that joined since the previous list.
        added: Vec<MemberEntry>,
        /// Members that left since the previous list.
        removed: Vec<MemberEntry>,
    },
    /// A newer partition table.
    TableChanged(PartitionTable),
    /// This member joined a cluster (or formed one); the master is given.
    Joined {
        /// The master's entry.
        master: MemberEntry,
    },
    /// This member became the master (at start, or taking over from a dead one).
    BecameMaster,
    /// This member left the cluster after handing its partitions over (see
    /// [`Membership::leave`]).
    Left,
    /// The cluster removed this member (it was paused or cut off past the timeout): before the
    /// (empty) list that follows, drop every partition's data and the view of the cluster; the
    /// member then joins again and gets partitions by migration like a new member.
    Reset,
    /// This member's cluster lost a split brain: before the list and table that follow
    /// (empty), collect the data of every partition this member owns by the table it had, drop
    /// it, and once joined to the cluster at `target`, merge it there.
    Merge {
        /// The master of the cluster this member joins.
        target: SocketAddr,
    },
}

#[derive(Debug, PartialEq, Eq)]
enum State {
    Joining {
        since: Instant,
        last_sent: Option<Instant>,
    },
    Joined,
}

/// One member's view of the cluster and its part in keeping it.
pub struct Membership {
    me: MemberEntry,
    timing: Timing,
    state: State,
    seeds: BTreeSet<SocketAddr>,
    /// Seeds that answered they are joining too, with when they last said so: one silent
    /// for a join timeout (it died, or joined a cluster) no longer holds this member back
    /// (seed 206: a dead lower peer kept a newcomer joining for ever).
    joining_peers: BTreeMap<SocketAddr, Instant>,
    members: Vec<MemberEntry>,
    version: u64,
    table: PartitionTable,
    last_heard: BTreeMap<MemberId, Instant>,
    last_heartbeat: Option<Instant>,
    /// The last tick: a gap of half the member timeout means this member stalled.
    last_tick: Option<Instant>,
    /// Joining again after the cluster removed it: a cluster exists, so it keeps asking rather
    /// than forming one of its own, until it has heard nothing for a whole member timeout
    /// beyond the join timeout (then the others are presumed gone).
    rejoining: bool,
    out: Vec<Action>,
    /// As master: the target table and the migrations in flight.
    planner: Planner,
    /// As master: members handing their partitions over before they leave.
    leaving: BTreeSet<MemberId>,
    /// Migrations at once; 0 means one per shard of the data members.
    parallel: usize,
    /// A migration not ready this long after it started is rolled back.
    migration_timeout: Duration,
    /// The rebalance as last published.
    progress: MigrationProgress,
    /// This member asked to leave.
    left: bool,
    /// Addresses of members this one has known (seeds, every member of its lists): where a
    /// master looks for another cluster of its name.
    known: BTreeSet<SocketAddr>,
    /// How often a master probes the known addresses outside its list; `None`: never.
    probe_interval: Option<Duration>,
    last_probe: Option<Instant>,
    /// As a master that took over: gathering the members' tables before it publishes its own.
    recovering: Option<Recovery>,
    /// The master that published the table this member holds: a member that switches to
    /// another master (a list from the other side of a healed split) holds the old one's table
    /// until the new master's arrives, whatever its version (seed 1223: of the same version,
    /// it was never replaced).
    table_from: Option<MemberId>,
    /// When this member last heard a heartbeat from a member of its list (never reset by a
    /// stall, unlike `last_heard`): how long it may go on answering as an owner.
    confirmed: Option<Instant>,
    /// It stalled and has heard from no member of its list since.
    stalled: bool,
    /// As master, the version of the previous master's list it took over from (0: it formed
    /// the cluster), sent with its lists.
    base: u64,
    /// Members of its list whose own lists it refused: they lead another cluster.
    refused: BTreeSet<MemberId>,
}

/// A master that took over, gathering the members' tables.
#[derive(Debug)]
struct Recovery {
    since: Instant,
    /// The members whose tables it waits for.
    waiting: BTreeSet<MemberId>,
    /// The members removed since: the table published at the end names none of them, though
    /// one may have joined again (without its data) meanwhile.
    gone: BTreeSet<MemberId>,
    /// The master it took over from, and the newest version of that master's list a member
    /// reported: the list published at the end is based on it.
    from: Option<MemberId>,
    top: u64,
    /// The highest table version a member admitted meanwhile has seen (see `on_join_request`).
    table_floor: u64,
}

/// Most addresses a member remembers for split-brain probes.
const MAX_KNOWN: usize = 256;

impl Membership {
    /// A member that will join through `seeds` (its own address among them is ignored), whose
    /// table keeps `replica_slots` replicas per partition when it is the master.
    pub fn new(
        me: MemberEntry,
        seeds: impl IntoIterator<Item = SocketAddr>,
        partitions: PartitionCount,
        replica_slots: usize,
        timing: Timing,
        now: Instant,
    ) -> Self {
        let seeds: BTreeSet<SocketAddr> = seeds.into_iter().filter(|s| *s != me.addr).collect();
        Self {
            known: seeds.clone(),
            probe_interval: None,
            last_probe: None,
            recovering: None,
            table_from: None,
            confirmed: None,
            stalled: false,
            base: 0,
            refused: BTreeSet::new(),
            me,
            timing,
            state: State::Joining {
                since: now,
                last_sent: None,
            },
            seeds,
            joining_peers: BTreeMap::new(),
            members: Vec::new(),
            version: 0,
            table: PartitionTable::empty(partitions, replica_slots),
            last_heard: BTreeMap::new(),
            last_heartbeat: None,
            last_tick: None,
            rejoining: false,
            out: Vec::new(),
            planner: Planner::new(),
            leaving: BTreeSet::new(),
            parallel: 0,
            migration_timeout: Duration::from_secs(60),
            progress: MigrationProgress::default(),
            left: false,
        }
    }

    /// Sets how many migrations run at once (0: one per shard of the data members)
    /// and how long one may take before it is rolled back.
    pub fn with_migration(mut self, parallel: usize, timeout: Duration) -> Self {
        self.parallel = parallel;
        self.migration_timeout = timeout;
        self
    }

    /// Sets how often a master looks for another cluster of its name among the addresses it
    /// knows (`None`: never, so split brains are not merged).
    pub fn with_split_brain_probe(mut self, interval: Option<Duration>) -> Self {
        self.probe_interval = interval;
        self
    }

    /// The rebalance's progress: the master's own, or as last published.
    pub fn progress(&self) -> MigrationProgress {
        if self.is_master() {
            self.planner.progress(&self.table)
        } else {
            self.progress
        }
    }

    /// This member.
    pub fn me(&self) -> &MemberEntry {
        &self.me
    }

    /// The members, oldest first (empty while joining).
    pub fn members(&self) -> &[MemberEntry] {
        &self.members
    }

    /// The member list version.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// The partition table.
    pub fn table(&self) -> &PartitionTable {
        &self.table
    }

    /// The master that published this member's partition table (`None`: none yet).
    pub fn table_publisher(&self) -> Option<MemberId> {
        self.table_from
    }

    /// Whether this member has joined a cluster.
    pub fn is_joined(&self) -> bool {
        self.state == State::Joined
    }

    /// The master, once joined.
    pub fn master(&self) -> Option<&MemberEntry> {
        self.members.first()
    }

    /// Until when this member may answer as the owner of its partitions: a member that has
    /// heard no heartbeat from its cluster for a while may have been removed and its
    /// partitions promoted elsewhere (it was paused, or cut off), so it must not answer from
    /// them — not even reads. The cluster removes a member silent for a member timeout; this
    /// lease ends two heartbeats before that, counted from the last heartbeat heard. A member
    /// alone in its cluster holds it always; one not joined, never.
    pub fn lease_until(&self, now: Instant) -> Option<Instant> {
        if !self.is_joined() {
            return None;
        }
        if self.members.len() == 1 {
            return Some(now + self.timing.member_timeout);
        }
        let margin = self
            .timing
            .member_timeout
            .saturating_sub(self.timing.heartbeat * 2);
        self.confirmed.map(|t| t + margin)
    }

    /// Whether member `id` was heard from within the last two heartbeats.
    fn heard_lately(&self, id: MemberId, now: Instant) -> bool {
        self.last_heard
            .get(&id)
            .is_some_and(|t| now.duration_since(*t) < self.timing.heartbeat * 2)
    }

    /// Whether this member may act as master: a master that stalled (paused, or starved) may
    /// have been replaced meanwhile, so it admits no one, commits and starts no migration until
    /// a member of its list is heard from again (seed 650 of the simulation's data model: a
    /// master resumed from a pause ran a migration for the cluster that had removed it, and
    /// the write its new owner took was lost). Alone in its list, it always may.
    fn leads(&self) -> bool {
        !self.stalled || self.members.len() == 1
    }

    /// Whether this member is the master.
    pub fn is_master(&self) -> bool {
        self.is_joined() && self.master().is_some_and(|m| m.id == self.me.id)
    }

    /// Takes the actions produced so far.
    pub fn drain(&mut self) -> Vec<Action> {
        std::mem::take(&mut self.out)
    }

    /// The clock moved: resend join requests, send heartbeats, detect failures, take over.
    pub fn tick(&mut self, now: Instant) {
        if let Some(last) = self.last_tick {
            let gap = now.saturating_duration_since(last);
            if gap > self.timing.member_timeout / 2 {
                // This member was paused (SIGSTOP, a VM freeze) or starved: the others' silence
                // is its own. Judging them now would remove a healthy cluster from under it, so
                // everyone gets a fresh timeout; a master that removed it meanwhile answers its
                // next heartbeat with the list, and it rejoins.
                tracing::warn!(
                    millis = gap.as_millis() as u64,
                    "this member stalled; giving every member a fresh timeout"
                );
                for heard in self.last_heard.values_mut() {
                    *heard = now;
                }
                self.stalled = true;
            }
        }
        self.last_tick = Some(now);
        match self.state {
            State::Joining { since, last_sent } => {
                let due = last_sent.is_none_or(|t| now.duration_since(t) >= self.timing.heartbeat);
                if self.seeds.is_empty() {
                    self.become_master(now);
                } else if now.duration_since(since) >= self.join_patience()
                    && self.joining_peers.iter().all(|(peer, heard)| {
                        *peer > self.me.addr
                            || now.duration_since(*heard) > self.timing.join_timeout
                    })
                {
                    // No master answered; of the members looking for one, the lowest address
                    // forms the cluster and the others join it.
                    tracing::info!(seeds = ?self.seeds, "no master found among the seeds");
                    self.become_master(now);
                } else if due {
                    self.state = State::Joining {
                        since,
                        last_sent: Some(now),
                    };
                    let request = self.join_request();
                    for seed in &self.seeds {
                        self.out.push(Action::Send(*seed, request.clone()));
                    }
                }
            }
            State::Joined => {
                if self
                    .last_heartbeat
                    .is_none_or(|t| now.duration_since(t) >= self.timing.heartbeat)
                {
                    self.last_heartbeat = Some(now);
                    let beat = Control::Heartbeat {
                        id: self.me.id.0,
                        addr: self.me.addr.to_string(),
                        list_version: self.version,
                        // A table of another master counts as none: the master resends its own.
                        table_version: if self.table_publisher() == self.master().map(|m| m.id) {
                            self.table.version
                        } else {
                            0
                        },
                        master: self.master().map_or(0, |m| m.id.0),
                    };
                    self.broadcast(&beat);
                }
                self.detect_failures(now);
                self.probe(now);
                self.recover(now);
                if self.is_master() && self.recovering.is_none() && self.leads() {
                    for m in self.planner.expired(now, self.migration_timeout) {
                        tracing::warn!(partition = %m.partition, id = m.id, "migration timed out; rolling it back");
                        self.rollback(&m);
                    }
                    self.after_migrations(now, false);
                }
            }
        }
    }

    /// A control message arrived from a member.
    pub fn receive(&mut self, msg: Control, now: Instant) {
        match msg {
            Control::JoinRequest {
                member,
                list_version,
                table_version,
            } => {
                if let Some(entry) = MemberEntry::from_wire(&member) {
                    self.on_join_request(entry, (list_version, table_version), now);
                }
            }
            Control::SplitProbe {
                master,
                master_id,
                members,
            } => {
                if let Ok(master) = master.parse() {
                    self.on_split_probe(master, MemberId(master_id), members, now);
                }
            }
            Control::MergeInto { target, master_id } => {
                let from_master = self.master().is_some_and(|m| m.id.0 == master_id);
                if let (true, true, Ok(target)) = (self.is_joined(), from_master, target.parse()) {
                    self.merge_into(target, now);
                }
            }
            Control::NotMaster { master } => {
                if let (State::Joining { .. }, Ok(addr)) = (&self.state, master.parse()) {
                    if addr != self.me.addr && self.seeds.insert(addr) {
                        let request = self.join_request();
                        self.out.push(Action::Send(addr, request));
                    }
                }
            }
            Control::StillJoining { addr } => {
                if let Ok(addr) = addr.parse() {
                    self.joining_peers.insert(addr, now);
                }
            }
            Control::MemberList {
                version,
                members,
                base,
            } => {
                let members = members.iter().filter_map(MemberEntry::from_wire).collect();
                self.on_member_list(version, members, base, now);
            }
            Control::Table {
                version,
                master,
                depth,
                replicas,
                migrations,
            } => {
                // Only the own master's: across a split (or while lists cross on a lossy
                // network) two masters number tables in one sequence, and a table taken from
                // the other side would differ from this side's of the same version (seed 35).
                let mine = self.master().is_some_and(|m| m.id.0 == master);
                // Another master's table is replaced whatever the version; an emptied one (its
                // cluster forgotten) by one as new, never an older one delayed on the way (seed
                // 1 of the simulation's data model took a write as owner by such a table).
                let stale = match self.table_from {
                    Some(from) => from != MemberId(master),
                    None => version >= self.table.version,
                };
                if mine && (version > self.table.version || stale) {
                    if let Some(table) =
                        table_from_wire(version, depth, &replicas, self.table.rows.len())
                    {
                        self.table = table;
                        self.table_from = Some(MemberId(master));
                        self.progress = progress_from_wire(migrations);
                        self.out.push(Action::TableChanged(self.table.clone()));
                    }
                }
            }
            Control::MigrationReady {
                id,
                partition,
                ok,
                reason,
            } => self.on_migration_ready(id, PartitionId(partition), ok, &reason, now),
            Control::TableQuery { master_id, addr } => {
                // Not for a member taking over while this member's master is still heard from:
                // that one is alive (across a split), and the new master would base its list
                // on this member's and so take it over (seed 178).
                let master_alive = self.master().is_some_and(|m| {
                    m.id.0 != master_id && m.id != self.me.id && self.heard_lately(m.id, now)
                });
                if master_alive {
                    tracing::debug!(
                        master = master_id,
                        "not reporting the table to a new master while this one is heard from"
                    );
                } else if let (true, Ok(addr)) = (self.is_joined(), addr.parse::<SocketAddr>()) {
                    let report = Control::TableReport {
                        member: self.me.id.0,
                        version: self.table.version,
                        publisher: self.table_from.map_or(0, |m| m.0),
                        depth: self.table.depth() as u8,
                        replicas: rows_to_wire(&self.table),
                        list_version: self.version,
                        list_master: self.master().map_or(0, |m| m.id.0),
                    };
                    tracing::debug!(
                        master = master_id,
                        version = self.table.version,
                        "reporting the table to a new master"
                    );
                    self.out.push(Action::Send(addr, report));
                }
            }
            Control::TableReport {
                member,
                version,
                publisher,
                depth,
                replicas,
                list_version,
                list_master,
            } => {
                if let Some(r) = &mut self.recovering {
                    let (member, master) = (MemberId(member), MemberId(list_master));
                    if r.from == Some(master) && r.waiting.contains(&member) {
                        r.top = r.top.max(list_version);
                    }
                }
                let table = (version, MemberId(publisher), depth);
                self.on_table_report(MemberId(member), table, &replicas, now);
            }
            Control::Heartbeat {
                id,
                addr,
                list_version,
                table_version,
                master,
            } => {
                let id = MemberId(id);
                let known = self.members.iter().find(|m| m.id == id).map(|m| m.addr);
                if known.is_none() && self.is_master() && matches!(self.state, State::Joined) {
                    // A member this cluster removed (it was paused, or cut off, past the
                    // timeout) still thinks it belongs: the list without it tells it to rejoin.
                    if let Ok(addr) = addr.parse::<SocketAddr>() {
                        if addr != self.me.addr {
                            self.out.push(Action::Send(addr, self.list_message()));
                        }
                    }
                }
                if let Some(member_addr) = known {
                    self.last_heard.insert(id, now);
                    self.confirmed = Some(now);
                    self.stalled = false;
                    // Behind (a lower version) is repaired by resending, below.
                    let follows_another = master != self.me.id.0 && list_version >= self.version;
                    if self.is_master()
                        && self.recovering.is_none()
                        && (follows_another
                            || list_version > self.version
                            || table_version > self.table.version)
                    {
                        // A member of this list follows another master's list, numbered as high
                        // as ours or higher: from before a split healed (seed 332: it ignored
                        // this list, of the same version, and waited on a dead master for ever).
                        // Renumber ours above it.
                        tracing::warn!(
                            member = %id,
                            list_version,
                            table_version,
                            "a member follows another master's list or a newer table; \
                             publishing ours above it"
                        );
                        self.version = self.version.max(list_version);
                        self.table.version = self.table.version.max(table_version);
                        let members = self.members.clone();
                        self.publish(members, now);
                    } else if self.is_master()
                        && (list_version < self.version || table_version < self.table.version)
                    {
                        // It missed an update (a list or a table lost with a connection): send
                        // the current list and table again. Found by the seeded simulation.
                        self.out
                            .push(Action::Send(member_addr, self.list_message()));
                        self.send_table(member_addr);
                    }
                }
            }
            Control::Leave { id } => {
                let id = MemberId(id);
                if self.is_master() && id != self.me.id {
                    self.on_leave(id, now);
                }
            }
            Control::Hello { .. }
            | Control::Welcome { .. }
            | Control::Refused { .. }
            | Control::Subscribe
            | Control::StatsRequest
            | Control::Stats { .. }
            | Control::MigrationStart { .. }
            | Control::MigrationRollback { .. } => {}
        }
    }

    /// This member is shutting down gracefully: its partitions are handed over first. A member
    /// asks the master; the master plans itself out of every row. [`Action::Left`] says when it
    /// holds nothing and is out of the member list (at once when there is no one to hand over
    /// to).
    pub fn leave(&mut self, now: Instant) {
        self.left = true;
        if !self.is_joined() {
            self.out.push(Action::Left);
        } else if self.is_master() {
            self.on_leave(self.me.id, now);
        } else if let Some(master) = self.master() {
            let addr = master.addr;
            self.out
                .push(Action::Send(addr, Control::Leave { id: self.me.id.0 }));
        }
    }

    /// As master: member `id` wants to leave. It goes at once when it holds no replica or no
    /// one else could take them; otherwise after its partitions migrated away.
    fn on_leave(&mut self, id: MemberId, now: Instant) {
        let others = self
            .data_members()
            .into_iter()
            .any(|m| m != id && !self.leaving.contains(&m));
        if !others || self.holds_nothing(id) {
            self.depart(&[id], now);
            return;
        }
        if self.leaving.insert(id) {
            tracing::info!(member = %id, "member leaving: handing its partitions over");
            self.replan(now);
            self.publish_table();
        }
    }

    /// As master: removes members that left gracefully (or may go); the master itself hands
    /// the cluster to the next oldest member.
    fn depart(&mut self, ids: &[MemberId], now: Instant) {
        for id in ids {
            self.leaving.remove(id);
        }
        if !ids.contains(&self.me.id) {
            let gone: Vec<SocketAddr> = ids.iter().filter_map(|id| self.addr_of(*id)).collect();
            self.remove(ids, now);
            // The list without them tells them they are out.
            let list = self.list_message();
            for addr in gone {
                self.out.push(Action::Send(addr, list.clone()));
            }
            return;
        }
        // The master goes: the list without it makes the next oldest the master.
        let rest: Vec<MemberEntry> = self
            .members
            .iter()
            .filter(|m| !ids.contains(&m.id))
            .cloned()
            .collect();
        for m in self.planner.clear() {
            self.rollback(&m);
        }
        self.members = rest;
        self.version += 1;
        // The next oldest takes over from this very list.
        self.base = self.version;
        self.table.version += 1;
        let (list, table) = (self.list_message(), self.table_message());
        self.broadcast(&list);
        self.broadcast(&table);
        self.out.push(Action::Left);
    }

    fn holds_nothing(&self, id: MemberId) -> bool {
        self.table.owned_by(id) == 0 && self.table.backups_of(id) == 0
    }

    /// Non-lite members, oldest first.
    fn data_members(&self) -> Vec<MemberId> {
        self.members
            .iter()
            .filter(|m| !m.lite)
            .map(|m| m.id)
            .collect()
    }

    /// How many migrations may run at once.
    fn parallel(&self) -> usize {
        if self.parallel > 0 {
            return self.parallel;
        }
        let shards: usize = self
            .members
            .iter()
            .filter(|m| !m.lite)
            .map(|m| m.shards as usize)
            .sum();
        shards.max(1)
    }

    /// As master: plans the table the data members (less the leaving ones) should reach and
    /// starts migrations towards it.
    fn replan(&mut self, now: Instant) {
        let data: Vec<MemberId> = self
            .data_members()
            .into_iter()
            .filter(|m| !self.leaving.contains(m))
            .collect();
        if data.is_empty() {
            return;
        }
        let moves = self.planner.plan(&self.table, &data, now);
        if moves > 0 {
            tracing::info!(
                partitions = moves,
                members = data.len(),
                parallel = self.parallel(),
                "rebalance planned"
            );
        }
        self.start_migrations(now);
    }

    /// Starts what the planner allows; rows that need no copy change at once. True when the
    /// table changed.
    fn start_migrations(&mut self, now: Instant) -> bool {
        let started = self.planner.start(&self.table, self.parallel(), now);
        let changed = !started.direct.is_empty();
        for (p, row) in started.direct {
            if let Some(slot) = self.table.rows.get_mut(p.0 as usize) {
                *slot = row;
            }
        }
        for m in started.copies {
            let Some(addr) = self.addr_of(m.source) else {
                continue;
            };
            let msg = Control::MigrationStart {
                id: m.id,
                master: self.me.id.0,
                partition: m.partition.0,
                from: row_to_wire(&m.from),
                to: row_to_wire(&m.to),
            };
            self.out.push(Action::Send(addr, msg));
        }
        changed
    }

    fn addr_of(&self, id: MemberId) -> Option<SocketAddr> {
        self.members.iter().find(|m| m.id == id).map(|m| m.addr)
    }

    /// Tells a migration's live participants to undo it.
    fn rollback(&mut self, m: &Migration) {
        let msg = Control::MigrationRollback {
            id: m.id,
            master: self.me.id.0,
            partition: m.partition.0,
        };
        for id in m.participants() {
            if let Some(addr) = self.addr_of(id) {
                self.out.push(Action::Send(addr, msg.clone()));
            }
        }
    }

    /// As master: a source says its migration copied (or failed). A copied one whose row is
    /// still as it started (same owner, every member of the new row alive) is committed: the
    /// new row is published; any other is rolled back and planned again.
    fn on_migration_ready(
        &mut self,
        id: u64,
        partition: PartitionId,
        ok: bool,
        reason: &str,
        now: Instant,
    ) {
        if !self.is_master() || !self.leads() {
            return;
        }
        let Some(m) = self.planner.in_flight(partition).filter(|m| m.id == id) else {
            return;
        };
        let live = self.data_members();
        let row = self.table.rows.get(partition.0 as usize);
        let applies = ok
            && row.and_then(|r| r.first().copied().flatten()) == Some(m.source)
            && m.to.iter().flatten().all(|x| live.contains(x));
        let Some(m) = self.planner.finish(id, partition, applies, now) else {
            return;
        };
        if applies {
            if let Some(row) = self.table.rows.get_mut(partition.0 as usize) {
                row.clone_from(&m.to);
            }
        } else {
            if !ok {
                tracing::warn!(%partition, id, reason, "migration failed; it will be planned again");
            }
            self.rollback(&m);
        }
        self.after_migrations(now, applies);
    }

    /// After migrations finished: start the next ones, log the end of a rebalance, let leaving
    /// members that hold nothing go, and publish the table if it changed.
    fn after_migrations(&mut self, now: Instant, changed: bool) {
        let changed = self.start_migrations(now) || changed;
        if let Some(done) = self.planner.round_done(&self.table, now) {
            tracing::info!(
                planned = done.planned,
                moved = done.moved,
                failed = done.failed,
                millis = done.took.as_millis() as u64,
                "rebalance done"
            );
        }
        let free: Vec<MemberId> = self
            .leaving
            .iter()
            .copied()
            .filter(|m| self.holds_nothing(*m))
            .collect();
        if changed {
            self.publish_table();
        }
        if !free.is_empty() {
            self.depart(&free, now);
        }
    }

    /// As master: the table (version raised) with the progress, to everyone.
    fn publish_table(&mut self) {
        self.table.version += 1;
        self.table_from = Some(self.me.id);
        self.progress = self.planner.progress(&self.table);
        self.out.push(Action::TableChanged(self.table.clone()));
        let table = self.table_message();
        self.broadcast(&table);
    }

    fn join_request(&self) -> Control {
        Control::JoinRequest {
            member: self.me.to_wire(),
            list_version: self.version,
            table_version: self.table.version,
        }
    }

    /// Every probe interval: asks the known addresses outside the list whether they are in
    /// another cluster of this name, for this member's master. Every member probes, not only the
    /// master: the only member that knows an address of the other side may not be the master (a
    /// member that was in a cluster over there before it was removed, seed 1518).
    fn probe(&mut self, now: Instant) {
        let Some(interval) = self.probe_interval else {
            return;
        };
        let Some(master) = self.master().map(|m| (m.addr, m.id)) else {
            return;
        };
        if self
            .last_probe
            .is_some_and(|t| now.duration_since(t) < interval)
        {
            return;
        }
        self.last_probe = Some(now);
        let probe = Control::SplitProbe {
            master: master.0.to_string(),
            master_id: master.1 .0,
            members: self.data_members().len() as u32,
        };
        let outside: Vec<SocketAddr> = self
            .known
            .iter()
            .filter(|a| **a != self.me.addr && !self.members.iter().any(|m| m.addr == **a))
            .copied()
            .collect();
        for addr in outside {
            self.out.push(Action::Send(addr, probe.clone()));
        }
    }

    /// A probe from the cluster whose master is `master` (`id`), with `members` data members.
    fn on_split_probe(&mut self, master: SocketAddr, id: MemberId, members: u32, now: Instant) {
        if !self.is_joined() || self.members.iter().any(|m| m.id == id || m.addr == master) {
            // Still joining, or the prober is one of ours (a probe sent before its list said so).
            return;
        }
        if !self.is_master() {
            if let Some(mine) = self.master() {
                let probe = Control::SplitProbe {
                    master: master.to_string(),
                    master_id: id.0,
                    members,
                };
                self.out.push(Action::Send(mine.addr, probe));
            }
            return;
        }
        let ours = self.data_members().len() as u32;
        let we_merge = ours < members || (ours == members && self.me.addr > master);
        if we_merge {
            tracing::warn!(
                %master,
                theirs = members,
                ours,
                "another cluster of this name is reachable (a split brain healed): this, the \
                 smaller side, merges into it"
            );
            let order = Control::MergeInto {
                target: master.to_string(),
                master_id: self.me.id.0,
            };
            self.broadcast(&order);
            self.merge_into(master, now);
        } else {
            // They merge into us: our probe tells their master so.
            self.last_probe = None;
            self.remember(master);
            self.probe(now);
        }
    }

    /// Leaves this cluster to merge into the one whose master is `target`: the runtime takes
    /// the data first ([`Action::Merge`]), then this member forgets the cluster and joins.
    fn merge_into(&mut self, target: SocketAddr, now: Instant) {
        self.out.push(Action::Merge { target });
        self.forget_cluster(BTreeSet::from([target]), now);
    }

    /// Forgets the cluster (members, table rows, plans) and joins again through `seeds`.
    fn forget_cluster(&mut self, seeds: BTreeSet<SocketAddr>, now: Instant) {
        // Nobody is reported removed: the other members stay (or merge too), and a service told
        // of their departure would act on the cluster joined (a lock service releasing their
        // locks there). The versions stay: the master admitting this member numbers its next
        // list and table above them, so this member's clients take them as newer.
        self.members.clear();
        self.out.push(Action::ListChanged {
            members: Vec::new(),
            version: self.version,
            added: Vec::new(),
            removed: Vec::new(),
        });
        for row in &mut self.table.rows {
            row.iter_mut().for_each(|slot| *slot = None);
        }
        // The emptied table is no master's: kept as the old master's, its version would tell
        // that master (rejoined) that this member holds its table, which it would never resend
        // (seed 1049 of the simulation's data model).
        self.table_from = None;
        self.planner = Planner::new();
        self.leaving.clear();
        self.last_heard.clear();
        self.joining_peers.clear();
        self.progress = MigrationProgress::default();
        self.last_heartbeat = None;
        self.last_probe = None;
        self.seeds = seeds;
        self.seeds.remove(&self.me.addr);
        self.rejoining = true;
        self.me.incarnation += 1;
        self.state = State::Joining {
            since: now,
            last_sent: None,
        };
    }

    fn remember(&mut self, addr: SocketAddr) {
        if addr != self.me.addr && (self.known.len() < MAX_KNOWN || self.known.contains(&addr)) {
            self.known.insert(addr);
        }
    }

    fn on_join_request(&mut self, entry: MemberEntry, seen: (u64, u64), now: Instant) {
        match self.state {
            State::Joining { .. } => self.out.push(Action::Send(
                entry.addr,
                Control::StillJoining {
                    addr: self.me.addr.to_string(),
                },
            )),
            State::Joined if !self.is_master() => {
                if let Some(master) = self.master() {
                    let reply = Control::NotMaster {
                        master: master.addr.to_string(),
                    };
                    self.out.push(Action::Send(entry.addr, reply));
                }
            }
            State::Joined if !self.leads() => {}
            State::Joined => {
                if let Some(listed) = self.members.iter().find(|m| m.id == entry.id) {
                    if listed.incarnation >= entry.incarnation {
                        // Already in: it missed the list.
                        self.out.push(Action::Send(entry.addr, self.list_message()));
                        self.send_table(entry.addr);
                        return;
                    }
                    // It dropped its data since this list admitted it (another list removed
                    // it, or it merged away): kept as it was, it would own or back up what it
                    // no longer holds, and the writes only it had were lost with its next
                    // table (seed 1615 of the simulation's data model). It leaves first, its
                    // partitions promoted to the replicas that hold them, and joins as new.
                    tracing::warn!(
                        member = %entry.id,
                        "a member of the list joins again without its data; removing it first"
                    );
                    self.last_heard.remove(&entry.id);
                    let members: Vec<MemberEntry> = self
                        .members
                        .iter()
                        .filter(|m| m.id != entry.id)
                        .cloned()
                        .collect();
                    self.publish(members, now);
                }
                // A member restarted at the same address is a new member: the old one is gone.
                let stale: Vec<MemberId> = self
                    .members
                    .iter()
                    .filter(|m| m.addr == entry.addr && m.id != self.me.id)
                    .map(|m| m.id)
                    .collect();
                let alive = stale.iter().any(|id| self.heard_lately(*id, now));
                if alive {
                    // The member there was heard from just now: this request may be the late
                    // one of a process killed before it (seed 1647 of the simulation's data
                    // model: the live member was replaced by a dead one). A restarted process
                    // asks again, and is admitted once the old one is silent.
                    tracing::debug!(
                        member = %entry.id,
                        addr = %entry.addr,
                        "join from the address of a member still heard from; not yet"
                    );
                    return;
                }
                // A member from another cluster (a split brain's merge) has seen higher versions
                // than this cluster's: number the next ones above, so its clients take them.
                self.version = self.version.max(seen.0);
                match &mut self.recovering {
                    // The table held meanwhile is the old master's: renumbered, it would be a
                    // second table of that version from that master (seed 330). The one
                    // published at the end is numbered above.
                    Some(r) => r.table_floor = r.table_floor.max(seen.1),
                    None => self.table.version = self.table.version.max(seen.1),
                }
                let order = self.members.iter().map(|m| m.order).max().unwrap_or(0) + 1;
                let added = MemberEntry { order, ..entry };
                self.last_heard.insert(added.id, now);
                let mut members: Vec<MemberEntry> = self
                    .members
                    .iter()
                    .filter(|m| !stale.contains(&m.id))
                    .cloned()
                    .collect();
                members.push(added);
                self.publish(members, now);
            }
        }
    }

    fn on_member_list(&mut self, version: u64, members: Vec<MemberEntry>, base: u64, now: Instant) {
        let joining = matches!(self.state, State::Joining { .. });
        if version <= self.version && !joining {
            return;
        }
        // The list's master is this cluster's: the master, or a member of this list that took
        // over (it keeps its join order; one that formed a cluster of its own has order 0).
        // A successor's only if it took over from a list of this member's master at least as
        // new as this member's: a master that published newer lists was alive after the
        // takeover, across a split (seed 178: a member went over and left the writes it had
        // backed up for that master behind).
        let mine = self.master().map(|m| m.id);
        let from_mine = members.first().is_some_and(|m| {
            Some(m.id) == mine
                || (base >= self.version
                    && self
                        .members
                        .iter()
                        .any(|o| o.id == m.id && o.order == m.order))
        });
        if !joining && !from_mine {
            if let Some(lead) = members.first() {
                if self.members.iter().any(|o| o.id == lead.id) {
                    // A member of this list leads another cluster: not the one to wait on to
                    // take over (see `detect_failures`).
                    self.refused.insert(lead.id);
                }
            }
            // Another cluster's list (across a split that healed and has not merged, or that
            // admitted this member's join while it formed its own): taking it would leave this
            // cluster's data behind — dropped as a list without this member, or as the other
            // cluster's table (seeds 60 and 1659). The probes merge the clusters instead.
            tracing::debug!(
                version,
                master = ?members.first().map(|m| m.id),
                "ignoring the member list of another cluster's master"
            );
            return;
        }
        // A list naming this member under an older incarnation is of the member it was: this
        // one is not in it (yet).
        if !members
            .iter()
            .any(|m| m.id == self.me.id && m.incarnation == self.me.incarnation)
        {
            if self.left && !joining {
                // Handed over and removed: this member is done.
                self.members.clear();
                self.out.push(Action::Left);
                return;
            }
            if !joining {
                // The cluster removed this member (it was silent too long) and promoted other
                // replicas of its partitions: what it holds is stale, and its table names
                // members since gone, so a write it took as owner would have had no live backup
                // and been lost with the next table (the chaos run, seed 7: 181 acknowledged
                // writes). It drops everything and joins again, as a new member would.
                tracing::warn!(
                    version,
                    "this member was removed from the cluster; dropping its data and rejoining"
                );
                self.out.push(Action::Reset);
                let mut seeds = std::mem::take(&mut self.seeds);
                seeds.extend(members.iter().map(|m| m.addr));
                self.forget_cluster(seeds, now);
            }
            return;
        }
        for m in &members {
            self.last_heard.entry(m.id).or_insert(now);
        }
        self.confirmed = Some(now);
        self.stalled = false;
        self.refused.clear();
        let was_master = self.is_master();
        self.apply_list(version, members);
        if !joining && !was_master && self.is_master() {
            // The master left gracefully and this member is the oldest now.
            tracing::info!("the master left; this member is the master now");
            self.base = version;
            self.out.push(Action::BecameMaster);
            self.replan(now);
            self.publish_table();
        }
        if joining {
            self.state = State::Joined;
            self.rejoining = false;
            self.last_heartbeat = None;
            if let Some(master) = self.master().cloned() {
                self.out.push(Action::Joined { master });
            }
        }
    }

    fn become_master(&mut self, now: Instant) {
        self.state = State::Joined;
        self.last_heard.insert(self.me.id, now);
        let me = MemberEntry {
            order: 0,
            ..self.me.clone()
        };
        self.me.order = 0;
        self.base = 0;
        self.out.push(Action::BecameMaster);
        self.out.push(Action::Joined { master: me.clone() });
        self.publish(vec![me], now);
    }

    /// How long to look for a master before forming a cluster.
    fn join_patience(&self) -> Duration {
        if self.rejoining {
            self.timing.join_timeout + self.timing.member_timeout * 2
        } else {
            self.timing.join_timeout
        }
    }

    fn detect_failures(&mut self, now: Instant) {
        let silent: Vec<MemberId> = self
            .members
            .iter()
            .filter(|m| m.id != self.me.id)
            .filter(|m| {
                self.last_heard
                    .get(&m.id)
                    .is_none_or(|t| now.duration_since(*t) > self.timing.member_timeout)
            })
            .map(|m| m.id)
            .collect();
        if silent.is_empty() {
            return;
        }
        if self.is_master() {
            tracing::warn!(members = ?silent, "removing members silent past the timeout");
            self.remove(&silent, now);
            return;
        }
        let master_silent = self.master().is_some_and(|m| silent.contains(&m.id));
        if !master_silent {
            return;
        }
        // The master is gone: the oldest member still heard from takes over. One that leads
        // another cluster (its list was refused) will not: it goes out with the silent ones
        // (seed 2072: this member waited on it for ever).
        let refused: Vec<MemberId> = self
            .members
            .iter()
            .map(|m| m.id)
            .filter(|id| self.refused.contains(id) && !silent.contains(id))
            .collect();
        let successor = self
            .members
            .iter()
            .find(|m| !silent.contains(&m.id) && !refused.contains(&m.id));
        if successor.is_some_and(|m| m.id == self.me.id) {
            let mut silent = silent;
            silent.extend(refused);
            self.base = self.version;
            tracing::warn!(members = ?silent, "the master is silent; taking over as master");
            self.out.push(Action::BecameMaster);
            // The others may hold a newer table than this member's (one it missed): it asks
            // them first, and publishes its table only once it has the newest (seed 355 of the
            // simulation's data model: a stale table published above the latest made the
            // owner of a write a backup of a member that never had it).
            let waiting: BTreeSet<MemberId> = self
                .members
                .iter()
                .map(|m| m.id)
                .filter(|id| *id != self.me.id && !silent.contains(id))
                .collect();
            if !waiting.is_empty() {
                self.recovering = Some(Recovery {
                    since: now,
                    waiting,
                    gone: BTreeSet::new(),
                    from: self.master().map(|m| m.id),
                    top: self.version,
                    table_floor: 0,
                });
                self.query_tables();
            }
            self.remove(&silent, now);
        }
    }

    fn remove(&mut self, ids: &[MemberId], now: Instant) {
        let members: Vec<MemberEntry> = self
            .members
            .iter()
            .filter(|m| !ids.contains(&m.id))
            .cloned()
            .collect();
        for id in ids {
            self.last_heard.remove(id);
        }
        self.publish(members, now);
    }

    /// As master: a new member list and table, both sent to every member. Members that left
    /// are dropped from the table at once (each partition's first live replica owns it, empty
    /// backup slots are refilled); the migrations that involve them are rolled back. Then the
    /// master plans the balanced table for the new list and starts the migrations towards it:
    /// a member that joined gets its partitions with their data.
    fn publish(&mut self, members: Vec<MemberEntry>, now: Instant) {
        let version = self.version + 1;
        let gone: Vec<MemberId> = self
            .members
            .iter()
            .filter(|o| !members.iter().any(|m| m.id == o.id))
            .map(|o| o.id)
            .collect();
        let removed = !gone.is_empty();
        self.apply_list(version, members);
        let data = self.data_members();
        self.leaving.retain(|id| data.contains(id));
        if let Some(r) = &mut self.recovering {
            // Still gathering the members' tables: the table waits (see `recover`).
            let members = &self.members;
            r.gone.extend(gone);
            r.waiting.retain(|id| members.iter().any(|m| m.id == *id));
            let list = self.list_message();
            self.broadcast(&list);
            self.recover(now);
            return;
        }
        // A member that was removed and forms a cluster of its own (no one answered its
        // rejoin) still has the old table: the members it names are gone too (seed 223 with
        // pauses).
        if removed || self.table.version == 0 || !self.table.names_only(&data) {
            self.table = self.table.promote(&data);
        }
        for m in self.planner.members_left(&data, now) {
            self.rollback(&m);
        }
        // The list goes out before the migrations start: a destination runs only its own
        // master's, and one that joined must know its master by the time the first chunk
        // arrives.
        let list = self.list_message();
        self.broadcast(&list);
        self.replan(now);
        self.publish_table();
    }

    /// As master: the table again to one member, unless this master has not published one yet
    /// (it took over and gathers the members' tables: what it holds is its old master's).
    fn send_table(&mut self, to: SocketAddr) {
        if self.recovering.is_none() {
            self.out.push(Action::Send(to, self.table_message()));
        }
    }

    /// As a master that took over: asks the members it waits for for their tables.
    fn query_tables(&mut self) {
        let Some(Recovery { waiting, .. }) = &self.recovering else {
            return;
        };
        let query = Control::TableQuery {
            master_id: self.me.id.0,
            addr: self.me.addr.to_string(),
        };
        let to: Vec<SocketAddr> = self
            .members
            .iter()
            .filter(|m| waiting.contains(&m.id))
            .map(|m| m.addr)
            .collect();
        for addr in to {
            self.out.push(Action::Send(addr, query.clone()));
        }
    }

    /// A member's table, asked for after a takeover: a newer one its old master published is
    /// taken as this member's own (as if it had arrived from that master).
    fn on_table_report(
        &mut self,
        member: MemberId,
        (version, publisher, depth): (u64, MemberId, u8),
        replicas: &[u64],
        now: Instant,
    ) {
        let Some(Recovery { waiting, .. }) = &mut self.recovering else {
            return;
        };
        if !waiting.remove(&member) {
            return;
        }
        let lineage = self.table_from == Some(publisher);
        if lineage && version > self.table.version {
            let names =
                |t: &PartitionTable, id: MemberId| t.rows.iter().flatten().any(|m| *m == Some(id));
            let ours = &self.table;
            let members = &self.members;
            let table = table_from_wire(version, depth, replicas, self.table.rows.len())
                // One that names nowhere a member of this list that this member's table names
                // was published after the old master removed that member (it was cut off, and
                // the reporter heard that master across the split): taking it would drop what
                // the member wrote meanwhile, which this side keeps and the merge brings back
                // (seeds 612 and 178).
                .filter(|t| members.iter().all(|m| names(t, m.id) || !names(ours, m.id)));
            if let Some(table) = table {
                tracing::info!(%member, version, "a member held a newer table; taking it");
                self.table = table;
                self.out.push(Action::TableChanged(self.table.clone()));
            }
        }
        self.recover(now);
    }

    /// As a master that took over: once every member answered (or after three heartbeats),
    /// the newest table, promoted for the current list, is published and the rebalance
    /// planned; until then the questions are asked again every heartbeat.
    fn recover(&mut self, now: Instant) {
        let Some(Recovery { since, waiting, .. }) = &self.recovering else {
            return;
        };
        if !self.is_master() {
            self.recovering = None;
            return;
        }
        let waited = now.duration_since(*since);
        if !waiting.is_empty() && waited < self.timing.heartbeat * 3 {
            if waited >= self.timing.heartbeat && self.last_heartbeat.is_some_and(|t| t == now) {
                self.query_tables();
            }
            return;
        }
        if !waiting.is_empty() {
            tracing::warn!(members = ?waiting, "members did not report their tables; publishing without them");
        }
        let (gone, top, floor) = self
            .recovering
            .take()
            .map(|r| (r.gone, r.top, r.table_floor))
            .unwrap_or_default();
        if top > self.base {
            // A member had a newer list of the old master than this one: the list goes out
            // again, based on that one and numbered above it, so that member follows.
            self.base = top;
            let members = self.members.clone();
            self.apply_list(self.version.max(top) + 1, members);
            let list = self.list_message();
            self.broadcast(&list);
        }
        let data = self.data_members();
        let kept: Vec<MemberId> = data.iter().copied().filter(|m| !gone.contains(m)).collect();
        self.table.version = self.table.version.max(floor);
        // Promoted first without the members that left (some may be back, holding nothing),
        // then with every member, refilling the slots those leave empty.
        self.table = self.table.promote(&kept);
        if kept.len() < data.len() {
            self.table = self.table.promote(&data);
        }
        for m in self.planner.members_left(&data, now) {
            self.rollback(&m);
        }
        self.replan(now);
        self.publish_table();
    }

    fn apply_list(&mut self, version: u64, members: Vec<MemberEntry>) {
        for m in &members {
            self.remember(m.addr);
        }
        let added: Vec<MemberEntry> = members
            .iter()
            .filter(|m| m.id != self.me.id && !self.members.iter().any(|o| o.id == m.id))
            .cloned()
            .collect();
        let removed: Vec<MemberEntry> = self
            .members
            .iter()
            .filter(|o| o.id != self.me.id && !members.iter().any(|m| m.id == o.id))
            .cloned()
            .collect();
        for m in &removed {
            self.last_heard.remove(&m.id);
        }
        if let Some(me) = members.iter().find(|m| m.id == self.me.id) {
            self.me.order = me.order;
        }
        self.members = members;
        self.version = version;
        self.out.push(Action::ListChanged {
            members: self.members.clone(),
            version,
            added,
            removed,
        });
    }

    fn broadcast(&mut self, msg: &Control) {
        for m in &self.members {
            if m.id != self.me.id {
                self.out.push(Action::Send(m.addr, msg.clone()));
            }
        }
    }

    /// The member list as a control message.
    pub fn list_message(&self) -> Control {
        Control::MemberList {
            version: self.version,
            members: self.members.iter().map(MemberEntry::to_wire).collect(),
            base: self.base,
        }
    }

    /// The partition table as a control message.
    pub fn table_message(&self) -> Control {
        let master = self.master().map_or(MemberId(0), |m| m.id);
        table_message(&self.table, master, self.progress)
    }
}

/// A partition table and the rebalance's progress as a control message.
pub fn table_message(
    table: &PartitionTable,
    master: MemberId,
    progress: MigrationProgress,
) -> Control {
    Control::Table {
        version: table.version,
        master: master.0,
        depth: table.depth() as u8,
        replicas: rows_to_wire(table),
        migrations: [
            progress.planned,
            progress.in_flight,
            progress.done,
            progress.failed,
        ],
    }
}

/// A table's rows, flattened as `Table` and `TableReport` carry them (0 for an empty slot).
fn rows_to_wire(table: &PartitionTable) -> Vec<u64> {
    table
        .rows
        .iter()
        .flatten()
        .map(|o| o.map_or(0, |m| m.0))
        .collect()
}

/// The progress a `Table` message carries.
pub fn progress_from_wire(m: [u64; 4]) -> MigrationProgress {
    MigrationProgress {
        planned: m[0],
        in_flight: m[1],
        done: m[2],
        failed: m[3],
    }
}

/// A table row on the wire: member ids, 0 for an empty slot.
pub fn row_to_wire(row: &[Option<MemberId>]) -> Vec<u64> {
    row.iter().map(|m| m.map_or(0, |m| m.0)).collect()
}

/// A table row from the wire; `None` when it is not 1..=7 slots.
pub fn row_from_wire(row: &[u64]) -> Option<Vec<Option<MemberId>>> {
    (1..=corecast_engine::table::MAX_REPLICAS)
        .contains(&row.len())
        .then(|| {
            row.iter()
                .map(|id| (*id != 0).then_some(MemberId(*id)))
                .collect()
        })
}

/// The table a `Table` message carries, if it has `partitions` rows of 1..=7 slots.
pub fn table_from_wire(
    version: u64,
    depth: u8,
    replicas: &[u64],
    partitions: usize,
) -> Option<PartitionTable> {
    let depth = usize::from(depth);
    if !(1..=corecast_engine::table::MAX_REPLICAS).contains(&depth)
        || replicas.len() != partitions.checked_mul(depth)?
    {
        return None;
    }
    let rows = replicas
        .chunks(depth)
        .map(|row| {
            row.iter()
                .map(|id| (*id != 0).then_some(MemberId(*id)))
                .collect()
        })
        .collect();
    Some(PartitionTable { version, rows })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const TIMING: Timing = Timing {
        heartbeat: Duration::from_millis(100),
        member_timeout: Duration::from_millis(500),
        join_timeout: Duration::from_millis(300),
    };

    fn entry(n: u16) -> MemberEntry {
        MemberEntry {
            id: MemberId(u64::from(n) * 1000 + 7),
            addr: SocketAddr::from(([127, 0, 0, 1], 5700 + n * 10)),
            shards: 2,
            lite: false,
            order: 0,
            incarnation: 0,
        }
    }

    /// Members wired together in process: messages are delivered on each step unless the
    /// destination is down or the link is cut. What the runtime does with partition data is
    /// modelled beside each machine (a [`Store`]: its view, write ids per partition, its
    /// migrations), driven by the machine's actions; owners take writes each step and back them
    /// up, and the [`Ledger`] follows every acknowledged one.
    struct Net {
        nodes: Vec<(Membership, bool)>,
        now: Instant,
        events: Vec<(usize, Action)>,
        /// Migrations the sources answer as copied (the rest fail).
        copy_ok: bool,
        /// Migrations started, by (id, partition), and rollbacks received.
        started: Vec<(u64, u32)>,
        rollbacks: Vec<(u64, u32)>,
        /// Hold the sources' answers (a migration stays in flight).
        stall: bool,
        stalled: Vec<(SocketAddr, Control)>,
        /// Hold the tables sent to this node (its view stays behind) until released.
        hold_tables: Option<usize>,
        /// A lossy network (the simulation): drops and delays messages other than a
        /// migration's, with this generator.
        faults: Option<Faults>,
        /// A network split: the side of each node (by index); messages cross no sides.
        sides: Option<Vec<u8>>,
        /// The runtime's part of each node (by index) that holds data: its view, its
        /// partitions' write ids, its migrations.
        stores: Vec<Store>,
        /// The writes issued and what became of them.
        ledger: Ledger,
        /// The clock at the start: traces and write times count from here.
        started_at: Instant,
        /// The last anti-entropy round (every [`ANTI_ENTROPY`]).
        anti_entropy_at: Instant,
    }

    /// Message loss and delay for the seeded simulation. Delayed messages arrive in random
    /// order, so they are also reordered.
    struct Faults {
        rng: Rng,
        drop_percent: u64,
        delay_percent: u64,
        delayed: Vec<(Instant, SocketAddr, Control)>,
    }

    /// xorshift64*: a seeded, dependency-free generator (a seed replays the same run).
    struct Rng(u64);

    impl Rng {
        fn new(seed: u64) -> Self {
            Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
        }
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n.max(1)
        }
        fn percent(&mut self, p: u64) -> bool {
            self.below(100) < p
        }
    }

    impl Net {
        fn new() -> Self {
            let now = Instant::now();
            Self {
                nodes: Vec::new(),
                now,
                events: Vec::new(),
                copy_ok: true,
                started: Vec::new(),
                rollbacks: Vec::new(),
                stall: false,
                stalled: Vec::new(),
                hold_tables: None,
                faults: None,
                sides: None,
                stores: Vec::new(),
                ledger: Ledger::new(0, 0),
                started_at: now,
                anti_entropy_at: now,
            }
        }

        /// Splits the network: node `i` is on side `sides[i]` (nodes added later on side 0).
        fn split(&mut self, sides: &[u8]) {
            self.note(None, || format!("split {sides:?}"));
            self.sides = Some(sides.to_vec());
        }

        fn heal(&mut self) {
            self.note(None, || "healed".to_owned());
            self.sides = None;
        }

        fn crosses(&self, from: usize, to: usize) -> bool {
            self.sides.as_ref().is_some_and(|s| {
                s.get(from).copied().unwrap_or(0) != s.get(to).copied().unwrap_or(0)
            })
        }

        fn add(&mut self, n: u16, seeds: &[u16], lite: bool) -> usize {
            self.start(MemberEntry { lite, ..entry(n) }, seeds)
        }

        /// A machine for `me`, joining through `seeds` (by number, see `entry`), and its store.
        fn start(&mut self, me: MemberEntry, seeds: &[u16]) -> usize {
            let seeds = seeds.iter().map(|s| entry(*s).addr);
            let p = PartitionCount::new(PARTITIONS).unwrap();
            let machine = Membership::new(me, seeds, p, SLOTS, TIMING, self.now)
                .with_migration(0, MIGRATION_TIMEOUT)
                .with_split_brain_probe(Some(Duration::from_millis(400)));
            self.nodes.push((machine, true));
            self.stores.push(Store::new(p));
            self.nodes.len() - 1
        }

        /// The node at `addr`: the last started there (a restarted member replaces the one
        /// killed at its address).
        fn index_of(&self, addr: SocketAddr) -> Option<usize> {
            self.nodes.iter().rposition(|(m, _)| m.me().addr == addr)
        }

        /// Member `i` killed and started again at its address with a new id, as a restarted
        /// process is: it holds nothing and joins through `seeds`.
        fn restart(&mut self, i: usize, seeds: &[u16]) -> usize {
            self.kill(i);
            let old = self.nodes[i].0.me().clone();
            let me = MemberEntry {
                id: MemberId(old.id.0 + 1),
                order: 0,
                incarnation: 0,
                ..old
            };
            self.note(None, || format!("{} restarted as {}", old.id.0, me.id.0));
            self.start(me, seeds)
        }

        /// Advances the clock by `ms` in 10 ms steps, ticking and delivering, then resending
        /// the backups that wait and issuing the step's writes.
        fn run(&mut self, ms: u64) {
            for _ in 0..ms / 10 {
                self.now += Duration::from_millis(10);
                for i in 0..self.nodes.len() {
                    if self.nodes[i].1 {
                        self.nodes[i].0.tick(self.now);
                    }
                }
                self.deliver_delayed();
                self.deliver();
                self.expire_old_migrations();
                self.resend_backups();
                if self.now.duration_since(self.anti_entropy_at) >= ANTI_ENTROPY {
                    self.anti_entropy_at = self.now;
                    for i in 0..self.nodes.len() {
                        self.anti_entropy(i);
                    }
                }
                let writes = self.ledger.rng.below(self.ledger.per_step + 1);
                for _ in 0..writes {
                    self.write();
                }
            }
        }

        /// The delayed messages that are due, in random order.
        fn deliver_delayed(&mut self) {
            let now = self.now;
            let Some(f) = self.faults.as_mut() else {
                return;
            };
            let (mut due, later): (Vec<_>, Vec<_>) =
                f.delayed.drain(..).partition(|(at, _, _)| *at <= now);
            f.delayed = later;
            for i in (1..due.len()).rev() {
                let j = f.rng.below(i as u64 + 1) as usize;
                due.swap(i, j);
            }
            for (_, to, msg) in due {
                if let Some(j) = self.index_of(to).filter(|&j| self.nodes[j].1) {
                    self.nodes[j].0.receive(msg, now);
                }
            }
        }

        /// Whether the lossy network takes `msg` (dropped or delayed); never a migration's.
        fn fault(&mut self, to: SocketAddr, msg: &Control) -> bool {
            let now = self.now;
            let Some(f) = self.faults.as_mut() else {
                return false;
            };
            if matches!(
                msg,
                Control::MigrationStart { .. }
                    | Control::MigrationReady { .. }
                    | Control::MigrationRollback { .. }
            ) {
                return false;
            }
            if f.rng.percent(f.drop_percent) {
                return true;
            }
            if f.rng.percent(f.delay_percent) {
                let after = Duration::from_millis(10 + f.rng.below(300));
                f.delayed.push((now + after, to, msg.clone()));
                return true;
            }
            false
        }

        fn deliver(&mut self) {
            loop {
                let mut sends = Vec::new();
                for i in 0..self.nodes.len() {
                    for action in self.nodes[i].0.drain() {
                        match action {
                            Action::Send(to, msg) => sends.push((i, to, msg)),
                            other => {
                                self.apply(i, &other);
                                // Tables are kept in the stores (each member's latest): kept
                                // here too, thousands of them took a fifth of a run to free.
                                if !matches!(other, Action::TableChanged(_)) {
                                    self.events.push((i, other));
                                }
                            }
                        }
                    }
                }
                if sends.is_empty() {
                    return;
                }
                for (from, to, msg) in sends {
                    let Some(j) = self.index_of(to) else { continue };
                    if !self.nodes[j].1 || self.crosses(from, j) || self.fault(to, &msg) {
                        continue;
                    }
                    if self.hold_tables == Some(j) && matches!(msg, Control::Table { .. }) {
                        self.stalled.push((to, msg));
                        continue;
                    }
                    match msg {
                        // The runtime's part, simulated: the source copies at once, or
                        // refuses, or fails at a destination, as `copy_out` says.
                        Control::MigrationStart {
                            id,
                            master,
                            partition,
                            from,
                            to,
                        } => {
                            self.started.push((id, partition));
                            let (from, to) = (row_from_wire(&from), row_from_wire(&to));
                            let ok = self.copy_ok
                                && from.zip(to).is_some_and(|(from, to)| {
                                    let m = Move {
                                        id,
                                        master: MemberId(master),
                                        to,
                                        started: self.now,
                                    };
                                    self.copy_out(j, partition, &from, m)
                                });
                            let reply = Control::MigrationReady {
                                id,
                                partition,
                                ok,
                                reason: String::new(),
                            };
                            let master = self
                                .nodes
                                .iter()
                                .find(|(m, _)| m.me().id.0 == master)
                                .map(|(m, _)| m.me().addr);
                            if let Some(addr) = master {
                                if self.stall {
                                    self.stalled.push((addr, reply));
                                } else if let Some(k) = self.index_of(addr) {
                                    self.nodes[k].0.receive(reply, self.now);
                                }
                            }
                        }
                        Control::MigrationRollback {
                            id,
                            partition,
                            master,
                        } => {
                            self.rollbacks.push((id, partition));
                            self.roll_back(j, partition, id, MemberId(master));
                        }
                        msg => self.nodes[j].0.receive(msg, self.now),
                    }
                }
            }
        }

        /// A member dies: its data goes with it.
        fn kill(&mut self, i: usize) {
            self.note(None, || format!("{} killed", self.id(i).0));
            self.nodes[i].1 = false;
            let store = &mut self.stores[i];
            store.killed = true;
            store.outgoing.clear();
            store.incoming.clear();
            let held = std::mem::take(&mut store.held);
            for (p, writes) in held {
                self.copies_gone(i, p, &writes, Gone::Killed);
            }
        }

        /// A member stops (SIGSTOP): it keeps its data but runs nothing and hears nothing.
        fn pause(&mut self, i: usize) {
            self.note(None, || format!("{} paused", self.id(i).0));
            self.nodes[i].1 = false;
        }

        /// A paused member runs again (what was sent to it meanwhile is lost).
        fn resume(&mut self, i: usize) {
            assert!(!self.stores[i].killed, "a killed member does not come back");
            self.note(None, || format!("{} resumed", self.id(i).0));
            self.nodes[i].1 = true;
        }

        fn left(&self, i: usize) -> bool {
            self.events
                .iter()
                .any(|(j, e)| *j == i && matches!(e, Action::Left))
        }

        /// Delivers the sources' held answers and the held tables.
        fn release(&mut self) {
            self.stall = false;
            self.hold_tables = None;
            for (addr, msg) in std::mem::take(&mut self.stalled) {
                if let Some(k) = self.index_of(addr) {
                    if self.nodes[k].1 {
                        self.nodes[k].0.receive(msg, self.now);
                    }
                }
            }
            self.deliver();
        }

        fn live(&self) -> impl Iterator<Item = &Membership> {
            self.nodes.iter().filter(|(_, up)| *up).map(|(m, _)| m)
        }

        /// Every live member agrees on the list and the table, and the table is balanced.
        fn assert_converged(&self, expect_members: usize) {
            let live: Vec<usize> = (0..self.nodes.len()).filter(|&i| self.nodes[i].1).collect();
            self.assert_converged_among(&live, expect_members);
        }

        /// The members `among` (live) agree on the list and the table, and it is balanced.
        fn assert_converged_among(&self, among: &[usize], expect_members: usize) {
            let group = || among.iter().map(|&i| &self.nodes[i].0);
            let first = group().next().unwrap();
            let ids: Vec<MemberId> = first.members().iter().map(|m| m.id).collect();
            assert_eq!(ids.len(), expect_members, "members: {ids:?}");
            for m in group() {
                assert!(m.is_joined());
                let theirs: Vec<MemberId> = m.members().iter().map(|m| m.id).collect();
                assert_eq!(theirs, ids, "member lists differ");
                assert_eq!(m.table(), first.table(), "tables differ");
            }
            let data: Vec<MemberId> = first
                .members()
                .iter()
                .filter(|m| !m.lite)
                .map(|m| m.id)
                .collect();
            // After a death the promoted owners may be one or two apart; every slot is filled.
            assert!(first.table().is_complete(&data), "{:?}", first.table());
            let masters = group().filter(|m| m.is_master()).count();
            assert_eq!(masters, 1, "exactly one master");
        }

        /// The live members in groups that can find one another: linked (either way) by an
        /// address one of them knows (a seed, or a member of a list it had). Members that never
        /// shared an address (a newcomer whose only seed died) cannot form one cluster.
        fn reachable_groups(&self) -> Vec<Vec<usize>> {
            let live: Vec<usize> = (0..self.nodes.len()).filter(|&i| self.nodes[i].1).collect();
            let knows = |i: usize, j: usize| {
                let m = &self.nodes[i].0;
                let addr = self.nodes[j].0.me().addr;
                m.known.contains(&addr) || m.seeds.contains(&addr)
            };
            let mut group_of: Vec<usize> = (0..self.nodes.len()).collect();
            fn root(g: &mut [usize], mut i: usize) -> usize {
                while g[i] != i {
                    g[i] = g[g[i]];
                    i = g[i];
                }
                i
            }
            for &i in &live {
                for &j in &live {
                    if i != j && knows(i, j) {
                        let (ri, rj) = (root(&mut group_of, i), root(&mut group_of, j));
                        group_of[ri] = rj;
                    }
                }
            }
            let mut groups: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
            for &i in &live {
                let r = root(&mut group_of, i);
                groups.entry(r).or_default().push(i);
            }
            groups.into_values().collect()
        }
    }

    /// Partitions of the harness's tables.
    const PARTITIONS: u32 = 271;

    /// Replicas per row of the harness's tables: the owner and one sync backup.
    const SLOTS: usize = 2;

    /// The harness's migration timeout: copies are instant here, so only a migration whose
    /// end was lost waits this long (the runtime's watchdog abandons one after twice this).
    const MIGRATION_TIMEOUT: Duration = Duration::from_secs(1);

    /// How often owners tell their backups their partitions' versions (and at once after a
    /// table change): `backups.anti-entropy-interval-millis` by default.
    const ANTI_ENTROPY: Duration = Duration::from_secs(2);

    /// How long an owner waits for a sync backup's ack before it answers the write anyway
    /// (`backups.backup-ack-timeout-millis` by default).
    const ACK_TIMEOUT: Duration = Duration::from_secs(5);

    // Runtime rules the data model reproduces that lost acknowledged writes. Each `true`
    // models the rule as node.rs had it when the model was written; a write such a rule
    // touched (see `Taint`) and that is then lost is counted in `Tally::known_holes`, not
    // failed. `false` models the fix, and such a loss fails the run: all are fixed now, and
    // the flags stay to replay what each seed found (set one to `true` to see the hole).

    /// An owner answers a write at once when its sync backup refused it as not a backup under
    /// an older table than the one the write was routed with (`ShardNet::backup_answer`): the
    /// write is on the owner alone until the backup catches up (seed 16). Fixed: the owner
    /// sends it again until the backup's table is that new, up to the ack timeout
    /// (`ShardNet::await_backup`).
    const ACK_ON_OLDER_TABLE_REFUSAL: bool = false;

    /// An owner answers a write its sync backup refused as not a backup under a table of the
    /// same version as its own (`backup_answer`'s last arm): another cluster's table, across a
    /// split that healed and has not merged yet, so the write is on the owner alone (seed
    /// 1422). Fixed: it is not answered as done.
    const ACK_ON_SAME_VERSION_REFUSAL: bool = false;

    /// A backup applies a frame from any member while its own table names it a backup of the
    /// partition (`ShardNet::apply_backup`), and one it cannot fetch into step is refused as
    /// unavailable, which the owner takes as an ack: a deposed owner's writes are answered
    /// (seed 5). Fixed: a frame from a member its table does not name owner is refused as
    /// `WrongTarget` under its table.
    const BACKUPS_APPLY_ANY_SENDER: bool = false;

    /// A member runs a partition's writes whenever its table names it owner, a member that
    /// resumed from a pause past the timeout too, before it hears it was removed. Fixed: only
    /// within the machine's owner lease (`Membership::lease_until`).
    const OWNERS_SERVE_WITHOUT_A_LEASE: bool = false;

    /// Sources and destinations run the migrations of any master (`migration_message`,
    /// `take_chunk`): a member two masters admitted at once (a joiner whose seeds are on both
    /// sides of a split not merged yet) installs copies for the one it does not follow, which
    /// commits them and drops its other replicas, and streams for it (seed 4). Fixed: a
    /// migration whose master is not the first of the member's list is refused.
    const MIGRATIONS_OF_ANY_MASTER: bool = false;

    /// A table whose row leaves a member out drops the partition there though a migration is
    /// installing it: a table published before the migration's commit and arriving after the
    /// copy drops what the commit then names the replica (seed 173). Fixed: a partition with
    /// an installed migration is left to its commit or rollback.
    const TABLES_DROP_INSTALLING_PARTITIONS: bool = false;

    /// A destination whose migration is abandoned because its list names another master
    /// (`expire_migrations`) drops what it installed, though the old master may have
    /// committed it and the new one's table name it (seed 538). Fixed: the data stays until a
    /// table of the new master says whether the member holds the partition.
    const EXPIRED_MIGRATIONS_DROP_INSTALLED: bool = false;

    /// Holes of the membership machine (the non-test part of this file): a member took a newer
    /// list from any master, so one that took another cluster's list without a merge dropped
    /// its own cluster's data (a joiner that formed a cluster of its own when its list was
    /// late, seed 60), and one that took a list without itself from another cluster reset
    /// though its own still named it owner (seed 1659); a member taking over as master with a
    /// stale table published it above the latest, dropping the partitions that moved since
    /// (seed 599). Fixed: lists only from the own cluster's master, tables gathered on a
    /// takeover, incarnations.
    const MEMBERSHIP_DROPS_DATA_ON_SWITCHES: bool = false;

    /// What the runtime (node.rs) keeps on one member that the data model needs.
    struct Store {
        /// Killed (a paused member keeps its data).
        killed: bool,
        /// The member list (and its version) and the table it last applied
        /// (`ShardNet::apply`), and its list's master then.
        members: Vec<MemberId>,
        list_version: u64,
        table: PartitionTable,
        table_master: Option<MemberId>,
        /// It took another cluster's list and has not applied a table since: it serves by its
        /// old cluster's table.
        switched: bool,
        /// The write ids it holds, per partition.
        held: BTreeMap<u32, BTreeSet<u64>>,
        /// Migrations it streams as their source: the partition is held (it runs no write)
        /// until its table shows the migration's row or the migration is rolled back.
        outgoing: BTreeMap<u32, Move>,
        /// Migrations installed here and not committed, with whether this member held a
        /// replica of the partition when it started (if not, a rollback drops the data).
        incoming: BTreeMap<u32, (Move, bool)>,
        /// Partitions whose data waits for the next table to say whether this member holds
        /// them (the fixed rule of [`EXPIRED_MIGRATIONS_DROP_INSTALLED`]).
        orphans: BTreeSet<u32>,
        /// Partitions a backup's newer table deposed it from, until its table is that new.
        fenced: BTreeMap<u32, u64>,
    }

    impl Store {
        fn new(partitions: PartitionCount) -> Self {
            Self {
                killed: false,
                members: Vec::new(),
                list_version: 0,
                table: PartitionTable::empty(partitions, SLOTS),
                table_master: None,
                switched: false,
                held: BTreeMap::new(),
                outgoing: BTreeMap::new(),
                incoming: BTreeMap::new(),
                orphans: BTreeSet::new(),
                fenced: BTreeMap::new(),
            }
        }

        /// Whether its list names `master` first.
        fn follows(&self, master: MemberId) -> bool {
            self.members.first() == Some(&master)
        }
    }

    /// A migration as one of its participants knows it.
    struct Move {
        id: u64,
        master: MemberId,
        to: Vec<Option<MemberId>>,
        started: Instant,
    }

    /// The writes issued in a run and what became of them.
    struct Ledger {
        rng: Rng,
        /// Writes issued per 10 ms step: up to this many (0 in the tests that issue none).
        per_step: u64,
        next_id: u64,
        tally: Tally,
        /// Acknowledged writes some member still holds, by id.
        writes: BTreeMap<u64, Write>,
        /// Writes whose owner waits for a backup to catch up before it answers.
        pending: Vec<InFlight>,
        /// Data invariants broken, each a sentence naming the write.
        broken: Vec<String>,
        /// The partition whose data events are printed (`CORECAST_SIM_TRACE`).
        trace: Option<u32>,
    }

    impl Ledger {
        fn new(seed: u64, per_step: u64) -> Self {
            Self {
                rng: Rng::new(seed),
                per_step,
                next_id: 1,
                tally: Tally::default(),
                writes: BTreeMap::new(),
                pending: Vec::new(),
                broken: Vec::new(),
                trace: None,
            }
        }
    }

    /// The counts of a run (or of many).
    #[derive(Clone, Debug, Default)]
    struct Tally {
        issued: u64,
        acked: u64,
        /// Not answered as done: a backup's newer table deposed the owner.
        deposed: u64,
        /// Acknowledged, then every copy gone to as many faults (deaths, removals, missed
        /// backups) as a row has replicas.
        lost_to_faults: u64,
        /// Acknowledged, then its last copy handed to a split-brain merge.
        merged: u64,
        /// Acknowledged, touched by a known runtime hole (the first, by kind), then lost.
        known_holes: BTreeMap<Taint, u64>,
    }

    impl std::ops::AddAssign<&Tally> for Tally {
        fn add_assign(&mut self, o: &Tally) {
            self.issued += o.issued;
            self.acked += o.acked;
            self.deposed += o.deposed;
            self.lost_to_faults += o.lost_to_faults;
            self.merged += o.merged;
            for (taint, n) in &o.known_holes {
                *self.known_holes.entry(*taint).or_default() += n;
            }
        }
    }

    /// An acknowledged write.
    struct Write {
        partition: u32,
        owner: MemberId,
        at: Duration,
        /// Backups that missed it for a fault: an empty slot, a backup dead, paused, cut off
        /// or not in the owner's list, a frame lost.
        missed: usize,
        /// Runtime rules that touched it (see [`Taint`]).
        taints: BTreeSet<Taint>,
        /// Members that held it and failed since: killed, removed by their cluster, merged
        /// away.
        failed: BTreeSet<usize>,
        /// In data a merge took (it goes on by the merge policy, not checked further).
        handed: bool,
    }

    impl Write {
        fn describe(&self, id: u64) -> String {
            format!(
                "write {id} of partition {} (acknowledged by member {} at {} ms, {} backup(s) \
                 missed, touched by {:?})",
                self.partition,
                self.owner.0,
                self.at.as_millis(),
                self.missed,
                self.taints
            )
        }
    }

    /// A runtime rule that left a write weaker than one every live backup applied, or moved
    /// its copies where the fixed rule would not have.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
    enum Taint {
        /// Answered though the backup refused it under an older table that does not name it.
        OlderTable,
        /// Answered though the backup refused it under a table as new (another cluster's).
        SameVersion,
        /// Answered though the backup did not catch up within the ack timeout.
        AckTimeout,
        /// Applied, or answered as out of step, by a backup whose table names another owner.
        OtherOwnersBackup,
        /// Answered by an owner its master no longer names owner.
        DeposedOwner,
        /// Copied or replaced by a migration of a master the member does not follow.
        ForeignMigration,
        /// Dropped by a table while a migration was installing the partition.
        DroppedWhileInstalling,
        /// Dropped by an abandoned migration on a master change.
        ExpiredInstall,
        /// Held by a member that took another cluster's list without merging, or dropped by
        /// a table of a master other than the one whose table the member had.
        SwitchedMasters,
        /// Dropped by a reset its own master did not order (another cluster's list without
        /// it).
        SpuriousReset,
    }

    impl Taint {
        /// Whether a loss of a write this touched is a known hole, counted, not failed.
        fn known(self) -> bool {
            match self {
                Self::OlderTable => ACK_ON_OLDER_TABLE_REFUSAL,
                Self::OtherOwnersBackup => BACKUPS_APPLY_ANY_SENDER,
                Self::DeposedOwner => BACKUPS_APPLY_ANY_SENDER || OWNERS_SERVE_WITHOUT_A_LEASE,
                Self::ForeignMigration => MIGRATIONS_OF_ANY_MASTER,
                Self::DroppedWhileInstalling => TABLES_DROP_INSTALLING_PARTITIONS,
                Self::ExpiredInstall => EXPIRED_MIGRATIONS_DROP_INSTALLED,
                Self::SwitchedMasters | Self::SpuriousReset => MEMBERSHIP_DROPS_DATA_ON_SWITCHES,
                Self::SameVersion => ACK_ON_SAME_VERSION_REFUSAL,
                Self::AckTimeout => false,
            }
        }
    }

    /// A write whose owner has not answered yet.
    struct InFlight {
        id: u64,
        partition: u32,
        owner: usize,
        /// The owner's table version when it sent the backups.
        sent_with: u64,
        /// What the owner held of the partition after the write (what the backup's versions
        /// stand for).
        sent: BTreeSet<u64>,
        since: Instant,
        /// Backups whose table was behind: sent again every step.
        waiting: Vec<MemberId>,
        missed: usize,
        taints: BTreeSet<Taint>,
        /// A backup refused it under this newer table.
        deposed: Option<u64>,
    }

    /// What a backup made of a write.
    enum Applied {
        Yes,
        /// Its table names it a backup, but it could not get into step with the owner.
        OutOfStep,
        /// Not a backup of the partition by its table (or the sender not its owner), of this
        /// version.
        Refused(u64),
    }

    /// How copies of a partition left a member.
    #[derive(Clone, Copy, Debug)]
    enum Gone {
        Killed,
        /// A table that leaves the member out of the row (`ShardNet::apply`).
        Dropped {
            version: u64,
        },
        /// A migration's snapshot replaced the member's copy.
        Installed {
            migration: u64,
        },
        /// A migration rolled back on a destination that held no replica before it.
        RolledBack {
            migration: u64,
        },
        /// A backup out of step installed the owner's copy.
        Fetched,
        /// The member merged into another cluster, having lost a split brain.
        Merged,
        /// The member's cluster removed it (paused or cut off past the timeout).
        Reset,
        /// The owner's copy went while it waited for the backup.
        BeforeAck,
    }

    impl Gone {
        /// A failure of the member: the split brain behind a merge is one, and so is the
        /// removal behind a reset.
        fn is_fault(self) -> bool {
            matches!(self, Self::Killed | Self::Merged | Self::Reset)
        }
    }

    impl std::fmt::Display for Gone {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            match self {
                Self::Killed => write!(f, "killed"),
                Self::Dropped { version } => write!(f, "dropped by table v{version}"),
                Self::Installed { migration } => write!(f, "replaced by migration {migration}"),
                Self::RolledBack { migration } => {
                    write!(f, "dropped by the rollback of migration {migration}")
                }
                Self::Fetched => write!(f, "replaced by the owner's copy (a gap)"),
                Self::Merged => write!(f, "merged away"),
                Self::Reset => write!(f, "reset, removed from its cluster"),
                Self::BeforeAck => write!(f, "gone before the owner answered"),
            }
        }
    }

    /// The data model: what node.rs does with partitions' data, on write ids, checked as it
    /// goes. A write lost with fewer faults than a row has replicas breaks invariant (1).
    impl Net {
        /// Prints a data event of partition `p` (`None`: of every partition) when it is traced.
        fn note(&self, p: Option<u32>, what: impl FnOnce() -> String) {
            if let Some(traced) = self.ledger.trace {
                if p.is_none_or(|p| p == traced) {
                    let ms = self.now.duration_since(self.started_at).as_millis();
                    eprintln!("{ms:>6} ms {}", what());
                }
            }
        }

        fn id(&self, i: usize) -> MemberId {
            self.nodes[i].0.me().id
        }

        fn index_of_id(&self, id: MemberId) -> Option<usize> {
            self.nodes.iter().position(|(m, _)| m.me().id == id)
        }

        /// Whether member `i` runs operations on `p` (`ShardNet::is_local`): its table names
        /// it owner, no backup deposed it, it is not streaming `p` away (and it holds the
        /// owner lease).
        fn runs(&self, i: usize, p: u32) -> bool {
            let s = &self.stores[i];
            let leased = OWNERS_SERVE_WITHOUT_A_LEASE
                || self.nodes[i]
                    .0
                    .lease_until(self.now)
                    .is_some_and(|until| self.now <= until);
            s.table.owner(PartitionId(p)) == Some(self.id(i))
                && s.fenced.get(&p).is_none_or(|v| *v <= s.table.version)
                && !s.outgoing.contains_key(&p)
                && leased
        }

        /// Whether member `i`'s cluster no longer has it own `p`: its master (by its list)
        /// does not list it or names another owner.
        fn deposed(&self, i: usize, p: u32) -> bool {
            let me = self.id(i);
            let master = self.stores[i]
                .members
                .first()
                .and_then(|m| self.index_of_id(*m));
            master.is_none_or(|m| {
                let m = &self.nodes[m].0;
                !m.members().iter().any(|e| e.id == me)
                    || m.table().owner(PartitionId(p)) != Some(me)
            })
        }

        /// Marks the acknowledged ones of `writes` with `taint`.
        fn taint(&mut self, writes: &BTreeSet<u64>, taint: Taint) {
            for id in writes {
                if let Some(w) = self.ledger.writes.get_mut(id) {
                    w.taints.insert(taint);
                }
            }
        }

        /// Whether a member (not killed) holds write `id` of `p`.
        fn held_anywhere(&self, p: u32, id: u64) -> bool {
            self.stores
                .iter()
                .any(|s| s.held.get(&p).is_some_and(|w| w.contains(&id)))
        }

        /// A write to a random partition, run by a member that runs it (a random one, when
        /// two tables name different owners) and backed up to the backups of its own table.
        fn write(&mut self) {
            let p = self.ledger.rng.below(u64::from(PARTITIONS)) as u32;
            let owners: Vec<usize> = (0..self.nodes.len())
                .filter(|&i| self.nodes[i].1 && self.nodes[i].0.is_joined() && self.runs(i, p))
                .collect();
            if owners.is_empty() {
                return;
            }
            let owner = owners[self.ledger.rng.below(owners.len() as u64) as usize];
            let id = self.ledger.next_id;
            self.ledger.next_id += 1;
            self.ledger.tally.issued += 1;
            let store = &mut self.stores[owner];
            let held = store.held.entry(p).or_default();
            held.insert(id);
            let mut w = InFlight {
                id,
                partition: p,
                owner,
                sent_with: store.table.version,
                sent: held.clone(),
                since: self.now,
                waiting: Vec::new(),
                missed: 0,
                taints: BTreeSet::new(),
                deposed: None,
            };
            let backups = store.table.rows[p as usize][1..].to_vec();
            for backup in backups {
                match backup {
                    // One data member: no one to hold a copy.
                    None => w.missed += 1,
                    Some(b) => {
                        if !self.backup(&mut w, b, false) {
                            w.waiting.push(b);
                        }
                    }
                }
            }
            self.settle(w);
        }

        /// Sends write `w`'s backup to `member` (`ShardNet::replicate`; `again`:
        /// `ShardNet::await_backup`, to the same address) and takes its answer as
        /// `ShardNet::backup_answer` does; false when it is to be sent again.
        fn backup(&mut self, w: &mut InFlight, member: MemberId, again: bool) -> bool {
            let o = w.owner;
            let lost = self.faults.as_ref().map_or(0, |f| f.drop_percent);
            let reachable = (again || self.stores[o].members.contains(&member))
                .then(|| self.index_of_id(member))
                .flatten()
                .filter(|&b| self.nodes[b].1 && !self.crosses(o, b));
            // Not in the owner's list, dead, paused, cut off, or the frame lost with its
            // connection: the backup does not count as a live one.
            let Some(b) = reachable.filter(|_| !self.ledger.rng.percent(lost)) else {
                w.missed += 1;
                return true;
            };
            let applied = self.apply_backup(b, w);
            if let Applied::Refused(v) = applied {
                self.note(Some(w.partition), || {
                    format!("write {} refused by {} under table v{v}", w.id, member.0)
                });
            }
            match applied {
                Applied::Yes => {}
                // Fixed, the runtime takes the backup's "out of step" (`Unavailable`) as behind
                // and sends the frame again until it is fetched into step or the ack timeout
                // passes (`BackupAnswer::Behind`, seed 1646).
                Applied::OutOfStep if !BACKUPS_APPLY_ANY_SENDER => return false,
                Applied::OutOfStep => {
                    w.taints.insert(Taint::OtherOwnersBackup);
                }
                Applied::Refused(v) if v < w.sent_with && !ACK_ON_OLDER_TABLE_REFUSAL => {
                    return false;
                }
                Applied::Refused(v) if v > self.stores[o].table.version => w.deposed = Some(v),
                // Of the frame's version or one between it and the owner's (`backup_answer`'s
                // last `WrongTarget` arm): not done.
                Applied::Refused(v) if v >= w.sent_with && !ACK_ON_SAME_VERSION_REFUSAL => {
                    w.deposed = Some(v);
                }
                Applied::Refused(v) => {
                    let why = if v < w.sent_with {
                        Taint::OlderTable
                    } else {
                        Taint::SameVersion
                    };
                    w.taints.insert(why);
                }
            }
            true
        }

        /// Member `b` takes write `w` as a backup (`ShardNet::apply_backup`): refused unless
        /// its own table names it a backup of the partition (and, fixed, the sender owner).
        /// In step with the owner (it holds what the owner held before the write: the
        /// runtime's versions follow) it adds the write; otherwise (a gap) it installs the
        /// partition from the owner its table names and has the write only if that copy does.
        fn apply_backup(&mut self, b: usize, w: &mut InFlight) -> Applied {
            let (p, id, sent) = (w.partition, w.id, &w.sent);
            let partition = PartitionId(p);
            let table = &self.stores[b].table;
            let named = table
                .replica_index(partition, self.id(b))
                .is_some_and(|r| r.is_backup());
            let from_owner = table.owner(partition) == Some(self.id(w.owner));
            if !named || !(from_owner || BACKUPS_APPLY_ANY_SENDER) {
                return Applied::Refused(table.version);
            }
            if !from_owner {
                w.taints.insert(Taint::OtherOwnersBackup);
            }
            let have = self.stores[b].held.get(&p);
            let in_step = have.is_none_or(|have| have.iter().all(|w| sent.contains(w)))
                && sent
                    .iter()
                    .all(|w| *w == id || have.is_some_and(|have| have.contains(w)));
            if in_step {
                self.stores[b].held.entry(p).or_default().insert(id);
                return Applied::Yes;
            }
            let source = table
                .owner(partition)
                .and_then(|x| self.index_of_id(x))
                .filter(|&x| self.nodes[x].1 && !self.crosses(b, x) && self.runs(x, p));
            let Some(x) = source else {
                return Applied::OutOfStep;
            };
            let copy = self.stores[x].held.get(&p).cloned().unwrap_or_default();
            let has = copy.contains(&id);
            self.replace(b, p, copy, Gone::Fetched);
            if has {
                Applied::Yes
            } else {
                Applied::OutOfStep
            }
        }

        /// A write whose backups all answered is answered as done, unless a backup deposed its
        /// owner (which fences the partition); one a backup is behind on waits.
        fn settle(&mut self, mut w: InFlight) {
            if !w.waiting.is_empty() {
                self.ledger.pending.push(w);
                return;
            }
            let owner = self.id(w.owner);
            if let Some(version) = w.deposed {
                self.note(Some(w.partition), || {
                    format!("write {} at {}: deposed by table v{version}", w.id, owner.0)
                });
                self.stores[w.owner].fenced.insert(w.partition, version);
                self.ledger.tally.deposed += 1;
                return;
            }
            self.note(Some(w.partition), || {
                format!(
                    "write {} at {} (table v{}) acknowledged, {} missed, {:?}",
                    w.id, owner.0, w.sent_with, w.missed, w.taints
                )
            });
            self.ledger.tally.acked += 1;
            if self.deposed(w.owner, w.partition) {
                w.taints.insert(Taint::DeposedOwner);
            }
            if self.stores[w.owner].switched {
                w.taints.insert(Taint::SwitchedMasters);
            }
            let write = Write {
                partition: w.partition,
                owner,
                at: self.now.duration_since(self.started_at),
                missed: w.missed,
                taints: w.taints,
                failed: BTreeSet::new(),
                handed: false,
            };
            self.ledger.writes.insert(w.id, write);
            if !self.held_anywhere(w.partition, w.id) {
                self.judge(w.id, w.owner, Gone::BeforeAck);
            }
        }

        /// Owners send the backups whose table was behind again (`ShardNet::await_backup`),
        /// until the ack timeout; a dead owner answers nothing.
        fn resend_backups(&mut self) {
            for mut w in std::mem::take(&mut self.ledger.pending) {
                if self.stores[w.owner].killed {
                    continue;
                }
                if self.nodes[w.owner].1 {
                    if self.now.duration_since(w.since) >= ACK_TIMEOUT {
                        w.taints.insert(Taint::AckTimeout);
                        w.waiting.clear();
                    }
                    for b in std::mem::take(&mut w.waiting) {
                        if !self.backup(&mut w, b, true) {
                            w.waiting.push(b);
                        }
                    }
                }
                self.settle(w);
            }
        }

        /// Member `i`'s copies of `writes` (of `p`) went (`how`): each acknowledged one left
        /// with no copy anywhere is judged.
        fn copies_gone(&mut self, i: usize, p: u32, writes: &BTreeSet<u64>, how: Gone) {
            if !writes.is_empty() {
                self.note(Some(p), || {
                    format!("{} loses {writes:?} ({how})", self.id(i).0)
                });
            }
            for &id in writes {
                let Some(w) = self.ledger.writes.get_mut(&id) else {
                    continue;
                };
                if how.is_fault() {
                    w.failed.insert(i);
                }
                if !self.held_anywhere(p, id) {
                    self.judge(id, i, how);
                }
            }
        }

        /// Acknowledged write `id` has no copy left: its last, on member `i`, went (`how`).
        /// Handed to a merge, or lost to as many faults as a row has replicas, it may; one a
        /// known hole touched is counted; any other breaks invariant (1).
        fn judge(&mut self, id: u64, i: usize, how: Gone) {
            let Some(w) = self.ledger.writes.remove(&id) else {
                return;
            };
            let faults = w.missed + w.failed.len();
            let tally = &mut self.ledger.tally;
            if w.handed {
                tally.merged += 1;
            } else if faults >= SLOTS {
                tally.lost_to_faults += 1;
            } else if let Some(hole) = w.taints.iter().copied().find(|t| t.known()) {
                *tally.known_holes.entry(hole).or_default() += 1;
            } else {
                let broken = format!(
                    "(1) the last copy of {} went on member {} ({how}) after {faults} fault(s)",
                    w.describe(id),
                    self.id(i).0
                );
                self.ledger.broken.push(broken);
            }
        }

        /// Member `i` holds `copy` of `p` now, in place of what it held (`how`).
        fn replace(&mut self, i: usize, p: u32, copy: BTreeSet<u64>, how: Gone) {
            let old = self.stores[i].held.insert(p, copy).unwrap_or_default();
            let gone: BTreeSet<u64> = old.difference(&self.stores[i].held[&p]).copied().collect();
            self.copies_gone(i, p, &gone, how);
        }

        fn drop_replica(&mut self, i: usize, p: u32, how: Gone) {
            self.stores[i].orphans.remove(&p);
            if let Some(writes) = self.stores[i].held.remove(&p) {
                self.copies_gone(i, p, &writes, how);
            }
        }

        /// What the runtime does with member `i`'s action, as far as data goes.
        fn apply(&mut self, i: usize, action: &Action) {
            self.note(None, || match action {
                Action::ListChanged {
                    members, version, ..
                } => {
                    let ids: Vec<u64> = members.iter().map(|m| m.id.0).collect();
                    format!("{} takes list v{version} {ids:?}", self.id(i).0)
                }
                Action::TableChanged(t) => format!("{} takes table v{}", self.id(i).0, t.version),
                other => format!("{} {other:?}", self.id(i).0),
            });
            match action {
                Action::TableChanged(table) => self.table_changed(i, table),
                Action::ListChanged {
                    members, version, ..
                } => self.list_changed(i, members, *version),
                Action::Merge { .. } => self.merge(i),
                Action::Reset => self.reset(i),
                _ => {}
            }
        }

        /// `ShardNet::apply` of a newer table: the migrations it shows are committed, and the
        /// partitions whose row no longer names the member are dropped.
        fn table_changed(&mut self, i: usize, table: &PartitionTable) {
            let me = self.id(i);
            let store = &self.stores[i];
            if table.version <= store.table.version {
                return;
            }
            let left: Vec<u32> = (0..PARTITIONS)
                .filter(|&p| {
                    let (was, now) = (&store.table.rows[p as usize], &table.rows[p as usize]);
                    let was_in = was.contains(&Some(me)) || store.orphans.contains(&p);
                    was_in && !now.contains(&Some(me))
                })
                .collect();
            if let Some(p) = self.ledger.trace {
                let (was, now) = (&store.table.rows[p as usize], &table.rows[p as usize]);
                if was != now {
                    self.note(Some(p), || {
                        format!(
                            "{} applies table v{}: {was:?} -> {now:?}",
                            me.0, table.version
                        )
                    });
                }
            }
            let store = &mut self.stores[i];
            // In place (the derived `clone_from` would not be): a table is 271 rows, and they
            // come by the thousand.
            store.table.version = table.version;
            store.table.rows.clone_from(&table.rows);
            let master = store.members.first().copied();
            let switched = store.table_master.is_some() && store.table_master != master;
            store.table_master = master;
            store.switched = false;
            store.orphans.clear();
            let row = |p: &u32| table.rows.get(*p as usize);
            store.outgoing.retain(|p, m| row(p) != Some(&m.to));
            store.incoming.retain(|p, (m, _)| row(p) != Some(&m.to));
            for p in left {
                let installing = self.stores[i].incoming.contains_key(&p);
                if installing && !TABLES_DROP_INSTALLING_PARTITIONS {
                    continue;
                }
                let writes = self.stores[i].held.get(&p).cloned().unwrap_or_default();
                if installing {
                    self.taint(&writes, Taint::DroppedWhileInstalling);
                }
                if switched {
                    self.taint(&writes, Taint::SwitchedMasters);
                }
                let how = Gone::Dropped {
                    version: table.version,
                };
                self.drop_replica(i, p, how);
            }
            self.anti_entropy(i);
        }

        /// `ShardNet::send_versions` and a backup's answer: member `i`, where it runs a
        /// partition, tells the backups its table names what it holds; a backup whose own table
        /// names it a backup there, that holds something else and installs no migration of it,
        /// fetches the partition from the owner its table names (if that one runs it). The
        /// versions frame is lost as any other message may be.
        fn anti_entropy(&mut self, i: usize) {
            if !self.nodes[i].1 || !self.nodes[i].0.is_joined() {
                return;
            }
            for p in 0..PARTITIONS {
                if !self.runs(i, p) {
                    continue;
                }
                let partition = PartitionId(p);
                let backups: Vec<MemberId> = self.stores[i]
                    .table
                    .backups(partition)
                    .map(|(_, id)| id)
                    .collect();
                for id in backups {
                    let Some(b) = self.index_of_id(id) else {
                        continue;
                    };
                    if !self.nodes[b].1 || self.crosses(i, b) || self.lost_on_the_way() {
                        continue;
                    }
                    let store = &self.stores[b];
                    let named = store
                        .table
                        .replica_index(partition, id)
                        .is_some_and(|r| r.is_backup());
                    let differs = store.held.get(&p) != self.stores[i].held.get(&p);
                    if !named || !differs || store.incoming.contains_key(&p) {
                        continue;
                    }
                    let source = store
                        .table
                        .owner(partition)
                        .and_then(|x| self.index_of_id(x))
                        .filter(|&x| self.nodes[x].1 && !self.crosses(b, x) && self.runs(x, p));
                    if let Some(x) = source {
                        let copy = self.stores[x].held.get(&p).cloned().unwrap_or_default();
                        self.replace(b, p, copy, Gone::Fetched);
                    }
                }
            }
        }

        /// Whether a message is lost, by the simulation's drop rate.
        fn lost_on_the_way(&mut self) -> bool {
            self.faults
                .as_mut()
                .is_some_and(|f| f.drop_percent > 0 && f.rng.percent(f.drop_percent))
        }

        /// `ShardNet::apply` of a list: migrations of a master that is gone are rolled back.
        /// An empty list says this member's cluster removed it (it was paused or cut off past
        /// the timeout): what it holds there was given up for dead, a failure of it. A first
        /// member it did not list before says it took another cluster's list.
        fn list_changed(&mut self, i: usize, members: &[MemberEntry], version: u64) {
            let store = &mut self.stores[i];
            if version < store.list_version {
                return;
            }
            let removed = members.is_empty() && !store.members.is_empty();
            let switched = members
                .first()
                .is_some_and(|m| !store.members.is_empty() && !store.members.contains(&m.id));
            store.members = members.iter().map(|m| m.id).collect();
            store.list_version = version;
            let held: BTreeSet<u64> = if removed || switched {
                store.held.values().flatten().copied().collect()
            } else {
                BTreeSet::new()
            };
            if removed {
                self.note(None, || {
                    format!("{} removed from its cluster", self.id(i).0)
                });
                for id in &held {
                    if let Some(w) = self.ledger.writes.get_mut(id) {
                        w.failed.insert(i);
                    }
                }
            }
            if switched {
                self.note(None, || format!("{} switches clusters", self.id(i).0));
                self.stores[i].switched = true;
                self.taint(&held, Taint::SwitchedMasters);
            }
            let Some(master) = members.first().map(|m| m.id) else {
                return;
            };
            let store = &mut self.stores[i];
            store.outgoing.retain(|_, m| m.master == master);
            let off: Vec<u32> = store
                .incoming
                .iter()
                .filter(|(_, (m, _))| m.master != master)
                .map(|(p, _)| *p)
                .collect();
            for p in off {
                self.abandon(i, p, Some(Taint::ExpiredInstall));
            }
        }

        /// Member `i`'s migration bringing in `p` is abandoned (`expire_migrations`): if it
        /// held no replica before, its copy is dropped, tainted with `taint` (on a master
        /// change), or, fixed, kept for the next table to judge.
        fn abandon(&mut self, i: usize, p: u32, taint: Option<Taint>) {
            let Some((m, had)) = self.stores[i].incoming.remove(&p) else {
                return;
            };
            self.note(Some(p), || {
                format!("migration {} abandoned at {}", m.id, self.id(i).0)
            });
            if had {
                return;
            }
            if taint.is_some() && !EXPIRED_MIGRATIONS_DROP_INSTALLED {
                self.stores[i].orphans.insert(p);
                return;
            }
            if let Some(taint) = taint {
                let writes = self.stores[i].held.get(&p).cloned().unwrap_or_default();
                self.taint(&writes, taint);
            }
            self.drop_replica(i, p, Gone::RolledBack { migration: m.id });
        }

        /// The runtime's watchdog (`expire_migrations`): migrations older than twice the
        /// migration timeout are rolled back, at either end.
        fn expire_old_migrations(&mut self) {
            let limit = MIGRATION_TIMEOUT * 2;
            let now = self.now;
            for i in 0..self.nodes.len() {
                if !self.nodes[i].1 {
                    continue;
                }
                let store = &mut self.stores[i];
                store
                    .outgoing
                    .retain(|_, m| now.duration_since(m.started) <= limit);
                let old: Vec<u32> = store
                    .incoming
                    .iter()
                    .filter(|(_, (m, _))| now.duration_since(m.started) > limit)
                    .map(|(p, _)| *p)
                    .collect();
                for p in old {
                    // As `roll_back_keeping` with `keep_installed`: what it installed waits for
                    // the next table (the commit's may have been lost on the way, seed 289).
                    self.abandon(i, p, Some(Taint::ExpiredInstall));
                }
            }
        }

        /// `ShardNet::start_merge`: the data of the partitions member `i`'s table names it
        /// owner of goes to the merge; all its data, its view and its migrations are dropped.
        fn merge(&mut self, i: usize) {
            let me = self.id(i);
            self.note(None, || format!("{} merges", me.0));
            let store = &self.stores[i];
            for (p, writes) in &store.held {
                if store.table.owner(PartitionId(*p)) == Some(me) {
                    for id in writes {
                        if let Some(w) = self.ledger.writes.get_mut(id) {
                            w.handed = true;
                        }
                    }
                }
            }
            self.forget(i, Gone::Merged);
        }

        /// `ShardNet::start_reset`: its cluster removed member `i`, which drops all its data,
        /// its view and its migrations, and joins again as a new member would.
        fn reset(&mut self, i: usize) {
            self.note(None, || format!("{} resets", self.id(i).0));
            let me = self.id(i);
            let master = self.stores[i]
                .members
                .first()
                .and_then(|m| self.index_of_id(*m));
            let still_listed = master.is_some_and(|m| {
                m != i && self.nodes[m].1 && self.nodes[m].0.members().iter().any(|e| e.id == me)
            });
            if still_listed {
                let held: BTreeSet<u64> = self.stores[i].held.values().flatten().copied().collect();
                self.taint(&held, Taint::SpuriousReset);
            }
            self.forget(i, Gone::Reset);
        }

        /// Member `i` drops everything (`ShardNet::merge_and_forget`). The writes it was
        /// waiting on a backup for are not answered here: their data went with the rest.
        fn forget(&mut self, i: usize, how: Gone) {
            let held = std::mem::take(&mut self.stores[i].held);
            self.stores[i] = Store::new(PartitionCount::new(PARTITIONS).unwrap());
            self.ledger.pending.retain(|w| w.owner != i);
            for (p, writes) in held {
                self.copies_gone(i, p, &writes, how);
            }
        }

        /// Source `j` of migration `m` of `p` from row `from` streams its copy to the
        /// destinations (`ShardNet::copy_out`): refused unless its table names it owner (and,
        /// fixed, it follows the master); failed, the partition released, at a destination
        /// not in its list, unreachable (or, fixed, following another master).
        fn copy_out(&mut self, j: usize, p: u32, from: &[Option<MemberId>], m: Move) -> bool {
            let me = self.id(j);
            let follows = self.stores[j].follows(m.master);
            if self.stores[j].table.owner(PartitionId(p)) != Some(me)
                || !(follows || MIGRATIONS_OF_ANY_MASTER)
            {
                self.note(Some(p), || {
                    format!("migration {} refused by its source {}", m.id, me.0)
                });
                return false;
            }
            self.note(Some(p), || {
                format!("migration {} from {} to {:?}", m.id, me.0, m.to)
            });
            let plan = Migration {
                id: m.id,
                partition: PartitionId(p),
                source: me,
                from: from.to_vec(),
                to: m.to.clone(),
                started: self.now,
            };
            let (id, master) = (m.id, m.master);
            self.stores[j].outgoing.insert(p, m);
            let copy = self.stores[j].held.get(&p).cloned().unwrap_or_default();
            if !follows {
                self.taint(&copy, Taint::ForeignMigration);
            }
            for (dest, _) in plan.destinations() {
                let k = self.stores[j]
                    .members
                    .contains(&dest)
                    .then(|| self.index_of_id(dest))
                    .flatten()
                    .filter(|&k| self.nodes[k].1 && !self.crosses(j, k))
                    // By the time the first chunk arrives (a hop after the list it was sent
                    // after) the destination has applied the list its machine took.
                    .filter(|&k| {
                        MIGRATIONS_OF_ANY_MASTER
                            || self.nodes[k].0.master().is_some_and(|e| e.id == master)
                    });
                let Some(k) = k else {
                    self.note(Some(p), || format!("migration {id}: {} refused it", dest.0));
                    self.stores[j].outgoing.remove(&p);
                    return false;
                };
                let m = Move {
                    id,
                    master,
                    to: plan.to.clone(),
                    started: self.now,
                };
                self.install(k, p, m, copy.clone());
            }
            true
        }

        /// Destination `k` installs `copy` of `p` (`ShardNet::take_chunk`), an older
        /// migration of it rolled back first.
        fn install(&mut self, k: usize, p: u32, m: Move, copy: BTreeSet<u64>) {
            if !self.stores[k].follows(m.master) {
                let mut touched = copy.clone();
                touched.extend(self.stores[k].held.get(&p).into_iter().flatten());
                self.taint(&touched, Taint::ForeignMigration);
            }
            if let Some((old, had)) = self.stores[k].incoming.remove(&p) {
                if !had {
                    let how = Gone::RolledBack { migration: old.id };
                    self.drop_replica(k, p, how);
                }
            }
            let had = self.stores[k]
                .table
                .replica_index(PartitionId(p), self.id(k))
                .is_some();
            let migration = m.id;
            self.stores[k].incoming.insert(p, (m, had));
            self.replace(k, p, copy, Gone::Installed { migration });
        }

        /// Member `j` hears `master` roll migration `id` of `p` back (`ShardNet::roll_back`,
        /// which matches the id alone: each master numbers its own, so two masters' ids meet,
        /// seed 456; fixed, the master too).
        fn roll_back(&mut self, j: usize, p: u32, id: u64, master: MemberId) {
            self.note(Some(p), || {
                format!(
                    "migration {id} of {} rolled back at {}",
                    master.0,
                    self.id(j).0
                )
            });
            let matches = |m: &Move| m.id == id && (m.master == master || MIGRATIONS_OF_ANY_MASTER);
            let store = &mut self.stores[j];
            if store.outgoing.get(&p).is_some_and(matches) {
                store.outgoing.remove(&p);
            }
            let Some((m, had)) = store.incoming.remove(&p) else {
                return;
            };
            if !matches(&m) {
                store.incoming.insert(p, (m, had));
                return;
            }
            if !had {
                if m.master != master {
                    let writes = store.held.get(&p).cloned().unwrap_or_default();
                    self.taint(&writes, Taint::ForeignMigration);
                }
                self.drop_replica(j, p, Gone::RolledBack { migration: id });
            }
        }

        /// The data invariants once `groups` converged: each member applied its machine's
        /// table; (2) every acknowledged write not lost or merged is on the owner its group's
        /// table names; (3) no member holds data of a partition its table does not name it in.
        fn check_data(&mut self, groups: &[Vec<usize>]) -> Result<(), String> {
            for &i in groups.iter().flatten() {
                let (view, table) = (&self.stores[i].table, self.nodes[i].0.table());
                if view != table {
                    return Err(format!(
                        "member {} applied table v{} (the runtime's view), its machine holds v{}",
                        self.id(i).0,
                        view.version,
                        table.version
                    ));
                }
            }
            let mut known = Vec::new();
            for (id, w) in &self.ledger.writes {
                let p = PartitionId(w.partition);
                let owners: Vec<MemberId> = groups
                    .iter()
                    .filter_map(|g| self.nodes[g[0]].0.table().owner(p))
                    .collect();
                let holds = |i: usize| {
                    self.stores[i]
                        .held
                        .get(&w.partition)
                        .is_some_and(|h| h.contains(id))
                };
                let on_owner = owners.iter().any(|o| {
                    self.index_of_id(*o)
                        .is_some_and(|o| self.nodes[o].1 && holds(o))
                });
                if on_owner {
                    continue;
                }
                if let Some(hole) = w.taints.iter().copied().find(|t| t.known()) {
                    known.push(hole);
                    continue;
                }
                {
                    let holders: Vec<u64> = (0..self.nodes.len())
                        .filter(|&i| holds(i))
                        .map(|i| self.id(i).0)
                        .collect();
                    return Err(format!(
                        "(2) {} is not on the owner {owners:?}; held by {holders:?}",
                        w.describe(*id)
                    ));
                }
            }
            for hole in known {
                *self.ledger.tally.known_holes.entry(hole).or_default() += 1;
            }
            for &i in groups.iter().flatten() {
                let table = self.nodes[i].0.table();
                for (p, writes) in &self.stores[i].held {
                    let named = table.replica_index(PartitionId(*p), self.id(i)).is_some();
                    if !writes.is_empty() && !named {
                        return Err(format!(
                            "(3) member {} holds {} write(s) of partition {p}, which its table \
                             v{} does not name it in",
                            self.id(i).0,
                            writes.len(),
                            table.version
                        ));
                    }
                }
            }
            Ok(())
        }
    }

    #[test]
    fn three_members_form_one_cluster_with_the_first_as_master() {
        let mut net = Net::new();
        let a = net.add(1, &[], false);
        net.run(50);
        let b = net.add(2, &[1], false);
        let c = net.add(3, &[1, 2], false);
        net.run(500);
        net.assert_converged(3);
        assert!(net.nodes[a].0.is_master());
        assert!(!net.nodes[b].0.is_master() && !net.nodes[c].0.is_master());
        let table = net.nodes[b].0.table();
        let mut counts: Vec<usize> = [a, b, c]
            .iter()
            .map(|i| table.owned_by(net.nodes[*i].0.me().id))
            .collect();
        counts.sort_unstable();
        assert_eq!(counts, vec![90, 90, 91]);
    }

    #[test]
    fn a_join_through_a_non_master_seed_is_redirected() {
        let mut net = Net::new();
        net.add(1, &[], false);
        net.run(50);
        net.add(2, &[1], false);
        net.run(200);
        // Member 3 only knows member 2, which is not the master.
        net.add(3, &[2], false);
        net.run(300);
        net.assert_converged(3);
    }

    #[test]
    fn a_killed_member_is_removed_within_the_timeout_and_its_partitions_reassigned() {
        let mut net = Net::new();
        net.add(1, &[], false);
        net.run(50);
        net.add(2, &[1], false);
        let c = net.add(3, &[1], false);
        net.run(400);
        net.assert_converged(3);
        let dead = net.nodes[c].0.me().id;
        net.kill(c);
        // Timeout 500 ms, plus one heartbeat of slack.
        net.run(700);
        net.assert_converged(2);
        let table = net.live().next().unwrap().table();
        assert_eq!(table.owned_by(dead), 0);
        assert!(table.unowned() == 0, "no ownerless partition");
    }

    #[test]
    fn a_member_paused_past_the_timeout_rejoins_instead_of_forming_a_cluster_of_its_own() {
        for paused in [0, 2] {
            let mut net = Net::new();
            net.add(1, &[], false);
            net.run(50);
            net.add(2, &[1], false);
            net.add(3, &[1], false);
            net.run(400);
            net.assert_converged(3);
            // SIGSTOP past the 500 ms timeout: the others remove it (and, for the master, one
            // takes over); on SIGCONT its own clock says everyone else was silent.
            net.pause(paused);
            net.run(800);
            net.assert_converged(2);
            net.resume(paused);
            net.run(1500);
            net.assert_converged(3);
            let masters = net.live().filter(|m| m.is_master()).count();
            assert_eq!(masters, 1, "paused member {paused}: one master");
        }
    }

    /// Members 1..=`n` joined through member 1, converged after `settle_ms`.
    fn formed(n: u16, settle_ms: u64) -> Net {
        let mut net = Net::new();
        net.add(1, &[], false);
        net.run(50);
        for i in 2..=n {
            net.add(i, &[1], false);
        }
        net.run(settle_ms);
        net.assert_converged(usize::from(n));
        net
    }

    #[test]
    fn after_a_split_heals_the_smaller_cluster_merges_into_the_larger() {
        let mut net = formed(5, 800);
        // Members 1 and 2 (the master among them) on one side, 3, 4 and 5 on the other: each
        // side removes the other and goes on as a cluster of its own.
        net.split(&[0, 0, 1, 1, 1]);
        net.run(1500);
        let sizes: Vec<usize> = net.live().map(|m| m.members().len()).collect();
        assert_eq!(sizes, vec![2, 2, 3, 3, 3], "two clusters");
        assert_eq!(net.live().filter(|m| m.is_master()).count(), 2);
        let small_master = net.nodes[0].0.me().addr;
        let large_master = net.nodes[2].0.me().addr;
        assert!(net.nodes[2].0.is_master(), "member 3 took over its side");
        net.heal();
        net.run(3000);
        net.assert_converged(5);
        assert!(
            net.nodes[2].0.is_master(),
            "the larger side's master stays master"
        );
        // Exactly the smaller side's members merged, into the larger side's master.
        let merges: Vec<(usize, SocketAddr)> = net
            .events
            .iter()
            .filter_map(|(i, e)| match e {
                Action::Merge { target } => Some((*i, *target)),
                _ => None,
            })
            .collect();
        assert_eq!(merges, vec![(0, large_master), (1, large_master)]);
        assert_ne!(small_master, large_master);
    }

    #[test]
    fn clusters_of_equal_size_merge_into_the_one_with_the_lower_master_address() {
        let mut net = formed(4, 800);
        net.split(&[0, 0, 1, 1]);
        net.run(1500);
        net.heal();
        net.run(3000);
        net.assert_converged(4);
        assert!(
            net.nodes[0].0.is_master(),
            "member 1 (the lower address) is master"
        );
        let merged: Vec<usize> = net
            .events
            .iter()
            .filter(|(_, e)| matches!(e, Action::Merge { .. }))
            .map(|(i, _)| *i)
            .collect();
        assert_eq!(merged, vec![2, 3]);
    }

    #[test]
    fn the_next_oldest_takes_over_when_the_master_dies() {
        let mut net = Net::new();
        let a = net.add(1, &[], false);
        net.run(50);
        let b = net.add(2, &[1], false);
        net.run(200);
        net.add(3, &[1], false);
        net.run(300);
        net.assert_converged(3);
        net.kill(a);
        net.run(800);
        net.assert_converged(2);
        assert!(net.nodes[b].0.is_master(), "the next oldest is master");
    }

    #[test]
    fn members_started_together_agree_on_one_master() {
        let mut net = Net::new();
        net.add(1, &[2, 3], false);
        net.add(2, &[1, 3], false);
        net.add(3, &[1, 2], false);
        net.run(1500);
        net.assert_converged(3);
    }

    #[test]
    fn a_lite_member_joins_but_owns_nothing() {
        let mut net = Net::new();
        net.add(1, &[], false);
        net.run(50);
        let lite = net.add(2, &[1], true);
        net.run(300);
        net.assert_converged(2);
        let id = net.nodes[lite].0.me().id;
        assert_eq!(net.nodes[lite].0.table().owned_by(id), 0);
    }

    #[test]
    fn a_member_that_leaves_is_removed_at_once() {
        let mut net = Net::new();
        net.add(1, &[], false);
        net.run(50);
        let b = net.add(2, &[1], false);
        net.run(300);
        net.assert_converged(2);
        let now = net.now;
        net.nodes[b].0.leave(now);
        net.run(100);
        assert!(net.left(b), "the leaving member was told it is out");
        net.kill(b);
        net.run(20);
        net.assert_converged(1);
    }

    #[test]
    fn events_say_who_joined_and_who_left() {
        let mut net = Net::new();
        let a = net.add(1, &[], false);
        net.run(50);
        let b = net.add(2, &[1], false);
        net.run(300);
        let b_id = net.nodes[b].0.me().id;
        let added = net.events.iter().any(|(i, e)| {
            *i == a && matches!(e, Action::ListChanged { added, .. } if added.iter().any(|m| m.id == b_id))
        });
        assert!(added, "the master saw member 2 join");
        net.kill(b);
        net.run(700);
        let removed = net.events.iter().any(|(i, e)| {
            *i == a && matches!(e, Action::ListChanged { removed, .. } if removed.iter().any(|m| m.id == b_id))
        });
        assert!(removed, "the master saw member 2 leave");
    }

    fn data_ids(net: &Net) -> Vec<MemberId> {
        net.live()
            .next()
            .unwrap()
            .members()
            .iter()
            .filter(|m| !m.lite)
            .map(|m| m.id)
            .collect()
    }

    #[test]
    fn joins_move_partitions_by_migration_until_balanced() {
        let net = formed(4, 600);
        let table = net.live().next().unwrap().table().clone();
        assert!(table.is_balanced(&data_ids(&net)), "{table:?}");
        // Every row change was a migration (the first member had them all).
        assert!(
            net.started.len() >= 271 * 3 / 4,
            "{} migrations",
            net.started.len()
        );
        assert!(net.rollbacks.is_empty());
        let progress = net.live().next().unwrap().progress();
        assert_eq!((progress.planned, progress.in_flight), (0, 0));
        assert_eq!(progress.done as usize, net.started.len());
        // One migration per partition at a time: ids are unique and increasing per partition.
        let mut last: BTreeMap<u32, u64> = BTreeMap::new();
        for (id, p) in &net.started {
            assert!(last.insert(*p, *id).is_none_or(|prev| prev < *id));
        }
    }

    #[test]
    fn a_table_row_changes_only_when_its_migration_is_copied() {
        let mut net = Net::new();
        let a = net.add(1, &[], false);
        net.run(50);
        let before = net.nodes[a].0.table().clone();
        net.stall = true;
        net.add(2, &[1], false);
        net.run(300);
        // The join is in, the copies are not: the rows stay where the data is.
        assert_eq!(net.nodes[a].0.members().len(), 2);
        assert_eq!(net.nodes[a].0.table().rows, before.rows);
        let progress = net.nodes[a].0.progress();
        assert!(
            progress.in_flight > 0 && progress.in_flight <= 4,
            "{progress:?}"
        );
        net.release();
        net.run(500);
        net.assert_converged(2);
        assert!(net.nodes[a].0.table().is_balanced(&data_ids(&net)));
    }

    #[test]
    fn a_destination_that_dies_rolls_its_migrations_back_and_the_master_replans() {
        let mut net = Net::new();
        net.add(1, &[], false);
        net.run(50);
        net.add(2, &[1], false);
        net.run(300);
        net.stall = true;
        let c = net.add(3, &[1], false);
        net.run(200);
        assert!(!net.stalled.is_empty());
        net.kill(c);
        net.run(700);
        // The stalled copies were for the dead member: rolled back.
        assert!(!net.rollbacks.is_empty());
        net.release();
        net.run(1000);
        net.assert_converged(2);
        let table = net.live().next().unwrap().table().clone();
        assert!(table.is_balanced(&data_ids(&net)));
        assert_eq!(table.owned_by(net.nodes[c].0.me().id), 0);
    }

    #[test]
    fn failed_copies_are_retried() {
        let mut net = Net::new();
        net.add(1, &[], false);
        net.run(50);
        net.copy_ok = false;
        net.add(2, &[1], false);
        net.run(300);
        assert!(!net.rollbacks.is_empty(), "failed copies are rolled back");
        assert!(net.live().next().unwrap().progress().failed > 0);
        net.copy_ok = true;
        net.run(3000);
        net.assert_converged(2);
        assert!(net
            .live()
            .next()
            .unwrap()
            .table()
            .is_balanced(&data_ids(&net)));
    }

    #[test]
    fn a_leaving_master_hands_partitions_and_mastership_over() {
        let mut net = Net::new();
        let a = net.add(1, &[], false);
        net.run(50);
        let b = net.add(2, &[1], false);
        net.add(3, &[1], false);
        net.run(600);
        net.assert_converged(3);
        let me = net.nodes[a].0.me().id;
        let now = net.now;
        net.nodes[a].0.leave(now);
        net.run(300);
        assert!(net.left(a));
        net.kill(a);
        net.run(100);
        net.assert_converged(2);
        assert!(net.nodes[b].0.is_master());
        let table = net.nodes[b].0.table();
        assert_eq!(table.owned_by(me) + table.backups_of(me), 0);
        assert!(table.is_balanced(&data_ids(&net)));
    }

    /// Runs `ms` with writes issued (2 a step on average), then without.
    fn write_for(net: &mut Net, ms: u64) {
        net.ledger.per_step = 4;
        net.run(ms);
        net.ledger.per_step = 0;
    }

    #[test]
    fn acknowledged_writes_survive_the_death_of_their_owner() {
        let mut net = Net::new();
        let a = net.add(1, &[], false);
        net.run(50);
        net.add(2, &[1], false);
        net.add(3, &[1], false);
        net.run(600);
        net.assert_converged(3);
        write_for(&mut net, 500);
        let acked = net.ledger.tally.acked;
        assert!(acked > 50, "{:?}", net.ledger.tally);
        net.kill(a);
        net.run(1500);
        net.assert_converged(2);
        let groups = net.reachable_groups();
        net.check_data(&groups).unwrap();
        assert_eq!(net.ledger.broken, Vec::<String>::new());
        // Every backup was live: one death loses nothing.
        assert_eq!(net.ledger.tally.lost_to_faults, 0);
        assert_eq!(net.ledger.writes.len() as u64, acked);
    }

    #[test]
    fn a_joining_member_takes_its_partitions_with_their_writes_and_the_others_drop_them() {
        let mut net = Net::new();
        let a = net.add(1, &[], false);
        net.run(50);
        write_for(&mut net, 200);
        let acked = net.ledger.tally.acked;
        assert!(acked > 0);
        net.add(2, &[1], false);
        net.add(3, &[1], false);
        net.run(600);
        net.assert_converged(3);
        let groups = net.reachable_groups();
        net.check_data(&groups).unwrap();
        assert_eq!(net.ledger.writes.len() as u64, acked);
        // Member 1 keeps only the partitions it is a replica of: about two thirds.
        let table = net.nodes[a].0.table().clone();
        let id = net.nodes[a].0.me().id;
        let kept = net.stores[a].held.len();
        assert!(kept <= table.owned_by(id) + table.backups_of(id), "{kept}");
    }

    #[test]
    fn a_write_answered_over_a_backup_behind_the_table_is_lost_with_its_owner() {
        let mut net = Net::new();
        let a = net.add(1, &[], false);
        net.run(50);
        net.add(2, &[1], false);
        net.run(300);
        net.assert_converged(2);
        // Member 3 installs its partitions and is named their backup (or owner), but hears of
        // no table: it refuses every backup as not a backup under its older table.
        let c = net.add(3, &[1], false);
        net.hold_tables = Some(c);
        net.run(300);
        write_for(&mut net, 100);
        net.kill(a);
        net.release();
        net.run(1500);
        net.assert_converged(2);
        let groups = net.reachable_groups();
        net.check_data(&groups).unwrap();
        assert_eq!(net.ledger.broken, Vec::<String>::new());
        // Answered at once, the writes member 1 owned with member 3 as backup were on member 1
        // alone; answered once member 3 applied them, none is lost.
        let lost = net
            .ledger
            .tally
            .known_holes
            .get(&Taint::OlderTable)
            .copied();
        assert_eq!(
            lost.is_some(),
            ACK_ON_OLDER_TABLE_REFUSAL,
            "{:?}",
            net.ledger.tally
        );
    }

    /// Safety after every step of the simulation: a table never names a member twice in a
    /// row, and live members that hold the same table version hold the same table.
    fn check_step(net: &Net) -> Result<(), String> {
        if let Some(broken) = net.ledger.broken.first() {
            return Err(broken.clone());
        }
        // Per cluster (by master): two sides of a split number their tables independently.
        let mut by_version: BTreeMap<(Option<MemberId>, u64), &PartitionTable> = BTreeMap::new();
        for m in net.live().filter(|m| m.is_joined()) {
            let table = m.table();
            for (p, row) in table.rows.iter().enumerate() {
                // Slot by slot: a row is two slots, and sets for 271 rows a step cost more
                // than the rest of the step.
                let twice = row
                    .iter()
                    .enumerate()
                    .any(|(i, m)| m.is_some() && row[i + 1..].contains(m));
                if twice {
                    return Err(format!("partition {p} names a member twice: {row:?}"));
                }
            }
            // Keyed by the table's publisher: a member that just switched masters holds the
            // old one's table until the new one's arrives.
            let cluster = m.table_publisher();
            if let Some(other) = by_version.insert((cluster, table.version), table) {
                if other != table {
                    let holders: Vec<String> = net
                        .live()
                        .filter(|o| o.is_joined() && o.table().version == table.version)
                        .map(|o| {
                            format!(
                                "{} (master {:?}, list v{})",
                                o.me().id,
                                o.master().map(|x| x.id),
                                o.version()
                            )
                        })
                        .collect();
                    return Err(format!(
                        "two tables of version {} in one cluster: {holders:?}",
                        table.version
                    ));
                }
            }
        }
        Ok(())
    }

    /// One seeded run: members join (through random live seeds), are killed, paused and split
    /// into two sides at random while the network drops, delays and reorders messages and
    /// owners take writes; every step is checked; then the network heals and the survivors
    /// must converge on one cluster with one balanced, complete table (split clusters merging
    /// back), every acknowledged write not lost to faults or merged on its owner and no data
    /// on a member that is not a replica.
    fn simulate(seed: u64) -> Result<Tally, String> {
        let mut net = Net::new();
        net.faults = Some(Faults {
            rng: Rng::new(seed),
            drop_percent: 0,
            delay_percent: 0,
            delayed: Vec::new(),
        });
        // Up to 4 writes a step, 2 on average: a few a partition over a run.
        net.ledger = Ledger::new(seed ^ 0x6A09_E667_F3BC_C908, 4);
        net.ledger.trace = std::env::var("CORECAST_SIM_TRACE")
            .ok()
            .and_then(|p| p.parse().ok());
        let mut rng = Rng::new(seed ^ 0xD1B5_4A32_D192_ED03);
        net.add(1, &[], false);
        net.run(100);
        let mut next = 2u16;
        for _ in 0..12 {
            let live: Vec<usize> = (0..net.nodes.len()).filter(|&i| net.nodes[i].1).collect();
            // Seeds for a newcomer: some of `of` (at least one), by number (see `entry`).
            fn seeds_among(net: &Net, rng: &mut Rng, of: &[usize]) -> Vec<u16> {
                let number = |i: usize| (net.nodes[i].0.me().addr.port() - 5700) / 10;
                let seeds: Vec<u16> = of
                    .iter()
                    .filter(|_| rng.percent(60))
                    .map(|&i| number(i))
                    .collect();
                if seeds.is_empty() {
                    vec![number(of[0])]
                } else {
                    seeds
                }
            }
            match rng.below(7) {
                0 | 1 if live.len() < 6 => {
                    let seeds = seeds_among(&net, &mut rng, &live);
                    // Joins happen on the lossy network too: a newcomer that hears from no
                    // master within the join timeout (its seeds dead, or its requests lost)
                    // forms a cluster of its own, which must merge back later.
                    net.add(next, &seeds, false);
                    next += 1;
                }
                2 if live.len() > 1 => {
                    let victim = live[rng.below(live.len() as u64) as usize];
                    net.kill(victim);
                }
                5 if live.len() > 1 => {
                    // A restart (kill -9, then the process started again at its address with
                    // its seeds): a new member at an address the cluster may still list.
                    let at = rng.below(live.len() as u64) as usize;
                    let victim = live[at];
                    let others: Vec<usize> =
                        live.iter().copied().filter(|&i| i != victim).collect();
                    let seeds = seeds_among(&net, &mut rng, &others);
                    net.restart(victim, &seeds);
                }
                3 if live.len() > 1 && rng.percent(50) => {
                    // A pause (SIGSTOP … SIGCONT), often past the timeout: what is sent to it
                    // meanwhile is lost; on resuming it must rejoin, not split off.
                    let victim = live[rng.below(live.len() as u64) as usize];
                    net.pause(victim);
                    for _ in 0..10 + rng.below(120) {
                        net.run(10);
                        check_step(&net)?;
                    }
                    net.resume(victim);
                }
                4 if live.len() > 1 && rng.percent(50) => {
                    // A network split into two random sides for a while, past the timeout or
                    // not: each side may go on as a cluster; after the heal they must merge.
                    let sides: Vec<u8> = (0..net.nodes.len())
                        .map(|_| u8::from(rng.percent(50)))
                        .collect();
                    net.split(&sides);
                    for _ in 0..20 + rng.below(200) {
                        net.run(10);
                        check_step(&net)?;
                    }
                    net.heal();
                }
                _ => {
                    if let Some(f) = net.faults.as_mut() {
                        f.drop_percent = rng.below(15);
                        f.delay_percent = rng.below(30);
                    }
                }
            }
            for _ in 0..1 + rng.below(30) {
                net.run(10);
                check_step(&net)?;
            }
        }
        if let Some(f) = net.faults.as_mut() {
            f.drop_percent = 0;
            f.delay_percent = 0;
        }
        net.run(5_000);
        check_step(&net)?;
        let debug = std::env::var_os("CORECAST_SIM_DEBUG").is_some();
        if debug {
            for m in net.live() {
                let ids: Vec<u64> = m.members().iter().map(|e| e.id.0).collect();
                eprintln!(
                    "{} joined={} master={} members={ids:?} list v{} table v{} state={:?} seeds={:?} \
                     peers={:?} known={:?}",
                    m.me().id.0,
                    m.is_joined(),
                    m.is_master(),
                    m.version(),
                    m.table().version,
                    m.state,
                    m.seeds,
                    m.joining_peers,
                    m.known
                );
            }
            for (i, e) in &net.events {
                eprintln!("event {i}: {e:?}");
            }
        }
        let groups = net.reachable_groups();
        let converged = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            for group in &groups {
                net.assert_converged_among(group, group.len());
            }
        }))
        .map_err(|e| {
            e.downcast_ref::<String>()
                .cloned()
                .or_else(|| e.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_default()
        });
        let checked = converged.and_then(|()| net.check_data(&groups));
        if debug {
            eprintln!("seed {seed}: {:?}", net.ledger.tally);
        }
        checked.map(|()| net.ledger.tally)
    }

    /// Seeds that still fail, each a hole of the membership machine not fixed yet: the run
    /// reports them and fails on any other (and says when one passes). None at the moment.
    const OPEN_SEEDS: &[u64] = &[];

    /// `CORECAST_SIM_SEEDS` runs (default 40, about 10 s unoptimised on two cores;
    /// `scripts/test.sh` runs 2,000 more optimised) from `CORECAST_SIM_SEED` (default 0), one
    /// worker per core; a failure names its seed, and `CORECAST_SIM_SEED=<seed>
    /// CORECAST_SIM_SEEDS=1` replays it.
    #[test]
    fn seeded_simulations_of_joins_kills_pauses_and_lossy_links_converge_and_keep_acknowledged_writes(
    ) {
        let env = |k: &str, d: u64| {
            std::env::var(k)
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(d)
        };
        let (first, count) = (env("CORECAST_SIM_SEED", 0), env("CORECAST_SIM_SEEDS", 40));
        // Seeds are independent: one worker per core, each taking every `workers`-th seed.
        let workers = std::thread::available_parallelism()
            .map_or(1, |n| n.get() as u64)
            .clamp(1, count.max(1));
        let run = |worker: u64| {
            let mut tally = Tally::default();
            let mut failed = Vec::new();
            for seed in (first + worker..first + count).step_by(workers as usize) {
                match simulate(seed) {
                    Ok(t) => {
                        if OPEN_SEEDS.contains(&seed) {
                            eprintln!(
                                "simulation seed {seed} passes now: take it out of OPEN_SEEDS"
                            );
                        }
                        tally += &t;
                    }
                    Err(e) if OPEN_SEEDS.contains(&seed) => {
                        eprintln!("simulation seed {seed} fails (open, see OPEN_SEEDS): {e}");
                    }
                    Err(e) => {
                        eprintln!("simulation seed {seed} failed: {e}");
                        failed.push(seed);
                    }
                }
            }
            (tally, failed)
        };
        let mut total = Tally::default();
        let mut failed = Vec::new();
        std::thread::scope(|s| {
            let handles: Vec<_> = (0..workers).map(|w| s.spawn(move || run(w))).collect();
            for h in handles {
                let (tally, seeds) = h.join().expect("a simulation worker panicked");
                total += &tally;
                failed.extend(seeds);
            }
        });
        failed.sort_unstable();
        assert!(
            failed.is_empty(),
            "{} of {count} simulation seeds failed: {failed:?}\nreplay one: \
             CORECAST_SIM_SEED=<seed> CORECAST_SIM_SEEDS=1 cargo test -p corecast-net seeded_simulations",
            failed.len()
        );
        if std::env::var_os("CORECAST_SIM_DEBUG").is_some() {
            eprintln!("seeds {first}..{}: {total:?}", first + count);
        }
    }
}
