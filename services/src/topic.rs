//! Topics: publish a message, and every subscriber on every member and client receives it.
//!
//! A topic's messages go through the owner of the partition of its name, which publishes each
//! to the topic's listeners as it runs the `Publish`: one shard orders them, so a publisher that
//! waits for each publish sees its messages delivered in that order everywhere (while the
//! partition does not move). Messages are not stored: a subscriber gets what is published after
//! it subscribed.

use std::time::Duration;

use corecast_engine::events::{ListenSpec, Listener};
use corecast_engine::payload::decode;
use corecast_engine::prelude::*;

/// The topic service.
pub struct TopicService;

impl Service for TopicService {
    const NAME: &'static str = "topic";
    const ID: ServiceId = ServiceId(20);
    /// Messages published per topic, in this partition, while this member owned it.
    type Container = ahash::AHashMap<String, u64>;
    type ReplicaData = ();

    fn init(_: &ServiceContext, _: &Properties) -> Result<Self, ServiceError> {
        Ok(TopicService)
    }

    fn operations(ops: &mut Operations<Self>) {
        ops.add::<Publish>();
    }

    fn destroy_object(&mut self, container: &mut Self::Container, name: &str) {
        container.remove(name);
    }

    fn replica_data(_: &Self::Container, _: &ReplicationEvent) -> Option<()> {
        None
    }

    fn apply_replica_data(_: &mut Self::Container, _: &Archived<()>) {}
}

/// One message as subscribers receive it.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Message {
    /// The publishing member's or client's id.
    pub publisher: u64,
    /// The message.
    pub payload: Vec<u8>,
}

/// Publishes a message to a topic's subscribers.
#[derive(Archive, Serialize, Deserialize)]
pub struct Publish {
    /// The topic.
    pub name: String,
    /// The publisher's id.
    pub publisher: u64,
    /// The message.
    pub payload: Vec<u8>,
}

impl Operation for Publish {
    type Service = TopicService;
    /// How many subscriptions the message went to.
    type Response = u64;
    const ID: OpId = OpId(1);
    fn run(op: &Archived<Self>, ctx: &mut OpContext<TopicService>) -> Result<u64, OpError> {
        match ctx.container.get_mut(op.name.as_str()) {
            Some(n) => *n += 1,
            None => {
                ctx.container.insert(op.name.to_string(), 1);
            }
        }
        let events = ctx.events();
        events.publish(&op.name, |_| Message {
            publisher: op.publisher.to_native(),
            payload: op.payload.to_vec(),
        });
        Ok(events.listeners(&op.name) as u64)
    }
}

/// A distributed topic.
#[derive(Clone)]
pub struct Topic(ObjectHandle);

impl DistributedObject for Topic {
    type Service = TopicService;
    fn from_handle(handle: ObjectHandle) -> Self {
        Topic(handle)
    }
}

impl Topic {
    /// Publishes `message`; returns once the topic's owner delivered it to the subscribers'
    /// connections.
    ///
    /// Errors: the invocation's.
    pub async fn publish(&self, message: &[u8]) -> Result<(), InvocationError> {
        self.publish_counted(message).await.map(|_| ())
    }

    /// Publishes `message` and answers how many subscriptions it went to (Redis' PUBLISH).
    ///
    /// Errors: the invocation's.
    pub async fn publish_counted(&self, message: &[u8]) -> Result<u64, InvocationError> {
        let op = Publish {
            name: self.0.name().to_owned(),
            publisher: self.0.invoker().member().id,
            payload: message.to_vec(),
        };
        self.0.invoke(&op).await
    }

    /// Subscribes: every message published from now on, from every publisher. Dropping the
    /// subscription ends it.
    ///
    /// Errors: `MemberStopped` if the member stops meanwhile.
    pub async fn subscribe(&self) -> Result<Subscription, InvocationError> {
        let spec = ListenSpec {
            id: corecast_engine::events::random_id(),
            service: TopicService::ID,
            name: self.0.name().to_owned(),
            values: true,
        };
        Ok(Subscription(
            Listener::register(self.0.invoker().clone(), spec).await?,
        ))
    }
}

/// A topic subscription.
pub struct Subscription(Listener);

impl Subscription {
    /// The next message; `None` once the member stopped.
    pub async fn next(&self) -> Option<Message> {
        loop {
            if let Some(m) = decode_message(&self.0.next().await?) {
                return Some(m);
            }
        }
    }

    /// The next message, waiting at most `timeout` (blocking the thread).
    pub fn next_timeout(&self, timeout: Duration) -> Option<Message> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let left = deadline.checked_duration_since(std::time::Instant::now())?;
            if let Some(m) = decode_message(&self.0.next_timeout(left)?) {
                return Some(m);
            }
        }
    }
}

fn decode_message(bytes: &[u8]) -> Option<Message> {
    decode::<Message>(bytes)
        .map_err(|e| tracing::warn!(error = %e, "malformed topic message dropped"))
        .ok()
}

#[cfg(test)]
mod tests {
    use corecast_engine::testkit::PartitionHarness;

    use super::*;

    #[test]
    fn publish_reaches_every_subscriber_of_the_topic_in_order() {
        let mut h = PartitionHarness::<TopicService>::new().expect("harness");
        let a = h.listen("news", true);
        let b = h.listen("news", false);
        let other = h.listen("sports", true);
        for i in 0..5u8 {
            h.run(&Publish {
                name: "news".into(),
                publisher: 7,
                payload: vec![i],
            })
            .expect("publish");
        }
        for rx in [&a, &b] {
            let got: Vec<Message> = rx
                .try_iter()
                .map(|m| decode::<Message>(&m).expect("message"))
                .collect();
            let want: Vec<Message> = (0..5u8)
                .map(|i| Message {
                    publisher: 7,
                    payload: vec![i],
                })
                .collect();
            assert_eq!(got, want);
        }
        assert!(other.try_recv().is_err());
    }
}
