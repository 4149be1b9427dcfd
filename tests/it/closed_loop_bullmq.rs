//! A closed loop with real BullMQ workers as Pods: the controller binary scales a
//! Deployment of the API double on a `redis+bullmq://` queue, the pod runner starts one
//! `node worker.js` per Pod and stops it as a kubelet does (SIGTERM, SIGKILL after a grace
//! shorter than the long jobs). Long and short jobs go in at once: the pool grows, and comes
//! back to zero once they are done, with no job cut.
//!
//! Two ways the reports reach the Pods:
//! - Workers named after their Pod (the documented setup): each is busy exactly while it
//!   runs a job, so the pool shrinks to the workers still running long jobs while they run.
//! - Unnamed Workers (BullMQ's default), matched to their Pods by the IP they connect from
//!   (Pods at loopback IPs, on a Redis of the test's own). An unnamed worker is reported busy
//!   while any job of the queue is active, so the pool keeps every Pod until the last job is
//!   done: it cannot shrink while a long job runs. That is the documented, conservative rule.

use crate::support;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::apiserver::PodIps;
use support::broker_procs::{BrokerProcess, unique};
use support::bullmq::{Server, own_server};
use support::framework_loop::{FrameworkLoop, Observed, Setup};

const LONG_JOB: f64 = 25.0;
const SHORT_JOB: f64 = 2.0;
const LONG_JOBS: usize = 2;
const SHORT_JOBS: usize = 8;
/// SIGTERM to SIGKILL: shorter than a long job, so a long job's worker stopped early is cut.
const KILL_GRACE: Duration = Duration::from_secs(8);
const IDLE_WINDOW_S: u64 = 5;
const POLL_S: u64 = 1;

/// How the workers are told apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Workers {
    /// Named after their Pods, on the shared Redis; the Pods at 10.x IPs nothing here
    /// connects from, so only the names match reports to Pods.
    Named,
    /// Unnamed, each connecting from its Pod's own loopback IP to a Redis of the test's own
    /// (the shared one refuses such clients): only the IPs match reports to Pods.
    Unnamed,
}

/// Runs the loop with the long and short jobs to rest; what it left, and the job ids.
async fn run(workers: Workers) -> (Observed, Vec<String>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_own_redis, server): (Option<BrokerProcess>, Server) = match workers {
        Workers::Named => (None, Server::shared()),
        Workers::Unnamed => {
            let (process, server) = own_server(dir.path()).await;
            (Some(process), server)
        }
    };
    let (label, pod_ips) = match workers {
        Workers::Named => ("bullmq-closed-loop", PodIps::Cluster),
        Workers::Unnamed => ("bullmq-closed-loop-ips", PodIps::Loopback),
    };
    let queue = unique(label);
    let ledger = unique(&format!("{label}-ledger"));
    let poll = format!("--bullmq-poll-interval={POLL_S}");
    let mut run = FrameworkLoop::start(Setup {
        namespace: "closed-loop-bullmq",
        deployment: "worker",
        name: label,
        program: server.worker_program(&queue, &ledger, workers == Workers::Named),
        kill_grace: KILL_GRACE,
        pod_ips: Some(pod_ips),
        queue_uri: server.queue_uri(&queue, ""),
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
        tokio::task::spawn_blocking(move || server.add_jobs(&queue, &jobs, "bull"))
            .await
            .expect("adding jobs")
    };
    assert_eq!(added["wait"], LONG_JOBS + SHORT_JOBS, "{added}");
    let ids: Vec<String> = serde_json::from_value(added["ids"].clone()).expect("job ids");
    assert_eq!(ids.len(), LONG_JOBS + SHORT_JOBS, "{added}");

    // Until every job finished, the Deployment is at 0 and no worker runs.
    let deadline = Instant::now() + Duration::from_secs(100);
    let seen = run
        .until_at_rest(&ids, || server.recorded(&ledger), Duration::ZERO, deadline)
        .await;
    let out = run.finish(server.recorded(&ledger), seen);
    eprintln!("{}", out.context);
    server.remove_queue(&queue, "bull", &[&ledger]);
    (out, ids)
}

/// What both variants must show: every job ran once, no worker was cut or stopped while it
/// ran a job, the pool grew for the backlog and was back at zero within the idle window
/// plus a poll (and a second for the write) after the last job finished.
fn assert_common(out: &Observed, ids: &[String]) {
    let context = &out.context;
    out.assert_each_ran_once(ids);
    out.assert_none_killed();
    out.assert_none_stopped_busy();
    for w in out.workers.iter().filter(|w| w.terminated_at.is_some()) {
        assert_eq!(w.exit.and_then(|s| s.code()), Some(0), "{context}");
    }
    assert!(out.peak() >= 3, "{context}");
    let last_finish = out.last_finish(|_| true);
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

#[tokio::test(flavor = "multi_thread")]
async fn bullmq_pool_grows_shrinks_to_busy_workers_and_returns_to_zero() {
    let (out, ids) = run(Workers::Named).await;
    assert_common(&out, &ids);
    // Shrank while the long jobs still ran.
    assert!(
        out.first_scale_in()
            .is_some_and(|at| at < out.last_finish(|_| true)),
        "no scale-in while the long jobs ran; {}",
        out.context
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn bullmq_unnamed_workers_matched_by_ip_hold_the_pool_until_the_last_job() {
    let (out, ids) = run(Workers::Unnamed).await;
    assert_common(&out, &ids);
    let context = &out.context;
    // The reports reached the Pods by IP alone (the workers have no names): the status
    // counted busy Pods while jobs ran, and before the scale to 0 every Pod got the idle
    // deletion cost (a Pod no report matches is unknown and gets none).
    let most_busy = (out.statuses.iter())
        .filter_map(|s| s["workers"]["busy"].as_i64())
        .max()
        .unwrap_or(0);
    assert!(most_busy >= 2, "statuses {:?}; {context}", out.statuses);
    let idle_cost: BTreeSet<&str> = (out.deletion_costs.iter())
        .filter(|(_, cost)| cost == "-1000")
        .map(|(pod, _)| pod.as_str())
        .collect();
    let pods: BTreeSet<&str> = out.workers.iter().map(|w| w.pod.as_str()).collect();
    assert_eq!(idle_cost, pods, "costs {:?}; {context}", out.deletion_costs);
    // Every unnamed worker is busy while any job is active, so none could be removed while
    // the long jobs ran: the backlog asked for fewer workers, and the busy Pods held them.
    let last_finish = out.last_finish(|_| true);
    assert!(
        out.first_scale_in().is_none_or(|at| at >= last_finish),
        "a scale-in while jobs ran; {context}"
    );
    let summary: Vec<(&Value, &Value, &Value)> = (out.statuses.iter())
        .map(|s| {
            (
                &s["lastDecisionReason"],
                &s["desiredReplicas"],
                &s["workers"],
            )
        })
        .collect();
    assert!(
        (out.statuses.iter()).any(|s| s["lastDecisionReason"] == "HoldBusyWorkers"),
        "statuses {summary:?}; {context}"
    );
}
