//! A closed loop with real BullMQ workers as Pods: the controller binary scales a
//! Deployment of the API double on a `redis+bullmq://` queue, the pod runner starts one
//! `node worker.js` (a BullMQ Worker named after its Pod) per Pod and stops it as a kubelet
//! does (SIGTERM, SIGKILL after a grace shorter than the long jobs). Long and short jobs go
//! in at once: the pool grows, shrinks to the workers still running long jobs while they
//! run, and comes back to zero once they are done, with no job cut.

use crate::support;

use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};
use support::apiserver::{ApiServerDouble, Gvr, PodIps, objects};
use support::broker_procs::unique;
use support::bullmq::{add_jobs, bullmq_dir, queue_uri, recorded, redis_url, remove_queue};
use support::celery_pods::{CeleryPodConfig, CeleryPodRunner, WorkerProgram};
use support::controller::{ControllerProcess, condition, wpa};

const NAMESPACE: &str = "closed-loop-bullmq";
const DEPLOYMENT: &str = "worker";
const LONG_JOB: f64 = 25.0;
const SHORT_JOB: f64 = 2.0;
const LONG_JOBS: usize = 2;
const SHORT_JOBS: usize = 8;
const MAX_REPLICAS: i64 = 4;
/// SIGTERM to SIGKILL: shorter than a long job, so a long job's worker stopped early is cut.
const KILL_GRACE: Duration = Duration::from_secs(8);
const IDLE_WINDOW_S: u64 = 5;
const POLL_S: u64 = 1;

fn unix_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or_default()
}

/// (Unix ms, replicas) of the successful scale writes, oldest first.
fn scale_writes(server: &ApiServerDouble) -> Vec<(i64, i64)> {
    let path = format!("/namespaces/{NAMESPACE}/deployments/{DEPLOYMENT}/scale");
    server
        .recorded()
        .into_iter()
        .filter(|r| matches!(r.method.as_str(), "PATCH" | "PUT") && r.succeeded())
        .filter(|r| r.path.ends_with(&path))
        .filter_map(|r| {
            Some((
                r.at.as_millisecond(),
                r.body.pointer("/spec/replicas")?.as_i64()?,
            ))
        })
        .collect()
}

fn replicas(server: &ApiServerDouble) -> i64 {
    server
        .get(&Gvr::DEPLOYMENTS, Some(NAMESPACE), DEPLOYMENT)
        .and_then(|d| d["spec"]["replicas"].as_i64())
        .unwrap_or(-1)
}

#[tokio::test(flavor = "multi_thread")]
async fn bullmq_pool_grows_shrinks_to_busy_workers_and_returns_to_zero() {
    let queue = unique("bullmq-closed-loop");
    let ledger = unique("bullmq-closed-loop-ledger");
    // Kept (not removed) so that the logs can be read after a failure.
    let dir = tempfile::tempdir().expect("tempdir").keep();
    let logs: PathBuf = dir.join("workers");
    std::fs::create_dir_all(&logs).expect("log dir");

    let server = ApiServerDouble::start().await.expect("API double");
    server.simulate_pods(true);
    // Pods at 10.x IPs nothing here connects from: Redis sees every worker at 127.0.0.1, so
    // the reports reach the Pods by the Worker's name (= POD_NAME), the documented setup.
    server.set_pod_ips(PodIps::Cluster);
    server
        .insert(objects::deployment(NAMESPACE, DEPLOYMENT, 0))
        .expect("deployment");
    let mut config = CeleryPodConfig::new(&Gvr::DEPLOYMENTS, NAMESPACE, DEPLOYMENT, "", "");
    config.kill_grace = KILL_GRACE;
    config.log_dir = Some(logs);
    config.program = Some(WorkerProgram {
        program: "node".to_string(),
        args: vec!["worker.js".to_string(), queue.clone()],
        dir: bullmq_dir(),
        env: vec![
            ("WPA_TEST_REDIS".to_string(), redis_url()),
            ("WPA_TEST_RECORD_KEY".to_string(), ledger.clone()),
        ],
    });
    let runner = CeleryPodRunner::start(&server, config);
    server
        .insert(wpa(
            NAMESPACE,
            DEPLOYMENT,
            json!({
                "minReplicas": 0,
                "maxReplicas": MAX_REPLICAS,
                "targetMessagesPerWorker": 1,
                "deploymentName": DEPLOYMENT,
                "workerSignal": "Auto",
                "queueURI": queue_uri(&queue, ""),
            }),
        ))
        .expect("wpa");
    let idle_window = format!("--idle-window={IDLE_WINDOW_S}");
    let poll = format!("--bullmq-poll-interval={POLL_S}");
    let mut controller = ControllerProcess::start(
        &server,
        &dir,
        "bullmq-closed-loop",
        &[
            "--resync-period=20",
            &idle_window,
            "--scale-down-delay-after-last-scale-activity=8",
            &poll,
            "--log-level=info",
        ],
    );
    let polled_by = Instant::now() + Duration::from_secs(30);
    while server
        .get(&Gvr::WORKER_POD_AUTOSCALERS, Some(NAMESPACE), DEPLOYMENT)
        .and_then(|w| condition(&w["status"], "MetricsAvailable"))
        .is_none()
    {
        assert!(
            Instant::now() < polled_by && !controller.has_exited(),
            "the controller never polled; log {}",
            controller.log.display()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Long jobs first, so two workers hold them while the short ones drain.
    let mut jobs: Vec<(f64, Value)> = vec![(LONG_JOB, json!({})); LONG_JOBS];
    jobs.extend(vec![(SHORT_JOB, json!({})); SHORT_JOBS]);
    let added = {
        let queue = queue.clone();
        tokio::task::spawn_blocking(move || add_jobs(&queue, &jobs, "bull"))
            .await
            .expect("adding jobs")
    };
    assert_eq!(added["wait"], LONG_JOBS + SHORT_JOBS, "{added}");
    let sent_at = Instant::now();

    // Until every job finished, the Deployment is at 0 and no worker runs.
    let timeout = Duration::from_secs(100);
    let total = LONG_JOBS + SHORT_JOBS;
    loop {
        assert!(!controller.has_exited(), "the controller exited");
        let finished = recorded(&ledger)
            .iter()
            .filter(|e| e.event == "finish")
            .count();
        if finished >= total && replicas(&server) == 0 && runner.running().is_empty() {
            break;
        }
        if sent_at.elapsed() >= timeout {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // Instants of the pod runner's records, in Unix ms.
    let (anchor, anchor_ms) = (Instant::now(), unix_ms());
    let to_ms = |at: Instant| {
        anchor_ms - i64::try_from(anchor.duration_since(at).as_millis()).unwrap_or(i64::MAX)
    };
    let events = recorded(&ledger);
    let writes = scale_writes(&server);
    let workers = runner.records();
    controller.terminate();
    let context = format!(
        "replicas {:?}; workers {:?}; ledger {events:?}; logs in {}",
        writes.iter().map(|(_, r)| *r).collect::<Vec<_>>(),
        workers
            .iter()
            .map(|w| (&w.pod, w.terminated_at.map(to_ms), w.killed()))
            .collect::<Vec<_>>(),
        dir.display()
    );
    eprintln!("{context}");
    drop(runner);
    remove_queue(&queue, "bull", &[&ledger]);

    // Every job ran exactly once, to its end.
    let runs = support::bullmq::runs_per_job(&events);
    assert_eq!(runs.len(), total, "{context}");
    assert!(runs.values().all(|r| *r == (1, 1)), "{context}");
    // No worker was SIGKILLed, none got SIGTERM while running a job.
    assert!(workers.iter().all(|w| !w.killed()), "{context}");
    for w in &workers {
        let Some(term) = w.terminated_at.map(to_ms) else {
            continue;
        };
        for start in events
            .iter()
            .filter(|e| e.pod == w.pod && e.event == "start")
        {
            let finish = events
                .iter()
                .find(|e| e.job == start.job && e.event == "finish")
                .map_or(i64::MAX, |e| e.at);
            assert!(
                !(start.at < term && term < finish),
                "{} got SIGTERM at {term} while running job {} ({}..{finish}); {context}",
                w.pod,
                start.job,
                start.at
            );
        }
        assert_eq!(w.exit.and_then(|s| s.code()), Some(0), "{context}");
    }
    // Grew for the backlog, then shrank while the long jobs still ran.
    let last_finish = events.iter().map(|e| e.at).max().expect("events");
    let peak = writes.iter().map(|(_, r)| *r).max().unwrap_or(0);
    assert!(peak >= 3, "{context}");
    assert!(
        writes
            .iter()
            .any(|(at, r)| *r > 0 && *r < peak && *at < last_finish),
        "no scale-in while the long jobs ran; {context}"
    );
    // Back to zero within the idle window plus a poll (and a second for the write) after
    // the last job finished.
    let (zero_at, zero) = *writes.last().expect("scale writes");
    assert_eq!(zero, 0, "{context}");
    let bound_ms = i64::try_from((IDLE_WINDOW_S + POLL_S + 1) * 1000).unwrap_or(i64::MAX);
    assert!(
        zero_at - last_finish <= bound_ms,
        "back at 0 {} ms after the last job; {context}",
        zero_at - last_finish
    );
    let log = std::fs::read_to_string(&controller.log).unwrap_or_default();
    let errors: Vec<&str> = log.lines().filter(|l| l.contains(" ERROR ")).collect();
    assert!(errors.is_empty(), "{errors:#?}");
}
