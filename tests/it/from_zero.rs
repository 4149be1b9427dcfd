//! Reaction from zero with default flags, on every provider: a worker Deployment at zero
//! replicas, a queue that has never been used, the real controller binary against the API
//! double. One message goes in; the controller must write replicas >= 1 soon after.
//!
//! The deadline here is generous (the machine is shared); the from-zero figures themselves
//! come from `hack/bench.sh` and are in BENCHMARKS.md. What the deadline does catch is the
//! old behaviour: a 20 s poll interval, or a missing beanstalkd tube taken for an error and
//! retried after up to 30 s of backoff.

use crate::support;

use std::time::{Duration, Instant};

use support::apiserver::ApiServerDouble;
use support::broker_procs::unique;
use support::brokers::redis_port;
use support::brokers_amqp::{self, AMQP_PORT, MANAGEMENT};
use support::controller::{ControllerProcess, condition};
use support::e2e::{self, spec, start_server};
use support::queues::{BEANSTALKD_PORT, BeanstalkClient, MOTO_PORT, create_sqs_queue, sqs_client};

const NS: &str = "workers";
/// From the message to the scale write. Default flags poll every second (SQS long-polls at
/// zero workers), so this is several times what a healthy run needs, and far less than the
/// 20 s interval or 30 s backoff it guards against.
const REACTION_DEADLINE: Duration = Duration::from_secs(8);

/// Every flag the test harness sets for speed, put back to the controller's default.
const DEFAULT_FLAGS: &[&str] = &[
    "--resync-period=20",
    "--idle-window=60",
    "--scale-down-delay-after-last-scale-activity=600",
    "--log-level=info",
];

const AWS_ENV: &[(&str, &str)] = &[
    ("AWS_ACCESS_KEY_ID", "test"),
    ("AWS_SECRET_ACCESS_KEY", "test"),
    ("AWS_EC2_METADATA_DISABLED", "true"),
];

/// A worker at zero replicas and its WPA on `queue_uri`, with the controller started and
/// the empty queue polled at least once (`MetricsAvailable=True`).
async fn idle_worker_at_zero(
    queue_uri: &str,
    envs: &[(&str, &str)],
) -> (ApiServerDouble, tempfile::TempDir, ControllerProcess) {
    let server = start_server().await;
    let dir = tempfile::tempdir().expect("tempdir");
    e2e::add_worker(
        &server,
        NS,
        "worker",
        0,
        spec(queue_uri, "worker", 0, 5, 10),
    );
    let controller =
        ControllerProcess::start_with_env(&server, dir.path(), "from-zero", DEFAULT_FLAGS, envs);
    e2e::wait_status(
        &server,
        NS,
        "worker",
        "the empty queue's first poll",
        &controller,
        |s| condition(s, "MetricsAvailable").is_some_and(|c| c["status"] == "True"),
    )
    .await;
    assert!(
        server.scale_patches(NS, "worker").is_empty(),
        "no scaling on a queue that was never used"
    );
    (server, dir, controller)
}

/// Waits for the first scale write after `sent` and checks it came within the deadline.
async fn assert_scaled_from_zero(
    server: &ApiServerDouble,
    controller: &ControllerProcess,
    sent: Instant,
    what: &str,
) {
    e2e::wait_replicas(server, NS, "worker", 1, what, controller).await;
    let reacted = sent.elapsed();
    eprintln!("{what}: scaled 0 -> 1 after {reacted:?}");
    assert!(
        reacted <= REACTION_DEADLINE,
        "{what}: scaled after {reacted:?} (deadline {REACTION_DEADLINE:?})\n{}",
        controller.log_text()
    );
    let log = controller.log_text();
    assert!(
        !log.contains('\u{1b}'),
        "colour codes in a log that is not a terminal"
    );
    // The queue was never missing or failing: no condition other than True on the way.
    let status = support::controller::wpa_status(server, NS, "worker");
    let metrics = condition(&status, "MetricsAvailable").expect("MetricsAvailable");
    assert_eq!(metrics["status"], "True", "{metrics}");
}

#[tokio::test(flavor = "multi_thread")]
async fn beanstalkd_tube_never_used() {
    let tube = unique("from-zero");
    let (server, _dir, controller) = idle_worker_at_zero(
        &format!("beanstalk://127.0.0.1:{BEANSTALKD_PORT}/{tube}"),
        &[],
    )
    .await;
    // The tube still does not exist: the controller polled it without creating it.
    let mut producer = BeanstalkClient::connect(BEANSTALKD_PORT);
    assert!(!producer.tube_exists(&tube));
    let sent = Instant::now();
    producer.put(&tube, "job");
    assert_scaled_from_zero(&server, &controller, sent, "beanstalkd").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn redis_key_never_written() {
    let queue = unique("from-zero");
    let port = redis_port();
    let (server, _dir, controller) =
        idle_worker_at_zero(&format!("redis://127.0.0.1:{port}/6/{queue}"), &[]).await;
    let sent = Instant::now();
    e2e::redis_push(port, 6, &queue, 1);
    assert_scaled_from_zero(&server, &controller, sent, "redis").await;
}

/// The queueURI of `queue` on the default vhost, with a management API or not.
fn rabbitmq_uri(queue: &str, management: Option<&str>) -> String {
    let query = management.map_or(String::new(), |m| format!("?management={m}"));
    format!("amqp://guest:guest@127.0.0.1:{AMQP_PORT}/%2F/{queue}{query}")
}

/// RabbitMQ: the queue is declared but has never had a consumer or a message.
async fn rabbitmq_from_zero(management: Option<&str>, what: &str) {
    let queue = unique("from-zero");
    let (_conn, channel) = brokers_amqp::open(AMQP_PORT, "/").await;
    brokers_amqp::declare(&channel, &queue, false).await;
    let (server, _dir, controller) =
        idle_worker_at_zero(&rabbitmq_uri(&queue, management), &[]).await;
    let sent = Instant::now();
    brokers_amqp::publish(&channel, &queue, 1).await;
    assert_scaled_from_zero(&server, &controller, sent, what).await;
    brokers_amqp::delete(&channel, &queue).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn rabbitmq_amqp_queue_never_consumed() {
    rabbitmq_from_zero(None, "rabbitmq (amqp)").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn rabbitmq_with_management_queue_never_consumed() {
    // The management API samples statistics every 5 s: the ready count must come from AMQP.
    rabbitmq_from_zero(Some(MANAGEMENT), "rabbitmq (management)").await;
}

/// RabbitMQ on a new install: nobody has declared the queue yet (Celery declares it when a
/// worker starts or a task is sent). It reads as an empty queue, says so in the status
/// (`QueueNotDeclared`) and once in the log, and the first publish after a producer
/// declares it scales from zero as fast as on a declared queue; no ERROR line on the way.
async fn rabbitmq_queue_nobody_declared(management: Option<&str>, what: &str) {
    let queue = unique("from-zero-undeclared");
    let (server, _dir, controller) =
        idle_worker_at_zero(&rabbitmq_uri(&queue, management), &[]).await;
    let status = support::controller::wpa_status(&server, NS, "worker");
    let metrics = condition(&status, "MetricsAvailable").expect("MetricsAvailable");
    assert_eq!(metrics["reason"], "QueueNotDeclared", "{metrics}");
    assert!(
        metrics["message"]
            .as_str()
            .is_some_and(|m| m.contains(&queue)),
        "{metrics}"
    );
    // Several polls of the missing queue.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (_conn, channel) = brokers_amqp::open(AMQP_PORT, "/").await;
    brokers_amqp::declare(&channel, &queue, true).await;
    let sent = Instant::now();
    brokers_amqp::publish(&channel, &queue, 1).await;
    assert_scaled_from_zero(&server, &controller, sent, what).await;
    e2e::wait_status(&server, NS, "worker", "fresh metrics", &controller, |s| {
        condition(s, "MetricsAvailable").is_some_and(|c| c["reason"] == "MetricsFresh")
    })
    .await;
    let log = controller.log_text();
    let errors: Vec<&str> = log.lines().filter(|l| l.contains(" ERROR ")).collect();
    assert!(errors.is_empty(), "ERROR lines: {errors:#?}");
    assert_eq!(log.matches("does not exist yet").count(), 1, "{log}");
    assert_eq!(log.matches("poll failed").count(), 0, "{log}");
    brokers_amqp::delete(&channel, &queue).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn rabbitmq_amqp_queue_nobody_declared() {
    rabbitmq_queue_nobody_declared(None, "rabbitmq (amqp), undeclared").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn rabbitmq_with_management_queue_nobody_declared() {
    rabbitmq_queue_nobody_declared(Some(MANAGEMENT), "rabbitmq (management), undeclared").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sqs_queue_never_polled() {
    let port = MOTO_PORT;
    let client = sqs_client(port);
    let name = unique("from-zero");
    let url = create_sqs_queue(&client, &name).await;
    let uri = format!("http://127.0.0.1:{port}/123456789012/{name}?region=us-east-1");
    let (server, _dir, controller) = idle_worker_at_zero(&uri, AWS_ENV).await;
    // Let the controller settle into its long poll (it starts once the WPA is known to be
    // at zero replicas), as it would be long after start.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let sent = Instant::now();
    client
        .send_message()
        .queue_url(&url)
        .message_body("job")
        .send()
        .await
        .expect("send_message");
    assert_scaled_from_zero(&server, &controller, sent, "sqs").await;
}

/// SQS from zero at any phase of the long poll: back-to-back long polls at zero workers
/// keep the queue waited on all the time. Before, a long poll that ended empty was followed
/// by the 20 s poll interval with nobody waiting, and a message arriving then was seen up
/// to 20 s later (issue 21). Four queues, each sent its message at another phase of a
/// 20 s cycle, with default flags.
#[tokio::test(flavor = "multi_thread")]
async fn sqs_at_any_phase_of_the_long_poll_cycle() {
    let client = sqs_client(MOTO_PORT);
    let server = start_server().await;
    let mut urls = Vec::new();
    for i in 0..4 {
        let name = unique("from-zero-phase");
        let url = create_sqs_queue(&client, &name).await;
        let uri = format!("http://127.0.0.1:{MOTO_PORT}/123456789012/{name}?region=us-east-1");
        e2e::add_worker(
            &server,
            NS,
            &format!("w{i}"),
            0,
            spec(&uri, &format!("w{i}"), 0, 5, 10),
        );
        urls.push(url);
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let controller = ControllerProcess::start_with_env(
        &server,
        dir.path(),
        "sqs-phases",
        DEFAULT_FLAGS,
        AWS_ENV,
    );
    for i in 0..4 {
        e2e::wait_status(
            &server,
            NS,
            &format!("w{i}"),
            "first poll",
            &controller,
            |s| condition(s, "MetricsAvailable").is_some_and(|c| c["status"] == "True"),
        )
        .await;
    }
    // Into the long polls, then one message every 6.5 s: phases 0, 6.5, 13 and 19.5 s of
    // a 20 s cycle.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut reactions = Vec::new();
    for (i, url) in urls.iter().enumerate() {
        let sent = Instant::now();
        client
            .send_message()
            .queue_url(url)
            .message_body("job")
            .send()
            .await
            .expect("send_message");
        e2e::wait_replicas(&server, NS, &format!("w{i}"), 1, "a message", &controller).await;
        reactions.push(sent.elapsed());
        tokio::time::sleep_until((sent + Duration::from_millis(6500)).into()).await;
    }
    eprintln!("SQS from zero at four phases: {reactions:?}");
    for reaction in &reactions {
        assert!(
            *reaction <= Duration::from_secs(5),
            "scaled after {reaction:?} ({reactions:?}): a phase without a long poll waiting"
        );
    }
}
