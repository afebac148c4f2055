//! Starting a networked member, or a smart client, on top of the engine's member.
//!
//! A smart client is an engine member in client role: it runs shards (one by default) and the
//! compiled-in services' proxies, holds no partitions, is not in the member list, and its router
//! sends every operation straight to the shard that owns the partition.

use std::sync::Arc;
use std::time::Duration;

use corecast_engine::{Member, MemberBuilder, StartError};

use crate::node::Network;

/// Starts a member with its network: listeners on `bind` port + shard, join through the seeds.
/// Returns once the member joined a cluster (or formed one).
///
/// Errors: the engine's start errors; `Network` for a seed that does not resolve, a port in use
/// or no cluster joined within the join timeout plus the member timeout.
pub async fn start_member(builder: MemberBuilder) -> Result<Member, StartError> {
    let network =
        Network::member(builder.config()).map_err(|e| StartError::Network(e.to_string()))?;
    let patience =
        builder.config().network.join_timeout() + builder.config().network.member_timeout() * 2;
    let metrics_port = builder.config().network.metrics_port;
    let mut host = builder.config().network.bind;
    let member = start(builder, network.clone(), patience).await?;
    if metrics_port != 0 {
        host.set_port(metrics_port);
        if let Err(e) = network.serve_metrics(host, member.invoker().clone()) {
            member.shutdown().await;
            return Err(StartError::Network(format!(
                "network.metrics-port = {metrics_port}: cannot listen on {host}: {e}"
            )));
        }
    }
    Ok(member)
}

/// Starts a smart client connected to any of `members`. Returns once it has the member list and
/// the partition table.
///
/// Errors: as [`start_member`]; a client that reaches no member within `timeout` fails.
pub async fn start_client(
    builder: MemberBuilder,
    members: &[String],
    timeout: Duration,
) -> Result<Member, StartError> {
    let network = Network::client(builder.config(), members)
        .map_err(|e| StartError::Network(e.to_string()))?;
    start(builder, network, timeout).await
}

async fn start(
    builder: MemberBuilder,
    network: Arc<Network>,
    patience: Duration,
) -> Result<Member, StartError> {
    let member = builder
        .id(network.id().0)
        .extension(network.clone())
        .start()
        .await?;
    if let Some(e) = network.start_errors().into_iter().next() {
        member.shutdown().await;
        return Err(StartError::Network(e.to_string()));
    }
    if let Err(e) = network.wait_joined(patience).await {
        member.shutdown().await;
        return Err(StartError::Network(e.to_string()));
    }
    Ok(member)
}
