//! Worker-aware scale-in with real Celery workers: the API double runs Pods for the
//! Deployment, the pod runner starts one Celery worker per Pod and stops it as a kubelet
//! would (SIGTERM, SIGKILL after a grace period shorter than the tasks), and the real
//! controller binary listens to the workers' heartbeats on the broker.

use crate::support;

use std::time::Duration;

use serde_json::{Value, json};
use support::apiserver::{ApiServerDouble, Gvr, objects};
use support::brokers::{redis_broker, redis_port, unique};
use support::celery_pods::{CeleryPodConfig, CeleryPodRunner, WorkerRecord};
use support::celery_tasks::{TaskLedger, TaskTally, send_sleep_tasks};
use support::controller::{ControllerProcess, wpa, wpa_status};
use support::e2e;

const NS: &str = "celery";
const DB: u8 = 9;
/// Celery workers take a few seconds to start on a loaded 2-core machine.
const STARTUP: Duration = Duration::from_secs(90);
/// Longer than the grace period: a busy worker that gets SIGTERM loses its task.
const TASK_SECONDS: f64 = 25.0;
const GRACE: Duration = Duration::from_secs(3);

fn spec(queue_uri: &str) -> Value {
    json!({
        "minReplicas": 0,
        "maxReplicas": 10,
        "targetMessagesPerWorker": 5,
        "deploymentName": "worker",
        "queueURI": queue_uri,
    })
}

fn running(records: &[WorkerRecord]) -> usize {
    records.iter().filter(|r| r.running()).count()
}

/// The Pods whose workers started a task.
fn busy_pods(ledger: &TaskLedger) -> Vec<String> {
    let mut pods: Vec<String> = ledger
        .started()
        .iter()
        .filter_map(|run| run.host.strip_prefix("celery@").map(str::to_string))
        .collect();
    pods.sort();
    pods.dedup();
    pods
}

struct Broker {
    /// What Celery connects to.
    celery: String,
    /// The WPA's queueURI for `queue`.
    uri: String,
}

fn redis(queue: &str) -> Broker {
    Broker {
        celery: redis_broker(redis_port(), DB),
        uri: format!("redis://127.0.0.1:{}/{DB}/{queue}", redis_port()),
    }
}

fn rabbitmq(queue: &str) -> Broker {
    Broker {
        celery: "amqp://guest:guest@127.0.0.1:5672//".to_string(),
        uri: format!("amqp://guest:guest@127.0.0.1:5672/%2F/{queue}"),
    }
}

/// An API double running the Pods of `workload` (named "worker"), a task ledger, and the
/// pod runner's settings for it: Celery on `broker`, the short grace, runs recorded.
async fn pods_and_ledger(
    workload: Value,
    gvr: &Gvr,
    broker: &Broker,
    queue: &str,
) -> (ApiServerDouble, TaskLedger, CeleryPodConfig) {
    let server = ApiServerDouble::start().await.expect("API double");
    server.simulate_pods(true);
    server.insert(workload).expect("workload");
    let ledger = TaskLedger::new(&redis_broker(redis_port(), DB), &unique("wpa-ledger"));
    let mut config = CeleryPodConfig::new(gvr, NS, "worker", &broker.celery, queue);
    config.kill_grace = GRACE;
    config.record = ledger.record_target();
    (server, ledger, config)
}

/// 4 Pods with a worker each, 2 of them running a long task, the queue empty: the
/// controller scales in to the 2 busy Pods, whose tasks finish, then to zero.
async fn busy_pods_survive_the_scale_in(broker: Broker, queue: &str, acks_late: bool) {
    let (server, ledger, mut config) = pods_and_ledger(
        objects::deployment(NS, "worker", 4),
        &Gvr::DEPLOYMENTS,
        &broker,
        queue,
    )
    .await;
    let logs = tempfile::tempdir().expect("tempdir");
    config.acks_late = acks_late;
    config.log_dir = Some(logs.path().to_path_buf());
    if !acks_late {
        // With early ack a busy worker reserves the next task while it runs one, so both
        // tasks could land on one worker; this test wants two busy pods. (A reserved task
        // only ever sits on a busy pod, which is protected anyway.)
        config.extra_args = vec!["--disable-prefetch".into()];
    }
    let runner = CeleryPodRunner::start(&server, config);
    assert!(
        runner.wait_until(STARTUP, |r| running(r) == 4).await,
        "{:?}",
        runner.records()
    );
    let sent = send_sleep_tasks(&broker.celery, queue, 2, TASK_SECONDS);
    support::brokers::eventually(STARTUP, "both long tasks to start", async || {
        (ledger.started().len() == 2).then_some(())
    })
    .await;
    let busy = busy_pods(&ledger);
    assert_eq!(busy.len(), 2, "one task per worker: {:?}", ledger.started());

    server
        .insert(wpa(NS, "worker", spec(&broker.uri)))
        .expect("wpa");
    let dir = tempfile::tempdir().expect("tempdir");
    let mut controller = ControllerProcess::start(&server, dir.path(), "workers", &[]);

    // The scale-in stops at the two busy pods, and the status says so.
    e2e::wait_replicas(&server, NS, "worker", 2, "the busy pods", &controller).await;
    e2e::wait_status(&server, NS, "worker", "two busy pods", &controller, |s| {
        s["workers"]["busy"] == 2 && s["lastDecisionReason"] == "HoldBusyWorkers"
    })
    .await;
    let survivors = server.live_pod_names(&Gvr::DEPLOYMENTS, NS, "worker");
    let mut survivors_sorted = survivors.clone();
    survivors_sorted.sort();
    assert_eq!(
        survivors_sorted, busy,
        "the idle pods went, the busy ones stayed"
    );
    // An Event names the busy pods the scale-down kept (Events are sent in the background).
    let protected = server
        .wait_for(e2e::WAIT, |s| {
            s.requests("POST", "/events")
                .iter()
                .any(|r| {
                    r.body["reason"] == "ProtectedBusyPods"
                        && busy.iter().all(|pod| {
                            r.body["note"]
                                .as_str()
                                .or_else(|| r.body["message"].as_str())
                                .is_some_and(|note| note.contains(pod.as_str()))
                        })
                })
                .then_some(())
        })
        .await;
    assert!(
        protected.is_some(),
        "a ProtectedBusyPods Event naming {busy:?}"
    );
    for pod in &survivors {
        let summary = server
            .pods_of(&Gvr::DEPLOYMENTS, NS, "worker")
            .into_iter()
            .find(|p| &p.name == pod)
            .expect("pod");
        assert_eq!(
            summary.deletion_cost.as_deref(),
            Some("1000"),
            "{summary:?}"
        );
    }

    // The tasks finish; then every worker is idle for the idle window: zero.
    support::brokers::eventually(
        Duration::from_secs(TASK_SECONDS as u64 + 60),
        "both tasks to finish",
        async || (ledger.tally(&sent).completed == 2).then_some(()),
    )
    .await;
    e2e::wait_replicas(&server, NS, "worker", 0, "every worker idle", &controller).await;
    let last_task_end = ledger
        .finished()
        .iter()
        .map(|run| run.at)
        .fold(f64::MIN, f64::max);
    let zero_at = server
        .requests("PATCH", "/deployments/worker/scale")
        .last()
        .map(|r| r.at.as_millisecond() as f64 / 1000.0)
        .expect("the scale to zero");
    assert!(
        runner.wait_until(STARTUP, |r| running(r) == 0).await,
        "{:?}",
        runner.records()
    );
    assert_eq!(
        ledger.tally(&sent),
        TaskTally {
            completed: 2,
            interrupted: 0,
            never_started: 0
        }
    );
    for record in runner.records() {
        assert!(
            !record.killed(),
            "no worker was killed mid-task: {record:?}"
        );
    }
    // 4 -> 2, then down as the tasks end (one may end before the other: 2 -> 1 -> 0).
    let patches = server.scale_patches(NS, "worker");
    assert_eq!(patches.first(), Some(&2), "{patches:?}");
    assert_eq!(patches.last(), Some(&0), "{patches:?}");
    assert!(patches.windows(2).all(|w| w[1] < w[0]), "{patches:?}");
    // Idle window (2 s here) + the next heartbeat (2 s) + a poll and a reconcile; the bound
    // is loose for a loaded machine, the figure is printed (and benchmarked in hack/bench.sh).
    let to_zero = zero_at - last_task_end;
    eprintln!("scale to zero {to_zero:.1} s after the last task ended");
    assert!((0.0..30.0).contains(&to_zero), "{to_zero}");
    assert_eq!(controller.terminate(), Some(0), "{}", controller.log_text());
}

#[tokio::test(flavor = "multi_thread")]
async fn redis_early_ack_busy_pods_survive_the_scale_in() {
    let queue = unique("busy-early");
    busy_pods_survive_the_scale_in(redis(&queue), &queue, false).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn redis_late_ack_busy_pods_survive_the_scale_in() {
    let queue = unique("busy-late");
    busy_pods_survive_the_scale_in(redis(&queue), &queue, true).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn rabbitmq_late_ack_busy_pods_survive_the_scale_in() {
    let queue = unique("busy-amqp");
    busy_pods_survive_the_scale_in(rabbitmq(&queue), &queue, true).await;
}

/// Workers started with `--without-heartbeat` report nothing: the decision falls back to the
/// queue figures (practo's) and the status says why.
#[tokio::test(flavor = "multi_thread")]
async fn without_heartbeats_the_decision_is_practos_and_says_so() {
    let queue = unique("no-heartbeat");
    let broker = redis(&queue);
    let server = ApiServerDouble::start().await.expect("API double");
    server.simulate_pods(true);
    server
        .insert(objects::deployment(NS, "worker", 2))
        .expect("deployment");
    let mut config = CeleryPodConfig::new(&Gvr::DEPLOYMENTS, NS, "worker", &broker.celery, &queue);
    config.extra_args = vec!["--without-heartbeat".into(), "--without-gossip".into()];
    config.kill_grace = GRACE;
    let runner = CeleryPodRunner::start(&server, config);
    assert!(runner.wait_until(STARTUP, |r| running(r) == 2).await);
    server
        .insert(wpa(NS, "worker", spec(&broker.uri)))
        .expect("wpa");
    let dir = tempfile::tempdir().expect("tempdir");
    let mut controller = ControllerProcess::start(&server, dir.path(), "no-heartbeat", &[]);
    e2e::wait_replicas(
        &server,
        NS,
        "worker",
        0,
        "an empty, idle queue",
        &controller,
    )
    .await;
    // The status written with the scale-down: practo's idle scale-down, with both pods
    // unknown and the reason why.
    let status = wpa_status(&server, NS, "worker");
    // Written in the background, after the scale.
    let said = server
        .wait_for(e2e::WAIT, |s| {
            s.requests("PATCH", "/workerpodautoscalers/worker/status")
                .iter()
                .any(|r| {
                    let written = &r.body["status"];
                    written["lastDecisionReason"] == "ScaleDownIdle"
                        && written["workers"]["unknown"] == 2
                        && written["workers"]["message"]
                            .as_str()
                            .is_some_and(|m| m.contains("no worker reports for any of the 2 pods"))
                })
                .then_some(())
        })
        .await
        .is_some();
    assert!(said, "the status said why: {status}");
    assert!(runner.wait_until(STARTUP, |r| running(r) == 0).await);
    assert_eq!(controller.terminate(), Some(0), "{}", controller.log_text());
}

/// A StatefulSet removes its highest ordinals whatever the deletion costs: with one task
/// running on ordinal k of 0..=2, the scale-in stops at k + 1 until the task is done.
#[tokio::test(flavor = "multi_thread")]
async fn a_statefulset_scales_in_only_past_its_highest_busy_ordinal() {
    let queue = unique("busy-sts");
    let broker = redis(&queue);
    let (server, ledger, config) = pods_and_ledger(
        objects::statefulset(NS, "worker", 3),
        &Gvr::STATEFULSETS,
        &broker,
        &queue,
    )
    .await;
    let runner = CeleryPodRunner::start(&server, config);
    assert!(runner.wait_until(STARTUP, |r| running(r) == 3).await);
    let sent = send_sleep_tasks(&broker.celery, &queue, 1, 15.0);
    support::brokers::eventually(STARTUP, "the task to start", async || {
        (ledger.started().len() == 1).then_some(())
    })
    .await;
    let busy = busy_pods(&ledger);
    let ordinal: i64 = busy[0]
        .strip_prefix("worker-")
        .and_then(|n| n.parse().ok())
        .expect("a StatefulSet pod name");

    let mut spec = spec(&broker.uri);
    spec.as_object_mut().expect("spec").remove("deploymentName");
    spec["scaleTargetRef"] =
        json!({"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "worker"});
    server.insert(wpa(NS, "worker", spec)).expect("wpa");
    let dir = tempfile::tempdir().expect("tempdir");
    let mut controller = ControllerProcess::start(&server, dir.path(), "sts", &[]);
    support::brokers::eventually(Duration::from_secs(60), "the task to finish", async || {
        (ledger.tally(&sent).completed == 1).then_some(())
    })
    .await;
    // While the task ran, the set never went below its busy ordinal + 1.
    let finished_at = ledger.finished()[0].at;
    let history = server.replica_history(&Gvr::STATEFULSETS, Some(NS), "worker");
    let patches = server.requests("PATCH", "/statefulsets/worker/scale");
    for patch in &patches {
        let at = patch.at.as_millisecond() as f64 / 1000.0;
        let to = patch.body["spec"]["replicas"].as_i64().expect("replicas");
        assert!(
            at >= finished_at || to > ordinal,
            "scaled to {to} while ordinal {ordinal} ran its task: {history:?}"
        );
    }
    e2e::wait_replicas_of(
        &server,
        &Gvr::STATEFULSETS,
        NS,
        "worker",
        0,
        "the task done",
        &controller,
    )
    .await;
    assert_eq!(
        ledger.tally(&sent),
        TaskTally {
            completed: 1,
            interrupted: 0,
            never_started: 0
        }
    );
    assert!(
        runner.records().iter().all(|r| !r.killed()),
        "{:?}",
        runner.records()
    );
    assert_eq!(controller.terminate(), Some(0), "{}", controller.log_text());
}

/// A worker killed outright sends no `worker-offline`: after three missed heartbeats it is
/// gone, its pod is unknown, and it no longer holds replicas.
#[tokio::test(flavor = "multi_thread")]
async fn a_worker_that_dies_stops_holding_its_pod() {
    let queue = unique("busy-dies");
    let broker = redis(&queue);
    let (server, ledger, mut config) = pods_and_ledger(
        objects::deployment(NS, "worker", 2),
        &Gvr::DEPLOYMENTS,
        &broker,
        &queue,
    )
    .await;
    // Early ack: the killed worker's task is gone from the broker too.
    config.acks_late = false;
    config.extra_args = vec!["--disable-prefetch".into()];
    let runner = CeleryPodRunner::start(&server, config);
    assert!(runner.wait_until(STARTUP, |r| running(r) == 2).await);
    send_sleep_tasks(&broker.celery, &queue, 1, 120.0);
    support::brokers::eventually(STARTUP, "the task to start", async || {
        (ledger.started().len() == 1).then_some(())
    })
    .await;
    let busy = busy_pods(&ledger);
    server
        .insert(wpa(NS, "worker", spec(&broker.uri)))
        .expect("wpa");
    let dir = tempfile::tempdir().expect("tempdir");
    let mut controller = ControllerProcess::start(&server, dir.path(), "dies", &[]);
    e2e::wait_replicas(&server, NS, "worker", 1, "the busy pod", &controller).await;
    assert_eq!(server.live_pod_names(&Gvr::DEPLOYMENTS, NS, "worker"), busy);

    // The worker process dies (OOM kill, say); its pod stays.
    let record = runner.record(&busy[0]).expect("record");
    let pid = libc::pid_t::try_from(record.pid).expect("pid");
    // SAFETY: a plain kill(2) of the test's own child process group.
    #[allow(unsafe_code)]
    let killed = unsafe { libc::killpg(pid, libc::SIGKILL) };
    assert_eq!(killed, 0);
    // Its heartbeats stop; three intervals later it is gone and holds nothing.
    let killed_at = std::time::Instant::now();
    e2e::wait_replicas(&server, NS, "worker", 0, "nothing holds it", &controller).await;
    eprintln!("released {:?} after the worker died", killed_at.elapsed());
    assert_eq!(server.scale_patches(NS, "worker"), vec![1, 0]);
    assert_eq!(controller.terminate(), Some(0), "{}", controller.log_text());
}

/// An HTTP endpoint's `workers` list (by pod name or pod IP) protects busy pods as Celery's
/// heartbeats do: the scale-in stops at them, and they go once the list says they are idle.
#[tokio::test(flavor = "multi_thread")]
async fn an_http_endpoints_workers_list_protects_its_busy_pods() {
    use axum::routing::get;
    use std::sync::{Arc, Mutex};

    let server = ApiServerDouble::start().await.expect("API double");
    server.simulate_pods(true);
    server
        .insert(objects::deployment(NS, "worker", 4))
        .expect("deployment");
    let pods = server.pods_of(&Gvr::DEPLOYMENTS, NS, "worker");
    assert_eq!(pods.len(), 4);
    // Two busy: one named, one by IP; the two others idle.
    let workers = Arc::new(Mutex::new(vec![
        json!({"pod": pods[0].name, "busy": true}),
        json!({"ip": pods[1].ip, "busy": true}),
        json!({"pod": pods[2].name, "busy": false}),
        json!({"ip": pods[3].ip, "busy": false}),
    ]));
    let served = workers.clone();
    let app = axum::Router::new().route(
        "/metrics",
        get(move || {
            let list = served.lock().expect("list").clone();
            async move {
                json!({"visible": 0, "in_flight": 0, "idle": true, "workers": list}).to_string()
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });

    server
        .insert(wpa(
            NS,
            "worker",
            spec(&format!("http+json://{addr}/metrics")),
        ))
        .expect("wpa");
    let dir = tempfile::tempdir().expect("tempdir");
    let mut controller = ControllerProcess::start(&server, dir.path(), "http-workers", &[]);
    e2e::wait_replicas(&server, NS, "worker", 2, "the busy pods", &controller).await;
    let mut survivors = server.live_pod_names(&Gvr::DEPLOYMENTS, NS, "worker");
    survivors.sort();
    let mut busy = vec![pods[0].name.clone(), pods[1].name.clone()];
    busy.sort();
    assert_eq!(survivors, busy);
    e2e::wait_status(&server, NS, "worker", "the report", &controller, |s| {
        s["workers"]["source"] == "Consumers" && s["workers"]["busy"] == 2
    })
    .await;

    for entry in workers.lock().expect("list").iter_mut() {
        entry["busy"] = json!(false);
    }
    e2e::wait_replicas(&server, NS, "worker", 0, "every worker idle", &controller).await;
    assert_eq!(server.scale_patches(NS, "worker"), vec![2, 0]);
    assert_eq!(controller.terminate(), Some(0), "{}", controller.log_text());
}
