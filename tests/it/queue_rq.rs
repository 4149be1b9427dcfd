//! RQ provider against a real Redis, with jobs enqueued, counted and run by real RQ
//! (tests/rq): the provider must count what RQ itself counts and see RQ's workers under
//! their Pod names.

use crate::support;

use std::time::Duration;

use redis::Commands;
use support::brokers::{eventually, free_port, redis_conn, redis_port, unique};
use support::providers::{options, provider};
use support::rq::{Enqueue, RQ_DB, RqWorker, ledger, rq_counts, rq_enqueue, rq_queue_uri};
use wpa::queue::{ConsumerReport, Credentials, QueueError, QueueMetrics, QueueProvider, QueueUri};

async fn poll(p: &mut Box<dyn QueueProvider>) -> QueueMetrics {
    p.poll().await.expect("poll")
}

fn reports(m: &QueueMetrics) -> Vec<ConsumerReport> {
    m.workers
        .clone()
        .expect("the RQ provider always reports its workers")
}

#[tokio::test]
async fn rq_backlog_is_queue_count_and_scheduled_jobs_are_not_due() {
    let queue = unique("rq-backlog");
    rq_enqueue(&queue, &[1.0; 5], &Enqueue::default());
    let scheduled = Enqueue {
        in_seconds: Some(600.0),
        ..Enqueue::default()
    };
    rq_enqueue(&queue, &[1.0; 2], &scheduled);
    let rq = rq_counts(&queue, None);
    assert_eq!((rq.count, rq.started, rq.scheduled), (5, 0, 2), "{rq:?}");

    let mut p = provider(&rq_queue_uri(&queue)).await;
    let m = poll(&mut p).await;
    assert_eq!(m.visible, rq.count);
    assert_eq!(m.in_flight, Some(rq.started));
    assert_eq!((m.consumers, m.idle), (Some(0), Some(false)));
    assert!(reports(&m).is_empty());
    assert!(m.missing.is_empty(), "{:?}", m.missing);
}

#[tokio::test]
async fn rq_never_used_queue_reads_empty_and_not_declared() {
    let queue = unique("rq-never");
    let uri = rq_queue_uri(&queue);
    let mut p = provider(&uri).await;
    let m = poll(&mut p).await;
    assert_eq!((m.visible, m.in_flight, m.idle), (0, Some(0), Some(true)));
    assert_eq!(m.consumers, Some(0));
    assert_eq!(m.missing, vec![uri]);
}

#[tokio::test]
async fn rq_custom_key_prefix_is_read_under_that_prefix_only() {
    let queue = unique("rq-prefix");
    let prefix = "wpa-test.rq";
    let how = Enqueue {
        prefix: Some(prefix),
        ..Enqueue::default()
    };
    rq_enqueue(&queue, &[1.0; 3], &how);
    assert_eq!(rq_counts(&queue, Some(prefix)).count, 3);
    assert_eq!(rq_counts(&queue, None).count, 0);

    let mut prefixed = provider(&format!("{}?prefix={prefix}", rq_queue_uri(&queue))).await;
    assert_eq!(poll(&mut prefixed).await.visible, 3);
    let mut default = provider(&rq_queue_uri(&queue)).await;
    assert_eq!(poll(&mut default).await.visible, 0);
}

/// A real `rq worker` (as Pod `pod`) running a long job: in flight as RQ counts it, the
/// worker busy under its Pod name while the job runs and through RQ's warm shutdown, idle
/// once done, gone once it exited.
#[tokio::test(flavor = "multi_thread")]
async fn rq_worker_running_a_job_is_in_flight_and_busy_under_its_pod_name() {
    let queue = unique("rq-busy");
    let led = unique("rq-ledger");
    let pod = unique("rq-pod");
    let dir = tempfile::tempdir().expect("tempdir");
    let worker = RqWorker::start(&queue, &pod, &dir.path().join("worker.log"));
    let mut p = provider(&rq_queue_uri(&queue)).await;

    // The worker registers; idle, it is reported idle under its Pod name.
    let m = eventually(
        Duration::from_secs(30),
        "the worker to register",
        async || {
            let m = poll(&mut p).await;
            (m.consumers == Some(1)).then_some(m)
        },
    )
    .await;
    assert_eq!(
        reports(&m),
        vec![ConsumerReport {
            pod: Some(pod.clone()),
            ip: None,
            busy: false,
            channel: None,
        }]
    );
    assert_eq!(m.idle, Some(true));

    let how = Enqueue {
        ledger: Some(&led),
        ..Enqueue::default()
    };
    let ids = rq_enqueue(&queue, &[4.0], &how);
    let m = eventually(Duration::from_secs(20), "the job to start", async || {
        let m = poll(&mut p).await;
        (m.in_flight == Some(1)).then_some(m)
    })
    .await;
    assert_eq!(m.visible, 0);
    assert_eq!(m.idle, Some(false));
    assert_eq!(
        reports(&m)
            .iter()
            .map(|r| (r.pod.clone(), r.busy))
            .collect::<Vec<_>>(),
        vec![(Some(pod.clone()), true)]
    );
    // RQ agrees: one started job, run by the worker named by the Pod.
    let rq = rq_counts(&queue, None);
    assert_eq!((rq.count, rq.started), (0, 1), "{rq:?}");
    assert_eq!(rq.workers.len(), 1, "{rq:?}");
    assert_eq!(rq.workers[0].hostname.as_deref(), Some(pod.as_str()));
    assert_eq!(rq.workers[0].state, "busy");
    assert_eq!(rq.workers[0].job.as_deref(), Some(ids[0].as_str()));

    // Warm shutdown: the job goes on, the worker stays busy until it ends.
    worker.sigterm();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let m = poll(&mut p).await;
    assert_eq!((m.in_flight, m.idle), (Some(1), Some(false)));
    assert!(reports(&m).iter().all(|r| r.busy), "{m:?}");

    // Until the worker registers its death (right after the job; RQ 3.0's process may
    // then linger in its pub/sub shutdown, which is no concern here), a running job
    // always comes with a busy report.
    let m = eventually(
        Duration::from_secs(20),
        "the worker to finish and leave",
        async || {
            let m = poll(&mut p).await;
            if m.in_flight == Some(1) {
                assert!(reports(&m).iter().all(|r| r.busy), "{m:?}");
            }
            (m.consumers == Some(0)).then_some(m)
        },
    )
    .await;
    let runs = ledger(&led);
    assert_eq!(
        runs.iter().map(|r| r.event.as_str()).collect::<Vec<_>>(),
        ["start", "finish"],
        "{runs:?}"
    );
    assert_eq!(runs[0].pod, pod);

    // Finished and gone: nothing in flight, no worker on the queue, idle.
    assert_eq!((m.visible, m.in_flight), (0, Some(0)));
    assert_eq!(m.consumers, Some(0));
    assert!(reports(&m).is_empty());
    assert_eq!(m.idle, Some(true));
}

#[tokio::test]
async fn rq_wrong_key_type_is_a_bad_response_naming_the_key() {
    let queue = unique("rq-wrongtype");
    let mut con = redis_conn(redis_port(), RQ_DB);
    let key = format!("rq:queue:{queue}");
    let _: () = con.set(&key, "not a list").unwrap();
    let mut p = provider(&rq_queue_uri(&queue)).await;
    let err = p.poll().await.expect_err("a string is no queue");
    match &err {
        QueueError::BadResponse { detail, .. } => {
            assert!(
                detail.contains(&key) && detail.contains("string"),
                "{detail}"
            );
        }
        other => panic!("expected BadResponse, got {other:?}"),
    }
    let _: () = con.del(&key).unwrap();
}

#[tokio::test]
async fn rq_unreachable_redis_is_unavailable() {
    let port = free_port();
    let parsed = QueueUri::parse(&format!("redis+rq://127.0.0.1:{port}/{RQ_DB}/q")).unwrap();
    let err = match parsed.connect(&Credentials::default(), &options()).await {
        Ok(_) => panic!("connected to nothing"),
        Err(e) => e,
    };
    assert!(matches!(err, QueueError::Unavailable { .. }), "{err:?}");
}
