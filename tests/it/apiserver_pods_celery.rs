//! The pod runner: real Celery workers on Redis started for the double's simulated Pods and
//! stopped as a kubelet would when the Pods terminate (SIGTERM, SIGKILL after the grace).

use crate::support;

use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use kube::Api;
use kube::api::{Patch, PatchParams};
use serde_json::json;
use support::apiserver::{ApiServerDouble, Gvr, objects};
use support::brokers::{redis_broker, redis_port, unique};
use support::celery_pods::{CeleryPodConfig, CeleryPodRunner, WorkerRecord};
use support::celery_tasks::{TaskLedger, TaskTally, celery_ping, send_sleep_tasks};

const NS: &str = "celery";
const DB: u8 = 8;
/// Celery workers take a few seconds to start on a loaded 2-core machine.
const STARTUP: Duration = Duration::from_secs(60);

async fn scale(server: &ApiServerDouble, name: &str, replicas: i32) {
    let deployments: Api<Deployment> = Api::namespaced(server.client().unwrap(), NS);
    deployments
        .patch_scale(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": replicas}})),
        )
        .await
        .unwrap();
}

fn running(records: &[WorkerRecord]) -> usize {
    records.iter().filter(|r| r.running()).count()
}

/// Polls `celery inspect ping` until all of `pods`' workers answer.
async fn wait_for_pongs(broker: &str, pods: &[String]) {
    let hosts: Vec<String> = pods.iter().map(|p| format!("celery@{p}")).collect();
    let mut expected = hosts.clone();
    expected.sort();
    let deadline = std::time::Instant::now() + STARTUP;
    loop {
        let (broker, asked) = (broker.to_string(), hosts.clone());
        let answered = tokio::task::spawn_blocking(move || {
            celery_ping(&broker, &asked, Duration::from_secs(2))
        })
        .await
        .unwrap();
        if answered == expected {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "workers {expected:?} did not all answer a ping: {answered:?}"
        );
    }
}

#[tokio::test]
async fn celery_workers_follow_the_pods_and_exit_on_sigterm() {
    let server = ApiServerDouble::start().await.unwrap();
    server.simulate_pods(true);
    server.insert(objects::deployment(NS, "worker", 0)).unwrap();
    let broker = redis_broker(redis_port(), DB);
    let queue = unique("pods");
    let logs = tempfile::tempdir().unwrap();
    let mut config = CeleryPodConfig::new(&Gvr::DEPLOYMENTS, NS, "worker", &broker, &queue);
    config.log_dir = Some(logs.path().to_path_buf());
    let runner = CeleryPodRunner::start(&server, config);

    scale(&server, "worker", 2).await;
    let pods = server.live_pod_names(&Gvr::DEPLOYMENTS, NS, "worker");
    assert_eq!(pods.len(), 2);
    assert!(runner.wait_until(STARTUP, |r| running(r) == 2).await);
    // Each Pod's worker is up and connected to the broker under its Pod's name.
    wait_for_pongs(&broker, &pods).await;

    scale(&server, "worker", 0).await;
    let exited = runner
        .wait_until(STARTUP, |r| r.len() == 2 && running(r) == 0)
        .await;
    let records = runner.records();
    assert!(exited, "workers still running after SIGTERM: {records:?}");
    for record in &records {
        assert!(record.terminated_at.is_some(), "{record:?} got SIGTERM");
        // Idle workers finish their warm shutdown well within the 30 s grace.
        assert!(!record.killed() && record.exited_cleanly(), "{record:?}");
    }
    let mut record_pods: Vec<String> = records.iter().map(|r| r.pod.clone()).collect();
    record_pods.sort();
    let mut expected = pods.clone();
    expected.sort();
    assert_eq!(record_pods, expected);
}

#[tokio::test]
async fn a_worker_still_busy_after_the_grace_is_killed_mid_task() {
    let server = ApiServerDouble::start().await.unwrap();
    server.simulate_pods(true);
    server.insert(objects::deployment(NS, "worker", 0)).unwrap();
    let broker = redis_broker(redis_port(), DB);
    let queue = unique("pods-kill");
    let ledger = TaskLedger::new(&broker, &unique("wpa-test-ledger"));
    let mut config = CeleryPodConfig::new(&Gvr::DEPLOYMENTS, NS, "worker", &broker, &queue);
    config.kill_grace = Duration::from_secs(2);
    config.record = ledger.record_target();
    let runner = CeleryPodRunner::start(&server, config);

    // One short task that completes, and one that outlasts the grace.
    let short = send_sleep_tasks(&broker, &queue, 1, 0.2);
    scale(&server, "worker", 1).await;
    let pods = server.live_pod_names(&Gvr::DEPLOYMENTS, NS, "worker");
    let mut sent = short.clone();
    let waited = support::brokers::eventually(STARTUP, "the short task to finish", async || {
        (ledger.tally(&short).completed == 1).then_some(())
    });
    waited.await;
    sent.extend(send_sleep_tasks(&broker, &queue, 1, 60.0));
    support::brokers::eventually(STARTUP, "the long task to start", async || {
        (ledger.started().len() == 2).then_some(())
    })
    .await;

    scale(&server, "worker", 0).await;
    assert!(
        runner
            .wait_until(Duration::from_secs(20), |r| running(r) == 0)
            .await
    );
    let record = runner.record(&pods[0]).unwrap();
    assert!(record.killed(), "{record:?}");
    assert_eq!(record.exit_signal(), Some(libc::SIGKILL));
    let grace = record.killed_at.unwrap() - record.terminated_at.unwrap();
    assert!(grace >= Duration::from_secs(2), "killed after {grace:?}");
    assert_eq!(
        ledger.tally(&sent),
        TaskTally {
            completed: 1,
            interrupted: 1,
            never_started: 0
        }
    );
    let started = ledger.started();
    assert!(
        started
            .iter()
            .all(|run| run.host == format!("celery@{}", pods[0]))
    );
}
