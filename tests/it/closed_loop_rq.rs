//! A closed loop with real RQ workers as Pods: the controller binary scales a Deployment
//! in the API double from an RQ queue (`redis+rq://`), the pod runner starts one real
//! `rq worker` per Pod (hostname = Pod name) and stops it as a kubelet does (SIGTERM, then
//! SIGKILL after a grace shorter than the long jobs). What counts: no job lost or run
//! twice, no busy worker stopped, the pool shrinking to the busy workers while the long
//! jobs run and back to zero soon after the last job.

use crate::support;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde_json::json;
use support::apiserver::{ApiServerDouble, Gvr, PodIps, objects};
use support::broker_procs::unique;
use support::celery_pods::{CeleryPodConfig, CeleryPodRunner, WorkerRecord};
use support::closed_loop::tally::{Clock, unix_now};
use support::controller::{ControllerProcess, condition, wpa};
use support::rq::{Enqueue, LedgerEntry, ledger, rq_enqueue, rq_queue_uri, rq_worker_program};

const NAMESPACE: &str = "closed-loop-rq";
const DEPLOYMENT: &str = "rq-worker";
/// The controller's idle window and scale-down delay (seconds), short so a run takes about
/// a minute.
const IDLE_WINDOW: u64 = 10;
const SCALE_DOWN_DELAY: u64 = 10;
/// SIGTERM to SIGKILL: shorter than the long jobs, so stopping a busy Pod would cut a job.
const GRACE: Duration = Duration::from_secs(5);
const LONG_JOB: f64 = 35.0;
const SHORT_JOB: f64 = 2.0;

/// (Unix seconds, replicas) of the successful writes to the Deployment's scale.
fn scale_writes(server: &ApiServerDouble) -> Vec<(f64, i64)> {
    let scale = format!("/namespaces/{NAMESPACE}/deployments/{DEPLOYMENT}/scale");
    server
        .recorded()
        .into_iter()
        .filter(|r| r.succeeded() && (r.method == "PATCH" || r.method == "PUT"))
        .filter(|r| r.path.ends_with(&scale))
        .filter_map(|r| {
            let replicas = r.body.pointer("/spec/replicas")?.as_i64()?;
            Some((r.at.as_millisecond() as f64 / 1000.0, replicas))
        })
        .collect()
}

fn replicas(server: &ApiServerDouble) -> i64 {
    server
        .get(&Gvr::DEPLOYMENTS, Some(NAMESPACE), DEPLOYMENT)
        .and_then(|d| d["spec"]["replicas"].as_i64())
        .unwrap_or(-1)
}

/// Per job id: its recorded (start, finish) times, in order.
fn runs_by_job(entries: &[LedgerEntry]) -> HashMap<String, Vec<&LedgerEntry>> {
    let mut runs: HashMap<String, Vec<&LedgerEntry>> = HashMap::new();
    for entry in entries {
        runs.entry(entry.job.clone()).or_default().push(entry);
    }
    runs
}

/// Workers that got SIGTERM while a job ran on their Pod (a run started before and not
/// finished by then), with the job.
fn stopped_busy(workers: &[WorkerRecord], entries: &[LedgerEntry], clock: Clock) -> Vec<String> {
    let mut found = Vec::new();
    for worker in workers {
        let Some(term) = worker.terminated_at.map(|t| clock.unix(t)) else {
            continue;
        };
        for (job, runs) in runs_by_job(entries) {
            let on_pod: Vec<&&LedgerEntry> = runs.iter().filter(|r| r.pod == worker.pod).collect();
            let start = on_pod.iter().find(|r| r.event == "start").map(|r| r.at);
            let finish = on_pod.iter().find(|r| r.event == "finish").map(|r| r.at);
            if start.is_some_and(|s| s <= term) && finish.is_none_or(|f| f > term) {
                found.push(format!("{} (job {job})", worker.pod));
            }
        }
    }
    found
}

#[tokio::test(flavor = "multi_thread")]
async fn closed_loop_rq_scales_in_around_busy_workers_and_loses_no_job() {
    // Kept for a look at the worker and controller logs.
    let dir = tempfile::tempdir().expect("tempdir").keep();
    let queue = unique("rq-closed-loop");
    let led = unique("rq-closed-loop-ledger");
    let server = ApiServerDouble::start().await.expect("API double");
    server.simulate_pods(true);
    server.set_pod_ips(PodIps::Cluster);
    server
        .insert(objects::deployment(NAMESPACE, DEPLOYMENT, 0))
        .expect("deployment");

    let logs = dir.as_path().join("workers");
    std::fs::create_dir_all(&logs).expect("log dir");
    let mut config = CeleryPodConfig::new(&Gvr::DEPLOYMENTS, NAMESPACE, DEPLOYMENT, "", "");
    config.program = Some(rq_worker_program(&queue));
    config.kill_grace = GRACE;
    config.log_dir = Some(logs);
    let runner = CeleryPodRunner::start(&server, config);

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
                "queueURI": rq_queue_uri(&queue),
            }),
        ))
        .expect("wpa");
    let idle_window = format!("--idle-window={IDLE_WINDOW}");
    let delay = format!("--scale-down-delay-after-last-scale-activity={SCALE_DOWN_DELAY}");
    let mut controller = ControllerProcess::start(
        &server,
        dir.as_path(),
        "closed-loop-rq",
        &[
            "--resync-period=20",
            &idle_window,
            &delay,
            "--log-level=info",
        ],
    );
    let first_poll = Instant::now() + Duration::from_secs(60);
    while server
        .get(&Gvr::WORKER_POD_AUTOSCALERS, Some(NAMESPACE), DEPLOYMENT)
        .and_then(|w| condition(&w["status"], "MetricsAvailable"))
        .is_none()
    {
        assert!(
            Instant::now() < first_poll && !controller.has_exited(),
            "the controller never polled; log {}",
            controller.log.display()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Two long jobs among eight short ones, all at once: the pool grows to 4, then, once
    // the short ones are done, shrinks to the two Pods running the long jobs.
    let clock = Clock::now();
    let sent_at = unix_now();
    let mut sleeps = vec![LONG_JOB; 2];
    sleeps.extend([SHORT_JOB; 8]);
    let (queue_name, led_key) = (queue.clone(), led.clone());
    let ids = tokio::task::spawn_blocking(move || {
        let how = Enqueue {
            ledger: Some(&led_key),
            ..Enqueue::default()
        };
        rq_enqueue(&queue_name, &sleeps, &how)
    })
    .await
    .expect("enqueue");
    assert_eq!(ids.len(), 10);

    // At rest: every job finished, no Pod wanted and no worker left, for a few polls.
    let deadline = Instant::now() + Duration::from_secs(110);
    let mut rest_since: Option<Instant> = None;
    loop {
        assert!(
            !controller.has_exited(),
            "controller exited; log {}",
            controller.log.display()
        );
        let entries = ledger(&led);
        let finished = entries.iter().filter(|e| e.event == "finish").count();
        let at_rest =
            replicas(&server) == 0 && runner.running().is_empty() && finished >= ids.len();
        rest_since = if at_rest {
            rest_since.or(Some(Instant::now()))
        } else {
            None
        };
        if rest_since.is_some_and(|since| since.elapsed() >= Duration::from_secs(3)) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not at rest after {:.0}s: replicas {}, running {:?}, finished {finished}/{}; \
             writes {:?}; controller log {}",
            unix_now() - sent_at,
            replicas(&server),
            runner.running(),
            ids.len(),
            scale_writes(&server),
            controller.log.display()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    let entries = ledger(&led);
    let writes = scale_writes(&server);
    let workers = runner.records();
    let context = format!(
        "writes {writes:?}; workers {:?}; logs in {}",
        workers
            .iter()
            .map(|w| (w.pod.as_str(), w.killed(), w.exit))
            .collect::<Vec<_>>(),
        dir.display()
    );
    controller.terminate();

    // Every job ran exactly once, to its end.
    let runs = runs_by_job(&entries);
    for id in &ids {
        let events: Vec<&str> = runs
            .get(id)
            .map(|r| r.iter().map(|e| e.event.as_str()).collect())
            .unwrap_or_default();
        assert_eq!(events, ["start", "finish"], "job {id}; {context}");
    }
    // No worker was stopped while it ran a job (so none was SIGKILLed mid-job either: the
    // kill only follows a SIGTERM). An idle RQ 3.0 worker sometimes hangs in its pub/sub
    // thread's shutdown after it has registered its death, and then gets the SIGKILL at
    // the end of the grace: harmless (no job), so counted, not failed.
    assert_eq!(
        stopped_busy(&workers, &entries, clock),
        Vec::<String>::new(),
        "{context}"
    );
    assert!(
        workers.iter().all(|w| w.terminated_at.is_some()),
        "{context}"
    );
    let hung_idle = workers.iter().filter(|w| w.killed()).count();

    // The pool grew, shrank while the long jobs still ran, and was back at 0 within the
    // idle window plus a poll (and the controller's own tick) after the last job ended.
    let peak = writes.iter().map(|(_, r)| *r).max().unwrap_or(0);
    assert!(peak >= 3, "peak {peak}; {context}");
    let long_end = entries
        .iter()
        .filter(|e| e.event == "finish")
        .map(|e| e.at)
        .fold(f64::MIN, f64::max);
    let shrank_early = writes
        .windows(2)
        .any(|w| w[1].1 < w[0].1 && w[1].1 >= 1 && w[1].0 < long_end - 10.0);
    assert!(
        shrank_early,
        "no scale-in while the long jobs ran; {context}"
    );
    let zero_at = writes
        .iter()
        .rev()
        .find(|(_, r)| *r == 0)
        .map(|(at, _)| *at)
        .expect("a scale to 0");
    let after = zero_at - long_end;
    eprintln!(
        "rq closed loop: writes {:?}; last job ended {:.1}s after the first send; zero \
         {after:.1}s later; idle workers SIGKILLed after the grace: {hung_idle}; logs in {}",
        writes.iter().map(|(_, r)| *r).collect::<Vec<_>>(),
        long_end - sent_at,
        dir.display()
    );
    assert!(
        (-1.0..=IDLE_WINDOW as f64 + 1.0 + 2.0).contains(&after),
        "back to 0 only {after:.1}s after the last job; {context}"
    );
}
