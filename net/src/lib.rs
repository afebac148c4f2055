//! corecast-net: the network layer of corecast.
//!
//! Module map:
//! - [`frame`]: the frame codec (fixed little-endian header + aligned rkyv payload, bounded) and
//!   the receive buffer.
//! - [`fuzz`]: fuzz target bodies (frames off a socket), replayed over `fuzz/corpus` by a test.
//! - [`wire`]: control messages, response statuses, errors on the wire.
//! - [`membership`]: join, member list, master, failure detection and the partition table, as a
//!   sans-IO state machine.
//! - [`conn`]: handshake, batched writers, outbound request/response connections.
//! - [`replica`]: the payloads of replica frames (backup operations, owners' versions).
//! - [`node`]: the runtime: per-shard listeners, routing to partition owners, backups to their
//!   replicas (sync acks, async bounded), anti-entropy, the control plane on shard 0, installed
//!   on a member or a smart client as the engine's extension.
//! - [`cluster`]: starting a networked member or a smart client.
//! - [`faults`]: fault injection (cutting a member off from peers: a network split).
//! - `sys` (private): duplicate descriptors and listening sockets.

pub mod cluster;
pub mod conn;
pub mod faults;
pub mod frame;
pub mod fuzz;
pub mod membership;
pub mod metrics;
pub mod node;
pub mod readiness;
pub mod replica;
mod sys;
pub mod wire;

pub use cluster::{start_client, start_member};
pub use node::{
    batch_stats, BatchStats, ClusterStatus, MemberStatus, MergeStats, NetError, Network,
    StreamStats,
};
