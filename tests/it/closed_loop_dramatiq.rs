//! A closed loop with real Dramatiq workers as Pods: the controller binary scales a
//! Deployment of the API double on a `redis+dramatiq://` queue, the pod runner starts one
//! `dramatiq` worker (1 process, 1 thread, prefetch 1) per Pod and stops it as a kubelet
//! does (SIGTERM, SIGKILL after a grace far shorter than the long jobs). The workers name
//! their connections (tests/dramatiq/wpa_names.py) and the WPA reads them
//! (`client_names=true`), so the controller knows which Pods hold jobs.

use crate::support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::json;
use support::apiserver::{ApiServerDouble, Gvr, PodIps, objects};
use support::brokers::{redis_port, unique};
use support::celery_pods::{CeleryPodConfig, CeleryPodRunner, WorkerProgram};
use support::controller::{ControllerProcess, wpa};
use support::dramatiq::{self as dq, DB};

const NAMESPACE: &str = "dramatiq-loop";
const DEPLOYMENT: &str = "worker";
const LONG: f64 = 30.0;
const SHORT: f64 = 2.0;
/// Dramatiq's `heartbeat_timeout`, for the workers and the URI: short, so that a job cut
/// by SIGKILL would come back (and show as a duplicate) within the run.
const HEARTBEAT_MS: u64 = 5000;
const IDLE_WINDOW: u64 = 10;

#[tokio::test(flavor = "multi_thread")]
async fn dramatiq_pool_grows_keeps_busy_pods_and_returns_to_zero() {
    let queue = unique("dq_loop").replace('-', "_");
    let record = unique("dq-loop-record");
    let dir = tempfile::tempdir().expect("tempdir");
    let server = ApiServerDouble::start().await.expect("API double");
    server.simulate_pods(true);
    server.set_pod_ips(PodIps::Cluster);
    server
        .insert(objects::deployment(NAMESPACE, DEPLOYMENT, 0))
        .expect("deployment");

    let mut env = dq::env(&queue, &record);
    env.extend([
        (
            "WPA_TEST_DRAMATIQ_HEARTBEAT_TIMEOUT".to_string(),
            HEARTBEAT_MS.to_string(),
        ),
        // Maintenance on every call: a dead worker's job is requeued within the run.
        (
            "WPA_TEST_DRAMATIQ_MAINTENANCE".to_string(),
            "1000000".to_string(),
        ),
        // One message per worker: a Pod holds only the job it runs.
        ("dramatiq_queue_prefetch".to_string(), "1".to_string()),
    ]);
    let mut config = CeleryPodConfig::new(&Gvr::DEPLOYMENTS, NAMESPACE, DEPLOYMENT, "", "");
    // Far shorter than the long jobs, longer than an idle Dramatiq worker's shutdown
    // (stop the threads, requeue, close: ~3 s here).
    config.kill_grace = Duration::from_secs(10);
    config.log_dir = Some(dir.path().to_path_buf());
    config.program = Some(WorkerProgram {
        program: "dramatiq".to_string(),
        args: ["wpa_actors", "--processes", "1", "--threads", "1"]
            .map(String::from)
            .to_vec(),
        dir: dq::dir(),
        env,
    });
    let runner = CeleryPodRunner::start(&server, config);

    let uri = format!(
        "redis+dramatiq://127.0.0.1:{}/{DB}/{queue}?heartbeat_timeout={HEARTBEAT_MS}&client_names=true",
        redis_port()
    );
    server
        .insert(wpa(
            NAMESPACE,
            DEPLOYMENT,
            json!({
                "minReplicas": 0,
                "maxReplicas": 4,
                "targetMessagesPerWorker": 1,
                "deploymentName": DEPLOYMENT,
                "workerSignal": "Auto",
                "queueURI": uri,
            }),
        ))
        .expect("wpa");
    let idle = format!("--idle-window={IDLE_WINDOW}");
    let mut controller = ControllerProcess::start(
        &server,
        dir.path(),
        "dramatiq-loop",
        &[
            "--resync-period=20",
            &idle,
            "--scale-down-delay-after-last-scale-activity=15",
            "--log-level=info",
        ],
    );

    let started = Instant::now();
    let started_unix = unix_now();
    let mut seconds = vec![LONG, LONG];
    seconds.extend([SHORT; 6]);
    let jobs = {
        let (q, s) = (queue.clone(), seconds.clone());
        tokio::task::spawn_blocking(move || dq::send(&q, "job", &s, None))
            .await
            .expect("send")
    };

    // Until every job finished and the Deployment is back at 0 with no worker left.
    let deadline = started + Duration::from_secs(150);
    let mut replicas_seen: Vec<(f64, i64)> = Vec::new();
    let done_at = loop {
        assert!(!controller.has_exited(), "controller exited");
        let replicas = server
            .get(&Gvr::DEPLOYMENTS, Some(NAMESPACE), DEPLOYMENT)
            .and_then(|d| d["spec"]["replicas"].as_i64())
            .unwrap_or(-1);
        let now = started.elapsed().as_secs_f64();
        if replicas_seen.last().is_none_or(|(_, r)| *r != replicas) {
            replicas_seen.push((now, replicas));
        }
        let tally = dq::tally(&record);
        let all_done = jobs
            .iter()
            .all(|j| tally.get(j).is_some_and(|(_, f)| *f >= 1));
        if all_done && replicas == 0 && runner.running().is_empty() {
            break now;
        }
        if Instant::now() >= deadline {
            break f64::INFINITY;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    controller.terminate();
    let tally = dq::tally(&record);
    let runs = dq::runs(&record);
    let workers = runner.records();
    let context = format!(
        "replicas over time {replicas_seen:?}; tally {tally:?}; workers {:?}; logs in {}",
        workers
            .iter()
            .map(|w| (&w.pod, w.killed(), w.exit_signal()))
            .collect::<Vec<_>>(),
        dir.path().display()
    );
    eprintln!("{context}");
    let _ = dir.keep();

    assert!(done_at.is_finite(), "not done in time; {context}");
    // Every job ran to its end exactly once: none lost, none cut and run again.
    let per_job: BTreeMap<&String, (usize, usize)> = jobs
        .iter()
        .map(|j| (j, tally.get(j).copied().unwrap_or_default()))
        .collect();
    let lost: Vec<_> = per_job.iter().filter(|(_, (_, f))| *f == 0).collect();
    let repeated: Vec<_> = per_job.iter().filter(|(_, (s, _))| *s > 1).collect();
    assert!(lost.is_empty(), "lost jobs {lost:?}; {context}");
    assert!(
        repeated.is_empty(),
        "jobs run again {repeated:?}; {context}"
    );
    // No Pod got SIGTERM while it ran a job (by the jobs' own records), and none needed
    // SIGKILL.
    for worker in &workers {
        let Some(term) = worker.terminated_at else {
            continue;
        };
        let term = started_unix + term.duration_since(started).as_secs_f64();
        let running: Vec<&String> = runs
            .iter()
            .filter(|r| r.pod == worker.pod && r.event == "start" && r.at < term)
            .map(|r| &r.job)
            .filter(|job| {
                !runs
                    .iter()
                    .any(|f| f.event == "finish" && &&f.job == job && f.at <= term)
            })
            .collect();
        assert!(
            running.is_empty(),
            "{} got SIGTERM while running {running:?}; {context}",
            worker.pod
        );
    }
    assert!(
        workers.iter().all(|w| !w.killed()),
        "a busy Pod was removed; {context}"
    );
    // The pool grew beyond the two long jobs and shrank while they still ran, but never
    // below them.
    let peak = replicas_seen.iter().map(|(_, r)| *r).max().unwrap_or(0);
    assert!(peak >= 3, "{context}");
    let long_end = runs
        .iter()
        .filter(|r| r.event == "finish" && jobs[..2].contains(&r.job))
        .map(|r| r.at)
        .fold(f64::NEG_INFINITY, f64::max);
    let long_end = long_end - started_unix;
    let grown = replicas_seen
        .iter()
        .find(|(_, r)| *r >= 2)
        .map_or(f64::INFINITY, |(t, _)| *t);
    let shrank_early = replicas_seen
        .iter()
        .any(|(t, r)| *r == 2 && *t < long_end - 2.0);
    assert!(
        shrank_early,
        "no scale-in to the busy Pods before the long jobs ended; {context}"
    );
    assert!(
        replicas_seen
            .iter()
            .filter(|(t, _)| *t >= grown && *t < long_end - 2.0)
            .all(|(_, r)| *r >= 2),
        "fewer Pods than long jobs; {context}"
    );
    dq::clean(&queue, &record);
}

fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}
