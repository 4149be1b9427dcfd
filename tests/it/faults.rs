//! Fault injection against the real controller binary and the real providers:
//!
//! - brokers (private Redis, RabbitMQ and moto processes) killed and restarted under a
//!   running controller: replicas are held while the broker is down, the status says why,
//!   and the controller recovers by itself;
//! - a slow and flaky API server: slow scale/status writes, watches dropped again and again,
//!   stalled watch reconnects: the controller converges with exactly one PATCH per change;
//! - garbage brokers: TCP servers answering nonsense, truncated frames, floods or nothing,
//!   and HTTP endpoints with schema-breaking JSON: clear errors, no panic, no hang, no
//!   scale-down, and other WPAs keep scaling.

use crate::support;

use std::time::{Duration, Instant};

use support::apiserver::{ApiServerDouble, Fault, Gvr};
use support::broker_procs::{eventually, start_moto, start_rabbitmq, unique, wait_for_port};
use support::brokers::RedisServer;
use support::brokers_amqp;
use support::controller::{ControllerProcess, wpa_status};
use support::e2e::{
    WAIT, add_worker, assert_alive, assert_patches, condition_message, has_condition,
    never_decreases, redis_push, replicas, spec, start_server, wait_replicas, wait_status,
};
use support::garbage::{Behaviour, GarbageServer, bad_json_server};
use wpa::queue::{Credentials, ProviderOptions, QueueError, QueueMetrics, QueueUri};

const NS: &str = "faults";

/// Sum of every sample of a metric family (all label sets).
fn metric_sum(metrics: &str, name: &str) -> f64 {
    metrics
        .lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Waits until the controller has counted at least `n` failed polls.
async fn wait_poll_errors(controller: &ControllerProcess, n: f64) {
    let start = Instant::now();
    loop {
        let errors = metric_sum(&controller.metrics().await, "wpa_queue_poll_errors_total");
        if errors >= n {
            return;
        }
        assert!(
            start.elapsed() < WAIT,
            "only {errors} failed polls counted, wanted {n}; log:\n{}",
            controller.log_text()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// While the broker of `name` is down: the status says metrics are unavailable with the
/// broker's error, several polls fail (so the idle window and the scale-down delay, 2 s
/// each, pass) and still the replicas stay at `held`, without any scale PATCH.
async fn assert_held_while_down(
    server: &ApiServerDouble,
    controller: &mut ControllerProcess,
    name: &str,
    held: i64,
    error_fragment: &str,
) {
    let patches_before = server.scale_patches(NS, name);
    let status = wait_status(server, NS, name, "poll failure reported", controller, |s| {
        has_condition(s, "MetricsAvailable", "False", "PollFailed")
    })
    .await;
    let message = condition_message(&status, "MetricsAvailable");
    assert!(
        message.contains(&format!("holding {held} replicas")) && message.contains(error_fragment),
        "MetricsAvailable message should hold {held} and carry the broker error ({error_fragment}): {message}"
    );
    assert!(
        has_condition(&status, "Ready", "False", "MetricsUnavailable"),
        "{status}"
    );
    let errors_now = metric_sum(&controller.metrics().await, "wpa_queue_poll_errors_total");
    wait_poll_errors(controller, errors_now + 3.0).await;

    let status = wpa_status(server, NS, name);
    assert_eq!(replicas(server, &Gvr::DEPLOYMENTS, NS, name), Some(held));
    assert_eq!(
        server.scale_patches(NS, name),
        patches_before,
        "no scale PATCH while the broker is down"
    );
    let history = server.replica_history(&Gvr::DEPLOYMENTS, Some(NS), name);
    assert!(never_decreases(&history), "replicas went down: {history:?}");
    assert_eq!(status["lastDecisionReason"], "HoldNoMetrics", "{status}");
    assert_eq!(status["DesiredReplicas"], held, "{status}");
    assert_alive(controller);
}

async fn wait_metrics_fresh(server: &ApiServerDouble, name: &str, controller: &ControllerProcess) {
    wait_status(server, NS, name, "metrics fresh", controller, |s| {
        has_condition(s, "MetricsAvailable", "True", "MetricsFresh")
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn redis_killed_and_restarted_under_the_controller() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data_dir = dir.path().to_string_lossy().into_owned();
    // A dump file in `dir`, so the backlog survives the kill (SAVE below).
    let mut redis = RedisServer::start(&["--dir", &data_dir]);
    let server = start_server().await;
    let queue = unique("faults-redis");
    let uri = format!("redis://127.0.0.1:{}/0/{queue}", redis.port);
    add_worker(&server, NS, "worker", 0, spec(&uri, "worker", 0, 10, 10));
    let mut controller = ControllerProcess::start(&server, dir.path(), "redis-restart", &[]);

    redis_push(redis.port, 0, &queue, 30);
    wait_replicas(&server, NS, "worker", 3, "30 messages", &controller).await;
    wait_metrics_fresh(&server, "worker", &controller).await;

    // Without the backlog a restarted (empty) Redis would be a fair reason to scale down;
    // keep it so that any scale-down in this test is a bug.
    let mut conn = support::brokers::redis_conn(redis.port, 0);
    redis::cmd("SAVE").query::<()>(&mut conn).expect("SAVE");
    drop(conn);
    redis.stop();
    assert_held_while_down(
        &server,
        &mut controller,
        "worker",
        3,
        "cannot reach the broker",
    )
    .await;

    redis.restart();
    wait_metrics_fresh(&server, "worker", &controller).await;
    redis_push(redis.port, 0, &queue, 20);
    wait_replicas(
        &server,
        NS,
        "worker",
        5,
        "new backlog after restart",
        &controller,
    )
    .await;
    assert_patches(&server, NS, "worker", &[3, 5]).await;
    // CurrentReplicas is what the target said when the status was written: the status of
    // the reconcile that scaled may still say 3, the next one must say 5.
    let status = wait_status(&server, NS, "worker", "recovered", &controller, |s| {
        s["CurrentMessages"] == 50
            && s["CurrentReplicas"] == 5
            && has_condition(s, "Ready", "True", "Reconciled")
    })
    .await;
    assert_eq!(status["DesiredReplicas"], 5, "{status}");
    let log = controller.log_text();
    assert!(log.contains("queue readable again"), "{log}");
    assert_alive(&mut controller);
}

#[tokio::test(flavor = "multi_thread")]
async fn rabbitmq_killed_and_restarted_under_the_controller() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut node, port) = start_rabbitmq(dir.path());
    wait_for_port(port, Duration::from_secs(120)).await;
    let queue = unique("faults-rabbit");
    // Fills the durable queue up to `total` persistent messages (a kill may lose some).
    let fill_to = async |total: u32| {
        let (connection, channel) = eventually(
            Duration::from_secs(120),
            "the node to accept AMQP",
            async || {
                let uri = lapin::uri::AMQPUri {
                    authority: lapin::uri::AMQPAuthority {
                        port,
                        host: "127.0.0.1".into(),
                        ..Default::default()
                    },
                    ..Default::default()
                };
                let connection =
                    lapin::Connection::connect_uri(uri, lapin::ConnectionProperties::default())
                        .await
                        .ok()?;
                let channel = connection.create_channel().await.ok()?;
                Some((connection, channel))
            },
        )
        .await;
        let declared = channel
            .queue_declare(
                queue.as_str().into(),
                lapin::options::QueueDeclareOptions {
                    durable: true,
                    ..Default::default()
                },
                lapin::types::FieldTable::default(),
            )
            .await
            .expect("queue.declare");
        let missing = total.saturating_sub(declared.message_count());
        brokers_amqp::publish(&channel, &queue, missing as usize).await;
        let _ = connection.close(200, "done".into()).await;
    };
    fill_to(30).await;

    let server = start_server().await;
    let uri = format!("amqp://guest:guest@127.0.0.1:{port}/%2F/{queue}");
    add_worker(
        &server,
        NS,
        "consumer",
        0,
        spec(&uri, "consumer", 0, 10, 10),
    );
    let mut controller = ControllerProcess::start(&server, dir.path(), "rabbit-restart", &[]);
    wait_replicas(&server, NS, "consumer", 3, "30 messages", &controller).await;
    wait_metrics_fresh(&server, "consumer", &controller).await;

    node.kill();
    assert_held_while_down(
        &server,
        &mut controller,
        "consumer",
        3,
        "cannot reach the broker",
    )
    .await;

    node.restart();
    wait_for_port(port, Duration::from_secs(120)).await;
    assert_eq!(
        server.scale_patches(NS, "consumer"),
        vec![3],
        "nothing while the node was down"
    );
    // Whatever the kill left of the backlog, 50 messages now. (Before they are in, the
    // controller may see a smaller backlog; scaling on it is then right, since it is fresh.)
    fill_to(50).await;
    wait_replicas(
        &server,
        NS,
        "consumer",
        5,
        "new backlog after restart",
        &controller,
    )
    .await;
    wait_status(&server, NS, "consumer", "recovered", &controller, |s| {
        s["CurrentMessages"] == 50 && has_condition(s, "Ready", "True", "Reconciled")
    })
    .await;
    let last = server
        .wait_for(Duration::from_secs(5), |s| {
            (s.scale_patches(NS, "consumer").last() == Some(&5)).then_some(())
        })
        .await;
    assert!(
        last.is_some(),
        "last PATCH to 5: {:?}",
        server.scale_patches(NS, "consumer")
    );
    assert_alive(&mut controller);
}

/// The test's own SQS client for the private moto server.
fn sqs_client(port: u16) -> aws_sdk_sqs::Client {
    use aws_sdk_sqs::config::{BehaviorVersion, Credentials as AwsCredentials, Region};
    let config = aws_sdk_sqs::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .credentials_provider(AwsCredentials::new("test", "test", None, None, "test"))
        .endpoint_url(format!("http://127.0.0.1:{port}"))
        .build();
    aws_sdk_sqs::Client::from_conf(config)
}

/// Creates `name` (retrying while moto boots) and sends `n` messages; returns the URL.
async fn sqs_fill(client: &aws_sdk_sqs::Client, name: &str, n: usize) -> String {
    let url = eventually(WAIT, "moto to create the queue", async || {
        client
            .create_queue()
            .queue_name(name)
            .send()
            .await
            .ok()
            .and_then(|o| o.queue_url().map(String::from))
    })
    .await;
    for i in 0..n {
        client
            .send_message()
            .queue_url(&url)
            .message_body(format!("job {i}"))
            .send()
            .await
            .expect("send_message");
    }
    url
}

#[tokio::test(flavor = "multi_thread")]
async fn sqs_killed_and_restarted_under_the_controller() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut moto, port) = start_moto(dir.path());
    wait_for_port(port, WAIT).await;
    let client = sqs_client(port);
    let queue = unique("faults-sqs");
    let url = sqs_fill(&client, &queue, 15).await;
    let uri = format!("http://127.0.0.1:{port}/123456789012/{queue}?region=us-east-1");
    assert!(url.ends_with(&format!("/123456789012/{queue}")), "{url}");

    let server = start_server().await;
    add_worker(
        &server,
        NS,
        "sqs-worker",
        0,
        spec(&uri, "sqs-worker", 0, 10, 5),
    );
    // The AWS SDK's default chain: static keys from the environment, no instance metadata.
    let mut controller = ControllerProcess::start_with_env(
        &server,
        dir.path(),
        "sqs-restart",
        // The refill below creates the queue, then sends in batches: a poll in between sees
        // a real, briefly short queue. What is tested is holding while the broker is away,
        // so scale-downs stay out of the test's window.
        &[
            "--sqs-short-poll-interval=1",
            "--scale-down-delay-after-last-scale-activity=600",
        ],
        &[
            ("AWS_ACCESS_KEY_ID", "test"),
            ("AWS_SECRET_ACCESS_KEY", "test"),
            ("AWS_EC2_METADATA_DISABLED", "true"),
        ],
    );
    wait_replicas(&server, NS, "sqs-worker", 3, "15 messages", &controller).await;
    wait_metrics_fresh(&server, "sqs-worker", &controller).await;

    moto.kill();
    assert_held_while_down(
        &server,
        &mut controller,
        "sqs-worker",
        3,
        "cannot reach the broker",
    )
    .await;

    // moto keeps queues in memory: after the restart the queue is missing until created,
    // which must not read as an empty queue either.
    moto.restart();
    wait_for_port(port, WAIT).await;
    let status = wait_status(
        &server,
        NS,
        "sqs-worker",
        "queue missing",
        &controller,
        |s| condition_message(s, "MetricsAvailable").contains("does not exist"),
    )
    .await;
    assert!(
        has_condition(&status, "MetricsAvailable", "False", "PollFailed"),
        "{status}"
    );
    assert_eq!(
        replicas(&server, &Gvr::DEPLOYMENTS, NS, "sqs-worker"),
        Some(3)
    );
    sqs_fill(&client, &queue, 25).await;
    wait_replicas(
        &server,
        NS,
        "sqs-worker",
        5,
        "new backlog after restart",
        &controller,
    )
    .await;
    wait_metrics_fresh(&server, "sqs-worker", &controller).await;
    // The refill sends in batches of 10: a poll between two batches may see 20 of the 25
    // and scale to 4 on the way (a CI run did). Nothing below 3, never down, ends at 5.
    let patches = server.scale_patches(NS, "sqs-worker");
    assert!(
        matches!(patches.as_slice(), [3, 5] | [3, 4, 5]),
        "scale PATCHes of sqs-worker: {patches:?}"
    );
    let history = server.replica_history(&Gvr::DEPLOYMENTS, Some(NS), "sqs-worker");
    assert!(never_decreases(&history), "{history:?}");
    assert_alive(&mut controller);
}

/// A private Redis and an API double holding Deployment `worker` at 0 replicas with its WPA
/// (min 0, `max`, 10 messages per worker) on a fresh list of that Redis.
async fn redis_worker(
    prefix: &str,
    max: i32,
) -> (tempfile::TempDir, RedisServer, ApiServerDouble, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let redis = RedisServer::start(&[]);
    let server = start_server().await;
    let queue = unique(prefix);
    let uri = format!("redis://127.0.0.1:{}/0/{queue}", redis.port);
    add_worker(&server, NS, "worker", 0, spec(&uri, "worker", 0, max, 10));
    (dir, redis, server, queue)
}

#[tokio::test(flavor = "multi_thread")]
async fn slow_scale_and_status_writes_give_exactly_one_patch_per_change() {
    let (dir, redis, server, queue) = redis_worker("faults-slow", 10).await;
    // Every scale write takes 1.5 s, every status write 1 s: reconciles overlap with new
    // queue wakeups and with the watch events of their own writes.
    server.inject(
        Fault::latency(Duration::from_millis(1500))
            .method("PATCH")
            .path_contains("/scale"),
    );
    server.inject(
        Fault::latency(Duration::from_millis(1000))
            .method("PATCH")
            .path_contains("/status"),
    );
    let mut controller = ControllerProcess::start(&server, dir.path(), "slow", &[]);

    redis_push(redis.port, 0, &queue, 25);
    wait_replicas(&server, NS, "worker", 3, "25 messages", &controller).await;
    // More backlog while the status write of the first scale is still in flight.
    redis_push(redis.port, 0, &queue, 20);
    wait_replicas(&server, NS, "worker", 5, "45 messages", &controller).await;
    wait_status(
        &server,
        NS,
        "worker",
        "status caught up",
        &controller,
        |s| s["CurrentReplicas"] == 5 && s["CurrentMessages"] == 45,
    )
    .await;
    // Drained: down to zero once idle (2 s window, 2 s delay), still slowly.
    let mut conn = support::brokers::redis_conn(redis.port, 0);
    redis::cmd("DEL")
        .arg(&queue)
        .query::<()>(&mut conn)
        .expect("DEL");
    wait_replicas(&server, NS, "worker", 0, "drained", &controller).await;
    wait_status(&server, NS, "worker", "status at zero", &controller, |s| {
        s["CurrentReplicas"] == 0 && s["DesiredReplicas"] == 0
    })
    .await;
    assert_patches(&server, NS, "worker", &[3, 5, 0]).await;
    let slow_writes = server
        .requests("PATCH", "/scale")
        .iter()
        .filter(|r| r.fault.is_some())
        .count();
    assert_eq!(slow_writes, 3, "every scale write was slowed down");
    assert_alive(&mut controller);
}

#[tokio::test(flavor = "multi_thread")]
async fn watches_dropped_again_and_again_converge_without_duplicate_or_lost_patches() {
    let (dir, redis, server, queue) = redis_worker("faults-watch", 20).await;
    // A short resync: reconciles keep coming while the watches are broken.
    let mut controller =
        ControllerProcess::start(&server, dir.path(), "watches", &["--resync-period=2"]);

    redis_push(redis.port, 0, &queue, 25);
    wait_replicas(&server, NS, "worker", 3, "25 messages", &controller).await;

    // Five rounds: every watch ends, the next resumes get 410 Gone (relist), and for a
    // moment every watch and list request fails with 503; meanwhile the backlog grows.
    for round in 0..5 {
        server.inject(
            Fault::status(503)
                .method("GET")
                .path_contains("/deployments")
                .for_duration(Duration::from_millis(700)),
        );
        server.inject(
            Fault::status(503)
                .query_contains("watch=true")
                .for_duration(Duration::from_millis(700)),
        );
        server.fail_next_watch_resumes(2);
        server.drop_watches();
        redis_push(redis.port, 0, &queue, 10);
        let want = 4 + round;
        wait_replicas(&server, NS, "worker", want, "growing backlog", &controller).await;
    }

    // A stalled reconnect: the Deployment watch stays away for 15 s after being dropped,
    // longer than any "trust my own write" shortcut, while reconciles keep running.
    server.inject(
        Fault::latency(Duration::from_secs(15))
            .path_contains("/deployments")
            .query_contains("watch=true")
            .times(3),
    );
    server.drop_watches();
    redis_push(redis.port, 0, &queue, 10);
    wait_replicas(&server, NS, "worker", 9, "during the stall", &controller).await;
    // Outlive the stall: the watch comes back and the controller is at rest.
    let settled = server
        .wait_for(Duration::from_secs(40), |s| {
            let recorded = s.requests("GET", "/deployments");
            let resumed = recorded
                .iter()
                .filter(|r| {
                    r.is_watch()
                        && r.fault
                            .as_deref()
                            .is_some_and(|f| f.starts_with("injected latency"))
                })
                .count();
            (resumed >= 1).then_some(())
        })
        .await;
    assert!(settled.is_some(), "the stalled watch never came back");
    wait_status(
        &server,
        NS,
        "worker",
        "status caught up",
        &controller,
        |s| s["CurrentReplicas"] == 9 && s["CurrentMessages"] == 85,
    )
    .await;
    // A few resyncs with the fresh cache.
    let resyncs_from = Instant::now();
    while resyncs_from.elapsed() < Duration::from_secs(5) {
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(
        server.scale_patches(NS, "worker"),
        vec![3, 4, 5, 6, 7, 8, 9],
        "one PATCH per change: none repeated, none lost"
    );
    assert_alive(&mut controller);
}

// ----- garbage brokers -----------------------------------------------------------------

fn garbage_options() -> ProviderOptions {
    ProviderOptions {
        request_timeout: Duration::from_secs(1),
        ..ProviderOptions::default()
    }
}

/// Connects and polls twice (a provider may only fail on its second look), bounded so a
/// hang is a test failure, not a stuck test.
async fn poll_garbage(uri: &str) -> Vec<Result<QueueMetrics, QueueError>> {
    let parsed = QueueUri::parse(uri).expect("valid URI");
    let options = garbage_options();
    let attempt = async {
        let mut results = Vec::new();
        match parsed.connect(&Credentials::default(), &options).await {
            Err(e) => results.push(Err(e)),
            Ok(mut provider) => {
                for _ in 0..2 {
                    results.push(provider.poll().await);
                }
            }
        }
        results
    };
    match tokio::time::timeout(Duration::from_secs(30), attempt).await {
        Ok(results) => results,
        Err(_) => panic!("{uri}: the provider hung on a garbage server"),
    }
}

/// The error of every attempt, checked to be a clear error about this endpoint.
async fn garbage_errors(uri: &str, port: u16) -> Vec<String> {
    let started = Instant::now();
    let results = poll_garbage(uri).await;
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(15),
        "{uri}: {took:?} for a bounded failure"
    );
    results
        .into_iter()
        .map(|r| match r {
            Ok(m) => panic!("{uri}: garbage read as metrics {m:?}"),
            Err(e) => {
                let text = e.to_string();
                assert!(
                    matches!(
                        e,
                        QueueError::BadResponse { .. } | QueueError::Unavailable { .. }
                    ),
                    "{uri}: {e:?}"
                );
                assert!(
                    text.contains(&port.to_string()),
                    "{uri}: the error does not name the endpoint: {text}"
                );
                text
            }
        })
        .collect()
}

const HTTP_NONSENSE: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello\r\n";

/// One broker protocol as the garbage servers see it.
struct Protocol {
    scheme: &'static str,
    uri: fn(u16) -> String,
    /// The start of a valid-looking answer, then the connection ends.
    truncated: &'static [u8],
    /// A frame header announcing an enormous length.
    giant: &'static [u8],
    /// Words of the error for another protocol's bytes.
    nonsense_words: &'static str,
}

#[tokio::test(flavor = "multi_thread")]
async fn garbage_tcp_servers_are_clear_errors_for_redis_amqp_and_beanstalk() {
    let protocols = [
        Protocol {
            scheme: "redis",
            uri: |p| format!("redis://127.0.0.1:{p}/0/jobs"),
            // An array announcing two replies, then the connection ends.
            truncated: b"*2\r\n:1\r\n",
            // A 2^31-element array, and then a 2 GiB string.
            giant: b"*2147483647\r\n$2147483647\r\n",
            nonsense_words: "Parse error",
        },
        Protocol {
            scheme: "amqp",
            uri: |p| format!("amqp://guest:guest@127.0.0.1:{p}/%2F/jobs"),
            // A method frame header promising 256 bytes, then the connection ends.
            truncated: b"\x01\x00\x00\x00\x00\x01\x00\x00\x0a",
            // A frame of 4 GiB.
            giant: b"\x01\x00\x00\xff\xff\xff\xff\x00\x0a",
            nonsense_words: "not an AMQP 0-9-1 answer",
        },
        Protocol {
            scheme: "beanstalk",
            uri: |p| format!("beanstalk://127.0.0.1:{p}/jobs"),
            truncated: b"OK 120\r\n---\ncurrent-jobs-ready: 1",
            giant: b"OK 18446744073709551615\r\n",
            nonsense_words: "unexpected response \"HTTP/1.1 200 OK\"",
        },
    ];
    for Protocol {
        scheme,
        uri: uri_for,
        truncated,
        giant,
        nonsense_words,
    } in protocols
    {
        let behaviours = [
            (
                "nonsense, close",
                Behaviour::ReplyAndClose(HTTP_NONSENSE.to_vec()),
            ),
            (
                "nonsense, keep",
                Behaviour::ReplyAndKeep(HTTP_NONSENSE.to_vec()),
            ),
            ("truncated", Behaviour::ReplyAndClose(truncated.to_vec())),
            (
                "flood",
                Behaviour::Flood {
                    prefix: truncated.to_vec(),
                    filler: vec![b'x'; 512],
                },
            ),
            (
                "giant length",
                Behaviour::Flood {
                    prefix: giant.to_vec(),
                    filler: vec![b'x'; 512],
                },
            ),
            ("silent", Behaviour::Silent),
        ];
        for (what, behaviour) in behaviours {
            let garbage = GarbageServer::start(behaviour).await;
            let uri = uri_for(garbage.port);
            let errors = garbage_errors(&uri, garbage.port).await;
            assert!(garbage.accepted() > 0, "{scheme} {what}: never connected");
            for error in &errors {
                match what {
                    // Bytes of another protocol: a bad answer, named as such.
                    "nonsense, close" | "nonsense, keep" => assert!(
                        error.contains("answered something unexpected")
                            && error.contains(nonsense_words),
                        "{scheme} {what}: {error}"
                    ),
                    "silent" => assert!(
                        error.starts_with("cannot reach the broker")
                            && (error.contains("within") || error.contains("timed out")),
                        "{scheme} {what}: {error}"
                    ),
                    // Truncated frames and floods end as a bad answer or a broken
                    // connection, depending on where the client's parser gives up.
                    _ => assert!(
                        error.contains("answered something unexpected")
                            || error.starts_with("cannot reach the broker"),
                        "{scheme} {what}: {error}"
                    ),
                }
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn http_endpoint_with_schema_breaking_json_is_a_clear_bad_response() {
    let addr = bad_json_server().await;
    let cases = [
        ("/not-json", "the body is not JSON"),
        ("/truncated-json", "the body is not JSON"),
        ("/negative", "`visible` is negative (-7)"),
        ("/negative-in-flight", "`in_flight` is negative (-1)"),
        ("/too-large", "`visible` is too large"),
        ("/exponent", "`visible` is too large"),
        ("/fraction", "`visible` is not a whole number (2.5)"),
        (
            "/string",
            "`visible` must be a non-negative integer or null, not a string",
        ),
        (
            "/bool",
            "`visible` must be a non-negative integer or null, not a boolean",
        ),
        ("/array", "the body is not a JSON object"),
        ("/null", "the body is not a JSON object"),
        (
            "/idle-string",
            "`idle` must be a boolean or null, not a string",
        ),
    ];
    for (path, expected) in cases {
        let uri = format!("http+json://{addr}{path}");
        for result in poll_garbage(&uri).await {
            match result {
                Err(QueueError::BadResponse { queue, detail }) => {
                    assert!(detail.contains(expected), "{path}: {detail}");
                    assert!(queue.contains(path), "{path}: the error names {queue}");
                }
                other => panic!("{path}: expected a bad response, got {other:?}"),
            }
        }
    }
    // The largest count JSON can carry is valid (the scaler clamps it to maxReplicas).
    for result in poll_garbage(&format!("http+json://{addr}/max")).await {
        assert_eq!(result.expect("u64::MAX is a count").visible, u64::MAX);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn garbage_brokers_under_the_controller_hold_replicas_while_others_scale() {
    let dir = tempfile::tempdir().expect("tempdir");
    let redis = RedisServer::start(&[]);
    let nonsense = || Behaviour::ReplyAndKeep(HTTP_NONSENSE.to_vec());
    let garbage_redis = GarbageServer::start(nonsense()).await;
    let garbage_amqp = GarbageServer::start(nonsense()).await;
    let garbage_beanstalk = GarbageServer::start(Behaviour::ReplyAndClose(
        b"OK 120\r\n---\ncurrent-jobs-ready: 1".to_vec(),
    ))
    .await;
    let http = bad_json_server().await;
    let server = start_server().await;
    // (WPA, queue URI, words the MetricsAvailable message must carry)
    let broken = [
        (
            "garbage-redis",
            format!("redis://127.0.0.1:{}/0/jobs", garbage_redis.port),
            "Parse error",
        ),
        (
            "garbage-amqp",
            format!("amqp://127.0.0.1:{}/%2F/jobs", garbage_amqp.port),
            "not an AMQP 0-9-1 answer",
        ),
        (
            "garbage-beanstalk",
            format!("beanstalk://127.0.0.1:{}/jobs", garbage_beanstalk.port),
            "truncated body",
        ),
        (
            "negative-json",
            format!("http+json://{http}/negative"),
            "`visible` is negative (-7)",
        ),
        (
            "wrong-type-json",
            format!("http+json://{http}/string"),
            "`visible` must be a non-negative integer",
        ),
    ];
    // Three workers each: any scale-down would show.
    for (name, uri, _) in &broken {
        add_worker(&server, NS, name, 3, spec(uri, name, 0, 10, 10));
    }
    let huge = format!("http+json://{http}/max");
    add_worker(&server, NS, "huge", 0, spec(&huge, "huge", 0, 4, 10));
    let queue = unique("faults-good");
    let good = format!("redis://127.0.0.1:{}/0/{queue}", redis.port);
    add_worker(&server, NS, "good", 0, spec(&good, "good", 0, 10, 10));
    let mut controller = ControllerProcess::start(
        &server,
        dir.path(),
        "garbage",
        &["--beanstalk-short-poll-interval=1"],
    );

    for (name, _, words) in &broken {
        let status = wait_status(&server, NS, name, "garbage reported", &controller, |s| {
            has_condition(s, "MetricsAvailable", "False", "PollFailed")
        })
        .await;
        let message = condition_message(&status, "MetricsAvailable");
        assert!(
            message.contains("holding 3 replicas") && message.contains(words),
            "{name}: {message}"
        );
        assert!(
            has_condition(&status, "Ready", "False", "MetricsUnavailable"),
            "{name}: {status}"
        );
    }
    // An enormous but valid count is clamped to maxReplicas.
    wait_replicas(&server, NS, "huge", 4, "u64::MAX messages", &controller).await;
    wait_status(&server, NS, "huge", "saturated count", &controller, |s| {
        s["CurrentMessages"] == i64::MAX && s["DesiredReplicas"] == 4
    })
    .await;

    // The garbage keeps failing; the good WPA scales all the same.
    let errors = metric_sum(&controller.metrics().await, "wpa_queue_poll_errors_total");
    redis_push(redis.port, 0, &queue, 25);
    wait_replicas(&server, NS, "good", 3, "the healthy WPA", &controller).await;
    wait_poll_errors(&controller, errors + 10.0).await;
    for (name, _, _) in &broken {
        assert_eq!(
            replicas(&server, &Gvr::DEPLOYMENTS, NS, name),
            Some(3),
            "{name}"
        );
        assert!(server.scale_patches(NS, name).is_empty(), "{name}");
        let status = wpa_status(&server, NS, name);
        assert_eq!(
            status["lastDecisionReason"], "HoldNoMetrics",
            "{name}: {status}"
        );
    }
    assert!(garbage_redis.accepted() > 0 && garbage_amqp.accepted() > 0);
    assert!(garbage_beanstalk.accepted() > 1, "beanstalk retried");
    assert_patches(&server, NS, "good", &[3]).await;
    assert_patches(&server, NS, "huge", &[4]).await;
    assert_alive(&mut controller);
}
