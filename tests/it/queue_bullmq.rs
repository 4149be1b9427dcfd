//! BullMQ provider against real BullMQ (tests/bullmq: Node scripts using the installed
//! bullmq) on the shared Redis, database 14: the figures equal BullMQ's own counts, a
//! running job shows as in flight and its worker as busy, errors keep their kinds. Workers
//! at Pods' own loopback IPs use a Redis of the test's own (see
//! `bullmq_unnamed_workers_report_their_pods_ips`).

use crate::support;

use std::time::Duration;

use redis::Commands;
use serde_json::{Value, json};
use support::brokers::{eventually, free_port, redis_conn, redis_port, unique};
use support::bullmq::{
    DB, NodeWorker, add_jobs, count, own_server, queue_js, queue_uri, remove_queue,
};
use support::providers::{provider, try_provider};
use wpa::queue::{ConsumerReport, Credentials, QueueError, QueueMetrics};

async fn poll(uri: &str) -> QueueMetrics {
    let mut p = provider(uri).await;
    p.poll().await.expect("poll")
}

/// Jobs of 1 s with these BullMQ options.
fn jobs(opts: &[Value]) -> Vec<(f64, Value)> {
    opts.iter().map(|o| (1.0, o.clone())).collect()
}

#[tokio::test]
async fn bullmq_figures_equal_bullmqs_own_counts() {
    let queue = unique("bullmq-counts");
    let uri = queue_uri(&queue, "");
    let none = json!({});
    let later = json!({"delay": 600_000});
    let soon = json!({"delay": 1});
    add_jobs(
        &queue,
        &jobs(&[
            none.clone(),
            none.clone(),
            none,
            json!({"priority": 1}),
            json!({"priority": 5}),
            later.clone(),
            later,
            soon,
        ]),
        "bull",
    );
    // Let the 1 ms delay pass: with no worker, BullMQ leaves the job in `delayed` (only a
    // worker fetching jobs promotes due ones), as its own counts show.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let counts = queue_js("counts", &queue, None, "bull");
    assert_eq!(
        (count(&counts, "wait"), count(&counts, "prioritized")),
        (3, 2),
        "{counts}"
    );
    assert_eq!(
        (count(&counts, "delayed"), count(&counts, "due")),
        (3, 1),
        "{counts}"
    );

    let m = poll(&uri).await;
    let waiting = count(&counts, "wait") + count(&counts, "prioritized");
    assert_eq!(m.visible, waiting + count(&counts, "due"), "{counts} {m:?}");
    assert_eq!(
        m.delayed,
        Some(count(&counts, "delayed") - count(&counts, "due"))
    );
    assert_eq!(m.in_flight, Some(count(&counts, "active")));
    assert_eq!(m.idle, Some(false));
    assert_eq!(
        (m.consumers, m.workers.as_deref()),
        (Some(0), Some(&[][..]))
    );
    assert_eq!(m.partial, None);

    // Paused (BullMQ 6: `paused` in the meta hash, the jobs stay in `wait`): nothing is
    // deliverable, everything counts as delayed.
    let paused = queue_js("pause", &queue, None, "bull");
    assert_eq!(paused["isPaused"], true);
    assert_eq!(count(&paused, "wait"), 3, "{paused}");
    let m = poll(&uri).await;
    assert_eq!(m.visible, 0);
    assert_eq!(m.delayed, Some(waiting + count(&counts, "delayed")));
    assert_eq!(m.idle, Some(true));
    queue_js("resume", &queue, None, "bull");
    let m = poll(&uri).await;
    assert_eq!(m.visible, waiting + count(&counts, "due"));
    remove_queue(&queue, "bull", &[]);
}

#[tokio::test]
async fn bullmq_prefix_selects_the_keys() {
    let queue = unique("bullmq-prefix");
    let counts = add_jobs(&queue, &jobs(&[json!({}), json!({})]), "wpa-test:app");
    assert_eq!(count(&counts, "wait"), 2);
    let m = poll(&queue_uri(&queue, "?prefix=wpa-test%3Aapp")).await;
    assert_eq!(m.visible, 2);
    // The default prefix names other keys: nothing there.
    let m = poll(&queue_uri(&queue, "")).await;
    assert_eq!((m.visible, m.idle), (0, Some(true)));
    remove_queue(&queue, "wpa-test:app", &[]);
}

/// The report for the one worker found, once `check` holds for the sample.
async fn until(uri: &str, what: &str, check: impl Fn(&QueueMetrics) -> bool) -> QueueMetrics {
    eventually(Duration::from_secs(20), what, async || {
        let m = poll(uri).await;
        check(&m).then_some(m)
    })
    .await
}

fn only_worker(m: &QueueMetrics) -> ConsumerReport {
    match m.workers.as_deref() {
        Some([one]) => one.clone(),
        other => panic!("expected one worker, got {other:?}"),
    }
}

#[tokio::test]
async fn bullmq_named_worker_is_busy_while_its_job_runs() {
    let queue = unique("bullmq-named");
    let ledger = unique("bullmq-ledger");
    let uri = queue_uri(&queue, "");
    let pod = "worker-7d9c6-x2x4q";
    let mut worker = NodeWorker::start(&queue, pod, true, &ledger);
    let m = until(&uri, "the worker's connection", |m| m.consumers == Some(1)).await;
    let idle = only_worker(&m);
    assert_eq!(idle.pod.as_deref(), Some(pod));
    assert_eq!(idle.ip.as_deref(), Some("127.0.0.1"));
    assert!(!idle.busy);
    // BullMQ's own getWorkers() sees the same connection.
    let counts = queue_js("counts", &queue, None, "bull");
    assert_eq!(
        counts["workers"],
        json!([format!("bull:{}:w:{pod}", b64(&queue))])
    );

    add_jobs(&queue, &[(3.0, json!({}))], "bull");
    let m = until(&uri, "the job running", |m| m.in_flight == Some(1)).await;
    assert_eq!((m.visible, m.idle), (0, Some(false)));
    let busy = only_worker(&m);
    assert!(busy.busy, "{busy:?}");
    assert_eq!(busy.pod.as_deref(), Some(pod));

    let m = until(&uri, "the job done", |m| m.in_flight == Some(0)).await;
    assert_eq!(m.idle, Some(true));
    assert!(!only_worker(&m).busy);
    let runs = support::bullmq::recorded(&ledger);
    assert_eq!(runs.len(), 2, "{runs:?}");
    assert!(runs.iter().all(|r| r.pod == pod));

    assert_eq!(worker.terminate(), Some(0));
    let m = poll(&uri).await;
    assert_eq!(m.consumers, Some(0));
    remove_queue(&queue, "bull", &[&ledger]);
}

#[tokio::test]
async fn bullmq_unnamed_worker_is_never_reported_idle_while_a_job_runs() {
    let queue = unique("bullmq-unnamed");
    let ledger = unique("bullmq-ledger");
    let uri = queue_uri(&queue, "");
    let mut named = NodeWorker::start(&queue, "named-pod", true, &ledger);
    let mut unnamed = NodeWorker::start(&queue, "unnamed-pod", false, &ledger);
    until(&uri, "both connections", |m| m.consumers == Some(2)).await;
    add_jobs(&queue, &[(3.0, json!({}))], "bull");
    let m = until(&uri, "the job running", |m| m.in_flight == Some(1)).await;
    let reports = m.workers.clone().expect("workers");
    let runner = eventually(Duration::from_secs(5), "the job's start", async || {
        support::bullmq::recorded(&ledger)
            .first()
            .map(|r| r.pod.clone())
    })
    .await;
    // The unnamed worker cannot be told idle: busy whoever runs the job. The named one is
    // busy exactly when it runs it.
    let unnamed_report = reports.iter().find(|r| r.pod.is_none()).expect("unnamed");
    assert!(unnamed_report.busy, "{reports:?}");
    assert_eq!(unnamed_report.ip.as_deref(), Some("127.0.0.1"));
    let named_report = reports
        .iter()
        .find(|r| r.pod.as_deref() == Some("named-pod"))
        .expect("named");
    assert_eq!(named_report.busy, runner == "named-pod", "{reports:?}");

    let m = until(&uri, "the job done", |m| m.in_flight == Some(0)).await;
    assert!(m.workers.expect("workers").iter().all(|r| !r.busy));
    assert_eq!(named.terminate(), Some(0));
    assert_eq!(unnamed.terminate(), Some(0));
    remove_queue(&queue, "bull", &[&ledger]);
}

/// Unnamed Workers (BullMQ's default) of two Pods, each connecting from its Pod's own IP:
/// each report carries its connection's IP, the only thing that matches it to its Pod. All
/// are idle with no job and all busy while any job runs (which one runs it cannot be seen
/// without a name), idle again after. On a Redis of the test's own: the shared one, in
/// protected mode, refuses clients at loopback addresses other than 127.0.0.1.
#[tokio::test]
async fn bullmq_unnamed_workers_report_their_pods_ips() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_redis, server) = own_server(dir.path()).await;
    let queue = unique("bullmq-ips");
    let ledger = unique("bullmq-ledger");
    let uri = server.queue_uri(&queue, "");
    let pods = [("worker-a", "127.61.0.11"), ("worker-b", "127.61.0.12")];
    let mut workers: Vec<NodeWorker> = pods
        .iter()
        .map(|(pod, ip)| NodeWorker::start_on(server, Some(ip), &queue, pod, false, &ledger))
        .collect();
    let ips = |m: &QueueMetrics| -> Vec<String> {
        let mut ips: Vec<String> = (m.workers.iter().flatten())
            .filter_map(|r| r.ip.clone())
            .collect();
        ips.sort();
        ips
    };
    let at_pod_ips = |m: &QueueMetrics| ips(m) == pods.map(|(_, ip)| ip.to_string());

    let m = until(&uri, "both connections", |m| m.consumers == Some(2)).await;
    assert!(at_pod_ips(&m), "{m:?}");
    let reports = m.workers.clone().expect("workers");
    assert!(
        reports.iter().all(|r| r.pod.is_none() && !r.busy),
        "{reports:?}"
    );
    assert_eq!(m.idle, Some(true));
    // BullMQ's own getWorkers() sees two connections without a worker name.
    let counts = server.queue_js("counts", &queue, None, "bull");
    let unnamed = format!("bull:{}", b64(&queue));
    assert_eq!(counts["workers"], json!([unnamed, unnamed]), "{counts}");

    server.add_jobs(&queue, &[(3.0, json!({}))], "bull");
    let m = until(&uri, "the job running", |m| m.in_flight == Some(1)).await;
    assert!(at_pod_ips(&m), "{m:?}");
    let reports = m.workers.clone().expect("workers");
    assert!(reports.iter().all(|r| r.busy), "{reports:?}");

    let m = until(&uri, "the job done", |m| m.in_flight == Some(0)).await;
    assert!(at_pod_ips(&m), "{m:?}");
    assert_eq!(m.idle, Some(true));
    let reports = m.workers.clone().expect("workers");
    assert!(reports.iter().all(|r| !r.busy), "{reports:?}");
    let runs = server.recorded(&ledger);
    assert_eq!(runs.len(), 2, "{runs:?}");
    assert!(pods.iter().any(|(pod, _)| runs[0].pod == *pod), "{runs:?}");

    for worker in &mut workers {
        assert_eq!(worker.terminate(), Some(0));
    }
    assert_eq!(poll(&uri).await.consumers, Some(0));
}

fn b64(s: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(s)
}

#[tokio::test]
async fn bullmq_never_used_queue_is_empty() {
    let m = poll(&queue_uri(&unique("bullmq-never"), "")).await;
    assert_eq!(
        (m.visible, m.in_flight, m.delayed, m.idle, m.consumers),
        (0, Some(0), Some(0), Some(true), Some(0))
    );
    assert!(m.missing.is_empty() && m.partial.is_none());
}

#[tokio::test]
async fn bullmq_wrong_type_is_a_bad_response_naming_the_key() {
    let queue = unique("bullmq-wrongtype");
    let mut con = redis_conn(redis_port(), DB);
    let key = format!("bull:{queue}:active");
    let _: () = con.set(&key, "not a list").expect("SET");
    let mut p = provider(&queue_uri(&queue, "")).await;
    match p.poll().await {
        Err(QueueError::BadResponse { detail, .. }) => {
            assert!(
                detail.contains(&key) && detail.contains("string"),
                "{detail}"
            )
        }
        other => panic!("expected BadResponse, got {other:?}"),
    }
    let _: () = con.del(&key).expect("DEL");
}

#[tokio::test]
async fn bullmq_unreachable_redis_is_unavailable() {
    let uri = format!("redis+bullmq://127.0.0.1:{}/0/q", free_port());
    let result = match try_provider(&uri, &Credentials::default()).await {
        Ok(mut p) => p.poll().await.map(|_| ()),
        Err(e) => Err(e),
    };
    assert!(
        matches!(result, Err(QueueError::Unavailable { .. })),
        "{result:?}"
    );
}

/// An ACL user that may read the queue but not run CLIENT: the figures come, the workers
/// do not, and the poll says so.
#[tokio::test]
async fn bullmq_refused_client_list_is_partial() {
    let queue = unique("bullmq-acl");
    let user = unique("wpa-bullmq-acl");
    let mut con = redis_conn(redis_port(), DB);
    let _: () = redis::cmd("ACL")
        .arg("SETUSER")
        .arg(&user)
        .arg("on")
        .arg(">acl-test-password")
        .arg("~*")
        .arg("+@all")
        .arg("-client")
        .query(&mut con)
        .expect("ACL SETUSER");
    add_jobs(&queue, &jobs(&[json!({})]), "bull");
    let creds = Credentials {
        username: Some(user.clone()),
        password: Some("acl-test-password".into()),
        ..Credentials::default()
    };
    let result = async {
        try_provider(&queue_uri(&queue, ""), &creds)
            .await?
            .poll()
            .await
    }
    .await;
    let _: () = redis::cmd("ACL")
        .arg("DELUSER")
        .arg(&user)
        .query(&mut con)
        .expect("ACL DELUSER");
    remove_queue(&queue, "bull", &[]);
    let m = result.expect("the figures without CLIENT LIST");
    assert_eq!(m.visible, 1);
    assert_eq!((m.workers, m.consumers), (None, None));
    let partial = m.partial.expect("partial");
    assert!(
        partial.contains("CLIENT LIST") && partial.contains("NOPERM"),
        "{partial}"
    );
    assert!(!partial.contains("acl-test-password"));
}
