//! A real member (glommio shards) driven through the embedded API, with a small test service.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;

use corecast_engine::config::ServiceConfig;
use corecast_engine::prelude::*;
use corecast_engine::{BlockingMember, Config, InvocationError, Member, StartError};

/// Counts visits per partition, and records which shard ran each one.
struct Visits {
    shard: u32,
    greeting: String,
}

#[derive(Default)]
struct VisitLog {
    visits: u64,
    names: Vec<String>,
}

impl Service for Visits {
    const NAME: &'static str = "visits";
    const ID: ServiceId = ServiceId(100);
    type Container = VisitLog;
    type ReplicaData = u64;

    fn init(ctx: &ServiceContext, properties: &Properties) -> Result<Self, ServiceError> {
        let greeting = properties.get::<String>("greeting")?.unwrap_or_default();
        if greeting == "fail" {
            return Err(ServiceError::new("asked to fail"));
        }
        Ok(Visits {
            shard: ctx.shard.0,
            greeting,
        })
    }
    fn operations(ops: &mut Operations<Self>) {
        ops.add::<Visit>().add::<Greeting>();
    }
    fn create_object(&mut self, c: &mut VisitLog, name: &str) {
        c.names.push(name.to_owned());
    }
    fn destroy_object(&mut self, c: &mut VisitLog, name: &str) {
        c.names.retain(|n| n != name);
    }
    fn replica_data(c: &VisitLog, _: &ReplicationEvent) -> Option<u64> {
        Some(c.visits)
    }
    fn apply_replica_data(c: &mut VisitLog, data: &Archived<u64>) {
        c.visits = data.to_native();
    }
}

/// Answers (partition, shard, visits so far including this one).
#[derive(Archive, Serialize, Deserialize)]
struct Visit;

impl Operation for Visit {
    type Service = Visits;
    type Response = (u32, u32, u64);
    const ID: OpId = OpId(1);
    fn run(_: &Archived<Self>, ctx: &mut OpContext<Visits>) -> Result<(u32, u32, u64), OpError> {
        ctx.container.visits += 1;
        Ok((ctx.partition().0, ctx.service.shard, ctx.container.visits))
    }
}

/// Answers the configured greeting, or fails when asked to.
#[derive(Archive, Serialize, Deserialize)]
struct Greeting {
    fail: bool,
}

impl Operation for Greeting {
    type Service = Visits;
    type Response = String;
    const ID: OpId = OpId(2);
    fn run(op: &Archived<Self>, ctx: &mut OpContext<Visits>) -> Result<String, OpError> {
        if op.fail {
            return Err(OpError::failed("greeting refused"));
        }
        Ok(ctx.service.greeting.clone())
    }
}

fn config(shards: u32, partitions: u32) -> Config {
    Config {
        shards: Some(shards),
        partition_count: partitions,
        ..Config::default()
    }
}

/// A `[[services]]` entry, with an optional `greeting` property.
fn service(name: &str, greeting: Option<&str>, enabled: bool) -> ServiceConfig {
    let mut properties = Properties::new();
    if let Some(greeting) = greeting {
        properties.insert("greeting", greeting);
    }
    ServiceConfig {
        name: name.into(),
        enabled,
        properties,
        ..ServiceConfig::default()
    }
}

fn start(config: Config) -> BlockingMember {
    match BlockingMember::builder(config)
        .service::<Visits>()
        .start_blocking()
    {
        Ok(member) => member,
        Err(e) => panic!("member did not start: {e}"),
    }
}

#[test]
fn an_all_partitions_operation_visits_each_partition_once_on_its_shard() {
    let member = start(config(3, 271));
    let invoker = member.member().invoker().clone();
    for round in 1..=2u64 {
        let results = member.block_on(invoker.invoke_all(&Visit)).unwrap();
        let partitions: Vec<u32> = results.iter().map(|(p, _)| p.0).collect();
        assert_eq!(
            partitions,
            (0..271).collect::<Vec<_>>(),
            "each partition exactly once, in order"
        );
        for (p, (echoed, shard, visits)) in results {
            assert_eq!(echoed, p.0, "the response came from the partition it names");
            assert_eq!(shard, p.0 % 3, "partition {} ran on shard {shard}", p.0);
            assert_eq!(
                visits, round,
                "partition {} visited {visits} times in round {round}",
                p.0
            );
        }
    }
    member.shutdown();
}

#[test]
fn a_partition_operation_runs_on_shard_p_mod_s() {
    let member = start(config(2, 13));
    let invoker = member.member().invoker().clone();
    for p in 0..13 {
        let (echoed, shard, _) = member
            .block_on(invoker.invoke(PartitionId(p), &Visit))
            .unwrap();
        assert_eq!((echoed, shard), (p, p % 2));
    }
    let err = member
        .block_on(invoker.invoke(PartitionId(13), &Visit))
        .unwrap_err();
    assert!(
        matches!(err, InvocationError::NoSuchPartition { count: 13, .. }),
        "{err}"
    );
    member.shutdown();
}

#[test]
fn properties_reach_init_and_operation_errors_reach_the_caller() {
    let mut config = config(2, 7);
    config.services.push(service("visits", Some("hello"), true));
    let member = start(config);
    let invoker = member.member().invoker().clone();
    let greeting = member.block_on(invoker.invoke(PartitionId(3), &Greeting { fail: false }));
    assert_eq!(greeting.unwrap(), "hello");
    let err = member
        .block_on(invoker.invoke(PartitionId(3), &Greeting { fail: true }))
        .unwrap_err();
    assert_eq!(err.to_string(), "partition 3: greeting refused");
    // The same from each shard: on the partition's own shard the operation runs inline and its
    // response is handed over as it is, not archived and read back; from the other shard it is
    // queued in that shard's outbox and its answer (or error) comes back through its queue.
    for shard in [ShardId(0), ShardId(1)] {
        let inner = invoker.clone();
        let on_shard = member
            .block_on(invoker.run_on(shard, move || async move {
                let ok = inner
                    .invoke(PartitionId(3), &Greeting { fail: false })
                    .await;
                let err = inner.invoke(PartitionId(3), &Greeting { fail: true }).await;
                let missing = inner
                    .invoke(PartitionId(7), &Greeting { fail: false })
                    .await;
                (ok.unwrap(), err.unwrap_err(), missing.unwrap_err())
            }))
            .unwrap();
        assert_eq!(on_shard.0, "hello", "from {shard}");
        assert_eq!(
            on_shard.1.to_string(),
            "partition 3: greeting refused",
            "from {shard}"
        );
        assert!(
            matches!(on_shard.2, InvocationError::NoSuchPartition { .. }),
            "{}",
            on_shard.2
        );
    }
    member.shutdown();
}

#[test]
fn a_failing_service_init_names_the_service_and_shard() {
    let mut config = config(2, 7);
    config.services.push(service("visits", Some("fail"), true));
    let err = match BlockingMember::builder(config)
        .service::<Visits>()
        .start_blocking()
    {
        Ok(_) => panic!("a service whose init fails must stop the member from starting"),
        Err(e) => e,
    };
    assert!(matches!(err, StartError::ServiceInit { .. }), "{err}");
    let text = err.to_string();
    assert!(
        text.contains("visits") && text.contains("shard") && text.contains("asked to fail"),
        "{text}"
    );
}

#[test]
fn a_config_naming_a_service_not_compiled_in_is_refused() {
    let mut config = config(1, 7);
    config.services.push(service("nosuch", None, true));
    let err = match BlockingMember::builder(config)
        .service::<Visits>()
        .start_blocking()
    {
        Ok(_) => panic!("an unknown service in the config must be an error"),
        Err(e) => e,
    };
    assert!(err.to_string().contains("nosuch"), "{err}");
}

#[test]
fn a_disabled_service_is_not_running() {
    let mut config = config(1, 7);
    config.services.push(service("visits", None, false));
    let member = start(config);
    let invoker = member.member().invoker().clone();
    let err = member
        .block_on(invoker.invoke(PartitionId(0), &Visit))
        .unwrap_err();
    assert!(
        matches!(
            err,
            InvocationError::Operation {
                source: OpError::UnknownOperation { .. },
                ..
            }
        ),
        "{err}"
    );
    member.shutdown();
}

/// A proxy over the visit log, to drive object creation and destruction.
struct Tracked(ObjectHandle);

impl DistributedObject for Tracked {
    type Service = Visits;
    fn from_handle(handle: ObjectHandle) -> Self {
        Tracked(handle)
    }
}

#[test]
fn objects_are_created_once_listed_and_destroyed() {
    let member = start(config(2, 31));
    let m = member.member();
    let names = ["alpha", "beta", "gamma"];
    for name in names {
        member.object::<Tracked>(name).unwrap();
        member.object::<Tracked>(name).unwrap();
    }
    let listed = member.block_on(m.objects::<Visits>()).unwrap();
    assert_eq!(listed, names);
    let beta = member.object::<Tracked>("beta").unwrap();
    assert_eq!(beta.0.partition(), m.invoker().partition_of(b"beta"));
    member.block_on(beta.0.destroy()).unwrap();
    let listed = member.block_on(m.objects::<Visits>()).unwrap();
    assert_eq!(listed, ["alpha", "gamma"]);
    member.shutdown();
}

#[test]
fn work_run_on_a_shard_invokes_its_own_partitions_inline_and_others_by_message() {
    let member = start(config(2, 11));
    let invoker = member.member().invoker().clone();
    let inner = invoker.clone();
    let seen = member
        .block_on(invoker.run_on(ShardId(1), move || async move {
            let here = inner.current_shard();
            let mut shards = BTreeSet::new();
            for p in 0..11 {
                let (_, shard, _) = inner.invoke(PartitionId(p), &Visit).await.unwrap();
                shards.insert(shard);
            }
            (here, shards)
        }))
        .unwrap();
    assert_eq!(seen.0, Some(ShardId(1)));
    assert_eq!(seen.1, BTreeSet::from([0, 1]));
    assert_eq!(
        invoker.current_shard(),
        None,
        "the test thread is not a shard"
    );
    member.shutdown();
}

#[test]
fn calls_after_shutdown_fail_with_member_stopped() {
    let member = start(config(2, 7));
    let invoker = member.member().invoker().clone();
    member.shutdown();
    let err = futures_lite::future::block_on(invoker.invoke(PartitionId(1), &Visit)).unwrap_err();
    assert_eq!(err, InvocationError::MemberStopped);
}

#[test]
fn an_async_member_starts_and_stops_from_any_executor() {
    futures_lite::future::block_on(async {
        let member = Member::builder(config(2, 5))
            .service::<Visits>()
            .start()
            .await
            .unwrap();
        let r = member
            .invoker()
            .invoke(PartitionId(4), &Visit)
            .await
            .unwrap();
        assert_eq!(r, (4, 0, 1));
        member.shutdown().await;
    });
}

#[test]
fn duplicate_operation_ids_are_refused_at_start() {
    struct Twice;
    impl Service for Twice {
        const NAME: &'static str = "twice";
        const ID: ServiceId = ServiceId(101);
        type Container = ();
        type ReplicaData = ();
        fn init(_: &ServiceContext, _: &Properties) -> Result<Self, ServiceError> {
            Ok(Twice)
        }
        fn operations(ops: &mut Operations<Self>) {
            ops.add::<Again>().add::<Again>();
        }
        fn destroy_object(&mut self, _: &mut (), _: &str) {}
        fn replica_data(_: &(), _: &ReplicationEvent) -> Option<()> {
            None
        }
        fn apply_replica_data(_: &mut (), _: &Archived<()>) {}
    }
    #[derive(Archive, Serialize, Deserialize)]
    struct Again;
    impl Operation for Again {
        type Service = Twice;
        type Response = ();
        const ID: OpId = OpId(1);
        fn run(_: &Archived<Self>, _: &mut OpContext<Twice>) -> Result<(), OpError> {
            Ok(())
        }
    }
    let err = match BlockingMember::builder(config(1, 3))
        .service::<Twice>()
        .start_blocking()
    {
        Ok(_) => panic!("two operations with one id must be refused"),
        Err(e) => e,
    };
    assert!(
        matches!(err, StartError::DuplicateOperation { id: 1, .. }),
        "{err}"
    );
}

/// glommio 0.9 sleeps with its tasks runnable when its preempt timer fires between its I/O poll
/// and its first task (a thread descheduled longer than the timer: an overloaded machine). A
/// timer of 10 µs makes it the rule: without the ticker's signal (`kick`) the first start here
/// never runs its shards' first tasks and `start_blocking` waits forever (an operation or the
/// shutdown can stall the same way). Each round must finish.
#[test]
fn shards_that_glommio_puts_to_sleep_with_work_are_woken() {
    for round in 0..20 {
        let (done, finished) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let member = start(Config {
                preempt_timer_micros: 10,
                ..config(2, 13)
            });
            let invoker = member.member().invoker().clone();
            for p in 0..13 {
                let (echoed, _, _) = member
                    .block_on(invoker.invoke(PartitionId(p), &Visit))
                    .unwrap();
                assert_eq!(echoed, p);
            }
            member.shutdown();
            let _ = done.send(());
        });
        if finished
            .recv_timeout(std::time::Duration::from_secs(30))
            .is_err()
        {
            panic!("round {round}: a member did not start, serve and stop within 30 s");
        }
    }
}
