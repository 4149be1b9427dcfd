//! End to end: the real `workerpodautoscaler run` binary, the in-memory Kubernetes API server
//! double, and real brokers (Redis, RabbitMQ). Assertions are on what the controller wrote to
//! the API (scale PATCHes, status, events) and on its /metrics.

use crate::support;

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::apiserver::{ApiServerDouble, Fault, Gvr, objects};
use support::brokers::{redis_conn, redis_port, unique};
use support::brokers_amqp;
use support::controller::{
    ControllerProcess, condition, event_reasons, metric_value, wpa, wpa_status,
};
use support::e2e::{self, WAIT, spec, start_server};

const NS: &str = "workers";
const DB: u8 = 5;

fn redis_uri(queue: &str) -> String {
    format!("redis://127.0.0.1:{}/{DB}/{queue}", redis_port())
}

fn push(queue: &str, n: usize) {
    e2e::redis_push(redis_port(), DB, queue, n);
}

fn drain(queue: &str) {
    let mut conn = redis_conn(redis_port(), DB);
    redis::cmd("DEL")
        .arg(queue)
        .query::<()>(&mut conn)
        .expect("DEL");
}

/// A fresh API double, a temp dir for logs and kubeconfig, and a unique queue name.
async fn setup(prefix: &str) -> (ApiServerDouble, tempfile::TempDir, String) {
    let server = start_server().await;
    let dir = tempfile::tempdir().expect("tempdir");
    (server, dir, unique(prefix))
}

/// A worker Deployment at zero replicas and the WPA that scales it, both named `name`.
fn add_worker(server: &ApiServerDouble, name: &str, spec: Value) {
    e2e::add_worker(server, NS, name, 0, spec);
}

fn deployment_replicas(server: &ApiServerDouble, name: &str) -> Option<i64> {
    e2e::replicas(server, &Gvr::DEPLOYMENTS, NS, name)
}

async fn wait_replicas(
    server: &ApiServerDouble,
    name: &str,
    want: i64,
    what: &str,
    controller: &ControllerProcess,
) {
    e2e::wait_replicas(server, NS, name, want, what, controller).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn redis_list_scales_from_zero_up_and_back_to_zero() {
    let (server, dir, queue) = setup("e2e-redis").await;
    add_worker(
        &server,
        "worker",
        spec(&redis_uri(&queue), "worker", 0, 5, 10),
    );
    let mut controller = ControllerProcess::start(&server, dir.path(), "redis", &[]);

    // Ready once the empty queue has been polled: no scaling at zero backlog.
    e2e::wait_status(&server, NS, "worker", "first poll", &controller, |s| {
        condition(s, "MetricsAvailable").is_some_and(|c| c["status"] == "True")
    })
    .await;
    assert!(
        server.scale_patches(NS, "worker").is_empty(),
        "no scaling on an empty queue"
    );

    // The first message scales from zero, well before the 30 s resync.
    let pushed = Instant::now();
    push(&queue, 1);
    wait_replicas(&server, "worker", 1, "first message", &controller).await;
    assert!(
        pushed.elapsed() < Duration::from_secs(15),
        "took {:?}, not a wakeup",
        pushed.elapsed()
    );

    // Backlog 35 at 10 per worker: 4 workers.
    push(&queue, 34);
    wait_replicas(&server, "worker", 4, "backlog", &controller).await;
    e2e::wait_status(
        &server,
        NS,
        "worker",
        "backlog reported",
        &controller,
        |s| s["CurrentMessages"] == 35 && s["DesiredReplicas"] == 4 && s["CurrentReplicas"] == 4,
    )
    .await;

    // Queue drained: back to zero only once the workers count as idle.
    drain(&queue);
    wait_replicas(&server, "worker", 0, "idle", &controller).await;
    let status = e2e::wait_status(&server, NS, "worker", "scaled to zero", &controller, |s| {
        s["CurrentReplicas"] == 0
    })
    .await;
    assert!(
        status["lastScaleDownTime"].is_string() && status["LastScaleTime"].is_string(),
        "{status}"
    );
    assert_eq!(server.scale_patches(NS, "worker"), vec![1, 4, 0]);
    e2e::wait_events(&server, NS, "worker", "ScaledDown", |e| {
        e["note"]
            .as_str()
            .is_some_and(|n| n.contains("from 4 to 0"))
    })
    .await;
    let reasons = event_reasons(&server, NS, "worker");
    assert!(
        reasons.iter().any(|r| r == "ScaledUp") && reasons.iter().any(|r| r == "ScaledDown"),
        "{reasons:?}"
    );

    let metrics = controller.metrics().await;
    assert_eq!(
        metric_value(&metrics, "wpa_worker_desired{"),
        Some(0.0),
        "{metrics}"
    );
    assert_eq!(
        metric_value(&metrics, "wpa_queue_poll_loops"),
        Some(1.0),
        "{metrics}"
    );
    drain(&queue);
    // SIGTERM: a clean, prompt exit.
    assert_eq!(
        controller.terminate(),
        Some(0),
        "log:\n{}",
        controller.log_text()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn rabbitmq_queue_scales_from_and_to_zero_and_holds_while_in_flight() {
    let (server, dir, queue) = setup("e2e-rabbit").await;
    let (_connection, channel) = brokers_amqp::open(5672, "/").await;
    brokers_amqp::declare(&channel, &queue, false).await;
    let uri =
        format!("amqp://guest:guest@127.0.0.1:5672/%2F/{queue}?management=http://127.0.0.1:15672");
    server
        .insert(objects::deployment(NS, "consumer", 0))
        .expect("deployment");
    server
        .insert(wpa(NS, "consumer", spec(&uri, "consumer", 0, 4, 2)))
        .expect("wpa");
    let controller = ControllerProcess::start(&server, dir.path(), "rabbit", &[]);

    brokers_amqp::publish(&channel, &queue, 3).await;
    wait_replicas(
        &server,
        "consumer",
        2,
        "3 messages at 2 per worker",
        &controller,
    )
    .await;

    // A consumer takes both... all three messages and does not ack: nothing is ready, but the
    // work is in flight, so the workers stay.
    let held = brokers_amqp::hold_deliveries(5672, "/", &queue, 3).await;
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_eq!(
        deployment_replicas(&server, "consumer"),
        Some(2),
        "held while in flight: {}",
        wpa_status(&server, NS, "consumer")
    );
    // The management API's statistics lag by up to RabbitMQ's collect interval (5 s by
    // default): wait for them rather than expecting them after a fixed sleep.
    e2e::wait_status(
        &server,
        NS,
        "consumer",
        "3 messages reported in flight",
        &controller,
        |s| s["inFlightMessages"] == 3,
    )
    .await;

    // The holder goes away (its messages return to the queue) and the queue is purged:
    // nothing ready, nothing in flight, workers idle -> zero.
    drop(held);
    let mut emptied = false;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let purged = channel
            .queue_purge(
                queue.as_str().into(),
                lapin::options::QueuePurgeOptions::default(),
            )
            .await
            .expect("purge");
        let declared = channel
            .queue_declare(
                queue.as_str().into(),
                lapin::options::QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                lapin::types::FieldTable::default(),
            )
            .await
            .expect("passive declare");
        if purged == 0 && declared.message_count() == 0 {
            emptied = true;
            break;
        }
    }
    assert!(emptied, "the queue could not be emptied");
    wait_replicas(&server, "consumer", 0, "queue empty and idle", &controller).await;
    brokers_amqp::delete(&channel, &queue).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn bounds_disruption_and_dry_run() {
    let (server, dir, capped) = setup("e2e-cap").await;
    let dry = unique("e2e-dry");
    server
        .insert(objects::deployment(NS, "capped", 0))
        .expect("deployment");
    server
        .insert(objects::deployment(NS, "dry", 0))
        .expect("deployment");
    let mut capped_spec = spec(&redis_uri(&capped), "capped", 0, 3, 10);
    capped_spec["maxDisruption"] = json!("1");
    server.insert(wpa(NS, "capped", capped_spec)).expect("wpa");
    let mut dry_spec = spec(&redis_uri(&dry), "dry", 0, 10, 10);
    dry_spec["dryRun"] = json!(true);
    server.insert(wpa(NS, "dry", dry_spec)).expect("wpa");
    // Workers never count as idle here, so scale-downs are the partial, bounded kind.
    let controller =
        ControllerProcess::start(&server, dir.path(), "bounds", &["--idle-window=600"]);

    // 100 messages want 10 workers; max is 3.
    push(&capped, 100);
    push(&dry, 100);
    wait_replicas(&server, "capped", 3, "capped at max", &controller).await;
    e2e::wait_status(&server, NS, "capped", "limited by max", &controller, |s| {
        condition(s, "ScalingLimited").is_some_and(|c| c["status"] == "True")
    })
    .await;

    // Not idle, no backlog: step down by at most maxDisruption (1) per decision.
    drain(&capped);
    wait_replicas(&server, "capped", 2, "one step down", &controller).await;
    wait_replicas(&server, "capped", 0, "down to zero", &controller).await;
    assert_eq!(
        server.scale_patches(NS, "capped"),
        vec![3, 2, 1, 0],
        "one worker per step"
    );

    // The dry-run WPA decided but never scaled.
    let status = e2e::wait_status(&server, NS, "dry", "dry run decides", &controller, |s| {
        s["DesiredReplicas"] == 10
    })
    .await;
    assert_eq!(
        condition(&status, "AbleToScale").map(|c| c["reason"].clone()),
        Some(json!("DryRun")),
        "{status}"
    );
    assert!(
        server.scale_patches(NS, "dry").is_empty(),
        "dry run must never PATCH /scale"
    );
    assert_eq!(deployment_replicas(&server, "dry"), Some(0));
    e2e::wait_events(&server, NS, "dry", "DryRun", |_| true).await;
    drain(&dry);
}

#[tokio::test(flavor = "multi_thread")]
async fn invalid_wpas_are_reported_while_valid_ones_keep_scaling() {
    let (server, dir, queue) = setup("e2e-valid").await;
    server
        .insert(objects::deployment(NS, "good", 0))
        .expect("deployment");
    // The API double does not run the CRD's CEL rules; the controller must cope on its own.
    server
        .insert(wpa(
            NS,
            "bad-uri",
            spec("kafka://broker/topic", "good", 0, 3, 10),
        ))
        .expect("wpa");
    server
        .insert(wpa(
            NS,
            "no-target",
            spec(&redis_uri(&queue), "missing", 0, 3, 10),
        ))
        .expect("wpa");
    server
        .insert(wpa(
            NS,
            "min-above-max",
            spec(&redis_uri(&queue), "good", 5, 3, 10),
        ))
        .expect("wpa");
    let mut secret_spec = spec(&redis_uri(&queue), "good", 0, 3, 10);
    secret_spec["credentialsSecretRef"] = json!({"name": "absent"});
    server
        .insert(wpa(NS, "no-secret", secret_spec))
        .expect("wpa");
    server
        .insert(wpa(NS, "good", spec(&redis_uri(&queue), "good", 0, 3, 10)))
        .expect("wpa");
    let controller = ControllerProcess::start(&server, dir.path(), "invalid", &[]);

    push(&queue, 15);
    wait_replicas(&server, "good", 2, "the valid WPA", &controller).await;
    for (name, reason) in [
        ("bad-uri", "InvalidQueueURI"),
        ("no-target", "TargetNotFound"),
        ("min-above-max", "InvalidSpec"),
        ("no-secret", "SecretNotFound"),
    ] {
        e2e::wait_status(&server, NS, name, reason, &controller, |s| {
            condition(s, "Ready").is_some_and(|c| c["reason"] == reason)
        })
        .await;
        e2e::wait_events(&server, NS, name, reason, |_| true).await;
    }
    drain(&queue);
}

#[tokio::test(flavor = "multi_thread")]
async fn two_wpas_on_one_queue_share_one_poller() {
    let (server, dir, queue) = setup("e2e-shared").await;
    server
        .insert(objects::deployment(NS, "a", 0))
        .expect("deployment");
    server
        .insert(objects::deployment(NS, "b", 0))
        .expect("deployment");
    server
        .insert(wpa(NS, "a", spec(&redis_uri(&queue), "a", 0, 5, 10)))
        .expect("wpa");
    server
        .insert(wpa(NS, "b", spec(&redis_uri(&queue), "b", 0, 5, 5)))
        .expect("wpa");
    let controller = ControllerProcess::start(&server, dir.path(), "shared", &[]);

    push(&queue, 20);
    wait_replicas(&server, "a", 2, "a", &controller).await;
    wait_replicas(&server, "b", 4, "b", &controller).await;
    let metrics = controller.metrics().await;
    assert_eq!(
        metric_value(&metrics, "wpa_queue_poll_loops"),
        Some(1.0),
        "{metrics}"
    );

    // Deleting both WPAs stops the loop and leaves the targets as they are.
    server
        .delete(&Gvr::WORKER_POD_AUTOSCALERS, Some(NS), "a")
        .expect("delete a");
    server
        .delete(&Gvr::WORKER_POD_AUTOSCALERS, Some(NS), "b")
        .expect("delete b");
    let mut loops = None;
    for _ in 0..100 {
        loops = metric_value(&controller.metrics().await, "wpa_queue_poll_loops");
        if loops == Some(0.0) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(loops, Some(0.0), "the poll loop must stop");
    assert_eq!(deployment_replicas(&server, "a"), Some(2));
    assert_eq!(deployment_replicas(&server, "b"), Some(4));
    drain(&queue);
}

#[tokio::test(flavor = "multi_thread")]
async fn api_faults_are_survived_without_duplicate_scaling() {
    let (server, dir, queue) = setup("e2e-faults").await;
    add_worker(
        &server,
        "worker",
        spec(&redis_uri(&queue), "worker", 0, 5, 10),
    );
    // The first two scale PATCHes fail with 500, the first status write with 409.
    server.inject(
        Fault::status(500)
            .method("PATCH")
            .path_contains("/scale")
            .times(2),
    );
    server.inject(
        Fault::status(409)
            .method("PATCH")
            .path_contains("/status")
            .times(1),
    );
    let controller = ControllerProcess::start(&server, dir.path(), "faults", &[]);

    push(&queue, 25);
    wait_replicas(&server, "worker", 3, "after injected 500s", &controller).await;

    // Watches dropped and history compacted: the controller relists and keeps working.
    server.compact_history();
    server.drop_watches();
    push(&queue, 10);
    wait_replicas(
        &server,
        "worker",
        4,
        "after dropped watches and 410",
        &controller,
    )
    .await;
    // One successful PATCH per change, no duplicates (the double applies a PATCH before it
    // records it, so wait for the record).
    e2e::assert_patches(&server, NS, "worker", &[3, 4]).await;
    assert!(!controller.log_text().contains("panicked"));
    drain(&queue);
}

#[tokio::test(flavor = "multi_thread")]
async fn leader_failover_hands_scaling_to_the_standby() {
    let (server, dir, queue) = setup("e2e-leader").await;
    add_worker(
        &server,
        "worker",
        spec(&redis_uri(&queue), "worker", 0, 10, 10),
    );
    let flags = [
        "--leader-elect",
        "--leader-election-namespace=kube-system",
        "--leader-election-lease-duration=3",
    ];
    let mut first = ControllerProcess::start(&server, dir.path(), "first", &flags);
    let holder = server
        .wait_for(WAIT, |s| {
            s.get(&Gvr::LEASES, Some("kube-system"), "workerpodautoscaler")?["spec"]["holderIdentity"]
                .as_str()
                .map(str::to_string)
        })
        .await
        .expect("a leader is elected");
    assert_eq!(holder, "first");
    let second = ControllerProcess::start(&server, dir.path(), "second", &flags);

    push(&queue, 10);
    wait_replicas(&server, "worker", 1, "scaled by the leader", &first).await;
    // The standby is ready (it knows it waits) but never writes.
    let mut ready = 0;
    for _ in 0..50 {
        ready = second.readyz().await;
        if ready == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(ready, 200, "standby readiness");
    assert!(
        !second.log_text().contains("scaled"),
        "the standby must not scale"
    );

    first.kill();
    let taken = server
        .wait_for(WAIT, |s| {
            let lease = s.get(&Gvr::LEASES, Some("kube-system"), "workerpodautoscaler")?;
            (lease["spec"]["holderIdentity"] == "second").then_some(())
        })
        .await;
    assert!(
        taken.is_some(),
        "the standby takes the lease; log:\n{}",
        second.log_text()
    );
    push(&queue, 20);
    wait_replicas(&server, "worker", 3, "scaled by the new leader", &second).await;
    assert_eq!(server.scale_patches(NS, "worker"), vec![1, 3]);
    drain(&queue);
}

#[tokio::test(flavor = "multi_thread")]
async fn behavior_rate_limits_scale_up() {
    let (server, dir, queue) = setup("e2e-behavior").await;
    let mut limited = spec(&redis_uri(&queue), "worker", 0, 10, 10);
    // At most one more pod per 2 s, whatever the backlog wants.
    limited["behavior"] = json!({
        "scaleUp": {"policies": [{"type": "Pods", "value": 1, "periodSeconds": 2}]}
    });
    add_worker(&server, "worker", limited);
    let controller = ControllerProcess::start(&server, dir.path(), "behavior", &[]);

    push(&queue, 40);
    wait_replicas(&server, "worker", 4, "rate-limited scale-up", &controller).await;
    // One pod per step.
    e2e::assert_patches(&server, NS, "worker", &[1, 2, 3, 4]).await;
    e2e::wait_status(&server, NS, "worker", "reported", &controller, |s| {
        s["DesiredReplicas"] == 4
    })
    .await;
    drain(&queue);
}

#[tokio::test(flavor = "multi_thread")]
async fn api_requests_are_paced_by_qps_and_burst() {
    let (server, dir, queue) = setup("e2e-qps").await;
    let names: Vec<String> = (0..5).map(|i| format!("paced-{i}")).collect();
    for name in &names {
        let list = format!("{queue}-{name}");
        push(&list, 3);
        add_worker(&server, name, spec(&redis_uri(&list), name, 0, 5, 1));
    }
    let (qps, burst) = (4.0, 2.0);
    let controller = ControllerProcess::start(
        &server,
        dir.path(),
        "paced",
        &["--k8s-api-qps=4", "--k8s-api-burst=2"],
    );
    // Every WPA still gets its scale-up (5 scale PATCHes, 5 status writes, events): requests
    // wait for a token, none is dropped.
    for name in &names {
        wait_replicas(&server, name, 3, "paced scale-up", &controller).await;
    }
    // Status writes come after the scale writes in the budget, but they come.
    for name in &names {
        e2e::wait_status(
            &server,
            NS,
            name,
            "status after the scale",
            &controller,
            |s| s["DesiredReplicas"] == 3,
        )
        .await;
    }
    // No window of the recorded requests holds more than the bucket allows: `burst` at once,
    // then `qps` per second. One request of slack for the double's timestamping. Scale
    // writes have a budget of their own (--k8s-api-scale-qps), checked below.
    let recorded = server.recorded();
    let is_scale = |r: &&support::apiserver::RecordedRequest| {
        r.path.ends_with("/scale") && matches!(r.method.as_str(), "PATCH" | "PUT")
    };
    let times: Vec<jiff::Timestamp> = recorded
        .iter()
        .filter(|r| !is_scale(r))
        .map(|r| r.at)
        .collect();
    assert_eq!(
        recorded.iter().filter(is_scale).count(),
        names.len(),
        "one scale write per WPA"
    );
    assert!(times.len() > 10, "{} requests", times.len());
    for i in 0..times.len() {
        for j in i..times.len() {
            let seconds = (times[j] - times[i])
                .total(jiff::Unit::Second)
                .expect("span");
            let allowed = burst + qps * seconds + 1.0;
            assert!(
                (j - i + 1) as f64 <= allowed,
                "{} requests within {seconds:.3}s (allowed {allowed:.1})",
                j - i + 1
            );
        }
    }
    for name in &names {
        drain(&format!("{queue}-{name}"));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn readyz_turns_ready_once_the_caches_are_synced() {
    let (server, dir, queue) = setup("e2e-readyz").await;
    add_worker(
        &server,
        "worker",
        spec(&redis_uri(&queue), "worker", 0, 5, 10),
    );
    let controller = ControllerProcess::start(&server, dir.path(), "readyz", &[]);
    let deadline = Instant::now() + WAIT;
    let mut status = 0;
    while Instant::now() < deadline {
        status = controller.readyz().await;
        if status == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        status,
        200,
        "/readyz never turned ready without leader election\ncontroller log:\n{}",
        controller.log_text()
    );
}
