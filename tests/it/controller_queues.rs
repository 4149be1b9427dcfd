//! WPAs that watch several queues (`queueURIs`): the real controller binary, the API
//! double and real brokers. The backlog is the sum over the queues, a scale to zero waits
//! for every queue, and a queue that cannot be read holds the replicas.

use crate::support;

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::apiserver::{ApiServerDouble, Gvr};
use support::broker_procs::free_port;
use support::brokers::{redis_conn, redis_port, unique};
use support::controller::{ControllerProcess, condition, metric_value};
use support::e2e::{self, start_server};
use support::queues::{BEANSTALKD_PORT, BeanstalkClient};

const NS: &str = "edx";
const DB: u8 = 7;

fn redis_uri(queue: &str) -> String {
    format!("redis://127.0.0.1:{}/{DB}/{queue}", redis_port())
}

fn spec_for(queues: &[String], min: i32, max: i32, target: i32) -> Value {
    json!({
        "minReplicas": min,
        "maxReplicas": max,
        "targetMessagesPerWorker": target,
        "deploymentName": "lms-worker",
        "queueURIs": queues,
    })
}

fn drain(queues: &[&str]) {
    let mut conn = redis_conn(redis_port(), DB);
    redis::cmd("DEL")
        .arg(queues)
        .query::<()>(&mut conn)
        .expect("DEL");
}

/// `queue_name -> value` of the per-queue backlog series.
fn per_queue_series(metrics: &str) -> Vec<(String, f64)> {
    metrics
        .lines()
        .filter_map(|line| line.strip_prefix("wpa_queue_messages_per_queue{"))
        .filter_map(|rest| {
            let queue = rest.split("queue_name=\"").nth(1)?.split('"').next()?;
            let value = rest.rsplit(' ').next()?.parse().ok()?;
            Some((queue.to_string(), value))
        })
        .collect()
}

async fn wait_messages(
    server: &ApiServerDouble,
    controller: &ControllerProcess,
    what: &str,
    want: &[i64],
) -> Value {
    e2e::wait_status(server, NS, "lms-worker", what, controller, |s| {
        s["queues"].as_array().map(|qs| {
            qs.iter()
                .map(|q| q["messages"].as_i64())
                .collect::<Vec<_>>()
        }) == Some(want.iter().map(|w| Some(*w)).collect())
    })
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn several_celery_queues_scale_on_their_sum_and_reach_zero_only_when_all_are_empty() {
    let names: Vec<String> = ["default", "high", "high_mem"]
        .iter()
        .map(|q| unique(&format!("edx.lms.core.{q}")))
        .collect();
    let uris: Vec<String> = names.iter().map(|q| redis_uri(q)).collect();
    let server = start_server().await;
    let dir = tempfile::tempdir().expect("tempdir");
    e2e::add_worker(&server, NS, "lms-worker", 0, spec_for(&uris, 0, 10, 5));
    let mut controller = ControllerProcess::start(&server, dir.path(), "queues", &[]);
    wait_messages(&server, &controller, "every queue polled", &[0, 0, 0]).await;
    assert!(server.scale_patches(NS, "lms-worker").is_empty());

    // A task on the second queue alone scales from zero: nothing hides behind the first.
    let pushed = Instant::now();
    e2e::redis_push(redis_port(), DB, &names[1], 3);
    e2e::wait_replicas(
        &server,
        NS,
        "lms-worker",
        1,
        "a task on `high`",
        &controller,
    )
    .await;
    assert!(
        pushed.elapsed() < Duration::from_secs(15),
        "{:?}",
        pushed.elapsed()
    );

    // 4 + 3 + 4 = 11 at 5 per worker: 3 workers (no queue alone needs more than 1).
    e2e::redis_push(redis_port(), DB, &names[0], 4);
    e2e::redis_push(redis_port(), DB, &names[2], 4);
    e2e::wait_replicas(
        &server,
        NS,
        "lms-worker",
        3,
        "the summed backlog",
        &controller,
    )
    .await;
    let status = wait_messages(&server, &controller, "per-queue figures", &[4, 3, 4]).await;
    assert_eq!(status["CurrentMessages"], 11, "{status}");
    let listed: Vec<&str> = status["queues"]
        .as_array()
        .expect("queues")
        .iter()
        .filter_map(|q| q["queue"].as_str())
        .collect();
    assert_eq!(listed, uris.iter().map(String::as_str).collect::<Vec<_>>());
    let metrics = controller.metrics().await;
    let series = per_queue_series(&metrics);
    assert_eq!(
        series.len(),
        3,
        "one wpa_queue_messages_per_queue series per queue:\n{metrics}"
    );
    for (uri, want) in uris.iter().zip([4.0, 3.0, 4.0]) {
        assert!(series.contains(&(uri.clone(), want)), "{uri}: {series:?}");
    }
    assert_eq!(metric_value(&metrics, "wpa_queue_poll_loops"), Some(3.0));

    // Two queues drained, one still holds work: never below one worker (idle window 2 s,
    // scale-down delay 2 s in the harness; wait well past both).
    drain(&[&names[0], &names[2]]);
    e2e::wait_replicas(
        &server,
        NS,
        "lms-worker",
        1,
        "3 tasks left on `high`",
        &controller,
    )
    .await;
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_eq!(
        e2e::replicas(&server, &Gvr::DEPLOYMENTS, NS, "lms-worker"),
        Some(1),
        "a queue with work keeps its worker: {:?}",
        server.scale_patches(NS, "lms-worker")
    );

    // The last queue drained: every queue is idle, so zero.
    drain(&[&names[1]]);
    e2e::wait_replicas(
        &server,
        NS,
        "lms-worker",
        0,
        "every queue empty",
        &controller,
    )
    .await;
    let patches = server.scale_patches(NS, "lms-worker");
    assert_eq!(patches.first(), Some(&1), "{patches:?}");
    assert_eq!(patches.last(), Some(&0), "{patches:?}");
    assert_eq!(
        patches.iter().filter(|&&r| r == 0).count(),
        1,
        "zero only at the end: {patches:?}"
    );

    // Back to one queue: the per-queue lines leave the status and the metrics.
    let single = uris[0].clone();
    server
        .modify(&Gvr::WORKER_POD_AUTOSCALERS, Some(NS), "lms-worker", |w| {
            w["spec"]["queueURI"] = json!(single);
            w["spec"].as_object_mut().expect("spec").remove("queueURIs");
        })
        .expect("spec updated");
    e2e::wait_status(
        &server,
        NS,
        "lms-worker",
        "one queue again",
        &controller,
        |s| {
            s["queues"].is_null()
                && condition(s, "Ready").is_some_and(|c| {
                    c["message"]
                        .as_str()
                        .is_some_and(|m| !m.contains(&names[1]))
                })
        },
    )
    .await;
    let metrics = controller.metrics().await;
    assert!(per_queue_series(&metrics).is_empty(), "{metrics}");
    assert_eq!(metric_value(&metrics, "wpa_queue_poll_loops"), Some(1.0));
    assert_eq!(controller.terminate(), Some(0), "{}", controller.log_text());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_queue_that_cannot_be_read_holds_the_replicas_of_a_several_queue_wpa() {
    // A Redis queue that is empty and a beanstalkd server that is not there (a free port).
    let empty = unique("multi-empty");
    let dead_port = free_port();
    let uris = vec![
        redis_uri(&empty),
        format!("beanstalk://127.0.0.1:{dead_port}/reports"),
    ];
    let server = start_server().await;
    let dir = tempfile::tempdir().expect("tempdir");
    e2e::add_worker(&server, NS, "lms-worker", 2, spec_for(&uris, 0, 10, 5));
    let controller = ControllerProcess::start(&server, dir.path(), "queue-down", &[]);
    let status = e2e::wait_status(&server, NS, "lms-worker", "the failure", &controller, |s| {
        condition(s, "MetricsAvailable").is_some_and(|c| c["status"] == "False")
            && s["queues"][1]["error"].is_string()
    })
    .await;
    let message = condition(&status, "MetricsAvailable").expect("condition")["message"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(message.contains(&dead_port.to_string()), "{message}");
    assert!(status["queues"][0]["error"].is_null(), "{status}");
    assert_eq!(status["lastDecisionReason"], "HoldNoMetrics", "{status}");
    // The idle window and the scale-down delay (2 s each) pass: still 2 workers.
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert!(
        server.scale_patches(NS, "lms-worker").is_empty(),
        "no scale-down while a queue cannot be read: {:?}",
        server.scale_patches(NS, "lms-worker")
    );

    // The WPA moved to a beanstalkd that answers: 12 jobs on its tube scale up.
    let tube = unique("multi-tube");
    let mut producer = BeanstalkClient::connect(BEANSTALKD_PORT);
    for _ in 0..12 {
        producer.put(&tube, "job");
    }
    let moved = vec![
        redis_uri(&empty),
        format!("beanstalk://127.0.0.1:{BEANSTALKD_PORT}/{tube}"),
    ];
    server
        .modify(&Gvr::WORKER_POD_AUTOSCALERS, Some(NS), "lms-worker", |w| {
            w["spec"]["queueURIs"] = json!(moved);
        })
        .expect("spec updated");
    e2e::wait_replicas(
        &server,
        NS,
        "lms-worker",
        3,
        "12 jobs on the tube",
        &controller,
    )
    .await;
    // The status is written after the scale (status writes run in the background).
    e2e::wait_status(
        &server,
        NS,
        "lms-worker",
        "every queue readable",
        &controller,
        |s| {
            s["queues"]
                .as_array()
                .is_some_and(|qs| qs.len() == 2 && qs.iter().all(|q| q["error"].is_null()))
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn both_queue_fields_or_a_repeated_queue_is_reported_not_polled() {
    let server = start_server().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let queue = redis_uri(&unique("multi-bad"));
    let mut both = spec_for(std::slice::from_ref(&queue), 0, 5, 5);
    both["queueURI"] = json!(queue);
    e2e::add_worker(&server, NS, "lms-worker", 1, both);
    // The same queue twice, spelled two ways (the default port written out or not).
    let spelled = format!("redis://127.0.0.1:6379/{DB}/x");
    let twice = spec_for(&[spelled, format!("redis://127.0.0.1/{DB}/x")], 0, 5, 5);
    let mut twice = twice;
    twice["deploymentName"] = json!("cms-worker");
    e2e::add_worker(&server, NS, "cms-worker", 1, twice);
    let controller = ControllerProcess::start(&server, dir.path(), "queue-bad", &[]);
    for (name, words) in [
        ("lms-worker", "exactly one of queueURI and queueURIs"),
        ("cms-worker", "same queue as an earlier entry"),
    ] {
        let status = e2e::wait_status(&server, NS, name, "the problem", &controller, |s| {
            condition(s, "Ready").is_some_and(|c| c["status"] == "False")
        })
        .await;
        let message = e2e::condition_message(&status, "Ready");
        assert!(message.contains(words), "{name}: {message}");
        assert_eq!(status["lastDecisionReason"], "InvalidSpec", "{status}");
    }
    let metrics = controller.metrics().await;
    assert_eq!(metric_value(&metrics, "wpa_queue_poll_loops"), Some(0.0));
}
