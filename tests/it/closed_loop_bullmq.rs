//! A closed loop with real BullMQ workers as Pods: the controller binary scales a
//! Deployment of the API double on a `redis+bullmq://` queue, the pod runner starts one
//! `node worker.js` (a BullMQ Worker named after its Pod) per Pod and stops it as a kubelet
//! does (SIGTERM, SIGKILL after a grace shorter than the long jobs). Long and short jobs go
//! in at once: the pool grows, shrinks to the workers still running long jobs while they
//! run, and comes back to zero once they are done, with no job cut.

use crate::support;

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::apiserver::PodIps;
use support::broker_procs::unique;
use support::bullmq::{add_jobs, queue_uri, recorded, remove_queue, worker_program};
use support::framework_loop::{FrameworkLoop, Setup};

const LONG_JOB: f64 = 25.0;
const SHORT_JOB: f64 = 2.0;
const LONG_JOBS: usize = 2;
const SHORT_JOBS: usize = 8;
/// SIGTERM to SIGKILL: shorter than a long job, so a long job's worker stopped early is cut.
const KILL_GRACE: Duration = Duration::from_secs(8);
const IDLE_WINDOW_S: u64 = 5;
const POLL_S: u64 = 1;

#[tokio::test(flavor = "multi_thread")]
async fn bullmq_pool_grows_shrinks_to_busy_workers_and_returns_to_zero() {
    let queue = unique("bullmq-closed-loop");
    let ledger = unique("bullmq-closed-loop-ledger");
    let poll = format!("--bullmq-poll-interval={POLL_S}");
    let mut run = FrameworkLoop::start(Setup {
        namespace: "closed-loop-bullmq",
        deployment: "worker",
        name: "bullmq-closed-loop",
        program: worker_program(&queue, &ledger),
        kill_grace: KILL_GRACE,
        // Pods at 10.x IPs nothing here connects from: Redis sees every worker at
        // 127.0.0.1, so the reports reach the Pods by the Worker's name (= POD_NAME), the
        // documented setup.
        pod_ips: Some(PodIps::Cluster),
        queue_uri: queue_uri(&queue, ""),
        max_replicas: 4,
        worker_signal: Some("Auto"),
        idle_window: IDLE_WINDOW_S,
        scale_down_delay: 8,
        flags: &["--resync-period=20", &poll],
    })
    .await;
    run.first_poll(Duration::from_secs(30)).await;

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
    let ids: Vec<String> = serde_json::from_value(added["ids"].clone()).expect("job ids");
    assert_eq!(ids.len(), LONG_JOBS + SHORT_JOBS, "{added}");

    // Until every job finished, the Deployment is at 0 and no worker runs.
    let deadline = Instant::now() + Duration::from_secs(100);
    let seen = run
        .until_at_rest(&ids, || recorded(&ledger), Duration::ZERO, deadline)
        .await;
    let out = run.finish(recorded(&ledger), seen);
    let context = &out.context;
    eprintln!("{context}");
    remove_queue(&queue, "bull", &[&ledger]);

    out.assert_each_ran_once(&ids);
    out.assert_none_killed();
    out.assert_none_stopped_busy();
    for w in out.workers.iter().filter(|w| w.terminated_at.is_some()) {
        assert_eq!(w.exit.and_then(|s| s.code()), Some(0), "{context}");
    }
    // Grew for the backlog, then shrank while the long jobs still ran.
    let last_finish = out.last_finish(|_| true);
    assert!(out.peak() >= 3, "{context}");
    assert!(
        out.first_scale_in().is_some_and(|at| at < last_finish),
        "no scale-in while the long jobs ran; {context}"
    );
    // Back to zero within the idle window plus a poll (and a second for the write) after
    // the last job finished.
    let zero_at = out.back_to_zero_at();
    let bound = (IDLE_WINDOW_S + POLL_S + 1) as f64;
    assert!(
        zero_at - last_finish <= bound,
        "back at 0 {:.3} s after the last job; {context}",
        zero_at - last_finish
    );
    let errors = out.controller_errors();
    assert!(errors.is_empty(), "{errors:#?}");
}
