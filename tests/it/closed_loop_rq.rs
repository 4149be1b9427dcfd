//! A closed loop with real RQ workers as Pods: the controller binary scales a Deployment
//! in the API double from an RQ queue (`redis+rq://`), the pod runner starts one real
//! `rq worker` per Pod (hostname = Pod name) and stops it as a kubelet does (SIGTERM, then
//! SIGKILL after a grace shorter than the long jobs). What counts: no job lost or run
//! twice, no busy worker stopped, the pool shrinking to the busy workers while the long
//! jobs run and back to zero soon after the last job.

use crate::support;

use std::time::{Duration, Instant};

use support::apiserver::PodIps;
use support::broker_procs::unique;
use support::closed_loop::tally::unix_now;
use support::framework_loop::{FrameworkLoop, Setup};
use support::rq::{Enqueue, ledger, rq_enqueue, rq_queue_uri, rq_worker_program};

/// The controller's idle window and scale-down delay (seconds), short so a run takes about
/// a minute.
const IDLE_WINDOW: u64 = 10;
const SCALE_DOWN_DELAY: u64 = 10;
/// SIGTERM to SIGKILL: shorter than the long jobs, so stopping a busy Pod would cut a job.
const GRACE: Duration = Duration::from_secs(5);
const LONG_JOB: f64 = 35.0;
const SHORT_JOB: f64 = 2.0;

#[tokio::test(flavor = "multi_thread")]
async fn closed_loop_rq_scales_in_around_busy_workers_and_loses_no_job() {
    let queue = unique("rq-closed-loop");
    let led = unique("rq-closed-loop-ledger");
    // The logs are kept for a look at the worker and controller logs.
    let mut run = FrameworkLoop::start(Setup {
        namespace: "closed-loop-rq",
        deployment: "rq-worker",
        name: "closed-loop-rq",
        program: rq_worker_program(&queue),
        kill_grace: GRACE,
        pod_ips: Some(PodIps::Cluster),
        queue_uri: rq_queue_uri(&queue),
        max_replicas: 4,
        worker_signal: Some("Auto"),
        idle_window: IDLE_WINDOW,
        scale_down_delay: SCALE_DOWN_DELAY,
        flags: &["--resync-period=20"],
    })
    .await;
    run.first_poll(Duration::from_secs(60)).await;

    // Two long jobs among eight short ones, all at once: the pool grows to 4, then, once
    // the short ones are done, shrinks to the two Pods running the long jobs.
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
    let seen = run
        .until_at_rest(&ids, || ledger(&led), Duration::from_secs(3), deadline)
        .await;
    let out = run.finish(ledger(&led), seen);
    let context = &out.context;

    out.assert_each_ran_once(&ids);
    // No worker was stopped while it ran a job (so none was SIGKILLed mid-job either: the
    // kill only follows a SIGTERM). An idle RQ 3.0 worker sometimes hangs in its pub/sub
    // thread's shutdown after it has registered its death, and then gets the SIGKILL at
    // the end of the grace: harmless (no job), so counted, not failed.
    out.assert_none_stopped_busy();
    assert!(
        out.workers.iter().all(|w| w.terminated_at.is_some()),
        "{context}"
    );
    let hung_idle = out.workers.iter().filter(|w| w.killed()).count();

    // The pool grew, shrank while the long jobs still ran, and was back at 0 within the
    // idle window plus a poll (and the controller's own tick) after the last job ended.
    let peak = out.peak();
    assert!(peak >= 3, "peak {peak}; {context}");
    let long_end = out.last_finish(|_| true);
    assert!(
        out.first_scale_in().is_some_and(|at| at < long_end - 10.0),
        "no scale-in while the long jobs ran; {context}"
    );
    let zero_at = out.back_to_zero_at();
    let after = zero_at - long_end;
    eprintln!(
        "rq closed loop: writes {:?}; last job ended {:.1}s after the first send; zero \
         {after:.1}s later; idle workers SIGKILLed after the grace: {hung_idle}; logs in {}",
        out.writes.iter().map(|(_, r)| *r).collect::<Vec<_>>(),
        long_end - sent_at,
        out.dir.display()
    );
    assert!(
        (-1.0..=IDLE_WINDOW as f64 + 1.0 + 2.0).contains(&after),
        "back to 0 only {after:.1}s after the last job; {context}"
    );
}
