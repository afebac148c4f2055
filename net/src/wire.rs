//! What members and clients say to each other, besides operations: the control messages carried
//! in `Control` frames, the response statuses, and errors on the wire.
//!
//! Owns: [`Control`] (handshake, join, member list, partition table, heartbeats), [`WireMember`],
//! [`Status`] and the [`OpError`] ⇄ wire conversion.

use std::net::SocketAddr;

use corecast_engine::partition::{PartitionId, ShardId};
use corecast_engine::spi::{OpError, OpId, ServiceId};
use corecast_engine::table::MemberId;
use rkyv::{Archive, Deserialize, Serialize};

/// Who opened a connection.
#[derive(Archive, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// A member (data or lite).
    Member,
    /// A smart client: routes operations, holds no partitions, is not in the member list.
    Client,
}

/// One member as the member list describes it.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct WireMember {
    /// Its id, random at start.
    pub id: u64,
    /// Its base address (`host:port`); shard `i` listens on `port + i`.
    pub addr: String,
    /// How many shards it runs.
    pub shards: u32,
    /// A lite member holds no partitions.
    pub lite: bool,
    /// Join order: the smallest is the oldest, the master.
    pub order: u64,
    /// How many times the member forgot its cluster and dropped its data.
    pub incarnation: u64,
}

/// A member as the cluster logic sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberEntry {
    /// Its id.
    pub id: MemberId,
    /// Its base address.
    pub addr: SocketAddr,
    /// How many shards it runs.
    pub shards: u32,
    /// A lite member holds no partitions.
    pub lite: bool,
    /// Join order (oldest first).
    pub order: u64,
    /// How many times it forgot its cluster and dropped its data (removed from it, or merged
    /// into another): a list naming it under an older count is of a member that is gone, and
    /// a master admits it again as new.
    pub incarnation: u64,
}

impl MemberEntry {
    /// The address of shard `shard` of this member.
    pub fn shard_addr(&self, shard: u32) -> SocketAddr {
        let mut addr = self.addr;
        addr.set_port(addr.port().wrapping_add(shard as u16));
        addr
    }

    /// The shard of this member that holds `partition`.
    pub fn shard_of(&self, partition: PartitionId) -> u32 {
        partition.0 % self.shards.max(1)
    }

    /// The wire form.
    pub fn to_wire(&self) -> WireMember {
        WireMember {
            id: self.id.0,
            addr: self.addr.to_string(),
            shards: self.shards,
            lite: self.lite,
            order: self.order,
            incarnation: self.incarnation,
        }
    }

    /// From the wire form; `None` if the address does not parse.
    pub fn from_wire(w: &WireMember) -> Option<MemberEntry> {
        Some(MemberEntry {
            id: MemberId(w.id),
            addr: w.addr.parse().ok()?,
            shards: w.shards.max(1),
            lite: w.lite,
            order: w.order,
            incarnation: w.incarnation,
        })
    }
}

pub use messages::Control;

// rkyv's generated archived enum has undocumented variant fields.
#[allow(missing_docs)]
mod messages {
    use super::{Role, WireMember};
    use rkyv::{Archive, Deserialize, Serialize};

    /// Control messages, in `Control` frames.
    #[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
    pub enum Control {
        /// The first frame on every connection.
        Hello {
            /// The cluster the sender belongs to.
            cluster: String,
            /// The shared secret ("" for none).
            secret: String,
            /// Member or client.
            role: Role,
            /// The sender's id (a client's is random too).
            id: u64,
        },
        /// The handshake is accepted.
        Welcome {
            /// The accepting member's id.
            id: u64,
        },
        /// The handshake is refused; the connection closes.
        Refused {
            /// Why (cluster name or secret mismatch).
            reason: String,
        },
        /// A member asks to join (sent to a seed, or to the master).
        JoinRequest {
            /// The member that wants to join.
            member: WireMember,
            /// The highest member list version the joiner has seen (in any cluster): a master
            /// admitting a member from another cluster (a split brain's merge) numbers its next
            /// list above it, so the joiner's clients take the new list as newer.
            list_version: u64,
            /// The same for the partition table.
            table_version: u64,
        },
        /// The receiver is not the master; ask this address.
        NotMaster {
            /// The master's base address.
            master: String,
        },
        /// The receiver is itself still looking for a master.
        StillJoining {
            /// The receiver's base address.
            addr: String,
        },
        /// The member list, oldest (the master) first.
        MemberList {
            /// Grows with every change.
            version: u64,
            /// The members.
            members: Vec<WireMember>,
            /// The version of the previous master's list this master took over from (0: it
            /// formed the cluster): a member that has a newer list of that master does not
            /// take this one for its successor's (the old master was alive after it).
            base: u64,
        },
        /// The partition table: the member id of every replica slot of every partition, 0 for
        /// none, row by row (`depth` slots per partition; slot 0 the owner).
        Table {
            /// Grows with every change.
            version: u64,
            /// The master that published it (members take tables from their own master only).
            master: u64,
            /// Replica slots per partition.
            depth: u8,
            /// `depth` member ids per partition, partition by partition.
            replicas: Vec<u64>,
            /// The rebalance: partitions still to move, migrations running, committed and
            /// rolled back so far (as the master counts them).
            migrations: [u64; 4],
        },
        /// Master to a partition's owner: stream the partition to the members that take a new
        /// replica slot in row `to`, then answer `MigrationReady`.
        MigrationStart {
            /// The master's number for the migration.
            id: u64,
            /// The master that runs it.
            master: u64,
            /// The partition.
            partition: u32,
            /// The row now (member ids, 0 for none; slot 0 the owner).
            from: Vec<u64>,
            /// The row once it is done.
            to: Vec<u64>,
        },
        /// A partition's owner to the master: migration `id` is copied (`ok`), or failed.
        MigrationReady {
            /// The migration.
            id: u64,
            /// Its partition.
            partition: u32,
            /// Whether every destination installed the partition.
            ok: bool,
            /// Why not.
            reason: String,
        },
        /// Master to a migration's source and destinations: it is off; undo it.
        MigrationRollback {
            /// The migration.
            id: u64,
            /// The master that ran it.
            master: u64,
            /// Its partition.
            partition: u32,
        },
        /// I am alive, and this is the member list version I have.
        Heartbeat {
            /// The sender.
            id: u64,
            /// The sender's base address: a master that removed the sender answers it with the
            /// member list, so a member that was paused past the timeout learns it must rejoin.
            addr: String,
            /// The sender's member list version.
            list_version: u64,
            /// The sender's partition table version.
            table_version: u64,
            /// The master the sender follows (the first of its list): a master whose member
            /// follows another publishes its list above the other's (two lineages after a split
            /// can hold different lists of the same version).
            master: u64,
        },
        /// A client asks for the member list and table now and after every change.
        Subscribe,
        /// A master asks an address it knows of, not in its member list, whether it is in
        /// another cluster of the same name (a split brain); a member passes it to its master.
        SplitProbe {
            /// The probing cluster's master: its base address.
            master: String,
            /// Its member id.
            master_id: u64,
            /// The probing cluster's data members.
            members: u32,
        },
        /// Master to its members: this cluster is the smaller side of a split brain; hand your
        /// partitions' data to the merge, drop it, and join the cluster at `target`.
        MergeInto {
            /// The master of the cluster to join (its base address).
            target: String,
            /// The sender (members act only on their own master's word).
            master_id: u64,
        },
        /// A member that took over as master asks the others for the table they hold before
        /// it publishes one: a table it missed (delayed, or lost) may be newer than its own.
        TableQuery {
            /// The new master.
            master_id: u64,
            /// Its base address, for the answer.
            addr: String,
        },
        /// A member's answer to a [`Control::TableQuery`]: the table it holds.
        TableReport {
            /// The member answering.
            member: u64,
            /// The table's version.
            version: u64,
            /// The master that published it.
            publisher: u64,
            /// Replica slots per partition.
            depth: u8,
            /// Rows, flattened (0 for an empty slot).
            replicas: Vec<u64>,
            /// The version of the member list it follows, and that list's master.
            list_version: u64,
            /// See `list_version`.
            list_master: u64,
        },
        /// A member is shutting down and leaves the cluster.
        Leave {
            /// The member leaving.
            id: u64,
        },
        /// A client asks a member for its headline numbers (`cluster status`).
        StatsRequest,
        /// A member's headline numbers, summed over its shards.
        Stats {
            /// The member's id.
            id: u64,
            /// Operations it ran as owner that succeeded.
            ops: u64,
            /// Operations it ran as owner that failed.
            errors: u64,
            /// Inbound connections open.
            connections: u32,
            /// Inbound connections closed for a protocol violation.
            rejected: u64,
        },
    }
}

/// The status of a response frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u16)]
pub enum Status {
    /// The payload is the operation's archived response.
    Ok = 0,
    /// The payload is an archived [`WireError`].
    Error = 1,
}

/// An [`OpError`] on the wire.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct WireError {
    /// Which `OpError` variant.
    pub code: u16,
    /// The partition (or 0).
    pub partition: u32,
    /// A number the variant carries (ids, version, count, millis).
    pub a: u64,
    /// A second number.
    pub b: u64,
    /// Text the variant carries.
    pub text: String,
    /// A second text.
    pub text2: String,
}

impl WireError {
    /// The wire form of `e`.
    pub fn from_op_error(e: &OpError) -> WireError {
        let mut w = WireError {
            code: 0,
            partition: 0,
            a: 0,
            b: 0,
            text: String::new(),
            text2: String::new(),
        };
        match e {
            OpError::UnknownOperation { service, op } => {
                (w.code, w.a, w.b) = (1, u64::from(service.0), u64::from(op.0));
            }
            OpError::UnknownService { service } => (w.code, w.a) = (2, u64::from(service.0)),
            OpError::MalformedPayload {
                service,
                op,
                reason,
            } => {
                (w.code, w.a, w.b) = (3, u64::from(service.0), u64::from(op.0));
                w.text.clone_from(reason);
            }
            OpError::WrongShard { partition, shard } => {
                (w.code, w.partition, w.a) = (4, partition.0, u64::from(shard.0));
            }
            OpError::NoSuchPartition { partition, count } => {
                (w.code, w.partition, w.a) = (5, partition.0, u64::from(*count));
            }
            OpError::WrongTarget { partition, version } => {
                (w.code, w.partition, w.a) = (6, partition.0, *version);
            }
            OpError::Timeout {
                partition,
                target,
                millis,
                reason,
            } => {
                (w.code, w.partition, w.a) = (7, partition.0, *millis);
                w.text.clone_from(target);
                w.text2.clone_from(reason);
            }
            OpError::Unavailable { partition, reason } => {
                (w.code, w.partition) = (8, partition.0);
                w.text.clone_from(reason);
            }
            OpError::Migrating { partition } => (w.code, w.partition) = (10, partition.0),
            OpError::Overloaded { partition, pending } => {
                (w.code, w.partition, w.a) = (11, partition.0, u64::from(*pending));
            }
            other => {
                w.code = 9;
                w.text = other.to_string();
            }
        }
        w
    }

    /// Back to an [`OpError`] (unknown codes become `Failed` with the text).
    pub fn to_op_error(&self) -> OpError {
        let p = PartitionId(self.partition);
        let service = ServiceId(self.a as u16);
        match self.code {
            1 => OpError::UnknownOperation {
                service,
                op: OpId(self.b as u16),
            },
            2 => OpError::UnknownService { service },
            3 => OpError::MalformedPayload {
                service,
                op: OpId(self.b as u16),
                reason: self.text.clone(),
            },
            4 => OpError::WrongShard {
                partition: p,
                shard: ShardId(self.a as u32),
            },
            5 => OpError::NoSuchPartition {
                partition: p,
                count: self.a as u32,
            },
            6 => OpError::WrongTarget {
                partition: p,
                version: self.a,
            },
            7 => OpError::Timeout {
                partition: p,
                target: self.text.clone(),
                millis: self.a,
                reason: self.text2.clone(),
            },
            8 => OpError::Unavailable {
                partition: p,
                reason: self.text.clone(),
            },
            10 => OpError::Migrating { partition: p },
            11 => OpError::Overloaded {
                partition: p,
                pending: u32::try_from(self.a).unwrap_or(u32::MAX),
            },
            _ => OpError::Failed(self.text.clone()),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn op_errors_survive_the_wire() {
        let errors = [
            OpError::UnknownOperation {
                service: ServiceId(16),
                op: OpId(3),
            },
            OpError::UnknownService {
                service: ServiceId(99),
            },
            OpError::WrongTarget {
                partition: PartitionId(7),
                version: 12,
            },
            OpError::Timeout {
                partition: PartitionId(1),
                target: "127.0.0.1:5701".into(),
                millis: 100,
                reason: "connection refused".into(),
            },
            OpError::Failed("no such counter".into()),
            OpError::Migrating {
                partition: PartitionId(9),
            },
            OpError::Overloaded {
                partition: PartitionId(4),
                pending: 1024,
            },
        ];
        for e in errors {
            let wire = WireError::from_op_error(&e);
            let bytes = corecast_engine::payload::encode(&wire).unwrap();
            let back = corecast_engine::payload::decode::<WireError>(&bytes).unwrap();
            assert_eq!(back.to_op_error(), e);
        }
    }
}
