//! Drain before removal with the real controller binary: the API double runs the
//! Deployment's Pods, the pod runner one real Celery worker per Pod (Redis DB 0, unique
//! queues; or RabbitMQ, a vhost of the test's own), and the controller drains a scale-in's
//! victims through Celery's remote control before the ReplicaSet removes them.
//!
//! A victim is an idle pod when the drain starts: the first idle pod by name. To make it
//! hold work during its drain (in production: a task that reached it just before the
//! cancel), the tests point that pod, and only it, at a side queue of their own
//! (`add_consumer`, before the drain) that the WPA does not watch, so the cancel leaves it
//! alone; the tasks wait in a staging queue and are moved onto the side queue the moment
//! the drain starts (Redis: RPOPLPUSH; RabbitMQ: basic.get and republish; milliseconds
//! either way, well before the drain's next look at its victim).

use crate::support;

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::json;
use support::apiserver::{ApiServerDouble, Fault, Gvr, objects};
use support::brokers::unique;
use support::celery_pods::{CeleryPodConfig, CeleryPodRunner, WorkerRecord};
use support::celery_tasks::{TaskLedger, send_sleep_tasks};
use support::controller::{ControllerProcess, event_reasons, wpa};
use support::drain::CeleryBroker;
use support::e2e;
use wpa::workers::drain::{Mailbox, NodeHolding};

const NS: &str = "drain";
/// Celery workers take a few seconds to start on a loaded 2-core machine.
const STARTUP: Duration = Duration::from_secs(60);
/// The pods' terminationGracePeriodSeconds: the drain's bound.
const GRACE_SECONDS: u64 = 20;
const DRAINING: &str = "k8s.practo.dev/draining";
const ASK: Duration = Duration::from_secs(2);

/// Two pods with an idle Celery worker each, consuming `queue`; a WPA (min 1, max 2, 5
/// per worker) that wants one of them gone as soon as the queue is idle.
struct Cluster {
    server: ApiServerDouble,
    ledger: TaskLedger,
    runner: CeleryPodRunner,
    /// The Celery broker URL.
    broker: String,
    celery: CeleryBroker,
    queue: String,
    mailbox: Mailbox,
    dir: tempfile::TempDir,
    _logs: tempfile::TempDir,
}

fn node(pod: &str) -> String {
    format!("celery@{pod}")
}

fn running(records: &[WorkerRecord]) -> usize {
    records.iter().filter(|r| r.running()).count()
}

/// The workers' setting that turns Celery's remote control off.
const REMOTE_CONTROL_OFF: (&str, &str) = ("WPA_TEST_REMOTE_CONTROL", "0");

/// On Redis: see [`cluster_on`].
async fn cluster(acks_late: bool, extra: &[&str]) -> Cluster {
    cluster_on(&CeleryBroker::redis(""), acks_late, extra, &[]).await
}

/// The cluster with its workers on `broker`. `acks_late`: Celery's `task_acks_late`;
/// `extra`: more `celery worker` arguments; `env`: more worker settings.
async fn cluster_on(
    celery: &CeleryBroker,
    acks_late: bool,
    extra: &[&str],
    env: &[(&str, &str)],
) -> Cluster {
    let server = ApiServerDouble::start().await.expect("API double");
    server.simulate_pods(true);
    let mut deployment = objects::deployment(NS, "worker", 2);
    deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] = json!(GRACE_SECONDS);
    server.insert(deployment).expect("deployment");
    let broker = celery.url();
    let queue = unique("drain-ctl");
    let ledger = TaskLedger::new(&celery.ledger_url(), &unique("drain-ledger"));
    let logs = tempfile::tempdir().expect("tempdir");
    let mut config = CeleryPodConfig::new(&Gvr::DEPLOYMENTS, NS, "worker", &broker, &queue);
    config.kill_grace = Duration::from_secs(GRACE_SECONDS);
    config.record = ledger.record_target();
    config.acks_late = acks_late;
    config.extra_args = extra.iter().map(|a| a.to_string()).collect();
    config.log_dir = Some(logs.path().to_path_buf());
    config.env = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let runner = CeleryPodRunner::start(&server, config);
    assert!(
        runner.wait_until(STARTUP, |r| running(r) == 2).await,
        "{:?}",
        runner.records()
    );
    let uri = celery.queue_uri(&queue);
    let mailbox = celery.mailbox(&queue);
    // Workers without remote control cannot say; the controller waits for their
    // heartbeats anyway.
    if !env.contains(&REMOTE_CONTROL_OFF) {
        for pod in server.live_pod_names(&Gvr::DEPLOYMENTS, NS, "worker") {
            until(&mailbox, &pod, STARTUP, "consuming", |h| {
                h.consuming.contains(&queue)
            })
            .await;
        }
    }
    let spec = json!({
        "minReplicas": 1,
        "maxReplicas": 2,
        "targetMessagesPerWorker": 5,
        "deploymentName": "worker",
        "queueURI": uri,
    });
    server.insert(wpa(NS, "worker", spec)).expect("wpa");
    // A status write wakes the WPA at once (its watch event); delayed, the drain's next
    // look at its victim comes at its 1 s recheck, after the side tasks (below) landed.
    server.inject(
        Fault::latency(Duration::from_secs(2))
            .method("PATCH")
            .path_contains("/workerpodautoscalers/worker/status"),
    );
    Cluster {
        server,
        ledger,
        runner,
        broker,
        celery: celery.clone(),
        queue,
        mailbox,
        dir: tempfile::tempdir().expect("tempdir"),
        _logs: logs,
    }
}

impl Cluster {
    fn controller(&self, name: &str) -> ControllerProcess {
        ControllerProcess::start(&self.server, self.dir.path(), name, &[])
    }

    fn annotation(&self, pod: &str) -> Option<String> {
        let object = self.server.get(&Gvr::PODS, Some(NS), pod)?;
        object["metadata"]["annotations"][DRAINING]
            .as_str()
            .map(str::to_string)
    }

    /// The first pod annotated as draining, and the other one.
    async fn drain_started(&self, controller: &ControllerProcess) -> (String, String) {
        let deadline = Instant::now() + STARTUP;
        loop {
            let pods = self.server.live_pod_names(&Gvr::DEPLOYMENTS, NS, "worker");
            if let Some(victim) = pods.iter().find(|p| self.annotation(p).is_some()) {
                let other = pods.iter().find(|p| *p != victim).expect("two pods");
                return (victim.clone(), other.clone());
            }
            assert!(
                Instant::now() < deadline,
                "no drain started; controller log:\n{}",
                controller.log_text()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The pod a drain will pick (the first idle one by name), pointed, alone, at a side
    /// queue; returns it and the side queue.
    async fn side_queue_for_the_victim(&self) -> (String, String) {
        let mut pods = self.server.live_pod_names(&Gvr::DEPLOYMENTS, NS, "worker");
        pods.sort();
        let side = unique("drain-side");
        self.mailbox
            .resume(&[node(&pods[0])], std::slice::from_ref(&side))
            .await
            .expect("add_consumer");
        until(
            &self.mailbox,
            &pods[0],
            Duration::from_secs(10),
            "on the side queue",
            |h| h.consuming.contains(&side),
        )
        .await;
        (pods[0].clone(), side)
    }

    /// Moves every task waiting in `stage` onto `side` at once.
    async fn release(&self, stage: &str, side: &str) {
        self.celery.move_all(stage, side).await;
    }

    async fn wait_event(&self, reason: &str) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !event_reasons(&self.server, NS, "worker")
            .iter()
            .any(|r| r == reason)
        {
            assert!(Instant::now() < deadline, "no {reason} Event");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn scale_writes(&self) -> usize {
        self.server
            .requests("PATCH", "/deployments/worker/scale")
            .len()
    }
}

/// Asks until `check` holds for the pod's worker's answer; panics after `within`.
async fn until(
    mailbox: &Mailbox,
    pod: &str,
    within: Duration,
    what: &str,
    check: impl Fn(&NodeHolding) -> bool,
) -> NodeHolding {
    let nodes = vec![node(pod)];
    let deadline = Instant::now() + within;
    let mut last = None;
    while Instant::now() < deadline {
        if let Ok(answer) = mailbox.holdings(&nodes, ASK).await
            && let Some(holding) = answer.into_iter().next()
        {
            if check(&holding) {
                return holding;
            }
            last = Some(holding);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("{pod}: not {what} within {within:?}; last answer {last:?}");
}

fn unix_time(at: Instant) -> f64 {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_secs_f64();
    now - at.elapsed().as_secs_f64()
}

fn cost_patched(server: &ApiServerDouble, pod: &str, cost: &str) -> bool {
    server
        .requests("PATCH", &format!("/pods/{pod}"))
        .iter()
        .any(|r| {
            r.body["metadata"]["annotations"]["controller.kubernetes.io/pod-deletion-cost"] == cost
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_scale_in_removes_the_drained_victim_which_takes_no_new_task() {
    let c = cluster(true, &[]).await;
    removes_the_drained_victim(&c, "drain-a").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_rabbitmq_scale_in_removes_the_drained_victim_which_takes_no_new_task() {
    let broker = CeleryBroker::rabbitmq().await;
    let c = cluster_on(&broker, true, &[], &[]).await;
    removes_the_drained_victim(&c, "drain-amqp").await;
    drop(c);
    broker.remove().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_rabbitmq_without_any_mailbox_removes_the_victim_as_without_drain() {
    // Remote control off and no mingle: nothing ever declares `celery.pidbox` on the vhost.
    let broker = CeleryBroker::rabbitmq().await;
    let c = cluster_on(&broker, true, &["--without-mingle"], &[REMOTE_CONTROL_OFF]).await;
    let controller = c.controller("drain-nomailbox");
    let (victim, other) = c.drain_started(&controller).await;
    let started = Instant::now();
    e2e::wait_replicas(
        &c.server,
        NS,
        "worker",
        1,
        "the victim gone without drain",
        &controller,
    )
    .await;
    // Let go at once, not held until the drain's bound.
    assert!(
        started.elapsed() < Duration::from_secs(GRACE_SECONDS / 2),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(
        c.server.live_pod_names(&Gvr::DEPLOYMENTS, NS, "worker"),
        vec![other]
    );
    assert!(cost_patched(&c.server, &victim, "-2000"));
    let log = controller.log_text();
    assert!(log.contains("cannot be drained"), "{log}");
    drop(c);
    broker.remove().await;
}

/// A drain starts; a task sent then goes to the pod that stays; the drained victim is
/// removed and its worker exits clean, having taken nothing.
async fn removes_the_drained_victim(c: &Cluster, name: &str) {
    let controller = c.controller(name);
    let (victim, other) = c.drain_started(&controller).await;
    // A task sent once the drain started goes to the pod that stays.
    let sent = send_sleep_tasks(&c.broker, &c.queue, 1, 0.5);
    e2e::wait_replicas(
        &c.server,
        NS,
        "worker",
        1,
        "the drained victim gone",
        &controller,
    )
    .await;
    assert_eq!(
        c.server.live_pod_names(&Gvr::DEPLOYMENTS, NS, "worker"),
        vec![other.clone()]
    );
    support::brokers::eventually(Duration::from_secs(30), "the task to finish", async || {
        (c.ledger.tally(&sent).completed == 1).then_some(())
    })
    .await;
    let hosts: Vec<String> = c.ledger.started().into_iter().map(|r| r.host).collect();
    assert_eq!(hosts, vec![node(&other)], "the victim took no task");
    // The victim went first because of its cost, and as a worker with nothing to finish.
    assert!(cost_patched(&c.server, &victim, "-2000"));
    assert!(
        c.runner
            .wait_until(STARTUP, |r| r
                .iter()
                .any(|w| w.pod == victim && !w.running()))
            .await
    );
    let record = c.runner.record(&victim).expect("victim's worker");
    assert!(record.terminated_at.is_some() && record.exited_cleanly() && !record.killed());
    c.wait_event("DrainStarted").await;
    c.wait_event("Drained").await;
    // Drained through the remote control, not let go because it could not be asked.
    let log = controller.log_text();
    assert!(log.contains("drain started"), "{log}");
    for failure in ["drain write failed", "cannot be drained", "cannot ask"] {
        assert!(!log.contains(failure), "{failure}:\n{log}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_reversed_when_backlog_returns_resumes_the_victim_without_scale_in() {
    reversed_when_backlog_returns(&cluster(true, &[]).await, "drain-b").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_rabbitmq_reversed_when_backlog_returns_resumes_the_victim_without_scale_in() {
    let broker = CeleryBroker::rabbitmq().await;
    let c = cluster_on(&broker, true, &[], &[]).await;
    reversed_when_backlog_returns(&c, "drain-amqp-b").await;
    drop(c);
    broker.remove().await;
}

/// A busy victim holds the drain; backlog returns: the victim consumes again, no scale-in.
async fn reversed_when_backlog_returns(c: &Cluster, name: &str) {
    let (expected, side) = c.side_queue_for_the_victim().await;
    let stage = unique("drain-stage");
    // Longer than the test: the victim stays busy, so its drain waits.
    send_sleep_tasks(&c.broker, &stage, 1, 60.0);
    let controller = c.controller(name);
    let (victim, _other) = c.drain_started(&controller).await;
    c.release(&stage, &side).await;
    assert_eq!(victim, expected);
    until(
        &c.mailbox,
        &victim,
        Duration::from_secs(10),
        "busy and cancelled",
        |h| h.active == 1 && !h.consuming.contains(&c.queue),
    )
    .await;
    assert_eq!(c.scale_writes(), 0, "the drain holds the scale");
    assert!(c.annotation(&victim).is_some());

    // Backlog for both pods: the scale-in is off; the victim consumes again.
    send_sleep_tasks(&c.broker, &c.queue, 15, 1.0);
    until(
        &c.mailbox,
        &victim,
        Duration::from_secs(20),
        "consuming again",
        |h| h.consuming.contains(&c.queue),
    )
    .await;
    c.wait_event("DrainCancelled").await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while c.annotation(&victim).is_some() {
        assert!(Instant::now() < deadline, "annotation left on {victim}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(c.scale_writes(), 0, "no scale-in");
    assert_eq!(
        c.server
            .live_pod_names(&Gvr::DEPLOYMENTS, NS, "worker")
            .len(),
        2
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_left_by_a_killed_controller_is_resumed_after_restart() {
    resumed_after_restart(&cluster(true, &[]).await, "drain-c").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_rabbitmq_left_by_a_killed_controller_is_resumed_after_restart() {
    let broker = CeleryBroker::rabbitmq().await;
    let c = cluster_on(&broker, true, &[], &[]).await;
    resumed_after_restart(&c, "drain-amqp-c").await;
    drop(c);
    broker.remove().await;
}

/// A controller killed mid-drain leaves its victim cancelled; the next one resumes it.
async fn resumed_after_restart(c: &Cluster, name: &str) {
    let (expected, side) = c.side_queue_for_the_victim().await;
    let stage = unique("drain-stage");
    send_sleep_tasks(&c.broker, &stage, 1, 60.0);
    let mut controller = c.controller(&format!("{name}1"));
    let (victim, _other) = c.drain_started(&controller).await;
    c.release(&stage, &side).await;
    assert_eq!(victim, expected);
    until(
        &c.mailbox,
        &victim,
        Duration::from_secs(10),
        "busy and cancelled",
        |h| h.active == 1 && !h.consuming.contains(&c.queue),
    )
    .await;
    controller.kill();
    assert!(
        c.annotation(&victim).is_some(),
        "the killed run left it draining"
    );
    // Nothing resumes it while no controller runs.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let stopped = until(&c.mailbox, &victim, ASK, "still cancelled", |_| true).await;
    assert!(!stopped.consuming.contains(&c.queue));

    let restarted = c.controller(&format!("{name}2"));
    until(
        &c.mailbox,
        &victim,
        Duration::from_secs(40),
        "consuming again",
        |h| h.consuming.contains(&c.queue),
    )
    .await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while c.annotation(&victim).is_some() {
        assert!(
            Instant::now() < deadline,
            "annotation left on {victim}; log:\n{}",
            restarted.log_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    c.wait_event("DrainCancelled").await;
}

/// Celery's defaults: early ack, and a prefetch of 4 per process.
const PREFETCH_4: &[&str] = &["--prefetch-multiplier", "4"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_early_ack_prefetch_4_finishes_the_reserved_tasks_before_the_pod_goes() {
    reserved_tasks_finish_first(&cluster(false, PREFETCH_4).await, "drain-d").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_rabbitmq_early_ack_prefetch_4_finishes_the_reserved_tasks_before_the_pod_goes() {
    let broker = CeleryBroker::rabbitmq().await;
    let c = cluster_on(&broker, false, PREFETCH_4, &[]).await;
    reserved_tasks_finish_first(&c, "drain-amqp-d").await;
    drop(c);
    broker.remove().await;
}

/// The four tasks a victim holds (one running, three prefetched) all finish on it before
/// its SIGTERM.
async fn reserved_tasks_finish_first(c: &Cluster, name: &str) {
    let (expected, side) = c.side_queue_for_the_victim().await;
    let stage = unique("drain-stage");
    let held = send_sleep_tasks(&c.broker, &stage, 4, 1.5);
    let controller = c.controller(name);
    let (victim, other) = c.drain_started(&controller).await;
    c.release(&stage, &side).await;
    assert_eq!(victim, expected);
    // One runs, the others wait prefetched in the victim (out of the broker's list).
    until(
        &c.mailbox,
        &victim,
        Duration::from_secs(10),
        "holding",
        |h| h.active + h.reserved >= 3,
    )
    .await;
    e2e::wait_replicas(
        &c.server,
        NS,
        "worker",
        1,
        "the drained victim gone",
        &controller,
    )
    .await;
    assert_eq!(
        c.server.live_pod_names(&Gvr::DEPLOYMENTS, NS, "worker"),
        vec![other]
    );
    assert!(
        c.runner
            .wait_until(STARTUP, |r| r
                .iter()
                .any(|w| w.pod == victim && !w.running()))
            .await
    );
    let record = c.runner.record(&victim).expect("victim's worker");
    let sigterm = unix_time(record.terminated_at.expect("SIGTERM"));
    let tally = c.ledger.tally(&held);
    assert_eq!(tally.completed, 4, "{tally:?}");
    for run in c.ledger.finished().iter().filter(|r| held.contains(&r.id)) {
        assert_eq!(run.host, node(&victim));
        assert!(
            run.at <= sigterm,
            "task {} finished {:.2}s after the SIGTERM",
            run.id,
            run.at - sigterm
        );
    }
    assert!(record.exited_cleanly() && !record.killed());
}
