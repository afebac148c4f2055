//! Fault injection: cutting a member (or client) off from some of its peers, as a network split
//! would, while both keep running. Used by the split-brain tests; nothing on the operation path
//! looks at it but the making of a connection.
//!
//! A cut is one-sided: this member stops connecting to the addresses given and tears down the
//! connections it has to them. Cut both sides (each member from the other side's addresses) for
//! a clean split: the connections the other side made to this one are then torn down by the
//! other side.

use std::net::SocketAddr;

use corecast_engine::{InvocationError, Member, ShardId};

use crate::node::set_blocked_here;

/// Cuts `member` off from the peers listening on `addrs` (every shard address of each peer:
/// `base + shard`), on all its shards, replacing any earlier cut. An empty list heals it.
///
/// Errors: `MemberStopped` if the member stopped.
pub async fn cut_off(member: &Member, addrs: &[SocketAddr]) -> Result<(), InvocationError> {
    let shards = member.invoker().shard_count().get();
    for shard in 0..shards {
        let addrs: ahash::AHashSet<SocketAddr> = addrs.iter().copied().collect();
        member
            .invoker()
            .run_on(
                ShardId(shard),
                move || async move { set_blocked_here(addrs) },
            )
            .await?;
    }
    Ok(())
}

/// Every shard address of members whose base addresses are `bases`, each with `shards` shards.
pub fn shard_addrs(bases: &[SocketAddr], shards: u32) -> Vec<SocketAddr> {
    bases
        .iter()
        .flat_map(|base| {
            (0..shards).map(move |s| {
                let mut a = *base;
                a.set_port(base.port().wrapping_add(s as u16));
                a
            })
        })
        .collect()
}
