//! A closed loop with real Sidekiq: the API double runs the Deployment's Pods, the pod runner
//! starts one `sidekiq -c 1` per Pod (`DYNO` = the Pod's name, as `Socket.gethostname` is in
//! a Pod) and stops it as a kubelet would (SIGTERM, SIGKILL after a grace shorter than the
//! long jobs), and the real controller binary scales the Deployment on a
//! `redis+sidekiq://` queue. Long jobs among short ones make the pool grow, then shrink to
//! the Pods running long jobs while they run, then go back to zero; every Pod removed is
//! drained first (quieted with `TSTP`, the default drain before removal).

use crate::support;

use std::time::{Duration, Instant};

use support::brokers::unique;
use support::closed_loop::tally::unix_now;
use support::framework_loop::{FrameworkLoop, Setup};
use support::sidekiq as sk;

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
/// Drain before removal is on (the default): a victim reads `TSTP` at its next beat and
/// says it is quiet and idle at the one after, so a drain takes up to two beats. Its bound
/// is the pods' grace by default (30 s in a real Pod); the 5 s grace here is shorter than
/// a beat, so the bound is set to what a default grace allows.
const DRAIN_TIMEOUT: &str = "--drain-timeout=15";

#[tokio::test(flavor = "multi_thread")]
async fn sidekiq_pool_grows_then_shrinks_to_the_busy_pods_and_loses_no_job() {
    let queue = unique("sk-loop");
    let ledger = unique("sk-loop-ledger");
    let mut run = FrameworkLoop::start(Setup {
        namespace: "sidekiq-loop",
        deployment: "worker",
        name: "sidekiq-loop",
        program: sk::worker_program(&queue, 1, SIDEKIQ_TIMEOUT),
        kill_grace: GRACE,
        pod_ips: None,
        queue_uri: sk::queue_uri(&queue, ""),
        max_replicas: MAX_REPLICAS,
        worker_signal: None,
        idle_window: IDLE_WINDOW,
        scale_down_delay: SCALE_DOWN_DELAY,
        flags: &[DRAIN_TIMEOUT],
    })
    .await;

    // Long jobs first, so that each lands on a Pod of its own as the Pods come up.
    let mut seconds = vec![LONG_SECONDS; LONG_JOBS];
    seconds.extend(vec![SHORT_SECONDS; SHORT_JOBS]);
    let ids = sk::push(&queue, &ledger, &seconds);
    let sent_at = unix_now();

    // Until every job ran and the Deployment has been back at 0 with no worker left for a
    // few polls (a scale back up would show).
    let deadline = Instant::now() + Duration::from_secs(150);
    let seen = run
        .until_at_rest(
            &ids,
            || sk::ledger(&ledger),
            Duration::from_secs(5),
            deadline,
        )
        .await;
    let out = run.finish(sk::ledger(&ledger), seen);
    let context = &out.context;

    out.assert_each_ran_once(&ids);
    out.assert_none_killed();
    out.assert_none_stopped_busy();
    // Every Pod removed was drained first: its Sidekiq quieted before the SIGTERM.
    for worker in out.workers.iter().filter(|w| w.terminated_at.is_some()) {
        let log = out.dir.join("workers").join(format!("{}.log", worker.pod));
        let log = std::fs::read_to_string(&log).unwrap_or_default();
        let quiet = log.find("Received TSTP");
        let shutdown = log.find("Shutting down");
        assert!(
            matches!((quiet, shutdown), (Some(q), Some(s)) if q < s),
            "{} got SIGTERM without being quieted first: {log}; {context}",
            worker.pod
        );
    }
    // The pool grew to the maximum, then shrank while the long jobs still ran.
    assert_eq!(out.peak(), MAX_REPLICAS, "{context}");
    let long_end =
        out.last_finish(|job| out.duration(job).is_some_and(|d| d >= LONG_SECONDS - 1.0));
    assert!(
        out.first_scale_in().is_some_and(|at| at < long_end),
        "no scale-in while the long jobs ran (they ended at {long_end:.0}, sent at \
         {sent_at:.0}); {context}"
    );
    // Back to 0 soon after the last job: the provider says idle itself (so the idle window
    // plays no part) once the process's last busy beat has left its memory of three beats,
    // which is at most three beat periods after the job ended; then the drain (two beats),
    // a poll and the scale write. The scale-down delay holds it longer when the last scale change was recent.
    // 5 s of slack for beats delayed on a loaded machine.
    let last_finish = out.last_finish(|_| true);
    let zero_at = out.back_to_zero_at();
    let writes = &out.writes;
    let last_change_before = writes.iter().rev().nth(1).map_or(sent_at, |(at, _)| *at);
    let drain = 2.0 * BEAT;
    let bound = (last_finish + BEAT * BUSY_BEATS + drain + 5.0)
        .max(last_change_before + SCALE_DOWN_DELAY as f64 + drain + 5.0);
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
    sk::delete(&[format!("queue:{queue}"), ledger]);
    out.remove_logs();
}
