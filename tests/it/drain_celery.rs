//! Draining real Celery workers on Redis through their remote control: `cancel_consumer`
//! stops a worker taking tasks (a task sent afterwards stays queued), `add_consumer`
//! resumes it, and what a worker holds (running and prefetched, with early ack) is
//! reported until it has finished it all.

use crate::support;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use redis::Commands;
use support::brokers::{celery_produce_ids, redis_broker, redis_conn, redis_port, unique};
use support::celery_tasks::{TaskLedger, send_sleep_tasks};
use wpa::queue::{Credentials, QueueUri};
use wpa::workers::drain::{DrainVia, Mailbox, NodeHolding};

/// A Celery worker takes a few seconds to start on a loaded machine.
const STARTUP: Duration = Duration::from_secs(60);
const ASK: Duration = Duration::from_secs(3);

/// A real worker (tests/celery/worker_app.py), named `hostname`, killed on drop.
struct Worker(Child);

impl Worker {
    fn start(broker: &str, queue: &str, hostname: &str, env: &[(&str, &str)]) -> Worker {
        let mut command = Command::new("python3");
        command
            .args(["-m", "celery", "-A", "worker_app", "worker", "-Q", queue])
            .args(["--pool", "threads", "--concurrency", "1"])
            .args(["--without-gossip", "--without-mingle"])
            .args(["--hostname", hostname, "--loglevel", "WARNING"])
            .current_dir(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/celery"))
            .env("WPA_TEST_BROKER", broker)
            .envs(env.iter().copied())
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

fn mailbox(uri: &str) -> Mailbox {
    let source = QueueUri::parse(uri)
        .expect("test URI parses")
        .celery_events(&Credentials::default())
        .expect("a Redis queue has a pidbox");
    Mailbox::new(DrainVia::Celery(source), Duration::from_secs(5))
}

/// Asks until `check` holds for the node's answer; panics after `within`.
async fn until_holding(
    mailbox: &Mailbox,
    node: &str,
    within: Duration,
    what: &str,
    check: impl Fn(&NodeHolding) -> bool,
) -> NodeHolding {
    let nodes = vec![node.to_string()];
    let deadline = Instant::now() + within;
    let mut last = None;
    while Instant::now() < deadline {
        let answer = mailbox.holdings(&nodes, ASK).await.expect("ask the worker");
        if let Some(holding) = answer.into_iter().next() {
            if check(&holding) {
                return holding;
            }
            last = Some(holding);
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    panic!("{node}: not {what} within {within:?}; last answer {last:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_redis_cancel_consumer_stops_a_tutor_named_worker_and_add_consumer_resumes() {
    let port = redis_port();
    let broker = redis_broker(port, 0);
    let queue = unique("drain-q");
    // Tutor names its workers `edx.lms.core.default.<pod>`; with a kombu key prefix, so the
    // channel and the reply keys must carry it.
    let node = format!("celery@edx.lms.core.default.{}", unique("pod"));
    let prefix = unique("pfx") + ":";
    let ledger = TaskLedger::new(&broker, &unique("drain-ledger"));
    let (record_url, record_key) = ledger.record_target().expect("a ledger");
    let _worker = Worker::start(
        &broker,
        &queue,
        &node,
        &[
            ("WPA_TEST_KEYPREFIX", &prefix),
            ("WPA_TEST_RECORD_REDIS", &record_url),
            ("WPA_TEST_RECORD_KEY", &record_key),
        ],
    );
    let uri = format!("redis://127.0.0.1:{port}/0/{queue}?prefix={prefix}");
    let mailbox = mailbox(&uri);
    let queues = vec![queue.clone()];
    let nodes = vec![node.clone()];
    until_holding(&mailbox, &node, STARTUP, "consuming", |h| {
        h.consuming.contains(&queue)
    })
    .await;

    mailbox.cancel(&nodes, &queues).await.expect("cancel");
    let drained = until_holding(&mailbox, &node, Duration::from_secs(10), "drained", |h| {
        h.drained(&queues)
    })
    .await;
    assert_eq!((drained.active, drained.reserved), (0, 0));

    // A task sent now is not taken: it stays in the queue's list.
    let sent = celery_produce_ids(&broker, &queue, 1, &["--sleep", "0.1", "--prefix", &prefix]);
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(
        ledger.tally(&sent).never_started,
        1,
        "the drained worker took the task"
    );
    let mut conn = redis_conn(port, 0);
    let waiting: u64 = conn.llen(format!("{prefix}{queue}")).expect("LLEN");
    assert_eq!(waiting, 1);

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
        &node,
        Duration::from_secs(10),
        "consuming again",
        |h| h.consuming.contains(&queue),
    )
    .await;
    // Our reply bindings are gone.
    let bindings: Vec<String> = conn
        .smembers(format!("{prefix}_kombu.binding.reply.celery.pidbox"))
        .expect("SMEMBERS");
    assert!(bindings.is_empty(), "left bindings: {bindings:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_early_ack_prefetch_4_is_held_until_every_reserved_task_finished() {
    let port = redis_port();
    let broker = redis_broker(port, 0);
    let queue = unique("drain-prefetch");
    let node = format!("celery@{}", unique("pod"));
    let ledger = TaskLedger::new(&broker, &unique("drain-ledger"));
    let (record_url, record_key) = ledger.record_target().expect("a ledger");
    // Celery's defaults: early ack, and a prefetch of 4 per process.
    let _worker = Worker::start(
        &broker,
        &queue,
        &node,
        &[
            ("WPA_TEST_ACKS_LATE", "0"),
            ("WPA_TEST_PREFETCH", "4"),
            ("WPA_TEST_RECORD_REDIS", &record_url),
            ("WPA_TEST_RECORD_KEY", &record_key),
        ],
    );
    let mailbox = mailbox(&format!("redis://127.0.0.1:{port}/0/{queue}"));
    let queues = vec![queue.clone()];
    let nodes = vec![node.clone()];
    until_holding(&mailbox, &node, STARTUP, "consuming", |h| {
        h.consuming.contains(&queue)
    })
    .await;
    let sent = send_sleep_tasks(&broker, &queue, 4, 1.5);
    // One runs, three wait prefetched in the worker (already out of the queue's list).
    until_holding(&mailbox, &node, Duration::from_secs(20), "holding 4", |h| {
        h.active + h.reserved == 4
    })
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
