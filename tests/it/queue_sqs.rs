//! SQS provider against moto (127.0.0.1:5001, see hack/services.sh) and private
//! moto_server processes. Tests never reset the shared moto: they run in parallel.

use crate::support;

use std::time::{Duration, Instant};

use aws_sdk_sqs::Client;
use aws_sdk_sqs::config::{BehaviorVersion, Credentials as AwsCredentials, Region};
use support::broker_procs::{eventually, start_moto, unique, wait_for_port};
use support::cloudwatch::CloudWatchDouble;
use support::queues::create_sqs_queue;
use wpa::queue::sqs::SqsProvider;
use wpa::queue::sqs::uri::SqsUri;
use wpa::queue::{Credentials, ProviderOptions, QueueError, QueueProvider};

const SHARED_PORT: u16 = 5001;
const ACCOUNT: &str = "123456789012";
const WAIT: Duration = Duration::from_secs(30);

fn endpoint(port: u16) -> String {
    format!("http://127.0.0.1:{port}")
}

fn creds() -> Credentials {
    Credentials {
        username: Some("test".into()),
        password: Some("test".into()),
        authorization: None,
    }
}

fn opts() -> ProviderOptions {
    ProviderOptions {
        request_timeout: Duration::from_secs(5),
        ..ProviderOptions::default()
    }
}

/// The test's own SQS client, for creating queues and moving messages.
fn client(port: u16) -> Client {
    let config = aws_sdk_sqs::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .credentials_provider(AwsCredentials::new("test", "test", None, None, "test"))
        .endpoint_url(endpoint(port))
        .build();
    Client::from_conf(config)
}

fn sqs_uri(port: u16, queue_url: &str, name: &str) -> SqsUri {
    SqsUri {
        queue_url: queue_url.to_string(),
        endpoint: Some(endpoint(port)),
        region: Some("us-east-1".into()),
        account: ACCOUNT.into(),
        queue: name.into(),
    }
}

async fn send(client: &Client, url: &str, body: &str, delay: i32) {
    client
        .send_message()
        .queue_url(url)
        .message_body(body)
        .delay_seconds(delay)
        .send()
        .await
        .expect("send");
}

/// Receives exactly `n` messages (hidden for 10 minutes); returns their receipt handles.
async fn receive(client: &Client, url: &str, n: usize) -> Vec<String> {
    let mut handles = Vec::new();
    while handles.len() < n {
        let want = i32::try_from(n - handles.len()).unwrap().min(10);
        let out = client
            .receive_message()
            .queue_url(url)
            .max_number_of_messages(want)
            .visibility_timeout(600)
            .wait_time_seconds(1)
            .send()
            .await
            .expect("receive");
        handles.extend(
            out.messages()
                .iter()
                .filter_map(|m| m.receipt_handle().map(String::from)),
        );
    }
    handles
}

#[tokio::test]
async fn counts_visible_in_flight_and_delayed() {
    let sqs = client(SHARED_PORT);
    let name = unique("wpa-counts");
    let url = create_sqs_queue(&sqs, &name).await;
    for i in 0..5 {
        send(&sqs, &url, &format!("m{i}"), 0).await;
    }
    send(&sqs, &url, "later", 600).await;
    receive(&sqs, &url, 2).await;

    let mut provider = SqsProvider::connect(&sqs_uri(SHARED_PORT, &url, &name), &creds(), &opts())
        .await
        .unwrap();
    let m = provider.poll().await.unwrap();
    assert_eq!(m.visible, 3);
    assert_eq!(m.in_flight, Some(2));
    assert_eq!(m.delayed, Some(1));
    assert_eq!((m.consumers, m.sent_per_minute, m.idle), (None, None, None));
}

#[tokio::test]
async fn missing_queue_is_not_found() {
    let name = unique("wpa-missing");
    let url = format!("{}/{ACCOUNT}/{name}", endpoint(SHARED_PORT));
    let mut provider = SqsProvider::connect(&sqs_uri(SHARED_PORT, &url, &name), &creds(), &opts())
        .await
        .unwrap();
    let err = provider.poll().await.unwrap_err();
    assert_eq!(err, QueueError::NotFound { queue: url.clone() });

    // Created later: the same provider sees it.
    let sqs = client(SHARED_PORT);
    assert_eq!(create_sqs_queue(&sqs, &name).await, url);
    send(&sqs, &url, "x", 0).await;
    assert_eq!(provider.poll().await.unwrap().visible, 1);
}

#[tokio::test]
async fn drained_queue_reports_zero_backlog_and_leaves_idleness_to_the_registry() {
    let sqs = client(SHARED_PORT);
    let name = unique("wpa-idle");
    let url = create_sqs_queue(&sqs, &name).await;
    send(&sqs, &url, "work", 0).await;
    let mut provider = SqsProvider::connect(&sqs_uri(SHARED_PORT, &url, &name), &creds(), &opts())
        .await
        .unwrap();

    let handles = receive(&sqs, &url, 1).await;
    let busy = provider.poll().await.unwrap();
    assert_eq!((busy.visible, busy.in_flight), (0, Some(1)));

    for handle in handles {
        sqs.delete_message()
            .queue_url(&url)
            .receipt_handle(handle)
            .send()
            .await
            .unwrap();
    }
    // Over the idle window every poll shows nothing visible, in flight or delayed, and no
    // broker-side idle claim (CloudWatch is not queried): the registry decides.
    for _ in 0..3 {
        let m = provider.poll().await.unwrap();
        assert_eq!(
            (m.visible, m.in_flight, m.delayed, m.idle),
            (0, Some(0), Some(0), None)
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

#[tokio::test]
async fn long_poll_notices_a_message_sent_during_the_wait() {
    let sqs = client(SHARED_PORT);
    let name = unique("wpa-longpoll");
    let url = create_sqs_queue(&sqs, &name).await;
    let opts = ProviderOptions {
        sqs_receive_long_poll: true,
        sqs_long_poll_seconds: 15,
        request_timeout: Duration::from_secs(5),
        ..ProviderOptions::default()
    };
    let mut provider = SqsProvider::connect(&sqs_uri(SHARED_PORT, &url, &name), &creds(), &opts)
        .await
        .unwrap();
    // practo's condition: nobody is consuming the queue.
    provider.set_no_workers(true);

    let sender = {
        let sqs = sqs.clone();
        let url = url.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(2)).await;
            send(&sqs, &url, "first", 0).await;
        })
    };
    let started = Instant::now();
    let m = provider.poll().await.unwrap();
    let waited = started.elapsed();
    sender.await.unwrap();
    assert_eq!(m.visible, 1, "after {waited:?}");
    assert!(
        waited >= Duration::from_millis(1500),
        "returned before the message was sent: {waited:?}"
    );
    assert!(
        waited < Duration::from_secs(12),
        "did not return when the message arrived: {waited:?}"
    );

    // VisibilityTimeout 0: the message stays deliverable to workers.
    let m = provider.poll().await.unwrap();
    assert_eq!((m.visible, m.in_flight), (1, Some(0)));
}

/// An empty poll that must not wait in a long poll.
async fn assert_returns_at_once(provider: &mut SqsProvider, what: &str) {
    let started = Instant::now();
    assert_eq!(provider.poll().await.unwrap().visible, 0, "{what}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{what}: an empty poll waited {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn no_long_poll_while_workers_run_or_when_turned_off() {
    let sqs = client(SHARED_PORT);
    let name = unique("wpa-shortpoll");
    let url = create_sqs_queue(&sqs, &name).await;
    let uri = sqs_uri(SHARED_PORT, &url, &name);
    // Default options: long polling is on, but only once the registry says no workers.
    let mut provider = SqsProvider::connect(&uri, &creds(), &opts()).await.unwrap();
    assert_returns_at_once(&mut provider, "workers unknown").await;
    provider.set_no_workers(false);
    assert_returns_at_once(&mut provider, "workers running").await;

    let off = ProviderOptions {
        sqs_receive_long_poll: false,
        ..opts()
    };
    let mut provider = SqsProvider::connect(&uri, &creds(), &off).await.unwrap();
    provider.set_no_workers(true);
    assert_returns_at_once(&mut provider, "--sqs-receive-long-poll=false").await;
}

#[tokio::test]
async fn recovers_after_the_server_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let (mut server, port) = start_moto(dir.path());
    wait_for_port(port, WAIT).await;
    let sqs = client(port);
    let name = unique("wpa-restart");
    let url = create_sqs_queue(&sqs, &name).await;
    send(&sqs, &url, "a", 0).await;

    let mut provider = SqsProvider::connect(&sqs_uri(port, &url, &name), &creds(), &opts())
        .await
        .unwrap();
    assert_eq!(provider.poll().await.unwrap().visible, 1);

    server.kill();
    let err = provider.poll().await.unwrap_err();
    assert!(
        matches!(err, QueueError::Unavailable { ref queue, .. } if *queue == url),
        "{err:?}"
    );

    server.restart();
    wait_for_port(port, WAIT).await;
    // moto keeps state in memory: recreate the queue, then the same provider recovers.
    let url2 = eventually(WAIT, "moto to accept create_queue", async || {
        sqs.create_queue()
            .queue_name(&name)
            .send()
            .await
            .ok()
            .and_then(|o| o.queue_url().map(String::from))
    })
    .await;
    assert_eq!(url2, url);
    send(&sqs, &url, "b", 0).await;
    send(&sqs, &url, "c", 0).await;
    let m = provider.poll().await.unwrap();
    assert_eq!((m.visible, m.in_flight), (2, Some(0)));
}

/// An SQS-compatible endpoint that answers every request with `status` and `body`
/// (AWS JSON protocol error shape).
async fn fake_sqs(status: u16, body: &'static str) -> u16 {
    use axum::http::{HeaderValue, StatusCode, header};
    let status = StatusCode::from_u16(status).unwrap();
    let app = axum::Router::new().fallback(move || async move {
        let mut response = axum::response::IntoResponse::into_response((status, body));
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/x-amz-json-1.0"),
        );
        response
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    port
}

#[tokio::test]
async fn error_answers_map_to_denied_unavailable_and_bad_response() {
    let cases = [
        (
            400,
            r#"{"__type":"com.amazon.coral.service#UnrecognizedClientException","message":"The security token included in the request is invalid."}"#,
            "denied",
        ),
        (
            403,
            r#"{"__type":"com.amazon.coral.service#AccessDeniedException","message":"no"}"#,
            "denied",
        ),
        (503, r#"{"message":"overloaded"}"#, "unavailable"),
        (
            400,
            r#"{"__type":"com.amazonaws.sqs#InvalidAttributeName","message":"?"}"#,
            "bad",
        ),
    ];
    for (status, body, expected) in cases {
        let port = fake_sqs(status, body).await;
        let url = format!("{}/{ACCOUNT}/q", endpoint(port));
        let secret = Credentials {
            username: Some("AKIDWPATEST".into()),
            password: Some("s3cr3t-never-shown".into()),
            authorization: None,
        };
        let mut provider = SqsProvider::connect(&sqs_uri(port, &url, "q"), &secret, &opts())
            .await
            .unwrap();
        let err = provider.poll().await.unwrap_err();
        let ok = match expected {
            "denied" => matches!(err, QueueError::Denied { .. }),
            "unavailable" => matches!(err, QueueError::Unavailable { .. }),
            _ => matches!(err, QueueError::BadResponse { .. }),
        };
        assert!(ok, "{status} {body} -> {err:?}");
        // The secret access key never shows up in errors.
        assert!(!format!("{err} {err:?}").contains("s3cr3t"), "{err:?}");
    }
}

fn cloudwatch_opts(endpoint: &str) -> ProviderOptions {
    ProviderOptions {
        sqs_cloudwatch: true,
        sqs_cloudwatch_endpoint: Some(endpoint.to_string()),
        ..opts()
    }
}

#[tokio::test]
async fn cloudwatch_gives_the_sent_rate_and_receives_veto_idleness() {
    let cloudwatch = CloudWatchDouble::start().await;
    let sqs = client(SHARED_PORT);
    let name = unique("wpa-cw");
    let url = create_sqs_queue(&sqs, &name).await;
    let uri = sqs_uri(SHARED_PORT, &url, &name);

    // Receives in the lookback: the workers are busy although the queue looks empty.
    cloudwatch.set_values("NumberOfMessagesReceived", &[0.0, 4.0, 1.0]);
    cloudwatch.set_values("NumberOfMessagesSent", &[20.0, 25.0, 15.0]);
    let mut provider = SqsProvider::connect(&uri, &creds(), &cloudwatch_opts(&cloudwatch.url()))
        .await
        .unwrap();
    let m = provider.poll().await.unwrap();
    assert_eq!((m.visible, m.in_flight), (0, Some(0)));
    assert_eq!(m.idle, Some(false), "receives veto idleness");
    // 60 messages sent over the 10-minute lookback.
    assert_eq!(m.sent_per_minute, Some(6));

    // Both metrics of this queue were asked for, in one request, as per-minute sums.
    let asked = cloudwatch.asked();
    assert_eq!(asked.len(), 1);
    let mut names: Vec<&str> = asked[0]
        .metrics
        .iter()
        .map(|m| m.metric_name.as_str())
        .collect();
    names.sort_unstable();
    assert_eq!(names, ["NumberOfMessagesReceived", "NumberOfMessagesSent"]);
    for metric in &asked[0].metrics {
        assert_eq!(
            (
                metric.namespace.as_str(),
                metric.queue_name.as_str(),
                metric.stat.as_str()
            ),
            ("AWS/SQS", name.as_str(), "Sum")
        );
    }
    assert!(
        asked[0].path.ends_with("/operation/GetMetricData"),
        "{}",
        asked[0].path
    );

    // Polls within the refresh interval reuse the answer: CloudWatch bills per metric.
    provider.poll().await.unwrap();
    assert_eq!(cloudwatch.asked().len(), 1);

    // No receives: CloudWatch does not declare idleness (it lags); the idle window does.
    cloudwatch.set_values("NumberOfMessagesReceived", &[0.0, 0.0]);
    cloudwatch.set_values("NumberOfMessagesSent", &[]);
    let mut quiet = SqsProvider::connect(&uri, &creds(), &cloudwatch_opts(&cloudwatch.url()))
        .await
        .unwrap();
    let m = quiet.poll().await.unwrap();
    assert_eq!((m.idle, m.sent_per_minute), (None, Some(0)));
}

#[tokio::test]
async fn cloudwatch_failures_leave_the_signals_unknown_and_the_backlog_reported() {
    let cloudwatch = CloudWatchDouble::start().await;
    cloudwatch.set_failing(true);
    let sqs = client(SHARED_PORT);
    let name = unique("wpa-cw-down");
    let url = create_sqs_queue(&sqs, &name).await;
    send(&sqs, &url, "work", 0).await;
    let mut provider = SqsProvider::connect(
        &sqs_uri(SHARED_PORT, &url, &name),
        &creds(),
        &cloudwatch_opts(&cloudwatch.url()),
    )
    .await
    .unwrap();
    let m = provider.poll().await.unwrap();
    assert_eq!(m.visible, 1, "the queue's own counters still count");
    assert_eq!(
        (m.idle, m.sent_per_minute),
        (None, None),
        "unknown, never zero"
    );
    assert!(!cloudwatch.asked().is_empty(), "CloudWatch was asked");
}
