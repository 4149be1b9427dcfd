//! A closed loop with real Dramatiq workers as Pods: the controller binary scales a
//! Deployment of the API double on a `redis+dramatiq://` queue, the pod runner starts one
//! `dramatiq` worker (1 process, 1 thread, prefetch 1) per Pod and stops it as a kubelet
//! does (SIGTERM, SIGKILL after a grace far shorter than the long jobs). The workers name
//! their connections (tests/dramatiq/wpa_names.py) and the WPA reads them
//! (`client_names=true`), so the controller knows which Pods hold jobs.

use crate::support;

use std::time::{Duration, Instant};

use support::apiserver::PodIps;
use support::dramatiq as dq;
use support::framework_loop::{FrameworkLoop, Setup};

const LONG: f64 = 30.0;
const SHORT: f64 = 2.0;
/// Dramatiq's `heartbeat_timeout`, for the workers and the URI: short, so that a job cut
/// by SIGKILL would come back (and show as a duplicate) within the run.
const HEARTBEAT_MS: u64 = 5000;
const IDLE_WINDOW: u64 = 10;

#[tokio::test(flavor = "multi_thread")]
async fn dramatiq_pool_grows_keeps_busy_pods_and_returns_to_zero() {
    let queue = dq::queue_name("dq_loop");
    let record = support::brokers::unique("dq-loop-record");
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
    let query = format!("?heartbeat_timeout={HEARTBEAT_MS}&client_names=true");
    let mut run = FrameworkLoop::start(Setup {
        namespace: "dramatiq-loop",
        deployment: "worker",
        name: "dramatiq-loop",
        program: dq::worker_program(env),
        // Far shorter than the long jobs, longer than an idle Dramatiq worker's shutdown
        // (stop the threads, requeue, close: ~3 s here).
        kill_grace: Duration::from_secs(10),
        pod_ips: Some(PodIps::Cluster),
        queue_uri: dq::queue_uri(&queue, &query),
        max_replicas: 4,
        worker_signal: Some("Auto"),
        idle_window: IDLE_WINDOW,
        scale_down_delay: 15,
        flags: &["--resync-period=20"],
    })
    .await;

    let deadline = Instant::now() + Duration::from_secs(150);
    let mut seconds = vec![LONG, LONG];
    seconds.extend([SHORT; 6]);
    let jobs = {
        let (q, s) = (queue.clone(), seconds.clone());
        tokio::task::spawn_blocking(move || dq::send(&q, "job", &s, None))
            .await
            .expect("send")
    };

    // Until every job finished and the Deployment is back at 0 with no worker left.
    let seen = run
        .until_at_rest(&jobs, || dq::runs(&record), Duration::ZERO, deadline)
        .await;
    let out = run.finish(dq::runs(&record), seen);
    let context = &out.context;
    eprintln!("{context}");

    // Every job ran to its end exactly once: none lost, none cut and run again.
    out.assert_each_ran_once(&jobs);
    // No Pod got SIGTERM while it ran a job (by the jobs' own records), and none needed
    // SIGKILL.
    out.assert_none_stopped_busy();
    out.assert_none_killed();
    // The pool grew beyond the two long jobs and shrank while they still ran, but never
    // below them (the replicas as polled, at each change).
    let replicas_seen = &out.seen;
    let peak = replicas_seen.iter().map(|(_, r)| *r).max().unwrap_or(0);
    assert!(peak >= 3, "{context}");
    let long_end = out.last_finish(|job| jobs[..2].iter().any(|j| j == job));
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
