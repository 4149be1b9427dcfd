//! RabbitMQ provider against the shared RabbitMQ (127.0.0.1:5672, management on
//! 127.0.0.1:15672, guest/guest; see hack/services.sh), a private RabbitMQ node for the
//! restart test, and a fake management API for answers a real broker rarely gives.

use crate::support;

use std::time::Duration;

use axum::Router;
use axum::http::StatusCode;
use axum::routing::get;
use support::broker_procs::{eventually, free_port, start_rabbitmq, unique, wait_for_port};
use support::brokers_amqp::{
    AMQP_PORT, MANAGEMENT, amqp_uri, celery_produce, create_vhost, declare, delete, delete_vhost,
    hold_deliveries, idle_consumer, open, publish,
};
use wpa::queue::rabbitmq::RabbitmqProvider;
use wpa::queue::{
    ConsumerReport, Credentials, ProviderOptions, QueueError, QueueMetrics, QueueProvider,
};

const WAIT: Duration = Duration::from_secs(45);
/// How long a private RabbitMQ node may take to boot (as `wait_for_port`).
const BOOT_WAIT: Duration = Duration::from_secs(90);

fn opts() -> ProviderOptions {
    ProviderOptions {
        request_timeout: Duration::from_secs(5),
        ..ProviderOptions::default()
    }
}

fn no_creds() -> Credentials {
    Credentials::default()
}

/// Polls until `accept` holds (management statistics lag by a sample or two).
async fn poll_until(
    provider: &mut RabbitmqProvider,
    what: &str,
    accept: impl Fn(&QueueMetrics) -> bool,
) -> QueueMetrics {
    eventually(WAIT, what, async || {
        let m = provider.poll().await.unwrap();
        accept(&m).then_some(m)
    })
    .await
}

#[tokio::test]
async fn ready_and_consumers_via_amqp() {
    let queue = unique("wpa-amqp");
    let (_conn, channel) = open(AMQP_PORT, "/").await;
    declare(&channel, &queue, false).await;
    publish(&channel, &queue, 5).await;

    let mut provider = RabbitmqProvider::connect(
        &amqp_uri(AMQP_PORT, "/", &queue, None),
        &no_creds(),
        &opts(),
    )
    .await
    .unwrap();
    let m = provider.poll().await.unwrap();
    assert_eq!(m.visible, 5);
    assert_eq!(m.consumers, Some(0));
    // AMQP cannot see unacknowledged messages: unknown, not zero.
    assert_eq!(
        (m.in_flight, m.delayed, m.sent_per_minute, m.idle),
        (None, None, None, None)
    );

    let _held = hold_deliveries(AMQP_PORT, "/", &queue, 2).await;
    let m = provider.poll().await.unwrap();
    assert_eq!((m.visible, m.in_flight, m.consumers), (3, None, Some(1)));
    // Per-consumer reports need the management API.
    assert_eq!(m.workers, None);
    delete(&channel, &queue).await;
}

#[tokio::test]
async fn celery_tasks_and_unacked_via_management() {
    let queue = unique("wpa-celery");
    celery_produce(&queue, 7, None, None);

    let uri = amqp_uri(AMQP_PORT, "/", &queue, Some(MANAGEMENT));
    let mut provider = RabbitmqProvider::connect(&uri, &no_creds(), &opts())
        .await
        .unwrap();
    // Celery publishes without confirms and statistics are sampled: wait until the
    // tasks and the first sample show up, then require the exact count. (The publish
    // rate is not waited for: the broker reports `message_stats` only while it keeps
    // rate samples for the queue, which a loaded machine's sampling can miss; its parsing
    // is unit-tested in the provider.)
    let m = poll_until(
        &mut provider,
        "7 ready tasks and a statistics sample",
        |m| m.in_flight.is_some() && m.visible >= 7,
    )
    .await;
    assert_eq!((m.visible, m.in_flight, m.consumers), (7, Some(0), Some(0)));

    let _held = hold_deliveries(AMQP_PORT, "/", &queue, 3).await;
    let m = poll_until(&mut provider, "3 unacknowledged deliveries", |m| {
        m.in_flight == Some(3)
    })
    .await;
    assert_eq!((m.visible, m.consumers), (4, Some(1)));

    let (_conn, channel) = open(AMQP_PORT, "/").await;
    delete(&channel, &queue).await;
}

#[tokio::test]
async fn celery_priority_queue_counts_exactly() {
    let queue = unique("wpa-celery-prio");
    celery_produce(&queue, 4, Some(5), Some(10));
    celery_produce(&queue, 2, Some(9), Some(10));

    let mut amqp = RabbitmqProvider::connect(
        &amqp_uri(AMQP_PORT, "/", &queue, None),
        &no_creds(),
        &opts(),
    )
    .await
    .unwrap();
    let m = poll_until(&mut amqp, "6 routed tasks", |m| m.visible >= 6).await;
    assert_eq!(m.visible, 6);
    let uri = amqp_uri(AMQP_PORT, "/", &queue, Some(MANAGEMENT));
    let mut mgmt = RabbitmqProvider::connect(&uri, &no_creds(), &opts())
        .await
        .unwrap();
    let m = poll_until(&mut mgmt, "sampled counters", |m| {
        m.in_flight.is_some() && m.visible >= 6
    })
    .await;
    assert_eq!(m.visible, 6);

    let (_conn, channel) = open(AMQP_PORT, "/").await;
    delete(&channel, &queue).await;
}

/// A queue nobody has declared yet (a new install at zero workers) is an empty queue, not
/// an error, over AMQP alone and with the management API; the first publish after someone
/// declares it is seen at the next poll.
#[tokio::test]
async fn a_queue_nobody_declared_reads_as_empty_then_recovers() {
    let queue = unique("wpa-missing");
    let mut amqp = RabbitmqProvider::connect(
        &amqp_uri(AMQP_PORT, "/", &queue, None),
        &no_creds(),
        &opts(),
    )
    .await
    .unwrap();
    let mut mgmt = RabbitmqProvider::connect(
        &amqp_uri(AMQP_PORT, "/", &queue, Some(MANAGEMENT)),
        &no_creds(),
        &opts(),
    )
    .await
    .unwrap();
    let label = format!("amqp://127.0.0.1:{AMQP_PORT}/%2F/{queue}");
    for provider in [&mut amqp, &mut mgmt] {
        for _ in 0..2 {
            // The 404 closes the channel; the next poll opens a new one.
            let m = provider.poll().await.unwrap();
            assert_eq!(
                (m.visible, m.in_flight, m.consumers, m.idle),
                (0, Some(0), Some(0), Some(true)),
                "{m:?}"
            );
            assert_eq!(m.missing, vec![label.clone()]);
            assert_eq!(m.workers, None);
        }
    }

    let (_conn, channel) = open(AMQP_PORT, "/").await;
    declare(&channel, &queue, false).await;
    publish(&channel, &queue, 1).await;
    let m = amqp.poll().await.unwrap();
    assert_eq!((m.visible, m.missing.len()), (1, 0));
    // The ready count comes from AMQP with the management API too.
    let m = mgmt.poll().await.unwrap();
    assert_eq!((m.visible, m.missing.len()), (1, 0));
    delete(&channel, &queue).await;
}

/// A vhost that does not exist is not a missing queue: it stays an error.
#[tokio::test]
async fn a_vhost_that_does_not_exist_stays_an_error() {
    let vhost = unique("wpa-no-such-vhost");
    let uri = amqp_uri(AMQP_PORT, &vhost, "q", None);
    let err = match RabbitmqProvider::connect(&uri, &no_creds(), &opts()).await {
        Ok(mut provider) => provider.poll().await.expect_err("no such vhost"),
        Err(err) => err,
    };
    let refused = |err: &QueueError| matches!(err, QueueError::Denied { detail, .. } if detail.contains("not found"));
    assert!(refused(&err), "{err:?}");
    assert!(
        !err.is_transient(),
        "asked again at the normal interval: {err:?}"
    );
    // With the management API (which answers 404) the vhost is refused the same way.
    let mut mgmt = RabbitmqProvider::connect(
        &amqp_uri(AMQP_PORT, &vhost, "q", Some(MANAGEMENT)),
        &no_creds(),
        &opts(),
    )
    .await
    .unwrap();
    let err = mgmt.poll().await.expect_err("no such vhost");
    assert!(refused(&err), "{err:?}");
}

#[tokio::test]
async fn queue_in_another_vhost() {
    // A slash inside the name exercises the percent-encoding of the vhost segment.
    let vhost = unique("wpa/vhost");
    create_vhost(&vhost).await;
    let queue = unique("wpa-vhost-q");
    let (_conn, channel) = open(AMQP_PORT, &vhost).await;
    declare(&channel, &queue, false).await;
    publish(&channel, &queue, 3).await;

    let mut amqp = RabbitmqProvider::connect(
        &amqp_uri(AMQP_PORT, &vhost, &queue, None),
        &no_creds(),
        &opts(),
    )
    .await
    .unwrap();
    assert_eq!(amqp.poll().await.unwrap().visible, 3);
    let uri = amqp_uri(AMQP_PORT, &vhost, &queue, Some(MANAGEMENT));
    let mut mgmt = RabbitmqProvider::connect(&uri, &no_creds(), &opts())
        .await
        .unwrap();
    let m = poll_until(&mut mgmt, "sampled counters in the vhost", |m| {
        m.in_flight.is_some() && m.visible >= 3
    })
    .await;
    assert_eq!(m.visible, 3);

    // The same queue name in "/" does not exist.
    let mut root = RabbitmqProvider::connect(
        &amqp_uri(AMQP_PORT, "/", &queue, None),
        &no_creds(),
        &opts(),
    )
    .await
    .unwrap();
    assert_eq!(root.poll().await.unwrap().missing.len(), 1);
    delete_vhost(&vhost).await;
}

#[tokio::test]
async fn wrong_password_is_denied_and_secret_credentials_win() {
    let queue = unique("wpa-auth");
    let (_conn, channel) = open(AMQP_PORT, "/").await;
    declare(&channel, &queue, false).await;

    let mut bad = amqp_uri(AMQP_PORT, "/", &queue, None);
    bad.password = Some("not-the-password".into());
    let err = RabbitmqProvider::connect(&bad, &no_creds(), &opts())
        .await
        .err()
        .unwrap();
    assert!(matches!(err, QueueError::Denied { .. }), "{err:?}");
    assert!(
        !format!("{err} {err:?}").contains("not-the-password"),
        "password leaked: {err:?}"
    );

    bad.management = Some(MANAGEMENT.into());
    let mut mgmt = RabbitmqProvider::connect(&bad, &no_creds(), &opts())
        .await
        .unwrap();
    let err = mgmt.poll().await.unwrap_err();
    assert!(matches!(err, QueueError::Denied { .. }), "{err:?}");
    assert!(
        !format!("{err} {err:?}").contains("not-the-password"),
        "password leaked: {err:?}"
    );

    // Credentials from a Secret take precedence over the URI's userinfo.
    let secret = Credentials {
        username: Some("guest".into()),
        password: Some("guest".into()),
        authorization: None,
    };
    let mut mgmt = RabbitmqProvider::connect(&bad, &secret, &opts())
        .await
        .unwrap();
    assert!(mgmt.poll().await.is_ok());
    bad.management = None;
    let mut amqp = RabbitmqProvider::connect(&bad, &secret, &opts())
        .await
        .unwrap();
    assert_eq!(amqp.poll().await.unwrap().visible, 0);
    delete(&channel, &queue).await;
}

/// Serves `body` with `status` for every management request.
async fn fake_management(status: StatusCode, body: &'static str) -> String {
    let app = Router::new().fallback(get(move || async move { (status, body) }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    format!("http://{addr}")
}

#[tokio::test]
async fn unsampled_counters_fall_back_to_amqp() {
    let queue = unique("wpa-unsampled");
    let (_conn, channel) = open(AMQP_PORT, "/").await;
    declare(&channel, &queue, false).await;
    publish(&channel, &queue, 2).await;

    // What the management API answers for a queue before its first statistics sample.
    let base = fake_management(
        StatusCode::OK,
        r#"{"name":"q","vhost":"/","arguments":{},"type":"classic"}"#,
    )
    .await;
    let uri = amqp_uri(AMQP_PORT, "/", &queue, Some(&base));
    let mut provider = RabbitmqProvider::connect(&uri, &no_creds(), &opts())
        .await
        .unwrap();
    let m = provider.poll().await.unwrap();
    assert_eq!(
        (m.visible, m.in_flight, m.consumers, m.sent_per_minute),
        (2, None, Some(0), None)
    );
    delete(&channel, &queue).await;
}

#[tokio::test]
async fn odd_management_answers_are_errors_not_panics() {
    // AMQP still answers, so each odd management answer leaves partial metrics that name
    // what went wrong.
    let queue = unique("wpa-odd-mgmt");
    let (_conn, channel) = open(AMQP_PORT, "/").await;
    declare(&channel, &queue, false).await;
    publish(&channel, &queue, 1).await;
    let cases: [(StatusCode, &'static str, &'static str); 5] = [
        (StatusCode::OK, r#"{"messages_ready":"lots"}"#, "unexpected"),
        (StatusCode::OK, "<html>proxy login</html>", "unexpected"),
        (StatusCode::OK, r#"{"messages_ready":-3}"#, "unexpected"),
        (StatusCode::INTERNAL_SERVER_ERROR, "boom", "cannot reach"),
        (StatusCode::UNAUTHORIZED, "", "denied"),
    ];
    for (status, body, expected) in cases {
        let base = fake_management(status, body).await;
        let uri = amqp_uri(AMQP_PORT, "/", &queue, Some(&base));
        let mut provider = RabbitmqProvider::connect(&uri, &no_creds(), &opts())
            .await
            .unwrap();
        let m = provider.poll().await.unwrap();
        assert_eq!((m.visible, m.in_flight), (1, None), "{status} {body:?}");
        let partial = m.partial.unwrap_or_default();
        assert!(
            partial.starts_with("management API unavailable") && partial.contains(expected),
            "{status} {body:?} -> {partial}"
        );
    }
    // Without AMQP, an odd management answer leaves nothing to go on: an error.
    let base = fake_management(StatusCode::OK, r#"{"messages_ready":"lots"}"#).await;
    let uri = amqp_uri(free_port(), "/", &queue, Some(&base));
    let mut provider = RabbitmqProvider::connect(&uri, &no_creds(), &opts())
        .await
        .unwrap();
    let err = provider.poll().await.unwrap_err();
    assert!(matches!(err, QueueError::Unavailable { .. }), "{err:?}");

    // Odd but valid JSON: extra fields, rate absent.
    let base = fake_management(
        StatusCode::OK,
        r#"{"messages_ready":1,"messages_unacknowledged":0,"consumers":2,"message_stats":{"publish":1},"x":[null]}"#,
    )
    .await;
    let uri = amqp_uri(AMQP_PORT, "/", &queue, Some(&base));
    let mut provider = RabbitmqProvider::connect(&uri, &no_creds(), &opts())
        .await
        .unwrap();
    let m = provider.poll().await.unwrap();
    // Ready and consumers come from AMQP (1 message, nobody consuming), the rest from the
    // management object; without `consumer_details` there are no per-consumer reports.
    assert_eq!(
        (
            m.visible,
            m.in_flight,
            m.consumers,
            m.sent_per_minute,
            m.workers
        ),
        (1, Some(0), Some(0), None, None)
    );
    assert_eq!(
        m.partial.as_deref(),
        Some(
            "per-consumer reports unavailable: the management API's queue object has no \
             consumer_details"
        )
    );
    delete(&channel, &queue).await;
}

fn consumer(busy: bool) -> ConsumerReport {
    ConsumerReport {
        pod: None,
        ip: Some("127.0.0.1".into()),
        busy,
        channel: None,
    }
}

/// Whether the reports are exactly these, in any order.
/// (Each report names its channel; which one is the broker's choice.)
fn reports_are(m: &QueueMetrics, expected: &[ConsumerReport]) -> bool {
    let mut got = m.workers.clone().unwrap_or_default();
    if got.iter().any(|r| r.channel.is_none()) {
        return false;
    }
    for report in &mut got {
        report.channel = None;
    }
    let mut expected = expected.to_vec();
    got.sort_by_key(|r| r.busy);
    expected.sort_by_key(|r| r.busy);
    m.workers.is_some() && got == expected
}

#[tokio::test]
async fn consumers_are_reported_by_peer_ip_busy_or_idle() {
    let queue = unique("wpa-consumers");
    let (_conn, channel) = open(AMQP_PORT, "/").await;
    declare(&channel, &queue, false).await;
    publish(&channel, &queue, 1).await;
    let uri = amqp_uri(AMQP_PORT, "/", &queue, Some(MANAGEMENT));
    let mut provider = RabbitmqProvider::connect(&uri, &no_creds(), &opts())
        .await
        .unwrap();
    // The provider sees the message ready before a consumer takes it.
    assert_eq!(provider.poll().await.unwrap().visible, 1);

    let busy = hold_deliveries(AMQP_PORT, "/", &queue, 1).await;
    let idle = idle_consumer(AMQP_PORT, "/", &queue).await;
    // Until the statistics catch up (listing and channel samples lag by about one
    // `collect_statistics_interval`), the holder must never look idle: while any consumer
    // is listed, one is busy.
    eventually(
        WAIT,
        "one busy and one idle consumer on 127.0.0.1, counted as 1 in flight of 2 consumers",
        async || {
            let m = provider.poll().await.unwrap();
            let listed = m.workers.clone().unwrap_or_default();
            assert!(
                listed.is_empty() || listed.iter().any(|r| r.busy),
                "a consumer holding a delivery looked idle: {m:?}"
            );
            // The consumer listing and the queue's message counters are sampled apart: a
            // listing can arrive before the queue's first counters sample (then `partial`
            // says the unacknowledged count is unknown). Wait for both.
            (reports_are(&m, &[consumer(true), consumer(false)])
                && m.partial.is_none()
                && (m.visible, m.in_flight, m.consumers) == (0, Some(1), Some(2)))
                .then_some(())
        },
    )
    .await;

    // Which one is busy: without the idle consumer, the one left holds the delivery. (AMQP
    // and the listing see a consumer go at slightly different moments: wait for both.)
    idle.close().await;
    poll_until(&mut provider, "the idle consumer gone", |m| {
        m.consumers == Some(1) && m.partial.is_none() && reports_are(m, &[consumer(true)])
    })
    .await;
    // Closing the holder returns its delivery: nobody is left to report.
    busy.close().await;
    poll_until(&mut provider, "no consumer left", |m| {
        (m.visible, m.consumers) == (1, Some(0)) && m.partial.is_none() && reports_are(m, &[])
    })
    .await;
    delete(&channel, &queue).await;
}

#[tokio::test]
async fn recovers_after_the_broker_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let (mut node, port) = start_rabbitmq(dir.path());
    wait_for_port(port, Duration::from_secs(90)).await;
    let queue = unique("wpa-restart");
    {
        let (_conn, channel) = eventually(WAIT, "the private node to accept AMQP", async || {
            let uri = amqp_uri(port, "/", "x", None);
            // Opening succeeds once the node finished booting.
            RabbitmqProvider::connect(&uri, &no_creds(), &opts())
                .await
                .ok()?;
            Some(open(port, "/").await)
        })
        .await;
        declare(&channel, &queue, true).await;
        publish(&channel, &queue, 2).await;
    }
    let mut provider =
        RabbitmqProvider::connect(&amqp_uri(port, "/", &queue, None), &no_creds(), &opts())
            .await
            .unwrap();
    assert_eq!(provider.poll().await.unwrap().visible, 2);

    // A node SIGKILLed moments after a durable queue was declared can come back without
    // the queue (RabbitMQ 3.10 here: 1 run in 6 did; with 3 s in between, none of 14),
    // presumably because its metadata store had not written the declaration yet. The crash
    // under test comes once the declaration has had time to settle.
    tokio::time::sleep(Duration::from_secs(3)).await;
    node.kill();
    let err = provider.poll().await.unwrap_err();
    assert!(matches!(err, QueueError::Unavailable { .. }), "{err:?}");

    node.restart();
    wait_for_port(port, Duration::from_secs(90)).await;
    // Durable queue, persistent confirmed messages: both survive; the same provider
    // reconnects by itself. The port opens before the node has recovered its queues, and a
    // restarted node boots slowly on a loaded machine (it took over 45 s in a full CI run):
    // what is tested is that the provider gets there, so the wait is as long as the boot's.
    // Each new kind of failure is printed, so a timeout shows where it was stuck.
    let mut last_error: Option<String> = None;
    let m = eventually(BOOT_WAIT, "the provider to reconnect", async || {
        let error = match provider.poll().await {
            Ok(m) => return Some(m),
            Err(e) => e.to_string(),
        };
        if last_error.as_ref() != Some(&error) {
            eprintln!("poll after the restart failed: {error}");
            last_error = Some(error);
        }
        None
    })
    .await;
    assert_eq!((m.visible, m.consumers), (2, Some(0)));
}
