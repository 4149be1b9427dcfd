//! A closed loop with real Sidekiq: the API double runs the Deployment's Pods, the pod runner
//! starts one `sidekiq -c 1` per Pod (`DYNO` = the Pod's name, as `Socket.gethostname` is in
//! a Pod) and stops it as a kubelet would (SIGTERM, SIGKILL after a grace shorter than the
//! long jobs), and the real controller binary scales the Deployment on a
//! `redis+sidekiq://` queue. Long jobs among short ones make the pool grow, then shrink to
//! the Pods running long jobs while they run, then go back to zero.

use crate::support;

use std::time::{Duration, Instant};

use serde_json::json;
use support::apiserver::{ApiServerDouble, Gvr, objects};
use support::brokers::unique;
use support::celery_pods::{CeleryPodConfig, CeleryPodRunner, WorkerRecord};
use support::controller::{ControllerProcess, wpa};
use support::sidekiq::{self as sk, LedgerEntry};

const NS: &str = "sidekiq-loop";
const DEPLOYMENT: &str = "worker";
const LONG_JOBS: usize = 3;
const LONG_SECONDS: f64 = 40.0;
const SHORT_JOBS: usize = 6;
const SHORT_SECONDS: f64 = 1.0;
const MAX_REPLICAS: i64 = 4;
/// SIGTERM to SIGKILL: far shorter than a long job, so cutting one would show.
const GRACE: Duration = Duration::from_secs(5);
/// Sidekiq's own shutdown timeout (`-t`), within the grace: a worker that got SIGTERM
/// while running a job would requeue it and exit before the SIGKILL.
const SIDEKIQ_TIMEOUT: Duration = Duration::from_secs(3);
/// Short, as in the Celery closed loop; unused by the decision to go back to 0 here.
const IDLE_WINDOW: u64 = 10;
const SCALE_DOWN_DELAY: u64 = 15;
/// Sidekiq 6 beats every 5 s; the provider remembers a busy process for 3 beats.
const BEAT: f64 = 5.0;
const BUSY_BEATS: f64 = 3.0;

/// (Unix seconds, replicas) of the successful scale writes, oldest first.
fn scale_writes(server: &ApiServerDouble) -> Vec<(f64, i64)> {
    let path = format!("/namespaces/{NS}/deployments/{DEPLOYMENT}/scale");
    server
        .recorded()
        .into_iter()
        .filter(|r| matches!(r.method.as_str(), "PATCH" | "PUT") && r.succeeded())
        .filter(|r| r.path.ends_with(&path))
        .filter_map(|r| {
            let replicas = r.body.pointer("/spec/replicas")?.as_i64()?;
            Some((r.at.as_millisecond() as f64 / 1000.0, replicas))
        })
        .collect()
}

fn replicas(server: &ApiServerDouble) -> i64 {
    server
        .get(&Gvr::DEPLOYMENTS, Some(NS), DEPLOYMENT)
        .and_then(|d| d["spec"]["replicas"].as_i64())
        .unwrap_or(-1)
}

fn unix_now() -> f64 {
    jiff::Timestamp::now().as_millisecond() as f64 / 1000.0
}

/// The Unix time of an `Instant` of this process.
fn unix_at(at: Instant, now_unix: f64, now: Instant) -> f64 {
    now_unix - now.saturating_duration_since(at).as_secs_f64()
}

/// Jobs `pod` ran that started before `at` and had not finished by then.
fn running_at(entries: &[LedgerEntry], pod: &str, at: f64) -> Vec<String> {
    entries
        .iter()
        .filter(|e| e.event == "start" && e.host == pod && e.at <= at)
        .filter(|start| {
            !entries
                .iter()
                .any(|e| e.event == "finish" && e.id == start.id && e.host == pod && e.at <= at)
        })
        .map(|e| e.id.clone())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn sidekiq_pool_grows_then_shrinks_to_the_busy_pods_and_loses_no_job() {
    let queue = unique("sk-loop");
    let ledger = unique("sk-loop-ledger");
    // Kept when the test fails (removed at the end of a pass).
    let logs = tempfile::Builder::new()
        .prefix("wpa-sidekiq-loop")
        .tempdir()
        .expect("tempdir")
        .keep();

    let server = ApiServerDouble::start().await.expect("API double");
    server.simulate_pods(true);
    server
        .insert(objects::deployment(NS, DEPLOYMENT, 0))
        .expect("deployment");
    let mut config = CeleryPodConfig::new(&Gvr::DEPLOYMENTS, NS, DEPLOYMENT, "", &queue);
    config.program = Some(sk::worker_program(&queue, 1, SIDEKIQ_TIMEOUT));
    config.kill_grace = GRACE;
    config.log_dir = Some(logs.clone());
    let runner = CeleryPodRunner::start(&server, config);

    server
        .insert(wpa(
            NS,
            DEPLOYMENT,
            json!({
                "minReplicas": 0,
                "maxReplicas": MAX_REPLICAS,
                "targetMessagesPerWorker": 1,
                "deploymentName": DEPLOYMENT,
                "queueURI": sk::queue_uri(&queue, ""),
            }),
        ))
        .expect("wpa");
    let mut controller = ControllerProcess::start(
        &server,
        &logs,
        "controller",
        &[
            &format!("--idle-window={IDLE_WINDOW}"),
            &format!("--scale-down-delay-after-last-scale-activity={SCALE_DOWN_DELAY}"),
            "--log-level=info",
        ],
    );

    // Long jobs first, so that each lands on a Pod of its own as the Pods come up.
    let mut seconds = vec![LONG_SECONDS; LONG_JOBS];
    seconds.extend(vec![SHORT_SECONDS; SHORT_JOBS]);
    let ids = sk::push(&queue, &ledger, &seconds);
    let sent_at = unix_now();

    // Until every job ran and the Deployment has been back at 0 with no worker left for a
    // few polls (a scale back up would show).
    let started = Instant::now();
    let mut rest_since: Option<Instant> = None;
    loop {
        assert!(
            !controller.has_exited(),
            "controller exited: {}",
            controller.log_text()
        );
        let done = sk::runs(&sk::ledger(&ledger))
            .values()
            .filter(|(_, finished)| *finished > 0)
            .count();
        let at_rest = replicas(&server) == 0 && runner.running().is_empty() && done == ids.len();
        rest_since = if at_rest {
            rest_since.or(Some(Instant::now()))
        } else {
            None
        };
        if rest_since.is_some_and(|since| since.elapsed() >= Duration::from_secs(5)) {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(150),
            "not back at rest: replicas {}, {done} of {} jobs done, scale writes {:?}; logs in {}",
            replicas(&server),
            ids.len(),
            scale_writes(&server),
            logs.display()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    let entries = sk::ledger(&ledger);
    let writes = scale_writes(&server);
    let records: Vec<WorkerRecord> = runner.records();
    let (now, now_unix) = (Instant::now(), unix_now());
    let context = format!(
        "scale writes {writes:?}; workers {:?}; logs in {}",
        records
            .iter()
            .map(|r| (&r.pod, r.terminated_at.is_some(), r.killed(), r.exit))
            .collect::<Vec<_>>(),
        logs.display()
    );

    // Every job ran to its end exactly once.
    let runs = sk::runs(&entries);
    for id in &ids {
        assert_eq!(
            runs.get(id),
            Some(&(1, 1)),
            "job {id}: {entries:?}; {context}"
        );
    }
    // No worker was SIGKILLed, none got SIGTERM while it ran a job.
    for record in &records {
        assert!(!record.killed(), "{} was SIGKILLed; {context}", record.pod);
        if let Some(at) = record.terminated_at {
            let at = unix_at(at, now_unix, now);
            let cut = running_at(&entries, &record.pod, at);
            assert!(
                cut.is_empty(),
                "{} got SIGTERM running {cut:?}; {context}",
                record.pod
            );
        }
    }
    // The pool grew to the maximum, then shrank while the long jobs still ran.
    let peak = writes.iter().map(|(_, r)| *r).max().unwrap_or(0);
    assert_eq!(peak, MAX_REPLICAS, "{context}");
    let long_end = entries
        .iter()
        .filter(|e| e.event == "finish")
        .filter(|e| {
            let start = entries.iter().find(|s| s.event == "start" && s.id == e.id);
            start.is_some_and(|s| e.at - s.at >= LONG_SECONDS - 1.0)
        })
        .map(|e| e.at)
        .fold(f64::MIN, f64::max);
    let first_shrink = writes
        .windows(2)
        .find(|w| w[1].1 < w[0].1 && w[1].1 > 0)
        .map(|w| w[1].0);
    assert!(
        first_shrink.is_some_and(|at| at < long_end),
        "no scale-in while the long jobs ran (they ended at {long_end:.0}, sent at \
         {sent_at:.0}); {context}"
    );
    // Back to 0 soon after the last job: the provider says idle itself (so the idle window
    // plays no part) once the process's last busy beat has left its memory of three beats,
    // which is at most three beat periods after the job ended; then a poll and the scale
    // write. The scale-down delay holds it longer when the last scale change was recent.
    // 5 s of slack for beats delayed on a loaded machine.
    let last_finish = entries
        .iter()
        .filter(|e| e.event == "finish")
        .map(|e| e.at)
        .fold(f64::MIN, f64::max);
    let (zero_at, _) = *writes.last().expect("scale writes");
    assert_eq!(writes.last().map(|w| w.1), Some(0), "{context}");
    let last_change_before = writes.iter().rev().nth(1).map_or(sent_at, |(at, _)| *at);
    let bound = (last_finish + BEAT * BUSY_BEATS + 5.0)
        .max(last_change_before + SCALE_DOWN_DELAY as f64 + 5.0);
    assert!(
        zero_at <= bound,
        "back to 0 at {zero_at:.0}, last job finished at {last_finish:.0}, bound {bound:.0}; \
         {context}"
    );
    eprintln!(
        "sidekiq closed loop: last job finished {:.1} s after the send, back to 0 {:.1} s \
         after it (bound {:.1}); {context}",
        last_finish - sent_at,
        zero_at - last_finish,
        bound - last_finish
    );
    controller.terminate();
    drop(runner);
    sk::delete(&[format!("queue:{queue}"), ledger]);
    let _ = std::fs::remove_dir_all(&logs);
}
