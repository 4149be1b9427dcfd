//! Sidekiq provider against real Sidekiq 6.4 (Debian's `ruby-sidekiq`) on the shared Redis,
//! database 10: jobs pushed with `Sidekiq::Client.push`, real `sidekiq` processes running
//! them, and Sidekiq's own API as the reference for the counts.

use crate::support;

use std::time::Duration;

use redis::Commands;
use support::brokers::{free_port, redis_conn, redis_port, unique};
use support::providers::{options, provider};
use support::sidekiq::{self as sk, SidekiqProcess, queue_uri};
use wpa::queue::{ConsumerReport, Credentials, QueueError, QueueMetrics, QueueProvider, QueueUri};
use wpa::workers::drain::{DrainVia, Mailbox, SidekiqQuiet};

/// Polls until `check` accepts a sample (a poll a second, as the controller does), or
/// panics after `timeout` with the last sample.
async fn poll_until(
    p: &mut Box<dyn QueueProvider>,
    timeout: Duration,
    what: &str,
    check: impl Fn(&QueueMetrics) -> bool,
) -> QueueMetrics {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let m = p.poll().await.expect("poll");
        if check(&m) {
            return m;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}; last sample {m:?}"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

fn reports_of<'a>(m: &'a QueueMetrics, pod: &str) -> Vec<&'a ConsumerReport> {
    m.workers
        .iter()
        .flatten()
        .filter(|r| r.pod.as_deref() == Some(pod))
        .collect()
}

#[tokio::test]
async fn backlog_is_sidekiqs_queue_size() {
    let queue = unique("sk-backlog");
    let ledger = unique("sk-ledger");
    sk::push(&queue, &ledger, &[5.0, 5.0, 5.0, 0.1, 0.1]);
    let sidekiq = sk::count(&queue);
    assert_eq!(sidekiq["size"], 5, "{sidekiq}");

    let mut p = provider(&queue_uri(&queue, "")).await;
    let m = p.poll().await.expect("poll");
    assert_eq!(m.visible, 5);
    assert_eq!(m.in_flight, Some(0));
    assert_eq!(m.consumers, Some(0));
    assert_eq!(m.workers, Some(Vec::new()));
    assert_eq!(m.idle, Some(false), "jobs wait");
    assert!(m.missing.is_empty(), "pushed, so in Sidekiq's `queues` set");
    sk::delete(&[format!("queue:{queue}"), ledger]);
}

#[tokio::test]
async fn a_never_used_queue_is_empty_and_idle() {
    let queue = unique("sk-never");
    let mut p = provider(&queue_uri(&queue, "")).await;
    let m = p.poll().await.expect("a queue nothing used is no error");
    assert_eq!((m.visible, m.in_flight), (0, Some(0)));
    assert_eq!(m.idle, Some(true));
    assert_eq!(m.workers, Some(Vec::new()));
    assert_eq!(m.missing.len(), 1, "named as not declared: {:?}", m.missing);
    assert!(m.missing[0].contains(&queue));
}

/// One `sidekiq -c 1` process named as a Pod runs a long job: the provider counts it in
/// flight and reports the Pod busy, as Sidekiq's own API does; once the job is done the
/// report turns idle (within a few heartbeats) and the queue idle.
#[tokio::test]
async fn a_running_job_makes_its_process_busy_then_idle() {
    let queue = unique("sk-busy");
    let ledger = unique("sk-ledger");
    let pod = unique("worker-pod");
    let dir = tempfile::tempdir().expect("tempdir");
    let mut worker = SidekiqProcess::start(&[&queue], 1, &pod, &dir.path().join("sidekiq.log"));
    let mut p = provider(&queue_uri(&queue, "")).await;
    poll_until(
        &mut p,
        Duration::from_secs(30),
        "the process to beat",
        |m| reports_of(m, &pod).len() == 1,
    )
    .await;

    sk::push(&queue, &ledger, &[8.0]);
    let m = poll_until(&mut p, Duration::from_secs(15), "the job in flight", |m| {
        m.in_flight == Some(1)
    })
    .await;
    assert_eq!(m.visible, 0);
    assert_eq!(m.consumers, Some(1));
    assert_eq!(m.idle, Some(false));
    assert!(reports_of(&m, &pod).iter().all(|r| r.busy), "{m:?}");
    let sidekiq = sk::count(&queue);
    assert_eq!(sidekiq["running"], 1, "Sidekiq agrees: {sidekiq}");
    assert_eq!(
        sidekiq["processes"][0]["hostname"],
        pod.as_str(),
        "{sidekiq}"
    );
    // The ledger confirms it is running, not finished.
    let entries = sk::ledger(&ledger);
    assert!(
        entries.iter().any(|e| e.event == "start" && e.pod == pod),
        "{entries:?}"
    );
    assert!(!entries.iter().any(|e| e.event == "finish"), "{entries:?}");

    let m = poll_until(
        &mut p,
        Duration::from_secs(40),
        "the process idle again",
        |m| reports_of(m, &pod).iter().all(|r| !r.busy) && m.idle == Some(true),
    )
    .await;
    assert_eq!(m.in_flight, Some(0));
    let entries = sk::ledger(&ledger);
    assert!(
        entries.iter().any(|e| e.event == "finish"),
        "idle only after the job finished: {entries:?}"
    );

    // A stopped process removes itself from `processes`: no report any more.
    worker.terminate();
    poll_until(&mut p, Duration::from_secs(30), "the process gone", |m| {
        reports_of(m, &pod).is_empty()
    })
    .await;
    for _ in 0..50 {
        if worker.exited() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(worker.exited(), "sidekiq exits after SIGTERM");
    sk::delete(&[ledger]);
}

/// A process serving two queues: each queue's provider counts only its own running job
/// (from Sidekiq's work hash), and both report the process busy.
#[tokio::test]
async fn a_process_of_two_queues_is_counted_per_queue() {
    let (mine, other) = (unique("sk-mine"), unique("sk-other"));
    let ledger = unique("sk-ledger");
    let pod = unique("worker-pod");
    let dir = tempfile::tempdir().expect("tempdir");
    let _worker = SidekiqProcess::start(&[&mine, &other], 3, &pod, &dir.path().join("sidekiq.log"));
    let mut p_mine = provider(&queue_uri(&mine, "")).await;
    let mut p_other = provider(&queue_uri(&other, "")).await;
    poll_until(
        &mut p_mine,
        Duration::from_secs(30),
        "the process to beat",
        |m| reports_of(m, &pod).len() == 1,
    )
    .await;

    sk::push(&mine, &ledger, &[10.0]);
    sk::push(&other, &ledger, &[10.0, 10.0]);
    let m = poll_until(
        &mut p_other,
        Duration::from_secs(15),
        "two jobs of the other queue",
        |m| m.in_flight == Some(2),
    )
    .await;
    assert!(reports_of(&m, &pod).iter().all(|r| r.busy));
    let m = p_mine.poll().await.expect("poll");
    assert_eq!(m.in_flight, Some(1), "only this queue's job: {m:?}");
    assert!(reports_of(&m, &pod).iter().all(|r| r.busy));
    let sidekiq = sk::count(&mine);
    assert_eq!(sidekiq["running"], 1, "Sidekiq agrees: {sidekiq}");
    assert_eq!(sidekiq["processes"][0]["busy"], 3, "{sidekiq}");
    sk::delete(&[ledger]);
}

/// A real Sidekiq under a redis-namespace (Debian's ruby-redis-namespace): the provider
/// with `?namespace=` counts what Sidekiq counts and sees the process; drain's `TSTP` on
/// the namespaced signal list quiets it.
#[tokio::test(flavor = "multi_thread")]
async fn a_real_sidekiq_under_a_namespace_is_seen_and_drained() {
    let ns = unique("sk-realns");
    let queue = unique("sk-nsq");
    let ledger = unique("sk-ledger");
    let pod = unique("worker-pod");
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("sidekiq.log");
    let _worker = SidekiqProcess::start_in(Some(&ns), &[&queue], 1, &pod, &log);
    let uri = queue_uri(&queue, &format!("?namespace={ns}"));
    let mut p = provider(&uri).await;
    poll_until(
        &mut p,
        Duration::from_secs(30),
        "the process to beat",
        |m| reports_of(m, &pod).len() == 1,
    )
    .await;
    // Nothing of it outside the namespace.
    let mut plain = provider(&queue_uri(&queue, "")).await;
    let outside = plain.poll().await.expect("poll");
    assert!(reports_of(&outside, &pod).is_empty(), "{outside:?}");

    sk::push_in(Some(&ns), &queue, &ledger, &[30.0, 1.0, 1.0]);
    let m = poll_until(&mut p, Duration::from_secs(15), "the job in flight", |m| {
        m.in_flight == Some(1)
    })
    .await;
    let sidekiq = sk::count_in(&ns, &queue);
    assert_eq!(m.visible, 2);
    assert_eq!(sidekiq["size"], 2, "Sidekiq agrees: {sidekiq}");
    assert_eq!(sidekiq["running"], 1, "{sidekiq}");
    assert!(reports_of(&m, &pod).iter().all(|r| r.busy), "{m:?}");

    let QueueUri::Sidekiq(sidekiq_uri) = QueueUri::parse(&uri).expect("URI") else {
        panic!("a Sidekiq URI");
    };
    let mailbox = Mailbox::new(
        DrainVia::Sidekiq(SidekiqQuiet::of(&sidekiq_uri, &Credentials::default())),
        Duration::from_secs(5),
    );
    let pods = vec![pod.clone()];
    mailbox
        .cancel(&pods, std::slice::from_ref(&queue))
        .await
        .expect("TSTP");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let holdings = mailbox
            .holdings(&pods, Duration::from_secs(2))
            .await
            .expect("holdings");
        if holdings.iter().any(|h| h.consuming.is_empty()) {
            assert_eq!(holdings[0].active, 1, "quiet, its job still running");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never quiet: {holdings:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let m = p.poll().await.expect("poll");
    assert_eq!(
        m.consumers,
        Some(0),
        "a quiet process is no consumer: {m:?}"
    );
    let log = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(log.contains("Received TSTP"), "{log}");
    sk::delete(&[
        format!("{ns}:queue:{queue}"),
        format!("{ns}:queues"),
        format!("{ns}:{ledger}"),
    ]);
}

#[tokio::test]
async fn a_namespace_prefixes_every_key() {
    let ns = unique("sk-ns");
    let queue = "default";
    let mut conn = redis_conn(redis_port(), sk::DB);
    // What redis-namespace makes of Sidekiq's keys, written by hand (the real thing is
    // above), for the error case.
    let _: () = conn
        .rpush(format!("{ns}:queue:{queue}"), &["{}", "{}", "{}"])
        .expect("RPUSH");
    let _: () = conn.sadd(format!("{ns}:queues"), queue).expect("SADD");
    let mut p = provider(&queue_uri(queue, &format!("?namespace={ns}"))).await;
    let m = p.poll().await.expect("poll");
    assert_eq!(m.visible, 3);
    assert!(m.missing.is_empty());

    // The namespace's `processes` holding something else than a set is named.
    let _: () = conn.set(format!("{ns}:processes"), "x").expect("SET");
    let err = p.poll().await.expect_err("WRONGTYPE");
    let QueueError::BadResponse { detail, .. } = &err else {
        panic!("not a bad response: {err:?}");
    };
    assert!(detail.contains(&format!("{ns}:processes")), "{detail}");
    assert!(detail.contains("not the set"), "{detail}");
    sk::delete(&[
        format!("{ns}:queue:{queue}"),
        format!("{ns}:queues"),
        format!("{ns}:processes"),
    ]);
}

#[tokio::test]
async fn a_queue_key_of_the_wrong_type_is_a_bad_response() {
    let queue = unique("sk-wrongtype");
    let mut conn = redis_conn(redis_port(), sk::DB);
    let _: () = conn
        .set(format!("queue:{queue}"), "not a list")
        .expect("SET");
    let mut p = provider(&queue_uri(&queue, "")).await;
    let err = p.poll().await.expect_err("WRONGTYPE");
    let QueueError::BadResponse {
        detail,
        queue: label,
    } = &err
    else {
        panic!("not a bad response: {err:?}");
    };
    assert!(
        detail.contains(&format!("\"queue:{queue}\" is a string, not the list")),
        "{detail}"
    );
    assert!(label.starts_with("redis+sidekiq://"), "{label}");
    assert!(err.is_transient());
    sk::delete(&[format!("queue:{queue}")]);
}

#[tokio::test]
async fn unreachable_redis_is_unavailable() {
    let port = free_port();
    let uri = QueueUri::parse(&format!("redis+sidekiq://u:secret@127.0.0.1:{port}/10/q"))
        .expect("parses");
    let err = match uri.connect(&Credentials::default(), &options()).await {
        Ok(_) => panic!("connected to nothing"),
        Err(e) => e,
    };
    assert!(matches!(err, QueueError::Unavailable { .. }), "{err:?}");
    assert!(!err.to_string().contains("secret"), "{err}");
}
