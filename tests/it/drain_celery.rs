//! Draining real Celery workers through their remote control, on Redis and on RabbitMQ:
//! `cancel_consumer` stops a worker taking tasks (a task sent afterwards stays queued),
//! `add_consumer` resumes it, and what a worker holds (running and prefetched, with early
//! ack) is reported until it has finished it all. Each scenario runs once per broker.

use crate::support;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use redis::Commands;
use support::brokers::{celery_produce_ids, redis_conn, redis_port, unique};
use support::brokers_amqp::{MANAGEMENT, create_vhost, delete_vhost};
use support::celery_tasks::{TaskLedger, send_sleep_tasks};
use support::drain::{CeleryBroker, DRAIN_PERMISSIONS, until_holding};
use wpa::queue::{Credentials, QueueUri};
use wpa::workers::drain::{DrainError, DrainVia, Mailbox};

/// A Celery worker takes a few seconds to start on a loaded machine.
const STARTUP: Duration = Duration::from_secs(60);
const ASK: Duration = Duration::from_secs(3);

/// A real worker (tests/celery/worker_app.py), named `hostname`, killed on drop.
struct Worker(Child);

impl Worker {
    fn start(broker: &str, queue: &str, hostname: &str, env: &[(String, String)]) -> Worker {
        let mut command = Command::new("python3");
        command
            .args(["-m", "celery", "-A", "worker_app", "worker", "-Q", queue])
            .args(["--pool", "threads", "--concurrency", "1"])
            .args(["--without-gossip", "--without-mingle"])
            .args(["--hostname", hostname, "--loglevel", "WARNING"])
            .current_dir(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/celery"))
            .env("WPA_TEST_BROKER", broker)
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        Worker(command.spawn().expect("start a celery worker"))
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A worker named `node` on `broker`, recording its runs in a fresh ledger, with more
/// environment `env`; returns once it answers that it consumes `queue`.
async fn worker(
    broker: &CeleryBroker,
    queue: &str,
    node: &str,
    env: &[(&str, &str)],
) -> (Worker, TaskLedger, Mailbox) {
    let ledger = TaskLedger::new(&broker.ledger_url(), &unique("drain-ledger"));
    let (record_url, record_key) = ledger.record_target().expect("a ledger");
    let mut all = broker.worker_env();
    all.push(("WPA_TEST_RECORD_REDIS".into(), record_url));
    all.push(("WPA_TEST_RECORD_KEY".into(), record_key));
    all.extend(env.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    let worker = Worker::start(&broker.url(), queue, node, &all);
    let mailbox = broker.mailbox(queue);
    until_holding(&mailbox, node, STARTUP, "consuming", |h| {
        h.consuming.iter().any(|q| q == queue)
    })
    .await;
    (worker, ledger, mailbox)
}

/// Cancel: drained, and a task sent then stays queued; resume: the task runs.
async fn cancel_then_resume(broker: &CeleryBroker, node: &str) {
    let queue = unique("drain-q");
    let (_worker, ledger, mailbox) = worker(broker, &queue, node, &[]).await;
    let queues = vec![queue.clone()];
    let nodes = vec![node.to_string()];

    mailbox.cancel(&nodes, &queues).await.expect("cancel");
    let drained = until_holding(&mailbox, node, Duration::from_secs(10), "drained", |h| {
        h.drained(&queues)
    })
    .await;
    assert_eq!((drained.active, drained.reserved), (0, 0));

    // A task sent now is not taken: it stays in the queue.
    let mut extra = broker.produce_args();
    extra.extend(["--sleep".to_string(), "0.1".to_string()]);
    let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
    let sent = celery_produce_ids(&broker.url(), &queue, 1, &extra);
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(
        ledger.tally(&sent).never_started,
        1,
        "the drained worker took the task"
    );
    assert_eq!(broker.waiting(&queue).await, 1);

    mailbox.resume(&nodes, &queues).await.expect("resume");
    let deadline = Instant::now() + Duration::from_secs(20);
    while ledger.tally(&sent).completed < 1 {
        assert!(
            Instant::now() < deadline,
            "the resumed worker never took the task"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    until_holding(
        &mailbox,
        node,
        Duration::from_secs(10),
        "consuming again",
        |h| h.consuming.contains(&queue),
    )
    .await;
    assert_eq!(broker.waiting(&queue).await, 0);
}

/// Celery's defaults, early ack and a prefetch of 4: drained only once the four tasks it
/// held (one running, three prefetched) all finished.
async fn early_ack_prefetch_4(broker: &CeleryBroker) {
    let queue = unique("drain-prefetch");
    let node = format!("celery@{}", unique("pod"));
    let (_worker, ledger, mailbox) = worker(
        broker,
        &queue,
        &node,
        &[("WPA_TEST_ACKS_LATE", "0"), ("WPA_TEST_PREFETCH", "4")],
    )
    .await;
    let queues = vec![queue.clone()];
    let nodes = vec![node.clone()];
    let sent = send_sleep_tasks(&broker.url(), &queue, 4, 1.5);
    // One runs, three wait prefetched in the worker (already out of the queue).
    until_holding(
        &mailbox,
        &node,
        Duration::from_secs(20),
        "running 1, holding 3",
        |h| (h.active, h.reserved) == (1, 3),
    )
    .await;
    mailbox.cancel(&nodes, &queues).await.expect("cancel");
    let drained = until_holding(&mailbox, &node, Duration::from_secs(30), "drained", |h| {
        h.drained(&queues)
    })
    .await;
    assert_eq!((drained.active, drained.reserved), (0, 0));
    // Drained only once every prefetched task has run to the end.
    assert_eq!(ledger.tally(&sent).completed, 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_redis_cancel_consumer_stops_a_tutor_named_worker_and_add_consumer_resumes() {
    // Tutor names its workers `edx.lms.core.default.<pod>`; with a kombu key prefix, so the
    // channel and the reply keys must carry it.
    let prefix = unique("pfx") + ":";
    let broker = CeleryBroker::redis(&prefix);
    let node = format!("celery@edx.lms.core.default.{}", unique("pod"));
    cancel_then_resume(&broker, &node).await;
    // Our reply bindings are gone.
    let bindings: Vec<String> = redis_conn(redis_port(), 0)
        .smembers(format!("{prefix}_kombu.binding.reply.celery.pidbox"))
        .expect("SMEMBERS");
    assert!(bindings.is_empty(), "left bindings: {bindings:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_redis_early_ack_prefetch_4_is_held_until_every_reserved_task_finished() {
    early_ack_prefetch_4(&CeleryBroker::redis("")).await;
}

/// The queues of `vhost` whose name ends with `suffix`, as the management API lists them.
async fn queues_ending(vhost: &str, suffix: &str) -> Vec<String> {
    let listed: Vec<serde_json::Value> = reqwest::Client::new()
        .get(format!("{MANAGEMENT}/api/queues/{vhost}"))
        .basic_auth("guest", Some("guest"))
        .send()
        .await
        .expect("GET queues")
        .json()
        .await
        .expect("queues JSON");
    listed
        .iter()
        .filter_map(|q| q["name"].as_str())
        .filter(|name| name.ends_with(suffix))
        .map(str::to_string)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_rabbitmq_cancel_consumer_keeps_a_task_queued_and_add_consumer_resumes() {
    // The remote control logs in with only the permissions the docs list, on a vhost where
    // nobody asked a worker anything yet (so it declares `reply.celery.pidbox`).
    let broker = CeleryBroker::rabbitmq()
        .await
        .with_user(DRAIN_PERMISSIONS)
        .await;
    let node = format!("celery@{}", unique("pod"));
    cancel_then_resume(&broker, &node).await;
    let CeleryBroker::Rabbitmq { vhost, .. } = &broker else {
        unreachable!("a RabbitMQ broker")
    };
    // Our reply queues went with our connections.
    let left = queues_ending(vhost, ".reply.celery.pidbox").await;
    assert!(left.is_empty(), "left reply queues: {left:?}");

    // Without those permissions: the broker's refusal, no secret in it.
    let broker = broker.with_user(["^$", "^$", "^$"]).await;
    let CeleryBroker::Rabbitmq {
        user: Some((_, password)),
        ..
    } = &broker
    else {
        unreachable!("a RabbitMQ broker with a user")
    };
    let refused = broker
        .mailbox("q")
        .holdings(&[node], ASK)
        .await
        .expect_err("no permission");
    let text = refused.to_string();
    assert!(
        matches!(refused, DrainError::Broker { .. }) && text.contains("ACCESS_REFUSED"),
        "{text}"
    );
    assert!(!text.contains(password.as_str()), "{text}");
    broker.remove().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_rabbitmq_early_ack_prefetch_4_is_held_until_every_reserved_task_finished() {
    let broker = CeleryBroker::rabbitmq().await;
    early_ack_prefetch_4(&broker).await;
    broker.remove().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_rabbitmq_on_a_vhost_no_worker_ever_used_is_a_clean_error() {
    let vhost = unique("wpa-drain-empty");
    create_vhost(&vhost).await;
    let uri = format!("amqp://guest:guest@127.0.0.1:5672/{vhost}/q");
    let source = QueueUri::parse(&uri)
        .expect("test URI parses")
        .celery_events(&Credentials::default())
        .expect("a RabbitMQ queue has a pidbox");
    let mailbox = Mailbox::new(DrainVia::Celery(source), Duration::from_secs(5));
    let nodes = vec!["celery@nobody".to_string()];
    let queues = vec!["q".to_string()];
    let started = Instant::now();
    let asked = mailbox.holdings(&nodes, ASK).await;
    let cancelled = mailbox.cancel(&nodes, &queues).await;
    let resumed = mailbox.resume(&nodes, &queues).await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
    for outcome in [asked.map(|_| ()), cancelled, resumed] {
        match outcome {
            Err(DrainError::NoMailbox { broker, exchange }) => {
                assert_eq!(exchange, "celery.pidbox");
                assert!(
                    broker.contains(&vhost) && !broker.contains(":guest@"),
                    "{broker}"
                );
            }
            other => panic!("expected NoMailbox, got {other:?}"),
        }
    }
    // Nothing was declared on the vhost's behalf: no exchange, no queue.
    let left = queues_ending(&vhost, "pidbox").await;
    assert!(left.is_empty(), "{left:?}");
    // A vhost that does not exist at all: a broker error, no panic, no hang.
    delete_vhost(&vhost).await;
    let error = mailbox
        .holdings(&nodes, ASK)
        .await
        .expect_err("no such vhost");
    assert!(matches!(error, DrainError::Broker { .. }), "{error:?}");
    assert!(!error.to_string().contains("guest@"), "{error}");
}
