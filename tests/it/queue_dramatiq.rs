//! Dramatiq provider against real Dramatiq (tests/dramatiq): jobs sent by Dramatiq's own
//! producer, run by real `dramatiq` workers, compared with what Dramatiq's Redis broker
//! reads itself.

use crate::support;

use std::time::{Duration, Instant};

use redis::Commands;
use support::brokers::{eventually, free_port, redis_conn, redis_port, unique};
use support::dramatiq::{self as dq, DB, Worker, queue_name as queue, queue_uri as uri};
use support::providers::{options, provider};
use wpa::queue::{ConsumerReport, Credentials, QueueError, QueueMetrics};
use wpa::queue::{QueueProvider, QueueUri};

async fn poll(p: &mut Box<dyn QueueProvider>) -> QueueMetrics {
    p.poll().await.expect("poll")
}

#[tokio::test]
async fn visible_and_delayed_are_what_dramatiq_holds() {
    let q = queue("dq_counts");
    let mut p = provider(&uri(&q, "")).await;
    // Never used: empty, not an error.
    let m = poll(&mut p).await;
    assert_eq!(
        (m.visible, m.in_flight, m.delayed, m.idle),
        (0, Some(0), Some(0), Some(true))
    );

    dq::send(&q, "now", &[1.0, 1.0, 1.0], None);
    dq::send(&q, "later", &[1.0, 1.0], Some(600_000));
    let said = dq::counts(&q);
    let m = poll(&mut p).await;
    assert_eq!(m.visible, said["llen"].as_u64().expect("llen"), "{said}");
    assert_eq!(m.visible, 3);
    assert_eq!(
        m.delayed,
        Some(said["delay_llen"].as_u64().expect("delay_llen"))
    );
    assert_eq!(m.delayed, Some(2));
    // Dramatiq's qsize counts every unacked message of the queue and its delay queue.
    assert_eq!(
        m.visible + m.in_flight.unwrap_or(0) + m.delayed.unwrap_or(0),
        said["qsize"].as_u64().expect("qsize"),
        "{said}"
    );
    assert_eq!((m.in_flight, m.idle), (Some(0), Some(false)));
    dq::clean(&q, "");
}

/// One worker (1 process, 1 thread, so prefetch 2) and a 6 s job ahead of two short ones:
/// the running job and the prefetched one are in flight, the third waits; the worker is
/// reported busy at its pod and IP; once everything ran, idle.
#[tokio::test]
async fn a_running_worker_holds_its_job_and_its_prefetch() {
    let q = queue("dq_worker");
    let record = unique("dq-record");
    let mut p = provider(&uri(&q, "?client_names=true")).await;
    let jobs = dq::send(&q, "job", &[6.0, 0.5, 0.5], None);
    let _worker = Worker::start(&q, &record, "pod-a", &[]);
    eventually(
        Duration::from_secs(30),
        "the long job to start",
        async || {
            dq::runs(&record)
                .iter()
                .any(|r| r.job == jobs[0])
                .then_some(())
        },
    )
    .await;
    let said = dq::counts(&q);
    let m = poll(&mut p).await;
    assert_eq!(m.in_flight, Some(2), "running + prefetched; {m:?}");
    assert_eq!(m.visible, 1, "{m:?}");
    assert_eq!(m.visible, said["llen"].as_u64().expect("llen"));
    assert_eq!(
        m.visible + m.in_flight.unwrap_or(0),
        said["qsize"].as_u64().expect("qsize"),
        "{said}"
    );
    assert_eq!(m.idle, Some(false));
    let worker_id = dq::runs(&record)[0].worker.clone();
    // Other tests' named workers share the heartbeats (same namespace): pick ours.
    let ours = |m: &QueueMetrics| {
        m.workers
            .iter()
            .flatten()
            .find(|w| w.channel.as_deref() == Some(worker_id.as_str()))
            .cloned()
    };
    assert_eq!(
        ours(&m),
        Some(ConsumerReport {
            pod: Some("pod-a".into()),
            ip: Some("127.0.0.1".into()),
            busy: true,
            channel: Some(worker_id.clone()),
        }),
        "{m:?}"
    );

    eventually(Duration::from_secs(30), "every job to finish", async || {
        let tally = dq::tally(&record);
        jobs.iter()
            .all(|j| tally.get(j).is_some_and(|(_, f)| *f == 1))
            .then_some(())
    })
    .await;
    let m = eventually(Duration::from_secs(5), "the acks", async || {
        let m = p.poll().await.ok()?;
        (m.in_flight == Some(0)).then_some(m)
    })
    .await;
    assert_eq!((m.visible, m.idle), (0, Some(true)), "{m:?}");
    assert_eq!(ours(&m).map(|w| w.busy), Some(false), "{m:?}");
    dq::clean(&q, &record);
}

/// A worker SIGKILLed mid-job: its messages are in flight while its heartbeat is fresh,
/// then (heartbeat timeout passed, nobody has run maintenance yet) visible, since
/// Dramatiq's maintenance puts them back on the queue.
#[tokio::test]
async fn a_dead_workers_messages_come_back_as_visible() {
    let q = queue("dq_dead");
    let record = unique("dq-record");
    let mut p = provider(&uri(&q, "?heartbeat_timeout=3000")).await;
    let jobs = dq::send(&q, "job", &[30.0], None);
    let mut worker = Worker::start(
        &q,
        &record,
        "pod-b",
        &[
            ("WPA_TEST_DRAMATIQ_HEARTBEAT_TIMEOUT", "3000"),
            // No maintenance by this worker: the orphan stays where the kill left it.
            ("WPA_TEST_DRAMATIQ_MAINTENANCE", "0"),
        ],
    );
    eventually(Duration::from_secs(30), "the job to start", async || {
        dq::runs(&record)
            .iter()
            .any(|r| r.job == jobs[0])
            .then_some(())
    })
    .await;
    worker.kill();
    let killed = Instant::now();
    let m = poll(&mut p).await;
    assert_eq!((m.visible, m.in_flight), (0, Some(1)), "{m:?}");
    let m = eventually(
        Duration::from_secs(10),
        "the heartbeat to expire",
        async || {
            let m = p.poll().await.ok()?;
            (m.in_flight == Some(0)).then_some(m)
        },
    )
    .await;
    assert!(killed.elapsed() >= Duration::from_millis(2500), "{m:?}");
    assert_eq!((m.visible, m.idle), (1, Some(false)), "{m:?}");
    dq::clean(&q, &record);
}

#[tokio::test]
async fn a_key_of_another_type_is_a_bad_response_naming_it() {
    let q = queue("dq_wrongtype");
    let key = format!("dramatiq:{q}");
    let _: () = redis_conn(redis_port(), DB)
        .set(&key, "not a list")
        .expect("set");
    let mut p = provider(&uri(&q, "")).await;
    let err = p.poll().await.expect_err("a string is not a queue");
    match &err {
        QueueError::BadResponse { detail, .. } => assert!(detail.contains(&key), "{err}"),
        other => panic!("expected BadResponse, got {other:?}"),
    }
    let _: () = redis_conn(redis_port(), DB).del(&key).expect("del");
}

#[tokio::test]
async fn unreachable_redis_is_unavailable() {
    let parsed = QueueUri::parse(&format!(
        "redis+dramatiq://127.0.0.1:{}/{DB}/default",
        free_port()
    ))
    .expect("parses");
    let err = match parsed.connect(&Credentials::default(), &options()).await {
        Ok(_) => panic!("connected to nothing"),
        Err(e) => e,
    };
    assert!(matches!(err, QueueError::Unavailable { .. }), "{err:?}");
}

/// The middleware the docs page gives is the one these tests run.
#[test]
fn the_docs_page_gives_the_tested_middleware() {
    let root = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let page = std::fs::read_to_string(root.join("docs/frameworks/dramatiq.md")).expect("page");
    let module = std::fs::read_to_string(dq::dir().join("wpa_names.py")).expect("module");
    let code = module
        .split_once("\"\"\"\n\n")
        .map(|(_, code)| code)
        .expect("a docstring, then the code");
    assert!(
        page.contains(code.trim()),
        "docs/frameworks/dramatiq.md lacks:\n{code}"
    );
}
