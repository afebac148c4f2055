//! What a shard keeps per partition so that its replicas stay in step: a version per namespace
//! (per service, plus the object registry), and the answers of recent writes by caller id.
//!
//! Owns: [`CallId`], [`Call`], [`Replication`] (the backup an owner sends after a write), [`BackupApplied`]
//! (what a backup replica made of one), [`PartitionSnapshot`] (a whole partition replica, sent
//! to a backup that fell out of step) and the per-partition [`ReplicaState`].
//!
//! Versions: an owner keeps, per namespace, one version per backup replica slot, and raises the
//! versions of the slots a write's backup goes to (a map with one backup raises slot 1's only,
//! one with two raises slots 1 and 2). The backup in slot `i` applies backup `v` only on top of
//! `v - 1`; a gap means a frame was lost and the backup fetches the partition instead. A member that becomes owner raises its versions by
//! [`EPOCH`], so a backup that applied writes the new owner never saw cannot mistake the new
//! owner's writes for its own: every version of the new epoch is a gap for it until it syncs.
//!
//! Dedup: a write that reached its owner from another member or a client carries a [`CallId`].
//! Owner and backups remember the last `dedup-window` answers per partition; a retried call
//! (its owner died before answering, or the connection broke) is answered from there, never run
//! twice. A call sent for the first time cannot have run, so only one sent again ([`Call`]'s
//! `again`, a request frame's retry flag) is looked for.

use rkyv::{Archive, Deserialize, Serialize};

use crate::partition::PartitionId;
use crate::payload::Bytes;
use crate::spi::{OpId, ServiceId};
use crate::table::MAX_REPLICAS;

/// Added to every version of a partition when a member becomes its owner.
pub const EPOCH: u64 = 1 << 32;

/// A call's identity across retries: the caller (member or client id) and its call number.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct CallId {
    /// The member or client that invoked.
    pub caller: u64,
    /// The caller's number for this call, the same on every retry.
    pub call: u64,
}

/// A call to run as owner: its id, under which its answer is remembered, and whether it may have
/// run already (it was sent before: a lost connection, a refusal, a batch that did not answer),
/// in which case a remembered answer is given instead of running it again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Call {
    /// The call's identity across retries.
    pub id: CallId,
    /// Sent before: look for its remembered answer first.
    pub again: bool,
}

/// A backup an owner sends to its backup replicas after a write.
#[derive(Debug, Clone)]
pub struct Replication {
    /// The partition written.
    pub partition: PartitionId,
    /// The namespace (service) of the backup operation.
    pub service: ServiceId,
    /// The backup operation.
    pub op: OpId,
    /// Its archived payload.
    pub payload: Bytes,
    /// Sync backups the caller waits for.
    pub sync: u8,
    /// Async backups, fire and forget.
    pub async_: u8,
    /// The namespace's version per replica slot after this write (index 0 unused).
    pub versions: [u64; MAX_REPLICAS],
    /// The write's caller id, when it came from another member or a client.
    pub call: Option<CallId>,
    /// The owner's answer, remembered by backups for retries of the call.
    pub response: Bytes,
}

/// What a backup replica made of a backup operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackupApplied {
    /// It followed the replica's version and ran.
    Applied,
    /// The replica already has it (a resend).
    Duplicate,
    /// Writes before it are missing: the replica must fetch the partition from the owner.
    Gap {
        /// The replica's version of the namespace.
        have: u64,
    },
}

/// One namespace of a partition replica, archived.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct NamespaceSnapshot {
    /// The service id (0 for the object registry).
    pub service: u16,
    /// The owner's version of it for the replica slot the snapshot is for.
    pub version: u64,
    /// The owner's versions of it for every replica slot (a new owner takes them all).
    pub slots: Vec<u64>,
    /// The service's archived replica data (`None`: nothing to hold).
    pub data: Option<Vec<u8>>,
}

/// A whole partition replica: every namespace asked for, and the remembered answers.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct PartitionSnapshot {
    /// The partition.
    pub partition: u32,
    /// Its namespaces.
    pub namespaces: Vec<NamespaceSnapshot>,
    /// Remembered answers: `(caller, call, response)`, oldest first.
    pub dedup: Vec<(u64, u64, Vec<u8>)>,
}

/// What a backup asks its owner for: these namespaces of this partition (all when empty), for
/// replica slot `replica`.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct SyncRequest {
    /// The partition.
    pub partition: u32,
    /// The requester's replica slot.
    pub replica: u8,
    /// Service ids; empty for every namespace.
    pub namespaces: Vec<u16>,
}

/// One partition's versions, as an owner tells its backups for the anti-entropy check.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct PartitionVersions {
    /// The partition.
    pub partition: u32,
    /// `(service id, version)` per namespace.
    pub versions: Vec<(u16, u64)>,
}

/// The replica bookkeeping of one partition on its shard.
#[derive(Debug, Default)]
pub(crate) struct ReplicaState {
    /// Per namespace (service slot index; the last is the object registry), per replica slot.
    pub versions: Vec<[u64; MAX_REPLICAS]>,
    pub dedup: Dedup,
}

impl ReplicaState {
    pub fn new(namespaces: usize, window: usize) -> Self {
        Self {
            versions: vec![[0; MAX_REPLICAS]; namespaces],
            dedup: Dedup::new(window),
        }
    }

    /// Forgets everything (the member holds no replica of the partition any more).
    pub fn clear(&mut self) {
        self.versions
            .iter_mut()
            .for_each(|v| *v = [0; MAX_REPLICAS]);
        self.dedup.clear();
    }

    /// Starts a new epoch: every version moves past every version of the old one.
    pub fn next_epoch(&mut self) {
        for v in &mut self.versions {
            let top = v.iter().copied().max().unwrap_or(0);
            *v = [(top / EPOCH + 1) * EPOCH; MAX_REPLICAS];
        }
    }
}

/// The answers of a partition's recent writes, by call id; the oldest go first.
///
/// Laid out for a write's path, which remembers its answer and looks for an earlier one only when
/// the call was sent before ([`Call::again`]): a ring of the last `window` calls with their
/// answers (short ones inline). A write touches the ring's next slot and allocates nothing for a
/// short answer; a retried call scans the ring, newest first (about 48 KiB at the default
/// window, a few microseconds, for a call that already took a lost connection or a refusal).
#[derive(Default)]
pub(crate) struct Dedup {
    window: usize,
    /// In arrival order; once `window` long, `next` is the oldest (the next to be replaced).
    ring: Vec<Remembered>,
    next: usize,
}

impl std::fmt::Debug for Dedup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dedup")
            .field("window", &self.window)
            .field("remembered", &self.ring.len())
            .finish()
    }
}

struct Remembered {
    call: CallId,
    answer: Answer,
}

/// Answers up to this long are kept inline.
const INLINE: usize = 30;

enum Answer {
    Inline { len: u8, bytes: [u8; INLINE] },
    Heap(Box<[u8]>),
}

impl Answer {
    fn of(bytes: &[u8]) -> Self {
        if bytes.len() > INLINE {
            return Answer::Heap(bytes.into());
        }
        let mut inline = [0u8; INLINE];
        inline[..bytes.len()].copy_from_slice(bytes);
        Answer::Inline {
            len: bytes.len() as u8,
            bytes: inline,
        }
    }

    fn as_slice(&self) -> &[u8] {
        match self {
            Answer::Inline { len, bytes } => &bytes[..usize::from(*len)],
            Answer::Heap(bytes) => bytes,
        }
    }
}

impl Dedup {
    pub fn new(window: usize) -> Self {
        Self {
            window,
            ..Self::default()
        }
    }

    /// The ring as its newer calls (before `next`) and its older ones (from `next`, once the
    /// ring is full), each in arrival order.
    fn halves(&self) -> (&[Remembered], &[Remembered]) {
        self.ring.split_at(self.next.min(self.ring.len()))
    }

    /// The newest answer remembered for `call`.
    pub fn get(&self, call: &CallId) -> Option<&[u8]> {
        let (newer, older) = self.halves();
        newer
            .iter()
            .rev()
            .chain(older.iter().rev())
            .find(|r| r.call == *call)
            .map(|r| r.answer.as_slice())
    }

    /// Remembers a copy of `answer` for `call`; past the window the oldest answer goes. The same
    /// call again (re-run once its first answer left the window) is remembered anew: lookups
    /// find the newest.
    pub fn remember(&mut self, call: CallId, answer: &[u8]) {
        if self.window == 0 {
            return;
        }
        let remembered = Remembered {
            call,
            answer: Answer::of(answer),
        };
        if self.ring.len() < self.window {
            self.ring.push(remembered);
            self.next = self.ring.len() % self.window;
        } else {
            self.ring[self.next] = remembered;
            self.next = (self.next + 1) % self.window;
        }
    }

    pub fn clear(&mut self) {
        self.ring.clear();
        self.next = 0;
    }

    /// Every remembered answer, oldest first.
    pub fn entries(&self) -> Vec<(u64, u64, Vec<u8>)> {
        let (newer, older) = self.halves();
        older
            .iter()
            .chain(newer)
            .map(|r| (r.call.caller, r.call.call, r.answer.as_slice().to_vec()))
            .collect()
    }
}

/// Whether backup `version` follows `have`, repeats it, or leaves a gap.
pub(crate) fn classify(have: u64, version: u64) -> BackupApplied {
    if version == have.wrapping_add(1) {
        BackupApplied::Applied
    } else if version <= have && have - version < EPOCH {
        BackupApplied::Duplicate
    } else {
        BackupApplied::Gap { have }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn versions_apply_in_order_repeat_or_gap() {
        assert_eq!(classify(0, 1), BackupApplied::Applied);
        assert_eq!(classify(5, 6), BackupApplied::Applied);
        assert_eq!(classify(5, 5), BackupApplied::Duplicate);
        assert_eq!(classify(5, 3), BackupApplied::Duplicate);
        assert_eq!(classify(5, 7), BackupApplied::Gap { have: 5 });
        // A new owner's epoch: the old epoch's writes are never taken for its own.
        assert_eq!(classify(5, EPOCH + 6), BackupApplied::Gap { have: 5 });
        assert_eq!(
            classify(EPOCH + 9, 3),
            BackupApplied::Gap { have: EPOCH + 9 }
        );
    }

    #[test]
    fn a_new_epoch_passes_every_old_version() {
        let mut s = ReplicaState::new(2, 4);
        s.versions[0][1] = 17;
        s.versions[1][2] = EPOCH + 3;
        s.next_epoch();
        assert_eq!(s.versions[0], [EPOCH; MAX_REPLICAS]);
        assert_eq!(s.versions[1], [2 * EPOCH; MAX_REPLICAS]);
    }

    #[test]
    fn dedup_keeps_the_last_window_of_answers() {
        let mut d = Dedup::new(2);
        let call = |n| CallId { caller: 7, call: n };
        d.remember(call(1), &[1]);
        assert_eq!(d.get(&call(1)), Some(&[1][..]));
        d.remember(call(2), &[2]);
        d.remember(call(3), &[3]);
        assert!(d.get(&call(1)).is_none());
        assert_eq!(d.get(&call(2)), Some(&[2][..]));
        assert_eq!(d.get(&call(3)), Some(&[3][..]));
        assert_eq!(
            d.entries(),
            vec![(7, 2, vec![2]), (7, 3, vec![3])],
            "oldest first"
        );
        // The same call again: the newest answer is found.
        d.remember(call(3), &[33]);
        assert_eq!(d.get(&call(3)), Some(&[33][..]));
        assert!(d.get(&call(2)).is_none());
        // Long answers and short ones, across many evictions.
        for n in 5..1000u64 {
            let answer = vec![n as u8; (n as usize * 7) % 100];
            d.remember(call(n), &answer);
            assert_eq!(d.get(&call(n)), Some(&answer[..]));
            // The window holds the last two remembered: call 3's second answer until 6 comes.
            let previous = if n == 5 { 3 } else { n - 1 };
            assert!(d.get(&call(previous)).is_some(), "{n}");
            if n >= 7 {
                assert!(d.get(&call(n - 2)).is_none(), "{n}");
            }
        }
        assert_eq!(d.entries().len(), 2);
        d.clear();
        assert!(d.get(&call(999)).is_none() && d.entries().is_empty());
        let mut off = Dedup::new(0);
        off.remember(call(1), &[]);
        assert!(off.get(&call(1)).is_none());
    }
}
